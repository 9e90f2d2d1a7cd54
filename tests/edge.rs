//! Behind load balancers and at the edge: the PROXY protocol, address
//! filters, budget alarms, and connections that give their slot back.

mod util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use netpool::{Alarm, Conn, Handler, Overflow, Server};
use util::{connect_from, start, wait_until, Client, DEADLINE};

/// Answers each line with `peer proxy line`, and counts the connections it
/// heard of.
#[derive(Clone, Default)]
struct WhoAmI {
    connects: Arc<AtomicUsize>,
}

impl Handler for WhoAmI {
    type State = ();

    fn on_connect(&mut self, _conn: &mut Conn<'_>) {
        self.connects.fetch_add(1, Ordering::SeqCst);
    }

    fn on_frame(&mut self, line: &[u8], conn: &mut Conn<'_>) {
        let proxy = conn.proxy_addr().map_or("-".to_string(), |a| a.to_string());
        let reply = format!(
            "{} {} {}\n",
            conn.peer_addr(),
            proxy,
            String::from_utf8_lossy(line)
        );
        conn.send(reply.as_bytes());
    }
}

fn proxied_server(builder: netpool::Builder) -> (netpool::ServerThread, WhoAmI) {
    let handler = WhoAmI::default();
    let server = start(builder.proxy_protocol(true), handler.clone());
    (server, handler)
}

/// A PROXY v2 header: `command` (0 LOCAL, 1 PROXY), family byte, block.
fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(block);
    h
}

fn v2_tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut block = Vec::new();
    block.extend_from_slice(&src);
    block.extend_from_slice(&dst);
    block.extend_from_slice(&sport.to_be_bytes());
    block.extend_from_slice(&dport.to_be_bytes());
    v2(1, 0x11, &block)
}

/// The spec's v1 TCP4 example: the handler sees the client the header names
/// and the proxy's own address beside it.
#[test]
fn proxy_v1_tcp4_sets_the_peer_address() {
    let (server, _) = proxied_server(Server::builder());
    let mut c = Client::connect(server.local_addr());
    let me = c.stream().local_addr().unwrap();
    c.send(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nhello\n");
    assert_eq!(
        c.line(),
        format!("192.168.0.1:56324 {me} hello\n").as_bytes()
    );
}

/// A v1 TCP6 header names an IPv6 client.
#[test]
fn proxy_v1_tcp6() {
    let (server, _) = proxied_server(Server::builder());
    let mut c = Client::connect(server.local_addr());
    c.send(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 7000\r\n");
    c.send(b"six\n");
    assert!(c.line().starts_with(b"[2001:db8::1]:4000 127.0.0.1:"));
}

/// A v2 header split across packets, byte by byte, is assembled; the line
/// after it in the last packet is served.
#[test]
fn proxy_v2_split_across_packets() {
    let (server, _) = proxied_server(Server::builder());
    let mut c = Client::connect(server.local_addr());
    c.stream().set_nodelay(true).unwrap();
    let header = v2_tcp4([203, 0, 113, 7], 5555, [10, 0, 0, 1], 7000);
    for (i, b) in header[..header.len() - 1].iter().enumerate() {
        c.send(&[*b]);
        let read = i as u64 + 1;
        wait_until("the server read the byte", || {
            server.handle().stats().bytes_in >= read
        });
    }
    c.send(&[header[header.len() - 1], b'x', b'\n']);
    assert!(c.line().starts_with(b"203.0.113.7:5555 127.0.0.1:"));
}

/// A v2 header for an IPv6 client.
#[test]
fn proxy_v2_tcp6() {
    let (server, _) = proxied_server(Server::builder());
    let mut block = Vec::new();
    block.extend_from_slice(
        &"2001:db8::42"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    block.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    block.extend_from_slice(&[0x30, 0x39, 0x1b, 0x58]);
    let mut c = Client::connect(server.local_addr());
    c.send(&v2(1, 0x21, &block));
    c.send(b"v6\n");
    assert!(c.line().starts_with(b"[2001:db8::42]:12345 127.0.0.1:"));
}

/// LOCAL commands (health checks) keep the connection's own address, in
/// both versions.
#[test]
fn proxy_local_keeps_the_real_address() {
    let (server, _) = proxied_server(Server::builder());
    let mut c = Client::connect(server.local_addr());
    let me = c.stream().local_addr().unwrap();
    c.send(&v2(0, 0x00, &[]));
    assert_eq!(
        c.roundtrip(b"health\n"),
        format!("{me} - health\n").as_bytes()
    );
    let mut c = Client::connect(server.local_addr());
    let me = c.stream().local_addr().unwrap();
    c.send(b"PROXY UNKNOWN\r\n");
    assert_eq!(c.roundtrip(b"v1\n"), format!("{me} - v1\n").as_bytes());
}

/// A missing, malformed or over-long header closes the connection before
/// the handler hears of it.
#[test]
fn bad_proxy_headers_never_reach_the_handler() {
    let (server, handler) = proxied_server(Server::builder());
    let bad: [&[u8]; 4] = [
        b"PING\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\nPING\n",
        &[b"PROXY TCP4 ".as_slice(), &[b'9'; 200]].concat(),
        &v2(1, 0x11, &[0u8; 4]),
    ];
    for (i, input) in bad.iter().enumerate() {
        let mut c = Client::connect(server.local_addr());
        c.send(input);
        assert_eq!(c.read_to_end(), b"", "case {i}");
    }
    wait_until("all counted", || {
        server.handle().stats().bad_proxy_headers == 4
    });
    assert_eq!(handler.connects.load(Ordering::SeqCst), 0);
    assert_eq!(server.handle().stats().active, 0);
}

/// A connection that never completes its header is closed after the header
/// timeout.
#[test]
fn the_proxy_header_times_out() {
    let (server, handler) =
        proxied_server(Server::builder().proxy_header_timeout(Duration::from_millis(150)));
    let mut c = Client::connect(server.local_addr());
    c.send(b"PROXY TCP4 1.2.3.4");
    assert_eq!(c.read_to_end(), b"");
    assert_eq!(server.handle().stats().bad_proxy_headers, 1);
    assert_eq!(handler.connects.load(Ordering::SeqCst), 0);
}

/// A denied address is closed at accept without the refusal message and
/// never reaches the handler; an allowed one is served.
#[test]
fn the_address_filter_decides_at_accept() {
    let handler = WhoAmI::default();
    let server = start(
        Server::builder()
            .allow("127.0.0.0/8".parse().unwrap())
            .deny("127.0.0.2/32".parse().unwrap())
            .refuse_message(b"never sent to the denied\n".to_vec()),
        handler.clone(),
    );
    let mut denied = connect_from("127.0.0.2", server.local_addr());
    assert_eq!(denied.read_to_end(), b"");
    let mut allowed = connect_from("127.0.0.3", server.local_addr());
    assert!(allowed.roundtrip(b"hi\n").starts_with(b"127.0.0.3:"));
    let stats = server.handle().stats();
    assert_eq!((stats.denied, stats.refused, stats.accepted), (1, 0, 1));
    assert_eq!(handler.connects.load(Ordering::SeqCst), 1);
}

/// An allow list turns away everyone outside it.
#[test]
fn an_allow_list_turns_away_the_rest() {
    let server = start(
        Server::builder().allow("127.0.0.1/32".parse().unwrap()),
        util::echo,
    );
    let mut outside = connect_from("127.0.0.9", server.local_addr());
    assert_eq!(outside.read_to_end(), b"");
    let mut inside = connect_from("127.0.0.1", server.local_addr());
    assert_eq!(inside.roundtrip(b"in\n"), b"in\n");
}

/// With the PROXY protocol, the filter judges the client the header names,
/// not the proxy.
#[test]
fn the_filter_judges_the_proxied_client() {
    let (server, handler) = proxied_server(Server::builder().deny("10.9.0.0/16".parse().unwrap()));
    let mut c = Client::connect(server.local_addr());
    c.send(b"PROXY TCP4 10.9.0.5 10.0.0.1 1234 7000\r\nhi\n");
    assert_eq!(c.read_to_end(), b"");
    let mut ok = Client::connect(server.local_addr());
    ok.send(b"PROXY TCP4 10.8.0.5 10.0.0.1 1234 7000\r\n");
    assert!(ok.roundtrip(b"hi\n").starts_with(b"10.8.0.5:1234 "));
    assert_eq!(server.handle().stats().denied, 1);
    assert_eq!(handler.connects.load(Ordering::SeqCst), 1);
}

/// The alarm rings when the active count reaches its threshold, and not
/// again within the cooldown.
#[test]
fn the_budget_alarm_rings_once_per_cooldown() {
    let (tx, rx) = mpsc::channel::<Alarm>();
    let tx = Mutex::new(tx);
    let server = start(
        Server::builder().alarm(3, Duration::from_millis(300), move |a| {
            let _ = tx.lock().unwrap().send(*a);
        }),
        util::echo,
    );
    let mut clients: Vec<Client> = Vec::new();
    for i in 0..6 {
        let mut c = Client::connect(server.local_addr());
        assert_eq!(c.roundtrip(b"x\n"), b"x\n", "client {i}");
        clients.push(c);
    }
    let first = rx.recv_timeout(DEADLINE).unwrap();
    assert_eq!((first.active, first.threshold), (3, 3));
    assert!(
        rx.try_recv().is_err(),
        "no second alarm within the cooldown"
    );
    // Let the cooldown pass (time itself is what is tested here); one more
    // connection while above the threshold rings again.
    std::thread::sleep(Duration::from_millis(350));
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.roundtrip(b"y\n"), b"y\n");
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap().active, 7);
}

/// A connection that gives its slot back stays served, and its slot serves
/// someone else; at stop it is closed like the others.
#[test]
fn a_released_slot_serves_another_client() {
    let server = start(
        Server::builder()
            .acceptors(1)
            .overflow(Overflow::Refuse)
            .refuse_message(b"full\n".to_vec()),
        |line: &[u8], conn: &mut Conn| {
            if line == b"subscribe" {
                conn.release_slot();
                conn.release_slot(); // twice is harmless
            }
            conn.send(
                format!("{} {}\n", String::from_utf8_lossy(line), conn.holds_slot()).as_bytes(),
            );
        },
    );
    let mut subscriber = Client::connect(server.local_addr());
    assert_eq!(subscriber.roundtrip(b"hello\n"), b"hello true\n");
    let mut refused = Client::connect(server.local_addr());
    assert_eq!(refused.read_to_end(), b"full\n");

    assert_eq!(subscriber.roundtrip(b"subscribe\n"), b"subscribe false\n");
    assert_eq!(server.handle().stats().active, 0);
    let mut other = Client::connect(server.local_addr());
    assert_eq!(other.roundtrip(b"me too\n"), b"me too true\n");
    assert_eq!(subscriber.roundtrip(b"still\n"), b"still false\n");
    assert_eq!(server.handle().stats().active, 1);

    let handle = server.handle().clone();
    let stopper = std::thread::spawn(move || handle.stop(DEADLINE));
    assert_eq!(subscriber.read_to_end(), b"");
    assert_eq!(other.read_to_end(), b"");
    drop((subscriber, other));
    assert_eq!(stopper.join().unwrap().unwrap().open_at_stop, 2);
}
