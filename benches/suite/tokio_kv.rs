//! tokio-kv: the key-value server of `examples/kv`, written the way a careful
//! tokio user would, over the very same engine (`examples/kv/engine.rs`), so
//! that the kv scenarios compare the I/O models and nothing else.
//!
//! - A current-thread runtime and a task per connection (tokio-ct's shape),
//!   accepting through tokio-ct's own budgeted accept loop
//!   ([`accept_with_budget`]).
//! - Requests are parsed by hand from the connection's read buffer (a `Vec`
//!   filled with `read_buf`), the way redis-server parses them: arrays of
//!   bulk strings and inline commands, lengths checked before anything is
//!   waited for or kept (redis-server's defaults: 1,048,576 arguments, 512 MiB
//!   per bulk string, 64 KiB per inline line). The engine sees each command
//!   as ranges into that buffer ([`Frame`]): nothing is copied or allocated
//!   per command, as netpool's RESP framing will hand out borrowed arguments.
//!   tokio-util's `Decoder` is not used because it must yield an owned frame
//!   per command (a `Vec` of `Bytes` at least), which would measure an
//!   allocation the netpool side does not make.
//! - Every complete command of one read is executed, and the replies go out
//!   in one `write_all` (with a cap, [`OUT_FLUSH`], so a pipeline of large
//!   GETs cannot grow the output without bound). A pipelined burst costs one
//!   read and one write, as in redis-server and netpool.
//! - A protocol error is answered with `-ERR Protocol error: ...` and closes
//!   the connection, as redis-server does.
//! - Active expiry: one task calls [`Store::sweep`] every
//!   [`engine::SWEEP_INTERVAL`].
//! - Pub/sub: a subscribed connection gets a bounded channel
//!   ([`INBOX`] messages) in the subscriber table; its task then waits for
//!   either input or a message. A subscriber too slow to keep up is dropped
//!   from the table, and its connection closes once it has written what was
//!   queued: redis-server likewise disconnects a pub/sub client past its
//!   output buffer limit.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use crate::kv_engine::{self as engine, Args, Outcome, Session, Store, SubscriberId};
use crate::proto::{self, ServeOpts};
use crate::tokio_server::accept_with_budget;

/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Replies are written out once this many bytes are waiting, even in the
/// middle of a pipelined burst.
pub const OUT_FLUSH: usize = 64 * 1024;
/// Messages queued for one subscriber before it counts as too slow.
pub const INBOX: usize = 1024;
/// redis-server's limits on a request (`proto-max-bulk-len`, the multibulk
/// count, `PROTO_INLINE_MAX_SIZE`).
const MAX_BULK: i64 = 512 * 1024 * 1024;
const MAX_ARGS: i64 = 1024 * 1024;
const MAX_INLINE: usize = 64 * 1024;

/// What every connection shares.
struct Shared {
    store: Store,
    /// Where to send a subscriber's messages.
    subscribers: Mutex<HashMap<SubscriberId, mpsc::Sender<Arc<[u8]>>>>,
}

pub fn serve(opts: &ServeOpts) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let opts = opts.clone();
    rt.block_on(async move {
        let listener = TcpListener::from_std(proto::listener(opts.addr)?)?;
        let shared = Arc::new(Shared {
            store: Store::new(),
            subscribers: Mutex::new(HashMap::new()),
        });
        tokio::spawn(sweeper(shared.clone()));
        proto::announce(listener.local_addr()?);
        let budget = Arc::new(Semaphore::new(opts.acceptors));
        let mut next_id: SubscriberId = 0;
        accept_with_budget(listener, budget, opts.overflow, |stream, permit| {
            next_id += 1;
            let (shared, id) = (shared.clone(), next_id);
            tokio::spawn(async move {
                let _permit = permit;
                connection(stream, shared, id).await;
            });
        })
        .await
    })
}

/// The active expiry: bounded sweeps on a timer, as the example's loop timer.
async fn sweeper(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(engine::SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A few budgets in a row when many keys are due, yielding between
        // them so connections are not held up.
        for _ in 0..10 {
            let swept = shared.store.sweep(Instant::now(), engine::SWEEP_BUDGET);
            if !swept.more(engine::SWEEP_BUDGET) {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// What woke a subscribed connection.
enum Wake {
    Readable(io::Result<()>),
    Message(Option<Arc<[u8]>>),
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>, id: SubscriberId) {
    let _ = stream.set_nodelay(true);
    let mut session = Session::new(id);
    let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut args: Vec<(usize, usize)> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut inbox: Option<mpsc::Receiver<Arc<[u8]>>> = None;
    'conn: loop {
        if input.capacity() - input.len() < READ_CHUNK {
            input.reserve(READ_CHUNK);
        }
        // Wait for input, or, once subscribed, for input or a message.
        let read = match inbox.as_mut() {
            None => stream.read_buf(&mut input).await,
            Some(rx) => {
                let wake = poll_fn(|cx| {
                    if let Poll::Ready(m) = rx.poll_recv(cx) {
                        return Poll::Ready(Wake::Message(m));
                    }
                    stream.poll_read_ready(cx).map(Wake::Readable)
                })
                .await;
                match wake {
                    Wake::Message(Some(m)) => {
                        out.extend_from_slice(&m);
                        while out.len() < OUT_FLUSH {
                            match rx.try_recv() {
                                Ok(m) => out.extend_from_slice(&m),
                                Err(_) => break,
                            }
                        }
                        if stream.write_all(&out).await.is_err() {
                            break;
                        }
                        out.clear();
                        continue;
                    }
                    // Dropped from the table: too slow a subscriber.
                    Wake::Message(None) => break,
                    Wake::Readable(Err(_)) => break,
                    Wake::Readable(Ok(())) => match stream.try_read_buf(&mut input) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        r => r,
                    },
                }
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // Every complete command in the buffer, one timestamp for the batch.
        let now = Instant::now();
        let mut start = 0;
        loop {
            let used = match parse(&input, start, &mut args) {
                Ok(Some(used)) => used,
                Ok(None) => break,
                Err(reason) => {
                    out.extend_from_slice(b"-ERR Protocol error: ");
                    out.extend_from_slice(reason.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    let _ = stream.write_all(&out).await;
                    break 'conn;
                }
            };
            let frame = Frame {
                buf: &input,
                args: &args,
            };
            let outcome = shared.store.execute(&mut session, &frame, now, &mut out);
            start += used;
            match outcome {
                Outcome::Reply => {}
                Outcome::Quit => {
                    let _ = stream.write_all(&out).await;
                    break 'conn;
                }
                Outcome::Subscribed => {
                    if inbox.is_none() {
                        let (tx, rx) = mpsc::channel(INBOX);
                        lock(&shared.subscribers).insert(id, tx);
                        inbox = Some(rx);
                    }
                }
                Outcome::Publish => {
                    let (message, ids) = session.delivery();
                    deliver(&shared, message, ids);
                }
            }
            if out.len() >= OUT_FLUSH {
                if stream.write_all(&out).await.is_err() {
                    break 'conn;
                }
                out.clear();
            }
        }
        // Keep only the incomplete tail: the one copy of a split request.
        input.drain(..start);
        if input.is_empty() && input.capacity() > 4 * READ_CHUNK {
            // A large request is done: do not keep its buffer for life.
            input = Vec::with_capacity(READ_CHUNK);
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
    }
    shared.store.end_session(&mut session);
    if inbox.is_some() {
        lock(&shared.subscribers).remove(&id);
    }
}

/// Sends one published message to each subscriber, one shared allocation for
/// all of them. A subscriber whose inbox is full is dropped from the table.
fn deliver(shared: &Shared, message: &[u8], ids: &[SubscriberId]) {
    let message: Arc<[u8]> = Arc::from(message);
    let mut subscribers = lock(&shared.subscribers);
    for id in ids {
        if let Some(tx) = subscribers.get(id) {
            if tx.try_send(message.clone()).is_err() {
                subscribers.remove(id);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One command: its arguments as ranges into the read buffer.
struct Frame<'a> {
    buf: &'a [u8],
    args: &'a [(usize, usize)],
}

impl Args for Frame<'_> {
    fn len(&self) -> usize {
        self.args.len()
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        self.args.get(i).map(|&(s, e)| &self.buf[s..e])
    }
}

/// Parses one request starting at `buf[from..]` into `args` (ranges into
/// `buf`). `Ok(Some(n))`: a whole request of `n` bytes (maybe with no
/// arguments: an empty line or `*0`); `Ok(None)`: not all there yet; `Err`:
/// redis-server's reason for closing.
fn parse(
    buf: &[u8],
    from: usize,
    args: &mut Vec<(usize, usize)>,
) -> Result<Option<usize>, &'static str> {
    args.clear();
    let Some(&first) = buf.get(from) else {
        return Ok(None);
    };
    if first != b'*' {
        return inline(buf, from, args);
    }
    let (count, mut pos) = match number_line(buf, from + 1) {
        Line::Number(n, next) if n <= MAX_ARGS => (n, next),
        Line::Incomplete => return Ok(None),
        Line::TooLong => return Err("too big mbulk count string"),
        _ => return Err("invalid multibulk length"),
    };
    for _ in 0..count.max(0) {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(_) => return Err("expected '$'"),
        }
        let (len, body) = match number_line(buf, pos + 1) {
            Line::Number(n, next) if (0..=MAX_BULK).contains(&n) => (n as usize, next),
            Line::Incomplete => return Ok(None),
            Line::TooLong => return Err("too big bulk count string"),
            _ => return Err("invalid bulk length"),
        };
        // The length is checked before the body is waited for: a client
        // announcing 2^40 bytes is refused, not buffered.
        let end = body + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err("bulk string not followed by CRLF");
        }
        args.push((body, end));
        pos = end + 2;
    }
    Ok(Some(pos - from))
}

/// A `*N` or `$N` line, read.
enum Line {
    /// The number, and where the next line starts.
    Number(i64, usize),
    Incomplete,
    /// No line end within [`MAX_INLINE`] bytes.
    TooLong,
    NotANumber,
}

/// The integer on the line starting at `at` (after its `*` or `$`).
fn number_line(buf: &[u8], at: usize) -> Line {
    let rest = buf.get(at..).unwrap_or_default();
    let Some(cr) = memchr::memchr(b'\r', rest) else {
        return if rest.len() > MAX_INLINE {
            Line::TooLong
        } else {
            Line::Incomplete
        };
    };
    match rest.get(cr + 1) {
        None => Line::Incomplete,
        Some(b'\n') => match engine::parse_i64(&rest[..cr]) {
            Some(n) => Line::Number(n, at + cr + 2),
            None => Line::NotANumber,
        },
        Some(_) => Line::NotANumber,
    }
}

/// An inline command: one line, arguments separated by spaces or tabs (no
/// quoting, which redis-server's inline parser also accepts).
fn inline(
    buf: &[u8],
    from: usize,
    args: &mut Vec<(usize, usize)>,
) -> Result<Option<usize>, &'static str> {
    let rest = &buf[from..];
    let Some(nl) = memchr::memchr(b'\n', rest) else {
        return if rest.len() > MAX_INLINE {
            Err("too big inline request")
        } else {
            Ok(None)
        };
    };
    let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
    let mut i = 0;
    while i < line.len() {
        if line[i] == b' ' || line[i] == b'\t' {
            i += 1;
            continue;
        }
        let start = i;
        while i < line.len() && line[i] != b' ' && line[i] != b'\t' {
            i += 1;
        }
        args.push((from + start, from + i));
    }
    Ok(Some(nl + 1))
}
