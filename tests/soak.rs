//! A bounded soak: mixed load with churn for NETPOOL_SOAK_SECS seconds
//! (default 30). Ignored by default; `.ci/run` runs it briefly:
//!
//! ```text
//! NETPOOL_SOAK_SECS=5 cargo test --test soak -- --ignored
//! ```

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netpool::Server;
use util::{echo, start, wait_until, DEADLINE};

fn soak_time() -> Duration {
    let secs = std::env::var("NETPOOL_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Long-lived pipelining clients: every reply must match, in order.
fn pipeliner(addr: SocketAddr, stop: Arc<AtomicBool>, lines: Arc<AtomicU64>) {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<u8> = (0..64)
            .flat_map(|i| {
                format!("p {} {}\n", n + i, "x".repeat(((n + i) % 200) as usize)).into_bytes()
            })
            .collect();
        writer.write_all(&batch).unwrap();
        for i in 0..64 {
            buf.clear();
            reader.read_until(b'\n', &mut buf).unwrap();
            let want = format!("p {} {}\n", n + i, "x".repeat(((n + i) % 200) as usize));
            assert_eq!(buf, want.as_bytes(), "reply out of order or corrupted");
        }
        n += 64;
        lines.fetch_add(64, Ordering::Relaxed);
    }
}

/// Connects from one of 64 loopback source addresses, so that the closed
/// connections' TIME_WAIT states never exhaust one address's ephemeral ports
/// (about 28,000 here), however long the soak.
fn connect_from_many(addr: SocketAddr, i: u64) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: SocketAddr = format!("127.0.{}.{}:0", (i / 64) % 4, 1 + i % 64)
        .parse()
        .unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

/// Churn: connect, one line, and end it one of several ways.
fn churner(addr: SocketAddr, stop: Arc<AtomicBool>, cycles: Arc<AtomicU64>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut c = connect_from_many(addr, i);
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        match i % 4 {
            0 => {
                c.write_all(b"hello\n").unwrap();
                let mut r = [0u8; 6];
                c.read_exact(&mut r).unwrap();
                assert_eq!(&r, b"hello\n");
            }
            1 => {
                c.write_all(b"bye\n").unwrap();
                c.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                c.read_to_end(&mut rest).unwrap();
                assert_eq!(rest, b"bye\n");
            }
            2 => {
                c.write_all(b"cut mid-li").unwrap();
                socket2::SockRef::from(&c)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
            _ => {
                // An over-long line: the server closes it.
                let _ = c.write_all(&[b'l'; 70_000]);
                let mut rest = Vec::new();
                let _ = c.read_to_end(&mut rest);
            }
        }
        i += 1;
        cycles.fetch_add(1, Ordering::Relaxed);
    }
}

/// Mixed load with churn: no errors, no descriptor growth, and memory back
/// near its baseline afterwards.
#[test]
#[ignore = "soak: run with --ignored (NETPOOL_SOAK_SECS sets the length)"]
fn soak_mixed_load_with_churn() {
    let server = start(Server::builder().acceptors(256), echo);
    let addr = server.local_addr();
    let handle = server.handle().clone();
    // Baseline after a warm-up, so one-time allocations are in it.
    for _ in 0..10 {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"warm\n").unwrap();
        let mut r = [0u8; 5];
        c.read_exact(&mut r).unwrap();
    }
    wait_until("warm-up connections closed", || handle.stats().active == 0);
    let fds_before = open_fds();
    let rss_before = rss_bytes();

    let stop = Arc::new(AtomicBool::new(false));
    let lines = Arc::new(AtomicU64::new(0));
    let cycles = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..4 {
        let (stop, lines) = (stop.clone(), lines.clone());
        threads.push(std::thread::spawn(move || pipeliner(addr, stop, lines)));
    }
    for _ in 0..2 {
        let (stop, cycles) = (stop.clone(), cycles.clone());
        threads.push(std::thread::spawn(move || churner(addr, stop, cycles)));
    }
    let started = Instant::now();
    let length = soak_time();
    let mut peak_active = 0;
    while started.elapsed() < length {
        std::thread::sleep(Duration::from_millis(100));
        peak_active = peak_active.max(handle.stats().active);
        assert!(
            threads.iter().all(|t| !t.is_finished()),
            "a client thread failed"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a client saw an error");
    }
    wait_until("every connection closed", || handle.stats().active == 0);
    wait_until("no descriptor growth", || open_fds() <= fds_before);
    let rss_after = rss_bytes();
    let stats = handle.stats();
    eprintln!(
        "soak: {:?}, {} pipelined lines, {} churn cycles, peak {} active, RSS {} -> {} KiB, {stats:?}",
        length,
        lines.load(Ordering::Relaxed),
        cycles.load(Ordering::Relaxed),
        peak_active,
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(lines.load(Ordering::Relaxed) > 0 && cycles.load(Ordering::Relaxed) > 0);
    assert_eq!(stats.handler_panics, 0);
    // The allocator may keep some freed memory; growth past this would be a leak.
    assert!(
        rss_after < rss_before + (16 << 20),
        "RSS grew from {rss_before} to {rss_after}"
    );
}
