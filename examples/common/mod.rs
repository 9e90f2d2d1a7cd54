//! What the examples share: the command line every server example takes, and
//! running a server until SIGINT or SIGTERM (or until a successor took it
//! over).
//!
//! ```text
//! [--addr 127.0.0.1:7000] [--unix PATH]... [--unix-mode OCTAL] [--inherit]
//! [--handover CTL] [--take-over CTL] [--acceptors 1024]
//! [--overflow refuse|grow[:STEP[:MAX]]|pause] [--grow-cooldown SECS]
//! [--refuse-message TEXT] [--max-line 65536] [--frame-timeout SECS] [--idle-timeout SECS]
//! [--max-per-ip N] [--accept-rate N]
//! [--proxy-protocol] [--allow CIDR]... [--deny CIDR]... [--tls-cert FILE --tls-key FILE]
//! [--tls-watch SECS] [--workers N|cores] [--distribution handoff|shared|reuseport] [--pin-cores]
//! [--busy-poll MICROS] [--grace SECS]
//! [--metrics ADDR]
//! ```
//!
//! `--workers` needs a handler per loop: examples that serve through
//! [`serve_workers_until_signal`] take it; the others refuse more than one.
//!
//! Exit status: 0 after a stop by signal, or after handing over to a
//! successor and draining (`--handover`); 2 for a usage error, a bad value
//! or a bad combination of them (the message names the setting, then the
//! usage); 1 when the server cannot run (the address is in use, a
//! certificate cannot be read, ...), with a message that names what failed.
//!
//! An example with flags of its own, or another default address, parses
//! through [`Options::from_args_with`]; one with another framing than lines
//! switches with [`Options::framing`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use mio::{Events, Interest, Poll, Token, Waker};
use netpool::{
    Builder, Distribution, Endpoint, Error, Framing, Handler, Lines, MetricsEndpoint, Overflow,
    Server, ServerHandle, ServerThread,
};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

/// The waiting thread's tokens: a signal came, or the server ended.
const SIGNAL: Token = Token(0);
const ENDED: Token = Token(1);

/// The options every server example takes.
#[derive(Debug)]
pub struct Options<F: Framing = Lines> {
    /// Where the sockets come from.
    pub listen: Listen,
    pub builder: Builder<F>,
    /// Where to serve `GET /metrics`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// `--max-line`, if given: the bound of a line, and the bound an example
    /// with another framing puts on its frames.
    pub max_line: Option<usize>,
    /// How long a stop waits for connections to flush (and for replies
    /// still being worked on) before closing them anyway; also the drain
    /// after a hand-over.
    pub grace: Duration,
}

/// Where a server's listening sockets come from.
#[derive(Debug)]
pub enum Listen {
    /// Bound here: `--addr`, `--unix`.
    Bind(Vec<Endpoint>),
    /// Passed by systemd: `--inherit`.
    Inherit,
    /// Taken over from a running server: `--take-over CTL`.
    TakeOver(PathBuf),
}

impl Listen {
    /// What the server serves on, for an error message.
    fn describe(&self) -> String {
        match self {
            Listen::Bind(endpoints) => {
                let names: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
                names.join(", ")
            }
            Listen::Inherit => "the sockets systemd passed (--inherit)".to_string(),
            Listen::TakeOver(ctl) => format!(
                "the sockets of the server at {} (--take-over)",
                ctl.display()
            ),
        }
    }
}

const USAGE: &str = "\
usage: [--addr ADDR] [--unix PATH]... [--unix-mode OCTAL] [--inherit]
       [--handover CTL] [--take-over CTL] [--acceptors N] [--overflow refuse|grow[:STEP[:MAX]]|pause]
       [--grow-cooldown SECS] [--refuse-message TEXT] [--max-line BYTES]
       [--frame-timeout SECS] [--idle-timeout SECS]
       [--max-per-ip N] [--accept-rate N] [--proxy-protocol] [--allow CIDR]... [--deny CIDR]...
       [--tls-cert FILE --tls-key FILE] [--tls-watch SECS]
       [--workers N|cores] [--distribution handoff|shared|reuseport] [--pin-cores]
       [--busy-poll MICROS] [--grace SECS]
       [--metrics ADDR]

  --addr ADDR            address to listen on (default 127.0.0.1:7000; port 0 picks one)
  --unix PATH            listen on a Unix socket at PATH instead (repeatable; with --addr
                         too, on both, under one budget); the file is removed on stop
  --unix-mode OCTAL      permissions of the --unix socket files (for example 660)
  --inherit              serve on the sockets systemd passed (socket activation)
  --handover CTL         let a successor take the sockets over through the control socket
                         CTL; then stop accepting, drain, and exit 0
  --take-over CTL        take the sockets over from the server listening on CTL
                         (its --handover), instead of binding
  --acceptors N          connections served at once (default 1024; at least 1)
  --overflow STRATEGY    when all acceptors are busy: refuse (default), grow[:STEP[:MAX]]
                         (STEP default 50, MAX default 10 x acceptors), or pause
  --grow-cooldown SECS   give grown slots back, STEP at a time, once unused this long
                         (default 60; 0: keep them)
  --refuse-message TEXT  line written to refused clients (a newline is added)
  --max-line BYTES       longest line accepted (default 65536)
  --frame-timeout SECS   close a connection whose line has started and not ended this
                         long after its first byte (default 30; 0: off)
  --idle-timeout SECS    close connections silent this long (default 0: off)
  --max-per-ip N         connections at once from one address (default 0: no cap)
  --accept-rate N        new connections per second; the excess meets --overflow
                         (default 0: no limit)
  --proxy-protocol       expect a PROXY protocol v1/v2 header on every connection
  --allow CIDR           serve only clients in this range (repeatable)
  --deny CIDR            never serve clients in this range (repeatable; wins over --allow)
  --tls-cert FILE        serve TLS with this PEM certificate chain (leaf first)
  --tls-key FILE         and this PEM private key (PKCS#8, PKCS#1 or SEC1)
  --tls-watch SECS       look at both files this often and serve a renewed pair to new
                         connections (default 5; 0: never)
  --workers N|cores      event loops, one thread each (default 1; `cores`: one per core);
                         the acceptors budget is shared by all of them
  --distribution HOW     with several workers: handoff (default; loop 0 accepts and hands
                         each connection to the least loaded loop), shared (every loop
                         accepts from the one listener) or reuseport (a listener per loop)
  --pin-cores            pin loop i to core i (built with --features core_affinity)
  --busy-poll MICROS     after a busy turn, poll without sleeping this long before
                         blocking: lower latency for more CPU; pays only with a spare
                         core (default 0: off; 10-50 is the useful range)
  --metrics ADDR         serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9100)
  --grace SECS           on SIGINT/SIGTERM (or after a hand-over), how long to wait for
                         replies still being written or worked on before closing
                         anyway (default 5)

Exit status: 0 when stopped by SIGINT or SIGTERM, 2 for a usage error (this text),
1 when the server cannot run (address in use, unreadable certificate, ...).
Logs go to stderr; set RUST_LOG=info (or debug, trace) for more than warnings.";

impl Options {
    /// Parses the process's arguments; on a bad one, prints the usage and
    /// exits with status 2.
    #[allow(dead_code)] // not every example uses both entry points
    pub fn from_args() -> Options {
        Self::from_args_with("127.0.0.1:7000", "", |_, _| Ok(false))
    }

    /// As [`from_args`](Options::from_args), for an example that listens on
    /// `default_addr` by default and takes flags of its own: `extra` is
    /// offered each long flag the shared ones do not know (its name without
    /// `--`, and the parser for its value) and says whether it took it;
    /// `usage` describes those flags, after the shared ones.
    #[allow(dead_code)]
    pub fn from_args_with(
        default_addr: &str,
        usage: &str,
        extra: impl FnMut(&str, &mut lexopt::Parser) -> Result<bool, lexopt::Error>,
    ) -> Options {
        match Self::parse(std::env::args_os().skip(1), default_addr, usage, extra) {
            Ok(options) => options,
            Err(e) => {
                eprintln!("error: {e}\n\n{USAGE}\n{usage}");
                std::process::exit(2);
            }
        }
    }

    fn parse(
        args: impl IntoIterator<Item = std::ffi::OsString>,
        default_addr: &str,
        usage: &str,
        mut extra: impl FnMut(&str, &mut lexopt::Parser) -> Result<bool, lexopt::Error>,
    ) -> Result<Options, lexopt::Error> {
        use lexopt::prelude::*;
        let default_addr: SocketAddr = default_addr.parse().expect("a default address");
        let mut addr = None::<SocketAddr>;
        let mut unix: Vec<PathBuf> = Vec::new();
        let mut unix_mode = None::<u32>;
        let mut inherit = false;
        let mut handover = None::<PathBuf>;
        let mut take_over = None::<PathBuf>;
        let mut acceptors = 1024usize;
        let mut overflow = None::<String>;
        let mut refuse_message = None::<String>;
        let mut max_line = None::<usize>;
        let mut tls_cert = None::<std::path::PathBuf>;
        let mut tls_key = None::<std::path::PathBuf>;
        let mut tls_watch = None::<f64>;
        let mut idle_secs = 0f64;
        let mut frame_secs = 30f64;
        let mut grow_cooldown_secs = 60f64;
        let mut metrics = None::<SocketAddr>;
        let mut max_per_ip = 0u32;
        let mut accept_rate = 0u32;
        let mut proxy_protocol = false;
        let mut allow: Vec<netpool::IpNet> = Vec::new();
        let mut deny: Vec<netpool::IpNet> = Vec::new();
        let mut workers = None::<usize>; // None: one per core
        let mut workers_given = false;
        let mut distribution = Distribution::Handoff;
        let mut pin_cores = false;
        let mut busy_poll_micros = 0u64;
        let mut grace_secs = 5f64;
        let mut parser = lexopt::Parser::from_args(args);
        while let Some(arg) = parser.next()? {
            match arg {
                Long("addr") => addr = Some(parser.value()?.parse()?),
                Long("unix") => unix.push(parser.value()?.into()),
                Long("unix-mode") => {
                    let mode = parser.value()?.string()?;
                    unix_mode = Some(u32::from_str_radix(&mode, 8).map_err(|_| {
                        format!("--unix-mode {mode}: expected an octal mode such as 660")
                    })?);
                }
                Long("inherit") => inherit = true,
                Long("handover") => handover = Some(parser.value()?.into()),
                Long("take-over") => take_over = Some(parser.value()?.into()),
                Long("acceptors") => acceptors = parser.value()?.parse()?,
                Long("overflow") => overflow = Some(parser.value()?.string()?),
                Long("refuse-message") => refuse_message = Some(parser.value()?.string()?),
                Long("max-line") => max_line = Some(parser.value()?.parse()?),
                Long("tls-cert") => tls_cert = Some(parser.value()?.into()),
                Long("tls-key") => tls_key = Some(parser.value()?.into()),
                Long("tls-watch") => tls_watch = Some(parser.value()?.parse()?),
                Long("idle-timeout") => idle_secs = parser.value()?.parse()?,
                Long("frame-timeout") => frame_secs = parser.value()?.parse()?,
                Long("grow-cooldown") => grow_cooldown_secs = parser.value()?.parse()?,
                Long("metrics") => metrics = Some(parser.value()?.parse()?),
                Long("max-per-ip") => max_per_ip = parser.value()?.parse()?,
                Long("accept-rate") => accept_rate = parser.value()?.parse()?,
                Long("proxy-protocol") => proxy_protocol = true,
                Long("allow") => allow.push(parser.value()?.parse()?),
                Long("deny") => deny.push(parser.value()?.parse()?),
                Long("workers") => {
                    let value = parser.value()?.string()?;
                    workers_given = true;
                    workers =
                        match value.as_str() {
                            "cores" => None,
                            n => Some(n.parse().map_err(|_| {
                                format!("--workers {n}: expected a number or `cores`")
                            })?),
                        };
                }
                Long("distribution") => {
                    distribution = match parser.value()?.string()?.as_str() {
                        "handoff" => Distribution::Handoff,
                        "shared" => Distribution::Shared,
                        "reuseport" => Distribution::ReusePort,
                        other => {
                            return Err(format!(
                                "--distribution {other}: expected handoff, shared or reuseport"
                            )
                            .into())
                        }
                    }
                }
                Long("pin-cores") => pin_cores = true,
                Long("busy-poll") => busy_poll_micros = parser.value()?.parse()?,
                Long("grace") => grace_secs = parser.value()?.parse()?,
                Long("help") | Short('h') => {
                    println!("{USAGE}\n{usage}");
                    std::process::exit(0);
                }
                Long(flag) => {
                    let flag = flag.to_owned();
                    if !extra(&flag, &mut parser)? {
                        return Err(lexopt::Error::UnexpectedOption(format!("--{flag}")));
                    }
                }
                _ => return Err(arg.unexpected()),
            }
        }
        let overflow = match overflow.as_deref() {
            None | Some("refuse") => Overflow::Refuse,
            Some("pause") => Overflow::Pause,
            Some(grow) if grow == "grow" || grow.starts_with("grow:") => {
                let mut parts = grow.split(':').skip(1);
                let mut number = |default: usize| -> Result<usize, lexopt::Error> {
                    match parts.next() {
                        None => Ok(default),
                        Some(n) => n.parse().map_err(|_| {
                            lexopt::Error::from(format!("--overflow {grow}: {n:?} is not a number"))
                        }),
                    }
                };
                let step = number(50)?;
                let max = number(acceptors.saturating_mul(10))?;
                if parts.next().is_some() {
                    return Err(format!("--overflow {grow}: expected grow[:STEP[:MAX]]").into());
                }
                // Their ranges are the builder's to check (`bind`).
                Overflow::Grow { step, max }
            }
            Some(other) => {
                return Err(format!(
                    "--overflow {other}: expected refuse, grow[:STEP[:MAX]] or pause"
                )
                .into())
            }
        };
        let mut builder = Server::builder()
            .acceptors(acceptors)
            .overflow(overflow)
            .max_line_len(max_line.unwrap_or(65536))
            .max_per_ip(max_per_ip)
            .accept_rate(accept_rate)
            .proxy_protocol(proxy_protocol)
            .idle_timeout(seconds("--idle-timeout", idle_secs)?)
            .frame_timeout(seconds("--frame-timeout", frame_secs)?)
            .grow_cooldown(seconds("--grow-cooldown", grow_cooldown_secs)?)
            .distribution(distribution)
            .busy_poll(Duration::from_micros(busy_poll_micros));
        for range in allow {
            builder = builder.allow(range);
        }
        for range in deny {
            builder = builder.deny(range);
        }
        if tls_watch.is_some() && tls_cert.is_none() {
            return Err("--tls-watch needs --tls-cert and --tls-key".into());
        }
        match (tls_cert, tls_key) {
            #[cfg(feature = "tls")]
            (Some(cert), Some(key)) => {
                builder = builder.tls_pem(cert, key);
                if let Some(secs) = tls_watch {
                    let period = Duration::try_from_secs_f64(secs)
                        .map_err(|_| format!("--tls-watch {secs}: not a duration"))?;
                    builder = builder.tls_watch(period);
                }
            }
            #[cfg(not(feature = "tls"))]
            (Some(_), Some(_)) => return Err("built without the tls feature".into()),
            (None, None) => {}
            _ => return Err("--tls-cert and --tls-key go together".into()),
        }
        builder = match (workers_given, workers) {
            (false, _) => builder,
            (true, None) => builder.workers_per_core(),
            (true, Some(n)) => builder.workers(n),
        };
        if pin_cores {
            #[cfg(feature = "core_affinity")]
            {
                builder = builder.pin_cores(true);
            }
            #[cfg(not(feature = "core_affinity"))]
            return Err("--pin-cores: build with --features core_affinity".into());
        }
        if let Some(mut message) = refuse_message {
            message.push('\n');
            builder = builder.refuse_message(message);
        }
        if let Some(mode) = unix_mode {
            builder = builder.unix_mode(mode);
        }
        let grace = seconds("--grace", grace_secs)?;
        if let Some(ctl) = handover {
            builder = builder.handover(ctl, grace);
        }
        let bound = addr.is_some() || !unix.is_empty();
        let listen = match (inherit, take_over) {
            (true, Some(_)) => return Err("--inherit and --take-over exclude each other".into()),
            (true, None) | (false, Some(_)) if bound => {
                return Err(
                    "--addr and --unix bind sockets: not with --inherit or --take-over".into(),
                )
            }
            (true, None) => Listen::Inherit,
            (false, Some(ctl)) => Listen::TakeOver(ctl),
            (false, None) => {
                // The default address only when nothing else was asked for.
                let default = unix.is_empty().then_some(default_addr);
                let tcp = addr.or(default).map(Endpoint::Tcp);
                Listen::Bind(
                    tcp.into_iter()
                        .chain(unix.into_iter().map(Endpoint::Unix))
                        .collect(),
                )
            }
        };
        Ok(Options {
            listen,
            builder,
            metrics,
            max_line,
            grace,
        })
    }
}

impl<F: Framing> Options<F> {
    /// The same options, serving `framing` instead.
    #[allow(dead_code)]
    pub fn framing<G: Framing>(self, framing: G) -> Options<G> {
        Options {
            listen: self.listen,
            builder: self.builder.framing(framing),
            metrics: self.metrics,
            max_line: self.max_line,
            grace: self.grace,
        }
    }
}

/// `secs` as a duration, or a usage error naming `flag`.
fn seconds(flag: &str, secs: f64) -> Result<Duration, lexopt::Error> {
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{flag} {secs}: not a duration").into())
}

/// Exits for a server that cannot be bound on `addr` (the addresses, or
/// where the sockets were to come from): status 2 with the usage for a
/// configuration error (a usage error like any other), else status 1 with a
/// message that names the address.
fn bind_failed(addr: &str, e: Error) -> ! {
    match e {
        Error::InvalidConfig(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
        Error::Io(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("error: cannot listen on {addr}: the address is already in use");
        }
        e => eprintln!("error: cannot serve on {addr}: {e}"),
    }
    std::process::exit(1);
}

/// Sets up logging: warnings by default, `RUST_LOG` for more.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
}

/// Binds (or adopts the sockets), prints `listening on ADDR` for each
/// endpoint (`unix:PATH` for a Unix socket), serves until SIGINT or SIGTERM,
/// stops gracefully and prints the final stats to stderr. With `--handover`,
/// a successor taking over ends it too: it drains and exits 0. One loop: with
/// `--workers` above 1 it says so and exits with status 2.
#[allow(dead_code)] // not every example uses both entry points
pub fn serve_until_signal<F: Framing, H: Handler<F> + Send>(options: Options<F>, handler: H) {
    serve(options, move |server| server.spawn(handler));
}

/// As [`serve_until_signal`], with the handler `make` builds from the
/// server's handle, for a handler that reads the server's counters or
/// changes its budget (`examples/stateful.rs`).
#[allow(dead_code)]
pub fn serve_until_signal_with<F: Framing, H: Handler<F> + Send>(
    options: Options<F>,
    make: impl FnOnce(ServerHandle) -> H,
) {
    serve(options, move |server| {
        let handler = make(server.handle());
        server.spawn(handler)
    });
}

/// As [`serve_until_signal`], with `--workers` loops, each with the handler
/// `handler_for(i)` makes.
#[allow(dead_code)]
pub fn serve_workers_until_signal<F, H, M>(options: Options<F>, handler_for: M)
where
    F: Framing,
    M: Fn(usize) -> H + Send + Sync + 'static,
    H: Handler<F>,
{
    serve(options, move |server| server.spawn_workers(handler_for));
}

fn serve<F: Framing>(
    options: Options<F>,
    start: impl FnOnce(Server<F>) -> Result<ServerThread, Error>,
) {
    let server = match &options.listen {
        Listen::Bind(endpoints) => options.builder.bind_all(endpoints.iter().cloned()),
        Listen::Inherit => options.builder.inherit(),
        Listen::TakeOver(ctl) => options.builder.take_over(ctl),
    };
    let server = server.unwrap_or_else(|e| bind_failed(&options.listen.describe(), e));
    // The metrics endpoint: a second, small netpool server on its own
    // thread, answering `GET /metrics` with the first one's metrics.
    let metrics = options.metrics.map(|addr| {
        let endpoint = Server::builder()
            .acceptors(16)
            .idle_timeout(Duration::from_secs(10))
            .bind(addr)
            .unwrap_or_else(|e| bind_failed(&addr.to_string(), e));
        let local = endpoint.local_addr();
        let running = endpoint
            .spawn(MetricsEndpoint::new(server.handle()))
            .expect("start the metrics endpoint");
        (running, local)
    });
    // Register for signals before announcing the address, so that a script
    // that starts us, waits for the line and sends SIGTERM is never early.
    let mut signals = Signals::new([SIGINT, SIGTERM]).expect("signal handlers");
    let mut poll = Poll::new().expect("poll");
    poll.registry()
        .register(&mut signals, SIGNAL, Interest::READABLE)
        .expect("register signals");
    // Kept alive here: a waker closed before this thread polls takes its
    // wake-up with it.
    let ended = Arc::new(Waker::new(poll.registry(), ENDED).expect("waker"));

    let endpoints = server.endpoints().to_vec();

    let running = match start(server) {
        Ok(running) => running,
        Err(Error::InvalidConfig(why)) => {
            eprintln!("error: {why}\n\n{USAGE}");
            std::process::exit(2);
        }
        Err(e) => panic!("start the server: {e}"),
    };
    for endpoint in &endpoints {
        println!("listening on {endpoint}");
    }
    if let Some((_, addr)) = &metrics {
        println!("metrics on http://{addr}/metrics");
    }
    std::io::stdout().flush().expect("stdout");

    // The server ends by itself after handing over to a successor: a
    // thread waits for its loops and wakes this one.
    let handle = running.handle().clone();
    let (done, result) = mpsc::channel();
    let wake = Arc::clone(&ended);
    std::thread::spawn(move || {
        let _ = done.send(running.join());
        let _ = wake.wake();
    });

    // This thread has nothing else to do: it waits in its own poll for a
    // signal, through signal-hook's self-pipe, then asks the loops to stop;
    // or for the server's end.
    let mut events = Events::with_capacity(4);
    'wait: loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        for event in events.iter() {
            if event.token() == ENDED {
                log::info!("the loops ended by themselves (handed over, or a loop failed)");
                break 'wait;
            }
        }
        if let Some(signal) = signals.pending().next() {
            log::info!("signal {signal}: stopping");
            // A loop that already exited says so when joined.
            let _ = handle.request_stop(options.grace);
            break 'wait;
        }
    }
    if let Some((endpoint, _)) = metrics {
        // Scrapes are short: they get a short grace.
        if let Err(e) = endpoint.stop(Duration::from_secs(1)) {
            eprintln!("error: metrics endpoint: {e}");
        }
    }
    match result.recv().expect("the joining thread reports") {
        Ok(report) => {
            eprintln!("stopped: {report:?}");
            eprintln!("stats: {:?}", handle.stats());
            if handle.workers() > 1 {
                for l in handle.loop_stats() {
                    eprintln!("loop {}: {l:?}", l.index);
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
