//! The crate's error type.

use std::fmt;
use std::io;
#[cfg(feature = "tls")]
use std::path::PathBuf;

/// Everything that can go wrong when starting, running or reaching a server.
///
/// Errors on one connection never surface here: they close that connection
/// and are reported to [`Handler::on_disconnect`](crate::Handler::on_disconnect)
/// as a [`CloseReason`](crate::CloseReason).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed: binding, listening, creating the poll, or the
    /// poll itself.
    Io(io::Error),
    /// A setting is out of range, or at odds with another: a usage error,
    /// reported before anything is bound. [`ConfigError::setting`] names the
    /// [`Builder`](crate::Builder) method at fault.
    InvalidConfig(ConfigError),
    /// The server's loop has exited, so the handle cannot reach it.
    Stopped,
    /// The loop's queue of commands from other threads is at
    /// [`Builder::command_queue_limit`](crate::Builder::command_queue_limit):
    /// nothing was queued. The loop empties it at its next turn; send again
    /// then, or use a variant that waits ([`ConnHandle::send_wait`](crate::ConnHandle::send_wait),
    /// [`ReplySlot::send_wait`](crate::ReplySlot::send_wait)).
    Full,
    /// [`ServerHandle::stop`](crate::ServerHandle::stop) was called on the
    /// loop's own thread, where it would wait for itself. Use
    /// [`ServerHandle::request_stop`](crate::ServerHandle::request_stop).
    StopFromLoop,
    /// The thread running the loop panicked outside any handler.
    LoopPanicked,
    /// A certificate or key file could not be read (missing, unreadable).
    #[cfg(feature = "tls")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: io::Error,
    },
    /// A certificate or key file is not valid PEM.
    #[cfg(feature = "tls")]
    TlsPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser found wrong.
        reason: String,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[cfg(feature = "tls")]
    TlsNoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key (PKCS#8 `PRIVATE KEY`, PKCS#1
    /// `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`). Encrypted keys
    /// (`ENCRYPTED PRIVATE KEY`) are not read: decrypt them first.
    #[cfg(feature = "tls")]
    TlsNoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key does not belong to the certificate (their public keys
    /// differ).
    #[cfg(feature = "tls")]
    TlsKeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The crypto provider cannot sign with the private key (an unsupported
    /// algorithm or a malformed key).
    #[cfg(feature = "tls")]
    TlsKeyRejected {
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// rustls rejected the TLS configuration.
    #[cfg(feature = "tls")]
    Tls(rustls::Error),
    /// A TLS operation (such as
    /// [`ServerHandle::reload_tls`](crate::ServerHandle::reload_tls)) on a
    /// server that was built without TLS.
    #[cfg(feature = "tls")]
    TlsNotConfigured,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::InvalidConfig(e) => write!(f, "invalid configuration: {e}"),
            Error::Stopped => f.write_str("the server has stopped"),
            Error::Full => f.write_str("the loop's command queue is full"),
            Error::StopFromLoop => f.write_str(
                "stop() called on the server's own loop thread; use request_stop() there",
            ),
            Error::LoopPanicked => f.write_str("the server's loop thread panicked"),
            #[cfg(feature = "tls")]
            Error::TlsFile { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            #[cfg(feature = "tls")]
            Error::TlsPem { path, reason } => {
                write!(f, "{}: not valid PEM: {reason}", path.display())
            }
            #[cfg(feature = "tls")]
            Error::TlsNoCertificate { path } => {
                write!(
                    f,
                    "{}: no certificate (no CERTIFICATE PEM block)",
                    path.display()
                )
            }
            #[cfg(feature = "tls")]
            Error::TlsNoPrivateKey { path } => write!(
                f,
                "{}: no private key (no unencrypted PKCS#8, PKCS#1 or SEC1 PEM block)",
                path.display()
            ),
            #[cfg(feature = "tls")]
            Error::TlsKeyMismatch { cert, key } => write!(
                f,
                "the private key in {} does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            #[cfg(feature = "tls")]
            Error::TlsKeyRejected { path, source } => {
                write!(f, "{}: private key not usable: {source}", path.display())
            }
            #[cfg(feature = "tls")]
            Error::Tls(e) => write!(f, "TLS configuration rejected: {e}"),
            #[cfg(feature = "tls")]
            Error::TlsNotConfigured => f.write_str("the server was built without TLS"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            #[cfg(feature = "tls")]
            Error::TlsFile { source, .. } => Some(source),
            #[cfg(feature = "tls")]
            Error::TlsKeyRejected { source, .. } | Error::Tls(source) => Some(source),
            _ => None,
        }
    }
}

/// What is wrong with a server's configuration: which setting, and why.
///
/// ```
/// let err = netpool::Server::builder()
///     .acceptors(0)
///     .bind("127.0.0.1:0".parse().unwrap())
///     .unwrap_err();
/// let netpool::Error::InvalidConfig(e) = err else { panic!("{err}") };
/// assert_eq!(e.setting(), "acceptors");
/// assert_eq!(e.to_string(), "acceptors: must be at least 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    reason: String,
}

impl ConfigError {
    /// `setting` (a [`Builder`](crate::Builder) method's name) is wrong
    /// because of `reason`.
    pub(crate) fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            setting,
            reason: reason.into(),
        }
    }

    /// The setting at fault, spelled as the [`Builder`](crate::Builder)
    /// method that sets it: `"acceptors"`, `"overflow"`, `"workers"`, ...
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::InvalidConfig(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
