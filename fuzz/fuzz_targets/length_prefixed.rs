//! LengthPrefixed, in a fuzzer-chosen configuration: cutting the input
//! anywhere must not change the outcome, and frames re-encoded give the
//! input back.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use netpool::LengthPrefixed;

fuzz_target!(|input: (u8, u8, Vec<u16>, &[u8])| {
    let (config, max, cuts, data) = input;
    let mut f = LengthPrefixed::new([1, 2, 4, 8][usize::from(config & 3)]).max_frame(usize::from(max));
    if config & 4 != 0 {
        f = f.little_endian();
    }
    if config & 8 != 0 {
        f = f.length_includes_header();
    }
    let whole = common::frame(&f, &[data], |p: &[u8]| p.to_vec());
    let pieces = common::frame(&f, &common::cut(data, &cuts), |p: &[u8]| p.to_vec());
    common::same(&whole, &pieces, f.width() + usize::from(max));
    if whole.verdict.is_ok() {
        // The frames and the leftover are the input, exactly.
        let mut again = Vec::new();
        for p in &whole.frames {
            f.encode_header(p.len(), &mut again).unwrap();
            again.extend_from_slice(p);
        }
        again.extend_from_slice(&whole.rest);
        assert_eq!(again, data);
    }
});
