//! Misbehaving clients: each test asserts that the server stays up and that
//! a bystander connection is still answered promptly.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netpool::{Conn, Server, ServerThread};
use socket2::Socket;
use util::{echo, start, wait_until, Client, DEADLINE};

/// Serves echo, and `big N` with N bytes, so tests can make the server write.
fn server() -> ServerThread {
    start(
        Server::builder()
            .output_limit(64 << 20)
            .output_water_marks(1 << 20, 16 << 20),
        |line: &[u8], conn: &mut Conn| {
            if let Some(n) = line.strip_prefix(b"big ") {
                let n: usize = std::str::from_utf8(n).unwrap().parse().unwrap();
                conn.send(vec![b'b'; n]);
                conn.send(b"\n");
            } else {
                conn.send(line);
                conn.send(b"\n");
            }
        },
    )
}

/// The bystander's check: an answer well within the test deadline.
fn bystander_is_answered(addr: SocketAddr) {
    let mut c = Client::connect(addr);
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert_eq!(c.roundtrip(b"are you there\n"), b"are you there\n");
}

/// Closes `stream` with a reset (RST) instead of a FIN.
fn reset(stream: TcpStream) {
    let socket = Socket::from(stream);
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(socket);
}

/// A reset in the middle of a line costs only that connection.
#[test]
fn reset_mid_line() {
    let server = server();
    let mut c = TcpStream::connect(server.local_addr()).unwrap();
    c.write_all(b"half a li").unwrap();
    reset(c);
    wait_until("the reset connection is gone", || {
        server.handle().stats().active == 0
    });
    bystander_is_answered(server.local_addr());
}

/// A reset while the server is writing a large reply costs only that
/// connection.
#[test]
fn reset_mid_write() {
    let server = server();
    let mut c = Client::connect(server.local_addr());
    c.send(b"big 20000000\n");
    let mut first = [0u8; 4096];
    c.reader.read_exact(&mut first).unwrap();
    reset(c.reader.into_inner());
    wait_until("the reset connection is gone", || {
        server.handle().stats().active == 0
    });
    bystander_is_answered(server.local_addr());
}

/// A client that vanishes without reading its replies costs nothing more.
#[test]
fn a_client_vanishing() {
    let server = server();
    for _ in 0..50 {
        let mut c = TcpStream::connect(server.local_addr()).unwrap();
        c.write_all(b"big 100000\nping\n").unwrap();
        drop(c);
    }
    wait_until("every vanished client is gone", || {
        server.handle().stats().active == 0
    });
    bystander_is_answered(server.local_addr());
}

/// Half-close in both directions: a client that shuts its write side gets
/// its replies; one that shuts its read side still has its lines handled.
#[test]
fn half_close_in_both_directions() {
    let server = server();
    let mut writer_done = Client::connect(server.local_addr());
    writer_done.send(b"one\ntwo\n");
    writer_done.shutdown_write();
    assert_eq!(writer_done.read_to_end(), b"one\ntwo\n");

    let mut reader_done = Client::connect(server.local_addr());
    reader_done.stream().shutdown(Shutdown::Read).unwrap();
    let before = server.handle().stats().lines;
    reader_done.send(b"a\nb\n");
    wait_until("both lines are handled", || {
        server.handle().stats().lines == before + 2
    });
    bystander_is_answered(server.local_addr());
}

/// Zero-length and NUL-containing lines are ordinary lines.
#[test]
fn empty_and_nul_lines() {
    let server = server();
    let mut c = Client::connect(server.local_addr());
    c.send(b"\n\0\n\0\0x\0\r\n");
    assert_eq!(c.line(), b"\n");
    assert_eq!(c.line(), b"\0\n");
    assert_eq!(c.line(), b"\0\0x\0\n");
    bystander_is_answered(server.local_addr());
}

/// A megabyte without a newline closes that connection, not the server.
#[test]
fn a_megabyte_without_newline() {
    let server = server();
    let mut c = Client::connect(server.local_addr());
    let flood = vec![b'm'; 1 << 20];
    // The server may close before all of it is written; that is the point.
    let _ = c.reader.get_mut().write_all(&flood);
    assert_eq!(c.read_to_end(), b"");
    bystander_is_answered(server.local_addr());
}

/// A client trickling one byte every 100 ms is served in the end and never
/// delays a bystander.
#[test]
fn a_one_byte_trickle() {
    let server = server();
    let mut slow = Client::connect(server.local_addr());
    for b in b"trickle" {
        slow.send(&[*b]);
        let start = Instant::now();
        bystander_is_answered(server.local_addr());
        assert!(start.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(slow.roundtrip(b"\n"), b"trickle\n");
}

/// 3,000 connections ending every way (clean close, half-close, reset,
/// mid-line, mid-write) leak no descriptor.
#[test]
fn three_thousand_connect_close_cycles_leak_nothing() {
    let server = server();
    let addr = server.local_addr();
    let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    // Warm up, so lazily opened descriptors (the spare, logging) exist.
    bystander_is_answered(addr);
    wait_until("warm-up connection closed", || {
        server.handle().stats().active == 0
    });
    let before = open_fds();
    let started = Instant::now();
    for i in 0..3_000 {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        match i % 5 {
            0 => drop(c),
            1 => {
                c.write_all(b"x\n").unwrap();
                let mut buf = [0u8; 2];
                c.read_exact(&mut buf).unwrap();
                drop(c);
            }
            2 => {
                c.write_all(b"y\n").unwrap();
                c.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                c.read_to_end(&mut rest).unwrap();
                assert_eq!(rest, b"y\n");
            }
            3 => {
                c.write_all(b"partial").unwrap();
                reset(c);
            }
            _ => {
                c.write_all(b"big 300000\n").unwrap();
                reset(c);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "cycles too slow"
        );
    }
    wait_until("every connection is closed", || {
        server.handle().stats().active == 0
    });
    wait_until("no descriptor leaked", || open_fds() <= before);
    bystander_is_answered(addr);
}

/// Stopping under heavy load: every line the server read has been answered
/// when the clients see the end of stream.
#[test]
fn stop_under_load_answers_every_line_read() {
    let server = start(Server::builder(), echo);
    let addr = server.local_addr();
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let answered = answered.clone();
            std::thread::spawn(move || {
                let stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(DEADLINE)).unwrap();
                let mut writer = stream.try_clone().unwrap();
                // Keep writing until the server closes; bounded in time.
                let pump = std::thread::spawn(move || {
                    let start = Instant::now();
                    while start.elapsed() < DEADLINE {
                        if writer
                            .write_all(b"load line\n".repeat(100).as_slice())
                            .is_err()
                        {
                            break;
                        }
                    }
                });
                let mut reader = std::io::BufReader::new(stream);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match std::io::BufRead::read_until(&mut reader, b'\n', &mut buf) {
                        Ok(0) => break,
                        Ok(_) => {
                            assert_eq!(buf, b"load line\n");
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("a reply was lost: {e}"),
                    }
                }
                drop(reader);
                pump.join().unwrap();
            })
        })
        .collect();
    wait_until("load is running", || server.handle().stats().lines > 50_000);
    let handle = server.handle().clone();
    let report = handle.stop(DEADLINE).unwrap();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(report.force_closed, 0);
    assert_eq!(answered.load(Ordering::Relaxed), handle.stats().lines);
}

/// A close never destroys replies still in flight: the client sent more
/// after `quit` (unread input would turn a plain close into a reset, and a
/// reset discards what the kernel has not yet sent), and reads slowly; it
/// still gets every byte, then a clean end of stream.
#[test]
fn a_close_never_destroys_replies_in_flight() {
    const BIG: usize = 4 << 20;
    let server = start(
        Server::builder()
            .output_limit(2 * BIG)
            .output_water_marks(BIG, 2 * BIG),
        |line: &[u8], conn: &mut Conn| match line {
            b"quit" => conn.close(),
            _ => {
                conn.send(vec![b'r'; BIG]);
                conn.send(b"\n");
            }
        },
    );
    let mut c = Client::connect(server.local_addr());
    let mut input = b"reply please\nquit\n".to_vec();
    input.extend(std::iter::repeat_n(b'z', 64 * 1024));
    c.send(&input);
    // Read only once the server has filled the buffers between us.
    wait_until("the buffers are full", || {
        server.handle().stats().bytes_out > 1 << 20
    });
    let mut got = Vec::new();
    let result = c.reader.read_to_end(&mut got);
    assert!(
        result.is_ok(),
        "the stream ended with {result:?} after {} bytes",
        got.len()
    );
    assert_eq!(got.len(), BIG + 1);
}
