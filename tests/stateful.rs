//! examples/stateful.rs, run as a child process: per-connection state, a
//! reply from another thread, the budget changed from the handler, the
//! counters it reads, and the totals `on_disconnect` keeps.

mod util;

use util::{wait_until, Client, Example};

fn line(client: &mut Client) -> String {
    String::from_utf8(client.line()).expect("UTF-8 replies")
}

fn ask(client: &mut Client, text: &str) -> String {
    client.send(format!("{text}\n").as_bytes());
    line(client)
}

/// Every command of the example's header does what the header says, and
/// the example stops cleanly on SIGTERM.
#[test]
fn the_stateful_example_keeps_state_and_answers_every_command() {
    let mut example = Example::start("stateful", &["--addr", "127.0.0.1:0"]);
    let mut ada = Client::connect(example.addr);
    assert!(line(&mut ada).starts_with("welcome, "));
    assert_eq!(ask(&mut ada, "hi"), "stranger, line 1: hi\n");
    assert_eq!(ask(&mut ada, "name ada"), "hello, ada\n");
    assert_eq!(ask(&mut ada, "hi again"), "ada, line 3: hi again\n");

    // The reply from another thread comes after the lines sent meanwhile.
    ada.send(b"later tea\n");
    assert_eq!(ask(&mut ada, "meanwhile"), "ada, line 5: meanwhile\n");
    assert_eq!(line(&mut ada), "later, for ada: tea\n");

    assert_eq!(
        ask(&mut ada, "stats"),
        "served now 1 of 1024; accepted 1, refused 0; \
         you (ada): 6 lines; ended: 0 connections, 0 lines\n"
    );

    // One slot, taken by ada: the next client is refused.
    assert_eq!(ask(&mut ada, "budget 1"), "budget: 1 slots (was 1024)\n");
    let mut refused = Client::connect(example.addr);
    assert_eq!(refused.read_to_end(), b"");
    // No slot at all is refused by the library, as at build, and the
    // budget stays at one (bob is served below).
    assert_eq!(
        ask(&mut ada, "budget 0"),
        "budget: invalid configuration: acceptors: must be at least 1\n"
    );
    assert_eq!(
        ask(&mut ada, "budget none"),
        "budget takes a number of slots, at least 1\n"
    );

    // Once ada's connection lingers (our FIN sent), her slot serves the next
    // client; once she hangs up, it is removed and on_disconnect keeps her
    // totals.
    assert_eq!(ask(&mut ada, "quit"), "bye, ada\n");
    assert_eq!(ada.read_to_end(), b"", "closed after the goodbye");
    let mut bob = Client::connect(example.addr);
    assert!(line(&mut bob).starts_with("welcome, "));
    drop(ada);
    let mut stats = String::new();
    wait_until("ada's connection is removed", || {
        stats = ask(&mut bob, "stats");
        !stats.contains("ended: 0 connections")
    });
    assert!(
        stats.starts_with("served now 1 of 1; accepted 2, refused 1; you (stranger): "),
        "{stats}"
    );
    assert!(
        stats.ends_with("; ended: 1 connections, 10 lines\n"),
        "{stats}"
    );

    assert!(example.terminate().success(), "{}", example.stderr());
}
