//! Timers: one min-heap of wake-up times with lazy deletion.
//!
//! Every timeout of a connection (idle, write stall, linger) is a function of
//! a few timestamps it keeps anyway, so the connection itself knows its next
//! deadline (`Connection::deadline`). The heap holds *at most one live entry
//! per connection*: the earliest time it must be looked at. Activity never
//! touches the heap, it only moves a timestamp. When an entry comes due, the
//! loop recomputes the connection's deadline: if it has passed, the timeout
//! fires; if activity pushed it later, the entry is put back for the new
//! time. Entries for connections that closed, or that were superseded by an
//! earlier one, are recognised and skipped when they come up (lazy deletion).
//!
//! The cost of a loop turn is therefore the entries that are due, never the
//! number of connections: 10,000 idle connections cost nothing until their
//! deadlines, and a busy connection is re-queued at most once per timeout
//! period however many lines it sends.
//!
//! Time is kept as milliseconds since the loop started ([`Millis`]): eight
//! bytes per timestamp, read once per loop turn ([`Clock::tick`]), not once
//! per event.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::handler::ConnId;

/// Milliseconds since the loop's clock started.
pub(crate) type Millis = u64;

/// The loop's notion of "now", refreshed once per turn.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    now: Millis,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            start: Instant::now(),
            now: 0,
        }
    }

    /// Reads the system clock; called once per loop turn.
    pub(crate) fn tick(&mut self) -> Millis {
        self.now = self.start.elapsed().as_millis() as Millis;
        self.now
    }

    /// "Now", as of the last tick.
    #[inline]
    pub(crate) fn now(&self) -> Millis {
        self.now
    }

    /// How long from the real present until `at`, for the poll timeout.
    /// Rounded up to whole milliseconds, so the loop never wakes just early
    /// and spins until the deadline.
    pub(crate) fn until(&self, at: Millis) -> Duration {
        let elapsed = self.start.elapsed();
        Duration::from_millis(at).saturating_sub(elapsed) + Duration::from_micros(999)
    }
}

/// Converts a timeout to milliseconds; zero means "off".
pub(crate) fn millis(d: Duration) -> Option<Millis> {
    match d.as_millis() {
        0 => None,
        ms => Some(ms.min(Millis::MAX as u128 / 2) as Millis),
    }
}

/// Wake-up times of connections, earliest first.
#[derive(Debug, Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<(Millis, usize, ConnId)>>,
}

impl TimerHeap {
    /// Asks to look at connection `key`/`id` at `at`.
    pub(crate) fn schedule(&mut self, at: Millis, key: usize, id: ConnId) {
        self.heap.push(Reverse((at, key, id)));
    }

    /// The earliest wake-up time, if any.
    pub(crate) fn next(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Takes the next entry that is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Millis) -> Option<(Millis, usize, ConnId)> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_due_in_time_order() {
        let mut t = TimerHeap::default();
        t.schedule(30, 3, ConnId(3));
        t.schedule(10, 1, ConnId(1));
        t.schedule(20, 2, ConnId(2));
        assert_eq!(t.next(), Some(10));
        assert_eq!(t.pop_due(5), None, "nothing is due yet");
        assert_eq!(t.pop_due(25), Some((10, 1, ConnId(1))));
        assert_eq!(t.pop_due(25), Some((20, 2, ConnId(2))));
        assert_eq!(t.pop_due(25), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn zero_turns_a_timeout_off() {
        assert_eq!(millis(Duration::ZERO), None);
        assert_eq!(millis(Duration::from_secs(2)), Some(2000));
    }

    #[test]
    fn the_poll_timeout_never_ends_before_the_deadline() {
        let c = Clock::new();
        assert!(c.until(5) >= Duration::from_millis(5) - c.start.elapsed());
        assert!(c.until(0) < Duration::from_millis(1));
    }
}
