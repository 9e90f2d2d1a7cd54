//! Replies deferred to other threads over loopback (issue 14): order kept
//! whatever the workers do, a dropped slot, the bound on outstanding
//! replies, a stop with work in flight, the bounded cross-thread queue, and
//! closures run on the loop.

mod util;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use netpool::{Conn, ConnHandle, FillError, ReplySlot, Server};
use util::{expect_lines, fill_command_queue, start, wait_until, Client, DEADLINE};

/// How long a test watches for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);

/// A job for the pool: a slot and the reply it must get.
type Job = (ReplySlot, Vec<u8>);

/// A pool of worker threads that fill reply slots out of order: each takes
/// every job waiting (up to 16) and fills them in a shuffled order, and
/// several workers race each other.
struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(workers: usize) -> Pool {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..workers)
            .map(|w| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ (w as u64 + 1);
                    loop {
                        let mut batch = Vec::new();
                        {
                            let rx = rx.lock().unwrap();
                            match rx.recv() {
                                Ok(job) => batch.push(job),
                                Err(_) => return,
                            }
                            while batch.len() < 16 {
                                match rx.try_recv() {
                                    Ok(job) => batch.push(job),
                                    Err(_) => break,
                                }
                            }
                        }
                        while !batch.is_empty() {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            let (slot, reply) = batch.swap_remove(seed as usize % batch.len());
                            // A connection closed meanwhile: nothing to do.
                            let _ = slot.send_wait(reply);
                        }
                    }
                })
            })
            .collect();
        Pool {
            jobs: Some(tx),
            threads,
        }
    }

    fn sender(&self) -> mpsc::Sender<Job> {
        self.jobs.clone().unwrap()
    }

    /// Waits for the workers, once every sender is gone (the server
    /// stopped). A test that fails before never waits for them.
    fn finish(mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

/// The handler of the order tests: `f N` is answered at once, `s N` on the
/// pool; either way the reply is `N`.
fn fast_or_slow(pool: mpsc::Sender<Job>) -> impl FnMut(&[u8], &mut Conn) + Send + 'static {
    move |line: &[u8], conn: &mut Conn| {
        let reply = [&line[2..], b"\n"].concat();
        if line.starts_with(b"s ") {
            pool.send((conn.defer(), reply)).unwrap();
        } else {
            conn.send(&reply);
        }
    }
}

/// Thousands of requests pipelined on each of several connections, a random
/// mix answered at once and on a pool of workers that finish out of order:
/// every connection gets every reply, in request order. The pipeline is far
/// deeper than the bound on outstanding replies, so reading pauses and
/// resumes all along.
#[test]
fn deep_mixed_pipelines_keep_request_order() {
    const CONNS: usize = 4;
    const LINES: usize = 5_000;
    let pool = Pool::new(4);
    let server = start(Server::builder(), fast_or_slow(pool.sender()));
    let addr = server.local_addr();
    let clients: Vec<JoinHandle<()>> = (0..CONNS)
        .map(|c| {
            std::thread::spawn(move || {
                let stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(DEADLINE)).unwrap();
                stream.set_write_timeout(Some(DEADLINE)).unwrap();
                let mut writer = stream.try_clone().unwrap();
                let sending = std::thread::spawn(move || {
                    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ c as u64;
                    let mut out = Vec::new();
                    for n in 0..LINES {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let kind = if seed % 3 == 0 { 'f' } else { 's' };
                        out.extend_from_slice(format!("{kind} {n}\n").as_bytes());
                    }
                    writer.write_all(&out).unwrap();
                });
                let mut reader = BufReader::new(stream);
                let what = format!("connection {c}");
                expect_lines(&mut reader, LINES, &what, |n| format!("{n}\n"));
                sending.join().unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let stats = server.handle().stats();
    assert_eq!(stats.lines, (CONNS * LINES) as u64);
    assert_eq!(stats.reply_slots_dropped, 0);
    assert_eq!(server.stop(DEADLINE).unwrap().force_closed, 0);
    pool.finish();
}

/// A slot dropped unfilled, on the loop or on a worker, gives its place up:
/// the replies behind it still come, and the drop is counted.
#[test]
fn a_dropped_slot_does_not_stall_the_connection() {
    let (tx, rx) = mpsc::channel::<ReplySlot>();
    let worker = std::thread::spawn(move || {
        for slot in rx {
            drop(slot);
        }
    });
    let server = start(
        Server::builder(),
        move |line: &[u8], conn: &mut Conn| match line {
            b"drop here" => drop(conn.defer()),
            b"drop there" => tx.send(conn.defer()).unwrap(),
            _ => {
                conn.send(line);
                conn.send(b"\n");
            }
        },
    );
    let mut client = Client::connect(server.local_addr());
    client.send(b"a\ndrop here\nb\ndrop there\nc\n");
    assert_eq!(client.line(), b"a\n");
    assert_eq!(client.line(), b"b\n");
    assert_eq!(client.line(), b"c\n");
    let handle = server.handle().clone();
    wait_until("both drops are counted", || {
        handle.stats().reply_slots_dropped == 2
    });
    drop(client);
    server.stop(DEADLINE).unwrap();
    worker.join().unwrap();
}

/// At the bound on outstanding replies the loop stops reading the
/// connection; once half of them are delivered it reads again.
#[test]
fn the_outstanding_bound_pauses_reading_and_resumes_it() {
    let (tx, rx) = mpsc::channel::<ReplySlot>();
    let server = start(
        Server::builder().max_deferred_replies(4),
        move |_: &[u8], conn: &mut Conn| tx.send(conn.defer()).unwrap(),
    );
    let handle = server.handle().clone();
    let mut client = Client::connect(server.local_addr());
    // One line per read, so that the count is exact.
    for n in 1..=4u64 {
        client.send(format!("{n}\n").as_bytes());
        wait_until("the line is read", || handle.stats().lines == n);
    }
    client.send(b"5\n");
    std::thread::sleep(QUIET);
    assert_eq!(handle.stats().lines, 4, "four outstanding: not reading");
    let slots: Vec<ReplySlot> = rx.iter().take(4).collect();
    let mut slots = slots.into_iter();
    slots.next().unwrap().send(b"r1\n".to_vec()).unwrap();
    assert_eq!(client.line(), b"r1\n");
    std::thread::sleep(QUIET);
    assert_eq!(handle.stats().lines, 4, "three outstanding: still not");
    slots.next().unwrap().send(b"r2\n".to_vec()).unwrap();
    assert_eq!(client.line(), b"r2\n");
    wait_until("reading resumes at half the bound", || {
        handle.stats().lines == 5
    });
    for (n, slot) in slots.chain(rx.recv()).enumerate() {
        slot.send(format!("r{}\n", n + 3)).unwrap();
    }
    for n in 3..=5 {
        assert_eq!(client.line(), format!("r{n}\n").as_bytes());
    }
    drop(client);
    server.stop(DEADLINE).unwrap();
}

/// A handler that defers every line and hands the slots over, with the
/// reply each should get.
fn deferring(tx: mpsc::Sender<Job>) -> impl FnMut(&[u8], &mut Conn) + Send + 'static {
    move |line: &[u8], conn: &mut Conn| {
        let reply = [line, b"\n"].concat();
        tx.send((conn.defer(), reply)).unwrap();
    }
}

/// Pipelines `n` numbered lines and waits until the server has read them.
fn pipeline(server: &netpool::ServerThread, n: usize) -> Client {
    let mut client = Client::connect(server.local_addr());
    let lines: String = (0..n).map(|i| format!("{i}\n")).collect();
    client.send(lines.as_bytes());
    let handle = server.handle().clone();
    wait_until("every line is read", || handle.stats().lines == n as u64);
    client
}

/// A graceful stop keeps a connection whose replies are still being worked
/// on open until they are delivered: nothing already read is dropped.
#[test]
fn a_stop_with_work_in_flight_delivers_every_reply() {
    let (tx, rx) = mpsc::channel::<Job>();
    let server = start(Server::builder().max_deferred_replies(1000), deferring(tx));
    let mut client = pipeline(&server, 100);
    let stopping = std::thread::spawn(move || server.stop(DEADLINE));
    assert!(client.silent_for(QUIET), "no reply before the workers");
    // The workers finish, last first.
    let mut jobs: Vec<Job> = rx.iter().take(100).collect();
    while let Some((slot, reply)) = jobs.pop() {
        slot.send_wait(reply).unwrap();
    }
    for i in 0..100 {
        assert_eq!(client.line(), format!("{i}\n").as_bytes());
    }
    assert!(client.read_to_end().is_empty(), "then the end of stream");
    drop(client);
    let report = stopping.join().unwrap().unwrap();
    assert_eq!(
        (
            report.open_at_stop,
            report.force_closed,
            report.replies_unsent
        ),
        (1, 0, 0)
    );
}

/// Past the stop's grace period, a connection still owed replies is closed
/// anyway, and the report says how many replies were never written.
#[test]
fn a_stop_past_its_deadline_force_closes_and_says_so() {
    let (tx, rx) = mpsc::channel::<Job>();
    let server = start(Server::builder().max_deferred_replies(1000), deferring(tx));
    let mut client = pipeline(&server, 50);
    let report = server.stop(Duration::from_millis(200)).unwrap();
    assert_eq!(
        (report.force_closed, report.replies_unsent),
        (1, 50),
        "{report:?}"
    );
    assert!(client.read_to_end().is_empty(), "no reply, then the end");
    // The loop is gone: a late worker hears so.
    let (slot, reply) = rx.recv().unwrap();
    assert!(matches!(slot.send(reply), Err(FillError::Stopped)));
}

/// The cross-thread queue is bounded in bytes: while the loop is busy, sends
/// past the bound fail with `Full` and queue nothing, a reply slot comes
/// back with its reply, and a waiting send waits; once the loop takes its
/// queue, everything queued arrives, once, in order.
#[test]
fn the_cross_thread_queue_reports_full() {
    let (to_test, from_loop) = mpsc::channel::<(ConnHandle, ReplySlot)>();
    let (release, released) = mpsc::channel::<()>();
    let server = start(
        Server::builder().command_queue_limit(4096),
        move |_: &[u8], conn: &mut Conn| {
            to_test.send((conn.handle(), conn.defer())).unwrap();
            // Keep the loop busy (a test only: a handler must not block).
            released.recv_timeout(DEADLINE).unwrap();
        },
    );
    let mut client = Client::connect(server.local_addr());
    client.send(b"block\n");
    let (handle, slot) = from_loop.recv_timeout(DEADLINE).unwrap();
    let sent = fill_command_queue(&handle, 4096);
    assert!(sent > 0);
    let Err(FillError::Full(slot, reply)) = slot.send(b"slot\n".to_vec()) else {
        panic!("the slot's reply must be refused too")
    };
    let stats = server.handle().stats();
    assert_eq!(stats.commands_refused_full, 2);
    // A send that waits, waits for the loop.
    let done = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (handle, done) = (handle.clone(), done.clone());
        std::thread::spawn(move || {
            handle.send_wait("last\n").unwrap();
            done.store(true, Ordering::SeqCst);
        })
    };
    std::thread::sleep(QUIET);
    assert!(!done.load(Ordering::SeqCst), "send_wait waits while full");
    release.send(()).unwrap();
    waiter.join().unwrap();
    slot.send_wait(reply).unwrap();
    // The slot was reserved before every send: its reply comes first.
    assert_eq!(client.line(), b"slot\n");
    for i in 0..sent {
        assert_eq!(client.line(), format!("{i:04}\n").as_bytes());
    }
    assert_eq!(client.line(), b"last\n");
    drop(client);
    server.stop(DEADLINE).unwrap();
}

/// Many threads sending to many connections through a small queue (so that
/// they wait for room all the time): every message arrives exactly once, and
/// each thread's messages in the order it sent them.
#[test]
fn many_threads_to_many_connections_lose_and_duplicate_nothing() {
    const CONNS: usize = 6;
    const THREADS: usize = 6;
    const EACH: usize = 1_000;
    let (tx, rx) = mpsc::channel::<ConnHandle>();
    let server = start(
        Server::builder().command_queue_limit(2048),
        move |_: &[u8], conn: &mut Conn| tx.send(conn.handle()).unwrap(),
    );
    let mut clients: Vec<Client> = (0..CONNS)
        .map(|_| {
            let mut c = Client::connect(server.local_addr());
            c.send(b"hello\n");
            c
        })
        .collect();
    let handles: Vec<ConnHandle> = rx.iter().take(CONNS).collect();
    let senders: Vec<JoinHandle<()>> = (0..THREADS)
        .map(|t| {
            let handles = handles.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    for h in &handles {
                        h.send_wait(format!("{t} {i}\n")).unwrap();
                    }
                }
            })
        })
        .collect();
    for client in &mut clients {
        let mut next = [0usize; THREADS];
        for _ in 0..THREADS * EACH {
            let line = String::from_utf8(client.line()).unwrap();
            let (t, i) = line.trim_end().split_once(' ').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "thread {t}'s messages in order, once each");
            next[t] += 1;
        }
        assert_eq!(next, [EACH; THREADS]);
    }
    for s in senders {
        s.join().unwrap();
    }
    assert!(clients[0].silent_for(Duration::from_millis(50)), "no extra");
    drop(clients);
    server.stop(DEADLINE).unwrap();
}

/// Per-connection state for the `run` tests.
#[derive(Default)]
struct Count(u32);

/// A closure run on the loop sees the connection's state and sends in order
/// with the handler's own replies, behind a deferred one; once the
/// connection is gone, it does not run, and is counted stale.
#[test]
fn closures_run_on_the_loop_in_order_and_only_while_the_connection_lives() {
    struct Counting(mpsc::Sender<(ConnHandle, ReplySlot)>);
    impl netpool::Handler for Counting {
        type State = Count;
        fn on_frame(&mut self, _: &[u8], conn: &mut Conn<'_, Count>) {
            conn.state().0 += 1;
            let slot = conn.defer();
            self.0.send((conn.handle(), slot)).unwrap();
        }
    }
    let (tx, rx) = mpsc::channel();
    let server = start(Server::builder(), Counting(tx));
    let mut client = Client::connect(server.local_addr());
    client.send(b"x\n");
    let (handle, slot) = rx.recv_timeout(DEADLINE).unwrap();
    handle
        .run(|conn: &mut Conn<'_, Count>| {
            let lines = conn.state().0;
            conn.send(format!("run saw {lines} line\n").as_bytes());
        })
        .unwrap();
    slot.send(b"deferred\n".to_vec()).unwrap();
    assert_eq!(client.line(), b"deferred\n");
    assert_eq!(client.line(), b"run saw 1 line\n");
    drop(client);
    let h = server.handle().clone();
    wait_until("the connection is gone", || h.stats().active == 0);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    handle
        .run(move |_: &mut Conn<'_, Count>| r.store(true, Ordering::SeqCst))
        .unwrap();
    wait_until("the closure is counted stale", || {
        h.stats().stale_handle_commands == 1
    });
    assert!(!ran.load(Ordering::SeqCst));
    server.stop(DEADLINE).unwrap();
}

/// `run` checks, where it is called, that its closure expects the handler's
/// state type.
#[test]
#[should_panic(expected = "not the handler's State")]
fn run_with_the_wrong_state_type_panics_at_the_call() {
    let (tx, rx) = mpsc::channel();
    let server = start(Server::builder(), move |_: &[u8], conn: &mut Conn| {
        tx.send(conn.handle()).unwrap()
    });
    let mut client = Client::connect(server.local_addr());
    client.send(b"x\n");
    let handle: ConnHandle = rx.recv_timeout(DEADLINE).unwrap();
    let _ = handle.run(|_: &mut Conn<'_, Count>| {});
}
