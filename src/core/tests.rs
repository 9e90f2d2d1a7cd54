//! The connection core's state machine, tested by phase with no socket.
use super::*;
use crate::budget::{Admission, Budget, Overflow};
use std::sync::Arc;

/// A budget of `n` slots for the tests' connections.
fn budget(n: usize) -> Arc<Budget> {
    Arc::new(Budget::new(n, Overflow::Refuse, 1))
}

fn core_on(budget: &Arc<Budget>, start: Start) -> Core<()> {
    let Admission::Serve(slot) = budget.try_acquire() else {
        panic!("no slot left in the test budget");
    };
    Core::new(
        ConnId(1),
        "127.0.0.1:9".parse().unwrap(),
        0,
        start,
        slot,
        None,
    )
}

/// A plaintext connection, open, on a budget of its own.
fn core() -> Core<()> {
    core_on(&budget(1), Start::Open)
}

fn tls_core() -> Core<()> {
    core_on(&budget(1), Start::Handshake)
}

/// An idle connection's whole cost in user memory is its slab entry:
/// this guards the headline figure (RSS per idle connection) against a
/// field added without thought. (The socket and the plaintext
/// transport, a zero-sized type, add 4 bytes in a release build, 16 in
/// a debug one, in the driver's `Connection`: see its own test.)
#[test]
fn the_core_stays_small() {
    let size = std::mem::size_of::<Core<()>>();
    assert!(size <= 120, "Core<()> grew to {size} bytes");
}

mod accounting {
    use super::*;

    #[test]
    fn lingering_gives_the_slot_back_once() {
        let b = budget(1);
        let mut c = core_on(&b, Start::Open);
        assert_eq!(b.active(), 1);
        c.handle_close(CloseReason::Closed, false);
        assert_eq!(c.poll_action(), Action::ShutWrite);
        assert_eq!(b.active(), 1, "still serving until our FIN is out");
        c.handle_write_shut(Ok(()), 5);
        assert!(!c.held.holds_slot());
        assert_eq!(b.active(), 0, "a lingering connection keeps nobody out");
        c.handle_eof();
        assert_eq!(c.poll_action(), Action::Remove);
        drop(c);
        assert_eq!(b.active(), 0, "and it is not given back twice");
    }

    #[test]
    fn an_abortive_close_gives_the_slot_back_at_once() {
        let b = budget(1);
        let mut c = core_on(&b, Start::Open);
        c.handle_io_error(&io::ErrorKind::ConnectionReset.into());
        assert_eq!(c.close_reason(), CloseReason::Reset);
        assert_eq!(b.active(), 0);
    }

    #[test]
    fn releasing_early_keeps_serving() {
        let b = budget(1);
        let mut c = core_on(&b, Start::Open);
        c.held.release();
        c.held.release();
        assert_eq!(b.active(), 0);
        assert_eq!(c.phase(), Phase::Open);
        assert_eq!(c.poll_interest(), Some(Interest::READABLE));
    }

    #[test]
    fn dropping_a_connection_anywhere_gives_the_slot_back() {
        let b = budget(2);
        let c1 = core_on(&b, Start::Handshake);
        let c2 = core_on(&b, Start::ProxyHeader);
        assert_eq!(b.active(), 2);
        drop((c1, c2));
        assert_eq!(b.active(), 0);
    }
}

mod proxy_header {
    use super::*;

    #[test]
    fn a_bad_header_closes_without_lingering_long() {
        let mut c = core_on(&budget(1), Start::ProxyHeader);
        assert_eq!(c.poll_interest(), Some(Interest::READABLE));
        c.handle_close(CloseReason::BadProxyHeader, true);
        assert_eq!(c.poll_action(), Action::Remove);
        assert_eq!(c.close_reason(), CloseReason::BadProxyHeader);
    }
}

mod handshaking {
    use super::*;

    #[test]
    fn a_handshake_reads_and_writes_its_flight() {
        let mut c = tls_core();
        assert_eq!(c.poll_interest(), Some(Interest::READABLE));
        c.handle_sent(b"server hello", 0, 0);
        assert_eq!(
            c.poll_interest(),
            Some(Interest::READABLE | Interest::WRITABLE)
        );
        assert_eq!(c.poll_transmit(), b"server hello");
    }

    #[test]
    fn backpressure_does_not_apply_to_a_handshake() {
        let mut c = tls_core();
        c.handle_sent(&[0; 10], 0, 0);
        assert!(!c.handle_output_level(2, 8, 128, 0));
        assert_eq!(c.phase(), Phase::Handshaking);
    }

    #[test]
    fn a_stop_or_eof_ends_a_handshake_at_once() {
        for reason in [CloseReason::Stopped, CloseReason::PeerClosed] {
            let mut c = tls_core();
            c.handle_sent(b"flight", 0, 0);
            c.handle_close(reason, false);
            assert_eq!(c.phase(), Phase::Closed { reason });
            assert_eq!(c.poll_interest(), None);
            assert_eq!(c.poll_action(), Action::Remove);
        }
    }

    #[test]
    fn a_tls_error_flushes_its_alert_and_lingers() {
        let mut c = tls_core();
        c.handle_sent(b"alert", 0, 0);
        c.handle_close(CloseReason::Tls, false);
        assert_eq!(
            c.phase(),
            Phase::Closing {
                reason: CloseReason::Tls,
                linger: true
            }
        );
        assert_eq!(c.poll_interest(), Some(Interest::WRITABLE));
        assert_eq!(c.poll_action(), Action::Serve, "the alert is still out");
        c.handle_flushed(5, 1);
        assert_eq!(c.poll_action(), Action::ShutWrite);
    }

    #[test]
    fn a_timeout_closes_at_once() {
        let mut c = tls_core();
        c.handle_close(CloseReason::HandshakeTimeout, false);
        assert_eq!(
            c.phase(),
            Phase::Closed {
                reason: CloseReason::HandshakeTimeout
            }
        );
    }
}

mod open {
    use super::*;

    #[test]
    fn reads_and_writes_only_when_output_waits() {
        let mut c = core();
        assert_eq!(c.poll_interest(), Some(Interest::READABLE));
        c.handle_sent(b"xy", 1, 0);
        assert_eq!(c.poll_transmit(), b"y", "what the socket did not take");
        assert_eq!(
            c.poll_interest(),
            Some(Interest::READABLE | Interest::WRITABLE)
        );
        c.handle_flushed(1, 1);
        assert_eq!(c.poll_interest(), Some(Interest::READABLE));
    }

    #[test]
    fn high_water_throttles_and_low_water_resumes() {
        let mut c = core();
        c.handle_sent(&[0; 10], 0, 0);
        assert!(!c.handle_output_level(2, 8, 128, 0));
        assert_eq!(c.phase(), Phase::Throttled);
        assert_eq!(c.poll_interest(), Some(Interest::WRITABLE));
        c.handle_flushed(7, 1);
        assert!(
            !c.handle_output_level(2, 8, 128, 1),
            "3 bytes is still above low water"
        );
        c.handle_flushed(1, 2);
        assert!(
            c.handle_output_level(2, 8, 128, 2),
            "resuming asks for a read"
        );
        assert_eq!(c.phase(), Phase::Open);
    }

    #[test]
    fn end_of_stream_flushes_then_closes_without_lingering() {
        let mut c = core();
        c.handle_sent(b"reply", 0, 0);
        c.handle_eof();
        assert_eq!(c.poll_action(), Action::Serve, "the reply first");
        c.handle_flushed(5, 1);
        assert_eq!(c.poll_action(), Action::Remove);
        assert_eq!(c.close_reason(), CloseReason::PeerClosed);
    }
}

mod closing {
    use super::*;

    #[test]
    fn graceful_close_lingers_unless_the_peer_is_gone() {
        let mut c = core();
        c.handle_close(CloseReason::Closed, false);
        assert_eq!(
            c.phase(),
            Phase::Closing {
                reason: CloseReason::Closed,
                linger: true
            }
        );
        let mut c = core();
        c.handle_close(CloseReason::PeerClosed, true);
        assert_eq!(
            c.phase(),
            Phase::Closing {
                reason: CloseReason::PeerClosed,
                linger: false
            }
        );
    }

    #[test]
    fn the_first_graceful_reason_wins() {
        let mut c = core();
        c.handle_close(CloseReason::LineTooLong, false);
        c.handle_close(CloseReason::Stopped, false);
        assert_eq!(c.close_reason(), CloseReason::LineTooLong);
    }

    #[test]
    fn an_abortive_reason_cuts_a_graceful_close_short() {
        let mut c = core();
        c.handle_sent(b"unsent", 0, 0);
        c.handle_close(CloseReason::Closed, false);
        c.handle_close(CloseReason::Reset, false);
        assert_eq!(
            c.phase(),
            Phase::Closed {
                reason: CloseReason::Reset
            }
        );
        assert_eq!(c.poll_interest(), None);
    }

    #[test]
    fn closing_only_writes() {
        let mut c = core();
        c.handle_sent(b"bye", 0, 0);
        c.handle_close(CloseReason::Stopped, false);
        assert_eq!(c.poll_interest(), Some(Interest::WRITABLE));
        c.handle_flushed(3, 1);
        assert_eq!(c.poll_interest(), None);
        assert_eq!(c.poll_action(), Action::ShutWrite);
    }
}

mod timeouts {
    use super::*;

    const T: Timeouts = Timeouts {
        idle: Some(100),
        frame: None,
        write_stall: Some(30),
        linger: 20,
        proxy_header: 50,
    };

    #[test]
    fn a_proxy_header_must_arrive_in_time() {
        let b = budget(1);
        let Admission::Serve(slot) = b.try_acquire() else {
            panic!()
        };
        let mut c: Core<()> = Core::new(
            ConnId(2),
            "127.0.0.1:9".parse().unwrap(),
            5,
            Start::ProxyHeader,
            slot,
            None,
        );
        assert_eq!(c.poll_deadline(&T), Some((55, Timeout::ProxyHeader)));
        assert_eq!(c.handle_timeout(54, &T), None, "not yet");
        assert_eq!(c.handle_timeout(55, &T), Some(Timeout::ProxyHeader));
        assert_eq!(c.close_reason(), CloseReason::BadProxyHeader);
    }

    #[test]
    fn an_idle_open_connection_times_out_after_idle() {
        let mut c = core();
        c.last_active = 50;
        assert_eq!(c.poll_deadline(&T), Some((150, Timeout::Idle)));
        let off = Timeouts { idle: None, ..T };
        assert_eq!(c.poll_deadline(&off), None, "nothing applies");
        assert_eq!(c.handle_timeout(150, &T), Some(Timeout::Idle));
        assert_eq!(c.close_reason(), CloseReason::IdleTimeout);
    }

    #[test]
    fn activity_moves_the_deadline() {
        let mut c = core();
        c.handle_sent(b"x", 1, 90);
        assert_eq!(c.handle_timeout(100, &T), None, "active at 90");
        assert_eq!(c.phase(), Phase::Open);
    }

    #[test]
    fn waiting_output_adds_the_write_stall_clock() {
        let mut c = core();
        c.handle_sent(b"x", 0, 10);
        assert_eq!(c.poll_deadline(&T), Some((40, Timeout::WriteStall)));
        c.handle_close(CloseReason::Closed, false);
        assert_eq!(
            c.poll_deadline(&T),
            Some((40, Timeout::WriteStall)),
            "closing: only the stall"
        );
        assert_eq!(c.handle_timeout(40, &T), Some(Timeout::WriteStall));
        assert_eq!(c.poll_action(), Action::Remove, "the output is dropped");
    }

    /// The defaults' shape: no idle timeout, a frame bound.
    const FRAME: Timeouts = Timeouts {
        idle: None,
        frame: Some(100),
        ..T
    };

    /// Bytes of a frame arrive at `now` and no frame ends, as the
    /// framing leaves them.
    fn trickle(c: &mut Core<()>, bytes: &[u8], now: Millis) {
        c.partial.extend(bytes, 1024);
        c.handle_framed(0, now);
    }

    #[test]
    fn a_silent_connection_has_no_deadline() {
        let c = core();
        assert_eq!(c.poll_deadline(&FRAME), None, "it keeps its place");
    }

    #[test]
    fn a_started_frame_must_end_in_time_however_it_trickles() {
        let mut c = core();
        trickle(&mut c, b"GET", 10);
        assert_eq!(c.poll_deadline(&FRAME), Some((110, Timeout::Frame)));
        trickle(&mut c, b" /", 60);
        trickle(&mut c, b"x", 109);
        assert_eq!(
            c.poll_deadline(&FRAME),
            Some((110, Timeout::Frame)),
            "bytes without the frame's end move nothing"
        );
        assert_eq!(c.handle_timeout(109, &FRAME), None);
        assert_eq!(c.handle_timeout(110, &FRAME), Some(Timeout::Frame));
        assert_eq!(
            c.phase(),
            Phase::Closing {
                reason: CloseReason::FrameTimeout,
                linger: true
            },
            "graceful: replies to earlier frames go first"
        );
    }

    #[test]
    fn a_frame_that_ends_stops_the_clock_and_the_next_starts_its_own() {
        let mut c = core();
        trickle(&mut c, b"one", 10);
        // The frame ends at 50 and the next one starts in the same read.
        c.partial.clear();
        c.partial.extend(b"tw", 1024);
        c.handle_framed(1, 50);
        assert_eq!(c.poll_deadline(&FRAME), Some((150, Timeout::Frame)));
        // It ends too, and nothing follows: no deadline.
        c.partial.clear();
        c.handle_framed(1, 70);
        assert_eq!(c.poll_deadline(&FRAME), None);
    }

    #[test]
    fn no_frame_clock_while_the_server_is_not_reading() {
        let mut c = core();
        trickle(&mut c, b"half", 10);
        c.handle_sent(&[0; 10], 0, 20);
        assert!(!c.handle_output_level(2, 8, 128, 20));
        assert_eq!(c.phase(), Phase::Throttled);
        let no_stall = Timeouts {
            write_stall: None,
            ..FRAME
        };
        assert_eq!(c.poll_deadline(&no_stall), None, "throttled");
        c.handle_flushed(10, 500);
        assert!(c.handle_output_level(2, 8, 128, 500));
        assert_eq!(
            c.poll_deadline(&no_stall),
            Some((600, Timeout::Frame)),
            "the frame's clock starts again when reading resumes"
        );
    }

    #[test]
    fn lingering_is_bounded_by_linger() {
        let mut c = core();
        c.handle_close(CloseReason::Closed, false);
        assert_eq!(c.poll_action(), Action::ShutWrite);
        c.handle_write_shut(Ok(()), 7);
        assert_eq!(c.poll_deadline(&T), Some((27, Timeout::Linger)));
        assert_eq!(c.handle_timeout(27, &T), Some(Timeout::Linger));
        assert_eq!(c.poll_action(), Action::Remove);
        assert_eq!(c.close_reason(), CloseReason::Closed);
    }
}

/// Replies deferred to other threads (`Conn::defer`), as the core sees
/// them: outstanding replies keep a connection from finishing, and count
/// toward backpressure.
mod deferred {
    use super::*;

    /// Reserves one reply, as a handler call would, with `after` sent
    /// behind it; returns its number.
    fn defer(c: &mut Core<()>, after: &[u8]) -> u64 {
        let mut out = Vec::new();
        let seq = c.out.reserve(0);
        out.extend_from_slice(after);
        c.out.settle(&mut out, 0);
        assert!(out.is_empty(), "it all waits behind the reply");
        seq
    }

    #[test]
    fn the_bound_on_outstanding_replies_throttles_and_half_resumes() {
        let mut c = core();
        let seqs: Vec<u64> = (0..4).map(|_| defer(&mut c, b"")).collect();
        assert!(!c.handle_output_level(100, 1000, 4, 0));
        assert_eq!(c.phase(), Phase::Throttled);
        assert_eq!(
            c.poll_interest(),
            Some(Interest::WRITABLE),
            "quiet: nothing to read or write"
        );
        c.out.fill(seqs[0], b"a".to_vec());
        c.out.take_ready();
        assert!(!c.handle_output_level(100, 1000, 4, 0), "3 outstanding");
        c.out.fill(seqs[1], b"b".to_vec());
        c.out.take_ready();
        assert!(c.handle_output_level(100, 1000, 4, 0), "2: half the bound");
        assert_eq!(c.phase(), Phase::Open);
    }

    #[test]
    fn held_bytes_count_toward_high_water() {
        let mut c = core();
        defer(&mut c, &[0; 10]);
        assert_eq!(c.out.len(), 10);
        assert!(!c.handle_output_level(2, 8, 128, 0));
        assert_eq!(c.phase(), Phase::Throttled);
    }

    #[test]
    fn closing_waits_for_outstanding_replies() {
        let mut c = core();
        let seq = defer(&mut c, b"");
        c.handle_close(CloseReason::Stopped, false);
        assert_eq!(c.poll_action(), Action::Serve, "a reply is owed");
        assert_eq!(c.poll_interest(), Some(Interest::WRITABLE));
        c.out.fill(seq, b"late".to_vec());
        let mut ready = c.out.take_ready().unwrap();
        c.out.push_wire(&mut ready);
        assert_eq!(c.poll_action(), Action::Serve, "and written");
        c.handle_flushed(4, 1);
        assert_eq!(c.poll_action(), Action::ShutWrite);
    }

    #[test]
    fn a_peer_that_half_closed_still_gets_its_replies() {
        let mut c = core();
        let seq = defer(&mut c, b"");
        c.handle_eof();
        assert_eq!(c.poll_action(), Action::Serve);
        c.out.fill(seq, Vec::new());
        assert_eq!(c.out.take_ready(), None, "a dropped slot: nothing to send");
        assert_eq!(c.poll_action(), Action::Remove);
        assert_eq!(c.close_reason(), CloseReason::PeerClosed);
    }

    #[test]
    fn an_abortive_close_drops_them() {
        let mut c = core();
        defer(&mut c, b"");
        c.handle_io_error(&io::ErrorKind::ConnectionReset.into());
        assert_eq!(c.poll_action(), Action::Remove);
    }

    /// Once its deferred reply and what followed it are written, even
    /// after a short write, a connection owns no heap memory again: an idle
    /// connection costs its slab entry alone, whatever it did before (the
    /// headline figure, RSS per idle connection).
    #[test]
    fn a_connection_that_delivered_everything_owns_no_memory() {
        let mut c = core();
        assert!(!c.out.owns_memory(), "nothing allocated at the start");
        let seq = defer(&mut c, b"after");
        assert!(c.out.owns_memory(), "the reply's place, while it is owed");
        c.out.fill(seq, b"reply ".to_vec());
        let mut ready = c.out.take_ready().unwrap();
        assert_eq!(ready, b"reply after");
        c.out.push_wire(&mut ready);
        c.handle_flushed(5, 1);
        assert!(c.out.owns_memory(), "what the socket has not taken yet");
        c.handle_flushed(6, 2);
        assert!(c.out.is_empty());
        assert!(!c.out.owns_memory(), "freed with the last byte written");
        assert_eq!(c.partial.capacity(), 0, "and no incomplete frame kept");
    }

    #[test]
    fn waiting_for_a_reply_is_neither_idle_nor_a_write_stall() {
        let t = Timeouts {
            idle: Some(100),
            frame: None,
            write_stall: Some(30),
            linger: 20,
            proxy_header: 50,
        };
        let mut c = core();
        defer(&mut c, b"held");
        assert_eq!(
            c.poll_deadline(&t),
            Some((100, Timeout::Idle)),
            "no stall: nothing waits for the peer"
        );
        assert_eq!(c.handle_timeout(100, &t), None, "owed a reply: not idle");
        assert_eq!(c.phase(), Phase::Open);
        assert_eq!(c.poll_deadline(&t), Some((200, Timeout::Idle)));
        c.handle_sent(b"x", 0, 110);
        assert_eq!(
            c.poll_deadline(&t),
            Some((140, Timeout::WriteStall)),
            "wire bytes the peer does not take still stall"
        );
        c.handle_flushed(1, 150);
        c.out.fill(0, Vec::new());
        c.out.take_ready();
        assert_eq!(c.poll_deadline(&t), Some((250, Timeout::Idle)));
        assert_eq!(c.handle_timeout(250, &t), Some(Timeout::Idle));
        assert_eq!(
            c.close_reason(),
            CloseReason::IdleTimeout,
            "nothing owed now"
        );
    }
}

mod lingering {
    use super::*;

    #[test]
    fn lingering_reads_to_see_the_peer_close() {
        let mut c = core();
        c.handle_close(CloseReason::Closed, false);
        c.handle_write_shut(Ok(()), 0);
        assert_eq!(c.poll_interest(), Some(Interest::READABLE));
        c.handle_close(CloseReason::Stopped, false);
        assert!(
            matches!(c.phase(), Phase::Lingering { .. }),
            "a stop does not restart a close"
        );
        c.handle_eof();
        assert_eq!(c.poll_action(), Action::Remove);
    }
}
