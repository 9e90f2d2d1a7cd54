//! Just enough HTTP/1.x to answer `GET /metrics`: read one request head,
//! decide, write one response with `Connection: close`.
//!
//! This module does no I/O. A scrape is one short request per connection
//! every few seconds, so the server side can be a netpool line handler: the
//! head arrives as lines (the framing strips `\n` and one `\r`), which
//! [`RequestHead::line`] takes one at a time, keeping a few integers of
//! state per connection (`MetricsEndpoint` is that handler). The tests also
//! read whole buffers with the same rules (`parse_metrics_request`), and
//! check that both readings agree.
//!
//! Hand-written rather than taken from an HTTP crate: the whole job is one
//! request line and a bounded run of headers, answered once, and an HTTP
//! library would bring its own I/O model into a crate that frames lines.
//!
//! # What it accepts
//!
//! `GET /metrics` (a query string is allowed and ignored, as is the
//! absolute form `GET http://host/metrics`), `HTTP/1.0` or `HTTP/1.1`
//! (which must carry exactly one `Host`, as RFC 9112 demands). Anything
//! else is answered with a status: 404 for another path, 405 for another
//! method, 505 for another HTTP version, 400 for what is not HTTP, 431 past
//! [`MAX_HEAD_BYTES`] or [`MAX_HEAD_LINES`]. The request body, if any, is
//! never read: the answer closes the connection.

use std::fmt;
use std::io::{self, Write};

/// Bound on a request head, request line and headers with their line ends.
/// Scrapers send a few hundred bytes; 8 KiB is what many servers allow.
pub(crate) const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Bound on the lines of a request head, the request line included.
pub(crate) const MAX_HEAD_LINES: usize = 100;

/// The only path served.
const PATH: &[u8] = b"/metrics";

/// The statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// 200: the metrics follow.
    Ok,
    /// 400: the request is not well-formed HTTP/1.x.
    BadRequest,
    /// 404: a path other than `/metrics`.
    NotFound,
    /// 405: a method other than `GET` (the response says `Allow: GET`).
    MethodNotAllowed,
    /// 431: the head passed [`MAX_HEAD_BYTES`] or [`MAX_HEAD_LINES`].
    HeaderFieldsTooLarge,
    /// 505: a well-formed HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

impl Status {
    /// The numeric code.
    pub(crate) fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::HeaderFieldsTooLarge => 431,
            Status::VersionNotSupported => 505,
        }
    }

    /// The reason phrase.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}

/// Where a [`RequestHead`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    /// Waiting for the request line (empty lines before it are skipped, as
    /// RFC 9112 §2.2 recommends).
    #[default]
    RequestLine,
    /// Reading headers until the empty line; `verdict` is what the request
    /// line decided, `http11` whether `Host` is required, `hosts` how many
    /// were seen.
    Headers {
        verdict: Result<(), Status>,
        http11: bool,
        hosts: u8,
    },
    /// The verdict was given; further lines are not looked at.
    Done,
}

/// One request head, read a line at a time: the per-connection state of a
/// line handler that serves `/metrics`.
///
/// A request that is HTTP gets its verdict at the empty line that ends the
/// head, so the whole head has been read before the answer and the close
/// (closing with unread input would make the kernel send a reset that can
/// destroy the answer in flight). Input that is not HTTP, or too large, gets
/// its verdict at once: there may never be an empty line to wait for.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestHead {
    phase: Phase,
    /// Lines seen, the request line and skipped empty lines included.
    lines: usize,
    /// Bytes seen, counting two for each line end.
    bytes: usize,
}

impl RequestHead {
    /// Takes the next line of the head, without its line end.
    ///
    /// Returns `None` while the head goes on, then once `Some(Ok(()))` for a
    /// `GET /metrics` (answer [`Status::Ok`] with the metrics) or
    /// `Some(Err(status))` (answer `status`); either way, close after
    /// answering. After the verdict, lines are ignored (`None`).
    pub(crate) fn line(&mut self, line: &[u8]) -> Option<Result<(), Status>> {
        if self.phase == Phase::Done {
            return None;
        }
        self.lines += 1;
        self.bytes += line.len() + 2;
        if self.lines > MAX_HEAD_LINES || self.bytes > MAX_HEAD_BYTES {
            return self.decide(Err(Status::HeaderFieldsTooLarge));
        }
        match self.phase {
            Phase::RequestLine if line.is_empty() => None,
            Phase::RequestLine => match request_line(line) {
                Ok((verdict, http11)) => {
                    self.phase = Phase::Headers {
                        verdict,
                        http11,
                        hosts: 0,
                    };
                    None
                }
                Err(status) => self.decide(Err(status)),
            },
            Phase::Headers {
                verdict,
                http11,
                hosts,
            } => {
                if line.is_empty() {
                    let host_ok = !http11 || hosts == 1;
                    return self.decide(if host_ok {
                        verdict
                    } else {
                        Err(Status::BadRequest)
                    });
                }
                let Some(name) = header_name(line) else {
                    return self.decide(Err(Status::BadRequest));
                };
                if name.eq_ignore_ascii_case(b"host") {
                    self.phase = Phase::Headers {
                        verdict,
                        http11,
                        hosts: hosts.saturating_add(1),
                    };
                }
                None
            }
            Phase::Done => unreachable!("returned above"),
        }
    }

    fn decide(&mut self, verdict: Result<(), Status>) -> Option<Result<(), Status>> {
        self.phase = Phase::Done;
        Some(verdict)
    }
}

/// `tchar` of RFC 9110 §5.6.2: what method and header names are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits `METHOD SP target SP HTTP/x.y`. `Err` for what is not a request
/// line at all; `Ok((verdict, is HTTP/1.1))` otherwise, the verdict being
/// this module's answer to a well-formed request.
fn request_line(line: &[u8]) -> Result<(Result<(), Status>, bool), Status> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BadRequest);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Status::BadRequest);
    }
    if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(Status::BadRequest);
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Ok((Err(Status::VersionNotSupported), false));
        }
        _ => return Err(Status::BadRequest),
    };
    // The path comes before the query; the absolute form (a request as sent
    // to a proxy) carries a scheme and authority before it.
    let path = target.split(|&b| b == b'?').next().unwrap_or(target);
    let path = match path.windows(3).position(|w| w == b"://") {
        Some(at) => {
            let after = &path[at + 3..];
            after
                .iter()
                .position(|&b| b == b'/')
                .map_or(&b"/"[..], |slash| &after[slash..])
        }
        None => path,
    };
    let verdict = if path != PATH {
        Err(Status::NotFound)
    } else if method != b"GET" {
        Err(Status::MethodNotAllowed)
    } else {
        Ok(())
    };
    Ok((verdict, http11))
}

/// The name of a `name: value` header line, or `None` if the line is not
/// one (no colon, an empty or invalid name, a folded continuation line, or
/// a control byte other than tab in the value).
fn header_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return None;
    }
    Some(name)
}

/// Reads a request head from the start of `buf`, with the same rules as
/// [`RequestHead`].
///
/// `Ok(None)`: `buf` is a valid beginning, read more. `Ok(Some(n))`: a
/// `GET /metrics` whose head is the first `n` bytes.
///
/// # Errors
///
/// The [`Status`] to answer with, as soon as it is known.
#[cfg(test)]
pub(crate) fn parse_metrics_request(buf: &[u8]) -> Result<Option<usize>, Status> {
    let mut head = RequestHead::default();
    let mut start = 0;
    while let Some(lf) = memchr::memchr(b'\n', &buf[start..]) {
        let end = start + lf;
        let line = &buf[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start = end + 1;
        if let Some(verdict) = head.line(line) {
            return verdict.map(|()| Some(start));
        }
    }
    // An unterminated line that already breaks the bound will not fit.
    if head.bytes + (buf.len() - start) > MAX_HEAD_BYTES {
        return Err(Status::HeaderFieldsTooLarge);
    }
    Ok(None)
}

/// Writes a complete response: status line, `Content-Type`,
/// `Content-Length`, `Connection: close` (and `Allow: GET` with a 405), the
/// empty line, then `body`. Serve metrics with
/// [`metrics::CONTENT_TYPE`](crate::metrics::CONTENT_TYPE).
///
/// # Errors
///
/// Whatever `out` returns.
pub(crate) fn write_http_response(
    out: &mut impl Write,
    status: Status,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    )?;
    if status == Status::MethodNotAllowed {
        out.write_all(b"Allow: GET\r\n")?;
    }
    out.write_all(b"\r\n")?;
    out.write_all(body)
}

/// Writes an error response whose body is the status in words.
///
/// # Errors
///
/// Whatever `out` returns.
pub(crate) fn write_http_error(out: &mut impl Write, status: Status) -> io::Result<()> {
    let body = format!("{status}\n");
    write_http_response(out, status, "text/plain; charset=utf-8", body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `head` (lines separated by CRLF) to a [`RequestHead`] and to
    /// [`parse_metrics_request`], checks that both agree, and returns the
    /// verdict (`None`: still incomplete).
    fn verdict(head: &str) -> Option<Result<(), Status>> {
        let mut lines = RequestHead::default();
        let mut by_line = None;
        for line in head.split_terminator("\r\n") {
            if let Some(v) = lines.line(line.as_bytes()) {
                by_line = Some(v);
                break;
            }
        }
        let whole = parse_metrics_request(head.as_bytes()).transpose();
        assert_eq!(whole.map(|r| r.map(|_| ())), by_line, "{head:?}");
        by_line
    }

    const GET: &str = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\n";

    mod request_line {
        use super::*;

        /// What Prometheus sends is served.
        #[test]
        fn prometheus_scrape_is_served() {
            let head = "GET /metrics HTTP/1.1\r\nHost: 10.0.0.1:9100\r\nUser-Agent: Prometheus/2.42.0\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\nAccept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n";
            assert_eq!(verdict(head), Some(Ok(())));
            assert_eq!(parse_metrics_request(head.as_bytes()), Ok(Some(head.len())));
        }

        /// HTTP/1.0 needs no Host; a query and the absolute form are
        /// accepted; bare LF line ends are tolerated.
        #[test]
        fn the_accepted_variants() {
            assert_eq!(verdict("GET /metrics HTTP/1.0\r\n\r\n"), Some(Ok(())));
            assert_eq!(verdict("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Some(Ok(())));
            assert_eq!(
                verdict("GET http://h:9100/metrics HTTP/1.1\r\nHost: h\r\n\r\n"),
                Some(Ok(()))
            );
            assert_eq!(
                parse_metrics_request(b"GET /metrics HTTP/1.0\n\n"),
                Ok(Some(23))
            );
            assert_eq!(verdict("\r\nGET /metrics HTTP/1.0\r\n\r\n"), Some(Ok(())));
        }

        /// Another path is 404, another method 405, checked in that order.
        #[test]
        fn wrong_path_or_method() {
            let h = "Host: h\r\n\r\n";
            let req = |line: &str| verdict(&format!("{line}\r\n{h}"));
            assert_eq!(req("GET / HTTP/1.1"), Some(Err(Status::NotFound)));
            assert_eq!(req("GET /metricsx HTTP/1.1"), Some(Err(Status::NotFound)));
            assert_eq!(req("GET /metrics/ HTTP/1.1"), Some(Err(Status::NotFound)));
            assert_eq!(req("GET http://h HTTP/1.1"), Some(Err(Status::NotFound)));
            assert_eq!(
                req("POST /metrics HTTP/1.1"),
                Some(Err(Status::MethodNotAllowed))
            );
            assert_eq!(
                req("HEAD /metrics HTTP/1.1"),
                Some(Err(Status::MethodNotAllowed))
            );
            assert_eq!(
                req("get /metrics HTTP/1.1"),
                Some(Err(Status::MethodNotAllowed))
            );
            assert_eq!(req("POST /other HTTP/1.1"), Some(Err(Status::NotFound)));
        }

        /// A well-formed version other than 1.x is 505; anything else that
        /// is not a request line is 400, at once.
        #[test]
        fn not_http_1() {
            assert_eq!(
                verdict("GET /metrics HTTP/2.0\r\n\r\n"),
                Some(Err(Status::VersionNotSupported))
            );
            for line in [
                "GET /metrics",                // HTTP/0.9
                "GET  /metrics HTTP/1.1",      // two spaces
                "GET /metrics HTTP/1.1 extra", // four parts
                "GET /metrics http/1.1",       // lower-case version
                "GET /metrics HTTP/1.1\t",     // trailing tab
                "G(T /metrics HTTP/1.1",       // not a token
                "GET /met\u{7f}rics HTTP/1.1", // control byte in the target
                "PING",                        // not HTTP at all
            ] {
                let mut head = RequestHead::default();
                assert_eq!(
                    head.line(line.as_bytes()),
                    Some(Err(Status::BadRequest)),
                    "{line:?}"
                );
            }
        }
    }

    mod headers {
        use super::*;

        /// The verdict waits for the empty line that ends the head.
        #[test]
        fn the_verdict_comes_at_the_empty_line() {
            let mut head = RequestHead::default();
            assert_eq!(head.line(b"GET /nope HTTP/1.1"), None);
            assert_eq!(head.line(b"Host: h"), None);
            assert_eq!(head.line(b""), Some(Err(Status::NotFound)));
            assert_eq!(head.line(b"anything after"), None, "ignored once decided");
            assert_eq!(verdict(GET), None);
            assert_eq!(parse_metrics_request(GET.as_bytes()), Ok(None));
        }

        /// HTTP/1.1 needs exactly one Host.
        #[test]
        fn http11_needs_one_host() {
            let v = |h: &str| verdict(&format!("GET /metrics HTTP/1.1\r\n{h}\r\n"));
            assert_eq!(v(""), Some(Err(Status::BadRequest)));
            assert_eq!(v("host: a\r\n"), Some(Ok(())));
            assert_eq!(v("Host: a\r\nHOST: b\r\n"), Some(Err(Status::BadRequest)));
        }

        /// Malformed header lines are 400 at once.
        #[test]
        fn malformed_headers() {
            for bad in [
                "no colon",
                ": empty name",
                "Bad Name: x",
                " folded: continuation",
                "Host : x",
                "X: a\rb",
                "X: nul\0",
            ] {
                let mut head = RequestHead::default();
                assert_eq!(head.line(b"GET /metrics HTTP/1.0"), None);
                assert_eq!(
                    head.line(bad.as_bytes()),
                    Some(Err(Status::BadRequest)),
                    "{bad:?}"
                );
            }
            let mut head = RequestHead::default();
            head.line(b"GET /metrics HTTP/1.0");
            assert_eq!(head.line(b"X-Tab:\ta\tb"), None, "tabs are allowed");
        }

        /// A head past either bound is 431, without waiting for its end.
        #[test]
        fn heads_are_bounded() {
            let mut head = RequestHead::default();
            head.line(GET.lines().next().unwrap().as_bytes());
            let mut got = None;
            for _ in 0..MAX_HEAD_LINES {
                got = head.line(b"X: y");
                if got.is_some() {
                    break;
                }
            }
            assert_eq!(got, Some(Err(Status::HeaderFieldsTooLarge)));
            assert_eq!(head.lines, MAX_HEAD_LINES + 1);

            let long = format!(
                "GET /metrics HTTP/1.0\r\nX: {}\r\n",
                "a".repeat(MAX_HEAD_BYTES)
            );
            assert_eq!(verdict(&long), Some(Err(Status::HeaderFieldsTooLarge)));
            // Even before the long line ends.
            let unended = &long[..MAX_HEAD_BYTES + 1];
            assert_eq!(
                parse_metrics_request(unended.as_bytes()),
                Err(Status::HeaderFieldsTooLarge)
            );
            assert_eq!(
                parse_metrics_request(&unended.as_bytes()[..MAX_HEAD_BYTES]),
                Ok(None)
            );
        }

        /// Every prefix of a valid head is incomplete, never an error.
        #[test]
        fn every_prefix_is_incomplete() {
            let head = format!("{GET}Accept: */*\r\n\r\n");
            for n in 0..head.len() {
                assert_eq!(
                    parse_metrics_request(&head.as_bytes()[..n]),
                    Ok(None),
                    "prefix of {n} bytes"
                );
            }
        }
    }

    mod response {
        use super::*;

        fn response(status: Status, body: &[u8]) -> String {
            let mut out = Vec::new();
            write_http_response(&mut out, status, crate::metrics::CONTENT_TYPE, body).unwrap();
            String::from_utf8(out).unwrap()
        }

        /// The 200 carries the Prometheus content type, the exact length,
        /// and says the connection closes.
        #[test]
        fn ok_with_metrics() {
            assert_eq!(
                response(Status::Ok, b"x 1\n"),
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                 Content-Length: 4\r\nConnection: close\r\n\r\nx 1\n"
            );
        }

        /// A 405 names the method that is allowed.
        #[test]
        fn method_not_allowed_says_allow() {
            assert!(response(Status::MethodNotAllowed, b"").contains("\r\nAllow: GET\r\n\r\n"));
            assert!(!response(Status::NotFound, b"").contains("Allow"));
        }

        /// An error's body is its status in words, and its length matches.
        #[test]
        fn errors_explain_themselves() {
            let mut out = Vec::new();
            write_http_error(&mut out, Status::NotFound).unwrap();
            let text = String::from_utf8(out).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"));
            assert_eq!(body, "404 Not Found\n");
            assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        }
    }
}
