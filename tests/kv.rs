//! `examples/kv` run as a child process and talked to over loopback: with a
//! small RESP client written here (binary values, 1 MiB values, a deep
//! pipeline, expiry, pub/sub, protocol errors, a huge announced length with
//! the server's memory watched), then with `redis-cli` and `redis-benchmark`
//! (Debian's redis-tools, installed by `.ci/run`).

mod util;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;

use util::{wait_until, Client, Example};

/// A reply, as RESP2 has them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

use Reply::*;

fn bulk(bytes: &[u8]) -> Reply {
    Bulk(Some(bytes.to_vec()))
}

fn ok() -> Reply {
    Simple("OK".into())
}

/// A RESP client over the test's blocking [`Client`] (reads give up after
/// `util::DEADLINE`).
struct Redis {
    c: Client,
}

impl Redis {
    fn connect(addr: SocketAddr) -> Redis {
        Redis {
            c: Client::connect(addr),
        }
    }

    /// Sends one command as an array of bulk strings, without waiting.
    fn send(&mut self, args: &[&[u8]]) {
        let mut out = Vec::new();
        encode(&mut out, args);
        self.c.send(&out);
    }

    fn call(&mut self, args: &[&[u8]]) -> Reply {
        self.send(args);
        self.reply()
    }

    fn reply(&mut self) -> Reply {
        let line = self.c.line();
        let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        assert!(
            line.ends_with(b"\r\n"),
            "a reply line ends with CRLF: {line:?}"
        );
        match line[0] {
            b'+' => Simple(text),
            b'-' => Error(text),
            b':' => Integer(text.parse().unwrap()),
            b'$' => {
                let len: i64 = text.parse().unwrap();
                if len < 0 {
                    return Bulk(None);
                }
                let mut bytes = vec![0u8; len as usize + 2];
                self.c.reader.read_exact(&mut bytes).unwrap();
                assert_eq!(&bytes[len as usize..], b"\r\n");
                bytes.truncate(len as usize);
                Bulk(Some(bytes))
            }
            b'*' => {
                let len: i64 = text.parse().unwrap();
                if len < 0 {
                    return Array(None);
                }
                Array(Some((0..len).map(|_| self.reply()).collect()))
            }
            other => panic!("not a RESP reply: {:?}", other as char),
        }
    }
}

fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn kv(args: &[&str]) -> Example {
    let mut all = vec!["--addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Example::start("kv", &all)
}

/// Keys and values are binary-safe: CR, LF and NUL inside come back as sent.
#[test]
fn binary_keys_and_values() {
    let server = kv(&[]);
    let mut r = Redis::connect(server.addr);
    let (key, value) = (&b"k\r\n\0ey"[..], &b"\r\nval\0ue\r\n$3\r\n\0"[..]);
    assert_eq!(r.call(&[b"SET", key, value]), ok());
    assert_eq!(r.call(&[b"GET", key]), bulk(value));
    assert_eq!(r.call(&[b"GET", b"k"]), Bulk(None));
    assert_eq!(r.call(&[b"EXISTS", key, b"k"]), Integer(1));
}

/// 1 MiB values, each spread over many reads, go in and come out whole.
#[test]
fn one_mebibyte_values() {
    let server = kv(&[]);
    let mut r = Redis::connect(server.addr);
    let a: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let b: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 241) as u8).collect();
    assert_eq!(r.call(&[b"SET", b"a", &a]), ok());
    assert_eq!(r.call(&[b"SET", b"b", &b]), ok());
    assert_eq!(r.call(&[b"GET", b"a"]), bulk(&a));
    assert_eq!(
        r.call(&[b"MGET", b"b", b"none", b"a"]),
        Array(Some(vec![bulk(&b), Bulk(None), bulk(&a)]))
    );
}

/// 10,000 SET+GET pairs sent in one go are all answered, in order, each
/// GET seeing the SET just before it.
#[test]
fn ten_thousand_pipelined_set_get_pairs_in_order() {
    const PAIRS: usize = 10_000;
    let server = kv(&[]);
    let mut r = Redis::connect(server.addr);
    let mut stream = Vec::new();
    for i in 0..PAIRS {
        let (key, value) = (format!("key:{}", i % 100), format!("value {i}"));
        encode(&mut stream, &[b"SET", key.as_bytes(), value.as_bytes()]);
        encode(&mut stream, &[b"GET", key.as_bytes()]);
    }
    // Written from another thread: the replies come back while it writes.
    let mut writer = r.c.stream().try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&stream).unwrap());
    for i in 0..PAIRS {
        assert_eq!(r.reply(), ok(), "SET {i}");
        assert_eq!(r.reply(), bulk(format!("value {i}").as_bytes()), "GET {i}");
    }
    sender.join().unwrap();
    assert_eq!(r.call(&[b"DBSIZE"]), Integer(100));
}

/// A key with a TTL reads as missing once it is past, and keys nobody
/// touches again are removed by the active sweep on the loop's tick: DBSIZE
/// (which counts expired keys not yet removed) falls to the one key without
/// a TTL.
#[test]
fn keys_expire_lazily_and_by_the_sweep() {
    let server = kv(&[]);
    let mut r = Redis::connect(server.addr);
    assert_eq!(r.call(&[b"SET", b"short", b"v", b"PX", b"100"]), ok());
    match r.call(&[b"PTTL", b"short"]) {
        Integer(ms) => assert!((0..=100).contains(&ms), "PTTL {ms}"),
        other => panic!("PTTL: {other:?}"),
    }
    assert_eq!(r.call(&[b"SET", b"forever", b"v"]), ok());
    assert_eq!(r.call(&[b"TTL", b"forever"]), Integer(-1));
    wait_until("the key expires", || {
        r.call(&[b"GET", b"short"]) == Bulk(None)
    });
    for i in 0..300 {
        let key = format!("temp:{i}");
        assert_eq!(r.call(&[b"SET", key.as_bytes(), b"x", b"PX", b"30"]), ok());
    }
    assert!(matches!(r.call(&[b"DBSIZE"]), Integer(n) if n > 1));
    wait_until("the sweep removes the untouched keys", || {
        r.call(&[b"DBSIZE"]) == Integer(1)
    });
    assert_eq!(r.call(&[b"GET", b"forever"]), bulk(b"v"));
}

/// PUBLISH on one connection reaches a SUBSCRIBEd one as a `message` array,
/// across two event loops (`--workers 2`: the two connections are handed to
/// different loops); once the subscriber is gone, nobody receives.
#[test]
fn pub_sub_across_two_connections() {
    for workers in ["1", "2"] {
        let server = kv(&["--workers", workers]);
        let mut sub = Redis::connect(server.addr);
        let mut publisher = Redis::connect(server.addr);
        assert_eq!(
            sub.call(&[b"SUBSCRIBE", b"news", b"sports"]),
            Array(Some(vec![bulk(b"subscribe"), bulk(b"news"), Integer(1)]))
        );
        assert_eq!(
            sub.reply(),
            Array(Some(vec![bulk(b"subscribe"), bulk(b"sports"), Integer(2)]))
        );
        assert_eq!(
            publisher.call(&[b"PUBLISH", b"news", b"it\r\nworks"]),
            Integer(1)
        );
        assert_eq!(
            sub.reply(),
            Array(Some(vec![
                bulk(b"message"),
                bulk(b"news"),
                bulk(b"it\r\nworks")
            ]))
        );
        assert_eq!(
            publisher.call(&[b"PUBLISH", b"weather", b"rain"]),
            Integer(0)
        );
        // A subscribed connection may not run other commands.
        match sub.call(&[b"GET", b"k"]) {
            Error(e) => assert!(e.starts_with("ERR Can't execute 'get'"), "{e}"),
            other => panic!("{other:?}"),
        }
        drop(sub);
        wait_until("the subscriber is gone", || {
            publisher.call(&[b"PUBLISH", b"news", b"again"]) == Integer(0)
        });
    }
}

/// A command error is a reply and the connection goes on; a protocol error
/// gets redis-server's `-ERR Protocol error: ...` and the connection closes.
#[test]
fn protocol_errors_reply_then_close() {
    let server = kv(&[]);
    let mut r = Redis::connect(server.addr);
    match r.call(&[b"NOSUCH", b"x"]) {
        Error(e) => assert_eq!(
            e,
            "ERR unknown command 'NOSUCH', with args beginning with: 'x' "
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.call(&[b"SET", b"n", b"abc"]), ok());
    assert_eq!(
        r.call(&[b"INCR", b"n"]),
        Error("ERR value is not an integer or out of range".into())
    );
    r.c.send(b"PING\r\n");
    assert_eq!(
        r.reply(),
        Simple("PONG".into()),
        "inline commands are served"
    );
    r.c.send(b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$x\r\n");
    assert_eq!(r.reply(), Simple("PONG".into()));
    assert_eq!(
        r.c.read_to_end(),
        b"-ERR Protocol error: invalid bulk length\r\n"
    );
    let mut q = Redis::connect(server.addr);
    assert_eq!(q.call(&[b"QUIT"]), ok());
    assert_eq!(q.c.read_to_end(), b"", "QUIT closes");
}

/// A client announcing a 2^40-byte bulk string is refused from the header,
/// and the server's memory does not move; one announcing 60 MB (under the
/// request bound) and sending a little of it costs the server what it sent,
/// not what it announced: neither its resident memory nor its address space
/// (which would show an allocation never touched) grows by that much.
#[test]
fn a_huge_announced_length_costs_no_memory() {
    const MIB: u64 = 1 << 20;
    let server = kv(&[]);
    let mut warm = Redis::connect(server.addr);
    assert_eq!(warm.call(&[b"PING"]), Simple("PONG".into()));
    let (before, space_before) = (server.rss(), server.virtual_size());

    let mut r = Redis::connect(server.addr);
    r.c.send(b"*2\r\n$3\r\nSET\r\n$1099511627776\r\n");
    assert_eq!(
        r.c.read_to_end(),
        b"-ERR Protocol error: invalid bulk length\r\n"
    );
    let after = server.rss();
    assert!(after < before + MIB, "RSS {before} -> {after}");

    let mut partial = Redis::connect(server.addr);
    partial
        .c
        .send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$60000000\r\n");
    partial.c.send(&[b'x'; 4096]);
    let client = partial.c.stream().local_addr().unwrap();
    wait_until("the server read the partial request", || {
        unread_by_server(server.addr, client) == Some(0)
    });
    let during = server.rss();
    assert!(during < before + 2 * MIB, "RSS {before} -> {during}");
    let space = server.virtual_size();
    assert!(
        space < space_before + 16 * MIB,
        "address space {space_before} -> {space}"
    );
    assert_eq!(warm.call(&[b"PING"]), Simple("PONG".into()));
}

/// How many bytes the server's end of the connection from `client` has
/// received and not read yet (its receive queue, from `/proc/net/tcp`).
fn unread_by_server(server: SocketAddr, client: SocketAddr) -> Option<u64> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => unreachable!("the tests serve on 127.0.0.1"),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let (_, rx) = fields.get(4)?.split_once(':')?;
        u64::from_str_radix(rx, 16).ok()
    })
}

/// `redis-cli` talks to it unchanged: one-shot commands and commands piped
/// to its standard input.
#[test]
fn redis_cli_works() {
    let Some(cli) = installed("redis-cli") else {
        return;
    };
    let server = kv(&[]);
    let port = server.addr.port().to_string();
    let run = |args: &[&str]| -> String {
        let out = Command::new(&cli)
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(&["PING"]), "PONG\n");
    assert_eq!(run(&["SET", "greeting", "hello world"]), "OK\n");
    assert_eq!(run(&["GET", "greeting"]), "hello world\n");
    assert_eq!(run(&["INCRBY", "counter", "41"]), "41\n");
    assert_eq!(run(&["INCR", "counter"]), "42\n");
    assert_eq!(run(&["MSET", "a", "1", "b", "2"]), "OK\n");
    assert_eq!(run(&["MGET", "a", "b", "c"]), "1\n2\n\n");
    assert_eq!(run(&["DBSIZE"]), "4\n");
    // redis-cli prints an error reply and a blank line, as it does for redis-server.
    assert_eq!(
        run(&["NOSUCH"]),
        "ERR unknown command 'NOSUCH', with args beginning with: \n\n"
    );

    let mut piped = Command::new(&cli)
        .args(["-h", "127.0.0.1", "-p", &port])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    piped
        .stdin
        .take()
        .unwrap()
        .write_all(b"SET piped yes\nGET piped\nDEL piped a b\n")
        .unwrap();
    let out = piped.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "OK\nyes\n3\n");
}

/// A short `redis-benchmark` run, plain and pipelined, completes every test
/// with no error (redis-benchmark 7 exits at the first error reply).
#[test]
fn redis_benchmark_runs_without_errors() {
    let Some(bench) = installed("redis-benchmark") else {
        return;
    };
    let server = kv(&["--workers", "2"]);
    let port = server.addr.port().to_string();
    for pipeline in ["1", "16"] {
        let out = Command::new(&bench)
            .args(["-h", "127.0.0.1", "-p", &port, "--csv"])
            .args(["-t", "set,get,incr,mset,ping", "-n", "5000", "-c", "10"])
            .args(["-r", "1000", "-P", pipeline])
            .output()
            .expect("run redis-benchmark");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(
            !stdout.to_lowercase().contains("error") && !stderr.to_lowercase().contains("error"),
            "{stdout}\n{stderr}"
        );
        for test in [
            "\"SET\"",
            "\"GET\"",
            "\"INCR\"",
            "\"MSET (10 keys)\"",
            "\"PING_INLINE\"",
        ] {
            let line = stdout
                .lines()
                .find(|l| l.starts_with(test))
                .unwrap_or_else(|| panic!("no {test} in\n{stdout}"));
            let rps: f64 = line
                .split(',')
                .nth(1)
                .unwrap()
                .trim_matches('"')
                .parse()
                .unwrap();
            assert!(rps > 0.0, "{line}");
        }
    }
    let mut r = Redis::connect(server.addr);
    assert!(matches!(r.call(&[b"DBSIZE"]), Integer(n) if n > 0));
}

/// The path of `tool` if it is installed; if not, says the test is skipped.
fn installed(tool: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        eprintln!("skipped: {tool} is not installed (Debian: apt-get install redis-tools)");
    }
    found
}
