//! The netpool side of `examples/kv`: a [`Handler`] for the [`Resp`] framing
//! that runs each command through the engine (`engine.rs`) and sends its
//! reply, delivers published messages through [`ConnHandle`]s, and sweeps
//! expired keys on the loop's tick.
//!
//! The benchmark suite's `netpool-kv` server includes this file (and the
//! engine) as it is, so its figures are this example's.
//!
//! # One command
//! The framing hands over a [`Command`], the arguments borrowed from the
//! read buffer; the engine reads them through its `Args` trait (implemented
//! below), writes the reply into this loop's scratch vector, and the handler
//! copies it into the connection's output with one `send`: no allocation per
//! command once the scratch has grown. The time a command runs at is read
//! per command (`Instant::now()`, a vDSO call of about 20 ns), because a
//! `PX 1` must expire a millisecond later, not at the loop's next turn.
//!
//! # Sharing between loops
//! With `--workers N`, every loop's handler holds the same [`Shared`] (an
//! `Arc`): the store, whose keys are split over 64 mutex-guarded shards (the
//! engine's module doc says why, and what a lock costs), and the table of
//! subscribers' handles, one mutex, touched only by SUBSCRIBE, PUBLISH and the
//! disconnect of a subscriber. A connection is served by one loop for its
//! whole life, so its [`Session`] needs no lock.
//!
//! # Pub/sub
//! A connection that subscribes registers its [`ConnHandle`] under its
//! subscriber id (its [`ConnId`](netpool::ConnId), unique for the server's
//! life). PUBLISH asks the engine who listens, copies their handles out of
//! the table (no lock is held while sending), and sends each the message:
//! the handle queues it on the subscriber's loop, whichever that is, and
//! wakes it. A subscriber that does not read is closed once its queued
//! output passes the output limit, as redis-server closes a pub/sub client
//! past its output buffer limit.
//!
//! # Expiry
//! Lazy in the engine (a command that touches an expired key removes it),
//! and active on the loop's tick ([`Builder::tick`], every
//! [`engine::SWEEP_INTERVAL`]): each loop's [`Handler::on_tick`] sweeps at
//! most [`SWEEPS_PER_TICK`] × [`engine::SWEEP_BUDGET`] due keys, so a tick
//! holds its loop for a bounded time. With several loops, each sweeps in
//! turn; the store keeps one cursor, so they share the work rather than
//! repeat it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use netpool::{Builder, Command, Conn, ConnHandle, Disconnect, Handler, Resp};

use crate::engine::{self, Args, Outcome, Session, Store, SubscriberId};

/// The longest request accepted by default, in bytes (`--max-line` changes
/// it): values up to nearly this size. Smaller than redis-server's 512 MiB
/// bulk strings in a 1 GiB query buffer, because it also sizes the output
/// limit below, the memory one connection may hold.
pub const MAX_REQUEST: usize = 64 * 1024 * 1024;

/// Sweeps per tick at most, each of [`engine::SWEEP_BUDGET`] due keys:
/// about 0.6 ms of work each on the development VM (the engine's doc), so a
/// tick holds its loop for a few milliseconds at worst, when keys expire
/// faster than one sweep per tick removes them.
pub const SWEEPS_PER_TICK: usize = 4;

/// The RESP framing for requests of at most `max_request` bytes; bulk
/// strings are bounded by the same figure.
///
/// # Panics
///
/// If `max_request` is less than 2 or more than `u32::MAX` (see
/// [`Resp::max_frame`]).
pub fn framing(max_request: usize) -> Resp {
    Resp::new().max_frame(max_request)
}

/// The server settings the example needs beside its framing: the tick that
/// drives the active expiry, and an output limit that lets the largest value
/// a request can carry be read back (twice the request bound, plus 1 MiB for
/// the replies around it).
pub fn configure(builder: Builder<Resp>, max_request: usize) -> Builder<Resp> {
    builder
        .tick(engine::SWEEP_INTERVAL)
        .output_limit(max_request.saturating_mul(2).saturating_add(1 << 20))
}

/// A netpool command is the engine's argument list as it is.
impl Args for Command<'_> {
    fn len(&self) -> usize {
        Command::len(self)
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        Command::get(self, i)
    }
}

/// What every loop's handler shares.
pub struct Shared {
    /// The keys and the channels.
    pub store: Store,
    /// Where to deliver a subscriber's messages.
    subscribers: Mutex<HashMap<SubscriberId, ConnHandle>>,
}

impl Shared {
    /// Shares `store` between the loops.
    pub fn new(store: Store) -> Arc<Shared> {
        Arc::new(Shared {
            store,
            subscribers: Mutex::new(HashMap::new()),
        })
    }

    fn subscribers(&self) -> std::sync::MutexGuard<'_, HashMap<SubscriberId, ConnHandle>> {
        // The table is consistent after any panic: each change is one call.
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One loop's handler.
pub struct Kv {
    shared: Arc<Shared>,
    /// The reply of the command being served (the engine writes into a
    /// `Vec`); reused from command to command.
    reply: Vec<u8>,
    /// PUBLISH scratch: the receivers' handles, reused.
    receivers: Vec<ConnHandle>,
}

impl Kv {
    /// A handler for one loop, over the shared store.
    pub fn new(shared: Arc<Shared>) -> Kv {
        Kv {
            shared,
            reply: Vec::new(),
            receivers: Vec::new(),
        }
    }
}

/// One connection's state.
#[derive(Default)]
pub struct Client {
    /// The engine's session, made at the connection's first command. Boxed:
    /// the slab of connections keeps one pointer per connection, not a
    /// session's hundred bytes.
    session: Option<Box<Session>>,
    /// Whether the connection's handle is in the subscriber table.
    listening: bool,
}

impl Handler<Resp> for Kv {
    type State = Client;

    fn on_frame(&mut self, command: Command<'_>, conn: &mut Conn<'_, Client>) {
        let id = conn.id().as_u64();
        let client = conn.state();
        let session = client
            .session
            .get_or_insert_with(|| Box::new(Session::new(id)));
        self.reply.clear();
        let store = &self.shared.store;
        match store.execute(session, &command, Instant::now(), &mut self.reply) {
            Outcome::Reply => {}
            Outcome::Quit => {
                conn.send(&self.reply);
                conn.close();
                return;
            }
            Outcome::Subscribed => {
                if !client.listening {
                    client.listening = true;
                    let handle = conn.handle();
                    self.shared.subscribers().insert(id, handle);
                }
            }
            Outcome::Publish => {
                let (message, ids) = session.delivery();
                {
                    let table = self.shared.subscribers();
                    self.receivers
                        .extend(ids.iter().filter_map(|id| table.get(id).cloned()));
                }
                for receiver in self.receivers.drain(..) {
                    // A loop that has stopped has no one to deliver to.
                    // `send_wait`: on a loop thread it never waits, and never
                    // drops a message for a full queue, which a subscriber
                    // would not notice (its output limit bounds one that
                    // does not read, as Redis's pubsub buffer limit does).
                    let _ = receiver.send_wait(message);
                }
            }
        }
        conn.send(&self.reply);
    }

    fn on_disconnect(&mut self, closed: Disconnect<Client>) {
        let Client { session, listening } = closed.state;
        if listening {
            self.shared.subscribers().remove(&closed.id.as_u64());
        }
        if let Some(mut session) = session {
            self.shared.store.end_session(&mut session);
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        for _ in 0..SWEEPS_PER_TICK {
            let swept = self.shared.store.sweep(now, engine::SWEEP_BUDGET);
            if !swept.more(engine::SWEEP_BUDGET) {
                break;
            }
        }
    }
}
