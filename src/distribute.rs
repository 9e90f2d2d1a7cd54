//! Several event loops behind one listener: how new connections reach the
//! loops ([`Distribution`]), and the reservation a handed-off connection
//! carries on its way.
//!
//! # The choice
//!
//! Three designs are implemented, measured (the README's "Several loops"
//! section has the numbers and the command) and selectable:
//!
//! - **One accepting loop handing sockets to the others** ([`Distribution::Handoff`],
//!   the default). Loop 0 owns the listener, reserves the slot, accepts, and
//!   gives the socket to the loop serving the fewest connections, through that
//!   loop's command queue and waker (one `eventfd` write; none when loop 0
//!   keeps it). One accept queue, so Pause serves in arrival order as with one
//!   loop; exactly one loop woken per connection; the spread follows the load
//!   (measured: 200/200 and 100/100/100/100 long connections, every run),
//!   which matters for the long-lived connections of a line protocol; an
//!   adopted listener works. The price: one hop per new connection (measured
//!   +5-10 µs at the median on a loaded 2-core machine, more at p99 when the
//!   cores are oversubscribed), and loop 0 does every `accept`, so a handler
//!   that blocks loop 0 delays new connections for all loops.
//! - **`SO_REUSEPORT`, one listener per loop** ([`Distribution::ReusePort`]).
//!   No hop and no herd: the cheapest per new connection (measured: as one
//!   loop). The kernel spreads by a hash of addresses and ports, not by load
//!   (measured: within about ±10%). Each listener has its own accept queue:
//!   under Pause, the loop woken by a freed slot serves the oldest client *of
//!   its queue*, not of the server; a loop that finds its queue empty passes
//!   the wake on, so nobody is stranded. Closing one listener resets the
//!   clients queued on it, and an adopted listener cannot be split.
//! - **One listener registered in every loop's poll** ([`Distribution::Shared`]).
//!   One accept queue, in order. But mio does not expose `EPOLLEXCLUSIVE`:
//!   every new connection wakes *every* loop, and all but one find the queue
//!   empty (the thundering herd). Who wins is up to the scheduler, not the
//!   load (measured: 384/16 and 11/1/0/388 long connections).
//!
//! # Reservations in flight
//!
//! A handed-off socket travels with its budget slot: a [`Reservation`] that
//! gives the slot back if it is dropped unused (the target loop stopped, or
//! exited, before adopting it), so a slot is never lost on the way.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::handle::ServerShared;

/// How the loops of a server share its listener; irrelevant with one loop.
///
/// | | spread | per new connection | under [`Overflow::Pause`](crate::Overflow::Pause) |
/// |---|---|---|---|
/// | [`Handoff`](Distribution::Handoff) (default) | exact, least connections | one hop to the serving loop | one queue: in arrival order |
/// | [`ReusePort`](Distribution::ReusePort) | by hash, about ±10% | none | a queue per loop: order per loop only |
/// | [`Shared`](Distribution::Shared) | up to the scheduler, often lopsided | wakes every loop | one queue: in arrival order |
///
/// Under all three, the budget is exact and no client waits in a queue that
/// nobody reads: a freed slot wakes a paused loop, and a woken loop with
/// nobody waiting passes the wake on. The README's "Several loops" section
/// has the measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Distribution {
    /// Loop 0 accepts every connection and hands each to the loop with the
    /// fewest connections (loop 0 included; ties go round-robin).
    #[default]
    Handoff,
    /// Every loop polls the one listener and accepts for itself. Each new
    /// connection wakes every loop (no `EPOLLEXCLUSIVE` in mio).
    Shared,
    /// One listening socket per loop on the same address (`SO_REUSEPORT`);
    /// the kernel spreads connections over them by a hash of addresses and
    /// ports. Only with [`Builder::bind`](crate::Builder::bind): an adopted
    /// listener cannot be split.
    ///
    /// Beware: binding a fixed port that another `SO_REUSEPORT` socket of
    /// the same user already holds (say, an old instance still running)
    /// does not fail: the two share the connections.
    ReusePort,
}

/// The accepting loop's choice of a loop for each new connection.
#[derive(Debug)]
pub(crate) struct Distributor {
    distribution: Distribution,
    /// The loop this distributor runs on.
    me: usize,
    /// Where the next scan for the least-loaded loop starts, so that ties
    /// (every loop idle, say) spread round-robin instead of piling on loop 0.
    cursor: usize,
}

impl Distributor {
    pub(crate) fn new(distribution: Distribution, me: usize) -> Self {
        Distributor {
            distribution,
            me,
            cursor: me,
        }
    }

    /// The loop that will serve the next connection: this one, or the least
    /// loaded of all. Counts the connection against that loop at once, so a
    /// burst of accepts spreads even before any loop has adopted its share.
    pub(crate) fn pick(&mut self, server: &ServerShared) -> usize {
        let loops = &server.loops;
        let target = match self.distribution {
            _ if loops.len() == 1 => self.me,
            Distribution::Shared | Distribution::ReusePort => self.me,
            Distribution::Handoff => {
                let n = loops.len();
                let start = self.cursor;
                self.cursor = (self.cursor + 1) % n;
                (0..n)
                    .map(|k| (start + k) % n)
                    .min_by_key(|&i| loops[i].open.load(Ordering::Relaxed))
                    .unwrap_or(self.me)
            }
        };
        loops[target].open.fetch_add(1, Ordering::Relaxed);
        target
    }
}

/// A budget slot reserved for a connection on its way to loop `target`.
/// Dropped unused, it gives the slot back (and wakes a paused loop).
#[derive(Debug)]
pub(crate) struct Reservation {
    server: Arc<ServerShared>,
    target: usize,
    /// The client's address, counted against its per-address cap.
    peer: SocketAddr,
    armed: bool,
}

impl Reservation {
    /// Wraps a slot already reserved and already counted on `target` (by
    /// [`Distributor::pick`]), and the per-address count of `peer`.
    pub(crate) fn new(server: Arc<ServerShared>, target: usize, peer: SocketAddr) -> Self {
        Reservation {
            server,
            target,
            peer,
            armed: true,
        }
    }

    /// The target loop is gone: the connection, and its slot, are served by
    /// loop `to` instead.
    pub(crate) fn move_to(mut self, to: usize) {
        let loops = &self.server.loops;
        loops[self.target].open.fetch_sub(1, Ordering::Relaxed);
        loops[to].open.fetch_add(1, Ordering::Relaxed);
        self.armed = false;
    }

    /// The connection is served: its slot now belongs to the connection,
    /// which gives it back when it closes.
    pub(crate) fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.armed {
            let loops = &self.server.loops;
            loops[self.target].open.fetch_sub(1, Ordering::Relaxed);
            self.server.give_back_admission(self.peer);
        }
    }
}
