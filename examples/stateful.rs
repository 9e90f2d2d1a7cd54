//! A handler with state: per connection (`type State`) and across the
//! connections of its loop (its own fields), with the connect and disconnect
//! hooks, a reply from another thread, the budget changed at run time and
//! the server's counters read from inside the handler.
//!
//! ```text
//! cargo run --example stateful -- [--addr 127.0.0.1:7000] [the echo example's flags]
//! ```
//!
//! `nc 127.0.0.1 7000`, then type:
//!
//! - `name ada`: kept in this connection's state, used in later replies;
//! - any other line: answered with its number on this connection;
//! - `later some text`: answered a second later from another thread, through
//!   a `ConnHandle` (type more lines meanwhile: they are answered at once);
//! - `budget 1`: one acceptor slot from now on; a second `nc` is then
//!   refused, and served again after `budget 10` (`budget 0` is refused
//!   by the library, as `acceptors(0)` is at build);
//! - `stats`: the server's counters, this connection's, and the totals of
//!   the connections that ended (kept by `on_disconnect`);
//! - `quit`: a goodbye, then the server closes the connection.
//!
//! One handler serves one loop, so this example refuses `--workers` above 1
//! (`echo` and `kv` show a handler per loop).

mod common;

use std::io::Write;
use std::time::Duration;

use netpool::{Conn, Disconnect, Handler, ServerHandle};

/// What the handler keeps for each connection: made with `Default` when the
/// connection is accepted, handed back in `on_disconnect`.
#[derive(Default)]
struct Session {
    name: Option<String>,
    lines: u64,
}

impl Session {
    fn who(&self) -> &str {
        self.name.as_deref().unwrap_or("stranger")
    }
}

/// What it keeps across connections, on the loop's thread: no lock needed.
struct Desk {
    /// The server's own handle, to read its counters and change its budget.
    server: ServerHandle,
    /// Connections that ended, and the lines they sent.
    ended: u64,
    ended_lines: u64,
}

impl Handler for Desk {
    type State = Session;

    fn on_connect(&mut self, conn: &mut Conn<'_, Session>) {
        let _ = writeln!(
            conn,
            "welcome, {}. try: name YOU, later TEXT, budget N, stats, quit",
            conn.id()
        );
    }

    fn on_frame(&mut self, line: &[u8], conn: &mut Conn<'_, Session>) {
        conn.state().lines += 1;
        let text = String::from_utf8_lossy(line);
        let (command, rest) = text.split_once(' ').unwrap_or((&*text, ""));
        match command {
            "name" if !rest.is_empty() => {
                conn.state().name = Some(rest.to_string());
                let _ = writeln!(conn, "hello, {rest}");
            }
            "later" => {
                // Slow work never runs on the loop: it would hold up every
                // connection. A thread does it and replies through the
                // connection's handle, which wakes the loop. (A thread per
                // request keeps this short; offload.rs uses a pool, and
                // `Conn::defer` to keep its replies in request order.)
                let handle = conn.handle();
                let reply = format!("later, for {}: {rest}\n", conn.state().who());
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(1)); // the slow work
                                                                // Gone meanwhile? Then the loop drops it (and counts it).
                    let _ = handle.send(reply);
                });
            }
            "budget" => match rest.parse() {
                Ok(slots) => {
                    let before = self.server.stats().budget;
                    // Served connections keep their slots; new ones meet
                    // the new budget (and the overflow strategy past it).
                    // 0 is refused, as at build, and changes nothing.
                    match self.server.set_acceptors(slots) {
                        Ok(()) => {
                            let _ = writeln!(conn, "budget: {slots} slots (was {before})");
                        }
                        Err(e) => {
                            let _ = writeln!(conn, "budget: {e}");
                        }
                    }
                }
                Err(_) => conn.send("budget takes a number of slots, at least 1\n"),
            },
            "stats" => {
                let stats = self.server.stats();
                let session = conn.state();
                let (who, lines) = (session.who().to_string(), session.lines);
                let _ = writeln!(
                    conn,
                    "served now {} of {}; accepted {}, refused {}; \
                     you ({who}): {lines} lines; ended: {} connections, {} lines",
                    stats.active,
                    stats.budget,
                    stats.accepted,
                    stats.refused,
                    self.ended,
                    self.ended_lines
                );
            }
            "quit" => {
                let who = conn.state().who().to_string();
                let _ = writeln!(conn, "bye, {who}");
                conn.close(); // after the goodbye is written
            }
            _ => {
                let session = conn.state();
                let (who, n) = (session.who().to_string(), session.lines);
                let _ = writeln!(conn, "{who}, line {n}: {text}");
            }
        }
    }

    fn on_disconnect(&mut self, closed: Disconnect<Session>) {
        self.ended += 1;
        self.ended_lines += closed.state.lines;
        log::info!(
            "{} ({}) left after {} lines: {}",
            closed.id,
            closed.state.who(),
            closed.state.lines,
            closed.reason
        );
    }
}

fn main() {
    common::init_logging();
    common::serve_until_signal_with(common::Options::from_args(), |server| Desk {
        server,
        ended: 0,
        ended_lines: 0,
    });
}
