//! A connection's unsent output.

/// Unsent output: a buffer and how much of it has been written.
///
/// Empty most of the time: replies go from the loop's shared write buffer
/// straight to the socket, and only what the socket would not take lands
/// here. When it drains, its memory is freed, so an idle connection owns no
/// output buffer.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// `None` while nothing waits, which is nearly always: eight bytes in
    /// every connection instead of a vector and an offset (32).
    waiting: Option<Box<Waiting>>,
}

/// Output the socket would not take yet.
#[derive(Debug, Default)]
struct Waiting {
    buf: Vec<u8>,
    /// How much of `buf` has been written since.
    written: usize,
}

impl Outbox {
    /// Bytes not yet written.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.waiting.as_ref().map_or(0, |w| w.buf.len() - w.written)
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes to write next.
    #[inline]
    pub(crate) fn pending(&self) -> &[u8] {
        self.waiting.as_ref().map_or(&[], |w| &w.buf[w.written..])
    }

    /// Marks `n` bytes as written, freeing the buffer once all are.
    #[inline]
    pub(crate) fn advance(&mut self, n: usize) {
        if let Some(w) = &mut self.waiting {
            w.written += n;
            debug_assert!(w.written <= w.buf.len());
            if w.written == w.buf.len() {
                self.waiting = None;
            }
        }
    }

    /// The buffer to append to, with the written prefix dropped so that its
    /// `len()` is exactly the unsent output.
    #[inline]
    pub(crate) fn for_append(&mut self) -> &mut Vec<u8> {
        let w = self.waiting.get_or_insert_with(Box::default);
        if w.written > 0 {
            w.buf.drain(..w.written);
            w.written = 0;
        }
        &mut w.buf
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
}
