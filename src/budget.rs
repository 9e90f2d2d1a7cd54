//! The accept budget: the seed library's "acceptors", as slots.
//!
//! The Go library this crate descends from ran N acceptor goroutines. In a
//! reactor there is nothing to run: an "acceptor" becomes a *slot*, a unit of
//! permission to serve one connection. A connection takes a slot before its
//! socket is registered with the poll, and gives it back when it closes, so the
//! number of connections served at once never exceeds the number of slots.
//!
//! The budget is shared by every event loop of a server (atomics, no lock on
//! the fast path), which is what keeps the count exact when several loops
//! accept at once: a slot is *reserved* with a compare-and-swap before the
//! loop commits to serving a connection.
//!
//! # Overflow
//!
//! When every slot is taken, [`Overflow`] decides, before anything is
//! registered:
//!
//! - [`Overflow::Refuse`]: accept, write the refusal message, close.
//! - [`Overflow::Grow`]: add `step` slots (never beyond `max`), then serve;
//!   at `max`, refuse.
//! - [`Overflow::Pause`]: stop accepting; new connections wait in the
//!   kernel's backlog and are accepted, in order, when a slot frees.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// What to do with a new connection when every acceptor slot is busy.
///
/// See the [crate-level `# Overflow` section](crate#overflow) for timelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Accept the connection, write the configured refusal message (if any),
    /// and close it. The socket is never registered with the poll, so a
    /// refused client costs one `accept`, one `write` and one `close`.
    Refuse,
    /// Add `step` slots and serve the connection, up to `max` slots in all;
    /// past `max`, behave as [`Overflow::Refuse`]. Grown slots are kept (the
    /// budget does not shrink back by itself); lower it with
    /// [`ServerHandle::set_acceptors`](crate::ServerHandle::set_acceptors).
    Grow {
        /// Slots added each time the budget is exhausted (the seed used 50).
        step: usize,
        /// The ceiling: the budget never grows beyond this many slots.
        max: usize,
    },
    /// Stop accepting while every slot is busy. Connections wait in the
    /// kernel's listen backlog (size it with
    /// [`Builder::backlog`](crate::Builder::backlog)) and are accepted in
    /// arrival order as soon as a slot frees. The loop does not spin while
    /// paused: it simply stops calling `accept`.
    Pause,
}

impl Default for Overflow {
    /// [`Overflow::Refuse`], as the seed library did.
    fn default() -> Self {
        Overflow::Refuse
    }
}

impl Overflow {
    /// The seed library's "add 50 more" strategy, with a ceiling.
    pub fn grow_by_50_up_to(max: usize) -> Self {
        Overflow::Grow { step: 50, max }
    }
}

/// The verdict on a connection, before or after it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A slot was reserved: serve. The reservation must be given back with
    /// [`Budget::release`], also if the accept then fails.
    Serve,
    /// No slot, and the strategy waits: leave the connection in the backlog.
    Pause,
    /// No slot: accept, then ask [`Budget::admit_overflow`] (grow or refuse).
    /// Growing is decided only once a connection is really there, so a drained
    /// accept queue never grows the budget.
    Overflow,
    /// No slot: refuse the accepted connection.
    Refuse,
}

/// The slot counter shared by every loop of a server.
#[derive(Debug)]
pub(crate) struct Budget {
    /// Slots in service. Grows under [`Overflow::Grow`].
    limit: AtomicUsize,
    /// Slots taken: connections being served (plus reservations in flight).
    active: AtomicUsize,
    /// Read only when the budget is full, so the lock is off the fast path.
    overflow: Mutex<Overflow>,
    /// How many times `Grow` added slots.
    grown: AtomicU64,
}

impl Budget {
    pub(crate) fn new(limit: usize, overflow: Overflow) -> Self {
        Budget {
            limit: AtomicUsize::new(limit),
            active: AtomicUsize::new(0),
            overflow: Mutex::new(overflow),
            grown: AtomicU64::new(0),
        }
    }

    /// Before `accept`: reserves a slot if one is free, else says what the
    /// strategy wants ([`Admission::Pause`] or [`Admission::Overflow`]).
    pub(crate) fn try_acquire(&self) -> Admission {
        if self.reserve() {
            Admission::Serve
        } else if self.overflow() == Overflow::Pause {
            Admission::Pause
        } else {
            Admission::Overflow
        }
    }

    /// After `accept`, for a connection that met a full budget: grows the
    /// budget if the strategy allows and reserves a slot ([`Admission::Serve`]),
    /// or says [`Admission::Refuse`].
    pub(crate) fn admit_overflow(&self) -> Admission {
        loop {
            if self.reserve() {
                return Admission::Serve; // a slot freed meanwhile
            }
            let Overflow::Grow { step, max } = self.overflow() else {
                return Admission::Refuse;
            };
            let limit = self.limit.load(Ordering::Acquire);
            let grown = limit.saturating_add(step.max(1)).min(max);
            if grown <= limit {
                return Admission::Refuse; // at the ceiling
            }
            // Only one racer grows the budget; the others re-read it.
            if self
                .limit
                .compare_exchange(limit, grown, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.grown.fetch_add(1, Ordering::Relaxed);
                log::info!("accept budget grown from {limit} to {grown} slots");
            }
        }
    }

    /// Takes a slot if `active < limit`. The compare-and-swap is what keeps
    /// the count exact across loops: two loops can both see a free slot, only
    /// one of them gets it.
    fn reserve(&self) -> bool {
        let mut active = self.active.load(Ordering::Relaxed);
        loop {
            if active >= self.limit.load(Ordering::Acquire) {
                return false;
            }
            match self.active.compare_exchange_weak(
                active,
                active + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => active = now,
            }
        }
    }

    /// True when a slot is free now.
    pub(crate) fn has_room(&self) -> bool {
        self.active.load(Ordering::Relaxed) < self.limit.load(Ordering::Relaxed)
    }

    /// Gives a slot back.
    pub(crate) fn release(&self) {
        let before = self.active.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0, "slot released twice");
    }

    /// Sets the number of slots. Lowering it never touches served
    /// connections: they keep their slots until they close, and new ones are
    /// admitted only once `active` is below the new limit.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
    }

    pub(crate) fn set_overflow(&self, overflow: Overflow) {
        *self.overflow.lock().unwrap_or_else(|e| e.into_inner()) = overflow;
    }

    pub(crate) fn overflow(&self) -> Overflow {
        *self.overflow.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub(crate) fn grown(&self) -> u64 {
        self.grown.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// What the loop does for one connection that is really there.
    fn admit(b: &Budget) -> Admission {
        match b.try_acquire() {
            Admission::Overflow => b.admit_overflow(),
            other => other,
        }
    }

    #[test]
    fn refuse_serves_exactly_the_limit() {
        let b = Budget::new(2, Overflow::Refuse);
        assert_eq!(admit(&b), Admission::Serve);
        assert_eq!(admit(&b), Admission::Serve);
        assert_eq!(admit(&b), Admission::Refuse);
        b.release();
        assert_eq!(admit(&b), Admission::Serve, "a freed slot serves again");
    }

    #[test]
    fn pause_says_pause_when_full() {
        let b = Budget::new(1, Overflow::Pause);
        assert_eq!(b.try_acquire(), Admission::Serve);
        assert_eq!(b.try_acquire(), Admission::Pause);
        assert_eq!(b.try_acquire(), Admission::Pause, "pausing takes nothing");
        b.release();
        assert_eq!(b.try_acquire(), Admission::Serve);
    }

    #[test]
    fn a_full_budget_does_not_grow_before_a_connection_is_there() {
        let b = Budget::new(1, Overflow::Grow { step: 5, max: 10 });
        assert_eq!(b.try_acquire(), Admission::Serve);
        assert_eq!(b.try_acquire(), Admission::Overflow);
        assert_eq!(b.limit(), 1, "asking is free");
        assert_eq!(b.admit_overflow(), Admission::Serve);
        assert_eq!(b.limit(), 6);
    }

    #[test]
    fn grow_adds_exactly_step_up_to_max_then_refuses() {
        let b = Budget::new(2, Overflow::Grow { step: 3, max: 6 });
        for _ in 0..2 {
            assert_eq!(admit(&b), Admission::Serve);
        }
        assert_eq!(admit(&b), Admission::Serve);
        assert_eq!(b.limit(), 5, "grew by exactly one step");
        assert_eq!(admit(&b), Admission::Serve);
        assert_eq!(admit(&b), Admission::Serve);
        assert_eq!(admit(&b), Admission::Serve);
        assert_eq!(b.limit(), 6, "the last step is cut at max");
        assert_eq!(admit(&b), Admission::Refuse);
        assert_eq!(b.grown(), 2);
    }

    #[test]
    fn lowering_the_limit_keeps_served_connections() {
        let b = Budget::new(3, Overflow::Refuse);
        for _ in 0..3 {
            admit(&b);
        }
        b.set_limit(1);
        assert_eq!(b.active(), 3);
        assert_eq!(admit(&b), Admission::Refuse);
        b.release();
        b.release();
        assert_eq!(admit(&b), Admission::Refuse, "still at the new limit");
        b.release();
        assert_eq!(admit(&b), Admission::Serve);
    }

    #[test]
    fn the_count_is_exact_under_contention() {
        let b = Arc::new(Budget::new(100, Overflow::Grow { step: 7, max: 300 }));
        let served: usize = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..1000).filter(|_| admit(&b) == Admission::Serve).count()
                })
            })
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(served, 300);
        assert_eq!(b.active(), 300);
        assert_eq!(b.limit(), 300);
    }
}
