//! Address filters: allow and deny lists of CIDR ranges, decided before a
//! connection is served.
//!
//! Without the PROXY protocol the decision is made right after `accept`,
//! before the socket is registered; with it, right after the header, against
//! the client address the header carries. A denied connection is closed
//! without the refusal message (it is not owed an explanation) and counted in
//! [`Stats::denied`](crate::Stats::denied).

use std::net::IpAddr;

use ipnet::IpNet;

/// Allow and deny lists. An address is denied if a deny range contains it,
/// or if there are allow ranges and none contains it. Deny wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct AddressFilter {
    pub(crate) allow: Vec<IpNet>,
    pub(crate) deny: Vec<IpNet>,
}

impl AddressFilter {
    /// Whether `ip` may be served.
    pub(crate) fn permits(&self, ip: IpAddr) -> bool {
        // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; match
        // them against IPv4 ranges as what they are.
        let ip = ip.to_canonical();
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(allow: &[&str], deny: &[&str]) -> AddressFilter {
        AddressFilter {
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_lists_permit_everyone() {
        assert!(filter(&[], &[]).permits(ip("203.0.113.9")));
    }

    #[test]
    fn an_allow_list_admits_only_its_ranges() {
        let f = filter(&["10.0.0.0/8", "2001:db8::/32"], &[]);
        assert!(f.permits(ip("10.1.2.3")));
        assert!(f.permits(ip("2001:db8::1")));
        assert!(!f.permits(ip("192.168.1.1")));
    }

    #[test]
    fn deny_wins_over_allow() {
        let f = filter(&["10.0.0.0/8"], &["10.9.0.0/16"]);
        assert!(f.permits(ip("10.1.0.1")));
        assert!(!f.permits(ip("10.9.0.1")));
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_ranges() {
        let f = filter(&[], &["127.0.0.0/8"]);
        assert!(!f.permits(ip("::ffff:127.0.0.1")));
        assert!(f.permits(ip("::1")));
    }
}
