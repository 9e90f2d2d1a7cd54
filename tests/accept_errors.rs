//! Out of descriptors: the loop backs off on its own timer and serves the
//! clients that queued meanwhile, without spinning and without a new
//! connection to wake it. Alone in its file because it lowers the process's
//! descriptor limit.

mod util;

use std::time::Duration;

use netpool::Server;
use util::{echo, start, wait_until, Client};

/// EMFILE on accept: one warning, a backoff on the poll timeout (no spinning),
/// then the queued client is served once descriptors free up.
#[test]
fn emfile_backs_off_and_recovers_without_a_new_connection() {
    let server = start(
        Server::builder()
            .accept_backoff(Duration::from_millis(50))
            .spare_descriptor(false),
        echo,
    );
    let handle = server.handle().clone();
    let mut first = Client::connect(server.local_addr());
    assert_eq!(first.roundtrip(b"1\n"), b"1\n");

    let before = util::soft_fd_limit();
    // Room for exactly one more descriptor: the second client's socket. The
    // server's accept of it then fails with EMFILE.
    util::set_soft_fd_limit(util::limit_with_one_free());
    let mut second = Client::connect(server.local_addr());
    second.send(b"2\n");
    wait_until("accept fails", || handle.stats().accept_errors >= 1);

    let cpu_before = util::process_cpu_time();
    assert!(second.silent_for(Duration::from_millis(300)));
    let cpu = util::process_cpu_time() - cpu_before;
    assert!(
        cpu < Duration::from_millis(150),
        "backing off used {cpu:?} of CPU"
    );
    let errors = handle.stats().accept_errors;
    assert!(
        (2..=20).contains(&errors),
        "one retry per 50 ms backoff, not a spin: {errors} errors"
    );

    // Free descriptors: the first client leaves, the server closes its side,
    // and its next retry accepts the queued client (no new connection comes).
    drop(first);
    assert_eq!(second.line(), b"2\n", "the queued client is served");
    util::set_soft_fd_limit(before);
    assert_eq!(handle.stats().accepted, 2);
}
