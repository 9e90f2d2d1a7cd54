//! examples/tiny_reactor.rs, run as a child process and talked to over
//! loopback: echo, backpressure, a reset, and a clean stop on SIGTERM.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use util::{wait_until, Client, Example, DEADLINE};

/// How long a writer must make no progress to count as stopped by the
/// server. A server that reads on would take more within this time; a
/// correct one never does, so a slow machine cannot make the test fail.
const STALL: Duration = Duration::from_secs(1);

/// The example running on 127.0.0.1:0 (killed on drop if a test failed).
struct Reactor;

impl Reactor {
    fn start() -> Example {
        Example::start("tiny_reactor", &["--addr", "127.0.0.1:0"])
    }
}

/// A client whose kernel buffers are small, so that what it does not read
/// piles up in the server rather than in its own socket.
fn small_buffered_client(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// Byte `i` of the test stream: a period (251) prime to every buffer size,
/// so a byte lost, doubled or reordered shows.
fn pattern_at(i: usize) -> u8 {
    (i % 251) as u8
}

/// `len` bytes of the stream from `offset`, borrowed from one block.
fn pattern(block: &[u8], offset: usize, len: usize) -> &[u8] {
    &block[offset % 251..offset % 251 + len]
}

const CHUNK: usize = 64 * 1024;

fn pattern_block() -> Vec<u8> {
    (0..CHUNK + 251).map(pattern_at).collect()
}

/// Sends the pattern without reading until the writes stop for [`STALL`];
/// returns how much was sent. Panics after `limit` bytes without a stall.
fn send_until_stalled(stream: &mut TcpStream, limit: usize) -> usize {
    let block = pattern_block();
    stream.set_write_timeout(Some(STALL)).unwrap();
    let mut sent = 0;
    while sent < limit {
        match stream.write(pattern(&block, sent, CHUNK)) {
            Ok(n) => sent += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                stream.set_write_timeout(Some(DEADLINE)).unwrap();
                return sent;
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    panic!("sent {limit} bytes unread and never stalled: the server buffers without bound");
}

/// Several clients at once each get their own bytes back, in order.
#[test]
fn echoes_several_clients_concurrently() {
    let reactor = Reactor::start();
    std::thread::scope(|s| {
        for i in 0..8 {
            let addr = reactor.addr;
            s.spawn(move || {
                let mut c = Client::connect(addr);
                for j in 0..100 {
                    let line = format!("client {i} line {j}\n");
                    assert_eq!(c.roundtrip(line.as_bytes()), line.as_bytes());
                }
                // Pipelined: all sent before any is read.
                let burst: String = (0..100).map(|j| format!("burst {i} {j}\n")).collect();
                c.send(burst.as_bytes());
                let mut back = vec![0u8; burst.len()];
                c.reader.read_exact(&mut back).unwrap();
                assert_eq!(back, burst.as_bytes());
            });
        }
    });
}

/// Backpressure: a client that sends without reading is stopped by TCP
/// within a bounded amount, not buffered without end; then, reading slowly
/// while a further MiB is sent, it gets every byte back in order, and after
/// its end of stream the server flushes what is pending and closes.
#[test]
fn a_client_that_stops_reading_is_stopped_then_gets_everything_back() {
    const MIB: usize = 1 << 20;
    let reactor = Reactor::start();
    let mut stream = small_buffered_client(reactor.addr);
    let stalled_at = send_until_stalled(&mut stream, 64 * MIB);
    eprintln!("writer stalled after {stalled_at} bytes");

    let mut writer = stream.try_clone().unwrap();
    let rest = std::thread::spawn(move || {
        let block = pattern_block();
        let mut sent = stalled_at;
        while sent < stalled_at + MIB {
            let len = CHUNK.min(stalled_at + MIB - sent);
            writer.write_all(pattern(&block, sent, len)).unwrap();
            sent += len;
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut received = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).expect("read the echo");
        if n == 0 {
            break;
        }
        for (k, &byte) in buf[..n].iter().enumerate() {
            assert_eq!(byte, pattern_at(received + k), "byte {}", received + k);
        }
        received += n;
    }
    rest.join().unwrap();
    assert_eq!(received, stalled_at + MIB);
}

/// Bytes and the end of stream that reach the reactor together: its short
/// read must not be taken as "drained", or the end of stream, which brings no
/// further event, would never be seen and the connection never closed. The
/// reactor is stopped (SIGSTOP) while the clients send, so each connection's
/// first event carries both.
#[test]
fn sees_the_end_of_stream_that_came_with_the_last_bytes() {
    let reactor = Reactor::start();
    reactor.signal(libc::SIGSTOP);
    let mut clients: Vec<Client> = (0..20).map(|_| Client::connect(reactor.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("last words {i}").as_bytes());
        c.shutdown_write();
    }
    reactor.signal(libc::SIGCONT);
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.read_to_end(), format!("last words {i}").as_bytes());
    }
}

/// A client that resets with output pending ends its own connection only:
/// the others keep being served, and new ones are accepted.
#[test]
fn survives_a_client_reset() {
    let mut reactor = Reactor::start();
    let mut before = Client::connect(reactor.addr);
    assert_eq!(before.roundtrip(b"before\n"), b"before\n");

    let mut resetting = small_buffered_client(reactor.addr);
    send_until_stalled(&mut resetting, 64 << 20);
    let linger = socket2::SockRef::from(&resetting);
    linger.set_linger(Some(Duration::ZERO)).unwrap();
    drop(resetting); // RST, with the server holding output for it
    wait_until("the reactor reports the reset", || {
        reactor.stderr().contains("connection ")
    });

    assert_eq!(before.roundtrip(b"still here\n"), b"still here\n");
    let mut after = Client::connect(reactor.addr);
    assert_eq!(after.roundtrip(b"after\n"), b"after\n");
    assert!(reactor.terminate().success());
    assert!(
        reactor.stderr().contains("closing 2 connections"),
        "{}",
        reactor.stderr()
    );
}

/// SIGTERM stops the loop through the waker: every connection is closed
/// (its client reads end of stream) and the process exits 0.
#[test]
fn exits_zero_on_sigterm_and_closes_every_connection() {
    let mut reactor = Reactor::start();
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(reactor.addr)).collect();
    for c in &mut clients {
        assert_eq!(c.roundtrip(b"hi\n"), b"hi\n");
    }
    let status = reactor.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        reactor.stderr().contains("closing 3 connections"),
        "{}",
        reactor.stderr()
    );
    for c in &mut clients {
        assert_eq!(c.read_to_end(), b"");
    }
}

/// A wrong argument is refused with the usage, before anything is bound.
#[test]
fn refuses_an_unknown_argument() {
    let out = Command::new(util::example("tiny_reactor"))
        .arg("--port")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: tiny_reactor [--addr IP:PORT]"));
}
