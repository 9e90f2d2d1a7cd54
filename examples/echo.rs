//! The main job: a line echo server on netpool.
//!
//! Every line a client sends comes back, followed by `\n`.
//!
//! ```text
//! cargo run --release --example echo -- [--addr 127.0.0.1:7000] [--acceptors 1024]
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
//! core); each loop gets its own copy of the handler. `--busy-poll 20` keeps
//! the loop polling for 20 µs after each busy turn before it sleeps: lower
//! latency for more CPU (see `Builder::busy_poll`). Ctrl-C (or SIGTERM)
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
//! With `--tls-cert cert.pem --tls-key key.pem` it serves the same lines over
//! TLS; poke it with `openssl s_client -quiet -connect 127.0.0.1:7000`. A
//! throwaway certificate for that:
//! `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
//! -days 1 -subj /CN=localhost -keyout key.pem -out cert.pem`. Renew the
//! pair on disk (run the same command again) and, within `--tls-watch`
//! seconds (default 5; 0 turns the watch off), new connections get the new
//! certificate while open ones keep theirs; with `RUST_LOG=info` the server
//! says when it took the new pair, or, as a warning, why it did not.

mod common;

use netpool::Conn;

fn main() {
    common::init_logging();
    let options = common::Options::from_args();
    // A handler per loop; this one has no state, so each is the same closure.
    common::serve_workers_until_signal(options, |_loop_index| {
        |line: &[u8], conn: &mut Conn| {
            conn.send(line);
            conn.send(b"\n");
        }
    });
}
