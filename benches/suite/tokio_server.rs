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
//! - `tokio-nct`: n current-thread runtimes on n threads (n = cores), each
//!   accepting from its own `SO_REUSEPORT` listener on the same port, with
//!   the same accept loop and connection code as tokio-ct; one `Semaphore`
//!   shared by all of them keeps the budget exact across runtimes.
//! - TLS (`tokio-tls`): tokio-ct with each accepted stream handed to
//!   tokio-rustls's `TlsAcceptor`, the handshake under a 5 s timeout
//!   (netpool's default), with the very `ServerConfig` netpool-tls uses (ring
//!   provider, same certificate). The TLS stream is not split (that would
//!   take a lock per read and write): it is read through a `BufReader` over a
//!   `BufWriter`, which passes writes through to the writer, with the same
//!   flush-when-no-input-is-buffered rule.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::proto::{self, OverflowMode, Proto, ServeOpts};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    CurrentThread,
    MultiThread,
    /// n current-thread runtimes, one per core, each with its own
    /// `SO_REUSEPORT` listener.
    CurrentThreadPerCore,
}

/// The handshake timeout of the TLS variant: netpool's default.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn serve(opts: &ServeOpts, flavor: Flavor) -> io::Result<()> {
    let tls = tls_acceptor(opts)?;
    let budget = Arc::new(Semaphore::new(opts.acceptors));
    let mut builder = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        // Default worker count: one per core.
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        Flavor::CurrentThreadPerCore => return serve_per_core(opts, budget, tls),
    };
    builder.enable_io();
    if tls.is_some() {
        // The handshake timeout needs the timer; plaintext runs without it.
        builder.enable_time();
    }
    let rt = builder.build()?;
    let opts = opts.clone();
    rt.block_on(async move {
        // Same backlog as netpool's default (see proto::BACKLOG).
        let listener = TcpListener::from_std(proto::listener(opts.addr)?)?;
        proto::announce(listener.local_addr()?);
        accept_loop(listener, budget, opts, tls).await
    })
}

/// tokio-nct: one current-thread runtime per core on its own thread, each
/// with its own `SO_REUSEPORT` listener on the same port. The first binds
/// the requested address (port 0 picks one); the others bind the port it got.
fn serve_per_core(
    opts: &ServeOpts,
    budget: Arc<Semaphore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> io::Result<()> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let first = proto::listener_with(opts.addr, true)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..n {
        listeners.push(proto::listener_with(addr, true)?);
    }
    let mut threads = Vec::new();
    for (i, std_listener) in listeners.into_iter().enumerate() {
        let (opts, budget, tls) = (opts.clone(), budget.clone(), tls.clone());
        let t = std::thread::Builder::new()
            .name(format!("tokio-nct-{i}"))
            .spawn(move || -> io::Result<()> {
                let mut builder = tokio::runtime::Builder::new_current_thread();
                builder.enable_io();
                if tls.is_some() {
                    builder.enable_time();
                }
                let rt = builder.build()?;
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener)?;
                    accept_loop(listener, budget, opts, tls).await
                })
            })?;
        threads.push(t);
    }
    // Every listener exists before the parent is told the port.
    proto::announce(addr);
    for t in threads {
        t.join()
            .map_err(|_| io::Error::other("a runtime thread panicked"))??;
    }
    Ok(())
}

/// The TLS acceptor for `--tls-cert/--tls-key`: netpool's own
/// `tls_config_from_pem`, so both TLS servers use one config builder, one
/// provider (ring) and one certificate.
fn tls_acceptor(opts: &ServeOpts) -> io::Result<Option<tokio_rustls::TlsAcceptor>> {
    let Some((cert, key)) = &opts.tls else {
        return Ok(None);
    };
    #[cfg(feature = "tls")]
    {
        let config = netpool::tls_config_from_pem(cert, key).map_err(io::Error::other)?;
        Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = (cert, key);
        Err(io::Error::other("built without netpool's `tls` feature"))
    }
}

async fn accept_loop(
    listener: TcpListener,
    budget: Arc<Semaphore>,
    opts: ServeOpts,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> io::Result<()> {
    let (proto, max_line) = (opts.proto, opts.max_line);
    accept_with_budget(
        listener,
        budget,
        opts.overflow,
        |stream, permit| match &tls {
            None => {
                tokio::spawn(connection(stream, permit, proto, max_line));
            }
            Some(acceptor) => {
                let _ = stream.set_nodelay(true);
                let accept = acceptor.accept(stream);
                tokio::spawn(async move {
                    let _permit = permit;
                    // A handshake that fails or times out just closes.
                    if let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                        tls_connection(tls, proto, max_line).await;
                    }
                });
            }
        },
    )
    .await
}

/// The accept loop of every tokio server in the suite (tokio-kv's too):
/// takes a budget permit as the overflow mode says (see the module doc) and
/// hands each accepted stream with its permit to `serve`, which spawns the
/// connection's task. The permit drops with that task.
pub async fn accept_with_budget(
    listener: TcpListener,
    budget: Arc<Semaphore>,
    overflow: OverflowMode,
    mut serve: impl FnMut(TcpStream, OwnedSemaphorePermit),
) -> io::Result<()> {
    loop {
        let permit = match overflow {
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
        serve(stream, permit);
    }
}

async fn connection(
    mut stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    proto: Proto,
    max_line: usize,
) {
    let _ = stream.set_nodelay(true);
    // Borrowed halves: no Arc, no lock.
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

/// A TLS connection: the same loop as [`connection`], over one buffered
/// stream instead of split halves (see the module doc).
async fn tls_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    proto: Proto,
    max_line: usize,
) {
    let mut io = BufReader::new(BufWriter::new(stream));
    let mut line = Vec::new();
    loop {
        line.clear();
        match io.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Some(body) = line.strip_suffix(b"\n") else {
            break;
        };
        if body.len() > max_line {
            let _ = io.write_all(proto::TOO_LONG).await;
            let _ = io.flush().await;
            break;
        }
        let (a, b) = proto::reply(proto, body);
        if io.write_all(a).await.is_err() || io.write_all(b).await.is_err() {
            break;
        }
        if io.buffer().is_empty() && io.flush().await.is_err() {
            break;
        }
    }
    // A graceful close: close_notify, as netpool sends.
    let _ = io.shutdown().await;
}
