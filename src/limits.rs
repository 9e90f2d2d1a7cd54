//! Abuse limits decided at accept, before a socket is registered: a cap on
//! connections per source address, and a token bucket on the accept rate.
//!
//! Both are off by default and cost nothing then. When on, they are shared by
//! every loop of a server (one lock each, taken once per accepted connection,
//! never per line), so that a limit means the same with one loop or many.
//!
//! A connection's place under the per-address cap is a value, [`IpPlace`]:
//! dropping it is the one way to give the place back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::base::time::Millis;

/// At most `cap` connections at once from one IP address, so that one
/// address cannot take the whole accept budget.
#[derive(Debug)]
pub(crate) struct PerIpCap {
    cap: u32,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

impl PerIpCap {
    pub(crate) fn new(cap: u32) -> Self {
        PerIpCap {
            cap,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more connection from `ip`, unless it is at the cap; the
    /// place is given back when the returned token is dropped.
    pub(crate) fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<IpPlace> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(IpPlace {
            cap: self.clone(),
            ip,
        })
    }

    /// Counts one connection from `ip` less; forgets addresses at zero, so
    /// the map holds only addresses with open connections.
    fn give_back(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// One connection's place under the per-address cap. Move-only; dropping
/// it gives the place back, so it cannot be given back twice or forgotten.
#[derive(Debug)]
pub(crate) struct IpPlace {
    cap: Arc<PerIpCap>,
    ip: IpAddr,
}

impl Drop for IpPlace {
    fn drop(&mut self) {
        self.cap.give_back(self.ip);
    }
}

/// The TLS handshakes in progress on one loop, bounded by
/// [`Builder::max_handshakes`](crate::Builder::max_handshakes): a flood of
/// handshakes (or of clients that never send one) must not take the loop's
/// CPU or every slot. The loop that serves the connections takes the places;
/// any loop may read the count to decide whether to admit one more.
#[derive(Debug)]
pub(crate) struct Handshakes {
    count: AtomicUsize,
    max: usize,
}

impl Handshakes {
    pub(crate) fn new(max: usize) -> Self {
        Handshakes {
            count: AtomicUsize::new(0),
            max,
        }
    }

    /// Handshakes in progress now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True when one more handshake would pass the cap.
    pub(crate) fn is_full(&self) -> bool {
        self.count() >= self.max
    }

    /// A place for one handshake, given back when the token is dropped
    /// (the handshake finished, failed, or its connection closed).
    pub(crate) fn take(self: &Arc<Self>) -> HandshakePlace {
        self.count.fetch_add(1, Ordering::Relaxed);
        HandshakePlace(self.clone())
    }
}

/// One handshake's place under [`Handshakes`]' cap. Move-only; dropping it
/// gives the place back.
#[derive(Debug)]
pub(crate) struct HandshakePlace(Arc<Handshakes>);

impl Drop for HandshakePlace {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One TLS handshake in progress, as the loop sees it when every place is
/// taken and it must give one up (see [`handshake_to_give_up`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stalled {
    /// The client's address.
    pub(crate) ip: IpAddr,
    /// When its handshake last received bytes (or it was accepted, if none
    /// came yet), on the loop's clock.
    pub(crate) since: Millis,
    /// Handshake bytes received so far.
    pub(crate) progress: u32,
    /// Its connection's slab key.
    pub(crate) key: usize,
}

/// The handshake to close so that a new connection gets a place: of the
/// address holding the most handshakes, the one that has made the least
/// progress for the longest (stalled since the earliest time; of those, the
/// one that received the fewest bytes). `counts` is scratch space, left
/// empty (its allocation is kept for the next time).
///
/// The address comes first so that one client cannot capture the cap, even
/// one that trickles bytes to keep its handshakes looking alive: while it
/// holds more handshakes than anyone else, it is its own handshakes that
/// make room, whatever the newcomer. Among clients holding one each (many
/// addresses), the stalest goes: a client that keeps its handshake moving
/// finishes in a few round trips, long before it could be the stalest of a
/// cap's worth.
pub(crate) fn handshake_to_give_up(
    handshakes: &[Stalled],
    counts: &mut HashMap<IpAddr, u32>,
) -> Option<usize> {
    for h in handshakes {
        *counts.entry(h.ip).or_insert(0) += 1;
    }
    let chosen = handshakes
        .iter()
        .min_by_key(|h| (std::cmp::Reverse(counts[&h.ip]), h.since, h.progress))
        .map(|h| h.key);
    counts.clear();
    chosen
}

/// A token bucket: `rate` connections per second on average, bursts of up
/// to `rate` (one second's worth).
#[derive(Debug)]
pub(crate) struct AcceptRate {
    rate: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    filled_at: Instant,
}

impl AcceptRate {
    pub(crate) fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        AcceptRate {
            rate,
            bucket: Mutex::new(Bucket {
                tokens: rate,
                filled_at: Instant::now(),
            }),
        }
    }

    /// Takes a token, or says how long until the next one.
    pub(crate) fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(b.filled_at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.rate);
        b.filled_at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }

    /// Whether a token is there now, without taking it; else how long
    /// until one is. Asked before `accept` (under Pause, clients then wait
    /// in the backlog); the token is taken only once every check said yes.
    pub(crate) fn peek(&self, now: Instant) -> Result<(), Duration> {
        let b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(b.filled_at).as_secs_f64();
        let tokens = (b.tokens + elapsed * self.rate).min(self.rate);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_ip_cap_counts_per_address() {
        let cap = Arc::new(PerIpCap::new(2));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        let a1 = cap.try_take(a).unwrap();
        let a2 = cap.try_take(a).unwrap();
        assert!(cap.try_take(a).is_none(), "a is at the cap");
        let b1 = cap.try_take(b).expect("b is not");
        drop(a1);
        let a3 = cap.try_take(a).expect("a place was given back");
        drop((a2, a3, b1));
        assert!(cap.counts.lock().unwrap().is_empty(), "no leftovers");
    }

    #[test]
    fn handshake_places_are_counted_while_held() {
        let h = Arc::new(Handshakes::new(2));
        let a = h.take();
        assert!(!h.is_full());
        let b = h.take();
        assert!(h.is_full());
        drop(a);
        assert_eq!(h.count(), 1);
        drop(b);
        assert_eq!(h.count(), 0);
    }

    mod giving_up_a_handshake {
        use super::*;

        fn h(ip: &str, since: Millis, progress: u32, key: usize) -> Stalled {
            Stalled {
                ip: ip.parse().unwrap(),
                since,
                progress,
                key,
            }
        }

        fn choose(all: &[Stalled]) -> Option<usize> {
            let mut counts = HashMap::new();
            let chosen = handshake_to_give_up(all, &mut counts);
            assert!(counts.is_empty(), "the scratch map goes back empty");
            chosen
        }

        #[test]
        fn the_one_stalled_longest_goes() {
            let all = [h("10.0.0.1", 30, 300, 1), h("10.0.0.2", 10, 500, 2)];
            assert_eq!(choose(&all), Some(2));
        }

        #[test]
        fn stalled_as_long_the_one_with_fewer_bytes_goes() {
            let all = [h("10.0.0.1", 10, 300, 1), h("10.0.0.2", 10, 0, 2)];
            assert_eq!(choose(&all), Some(2));
        }

        #[test]
        fn the_address_holding_most_gives_one_up_first() {
            // 10.0.0.9 keeps its handshakes fresher than a lone client's,
            // yet it is the one that makes room.
            let all = [
                h("10.0.0.1", 5, 300, 1),
                h("10.0.0.9", 40, 20, 2),
                h("10.0.0.9", 30, 20, 3),
                h("10.0.0.9", 50, 20, 4),
            ];
            assert_eq!(choose(&all), Some(3), "its stalest");
        }

        #[test]
        fn nothing_to_give_up() {
            assert_eq!(choose(&[]), None);
        }
    }

    #[test]
    fn peeking_takes_no_token() {
        let r = AcceptRate::new(1);
        let t0 = Instant::now();
        assert_eq!(r.peek(t0), Ok(()));
        assert_eq!(r.peek(t0), Ok(()), "still there");
        assert_eq!(r.try_take(t0), Ok(()));
        assert!(r.peek(t0).is_err());
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let r = AcceptRate::new(10);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(r.try_take(t0), Ok(()));
        }
        let wait = r.try_take(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        assert_eq!(r.try_take(t0 + Duration::from_millis(100)), Ok(()));
        assert!(r.try_take(t0 + Duration::from_millis(100)).is_err());
        // A long quiet spell refills one second's worth, not more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..10 {
            assert_eq!(r.try_take(later), Ok(()));
        }
        assert!(r.try_take(later).is_err());
    }
}
