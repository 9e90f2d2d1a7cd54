//! The load generator: a child process (`--load ...`) driving one server, so
//! its CPU time is its own and can be reported beside the server's.
//!
//! It is a single-threaded mio loop, like the servers it drives, so that on a
//! 2-core machine it leaves one core to the server. It reads with one shared
//! buffer, treats a short read as drained (epoll), and never parses replies:
//! echo replies are as long as the requests, so it counts bytes and checks only
//! that a `\n` ends every reply line.
//!
//! Modes:
//! - `stream`: C connections each keeping K lines in flight (K = 1 is
//!   request/response, where every round trip goes into an hdrhistogram);
//! - `accept`: C connection slots, each connecting (from a rotating 127.0.1.x
//!   source address), sending one line, reading the reply and closing;
//! - `idle`: C connections that each do one round trip and then stay open
//!   until the parent, having read the server's RSS, says `close`; or says
//!   `big` first, and each connection carries one 16 KiB line each way (one
//!   full TLS record each way, in TLS mode) and is idle again;
//! - `served`: C request/response connections measured alone (an `unloaded`
//!   line), then, once the parent says `go` (it has started a storm), again;
//! - `storm`: C clients connecting in a loop against a full budget, counting
//!   refusals. It is a process of its own so that the served clients' latency
//!   is not queued behind 2,000 storm sockets in the same loop.
//!
//! TLS (`--tls-ca PEM`): stream, accept and idle clients speak TLS 1.3 through a
//! rustls `ClientConnection` per socket (ring provider, the run's certificate
//! as the only root, session resumption off so that every accept-mode
//! connection is a full handshake). Plaintext goes into rustls, which the
//! loop flushes to the socket with `write_tls` until `WouldBlock`; replies
//! come through `read_tls` → `process_new_packets` → `reader()`, read until
//! `WouldBlock` (the short-read shortcut does not apply: rustls reads in
//! records). An accept-mode client sends close_notify before it closes.
//!
//! Protocol with the parent: a `start` line when measurement begins (the parent
//! reads the server's CPU time then), a `ready` line in idle mode, and one
//! `result key=value ...` line at the end. Every phase has a deadline, and a
//! run in which nothing moves for `STALL` fails instead of hanging.

use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio_rustls::rustls::{self, pki_types::pem::PemObject, ClientConfig, ClientConnection};

use crate::procfs;

/// A run in which no reply arrives for this long has failed.
const STALL: Duration = Duration::from_secs(10);
const READ_BUF: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Stream,
    Accept,
    Idle,
    Served,
    Storm,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "stream" => Mode::Stream,
            "accept" => Mode::Accept,
            "idle" => Mode::Idle,
            "served" => Mode::Served,
            "storm" => Mode::Storm,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Stream => "stream",
            Mode::Accept => "accept",
            Mode::Idle => "idle",
            Mode::Served => "served",
            Mode::Storm => "storm",
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadOpts {
    pub mode: Mode,
    pub target: SocketAddr,
    pub conns: usize,
    pub depth: usize,
    pub line_len: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Speak TLS, trusting this PEM certificate.
    pub tls_ca: Option<PathBuf>,
}

impl LoadOpts {
    /// The command line of a `--load` child.
    pub fn to_args(&self) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--load".into(),
            self.mode.name().into(),
            "--target".into(),
            self.target.to_string(),
            "--conns".into(),
            self.conns.to_string(),
            "--depth".into(),
            self.depth.to_string(),
            "--line-len".into(),
            self.line_len.to_string(),
            "--duration-ms".into(),
            self.duration.as_millis().to_string(),
            "--warmup-ms".into(),
            self.warmup.as_millis().to_string(),
        ];
        if let Some(ca) = &self.tls_ca {
            v.extend(["--tls-ca".into(), ca.display().to_string()]);
        }
        v
    }

    pub fn from_args(args: &[String]) -> io::Result<LoadOpts> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
        let mut o = LoadOpts {
            mode: Mode::Stream,
            target: "127.0.0.1:7000".parse().unwrap(),
            conns: 1,
            depth: 1,
            line_len: 32,
            duration: Duration::from_secs(1),
            warmup: Duration::from_millis(100),
            tls_ca: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut v = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| bad(&format!("{a} needs a value")))
            };
            let num = |s: String| {
                s.parse::<u64>()
                    .map_err(|_| bad(&format!("bad number {s}")))
            };
            match a.as_str() {
                "--load" => o.mode = Mode::parse(&v()?).ok_or_else(|| bad("bad mode"))?,
                "--target" => o.target = v()?.parse().map_err(|_| bad("bad --target"))?,
                "--conns" => o.conns = num(v()?)? as usize,
                "--depth" => o.depth = num(v()?)?.max(1) as usize,
                "--line-len" => o.line_len = num(v()?)?.max(2) as usize,
                "--duration-ms" => o.duration = Duration::from_millis(num(v()?)?),
                "--warmup-ms" => o.warmup = Duration::from_millis(num(v()?)?),
                "--tls-ca" => o.tls_ca = Some(PathBuf::from(v()?)),
                other => return Err(bad(&format!("unknown load option {other}"))),
            }
        }
        Ok(o)
    }
}

/// Entry point of a `--load` child.
pub fn main(args: &[String]) -> io::Result<()> {
    let opts = LoadOpts::from_args(args)?;
    procfs::raise_nofile();
    match opts.mode {
        Mode::Served | Mode::Storm if opts.tls_ca.is_some() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TLS is for stream, accept and idle modes only",
        )),
        Mode::Idle => idle(&opts),
        _ => Gen::new(&opts)?.run(),
    }
}

/// The client config of TLS mode: ring (as the servers), TLS 1.3 only, the
/// run's certificate as the only root, and no session resumption, so every
/// connection pays a full handshake.
fn client_config(ca: &std::path::Path) -> io::Result<Arc<ClientConfig>> {
    let bad = |e: &dyn std::fmt::Display| io::Error::other(format!("{}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Source addresses 127.0.1.1 to 127.0.1.250, used in turn: with a port bound
/// per source address, 250 of them give about 7 million ports, so TIME_WAIT
/// left by earlier runs never exhausts the ephemeral range (28k per address).
struct Src {
    next: u32,
}

impl Src {
    fn new() -> Src {
        Src {
            next: std::process::id() % 250,
        }
    }

    fn next(&mut self) -> SocketAddr {
        let host = (self.next % 250) as u8 + 1;
        self.next = self.next.wrapping_add(1);
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, host)), 0)
    }
}

/// A socket bound to the next source address, connecting to `target`.
fn connect_from(
    src: &mut Src,
    target: SocketAddr,
    blocking: bool,
) -> io::Result<std::net::TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_tcp_nodelay(true)?;
    s.bind(&SockAddr::from(src.next()))?;
    if !blocking {
        s.set_nonblocking(true)?;
    }
    match s.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    if blocking {
        s.set_nonblocking(true)?;
    }
    Ok(s.into())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Keeps `depth` lines in flight for the whole run.
    Stream,
    /// One line, then close and start over.
    Accept,
    /// Connects and waits to be refused, then starts over.
    Storm,
}

struct Conn {
    sock: TcpStream,
    role: Role,
    connecting: bool,
    /// Bytes written and read since the connection opened.
    sent: u64,
    recv: u64,
    /// When the line in flight (depth 1) or the connection (accept) started.
    t0: Instant,
    /// Storm: whether the server said anything before closing.
    got_bytes: bool,
    /// The TLS session, in TLS mode. `sent` and `recv` count plaintext.
    tls: Option<Box<ClientConnection>>,
}

#[derive(Default)]
struct Counts {
    lines: u64,
    conns_done: u64,
    refused_msg: u64,
    refused_silent: u64,
    connect_errors: u64,
}

struct Gen {
    opts: LoadOpts,
    poll: Poll,
    events: Events,
    conns: Slab<Conn>,
    /// `line` repeated depth + 1 times: every send is one slice of it, since
    /// all lines are the same and the byte stream is periodic.
    pattern: Vec<u8>,
    buf: Vec<u8>,
    hist: Histogram<u64>,
    counts: Counts,
    src: Src,
    measuring: bool,
    last_progress: Instant,
    tls: Option<Arc<ClientConfig>>,
}

fn new_hist() -> Histogram<u64> {
    // Nanoseconds from 1 ns to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

impl Gen {
    fn new(opts: &LoadOpts) -> io::Result<Gen> {
        let mut line = vec![b'x'; opts.line_len - 1];
        line.push(b'\n');
        let pattern = line.repeat(opts.depth + 1);
        Ok(Gen {
            opts: opts.clone(),
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            conns: Slab::new(),
            pattern,
            buf: vec![0; READ_BUF],
            hist: new_hist(),
            counts: Counts::default(),
            src: Src::new(),
            measuring: false,
            last_progress: Instant::now(),
            tls: opts.tls_ca.as_deref().map(client_config).transpose()?,
        })
    }

    fn add(&mut self, role: Role, blocking_connect: bool) -> io::Result<()> {
        let tls = match &self.tls {
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(crate::certs::SERVER_NAME)
                    .map_err(io::Error::other)?;
                let session =
                    ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
                Some(Box::new(session))
            }
            None => None,
        };
        let std = connect_from(&mut self.src, self.opts.target, blocking_connect)?;
        let mut sock = TcpStream::from_std(std);
        let entry = self.conns.vacant_entry();
        self.poll.registry().register(
            &mut sock,
            Token(entry.key()),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let key = entry.key();
        entry.insert(Conn {
            sock,
            role,
            connecting: !blocking_connect,
            sent: 0,
            recv: 0,
            t0: Instant::now(),
            got_bytes: false,
            tls,
        });
        if blocking_connect {
            self.pump(key)?;
        }
        Ok(())
    }

    /// Starts a fresh accept or storm client in place of a finished one.
    fn replace(&mut self, role: Role) {
        if let Err(e) = self.add(role, false) {
            self.counts.connect_errors += 1;
            if self.counts.connect_errors % 1000 == 1 {
                eprintln!("loadgen: connect: {e}");
            }
        }
    }

    fn run(mut self) -> io::Result<()> {
        let o = self.opts.clone();
        let setup = Instant::now();
        let mut slowest_connect = Duration::ZERO;
        match o.mode {
            Mode::Storm => {
                for _ in 0..o.conns {
                    self.replace(Role::Storm);
                }
            }
            Mode::Stream | Mode::Served => {
                for _ in 0..o.conns {
                    let t = Instant::now();
                    self.add(Role::Stream, true)?;
                    slowest_connect = slowest_connect.max(t.elapsed());
                }
            }
            Mode::Accept => {
                for _ in 0..o.conns {
                    self.replace(Role::Accept);
                }
            }
            Mode::Idle => unreachable!("idle has its own driver"),
        }
        let setup_ms = setup.elapsed().as_secs_f64() * 1e3;
        self.run_for(o.warmup)?;
        let mut extra = format!(
            "setup_ms={setup_ms:.1} slowest_connect_ms={:.2} ",
            slowest_connect.as_secs_f64() * 1e3
        );
        if o.mode == Mode::Served {
            // Every served client must hold its slot before the storm begins.
            let deadline = Instant::now() + STALL;
            while self
                .conns
                .iter()
                .any(|(_, c)| c.role == Role::Stream && c.recv < o.line_len as u64)
            {
                if Instant::now() > deadline {
                    return Err(io::Error::other("served clients got no reply"));
                }
                self.run_for(Duration::from_millis(10))?;
            }
            // The unloaded baseline, same clients, same server, no storm.
            self.begin();
            let t = Instant::now();
            self.run_for(o.duration)?;
            let secs = t.elapsed().as_secs_f64();
            let unloaded = format!(
                "unloaded_rps={:.1} unloaded_p50_us={:.2} unloaded_p99_us={:.2} unloaded_p999_us={:.2} ",
                self.counts.lines as f64 / secs,
                q(&self.hist, 0.5),
                q(&self.hist, 0.99),
                q(&self.hist, 0.999)
            );
            println!("unloaded {unloaded}");
            io::stdout().flush()?;
            extra += &unloaded;
            // The parent starts the storm, then says go. The connections
            // wait meanwhile, their lines in flight.
            let mut go = String::new();
            io::stdin().lock().read_line(&mut go)?;
            self.measuring = false;
            self.run_for(o.warmup)?;
        }
        self.begin();
        println!("start");
        let _ = io::stdout().flush();
        let cpu0 = procfs::self_cpu_us();
        let t = Instant::now();
        self.run_for(o.duration)?;
        let secs = t.elapsed().as_secs_f64();
        let cpu = procfs::self_cpu_us() - cpu0;
        let c = &self.counts;
        let ops = match o.mode {
            Mode::Accept => c.conns_done,
            Mode::Storm => c.refused_msg + c.refused_silent,
            _ => c.lines,
        };
        let mut out = format!(
            "result {extra}ops={ops} secs={secs:.4} ops_s={:.1} gen_cpu_us={cpu} mib_s={:.3} \
             p50_us={:.2} p99_us={:.2} p999_us={:.2} refused_msg={} refused_silent={} \
             connect_errors={}",
            ops as f64 / secs,
            (c.lines * o.line_len as u64) as f64 / secs / (1024.0 * 1024.0),
            q(&self.hist, 0.5),
            q(&self.hist, 0.99),
            q(&self.hist, 0.999),
            c.refused_msg,
            c.refused_silent,
            c.connect_errors,
        );
        if o.mode == Mode::Storm {
            out.push_str(&format!(
                " refusals_s={:.1}",
                (c.refused_msg + c.refused_silent) as f64 / secs
            ));
        }
        println!("{out}");
        let _ = io::stdout().flush();
        Ok(())
    }

    fn begin(&mut self) {
        self.measuring = true;
        self.counts = Counts::default();
        self.hist.reset();
    }

    fn run_for(&mut self, dur: Duration) -> io::Result<()> {
        let deadline = Instant::now() + dur;
        self.last_progress = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            if now.duration_since(self.last_progress) > STALL {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no progress: server stalled",
                ));
            }
            let timeout = (deadline - now).min(Duration::from_millis(100));
            match self.poll.poll(&mut self.events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            // The events are taken out of `self` while they are handled (the
            // handlers need `&mut self`) and put back for the next poll.
            let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
            let mut result = Ok(());
            for e in events.iter() {
                let writable = e.is_writable() || e.is_error();
                result = self.on_event(e.token().0, e.is_readable(), writable, e.is_read_closed());
                if result.is_err() {
                    break;
                }
            }
            self.events = events;
            result?;
        }
    }

    fn on_event(
        &mut self,
        key: usize,
        readable: bool,
        writable: bool,
        closed: bool,
    ) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(key) else {
            return Ok(());
        };
        let role = c.role;
        if c.connecting {
            match c.sock.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.failed(key, e),
            }
            match c.sock.peer_addr() {
                Ok(_) => c.connecting = false,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return self.failed(key, e),
            }
        }
        match role {
            Role::Storm => {
                if readable || closed {
                    self.storm_read(key)?;
                }
                Ok(())
            }
            Role::Stream | Role::Accept => {
                if readable || closed {
                    match self.read(key, closed) {
                        Ok(true) => {}
                        Ok(false) => return Ok(()), // finished and replaced
                        Err(e) => return self.failed(key, e),
                    }
                }
                if readable || writable {
                    if let Err(e) = self.pump(key) {
                        return self.failed(key, e);
                    }
                }
                Ok(())
            }
        }
    }

    fn failed(&mut self, key: usize, e: io::Error) -> io::Result<()> {
        let c = self.conns.remove(key);
        match c.role {
            // A served connection must never fail: the server is broken.
            Role::Stream => Err(io::Error::new(e.kind(), format!("served connection: {e}"))),
            Role::Accept => {
                self.counts.connect_errors += 1;
                self.replace(Role::Accept);
                Ok(())
            }
            Role::Storm => {
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
                ) {
                    if self.measuring {
                        self.counts.refused_silent += 1;
                    }
                    self.last_progress = Instant::now();
                } else {
                    self.counts.connect_errors += 1;
                }
                self.replace(Role::Storm);
                Ok(())
            }
        }
    }

    /// Writes as much as the depth allows: whole lines, up to `depth` ahead of
    /// the last complete reply.
    fn pump(&mut self, key: usize) -> io::Result<()> {
        let l = self.opts.line_len as u64;
        let c = &mut self.conns[key];
        if c.connecting {
            return Ok(());
        }
        let allowed = match c.role {
            Role::Accept => l,
            _ => (c.recv / l + self.opts.depth as u64) * l,
        };
        while c.sent < allowed {
            let off = (c.sent % l) as usize;
            let n = ((allowed - c.sent) as usize).min(self.pattern.len() - off);
            if off == 0 && c.role == Role::Stream {
                c.t0 = Instant::now(); // a new line starts: its round trip begins
            }
            let chunk = &self.pattern[off..off + n];
            let written = match c.tls.as_mut() {
                // rustls encrypts into its own buffer, up to its limit; a
                // short count means that buffer is full until it is flushed.
                Some(tls) => match tls.writer().write(chunk)? {
                    0 => break,
                    w => Ok(w),
                },
                None => c.sock.write(chunk),
            };
            match written {
                Ok(w) => c.sent += w as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if let Some(tls) = c.tls.as_mut() {
            flush_tls(tls, &mut c.sock)?;
        }
        Ok(())
    }

    /// Reads replies; `Ok(false)` when the connection finished and was
    /// replaced (accept), `Ok(true)` to go on.
    fn read(&mut self, key: usize, closed: bool) -> io::Result<bool> {
        if self.conns[key].tls.is_some() {
            return self.read_tls(key);
        }
        loop {
            let c = &mut self.conns[key];
            match c.sock.read(&mut self.buf) {
                Ok(0) => return Err(server_closed()),
                Ok(n) => {
                    if !self.replies(key, n)? {
                        return Ok(false);
                    }
                    if n < self.buf.len() && !closed {
                        return Ok(true); // short read: drained
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// TLS: `read_tls` until `WouldBlock`, each time decrypting and draining
    /// the plaintext, so rustls's received-plaintext limit is never reached.
    fn read_tls(&mut self, key: usize) -> io::Result<bool> {
        loop {
            let c = &mut self.conns[key];
            let tls = c.tls.as_mut().expect("a TLS connection");
            match tls.read_tls(&mut c.sock) {
                Ok(0) => return Err(server_closed()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = tls.process_new_packets() {
                let _ = tls.write_tls(&mut c.sock); // the alert, best effort
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            loop {
                let c = &mut self.conns[key];
                let tls = c.tls.as_mut().expect("a TLS connection");
                match tls.reader().read(&mut self.buf) {
                    Ok(0) => return Err(server_closed()), // close_notify
                    Ok(n) => {
                        if !self.replies(key, n)? {
                            return Ok(false);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Takes `n` reply bytes from the shared buffer; `Ok(false)` when the
    /// connection finished and was replaced (accept).
    fn replies(&mut self, key: usize, n: usize) -> io::Result<bool> {
        let l = self.opts.line_len as u64;
        let c = &mut self.conns[key];
        // Every reply line ends in '\n' at the same offsets as the
        // requests did.
        let mut p = c.recv + (l - 1 - c.recv % l);
        while p < c.recv + n as u64 {
            if self.buf[(p - c.recv) as usize] != b'\n' {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad reply"));
            }
            p += l;
        }
        let before = c.recv / l;
        c.recv += n as u64;
        if c.recv > c.sent {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more reply than request",
            ));
        }
        let done = c.recv / l - before;
        if done > 0 {
            self.last_progress = Instant::now();
            if self.measuring {
                self.counts.lines += done;
                if self.opts.depth == 1 || c.role == Role::Accept {
                    let ns = c.t0.elapsed().as_nanos() as u64;
                    self.hist.saturating_record(ns);
                }
            }
            if c.role == Role::Accept {
                if self.measuring {
                    self.counts.conns_done += 1;
                }
                // Close: the client closes first (after a
                // close_notify under TLS, best effort).
                let mut c = self.conns.remove(key);
                if let Some(tls) = c.tls.as_mut() {
                    tls.send_close_notify();
                    let _ = tls.write_tls(&mut c.sock);
                }
                drop(c);
                self.replace(Role::Accept);
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A storm client reads whatever the server says until it closes.
    fn storm_read(&mut self, key: usize) -> io::Result<()> {
        let c = &mut self.conns[key];
        loop {
            match c.sock.read(&mut self.buf) {
                Ok(0) => {
                    if self.measuring {
                        if c.got_bytes {
                            self.counts.refused_msg += 1;
                        } else {
                            self.counts.refused_silent += 1;
                        }
                    }
                    self.last_progress = Instant::now();
                    self.conns.remove(key);
                    self.replace(Role::Storm);
                    return Ok(());
                }
                Ok(_) => c.got_bytes = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.failed(key, e),
            }
        }
    }
}

fn server_closed() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection")
}

/// Moves what rustls has to send to the socket, until it is empty or the
/// socket says `WouldBlock` (the writable edge brings us back).
fn flush_tls(tls: &mut ClientConnection, sock: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A quantile of a nanosecond histogram, in µs.
fn q(h: &Histogram<u64>, quantile: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(quantile) as f64 / 1000.0
}

/// The length of the line a `big` command sends on every idle connection:
/// 16 KiB with its newline, one full TLS record of plaintext.
pub const BIG_LINE: usize = 16 * 1024;

/// One idle connection: its socket and, in TLS mode, its session.
struct IdleConn {
    sock: std::net::TcpStream,
    tls: Option<Box<ClientConnection>>,
}

impl IdleConn {
    /// Writes `line` and reads the echo, blocking (with the socket's read
    /// timeout); fails if the echo differs.
    fn round_trip(&mut self, line: &[u8], reply: &mut Vec<u8>) -> io::Result<()> {
        reply.resize(line.len(), 0);
        match &mut self.tls {
            Some(tls) => {
                // One `write_all` of at most 16 KiB: one record.
                let mut s = rustls::Stream::new(&mut **tls, &mut self.sock);
                s.write_all(line)?;
                s.flush()?;
                s.read_exact(reply)?;
            }
            None => {
                self.sock.write_all(line)?;
                self.sock.read_exact(reply)?;
            }
        }
        if reply != line {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad reply"));
        }
        Ok(())
    }
}

/// Idle mode: C established connections, each proven served by one round trip,
/// held open until the parent says so (after, perhaps, a `big` round trip
/// each).
fn idle(o: &LoadOpts) -> io::Result<()> {
    let config = o.tls_ca.as_deref().map(client_config).transpose()?;
    let name = rustls::pki_types::ServerName::try_from(crate::certs::SERVER_NAME)
        .map_err(io::Error::other)?;
    let mut src = Src::new();
    let mut line = vec![b'x'; o.line_len - 1];
    line.push(b'\n');
    let mut conns = Vec::with_capacity(o.conns);
    let mut reply = Vec::new();
    let t = Instant::now();
    for _ in 0..o.conns {
        let s = connect_from(&mut src, o.target, true)?;
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(STALL))?;
        let tls = match &config {
            Some(config) => Some(Box::new(
                ClientConnection::new(config.clone(), name.clone()).map_err(io::Error::other)?,
            )),
            None => None,
        };
        let mut conn = IdleConn { sock: s, tls };
        conn.round_trip(&line, &mut reply)?;
        conns.push(conn);
    }
    println!(
        "ready conns={} secs={:.3}",
        conns.len(),
        t.elapsed().as_secs_f64()
    );
    io::stdout().flush()?;
    let mut cmd = String::new();
    io::stdin().lock().read_line(&mut cmd)?;
    if cmd.trim() == "big" {
        let mut big = vec![b'y'; BIG_LINE - 1];
        big.push(b'\n');
        let t = Instant::now();
        for conn in &mut conns {
            conn.round_trip(&big, &mut reply)?;
        }
        println!(
            "big conns={} secs={:.3}",
            conns.len(),
            t.elapsed().as_secs_f64()
        );
        io::stdout().flush()?;
        cmd.clear();
        io::stdin().lock().read_line(&mut cmd)?;
    }
    println!("result ops={} ", conns.len());
    io::stdout().flush()?;
    Ok(())
}
