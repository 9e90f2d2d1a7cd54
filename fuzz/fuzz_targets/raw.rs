//! Raw: the frames are the input, in order, and nothing is kept.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use netpool::Raw;

fuzz_target!(|input: (Vec<u16>, &[u8])| {
    let (cuts, data) = input;
    let out = common::frame(&Raw, &common::cut(data, &cuts), |b: &[u8]| b.to_vec());
    assert_eq!(out.verdict, Ok(()));
    assert_eq!(out.frames.concat(), data);
    assert_eq!(out.peak, 0);
});
