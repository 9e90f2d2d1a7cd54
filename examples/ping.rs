//! PING_INLINE: just enough of Redis's inline protocol for `redis-benchmark`.
//!
//! Every `PING` line (any case, one trailing `\r` ignored) is answered with
//! `+PONG\r\n`, and any other line with `-ERR unknown command\r\n`. That lets
//! Redis's own client drive netpool as a third-party load generator, and the
//! benchmark suite compare it with redis-server (issue 5):
//!
//! ```text
//! cargo run --release --example ping -- --addr 127.0.0.1:7000
//! redis-benchmark -p 7000 -t ping_inline -c 50 -P 16 -q
//! ```
//!
//! It takes the same flags as `examples/echo.rs` (`--acceptors`, `--overflow
//! refuse|grow[:STEP[:MAX]]|pause`, `--refuse-message`, `--max-line`,
//! `--metrics ADDR`, `--busy-poll MICROS`: try `--busy-poll 100` with
//! `redis-benchmark -c 1`). Poke it with `nc 127.0.0.1 7000` and type `ping`. `redis-benchmark` first sends
//! `CONFIG GET` as RESP arrays on a side connection; each of those lines gets
//! `-ERR unknown command`, which it reports as a warning and carries on.
//! Ctrl-C (or SIGTERM) stops it gracefully.

mod common;

use netpool::Conn;

/// The reply to a PING.
const PONG: &[u8] = b"+PONG\r\n";
/// The reply to anything else.
const UNKNOWN: &[u8] = b"-ERR unknown command\r\n";

fn main() {
    common::init_logging();
    let options = common::Options::from_args();
    // netpool hands over the line without its `\n` and one trailing `\r`.
    common::serve_until_signal(options, |line: &[u8], conn: &mut Conn| {
        conn.send(if line.eq_ignore_ascii_case(b"PING") {
            PONG
        } else {
            UNKNOWN
        });
    });
}
