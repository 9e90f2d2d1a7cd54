//! examples/echo.rs beyond a TCP port, run as child processes: on a Unix
//! socket (`--unix`), on a socket passed the systemd way (`--inherit`), and
//! handing its sockets over to a successor process (`--handover`,
//! `--take-over`) under a storm of connecting clients.

mod util;

use std::env;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use util::{example, wait_until, DEADLINE};

/// The echo example, running as a child; killed on drop if still running
/// (a failed test).
struct Echo {
    child: Child,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Echo {
    fn start(args: &[&str]) -> Echo {
        let mut command = Command::new(example("echo"));
        command.args(args);
        Echo::spawn(command)
    }

    fn spawn(mut command: Command) -> Echo {
        let mut child = command
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the echo example");
        let (tx, stdout) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = Arc::clone(&stderr);
        let mut err = BufReader::new(child.stderr.take().unwrap());
        thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).is_ok_and(|n| n > 0) {
                collected.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Echo {
            child,
            stdout,
            stderr,
        }
    }

    /// What the next `listening on ` line says; lines before it (a test
    /// harness's, when the child is one) are skipped.
    fn listening(&mut self) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.find("listening on ") {
                        return line[at + "listening on ".len()..].to_string();
                    }
                }
                Err(_) => panic!(
                    "no `listening on` line; stderr:\n{}",
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    fn listening_tcp(&mut self) -> SocketAddr {
        let line = self.listening();
        line.parse()
            .unwrap_or_else(|_| panic!("not a TCP address: {line:?}"))
    }

    fn terminate(&self) {
        let pid = self.child.id() as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill {pid}");
    }

    /// Waits for the exit (killing the child after [`DEADLINE`]); returns
    /// the status and everything it wrote to stderr.
    fn wait(mut self) -> (ExitStatus, String) {
        let mut status = None;
        wait_until("the echo example exits", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        // The reading thread gets the last lines once the pipe closes.
        wait_until("its stderr is read", || {
            Arc::strong_count(&self.stderr) == 1
        });
        let stderr = self.stderr.lock().unwrap().clone();
        (status.unwrap(), stderr)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh path in the temp directory.
fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = env::temp_dir().join(format!(
        "netpool-echo-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    path
}

/// One line there and back over a stream; the reply, or why not.
fn roundtrip<S: std::io::Read + Write>(stream: S, line: &str) -> Result<String, String> {
    let mut reader = BufReader::new(stream);
    reader
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = String::new();
    match reader.read_line(&mut reply) {
        Ok(0) => Err("closed without a reply".to_string()),
        Ok(_) => Ok(reply),
        Err(e) => Err(format!("read: {e}")),
    }
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// The count after `name: ` in the `stats:` line the example prints at exit.
fn stat(stderr: &str, name: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("stats: "))
        .unwrap_or_else(|| panic!("no stats line in:\n{stderr}"));
    let at = line.find(&format!(" {name}: ")).expect(name) + name.len() + 3;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

// ----------------------------------------------------------------- --unix

/// `--unix PATH` serves on the path and says so as `listening on
/// unix:PATH`; SIGTERM stops it with status 0 and removes the file.
#[test]
fn echo_serves_a_unix_socket() {
    let path = temp_path("unix");
    let mut echo = Echo::start(&["--unix", path.to_str().unwrap()]);
    assert_eq!(echo.listening(), format!("unix:{}", path.display()));
    let client = UnixStream::connect(&path).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(roundtrip(&client, "over unix").unwrap(), "over unix\n");
    drop(client);
    echo.terminate();
    let (status, stderr) = echo.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!path.exists(), "the socket file outlived the stop");
}

// --------------------------------------------------------------- --inherit

/// Set in a child of this test binary that plays systemd: it moves its
/// stdin to descriptor 3 and becomes the echo example (`exec`, same pid)
/// with the protocol's variables.
const ACTIVATE: &str = "NETPOOL_TEST_ACTIVATE_ECHO";

/// The systemd side, in the child: descriptor 3 is the listening socket
/// (inheritable, as systemd leaves it), `LISTEN_PID` our pid, which `exec`
/// keeps. Never returns.
fn become_activated_echo(echo: &str) -> ! {
    let fd = rustix::io::fcntl_dupfd_cloexec(std::io::stdin(), 3).unwrap();
    assert_eq!(fd.as_raw_fd(), 3, "descriptor 3 was already taken");
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty()).unwrap();
    let _ = fd.into_raw_fd(); // the environment's now, as under systemd
    let e = Command::new(echo)
        .arg("--inherit")
        .env("LISTEN_PID", std::process::id().to_string())
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "echo")
        .stdin(Stdio::null())
        .exec();
    panic!("exec {echo}: {e}");
}

/// `--inherit` serves on the socket passed at descriptor 3 and prints its
/// real address.
#[test]
fn echo_inherits_a_socket_the_systemd_way() {
    if let Ok(echo) = env::var(ACTIVATE) {
        become_activated_echo(&echo);
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut command = Command::new(env::current_exe().unwrap());
    command
        .args([
            "echo_inherits_a_socket_the_systemd_way",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ACTIVATE, example("echo"))
        .stdin(Stdio::from(OwnedFd::from(listener)));
    let mut echo = Echo::spawn(command);
    assert_eq!(echo.listening_tcp(), addr);
    assert_eq!(roundtrip(tcp(addr), "activated").unwrap(), "activated\n");
    echo.terminate();
    let (status, stderr) = echo.wait();
    assert!(status.success(), "{status}: {stderr}");
}

/// `--inherit` with nothing passed exits at once with a clear error.
#[test]
fn echo_inherit_without_sockets_says_so() {
    let echo = Echo::start(&["--inherit"]);
    let (status, stderr) = echo.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--inherit") && stderr.contains("no sockets were passed"),
        "{stderr}"
    );
}

// ---------------------------------------------------------- the hand-over

/// Clients connecting every few milliseconds, each sending one line and
/// reading it back, until told to stop (at the latest after a minute).
struct Storm {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<(u64, Vec<String>)>,
}

impl Storm {
    fn start(addr: SocketAddr) -> Storm {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let (mut served, mut failures) = (0u64, Vec::new());
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                let n = served + failures.len() as u64;
                let result = TcpStream::connect_timeout(&addr, DEADLINE)
                    .map_err(|e| format!("connect: {e}"))
                    .and_then(|s| {
                        s.set_read_timeout(Some(DEADLINE)).unwrap();
                        roundtrip(s, &format!("storm {n}"))
                    });
                match result {
                    Ok(reply) if reply == format!("storm {n}\n") => served += 1,
                    Ok(reply) => failures.push(format!("client {n}: wrong reply {reply:?}")),
                    Err(e) => failures.push(format!("client {n}: {e}")),
                }
                // The pace of the storm, not a wait for anything.
                thread::sleep(Duration::from_millis(3));
            }
            (served, failures)
        });
        Storm { stop, thread }
    }

    /// Stops the storm: how many clients were served, and every failure.
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the storm thread")
    }
}

/// The old process hands its port over to a new one while clients connect
/// every few milliseconds: not one connect fails, both processes served
/// some of them, a connection established with the old process is served
/// on to its end after the hand-over, and the old process then exits 0.
#[test]
fn a_handover_between_processes_loses_no_client() {
    let ctl = temp_path("storm.ctl");
    let ctl_arg = ctl.to_str().unwrap();
    let mut old = Echo::start(&["--addr", "127.0.0.1:0", "--handover", ctl_arg]);
    let addr = old.listening_tcp();
    let long = tcp(addr);
    let mut long = BufReader::new(long);
    assert_eq!(roundtrip(long.get_mut(), "before").unwrap(), "before\n");

    let storm = Storm::start(addr);
    // Let the old process serve part of the storm first (checked at the
    // end, in its count of clients).
    thread::sleep(Duration::from_millis(150));
    let mut new = Echo::start(&["--take-over", ctl_arg]);
    // It prints its addresses once its predecessor has confirmed that it
    // stopped accepting.
    assert_eq!(new.listening_tcp(), addr, "the same port, received");

    // The old process still serves the connection it had.
    for i in 0..3 {
        let line = format!("after {i}");
        long.get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        let mut reply = String::new();
        long.read_line(&mut reply).unwrap();
        assert_eq!(reply, format!("{line}\n"));
    }
    // Let the new process serve part of the storm too.
    thread::sleep(Duration::from_millis(150));
    let (served, failures) = storm.finish();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert!(served >= 20, "only {served} clients in the storm");

    // The old one ends when its last connection does: drained, exit 0.
    drop(long);
    let (status, old_err) = old.wait();
    assert!(status.success(), "{status}: {old_err}");
    assert!(old_err.contains("force_closed: 0"), "{old_err}");
    new.terminate();
    let (status, new_err) = new.wait();
    assert!(status.success(), "{status}: {new_err}");
    let (by_old, by_new) = (stat(&old_err, "accepted"), stat(&new_err, "accepted"));
    println!("storm: {served} clients, {by_old} accepted by the old process, {by_new} by the new");
    assert!(by_old > 1 && by_new > 0, "old {by_old}, new {by_new}");
    assert_eq!(by_old + by_new, served + 1, "every client counted once");
    assert!(!ctl.exists(), "the control socket outlived the servers");
}

/// While a hand-over is under way, the control socket turns a second
/// successor away and the old server serves on; a successor that never
/// confirms changes nothing. Then a real successor takes over, offers the
/// sockets on in turn, and a third process takes them from it.
#[test]
fn the_control_socket_rejects_a_second_successor() {
    let ctl = temp_path("second.ctl");
    let ctl_arg = ctl.to_str().unwrap();
    let unix = temp_path("second.sock");
    let unix_arg = unix.to_str().unwrap();
    let mut old = Echo::start(&[
        "--addr",
        "127.0.0.1:0",
        "--unix",
        unix_arg,
        "--handover",
        ctl_arg,
    ]);
    let addr = old.listening_tcp();
    assert_eq!(old.listening(), format!("unix:{unix_arg}"));

    // This test process is the first successor: it takes the sockets and
    // holds the session open without confirming.
    let (held, confirmation) =
        netpool::listen::take_over(&ctl, DEADLINE).expect("the first successor");
    assert_eq!(held.len(), 2);
    let second = Echo::start(&["--take-over", ctl_arg]);
    let (status, stderr) = second.wait();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already in progress"), "{stderr}");
    assert_eq!(roundtrip(tcp(addr), "still old").unwrap(), "still old\n");
    // The first successor gives up without confirming: nothing changes.
    drop((held, confirmation));

    let mut next = Echo::start(&["--take-over", ctl_arg, "--handover", ctl_arg]);
    assert_eq!(next.listening_tcp(), addr);
    assert_eq!(next.listening(), format!("unix:{unix_arg}"));
    let (status, stderr) = old.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        unix.exists(),
        "the old server removed the file it handed over"
    );
    let via_unix = UnixStream::connect(&unix).unwrap();
    via_unix.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(roundtrip(&via_unix, "next").unwrap(), "next\n");
    drop(via_unix);

    // And on: the successor listens for its own successor.
    wait_until("the successor's control socket is up", || ctl.exists());
    let mut third = Echo::start(&["--take-over", ctl_arg]);
    assert_eq!(third.listening_tcp(), addr);
    let (status, stderr) = next.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(roundtrip(tcp(addr), "third").unwrap(), "third\n");
    third.terminate();
    let (status, stderr) = third.wait();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!unix.exists(), "the last server removes the file");
    assert!(!Path::new(&ctl).exists());
}
