//! Listeners beyond one TCP port: Unix domain sockets, listeners inherited
//! from systemd, and listeners handed over by a running predecessor.
//!
//! These are the building blocks; none of them touches the poll loop. Each
//! produces or consumes a [`Listener`]: a TCP or a Unix stream listener,
//! always **non-blocking and close-on-exec**, ready for
//! `mio::net::TcpListener::from_std` / `mio::net::UnixListener::from_std`.
//!
//! A server uses them through its [`Builder`](crate::Builder):
//! [`unix`](crate::Builder::unix) and [`bind_all`](crate::Builder::bind_all)
//! bind with [`bind_unix`], [`inherit`](crate::Builder::inherit) adopts
//! [`from_env`]'s listeners, [`handover`](crate::Builder::handover) runs a
//! [`HandoverServer`] in the loop and [`take_over`](crate::Builder::take_over)
//! is [`take_over`]. They are public for programs that manage listeners
//! themselves (choosing among systemd's by name, say, then
//! [`Builder::listeners`](crate::Builder::listeners)).
//!
//! # Layout
//!
//! - `unix.rs`: [`bind_unix`] (stale files replaced, live servers never
//!   stolen, the mode set before anyone can connect), [`UnixPathGuard`]
//!   (removes the file on stop, only if it is still ours), and
//!   [`peer_credentials`] (`SO_PEERCRED`).
//! - `peer.rs`: [`Peer`], who is on the other end, for TCP and Unix alike.
//! - `activation.rs`: [`from_env`], systemd's socket activation protocol.
//! - `wire.rs`: the hand-over's messages, encoded and decoded without I/O.
//! - `handover.rs`: [`HandoverServer`] (the running server's side, never
//!   blocking its loop) and [`take_over`] (the successor's side).
//!
//! # Unsafe code
//!
//! None here. Descriptors received over a Unix socket arrive as `OwnedFd`
//! from rustix; the only step that needs `from_raw_fd`, adopting systemd's
//! descriptors 3.., is done inside the `listenfd` crate.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use rustix::io::FdFlags;
use rustix::net::{ipproto, sockopt, AddressFamily, SocketType};

mod activation;
mod handover;
mod peer;
mod unix;
mod wire;

pub use activation::{from_env, ActivationError};
pub use handover::{take_over, Confirmation, HandoverEvent, HandoverServer};
pub use peer::Peer;
pub use unix::{bind_unix, peer_credentials, Credentials, UnixPathGuard};

/// The most listeners adopted from systemd or handed over at once.
///
/// It bounds the descriptors one hand-over message may carry (and so its
/// ancillary buffer) and the `LISTEN_FDS` count accepted. A server listens
/// on a handful of sockets; 64 leaves room for every address family and
/// port of a large host without letting a bad environment variable make
/// the process loop over millions of descriptors.
pub const MAX_LISTENERS: usize = 64;

/// A listening stream socket: TCP or Unix.
///
/// Every `Listener` this module returns is non-blocking and close-on-exec.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener (IPv4 or IPv6; MPTCP counts as TCP).
    Tcp(TcpListener),
    /// A Unix domain stream listener.
    Unix(UnixListener),
}

impl Listener {
    /// `"tcp"` or `"unix"`: the kind, as the hand-over message and log
    /// lines name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Listener::Tcp(_) => "tcp",
            Listener::Unix(_) => "unix",
        }
    }

    /// A second descriptor for the same listening socket (`dup`), sharing
    /// its accept queue: what a server gives [`HandoverServer::bind`] while
    /// it keeps accepting on the original.
    ///
    /// # Errors
    ///
    /// `dup` failed (descriptor limit).
    pub fn try_clone(&self) -> io::Result<Listener> {
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix(l) => Listener::Unix(l.try_clone()?),
        })
    }

    /// Checks that `fd` is a listening TCP or Unix stream socket, and makes
    /// it non-blocking and close-on-exec.
    ///
    /// On failure the descriptor comes back with the reason, untouched, so
    /// that the caller decides whether closing it is its business.
    pub(crate) fn from_fd(fd: OwnedFd) -> Result<Listener, (OwnedFd, String)> {
        let kind = match classify(fd.as_fd()) {
            Ok(kind) => kind,
            Err(reason) => return Err((fd, reason)),
        };
        // The kernel keeps both flags per descriptor (CLOEXEC) or per open
        // socket (O_NONBLOCK); a descriptor passed by systemd or by a
        // predecessor may have either in any state.
        if let Err(e) = rustix::io::fcntl_setfd(&fd, FdFlags::CLOEXEC) {
            return Err((fd, format!("cannot set close-on-exec: {e}")));
        }
        let listener = match kind {
            Kind::Tcp => Listener::Tcp(TcpListener::from(fd)),
            Kind::Unix => Listener::Unix(UnixListener::from(fd)),
        };
        if let Err(e) = listener.set_nonblocking() {
            let fd = match listener {
                Listener::Tcp(l) => OwnedFd::from(l),
                Listener::Unix(l) => OwnedFd::from(l),
            };
            return Err((fd, format!("cannot make it non-blocking: {e}")));
        }
        Ok(listener)
    }

    /// Where it listens, as the kernel reports it (for a TCP listener bound
    /// to port 0, the port picked).
    ///
    /// # Errors
    ///
    /// `getsockname` failed.
    pub fn endpoint(&self) -> io::Result<Endpoint> {
        Ok(match self {
            Listener::Tcp(l) => Endpoint::Tcp(l.local_addr()?),
            Listener::Unix(l) => Endpoint::Unix(
                l.local_addr()?
                    .as_pathname()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_default(),
            ),
        })
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

/// The address as a person would type it: `127.0.0.1:7000`, `[::1]:7000`,
/// `unix:/run/app.sock`, or `unix:(unnamed)` for an unbound or abstract
/// socket; `?` if the kernel cannot tell.
impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => write!(f, "{addr}"),
                Err(_) => f.write_str("tcp:?"),
            },
            Listener::Unix(l) => match l.local_addr() {
                Ok(addr) => match addr.as_pathname() {
                    Some(path) => write!(f, "unix:{}", path.display()),
                    None => f.write_str("unix:(unnamed)"),
                },
                Err(_) => f.write_str("unix:?"),
            },
        }
    }
}

/// Where a server listens: a TCP address or a Unix socket path.
///
/// [`Builder::bind_all`](crate::Builder::bind_all) binds a list of them;
/// [`Server::endpoints`](crate::Server::endpoints) reports those a server
/// listens on (with the port the kernel picked for port 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// A TCP address, IPv4 or IPv6.
    Tcp(SocketAddr),
    /// A Unix socket's path. Empty for an adopted socket that has none (an
    /// unnamed or abstract one).
    Unix(PathBuf),
}

impl Endpoint {
    /// The TCP address; `None` for a Unix socket.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Endpoint::Tcp(addr) => Some(*addr),
            Endpoint::Unix(_) => None,
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint::Tcp(addr)
    }
}

/// As a person would type it, and as [`Listener`] shows it:
/// `127.0.0.1:7000`, `[::1]:7000`, `unix:/run/app.sock`, or
/// `unix:(unnamed)`.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Unix(path) if path.as_os_str().is_empty() => f.write_str("unix:(unnamed)"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A listener with the name it was passed under: systemd's
/// `FileDescriptorName=` (`LISTEN_FDNAMES`), or the name a predecessor gave
/// it in a hand-over.
#[derive(Debug)]
pub struct Inherited {
    /// The name, if one was given. systemd passes one for every descriptor
    /// once any is named (the unit's name by default).
    pub name: Option<String>,
    /// The listening socket, non-blocking and close-on-exec.
    pub listener: Listener,
}

/// What [`classify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Unix,
}

/// Asks the kernel what `fd` is: a socket (`SO_DOMAIN` fails with
/// `ENOTSOCK` otherwise), of stream type, listening (`SO_ACCEPTCONN`), and
/// TCP or Unix. The reason names the first check that failed.
fn classify(fd: BorrowedFd<'_>) -> Result<Kind, String> {
    let domain = match sockopt::socket_domain(fd) {
        Ok(domain) => domain,
        Err(rustix::io::Errno::NOTSOCK) => return Err("not a socket".to_string()),
        Err(e) => return Err(format!("cannot inspect it: {e}")),
    };
    let ty = sockopt::socket_type(fd).map_err(|e| format!("cannot read SO_TYPE: {e}"))?;
    if ty != SocketType::STREAM {
        return Err(format!(
            "a {} socket, not a stream socket",
            socket_type_name(ty)
        ));
    }
    let kind = if domain == AddressFamily::UNIX {
        Kind::Unix
    } else if domain == AddressFamily::INET || domain == AddressFamily::INET6 {
        let protocol =
            sockopt::socket_protocol(fd).map_err(|e| format!("cannot read SO_PROTOCOL: {e}"))?;
        // SOCK_STREAM over IP is TCP, MPTCP (accepted as TCP: the API is
        // the same) or SCTP's one-to-one style, which a line server cannot
        // speak through `TcpListener`.
        if protocol != Some(ipproto::TCP) && protocol != Some(ipproto::MPTCP) {
            return Err(format!(
                "an IP stream socket of protocol {:?}, not TCP",
                protocol.map(|p| p.as_raw())
            ));
        }
        Kind::Tcp
    } else {
        return Err(format!(
            "a socket of address family {}, neither TCP nor Unix",
            domain.as_raw()
        ));
    };
    let listening =
        sockopt::socket_acceptconn(fd).map_err(|e| format!("cannot read SO_ACCEPTCONN: {e}"))?;
    if !listening {
        return Err("a stream socket that is not listening (no listen() was called)".to_string());
    }
    Ok(kind)
}

fn socket_type_name(ty: SocketType) -> &'static str {
    match ty {
        SocketType::DGRAM => "datagram",
        SocketType::SEQPACKET => "seqpacket",
        SocketType::RAW => "raw",
        _ => "non-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpStream, UdpSocket};
    use std::os::unix::net::{UnixDatagram, UnixStream};

    fn fd_flags(fd: BorrowedFd<'_>) -> FdFlags {
        rustix::io::fcntl_getfd(fd).unwrap()
    }

    /// A TCP listener is recognised, and comes out non-blocking and
    /// close-on-exec even if it went in without either.
    #[test]
    fn tcp_listener_is_adopted_with_flags_set() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let fd = OwnedFd::from(l);
        rustix::io::fcntl_setfd(&fd, FdFlags::empty()).unwrap();
        let listener = Listener::from_fd(fd).expect("a TCP listener");
        let Listener::Tcp(tcp) = &listener else {
            panic!("expected TCP, got {listener:?}")
        };
        assert_eq!(tcp.local_addr().unwrap(), addr);
        assert!(fd_flags(listener.as_fd()).contains(FdFlags::CLOEXEC));
        let err = tcp.accept().expect_err("nobody connected");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "non-blocking");
        assert_eq!(listener.to_string(), addr.to_string());
    }

    /// A Unix listener is recognised as Unix.
    #[test]
    fn unix_listener_is_adopted() {
        let path = std::env::temp_dir().join(format!("netpool-mod-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let listener = Listener::from_fd(OwnedFd::from(l)).expect("a Unix listener");
        assert_eq!(listener.kind(), "unix");
        assert_eq!(listener.to_string(), format!("unix:{}", path.display()));
        std::fs::remove_file(&path).unwrap();
    }

    /// What is not a listening stream socket is refused with a reason, and
    /// handed back rather than closed.
    #[test]
    fn non_listeners_are_refused_with_the_reason() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let connected = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let cases: [(OwnedFd, &str); 5] = [
            (connected.into(), "not listening"),
            (
                std::fs::File::open("/dev/null").unwrap().into(),
                "not a socket",
            ),
            (UdpSocket::bind("127.0.0.1:0").unwrap().into(), "datagram"),
            (UnixDatagram::unbound().unwrap().into(), "datagram"),
            (UnixStream::pair().unwrap().0.into(), "not listening"),
        ];
        for (fd, want) in cases {
            let (_fd, reason) = Listener::from_fd(fd).expect_err("refused");
            assert!(reason.contains(want), "{reason:?} should say {want:?}");
        }
    }
}
