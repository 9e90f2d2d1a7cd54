//! netpool, serving the suite's protocols through its public API only: the
//! same handlers a user would write (examples/echo.rs, examples/ping.rs).
//! `per_core` runs one event loop per core (`Builder::workers_per_core`), the
//! counterpart of tokio's multi-thread runtime. With `--tls-cert/--tls-key`
//! it serves TLS (`netpool-tls`) through `Builder::tls` and a config from
//! `tls_config_from_pem` (ring), the same handler unchanged. `netpool-kv` is
//! the handler of `examples/kv` (`examples/kv/server.rs`) as it is.

use std::io;

use netpool::{Conn, Overflow, ReplySlot, Server};

use crate::pool::{Pool, Reply};
use crate::proto::{self, OverflowMode, Proto, ServeOpts};
use crate::{kv_engine, kv_server};

/// The handler for one loop. netpool hands it each line without its `\n` and
/// without one trailing `\r`, so the reply needs no stripping here.
fn handler(proto: Proto) -> impl FnMut(&[u8], &mut Conn<'_>) + Send + 'static {
    move |line: &[u8], conn: &mut Conn<'_>| match proto {
        Proto::Echo => {
            conn.send(line);
            conn.send(b"\n");
        }
        Proto::Ping => {
            let (_, reply) = proto::reply(Proto::Ping, line);
            conn.send(reply);
        }
    }
}

impl Reply for ReplySlot {
    fn reply(self, bytes: Vec<u8>) {
        // Waits if the loop's command queue is full; fails only once the
        // server is gone.
        let _ = self.send_wait(bytes);
    }
}

/// `netpool-offload` (issue 14): one loop whose every reply is produced on
/// the worker pool. The handler reserves the reply's place (`Conn::defer`)
/// and hands the line and the slot to the pool; the worker fills the slot,
/// and the loop writes the reply in request order.
pub fn serve_offload(opts: &ServeOpts) -> io::Result<()> {
    let server = Server::builder()
        .acceptors(opts.acceptors)
        .refuse_message(proto::REFUSE.to_vec())
        .max_line_len(opts.max_line)
        .bind(opts.addr)
        .map_err(io::Error::other)?;
    proto::announce(server.local_addr());
    let pool = Pool::<ReplySlot>::new(opts.proto);
    let handler = move |line: &[u8], conn: &mut Conn<'_>| {
        let slot = conn.defer();
        pool.submit(line.to_vec(), slot);
    };
    server.run(handler).map(|_| ()).map_err(io::Error::other)
}

/// One loop, busy-polling `spin` after each busy turn (`netpool-busy`).
pub fn serve_busy(opts: &ServeOpts, spin: std::time::Duration) -> io::Result<()> {
    serve_with(opts, false, spin, true)
}

pub fn serve(opts: &ServeOpts, per_core: bool) -> io::Result<()> {
    serve_with(opts, per_core, std::time::Duration::ZERO, true)
}

/// One loop, writing each read's replies at once instead of at the end of
/// the turn (`netpool-each-read`).
pub fn serve_each_read(opts: &ServeOpts) -> io::Result<()> {
    serve_with(opts, false, std::time::Duration::ZERO, false)
}

fn serve_with(
    opts: &ServeOpts,
    per_core: bool,
    spin: std::time::Duration,
    turn_end: bool,
) -> io::Result<()> {
    let overflow = match opts.overflow {
        OverflowMode::Refuse => Overflow::Refuse,
        OverflowMode::Pause => Overflow::Pause,
    };
    let mut builder = Server::builder()
        .acceptors(opts.acceptors)
        .overflow(overflow)
        .refuse_message(proto::REFUSE.to_vec())
        .max_line_len(opts.max_line)
        .busy_poll(spin)
        .write_at_turn_end(turn_end);
    if per_core {
        builder = builder.workers_per_core();
    }
    if let Some((cert, key)) = &opts.tls {
        builder = with_tls(builder, cert, key)?;
    }
    let server = builder.bind(opts.addr).map_err(io::Error::other)?;
    proto::announce(server.local_addr());
    let proto = opts.proto;
    let result = if per_core {
        server.run_workers(move |_loop_index| handler(proto))
    } else {
        server.run(handler(proto))
    };
    result.map(|_| ()).map_err(io::Error::other)
}

/// `netpool-kv`: the key-value server of `examples/kv`, one loop, with the
/// example's own handler, framing and settings (request bound, tick, output
/// limit) over a fresh store; `netpool-kv-mt` (`per_core`): one loop per
/// core, every loop's handler over the same store, as `--workers cores`.
pub fn serve_kv(opts: &ServeOpts, per_core: bool) -> io::Result<()> {
    let overflow = match opts.overflow {
        OverflowMode::Refuse => Overflow::Refuse,
        OverflowMode::Pause => Overflow::Pause,
    };
    let max_request = kv_server::MAX_REQUEST;
    let builder = Server::builder()
        .acceptors(opts.acceptors)
        .overflow(overflow)
        .refuse_message(proto::REFUSE.to_vec())
        .framing(kv_server::framing(max_request));
    let mut builder = kv_server::configure(builder, max_request);
    if per_core {
        builder = builder.workers_per_core();
    }
    let server = builder.bind(opts.addr).map_err(io::Error::other)?;
    proto::announce(server.local_addr());
    let shared = kv_server::Shared::new(kv_engine::Store::new());
    server
        .run_workers(move |_loop_index| kv_server::Kv::new(shared.clone()))
        .map(|_| ())
        .map_err(io::Error::other)
}

#[cfg(feature = "tls")]
fn with_tls(
    builder: netpool::Builder,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> io::Result<netpool::Builder> {
    let config = netpool::tls_config_from_pem(cert, key).map_err(io::Error::other)?;
    Ok(builder.tls(std::sync::Arc::new(config)))
}

#[cfg(not(feature = "tls"))]
fn with_tls(
    _: netpool::Builder,
    _: &std::path::Path,
    _: &std::path::Path,
) -> io::Result<netpool::Builder> {
    Err(io::Error::other("built without netpool's `tls` feature"))
}
