//! What every framing target does: frame the same bytes whole and cut at
//! fuzzer-chosen points, and compare.

// Each target uses only part of this.
#![allow(dead_code)]

use netpool::{Flow, FrameError, Framing, Remainder};

/// What framing `chunks` gave: the frames, the remainder, the verdict, and
/// the largest the remainder was after a read.
pub struct Outcome<T> {
    pub frames: Vec<T>,
    pub rest: Vec<u8>,
    pub verdict: Result<(), FrameError>,
    pub peak: usize,
}

/// Frames `chunks` one after another with a clone of `framing`.
pub fn frame<Fr: Framing, T>(
    framing: &Fr,
    chunks: &[&[u8]],
    mut own: impl FnMut(Fr::Frame<'_>) -> T,
) -> Outcome<T> {
    let mut framing = framing.clone();
    let mut rest = Remainder::new();
    let mut frames = Vec::new();
    let mut peak = 0;
    for chunk in chunks {
        let verdict = framing.split(&mut rest, chunk, |f| {
            frames.push(own(f));
            Flow::Continue
        });
        if verdict.is_err() {
            return Outcome { frames, rest: rest.as_slice().to_vec(), verdict, peak };
        }
        peak = peak.max(rest.len());
    }
    Outcome { frames, rest: rest.as_slice().to_vec(), verdict: Ok(()), peak }
}

/// `data` cut at `cuts` (taken modulo its length, sorted).
pub fn cut<'a>(data: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| usize::from(c) % (data.len() + 1)).collect();
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

/// Whole and cut give the same frames and verdict, and the same remainder
/// when there was no error; the remainder never passed `bound`.
pub fn same<T: PartialEq + std::fmt::Debug>(whole: &Outcome<T>, pieces: &Outcome<T>, bound: usize) {
    assert_eq!(whole.verdict, pieces.verdict, "the verdict depends on the cuts");
    assert_eq!(whole.frames, pieces.frames, "the frames depend on the cuts");
    if whole.verdict.is_ok() {
        assert_eq!(whole.rest, pieces.rest, "the leftover depends on the cuts");
    }
    assert!(whole.peak <= bound && pieces.peak <= bound, "the remainder passed its bound");
}
