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
    /// - `netpool_bytes_received_total`, `netpool_bytes_sent_total`,
    ///   `netpool_frames_total` (lines handed to the handler);
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

/// A bucket bound as the `le` label: 2^i µs in seconds, written exactly
/// (`0.000001` .. `1.048576`) rather than through a float.
struct BucketBound(u64);

impl Display for BucketBound {
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
    let name = "netpool_connections_active";
    family(
        out,
        name,
        Kind::Gauge,
        "Connections being served now (budget slots taken).",
    )?;
    sample(out, name, &[], s.active)?;

    let name = "netpool_connections_accepted_total";
    family(out, name, Kind::Counter, "Connections accepted and served.")?;
    sample(out, name, &[], s.accepted)?;

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

    let name = "netpool_budget_slots";
    family(
        out,
        name,
        Kind::Gauge,
        "Accept budget: connections that may be served at once, grown slots included.",
    )?;
    sample(out, name, &[], s.budget_slots)?;

    if let Some(depth) = s.listen_queue_depth {
        let name = "netpool_listen_queue_depth";
        family(
            out,
            name,
            Kind::Gauge,
            "Connections waiting in the kernel's accept queue.",
        )?;
        sample(out, name, &[], depth)?;
    }
    if let Some(backlog) = s.listen_backlog {
        let name = "netpool_listen_queue_backlog";
        family(
            out,
            name,
            Kind::Gauge,
            "Limit of the kernel's accept queue (the effective listen backlog).",
        )?;
        sample(out, name, &[], backlog)?;
    }

    let name = "netpool_bytes_received_total";
    family(out, name, Kind::Counter, "Bytes read from connections.")?;
    sample(out, name, &[], s.bytes_received)?;
    let name = "netpool_bytes_sent_total";
    family(out, name, Kind::Counter, "Bytes written to connections.")?;
    sample(out, name, &[], s.bytes_sent)?;

    let name = "netpool_frames_total";
    family(
        out,
        name,
        Kind::Counter,
        "Frames (lines) handed to the handler.",
    )?;
    sample(out, name, &[], s.frames)?;

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
            let le = BucketBound(bucket_bound_us(i)).to_string();
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
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// A snapshot with every field set to a distinct value, two loops.
    fn full_snapshot() -> MetricsSnapshot {
        let mut s = MetricsSnapshot {
            active: 3,
            accepted: 40,
            budget_slots: 64,
            listen_queue_depth: Some(6),
            listen_backlog: Some(77),
            bytes_received: 1000,
            bytes_sent: 2000,
            frames: 55,
            tls: Some(TlsHandshakes {
                completed: 7,
                failed: 2,
                timed_out: 1,
                evicted: 3,
                cert_reloads: 4,
                cert_reload_failures: 5,
            }),
            ..MetricsSnapshot::default()
        };
        for (n, reason) in RefuseReason::ALL.into_iter().enumerate() {
            s.add_refused(reason, 100 + n as u64);
        }
        for (n, label) in CloseLabel::ALL.into_iter().enumerate() {
            s.add_closed(label, 200 + n as u64);
        }
        for index in 0..2 {
            let h = LoopTurnHistogram::default();
            for us in [0, 1, 3, 3, 700, 5_000_000] {
                h.record(Duration::from_micros(us + index));
            }
            s.loops.push(LoopMetrics {
                index: index as usize,
                active: 1 + index,
                accepted: 20 + index,
                bytes_received: 500 + index,
                bytes_sent: 1000 + index,
                turns: h.snapshot(),
            });
        }
        s
    }

    fn text(s: &MetricsSnapshot) -> String {
        let mut out = Vec::new();
        write_prometheus(&mut out, s).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// One parsed sample line.
    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    impl Sample {
        fn label(&self, key: &str) -> Option<&str> {
            self.labels
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }
    }

    fn is_metric_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn is_label_name(s: &str) -> bool {
        is_metric_name(s) && !s.contains(':')
    }

    /// Parses `name{k="v",...} value` strictly; panics with the line on any
    /// deviation.
    fn parse_sample(line: &str) -> Sample {
        let fail = |why: &str| -> ! { panic!("{why}: {line:?}") };
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| fail("no value"));
        let name = &line[..name_end];
        if !is_metric_name(name) {
            fail("bad metric name");
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            rest = after;
            loop {
                let eq = rest.find('=').unwrap_or_else(|| fail("label without '='"));
                let key = &rest[..eq];
                if !is_label_name(key) {
                    fail("bad label name");
                }
                rest = rest[eq + 1..]
                    .strip_prefix('"')
                    .unwrap_or_else(|| fail("label value not quoted"));
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => fail("bad escape"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, '\n')) => fail("raw newline in label value"),
                        Some((_, c)) => value.push(c),
                        None => fail("unterminated label value"),
                    }
                };
                labels.push((key.to_string(), value));
                rest = &rest[end + 1..];
                if let Some(after) = rest.strip_prefix(',') {
                    rest = after;
                } else if let Some(after) = rest.strip_prefix('}') {
                    rest = after;
                    break;
                } else {
                    fail("expected ',' or '}' after a label");
                }
            }
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| fail("no single space before the value"));
        if value.contains(' ') {
            fail("timestamps are not written, nor extra fields");
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| fail("value is not a number")),
        };
        Sample {
            name: name.to_string(),
            labels,
            value,
        }
    }

    /// The strict checker: every line is HELP, TYPE or a sample; each family
    /// has HELP then TYPE before its samples and its samples form one group;
    /// counters end in `_total`; no series appears twice; each histogram
    /// series has cumulative buckets with increasing bounds, ending in `+Inf`
    /// equal to `_count`, and a `_sum`. Returns the samples.
    fn check_exposition(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'), "the last line ends with a newline");
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helped: HashSet<String> = HashSet::new();
        let mut finished: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut series: HashSet<String> = HashSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("HELP has text");
                assert!(is_metric_name(name), "{line}");
                assert!(helped.insert(name.to_string()), "second HELP: {line}");
                if let Some(prev) = current.replace(name.to_string()) {
                    finished.insert(prev);
                }
                assert!(!finished.contains(name), "family split: {line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
                assert_eq!(current.as_deref(), Some(name), "TYPE after its HELP");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counter name: {line}");
                }
                assert!(types.insert(name.to_string(), kind.into()).is_none());
                continue;
            }
            assert!(!line.starts_with('#'), "unknown comment: {line}");
            let s = parse_sample(line);
            let family = current.as_deref().expect("sample before any HELP");
            let kind = types.get(family).expect("sample before its TYPE");
            if kind == "histogram" {
                let suffix = s.name.strip_prefix(family).unwrap_or("");
                assert!(
                    ["_bucket", "_sum", "_count"].contains(&suffix),
                    "histogram sample outside its family: {line}"
                );
            } else {
                assert_eq!(s.name, family, "sample outside its family");
            }
            let key = format!("{}{:?}", s.name, s.labels);
            assert!(series.insert(key), "series written twice: {line}");
            samples.push(s);
        }
        for (family, kind) in &types {
            if kind == "histogram" {
                check_histogram(family, &samples);
            }
        }
        samples
    }

    /// Buckets cumulative, bounds increasing, `+Inf` last and equal to
    /// `_count`, one `_sum`, for each label set of `family`.
    fn check_histogram(family: &str, samples: &[Sample]) {
        let others = |s: &Sample| -> Vec<(String, String)> {
            s.labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect()
        };
        let mut label_sets: Vec<Vec<(String, String)>> = Vec::new();
        for s in samples.iter().filter(|s| s.name.starts_with(family)) {
            let l = others(s);
            if !label_sets.contains(&l) {
                label_sets.push(l);
            }
        }
        assert!(!label_sets.is_empty());
        for set in label_sets {
            let of = |suffix: &str| -> Vec<&Sample> {
                samples
                    .iter()
                    .filter(|s| s.name == format!("{family}{suffix}") && others(s) == set)
                    .collect()
            };
            let buckets = of("_bucket");
            assert!(buckets.len() >= 2, "{family}{set:?}: buckets");
            let mut last_le = f64::NEG_INFINITY;
            let mut last_count = 0.0;
            for b in &buckets {
                let le: f64 = match b.label("le").expect("bucket has le") {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().expect("le is a number"),
                };
                assert!(le > last_le, "{family}{set:?}: bounds increase");
                assert!(b.value >= last_count, "{family}{set:?}: cumulative");
                last_le = le;
                last_count = b.value;
            }
            assert_eq!(last_le, f64::INFINITY, "{family}{set:?}: ends in +Inf");
            let count = of("_count");
            assert_eq!(count.len(), 1);
            assert_eq!(count[0].value, last_count, "{family}{set:?}: +Inf == count");
            assert_eq!(of("_sum").len(), 1, "{family}{set:?}: one _sum");
        }
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.label(k) == Some(*v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{name}{labels:?}");
        found[0].value
    }

    mod histogram {
        use super::*;

        /// Each bucket takes the turns up to its bound and none above it.
        #[test]
        fn a_turn_lands_in_the_first_bucket_whose_bound_holds_it() {
            assert_eq!(bucket_index(0), 0);
            assert_eq!(bucket_index(1_000), 0);
            assert_eq!(bucket_index(1_001), 1);
            assert_eq!(bucket_index(2_000), 1);
            assert_eq!(bucket_index(2_001), 2);
            for i in 1..TURN_BUCKETS {
                let bound_ns = bucket_bound_us(i) * 1_000;
                assert_eq!(bucket_index(bound_ns), i, "at the bound of {i}");
                assert_eq!(bucket_index(bound_ns + 1), i + 1, "just past {i}");
                assert_eq!(bucket_index(bound_ns / 2 + 1), i, "just past {}", i - 1);
            }
            assert_eq!(bucket_index(1_048_576_000), TURN_BUCKETS - 1);
            assert_eq!(bucket_index(1_048_576_001), TURN_BUCKETS);
            assert_eq!(bucket_index(u64::MAX), TURN_BUCKETS);
        }

        /// Recorded turns show up in count, buckets and sum; a turn too long
        /// for a u64 of nanoseconds saturates into `+Inf`.
        #[test]
        fn records_add_up() {
            let h = LoopTurnHistogram::default();
            h.record(Duration::from_nanos(500));
            h.record(Duration::from_micros(3));
            h.record(Duration::from_micros(3));
            h.record(Duration::from_secs(2));
            let s = h.snapshot();
            assert_eq!(s.count(), 4);
            assert_eq!(
                (s.counts[0], s.counts[2], s.counts[TURN_BUCKETS]),
                (1, 2, 1)
            );
            assert_eq!(s.sum_ns, 500 + 6_000 + 2_000_000_000);
            h.record(Duration::MAX);
            assert_eq!(h.snapshot().counts[TURN_BUCKETS], 2);
        }

        /// A reader on another thread sees every turn once the writer is
        /// done (one writer, relaxed load + store, no lost update).
        #[test]
        fn one_writer_many_readers() {
            let h = std::sync::Arc::new(LoopTurnHistogram::default());
            let writer = {
                let h = h.clone();
                std::thread::spawn(move || {
                    for n in 0..10_000u64 {
                        h.record(Duration::from_nanos(n * 37));
                    }
                })
            };
            // Read while it writes: counts never go down.
            let mut last = 0;
            while !writer.is_finished() {
                let c = h.snapshot().count();
                assert!(c >= last);
                last = c;
            }
            writer.join().unwrap();
            let s = h.snapshot();
            assert_eq!(s.count(), 10_000);
            assert_eq!(s.sum_ns, (0..10_000u64).map(|n| n * 37).sum::<u64>());
        }

        /// The `le` bounds are written exactly, not through a float.
        #[test]
        fn bounds_are_exact_decimals() {
            assert_eq!(BucketBound(bucket_bound_us(0)).to_string(), "0.000001");
            assert_eq!(BucketBound(bucket_bound_us(9)).to_string(), "0.000512");
            assert_eq!(BucketBound(bucket_bound_us(20)).to_string(), "1.048576");
        }
    }

    mod exposition {
        use super::*;

        /// The whole output passes the strict checker and says what the
        /// snapshot holds, family by family.
        #[test]
        fn a_full_snapshot_is_valid_and_complete() {
            let s = full_snapshot();
            let samples = check_exposition(&text(&s));
            assert_eq!(value(&samples, "netpool_connections_active", &[]), 3.0);
            assert_eq!(
                value(&samples, "netpool_connections_accepted_total", &[]),
                40.0
            );
            let refused = "netpool_connections_refused_total";
            for (n, reason) in ["budget", "per_ip", "rate", "denied", "proxy", "emfile"]
                .into_iter()
                .enumerate()
            {
                assert_eq!(
                    value(&samples, refused, &[("reason", reason)]),
                    100.0 + n as f64
                );
            }
            let closed = "netpool_connections_closed_total";
            for (n, label) in CloseLabel::ALL.into_iter().enumerate() {
                assert_eq!(
                    value(&samples, closed, &[("reason", label.label())]),
                    200.0 + n as f64
                );
            }
            assert_eq!(value(&samples, "netpool_budget_slots", &[]), 64.0);
            assert_eq!(value(&samples, "netpool_listen_queue_depth", &[]), 6.0);
            assert_eq!(value(&samples, "netpool_listen_queue_backlog", &[]), 77.0);
            assert_eq!(value(&samples, "netpool_bytes_received_total", &[]), 1000.0);
            assert_eq!(value(&samples, "netpool_bytes_sent_total", &[]), 2000.0);
            assert_eq!(value(&samples, "netpool_frames_total", &[]), 55.0);
            let tls = "netpool_tls_handshakes_total";
            assert_eq!(value(&samples, tls, &[("result", "completed")]), 7.0);
            assert_eq!(value(&samples, tls, &[("result", "failed")]), 2.0);
            assert_eq!(value(&samples, tls, &[("result", "timed_out")]), 1.0);
            assert_eq!(value(&samples, tls, &[("result", "evicted")]), 3.0);
            let reloads = "netpool_tls_cert_reloads_total";
            assert_eq!(value(&samples, reloads, &[("result", "loaded")]), 4.0);
            assert_eq!(value(&samples, reloads, &[("result", "failed")]), 5.0);
            for (i, l) in ["0", "1"].into_iter().enumerate() {
                let i = i as f64;
                let lp = [("loop", l)];
                assert_eq!(
                    value(&samples, "netpool_loop_connections_active", &lp),
                    1.0 + i
                );
                assert_eq!(
                    value(&samples, "netpool_loop_connections_accepted_total", &lp),
                    20.0 + i
                );
                assert_eq!(
                    value(&samples, "netpool_loop_bytes_received_total", &lp),
                    500.0 + i
                );
                assert_eq!(
                    value(&samples, "netpool_loop_bytes_sent_total", &lp),
                    1000.0 + i
                );
                assert_eq!(value(&samples, "netpool_loop_turn_seconds_count", &lp), 6.0);
            }
        }

        /// Loop 0 recorded 0, 1, 3, 3, 700 µs and 5 s: the cumulative
        /// buckets and the sum say exactly that.
        #[test]
        fn the_turn_histogram_is_cumulative_with_the_sum_in_seconds() {
            let samples = check_exposition(&text(&full_snapshot()));
            let bucket = |le: &str| {
                value(
                    &samples,
                    "netpool_loop_turn_seconds_bucket",
                    &[("loop", "0"), ("le", le)],
                )
            };
            assert_eq!(bucket("0.000001"), 2.0); // 0 and 1 µs
            assert_eq!(bucket("0.000002"), 2.0);
            assert_eq!(bucket("0.000004"), 4.0); // the two 3 µs
            assert_eq!(bucket("0.000512"), 4.0);
            assert_eq!(bucket("0.001024"), 5.0); // 700 µs
            assert_eq!(bucket("1.048576"), 5.0);
            assert_eq!(bucket("+Inf"), 6.0); // 5 s
            let sum = value(&samples, "netpool_loop_turn_seconds_sum", &[("loop", "0")]);
            assert_eq!(sum, 5.000707);
        }

        /// Optional families are left out rather than written as zeros.
        #[test]
        fn unknown_figures_are_left_out() {
            let s = MetricsSnapshot::default();
            let text = text(&s);
            let samples = check_exposition(&text);
            for absent in [
                "netpool_listen_queue_depth",
                "netpool_listen_queue_backlog",
                "netpool_tls_handshakes_total",
                "netpool_tls_cert_reloads_total",
                "netpool_loop_turn_seconds",
                "netpool_loop_connections_active",
            ] {
                assert!(!text.contains(absent), "{absent}");
            }
            assert_eq!(value(&samples, "netpool_connections_active", &[]), 0.0);
        }

        /// Label values escape backslash, quote and newline; the checker
        /// reads them back to the original.
        #[test]
        fn label_values_are_escaped() {
            let mut out = Vec::new();
            let nasty = "a\\b\"c\nd";
            sample(&mut out, "x_total", &[("k", nasty), ("plain", "é")], 1).unwrap();
            let line = String::from_utf8(out).unwrap();
            assert_eq!(line, "x_total{k=\"a\\\\b\\\"c\\nd\",plain=\"é\"} 1\n");
            let s = parse_sample(line.trim_end_matches('\n'));
            assert_eq!(s.label("k"), Some(nasty));
        }

        /// HELP text escapes backslash and newline.
        #[test]
        fn help_text_is_escaped() {
            let mut out = Vec::new();
            family(&mut out, "x", Kind::Gauge, "one\\two\nthree").unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "# HELP x one\\\\two\\nthree\n# TYPE x gauge\n"
            );
        }

        /// The checker is strict: it rejects what a scraper would.
        #[test]
        fn the_checker_rejects_broken_output() {
            let broken = [
                "x 1\n",                                          // no HELP/TYPE
                "# HELP x h\n# TYPE x counter\nx 1\n",           // counter without _total
                "# HELP x h\n# TYPE x gauge\nx{a=b} 1\n",        // unquoted label
                "# HELP x h\n# TYPE x gauge\nx  1\n",            // two spaces
                "# HELP x h\n# TYPE x gauge\nx 1\nx 2\n",        // duplicate series
                "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
                "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
                "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 2\nh_sum 1\nh_count 2\n",
                "# HELP x h\n# TYPE x gauge\nx 1\n# HELP y h\n# TYPE y gauge\ny 1\nx{a=\"1\"} 1\n",
            ];
            for (i, text) in broken.into_iter().enumerate() {
                let caught = std::panic::catch_unwind(|| check_exposition(text)).is_err();
                assert!(caught, "case {i} passed the checker:\n{text}");
            }
        }

        /// The output parses with the reference Python client's parser
        /// (`prometheus_client`), when it is installed; skipped otherwise.
        #[test]
        fn the_python_reference_parser_reads_it() {
            let probe = std::process::Command::new("python3")
                .args(["-c", "import prometheus_client.parser"])
                .output();
            if !probe.is_ok_and(|o| o.status.success()) {
                eprintln!(
                    "skipped: python3 with prometheus_client is not available \
                     (python3 -m pip install prometheus_client)"
                );
                return;
            }
            // Prints `name labels value` for each sample it parsed, sorted.
            let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out.append(f"{family.type} {s.name} {labels} {float(s.value)!r}")
print("\n".join(sorted(out)))
"#;
            let input = text(&full_snapshot());
            let mut child = std::process::Command::new("python3")
                .args(["-c", script])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "prometheus_client rejected the output: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let parsed = String::from_utf8(out.stdout).unwrap();
            // Every sample we wrote came back, typed as we declared it.
            let ours = check_exposition(&input);
            assert_eq!(parsed.lines().count(), ours.len(), "{parsed}");
            for expected in [
                "counter netpool_connections_refused_total reason=per_ip 101.0",
                "gauge netpool_listen_queue_depth  6.0",
                "histogram netpool_loop_turn_seconds_bucket le=+Inf,loop=1 6.0",
                "histogram netpool_loop_turn_seconds_sum loop=0 5.000707",
            ] {
                assert!(
                    parsed.lines().any(|l| l == expected),
                    "{expected:?} not in:\n{parsed}"
                );
            }
        }
    }

    /// Every [`CloseReason`] has a label, and labels are distinct.
    #[test]
    fn close_reasons_map_to_distinct_labels() {
        let labels: HashSet<&str> = CloseLabel::ALL.iter().map(|l| l.label()).collect();
        assert_eq!(labels.len(), CloseLabel::ALL.len());
        for (i, l) in CloseLabel::ALL.iter().enumerate() {
            assert_eq!(l.index(), i);
        }
        for (i, r) in RefuseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        assert_eq!(
            CloseLabel::from(CloseReason::Io(io::ErrorKind::BrokenPipe)),
            CloseLabel::Io
        );
        assert_eq!(
            CloseLabel::from(CloseReason::Closed).label(),
            "closed_by_app"
        );
    }
}
