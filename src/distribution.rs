//! Several event loops behind one listener: how new connections reach the
//! loops ([`Distribution`]). The accepting side is `reactor/distribute.rs`.
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
