//! Line framing: `\n`-terminated lines, one trailing `\r` stripped.
//!
//! Every byte is searched for `\n` exactly once: a read is scanned with
//! `memchr` as it arrives, and the remainder never contains a newline, so it
//! is never scanned again (tokio-util's `LinesCodec` keeps a `next_index` for
//! the same reason).

use memchr::memchr_iter;

use super::{Flow, FrameError, Framing, Remainder};

/// `\n`-terminated lines, delivered without the `\n` and without one `\r`
/// before it, so `CRLF` and `LF` clients look the same. The bytes need not be
/// UTF-8. The frame is the line, `&[u8]`.
///
/// ```
/// use netpool::{Flow, Framing, Lines, Remainder};
///
/// let mut lines = Lines::new(1024);
/// let mut rest = Remainder::new();
/// let mut seen = Vec::new();
/// for read in [&b"GET a\r\nGET"[..], b" b\n"] {
///     lines.split(&mut rest, read, |line: &[u8]| {
///         seen.push(line.to_vec());
///         Flow::Continue
///     })?;
/// }
/// assert_eq!(seen, [b"GET a".to_vec(), b"GET b".to_vec()]);
/// assert!(rest.is_empty());
/// # Ok::<(), netpool::FrameError>(())
/// ```
///
/// # Memory
///
/// `max_line_len` bounds a line's content: the bytes the handler sees, so a
/// trailing `\r` that is stripped does not count. A longer line is
/// [`FrameError::TooLong`] as soon as it is known to be longer, complete or
/// not. A connection therefore buffers at most `max_line_len + 1` bytes
/// (content and a `\r` that may be followed by `\n`), and only while a line
/// straddles two reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lines {
    max_line_len: usize,
}

impl Default for Lines {
    /// Lines of at most 64 KiB.
    fn default() -> Self {
        Lines::new(64 * 1024)
    }
}

impl Lines {
    /// Lines whose content is at most `max_line_len` bytes (0 allows only
    /// empty lines).
    pub const fn new(max_line_len: usize) -> Self {
        Lines { max_line_len }
    }

    /// The bound on a line's content, in bytes.
    pub const fn line_limit(&self) -> usize {
        self.max_line_len
    }

    /// Whether a line or unfinished line of `len` bytes, whose last byte is
    /// `last`, has more content than allowed. A final `\r` is not counted:
    /// in a complete line it is stripped, and in an unfinished one it may be
    /// the first half of `CRLF`.
    #[inline]
    fn too_long(&self, len: usize, last: Option<u8>) -> bool {
        len > self.max_line_len && (len - self.max_line_len > 1 || last != Some(b'\r'))
    }

    fn too_long_err(&self) -> FrameError {
        FrameError::TooLong {
            limit: self.max_line_len,
        }
    }
}

/// Strips one trailing `\r`, so `CRLF` and `LF` lines look the same.
#[inline]
fn strip_cr(line: &[u8]) -> &[u8] {
    match line.split_last() {
        Some((b'\r', rest)) => rest,
        _ => line,
    }
}

impl Framing for Lines {
    type Frame<'a> = &'a [u8];

    fn split<F>(
        &mut self,
        rest: &mut Remainder,
        input: &[u8],
        mut on_frame: F,
    ) -> Result<(), FrameError>
    where
        F: FnMut(&[u8]) -> Flow,
    {
        // The remainder can hold a line one byte over the bound (a `\r`
        // that may be stripped); its buffer need never be larger.
        let bound = self.max_line_len.saturating_add(1);
        let mut newlines = memchr_iter(b'\n', input);
        let mut start = 0;

        // Finish the line that straddles the previous read, if there is one.
        if !rest.is_empty() {
            let Some(end) = newlines.next() else {
                let last = input.last().or(rest.as_slice().last()).copied();
                if self.too_long(rest.len() + input.len(), last) {
                    return Err(self.too_long_err());
                }
                rest.extend(input, bound);
                return Ok(());
            };
            let last = if end > 0 {
                Some(input[end - 1])
            } else {
                rest.as_slice().last().copied()
            };
            if self.too_long(rest.len() + end, last) {
                return Err(self.too_long_err());
            }
            rest.extend(&input[..end], bound);
            let flow = on_frame(strip_cr(rest.as_slice()));
            // Give the memory back: an idle connection owns no buffer.
            rest.clear();
            if flow == Flow::Stop {
                return Ok(());
            }
            start = end + 1;
        }

        // The common case: whole lines borrowed straight from the input.
        for end in newlines {
            let line = strip_cr(&input[start..end]);
            if line.len() > self.max_line_len {
                return Err(self.too_long_err());
            }
            if on_frame(line) == Flow::Stop {
                return Ok(());
            }
            start = end + 1;
        }

        let tail = &input[start..];
        if self.too_long(tail.len(), tail.last().copied()) {
            return Err(self.too_long_err());
        }
        rest.extend(tail, bound);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::testing::{all_cuts, cut, frame_bytes, run, split_until};
    use proptest::prelude::*;

    /// Feeds `chunks` through [`Lines`] and collects the lines.
    fn frame(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Remainder, Result<(), FrameError>) {
        frame_bytes(Lines::new(max), chunks)
    }

    fn too_long(max: usize) -> Result<(), FrameError> {
        Err(FrameError::TooLong { limit: max })
    }

    mod complete_lines {
        use super::*;

        /// `LF` and `CRLF` give the same line; only one `\r` is stripped.
        #[test]
        fn lf_and_crlf_look_the_same() {
            let (lines, rest, res) = frame(&[b"a\nb\r\nc\r\r\n"], 64);
            assert_eq!(res, Ok(()));
            assert_eq!(lines, vec![b"a".to_vec(), b"b".to_vec(), b"c\r".to_vec()]);
            assert!(rest.is_empty());
        }

        /// Empty lines are frames too.
        #[test]
        fn empty_lines_are_delivered() {
            let (lines, _, _) = frame(&[b"\n\r\n\n"], 64);
            assert_eq!(lines, vec![Vec::<u8>::new(), Vec::new(), Vec::new()]);
        }

        /// Lines are bytes, not text.
        #[test]
        fn bytes_are_not_required_to_be_utf8() {
            let (lines, _, _) = frame(&[b"\xff\x00\xfe\n"], 64);
            assert_eq!(lines, vec![b"\xff\x00\xfe".to_vec()]);
        }

        /// Only `\n` ends a line.
        #[test]
        fn a_lone_cr_is_not_a_terminator() {
            let (lines, rest, _) = frame(&[b"a\rb"], 64);
            assert!(lines.is_empty());
            assert_eq!(rest.as_slice(), b"a\rb");
        }
    }

    mod partial_lines {
        use super::*;

        /// A line split across reads is delivered whole, and the remainder is
        /// freed once it is.
        #[test]
        fn a_line_split_across_reads_is_joined() {
            let (lines, rest, _) = frame(&[b"hel", b"lo\nwor", b"ld", b"\n"], 64);
            assert_eq!(lines, vec![b"hello".to_vec(), b"world".to_vec()]);
            assert!(rest.is_empty());
            assert_eq!(rest.capacity(), 0, "an idle connection keeps no buffer");
        }

        /// `\r` and `\n` in different reads still make one `CRLF`.
        #[test]
        fn a_crlf_split_between_reads_is_stripped() {
            let (lines, _, _) = frame(&[b"ping\r", b"\n"], 64);
            assert_eq!(lines, vec![b"ping".to_vec()]);
        }

        /// An empty read changes nothing, even when the kept line is at
        /// the bound with its `\r` (found by the property test).
        #[test]
        fn an_empty_read_after_a_pending_cr() {
            let (lines, _, res) = frame(&[b"abcd\r", b"", b"\n"], 4);
            assert_eq!((res, lines), (Ok(()), vec![b"abcd".to_vec()]));
        }

        /// Every cut of a pipelined stream gives the same lines.
        #[test]
        fn every_cut_gives_the_same_lines() {
            let data = b"one\r\ntwo\n\nthree\r\r\nfour";
            for chunks in all_cuts(data) {
                let (lines, rest, res) = frame(&chunks, 8);
                assert_eq!(res, Ok(()));
                let want: Vec<&[u8]> = vec![b"one", b"two", b"", b"three\r"];
                assert_eq!(lines, want, "{chunks:?}");
                assert_eq!(rest.as_slice(), b"four");
            }
        }

        /// Only the straddling line's bytes are kept, not the whole read.
        #[test]
        fn only_the_unfinished_line_is_kept() {
            let (_, rest, _) = frame(&[b"done\ndone\nunfin"], 64);
            assert_eq!(rest.as_slice(), b"unfin");
        }

        /// `Stop` drops the rest of the read, even after a straddling line.
        #[test]
        fn stop_drops_the_rest_of_the_chunk() {
            let mut rest = Remainder::from_vec(b"fir".to_vec());
            let input = b"st\nsecond\nthird";
            let seen = split_until(&mut Lines::new(64), &mut rest, input, Some(b"first"));
            assert_eq!(seen, vec![b"first".to_vec()]);
        }

        /// `Stop` on a line inside the read ends there too.
        #[test]
        fn stop_in_the_middle_of_a_read() {
            let mut rest = Remainder::new();
            let seen = split_until(&mut Lines::new(64), &mut rest, b"a\nb\nc\n", Some(b"b"));
            assert_eq!(seen, vec![b"a".to_vec(), b"b".to_vec()]);
        }
    }

    mod limits {
        use super::*;

        /// A line of exactly the limit passes, with `LF` or `CRLF`.
        #[test]
        fn a_line_of_exactly_the_limit_passes() {
            for data in [&b"abcd\n"[..], b"abcd\r\n", b"abc\n", b"abc\r\n"] {
                for chunks in all_cuts(data) {
                    let (lines, _, res) = frame(&chunks, 4);
                    assert_eq!(res, Ok(()), "{chunks:?}");
                    assert_eq!(lines.len(), 1);
                }
            }
        }

        /// The fix of issue 13: a 100-byte line is accepted at max 100 with
        /// `CRLF` as with `LF` (the stripped `\r` does not count).
        #[test]
        fn the_stripped_cr_does_not_count() {
            let mut crlf = vec![b'x'; 100];
            crlf.extend_from_slice(b"\r\n");
            for chunks in [vec![&crlf[..]], vec![&crlf[..101], &crlf[101..]]] {
                let (lines, _, res) = frame(&chunks, 100);
                assert_eq!(res, Ok(()));
                assert_eq!(lines, vec![vec![b'x'; 100]]);
            }
        }

        /// One byte of content over the limit fails, however it arrives.
        #[test]
        fn one_over_the_limit_fails() {
            for data in [&b"abcde\n"[..], b"abcde\r\n", b"abcd\r\r\n", b"abcd\rx"] {
                for chunks in all_cuts(data) {
                    let (lines, _, res) = frame(&chunks, 4);
                    assert_eq!(res, too_long(4), "{chunks:?}");
                    assert!(lines.is_empty());
                }
            }
        }

        /// Lines before the long one are delivered.
        #[test]
        fn a_complete_line_over_the_limit_fails() {
            let (lines, _, res) = frame(&[b"ok\nabcde\nnever\n"], 4);
            assert_eq!(res, too_long(4));
            assert_eq!(lines, vec![b"ok".to_vec()], "lines before it are delivered");
        }

        /// An unterminated line fails as soon as it is too long, before its
        /// newline arrives.
        #[test]
        fn an_unterminated_tail_over_the_limit_fails_early() {
            let (_, _, res) = frame(&[b"abcde"], 4);
            assert_eq!(res, too_long(4));
            // `abcd\r` may still be `abcd\r\n`: it waits.
            let (_, rest, res) = frame(&[b"abcd\r"], 4);
            assert_eq!((res, rest.len()), (Ok(()), 5));
        }

        /// The remainder grows read by read until the bound, then fails.
        #[test]
        fn a_growing_partial_line_fails_once_past_the_limit() {
            let (_, _, res) = frame(&[b"ab", b"cd", b"e"], 4);
            assert_eq!(res, too_long(4));
            let (_, _, res) = frame(&[b"ab", b"cde\n"], 4);
            assert_eq!(res, too_long(4));
        }
    }

    /// Lines of lengths around `max`, with `LF`, `CRLF` or a stray `\r`.
    fn line(max: usize) -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(
                prop_oneof![8 => Just(b'a'), 1 => Just(b'\r'), 1 => Just(0u8)],
                0..=max,
            ),
            any::<bool>(),
        )
            .prop_map(|(mut l, crlf)| {
                if crlf {
                    l.push(b'\r');
                }
                l.push(b'\n');
                l
            })
    }

    proptest! {
        /// A stream of valid lines, cut anywhere, yields exactly its lines,
        /// and the remainder stays within `max + 1`.
        #[test]
        fn valid_lines_survive_any_cuts(
            lines in proptest::collection::vec(line(12), 0..40),
            cuts in proptest::collection::vec(any::<usize>(), 0..24),
        ) {
            let max = 12;
            let data = lines.concat();
            let (got, rest, res, peak) = run(&mut Lines::new(max), &cut(&data, &cuts), |l: &[u8]| l.to_vec());
            prop_assert_eq!(res, Ok(()));
            let want: Vec<Vec<u8>> = lines
                .iter()
                .map(|l| strip_cr(&l[..l.len() - 1]).to_vec())
                .collect();
            prop_assert_eq!(got, want);
            prop_assert!(rest.is_empty());
            prop_assert!(peak <= max + 1);
        }

        /// Any bytes, cut at any points, give the same lines, leftover and
        /// verdict as the uncut stream; no line and no remainder is ever over
        /// the bound.
        #[test]
        fn chunking_never_changes_the_outcome(
            data in proptest::collection::vec(
                prop_oneof![4 => Just(b'x'), 2 => Just(b'\n'), 2 => Just(b'\r'), 1 => any::<u8>()],
                0..256),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
            max in 0usize..12,
        ) {
            let (whole, whole_rest, whole_res) = frame(&[&data], max);
            let (pieces, pieces_rest, res, peak) =
                run(&mut Lines::new(max), &cut(&data, &cuts), |l: &[u8]| l.to_vec());
            prop_assert_eq!(whole_res, res);
            prop_assert_eq!(&whole, &pieces);
            if res.is_ok() {
                prop_assert_eq!(whole_rest.as_slice(), pieces_rest.as_slice());
            }
            prop_assert!(whole.iter().all(|l| l.len() <= max));
            prop_assert!(peak <= max + 1);
            // The verdict is the definition: some line's content is too long.
            let mut lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
            let tail = lines.pop().unwrap();
            let too_long = lines.iter().any(|l| strip_cr(l).len() > max)
                || Lines::new(max).too_long(tail.len(), tail.last().copied());
            prop_assert_eq!(res.is_err(), too_long);
        }
    }
}
