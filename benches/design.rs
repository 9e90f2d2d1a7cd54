//! Micro-measurements behind two design choices of the event loop, cited
//! in docs/ARCHITECTURE.md. Run: `cargo bench --bench design`.
//!
//! 1. Connection lookup by token: `slab::Slab` (what the loop uses) against a
//!    `HashMap<usize, _>` keyed by a connection counter, the obvious
//!    alternative.
//! 2. Timeouts: a binary heap of wake-up times with lazy deletion (what
//!    `src/timers.rs` does) against scanning every connection each turn, with
//!    10,000 idle connections and a few busy ones.
//!
//! These are models of the two structures, not the loop itself: they
//! measure the choice, with the loop's access patterns. Each figure is the
//! median of 7 runs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hint::black_box;
use std::time::Instant;

/// About the size of a plaintext `Connection<()>` (see the README's memory
/// figures): what a lookup has to reach.
#[derive(Default, Clone)]
#[allow(dead_code)]
struct Conn {
    words: [u64; 20],
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// A cheap deterministic sequence of keys, so both maps see the same order.
fn keys(n: usize, count: usize) -> Vec<usize> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        })
        .collect()
}

fn lookups(n: usize) -> (f64, f64) {
    let lookups = keys(n, 1_000_000);
    let mut slab = slab::Slab::with_capacity(n);
    let mut map = HashMap::with_capacity(n);
    for i in 0..n {
        slab.insert(Conn::default());
        map.insert(i, Conn::default());
    }
    let mut s = Vec::new();
    let mut m = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        for &k in &lookups {
            black_box(&mut slab[k]).words[0] += 1;
        }
        s.push(t.elapsed().as_nanos() as f64 / lookups.len() as f64);
        let t = Instant::now();
        for &k in &lookups {
            black_box(map.get_mut(&k).unwrap()).words[0] += 1;
        }
        m.push(t.elapsed().as_nanos() as f64 / lookups.len() as f64);
    }
    (median(s), median(m))
}

/// One loop turn per millisecond for `turns` ms; `busy` connections are
/// active every turn, the rest idle; timeout 30 s (so nothing expires: the
/// steady state of a server with idle clients).
fn timers(n: usize, busy: usize, turns: u64) -> (f64, f64) {
    const TIMEOUT: u64 = 30_000;
    let mut heap_runs = Vec::new();
    let mut scan_runs = Vec::new();
    for _ in 0..7 {
        // Heap with lazy deletion: each connection has at most one live
        // entry; activity only moves `last_active`.
        let mut last_active = vec![0u64; n];
        let mut timer_at: Vec<Option<u64>> = vec![None; n];
        let mut heap = BinaryHeap::new();
        for (i, at) in timer_at.iter_mut().enumerate() {
            *at = Some(TIMEOUT);
            heap.push(Reverse((TIMEOUT, i)));
        }
        let t = Instant::now();
        for now in 1..=turns {
            last_active[..busy].fill(now);
            while let Some(&Reverse((at, i))) = heap.peek() {
                if at > now {
                    break;
                }
                heap.pop();
                if timer_at[i] != Some(at) {
                    continue;
                }
                let deadline = last_active[i] + TIMEOUT;
                if deadline <= now {
                    black_box(i); // would fire
                    timer_at[i] = None;
                } else {
                    timer_at[i] = Some(deadline);
                    heap.push(Reverse((deadline, i)));
                }
            }
        }
        heap_runs.push(t.elapsed().as_nanos() as f64 / turns as f64);

        // Scan: look at every connection's deadline each turn.
        let mut last_active = vec![0u64; n];
        let t = Instant::now();
        for now in 1..=turns {
            last_active[..busy].fill(now);
            for (i, la) in last_active.iter().enumerate() {
                if la + TIMEOUT <= now {
                    black_box(i);
                }
            }
        }
        scan_runs.push(t.elapsed().as_nanos() as f64 / turns as f64);
    }
    (median(heap_runs), median(scan_runs))
}

fn main() {
    // `cargo test --benches` passes --bench-less flags; only run for real.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("# Design micro-measurements (`cargo bench --bench design`)\n");
    println!("## Connection lookup by token, ns per lookup (1,000,000 random lookups)\n");
    println!("| connections | slab | HashMap (SipHash) | ratio |");
    println!("|---:|---:|---:|---:|");
    for n in [1_000, 10_000, 100_000] {
        let (s, m) = lookups(n);
        println!("| {n} | {s:.1} | {m:.1} | {:.1}x |", m / s);
    }
    println!("\n## Timer work per loop turn, ns (10,000 connections, 30 s timeout, 1 turn/ms)\n");
    println!("| busy connections | heap + lazy deletion | scan all | ratio |");
    println!("|---:|---:|---:|---:|");
    for busy in [0, 100, 1_000] {
        let (h, s) = timers(10_000, busy, 60_000);
        println!("| {busy} | {h:.0} | {s:.0} | {:.0}x |", s / h.max(1.0));
    }
}
