//! Line framing: turning a byte stream into `\n`-terminated lines.
//!
//! This module does no I/O. The event loop reads into one *shared* scratch
//! buffer per loop and hands each chunk to [`split_lines`], together with the
//! connection's small `partial` buffer that holds the unterminated tail of the
//! previous chunk. Most lines are therefore delivered straight out of the
//! scratch buffer, borrowed, without ever being copied; only a line that
//! straddles two reads is assembled in `partial`.
//!
//! Every byte is searched for `\n` exactly once: a chunk is scanned with
//! `memchr` as it arrives, and `partial` never contains a newline, so it is
//! never scanned again (tokio-util's `LinesCodec` keeps a `next_index` for the
//! same reason).

use memchr::memchr_iter;

/// Why a byte stream could not be framed into lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A line (counted without its `\n`) grew past the configured maximum.
    LineTooLong,
}

/// What the line callback wants the framer to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep delivering lines.
    Continue,
    /// Stop here: the rest of the chunk is dropped (the connection is closing).
    Stop,
}

/// Strips one trailing `\r`, so `CRLF` and `LF` lines look the same.
#[inline]
fn strip_cr(line: &[u8]) -> &[u8] {
    match line.split_last() {
        Some((b'\r', rest)) => rest,
        _ => line,
    }
}

/// Delivers every complete line in `partial ++ chunk` to `on_line`, and leaves
/// the unterminated tail in `partial`.
///
/// `max_line_len` bounds a line counted without its `\n` (a `\r` before it
/// counts); it also bounds `partial`, so a peer that never sends a newline
/// cannot make the connection buffer without limit.
///
/// Returns `Ok(())` when the chunk was consumed (or the callback said
/// [`Flow::Stop`]). An incomplete line is not an error: it simply waits in
/// `partial` for the next chunk.
///
/// # Errors
///
/// [`FrameError::LineTooLong`] as soon as a line, complete or not, is known to
/// exceed `max_line_len`. Lines before it have been delivered.
pub(crate) fn split_lines(
    partial: &mut Vec<u8>,
    chunk: &[u8],
    max_line_len: usize,
    mut on_line: impl FnMut(&[u8]) -> Flow,
) -> Result<(), FrameError> {
    let mut newlines = memchr_iter(b'\n', chunk);
    let mut start = 0;

    // Finish the line that straddles the previous read, if there is one.
    if !partial.is_empty() {
        let Some(end) = newlines.next() else {
            if partial.len() + chunk.len() > max_line_len {
                return Err(FrameError::LineTooLong);
            }
            partial.extend_from_slice(chunk);
            return Ok(());
        };
        if partial.len() + end > max_line_len {
            return Err(FrameError::LineTooLong);
        }
        partial.extend_from_slice(&chunk[..end]);
        let flow = on_line(strip_cr(partial));
        // Give the memory back: an idle connection should own no buffer.
        *partial = Vec::new();
        if flow == Flow::Stop {
            return Ok(());
        }
        start = end + 1;
    }

    // The common case: whole lines borrowed straight from the chunk.
    for end in newlines {
        if end - start > max_line_len {
            return Err(FrameError::LineTooLong);
        }
        if on_line(strip_cr(&chunk[start..end])) == Flow::Stop {
            return Ok(());
        }
        start = end + 1;
    }

    let tail = &chunk[start..];
    if tail.len() > max_line_len {
        return Err(FrameError::LineTooLong);
    }
    partial.extend_from_slice(tail);
    Ok(())
}

/// The framer for the fuzz targets in `fuzz/` (built with `--cfg fuzzing`
/// only): feeds `chunk`, calls `on_line` per line, false on a line too long.
#[cfg(fuzzing)]
pub fn fuzz_split_lines(
    partial: &mut Vec<u8>,
    chunk: &[u8],
    max_line_len: usize,
    mut on_line: impl FnMut(&[u8]),
) -> bool {
    split_lines(partial, chunk, max_line_len, |line| {
        on_line(line);
        Flow::Continue
    })
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `chunks` through the framer and collects the lines.
    fn frame(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Vec<u8>, Result<(), FrameError>) {
        let mut partial = Vec::new();
        let mut lines = Vec::new();
        for chunk in chunks {
            let res = split_lines(&mut partial, chunk, max, |l| {
                lines.push(l.to_vec());
                Flow::Continue
            });
            if res.is_err() {
                return (lines, partial, res);
            }
        }
        (lines, partial, Ok(()))
    }

    mod complete_lines {
        use super::*;

        #[test]
        fn lf_and_crlf_look_the_same() {
            let (lines, rest, res) = frame(&[b"a\nb\r\nc\r\r\n"], 64);
            assert_eq!(res, Ok(()));
            assert_eq!(lines, vec![b"a".to_vec(), b"b".to_vec(), b"c\r".to_vec()]);
            assert!(rest.is_empty());
        }

        #[test]
        fn empty_lines_are_delivered() {
            let (lines, _, _) = frame(&[b"\n\r\n\n"], 64);
            assert_eq!(lines, vec![Vec::<u8>::new(), Vec::new(), Vec::new()]);
        }

        #[test]
        fn bytes_are_not_required_to_be_utf8() {
            let (lines, _, _) = frame(&[b"\xff\x00\xfe\n"], 64);
            assert_eq!(lines, vec![b"\xff\x00\xfe".to_vec()]);
        }

        #[test]
        fn a_lone_cr_is_not_a_terminator() {
            let (lines, rest, _) = frame(&[b"a\rb"], 64);
            assert!(lines.is_empty());
            assert_eq!(rest, b"a\rb");
        }
    }

    mod partial_lines {
        use super::*;

        #[test]
        fn a_line_split_across_reads_is_joined() {
            let (lines, rest, _) = frame(&[b"hel", b"lo\nwor", b"ld", b"\n"], 64);
            assert_eq!(lines, vec![b"hello".to_vec(), b"world".to_vec()]);
            assert!(rest.is_empty());
            assert_eq!(rest.capacity(), 0, "an idle connection keeps no buffer");
        }

        #[test]
        fn a_crlf_split_between_reads_is_stripped() {
            let (lines, _, _) = frame(&[b"ping\r", b"\n"], 64);
            assert_eq!(lines, vec![b"ping".to_vec()]);
        }

        #[test]
        fn stop_drops_the_rest_of_the_chunk() {
            let mut partial = b"fir".to_vec();
            let mut seen = Vec::new();
            split_lines(&mut partial, b"st\nsecond\nthird", 64, |l| {
                seen.push(l.to_vec());
                Flow::Stop
            })
            .unwrap();
            assert_eq!(seen, vec![b"first".to_vec()]);
        }
    }

    mod limits {
        use super::*;

        #[test]
        fn a_line_of_exactly_the_limit_passes() {
            let (lines, _, res) = frame(&[b"abcd\n"], 4);
            assert_eq!(res, Ok(()));
            assert_eq!(lines, vec![b"abcd".to_vec()]);
        }

        #[test]
        fn a_complete_line_over_the_limit_fails() {
            let (lines, _, res) = frame(&[b"ok\nabcde\nnever\n"], 4);
            assert_eq!(res, Err(FrameError::LineTooLong));
            assert_eq!(lines, vec![b"ok".to_vec()], "lines before it are delivered");
        }

        #[test]
        fn an_unterminated_tail_over_the_limit_fails_early() {
            let (_, _, res) = frame(&[b"abcde"], 4);
            assert_eq!(res, Err(FrameError::LineTooLong));
        }

        #[test]
        fn a_growing_partial_line_fails_once_past_the_limit() {
            let (_, _, res) = frame(&[b"ab", b"cd", b"e"], 4);
            assert_eq!(res, Err(FrameError::LineTooLong));
            let (_, _, res) = frame(&[b"ab", b"cde\n"], 4);
            assert_eq!(res, Err(FrameError::LineTooLong));
        }
    }

    proptest! {
        /// Any byte stream, cut at any points, yields the same lines and the
        /// same leftover as the uncut stream.
        #[test]
        fn chunking_never_changes_the_lines(
            data in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..512),
            cuts in proptest::collection::vec(0usize..512, 0..16),
        ) {
            let max = 1024;
            let (whole, whole_rest, res) = frame(&[&data], max);
            prop_assert_eq!(res, Ok(()));

            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for cut in cuts {
                chunks.push(&data[at..cut]);
                at = cut;
            }
            chunks.push(&data[at..]);
            let (pieces, pieces_rest, res) = frame(&chunks, max);
            prop_assert_eq!(res, Ok(()));
            prop_assert_eq!(whole, pieces);
            prop_assert_eq!(whole_rest, pieces_rest);
        }

        /// Whatever the chunking, the limit trips exactly when some line is
        /// longer than the maximum.
        #[test]
        fn the_limit_does_not_depend_on_chunking(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'x')], 0..128),
            cut in 0usize..128,
        ) {
            let max = 8;
            let cut = cut.min(data.len());
            let too_long = data.split(|b| *b == b'\n').any(|l| l.len() > max);
            let (_, _, res) = frame(&[&data[..cut], &data[cut..]], max);
            prop_assert_eq!(res.is_err(), too_long);
        }
    }
}
