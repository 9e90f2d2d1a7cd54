//! The tokio variant: the same protocols and budget semantics written the way a
//! good tokio user would, in current-thread and multi-thread flavours.
//!
//! - One task per connection; the stream is split into borrowed halves (no
//!   `Arc`), read through a `BufReader` with `read_until(b'\n')` into a line
//!   buffer that is reused, and answered into a `BufWriter` that is flushed
//!   only when the reader has no more input buffered: a pipelined burst costs
//!   one `write` however many lines it held.
//! - The accept budget is a `Semaphore`. Refuse: accept, `try_acquire_owned`;
//!   without a permit, `try_write` the refuse message (a fresh socket's send
//!   buffer is empty, so it fits) and close. Pause: acquire the permit before
//!   accepting, so clients wait in the kernel backlog.
//! - Accept errors (EMFILE and friends) are logged and accepting goes on after
//!   yielding, as axum/hyper do (without their 1 s sleep: the suite never runs
//!   out of descriptors on purpose).

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::proto::{self, OverflowMode, Proto, ServeOpts};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    CurrentThread,
    MultiThread,
}

pub fn serve(opts: &ServeOpts, flavor: Flavor) -> io::Result<()> {
    let rt = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?,
        // Default worker count: one per core.
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread()
            .enable_io()
            .build()?,
    };
    let opts = opts.clone();
    rt.block_on(accept_loop(opts))
}

async fn accept_loop(opts: ServeOpts) -> io::Result<()> {
    // Same backlog as netpool's default (see proto::BACKLOG).
    let listener = TcpListener::from_std(proto::listener(opts.addr)?)?;
    proto::announce(listener.local_addr()?);
    let budget = Arc::new(Semaphore::new(opts.acceptors));
    loop {
        let permit = match opts.overflow {
            OverflowMode::Pause => Some(
                budget
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(io::Error::other)?,
            ),
            OverflowMode::Refuse => None,
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("tokio: accept: {e}");
                tokio::task::yield_now().await;
                continue; // the Pause permit, if any, is dropped and re-acquired
            }
        };
        let permit = match permit {
            Some(p) => p,
            None => match budget.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // Best effort, as Redis does: one try, then close.
                    let _ = stream.try_write(proto::REFUSE);
                    continue;
                }
            },
        };
        tokio::spawn(connection(stream, permit, opts.proto, opts.max_line));
    }
}

async fn connection(
    mut stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    proto: Proto,
    max_line: usize,
) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.split();
    let mut reader = BufReader::new(r);
    let mut writer = BufWriter::new(w);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Some(body) = line.strip_suffix(b"\n") else {
            break; // EOF inside a line: nothing to answer
        };
        if body.len() > max_line {
            let _ = writer.write_all(proto::TOO_LONG).await;
            let _ = writer.flush().await;
            break;
        }
        let (a, b) = proto::reply(proto, body);
        if writer.write_all(a).await.is_err() || writer.write_all(b).await.is_err() {
            break;
        }
        if reader.buffer().is_empty() && writer.flush().await.is_err() {
            break;
        }
    }
    // The permit drops with the task, giving its slot back to the budget.
}
