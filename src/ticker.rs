//! The handler's tick ([`Builder::tick`](crate::Builder::tick)): when a loop
//! calls [`Handler::on_tick`](crate::Handler::on_tick) next. No I/O, no
//! thread, no sleep: the loop folds [`Ticker::next`] into its poll timeout,
//! beside its other deadlines, and asks [`Ticker::due`] once per turn.
//!
//! Ticks are meant for periodic housekeeping (expiring a cache, flushing a
//! batch), which wants "about every period", not a catch-up burst: a tick
//! taken a little late keeps the schedule, but ticks missed altogether while
//! the loop was busy are not made up; the next one then comes a whole period
//! after the late one.

use std::time::Duration;

use crate::base::time::Millis;

/// The period and the next tick, in the loop's milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticker {
    every: Millis,
    next: Millis,
}

impl Ticker {
    /// Ticks every `period` from `now`; `None` for a zero period (off). The
    /// loop's clock counts whole milliseconds, so a shorter period is 1 ms.
    pub(crate) fn new(period: Duration, now: Millis) -> Option<Ticker> {
        if period.is_zero() {
            return None;
        }
        let every = period.as_millis().clamp(1, Millis::MAX as u128 / 2) as Millis;
        Some(Ticker {
            every,
            next: now.saturating_add(every),
        })
    }

    /// When the next tick is due.
    pub(crate) fn next(&self) -> Millis {
        self.next
    }

    /// True when a tick is due at `now`, at most once per call; the next one
    /// is then scheduled a period later, or a period after `now` if the loop
    /// was so late that it missed one or more.
    pub(crate) fn due(&mut self, now: Millis) -> bool {
        if now < self.next {
            return false;
        }
        self.next = self.next.saturating_add(self.every);
        if self.next <= now {
            self.next = now.saturating_add(self.every);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_period_is_off() {
        assert_eq!(Ticker::new(Duration::ZERO, 5), None);
    }

    /// On time, ticks keep to their grid, whatever the turn's exact time.
    #[test]
    fn ticks_keep_their_period() {
        let mut t = Ticker::new(Duration::from_millis(100), 0).unwrap();
        assert_eq!(t.next(), 100);
        assert!(!t.due(99));
        assert!(t.due(103), "due once its time has come");
        assert!(!t.due(103), "at most once per turn");
        assert_eq!(
            t.next(),
            200,
            "the grid is kept, not shifted by the late turn"
        );
        assert!(t.due(200));
        assert_eq!(t.next(), 300);
    }

    /// A loop that was busy for several periods gets one tick, not a burst.
    #[test]
    fn missed_ticks_are_not_made_up() {
        let mut t = Ticker::new(Duration::from_millis(10), 0).unwrap();
        assert!(t.due(55));
        assert!(!t.due(55));
        assert_eq!(t.next(), 65);
    }

    /// The clock counts milliseconds: a sub-millisecond period is 1 ms, and
    /// a huge one does not overflow.
    #[test]
    fn periods_are_whole_milliseconds() {
        let t = Ticker::new(Duration::from_micros(300), 7).unwrap();
        assert_eq!(t.next(), 8);
        let mut t = Ticker::new(Duration::MAX, 7).unwrap();
        assert!(!t.due(u64::MAX / 4));
    }
}
