//! Zero-downtime hand-over between two mio loops in one process: the old
//! loop serves a TCP port and a `HandoverServer`; the new one takes the
//! port over with `take_over`. A client storm connecting every few
//! milliseconds throughout must see no failed connect, and connections
//! that wait in the shared accept queue while neither side accepts must
//! be served by the new side.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use netpool::listen::{
    bind_unix, take_over, HandoverEvent, HandoverServer, Inherited, Listener, UnixPathGuard,
};
use util::{wait_until, DEADLINE};

const LISTENER: Token = Token(0);
const HANDOVER: Token = Token(1);

fn ctl_path(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "netpool-handover-{tag}-{}-{}.ctl",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    path
}

/// Accepts on a mio TCP listener until `WouldBlock`, greeting each client
/// with `greeting` and closing. Returns how many were served.
fn greet_all(listener: &mio::net::TcpListener, greeting: &[u8]) -> usize {
    let mut served = 0;
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                // A few bytes into a fresh socket's buffer: never short.
                stream.write_all(greeting).expect("greet");
                served += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return served,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// The old server's loop, shaped as netpool's will be: a listener token, a
/// hand-over token, `ready` after every wake-up, the hand-over deadline in
/// the poll timeout. At `HandedOver` it stops accepting (closes its
/// listener) and says so on `stopped`.
fn run_old(
    listener: TcpListener,
    mut handover: HandoverServer,
    stopped: mpsc::Sender<usize>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(64);
        let mut listener = mio::net::TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .unwrap();
        poll.registry()
            .register(&mut handover, HANDOVER, Interest::READABLE)
            .unwrap();
        let until = Instant::now() + DEADLINE;
        let mut served = 0;
        loop {
            let now = Instant::now();
            assert!(now < until, "the old server was never relieved");
            let wake = handover.deadline().unwrap_or(until).min(until);
            poll.poll(&mut events, Some(wake.saturating_duration_since(now)))
                .unwrap();
            for event in &events {
                if event.token() == LISTENER {
                    served += greet_all(&listener, b"old\n");
                }
            }
            if let Some(HandoverEvent::HandedOver { successor }) = handover.ready(Instant::now()) {
                assert_eq!(successor.pid, Some(std::process::id()));
                // Stop accepting. (A real server would drain its
                // connections now; these were each served at accept.)
                poll.registry().deregister(&mut listener).unwrap();
                drop(listener);
                stopped.send(served).unwrap();
                return;
            }
        }
    })
}

/// What one storm client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Old,
    New,
    Failed(String),
}

/// Connects to `addr` every 2 ms until `stop` (bounded by count and the
/// deadline), reading each greeting.
fn storm(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let until = Instant::now() + DEADLINE;
        for _ in 0..5_000 {
            if stop.load(Ordering::Relaxed) || Instant::now() > until {
                return;
            }
            let outcome = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Err(e) => Seen::Failed(format!("connect: {e}")),
                Ok(mut stream) => {
                    stream.set_read_timeout(Some(DEADLINE)).unwrap();
                    let mut greeting = String::new();
                    match stream.read_to_string(&mut greeting) {
                        Ok(_) if greeting == "old\n" => Seen::Old,
                        Ok(_) if greeting == "new\n" => Seen::New,
                        Ok(_) => Seen::Failed(format!("greeting {greeting:?}")),
                        Err(e) => Seen::Failed(format!("read: {e}")),
                    }
                }
            };
            seen.lock().unwrap().push(outcome);
            // The storm's pace, not a wait for anything.
            thread::sleep(Duration::from_millis(2));
        }
    })
}

fn count(seen: &Mutex<Vec<Seen>>, which: &Seen) -> usize {
    seen.lock().unwrap().iter().filter(|s| *s == which).count()
}

/// A client storm throughout a hand-over sees no failed connect; clients
/// queued while neither side accepts are served by the successor; a second
/// successor is turned away while the hand-over is in progress, and finds
/// no control socket after it.
#[test]
fn storm_through_a_handover_loses_nothing() {
    let _ = env_logger::builder().is_test(true).try_init();
    let ctl = ctl_path("storm");
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let addr = tcp.local_addr().unwrap();
    let offer = vec![Inherited {
        name: Some("web".into()),
        listener: Listener::Tcp(tcp.try_clone().unwrap()),
    }];
    let handover = HandoverServer::bind(&ctl, offer, DEADLINE).unwrap();
    let (stopped_tx, stopped) = mpsc::channel();
    let old = run_old(tcp, handover, stopped_tx);

    let stop_storm = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let storm = storm(addr, stop_storm.clone(), seen.clone());
    wait_until("the old server served 50 of the storm", || {
        count(&seen, &Seen::Old) >= 50
    });

    // The successor, step by step, so that the test can act in between.
    let (to_new, from_main) = mpsc::channel::<&str>();
    let (to_main, from_new) = mpsc::channel::<&str>();
    let stop_new = Arc::new(AtomicBool::new(false));
    let stop = stop_new.clone();
    let ctl2 = ctl.clone();
    let new = thread::spawn(move || {
        let (mut listeners, confirmation) = take_over(&ctl2, DEADLINE).expect("take over");
        assert_eq!(listeners.len(), 1);
        let inherited = listeners.pop().unwrap();
        assert_eq!(inherited.name.as_deref(), Some("web"));
        let Listener::Tcp(tcp) = inherited.listener else {
            panic!("expected TCP")
        };
        assert_eq!(tcp.local_addr().unwrap(), addr, "the same socket");
        to_main.send("offered").unwrap();
        assert_eq!(from_main.recv().unwrap(), "confirm");
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(64);
        let mut listener = mio::net::TcpListener::from_std(tcp);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .unwrap();
        confirmation.confirm().expect("the old server acknowledged");
        to_main.send("confirmed").unwrap();
        // Hold back accepting until the test has queued its clients.
        assert_eq!(from_main.recv().unwrap(), "go");
        let mut served = greet_all(&listener, b"new\n");
        let until = Instant::now() + DEADLINE;
        while !stop.load(Ordering::Relaxed) {
            assert!(Instant::now() < until, "the new server was never stopped");
            poll.poll(&mut events, Some(Duration::from_millis(10)))
                .unwrap();
            served += greet_all(&listener, b"new\n");
        }
        served
    });

    // In progress: a second successor is turned away, with the reason.
    assert_eq!(from_new.recv_timeout(DEADLINE).unwrap(), "offered");
    let err = take_over(&ctl, DEADLINE).expect_err("a second successor");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("already in progress"), "{err}");
    // Both processes hold the socket now, and the old one still accepts.
    let during = seen.lock().unwrap().len();
    wait_until("5 storm connections during the hand-over", || {
        seen.lock().unwrap().len() >= during + 5
    });

    to_new.send("confirm").unwrap();
    assert_eq!(from_new.recv_timeout(DEADLINE).unwrap(), "confirmed");
    let old_served = stopped
        .recv_timeout(DEADLINE)
        .expect("the old server stopped");
    old.join().unwrap();

    // Neither side accepts now: these wait in the kernel's queue.
    let queued: Vec<TcpStream> = (0..20)
        .map(|_| {
            let s = TcpStream::connect_timeout(&addr, DEADLINE).expect("queued connect");
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s
        })
        .collect();
    to_new.send("go").unwrap();
    for mut client in queued {
        let mut greeting = String::new();
        client.read_to_string(&mut greeting).unwrap();
        assert_eq!(greeting, "new\n", "a queued client served by the successor");
    }

    let new_before = count(&seen, &Seen::New);
    wait_until("the new server served 50 more of the storm", || {
        count(&seen, &Seen::New) >= new_before + 50
    });
    stop_storm.store(true, Ordering::Relaxed);
    storm.join().unwrap();
    stop_new.store(true, Ordering::Relaxed);
    let new_served = new.join().unwrap();

    // After: the control socket is gone, so a third would-be successor
    // is told there is nothing to take over.
    let err = take_over(&ctl, DEADLINE).expect_err("nothing to take over");
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");

    let seen = seen.lock().unwrap();
    let failed: Vec<_> = seen
        .iter()
        .filter(|s| matches!(s, Seen::Failed(_)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    // The storm is sequential: every "old" comes before every "new".
    let first_new = seen.iter().position(|s| *s == Seen::New).unwrap();
    assert!(
        seen[first_new..].iter().all(|s| *s == Seen::New),
        "old after new"
    );
    assert_eq!(
        first_new, old_served,
        "the old server served exactly the storm's first"
    );
    assert_eq!(new_served, seen.len() - first_new + 20);
    eprintln!(
        "storm: {} connections, {} by the old server, {} by the new one (+20 queued); 0 failed",
        seen.len(),
        old_served,
        seen.len() - first_new
    );
}

/// TCP and Unix listeners travel together with their names; the Unix
/// socket file stays (the old guard keeps it) and the successor serves it,
/// then removes it through a guard of its own.
#[test]
fn tcp_and_unix_listeners_are_handed_over_together() {
    let ctl = ctl_path("both");
    let path = ctl_path("both-unix").with_extension("sock");
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let (unix, old_guard) = bind_unix(&path, Some(0o660), 16).unwrap();
    let offer = vec![
        Inherited {
            name: Some("api".into()),
            listener: Listener::Tcp(tcp.try_clone().unwrap()),
        },
        Inherited {
            name: None,
            listener: Listener::Unix(unix.try_clone().unwrap()),
        },
    ];
    let mut handover = HandoverServer::bind(&ctl, offer, DEADLINE).unwrap();

    let ctl2 = ctl.clone();
    let new = thread::spawn(move || {
        let (listeners, confirmation) = take_over(&ctl2, DEADLINE)?;
        confirmation.confirm()?;
        io::Result::Ok(listeners)
    });
    // Drive the old side by hand: `ready` in a bounded loop.
    let until = Instant::now() + DEADLINE;
    let event = loop {
        if let Some(event) = handover.ready(Instant::now()) {
            break event;
        }
        assert!(Instant::now() < until, "no hand-over");
        thread::yield_now();
    };
    assert!(matches!(event, HandoverEvent::HandedOver { .. }));
    assert!(handover.is_handed_over());
    assert!(!ctl.exists(), "the control path was given up");
    old_guard.keep();
    drop((tcp, unix, handover));

    let listeners = new.join().unwrap().expect("taken over");
    let shown: Vec<String> = listeners
        .iter()
        .map(|i| format!("{:?} {}", i.name, i.listener))
        .collect();
    assert_eq!(
        shown,
        [
            format!("Some(\"api\") {addr}"),
            format!("None unix:{}", path.display())
        ]
    );
    let Listener::Unix(unix) = &listeners[1].listener else {
        panic!("expected Unix")
    };
    let new_guard = UnixPathGuard::adopt(Path::new(&path)).unwrap();
    let _client = UnixStream::connect(&path).expect("the file still leads to the socket");
    wait_until("the successor accepts on the Unix socket", || {
        unix.accept().is_ok()
    });
    drop(new_guard);
    assert!(!path.exists(), "the successor removed the file");
}
