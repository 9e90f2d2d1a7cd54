//! TLS with rustls: building a `ServerConfig` from PEM files, and the
//! per-connection TLS session the event loop drives.
//!
//! # Crypto provider
//!
//! netpool builds rustls with the **ring** provider only
//! (`default-features = false, features = ["ring", "std", "tls12", "logging"]`):
//! a cold release build takes about half the time of aws-lc-rs and needs no
//! extra toolchain. Configs made here select it explicitly with
//! `ServerConfig::builder_with_provider`, never through the process-wide
//! default, so a dependency tree that also enables aws-lc-rs cannot make
//! config building panic ("could not automatically determine the
//! process-level CryptoProvider").
//!
//! To use another provider (aws-lc-rs, a FIPS build, a custom one), build your
//! own [`rustls::ServerConfig`] with it and pass it to
//! [`Builder::tls`](crate::Builder::tls) or
//! [`ServerHandle::reload_tls`](crate::ServerHandle::reload_tls); netpool
//! never looks at the provider of a config you built.
//!
//! # How the loop drives a session
//!
//! mio is edge-triggered, so per readiness event the loop repeats
//! `read_tls` → `process_new_packets` → drain the decrypted plaintext → hand
//! it to the line framer → `write_tls`, until the socket says `WouldBlock`.
//! Plaintext is drained after *every* `process_new_packets`, so rustls's
//! 16 KiB received-plaintext limit is never reached.
//!
//! # Handshakes
//!
//! The handler meets a connection (`on_connect`) when its handshake is done;
//! one whose handshake fails, times out or is cut by a stop never reaches
//! it. Until then the connection holds one of the loop's
//! [`max_handshakes`](crate::Builder::max_handshakes) places, and its
//! deadline ([`tls_handshake_timeout`](crate::Builder::tls_handshake_timeout))
//! waits in a FIFO: every handshake has the same timeout, so arrival order is
//! deadline order. Past the cap, new connections are closed at once. With the
//! PROXY protocol on, the header comes first, in the clear.
//!
//! # Memory
//!
//! An idle TLS connection costs about 7.5 KiB (measured with 5,000 idle
//! connections: RSS per connection), against about 150 bytes for plaintext:
//! the boxed rustls session (about 1.2 KiB), its keys, and rustls's 4 KiB
//! receive buffer, which its buffered API keeps for the session's life.
//! rustls's unbuffered API would let that buffer be the loop's shared one.
//!
//! # Backpressure
//!
//! The handler's replies are plaintext; rustls encrypts them at once and the
//! loop moves every TLS byte out of rustls straight away: to the socket, and
//! what the socket does not take into the connection's own output queue. So
//! between events rustls buffers nothing, and the connection's queue holds
//! exactly the TLS bytes not yet written. The water marks and
//! [`output_limit`](crate::Builder::output_limit) apply to that count, the
//! bytes that really wait for the peer, record overhead included.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, ServerConnection};
use rustls::sign::CertifiedKey;

use crate::config::Config;
use crate::conn::{Connection, Phase};
use crate::error::Error;
use crate::event_loop::{apply_marks, end_of_stream, greet, handle_lines, Cx, READS_PER_TURN};
use crate::handle::{Counters, LoopShared, ServerShared};
use crate::handler::{CloseReason, ConnId, Handler, Transport};
use crate::timers::Millis;

/// The crypto provider netpool uses for configs it builds: rustls's ring
/// provider with its default cipher suites and key-exchange groups.
///
/// ring is chosen because a cold release build takes about half the time of
/// aws-lc-rs and needs no extra toolchain. It is passed explicitly to
/// `ServerConfig::builder_with_provider`, never installed as the process-wide
/// default: with both providers enabled somewhere in a dependency tree,
/// `ServerConfig::builder()` panics, and explicit selection cannot.
///
/// To use another provider, build a [`rustls::ServerConfig`] with it and pass
/// that to [`Builder::tls`](crate::Builder::tls) and
/// [`ServerHandle::reload_tls`](crate::ServerHandle::reload_tls). Use this
/// function for a rustls *client* that should match the server (as the tests
/// do).
pub fn tls_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a [`ServerConfig`] from a PEM certificate chain (leaf first) and a
/// PEM private key (PKCS#8, PKCS#1 or SEC1), with the ring provider, TLS 1.3
/// and 1.2, no client authentication, and no ALPN.
///
/// Use it to adjust a config before handing it to
/// [`Builder::tls`](crate::Builder::tls); [`Builder::tls_pem`](crate::Builder::tls_pem)
/// does the same in one step.
///
/// # Errors
///
/// Each names the file at fault: [`Error::TlsFile`] (missing or unreadable),
/// [`Error::TlsPem`] (not valid PEM), [`Error::TlsNoCertificate`],
/// [`Error::TlsNoPrivateKey`], [`Error::TlsKeyMismatch`] (the key does not
/// belong to the certificate), [`Error::TlsKeyRejected`] (a key type the
/// provider cannot sign with).
pub fn tls_config_from_pem(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> Result<ServerConfig, Error> {
    let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
    let chain = load_certificates(cert_path)?;
    let key = load_private_key(key_path)?;
    let provider = tls_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => Error::TlsKeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        },
        other => Error::TlsKeyRejected {
            path: key_path.to_path_buf(),
            source: other,
        },
    })?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    Ok(config)
}

fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(path, e))?;
    if chain.is_empty() {
        return Err(Error::TlsNoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => Error::TlsNoPrivateKey {
            path: path.to_path_buf(),
        },
        e => pem_error(path, e),
    })
}

fn pem_error(path: &Path, e: pem::Error) -> Error {
    let path = path.to_path_buf();
    match e {
        pem::Error::Io(source) => Error::TlsFile { path, source },
        other => Error::TlsPem {
            path,
            reason: other.to_string(),
        },
    }
}

/// What the builder was given for TLS, resolved at bind time.
#[derive(Clone)]
pub(crate) enum TlsSource {
    Config(Arc<ServerConfig>),
    Pem { cert: PathBuf, key: PathBuf },
}

impl fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsSource::Config(_) => f.write_str("Config(..)"),
            TlsSource::Pem { cert, key } => f
                .debug_struct("Pem")
                .field("cert", cert)
                .field("key", key)
                .finish(),
        }
    }
}

/// The TLS settings of a server, shared by its loops and handles.
///
/// The config sits behind a mutex that is taken once per accepted TLS
/// connection (a few tens of nanoseconds next to a handshake's public-key
/// operations) so that a reload is in force for every connection accepted
/// after [`ServerHandle::reload_tls`](crate::ServerHandle::reload_tls)
/// returns.
#[derive(Debug)]
pub(crate) struct TlsShared {
    config: Mutex<Arc<ServerConfig>>,
    /// ALPN protocols the builder set, applied to every config (also
    /// reloaded ones); `None` leaves a config's own list alone.
    alpn: Option<Vec<Vec<u8>>>,
}

impl TlsShared {
    /// Resolves the builder's source into a config.
    pub(crate) fn new(source: &TlsSource, alpn: Option<Vec<Vec<u8>>>) -> Result<TlsShared, Error> {
        let config = match source {
            TlsSource::Config(config) => config.clone(),
            TlsSource::Pem { cert, key } => Arc::new(tls_config_from_pem(cert, key)?),
        };
        let config = Mutex::new(with_alpn(config, alpn.as_deref()));
        Ok(TlsShared { config, alpn })
    }

    /// The config new connections get.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the config for connections accepted from now on.
    pub(crate) fn replace(&self, config: Arc<ServerConfig>) {
        let config = with_alpn(config, self.alpn.as_deref());
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

fn with_alpn(config: Arc<ServerConfig>, alpn: Option<&[Vec<u8>]>) -> Arc<ServerConfig> {
    match alpn {
        Some(alpn) if config.alpn_protocols != alpn => {
            let mut config = (*config).clone();
            config.alpn_protocols = alpn.to_vec();
            Arc::new(config)
        }
        _ => config,
    }
}

/// One connection's TLS state, kept beside its [`Connection`](crate::conn::Connection)
/// (see [`Sessions`]).
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) tls: ServerConnection,
    /// Our close_notify is queued: nothing may be encrypted after it.
    pub(crate) close_notify_sent: bool,
}

impl Session {
    pub(crate) fn new(config: Arc<ServerConfig>) -> Result<Session, rustls::Error> {
        let mut tls = ServerConnection::new(config)?;
        // The loop moves every TLS byte out of rustls at once (to the socket
        // or the connection's queue), and bounds that queue itself; rustls's
        // own 64 KiB limit would only turn a large reply into a short write.
        tls.set_buffer_limit(None);
        Ok(Session {
            tls,
            close_notify_sent: false,
        })
    }
}

/// The TLS sessions of one loop, indexed by the connection's slab key.
///
/// Kept beside the connection slab rather than inside `Connection`: an
/// `Option<Box<_>>` field there would grow every connection, plaintext ones
/// included, by 8 bytes (measured: 120 to 128 when this was written). Here
/// a plaintext server's vector stays empty, and a TLS server pays one
/// pointer per slot plus the boxed session.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    slots: Vec<Option<Box<Session>>>,
}

impl Sessions {
    pub(crate) fn insert(&mut self, key: usize, session: Session) {
        if self.slots.len() <= key {
            self.slots.resize_with(key + 1, || None);
        }
        debug_assert!(
            self.slots[key].is_none(),
            "slot {key} already has a session"
        );
        self.slots[key] = Some(Box::new(session));
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut Session> {
        self.slots.get_mut(key).and_then(|s| s.as_deref_mut())
    }

    pub(crate) fn remove(&mut self, key: usize) -> Option<Box<Session>> {
        self.slots.get_mut(key).and_then(Option::take)
    }
}

// ----- Driving a session in the loop ----------------------------------------

/// The loop's parts that serving one TLS connection's input needs, borrowed
/// apart from the connection and its session (which live in other fields).
pub(crate) struct Serving<'a, H: Handler> {
    pub(crate) handler: &'a mut H,
    pub(crate) read_buf: &'a mut [u8],
    pub(crate) write_buf: &'a mut Vec<u8>,
    pub(crate) config: &'a Config,
    pub(crate) shared: &'a Arc<LoopShared>,
    pub(crate) server: &'a ServerShared,
    pub(crate) again: &'a mut Vec<(usize, ConnId)>,
    pub(crate) handshaking: &'a mut usize,
    /// The loop's clock, as of this turn.
    pub(crate) now: Millis,
}

impl<H: Handler> Serving<'_, H> {
    /// The TLS twin of `read_input`, for a connection that is handshaking or
    /// open. Per round: take the plaintext rustls already holds, read TLS
    /// records (`read_tls`), decrypt them (`process_new_packets`), take the
    /// new plaintext, write what rustls produced (`write_tls`). Rounds repeat
    /// until the socket is drained (`WouldBlock`, or a short read when that
    /// proves it), the connection stops reading, or its turn is used.
    ///
    /// Plaintext is taken after *every* `process_new_packets`: rustls stops
    /// reading once 16 KiB of decrypted input wait, so leaving it would stall.
    pub(crate) fn read_tls(
        &mut self,
        key: usize,
        conn: &mut Connection<H::State>,
        session: &mut Session,
        short_read_drains: bool,
    ) {
        let counters = &self.shared.counters;
        for _ in 0..READS_PER_TURN {
            // Left over from a round cut short by backpressure.
            self.take_plaintext(key, conn, session);
            if !matches!(conn.phase(), Phase::Handshaking | Phase::Open) {
                return;
            }
            let (read, short) = if conn.phase() == Phase::Handshaking && !conn.partial.is_empty() {
                // What followed a PROXY header: the start of the ClientHello,
                // read (and counted) already. The handshake cannot finish
                // before rustls has taken all of it.
                log::trace!(
                    "{} {}: {} bytes after the PROXY header go to rustls",
                    conn.id,
                    conn.peer,
                    conn.partial.len()
                );
                let mut early = &conn.partial[..];
                let read = session.tls.read_tls(&mut early);
                let taken = conn.partial.len() - early.len();
                conn.partial.drain(..taken);
                if conn.partial.is_empty() {
                    conn.partial = Vec::new();
                }
                (read.map(|n| (n, false)), false)
            } else {
                let mut socket = Probe::new(&mut conn.stream);
                let read = session.tls.read_tls(&mut socket);
                (read.map(|n| (n, true)), socket.short)
            };
            let eof = match read {
                Ok((0, _)) => true,
                Ok((n, from_socket)) => {
                    if from_socket {
                        counters.bytes_in.add(n as u64);
                    }
                    false
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("{} {}: TLS read failed: {e}", conn.id, conn.peer);
                    // rustls says InvalidData for a handshake message too
                    // large for its buffer: a TLS error like any other.
                    let reason = match e.kind() {
                        io::ErrorKind::InvalidData => CloseReason::Tls,
                        _ => CloseReason::from_io(&e),
                    };
                    conn.begin_close(reason, true);
                    return;
                }
            };
            let was_handshaking = conn.phase() == Phase::Handshaking;
            if let Err(e) = session.tls.process_new_packets() {
                // Not TLS, or a bad record: rustls has queued an alert. It is
                // flushed (and the connection lingers) before closing.
                log::debug!("{} {}: TLS error, closing: {e}", conn.id, conn.peer);
                send_tls(conn, session, counters, self.now);
                conn.begin_close(CloseReason::Tls, eof);
                return;
            }
            if was_handshaking && !session.tls.is_handshaking() {
                self.established(key, conn, session);
            }
            self.take_plaintext(key, conn, session);
            // Handshake flights and alerts; replies went out with each chunk.
            send_tls(conn, session, counters, self.now);
            if eof {
                if conn.phase() == Phase::Handshaking {
                    log::debug!(
                        "{} {}: peer closed during the TLS handshake",
                        conn.id,
                        conn.peer
                    );
                    conn.begin_close(CloseReason::PeerClosed, true);
                }
                // An open connection met the end in `take_plaintext`.
                return;
            }
            if short && short_read_drains {
                return;
            }
        }
        // Turn used up with input perhaps still waiting.
        self.again.push((key, conn.id));
    }

    /// The handshake has just finished: the connection opens, frees its
    /// handshake place and meets the handler.
    fn established(&mut self, key: usize, conn: &mut Connection<H::State>, session: &mut Session) {
        debug_assert!(
            conn.partial.is_empty(),
            "early bytes left after the handshake"
        );
        *self.handshaking -= 1;
        self.shared.counters.tls_handshakes.add(1);
        conn.set_phase(Phase::Open);
        log::debug!(
            "{} {}: TLS established: {:?}, {:?}, ALPN {:?}",
            conn.id,
            conn.peer,
            session.tls.protocol_version(),
            session.tls.negotiated_cipher_suite().map(|s| s.suite()),
            session.tls.alpn_protocol().map(String::from_utf8_lossy),
        );
        let cx = Cx::of(self.config, self.shared, self.server, self.now)
            .with_transport(Transport::Tls(&session.tls));
        greet(conn, &mut *self.handler, self.write_buf, &cx, key);
        flush_tls(
            conn,
            session,
            self.write_buf,
            &self.shared.counters,
            self.now,
        );
    }

    /// Hands the plaintext rustls has decrypted to the handler, through the
    /// loop's read buffer and the same framer as plaintext input, until
    /// rustls has none left or the connection stops reading (throttled or
    /// closing: the rest waits in rustls). Replies are encrypted and sent
    /// after each chunk, so backpressure sees them at once.
    fn take_plaintext(
        &mut self,
        key: usize,
        conn: &mut Connection<H::State>,
        session: &mut Session,
    ) {
        while conn.phase() == Phase::Open {
            match session.tls.reader().read(self.read_buf) {
                Ok(0) => {
                    log::debug!("{} {}: close_notify received", conn.id, conn.peer);
                    end_of_stream(conn);
                }
                Ok(n) => {
                    let cx = Cx::of(self.config, self.shared, self.server, self.now)
                        .with_transport(Transport::Tls(&session.tls));
                    handle_lines(
                        conn,
                        &mut *self.handler,
                        &self.read_buf[..n],
                        self.write_buf,
                        &cx,
                        key,
                    );
                    flush_tls(
                        conn,
                        session,
                        self.write_buf,
                        &self.shared.counters,
                        self.now,
                    );
                    if apply_marks(conn, self.config) {
                        self.again.push((key, conn.id));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    // TCP closed without close_notify: for a line protocol,
                    // the complete lines stand; the fragment is dropped.
                    log::debug!("{} {}: closed without close_notify", conn.id, conn.peer);
                    end_of_stream(conn);
                }
                Err(e) => {
                    conn.begin_close(CloseReason::from_io(&e), true);
                }
            }
        }
    }
}

/// Hands plaintext to rustls to encrypt. Nothing is encrypted after our
/// close_notify: the peer would ignore it.
pub(crate) fn encrypt<S>(conn: &mut Connection<S>, session: &mut Session, data: &[u8]) {
    if session.close_notify_sent || matches!(conn.phase(), Phase::Closed { .. }) {
        return;
    }
    // Without a buffer limit (see `Session::new`) the writer takes it all;
    // it fails only after a TLS error, which is closing the connection.
    if let Err(e) = session.tls.writer().write_all(data) {
        log::debug!("{} {}: not encrypted: {e}", conn.id, conn.peer);
        conn.begin_close(CloseReason::Tls, false);
    }
}

/// Encrypts the handler's replies from `write_buf` and sends them.
pub(crate) fn flush_tls<S>(
    conn: &mut Connection<S>,
    session: &mut Session,
    write_buf: &mut Vec<u8>,
    counters: &Counters,
    now: Millis,
) {
    if !write_buf.is_empty() {
        encrypt(conn, session, write_buf);
        write_buf.clear();
    }
    send_tls(conn, session, counters, now);
}

/// Moves every TLS byte rustls has produced out of it: to the socket while it
/// takes them, the rest to the connection's queue.
///
/// # Backpressure
///
/// rustls therefore buffers nothing between events, and the connection's
/// queue holds exactly the TLS bytes the peer has yet to receive, record
/// overhead included: the water marks and the output limit count what
/// really waits, with no estimate. Bytes go to the socket directly only while
/// the queue is empty, so they never overtake queued ones. The idle and
/// write-stall clocks move as in `flush`.
pub(crate) fn send_tls<S>(
    conn: &mut Connection<S>,
    session: &mut Session,
    counters: &Counters,
    now: Millis,
) {
    if !session.tls.wants_write() || matches!(conn.phase(), Phase::Closed { .. }) {
        return; // a closed connection's output is dropped with it
    }
    if conn.out.is_empty() {
        // Progress, or the moment output starts to wait: either way the
        // stall clock starts from now.
        conn.last_progress = now;
        loop {
            let mut socket = Probe::new(&mut conn.stream);
            match session.tls.write_tls(&mut socket) {
                Ok(0) => break,
                Ok(n) => {
                    counters.bytes_out.add(n as u64);
                    conn.last_active = now;
                    // A short write proves the socket full (see `write_some`).
                    if socket.short || !session.tls.wants_write() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    conn.begin_close(CloseReason::from_io(&e), true);
                    return;
                }
            }
        }
    }
    let queue = conn.out.for_append();
    while session.tls.wants_write() {
        // Writing to a `Vec` cannot fail.
        if !matches!(session.tls.write_tls(queue), Ok(n) if n > 0) {
            break;
        }
    }
}

/// A socket wrapper that remembers whether the last read or write was short.
///
/// rustls reads into its own buffer and writes with `write_vectored`, so the
/// loop cannot see how much was offered; this records it, and the loop takes
/// the same shortcut as for plaintext (a short read proves the socket
/// drained, a short write proves it full: see `event_loop.rs`).
pub(crate) struct Probe<'a, S> {
    pub(crate) inner: &'a mut S,
    pub(crate) short: bool,
}

impl<'a, S> Probe<'a, S> {
    pub(crate) fn new(inner: &'a mut S) -> Self {
        Probe {
            inner,
            short: false,
        }
    }
}

impl<S: io::Read> io::Read for Probe<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

impl<S: io::Write> io::Write for Probe<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = self.inner.write_vectored(bufs)?;
        self.short = n < bufs.iter().map(|b| b.len()).sum();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Arc<ServerConfig> {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
        let config = ServerConfig::builder_with_provider(tls_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![c.cert.der().clone()], key)
            .unwrap();
        Arc::new(config)
    }

    mod sessions {
        use super::*;

        #[test]
        fn sessions_follow_slab_keys() {
            let mut sessions = Sessions::default();
            assert!(sessions.get_mut(0).is_none(), "a plaintext loop has none");
            sessions.insert(3, Session::new(config()).unwrap());
            assert!(sessions.get_mut(3).is_some());
            assert!(sessions.get_mut(2).is_none());
            assert!(sessions.remove(3).is_some());
            assert!(sessions.remove(3).is_none(), "removed once");
            assert!(sessions.get_mut(3).is_none());
        }

        #[test]
        fn a_new_session_is_handshaking_and_owes_nothing() {
            let session = Session::new(config()).unwrap();
            assert!(session.tls.is_handshaking());
            assert!(!session.close_notify_sent);
            assert!(!session.tls.wants_write(), "the server speaks second");
        }
    }

    mod alpn {
        use super::*;

        #[test]
        fn the_builders_alpn_replaces_the_configs() {
            let c = config();
            let alpn = [b"line/1".to_vec()];
            assert_eq!(with_alpn(c.clone(), Some(&alpn)).alpn_protocols, alpn);
            assert!(Arc::ptr_eq(&with_alpn(c.clone(), None), &c), "untouched");
        }
    }

    mod probe {
        use super::*;

        #[test]
        fn short_reads_and_writes_are_noticed() {
            let mut src = io::Cursor::new(vec![1u8; 3]);
            let mut probe = Probe::new(&mut src);
            let mut buf = [0; 8];
            assert_eq!(probe.read(&mut buf).unwrap(), 3);
            assert!(probe.short, "3 of 8: the source is drained");

            let mut src = io::Cursor::new(vec![1u8; 16]);
            let mut probe = Probe::new(&mut src);
            assert_eq!(probe.read(&mut buf).unwrap(), 8);
            assert!(!probe.short, "a full read proves nothing");

            let mut sink = Vec::new();
            let mut probe = Probe::new(&mut sink);
            let bufs = [io::IoSlice::new(b"ab"), io::IoSlice::new(b"cd")];
            assert_eq!(probe.write_vectored(&bufs).unwrap(), 4);
            assert!(!probe.short);
        }
    }
}
