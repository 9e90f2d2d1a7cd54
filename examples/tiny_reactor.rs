//! A tiny reactor: a TCP echo server on one mio event loop, and nothing else.
//! Read it first: netpool's loop is this one grown up.
//!
//! A reactor is one thread that sleeps in `poll` until the kernel reports
//! sockets *ready* (a read or write would not block now), does that work, and
//! sleeps again. A socket is registered with an `Interest` (readable,
//! writable) and a `Token`, the number its events come back with. Shown here:
//! listener and waker tokens, a slab of connections keyed by token,
//! edge-triggered draining, one read buffer for all connections, write
//! interest only while output waits, a bounded output (backpressure), and a
//! clean close.
//!
//! Run: `cargo run --example tiny_reactor -- --addr 127.0.0.1:7000`; poke:
//! `nc 127.0.0.1 7000` (what you type comes back); stop: Ctrl-C. Left out on
//! purpose, and where netpool does it (docs/ARCHITECTURE.md walks from each
//! part of this file to netpool's): how many connections to serve (budget,
//! admission: `src/budget.rs`, `src/admission.rs`); lines and protocol errors
//! (`src/framing/`); TLS (`src/transport/`); idle and stall timeouts (the
//! core, `src/core/`); fairness, `accept` retried after `EMFILE` (`src/reactor/`);
//! several loops on several cores (`src/reactor/distribute.rs`).

use std::error::Error;
use std::io::ErrorKind::{Interrupted, WouldBlock};
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use slab::Slab;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Slab slot `k` holds the connection with `Token(k + FIRST_CONN)`: the keys
/// *are* the tokens, past the fixed ones: an event finds its connection by index.
const FIRST_CONN: usize = 2;
/// One read buffer for the whole loop: what a read brings is echoed (or kept
/// as output) before the next read, so an idle connection owns no buffer.
const READ_BUF: usize = 64 * 1024;
/// Most output a connection may have waiting for a slow reader.
const MAX_OUTPUT: usize = 256 * 1024;

/// Why the last read loop stopped; it decides who starts the next one.
#[derive(Clone, Copy, PartialEq)]
enum Input {
    /// The socket had nothing more: a readable event comes when more does.
    Drained,
    /// The output is full: reading stopped, maybe with data left in the
    /// socket, of which no new event will tell. We resume when output drains.
    Paused,
    /// The peer finished sending (end of stream): close once output is sent.
    Closed,
}

struct Conn {
    stream: TcpStream,
    /// Echoed bytes the socket would not take yet, oldest first.
    output: Vec<u8>,
    input: Input,
    /// What the stream is registered for, to re-register only on a change.
    interest: Interest,
}

fn main() -> Result<(), Box<dyn Error>> {
    let addr = parse_addr()?;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;

    // A clean stop: a thread waits for SIGINT/SIGTERM and wakes the loop with
    // a WAKER event. It never returns: a dropped waker's event may be lost.
    let waker = Waker::new(poll.registry(), WAKER)?;
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        for _signal in signals.forever() {
            let _ = waker.wake();
        }
    });

    // The real address, so that `--addr 127.0.0.1:0` tells you its port.
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    let mut conns: Slab<Conn> = Slab::new();
    let mut buf = vec![0u8; READ_BUF];
    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == Interrupted => continue, // a signal cut the wait short
            result => result?,
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => accept_all(&listener, poll.registry(), &mut conns),
                WAKER => {
                    // Dropping the slab closes every socket.
                    eprintln!("stopping: closing {} connections", conns.len());
                    return Ok(());
                }
                token => {
                    let key = token.0 - FIRST_CONN;
                    // Closed earlier in this batch? Skip; and if the slot went
                    // to a new connection, a spurious event does no harm.
                    let Some(conn) = conns.get_mut(key) else {
                        continue;
                    };
                    // An error ends this connection only, never the loop.
                    let done = serve(conn, event, &mut buf, poll.registry()).unwrap_or_else(|e| {
                        eprintln!("connection {key}: {e}");
                        true
                    });
                    if done {
                        conns.remove(key); // closing a socket takes it out of the poll
                    }
                }
            }
        }
    }
}

/// Accepts every waiting connection. mio is *edge-triggered*: an event says
/// "something changed", once, so we repeat the call until `WouldBlock`. Stop
/// earlier, and the connections still queued may never bring another event.
fn accept_all(listener: &TcpListener, registry: &Registry, conns: &mut Slab<Conn>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _peer)) => {
                let entry = conns.vacant_entry();
                let token = Token(entry.key() + FIRST_CONN);
                // Readable only: there is nothing to write yet. Bytes that
                // arrived before this still produce a first event.
                if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                    eprintln!("register: {e}");
                    continue;
                }
                entry.insert(Conn {
                    stream,
                    output: Vec::new(),
                    input: Input::Drained,
                    interest: Interest::READABLE,
                });
            }
            Err(e) if e.kind() == WouldBlock => return,
            Err(e) if e.kind() == Interrupted => continue,
            // Say EMFILE: we wait for the next connect; netpool retries.
            Err(e) => return eprintln!("accept: {e}"),
        }
    }
}

/// Does all one event allows for one connection; `Ok(true)` when it is done.
fn serve(conn: &mut Conn, event: &Event, buf: &mut [u8], registry: &Registry) -> io::Result<bool> {
    // Write first: sending pending output may make room to read again.
    let sent = write_some(&mut conn.stream, &conn.output)?;
    conn.output.drain(..sent);
    if conn.output.is_empty() {
        conn.output = Vec::new(); // give the memory back: idle owns nothing
    }
    // Backpressure: while a peer does not read its echo, we stop reading from
    // it. Its bytes then wait in the kernel; when that buffer is full, TCP
    // tells the peer to stop sending. So a client that sends without reading
    // costs us at most MAX_OUTPUT, not whatever it chooses to send.
    let resume = conn.input == Input::Paused && conn.output.is_empty();
    if resume || (conn.input == Input::Drained && event.is_readable()) {
        // After a pause, the end of stream may have arrived while we were not
        // reading, so trust no short read: read until the kernel says so.
        let trust_short_read = !resume && !event.is_read_closed();
        conn.input = read_and_echo(conn, buf, trust_short_read)?;
    }
    if conn.input == Input::Closed && conn.output.is_empty() {
        return Ok(true); // the peer is done and has all its echo
    }
    // Ask for WRITABLE only while output waits. Always registered, it would
    // wake the loop for every send buffer that empties, with nothing to send.
    let mut interest = Interest::READABLE;
    if !conn.output.is_empty() {
        interest |= Interest::WRITABLE;
    }
    if interest != conn.interest {
        registry.reregister(&mut conn.stream, event.token(), interest)?;
        conn.interest = interest;
    }
    Ok(false)
}

/// Reads and echoes until the socket is drained, the peer is done, or the
/// output is full. Edge-triggered again: we must read until `WouldBlock`,
/// with one shortcut (tokio takes it too, on epoll and kqueue): a read that
/// returns less than asked for proves the kernel buffer is empty now, and
/// bytes arriving later bring a new event, so the read that would only say
/// `WouldBlock` is saved. Not when the event says read-closed: the end of
/// stream is already here, will bring no new event, and only a read sees it.
fn read_and_echo(conn: &mut Conn, buf: &mut [u8], trust_short_read: bool) -> io::Result<Input> {
    loop {
        // Never read more than the output could hold if none of it is sent.
        let room = MAX_OUTPUT - conn.output.len();
        if room == 0 {
            return Ok(Input::Paused);
        }
        let want = room.min(buf.len());
        match conn.stream.read(&mut buf[..want]) {
            Ok(0) => return Ok(Input::Closed),
            Ok(n) => {
                // The echo: straight from the shared buffer when no older
                // output waits (no copy); what the socket did not take is kept.
                let mut sent = 0;
                if conn.output.is_empty() {
                    sent = write_some(&mut conn.stream, &buf[..n])?;
                }
                conn.output.extend_from_slice(&buf[sent..n]);
                if n < want && trust_short_read {
                    return Ok(Input::Drained);
                }
            }
            Err(e) if e.kind() == WouldBlock => return Ok(Input::Drained),
            Err(e) if e.kind() == Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes until `data` is all taken or the socket is full; returns how much
/// went. A short write is no error: the rest waits for the writable event.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        match stream.write(&data[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == WouldBlock => break,
            Err(e) if e.kind() == Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// `[--addr IP:PORT]`, by hand: this example uses nothing it does not need.
fn parse_addr() -> Result<SocketAddr, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = match args.as_slice() {
        [] => "127.0.0.1:7000",
        [flag, addr] if flag == "--addr" => addr,
        _ => return Err("usage: tiny_reactor [--addr IP:PORT]".into()),
    };
    addr.parse().map_err(|e| format!("--addr {addr}: {e}"))
}
