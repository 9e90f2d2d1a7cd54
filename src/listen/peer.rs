//! [`Peer`]: who is on the other end of a connection, whatever the
//! listener it came through.
//!
//! A handler may want to log or decide by the peer. Over TCP that is an
//! address; over a Unix socket the address is nearly always empty (clients
//! rarely bind), and what identifies the peer is the user and process the
//! kernel recorded when it connected (`SO_PEERCRED`). Address filters and
//! the per-IP cap apply to [`Peer::Tcp`] only ([`Peer::ip`] is `None` for
//! Unix); a per-user cap would key on [`Peer::uid`].

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::os::unix::net::SocketAddr as UnixSocketAddr;
use std::path::PathBuf;

use super::unix::{peer_credentials, Credentials};

/// The other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Peer {
    /// A TCP peer: its address and port (after the PROXY protocol, if the
    /// server reads it, the address the proxy reported).
    Tcp(SocketAddr),
    /// A Unix domain peer.
    Unix {
        /// The peer's user, group and process, as the kernel recorded them
        /// at `connect`.
        credentials: Credentials,
        /// The path the *peer* bound its own socket to, which clients
        /// rarely do: `None` for an unnamed (the usual case) or abstract
        /// socket. Not the server's path.
        path: Option<PathBuf>,
    },
}

impl Peer {
    /// The peer of an accepted Unix stream, given the address `accept`
    /// returned with it.
    ///
    /// # Errors
    ///
    /// As [`peer_credentials`].
    pub fn unix(stream: impl AsFd, addr: &UnixSocketAddr) -> io::Result<Peer> {
        Ok(Peer::Unix {
            credentials: peer_credentials(stream)?,
            path: addr.as_pathname().map(|p| p.to_path_buf()),
        })
    }

    /// The IP address, for address filters and per-IP limits; `None` for a
    /// Unix peer, which has none.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Tcp(addr) => Some(addr.ip()),
            Peer::Unix { .. } => None,
        }
    }

    /// The peer's user id, for per-user limits; `None` for TCP, where the
    /// kernel does not know it.
    pub fn uid(&self) -> Option<u32> {
        match self {
            Peer::Tcp(_) => None,
            Peer::Unix { credentials, .. } => Some(credentials.uid),
        }
    }
}

/// `203.0.113.7:51234`, `[2001:db8::1]:443`, `unix(uid=1000 gid=1000
/// pid=4242)`, or `unix:/tmp/client.sock(uid=…)` for a peer that bound a
/// path.
impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(addr) => write!(f, "{addr}"),
            Peer::Unix {
                credentials,
                path: None,
            } => write!(f, "unix({credentials})"),
            Peer::Unix {
                credentials,
                path: Some(path),
            } => write!(f, "unix:{}({credentials})", path.display()),
        }
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Peer {
        Peer::Tcp(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    /// A Unix peer seen through a real accept carries this process's
    /// credentials, no IP, and prints as one token.
    #[test]
    fn unix_peer_from_accept() {
        let path = std::env::temp_dir().join(format!("netpool-peer-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let _client = UnixStream::connect(&path).unwrap();
        let (stream, addr) = listener.accept().unwrap();
        let peer = Peer::unix(&stream, &addr).unwrap();
        std::fs::remove_file(&path).unwrap();

        let Peer::Unix { credentials, path } = &peer else {
            panic!("{peer:?}")
        };
        assert_eq!(credentials.pid, Some(std::process::id()));
        assert_eq!(path, &None, "the client did not bind");
        assert_eq!(peer.ip(), None);
        assert_eq!(peer.uid(), Some(credentials.uid));
        let shown = peer.to_string();
        assert!(shown.starts_with("unix(uid="), "{shown}");
        assert!(
            shown.ends_with(&format!("pid={})", std::process::id())),
            "{shown}"
        );
    }

    /// A TCP peer is its address.
    #[test]
    fn tcp_peer_is_its_address() {
        let addr: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let peer = Peer::from(addr);
        assert_eq!(peer.ip(), Some(addr.ip()));
        assert_eq!(peer.uid(), None);
        assert_eq!(peer.to_string(), "[2001:db8::1]:443");
    }

    /// A peer that bound a path shows it, and an unknown pid shows `?`.
    #[test]
    fn bound_peer_and_unknown_pid() {
        let peer = Peer::Unix {
            credentials: Credentials {
                uid: 0,
                gid: 0,
                pid: None,
            },
            path: Some(PathBuf::from("/tmp/c.sock")),
        };
        assert_eq!(peer.to_string(), "unix:/tmp/c.sock(uid=0 gid=0 pid=?)");
    }
}
