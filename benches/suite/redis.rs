//! Redis's own client against our servers and against `redis-server`, the
//! single-threaded reactor everyone trusts: `redis-benchmark -t ping_inline`
//! (ping protocol) and `-t set,get,incr,mset` (the key-value servers). Both
//! programs are optional: without them the scenarios are skipped with a
//! message, never failed.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use crate::child::Child;

/// Whether a program is on PATH and runs.
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A port on 127.0.0.1 that was free a moment ago (redis-server cannot be
/// told to take port 0 and report it).
fn free_port() -> io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Starts `redis-server` on loopback with persistence off; returns it once it
/// logs that it accepts connections.
pub fn start_server() -> io::Result<(Child, SocketAddr)> {
    let port = free_port()?;
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        "",
    ]);
    // Its serving is one thread, pinned as netpool's one loop is.
    crate::pin::pin_command(&mut cmd, true);
    let child = Child::spawn("redis-server", cmd)?;
    child.wait_line(Duration::from_secs(10), |l| {
        l.contains("Ready to accept connections")
    })?;
    Ok((child, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// What one `redis-benchmark` run sends.
pub struct Spec<'a> {
    /// `-t`: the tests, comma-separated (`ping_inline`, `set,get,incr,mset`).
    pub tests: &'a str,
    /// `-c`: connections.
    pub clients: usize,
    /// `-P`: requests in flight per connection.
    pub pipeline: usize,
    /// `-n`: requests per test.
    pub requests: u64,
    /// Further arguments, as `["-r", "100000", "-d", "64"]`.
    pub extra: &'a [&'a str],
}

/// One test's row of redis-benchmark's CSV output.
pub struct Row {
    /// As redis-benchmark names it: `SET`, `GET`, `MSET (10 keys)`...
    pub test: String,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Everything one `redis-benchmark` run measured.
pub struct Run {
    pub rows: Vec<Row>,
    /// CPU time redis-benchmark used, µs.
    pub client_cpu_us: u64,
}

/// Runs `redis-benchmark` against `addr` and parses its CSV rows. Since
/// redis-benchmark 7, an error reply makes it exit at once with a failure
/// ("We now immediately exit on error to avoid false results"), which fails
/// the run here: a server that answers errors cannot post a figure.
pub fn run(addr: SocketAddr, spec: &Spec, timeout: Duration) -> io::Result<Run> {
    let mut cmd = Command::new("redis-benchmark");
    cmd.args([
        "-h",
        &addr.ip().to_string(),
        "-p",
        &addr.port().to_string(),
        "-t",
        spec.tests,
        "-c",
        &spec.clients.to_string(),
        "-P",
        &spec.pipeline.to_string(),
        "-n",
        &spec.requests.to_string(),
        "--csv",
    ]);
    cmd.args(spec.extra);
    let child = Child::spawn("redis-benchmark", cmd)?;
    let lines = child.read_to_end(timeout)?;
    let (code, cpu) = child.reap_with_cpu(Duration::from_secs(5))?;
    if code != 0 {
        return Err(io::Error::other(format!(
            "redis-benchmark exited with {code}: {lines:?}"
        )));
    }
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
    // "p95_latency_ms","p99_latency_ms","max_latency_ms"
    let mut rows = Vec::new();
    for line in lines
        .iter()
        .filter(|l| l.starts_with('"') && !l.starts_with("\"test\""))
    {
        let mut cells = line.split(',').map(|c| c.trim_matches('"'));
        let test = cells.next().unwrap_or_default().to_string();
        let cols: Vec<f64> = cells.map(|c| c.parse().unwrap_or(f64::NAN)).collect();
        if cols.len() < 7 {
            return Err(io::Error::other(format!("short CSV row {line}")));
        }
        rows.push(Row {
            test,
            rps: cols[0],
            p50_us: cols[3] * 1000.0,
            p99_us: cols[5] * 1000.0,
        });
    }
    if rows.is_empty() {
        return Err(io::Error::other(format!("no CSV rows in {lines:?}")));
    }
    Ok(Run {
        rows,
        client_cpu_us: cpu,
    })
}

/// The result of one PING_INLINE run.
pub struct BenchRun {
    pub metrics: BTreeMap<String, f64>,
    /// CPU time redis-benchmark used, µs.
    pub client_cpu_us: u64,
}

/// Runs `redis-benchmark -t ping_inline -c clients -P pipeline -n requests`
/// against `addr`.
pub fn benchmark(
    addr: SocketAddr,
    clients: usize,
    pipeline: usize,
    requests: u64,
    timeout: Duration,
) -> io::Result<BenchRun> {
    let spec = Spec {
        tests: "ping_inline",
        clients,
        pipeline,
        requests,
        extra: &[],
    };
    let run = run(addr, &spec, timeout)?;
    let row = run
        .rows
        .iter()
        .find(|r| r.test == "PING_INLINE")
        .ok_or_else(|| io::Error::other("no PING_INLINE row"))?;
    let mut m = BTreeMap::new();
    m.insert("ops_s".into(), row.rps);
    m.insert("p50_us".into(), row.p50_us);
    m.insert("p99_us".into(), row.p99_us);
    m.insert("ops".into(), requests as f64);
    Ok(BenchRun {
        metrics: m,
        client_cpu_us: run.client_cpu_us,
    })
}
