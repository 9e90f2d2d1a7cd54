//! The reactor: one thread, one `mio::Poll`, listening sockets and a slab
//! of connections. Start reading here.
//!
//! The loop sleeps in `poll` until the kernel reports *readiness* on some
//! tokens, then does the work each token's owner can now do without
//! blocking, then sleeps again. Nothing here ever blocks except `poll`
//! itself, and `poll` wakes up when there is I/O, a command from another
//! thread (through the waker), or a timer due (through `poll`'s timeout).
//! There is no `sleep` anywhere.
//!
//! # Tokens
//!
//! ```text
//! Token(0)          WAKER      another thread queued a command
//! Token(1)          HANDOVER   the hand-over control socket and its session
//! Token(2 + i)      listener i (TCP or Unix), i < MAX_LISTENERS (64)
//! Token(66 + k)     the connection in slab slot k
//! ```
//!
//! The fixed tokens come first and never move, so a token says what it is
//! by a comparison: below `FIRST_CONN` a listener's index is an offset, at
//! or above it a slab key is. The slab hands out the lowest free slot, so
//! tokens stay small and lookups are an index, not a hash. A slot is reused
//! as soon as its connection is gone, so each connection also has a
//! [`ConnId`] that is never reused: the slot's *generation*. Whatever names
//! a connection from outside the current event (a handle, a timer, the
//! `read_again` list) carries both, and reaches nobody if the ids differ.
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
//! `read_again` and comes back to it without waiting for an edge that may never
//! come.
//!
//! # Layout
//!
//! - this file: the loop itself: a turn, commands from other threads,
//!   timers, stop;
//! - `accept.rs`: draining the listeners, admission, refusing;
//! - `handover.rs`: giving the listeners to a successor process;
//! - `drive.rs`: one connection's socket work, one `drive` per event,
//!   whatever its transport;
//! - `held.rs`: replies held during a batch of events, written once per
//!   connection at the end of it;
//! - `serve.rs`: framing and the handler, with no I/O;
//! - `distribute.rs`: which loop serves a connection;
//! - `sim.rs` (tests and fuzzing only): one connection driven with no
//!   socket.

mod accept;
mod distribute;
mod drive;
mod handover;
mod held;
mod serve;
#[cfg(any(test, fuzzing))]
#[allow(unreachable_pub)]
pub mod sim;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Poll, Token};
use slab::Slab;

use crate::base::close::CloseReason;
use crate::base::id::ConnId;
use crate::base::time::{millis, Clock, Millis};
use crate::busy_poll::BusyPoll;
use crate::config::Config;
use crate::conn_handle::RunFn;
use crate::core::{Phase, Timeout, Timeouts, NO_TIMER};
use crate::error::Error;
use crate::framing::Framing;
use crate::handler::Handler;
use crate::limits::{handshake_to_give_up, Stalled};
use crate::listen::MAX_LISTENERS;
use crate::shared::{Command, ServerShared, StopReport};
use crate::ticker::Ticker;
use crate::timers::TimerHeap;
use crate::transport::Transport;

use accept::AcceptState;
pub(crate) use accept::Listening;
use distribute::Distributor;
use drive::{Connection, Pipeline};
pub(crate) use handover::Handover;

/// The waker's token: another thread queued a command.
pub(crate) const WAKER: Token = Token(0);
/// The hand-over control socket's token (see `handover.rs`).
pub(crate) const HANDOVER: Token = Token(1);
/// Listener `i` of a loop is `Token(FIRST_LISTENER + i)`.
const FIRST_LISTENER: usize = 2;
/// Slab slot `k` is `Token(k + FIRST_CONN)`.
const FIRST_CONN: usize = FIRST_LISTENER + MAX_LISTENERS;

/// The token of a loop's listener `i` (`i < MAX_LISTENERS`).
pub(crate) fn listener_token(i: usize) -> Token {
    debug_assert!(i < MAX_LISTENERS);
    Token(FIRST_LISTENER + i)
}

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

/// A stop in progress.
#[derive(Debug)]
struct Stopping {
    deadline: Millis,
    open_at_stop: usize,
    waiters: Vec<mpsc::Sender<StopReport>>,
}

/// One event loop and everything it owns, for framing `F`, handler `H` and
/// transport `T` (a plaintext loop and a TLS loop are two compilations of
/// the same code).
pub(crate) struct EventLoop<F: Framing, H: Handler<F>, T: Transport> {
    poll: Poll,
    /// What the loop accepts on: empty once a stop has begun, and on a loop
    /// that does not accept (see `distribute.rs`).
    listeners: Vec<Listening>,
    /// The hand-over control socket, on the loop that owns it (loop 0)
    /// when the server offers one ([`Builder::handover`](crate::Builder::handover)).
    handover: Option<Handover>,
    /// This loop's index among the server's loops.
    index: usize,
    /// Which loop serves what this loop accepts.
    distributor: Distributor,
    /// The connections. A slot's key is its token minus `FIRST_CONN`.
    conns: Slab<Connection<H::State, T>>,
    /// The handler, the transport's shared state and the loop's buffers:
    /// what every connection's pipeline runs through.
    pipe: Pipeline<F, H, T>,
    /// The one read buffer of the loop, shared by all its connections: a
    /// connection owns memory only for an incomplete frame or unsent output.
    read_buf: Box<[u8]>,
    /// Ids are unique per server: loop `i` of `n` hands out `i+1, i+1+n, ...`.
    next_id: u64,
    id_step: u64,
    accept: AcceptState,
    /// "Now" for this turn, read once after `poll` returns.
    clock: Clock,
    /// When to look at which connection again (idle, write stall, linger).
    timers: TimerHeap,
    /// Handshake deadlines (TLS). Every entry has the same timeout, so
    /// arrival order is deadline order and a FIFO is the whole timer queue,
    /// O(1) to add and to expire; entries whose handshake is over (or whose
    /// connection closed) are skipped when they come up, and swept out when
    /// the queue reaches the handshake cap, so that it holds at most
    /// [`max_handshakes`](crate::Builder::max_handshakes) entries however
    /// fast clients come (see `track_handshake`). Empty on a plaintext loop.
    handshakes: VecDeque<(Millis, usize, ConnId)>,
    handshake_timeout: Millis,
    /// Scratch space for choosing a handshake to give up (see
    /// `make_room_for_a_handshake`), kept so that a flood costs no
    /// allocation per connection. Empty on a plaintext loop.
    stalled: Vec<Stalled>,
    stalled_per_ip: HashMap<IpAddr, u32>,
    stopping: Option<Stopping>,
    /// After a hand-over, until this time: not accepting, serving the open
    /// connections until they close (see `handover.rs`).
    draining: Option<Millis>,
    /// A spare vector the command queue is swapped into.
    commands: Vec<Command>,
    /// The connections the commands of one turn touched, to write and
    /// reconcile once each after all of them (a spare vector too).
    touched: Vec<(usize, ConnId)>,
    /// One descriptor kept open for `EMFILE` (see `accept.rs`).
    spare_fd: Option<File>,
    /// How long to poll without sleeping after a busy turn.
    busy: BusyPoll,
    /// When the handler's `on_tick` is due; `None`: ticks are off.
    ticker: Option<Ticker>,
}

impl<F: Framing, H: Handler<F>, T: Transport> EventLoop<F, H, T> {
    /// A loop on `poll`, in which `listeners` (with their tokens, see
    /// [`listener_token`]) and `handover` (with [`HANDOVER`]) are
    /// registered.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        poll: Poll,
        listeners: Vec<Listening>,
        handover: Option<Handover>,
        handler: H,
        framing: F,
        transport: T::Loop,
        config: Config,
        server: Arc<ServerShared>,
        index: usize,
    ) -> Self {
        let shared = server.loops[index].clone();
        let timeouts = Timeouts {
            idle: millis(config.idle_timeout),
            frame: millis(config.frame_timeout),
            write_stall: millis(config.write_stall_timeout),
            linger: millis(config.linger).unwrap_or(1),
            proxy_header: millis(config.proxy_header_timeout).unwrap_or(1),
        };
        EventLoop {
            poll,
            listeners,
            handover,
            index,
            distributor: Distributor::new(config.distribution, index),
            // Room for 1,024 connections from the start (128 KiB of address
            // space, pages touched only as connections come): an allocation
            // that size is mapped on its own, and grows by remapping, so
            // the slab's doublings leave no freed copies resident in the
            // heap. Measured: 141 B of RSS per idle connection with
            // `Slab::new()`, 128 B (the entry itself) with this.
            conns: Slab::with_capacity(1024),
            next_id: index as u64 + 1,
            id_step: server.loops.len() as u64,
            handshake_timeout: millis(config.handshake_timeout).unwrap_or(1),
            read_buf: vec![0; config.read_buffer].into_boxed_slice(),
            busy: BusyPoll::new(config.busy_poll),
            ticker: Ticker::new(config.tick, 0),
            pipe: Pipeline::new(
                handler, framing, transport, config, shared, server, timeouts,
            ),
            accept: AcceptState::default(),
            clock: Clock::new(),
            timers: TimerHeap::default(),
            handshakes: VecDeque::new(),
            stalled: Vec::new(),
            stalled_per_ip: HashMap::new(),
            stopping: None,
            draining: None,
            commands: Vec::new(),
            touched: Vec::new(),
            spare_fd: None,
        }
    }

    /// Runs until stopped. The answer to every `stop()` caller, and what this
    /// returns, is the same report.
    pub(crate) fn run(mut self) -> Result<StopReport, Error> {
        let shared = self.pipe.shared.clone();
        let _ = shared.thread.set(std::thread::current().id());
        // Senders on this thread must never wait for a queue to drain.
        let _on_loop = crate::shared::on_loop_thread();
        // Only a loop that accepts needs the spare (see `accept.rs`).
        if self.pipe.config.spare_descriptor && !self.listeners.is_empty() {
            self.spare_fd = accept::open_spare();
        }
        let result = self.turn_until_stopped();
        // Close the queue first, so that no `stop()` can wait on a command
        // nobody will read; the `Sender`s in what was left are dropped here,
        // which wakes their callers.
        let leftover = shared.close();
        if let Ok(report) = &result {
            *shared.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(*report);
            let waiters = self.stopping.take().map(|s| s.waiters).unwrap_or_default();
            for waiter in waiters {
                let _ = waiter.send(*report);
            }
        }
        drop(leftover);
        result
    }

    /// The loop. One turn: sleep in `poll`, read the clock once, handle each
    /// ready token, then the work that came due without an event.
    ///
    /// Each turn's length, from `poll` returning to the next `poll`, goes to
    /// the loop's turn histogram (`netpool_loop_turn_seconds`): the time the
    /// loop was busy, so a handler that blocks shows there. It costs one
    /// more clock reading per turn, not per event.
    fn turn_until_stopped(&mut self) -> Result<StopReport, Error> {
        let mut events = Events::with_capacity(self.pipe.config.events_capacity);
        let mut worked = false;
        let shared = self.pipe.shared.clone();
        loop {
            match self.wait(&mut events, worked) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("poll failed, the loop exits: {e}");
                    return Err(e.into());
                }
            }
            worked = !events.is_empty();
            let turn_start = Instant::now();
            self.pipe.now = self.clock.tick_at(turn_start);
            self.pipe.holding = self.pipe.config.write_at_turn_end;
            for event in events.iter() {
                match event.token() {
                    WAKER => {
                        // Replies held so far leave before anything a
                        // command queues behind them, and what commands
                        // produce is written at once (see `held.rs`).
                        self.write_held();
                        let holding = std::mem::replace(&mut self.pipe.holding, false);
                        self.run_commands();
                        self.pipe.holding = holding;
                    }
                    HANDOVER => self.handover_ready(),
                    Token(t) if t < FIRST_CONN => self.listener_ready(t - FIRST_LISTENER),
                    // An event for a slot that is empty (the connection closed
                    // earlier in this batch) is ignored; one for a slot reused
                    // meanwhile is merely spurious: the read says WouldBlock.
                    Token(t) => {
                        self.drive(t - FIRST_CONN, Readiness::from(event));
                        if self.pipe.held.len() >= held::LIMIT {
                            self.write_held();
                        }
                    }
                }
            }
            // The batch is done: its held replies are written before
            // anything else runs (timers, `read_again`), which writes at once.
            self.pipe.holding = false;
            self.write_held();
            self.run_deferred();
            self.check_drain();
            if let Some(report) = self.finish_stop() {
                return Ok(report);
            }
            shared.turns.record(turn_start.elapsed());
        }
    }

    /// Waits for events: with busy-polling on and after a turn that `worked`,
    /// first polls without sleeping for up to the spin budget (see
    /// `busy_poll.rs`), then sleeps in `poll` until an event or the next
    /// timer.
    fn wait(&mut self, events: &mut Events, worked: bool) -> io::Result<()> {
        let timeout = self.next_timeout();
        let spin = self.busy.budget(worked);
        if spin.is_zero() || timeout == Some(Duration::ZERO) {
            return self.poll.poll(events, timeout);
        }
        // Never spin past a timer that is due sooner.
        let spin = timeout.map_or(spin, |t| spin.min(t));
        let start = Instant::now();
        let found = loop {
            self.poll.poll(events, Some(Duration::ZERO))?;
            if !events.is_empty() {
                break true;
            }
            if start.elapsed() >= spin {
                break false;
            }
            std::hint::spin_loop();
        };
        let counters = &self.pipe.shared.counters;
        let spun = start.elapsed();
        counters.busy_poll_micros.add(spun.as_micros() as u64);
        self.busy.spun(found);
        if found {
            counters.busy_polls_found.add(1);
            return Ok(());
        }
        counters.busy_polls_empty.add(1);
        let slept = Instant::now();
        self.poll.poll(events, self.next_timeout())?;
        self.busy.slept(spun, slept.elapsed(), !events.is_empty());
        Ok(())
    }

    /// How long `poll` may sleep: not at all if work is deferred to this
    /// loop, else until the nearest timer, else until an event.
    fn next_timeout(&self) -> Option<Duration> {
        if !self.pipe.read_again.is_empty() || self.accept.retry_this_turn {
            return Some(Duration::ZERO);
        }
        let deadlines = [
            self.accept.retry_at(),
            self.accept.retire_at,
            self.timers.next(),
            self.stopping.as_ref().map(|s| s.deadline),
            self.handshakes.front().map(|h| h.0),
            T::credentials_check_at(&self.pipe.transport),
            self.ticker.as_ref().map(Ticker::next),
            self.handover_deadline(),
            self.draining,
        ];
        let next = deadlines.into_iter().flatten().min()?;
        Some(self.clock.until(next))
    }

    // ----- Commands from other threads --------------------------------------

    /// Runs what other threads asked. Output for a connection (sends, filled
    /// replies, closures' replies) is queued on it as the commands come,
    /// and written once, after all of them: sends that arrive together
    /// leave in one `write` (see `shared.rs`'s `# Backpressure` for how
    /// many can arrive).
    fn run_commands(&mut self) {
        let mut commands = std::mem::take(&mut self.commands);
        let mut touched = std::mem::take(&mut self.touched);
        self.pipe.shared.take_commands(&mut commands);
        for command in commands.drain(..) {
            let (key, id) = match command {
                Command::Send { key, id, .. }
                | Command::Fill { key, id, .. }
                | Command::Run { key, id, .. }
                | Command::Close { key, id } => (key, id),
                Command::Stop { deadline, done } => {
                    self.begin_stop(deadline, done);
                    continue;
                }
                Command::BudgetChanged => {
                    self.accept.retry_this_turn = true;
                    continue;
                }
                Command::Drain { deadline } => {
                    self.begin_drain(deadline);
                    continue;
                }
                Command::Adopt(handoff) => {
                    // After a stop began, the connection is dropped
                    // unserved, as the listener's backlog is; dropping the
                    // hand-off gives back its slot and its load.
                    if self.stopping.is_none() {
                        handoff.load.adopted();
                        self.serve(handoff.stream, handoff.peer, handoff.ticket);
                    }
                    continue;
                }
            };
            // The id is the slot's generation: a command for a connection
            // that is gone reaches nobody, even if its slot was reused.
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.core.id == id) else {
                self.stale(id);
                continue;
            };
            match command {
                Command::Send { data, .. } => self.pipe.queue_send(conn, data),
                Command::Fill { seq, reply, .. } => self.pipe.fill(conn, seq, reply),
                Command::Run { f, .. } => match f.downcast::<RunFn>() {
                    Ok(f) => self.pipe.run(conn, key, *f),
                    Err(_) => unreachable!("ConnHandle::run sends a RunFn"),
                },
                Command::Close { .. } => conn.core.handle_close(CloseReason::Closed, false),
                _ => unreachable!("matched above"),
            }
            if touched.last() != Some(&(key, id)) {
                touched.push((key, id));
            }
        }
        for (key, id) in touched.drain(..) {
            if let Some(conn) = self.conns.get_mut(key).filter(|c| c.core.id == id) {
                self.pipe.write_pending(conn, key);
                self.reconcile(key);
            }
        }
        self.commands = commands;
        self.touched = touched;
    }

    /// A command for connection `id` found its slot empty or reused (the
    /// id is the slot's generation): it reaches nobody, and is counted.
    fn stale(&self, id: ConnId) {
        self.pipe.shared.counters.stale_handle_commands.add(1);
        log::debug!("{id}: handle is stale (connection gone); command dropped");
    }

    // ----- Timers and deferred work -----------------------------------------

    /// Work that does not come with an event: expired timers, accepts and
    /// reads that were cut short or unblocked.
    fn run_deferred(&mut self) {
        self.expire_handshakes();
        let now = self.clock.now();
        // Renewed certificate files (loop 0 of a TLS server given PEM
        // paths; see `transport/tls.rs`, which logs what it found).
        match T::check_credentials(&mut self.pipe.transport, now) {
            Some(Ok(())) => self.pipe.shared.counters.tls_cert_reloads.add(1),
            Some(Err(_)) => self.pipe.shared.counters.tls_cert_reload_failures.add(1),
            None => {}
        }
        if self.handover_deadline().is_some_and(|at| at <= now) {
            self.handover_ready();
        }
        if self.accept.retry_due(now) {
            self.accept.retry_this_turn = true;
        }
        if self.accept.retire_at.is_some_and(|at| at <= now) {
            self.retire_grown_slots();
        }
        while let Some((at, key, id)) = self.timers.pop_due(now) {
            // Skip entries of closed connections, and entries superseded by
            // an earlier wake-up of the same connection (lazy deletion).
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.core.id != id || conn.core.timer_at != at {
                continue;
            }
            conn.core.timer_at = NO_TIMER;
            // If activity moved the deadline, nothing fires and `reconcile`
            // queues the new one.
            if let Some(Timeout::ProxyHeader) = conn.core.handle_timeout(now, &self.pipe.timeouts) {
                self.pipe.shared.counters.bad_proxy_headers.add(1);
            }
            self.reconcile(key);
        }
        // A slot may have been given back without a close (lingering,
        // `release_slot`), or by another loop: a paused accept looks again.
        if self.accept.retry_this_turn
            || (self.accept.is_paused() && self.pipe.server.budget().has_room())
        {
            self.accept_connections();
        }
        // Swap with an empty vector: entries pushed while we work wait for
        // the next turn, after the poll has had its say.
        for (key, id) in std::mem::take(&mut self.pipe.read_again) {
            if let Some(conn) = self.conns.get_mut(key).filter(|c| c.core.id == id) {
                self.pipe.read(conn, key, false, &mut self.read_buf);
                self.reconcile(key);
            }
        }
        self.tick();
    }

    /// Calls the handler's `on_tick` once its period has come round
    /// (`Builder::tick`; see `ticker.rs`), catching a panic as the pipeline
    /// does for the other handler calls.
    fn tick(&mut self) {
        let Some(ticker) = &mut self.ticker else {
            return;
        };
        if !ticker.due(self.clock.now()) {
            return;
        }
        let handler = &mut self.pipe.handler;
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| handler.on_tick())) {
            self.pipe.shared.counters.handler_panics.add(1);
            log::error!(
                "handler panicked in on_tick: {}",
                serve::panic_message(&*panic)
            );
        }
    }

    /// Closes the connections whose TLS handshake is past its deadline. A
    /// client that connects and never sends a ClientHello ends here, having
    /// held one handshake place and nothing else.
    fn expire_handshakes(&mut self) {
        let now = self.clock.now();
        while let Some(&(deadline, key, id)) = self.handshakes.front() {
            if deadline > now {
                break;
            }
            self.handshakes.pop_front();
            if let Some(conn) = self.conns.get_mut(key).filter(|c| c.core.id == id) {
                if matches!(conn.core.phase(), Phase::Handshaking | Phase::ProxyHeader) {
                    log::debug!("{} {}: TLS handshake timed out", id, conn.core.peer);
                    conn.core.handle_close(CloseReason::HandshakeTimeout, false);
                    self.reconcile(key);
                }
            }
        }
    }

    /// Adds a new connection's handshake deadline. Entries of handshakes
    /// that are over stay until their deadline comes up, unless the queue
    /// has reached the cap: then they are swept out first. Every live entry
    /// holds one of the loop's handshake places, of which there are at most
    /// the cap (see `make_room_for_a_handshake`), so the queue never holds
    /// more than that; the sweep is O(cap), and runs at most once per cap's
    /// worth of new handshakes unless the places are all taken.
    fn track_handshake(&mut self, deadline: Millis, key: usize, id: ConnId) {
        if self.handshakes.len() >= self.pipe.config.max_handshakes {
            let conns = &self.conns;
            self.handshakes
                .retain(|&(_, key, id)| handshake_of(conns, key, id).is_some());
        }
        self.handshakes.push_back((deadline, key, id));
        debug_assert!(self.handshakes.len() <= self.pipe.config.max_handshakes);
    }

    /// Every handshake place of the loop is taken and a new connection
    /// needs one: a handshake in progress is closed to make room (which one:
    /// [`handshake_to_give_up`]; of the address holding the most, the one
    /// that has made the least progress for the longest).
    ///
    /// So a flood of clients that send a ClientHello and go silent (or
    /// never send one) cannot lock the others out, as refusing the newcomer
    /// did. The cap still bounds the handshakes in progress, and so their
    /// memory and the work they can ask for. The choice is O(cap), next to
    /// a handshake's public-key operations; its buffers are kept by the loop.
    pub(super) fn make_room_for_a_handshake(&mut self) {
        let conns = &self.conns;
        let stalled = &mut self.stalled;
        stalled.clear();
        stalled.extend(self.handshakes.iter().filter_map(|&(_, key, id)| {
            let (conn, progress) = handshake_of(conns, key, id)?;
            Some(Stalled {
                ip: conn.core.peer.ip(),
                since: conn.core.last_active,
                progress,
                key,
            })
        }));
        let Some(key) = handshake_to_give_up(stalled, &mut self.stalled_per_ip) else {
            debug_assert!(false, "the cap is full, yet no handshake holds a place");
            return;
        };
        let conn = &mut self.conns[key];
        log::debug!(
            "{} {}: TLS handshake given up to make room ({} bytes in, stalled {} ms)",
            conn.core.id,
            conn.core.peer,
            conn.transport.handshake_progress().unwrap_or(0),
            self.clock.now().saturating_sub(conn.core.last_active)
        );
        conn.core.handle_close(CloseReason::HandshakeEvicted, false);
        self.reconcile(key);
    }

    // ----- Shutdown ----------------------------------------------------------

    /// Begins a graceful stop: close the listener, then close every
    /// connection after flushing its output.
    fn begin_stop(&mut self, deadline: Instant, done: Option<mpsc::Sender<StopReport>>) {
        // One deadline for every loop: what is left of the grace period.
        let grace = deadline.saturating_duration_since(Instant::now());
        if let Some(stopping) = &mut self.stopping {
            stopping.waiters.extend(done);
            return;
        }
        self.stop_accepting();
        self.draining = None;
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
            self.conns[key]
                .core
                .handle_close(CloseReason::Stopped, false);
            self.reconcile(key);
        }
    }

    /// Closes the listeners, and the hand-over's control socket: no new
    /// connection from here on.
    fn stop_accepting(&mut self) {
        // Connections still in the kernel's backlog were never served; the
        // kernel resets them when the listener closes (unless a successor
        // holds it: see `handover.rs`). A Unix socket's file is removed
        // while its socket still listens (`Listening::guard`).
        for mut listening in self.listeners.drain(..) {
            drop(listening.guard.take());
            let _ = self.poll.registry().deregister(&mut listening.socket);
        }
        // No successor can take over a server that is stopping; its control
        // file goes too.
        if let Some(mut handover) = self.handover.take() {
            let _ = self.poll.registry().deregister(&mut handover.server);
        }
    }

    /// Ends the stop when every connection is gone, or when the grace period
    /// is over (closing the rest).
    fn finish_stop(&mut self) -> Option<StopReport> {
        let stopping = self.stopping.as_ref()?;
        let mut report = StopReport {
            open_at_stop: stopping.open_at_stop,
            ..StopReport::default()
        };
        if !self.conns.is_empty() {
            if self.clock.now() < stopping.deadline {
                return None;
            }
            let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
            for key in keys {
                let core = &mut self.conns[key].core;
                // A lingering connection has delivered everything; only one
                // with output still unsent, or replies still owed by other
                // threads, is cut short.
                if !matches!(core.phase(), Phase::Lingering { .. }) {
                    report.force_closed += 1;
                    report.replies_unsent += core.out.outstanding();
                }
                core.set_phase(Phase::Closed {
                    reason: CloseReason::Stopped,
                });
                self.remove(key);
            }
            if report.force_closed > 0 {
                log::warn!(
                    "grace period over: {} connections closed with output unsent, \
                     {} deferred replies among it",
                    report.force_closed,
                    report.replies_unsent
                );
            }
        }
        log::info!("stopped");
        Some(report)
    }
}

/// The connection in slot `key`, if it is still `id` and its handshake
/// holds a place, with how far that handshake has come.
fn handshake_of<S, T: Transport>(
    conns: &Slab<Connection<S, T>>,
    key: usize,
    id: ConnId,
) -> Option<(&Connection<S, T>, u32)> {
    let conn = conns.get(key).filter(|c| c.core.id == id)?;
    Some((conn, conn.transport.handshake_progress()?))
}
