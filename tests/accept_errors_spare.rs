//! Out of descriptors with the spare descriptor on: the waiting client gets
//! the refusal message at once instead of hanging in the backlog. Alone in
//! its file because it lowers the process's descriptor limit.

mod util;

use netpool::Server;
use util::{echo, start, wait_until, Client};

/// EMFILE with a spare descriptor: the queued client is accepted, told, and
/// closed; once descriptors free up, new clients are served again.
#[test]
fn emfile_refuses_queued_clients_through_the_spare_descriptor() {
    let server = start(
        Server::builder().refuse_message(b"-ERR busy\r\n".to_vec()),
        echo,
    );
    let handle = server.handle().clone();
    let mut first = Client::connect(server.local_addr());
    assert_eq!(first.roundtrip(b"1\n"), b"1\n");

    let before = util::soft_fd_limit();
    util::set_soft_fd_limit(util::limit_with_one_free());
    let mut second = Client::connect(server.local_addr());
    assert_eq!(second.read_to_end(), b"-ERR busy\r\n");
    let stats = handle.stats();
    assert_eq!(
        (stats.refused_emfile, stats.refused, stats.accepted),
        (1, 0, 1),
        "counted as a refusal for want of descriptors, not of slots"
    );
    assert!(stats.accept_errors >= 1);
    drop(second);
    util::set_soft_fd_limit(before);

    drop(first);
    wait_until("the first connection is closed", || {
        handle.stats().active == 0
    });
    let mut third = Client::connect(server.local_addr());
    assert_eq!(third.roundtrip(b"3\n"), b"3\n");
}
