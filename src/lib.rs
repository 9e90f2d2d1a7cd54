//! netpool: a TCP acceptor pool on a mio event loop, serving a line-based
//! protocol with the latency and memory of a hand-written reactor.
//!
//! One thread runs one `mio::Poll`. It owns the listening sockets (TCP or
//! Unix) and a [`slab`] of connection state machines. The "acceptors" of the Go library
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
//! A closure handler needs its argument types written, as here, or
//! [`lines`] to write them. A handler with state of its own implements
//! [`Handler`], whose documentation runs one with per-connection state,
//! connect and disconnect hooks, a reply from another thread and the budget
//! changed at run time.
//!
//! # Layout
//!
//! One pipeline for every connection, whatever its transport:
//!
//! ```text
//! socket ─▶ transport ─▶ framing ─▶ handler ─▶ transport ─▶ socket
//! ```
//!
//! The modules are layers; arrows point down (a module imports only from
//! layers below it, and a check in CI, `.ci/module-cycles`, keeps it so):
//!
//! - **The public API**: `server.rs` ([`Server`]: running the loops),
//!   `bind.rs` (binding, adopting or taking over the listeners), `builder.rs`
//!   ([`Builder`]: every setting and its default), `handles.rs`
//!   ([`ServerHandle`], [`Stats`], [`Metrics`]), `metrics_endpoint.rs`
//!   ([`MetricsEndpoint`]: `GET /metrics` served by netpool).
//! - **The reactor**, `reactor/`: the poll loop (`mod.rs`, start reading
//!   here), accepting (`accept.rs`), driving one connection's socket
//!   (`drive.rs`), replies held until the end of the turn (`held.rs`),
//!   framing and the handler with no I/O (`serve.rs`), several
//!   loops (`distribute.rs`), handing the listeners to a successor
//!   (`handover.rs`).
//! - **What the loops share**: `shared.rs` (command queues, counters),
//!   `conn_handle.rs` ([`ConnHandle`]), `reply_slot.rs` ([`ReplySlot`]),
//!   `handler.rs` ([`Handler`], [`Conn`]).
//! - **The connection core**, `core/`: one connection's state machine
//!   (`Phase`), with no I/O: bytes, time and close requests in; bytes to
//!   write, interest, deadlines and actions out. **The transports**,
//!   `transport/`: plaintext (free) and TLS (a rustls session inside the
//!   connection). **The sockets** under them, `socket.rs`: a listener and a
//!   connection's stream, each TCP or Unix.
//! - **Pure logic**: `admission.rs` (every accept-time policy, decided in one
//!   place, in a documented order), `budget.rs` (the slots, [`Overflow`]),
//!   `limits.rs`, `filter.rs`, `alarm.rs`, `framing/` ([`Framing`],
//!   [`Lines`], [`LengthPrefixed`], [`Resp`], [`Raw`]; [`resp`] reply writers),
//!   `proxy.rs`, `timers.rs`, `ticker.rs` ([`Handler::on_tick`]'s period),
//!   `config.rs`, `distribution.rs` ([`Distribution`]), `tls_config.rs` (PEM
//!   files, provider, reload), `tls_session.rs` (one TLS session on rustls's
//!   unbuffered API, no I/O), `tls_watch.rs` (certificate files renewed on
//!   disk), `metrics.rs` (the turn histogram, the Prometheus text format),
//!   `metrics_http.rs` (just enough HTTP for a scrape). Beside them,
//!   `accept_queue.rs`: the kernel's accept queue of a listener (system
//!   calls, no loop); [`listen`] (Unix socket files, peer credentials,
//!   systemd activation, the hand-over protocol; public, for programs that
//!   manage listeners themselves).
//! - **Shared types**: `base/` ([`ConnId`], [`CloseReason`], the loop's
//!   clock), `error.rs` ([`Error`]).
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
//! Grown slots are given back, `step` at a time, once unused for
//! [`Builder::grow_cooldown`] (60 s), never below `acceptors`. The budget
//! and strategy can be changed while running
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
//! Work handed to other threads is bounded the same way: a connection stops
//! being read at [`Builder::max_deferred_replies`] replies owed by other
//! threads, and each loop's queue of commands from other threads is bounded
//! in bytes ([`Builder::command_queue_limit`]), past which a send fails with
//! [`Error::Full`] or, with `send_wait`, waits for the loop.
//!
//! # Ordering
//!
//! A connection's output is one stream, in the order it was produced. A
//! handler that hands slow work to another thread reserves the reply's place
//! first ([`Conn::defer`]); the [`ReplySlot`] it gets is filled from any
//! thread, and the reply is written in that place, whichever worker finishes
//! first: replies come back in request order, as every request/response
//! protocol needs. [`ConnHandle::run`] runs a closure on the connection's
//! loop, in order with the rest.
//!
//! # Shutdown
//!
//! [`ServerHandle::stop`] closes the listeners, lets every connection flush its
//! replies (and waits for the replies other threads still owe it, see
//! [`Conn::defer`]), shuts each one down for writing and closes it when the
//! peer has finished, or when the grace period ends; see [`StopReport`].
//!
//! # TLS
//!
//! With the `tls` feature (on by default) a server speaks TLS 1.3 and 1.2
//! through rustls, in the same loop and with the same handler:
//! [`Builder::tls_pem`] (PEM files) or [`Builder::tls`] (a
//! `rustls::ServerConfig` of your own), [`Builder::alpn_protocols`], and
//! certificate rotation at run time: certificate files renewed on disk are
//! put in force by themselves ([`Builder::tls_watch`]), or by hand with
//! [`ServerHandle::reload_tls`] / [`ServerHandle::reload_tls_pem`]. An idle
//! TLS connection keeps only rustls's session state (about 3.7 KiB):
//! records are decrypted in the loop's shared read buffer. The handshake
//! never blocks the loop; it has a deadline
//! ([`Builder::tls_handshake_timeout`]), and at most
//! [`Builder::max_handshakes`] run at once, a cap one client cannot capture
//! (at the cap, the address holding the most handshakes gives up its most
//! stalled one to the newcomer). The handler meets a connection
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
//! // A renewal of cert.pem and key.pem on disk is picked up by itself;
//! // to serve other files from now on:
//! handle.reload_tls_pem("new-cert.pem", "new-key.pem")?;
//! # Ok::<(), netpool::Error>(())
//! ```
//!
//! # Connection life
//!
//! ```text
//! (PROXY on) ProxyHeader ─▶ (TLS on) Handshaking ─▶ Open ⇄ Throttled
//!     ─▶ Closing (flush, owed replies; TLS: close_notify)
//!     ─▶ Lingering (our FIN sent) ─▶ Closed
//! ```
//!
//! `Throttled` is backpressure: too much output waiting, or too many
//! replies owed by other threads. A graceful end ([`Conn::close`], a stop,
//! the peer's end of stream, a frame too long or malformed, an idle or frame
//! timeout, a TLS error, whose alert is flushed) goes through `Closing`,
//! which ends once the output and the replies owed are written. An abortive one goes to
//! `Closed` at once, its output dropped: a reset or other socket error,
//! output overflow, a write stall, a handler panic, and, before the handler
//! has met the connection, a bad or late PROXY header, an address denied, or
//! a TLS handshake that timed out, was evicted, stopped or was ended by the
//! peer. `docs/connection-states.svg` draws every transition; the
//! connection core (`core/mod.rs`) lists them. The handler hears of every end
//! of a connection it met, through [`Handler::on_disconnect`].
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
//! # Listeners
//!
//! A server accepts on one listener or several at once, TCP and Unix, under
//! one budget: [`Builder::bind`], [`Builder::unix`] (a stale socket file is
//! replaced, a live one never stolen, the file removed on stop,
//! [`Builder::unix_mode`]), [`Builder::bind_all`], or sockets bound
//! elsewhere: [`Builder::listener`], [`Builder::unix_listener`],
//! [`Builder::listeners`], [`Builder::inherit`] (systemd socket
//! activation). The handler learns who the client is with [`Conn::peer`]:
//! an address over TCP, the user, group and process over a Unix socket
//! ([`Peer`]). Address filters and the per-address cap apply to TCP clients
//! only.
//!
//! A restart need not refuse or reset anyone: a server built with
//! [`Builder::handover`] hands its listening sockets to a successor built
//! with [`Builder::take_over`], then stops accepting and drains (its
//! connections are served on until they close, within its grace period).
//!
//! # Limits at the edge
//!
//! A line that has started must end within [`Builder::frame_timeout`] (30 s
//! by default: a slowloris trickle is cut, a silent client is not); idle,
//! write-stall and linger timeouts ([`Builder::idle_timeout`],
//! [`Builder::write_stall_timeout`], [`Builder::linger`]), a per-address cap
//! and an accept rate ([`Builder::max_per_ip`], [`Builder::accept_rate`]), a
//! spare descriptor for `EMFILE` ([`Builder::spare_descriptor`]), the PROXY
//! protocol ([`Builder::proxy_protocol`]), CIDR filters ([`Builder::allow`],
//! [`Builder::deny`]), budget alarms ([`Builder::alarm`]) and slots given
//! back by long-lived connections ([`Conn::release_slot`]). The README has a
//! table of every limit, what it defends against and its default. Every
//! setting is checked by [`Builder::bind`]: a bad one is an
//! [`Error::InvalidConfig`] naming it ([`ConfigError`]).
//!
//! # Metrics
//!
//! [`ServerHandle::metrics`] reads the counters, each loop's histogram of
//! turn durations and the kernel's accept queue, and
//! [`Metrics::write_prometheus`] writes them in the Prometheus text format,
//! with no dependency; [`MetricsEndpoint`] serves them at `GET /metrics`
//! from a second netpool server. The README's "Running it in production"
//! lists the series.
//!
//! # Further reading
//!
//! `examples/tiny_reactor.rs` in the repository is the loop in 250 lines of
//! mio and nothing else: read it first. `docs/ARCHITECTURE.md` is the guided
//! tour from it to this crate: a glossary, the loop, the state machine, and
//! the measurement behind each design choice. The README's "Not
//! implemented" says what is not here.

#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]
#![warn(rust_2018_idioms, unreachable_pub)]

// The layers, bottom up (see `# Layout`). A module imports only from the
// layers below it; this root re-exports.

// Shared types.
mod base;
mod error;

// Pure logic: no I/O, no loop.
mod admission;
mod alarm;
mod budget;
mod busy_poll;
mod config;
mod distribution;
mod filter;
mod framing;
mod limits;
pub mod listen;
mod metrics;
mod metrics_http;
mod proxy;
mod ticker;
mod timers;
#[cfg(feature = "tls")]
mod tls_config;
#[cfg(feature = "tls")]
mod tls_session;
#[cfg(feature = "tls")]
mod tls_watch;

// The kernel's view of a listener: system calls, but no loop.
mod accept_queue;

// The connection core, and the transports under it; the sockets under
// those (TCP or Unix).
mod core;
mod socket;
mod transport;

// What the loops share with handles; the handler's side of a connection.
mod conn_handle;
mod handler;
mod reply_slot;
mod shared;

// The reactor.
mod reactor;

// The public API.
mod bind;
mod builder;
mod handles;
mod metrics_endpoint;
mod server;

/// One connection driven with no socket, for the `connection` fuzz target.
#[cfg(fuzzing)]
#[doc(hidden)]
pub use reactor::sim as fuzz_connection;
#[cfg(feature = "__internals")]
#[doc(hidden)]
pub use tls_session::internals as __tls_session;

pub use alarm::Alarm;
pub use base::close::CloseReason;
pub use base::id::ConnId;
pub use budget::Overflow;
pub use builder::Builder;
pub use conn_handle::ConnHandle;
pub use distribution::Distribution;
pub use error::{ConfigError, Error};
pub use framing::resp_reply as resp;
pub use framing::{
    Args, Command, Flow, FrameError, Framing, LengthPrefixed, Lines, Raw, Remainder, Resp,
};
pub use handler::{lines, Conn, Disconnect, Handler};
pub use handles::{LoopStats, ServerHandle, Stats};
/// CIDR ranges for [`Builder::allow`] and [`Builder::deny`], from the
/// `ipnet` crate.
pub use ipnet::IpNet;
pub use listen::{Credentials, Endpoint, Listener, Peer};
pub use metrics::Metrics;
pub use metrics_endpoint::{MetricsEndpoint, ScrapeState};
pub use reply_slot::{FillError, ReplySlot};
/// The rustls this crate is built with, for building a
/// [`ServerConfig`](rustls::ServerConfig) of your own (feature `tls`).
#[cfg(feature = "tls")]
pub use rustls;
pub use server::{Server, ServerThread, FAILED_LOOP_GRACE};
pub use shared::StopReport;
#[cfg(feature = "tls")]
pub use tls_config::{tls_config_from_pem, tls_provider};
