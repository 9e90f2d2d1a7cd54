//! The connection core: one connection's state machine, with no I/O.
//!
//! Like quinn-proto's `Connection`, the core never touches a socket, a poll
//! or the clock. The driver (`reactor/drive.rs`) feeds it *inputs* and acts
//! on its *outputs*:
//!
//! | inputs (`handle_*`) | outputs (`poll_*`) |
//! |---|---|
//! | bytes the socket took, and those it did not ([`Core::handle_sent`]) | bytes to write ([`Core::poll_transmit`]) |
//! | end of stream, a socket error ([`Core::handle_eof`], [`Core::handle_io_error`]) | the readiness to ask for ([`Core::poll_interest`]) |
//! | a close request ([`Core::handle_close`]) | the next deadline ([`Core::poll_deadline`]) |
//! | frames handed to the handler ([`Core::handle_framed`]) | |
//! | a deadline reached ([`Core::handle_timeout`]) | what to do next: shut down writing, or remove ([`Core::poll_action`]) |
//! | our FIN is sent ([`Core::handle_write_shut`]) | |
//!
//! Framing and the handler work on the core too (its incomplete tail, its
//! user state, its output), but only through these same inputs: the
//! pipeline that calls them is in `reactor/serve.rs`. Replies deferred to
//! other threads ([`Conn::defer`](crate::Conn::defer)) are reserved, filled
//! and released in the output itself ([`Outbox`], `ordered.rs`); the core
//! reads from it whether the connection still owes replies. So the whole state
//! machine below is tested without a socket (`mod tests`, grouped by phase)
//! and fuzzed without one (`fuzz/fuzz_targets/connection.rs`).
//!
//! A connection is always in exactly one [`Phase`]; every change goes through
//! [`Core::set_phase`], which traces `old => new`:
//!
//! ```text
//!   ProxyHeader (PROXY protocol on) ── header read ──▶ Handshaking (TLS) or Open
//!    │  bad header, timeout ──▶ Closing (then Closed: the handler never saw it)
//!
//!   Handshaking (TLS only) ── handshake done ──▶ Open
//!    │  timeout, stop, EOF, I/O error ──▶ Closed    (the handler never saw it)
//!    │  TLS error ──▶ Closing (flush the alert)
//!
//!     output > high water, or         output <= low water, and
//!     replies outstanding at the bound  half the bound outstanding
//!   Open ───────────────────────────▶ Throttled ─────────────────▶ Open
//!    │  close(), line too long, stop,                 │
//!    │  peer EOF, idle or frame timeout               │ (same)
//!    ▼                                                ▼
//!   Closing ── output flushed, ──▶ shutdown(Write) ──▶ Lingering ── peer EOF
//!    │         replies delivered
//!    │    (peer already closed: skip lingering)   │        or linger timeout
//!    ▼                                            ▼
//!   Closed ◀──── reset, I/O error, output overflow, write stall, panic (at once)
//! ```
//!
//! # Accounting
//!
//! The core holds the connection's budget [`Slot`] and its per-address
//! [`IpPlace`] as values. It drops the slot the moment it enters
//! `Lingering` (a lingering connection is no longer served, only waiting for
//! the peer to hang up, and must not keep a waiting client out) or when the
//! handler gives it back early; dropping it is what gives it back. Nothing
//! counts slots by hand.

mod ordered;
mod outbox;
mod phase;

use std::io;
use std::net::SocketAddr;

use mio::Interest;

use crate::base::close::CloseReason;
use crate::base::id::ConnId;
use crate::base::time::Millis;
use crate::budget::Slot;
use crate::framing::Remainder;
use crate::limits::IpPlace;
use ordered::Fill;

pub(crate) use outbox::Outbox;
pub(crate) use phase::Phase;

/// The timeouts that apply to every connection, in milliseconds (`None` off).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timeouts {
    pub(crate) idle: Option<Millis>,
    /// How long a frame may take from its first byte to its end.
    pub(crate) frame: Option<Millis>,
    pub(crate) write_stall: Option<Millis>,
    pub(crate) linger: Millis,
    pub(crate) proxy_header: Millis,
}

/// Which timeout came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timeout {
    ProxyHeader,
    Idle,
    Frame,
    WriteStall,
    Linger,
}

/// What the driver must do for the connection next, besides reading and
/// writing as [`Core::poll_interest`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing beyond reading and writing.
    Serve,
    /// Every reply is with the kernel: shut down writing (our FIN goes after
    /// them), then report it with [`Core::handle_write_shut`].
    ShutWrite,
    /// Done: remove the connection (closing the socket).
    Remove,
}

/// `Core::timer_at` when the connection has no entry in the loop's timer heap.
pub(crate) const NO_TIMER: Millis = Millis::MAX;

/// One connection's state: phase, buffers, clocks, tokens and the user's
/// state. Its socket and transport live beside it in the driver's
/// `Connection`.
#[derive(Debug)]
pub(crate) struct Core<S> {
    pub(crate) id: ConnId,
    /// The client's address: the socket's peer, or with the PROXY protocol,
    /// the address the header names.
    pub(crate) peer: SocketAddr,
    /// With the PROXY protocol, the proxy's own address (the socket's peer).
    /// Boxed: eight bytes for the connections that have none.
    pub(crate) proxy: Option<Box<SocketAddr>>,
    phase: Phase,
    /// Whether the handler has heard of this connection (`on_connect`), and
    /// so must hear of its end.
    pub(crate) announced: bool,
    /// The readiness the driver last registered the socket for, so that it
    /// re-registers only on change. The driver's record, kept here because
    /// it fits in the core's padding: eight bytes less per connection than
    /// beside the socket.
    pub(crate) registered: Interest,
    /// The incomplete last frame and when it started, or the PROXY header
    /// gathered so far; see `framing/`. Eight bytes, no allocation while
    /// empty.
    pub(crate) partial: Remainder,
    /// Wire bytes the socket has not taken yet, and the replies deferred to
    /// other threads that it still owes, with what was sent after them.
    pub(crate) out: Outbox,
    /// What admission gave it: its acceptor slot and address place.
    pub(crate) held: Held,
    /// When a complete line arrived or output made progress: the idle
    /// clock. A trickle of bytes without a newline does not move it, which
    /// is what defeats slowloris. While a TLS handshake is under way (no
    /// idle clock runs), when handshake bytes last arrived: how long the
    /// handshake has stalled, when the loop must give one up for a place.
    pub(crate) last_active: Millis,
    /// When output last made progress, or started waiting; in `Lingering`,
    /// when lingering began. The write-stall and linger clocks.
    pub(crate) last_progress: Millis,
    /// The wake-up time this connection has in the loop's timer heap, or
    /// [`NO_TIMER`] (a sentinel rather than an `Option`: eight bytes less
    /// per connection, and "is the new deadline earlier?" stays one
    /// comparison).
    pub(crate) timer_at: Millis,
    pub(crate) state: S,
}

/// What admission gave a connection, held while it is served and given
/// back by dropping (see `# Accounting`).
#[derive(Debug)]
pub(crate) struct Held {
    /// The acceptor slot; `None` once given back.
    slot: Option<Slot>,
    /// The place under the per-address cap, if the cap is on. Boxed: eight
    /// bytes for a server without the cap.
    place: Option<Box<IpPlace>>,
}

impl Held {
    /// True while the connection counts against the accept budget.
    #[inline]
    pub(crate) fn holds_slot(&self) -> bool {
        self.slot.is_some()
    }

    /// Takes `place` under the per-address cap: the client's, once a PROXY
    /// header has named it (until then the connection holds none).
    pub(crate) fn hold_place(&mut self, place: Option<IpPlace>) {
        self.place = place.map(Box::new);
    }

    /// Gives the slot and the address place back, once: the connection no
    /// longer counts against either (lingering, or
    /// [`Conn::release_slot`](crate::Conn::release_slot)). Again, nothing.
    pub(crate) fn release(&mut self) {
        self.slot = None;
        self.place = None;
    }
}

/// Where a new connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Serving lines at once.
    Open,
    /// A TLS handshake first.
    Handshake,
    /// A PROXY protocol header first (then, with TLS, the handshake).
    ProxyHeader,
}

impl<S: Default> Core<S> {
    /// A connection just admitted, holding `slot` (and `place`, with the
    /// per-address cap on).
    pub(crate) fn new(
        id: ConnId,
        peer: SocketAddr,
        now: Millis,
        start: Start,
        slot: Slot,
        place: Option<IpPlace>,
    ) -> Self {
        Core {
            id,
            peer,
            proxy: None,
            phase: match start {
                Start::Open => Phase::Open,
                Start::Handshake => Phase::Handshaking,
                Start::ProxyHeader => Phase::ProxyHeader,
            },
            announced: false,
            registered: Interest::READABLE,
            partial: Remainder::default(),
            out: Outbox::default(),
            held: Held {
                slot: Some(slot),
                place: place.map(Box::new),
            },
            last_active: now,
            last_progress: now,
            timer_at: NO_TIMER,
            state: S::default(),
        }
    }
}

impl<S> Core<S> {
    #[inline]
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// The one place a phase changes. Leaving service (lingering, closed)
    /// gives the acceptor slot back: dropping the token is what does it.
    #[inline]
    pub(crate) fn set_phase(&mut self, next: Phase) {
        if self.phase != next {
            log::trace!("{} {}: {} => {}", self.id, self.peer, self.phase, next);
            self.phase = next;
            if matches!(next, Phase::Lingering { .. } | Phase::Closed { .. }) {
                self.held.release();
            }
        }
    }

    // ----- Inputs ------------------------------------------------------------

    /// Begins closing for `reason` (`peer_gone`: the peer can send nothing
    /// more, so there is no point lingering). Graceful reasons flush first;
    /// the others close at once. A connection already closing keeps its
    /// first reason, except that an abortive reason cuts a graceful close
    /// short. An unfinished TLS handshake has no replies to flush: it closes
    /// at once, unless there is an alert to deliver.
    pub(crate) fn handle_close(&mut self, reason: CloseReason, peer_gone: bool) {
        let next = if !reason.is_graceful() {
            Phase::Closed { reason }
        } else {
            match self.phase {
                Phase::Handshaking if reason.flushes_during_handshake() => Phase::Closing {
                    reason,
                    linger: !peer_gone,
                },
                Phase::Handshaking => Phase::Closed { reason },
                Phase::ProxyHeader | Phase::Open | Phase::Throttled => Phase::Closing {
                    reason,
                    linger: !peer_gone,
                },
                _ => return,
            }
        };
        if !matches!(self.phase, Phase::Closed { .. }) {
            self.set_phase(next);
        }
    }

    /// A socket call failed: the connection closes at once (a reset), or
    /// after flushing what it can for any other error.
    pub(crate) fn handle_io_error(&mut self, e: &io::Error) {
        self.handle_close(CloseReason::from_io(e), true);
    }

    /// The peer closed its side. An open connection has handled every
    /// complete line already; it flushes and closes. A lingering one was
    /// waiting for exactly this.
    pub(crate) fn handle_eof(&mut self) {
        match self.phase {
            Phase::Lingering { reason } => self.set_phase(Phase::Closed { reason }),
            _ => {
                if !self.partial.is_empty() && self.phase != Phase::ProxyHeader {
                    log::debug!(
                        "{} {}: {} bytes without a newline dropped at end of stream",
                        self.id,
                        self.peer,
                        self.partial.len()
                    );
                }
                self.handle_close(CloseReason::PeerClosed, true);
            }
        }
    }

    /// `data` was offered to the socket and it took `written` bytes; the
    /// rest waits in the output queue. `data` is new output (not the queue
    /// itself: see [`handle_flushed`](Core::handle_flushed)).
    #[inline]
    pub(crate) fn handle_sent(&mut self, data: &[u8], written: usize, now: Millis) {
        // Progress, or the moment output starts to wait: either way the
        // stall clock starts from now.
        self.last_progress = now;
        if written > 0 {
            self.last_active = now;
        }
        if written < data.len() {
            self.out.append(&data[written..]);
        }
    }

    /// The socket took `written` bytes of the output queue.
    #[inline]
    pub(crate) fn handle_flushed(&mut self, written: usize, now: Millis) {
        self.out.advance(written);
        if written > 0 {
            self.last_active = now;
            self.last_progress = now;
        }
    }

    /// Applies the backpressure marks after the output changed, and the
    /// bound on replies outstanding (`max_replies`: reading stops at it and
    /// resumes at half of it, so that a connection at the bound does not
    /// flip between reading and not reading with every reply). Returns true
    /// when reading resumes, so the driver reads what waited in the kernel
    /// (no new edge will announce it).
    ///
    /// While throttled, the server chose not to read: the incomplete frame,
    /// if any, could not complete, so its clock starts again when reading
    /// resumes, at `now`.
    #[inline]
    pub(crate) fn handle_output_level(
        &mut self,
        low: usize,
        high: usize,
        max_replies: usize,
        now: Millis,
    ) -> bool {
        match self.phase {
            Phase::Open if self.out.above(high, max_replies) => {
                self.set_phase(Phase::Throttled);
                false
            }
            Phase::Throttled if self.out.below(low, max_replies / 2) => {
                self.set_phase(Phase::Open);
                self.partial.note_start(now, true);
                true
            }
            _ => false,
        }
    }

    /// The framing handed `frames` complete frames to the handler at `now`,
    /// and left the rest in [`partial`](Core::partial). A complete frame is
    /// activity (the idle clock), and whatever tail is left started in this
    /// read (the frame clock), as does a tail that is new; a tail with no
    /// frame completed keeps its start, so that a trickle of bytes that
    /// never ends its frame is neither activity nor progress.
    #[inline]
    pub(crate) fn handle_framed(&mut self, frames: u64, now: Millis) {
        if frames > 0 {
            self.last_active = now;
        }
        self.partial.note_start(now, frames > 0);
    }

    /// Whether the connection still takes output from other threads. (None
    /// can reach it before the PROXY header is in and the handshake done; a
    /// lingering or closed one has shut its write side.)
    #[inline]
    pub(crate) fn takes_output(&self) -> bool {
        matches!(
            self.phase,
            Phase::Open | Phase::Throttled | Phase::Closing { .. }
        )
    }

    /// Bytes sent from another thread, for the end of the output. True when
    /// they may leave now (the driver seals and queues them); false when
    /// they wait behind a deferred reply (taken), or are refused: the
    /// connection no longer writes, or they would pass `output_limit`
    /// (then it closes, as a handler's send would).
    pub(crate) fn handle_send(&mut self, data: &[u8], output_limit: usize) -> bool {
        if !self.takes_output() {
            return false;
        }
        if self.out.len() + data.len() > output_limit {
            self.handle_close(CloseReason::OutputOverflow, true);
            return false;
        }
        !self.out.hold(data)
    }

    /// Reply slot `seq` was filled from another thread (an empty reply for
    /// a slot dropped unfilled). Returns the plaintext this lets go, in
    /// order (the replies at the front and what followed them), for the
    /// driver to seal and queue; `None` while an earlier slot is unfilled,
    /// or when the reply is refused as a send would be.
    pub(crate) fn handle_fill(
        &mut self,
        seq: u64,
        reply: Vec<u8>,
        output_limit: usize,
    ) -> Option<Vec<u8>> {
        if !self.takes_output() {
            return None;
        }
        if self.out.len() + reply.len() > output_limit {
            self.handle_close(CloseReason::OutputOverflow, true);
            return None;
        }
        if self.out.fill(seq, reply) == Fill::Unknown {
            // Each slot sends exactly one fill, before its place can be
            // released: this cannot happen while the connection lives.
            log::debug!(
                "{} {}: fill of unknown reply slot {seq}",
                self.id,
                self.peer
            );
            return None;
        }
        self.out.take_ready()
    }

    /// The shutdown the core asked for ([`Action::ShutWrite`]) is done: our
    /// FIN is on its way after the replies. Linger until the peer closes.
    /// If the shutdown failed, there is nothing to linger for: closed.
    pub(crate) fn handle_write_shut(&mut self, result: io::Result<()>, now: Millis) {
        if let Phase::Closing { reason, .. } = self.phase {
            match result {
                Ok(()) => {
                    self.set_phase(Phase::Lingering { reason });
                    self.last_progress = now;
                }
                Err(_) => self.set_phase(Phase::Closed { reason }),
            }
        }
    }

    /// A deadline came due: the timeout that applies at `now`, if any,
    /// takes effect. Returns it, for the driver's counters and logs.
    pub(crate) fn handle_timeout(&mut self, now: Millis, t: &Timeouts) -> Option<Timeout> {
        let (at, timeout) = self.poll_deadline(t)?;
        if at > now {
            return None; // activity moved the deadline
        }
        log::debug!("{} {}: {timeout:?} timeout", self.id, self.peer);
        match (timeout, self.phase) {
            // A connection that is owed replies (`Conn::defer`) is waiting
            // for us, not idle: its clock starts again. (Checked here, when
            // the timer fires, rather than in `poll_deadline`, which runs
            // after every event.)
            (Timeout::Idle, _) if self.out.outstanding() > 0 => {
                self.last_active = now;
                return None;
            }
            (Timeout::Idle, _) => self.handle_close(CloseReason::IdleTimeout, false),
            (Timeout::Frame, _) => self.handle_close(CloseReason::FrameTimeout, false),
            (Timeout::WriteStall, _) => self.handle_close(CloseReason::WriteStalled, true),
            (Timeout::Linger, Phase::Lingering { reason }) => {
                self.set_phase(Phase::Closed { reason })
            }
            (Timeout::Linger, _) => {}
            (Timeout::ProxyHeader, _) => self.handle_close(CloseReason::BadProxyHeader, true),
        }
        Some(timeout)
    }

    // ----- Outputs -----------------------------------------------------------

    /// The wire bytes to write next.
    #[inline]
    pub(crate) fn poll_transmit(&self) -> &[u8] {
        self.out.pending()
    }

    /// The readiness this phase needs, or `None` when the socket needs no
    /// events at all (closed, or about to be).
    #[inline]
    pub(crate) fn poll_interest(&self) -> Option<Interest> {
        let writing = self.out.has_wire();
        match self.phase {
            Phase::Open | Phase::Handshaking if writing => {
                Some(Interest::READABLE | Interest::WRITABLE)
            }
            Phase::ProxyHeader | Phase::Open | Phase::Handshaking | Phase::Lingering { .. } => {
                Some(Interest::READABLE)
            }
            Phase::Throttled | Phase::Closing { .. } if writing => Some(Interest::WRITABLE),
            // Nothing to read or write until another thread fills a reply
            // (that news comes through the waker): a writable registration
            // says so quietly, once, and then not again until we write.
            Phase::Throttled | Phase::Closing { .. } if self.out.outstanding() > 0 => {
                Some(Interest::WRITABLE)
            }
            // A closing connection with nothing to write is finished on the
            // spot (`poll_action`); a throttled one always has output or
            // replies outstanding.
            Phase::Throttled | Phase::Closing { .. } => None,
            Phase::Closed { .. } => None,
        }
    }

    /// What to do next. A closing connection whose output has drained, and
    /// whose deferred replies are all delivered, either shuts down writing
    /// and lingers, or, when the peer has closed
    /// already (`linger` false: its end of stream was read, so no input is
    /// left unread), closes at once: closing the descriptor sends the FIN by
    /// itself, and a `shutdown` first would be one more system call per
    /// connection for nothing.
    #[inline]
    pub(crate) fn poll_action(&mut self) -> Action {
        match self.phase {
            Phase::Closing { reason, linger } if self.out.is_empty() => {
                if linger {
                    Action::ShutWrite
                } else {
                    self.set_phase(Phase::Closed { reason });
                    Action::Remove
                }
            }
            Phase::Closed { .. } => Action::Remove,
            _ => Action::Serve,
        }
    }

    /// The next timeout this connection can meet, given its phase and
    /// clocks; `None` when no timeout applies.
    #[inline]
    pub(crate) fn poll_deadline(&self, t: &Timeouts) -> Option<(Millis, Timeout)> {
        let stall = match t.write_stall {
            Some(stall) if self.out.has_wire() => {
                Some((self.last_progress + stall, Timeout::WriteStall))
            }
            _ => None,
        };
        match self.phase {
            // `last_active` is the accept time until the header is in.
            Phase::ProxyHeader => Some((self.last_active + t.proxy_header, Timeout::ProxyHeader)),
            // A frame that has started must end in time (slowloris); a
            // connection that sends nothing has no frame and no deadline. No
            // frame clock while throttled: the server is not reading.
            Phase::Open | Phase::Throttled => {
                let idle = t.idle.map(|idle| (self.last_active + idle, Timeout::Idle));
                let frame = match (t.frame, self.phase) {
                    (Some(frame), Phase::Open) => self
                        .partial
                        .started_at()
                        .map(|since| (since + frame, Timeout::Frame)),
                    _ => None,
                };
                [idle, stall, frame].into_iter().flatten().min()
            }
            // A handshake's own deadline is kept by the loop (a FIFO: every
            // handshake has the same timeout and it never moves).
            Phase::Handshaking | Phase::Closing { .. } => stall,
            Phase::Lingering { .. } => Some((self.last_progress + t.linger, Timeout::Linger)),
            Phase::Closed { .. } => None,
        }
    }

    /// Why the connection ended (or is ending); a connection removed while
    /// still serving was stopped.
    pub(crate) fn close_reason(&self) -> CloseReason {
        match self.phase {
            Phase::Closed { reason }
            | Phase::Lingering { reason }
            | Phase::Closing { reason, .. } => reason,
            Phase::Open | Phase::Throttled | Phase::ProxyHeader | Phase::Handshaking => {
                CloseReason::Stopped
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{Admission, Budget, Overflow};
    use std::sync::Arc;

    /// A budget of `n` slots for the tests' connections.
    fn budget(n: usize) -> Arc<Budget> {
        Arc::new(Budget::new(n, Overflow::Refuse, 1))
    }

    fn core_on(budget: &Arc<Budget>, start: Start) -> Core<()> {
        let Admission::Serve(slot) = budget.try_acquire() else {
            panic!("no slot left in the test budget");
        };
        Core::new(
            ConnId(1),
            "127.0.0.1:9".parse().unwrap(),
            0,
            start,
            slot,
            None,
        )
    }

    /// A plaintext connection, open, on a budget of its own.
    fn core() -> Core<()> {
        core_on(&budget(1), Start::Open)
    }

    fn tls_core() -> Core<()> {
        core_on(&budget(1), Start::Handshake)
    }

    /// An idle connection's whole cost in user memory is its slab entry:
    /// this guards the headline figure (RSS per idle connection) against a
    /// field added without thought. (The socket and the plaintext
    /// transport, a zero-sized type, add 4 bytes in a release build, 16 in
    /// a debug one, in the driver's `Connection`: see its own test.)
    #[test]
    fn the_core_stays_small() {
        let size = std::mem::size_of::<Core<()>>();
        assert!(size <= 120, "Core<()> grew to {size} bytes");
    }

    mod accounting {
        use super::*;

        #[test]
        fn lingering_gives_the_slot_back_once() {
            let b = budget(1);
            let mut c = core_on(&b, Start::Open);
            assert_eq!(b.active(), 1);
            c.handle_close(CloseReason::Closed, false);
            assert_eq!(c.poll_action(), Action::ShutWrite);
            assert_eq!(b.active(), 1, "still serving until our FIN is out");
            c.handle_write_shut(Ok(()), 5);
            assert!(!c.held.holds_slot());
            assert_eq!(b.active(), 0, "a lingering connection keeps nobody out");
            c.handle_eof();
            assert_eq!(c.poll_action(), Action::Remove);
            drop(c);
            assert_eq!(b.active(), 0, "and it is not given back twice");
        }

        #[test]
        fn an_abortive_close_gives_the_slot_back_at_once() {
            let b = budget(1);
            let mut c = core_on(&b, Start::Open);
            c.handle_io_error(&io::ErrorKind::ConnectionReset.into());
            assert_eq!(c.close_reason(), CloseReason::Reset);
            assert_eq!(b.active(), 0);
        }

        #[test]
        fn releasing_early_keeps_serving() {
            let b = budget(1);
            let mut c = core_on(&b, Start::Open);
            c.held.release();
            c.held.release();
            assert_eq!(b.active(), 0);
            assert_eq!(c.phase(), Phase::Open);
            assert_eq!(c.poll_interest(), Some(Interest::READABLE));
        }

        #[test]
        fn dropping_a_connection_anywhere_gives_the_slot_back() {
            let b = budget(2);
            let c1 = core_on(&b, Start::Handshake);
            let c2 = core_on(&b, Start::ProxyHeader);
            assert_eq!(b.active(), 2);
            drop((c1, c2));
            assert_eq!(b.active(), 0);
        }
    }

    mod proxy_header {
        use super::*;

        #[test]
        fn a_bad_header_closes_without_lingering_long() {
            let mut c = core_on(&budget(1), Start::ProxyHeader);
            assert_eq!(c.poll_interest(), Some(Interest::READABLE));
            c.handle_close(CloseReason::BadProxyHeader, true);
            assert_eq!(c.poll_action(), Action::Remove);
            assert_eq!(c.close_reason(), CloseReason::BadProxyHeader);
        }
    }

    mod handshaking {
        use super::*;

        #[test]
        fn a_handshake_reads_and_writes_its_flight() {
            let mut c = tls_core();
            assert_eq!(c.poll_interest(), Some(Interest::READABLE));
            c.handle_sent(b"server hello", 0, 0);
            assert_eq!(
                c.poll_interest(),
                Some(Interest::READABLE | Interest::WRITABLE)
            );
            assert_eq!(c.poll_transmit(), b"server hello");
        }

        #[test]
        fn backpressure_does_not_apply_to_a_handshake() {
            let mut c = tls_core();
            c.handle_sent(&[0; 10], 0, 0);
            assert!(!c.handle_output_level(2, 8, 128, 0));
            assert_eq!(c.phase(), Phase::Handshaking);
        }

        #[test]
        fn a_stop_or_eof_ends_a_handshake_at_once() {
            for reason in [CloseReason::Stopped, CloseReason::PeerClosed] {
                let mut c = tls_core();
                c.handle_sent(b"flight", 0, 0);
                c.handle_close(reason, false);
                assert_eq!(c.phase(), Phase::Closed { reason });
                assert_eq!(c.poll_interest(), None);
                assert_eq!(c.poll_action(), Action::Remove);
            }
        }

        #[test]
        fn a_tls_error_flushes_its_alert_and_lingers() {
            let mut c = tls_core();
            c.handle_sent(b"alert", 0, 0);
            c.handle_close(CloseReason::Tls, false);
            assert_eq!(
                c.phase(),
                Phase::Closing {
                    reason: CloseReason::Tls,
                    linger: true
                }
            );
            assert_eq!(c.poll_interest(), Some(Interest::WRITABLE));
            assert_eq!(c.poll_action(), Action::Serve, "the alert is still out");
            c.handle_flushed(5, 1);
            assert_eq!(c.poll_action(), Action::ShutWrite);
        }

        #[test]
        fn a_timeout_closes_at_once() {
            let mut c = tls_core();
            c.handle_close(CloseReason::HandshakeTimeout, false);
            assert_eq!(
                c.phase(),
                Phase::Closed {
                    reason: CloseReason::HandshakeTimeout
                }
            );
        }
    }

    mod open {
        use super::*;

        #[test]
        fn reads_and_writes_only_when_output_waits() {
            let mut c = core();
            assert_eq!(c.poll_interest(), Some(Interest::READABLE));
            c.handle_sent(b"xy", 1, 0);
            assert_eq!(c.poll_transmit(), b"y", "what the socket did not take");
            assert_eq!(
                c.poll_interest(),
                Some(Interest::READABLE | Interest::WRITABLE)
            );
            c.handle_flushed(1, 1);
            assert_eq!(c.poll_interest(), Some(Interest::READABLE));
        }

        #[test]
        fn high_water_throttles_and_low_water_resumes() {
            let mut c = core();
            c.handle_sent(&[0; 10], 0, 0);
            assert!(!c.handle_output_level(2, 8, 128, 0));
            assert_eq!(c.phase(), Phase::Throttled);
            assert_eq!(c.poll_interest(), Some(Interest::WRITABLE));
            c.handle_flushed(7, 1);
            assert!(
                !c.handle_output_level(2, 8, 128, 1),
                "3 bytes is still above low water"
            );
            c.handle_flushed(1, 2);
            assert!(
                c.handle_output_level(2, 8, 128, 2),
                "resuming asks for a read"
            );
            assert_eq!(c.phase(), Phase::Open);
        }

        #[test]
        fn end_of_stream_flushes_then_closes_without_lingering() {
            let mut c = core();
            c.handle_sent(b"reply", 0, 0);
            c.handle_eof();
            assert_eq!(c.poll_action(), Action::Serve, "the reply first");
            c.handle_flushed(5, 1);
            assert_eq!(c.poll_action(), Action::Remove);
            assert_eq!(c.close_reason(), CloseReason::PeerClosed);
        }
    }

    mod closing {
        use super::*;

        #[test]
        fn graceful_close_lingers_unless_the_peer_is_gone() {
            let mut c = core();
            c.handle_close(CloseReason::Closed, false);
            assert_eq!(
                c.phase(),
                Phase::Closing {
                    reason: CloseReason::Closed,
                    linger: true
                }
            );
            let mut c = core();
            c.handle_close(CloseReason::PeerClosed, true);
            assert_eq!(
                c.phase(),
                Phase::Closing {
                    reason: CloseReason::PeerClosed,
                    linger: false
                }
            );
        }

        #[test]
        fn the_first_graceful_reason_wins() {
            let mut c = core();
            c.handle_close(CloseReason::LineTooLong, false);
            c.handle_close(CloseReason::Stopped, false);
            assert_eq!(c.close_reason(), CloseReason::LineTooLong);
        }

        #[test]
        fn an_abortive_reason_cuts_a_graceful_close_short() {
            let mut c = core();
            c.handle_sent(b"unsent", 0, 0);
            c.handle_close(CloseReason::Closed, false);
            c.handle_close(CloseReason::Reset, false);
            assert_eq!(
                c.phase(),
                Phase::Closed {
                    reason: CloseReason::Reset
                }
            );
            assert_eq!(c.poll_interest(), None);
        }

        #[test]
        fn closing_only_writes() {
            let mut c = core();
            c.handle_sent(b"bye", 0, 0);
            c.handle_close(CloseReason::Stopped, false);
            assert_eq!(c.poll_interest(), Some(Interest::WRITABLE));
            c.handle_flushed(3, 1);
            assert_eq!(c.poll_interest(), None);
            assert_eq!(c.poll_action(), Action::ShutWrite);
        }
    }

    mod timeouts {
        use super::*;

        const T: Timeouts = Timeouts {
            idle: Some(100),
            frame: None,
            write_stall: Some(30),
            linger: 20,
            proxy_header: 50,
        };

        #[test]
        fn a_proxy_header_must_arrive_in_time() {
            let b = budget(1);
            let Admission::Serve(slot) = b.try_acquire() else {
                panic!()
            };
            let mut c: Core<()> = Core::new(
                ConnId(2),
                "127.0.0.1:9".parse().unwrap(),
                5,
                Start::ProxyHeader,
                slot,
                None,
            );
            assert_eq!(c.poll_deadline(&T), Some((55, Timeout::ProxyHeader)));
            assert_eq!(c.handle_timeout(54, &T), None, "not yet");
            assert_eq!(c.handle_timeout(55, &T), Some(Timeout::ProxyHeader));
            assert_eq!(c.close_reason(), CloseReason::BadProxyHeader);
        }

        #[test]
        fn an_idle_open_connection_times_out_after_idle() {
            let mut c = core();
            c.last_active = 50;
            assert_eq!(c.poll_deadline(&T), Some((150, Timeout::Idle)));
            let off = Timeouts { idle: None, ..T };
            assert_eq!(c.poll_deadline(&off), None, "nothing applies");
            assert_eq!(c.handle_timeout(150, &T), Some(Timeout::Idle));
            assert_eq!(c.close_reason(), CloseReason::IdleTimeout);
        }

        #[test]
        fn activity_moves_the_deadline() {
            let mut c = core();
            c.handle_sent(b"x", 1, 90);
            assert_eq!(c.handle_timeout(100, &T), None, "active at 90");
            assert_eq!(c.phase(), Phase::Open);
        }

        #[test]
        fn waiting_output_adds_the_write_stall_clock() {
            let mut c = core();
            c.handle_sent(b"x", 0, 10);
            assert_eq!(c.poll_deadline(&T), Some((40, Timeout::WriteStall)));
            c.handle_close(CloseReason::Closed, false);
            assert_eq!(
                c.poll_deadline(&T),
                Some((40, Timeout::WriteStall)),
                "closing: only the stall"
            );
            assert_eq!(c.handle_timeout(40, &T), Some(Timeout::WriteStall));
            assert_eq!(c.poll_action(), Action::Remove, "the output is dropped");
        }

        /// The defaults' shape: no idle timeout, a frame bound.
        const FRAME: Timeouts = Timeouts {
            idle: None,
            frame: Some(100),
            ..T
        };

        /// Bytes of a frame arrive at `now` and no frame ends, as the
        /// framing leaves them.
        fn trickle(c: &mut Core<()>, bytes: &[u8], now: Millis) {
            c.partial.extend(bytes, 1024);
            c.handle_framed(0, now);
        }

        #[test]
        fn a_silent_connection_has_no_deadline() {
            let c = core();
            assert_eq!(c.poll_deadline(&FRAME), None, "it keeps its place");
        }

        #[test]
        fn a_started_frame_must_end_in_time_however_it_trickles() {
            let mut c = core();
            trickle(&mut c, b"GET", 10);
            assert_eq!(c.poll_deadline(&FRAME), Some((110, Timeout::Frame)));
            trickle(&mut c, b" /", 60);
            trickle(&mut c, b"x", 109);
            assert_eq!(
                c.poll_deadline(&FRAME),
                Some((110, Timeout::Frame)),
                "bytes without the frame's end move nothing"
            );
            assert_eq!(c.handle_timeout(109, &FRAME), None);
            assert_eq!(c.handle_timeout(110, &FRAME), Some(Timeout::Frame));
            assert_eq!(
                c.phase(),
                Phase::Closing {
                    reason: CloseReason::FrameTimeout,
                    linger: true
                },
                "graceful: replies to earlier frames go first"
            );
        }

        #[test]
        fn a_frame_that_ends_stops_the_clock_and_the_next_starts_its_own() {
            let mut c = core();
            trickle(&mut c, b"one", 10);
            // The frame ends at 50 and the next one starts in the same read.
            c.partial.clear();
            c.partial.extend(b"tw", 1024);
            c.handle_framed(1, 50);
            assert_eq!(c.poll_deadline(&FRAME), Some((150, Timeout::Frame)));
            // It ends too, and nothing follows: no deadline.
            c.partial.clear();
            c.handle_framed(1, 70);
            assert_eq!(c.poll_deadline(&FRAME), None);
        }

        #[test]
        fn no_frame_clock_while_the_server_is_not_reading() {
            let mut c = core();
            trickle(&mut c, b"half", 10);
            c.handle_sent(&[0; 10], 0, 20);
            assert!(!c.handle_output_level(2, 8, 128, 20));
            assert_eq!(c.phase(), Phase::Throttled);
            let no_stall = Timeouts {
                write_stall: None,
                ..FRAME
            };
            assert_eq!(c.poll_deadline(&no_stall), None, "throttled");
            c.handle_flushed(10, 500);
            assert!(c.handle_output_level(2, 8, 128, 500));
            assert_eq!(
                c.poll_deadline(&no_stall),
                Some((600, Timeout::Frame)),
                "the frame's clock starts again when reading resumes"
            );
        }

        #[test]
        fn lingering_is_bounded_by_linger() {
            let mut c = core();
            c.handle_close(CloseReason::Closed, false);
            assert_eq!(c.poll_action(), Action::ShutWrite);
            c.handle_write_shut(Ok(()), 7);
            assert_eq!(c.poll_deadline(&T), Some((27, Timeout::Linger)));
            assert_eq!(c.handle_timeout(27, &T), Some(Timeout::Linger));
            assert_eq!(c.poll_action(), Action::Remove);
            assert_eq!(c.close_reason(), CloseReason::Closed);
        }
    }

    /// Replies deferred to other threads (`Conn::defer`), as the core sees
    /// them: outstanding replies keep a connection from finishing, and count
    /// toward backpressure.
    mod deferred {
        use super::*;

        /// Reserves one reply, as a handler call would, with `after` sent
        /// behind it; returns its number.
        fn defer(c: &mut Core<()>, after: &[u8]) -> u64 {
            let mut out = Vec::new();
            let seq = c.out.reserve(0);
            out.extend_from_slice(after);
            c.out.settle(&mut out, 0);
            assert!(out.is_empty(), "it all waits behind the reply");
            seq
        }

        #[test]
        fn the_bound_on_outstanding_replies_throttles_and_half_resumes() {
            let mut c = core();
            let seqs: Vec<u64> = (0..4).map(|_| defer(&mut c, b"")).collect();
            assert!(!c.handle_output_level(100, 1000, 4, 0));
            assert_eq!(c.phase(), Phase::Throttled);
            assert_eq!(
                c.poll_interest(),
                Some(Interest::WRITABLE),
                "quiet: nothing to read or write"
            );
            c.out.fill(seqs[0], b"a".to_vec());
            c.out.take_ready();
            assert!(!c.handle_output_level(100, 1000, 4, 0), "3 outstanding");
            c.out.fill(seqs[1], b"b".to_vec());
            c.out.take_ready();
            assert!(c.handle_output_level(100, 1000, 4, 0), "2: half the bound");
            assert_eq!(c.phase(), Phase::Open);
        }

        #[test]
        fn held_bytes_count_toward_high_water() {
            let mut c = core();
            defer(&mut c, &[0; 10]);
            assert_eq!(c.out.len(), 10);
            assert!(!c.handle_output_level(2, 8, 128, 0));
            assert_eq!(c.phase(), Phase::Throttled);
        }

        #[test]
        fn closing_waits_for_outstanding_replies() {
            let mut c = core();
            let seq = defer(&mut c, b"");
            c.handle_close(CloseReason::Stopped, false);
            assert_eq!(c.poll_action(), Action::Serve, "a reply is owed");
            assert_eq!(c.poll_interest(), Some(Interest::WRITABLE));
            c.out.fill(seq, b"late".to_vec());
            let mut ready = c.out.take_ready().unwrap();
            c.out.push_wire(&mut ready);
            assert_eq!(c.poll_action(), Action::Serve, "and written");
            c.handle_flushed(4, 1);
            assert_eq!(c.poll_action(), Action::ShutWrite);
        }

        #[test]
        fn a_peer_that_half_closed_still_gets_its_replies() {
            let mut c = core();
            let seq = defer(&mut c, b"");
            c.handle_eof();
            assert_eq!(c.poll_action(), Action::Serve);
            c.out.fill(seq, Vec::new());
            assert_eq!(c.out.take_ready(), None, "a dropped slot: nothing to send");
            assert_eq!(c.poll_action(), Action::Remove);
            assert_eq!(c.close_reason(), CloseReason::PeerClosed);
        }

        #[test]
        fn an_abortive_close_drops_them() {
            let mut c = core();
            defer(&mut c, b"");
            c.handle_io_error(&io::ErrorKind::ConnectionReset.into());
            assert_eq!(c.poll_action(), Action::Remove);
        }

        #[test]
        fn waiting_for_a_reply_is_neither_idle_nor_a_write_stall() {
            let t = Timeouts {
                idle: Some(100),
                frame: None,
                write_stall: Some(30),
                linger: 20,
                proxy_header: 50,
            };
            let mut c = core();
            defer(&mut c, b"held");
            assert_eq!(
                c.poll_deadline(&t),
                Some((100, Timeout::Idle)),
                "no stall: nothing waits for the peer"
            );
            assert_eq!(c.handle_timeout(100, &t), None, "owed a reply: not idle");
            assert_eq!(c.phase(), Phase::Open);
            assert_eq!(c.poll_deadline(&t), Some((200, Timeout::Idle)));
            c.handle_sent(b"x", 0, 110);
            assert_eq!(
                c.poll_deadline(&t),
                Some((140, Timeout::WriteStall)),
                "wire bytes the peer does not take still stall"
            );
            c.handle_flushed(1, 150);
            c.out.fill(0, Vec::new());
            c.out.take_ready();
            assert_eq!(c.poll_deadline(&t), Some((250, Timeout::Idle)));
            assert_eq!(c.handle_timeout(250, &t), Some(Timeout::Idle));
            assert_eq!(
                c.close_reason(),
                CloseReason::IdleTimeout,
                "nothing owed now"
            );
        }
    }

    mod lingering {
        use super::*;

        #[test]
        fn lingering_reads_to_see_the_peer_close() {
            let mut c = core();
            c.handle_close(CloseReason::Closed, false);
            c.handle_write_shut(Ok(()), 0);
            assert_eq!(c.poll_interest(), Some(Interest::READABLE));
            c.handle_close(CloseReason::Stopped, false);
            assert!(
                matches!(c.phase(), Phase::Lingering { .. }),
                "a stop does not restart a close"
            );
            c.handle_eof();
            assert_eq!(c.poll_action(), Action::Remove);
        }
    }
}
