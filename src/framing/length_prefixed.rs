//! Length-prefixed framing: a binary length header, then that many bytes.

use super::{Flow, FrameError, Framing, Remainder};

/// Frames made of a length header of 1, 2, 4 or 8 bytes, big-endian by
/// default, followed by the payload. The frame the handler sees is the
/// payload, `&[u8]`, without the header.
///
/// ```
/// use netpool::{Flow, Framing, LengthPrefixed, Remainder};
///
/// // A u16 little-endian length that counts its own two bytes.
/// let mut framing = LengthPrefixed::new(2).little_endian().length_includes_header();
/// let mut rest = Remainder::new();
/// let mut seen = Vec::new();
/// framing.split(&mut rest, b"\x05\x00abc\x02\x00\x07\x00wx", |payload: &[u8]| {
///     seen.push(payload.to_vec());
///     Flow::Continue
/// })?;
/// assert_eq!(seen, [b"abc".to_vec(), b"".to_vec()]);
/// assert_eq!(rest.as_slice(), b"\x07\x00wx"); // waits for 3 more bytes
/// # Ok::<(), netpool::FrameError>(())
/// ```
///
/// # Memory
///
/// [`max_frame`](Self::max_frame) bounds the payload (default 8 MiB, as
/// tokio-util's `LengthDelimitedCodec`). It is checked from the header, before
/// a byte of the payload is buffered: a peer announcing more gets
/// [`FrameError::TooLong`] at once. A connection buffers only a frame that
/// straddles reads, exactly its bytes (header included), so at most
/// `width + max_frame` bytes, in a buffer that never grows past the frame's
/// announced size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthPrefixed {
    width: usize,
    little_endian: bool,
    includes_header: bool,
    max_frame: usize,
}

impl LengthPrefixed {
    /// Frames with a big-endian length header of `width` bytes that counts
    /// the payload only, and payloads of at most 8 MiB.
    ///
    /// # Panics
    ///
    /// If `width` is not 1, 2, 4 or 8.
    pub const fn new(width: usize) -> Self {
        assert!(
            matches!(width, 1 | 2 | 4 | 8),
            "a length header is 1, 2, 4 or 8 bytes wide"
        );
        LengthPrefixed {
            width,
            little_endian: false,
            includes_header: false,
            max_frame: 8 * 1024 * 1024,
        }
    }

    /// The header is little-endian.
    pub const fn little_endian(mut self) -> Self {
        self.little_endian = true;
        self
    }

    /// The header is big-endian (network order; the default).
    pub const fn big_endian(mut self) -> Self {
        self.little_endian = false;
        self
    }

    /// The length counts the header's own bytes too (a 2-byte header saying
    /// 5 is followed by 3 bytes of payload). A length smaller than the header
    /// is then [`FrameError::Malformed`].
    pub const fn length_includes_header(mut self) -> Self {
        self.includes_header = true;
        self
    }

    /// The largest payload accepted, in bytes. Size it to the largest
    /// message of the protocol: it is also what one connection may buffer.
    pub const fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// The width of the length header, in bytes.
    pub const fn width(&self) -> usize {
        self.width
    }

    /// The largest payload accepted, in bytes.
    pub const fn frame_limit(&self) -> usize {
        self.max_frame
    }

    /// Appends to `out` the header of a frame of `payload` bytes, for peers,
    /// tests and examples that send what this framing reads.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLong`] when the payload is over
    /// [`max_frame`](Self::max_frame) or its length cannot be written in the
    /// header's width; `out` is unchanged then.
    pub fn encode_header(&self, payload: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let adjust = if self.includes_header { self.width } else { 0 };
        let widest = if self.width == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.width)) - 1
        };
        let limit = (self.max_frame as u64).min(widest - adjust as u64);
        let len = payload as u64;
        if len > limit {
            return Err(FrameError::TooLong {
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            });
        }
        let len = len + adjust as u64;
        if self.little_endian {
            out.extend_from_slice(&len.to_le_bytes()[..self.width]);
        } else {
            out.extend_from_slice(&len.to_be_bytes()[8 - self.width..]);
        }
        Ok(())
    }

    /// The payload length announced by `header` (exactly `width` bytes),
    /// checked against the bound.
    #[inline]
    fn payload_len(&self, header: &[u8]) -> Result<usize, FrameError> {
        let mut bytes = [0u8; 8];
        let len = if self.little_endian {
            bytes[..self.width].copy_from_slice(header);
            u64::from_le_bytes(bytes)
        } else {
            bytes[8 - self.width..].copy_from_slice(header);
            u64::from_be_bytes(bytes)
        };
        let len = if self.includes_header {
            len.checked_sub(self.width as u64)
                .ok_or(FrameError::Malformed("length smaller than its header"))?
        } else {
            len
        };
        // No buffer can exceed isize::MAX, which also keeps `width + len`
        // from overflowing whatever `max_frame` says.
        match usize::try_from(len) {
            Ok(len) if len <= self.max_frame.min(isize::MAX as usize) => Ok(len),
            _ => Err(FrameError::TooLong {
                limit: self.max_frame,
            }),
        }
    }
}

impl Framing for LengthPrefixed {
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
        let width = self.width;
        let mut at = 0;

        // Finish the frame that straddles the previous read: take exactly the
        // bytes it still needs, first the rest of its header, then the rest
        // of its payload.
        if !rest.is_empty() {
            if rest.len() < width {
                let take = (width - rest.len()).min(input.len());
                rest.extend(&input[..take], width);
                at = take;
                if rest.len() < width {
                    return Ok(());
                }
            }
            let total = width + self.payload_len(&rest.as_slice()[..width])?;
            let take = (total - rest.len()).min(input.len() - at);
            rest.extend(&input[at..at + take], total);
            at += take;
            if rest.len() < total {
                return Ok(());
            }
            let flow = on_frame(&rest.as_slice()[width..]);
            rest.clear();
            if flow == Flow::Stop {
                return Ok(());
            }
        }

        // The common case: whole frames borrowed from the input.
        while input.len() - at >= width {
            let len = self.payload_len(&input[at..at + width])?;
            let body = at + width;
            if input.len() - body < len {
                // Checked above: `len` is within the bound, so this copy is.
                rest.extend(&input[at..], width + len);
                return Ok(());
            }
            if on_frame(&input[body..body + len]) == Flow::Stop {
                return Ok(());
            }
            at = body + len;
        }
        rest.extend(&input[at..], width);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::testing::{all_cuts, cut, frame_bytes, run, split_until};
    use proptest::prelude::*;

    /// `payloads` encoded for `f`.
    fn encode(f: &LengthPrefixed, payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            f.encode_header(p.len(), &mut out).unwrap();
            out.extend_from_slice(p);
        }
        out
    }

    mod construction {
        use super::*;

        /// Only the four widths exist.
        #[test]
        #[should_panic(expected = "1, 2, 4 or 8")]
        fn a_width_of_three_is_refused() {
            let _ = LengthPrefixed::new(3);
        }

        /// Headers are written as read, in each width and order.
        #[test]
        fn headers_are_encoded_in_width_and_order() {
            let mut out = Vec::new();
            LengthPrefixed::new(2)
                .encode_header(0x0102, &mut out)
                .unwrap();
            LengthPrefixed::new(4)
                .little_endian()
                .encode_header(0x0102, &mut out)
                .unwrap();
            LengthPrefixed::new(1)
                .length_includes_header()
                .encode_header(3, &mut out)
                .unwrap();
            assert_eq!(out, b"\x01\x02\x02\x01\x00\x00\x04");
            let too_long = |limit| Err(FrameError::TooLong { limit });
            let f = LengthPrefixed::new(1).max_frame(1000);
            assert_eq!(f.encode_header(256, &mut out), too_long(255));
            let f = f.length_includes_header();
            assert_eq!(f.encode_header(255, &mut out), too_long(254));
            assert_eq!(
                LengthPrefixed::new(2)
                    .max_frame(10)
                    .encode_header(11, &mut out),
                too_long(10)
            );
            assert_eq!(out.len(), 7, "nothing written on error");
        }
    }

    mod complete_frames {
        use super::*;

        /// Every width and order reads back what was written.
        #[test]
        fn each_width_and_order_round_trips() {
            for width in [1, 2, 4, 8] {
                for le in [false, true] {
                    for incl in [false, true] {
                        let mut f = LengthPrefixed::new(width);
                        if le {
                            f = f.little_endian();
                        }
                        if incl {
                            f = f.length_includes_header();
                        }
                        let data = encode(&f, &[b"hello", b"", b"\r\n\0"]);
                        let (frames, rest, res) = frame_bytes(f, &[&data]);
                        assert_eq!(res, Ok(()));
                        assert_eq!(frames, vec![b"hello".to_vec(), vec![], b"\r\n\0".to_vec()]);
                        assert!(rest.is_empty());
                    }
                }
            }
        }

        /// `Stop` ends at the frame that asked.
        #[test]
        fn stop_ends_there() {
            let f = LengthPrefixed::new(1);
            let data = encode(&f, &[b"a", b"b", b"c"]);
            let seen = split_until(&mut { f }, &mut Remainder::new(), &data, Some(b"b"));
            assert_eq!(seen, vec![b"a".to_vec(), b"b".to_vec()]);
        }
    }

    mod straddling {
        use super::*;

        /// Every cut, and byte by byte, gives the same frames.
        #[test]
        fn every_cut_gives_the_same_frames() {
            let f = LengthPrefixed::new(4).max_frame(16);
            let data = encode(&f, &[b"first", b"", b"sixteen bytes!!!", b"x"]);
            for chunks in all_cuts(&data) {
                let (frames, rest, res) = frame_bytes(f, &chunks);
                assert_eq!(res, Ok(()));
                assert_eq!(frames.len(), 4, "{chunks:?}");
                assert_eq!(frames[2], b"sixteen bytes!!!");
                assert!(rest.is_empty());
            }
        }

        /// Only the unfinished frame's bytes are kept, header included, and
        /// the buffer is the frame's size, not the read's.
        #[test]
        fn only_the_unfinished_frame_is_kept() {
            let f = LengthPrefixed::new(2);
            let mut data = encode(&f, &[b"done"]);
            data.extend_from_slice(b"\x00\x0aunfin");
            let (_, rest, _) = frame_bytes(f, &[&data]);
            assert_eq!(rest.as_slice(), b"\x00\x0aunfin");
            assert!(rest.capacity() <= 12, "capacity {}", rest.capacity());
            // The next read gives exactly what is missing; the rest is
            // framed from the input.
            let mut rest = rest;
            let seen = split_until(&mut { f }, &mut rest, b"ished\x00\x01z\x00", None);
            assert_eq!(seen, vec![b"unfinished".to_vec(), b"z".to_vec()]);
            assert_eq!(rest.as_slice(), b"\x00");
        }

        /// `Stop` on a frame finished from the remainder drops the input.
        #[test]
        fn stop_after_a_straddling_frame() {
            let f = LengthPrefixed::new(1);
            let mut rest = Remainder::new();
            let mut seen = 0;
            let mut g = f;
            g.split(&mut rest, b"\x02a", |_| Flow::Continue).unwrap();
            g.split(&mut rest, b"b\x01c", |_| {
                seen += 1;
                Flow::Stop
            })
            .unwrap();
            assert_eq!(seen, 1);
            assert!(rest.is_empty());
        }
    }

    mod limits {
        use super::*;

        /// max-1 and max pass; max+1 fails from the header alone.
        #[test]
        fn max_minus_one_max_and_max_plus_one() {
            let f = LengthPrefixed::new(2).max_frame(10);
            for len in [9, 10] {
                let data = encode(&f, &[&vec![b'x'; len]]);
                for chunks in all_cuts(&data) {
                    let (frames, _, res) = frame_bytes(f, &chunks);
                    assert_eq!((res, frames.len()), (Ok(()), 1));
                }
            }
            // Only the header: refused before any payload arrives.
            let (_, rest, res) = frame_bytes(f, &[b"\x00\x0b"]);
            assert_eq!(res, Err(FrameError::TooLong { limit: 10 }));
            assert!(rest.len() <= 2);
            let (_, _, res) = frame_bytes(f, &[b"\x00", b"\x0b"]);
            assert_eq!(res, Err(FrameError::TooLong { limit: 10 }));
        }

        /// A 2^40-byte announcement is refused at once, whatever the width.
        #[test]
        fn a_huge_announcement_is_refused_without_buffering() {
            let f = LengthPrefixed::new(8);
            let header = (1u64 << 40).to_be_bytes();
            for chunks in all_cuts(&header) {
                let (_, rest, res) = frame_bytes(f, &chunks);
                assert_eq!(res, Err(FrameError::TooLong { limit: 8 << 20 }));
                assert!(rest.capacity() <= 8);
            }
            let (_, _, res) = frame_bytes(f, &[&u64::MAX.to_le_bytes()]);
            assert!(matches!(res, Err(FrameError::TooLong { .. })));
        }

        /// A length that counts its header cannot be shorter than it.
        #[test]
        fn a_length_shorter_than_its_header_is_malformed() {
            let f = LengthPrefixed::new(4).length_includes_header();
            let (_, _, res) = frame_bytes(f, &[b"\x00\x00\x00\x03abc"]);
            assert_eq!(
                res,
                Err(FrameError::Malformed("length smaller than its header"))
            );
            let (frames, _, res) = frame_bytes(f, &[b"\x00\x00\x00\x04"]);
            assert_eq!((res, frames), (Ok(()), vec![vec![]]));
        }
    }

    /// Any configuration.
    fn config() -> impl Strategy<Value = LengthPrefixed> {
        (
            prop_oneof![Just(1usize), Just(2), Just(4), Just(8)],
            any::<bool>(),
            any::<bool>(),
            0usize..40,
        )
            .prop_map(|(w, le, incl, max)| {
                let mut f = LengthPrefixed::new(w).max_frame(max);
                if le {
                    f = f.little_endian();
                }
                if incl {
                    f = f.length_includes_header();
                }
                f
            })
    }

    proptest! {
        /// A stream of valid frames, cut anywhere, yields exactly its
        /// payloads, and the remainder stays within `width + max_frame`.
        #[test]
        fn valid_frames_survive_any_cuts(
            f in config(),
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..24),
            cuts in proptest::collection::vec(any::<usize>(), 0..24),
        ) {
            let payloads: Vec<&[u8]> = payloads
                .iter()
                .map(|p| &p[..p.len().min(f.frame_limit())])
                .collect();
            let data = encode(&f, &payloads);
            let (got, rest, res, peak) = run(&mut { f }, &cut(&data, &cuts), |p: &[u8]| p.to_vec());
            prop_assert_eq!(res, Ok(()));
            prop_assert_eq!(got, payloads);
            prop_assert!(rest.is_empty());
            prop_assert!(peak <= f.width() + f.frame_limit());
        }

        /// Any bytes, cut anywhere, give the same frames, leftover and
        /// verdict as one read; the remainder stays within the bound.
        #[test]
        fn chunking_never_changes_the_outcome(
            f in config(),
            data in proptest::collection::vec(prop_oneof![3 => 0u8..8, 1 => any::<u8>()], 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
        ) {
            let (whole, whole_rest, whole_res) = frame_bytes(f, &[&data]);
            let (pieces, rest, res, peak) = run(&mut { f }, &cut(&data, &cuts), |p: &[u8]| p.to_vec());
            prop_assert_eq!(whole_res, res);
            prop_assert_eq!(&whole, &pieces);
            if res.is_ok() {
                prop_assert_eq!(whole_rest.as_slice(), rest.as_slice());
            }
            prop_assert!(peak <= f.width() + f.frame_limit());
            prop_assert!(rest.capacity() <= f.width() + f.frame_limit());
        }
    }
}
