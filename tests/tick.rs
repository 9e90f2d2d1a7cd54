//! `Builder::tick` and `Handler::on_tick`: each loop calls its handler's
//! `on_tick` every period, with or without connections, and never with
//! ticks off; a panic in it is caught and the loop goes on.

mod util;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use netpool::{Conn, Handler, Server};
use util::{start, wait_until, Client, DEADLINE};

/// Echoes lines and counts its ticks; panics on the ticks `panic_on` names.
struct Ticking {
    ticks: Arc<AtomicU64>,
    panic_on: fn(u64) -> bool,
}

impl Ticking {
    fn new(ticks: &Arc<AtomicU64>) -> Ticking {
        Ticking {
            ticks: ticks.clone(),
            panic_on: |_| false,
        }
    }
}

impl Handler for Ticking {
    type State = ();

    fn on_frame(&mut self, line: &[u8], conn: &mut Conn<'_>) {
        util::echo(line, conn);
    }

    fn on_tick(&mut self) {
        let n = self.ticks.fetch_add(1, Ordering::SeqCst) + 1;
        if (self.panic_on)(n) {
            panic!("tick {n}");
        }
    }
}

/// An idle loop, with no connection at all, ticks: the tick is the loop's
/// own poll timeout, not an event. Once the server has stopped, no tick
/// comes any more.
#[test]
fn an_idle_loop_ticks_until_stopped() {
    let ticks = Arc::new(AtomicU64::new(0));
    let server = start(
        Server::builder().tick(Duration::from_millis(5)),
        Ticking::new(&ticks),
    );
    wait_until("five ticks", || ticks.load(Ordering::SeqCst) >= 5);
    server.stop(DEADLINE).unwrap();
    let after_stop = ticks.load(Ordering::SeqCst);
    // The loop's thread has ended: nothing can call on_tick again. A server
    // started after it shows that time did pass.
    let later = Arc::new(AtomicU64::new(0));
    let other = start(
        Server::builder().tick(Duration::from_millis(5)),
        Ticking::new(&later),
    );
    wait_until("the other server ticks", || {
        later.load(Ordering::SeqCst) >= 2
    });
    other.stop(DEADLINE).unwrap();
    assert_eq!(ticks.load(Ordering::SeqCst), after_stop);
}

/// A loop busy with a connection keeps ticking between its events.
#[test]
fn a_busy_loop_ticks_between_events() {
    let ticks = Arc::new(AtomicU64::new(0));
    let server = start(
        Server::builder().tick(Duration::from_millis(2)),
        Ticking::new(&ticks),
    );
    let mut c = Client::connect(server.local_addr());
    let start = ticks.load(Ordering::SeqCst);
    let mut rounds = 0;
    while ticks.load(Ordering::SeqCst) < start + 3 {
        assert_eq!(c.roundtrip(b"busy\n"), b"busy\n");
        rounds += 1;
        assert!(rounds < 10_000_000, "no tick while serving");
    }
}

/// With ticks off (the default), `on_tick` is never called, however many
/// turns the loop makes.
#[test]
fn ticks_are_off_by_default() {
    let ticks = Arc::new(AtomicU64::new(0));
    let server = start(Server::builder(), Ticking::new(&ticks));
    let mut c = Client::connect(server.local_addr());
    for i in 0..200 {
        let line = format!("turn {i}\n");
        assert_eq!(c.roundtrip(line.as_bytes()), line.as_bytes());
    }
    server.stop(DEADLINE).unwrap();
    assert_eq!(ticks.load(Ordering::SeqCst), 0);
}

/// Every loop of a server with several workers ticks its own handler.
#[test]
fn every_worker_ticks() {
    let counters: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let per_loop = counters.clone();
    let server = Server::builder()
        .workers(3)
        .tick(Duration::from_millis(5))
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
        .spawn_workers(move |i| Ticking::new(&per_loop[i]))
        .unwrap();
    wait_until("every loop ticks", || {
        counters.iter().all(|c| c.load(Ordering::SeqCst) >= 2)
    });
    server.stop(DEADLINE).unwrap();
}

/// A panic in `on_tick` is counted as a handler panic, closes nothing, and
/// the ticks go on.
#[test]
fn a_panicking_tick_is_caught() {
    let ticks = Arc::new(AtomicU64::new(0));
    let server = start(
        Server::builder().tick(Duration::from_millis(2)),
        Ticking {
            ticks: ticks.clone(),
            panic_on: |n| n == 2,
        },
    );
    let mut c = Client::connect(server.local_addr());
    wait_until("ticks after the panic", || {
        ticks.load(Ordering::SeqCst) >= 4
    });
    assert_eq!(server.handle().stats().handler_panics, 1);
    assert_eq!(c.roundtrip(b"still served\n"), b"still served\n");
}
