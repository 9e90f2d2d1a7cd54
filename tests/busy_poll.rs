//! A loop with busy-polling on (`Builder::busy_poll`) still runs its timers
//! on time, wakes for handles, stops promptly, and uses (nearly) no CPU when
//! idle: the spin follows only a turn that found work.

mod util;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use netpool::{CloseReason, Conn, Disconnect, Handler, Server};
use util::{echo, start, Client};

const SPIN: Duration = Duration::from_micros(200);

/// Request/response traffic is served, and the stats show the spinning.
#[test]
fn busy_polling_serves_and_counts_its_spins() {
    let server = start(Server::builder().busy_poll(SPIN), echo);
    let mut c = Client::connect(server.local_addr());
    for i in 0..200 {
        let line = format!("line {i}\n");
        assert_eq!(c.roundtrip(line.as_bytes()), line.as_bytes());
    }
    let stats = server.handle().stats();
    assert!(
        stats.busy_polls_found + stats.busy_polls_empty > 0,
        "the loop spun after busy turns: {stats:?}"
    );
    assert!(stats.busy_poll_micros > 0);
}

/// Tells the test thread why a connection ended.
struct Report(mpsc::Sender<CloseReason>);

impl Handler for Report {
    type State = ();
    fn on_frame(&mut self, line: &[u8], conn: &mut Conn<'_>) {
        echo(line, conn);
    }
    fn on_disconnect(&mut self, closed: Disconnect<()>) {
        let _ = self.0.send(closed.reason);
    }
}

/// The idle timeout fires on time while the loop busy-polls for other
/// connections' traffic.
#[test]
fn timers_fire_while_busy_polling() {
    let (tx, rx) = mpsc::channel();
    let server = start(
        Server::builder()
            .busy_poll(SPIN)
            .idle_timeout(Duration::from_millis(300)),
        Report(tx),
    );
    let addr = server.local_addr();
    let mut quiet = Client::connect(addr);
    assert_eq!(quiet.roundtrip(b"hi\n"), b"hi\n");
    let started = Instant::now();
    // Another client keeps the loop busy (and spinning) meanwhile.
    let mut busy = Client::connect(addr);
    while started.elapsed() < Duration::from_millis(600) {
        assert_eq!(busy.roundtrip(b"x\n"), b"x\n");
        if let Ok(reason) = rx.try_recv() {
            assert_eq!(reason, CloseReason::IdleTimeout);
            let at = started.elapsed();
            assert!(at >= Duration::from_millis(250), "not early: {at:?}");
            return;
        }
    }
    let reason = rx
        .recv_timeout(util::DEADLINE)
        .expect("the idle connection was closed");
    assert_eq!(reason, CloseReason::IdleTimeout);
}

/// A handle's send wakes a busy-polling loop, and stop is prompt.
#[test]
fn handles_and_stop_reach_a_busy_polling_loop() {
    let (tx, rx) = mpsc::channel();
    let server = start(
        Server::builder().busy_poll(SPIN),
        move |line: &[u8], conn: &mut Conn| {
            if line == b"handle" {
                tx.send(conn.handle()).unwrap();
            }
        },
    );
    let mut c = Client::connect(server.local_addr());
    c.send(b"handle\n");
    let handle = rx.recv_timeout(util::DEADLINE).unwrap();
    for i in 0..50 {
        let msg = format!("from another thread {i}\n");
        handle.send(msg.clone()).unwrap();
        assert_eq!(c.line(), msg.as_bytes());
    }
    let stopped = Instant::now();
    server
        .handle()
        .request_stop(Duration::from_secs(5))
        .unwrap();
    assert_eq!(c.read_to_end(), b"", "our FIN came at once");
    drop(c);
    let report = server.join().unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "stopped once the client left, not at the grace deadline"
    );
    assert_eq!(report.force_closed, 0);
}
