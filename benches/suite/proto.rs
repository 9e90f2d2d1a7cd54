//! The two line protocols every server in the suite speaks, and the options a
//! self-executed server child is started with.
//!
//! Echo: each `\n`-terminated line (one trailing `\r` stripped) comes back
//! followed by `\n`. Ping (issue 5's PING_INLINE): a `PING` line in any case is
//! answered with `+PONG\r\n`, any other line with `-ERR unknown command\r\n`.
//! `examples/ping.rs` holds the same rule for netpool; keep the two in step.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Reply to a PING line.
pub const PONG: &[u8] = b"+PONG\r\n";
/// Reply to any other line under the ping protocol.
pub const UNKNOWN: &[u8] = b"-ERR unknown command\r\n";
/// What a server over its budget writes before it closes (Redis's wording).
pub const REFUSE: &[u8] = b"-ERR max number of clients reached\r\n";
/// What a server writes before it closes a connection whose line is too long.
pub const TOO_LONG: &[u8] = b"-ERR Protocol error: too big inline request\r\n";

/// Which line protocol a server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Echo,
    Ping,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "echo" => Some(Proto::Echo),
            "ping" => Some(Proto::Ping),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Echo => "echo",
            Proto::Ping => "ping",
        }
    }
}

/// Strips the one trailing `\r` a line may carry (the `\n` is already gone).
#[inline]
pub fn strip_cr(line: &[u8]) -> &[u8] {
    match line.split_last() {
        Some((b'\r', rest)) => rest,
        _ => line,
    }
}

/// The reply to one line (without its `\n`, `\r` not yet stripped), as at most
/// two slices so that callers can write them without copying the line first.
#[inline]
pub fn reply(proto: Proto, line: &[u8]) -> (&[u8], &'static [u8]) {
    let line = strip_cr(line);
    match proto {
        Proto::Echo => (line, b"\n"),
        Proto::Ping if line.eq_ignore_ascii_case(b"PING") => (&[], PONG),
        Proto::Ping => (&[], UNKNOWN),
    }
}

/// Appends the reply to one line to `out`.
#[inline]
pub fn respond(proto: Proto, line: &[u8], out: &mut Vec<u8>) {
    let (a, b) = reply(proto, line);
    out.extend_from_slice(a);
    out.extend_from_slice(b);
}

/// What the accept budget does when it is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverflowMode {
    /// Accept, write the refuse message, close.
    Refuse,
    /// Stop accepting; clients wait in the kernel backlog.
    Pause,
}

impl OverflowMode {
    pub fn parse(s: &str) -> Option<OverflowMode> {
        match s {
            "refuse" => Some(OverflowMode::Refuse),
            "pause" => Some(OverflowMode::Pause),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OverflowMode::Refuse => "refuse",
            OverflowMode::Pause => "pause",
        }
    }
}

/// Options of a `--serve` child.
#[derive(Clone, Debug)]
pub struct ServeOpts {
    pub addr: SocketAddr,
    pub acceptors: usize,
    pub overflow: OverflowMode,
    pub max_line: usize,
    pub proto: Proto,
    /// TLS servers: the PEM certificate chain and private key (`--tls-cert`,
    /// `--tls-key`), generated once per run by the parent.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Listen backlog of every server in the suite: netpool's default. The
/// standard library (and so mio's and tokio's `bind`) uses 128, which a burst
/// of 500 connects overflows on this machine (the kernel then drops SYNs and
/// the client retries after a second), so the other servers are given the same
/// backlog as netpool instead.
pub const BACKLOG: i32 = 1024;

/// A non-blocking listener bound to `addr` with [`BACKLOG`] and `SO_REUSEADDR`
/// (as mio's and tokio's `bind` set it).
pub fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    listener_with(addr, false)
}

/// A listener as [`listener`], with `SO_REUSEPORT` as well when `reuse_port`:
/// several of them bound to the same port each get their own accept queue,
/// and the kernel spreads incoming connections over them by hash.
pub fn listener_with(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Tells the parent where the server listens: the one line it waits for.
pub fn announce(addr: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // The parent blocks on this line; a failure to write it means the parent
    // is gone, and there is nobody left to serve.
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}
