//! A connection's incomplete tail: the start of a frame (or of a PROXY
//! header) whose end has not arrived yet.

/// The unfinished bytes of one connection. Eight bytes, and no allocation
/// while empty, which is nearly always: frames are handed out straight from
/// the loop's shared read buffer, and only one that straddles two reads is
/// copied here. Its memory is freed as soon as it empties, so an idle
/// connection owns no buffer.
///
/// `Box<Vec>` on purpose: a `Vec` is 24 bytes in every connection, the box
/// 8, paid for with one more allocation only while a tail exists.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
pub(crate) struct Remainder(Option<Box<Vec<u8>>>);

impl Remainder {
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.as_ref().map_or(true, |v| v.is_empty())
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.len())
    }

    #[cfg(test)]
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Runs `f` on the tail as a vector. `spare` is the loop's empty scratch
    /// vector, lent when the tail is empty, so that the common case (no
    /// tail before, none after) allocates nothing; if `f` leaves bytes in
    /// it, they move into the tail.
    #[inline]
    pub(crate) fn with_vec<R>(
        &mut self,
        spare: &mut Vec<u8>,
        f: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> R {
        match &mut self.0 {
            Some(v) => {
                let r = f(v);
                if v.is_empty() {
                    self.0 = None;
                }
                r
            }
            None => {
                debug_assert!(spare.is_empty());
                let r = f(spare);
                if !spare.is_empty() {
                    self.0 = Some(Box::new(std::mem::take(spare)));
                }
                r
            }
        }
    }

    /// Takes the bytes out, leaving the tail empty.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.0.take().map(|b| *b).unwrap_or_default()
    }

    /// Replaces the tail with `bytes` (freed if empty).
    pub(crate) fn set(&mut self, bytes: Vec<u8>) {
        self.0 = (!bytes.is_empty()).then(|| Box::new(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_tail_borrows_the_spare_and_gives_it_back_empty() {
        let mut r = Remainder::default();
        let mut spare = Vec::new();
        r.with_vec(&mut spare, |v| assert!(v.is_empty()));
        assert!(r.0.is_none(), "nothing allocated");
        r.with_vec(&mut spare, |v| v.extend_from_slice(b"abc"));
        assert!(spare.is_empty(), "the bytes moved into the tail");
        assert_eq!(r.as_slice(), b"abc");
        r.with_vec(&mut spare, Vec::clear);
        assert!(r.0.is_none(), "freed once empty");
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn take_and_set() {
        let mut r = Remainder::default();
        r.set(b"xy".to_vec());
        assert_eq!(r.take(), b"xy");
        assert!(r.is_empty());
        r.set(Vec::new());
        assert!(r.0.is_none());
    }
}
