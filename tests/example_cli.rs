//! examples/echo.rs as an operator runs it: a bad value is a usage error
//! (status 2, the setting named, the usage), an address in use is a failure
//! to run (status 1, the address named), and `--metrics ADDR` serves
//! `GET /metrics` from netpool itself until the signal that stops both.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use util::prometheus::parse_checked;
use util::{wait_until, Client, DEADLINE};

fn echo_binary() -> &'static Path {
    util::example("echo")
}

/// Runs the echo example with `args` to its end (it must exit by itself).
fn run_to_exit(args: &[&str]) -> Output {
    let mut child = Command::new(echo_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the echo example");
    let mut status = None;
    wait_until("the example exits", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    child.wait_with_output().unwrap()
}

/// Each bad value, or bad combination, exits with status 2, names what is
/// wrong and prints the usage, without serving.
#[test]
fn configuration_errors_are_usage_errors() {
    let cases: [(&[&str], &str); 8] = [
        (&["--acceptors", "0"], "acceptors: must be at least 1"),
        (&["--workers", "0"], "workers: must be at least 1"),
        (&["--max-line", "0"], "max_line_len: must be at least 1"),
        (
            &["--overflow", "grow:0"],
            "overflow: Grow's step must be at least 1",
        ),
        (
            &["--acceptors", "10", "--overflow", "grow:5:9"],
            "overflow: Grow's max",
        ),
        (&["--overflow", "grow:1:2:3"], "--overflow grow:1:2:3"),
        (&["--frame-timeout", "-1"], "--frame-timeout"),
        (&["--frobnicate"], "--frobnicate"),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = ["--addr", "127.0.0.1:0"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        let out = run_to_exit(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
        assert!(
            stderr.contains("\nusage: "),
            "{args:?}: no usage in {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: it served");
    }
}

/// An address already in use is not a usage error: status 1, and the
/// message names the address.
#[test]
fn an_address_in_use_exits_1_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for args in [
        vec!["--addr", addr.as_str()],
        vec!["--addr", "127.0.0.1:0", "--metrics", addr.as_str()],
    ] {
        let out = run_to_exit(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "cannot listen on {addr}: the address is already in use"
            )),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("usage:"), "{args:?}: {stderr}");
    }
}

/// The example running with `--metrics`; killed on drop if a test failed.
struct Running {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(echo_binary())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the echo example");
        // Read the first two lines on a thread, so that an example that
        // never prints them fails the test after DEADLINE.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for _ in 0..2 {
                let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
            }
        });
        let line = || rx.recv_timeout(DEADLINE).expect("a line on stdout");
        let first = line();
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line {first:?}"))
            .parse()
            .unwrap();
        let second = line();
        let metrics = second
            .strip_prefix("metrics on http://")
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("second line {second:?}"))
            .parse()
            .unwrap();
        Running {
            child,
            addr,
            metrics,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scrape of `at`: the head and the body.
fn get_metrics(at: SocketAddr) -> (String, String) {
    let mut s = TcpStream::connect(at).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: netpool\r\nAccept: */*\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head, a body");
    (head.to_string(), body.to_string())
}

/// `--metrics ADDR` serves the echo server's metrics over HTTP, and SIGTERM
/// stops both servers: the process exits 0 and neither address listens.
#[test]
fn metrics_are_served_over_http_and_stop_with_the_server() {
    let mut running = Running::start(&[
        "--addr",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--overflow",
        "grow:1:4",
        "--acceptors",
        "1",
    ]);
    let mut a = Client::connect(running.addr);
    assert_eq!(a.roundtrip(b"hello\n"), b"hello\n");
    let mut b = Client::connect(running.addr);
    assert_eq!(b.roundtrip(b"again\n"), b"again\n");

    let (head, body) = get_metrics(running.metrics);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
        "{head}"
    );
    let m = parse_checked(&body);
    assert_eq!(m.value("netpool_connections_accepted_total", &[]), 2.0);
    assert_eq!(m.value("netpool_connections_active", &[]), 2.0);
    assert_eq!(m.value("netpool_budget_slots", &[]), 2.0, "grown by one");
    assert_eq!(m.value("netpool_frames_total", &[]), 2.0);
    assert!(m.get("netpool_listen_queue_depth", &[]).is_some());

    drop((a, b));
    let pid = running.child.id() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut status = None;
    wait_until("the example exits", || {
        status = running.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{:?}", status);
    let mut stderr = String::new();
    running
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("stopped: "), "{stderr}");
    for addr in [running.addr, running.metrics] {
        assert!(TcpStream::connect(addr).is_err(), "{addr} still listens");
    }
}
