//! The TLS transport: a rustls session between the socket and the framing.
//!
//! # How a session is driven
//!
//! The driver reads the socket into the loop's shared read buffer, as for
//! plaintext, and hands the bytes here. Per chunk rustls takes
//! (`read_tls`, at most a few KiB at a time), the session decrypts
//! (`process_new_packets`), and every decrypted byte is handed up at once
//! (through the loop's one scratch buffer, [`TlsLoop`]), so rustls's 16 KiB
//! received-plaintext limit is never reached. What rustls wants to send
//! (handshake flights, alerts) and the sealed replies go to the driver's
//! wire buffer, in order; the driver writes it like plaintext output, and
//! what the socket does not take waits in the connection's output queue.
//!
//! # Handshakes
//!
//! The handler meets a connection (`on_connect`) when its handshake is done
//! ([`Received::Established`]); one whose handshake fails, times out or is
//! cut by a stop never reaches it. Until then the session holds one of the
//! loop's [`max_handshakes`](crate::Builder::max_handshakes) places, a
//! [`HandshakePlace`] dropped when the handshake ends, however it ends.
//!
//! # Memory
//!
//! An idle TLS connection costs about 7.5 KiB (measured with 5,000 idle
//! connections: RSS per connection), against about 150 bytes for plaintext:
//! the boxed rustls session (about 1.2 KiB), its keys, and rustls's 4 KiB
//! receive buffer, which its buffered API keeps for the session's life.
//!
//! # Backpressure
//!
//! rustls buffers nothing between events: every TLS byte it produces is
//! moved to the driver's wire buffer at once, and from there to the socket
//! or the connection's output queue. So the queue holds exactly the TLS
//! bytes the peer has yet to receive, record overhead included, and the
//! water marks and [`output_limit`](crate::Builder::output_limit) count
//! what really waits, with no estimate.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::server::ServerConnection;

use super::{Received, SessionInfo, Transport, TransportError};
use crate::limits::{HandshakePlace, Handshakes};
use crate::tls_config::TlsShared;

/// What one loop's TLS connections share: the config new sessions start
/// from, the loop's handshake places, and one scratch buffer for decrypted
/// bytes (so that no session owns one).
#[derive(Debug)]
pub(crate) struct TlsLoop {
    config: Arc<TlsShared>,
    handshakes: Arc<Handshakes>,
    plaintext: Box<[u8]>,
}

impl TlsLoop {
    pub(crate) fn new(config: Arc<TlsShared>, handshakes: Arc<Handshakes>) -> Self {
        TlsLoop {
            config,
            handshakes,
            // rustls hands out at most one record's plaintext at a time.
            plaintext: vec![0; 16 * 1024].into_boxed_slice(),
        }
    }
}

/// One connection's TLS session. Boxed: eight bytes in the connection.
#[derive(Debug)]
pub(crate) struct Tls(Box<Session>);

#[derive(Debug)]
struct Session {
    tls: ServerConnection,
    /// Held while the handshake is in progress.
    handshake: Option<HandshakePlace>,
    /// Our close_notify is queued: nothing may be sealed after it.
    closed: bool,
}

impl Session {
    /// Moves every TLS byte rustls has produced into `wire`.
    fn drain(&mut self, wire: &mut Vec<u8>) {
        while self.tls.wants_write() {
            // Writing to a `Vec` cannot fail.
            if !matches!(self.tls.write_tls(wire), Ok(n) if n > 0) {
                break;
            }
        }
    }

    /// Encrypts the replies in `plain` into `wire`. Nothing is sealed
    /// after our close_notify: the peer would ignore it.
    fn seal(&mut self, plain: &mut Vec<u8>, wire: &mut Vec<u8>) {
        if !plain.is_empty() && !self.closed {
            // Without a buffer limit (see `start`) the writer takes it all;
            // it fails only after a TLS error, which is closing the
            // connection anyway.
            if let Err(e) = self.tls.writer().write_all(plain) {
                log::debug!("TLS: replies not sealed: {e}");
            }
        }
        plain.clear();
        self.drain(wire);
    }
}

impl Transport for Tls {
    type Loop = TlsLoop;
    const PLAINTEXT: bool = false;

    fn start(shared: &mut TlsLoop) -> Result<Self, String> {
        let mut tls = ServerConnection::new(shared.config.current()).map_err(|e| e.to_string())?;
        // Every TLS byte is moved out of rustls at once, and the connection's
        // queue is bounded by the driver; rustls's own 64 KiB limit would
        // only turn a large reply into a short write.
        tls.set_buffer_limit(None);
        Ok(Tls(Box::new(Session {
            tls,
            handshake: Some(shared.handshakes.take()),
            closed: false,
        })))
    }

    fn receive(
        &mut self,
        shared: &mut TlsLoop,
        input: &[u8],
        plain: &mut Vec<u8>,
        wire: &mut Vec<u8>,
        mut deliver: impl FnMut(Received<'_>, Option<&dyn SessionInfo>, &mut Vec<u8>) -> bool,
    ) -> Result<(), TransportError> {
        let s = &mut *self.0;
        let mut rest = input;
        while !rest.is_empty() {
            match s.tls.read_tls(&mut rest) {
                // After the peer's close_notify rustls takes nothing more.
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    // rustls says InvalidData for a handshake message too
                    // large for its buffer: a TLS error like any other.
                    log::debug!("TLS: read_tls failed: {e}");
                    return Err(TransportError::Protocol);
                }
            }
            let was_handshaking = s.tls.is_handshaking();
            if let Err(e) = s.tls.process_new_packets() {
                // Not TLS, or a bad record: rustls has queued an alert, which
                // the driver flushes before closing.
                log::debug!("TLS error: {e}");
                s.drain(wire);
                return Err(TransportError::Protocol);
            }
            if was_handshaking && !s.tls.is_handshaking() {
                s.handshake = None;
                log::debug!(
                    "TLS established: {:?}, {:?}, ALPN {:?}",
                    s.tls.protocol_version(),
                    s.tls.negotiated_cipher_suite().map(|c| c.suite()),
                    s.tls.alpn_protocol().map(String::from_utf8_lossy),
                );
                // The handshake's last flight leaves before any greeting.
                s.drain(wire);
                let go = deliver(Received::Established, Some(&s.tls), plain);
                s.seal(plain, wire);
                if !go {
                    return Ok(());
                }
            }
            // Take every decrypted byte now: rustls stops reading once 16 KiB
            // of plaintext wait.
            loop {
                match s.tls.reader().read(&mut shared.plaintext) {
                    Ok(0) => {
                        deliver(Received::Closed, Some(&s.tls), plain);
                        s.seal(plain, wire);
                        return Ok(());
                    }
                    Ok(n) => {
                        let go = deliver(
                            Received::Plaintext(&shared.plaintext[..n]),
                            Some(&s.tls),
                            plain,
                        );
                        s.seal(plain, wire);
                        if !go {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::debug!("TLS: plaintext unreadable: {e}");
                        return Err(TransportError::Protocol);
                    }
                }
            }
            s.drain(wire);
        }
        Ok(())
    }

    fn seal<'a>(&mut self, plain: &'a mut Vec<u8>, wire: &'a mut Vec<u8>) -> &'a mut Vec<u8> {
        self.0.seal(plain, wire);
        wire
    }

    fn close(&mut self, wire: &mut Vec<u8>) {
        let s = &mut *self.0;
        if !s.closed {
            s.closed = true;
            s.tls.send_close_notify();
            s.drain(wire);
        }
    }

    fn info(&self) -> Option<&dyn SessionInfo> {
        Some(&self.0.tls)
    }

    fn is_handshaking(&self) -> bool {
        self.0.tls.is_handshaking()
    }
}

impl SessionInfo for ServerConnection {
    fn alpn_protocol(&self) -> Option<&[u8]> {
        rustls::CommonState::alpn_protocol(self)
    }

    fn server_name(&self) -> Option<&str> {
        rustls::ServerConnection::server_name(self)
    }

    fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        self.protocol_version()
    }

    fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        rustls::CommonState::peer_certificates(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::ServerConfig;

    fn config() -> (
        Arc<ServerConfig>,
        rustls::pki_types::CertificateDer<'static>,
    ) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
        let cert = c.cert.der().clone();
        let config = ServerConfig::builder_with_provider(crate::tls_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        (Arc::new(config), cert)
    }

    fn client(cert: rustls::pki_types::CertificateDer<'static>) -> rustls::ClientConnection {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(crate::tls_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap()
    }

    /// Everything the client has to send, as it would go on the wire.
    fn client_bytes(c: &mut rustls::ClientConnection) -> Vec<u8> {
        let mut out = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut out).unwrap();
        }
        out
    }

    /// A server session and a client, driven in memory (no socket): the
    /// transport's whole job, byte for byte.
    #[test]
    fn a_session_handshakes_echoes_and_closes_without_a_socket() {
        let (config, cert) = config();
        let handshakes = Arc::new(Handshakes::new(4));
        let mut shared = TlsLoop::new(Arc::new(TlsShared::from_config(config)), handshakes.clone());
        let mut server = Tls::start(&mut shared).unwrap();
        assert_eq!(handshakes.count(), 1, "a handshake place is held");
        let mut client = client(cert);
        let (mut plain, mut wire) = (Vec::new(), Vec::new());
        let mut events = Vec::new();
        for _ in 0..4 {
            let input = client_bytes(&mut client);
            server
                .receive(
                    &mut shared,
                    &input,
                    &mut plain,
                    &mut wire,
                    |r, info, out| {
                        assert!(info.is_some());
                        match r {
                            Received::Established => events.push("established".to_string()),
                            Received::Plaintext(p) => {
                                events.push(String::from_utf8_lossy(p).into_owned());
                                out.extend_from_slice(p); // echo
                            }
                            Received::Closed => events.push("closed".to_string()),
                        }
                        true
                    },
                )
                .unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            wire.clear();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && events.len() == 1 {
                client.writer().write_all(b"hello\n").unwrap();
            }
        }
        assert!(!server.is_handshaking());
        assert_eq!(handshakes.count(), 0, "the place is given back");
        let mut echoed = [0; 6];
        client.reader().read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"hello\n");
        client.send_close_notify();
        let input = client_bytes(&mut client);
        server
            .receive(&mut shared, &input, &mut plain, &mut wire, |r, _, _| {
                if let Received::Closed = r {
                    events.push("closed".to_string());
                }
                true
            })
            .unwrap();
        assert_eq!(events, ["established", "hello\n", "closed"]);
        server.close(&mut wire);
        assert!(!wire.is_empty(), "our close_notify");
        let sealed = server.seal(&mut b"late".to_vec(), &mut Vec::new()).len();
        assert_eq!(sealed, 0, "nothing is sealed after close_notify");
    }

    #[test]
    fn garbage_is_a_protocol_error_with_an_alert() {
        let (config, _) = config();
        let mut shared = TlsLoop::new(
            Arc::new(TlsShared::from_config(config)),
            Arc::new(Handshakes::new(1)),
        );
        let mut server = Tls::start(&mut shared).unwrap();
        let mut wire = Vec::new();
        let r = server.receive(
            &mut shared,
            b"GET / HTTP/1.1\r\n\r\n",
            &mut Vec::new(),
            &mut wire,
            |_, _, _| panic!("nothing to deliver"),
        );
        assert_eq!(r, Err(TransportError::Protocol));
        assert!(!wire.is_empty(), "the alert waits to be flushed");
        drop(server);
        assert_eq!(shared.handshakes.count(), 0);
    }
}
