//! PING_INLINE with Redis's own client: `redis-benchmark -t ping_inline`
//! against our servers (ping protocol) and against `redis-server`, the
//! single-threaded reactor everyone trusts. Both are optional: without them
//! the scenario is skipped with a message, never failed.

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
    let child = Child::spawn("redis-server", cmd)?;
    child.wait_line(Duration::from_secs(10), |l| {
        l.contains("Ready to accept connections")
    })?;
    Ok((child, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// The result of one `redis-benchmark` run.
pub struct BenchRun {
    pub metrics: BTreeMap<String, f64>,
    /// CPU time redis-benchmark used, µs.
    pub client_cpu_us: u64,
}

/// Runs `redis-benchmark -t ping_inline -c clients -P pipeline -n requests`
/// against `addr` and parses its CSV line.
pub fn benchmark(
    addr: SocketAddr,
    clients: usize,
    pipeline: usize,
    requests: u64,
    timeout: Duration,
) -> io::Result<BenchRun> {
    let mut cmd = Command::new("redis-benchmark");
    cmd.args([
        "-h",
        &addr.ip().to_string(),
        "-p",
        &addr.port().to_string(),
        "-t",
        "ping_inline",
        "-c",
        &clients.to_string(),
        "-P",
        &pipeline.to_string(),
        "-n",
        &requests.to_string(),
        "--csv",
    ]);
    let child = Child::spawn("redis-benchmark", cmd)?;
    let lines = child.read_to_end(timeout)?;
    let (code, cpu) = child.reap_with_cpu(Duration::from_secs(5))?;
    if code != 0 {
        return Err(io::Error::other(format!(
            "redis-benchmark exited with {code}"
        )));
    }
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",
    // "p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row = lines
        .iter()
        .find(|l| l.starts_with("\"PING_INLINE\""))
        .ok_or_else(|| io::Error::other(format!("no PING_INLINE row in {lines:?}")))?;
    let cols: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|c| c.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    if cols.len() < 7 {
        return Err(io::Error::other(format!("short CSV row {row}")));
    }
    let mut m = BTreeMap::new();
    m.insert("ops_s".into(), cols[0]);
    m.insert("p50_us".into(), cols[3] * 1000.0);
    m.insert("p99_us".into(), cols[5] * 1000.0);
    m.insert("ops".into(), requests as f64);
    Ok(BenchRun {
        metrics: m,
        client_cpu_us: cpu,
    })
}
