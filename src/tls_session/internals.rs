use std::ops::ControlFlow;
use std::sync::Arc;

use rustls::ServerConfig;

/// A [`TlsSession`](super::TlsSession) behind a public face.
#[derive(Debug)]
pub struct Session(super::TlsSession);

/// The size of the session struct itself, without what it points to.
pub const SESSION_SIZE: usize = std::mem::size_of::<super::TlsSession>();

impl Session {
    /// See `TlsSession::new`.
    pub fn new(config: Arc<ServerConfig>) -> Result<Session, rustls::Error> {
        super::TlsSession::new(config).map(Session)
    }

    /// See `TlsSession::receive`; plaintext is appended to `plaintext`.
    pub fn receive(
        &mut self,
        input: &mut [u8],
        wire_out: &mut Vec<u8>,
        plaintext: &mut Vec<u8>,
    ) -> Result<(), String> {
        self.0
            .receive(input, wire_out, |p| {
                plaintext.extend_from_slice(p);
                ControlFlow::Continue(())
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// See `TlsSession::send`.
    pub fn send(&mut self, plaintext: &[u8], wire_out: &mut Vec<u8>) -> Result<(), String> {
        self.0.send(plaintext, wire_out).map_err(|e| e.to_string())
    }

    /// See `TlsSession::is_handshaking`.
    pub fn is_handshaking(&self) -> bool {
        self.0.is_handshaking()
    }

    /// Heap capacity of the held-input buffer.
    pub fn held_capacity(&self) -> usize {
        self.0.held_capacity()
    }
}
