//! examples/offload.rs, run as a child process and talked to over loopback:
//! replies in request order whatever mix a connection sends, other clients
//! served while the pool works, and SIGTERM waiting for the work in flight.

mod util;

use util::{Client, Example};

/// Numbers above 10,000 go to the pool, the others are answered on the
/// loop: one pipeline mixing both gets its replies in request order.
#[test]
fn a_mixed_pipeline_is_answered_in_request_order() {
    let offload = Example::start("offload", &["--addr", "127.0.0.1:0"]);
    let mut c = Client::connect(offload.addr);
    c.send(b"300000\n10\n20000\n7\n100001\nnot a number\n");
    assert_eq!(c.line(), b"25997 primes below 300000\n");
    assert_eq!(c.line(), b"4 primes below 10\n");
    assert_eq!(c.line(), b"2262 primes below 20000\n");
    assert_eq!(c.line(), b"3 primes below 7\n");
    assert_eq!(c.line(), b"9592 primes below 100001\n");
    assert_eq!(c.line(), b"send a number up to 10000000\n");
}

/// SIGTERM while the pool is counting: a small request from another client
/// was answered meanwhile; the stop waits for the work in flight, delivers
/// it (and what waited behind it) before closing, and the process exits 0.
#[test]
fn sigterm_waits_for_the_work_in_flight_and_exits_zero() {
    let mut offload = Example::start("offload", &["--addr", "127.0.0.1:0"]);
    let mut slow = Client::connect(offload.addr);
    slow.send(b"1000000\n10\n");
    // Served while the pool works; by then the slow client's line, which
    // reached the loop first, has been read.
    let mut other = Client::connect(offload.addr);
    assert_eq!(other.roundtrip(b"5\n"), b"2 primes below 5\n");
    drop(other);
    let status = offload.terminate();
    assert_eq!(slow.line(), b"78498 primes below 1000000\n");
    assert_eq!(slow.line(), b"4 primes below 10\n");
    assert!(slow.read_to_end().is_empty(), "then the end of stream");
    assert!(status.success(), "{status:?}");
    let stderr = offload.stderr();
    assert!(
        stderr.contains("force_closed: 0, replies_unsent: 0"),
        "{stderr}"
    );
    assert!(stderr.contains("pool: 1 numbers counted"), "{stderr}");
}
