//! [`ConnHandle`]: reaching one connection from any thread.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

use crate::base::id::ConnId;
use crate::error::Error;
use crate::handler::Conn;
use crate::shared::{Command, LoopShared, Refused};

/// A closure to run on a connection's loop, its state type erased (see
/// [`ConnHandle::run`]).
pub(crate) type RunFn = Box<dyn FnOnce(&mut Conn<'_, dyn Any>) + Send>;

/// A `Send + Clone` handle to one connection, usable from any thread.
///
/// Commands travel to the connection's loop through its queue and waker. A
/// handle names its connection by slab slot *and* [`ConnId`]: when the
/// connection is gone and its slot serves someone else, the ids differ and the
/// loop drops the command (counted in [`Stats::stale_handle_commands`](crate::Stats::stale_handle_commands) and
/// logged at debug level) instead of delivering it to a stranger.
///
/// # Ordering
///
/// What a handle sends joins the connection's output at its end, when the
/// loop takes the command: after every reply already sent or reserved
/// ([`Conn::defer`]), so it waits behind a deferred reply that is not filled
/// yet. Sends from one thread arrive in the order they were made. Several
/// sends to one connection that reach the loop in one turn leave in one
/// `write`.
///
/// # Backpressure
///
/// Commands wait in the loop's queue until its next turn; the queue is
/// bounded in bytes ([`Builder::command_queue_limit`](crate::Builder::command_queue_limit)).
/// [`send`](ConnHandle::send), [`close`](ConnHandle::close) and
/// [`run`](ConnHandle::run) never block: with the queue full they fail with
/// [`Error::Full`] and queue nothing. [`send_wait`](ConnHandle::send_wait)
/// waits for room instead (except on a loop thread, where waiting could
/// wait for itself: there it queues past the bound). Once queued, bytes for
/// a peer that does not read count against its
/// [`Builder::output_limit`](crate::Builder::output_limit).
#[derive(Clone)]
pub struct ConnHandle {
    shared: Arc<LoopShared>,
    key: usize,
    id: ConnId,
    /// The handler's `State`, so that [`run`](ConnHandle::run) can check
    /// the type its closure expects where it is called.
    state: TypeId,
}

impl fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnHandle").field("id", &self.id).finish()
    }
}

/// Taking a handle is defined here, beside the handle, so that `handler.rs`
/// need not import this module (which imports it, for [`ConnHandle::run`]).
impl<S: ?Sized + 'static> Conn<'_, S> {
    /// A `Send + Clone` handle to this connection, usable from any thread.
    pub fn handle(&self) -> ConnHandle {
        ConnHandle {
            shared: self.shared.clone(),
            key: self.key,
            id: self.id,
            state: TypeId::of::<S>(),
        }
    }
}

impl ConnHandle {
    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Queues `data` for the connection and wakes its loop, without
    /// blocking. Delivery is not confirmed: if the connection has closed
    /// meanwhile, the loop drops the data and counts it in
    /// [`Stats::stale_handle_commands`](crate::Stats::stale_handle_commands).
    ///
    /// # Errors
    ///
    /// [`Error::Full`] if the loop's command queue is full (nothing was
    /// queued; see [`# Backpressure`](ConnHandle#backpressure));
    /// [`Error::Stopped`] if the loop has exited.
    pub fn send(&self, data: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.push(self.send_command(data.into()), false)
    }

    /// As [`send`](ConnHandle::send), but waits while the loop's command
    /// queue is full (until the loop's next turn) instead of failing. On a
    /// loop thread it never waits: the bytes are queued past the bound.
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] if the loop has exited.
    pub fn send_wait(&self, data: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.push(self.send_command(data.into()), true)
    }

    /// Closes the connection gracefully (pending output, and replies still
    /// deferred, are delivered first).
    ///
    /// # Errors
    ///
    /// [`Error::Full`] if the loop's command queue is full;
    /// [`Error::Stopped`] if the loop has exited.
    pub fn close(&self) -> Result<(), Error> {
        let close = Command::Close {
            key: self.key,
            id: self.id,
        };
        self.push(close, false)
    }

    /// Runs `f` on the connection's loop, with its [`Conn`], as if a
    /// handler method were called: for what must happen there (sending in
    /// order with the handler's own replies, deferring a reply, closing,
    /// changing the connection's state). `S` is the handler's
    /// [`State`](crate::Handler::State) (`()` for a closure handler). Like
    /// every command, `f` does not run if the connection is gone by then
    /// (counted in [`Stats::stale_handle_commands`](crate::Stats::stale_handle_commands));
    /// it runs on the loop's thread, so it must not block. A panic in it is
    /// caught and closes the connection, as a handler's would.
    ///
    /// ```
    /// # use netpool::{Conn, ConnHandle};
    /// # fn wake(handle: &ConnHandle) -> Result<(), netpool::Error> {
    /// handle.run(|conn: &mut Conn| conn.send(b"tick\n"))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Full`] if the loop's command queue is full (the closure's
    /// captures count toward it); [`Error::Stopped`] if the loop has exited.
    ///
    /// # Panics
    ///
    /// If `S` is not the handler's `State` type.
    pub fn run<S: 'static>(
        &self,
        f: impl FnOnce(&mut Conn<'_, S>) + Send + 'static,
    ) -> Result<(), Error> {
        assert!(
            TypeId::of::<S>() == self.state,
            "ConnHandle::run: the closure's state type is not the handler's State"
        );
        let size = std::mem::size_of_val(&f);
        let erased: RunFn = Box::new(move |conn: &mut Conn<'_, dyn Any>| {
            // Checked above, where the handle was made.
            if let Some(mut conn) = conn.downcast::<S>() {
                f(&mut conn);
            }
        });
        let run = Command::Run {
            key: self.key,
            id: self.id,
            f: Box::new(erased),
            size,
        };
        self.push(run, false)
    }

    fn send_command(&self, data: Vec<u8>) -> Command {
        Command::Send {
            key: self.key,
            id: self.id,
            data,
        }
    }

    fn push(&self, command: Command, wait: bool) -> Result<(), Error> {
        self.shared
            .push_bounded(command, wait)
            .map_err(|refused| match refused {
                Refused::Full(_) => Error::Full,
                Refused::Stopped => Error::Stopped,
            })
    }
}
