//! A connection's unsent output: wire bytes the socket has not taken, and
//! replies reserved in order that other threads have yet to fill.

use super::ordered::{Fill, Ordered};

/// Unsent output: wire bytes and how much of them has been written, then
/// the replies still outstanding ([`Ordered`]) with what was sent after them.
///
/// Empty most of the time: replies go from the loop's shared write buffer
/// straight to the socket, and only what the socket would not take, or what
/// waits behind a deferred reply, lands here. When it drains, its memory is
/// freed, so an idle connection owns no output buffer, and a connection
/// that never defers a reply never allocates the ordered queue.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// `None` while nothing waits, which is nearly always: eight bytes in
    /// every connection instead of a vector, an offset and a queue.
    waiting: Option<Box<Waiting>>,
}

/// Output that cannot leave yet.
#[derive(Debug, Default)]
struct Waiting {
    /// Wire bytes (sealed, on TLS) the socket would not take yet. They come
    /// before everything in `ordered`.
    buf: Vec<u8>,
    /// How much of `buf` has been written since.
    written: usize,
    /// Replies reserved and not yet released, and what followed them
    /// (plaintext, sealed when released).
    ordered: Ordered,
}

impl Waiting {
    fn wire(&self) -> usize {
        self.buf.len() - self.written
    }

    fn is_empty(&self) -> bool {
        self.wire() == 0 && self.ordered.is_empty()
    }

    // Out of line, so that the checks on a connection with nothing waiting
    // (nearly all of them, after every write) stay a load and a branch.
    #[inline(never)]
    fn above(&self, high: usize, max_outstanding: usize) -> bool {
        self.wire() + self.ordered.held() > high || self.ordered.outstanding() >= max_outstanding
    }

    #[inline(never)]
    fn below(&self, low: usize, resume: usize) -> bool {
        self.wire() + self.ordered.held() <= low && self.ordered.outstanding() <= resume
    }
}

impl Outbox {
    /// Bytes not yet written: wire bytes, and plaintext held behind
    /// outstanding replies. This is what the water marks and the output
    /// limit count.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.waiting
            .as_ref()
            .map_or(0, |w| w.wire() + w.ordered.held())
    }

    /// Nothing waits at all: no wire bytes, no outstanding reply.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.as_ref().map_or(true, |w| w.is_empty())
    }

    /// Wire bytes wait for the socket.
    #[inline]
    pub(crate) fn has_wire(&self) -> bool {
        self.waiting.as_ref().is_some_and(|w| w.wire() > 0)
    }

    /// Replies reserved with `Conn::defer` and not yet written.
    #[inline]
    pub(crate) fn outstanding(&self) -> usize {
        self.waiting.as_ref().map_or(0, |w| w.ordered.outstanding())
    }

    /// Above the high-water mark, or at the bound on outstanding replies:
    /// time to stop reading.
    #[inline]
    pub(crate) fn above(&self, high: usize, max_outstanding: usize) -> bool {
        match &self.waiting {
            None => false,
            Some(w) => w.above(high, max_outstanding),
        }
    }

    /// At or below the low-water mark, and at or below `resume` outstanding
    /// replies: time to read again.
    #[inline]
    pub(crate) fn below(&self, low: usize, resume: usize) -> bool {
        match &self.waiting {
            None => true,
            Some(w) => w.below(low, resume),
        }
    }

    /// Whether the connection owns heap memory for its output (the box of
    /// what waits): false whenever nothing waits, which is what keeps an
    /// idle connection down to its slab entry.
    #[cfg(test)]
    pub(crate) fn owns_memory(&self) -> bool {
        self.waiting.is_some()
    }

    /// The wire bytes to write next.
    #[inline]
    pub(crate) fn pending(&self) -> &[u8] {
        self.waiting.as_ref().map_or(&[], |w| &w.buf[w.written..])
    }

    /// Marks `n` wire bytes as written, freeing the buffer once all are (and
    /// the whole box once nothing else waits either).
    #[inline]
    pub(crate) fn advance(&mut self, n: usize) {
        if let Some(w) = &mut self.waiting {
            w.written += n;
            debug_assert!(w.written <= w.buf.len());
            if w.written == w.buf.len() {
                if w.ordered.is_empty() {
                    self.waiting = None;
                } else {
                    w.buf = Vec::new();
                    w.written = 0;
                }
            }
        }
    }

    /// The wire buffer to append to, with the written prefix dropped so that
    /// its length is exactly the unsent wire bytes.
    #[inline]
    pub(crate) fn for_append(&mut self) -> &mut Vec<u8> {
        let w = self.waiting.get_or_insert_with(Box::default);
        if w.written > 0 {
            w.buf.drain(..w.written);
            w.written = 0;
        }
        &mut w.buf
    }

    /// Queues wire bytes behind those already waiting. Out of line and
    /// cold: on the hot path the socket takes every reply, and keeping this
    /// (and the allocation of the box) out keeps the callers small enough to
    /// inline.
    #[cold]
    #[inline(never)]
    pub(crate) fn append(&mut self, bytes: &[u8]) {
        self.for_append().extend_from_slice(bytes);
    }

    /// Queues the wire bytes in `wire` behind those already waiting, and
    /// clears it (its memory stays with its owner: one of the loop's
    /// buffers).
    pub(crate) fn push_wire(&mut self, wire: &mut Vec<u8>) {
        if !wire.is_empty() {
            self.append(wire);
            wire.clear();
        }
    }

    // ----- Replies reserved in order (see `ordered.rs`) ----------------------

    /// Reserves the next reply's place at position `at` of the output being
    /// written by the handler call in progress; returns its number.
    pub(crate) fn reserve(&mut self, at: usize) -> u64 {
        self.waiting
            .get_or_insert_with(Box::default)
            .ordered
            .mark(at)
    }

    /// After a handler call that wrote `out[start..]`: moves what must wait
    /// behind an outstanding reply out of `out`. Nothing to do (and no
    /// allocation) on a connection with no reply outstanding.
    #[inline]
    pub(crate) fn settle(&mut self, out: &mut Vec<u8>, start: usize) {
        if let Some(w) = &mut self.waiting {
            w.ordered.settle(out, start);
        }
    }

    /// A handler call did not finish: its reservations are void.
    pub(crate) fn forget_reservations(&mut self) {
        if let Some(w) = &mut self.waiting {
            w.ordered.forget_marks();
            if w.is_empty() {
                self.waiting = None;
            }
        }
    }

    /// Appends plaintext at the end of the output, behind the outstanding
    /// replies; returns false (and takes nothing) when none is outstanding,
    /// so the bytes can leave at once.
    pub(crate) fn hold(&mut self, bytes: &[u8]) -> bool {
        match &mut self.waiting {
            Some(w) if !w.ordered.is_empty() => {
                w.ordered.push(bytes);
                true
            }
            _ => false,
        }
    }

    /// Puts a reply in its reserved place.
    pub(crate) fn fill(&mut self, seq: u64, reply: Vec<u8>) -> Fill {
        match &mut self.waiting {
            Some(w) => w.ordered.fill(seq, reply),
            None => Fill::Unknown,
        }
    }

    /// The plaintext released by the fills so far (replies at the front and
    /// what followed them), in order, for the driver to seal and queue.
    pub(crate) fn take_ready(&mut self) -> Option<Vec<u8>> {
        let w = self.waiting.as_mut()?;
        let ready = w.ordered.take_ready();
        if w.is_empty() {
            self.waiting = None;
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drained_output_frees_its_memory() {
        let mut o = Outbox::default();
        o.for_append().extend_from_slice(b"hello");
        o.advance(2);
        assert_eq!(o.pending(), b"llo");
        assert_eq!(o.len(), 3);
        o.advance(3);
        assert!(o.is_empty());
        assert!(o.waiting.is_none(), "the buffer is freed");
    }

    #[test]
    fn appending_keeps_order_and_drops_the_written_prefix() {
        let mut o = Outbox::default();
        o.for_append().extend_from_slice(b"abc");
        o.advance(1);
        let buf = o.for_append();
        assert_eq!(buf.as_slice(), b"bc");
        buf.extend_from_slice(b"d");
        assert_eq!(o.pending(), b"bcd");
    }

    #[test]
    fn pushed_wire_queues_behind_what_waits() {
        let mut o = Outbox::default();
        o.push_wire(&mut Vec::new());
        assert!(o.waiting.is_none(), "nothing pushed, nothing allocated");
        let mut wire = b"xy".to_vec();
        o.push_wire(&mut wire);
        assert!(wire.is_empty());
        o.advance(1);
        o.push_wire(&mut b"z".to_vec());
        assert_eq!(o.pending(), b"yz");
    }

    #[test]
    fn an_outstanding_reply_keeps_the_box_and_counts_what_waits() {
        let mut o = Outbox::default();
        let mut out = b"now".to_vec();
        let seq = o.reserve(3);
        out.extend_from_slice(b"later");
        o.settle(&mut out, 0);
        assert_eq!(out, b"now");
        assert_eq!((o.len(), o.outstanding()), (5, 1));
        assert!(!o.is_empty() && !o.has_wire());
        assert!(o.above(4, 10), "held bytes count toward high water");
        assert!(o.above(100, 1), "the bound on outstanding replies");
        assert!(!o.below(100, 0));
        assert!(o.hold(b"!"), "behind the reply");
        assert_eq!(o.fill(seq, b"R".to_vec()), Fill::Filled);
        let mut ready = o.take_ready().unwrap();
        assert_eq!(ready, b"Rlater!");
        assert!(o.waiting.is_none(), "freed once nothing waits");
        assert!(!o.hold(b"x"), "no reply outstanding: leaves at once");
        o.push_wire(&mut ready);
        assert_eq!(o.pending(), b"Rlater!");
    }

    #[test]
    fn wire_drained_before_the_reply_keeps_the_queue() {
        let mut o = Outbox::default();
        o.for_append().extend_from_slice(b"ab");
        let mut out = Vec::new();
        o.reserve(0);
        o.settle(&mut out, 0);
        o.advance(2);
        assert!(!o.has_wire());
        assert_eq!(o.outstanding(), 1, "the reservation survives the drain");
    }

    #[test]
    fn a_connection_that_never_defers_settles_for_free() {
        let mut o = Outbox::default();
        let mut out = b"reply".to_vec();
        o.settle(&mut out, 0);
        assert_eq!(out, b"reply");
        assert!(o.waiting.is_none());
        o.forget_reservations();
        assert!(o.waiting.is_none());
    }
}
