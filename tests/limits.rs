//! Abuse limits at accept: the per-address cap and the accept rate limit.

mod util;

use std::time::{Duration, Instant};

use netpool::{Overflow, Server};
use util::{connect_from, echo, start, wait_until, Client};

/// One address cannot hold more than `max_per_ip` connections; other
/// addresses are unaffected, and a freed place serves again.
#[test]
fn the_per_ip_cap_limits_one_address_only() {
    let server = start(
        Server::builder()
            .max_per_ip(2)
            .refuse_message(b"too many from you\n".to_vec()),
        echo,
    );
    let addr = server.local_addr();
    let mut a1 = connect_from("127.0.0.1", addr);
    let mut a2 = connect_from("127.0.0.1", addr);
    assert_eq!(a1.roundtrip(b"1\n"), b"1\n");
    assert_eq!(a2.roundtrip(b"2\n"), b"2\n");
    let mut a3 = connect_from("127.0.0.1", addr);
    assert_eq!(a3.read_to_end(), b"too many from you\n");
    let mut b1 = connect_from("127.0.0.2", addr);
    assert_eq!(b1.roundtrip(b"b\n"), b"b\n", "another address is served");
    let stats = server.handle().stats();
    assert_eq!(
        (stats.refused_per_ip, stats.refused, stats.active),
        (1, 0, 3)
    );

    drop(a1);
    wait_until("a1 is gone", || server.handle().stats().active == 2);
    let mut a4 = connect_from("127.0.0.1", addr);
    assert_eq!(a4.roundtrip(b"4\n"), b"4\n");
}

/// Past the accept rate, connections are refused under Refuse: a burst of
/// one second's worth passes, the rest is counted as rate-limited.
#[test]
fn the_accept_rate_refuses_the_excess() {
    let server = start(
        Server::builder()
            .accept_rate(5)
            .refuse_message(b"slow down\n".to_vec()),
        echo,
    );
    let mut served = 0;
    let mut refused = 0;
    for _ in 0..20 {
        let mut c = Client::connect(server.local_addr());
        c.send(b"x\n");
        match c.line().as_slice() {
            b"x\n" => served += 1,
            b"slow down\n" => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The burst (5), plus what refilled while the 20 connected.
    assert!((5..15).contains(&served), "{served} served");
    assert_eq!(server.handle().stats().rate_limited, refused);
}

/// Under Pause the excess over the accept rate waits in the backlog and is
/// served as tokens come, none refused.
#[test]
fn the_accept_rate_under_pause_delays_instead_of_refusing() {
    let server = start(
        Server::builder().accept_rate(20).overflow(Overflow::Pause),
        echo,
    );
    let start = Instant::now();
    let mut clients: Vec<Client> = (0..30)
        .map(|i| {
            let mut c = Client::connect(server.local_addr());
            c.send(format!("{i}\n").as_bytes());
            c
        })
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.line(), format!("{i}\n").as_bytes());
    }
    // 20 at once, then 10 more at 20 per second.
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "not rate limited"
    );
    let stats = server.handle().stats();
    assert_eq!(
        (stats.accepted, stats.rate_limited, stats.refused),
        (30, 0, 0)
    );
}
