//! The TLS transport: a rustls session between the socket and the framing.
//!
//! # How a session is driven
//!
//! The driver reads the socket into the loop's shared read buffer, as for
//! plaintext, and hands the bytes here. The session ([`TlsSession`], on
//! rustls's unbuffered API) decrypts them in place, record by record, and
//! each record's plaintext is gathered in the loop's one scratch buffer
//! ([`TlsLoop`]); once the session has taken every complete record of the
//! read, the framing and the handler run over the scratch buffer, with the
//! session at hand for [`Conn`](crate::Conn)'s questions (ALPN, SNI, client
//! certificates), which the session cannot answer while it decrypts. What
//! the session sends of its own (handshake flights, alerts) goes to the
//! driver's wire buffer at once; the handler's replies are encrypted once
//! per batch ([`seal`](Transport::seal)), behind it. The driver writes the
//! wire buffer like plaintext output, and what the socket does not take
//! waits in the connection's output queue.
//!
//! # Handshakes
//!
//! The handler meets a connection (`on_connect`) when its handshake is done
//! ([`Received::Established`]); one whose handshake fails, times out, is
//! given up to make room for a newer one, or is cut by a stop never reaches
//! it. The session stops right after the record that completes the
//! handshake, so `on_connect` comes before any line, even one that arrived
//! in the same segment; the records after it are then taken in the same
//! call. Until its handshake is over the session holds one of the loop's
//! [`max_handshakes`](crate::Builder::max_handshakes) places, a
//! [`HandshakePlace`] dropped when the handshake ends, however it ends.
//!
//! # Memory
//!
//! An idle TLS connection keeps only rustls's session state (about 3.3 KiB
//! for TLS 1.3: `tests/tls_memory.rs`), boxed, so eight bytes in the
//! connection: no receive buffer, no plaintext buffer, no output queue of
//! rustls's own. A record cut by a read is held until its end arrives,
//! then freed. (RSS per idle connection, and after each carried a 16 KiB
//! record: BENCHMARKS.md, "TLS idle memory".)
//!
//! # Backpressure
//!
//! The session keeps nothing between events but a partial record: every
//! TLS byte it produces goes to the driver's wire buffer at once, and from
//! there to the socket or the connection's output queue. So the queue holds
//! exactly the TLS bytes the peer has yet to receive, record overhead
//! included, and the water marks and
//! [`output_limit`](crate::Builder::output_limit) count what really waits,
//! with no estimate. A read is handled whole, as for plaintext, so a
//! connection that stops reading above the high-water mark has no
//! decrypted-but-unserved input to resume later.

use std::ops::ControlFlow;
use std::sync::Arc;

use super::{Received, SessionInfo, Transport, TransportError};
use crate::base::time::Millis;
use crate::error::Error;
use crate::limits::{HandshakePlace, Handshakes};
use crate::tls_config::TlsShared;
use crate::tls_session::TlsSession;
use crate::tls_watch::WatchedFiles;

/// What one loop's TLS connections share: the config new sessions start
/// from, the loop's handshake places, and one scratch buffer for decrypted
/// bytes (so that no session owns one).
#[derive(Debug)]
pub(crate) struct TlsLoop {
    config: Arc<TlsShared>,
    handshakes: Arc<Handshakes>,
    /// The plaintext of one read, gathered while the session decrypts it.
    /// Empty between calls; its capacity stays (at most the read buffer, or
    /// the session's backlog bound: see `tls_session.rs`).
    plaintext: Vec<u8>,
    /// On the one loop that watches the certificate files for a renewal.
    watch: Option<Watch>,
}

/// The certificate files one loop looks at, and when.
#[derive(Debug)]
struct Watch {
    files: WatchedFiles,
    every: Millis,
    next: Millis,
}

impl TlsLoop {
    pub(crate) fn new(config: Arc<TlsShared>, handshakes: Arc<Handshakes>) -> Self {
        TlsLoop {
            config,
            handshakes,
            plaintext: Vec::new(),
            watch: None,
        }
    }

    /// This loop looks at `files` every `every` milliseconds of its clock
    /// (which starts at zero), and puts a renewed pair in force.
    pub(crate) fn watching(mut self, files: WatchedFiles, every: Millis) -> Self {
        self.watch = Some(Watch {
            files,
            every,
            next: every,
        });
        self
    }
}

/// One connection's TLS session. Boxed: eight bytes in the connection.
#[derive(Debug)]
pub(crate) struct Tls(Box<Session>);

#[derive(Debug)]
struct Session {
    tls: TlsSession,
    /// Held while the handshake is in progress; dropped when it completes
    /// or fails.
    handshake: Option<HandshakePlace>,
}

impl Transport for Tls {
    type Loop = TlsLoop;
    const PLAINTEXT: bool = false;

    fn start(shared: &mut TlsLoop) -> Result<Self, String> {
        let tls = TlsSession::new(shared.config.current()).map_err(|e| e.to_string())?;
        Ok(Tls(Box::new(Session {
            tls,
            handshake: Some(shared.handshakes.take()),
        })))
    }

    fn receive(
        &mut self,
        shared: &mut TlsLoop,
        input: &mut [u8],
        plain: &mut Vec<u8>,
        wire: &mut Vec<u8>,
        mut deliver: impl FnMut(Received<'_>, Option<&dyn SessionInfo>, &mut Vec<u8>) -> bool,
    ) -> Result<(), TransportError> {
        let s = &mut *self.0;
        let scratch = &mut shared.plaintext;
        let mut input = input;
        loop {
            let got = s.tls.receive(input, wire, |p| {
                scratch.extend_from_slice(p);
                ControlFlow::Continue(())
            });
            let got = match got {
                Ok(got) => got,
                Err(e) => {
                    // Not TLS, or a bad record: an alert, if rustls made one,
                    // is in `wire`, which the driver flushes before closing.
                    // Lines decrypted before it are dropped with the session.
                    log::debug!("TLS error: {e}");
                    scratch.clear();
                    s.handshake = None;
                    return Err(TransportError::Protocol);
                }
            };
            if got.handshake_done {
                s.handshake = None;
                log::debug!(
                    "TLS established: {:?}, {:?}, ALPN {:?}",
                    s.tls.protocol_version(),
                    s.tls.negotiated_cipher_suite().map(|c| c.suite()),
                    s.tls.alpn_protocol().map(String::from_utf8_lossy),
                );
                if !deliver(Received::Established, Some(&s.tls), plain) {
                    return Ok(());
                }
            }
            if !scratch.is_empty() {
                let go = deliver(Received::Plaintext(scratch), Some(&s.tls), plain);
                scratch.clear();
                if !go {
                    return Ok(());
                }
            }
            if got.peer_closed {
                deliver(Received::Closed, Some(&s.tls), plain);
                return Ok(());
            }
            if !got.more {
                return Ok(());
            }
            // The session stopped after the handshake with records behind
            // it (a client's first lines in the segment of its Finished):
            // on with them, now that the handler has met the connection.
            input = &mut [];
        }
    }

    fn seal<'a>(&mut self, plain: &'a mut Vec<u8>, wire: &'a mut Vec<u8>) -> &'a mut Vec<u8> {
        if !plain.is_empty() {
            // Fails only once the session is over (it then refuses every
            // call, and the next input closes the connection) or its keys
            // are spent; either way these replies cannot go out.
            if let Err(e) = self.0.tls.send(plain, wire) {
                log::debug!("TLS: replies not sealed: {e}");
            }
            plain.clear();
        }
        wire
    }

    fn close(&mut self, wire: &mut Vec<u8>) {
        self.0.tls.close_notify(wire);
    }

    fn info(&self) -> Option<&dyn SessionInfo> {
        Some(&self.0.tls)
    }

    fn is_handshaking(&self) -> bool {
        self.0.tls.is_handshaking()
    }

    fn handshake_progress(&self) -> Option<u32> {
        let s = &*self.0;
        s.handshake.as_ref().map(|_| s.tls.handshake_progress())
    }

    fn credentials_check_at(shared: &TlsLoop) -> Option<Millis> {
        shared.watch.as_ref().map(|w| w.next)
    }

    /// Two `stat` calls, on this loop's thread; the files are read and
    /// parsed only when they changed (a few milliseconds, once per renewal).
    fn check_credentials(shared: &mut TlsLoop, now: Millis) -> Option<Result<(), Error>> {
        let watch = shared.watch.as_mut()?;
        if now < watch.next {
            return None;
        }
        watch.next = now + watch.every;
        // Held while the new config goes in, so that a reload by hand
        // (which takes the same lock) cannot be overtaken by an older pair.
        let mut files = watch.files.lock().unwrap_or_else(|e| e.into_inner());
        let files = files.as_mut()?;
        match files.check()? {
            Ok(config) => {
                shared.config.replace(Arc::new(config));
                log::info!(
                    "TLS: {} and {} changed on disk: in force for new connections",
                    files.cert_path().display(),
                    files.key_path().display()
                );
                Some(Ok(()))
            }
            Err(e) => {
                log::warn!(
                    "TLS: the certificate files changed but do not load; \
                     the pair in force stays until they change again: {e}"
                );
                Some(Err(e))
            }
        }
    }
}

impl SessionInfo for TlsSession {
    fn alpn_protocol(&self) -> Option<&[u8]> {
        TlsSession::alpn_protocol(self)
    }

    fn server_name(&self) -> Option<&str> {
        TlsSession::server_name(self)
    }

    fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        self.protocol_version()
    }

    fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        TlsSession::peer_certificates(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::ServerConfig;
    use std::io::{Read, Write};

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
        assert_eq!(server.handshake_progress(), Some(0));
        for _ in 0..4 {
            let mut input = client_bytes(&mut client);
            server
                .receive(
                    &mut shared,
                    &mut input,
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
            if server.is_handshaking() {
                assert!(
                    server.handshake_progress() > Some(0),
                    "the ClientHello counts"
                );
            }
            // Once per batch, after the handshake's own bytes.
            let out = server.seal(&mut plain, &mut wire);
            client.read_tls(&mut out.as_slice()).unwrap();
            out.clear();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && events.len() == 1 {
                client.writer().write_all(b"hello\n").unwrap();
            }
        }
        assert!(!server.is_handshaking());
        assert_eq!(handshakes.count(), 0, "the place is given back");
        assert_eq!(
            server.handshake_progress(),
            None,
            "no place, no progress to weigh"
        );
        let mut echoed = [0; 6];
        client.reader().read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"hello\n");
        client.send_close_notify();
        let mut input = client_bytes(&mut client);
        server
            .receive(&mut shared, &mut input, &mut plain, &mut wire, |r, _, _| {
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

    /// The loop given the watch looks when it is due, puts a renewed pair
    /// in force, and looks no more once the watch is emptied (which is what
    /// a reload with a config of one's own does).
    #[test]
    fn the_watching_loop_puts_renewed_files_in_force() {
        use crate::tls_watch::CertWatch;
        use std::sync::Mutex;
        let dir = std::env::temp_dir().join(format!("netpool-tls-loop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let write_pair = || {
            let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            // Renamed over the old files, as renewal tools do.
            std::fs::write(dir.join("new.pem"), c.cert.pem()).unwrap();
            std::fs::rename(dir.join("new.pem"), &cert).unwrap();
            std::fs::write(dir.join("new.pem"), c.signing_key.serialize_pem()).unwrap();
            std::fs::rename(dir.join("new.pem"), &key).unwrap();
        };
        write_pair();
        let config = crate::tls_config_from_pem(&cert, &key).unwrap();
        let tls = Arc::new(TlsShared::from_config(Arc::new(config)));
        let files = Arc::new(Mutex::new(Some(CertWatch::new(&cert, &key))));
        let mut shared =
            TlsLoop::new(tls.clone(), Arc::new(Handshakes::new(1))).watching(files.clone(), 10);
        assert_eq!(Tls::credentials_check_at(&shared), Some(10));
        assert!(
            Tls::check_credentials(&mut shared, 10).is_none(),
            "unchanged"
        );
        assert_eq!(Tls::credentials_check_at(&shared), Some(20));

        write_pair();
        let before = tls.current();
        assert!(Tls::check_credentials(&mut shared, 19).is_none(), "not due");
        assert!(matches!(
            Tls::check_credentials(&mut shared, 20),
            Some(Ok(()))
        ));
        assert!(
            !Arc::ptr_eq(&before, &tls.current()),
            "the new pair is in force"
        );

        *files.lock().unwrap() = None;
        write_pair();
        assert!(
            Tls::check_credentials(&mut shared, 30).is_none(),
            "nothing watched"
        );
        assert_eq!(
            Tls::credentials_check_at(&shared),
            Some(40),
            "still on time"
        );
        let _ = std::fs::remove_dir_all(&dir);
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
            &mut b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            &mut Vec::new(),
            &mut wire,
            |_, _, _| panic!("nothing to deliver"),
        );
        assert_eq!(r, Err(TransportError::Protocol));
        assert!(!wire.is_empty(), "the alert waits to be flushed");
        assert_eq!(
            shared.handshakes.count(),
            0,
            "a failed handshake holds no place"
        );
        assert_eq!(server.handshake_progress(), None);
        drop(server);
        assert_eq!(shared.handshakes.count(), 0);
    }
}
