//! Noticing that a certificate or key file changed on disk, and loading the
//! new pair.
//!
//! Renewal tools replace files in different ways: certbot rewrites a
//! symlink to a new file, Kubernetes swaps a symlinked directory, others
//! write in place or rename a temporary file over the old one. Comparing
//! each file's identity (device and inode, through symlinks), size and
//! modification time catches all of them with two `stat` calls per check;
//! the contents are read only when something changed.
//!
//! A pair that fails to load (a half-written file, a new certificate next
//! to the old key) is reported once and not tried again until either file
//! changes again: a renewal that writes the certificate and then the key
//! is picked up when the key lands, and a broken pair does not fill the
//! log every period.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::ServerConfig;

use crate::error::Error;
use crate::tls_config::tls_config_from_pem;

/// What `stat` says about one file: enough to see that it was replaced or
/// rewritten. `None` when it could not be read (missing, for instance), so
/// that its return counts as a change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    /// Device and inode: a file renamed over the old one, or a swapped
    /// symlink, has a new one even if size and time match.
    #[cfg(unix)]
    identity: (u64, u64),
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(path: &Path) -> io::Result<Stamp> {
        // `metadata` follows symlinks: a swapped link shows the new target.
        let meta = fs::metadata(path)?;
        Ok(Stamp {
            #[cfg(unix)]
            identity: {
                use std::os::unix::fs::MetadataExt;
                (meta.dev(), meta.ino())
            },
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// The pair a server watches, shared by the loop that looks at it and the
/// handles that reload by hand (which point it at the files they loaded);
/// `None` inside while nothing is watched (after a reload with a config of
/// the caller's own). One lock, so that a check and a reload by hand never
/// interleave.
pub(crate) type WatchedFiles = Arc<Mutex<Option<CertWatch>>>;

/// Both files' stamps at one check.
type PairStamp = (Option<Stamp>, Option<Stamp>);

/// Watches a certificate and key pair given as PEM paths; see the module
/// doc. Pure apart from `stat` and reading the files when they change: the
/// caller decides when to [`check`](CertWatch::check) (a loop timer) and
/// what to do with a new config.
#[derive(Debug)]
pub(crate) struct CertWatch {
    cert: PathBuf,
    key: PathBuf,
    /// The files as they were when the config in service was loaded.
    loaded: PairStamp,
    /// The files as they were at the last failed load, if it was the last
    /// attempt: not tried again while they stay so.
    failed: Option<PairStamp>,
}

impl CertWatch {
    /// Starts watching, taking the files as they are now to be those of the
    /// config in service (the caller has just loaded them).
    pub(crate) fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> CertWatch {
        let (cert, key) = (cert.into(), key.into());
        let loaded = stamp_pair(&cert, &key);
        CertWatch {
            cert,
            key,
            loaded,
            failed: None,
        }
    }

    /// Looks at both files. `None` when neither changed since the last
    /// successful load, or since the last failed one; otherwise the result of
    /// loading the pair with [`tls_config_from_pem`].
    ///
    /// The files are stamped *before* being read: if one is rewritten while
    /// it is read, the next check sees a newer stamp and loads again.
    ///
    /// # Errors
    ///
    /// `Some(Err(_))`: the new pair does not load (see
    /// [`tls_config_from_pem`]; each error names the file). The caller keeps
    /// the config in service and logs the error; the pair is not tried again
    /// until a file changes.
    pub(crate) fn check(&mut self) -> Option<Result<ServerConfig, Error>> {
        let now = stamp_pair(&self.cert, &self.key);
        if now == self.loaded || self.failed.as_ref() == Some(&now) {
            return None;
        }
        match tls_config_from_pem(&self.cert, &self.key) {
            Ok(config) => {
                self.loaded = now;
                self.failed = None;
                Some(Ok(config))
            }
            Err(e) => {
                self.failed = Some(now);
                Some(Err(e))
            }
        }
    }

    /// The certificate file watched.
    pub(crate) fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// The key file watched.
    pub(crate) fn key_path(&self) -> &Path {
        &self.key
    }
}

fn stamp_pair(cert: &Path, key: &Path) -> PairStamp {
    (Stamp::of(cert).ok(), Stamp::of(key).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A directory of its own with a generated pair in it (removed on drop).
    struct Dir {
        path: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    }

    /// A freshly generated certificate and its key, as PEM.
    fn pair() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    impl Dir {
        fn new() -> Dir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "netpool-watch-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&path).unwrap();
            let (cert, key) = (path.join("cert.pem"), path.join("key.pem"));
            let (c, k) = pair();
            fs::write(&cert, c).unwrap();
            fs::write(&key, k).unwrap();
            Dir { path, cert, key }
        }

        fn watch(&self) -> CertWatch {
            CertWatch::new(&self.cert, &self.key)
        }

        /// Writes both files in place with a new pair.
        fn renew(&self) {
            let (c, k) = pair();
            fs::write(&self.cert, c).unwrap();
            fs::write(&self.key, k).unwrap();
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.path);
        }
    }

    /// Sets a file's modification time, so that tests need no sleep to make
    /// a rewrite visible, or to hide it behind an unchanged time.
    fn set_mtime(path: &Path, t: SystemTime) {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    fn mtime(path: &Path) -> SystemTime {
        fs::metadata(path).unwrap().modified().unwrap()
    }

    fn assert_loaded(result: Option<Result<ServerConfig, Error>>) {
        match result {
            Some(Ok(_)) => {}
            other => panic!("expected a new config, got {:?}", other.map(|r| r.err())),
        }
    }

    mod unchanged {
        use super::*;

        /// Files as they were at start give nothing, however often asked.
        #[test]
        fn nothing_to_do() {
            let dir = Dir::new();
            let mut watch = dir.watch();
            assert!(watch.check().is_none());
            assert!(watch.check().is_none());
            assert_eq!(watch.cert_path(), dir.cert);
            assert_eq!(watch.key_path(), dir.key);
        }

        /// The same stamp after a load is not loaded again.
        #[test]
        fn a_load_is_not_repeated() {
            let dir = Dir::new();
            let mut watch = dir.watch();
            dir.renew();
            set_mtime(&dir.cert, SystemTime::now() + Duration::from_secs(10));
            assert_loaded(watch.check());
            assert!(watch.check().is_none());
        }
    }

    mod changed {
        use super::*;

        /// Rewriting in place, with a later time, is seen.
        #[test]
        fn rewritten_in_place() {
            let dir = Dir::new();
            let mut watch = dir.watch();
            let before = mtime(&dir.cert);
            dir.renew();
            set_mtime(&dir.cert, before + Duration::from_secs(1));
            assert_loaded(watch.check());
        }

        /// A rewrite that keeps the old time is still seen by its size.
        #[test]
        fn same_time_other_size() {
            let dir = Dir::new();
            let mut watch = dir.watch();
            let (t_cert, t_key) = (mtime(&dir.cert), mtime(&dir.key));
            let old_len = fs::metadata(&dir.key).unwrap().len();
            // PKCS#8 P-256 keys all have one length: a trailing newline
            // makes the size differ (PEM parsing ignores it).
            let (c, mut k) = pair();
            k.push('\n');
            fs::write(&dir.cert, c).unwrap();
            fs::write(&dir.key, k).unwrap();
            set_mtime(&dir.cert, t_cert);
            set_mtime(&dir.key, t_key);
            assert_ne!(fs::metadata(&dir.key).unwrap().len(), old_len);
            assert_loaded(watch.check());
        }

        /// A file renamed over the old one, with the same size and time, is
        /// seen by its new inode.
        #[cfg(unix)]
        #[test]
        fn replaced_by_rename() {
            let dir = Dir::new();
            let mut watch = dir.watch();
            let (t_cert, t_key) = (mtime(&dir.cert), mtime(&dir.key));
            let (c, k) = pair();
            let (new_cert, new_key) = (dir.path.join("cert.new"), dir.path.join("key.new"));
            fs::write(&new_cert, &c).unwrap();
            fs::write(&new_key, &k).unwrap();
            // The old files stay open elsewhere in real renewals; keeping
            // them linked here stops the filesystem reusing their inodes.
            let (old_cert, old_key) = (dir.path.join("cert.old"), dir.path.join("key.old"));
            fs::hard_link(&dir.cert, &old_cert).unwrap();
            fs::hard_link(&dir.key, &old_key).unwrap();
            set_mtime(&new_cert, t_cert);
            set_mtime(&new_key, t_key);
            let len = |p: &Path| fs::metadata(p).unwrap().len();
            assert_eq!(
                len(&new_key),
                len(&dir.key),
                "same size: only the inode differs"
            );
            fs::rename(&new_cert, &dir.cert).unwrap();
            fs::rename(&new_key, &dir.key).unwrap();
            assert_loaded(watch.check());
        }

        /// A symlink pointed at another file is seen (as Kubernetes and
        /// certbot renew).
        #[cfg(unix)]
        #[test]
        fn symlink_swapped() {
            let dir = Dir::new();
            let (link_cert, link_key) = (dir.path.join("live-cert"), dir.path.join("live-key"));
            std::os::unix::fs::symlink(&dir.cert, &link_cert).unwrap();
            std::os::unix::fs::symlink(&dir.key, &link_key).unwrap();
            let mut watch = CertWatch::new(&link_cert, &link_key);
            assert!(watch.check().is_none());
            let (c, k) = pair();
            let (cert2, key2) = (dir.path.join("cert2.pem"), dir.path.join("key2.pem"));
            fs::write(&cert2, c).unwrap();
            fs::write(&key2, k).unwrap();
            fs::remove_file(&link_cert).unwrap();
            fs::remove_file(&link_key).unwrap();
            std::os::unix::fs::symlink(&cert2, &link_cert).unwrap();
            std::os::unix::fs::symlink(&key2, &link_key).unwrap();
            assert_loaded(watch.check());
            assert!(watch.check().is_none());
        }
    }

    mod broken {
        use super::*;

        /// A key that does not match is reported once, not retried while the
        /// files stay so, and the fixed pair then loads.
        #[test]
        fn mismatched_key_then_fixed() {
            let dir = Dir::new();
            let mut watch = dir.watch();
            let (_, other_key) = pair();
            fs::write(&dir.key, other_key).unwrap();
            set_mtime(&dir.key, SystemTime::now() + Duration::from_secs(10));
            match watch.check() {
                Some(Err(Error::TlsKeyMismatch { cert, key })) => {
                    assert_eq!((cert, key), (dir.cert.clone(), dir.key.clone()));
                }
                other => panic!("expected a key mismatch, got {:?}", other.map(|r| r.err())),
            }
            assert!(watch.check().is_none(), "no retry while unchanged");
            assert!(watch.check().is_none());
            dir.renew();
            set_mtime(&dir.key, SystemTime::now() + Duration::from_secs(20));
            assert_loaded(watch.check());
            assert!(watch.check().is_none());
        }

        /// A missing file is reported once; its return is a change.
        #[test]
        fn missing_then_back() {
            let dir = Dir::new();
            let mut watch = dir.watch();
            let saved = fs::read(&dir.cert).unwrap();
            fs::remove_file(&dir.cert).unwrap();
            match watch.check() {
                Some(Err(Error::TlsFile { path, .. })) => assert_eq!(path, dir.cert),
                other => panic!("expected a file error, got {:?}", other.map(|r| r.err())),
            }
            assert!(watch.check().is_none(), "no retry while still missing");
            fs::write(&dir.cert, saved).unwrap();
            assert_loaded(watch.check());
        }

        /// Going back to the files in service after a failure is a change
        /// like any other: they load again.
        #[test]
        fn broken_then_restored_as_before() {
            let dir = Dir::new();
            let mut watch = dir.watch();
            let saved = fs::read(&dir.key).unwrap();
            fs::write(&dir.key, b"not pem").unwrap();
            assert!(matches!(
                watch.check(),
                Some(Err(Error::TlsNoPrivateKey { .. }))
            ));
            fs::write(&dir.key, saved).unwrap();
            set_mtime(&dir.key, SystemTime::now() + Duration::from_secs(10));
            assert_loaded(watch.check());
        }

        /// A watcher started on missing files loads them when they appear.
        #[test]
        fn started_before_the_files() {
            let dir = Dir::new();
            let (cert, key) = (dir.path.join("later-cert"), dir.path.join("later-key"));
            let mut watch = CertWatch::new(&cert, &key);
            assert!(watch.check().is_none(), "nothing there, nothing changed");
            fs::copy(&dir.cert, &cert).unwrap();
            fs::copy(&dir.key, &key).unwrap();
            assert_loaded(watch.check());
        }
    }
}
