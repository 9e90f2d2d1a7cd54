//! Accepting: draining the listeners, asking admission, then serving a
//! connection here, handing it to another loop, or refusing it.
//!
//! A loop may accept on several listeners (TCP and Unix, see `socket.rs`),
//! all under the one budget. Each remembers whether an edge came that
//! `accept` has not drained yet ([`Listening`]); the loop takes their
//! connections in turn, so that a flood on one does not starve the other,
//! and after a pause resumes exactly those that still hold clients.
//!
//! The budget is consulted *before* `accept` (see `admission.rs`): a slot is
//! reserved first, so a connection is never registered with the poll unless
//! it will be served, and the count of served connections is exact. Every
//! other policy is decided right after `accept`, in one place
//! ([`Gate::decide`](crate::admission::Gate::decide)), before anything is
//! registered or counted.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use super::drive::Connection;
use super::{EventLoop, FIRST_CONN};
use crate::admission::{BeforeAccept, Refusal, Ticket};
use crate::base::id::ConnId;
use crate::base::time::Millis;
use crate::core::{Core, Start};
use crate::framing::Framing;
use crate::handler::Handler;
use crate::listen::UnixPathGuard;
use crate::shared::{Command, Handoff, Load};
use crate::socket::{ListenSocket, Stream};
use crate::transport::Transport;

/// Accepts per turn, for fairness: a flood of connects (say, a storm of
/// clients being refused) must not starve the connections already served.
const ACCEPTS_PER_TURN: usize = 128;

/// `EMFILE`: this process is out of descriptors.
const EMFILE: i32 = 24;

/// Why the loop is not calling `accept` right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Hold {
    /// It is: accepting whenever the listener is ready.
    #[default]
    No,
    /// Every slot is busy under `Pause`; the loop is parked on the budget,
    /// which wakes it when a slot frees.
    Paused,
    /// Under `Pause`, the accept rate is spent: accept again at this time.
    Rate(Millis),
    /// `accept` failed for lack of resources (`EMFILE` & co): retry at
    /// this time.
    BackOff(Millis),
}

/// One listening socket of a loop.
#[derive(Debug)]
pub(crate) struct Listening {
    /// The guard that removes a Unix socket file this server bound, on the
    /// one loop that owns it (loop 0). Dropped before the socket is closed
    /// (see `UnixPathGuard`'s `# Shutdown`); being declared first, it is
    /// also dropped first when the whole `Listening` is.
    pub(crate) guard: Option<UnixPathGuard>,
    pub(crate) socket: ListenSocket,
    /// An edge came and `accept` has not said `WouldBlock` since: clients
    /// may be waiting. mio is edge-triggered, so this is the only record,
    /// once accepting stopped early (a pause, the turn's share), of which
    /// listeners still hold clients.
    ready: bool,
}

impl Listening {
    /// A listener to register. It starts as ready: clients may have queued
    /// before the loop registered it (an adopted or handed-over socket),
    /// and the first look costs one `accept` that says `WouldBlock`.
    pub(crate) fn new(socket: ListenSocket, guard: Option<UnixPathGuard>) -> Self {
        Listening {
            socket,
            ready: true,
            guard,
        }
    }
}

/// The accept side's state.
#[derive(Debug, Default)]
pub(super) struct AcceptState {
    /// Why accepting is held, if it is: one value, so that "paused" and
    /// "backing off" cannot both be claimed.
    held: Hold,
    /// Accept again at the end of this turn without waiting for an event:
    /// a slot freed while paused, the budget changed, a retry came due, or
    /// a turn was cut short.
    pub(super) retry_this_turn: bool,
    /// `accept` has failed for lack of resources since it last succeeded
    /// (to log the episode once, and its end).
    failing: bool,
    /// A warning was logged for this kind of refusal since the last
    /// connection was served (to log once per episode).
    warned_budget: bool,
    /// A warning was logged for handshakes closed to make room, since a
    /// TLS connection last found a free handshake place.
    warned_tls: bool,
    /// When to look at the grown slots again (see `budget.rs`, `# Grown
    /// slots retire`): set when this loop admits a connection past a full
    /// budget, which is when the budget may grow; `None` once it is back to
    /// its configured size, so a loop with nothing grown has no such timer.
    pub(super) retire_at: Option<Millis>,
    /// The listener to look at first next time: they take turns.
    cursor: usize,
}

impl AcceptState {
    /// When a held accept is to be retried, for the poll timeout.
    pub(super) fn retry_at(&self) -> Option<Millis> {
        match self.held {
            Hold::Rate(at) | Hold::BackOff(at) => Some(at),
            Hold::No | Hold::Paused => None,
        }
    }

    /// Lifts a hold whose time has come; true if it did.
    pub(super) fn retry_due(&mut self, now: Millis) -> bool {
        match self.retry_at() {
            Some(at) if at <= now => {
                self.held = Hold::No;
                true
            }
            _ => false,
        }
    }

    pub(super) fn is_paused(&self) -> bool {
        self.held == Hold::Paused
    }
}

impl<F: Framing, H: Handler<F>, T: Transport> EventLoop<F, H, T> {
    /// Listener `index` reported an edge: accept from it (and from any other
    /// listener that still holds clients).
    pub(super) fn listener_ready(&mut self, index: usize) {
        if let Some(listening) = self.listeners.get_mut(index) {
            listening.ready = true;
            self.accept_connections();
        }
    }

    /// Accepts until the kernel's queues are empty (`WouldBlock` on every
    /// listener), admission says wait, or this turn's share is used.
    pub(super) fn accept_connections(&mut self) {
        self.accept.retry_this_turn = false;
        if matches!(self.accept.held, Hold::Rate(_) | Hold::BackOff(_)) {
            return; // a timer brings us back
        }
        if self.listeners.is_empty() {
            // Stopping, or a loop that never accepts. If a freed slot woke
            // us, it is meant for a loop that can use it: pass the wake on.
            let budget = self.pipe.server.budget();
            budget.wake_parked(budget.unpark_one());
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let reserved = match self
                .pipe
                .server
                .gate
                .before_accept(self.index, Instant::now())
            {
                BeforeAccept::Accept(reserved) => reserved,
                BeforeAccept::Pause => {
                    if self.accept.held != Hold::Paused {
                        self.accept.held = Hold::Paused;
                        self.pipe.shared.counters.pause_episodes.add(1);
                        log::debug!(
                            "all {} acceptor slots busy: accept paused",
                            self.pipe.server.budget().limit()
                        );
                    }
                    return;
                }
                BeforeAccept::WaitForRate(wait) => {
                    // Leave clients in the backlog until a token is due.
                    let wait = wait.as_millis() as Millis + 1;
                    self.accept.held = Hold::Rate(self.clock.now() + wait);
                    return;
                }
            };
            if self.accept.held == Hold::Paused {
                self.accept.held = Hold::No;
                log::debug!("a slot is free: accept resumed");
            }
            // Every queue is known empty: no `accept` needed to hear it
            // say so. (The reservation goes back, and with it a wake-up
            // meant for a loop that can use the slot.)
            let Some(i) = self.next_ready() else {
                return;
            };
            match self.listeners[i].socket.accept() {
                Ok((stream, peer)) => {
                    if std::mem::take(&mut self.accept.failing) {
                        log::info!("accepting again after resource errors");
                    }
                    self.admit(stream, peer, reserved);
                }
                // `reserved`, if any, is dropped: the slot goes back.
                Err(e) => match AcceptError::classify(&e) {
                    AcceptError::Drained => {
                        self.listeners[i].ready = false;
                        if self.listeners.iter().all(|l| !l.ready) {
                            return;
                        }
                    }
                    AcceptError::Retry => continue,
                    AcceptError::BackOff => {
                        if e.raw_os_error() == Some(EMFILE) && self.refuse_with_spare(i, &e) {
                            continue;
                        }
                        self.back_off_accept(&e);
                        return;
                    }
                },
            }
        }
        // The turn's share is used; the queues may hold more.
        self.accept.retry_this_turn = true;
    }

    /// The next listener that may hold clients, in turn.
    fn next_ready(&mut self) -> Option<usize> {
        let n = self.listeners.len();
        let start = self.accept.cursor;
        let i = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.listeners[i].ready)?;
        self.accept.cursor = (i + 1) % n;
        Some(i)
    }

    /// The one admission decision on a connection just accepted, then the
    /// action: serve it (here or on another loop) or refuse it.
    fn admit(&mut self, stream: Stream, peer: SocketAddr, reserved: Option<crate::budget::Slot>) {
        let server = &self.pipe.server;
        let target = self.distributor.choose(server);
        let overflowed = reserved.is_none();
        match server
            .gate
            .decide(stream.ip(peer), reserved, Instant::now())
        {
            Ok(ticket) => {
                if overflowed {
                    self.watch_grown_slots();
                }
                self.dispatch(stream, peer, ticket, target)
            }
            Err(why) => self.refuse(stream, peer, why),
        }
    }

    /// The budget may have grown: look at it on a timer until its grown
    /// slots have all gone back (`retire_grown_slots`).
    fn watch_grown_slots(&mut self) {
        if self.accept.retire_at.is_none() && !self.pipe.config.grow_cooldown.is_zero() {
            self.accept.retire_at = Some(self.clock.now() + self.retire_tick());
        }
    }

    /// How often grown slots are looked at: an eighth of the cooldown,
    /// between 1 ms and 1 s. The budget's peak covers the time between two
    /// looks, so this sets only how close to the cooldown a step goes back.
    fn retire_tick(&self) -> Millis {
        let tick = (self.pipe.config.grow_cooldown / 8)
            .clamp(Duration::from_millis(1), Duration::from_secs(1));
        tick.as_millis() as Millis
    }

    /// The retire timer came due: give grown slots back if they have been
    /// unused for the cooldown, and look again later while any are left.
    pub(super) fn retire_grown_slots(&mut self) {
        let budget = self.pipe.server.budget();
        let cooldown = self.pipe.config.grow_cooldown;
        self.accept.retire_at = budget
            .retire_grown(Instant::now(), cooldown)
            .then(|| self.clock.now() + self.retire_tick());
    }

    /// Serves an admitted connection here, or hands it to `target` with
    /// what it holds (see `distribute.rs`).
    fn dispatch(&mut self, stream: Stream, peer: SocketAddr, ticket: Ticket, target: usize) {
        if target == self.index {
            // Counted in this loop's load; `remove` un-counts it.
            Load::on(&self.pipe.shared).adopted();
            return self.serve(stream, peer, ticket);
        }
        let handoff = Handoff {
            stream,
            peer,
            ticket,
            load: Load::on(&self.pipe.server.loops[target]),
        };
        if let Err(back) = self.pipe.server.loops[target].try_push(Command::Adopt(handoff)) {
            // The target has exited: serve here rather than drop a client
            // that was promised a slot.
            log::debug!(
                "{peer}: loop {target} has exited; served by loop {}",
                self.index
            );
            if let Command::Adopt(handoff) = *back {
                drop(handoff.load);
                Load::on(&self.pipe.shared).adopted();
                self.serve(handoff.stream, handoff.peer, handoff.ticket);
            }
        }
    }

    /// Registers an admitted connection and greets the handler (or, with
    /// the PROXY protocol on, waits for the header first; with TLS, for the
    /// handshake).
    pub(super) fn serve(&mut self, mut stream: Stream, peer: SocketAddr, ticket: Ticket) {
        self.accept.warned_budget = false;
        if !T::PLAINTEXT {
            // A TLS connection needs a handshake place. At the cap, the
            // handshake stalled the longest makes room for it, rather than
            // the newcomer being refused (see `make_room_for_a_handshake`).
            if self.pipe.shared.handshakes.is_full() {
                if !self.accept.warned_tls {
                    self.accept.warned_tls = true;
                    log::warn!(
                        "{} TLS handshakes in progress: closing the most stalled to make room",
                        self.pipe.shared.handshakes.count()
                    );
                }
                self.make_room_for_a_handshake();
            } else {
                self.accept.warned_tls = false;
            }
        }
        let transport = match T::start(&mut self.pipe.transport) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("{peer}: cannot start a session: {e}");
                self.pipe
                    .shared
                    .open
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                return; // dropping the ticket gives its slot back
            }
        };
        if self.pipe.config.nodelay {
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("{peer}: TCP_NODELAY not set: {e}");
            }
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        // Registered for READABLE only; WRITABLE is asked for only while
        // output waits. Input that arrived before this call is reported at
        // once: epoll checks readiness when a socket is added.
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, Token(key + FIRST_CONN), Interest::READABLE)
        {
            log::warn!("{peer}: could not register the connection: {e}");
            self.pipe
                .shared
                .open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let id = ConnId(self.next_id);
        self.next_id += self.id_step;
        let now = self.clock.now();
        let start = if self.pipe.config.proxy_protocol {
            Start::ProxyHeader
        } else if transport.is_handshaking() {
            Start::Handshake
        } else {
            Start::Open
        };
        let core = Core::new(id, peer, now, start, ticket.slot, ticket.place);
        let conn = entry.insert(Connection::new(stream, transport, core));
        self.pipe.shared.counters.accepted.add(1);
        match conn.stream.unix_peer() {
            // The address the log names it by is 0.0.0.0:0: say who it is.
            Some(unix) => log::debug!("{id} {peer}: accepted from {unix}"),
            None => log::debug!("{id} {peer}: accepted"),
        }
        self.pipe.server.check_alarm();
        if conn.transport.is_handshaking() {
            // The handler meets the connection when the handshake is done;
            // until then it holds a handshake place, on a deadline (which
            // also covers a PROXY header before the handshake).
            self.track_handshake(now + self.handshake_timeout, key, id);
        } else if start == Start::Open {
            self.pipe.open(conn, key);
        }
        self.reconcile(key);
    }

    /// Refuses a connection: one best-effort write of the refusal message
    /// (plaintext only, and not to a denied client), then close. It is
    /// never registered with the poll: a refused client costs `accept`,
    /// `read`, `write`, `close`, and no `epoll_ctl`, slab entry or
    /// allocation.
    fn refuse(&mut self, mut stream: Stream, peer: SocketAddr, why: Refusal) {
        self.pipe.shared.counters.count_refusal(why);
        if why == Refusal::Budget && !self.accept.warned_budget {
            self.accept.warned_budget = true;
            log::warn!(
                "all {} acceptor slots busy: refusing new connections",
                self.pipe.server.budget().limit()
            );
        }
        log::debug!("{peer}: refused ({why:?})");
        let message = &self.pipe.config.refuse_message;
        if !message.is_empty() && T::PLAINTEXT && why.tells_client() {
            // Read what the client may have sent already: closing a socket
            // with unread input sends a reset, which can destroy the message
            // before the client reads it. Neither call can block.
            let _ = stream.read(&mut self.read_buf);
            if let Err(e) = stream.write(message) {
                log::debug!("{peer}: refusal message not sent: {e}");
            }
        }
    }

    /// Out of descriptors (EMFILE), with a spare one kept for this moment:
    /// close the spare, accept the waiting client, refuse it (message and
    /// close), and open the spare again. Clients queued in the backlog of
    /// listener `index` get a clear answer instead of hanging until
    /// descriptors free up. Returns false when there was no spare, or nobody
    /// was waiting.
    fn refuse_with_spare(&mut self, index: usize, e: &io::Error) -> bool {
        let Some(spare) = self.spare_fd.take() else {
            return false;
        };
        drop(spare);
        let accepted = self.listeners[index].socket.accept();
        let refused = match accepted {
            Ok((stream, peer)) => {
                self.pipe.shared.counters.accept_errors.add(1);
                if !self.accept.failing {
                    self.accept.failing = true;
                    log::warn!(
                        "accept failed ({e}): refusing queued clients through the spare descriptor"
                    );
                }
                self.refuse(stream, peer, Refusal::NoDescriptors);
                true
            }
            Err(_) => false,
        };
        self.spare_fd = open_spare();
        refused
    }

    /// Out of descriptors or memory: stop accepting for a while. Retrying at
    /// once would spin (the error repeats until something closes), and
    /// waiting for the next event could wait forever: the edge for the
    /// connections already queued has been consumed. So the poll timeout
    /// brings the loop back.
    fn back_off_accept(&mut self, e: &io::Error) {
        self.pipe.shared.counters.accept_errors.add(1);
        let backoff = self.pipe.config.accept_backoff;
        if !self.accept.failing {
            self.accept.failing = true;
            log::warn!("accept failed ({e}); not accepting for {backoff:?}, then retrying");
        } else {
            log::debug!("accept still failing: {e}");
        }
        self.accept.held = Hold::BackOff(self.clock.now() + backoff.as_millis() as Millis);
    }
}

/// Opens the spare descriptor kept for `EMFILE`; `None` (logged) if even
/// that fails.
pub(super) fn open_spare() -> Option<File> {
    match File::open("/dev/null") {
        Ok(f) => Some(f),
        Err(e) => {
            log::warn!("no spare descriptor for EMFILE: {e}");
            None
        }
    }
}

/// What to do after `accept` failed.
#[derive(Debug, PartialEq, Eq)]
enum AcceptError {
    /// The queue is empty: wait for the next event.
    Drained,
    /// That one connection failed (aborted or reset while queued, or a
    /// network error Linux passes on from the new socket): take the next.
    Retry,
    /// The process or system is out of a resource: back off, then retry.
    BackOff,
}

impl AcceptError {
    fn classify(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock => return AcceptError::Drained,
            io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused => return AcceptError::Retry,
            _ => {}
        }
        // accept(2), "Error handling": Linux passes pending network errors
        // on the new socket as accept errors; retry them like EAGAIN.
        const ENONET: i32 = 64;
        const EPROTO: i32 = 71;
        const ENOPROTOOPT: i32 = 92;
        const EOPNOTSUPP: i32 = 95;
        const ENETDOWN: i32 = 100;
        const ENETUNREACH: i32 = 101;
        const EHOSTDOWN: i32 = 112;
        const EHOSTUNREACH: i32 = 113;
        match e.raw_os_error() {
            Some(
                ENONET | EPROTO | ENOPROTOOPT | EOPNOTSUPP | ENETDOWN | ENETUNREACH | EHOSTDOWN
                | EHOSTUNREACH,
            ) => AcceptError::Retry,
            // EMFILE, ENFILE, ENOBUFS, ENOMEM, and anything unexpected:
            // back off rather than spin or give up serving.
            _ => AcceptError::BackOff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(AcceptError::classify(&os(11)), AcceptError::Drained); // EAGAIN
        assert_eq!(AcceptError::classify(&os(103)), AcceptError::Retry); // ECONNABORTED
        assert_eq!(AcceptError::classify(&os(104)), AcceptError::Retry); // ECONNRESET
        assert_eq!(AcceptError::classify(&os(71)), AcceptError::Retry); // EPROTO
        assert_eq!(AcceptError::classify(&os(24)), AcceptError::BackOff); // EMFILE
        assert_eq!(AcceptError::classify(&os(23)), AcceptError::BackOff); // ENFILE
        assert_eq!(AcceptError::classify(&os(105)), AcceptError::BackOff); // ENOBUFS
        assert_eq!(AcceptError::classify(&os(12)), AcceptError::BackOff); // ENOMEM
    }

    #[test]
    fn a_hold_is_one_state_and_lifts_when_due() {
        let mut a = AcceptState::default();
        assert_eq!(a.retry_at(), None);
        a.held = Hold::BackOff(100);
        assert!(!a.is_paused());
        assert!(!a.retry_due(99));
        assert!(a.retry_due(100));
        assert_eq!(a.held, Hold::No);
        a.held = Hold::Paused;
        assert_eq!(a.retry_at(), None, "a pause waits for a slot, not a time");
    }
}
