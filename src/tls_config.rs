//! TLS configuration with rustls: the crypto provider, building a
//! `ServerConfig` from PEM files, and the config in force, swapped at run
//! time for new connections.
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
//! Driving a session is the TLS transport's job (`transport/tls.rs`); this
//! module only makes and swaps configs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConfig;
use rustls::sign::CertifiedKey;

use crate::error::Error;

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

    /// A config in force as it is, without ALPN of the builder's (tests).
    #[cfg(test)]
    pub(crate) fn from_config(config: Arc<ServerConfig>) -> TlsShared {
        TlsShared {
            config: Mutex::new(config),
            alpn: None,
        }
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
}
