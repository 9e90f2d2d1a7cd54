//! Framing: turning the bytes a connection receives into the frames its
//! handler sees. No I/O here.
//!
//! The event loop reads every connection into one read buffer *shared by the
//! whole loop*, and hands each read to a [`Framing`] together with the
//! connection's [`Remainder`]: the incomplete tail of the previous reads.
//! Complete frames inside a read are handed to the handler borrowed straight
//! from the read buffer, never copied; only the bytes of a frame that
//! straddles two reads are copied, once, into the remainder, and that frame is
//! delivered from there when it completes. A connection with no frame in
//! flight owns no buffer at all (the remainder is one null pointer).
//!
//! ```text
//!  read buffer (per loop):  [ frame | frame | frame | fra ]
//!                              │       │       │       └─ copied to the Remainder
//!                              └───────┴───────┴─ borrowed by the handler
//!  next read:               [ me | frame | ... ]
//!                              └─ appended to the Remainder, which delivers
//!                                 "frame" from there and frees itself
//! ```
//!
//! Every framing bounds what it buffers ([`FrameError::TooLong`]), and checks
//! announced lengths before buffering anything, so a peer that announces a
//! huge frame is refused at once instead of being given the memory.
//!
//! # Layout
//!
//! - `mod.rs` (this file): the [`Framing`] trait, [`Flow`], [`FrameError`].
//! - `remainder.rs`: [`Remainder`], a connection's incomplete tail.
//! - `lines.rs`: [`Lines`], `\n`-terminated lines (the default).
//! - `length_prefixed.rs`: [`LengthPrefixed`], a binary length header.
//! - `resp.rs`: [`Resp`], Redis requests, and their [`Command`] view.
//! - `resp_reply.rs`: writing RESP replies.
//! - `raw.rs`: [`Raw`], whatever arrived.

use std::fmt;

mod length_prefixed;
mod lines;
mod raw;
mod remainder;
mod resp;
pub mod resp_reply;

pub use length_prefixed::LengthPrefixed;
pub use lines::Lines;
pub use raw::Raw;
pub use remainder::Remainder;
pub use resp::{Args, Command, Resp};

/// Splits a byte stream into frames.
///
/// One value is cloned for each event loop, so `&mut self` may keep scratch
/// space that is reused from frame to frame and connection to connection
/// ([`Resp`] keeps its argument offsets there: no allocation per command once
/// warm). Whatever must survive from one read of a connection to the next
/// lives in that connection's [`Remainder`], which a framing may only grow
/// with the bytes of the one frame in flight.
///
/// # Implementing
///
/// `split` is handed `rest ++ input`: the connection's remainder, then what
/// was just read. It must
///
/// 1. deliver every complete frame, in order, borrowed from `input` when the
///    frame lies inside it, and from `rest` when it began in an earlier read;
/// 2. leave exactly the bytes of the incomplete last frame in `rest`
///    (nothing at all when the input ends on a frame boundary: call
///    [`Remainder::clear`], which frees the memory);
/// 3. return [`FrameError::TooLong`] as soon as a frame is known to exceed its
///    bound, before buffering it, and never let `rest` grow past that bound;
/// 4. give the same frames and the same verdict however the stream is cut
///    into reads.
///
/// After an error the connection is closed: what `rest` holds then does not
/// matter.
pub trait Framing: Clone + Send + 'static {
    /// What the handler receives for one frame: borrowed from the loop's read
    /// buffer, or from the connection's remainder when the frame straddled
    /// two reads.
    type Frame<'a>;

    /// Delivers every complete frame in `rest ++ input` to `on_frame`, in
    /// order, and leaves exactly the incomplete tail in `rest`.
    ///
    /// Complete frames inside `input` are handed out borrowed (zero copy);
    /// only the bytes of a frame that straddles reads are copied, once, into
    /// `rest`. Stops early, dropping the rest of `input`, when `on_frame`
    /// returns [`Flow::Stop`].
    ///
    /// # Errors
    ///
    /// A [`FrameError`] when the stream cannot be framed: a frame over its
    /// bound, or malformed. Frames before it have been delivered; the
    /// connection should be closed, after [`error_reply`](Self::error_reply)
    /// if there is one.
    fn split<F>(
        &mut self,
        rest: &mut Remainder,
        input: &[u8],
        on_frame: F,
    ) -> Result<(), FrameError>
    where
        F: FnMut(Self::Frame<'_>) -> Flow;

    /// Bytes to send to the peer before closing for `error`, for example
    /// RESP's `-ERR Protocol error: invalid bulk length\r\n`. Default: none.
    fn error_reply(&self, error: &FrameError) -> Option<&[u8]> {
        let _ = error;
        None
    }
}

/// What the frame callback wants the framing to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep delivering frames.
    Continue,
    /// Stop here: the rest of the input is dropped (the connection is
    /// closing).
    Stop,
}

/// Why a byte stream could not be framed. The connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame is longer than the framing allows. Reported as soon as that is
    /// known: from a length header before its payload arrives, or once the
    /// bytes buffered for an unfinished frame pass the bound.
    TooLong {
        /// The bound that was passed, in bytes, as the framing counts them
        /// (a line's content, a payload, a whole RESP command).
        limit: usize,
    },
    /// The bytes do not follow the protocol; the reason names the rule that
    /// was broken, in the protocol's own words where it has them (RESP:
    /// `"invalid bulk length"`).
    Malformed(&'static str),
    /// A byte other than the one the protocol requires at that place (RESP:
    /// a `$` before each bulk string of a request).
    Unexpected {
        /// The byte the protocol requires.
        expected: u8,
        /// The byte that came instead.
        found: u8,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong { limit } => write!(f, "frame longer than {limit} bytes"),
            FrameError::Malformed(reason) => write!(f, "malformed frame: {reason}"),
            FrameError::Unexpected { expected, found } => write!(
                f,
                "malformed frame: expected '{}', found '{}'",
                expected.escape_ascii(),
                found.escape_ascii()
            ),
        }
    }
}

impl std::error::Error for FrameError {}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the framings' tests.

    use super::*;

    /// Feeds `chunks` one after another through `framing`, turning each frame
    /// into an owned value with `own`. Returns the frames, the remainder, the
    /// verdict, and the largest the remainder ever was after a read.
    pub(crate) fn run<Fr: Framing, T>(
        framing: &mut Fr,
        chunks: &[&[u8]],
        mut own: impl FnMut(Fr::Frame<'_>) -> T,
    ) -> (Vec<T>, Remainder, Result<(), FrameError>, usize) {
        let mut rest = Remainder::default();
        let mut frames = Vec::new();
        let mut peak = 0;
        for chunk in chunks {
            let res = framing.split(&mut rest, chunk, |frame| {
                frames.push(own(frame));
                Flow::Continue
            });
            if res.is_err() {
                return (frames, rest, res, peak);
            }
            peak = peak.max(rest.len());
        }
        (frames, rest, Ok(()), peak)
    }

    /// As [`run`] for a framing whose frames are byte slices (lines,
    /// length-prefixed payloads), each copied out: the frames, the
    /// remainder and the verdict.
    pub(crate) fn frame_bytes<Fr>(
        mut framing: Fr,
        chunks: &[&[u8]],
    ) -> (Vec<Vec<u8>>, Remainder, Result<(), FrameError>)
    where
        Fr: for<'a> Framing<Frame<'a> = &'a [u8]>,
    {
        let (frames, rest, res, _) = run(&mut framing, chunks, |f: &[u8]| f.to_vec());
        (frames, rest, res)
    }

    /// Splits one read, `input` after `rest`, as a handler would see it:
    /// each frame copied out, [`Flow::Stop`] answered to the first one
    /// equal to `stop_at` and [`Flow::Continue`] to the others (to all, for
    /// `None`). Returns the frames seen; panics on a framing error.
    pub(crate) fn split_until<Fr>(
        framing: &mut Fr,
        rest: &mut Remainder,
        input: &[u8],
        stop_at: Option<&[u8]>,
    ) -> Vec<Vec<u8>>
    where
        Fr: for<'a> Framing<Frame<'a> = &'a [u8]>,
    {
        let mut seen = Vec::new();
        framing
            .split(rest, input, |frame: &[u8]| {
                seen.push(frame.to_vec());
                if Some(frame) == stop_at {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            })
            .expect("the input frames");
        seen
    }

    /// Cuts `data` at `cuts` (any values; taken modulo the length, sorted).
    pub(crate) fn cut<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut at = 0;
        for c in cuts {
            chunks.push(&data[at..c]);
            at = c;
        }
        chunks.push(&data[at..]);
        chunks
    }

    /// Every way of cutting `data` in two, and byte by byte.
    pub(crate) fn all_cuts(data: &[u8]) -> Vec<Vec<&[u8]>> {
        let mut ways: Vec<Vec<&[u8]>> = (0..=data.len())
            .map(|i| vec![&data[..i], &data[i..]])
            .collect();
        ways.push(data.chunks(1).collect());
        ways
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error says which bound or rule was broken.
    #[test]
    fn errors_name_the_bound_or_the_rule() {
        assert_eq!(
            FrameError::TooLong { limit: 100 }.to_string(),
            "frame longer than 100 bytes"
        );
        assert_eq!(
            FrameError::Malformed("invalid bulk length").to_string(),
            "malformed frame: invalid bulk length"
        );
        assert_eq!(
            FrameError::Unexpected {
                expected: b'$',
                found: b'\r'
            }
            .to_string(),
            "malformed frame: expected '$', found '\\r'"
        );
    }
}
