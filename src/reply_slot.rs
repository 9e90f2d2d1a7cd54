//! [`ReplySlot`]: the reserved place of one reply, filled from any thread.

use std::fmt;
use std::sync::Arc;

use crate::base::id::ConnId;
use crate::error::Error;
use crate::shared::{Command, LoopShared, Refused};

/// The place of one reply in a connection's output, reserved by
/// [`Conn::defer`](crate::Conn::defer) and filled from any thread.
///
/// `Send`, move-only, used once: [`send`](ReplySlot::send) or
/// [`send_wait`](ReplySlot::send_wait) puts the reply in its place, and
/// dropping the slot unfilled gives the place up (the loop logs it and
/// counts it in [`Stats::reply_slots_dropped`](crate::Stats::reply_slots_dropped)),
/// so that the replies behind it are not held forever.
///
/// Like a [`ConnHandle`](crate::ConnHandle), a slot names its connection by
/// slab slot *and* [`ConnId`]: filled after the connection is gone, its
/// reply reaches nobody and is counted in
/// [`Stats::stale_handle_commands`](crate::Stats::stale_handle_commands).
///
/// # Ordering
///
/// See [`Conn::defer`](crate::Conn::defer): the reply is written after
/// everything the connection sent before the slot was reserved and before
/// everything sent after, however late it is filled.
///
/// # Backpressure
///
/// A reply travels to the loop through the loop's command queue, bounded by
/// [`Builder::command_queue_limit`](crate::Builder::command_queue_limit).
/// [`send`](ReplySlot::send) never blocks: with the queue full it hands the
/// slot and the reply back ([`FillError::Full`]) to try again later.
/// [`send_wait`](ReplySlot::send_wait) waits for room instead, which slows a
/// worker pool down to what the loop writes; it never waits on a loop
/// thread, where the reply is queued past the bound.
#[must_use = "a reply slot holds back every later reply of its connection until it is sent or dropped"]
pub struct ReplySlot {
    shared: Arc<LoopShared>,
    key: usize,
    id: ConnId,
    seq: u64,
    /// Sent (or handed back in a new slot): nothing to give up on drop.
    done: bool,
}

impl fmt::Debug for ReplySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplySlot")
            .field("id", &self.id)
            .field("seq", &self.seq)
            .finish()
    }
}

impl ReplySlot {
    pub(crate) fn new(shared: Arc<LoopShared>, key: usize, id: ConnId, seq: u64) -> Self {
        ReplySlot {
            shared,
            key,
            id,
            seq,
            done: false,
        }
    }

    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Fills the slot with `reply`, without blocking: the loop writes it in
    /// its place (see [`# Ordering`](ReplySlot#ordering)).
    ///
    /// # Errors
    ///
    /// [`FillError::Full`] when the loop's command queue is full: nothing
    /// was queued, and the slot and the reply come back to try again
    /// (or drop the slot to give its place up). [`FillError::Stopped`]
    /// when the loop has exited (the connection is gone).
    pub fn send(mut self, reply: impl Into<Vec<u8>>) -> Result<(), FillError> {
        self.done = true;
        match self.shared.push_bounded(self.command(reply.into()), false) {
            Ok(()) => Ok(()),
            Err(Refused::Full(Command::Fill {
                reply: Some(reply), ..
            })) => {
                self.done = false;
                Err(FillError::Full(self, reply))
            }
            Err(_) => Err(FillError::Stopped),
        }
    }

    /// Fills the slot with `reply`, waiting while the loop's command queue
    /// is full (until the loop's next turn). On a loop thread it never
    /// waits: the reply is queued past the bound (see
    /// [`# Backpressure`](ReplySlot#backpressure)).
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] when the loop has exited (the connection is gone).
    pub fn send_wait(mut self, reply: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.done = true;
        self.shared
            .push_bounded(self.command(reply.into()), true)
            .map_err(|_| Error::Stopped)
    }

    fn command(&self, reply: Vec<u8>) -> Command {
        Command::Fill {
            key: self.key,
            id: self.id,
            seq: self.seq,
            reply: Some(reply),
        }
    }
}

impl Drop for ReplySlot {
    /// Unfilled: the place is given up, so that the replies behind it go
    /// on. This command is never refused for a full queue. After the loop
    /// has exited there is nothing to give up.
    fn drop(&mut self) {
        if !self.done {
            let _ = self.shared.push_bounded(
                Command::Fill {
                    key: self.key,
                    id: self.id,
                    seq: self.seq,
                    reply: None,
                },
                false,
            );
        }
    }
}

/// Why [`ReplySlot::send`] did not fill the slot.
#[derive(Debug)]
#[non_exhaustive]
pub enum FillError {
    /// The loop's command queue is at
    /// [`Builder::command_queue_limit`](crate::Builder::command_queue_limit):
    /// nothing was queued. The slot, still reserved, and the reply are
    /// handed back.
    Full(ReplySlot, Vec<u8>),
    /// The loop has exited: the connection is gone.
    Stopped,
}

impl fmt::Display for FillError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FillError::Full(..) => f.write_str("the loop's command queue is full"),
            FillError::Stopped => f.write_str("the server has stopped"),
        }
    }
}

impl std::error::Error for FillError {}

impl From<FillError> for Error {
    /// The error without what it handed back (a dropped slot gives its
    /// place up).
    fn from(e: FillError) -> Self {
        match e {
            FillError::Full(..) => Error::Full,
            FillError::Stopped => Error::Stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(limit: usize) -> Arc<LoopShared> {
        let poll = mio::Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), mio::Token(1)).unwrap();
        Arc::new(LoopShared::new(waker, 1).with_queue_limit(limit))
    }

    fn taken(shared: &LoopShared) -> Vec<Command> {
        let mut commands = Vec::new();
        shared.take_commands(&mut commands);
        commands
    }

    #[test]
    fn a_slot_is_sent_once_or_given_up_once() {
        let s = shared(1 << 20);
        ReplySlot::new(s.clone(), 3, ConnId(9), 0)
            .send(b"hi".to_vec())
            .unwrap();
        drop(ReplySlot::new(s.clone(), 3, ConnId(9), 1));
        let commands = taken(&s);
        assert!(matches!(
            &commands[..],
            [
                Command::Fill { seq: 0, reply: Some(r), .. },
                Command::Fill { seq: 1, reply: None, .. },
            ] if r == b"hi"
        ));
    }

    #[test]
    fn a_full_queue_hands_the_slot_and_the_reply_back() {
        let s = shared(1);
        // The first command passes alone, however large.
        ReplySlot::new(s.clone(), 0, ConnId(1), 0)
            .send(vec![0; 100])
            .unwrap();
        let Err(FillError::Full(slot, reply)) =
            ReplySlot::new(s.clone(), 0, ConnId(1), 1).send(b"x".to_vec())
        else {
            panic!("the queue is full")
        };
        assert_eq!(reply, b"x");
        assert_eq!(s.refused_full.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Giving up still goes through: it carries no bytes.
        drop(slot);
        assert_eq!(taken(&s).len(), 2);
        // The loop took the queue: room again.
        ReplySlot::new(s.clone(), 0, ConnId(1), 2)
            .send(b"y".to_vec())
            .unwrap();
    }

    #[test]
    fn send_wait_waits_for_the_loop_to_take_the_queue() {
        let s = shared(1);
        ReplySlot::new(s.clone(), 0, ConnId(1), 0)
            .send(vec![0; 10])
            .unwrap();
        let waiting = {
            let s = s.clone();
            std::thread::spawn(move || ReplySlot::new(s, 0, ConnId(1), 1).send_wait(b"z".to_vec()))
        };
        // The waiter is parked until the queue is taken.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while s.queue_waiters() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the sender never waited"
            );
            std::thread::yield_now();
        }
        assert_eq!(taken(&s).len(), 1);
        waiting.join().unwrap().unwrap();
        assert_eq!(taken(&s).len(), 1, "queued once there was room");
    }

    #[test]
    fn a_closed_loop_says_stopped() {
        let s = shared(1 << 20);
        drop(s.close());
        let slot = ReplySlot::new(s.clone(), 0, ConnId(1), 0);
        assert!(matches!(slot.send(b"x".to_vec()), Err(FillError::Stopped)));
        let slot = ReplySlot::new(s, 0, ConnId(1), 1);
        assert!(matches!(slot.send_wait(b"x".to_vec()), Err(Error::Stopped)));
    }
}
