//! Properties over real sockets: whatever a client writes, in whatever
//! pieces, the echo server answers exactly what the line protocol says, and
//! keeps serving others.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;

use netpool::{Server, ServerThread};
use proptest::prelude::*;
use util::{echo, start, Client, DEADLINE};

const MAX_LINE: usize = 48;

fn server() -> SocketAddr {
    static SERVER: OnceLock<ServerThread> = OnceLock::new();
    SERVER
        .get_or_init(|| start(Server::builder().max_line_len(MAX_LINE), echo))
        .local_addr()
}

/// What the protocol says the client gets back for `input` followed by a
/// half-close: each complete line echoed (one `\r` stripped) until a line
/// longer than the limit, which ends the connection; a trailing fragment is
/// dropped.
fn expected(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(end) = rest.iter().position(|b| *b == b'\n') {
        // The limit counts the content: a stripped `\r` does not count.
        let line = &rest[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_LINE {
            return out;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
        rest = &rest[end + 1..];
    }
    out
}

fn chunk() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            4 => Just(b'a'),
            2 => Just(b'\n'),
            1 => Just(b'\r'),
            1 => Just(b'\0'),
            1 => any::<u8>(),
        ],
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any sequence of writes, then a half-close, yields exactly the
    /// protocol's answer and a clean end of stream; a bystander is served.
    #[test]
    fn any_writes_get_the_protocol_answer(chunks in proptest::collection::vec(chunk(), 0..12)) {
        let addr = server();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut input = Vec::new();
        for c in &chunks {
            input.extend_from_slice(c);
            // After an over-long line the server closes; later writes may fail.
            if stream.write_all(c).is_err() {
                break;
            }
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut got = Vec::new();
        let read = stream.read_to_end(&mut got);
        prop_assert!(read.is_ok(), "{read:?}");
        prop_assert_eq!(got, expected(&input));

        let mut bystander = Client::connect(addr);
        prop_assert_eq!(bystander.roundtrip(b"still here\n"), b"still here\n".to_vec());
    }
}

#[test]
fn the_model_matches_the_documented_protocol() {
    assert_eq!(expected(b"a\r\nb\nc"), b"a\nb\n");
    assert_eq!(
        expected(&[b"ok\n".as_slice(), &[b'x'; MAX_LINE + 1], b"\nlost\n"].concat()),
        b"ok\n"
    );
}
