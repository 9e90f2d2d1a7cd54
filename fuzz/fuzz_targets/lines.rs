//! Lines: cutting the input anywhere must not change the outcome, and no
//! line or remainder passes the bound.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use netpool::Lines;

fuzz_target!(|input: (u8, Vec<u16>, &[u8])| {
    let (max, cuts, data) = input;
    let lines = Lines::new(usize::from(max));
    let whole = common::frame(&lines, &[data], |l: &[u8]| l.to_vec());
    let pieces = common::frame(&lines, &common::cut(data, &cuts), |l: &[u8]| l.to_vec());
    common::same(&whole, &pieces, usize::from(max) + 1);
    assert!(whole.frames.iter().all(|l| l.len() <= usize::from(max)));
});
