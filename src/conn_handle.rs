//! [`ConnHandle`]: reaching one connection from any thread.

use std::fmt;
use std::sync::Arc;

use crate::base::id::ConnId;
use crate::error::Error;
use crate::shared::{Command, LoopShared};

/// A `Send + Clone` handle to one connection, usable from any thread.
///
/// Commands travel to the connection's loop through its queue and waker. A
/// handle names its connection by slab slot *and* [`ConnId`]: when the
/// connection is gone and its slot serves someone else, the ids differ and the
/// loop drops the command (counted in [`Stats::stale_handle_commands`](crate::Stats::stale_handle_commands) and
/// logged at debug level) instead of delivering it to a stranger.
#[derive(Clone)]
pub struct ConnHandle {
    shared: Arc<LoopShared>,
    key: usize,
    id: ConnId,
}

impl fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnHandle").field("id", &self.id).finish()
    }
}

impl ConnHandle {
    pub(crate) fn new(shared: Arc<LoopShared>, key: usize, id: ConnId) -> Self {
        ConnHandle { shared, key, id }
    }

    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Queues `data` for the connection and wakes its loop. Delivery is not
    /// confirmed: if the connection has closed meanwhile, the loop drops the
    /// data and counts it in [`Stats::stale_handle_commands`](crate::Stats::stale_handle_commands).
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] if the loop has exited.
    pub fn send(&self, data: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.shared.push(Command::Send {
            key: self.key,
            id: self.id,
            data: data.into(),
        })
    }

    /// Closes the connection gracefully (pending output is flushed first).
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] if the loop has exited.
    pub fn close(&self) -> Result<(), Error> {
        self.shared.push(Command::Close {
            key: self.key,
            id: self.id,
        })
    }
}
