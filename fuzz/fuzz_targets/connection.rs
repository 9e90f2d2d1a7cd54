//! One connection driven by fuzzer-chosen operations against a real server
//! on loopback: the replies must be what the line protocol says.
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use netpool::{Conn, Server, ServerThread};

const MAX_LINE: usize = 32;

#[derive(Debug, arbitrary::Arbitrary)]
enum Op {
    Write(Vec<u8>),
    HalfClose,
    Reset,
}

fn server() -> SocketAddr {
    static SERVER: OnceLock<ServerThread> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            Server::builder()
                .max_line_len(MAX_LINE)
                .bind("127.0.0.1:0".parse().unwrap())
                .unwrap()
                .spawn(|line: &[u8], conn: &mut Conn| {
                    conn.send(line);
                    conn.send(b"\n");
                })
                .unwrap()
        })
        .local_addr()
}

fn expected(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(end) = rest.iter().position(|b| *b == b'\n') {
        // The limit counts the content: a stripped `\r` does not count.
        let line = &rest[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_LINE {
            break;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
        rest = &rest[end + 1..];
    }
    out
}

fuzz_target!(|ops: Vec<Op>| {
    let addr = server();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut input = Vec::new();
    let mut reset = false;
    for op in ops.iter().take(32) {
        match op {
            Op::Write(bytes) => {
                input.extend_from_slice(bytes);
                if s.write_all(bytes).is_err() {
                    break;
                }
            }
            Op::HalfClose => break,
            Op::Reset => {
                reset = true;
                break;
            }
        }
    }
    if reset {
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    } else {
        let _ = s.shutdown(Shutdown::Write);
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("clean end of stream");
        assert_eq!(got, expected(&input));
    }
    // The server keeps serving.
    let mut b = TcpStream::connect(addr).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    b.write_all(b"ok\n").unwrap();
    let mut reply = [0u8; 3];
    b.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ok\n");
});
