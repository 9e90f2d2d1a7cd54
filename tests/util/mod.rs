//! Helpers shared by the socket tests: start a server on a free loopback
//! port, talk to it with deadlines, wait for conditions without sleeping
//! blindly.

#![allow(dead_code)] // each test file uses a different subset

pub mod prometheus;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use netpool::{Builder, Conn, ConnHandle, Error, Framing, Handler, ServerThread};

/// How long any single wait in a test may take before it counts as a failure.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Starts `handler` on `builder` at 127.0.0.1:0, on its own thread, with
/// whatever framing the builder has.
pub fn start<F: Framing, H: Handler<F> + Send>(builder: Builder<F>, handler: H) -> ServerThread {
    let _ = env_logger::builder().is_test(true).try_init();
    builder
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind 127.0.0.1:0")
        .spawn(handler)
        .expect("spawn server")
}

/// The echo handler of examples/echo.rs.
pub fn echo(line: &[u8], conn: &mut Conn) {
    conn.send(line);
    conn.send(b"\n");
}

/// A blocking test client whose reads give up after [`DEADLINE`].
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_write_timeout(Some(DEADLINE)).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send");
    }

    /// Reads one line including its `\n`; panics on EOF or timeout.
    pub fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let n = self.reader.read_until(b'\n', &mut line).expect("read line");
        assert!(n > 0, "unexpected end of stream");
        line
    }

    /// Sends `line` and returns the reply line.
    pub fn roundtrip(&mut self, line: &[u8]) -> Vec<u8> {
        self.send(line);
        self.line()
    }

    /// Reads until end of stream; returns what came before it.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => rest,
            // A reset also ends the stream; what was read is kept.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => rest,
            Err(e) => panic!("read to end: {e}"),
        }
    }

    /// True if nothing arrives within `wait` (the connection stays silent).
    pub fn silent_for(&mut self, wait: Duration) -> bool {
        self.stream().set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        let silent = match self.reader.read(&mut byte) {
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            Ok(_) => false,
        };
        self.stream().set_read_timeout(Some(DEADLINE)).unwrap();
        silent
    }

    pub fn shutdown_write(&self) {
        self.stream().shutdown(Shutdown::Write).unwrap();
    }
}

/// A client connecting from the loopback address `source` (any 127.x.y.z
/// works without set-up), to test per-address limits and filters.
pub fn connect_from(source: &str, to: SocketAddr) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    Client {
        reader: BufReader::new(stream),
    }
}

/// Reads `n` reply lines from `reader`, each of which must be
/// `expected(i)`; `what` names the stream in a failure.
pub fn expect_lines(
    reader: &mut impl BufRead,
    n: usize,
    what: &str,
    expected: impl Fn(usize) -> String,
) {
    let mut line = String::new();
    for i in 0..n {
        line.clear();
        reader.read_line(&mut line).expect("a reply");
        assert_eq!(line, expected(i), "{what}, reply {i}");
    }
}

/// Polls `cond` until it holds; panics with `what` after [`DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Sends numbered lines (`0000\n`, `0001\n`, ...) through `conn` until its
/// loop's command queue is full, and returns how many went in. The loop must
/// be kept from taking its queue meanwhile (a handler that waits). Panics
/// on an error other than `Full`, or if `most` sends did not fill it.
pub fn fill_command_queue(conn: &ConnHandle, most: usize) -> usize {
    for sent in 0..most {
        match conn.send(format!("{sent:04}\n")) {
            Ok(()) => {}
            Err(Error::Full) => return sent,
            Err(e) => panic!("a send failed, and not for a full queue: {e}"),
        }
    }
    panic!("{most} sends did not fill the queue");
}

/// This process's CPU time (user + system) so far. Uses `getrusage`, which
/// needs no descriptor (tests run it while descriptors are exhausted).
pub fn process_cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Raises the soft descriptor limit to at least `want` (up to the hard
/// limit). Returns false, after printing why, if that is not possible, so the
/// caller can skip.
pub fn raise_fd_limit(want: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if lim.rlim_cur >= want {
        return true;
    }
    if lim.rlim_max < want {
        eprintln!(
            "skipped: needs {want} descriptors, hard limit is {}",
            lim.rlim_max
        );
        return false;
    }
    lim.rlim_cur = want;
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        eprintln!("skipped: setrlimit failed: {}", io::Error::last_os_error());
        return false;
    }
    true
}

/// This process's soft descriptor limit.
pub fn soft_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_cur
}

/// Sets this process's soft descriptor limit.
pub fn set_soft_fd_limit(soft: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_cur = soft;
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

/// The soft limit that leaves exactly one descriptor free. The limit caps
/// descriptor *numbers*, and new descriptors take the lowest free number, so
/// count the gaps below it.
pub fn limit_with_one_free() -> u64 {
    let open: Vec<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .map(|e| e.unwrap().path())
        // The listing's own descriptor is among them; it is closed by now.
        .filter(|p| {
            std::fs::read_link(p).is_ok_and(|target| !target.to_string_lossy().ends_with("/fd"))
        })
        .map(|p| p.file_name().unwrap().to_str().unwrap().parse().unwrap())
        .collect();
    (1..)
        .find(|limit| limit - open.iter().filter(|fd| *fd < limit).count() as u64 == 1)
        .unwrap()
}

/// The binary of example `name`, built once per test process. Cargo gives
/// tests no `CARGO_BIN_EXE_*` for examples, and `cargo test --test NAME` does
/// not build them, so we ask cargo: it builds the example if it is stale and
/// names the binary in its JSON messages, wherever the target directory is.
pub fn example(name: &str) -> &'static Path {
    static BUILT: Mutex<Option<HashMap<String, &'static Path>>> = Mutex::new(None);
    // Held while cargo runs, so that two tests asking for the same example
    // build it once.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(name) {
        return path;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--example", name, "--message-format=json"])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .stderr(Stdio::inherit());
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let out = build.output().expect("run cargo");
    assert!(out.status.success(), "cargo build --example {name} failed");
    let named = format!(r#""name":"{name}""#);
    let path: PathBuf = String::from_utf8(out.stdout)
        .expect("cargo's messages are UTF-8")
        .lines()
        .filter(|m| m.contains(r#""kind":["example"]"#) && m.contains(&named))
        .find_map(executable)
        .unwrap_or_else(|| panic!("cargo named no executable for the {name} example"));
    let path: &'static Path = Box::leak(path.into_boxed_path());
    built.insert(name.to_string(), path);
    path
}

/// The `"executable"` path of one cargo JSON message, unescaped.
fn executable(message: &str) -> Option<PathBuf> {
    let start = message.find(r#""executable":""#)? + r#""executable":""#.len();
    let mut path = String::new();
    let mut chars = message[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(path.into()),
            '\\' => path.push(chars.next()?),
            c => path.push(c),
        }
    }
    None
}

/// An example server run as a child process on a port it picked (pass it
/// `--addr 127.0.0.1:0`), found from its `listening on ADDR` line; killed
/// on drop if a test failed before stopping it.
pub struct Example {
    pub child: Child,
    pub addr: SocketAddr,
    /// Everything the example wrote to stderr so far.
    stderr: Arc<Mutex<String>>,
    /// The thread collecting stderr; it ends at the child's end of stream,
    /// so joining it after the exit means every line is in.
    collector: Option<std::thread::JoinHandle<()>>,
}

impl Example {
    /// Starts example `name` with `args` and waits for its address.
    pub fn start(name: &str, args: &[&str]) -> Example {
        let mut child = Command::new(example(name))
            .args(args)
            // One malloc arena: tests read the child's address space, which
            // an arena made for another thread would grow by 64 MiB of
            // reservation that no allocation of ours asked for.
            .env("MALLOC_ARENA_MAX", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start the {name} example: {e}"));
        // Read the first line on a thread, so that an example that never
        // prints it fails the test after DEADLINE instead of hanging it.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = Arc::clone(&stderr);
        let mut from_child = BufReader::new(child.stderr.take().unwrap());
        let collector = std::thread::spawn(move || {
            let mut line = String::new();
            while from_child.read_line(&mut line).is_ok_and(|n| n > 0) {
                collected.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let mut example = Example {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            stderr,
            collector: Some(collector),
        };
        let line = rx.recv_timeout(DEADLINE).expect("no `listening on` line");
        example.addr = line
            .trim_end()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line {line:?}; stderr: {}", example.stderr()))
            .parse()
            .expect("an address after `listening on`");
        example
    }

    /// What the example wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut status = None;
        wait_until("the example exits", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        // The exit closed the child's stderr: once the collector has read
        // to its end, the last lines (the stop message) are in.
        if let Some(collector) = self.collector.take() {
            collector.join().expect("the stderr collector");
        }
        status.unwrap()
    }

    /// The example's resident memory (`VmRSS`), in bytes.
    pub fn rss(&self) -> u64 {
        self.memory("VmRSS:")
    }

    /// The example's address space (`VmSize`), in bytes: unlike the
    /// resident memory, it also counts allocations never touched.
    pub fn virtual_size(&self) -> u64 {
        self.memory("VmSize:")
    }

    fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the example's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"));
        kib * 1024
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
