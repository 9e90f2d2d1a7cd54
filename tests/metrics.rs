//! Metrics over real sockets: the Prometheus text of a running server
//! parses (strictly, and with the reference parser where installed) and
//! says what happened: connections active, accepted, refused by reason,
//! closed by reason, the budget, frames, the kernel's accept queue under
//! Pause with clients waiting, a blocking handler in the turn histogram,
//! the counters of deferred replies and connection handles; and
//! `MetricsEndpoint` serves it over HTTP.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use netpool::{CloseReason, Conn, ConnHandle, MetricsEndpoint, Overflow, Server, ServerHandle};
use util::prometheus::{parse, parse_checked, Exposition};
use util::{connect_from, echo, fill_command_queue, start, wait_until, Client, DEADLINE};

const BUSY: &[u8] = b"busy\n";

/// The server's metrics as text, parsed strictly, and by the reference
/// parser too where it is installed (see `util/prometheus.rs`).
fn scrape(handle: &ServerHandle) -> Exposition {
    parse_checked(&text(handle))
}

/// The text alone, parsed strictly: for a condition polled in a loop.
fn scrape_quickly(handle: &ServerHandle) -> Exposition {
    parse(&text(handle))
}

fn text(handle: &ServerHandle) -> String {
    let mut text = Vec::new();
    handle.write_prometheus(&mut text).unwrap();
    String::from_utf8(text).expect("UTF-8")
}

/// Accepted, refused by budget and by address, closed by the peer, frames,
/// bytes and the budget all read back as they happened.
#[test]
fn the_text_parses_and_says_what_happened() {
    let server = start(
        Server::builder()
            .acceptors(3)
            .max_per_ip(2)
            .refuse_message(BUSY.to_vec()),
        echo,
    );
    let (addr, handle) = (server.local_addr(), server.handle().clone());
    let mut a1 = connect_from("127.0.0.2", addr);
    let mut a2 = connect_from("127.0.0.2", addr);
    assert_eq!(a1.roundtrip(b"one\n"), b"one\n");
    assert_eq!(a2.roundtrip(b"two\n"), b"two\n");
    let mut a3 = connect_from("127.0.0.2", addr);
    assert_eq!(a3.read_to_end(), BUSY, "over the per-address cap");
    let mut b = connect_from("127.0.0.3", addr);
    assert_eq!(b.roundtrip(b"three\n"), b"three\n");
    let mut c = connect_from("127.0.0.4", addr);
    assert_eq!(c.read_to_end(), BUSY, "over the budget");
    drop(a1);
    wait_until("a1 is closed", || handle.stats().active == 2);

    let m = scrape(&handle);
    assert_eq!(m.types["netpool_connections_active"], "gauge");
    assert_eq!(m.types["netpool_connections_refused_total"], "counter");
    assert_eq!(m.types["netpool_loop_turn_seconds"], "histogram");
    assert_eq!(m.value("netpool_connections_active", &[]), 2.0);
    assert_eq!(m.value("netpool_connections_accepted_total", &[]), 3.0);
    let refused = m.by_label("netpool_connections_refused_total", "reason");
    let want: Vec<(&str, f64)> = vec![
        ("budget", 1.0),
        ("denied", 0.0),
        ("emfile", 0.0),
        ("per_ip", 1.0),
        ("proxy", 0.0),
        ("rate", 0.0),
    ];
    assert_eq!(
        refused
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>(),
        want
    );
    let closed = m.by_label("netpool_connections_closed_total", "reason");
    assert_eq!(closed["peer_closed"], 1.0);
    assert_eq!(closed.values().sum::<f64>(), 1.0, "{closed:?}");
    assert_eq!(m.value("netpool_budget_slots", &[]), 3.0);
    assert_eq!(m.value("netpool_frames_total", &[]), 3.0);
    assert_eq!(
        m.value("netpool_bytes_received_total", &[]),
        ("one\ntwo\nthree\n".len()) as f64
    );
    assert_eq!(
        m.value("netpool_bytes_sent_total", &[]),
        ("one\ntwo\nthree\n".len()) as f64,
        "the replies (refusal messages go to connections never served)"
    );
    assert_eq!(m.value("netpool_listen_queue_depth", &[]), 0.0);
    assert!(m.value("netpool_listen_queue_backlog", &[]) >= 1.0);
    assert_eq!(
        m.get("netpool_tls_handshakes_total", &[("result", "completed")]),
        None
    );
    // Per loop.
    assert_eq!(
        m.value("netpool_loop_connections_active", &[("loop", "0")]),
        2.0
    );
    assert_eq!(
        m.value("netpool_loop_connections_accepted_total", &[("loop", "0")]),
        3.0
    );
    let count = m.value("netpool_loop_turn_seconds_count", &[("loop", "0")]);
    assert!(count >= 5.0, "at least one turn per connection: {count}");
    assert_eq!(
        m.value(
            "netpool_loop_turn_seconds_bucket",
            &[("loop", "0"), ("le", "+Inf")]
        ),
        count
    );
    let buckets = m.by_label("netpool_loop_turn_seconds_bucket", "le");
    let mut finite: Vec<(f64, f64)> = buckets
        .iter()
        .filter(|(le, _)| *le != "+Inf")
        .map(|(le, n)| (le.parse().unwrap(), *n))
        .collect();
    finite.sort_by(|x, y| x.0.total_cmp(&y.0));
    assert!(
        finite.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative buckets: {finite:?}"
    );
    // The typed view agrees.
    let metrics = handle.metrics();
    assert_eq!(metrics.closed(CloseReason::PeerClosed), 1);
    assert_eq!(metrics.listen_queue_depth(), Some(0));
    drop((a2, b));
    server.stop(DEADLINE).unwrap();
}

/// Under Pause, clients the loop does not accept wait in the kernel's
/// accept queue, and `netpool_listen_queue_depth` counts them; they are
/// accepted in turn as slots free. After the stop the series is gone.
#[test]
fn the_accept_queue_shows_clients_waiting_under_pause() {
    let server = start(
        Server::builder().acceptors(1).overflow(Overflow::Pause),
        echo,
    );
    let (addr, handle) = (server.local_addr(), server.handle().clone());
    let mut first = Client::connect(addr);
    assert_eq!(first.roundtrip(b"in\n"), b"in\n");
    // The kernel completes their handshakes; nobody accepts them.
    let mut waiting: Vec<Client> = (0..3).map(|_| Client::connect(addr)).collect();
    wait_until("three clients wait in the accept queue", || {
        handle.metrics().listen_queue_depth() == Some(3)
    });
    let m = scrape(&handle);
    assert_eq!(m.value("netpool_listen_queue_depth", &[]), 3.0);
    let pauses = m.value("netpool_accept_pauses_total", &[]);
    assert!(pauses >= 1.0, "the loop paused: {pauses}");
    assert_eq!(pauses, handle.stats().pause_episodes as f64);
    assert_eq!(m.value("netpool_connections_active", &[]), 1.0);
    assert_eq!(m.value("netpool_connections_accepted_total", &[]), 1.0);
    assert_eq!(
        m.value("netpool_connections_refused_total", &[("reason", "budget")]),
        0.0,
        "paused, not refused"
    );
    drop(first);
    assert_eq!(waiting[0].roundtrip(b"next\n"), b"next\n");
    wait_until("two wait", || {
        handle.metrics().listen_queue_depth() == Some(2)
    });
    waiting.clear();
    wait_until("the queue drains", || {
        handle.metrics().listen_queue_depth() == Some(0)
    });
    server.stop(DEADLINE).unwrap();
    let m = scrape(&handle);
    assert_eq!(
        m.get("netpool_listen_queue_depth", &[]),
        None,
        "no listener"
    );
    assert_eq!(m.value("netpool_connections_accepted_total", &[]), 4.0);
}

/// A handler that blocks its loop shows in the turn histogram: a turn of
/// 30 ms or more lands above the 16 ms bucket.
#[test]
fn a_blocking_handler_shows_in_the_turn_histogram() {
    let server = start(Server::builder(), |line: &[u8], conn: &mut Conn| {
        if line == b"block" {
            std::thread::sleep(Duration::from_millis(30));
        }
        conn.send(b"done\n");
    });
    let handle = server.handle().clone();
    let long = |m: &Exposition| {
        let count = m.value("netpool_loop_turn_seconds_count", &[("loop", "0")]);
        let fast = m.value(
            "netpool_loop_turn_seconds_bucket",
            &[("loop", "0"), ("le", "0.016384")],
        );
        count - fast
    };
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.roundtrip(b"quick\n"), b"done\n");
    let before = long(&scrape_quickly(&handle));
    assert_eq!(c.roundtrip(b"block\n"), b"done\n");
    // The turn is recorded once it ends, right after the reply is written.
    wait_until("the long turn is recorded", || {
        long(&scrape_quickly(&handle)) > before
    });
    let m = scrape(&handle);
    assert!(m.value("netpool_loop_turn_seconds_sum", &[("loop", "0")]) >= 0.03);
    drop(c);
    server.stop(DEADLINE).unwrap();
}

/// What went wrong around deferred replies and connection handles reads
/// back in the text as `Stats` has it: a reply slot dropped unfilled, a
/// handler panic, sends refused by a full command queue, and a command for
/// a connection already gone.
#[test]
fn the_reply_and_handle_counters_say_what_happened() {
    let (to_test, from_loop) = mpsc::channel::<ConnHandle>();
    let (release, released) = mpsc::channel::<()>();
    let server = start(
        Server::builder().command_queue_limit(4096),
        move |line: &[u8], conn: &mut Conn| match line {
            b"drop" => {
                drop(conn.defer());
                conn.send(b"after the dropped slot\n");
            }
            b"panic" => panic!("a handler panic, on purpose"),
            b"block" => {
                to_test.send(conn.handle()).unwrap();
                // Keeps the loop from taking its queue (a test only: a
                // handler must not block).
                released.recv_timeout(DEADLINE).unwrap();
                conn.send(b"released\n");
            }
            _ => conn.send(b"?\n"),
        },
    );
    let (addr, handle) = (server.local_addr(), server.handle().clone());
    let mut dropped = Client::connect(addr);
    assert_eq!(dropped.roundtrip(b"drop\n"), b"after the dropped slot\n");
    let mut panics = Client::connect(addr);
    panics.send(b"panic\n");
    assert_eq!(panics.read_to_end(), b"", "the panic closed it");

    let mut blocked = Client::connect(addr);
    blocked.send(b"block\n");
    let conn = from_loop.recv_timeout(DEADLINE).unwrap();
    let sent = fill_command_queue(&conn, 4096);
    release.send(()).unwrap();
    assert_eq!(blocked.line(), b"released\n");
    for n in 0..sent {
        assert_eq!(blocked.line(), format!("{n:04}\n").as_bytes());
    }
    drop(blocked);
    wait_until("the blocked client is gone", || {
        handle.loop_stats()[0].active == 1
    });
    conn.send("too late\n").unwrap();
    wait_until("the late send is dropped", || {
        handle.stats().stale_handle_commands == 1
    });

    let m = scrape(&handle);
    let stats = handle.stats();
    for (name, labels, field, want) in [
        (
            "netpool_reply_slots_dropped_total",
            &[][..],
            stats.reply_slots_dropped,
            1,
        ),
        ("netpool_handler_panics_total", &[], stats.handler_panics, 1),
        (
            "netpool_commands_refused_total",
            &[("reason", "full")],
            stats.commands_refused_full,
            1,
        ),
        (
            "netpool_stale_handle_commands_total",
            &[],
            stats.stale_handle_commands,
            1,
        ),
    ] {
        assert_eq!(field, want, "{name}: Stats");
        assert_eq!(m.value(name, labels), want as f64, "{name}: the text");
    }
    let closed = m.by_label("netpool_connections_closed_total", "reason");
    assert_eq!(closed["handler_panicked"], 1.0);
    drop(dropped);
    server.stop(DEADLINE).unwrap();
}

/// With the PROXY protocol on, a client refused after its header counts as
/// accepted, refused (`per_ip`) and, once gone, closed (`per_ip`); a bad
/// header as refused and closed for the proxy.
#[test]
fn refusals_after_the_proxy_header_count_as_refused_and_closed() {
    let server = start(
        Server::builder()
            .proxy_protocol(true)
            .max_per_ip(1)
            .refuse_message(BUSY.to_vec()),
        echo,
    );
    let (addr, handle) = (server.local_addr(), server.handle().clone());
    let header = b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 7000\r\n";
    let mut first = Client::connect(addr);
    first.send(header);
    assert_eq!(first.roundtrip(b"hi\n"), b"hi\n");
    let mut second = Client::connect(addr);
    second.send(header);
    assert_eq!(
        second.read_to_end(),
        BUSY,
        "the same client, through the proxy"
    );
    drop(second);
    let mut bad = Client::connect(addr);
    bad.send(b"NOT A PROXY HEADER\r\n");
    assert_eq!(bad.read_to_end(), b"");
    wait_until("the refused connections are gone", || {
        handle.loop_stats()[0].active == 1
    });
    let m = scrape(&handle);
    assert_eq!(m.value("netpool_connections_accepted_total", &[]), 3.0);
    let refused = m.by_label("netpool_connections_refused_total", "reason");
    assert_eq!((refused["per_ip"], refused["proxy"]), (1.0, 1.0));
    let closed = m.by_label("netpool_connections_closed_total", "reason");
    assert_eq!((closed["per_ip"], closed["bad_proxy_header"]), (1.0, 1.0));
    assert_eq!(closed.values().sum::<f64>(), 2.0);
    assert_eq!(m.value("netpool_connections_active", &[]), 1.0);
    drop(first);
    server.stop(DEADLINE).unwrap();
}

/// Sends `request` to `addr` and returns the whole response.
fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
}

/// `MetricsEndpoint` answers `GET /metrics` with the text and its content
/// type, anything else with its HTTP error, and closes each time.
#[test]
fn the_endpoint_serves_get_metrics_over_http() {
    let server = start(Server::builder(), echo);
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.roundtrip(b"x\n"), b"x\n");
    let endpoint = start(
        Server::builder().acceptors(4),
        MetricsEndpoint::new(server.handle().clone()),
    );
    let at = endpoint.local_addr();

    let response = http(at, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"));
    assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
    let m = parse_checked(body);
    assert_eq!(m.value("netpool_connections_active", &[]), 1.0);
    assert_eq!(m.value("netpool_frames_total", &[]), 1.0);

    let response = http(at, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
    assert!(response.contains("\r\nAllow: GET\r\n"));
    let response = http(at, "GET / HTTP/1.0\r\n\r\n");
    assert!(
        response.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{response}"
    );
    let response = http(at, "hello\r\n");
    assert!(
        response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{response}"
    );

    // Scrapes count in the endpoint's own server, not in the one it shows.
    assert_eq!(endpoint.handle().stats().accepted, 4);
    assert_eq!(server.handle().stats().accepted, 1);
    drop(c);
    endpoint.stop(DEADLINE).unwrap();
    server.stop(DEADLINE).unwrap();
}
