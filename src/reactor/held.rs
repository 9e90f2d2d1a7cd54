//! Replies held for the end of the turn.
//!
//! While the loop handles one batch of events it can hold each connection's
//! replies here instead of writing them after each read, and write them
//! once per connection when the batch is done (redis-server does the same
//! before it sleeps). All connections share one buffer; each holds one
//! contiguous run of it, a *segment*, named by slab key and [`ConnId`] so
//! that a connection that closed meanwhile (its slot perhaps reused) gets
//! nothing.
//!
//! A connection's replies stay contiguous because it is driven once per
//! batch: everything it produces while it is driven extends the last
//! segment. Whatever could touch its output between two of its drives
//! (commands from other threads, timers, a second drive from `read_again`)
//! runs only after the held replies were written, so the segment of a
//! connection, if it has one, is always the last (see `drive.rs`).
//!
//! The buffer has no per-connection cost and keeps its capacity between
//! turns, so holding allocates nothing once the loop has warmed up; its
//! size is bounded by [`LIMIT`] (plus one drive's replies).

use std::ops::Range;

use crate::base::id::ConnId;

/// Held bytes at which the loop stops holding and writes them all (and past
/// which one connection's replies are written at once): holding is for
/// small replies, and a connection that produces this much in one turn
/// gains nothing from waiting.
pub(super) const LIMIT: usize = 64 * 1024;

/// Replies of several connections, in the order their connections were
/// driven.
#[derive(Debug, Default)]
pub(super) struct Held {
    buf: Vec<u8>,
    segments: Vec<Segment>,
}

/// One connection's held replies: `buf[start..end]`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Segment {
    pub(super) key: usize,
    pub(super) id: ConnId,
    start: usize,
    end: usize,
}

impl Held {
    /// Bytes held, all connections together.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing is held.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes held for connection `(key, id)`: its segment is the last one,
    /// if it has one.
    #[inline]
    pub(super) fn of(&self, key: usize, id: ConnId) -> usize {
        match self.segments.last() {
            Some(s) if s.key == key && s.id == id => s.end - s.start,
            _ => 0,
        }
    }

    /// Holds `bytes` after whatever connection `(key, id)` holds already.
    #[inline]
    pub(super) fn push(&mut self, key: usize, id: ConnId, bytes: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        let end = self.buf.len();
        match self.segments.last_mut() {
            Some(s) if s.key == key && s.id == id => s.end = end,
            _ => self.segments.push(Segment {
                key,
                id,
                start,
                end,
            }),
        }
    }

    /// Connection `(key, id)`'s held bytes (its segment is the last one),
    /// taken out: the caller writes them now. Empty if it holds none.
    pub(super) fn take_last(&mut self, key: usize, id: ConnId) -> Option<Taken<'_>> {
        match self.segments.last() {
            Some(s) if s.key == key && s.id == id => {
                let range = s.start..s.end;
                self.segments.pop();
                Some(Taken { held: self, range })
            }
            _ => None,
        }
    }

    /// The segments in order, with their bytes.
    pub(super) fn segments(&self) -> impl Iterator<Item = (Segment, &[u8])> + '_ {
        self.segments
            .iter()
            .map(|s| (*s, &self.buf[s.start..s.end]))
    }

    /// Forgets everything held, keeping the capacity.
    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.segments.clear();
    }
}

/// The last segment's bytes, removed from the buffer when this is dropped
/// (they are at its end, so that is a truncation).
pub(super) struct Taken<'a> {
    held: &'a mut Held,
    range: Range<usize>,
}

impl Taken<'_> {
    /// The bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.held.buf[self.range.clone()]
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.held.buf.truncate(self.range.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> ConnId {
        ConnId(n)
    }

    fn all(held: &Held) -> Vec<(usize, u64, Vec<u8>)> {
        held.segments()
            .map(|(s, b)| (s.key, s.id.as_u64(), b.to_vec()))
            .collect()
    }

    #[test]
    fn a_connection_driven_again_extends_its_segment() {
        let mut held = Held::default();
        held.push(3, id(7), b"a");
        held.push(3, id(7), b"bc");
        held.push(5, id(9), b"x");
        assert_eq!(
            all(&held),
            vec![(3, 7, b"abc".to_vec()), (5, 9, b"x".to_vec())]
        );
        assert_eq!(held.len(), 4);
        assert_eq!(held.of(5, id(9)), 1);
        // Only the last segment counts as a connection's own.
        assert_eq!(held.of(3, id(7)), 0);
    }

    #[test]
    fn a_reused_slot_is_another_connection() {
        let mut held = Held::default();
        held.push(3, id(7), b"old");
        held.push(3, id(8), b"new");
        assert_eq!(
            all(&held),
            vec![(3, 7, b"old".to_vec()), (3, 8, b"new".to_vec())]
        );
        assert_eq!(held.of(3, id(7)), 0);
        assert!(held.take_last(3, id(7)).is_none());
    }

    #[test]
    fn taking_the_last_segment_truncates_the_buffer() {
        let mut held = Held::default();
        held.push(1, id(1), b"first");
        held.push(2, id(2), b"second");
        {
            let taken = held.take_last(2, id(2)).expect("held");
            assert_eq!(taken.bytes(), b"second");
        }
        assert_eq!(held.len(), 5);
        assert_eq!(all(&held), vec![(1, 1, b"first".to_vec())]);
        // The next connection's segment starts where the taken one did.
        held.push(4, id(4), b"z");
        assert_eq!(
            all(&held),
            vec![(1, 1, b"first".to_vec()), (4, 4, b"z".to_vec())]
        );
    }

    #[test]
    fn clearing_keeps_the_capacity() {
        let mut held = Held::default();
        held.push(1, id(1), &[0; 1000]);
        let capacity = held.buf.capacity();
        held.clear();
        assert!(held.is_empty());
        assert_eq!(held.len(), 0);
        assert_eq!(held.buf.capacity(), capacity);
    }
}
