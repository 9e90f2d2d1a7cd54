//! A Redis-protocol key-value server on netpool: the netpool counterpart of
//! tokio's mini-redis, which `redis-cli` and `redis-benchmark` talk to
//! unchanged.
//!
//! ```text
//! cargo run --release --example kv -- [--addr 127.0.0.1:6380] [--acceptors 1024]
//!     [--overflow refuse|grow[:STEP[:MAX]]|pause] [--refuse-message TEXT]
//!     [--max-line 67108864] [--idle-timeout SECS] [--max-per-ip N] [--accept-rate N]
//!     [--proxy-protocol] [--allow CIDR]... [--deny CIDR]...
//!     [--tls-cert FILE --tls-key FILE]
//!     [--workers N|cores] [--distribution handoff|shared|reuseport] [--pin-cores]
//!     [--busy-poll MICROS]
//! ```
//!
//! It prints `listening on ADDR`. Poke it with
//!
//! ```text
//! redis-cli -p 6380 set greeting hello          # OK
//! redis-cli -p 6380 get greeting                # "hello"
//! redis-cli -p 6380 set session x px 1500       # gone 1.5 s later
//! redis-cli -p 6380 subscribe news              # in one terminal...
//! redis-cli -p 6380 publish news "it works"     # ...and this in another
//! redis-benchmark -p 6380 -t set,get -q
//! printf 'PING\r\n' | nc -q1 127.0.0.1 6380     # inline commands too: +PONG
//! ```
//!
//! Commands: `PING [msg]`, `ECHO`, `GET`, `SET key value [EX s | PX ms]
//! [NX | XX]`, `DEL`, `EXISTS`, `INCR`, `INCRBY`, `DECR`, `MGET`, `MSET`,
//! `EXPIRE`, `PEXPIRE`, `TTL`, `PTTL`, `DBSIZE`, `FLUSHALL`, `SUBSCRIBE`,
//! `UNSUBSCRIBE`, `PUBLISH`, `QUIT`, and `COMMAND` / `CONFIG GET` answered
//! enough for `redis-cli` and `redis-benchmark` to start cleanly. Replies and
//! errors are worded as Redis 7 words them; an error never closes the
//! connection, except a protocol error (`-ERR Protocol error: ...`, then
//! close, as redis-server does). What is not implemented is listed in
//! `engine.rs`'s module doc.
//!
//! - `--max-line BYTES` bounds a request (default 64 MiB; a value can be
//!   almost that long); a longer one closes the connection. A bulk length
//!   over it is refused from its header, before anything is buffered.
//! - `--workers N` runs N event loops that share one store (64 locked shards)
//!   and one table of subscribers: see `server.rs`, and BENCHMARKS.md for
//!   what sharing costs.
//! - Keys with a TTL expire lazily (the next command to touch one removes it)
//!   and actively: every loop sweeps due keys on its tick, every 100 ms
//!   (`Builder::tick`).
//! - SIGINT or SIGTERM stops it gracefully: replies in flight are written,
//!   every connection is closed, and the final stats go to stderr.
//!
//! # Layout
//! - `main.rs` (this file): the command line.
//! - `server.rs`: the netpool handler (commands, pub/sub delivery, the sweep).
//! - `engine.rs`: the commands themselves, with no I/O (tested on their own
//!   in `tests/kv_engine.rs`).

#[path = "../common/mod.rs"]
mod common;
mod engine;
mod server;

const USAGE: &str = "\
kv: listens on 127.0.0.1:6380 by default; --max-line bounds a request (default 67108864)";

fn main() {
    common::init_logging();
    let options = common::Options::from_args_with("127.0.0.1:6380", USAGE, |_, _| Ok(false));
    let max_request = options.max_line.unwrap_or(server::MAX_REQUEST);
    if !(2..=u32::MAX as usize).contains(&max_request) {
        eprintln!("error: --max-line {max_request}: a request bound is 2 to 4294967295 bytes");
        std::process::exit(2);
    }
    let mut options = options.framing(server::framing(max_request));
    options.builder = server::configure(options.builder, max_request);
    let shared = server::Shared::new(engine::Store::new());
    // Each loop's handler holds the one store (see `server.rs`).
    common::serve_workers_until_signal(options, move |_loop_index| server::Kv::new(shared.clone()));
}
