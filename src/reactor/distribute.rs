//! The accepting side of several loops: which loop serves each new
//! connection. Why the three [`Distribution`]s exist, and what each costs,
//! is in `distribution.rs`.
//!
//! A handed-off socket travels to its loop with what it holds
//! ([`Handoff`](crate::shared::Handoff)): its ticket (slot, address place)
//! and its count in the target's load, each given back if the hand-off is
//! dropped unread (the target stopped or exited first), so nothing is lost
//! on the way.

use std::sync::atomic::Ordering;

use crate::distribution::Distribution;
use crate::shared::ServerShared;

/// The accepting loop's choice of a loop for each new connection.
#[derive(Debug)]
pub(crate) struct Distributor {
    distribution: Distribution,
    /// The loop this distributor runs on.
    me: usize,
    /// Where the next scan for the least-loaded loop starts, so that ties
    /// (every loop idle, say) spread round-robin instead of piling on loop 0.
    cursor: usize,
}

impl Distributor {
    pub(crate) fn new(distribution: Distribution, me: usize) -> Self {
        Distributor {
            distribution,
            me,
            cursor: me,
        }
    }

    /// The loop that will serve the next connection: this one, or the least
    /// loaded of all. Nothing is counted here: admission may still refuse
    /// the connection. Once it is admitted, the accepting loop counts it on
    /// the target at once (`Load::on`), so a burst of accepts spreads even
    /// before any loop has adopted its share.
    pub(crate) fn choose(&mut self, server: &ServerShared) -> usize {
        let loops = &server.loops;
        match self.distribution {
            _ if loops.len() == 1 => self.me,
            Distribution::Shared | Distribution::ReusePort => self.me,
            Distribution::Handoff => {
                let n = loops.len();
                let start = self.cursor;
                self.cursor = (self.cursor + 1) % n;
                (0..n)
                    .map(|k| (start + k) % n)
                    .min_by_key(|&i| loops[i].open.load(Ordering::Relaxed))
                    .unwrap_or(self.me)
            }
        }
    }
}
