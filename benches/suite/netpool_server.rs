//! netpool, serving the suite's protocols through its public API only: the
//! same handlers a user would write (examples/echo.rs, examples/ping.rs).
//! `per_core` runs one event loop per core (`Builder::workers_per_core`), the
//! counterpart of tokio's multi-thread runtime.

use std::io;

use netpool::{Conn, Overflow, Server};

use crate::proto::{self, OverflowMode, Proto, ServeOpts};

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

pub fn serve(opts: &ServeOpts, per_core: bool) -> io::Result<()> {
    let overflow = match opts.overflow {
        OverflowMode::Refuse => Overflow::Refuse,
        OverflowMode::Pause => Overflow::Pause,
    };
    let mut builder = Server::builder()
        .acceptors(opts.acceptors)
        .overflow(overflow)
        .refuse_message(proto::REFUSE.to_vec())
        .max_line_len(opts.max_line);
    if per_core {
        builder = builder.workers_per_core();
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
