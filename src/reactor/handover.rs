//! The hand-over, the loop's side: giving this server's listening sockets
//! to a successor process, then draining.
//!
//! The protocol, and why no client is refused or reset during it, is in
//! `listen/handover.rs` (read its picture first). Here is only its place in
//! the loop. The [`HandoverServer`] is registered once under its own token,
//! [`HANDOVER`](super::HANDOVER), which covers its control socket and the
//! successor's session; the loop calls [`HandoverServer::ready`] when that
//! token fires and when the successor's deadline passes (folded into the
//! poll timeout), and at no other time: `ready` tries an `accept` on the
//! control socket, and a syscall on every turn would tax every event of
//! the loop for a hand-over that happens once per release.
//!
//! # Draining
//!
//! When the successor confirms, every loop of this server stops accepting
//! at once (the successor accepts from the same queues), this server keeps
//! its Unix socket files (the successor serves them now), and *drains*: the
//! connections it has go on being served until their clients close them,
//! for at most the hand-over's grace period. A client in the middle of a
//! conversation does not notice the restart. When the last one is gone, or
//! at the deadline, the loop stops as at [`ServerHandle::stop`](crate::ServerHandle::stop)
//! (the connections still open are closed gracefully, within
//! [`CLOSE_GRACE`]), and returns.

use std::time::{Duration, Instant};

use super::EventLoop;
use crate::base::time::Millis;
use crate::framing::Framing;
use crate::handler::Handler;
use crate::listen::{Credentials, HandoverEvent, HandoverServer};
use crate::shared::Command;
use crate::transport::Transport;

/// How long the connections still open when a drain ends get to flush
/// their replies and close: a stop's grace period, short because the drain
/// already gave them the hand-over's whole grace.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A server's hand-over control socket and how long to drain once it has
/// served.
#[derive(Debug)]
pub(crate) struct Handover {
    pub(super) server: HandoverServer,
    /// How long the open connections are served on after the hand-over.
    grace: Duration,
}

impl Handover {
    /// `server`, registered with the loop's poll under
    /// [`HANDOVER`](super::HANDOVER); the drain after a hand-over lasts at
    /// most `grace`.
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

    /// The successor accepts on our listeners: every loop stops accepting,
    /// and drains.
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
        log::info!("handed over to {successor}");
        for (i, l) in self.pipe.server.loops.iter().enumerate() {
            if i != self.index {
                // A loop that has exited has nothing to drain.
                let _ = l.push(Command::Drain { deadline });
            }
        }
        self.begin_drain(deadline);
    }

    /// Stops accepting; the open connections are served on until they
    /// close, or until `deadline` (see `# Draining`).
    pub(super) fn begin_drain(&mut self, deadline: Instant) {
        if self.stopping.is_some() || self.draining.is_some() {
            return;
        }
        self.stop_accepting();
        log::info!(
            "draining: {} connections served on for at most {:?}",
            self.conns.len(),
            deadline.saturating_duration_since(Instant::now())
        );
        self.draining = Some(self.clock.at(deadline));
    }

    /// Ends a drain once every connection is gone or its time is up: the
    /// loop then stops, closing what is still open.
    pub(super) fn check_drain(&mut self) {
        let Some(deadline) = self.draining else {
            return;
        };
        if self.conns.is_empty() || self.clock.now() >= deadline {
            self.draining = None;
            self.begin_stop(Instant::now() + CLOSE_GRACE, None);
        }
    }
}
