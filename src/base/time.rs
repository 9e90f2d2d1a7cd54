//! The loop's clock: milliseconds since the loop started, read once per turn.
//!
//! Time is kept as [`Millis`]: eight bytes per timestamp, read once per loop
//! turn ([`Clock::tick_at`]), not once per event.

use std::time::{Duration, Instant};

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

    /// Sets "now" from `now`, the reading of the system clock taken once
    /// per loop turn (the loop also times the turn from it).
    pub(crate) fn tick_at(&mut self, now: Instant) -> Millis {
        self.now = now.saturating_duration_since(self.start).as_millis() as Millis;
        self.now
    }

    /// "Now", as of the last tick.
    #[inline]
    pub(crate) fn now(&self) -> Millis {
        self.now
    }

    /// The loop time of `instant`, rounded up to whole milliseconds: a
    /// deadline kept as an `Instant` elsewhere is never taken as reached
    /// early.
    pub(crate) fn at(&self, instant: Instant) -> Millis {
        let since = instant.saturating_duration_since(self.start);
        since.as_millis() as Millis + Millis::from(since.subsec_nanos() % 1_000_000 != 0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_turns_a_timeout_off() {
        assert_eq!(millis(Duration::ZERO), None);
        assert_eq!(millis(Duration::from_secs(2)), Some(2000));
    }

    #[test]
    fn an_instant_becomes_loop_time_rounded_up() {
        let c = Clock::new();
        assert_eq!(c.at(c.start), 0);
        assert_eq!(c.at(c.start + Duration::from_millis(7)), 7);
        assert_eq!(c.at(c.start + Duration::from_micros(7001)), 8);
        assert_eq!(c.at(c.start - Duration::from_millis(1)), 0);
    }

    #[test]
    fn the_poll_timeout_never_ends_before_the_deadline() {
        let c = Clock::new();
        assert!(c.until(5) >= Duration::from_millis(5) - c.start.elapsed());
        assert!(c.until(0) < Duration::from_millis(1));
    }
}
