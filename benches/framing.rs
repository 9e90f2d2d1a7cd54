//! Framing micro-benchmark (issue 13): frames per second for netpool's
//! `Lines`, `LengthPrefixed` (u32) and `Resp`, against tokio-util's
//! `LinesCodec::new_with_max_length` and `LengthDelimitedCodec`, on the same
//! pipelined bytes cut into the same 64 KiB reads.
//!
//! ```text
//! cargo bench --bench framing
//! ```
//!
//! # What is measured
//!
//! One run frames 1,000,000 pipelined frames (about 40 MiB), read by read.
//! Each read is first copied into the framer's read buffer, standing in for
//! the `read` syscall: netpool's loop reads into its one shared buffer,
//! tokio's `FramedRead` into its `BytesMut`. Then every frame of the read is
//! decoded and touched (its length summed). A frame that straddles two reads
//! is finished in the connection's remainder (netpool) or stays in the
//! `BytesMut` (tokio-util), as each would do it in a server.
//!
//! What a tokio user gets differs by design: `LinesCodec` validates UTF-8 and
//! allocates a `String` per line; `LengthDelimitedCodec` hands out a
//! `BytesMut` split off its buffer (no copy, a reference count). netpool
//! lends `&[u8]` slices of the read buffer. tokio-util has no RESP codec, so
//! `Resp` stands alone (with `Command` views of its arguments).
//!
//! Each figure is the median of 11 runs, after one warm-up run, printed
//! with the slowest and fastest run; netpool's and tokio-util's runs
//! alternate, so that a busy machine slows both alike.

use std::hint::black_box;
use std::time::Instant;

use bytes::BytesMut;
use netpool::{Command, Flow, Framing, LengthPrefixed, Lines, Remainder, Resp};
use tokio_util::codec::{Decoder, LengthDelimitedCodec, LinesCodec};

const FRAMES: usize = 1_000_000;
const READ: usize = 64 * 1024;
const RUNS: usize = 11;
const MAX: usize = 64 * 1024;

/// The payload of frame `i`: a short command-like text, 33 bytes.
fn payload(i: usize) -> String {
    format!(
        "SET key:{i:08} value-{:010}",
        i.wrapping_mul(2_654_435_761) % 10_000_000_000
    )
}

fn lines_input() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..FRAMES {
        out.extend_from_slice(payload(i).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn u32_input() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..FRAMES {
        let p = payload(i);
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p.as_bytes());
    }
    out
}

fn resp_input() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..FRAMES {
        let p = payload(i);
        let args: Vec<&str> = p.split(' ').collect();
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    }
    out
}

/// Frames `input` read by read with a netpool framing; `touch` gives each
/// frame's size. Returns (frames, bytes touched).
fn netpool_run<Fr: Framing>(
    framing: &mut Fr,
    input: &[u8],
    mut touch: impl FnMut(Fr::Frame<'_>) -> usize,
) -> (usize, usize) {
    let mut read_buf = vec![0u8; READ];
    let mut rest = Remainder::new();
    let (mut frames, mut bytes) = (0, 0);
    for chunk in input.chunks(READ) {
        read_buf[..chunk.len()].copy_from_slice(chunk);
        framing
            .split(&mut rest, &read_buf[..chunk.len()], |f| {
                frames += 1;
                bytes += touch(f);
                Flow::Continue
            })
            .unwrap();
    }
    assert!(rest.is_empty());
    (frames, bytes)
}

/// Frames `input` read by read with a tokio-util decoder.
fn tokio_run<D: Decoder>(
    codec: &mut D,
    input: &[u8],
    touch: impl Fn(&D::Item) -> usize,
) -> (usize, usize)
where
    D::Error: std::fmt::Debug,
{
    let mut buf = BytesMut::with_capacity(READ);
    let (mut frames, mut bytes) = (0, 0);
    for chunk in input.chunks(READ) {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames += 1;
            bytes += touch(&frame);
        }
    }
    assert!(buf.is_empty());
    (frames, bytes)
}

/// The median and the spread of a set of rates.
struct Rate {
    median: f64,
    min: f64,
    max: f64,
}

impl Rate {
    fn of(mut xs: Vec<f64>) -> Rate {
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Rate {
            median: xs[xs.len() / 2],
            min: xs[0],
            max: xs[xs.len() - 1],
        }
    }

    /// "median (min-max)" in millions of frames per second.
    fn show(&self) -> String {
        format!(
            "{:.1} ({:.1}-{:.1})",
            self.median / 1e6,
            self.min / 1e6,
            self.max / 1e6
        )
    }
}

/// Frames per second of one run, which must frame all `FRAMES`.
fn once(run: &mut impl FnMut() -> (usize, usize)) -> f64 {
    let t = Instant::now();
    let (frames, _) = black_box(run());
    let rate = FRAMES as f64 / t.elapsed().as_secs_f64();
    assert_eq!(frames, FRAMES);
    rate
}

/// Rates of `a` and `b`, run alternately after a warm-up of each, so that
/// the load of a shared machine falls on both alike.
fn measure_pair(
    mut a: impl FnMut() -> (usize, usize),
    mut b: impl FnMut() -> (usize, usize),
) -> (Rate, Rate) {
    once(&mut a);
    once(&mut b);
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        ra.push(once(&mut a));
        rb.push(once(&mut b));
    }
    (Rate::of(ra), Rate::of(rb))
}

fn measure(mut a: impl FnMut() -> (usize, usize)) -> Rate {
    once(&mut a);
    Rate::of((0..RUNS).map(|_| once(&mut a)).collect())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("command: cargo bench --bench framing");
    println!("machine: {nproc} cores, {}", cpu_model());
    // A shared machine: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "input: {FRAMES} pipelined frames of a 33-byte payload, cut into {} KiB reads; median of {RUNS} runs",
        READ / 1024
    );
    println!();

    let lines = lines_input();
    let u32s = u32_input();
    let resp = resp_input();

    let (np_lines, tk_lines) = measure_pair(
        || netpool_run(&mut Lines::new(MAX), &lines, |l: &[u8]| l.len()),
        || {
            tokio_run(
                &mut LinesCodec::new_with_max_length(MAX),
                &lines,
                |l: &String| l.len(),
            )
        },
    );
    let (np_u32, tk_u32) = measure_pair(
        || {
            netpool_run(
                &mut LengthPrefixed::new(4).max_frame(MAX),
                &u32s,
                |p: &[u8]| p.len(),
            )
        },
        || {
            let mut codec = LengthDelimitedCodec::builder()
                .length_field_length(4)
                .max_frame_length(MAX)
                .new_codec();
            tokio_run(&mut codec, &u32s, |p: &BytesMut| p.len())
        },
    );
    let np_resp = measure(|| {
        netpool_run(&mut Resp::new(), &resp, |c: Command<'_>| {
            c.iter().map(<[u8]>::len).sum()
        })
    });

    let mib = |input: &[u8]| input.len() as f64 / (1 << 20) as f64;
    let ns = |r: &Rate| 1e9 / r.median;
    println!("Mframes/s: median (min-max) of {RUNS} runs; ns per frame at the median.");
    println!();
    println!("| framing | input | netpool | tokio-util | netpool / tokio-util (medians) |");
    println!("|---|---|---|---|---|");
    println!(
        "| lines (CRLF) | {:.1} MiB | {} Mframes/s, {:.1} ns | LinesCodec: {} Mframes/s, {:.1} ns | {:.2}x |",
        mib(&lines),
        np_lines.show(),
        ns(&np_lines),
        tk_lines.show(),
        ns(&tk_lines),
        np_lines.median / tk_lines.median
    );
    println!(
        "| length-prefixed u32 | {:.1} MiB | {} Mframes/s, {:.1} ns | LengthDelimitedCodec: {} Mframes/s, {:.1} ns | {:.2}x |",
        mib(&u32s),
        np_u32.show(),
        ns(&np_u32),
        tk_u32.show(),
        ns(&tk_u32),
        np_u32.median / tk_u32.median
    );
    println!(
        "| RESP (3-argument arrays) | {:.1} MiB | {} Mframes/s, {:.1} ns | (no RESP codec) | |",
        mib(&resp),
        np_resp.show(),
        ns(&np_resp)
    );
}
