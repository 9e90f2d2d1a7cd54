//! The PROXY protocol, versions 1 and 2 (HAProxy's `proxy-protocol.txt`):
//! a load balancer in front of the server prepends one header to each
//! connection that says who the real client is.
//!
//! This module only parses; it does no I/O. The loop feeds it the first bytes
//! of a connection until it says the header is complete, then serves the rest
//! of the stream as lines, with the client address from the header.
//!
//! Hand-written rather than taken from a crate: the whole format is two
//! fixed layouts, the parser must work on a prefix of the stream (say
//! "incomplete" instead of failing), never allocate, and name what is wrong
//! with a bad header. The `ppp` crate parses the same format well, but
//! adapting its result types to those needs would be as long as this file.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature: twelve bytes no text protocol starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Every v1 header starts with this.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The spec's bound on a v1 header, CRLF included.
const V1_MAX: usize = 107;
/// The bound this server puts on a v2 header (16 bytes plus addresses and
/// TLVs). The spec allows up to 64 KiB of TLVs; real balancers send far less,
/// and an attacker should not get to make us buffer 64 KiB per connection.
pub(crate) const V2_MAX: usize = 16 + 1024;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyHeader {
    /// The connection was relayed for `source`, which connected to
    /// `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The balancer speaks for itself (v2 `LOCAL`, e.g. a health check), or
    /// the addresses are of a kind this server does not use (v1 `UNKNOWN`,
    /// v2 `UNSPEC`, UDP, unix sockets): keep the connection's own addresses.
    Local,
}

/// Why a header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyError {
    /// The stream does not start with a PROXY header.
    Missing,
    /// The header is longer than this server accepts.
    TooLong,
    /// The header is malformed; the text says where.
    Malformed(&'static str),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Missing => f.write_str("no PROXY protocol header"),
            ProxyError::TooLong => f.write_str("PROXY protocol header too long"),
            ProxyError::Malformed(why) => write!(f, "malformed PROXY protocol header: {why}"),
        }
    }
}

/// Parses a header at the start of `buf`.
///
/// `Ok(None)`: `buf` is a valid beginning, send more bytes. `Ok(Some((h,
/// n)))`: a complete header of `n` bytes; the stream proper starts at
/// `buf[n..]`.
///
/// # Errors
///
/// [`ProxyError`] as soon as `buf` cannot be the start of a valid header.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if is_prefix_of(buf, V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(None);
        }
        return parse_v2(buf);
    }
    if is_prefix_of(buf, V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Ok(None);
        }
        return parse_v1(buf);
    }
    Err(ProxyError::Missing)
}

/// True if the shorter of `buf` and `sig` is a prefix of the other.
fn is_prefix_of(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf[..n] == sig[..n]
}

/// `PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n`
fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    // Look for either end-of-line byte: a bare LF can never become a valid
    // header (the spec demands CRLF and no LF inside the line), so it is
    // rejected at once rather than left to wait for the header timeout.
    let Some(eol) = memchr::memchr2(b'\r', b'\n', window) else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::TooLong)
        } else {
            Ok(None)
        };
    };
    if window[eol] == b'\n' {
        return Err(ProxyError::Malformed("v1 line not ended by CRLF"));
    }
    let cr = eol;
    match buf.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyError::Malformed("v1 line not ended by CRLF")),
    }
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..cr])
        .map_err(|_| ProxyError::Malformed("v1 header is not ASCII"))?;
    let consumed = cr + 2;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or("");
    if family == "UNKNOWN" {
        // The rest of the line is to be ignored.
        return Ok(Some((ProxyHeader::Local, consumed)));
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => {
            return Err(ProxyError::Malformed(
                "v1 protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let mut next = || {
        fields
            .next()
            .ok_or(ProxyError::Malformed("v1 header has too few fields"))
    };
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if fields.next().is_some() {
        return Err(ProxyError::Malformed("v1 header has too many fields"));
    }
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        let ip: IpAddr = s.parse().map_err(|_| ProxyError::Malformed("v1 address"))?;
        if ip.is_ipv6() != v6 {
            return Err(ProxyError::Malformed(
                "v1 address does not match the protocol",
            ));
        }
        Ok(ip)
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        // The spec forbids leading zeros and signs; `parse` would allow "+1".
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(ProxyError::Malformed("v1 port"));
        }
        s.parse().map_err(|_| ProxyError::Malformed("v1 port"))
    };
    let header = ProxyHeader::Proxied {
        source: SocketAddr::new(ip(src)?, port(sport)?),
        destination: SocketAddr::new(ip(dst)?, port(dport)?),
    };
    Ok(Some((header, consumed)))
}

/// Signature, version/command, family/transport, length, addresses, TLVs.
fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    if version != 2 {
        return Err(ProxyError::Malformed("v2 version is not 2"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if total > V2_MAX {
        return Err(ProxyError::TooLong);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let block = &buf[16..total];
    match command {
        0x0 => return Ok(Some((ProxyHeader::Local, total))),
        0x1 => {}
        _ => {
            return Err(ProxyError::Malformed(
                "v2 command is neither LOCAL nor PROXY",
            ))
        }
    }
    let header = match buf[13] {
        // TCP over IPv4: 4 + 4 address bytes, 2 + 2 port bytes.
        0x11 => {
            let a = block
                .get(..12)
                .ok_or(ProxyError::Malformed("v2 IPv4 address block too short"))?;
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(&a[0..4]), u16::from_be_bytes([a[8], a[9]])),
                destination: SocketAddr::new(ip(&a[4..8]), u16::from_be_bytes([a[10], a[11]])),
            }
        }
        // TCP over IPv6: 16 + 16 address bytes, 2 + 2 port bytes.
        0x21 => {
            let a = block
                .get(..36)
                .ok_or(ProxyError::Malformed("v2 IPv6 address block too short"))?;
            let ip = |b: &[u8]| {
                let octets: [u8; 16] = b.try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            ProxyHeader::Proxied {
                source: SocketAddr::new(ip(&a[0..16]), u16::from_be_bytes([a[32], a[33]])),
                destination: SocketAddr::new(ip(&a[16..32]), u16::from_be_bytes([a[34], a[35]])),
            }
        }
        // UNSPEC, UDP, unix sockets: accepted, addresses ignored.
        0x00 | 0x12 | 0x22 | 0x31 | 0x32 => ProxyHeader::Local,
        _ => {
            return Err(ProxyError::Malformed(
                "v2 address family or transport unknown",
            ))
        }
    };
    Ok(Some((header, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxied(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        }
    }

    /// A v2 header: signature, version 2 and `command`, `fam`, then `block`.
    fn v2(command: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(fam);
        h.extend_from_slice(&(block.len() as u16).to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    mod v1 {
        use super::*;

        #[test]
        fn the_specs_tcp4_example() {
            let h = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
            let (header, n) = parse(h).unwrap().unwrap();
            assert_eq!(header, proxied("192.168.0.1:56324", "192.168.0.11:443"));
            assert_eq!(&h[n..], b"GET / HTTP/1.1\r\n");
        }

        #[test]
        fn tcp6() {
            let h = b"PROXY TCP6 ffff:f...f:ffff ::1 65535 65535\r\n";
            assert_eq!(parse(h), Err(ProxyError::Malformed("v1 address")));
            let h = b"PROXY TCP6 2001:db8::1 ::1 65535 7000\r\n";
            let (header, _) = parse(h).unwrap().unwrap();
            assert_eq!(header, proxied("[2001:db8::1]:65535", "[::1]:7000"));
        }

        #[test]
        fn unknown_keeps_the_connections_addresses() {
            assert_eq!(
                parse(b"PROXY UNKNOWN\r\n"),
                Ok(Some((ProxyHeader::Local, 15)))
            );
            let h = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
            assert_eq!(parse(h), Ok(Some((ProxyHeader::Local, h.len()))));
        }

        #[test]
        fn every_prefix_is_incomplete() {
            let h = b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n";
            for n in 0..h.len() {
                assert_eq!(parse(&h[..n]), Ok(None), "prefix of {n} bytes");
            }
            assert!(parse(h).unwrap().is_some());
        }

        #[test]
        fn malformed_headers_are_named() {
            let bad = |h: &[u8]| parse(h).unwrap_err();
            assert_eq!(
                bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
                ProxyError::Malformed("v1 header has too few fields")
            );
            assert_eq!(
                bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"),
                ProxyError::Malformed("v1 header has too many fields")
            );
            assert_eq!(
                bad(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n"),
                ProxyError::Malformed("v1 address does not match the protocol")
            );
            assert_eq!(
                bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"),
                ProxyError::Malformed("v1 port")
            );
            assert_eq!(
                bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"),
                ProxyError::Malformed("v1 port")
            );
            assert_eq!(
                bad(b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"),
                ProxyError::Malformed("v1 protocol is not TCP4, TCP6 or UNKNOWN")
            );
            assert_eq!(
                bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"),
                ProxyError::Malformed("v1 line not ended by CRLF")
            );
        }

        /// A line ended by LF alone is rejected as soon as the LF arrives,
        /// wherever it is, not when the header timeout fires.
        #[test]
        fn a_bare_lf_is_rejected_at_once() {
            let lf = ProxyError::Malformed("v1 line not ended by CRLF");
            assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), Err(lf));
            assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nPING\r\n"), Err(lf));
            assert_eq!(parse(b"PROXY UNKNOWN\n"), Err(lf));
            assert_eq!(parse(b"PROXY \n"), Err(lf));
            assert_eq!(parse(b"PROXY TCP4 1.2\n.3.4 5.6.7.8 1 2\r\n"), Err(lf));
        }

        #[test]
        fn a_header_without_crlf_is_cut_at_107_bytes() {
            let mut h = b"PROXY TCP4 ".to_vec();
            h.resize(106, b'1');
            assert_eq!(parse(&h), Ok(None));
            h.push(b'1');
            assert_eq!(parse(&h), Err(ProxyError::TooLong));
        }
    }

    mod v2 {
        use super::*;

        #[test]
        fn tcp4_with_trailing_data() {
            let mut h = v2(
                1,
                0x11,
                &[127, 0, 0, 1, 10, 0, 0, 2, 0x1f, 0x90, 0x01, 0xbb],
            );
            let len = h.len();
            h.extend_from_slice(b"hello\n");
            let (header, n) = parse(&h).unwrap().unwrap();
            assert_eq!(header, proxied("127.0.0.1:8080", "10.0.0.2:443"));
            assert_eq!(n, len);
            assert_eq!(&h[n..], b"hello\n");
        }

        #[test]
        fn tcp6_and_tlvs_are_skipped() {
            let mut block = Vec::new();
            block.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
            block.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
            block.extend_from_slice(&[0x30, 0x39, 0x1b, 0x58]);
            // A TLV (PP2_TYPE_AUTHORITY) after the addresses.
            block.extend_from_slice(&[0x02, 0x00, 0x03, b'a', b'.', b'b']);
            let h = v2(1, 0x21, &block);
            let (header, n) = parse(&h).unwrap().unwrap();
            assert_eq!(header, proxied("[2001:db8::7]:12345", "[::1]:7000"));
            assert_eq!(n, h.len());
        }

        #[test]
        fn local_commands_keep_the_connections_addresses() {
            let h = v2(0, 0x00, &[]);
            assert_eq!(parse(&h), Ok(Some((ProxyHeader::Local, 16))));
            // LOCAL with an address block: the block is skipped.
            let h = v2(0, 0x11, &[0; 12]);
            assert_eq!(parse(&h), Ok(Some((ProxyHeader::Local, 28))));
        }

        #[test]
        fn every_prefix_is_incomplete() {
            let h = v2(1, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
            for n in 0..h.len() {
                assert_eq!(parse(&h[..n]), Ok(None), "prefix of {n} bytes");
            }
        }

        #[test]
        fn bad_headers_are_named() {
            let mut h = v2(1, 0x11, &[0; 12]);
            h[12] = 0x11;
            assert_eq!(parse(&h), Err(ProxyError::Malformed("v2 version is not 2")));
            assert_eq!(
                parse(&v2(1, 0x11, &[0; 8])),
                Err(ProxyError::Malformed("v2 IPv4 address block too short"))
            );
            assert_eq!(
                parse(&v2(7, 0x11, &[0; 12])),
                Err(ProxyError::Malformed(
                    "v2 command is neither LOCAL nor PROXY"
                ))
            );
            assert_eq!(
                parse(&v2(1, 0x99, &[0; 12])),
                Err(ProxyError::Malformed(
                    "v2 address family or transport unknown"
                ))
            );
            assert_eq!(parse(&v2(1, 0x11, &[0; V2_MAX])), Err(ProxyError::TooLong));
        }
    }

    #[test]
    fn anything_else_is_missing_a_header() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing));
        assert_eq!(parse(b"PING\r\n"), Err(ProxyError::Missing));
        assert_eq!(parse(b"\r\n\r\nX"), Err(ProxyError::Missing));
        assert_eq!(parse(b""), Ok(None));
    }
}
