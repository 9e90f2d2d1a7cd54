//! The hand-over, the loop's side: giving this server's listening sockets
//! to a successor process, then stopping as at a graceful stop.
//!
//! The protocol, and why no client is refused or reset during it, is in
//! `listen/handover.rs` (read its picture first). Here is only its place in
//! the loop. The [`HandoverServer`] is registered once under its own token,
//! [`HANDOVER`](super::HANDOVER), which covers its control socket and the
//! successor's session; the loop calls [`HandoverServer::ready`] when that
//! token fires and when the successor's deadline passes (folded into the
//! poll timeout), and at no other time: `ready` tries an `accept` on the
//! control socket, and a syscall on every turn would tax every event of
//! the loop for a hand-over that happens once in a release.
//!
//! When the successor confirms, this server stops accepting at once (every
//! loop), keeps its Unix socket files (the successor serves them now), and
//! drains: each connection finishes as at [`ServerHandle::stop`](crate::ServerHandle::stop),
//! within the hand-over's grace period. Then the loops return, as after a
//! stop.

use std::time::{Duration, Instant};

use super::EventLoop;
use crate::base::time::Millis;
use crate::framing::Framing;
use crate::handler::Handler;
use crate::listen::{Credentials, HandoverEvent, HandoverServer};
use crate::shared::Command;
use crate::transport::Transport;

/// A server's hand-over control socket and what to do once it has served.
#[derive(Debug)]
pub(crate) struct Handover {
    pub(super) server: HandoverServer,
    /// How long served connections get to finish once the successor
    /// accepts.
    grace: Duration,
}

impl Handover {
    /// `server`, registered with the loop's poll under
    /// [`HANDOVER`](super::HANDOVER); the drain after a hand-over gets
    /// `grace`.
    pub(crate) fn new(server: HandoverServer, grace: Duration) -> Self {
        Handover { server, grace }
    }
}

impl<F: Framing, H: Handler<F>, T: Transport> EventLoop<F, H, T> {
    /// The control socket or the successor's session is ready, or the
    /// successor's deadline passed: let the hand-over do what it can now
    /// (it never blocks).
    pub(super) fn handover_ready(&mut self) {
        let Some(handover) = &mut self.handover else {
            return;
        };
        if let Some(HandoverEvent::HandedOver { successor }) = handover.server.ready(Instant::now())
        {
            self.handed_over(successor);
        }
    }

    /// When the hand-over must be looked at without an event: the
    /// successor's confirmation deadline, while one is awaited.
    pub(super) fn handover_deadline(&self) -> Option<Millis> {
        let at = self.handover.as_ref()?.server.deadline()?;
        Some(self.clock.at(at))
    }

    /// The successor accepts on our listeners: stop accepting on every
    /// loop, and drain.
    fn handed_over(&mut self, successor: Credentials) {
        let Some(handover) = &self.handover else {
            return;
        };
        let deadline = Instant::now() + handover.grace;
        // The successor serves the same socket files: they outlive us.
        for listening in &mut self.listeners {
            if let Some(guard) = listening.guard.take() {
                guard.keep();
            }
        }
        log::info!(
            "handed over to {successor}: stopping, {} connections to drain within {:?}",
            self.conns.len(),
            handover.grace
        );
        for (i, l) in self.pipe.server.loops.iter().enumerate() {
            if i != self.index {
                // A loop that has exited has nothing to stop.
                let _ = l.push(Command::Stop {
                    deadline,
                    done: None,
                });
            }
        }
        self.begin_stop(deadline, None);
    }
}
