//! A connection's incomplete tail: the bytes of the one frame that straddles
//! reads, and nothing while there is none.

use std::fmt;

use crate::base::time::Millis;

/// The bytes of a connection's unfinished frame, kept between reads.
///
/// Eight bytes in the connection (one pointer, null while empty): an idle
/// connection owns no buffer, and the memory is given back as soon as the
/// frame completes. Next to the bytes a framing may keep one number of its
/// own, the [`mark`](Self::mark), for parsing state that must survive until
/// the next read (how far it has looked, say), so that no byte is parsed
/// twice.
///
/// # Memory
///
/// A framing grows the remainder only with the bytes of the frame in flight,
/// up to that framing's documented bound; the capacity grows geometrically
/// but never past the limit the framing passes to
/// [`extend`](Self::extend).
#[derive(Default)]
pub struct Remainder {
    tail: Option<Box<Tail>>,
}

/// What a non-empty remainder owns. Boxed as one allocation so the empty case
/// costs a null pointer.
struct Tail {
    /// Never empty: an empty tail is `None`.
    bytes: Vec<u8>,
    mark: u64,
    /// When the frame in flight started (the loop's clock, for
    /// [`Builder::frame_timeout`](crate::Builder::frame_timeout)), or
    /// [`UNSTAMPED`] until the loop has looked at a new tail. Kept here, not
    /// in the connection, so that a connection with no frame in flight pays
    /// nothing for it.
    since: Millis,
}

/// `Tail::since` of a tail the loop has not stamped yet.
const UNSTAMPED: Millis = Millis::MAX;

impl Remainder {
    /// An empty remainder; allocates nothing.
    pub const fn new() -> Self {
        Remainder { tail: None }
    }

    /// Whether no frame is in flight.
    pub fn is_empty(&self) -> bool {
        self.tail.is_none()
    }

    /// How many bytes are kept.
    pub fn len(&self) -> usize {
        self.tail.as_ref().map_or(0, |t| t.bytes.len())
    }

    /// The bytes kept (the start of the unfinished frame).
    pub fn as_slice(&self) -> &[u8] {
        self.tail.as_ref().map_or(&[], |t| &t.bytes)
    }

    /// The bytes of memory held for the kept bytes (the buffer's capacity;
    /// 0 while empty).
    pub fn capacity(&self) -> usize {
        self.tail.as_ref().map_or(0, |t| t.bytes.capacity())
    }

    /// Appends `bytes`. The buffer grows geometrically, as a `Vec` does, but
    /// its capacity never exceeds `limit` (or the new length, if that is
    /// larger): pass the framing's bound, or the frame's exact size when it
    /// is known, so that a bounded frame never holds twice its bound.
    /// Appending nothing allocates nothing.
    pub fn extend(&mut self, bytes: &[u8], limit: usize) {
        if bytes.is_empty() {
            return;
        }
        let tail = self.tail.get_or_insert_with(|| {
            Box::new(Tail {
                bytes: Vec::new(),
                mark: 0,
                since: UNSTAMPED,
            })
        });
        let needed = tail.bytes.len() + bytes.len();
        if needed > tail.bytes.capacity() {
            // Twice what is held, or what is needed if more, but not past
            // the limit: the last growth step of a bounded frame lands on
            // its bound instead of overshooting by up to 2x.
            let target = (tail.bytes.capacity() * 2)
                .max(needed)
                .min(limit.max(needed));
            tail.bytes.reserve_exact(target - tail.bytes.len());
        }
        tail.bytes.extend_from_slice(bytes);
    }

    /// Drops the first `n` bytes (all of them if `n` is larger), for a
    /// framing or a pre-framing stage (a PROXY header, bytes that arrived
    /// during a TLS handshake) that has used a prefix. Emptied, the remainder
    /// gives its memory back; otherwise the mark is kept as it was.
    pub fn consume(&mut self, n: usize) {
        let Some(tail) = self.tail.as_mut() else {
            return;
        };
        if n >= tail.bytes.len() {
            self.tail = None;
        } else {
            tail.bytes.drain(..n);
        }
    }

    /// Forgets the kept bytes and gives the memory back.
    pub fn clear(&mut self) {
        self.tail = None;
    }

    /// The framing's own number kept with the bytes; 0 when empty or never
    /// set.
    pub fn mark(&self) -> u64 {
        self.tail.as_ref().map_or(0, |t| t.mark)
    }

    /// Sets the framing's own number. It belongs to the bytes: on an empty
    /// remainder this does nothing, and [`clear`](Self::clear) resets it.
    pub fn set_mark(&mut self, mark: u64) {
        if let Some(t) = self.tail.as_mut() {
            t.mark = mark;
        }
    }

    /// Takes the bytes out as a `Vec`, leaving the remainder empty: for the
    /// PROXY header gatherer, which parses what it has gathered and hands
    /// the bytes after the header to the framing.
    pub(crate) fn take_vec(&mut self) -> Vec<u8> {
        self.tail.take().map(|t| t.bytes).unwrap_or_default()
    }

    /// A remainder holding `bytes` (nothing, and no allocation, if empty):
    /// the way back for [`take_vec`](Self::take_vec).
    pub(crate) fn from_vec(bytes: Vec<u8>) -> Self {
        if bytes.is_empty() {
            return Remainder::new();
        }
        Remainder {
            tail: Some(Box::new(Tail {
                bytes,
                mark: 0,
                since: UNSTAMPED,
            })),
        }
    }

    /// When the frame in flight started, as last recorded by
    /// [`note_start`](Self::note_start); `None` with no frame in flight.
    #[inline]
    pub(crate) fn started_at(&self) -> Option<Millis> {
        self.tail
            .as_ref()
            .map(|t| t.since)
            .filter(|&since| since != UNSTAMPED)
    }

    /// Records when the frame in flight started, after a read at `now`: the
    /// tail started now if it is new since the last call, or if `restarted`
    /// (a frame ended in this read, so whatever is left began in it, or the
    /// loop resumes reading after a pause); otherwise it keeps its start, so
    /// that bytes trickled into an unfinished frame move nothing.
    #[inline]
    pub(crate) fn note_start(&mut self, now: Millis, restarted: bool) {
        if let Some(t) = self.tail.as_mut() {
            if restarted || t.since == UNSTAMPED {
                t.since = now;
            }
        }
    }
}

impl fmt::Debug for Remainder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remainder")
            .field("len", &self.len())
            .field("mark", &self.mark())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection pays one pointer for its remainder.
    #[test]
    fn is_one_pointer() {
        assert_eq!(std::mem::size_of::<Remainder>(), 8);
    }

    mod empty {
        use super::*;

        /// An empty remainder holds no memory, and appending nothing keeps it so.
        #[test]
        fn owns_no_buffer() {
            let mut r = Remainder::new();
            r.extend(b"", 100);
            assert!(r.is_empty());
            assert_eq!(r.capacity(), 0);
            assert_eq!(r.as_slice(), b"");
            r.set_mark(7);
            assert_eq!(r.mark(), 0, "a mark belongs to bytes");
        }
    }

    mod holding {
        use super::*;

        /// Bytes accumulate in order; clear gives the memory back.
        #[test]
        fn accumulates_then_frees() {
            let mut r = Remainder::new();
            r.extend(b"ab", 100);
            r.extend(b"cd", 100);
            r.set_mark(3);
            assert_eq!((r.as_slice(), r.len(), r.mark()), (&b"abcd"[..], 4, 3));
            r.clear();
            assert!(r.is_empty());
            assert_eq!((r.capacity(), r.mark()), (0, 0));
        }

        /// Consuming a prefix keeps the rest; consuming all frees.
        #[test]
        fn consume_drops_a_prefix() {
            let mut r = Remainder::new();
            r.extend(b"PROXY hello", 100);
            r.consume(6);
            assert_eq!(r.as_slice(), b"hello");
            r.consume(0);
            assert_eq!(r.as_slice(), b"hello");
            r.consume(99);
            assert!(r.is_empty());
            assert_eq!(r.capacity(), 0);
            r.consume(1);
        }

        /// The frame's start is recorded once, then kept while bytes are
        /// added, until a frame ends (`restarted`); it goes with the bytes.
        #[test]
        fn remembers_when_its_frame_started() {
            let mut r = Remainder::new();
            r.note_start(1, true);
            assert_eq!(r.started_at(), None, "no frame in flight");
            r.extend(b"GE", 100);
            assert_eq!(r.started_at(), None, "not stamped yet");
            r.note_start(5, false);
            assert_eq!(r.started_at(), Some(5));
            r.extend(b"T /", 100);
            r.note_start(9, false);
            assert_eq!(r.started_at(), Some(5), "a trickle moves nothing");
            r.note_start(12, true);
            assert_eq!(r.started_at(), Some(12), "a new frame");
            r.clear();
            r.extend(b"x", 100);
            r.note_start(20, false);
            assert_eq!(r.started_at(), Some(20), "a new tail, a new start");
        }

        /// Growth never takes more than the limit the framing gives.
        #[test]
        fn capacity_stops_at_the_limit() {
            let mut r = Remainder::new();
            for _ in 0..100 {
                r.extend(&[0; 7], 700);
                assert!(r.capacity() <= 700, "capacity {}", r.capacity());
            }
            assert_eq!(r.len(), 700);
            // Past the limit (the framing's business) it still appends.
            r.extend(b"x", 700);
            assert_eq!(r.len(), 701);
        }
    }
}
