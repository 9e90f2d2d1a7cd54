//! Unix domain listeners: binding a path without stealing it, removing the
//! file on stop only while it is still ours, and the peer's credentials.
//!
//! A Unix socket's address is a file. Three things make that awkward, and
//! each has its answer here:
//!
//! - **A stale file.** A server that crashed leaves its socket file, and
//!   `bind` then fails with `EADDRINUSE` although nobody listens. A probe
//!   `connect` tells the two apart: `ECONNREFUSED` means nobody listens (the
//!   file is stale and is replaced), success or `EAGAIN` (a live server
//!   with a full backlog) means someone does (an error: never stolen). A
//!   file that is not a socket is never touched.
//! - **Permissions.** `bind` creates the file with `0777 & !umask`; a
//!   requested mode is set with `chmod` *between `bind` and `listen`*. A
//!   `connect` before `listen` is refused by the kernel, so nobody connects
//!   under the wrong mode, and the process-wide umask (shared with every
//!   other thread) is never changed.
//! - **Removal.** On a clean stop the file is removed, but a successor may
//!   already have replaced it: [`UnixPathGuard`] remembers the file's
//!   identity and removes only that file. Device and inode alone are not an
//!   identity: ext4 hands a freed inode number to the next file at once
//!   (seen in this module's tests), so the change time is part of it. The
//!   name is moved aside with an atomic `rename` before it is removed, and
//!   what was moved is checked again, so a file that appeared meanwhile is
//!   put back rather than lost.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use socket2::{Domain, SockAddr, Socket, Type};

/// Binds a Unix stream listener at `path`, replacing a stale socket file.
///
/// `mode` (for example `0o660`) is applied to the socket file before the
/// socket listens; `None` leaves `0777 & !umask`. `backlog` is `listen`'s.
/// The listener is non-blocking and close-on-exec. Keep the guard as long
/// as the listener: dropping it removes the file (see [`UnixPathGuard`]).
///
/// # Errors
///
/// - [`AddrInUse`](io::ErrorKind::AddrInUse): a live server listens at
///   `path` (the message names it); nothing was changed.
/// - [`AlreadyExists`](io::ErrorKind::AlreadyExists): `path` exists and is
///   not a socket; it was not touched.
/// - Any error of `bind`, `chmod` or `listen` (for example a missing
///   directory, no permission, a path longer than `sun_path`), with the
///   path in the message. A file this call created is removed again.
pub fn bind_unix(
    path: &Path,
    mode: Option<u32>,
    backlog: i32,
) -> io::Result<(UnixListener, UnixPathGuard)> {
    clear_stale(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    let addr = SockAddr::unix(path).map_err(|e| with_path(e, "invalid socket path", path))?;
    socket.bind(&addr).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            // Someone bound it between our probe and our bind: a live
            // server, or one about to be.
            addr_in_use(path)
        } else {
            with_path(e, "cannot bind", path)
        }
    })?;
    // From here on the file is ours; an error must not leave it behind.
    let mut guard = UnixPathGuard::adopt(path)?;
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| with_path(e, &format!("cannot set mode {mode:o} on"), path))?;
        // chmod changed the change time, part of the identity. (Replacing
        // the guard instead would drop the old one, which would find a file
        // "not ours" and say so.)
        guard.refresh()?;
    }
    socket
        .listen(backlog)
        .map_err(|e| with_path(e, "cannot listen on", path))?;
    socket.set_nonblocking(true)?;
    Ok((UnixListener::from(OwnedFd::from(socket)), guard))
}

/// Removes a stale socket file at `path`; errors if a server is live there
/// or the file is not a socket. Nothing at `path` is fine.
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(e, "cannot inspect", path)),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not removing it",
                path.display()
            ),
        ));
    }
    // A non-blocking probe: a blocking `connect` to a live server whose
    // backlog is full would wait for it.
    let probe = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Err(addr_in_use(path)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(addr_in_use(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match remove_if_same(path, FileId::of(&meta))? {
                // Gone or removed: either way, the name is free now.
                Removal::Removed | Removal::Gone => Ok(()),
                // A new file took the stale one's place between our look
                // and our removal: a server starting at the same moment.
                Removal::NotOurs => Err(addr_in_use(path)),
            }
        }
        Err(e) => Err(with_path(e, "cannot probe", path)),
    }
}

fn addr_in_use(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "a server is already listening on {}; not replacing it",
            path.display()
        ),
    )
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// A file's identity, as far as `stat` can tell it.
///
/// Device and inode name a file while it exists, but a file system may give
/// a removed file's inode number to the next file created (ext4 does, at
/// once), so the change time, to the nanosecond, is part of the identity
/// too. `rename` updates the change time, so after a move only device and
/// inode are compared ([`FileId::same_inode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl FileId {
    fn of(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    fn same_inode(&self, other: &FileId) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

/// What [`remove_if_same`] did.
#[derive(Debug, PartialEq, Eq)]
enum Removal {
    /// The file was the one expected, and is gone.
    Removed,
    /// Nothing was at the path.
    Gone,
    /// Another file was at the path; it was put back.
    NotOurs,
}

/// Removes `path` only if it is the file `expected`.
///
/// There is no "unlink if inode is" system call, and a look (`stat`) then
/// `unlink` leaves a window in which another server's new socket could be
/// removed. So, once a look has found the expected file, the name is moved
/// aside, atomically, to a private name in the same directory, and the
/// file moved is examined. If it is not the one looked at, it is linked
/// back with `link`, which fails rather than replace a file that appeared
/// at `path` meanwhile. (What remains: a file removed and replaced between
/// the look and the move *and* given the same inode number. A live socket
/// cannot be replaced at all, which is why the guard is dropped before its
/// listener is closed.)
fn remove_if_same(path: &Path, expected: FileId) -> io::Result<Removal> {
    match fs::symlink_metadata(path) {
        Ok(meta) if FileId::of(&meta) == expected => {}
        Ok(_) => return Ok(Removal::NotOurs),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removal::Gone),
        Err(e) => return Err(with_path(e, "cannot inspect", path)),
    }
    let aside = aside_name(path);
    match fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removal::Gone),
        Err(e) => return Err(with_path(e, "cannot remove", path)),
    }
    let moved = fs::symlink_metadata(&aside).map_err(|e| with_path(e, "cannot inspect", &aside))?;
    if FileId::of(&moved).same_inode(&expected) {
        fs::remove_file(&aside).map_err(|e| with_path(e, "cannot remove", &aside))?;
        return Ok(Removal::Removed);
    }
    match fs::hard_link(&aside, path) {
        Ok(()) => {
            fs::remove_file(&aside).map_err(|e| with_path(e, "cannot remove", &aside))?;
            Ok(Removal::NotOurs)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "{} was replaced while being removed, and the new file could not be put \
                 back ({e}); it is at {}",
                path.display(),
                aside.display()
            ),
        )),
    }
}

/// `dir/.name.netpool-PID-N`: unique within the machine for the life of
/// this process, in the same directory (so `rename` is atomic: same file
/// system), and hidden from a casual `ls`.
fn aside_name(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.netpool-{}-{n}", std::process::id()))
}

/// Removes a Unix socket file when dropped, if it is still the file this
/// guard was made for (same device and inode).
///
/// A successor that bound the same path after us has a new file there,
/// which the guard leaves alone.
///
/// # Shutdown
///
/// Drop the guard *before* closing the listener. While the listener is
/// open the file is live, so no successor can have replaced it (its
/// [`bind_unix`] refuses a live path), and removal cannot race with one.
/// After a hand-over, call [`keep`](UnixPathGuard::keep) instead: the
/// successor serves the same file.
#[derive(Debug)]
#[must_use = "dropping the guard removes the socket file at once"]
pub struct UnixPathGuard {
    path: PathBuf,
    id: FileId,
    armed: bool,
}

impl UnixPathGuard {
    /// A guard for the socket file now at `path`, for example one this
    /// process received in a hand-over and will remove when it stops.
    ///
    /// # Errors
    ///
    /// `path` cannot be inspected, or is not a socket.
    pub fn adopt(path: &Path) -> io::Result<UnixPathGuard> {
        let meta = fs::symlink_metadata(path).map_err(|e| with_path(e, "cannot inspect", path))?;
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a socket", path.display()),
            ));
        }
        Ok(UnixPathGuard {
            path: path.to_path_buf(),
            id: FileId::of(&meta),
            armed: true,
        })
    }

    /// Takes the file's identity anew, after a change of our own (its
    /// mode) moved its change time.
    fn refresh(&mut self) -> io::Result<()> {
        let meta = fs::symlink_metadata(&self.path)
            .map_err(|e| with_path(e, "cannot inspect", &self.path))?;
        self.id = FileId::of(&meta);
        Ok(())
    }

    /// The guarded path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the file in place: the listener lives on in another process
    /// (a hand-over) and that process removes it.
    pub fn keep(mut self) {
        self.armed = false;
    }

    /// Removes the file now if it is still ours, and says whether it was.
    ///
    /// # Errors
    ///
    /// The file could not be moved, inspected or removed.
    pub fn remove(mut self) -> io::Result<bool> {
        self.armed = false;
        Ok(remove_if_same(&self.path, self.id)? == Removal::Removed)
    }
}

impl Drop for UnixPathGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match remove_if_same(&self.path, self.id) {
            Ok(Removal::Removed) => {}
            Ok(Removal::Gone) => log::debug!("{} was already removed", self.path.display()),
            Ok(Removal::NotOurs) => log::info!(
                "{} belongs to a newer server now; leaving it",
                self.path.display()
            ),
            Err(e) => log::warn!("socket file not removed: {e}"),
        }
    }
}

/// Who is on the other end of a Unix stream socket, as the kernel recorded
/// it when the peer called `connect` (or `socketpair`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
    /// The peer's process id, `None` when the kernel reports 0: the peer
    /// lives in a pid namespace we cannot see into (a server in a container
    /// and a client on the host, for example). A pid may be reused once
    /// that process exits; use it for logs, not for trust.
    pub pid: Option<u32>,
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid={} gid={}", self.uid, self.gid)?;
        match self.pid {
            Some(pid) => write!(f, " pid={pid}"),
            None => f.write_str(" pid=?"),
        }
    }
}

/// The credentials of the peer of a connected Unix stream socket
/// (`SO_PEERCRED`).
///
/// Call it on an accepted (or `socketpair`) stream. Linux answers for any
/// socket: a listening one reports its own process, and one that never
/// had a Unix peer reports pid 0 (`None` here) and the overflow uid 65534.
///
/// # Errors
///
/// `fd` is not a socket (`ENOTSOCK`).
pub fn peer_credentials(fd: impl AsFd) -> io::Result<Credentials> {
    let cred = getsockopt(&fd.as_fd(), PeerCredentials).map_err(io::Error::from)?;
    Ok(Credentials {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: u32::try_from(cred.pid()).ok().filter(|&pid| pid != 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A fresh, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "netpool-unix-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn connect_and_greet(path: &Path, listener: &UnixListener) {
        let mut client = UnixStream::connect(path).expect("connect");
        // The listener is non-blocking: the connection is already queued.
        let (mut served, _) = listener.accept().expect("accept");
        use std::io::{Read, Write};
        served.write_all(b"hi").unwrap();
        let mut buf = [0; 2];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }

    mod binding {
        use super::*;

        /// A fresh path is bound and served, and the guard removes the file.
        #[test]
        fn binds_serves_and_removes_on_drop() {
            let dir = TempDir::new("fresh");
            let path = dir.0.join("s.sock");
            let (listener, guard) = bind_unix(&path, None, 16).unwrap();
            connect_and_greet(&path, &listener);
            assert_eq!(guard.path(), path);
            drop(guard);
            assert!(!path.exists(), "file removed on drop");
        }

        /// A socket file nobody listens on is replaced.
        #[test]
        fn stale_file_is_replaced() {
            let dir = TempDir::new("stale");
            let path = dir.0.join("s.sock");
            drop(UnixListener::bind(&path).unwrap()); // the file stays behind
            assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
            let (listener, _guard) = bind_unix(&path, None, 16).expect("stale file replaced");
            connect_and_greet(&path, &listener);
        }

        /// A path where a server listens is refused, and that server keeps
        /// its file and its clients.
        #[test]
        fn live_server_is_never_stolen() {
            let dir = TempDir::new("live");
            let path = dir.0.join("s.sock");
            let (live, _guard) = bind_unix(&path, None, 16).unwrap();
            let err = bind_unix(&path, None, 16).expect_err("live path refused");
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
            assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
            // The probe connection is in the live server's queue; after it,
            // a real client still gets through.
            let _probe = live.accept().expect("probe connection");
            connect_and_greet(&path, &live);
        }

        /// A live server whose backlog is full is still live: the probe does
        /// not block and does not steal.
        #[test]
        fn live_server_with_full_backlog_is_never_stolen() {
            let dir = TempDir::new("full");
            let path = dir.0.join("s.sock");
            let (live, _guard) = bind_unix(&path, None, 0).unwrap();
            // Fill the queue with non-blocking connects until EAGAIN
            // (bounded: a backlog of 0 admits one or two).
            let mut queued = Vec::new();
            for _ in 0..64 {
                let s = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
                s.set_nonblocking(true).unwrap();
                match s.connect(&SockAddr::unix(&path).unwrap()) {
                    Ok(()) => queued.push(s),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            assert!(queued.len() < 64, "the backlog never filled");
            let err = bind_unix(&path, None, 16).expect_err("live path refused");
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
            drop(live);
        }

        /// A file that is not a socket is an error and is left untouched.
        #[test]
        fn non_socket_file_is_never_deleted() {
            let dir = TempDir::new("regular");
            let path = dir.0.join("data");
            fs::write(&path, b"precious").unwrap();
            let err = bind_unix(&path, None, 16).expect_err("not a socket");
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
            assert_eq!(fs::read(&path).unwrap(), b"precious");
        }

        /// The requested mode is on the file once `bind_unix` returns.
        #[test]
        fn mode_is_applied() {
            let dir = TempDir::new("mode");
            let path = dir.0.join("s.sock");
            let (_listener, _guard) = bind_unix(&path, Some(0o600), 16).unwrap();
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }

        /// A bad path is an error naming the path, and leaves nothing behind.
        #[test]
        fn missing_directory_is_an_error_naming_the_path() {
            let dir = TempDir::new("nodir");
            let path = dir.0.join("no/such/dir/s.sock");
            let err = bind_unix(&path, None, 16).expect_err("no directory");
            assert!(err.to_string().contains("no/such/dir"), "{err}");
        }
    }

    mod guard {
        use super::*;

        /// A successor's file at the same path is not removed by the old
        /// guard.
        #[test]
        fn successors_file_is_left_alone() {
            let dir = TempDir::new("succ");
            let path = dir.0.join("s.sock");
            let (old, old_guard) = bind_unix(&path, None, 16).unwrap();
            drop(old); // the file is stale now
            let (new, _new_guard) = bind_unix(&path, None, 16).unwrap();
            assert!(!old_guard.remove().unwrap(), "not ours any more");
            connect_and_greet(&path, &new);
        }

        /// `keep` leaves the file for the process that took the listener.
        #[test]
        fn keep_leaves_the_file() {
            let dir = TempDir::new("keep");
            let path = dir.0.join("s.sock");
            let (_listener, guard) = bind_unix(&path, None, 16).unwrap();
            guard.keep();
            assert!(path.exists());
            let adopted = UnixPathGuard::adopt(&path).unwrap();
            assert!(adopted.remove().unwrap());
            assert!(!path.exists());
        }

        /// Removal moves the name aside first: no temporary name is left
        /// behind in the directory, whatever the outcome.
        #[test]
        fn no_aside_names_left_behind() {
            let dir = TempDir::new("aside");
            let path = dir.0.join("s.sock");
            let (old, old_guard) = bind_unix(&path, None, 16).unwrap();
            drop(old);
            let (_new, new_guard) = bind_unix(&path, None, 16).unwrap();
            drop(old_guard);
            drop(new_guard);
            let left: Vec<_> = fs::read_dir(&dir.0).unwrap().collect();
            assert!(left.is_empty(), "left behind: {left:?}");
        }
    }

    mod credentials {
        use super::*;

        /// `SO_PEERCRED` reports this process for both ends of a pair.
        #[test]
        fn peer_is_this_process() {
            let (a, b) = UnixStream::pair().unwrap();
            let cred = peer_credentials(&a).unwrap();
            assert_eq!(cred, peer_credentials(&b).unwrap());
            assert_eq!(cred.pid, Some(std::process::id()));
            assert_eq!(cred.uid, rustix::process::geteuid().as_raw());
            assert_eq!(cred.gid, rustix::process::getegid().as_raw());
            assert!(cred.to_string().starts_with(&format!("uid={}", cred.uid)));
        }

        /// A descriptor that is not a socket is an error.
        #[test]
        fn non_socket_is_an_error() {
            let file = fs::File::open("/dev/null").unwrap();
            let err = peer_credentials(&file).expect_err("not a socket");
            assert_eq!(
                err.raw_os_error(),
                Some(rustix::io::Errno::NOTSOCK.raw_os_error())
            );
        }
    }
}
