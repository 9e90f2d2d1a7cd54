//! Abuse limits decided at accept, before a socket is registered: a cap on
//! connections per source address, and a token bucket on the accept rate.
//!
//! Both are off by default and cost nothing then. When on, they are shared by
//! every loop of a server (one lock each, taken once per accepted connection,
//! never per line), so that a limit means the same with one loop or many.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

    /// Counts one more connection from `ip`, unless it is at the cap.
    pub(crate) fn try_take(&self, ip: IpAddr) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.cap {
            return false;
        }
        *n += 1;
        true
    }

    /// Counts one connection from `ip` less; forgets addresses at zero, so
    /// the map holds only addresses with open connections.
    pub(crate) fn give_back(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
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

    /// Returns a token that was taken but not used.
    pub(crate) fn give_back(&self) {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.tokens = (b.tokens + 1.0).min(self.rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_ip_cap_counts_per_address() {
        let cap = PerIpCap::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        assert!(cap.try_take(a));
        assert!(cap.try_take(a));
        assert!(!cap.try_take(a), "a is at the cap");
        assert!(cap.try_take(b), "b is not");
        cap.give_back(a);
        assert!(cap.try_take(a));
        cap.give_back(a);
        cap.give_back(a);
        cap.give_back(b);
        assert!(cap.counts.lock().unwrap().is_empty(), "no leftovers");
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
