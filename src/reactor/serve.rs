//! The middle of the pipeline, with no I/O: plaintext in, framing, the
//! handler, replies out (into the loop's write buffer, for the driver to
//! seal and write). Also the PROXY header, which comes before everything.
//!
//! Nothing here touches a socket: these functions take bytes and a
//! connection's [`Core`], and leave replies in a buffer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::admission::{Gate, Refusal};
use crate::base::close::CloseReason;
use crate::base::time::Millis;
use crate::config::Config;
use crate::conn_handle::RunFn;
use crate::core::{Core, Phase};
use crate::framing::{Flow, FrameError, Framing, Remainder};
use crate::handler::{Conn, Handler};
use crate::listen::Peer;
use crate::proxy::{self, ProxyHeader};
use crate::shared::LoopShared;
use crate::transport::SessionInfo;

/// What serving one connection needs to know from its loop, borrowed for
/// one call.
pub(super) struct LoopView<'a> {
    pub(super) config: &'a Config,
    pub(super) shared: &'a Arc<LoopShared>,
    pub(super) now: Millis,
    /// The connection's slab key, for the handles the handler may take.
    pub(super) key: usize,
    /// The secure session, on a TLS connection.
    pub(super) session: Option<&'a dyn SessionInfo>,
    /// Who connected, on a Unix socket (see `socket.rs`).
    pub(super) unix: Option<&'a Peer>,
    /// The connection's replies held for the end of the turn (see
    /// `held.rs`): they count toward its output limit.
    pub(super) held: usize,
}

/// Runs `f` with a [`Conn`] context for `core`, catching a handler panic.
///
/// Replies go to the loop's shared `write_buf`, from which the driver writes
/// (or seals) them when the call is over: no per-connection allocation.
/// Then whatever must wait behind a reply deferred to another thread (all
/// of the call's output if one was outstanding already, else what followed
/// the call's first [`Conn::defer`]) moves out of `write_buf` into the
/// connection's output (`Outbox::settle`), so that `write_buf` holds only
/// what may leave now, in order, and a TLS session seals the rest only
/// when its turn comes. Output already queued on the connection counts
/// toward the output limit. Returns `None` if the handler panicked; the
/// connection is then closed.
fn with_conn<S, R>(
    core: &mut Core<S>,
    write_buf: &mut Vec<u8>,
    cx: &LoopView<'_>,
    f: impl FnOnce(&mut Conn<'_, S>, &mut Remainder) -> R,
) -> Option<R> {
    let mut verdict = None;
    let start = write_buf.len();
    let queued = core.out.len() + cx.held;
    let mut ctx = Conn {
        id: core.id,
        peer: core.peer,
        proxy: core.proxy.as_deref().copied(),
        unix: cx.unix,
        state: &mut core.state,
        out: &mut *write_buf,
        outbox: &mut core.out,
        room: cx.config.output_limit.saturating_sub(queued),
        verdict: &mut verdict,
        held: &mut core.held,
        key: cx.key,
        shared: cx.shared,
        session: cx.session,
    };
    let partial = &mut core.partial;
    let result = catch_unwind(AssertUnwindSafe(|| f(&mut ctx, partial)));
    match result {
        Ok(r) => {
            core.out.settle(write_buf, start);
            if let Some(reason) = verdict {
                core.handle_close(reason, false);
            }
            Some(r)
        }
        Err(panic) => {
            core.out.forget_reservations();
            cx.shared.counters.handler_panics.add(1);
            log::error!(
                "{} {}: handler panicked, closing the connection: {}",
                core.id,
                core.peer,
                panic_message(&*panic)
            );
            core.handle_close(CloseReason::HandlerPanicked, false);
            None
        }
    }
}

/// Runs a closure sent from another thread ([`ConnHandle::run`](crate::ConnHandle::run))
/// as if it were a handler method; its output is left in `write_buf`.
pub(super) fn run_closure<S: 'static>(
    core: &mut Core<S>,
    f: RunFn,
    write_buf: &mut Vec<u8>,
    cx: &LoopView<'_>,
) {
    with_conn(core, write_buf, cx, |ctx, _| f(&mut ctx.erase()));
}

/// Tells the handler about a connection (`on_connect`); its greeting, if
/// any, is left in `write_buf`.
pub(super) fn greet<F: Framing, H: Handler<F>>(
    core: &mut Core<H::State>,
    handler: &mut H,
    write_buf: &mut Vec<u8>,
    cx: &LoopView<'_>,
) {
    core.announced = true;
    with_conn(core, write_buf, cx, |ctx, _| handler.on_connect(ctx));
}

/// Hands `input` to the handler frame by frame, through the loop's
/// `framing`; the replies are left in `write_buf` (or the connection's
/// queue). A frame that is too long or malformed closes the connection
/// after the replies to the frames before it, and after the framing's own
/// last word, if it has one (Redis: `-ERR Protocol error: ...`).
pub(super) fn handle_frames<F: Framing, H: Handler<F>>(
    core: &mut Core<H::State>,
    handler: &mut H,
    framing: &mut F,
    input: &[u8],
    write_buf: &mut Vec<u8>,
    cx: &LoopView<'_>,
) {
    let framed = with_conn(core, write_buf, cx, |ctx, partial| {
        let mut frames = 0;
        let framed = framing.split(partial, input, |frame| {
            frames += 1;
            handler.on_frame(frame, ctx);
            if ctx.is_closing() {
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        if let Err(e) = &framed {
            if let Some(reply) = framing.error_reply(e) {
                ctx.send(reply);
            }
        }
        (framed, frames)
    });
    if let Some((framed, frames)) = framed {
        cx.shared.counters.lines.add(frames);
        core.handle_framed(frames, cx.now);
        if let Err(e) = framed {
            log::debug!("{} {}: {e}, closing", core.id, core.peer);
            let reason = match e {
                FrameError::TooLong { .. } => CloseReason::LineTooLong,
                _ => CloseReason::BadFrame,
            };
            core.handle_close(reason, false);
        }
    }
}

/// Where a PROXY header stands after some input.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeaderStep {
    /// Not complete yet: wait for more.
    Incomplete,
    /// Malformed; the connection is closing.
    Rejected,
    /// Complete, but admission refused the client it names (see
    /// [`Gate::after_header`]); the connection is closing, and is owed the
    /// refusal message if [`Refusal::tells_client`] says so.
    Refused(Refusal),
    /// Complete: the peer is the client it names; these bytes followed it
    /// and belong to the connection's stream.
    Done(Vec<u8>),
}

/// Gathers the PROXY protocol header from the first bytes of a connection.
/// Once it is complete, the peer address becomes the client's
/// and admission's step after the header decides on that client: the
/// policies keyed by address ([`Gate::after_header`]), if there is an
/// address to decide on: a `LOCAL` header names none, and a connection
/// through a Unix socket (`unix`) has none of its own.
pub(super) fn proxy_header<S>(
    core: &mut Core<S>,
    input: &[u8],
    unix: bool,
    gate: &Gate,
    shared: &LoopShared,
) -> HeaderStep {
    let mut gathered = core.partial.take_vec();
    gathered.extend_from_slice(input);
    let (header, used) = match proxy::parse(&gathered) {
        Ok(None) => {
            core.partial = Remainder::from_vec(gathered);
            return HeaderStep::Incomplete;
        }
        Ok(Some(done)) => done,
        Err(e) => {
            log::debug!("{} {}: {e}; closing", core.id, core.peer);
            shared.counters.bad_proxy_headers.add(1);
            core.handle_close(CloseReason::BadProxyHeader, true);
            return HeaderStep::Rejected;
        }
    };
    if let ProxyHeader::Proxied { source, .. } = header {
        core.proxy = Some(Box::new(std::mem::replace(&mut core.peer, source)));
        log::debug!(
            "{} {}: proxied for {source}",
            core.id,
            core.proxy.as_deref().unwrap()
        );
    }
    // A `LOCAL` header names nobody: the connection keeps the socket's
    // address, which a Unix socket does not have.
    let has_ip = core.proxy.is_some() || !unix;
    let decided = if has_ip {
        gate.after_header(core.peer.ip())
    } else {
        Ok(None)
    };
    match decided {
        Ok(place) => core.held.hold_place(place),
        Err(why) => {
            log::debug!("{} {}: refused ({why:?})", core.id, core.peer);
            shared.counters.count_refusal(why);
            match why {
                // Closed without a word, as at accept.
                Refusal::Denied => core.handle_close(CloseReason::Denied, true),
                // The per-address cap, the other policy keyed by address:
                // closed gracefully, so that the refusal message arrives.
                _ => core.handle_close(CloseReason::TooManyFromAddress, false),
            }
            return HeaderStep::Refused(why);
        }
    }
    gathered.drain(..used);
    HeaderStep::Done(gathered)
}

/// The header is in: the connection goes on to its handshake (TLS) or
/// opens.
pub(super) fn after_header<S>(core: &mut Core<S>, handshaking: bool) {
    core.set_phase(if handshaking {
        Phase::Handshaking
    } else {
        Phase::Open
    });
}

/// The text of a panic payload, for the log.
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::id::ConnId;
    use crate::budget::{Admission, Budget, Overflow};
    use crate::core::Start;
    use crate::filter::AddressFilter;
    use crate::framing::{Lines, Resp};

    /// A loop's shared state without a loop: a waker needs a poll.
    fn shared() -> Arc<LoopShared> {
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(1)).unwrap();
        Arc::new(LoopShared::new(waker, 4))
    }

    /// What a loop lends `handle_frames`, for a test.
    fn view<'a>(config: &'a Config, shared: &'a Arc<LoopShared>, now: Millis) -> LoopView<'a> {
        LoopView {
            config,
            shared,
            now,
            key: 0,
            session: None,
            unix: None,
            held: 0,
        }
    }

    fn core(start: Start) -> (Core<()>, Arc<Budget>) {
        let budget = Arc::new(Budget::new(4, Overflow::Refuse, 1));
        let Admission::Serve(slot) = budget.try_acquire() else {
            panic!()
        };
        let core = Core::new(
            ConnId(7),
            "10.0.0.1:1000".parse().unwrap(),
            0,
            start,
            slot,
            None,
        );
        (core, budget)
    }

    /// The echo handler, driven through the pipeline's middle with no
    /// socket: frames in, replies out, the tail kept between reads.
    #[test]
    fn frames_reach_the_handler_and_replies_the_buffer() {
        let (mut c, _b) = core(Start::Open);
        let shared = shared();
        let config = Config::default();
        let cx = view(&config, &shared, 5);
        let mut echo = |line: &[u8], conn: &mut Conn<'_>| {
            conn.send(line);
            conn.send(b"\n");
        };
        let (mut out, mut lines) = (Vec::new(), Lines::default());
        handle_frames(&mut c, &mut echo, &mut lines, b"one\r\ntw", &mut out, &cx);
        assert_eq!(out, b"one\n");
        assert_eq!(c.partial.as_slice(), b"tw");
        handle_frames(&mut c, &mut echo, &mut lines, b"o\n", &mut out, &cx);
        assert_eq!(out, b"one\ntwo\n");
        assert!(c.partial.is_empty());
        assert_eq!(c.last_active, 5);
        assert_eq!(shared.counters.lines.get(), 2);
    }

    #[test]
    fn a_panicking_handler_closes_only_its_connection() {
        let (mut c, _b) = core(Start::Open);
        let shared = shared();
        let config = Config::default();
        let cx = view(&config, &shared, 0);
        let mut boom = |_: &[u8], _: &mut Conn<'_>| panic!("boom");
        let out = &mut Vec::new();
        handle_frames(&mut c, &mut boom, &mut Lines::default(), b"x\ny", out, &cx);
        assert_eq!(c.close_reason(), CloseReason::HandlerPanicked);
        assert_eq!(shared.counters.handler_panics.get(), 1);
    }

    #[test]
    fn a_proxy_header_names_the_client_and_leaves_the_rest() {
        let (mut c, _b) = core(Start::ProxyHeader);
        let shared = shared();
        let budget = Arc::new(Budget::new(1, Overflow::Refuse, 1));
        let gate = Gate::new(budget, 0, 0, AddressFilter::default(), true);
        let header = b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\r\nhello\n";
        assert_eq!(
            proxy_header(&mut c, &header[..10], false, &gate, &shared),
            HeaderStep::Incomplete
        );
        let step = proxy_header(&mut c, &header[10..], false, &gate, &shared);
        assert_eq!(step, HeaderStep::Done(b"hello\n".to_vec()));
        assert_eq!(c.peer, "192.0.2.1:5000".parse().unwrap());
        assert_eq!(c.proxy.as_deref(), Some(&"10.0.0.1:1000".parse().unwrap()));
        assert!(c.partial.is_empty());
    }

    #[test]
    fn a_proxied_client_is_filtered_by_the_address_it_is_named_by() {
        let (mut c, _b) = core(Start::ProxyHeader);
        let shared = shared();
        let budget = Arc::new(Budget::new(1, Overflow::Refuse, 1));
        let filter = AddressFilter {
            allow: vec![],
            deny: vec!["192.0.2.0/24".parse().unwrap()],
        };
        let gate = Gate::new(budget, 0, 0, filter, true);
        let header = b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\r\n";
        assert_eq!(
            proxy_header(&mut c, header, false, &gate, &shared),
            HeaderStep::Refused(Refusal::Denied)
        );
        assert_eq!(c.close_reason(), CloseReason::Denied);
        assert_eq!(shared.counters.denied.get(), 1);
    }

    /// A malformed frame gets the framing's last word, after the replies to
    /// the frames before it, and closes the connection.
    #[test]
    fn a_protocol_error_replies_then_closes() {
        let (mut c, _b) = core(Start::Open);
        let shared = shared();
        let config = Config::default();
        let cx = view(&config, &shared, 0);
        let mut pong = |_: crate::framing::Command<'_>, conn: &mut Conn<'_>| conn.send("+PONG\r\n");
        let out = &mut Vec::new();
        let input = b"*1\r\n$4\r\nPING\r\n*1\r\n$-7\r\n";
        handle_frames(&mut c, &mut pong, &mut Resp::new(), input, out, &cx);
        assert_eq!(
            out.as_slice(),
            b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
        );
        assert_eq!(c.close_reason(), CloseReason::BadFrame);
    }

    /// The per-address cap counts the client a PROXY header names, and a
    /// refused one closes gracefully (its refusal message is to be sent).
    #[test]
    fn the_per_address_cap_counts_the_client_the_header_names() {
        let shared = shared();
        let budget = Arc::new(Budget::new(1, Overflow::Refuse, 1));
        let gate = Gate::new(budget, 1, 0, AddressFilter::default(), true);
        let (mut first, _b1) = core(Start::ProxyHeader);
        let (mut second, _b2) = core(Start::ProxyHeader);
        let (mut other, _b3) = core(Start::ProxyHeader);
        let from = |client: &str| format!("PROXY TCP4 {client} 192.0.2.2 5000 80\r\n");
        let header = from("192.0.2.1");
        assert_eq!(
            proxy_header(&mut first, header.as_bytes(), false, &gate, &shared),
            HeaderStep::Done(Vec::new())
        );
        assert_eq!(
            proxy_header(&mut second, header.as_bytes(), false, &gate, &shared),
            HeaderStep::Refused(Refusal::PerIp)
        );
        assert_eq!(
            second.phase(),
            Phase::Closing {
                reason: CloseReason::TooManyFromAddress,
                linger: true
            }
        );
        assert_eq!(shared.counters.refused_per_ip.get(), 1);
        let header = from("192.0.2.7");
        assert_eq!(
            proxy_header(&mut other, header.as_bytes(), false, &gate, &shared),
            HeaderStep::Done(Vec::new()),
            "another client behind the same proxy (10.0.0.1) is served"
        );
        drop(first);
        let (mut again, _b4) = core(Start::ProxyHeader);
        let header = from("192.0.2.1");
        assert_eq!(
            proxy_header(&mut again, header.as_bytes(), false, &gate, &shared),
            HeaderStep::Done(Vec::new()),
            "the first client's place came back with its connection"
        );
    }

    /// Through a Unix socket, a `LOCAL` header (a proxy's health check)
    /// leaves no address to filter: an allow-list does not turn it away.
    /// A header that names a client is filtered by that client's address.
    #[test]
    fn through_a_unix_socket_only_a_named_client_is_filtered() {
        let filter = AddressFilter {
            allow: vec!["198.51.100.0/24".parse().unwrap()],
            deny: vec![],
        };
        let budget = Arc::new(Budget::new(1, Overflow::Refuse, 1));
        let gate = Gate::new(budget, 0, 0, filter, true);
        let shared = shared();
        let (mut local, _b) = core(Start::ProxyHeader);
        let header = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
        assert_eq!(
            proxy_header(&mut local, header, true, &gate, &shared),
            HeaderStep::Done(Vec::new())
        );
        let (mut named, _b) = core(Start::ProxyHeader);
        let header = b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 80\r\n";
        assert_eq!(
            proxy_header(&mut named, header, true, &gate, &shared),
            HeaderStep::Refused(Refusal::Denied)
        );
    }

    #[test]
    fn panic_messages_are_readable() {
        let p = catch_unwind(|| panic!("boom")).unwrap_err();
        assert_eq!(panic_message(&*p), "boom");
        let p = catch_unwind(|| panic!("{}", 42)).unwrap_err();
        assert_eq!(panic_message(&*p), "42");
    }
}
