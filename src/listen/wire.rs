//! The hand-over's messages, encoded and decoded without I/O.
//!
//! Every message is one frame:
//!
//! ```text
//! "NPHO"  version  type  body length   body
//!  4 B     1 B     1 B   2 B (BE)      ≤ MAX_BODY
//! ```
//!
//! | type | from | body |
//! |---|---|---|
//! | 1 `Offer` | old server | count (1 B), then per listener: kind (1 B: 1 TCP, 2 Unix), name length (1 B, 0 = no name), name (UTF-8) |
//! | 2 `Ready` | successor | empty: "I accept on them now" |
//! | 3 `Done` | old server | empty: "I stopped accepting; the control path is free" |
//! | 4 `Reject` | old server | UTF-8 reason |
//!
//! The listening descriptors travel beside the `Offer` frame as one
//! `SCM_RIGHTS` message, in the order of its entries. The magic rejects a
//! stray client that is not netpool; the version lets a newer netpool
//! refuse an older peer by name rather than misread it. Every length is
//! bounded, so a peer cannot make the other side allocate at will.

use std::io;

use super::{Kind, MAX_LISTENERS};

/// The longest listener name, in bytes (a one-byte length; systemd's
/// `FileDescriptorName=` has the same limit).
pub(super) const MAX_NAME_LEN: usize = 255;

/// The longest rejection reason, in bytes.
const MAX_REASON_LEN: usize = 512;

const MAGIC: &[u8; 4] = b"NPHO";
const VERSION: u8 = 1;
/// Magic, version, type, body length.
pub(super) const HEADER_LEN: usize = 8;

/// The largest body: an offer of the most listeners with the longest names.
const MAX_BODY: usize = 1 + MAX_LISTENERS * (2 + MAX_NAME_LEN);

/// The largest frame; a reader's buffer of this size always suffices.
pub(super) const MAX_FRAME: usize = HEADER_LEN + MAX_BODY;

const OFFER: u8 = 1;
const READY: u8 = 2;
const DONE: u8 = 3;
const REJECT: u8 = 4;

/// One hand-over message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Message {
    /// The listeners that come with this frame, in descriptor order.
    Offer(Vec<Entry>),
    /// The successor accepts on them now.
    Ready,
    /// The old server stopped accepting and gave up the control path.
    Done,
    /// The old server refuses this successor, and says why.
    Reject(String),
}

/// One offered listener: its kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) kind: Kind,
    pub(super) name: Option<String>,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Encodes `message` as one frame.
///
/// # Errors
///
/// `InvalidInput` if the message is beyond the limits: more than
/// [`MAX_LISTENERS`] entries, a name longer than [`MAX_NAME_LEN`], a reason
/// longer than 512 bytes.
pub(super) fn encode(message: &Message) -> io::Result<Vec<u8>> {
    let too_big = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let (ty, body) = match message {
        Message::Offer(entries) => {
            if entries.len() > MAX_LISTENERS {
                return Err(too_big(format!(
                    "{} listeners to hand over, at most {MAX_LISTENERS}",
                    entries.len()
                )));
            }
            let mut body = Vec::with_capacity(1 + entries.len() * 2);
            body.push(entries.len() as u8);
            for entry in entries {
                let name = entry.name.as_deref().unwrap_or("");
                if name.len() > MAX_NAME_LEN {
                    return Err(too_big(format!(
                        "listener name {name:?} is longer than {MAX_NAME_LEN} bytes"
                    )));
                }
                body.push(match entry.kind {
                    Kind::Tcp => 1,
                    Kind::Unix => 2,
                });
                body.push(name.len() as u8);
                body.extend_from_slice(name.as_bytes());
            }
            (OFFER, body)
        }
        Message::Ready => (READY, Vec::new()),
        Message::Done => (DONE, Vec::new()),
        Message::Reject(reason) => {
            if reason.len() > MAX_REASON_LEN {
                return Err(too_big(format!(
                    "rejection reason longer than {MAX_REASON_LEN} bytes"
                )));
            }
            (REJECT, reason.as_bytes().to_vec())
        }
    };
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(MAGIC);
    frame.push(VERSION);
    frame.push(ty);
    // MAX_BODY fits in u16: checked by a test.
    frame.extend_from_slice(&(body.len() as u16).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Decodes the frame at the start of `bytes`.
///
/// `Ok(None)`: not all of it has arrived; read more (a reader never needs
/// more than [`MAX_FRAME`] bytes). `Ok(Some((message, used)))`: `used`
/// bytes made the frame.
///
/// # Errors
///
/// `InvalidData`, naming what is wrong: not a netpool peer (magic), another
/// version, an unknown type, a length beyond the limits, a body that does
/// not parse. The header is checked as soon as it has arrived, so garbage
/// is refused without waiting for a body that may never come.
pub(super) fn decode(bytes: &[u8]) -> io::Result<Option<(Message, usize)>> {
    // Check what has arrived of the magic at once.
    let seen = bytes.len().min(MAGIC.len());
    if bytes[..seen] != MAGIC[..seen] {
        return Err(invalid(
            "not a netpool hand-over peer (bad magic)".to_string(),
        ));
    }
    if bytes.len() < HEADER_LEN {
        return Ok(None);
    }
    let (version, ty) = (bytes[4], bytes[5]);
    if version != VERSION {
        return Err(invalid(format!(
            "hand-over protocol version {version}, this netpool speaks {VERSION}"
        )));
    }
    let len = usize::from(u16::from_be_bytes([bytes[6], bytes[7]]));
    let max = match ty {
        OFFER => MAX_BODY,
        READY | DONE => 0,
        REJECT => MAX_REASON_LEN,
        _ => return Err(invalid(format!("unknown hand-over message type {ty}"))),
    };
    if len > max {
        return Err(invalid(format!(
            "hand-over message type {ty} of {len} bytes, at most {max}"
        )));
    }
    let Some(body) = bytes.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let message = match ty {
        OFFER => Message::Offer(decode_offer(body)?),
        READY => Message::Ready,
        DONE => Message::Done,
        _ => Message::Reject(
            String::from_utf8(body.to_vec())
                .map_err(|_| invalid("rejection reason is not UTF-8".to_string()))?,
        ),
    };
    Ok(Some((message, HEADER_LEN + len)))
}

fn decode_offer(body: &[u8]) -> io::Result<Vec<Entry>> {
    let truncated = || invalid("offer is truncated".to_string());
    let (&count, mut rest) = body.split_first().ok_or_else(truncated)?;
    let count = usize::from(count);
    if count > MAX_LISTENERS {
        return Err(invalid(format!(
            "offer of {count} listeners, at most {MAX_LISTENERS}"
        )));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let [kind, len, tail @ ..] = rest else {
            return Err(truncated());
        };
        let kind = match kind {
            1 => Kind::Tcp,
            2 => Kind::Unix,
            other => return Err(invalid(format!("unknown listener kind {other}"))),
        };
        let len = usize::from(*len);
        let name = tail.get(..len).ok_or_else(truncated)?;
        let name = std::str::from_utf8(name)
            .map_err(|_| invalid("listener name is not UTF-8".to_string()))?;
        entries.push(Entry {
            kind,
            name: (!name.is_empty()).then(|| name.to_string()),
        });
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err(invalid(format!(
            "{} stray bytes after the offer",
            rest.len()
        )));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, name: Option<&str>) -> Entry {
        Entry {
            kind,
            name: name.map(str::to_string),
        }
    }

    fn round_trip(message: Message) {
        let frame = encode(&message).unwrap();
        assert_eq!(decode(&frame).unwrap(), Some((message, frame.len())));
    }

    mod complete {
        use super::*;

        /// Every message survives encoding and decoding.
        #[test]
        fn every_message_round_trips() {
            round_trip(Message::Offer(vec![
                entry(Kind::Tcp, Some("web")),
                entry(Kind::Unix, None),
                entry(Kind::Tcp, Some("ünïcode")),
            ]));
            round_trip(Message::Offer(Vec::new()));
            round_trip(Message::Ready);
            round_trip(Message::Done);
            round_trip(Message::Reject("a hand-over is in progress".into()));
        }

        /// The largest offer fits the frame bound and the u16 length.
        #[test]
        fn largest_offer_fits() {
            let name = "n".repeat(MAX_NAME_LEN);
            let entries = vec![entry(Kind::Unix, Some(&name)); MAX_LISTENERS];
            let frame = encode(&Message::Offer(entries.clone())).unwrap();
            assert_eq!(frame.len(), MAX_FRAME);
            assert!(MAX_BODY <= usize::from(u16::MAX));
            round_trip(Message::Offer(entries));
        }

        /// A frame followed by more bytes reports how much it used.
        #[test]
        fn reports_bytes_used() {
            let mut bytes = encode(&Message::Ready).unwrap();
            bytes.extend_from_slice(&encode(&Message::Done).unwrap());
            let (message, used) = decode(&bytes).unwrap().unwrap();
            assert_eq!((message, used), (Message::Ready, HEADER_LEN));
        }
    }

    mod partial {
        use super::*;

        /// Every strict prefix of a frame is "read more".
        #[test]
        fn every_prefix_asks_for_more() {
            let frame = encode(&Message::Offer(vec![entry(Kind::Tcp, Some("web"))])).unwrap();
            for end in 0..frame.len() {
                assert_eq!(
                    decode(&frame[..end]).unwrap(),
                    None,
                    "prefix of {end} bytes"
                );
            }
        }
    }

    mod refused {
        use super::*;

        fn error(bytes: &[u8]) -> String {
            decode(bytes).expect_err("refused").to_string()
        }

        /// A peer that is not netpool is refused from its first byte.
        #[test]
        fn bad_magic() {
            assert!(error(b"G").contains("magic"));
            assert!(error(b"GET / HTTP/1.1\r\n").contains("magic"));
        }

        /// Another version is named.
        #[test]
        fn other_version() {
            let mut frame = encode(&Message::Ready).unwrap();
            frame[4] = 2;
            assert_eq!(
                error(&frame),
                "hand-over protocol version 2, this netpool speaks 1"
            );
        }

        /// Unknown types, and lengths beyond a type's bound, are refused
        /// from the header alone.
        #[test]
        fn bad_type_or_length() {
            assert!(error(b"NPHO\x01\x09\x00\x00").contains("unknown"));
            assert!(error(b"NPHO\x01\x02\x00\x01").contains("at most 0"));
            assert!(error(b"NPHO\x01\x04\xff\xff").contains("at most 512"));
        }

        /// Offer bodies are checked field by field.
        #[test]
        fn bad_offer_bodies() {
            let frame = |body: &[u8]| {
                let mut f = b"NPHO\x01\x01".to_vec();
                f.extend_from_slice(&(body.len() as u16).to_be_bytes());
                f.extend_from_slice(body);
                f
            };
            assert!(error(&frame(b"")).contains("truncated"));
            assert!(error(&frame(b"\x01\x01")).contains("truncated"));
            assert!(error(&frame(b"\x01\x01\x05web")).contains("truncated"));
            assert!(error(&frame(b"\x01\x03\x00")).contains("kind 3"));
            assert!(error(&frame(b"\x01\x01\x02\xff\xfe")).contains("UTF-8"));
            assert!(error(&frame(b"\x00\x01")).contains("stray"));
            assert!(error(&frame(&[65])).contains("at most 64"));
        }

        /// Encoding refuses what decoding would refuse.
        #[test]
        fn encode_checks_limits() {
            let long = "n".repeat(MAX_NAME_LEN + 1);
            assert!(encode(&Message::Offer(vec![entry(Kind::Tcp, Some(&long))])).is_err());
            let many = vec![entry(Kind::Tcp, None); MAX_LISTENERS + 1];
            assert!(encode(&Message::Offer(many)).is_err());
            assert!(encode(&Message::Reject("r".repeat(513))).is_err());
        }
    }
}
