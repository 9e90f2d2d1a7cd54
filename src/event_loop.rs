//! The poll loop: one thread, one `mio::Poll`, one listening socket and a
//! slab of connections.
//!
//! Read this file top to bottom to learn the reactor pattern. The loop sleeps
//! in `poll` until the kernel reports *readiness* on some tokens, then does
//! the work each token's owner can now do without blocking, then sleeps
//! again. Nothing here ever blocks except `poll` itself, and `poll` wakes up
//! when there is I/O, a command from another thread (through the waker), or a
//! timer due (through `poll`'s timeout). There is no `sleep` anywhere.
//!
//! # Tokens
//!
//! `Token(0)` is the listener, `Token(1)` the waker, and a connection in slab
//! slot `k` is `Token(k + 2)`. The slab hands out the lowest free slot, so
//! tokens stay small and lookups are an index, not a hash.
//!
//! # Draining readiness
//!
//! mio is edge-triggered: an event says "something changed", once. After it,
//! the loop must repeat the operation (accept, read, write) until the kernel
//! says `WouldBlock`, or it may never hear about that socket again. Two
//! well-known shortcuts are taken, as tokio takes them on epoll: a `read` that
//! returns less than the buffer could hold, or a `write` that takes less than
//! it was given, already proves the socket drained (or full), so the extra
//! syscall that would only say `WouldBlock` is skipped. Where the loop stops
//! early on purpose (fairness, backpressure), it notes the connection in
//! `again` and comes back to it without waiting for an edge that may never
//! come.
//!
//! # TLS
//!
//! A TLS connection has the same tokens, phases, timers and output queue. Its
//! input goes through `tls.rs` (`Serving::read_tls`: `read_tls` →
//! `process_new_packets` → plaintext into the same framer → `write_tls`), its
//! session lives beside the slab (`Sessions`), and its handshake deadline in
//! a FIFO of its own (`handshakes`).

#[cfg(feature = "tls")]
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::budget::{Admission, Overflow};
use crate::config::Config;
use crate::conn::{Connection, Phase, Timeout, Timeouts, NO_TIMER};
use crate::distribute::{Distributor, Reservation};
use crate::error::Error;
use crate::framing::{split_lines, Flow, FrameError};
use crate::handle::{Command, Counters, LoopShared, ServerShared, StopReport};
use crate::handler::{CloseReason, Conn, ConnId, Disconnect, Handler, Transport};
use crate::proxy::{self, ProxyHeader};
use crate::timers::{millis, Clock, Millis, TimerHeap};
#[cfg(feature = "tls")]
use crate::tls::{encrypt, send_tls, Serving, Session, Sessions};

/// The listening socket's token.
pub(crate) const LISTENER: Token = Token(0);
/// The waker's token: another thread queued a command.
pub(crate) const WAKER: Token = Token(1);
/// Slab slot `k` is `Token(k + FIRST_CONN)`.
const FIRST_CONN: usize = 2;

/// Reads of one connection per turn of the loop (× the read buffer: 1 MiB by
/// default). A client that sends faster than the loop can serve would
/// otherwise keep it in one connection forever; past this, the connection
/// goes to the back of the line (`again`) and the others get their turn.
pub(crate) const READS_PER_TURN: usize = 16;

/// Accepts per turn, for the same fairness: a flood of connects (say, a
/// storm of clients being refused) must not starve the connections already
/// served.
const ACCEPTS_PER_TURN: usize = 128;

/// What an event says a connection can do now.
#[derive(Debug, Clone, Copy)]
struct Readiness {
    readable: bool,
    writable: bool,
    /// The peer shut down (or the socket failed): a short read no longer
    /// proves the socket drained, because end-of-stream is still to be read.
    read_closed: bool,
}

impl From<&Event> for Readiness {
    fn from(e: &Event) -> Self {
        // An error is reported to whichever syscall comes next, so let both
        // directions try.
        Readiness {
            readable: e.is_readable() || e.is_read_closed() || e.is_error(),
            writable: e.is_writable() || e.is_write_closed() || e.is_error(),
            read_closed: e.is_read_closed() || e.is_error(),
        }
    }
}

/// The accept side's state.
#[derive(Debug, Default)]
struct AcceptState {
    /// Every slot is busy under `Overflow::Pause`: not accepting.
    paused: bool,
    /// Refusing since the last served connection (to log once per episode).
    refusing: bool,
    /// Refusing TLS connections for too many handshakes in progress, since
    /// the last one admitted (to log once per episode).
    #[cfg(feature = "tls")]
    tls_refusing: bool,
    /// `accept` failed for lack of resources; retrying at `retry_at`.
    failing: bool,
    retry_at: Option<Millis>,
    /// Accept again at the end of this turn without waiting for an event:
    /// a slot freed while paused, the budget changed, or a turn was cut short.
    again: bool,
}

/// A stop in progress.
#[derive(Debug)]
struct Stopping {
    deadline: Millis,
    open_at_stop: usize,
    waiters: Vec<std::sync::mpsc::Sender<StopReport>>,
}

/// One event loop and everything it owns.
pub(crate) struct EventLoop<H: Handler> {
    poll: Poll,
    /// `None` once a stop has begun, and on a loop that does not accept
    /// (see `distribute.rs`).
    listener: Option<TcpListener>,
    /// This loop's index among the server's loops.
    index: usize,
    /// Which loop serves what this loop accepts.
    distributor: Distributor,
    /// The connections. A slot's key is its token minus `FIRST_CONN`.
    conns: Slab<Connection<H::State>>,
    handler: H,
    config: Config,
    server: Arc<ServerShared>,
    shared: Arc<LoopShared>,
    /// The one read buffer of the loop, shared by all its connections: a
    /// connection owns memory only for an incomplete line or unsent output.
    read_buf: Box<[u8]>,
    /// Replies produced while one read is handled, written in one `write`
    /// when the handler is done with that read.
    write_buf: Vec<u8>,
    /// Ids are unique per server: loop `i` of `n` hands out `i+1, i+1+n, ...`.
    next_id: u64,
    id_step: u64,
    accept: AcceptState,
    /// Connections to drive again this turn without an event (see `# Draining
    /// readiness`). The id guards against a slot reused meanwhile.
    again: Vec<(usize, ConnId)>,
    /// "Now" for this turn, read once after `poll` returns.
    clock: Clock,
    /// When to look at which connection again (idle, write stall, linger).
    timers: TimerHeap,
    timeouts: Timeouts,
    stopping: Option<Stopping>,
    /// A spare vector the command queue is swapped into.
    commands: Vec<Command>,
    /// One descriptor kept open for `EMFILE` (see `refuse_with_spare`).
    spare: Option<File>,
    /// The TLS sessions, by slab key; empty on a plaintext server.
    #[cfg(feature = "tls")]
    sessions: Sessions,
    /// TLS connections the handler has not seen yet (not `announced`):
    /// handshakes in progress, or failing; bounded by `max_handshakes`.
    #[cfg(feature = "tls")]
    handshaking: usize,
    /// Handshake deadlines. Every entry has the same timeout, so arrival
    /// order is deadline order and a FIFO is the whole timer queue, O(1) to
    /// add and to expire; entries whose handshake finished (or whose
    /// connection closed) are skipped when they come up.
    #[cfg(feature = "tls")]
    handshakes: VecDeque<(Millis, usize, ConnId)>,
    /// The handshake timeout, in the clock's milliseconds.
    #[cfg(feature = "tls")]
    handshake_timeout: Millis,
}

impl<H: Handler> EventLoop<H> {
    pub(crate) fn new(
        poll: Poll,
        listener: Option<TcpListener>,
        handler: H,
        config: Config,
        server: Arc<ServerShared>,
        index: usize,
    ) -> Self {
        let shared = server.loops[index].clone();
        let read_buf = vec![0; config.read_buffer].into_boxed_slice();
        let timeouts = Timeouts {
            idle: millis(config.idle_timeout),
            write_stall: millis(config.write_stall_timeout),
            linger: millis(config.linger).unwrap_or(1),
            proxy_header: millis(config.proxy_header_timeout).unwrap_or(1),
        };
        #[cfg(feature = "tls")]
        let handshake_timeout = millis(config.handshake_timeout).unwrap_or(1);
        EventLoop {
            poll,
            listener,
            index,
            distributor: Distributor::new(config.distribution, index),
            conns: Slab::new(),
            handler,
            next_id: index as u64 + 1,
            id_step: server.loops.len() as u64,
            config,
            server,
            shared,
            read_buf,
            write_buf: Vec::new(),
            accept: AcceptState::default(),
            again: Vec::new(),
            clock: Clock::new(),
            timers: TimerHeap::default(),
            timeouts,
            stopping: None,
            commands: Vec::new(),
            spare: None,
            #[cfg(feature = "tls")]
            sessions: Sessions::default(),
            #[cfg(feature = "tls")]
            handshaking: 0,
            #[cfg(feature = "tls")]
            handshakes: VecDeque::new(),
            #[cfg(feature = "tls")]
            handshake_timeout,
        }
    }

    /// Runs until stopped. The answer to every `stop()` caller, and what this
    /// returns, is the same report.
    pub(crate) fn run(mut self) -> Result<StopReport, Error> {
        let _ = self.shared.thread.set(std::thread::current().id());
        // Only a loop that accepts needs the spare (see `distribute.rs`).
        if self.config.spare_descriptor && self.listener.is_some() {
            self.spare = open_spare();
        }
        let result = self.turn_until_stopped();
        // Close the queue first, so that no `stop()` can wait on a command
        // nobody will read; the `Sender`s in what was left are dropped here,
        // which wakes their callers.
        let leftover = self.shared.close();
        if let Ok(report) = &result {
            *self.shared.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(*report);
            let waiters = self.stopping.take().map(|s| s.waiters).unwrap_or_default();
            for waiter in waiters {
                let _ = waiter.send(*report);
            }
        }
        drop(leftover);
        result
    }

    fn turn_until_stopped(&mut self) -> Result<StopReport, Error> {
        let mut events = Events::with_capacity(self.config.events_capacity);
        loop {
            match self.poll.poll(&mut events, self.next_timeout()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("poll failed, the loop exits: {e}");
                    return Err(e.into());
                }
            }
            self.clock.tick();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_connections(),
                    WAKER => self.run_commands(),
                    // An event for a slot that is empty (the connection closed
                    // earlier in this batch) is ignored; one for a slot reused
                    // meanwhile is merely spurious: the read says WouldBlock.
                    Token(t) => self.connection_event(t - FIRST_CONN, Readiness::from(event)),
                }
            }
            self.run_deferred();
            if let Some(report) = self.finish_stop() {
                return Ok(report);
            }
        }
    }

    /// How long `poll` may sleep: not at all if work is deferred to this
    /// loop, else until the nearest timer, else until an event.
    fn next_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty() || self.accept.again {
            return Some(Duration::ZERO);
        }
        #[cfg(feature = "tls")]
        let handshake = self.handshakes.front().map(|h| h.0);
        #[cfg(not(feature = "tls"))]
        let handshake = None;
        let deadlines = [
            self.accept.retry_at,
            self.timers.next(),
            self.stopping.as_ref().map(|s| s.deadline),
            handshake,
        ];
        let next = deadlines.into_iter().flatten().min()?;
        Some(self.clock.until(next))
    }

    // ----- Accepting ------------------------------------------------------

    /// Accepts until the kernel's queue is empty (`WouldBlock`), the budget
    /// says pause, or this turn's share is used.
    ///
    /// The budget is consulted *before* `accept`: a slot is reserved first,
    /// so a connection is never registered with the poll unless it will be
    /// served, and the count of served connections is exact.
    fn accept_connections(&mut self) {
        self.accept.again = false;
        if self.accept.retry_at.is_some() {
            return; // backing off (EMFILE & co, or the rate limit); a timer brings us back
        }
        if self.listener.is_none() {
            // Stopping, or a loop that never accepts. If a freed slot woke
            // us, it is meant for a loop that can use it: pass the wake on.
            self.server.wake_parked(self.server.budget.unpark_one());
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            // The rate limit first: out of tokens is handled like a full
            // budget, by the overflow strategy.
            let mut refusal = None;
            let mut took_token = false;
            if let Some(rate) = &self.server.accept_rate {
                match rate.try_take(Instant::now()) {
                    Ok(()) => took_token = true,
                    Err(wait) if self.server.budget.overflow() == Overflow::Pause => {
                        // Leave clients in the backlog until a token is due.
                        let wait = wait.as_millis() as Millis + 1;
                        self.accept.retry_at = Some(self.clock.now() + wait);
                        return;
                    }
                    Err(_) => refusal = Some(Refusal::Rate),
                }
            }
            let mut admission = match refusal {
                Some(_) => Admission::Refuse,
                None => self.server.budget.try_acquire(),
            };
            if admission == Admission::Pause {
                // Park, so that a slot freed on any loop wakes this one.
                admission = self.server.budget.park(self.index);
            }
            if admission == Admission::Pause {
                self.give_back_token(took_token);
                if !self.accept.paused {
                    self.accept.paused = true;
                    self.shared.counters.pause_episodes.add(1);
                    log::debug!(
                        "all {} acceptor slots busy: accept paused",
                        self.server.budget.limit()
                    );
                }
                return;
            }
            if self.accept.paused {
                self.accept.paused = false;
                log::debug!("a slot is free: accept resumed");
            }
            let Some(listener) = &self.listener else {
                self.release_unused(admission);
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    if self.accept.failing {
                        self.accept.failing = false;
                        log::info!("accepting again after resource errors");
                    }
                    let mut admission = match admission {
                        Admission::Overflow => self.server.budget.admit_overflow(),
                        other => other,
                    };
                    if !self.config.proxy_protocol && !self.config.filter.permits(peer.ip()) {
                        // Denied: no slot, no message, not registered.
                        self.release_unused(admission);
                        self.give_back_token(took_token);
                        self.shared.counters.denied.add(1);
                        log::debug!("{peer}: denied by the address filter");
                        continue;
                    }
                    if admission == Admission::Serve && !self.take_per_ip(peer) {
                        self.server.release_reservation();
                        admission = Admission::Refuse;
                        refusal = Some(Refusal::PerIp);
                    }
                    match admission {
                        Admission::Serve => self.dispatch(stream, peer),
                        _ => self.refuse(stream, peer, refusal.unwrap_or(Refusal::Budget)),
                    }
                }
                Err(e) => {
                    self.release_unused(admission);
                    self.give_back_token(took_token);
                    match AcceptError::classify(&e) {
                        AcceptError::Drained => return,
                        AcceptError::Retry => continue,
                        AcceptError::BackOff => {
                            if e.raw_os_error() == Some(EMFILE) && self.refuse_with_spare(&e) {
                                continue;
                            }
                            self.back_off_accept(&e);
                            return;
                        }
                    }
                }
            }
        }
        // The turn's share is used; the queue may hold more.
        self.accept.again = true;
    }

    /// Counts the connection against its address's cap, if there is one.
    fn take_per_ip(&self, peer: SocketAddr) -> bool {
        match &self.server.per_ip {
            Some(cap) => cap.try_take(peer.ip()),
            None => true,
        }
    }

    /// A token taken for an accept that found nobody goes back: a drained
    /// queue must not eat the rate.
    fn give_back_token(&self, took: bool) {
        if let (true, Some(rate)) = (took, &self.server.accept_rate) {
            rate.give_back();
        }
    }

    /// Out of descriptors (EMFILE), with a spare one kept for this moment:
    /// close the spare, accept the waiting client, refuse it (message and
    /// close), and open the spare again. Clients queued in the backlog get a
    /// clear answer instead of hanging until descriptors free up. Returns
    /// false when there was no spare, or nobody was waiting.
    fn refuse_with_spare(&mut self, e: &io::Error) -> bool {
        let Some(spare) = self.spare.take() else {
            return false;
        };
        drop(spare);
        let accepted = match &self.listener {
            Some(listener) => listener.accept(),
            None => return false,
        };
        let refused = match accepted {
            Ok((stream, peer)) => {
                self.shared.counters.accept_errors.add(1);
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
        self.spare = open_spare();
        refused
    }

    fn release_unused(&self, admission: Admission) {
        if admission == Admission::Serve {
            self.server.release_reservation();
        }
    }

    /// Serves a connection here, or hands it to the loop the distributor
    /// picks, with its reserved slot (see `distribute.rs`).
    fn dispatch(&mut self, stream: TcpStream, peer: SocketAddr) {
        let target = self.distributor.pick(&self.server);
        if target == self.index {
            return self.serve(stream, peer);
        }
        let slot = Reservation::new(self.server.clone(), target, peer);
        let adopt = Command::Adopt { stream, peer, slot };
        if let Err(back) = self.server.loops[target].try_push(adopt) {
            // The target has exited: serve here rather than drop a client
            // that was promised a slot.
            log::debug!(
                "{peer}: loop {target} has exited; served by loop {}",
                self.index
            );
            if let Command::Adopt { stream, peer, slot } = *back {
                slot.move_to(self.index);
                self.serve(stream, peer);
            }
        }
    }

    /// Out of descriptors or memory: stop accepting for a while. Retrying at
    /// once would spin (the error repeats until something closes), and
    /// waiting for the next event could wait forever: the edge for the
    /// connections already queued has been consumed. So the poll timeout
    /// brings the loop back.
    fn back_off_accept(&mut self, e: &io::Error) {
        self.shared.counters.accept_errors.add(1);
        if !self.accept.failing {
            self.accept.failing = true;
            log::warn!(
                "accept failed ({e}); not accepting for {:?}, then retrying",
                self.config.accept_backoff
            );
        } else {
            log::debug!("accept still failing: {e}");
        }
        self.accept.retry_at =
            Some(self.clock.now() + self.config.accept_backoff.as_millis() as Millis);
    }

    /// Registers a newly accepted connection and greets the handler (or,
    /// with the PROXY protocol on, waits for the header first; with TLS,
    /// for the handshake).
    fn serve(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        self.accept.refusing = false;
        #[cfg(feature = "tls")]
        let session = match &self.server.tls {
            None => None,
            Some(tls) => {
                if self.handshaking >= self.config.max_handshakes {
                    self.refuse_tls(peer);
                    return; // dropping the stream closes it
                }
                self.accept.tls_refusing = false;
                match Session::new(tls.current()) {
                    Ok(session) => Some(session),
                    Err(e) => {
                        log::warn!("{peer}: cannot start a TLS session: {e}");
                        self.server.give_back_admission(peer);
                        self.shared.open.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        };
        #[cfg(feature = "tls")]
        let tls = session.is_some();
        #[cfg(not(feature = "tls"))]
        let tls = false;
        if self.config.nodelay {
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("{peer}: TCP_NODELAY not set: {e}");
            }
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        // Registered for READABLE only; WRITABLE is asked for only while
        // output waits. Input that arrived before this call is reported at
        // once: epoll checks readiness when a socket is added.
        let token = Token(key + FIRST_CONN);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            log::warn!("{peer}: could not register the connection: {e}");
            self.server.give_back_admission(peer);
            self.shared.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let id = ConnId(self.next_id);
        self.next_id += self.id_step;
        let now = self.clock.now();
        let proxied = self.config.proxy_protocol;
        let conn = entry.insert(Connection::new(stream, peer, id, now, proxied, tls));
        self.shared.counters.accepted.add(1);
        log::debug!("{id} {peer}: accepted");
        self.server.check_alarm();
        #[cfg(feature = "tls")]
        if let Some(session) = session {
            // The handler meets the connection when the handshake is done;
            // until then it holds a handshake place, on a deadline (which
            // also covers a PROXY header before the handshake).
            self.sessions.insert(key, session);
            self.handshaking += 1;
            self.handshakes
                .push_back((now + self.handshake_timeout, key, id));
            self.settle(key);
            return;
        }
        if !proxied {
            let cx = Cx::of(&self.config, &self.shared, &self.server, now);
            announce(conn, &mut self.handler, &mut self.write_buf, &cx, key);
            self.after_output(key);
        }
        self.settle(key);
    }

    /// Refuses a connection: one best-effort write of the refusal message,
    /// then close. It is never registered with the poll.
    fn refuse(&mut self, stream: TcpStream, peer: SocketAddr, why: Refusal) {
        let counters = &self.shared.counters;
        match why {
            Refusal::Budget | Refusal::NoDescriptors => counters.refused.add(1),
            Refusal::PerIp => counters.refused_per_ip.add(1),
            Refusal::Rate => counters.rate_limited.add(1),
        }
        if why == Refusal::Budget && !self.accept.refusing {
            self.accept.refusing = true;
            log::warn!(
                "all {} acceptor slots busy: refusing new connections",
                self.server.budget.limit()
            );
        }
        log::debug!("{peer}: refused ({why:?})");
        let message = &self.config.refuse_message;
        #[cfg(feature = "tls")]
        let plaintext = self.server.tls.is_none();
        #[cfg(not(feature = "tls"))]
        let plaintext = true;
        if !message.is_empty() && plaintext {
            // Read what the client may have sent already: closing a socket
            // with unread input sends a reset, which can destroy the message
            // before the client reads it. Neither call can block.
            let _ = (&stream).read(&mut self.read_buf);
            if let Err(e) = (&stream).write(message) {
                log::debug!("{peer}: refusal message not sent: {e}");
            }
        }
    }

    /// Refuses a TLS connection because `max_handshakes` handshakes are in
    /// progress: a flood of handshakes (or of clients that never send one)
    /// must not take the loop's CPU or every slot. What `accept_connections`
    /// took for it is given back; the caller drops the stream, which closes
    /// it.
    #[cfg(feature = "tls")]
    fn refuse_tls(&mut self, peer: SocketAddr) {
        self.server.give_back_admission(peer);
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        self.shared.counters.tls_refused.add(1);
        if !self.accept.tls_refusing {
            self.accept.tls_refusing = true;
            log::warn!(
                "{} TLS handshakes in progress: refusing new TLS connections",
                self.handshaking
            );
        }
        log::debug!("{peer}: refused, too many TLS handshakes in progress");
    }

    // ----- Serving connections ---------------------------------------------

    fn connection_event(&mut self, key: usize, ready: Readiness) {
        if !self.conns.contains(key) {
            return;
        }
        if ready.writable {
            self.write_pending(key);
        }
        if ready.readable {
            self.read_input(key, !ready.read_closed);
        }
        self.settle(key);
    }

    /// Reads and handles input until the socket is drained, the connection
    /// stops reading (throttled, closing), or its turn is used.
    ///
    /// `short_read_drains`: the event said nothing about end-of-stream, so a
    /// short read proves the socket empty (see `# Draining readiness`).
    fn read_input(&mut self, key: usize, short_read_drains: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        #[cfg(feature = "tls")]
        if matches!(conn.phase(), Phase::Handshaking | Phase::Open) {
            if let Some(session) = self.sessions.get_mut(key) {
                let mut serving = Serving {
                    handler: &mut self.handler,
                    read_buf: &mut self.read_buf,
                    write_buf: &mut self.write_buf,
                    config: &self.config,
                    shared: &self.shared,
                    server: &self.server,
                    again: &mut self.again,
                    handshaking: &mut self.handshaking,
                    now: self.clock.now(),
                };
                serving.read_tls(key, conn, session, short_read_drains);
                return;
            }
        }
        // A TLS connection comes here for its PROXY header (plaintext) and
        // while lingering (what the peer still sends is read raw and
        // discarded, never decrypted).
        let cx = Cx::of(&self.config, &self.shared, &self.server, self.clock.now());
        for _ in 0..READS_PER_TURN {
            let phase = conn.phase();
            match phase {
                Phase::Open | Phase::Lingering { .. } | Phase::ProxyHeader => {}
                // Throttled waits for output to drain; Closing only writes.
                _ => return,
            }
            match conn.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    end_of_stream(conn);
                    return;
                }
                Ok(n) => {
                    cx.shared.counters.bytes_in.add(n as u64);
                    let input = &self.read_buf[..n];
                    let resume = match phase {
                        Phase::Open => serve_lines(
                            conn,
                            &mut self.handler,
                            input,
                            &mut self.write_buf,
                            &cx,
                            key,
                        ),
                        Phase::ProxyHeader => read_proxy_header(
                            conn,
                            &mut self.handler,
                            input,
                            &mut self.write_buf,
                            &cx,
                            key,
                        ),
                        // A lingering connection's input is read only to see
                        // the peer close; it is discarded.
                        _ => false,
                    };
                    if resume {
                        self.again.push((key, conn.id));
                    }
                    if n < self.read_buf.len() && short_read_drains {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    conn.begin_close(CloseReason::from_io(&e), true);
                    return;
                }
            }
        }
        // Turn used up with input perhaps still waiting.
        self.again.push((key, conn.id));
    }

    /// Writes the connection's queued output until done or the socket is
    /// full.
    fn write_pending(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.out.is_empty() || matches!(conn.phase(), Phase::Closed { .. }) {
            return;
        }
        match write_some(&mut conn.stream, conn.out.pending()) {
            Ok(n) => {
                self.shared.counters.bytes_out.add(n as u64);
                conn.out.advance(n);
                if n > 0 {
                    conn.last_active = self.clock.now();
                    conn.last_progress = self.clock.now();
                }
            }
            Err(e) => conn.begin_close(CloseReason::from_io(&e), true),
        }
        self.after_output(key);
    }

    /// Applies the water marks and the hard cap after output changed.
    fn after_output(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if apply_marks(conn, &self.config) {
            self.again.push((key, conn.id));
        }
    }

    /// Brings the poll in line with the connection's phase, finishes a
    /// graceful close whose output has drained, and removes a closed
    /// connection. Called after anything happened to a connection.
    fn settle(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Phase::Closing { reason, linger } = conn.phase() {
            // TLS: once the replies are out, close_notify goes after them
            // (once; rustls sends none after a fatal alert).
            #[cfg(feature = "tls")]
            if conn.out.is_empty() {
                if let Some(session) = self.sessions.get_mut(key) {
                    if !session.close_notify_sent {
                        session.close_notify_sent = true;
                        session.tls.send_close_notify();
                        send_tls(conn, session, &self.shared.counters, self.clock.now());
                    }
                }
            }
            if let Phase::Closed { .. } = conn.phase() {
                // Sending close_notify failed: nothing more to flush.
            } else if conn.out.is_empty() {
                // All replies are with the kernel: send our FIN after them.
                // When the peer has closed already (`linger` false: we read
                // its end of stream, so no input is left unread), closing
                // the descriptor sends the FIN by itself; a `shutdown` first
                // would be one more system call per connection for nothing.
                let shut = if linger {
                    conn.stream.shutdown(Shutdown::Write)
                } else {
                    Ok(())
                };
                if linger && shut.is_ok() {
                    conn.set_phase(Phase::Lingering { reason });
                    conn.last_progress = self.clock.now();
                    // The peer's end-of-stream may already be waiting, its
                    // edge consumed while we were only writing: look now.
                    self.again.push((key, conn.id));
                    release_slot(conn, &self.server, &mut self.accept);
                } else {
                    conn.set_phase(Phase::Closed { reason });
                }
            }
        }
        let Some(wanted) = conn.wanted_interest() else {
            self.remove(key);
            return;
        };
        if conn.swap_registered(wanted) != wanted {
            let token = Token(key + FIRST_CONN);
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.stream, token, wanted)
            {
                log::warn!("{} {}: re-register failed: {e}", conn.id, conn.peer);
                conn.begin_close(CloseReason::from_io(&e), true);
                self.remove(key);
                return;
            }
        }
        // Keep one wake-up in the timer heap at or before the connection's
        // next deadline; a later deadline is found when that one comes up.
        if let Some((at, _)) = conn.deadline(&self.timeouts) {
            if at < conn.timer_at {
                conn.timer_at = at;
                self.timers.schedule(at, key, conn.id);
            }
        }
    }

    /// A timeout came due for the connection in slot `key`.
    fn fire(&mut self, key: usize, timeout: Timeout) {
        let conn = &mut self.conns[key];
        log::debug!("{} {}: {timeout:?} timeout", conn.id, conn.peer);
        match (timeout, conn.phase()) {
            (Timeout::Idle, _) => conn.begin_close(CloseReason::IdleTimeout, false),
            (Timeout::WriteStall, _) => conn.begin_close(CloseReason::WriteStalled, true),
            (Timeout::Linger, Phase::Lingering { reason }) => {
                conn.set_phase(Phase::Closed { reason })
            }
            (Timeout::Linger, _) => {}
            (Timeout::ProxyHeader, _) => {
                self.shared.counters.bad_proxy_headers.add(1);
                conn.begin_close(CloseReason::BadProxyHeader, true);
            }
        }
    }

    /// Removes a connection, gives its slot back and tells the handler.
    ///
    /// Dropping the stream closes the descriptor, which also removes it from
    /// the epoll set: no `deregister` call is needed, one syscall saved per
    /// connection.
    fn remove(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        release_slot(&mut conn, &self.server, &mut self.accept);
        // The connection leaves this loop (for the least-connections count).
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        let reason = match conn.phase() {
            Phase::Closed { reason }
            | Phase::Lingering { reason }
            | Phase::Closing { reason, .. } => reason,
            Phase::Open | Phase::Throttled | Phase::ProxyHeader | Phase::Handshaking => {
                CloseReason::Stopped
            }
        };
        log::debug!("{} {}: closed: {}", conn.id, conn.peer, reason);
        // A TLS connection the handler never saw frees its handshake place.
        #[cfg(feature = "tls")]
        if self.sessions.remove(key).is_some() && !conn.announced {
            self.handshaking -= 1;
            let counters = &self.shared.counters;
            match reason {
                CloseReason::HandshakeTimeout => counters.tls_handshake_timeouts.add(1),
                CloseReason::Stopped | CloseReason::BadProxyHeader | CloseReason::Denied => {}
                _ => counters.tls_handshake_failures.add(1),
            }
        }
        if !conn.announced {
            return; // the handler never heard of it (no PROXY header or handshake yet)
        }
        let closed = Disconnect {
            id: conn.id,
            peer_addr: conn.peer,
            state: conn.state,
            reason,
        };
        let handler = &mut self.handler;
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| handler.on_disconnect(closed))) {
            self.shared.counters.handler_panics.add(1);
            log::error!(
                "handler panicked in on_disconnect: {}",
                panic_message(&*panic)
            );
        }
    }

    // ----- Commands from other threads --------------------------------------

    fn run_commands(&mut self) {
        let mut commands = std::mem::take(&mut self.commands);
        self.shared.take_commands(&mut commands);
        for command in commands.drain(..) {
            match command {
                Command::Send { key, id, data } => self.send_from_handle(key, id, &data),
                Command::Close { key, id } => {
                    if let Some(conn) = self.live(key, id) {
                        conn.begin_close(CloseReason::Closed, false);
                        self.settle(key);
                    }
                }
                Command::Stop { deadline, done } => self.begin_stop(deadline, done),
                Command::BudgetChanged => self.accept.again = true,
                Command::Adopt { stream, peer, slot } => {
                    // After a stop began, the connection is dropped
                    // unserved, as the listener's backlog is; the
                    // reservation gives its slot back.
                    if self.stopping.is_none() {
                        slot.keep();
                        self.serve(stream, peer);
                    }
                }
            }
        }
        self.commands = commands;
    }

    /// The connection in slot `key`, if it is still the one with `id`.
    fn live(&mut self, key: usize, id: ConnId) -> Option<&mut Connection<H::State>> {
        match self.conns.get_mut(key) {
            Some(conn) if conn.id == id => Some(conn),
            _ => {
                self.shared.counters.stale_handle_commands.add(1);
                log::debug!("{id}: handle is stale (connection gone); command dropped");
                None
            }
        }
    }

    fn send_from_handle(&mut self, key: usize, id: ConnId, data: &[u8]) {
        let limit = self.config.output_limit;
        let now = self.clock.now();
        let Some(conn) = self.live(key, id) else {
            return;
        };
        match conn.phase() {
            Phase::Open | Phase::Throttled | Phase::Closing { .. } => {}
            // Its write side is shut: nothing more can be sent. (No handle
            // exists before the PROXY header is in and the handshake done.)
            Phase::ProxyHeader
            | Phase::Handshaking
            | Phase::Lingering { .. }
            | Phase::Closed { .. } => return,
        }
        if conn.out.len() + data.len() > limit {
            conn.begin_close(CloseReason::OutputOverflow, true);
        } else {
            #[cfg(feature = "tls")]
            if let Some(session) = self.sessions.get_mut(key) {
                let conn = &mut self.conns[key];
                encrypt(conn, session, data);
                send_tls(conn, session, &self.shared.counters, now);
                self.after_output(key);
                self.settle(key);
                return;
            }
            let conn = &mut self.conns[key];
            if conn.out.is_empty() {
                conn.last_progress = now; // the stall clock starts
            }
            conn.out.for_append().extend_from_slice(data);
            self.write_pending(key);
        }
        self.settle(key);
    }

    // ----- Timers and deferred work -----------------------------------------

    /// Work that does not come with an event: expired timers, accepts and
    /// reads that were cut short or unblocked.
    fn run_deferred(&mut self) {
        #[cfg(feature = "tls")]
        self.expire_handshakes();
        let now = self.clock.now();
        if self.accept.retry_at.is_some_and(|t| t <= now) {
            self.accept.retry_at = None;
            self.accept.again = true;
        }
        while let Some((at, key, id)) = self.timers.pop_due(now) {
            // Skip entries of closed connections, and entries superseded by
            // an earlier wake-up of the same connection (lazy deletion).
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.id != id || conn.timer_at != at {
                continue;
            }
            conn.timer_at = NO_TIMER;
            match conn.deadline(&self.timeouts) {
                Some((deadline, timeout)) if deadline <= now => self.fire(key, timeout),
                // Activity moved the deadline: `settle` re-queues it.
                _ => {}
            }
            self.settle(key);
        }
        // A slot may have been given back without a close (`release_slot`),
        // or by another loop: a paused accept looks again.
        if self.accept.again || (self.accept.paused && self.server.budget.has_room()) {
            self.accept_connections();
        }
        // Swap with an empty vector: entries pushed while we work wait for
        // the next turn, after the poll has had its say.
        for (key, id) in std::mem::take(&mut self.again) {
            if self.conns.get(key).is_some_and(|c| c.id == id) {
                self.read_input(key, false);
                self.settle(key);
            }
        }
    }

    /// Closes the connections whose TLS handshake is past its deadline. A
    /// client that connects and never sends a ClientHello ends here, having
    /// held one handshake place and nothing else.
    #[cfg(feature = "tls")]
    fn expire_handshakes(&mut self) {
        let now = self.clock.now();
        while let Some(&(deadline, key, id)) = self.handshakes.front() {
            if deadline > now {
                break;
            }
            self.handshakes.pop_front();
            if let Some(conn) = self.conns.get_mut(key).filter(|c| c.id == id) {
                if matches!(conn.phase(), Phase::Handshaking | Phase::ProxyHeader) {
                    log::debug!("{} {}: TLS handshake timed out", conn.id, conn.peer);
                    conn.begin_close(CloseReason::HandshakeTimeout, false);
                    self.remove(key);
                }
            }
        }
    }

    // ----- Shutdown ----------------------------------------------------------

    /// Begins a graceful stop: close the listener, then close every
    /// connection after flushing its output.
    fn begin_stop(&mut self, deadline: Instant, done: Option<std::sync::mpsc::Sender<StopReport>>) {
        // One deadline for every loop: what is left of the grace period.
        let grace = deadline.saturating_duration_since(Instant::now());
        if let Some(stopping) = &mut self.stopping {
            stopping.waiters.extend(done);
            return;
        }
        // Connections still in the kernel's backlog were never served; the
        // kernel resets them when the listener closes.
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        log::info!(
            "stopping: {} connections open, grace {grace:?}",
            self.conns.len()
        );
        self.stopping = Some(Stopping {
            deadline: self.clock.now() + grace.as_millis() as Millis,
            open_at_stop: self.conns.len(),
            waiters: done.into_iter().collect(),
        });
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.conns[key].begin_close(CloseReason::Stopped, false);
            self.settle(key);
        }
    }

    /// Ends the stop when every connection is gone, or when the grace period
    /// is over (closing the rest).
    fn finish_stop(&mut self) -> Option<StopReport> {
        let stopping = self.stopping.as_ref()?;
        let mut report = StopReport {
            open_at_stop: stopping.open_at_stop,
            force_closed: 0,
        };
        if !self.conns.is_empty() {
            if self.clock.now() < stopping.deadline {
                return None;
            }
            let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
            for key in keys {
                let conn = &mut self.conns[key];
                // A lingering connection has delivered everything; only one
                // with output still unsent is cut short.
                if !matches!(conn.phase(), Phase::Lingering { .. }) {
                    report.force_closed += 1;
                }
                conn.set_phase(Phase::Closed {
                    reason: CloseReason::Stopped,
                });
                self.remove(key);
            }
            if report.force_closed > 0 {
                log::warn!(
                    "grace period over: {} connections closed with output unsent",
                    report.force_closed
                );
            }
        }
        log::info!("stopped");
        Some(report)
    }
}

/// What serving a connection needs from the loop besides the connection,
/// the handler and the write buffer: borrowed together, so the functions
/// below take one argument instead of five.
pub(crate) struct Cx<'a> {
    pub(crate) config: &'a Config,
    pub(crate) shared: &'a Arc<LoopShared>,
    pub(crate) server: &'a ServerShared,
    pub(crate) now: Millis,
    /// What the handler is told the connection runs over.
    pub(crate) transport: Transport<'a>,
}

impl<'a> Cx<'a> {
    pub(crate) fn of(
        config: &'a Config,
        shared: &'a Arc<LoopShared>,
        server: &'a ServerShared,
        now: Millis,
    ) -> Self {
        Cx {
            config,
            shared,
            server,
            now,
            transport: Transport::Plain,
        }
    }

    /// The same context for a connection that speaks `transport`.
    #[cfg(feature = "tls")]
    pub(crate) fn with_transport(self, transport: Transport<'a>) -> Self {
        Cx { transport, ..self }
    }
}

/// Runs `f` with a [`Conn`] context for `conn`, catching a handler panic.
///
/// Replies go to the loop's shared `write_buf` when the connection has no
/// output queued (then `flush` writes them straight to the socket), or behind
/// its queued output otherwise, so order is always kept. Returns `None` if
/// the handler panicked; the connection is then closed.
///
/// On a TLS connection the queue holds encrypted bytes, so replies always go
/// to `write_buf` (plaintext, encrypted by `flush_tls` afterwards, still in
/// order), and the queue's length counts toward the output limit.
fn with_conn<S, R>(
    conn: &mut Connection<S>,
    write_buf: &mut Vec<u8>,
    cx: &Cx<'_>,
    key: usize,
    f: impl FnOnce(&mut Conn<'_, S>, &mut Vec<u8>) -> R,
) -> Option<R> {
    let mut verdict = None;
    let tls = !matches!(cx.transport, Transport::Plain);
    let (out, queued) = if tls || conn.out.is_empty() {
        (write_buf, conn.out.len())
    } else {
        (conn.out.for_append(), 0)
    };
    let mut ctx = Conn {
        id: conn.id,
        peer: conn.peer,
        proxy: conn.proxy.as_deref().copied(),
        state: &mut conn.state,
        out,
        room: cx.config.output_limit.saturating_sub(queued),
        verdict: &mut verdict,
        holds_slot: &mut conn.holds_slot,
        key,
        shared: cx.shared,
        server: cx.server,
        transport: cx.transport,
    };
    let partial = &mut conn.partial;
    let result = catch_unwind(AssertUnwindSafe(|| f(&mut ctx, partial)));
    match result {
        Ok(r) => {
            if let Some(reason) = verdict {
                conn.begin_close(reason, false);
            }
            Some(r)
        }
        Err(panic) => {
            cx.shared.counters.handler_panics.add(1);
            log::error!(
                "{} {}: handler panicked, closing the connection: {}",
                conn.id,
                conn.peer,
                panic_message(&*panic)
            );
            conn.begin_close(CloseReason::HandlerPanicked, false);
            None
        }
    }
}

/// Tells the handler about a connection (`on_connect`) and writes its
/// greeting, if any.
fn announce<H: Handler>(
    conn: &mut Connection<H::State>,
    handler: &mut H,
    write_buf: &mut Vec<u8>,
    cx: &Cx<'_>,
    key: usize,
) {
    greet(conn, handler, write_buf, cx, key);
    flush(conn, write_buf, &cx.shared.counters, cx.now);
}

/// Tells the handler about a connection (`on_connect`); its greeting, if
/// any, is left in `write_buf` for the caller to send.
pub(crate) fn greet<H: Handler>(
    conn: &mut Connection<H::State>,
    handler: &mut H,
    write_buf: &mut Vec<u8>,
    cx: &Cx<'_>,
    key: usize,
) {
    conn.announced = true;
    with_conn(conn, write_buf, cx, key, |ctx, _| handler.on_connect(ctx));
}

/// Hands `input` to the handler line by line, then writes the replies in one
/// `write`. Returns true when reading should resume (see `apply_marks`).
fn serve_lines<H: Handler>(
    conn: &mut Connection<H::State>,
    handler: &mut H,
    input: &[u8],
    write_buf: &mut Vec<u8>,
    cx: &Cx<'_>,
    key: usize,
) -> bool {
    handle_lines(conn, handler, input, write_buf, cx, key);
    flush(conn, write_buf, &cx.shared.counters, cx.now);
    apply_marks(conn, cx.config)
}

/// Hands `input` to the handler line by line; the replies are left in
/// `write_buf` (or the connection's queue) for the caller to send.
pub(crate) fn handle_lines<H: Handler>(
    conn: &mut Connection<H::State>,
    handler: &mut H,
    input: &[u8],
    write_buf: &mut Vec<u8>,
    cx: &Cx<'_>,
    key: usize,
) {
    let max = cx.config.max_line_len;
    let framed = with_conn(conn, write_buf, cx, key, |ctx, partial| {
        let mut lines = 0;
        let framed = split_lines(partial, input, max, |line| {
            lines += 1;
            handler.on_line(line, ctx);
            if ctx.is_closing() {
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        (framed, lines)
    });
    if let Some((framed, lines)) = framed {
        cx.shared.counters.lines.add(lines);
        if lines > 0 {
            conn.last_active = cx.now;
        }
        if framed == Err(FrameError::LineTooLong) {
            log::debug!(
                "{} {}: line longer than {max} bytes, closing",
                conn.id,
                conn.peer
            );
            conn.begin_close(CloseReason::LineTooLong, false);
        }
    }
}

/// Gathers the PROXY protocol header from the first bytes of a connection.
/// Once it is complete: the peer address becomes the client's, the address
/// filter decides, the handler hears of the connection, and what followed
/// the header is served as lines.
fn read_proxy_header<H: Handler>(
    conn: &mut Connection<H::State>,
    handler: &mut H,
    input: &[u8],
    write_buf: &mut Vec<u8>,
    cx: &Cx<'_>,
    key: usize,
) -> bool {
    conn.partial.extend_from_slice(input);
    let (header, used) = match proxy::parse(&conn.partial) {
        Ok(None) => return false, // incomplete: wait for more
        Ok(Some(done)) => done,
        Err(e) => {
            log::debug!("{} {}: {e}; closing", conn.id, conn.peer);
            cx.shared.counters.bad_proxy_headers.add(1);
            conn.begin_close(CloseReason::BadProxyHeader, true);
            return false;
        }
    };
    let rest = std::mem::take(&mut conn.partial);
    if let ProxyHeader::Proxied { source, .. } = header {
        conn.proxy = Some(Box::new(std::mem::replace(&mut conn.peer, source)));
        log::debug!(
            "{} {}: proxied for {source}",
            conn.id,
            conn.proxy.as_deref().unwrap()
        );
    }
    if !cx.config.filter.permits(conn.peer.ip()) {
        log::debug!("{} {}: denied by the address filter", conn.id, conn.peer);
        cx.shared.counters.denied.add(1);
        conn.begin_close(CloseReason::Denied, true);
        return false;
    }
    #[cfg(feature = "tls")]
    if cx.config.tls.is_some() {
        // TLS starts after the header. What followed it is the start of the
        // ClientHello: the TLS path hands it to rustls before reading more.
        let mut early = rest;
        early.drain(..used);
        conn.partial = early;
        conn.set_phase(Phase::Handshaking);
        return true; // `again` brings the connection to the TLS path
    }
    conn.set_phase(Phase::Open);
    announce(conn, handler, write_buf, cx, key);
    let after = &rest[used..];
    if conn.phase() == Phase::Open && !after.is_empty() {
        return serve_lines(conn, handler, after, write_buf, cx, key);
    }
    apply_marks(conn, cx.config)
}

/// Writes what the handler produced into the shared write buffer; whatever
/// the socket does not take moves to the connection's own output queue.
fn flush<S>(conn: &mut Connection<S>, write_buf: &mut Vec<u8>, counters: &Counters, now: Millis) {
    if write_buf.is_empty() {
        return;
    }
    if !matches!(conn.phase(), Phase::Closed { .. }) {
        match write_some(&mut conn.stream, write_buf) {
            Ok(n) => {
                counters.bytes_out.add(n as u64);
                // Progress, or the moment output starts to wait: either way
                // the stall clock starts from now.
                conn.last_progress = now;
                if n > 0 {
                    conn.last_active = now;
                }
                if n < write_buf.len() {
                    conn.out.for_append().extend_from_slice(&write_buf[n..]);
                }
            }
            Err(e) => conn.begin_close(CloseReason::from_io(&e), true),
        }
    }
    write_buf.clear();
}

/// Gives the connection's acceptor slot back, once. A paused accept resumes
/// at the end of this turn: the edge for the clients waiting in the backlog
/// was consumed long ago, so no event will announce them.
fn release_slot<S>(conn: &mut Connection<S>, server: &ServerShared, accept: &mut AcceptState) {
    if std::mem::replace(&mut conn.holds_slot, false) {
        // Also wakes a loop parked on the budget, if any: a paused accept
        // on another loop resumes too.
        server.give_back_admission(conn.socket_peer());
        if accept.paused {
            accept.again = true;
        }
    }
}

/// Applies the water marks; true when reading should resume.
pub(crate) fn apply_marks<S>(conn: &mut Connection<S>, config: &Config) -> bool {
    conn.apply_water_marks(config.low_water, config.high_water)
}

/// The peer closed its side. An open connection has handled every complete
/// line already; it flushes and closes. A lingering one was waiting for
/// exactly this.
pub(crate) fn end_of_stream<S>(conn: &mut Connection<S>) {
    match conn.phase() {
        Phase::Lingering { reason } => conn.set_phase(Phase::Closed { reason }),
        _ => {
            if !conn.partial.is_empty() {
                log::debug!(
                    "{} {}: {} bytes without a newline dropped at end of stream",
                    conn.id,
                    conn.peer,
                    conn.partial.len()
                );
            }
            conn.begin_close(CloseReason::PeerClosed, true);
        }
    }
}

/// Writes as much of `data` as the socket takes without blocking.
///
/// Stops at `WouldBlock`, and also after a short write: on a stream socket
/// that already proves the send buffer full, and the next call would only say
/// `WouldBlock` (tokio skips it too).
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match stream.write(&data[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                done += n;
                if done < data.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Every acceptor slot is busy (and the strategy says refuse).
    Budget,
    /// Its address is at the per-IP cap.
    PerIp,
    /// The accept rate limit is exceeded.
    Rate,
    /// The process is out of descriptors (refused through the spare one).
    NoDescriptors,
}

/// `EMFILE`: this process is out of descriptors.
const EMFILE: i32 = 24;

/// Opens the spare descriptor kept for `EMFILE`; `None` (logged) if even
/// that fails.
pub(crate) fn open_spare() -> Option<File> {
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

/// The text of a panic payload, for the log.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
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
    fn panic_messages_are_readable() {
        let p = catch_unwind(|| panic!("boom")).unwrap_err();
        assert_eq!(panic_message(&*p), "boom");
        let p = catch_unwind(|| panic!("{}", 42)).unwrap_err();
        assert_eq!(panic_message(&*p), "42");
    }
}
