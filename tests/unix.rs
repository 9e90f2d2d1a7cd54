//! Unix domain sockets in the loop: served like TCP (framing, budget and
//! overflow, TLS, timers, handles), beside TCP in one server, with the
//! client's credentials for the handler, and the socket file's life (stale
//! replaced, live refused, mode, removed on stop).

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use netpool::{
    Builder, Conn, ConnHandle, Disconnect, Distribution, Endpoint, Error, Handler, Overflow, Peer,
    Server, ServerThread,
};
use util::{echo, wait_until, Client, DEADLINE};

/// A directory of its own for a test's socket files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "netpool-unix-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A blocking Unix client whose reads give up after [`DEADLINE`].
fn connect(path: &Path) -> BufReader<UnixStream> {
    let stream = UnixStream::connect(path).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    BufReader::new(stream)
}

fn line(client: &mut BufReader<UnixStream>) -> String {
    let mut line = String::new();
    let n = client.read_line(&mut line).expect("read a line");
    assert!(n > 0, "unexpected end of stream");
    line
}

fn roundtrip(client: &mut BufReader<UnixStream>, bytes: &[u8]) -> String {
    client.get_mut().write_all(bytes).expect("send");
    line(client)
}

/// Reads until the server closes; returns what came before.
fn read_to_end(client: &mut BufReader<UnixStream>) -> Vec<u8> {
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => rest,
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => rest,
        Err(e) => panic!("read to end: {e}"),
    }
}

fn start_unix<H: Handler + Send>(builder: Builder, path: &Path, handler: H) -> ServerThread {
    let _ = env_logger::builder().is_test(true).try_init();
    builder
        .unix(path)
        .expect("listen on a Unix socket")
        .spawn(handler)
        .expect("spawn")
}

fn our_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Forty clients at once, each sending its lines in pieces: every line
/// comes back whole and in order, as over TCP.
#[test]
fn many_clients_are_echoed_over_a_unix_socket() {
    let dir = TempDir::new();
    let path = dir.path("echo.sock");
    let server = start_unix(Server::builder(), &path, echo);
    let clients: Vec<_> = (0..40)
        .map(|c| {
            let path = path.clone();
            thread::spawn(move || {
                let mut client = connect(&path);
                for i in 0..20 {
                    let text = format!("client {c} line {i}");
                    let (head, tail) = text.as_bytes().split_at(5);
                    client.get_mut().write_all(head).unwrap();
                    client.get_mut().write_all(tail).unwrap();
                    client.get_mut().write_all(b"\r\n").unwrap();
                    assert_eq!(line(&mut client), format!("{text}\n"));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client failed");
    }
    assert_eq!(server.handle().stats().accepted, 40);
    server.stop(DEADLINE).unwrap();
}

/// What the handler and `on_disconnect` heard about each Unix peer.
struct WhoAmI {
    gone: mpsc::Sender<Peer>,
}

impl Handler for WhoAmI {
    type State = ();

    fn on_frame(&mut self, _line: &[u8], conn: &mut Conn<'_>) {
        let reply = match conn.peer() {
            Peer::Unix {
                credentials, path, ..
            } => format!(
                "uid={} gid={} pid={:?} path={path:?} addr={}\n",
                credentials.uid,
                credentials.gid,
                credentials.pid,
                conn.peer_addr()
            ),
            other => format!("not unix: {other}\n"),
        };
        conn.send(reply.as_bytes());
    }

    fn on_disconnect(&mut self, closed: Disconnect<()>) {
        let _ = self.gone.send(closed.peer);
    }
}

/// The handler learns who connected from the kernel (`SO_PEERCRED`): this
/// process's user, group and pid; the address is the unspecified one, and
/// `on_disconnect` hears the same peer.
#[test]
fn the_handler_sees_the_clients_credentials() {
    let dir = TempDir::new();
    let path = dir.path("who.sock");
    let (gone, heard) = mpsc::channel();
    let server = start_unix(Server::builder(), &path, WhoAmI { gone });
    let mut client = connect(&path);
    let reply = roundtrip(&mut client, b"who am i?\n");
    let gid = rustix::process::getegid().as_raw();
    assert_eq!(
        reply,
        format!(
            "uid={} gid={gid} pid=Some({}) path=None addr=0.0.0.0:0\n",
            our_uid(),
            std::process::id()
        )
    );
    drop(client);
    let peer = heard.recv_timeout(DEADLINE).expect("on_disconnect");
    assert_eq!(peer.uid(), Some(our_uid()));
    assert_eq!(peer.ip(), None);
    server.stop(DEADLINE).unwrap();
}

/// A file left by a server that died is replaced; a path on which a
/// server listens is refused (`AddrInUse`), and that server serves on.
#[test]
fn a_stale_file_is_replaced_and_a_live_path_refused() {
    let dir = TempDir::new();
    let path = dir.path("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "the dead server's file is left behind");
    let server = start_unix(Server::builder(), &path, echo);
    let mut client = connect(&path);
    assert_eq!(roundtrip(&mut client, b"one\n"), "one\n");

    match Server::builder().unix(&path) {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
            assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
        }
        other => panic!("a live path was taken: {other:?}"),
    }
    assert_eq!(roundtrip(&mut client, b"two\n"), "two\n");
    let mut late = connect(&path);
    assert_eq!(roundtrip(&mut late, b"three\n"), "three\n");
    server.stop(DEADLINE).unwrap();
}

/// The file gets the mode asked for before anyone can connect, and is
/// removed on a clean stop.
#[test]
fn the_file_has_its_mode_and_is_removed_on_stop() {
    let dir = TempDir::new();
    let path = dir.path("mode.sock");
    let server = start_unix(Server::builder().unix_mode(0o600), &path, echo);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        server.handle().local_addr(),
        "0.0.0.0:0".parse().unwrap(),
        "a Unix-only server has no TCP address"
    );
    let mut client = connect(&path);
    assert_eq!(roundtrip(&mut client, b"hi\n"), "hi\n");
    drop(client);
    server.stop(DEADLINE).unwrap();
    assert!(!path.exists(), "the socket file outlived a clean stop");
}

/// A Unix listener bound by the caller is served; its file is the
/// caller's and stays after the stop.
#[test]
fn an_adopted_unix_listener_is_served_and_its_file_kept() {
    let dir = TempDir::new();
    let path = dir.path("adopted.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = Server::builder()
        .unix_listener(listener)
        .unwrap()
        .spawn(echo)
        .unwrap();
    let mut client = connect(&path);
    assert_eq!(roundtrip(&mut client, b"mine\n"), "mine\n");
    drop(client);
    server.stop(DEADLINE).unwrap();
    assert!(path.exists(), "the caller's file was removed");
}

/// One server on a TCP port and a Unix path: one budget. With one slot,
/// a TCP client holding it makes a Unix client meet the overflow
/// strategy (refused, with the message), and the other way round.
#[test]
fn tcp_and_unix_share_one_budget() {
    let dir = TempDir::new();
    let path = dir.path("both.sock");
    let server = Server::builder()
        .acceptors(1)
        .overflow(Overflow::Refuse)
        .refuse_message(b"busy\n".to_vec())
        .bind_all([
            Endpoint::Tcp("127.0.0.1:0".parse().unwrap()),
            Endpoint::Unix(path.clone()),
        ])
        .unwrap();
    let addr = server.local_addr();
    assert_eq!(
        server.endpoints(),
        &[Endpoint::Tcp(addr), Endpoint::Unix(path.clone())]
    );
    let server = server.spawn(echo).unwrap();

    let mut tcp = Client::connect(addr);
    assert_eq!(tcp.roundtrip(b"tcp\n"), b"tcp\n");
    let mut refused = connect(&path);
    assert_eq!(read_to_end(&mut refused), b"busy\n");
    drop(tcp);
    wait_until("the TCP client's slot is back", || {
        server.handle().stats().active == 0
    });

    let mut unix = connect(&path);
    assert_eq!(roundtrip(&mut unix, b"unix\n"), "unix\n");
    let mut refused = Client::connect(addr);
    assert_eq!(refused.read_to_end(), b"busy\n");
    let stats = server.handle().stats();
    assert_eq!((stats.accepted, stats.refused), (2, 2));
    drop(unix);
    server.stop(DEADLINE).unwrap();
    assert!(!path.exists());
}

/// Address filters and the per-address cap are for TCP clients: a filter
/// that denies every address and a cap of one leave Unix clients alone,
/// while a TCP client on the same server is denied.
#[test]
fn address_policies_apply_to_tcp_only() {
    let dir = TempDir::new();
    let path = dir.path("policy.sock");
    let server = Server::builder()
        .deny("0.0.0.0/0".parse().unwrap())
        .deny("::/0".parse().unwrap())
        .max_per_ip(1)
        .bind_all([
            Endpoint::Unix(path.clone()),
            Endpoint::Tcp("127.0.0.1:0".parse().unwrap()),
        ])
        .unwrap();
    let addr = server.local_addr();
    let server = server.spawn(echo).unwrap();
    let mut clients: Vec<_> = (0..3).map(|_| connect(&path)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(roundtrip(c, format!("{i}\n").as_bytes()), format!("{i}\n"));
    }
    let mut tcp = Client::connect(addr);
    assert_eq!(tcp.read_to_end(), b"", "closed without a word");
    let stats = server.handle().stats();
    assert_eq!(
        (stats.accepted, stats.denied, stats.refused_per_ip),
        (3, 1, 0)
    );
    server.stop(DEADLINE).unwrap();
}

/// The idle timeout closes a silent Unix client; a handle reaches a Unix
/// connection from another thread.
#[test]
fn timers_and_handles_work_on_unix_connections() {
    let dir = TempDir::new();
    let path = dir.path("timers.sock");
    let (tx, handles) = mpsc::channel::<ConnHandle>();
    let server = start_unix(
        Server::builder().idle_timeout(Duration::from_millis(300)),
        &path,
        move |line: &[u8], conn: &mut Conn| {
            if line == b"handle" {
                tx.send(conn.handle()).unwrap();
            }
        },
    );
    let mut client = connect(&path);
    client.get_mut().write_all(b"handle\n").unwrap();
    let handle = handles.recv_timeout(DEADLINE).expect("a handle");
    thread::spawn(move || handle.send(b"from another thread\n"));
    assert_eq!(line(&mut client), "from another thread\n");
    // Silent from here on: the idle timer closes it.
    assert_eq!(read_to_end(&mut client), b"");
    server.stop(DEADLINE).unwrap();
}

/// Several loops on a TCP port and a Unix path: with `ReusePort` each loop
/// has its own TCP socket, and all share the one Unix socket; clients of
/// both are served, and the file goes at stop.
#[test]
fn several_loops_serve_tcp_and_unix() {
    let dir = TempDir::new();
    let path = dir.path("loops.sock");
    let server = Server::builder()
        .workers(2)
        .distribution(Distribution::ReusePort)
        .bind_all([
            Endpoint::Tcp("127.0.0.1:0".parse().unwrap()),
            Endpoint::Unix(path.clone()),
        ])
        .unwrap();
    let addr = server.local_addr();
    let server = server.spawn_workers(|_| echo).unwrap();
    let mut unix: Vec<_> = (0..8).map(|_| connect(&path)).collect();
    let mut tcp: Vec<_> = (0..8).map(|_| Client::connect(addr)).collect();
    for c in &mut unix {
        assert_eq!(roundtrip(c, b"u\n"), "u\n");
    }
    for c in &mut tcp {
        assert_eq!(c.roundtrip(b"t\n"), b"t\n");
    }
    let served: Vec<u64> = server
        .handle()
        .loop_stats()
        .iter()
        .map(|l| l.accepted)
        .collect();
    assert_eq!(served.iter().sum::<u64>(), 16, "{served:?}");
    drop((unix, tcp));
    server.stop(DEADLINE).unwrap();
    assert!(!path.exists());
}

/// TLS over a Unix socket: the same handshake, the same lines, and the
/// handler sees both the session and the credentials.
#[test]
fn tls_over_a_unix_socket() {
    use netpool::rustls::{self, ClientConfig, ClientConnection, StreamOwned};

    let dir = TempDir::new();
    let path = dir.path("tls.sock");
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let server = start_unix(
        Server::builder().tls_pem(&cert, &key),
        &path,
        |_line: &[u8], conn: &mut Conn| {
            let reply = format!("tls={} uid={:?}\n", conn.is_tls(), conn.peer().uid());
            conn.send(reply.as_bytes());
        },
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(generated.cert.der().clone()).unwrap();
    let config = ClientConfig::builder_with_provider(netpool::tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let session = ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let stream = UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut tls = BufReader::new(StreamOwned::new(session, stream));
    tls.get_mut().write_all(b"hello\n").unwrap();
    let mut reply = String::new();
    tls.read_line(&mut reply).unwrap();
    assert_eq!(reply, format!("tls=true uid=Some({})\n", our_uid()));
    assert_eq!(server.handle().stats().tls_handshakes, 1);
    drop(tls);
    server.stop(DEADLINE).unwrap();
}

/// TCP keeps its address: `Conn::peer` is the same as `peer_addr` there.
#[test]
fn a_tcp_peer_is_its_address() {
    let server = util::start(Server::builder(), |_line: &[u8], conn: &mut Conn| {
        let same = conn.peer() == Peer::Tcp(conn.peer_addr());
        conn.send(format!("{} {same}\n", conn.peer()).as_bytes());
    });
    let mut client = Client::connect(server.local_addr());
    let ours = client.stream().local_addr().unwrap();
    assert_eq!(
        client.roundtrip(b"?\n"),
        format!("{ours} true\n").as_bytes()
    );
    drop::<TcpStream>(client.reader.into_inner());
    server.stop(DEADLINE).unwrap();
}
