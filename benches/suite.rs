//! netpool's benchmark suite (issue 5): netpool (one loop, and one loop per
//! core) against the tokio variant (current-thread, multi-thread, and one
//! current-thread runtime per core on `SO_REUSEPORT` listeners) and the
//! bare-mio floor, side by side in one run, plus PING_INLINE against
//! redis-server with `redis-benchmark`, and TLS (issue 3): netpool-tls against
//! tokio-ct behind tokio-rustls, same provider (ring), same certificate, and a
//! Redis-protocol key-value server (issue 13): `redis-benchmark -t
//! set,get,incr,mset` against netpool-kv (`examples/kv`), tokio-kv and
//! redis-server, and TLS idle memory (issue 16): RSS per idle TLS
//! connection, and after each carried a 16 KiB record, netpool-tls beside
//! tokio-tls (about one minute of the full run). `benches/callgrind-tls.sh`
//! counts the instructions per TLS line and per handshake of one TLS server.
//! And replies produced on a worker pool (issue 14): netpool-offload
//! (`Conn::defer`) against tokio-offload (`FuturesOrdered`), same pool,
//! under pipelined PING_INLINE.
//!
//! ```text
//! cargo bench --bench suite                                  # full run, ~9 min
//! NETPOOL_BENCH_QUICK=1 cargo bench --bench suite            # smoke test, < 1 min
//! cargo bench --bench suite -- --write-benchmarks-md         # full run + BENCHMARKS.md
//! ```
//!
//! # Layout
//! - `suite.rs` (this file): the command line, the scenarios, one run of one
//!   server under one scenario, the rounds.
//! - `suite/proto.rs`: the echo and ping line protocols, server options.
//! - `suite/netpool_server.rs`, `suite/tokio_server.rs`, `suite/mio_floor.rs`:
//!   the servers, each run as its own process (`--serve KIND`).
//! - `suite/tokio_kv.rs`: the key-value server on tokio, over the engine of
//!   `examples/kv` (`examples/kv/engine.rs`, included here as `kv_engine`).
//!   netpool-kv is `examples/kv` itself: its handler (`examples/kv/server.rs`,
//!   included as `kv_server`) over the same engine, served by
//!   `suite/netpool_server.rs`.
//! - `suite/pool.rs`, `suite/tokio_offload.rs`: the worker pool of the
//!   offload servers, and the tokio one (netpool's is in
//!   `netpool_server.rs`).
//! - `suite/loadgen.rs`: the load generator, its own process (`--load MODE`).
//! - `suite/redis.rs`: redis-server and redis-benchmark, when installed.
//! - `suite/certs.rs`: the run's TLS certificate (rcgen).
//! - `suite/child.rs`: starting, talking to and reaping child processes.
//! - `suite/procfs.rs`: CPU time and RSS of children, descriptor limits.
//! - `suite/report.rs`: medians, ratios, targets, markdown, SVG charts.
//!
//! # Why processes
//! Every server and every load generator is this binary re-executed, so the
//! kernel accounts CPU time and memory to each separately: on a 2-core machine
//! the load generator competes with the server for the cores, closed-loop
//! throughput is bounded by the client, and only the server's CPU time per
//! request shows what the server itself costs.
//!
//! # Profiling one server
//! A server child runs on its own, so it can be put under callgrind (hardware
//! counters are not available on these machines) and driven by a load
//! generator child by hand; `callgrind_control -d PID` dumps the counts
//! before the server is killed:
//!
//! ```text
//! valgrind --tool=callgrind target/release/deps/suite-HASH --serve netpool-tls \
//!     --addr 127.0.0.1:0 --tls-cert cert.pem --tls-key key.pem
//! target/release/deps/suite-HASH --load accept --target 127.0.0.1:PORT --conns 8 \
//!     --duration-ms 8000 --warmup-ms 0 --tls-ca cert.pem
//! ```
//!
//! Divide the program's instructions by the count of a once-per-operation
//! function (for a handshake, ring's `EcdsaKeyPair::sign`). A certificate made
//! with `openssl req -x509` needs `-addext basicConstraints=critical,CA:FALSE`:
//! webpki refuses a CA certificate as the server's own.
//!
//! # Environment
//! - `NETPOOL_BENCH_QUICK=1`: every scenario briefly, one round (CI smoke test).
//! - `NETPOOL_BENCH_WRITE=1` (or `--write-benchmarks-md`): also regenerate
//!   BENCHMARKS.md from this run.
//! - `NETPOOL_BENCH_ROUNDS=N`: rounds (full mode default 5).
//! - `NETPOOL_BENCH_ONLY=id,id`: only these scenarios (development aid).
//! - `NETPOOL_BENCH_SERVERS=netpool,mio-floor`: only these servers (idem).
//!
//! # TLS
//! The parent generates one self-signed ECDSA P-256 certificate per run with
//! rcgen into a temporary directory and passes the PEM paths to the TLS
//! servers (`--tls-cert`, `--tls-key`) and to the load generator
//! (`--tls-ca`), whose rustls client trusts exactly that certificate. Without
//! netpool's `tls` feature the TLS scenarios are skipped with a message.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[path = "suite/certs.rs"]
mod certs;
#[path = "suite/child.rs"]
mod child;
#[path = "../examples/kv/engine.rs"]
mod kv_engine;
#[path = "../examples/kv/server.rs"]
mod kv_server;
#[path = "suite/loadgen.rs"]
mod loadgen;
#[path = "suite/mio_floor.rs"]
mod mio_floor;
#[path = "suite/netpool_server.rs"]
mod netpool_server;
#[path = "suite/pin.rs"]
mod pin;
#[path = "suite/pool.rs"]
mod pool;
#[path = "suite/procfs.rs"]
mod procfs;
#[path = "suite/proto.rs"]
mod proto;
#[path = "suite/redis.rs"]
mod redis;
#[path = "suite/report.rs"]
mod report;
#[path = "suite/tokio_kv.rs"]
mod tokio_kv;
#[path = "suite/tokio_offload.rs"]
mod tokio_offload;
#[path = "suite/tokio_server.rs"]
mod tokio_server;

// `examples/kv/server.rs` reaches the engine as `crate::engine`, the name it
// has in the example.
use kv_engine as engine;

use child::Child;
use loadgen::{LoadOpts, Mode};
use proto::{OverflowMode, Proto, ServeOpts};
use report::Metrics;

/// The servers under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ServerKind {
    Netpool,
    /// netpool with one event loop per core (`Builder::workers_per_core`).
    NetpoolMt,
    TokioCt,
    TokioMt,
    /// n current-thread tokio runtimes on n threads (n = cores), each with its
    /// own `SO_REUSEPORT` listener on the same port.
    TokioNct,
    Floor,
    Redis,
    /// netpool, one loop, serving TLS (`Builder::tls`).
    NetpoolTls,
    /// tokio-ct behind tokio-rustls.
    TokioTls,
    /// The key-value server of `examples/kv` on netpool, one loop: the
    /// example's own handler (`examples/kv/server.rs`) and settings.
    NetpoolKv,
    /// The same, with one event loop per core sharing the one store
    /// (`--workers cores`): what sharing the store between loops costs.
    NetpoolKvMt,
    /// The same key-value server on a current-thread tokio runtime
    /// (`suite/tokio_kv.rs`).
    TokioKv,
    /// netpool, one loop, busy-polling 100 µs after each busy turn
    /// (`Builder::busy_poll`, issue 12; see `busy_poll()`).
    NetpoolBusy,
    /// netpool, one loop, busy-polling 20 µs: a spin shorter than one
    /// client's turnaround, for many connections (see `BUSY_POLL_SHORT`).
    NetpoolBusyShort,
    /// netpool, one loop, writing each read's replies at once instead of at
    /// the end of the turn (`Builder::write_at_turn_end(false)`, issue 12):
    /// the evidence for the default.
    NetpoolEachRead,
    /// netpool, one loop, every reply produced on a worker pool and put in
    /// its place with `Conn::defer` (issue 14).
    NetpoolOffload,
    /// tokio-ct with the same pool, replies in order through
    /// `FuturesOrdered` (`suite/tokio_offload.rs`).
    TokioOffload,
}

/// Servers listed in scenarios that cannot run yet, with the reason printed
/// when they are skipped.
const NOT_YET_WRITTEN: &[(ServerKind, &str)] = &[];

impl ServerKind {
    pub const ALL: [ServerKind; 17] = [
        ServerKind::Netpool,
        ServerKind::NetpoolMt,
        ServerKind::TokioCt,
        ServerKind::TokioMt,
        ServerKind::TokioNct,
        ServerKind::Floor,
        ServerKind::Redis,
        ServerKind::NetpoolTls,
        ServerKind::TokioTls,
        ServerKind::NetpoolKv,
        ServerKind::NetpoolKvMt,
        ServerKind::TokioKv,
        ServerKind::NetpoolBusy,
        ServerKind::NetpoolBusyShort,
        ServerKind::NetpoolEachRead,
        ServerKind::NetpoolOffload,
        ServerKind::TokioOffload,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Netpool => "netpool",
            ServerKind::NetpoolMt => "netpool-mt",
            ServerKind::TokioCt => "tokio-ct",
            ServerKind::TokioMt => "tokio-mt",
            ServerKind::TokioNct => "tokio-nct",
            ServerKind::Floor => "mio-floor",
            ServerKind::Redis => "redis-server",
            ServerKind::NetpoolTls => "netpool-tls",
            ServerKind::TokioTls => "tokio-tls",
            ServerKind::NetpoolKv => "netpool-kv",
            ServerKind::NetpoolKvMt => "netpool-kv-mt",
            ServerKind::TokioKv => "tokio-kv",
            ServerKind::NetpoolBusy => "netpool-busy",
            ServerKind::NetpoolEachRead => "netpool-each-read",
            ServerKind::NetpoolBusyShort => "netpool-busy-20",
            ServerKind::NetpoolOffload => "netpool-offload",
            ServerKind::TokioOffload => "tokio-offload",
        }
    }

    /// Whether this server serves on one thread (it is pinned to the
    /// server's CPU, see `suite/pin.rs`); the others get every CPU.
    pub fn single_threaded(self) -> bool {
        !matches!(
            self,
            ServerKind::NetpoolMt
                | ServerKind::TokioMt
                | ServerKind::TokioNct
                | ServerKind::NetpoolKvMt
                | ServerKind::NetpoolOffload
                | ServerKind::TokioOffload
        )
    }

    /// Whether this server speaks TLS.
    pub fn tls(self) -> bool {
        matches!(self, ServerKind::NetpoolTls | ServerKind::TokioTls)
    }

    fn parse(s: &str) -> Option<ServerKind> {
        ServerKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// What a scenario does.
#[derive(Clone, Debug)]
pub enum Kind {
    /// `conns` connections, each with `depth` lines of `line_len` bytes in flight.
    Stream {
        conns: usize,
        depth: usize,
        line_len: usize,
    },
    /// Connect, one line, reply, close; `conns` of these at a time.
    Accept { conns: usize },
    /// RSS growth per established idle connection.
    Idle { conns: usize },
    /// `served` request/response clients within a budget of as many slots,
    /// then `storm` more clients connecting in a loop under Refuse.
    Storm { served: usize, storm: usize },
    /// `redis-benchmark -t ping_inline -c clients -P pipeline -n requests`.
    Ping {
        clients: usize,
        pipeline: usize,
        requests: u64,
    },
    /// Open loop: one connection sending a PING every `1/rate` s, whatever
    /// the replies do; the server's CPU as a share of a core is the figure
    /// (what busy-polling costs under light load).
    Paced { rate: u32 },
    /// `redis-benchmark -t set,get,incr,mset -r 100000 -d 64 -c 50 -P
    /// pipeline -n requests` against a key-value server; `requests` per test.
    Kv { pipeline: usize, requests: u64 },
}

pub struct Scenario {
    pub id: &'static str,
    pub title: String,
    pub kind: Kind,
    pub servers: Vec<ServerKind>,
    /// The load generator speaks TLS (and so must every server listed).
    pub tls: bool,
}

/// One server's measurement in one scenario and round.
pub struct Record {
    pub round: usize,
    pub scenario: &'static str,
    pub server: ServerKind,
    pub result: Result<Metrics, String>,
}

struct Config {
    quick: bool,
    rounds: usize,
    duration: Duration,
    warmup: Duration,
    write_md: bool,
    only: Option<Vec<String>>,
    servers: Option<Vec<String>>,
    /// The run's certificate and key (PEM), once generated.
    certs: Option<certs::Certs>,
}

impl Config {
    fn from_env(args: &[String]) -> Config {
        let env_on = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0");
        let quick = env_on("NETPOOL_BENCH_QUICK") || args.iter().any(|a| a == "--quick");
        let rounds = std::env::var("NETPOOL_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if quick { 1 } else { 5 })
            .max(1);
        Config {
            quick,
            rounds,
            duration: Duration::from_millis(if quick { 200 } else { 1500 }),
            warmup: Duration::from_millis(if quick { 50 } else { 300 }),
            write_md: env_on("NETPOOL_BENCH_WRITE")
                || args.iter().any(|a| a == "--write-benchmarks-md"),
            only: list_env("NETPOOL_BENCH_ONLY"),
            servers: list_env("NETPOOL_BENCH_SERVERS"),
            certs: None,
        }
    }
}

/// A comma-separated list from the environment.
fn list_env(key: &str) -> Option<Vec<String>> {
    std::env::var(key)
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
}

/// The 1-minute load average: a busy machine makes every figure noisier.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn scenarios(cfg: &Config) -> Vec<Scenario> {
    use ServerKind::*;
    let main = vec![Netpool, NetpoolMt, TokioCt, TokioMt, TokioNct, Floor];
    let idle = if cfg.quick { 1_000 } else { 10_000 };
    let (p1, p16) = if cfg.quick {
        (5_000, 50_000)
    } else {
        (150_000, 2_000_000)
    };
    let mut v = vec![];
    for c in [1, 50, 500] {
        let mut servers = main.clone();
        if c < 500 {
            servers.push(NetpoolBusy);
            servers.push(NetpoolEachRead);
        }
        v.push(Scenario {
            id: match c {
                1 => "rr-c1",
                50 => "rr-c50",
                _ => "rr-c500",
            },
            title: format!("request/response, {c} connection(s), 32-byte lines"),
            kind: Kind::Stream {
                conns: c,
                depth: 1,
                line_len: 32,
            },
            servers,
            tls: false,
        });
    }
    v.push(Scenario {
        id: "pipe-c50-k16",
        title: "pipelined, 50 connections × 16 lines in flight, 64-byte lines".into(),
        kind: Kind::Stream {
            conns: 50,
            depth: 16,
            line_len: 64,
        },
        servers: main.clone(),
        tls: false,
    });
    v.push(Scenario {
        id: "accept-c32",
        title:
            "accept rate: connect, one line, reply, close; 32 at a time from 250 source addresses"
                .into(),
        kind: Kind::Accept { conns: 32 },
        servers: main.clone(),
        tls: false,
    });
    v.push(Scenario {
        id: if cfg.quick { "idle-1k" } else { "idle-10k" },
        title: format!(
            "idle memory: server RSS growth per established idle connection, {idle} connections"
        ),
        kind: Kind::Idle { conns: idle },
        servers: main.clone(),
        tls: false,
    });
    v.push(Scenario {
        id: "storm",
        title: "overflow storm: budget 100 held by 100 request/response clients, 2,000 more clients connecting in a loop, Refuse".into(),
        kind: Kind::Storm {
            served: 100,
            storm: 2_000,
        },
        servers: vec![Netpool, NetpoolMt, TokioCt, TokioMt, TokioNct],
        tls: false,
    });
    // Latency (issue 12): busy-polling beside the plain loop, the floor,
    // tokio and redis-server, one client and fifty.
    let c1 = if cfg.quick { 2_000 } else { 50_000 };
    for (id, c, p, n) in [
        ("ping-c1", 1, 1, c1),
        ("ping-p1", 50, 1, p1),
        ("ping-p16", 50, 16, p16),
    ] {
        let mut servers = vec![Netpool, NetpoolBusy, NetpoolEachRead, TokioCt, Floor, Redis];
        if c > 1 {
            servers.push(NetpoolBusyShort);
        }
        v.push(Scenario {
            id,
            title: format!("PING_INLINE: redis-benchmark -t ping_inline -c {c} -P {p} -n {n}"),
            kind: Kind::Ping {
                clients: c,
                pipeline: p,
                requests: n,
            },
            servers,
            tls: false,
        });
    }
    v.push(Scenario {
        id: "light-1k",
        title: "light load: one connection, one PING every millisecond (open loop, 1,000 \
                requests/s); server CPU as a share of one core"
            .into(),
        kind: Kind::Paced { rate: 1_000 },
        servers: vec![Netpool, NetpoolBusy, TokioCt, Floor, Redis],
        tls: false,
    });
    // A Redis-protocol key-value server (issue 13). MSET (10 keys) is the
    // slowest test by far, so it sets the request count.
    let (kv1, kv16) = if cfg.quick {
        (5_000, 20_000)
    } else {
        (100_000, 300_000)
    };
    for (p, n) in [(1, kv1), (16, kv16)] {
        v.push(Scenario {
            id: if p == 1 { "kv-set-get-p1" } else { "kv-set-get-p16" },
            title: format!(
                "key-value: redis-benchmark -t set,get,incr,mset -r 100000 -d 64 -c 50 -P {p} -n {n}"
            ),
            kind: Kind::Kv {
                pipeline: p,
                requests: n,
            },
            servers: vec![NetpoolKv, NetpoolKvMt, TokioKv, Redis],
            tls: false,
        });
    }
    // Offloaded replies (issue 14): every reply made on a worker pool and
    // written in request order, netpool (`Conn::defer`) against tokio
    // (`FuturesOrdered`), the same pool; the same PING load answered on the
    // loop beside them, for what offloading costs.
    let off = if cfg.quick { 20_000 } else { 1_000_000 };
    v.push(Scenario {
        id: "offload-p16",
        title: format!(
            "replies made on a worker pool: redis-benchmark -t ping_inline -c 50 -P 16 -n {off}"
        ),
        kind: Kind::Ping {
            clients: 50,
            pipeline: 16,
            requests: off,
        },
        servers: vec![NetpoolOffload, TokioOffload, Netpool, TokioCt],
        tls: false,
    });
    // TLS (issue 3): the same workloads through a TLS 1.3 session, netpool's
    // TLS path against tokio-rustls, both one loop / one thread.
    v.push(Scenario {
        id: "tls-pipelined",
        title: "TLS 1.3 pipelined, 50 connections × 16 lines in flight, 64-byte lines".into(),
        kind: Kind::Stream {
            conns: 50,
            depth: 16,
            line_len: 64,
        },
        servers: vec![NetpoolTls, TokioTls],
        tls: true,
    });
    v.push(Scenario {
        id: "tls-handshakes",
        title: "TLS handshakes: connect, full TLS 1.3 handshake (ECDSA P-256, no resumption), \
                one line, reply, close; 32 at a time from 250 source addresses"
            .into(),
        kind: Kind::Accept { conns: 32 },
        servers: vec![NetpoolTls, TokioTls],
        tls: true,
    });
    // TLS idle memory (issue 16): the same idle measurement through TLS 1.3
    // sessions, and again after every connection carried a 16 KiB line each
    // way (one full record), against tokio-rustls.
    let tls_idle: &[usize] = if cfg.quick {
        &[1_000]
    } else {
        &[1_000, 10_000]
    };
    for &conns in tls_idle {
        v.push(Scenario {
            id: if conns == 1_000 {
                "tls-idle-1k"
            } else {
                "tls-idle-10k"
            },
            title: format!(
                "TLS idle memory: server RSS growth per established idle TLS 1.3 connection \
                 (one round trip), then after each carried a 16 KiB record each way; \
                 {conns} connections"
            ),
            kind: Kind::Idle { conns },
            servers: vec![NetpoolTls, TokioTls],
            tls: true,
        });
    }
    if let Some(only) = &cfg.only {
        v.retain(|s| only.iter().any(|o| o == s.id));
    }
    if let Some(keep) = &cfg.servers {
        for sc in &mut v {
            sc.servers.retain(|k| keep.iter().any(|n| n == k.name()));
        }
    }
    v
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("--serve") => exit_code(serve_main(&args[1..]), "serve"),
        Some("--load") => exit_code(loadgen::main(&args), "load"),
        _ => orchestrate(&args),
    };
    std::process::exit(code);
}

fn exit_code(r: io::Result<()>, what: &str) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{what}: {e}");
            1
        }
    }
}

/// Entry point of a `--serve KIND` child.
fn serve_main(args: &[String]) -> io::Result<()> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let kind = args
        .first()
        .and_then(|k| ServerKind::parse(k))
        .ok_or_else(|| {
            bad(format!(
                "--serve needs a server kind, got {:?}",
                args.first()
            ))
        })?;
    let mut o = ServeOpts {
        addr: "127.0.0.1:0".parse().unwrap(),
        acceptors: 1024,
        overflow: OverflowMode::Refuse,
        max_line: 64 * 1024,
        proto: Proto::Echo,
        tls: None,
    };
    let (mut cert, mut key) = (None, None);
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| bad(format!("{a} needs a value")))?;
        match a.as_str() {
            "--addr" => o.addr = v.parse().map_err(|_| bad(format!("bad --addr {v}")))?,
            "--acceptors" => {
                o.acceptors = v.parse().map_err(|_| bad(format!("bad --acceptors {v}")))?
            }
            "--overflow" => {
                o.overflow =
                    OverflowMode::parse(v).ok_or_else(|| bad(format!("bad --overflow {v}")))?
            }
            "--max-line" => {
                o.max_line = v.parse().map_err(|_| bad(format!("bad --max-line {v}")))?
            }
            "--proto" => {
                o.proto = Proto::parse(v).ok_or_else(|| bad(format!("bad --proto {v}")))?
            }
            "--tls-cert" => cert = Some(PathBuf::from(v)),
            "--tls-key" => key = Some(PathBuf::from(v)),
            other => return Err(bad(format!("unknown serve option {other}"))),
        }
    }
    o.tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err(bad("--tls-cert and --tls-key go together".into())),
    };
    if kind.tls() != o.tls.is_some() {
        return Err(bad(format!(
            "{} needs --tls-cert/--tls-key exactly when it is a TLS server",
            kind.name()
        )));
    }
    if !o.addr.ip().is_loopback() {
        return Err(bad("the suite serves on loopback only".into()));
    }
    procfs::raise_nofile();
    pin::pin_server(kind.single_threaded())?;
    match kind {
        ServerKind::Netpool => netpool_server::serve(&o, false),
        ServerKind::NetpoolBusy => netpool_server::serve_busy(&o, busy_poll()),
        ServerKind::NetpoolBusyShort => netpool_server::serve_busy(&o, BUSY_POLL_SHORT),
        ServerKind::NetpoolEachRead => netpool_server::serve_each_read(&o),
        ServerKind::NetpoolMt => netpool_server::serve(&o, true),
        ServerKind::TokioCt => tokio_server::serve(&o, tokio_server::Flavor::CurrentThread),
        ServerKind::TokioMt => tokio_server::serve(&o, tokio_server::Flavor::MultiThread),
        ServerKind::TokioNct => tokio_server::serve(&o, tokio_server::Flavor::CurrentThreadPerCore),
        ServerKind::NetpoolTls => netpool_server::serve(&o, false),
        ServerKind::TokioTls => tokio_server::serve(&o, tokio_server::Flavor::CurrentThread),
        ServerKind::Floor => mio_floor::serve(&o),
        ServerKind::TokioKv => tokio_kv::serve(&o),
        ServerKind::NetpoolKv => netpool_server::serve_kv(&o, false),
        ServerKind::NetpoolKvMt => netpool_server::serve_kv(&o, true),
        ServerKind::NetpoolOffload => netpool_server::serve_offload(&o),
        ServerKind::TokioOffload => tokio_offload::serve(&o),
        ServerKind::Redis => Err(bad("redis-server is not ours to serve".into())),
    }
}

/// A running server and where it listens.
struct Running {
    child: Child,
    addr: SocketAddr,
}

fn start_server(
    cfg: &Config,
    kind: ServerKind,
    proto: Proto,
    acceptors: usize,
) -> io::Result<Running> {
    if kind == ServerKind::Redis {
        let (child, addr) = redis::start_server()?;
        return Ok(Running { child, addr });
    }
    let mut args: Vec<String> = [
        "--serve",
        kind.name(),
        "--addr",
        "127.0.0.1:0",
        "--acceptors",
        &acceptors.to_string(),
        "--overflow",
        OverflowMode::Refuse.name(),
        "--max-line",
        "65536",
        "--proto",
        proto.name(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if kind.tls() {
        let c = cfg.certs.as_ref().ok_or_else(no_certs)?;
        args.extend([
            "--tls-cert".into(),
            c.cert.display().to_string(),
            "--tls-key".into(),
            c.key.display().to_string(),
        ]);
    }
    let child = Child::spawn_self(kind.name(), &args)?;
    let line = child.wait_line(Duration::from_secs(10), |l| l.starts_with("listening on "))?;
    let addr = line["listening on ".len()..]
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("bad announce line {line:?}")))?;
    Ok(Running { child, addr })
}

fn no_certs() -> io::Error {
    io::Error::other("TLS server without the run's certificate")
}

/// Parses `result k=v k=v ...`.
fn parse_kv(line: &str) -> Metrics {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// Runs one server under one scenario; the server is killed on return.
fn run_one(cfg: &Config, sc: &Scenario, server: ServerKind) -> io::Result<Metrics> {
    let limit = cfg.duration * 2 + Duration::from_secs(30);
    match &sc.kind {
        Kind::Paced { rate } => {
            let srv = start_server(cfg, server, Proto::Ping, 16)?;
            // CPU time comes in 10 ms ticks: a longer window resolves a
            // share of a core to a fraction of a percent.
            let window = if cfg.quick {
                cfg.duration
            } else {
                cfg.duration * 4
            };
            paced(&srv, *rate, cfg.warmup, window)
        }
        Kind::Ping {
            clients,
            pipeline,
            requests,
        } => {
            let srv = start_server(cfg, server, Proto::Ping, 1024)?;
            let cpu0 = procfs::cpu(srv.child.pid)?;
            let run = redis::benchmark(
                srv.addr,
                *clients,
                *pipeline,
                *requests,
                Duration::from_secs(60),
            )?;
            let cpu = procfs::cpu(srv.child.pid)?.since(cpu0);
            let mut m = run.metrics;
            let n = *requests as f64;
            put_cpu(&mut m, cpu, n);
            m.insert("gen_cpu_us".into(), run.client_cpu_us as f64 / n);
            Ok(m)
        }
        Kind::Kv { pipeline, requests } => {
            let srv = start_server(cfg, server, Proto::Echo, 1024)?;
            let spec = redis::Spec {
                tests: "set,get,incr,mset",
                clients: 50,
                pipeline: *pipeline,
                requests: *requests,
                extra: &["-r", "100000", "-d", "64"],
            };
            let cpu0 = procfs::cpu(srv.child.pid)?;
            let run = redis::run(srv.addr, &spec, Duration::from_secs(120))?;
            let cpu = procfs::cpu(srv.child.pid)?.since(cpu0);
            Ok(kv_metrics(&run, *requests, cpu))
        }
        Kind::Idle { conns } => {
            // Server and load generator each hold one descriptor per
            // connection; both raise their soft limit to the hard one.
            let hard = procfs::nofile_hard() as usize;
            let conns = (*conns).min(hard.saturating_sub(200));
            let srv = start_server(cfg, server, Proto::Echo, conns + 100)?;
            let tls_ca = if sc.tls {
                Some(cfg.certs.as_ref().ok_or_else(no_certs)?.cert.clone())
            } else {
                None
            };
            let opts = LoadOpts {
                mode: Mode::Idle,
                target: srv.addr,
                conns,
                depth: 1,
                line_len: 32,
                duration: cfg.duration,
                warmup: cfg.warmup,
                tls_ca,
            };
            {
                // One connection first, closed before the baseline: the
                // first connection pages in the code of accept, read and
                // write (0 to 34 B a connection of file-backed pages in the
                // 10,000's window, depending on the binary's page-cache
                // state) and, over TLS, the code and read-only tables of
                // rustls and ring (about 0.4 MB here, for either server): a
                // cost paid once, not per connection.
                let one = LoadOpts {
                    conns: 1,
                    ..opts.clone()
                };
                let mut warm = Child::spawn_self("loadgen", &one.to_args())?;
                warm.wait_line(limit, |l| l.starts_with("ready"))?;
                warm.send_line("close")?;
                warm.wait_line(limit, |l| l.starts_with("result"))?;
            }
            let rss0 = procfs::rss_bytes(srv.child.pid)?;
            let mut gen = Child::spawn_self("loadgen", &opts.to_args())?;
            // 10,000 TLS handshakes one after the other take a while.
            gen.wait_line(Duration::from_secs(300), |l| l.starts_with("ready"))?;
            let rss1 = procfs::rss_bytes(srv.child.pid)?;
            let per_conn = |rss: u64| (rss as f64 - rss0 as f64) / conns.max(1) as f64;
            let mut m = Metrics::new();
            m.insert("conns".into(), conns as f64);
            m.insert("rss_base_kib".into(), rss0 as f64 / 1024.0);
            m.insert("rss_after_kib".into(), rss1 as f64 / 1024.0);
            m.insert("rss_per_conn_b".into(), per_conn(rss1));
            if sc.tls {
                // Every connection carries one 16 KiB line each way, and is
                // idle again: what a server keeps of a large record.
                gen.send_line("big")?;
                gen.wait_line(Duration::from_secs(300), |l| l.starts_with("big"))?;
                let rss2 = procfs::rss_bytes(srv.child.pid)?;
                m.insert("rss_after_16k_kib".into(), rss2 as f64 / 1024.0);
                m.insert("rss_per_conn_16k_b".into(), per_conn(rss2));
            }
            gen.send_line("close")?;
            gen.wait_line(limit, |l| l.starts_with("result"))?;
            Ok(m)
        }
        Kind::Storm { served, storm } => {
            // The storm process holds one descriptor per storm client.
            let storm = &(*storm).min((procfs::nofile_hard() as usize).saturating_sub(300));
            let srv = start_server(cfg, server, Proto::Echo, *served)?;
            let opts = LoadOpts {
                mode: Mode::Served,
                target: srv.addr,
                conns: *served,
                depth: 1,
                line_len: 32,
                duration: cfg.duration,
                warmup: cfg.warmup,
                tls_ca: None,
            };
            let mut clients = Child::spawn_self("loadgen", &opts.to_args())?;
            clients.wait_line(limit, |l| l.starts_with("unloaded "))?;
            // The storm outlasts the served clients' warm-up and measurement.
            let stormers = LoadOpts {
                mode: Mode::Storm,
                conns: *storm,
                duration: cfg.duration + cfg.warmup * 2 + Duration::from_millis(200),
                ..opts.clone()
            };
            let storm = Child::spawn_self("storm", &stormers.to_args())?;
            storm.wait_line(limit, |l| l == "start")?;
            let cpu0 = procfs::cpu(srv.child.pid)?;
            clients.send_line("go")?;
            let line = clients.wait_line(limit, |l| l.starts_with("result "))?;
            let storm_line = storm.wait_line(limit, |l| l.starts_with("result "))?;
            let cpu = procfs::cpu(srv.child.pid)?.since(cpu0);
            let mut m = parse_kv(&line);
            let s = parse_kv(&storm_line);
            let refusals = s.get("ops").copied().unwrap_or(0.0);
            if refusals <= 0.0 {
                return Err(io::Error::other(format!("no refusals: {storm_line}")));
            }
            let get = |m: &Metrics, k: &str| m.get(k).copied().unwrap_or(f64::NAN);
            m.insert("refusals_s".into(), get(&s, "ops_s"));
            m.insert("refused_msg".into(), get(&s, "refused_msg"));
            m.insert("refused_silent".into(), get(&s, "refused_silent"));
            m.insert("storm_connect_errors".into(), get(&s, "connect_errors"));
            put_cpu(&mut m, cpu, refusals);
            m.insert("gen_cpu_us".into(), get(&s, "gen_cpu_us") / refusals);
            m.insert(
                "p99_growth".into(),
                get(&m, "p99_us") / get(&m, "unloaded_p99_us"),
            );
            Ok(m)
        }
        kind => {
            let (mode, conns, depth, line_len) = match *kind {
                Kind::Stream {
                    conns,
                    depth,
                    line_len,
                } => (Mode::Stream, conns, depth, line_len),
                Kind::Accept { conns } => (Mode::Accept, conns, 1, 32),
                _ => unreachable!(),
            };
            let srv = start_server(cfg, server, Proto::Echo, 1024)?;
            let tls_ca = if sc.tls {
                Some(cfg.certs.as_ref().ok_or_else(no_certs)?.cert.clone())
            } else {
                None
            };
            let opts = LoadOpts {
                mode,
                target: srv.addr,
                conns,
                depth,
                line_len,
                duration: cfg.duration,
                warmup: cfg.warmup,
                tls_ca,
            };
            let gen = Child::spawn_self("loadgen", &opts.to_args())?;
            gen.wait_line(limit, |l| l == "start")?;
            let cpu0 = procfs::cpu(srv.child.pid)?;
            let line = gen.wait_line(limit, |l| l.starts_with("result "))?;
            let cpu = procfs::cpu(srv.child.pid)?.since(cpu0);
            let mut m = parse_kv(&line);
            let ops = m.get("ops").copied().unwrap_or(0.0);
            if ops <= 0.0 {
                return Err(io::Error::other(format!("no operations completed: {line}")));
            }
            let gen_cpu = m.get("gen_cpu_us").copied().unwrap_or(f64::NAN);
            put_cpu(&mut m, cpu, ops);
            m.insert("gen_cpu_us".into(), gen_cpu / ops);
            Ok(m)
        }
    }
}

/// The kv scenarios' figures: requests/s of each test and of the whole mix
/// (all requests over the sum of the tests' durations), the worst test's
/// p50 and p99, and CPU per request of the mix (an MSET, ten keys, counts as
/// one request, as redis-benchmark counts it).
fn kv_metrics(run: &redis::Run, per_test: u64, cpu: procfs::Cpu) -> Metrics {
    let mut m = Metrics::new();
    let n = per_test as f64;
    let mut seconds = 0.0;
    for row in &run.rows {
        seconds += n / row.rps;
        let key = row
            .test
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        m.insert(format!("{key}_ops_s"), row.rps);
        let worst = |m: &mut Metrics, k: &str, v: f64| {
            let e = m.entry(k.to_string()).or_insert(v);
            *e = e.max(v);
        };
        worst(&mut m, "p50_us", row.p50_us);
        worst(&mut m, "p99_us", row.p99_us);
    }
    let total = n * run.rows.len() as f64;
    m.insert("ops".into(), total);
    m.insert("ops_s".into(), total / seconds);
    put_cpu(&mut m, cpu, total);
    m.insert("gen_cpu_us".into(), run.client_cpu_us as f64 / total);
    m
}

/// The busy-poll budget of `netpool-busy-20`. With fifty connections
/// requests arrive every few microseconds, so a short spin catches most of
/// them, and a long one only burns the gaps a sleep would have cost
/// nothing in: on ping-p1 a 100 µs spin cost 1.19-1.22x redis-server's CPU
/// per request, a 20 µs one 0.98x, for the same requests/s (2 rounds each,
/// `NETPOOL_BENCH_BUSY_POLL_US=N NETPOOL_BENCH_ONLY=ping-p1`).
const BUSY_POLL_SHORT: Duration = Duration::from_micros(20);

/// The busy-poll budget of `netpool-busy`, or `NETPOOL_BENCH_BUSY_POLL_US`:
/// a little more than one client turnaround. Pinned on different cores,
/// a round trip on this machine takes about 80 µs (12k requests/s on one
/// connection): 20 and 40 µs spins gained nothing, 60 µs doubled ping-c1
/// but not rr-c1, and 100 µs gained on both (2 rounds each,
/// `NETPOOL_BENCH_BUSY_POLL_US=N NETPOOL_BENCH_ONLY=rr-c1,ping-c1`).
fn busy_poll() -> Duration {
    let micros = std::env::var("NETPOOL_BENCH_BUSY_POLL_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    Duration::from_micros(micros)
}

/// An open-loop client on one connection: a PING every `1/rate` s on a
/// schedule (a late reply delays nobody's next request), each reply's
/// latency from its scheduled send. Runs in this process: the figure is the
/// server's CPU, which `/proc` accounts to the server alone.
fn paced(srv: &Running, rate: u32, warmup: Duration, duration: Duration) -> io::Result<Metrics> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(srv.addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let period = Duration::from_secs(1) / rate;
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(io::Error::other)?;
    let mut line = String::new();
    let mut one = |at: Instant, hist: Option<&mut hdrhistogram::Histogram<u64>>| {
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        writer.write_all(b"PING\r\n")?;
        line.clear();
        reader.read_line(&mut line)?;
        if !line.starts_with("+PONG") {
            return Err(io::Error::other(format!("bad reply {line:?}")));
        }
        if let Some(h) = hist {
            let us = at.elapsed().as_micros().max(1) as u64;
            let _ = h.record(us.min(60_000_000));
        }
        Ok::<(), io::Error>(())
    };
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < warmup {
        one(start + period * n, None)?;
        n += 1;
    }
    let cpu0 = procfs::cpu(srv.child.pid)?;
    let t0 = Instant::now();
    let mut ops = 0u32;
    while t0.elapsed() < duration {
        one(t0 + period * ops, Some(&mut hist))?;
        ops += 1;
    }
    let wall = t0.elapsed();
    let cpu = procfs::cpu(srv.child.pid)?.since(cpu0);
    let mut m = Metrics::new();
    m.insert("ops_s".into(), f64::from(ops) / wall.as_secs_f64());
    m.insert("p50_us".into(), hist.value_at_quantile(0.5) as f64);
    m.insert("p99_us".into(), hist.value_at_quantile(0.99) as f64);
    m.insert(
        "srv_core_pct".into(),
        100.0 * cpu.total_us() as f64 / wall.as_micros() as f64,
    );
    put_cpu(&mut m, cpu, f64::from(ops));
    Ok(m)
}

/// Records the server's CPU time per operation, in all and in user space.
fn put_cpu(m: &mut Metrics, cpu: procfs::Cpu, ops: f64) {
    m.insert("srv_cpu_us".into(), cpu.total_us() as f64 / ops);
    m.insert("srv_user_us".into(), cpu.user_us as f64 / ops);
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn orchestrate(args: &[String]) -> i32 {
    let mut cfg = Config::from_env(args);
    let started = Instant::now();
    let load_start = loadavg();
    if load_start.parse::<f64>().is_ok_and(|l| l > 1.0) {
        eprintln!(
            "suite: note: 1-minute load average is {load_start} before the run; \
             other work on this machine makes the figures noisier"
        );
    }
    let scenarios = scenarios(&cfg);
    match pin::plan() {
        Some(plan) => eprintln!("suite: {plan} (NETPOOL_BENCH_PIN=0: off)"),
        None => eprintln!("suite: not pinned to CPUs"),
    }
    let mut skips = Vec::new();
    let have_bench = redis::have("redis-benchmark");
    let have_server = redis::have("redis-server");
    if !have_bench {
        skips.push(
            "PING_INLINE and key-value scenarios skipped: redis-benchmark not found (Debian: apt-get install redis-tools)"
                .to_string(),
        );
    } else if !have_server {
        skips.push(
            "redis-server not found (Debian: apt-get install redis-server): PING_INLINE and key-value run without it"
                .to_string(),
        );
    }
    // TLS: one certificate for the whole run, only if a TLS scenario runs.
    if scenarios.iter().any(|s| s.tls && !s.servers.is_empty()) {
        if !cfg!(feature = "tls") {
            skips.push(
                "TLS scenarios skipped: netpool built without its `tls` feature (it is on by default)"
                    .to_string(),
            );
        } else {
            match certs::Certs::generate() {
                Ok(c) => cfg.certs = Some(c),
                Err(e) => skips.push(format!(
                    "TLS scenarios skipped: generating the certificate failed: {e}"
                )),
            }
        }
    }
    for (kind, why) in NOT_YET_WRITTEN {
        if scenarios.iter().any(|s| s.servers.contains(kind)) {
            skips.push(why.to_string());
        }
    }
    for s in &skips {
        eprintln!("suite: {s}");
    }
    let have_certs = cfg.certs.is_some();
    let runnable = |sc: &Scenario, server: ServerKind| match sc.kind {
        _ if NOT_YET_WRITTEN.iter().any(|(k, _)| *k == server) => false,
        _ if sc.tls => have_certs,
        Kind::Ping { .. } | Kind::Kv { .. } | Kind::Paced { .. } => {
            have_bench && (server != ServerKind::Redis || have_server)
        }
        _ => true,
    };
    eprintln!(
        "suite: {} mode, {} round(s), {} scenario(s)",
        if cfg.quick { "quick" } else { "full" },
        cfg.rounds,
        scenarios.len()
    );
    let mut records = Vec::new();
    for round in 0..cfg.rounds {
        for sc in &scenarios {
            // Interleave: each round starts the line-up at a different server,
            // so no server always runs first (cold) or last (warm).
            let mut order: Vec<ServerKind> = sc
                .servers
                .iter()
                .copied()
                .filter(|&s| runnable(sc, s))
                .collect();
            if !order.is_empty() {
                let k = round % order.len();
                order.rotate_left(k);
            }
            for server in order {
                let t = Instant::now();
                let result = run_one(&cfg, sc, server).map_err(|e| e.to_string());
                match &result {
                    Ok(m) => eprintln!(
                        "suite: round {} {:<13} {:<12} {:>6.2}s {}",
                        round + 1,
                        sc.id,
                        server.name(),
                        t.elapsed().as_secs_f64(),
                        brief(m)
                    ),
                    Err(e) => eprintln!(
                        "suite: round {} {:<13} {:<12} FAILED: {e}",
                        round + 1,
                        sc.id,
                        server.name()
                    ),
                }
                records.push(Record {
                    round,
                    scenario: sc.id,
                    server,
                    result,
                });
            }
        }
    }
    // redis-server is a third party's reference, not under test: its trouble
    // is reported in the tables but does not fail the suite.
    let failures = records
        .iter()
        .filter(|r| r.result.is_err() && r.server != ServerKind::Redis)
        .count();
    let md = report::markdown(&scenarios, &records, &skips, cfg.rounds);
    println!("{md}");
    eprintln!("suite: finished in {:.1}s", started.elapsed().as_secs_f64());

    let load = format!("{load_start} before the run, {} after", loadavg());
    let dir = target_dir().join("bench-report");
    let took = started.elapsed();
    if let Err(e) = write_outputs(&dir, &cfg, &scenarios, &records, &md, took, &load) {
        eprintln!("suite: writing the report failed: {e}");
        return 1;
    }
    if failures > 0 {
        eprintln!("suite: {failures} run(s) failed");
        return 1;
    }
    0
}

fn brief(m: &Metrics) -> String {
    [
        "ops_s",
        "p99_us",
        "srv_cpu_us",
        "rss_per_conn_b",
        "refusals_s",
    ]
    .iter()
    .filter_map(|k| m.get(*k).map(|v| format!("{k}={v:.2}")))
    .collect::<Vec<_>>()
    .join(" ")
}

fn write_outputs(
    dir: &std::path::Path,
    cfg: &Config,
    scenarios: &[Scenario],
    records: &[Record],
    md: &str,
    took: Duration,
    load: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let report_path = dir.join("report.md");
    std::fs::write(&report_path, md)?;
    let charts = [
        (
            "throughput.svg",
            "Throughput relative to tokio-ct (higher is better)",
            "ops_s",
        ),
        (
            "cpu_per_op.svg",
            "Server CPU per operation relative to tokio-ct (lower is better)",
            "srv_cpu_us",
        ),
        (
            "p99.svg",
            "p99 latency relative to tokio-ct (lower is better)",
            "p99_us",
        ),
    ];
    for (file, title, key) in charts {
        report::chart(&dir.join(file), title, key, scenarios, records)?;
    }
    eprintln!(
        "suite: wrote {} and charts in {}",
        report_path.display(),
        dir.display()
    );
    if cfg.write_md {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
        // The hand-kept section of measurements made outside the suite
        // (each with its own command) survives the regeneration.
        let kept = std::fs::read_to_string(&path)
            .ok()
            .and_then(|old| old.find(OUTSIDE).map(|at| old[at..].to_string()))
            .unwrap_or_default();
        let mut text = benchmarks_md(cfg, md, took, load);
        if !kept.is_empty() {
            text.push('\n');
            text.push_str(&kept);
        }
        std::fs::write(&path, text)?;
        eprintln!("suite: wrote {}", path.display());
    }
    Ok(())
}

/// The heading of BENCHMARKS.md's last section: measurements made with
/// other commands (micro-benchmarks, tests that print a figure), kept by
/// hand, each with the command that produced it. Regenerating the file keeps
/// it.
const OUTSIDE: &str = "## Measured outside the suite";

/// BENCHMARKS.md: machine, command, then the report of this run.
fn benchmarks_md(cfg: &Config, md: &str, took: Duration, load: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = pin::cpus();
    let cmd_out = |prog: &str, args: &[&str]| {
        std::process::Command::new(prog)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let kernel = cmd_out("uname", &["-sr"]);
    let rustc = cmd_out("rustc", &["--version"]);
    let redis = cmd_out("redis-server", &["--version"]);
    let date = cmd_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    // Which netpool was measured: the commit, marked dirty when src/ differs.
    let commit = std::env::var("NETPOOL_BENCH_COMMIT").unwrap_or_else(|_| {
        let head = cmd_out("git", &["rev-parse", "--short", "HEAD"]);
        let dirty = cmd_out("git", &["status", "--porcelain", "--", "src"]);
        if dirty.is_empty() {
            head
        } else {
            format!("{head} with uncommitted changes in src/")
        }
    });
    let mut cmd = String::new();
    if cfg.quick {
        cmd.push_str("NETPOOL_BENCH_QUICK=1 ");
    }
    if let Ok(r) = std::env::var("NETPOOL_BENCH_ROUNDS") {
        cmd.push_str(&format!("NETPOOL_BENCH_ROUNDS={r} "));
    }
    for key in ["NETPOOL_BENCH_ONLY", "NETPOOL_BENCH_SERVERS"] {
        if let Ok(v) = std::env::var(key) {
            cmd.push_str(&format!("{key}={v} "));
        }
    }
    cmd.push_str("cargo bench --bench suite -- --write-benchmarks-md");
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str(
        "Generated by `benches/suite.rs` from one run; do not edit by hand (except the last section, \"Measured outside the suite\", which is kept), \
         run the command again. Servers: netpool (one loop, and one loop per \
         core: netpool-mt), the tokio variant (current-thread, multi-thread, and \
         tokio-nct: one current-thread runtime per core, each on its own \
         SO_REUSEPORT listener; written as a good tokio user would), the \
         bare-mio floor (a minimal hand-written mio echo loop with no \
         features), for PING_INLINE redis-server, for TLS netpool-tls \
         against tokio-ct behind tokio-rustls (ring provider and the same \
         certificate for both), and for the key-value scenarios netpool-kv \
         (examples/kv; netpool-kv-mt: one loop per core sharing its store) \
         and tokio-kv (the same key-value server on tokio, same engine) \
         against redis-server without persistence. Each server and the load \
         generator are separate processes on the same 2-core machine, so \
         closed-loop throughput is bounded by the client and ratios compress \
         toward 1: the server CPU time per operation is the figure that shows \
         what a server costs. Charts: `target/bench-report/*.svg`.\n\n",
    );
    s.push_str("## Machine and command\n\n");
    s.push_str(&format!("- date: {date}\n- netpool: {commit}\n- CPU: {cpu}, {nproc} cores (nproc)\n- kernel: {kernel}\n- {rustc}\n- {redis}\n- run time: {:.0} s, {} round(s)\n- 1-minute load average: {load}\n\n", took.as_secs_f64(), cfg.rounds));
    s.push_str(&format!("```text\n{cmd}\n```\n\n"));
    s.push_str(READING);
    s.push_str("## Results\n\n");
    s.push_str(md);
    s
}

/// How to read the numbers; fixed text, no figures (those come from the run).
const READING: &str = "## Reading the results\n\n\
- **Server CPU per operation** is the cost figure. Throughput and latency are \
  closed-loop on two cores shared with the load generator (whose own CPU per \
  operation is in the tables), so they are bounded by the client and compress \
  toward 1 between servers.\n\
- **Of which user**: the part of the server's CPU time spent in user space \
  (the kernel samples the user/system split at clock ticks; the sum is \
  exact). The rest is the kernel's TCP and epoll work, which is the same for \
  every server, so ratios of total CPU time can only move as far as the user \
  share allows.\n\
- **Pinning**: single-threaded servers (netpool's one loop, tokio-ct, the \
  floor, redis-server) run on the last CPU and the load generators on the \
  others; multi-threaded servers get every CPU (benches/suite/pin.rs; \
  `NETPOOL_BENCH_PIN=0` turns it off). Unpinned, a one-connection round trip \
  here was bimodal, about 7 µs when the scheduler put client and server on \
  one core and about 80 µs across cores, and the rounds swung by 10x.\n\
- **Request/response with one connection** measures the machine's wake-up path \
  more than the server: every request puts both processes to sleep and wakes \
  them, and on this virtual machine that dominates both latency and CPU time. \
  tokio-mt has a second worker thread, which changes how the scheduler places \
  and wakes it; compare single-threaded servers with tokio-ct.\n\
- **Ratios** are medians of per-round ratios, the servers interleaved within a \
  round; single runs here vary by ±20 %, so differences of a few percent are \
  within noise.\n\
- **Targets**: the mio-floor column is the same measure with the hand-written \
  floor in netpool's place. Where the floor misses a target as well (for \
  example CPU per operation 0.85× tokio's when the floor itself is near 0.9×, \
  or PING_INLINE requests/s above redis-server's when the floor is below it), \
  the target is beyond what a single mio loop reaches on this machine, and \
  netpool's distance from the floor is the overhead to look at.\n\
- **TLS**: one self-signed ECDSA P-256 certificate per run; TLS 1.3 with \
  the client's session resumption off, so every connection of \
  tls-handshakes is a full handshake. The load generator's rustls client \
  verifies the server's signature and certificate, which costs it more per \
  handshake than the server pays.\n\
- **Scaling**: n loops against one on a machine whose n cores are shared \
  with the load generator cannot show scaling; the table is there for runs \
  on bigger machines.\n\
- **Idle memory** is the growth of the server's resident set per established \
  connection that has done one round trip; kernel socket buffers are not in it. \
  For TLS, also after every connection then carried one 16 KiB line each way \
  (a full TLS record) and went idle again; the baseline is taken after one \
  TLS connection has come and gone, since the first handshake pages in the \
  code and tables of rustls and ring once.\n\
- **Key-value**: redis-benchmark sends SET, GET, INCR and MSET (10 keys) \
  in turn, each test the same number of requests; req/s of the mix is all \
  requests over the sum of the tests' durations, CPU per request is the \
  server's over the whole run divided by all requests, and p50/p99 are the \
  worst test's (MSET's, whose requests carry ten keys).\n\
- **Overflow storm**: server CPU per refusal includes the served clients' \
  traffic in the same window; refusals/s is bounded by the storm process, \
  which shares the cores.\n\n";
