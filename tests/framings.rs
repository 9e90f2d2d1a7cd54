//! Every built-in framing end to end, through a real server over loopback:
//! a stream split at every byte (each part a read of its own on the server),
//! thousands of frames pipelined in one write, frames at the bound and one
//! byte either side, malformed frames, and an oversized length header that
//! closes only its own connection. Then `examples/echo.rs --framing ...` as
//! a child process.

mod util;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use netpool::{
    resp, Builder, Command, Conn, Framing, Handler, LengthPrefixed, Lines, Raw, Resp, Server,
    ServerThread,
};
use util::{echo, start, wait_until, Client, Example};

// ----- Handlers: each echoes a frame in its own framing ---------------------

/// Echoes a payload with the framing's own header.
fn prefixed_echo(framing: LengthPrefixed) -> impl FnMut(&[u8], &mut Conn) + Send {
    let mut header = Vec::new();
    move |payload: &[u8], conn: &mut Conn| {
        header.clear();
        framing.encode_header(payload.len(), &mut header).unwrap();
        conn.send(&header);
        conn.send(payload);
    }
}

/// Answers a command with its arguments, as an array of bulk strings: the
/// client can tell exactly which arguments the server saw.
fn resp_echo(cmd: Command<'_>, conn: &mut Conn) {
    resp::array_header(conn, cmd.len()).unwrap();
    for arg in cmd {
        resp::bulk(conn, arg).unwrap();
    }
}

fn raw_echo(bytes: &[u8], conn: &mut Conn) {
    conn.send(bytes);
}

// ----- What a client sends, and expects back --------------------------------

fn line(payload: &[u8]) -> Vec<u8> {
    [payload, b"\n"].concat()
}

fn prefixed(framing: &LengthPrefixed, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    framing.encode_header(payload.len(), &mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

/// A RESP request (an array of bulk strings); also what `resp_echo` answers
/// to any command with these arguments.
fn request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    resp::array_header(&mut out, args.len()).unwrap();
    for arg in args {
        resp::bulk(&mut out, arg).unwrap();
    }
    out
}

/// Payloads that exercise framing: empty, binary, bytes that look like
/// delimiters or headers of the other framings.
fn payloads() -> Vec<Vec<u8>> {
    vec![
        b"hello".to_vec(),
        Vec::new(),
        b"a\r\nb\0c".to_vec(),
        vec![0xff; 3],
        b"*1\r\n$4\r\n".to_vec(),
        (0..=40u8).collect(),
    ]
}

/// Sends `data`, and returns when the server has read all of it (its
/// `bytes_in` counter is at `sent_before + data.len()`), so that what is
/// sent next arrives in a read of its own.
fn send_as_one_read(server: &ServerThread, c: &mut Client, data: &[u8], sent: &mut u64) {
    if data.is_empty() {
        return;
    }
    c.send(data);
    *sent += data.len() as u64;
    let want = *sent;
    wait_until("the server read what was sent", || {
        server.handle().stats().bytes_in >= want
    });
}

fn read_exactly(c: &mut Client, len: usize) -> Vec<u8> {
    let mut got = vec![0u8; len];
    c.reader.read_exact(&mut got).expect("the replies");
    got
}

/// Serves `handler` on `builder` and sends `stream` cut in two at every
/// byte, then byte by byte, each part a read of its own on the server; the
/// replies must be `expected` every time, whatever the cut.
fn survives_every_split<F: Framing, H: Handler<F> + Send>(
    builder: Builder<F>,
    handler: H,
    stream: &[u8],
    expected: &[u8],
) {
    let server = start(builder, handler);
    let mut c = Client::connect(server.local_addr());
    let mut sent = 0;
    for cut in 0..=stream.len() {
        send_as_one_read(&server, &mut c, &stream[..cut], &mut sent);
        send_as_one_read(&server, &mut c, &stream[cut..], &mut sent);
        assert_eq!(
            read_exactly(&mut c, expected.len()),
            expected,
            "cut at {cut}"
        );
    }
    for byte in stream {
        send_as_one_read(&server, &mut c, std::slice::from_ref(byte), &mut sent);
    }
    assert_eq!(
        read_exactly(&mut c, expected.len()),
        expected,
        "byte by byte"
    );
    assert_eq!(server.handle().stats().handler_panics, 0);
}

/// Sends `count` frames from `frame(i)` in one go from another thread (the
/// replies come back while it writes), and checks every reply in order.
fn answers_a_deep_pipeline<F: Framing, H: Handler<F> + Send>(
    builder: Builder<F>,
    handler: H,
    count: usize,
    frame: impl Fn(usize) -> (Vec<u8>, Vec<u8>),
) {
    let server = start(builder, handler);
    let mut c = Client::connect(server.local_addr());
    let (mut stream, mut expected) = (Vec::new(), Vec::new());
    for i in 0..count {
        let (sent, reply) = frame(i);
        stream.extend_from_slice(&sent);
        expected.extend_from_slice(&reply);
    }
    let mut writer = c.stream().try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&stream).unwrap());
    let got = read_exactly(&mut c, expected.len());
    sender.join().unwrap();
    // Compare frame by frame first, so that a failure names a place.
    let at = got.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(at, None, "replies differ from byte {at:?}");
    assert_eq!(server.handle().stats().lines, count as u64);
}

/// `ok` (each sent as the only request of a fresh connection) is answered
/// with `ok_reply`; `refused` gets `refused_reply` (what the framing says
/// before closing, if anything) and then the end of stream, and a
/// connection opened before it is served on unharmed.
fn bound_holds<F: Framing, H: Handler<F> + Send>(
    builder: Builder<F>,
    handler: H,
    ok: &[(Vec<u8>, Vec<u8>)],
    refused: &[u8],
    refused_reply: &[u8],
    bystander: (&[u8], &[u8]),
) {
    let server = start(builder, handler);
    let mut other = Client::connect(server.local_addr());
    for (sent, reply) in ok {
        let mut c = Client::connect(server.local_addr());
        c.send(sent);
        assert_eq!(read_exactly(&mut c, reply.len()), *reply);
    }
    let mut c = Client::connect(server.local_addr());
    c.send(refused);
    assert_eq!(c.read_to_end(), refused_reply, "refused, then closed");
    other.send(bystander.0);
    assert_eq!(read_exactly(&mut other, bystander.1.len()), bystander.1);
}

// ----- Lines -----------------------------------------------------------------

/// Lines, LF and CRLF, split anywhere: the same lines, once each.
#[test]
fn lines_survive_every_split() {
    let stream = b"one\r\n\ntwo\rthree\nfour\r\n";
    let expected = b"one\n\ntwo\rthree\nfour\n";
    survives_every_split(Server::builder(), echo, stream, expected);
}

/// 5,000 lines in one write are each answered, in order.
#[test]
fn lines_pipelined_thousands_deep() {
    answers_a_deep_pipeline(Server::builder(), echo, 5000, |i| {
        let text = format!("line {i} {}", "x".repeat(i % 97));
        (line(text.as_bytes()), line(text.as_bytes()))
    });
}

/// A line of `max_line_len` bytes passes (with LF or CRLF: the stripped `\r`
/// does not count), and so does one byte less; one byte more closes only
/// that connection, without a reply.
#[test]
fn lines_at_the_bound() {
    let max = 100;
    let at = vec![b'a'; max];
    let below = vec![b'b'; max - 1];
    bound_holds(
        Server::builder().max_line_len(max),
        echo,
        &[
            (line(&at), line(&at)),
            ([&at[..], b"\r\n"].concat(), line(&at)),
            (line(&below), line(&below)),
        ],
        &line(&vec![b'c'; max + 1]),
        b"",
        (b"still here\n", b"still here\n"),
    );
}

// ----- Length-prefixed --------------------------------------------------------

/// Every header width, either byte order, with and without the header
/// counted in the length: the same payloads, however the stream is cut.
#[test]
fn length_prefixed_survives_every_split() {
    for framing in [
        LengthPrefixed::new(1),
        LengthPrefixed::new(2),
        LengthPrefixed::new(4),
        LengthPrefixed::new(8).little_endian(),
        LengthPrefixed::new(2)
            .little_endian()
            .length_includes_header(),
    ] {
        let stream: Vec<u8> = payloads()
            .iter()
            .flat_map(|p| prefixed(&framing, p))
            .collect();
        survives_every_split(
            Server::builder().framing(framing),
            prefixed_echo(framing),
            &stream,
            &stream,
        );
    }
}

/// 5,000 u32-prefixed frames in one write, payloads of 0 to 300 bytes.
#[test]
fn length_prefixed_pipelined_thousands_deep() {
    let framing = LengthPrefixed::new(4);
    answers_a_deep_pipeline(
        Server::builder().framing(framing),
        prefixed_echo(framing),
        5000,
        |i| {
            let payload: Vec<u8> = (0..i % 301).map(|k| (k * 7 + i) as u8).collect();
            (prefixed(&framing, &payload), prefixed(&framing, &payload))
        },
    );
}

/// A payload of `max_frame` bytes passes, and one byte less; a header
/// announcing one byte more closes the connection at once, with none of
/// the payload sent, and only that connection.
#[test]
fn length_prefixed_at_the_bound() {
    let max = 1000;
    let framing = LengthPrefixed::new(2).max_frame(max);
    let at = prefixed(&framing, &vec![1; max]);
    let below = prefixed(&framing, &vec![2; max - 1]);
    let bystander = prefixed(&framing, b"still here");
    bound_holds(
        Server::builder().framing(framing),
        prefixed_echo(framing),
        &[(at.clone(), at), (below.clone(), below)],
        &((max + 1) as u16).to_be_bytes(),
        b"",
        (&bystander, &bystander),
    );
}

/// The largest header a u32 can carry, to a server that takes 1 KiB:
/// refused from the header alone, nothing buffered, and the server goes on
/// serving the other connections.
#[test]
fn an_oversized_length_header_closes_only_its_connection() {
    let framing = LengthPrefixed::new(4).max_frame(1024);
    let server = start(Server::builder().framing(framing), prefixed_echo(framing));
    let mut bystander = Client::connect(server.local_addr());
    let hello = prefixed(&framing, b"hello");
    bystander.send(&hello);
    assert_eq!(read_exactly(&mut bystander, hello.len()), hello);
    let mut greedy = Client::connect(server.local_addr());
    greedy.send(&u32::MAX.to_be_bytes());
    assert_eq!(greedy.read_to_end(), b"");
    bystander.send(&hello);
    assert_eq!(read_exactly(&mut bystander, hello.len()), hello);
    assert_eq!(server.handle().stats().active, 1);
}

/// A length that counts the header cannot be smaller than the header: the
/// frame is malformed, and the connection closes after the replies to the
/// frames before it.
#[test]
fn a_length_smaller_than_its_header_is_malformed() {
    let framing = LengthPrefixed::new(2).length_includes_header();
    let server = start(Server::builder().framing(framing), prefixed_echo(framing));
    let mut c = Client::connect(server.local_addr());
    let ok = prefixed(&framing, b"ok");
    c.send(&[&ok[..], b"\x00\x01more"].concat());
    assert_eq!(c.read_to_end(), ok);
}

// ----- RESP --------------------------------------------------------------------

/// Arrays of bulk strings (binary ones, empty ones) and inline commands,
/// mixed, split anywhere: the same arguments each time.
#[test]
fn resp_survives_every_split() {
    let mut stream = request(&[b"SET", b"k", b"a\r\nb\0"]);
    stream.extend_from_slice(b"PING  x\r\n");
    stream.extend_from_slice(&request(&[b"ECHO", b""]));
    stream.extend_from_slice(b"*0\r\n\r\n"); // skipped, as redis-server does
    stream.extend_from_slice(&request(&[b"GET", b"$3\r\n"]));
    let mut expected = request(&[b"SET", b"k", b"a\r\nb\0"]);
    expected.extend_from_slice(&request(&[b"PING", b"x"]));
    expected.extend_from_slice(&request(&[b"ECHO", b""]));
    expected.extend_from_slice(&request(&[b"GET", b"$3\r\n"]));
    survives_every_split(
        Server::builder().framing(Resp::new()),
        resp_echo,
        &stream,
        &expected,
    );
}

/// 5,000 commands in one write, arrays and inline ones in turn.
#[test]
fn resp_pipelined_thousands_deep() {
    answers_a_deep_pipeline(
        Server::builder().framing(Resp::new()),
        resp_echo,
        5000,
        |i| {
            let key = format!("key:{i}");
            let value = vec![b'v'; i % 200];
            let reply = request(&[b"SET", key.as_bytes(), &value]);
            if i % 2 == 0 || value.is_empty() {
                (reply.clone(), reply)
            } else {
                let inline = format!("SET {key} {}\r\n", String::from_utf8(value).unwrap());
                (inline.into_bytes(), reply)
            }
        },
    );
}

/// A request of exactly `max_frame` bytes passes, and one byte shorter; one
/// byte longer closes the connection, without a reply, as redis-server does
/// past its query buffer limit.
#[test]
fn resp_at_the_bound() {
    let max = 1000;
    // One bulk string, as long as makes the request `total` bytes.
    let sized = |total: usize| {
        (0..total)
            .map(|n| request(&[&vec![b'x'; n]]))
            .find(|r| r.len() == total)
            .unwrap()
    };
    bound_holds(
        Server::builder().framing(Resp::new().max_frame(max)),
        resp_echo,
        &[(sized(max), sized(max)), (sized(max - 1), sized(max - 1))],
        &sized(max + 1),
        b"",
        (b"PING\r\n", &request(&[b"PING"])),
    );
}

/// Malformed requests get redis-server's own words, after the replies to
/// the commands before them, and the connection is closed.
#[test]
fn resp_protocol_errors_reply_then_close() {
    let server = start(Server::builder().framing(Resp::new()), resp_echo);
    for (bad, words) in [
        (&b"*1\r\n$x\r\n"[..], "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$1099511627776\r\n", "invalid bulk length"),
        (b"*9999999999\r\n", "invalid multibulk length"),
        (b"*1\r\n+OK\r\n", "expected '$', got '+'"),
    ] {
        let mut c = Client::connect(server.local_addr());
        c.send(&[&request(&[b"PING"])[..], bad].concat());
        let want = [
            &request(&[b"PING"])[..],
            format!("-ERR Protocol error: {words}\r\n").as_bytes(),
        ]
        .concat();
        assert_eq!(
            String::from_utf8_lossy(&c.read_to_end()),
            String::from_utf8_lossy(&want)
        );
    }
    let mut c = Client::connect(server.local_addr());
    c.send(b"PING\r\n");
    assert_eq!(read_exactly(&mut c, 14), request(&[b"PING"]));
}

// ----- Raw ---------------------------------------------------------------------

/// Raw bytes come back as they went, however they are cut.
#[test]
fn raw_survives_every_split() {
    let stream: Vec<u8> = payloads().concat();
    survives_every_split(Server::builder().framing(Raw), raw_echo, &stream, &stream);
}

/// 5,000 writes' worth of bytes in one go come back whole, in order.
#[test]
fn raw_pipelined_thousands_deep() {
    let server = start(Server::builder().framing(Raw), raw_echo);
    let mut c = Client::connect(server.local_addr());
    let stream: Vec<u8> = (0..5000usize)
        .flat_map(|i| format!("chunk {i};").into_bytes())
        .collect();
    let mut writer = c.stream().try_clone().unwrap();
    let expected = stream.clone();
    let sender = std::thread::spawn(move || writer.write_all(&stream).unwrap());
    assert_eq!(read_exactly(&mut c, expected.len()), expected);
    sender.join().unwrap();
}

/// A raw frame is one read: never more than the read buffer, which is its
/// bound; a message longer than that arrives in pieces, all of it.
#[test]
fn raw_frames_are_bounded_by_the_read_buffer() {
    let largest = Arc::new(AtomicUsize::new(0));
    let seen = largest.clone();
    let server = start(
        Server::builder().framing(Raw).read_buffer(512),
        move |bytes: &[u8], conn: &mut Conn| {
            seen.fetch_max(bytes.len(), Ordering::Relaxed);
            conn.send(bytes);
        },
    );
    let mut c = Client::connect(server.local_addr());
    let message: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    c.send(&message);
    assert_eq!(read_exactly(&mut c, message.len()), message);
    let largest = largest.load(Ordering::Relaxed);
    assert!(largest <= 512, "a frame of {largest} bytes");
}

// ----- The echo example ---------------------------------------------------------

/// `examples/echo.rs --framing u16|u32` echoes each frame with its header;
/// `--max-line` bounds the payload, and a header over it closes only that
/// connection.
#[test]
fn the_echo_example_speaks_length_prefixed() {
    for (name, width) in [("u16", 2), ("u32", 4)] {
        let framing = LengthPrefixed::new(width).max_frame(100);
        let echo = Example::start(
            "echo",
            &[
                "--addr",
                "127.0.0.1:0",
                "--framing",
                name,
                "--max-line",
                "100",
            ],
        );
        let mut c = Client::connect(echo.addr);
        let frames: Vec<u8> = [&b"hi"[..], b"", b"a\nb\r\n\0", &[7; 100]]
            .iter()
            .flat_map(|p| prefixed(&framing, p))
            .collect();
        c.send(&frames);
        assert_eq!(read_exactly(&mut c, frames.len()), frames, "{name}");
        let mut greedy = Client::connect(echo.addr);
        let mut header = vec![0; width];
        header[width - 1] = 101;
        greedy.send(&header);
        assert_eq!(greedy.read_to_end(), b"", "{name}: refused from its header");
        c.send(&frames);
        assert_eq!(read_exactly(&mut c, frames.len()), frames, "{name}");
    }
}

/// `--framing raw` echoes bytes as they come; `--framing lines` (the
/// default) echoes lines, and `--max-line` bounds them.
#[test]
fn the_echo_example_speaks_raw_and_lines() {
    let raw = Example::start("echo", &["--addr", "127.0.0.1:0", "--framing", "raw"]);
    let mut c = Client::connect(raw.addr);
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let mut writer = c.stream().try_clone().unwrap();
    let sent = bytes.clone();
    let sender = std::thread::spawn(move || writer.write_all(&sent).unwrap());
    assert_eq!(read_exactly(&mut c, bytes.len()), bytes);
    sender.join().unwrap();

    let lines = Example::start("echo", &["--addr", "127.0.0.1:0", "--max-line", "5"]);
    let mut c = Client::connect(lines.addr);
    assert_eq!(c.roundtrip(b"12345\r\n"), b"12345\n");
    c.send(b"123456\n");
    assert_eq!(c.read_to_end(), b"");
}

/// An unknown framing is refused with the usage, before anything is bound.
#[test]
fn the_echo_example_refuses_an_unknown_framing() {
    let out = std::process::Command::new(util::example("echo"))
        .args(["--framing", "u24"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--framing u24: expected lines, u16, u32 or raw"),
        "{stderr}"
    );
    assert!(stderr.contains("--framing HOW"), "{stderr}");
}

/// `Lines` chosen explicitly with `Builder::framing` carries its own bound,
/// as `max_line_len` does for the default.
#[test]
fn lines_chosen_on_the_builder_keep_their_bound() {
    let server = start(Server::builder().framing(Lines::new(8)), echo);
    let mut c = Client::connect(server.local_addr());
    assert_eq!(c.roundtrip(b"12345678\n"), b"12345678\n");
    c.send(b"123456789\n");
    assert_eq!(c.read_to_end(), b"");
}
