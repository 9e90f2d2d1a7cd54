//! netpool: a TCP acceptor pool on a mio event loop, serving a line-based
//! protocol with the latency and memory of a hand-written reactor.
//!
//! One thread runs one `mio::Poll`. It owns the listening socket and a
//! [`slab`] of connection state machines. The "acceptors" of the Go library
//! netpool descends from are *slots* of an accept budget: a connection takes
//! one before its socket is registered and gives it back when it closes.
//! Lines are framed with `memchr` straight out of one read buffer shared by
//! the whole loop and handed to your [`Handler`] borrowed: no allocation per
//! line, and no buffer owned by an idle connection.
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::time::Duration;
//! use netpool::{Conn, Server};
//!
//! // An echo server on a free port, on its own thread.
//! let server = Server::bind("127.0.0.1:0".parse().unwrap())?;
//! let addr = server.local_addr();
//! let running = server.spawn(|line: &[u8], conn: &mut Conn| {
//!     conn.send(line);
//!     conn.send(b"\n");
//! })?;
//!
//! let mut client = std::net::TcpStream::connect(addr)?;
//! client.write_all(b"hello\r\n")?;
//! let mut reply = String::new();
//! BufReader::new(&client).read_line(&mut reply)?;
//! assert_eq!(reply, "hello\n");
//!
//! let report = running.stop(Duration::from_secs(1))?;
//! assert_eq!(report.force_closed, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! One concept per file:
//!
//! - `event_loop.rs`: the poll loop: tokens, draining readiness, accepting,
//!   reading, writing, timers, stop. Start reading here.
//! - `conn.rs`: one connection's state machine ([`Phase`](#connection-life)),
//!   its interest and its output queue.
//! - `framing.rs`: splitting bytes into lines; no I/O.
//! - `budget.rs`: the accept budget and the [`Overflow`] strategies, and
//!   the set of loops paused on it.
//! - `distribute.rs`: several loops behind one listener ([`Distribution`]):
//!   which loop serves a new connection, and why it is done that way.
//! - `limits.rs`: abuse limits at accept: per-address cap, accept rate.
//! - `filter.rs`: allow and deny lists of CIDR ranges.
//! - `proxy.rs`: the PROXY protocol v1 and v2 header parser; no I/O.
//! - `timers.rs`: idle, write-stall and linger timeouts: a heap of wake-up
//!   times with lazy deletion, whose cost per turn is only what is due.
//! - `handler.rs`: [`Handler`], [`Conn`], [`CloseReason`].
//! - `handle.rs`: [`ServerHandle`], [`ConnHandle`], [`Stats`]: reaching the
//!   loop from other threads through a command queue and mio's `Waker`.
//! - `tls.rs`: TLS with rustls (feature `tls`, on by default): PEM loading,
//!   the crypto provider, the per-connection session the loop drives.
//! - `config.rs`: [`Builder`], every limit with its default.
//! - `server.rs`: [`Server`]: bind, then run here or spawn, one loop or
//!   [`workers`](Builder::workers) loops on their threads.
//! - `error.rs`: [`Error`].
//!
//! # Overflow
//!
//! `acceptors` slots bound the connections served at once, exactly. When all
//! are busy, the [`Overflow`] strategy decides before anything is registered:
//!
//! ```text
//! Refuse       accept ─▶ write refuse_message ─▶ close       (never registered)
//! Grow{50,max} accept ─▶ budget += 50 (≤ max) ─▶ serve        (at max: Refuse)
//! Pause        stop calling accept ─▶ clients wait in the backlog
//!              ... a connection closes, its slot frees ─▶ accept resumes, in order
//! ```
//!
//! The budget and strategy can be changed while running
//! ([`ServerHandle::set_acceptors`], [`ServerHandle::set_overflow`]);
//! lowering the budget never closes a served connection.
//!
//! If `accept` fails for lack of descriptors or memory (`EMFILE`, `ENFILE`,
//! `ENOBUFS`, `ENOMEM`), the loop logs once, stops accepting for
//! [`Builder::accept_backoff`] on its own timer, and retries, so queued
//! clients are served once descriptors free up even if no new client comes.
//!
//! # Backpressure
//!
//! Replies are written at once, without blocking; what the socket does not
//! take is queued on the connection. Above the high-water mark the loop stops
//! reading that connection, at the low-water mark it reads again
//! ([`Builder::output_water_marks`]), and past [`Builder::output_limit`] the
//! connection is closed. A client that never reads therefore costs the
//! server a bounded amount of memory and nothing else.
//!
//! # Shutdown
//!
//! [`ServerHandle::stop`] closes the listener, lets every connection flush its
//! replies, shuts each one down for writing and closes it when the peer has
//! finished, or when the grace period ends; see [`StopReport`].
//!
//! # TLS
//!
//! With the `tls` feature (on by default) a server speaks TLS 1.3 and 1.2
//! through rustls, in the same loop and with the same handler:
//! [`Builder::tls_pem`] (PEM files) or [`Builder::tls`] (a
//! `rustls::ServerConfig` of your own), [`Builder::alpn_protocols`], and
//! certificate rotation at run time with [`ServerHandle::reload_tls`] /
//! [`ServerHandle::reload_tls_pem`]. The handshake never blocks the loop; it
//! has a deadline ([`Builder::tls_handshake_timeout`]), and at most
//! [`Builder::max_handshakes`] run at once. The handler meets a connection
//! once its handshake is done, and can ask [`Conn`] about it
//! ([`Conn::alpn_protocol`], [`Conn::server_name`], [`Conn::peer_certificates`]
//! for client certificates requested by a `ServerConfig` of your own). Encrypted output counts toward the same
//! backpressure marks as plaintext. Stopping or [`Conn::close`] sends
//! `close_notify` after the last reply. netpool builds its configs with the
//! ring provider, selected explicitly; see [`tls_provider`] for why and how
//! to use another.
//!
//! ```no_run
//! use netpool::{Conn, Server};
//!
//! let server = Server::builder()
//!     .tls_pem("cert.pem", "key.pem")
//!     .bind("0.0.0.0:7443".parse().unwrap())?; // errors name the file at fault
//! let handle = server.handle();
//! let running = server.spawn(|line: &[u8], conn: &mut Conn| {
//!     conn.send(line);
//!     conn.send(b"\n");
//! })?;
//! // Later, after the certificate was renewed on disk:
//! handle.reload_tls_pem("cert.pem", "key.pem")?;
//! # Ok::<(), netpool::Error>(())
//! ```
//!
//! # Connection life
//!
//! ```text
//! (TLS) Handshaking ─▶ Open ⇄ Throttled ─▶ Closing (flush, close_notify)
//!                        ─▶ Lingering (our FIN sent) ─▶ Closed
//! ```
//!
//! Errors, output overflow and handler panics jump to `Closed` at once. The
//! handler hears of every end through [`Handler::on_disconnect`].
//!
//! # Several loops
//!
//! [`Builder::workers`] runs n loops on n threads, each with its own poll,
//! slab and read buffer; [`Server::run_workers`] and
//! [`Server::spawn_workers`] take a factory that makes each loop's handler.
//! By default loop 0 accepts and hands each connection to the least loaded
//! loop ([`Distribution`]); the budget stays one and exact for the whole
//! server, a slot freed on any loop resumes a paused accept, and one
//! [`ServerHandle`] stops, watches ([`ServerHandle::loop_stats`]) and tunes
//! them all. A [`ConnHandle`] reaches its connection whichever loop serves it.
//!
//! # Limits at the edge
//!
//! Idle, write-stall and linger timeouts ([`Builder::idle_timeout`],
//! [`Builder::write_stall_timeout`], [`Builder::linger`]), a per-address cap
//! and an accept rate ([`Builder::max_per_ip`], [`Builder::accept_rate`]), a
//! spare descriptor for `EMFILE` ([`Builder::spare_descriptor`]), the PROXY
//! protocol ([`Builder::proxy_protocol`]), CIDR filters ([`Builder::allow`],
//! [`Builder::deny`]), budget alarms ([`Builder::alarm`]) and slots given
//! back by long-lived connections ([`Conn::release_slot`]). The README has a
//! table of every limit, what it defends against and its default.
//!
//! # Further reading
//!
//! `docs/ARCHITECTURE.md` in the repository is the guided tour: the loop,
//! the state machine, and the measurement behind each design choice. The
//! README's "Not implemented" says what is not here.

#![deny(missing_docs, missing_debug_implementations)]
#![warn(rust_2018_idioms, unreachable_pub)]

mod budget;
mod config;
mod conn;
mod distribute;
mod error;
mod event_loop;
mod filter;
mod framing;
mod handle;
mod handler;
mod limits;
mod proxy;
mod server;
mod timers;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tls")]
mod tls_session;
#[cfg(feature = "tls")]
mod tls_watch;

#[cfg(fuzzing)]
#[doc(hidden)]
pub use framing::fuzz_split_lines;
#[cfg(feature = "__internals")]
#[doc(hidden)]
pub use tls_session::internals as __tls_session;

pub use budget::Overflow;
pub use config::Builder;
pub use distribute::Distribution;
pub use error::Error;
pub use handle::{Alarm, ConnHandle, LoopStats, ServerHandle, Stats, StopReport};
pub use handler::{CloseReason, Conn, ConnId, Disconnect, Handler};
/// CIDR ranges for [`Builder::allow`] and [`Builder::deny`], from the
/// `ipnet` crate.
pub use ipnet::IpNet;
/// The rustls this crate is built with, for building a
/// [`ServerConfig`](rustls::ServerConfig) of your own (feature `tls`).
#[cfg(feature = "tls")]
pub use rustls;
pub use server::{Server, ServerThread, FAILED_LOOP_GRACE};
#[cfg(feature = "tls")]
pub use tls::{tls_config_from_pem, tls_provider};
