//! Configuration errors are usage errors: `bind` (and `listener`) check
//! every setting before anything is bound, and each bad one is an
//! `Error::InvalidConfig` that names the `Builder` method at fault.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use netpool::{Builder, Error, Overflow, Server};

/// Each invalid setting, and the name its error carries.
fn invalid() -> Vec<(Builder, &'static str)> {
    let b = Server::builder;
    vec![
        (b().acceptors(0), "acceptors"),
        (
            b().overflow(Overflow::Grow { step: 0, max: 2048 }),
            "overflow",
        ),
        (
            b().acceptors(10)
                .overflow(Overflow::Grow { step: 5, max: 9 }),
            "overflow",
        ),
        (b().backlog(0), "backlog"),
        (b().backlog(-1), "backlog"),
        (b().max_line_len(0), "max_line_len"),
        (b().read_buffer(100), "read_buffer"),
        (b().output_water_marks(10, 5), "output_water_marks"),
        (b().output_limit(1000), "output_limit"),
        (b().linger(Duration::ZERO), "linger"),
        (
            b().accept_backoff(Duration::from_micros(10)),
            "accept_backoff",
        ),
        (
            b().proxy_header_timeout(Duration::ZERO),
            "proxy_header_timeout",
        ),
        (
            b().tls_handshake_timeout(Duration::ZERO),
            "tls_handshake_timeout",
        ),
        (b().events_capacity(0), "events_capacity"),
        (b().max_handshakes(0), "max_handshakes"),
        (b().workers(0), "workers"),
        (b().workers(1025), "workers"),
    ]
}

/// A port that was free a moment ago.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Every invalid setting is refused by `bind`, naming the setting, and
/// nothing is bound: the address stays free.
#[test]
fn each_invalid_setting_gives_its_error_before_anything_is_bound() {
    for (builder, setting) in invalid() {
        let addr = free_addr();
        let err = builder.bind(addr).expect_err(setting);
        let Error::InvalidConfig(e) = &err else {
            panic!("{setting}: not a configuration error: {err}");
        };
        assert_eq!(e.setting(), setting, "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("invalid configuration: {setting}: ")),
            "{err}"
        );
        assert!(!e.reason().is_empty());
        TcpListener::bind(addr).unwrap_or_else(|_| panic!("{setting}: {addr} was bound"));
    }
}

/// An adopted listener gets the same checks.
#[test]
fn an_adopted_listener_gets_the_same_checks() {
    for (builder, setting) in invalid() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        match builder.listener(listener) {
            Err(Error::InvalidConfig(e)) => assert_eq!(e.setting(), setting),
            other => panic!("{setting}: {other:?}"),
        }
    }
}

/// The values that mean "off" are not errors, nor are the edges of the
/// ranges.
#[test]
fn off_and_edge_values_are_accepted() {
    let server = Server::builder()
        .acceptors(1)
        .overflow(Overflow::Grow { step: 1, max: 1 })
        .backlog(1)
        .max_line_len(1)
        .read_buffer(512)
        .output_water_marks(0, 0)
        .output_limit(0)
        .idle_timeout(Duration::ZERO)
        .frame_timeout(Duration::ZERO)
        .grow_cooldown(Duration::ZERO)
        .write_stall_timeout(Duration::ZERO)
        .linger(Duration::from_millis(1))
        .workers(2)
        .bind("127.0.0.1:0".parse().unwrap());
    assert!(server.is_ok(), "{:?}", server.err());
}

/// `ServerHandle::set_acceptors` gets the builder's check on `acceptors`:
/// 0 slots is the same error, and leaves the budget as it was.
#[test]
fn set_acceptors_at_run_time_gets_the_builders_check() {
    let at_build = Server::builder()
        .acceptors(0)
        .bind("127.0.0.1:0".parse().unwrap())
        .expect_err("0 acceptors at build");
    let server = Server::builder()
        .acceptors(3)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let handle = server.handle();
    let at_run_time = handle
        .set_acceptors(0)
        .expect_err("0 acceptors at run time");
    let Error::InvalidConfig(e) = &at_run_time else {
        panic!("not a configuration error: {at_run_time}");
    };
    assert_eq!(e.setting(), "acceptors");
    assert_eq!(at_run_time.to_string(), at_build.to_string());
    assert_eq!(handle.stats().budget, 3, "the budget is unchanged");
    handle.set_acceptors(1).unwrap();
    assert_eq!(handle.stats().budget, 1, "one slot is a budget");
}
