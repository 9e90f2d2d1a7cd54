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
//! Times are the loop's milliseconds ([`Millis`](crate::base::time::Millis)).

use crate::base::id::ConnId;
use crate::base::time::Millis;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

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
}
