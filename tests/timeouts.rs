//! Idle, write-stall and linger timeouts over real sockets.

mod util;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use netpool::{CloseReason, Conn, Disconnect, Handler, LengthPrefixed, Server};
use util::{start, Client, DEADLINE};

/// Echoes, answers `flood N` with N bytes, and reports disconnect reasons.
struct Reporting(mpsc::Sender<CloseReason>);

impl Handler for Reporting {
    type State = ();

    fn on_frame(&mut self, line: &[u8], conn: &mut Conn<'_>) {
        if let Some(n) = line.strip_prefix(b"flood ") {
            let n: usize = std::str::from_utf8(n).unwrap().parse().unwrap();
            conn.send(vec![b'f'; n]);
        } else {
            conn.send(line);
            conn.send(b"\n");
        }
    }

    fn on_disconnect(&mut self, closed: Disconnect<()>) {
        let _ = self.0.send(closed.reason);
    }
}

fn reporting(builder: netpool::Builder) -> (netpool::ServerThread, mpsc::Receiver<CloseReason>) {
    let (tx, rx) = mpsc::channel();
    (start(builder, Reporting(tx)), rx)
}

/// A connection that stays silent is closed after the idle timeout, and its
/// client sees a clean end of stream.
#[test]
fn idle_connections_are_closed() {
    let (server, closed) = reporting(Server::builder().idle_timeout(Duration::from_millis(200)));
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.roundtrip(b"hi\n"), b"hi\n");
    let start = Instant::now();
    assert_eq!(c.read_to_end(), b"");
    assert!(
        start.elapsed() >= Duration::from_millis(190),
        "not before the timeout"
    );
    drop(c);
    assert_eq!(
        closed.recv_timeout(DEADLINE).unwrap(),
        CloseReason::IdleTimeout
    );
}

/// Complete lines are activity: a connection that keeps talking outlives
/// many idle periods.
#[test]
fn lines_keep_a_connection_alive() {
    // A line every 25 ms against a 500 ms timeout: a 20-fold margin, so a
    // loaded machine cannot make the gap look idle.
    let (server, _closed) = reporting(Server::builder().idle_timeout(Duration::from_millis(500)));
    let mut c = Client::connect(server.local_addr());
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(c.roundtrip(b"still here\n"), b"still here\n");
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(server.handle().stats().active, 1);
}

/// A trickle of bytes without a newline is not activity (slowloris): the
/// idle timeout closes it while a bystander is answered.
#[test]
fn a_trickle_without_newline_is_not_activity() {
    let (server, closed) = reporting(Server::builder().idle_timeout(Duration::from_millis(300)));
    let mut slow = Client::connect(server.local_addr());
    let start = Instant::now();
    let mut reset = false;
    // One byte every 50 ms, for at most 3 s: far longer than the timeout.
    while start.elapsed() < Duration::from_secs(3) {
        if slow.reader.get_mut().write_all(b"x").is_err() {
            reset = true;
            break;
        }
        if closed.try_recv() == Ok(CloseReason::IdleTimeout) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        reset || start.elapsed() < Duration::from_secs(3),
        "the trickling client was never closed"
    );
    let mut bystander = Client::connect(server.local_addr());
    assert_eq!(bystander.roundtrip(b"ok\n"), b"ok\n");
}

/// With no idle timeout (the default), the frame bound closes a client
/// that trickles a line without ever ending it, gracefully, and leaves
/// alone one that sends nothing at all.
#[test]
fn the_frame_bound_cuts_a_trickle_but_keeps_a_silent_client() {
    const BOUND: Duration = Duration::from_millis(300);
    let (server, closed) = reporting(Server::builder().frame_timeout(BOUND));
    let addr = server.local_addr();
    let mut silent = Client::connect(addr);
    let mut slow = Client::connect(addr);
    assert_eq!(slow.roundtrip(b"ok\n"), b"ok\n", "served like anyone");
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    // One byte every 50 ms, never a newline, until told to stop (or the
    // server has gone).
    let trickle = {
        let (mut w, stop) = (slow.stream().try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && start.elapsed() < DEADLINE {
                if w.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    assert_eq!(slow.read_to_end(), b"", "a clean end of stream");
    let cut_after = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
    assert!(
        cut_after >= BOUND,
        "cut after {cut_after:?}, before the bound"
    );
    drop(slow);
    assert_eq!(closed.recv_timeout(DEADLINE), Ok(CloseReason::FrameTimeout));
    // Silent for longer than the bound, and still served.
    assert_eq!(silent.roundtrip(b"still here\n"), b"still here\n");
    let metrics = server.handle().metrics();
    assert_eq!(metrics.closed(CloseReason::FrameTimeout), 1);
    drop(silent);
}

/// The bound is on frames, whatever the framing: a length-prefixed frame
/// whose payload stops coming is cut too, after the replies to the frames
/// before it.
#[test]
fn the_frame_bound_holds_for_any_framing() {
    const BOUND: Duration = Duration::from_millis(300);
    let server = Server::builder()
        .framing(LengthPrefixed::new(2))
        .frame_timeout(BOUND)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
        .spawn(|frame: &[u8], conn: &mut Conn| conn.send(frame))
        .unwrap();
    let mut c = Client::connect(server.local_addr());
    let start = Instant::now();
    // One whole frame, then a frame that announces 10 bytes and sends 2.
    c.send(&[0, 2, b'o', b'k', 0, 10, b'h', b'a']);
    assert_eq!(c.read_to_end(), b"ok", "the reply, then the close");
    assert!(start.elapsed() >= BOUND, "cut before the bound");
    drop(c);
    let handle = server.handle();
    util::wait_until("it is counted under its reason", || {
        handle.metrics().closed(CloseReason::FrameTimeout) == 1
    });
    server.stop(DEADLINE).unwrap();
}

/// The frame bound is on by default, at 30 s, and the idle timeout off.
#[test]
fn the_defaults_bound_a_frame_and_not_a_silence() {
    let debug = format!("{:?}", Server::builder());
    assert!(debug.contains("frame_timeout: 30s"), "{debug}");
    assert!(debug.contains("idle_timeout: 0ns"), "{debug}");
}

/// Output that makes no progress (the peer stopped reading) is dropped and
/// the connection closed after the write-stall timeout.
#[test]
fn a_stalled_writer_is_closed() {
    let (server, closed) = reporting(
        Server::builder()
            .write_stall_timeout(Duration::from_millis(200))
            .output_limit(64 << 20)
            .output_water_marks(1 << 20, 32 << 20),
    );
    let mut c = Client::connect(server.local_addr());
    // Far more than the socket buffers hold; the client never reads.
    c.send(b"flood 30000000\n");
    assert_eq!(
        closed.recv_timeout(DEADLINE).unwrap(),
        CloseReason::WriteStalled
    );
    assert_eq!(server.handle().stats().active, 0);
}

/// After the server closes, a peer that never hangs up is let go after the
/// linger timeout, and gets every reply before the end of stream.
#[test]
fn lingering_ends_after_the_linger_timeout() {
    let (server, closed) = reporting(Server::builder().linger(Duration::from_millis(200)));
    let mut c = Client::connect(server.local_addr());
    c.send(b"last words\n");
    assert_eq!(c.line(), b"last words\n");
    let conn_handle = {
        // Close from the server side through a stop; the client stays.
        let h = server.handle().clone();
        std::thread::spawn(move || h.stop(DEADLINE))
    };
    assert_eq!(c.read_to_end(), b"", "end of stream after the replies");
    // The client keeps its socket open; the server stops lingering anyway.
    let report = conn_handle.join().unwrap().unwrap();
    assert_eq!(report.force_closed, 0, "it had delivered everything");
    assert_eq!(closed.recv_timeout(DEADLINE).unwrap(), CloseReason::Stopped);
    drop(c);
}

/// A client that keeps sending after the server decided to close still
/// receives every reply up to the close: lingering keeps the close from
/// turning into a reset.
#[test]
fn closing_on_a_talkative_peer_does_not_lose_replies() {
    let server = start(
        Server::builder().linger(Duration::from_millis(300)),
        |line: &[u8], conn: &mut Conn| {
            conn.send(line);
            conn.send(b"\n");
            if line == b"quit" {
                conn.close();
            }
        },
    );
    for _ in 0..20 {
        let mut c = Client::connect(server.local_addr());
        let mut batch = Vec::new();
        for i in 0..200 {
            writeln!(batch, "line {i}").unwrap();
        }
        batch.extend_from_slice(b"quit\n");
        // More input after the quit, which the server will never read.
        batch.extend(std::iter::repeat_n(b'z', 256 * 1024));
        let mut writer = c.stream().try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(&batch);
        });
        let got = c.read_to_end();
        let mut want = Vec::new();
        for i in 0..200 {
            writeln!(want, "line {i}").unwrap();
        }
        want.extend_from_slice(b"quit\n");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
        drop(c);
        sender.join().unwrap();
    }
}
