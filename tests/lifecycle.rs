//! A connection's life over real sockets: hooks and state, close paths,
//! backpressure, handles from other threads, panics, and graceful stop.

mod util;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netpool::{CloseReason, Conn, ConnHandle, Disconnect, Handler, Server};
use util::{start, wait_until, Client, DEADLINE};

/// A handler whose behaviour is chosen by the line, and which reports every
/// disconnect reason on a channel.
struct Scripted {
    closed: mpsc::Sender<CloseReason>,
}

impl Handler for Scripted {
    /// Lines seen on this connection.
    type State = u64;

    fn on_connect(&mut self, conn: &mut Conn<'_, u64>) {
        conn.send(format!("hello {}\n", conn.id()).as_bytes());
    }

    fn on_frame(&mut self, line: &[u8], conn: &mut Conn<'_, u64>) {
        *conn.state() += 1;
        match line {
            b"panic" => panic!("scripted panic"),
            b"close" => {
                conn.send(b"bye\n");
                conn.close();
            }
            b"count" => {
                let n = *conn.state();
                conn.send(format!("{n}\n").as_bytes());
            }
            _ if line.starts_with(b"big ") => {
                let n: usize = std::str::from_utf8(&line[4..]).unwrap().parse().unwrap();
                conn.send(vec![b'x'; n]);
                conn.send(b"\n");
            }
            _ => {
                conn.send(line);
                conn.send(b"\n");
            }
        }
    }

    fn on_disconnect(&mut self, closed: Disconnect<u64>) {
        let _ = self.closed.send(closed.reason);
    }
}

fn scripted(builder: netpool::Builder) -> (netpool::ServerThread, mpsc::Receiver<CloseReason>) {
    let (tx, rx) = mpsc::channel();
    (start(builder, Scripted { closed: tx }), rx)
}

fn connect_greeted(addr: std::net::SocketAddr) -> Client {
    let mut c = Client::connect(addr);
    assert!(c.line().starts_with(b"hello #"));
    c
}

/// on_connect may greet; per-connection state is kept per connection.
#[test]
fn hooks_and_per_connection_state() {
    let (server, closed) = scripted(Server::builder());
    let mut a = connect_greeted(server.local_addr());
    let mut b = connect_greeted(server.local_addr());
    a.send(b"x\ny\n");
    a.line();
    a.line();
    assert_eq!(a.roundtrip(b"count\n"), b"3\n");
    assert_eq!(b.roundtrip(b"count\n"), b"1\n");
    drop(a);
    assert_eq!(
        closed.recv_timeout(DEADLINE).unwrap(),
        CloseReason::PeerClosed
    );
}

/// close() flushes what was sent, then ends the stream; later lines in the
/// same packet are not handled.
#[test]
fn close_flushes_then_ends_the_stream() {
    let (server, closed) = scripted(Server::builder());
    let mut c = connect_greeted(server.local_addr());
    c.send(b"close\nnever\n");
    assert_eq!(c.read_to_end(), b"bye\n");
    // The server lingers until the client hangs up too.
    drop(c);
    assert_eq!(closed.recv_timeout(DEADLINE).unwrap(), CloseReason::Closed);
    assert_eq!(server.handle().stats().lines, 1);
}

/// After the peer half-closes, its complete lines are answered, the partial
/// one is dropped, and the server closes.
#[test]
fn half_close_answers_complete_lines_then_closes() {
    let (server, closed) = scripted(Server::builder());
    let mut c = connect_greeted(server.local_addr());
    c.send(b"a\nb\npartial");
    c.shutdown_write();
    assert_eq!(c.read_to_end(), b"a\nb\n");
    assert_eq!(
        closed.recv_timeout(DEADLINE).unwrap(),
        CloseReason::PeerClosed
    );
}

/// A line over max_line_len closes only that connection, after the replies
/// to earlier lines.
#[test]
fn an_over_long_line_closes_the_connection() {
    let (server, closed) = scripted(Server::builder().max_line_len(16));
    let mut bystander = connect_greeted(server.local_addr());
    let mut c = connect_greeted(server.local_addr());
    c.send(b"ok\n");
    c.send(&[b'y'; 100]);
    assert_eq!(c.read_to_end(), b"ok\n");
    drop(c);
    assert_eq!(
        closed.recv_timeout(DEADLINE).unwrap(),
        CloseReason::LineTooLong
    );
    assert_eq!(bystander.roundtrip(b"fine\n"), b"fine\n");
}

/// A panic in the handler closes its connection only; the loop and the other
/// connections go on.
#[test]
fn a_handler_panic_closes_only_its_connection() {
    let (server, closed) = scripted(Server::builder());
    let mut bystander = connect_greeted(server.local_addr());
    let mut c = connect_greeted(server.local_addr());
    c.send(b"panic\n");
    assert_eq!(c.read_to_end(), b"");
    assert_eq!(
        closed.recv_timeout(DEADLINE).unwrap(),
        CloseReason::HandlerPanicked
    );
    assert_eq!(bystander.roundtrip(b"alive\n"), b"alive\n");
    let mut fresh = connect_greeted(server.local_addr());
    assert_eq!(fresh.roundtrip(b"new\n"), b"new\n");
    assert_eq!(server.handle().stats().handler_panics, 1);
}

/// A client that sends without ever reading is throttled: the server stops
/// reading it (its memory stays bounded) and a bystander is still answered.
#[test]
fn a_client_that_never_reads_is_throttled() {
    const HIGH: usize = 64 * 1024;
    const READ_BUF: usize = 16 * 1024;
    let server = start(
        Server::builder()
            .output_water_marks(HIGH / 4, HIGH)
            .read_buffer(READ_BUF)
            .output_limit(64 * HIGH),
        util::echo,
    );
    let handle = server.handle().clone();
    let hog = Client::connect(server.local_addr());
    let mut hog_writer = hog.stream().try_clone().unwrap();
    hog_writer
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Write until the kernel's buffers on both sides are full and the write
    // times out: the server has stopped reading. Bounded at 256 MiB.
    let line = [b"z".repeat(1023), b"\n".to_vec()].concat();
    let mut sent = 0usize;
    while sent < 256 << 20 {
        match hog_writer.write(&line) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent < 256 << 20, "the server never stopped reading");
    let s = handle.stats();
    let queued = s.bytes_in - s.bytes_out;
    // Replies queued in the server: at most the high-water mark plus the
    // replies to one read.
    assert!(
        queued <= (HIGH + READ_BUF + 1024) as u64,
        "{queued} bytes queued for a client that does not read"
    );

    let mut bystander = Client::connect(server.local_addr());
    assert_eq!(bystander.roundtrip(b"still here\n"), b"still here\n");

    // Once the hog reads, everything it sent comes back.
    let mut hog_reader = hog;
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let line_len = line.len();
    let line = Arc::new(line);
    let done = std::thread::spawn(move || {
        // Finish the last, possibly partial, line so every byte is answered.
        let _ = hog_writer.set_write_timeout(Some(DEADLINE));
        let tail = sent % line_len;
        if tail != 0 {
            hog_writer.write_all(&line[tail..]).unwrap();
        }
        sent + (line_len - tail) % line_len
    });
    let expected = sent.div_ceil(line_len) * line_len;
    while total < expected {
        let n = hog_reader.reader.read(&mut buf).unwrap();
        assert!(n > 0);
        total += n;
    }
    assert_eq!(total, expected);
    assert_eq!(done.join().unwrap(), expected);
}

/// A ConnHandle sends from another thread; once its connection is gone, even
/// with the slab slot reused, it reaches nobody and says so in the stats.
#[test]
fn a_stale_connection_handle_reaches_nobody() {
    let handles: Arc<Mutex<Vec<ConnHandle>>> = Arc::default();
    let keep = handles.clone();
    let server = start(Server::builder(), move |line: &[u8], conn: &mut Conn| {
        keep.lock().unwrap().push(conn.handle());
        conn.send(line);
        conn.send(b"\n");
    });
    let mut first = Client::connect(server.local_addr());
    assert_eq!(first.roundtrip(b"one\n"), b"one\n");
    let stale = handles.lock().unwrap()[0].clone();
    stale.send(b"pushed\n".to_vec()).unwrap();
    assert_eq!(first.line(), b"pushed\n", "a live handle delivers");

    drop(first);
    wait_until("the first connection is gone", || {
        server.handle().stats().active == 0
    });
    // Same slab slot, new connection.
    let mut second = Client::connect(server.local_addr());
    assert_eq!(second.roundtrip(b"two\n"), b"two\n");
    let second_handle = handles.lock().unwrap()[1].clone();
    assert_ne!(stale.id(), second_handle.id());

    stale.send(b"for the first only\n".to_vec()).unwrap();
    stale.close().unwrap();
    wait_until("both stale commands are dropped", || {
        server.handle().stats().stale_handle_commands == 2
    });
    assert_eq!(second.roundtrip(b"three\n"), b"three\n", "second untouched");
}

/// Replies computed on a worker thread come back through the handle, in order.
#[test]
fn replies_from_another_thread() {
    let (work, jobs) = mpsc::channel::<(ConnHandle, Vec<u8>)>();
    let worker = std::thread::spawn(move || {
        for (handle, mut line) in jobs {
            line.make_ascii_uppercase();
            line.push(b'\n');
            let _ = handle.send(line);
        }
    });
    let work = Mutex::new(work);
    let server = start(Server::builder(), move |line: &[u8], conn: &mut Conn| {
        work.lock()
            .unwrap()
            .send((conn.handle(), line.to_vec()))
            .unwrap();
    });
    let mut c = Client::connect(server.local_addr());
    c.send(b"a\nb\nc\n");
    assert_eq!(c.line(), b"A\n");
    assert_eq!(c.line(), b"B\n");
    assert_eq!(c.line(), b"C\n");
    drop(c);
    server.stop(DEADLINE).unwrap();
    worker.join().unwrap();
}

/// A graceful stop flushes every pending reply before closing, and reports
/// nothing force-closed.
#[test]
fn stop_flushes_pending_replies() {
    const BIG: usize = 4 << 20;
    let (server, closed) = scripted(
        Server::builder()
            .output_limit(2 * BIG)
            .output_water_marks(1 << 20, 2 << 20),
    );
    let mut c = connect_greeted(server.local_addr());
    // A reply far larger than the socket buffers: most of it waits in the
    // server when the stop begins.
    c.send(format!("big {BIG}\n").as_bytes());
    wait_until("the big reply is queued", || {
        server.handle().stats().lines == 1
    });
    let handle = server.handle().clone();
    let stopper = std::thread::spawn(move || handle.stop(DEADLINE));
    let got = c.read_to_end();
    assert_eq!(got.len(), BIG + 1);
    assert!(got[..BIG].iter().all(|b| *b == b'x'));
    drop(c);
    let report = stopper.join().unwrap().unwrap();
    assert_eq!((report.open_at_stop, report.force_closed), (1, 0));
    assert_eq!(closed.recv_timeout(DEADLINE).unwrap(), CloseReason::Stopped);
    server.join().unwrap();
}

/// When the grace period ends with output still unsent (the client does not
/// read), the connection is closed anyway and reported.
#[test]
fn stop_force_closes_past_the_grace_period() {
    let (server, _closed) = scripted(
        Server::builder()
            .output_limit(16 << 20)
            .output_water_marks(1 << 20, 8 << 20),
    );
    let mut c = connect_greeted(server.local_addr());
    c.send(b"big 8000000\n");
    wait_until("the big reply is queued", || {
        server.handle().stats().lines == 1
    });
    let report = server.handle().stop(Duration::from_millis(200)).unwrap();
    assert_eq!((report.open_at_stop, report.force_closed), (1, 1));
    // A second stop gets the same answer; the loop has exited.
    assert_eq!(server.handle().stop(DEADLINE).unwrap(), report);
    assert!(matches!(
        server.handle().request_stop(DEADLINE),
        Err(netpool::Error::Stopped)
    ));
    server.join().unwrap();
}

/// After a stop, the listener is closed: new connections are refused by the
/// kernel.
#[test]
fn stop_closes_the_listener() {
    let server = start(Server::builder(), util::echo);
    let addr = server.local_addr();
    server.stop(DEADLINE).unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err());
}
