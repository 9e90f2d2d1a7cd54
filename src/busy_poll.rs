//! Busy-polling: after a turn that found work, poll without sleeping for a
//! short while before blocking, so that the next request is picked up
//! without the cost of waking a sleeping thread.
//!
//! # Why
//!
//! On request/response traffic the round trip is dominated by waking the
//! sleeping loop (the scheduler, the interrupt, the cache going cold), not
//! by serving the request. A loop that keeps polling for a few tens of
//! microseconds after it answered catches the client's next request while
//! still running. Measured on this 2-core machine (issue 12, client and
//! server on different cores, a round trip of about 80 µs): a 100 µs spin
//! gave one connection 2 to 2.8 times tokio's requests/s; a spin shorter
//! than the client's turnaround catches nothing. The price is CPU: the spin
//! burns its core while it waits, so it pays only with a core to spare.
//!
//! # Adaptive, and bounded
//!
//! The loop spins only after a turn that handled events, so an idle server
//! blocks at once and costs nothing. How long it spins adapts to what
//! spinning catches ([`BusyPoll`]):
//!
//! - a spin that catches an event keeps the full budget;
//! - a spin that comes up empty halves it, down to nothing, so under light
//!   load (requests milliseconds apart) the spinning stops after a few
//!   requests;
//! - a wait (the spin and the sleep after it, together) that ends with
//!   work sooner than the full budget shows that spinning would have caught
//!   it: the full budget comes back. Counting the spin too matters: a client
//!   whose turnaround is longer than the budget would otherwise bring the
//!   budget back every time (its sleep after a full spin is short) and make
//!   the loop burn every spin and still pay every wake-up.

use std::time::Duration;

/// The spin budget and how it adapts. No clock, no I/O: the loop tells it
/// what happened.
#[derive(Debug, Clone)]
pub(crate) struct BusyPoll {
    max: Duration,
    current: Duration,
}

/// Below this a spin is not worth a system call: it stops.
const MIN_SPIN: Duration = Duration::from_micros(1);

impl BusyPoll {
    /// Spinning up to `max` after a busy turn; `Duration::ZERO` turns it off.
    pub(crate) fn new(max: Duration) -> Self {
        BusyPoll { max, current: max }
    }

    /// How long to spin before blocking, after a turn that did (`worked`)
    /// or did not do any work.
    #[inline]
    pub(crate) fn budget(&self, worked: bool) -> Duration {
        if worked {
            self.current
        } else {
            Duration::ZERO
        }
    }

    /// A spin ended: it caught an event (`found`) or used its budget.
    pub(crate) fn spun(&mut self, found: bool) {
        if found {
            self.current = self.max;
        } else {
            self.current /= 2;
            if self.current < MIN_SPIN {
                self.current = Duration::ZERO;
            }
        }
    }

    /// A wait that spun for `spun`, then slept for `slept`, ended with work
    /// (`found`): a spin as long as both would have caught it.
    pub(crate) fn slept(&mut self, spun: Duration, slept: Duration, found: bool) {
        if found && spun + slept <= self.max {
            self.current = self.max;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(20);

    #[test]
    fn an_idle_loop_never_spins() {
        let b = BusyPoll::new(MAX);
        assert_eq!(b.budget(false), Duration::ZERO);
        assert_eq!(BusyPoll::new(Duration::ZERO).budget(true), Duration::ZERO);
    }

    #[test]
    fn empty_spins_halve_the_budget_to_nothing() {
        let mut b = BusyPoll::new(MAX);
        let mut spins = 0;
        while b.budget(true) > Duration::ZERO {
            b.spun(false);
            // Light load: the next request comes a millisecond later.
            b.slept(Duration::ZERO, Duration::from_millis(1), true);
            spins += 1;
        }
        assert!(
            spins <= 6,
            "spinning stops after a few empty spins: {spins}"
        );
        assert_eq!(b.budget(true), Duration::ZERO);
    }

    #[test]
    fn work_that_a_spin_would_catch_restores_the_budget() {
        let mut b = BusyPoll::new(MAX);
        b.spun(false);
        b.spun(false);
        assert!(b.budget(true) < MAX);
        b.slept(Duration::from_micros(5), Duration::from_micros(7), true);
        assert_eq!(b.budget(true), MAX, "the client answered within the budget");
        b.spun(false);
        b.slept(Duration::from_micros(10), Duration::from_micros(2), false);
        assert!(
            b.budget(true) < MAX,
            "a timer or a late client does not restore it"
        );
    }

    /// A client that answers 35 µs after each reply, against a 20 µs
    /// budget: every spin would miss it, so spinning stops and stays
    /// stopped instead of burning 20 µs a request for nothing.
    #[test]
    fn a_client_slower_than_the_budget_stops_the_spinning() {
        let mut b = BusyPoll::new(MAX);
        let turnaround = Duration::from_micros(35);
        let mut spun = Duration::ZERO;
        for _ in 0..100 {
            // The spin misses; the sleep after it ends with the request.
            let spin = b.budget(true);
            if !spin.is_zero() {
                spun += spin;
                b.spun(false);
            }
            b.slept(spin, turnaround - spin, true);
        }
        assert_eq!(b.budget(true), Duration::ZERO);
        assert!(
            spun < MAX * 3,
            "spun {spun:?} over 100 requests it could never catch"
        );
    }

    #[test]
    fn a_spin_that_catches_work_keeps_the_full_budget() {
        let mut b = BusyPoll::new(MAX);
        b.spun(false);
        b.spun(true);
        assert_eq!(b.budget(true), MAX);
    }
}
