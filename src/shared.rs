//! What a server's loops share with each other and with the handles that
//! reach them from other threads: the command queue and waker of each loop,
//! its counters, and the server-wide admission state.
//!
//! The event loop owns every socket and every connection; no other thread
//! touches them. A handle instead *asks* the loop: it pushes a [`Command`] on
//! a mutex-guarded queue and wakes the loop through mio's [`Waker`] (an
//! `eventfd` on Linux, which the poll reports as one more readable token).
//! This is the pattern of actix-server's `WakerQueue`.
//!
//! The waker is written only when the queue goes from empty to non-empty: the
//! loop drains the whole queue per wake-up, so a burst of sends from a worker
//! pool costs the loop one wake-up, not one per send.
//!
//! # Backpressure
//!
//! The queue is bounded in bytes ([`Builder::command_queue_limit`](crate::Builder::command_queue_limit)):
//! what other threads send (replies, closures) waits here until the loop's
//! next turn, and a pool that produces faster than the loop writes must not
//! grow it without limit. A command that would pass the bound is refused
//! ([`Error::Full`]) or, for the callers that asked to wait, waits on a
//! condition variable that the loop signals when it takes the queue. A
//! command never waits on a loop thread (it would wait for its own loop, or
//! for a loop that waits for it): there it is queued past the bound, which
//! one handler call can stretch only by what it sends. Commands that carry
//! no bytes and must never fail (a dropped reply slot giving up its place,
//! a stop, a hand-off) are exempt.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::Instant;

use mio::Waker;

use crate::accept_queue::ListenerId;
use crate::admission::{Gate, Refusal, Ticket};
use crate::alarm::AlarmState;
use crate::base::id::ConnId;
use crate::budget::Budget;
use crate::error::Error;
use crate::limits::Handshakes;
use crate::listen::Endpoint;
use crate::metrics::{CloseLabel, LoopTurnHistogram};
use crate::socket::Stream;
#[cfg(feature = "tls")]
use crate::tls_config::TlsShared;
#[cfg(feature = "tls")]
use crate::tls_watch::WatchedFiles;

/// A request from another thread to a loop.
#[derive(Debug)]
pub(crate) enum Command {
    /// Queue bytes on a connection, if it is still the one the handle names.
    Send {
        key: usize,
        id: ConnId,
        data: Vec<u8>,
    },
    /// Fill reply slot `seq` of a connection (`None`: the slot was dropped
    /// unfilled and gives up its place).
    Fill {
        key: usize,
        id: ConnId,
        seq: u64,
        reply: Option<Vec<u8>>,
    },
    /// Run a closure with the connection's `Conn`: a `conn_handle::RunFn`,
    /// its type erased here so that this module need not know `Conn`.
    /// `size` is what its captures weigh, for the queue's bound.
    Run {
        key: usize,
        id: ConnId,
        f: Box<dyn std::any::Any + Send>,
        size: usize,
    },
    /// Close a connection gracefully, if it is still the one the handle names.
    Close { key: usize, id: ConnId },
    /// Stop the loop gracefully by `deadline` (one deadline for every loop
    /// of the server, however late a busy loop reads this); report to `done`.
    Stop {
        deadline: Instant,
        done: Option<mpsc::Sender<StopReport>>,
    },
    /// Stop accepting, serve the open connections until they close, and
    /// stop when they are all gone or at `deadline` (after a hand-over: see
    /// `reactor/handover.rs`).
    Drain { deadline: Instant },
    /// The budget or overflow strategy changed, or a slot freed while this
    /// loop was parked: re-check a paused accept.
    BudgetChanged,
    /// Serve a connection another loop accepted and admitted (see
    /// `reactor/distribute.rs`). Dropping the command unread gives back
    /// everything the connection holds.
    Adopt(Handoff),
}

impl Command {
    /// What the command counts against the queue's bound: its bytes and
    /// the command itself; `None` for those that must never be refused.
    fn cost(&self) -> Option<usize> {
        const ITSELF: usize = std::mem::size_of::<Command>();
        match self {
            Command::Send { data, .. } => Some(ITSELF + data.len()),
            Command::Fill {
                reply: Some(reply), ..
            } => Some(ITSELF + reply.len()),
            Command::Run { size, .. } => Some(ITSELF + size),
            Command::Close { .. } => Some(ITSELF),
            // A dropped slot must always give its place back, or its
            // connection would wait for it forever; the others are the
            // server's own.
            Command::Fill { reply: None, .. }
            | Command::Stop { .. }
            | Command::Drain { .. }
            | Command::BudgetChanged
            | Command::Adopt(_) => None,
        }
    }
}

/// Why a bounded command was not queued; the command comes back.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The queue is at its bound.
    Full(Command),
    /// The loop has exited (the command is dropped).
    Stopped,
}

thread_local! {
    /// This thread runs an event loop, so it must never wait for a queue
    /// to drain: see `# Backpressure`.
    static ON_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as running an event loop while the guard
/// lives.
pub(crate) fn on_loop_thread() -> LoopThreadGuard {
    ON_LOOP.with(|f| f.set(true));
    LoopThreadGuard(())
}

/// See [`on_loop_thread`].
#[derive(Debug)]
pub(crate) struct LoopThreadGuard(());

impl Drop for LoopThreadGuard {
    fn drop(&mut self) {
        ON_LOOP.with(|f| f.set(false));
    }
}

/// A counter written by one thread (its loop) and read by any.
///
/// Only the loop writes, so a relaxed load plus store is enough: no locked
/// read-modify-write instruction on the hot path.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One loop's counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: Counter,
    /// Refused for want of a slot (the budget).
    pub(crate) refused: Counter,
    /// Refused through the spare descriptor: the process was out of them.
    pub(crate) refused_emfile: Counter,
    pub(crate) refused_per_ip: Counter,
    pub(crate) rate_limited: Counter,
    pub(crate) denied: Counter,
    pub(crate) bad_proxy_headers: Counter,
    pub(crate) pause_episodes: Counter,
    pub(crate) accept_errors: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) lines: Counter,
    pub(crate) stale_handle_commands: Counter,
    pub(crate) handler_panics: Counter,
    pub(crate) tls_handshakes: Counter,
    pub(crate) tls_handshake_failures: Counter,
    pub(crate) tls_handshake_timeouts: Counter,
    pub(crate) tls_handshake_evictions: Counter,
    pub(crate) tls_cert_reloads: Counter,
    pub(crate) tls_cert_reload_failures: Counter,
    pub(crate) busy_poll_micros: Counter,
    pub(crate) busy_polls_found: Counter,
    pub(crate) busy_polls_empty: Counter,
    pub(crate) reply_slots_dropped: Counter,
    /// Connections removed from this loop, by [`CloseLabel::index`]: every
    /// accepted connection ends up in exactly one.
    pub(crate) closed: [Counter; CloseLabel::ALL.len()],
}

impl Counters {
    /// Counts a connection turned away, under its reason.
    pub(crate) fn count_refusal(&self, why: Refusal) {
        match why {
            Refusal::Budget => self.refused.add(1),
            Refusal::NoDescriptors => self.refused_emfile.add(1),
            Refusal::PerIp => self.refused_per_ip.add(1),
            Refusal::Rate => self.rate_limited.add(1),
            Refusal::Denied => self.denied.add(1),
        }
    }
}

/// A connection accepted and admitted by one loop, on its way to the loop
/// that serves it, with what it holds: its [`Ticket`] (slot, address place)
/// and its count in the target's load.
#[derive(Debug)]
pub(crate) struct Handoff {
    pub(crate) stream: Stream,
    pub(crate) peer: SocketAddr,
    pub(crate) ticket: Ticket,
    pub(crate) load: Load,
}

/// One connection counted in a loop's `open` (the load least-connections
/// balances) before that loop has adopted it. Dropped unadopted (the loop
/// stopped or exited first), it takes the count back; adopted, the count
/// passes to the connection, which the loop un-counts when it removes it.
#[derive(Debug)]
pub(crate) struct Load(Option<Arc<LoopShared>>);

impl Load {
    /// Counts one connection more on `target`.
    pub(crate) fn on(target: &Arc<LoopShared>) -> Self {
        target.open.fetch_add(1, Ordering::Relaxed);
        Load(Some(target.clone()))
    }

    /// The target serves it: the count stays, owned by the connection.
    pub(crate) fn adopted(mut self) {
        self.0 = None;
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(target) = self.0.take() {
            target.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What one loop shares with the handles that point into it.
#[derive(Debug)]
pub(crate) struct LoopShared {
    waker: Waker,
    queue: Mutex<Queue>,
    /// Signalled when the loop takes the queue (or exits), for the senders
    /// waiting for room.
    room: Condvar,
    /// The queue's bound in bytes ([`Command::cost`]).
    queue_limit: usize,
    /// Commands refused because the queue was full. Written by any thread,
    /// unlike [`Counters`].
    pub(crate) refused_full: AtomicU64,
    pub(crate) counters: Counters,
    /// How long each turn of this loop took (see `metrics.rs`).
    pub(crate) turns: LoopTurnHistogram,
    /// Connections open on this loop, plus those handed to it and not yet
    /// adopted: the load that least-connections balances. Written by the
    /// accepting loop (+1, see `Distributor::pick`) and by this loop (-1,
    /// when a connection is removed), hence a real read-modify-write, unlike
    /// [`Counter`].
    pub(crate) open: AtomicUsize,
    /// TLS handshakes in progress on this loop: taken by this loop, read by
    /// whichever loop admits connections for it.
    pub(crate) handshakes: Arc<Handshakes>,
    /// The loop's thread, once it runs: `stop()` from that thread would wait
    /// for itself.
    pub(crate) thread: OnceLock<ThreadId>,
    /// The report of the last stop, for late `stop()` callers.
    pub(crate) report: Mutex<Option<StopReport>>,
}

/// The command queue, and whether anyone still reads it. Both live under one
/// lock so that a command is either seen by the loop or refused, never
/// stranded in a queue that nobody will drain (a `stop()` waiting on it would
/// wait forever).
#[derive(Debug, Default)]
struct Queue {
    commands: Vec<Command>,
    closed: bool,
    /// What the bounded commands queued weigh ([`Command::cost`]).
    bytes: usize,
    /// Senders waiting for room.
    waiters: usize,
}

impl LoopShared {
    pub(crate) fn new(waker: Waker, max_handshakes: usize) -> Self {
        LoopShared {
            waker,
            queue: Mutex::new(Queue::default()),
            room: Condvar::new(),
            queue_limit: crate::config::DEFAULT_COMMAND_QUEUE_LIMIT,
            refused_full: AtomicU64::new(0),
            counters: Counters::default(),
            turns: LoopTurnHistogram::default(),
            open: AtomicUsize::new(0),
            handshakes: Arc::new(Handshakes::new(max_handshakes)),
            thread: OnceLock::new(),
            report: Mutex::new(None),
        }
    }

    /// With the queue bounded to `bytes` ([`Builder::command_queue_limit`](crate::Builder::command_queue_limit)).
    pub(crate) fn with_queue_limit(mut self, bytes: usize) -> Self {
        self.queue_limit = bytes;
        self
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a command from a handle, within the queue's bound (see
    /// `# Backpressure`): with `wait`, waits for room (never on a loop
    /// thread); without, refuses at once. A command that alone is larger
    /// than the bound is queued when the queue is empty, so that no reply
    /// is too large to ever be delivered.
    pub(crate) fn push_bounded(&self, cmd: Command, wait: bool) -> Result<(), Refused> {
        let Some(cost) = cmd.cost() else {
            return self.try_push(cmd).map_err(|_| Refused::Stopped);
        };
        let on_loop = ON_LOOP.with(Cell::get);
        let mut queue = self.queue();
        loop {
            if queue.closed {
                return Err(Refused::Stopped);
            }
            if queue.bytes == 0 || queue.bytes + cost <= self.queue_limit || (wait && on_loop) {
                break;
            }
            if !wait {
                drop(queue);
                self.refused_full.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::Full(cmd));
            }
            queue.waiters += 1;
            queue = self.room.wait(queue).unwrap_or_else(|e| e.into_inner());
            queue.waiters -= 1;
        }
        queue.bytes += cost;
        queue.commands.push(cmd);
        let first = queue.commands.len() == 1;
        drop(queue);
        if first {
            if let Err(e) = self.waker.wake() {
                // Queued all the same: the loop sees it at its next wake-up.
                log::warn!("waking a loop failed: {e}");
            }
        }
        Ok(())
    }

    /// Queues a command and wakes the loop if the queue was empty.
    pub(crate) fn push(&self, cmd: Command) -> Result<(), Error> {
        if self.enqueue(cmd).map_err(|_| Error::Stopped)? {
            self.waker.wake().map_err(Error::Io)?;
        }
        Ok(())
    }

    /// As [`push`](LoopShared::push), but a command the loop will never see
    /// (it has exited) comes back to the caller, boxed (a rare path: the
    /// common one stays small).
    pub(crate) fn try_push(&self, cmd: Command) -> Result<(), Box<Command>> {
        if self.enqueue(cmd).map_err(Box::new)? {
            if let Err(e) = self.waker.wake() {
                // Queued all the same: the loop sees it at its next wake-up.
                log::warn!("waking a loop failed: {e}");
            }
        }
        Ok(())
    }

    /// Queues a command; true if the queue was empty (the loop needs a
    /// wake-up). A closed queue gives the command back.
    fn enqueue(&self, cmd: Command) -> Result<bool, Command> {
        let mut queue = self.queue();
        if queue.closed {
            return Err(cmd);
        }
        queue.commands.push(cmd);
        Ok(queue.commands.len() == 1)
    }

    /// Senders waiting for room now (tests wait for one to park).
    #[cfg(test)]
    pub(crate) fn queue_waiters(&self) -> usize {
        self.queue().waiters
    }

    /// Swaps the queued commands into `into` (an empty spare vector, so the
    /// queue's allocation is reused rather than freed and grown again).
    pub(crate) fn take_commands(&self, into: &mut Vec<Command>) {
        debug_assert!(into.is_empty());
        let mut queue = self.queue();
        std::mem::swap(&mut queue.commands, into);
        queue.bytes = 0;
        let waiting = queue.waiters > 0;
        drop(queue);
        if waiting {
            self.room.notify_all();
        }
    }

    /// Marks the loop as gone and returns what was still queued; later
    /// pushes fail with [`Error::Stopped`].
    pub(crate) fn close(&self) -> Vec<Command> {
        let mut queue = self.queue();
        queue.closed = true;
        queue.bytes = 0;
        let left = std::mem::take(&mut queue.commands);
        drop(queue);
        // Waiting senders learn that the loop is gone.
        self.room.notify_all();
        left
    }
}

/// What a server shares with all its loops and handles.
#[derive(Debug)]
pub(crate) struct ServerShared {
    /// Every accept-time policy, the budget among them.
    pub(crate) gate: Gate,
    pub(crate) alarm: Option<AlarmState>,
    /// The first TCP endpoint's address, or `0.0.0.0:0` on a server with
    /// Unix listeners only.
    pub(crate) local_addr: SocketAddr,
    /// The listening sockets, as the kernel's socket diagnostics know them
    /// (one per loop with `ReusePort`, else one): to read their accept
    /// queues on a scrape without holding a descriptor (see
    /// `accept_queue.rs`). Empty where the platform does not tell.
    pub(crate) listeners: Vec<ListenerId>,
    /// Every endpoint the server listens on, in the order it was given them.
    pub(crate) endpoints: Vec<Endpoint>,
    /// One per event loop; a loop's index here is its index everywhere
    /// (thread name, connection ids, the budget's parked set).
    pub(crate) loops: Vec<Arc<LoopShared>>,
    /// The TLS config new connections get; `None` on a plaintext server.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<TlsShared>>,
    /// The certificate files loop 0 watches for a renewal; `None` when
    /// watching is off ([`Builder::tls_watch`](crate::Builder::tls_watch)
    /// zero, or a plaintext server).
    #[cfg(feature = "tls")]
    pub(crate) cert_watch: Option<WatchedFiles>,
}

impl ServerShared {
    /// The budget: acceptor slots, shared by every loop.
    pub(crate) fn budget(&self) -> &Arc<Budget> {
        &self.gate.budget
    }

    /// Rings the budget alarm, if one is set and due.
    pub(crate) fn check_alarm(&self) {
        if let Some(alarm) = &self.alarm {
            alarm.check(self.budget());
        }
    }
}

/// The outcome of a graceful stop, from [`ServerHandle::stop`](crate::ServerHandle::stop) or
/// [`Server::run`](crate::Server::run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StopReport {
    /// Connections open when the stop began.
    pub open_at_stop: usize,
    /// Connections that still had unwritten output when the grace period ran
    /// out, and were closed anyway.
    pub force_closed: usize,
    /// Replies deferred ([`Conn::defer`](crate::Conn::defer)) and not yet
    /// written when the grace period ran out: the work in flight that a
    /// longer grace would have delivered. Their connections are among
    /// `force_closed`.
    pub replies_unsent: usize,
}
