//! The user's side of a connection: the [`Handler`] trait and the [`Conn`]
//! context it is called with.
//!
//! A handler is called on the event loop's thread, with a frame (a line, by
//! default) borrowed from the loop's read buffer. It must not block:
//! everything it does delays every other connection of its loop. Slow work
//! goes to another thread with a [`ReplySlot`] ([`Conn::defer`]), which
//! keeps the reply in its place among the connection's replies (see
//! `examples/offload.rs`).

use std::any::Any;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::base::close::CloseReason;
use crate::base::id::ConnId;
use crate::core::{Held, Outbox};
use crate::framing::{Command, Framing, LengthPrefixed, Lines, Raw, Resp};
use crate::listen::Peer;
use crate::reply_slot::ReplySlot;
use crate::shared::LoopShared;
use crate::transport::SessionInfo;

/// What [`Handler::on_disconnect`] is told about a connection that ended.
#[derive(Debug)]
#[non_exhaustive]
pub struct Disconnect<S> {
    /// The connection's id.
    pub id: ConnId,
    /// The peer's address, as [`Conn::peer_addr`] gave it (`0.0.0.0:0`
    /// for a peer on a Unix socket).
    pub peer_addr: SocketAddr,
    /// Who the peer was, as [`Conn::peer`] gave it: its address, or its
    /// credentials on a Unix socket.
    pub peer: Peer,
    /// The connection's state, handed back for the last time.
    pub state: S,
    /// Why it ended.
    pub reason: CloseReason,
}

/// Serves the frames of every connection of a loop: lines by default, or
/// whatever [`Framing`] the server was built with
/// ([`Builder::framing`](crate::Builder::framing)).
///
/// The loop calls the handler on its own thread. A closure
/// `FnMut(&[u8], &mut Conn)` is a handler with no per-connection state, for
/// lines (and for [`LengthPrefixed`](crate::LengthPrefixed) payloads and
/// [`Raw`](crate::Raw) bytes, whose frames are byte slices too). Write its
/// argument types, or let [`lines`] give them:
///
/// ```
/// let echo = |line: &[u8], conn: &mut netpool::Conn| {
///     conn.send(line);
///     conn.send(b"\n");
/// };
/// # fn is_handler<H: netpool::Handler>(_: &H) {}
/// # is_handler(&echo);
/// ```
///
/// A handler with state of its own is a type that implements the trait:
/// its fields are shared by the connections of its loop, and
/// [`State`](Handler::State) is made for each connection. This one greets
/// each connection, counts its lines, answers `later` from another thread
/// through a [`ConnHandle`](crate::ConnHandle) (a reply that must keep its
/// place among the others would use [`Conn::defer`]), lowers the server's
/// budget at run time on `one` and reads the server's counters on `stats`;
/// each connection's count comes back in
/// [`on_disconnect`](Handler::on_disconnect) (`examples/stateful.rs` is the
/// same as a server to try with `nc`):
///
/// ```
/// use std::io::{self, BufRead, BufReader, Write};
/// use std::net::TcpStream;
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use netpool::{Conn, Disconnect, Handler, Server, ServerHandle};
///
/// /// What the handler keeps for each connection.
/// #[derive(Default)]
/// struct Session {
///     lines: u64,
/// }
///
/// /// What it keeps across the connections of its loop.
/// struct Counter {
///     server: ServerHandle,
///     /// Each ended connection's line count, for the test below.
///     ended: mpsc::Sender<u64>,
/// }
///
/// impl Handler for Counter {
///     type State = Session;
///
///     fn on_connect(&mut self, conn: &mut Conn<'_, Session>) {
///         let _ = writeln!(conn, "hello, {}", conn.id());
///     }
///
///     fn on_frame(&mut self, line: &[u8], conn: &mut Conn<'_, Session>) {
///         conn.state().lines += 1;
///         match line {
///             // Slow work belongs on another thread; its reply comes back
///             // through a handle, which wakes the loop.
///             b"later" => {
///                 let handle = conn.handle();
///                 std::thread::spawn(move || {
///                     let _ = handle.send("done, on another thread\n");
///                 });
///             }
///             // The budget, changed at run time: new connections meet it
///             // (0 slots would be refused, as by `Builder::acceptors`).
///             b"one" => self.server.set_acceptors(1).expect("one slot is a budget"),
///             b"stats" => {
///                 let stats = self.server.stats();
///                 let _ = writeln!(conn, "{} served, budget {}", stats.active, stats.budget);
///             }
///             _ => {
///                 let n = conn.state().lines;
///                 let _ = writeln!(conn, "line {n}");
///             }
///         }
///     }
///
///     fn on_disconnect(&mut self, closed: Disconnect<Session>) {
///         let _ = self.ended.send(closed.state.lines);
///     }
/// }
///
/// let server = Server::bind("127.0.0.1:0".parse().unwrap())?;
/// let (addr, handle) = (server.local_addr(), server.handle());
/// let (ended, lines_of_ended) = mpsc::channel();
/// let running = server.spawn(Counter { server: handle, ended })?;
///
/// /// Sends `line` (if any) and reads the next line of the reply.
/// fn ask(client: &mut BufReader<TcpStream>, line: &str) -> io::Result<String> {
///     if !line.is_empty() {
///         client.get_mut().write_all(format!("{line}\n").as_bytes())?;
///     }
///     let mut reply = String::new();
///     client.read_line(&mut reply)?;
///     Ok(reply)
/// }
/// let connect = || -> io::Result<BufReader<TcpStream>> {
///     let stream = TcpStream::connect(addr)?;
///     stream.set_read_timeout(Some(Duration::from_secs(10)))?;
///     Ok(BufReader::new(stream))
/// };
///
/// let mut client = connect()?;
/// assert!(ask(&mut client, "")?.starts_with("hello, "));
/// assert_eq!(ask(&mut client, "ping")?, "line 1\n");
/// assert_eq!(ask(&mut client, "later")?, "done, on another thread\n");
/// assert_eq!(ask(&mut client, "stats")?, "1 served, budget 1024\n");
/// client.get_mut().write_all(b"one\n")?;
/// assert_eq!(ask(&mut client, "stats")?, "1 served, budget 1\n");
///
/// // The one slot is taken: a second client is refused (end of stream).
/// assert_eq!(ask(&mut connect()?, "")?, "");
///
/// drop(client);
/// assert_eq!(lines_of_ended.recv_timeout(Duration::from_secs(10))?, 5);
/// running.stop(Duration::from_secs(1))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// For another framing, the frame's type changes; here the Redis protocol,
/// whose frames are [`Command`](crate::Command)s, with a count per
/// connection:
///
/// ```
/// use netpool::{resp, Command, Conn, Handler, Resp};
///
/// /// Counts each connection's commands.
/// struct Counter;
///
/// impl Handler<Resp> for Counter {
///     type State = u64;
///     fn on_frame(&mut self, command: Command<'_>, conn: &mut Conn<'_, u64>) {
///         *conn.state() += 1;
///         if command.name_eq_ignore_case(b"PING") {
///             let _ = resp::simple(conn, b"PONG");
///         } else {
///             let n = *conn.state() as i64;
///             let _ = resp::integer(conn, n);
///         }
///     }
/// }
/// # fn is_handler<H: netpool::Handler<Resp>>(_: &H) {}
/// # is_handler(&Counter);
/// ```
///
/// # Panics
///
/// A panic in any method is caught by the loop, logged, counted in
/// [`Stats::handler_panics`](crate::Stats::handler_panics), and closes only
/// the connection being served ([`CloseReason::HandlerPanicked`]). The handler
/// itself is used again for the other connections, so keep its own fields
/// consistent across a panic (as with any `catch_unwind`).
// Shown when a type that is not a handler is given where one is wanted
// (`spawn(NotAHandler)`, or a handler of lines for a `Resp` server). Rust
// 1.78 and later; a closure with the wrong argument types gets rustc's own
// signature mismatch (E0631), and one with none written, "type annotations
// needed" (E0282): see `lines`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a netpool `Handler<{F}>`",
    label = "not a handler of `{F}` frames",
    note = "a closure is a handler when it takes the frame and `&mut Conn`: `|line: &[u8], conn: &mut netpool::Conn| ...` (`Command<'_>` for `Resp` frames), or `netpool::lines(|line, conn| ...)`, which writes those types for you",
    note = "a handler with state of its own, or for another framing, is a type that implements `Handler<{F}>`"
)]
pub trait Handler<F: Framing = Lines>: 'static {
    /// Per-connection state of your own type, created with `Default` when the
    /// connection is accepted and reachable through [`Conn::state`].
    type State: Default + 'static;

    /// Called once a connection is accepted and registered, before its first
    /// frame. It may [`send`](Conn::send) a greeting. On a TLS server it is
    /// called when the handshake has finished; a connection whose handshake
    /// fails or times out never reaches the handler.
    fn on_connect(&mut self, conn: &mut Conn<'_, Self::State>) {
        let _ = conn;
    }

    /// Called with each complete frame. For [`Lines`], a line without its
    /// `\n` and without one trailing `\r`. A frame is borrowed from the loop's
    /// read buffer (or, if it straddled two reads, from the connection's
    /// remainder): copy what you need to keep.
    fn on_frame(&mut self, frame: F::Frame<'_>, conn: &mut Conn<'_, Self::State>);

    /// Called once when a connection that reached [`on_connect`](Handler::on_connect)
    /// is gone. Refused connections never reach the handler.
    fn on_disconnect(&mut self, closed: Disconnect<Self::State>) {
        let _ = closed;
    }

    /// Called on each loop every [`Builder::tick`](crate::Builder::tick)
    /// period, whether or not it has connections: for the handler's own
    /// periodic work, such as expiring entries of a cache it keeps (the
    /// `kv` example sweeps its expired keys here). Never called unless a
    /// period is set.
    ///
    /// It runs on the loop's thread between events, so it holds up every
    /// connection of the loop while it runs: do a bounded amount of work and
    /// come back at the next tick for the rest. A tick missed while the loop
    /// was busy is not made up. A panic here is caught and counted, as in
    /// the other methods, and closes nothing.
    fn on_tick(&mut self) {}
}

/// A closure serves any framing whose frames are byte slices.
macro_rules! closure_handler {
    ($($framing:ty),*) => {$(
        impl<C> Handler<$framing> for C
        where
            C: FnMut(&[u8], &mut Conn<'_, ()>) + 'static,
        {
            type State = ();

            fn on_frame(&mut self, frame: &[u8], conn: &mut Conn<'_, ()>) {
                self(frame, conn)
            }
        }
    )*};
}

closure_handler!(Lines, LengthPrefixed, Raw);

/// A closure serves Redis commands.
impl<C> Handler<Resp> for C
where
    C: for<'c> FnMut(Command<'c>, &mut Conn<'_, ()>) + 'static,
{
    type State = ();

    fn on_frame(&mut self, command: Command<'_>, conn: &mut Conn<'_, ()>) {
        self(command, conn)
    }
}

/// Gives a closure the argument types of a handler of lines, so that it
/// needs none written: `netpool::lines(|line, conn| ...)`. The closure
/// serves [`Lines`], and [`LengthPrefixed`] payloads and [`Raw`] bytes too
/// (their frames are byte slices as well).
///
/// A closure given straight to [`Server::spawn`](crate::Server::spawn)
/// needs its argument types written out: `spawn` asks for a [`Handler`],
/// which closures implement only through a blanket impl, and Rust infers a
/// closure's signature from an `Fn` bound, never through such an impl. Here
/// the signature is the bound itself, `FnMut(&[u8], &mut Conn<'_>)`.
///
/// ```
/// # let server = netpool::Server::bind("127.0.0.1:0".parse().unwrap())?;
/// let running = server.spawn(netpool::lines(|line, conn| {
///     conn.send(line);
///     conn.send(b"\n");
/// }))?;
/// # running.stop(std::time::Duration::from_secs(1))?;
/// # Ok::<(), netpool::Error>(())
/// ```
///
/// Without it, the same closure does not compile ("type annotations
/// needed", E0282):
///
/// ```compile_fail,E0282
/// # let server = netpool::Server::bind("127.0.0.1:0".parse().unwrap())?;
/// let running = server.spawn(|line, conn| {
///     conn.send(line);
///     conn.send(b"\n");
/// })?;
/// # Ok::<(), netpool::Error>(())
/// ```
pub fn lines<C>(handler: C) -> C
where
    C: FnMut(&[u8], &mut Conn<'_>) + 'static,
{
    handler
}

/// The connection a handler is serving, for the duration of one call.
///
/// [`send`](Conn::send) appends to the connection's output; the loop writes it
/// when the handler returns, without blocking. To reach the connection later,
/// or from another thread, take a [`handle`](Conn::handle); to answer from
/// another thread in request order, [`defer`](Conn::defer) the reply.
pub struct Conn<'a, S: ?Sized = ()> {
    pub(crate) id: ConnId,
    pub(crate) peer: SocketAddr,
    pub(crate) proxy: Option<SocketAddr>,
    /// Who connected, on a Unix socket; `None` on TCP.
    pub(crate) unix: Option<&'a Peer>,
    pub(crate) state: &'a mut S,
    /// Where `send` appends: the loop's shared write buffer, from which the
    /// loop writes (or seals) the call's replies when it returns: no
    /// per-connection allocation. What must wait (earlier output still
    /// queued, a deferred reply before it) is moved behind it then, so
    /// order is kept.
    pub(crate) out: &'a mut Vec<u8>,
    /// The connection's own output: where [`defer`](Conn::defer) reserves
    /// a reply's place.
    pub(crate) outbox: &'a mut Outbox,
    /// How many bytes `out` may hold before the output overflows:
    /// `output_limit` less what is already queued elsewhere (on a TLS
    /// connection, the encrypted bytes waiting while `out` collects new
    /// plaintext). Zero once the output has overflowed, so that every later
    /// `send` is dropped by the same one comparison.
    pub(crate) room: usize,
    /// Set by `close()` or by an output overflow; the loop acts on it.
    pub(crate) verdict: &'a mut Option<CloseReason>,
    /// The slot and address place, for [`release_slot`](Conn::release_slot).
    pub(crate) held: &'a mut Held,
    pub(crate) key: usize,
    pub(crate) shared: &'a Arc<LoopShared>,
    /// The secure session, on a TLS connection.
    pub(crate) session: Option<&'a dyn SessionInfo>,
}

impl<S: ?Sized> Conn<'_, S> {
    /// Queues `data` to be written to the peer.
    ///
    /// Nothing blocks: the loop writes as much as the socket takes and keeps
    /// the rest. If the queued output would pass
    /// [`Builder::output_limit`](crate::Builder::output_limit), the data is
    /// dropped and the connection is closed with
    /// [`CloseReason::OutputOverflow`]; check [`is_closing`](Conn::is_closing)
    /// to stop producing early.
    #[inline]
    pub fn send(&mut self, data: impl AsRef<[u8]>) {
        self.send_bytes(data.as_ref());
    }

    #[inline]
    fn send_bytes(&mut self, data: &[u8]) {
        // The hot path: one comparison, one copy.
        if self.out.len() + data.len() > self.room {
            self.overflow();
            return;
        }
        self.out.extend_from_slice(data);
    }

    #[cold]
    fn overflow(&mut self) {
        *self.verdict = Some(CloseReason::OutputOverflow);
        self.room = 0;
    }

    /// Closes the connection once everything sent so far has been written.
    /// Lines already read after this one are not handled.
    pub fn close(&mut self) {
        if self.verdict.is_none() {
            *self.verdict = Some(CloseReason::Closed);
        }
    }

    /// True once [`close`](Conn::close) was called or the output overflowed.
    pub fn is_closing(&self) -> bool {
        self.verdict.is_some()
    }

    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The client's address. With the [PROXY protocol](crate::Builder::proxy_protocol)
    /// on, it is the address the header names, not the proxy's. A client on
    /// a Unix socket has no address: `0.0.0.0:0`; [`peer`](Conn::peer) has
    /// its credentials.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Who the client is, whatever the listener it came through: for TCP
    /// its address ([`Peer::Tcp`], as [`peer_addr`](Conn::peer_addr)); for
    /// a Unix socket the user, group and process the kernel recorded when
    /// it connected ([`Peer::Unix`], from `SO_PEERCRED`). With the PROXY
    /// protocol on, a header that names a client makes it [`Peer::Tcp`]
    /// with that address, whatever the socket.
    ///
    /// ```
    /// use netpool::{Conn, Peer};
    ///
    /// let whoami = |_line: &[u8], conn: &mut Conn| {
    ///     let reply = match conn.peer() {
    ///         Peer::Unix { credentials, .. } => format!("uid {}\n", credentials.uid),
    ///         peer => format!("{peer}\n"),
    ///     };
    ///     conn.send(reply);
    /// };
    /// # fn is_handler<H: netpool::Handler>(_: &H) {}
    /// # is_handler(&whoami);
    /// ```
    pub fn peer(&self) -> Peer {
        peer(self.peer, self.proxy.is_some(), self.unix)
    }

    /// With the PROXY protocol on, the proxy's own address (the socket's
    /// peer); `None` otherwise, or when the header was a `LOCAL` one.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy
    }

    /// Gives this connection's acceptor slot back while it stays open (like
    /// Ranch's `remove_connection`): for long-lived, mostly idle connections,
    /// such as subscribers, that should not count against the budget. The
    /// connection is served as before and closed like any other at stop.
    /// Calling it again does nothing.
    pub fn release_slot(&mut self) {
        // Dropping the tokens gives them back, once: again does nothing.
        self.held.release();
    }

    /// True while this connection counts against the accept budget.
    pub fn holds_slot(&self) -> bool {
        self.held.holds_slot()
    }

    /// Your per-connection state ([`Handler::State`]).
    pub fn state(&mut self) -> &mut S {
        self.state
    }

    /// Reserves the place of the next reply, to be filled from any thread:
    /// hand the [`ReplySlot`] to a worker with the request, and the worker's
    /// [`ReplySlot::send`] puts the reply exactly here.
    ///
    /// # Ordering
    ///
    /// The connection's output is one stream. The slot's reply is written
    /// after everything sent before `defer` (by this handler, or through
    /// [`ConnHandle::send`](crate::ConnHandle::send)) and before everything sent after it, whichever
    /// finishes first: what follows an unfilled slot waits in the
    /// connection's output, where it counts toward the water marks and
    /// [`Builder::output_limit`](crate::Builder::output_limit). So replies
    /// come back in request order however a pool of workers finishes them.
    /// A slot dropped unfilled gives up its place (and is logged), so the
    /// connection never waits for it forever.
    ///
    /// # Backpressure
    ///
    /// At [`Builder::max_deferred_replies`](crate::Builder::max_deferred_replies)
    /// replies outstanding (reserved, not yet written), the loop stops
    /// reading the connection, as it does above the high-water mark, and
    /// reads again once half of them are delivered. The lines of a read
    /// already under way are still handled, so the count can pass the bound
    /// by what one read holds. A closing connection (a stop, a peer that
    /// hung up after its requests) stays open until its replies are
    /// delivered, within the stop's grace period.
    pub fn defer(&mut self) -> ReplySlot {
        let seq = self.outbox.reserve(self.out.len());
        ReplySlot::new(self.shared.clone(), self.key, self.id, seq)
    }

    /// True when the connection is a TLS session (its handshake is done by
    /// the time the handler sees it).
    pub fn is_tls(&self) -> bool {
        self.session.is_some()
    }

    #[cfg(feature = "tls")]
    fn tls(&self) -> Option<&dyn SessionInfo> {
        self.session
    }

    /// The ALPN protocol agreed in the TLS handshake (see
    /// [`Builder::alpn_protocols`](crate::Builder::alpn_protocols)); `None`
    /// on plaintext, or when the client offered none.
    #[cfg(feature = "tls")]
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls()?.alpn_protocol()
    }

    /// The server name the client asked for (SNI), if any.
    #[cfg(feature = "tls")]
    pub fn server_name(&self) -> Option<&str> {
        self.tls()?.server_name()
    }

    /// The TLS version agreed (`TLSv1_3` or `TLSv1_2`); `None` on plaintext.
    #[cfg(feature = "tls")]
    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls()?.tls_version()
    }

    /// The client's certificate chain, leaf first, when the server's
    /// `ServerConfig` asked for client certificates and the client sent them.
    #[cfg(feature = "tls")]
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.tls()?.peer_certificates()
    }
}

/// `write!(conn, ...)` formats a reply straight into the connection's
/// output, with no `format!` allocation. Writes never fail and never block:
/// they follow [`send`](Conn::send)'s rules (past the output limit the
/// bytes are dropped and the connection closes).
impl<S: ?Sized> io::Write for Conn<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_bytes(buf);
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.send_bytes(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Who a connection's peer is: its Unix credentials, unless a PROXY header
/// named a client (`proxied`); else its address.
pub(crate) fn peer(addr: SocketAddr, proxied: bool, unix: Option<&Peer>) -> Peer {
    match unix {
        Some(unix) if !proxied => unix.clone(),
        _ => Peer::Tcp(addr),
    }
}

impl<S: ?Sized> Conn<'_, S> {
    /// This context, borrowed again with its state seen through `view`
    /// (`None` if `view` declines): the one place that lists every field,
    /// for [`downcast`](Conn::downcast) and [`erase`](Conn::erase).
    fn with_state<U: ?Sized>(
        &mut self,
        view: impl FnOnce(&mut S) -> Option<&mut U>,
    ) -> Option<Conn<'_, U>> {
        Some(Conn {
            id: self.id,
            peer: self.peer,
            proxy: self.proxy,
            unix: self.unix,
            state: view(&mut *self.state)?,
            out: &mut *self.out,
            outbox: &mut *self.outbox,
            room: self.room,
            verdict: &mut *self.verdict,
            held: &mut *self.held,
            key: self.key,
            shared: self.shared,
            session: self.session,
        })
    }
}

impl Conn<'_, dyn Any> {
    /// This context with the state seen as `U`, if it is one (for closures
    /// run on the loop from another thread, typed by their caller).
    pub(crate) fn downcast<U: 'static>(&mut self) -> Option<Conn<'_, U>> {
        self.with_state(|state| state.downcast_mut::<U>())
    }
}

impl<S: 'static> Conn<'_, S> {
    /// This context with its state type erased, for a closure that does not
    /// know the handler's type.
    pub(crate) fn erase(&mut self) -> Conn<'_, dyn Any> {
        match self.with_state(|state| Some(state as &mut dyn Any)) {
            Some(conn) => conn,
            None => unreachable!("the view always gives the state"),
        }
    }
}

impl<S: ?Sized> fmt::Debug for Conn<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("peer", &self.peer())
            .field("pending", &self.out.len())
            .field("replies_outstanding", &self.outbox.outstanding())
            .field("room", &self.room)
            .field("closing", &self.verdict)
            .field("tls", &self.is_tls())
            .finish_non_exhaustive()
    }
}
