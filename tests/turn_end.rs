//! Replies written at the end of the turn (`Builder::write_at_turn_end`,
//! issue 12, on by default): held replies still leave before our FIN, in
//! order with replies deferred to other threads, past the hold limit, and
//! for every connection of a batch. The order tests run with it off too
//! (replies written after each read), which every other test file no
//! longer does.

mod util;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread::JoinHandle;

use netpool::{Conn, Handler, ReplySlot, Server};
use util::{echo, expect_lines, start, Client, DEADLINE};

fn builder() -> netpool::Builder {
    Server::builder().write_at_turn_end(true)
}

/// Both ways of writing.
const MODES: [bool; 2] = [true, false];

/// A client that sends its requests and its FIN together: the loop reads
/// the lines and the end of stream in one drive, so the replies it held
/// must be written before the FIN that the end of stream leads to.
#[test]
fn held_replies_leave_before_our_fin() {
    for at_turn_end in MODES {
        let server = start(Server::builder().write_at_turn_end(at_turn_end), echo);
        for round in 0..50 {
            let mut client = Client::connect(server.local_addr());
            client.send(b"a\nb\nc\n");
            client.shutdown_write();
            let what = format!("round {round}, at turn end: {at_turn_end}");
            assert_eq!(client.read_to_end(), b"a\nb\nc\n", "{what}");
        }
    }
}

/// A handler that answers and closes in the same read: the answer, then
/// the FIN.
#[test]
fn a_reply_then_close_leaves_in_order() {
    let server = start(builder(), |line: &[u8], conn: &mut Conn| {
        conn.send(line);
        conn.send(b"\n");
        if line == b"bye" {
            conn.close();
        }
    });
    for round in 0..50 {
        let mut client = Client::connect(server.local_addr());
        client.send(b"x\ny\nbye\nnot answered\n");
        assert_eq!(client.read_to_end(), b"x\ny\nbye\n", "round {round}");
    }
}

/// A greeting from `on_connect` is held like any reply, and written.
#[test]
fn a_greeting_is_written() {
    struct Greeter;
    impl Handler for Greeter {
        type State = ();
        fn on_connect(&mut self, conn: &mut Conn<'_, ()>) {
            conn.send(b"hello\n");
        }
        fn on_frame(&mut self, line: &[u8], conn: &mut Conn<'_, ()>) {
            echo(line, conn);
        }
    }
    let server = start(builder(), Greeter);
    let clients: Vec<Client> = (0..8)
        .map(|_| Client::connect(server.local_addr()))
        .collect();
    for mut client in clients {
        assert_eq!(client.line(), b"hello\n");
        assert_eq!(client.roundtrip(b"ping\n"), b"ping\n");
    }
}

/// Many connections whose requests arrive together, so that one batch of
/// events holds replies for several of them: each gets its own replies,
/// in order, round after round.
#[test]
fn every_connection_of_a_batch_gets_its_replies() {
    const CONNS: usize = 64;
    const ROUNDS: usize = 100;
    let server = start(builder(), echo);
    let mut clients: Vec<Client> = (0..CONNS)
        .map(|_| Client::connect(server.local_addr()))
        .collect();
    for round in 0..ROUNDS {
        for (c, client) in clients.iter_mut().enumerate() {
            client.send(format!("{c} {round} a\n{c} {round} b\n").as_bytes());
        }
        for (c, client) in clients.iter_mut().enumerate() {
            assert_eq!(client.line(), format!("{c} {round} a\n").as_bytes());
            assert_eq!(client.line(), format!("{c} {round} b\n").as_bytes());
        }
    }
}

/// Far more output in one turn than the hold limit (64 KiB), while the
/// client reads slowly enough that the socket fills: the replies pass
/// through held, written and queued output, and arrive whole and in
/// order.
#[test]
fn output_past_the_hold_limit_arrives_whole() {
    for at_turn_end in MODES {
        past_the_hold_limit(at_turn_end);
    }
}

fn past_the_hold_limit(at_turn_end: bool) {
    const LINES: usize = 200_000;
    let server = start(Server::builder().write_at_turn_end(at_turn_end), echo);
    let stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_write_timeout(Some(DEADLINE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sending: JoinHandle<()> = std::thread::spawn(move || {
        let mut out = Vec::new();
        for n in 0..LINES {
            out.extend_from_slice(format!("line number {n:>12}\n").as_bytes());
        }
        writer.write_all(&out).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut reader = BufReader::new(stream);
    expect_lines(&mut reader, LINES, "echo", |n| {
        format!("line number {n:>12}\n")
    });
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{} bytes after the last reply", rest.len());
    sending.join().unwrap();
}

/// Replies deferred to another thread, between replies given at once: the
/// held replies leave before the filled ones that follow them (the loop
/// writes what it holds before it runs other threads' commands).
#[test]
fn deferred_replies_keep_their_place() {
    for at_turn_end in MODES {
        deferred_in_place(at_turn_end);
    }
}

fn deferred_in_place(at_turn_end: bool) {
    const LINES: usize = 5_000;
    let (tx, rx) = mpsc::channel::<(ReplySlot, Vec<u8>)>();
    let worker = std::thread::spawn(move || {
        for (slot, reply) in rx {
            let _ = slot.send_wait(reply);
        }
    });
    let builder = Server::builder().write_at_turn_end(at_turn_end);
    let server = start(builder, move |line: &[u8], conn: &mut Conn| {
        let reply = [line, b"\n"].concat();
        if line.ends_with(b"0") || line.ends_with(b"5") {
            tx.send((conn.defer(), reply)).unwrap();
        } else {
            conn.send(&reply);
        }
    });
    let stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let mut out = Vec::new();
        for n in 0..LINES {
            out.extend_from_slice(format!("{n}\n").as_bytes());
        }
        writer.write_all(&out).unwrap();
    });
    let mut reader = BufReader::new(stream);
    expect_lines(&mut reader, LINES, "mixed", |n| format!("{n}\n"));
    sending.join().unwrap();
    server.stop(DEADLINE).unwrap();
    worker.join().unwrap();
}
