//! A real load balancer in front of netpool: HAProxy (Debian's `haproxy`)
//! in TCP mode, with `send-proxy-v2` and with `send-proxy`, over loopback.
//!
//! Each test starts a netpool server with the PROXY protocol on and a
//! per-address cap of one, then an HAProxy in the foreground (`-db`) whose
//! only backend is that server, and connects through HAProxy from distinct
//! loopback source addresses (any 127.x.y.z works with no set-up). The
//! handler answers each line with the peer address it was given, so the
//! client can check that its own address, not HAProxy's, reached netpool.
//!
//! Skipped, with a message, where `haproxy` is not installed (`.ci/run`
//! installs it). Everything is bounded: HAProxy must be listening within
//! [`DEADLINE`], a port clash is retried a few times, and the child is
//! killed when its guard drops, whatever the test's outcome.

mod util;

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netpool::{Conn, Server, ServerThread};
use util::{connect_from, start, wait_until, Client, DEADLINE};

/// What a client refused by the per-address cap reads before the close.
const REFUSED: &[u8] = b"too many from your address\n";

/// The two PROXY protocol versions HAProxy can speak to a server, as the
/// keyword of its `server` line.
const SEND_PROXY: [&str; 2] = ["send-proxy-v2", "send-proxy"];

/// Answers each line with the peer address netpool gave the handler.
fn who_am_i(_line: &[u8], conn: &mut Conn<'_>) {
    let reply = format!("{}\n", conn.peer_addr());
    conn.send(reply.as_bytes());
}

/// The netpool server every test puts behind HAProxy.
fn netpool_server() -> ServerThread {
    start(
        Server::builder()
            .proxy_protocol(true)
            .max_per_ip(1)
            .refuse_message(REFUSED.to_vec()),
        who_am_i,
    )
}

/// True if `haproxy` can be run; otherwise prints why the test is skipped.
fn haproxy_installed() -> bool {
    match Command::new("haproxy").arg("-v").output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!("skipped: `haproxy -v` exited with {}", out.status);
            false
        }
        Err(e) => {
            eprintln!("skipped: haproxy is not installed ({e}); apt-get install haproxy");
            false
        }
    }
}

/// A port that was free a moment ago. HAProxy needs a fixed port in its
/// configuration, so there is a window in which another process can take
/// it; [`HaProxy::start`] retries when that happens.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// An HAProxy child process relaying `frontend` to one netpool server; killed
/// and its directory removed on drop.
struct HaProxy {
    child: Child,
    dir: PathBuf,
    /// Where clients connect.
    frontend: SocketAddr,
}

impl HaProxy {
    /// How many times a port clash is retried with fresh ports.
    const ATTEMPTS: usize = 5;

    /// Starts HAProxy in front of `backend`, speaking `send_proxy` to it, and
    /// waits until it listens.
    ///
    /// Readiness is probed on a second frontend that rejects every
    /// connection: HAProxy binds all its frontends before it serves any, so
    /// a connection accepted there means the relaying frontend is bound too,
    /// and the probe never reaches netpool (where it would take the place the
    /// per-address cap allows).
    fn start(backend: SocketAddr, send_proxy: &str) -> HaProxy {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "netpool-haproxy-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("create the temp dir");
        let mut failures = Vec::new();
        for _ in 0..Self::ATTEMPTS {
            let (port, probe_port) = (free_port(), free_port());
            let config = dir.join("haproxy.cfg");
            fs::write(&config, config_text(port, probe_port, backend, send_proxy))
                .expect("write haproxy.cfg");
            let log = dir.join("haproxy.log");
            let mut child = Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&config)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).expect("create haproxy.log"))
                .spawn()
                .expect("spawn haproxy");
            let probe = SocketAddr::from(([127, 0, 0, 1], probe_port));
            match wait_listening(&mut child, probe) {
                Ok(()) => {
                    return HaProxy {
                        child,
                        dir,
                        frontend: SocketAddr::from(([127, 0, 0, 1], port)),
                    }
                }
                Err(why) => {
                    // Most likely a port taken in the meantime: try others.
                    let _ = child.kill();
                    let _ = child.wait();
                    let said = fs::read_to_string(&log).unwrap_or_default();
                    failures.push(format!("{why}; haproxy said:\n{said}"));
                }
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!(
            "haproxy did not start in {} attempts:\n{}",
            Self::ATTEMPTS,
            failures.join("\n")
        );
    }
}

/// Waits until `probe` accepts, or `child` exits, or [`DEADLINE`] passes.
fn wait_listening(child: &mut Child, probe: SocketAddr) -> Result<(), String> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("haproxy exited with {status}"));
        }
        if TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            return Err(format!(
                "haproxy not listening on {probe} after {DEADLINE:?}"
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// HAProxy's configuration: TCP mode, one relaying frontend, one probe
/// frontend that rejects everything, one server with the PROXY protocol.
/// This is also the configuration the README can show (less the probe).
fn config_text(port: u16, probe_port: u16, backend: SocketAddr, send_proxy: &str) -> String {
    format!(
        "global
    maxconn 256

defaults
    mode tcp
    # One server connection per client, so that netpool's counters count
    # clients (HAProxy retries a connection the server resets, by default).
    retries 0
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend clients
    bind 127.0.0.1:{port}
    default_backend netpool

frontend ready
    bind 127.0.0.1:{probe_port}
    tcp-request connection reject

backend netpool
    server netpool {backend} {send_proxy}
"
    )
}

/// Sends a line through HAProxy and returns the address netpool reported.
fn reported_peer(client: &mut Client) -> String {
    let line = client.roundtrip(b"who am I?\n");
    String::from_utf8(line).expect("UTF-8 reply")
}

/// Reads until the end of the stream without sending anything: a refused
/// client is answered and closed as soon as HAProxy's header arrives, which
/// HAProxy sends as it connects. (A client that is served instead reads
/// nothing until its read deadline, and the caller's assertion fails.)
fn refused_reply(client: &mut Client) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = client.reader.read_to_end(&mut rest);
    rest
}

/// With either PROXY protocol version, each client behind HAProxy reaches
/// the handler with its own address and port, not HAProxy's.
#[test]
fn clients_behind_haproxy_reach_the_handler_with_their_own_address() {
    if !haproxy_installed() {
        return;
    }
    for send_proxy in SEND_PROXY {
        let server = netpool_server();
        let haproxy = HaProxy::start(server.local_addr(), send_proxy);
        for source in ["127.0.0.5", "127.0.0.6", "127.0.0.5"] {
            let mut client = connect_from(source, haproxy.frontend);
            let me = client.stream().local_addr().unwrap();
            assert_eq!(
                reported_peer(&mut client),
                format!("{me}\n"),
                "{send_proxy}: the handler saw another address than {me}"
            );
            // One at a time: this test is about addresses, not the cap.
            drop(client);
            wait_until("the client is gone", || server.handle().stats().active == 0);
        }
        let stats = server.handle().stats();
        assert_eq!(
            (stats.accepted, stats.bad_proxy_headers),
            (3, 0),
            "{send_proxy}"
        );
    }
}

/// With `max_per_ip(1)` behind HAProxy, a second client from 127.0.0.5 is
/// refused while a client from 127.0.0.6 is served: the cap counts the
/// client the PROXY header names, not HAProxy's own address (admission's
/// step after the PROXY header, `Gate::after_header`).
#[test]
fn per_address_cap_counts_the_client_behind_haproxy() {
    if !haproxy_installed() {
        return;
    }
    for send_proxy in SEND_PROXY {
        let server = netpool_server();
        let haproxy = HaProxy::start(server.local_addr(), send_proxy);

        let mut first = connect_from("127.0.0.5", haproxy.frontend);
        let me = first.stream().local_addr().unwrap();
        assert_eq!(reported_peer(&mut first), format!("{me}\n"), "{send_proxy}");

        let mut second = connect_from("127.0.0.5", haproxy.frontend);
        assert_eq!(
            refused_reply(&mut second),
            REFUSED,
            "{send_proxy}: a second client from 127.0.0.5 must be refused"
        );

        let mut other = connect_from("127.0.0.6", haproxy.frontend);
        let me = other.stream().local_addr().unwrap();
        let reply = refused_reply_or_peer(&mut other);
        assert_eq!(
            reply,
            format!("{me}\n").into_bytes(),
            "{send_proxy}: a client from 127.0.0.6 must be served while \
             127.0.0.5 holds its one place (got {:?}; refused per address so far: {})",
            String::from_utf8_lossy(&reply),
            server.handle().stats().refused_per_ip
        );
        let stats = server.handle().stats();
        assert_eq!((stats.refused_per_ip, stats.active), (1, 2), "{send_proxy}");
        drop(haproxy);
    }
}

/// Sends a line and returns the first line of the answer; empty if the
/// connection was closed or reset instead (a refusal, which the stats in
/// the caller's message then show).
fn refused_reply_or_peer(client: &mut Client) -> Vec<u8> {
    client.send(b"who am I?\n");
    let mut line = Vec::new();
    let _ = std::io::BufRead::read_until(&mut client.reader, b'\n', &mut line);
    line
}
