//! The server name (SNI) a client asks for, read from its ClientHello
//! before rustls takes the bytes.
//!
//! rustls 0.23's `UnbufferedServerConnection` keeps the SNI to itself: the
//! buffered `ServerConnection::server_name` has no unbuffered twin (checked
//! in 0.23.43 and 0.23.46). The session therefore holds the first bytes of a
//! connection until the whole ClientHello has arrived (rustls could not
//! answer a partial one anyway), reads the name here from the untouched
//! records, and only then hands them to rustls, which decrypts and reorders
//! in place and so would leave nothing to read afterwards.
//!
//! The result matches what rustls itself keeps: the first `host_name` entry,
//! lowercased; an IP address literal counts as no name (RFC 6066 forbids it,
//! rustls ignores it); a name rustls would reject gives `None`, and rustls
//! then fails the handshake anyway. Everything is read through bounds-checked
//! slices; nothing here can panic on hostile input.

use rustls::pki_types::ServerName;

/// TLS record header: content type (1), version (2), length (2).
const RECORD_HEADER: usize = 5;
/// Handshake message header: type (1), length (3).
const MESSAGE_HEADER: usize = 4;
const CONTENT_HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: usize = 0;
const NAME_TYPE_HOST_NAME: usize = 0;
/// rustls refuses records whose length field is this or more.
const MAX_RECORD_PAYLOAD: usize = 16_384 + 2_048;

/// What the bytes a connection has sent so far say about its ClientHello.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Peek {
    /// Plausibly the start of a ClientHello: wait for more bytes.
    Incomplete,
    /// The whole ClientHello is here; the server name it asks for, if any.
    Complete(Option<Box<str>>),
    /// Not a TLS ClientHello, or one too large to gather here (over
    /// `max_message` bytes): let rustls judge it (it sends the alert).
    NotClientHello,
}

/// Looks for a complete ClientHello at the start of `stream`, the first
/// bytes the connection sent, unmodified.
///
/// A ClientHello may span records; then their payloads are gathered into a
/// temporary buffer (at most `max_message` bytes, once per connection, and
/// rare: clients send it in one record unless it exceeds 16 KiB).
pub(super) fn peek(stream: &[u8], max_message: usize) -> Peek {
    let mut records = Records { rest: stream };
    let first = match records.next() {
        Record::Payload(payload) => payload,
        Record::Partial => return Peek::Incomplete,
        Record::NotHandshake => return Peek::NotClientHello,
    };
    // The usual case: the whole message in the first record, read in place.
    match message_in(first, max_message) {
        Message::Complete(body) => return Peek::Complete(server_name(body)),
        Message::Invalid => return Peek::NotClientHello,
        Message::Incomplete => {}
    }
    let mut gathered = first.to_vec();
    loop {
        match records.next() {
            Record::Payload(payload) => gathered.extend_from_slice(payload),
            Record::Partial => return Peek::Incomplete,
            // Interleaving is illegal: rustls will say so.
            Record::NotHandshake => return Peek::NotClientHello,
        }
        match message_in(&gathered, max_message) {
            Message::Complete(body) => return Peek::Complete(server_name(body)),
            Message::Invalid => return Peek::NotClientHello,
            Message::Incomplete => {}
        }
    }
}

enum Message<'a> {
    Complete(&'a [u8]),
    Incomplete,
    Invalid,
}

/// The ClientHello body at the start of `payload`, if all of it is there.
fn message_in(payload: &[u8], max_message: usize) -> Message<'_> {
    let Some(header) = payload.get(..MESSAGE_HEADER) else {
        return match payload.first() {
            Some(&t) if t != CLIENT_HELLO => Message::Invalid,
            _ => Message::Incomplete,
        };
    };
    if header[0] != CLIENT_HELLO {
        return Message::Invalid;
    }
    let len = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
    if MESSAGE_HEADER + len > max_message {
        return Message::Invalid;
    }
    match payload.get(MESSAGE_HEADER..MESSAGE_HEADER + len) {
        Some(body) => Message::Complete(body),
        None => Message::Incomplete,
    }
}

enum Record<'a> {
    Payload(&'a [u8]),
    Partial,
    NotHandshake,
}

/// Handshake records, checked as rustls checks their headers.
struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    fn next(&mut self) -> Record<'a> {
        // Judge each header byte as soon as it arrives, so that a client
        // speaking something else is handed to rustls (and refused) at once.
        match self.rest.first() {
            None => return Record::Partial,
            Some(&t) if t != CONTENT_HANDSHAKE => return Record::NotHandshake,
            Some(_) => {}
        }
        match self.rest.get(1) {
            Some(&major) if major != 3 => return Record::NotHandshake,
            _ => {}
        }
        let Some(header) = self.rest.get(..RECORD_HEADER) else {
            return Record::Partial;
        };
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len >= MAX_RECORD_PAYLOAD {
            return Record::NotHandshake;
        }
        match self.rest.get(RECORD_HEADER..RECORD_HEADER + len) {
            Some(payload) => {
                self.rest = &self.rest[RECORD_HEADER + len..];
                Record::Payload(payload)
            }
            None => Record::Partial,
        }
    }
}

/// The server name in a ClientHello body (RFC 8446 4.1.2, RFC 6066 3), as
/// rustls would keep it. Malformed input gives `None`: rustls refuses it.
fn server_name(body: &[u8]) -> Option<Box<str>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    let n = r.u8()?;
    r.take(n)?; // legacy_session_id
    let n = r.u16()?;
    r.take(n)?; // cipher_suites
    let n = r.u8()?;
    r.take(n)?; // legacy_compression_methods
    let n = r.u16()?;
    let mut extensions = Reader(r.take(n)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let n = extensions.u16()?;
        let mut data = Reader(extensions.take(n)?);
        if kind != EXTENSION_SERVER_NAME {
            continue;
        }
        let n = data.u16()?;
        let mut list = Reader(data.take(n)?);
        // rustls reads the first entry; one of another type ends its parse.
        if list.u8()? != NAME_TYPE_HOST_NAME {
            return None;
        }
        let n = list.u16()?;
        let name = list.take(n)?;
        return match ServerName::try_from(name) {
            Ok(ServerName::DnsName(name)) => Some(name.as_ref().to_ascii_lowercase().into()),
            _ => None,
        };
    }
    None
}

/// Bounds-checked reads from the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let taken = self.0.get(..n)?;
        self.0 = &self.0[n..];
        Some(taken)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    const MAX: usize = 18_437;

    /// The first flight of a real rustls client asking for `name`.
    fn client_hello_for(name: &str) -> Vec<u8> {
        let config = ClientConfig::builder_with_provider(crate::tls_config::tls_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut client = ClientConnection::new(Arc::new(config), name).unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        wire
    }

    /// The same handshake message, cut into records of `size` payload bytes.
    fn refragment(wire: &[u8], size: usize) -> Vec<u8> {
        let len = usize::from(u16::from_be_bytes([wire[3], wire[4]]));
        let payload = &wire[5..5 + len];
        let mut out = Vec::new();
        for chunk in payload.chunks(size) {
            out.extend_from_slice(&wire[..3]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    /// The name a real client sends is found, lowercased as rustls keeps it.
    #[test]
    fn finds_the_name_lowercased() {
        let wire = client_hello_for("Example.COM");
        assert_eq!(peek(&wire, MAX), Peek::Complete(Some("example.com".into())));
    }

    /// An IP address is not a server name (rustls's client does not even
    /// send one).
    #[test]
    fn an_ip_address_is_no_name() {
        let wire = client_hello_for("127.0.0.1");
        assert_eq!(peek(&wire, MAX), Peek::Complete(None));
    }

    /// Every proper prefix of a ClientHello waits for more; none is mistaken
    /// for something else.
    #[test]
    fn every_prefix_is_incomplete() {
        let wire = client_hello_for("localhost");
        for cut in 0..wire.len() {
            assert_eq!(peek(&wire[..cut], MAX), Peek::Incomplete, "cut at {cut}");
        }
    }

    /// A ClientHello spread over many small records is gathered.
    #[test]
    fn a_fragmented_hello_is_gathered() {
        let wire = refragment(&client_hello_for("localhost"), 7);
        assert_eq!(peek(&wire, MAX), Peek::Complete(Some("localhost".into())));
        for cut in 0..wire.len() {
            assert_eq!(peek(&wire[..cut], MAX), Peek::Incomplete, "cut at {cut}");
        }
    }

    /// Anything else goes to rustls at the first byte that shows it.
    #[test]
    fn other_protocols_are_left_to_rustls() {
        assert_eq!(peek(b"G", MAX), Peek::NotClientHello);
        assert_eq!(peek(b"\x16\x02", MAX), Peek::NotClientHello);
        // A handshake record that is not a ClientHello.
        assert_eq!(
            peek(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", MAX),
            Peek::NotClientHello
        );
        // An empty or oversized record.
        assert_eq!(peek(b"\x16\x03\x01\x00\x00", MAX), Peek::NotClientHello);
        assert_eq!(peek(b"\x16\x03\x01\x48\x00", MAX), Peek::NotClientHello);
    }

    /// A ClientHello announced larger than the caller holds is left to rustls.
    #[test]
    fn an_oversized_hello_is_not_gathered() {
        let wire = b"\x16\x03\x01\x00\x04\x01\x01\x00\x00";
        assert_eq!(peek(wire, MAX), Peek::NotClientHello);
        assert_eq!(peek(wire, 0x1_0004), Peek::Incomplete);
    }

    /// A mangled body gives no name rather than a panic, at every length.
    #[test]
    fn truncated_bodies_give_no_name() {
        let wire = client_hello_for("localhost");
        let body = &wire[5 + 4..];
        for cut in 0..body.len() {
            assert!(server_name(&body[..cut]).is_none(), "cut at {cut}");
        }
        assert_eq!(server_name(body).as_deref(), Some("localhost"));
    }
}
