//! Driving one connection: the socket ends of its pipeline.
//!
//! ```text
//! socket ─read─▶ transport ─▶ framing ─▶ handler      (serve.rs: no I/O)
//! socket ◀─write─ transport ◀─ replies ◀─┘
//! ```
//!
//! One [`drive`](EventLoop::drive) per readiness event, for every
//! connection whatever its transport: write what waits, read what came,
//! then [`reconcile`](EventLoop::reconcile): act on what the core asks (shut down
//! writing, remove), register the interest it wants if that changed, keep
//! its timer. The transport is a type parameter, so the plaintext loop has
//! no TLS in it at all.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mio::Token;

use super::held::{self, Held};
use super::serve::{self, HeaderStep, LoopView};
use super::{EventLoop, Readiness, FIRST_CONN};
use crate::base::close::CloseReason;
use crate::base::id::ConnId;
use crate::base::time::Millis;
use crate::config::Config;
use crate::conn_handle::RunFn;
use crate::core::{Action, Core, Phase, Timeouts};
use crate::framing::Framing;
use crate::handler::{self, Disconnect, Handler};
use crate::metrics::CloseLabel;
use crate::shared::{LoopShared, ServerShared};
use crate::socket::Stream;
use crate::transport::{Received, Transport, TransportError};

/// Reads of one connection per turn of the loop (× the read buffer: 1 MiB by
/// default). A client that sends faster than the loop can serve would
/// otherwise keep it in one connection forever; past this, the connection
/// goes to the back of the line (`read_again`) and the others get their turn.
const READS_PER_TURN: usize = 16;

/// One connection: its socket (TCP or Unix), its transport, and its
/// I/O-free core.
#[derive(Debug)]
pub(super) struct Connection<S, T> {
    pub(super) stream: Stream,
    pub(super) transport: T,
    pub(super) core: Core<S>,
}

impl<S, T> Connection<S, T> {
    /// A connection just registered for `READABLE` (as its core starts).
    pub(super) fn new(stream: Stream, transport: T, core: Core<S>) -> Self {
        Connection {
            stream,
            transport,
            core,
        }
    }
}

/// What every connection's pipeline runs through, owned by the loop beside
/// its slab of connections: the handler, the transport's shared state, and
/// the loop's buffers, which no connection owns a copy of.
pub(super) struct Pipeline<F: Framing, H: Handler<F>, T: Transport> {
    pub(super) handler: H,
    /// The loop's framing (its own copy: a framing may keep scratch space,
    /// such as RESP's argument offsets, reused across frames).
    framing: F,
    pub(super) transport: T::Loop,
    /// Replies produced while one read is handled, written in one `write`
    /// when the handler is done with that read.
    write_buf: Vec<u8>,
    /// Sealed bytes (TLS records) on their way to the socket; unused by
    /// plaintext.
    wire_buf: Vec<u8>,
    /// Replies held for the end of the turn, while `holding` (see
    /// `held.rs`).
    pub(super) held: Held,
    /// True while the loop handles a batch of events with
    /// [`write_at_turn_end`](crate::Builder::write_at_turn_end) on.
    pub(super) holding: bool,
    pub(super) config: Config,
    pub(super) shared: Arc<LoopShared>,
    pub(super) server: Arc<ServerShared>,
    pub(super) timeouts: Timeouts,
    /// "Now" for this turn.
    pub(super) now: Millis,
    /// Connections to drive again this turn without an event (see
    /// `# Draining readiness`). The id guards against a slot reused
    /// meanwhile.
    pub(super) read_again: Vec<(usize, ConnId)>,
}

impl<F: Framing, H: Handler<F>, T: Transport> Pipeline<F, H, T> {
    pub(super) fn new(
        handler: H,
        framing: F,
        transport: T::Loop,
        config: Config,
        shared: Arc<LoopShared>,
        server: Arc<ServerShared>,
        timeouts: Timeouts,
    ) -> Self {
        Pipeline {
            handler,
            framing,
            transport,
            write_buf: Vec::new(),
            wire_buf: Vec::new(),
            held: Held::default(),
            holding: false,
            config,
            shared,
            server,
            timeouts,
            now: 0,
            read_again: Vec::new(),
        }
    }

    /// Reads and handles input until the socket is drained, the connection
    /// stops reading (throttled, closing), or its turn is used.
    ///
    /// `buf` is the loop's one read buffer, shared by all its connections.
    /// `short_read_drains`: the event said nothing about end-of-stream, so a
    /// short read proves the socket empty (see `# Draining readiness`).
    pub(super) fn read(
        &mut self,
        conn: &mut Connection<H::State, T>,
        key: usize,
        short_read_drains: bool,
        buf: &mut [u8],
    ) {
        for _ in 0..READS_PER_TURN {
            let phase = conn.core.phase();
            match phase {
                Phase::Open | Phase::Handshaking | Phase::ProxyHeader | Phase::Lingering { .. } => {
                }
                // Throttled waits for output to drain; Closing only writes.
                _ => return,
            }
            match conn.stream.read(buf) {
                Ok(0) => {
                    self.end_of_stream(conn);
                    return;
                }
                Ok(n) => {
                    self.shared.counters.bytes_in.add(n as u64);
                    match phase {
                        Phase::ProxyHeader => self.take_header(conn, key, &buf[..n]),
                        // A lingering connection's input is read only to see
                        // the peer close; it is discarded.
                        Phase::Lingering { .. } => {}
                        _ => self.take_input(conn, key, &mut buf[..n]),
                    }
                    if n < buf.len() && short_read_drains {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    conn.core.handle_io_error(&e);
                    return;
                }
            }
        }
        // Turn used up with input perhaps still waiting.
        self.read_again.push((key, conn.core.id));
    }

    /// The peer closed its side (read returned 0).
    fn end_of_stream(&mut self, conn: &mut Connection<H::State, T>) {
        if conn.core.phase() == Phase::Handshaking {
            log::debug!(
                "{} {}: peer closed during the TLS handshake",
                conn.core.id,
                conn.core.peer
            );
            conn.core.handle_close(CloseReason::PeerClosed, true);
        } else {
            if !T::PLAINTEXT && conn.core.phase() == Phase::Open {
                // For a line protocol the complete lines stand; the
                // fragment is dropped.
                log::debug!(
                    "{} {}: closed without close_notify",
                    conn.core.id,
                    conn.core.peer
                );
            }
            conn.core.handle_eof();
        }
    }

    /// Input read from the socket, through the transport, the framing and
    /// the handler; then the replies are written. `input` is the loop's read
    /// buffer (or a PROXY header's tail): the transport may decrypt it in
    /// place.
    fn take_input(&mut self, conn: &mut Connection<H::State, T>, key: usize, input: &mut [u8]) {
        if !T::PLAINTEXT && conn.core.phase() == Phase::Handshaking {
            // The handshake moved: when the loop is out of handshake places,
            // one that has made the least progress for the longest is given
            // up (`EventLoop::make_room_for_a_handshake`).
            conn.core.last_active = self.now;
        }
        let Connection {
            stream,
            transport,
            core,
        } = conn;
        let unix = stream.unix_peer();
        let held = self.held.of(key, core.id);
        let (handler, framing) = (&mut self.handler, &mut self.framing);
        let (config, shared, now) = (&self.config, &self.shared, self.now);
        let result = transport.receive(
            &mut self.transport,
            input,
            &mut self.write_buf,
            &mut self.wire_buf,
            |received, session, write_buf| {
                let cx = LoopView {
                    config,
                    shared,
                    now,
                    key,
                    session,
                    unix,
                    held,
                };
                match received {
                    Received::Plaintext(plain) => {
                        serve::handle_frames(core, handler, framing, plain, write_buf, &cx);
                    }
                    Received::Established => {
                        shared.counters.tls_handshakes.add(1);
                        core.set_phase(Phase::Open);
                        serve::greet(core, handler, write_buf, &cx);
                    }
                    Received::Closed => {
                        log::debug!("{} {}: close_notify received", core.id, core.peer);
                        core.handle_eof();
                    }
                }
                // Stop taking input once the connection closes.
                core.phase() == Phase::Open
            },
        );
        if let Err(TransportError::Protocol) = result {
            // The alert, if any, is in the wire buffer: flushed below, and
            // the connection lingers so that the peer reads it.
            conn.core.handle_close(CloseReason::Tls, false);
        }
        self.flush(conn, key);
    }

    /// Input of a connection that is still waiting for its PROXY header.
    fn take_header(&mut self, conn: &mut Connection<H::State, T>, key: usize, input: &[u8]) {
        let unix = conn.stream.unix_peer().is_some();
        match serve::proxy_header(&mut conn.core, input, unix, &self.server.gate, &self.shared) {
            HeaderStep::Incomplete | HeaderStep::Rejected => {}
            HeaderStep::Refused(why) => {
                // As a refusal at accept: the message to a plaintext client
                // that is owed one (see `accept.rs`). The connection is
                // closing gracefully, so it goes out before our FIN.
                let message = &self.config.refuse_message;
                if T::PLAINTEXT && why.tells_client() && !message.is_empty() {
                    self.write_buf.extend_from_slice(message);
                    self.flush(conn, key);
                }
            }
            HeaderStep::Done(mut rest) => {
                let handshaking = conn.transport.is_handshaking();
                serve::after_header(&mut conn.core, handshaking);
                if !handshaking {
                    self.open(conn, key);
                }
                // What followed the header: the start of the stream (for
                // TLS, of the ClientHello).
                if !rest.is_empty() && matches!(conn.core.phase(), Phase::Open | Phase::Handshaking)
                {
                    self.take_input(conn, key, &mut rest);
                }
            }
        }
    }

    /// A connection opens: the handler hears of it (`on_connect`) and its
    /// greeting, if any, is written.
    pub(super) fn open(&mut self, conn: &mut Connection<H::State, T>, key: usize) {
        let cx = LoopView {
            config: &self.config,
            shared: &self.shared,
            now: self.now,
            key,
            session: conn.transport.info(),
            unix: conn.stream.unix_peer(),
            held: 0,
        };
        serve::greet(&mut conn.core, &mut self.handler, &mut self.write_buf, &cx);
        self.flush(conn, key);
    }

    /// Bytes a [`ConnHandle`](crate::ConnHandle) sent, from another thread:
    /// queued at the end of the connection's output (behind its deferred
    /// replies, if any), for the loop to write once this turn's commands are
    /// all in (`EventLoop::run_commands`), so that sends arriving together
    /// leave in one `write`.
    pub(super) fn queue_send(&mut self, conn: &mut Connection<H::State, T>, mut data: Vec<u8>) {
        if conn.core.handle_send(&data, self.config.output_limit) {
            let wire = conn.transport.seal(&mut data, &mut self.wire_buf);
            conn.core.out.push_wire(wire);
        }
    }

    /// A reply slot was filled (`None`: dropped unfilled) from another
    /// thread: the reply takes its place, and whatever that lets go (the
    /// replies at the front, and what followed them) is sealed, in order,
    /// and queued for this turn's write.
    pub(super) fn fill(
        &mut self,
        conn: &mut Connection<H::State, T>,
        seq: u64,
        reply: Option<Vec<u8>>,
    ) {
        let core = &mut conn.core;
        if reply.is_none() && core.takes_output() {
            self.shared.counters.reply_slots_dropped.add(1);
            log::warn!(
                "{} {}: a reply slot was dropped unfilled: its place is given up",
                core.id,
                core.peer
            );
        }
        let reply = reply.unwrap_or_default();
        if let Some(mut ready) = core.handle_fill(seq, reply, self.config.output_limit) {
            let wire = conn.transport.seal(&mut ready, &mut self.wire_buf);
            conn.core.out.push_wire(wire);
        }
    }

    /// A closure from another thread ([`ConnHandle::run`](crate::ConnHandle::run)),
    /// run as a handler method would be; its output is queued for this
    /// turn's write.
    pub(super) fn run(&mut self, conn: &mut Connection<H::State, T>, key: usize, f: RunFn) {
        if !conn.core.takes_output() {
            return;
        }
        let cx = LoopView {
            config: &self.config,
            shared: &self.shared,
            now: self.now,
            key,
            session: conn.transport.info(),
            unix: conn.stream.unix_peer(),
            held: 0,
        };
        serve::run_closure(&mut conn.core, f, &mut self.write_buf, &cx);
        let wire = conn.transport.seal(&mut self.write_buf, &mut self.wire_buf);
        if matches!(conn.core.phase(), Phase::Closed { .. }) {
            wire.clear();
        } else {
            conn.core.out.push_wire(wire);
        }
        self.write_buf.clear();
    }

    /// Seals the replies in the write buffer and writes them, or holds them
    /// for the end of the turn (`holding`, see `held.rs`); whatever the
    /// socket does not take moves to the connection's own output queue.
    /// Then the water marks: reading stops above high water, and resumes
    /// (through `read_again`) at low water.
    fn flush(&mut self, conn: &mut Connection<H::State, T>, key: usize) {
        let wire = conn.transport.seal(&mut self.write_buf, &mut self.wire_buf);
        let mut release = false;
        if !wire.is_empty() {
            let core = &mut conn.core;
            let id = core.id;
            let held = self.held.of(key, id);
            if matches!(core.phase(), Phase::Closed { .. }) {
                // A closed connection's output is dropped with it.
            } else if core.out.has_wire() {
                // Behind what already waits, so order is kept.
                core.out.append(wire);
            } else if self.holding
                && core.phase() == Phase::Open
                && held + wire.len() <= held::LIMIT
            {
                self.held.push(key, id, wire);
            } else if held > 0 {
                // Behind what this connection holds: all of it now, in one
                // `write` (below).
                self.held.push(key, id, wire);
                release = true;
            } else {
                write_now(&mut conn.stream, core, wire, &self.shared, self.now);
            }
            wire.clear();
        }
        if release {
            self.release(conn, key);
        } else {
            self.output_level(conn, key);
        }
    }

    /// Writes now what `conn` holds for the end of the turn, if anything,
    /// then applies the water marks: it stopped being open while it was
    /// driven (it closes, or was throttled), and its replies must leave
    /// before whatever follows them (our FIN, close_notify); or its held
    /// replies passed the hold limit.
    pub(super) fn release(&mut self, conn: &mut Connection<H::State, T>, key: usize) {
        let Some(taken) = self.held.take_last(key, conn.core.id) else {
            return;
        };
        if !matches!(conn.core.phase(), Phase::Closed { .. }) {
            let (stream, core) = (&mut conn.stream, &mut conn.core);
            write_now(stream, core, taken.bytes(), &self.shared, self.now);
        }
        drop(taken);
        self.output_level(conn, key);
    }

    /// Writes `bytes`, the replies `conn` held for the end of the turn, now
    /// that the turn's batch of events is handled (`EventLoop::write_held`).
    pub(super) fn write_held(
        &mut self,
        conn: &mut Connection<H::State, T>,
        key: usize,
        bytes: &[u8],
    ) {
        // Nothing can have been queued on it since it was driven: commands
        // and timers run after the held replies are written.
        debug_assert!(!conn.core.out.has_wire(), "held replies overtaken");
        if !matches!(conn.core.phase(), Phase::Closed { .. }) {
            write_now(
                &mut conn.stream,
                &mut conn.core,
                bytes,
                &self.shared,
                self.now,
            );
        }
        // All written: the output level is what `flush` saw.
        if conn.core.out.has_wire() {
            self.output_level(conn, key);
        }
    }

    /// Writes the connection's queued output until done or the socket is
    /// full, then applies the backpressure marks (output may also have
    /// changed without a write: a reply released, or given up).
    pub(super) fn write_pending(&mut self, conn: &mut Connection<H::State, T>, key: usize) {
        let core = &mut conn.core;
        if core.out.has_wire() && !matches!(core.phase(), Phase::Closed { .. }) {
            match write_some(&mut conn.stream, core.poll_transmit()) {
                Ok(n) => {
                    self.shared.counters.bytes_out.add(n as u64);
                    core.handle_flushed(n, self.now);
                }
                Err(e) => core.handle_io_error(&e),
            }
        }
        self.output_level(conn, key);
    }

    /// Applies the backpressure marks after output changed (and the bound
    /// on deferred replies); a connection whose reading resumes is read
    /// again this turn (no new edge will announce what waited in the
    /// kernel).
    fn output_level(&mut self, conn: &mut Connection<H::State, T>, key: usize) {
        let (low, high) = (self.config.low_water, self.config.high_water);
        let max_replies = self.config.max_deferred_replies;
        if conn
            .core
            .handle_output_level(low, high, max_replies, self.now)
        {
            self.read_again.push((key, conn.core.id));
        }
    }

    /// A closing connection whose replies are all out ends its session
    /// (TLS: close_notify after the last reply, once; not after a failed
    /// handshake, whose alert said it all).
    fn end_session(&mut self, conn: &mut Connection<H::State, T>) {
        if conn.transport.is_handshaking() {
            return;
        }
        let wire = &mut self.wire_buf;
        conn.transport.close(wire);
        if !wire.is_empty() {
            write_now(
                &mut conn.stream,
                &mut conn.core,
                wire,
                &self.shared,
                self.now,
            );
            wire.clear();
        }
    }
}

impl<F: Framing, H: Handler<F>, T: Transport> EventLoop<F, H, T> {
    /// A readiness event for the connection in slot `key`: write what
    /// waits, read what came, then reconcile.
    pub(super) fn drive(&mut self, key: usize, ready: Readiness) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if ready.writable {
            self.pipe.write_pending(conn, key);
        }
        if ready.readable {
            self.pipe
                .read(conn, key, !ready.read_closed, &mut self.read_buf);
            if conn.core.phase() != Phase::Open {
                self.pipe.release(conn, key);
            }
        }
        self.reconcile(key);
    }

    /// Writes the replies held during the batch of events just handled
    /// (see `held.rs`): one `write` per connection, in the order the
    /// connections were driven. A connection the socket did not take all
    /// of, or that failed, is reconciled (its interest, its close).
    pub(super) fn write_held(&mut self) {
        if self.pipe.held.is_empty() {
            return;
        }
        let mut held = std::mem::take(&mut self.pipe.held);
        for (segment, bytes) in held.segments() {
            // A connection gone meanwhile (its slot perhaps reused) gets
            // nothing.
            let key = segment.key;
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.core.id == segment.id) else {
                continue;
            };
            self.pipe.write_held(conn, key, bytes);
            if conn.core.out.has_wire() || conn.core.phase() != Phase::Open {
                self.reconcile(key);
            }
        }
        held.clear();
        self.pipe.held = held;
    }

    /// Brings the socket in line with what the core wants, after anything
    /// happened to the connection: ends a drained close (close_notify,
    /// shutdown, or removal), re-registers interest if it changed, and
    /// keeps one wake-up in the timer heap at or before its next deadline.
    pub(super) fn reconcile(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if matches!(conn.core.phase(), Phase::Closing { .. }) && conn.core.out.is_empty() {
            self.pipe.end_session(conn);
        }
        match conn.core.poll_action() {
            Action::Serve => {}
            Action::ShutWrite => {
                // All replies are with the kernel: our FIN goes after them.
                let result = conn.stream.shutdown(Shutdown::Write);
                conn.core.handle_write_shut(result, self.clock.now());
                // The peer's end-of-stream may already be waiting, its edge
                // consumed while we were only writing: look now.
                self.pipe.read_again.push((key, conn.core.id));
            }
            Action::Remove => return self.remove(key),
        }
        let Some(wanted) = conn.core.poll_interest() else {
            return self.remove(key);
        };
        if std::mem::replace(&mut conn.core.registered, wanted) != wanted {
            let token = Token(key + FIRST_CONN);
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.stream, token, wanted)
            {
                log::warn!(
                    "{} {}: re-register failed: {e}",
                    conn.core.id,
                    conn.core.peer
                );
                conn.core.handle_io_error(&e);
                return self.remove(key);
            }
        }
        if let Some((at, _)) = conn.core.poll_deadline(&self.pipe.timeouts) {
            // A later deadline is found when this one comes up (lazy
            // deletion: see `timers.rs`).
            if at < conn.core.timer_at {
                conn.core.timer_at = at;
                self.timers.schedule(at, key, conn.core.id);
            }
        }
    }

    /// Removes a connection and tells the handler. Dropping it gives back
    /// everything it held (slot, address place, handshake place) and closes
    /// the descriptor, which also removes it from the epoll set: no
    /// `deregister` call is needed, one syscall saved per connection.
    pub(super) fn remove(&mut self, key: usize) {
        let conn = self.conns.remove(key);
        let pipe = &mut self.pipe;
        // The connection leaves this loop (for the least-connections count).
        pipe.shared.open.fetch_sub(1, Ordering::Relaxed);
        let core = conn.core;
        let reason = core.close_reason();
        log::debug!("{} {}: closed: {}", core.id, core.peer, reason);
        pipe.shared.counters.closed[CloseLabel::from(reason).index()].add(1);
        if conn.transport.is_handshaking() {
            let counters = &pipe.shared.counters;
            match reason {
                CloseReason::HandshakeTimeout => counters.tls_handshake_timeouts.add(1),
                CloseReason::HandshakeEvicted => counters.tls_handshake_evictions.add(1),
                // Closed before the handshake began (PROXY protocol), or stopped.
                CloseReason::Stopped
                | CloseReason::BadProxyHeader
                | CloseReason::Denied
                | CloseReason::TooManyFromAddress => {}
                _ => counters.tls_handshake_failures.add(1),
            }
        }
        if !core.announced {
            return; // the handler never heard of it (no PROXY header or handshake yet)
        }
        let closed = Disconnect {
            id: core.id,
            peer_addr: core.peer,
            peer: handler::peer(core.peer, core.proxy.is_some(), conn.stream.unix_peer()),
            state: core.state,
            reason,
        };
        let handler = &mut pipe.handler;
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| handler.on_disconnect(closed))) {
            pipe.shared.counters.handler_panics.add(1);
            log::error!(
                "handler panicked in on_disconnect: {}",
                serve::panic_message(&*panic)
            );
        }
    }
}

/// Writes `data`, new output for `core`, as far as the socket takes it;
/// the rest waits in the connection's output queue.
#[inline]
fn write_now<S>(
    stream: &mut Stream,
    core: &mut Core<S>,
    data: &[u8],
    shared: &LoopShared,
    now: Millis,
) {
    match write_some(stream, data) {
        Ok(n) => {
            shared.counters.bytes_out.add(n as u64);
            core.handle_sent(data, n, now);
        }
        Err(e) => core.handle_io_error(&e),
    }
}

/// Writes as much of `data` as the socket takes without blocking.
///
/// Stops at `WouldBlock`, and also after a short write: on a stream socket
/// that already proves the send buffer full, and the next call would only say
/// `WouldBlock` (tokio skips it too).
fn write_some(stream: &mut Stream, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match stream.write(&data[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                done += n;
                if done < data.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Plain;

    /// An idle connection's whole cost in user memory is its slab entry:
    /// this guards the headline figure (RSS per idle plaintext connection)
    /// against a field added without thought. The plaintext transport is
    /// zero-sized; TLS adds one pointer. (The socket, TCP or Unix, is 16
    /// bytes in debug and release builds alike: see `socket.rs`.)
    #[test]
    fn a_plaintext_connection_stays_small() {
        let size = std::mem::size_of::<Connection<(), Plain>>();
        println!("Connection<(), Plain>: {size} bytes");
        assert!(size <= 128, "Connection<(), Plain> grew to {size} bytes");
    }
}
