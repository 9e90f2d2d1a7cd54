//! The echo server over real loopback sockets: framing as a client sees it.

mod util;

use std::io::{BufRead, Write};
use std::net::TcpStream;

use netpool::Server;
use util::{echo, start, wait_until, Client};

/// A line comes back with `\n`.
#[test]
fn echoes_a_line() {
    let server = start(Server::builder(), echo);
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.roundtrip(b"hello\n"), b"hello\n");
    server.stop(util::DEADLINE).unwrap();
}

/// A CRLF line is answered without its `\r`; a lone `\r` inside is kept.
#[test]
fn strips_one_trailing_cr() {
    let server = start(Server::builder(), echo);
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.roundtrip(b"ping\r\n"), b"ping\n");
    assert_eq!(c.roundtrip(b"a\rb\r\r\n"), b"a\rb\r\n");
}

/// A line split over several packets is answered once, whole.
#[test]
fn joins_a_line_split_across_packets() {
    let server = start(Server::builder(), echo);
    let mut c = Client::connect(server.local_addr());
    let mut want = 0;
    for piece in [&b"hel"[..], b"lo wo", b"rld"] {
        c.send(piece);
        // Make the pieces separate reads on the server: wait until it has
        // read each before sending the next.
        want += piece.len() as u64;
        wait_until("the piece is read", || {
            server.handle().stats().bytes_in >= want
        });
    }
    assert!(
        c.silent_for(std::time::Duration::from_millis(50)),
        "no reply before the newline"
    );
    assert_eq!(c.roundtrip(b"\n"), b"hello world\n");
}

/// Many lines in one packet each get their reply, in order.
#[test]
fn answers_many_lines_per_packet() {
    let server = start(Server::builder(), echo);
    let mut c = Client::connect(server.local_addr());
    c.send(b"one\ntwo\r\nthree\n");
    assert_eq!(c.line(), b"one\n");
    assert_eq!(c.line(), b"two\n");
    assert_eq!(c.line(), b"three\n");
}

/// Empty lines are lines too.
#[test]
fn answers_empty_lines() {
    let server = start(Server::builder(), echo);
    let mut c = Client::connect(server.local_addr());
    c.send(b"\n\r\nx\n");
    assert_eq!(c.line(), b"\n");
    assert_eq!(c.line(), b"\n");
    assert_eq!(c.line(), b"x\n");
}

/// Bytes are not text: NUL and invalid UTF-8 pass through untouched.
#[test]
fn passes_arbitrary_bytes() {
    let server = start(Server::builder(), echo);
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.roundtrip(b"\0\xff\xfe\x00z\n"), b"\0\xff\xfe\x00z\n");
}

/// 10,000 pipelined lines all come back, in order, while the client is
/// still writing.
#[test]
fn pipelined_lines_come_back_in_order() {
    const N: usize = 10_000;
    let server = start(Server::builder(), echo);
    let mut c = Client::connect(server.local_addr());
    let mut writer = c.stream().try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut all = Vec::new();
        for i in 0..N {
            writeln!(all, "line {i} {}", "x".repeat(i % 97)).unwrap();
        }
        // Several writes of odd sizes, so lines straddle packets.
        for chunk in all.chunks(7919) {
            writer.write_all(chunk).unwrap();
        }
    });
    let mut buf = Vec::new();
    for i in 0..N {
        buf.clear();
        c.reader.read_until(b'\n', &mut buf).unwrap();
        assert_eq!(buf, format!("line {i} {}\n", "x".repeat(i % 97)).as_bytes());
    }
    sender.join().unwrap();
    assert_eq!(server.handle().stats().lines, N as u64);
}

/// 2,000 connections are served at once, each answered.
#[test]
fn serves_two_thousand_concurrent_connections() {
    const N: usize = 2_000;
    // Two descriptors per connection in this process (client and server).
    if !util::raise_fd_limit(2 * N as u64 + 256) {
        return;
    }
    let server = start(Server::builder().acceptors(N), echo);
    let addr = server.local_addr();
    let mut clients: Vec<TcpStream> = (0..N)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        writeln!(c, "client {i}").unwrap();
    }
    wait_until("every connection is served", || {
        server.handle().stats().active == N
    });
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(util::DEADLINE)).unwrap();
        let mut reader = std::io::BufReader::new(c);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, format!("client {i}\n"));
    }
    let stats = server.handle().stats();
    assert_eq!(stats.accepted, N as u64);
    assert_eq!(stats.refused, 0);
    drop(clients);
    wait_until("every connection is closed", || {
        server.handle().stats().active == 0
    });
}
