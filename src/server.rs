//! [`Server`]: bound listeners with their polls, ready to run a handler;
//! and binding, the [`Builder`]'s last step: TCP addresses, Unix socket
//! paths, adopted listeners, sockets passed by systemd, and sockets taken
//! over from a running predecessor.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Interest, Poll, Waker};

use crate::accept_queue::ListenerId;
use crate::admission::Gate;
use crate::alarm::AlarmState;
use crate::budget::Budget;
use crate::builder::Builder;
use crate::config::Config;
use crate::distribution::Distribution;
use crate::error::{ConfigError, Error};
use crate::framing::{Framing, Lines};
use crate::handler::Handler;
use crate::handles::ServerHandle;
use crate::listen::{
    Confirmation, Endpoint, HandoverServer, Inherited, Listener, UnixPathGuard, MAX_LISTENERS,
};
use crate::reactor::{listener_token, EventLoop, Handover, Listening, HANDOVER, WAKER};
use crate::shared::{Command, LoopShared, ServerShared, StopReport};
use crate::socket::{ListenSocket, NO_ADDR};
use crate::transport::Plain;

/// How long each step of a hand-over may take: the successor's connect and
/// receipt of the sockets, and the predecessor's answer to its
/// confirmation; on the old server's side, how long a successor has to
/// confirm after it received the sockets.
pub(crate) const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound, listening server, not yet running.
///
/// Binding happens when the server is built, so the address (and a
/// [`ServerHandle`]) are known before the first connection is served. Then
/// either [`run`](Server::run) it on this thread, or [`spawn`](Server::spawn)
/// it on a new one; with several loops ([`Builder::workers`]),
/// [`run_workers`](Server::run_workers) or [`spawn_workers`](Server::spawn_workers).
pub struct Server<F: Framing = Lines> {
    config: Config,
    /// The framing each loop gets a copy of.
    framing: F,
    /// Each loop's poll, with the listeners it accepts on registered (see
    /// `reactor/distribute.rs`). `None` once the loop has been started.
    loops: Vec<Option<LoopParts>>,
    shared: Arc<ServerShared>,
    /// A server built by [`Builder::take_over`]: its predecessor is told to
    /// stop accepting when this server starts.
    succession: Option<Succession>,
}

/// One loop, before it runs.
struct LoopParts {
    poll: Poll,
    listeners: Vec<Listening>,
    /// On loop 0, with [`Builder::handover`].
    handover: Option<Handover>,
}

/// What a server that took its sockets over still owes its predecessor.
struct Succession {
    confirmation: Confirmation,
    /// With [`Builder::handover`], the sockets to offer our own successor,
    /// once the control path is ours (the predecessor gives it up when it
    /// confirms).
    offer: Option<Vec<Inherited>>,
}

/// One endpoint the server listens on, as binding or adoption made it.
pub(crate) struct Bound {
    /// For a Unix socket file this server bound (or took over): removes
    /// the file on a clean stop. First, so that it is dropped before the
    /// sockets (see `UnixPathGuard`).
    pub(crate) guard: Option<UnixPathGuard>,
    /// One socket, or with [`Distribution::ReusePort`] one per loop.
    pub(crate) sockets: Vec<Listener>,
    /// The name systemd or a predecessor passed it under, passed on in a
    /// hand-over.
    pub(crate) name: Option<String>,
}

impl Bound {
    pub(crate) fn one(
        listener: Listener,
        guard: Option<UnixPathGuard>,
        name: Option<String>,
    ) -> Bound {
        Bound {
            guard,
            sockets: vec![listener],
            name,
        }
    }
}

impl<F: Framing> fmt::Debug for Server<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("endpoints", &self.shared.endpoints)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A [`Builder`] with every setting at its default (lines, up to 64 KiB).
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// Binds to `addr` with the default settings.
    ///
    /// # Errors
    ///
    /// As [`Builder::bind`].
    pub fn bind(addr: SocketAddr) -> Result<Server, Error> {
        Builder::new().bind(addr)
    }
}

impl<F: Framing> Server<F> {
    /// A server on `bound`, with the predecessor to confirm to if it took
    /// its sockets over.
    pub(crate) fn new(
        config: Config,
        framing: F,
        bound: Vec<Bound>,
        confirmation: Option<Confirmation>,
    ) -> Result<Server<F>, Error> {
        // Certificate problems are the caller's to fix: report them before
        // anything else is set up.
        #[cfg(feature = "tls")]
        let (tls, cert_watch) = {
            use crate::tls_config::{TlsShared, TlsSource};
            // The files are stamped before they are read, so that a change
            // while they are read is seen at the first look.
            let cert_watch = match &config.tls {
                Some(source) if !config.tls_watch.is_zero() => {
                    Some(Arc::new(std::sync::Mutex::new(match source {
                        TlsSource::Pem { cert, key } => {
                            Some(crate::tls_watch::CertWatch::new(cert, key))
                        }
                        TlsSource::Config(_) => None,
                    })))
                }
                _ => None,
            };
            let tls = match &config.tls {
                Some(source) => Some(Arc::new(TlsShared::new(source, config.alpn.clone())?)),
                None => None,
            };
            (tls, cert_watch)
        };
        if bound.is_empty() {
            return Err(ConfigError::new("listeners", "no listener to serve on").into());
        }
        if bound.len() > MAX_LISTENERS {
            return Err(ConfigError::new(
                "listeners",
                format!(
                    "{} listeners: a server accepts on at most {MAX_LISTENERS}",
                    bound.len()
                ),
            )
            .into());
        }
        let endpoints = bound
            .iter()
            .map(|b| b.sockets[0].endpoint())
            .collect::<Result<Vec<_>, _>>()?;
        let local_addr = endpoints.iter().find_map(Endpoint::tcp).unwrap_or(NO_ADDR);
        // Each distinct TCP socket, for reading its accept queue on a scrape
        // (the `dup`s made below for `Shared` are the same socket; a Unix
        // socket has none that the kernel's socket diagnostics report here).
        let ids = bound
            .iter()
            .flat_map(|b| &b.sockets)
            .filter_map(|l| match ListenerId::of(l) {
                Ok(id) => id,
                Err(e) => {
                    log::debug!("the accept queue of {l} will not be shown: {e}");
                    None
                }
            });
        let listener_ids: Vec<ListenerId> = ids.collect();
        // Duplicates of every socket, made now: a successor may take them
        // over while the loops own the originals.
        let offer = match config.handover {
            Some(_) => Some(offer(&bound)?),
            None => None,
        };
        let n = config.workers;
        let mut per_loop: Vec<Vec<Listening>> = (0..n).map(|_| Vec::new()).collect();
        for Bound {
            mut guard, sockets, ..
        } in bound
        {
            let split = sockets.len() == n && n > 1;
            for (i, socket) in sockets.into_iter().enumerate() {
                if i == 0 && !split {
                    for loop_listeners in per_loop.iter_mut().skip(1) {
                        match config.distribution {
                            // Only loop 0 accepts.
                            Distribution::Handoff => {}
                            // Every loop polls its own descriptor of the one
                            // listening socket (`dup`), so that each loop can
                            // drop its own when it stops; the socket closes
                            // with the last one. (With `ReusePort`, so does a
                            // socket that cannot be split: a Unix one.)
                            Distribution::Shared | Distribution::ReusePort => {
                                let dup = ListenSocket::new(socket.try_clone()?);
                                loop_listeners.push(Listening::new(dup, None));
                            }
                        }
                    }
                }
                // Loop 0 owns the file (see `Listening::guard`).
                let guard = if i == 0 { guard.take() } else { None };
                per_loop[i].push(Listening::new(ListenSocket::new(socket), guard));
            }
        }
        let mut loops = Vec::with_capacity(n);
        let mut shared_loops = Vec::with_capacity(n);
        for mut listeners in per_loop {
            let poll = Poll::new()?;
            for (i, listening) in listeners.iter_mut().enumerate() {
                poll.registry().register(
                    &mut listening.socket,
                    listener_token(i),
                    Interest::READABLE,
                )?;
            }
            let waker = Waker::new(poll.registry(), WAKER)?;
            shared_loops.push(Arc::new(
                LoopShared::new(waker, config.max_handshakes)
                    .with_queue_limit(config.command_queue_limit),
            ));
            loops.push(Some(LoopParts {
                poll,
                listeners,
                handover: None,
            }));
        }
        let budget = Arc::new(Budget::new(config.acceptors, config.overflow, n));
        // A freed slot wakes a parked loop through that loop's command
        // queue. Weak: the loops' queues hold slots, which hold the budget.
        let wakeable: Vec<Weak<LoopShared>> = shared_loops.iter().map(Arc::downgrade).collect();
        budget.set_waker(Box::new(move |i| {
            wakeable[i]
                .upgrade()
                .is_some_and(|l| l.push(Command::BudgetChanged).is_ok())
        }));
        let gate = Gate::new(
            budget,
            config.max_per_ip,
            config.accept_rate,
            config.filter.clone(),
            config.proxy_protocol,
        );
        let shared = Arc::new(ServerShared {
            gate,
            alarm: config.alarm.clone().map(AlarmState::new),
            local_addr,
            listeners: listener_ids,
            endpoints,
            loops: shared_loops,
            #[cfg(feature = "tls")]
            tls,
            #[cfg(feature = "tls")]
            cert_watch,
        });
        let mut server = Server {
            config,
            framing,
            loops,
            shared,
            succession: None,
        };
        match (confirmation, offer) {
            // The control path is the predecessor's until it confirms.
            (Some(confirmation), offer) => {
                server.succession = Some(Succession {
                    confirmation,
                    offer,
                })
            }
            (None, Some(offer)) => server.listen_for_successor(offer)?,
            (None, None) => {}
        }
        Ok(server)
    }

    /// Binds the hand-over control socket and gives it to loop 0.
    fn listen_for_successor(&mut self, offer: Vec<Inherited>) -> Result<(), Error> {
        let Some(config) = &self.config.handover else {
            return Ok(());
        };
        let mut server = HandoverServer::bind(&config.path, offer, HANDOVER_TIMEOUT)?;
        let parts = self.loops[0].as_mut().expect("loop 0 has not started");
        parts
            .poll
            .registry()
            .register(&mut server, HANDOVER, Interest::READABLE)?;
        log::info!(
            "a successor may take over through {}",
            config.path.display()
        );
        parts.handover = Some(Handover::new(server, config.grace));
        Ok(())
    }

    /// On a server built by [`Builder::take_over`], as it starts: tells the
    /// predecessor that we accept (it stops accepting and drains), then
    /// listens for our own successor if asked. Our listeners are registered
    /// already; what the kernel queues meanwhile waits for our loops.
    fn succeed(&mut self) {
        let Some(Succession {
            confirmation,
            offer,
        }) = self.succession.take()
        else {
            return;
        };
        match confirmation.confirm() {
            Ok(()) => log::info!("took over: the predecessor has stopped accepting"),
            // Both serving the same sockets is safe: nothing is lost.
            Err(e) => log::warn!(
                "took over, but the predecessor did not acknowledge ({e}); serving anyway"
            ),
        }
        if let Some(offer) = offer {
            if let Err(e) = self.listen_for_successor(offer) {
                log::warn!("no hand-over to a later successor: {e}");
            }
        }
    }

    /// The address the server listens on; with port 0, the port the kernel
    /// picked. With several listeners, the first TCP one's; on a server with
    /// Unix listeners only, `0.0.0.0:0` ([`endpoints`](Server::endpoints)
    /// has them all).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Every endpoint the server listens on (TCP addresses with the ports
    /// the kernel picked, Unix socket paths), in the order they were given.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.shared.endpoints
    }

    /// A handle to stop, watch and tune the server, usable from any thread,
    /// before and while it runs.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs the server's one loop on the current thread until it is stopped
    /// through a [`ServerHandle`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if the server was built with more than one
    /// worker (use [`run_workers`](Server::run_workers): each loop needs a
    /// handler of its own). [`Error::Io`] if polling fails, which the loop
    /// cannot recover from. Errors on single connections or on `accept` never
    /// end the loop.
    pub fn run<H: Handler<F>>(mut self, handler: H) -> Result<StopReport, Error> {
        self.one_loop()?;
        self.succeed();
        self.run_here(move |_| handler)
    }

    /// Runs the server's one loop on a new thread named `netpool-0`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if the server was built with more than one
    /// worker (use [`spawn_workers`](Server::spawn_workers)); [`Error::Io`]
    /// if the thread cannot be spawned.
    pub fn spawn<H: Handler<F> + Send>(mut self, handler: H) -> Result<ServerThread, Error> {
        self.one_loop()?;
        self.succeed();
        let handle = self.handle();
        let thread = self.spawn_loop(0, move |_| handler)?;
        Ok(ServerThread {
            handle,
            threads: vec![thread],
        })
    }

    fn one_loop(&self) -> Result<(), Error> {
        match self.loops.len() {
            1 => Ok(()),
            n => Err(ConfigError::new(
                "workers",
                format!("{n} workers need a handler each: use run_workers or spawn_workers"),
            )
            .into()),
        }
    }

    /// Runs every loop ([`Builder::workers`]): loop 0 on the current thread,
    /// the others on threads named `netpool-1`, `netpool-2`, ..., and returns
    /// when all have stopped, with their reports summed.
    ///
    /// `handler_for(i)` makes loop `i`'s handler, on loop `i`'s own thread:
    /// so the handler need not be `Send` (per-loop state can live in an `Rc`
    /// or a `RefCell`), and state shared by all loops goes in an `Arc` that
    /// the factory clones. For a `Clone` handler, pass
    /// `move |_| handler.clone()`. With one worker this is [`run`](Server::run).
    ///
    /// # Shutdown
    ///
    /// [`ServerHandle::stop`] stops every loop under one deadline. If a loop
    /// fails (its poll fails, or it panics outside a handler), the others are
    /// asked to stop too, within [`FAILED_LOOP_GRACE`], so that a server
    /// never runs on with a hole in it; the failure is returned once all
    /// have stopped.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a thread cannot be spawned (the loops already
    /// started are stopped and joined) or a poll fails;
    /// [`Error::LoopPanicked`] if a loop panicked outside a handler. The
    /// first error in loop order is returned, after every loop has ended.
    pub fn run_workers<M, H>(mut self, handler_for: M) -> Result<StopReport, Error>
    where
        M: Fn(usize) -> H + Send + Sync + 'static,
        H: Handler<F>,
    {
        let handler_for = Arc::new(handler_for);
        self.succeed();
        let mut threads = Vec::with_capacity(self.loops.len() - 1);
        for i in 1..self.loops.len() {
            let f = handler_for.clone();
            match self.spawn_loop(i, move |i| f(i)) {
                Ok(thread) => threads.push(thread),
                Err(e) => return Err(self.abandon(threads, e)),
            }
        }
        pin_current_thread(&self.config, 0);
        let first = self.run_here(|i| handler_for(i));
        join_all(Some(first), threads)
    }

    /// Runs every loop ([`Builder::workers`]) on threads of its own, named
    /// `netpool-0`, `netpool-1`, ..., and returns at once. `handler_for(i)`
    /// makes loop `i`'s handler on loop `i`'s thread, as with
    /// [`run_workers`](Server::run_workers), whose `# Shutdown` applies.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use netpool::{Conn, Server};
    ///
    /// // Two loops; each counts its lines in its own state, and all of
    /// // them in one shared counter.
    /// let total = Arc::new(AtomicU64::new(0));
    /// let t = total.clone();
    /// let server = Server::builder()
    ///     .workers(2)
    ///     .bind("127.0.0.1:0".parse().unwrap())?;
    /// let running = server.spawn_workers(move |loop_index| {
    ///     let (total, mut mine) = (t.clone(), 0u64);
    ///     move |line: &[u8], conn: &mut Conn| {
    ///         mine += 1;
    ///         total.fetch_add(1, Ordering::Relaxed);
    ///         conn.send(format!("loop {loop_index}, line {mine}\n").as_bytes());
    ///     }
    /// })?;
    /// assert_eq!(running.handle().loop_stats().len(), 2);
    /// running.stop(Duration::from_secs(1))?;
    /// # Ok::<(), netpool::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if a thread cannot be spawned; the loops already
    /// started are then stopped and joined.
    pub fn spawn_workers<M, H>(mut self, handler_for: M) -> Result<ServerThread, Error>
    where
        M: Fn(usize) -> H + Send + Sync + 'static,
        H: Handler<F>,
    {
        let handle = self.handle();
        let handler_for = Arc::new(handler_for);
        self.succeed();
        let mut threads = Vec::with_capacity(self.loops.len());
        for i in 0..self.loops.len() {
            let f = handler_for.clone();
            match self.spawn_loop(i, move |i| f(i)) {
                Ok(thread) => threads.push(thread),
                Err(e) => return Err(self.abandon(threads, e)),
            }
        }
        Ok(ServerThread { handle, threads })
    }

    /// Runs loop 0 on this thread, with the handler `handler_for` makes.
    fn run_here<H: Handler<F>>(
        &mut self,
        handler_for: impl FnOnce(usize) -> H,
    ) -> Result<StopReport, Error> {
        let parts = self.loops[0].take().expect("loop 0 runs once");
        // Even if the factory panics, the guard closes loop 0's queue and
        // asks the other loops to stop.
        let guard = LoopGuard::new(&self.shared, 0);
        let handler = handler_for(0);
        let result = run_loop(
            parts,
            handler,
            self.framing.clone(),
            self.config.clone(),
            self.shared.clone(),
            0,
        );
        guard.finish(result.is_ok());
        result
    }

    /// Starts loop `i` on a thread of its own; `handler_for` runs there.
    fn spawn_loop<M, H>(&mut self, i: usize, handler_for: M) -> Result<LoopThread, Error>
    where
        M: FnOnce(usize) -> H + Send + 'static,
        H: Handler<F>,
    {
        let parts = self.loops[i].take().expect("each loop runs once");
        let config = self.config.clone();
        let framing = self.framing.clone();
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("netpool-{i}"))
            .spawn(move || {
                // Whatever happens from here on, even a panic in the
                // factory, the guard closes the loop's queue: a `stop()`
                // never waits for a loop that is not there.
                let guard = LoopGuard::new(&shared, i);
                pin_current_thread(&config, i);
                let handler = handler_for(i);
                let result = run_loop(parts, handler, framing, config, shared, i);
                guard.finish(result.is_ok());
                result
            });
        spawned.map_err(|e| {
            // The loop will never run: nobody may wait for it.
            drop(self.shared.loops[i].close());
            Error::Io(e)
        })
    }

    /// Gives up starting: the loops already running are stopped at once and
    /// joined; the others never run (dropping `self` closes their queues).
    fn abandon(self, threads: Vec<LoopThread>, e: Error) -> Error {
        let _ = self.handle().request_stop(Duration::ZERO);
        drop(self);
        let _ = join_all(None, threads);
        e
    }
}

impl<F: Framing> Drop for Server<F> {
    /// Loops that never ran close their command queues, so that a handle
    /// taken before cannot wait for them forever.
    fn drop(&mut self) {
        for (i, parts) in self.loops.iter().enumerate() {
            if parts.is_some() {
                drop(self.shared.loops[i].close());
            }
        }
    }
}

/// Runs loop `i` with the server's transport: the plaintext loop and the
/// TLS loop are two compilations of the same generic code.
fn run_loop<F: Framing, H: Handler<F>>(
    parts: LoopParts,
    handler: H,
    framing: F,
    config: Config,
    shared: Arc<ServerShared>,
    i: usize,
) -> Result<StopReport, Error> {
    let LoopParts {
        poll,
        listeners,
        handover,
    } = parts;
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.tls {
        use crate::transport::tls::{Tls, TlsLoop};
        let mut transport = TlsLoop::new(tls.clone(), shared.loops[i].handshakes.clone());
        // One loop looks at the certificate files for all: loop 0, which
        // every server has.
        if let (0, Some(files)) = (i, &shared.cert_watch) {
            let every = crate::base::time::millis(config.tls_watch).unwrap_or(1);
            transport = transport.watching(files.clone(), every);
        }
        return EventLoop::<F, H, Tls>::new(
            poll, listeners, handover, handler, framing, transport, config, shared, i,
        )
        .run();
    }
    EventLoop::<F, H, Plain>::new(
        poll,
        listeners,
        handover,
        handler,
        framing,
        (),
        config,
        shared,
        i,
    )
    .run()
}

/// How long the other loops get to finish when one loop of a server fails:
/// long enough to flush replies already produced, short enough that a
/// supervisor restarts the server promptly.
pub const FAILED_LOOP_GRACE: Duration = Duration::from_secs(1);

type LoopThread = JoinHandle<Result<StopReport, Error>>;

/// Ends a loop's life in the server, however the loop ends.
struct LoopGuard {
    shared: Arc<ServerShared>,
    index: usize,
    ok: bool,
}

impl LoopGuard {
    fn new(shared: &Arc<ServerShared>, index: usize) -> Self {
        LoopGuard {
            shared: shared.clone(),
            index,
            ok: false,
        }
    }

    fn finish(mut self, ok: bool) {
        self.ok = ok;
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        // The loop closes its queue itself when it returns; after a panic,
        // this is what does it (closing twice is harmless).
        drop(self.shared.loops[self.index].close());
        if !self.ok && self.shared.loops.len() > 1 {
            log::error!(
                "loop {} failed: stopping the other loops within {FAILED_LOOP_GRACE:?}",
                self.index
            );
            let deadline = Instant::now() + FAILED_LOOP_GRACE;
            for l in &self.shared.loops {
                let _ = l.push(Command::Stop {
                    deadline,
                    done: None,
                });
            }
        }
    }
}

/// Pins the current thread to core `index` (modulo the cores), if asked.
fn pin_current_thread(config: &Config, index: usize) {
    if !config.pin_cores {
        return;
    }
    #[cfg(feature = "core_affinity")]
    {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        if cores.is_empty() {
            log::warn!("loop {index}: no core ids known; not pinned");
            return;
        }
        let core = cores[index % cores.len()];
        if core_affinity::set_for_current(core) {
            log::debug!("loop {index}: pinned to core {}", core.id);
        } else {
            log::warn!("loop {index}: could not pin to core {}", core.id);
        }
    }
    #[cfg(not(feature = "core_affinity"))]
    let _ = index;
}

/// Joins every thread, sums the reports; the first error (loop 0's result,
/// if given, counts first) wins, but only after every thread has ended.
fn join_all(
    first: Option<Result<StopReport, Error>>,
    threads: Vec<LoopThread>,
) -> Result<StopReport, Error> {
    let mut total = StopReport::default();
    let mut error = None;
    let results = first.into_iter().chain(
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or(Err(Error::LoopPanicked))),
    );
    for result in results {
        match result {
            Ok(report) => {
                total.open_at_stop += report.open_at_stop;
                total.force_closed += report.force_closed;
                total.replies_unsent += report.replies_unsent;
            }
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// A server running on threads of its own, from [`Server::spawn`] or
/// [`Server::spawn_workers`].
#[derive(Debug)]
pub struct ServerThread {
    handle: ServerHandle,
    threads: Vec<LoopThread>,
}

impl ServerThread {
    /// The server's handle.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Stops every loop gracefully (see [`ServerHandle::stop`]) and joins
    /// their threads; the reports are summed.
    ///
    /// # Errors
    ///
    /// What a loop returned, or [`Error::LoopPanicked`]: the first in loop
    /// order, once every thread has ended.
    pub fn stop(self, grace: Duration) -> Result<StopReport, Error> {
        // If a loop already exited, joining tells why.
        let _ = self.handle.request_stop(grace);
        self.join()
    }

    /// Waits for every loop's thread to end.
    ///
    /// # Errors
    ///
    /// As [`stop`](ServerThread::stop).
    pub fn join(self) -> Result<StopReport, Error> {
        join_all(None, self.threads)
    }
}

/// Duplicates of every socket in `bound` (each loop's, with `ReusePort`),
/// with their names: what a hand-over offers.
fn offer(bound: &[Bound]) -> std::io::Result<Vec<Inherited>> {
    let mut offer = Vec::new();
    for b in bound {
        for socket in &b.sockets {
            offer.push(Inherited {
                name: b.name.clone(),
                listener: socket.try_clone()?,
            });
        }
    }
    Ok(offer)
}
