//! The accept budget: the seed library's "acceptors", as slots.
//!
//! The Go library this crate descends from ran N acceptor goroutines. In a
//! reactor there is nothing to run: an "acceptor" becomes a *slot*, a unit of
//! permission to serve one connection. A connection takes a slot before its
//! socket is registered with the poll, and gives it back when it closes, so the
//! number of connections served at once never exceeds the number of slots.
//!
//! The budget is shared by every event loop of a server (atomics, no lock on
//! the fast path), which is what keeps the count exact when several loops
//! accept at once: a slot is *reserved* with a compare-and-swap before the
//! loop commits to serving a connection.
//!
//! # Overflow
//!
//! When every slot is taken, [`Overflow`] decides, before anything is
//! registered:
//!
//! - [`Overflow::Refuse`]: accept, write the refusal message, close.
//! - [`Overflow::Grow`]: add `step` slots (never beyond `max`), then serve;
//!   at `max`, refuse. Grown slots are given back, `step` at a time, once
//!   they have gone unused for a cooldown (see `# Grown slots retire`).
//! - [`Overflow::Pause`]: stop accepting; new connections wait in the
//!   kernel's backlog and are accepted, in order, when a slot frees.
//!
//! # Paused loops
//!
//! With several loops, the slot that frees may belong to a loop other than
//! the one that paused. So a loop that pauses *parks* in a bitmask here
//! ([`Budget::park`]), and whoever releases a slot takes one parked loop out
//! of it ([`Budget::release`] returns its index) to be woken through its
//! command queue. One freed slot wakes one loop, never all of them: a burst
//! of closes wakes each parked loop at most once, and a woken loop that
//! finds nothing to accept gives its reservation back, which wakes the next
//! parked loop. No loop can stay paused while a slot is free (see
//! [`Budget::park`] for the race this closes).
//!
//! # Grown slots retire
//!
//! After a burst, the budget would otherwise stay grown for good. So the
//! budget remembers the most slots taken at once (`peak`, raised by the
//! reservation itself: one plain load per accepted connection, a locked
//! instruction only when a new peak is reached), and a loop timer calls
//! [`Budget::retire_grown`] every so often: if, for a whole
//! [`Builder::grow_cooldown`](crate::Builder::grow_cooldown), the peak left
//! at least `step` slots unused, `step` slots are given back (fewer if that
//! would go below the configured budget), and the next step waits a
//! cooldown of its own. Giving slots back only lowers the limit: a served
//! connection keeps its slot, and if the limit is reached again, the budget
//! grows again.
//!
//! # Slots are values
//!
//! A reserved slot is a [`Slot`]: a move-only token that only this module
//! can make, held by whoever the slot serves (an accept in progress, a
//! connection on its way to another loop, a served connection). Dropping it
//! is the one way to give the slot back, and it also wakes a parked loop. So a
//! slot cannot be given back twice (it is moved into the drop), nor leaked on
//! an early return or an error path (every path drops it).

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What to do with a new connection when every acceptor slot is busy.
///
/// See the [crate-level `# Overflow` section](crate#overflow) for timelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Accept the connection, write the configured refusal message (if any),
    /// and close it. The socket is never registered with the poll, so a
    /// refused client costs one `accept`, one `write` and one `close`.
    Refuse,
    /// Add `step` slots and serve the connection, up to `max` slots in all;
    /// past `max`, behave as [`Overflow::Refuse`]. Grown slots are given
    /// back, `step` at a time, once they have gone unused for
    /// [`Builder::grow_cooldown`](crate::Builder::grow_cooldown) (default
    /// 60 s), never below the configured [`acceptors`](crate::Builder::acceptors)
    /// and never by closing a served connection.
    Grow {
        /// Slots added each time the budget is exhausted (the seed used 50).
        step: usize,
        /// The ceiling: the budget never grows beyond this many slots.
        max: usize,
    },
    /// Stop accepting while every slot is busy. Connections wait in the
    /// kernel's listen backlog (size it with
    /// [`Builder::backlog`](crate::Builder::backlog)) and are accepted in
    /// arrival order as soon as a slot frees. The loop does not spin while
    /// paused: it simply stops calling `accept`.
    Pause,
}

impl Default for Overflow {
    /// [`Overflow::Refuse`], as the seed library did.
    fn default() -> Self {
        Overflow::Refuse
    }
}

impl Overflow {
    /// The seed library's "add 50 more" strategy, with a ceiling.
    pub fn grow_by_50_up_to(max: usize) -> Self {
        Overflow::Grow { step: 50, max }
    }
}

/// The budget's verdict on a connection, before or after it is accepted.
#[derive(Debug)]
pub(crate) enum Admission {
    /// A slot was reserved: serve. Dropping the [`Slot`] gives it back,
    /// also if the accept then finds nobody.
    Serve(Slot),
    /// No slot, and the strategy waits: leave the connection in the backlog.
    Pause,
    /// No slot: accept, then ask [`Budget::admit_overflow`] (grow or refuse)
    /// once every other check has said yes. Growing is decided only once a
    /// connection is really there and welcome, so a drained accept queue or
    /// a refused client never grows the budget.
    Overflow,
}

/// One slot of the budget, reserved for one connection.
///
/// Move-only, and made only by [`Budget`]: dropping it gives the slot back
/// and wakes a loop parked on the budget, if any (see `# Paused loops`).
/// Eight bytes: a connection holds `Option<Slot>`, `None` once it gave its
/// slot back early (lingering, or [`Conn::release_slot`](crate::Conn::release_slot)).
pub(crate) struct Slot {
    budget: Arc<Budget>,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let parked = self.budget.release();
        self.budget.wake_parked(parked);
    }
}

/// How the budget wakes loop `i` after unparking it: pushes a command on
/// that loop's queue; false if the loop has exited. Set once by the server.
pub(crate) type WakeLoop = Box<dyn Fn(usize) -> bool + Send + Sync>;

/// The slot counter shared by every loop of a server.
pub(crate) struct Budget {
    /// Slots in service. Grows under [`Overflow::Grow`].
    limit: AtomicUsize,
    /// The configured budget (`acceptors`, or the last `set_acceptors`):
    /// slots above it are grown ones, and retiring stops at it.
    base: AtomicUsize,
    /// Slots taken: connections being served (plus reservations in flight).
    active: AtomicUsize,
    /// The most slots taken at once since the last retire tick.
    peak: AtomicUsize,
    /// Read only when the budget is full, so the lock is off the fast path.
    overflow: Mutex<Overflow>,
    /// How many times `Grow` added slots.
    grown: AtomicU64,
    /// How many times grown slots were given back.
    retired: AtomicU64,
    /// Since when the grown slots have gone unused, for the cooldown; only
    /// the retire ticks take this lock.
    quiet_since: Mutex<Option<Instant>>,
    /// Loops paused for want of a slot, one bit per loop index (see
    /// `# Paused loops`).
    parked: Box<[AtomicU64]>,
    /// Wakes an unparked loop; set once the loops exist.
    wake: OnceLock<WakeLoop>,
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("limit", &self.limit())
            .field("active", &self.active())
            .finish_non_exhaustive()
    }
}

impl Budget {
    /// A budget of `limit` slots shared by `loops` event loops.
    pub(crate) fn new(limit: usize, overflow: Overflow, loops: usize) -> Self {
        Budget {
            limit: AtomicUsize::new(limit),
            base: AtomicUsize::new(limit),
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            overflow: Mutex::new(overflow),
            grown: AtomicU64::new(0),
            retired: AtomicU64::new(0),
            quiet_since: Mutex::new(None),
            parked: (0..loops.div_ceil(64).max(1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            wake: OnceLock::new(),
        }
    }

    /// Sets how an unparked loop is woken (once, when the loops exist).
    pub(crate) fn set_waker(&self, wake: WakeLoop) {
        let _ = self.wake.set(wake);
    }

    /// Wakes loop `next`, unparked from the budget; if it has exited, the
    /// next parked one instead, so the freed slot is never left unused.
    pub(crate) fn wake_parked(&self, mut next: Option<usize>) {
        let Some(wake) = self.wake.get() else {
            return;
        };
        while let Some(index) = next {
            if wake(index) {
                return;
            }
            next = self.unpark_one();
        }
    }

    /// Before `accept`: reserves a slot if one is free, else says what the
    /// strategy wants ([`Admission::Pause`] or [`Admission::Overflow`]).
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Admission {
        if self.reserve() {
            Admission::Serve(self.slot())
        } else if self.overflow() == Overflow::Pause {
            Admission::Pause
        } else {
            Admission::Overflow
        }
    }

    /// The token for a slot just reserved.
    fn slot(self: &Arc<Self>) -> Slot {
        Slot {
            budget: self.clone(),
        }
    }

    /// After `accept`, for a connection that met a full budget and passed
    /// every other check: grows the budget if the strategy allows and
    /// reserves a slot, or `None`: refuse.
    pub(crate) fn admit_overflow(self: &Arc<Self>) -> Option<Slot> {
        loop {
            if self.reserve() {
                return Some(self.slot()); // a slot freed meanwhile
            }
            let Overflow::Grow { step, max } = self.overflow() else {
                return None;
            };
            let limit = self.limit.load(Ordering::Acquire);
            let grown = limit.saturating_add(step.max(1)).min(max);
            if grown <= limit {
                return None; // at the ceiling
            }
            // Only one racer grows the budget; the others re-read it.
            if self
                .limit
                .compare_exchange(limit, grown, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.grown.fetch_add(1, Ordering::Relaxed);
                log::info!("accept budget grown from {limit} to {grown} slots");
            }
        }
    }

    /// Takes a slot if `active < limit`. The compare-and-swap is what keeps
    /// the count exact across loops: two loops can both see a free slot, only
    /// one of them gets it.
    fn reserve(&self) -> bool {
        // SeqCst on this load and on the `parked` operations: see `park`.
        let mut active = self.active.load(Ordering::SeqCst);
        loop {
            if active >= self.limit.load(Ordering::Acquire) {
                return false;
            }
            match self.active.compare_exchange_weak(
                active,
                active + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    // A plain load, and a locked write only at a new peak.
                    if active + 1 > self.peak.load(Ordering::Relaxed) {
                        self.peak.fetch_max(active + 1, Ordering::Relaxed);
                    }
                    return true;
                }
                Err(now) => active = now,
            }
        }
    }

    /// True when a slot is free now.
    pub(crate) fn has_room(&self) -> bool {
        self.active.load(Ordering::Relaxed) < self.limit.load(Ordering::Relaxed)
    }

    /// After [`try_acquire`](Budget::try_acquire) said [`Admission::Pause`]:
    /// records loop `index` as parked, so that the next [`release`](Budget::release)
    /// names it for waking, then tries once more.
    ///
    /// The second try closes a lost-wake-up race: a slot released between the
    /// failed `try_acquire` and the parking would otherwise find no parked
    /// loop to wake, and this loop would sleep with a slot free. Parking, then
    /// looking (here), against releasing, then looking (in `release`), with
    /// sequentially consistent operations on both sides: at least one of the
    /// two sees the other.
    ///
    /// Returns [`Admission::Serve`] (a slot is reserved; the loop may stay
    /// parked, which at worst costs it one spurious wake-up) or
    /// [`Admission::Pause`].
    pub(crate) fn park(self: &Arc<Self>, index: usize) -> Admission {
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        self.parked[word].fetch_or(bit, Ordering::SeqCst);
        // The second look. `Overflow` here means the strategy changed
        // meanwhile: accept and let it decide.
        self.try_acquire()
    }

    /// Gives a slot back (only [`Slot`]'s drop calls this). Returns the
    /// index of a parked loop, now unparked, that must be woken to use the
    /// slot, if any loop was parked.
    #[must_use = "a parked loop must be woken, or it sleeps with a slot free"]
    fn release(&self) -> Option<usize> {
        let before = self.active.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(before > 0, "slot released twice");
        self.unpark_one()
    }

    /// Takes one loop out of the parked set (the lowest index), if any.
    pub(crate) fn unpark_one(&self) -> Option<usize> {
        for (w, word) in self.parked.iter().enumerate() {
            // A plain load first: the common case (no loop parked) costs no
            // locked instruction.
            let mut bits = word.load(Ordering::SeqCst);
            while bits != 0 {
                let bit = bits & bits.wrapping_neg();
                match word.compare_exchange_weak(
                    bits,
                    bits & !bit,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => return Some(w * 64 + bit.trailing_zeros() as usize),
                    Err(now) => bits = now,
                }
            }
        }
        None
    }

    /// Takes every loop out of the parked set: the budget or the strategy
    /// changed, and each must look again.
    pub(crate) fn unpark_all(&self) {
        for word in self.parked.iter() {
            word.store(0, Ordering::SeqCst);
        }
    }

    /// Sets the number of slots, which becomes the configured budget (grown
    /// slots, if any, are forgotten). Lowering it never touches served
    /// connections: they keep their slots until they close, and new ones are
    /// admitted only once `active` is below the new limit.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.base.store(limit, Ordering::Release);
        self.limit.store(limit, Ordering::Release);
    }

    /// True while the budget is above its configured size.
    pub(crate) fn is_grown(&self) -> bool {
        self.limit() > self.base.load(Ordering::Relaxed)
    }

    /// One tick of the retiring of grown slots, at `now` (see `# Grown slots
    /// retire`): if the slots taken since the last tick always left a step's
    /// worth unused, and have for `cooldown`, that many are given back.
    /// Returns true while grown slots remain (tick again), false once the
    /// budget is back to its configured size.
    ///
    /// The step is `Grow`'s; if the strategy has changed since the budget
    /// grew, every grown slot goes in one step.
    pub(crate) fn retire_grown(&self, now: Instant, cooldown: Duration) -> bool {
        let mut quiet_since = self.quiet_since.lock().unwrap_or_else(|e| e.into_inner());
        // The most taken at any moment since the last tick; the next window
        // starts from what is taken now.
        let taken = self.active.load(Ordering::SeqCst);
        let peak = self.peak.swap(taken, Ordering::Relaxed).max(taken);
        let (limit, base) = (self.limit(), self.base.load(Ordering::Acquire));
        if limit <= base {
            *quiet_since = None;
            return false;
        }
        let step = match self.overflow() {
            Overflow::Grow { step, .. } => step.max(1),
            _ => limit - base,
        };
        let give = step.min(limit - base);
        if limit.saturating_sub(peak) < give {
            // Those slots were needed in this window: the cooldown restarts.
            *quiet_since = None;
            return true;
        }
        let since = *quiet_since.get_or_insert(now);
        if now.saturating_duration_since(since) < cooldown {
            return true;
        }
        // Unless the limit moved meanwhile (grown again, or set by hand):
        // then the next tick looks again.
        if self
            .limit
            .compare_exchange(limit, limit - give, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.retired.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "accept budget: {give} grown slots unused for {cooldown:?}, given back ({limit} to {})",
                limit - give
            );
            // The next step needs a cooldown of its own.
            *quiet_since = Some(now);
        }
        self.is_grown()
    }

    pub(crate) fn set_overflow(&self, overflow: Overflow) {
        *self.overflow.lock().unwrap_or_else(|e| e.into_inner()) = overflow;
    }

    pub(crate) fn overflow(&self) -> Overflow {
        *self.overflow.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub(crate) fn grown(&self) -> u64 {
        self.grown.load(Ordering::Relaxed)
    }

    pub(crate) fn retired(&self) -> u64 {
        self.retired.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A budget whose wake-ups are recorded instead of sent to a loop.
    fn budget(
        limit: usize,
        overflow: Overflow,
        loops: usize,
    ) -> (Arc<Budget>, Arc<Mutex<Vec<usize>>>) {
        let b = Arc::new(Budget::new(limit, overflow, loops));
        let woken = Arc::new(Mutex::new(Vec::new()));
        let w = woken.clone();
        b.set_waker(Box::new(move |i| {
            w.lock().unwrap().push(i);
            true
        }));
        (b, woken)
    }

    /// What the loop does for one connection that is really there and
    /// passed every other check.
    fn admit(b: &Arc<Budget>) -> Option<Slot> {
        match b.try_acquire() {
            Admission::Serve(slot) => Some(slot),
            Admission::Overflow => b.admit_overflow(),
            Admission::Pause => None,
        }
    }

    #[test]
    fn refuse_serves_exactly_the_limit() {
        let (b, _) = budget(2, Overflow::Refuse, 1);
        let first = admit(&b).expect("served");
        let _second = admit(&b).expect("served");
        assert!(admit(&b).is_none(), "refused");
        drop(first);
        assert!(admit(&b).is_some(), "a freed slot serves again");
    }

    #[test]
    fn a_slot_is_given_back_exactly_once_by_dropping_it() {
        let (b, _) = budget(3, Overflow::Refuse, 1);
        let slots: Vec<Slot> = (0..3).map(|_| admit(&b).unwrap()).collect();
        assert_eq!(b.active(), 3);
        drop(slots);
        assert_eq!(b.active(), 0, "each drop gave one back, no more");
    }

    #[test]
    fn pause_says_pause_when_full() {
        let (b, _) = budget(1, Overflow::Pause, 1);
        let slot = admit(&b).unwrap();
        assert!(matches!(b.try_acquire(), Admission::Pause));
        assert!(
            matches!(b.try_acquire(), Admission::Pause),
            "pausing takes nothing"
        );
        assert_eq!(b.active(), 1);
        drop(slot);
        assert!(matches!(b.try_acquire(), Admission::Serve(_)));
    }

    #[test]
    fn a_full_budget_does_not_grow_before_a_connection_is_there() {
        let (b, _) = budget(1, Overflow::Grow { step: 5, max: 10 }, 1);
        let _held = admit(&b).unwrap();
        assert!(matches!(b.try_acquire(), Admission::Overflow));
        assert_eq!(b.limit(), 1, "asking is free");
        assert!(b.admit_overflow().is_some());
        assert_eq!(b.limit(), 6);
    }

    #[test]
    fn grow_adds_exactly_step_up_to_max_then_refuses() {
        let (b, _) = budget(2, Overflow::Grow { step: 3, max: 6 }, 1);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(admit(&b).unwrap());
        }
        assert_eq!(b.limit(), 5, "grew by exactly one step");
        for _ in 0..3 {
            held.push(admit(&b).unwrap());
        }
        assert_eq!(b.limit(), 6, "the last step is cut at max");
        assert!(admit(&b).is_none());
        assert_eq!(b.grown(), 2);
    }

    mod retiring {
        use super::*;

        const COOL: Duration = Duration::from_secs(60);

        /// Grows a budget of 2 (step 3, max 8) to 8 with 8 connections.
        fn grown_to_8() -> (Arc<Budget>, Vec<Slot>) {
            let (b, _) = budget(2, Overflow::Grow { step: 3, max: 8 }, 1);
            let held: Vec<Slot> = (0..8).map(|_| admit(&b).unwrap()).collect();
            assert_eq!(b.limit(), 8);
            (b, held)
        }

        #[test]
        fn grown_slots_go_back_a_step_per_cooldown_down_to_the_base() {
            let (b, mut held) = grown_to_8();
            let t0 = Instant::now();
            let at = |s: u64| t0 + Duration::from_secs(s);
            held.truncate(1);
            assert!(b.retire_grown(at(0), COOL), "the window with 8 taken");
            assert!(b.retire_grown(at(1), COOL), "quiet from now on");
            assert!(b.retire_grown(at(60), COOL));
            assert_eq!(b.limit(), 8, "not before a whole cooldown");
            assert!(b.retire_grown(at(61), COOL));
            assert_eq!(b.limit(), 5, "one step");
            assert!(b.retire_grown(at(100), COOL));
            assert_eq!(b.limit(), 5, "the next step waits a cooldown of its own");
            assert!(!b.retire_grown(at(121), COOL), "back to the base");
            assert_eq!(b.limit(), 2, "the last step is cut at the base");
            assert!(!b.retire_grown(at(1000), COOL));
            assert_eq!(b.limit(), 2, "never below the base");
            assert_eq!(b.retired(), 2);
            assert_eq!(b.active(), 1, "the served connection kept its slot");
        }

        #[test]
        fn slots_in_use_are_never_given_back() {
            let (b, mut held) = grown_to_8();
            let t0 = Instant::now();
            let at = |s: u64| t0 + Duration::from_secs(s);
            // Six in use: only two unused, less than a step.
            held.truncate(6);
            for s in (0..600).step_by(30) {
                assert!(b.retire_grown(at(s), COOL));
            }
            assert_eq!(b.limit(), 8);
            assert_eq!(b.retired(), 0);
        }

        #[test]
        fn a_burst_between_ticks_restarts_the_cooldown() {
            let (b, mut held) = grown_to_8();
            let t0 = Instant::now();
            let at = |s: u64| t0 + Duration::from_secs(s);
            held.truncate(1);
            b.retire_grown(at(0), COOL);
            b.retire_grown(at(1), COOL);
            // A burst comes and goes between two ticks: the peak saw it.
            let burst: Vec<Slot> = (0..6).map(|_| admit(&b).unwrap()).collect();
            drop(burst);
            assert!(b.retire_grown(at(59), COOL));
            assert!(b.retire_grown(at(61), COOL));
            assert_eq!(b.limit(), 8, "the burst needed those slots");
            assert!(b.retire_grown(at(120), COOL));
            assert_eq!(b.limit(), 8);
            assert!(b.retire_grown(at(121), COOL));
            assert_eq!(b.limit(), 5, "a cooldown after the burst");
        }

        #[test]
        fn set_acceptors_makes_a_new_base() {
            let (b, held) = grown_to_8();
            drop(held);
            b.set_limit(4);
            assert!(!b.is_grown());
            assert!(!b.retire_grown(Instant::now(), COOL));
            assert_eq!(b.limit(), 4);
        }

        #[test]
        fn without_grow_every_grown_slot_goes_at_once() {
            let (b, held) = grown_to_8();
            drop(held);
            b.set_overflow(Overflow::Refuse);
            let t0 = Instant::now();
            b.retire_grown(t0, COOL); // the window in which 8 were taken
            b.retire_grown(t0, COOL); // quiet from now on
            assert!(!b.retire_grown(t0 + COOL, COOL));
            assert_eq!(b.limit(), 2);
        }

        #[test]
        fn a_regrown_budget_retires_again() {
            let (b, mut held) = grown_to_8();
            let t0 = Instant::now();
            held.clear();
            b.retire_grown(t0, COOL);
            b.retire_grown(t0, COOL);
            b.retire_grown(t0 + COOL, COOL);
            assert_eq!(b.limit(), 5);
            // Six come: the budget grows back, capped at max.
            let again: Vec<Slot> = (0..6).map(|_| admit(&b).unwrap()).collect();
            assert_eq!(b.limit(), 8);
            drop(again);
            let later = t0 + 3 * COOL;
            b.retire_grown(later, COOL);
            b.retire_grown(later, COOL);
            b.retire_grown(later + COOL, COOL);
            assert_eq!(b.limit(), 5);
        }
    }

    #[test]
    fn lowering_the_limit_keeps_served_connections() {
        let (b, _) = budget(3, Overflow::Refuse, 1);
        let mut held: Vec<Slot> = (0..3).map(|_| admit(&b).unwrap()).collect();
        b.set_limit(1);
        assert_eq!(b.active(), 3);
        assert!(admit(&b).is_none());
        held.pop();
        held.pop();
        assert!(admit(&b).is_none(), "still at the new limit");
        held.pop();
        assert!(admit(&b).is_some());
    }

    #[test]
    fn the_count_is_exact_under_contention() {
        let (b, _) = budget(100, Overflow::Grow { step: 7, max: 300 }, 4);
        let served: Vec<Vec<Slot>> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1000).filter_map(|_| admit(&b)).collect())
            })
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(served.iter().map(Vec::len).sum::<usize>(), 300);
        assert_eq!(b.active(), 300);
        assert_eq!(b.limit(), 300);
        drop(served);
        assert_eq!(b.active(), 0);
    }

    #[test]
    fn a_freed_slot_wakes_one_parked_loop_at_a_time() {
        let (b, woken) = budget(1, Overflow::Pause, 70);
        let slot = admit(&b).unwrap();
        drop(slot);
        assert!(
            woken.lock().unwrap().is_empty(),
            "nobody parked: nobody to wake"
        );
        let slot = admit(&b).unwrap();
        for loop_index in [3, 65, 0] {
            assert!(matches!(b.try_acquire(), Admission::Pause));
            assert!(matches!(b.park(loop_index), Admission::Pause));
        }
        drop(slot);
        assert_eq!(*woken.lock().unwrap(), [0], "one freed slot wakes one loop");
        let Admission::Serve(slot) = b.park(0) else {
            panic!("the woken loop takes the slot");
        };
        drop(slot);
        assert_eq!(
            *woken.lock().unwrap(),
            [0, 0],
            "still parked: woken again, once"
        );
        assert_eq!(b.unpark_one(), Some(3));
        assert_eq!(
            b.unpark_one(),
            Some(65),
            "loops past 64 have their own word"
        );
        assert_eq!(b.unpark_one(), None);
    }

    #[test]
    fn a_loop_that_has_exited_passes_the_wake_on() {
        let b = Arc::new(Budget::new(1, Overflow::Pause, 3));
        let woken = Arc::new(Mutex::new(Vec::new()));
        let w = woken.clone();
        // Loop 1 has exited: waking it fails.
        b.set_waker(Box::new(move |i| {
            w.lock().unwrap().push(i);
            i != 1
        }));
        let slot = admit(&b).unwrap();
        for i in [1, 2] {
            assert!(matches!(b.park(i), Admission::Pause));
        }
        drop(slot);
        assert_eq!(*woken.lock().unwrap(), [1, 2]);
    }

    #[test]
    fn parking_after_a_release_finds_the_free_slot() {
        // The race `park` closes: the slot frees after the loop saw the
        // budget full but before it parked. Nobody is woken, so parking
        // itself must notice.
        let (b, woken) = budget(1, Overflow::Pause, 2);
        let slot = admit(&b).unwrap();
        assert!(matches!(b.try_acquire(), Admission::Pause));
        drop(slot);
        assert!(woken.lock().unwrap().is_empty());
        assert!(matches!(b.park(1), Admission::Serve(_)));
    }

    #[test]
    fn no_loop_sleeps_with_a_slot_free_under_contention() {
        // Two loops pause and park while two slots are given back; every
        // wake-up makes the woken loop look again. In the end, either no
        // slot is free or no loop is parked.
        for _ in 0..200 {
            let b = Arc::new(Budget::new(2, Overflow::Pause, 4));
            let (tx, rx) = std::sync::mpsc::channel::<usize>();
            let tx = Mutex::new(tx);
            b.set_waker(Box::new(move |i| tx.lock().unwrap().send(i).is_ok()));
            let held: Vec<Slot> = (0..2).map(|_| admit(&b).unwrap()).collect();
            let mut kept = Vec::new();
            std::thread::scope(|s| {
                let mut waiting = Vec::new();
                for i in 0..2 {
                    let b = &b;
                    waiting.push(s.spawn(move || match b.try_acquire() {
                        Admission::Pause => match b.park(i) {
                            Admission::Serve(slot) => Some(slot),
                            _ => None,
                        },
                        Admission::Serve(slot) => Some(slot),
                        Admission::Overflow => None,
                    }));
                }
                for slot in held {
                    s.spawn(move || drop(slot));
                }
                for w in waiting {
                    kept.extend(w.join().unwrap());
                }
            });
            // The woken loops look again.
            while let Ok(i) = rx.try_recv() {
                if let Admission::Serve(slot) = b.park(i) {
                    kept.push(slot);
                }
            }
            let free = b.active() < b.limit();
            let parked = b.parked.iter().any(|w| w.load(Ordering::SeqCst) != 0);
            assert!(!(free && parked), "a loop is parked while a slot is free");
        }
    }
}
