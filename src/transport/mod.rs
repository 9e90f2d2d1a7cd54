//! Transports: what stands between a connection's socket and its framing.
//!
//! Every connection runs one pipeline, whatever it speaks:
//!
//! ```text
//! socket ─read─▶ transport.receive ─plaintext─▶ framing ─frames─▶ handler
//!                                                                   │ replies
//! socket ◀─write─ transport.seal ◀──────────plaintext────────────────┘
//! ```
//!
//! A transport is one implementation of that seam: [`Plain`] passes bytes
//! through untouched (and costs nothing: a zero-sized type whose methods
//! inline away), [`Tls`](tls::Tls) runs a rustls session. The driver
//! (`reactor/drive.rs`) is generic over the transport, so a plaintext loop
//! is compiled with no trace of TLS in it, and a new transport is a new
//! implementation of [`Transport`], never a second copy of the driver.
//!
//! A transport does no socket I/O of its own: it is handed the bytes the
//! driver read, and gives back the bytes the driver must write.

pub(crate) mod plain;
#[cfg(feature = "tls")]
pub(crate) mod tls;

pub(crate) use plain::Plain;

use crate::base::time::Millis;
use crate::error::Error;

/// What a transport hands up to the connection while it takes in bytes.
#[derive(Debug)]
pub(crate) enum Received<'a> {
    /// The handshake has just completed: the connection opens and its
    /// handler hears of it, before any plaintext.
    Established,
    /// Application bytes, in order.
    Plaintext(&'a [u8]),
    /// The peer ended the session cleanly (TLS close_notify).
    Closed,
}

/// What the handler may ask about a connection's secure session.
pub(crate) trait SessionInfo {
    /// The ALPN protocol agreed, if any.
    fn alpn_protocol(&self) -> Option<&[u8]>;
    /// The server name the client asked for (SNI), if any.
    fn server_name(&self) -> Option<&str>;
    /// The TLS version agreed.
    #[cfg(feature = "tls")]
    fn tls_version(&self) -> Option<rustls::ProtocolVersion>;
    /// The client's certificate chain, leaf first, if it sent one.
    #[cfg(feature = "tls")]
    fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]>;
}

/// Why a transport gave up on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportError {
    /// The peer broke the protocol (not TLS, a bad record, a failed
    /// handshake). An alert, if any, is already in the wire buffer.
    Protocol,
}

/// One implementation of the socket ⇄ framing seam.
///
/// `Loop` is what the transport shares across one event loop's connections
/// (for TLS: the config new sessions start from and a scratch buffer for
/// decrypted bytes), so that no connection owns a buffer of its own.
pub(crate) trait Transport: Sized + 'static {
    /// Per-loop state, made once per loop.
    type Loop;
    /// The refusal message can be written in the clear before the
    /// connection is closed (a TLS client would read it as garbage).
    const PLAINTEXT: bool;

    /// A transport for a newly admitted connection.
    ///
    /// # Errors
    ///
    /// The session could not be set up (the connection is dropped).
    fn start(shared: &mut Self::Loop) -> Result<Self, String>;

    /// Takes `input`, the bytes just read from the socket (the loop's read
    /// buffer, which a transport may decrypt in place: it is overwritten by
    /// the next read anyway). Application bytes and session events go to
    /// `deliver`, in order; when it says stop (the connection is closing),
    /// the rest is dropped. The handler's replies accumulate in `plain` for
    /// [`seal`](Transport::seal), once per batch; what the session itself
    /// sends (handshake flights, alerts) goes to `wire` at once, so it
    /// leaves ahead of replies sealed after it.
    ///
    /// Nothing is held for later: every complete record in `input` is
    /// delivered before this returns (a record cut by the read waits in the
    /// session for the rest of it), so a connection whose reading stops
    /// (backpressure) has nothing to resume but its socket.
    ///
    /// # Errors
    ///
    /// [`TransportError::Protocol`]: the session is over; an alert, if any,
    /// is in `wire` to be flushed before closing.
    fn receive(
        &mut self,
        shared: &mut Self::Loop,
        input: &mut [u8],
        plain: &mut Vec<u8>,
        wire: &mut Vec<u8>,
        deliver: impl FnMut(Received<'_>, Option<&dyn SessionInfo>, &mut Vec<u8>) -> bool,
    ) -> Result<(), TransportError>;

    /// The wire bytes for the handler's replies in `plain`: `plain` itself
    /// for plaintext, else `plain` sealed and appended to `wire`, then `wire`.
    /// Either way the caller writes what is returned and clears both.
    fn seal<'a>(&mut self, plain: &'a mut Vec<u8>, wire: &'a mut Vec<u8>) -> &'a mut Vec<u8>;

    /// Queues the end of the session (TLS close_notify) into `wire`, once;
    /// nothing is sealed after it.
    fn close(&mut self, wire: &mut Vec<u8>);

    /// What the handler may ask about the session; `None` for plaintext.
    fn info(&self) -> Option<&dyn SessionInfo>;

    /// True until the handshake is done (always false for plaintext).
    fn is_handshaking(&self) -> bool;

    /// While the connection holds one of the loop's handshake places: how
    /// far its handshake has come (bytes received), for choosing which
    /// handshake to give up when the loop is at
    /// [`max_handshakes`](crate::Builder::max_handshakes). `None` when it
    /// holds none: plaintext, or a handshake that is over (done or failed).
    fn handshake_progress(&self) -> Option<u32>;

    /// When this loop next looks whether its credentials were renewed (TLS:
    /// the certificate files, on one loop of a server given PEM paths, see
    /// [`Builder::tls_watch`](crate::Builder::tls_watch)); `None`: never.
    #[inline]
    fn credentials_check_at(_shared: &Self::Loop) -> Option<Millis> {
        None
    }

    /// Looks, if it is time: `None` when nothing changed; `Some(Ok(()))`
    /// when renewed credentials are in force for new connections;
    /// `Some(Err(_))` when changed ones do not load, and those in force
    /// stay.
    #[inline]
    fn check_credentials(_shared: &mut Self::Loop, _now: Millis) -> Option<Result<(), Error>> {
        None
    }
}
