//! Zero-downtime hand-over: a running server gives its listening sockets
//! to its successor, over a Unix control socket, and stops accepting only
//! once the successor accepts.
//!
//! ```text
//!  old server (HandoverServer, in its loop)        successor (take_over)
//!  listens on CTL (mode 0600)
//!                                      ◀── connect CTL
//!  check the peer's uid (ours or root)
//!  Offer {kinds, names} + SCM_RIGHTS ──▶  receive the descriptors
//!  (both may accept now: one queue)        start accepting on them
//!                                      ◀── Ready          (Confirmation::confirm)
//!  remove CTL, close it
//!  Done                               ──▶  confirm() returns: bind CTL anew
//!  ready() says HandedOver: stop
//!  accepting, drain, exit
//! ```
//!
//! # Why nothing is lost
//!
//! A listening socket is one kernel object with one accept queue, however
//! many descriptors (in however many processes) refer to it. From the
//! `Offer` on, both processes hold it, so a connection the kernel queues is
//! accepted by one of them; there is no moment when the port is closed or
//! bound twice, no `SO_REUSEPORT` split of the queue. The old server stops
//! accepting only after the successor said it accepts, and it never
//! closes a connection it accepted: it drains as at a normal stop.
//!
//! # Failure
//!
//! If the successor vanishes, speaks garbage or does not confirm within
//! the timeout, the old server drops that session and keeps serving as
//! before; another successor may try. A successor that got the descriptors
//! but never confirmed still holds them: it must exit (or may keep serving
//! beside the old one; nothing is lost either way). While a hand-over is in
//! progress, any other client of the control socket is rejected with a
//! message.
//!
//! # Security
//!
//! Whoever connects to the control socket can take the server's sockets.
//! The socket file is created with mode `0600`, and a peer whose uid is
//! neither ours nor root's is rejected (checked with `SO_PEERCRED`).
//!
//! # Backpressure
//!
//! The old side never blocks: the control listener and the session are
//! non-blocking and driven by [`HandoverServer::ready`]. The messages are
//! small (an offer is at most about 16 KiB, far below a Unix socket's send
//! buffer), so each is sent with one non-blocking call; one that does not
//! go out whole aborts the session rather than wait.

use std::fmt;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use rustix::net::{
    recvmsg, send, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

use super::unix::{bind_unix, peer_credentials, Credentials, UnixPathGuard};
use super::wire::{self, Entry, Message, HEADER_LEN, MAX_FRAME};
use super::{Inherited, Kind, Listener, MAX_LISTENERS};

/// The control socket's listen backlog: successors come one at a time,
/// and a few more are only rejected.
const CONTROL_BACKLOG: i32 = 8;

/// The running server's side of a hand-over: a non-blocking control socket
/// and the listeners it offers.
///
/// # In a mio loop
///
/// `HandoverServer` is a [`mio::event::Source`]: register it once with a
/// token of its own and [`Interest::READABLE`]. It registers the control
/// listener, and later the successor's connection, under that token (it
/// keeps a clone of the `Registry` for that). Whenever the token fires,
/// and whenever [`deadline`](HandoverServer::deadline) passes, call
/// [`ready`](HandoverServer::ready); it drains every socket until
/// `WouldBlock` (mio is edge-triggered) and never blocks.
pub struct HandoverServer {
    /// `None` once handed over: the control path is removed and closed.
    /// The guard comes first so that, dropped, it removes the file while
    /// the socket still listens (see `UnixPathGuard`).
    control: Option<(UnixPathGuard, UnixListener)>,
    path: PathBuf,
    /// Duplicates of the served listeners; dropped once handed over.
    offer: Vec<Inherited>,
    /// The `Offer` frame, encoded once.
    offer_frame: Vec<u8>,
    timeout: Duration,
    /// Successors must have this uid (or be root).
    owner: u32,
    state: State,
    registration: Option<(Registry, Token)>,
}

/// Where the hand-over is.
enum State {
    /// Waiting for a successor.
    Listening,
    /// The offer was sent to `successor`; waiting for its `Ready` until
    /// `deadline`.
    Offered {
        session: UnixStream,
        successor: Credentials,
        deadline: Instant,
        /// Bytes of the `Ready` frame received so far.
        received: [u8; HEADER_LEN],
        filled: usize,
    },
    /// Done: the successor accepts, the control socket is gone.
    HandedOver,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Listening => f.write_str("listening"),
            State::Offered { successor, .. } => write!(f, "offered to {successor}"),
            State::HandedOver => f.write_str("handed over"),
        }
    }
}

impl fmt::Debug for HandoverServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandoverServer")
            .field("path", &self.path)
            .field("state", &format_args!("{}", self.state))
            .field("listeners", &self.offer.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A completed hand-over, as [`HandoverServer::ready`] reports it once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandoverEvent {
    /// The successor accepts on the listeners now. Stop accepting, drain
    /// the connections served (they finish normally), then exit. Listeners
    /// that were Unix sockets: call [`UnixPathGuard::keep`] on their guards,
    /// the successor serves the same files.
    HandedOver {
        /// Who took over.
        successor: Credentials,
    },
}

impl HandoverServer {
    /// Listens for a successor on `ctl_path` (mode `0600`; a stale file is
    /// replaced, a live one refused, as [`bind_unix`]), offering `offer`.
    ///
    /// `offer` holds duplicates of the listeners the server accepts on
    /// ([`Listener::try_clone`], or `as_fd().try_clone_to_owned()` of a
    /// mio listener): the server keeps accepting on its own until the
    /// hand-over is done. A successor has `confirm_timeout` from its
    /// connection to confirm, or the session is dropped.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `offer` is empty, holds more than
    /// [`MAX_LISTENERS`] listeners, or a name longer than 255 bytes; the
    /// errors of [`bind_unix`].
    pub fn bind(
        ctl_path: &Path,
        offer: Vec<Inherited>,
        confirm_timeout: Duration,
    ) -> io::Result<HandoverServer> {
        if offer.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listeners to hand over",
            ));
        }
        let entries = offer
            .iter()
            .map(|i| Entry {
                kind: match i.listener {
                    Listener::Tcp(_) => Kind::Tcp,
                    Listener::Unix(_) => Kind::Unix,
                },
                name: i.name.clone(),
            })
            .collect();
        let offer_frame = wire::encode(&Message::Offer(entries))?;
        let (listener, guard) = bind_unix(ctl_path, Some(0o600), CONTROL_BACKLOG)?;
        Ok(HandoverServer {
            control: Some((guard, UnixListener::from_std(listener))),
            path: ctl_path.to_path_buf(),
            offer,
            offer_frame,
            timeout: confirm_timeout,
            owner: rustix::process::geteuid().as_raw(),
            state: State::Listening,
            registration: None,
        })
    }

    /// The control socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When [`ready`](HandoverServer::ready) must be called even without
    /// an event: the successor's confirmation deadline, while one is
    /// awaited. Fold it into the poll timeout.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Offered { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// Whether the hand-over is done (and [`ready`](HandoverServer::ready)
    /// has reported it).
    pub fn is_handed_over(&self) -> bool {
        matches!(self.state, State::HandedOver)
    }

    /// Does all the work that can be done now without blocking: drops a
    /// session past its deadline, reads the successor's confirmation,
    /// accepts new control connections (offering the listeners to the
    /// first, rejecting the others). Returns
    /// [`HandoverEvent::HandedOver`] once, when the successor confirmed.
    ///
    /// Failures (a successor that went away, an accept error) are logged
    /// and end only that session; the server goes on serving.
    pub fn ready(&mut self, now: Instant) -> Option<HandoverEvent> {
        let mut event = None;
        if let State::Offered { deadline, .. } = &self.state {
            if now >= *deadline {
                self.abort("the successor did not confirm in time");
            }
        }
        if matches!(self.state, State::Offered { .. }) {
            event = self.read_confirmation();
        }
        self.accept_all(now);
        event
    }

    /// Reads what the successor sent, until `WouldBlock`.
    fn read_confirmation(&mut self) -> Option<HandoverEvent> {
        let State::Offered {
            session,
            received,
            filled,
            ..
        } = &mut self.state
        else {
            return None;
        };
        match read_ready(session, received, filled) {
            Ok(false) => None,
            Ok(true) => Some(self.complete()),
            Err(reason) => {
                self.abort(&reason);
                None
            }
        }
    }

    /// The successor accepts: give up the control path first (so that the
    /// successor may bind it as soon as it hears `Done`), then say `Done`.
    fn complete(&mut self) -> HandoverEvent {
        let State::Offered {
            mut session,
            successor,
            ..
        } = std::mem::replace(&mut self.state, State::HandedOver)
        else {
            unreachable!("complete() is called in the Offered state only");
        };
        if let Some((guard, mut listener)) = self.control.take() {
            // Remove the file while our socket still listens on it: no one
            // can have replaced it (see UnixPathGuard).
            if let Err(e) = guard.remove() {
                log::warn!("hand-over: control socket file not removed: {e}");
            }
            self.unregister(&mut listener);
        }
        match send_frame(&session, &Message::Done) {
            Ok(()) => {}
            // The successor accepts whatever happens here; it will only
            // not hear that we stopped, and its confirm() reports that.
            Err(e) => log::warn!("hand-over: could not tell the successor we are done: {e}"),
        }
        self.unregister(&mut session);
        // Our duplicates: the loop still holds its own listeners until it
        // has stopped accepting.
        self.offer.clear();
        log::info!("hand-over: {successor} accepts on the listeners now; stop accepting and drain");
        HandoverEvent::HandedOver { successor }
    }

    /// Drops the session in progress and goes back to waiting.
    fn abort(&mut self, reason: &str) {
        if let State::Offered {
            mut session,
            successor,
            ..
        } = std::mem::replace(&mut self.state, State::Listening)
        {
            self.unregister(&mut session);
            log::warn!("hand-over to {successor} aborted, serving on: {reason}");
        }
    }

    /// Accepts control connections until `WouldBlock`.
    fn accept_all(&mut self, now: Instant) {
        loop {
            let Some((_, listener)) = &self.control else {
                return;
            };
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of descriptors, most likely. A successor will
                    // time out and can try again; the server serves on.
                    log::warn!("hand-over: accept on {}: {e}", self.path.display());
                    return;
                }
            };
            self.admit(stream, now);
        }
    }

    /// Offers the listeners to `stream`, or rejects it.
    fn admit(&mut self, mut stream: UnixStream, now: Instant) {
        let credentials = match peer_credentials(&stream) {
            Ok(c) => c,
            Err(e) => return reject(&stream, &format!("cannot read your credentials: {e}")),
        };
        if credentials.uid != self.owner && credentials.uid != 0 {
            return reject(
                &stream,
                &format!(
                    "uid {} may not take over a server of uid {}",
                    credentials.uid, self.owner
                ),
            );
        }
        if let State::Offered { successor, .. } = &self.state {
            return reject(
                &stream,
                &format!("a hand-over to {successor} is already in progress"),
            );
        }
        let fds: Vec<BorrowedFd<'_>> = self.offer.iter().map(|i| i.listener.as_fd()).collect();
        if let Err(e) = send_with_fds(&stream, &self.offer_frame, &fds) {
            log::warn!("hand-over: sending the listeners to {credentials}: {e}");
            return;
        }
        // Registered after the offer went out, yet no `Ready` can be missed:
        // epoll reports data already waiting when a socket is added.
        if let Some((registry, token)) = &self.registration {
            if let Err(e) = registry.register(&mut stream, *token, Interest::READABLE) {
                // Without it the confirmation would go unheard.
                log::warn!("hand-over: cannot register the session: {e}");
                return;
            }
        }
        log::info!(
            "hand-over: offered {} listener(s) to {credentials}; waiting for it to accept",
            self.offer.len()
        );
        self.state = State::Offered {
            session: stream,
            successor: credentials,
            deadline: now + self.timeout,
            received: [0; HEADER_LEN],
            filled: 0,
        };
    }

    /// What the poll watches under our token, with the interest each
    /// wants: the control listener (with the loop's `interests`) and the
    /// session in progress (only ever read: its one send is non-blocking).
    fn sources(
        &mut self,
        interests: Interest,
    ) -> impl Iterator<Item = (&mut dyn mio::event::Source, Interest)> {
        let control = self.control.as_mut().map(|(_, listener)| {
            let listener: &mut dyn mio::event::Source = listener;
            (listener, interests)
        });
        let session = match &mut self.state {
            State::Offered { session, .. } => {
                let session: &mut dyn mio::event::Source = session;
                Some((session, Interest::READABLE))
            }
            _ => None,
        };
        control.into_iter().chain(session)
    }

    /// Takes `source` out of the poll, if we were registered.
    fn unregister(&self, source: &mut impl mio::event::Source) {
        if let Some((registry, _)) = &self.registration {
            // A source that was never registered (registration came later)
            // fails here harmlessly.
            let _ = registry.deregister(source);
        }
    }
}

/// Registers the control listener and the session in progress, if any,
/// under one token, and keeps the registry to register later sessions.
impl mio::event::Source for HandoverServer {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        for (source, interests) in self.sources(interests) {
            registry.register(source, token, interests)?;
        }
        self.registration = Some((registry.try_clone()?, token));
        Ok(())
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        for (source, interests) in self.sources(interests) {
            registry.reregister(source, token, interests)?;
        }
        self.registration = Some((registry.try_clone()?, token));
        Ok(())
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        for (source, _) in self.sources(Interest::READABLE) {
            registry.deregister(source)?;
        }
        self.registration = None;
        Ok(())
    }
}

/// Reads the successor's `Ready` until `WouldBlock`: `Ok(true)` once it is
/// whole, `Ok(false)` while it is not, `Err(reason)` if the session failed.
fn read_ready(
    session: &mut UnixStream,
    received: &mut [u8; HEADER_LEN],
    filled: &mut usize,
) -> Result<bool, String> {
    loop {
        // `Ready` is a bare header: the buffer holds exactly one, and a
        // byte beyond it would be a protocol error anyway.
        match session.read(&mut received[*filled..]) {
            Ok(0) => return Err("the successor closed the connection before confirming".into()),
            Ok(n) => {
                *filled += n;
                match wire::decode(&received[..*filled]) {
                    Ok(None) if *filled < HEADER_LEN => continue,
                    Ok(None) => return Err("the successor sent an oversized message".into()),
                    Ok(Some((Message::Ready, _))) => return Ok(true),
                    Ok(Some((other, _))) => {
                        return Err(format!("the successor sent {other:?}, not Ready"))
                    }
                    Err(e) => return Err(format!("the successor sent garbage: {e}")),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the successor's confirmation: {e}")),
        }
    }
}

/// Tells a would-be successor why not, in one non-blocking send, and
/// closes the connection.
fn reject(stream: &UnixStream, reason: &str) {
    log::warn!("hand-over: rejected a successor: {reason}");
    if let Err(e) = send_frame(stream, &Message::Reject(reason.to_string())) {
        log::debug!("hand-over: could not send the rejection: {e}");
    }
}

/// Sends one small frame without blocking; a short send is an error.
fn send_frame(stream: impl AsFd, message: &Message) -> io::Result<()> {
    let frame = wire::encode(message)?;
    let sent = send(stream, &frame, SendFlags::NOSIGNAL | SendFlags::DONTWAIT)?;
    if sent != frame.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("only {sent} of {} bytes went out", frame.len()),
        ));
    }
    Ok(())
}

/// Sends `frame` with `fds` attached, in one non-blocking `sendmsg`.
fn send_with_fds(stream: impl AsFd, frame: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} descriptors do not fit one message", fds.len()),
        ));
    }
    let sent = sendmsg(
        stream,
        &[IoSlice::new(frame)],
        &mut control,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?;
    if sent != frame.len() {
        // The descriptors went with the first byte; the rest of the frame
        // would need a writable event. An offer is far smaller than a
        // socket buffer, so this does not happen; if it does, the session
        // is dropped and the successor fails cleanly.
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("only {sent} of {} bytes went out", frame.len()),
        ));
    }
    Ok(())
}

/// Takes the listeners over from the server whose control socket is at
/// `ctl_path`.
///
/// Blocking, each step bounded by `timeout`: connect, receive the offer and
/// the descriptors. The returned listeners are the old server's own
/// sockets (same accept queue), non-blocking and close-on-exec, in the
/// order it offered them, with their names. Start accepting on them, then
/// call [`Confirmation::confirm`]; until then the old server accepts too.
/// Dropping the `Confirmation` without confirming tells the old server to
/// carry on alone.
///
/// # Errors
///
/// - `NotFound`: no control socket at `ctl_path`; `ConnectionRefused`:
///   nobody listens on it. The message names the path.
/// - `PermissionDenied`: the old server rejected us; the message gives its
///   reason (a hand-over already in progress, another uid).
/// - `TimedOut`: no offer within `timeout`.
/// - `InvalidData`: the peer is not a netpool hand-over server, speaks
///   another version, or sent descriptors that do not match its offer.
pub fn take_over(ctl_path: &Path, timeout: Duration) -> io::Result<(Vec<Inherited>, Confirmation)> {
    let stream = StdUnixStream::connect(ctl_path).map_err(|e| {
        let what = match e.kind() {
            io::ErrorKind::NotFound => "no hand-over control socket at",
            io::ErrorKind::ConnectionRefused => "no server listens on",
            _ => "cannot connect to",
        };
        io::Error::new(e.kind(), format!("{what} {}: {e}", ctl_path.display()))
    })?;
    stream.set_write_timeout(Some(timeout))?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0; MAX_FRAME];
    let mut filled = 0;
    let mut fds: Vec<OwnedFd> = Vec::new();
    let message = loop {
        if let Some((message, _)) = wire::decode(&buf[..filled])? {
            break message;
        }
        set_read_deadline(&stream, deadline, "the offer")?;
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = match recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut buf[filled..])],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(got) => got,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Err(timed_out("the offer")),
            Err(e) => return Err(e.into()),
        };
        if got.flags.contains(ReturnFlags::CTRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the old server sent more than {MAX_LISTENERS} descriptors"),
            ));
        }
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if fds.len() > MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the old server sent more than {MAX_LISTENERS} descriptors"),
            ));
        }
        if got.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the old server closed the control connection without an offer",
            ));
        }
        filled += got.bytes;
    };
    let entries = match message {
        Message::Offer(entries) => entries,
        Message::Reject(reason) => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("the old server refused the hand-over: {reason}"),
            ))
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected an offer, got {other:?}"),
            ))
        }
    };
    if entries.len() != fds.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the offer names {} listeners but came with {} descriptors",
                entries.len(),
                fds.len()
            ),
        ));
    }
    let mut listeners = Vec::with_capacity(entries.len());
    for (entry, fd) in entries.into_iter().zip(fds) {
        let listener = Listener::from_fd(fd).map_err(|(_fd, reason)| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("an offered descriptor is not a listener: {reason}"),
            )
        })?;
        let kind = match listener {
            Listener::Tcp(_) => Kind::Tcp,
            Listener::Unix(_) => Kind::Unix,
        };
        if kind != entry.kind {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the offer says {:?} but the descriptor is {}",
                    entry.kind,
                    listener.kind()
                ),
            ));
        }
        listeners.push(Inherited {
            name: entry.name,
            listener,
        });
    }
    Ok((
        listeners,
        Confirmation {
            stream,
            timeout,
            path: ctl_path.to_path_buf(),
        },
    ))
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the old server sent no {what} in time"),
    )
}

fn set_read_deadline(stream: &StdUnixStream, deadline: Instant, what: &str) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out(what));
    }
    stream.set_read_timeout(Some(left))
}

/// The successor's half of a hand-over in progress: call
/// [`confirm`](Confirmation::confirm) once accepting on the listeners.
#[derive(Debug)]
#[must_use = "the old server keeps accepting until you confirm"]
pub struct Confirmation {
    stream: StdUnixStream,
    timeout: Duration,
    path: PathBuf,
}

impl Confirmation {
    /// Tells the old server that we accept now, and waits (at most the
    /// `take_over` timeout) for it to say it stopped. Once this returns,
    /// the control path is free: bind a [`HandoverServer`] there for the
    /// next hand-over.
    ///
    /// # Errors
    ///
    /// The old server did not acknowledge: it gave up waiting (its own
    /// timeout) or stopped. It may still be accepting; both serving is
    /// safe, and the caller decides whether to carry on or exit.
    pub fn confirm(mut self) -> io::Result<()> {
        let frame = wire::encode(&Message::Ready)?;
        if let Err(e) = self.stream.write_all(&frame) {
            return Err(match e.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => self.gone(),
                _ => io::Error::new(e.kind(), format!("telling the old server we accept: {e}")),
            });
        }
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0; HEADER_LEN];
        let mut filled = 0;
        loop {
            if let Some((message, _)) = wire::decode(&buf[..filled])? {
                return match message {
                    Message::Done => Ok(()),
                    other => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("expected Done, got {other:?}"),
                    )),
                };
            }
            set_read_deadline(&self.stream, deadline, "acknowledgement")?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => return Err(self.gone()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(self.gone()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(timed_out("acknowledgement"))
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn gone(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the old server at {} closed the hand-over without acknowledging \
                 (it timed out or stopped); it may still be accepting",
                self.path.display()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn ctl_path(tag: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        std::env::temp_dir().join(format!(
            "netpool-ho-{tag}-{}-{}.ctl",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn tcp_offer() -> (TcpListener, Vec<Inherited>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let dup = Listener::Tcp(l.try_clone().unwrap());
        (
            l,
            vec![Inherited {
                name: Some("web".into()),
                listener: dup,
            }],
        )
    }

    /// Drives `server` (without mio, by calling `ready` in a bounded loop)
    /// until `done` says so; panics after a deadline.
    fn drive_until(
        server: &mut HandoverServer,
        mut done: impl FnMut(&mut HandoverServer, Option<HandoverEvent>) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let event = server.ready(Instant::now());
            if done(server, event) {
                return;
            }
            assert!(Instant::now() < deadline, "condition not reached in time");
            std::thread::yield_now();
        }
    }

    mod offered {
        use super::*;

        /// A successor that never confirms is dropped at the deadline, and
        /// the next one succeeds. Time is passed in, so nothing sleeps.
        #[test]
        fn deadline_aborts_and_a_new_successor_may_try() {
            let path = ctl_path("deadline");
            let (_own, offer) = tcp_offer();
            let mut server = HandoverServer::bind(&path, offer, Duration::from_secs(30)).unwrap();
            let p = path.clone();
            let first = std::thread::spawn(move || take_over(&p, Duration::from_secs(10)));
            drive_until(&mut server, |s, _| s.deadline().is_some());
            let (listeners, confirmation) = first.join().unwrap().unwrap();
            assert_eq!(listeners.len(), 1);

            let late = server.deadline().unwrap() + Duration::from_millis(1);
            assert_eq!(server.ready(late), None);
            assert_eq!(server.deadline(), None, "the session was dropped");
            let err = confirmation.confirm().expect_err("too late");
            assert!(err.to_string().contains("without acknowledging"), "{err}");

            let p = path.clone();
            let second = std::thread::spawn(move || {
                let (_listeners, confirmation) = take_over(&p, Duration::from_secs(10))?;
                confirmation.confirm()
            });
            drive_until(&mut server, |_, e| e.is_some());
            second.join().unwrap().expect("second successor confirmed");
            assert!(server.is_handed_over());
            assert!(!path.exists(), "control path given up");
        }

        /// A successor that goes away before confirming aborts the session
        /// only.
        #[test]
        fn successor_gone_aborts() {
            let path = ctl_path("gone");
            let (_own, offer) = tcp_offer();
            let mut server = HandoverServer::bind(&path, offer, Duration::from_secs(30)).unwrap();
            let p = path.clone();
            let t = std::thread::spawn(move || drop(take_over(&p, Duration::from_secs(10))));
            drive_until(&mut server, |s, _| s.deadline().is_some());
            t.join().unwrap();
            drive_until(&mut server, |s, _| s.deadline().is_none());
            assert!(!server.is_handed_over());
            assert!(path.exists(), "still waiting for a successor");
        }
    }

    mod refused {
        use super::*;

        /// A client that is not netpool gets nothing, and the old server
        /// serves on.
        #[test]
        fn garbage_from_the_successor_aborts() {
            let path = ctl_path("garbage");
            let (_own, offer) = tcp_offer();
            let mut server = HandoverServer::bind(&path, offer, Duration::from_secs(30)).unwrap();
            let mut raw = StdUnixStream::connect(&path).unwrap();
            drive_until(&mut server, |s, _| s.deadline().is_some());
            raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            drive_until(&mut server, |s, _| s.deadline().is_none());
            assert!(!server.is_handed_over());
        }

        /// A server dropped before any hand-over removes its control file.
        #[test]
        fn dropping_removes_the_control_file() {
            let path = ctl_path("drop");
            let (_own, offer) = tcp_offer();
            let server = HandoverServer::bind(&path, offer, Duration::from_secs(1)).unwrap();
            assert!(path.exists());
            drop(server);
            assert!(!path.exists());
        }

        /// Nothing to offer is refused up front.
        #[test]
        fn empty_offer() {
            let err = HandoverServer::bind(&ctl_path("empty"), Vec::new(), Duration::from_secs(1))
                .expect_err("empty");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }

        /// No control socket: an error naming the path.
        #[test]
        fn no_control_socket() {
            let path = ctl_path("none");
            let err = take_over(&path, Duration::from_secs(1)).expect_err("nothing there");
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
            assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        }
    }
}
