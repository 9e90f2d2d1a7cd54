//! The kernel's accept queue of a listening socket: how many connections
//! wait there to be accepted, and how many may.
//!
//! This is the waiting room of [`Overflow::Pause`](crate::Overflow::Pause)
//! and the first place an overload shows: clients the loop has not yet
//! accepted are invisible to every counter of netpool's own.
//!
//! # How it is read
//!
//! Linux keeps both figures on the listening socket (`sk_ack_backlog`, the
//! queue's length, and `sk_max_ack_backlog`, the effective backlog) and
//! reports them two ways:
//!
//! - `getsockopt(IPPROTO_TCP, TCP_INFO)`, as `tcpi_unacked` and
//!   `tcpi_sacked`. No well-kept crate exposes `TCP_INFO` without `unsafe`
//!   in the caller (checked: rustix 1.1.6, nix 0.32.0, socket2 0.6.5; the
//!   requests are socket2#362 and nix#2691), and this crate forbids
//!   `unsafe`.
//! - The `sock_diag` netlink interface, which is what `ss -lnt` prints as
//!   `Recv-Q` / `Send-Q`: a listening socket's `inet_diag_msg` carries the
//!   queue length in `idiag_rqueue` and the backlog in `idiag_wqueue`.
//!   rustix opens, sends to and receives from a netlink socket safely; the
//!   request and the reply are plain bytes, built and read here.
//!
//! So this module asks `sock_diag` for the TCP listeners on our port
//! (`NLM_F_DUMP`, filtered by the kernel on state and source port), and
//! picks ours by inode: with `SO_REUSEPORT`, several listeners share a port,
//! each with its own queue. One query costs a handful of system calls,
//! about 30 µs (release build, this shared 2-core machine under load), so
//! it belongs on a scrape, not on every loop turn.
//!
//! On systems other than Linux, [`ListenerId::queue`] says `None`.

use std::io;
use std::os::fd::AsFd;

/// The accept queue of one listening socket, as the kernel saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenQueue {
    /// Connections fully established and waiting for `accept`.
    pub(crate) depth: u32,
    /// How many may wait: the `listen` backlog, capped by
    /// `net.core.somaxconn`. Past it the kernel drops new handshakes
    /// (`ListenOverflows` in `/proc/net/netstat`).
    pub(crate) backlog: u32,
}

/// Reads the accept queue of `listener`, a listening TCP socket.
///
/// `Ok(None)`: the platform does not tell, or `listener` is not a listening
/// TCP socket.
///
/// # Errors
///
/// The system calls' errors, e.g. if netlink sockets are not allowed here;
/// `InvalidData` if the kernel's reply cannot be read.
#[cfg(test)]
pub(crate) fn listen_queue(listener: &impl AsFd) -> io::Result<Option<ListenQueue>> {
    match ListenerId::of(listener)? {
        Some(id) => id.queue(),
        None => Ok(None),
    }
}

/// A listening socket as `sock_diag` knows it: local address and inode.
///
/// Taken once at bind, it lets any thread read the queue later without
/// holding a descriptor. That matters: a duplicated descriptor would keep
/// the socket listening after the server closed its listener at stop, and
/// the kernel would go on completing handshakes that nobody accepts. Once
/// the listener is closed, [`queue`](ListenerId::queue) says `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenerId {
    local: std::net::SocketAddr,
    /// Socket inodes are 32-bit numbers (`get_next_ino`), which is also the
    /// width of `idiag_inode`.
    inode: u32,
}

impl ListenerId {
    /// Identifies `listener`. `Ok(None)` if it is not an IP socket, or the
    /// platform does not tell.
    ///
    /// # Errors
    ///
    /// `getsockname` or `fstat` failed.
    pub(crate) fn of(listener: &impl AsFd) -> io::Result<Option<ListenerId>> {
        #[cfg(target_os = "linux")]
        return linux::listener_id(listener.as_fd());
        #[cfg(not(target_os = "linux"))]
        {
            let _ = listener;
            Ok(None)
        }
    }

    /// Reads the queue of this listener; `Ok(None)` if it is no longer
    /// listening (closed, or never was).
    ///
    /// # Errors
    ///
    /// As [`listen_queue`].
    pub(crate) fn queue(&self) -> io::Result<Option<ListenQueue>> {
        #[cfg(target_os = "linux")]
        return linux::query(self);
        #[cfg(not(target_os = "linux"))]
        Ok(None)
    }
}

/// The `sock_diag` wire format: the request we send and the reply we read.
/// No I/O here, so that the parser is tested on bytes.
mod wire {
    use std::io;
    use std::net::SocketAddr;

    /// `SOCK_DIAG_BY_FAMILY`, the message type of requests and answers.
    pub(super) const SOCK_DIAG_BY_FAMILY: u16 = 20;
    /// `NLMSG_ERROR`: an error code (0 is an acknowledgement).
    const NLMSG_ERROR: u16 = 2;
    /// `NLMSG_DONE`: the end of a dump.
    const NLMSG_DONE: u16 = 3;
    /// `NLM_F_REQUEST | NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
    const FLAGS_DUMP_REQUEST: u16 = 0x1 | 0x300;
    /// `TCP_LISTEN` in the kernel's TCP state numbering.
    const TCP_LISTEN: u8 = 10;
    /// `IPPROTO_TCP`.
    const IPPROTO_TCP: u8 = 6;
    /// `AF_INET`, `AF_INET6` on Linux.
    const AF_INET: u8 = 2;
    const AF_INET6: u8 = 10;
    /// `struct nlmsghdr`.
    const NLMSG_HDR: usize = 16;
    /// `struct inet_diag_req_v2`: family, protocol, extensions, padding,
    /// states, then a 48-byte `inet_diag_sockid`.
    const REQ_LEN: usize = 8 + 48;
    /// `struct inet_diag_msg`, up to and including `idiag_inode`.
    const MSG_LEN: usize = 72;

    /// The request: every TCP listener of `local`'s family whose source
    /// port is `local`'s (the kernel filters on both while it walks its
    /// listening hash, so the reply is short).
    pub(super) fn request(local: SocketAddr, seq: u32) -> [u8; NLMSG_HDR + REQ_LEN] {
        let mut m = [0u8; NLMSG_HDR + REQ_LEN];
        // Netlink headers are in host byte order; the socket id's ports and
        // addresses are in network order, as in the socket itself.
        m[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m[6..8].copy_from_slice(&FLAGS_DUMP_REQUEST.to_ne_bytes());
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        let r = &mut m[NLMSG_HDR..];
        r[0] = if local.is_ipv4() { AF_INET } else { AF_INET6 };
        r[1] = IPPROTO_TCP;
        r[4..8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
        r[8..10].copy_from_slice(&local.port().to_be_bytes());
        m
    }

    /// What one received batch said.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) enum Batch {
        /// More messages follow in another batch.
        More,
        /// The dump is complete.
        Done,
    }

    /// Reads one batch of reply messages for request `seq`, and records in
    /// `found` the queue of the listener with inode `inode`.
    pub(super) fn read_batch(
        mut buf: &[u8],
        seq: u32,
        inode: u32,
        found: &mut Option<super::ListenQueue>,
    ) -> io::Result<Batch> {
        let bad =
            |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {why}"));
        let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        while !buf.is_empty() {
            if buf.len() < NLMSG_HDR {
                return Err(bad("truncated message header"));
            }
            let len = u32_at(buf, 0) as usize;
            let kind = u16::from_ne_bytes([buf[4], buf[5]]);
            let msg_seq = u32_at(buf, 8);
            if len < NLMSG_HDR || len > buf.len() {
                return Err(bad("message length out of bounds"));
            }
            let body = &buf[NLMSG_HDR..len];
            // Messages are padded to four bytes; the last one may not be.
            buf = &buf[len.next_multiple_of(4).min(buf.len())..];
            if msg_seq != seq {
                // Not an answer to this request: skip it.
                continue;
            }
            match kind {
                NLMSG_DONE => return Ok(Batch::Done),
                NLMSG_ERROR => {
                    let code = body
                        .get(0..4)
                        .map(|b| i32::from_ne_bytes(b.try_into().unwrap()));
                    return match code {
                        Some(0) => Ok(Batch::Done),
                        Some(e) => Err(io::Error::from_raw_os_error(e.wrapping_neg())),
                        None => Err(bad("truncated error message")),
                    };
                }
                SOCK_DIAG_BY_FAMILY => {
                    if body.len() < MSG_LEN {
                        return Err(bad("truncated inet_diag_msg"));
                    }
                    if body[1] == TCP_LISTEN && u32_at(body, 68) == inode {
                        *found = Some(super::ListenQueue {
                            depth: u32_at(body, 56),
                            backlog: u32_at(body, 60),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(Batch::More)
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::BorrowedFd;
    use std::time::Duration;

    use rustix::net::{self, netlink, AddressFamily, RecvFlags, SendFlags, SocketType};

    use super::wire::{self, Batch};
    use super::{ListenQueue, ListenerId};

    /// Bound on the batches of one dump: there are at most a few listeners
    /// on one port, and each batch holds dozens.
    const MAX_BATCHES: usize = 64;

    pub(super) fn listener_id(listener: BorrowedFd<'_>) -> io::Result<Option<ListenerId>> {
        let Ok(local) = SocketAddr::try_from(net::getsockname(listener)?) else {
            return Ok(None); // not an IP socket
        };
        let inode = rustix::fs::fstat(listener)?.st_ino as u32;
        Ok(Some(ListenerId { local, inode }))
    }

    pub(super) fn query(id: &ListenerId) -> io::Result<Option<ListenQueue>> {
        let nl = net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            net::SocketFlags::CLOEXEC,
            Some(netlink::SOCK_DIAG),
        )?;
        // The kernel answers a dump synchronously; the timeout only bounds
        // the wait if something is badly wrong.
        net::sockopt::set_socket_timeout(
            &nl,
            net::sockopt::Timeout::Recv,
            Some(Duration::from_secs(1)),
        )?;
        let seq = 1;
        net::sendto(
            &nl,
            &wire::request(id.local, seq),
            SendFlags::empty(),
            &netlink::SocketAddrNetlink::new(0, 0),
        )?;

        // 32 KiB: more than one dump batch (the kernel fills up to a page
        // or 8 KiB), so a batch is never truncated.
        let mut buf = vec![0u8; 32 * 1024];
        let mut found = None;
        for _ in 0..MAX_BATCHES {
            let (_, n) = net::recv(&nl, &mut buf[..], RecvFlags::empty())?;
            if wire::read_batch(&buf[..n], seq, id.inode, &mut found)? == Batch::Done {
                return Ok(found);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "sock_diag: dump did not end",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{read_batch, Batch, SOCK_DIAG_BY_FAMILY};
    use super::*;

    /// One netlink message: header for `seq`, then `body`, padded to four.
    fn message(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    /// An `inet_diag_msg` for a socket in `state` with these figures.
    fn diag(state: u8, rqueue: u32, wqueue: u32, inode: u32) -> Vec<u8> {
        let mut b = vec![0u8; 72];
        b[0] = 2;
        b[1] = state;
        b[56..60].copy_from_slice(&rqueue.to_ne_bytes());
        b[60..64].copy_from_slice(&wqueue.to_ne_bytes());
        b[68..72].copy_from_slice(&inode.to_ne_bytes());
        // Attributes may follow; they are skipped.
        b.extend_from_slice(&[8, 0, 1, 0, 0, 0, 0, 0]);
        b
    }

    mod wire {
        use super::*;

        /// The listener is picked by inode among those on the port, and
        /// the dump ends at `NLMSG_DONE`.
        #[test]
        fn the_listener_is_found_by_inode() {
            let mut batch = message(SOCK_DIAG_BY_FAMILY, 7, &diag(10, 1, 128, 41));
            batch.extend(message(SOCK_DIAG_BY_FAMILY, 7, &diag(10, 6, 77, 42)));
            let mut found = None;
            assert_eq!(read_batch(&batch, 7, 42, &mut found).unwrap(), Batch::More);
            assert_eq!(
                found,
                Some(ListenQueue {
                    depth: 6,
                    backlog: 77
                })
            );
            let done = message(3, 7, &0i32.to_ne_bytes());
            assert_eq!(read_batch(&done, 7, 42, &mut found).unwrap(), Batch::Done);
        }

        /// Answers to another request, and sockets not listening, are not
        /// taken for ours.
        #[test]
        fn other_sequences_and_states_are_skipped() {
            let mut batch = message(SOCK_DIAG_BY_FAMILY, 8, &diag(10, 9, 9, 42));
            batch.extend(message(SOCK_DIAG_BY_FAMILY, 7, &diag(1, 9, 9, 42)));
            batch.extend(message(3, 7, &[0; 4]));
            let mut found = None;
            assert_eq!(read_batch(&batch, 7, 42, &mut found).unwrap(), Batch::Done);
            assert_eq!(found, None);
        }

        /// A kernel error comes back as that errno.
        #[test]
        fn an_error_message_is_the_errno() {
            let e = message(2, 7, &(-13i32).to_ne_bytes());
            let err = read_batch(&e, 7, 42, &mut None).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(13));
        }

        /// Truncated or inconsistent replies are named errors, not panics.
        #[test]
        fn malformed_replies_are_errors() {
            let whole = message(SOCK_DIAG_BY_FAMILY, 7, &diag(10, 1, 2, 3));
            for n in 1..whole.len() {
                let err = read_batch(&whole[..n], 7, 3, &mut None).unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{n} bytes");
            }
            let short = message(SOCK_DIAG_BY_FAMILY, 7, &[0; 40]);
            assert!(read_batch(&short, 7, 3, &mut None).is_err());
            let mut zero_len = whole.clone();
            zero_len[0..4].copy_from_slice(&0u32.to_ne_bytes());
            assert!(read_batch(&zero_len, 7, 3, &mut None).is_err());
        }
    }

    #[cfg(target_os = "linux")]
    mod kernel {
        use super::*;
        use socket2::{Domain, Socket, Type};
        use std::net::{SocketAddr, TcpStream};
        use std::time::{Duration, Instant};

        fn listener(addr: &str, backlog: i32, reuse_port: bool) -> Socket {
            let addr: SocketAddr = addr.parse().unwrap();
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
            s.set_reuse_port(reuse_port).unwrap();
            s.bind(&addr.into()).unwrap();
            s.listen(backlog).unwrap();
            s
        }

        fn local(s: &Socket) -> SocketAddr {
            s.local_addr().unwrap().as_socket().unwrap()
        }

        /// Polls `read` until it returns `want`, for at most ten seconds
        /// (the kernel queues a connection as its handshake completes,
        /// which `connect` returning already implies, but be patient).
        fn settles_at<T: PartialEq + std::fmt::Debug>(want: T, mut read: impl FnMut() -> T) {
            let start = Instant::now();
            loop {
                let got = read();
                if got == want {
                    return;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "stuck at {got:?}, want {want:?}"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        }

        /// listen(77) and six clients never accepted: depth 6, backlog 77;
        /// accepting one brings the depth down.
        #[test]
        fn six_waiting_clients_under_a_backlog_of_77() {
            let l = listener("127.0.0.1:0", 77, false);
            assert_eq!(
                listen_queue(&l).unwrap(),
                Some(ListenQueue {
                    depth: 0,
                    backlog: 77
                })
            );
            let clients: Vec<TcpStream> = (0..6)
                .map(|_| TcpStream::connect(local(&l)).unwrap())
                .collect();
            settles_at(
                Some(ListenQueue {
                    depth: 6,
                    backlog: 77,
                }),
                || listen_queue(&l).unwrap(),
            );
            let _accepted = l.accept().unwrap();
            settles_at(
                Some(ListenQueue {
                    depth: 5,
                    backlog: 77,
                }),
                || listen_queue(&l).unwrap(),
            );
            drop(clients);
        }

        /// IPv6 listeners are read too (skipped where there is no ::1).
        #[test]
        fn ipv6() {
            let addr: SocketAddr = "[::1]:0".parse().unwrap();
            let s = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
            if s.bind(&addr.into()).is_err() {
                eprintln!("skipped: no ::1 here");
                return;
            }
            s.listen(33).unwrap();
            let _c = TcpStream::connect(local(&s)).unwrap();
            settles_at(
                Some(ListenQueue {
                    depth: 1,
                    backlog: 33,
                }),
                || listen_queue(&s).unwrap(),
            );
        }

        /// Two `SO_REUSEPORT` listeners share a port but not a queue: each
        /// is told its own, and the two add up to the clients waiting.
        #[test]
        fn reuse_port_listeners_each_see_their_own_queue() {
            let a = listener("127.0.0.1:0", 50, true);
            let b = listener(&local(&a).to_string(), 60, true);
            let _clients: Vec<TcpStream> = (0..8)
                .map(|_| TcpStream::connect(local(&a)).unwrap())
                .collect();
            settles_at(8, || {
                let qa = listen_queue(&a).unwrap().unwrap();
                let qb = listen_queue(&b).unwrap().unwrap();
                assert_eq!((qa.backlog, qb.backlog), (50, 60));
                qa.depth + qb.depth
            });
        }

        /// An id taken at bind reads the same queue without a descriptor,
        /// and `None` once the listener is closed.
        #[test]
        fn an_id_outlives_its_listener_without_keeping_it() {
            let l = listener("127.0.0.1:0", 9, false);
            let id = ListenerId::of(&l).unwrap().unwrap();
            let _c = TcpStream::connect(local(&l)).unwrap();
            settles_at(
                Some(ListenQueue {
                    depth: 1,
                    backlog: 9,
                }),
                || id.queue().unwrap(),
            );
            drop(l);
            assert_eq!(id.queue().unwrap(), None);
        }

        /// A socket that is not listening has no accept queue.
        #[test]
        fn not_a_listener() {
            let l = listener("127.0.0.1:0", 8, false);
            let c = TcpStream::connect(local(&l)).unwrap();
            assert_eq!(listen_queue(&c).unwrap(), None);
            let unbound = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            assert_eq!(listen_queue(&unbound).unwrap(), None);
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            assert_eq!(listen_queue(&udp).unwrap(), None);
        }
    }
}
