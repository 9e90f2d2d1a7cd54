//! [`Server`]: a bound listener with its poll, ready to run a handler.

use std::fmt;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};

use crate::budget::Budget;
use crate::config::{Builder, Config};
use crate::error::Error;
use crate::event_loop::{EventLoop, LISTENER, WAKER};
use crate::handle::{AlarmState, LoopShared, ServerHandle, ServerShared, StopReport};
use crate::handler::Handler;
use crate::limits::{AcceptRate, PerIpCap};

/// A bound, listening server, not yet running.
///
/// Binding happens when the server is built, so the address (and a
/// [`ServerHandle`]) are known before the first connection is served. Then
/// either [`run`](Server::run) it on this thread, or [`spawn`](Server::spawn)
/// it on a new one.
pub struct Server {
    config: Config,
    poll: Poll,
    listener: TcpListener,
    shared: Arc<ServerShared>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.shared.local_addr)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A [`Builder`] with every setting at its default.
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

    pub(crate) fn new(config: Config, listener: StdListener) -> Result<Server, Error> {
        // Certificate problems are the caller's to fix: report them before
        // anything else is set up.
        #[cfg(feature = "tls")]
        let tls = match &config.tls {
            Some(source) => Some(crate::tls::TlsShared::new(source, config.alpn.clone())?),
            None => None,
        };
        let local_addr = listener.local_addr()?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(ServerShared {
            budget: Budget::new(config.acceptors, config.overflow),
            per_ip: (config.max_per_ip > 0).then(|| PerIpCap::new(config.max_per_ip)),
            accept_rate: (config.accept_rate > 0).then(|| AcceptRate::new(config.accept_rate)),
            alarm: config.alarm.as_ref().map(|a| AlarmState {
                threshold: a.threshold,
                cooldown: a.cooldown,
                callback: a.callback.clone(),
                last: Mutex::new(None),
            }),
            local_addr,
            loops: vec![Arc::new(LoopShared::new(waker))],
            #[cfg(feature = "tls")]
            tls,
        });
        Ok(Server {
            config,
            poll,
            listener,
            shared,
        })
    }

    /// The address the server listens on; with port 0, the port the kernel
    /// picked.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// A handle to stop, watch and tune the server, usable from any thread,
    /// before and while it runs.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs the server on the current thread until it is stopped through a
    /// [`ServerHandle`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if polling fails, which the loop cannot recover from.
    /// Errors on single connections or on `accept` never end the loop.
    pub fn run<H: Handler>(self, handler: H) -> Result<StopReport, Error> {
        EventLoop::new(
            self.poll,
            self.listener,
            handler,
            self.config,
            self.shared,
            0,
        )
        .run()
    }

    /// Runs the server on a new thread named `netpool`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the thread cannot be spawned.
    pub fn spawn<H: Handler + Send>(self, handler: H) -> Result<ServerThread, Error> {
        let handle = self.handle();
        let thread = std::thread::Builder::new()
            .name("netpool".into())
            .spawn(move || self.run(handler))?;
        Ok(ServerThread { handle, thread })
    }
}

/// A server running on its own thread, from [`Server::spawn`].
#[derive(Debug)]
pub struct ServerThread {
    handle: ServerHandle,
    thread: JoinHandle<Result<StopReport, Error>>,
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

    /// Stops the server gracefully (see [`ServerHandle::stop`]) and joins
    /// its thread.
    ///
    /// # Errors
    ///
    /// What the loop returned, or [`Error::LoopPanicked`].
    pub fn stop(self, grace: Duration) -> Result<StopReport, Error> {
        // If the loop already exited, joining tells why.
        let _ = self.handle.request_stop(grace);
        self.join()
    }

    /// Waits for the server's thread to end.
    ///
    /// # Errors
    ///
    /// What the loop returned, or [`Error::LoopPanicked`].
    pub fn join(self) -> Result<StopReport, Error> {
        self.thread.join().map_err(|_| Error::LoopPanicked)?
    }
}
