//! A chat room: every line a client sends goes to all the other clients.
//!
//! Shows per-connection handles and the connect/disconnect hooks. The handler
//! keeps a `ConnHandle` for each connection; a line is broadcast by sending
//! it through the others' handles (which works the same from any thread).
//!
//! ```text
//! cargo run --release --example chat -- [--addr 127.0.0.1:7000] [the echo example's flags]
//! ```
//!
//! Open two or three `nc 127.0.0.1 7000` and type.

mod common;

use std::collections::BTreeMap;

use netpool::{Conn, ConnHandle, ConnId, Disconnect, Handler};

/// Everyone in the room, by connection id.
#[derive(Default)]
struct Room {
    members: BTreeMap<ConnId, ConnHandle>,
}

impl Room {
    fn broadcast(&self, from: ConnId, text: &[u8]) {
        for (id, member) in &self.members {
            if *id != from {
                // A member that left meanwhile is skipped by its loop.
                // `send_wait`: on the loop's own thread it never waits, and
                // never drops a line when the queue is past its bound (each
                // member's output limit bounds a member that does not read).
                let _ = member.send_wait(text);
            }
        }
    }
}

impl Handler for Room {
    type State = ();

    fn on_connect(&mut self, conn: &mut Conn<'_>) {
        conn.send(format!("welcome, you are {}\n", conn.id()).as_bytes());
        self.broadcast(conn.id(), format!("* {} joined\n", conn.id()).as_bytes());
        self.members.insert(conn.id(), conn.handle());
    }

    fn on_frame(&mut self, line: &[u8], conn: &mut Conn<'_>) {
        let mut message = format!("{}: ", conn.id()).into_bytes();
        message.extend_from_slice(line);
        message.push(b'\n');
        self.broadcast(conn.id(), &message);
    }

    fn on_disconnect(&mut self, closed: Disconnect<()>) {
        self.members.remove(&closed.id);
        let note = format!("* {} left ({})\n", closed.id, closed.reason);
        self.broadcast(closed.id, note.as_bytes());
    }
}

fn main() {
    common::init_logging();
    common::serve_until_signal(common::Options::from_args(), Room::default());
}
