//! The accept budget and the overflow strategies, as clients see them.

mod util;

use std::time::{Duration, Instant};

use netpool::{Overflow, Server};
use util::{echo, start, wait_until, Client};

/// Under Refuse, the client past the budget gets the message and is closed;
/// a freed slot serves again.
#[test]
fn refuse_sends_the_message_closes_and_frees_slots_serve_again() {
    let server = start(
        Server::builder()
            .acceptors(1)
            .overflow(Overflow::Refuse)
            .refuse_message(b"-ERR max number of clients reached\r\n".to_vec()),
        echo,
    );
    let addr = server.local_addr();
    let mut a = Client::connect(addr);
    assert_eq!(a.roundtrip(b"a\n"), b"a\n");

    let mut b = Client::connect(addr);
    assert_eq!(b.read_to_end(), b"-ERR max number of clients reached\r\n");
    let stats = server.handle().stats();
    assert_eq!((stats.active, stats.refused), (1, 1));

    drop(a);
    wait_until("a's slot is free", || server.handle().stats().active == 0);
    let mut c = Client::connect(addr);
    assert_eq!(c.roundtrip(b"c\n"), b"c\n");
}

/// A refused client that had already sent data still reads the message
/// (the server drains its input first, so the close is no reset).
#[test]
fn refuse_message_survives_early_client_data() {
    let server = start(
        Server::builder()
            .acceptors(1)
            .refuse_message(b"busy\n".to_vec()),
        echo,
    );
    // The one slot is taken (a budget of zero is a configuration error).
    let mut holder = Client::connect(server.local_addr());
    assert_eq!(holder.roundtrip(b"mine\n"), b"mine\n");
    for _ in 0..20 {
        let mut c = Client::connect(server.local_addr());
        c.send(b"hello\n");
        assert_eq!(c.read_to_end(), b"busy\n");
    }
    assert_eq!(server.handle().stats().refused, 20);
}

/// Grow adds exactly `step` slots at a time up to `max`, then refuses.
#[test]
fn grow_adds_step_slots_up_to_max_then_refuses() {
    let server = start(
        Server::builder()
            .acceptors(2)
            .overflow(Overflow::Grow { step: 3, max: 6 })
            .refuse_message(b"full\n".to_vec()),
        echo,
    );
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut c = Client::connect(addr);
        assert_eq!(c.roundtrip(b"x\n"), b"x\n", "client {i} served");
        clients.push(c);
        let budget = server.handle().stats().budget;
        assert_eq!(
            budget,
            if i < 2 {
                2
            } else if i < 5 {
                5
            } else {
                6
            }
        );
    }
    let mut late = Client::connect(addr);
    assert_eq!(late.read_to_end(), b"full\n");
    let stats = server.handle().stats();
    assert_eq!((stats.active, stats.grown, stats.refused), (6, 2, 1));
}

/// Under Pause, a client past the budget waits in the backlog, unanswered
/// and costing no CPU, and is served as soon as a slot frees.
#[test]
fn pause_holds_clients_in_the_backlog_until_a_slot_frees() {
    let server = start(
        Server::builder().acceptors(1).overflow(Overflow::Pause),
        echo,
    );
    let addr = server.local_addr();
    let mut a = Client::connect(addr);
    assert_eq!(a.roundtrip(b"a\n"), b"a\n");

    // The kernel completes b's handshake; netpool does not accept it.
    let mut b = Client::connect(addr);
    b.send(b"b\n");
    let cpu_before = util::process_cpu_time();
    assert!(b.silent_for(Duration::from_millis(300)), "b must wait");
    let cpu = util::process_cpu_time() - cpu_before;
    // A spinning loop would burn the whole 300 ms; an idle one next to nothing.
    assert!(
        cpu < Duration::from_millis(150),
        "paused loop used {cpu:?} of CPU"
    );
    let stats = server.handle().stats();
    assert_eq!((stats.accepted, stats.refused), (1, 0));
    assert!(stats.pause_episodes >= 1);

    drop(a);
    assert_eq!(b.line(), b"b\n", "b is served once a's slot frees");
}

/// Under Pause, waiting clients are served in arrival order.
#[test]
fn pause_serves_waiting_clients_in_order() {
    let server = start(
        Server::builder().acceptors(1).overflow(Overflow::Pause),
        |line: &[u8], conn: &mut netpool::Conn| {
            conn.send(line);
            conn.send(b"\n");
            conn.close();
        },
    );
    let addr = server.local_addr();
    let mut waiting: Vec<Client> = (0..5)
        .map(|i| {
            let mut c = Client::connect(addr);
            c.send(format!("{i}\n").as_bytes());
            c
        })
        .collect();
    let mut served = Vec::new();
    for c in waiting.iter_mut() {
        served.push(c.read_to_end());
    }
    let want: Vec<Vec<u8>> = (0..5).map(|i| format!("{i}\n").into_bytes()).collect();
    assert_eq!(served, want);
}

/// Raising the budget at run time admits a waiting client at once; lowering
/// it keeps every served connection.
#[test]
fn budget_changes_at_run_time() {
    let server = start(
        Server::builder().acceptors(1).overflow(Overflow::Pause),
        echo,
    );
    let handle = server.handle().clone();
    let addr = server.local_addr();
    let mut a = Client::connect(addr);
    assert_eq!(a.roundtrip(b"a\n"), b"a\n");
    let mut b = Client::connect(addr);
    b.send(b"b\n");
    assert!(b.silent_for(Duration::from_millis(100)));

    handle.set_acceptors(2).unwrap();
    assert_eq!(b.line(), b"b\n", "raising the budget admits b");

    handle.set_acceptors(1).unwrap();
    handle.set_overflow(Overflow::Refuse);
    assert_eq!(a.roundtrip(b"still\n"), b"still\n", "lowering kills nobody");
    assert_eq!(b.roundtrip(b"here\n"), b"here\n");
    let mut c = Client::connect(addr);
    assert_eq!(c.read_to_end(), b"", "over the lowered budget: refused");

    drop(a);
    drop(b);
    wait_until("both slots are free", || handle.stats().active == 0);
    let mut d = Client::connect(addr);
    assert_eq!(d.roundtrip(b"d\n"), b"d\n");
    assert_eq!(handle.stats().budget, 1);
}

/// Admission decides before it acts: under Grow, clients that the deny list
/// or the per-address cap refuses never grow the budget (the order is in
/// src/admission.rs). The issue's own reproduction: budget 1, Grow 1 up to
/// 3, one client holding the slot, three connects that must be refused.
#[test]
fn refused_clients_never_grow_the_budget() {
    let server = start(
        Server::builder()
            .acceptors(1)
            .overflow(Overflow::Grow { step: 1, max: 3 })
            .deny("127.0.0.2/32".parse().unwrap())
            .max_per_ip(1)
            .refuse_message(b"busy\n".to_vec()),
        echo,
    );
    let addr = server.local_addr();
    let mut holder = util::connect_from("127.0.0.3", addr);
    assert_eq!(holder.roundtrip(b"mine\n"), b"mine\n");
    for _ in 0..3 {
        let mut denied = util::connect_from("127.0.0.2", addr);
        assert_eq!(denied.read_to_end(), b"", "denied: closed without a word");
        let mut capped = util::connect_from("127.0.0.3", addr);
        assert_eq!(capped.read_to_end(), b"busy\n", "over its address cap");
    }
    let stats = server.handle().stats();
    assert_eq!((stats.denied, stats.refused_per_ip), (3, 3));
    assert_eq!((stats.budget, stats.grown), (1, 0), "never grown for them");
    assert_eq!((stats.active, stats.accepted), (1, 1), "nobody new served");
    // A welcome client still grows it.
    let mut welcome = util::connect_from("127.0.0.4", addr);
    assert_eq!(welcome.roundtrip(b"hi\n"), b"hi\n");
    let stats = server.handle().stats();
    assert_eq!((stats.budget, stats.grown), (2, 1));
}

/// Slots added by Grow go back, a step at a time, once unused for the
/// cooldown: never while the connections served need them, never below
/// the configured budget, and never by closing a connection.
#[test]
fn grown_slots_retire_after_the_cooldown_and_never_below_the_base() {
    const COOLDOWN: Duration = Duration::from_millis(200);
    let server = start(
        Server::builder()
            .acceptors(2)
            .overflow(Overflow::Grow { step: 2, max: 6 })
            .grow_cooldown(COOLDOWN),
        echo,
    );
    let (addr, handle) = (server.local_addr(), server.handle().clone());
    let mut clients: Vec<Client> = (0..6)
        .map(|i| {
            let mut c = Client::connect(addr);
            assert_eq!(c.roundtrip(b"x\n"), b"x\n", "client {i} served");
            c
        })
        .collect();
    assert_eq!(handle.stats().budget, 6);

    // Three leave: three of six slots are unused, more than a step.
    clients.truncate(3);
    let quiet = Instant::now();
    wait_until("three are gone", || handle.stats().active == 3);
    wait_until("a step goes back", || handle.stats().budget < 6);
    assert!(quiet.elapsed() >= COOLDOWN, "not before the cooldown");
    assert_eq!(handle.stats().budget, 4, "one step");
    // Three are served, one slot is unused: less than a step, so it stays.
    // (A bounded look: several cooldowns.)
    let look = Instant::now();
    while look.elapsed() < 4 * COOLDOWN {
        assert_eq!(handle.stats().budget, 4, "a slot in use went back");
        std::thread::sleep(COOLDOWN / 4);
    }
    for c in &mut clients {
        assert_eq!(c.roundtrip(b"still\n"), b"still\n", "nobody was closed");
    }

    // All leave: back to the base, and no further.
    clients.clear();
    wait_until("back to the base", || handle.stats().budget == 2);
    let stats = handle.stats();
    assert_eq!((stats.grown, stats.retired), (2, 2));
    let look = Instant::now();
    while look.elapsed() < 3 * COOLDOWN {
        assert_eq!(handle.stats().budget, 2, "below the base");
        std::thread::sleep(COOLDOWN / 4);
    }
    // The budget grows again when needed.
    let again: Vec<Client> = (0..3).map(|_| Client::connect(addr)).collect();
    for mut c in again {
        assert_eq!(c.roundtrip(b"y\n"), b"y\n");
    }
    assert_eq!(handle.stats().budget, 4);
}
