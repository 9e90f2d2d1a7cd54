//! The main job: an echo server on netpool, in any of its framings.
//!
//! Every frame a client sends comes back: by default a line, followed by
//! `\n`.
//!
//! ```text
//! cargo run --release --example echo -- [--framing lines|u16|u32|raw]
//!     [--addr 127.0.0.1:7000] [--unix PATH]... [--unix-mode OCTAL]
//!     [--inherit] [--handover CTL] [--take-over CTL] [--acceptors 1024]
//!     [--overflow refuse|grow[:STEP[:MAX]]|pause] [--grow-cooldown SECS]
//!     [--refuse-message TEXT] [--max-line 65536] [--frame-timeout SECS] [--idle-timeout SECS]
//!     [--max-per-ip N] [--accept-rate N]
//!     [--proxy-protocol] [--allow CIDR]... [--deny CIDR]...
//!     [--tls-cert FILE --tls-key FILE [--tls-watch SECS]]
//!     [--workers N|cores] [--distribution handoff|shared|reuseport] [--pin-cores]
//!     [--busy-poll MICROS]
//!     [--metrics ADDR]
//! ```
//!
//! Poke it with `nc 127.0.0.1 7000` and type lines. Try `--acceptors 1
//! --refuse-message busy` and open a second `nc` to see a refusal; or
//! `--overflow pause` and watch the second one wait until the first quits.
//! `--workers 4` runs four event loops on four threads behind the one
//! listener and the one `--acceptors` budget (`--workers cores`: one per
//! core); each loop gets its own copy of the handler. `--busy-poll 100`
//! keeps the loop polling for 100 µs after each busy turn before it sleeps:
//! lower latency for more CPU (see `Builder::busy_poll` for the size). Ctrl-C (or SIGTERM)
//! stops it gracefully and prints the final stats, per loop too.
//!
//! `--metrics 127.0.0.1:9100` serves Prometheus metrics at
//! `http://127.0.0.1:9100/metrics` (`curl` it, or point a scraper at it),
//! from a second small netpool server on its own thread, stopped with the
//! first. `--overflow grow:2:20 --grow-cooldown 10` with a burst of `nc`
//! sessions shows `netpool_budget_slots` grow, then shrink back two at a
//! time once the burst is over. A client that starts a line and never ends
//! it is closed after `--frame-timeout` (30 s by default); one that sends
//! nothing keeps its connection.
//!
//! A bad value or combination (`--acceptors 0`, `--workers 0`,
//! `--overflow grow:0`) exits with status 2 and the usage; an address
//! already in use exits with status 1 and says which.
//!
//! `--unix /tmp/echo.sock` serves on a Unix socket instead (`listening on
//! unix:/tmp/echo.sock`; poke it with `socat - UNIX-CONNECT:/tmp/echo.sock`),
//! or beside TCP when `--addr` is given too; the file is removed on stop.
//! `--inherit` serves on the sockets systemd passed: try `systemd-socket-activate
//! -l 127.0.0.1:7000 target/release/examples/echo --inherit`. For a restart
//! without downtime, start it with `--handover /tmp/echo.ctl`, then run the new
//! version with `--take-over /tmp/echo.ctl` (no `--addr`: it prints the
//! address it received): the old one stops accepting, serves its connections
//! until they end (5 s at most), and exits 0.
//!
//! `--framing` picks how the bytes become frames (`Builder::framing`):
//!
//! - `lines` (the default): a line, echoed with `\n`;
//! - `u16`, `u32`: a big-endian length header of that width, then the
//!   payload (`LengthPrefixed`); each frame is echoed with the same header.
//!   `printf '\0\5hello' | nc -q1 127.0.0.1 7000 | xxd` with `--framing u16`;
//! - `raw`: bytes echoed as they come, however the reads cut them.
//!
//! `--max-line N` bounds a frame in every framing: a line's content, a
//! payload (a header announcing more closes that connection at once, before
//! any of it is buffered; the other connections go on), and for `raw` the
//! size of one read.
//!
//! With `--tls-cert cert.pem --tls-key key.pem` it serves the same frames over
//! TLS; poke it with `openssl s_client -quiet -connect 127.0.0.1:7000`. A
//! throwaway certificate for that:
//! `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
//! -days 1 -subj /CN=localhost -keyout key.pem -out cert.pem`. Renew the
//! pair on disk (run the same command again) and, within `--tls-watch`
//! seconds (default 5; 0 turns the watch off), new connections get the new
//! certificate while open ones keep theirs; with `RUST_LOG=info` the server
//! says when it took the new pair, or, as a warning, why it did not.

mod common;

use netpool::{Conn, LengthPrefixed, Raw};

const USAGE: &str = "\
  --framing HOW          lines (default), u16 or u32 (a big-endian length header of that
                         width, echoed with the frame), or raw (bytes as they come);
                         --max-line bounds a frame in each (for raw, one read)";

/// What `--framing` asked for.
#[derive(Clone, Copy)]
enum Which {
    Lines,
    Prefixed(usize),
    Raw,
}

fn main() {
    common::init_logging();
    let mut which = Which::Lines;
    let options = common::Options::from_args_with("127.0.0.1:7000", USAGE, |flag, parser| {
        if flag != "framing" {
            return Ok(false);
        }
        use lexopt::ValueExt;
        which = match parser.value()?.string()?.as_str() {
            "lines" => Which::Lines,
            "u16" => Which::Prefixed(2),
            "u32" => Which::Prefixed(4),
            "raw" => Which::Raw,
            other => {
                return Err(format!("--framing {other}: expected lines, u16, u32 or raw").into())
            }
        };
        Ok(true)
    });
    let max = options.max_line.unwrap_or(65536);
    // A handler per loop; these have no state worth sharing, so each loop
    // makes its own.
    match which {
        // `--max-line` is already the bound of a line (common.rs).
        Which::Lines => common::serve_workers_until_signal(options, |_loop_index| {
            |line: &[u8], conn: &mut Conn| {
                conn.send(line);
                conn.send(b"\n");
            }
        }),
        Which::Prefixed(width) => {
            let framing = LengthPrefixed::new(width).max_frame(max);
            common::serve_workers_until_signal(options.framing(framing), move |_loop_index| {
                // The header of each reply is written into one small
                // buffer, reused: no allocation per frame.
                let mut header = Vec::with_capacity(width);
                move |payload: &[u8], conn: &mut Conn| {
                    header.clear();
                    framing
                        .encode_header(payload.len(), &mut header)
                        .expect("a payload the framing accepted fits its header");
                    conn.send(&header);
                    conn.send(payload);
                }
            })
        }
        Which::Raw => {
            // A raw frame is one read: the read buffer is its bound.
            let mut options = options.framing(Raw);
            options.builder = options.builder.read_buffer(max);
            common::serve_workers_until_signal(options, |_loop_index| {
                |bytes: &[u8], conn: &mut Conn| conn.send(bytes)
            })
        }
    }
}
