//! The run's TLS certificate: one self-signed ECDSA P-256 certificate for
//! `localhost`, generated with rcgen (ring) into a temporary directory that is
//! removed when the run ends. Servers read the PEM files as a user's server
//! would; the load generator trusts the certificate as its only root.

use std::io;
use std::path::PathBuf;

/// The name the certificate is issued for and the client verifies.
pub const SERVER_NAME: &str = "localhost";

pub struct Certs {
    dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    /// Generates the certificate and writes `cert.pem` and `key.pem`.
    pub fn generate() -> io::Result<Certs> {
        let generated = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
            .map_err(io::Error::other)?;
        let dir = std::env::temp_dir().join(format!("netpool-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let certs = Certs {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&certs.cert, generated.cert.pem())?;
        std::fs::write(&certs.key, generated.signing_key.serialize_pem())?;
        Ok(certs)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
