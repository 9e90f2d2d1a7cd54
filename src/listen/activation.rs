//! systemd socket activation: adopting the listening sockets a service
//! manager opened for us.
//!
//! The protocol (`sd_listen_fds(3)`): the manager binds the sockets, then
//! starts us with them open at descriptors 3, 4, … and three environment
//! variables: `LISTEN_PID` (the pid they are meant for, so that a child
//! that inherited the environment does not take them too), `LISTEN_FDS`
//! (how many) and, optionally, `LISTEN_FDNAMES` (colon-separated names, one
//! per descriptor, from `FileDescriptorName=`). The manager owns the socket
//! files; we never remove them.
//!
//! The parsing is a pure function ([`parse`]), tested on its own. Adoption
//! asks the kernel what each descriptor is (see `Listener::from_fd`)
//! rather than trusting a name or an order.
//!
//! Taking ownership of descriptor 3 is `OwnedFd::from_raw_fd`, which is
//! `unsafe` by nature (nothing proves that no one else owns it). The
//! `listenfd` crate does that step for us, so netpool keeps
//! `#![forbid(unsafe_code)]`; the checks it does not do (`LISTEN_PID`
//! present and ours, names, listening state, protocol) are done here first.

use std::env;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;

use listenfd::ListenFd;
use rustix::net::{AddressFamily, SocketType};

use super::wire::MAX_NAME_LEN;
use super::{Inherited, Listener, MAX_LISTENERS};

/// The first descriptor passed (`SD_LISTEN_FDS_START`).
const FIRST_FD: usize = 3;

/// Why no listeners were adopted.
#[derive(Debug)]
#[non_exhaustive]
pub enum ActivationError {
    /// Neither `LISTEN_PID` nor `LISTEN_FDS` is set, or `LISTEN_FDS=0`: the
    /// process was not socket-activated. Not a failure in itself: a server
    /// that may be started either way falls back to binding.
    NonePassed,
    /// One of `LISTEN_PID` and `LISTEN_FDS` is set without the other.
    Incomplete {
        /// The variable that is missing.
        missing: &'static str,
    },
    /// `LISTEN_PID` names another process: the variables were inherited
    /// from a parent and the descriptors are not ours to take.
    PidMismatch {
        /// The value of `LISTEN_PID`.
        listen_pid: u32,
        /// Our pid.
        ours: u32,
    },
    /// A variable does not hold what the protocol says it holds.
    Malformed {
        /// The variable.
        var: &'static str,
        /// Its value (lossily decoded if it is not UTF-8).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More descriptors than [`MAX_LISTENERS`].
    TooMany {
        /// The value of `LISTEN_FDS`.
        count: usize,
    },
    /// `LISTEN_FDNAMES` does not have one name per descriptor.
    NamesMismatch {
        /// How many names it has.
        names: usize,
        /// How many descriptors `LISTEN_FDS` announces.
        fds: usize,
    },
    /// A passed descriptor is not a listening TCP or Unix stream socket
    /// (a datagram socket from `ListenDatagram=`, a FIFO, a connected
    /// socket of `Accept=yes`, or nothing at all).
    NotAListener {
        /// The descriptor number.
        fd: usize,
        /// Its name in `LISTEN_FDNAMES`, if any.
        name: Option<String>,
        /// What it is instead.
        reason: String,
    },
}

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivationError::NonePassed => f.write_str(
                "no sockets were passed (LISTEN_FDS and LISTEN_PID are not set): \
                 not started by socket activation",
            ),
            ActivationError::Incomplete { missing } => write!(
                f,
                "socket activation variables are incomplete: {missing} is not set"
            ),
            ActivationError::PidMismatch { listen_pid, ours } => write!(
                f,
                "the passed sockets are for pid {listen_pid}, not for us (pid {ours})"
            ),
            ActivationError::Malformed { var, value, reason } => {
                write!(f, "{var}={value:?}: {reason}")
            }
            ActivationError::TooMany { count } => write!(
                f,
                "LISTEN_FDS={count}: more than the {MAX_LISTENERS} listeners netpool adopts"
            ),
            ActivationError::NamesMismatch { names, fds } => {
                write!(f, "LISTEN_FDNAMES has {names} names for {fds} descriptors")
            }
            ActivationError::NotAListener { fd, name, reason } => {
                write!(f, "passed descriptor {fd}")?;
                if let Some(name) = name {
                    write!(f, " ({name:?})")?;
                }
                write!(f, " is not a listening TCP or Unix stream socket: {reason}")
            }
        }
    }
}

impl std::error::Error for ActivationError {}

impl From<ActivationError> for io::Error {
    fn from(e: ActivationError) -> io::Error {
        let kind = match e {
            ActivationError::NonePassed => io::ErrorKind::NotFound,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// Adopts the listening sockets passed by systemd (or
/// `systemd-socket-activate`, or anything speaking the protocol), in the
/// order of their descriptors, with their names.
///
/// The variables are unset whatever the outcome (once any is set), so that
/// children do not inherit them, as `sd_listen_fds(1)` does. Call this
/// early, before the process starts threads that read the environment:
/// changing the environment while another thread reads it is a data race
/// in the C library (the reason `remove_var` is `unsafe` from edition 2024).
///
/// # Errors
///
/// [`ActivationError::NonePassed`] when the process was not
/// socket-activated (the variables are then left as they are); the other
/// variants when the variables are inconsistent or a descriptor is not a
/// listening stream socket. On an error nothing is returned: descriptors
/// already adopted are closed, and descriptors that are not sockets are
/// left open, untouched (they may be someone else's).
pub fn from_env() -> Result<Vec<Inherited>, ActivationError> {
    let pid = read_var("LISTEN_PID")?;
    let fds = read_var("LISTEN_FDS")?;
    let names = read_var("LISTEN_FDNAMES")?;
    if pid.is_none() && fds.is_none() {
        return Err(ActivationError::NonePassed);
    }
    let plan = parse(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    );
    // `LISTEN_FDS_FIRST_FD` is no part of systemd's protocol, but listenfd
    // honours it; without it listenfd starts at 3, as `parse` assumed.
    env::remove_var("LISTEN_FDS_FIRST_FD");
    env::remove_var("LISTEN_FDNAMES");
    let names = match plan {
        Ok(names) => names,
        Err(e) => {
            env::remove_var("LISTEN_PID");
            env::remove_var("LISTEN_FDS");
            return Err(e);
        }
    };
    // listenfd reads LISTEN_PID and LISTEN_FDS again and unsets them.
    let mut passed = ListenFd::from_env();
    env::remove_var("LISTEN_PID");
    env::remove_var("LISTEN_FDS");
    if passed.len() != names.len() {
        return Err(ActivationError::Malformed {
            var: "LISTEN_FDS",
            value: passed.len().to_string(),
            reason: "changed while it was being read",
        });
    }
    names
        .into_iter()
        .enumerate()
        .map(|(index, name)| {
            let listener = adopt(&mut passed, index, name.as_deref())?;
            Ok(Inherited { name, listener })
        })
        .collect()
}

/// Takes descriptor `3 + index` from listenfd and checks it.
fn adopt(
    passed: &mut ListenFd,
    index: usize,
    name: Option<&str>,
) -> Result<Listener, ActivationError> {
    let not_a_listener = |reason: String| ActivationError::NotAListener {
        fd: FIRST_FD + index,
        name: name.map(str::to_string),
        reason,
    };
    // listenfd hands a descriptor over only once it has checked that it is
    // a socket of the family and type asked for, and leaves it in place
    // otherwise. Asking for every family and type we know makes every
    // socket ours to inspect (and so to name precisely in an error), while
    // a descriptor that is no socket at all is never taken, never closed.
    let mut last_refusal = None;
    for (family, ty) in SOCKET_KINDS {
        match passed.take_custom::<OwnedFd>(
            index,
            i32::from(family.as_raw()),
            ty.as_raw() as i32,
            "socket of a family and type netpool serves",
        ) {
            Ok(Some(fd)) => {
                // A socket that fails here (datagram, not listening, not
                // TCP) was passed to us by the protocol: dropping it, which
                // closes it, is ours to do.
                return Listener::from_fd(fd).map_err(|(_fd, reason)| not_a_listener(reason));
            }
            Ok(None) => return Err(not_a_listener("already taken".to_string())),
            Err(e) => last_refusal = Some(e),
        }
    }
    let reason = last_refusal.map_or_else(String::new, |e| e.to_string());
    Err(not_a_listener(format!("{reason} (left open)")))
}

/// The (family, type) pairs asked of listenfd, most likely first. listenfd
/// counts an IPv6 socket as `AF_INET`.
const SOCKET_KINDS: [(AddressFamily, SocketType); 6] = [
    (AddressFamily::INET, SocketType::STREAM),
    (AddressFamily::UNIX, SocketType::STREAM),
    (AddressFamily::INET, SocketType::DGRAM),
    (AddressFamily::UNIX, SocketType::DGRAM),
    (AddressFamily::UNIX, SocketType::SEQPACKET),
    (AddressFamily::INET, SocketType::SEQPACKET),
];

fn read_var(var: &'static str) -> Result<Option<String>, ActivationError> {
    match env::var_os(var) {
        None => Ok(None),
        Some(value) => value
            .into_string()
            .map(Some)
            .map_err(|value| ActivationError::Malformed {
                var,
                value: value.to_string_lossy().into_owned(),
                reason: "not UTF-8",
            }),
    }
}

/// Checks the three variables against the protocol and `our_pid`, and
/// returns one name (or `None`) per passed descriptor, in order.
///
/// No I/O: the values are passed in.
pub(super) fn parse(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    our_pid: u32,
) -> Result<Vec<Option<String>>, ActivationError> {
    let (pid, fds) = match (pid, fds) {
        (None, None) => return Err(ActivationError::NonePassed),
        (Some(_), None) => {
            return Err(ActivationError::Incomplete {
                missing: "LISTEN_FDS",
            })
        }
        (None, Some(_)) => {
            return Err(ActivationError::Incomplete {
                missing: "LISTEN_PID",
            })
        }
        (Some(pid), Some(fds)) => (pid, fds),
    };
    let listen_pid = number("LISTEN_PID", pid)?;
    if listen_pid == 0 {
        return Err(ActivationError::Malformed {
            var: "LISTEN_PID",
            value: pid.to_string(),
            reason: "0 is no process",
        });
    }
    if listen_pid != u64::from(our_pid) {
        return Err(ActivationError::PidMismatch {
            listen_pid: u32::try_from(listen_pid).unwrap_or(u32::MAX),
            ours: our_pid,
        });
    }
    let count = number("LISTEN_FDS", fds)?;
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count == 0 {
        return Err(ActivationError::NonePassed);
    }
    if count > MAX_LISTENERS {
        return Err(ActivationError::TooMany { count });
    }
    let Some(names) = names else {
        return Ok(vec![None; count]);
    };
    let names: Vec<&str> = names.split(':').collect();
    if names.len() != count {
        return Err(ActivationError::NamesMismatch {
            names: names.len(),
            fds: count,
        });
    }
    names
        .into_iter()
        .map(|name| {
            if name.len() > MAX_NAME_LEN {
                return Err(ActivationError::Malformed {
                    var: "LISTEN_FDNAMES",
                    value: name.to_string(),
                    reason: "a name is longer than 255 bytes",
                });
            }
            Ok((!name.is_empty()).then(|| name.to_string()))
        })
        .collect()
}

/// A decimal number as the protocol writes it: ASCII digits only (no sign,
/// no spaces), at most `u64`.
fn number(var: &'static str, value: &str) -> Result<u64, ActivationError> {
    let malformed = |reason| ActivationError::Malformed {
        var,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("not a decimal number"));
    }
    value.parse().map_err(|_| malformed("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: u32 = 4242;

    fn err(pid: Option<&str>, fds: Option<&str>, names: Option<&str>) -> ActivationError {
        parse(pid, fds, names, PID).expect_err("should be refused")
    }

    mod absent {
        use super::*;

        /// No variables: "none passed", told apart from every error.
        #[test]
        fn nothing_set_is_none_passed() {
            assert!(matches!(err(None, None, None), ActivationError::NonePassed));
            let e = io::Error::from(ActivationError::NonePassed);
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
        }

        /// `LISTEN_FDS=0` passes nothing.
        #[test]
        fn zero_fds_is_none_passed() {
            let e = err(Some("4242"), Some("0"), None);
            assert!(matches!(e, ActivationError::NonePassed), "{e}");
        }

        /// Half the protocol is an error naming the missing half.
        #[test]
        fn one_without_the_other_is_incomplete() {
            let e = err(Some("4242"), None, None);
            assert!(matches!(
                e,
                ActivationError::Incomplete {
                    missing: "LISTEN_FDS"
                }
            ));
            let e = err(None, Some("1"), None);
            assert!(matches!(
                e,
                ActivationError::Incomplete {
                    missing: "LISTEN_PID"
                }
            ));
            assert!(e.to_string().contains("LISTEN_PID is not set"), "{e}");
        }
    }

    mod pid {
        use super::*;

        /// Descriptors meant for another process are not taken.
        #[test]
        fn another_pid_is_a_mismatch() {
            let e = err(Some("4243"), Some("1"), None);
            assert!(matches!(
                e,
                ActivationError::PidMismatch {
                    listen_pid: 4243,
                    ours: PID
                }
            ));
            assert!(e.to_string().contains("pid 4243"), "{e}");
        }

        /// Only plain decimal digits are a pid.
        #[test]
        fn malformed_pids_are_refused() {
            for bad in ["", "+4242", " 4242", "4242 ", "0x1092", "-1", "abc", "0"] {
                let e = err(Some(bad), Some("1"), None);
                assert!(
                    matches!(
                        e,
                        ActivationError::Malformed {
                            var: "LISTEN_PID",
                            ..
                        }
                    ),
                    "{bad:?}: {e}"
                );
            }
            let e = err(Some("99999999999999999999999"), Some("1"), None);
            assert!(e.to_string().contains("too large"), "{e}");
        }
    }

    mod count {
        use super::*;

        /// The count gives one unnamed entry per descriptor.
        #[test]
        fn count_without_names() {
            assert_eq!(
                parse(Some("4242"), Some("2"), None, PID).unwrap(),
                [None, None]
            );
        }

        /// A count that is not a number, or too large, is refused.
        #[test]
        fn bad_counts_are_refused() {
            let e = err(Some("4242"), Some("two"), None);
            assert!(matches!(
                e,
                ActivationError::Malformed {
                    var: "LISTEN_FDS",
                    ..
                }
            ));
            let e = err(Some("4242"), Some("65"), None);
            assert!(matches!(e, ActivationError::TooMany { count: 65 }), "{e}");
            assert_eq!(
                parse(Some("4242"), Some("64"), None, PID).unwrap().len(),
                64
            );
        }
    }

    mod names {
        use super::*;

        /// Names are matched to descriptors in order; an empty one is no
        /// name.
        #[test]
        fn names_in_order() {
            let got = parse(Some("4242"), Some("3"), Some("web:admin:"), PID).unwrap();
            assert_eq!(got, [Some("web".into()), Some("admin".into()), None]);
        }

        /// One name per descriptor, or an error saying how many of each.
        #[test]
        fn wrong_number_of_names() {
            let e = err(Some("4242"), Some("2"), Some("web"));
            assert!(matches!(
                e,
                ActivationError::NamesMismatch { names: 1, fds: 2 }
            ));
            assert_eq!(
                e.to_string(),
                "LISTEN_FDNAMES has 1 names for 2 descriptors"
            );
        }

        /// A name that could not be handed over later is refused now.
        #[test]
        fn over_long_name() {
            let long = "n".repeat(MAX_NAME_LEN + 1);
            let e = err(Some("4242"), Some("1"), Some(&long));
            assert!(matches!(
                e,
                ActivationError::Malformed {
                    var: "LISTEN_FDNAMES",
                    ..
                }
            ));
        }
    }
}
