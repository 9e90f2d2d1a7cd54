//! One connection's state machine.
//!
//! A connection is always in exactly one [`Phase`]; every change goes through
//! [`Connection::set_phase`], which traces `old => new`. The phase alone
//! decides what the loop may do with the socket, and so which readiness
//! ([`Interest`]) to ask the poll for:
//!
//! ```text
//!   Handshaking (TLS only) ── handshake done ──▶ Open
//!    │  timeout, stop, EOF, I/O error ──▶ Closed    (the handler never saw it)
//!    │  TLS error ──▶ Closing (flush the alert)
//!
//!            output > high water              output <= low water
//!   Open ───────────────────────────▶ Throttled ─────────────────▶ Open
//!    │  close(), line too long, stop,                 │
//!    │  peer EOF                                      │ (same)
//!    ▼                                                ▼
//!   Closing ── output flushed ──▶ shutdown(Write) ──▶ Lingering ── peer EOF
//!    │           (peer already closed: skip lingering)   │      or linger timeout
//!    ▼                                                   ▼
//!   Closed ◀──────── reset, I/O error, output overflow, panic (at once)
//! ```
//!
//! The socket work itself (reading, writing, calling the handler) is in
//! `event_loop.rs`; what is here has no I/O but the socket it owns, and is
//! tested without one.

use std::fmt;
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::Interest;

use crate::handler::{CloseReason, ConnId};
use crate::timers::Millis;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// TLS only: the handshake is under way. Reading and writing TLS records,
    /// no lines yet; the handler has not seen the connection.
    Handshaking,
    /// PROXY protocol on: reading the header that names the real client.
    /// No line is read and the handler has not heard of the connection yet.
    ProxyHeader,
    /// Reading lines and writing replies.
    Open,
    /// Not reading: unsent output is above the high-water mark. Only writing
    /// until it drops to the low-water mark.
    Throttled,
    /// No more lines are read; pending output is being flushed. Then the
    /// write side is shut down, and the connection lingers (if the peer may
    /// still send) or closes.
    Closing { reason: CloseReason, linger: bool },
    /// Our side is shut down. Reading and discarding until the peer closes,
    /// so that closing never turns into a reset that could destroy replies
    /// the peer has not read yet.
    Lingering { reason: CloseReason },
    /// Done: the loop removes it.
    Closed { reason: CloseReason },
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Handshaking => f.write_str("handshaking"),
            Phase::ProxyHeader => f.write_str("awaiting PROXY header"),
            Phase::Open => f.write_str("open"),
            Phase::Throttled => f.write_str("throttled"),
            Phase::Closing { reason, .. } => write!(f, "closing ({reason})"),
            Phase::Lingering { reason } => write!(f, "lingering ({reason})"),
            Phase::Closed { reason } => write!(f, "closed ({reason})"),
        }
    }
}

/// Unsent output: a buffer and how much of it has been written.
///
/// Empty most of the time: replies go from the loop's shared write buffer
/// straight to the socket, and only what the socket would not take lands
/// here. When it drains, its memory is freed, so an idle connection owns no
/// output buffer.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// `None` while nothing waits, which is nearly always: eight bytes in
    /// every connection instead of a vector and an offset (32).
    waiting: Option<Box<Waiting>>,
}

/// Output the socket would not take yet.
#[derive(Debug, Default)]
struct Waiting {
    buf: Vec<u8>,
    /// How much of `buf` has been written since.
    written: usize,
}

impl Outbox {
    /// Bytes not yet written.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.waiting.as_ref().map_or(0, |w| w.buf.len() - w.written)
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes to write next.
    pub(crate) fn pending(&self) -> &[u8] {
        self.waiting.as_ref().map_or(&[], |w| &w.buf[w.written..])
    }

    /// Marks `n` bytes as written, freeing the buffer once all are.
    pub(crate) fn advance(&mut self, n: usize) {
        if let Some(w) = &mut self.waiting {
            w.written += n;
            debug_assert!(w.written <= w.buf.len());
            if w.written == w.buf.len() {
                self.waiting = None;
            }
        }
    }

    /// The buffer to append to, with the written prefix dropped so that its
    /// `len()` is exactly the unsent output.
    pub(crate) fn for_append(&mut self) -> &mut Vec<u8> {
        let w = self.waiting.get_or_insert_with(Box::default);
        if w.written > 0 {
            w.buf.drain(..w.written);
            w.written = 0;
        }
        &mut w.buf
    }
}

/// One connection: its socket, its phase, its buffers, the user's state.
#[derive(Debug)]
pub(crate) struct Connection<S> {
    pub(crate) stream: TcpStream,
    /// The client's address: the socket's peer, or with the PROXY protocol,
    /// the address the header names.
    pub(crate) peer: SocketAddr,
    /// With the PROXY protocol, the proxy's own address (the socket's peer).
    /// Boxed: eight bytes for the connections that have none.
    pub(crate) proxy: Option<Box<SocketAddr>>,
    pub(crate) id: ConnId,
    phase: Phase,
    /// Whether the handler has heard of this connection (`on_connect`), and
    /// so must hear of its end.
    pub(crate) announced: bool,
    /// What the poll has been asked for, to re-register only on change.
    registered: Interest,
    /// The incomplete last line (no `\n` in it yet); see `framing.rs`.
    pub(crate) partial: Vec<u8>,
    pub(crate) out: Outbox,
    /// Whether this connection still counts against the accept budget. It
    /// gives its slot back when it closes, or earlier, once it lingers: a
    /// lingering connection is no longer served, only waiting for the peer to
    /// hang up, and must not keep a waiting client out.
    pub(crate) holds_slot: bool,
    /// When a complete line arrived or output made progress: the idle
    /// clock. A trickle of bytes without a newline does not move it, which
    /// is what defeats slowloris.
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

/// `Connection::timer_at` when the connection has no entry in the heap.
pub(crate) const NO_TIMER: Millis = Millis::MAX;

/// The timeouts that apply to every connection, in milliseconds (`None` off).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timeouts {
    pub(crate) idle: Option<Millis>,
    pub(crate) write_stall: Option<Millis>,
    pub(crate) linger: Millis,
    pub(crate) proxy_header: Millis,
}

/// Which timeout came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timeout {
    ProxyHeader,
    Idle,
    WriteStall,
    Linger,
}

impl<S: Default> Connection<S> {
    /// A connection just registered for `READABLE`; with `proxied`, it
    /// starts by waiting for its PROXY protocol header, then, with `tls`,
    /// goes on to [`Phase::Handshaking`].
    pub(crate) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        id: ConnId,
        now: Millis,
        proxied: bool,
        tls: bool,
    ) -> Self {
        Connection {
            stream,
            peer,
            proxy: None,
            id,
            phase: if proxied {
                Phase::ProxyHeader
            } else if tls {
                Phase::Handshaking
            } else {
                Phase::Open
            },
            announced: false,
            registered: Interest::READABLE,
            partial: Vec::new(),
            out: Outbox::default(),
            holds_slot: true,
            last_active: now,
            last_progress: now,
            timer_at: NO_TIMER,
            state: S::default(),
        }
    }
}

impl<S> Connection<S> {
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// The socket's own peer: the proxy's address with the PROXY protocol,
    /// else the client's. Admission limits (per-IP cap) counted this one.
    pub(crate) fn socket_peer(&self) -> SocketAddr {
        self.proxy.as_deref().copied().unwrap_or(self.peer)
    }

    /// The one place a phase changes.
    pub(crate) fn set_phase(&mut self, next: Phase) {
        if self.phase != next {
            log::trace!("{} {}: {} => {}", self.id, self.peer, self.phase, next);
            self.phase = next;
        }
    }

    /// Begins closing for `reason`. Graceful reasons flush first; the others
    /// close at once. A connection already closing keeps its first reason,
    /// except that an abortive reason cuts a graceful close short. An
    /// unfinished TLS handshake has no replies to flush: it closes at once,
    /// unless there is an alert to deliver.
    pub(crate) fn begin_close(&mut self, reason: CloseReason, peer_gone: bool) {
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

    /// Applies the backpressure marks after the output changed. Returns true
    /// when reading resumes, so the loop reads what waited in the kernel
    /// (no new edge will announce it).
    pub(crate) fn apply_water_marks(&mut self, low: usize, high: usize) -> bool {
        match self.phase {
            Phase::Open if self.out.len() > high => {
                self.set_phase(Phase::Throttled);
                false
            }
            Phase::Throttled if self.out.len() <= low => {
                self.set_phase(Phase::Open);
                true
            }
            _ => false,
        }
    }

    /// The readiness this phase needs, or `None` when the socket needs no
    /// events at all (closed, or about to be).
    pub(crate) fn wanted_interest(&self) -> Option<Interest> {
        let writing = !self.out.is_empty();
        match self.phase {
            Phase::Open | Phase::Handshaking if writing => {
                Some(Interest::READABLE | Interest::WRITABLE)
            }
            Phase::ProxyHeader | Phase::Open | Phase::Handshaking | Phase::Lingering { .. } => {
                Some(Interest::READABLE)
            }
            Phase::Throttled | Phase::Closing { .. } if writing => Some(Interest::WRITABLE),
            // A closing connection with nothing to write is finished on the
            // spot by the loop; a throttled one always has output.
            Phase::Throttled | Phase::Closing { .. } => None,
            Phase::Closed { .. } => None,
        }
    }

    /// The next timeout this connection can meet, given its phase and
    /// clocks; `None` when no timeout applies.
    pub(crate) fn deadline(&self, t: &Timeouts) -> Option<(Millis, Timeout)> {
        let stall = match t.write_stall {
            Some(stall) if !self.out.is_empty() => {
                Some((self.last_progress + stall, Timeout::WriteStall))
            }
            _ => None,
        };
        match self.phase {
            // `last_active` is the accept time until the header is in.
            Phase::ProxyHeader => Some((self.last_active + t.proxy_header, Timeout::ProxyHeader)),
            Phase::Open | Phase::Throttled => {
                let idle = t.idle.map(|idle| (self.last_active + idle, Timeout::Idle));
                [idle, stall].into_iter().flatten().min()
            }
            // A handshake's own deadline is kept by the loop (a FIFO: every
            // handshake has the same timeout and it never moves).
            Phase::Handshaking | Phase::Closing { .. } => stall,
            Phase::Lingering { .. } => Some((self.last_progress + t.linger, Timeout::Linger)),
            Phase::Closed { .. } => None,
        }
    }

    /// Records the interest just registered; returns the previous one.
    pub(crate) fn swap_registered(&mut self, interest: Interest) -> Interest {
        std::mem::replace(&mut self.registered, interest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection's whole cost in user memory is its slab entry:
    /// this guards the headline figure (RSS per idle connection) against a
    /// field added without thought.
    #[test]
    fn a_plaintext_connection_stays_small() {
        let size = std::mem::size_of::<Connection<()>>();
        assert!(size <= 128, "Connection<()> grew to {size} bytes");
    }

    mod outbox {
        use super::*;

        #[test]
        fn drained_output_frees_its_memory() {
            let mut o = Outbox::default();
            o.for_append().extend_from_slice(b"hello");
            o.advance(2);
            assert_eq!(o.pending(), b"llo");
            assert_eq!(o.len(), 3);
            o.advance(3);
            assert!(o.is_empty());
            assert!(o.waiting.is_none(), "the buffer is freed");
        }

        #[test]
        fn appending_keeps_order_and_drops_the_written_prefix() {
            let mut o = Outbox::default();
            o.for_append().extend_from_slice(b"abc");
            o.advance(1);
            let buf = o.for_append();
            assert_eq!(buf.as_slice(), b"bc");
            buf.extend_from_slice(b"d");
            assert_eq!(o.pending(), b"bcd");
        }
    }

    /// A connected pair of sockets, so a `Connection` can be built; the state
    /// machine itself never touches them.
    fn connection() -> (Connection<()>, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, peer) = l.accept().unwrap();
        let stream = TcpStream::from_std(server);
        (
            Connection::new(stream, peer, ConnId(1), 0, false, false),
            client,
        )
    }

    fn tls_connection() -> (Connection<()>, std::net::TcpStream) {
        let (mut c, peer) = connection();
        c.phase = Phase::Handshaking;
        (c, peer)
    }

    mod handshaking {
        use super::*;

        #[test]
        fn a_handshake_reads_and_writes_its_flight() {
            let (mut c, _peer) = tls_connection();
            assert_eq!(c.wanted_interest(), Some(Interest::READABLE));
            c.out.for_append().extend_from_slice(b"server hello");
            assert_eq!(
                c.wanted_interest(),
                Some(Interest::READABLE | Interest::WRITABLE)
            );
        }

        #[test]
        fn backpressure_does_not_apply_to_a_handshake() {
            let (mut c, _peer) = tls_connection();
            c.out.for_append().extend_from_slice(&[0; 10]);
            assert!(!c.apply_water_marks(2, 8));
            assert_eq!(c.phase(), Phase::Handshaking);
        }

        #[test]
        fn a_stop_or_eof_ends_a_handshake_at_once() {
            for reason in [CloseReason::Stopped, CloseReason::PeerClosed] {
                let (mut c, _peer) = tls_connection();
                c.out.for_append().extend_from_slice(b"flight");
                c.begin_close(reason, false);
                assert_eq!(c.phase(), Phase::Closed { reason });
                assert_eq!(c.wanted_interest(), None);
            }
        }

        #[test]
        fn a_tls_error_flushes_its_alert_and_lingers() {
            let (mut c, _peer) = tls_connection();
            c.out.for_append().extend_from_slice(b"alert");
            c.begin_close(CloseReason::Tls, false);
            assert_eq!(
                c.phase(),
                Phase::Closing {
                    reason: CloseReason::Tls,
                    linger: true
                }
            );
            assert_eq!(c.wanted_interest(), Some(Interest::WRITABLE));
        }

        #[test]
        fn a_timeout_closes_at_once() {
            let (mut c, _peer) = tls_connection();
            c.begin_close(CloseReason::HandshakeTimeout, false);
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
            let (mut c, _peer) = connection();
            assert_eq!(c.wanted_interest(), Some(Interest::READABLE));
            c.out.for_append().extend_from_slice(b"x");
            assert_eq!(
                c.wanted_interest(),
                Some(Interest::READABLE | Interest::WRITABLE)
            );
        }

        #[test]
        fn high_water_throttles_and_low_water_resumes() {
            let (mut c, _peer) = connection();
            c.out.for_append().extend_from_slice(&[0; 10]);
            assert!(!c.apply_water_marks(2, 8));
            assert_eq!(c.phase(), Phase::Throttled);
            assert_eq!(c.wanted_interest(), Some(Interest::WRITABLE));
            c.out.advance(7);
            assert!(
                !c.apply_water_marks(2, 8),
                "3 bytes is still above low water"
            );
            c.out.advance(1);
            assert!(c.apply_water_marks(2, 8), "resuming asks for a read");
            assert_eq!(c.phase(), Phase::Open);
        }
    }

    mod closing {
        use super::*;

        #[test]
        fn graceful_close_lingers_unless_the_peer_is_gone() {
            let (mut c, _peer) = connection();
            c.begin_close(CloseReason::Closed, false);
            assert_eq!(
                c.phase(),
                Phase::Closing {
                    reason: CloseReason::Closed,
                    linger: true
                }
            );
            let (mut c, _peer) = connection();
            c.begin_close(CloseReason::PeerClosed, true);
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
            let (mut c, _peer) = connection();
            c.begin_close(CloseReason::LineTooLong, false);
            c.begin_close(CloseReason::Stopped, false);
            assert!(matches!(
                c.phase(),
                Phase::Closing {
                    reason: CloseReason::LineTooLong,
                    ..
                }
            ));
        }

        #[test]
        fn an_abortive_reason_cuts_a_graceful_close_short() {
            let (mut c, _peer) = connection();
            c.out.for_append().extend_from_slice(b"unsent");
            c.begin_close(CloseReason::Closed, false);
            c.begin_close(CloseReason::Reset, false);
            assert_eq!(
                c.phase(),
                Phase::Closed {
                    reason: CloseReason::Reset
                }
            );
            assert_eq!(c.wanted_interest(), None);
        }

        #[test]
        fn closing_only_writes() {
            let (mut c, _peer) = connection();
            c.out.for_append().extend_from_slice(b"bye");
            c.begin_close(CloseReason::Stopped, false);
            assert_eq!(c.wanted_interest(), Some(Interest::WRITABLE));
            c.out.advance(3);
            assert_eq!(c.wanted_interest(), None);
        }
    }

    mod timeouts {
        use super::*;

        const T: Timeouts = Timeouts {
            idle: Some(100),
            write_stall: Some(30),
            linger: 20,
            proxy_header: 50,
        };

        #[test]
        fn a_proxy_header_must_arrive_in_time() {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (server, peer) = l.accept().unwrap();
            let c: Connection<()> =
                Connection::new(TcpStream::from_std(server), peer, ConnId(2), 5, true, false);
            assert_eq!(c.phase(), Phase::ProxyHeader);
            assert_eq!(c.wanted_interest(), Some(Interest::READABLE));
            assert_eq!(c.deadline(&T), Some((55, Timeout::ProxyHeader)));
        }

        #[test]
        fn an_idle_open_connection_times_out_after_idle() {
            let (mut c, _peer) = connection();
            c.last_active = 50;
            assert_eq!(c.deadline(&T), Some((150, Timeout::Idle)));
            let off = Timeouts { idle: None, ..T };
            assert_eq!(c.deadline(&off), None, "nothing applies");
        }

        #[test]
        fn waiting_output_adds_the_write_stall_clock() {
            let (mut c, _peer) = connection();
            c.out.for_append().extend_from_slice(b"x");
            c.last_progress = 10;
            assert_eq!(c.deadline(&T), Some((40, Timeout::WriteStall)));
            c.begin_close(CloseReason::Closed, false);
            assert_eq!(
                c.deadline(&T),
                Some((40, Timeout::WriteStall)),
                "closing: only the stall"
            );
        }

        #[test]
        fn lingering_is_bounded_by_linger() {
            let (mut c, _peer) = connection();
            c.set_phase(Phase::Lingering {
                reason: CloseReason::Closed,
            });
            c.last_progress = 7;
            assert_eq!(c.deadline(&T), Some((27, Timeout::Linger)));
        }
    }

    mod lingering {
        use super::*;

        #[test]
        fn lingering_reads_to_see_the_peer_close() {
            let (mut c, _peer) = connection();
            c.set_phase(Phase::Lingering {
                reason: CloseReason::Closed,
            });
            assert_eq!(c.wanted_interest(), Some(Interest::READABLE));
            c.begin_close(CloseReason::Stopped, false);
            assert!(
                matches!(c.phase(), Phase::Lingering { .. }),
                "a stop does not restart a close"
            );
        }
    }
}
