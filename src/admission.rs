//! Admission: the one decision on every new connection, made before the
//! socket is registered and before anything is counted.
//!
//! # The order
//!
//! Before `accept` ([`Gate::before_accept`]): only what can leave a client
//! waiting in the kernel's backlog is asked here, since nothing is known of
//! the client yet: under [`Overflow::Pause`](crate::Overflow::Pause), a full
//! budget or an empty rate bucket means *do not accept*. Otherwise a free
//! slot is reserved now (a compare-and-swap on the shared budget), so that
//! with several loops the count stays exact.
//!
//! After `accept` ([`Gate::decide`]), in this order, first "no" wins:
//!
//! 1. the policies keyed by the client's address, unless a PROXY header
//!    will name the client (then they wait for it: see below):
//!    1. the address filter ([`Builder::allow`](crate::Builder::allow) /
//!       [`deny`](crate::Builder::deny));
//!    2. the per-address cap ([`Builder::max_per_ip`](crate::Builder::max_per_ip));
//!
//!    These for a TCP client only: a client on a Unix socket has no IP
//!    address, so neither applies to it (unless a PROXY header names one),
//!    and the decision is told so with `None` rather than a made-up
//!    address.
//! 2. the accept rate ([`Builder::accept_rate`](crate::Builder::accept_rate));
//! 3. the budget: the slot reserved before `accept`, or, when there was
//!    none, the overflow strategy (grow, or refuse).
//!
//! After the PROXY header ([`Gate::after_header`]), with the PROXY protocol
//! on: the policies keyed by address (1.1, then 1.2), asked of the client
//! the header names. At accept the socket's peer is the load balancer, so
//! asking them there would count the balancer, and every client behind it
//! would share one address's place. Any new policy keyed by address belongs
//! in this step too. A `LOCAL` or `UNKNOWN` header (a health check) names
//! nobody: the connection keeps the balancer's address, and is counted
//! under it.
//!
//! The price of waiting: the slot (and the rate's token) were taken at
//! accept, for a connection that this step may still refuse. It gives its
//! slot back as it closes (at once, or once the refusal message is out),
//! so it keeps nobody out for longer than its header takes; but under
//! [`Overflow::Grow`](crate::Overflow::Grow) its arrival may have grown the
//! budget, as any client's whose header is still on its way.
//!
//! The TLS handshake cap ([`Builder::max_handshakes`](crate::Builder::max_handshakes))
//! is not among them: a newcomer is never refused for it. Refusing the
//! newest handshakes would let one client that opens handshakes and leaves
//! them silent lock every other client out; instead the loop that serves the
//! connection makes room, by closing a handshake of the address holding the
//! most, the one that has made the least progress for the longest
//! (`limits.rs`, `handshake_to_give_up`). That address is the connection's
//! own, which is the client's once a PROXY header has named it.
//!
//! # Decide, then act
//!
//! Each check either says no or hands over a token ([`Slot`], [`IpPlace`]);
//! a later "no" drops the earlier tokens, which gives them back, so a
//! refused client holds nothing once it is gone. The two things that cannot
//! be undone come last, once every check has said yes: the budget grows
//! (`Grow`), and the accept rate spends a token. So a client that any check
//! refuses never grows the budget, never keeps a slot, never counts as
//! served.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::budget::{Admission, Budget, Overflow, Slot};
use crate::filter::AddressFilter;
use crate::limits::{AcceptRate, IpPlace, PerIpCap};

/// Why a connection was turned away at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The address filter denies its address. Closed without a word.
    Denied,
    /// Its address is at the per-address cap.
    PerIp,
    /// The accept rate limit is exceeded.
    Rate,
    /// Every acceptor slot is busy, and the strategy says refuse (or the
    /// budget is at `Grow`'s ceiling).
    Budget,
    /// The process is out of descriptors (refused through the spare one).
    NoDescriptors,
}

impl Refusal {
    /// Whether the refusal message is owed: a denied client is not owed an
    /// explanation.
    pub(crate) fn tells_client(self) -> bool {
        self != Refusal::Denied
    }
}

/// Admission's yes: what a served connection holds, each given back when
/// dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    pub(crate) slot: Slot,
    pub(crate) place: Option<IpPlace>,
}

/// What to do before calling `accept`.
#[derive(Debug)]
pub(crate) enum BeforeAccept {
    /// Accept, with the slot reserved for the client if there was one free
    /// (without one, [`Gate::decide`] asks the overflow strategy).
    Accept(Option<Slot>),
    /// Every slot is busy under `Pause`: leave clients in the backlog until
    /// a slot frees (the budget wakes this loop).
    Pause,
    /// The accept rate is spent under `Pause`: leave clients in the backlog
    /// this long.
    WaitForRate(Duration),
}

/// Every accept-time policy of a server, shared by its loops.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) budget: Arc<Budget>,
    per_ip: Option<Arc<PerIpCap>>,
    rate: Option<AcceptRate>,
    filter: AddressFilter,
    /// A PROXY header will name each client: the policies keyed by address
    /// wait for it.
    proxied: bool,
}

impl Gate {
    pub(crate) fn new(
        budget: Arc<Budget>,
        max_per_ip: u32,
        accept_rate: u32,
        filter: AddressFilter,
        proxied: bool,
    ) -> Self {
        Gate {
            budget,
            per_ip: (max_per_ip > 0).then(|| Arc::new(PerIpCap::new(max_per_ip))),
            rate: (accept_rate > 0).then(|| AcceptRate::new(accept_rate)),
            filter,
            proxied,
        }
    }

    /// Before `accept`, on loop `index` (see `# The order`).
    pub(crate) fn before_accept(&self, index: usize, now: Instant) -> BeforeAccept {
        if let Some(rate) = &self.rate {
            if let Err(wait) = rate.peek(now) {
                if self.budget.overflow() == Overflow::Pause {
                    return BeforeAccept::WaitForRate(wait);
                }
            }
        }
        match self.budget.try_acquire() {
            Admission::Serve(slot) => BeforeAccept::Accept(Some(slot)),
            Admission::Overflow => BeforeAccept::Accept(None),
            // Park, so that a slot freed on any loop wakes this one; then
            // look once more (see `Budget::park`).
            Admission::Pause => match self.budget.park(index) {
                Admission::Serve(slot) => BeforeAccept::Accept(Some(slot)),
                Admission::Overflow => BeforeAccept::Accept(None),
                Admission::Pause => BeforeAccept::Pause,
            },
        }
    }

    /// After `accept`: the decision on a client from `ip` (see `# The
    /// order`), `None` for a client on a Unix socket, which the address
    /// filter and the per-address cap do not concern. `reserved` is what
    /// [`before_accept`](Gate::before_accept) reserved.
    pub(crate) fn decide(
        &self,
        ip: Option<IpAddr>,
        reserved: Option<Slot>,
        now: Instant,
    ) -> Result<Ticket, Refusal> {
        // Behind a proxy, `ip` is the proxy's: the client is known only
        // once its header is in (`after_header`). A Unix client has none.
        let place = match ip {
            Some(ip) if !self.proxied => self.by_address(ip)?,
            _ => None,
        };
        if let Some(rate) = &self.rate {
            rate.peek(now).map_err(|_| Refusal::Rate)?;
        }
        let slot = match reserved {
            Some(slot) => slot,
            None => self.budget.admit_overflow().ok_or(Refusal::Budget)?,
        };
        // Every check said yes: spend the rate's token. (Another loop may
        // have taken the last one since the peek; the bucket then runs a
        // token short, which the next refill settles.)
        if let Some(rate) = &self.rate {
            let _ = rate.try_take(now);
        }
        Ok(Ticket { slot, place })
    }

    /// After the PROXY header: the decision on the client it names, from
    /// `ip` (see `# The order`). Its place under the per-address cap, if the
    /// cap is on, is what the connection then holds beside its slot.
    pub(crate) fn after_header(&self, ip: IpAddr) -> Result<Option<IpPlace>, Refusal> {
        debug_assert!(self.proxied, "only a PROXY header names a client later");
        self.by_address(ip)
    }

    /// The policies keyed by the client's address, in order: the filter,
    /// then the per-address cap.
    fn by_address(&self, ip: IpAddr) -> Result<Option<IpPlace>, Refusal> {
        if !self.filter.permits(ip) {
            return Err(Refusal::Denied);
        }
        match &self.per_ip {
            Some(cap) => cap.try_take(ip).map(Some).ok_or(Refusal::PerIp),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(budget: usize, overflow: Overflow, per_ip: u32, filter: AddressFilter) -> Gate {
        let budget = Arc::new(Budget::new(budget, overflow, 1));
        Gate::new(budget, per_ip, 0, filter, false)
    }

    /// One connection from `ip` (`"unix"`: from a Unix socket, no IP), as
    /// the loop admits it.
    fn admit(g: &Gate, ip: &str) -> Result<Ticket, Refusal> {
        let reserved = match g.before_accept(0, Instant::now()) {
            BeforeAccept::Accept(slot) => slot,
            other => panic!("not accepting: {other:?}"),
        };
        let ip = (ip != "unix").then(|| ip.parse().unwrap());
        g.decide(ip, reserved, Instant::now())
    }

    const GROW: Overflow = Overflow::Grow { step: 1, max: 3 };

    #[test]
    fn a_denied_client_never_grows_the_budget() {
        let deny = AddressFilter {
            allow: vec![],
            deny: vec!["127.0.0.2/32".parse().unwrap()],
        };
        let g = gate(1, GROW, 0, deny);
        let _held = admit(&g, "127.0.0.1").unwrap();
        for _ in 0..3 {
            assert_eq!(admit(&g, "127.0.0.2").unwrap_err(), Refusal::Denied);
        }
        assert_eq!(g.budget.limit(), 1, "not grown");
        assert_eq!(g.budget.grown(), 0);
        assert_eq!(g.budget.active(), 1, "no slot kept");
    }

    #[test]
    fn a_client_over_its_address_cap_never_grows_the_budget() {
        let g = gate(1, GROW, 1, AddressFilter::default());
        let _held = admit(&g, "127.0.0.2").unwrap();
        for _ in 0..3 {
            assert_eq!(admit(&g, "127.0.0.2").unwrap_err(), Refusal::PerIp);
        }
        assert_eq!(g.budget.limit(), 1, "not grown");
        assert_eq!(g.budget.active(), 1);
        let _other = admit(&g, "127.0.0.3").expect("another address is served");
        assert_eq!(g.budget.limit(), 2, "grown for a welcome client");
    }

    /// A Unix client has no address: an allow-list that would deny every
    /// address, and a per-address cap of one, let any number of them in,
    /// while the budget still counts each one.
    #[test]
    fn address_policies_do_not_apply_to_unix_clients() {
        let only_elsewhere = AddressFilter {
            allow: vec!["192.0.2.0/24".parse().unwrap()],
            deny: vec![],
        };
        let g = gate(3, Overflow::Refuse, 1, only_elsewhere);
        assert_eq!(admit(&g, "127.0.0.1").unwrap_err(), Refusal::Denied);
        let held: Vec<_> = (0..3).map(|_| admit(&g, "unix").unwrap()).collect();
        assert!(held.iter().all(|t| t.place.is_none()), "no address place");
        assert_eq!(admit(&g, "unix").unwrap_err(), Refusal::Budget);
    }

    #[test]
    fn a_refused_client_gives_back_its_address_place() {
        let g = gate(1, Overflow::Refuse, 1, AddressFilter::default());
        let _held = admit(&g, "127.0.0.1").unwrap();
        assert_eq!(admit(&g, "127.0.0.2").unwrap_err(), Refusal::Budget);
        drop(_held);
        admit(&g, "127.0.0.2").expect("its place was not kept by the refusal");
    }

    #[test]
    fn a_reserved_slot_is_given_back_when_a_later_check_says_no() {
        let g = gate(2, Overflow::Refuse, 1, AddressFilter::default());
        let _first = admit(&g, "127.0.0.1").unwrap();
        assert_eq!(admit(&g, "127.0.0.1").unwrap_err(), Refusal::PerIp);
        assert_eq!(g.budget.active(), 1, "the reservation went back");
    }

    #[test]
    fn the_rate_is_spent_only_on_admitted_clients() {
        let budget = Arc::new(Budget::new(1, Overflow::Refuse, 1));
        let g = Gate::new(budget, 0, 2, AddressFilter::default(), false);
        let _held = admit(&g, "127.0.0.1").unwrap();
        for _ in 0..5 {
            assert_eq!(admit(&g, "127.0.0.1").unwrap_err(), Refusal::Budget);
        }
        drop(_held);
        admit(&g, "127.0.0.1").expect("a token was left: refusals spent none");
    }

    /// With the PROXY protocol on, admission at accept ignores the address
    /// (the balancer's); the step after the header applies the filter and
    /// the cap to the client the header names.
    #[test]
    fn behind_a_proxy_the_address_policies_wait_for_the_header() {
        let budget = Arc::new(Budget::new(4, Overflow::Refuse, 1));
        let deny = AddressFilter {
            allow: vec![],
            deny: vec!["192.0.2.9/32".parse().unwrap()],
        };
        let g = Gate::new(budget, 1, 0, deny, true);
        // Three connections from the one balancer are all admitted...
        let tickets: Vec<Ticket> = (0..3).map(|_| admit(&g, "10.0.0.1").unwrap()).collect();
        assert!(
            tickets.iter().all(|t| t.place.is_none()),
            "no place taken yet"
        );
        // ...and their headers name the clients.
        let a = g.after_header("192.0.2.5".parse().unwrap()).unwrap();
        assert!(a.is_some(), "the client's place under the cap");
        assert_eq!(
            g.after_header("192.0.2.5".parse().unwrap()).unwrap_err(),
            Refusal::PerIp
        );
        g.after_header("192.0.2.6".parse().unwrap())
            .expect("another client, through the same balancer, is served");
        assert_eq!(
            g.after_header("192.0.2.9".parse().unwrap()).unwrap_err(),
            Refusal::Denied,
            "the filter comes first"
        );
        drop(a);
        g.after_header("192.0.2.5".parse().unwrap())
            .expect("the place came back");
    }

    #[test]
    fn pause_leaves_clients_in_the_backlog() {
        let g = gate(1, Overflow::Pause, 0, AddressFilter::default());
        let held = admit(&g, "127.0.0.1").unwrap();
        assert!(matches!(
            g.before_accept(0, Instant::now()),
            BeforeAccept::Pause
        ));
        drop(held);
        assert!(matches!(
            g.before_accept(0, Instant::now()),
            BeforeAccept::Accept(Some(_))
        ));
    }
}
