//! `tokio-offload` (issue 14): the offload workload written the way a good
//! tokio user would, to set beside `netpool-offload`.
//!
//! One current-thread runtime (netpool-offload has one loop), the same
//! worker pool (`pool.rs`), and a task per connection that keeps its
//! replies in request order with a `FuturesOrdered` of oneshot receivers:
//! a line read is handed to the pool with a `oneshot::Sender`, its receiver
//! queued; the task writes replies as the queue yields them, every reply
//! already finished in the same `write`. At most 128 requests are in flight
//! per connection (netpool's default `max_deferred_replies`): past that the
//! task stops reading, as netpool does. The accept loop and its budget are
//! tokio-ct's (`tokio_server::accept_with_budget`).

use std::io;
use std::sync::Arc;

use futures::stream::{FuturesOrdered, StreamExt};
use futures::FutureExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::pool::{Pool, Reply};
use crate::proto::{self, ServeOpts};
use crate::tokio_server::accept_with_budget;

/// Requests in flight per connection before the task stops reading.
const MAX_IN_FLIGHT: usize = 128;

type Sender = oneshot::Sender<Vec<u8>>;

impl Reply for Sender {
    fn reply(self, bytes: Vec<u8>) {
        // The connection may be gone: then nobody waits for it.
        let _ = self.send(bytes);
    }
}

pub fn serve(opts: &ServeOpts) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let budget = Arc::new(Semaphore::new(opts.acceptors));
    let pool = Pool::<Sender>::new(opts.proto);
    let opts = opts.clone();
    rt.block_on(async move {
        let listener = TcpListener::from_std(proto::listener(opts.addr)?)?;
        proto::announce(listener.local_addr()?);
        let max_line = opts.max_line;
        accept_with_budget(listener, budget, opts.overflow, |stream, permit| {
            tokio::spawn(connection(stream, permit, pool.clone(), max_line));
        })
        .await
    })
}

async fn connection(
    mut stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    pool: Pool<Sender>,
    max_line: usize,
) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.split();
    let mut reader = BufReader::new(r);
    let mut writer = BufWriter::new(w);
    let mut line = Vec::new();
    let mut replies = FuturesOrdered::new();
    let mut reading = true;
    loop {
        tokio::select! {
            // `read_until` keeps what it read in `line` if the other branch
            // wins, and goes on from there the next time.
            read = reader.read_until(b'\n', &mut line), if reading && replies.len() < MAX_IN_FLIGHT => {
                let Ok(n) = read else { break };
                let Some(body) = line.strip_suffix(b"\n").filter(|_| n > 0) else {
                    // End of stream: answer what was asked, then close.
                    reading = false;
                    continue;
                };
                if body.len() > max_line {
                    break;
                }
                let (tx, rx) = oneshot::channel();
                pool.submit(body.to_vec(), tx);
                replies.push_back(rx);
                line.clear();
            }
            Some(reply) = replies.next() => {
                let Ok(reply) = reply else { break };
                if writer.write_all(&reply).await.is_err() {
                    break;
                }
                // Every reply already finished goes in the same write.
                while let Some(Some(Ok(reply))) = replies.next().now_or_never() {
                    if writer.write_all(&reply).await.is_err() {
                        return;
                    }
                }
                if writer.flush().await.is_err() {
                    break;
                }
            }
            else => break,
        }
    }
    // The permit drops with the task, giving its slot back to the budget.
}
