//! One connection's TLS session, without I/O: socket bytes in, plaintext
//! out through a callback; plaintext in, wire bytes appended to a `Vec`.
//!
//! Built on rustls's unbuffered API (`UnbufferedServerConnection`), so
//! that an idle connection keeps only rustls's session state. The buffered
//! `ServerConnection` keeps a receive buffer and an outgoing queue for the
//! session's life, at their high-water size; here the loop's shared read
//! buffer is decrypted in place and TLS bytes go straight into the loop's
//! output `Vec`.
//!
//! # What a session holds between calls
//!
//! Only bytes rustls cannot use yet: the start of a record cut by a read
//! (`held`), plus, while a handshake message spans records, the records of
//! it that rustls has taken in (rustls reassembles them in place and must
//! see them again, at the same place, with the rest). Together they are
//! bounded by [`MAX_HELD`], one largest record; past it the connection is
//! refused. The allocation is freed as soon as it empties, so an idle
//! connection holds none. Decrypted plaintext is never kept: each record's
//! plaintext goes to the caller as soon as rustls has it. (rustls 0.23
//! decrypts in place, then copies each record's plaintext into a `Vec` of
//! its own, and encodes each outgoing record into one before copying it
//! out: short-lived allocations inside rustls, freed within the call.)
//!
//! # How the loop drives it
//!
//! - Bytes read from the socket: [`TlsSession::receive`], with the read
//!   buffer's filled part. Plaintext arrives through the callback; TLS bytes
//!   to send (handshake flights, alerts, key updates, tickets) are appended
//!   to `wire_out`, which the loop writes to the socket.
//! - [`Received::handshake_done`]: the handshake finished in this call. No
//!   plaintext was delivered after it in the same call, so the loop can meet
//!   the handler (which may ask [`TlsSession::alpn_protocol`] and friends)
//!   before the first line.
//! - [`Received::more`]: the call stopped before using all its input (the
//!   callback said stop, or the handshake just finished) and complete records
//!   wait in `held`. Call `receive` with empty input when ready (at once
//!   after greeting the handler; after backpressure eases otherwise). Until
//!   then, reading more from the socket is allowed but only piles up input.
//! - [`Received::peer_closed`]: close_notify arrived; nothing after it is read.
//! - Replies: [`TlsSession::send`]; closing: [`TlsSession::close_notify`].
//! - `Err`: the connection is over. Any alert rustls produced is already in
//!   `wire_out`; flush it, then close.

mod client_hello;

use std::fmt;
use std::mem;
use std::ops::ControlFlow;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{ProtocolVersion, ServerConfig, SupportedCipherSuite};

use client_hello::Peek;

/// TLS record header: content type (1), version (2), length (2).
const HEADER_LEN: usize = 5;

/// The largest TLS record rustls accepts, header included: its length field
/// must stay below 16 KiB + 2 KiB (TLS 1.2 ciphertext may carry 2 KiB of
/// expansion, RFC 5246 6.2.3).
pub(crate) const MAX_RECORD: usize = HEADER_LEN + 16_384 + 2_048;

/// The most a peer can make a session hold between reads: one largest
/// record. A handshake message spread over several records must fit in it
/// together with the record being received; rustls's buffered API allows
/// 64 KiB, which only a very long client-certificate chain would need.
pub(crate) const MAX_HELD: usize = MAX_RECORD;

/// The most a session holds while stopped (see [`Received::more`]): what the
/// loop gave it and it has not yet decrypted. A loop that keeps reading into
/// a stopped session is refused past this: two 64 KiB read buffers.
pub(crate) const MAX_BACKLOG: usize = 128 * 1024;

/// Room reserved per record when encrypting: header, TLS 1.2 explicit nonce,
/// TLS 1.3 content type, AEAD tag. A low guess only costs a second try.
const RECORD_OVERHEAD: usize = 32;

/// The largest plaintext in one record.
const MAX_FRAGMENT: usize = 16_384;

/// What a call to [`TlsSession::receive`] brought, besides plaintext.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// The handshake finished during this call. Nothing after it was
    /// decrypted: [`Received::more`] says whether records wait.
    pub(crate) handshake_done: bool,
    /// The peer sent close_notify: no more plaintext will come, and bytes
    /// after it are dropped. We may still send, then close.
    pub(crate) peer_closed: bool,
    /// Complete records are held undecrypted because the call stopped early;
    /// call `receive` with empty input to go on.
    pub(crate) more: bool,
}

/// Why a session gave up. The connection cannot continue after any of them.
#[derive(Debug)]
pub(crate) enum TlsError {
    /// rustls refused what the peer sent (not TLS, a bad record, a failed
    /// handshake, a fatal alert from the peer). The alert rustls sends back,
    /// if any, is already in `wire_out`.
    Rustls(rustls::Error),
    /// The peer made the session hold more than [`MAX_HELD`] bytes (a
    /// handshake message too large), or a stopped session was fed past
    /// [`MAX_BACKLOG`]. No alert: rustls's unbuffered API offers no way to
    /// send one of our own.
    TooLarge,
    /// [`TlsSession::send`] before rustls may send application data.
    NotReady,
    /// rustls can encrypt no more with these keys (a TLS 1.2 connection
    /// reached its record limit; rustls has queued close_notify).
    EncryptExhausted,
    /// An earlier call failed; the session cannot be used any more.
    Failed,
    /// rustls returned a state this code does not handle (the state enum is
    /// `#[non_exhaustive]`), or application data where none can be.
    Unexpected(&'static str),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Rustls(e) => write!(f, "TLS error: {e}"),
            TlsError::TooLarge => write!(
                f,
                "TLS input held past its bound ({MAX_HELD} bytes between reads)"
            ),
            TlsError::NotReady => f.write_str("TLS handshake not far enough to send data"),
            TlsError::EncryptExhausted => f.write_str("TLS keys exhausted"),
            TlsError::Failed => f.write_str("TLS session already failed"),
            TlsError::Unexpected(what) => write!(f, "unexpected TLS state: {what}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Rustls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Rustls(e)
    }
}

/// The client's server name, once its ClientHello has been read.
#[derive(Debug)]
enum Sni {
    /// The ClientHello is not complete yet: bytes are held for it.
    Unread,
    /// Read; `None` when the client sent none (or not a usable one).
    Read(Option<Box<str>>),
}

/// One TLS connection, server side. See the module doc for how to drive it.
pub(crate) struct TlsSession {
    conn: UnbufferedServerConnection,
    /// Received bytes rustls has not discarded (see the module doc); empty,
    /// without an allocation, when there are none.
    held: Vec<u8>,
    /// How much of the front of `held` rustls has already taken in (the
    /// records of an unfinished handshake message). Zero whenever `held`
    /// has undecrypted complete records after a stop.
    held_taken: u32,
    sni: Sni,
    /// Bytes received while handshaking, for [`TlsSession::handshake_progress`].
    handshake_bytes: u32,
    peer_closed: bool,
    close_notify_sent: bool,
    /// A call failed: the connection is over, and rustls is not called
    /// again (it would raise a second fatal alert).
    failed: bool,
}

impl fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.is_handshaking())
            .field("held", &self.held.len())
            .field("held_taken", &self.held_taken)
            .field("sni", &self.sni)
            .field("handshake_bytes", &self.handshake_bytes)
            .field("peer_closed", &self.peer_closed)
            .field("close_notify_sent", &self.close_notify_sent)
            .field("failed", &self.failed)
            .finish()
    }
}

/// How far one run of rustls over a buffer went.
#[derive(Debug)]
struct Driven {
    /// Bytes at the front of the buffer rustls is done with.
    discarded: usize,
    /// Bytes at the front of the buffer rustls has taken in (≥ `discarded`).
    taken: usize,
    /// The run ended early: the callback said stop, or the handshake has
    /// just completed. Nothing more may be decrypted in this call.
    stop: bool,
}

/// Why rustls handed control back.
enum Pause {
    /// It needs more bytes than it was given.
    NeedInput,
    /// The callback asked to stop after a record.
    Stop,
    /// Both sides have sent close_notify.
    Closed,
}

impl TlsSession {
    /// A session for one accepted connection, in its handshake.
    ///
    /// # Errors
    ///
    /// What rustls says when the config cannot serve (no usable protocol
    /// version, for instance).
    pub(crate) fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(TlsSession {
            conn: UnbufferedServerConnection::new(config)?,
            held: Vec::new(),
            held_taken: 0,
            sni: Sni::Unread,
            handshake_bytes: 0,
            peer_closed: false,
            close_notify_sent: false,
            failed: false,
        })
    }

    /// Feeds bytes just read from the socket.
    ///
    /// `input` is decrypted in place (it is the loop's read buffer, reused
    /// for the next read). Each record's plaintext goes to `on_plaintext`
    /// at once, in order; it returns `ControlFlow::Break(())` to stop after
    /// that record (backpressure, or the connection is closing). What is not
    /// decrypted then stays in the session: [`Received::more`] says whether
    /// complete records wait, and `receive` with empty input goes on.
    ///
    /// TLS bytes to send are appended to `wire_out`. A call with empty input
    /// does nothing unless records are held.
    ///
    /// # Errors
    ///
    /// [`TlsError`]: the connection is over. Any alert is already in
    /// `wire_out`.
    pub(crate) fn receive(
        &mut self,
        input: &mut [u8],
        wire_out: &mut Vec<u8>,
        on_plaintext: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<Received, TlsError> {
        if self.failed {
            return Err(TlsError::Failed);
        }
        let result = self.receive_inner(input, wire_out, on_plaintext);
        if result.is_err() {
            self.failed = true;
            self.set_held(Vec::new(), 0);
        }
        result
    }

    fn receive_inner(
        &mut self,
        input: &mut [u8],
        wire_out: &mut Vec<u8>,
        mut on_plaintext: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<Received, TlsError> {
        let mut got = Received::default();
        if self.peer_closed {
            // "Any data received after a closure alert has been received
            // MUST be ignored." (RFC 8446 6.1)
            self.set_held(Vec::new(), 0);
            return Ok(got);
        }
        if self.is_handshaking() {
            let n = u32::try_from(input.len()).unwrap_or(u32::MAX);
            self.handshake_bytes = self.handshake_bytes.saturating_add(n);
        }
        let mut input = input;
        if !self.held.is_empty() {
            let mut held = mem::take(&mut self.held);
            let result =
                self.receive_held(&mut held, &mut input, wire_out, &mut on_plaintext, &mut got);
            // An emptied `held` is dropped here: its allocation is freed.
            let taken = self.held_taken as usize;
            self.set_held(held, taken);
            if result? {
                got.more = self.holds_a_record();
                return Ok(got);
            }
            if input.is_empty() || self.peer_closed {
                return Ok(got);
            }
            debug_assert!(
                self.held.is_empty(),
                "input is left only once held is used up"
            );
        }
        let driven = self.drive(input, 0, wire_out, &mut on_plaintext, &mut got)?;
        let rest = &input[driven.discarded..];
        // After a stop, the rest is what the loop read and has not let us
        // decrypt yet: bounded by its read buffer, not by MAX_HELD.
        if !driven.stop && rest.len() > MAX_HELD {
            return Err(TlsError::TooLarge);
        }
        if !rest.is_empty() {
            self.set_held(rest.to_vec(), driven.taken - driven.discarded);
        }
        if driven.stop {
            got.more = self.holds_a_record();
        }
        Ok(got)
    }

    /// The held bytes first, then `input` moved into `held` one record at a
    /// time until rustls has discarded all of it; what remains of `input`
    /// can then be decrypted in place. Returns whether a run stopped early
    /// (the rest of `input` is then held too, undecrypted).
    fn receive_held(
        &mut self,
        held: &mut Vec<u8>,
        input: &mut &mut [u8],
        wire_out: &mut Vec<u8>,
        on_plaintext: &mut impl FnMut(&[u8]) -> ControlFlow<()>,
        got: &mut Received,
    ) -> Result<bool, TlsError> {
        loop {
            let taken = self.held_taken as usize;
            let driven = self.drive(held, taken, wire_out, on_plaintext, got)?;
            held.drain(..driven.discarded);
            self.held_taken = as_u32(driven.taken - driven.discarded);
            if driven.stop {
                if !input.is_empty() {
                    if held.len() + input.len() > MAX_BACKLOG {
                        return Err(TlsError::TooLarge);
                    }
                    held.extend_from_slice(input);
                    *input = &mut [];
                }
                return Ok(true);
            }
            if held.is_empty() || input.is_empty() || self.peer_closed {
                return Ok(false);
            }
            // `held` is [taken][partial record]: complete that record (or,
            // if it ends on a boundary, read the next header) from `input`.
            // Before the ClientHello is read, complete records may precede
            // the partial one.
            let partial = &held[self.held_taken as usize..];
            let partial = &partial[last_record_end(partial, 0)..];
            let need = match partial.get(..HEADER_LEN) {
                None => HEADER_LEN - partial.len(),
                Some(header) => record_len(header) - partial.len(),
            };
            let n = need.min(input.len());
            if held.len() + n > MAX_HELD {
                return Err(TlsError::TooLarge);
            }
            held.extend_from_slice(&input[..n]);
            *input = &mut mem::take(input)[n..];
        }
    }

    /// Keeps `held` (with `taken` bytes of it taken in by rustls), or frees
    /// it when empty or when the peer has closed.
    fn set_held(&mut self, held: Vec<u8>, taken: usize) {
        if held.is_empty() || self.peer_closed {
            self.held = Vec::new();
            self.held_taken = 0;
        } else {
            self.held_taken = as_u32(taken);
            self.held = held;
        }
    }

    /// Whether `held` has a complete record rustls has not taken in.
    fn holds_a_record(&self) -> bool {
        let taken = self.held_taken as usize;
        last_record_end(&self.held, taken) > taken
    }

    /// Runs rustls over `buf`, of which it has taken in `taken` bytes
    /// before, until it needs more input or has to stop.
    ///
    /// While handshaking, records are given to rustls one at a time, so that
    /// the call can end right after the one that completes the handshake,
    /// before any application data is decrypted. Each time, the header of the
    /// following record comes too, so that rustls refuses a bad one at once
    /// rather than after its announced length has arrived.
    fn drive(
        &mut self,
        buf: &mut [u8],
        mut taken: usize,
        wire_out: &mut Vec<u8>,
        on_plaintext: &mut impl FnMut(&[u8]) -> ControlFlow<()>,
        got: &mut Received,
    ) -> Result<Driven, TlsError> {
        let mut start = 0; // rustls is done with buf[..start]
        loop {
            if let Sni::Unread = self.sni {
                match client_hello::peek(&buf[taken..], MAX_HELD) {
                    Peek::Incomplete => {
                        return Ok(Driven {
                            discarded: start,
                            taken,
                            stop: false,
                        })
                    }
                    Peek::Complete(name) => self.sni = Sni::Read(name),
                    Peek::NotClientHello => self.sni = Sni::Read(None),
                }
            }
            let handshaking = self.is_handshaking();
            let end = if handshaking {
                next_record_end(buf, taken)
            } else {
                last_record_end(buf, taken)
            };
            let feed = buf.len().min(end + HEADER_LEN);
            if feed == taken {
                return Ok(Driven {
                    discarded: start,
                    taken,
                    stop: false,
                });
            }
            let (discarded, pause) =
                self.process(&mut buf[start..feed], wire_out, on_plaintext, got)?;
            start += discarded;
            match pause {
                Pause::NeedInput if end == taken => {
                    // Only a header was shown, and rustls found no fault.
                    return Ok(Driven {
                        discarded: start,
                        taken,
                        stop: false,
                    });
                }
                Pause::NeedInput => {
                    // rustls takes in every complete record it is given.
                    taken = end;
                    if self.peer_closed {
                        return Ok(all_of(buf));
                    }
                    if handshaking && !self.is_handshaking() {
                        got.handshake_done = true;
                        return Ok(Driven {
                            discarded: start,
                            taken,
                            stop: true,
                        });
                    }
                }
                Pause::Stop => {
                    if self.peer_closed {
                        return Ok(all_of(buf));
                    }
                    // rustls stopped right after an application-data record,
                    // which it discards at once; handshake records cannot be
                    // pending around it (RFC 8446 5.1 forbids interleaving).
                    return Ok(Driven {
                        discarded: start,
                        taken: start,
                        stop: true,
                    });
                }
                Pause::Closed => return Ok(all_of(buf)),
            }
        }
    }

    /// One exchange with rustls over `buf`: its states are handled until it
    /// needs input, the callback says stop, or the connection is closed.
    /// Returns how many bytes rustls discarded from the front of `buf`.
    fn process(
        &mut self,
        buf: &mut [u8],
        wire_out: &mut Vec<u8>,
        on_plaintext: &mut impl FnMut(&[u8]) -> ControlFlow<()>,
        got: &mut Received,
    ) -> Result<(usize, Pause), TlsError> {
        let mut discarded = 0;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut buf[discarded..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    discarded += discard;
                    self.flush_alert(&mut buf[discarded..], wire_out);
                    return Err(e.into());
                }
            };
            let mut flow = ControlFlow::Continue(());
            let pause = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    // One record per state in rustls 0.23; all are handed out
                    // before a stop, so rustls never keeps plaintext.
                    while let Some(record) = records.next_record() {
                        let record = record?;
                        discard += record.discard;
                        if on_plaintext(record.payload).is_break() {
                            flow = ControlFlow::Break(());
                        }
                    }
                    None
                }
                // 0-RTT data reaches the callback only if the config enables
                // it (`max_early_data_size`; netpool's own configs do not).
                // It comes before the handshake is done and can be replayed.
                ConnectionState::ReadEarlyData(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record?;
                        discard += record.discard;
                        if on_plaintext(record.payload).is_break() {
                            flow = ControlFlow::Break(());
                        }
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut message) => {
                    encode(wire_out, |out| message.encode(out))?;
                    None
                }
                // The bytes are in `wire_out`, which the loop writes.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {
                    Some(Pause::NeedInput)
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    got.peer_closed = true;
                    None
                }
                ConnectionState::Closed => Some(Pause::Closed),
                _ => return Err(TlsError::Unexpected("unknown rustls connection state")),
            };
            discarded += discard;
            if flow.is_break() {
                return Ok((discarded, Pause::Stop));
            }
            if let Some(pause) = pause {
                return Ok((discarded, pause));
            }
        }
    }

    /// After rustls failed: it has queued its alert, and hands it out before
    /// anything else. `buf` is what it has not discarded.
    fn flush_alert(&mut self, buf: &mut [u8], wire_out: &mut Vec<u8>) {
        self.failed = true;
        // rustls hands out queued output before it deframes anything, and
        // must not deframe the bad bytes again (it would raise a second
        // fatal alert), so ask only while output is queued.
        while self.conn.wants_write() {
            match self.conn.process_tls_records(buf).state {
                Ok(ConnectionState::EncodeTlsData(mut message)) => {
                    if encode(wire_out, |out| message.encode(out)).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Encrypts `plaintext` as application data, appending records of at
    /// most 16 KiB of plaintext to `wire_out`. Does nothing after
    /// [`TlsSession::close_notify`]: the peer would ignore it.
    ///
    /// # Errors
    ///
    /// [`TlsError::NotReady`] before rustls may send application data (the
    /// loop sends only once the handshake is done);
    /// [`TlsError::EncryptExhausted`] when the keys may encrypt no more.
    pub(crate) fn send(
        &mut self,
        plaintext: &[u8],
        wire_out: &mut Vec<u8>,
    ) -> Result<(), TlsError> {
        if self.failed {
            return Err(TlsError::Failed);
        }
        if plaintext.is_empty() || self.close_notify_sent {
            return Ok(());
        }
        let records = plaintext.len().div_ceil(MAX_FRAGMENT);
        let estimate = plaintext.len() + records * RECORD_OVERHEAD;
        self.with_write_traffic(wire_out, |traffic, wire_out| {
            let at = wire_out.len();
            wire_out.resize(at + estimate, 0);
            let written = match traffic.encrypt(plaintext, &mut wire_out[at..]) {
                Ok(n) => n,
                Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    // Output rustls had queued (a key update) goes first.
                    wire_out.resize(at + required_size, 0);
                    match traffic.encrypt(plaintext, &mut wire_out[at..]) {
                        Ok(n) => n,
                        Err(e) => {
                            wire_out.truncate(at);
                            return Err(encrypt_error(e));
                        }
                    }
                }
                Err(e) => {
                    wire_out.truncate(at);
                    return Err(encrypt_error(e));
                }
            };
            wire_out.truncate(at + written);
            Ok(())
        })
    }

    /// Queues close_notify into `wire_out`, once; nothing is encrypted after
    /// it. Before the handshake has reached the point where rustls may send
    /// application data, rustls's unbuffered API cannot send it: then
    /// nothing is appended, and the loop simply closes.
    pub(crate) fn close_notify(&mut self, wire_out: &mut Vec<u8>) {
        if mem::replace(&mut self.close_notify_sent, true) || self.failed {
            return;
        }
        let queued = self.with_write_traffic(wire_out, |traffic, wire_out| {
            let at = wire_out.len();
            // An alert record: header, two bytes, and the AEAD's expansion.
            wire_out.resize(at + HEADER_LEN + 2 + RECORD_OVERHEAD, 0);
            let written = match traffic.queue_close_notify(&mut wire_out[at..]) {
                Ok(n) => Ok(n),
                Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    // Output rustls had queued goes first.
                    wire_out.resize(at + required_size, 0);
                    traffic.queue_close_notify(&mut wire_out[at..])
                }
                Err(e) => Err(e),
            };
            match written {
                Ok(n) => {
                    wire_out.truncate(at + n);
                    Ok(())
                }
                Err(e) => {
                    wire_out.truncate(at);
                    Err(encrypt_error(e))
                }
            }
        });
        if let Err(e) = queued {
            log::debug!("close_notify not sent: {e}");
        }
    }

    /// Brings rustls to its `WriteTraffic` state, writing out whatever TLS
    /// it had queued first, and runs `f` in it.
    fn with_write_traffic(
        &mut self,
        wire_out: &mut Vec<u8>,
        f: impl FnOnce(
            &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
            &mut Vec<u8>,
        ) -> Result<(), TlsError>,
    ) -> Result<(), TlsError> {
        // rustls must see the records it has taken in again (they are not
        // discarded until their handshake message completes), but no new
        // ones: those could only be decrypted by `receive`.
        let mut held = mem::take(&mut self.held);
        let taken = (self.held_taken as usize).min(held.len());
        let mut f = Some(f);
        let result = loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut held[..taken]);
            debug_assert_eq!(discard, 0, "nothing new was given");
            match state {
                Err(e) => {
                    self.flush_alert(&mut held[..taken], wire_out);
                    break Err(e.into());
                }
                Ok(ConnectionState::EncodeTlsData(mut message)) => {
                    if let Err(e) = encode(wire_out, |out| message.encode(out)) {
                        break Err(e);
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match f.take() {
                    Some(f) => break f(&mut traffic, wire_out),
                    // Unreachable: the first WriteTraffic ends the loop.
                    None => break Err(TlsError::Unexpected("WriteTraffic twice")),
                },
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                }
                Ok(ConnectionState::BlockedHandshake) => break Err(TlsError::NotReady),
                // Only after our own close_notify, which `send` checks first.
                Ok(ConnectionState::Closed) => break Ok(()),
                Ok(ConnectionState::ReadTraffic(_) | ConnectionState::ReadEarlyData(_)) => {
                    break Err(TlsError::Unexpected("plaintext pending while sending"))
                }
                Ok(_) => break Err(TlsError::Unexpected("unknown rustls connection state")),
            }
        };
        self.held = held;
        // Too early to send is the caller's mistake, not the connection's.
        if result
            .as_ref()
            .is_err_and(|e| !matches!(e, TlsError::NotReady))
        {
            self.failed = true;
        }
        result
    }

    /// True until the handshake is complete (rustls's `is_handshaking`).
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Bytes received while handshaking (saturating): how far a handshake
    /// has come, for choosing which one to give up when too many are open. A
    /// client that sends its ClientHello and goes silent stays at a few
    /// hundred bytes; one that completes sends its second flight.
    pub(crate) fn handshake_progress(&self) -> u32 {
        self.handshake_bytes
    }

    /// The ALPN protocol agreed, once the handshake has chosen one.
    pub(crate) fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The server name (SNI) the client asked for, lowercased, once its
    /// ClientHello has arrived. Read by netpool itself (see
    /// `client_hello.rs`): rustls's unbuffered API does not expose it.
    pub(crate) fn server_name(&self) -> Option<&str> {
        match &self.sni {
            Sni::Read(name) => name.as_deref(),
            Sni::Unread => None,
        }
    }

    /// TLS 1.2 or 1.3, once agreed.
    pub(crate) fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The cipher suite agreed, once chosen.
    pub(crate) fn negotiated_cipher_suite(&self) -> Option<SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    /// The client's certificate chain, if the config asked for one and the
    /// client sent it.
    pub(crate) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Bytes held between calls (for tests).
    #[cfg(test)]
    pub(crate) fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Heap capacity held between calls: zero when nothing is held.
    #[cfg(any(test, feature = "__internals"))]
    pub(crate) fn held_capacity(&self) -> usize {
        self.held.capacity()
    }
}

/// Everything in `buf` is done with (the peer closed: the rest is ignored).
fn all_of(buf: &[u8]) -> Driven {
    Driven {
        discarded: buf.len(),
        taken: buf.len(),
        stop: false,
    }
}

/// The record length announced by a header, header included.
fn record_len(header: &[u8]) -> usize {
    HEADER_LEN + usize::from(u16::from_be_bytes([header[3], header[4]]))
}

/// The end of the complete record starting at `from`, or `from` if it is
/// not complete.
fn next_record_end(buf: &[u8], from: usize) -> usize {
    match buf.get(from..from + HEADER_LEN) {
        Some(header) if from + record_len(header) <= buf.len() => from + record_len(header),
        _ => from,
    }
}

/// The end of the last complete record in `buf[from..]`, records starting
/// at `from`.
fn last_record_end(buf: &[u8], from: usize) -> usize {
    let mut end = from;
    loop {
        let next = next_record_end(buf, end);
        if next == end {
            return end;
        }
        end = next;
    }
}

/// Appends what `write` produces to `out`, sized by its first refusal.
fn encode(
    out: &mut Vec<u8>,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), TlsError> {
    let at = out.len();
    let size = match write(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
        Err(EncodeError::AlreadyEncoded) => {
            return Err(TlsError::Unexpected("TLS message encoded twice"))
        }
    };
    out.resize(at + size, 0);
    match write(&mut out[at..]) {
        Ok(n) => {
            out.truncate(at + n);
            Ok(())
        }
        Err(_) => {
            out.truncate(at);
            Err(TlsError::Unexpected("TLS message changed size"))
        }
    }
}

fn encrypt_error(e: EncryptError) -> TlsError {
    match e {
        EncryptError::EncryptExhausted => TlsError::EncryptExhausted,
        EncryptError::InsufficientSize(_) => TlsError::Unexpected("TLS record changed size"),
    }
}

/// `held` never exceeds [`MAX_BACKLOG`], so its offsets fit.
fn as_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The session, reachable from `tests/tls_memory.rs` (feature
/// `__internals`, on for this crate's tests only).
#[cfg(feature = "__internals")]
pub mod internals;

#[cfg(test)]
mod tests;
