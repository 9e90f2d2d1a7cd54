//! The sockets under the loop: a listening socket and an accepted stream,
//! each TCP or Unix.
//!
//! Once accepted, a TCP and a Unix stream socket are driven alike: `read`,
//! `write` and `shutdown` are the same calls on both, and both take the same
//! readiness from the poll. What differs is known at `accept` and settled
//! there: who the peer is (an address, or the credentials the kernel
//! recorded for a Unix peer, `SO_PEERCRED`), and `TCP_NODELAY` (TCP only).
//! So a connection's socket is one enum, [`Stream`], matched in each call:
//! one well-predicted branch, no virtual call, no `cfg`.
//!
//! # Size
//!
//! The socket sits in every connection's slab entry, and
//! `Connection<(), Plain>` must stay within 128 bytes. The Unix variant is
//! boxed, together with its [`Peer`]: the enum is then 16 bytes in debug and
//! release builds alike (the box's pointer fits beside the TCP socket's
//! descriptor, whose invalid value `-1` marks the variant), where two
//! unboxed mio sockets would be 24 bytes in a debug build. A Unix connection
//! pays one allocation at accept; a TCP connection pays nothing.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::listen::{Listener, Peer};

/// The peer address of a connection that came through a Unix socket, which
/// has none: `0.0.0.0:0`. What [`Conn::peer_addr`](crate::Conn::peer_addr)
/// reports for it; [`Conn::peer`](crate::Conn::peer) has the credentials.
pub(crate) const NO_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// A connection's socket.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Accepted from a TCP listener.
    Tcp(TcpStream),
    /// Accepted from a Unix listener, with who connected (see `# Size`).
    Unix(Box<UnixConn>),
}

/// A Unix stream and its peer, boxed together.
#[derive(Debug)]
pub(crate) struct UnixConn {
    stream: UnixStream,
    peer: Peer,
}

impl Stream {
    /// The IP address admission decides on: `None` for a Unix peer, which
    /// has none (address filters and the per-IP cap do not apply to it).
    pub(crate) fn ip(&self, addr: SocketAddr) -> Option<IpAddr> {
        match self {
            Stream::Tcp(_) => Some(addr.ip()),
            Stream::Unix(_) => None,
        }
    }

    /// The credentials of a Unix peer; `None` on TCP.
    #[inline]
    pub(crate) fn unix_peer(&self) -> Option<&Peer> {
        match self {
            Stream::Tcp(_) => None,
            Stream::Unix(u) => Some(&u.peer),
        }
    }

    /// `TCP_NODELAY` on a TCP stream; nothing on a Unix stream, which has
    /// no Nagle algorithm to turn off.
    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nodelay(on),
            Stream::Unix(_) => Ok(()),
        }
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(u) => u.stream.shutdown(how),
        }
    }
}

impl Read for Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(u) => u.stream.read(buf),
        }
    }
}

impl Write for Stream {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(u) => u.stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // nothing is buffered here
    }
}

/// A listening socket of the loop.
#[derive(Debug)]
pub(crate) enum ListenSocket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl ListenSocket {
    /// Takes over a non-blocking listener (every [`Listener`] is).
    pub(crate) fn new(listener: Listener) -> ListenSocket {
        match listener {
            Listener::Tcp(l) => ListenSocket::Tcp(TcpListener::from_std(l)),
            Listener::Unix(l) => ListenSocket::Unix(UnixListener::from_std(l)),
        }
    }

    /// Accepts one connection: its stream and the address the core keeps
    /// ([`NO_ADDR`] for a Unix peer, whose credentials travel in the
    /// stream).
    ///
    /// # Errors
    ///
    /// `accept`'s. A Unix peer whose credentials cannot be read is dropped
    /// and reported as `ConnectionAborted`: the loop takes the next one.
    pub(crate) fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            ListenSocket::Tcp(l) => {
                let (stream, addr) = l.accept()?;
                Ok((Stream::Tcp(stream), addr))
            }
            ListenSocket::Unix(l) => {
                let (stream, addr) = l.accept()?;
                let peer = Peer::unix(&stream, &addr).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("a Unix peer's credentials could not be read: {e}"),
                    )
                })?;
                Ok((Stream::Unix(Box::new(UnixConn { stream, peer })), NO_ADDR))
            }
        }
    }
}

/// `Source` for an enum of mio sockets: `register`, `reregister` and
/// `deregister` pass through to the socket each variant holds (the arms
/// given), written once for [`Stream`] and [`ListenSocket`]. A `match` as
/// in `read`, not a virtual call.
macro_rules! source_through_socket {
    ($ty:ty { $($variant:pat => $socket:expr),+ $(,)? }) => {
        impl Source for $ty {
            fn register(
                &mut self,
                registry: &Registry,
                token: Token,
                interests: Interest,
            ) -> io::Result<()> {
                match self {
                    $($variant => $socket.register(registry, token, interests),)+
                }
            }

            fn reregister(
                &mut self,
                registry: &Registry,
                token: Token,
                interests: Interest,
            ) -> io::Result<()> {
                match self {
                    $($variant => $socket.reregister(registry, token, interests),)+
                }
            }

            fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
                match self {
                    $($variant => $socket.deregister(registry),)+
                }
            }
        }
    };
}

source_through_socket!(Stream {
    Stream::Tcp(s) => s,
    Stream::Unix(u) => u.stream,
});
source_through_socket!(ListenSocket {
    ListenSocket::Tcp(l) => l,
    ListenSocket::Unix(l) => l,
});

#[cfg(test)]
mod tests {
    use super::*;

    /// The enum stays as small as one mio socket can be made to be: see
    /// `# Size`.
    #[test]
    fn a_stream_is_sixteen_bytes() {
        assert!(std::mem::size_of::<Stream>() <= 16);
    }

    /// A Unix connection carries the credentials of the process that
    /// connected (this one), reads and writes like a TCP one, and has no IP
    /// for admission to decide on.
    #[test]
    fn a_unix_stream_knows_its_peer() {
        let dir = std::env::temp_dir().join(format!("netpool-socket-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let std_listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let listener = ListenSocket::new(Listener::Unix(std_listener));
        let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let (mut stream, addr) = listener.accept().unwrap();
        assert_eq!(addr, NO_ADDR);
        assert_eq!(stream.ip(addr), None);
        let peer = stream.unix_peer().expect("a Unix peer");
        assert_eq!(peer.uid(), Some(rustix::process::geteuid().as_raw()));
        client.write_all(b"ping\n").unwrap();
        let mut buf = [0; 16];
        let n = loop {
            match stream.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("read: {e}"),
            }
        };
        assert_eq!(&buf[..n], b"ping\n");
        assert_eq!(stream.write(b"pong\n").unwrap(), 5);
        stream.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "pong\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
