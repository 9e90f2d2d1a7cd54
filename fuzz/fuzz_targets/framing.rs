//! The line framer: cutting the input anywhere must not change the outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Frames `chunks` one after another; returns the lines, the leftover, and
/// whether a line was too long.
fn frame(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Vec<u8>, bool) {
    let mut partial = Vec::new();
    let mut lines = Vec::new();
    for chunk in chunks {
        let ok = netpool::fuzz_split_lines(&mut partial, chunk, max, |l| lines.push(l.to_vec()));
        if !ok {
            return (lines, partial, true);
        }
    }
    (lines, partial, false)
}

fuzz_target!(|input: (u8, Vec<u16>, &[u8])| {
    let (max, cuts, data) = input;
    let max = usize::from(max) + 1;
    let whole = frame(&[data], max);
    let mut cuts: Vec<usize> = cuts
        .into_iter()
        .map(|c| usize::from(c) % (data.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut at = 0;
    for cut in cuts {
        chunks.push(&data[at..cut]);
        at = cut;
    }
    chunks.push(&data[at..]);
    let pieces = frame(&chunks, max);
    assert_eq!(whole.2, pieces.2, "the limit verdict depends on the cuts");
    assert_eq!(whole.0, pieces.0, "the lines depend on the cuts");
    if !whole.2 {
        assert_eq!(whole.1, pieces.1, "the leftover depends on the cuts");
    }
    assert!(whole.0.iter().all(|l| l.len() <= max));
});
