//! What the examples share: the command line every server example takes, and
//! running a server until SIGINT or SIGTERM.
//!
//! ```text
//! [--addr 127.0.0.1:7000] [--acceptors 1024]
//! [--overflow refuse|grow[:STEP[:MAX]]|pause] [--refuse-message TEXT] [--max-line 65536]
//! [--idle-timeout SECS] [--max-per-ip N] [--accept-rate N]
//! [--proxy-protocol] [--allow CIDR]... [--deny CIDR]... [--tls-cert FILE --tls-key FILE]
//! [--tls-watch SECS] [--workers N|cores] [--distribution handoff|shared|reuseport] [--pin-cores]
//! [--busy-poll MICROS]
//! ```
//!
//! `--workers` needs a handler per loop: examples that serve through
//! [`serve_workers_until_signal`] take it; the others refuse more than one.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use netpool::{Builder, Distribution, Error, Handler, Overflow, Server, ServerThread};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

/// How long a stop waits for connections to flush before closing them anyway.
const GRACE: Duration = Duration::from_secs(5);

/// The options every server example takes.
#[derive(Debug)]
pub struct Options {
    pub addr: SocketAddr,
    pub builder: Builder,
}

const USAGE: &str = "\
usage: [--addr ADDR] [--acceptors N] [--overflow refuse|grow[:STEP[:MAX]]|pause]
       [--refuse-message TEXT] [--max-line BYTES] [--idle-timeout SECS]
       [--max-per-ip N] [--accept-rate N] [--proxy-protocol] [--allow CIDR]... [--deny CIDR]...
       [--tls-cert FILE --tls-key FILE] [--tls-watch SECS]
       [--workers N|cores] [--distribution handoff|shared|reuseport] [--pin-cores]
       [--busy-poll MICROS]

  --addr ADDR            address to listen on (default 127.0.0.1:7000; port 0 picks one)
  --acceptors N          connections served at once (default 1024)
  --overflow STRATEGY    when all acceptors are busy: refuse (default), grow[:STEP[:MAX]]
                         (STEP default 50, MAX default 10 x acceptors), or pause
  --refuse-message TEXT  line written to refused clients (a newline is added)
  --max-line BYTES       longest line accepted (default 65536)
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

Logs go to stderr; set RUST_LOG=info (or debug, trace) for more than warnings.";

impl Options {
    /// Parses the process's arguments; on a bad one, prints the usage and
    /// exits with status 2.
    pub fn from_args() -> Options {
        match Self::parse(std::env::args_os().skip(1)) {
            Ok(options) => options,
            Err(e) => {
                eprintln!("error: {e}\n\n{USAGE}");
                std::process::exit(2);
            }
        }
    }

    fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Options, lexopt::Error> {
        use lexopt::prelude::*;
        let mut addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let mut acceptors = 1024usize;
        let mut overflow = None::<String>;
        let mut refuse_message = None::<String>;
        let mut max_line = 65536usize;
        let mut tls_cert = None::<std::path::PathBuf>;
        let mut tls_key = None::<std::path::PathBuf>;
        let mut tls_watch = None::<f64>;
        let mut idle_secs = 0f64;
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
        let mut parser = lexopt::Parser::from_args(args);
        while let Some(arg) = parser.next()? {
            match arg {
                Long("addr") => addr = parser.value()?.parse()?,
                Long("acceptors") => acceptors = parser.value()?.parse()?,
                Long("overflow") => overflow = Some(parser.value()?.string()?),
                Long("refuse-message") => refuse_message = Some(parser.value()?.string()?),
                Long("max-line") => max_line = parser.value()?.parse()?,
                Long("tls-cert") => tls_cert = Some(parser.value()?.into()),
                Long("tls-key") => tls_key = Some(parser.value()?.into()),
                Long("tls-watch") => tls_watch = Some(parser.value()?.parse()?),
                Long("idle-timeout") => idle_secs = parser.value()?.parse()?,
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
                Long("help") | Short('h') => {
                    println!("{USAGE}");
                    std::process::exit(0);
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
                if step == 0 || max < acceptors || parts.next().is_some() {
                    return Err(format!(
                        "--overflow {grow}: STEP must be at least 1 and MAX at least --acceptors"
                    )
                    .into());
                }
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
            .max_line_len(max_line)
            .max_per_ip(max_per_ip)
            .accept_rate(accept_rate)
            .proxy_protocol(proxy_protocol)
            .idle_timeout(
                Duration::try_from_secs_f64(idle_secs)
                    .map_err(|_| format!("--idle-timeout {idle_secs}: not a duration"))?,
            )
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
        Ok(Options { addr, builder })
    }
}

/// Sets up logging: warnings by default, `RUST_LOG` for more.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
}

/// Binds, prints `listening on ADDR`, serves until SIGINT or SIGTERM, stops
/// gracefully and prints the final stats to stderr. One loop: with
/// `--workers` above 1 it says so and exits with status 2.
#[allow(dead_code)] // not every example uses both entry points
pub fn serve_until_signal<H: Handler + Send>(options: Options, handler: H) {
    serve(options, move |server| server.spawn(handler));
}

/// As [`serve_until_signal`], with `--workers` loops, each with the handler
/// `handler_for(i)` makes.
#[allow(dead_code)]
pub fn serve_workers_until_signal<H, F>(options: Options, handler_for: F)
where
    F: Fn(usize) -> H + Send + Sync + 'static,
    H: Handler,
{
    serve(options, move |server| server.spawn_workers(handler_for));
}

fn serve(options: Options, start: impl FnOnce(Server) -> Result<ServerThread, Error>) {
    let server = match options.builder.bind(options.addr) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: cannot serve on {}: {e}", options.addr);
            std::process::exit(1);
        }
    };
    // Register for signals before announcing the address, so that a script
    // that starts us, waits for the line and sends SIGTERM is never early.
    let mut signals = Signals::new([SIGINT, SIGTERM]).expect("signal handlers");
    let mut poll = Poll::new().expect("poll");
    poll.registry()
        .register(&mut signals, Token(0), Interest::READABLE)
        .expect("register signals");

    let running = match start(server) {
        Ok(running) => running,
        Err(Error::InvalidConfig(why)) => {
            eprintln!("error: {why}\n\n{USAGE}");
            std::process::exit(2);
        }
        Err(e) => panic!("start the server: {e}"),
    };
    println!("listening on {}", running.local_addr());
    std::io::stdout().flush().expect("stdout");

    // This thread has nothing else to do: it waits in its own poll for a
    // signal, through signal-hook's self-pipe, then asks the loop to stop.
    let mut events = Events::with_capacity(4);
    'wait: loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        if let Some(signal) = signals.pending().next() {
            log::info!("signal {signal}: stopping");
            break 'wait;
        }
    }
    let handle = running.handle().clone();
    match running.stop(GRACE) {
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
