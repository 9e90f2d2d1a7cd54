//! Slow work off the loop, replies in request order: a number up to 10,000
//! is answered on the loop at once; a larger one is counted on a pool of
//! worker threads. Either way the reply is `<count> primes below <N>`, and
//! one connection's replies always come back in the order of its requests,
//! whatever mix it sends and whichever worker finishes first.
//!
//! The loop must never block, so the handler hands slow work to the pool
//! with a `ReplySlot` (`Conn::defer`): the place of the reply in the
//! connection's output, reserved in order. What the connection sends after
//! it (a cheap answer, say) waits behind it until a worker fills it. Other
//! clients' small requests are answered at once while the pool is busy: the
//! loop never waits for a worker. On SIGINT or SIGTERM the server stops
//! accepting, keeps each connection open until the replies its workers owe
//! it are written (within `--grace`, default 5 s), waits for the pool to
//! finish the work in flight, and exits 0.
//!
//! ```text
//! cargo run --release --example offload -- [--addr 127.0.0.1:7000] [--grace SECS]
//!     [the other flags of examples/common: --help lists them]
//! ```
//!
//! Then `nc 127.0.0.1 7000` and paste a pipeline: the slow `2000000` is
//! answered first, as it was asked first:
//!
//! ```text
//! 2000000
//! 10
//! 7
//! ```

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use netpool::{Conn, ReplySlot};

/// Worker threads in the pool.
const WORKERS: usize = 4;
/// Up to this, a number is cheap enough to count on the loop.
const ON_LOOP: u64 = 10_000;
/// The largest number taken (counting below it takes a worker a few
/// seconds).
const MAX: u64 = 10_000_000;

/// Counts the primes below `n`, deliberately slowly (trial division).
fn primes_below(n: u64) -> u64 {
    (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}

fn answer(n: u64) -> String {
    format!("{} primes below {n}\n", primes_below(n))
}

/// The pool: each worker takes a job (a reply's slot and its number),
/// counts, and fills the slot. It returns how many jobs it did once the
/// queue is closed, which happens when the server's handler (its one
/// sender) is dropped, at the end of the stop.
fn start_pool() -> (mpsc::Sender<(ReplySlot, u64)>, Vec<JoinHandle<usize>>) {
    let (jobs, queue) = mpsc::channel::<(ReplySlot, u64)>();
    let queue = Arc::new(Mutex::new(queue));
    let workers = (0..WORKERS)
        .map(|_| {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let mut done = 0;
                loop {
                    let job = queue.lock().unwrap().recv();
                    let Ok((slot, n)) = job else {
                        return done;
                    };
                    // Waits only if the loop's command queue is full; fails
                    // only if the server is gone (a stop that ran out of
                    // grace), and then the reply has nowhere to go.
                    let _ = slot.send_wait(answer(n));
                    done += 1;
                }
            })
        })
        .collect();
    (jobs, workers)
}

fn main() {
    common::init_logging();
    let options = common::Options::from_args();
    let (pool, workers) = start_pool();

    common::serve_until_signal(options, move |line: &[u8], conn: &mut Conn| {
        let n = std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        match n {
            Some(n) if n <= ON_LOOP => conn.send(answer(n).as_bytes()),
            Some(n) if n <= MAX => {
                // The reply's place, in order; the worker fills it.
                let reply = conn.defer();
                if pool.send((reply, n)).is_err() {
                    // No pool (cannot happen while we run): dropping the
                    // slot gives its place up.
                    log::error!("the worker pool is gone");
                }
            }
            _ => conn.send(format!("send a number up to {MAX}\n").as_bytes()),
        }
    });

    // The server has stopped and dropped its handler, so the pool's queue is
    // closed: the workers finish what they hold, then end.
    let done: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    eprintln!("pool: {done} numbers counted");
}
