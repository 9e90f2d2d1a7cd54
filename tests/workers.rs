//! Several event loops behind one listener: the spread, the one exact budget,
//! Pause across loops, stop, stats and handles across loops.

mod util;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use netpool::{
    Builder, Conn, ConnHandle, Disconnect, Distribution, Error, Handler, Overflow, Server,
    ServerThread,
};
use util::{wait_until, Client, DEADLINE};

const ALL: [Distribution; 3] = [
    Distribution::Handoff,
    Distribution::Shared,
    Distribution::ReusePort,
];

/// Starts `workers` loops on 127.0.0.1:0, each with `handler_for(i)`.
fn start_workers<H: Handler>(
    builder: Builder,
    workers: usize,
    handler_for: impl Fn(usize) -> H + Send + Sync + 'static,
) -> ServerThread {
    let _ = env_logger::builder().is_test(true).try_init();
    builder
        .workers(workers)
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind 127.0.0.1:0")
        .spawn_workers(handler_for)
        .expect("spawn the loops")
}

/// A handler that answers `who` with its loop's index and echoes the rest.
fn who(i: usize) -> impl FnMut(&[u8], &mut Conn) + Send + 'static {
    move |line: &[u8], conn: &mut Conn| {
        if line == b"who" {
            conn.send(format!("{i}\n").as_bytes());
        } else {
            conn.send(line);
            conn.send(b"\n");
        }
    }
}

/// Which loop serves `client`.
fn loop_of(client: &mut Client) -> usize {
    let reply = client.roundtrip(b"who\n");
    String::from_utf8(reply).unwrap().trim().parse().unwrap()
}

/// Counts the connections its loops serve at once, and the most ever.
#[derive(Clone, Default)]
struct Gauge {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Handler for Gauge {
    type State = ();

    fn on_connect(&mut self, _: &mut Conn<'_, ()>) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn on_frame(&mut self, line: &[u8], conn: &mut Conn<'_, ()>) {
        conn.send(line);
        conn.send(b"\n");
    }

    fn on_disconnect(&mut self, _: Disconnect<()>) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `threads` threads connect `each` clients at once and hold them; returns
/// how many were served and how many refused (`full`).
fn connect_storm(addr: std::net::SocketAddr, threads: usize, each: usize) -> (usize, usize) {
    let barrier = Arc::new(Barrier::new(threads));
    let tally: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                let (mut served, mut refused) = (0, 0);
                barrier.wait(); // start together
                for _ in 0..each {
                    let mut c = Client::connect(addr);
                    match c.roundtrip(b"x\n").as_slice() {
                        b"x\n" => served += 1,
                        b"full\n" => refused += 1,
                        other => panic!("unexpected reply {other:?}"),
                    }
                    held.push(c);
                }
                barrier.wait(); // every verdict is in; only now let go
                (served, refused)
            })
        })
        .collect();
    tally
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |(s, r), (s2, r2)| (s + s2, r + r2))
}

/// The budget is exact across loops: 8 threads × 10 concurrent connects
/// against 4 loops and 10 slots serve exactly 10, refuse 70, and never
/// serve 11 at once; repeated to catch races, with Refuse and with Grow.
#[test]
fn the_budget_is_exact_under_concurrent_connects_from_many_threads() {
    for distribution in ALL {
        for (overflow, slots) in [
            (Overflow::Refuse, 10),
            (Overflow::Grow { step: 3, max: 16 }, 16),
        ] {
            let gauge = Gauge::default();
            let g = gauge.clone();
            let server = start_workers(
                Server::builder()
                    .acceptors(10)
                    .overflow(overflow)
                    .distribution(distribution)
                    .refuse_message(b"full\n".to_vec()),
                4,
                move |_| g.clone(),
            );
            let handle = server.handle().clone();
            for round in 0..5 {
                let (served, refused) = connect_storm(server.local_addr(), 8, 10);
                let what = format!("{distribution:?} {overflow:?} round {round}");
                assert_eq!((served, refused), (slots, 80 - slots), "{what}");
                assert!(gauge.most.load(Ordering::SeqCst) <= slots, "{what}");
                wait_until("every slot is free again", || {
                    handle.stats().active == 0 && gauge.now.load(Ordering::SeqCst) == 0
                });
            }
            let stats = handle.stats();
            assert_eq!(stats.accepted, 5 * slots as u64);
            assert_eq!(stats.refused, 5 * (80 - slots) as u64);
            server.stop(DEADLINE).unwrap();
        }
    }
}

/// With Handoff, connections are spread over every loop, least loaded first.
#[test]
fn connections_are_served_by_every_loop() {
    let server = start_workers(Server::builder(), 3, who);
    let mut clients: Vec<Client> = (0..9)
        .map(|_| Client::connect(server.local_addr()))
        .collect();
    let mut per_loop = [0usize; 3];
    for c in &mut clients {
        per_loop[loop_of(c)] += 1;
    }
    assert_eq!(per_loop, [3, 3, 3], "least connections: an even spread");
    let stats = server.handle().loop_stats();
    assert_eq!(
        stats.iter().map(|l| l.active).collect::<Vec<_>>(),
        vec![3, 3, 3]
    );
    drop(clients);
    server.stop(DEADLINE).unwrap();
}

/// With a shared listener, or one per loop, every loop accepts, and more
/// than one loop serves.
#[test]
fn a_shared_or_reuseport_listener_is_served_by_more_than_one_loop() {
    for distribution in [Distribution::Shared, Distribution::ReusePort] {
        served_by_more_than_one_loop(distribution);
    }
}

fn served_by_more_than_one_loop(distribution: Distribution) {
    let server = start_workers(Server::builder().distribution(distribution), 2, who);
    let addr = server.local_addr();
    // Which loop wins each accept is up to the scheduler (Shared) or to a
    // hash of the client's port (ReusePort); with clients connecting from
    // several threads at once, both loops win some. Bounded: give up after
    // the deadline.
    let start = Instant::now();
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        assert!(start.elapsed() < DEADLINE, "only loop(s) {seen:?} served");
        let loops: Vec<usize> = (0..4)
            .map(|_| std::thread::spawn(move || loop_of(&mut Client::connect(addr))))
            .map(|t| t.join().unwrap())
            .collect();
        seen.extend(loops);
    }
    server.stop(DEADLINE).unwrap();
}

/// Pause across loops: a slot freed on loop 1 resumes the accept paused on
/// loop 0 (the accepting loop), and the waiting client is served.
#[test]
fn a_slot_freed_on_one_loop_admits_a_client_waiting_for_another() {
    let server = start_workers(
        Server::builder().acceptors(2).overflow(Overflow::Pause),
        2,
        who,
    );
    let addr = server.local_addr();
    let mut a = Client::connect(addr);
    let mut b = Client::connect(addr);
    let (la, lb) = (loop_of(&mut a), loop_of(&mut b));
    assert_eq!((la, lb), (0, 1), "one on each loop");

    let mut waiting = Client::connect(addr);
    waiting.send(b"who\n");
    wait_until("accept paused", || {
        server.handle().stats().pause_episodes >= 1
    });
    assert!(
        waiting.silent_for(Duration::from_millis(50)),
        "served past the budget"
    );
    drop(b); // frees loop 1's slot
    let served_by: usize = String::from_utf8(waiting.line())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(served_by < 2);
    assert_eq!(a.roundtrip(b"still here\n"), b"still here\n");
    drop((a, waiting));
    server.stop(DEADLINE).unwrap();
}

/// Pause never strands a client: 30 clients against 3 slots on 3 loops, each
/// served client leaving after one reply, are all served, whichever loop
/// frees the slot, with every distribution (with `ReusePort`, the clients
/// wait in three accept queues).
#[test]
fn under_pause_every_waiting_client_is_served_as_slots_free_anywhere() {
    for distribution in ALL {
        let server = start_workers(
            Server::builder()
                .acceptors(3)
                .overflow(Overflow::Pause)
                .distribution(distribution),
            3,
            who,
        );
        let addr = server.local_addr();
        let clients: Vec<_> = (0..30)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    assert_eq!(c.roundtrip(b"hi\n"), b"hi\n");
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        wait_until("all slots free", || server.handle().stats().active == 0);
        let stats = server.handle().stats();
        assert_eq!(stats.accepted, 30, "{distribution:?}");
        assert_eq!(stats.refused, 0);
        server.stop(DEADLINE).unwrap();
    }
}

/// Raising the budget at run time resumes a paused accept on every loop.
#[test]
fn a_runtime_budget_change_reaches_every_loop() {
    for distribution in ALL {
        let server = start_workers(
            Server::builder()
                .acceptors(1)
                .overflow(Overflow::Pause)
                .distribution(distribution),
            2,
            who,
        );
        let mut a = Client::connect(server.local_addr());
        assert_eq!(a.roundtrip(b"a\n"), b"a\n");
        let mut b = Client::connect(server.local_addr());
        b.send(b"b\n");
        wait_until("accept paused", || {
            server.handle().stats().pause_episodes >= 1
        });
        server.handle().set_acceptors(2).unwrap();
        assert_eq!(b.line(), b"b\n", "{distribution:?}");
        assert_eq!(server.handle().stats().budget, 2);
        drop((a, b));
        server.stop(DEADLINE).unwrap();
    }
}

/// Dropped when its loop's thread is done with it: counts finished loops.
struct CountsDrops(&'static str, Arc<AtomicUsize>);

impl Handler for CountsDrops {
    type State = ();

    fn on_frame(&mut self, line: &[u8], conn: &mut Conn<'_, ()>) {
        conn.send(line);
        conn.send(b"\n");
        let _ = self.0;
    }
}

impl Drop for CountsDrops {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

/// A graceful stop ends every loop under one deadline and joins every
/// thread: open connections on all loops see their replies, then end of
/// stream, and every loop's handler is dropped before `stop` returns.
#[test]
fn stop_closes_every_loop_and_joins_every_thread() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let server = start_workers(Server::builder(), 3, move |_| {
        CountsDrops("loop", d.clone())
    });
    let handle = server.handle().clone();
    let mut clients: Vec<Client> = (0..6)
        .map(|_| Client::connect(server.local_addr()))
        .collect();
    for c in &mut clients {
        assert_eq!(c.roundtrip(b"x\n"), b"x\n");
    }
    assert!(handle.loop_stats().iter().all(|l| l.active == 2));
    // The clients read to the end (and so close) while the server stops,
    // which ends each connection's lingering close at once.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| std::thread::spawn(move || c.read_to_end()))
        .collect();
    let started = Instant::now();
    let report = server.stop(Duration::from_secs(5)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!((report.open_at_stop, report.force_closed), (6, 0));
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        3,
        "every loop's thread ended"
    );
    for r in readers {
        assert_eq!(r.join().unwrap(), b"", "end of stream, nothing else");
    }
    assert!(matches!(
        handle.request_stop(Duration::ZERO),
        Err(Error::Stopped)
    ));
    // A later stop() gets the same total.
    assert_eq!(handle.stop(Duration::ZERO).unwrap(), report);
}

/// The loops' own stats add up to the server's total.
#[test]
fn per_loop_stats_add_up_to_the_total() {
    let server = start_workers(Server::builder(), 3, who);
    let handle = server.handle().clone();
    let mut clients: Vec<Client> = (0..7)
        .map(|_| Client::connect(server.local_addr()))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        for _ in 0..=i {
            assert_eq!(c.roundtrip(b"line\n"), b"line\n");
        }
    }
    drop(clients.pop());
    wait_until("one client gone", || handle.stats().active == 6);
    let total = handle.stats();
    let loops = handle.loop_stats();
    assert_eq!(handle.workers(), 3);
    assert_eq!(loops.len(), 3);
    assert_eq!(loops.iter().map(|l| l.index).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(loops.iter().map(|l| l.active).sum::<usize>(), total.active);
    assert_eq!(
        loops.iter().map(|l| l.accepted).sum::<u64>(),
        total.accepted
    );
    assert_eq!(loops.iter().map(|l| l.lines).sum::<u64>(), total.lines);
    assert_eq!(
        loops.iter().map(|l| l.bytes_in).sum::<u64>(),
        total.bytes_in
    );
    assert_eq!(
        loops.iter().map(|l| l.bytes_out).sum::<u64>(),
        total.bytes_out
    );
    assert_eq!(total.accepted, 7);
    assert_eq!(total.lines, 28);
    assert!(loops.iter().all(|l| l.accepted >= 2), "{loops:?}");
    drop(clients);
    server.stop(DEADLINE).unwrap();
}

/// A connection handle reaches its connection from any loop: a line from one
/// client is broadcast through handles to clients served by other loops.
#[test]
fn connection_handles_work_across_loops() {
    let room: Arc<Mutex<Vec<ConnHandle>>> = Arc::default();
    let r = room.clone();
    let server = start_workers(Server::builder(), 3, move |i| {
        let room = r.clone();
        move |line: &[u8], conn: &mut Conn| {
            if line == b"join" {
                room.lock().unwrap().push(conn.handle());
                conn.send(format!("{i}\n").as_bytes());
            } else {
                for h in room.lock().unwrap().iter() {
                    h.send([line, b"\n"].concat()).unwrap();
                }
            }
        }
    });
    let mut clients: Vec<Client> = (0..3)
        .map(|_| Client::connect(server.local_addr()))
        .collect();
    let loops: BTreeSet<Vec<u8>> = clients.iter_mut().map(|c| c.roundtrip(b"join\n")).collect();
    assert_eq!(loops.len(), 3, "one client per loop");
    clients[0].send(b"hello all\n");
    for c in &mut clients {
        assert_eq!(c.line(), b"hello all\n");
    }
    drop(clients);
    server.stop(DEADLINE).unwrap();
}

/// `run` and `spawn` take one handler, so a server of several loops refuses
/// them (and says what to use) instead of silently running one loop.
#[test]
fn one_handler_cannot_run_several_loops() {
    let server = Server::builder()
        .workers(2)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let handle = server.handle();
    let err = server.spawn(util::echo).unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig(ref why) if why.setting() == "workers"
            && why.reason().contains("spawn_workers"))
    );
    // The server never ran: its handle says so instead of waiting forever.
    assert!(matches!(handle.stop(Duration::ZERO), Err(Error::Stopped)));
    let err = Server::builder()
        .workers(0)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)));
}

/// `run_workers` serves with loop 0 on the calling thread and the others on
/// their own; it returns, with every loop joined, when the server stops.
#[test]
fn run_workers_blocks_until_every_loop_stopped() {
    let server = Server::builder()
        .workers(2)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let (addr, handle) = (server.local_addr(), server.handle());
    let runner = std::thread::spawn(move || server.run_workers(who));
    let mut clients: Vec<Client> = (0..2).map(|_| Client::connect(addr)).collect();
    let loops: BTreeSet<usize> = clients.iter_mut().map(loop_of).collect();
    assert_eq!(loops.len(), 2);
    drop(clients);
    wait_until("both clients gone", || handle.stats().active == 0);
    let report = handle.stop(DEADLINE).unwrap();
    assert_eq!(report.open_at_stop, 0);
    assert_eq!(runner.join().unwrap().unwrap(), report);
}

/// An adopted listener (socket activation) serves several loops with Handoff
/// and Shared; ReusePort, which needs a socket per loop, is refused.
#[test]
fn an_adopted_listener_serves_several_loops() {
    for distribution in [Distribution::Handoff, Distribution::Shared] {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Server::builder()
            .workers(2)
            .distribution(distribution)
            .listener(std_listener)
            .unwrap()
            .spawn_workers(who)
            .unwrap();
        let mut c = Client::connect(server.local_addr());
        assert_eq!(c.roundtrip(b"adopted\n"), b"adopted\n");
        drop(c);
        server.stop(DEADLINE).unwrap();
    }
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = Server::builder()
        .workers(2)
        .distribution(Distribution::ReusePort)
        .listener(std_listener)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)));
}

/// The per-address cap is one for the whole server: a connection handed to
/// another loop counts, and gives its count back when it closes there.
#[test]
fn the_per_address_cap_holds_across_loops() {
    let server = start_workers(
        Server::builder()
            .max_per_ip(2)
            .refuse_message(b"full\n".to_vec()),
        3,
        who,
    );
    let addr = server.local_addr();
    let mut a = Client::connect(addr);
    let mut b = Client::connect(addr);
    assert_eq!((loop_of(&mut a), loop_of(&mut b)), (0, 1));
    let mut c = Client::connect(addr);
    assert_eq!(c.read_to_end(), b"full\n");
    drop(b); // closes on loop 1
    wait_until("b's count is back", || server.handle().stats().active == 1);
    let mut d = Client::connect(addr);
    assert_eq!(d.roundtrip(b"d\n"), b"d\n");
    assert_eq!(server.handle().stats().refused_per_ip, 1);
    drop((a, d));
    server.stop(DEADLINE).unwrap();
}

/// Paused loops sleep: with every slot busy and clients waiting in every
/// design's queues, three loops use almost no CPU; then every waiting client
/// is served (in any order: with `ReusePort` the queues are per loop).
#[test]
fn paused_loops_do_not_spin() {
    for distribution in ALL {
        // The loops' thread ids, to read their CPU time alone (other tests
        // run in this process at the same time).
        let tids: Arc<Mutex<Vec<i32>>> = Arc::default();
        let t = tids.clone();
        let server = start_workers(
            Server::builder()
                .acceptors(1)
                .overflow(Overflow::Pause)
                .distribution(distribution),
            3,
            move |i| {
                t.lock().unwrap().push(unsafe { libc::gettid() });
                who(i)
            },
        );
        let addr = server.local_addr();
        let mut served = Client::connect(addr);
        assert_eq!(served.roundtrip(b"x\n"), b"x\n");
        let mut waiting: Vec<Client> = (0..6).map(|_| Client::connect(addr)).collect();
        for w in &mut waiting {
            w.send(b"w\n");
        }
        wait_until("accept paused", || {
            server.handle().stats().pause_episodes >= 1
        });
        wait_until("every loop started", || tids.lock().unwrap().len() == 3);
        let tids = tids.lock().unwrap().clone();
        let cpu_before = threads_cpu_ms(&tids);
        assert!(waiting[0].silent_for(Duration::from_millis(300)));
        let cpu = threads_cpu_ms(&tids) - cpu_before;
        assert!(
            cpu <= 50,
            "{distribution:?}: paused loops used {cpu} ms of CPU"
        );
        drop(served);
        // Each waiting client, once served, leaves, freeing the slot for the
        // next: all are served, whichever queue they wait in.
        let readers: Vec<_> = waiting
            .into_iter()
            .map(|mut w| {
                std::thread::spawn(move || {
                    assert_eq!(w.line(), b"w\n");
                })
            })
            .collect();
        for r in readers {
            r.join().unwrap();
        }
        server.stop(DEADLINE).unwrap();
    }
}

/// CPU time (user + system) of the threads `tids` of this process, in
/// milliseconds (clock ticks of 10 ms).
fn threads_cpu_ms(tids: &[i32]) -> u64 {
    tids.iter()
        .map(|tid| {
            let stat =
                std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
            stat_cpu_ms(&stat)
        })
        .sum()
}

/// utime + stime of a `/proc/.../stat` line, in milliseconds.
fn stat_cpu_ms(stat: &str) -> u64 {
    // Fields after the command name (which ends with ')'): utime is the
    // 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    if fields.len() > 12 {
        (fields[11] + fields[12]) * 10
    } else {
        0
    }
}

/// With `pin_cores`, loop `i` runs on core `i` (modulo the cores) only.
#[cfg(feature = "core_affinity")]
#[test]
fn pinned_loops_run_on_one_core_each() {
    // (loop index, the CPUs its thread may run on)
    type Allowed = Vec<(usize, Vec<usize>)>;
    let cpus: Arc<Mutex<Allowed>> = Arc::default();
    let c = cpus.clone();
    let server = start_workers(Server::builder().pin_cores(true), 2, move |i| {
        // The factory runs on the loop's thread, after pinning.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(unsafe { libc::sched_getaffinity(0, size, &mut set) }, 0);
        let allowed = (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect();
        c.lock().unwrap().push((i, allowed));
        who(i)
    });
    wait_until("both loops started", || cpus.lock().unwrap().len() == 2);
    let cores = core_affinity::get_core_ids().unwrap();
    for (i, allowed) in cpus.lock().unwrap().iter() {
        assert_eq!(allowed, &vec![cores[i % cores.len()].id], "loop {i}");
    }
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.roundtrip(b"pinned\n"), b"pinned\n");
    drop(c);
    server.stop(DEADLINE).unwrap();
}

/// A loop that dies (here: its handler factory panics) takes the server down
/// cleanly: the other loops stop within `FAILED_LOOP_GRACE`, every thread is
/// joined, the panic is reported, and no `stop()` waits forever.
#[test]
fn a_failed_loop_stops_the_others() {
    let server = start_workers(Server::builder(), 3, |i| {
        if i == 1 {
            panic!("no handler for loop 1 (a test panic)");
        }
        who(i)
    });
    let handle = server.handle().clone();
    let started = Instant::now();
    assert!(matches!(server.join(), Err(Error::LoopPanicked)));
    assert!(started.elapsed() < netpool::FAILED_LOOP_GRACE + DEADLINE);
    assert!(matches!(handle.stop(Duration::ZERO), Err(Error::Stopped)));
}

/// `Conn::release_slot` on one loop resumes the accept paused on another.
#[test]
fn a_slot_released_by_a_handler_admits_a_client_waiting_for_another_loop() {
    let server = start_workers(
        Server::builder().acceptors(2).overflow(Overflow::Pause),
        2,
        |i| {
            let mut who = who(i);
            move |line: &[u8], conn: &mut Conn| {
                if line == b"release" {
                    conn.release_slot();
                    conn.send(b"released\n");
                } else {
                    who(line, conn);
                }
            }
        },
    );
    let addr = server.local_addr();
    let mut a = Client::connect(addr);
    let mut b = Client::connect(addr);
    assert_eq!((loop_of(&mut a), loop_of(&mut b)), (0, 1));
    let mut waiting = Client::connect(addr);
    waiting.send(b"w\n");
    wait_until("accept paused", || {
        server.handle().stats().pause_episodes >= 1
    });
    assert_eq!(b.roundtrip(b"release\n"), b"released\n"); // on loop 1
    assert_eq!(waiting.line(), b"w\n");
    assert_eq!(b.roundtrip(b"still served\n"), b"still served\n");
    drop((a, b, waiting));
    server.stop(DEADLINE).unwrap();
}

// ----- Measurement -----------------------------------------------------------

/// Measures how the distributions spread connections and what they cost, for
/// the README's "Several loops" section. A measurement, not a check: run it by
/// hand, in release mode, on an otherwise idle machine:
///
/// ```text
/// cargo test --release --test workers -- --ignored --nocapture measure
/// ```
///
/// `NETPOOL_MEASURE_WORKERS` (default 2), `NETPOOL_MEASURE_SHORT` (short
/// connections, default 4000), `NETPOOL_MEASURE_LONG` (long connections,
/// default 400) and `NETPOOL_MEASURE_ROUNDS` (requests per long connection,
/// default 25) size it; 4 client threads share the machine with the loops.
#[test]
#[ignore = "a measurement, run by hand (see its doc comment)"]
fn measure_spread_and_latency() {
    let env = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let workers = env("NETPOOL_MEASURE_WORKERS", 2);
    let short = env("NETPOOL_MEASURE_SHORT", 4000);
    let long = env("NETPOOL_MEASURE_LONG", 400);
    let rounds = env("NETPOOL_MEASURE_ROUNDS", 25);
    const CLIENTS: usize = 4;
    println!(
        "{CLIENTS} client threads; {short} short connections (connect, 1 line, close); \
         {long} long connections x {rounds} lines"
    );
    println!(
        "{:<16} {:>8} {:>22} {:>10} {:>22} {:>22} {:>10}",
        "design",
        "short/s",
        "short p50/p99/max us",
        "loop CPU",
        "short spread",
        "long spread",
        "long p99"
    );
    for (name, n, distribution) in [
        ("1 loop", 1, Distribution::Handoff),
        ("handoff", workers, Distribution::Handoff),
        ("shared", workers, Distribution::Shared),
        ("reuseport", workers, Distribution::ReusePort),
    ] {
        let server = start_workers(
            Server::builder()
                .acceptors(long + 64)
                .backlog(4096)
                .distribution(distribution),
            n,
            who,
        );
        let addr = server.local_addr();
        let handle = server.handle().clone();

        // Many short connections.
        let cpu = loop_cpu_ms();
        let started = Instant::now();
        let mut lat: Vec<Duration> = (0..CLIENTS)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..short / CLIENTS)
                        .map(|_| {
                            let t = Instant::now();
                            let mut c = Client::connect(addr);
                            assert_eq!(c.roundtrip(b"ping\n"), b"ping\n");
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .flat_map(|t| t.join().unwrap())
            .collect();
        let elapsed = started.elapsed();
        wait_until("short connections closed", || handle.stats().active == 0);
        let cpu = loop_cpu_ms() - cpu;
        let short_spread: Vec<u64> = handle.loop_stats().iter().map(|l| l.accepted).collect();
        lat.sort();
        let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p) as usize].as_micros();

        // Many long connections, opened at once, then used in turn.
        let per = long / CLIENTS;
        let barrier = Arc::new(Barrier::new(CLIENTS + 1));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut conns: Vec<Client> = (0..per).map(|_| Client::connect(addr)).collect();
                    for c in &mut conns {
                        assert_eq!(c.roundtrip(b"x\n"), b"x\n");
                    }
                    barrier.wait(); // all open: the spread is read now
                    barrier.wait();
                    let mut lat = Vec::with_capacity(per * rounds);
                    for _ in 0..rounds {
                        for c in &mut conns {
                            let t = Instant::now();
                            assert_eq!(c.roundtrip(b"ping\n"), b"ping\n");
                            lat.push(t.elapsed());
                        }
                    }
                    lat
                })
            })
            .collect();
        barrier.wait();
        let long_spread: Vec<usize> = handle.loop_stats().iter().map(|l| l.active).collect();
        barrier.wait();
        let mut long_lat: Vec<Duration> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        long_lat.sort();
        println!(
            "{:<16} {:>8.0} {:>22} {:>8}ms {:>22} {:>22} {:>8}us",
            format!("{name} x{n}"),
            lat.len() as f64 / elapsed.as_secs_f64(),
            format!(
                "{}/{}/{}",
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                lat.last().unwrap().as_micros()
            ),
            cpu,
            format!("{short_spread:?}"),
            format!("{long_spread:?}"),
            pct(&long_lat, 0.99),
        );
        server.stop(Duration::from_secs(1)).unwrap();
    }
}

/// CPU time (user + system) of this process's loop threads (`netpool-*`), in
/// milliseconds, from `/proc/self/task/*/stat` (clock ticks of 10 ms).
fn loop_cpu_ms() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("netpool-") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        total += stat_cpu_ms(&stat);
    }
    total
}
