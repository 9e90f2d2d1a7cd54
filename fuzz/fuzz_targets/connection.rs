//! One connection driven by fuzzer-chosen operations with no socket: the
//! connection core and the middle of the pipeline (framing, an echo
//! handler), the socket's room, the peer and the clock simulated
//! (`netpool::fuzz_connection`, src/reactor/sim.rs). Deterministic: the
//! same input always takes the same path. `run` itself checks the
//! invariants after every step (output bounded, the slot held exactly
//! while serving, interest matching the phase, deferred replies bounded,
//! the connection ends once its peer leaves), and `check_replies` the
//! replies against the protocol, deferred ones (lines starting with `b`,
//! filled in the order the fuzzer picks) included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netpool::fuzz_connection::{run, Op};

#[derive(Debug, arbitrary::Arbitrary)]
enum FuzzOp {
    Send(Vec<u8>),
    Read(u16),
    HalfClose,
    Close,
    Wait(u16),
    Fill(u8),
}

fuzz_target!(|ops: Vec<FuzzOp>| {
    let ops: Vec<Op> = ops
        .into_iter()
        .take(64)
        .map(|op| match op {
            FuzzOp::Send(bytes) => Op::Send(bytes),
            FuzzOp::Read(n) => Op::Read(n),
            FuzzOp::HalfClose => Op::HalfClose,
            FuzzOp::Close => Op::Close,
            FuzzOp::Wait(ms) => Op::Wait(ms),
            FuzzOp::Fill(i) => Op::Fill(i),
        })
        .collect();
    run(&ops).check_replies();
});
