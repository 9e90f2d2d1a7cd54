//! Metrics: what the server counts, written in the Prometheus text
//! exposition format (version 0.0.4), with no dependency.
//!
//! Two halves, on two sides of a thread boundary:
//!
//! - [`LoopTurnHistogram`] is *recorded* on a loop's own thread, once per
//!   turn, and read by any thread. Like `Counter` in `shared.rs` it has one
//!   writer, so each update is a relaxed load and store, never a locked
//!   read-modify-write: the loop pays a few plain memory operations per turn.
//! - [`MetricsSnapshot`] is plain data, filled from the counters when someone
//!   asks (a scrape, every 15 s or so:
//!   [`ServerHandle::metrics`](crate::ServerHandle::metrics) gives it as
//!   [`Metrics`]), and [`write_prometheus`] turns it into text. Nothing here
//!   runs on the hot path, so the writer favours clarity over saving an
//!   allocation.
//!
//! # What counts where
//!
//! Every connection that is accepted and registered counts once in
//! `netpool_connections_accepted_total` and, when it is gone, once in
//! `netpool_connections_closed_total{reason}`; the difference is what is
//! open. A connection turned away counts once in
//! `netpool_connections_refused_total{reason}`: at accept (never registered,
//! so in no other series), or, with the PROXY protocol on, once its header
//! is in (`proxy`: a bad header; `denied`, `per_ip`: the client the header
//! names). Those were registered first, so they also count as accepted and,
//! under the same reason, as closed.
//!
//! # Names
//!
//! Server-wide series have no labels but `reason` / `result`; per-loop series
//! have their own names (`netpool_loop_*`) with a `loop="i"` label, so that a
//! `sum()` over a family never counts a connection twice. The turn histogram
//! is per loop only: a blocked loop is a fact about one loop, and
//! `sum without (loop)` gives the server's view.

use std::fmt::Display;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::base::close::CloseReason;

/// The content type of [`write_prometheus`]'s output, for the HTTP response.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

// ---------------------------------------------------------------------------
// The loop turn histogram
// ---------------------------------------------------------------------------

/// Finite buckets of the turn histogram: upper bounds of 2^i µs for i in
/// `0..TURN_BUCKETS`, 1 µs to 1.048576 s. Powers of two, so a turn finds its
/// bucket with one `leading_zeros`, and twenty-one buckets cover the span
/// from an idle wake-up to a handler that blocked the loop for a second.
pub(crate) const TURN_BUCKETS: usize = 21;

/// Upper bound of finite bucket `i`, in microseconds.
const fn bucket_bound_us(i: usize) -> u64 {
    1 << i
}

/// The bucket a turn of `nanos` falls in: the first whose bound is at least
/// `nanos`, or [`TURN_BUCKETS`] (the `+Inf` bucket) past the last bound.
fn bucket_index(nanos: u64) -> usize {
    if nanos <= 1_000 {
        return 0;
    }
    // Rounded up to whole microseconds, the bound test `nanos <= 2^i * 1000`
    // becomes `us <= 2^i`, i.e. i = ceil(log2(us)).
    let us = nanos.div_ceil(1_000);
    let i = (u64::BITS - (us - 1).leading_zeros()) as usize;
    i.min(TURN_BUCKETS)
}

/// How long one loop was busy between two polls, as a histogram of
/// constant size, written by that loop and readable from any thread.
///
/// A turn is the time from `poll` returning to the next `poll` call: the
/// work done for one batch of events. Long turns delay every other
/// connection on the loop; they are the figure that tells an embedding
/// service its handler is blocking.
///
/// # Concurrency
///
/// Only the owning loop may call [`record`](LoopTurnHistogram::record): it
/// updates with a relaxed load and store (no locked instruction), which would
/// lose counts with two writers. Readers may see a turn in its bucket before
/// its time in the sum or the reverse; each value is exact once the loop has
/// moved on, which is all a scrape needs.
#[derive(Debug, Default)]
pub(crate) struct LoopTurnHistogram {
    /// Turns per bucket, not cumulative (a turn touches one bucket); the
    /// last is `+Inf`.
    counts: [AtomicU64; TURN_BUCKETS + 1],
    /// Sum of all turns, in nanoseconds (wraps after 584 years of busy loop).
    sum_ns: AtomicU64,
}

impl LoopTurnHistogram {
    /// Counts one turn that lasted `turn`. Call only from the owning loop.
    #[inline]
    pub(crate) fn record(&self, turn: Duration) {
        let nanos = u64::try_from(turn.as_nanos()).unwrap_or(u64::MAX);
        let bucket = &self.counts[bucket_index(nanos)];
        bucket.store(
            bucket.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        let sum = self.sum_ns.load(Ordering::Relaxed);
        self.sum_ns
            .store(sum.wrapping_add(nanos), Ordering::Relaxed);
    }

    /// The histogram as it stands, from any thread.
    pub(crate) fn snapshot(&self) -> TurnHistogram {
        TurnHistogram {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// A copy of a [`LoopTurnHistogram`], plain data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TurnHistogram {
    /// Turns per bucket, not cumulative; index `i < TURN_BUCKETS` has the
    /// upper bound 2^i µs, the last is `+Inf`.
    pub(crate) counts: [u64; TURN_BUCKETS + 1],
    /// Sum of all turns, in nanoseconds.
    pub(crate) sum_ns: u64,
}

impl TurnHistogram {
    /// Number of turns recorded.
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().fold(0, |a, &c| a.wrapping_add(c))
    }
}

// ---------------------------------------------------------------------------
// Reasons, as label values
// ---------------------------------------------------------------------------

/// Why a connection was turned away at (or just after) accept: the `reason`
/// label of `netpool_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefuseReason {
    /// Every budget slot was busy (`Overflow::Refuse`, or `Grow` at its max).
    Budget,
    /// The client's address was at `Builder::max_per_ip`.
    PerIp,
    /// `Builder::accept_rate` was exceeded.
    Rate,
    /// The address filter (`allow` / `deny`) turned the client away.
    Denied,
    /// The PROXY protocol header was missing, malformed, too long or late.
    Proxy,
    /// The process was out of descriptors; the spare descriptor answered.
    Emfile,
}

impl RefuseReason {
    /// Every reason, in the order of the snapshot's array and the output.
    pub(crate) const ALL: [RefuseReason; 6] = [
        RefuseReason::Budget,
        RefuseReason::PerIp,
        RefuseReason::Rate,
        RefuseReason::Denied,
        RefuseReason::Proxy,
        RefuseReason::Emfile,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            RefuseReason::Budget => "budget",
            RefuseReason::PerIp => "per_ip",
            RefuseReason::Rate => "rate",
            RefuseReason::Denied => "denied",
            RefuseReason::Proxy => "proxy",
            RefuseReason::Emfile => "emfile",
        }
    }

    /// Index into [`MetricsSnapshot::refused`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Why a connection ended: the `reason` label of
/// `netpool_connections_closed_total`. One label per [`CloseReason`]
/// variant, except that every I/O error kind shares `io` (an unbounded set of
/// label values would be a cardinality leak).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseLabel {
    /// [`CloseReason::PeerClosed`].
    PeerClosed,
    /// [`CloseReason::BadFrame`].
    BadFrame,
    /// [`CloseReason::Reset`].
    Reset,
    /// [`CloseReason::LineTooLong`].
    LineTooLong,
    /// [`CloseReason::OutputOverflow`].
    OutputOverflow,
    /// [`CloseReason::Closed`]: `Conn::close` or `ConnHandle::close`.
    ClosedByApp,
    /// [`CloseReason::Stopped`].
    Stopped,
    /// [`CloseReason::IdleTimeout`].
    IdleTimeout,
    /// [`CloseReason::FrameTimeout`].
    FrameTimeout,
    /// [`CloseReason::WriteStalled`].
    WriteStalled,
    /// [`CloseReason::BadProxyHeader`].
    BadProxyHeader,
    /// [`CloseReason::Denied`].
    Denied,
    /// [`CloseReason::TooManyFromAddress`].
    PerIp,
    /// [`CloseReason::HandlerPanicked`].
    HandlerPanicked,
    /// [`CloseReason::Io`], whatever the kind.
    Io,
    /// [`CloseReason::Tls`].
    Tls,
    /// [`CloseReason::HandshakeTimeout`].
    HandshakeTimeout,
    /// [`CloseReason::HandshakeEvicted`].
    HandshakeEvicted,
}

impl CloseLabel {
    /// Every label, in the order of the snapshot's array and the output.
    pub(crate) const ALL: [CloseLabel; 18] = [
        CloseLabel::PeerClosed,
        CloseLabel::BadFrame,
        CloseLabel::Reset,
        CloseLabel::LineTooLong,
        CloseLabel::OutputOverflow,
        CloseLabel::ClosedByApp,
        CloseLabel::Stopped,
        CloseLabel::IdleTimeout,
        CloseLabel::FrameTimeout,
        CloseLabel::WriteStalled,
        CloseLabel::BadProxyHeader,
        CloseLabel::Denied,
        CloseLabel::PerIp,
        CloseLabel::HandlerPanicked,
        CloseLabel::Io,
        CloseLabel::Tls,
        CloseLabel::HandshakeTimeout,
        CloseLabel::HandshakeEvicted,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseLabel::PeerClosed => "peer_closed",
            CloseLabel::BadFrame => "bad_frame",
            CloseLabel::Reset => "reset",
            CloseLabel::LineTooLong => "line_too_long",
            CloseLabel::OutputOverflow => "output_overflow",
            CloseLabel::ClosedByApp => "closed_by_app",
            CloseLabel::Stopped => "stopped",
            CloseLabel::IdleTimeout => "idle_timeout",
            CloseLabel::FrameTimeout => "frame_timeout",
            CloseLabel::WriteStalled => "write_stalled",
            CloseLabel::BadProxyHeader => "bad_proxy_header",
            CloseLabel::Denied => "denied",
            CloseLabel::PerIp => "per_ip",
            CloseLabel::HandlerPanicked => "handler_panicked",
            CloseLabel::Io => "io",
            CloseLabel::Tls => "tls",
            CloseLabel::HandshakeTimeout => "handshake_timeout",
            CloseLabel::HandshakeEvicted => "handshake_evicted",
        }
    }

    /// Index into [`MetricsSnapshot::closed`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl From<CloseReason> for CloseLabel {
    /// The match is exhaustive inside the crate, so a new [`CloseReason`]
    /// does not compile until it has a label.
    fn from(reason: CloseReason) -> CloseLabel {
        match reason {
            CloseReason::PeerClosed => CloseLabel::PeerClosed,
            CloseReason::BadFrame => CloseLabel::BadFrame,
            CloseReason::Reset => CloseLabel::Reset,
            CloseReason::LineTooLong => CloseLabel::LineTooLong,
            CloseReason::OutputOverflow => CloseLabel::OutputOverflow,
            CloseReason::Closed => CloseLabel::ClosedByApp,
            CloseReason::Stopped => CloseLabel::Stopped,
            CloseReason::IdleTimeout => CloseLabel::IdleTimeout,
            CloseReason::FrameTimeout => CloseLabel::FrameTimeout,
            CloseReason::WriteStalled => CloseLabel::WriteStalled,
            CloseReason::BadProxyHeader => CloseLabel::BadProxyHeader,
            CloseReason::Denied => CloseLabel::Denied,
            CloseReason::TooManyFromAddress => CloseLabel::PerIp,
            CloseReason::HandlerPanicked => CloseLabel::HandlerPanicked,
            CloseReason::Io(_) => CloseLabel::Io,
            CloseReason::Tls => CloseLabel::Tls,
            CloseReason::HandshakeTimeout => CloseLabel::HandshakeTimeout,
            CloseReason::HandshakeEvicted => CloseLabel::HandshakeEvicted,
        }
    }
}

// ---------------------------------------------------------------------------
// The snapshot
// ---------------------------------------------------------------------------

/// TLS handshake outcomes and certificate reloads, for a server with TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TlsHandshakes {
    /// Handshakes completed (the connection reached the handler).
    pub(crate) completed: u64,
    /// Handshakes that failed (not TLS, protocol error, peer gave up).
    pub(crate) failed: u64,
    /// Handshakes closed by the handshake timeout.
    pub(crate) timed_out: u64,
    /// Handshakes given up to make room at `Builder::max_handshakes`.
    pub(crate) evicted: u64,
    /// Certificates reloaded from the files watched on disk.
    pub(crate) cert_reloads: u64,
    /// Reloads that failed (the certificate in force was kept).
    pub(crate) cert_reload_failures: u64,
}

/// One loop's share of the figures, for the `loop="i"` series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LoopMetrics {
    /// The loop's index, as in its thread's name (`netpool-0`).
    pub(crate) index: usize,
    /// Connections open on this loop now.
    pub(crate) active: u64,
    /// Connections this loop served since start.
    pub(crate) accepted: u64,
    /// Bytes read on this loop.
    pub(crate) bytes_received: u64,
    /// Bytes written on this loop.
    pub(crate) bytes_sent: u64,
    /// This loop's turn durations.
    pub(crate) turns: TurnHistogram,
}

/// Everything a scrape shows, as plain data. Fill it from the counters
/// (server-wide fields are sums over the loops, or the shared budget's
/// figures), then hand it to [`write_prometheus`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MetricsSnapshot {
    /// Connections being served now (budget slots taken).
    pub(crate) active: u64,
    /// Connections accepted and served since start.
    pub(crate) accepted: u64,
    /// Connections refused, by [`RefuseReason::index`].
    pub(crate) refused: [u64; RefuseReason::ALL.len()],
    /// Connections closed, by [`CloseLabel::index`].
    pub(crate) closed: [u64; CloseLabel::ALL.len()],
    /// The budget now: slots in service, grown ones included.
    pub(crate) budget_slots: u64,
    /// Connections waiting in the kernel's accept queue, if the platform
    /// tells (see `accept_queue.rs`); the series is left out otherwise.
    pub(crate) listen_queue_depth: Option<u64>,
    /// The accept queue's limit (the effective backlog), if known.
    pub(crate) listen_backlog: Option<u64>,
    /// Bytes read from all connections (TLS records on a TLS server).
    pub(crate) bytes_received: u64,
    /// Bytes written to all connections (TLS records on a TLS server).
    pub(crate) bytes_sent: u64,
    /// Frames (lines) handed to the handler.
    pub(crate) frames: u64,
    /// How many times `Overflow::Grow` added slots.
    pub(crate) budget_grows: u64,
    /// How many times grown slots were given back after the cooldown.
    pub(crate) budget_retirements: u64,
    /// How many times a loop paused accepting under `Overflow::Pause`.
    pub(crate) accept_pauses: u64,
    /// `accept` errors other than the harmless ones.
    pub(crate) accept_errors: u64,
    /// Handler panics caught, in any of its methods.
    pub(crate) handler_panics: u64,
    /// Reply slots (`Conn::defer`) dropped unfilled.
    pub(crate) reply_slots_dropped: u64,
    /// Commands from other threads refused because a loop's queue was full.
    pub(crate) commands_refused_full: u64,
    /// Handle commands and reply fills whose connection was already gone.
    pub(crate) stale_handle_commands: u64,
    /// Microseconds the loops spent busy-polling.
    pub(crate) busy_poll_micros: u64,
    /// Busy-polls that caught an event.
    pub(crate) busy_polls_found: u64,
    /// Busy-polls that came up empty.
    pub(crate) busy_polls_empty: u64,
    /// TLS handshake outcomes; `None` on a server without TLS, whose output
    /// then has no TLS series at all rather than zeros that suggest TLS.
    pub(crate) tls: Option<TlsHandshakes>,
    /// One entry per loop.
    pub(crate) loops: Vec<LoopMetrics>,
}

impl MetricsSnapshot {
    /// Adds `n` refusals for `reason`.
    pub(crate) fn add_refused(&mut self, reason: RefuseReason, n: u64) {
        self.refused[reason.index()] += n;
    }

    /// Adds `n` closes for `label`.
    pub(crate) fn add_closed(&mut self, label: CloseLabel, n: u64) {
        self.closed[label.index()] += n;
    }
}

/// A snapshot of a server's metrics, from
/// [`ServerHandle::metrics`](crate::ServerHandle::metrics): its counters,
/// the budget, the kernel's accept queue, each loop's figures and turn
/// histogram, ready to be written in the Prometheus text format.
///
/// ```
/// use netpool::{Metrics, Server};
///
/// let server = Server::bind("127.0.0.1:0".parse().unwrap())?;
/// let metrics = server.handle().metrics();
/// let mut text = Vec::new();
/// metrics.write_prometheus(&mut text)?;
/// let text = String::from_utf8(text).unwrap();
/// assert!(text.contains("\nnetpool_connections_active 0\n"));
/// assert!(text.contains("netpool_loop_turn_seconds_bucket{loop=\"0\",le=\"+Inf\"} 0"));
/// // Serve it over HTTP with this content type (see `MetricsEndpoint`).
/// assert_eq!(Metrics::CONTENT_TYPE, "text/plain; version=0.0.4");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    pub(crate) snapshot: MetricsSnapshot,
}

impl Metrics {
    /// The content type of [`write_prometheus`](Metrics::write_prometheus)'s
    /// output, for an HTTP response: the text exposition format 0.0.4, which
    /// every Prometheus-compatible scraper reads.
    pub const CONTENT_TYPE: &'static str = CONTENT_TYPE;

    /// Writes every series in the Prometheus text exposition format
    /// (0.0.4). Server-wide:
    ///
    /// - `netpool_connections_active` (gauge: budget slots taken),
    ///   `netpool_connections_accepted_total`,
    ///   `netpool_connections_refused_total{reason}` (`budget`, `per_ip`,
    ///   `rate`, `denied`, `proxy`, `emfile`),
    ///   `netpool_connections_closed_total{reason}` (one per
    ///   [`CloseReason`], all I/O errors under `io`);
    /// - `netpool_budget_slots` (gauge: the budget, grown slots included);
    /// - `netpool_listen_queue_depth` and `netpool_listen_queue_backlog`
    ///   (gauges: connections waiting in the kernel's accept queue, and how
    ///   many may; left out where the platform does not tell, and once the
    ///   server has stopped listening);
    /// - `netpool_budget_grows_total` and `netpool_budget_retirements_total`
    ///   (how many times [`Overflow::Grow`](crate::Overflow::Grow) added
    ///   slots, and how many times grown slots were given back);
    /// - `netpool_accept_pauses_total` (how many times a loop paused
    ///   accepting under [`Overflow::Pause`](crate::Overflow::Pause)) and
    ///   `netpool_accept_errors_total` (`accept` errors other than the
    ///   harmless ones: out of descriptors or memory);
    /// - `netpool_bytes_received_total`, `netpool_bytes_sent_total`,
    ///   `netpool_frames_total` (lines handed to the handler);
    /// - `netpool_handler_panics_total` (panics caught, in any handler
    ///   method), `netpool_reply_slots_dropped_total` (reply slots of
    ///   [`Conn::defer`](crate::Conn::defer) dropped unfilled),
    ///   `netpool_commands_refused_total{reason="full"}` (sends, fills and
    ///   closures from other threads refused with
    ///   [`Error::Full`](crate::Error::Full)) and
    ///   `netpool_stale_handle_commands_total` (commands and fills whose
    ///   connection was gone);
    /// - `netpool_busy_poll_seconds_total` (time the loops spent
    ///   busy-polling) and `netpool_busy_polls_total{result}` (`found`,
    ///   `empty`), zero unless [`Builder::busy_poll`](crate::Builder::busy_poll)
    ///   is on;
    /// - `netpool_tls_handshakes_total{result}` (`completed`, `failed`,
    ///   `timed_out`, `evicted`) and `netpool_tls_cert_reloads_total{result}`
    ///   (`loaded`, `failed`), on a TLS server only.
    ///
    /// Per loop, with a `loop` label: `netpool_loop_connections_active`,
    /// `netpool_loop_connections_accepted_total`,
    /// `netpool_loop_bytes_received_total`, `netpool_loop_bytes_sent_total`,
    /// and the histogram `netpool_loop_turn_seconds` (how long the loop was
    /// busy between two polls; buckets from 1 µs to about 1 s: a handler
    /// that blocks its loop shows in the upper buckets).
    ///
    /// A connection turned away after its PROXY header counts as accepted,
    /// refused and closed; see the module `metrics.rs` for what counts where.
    /// Every counter of [`Stats`](crate::Stats) shows in one of these series.
    ///
    /// # Errors
    ///
    /// Whatever `out` returns. The output is many small writes: give it a
    /// `Vec<u8>` or a `BufWriter`.
    pub fn write_prometheus<W: Write>(&self, out: &mut W) -> io::Result<()> {
        write_prometheus(out, &self.snapshot)
    }

    /// Connections closed for `reason` since the server started (every
    /// [`CloseReason::Io`] kind counts under any of them).
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.snapshot.closed[CloseLabel::from(reason).index()]
    }

    /// Connections waiting in the kernel's accept queue of the server's
    /// listener (summed over its listeners with
    /// [`Distribution::ReusePort`](crate::Distribution::ReusePort)): under
    /// [`Overflow::Pause`](crate::Overflow::Pause), the clients waiting for
    /// a slot. `None` where the platform does not tell (Linux does, through
    /// its socket diagnostics), or once the listener is closed.
    pub fn listen_queue_depth(&self) -> Option<u64> {
        self.snapshot.listen_queue_depth
    }

    /// How many connections the kernel's accept queue may hold: the
    /// [`Builder::backlog`](crate::Builder::backlog), capped by
    /// `net.core.somaxconn`. `None` as for
    /// [`listen_queue_depth`](Metrics::listen_queue_depth).
    pub fn listen_backlog(&self) -> Option<u64> {
        self.snapshot.listen_backlog
    }
}

// ---------------------------------------------------------------------------
// The text format
// ---------------------------------------------------------------------------

/// A metric family's type, as the `# TYPE` line spells it.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Writes the `# HELP` and `# TYPE` lines that must precede a family's
/// samples (all samples of a family form one group in the 0.0.4 format).
fn family(out: &mut impl Write, name: &str, kind: Kind, help: &str) -> io::Result<()> {
    write!(out, "# HELP {name} ")?;
    // HELP text escapes only backslash and newline.
    for c in help.chars() {
        match c {
            '\\' => out.write_all(b"\\\\")?,
            '\n' => out.write_all(b"\\n")?,
            c => write!(out, "{c}")?,
        }
    }
    writeln!(out, "\n# TYPE {name} {}", kind.as_str())
}

/// Writes a family of one sample with no labels.
fn single(
    out: &mut impl Write,
    name: &str,
    kind: Kind,
    help: &str,
    value: impl Display,
) -> io::Result<()> {
    family(out, name, kind, help)?;
    sample(out, name, &[], value)
}

/// Writes one sample line: `name{k="v",...} value`.
fn sample(
    out: &mut impl Write,
    name: &str,
    labels: &[(&str, &str)],
    value: impl Display,
) -> io::Result<()> {
    out.write_all(name.as_bytes())?;
    if !labels.is_empty() {
        out.write_all(b"{")?;
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            write!(out, "{key}=\"")?;
            write_label_value(out, value)?;
            out.write_all(b"\"")?;
        }
        out.write_all(b"}")?;
    }
    writeln!(out, " {value}")
}

/// A label value with backslash, double quote and newline escaped, as the
/// format requires; everything else is written as is (UTF-8).
fn write_label_value(out: &mut impl Write, value: &str) -> io::Result<()> {
    let mut rest = value;
    while let Some(at) = rest.find(['\\', '"', '\n']) {
        out.write_all(&rest.as_bytes()[..at])?;
        out.write_all(match rest.as_bytes()[at] {
            b'\\' => b"\\\\",
            b'"' => b"\\\"",
            _ => b"\\n",
        })?;
        rest = &rest[at + 1..];
    }
    out.write_all(rest.as_bytes())
}

/// Nanoseconds as seconds, for `_sum`. Rust prints an `f64` without an
/// exponent and with the fewest digits that read back the same value, which
/// every Prometheus parser accepts.
fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// Microseconds written as seconds, exactly (`0.000001`, `1.048576`)
/// rather than through a float: the `le` label of a bucket bound (2^i µs),
/// and the busy-poll time.
struct Micros(u64);

impl Display for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// Writes `s` in the Prometheus text exposition format 0.0.4: a `# HELP`
/// and `# TYPE` line before each family, counters named `*_total`, and the
/// turn histogram as cumulative `_bucket{le=".."}` lines ending in `+Inf`,
/// then `_sum` (seconds) and `_count`. Serve it with [`CONTENT_TYPE`].
///
/// # Errors
///
/// Whatever `out` returns. Write into a `Vec<u8>` (or a `BufWriter`): the
/// output is many small writes.
pub(crate) fn write_prometheus(out: &mut impl Write, s: &MetricsSnapshot) -> io::Result<()> {
    single(
        out,
        "netpool_connections_active",
        Kind::Gauge,
        "Connections being served now (budget slots taken).",
        s.active,
    )?;
    single(
        out,
        "netpool_connections_accepted_total",
        Kind::Counter,
        "Connections accepted and served.",
        s.accepted,
    )?;

    let name = "netpool_connections_refused_total";
    family(
        out,
        name,
        Kind::Counter,
        "Connections turned away at or just after accept, by reason.",
    )?;
    for reason in RefuseReason::ALL {
        sample(
            out,
            name,
            &[("reason", reason.label())],
            s.refused[reason.index()],
        )?;
    }

    let name = "netpool_connections_closed_total";
    family(out, name, Kind::Counter, "Connections closed, by reason.")?;
    for label in CloseLabel::ALL {
        sample(
            out,
            name,
            &[("reason", label.label())],
            s.closed[label.index()],
        )?;
    }

    single(
        out,
        "netpool_budget_slots",
        Kind::Gauge,
        "Accept budget: connections that may be served at once, grown slots included.",
        s.budget_slots,
    )?;
    single(
        out,
        "netpool_budget_grows_total",
        Kind::Counter,
        "Times the Grow overflow strategy added budget slots.",
        s.budget_grows,
    )?;
    single(
        out,
        "netpool_budget_retirements_total",
        Kind::Counter,
        "Times grown budget slots were given back after the grow cooldown.",
        s.budget_retirements,
    )?;

    if let Some(depth) = s.listen_queue_depth {
        single(
            out,
            "netpool_listen_queue_depth",
            Kind::Gauge,
            "Connections waiting in the kernel's accept queue.",
            depth,
        )?;
    }
    if let Some(backlog) = s.listen_backlog {
        single(
            out,
            "netpool_listen_queue_backlog",
            Kind::Gauge,
            "Limit of the kernel's accept queue (the effective listen backlog).",
            backlog,
        )?;
    }
    single(
        out,
        "netpool_accept_pauses_total",
        Kind::Counter,
        "Times a loop paused accepting under the Pause overflow strategy.",
        s.accept_pauses,
    )?;
    single(
        out,
        "netpool_accept_errors_total",
        Kind::Counter,
        "Errors of accept other than the harmless ones (out of descriptors or memory).",
        s.accept_errors,
    )?;

    single(
        out,
        "netpool_bytes_received_total",
        Kind::Counter,
        "Bytes read from connections.",
        s.bytes_received,
    )?;
    single(
        out,
        "netpool_bytes_sent_total",
        Kind::Counter,
        "Bytes written to connections.",
        s.bytes_sent,
    )?;
    single(
        out,
        "netpool_frames_total",
        Kind::Counter,
        "Frames (lines) handed to the handler.",
        s.frames,
    )?;

    single(
        out,
        "netpool_handler_panics_total",
        Kind::Counter,
        "Handler panics caught, in any of its methods (one while serving a connection closes it).",
        s.handler_panics,
    )?;
    single(
        out,
        "netpool_reply_slots_dropped_total",
        Kind::Counter,
        "Reply slots (Conn::defer) dropped unfilled: each request got no reply.",
        s.reply_slots_dropped,
    )?;
    let name = "netpool_commands_refused_total";
    family(
        out,
        name,
        Kind::Counter,
        "Sends, reply fills and closures from other threads refused, by reason (full: the loop's command queue was at its limit).",
    )?;
    sample(out, name, &[("reason", "full")], s.commands_refused_full)?;
    single(
        out,
        "netpool_stale_handle_commands_total",
        Kind::Counter,
        "Connection handle commands and reply fills dropped because their connection was gone.",
        s.stale_handle_commands,
    )?;

    single(
        out,
        "netpool_busy_poll_seconds_total",
        Kind::Counter,
        "Time the loops spent busy-polling: the CPU that latency cost.",
        Micros(s.busy_poll_micros),
    )?;
    let name = "netpool_busy_polls_total";
    family(
        out,
        name,
        Kind::Counter,
        "Busy-polls, by result: an event caught before the time was up, or none.",
    )?;
    sample(out, name, &[("result", "found")], s.busy_polls_found)?;
    sample(out, name, &[("result", "empty")], s.busy_polls_empty)?;

    if let Some(tls) = s.tls {
        let name = "netpool_tls_handshakes_total";
        family(out, name, Kind::Counter, "TLS handshakes, by result.")?;
        sample(out, name, &[("result", "completed")], tls.completed)?;
        sample(out, name, &[("result", "failed")], tls.failed)?;
        sample(out, name, &[("result", "timed_out")], tls.timed_out)?;
        sample(out, name, &[("result", "evicted")], tls.evicted)?;
        let name = "netpool_tls_cert_reloads_total";
        family(
            out,
            name,
            Kind::Counter,
            "Certificate reloads from the files watched on disk, by result.",
        )?;
        sample(out, name, &[("result", "loaded")], tls.cert_reloads)?;
        sample(out, name, &[("result", "failed")], tls.cert_reload_failures)?;
    }

    write_loops(out, &s.loops)
}

/// A per-loop family: name, type, help, and the field it shows.
type PerLoopFamily = (&'static str, Kind, &'static str, fn(&LoopMetrics) -> u64);

/// The per-loop families. Each family's samples for every loop come
/// together, as the format requires.
fn write_loops(out: &mut impl Write, loops: &[LoopMetrics]) -> io::Result<()> {
    if loops.is_empty() {
        return Ok(());
    }
    let indices: Vec<String> = loops.iter().map(|l| l.index.to_string()).collect();
    let per_loop: [PerLoopFamily; 4] = [
        (
            "netpool_loop_connections_active",
            Kind::Gauge,
            "Connections open on one loop.",
            |l| l.active,
        ),
        (
            "netpool_loop_connections_accepted_total",
            Kind::Counter,
            "Connections one loop served.",
            |l| l.accepted,
        ),
        (
            "netpool_loop_bytes_received_total",
            Kind::Counter,
            "Bytes read on one loop.",
            |l| l.bytes_received,
        ),
        (
            "netpool_loop_bytes_sent_total",
            Kind::Counter,
            "Bytes written on one loop.",
            |l| l.bytes_sent,
        ),
    ];
    for (name, kind, help, value) in per_loop {
        family(out, name, kind, help)?;
        for (l, index) in loops.iter().zip(&indices) {
            sample(out, name, &[("loop", index)], value(l))?;
        }
    }

    let name = "netpool_loop_turn_seconds";
    family(
        out,
        name,
        Kind::Histogram,
        "Time a loop was busy between two polls (long turns delay every connection on the loop).",
    )?;
    let bucket = format!("{name}_bucket");
    for (l, index) in loops.iter().zip(&indices) {
        let mut cumulative = 0u64;
        for (i, count) in l.turns.counts[..TURN_BUCKETS].iter().enumerate() {
            cumulative = cumulative.wrapping_add(*count);
            let le = Micros(bucket_bound_us(i)).to_string();
            sample(out, &bucket, &[("loop", index), ("le", &le)], cumulative)?;
        }
        sample(
            out,
            &bucket,
            &[("loop", index), ("le", "+Inf")],
            l.turns.count(),
        )?;
        sample(
            out,
            &format!("{name}_sum"),
            &[("loop", index)],
            seconds(l.turns.sum_ns),
        )?;
        sample(
            out,
            &format!("{name}_count"),
            &[("loop", index)],
            l.turns.count(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// The strict reader of this format that the socket tests use too
/// (`tests/util/prometheus.rs`), included here so that the unit tests and
/// the socket tests hold the output to one definition of valid.
#[cfg(test)]
#[path = "../tests/util/prometheus.rs"]
#[allow(dead_code, unreachable_pub)] // a shared file: each user takes a part
pub(crate) mod reader;
