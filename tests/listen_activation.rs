//! systemd socket activation, for real: a child process (this test binary,
//! run again for one test) starts with a socket at descriptor 3 and the
//! protocol's variables, and adopts it with `netpool::listen::from_env`.
//!
//! How the socket gets to descriptor 3 without `unsafe` (`pre_exec` is
//! unsafe): the parent passes it as the child's *stdin*, which `Command`
//! does safely, and the child duplicates descriptor 0 to the lowest free
//! descriptor from 3 (`fcntl(F_DUPFD)`, safe in rustix), checks that it got
//! 3, and clears close-on-exec, as systemd leaves it. Then it sets
//! `LISTEN_PID` to its own pid, which only the child knows. When the
//! `systemd-socket-activate` tool (Debian package `systemd`) is installed,
//! one more test lets the real tool do all of it.

mod util;

use std::env;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use netpool::listen::{from_env, ActivationError, Listener};
use rustix::io::FdFlags;
use util::DEADLINE;

/// Set in the child to the case it plays.
const CHILD: &str = "NETPOOL_TEST_ACTIVATION_CHILD";
/// Lines the child prints for the parent start with this.
const MARK: &str = "CHILD:";

const VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// A child test process whose stdout lines arrive on a channel, so that
/// every wait on it has a deadline.
struct ChildRun {
    child: Child,
    lines: Receiver<String>,
}

impl ChildRun {
    /// Runs this test binary again, for `test` only, playing `case`.
    fn start(test: &str, case: &str, stdin: Stdio) -> ChildRun {
        Self::start_with(Command::new(env::current_exe().unwrap()), test, case, stdin)
    }

    /// Runs `command` (which ends up executing this test binary) for
    /// `test` only.
    fn start_with(mut command: Command, test: &str, case: &str, stdin: Stdio) -> ChildRun {
        for var in VARS {
            command.env_remove(var);
        }
        let mut child = command
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, case)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildRun { child, lines }
    }

    /// The next line the child marked for us, without the mark.
    fn report(&mut self) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    // libtest may have printed "test NAME ... " on the
                    // same line before the child's own output.
                    if let Some(at) = line.find(MARK) {
                        return line[at + MARK.len()..].to_string();
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("the child reported nothing in time (see its output above)");
                }
            }
        }
    }

    /// Waits for the child to exit; kills it after the deadline.
    fn finish(mut self) -> ExitStatus {
        let mut status = None;
        util::wait_until("the child exits", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for ChildRun {
    fn drop(&mut self) {
        // A child still running here belongs to a failed test.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------- child side

/// The child's half: the parent's stdin moved to descriptor 3, inheritable,
/// owned by "the environment" as systemd's are.
fn stdin_to_fd3() {
    let fd = rustix::io::fcntl_dupfd_cloexec(std::io::stdin(), 3).unwrap();
    assert_eq!(
        fd.as_raw_fd(),
        3,
        "descriptor 3 was already taken in the child"
    );
    rustix::io::fcntl_setfd(&fd, FdFlags::empty()).unwrap();
    // From here on descriptor 3 is no one's in this process until
    // `from_env` adopts it: exactly the situation under systemd.
    let _ = fd.into_raw_fd();
}

fn set_vars(pid: u32, fds: &str, names: Option<&str>) {
    // The child runs this one test on one thread: no one else reads the
    // environment meanwhile.
    env::set_var("LISTEN_PID", pid.to_string());
    env::set_var("LISTEN_FDS", fds);
    if let Some(names) = names {
        env::set_var("LISTEN_FDNAMES", names);
    }
}

fn assert_vars_unset() {
    for var in VARS {
        assert_eq!(env::var_os(var), None, "{var} still set");
    }
}

fn report(line: impl std::fmt::Display) {
    println!("{MARK}{line}");
}

/// Accepts one connection on a non-blocking listener, within the deadline.
fn accept_one(listener: &Listener) -> Box<dyn Write> {
    let until = Instant::now() + DEADLINE;
    loop {
        let accepted: std::io::Result<Box<dyn Write>> = match listener {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Write>),
            Listener::Unix(l) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Write>),
        };
        match accepted {
            Ok(stream) => return stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < until, "nobody connected");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Adopts, checks what the kernel says about descriptor 3, reports, and
/// serves one connection.
fn child_adopt_and_serve() {
    stdin_to_fd3();
    set_vars(std::process::id(), "1", Some("web"));
    let mut inherited = from_env().expect("adopt descriptor 3");
    assert_vars_unset();
    assert_eq!(inherited.len(), 1);
    let only = inherited.pop().unwrap();
    assert_eq!(only.name.as_deref(), Some("web"));
    let listener = only.listener;
    assert_eq!(
        listener.as_fd().as_raw_fd(),
        3,
        "descriptor 3 itself, not a copy"
    );
    let flags = rustix::io::fcntl_getfd(listener.as_fd()).unwrap();
    assert!(flags.contains(FdFlags::CLOEXEC), "close-on-exec set");
    // Nobody connects before our report: a blocking listener would hang.
    let err = match &listener {
        Listener::Tcp(l) => l.accept().map(drop).expect_err("nobody yet"),
        Listener::Unix(l) => l.accept().map(drop).expect_err("nobody yet"),
    };
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "non-blocking");
    report(format!("{} {listener}", listener.kind()));
    let mut stream = accept_one(&listener);
    stream.write_all(b"served by the child\n").unwrap();
}

/// Expects `from_env` to refuse, reports the error, and checks that the
/// variables are gone and descriptor 3 is still open.
fn child_expect_refusal(pid: u32) {
    stdin_to_fd3();
    set_vars(pid, "1", None);
    let err = from_env().expect_err("refused");
    assert_vars_unset();
    let target = std::fs::read_link("/proc/self/fd/3");
    report(format!(
        "{err} | fd3={}",
        target.map_or("closed".to_string(), |t| t.display().to_string())
    ));
}

// --------------------------------------------------------------- parent side

fn read_reply(mut stream: impl Read) -> String {
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .expect("read the child's reply");
    reply
}

fn temp_path(tag: &str) -> PathBuf {
    let path = env::temp_dir().join(format!("netpool-act-{tag}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A TCP listener at descriptor 3 is adopted as TCP, with its name,
/// non-blocking and close-on-exec, and serves a client; the variables are
/// gone.
#[test]
fn adopts_a_tcp_listener() {
    if env::var_os(CHILD).is_some() {
        return child_adopt_and_serve();
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut run = ChildRun::start(
        "adopts_a_tcp_listener",
        "tcp",
        Stdio::from(OwnedFd::from(listener)),
    );
    assert_eq!(run.report(), format!("tcp {addr}"));
    let client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(read_reply(client), "served by the child\n");
    assert!(run.finish().success());
}

/// A Unix listener at descriptor 3 is adopted as Unix and serves a client.
#[test]
fn adopts_a_unix_listener() {
    if env::var_os(CHILD).is_some() {
        return child_adopt_and_serve();
    }
    let path = temp_path("unix");
    let listener = UnixListener::bind(&path).unwrap();
    let mut run = ChildRun::start(
        "adopts_a_unix_listener",
        "unix",
        Stdio::from(OwnedFd::from(listener)),
    );
    assert_eq!(run.report(), format!("unix unix:{}", path.display()));
    let client = UnixStream::connect(&path).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(read_reply(client), "served by the child\n");
    assert!(run.finish().success());
    std::fs::remove_file(&path).unwrap();
}

/// A connected socket (what `Accept=yes` passes) is refused by number, with
/// the reason.
#[test]
fn refuses_a_connected_socket() {
    if env::var_os(CHILD).is_some() {
        return child_expect_refusal(std::process::id());
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let connected = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut run = ChildRun::start(
        "refuses_a_connected_socket",
        "connected",
        Stdio::from(OwnedFd::from(connected)),
    );
    let report = run.report();
    assert!(
        report.starts_with("passed descriptor 3 is not a listening TCP or Unix stream socket")
            && report.contains("not listening"),
        "{report}"
    );
    assert!(run.finish().success());
}

/// A descriptor that is no socket is refused and left open: it may be
/// someone else's.
#[test]
fn refuses_and_leaves_open_a_non_socket() {
    if env::var_os(CHILD).is_some() {
        return child_expect_refusal(std::process::id());
    }
    let mut run = ChildRun::start(
        "refuses_and_leaves_open_a_non_socket",
        "file",
        Stdio::null(),
    );
    let report = run.report();
    assert!(report.contains("is not a socket"), "{report}");
    assert!(report.ends_with("fd3=/dev/null"), "left open: {report}");
    assert!(run.finish().success());
}

/// Variables meant for another pid: nothing is taken, the variables go.
#[test]
fn refuses_another_pids_sockets() {
    if env::var_os(CHILD).is_some() {
        return child_expect_refusal(std::process::id() + 1);
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut run = ChildRun::start(
        "refuses_another_pids_sockets",
        "mismatch",
        Stdio::from(OwnedFd::from(listener)),
    );
    let report = run.report();
    assert!(report.contains("not for us"), "{report}");
    assert!(report.contains("fd3=socket:"), "untouched: {report}");
    assert!(run.finish().success());
}

/// A process started without activation hears "none passed", and its
/// environment is left alone.
#[test]
fn none_passed_without_the_variables() {
    if env::var_os(CHILD).is_some() {
        env::set_var("LISTEN_FDNAMES", "stray");
        let err = from_env().expect_err("none");
        assert!(matches!(err, ActivationError::NonePassed));
        assert_eq!(env::var("LISTEN_FDNAMES").unwrap(), "stray");
        return report(err);
    }
    let mut run = ChildRun::start("none_passed_without_the_variables", "none", Stdio::null());
    assert!(run.report().starts_with("no sockets were passed"));
    assert!(run.finish().success());
}

// ------------------------------------------------- systemd-socket-activate

fn socket_activate_tool() -> Option<PathBuf> {
    let found = env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("systemd-socket-activate"))
        .find(|p| p.exists());
    if found.is_none() {
        eprintln!("systemd-socket-activate is not installed (Debian package systemd): skipped");
    }
    found
}

/// systemd's own tool passes two named Unix listeners; both are adopted in
/// order with their names, and the first serves the connection that
/// triggered the activation.
#[test]
fn systemd_socket_activate_passes_named_listeners() {
    if env::var_os(CHILD).is_some() {
        let inherited = from_env().expect("adopt what systemd-socket-activate passed");
        assert_vars_unset();
        let shown: Vec<String> = inherited
            .iter()
            .map(|i| format!("{}={}", i.name.as_deref().unwrap_or("-"), i.listener))
            .collect();
        let mut stream = accept_one(&inherited[0].listener);
        writeln!(stream, "{}", shown.join(" ")).unwrap();
        return;
    }
    let Some(tool) = socket_activate_tool() else {
        return;
    };
    let (first, second) = (temp_path("sd-first"), temp_path("sd-second"));
    let mut command = Command::new(tool);
    command.args([
        "-l".as_ref(),
        first.as_os_str(),
        "-l".as_ref(),
        second.as_os_str(),
        "--fdname=first:second".as_ref(),
        format!("--setenv={CHILD}=sd").as_ref(),
        env::current_exe().unwrap().as_os_str(),
    ]);
    let run = ChildRun::start_with(
        command,
        "systemd_socket_activate_passes_named_listeners",
        "sd",
        Stdio::null(),
    );
    // The tool starts the child at the first connection.
    let mut client = None;
    util::wait_until("systemd-socket-activate listens", || {
        client = UnixStream::connect(&first).ok();
        client.is_some()
    });
    let client = client.unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(
        read_reply(client),
        format!(
            "first=unix:{} second=unix:{}\n",
            first.display(),
            second.display()
        )
    );
    assert!(run.finish().success());
    let _ = std::fs::remove_file(&first);
    let _ = std::fs::remove_file(&second);
}

/// A datagram socket (`ListenDatagram=`) is refused with what it is.
#[test]
fn systemd_socket_activate_datagram_is_refused() {
    if env::var_os(CHILD).is_some() {
        let err = from_env().expect_err("a datagram socket");
        assert_vars_unset();
        // The tool execs us with its own stdout: the parent's pipe.
        return report(err);
    }
    let Some(tool) = socket_activate_tool() else {
        return;
    };
    let path = temp_path("sd-dgram");
    let mut command = Command::new(tool);
    command.args([
        "-d".as_ref(),
        "-l".as_ref(),
        path.as_os_str(),
        format!("--setenv={CHILD}=sd-dgram").as_ref(),
        env::current_exe().unwrap().as_os_str(),
    ]);
    let mut run = ChildRun::start_with(
        command,
        "systemd_socket_activate_datagram_is_refused",
        "sd-dgram",
        Stdio::null(),
    );
    let sender = UnixDatagram::unbound().unwrap();
    util::wait_until("systemd-socket-activate listens", || {
        sender.send_to(b"wake up", &path).is_ok()
    });
    let report = run.report();
    assert!(
        report.starts_with("passed descriptor 3 is not a listening")
            && report.contains("a datagram socket"),
        "{report}"
    );
    assert!(run.finish().success());
    let _ = std::fs::remove_file(&path);
}
