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
//! machine below is tested without a socket (`tests.rs`, grouped by phase)
//! and fuzzed without one (`fuzz/fuzz_targets/connection.rs`).
//!
//! A connection is always in exactly one [`Phase`]; every change goes through
//! [`Core::set_phase`], which traces `old => new`. Every transition, as
//! `docs/connection-states.svg` draws it (its source,
//! `docs/connection-states.dot`, and the crate doc's summary change with
//! this list). `┄▶` ends the connection at once, its output dropped:
//!
//! ```text
//! admitted       PROXY protocol on ───────────────────────────────────▶ ProxyHeader
//!                TLS on (no PROXY) ───────────────────────────────────▶ Handshaking
//!                neither ─────────────────────────────────────────────▶ Open
//! ProxyHeader    header read ─────────────────────────────────────────▶ Handshaking (TLS) or Open
//!                address over its cap (refusal message),
//!                stop, peer EOF ──────────────────────────────────────▶ Closing
//!                bad or late header, address denied ┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄▶ Closed
//! Handshaking    handshake done ──────────────────────────────────────▶ Open
//!                TLS error (flush the alert) ─────────────────────────▶ Closing
//!                timeout, evicted at the cap, stop, peer EOF ┄┄┄┄┄┄┄┄┄▶ Closed
//! Open           output > high water, or max_deferred_replies owed ───▶ Throttled
//!                close(), line too long, bad frame, TLS error,
//!                stop, peer EOF, idle or frame timeout ───────────────▶ Closing
//!                handler panic ┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄▶ Closed
//! Throttled      output <= low water and at most half owed
//!                (read again at once) ────────────────────────────────▶ Open
//!                close(), stop, idle timeout ─────────────────────────▶ Closing
//! Closing        output flushed, replies delivered: shutdown(Write) ──▶ Lingering
//!                the same, the peer had closed already
//!                (or the shutdown failed) ────────────────────────────▶ Closed
//! Lingering      peer EOF, linger timeout ────────────────────────────▶ Closed
//! any phase      reset, I/O error ┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄▶ Closed
//! Handshaking, Open, Throttled, Closing:
//!                write stall (wire bytes the peer does not take) ┄┄┄┄┄▶ Closed
//! Open, Throttled, Closing:
//!                output overflow ┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄┄▶ Closed
//! ```
//!
//! An idle timeout does not fire while the connection is owed replies
//! ([`Conn::defer`](crate::Conn::defer)): its clock starts again. A stop
//! whose grace runs out closes whatever is left (`Closed`, from any phase).
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

    /// A socket call failed: the connection closes at once, its output
    /// dropped, whether the peer reset it or the call failed otherwise
    /// (neither [`CloseReason::Reset`] nor [`CloseReason::Io`] is graceful).
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
mod tests;
