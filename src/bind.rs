//! Binding: a [`Builder`] becomes a [`Server`], with its listening sockets
//! bound here (TCP, Unix), adopted (a listener of the caller's, systemd's
//! socket activation) or taken over from a running predecessor.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

use crate::builder::Builder;
use crate::distribution::Distribution;
use crate::error::{ConfigError, Error};
use crate::framing::Framing;
use crate::listen::{
    bind_unix, from_env, take_over, Endpoint, Inherited, Listener, UnixPathGuard, MAX_LISTENERS,
};

/// A bound, listening server, not yet running.
///
/// Binding happens when the server is built, so the address (and a
/// [`ServerHandle`]) are known before the first connection is served. Then
/// either [`run`](Server::run) it on this thread, or [`spawn`](Server::spawn)
/// it on a new one; with several loops ([`Builder::workers`]),
/// [`run_workers`](Server::run_workers) or [`spawn_workers`](Server::spawn_workers).
use crate::server::{Bound, Server, HANDOVER_TIMEOUT};

/// Binding: a [`Builder`] becomes a [`Server`].
impl<F: Framing> Builder<F> {
    /// Binds a new listening socket to `addr` (IPv4 or IPv6; port 0 picks a
    /// free port, see [`Server::local_addr`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a setting out of range or at odds with
    /// another, naming it (checked before anything is bound); [`Error::Io`]
    /// if the socket cannot be created, bound (`AddrInUse`: another process
    /// listens there) or put to listen; with
    /// [`tls_pem`](Builder::tls_pem), the `Error::Tls*` variants, each naming
    /// the file at fault.
    pub fn bind(self, addr: SocketAddr) -> Result<Server<F>, Error> {
        self.bind_all([Endpoint::Tcp(addr)])
    }

    /// Listens on a Unix domain socket at `path`, with everything a TCP
    /// server has: the budget, overflow, framing, TLS, timers, handles. The
    /// handler meets each client's credentials ([`Conn::peer`](crate::Conn::peer)).
    ///
    /// A stale socket file (left by a server that died) is replaced; a path
    /// on which a server is listening is an error, never stolen; a file that
    /// is not a socket is never touched. The file gets
    /// [`unix_mode`](Builder::unix_mode) before anyone can connect, and is
    /// removed when the server stops (unless it was handed over to a
    /// successor, which then owns it).
    ///
    /// ```
    /// use netpool::{Conn, Peer, Server};
    ///
    /// let path = std::env::temp_dir().join(format!("netpool-doc-{}.sock", std::process::id()));
    /// let server = Server::builder().unix_mode(0o600).unix(&path)?;
    /// let running = server.spawn(|_line: &[u8], conn: &mut Conn| {
    ///     if let Peer::Unix { credentials, .. } = conn.peer() {
    ///         conn.send(format!("hello, uid {}\n", credentials.uid).as_bytes());
    ///     }
    /// })?;
    /// # use std::io::{BufRead, BufReader, Write};
    /// # let mut client = std::os::unix::net::UnixStream::connect(&path)?;
    /// # client.write_all(b"hi\n")?;
    /// # let mut reply = String::new();
    /// # BufReader::new(&client).read_line(&mut reply)?;
    /// # assert!(reply.starts_with("hello, uid "));
    /// running.stop(std::time::Duration::from_secs(1))?;
    /// assert!(!path.exists(), "removed on a clean stop");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`bind`](Builder::bind); [`Error::Io`] of kind `AddrInUse` when a
    /// server listens on `path`, `AlreadyExists` when `path` is not a
    /// socket.
    pub fn unix(self, path: impl AsRef<Path>) -> Result<Server<F>, Error> {
        self.bind_all([Endpoint::Unix(path.as_ref().to_path_buf())])
    }

    /// Listens on every endpoint at once, TCP and Unix alike, in one
    /// server: one budget, one set of loops, one handler. Each endpoint is
    /// bound as [`bind`](Builder::bind) or [`unix`](Builder::unix) binds
    /// it; at most 64.
    ///
    /// With [`Distribution::ReusePort`] and several workers, each TCP
    /// endpoint gets a socket per loop; a Unix socket cannot be split that
    /// way, so every loop accepts from its one socket (as with
    /// [`Distribution::Shared`]).
    ///
    /// ```
    /// use netpool::{Endpoint, Server};
    ///
    /// let path = std::env::temp_dir().join(format!("netpool-doc-all-{}.sock", std::process::id()));
    /// let server = Server::builder().bind_all([
    ///     Endpoint::Tcp("127.0.0.1:0".parse().unwrap()),
    ///     Endpoint::Unix(path.clone()),
    /// ])?;
    /// assert_eq!(server.endpoints()[1], Endpoint::Unix(path));
    /// assert_eq!(server.endpoints()[0].tcp(), Some(server.local_addr()));
    /// # Ok::<(), netpool::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`bind`](Builder::bind) and [`unix`](Builder::unix), for the
    /// first endpoint that fails (the ones bound before it are closed, and
    /// their files removed); [`Error::InvalidConfig`] for no endpoint or
    /// more than 64.
    pub fn bind_all(
        self,
        endpoints: impl IntoIterator<Item = Endpoint>,
    ) -> Result<Server<F>, Error> {
        self.config.validate()?;
        let endpoints: Vec<Endpoint> = endpoints.into_iter().collect();
        if endpoints.len() > MAX_LISTENERS {
            // Before binding anything.
            return Err(ConfigError::new(
                "bind_all",
                format!(
                    "{} endpoints: a server accepts on at most {MAX_LISTENERS}",
                    endpoints.len()
                ),
            )
            .into());
        }
        let (backlog, workers) = (self.config.backlog, self.config.workers);
        let split = self.config.distribution == Distribution::ReusePort && workers > 1;
        let mut bound = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            bound.push(match endpoint {
                Endpoint::Tcp(addr) if split => {
                    // One socket per loop on the same address. The first one
                    // fixes the port when `addr` asks for any (port 0); the
                    // others join it.
                    let first = listen(addr, true, backlog)?;
                    let addr = first.local_addr()?;
                    let mut sockets = vec![Listener::Tcp(first)];
                    for _ in 1..workers {
                        sockets.push(Listener::Tcp(listen(addr, true, backlog)?));
                    }
                    Bound {
                        guard: None,
                        sockets,
                        name: None,
                    }
                }
                Endpoint::Tcp(addr) => {
                    Bound::one(Listener::Tcp(listen(addr, false, backlog)?), None, None)
                }
                Endpoint::Unix(path) => {
                    let (listener, guard) = bind_unix(&path, self.config.unix_mode, backlog)?;
                    Bound::one(Listener::Unix(listener), Some(guard), None)
                }
            });
        }
        Server::new(self.config, self.framing, bound, None)
    }

    /// Adopts a TCP listener that is already bound and listening: socket
    /// activation by hand, or a hand-over from a parent process. It is
    /// switched to non-blocking mode; its backlog is left as it was. (For a
    /// Unix listener, [`unix_listener`](Builder::unix_listener); for
    /// several, [`listeners`](Builder::listeners).)
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for inconsistent settings, and for
    /// [`Distribution::ReusePort`] with several workers (one adopted socket
    /// cannot be split into one per loop); [`Error::Io`] if the listener
    /// cannot be made non-blocking or has no local address.
    pub fn listener(self, listener: StdListener) -> Result<Server<F>, Error> {
        self.listeners([Listener::Tcp(listener)])
    }

    /// Adopts a Unix listener that is already bound and listening, as
    /// [`listener`](Builder::listener) adopts a TCP one. Its socket file is
    /// the caller's: it is not removed when the server stops.
    ///
    /// # Errors
    ///
    /// As [`listener`](Builder::listener).
    pub fn unix_listener(self, listener: StdUnixListener) -> Result<Server<F>, Error> {
        self.listeners([Listener::Unix(listener)])
    }

    /// Adopts several listeners at once, TCP and Unix alike, served as
    /// [`bind_all`](Builder::bind_all) serves what it binds. Each is
    /// switched to non-blocking mode. Their socket files are not removed
    /// on stop.
    ///
    /// # Errors
    ///
    /// As [`listener`](Builder::listener); [`Error::InvalidConfig`] for no
    /// listener or more than 64.
    pub fn listeners(
        self,
        listeners: impl IntoIterator<Item = Listener>,
    ) -> Result<Server<F>, Error> {
        self.adoptable()?;
        let mut bound = Vec::new();
        for listener in listeners {
            // mio's `from_std` does not do this, and a blocking listener
            // would stall the whole loop in `accept`.
            match &listener {
                Listener::Tcp(l) => l.set_nonblocking(true)?,
                Listener::Unix(l) => l.set_nonblocking(true)?,
            }
            bound.push(Bound::one(listener, None, None));
        }
        Server::new(self.config, self.framing, bound, None)
    }

    /// Serves on the listening sockets systemd passed (socket activation,
    /// `sd_listen_fds(3)`): `LISTEN_PID` must be this process, the
    /// descriptors from 3 on are checked to be listening TCP or Unix stream
    /// sockets (whatever the unit says), and the variables are unset so
    /// that child processes do not take them too. Call it early in `main`,
    /// before other threads start: unsetting a variable races with threads
    /// that read the environment. The socket files are systemd's: they are
    /// not removed on stop.
    ///
    /// The README has a `.socket` unit, and how to try it without systemd
    /// running the service: `systemd-socket-activate -l 127.0.0.1:7000 ...`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] of kind `NotFound` when no sockets were passed (the
    /// process was not socket-activated: bind instead), `InvalidInput` when
    /// the variables are inconsistent or a descriptor is not a listener (its
    /// source is a [`listen::ActivationError`](crate::listen::ActivationError)
    /// naming what is wrong); otherwise as [`listener`](Builder::listener).
    pub fn inherit(self) -> Result<Server<F>, Error> {
        self.adoptable()?;
        let inherited = from_env().map_err(std::io::Error::from)?;
        for i in &inherited {
            log::info!(
                "socket activation: serving on {}{}",
                i.listener,
                i.name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
        }
        let bound = inherited
            .into_iter()
            .map(|i| Bound::one(i.listener, None, i.name))
            .collect();
        Server::new(self.config, self.framing, bound, None)
    }

    /// Takes the listening sockets of a running server over, through its
    /// hand-over control socket `ctl_path` (see [`handover`](Builder::handover)):
    /// a zero-downtime restart. The new server serves the same sockets (the
    /// same kernel accept queues, so no client waiting in them is lost);
    /// when it starts ([`run`](Server::run), [`spawn`](Server::spawn) and the
    /// workers' variants), it tells the old one, which stops accepting and
    /// drains its own connections. Unix socket files are this server's from
    /// then on: removed when it stops, kept if it hands them over in turn
    /// (with [`handover`](Builder::handover) on this builder, it listens on
    /// its own control socket once the old server has given it up).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use netpool::{Conn, Server};
    ///
    /// // The new binary: take over from the old one, and be ready to hand
    /// // over to the next.
    /// let server = Server::builder()
    ///     .handover("/run/app.ctl", Duration::from_secs(30))
    ///     .take_over("/run/app.ctl")?;
    /// for endpoint in server.endpoints() {
    ///     println!("listening on {endpoint}");
    /// }
    /// server.run(|line: &[u8], conn: &mut Conn| conn.send(line))?;
    /// # Ok::<(), netpool::Error>(())
    /// ```
    ///
    /// Dropping the server without running it leaves the old one serving,
    /// alone, as before.
    ///
    /// # Errors
    ///
    /// [`Error::Io`]: `NotFound` if no control socket is at `ctl_path`,
    /// `ConnectionRefused` if nobody listens on it, `PermissionDenied` if the
    /// old server refused (another hand-over in progress, another user),
    /// `TimedOut` if it sent nothing within 10 s, `InvalidData` if it does
    /// not speak netpool's hand-over; otherwise as [`listener`](Builder::listener).
    /// The old server serves on in every case.
    pub fn take_over(self, ctl_path: impl AsRef<Path>) -> Result<Server<F>, Error> {
        self.adoptable()?;
        let (inherited, confirmation) = take_over(ctl_path.as_ref(), HANDOVER_TIMEOUT)?;
        let mut bound = Vec::with_capacity(inherited.len());
        for Inherited { name, listener } in inherited {
            let guard = match &listener {
                Listener::Unix(l) => match l.local_addr()?.as_pathname() {
                    Some(path) => Some(UnixPathGuard::adopt(path)?),
                    None => None,
                },
                Listener::Tcp(_) => None,
            };
            log::info!("taking over {listener}");
            bound.push(Bound::one(listener, guard, name));
        }
        Server::new(self.config, self.framing, bound, Some(confirmation))
    }

    /// Checks the settings for a server on sockets it did not bind itself.
    fn adoptable(&self) -> Result<(), Error> {
        self.config.validate()?;
        if self.config.distribution == Distribution::ReusePort && self.config.workers > 1 {
            return Err(ConfigError::new(
                "distribution",
                "Distribution::ReusePort needs a socket per loop: bind() them, or use \
                 Handoff or Shared with an adopted listener",
            )
            .into());
        }
        Ok(())
    }
}

/// A non-blocking listening socket on `addr`, with `SO_REUSEPORT` if asked.
fn listen(addr: SocketAddr, reuse_port: bool, backlog: i32) -> Result<StdListener, Error> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Restarting a server must not wait for old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}
