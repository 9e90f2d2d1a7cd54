//! The bare-mio floor: mio's `examples/tcp_server.rs` done right, and nothing
//! more. No accept budget, no line limit beyond a cap on a partial line, no
//! backpressure, no shutdown: whatever netpool costs above this is the price of
//! its features.
//!
//! What "done right" means here:
//! - one loop, a `Slab` of connections whose keys are tokens (offset past the
//!   listener's token);
//! - accept drained until `WouldBlock` (mio is edge-triggered: an event that is
//!   not drained may never fire again), `Interrupted` retried, any other accept
//!   error logged and left for the next event instead of ending the server;
//! - one shared 64 KiB read buffer for the loop: a connection owns heap memory
//!   only while it holds a partial line or unsent replies, so an idle
//!   connection costs its slab entry and nothing else;
//! - a read that returns less than the buffer holds means the socket buffer was
//!   drained (true on epoll; tokio relies on it too), so no extra read just to
//!   see `WouldBlock`, unless the peer also closed (`is_read_closed`), where we
//!   read on to see the EOF;
//! - replies for everything one event delivered go out in one `write`, written
//!   until `WouldBlock`; the rest waits for the writable edge. Streams are
//!   registered once for both directions, so interest is never re-registered.

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::proto::{self, ServeOpts};

const LISTENER: Token = Token(0);
/// Slab key k is token k + 1.
const FIRST_CONN: usize = 1;
const READ_BUF: usize = 64 * 1024;

struct Conn {
    stream: TcpStream,
    /// Bytes of a line whose `\n` has not arrived yet.
    partial: Vec<u8>,
    /// Replies the socket would not take yet, from `sent` on.
    pending: Vec<u8>,
    sent: usize,
}

pub fn serve(opts: &ServeOpts) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::from_std(proto::listener(opts.addr)?);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    proto::announce(listener.local_addr()?);

    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut out: Vec<u8> = Vec::with_capacity(READ_BUF);

    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let entry = conns.vacant_entry();
                            let token = Token(entry.key() + FIRST_CONN);
                            poll.registry().register(
                                &mut stream,
                                token,
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            entry.insert(Conn {
                                stream,
                                partial: Vec::new(),
                                pending: Vec::new(),
                                sent: 0,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            eprintln!("floor: accept: {e}");
                            break;
                        }
                    }
                },
                token => {
                    let key = token.0 - FIRST_CONN;
                    let Some(conn) = conns.get_mut(key) else {
                        continue; // stale event for a closed connection
                    };
                    let done = handle(conn, event, opts, &mut buf, &mut out).unwrap_or(true);
                    if done {
                        // Closing the descriptor removes it from epoll.
                        conns.remove(key);
                    }
                }
            }
        }
    }
}

/// Serves one event; `Ok(true)` when the connection is finished.
fn handle(
    conn: &mut Conn,
    event: &mio::event::Event,
    opts: &ServeOpts,
    buf: &mut [u8],
    out: &mut Vec<u8>,
) -> io::Result<bool> {
    if event.is_writable() && !conn.pending.is_empty() {
        // Whatever is left stays pending; a readable edge in the same event
        // must still be served below, or it is lost.
        flush_pending(conn)?;
    }
    if !event.is_readable() {
        return Ok(false);
    }
    let mut eof = false;
    loop {
        match conn.stream.read(buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                frame(conn, &buf[..n], opts, out)?;
                if n < buf.len() && !event.is_read_closed() {
                    break; // short read: drained
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if !out.is_empty() {
        if conn.pending.is_empty() {
            let mut off = 0;
            while off < out.len() {
                match conn.stream.write(&out[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            if off < out.len() {
                conn.pending.extend_from_slice(&out[off..]);
            }
        } else {
            conn.pending.extend_from_slice(out);
        }
        out.clear();
    }
    Ok(eof)
}

/// Splits `data` into lines, answering each into `out`.
fn frame(conn: &mut Conn, data: &[u8], opts: &ServeOpts, out: &mut Vec<u8>) -> io::Result<()> {
    let mut rest = data;
    if !conn.partial.is_empty() {
        // Finish the partial line first; only then scan the fresh bytes.
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                conn.partial.extend_from_slice(&rest[..i]);
                proto::respond(opts.proto, &conn.partial, out);
                conn.partial = Vec::new(); // give the memory back: idle costs nothing
                rest = &rest[i + 1..];
            }
            None => {
                conn.partial.extend_from_slice(rest);
                return check_len(conn.partial.len(), opts);
            }
        }
    }
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', rest) {
        proto::respond(opts.proto, &rest[start..i], out);
        start = i + 1;
    }
    if start < rest.len() {
        conn.partial.extend_from_slice(&rest[start..]);
        check_len(conn.partial.len(), opts)?;
    }
    Ok(())
}

fn check_len(len: usize, opts: &ServeOpts) -> io::Result<()> {
    if len > opts.max_line {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    Ok(())
}

/// Writes pending replies until done (`Ok(true)`) or `WouldBlock` (`Ok(false)`).
fn flush_pending(conn: &mut Conn) -> io::Result<bool> {
    while conn.sent < conn.pending.len() {
        match conn.stream.write(&conn.pending[conn.sent..]) {
            Ok(n) => conn.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    conn.pending = Vec::new();
    conn.sent = 0;
    Ok(true)
}
