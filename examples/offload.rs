//! Slow work off the loop: each line is handled on a worker thread pool, and
//! the reply comes back through the connection's handle.
//!
//! The loop must never block, so a handler with real work to do hands it to
//! a worker with a `ConnHandle` and returns at once; the worker replies with
//! `ConnHandle::send`, which queues the bytes and wakes the loop. Lines of
//! one connection always go to the same worker, so its replies keep their
//! order.
//!
//! ```text
//! cargo run --release --example offload -- [--addr 127.0.0.1:7000] [the echo example's flags]
//! ```
//!
//! `nc 127.0.0.1 7000`, then type a number N: the reply is the number of
//! primes below N, counted the slow way on a worker (try 5000000).

mod common;

use std::sync::mpsc;

use netpool::{Conn, ConnHandle};

const WORKERS: usize = 4;

/// Counts the primes below `n`, deliberately slowly.
fn primes_below(n: u64) -> u64 {
    (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}

fn answer(line: &[u8]) -> String {
    match std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        Some(n) if n <= 100_000_000 => format!("{} primes below {n}\n", primes_below(n)),
        _ => "send a number up to 100000000\n".to_string(),
    }
}

fn main() {
    common::init_logging();
    let options = common::Options::from_args();

    let workers: Vec<mpsc::Sender<(ConnHandle, Vec<u8>)>> = (0..WORKERS)
        .map(|_| {
            let (tx, rx) = mpsc::channel::<(ConnHandle, Vec<u8>)>();
            std::thread::spawn(move || {
                for (conn, line) in rx {
                    // The connection may be gone by now: then this is a no-op.
                    let _ = conn.send(answer(&line));
                }
            });
            tx
        })
        .collect();

    common::serve_until_signal(options, move |line: &[u8], conn: &mut Conn| {
        let worker = &workers[(conn.id().as_u64() % WORKERS as u64) as usize];
        // The line is borrowed from the loop's buffer: copy it for the worker.
        let _ = worker.send((conn.handle(), line.to_vec()));
    });
}
