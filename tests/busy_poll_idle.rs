//! An idle server with busy-polling on blocks: the loop spins only after a
//! turn that found work. Alone in its test binary, so that the process's
//! CPU time is this server's (and this test's client's).

mod util;

use std::time::Duration;

use netpool::Server;
use util::{echo, start, Client};

/// An idle server blocks: no spin without work, so it uses next to no CPU.
#[test]
fn an_idle_busy_polling_loop_uses_no_cpu() {
    let server = start(Server::builder().busy_poll(Duration::from_millis(2)), echo);
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.roundtrip(b"warm\n"), b"warm\n");
    let before = util::process_cpu_time();
    let spins_before = server.handle().stats();
    assert!(c.silent_for(Duration::from_millis(400)));
    let cpu = util::process_cpu_time() - before;
    // A loop spinning all the time would burn the whole 400 ms.
    assert!(
        cpu < Duration::from_millis(100),
        "idle loop used {cpu:?} of CPU"
    );
    let spins = server.handle().stats();
    assert!(
        spins.busy_poll_micros - spins_before.busy_poll_micros < 50_000,
        "no spinning while idle: {} µs",
        spins.busy_poll_micros - spins_before.busy_poll_micros
    );
}
