//! The tests of `resp.rs`, in a file of their own so that the module reads in one sitting.

use super::*;
use crate::framing::testing::{all_cuts, cut, run};
use proptest::prelude::*;

type Args = Vec<Vec<u8>>;

fn own(cmd: Command<'_>) -> Args {
    cmd.iter().map(<[u8]>::to_vec).collect()
}

fn frame(resp: Resp, chunks: &[&[u8]]) -> (Vec<Args>, Remainder, Result<(), FrameError>) {
    let (cmds, rest, res, _) = run(&mut { resp }, chunks, own);
    (cmds, rest, res)
}

/// `args` as a RESP array, as clients send it.
fn array(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn args(list: &[&[u8]]) -> Args {
    list.iter().map(|a| a.to_vec()).collect()
}

fn malformed(reason: &'static str) -> Result<(), FrameError> {
    Err(FrameError::Malformed(reason))
}

mod complete_commands {
    use super::*;

    /// An array's bulk strings are binary-safe.
    #[test]
    fn arrays_carry_any_bytes() {
        let data = array(&[b"SET", b"k", b"a\r\nb\0\n"]);
        let (cmds, rest, res) = frame(Resp::new(), &[&data]);
        assert_eq!(res, Ok(()));
        assert_eq!(cmds, vec![args(&[b"SET", b"k", b"a\r\nb\0\n"])]);
        assert!(rest.is_empty());
    }

    /// Inline commands split on runs of white space, as `sdssplitargs`.
    #[test]
    fn inline_commands_split_on_white_space() {
        let (cmds, _, res) = frame(
            Resp::new(),
            &[b"  SET\tk \x0bv\x0c \r\nPING\nGET \"a b\"\r\n"],
        );
        assert_eq!(res, Ok(()));
        assert_eq!(
            cmds,
            vec![
                args(&[b"SET", b"k", b"v"]),
                args(&[b"PING"]),
                args(&[b"GET", b"\"a", b"b\""])
            ]
        );
    }

    /// `*0`, `*-1` and empty or blank lines are skipped, as redis does.
    #[test]
    fn empty_requests_are_skipped() {
        let (cmds, rest, res) = frame(
            Resp::new(),
            &[b"*0\r\n*-1\r\n\r\n\n \t \r\n*-9223372036854775808\r\nPING\r\n"],
        );
        assert_eq!(res, Ok(()));
        assert_eq!(cmds, vec![args(&[b"PING"])]);
        assert!(rest.is_empty());
    }

    /// Pipelined arrays and inline commands come out in order.
    #[test]
    fn pipelined_requests_keep_their_order() {
        let mut data = Vec::new();
        for i in 0..100 {
            if i % 3 == 0 {
                data.extend_from_slice(format!("INCR k{i}\r\n").as_bytes());
            } else {
                data.extend_from_slice(&array(&[b"GET", format!("k{i}").as_bytes()]));
            }
        }
        let (cmds, _, res) = frame(Resp::new(), &[&data]);
        assert_eq!(res, Ok(()));
        assert_eq!(cmds.len(), 100);
        assert_eq!(cmds[99], args(&[b"INCR", b"k99"]));
        assert_eq!(cmds[98], args(&[b"GET", b"k98"]));
    }

    /// As redis-server, the byte after a header's `\r` and the two after
    /// a payload are not looked at.
    #[test]
    fn the_bytes_after_cr_and_payload_are_skipped_unread() {
        let (cmds, _, res) = frame(Resp::new(), &[b"*1\rX$4\rYPINGab"]);
        assert_eq!(res, Ok(()));
        assert_eq!(cmds, vec![args(&[b"PING"])]);
    }

    /// The view answers by index, by iteration and by name.
    #[test]
    fn the_command_view() {
        let data = array(&[b"get", b"key", b""]);
        let mut checked = false;
        Resp::new()
            .split(&mut Remainder::new(), &data, |cmd: Command<'_>| {
                assert_eq!((cmd.len(), cmd.is_empty()), (3, false));
                assert_eq!(cmd.name(), b"get");
                assert!(cmd.name_eq_ignore_case(b"GET"));
                assert!(!cmd.name_eq_ignore_case(b"GETX"));
                assert_eq!(
                    (cmd.get(1), cmd.get(2), cmd.get(3)),
                    (Some(&b"key"[..]), Some(&b""[..]), None)
                );
                assert_eq!(cmd.iter().next_back(), Some(&b""[..]));
                assert_eq!(cmd.iter().len(), 3);
                assert_eq!(cmd.into_iter().count(), 3);
                assert_eq!(cmd.as_bytes(), &data[..]);
                assert_eq!(format!("{cmd:?}"), r#"["get", "key", ""]"#);
                checked = true;
                Flow::Continue
            })
            .unwrap();
        assert!(checked);
    }
}

mod straddling {
    use super::*;

    /// A stream of every kind of request, cut at every byte, gives the
    /// same commands.
    #[test]
    fn every_cut_gives_the_same_commands() {
        let mut data = array(&[b"SET", b"k", b"v\r\n"]);
        data.extend_from_slice(b"*0\r\n PING  x\r\n\r\n");
        data.extend_from_slice(&array(&[b"MGET", b"a", b"bb", b"", b"ccc"]));
        data.extend_from_slice(b"*1\r\n$12\r\n");
        let want = vec![
            args(&[b"SET", b"k", b"v\r\n"]),
            args(&[b"PING", b"x"]),
            args(&[b"MGET", b"a", b"bb", b"", b"ccc"]),
        ];
        for chunks in all_cuts(&data) {
            let (cmds, rest, res) = frame(Resp::new(), &chunks);
            assert_eq!(res, Ok(()));
            assert_eq!(cmds, want, "{chunks:?}");
            assert_eq!(rest.as_slice(), b"*1\r\n$12\r\n");
        }
    }

    /// Only the unfinished command's bytes are kept; the next read gives
    /// exactly what it lacks, and what follows is framed in place.
    #[test]
    fn only_the_unfinished_command_is_kept() {
        let mut resp = Resp::new();
        let mut rest = Remainder::new();
        let mut seen = Vec::new();
        let mut read = |resp: &mut Resp, rest: &mut Remainder, input: &[u8]| {
            resp.split(rest, input, |cmd: Command<'_>| {
                seen.push(own(cmd));
                Flow::Continue
            })
            .unwrap();
        };
        read(&mut resp, &mut rest, b"PING\r\n*2\r\n$3\r\nGET\r\n$1");
        assert_eq!(rest.as_slice(), b"*2\r\n$3\r\nGET\r\n$1");
        assert_eq!(rest.capacity(), rest.len());
        read(&mut resp, &mut rest, b"0\r\n0123");
        assert_eq!(rest.as_slice(), b"*2\r\n$3\r\nGET\r\n$10\r\n0123");
        read(&mut resp, &mut rest, b"456789\r\nECHO x\r\nEC");
        assert_eq!(rest.as_slice(), b"EC");
        assert_eq!(
            seen,
            vec![
                args(&[b"PING"]),
                args(&[b"GET", b"0123456789"]),
                args(&[b"ECHO", b"x"])
            ]
        );
    }

    /// A big value arriving in many reads is kept in one buffer that
    /// grows to its size, no further.
    #[test]
    fn a_large_value_in_many_reads() {
        let value = vec![b'v'; 100_000];
        let data = array(&[b"SET", b"k", &value]);
        let chunks: Vec<&[u8]> = data.chunks(4096).collect();
        let mut resp = Resp::new();
        let mut rest = Remainder::new();
        let mut got = None;
        for chunk in &chunks {
            resp.split(&mut rest, chunk, |cmd: Command<'_>| {
                got = Some(cmd.get(2).unwrap().len());
                Flow::Continue
            })
            .unwrap();
            assert!(
                rest.capacity() <= data.len(),
                "capacity {}",
                rest.capacity()
            );
        }
        assert_eq!(got, Some(100_000));
        assert!(rest.is_empty());
    }

    /// `Stop` on a command finished from the remainder drops the read.
    #[test]
    fn stop_after_a_straddling_command() {
        let mut resp = Resp::new();
        let mut rest = Remainder::new();
        resp.split(&mut rest, b"QUI", |_| Flow::Continue).unwrap();
        let mut seen = Vec::new();
        resp.split(&mut rest, b"T\r\nPING\r\n", |cmd: Command<'_>| {
            seen.push(own(cmd));
            Flow::Stop
        })
        .unwrap();
        assert_eq!(seen, vec![args(&[b"QUIT"])]);
        assert!(rest.is_empty());
    }

    /// `Stop` on a command inside the read ends there.
    #[test]
    fn stop_inside_a_read() {
        let mut seen = Vec::new();
        let mut rest = Remainder::new();
        Resp::new()
            .split(&mut rest, b"A\r\nB\r\nC\r\n*1\r\n", |cmd: Command<'_>| {
                seen.push(own(cmd));
                if seen.len() == 2 {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            })
            .unwrap();
        assert_eq!(seen, vec![args(&[b"A"]), args(&[b"B"])]);
        assert!(rest.is_empty());
    }
}

mod limits {
    use super::*;

    /// 1,048,576 elements may be announced; one more may not.
    #[test]
    fn the_element_count_bound() {
        let (_, rest, res) = frame(Resp::new(), &[b"*1048576\r\n"]);
        assert_eq!((res, rest.len()), (Ok(()), 10));
        for chunks in all_cuts(b"*1048577\r\n") {
            let (_, _, res) = frame(Resp::new(), &chunks);
            assert_eq!(res, malformed(INVALID_MULTIBULK));
        }
    }

    /// max-1 and max bulk lengths pass; max+1 fails from its header
    /// alone, before its payload.
    #[test]
    fn the_bulk_length_bound() {
        let resp = Resp::new().max_bulk_len(10);
        for len in [9, 10] {
            let data = array(&[&vec![b'x'; len]]);
            for chunks in all_cuts(&data) {
                let (cmds, _, res) = frame(resp.clone(), &chunks);
                assert_eq!((res, cmds.len()), (Ok(()), 1));
            }
        }
        for chunks in all_cuts(b"*1\r\n$11\r\n") {
            let (_, _, res) = frame(resp.clone(), &chunks);
            assert_eq!(res, malformed(INVALID_BULK));
        }
    }

    /// A 2^40-byte bulk is refused at once and nothing is allocated for
    /// it, however the header arrives.
    #[test]
    fn a_huge_bulk_is_refused_before_anything_is_buffered() {
        let data = b"*2\r\n$3\r\nSET\r\n$1099511627776\r\n";
        for chunks in all_cuts(data) {
            let (_, rest, res) = frame(Resp::new(), &chunks);
            assert_eq!(res, malformed(INVALID_BULK));
            // Byte by byte, geometric growth; never the announced size.
            assert!(
                rest.capacity() <= 2 * data.len(),
                "capacity {}",
                rest.capacity()
            );
        }
    }

    /// A request of max-1 or max bytes passes; max+1 is too long, found
    /// as early as it is certain, at every cut.
    #[test]
    fn the_request_size_bound() {
        let data = array(&[b"SET", b"k", b"0123456789"]);
        assert_eq!(data.len(), 37);
        for max in [37, 38] {
            for chunks in all_cuts(&data) {
                let (cmds, _, res) = frame(Resp::new().max_frame(max), &chunks);
                assert_eq!((res, cmds.len()), (Ok(()), 1), "max {max}");
            }
        }
        let too_long = Err(FrameError::TooLong { limit: 36 });
        for chunks in all_cuts(&data) {
            let (cmds, rest, res) = frame(Resp::new().max_frame(36), &chunks);
            assert_eq!((res, cmds.len()), (too_long, 0));
            assert!(rest.len() < 36);
        }
        // Known from the last header (`$10\r\n` ends at 25): 25 + 12 > 36.
        let (_, _, res) = frame(Resp::new().max_frame(36), &[&data[..25]]);
        assert_eq!(res, too_long);
        // A bulk longer than the request bound is an invalid length.
        let (_, _, res) = frame(Resp::new().max_frame(36), &[b"*1\r\n$37\r\n"]);
        assert_eq!(res, malformed(INVALID_BULK));
    }

    /// An inline command of 64 KiB passes with `CRLF` or `LF`, even when
    /// its `\r` waits alone; one byte more is "too big inline request".
    #[test]
    fn the_inline_bound() {
        let mut line = vec![b'x'; INLINE_MAX];
        line.extend_from_slice(b"\r\n");
        for at in [0, 1, INLINE_MAX, INLINE_MAX + 1, INLINE_MAX + 2] {
            let (cmds, rest, res) = frame(Resp::new(), &[&line[..at], &line[at..]]);
            assert_eq!((res, cmds.len()), (Ok(()), 1), "cut at {at}");
            assert!(rest.is_empty());
        }
        let (_, rest, res) = frame(Resp::new(), &[&line[..INLINE_MAX + 1]]);
        assert_eq!((res, rest.len()), (Ok(()), INLINE_MAX + 1));
        let mut long = vec![b'x'; INLINE_MAX + 1];
        long.extend_from_slice(b"\r\n");
        for at in [0, 1, INLINE_MAX, INLINE_MAX + 1, INLINE_MAX + 2] {
            let (_, _, res) = frame(Resp::new(), &[&long[..at], &long[at..]]);
            assert_eq!(res, malformed(TOO_BIG_INLINE), "cut at {at}");
        }
    }
}

mod malformed_requests {
    use super::*;

    /// Each broken rule gets redis's words, at every cut.
    #[test]
    fn each_rule_gets_its_error() {
        let cases: [(&[u8], FrameError); 9] = [
            (b"*abc\r\n", FrameError::Malformed(INVALID_MULTIBULK)),
            (b"*+1\r\n", FrameError::Malformed(INVALID_MULTIBULK)),
            (b"*-0\r\n", FrameError::Malformed(INVALID_MULTIBULK)),
            (
                b"*123456789012345678901",
                FrameError::Malformed(INVALID_MULTIBULK),
            ),
            (
                b"*1\r\nfoo\r\n",
                FrameError::Unexpected {
                    expected: b'$',
                    found: b'f',
                },
            ),
            (b"*1\r\n$-1\r\n", FrameError::Malformed(INVALID_BULK)),
            (b"*1\r\n$01\r\nx\r\n", FrameError::Malformed(INVALID_BULK)),
            (b"*1\r\n$1 \r\nx\r\n", FrameError::Malformed(INVALID_BULK)),
            (b"*2\r\n$1\r\nx\r\n$", FrameError::Malformed(INVALID_BULK)),
        ];
        for (i, (data, want)) in cases.iter().enumerate() {
            // The last: a `$` then 21 bytes with no `\r`.
            let mut data = data.to_vec();
            if i == 8 {
                data.extend_from_slice(&[b'1'; 21]);
            }
            for chunks in all_cuts(&data) {
                let (_, _, res) = frame(Resp::new(), &chunks);
                assert_eq!(res, Err(*want), "{:?}", data.escape_ascii().to_string());
            }
        }
    }

    /// The replies are redis-server's, one line each.
    #[test]
    fn error_replies_are_redis_words() {
        let resp = Resp::new();
        let reply = |e| {
            resp.error_reply(&e)
                .map(|r| String::from_utf8_lossy(r).into_owned())
        };
        assert_eq!(
            reply(FrameError::Malformed(INVALID_MULTIBULK)).unwrap(),
            "-ERR Protocol error: invalid multibulk length\r\n"
        );
        assert_eq!(
            reply(FrameError::Malformed(INVALID_BULK)).unwrap(),
            "-ERR Protocol error: invalid bulk length\r\n"
        );
        assert_eq!(
            reply(FrameError::Malformed(TOO_BIG_INLINE)).unwrap(),
            "-ERR Protocol error: too big inline request\r\n"
        );
        assert_eq!(
            reply(FrameError::Unexpected {
                expected: b'$',
                found: b'f'
            })
            .unwrap(),
            "-ERR Protocol error: expected '$', got 'f'\r\n"
        );
        assert_eq!(
            reply(FrameError::Unexpected {
                expected: b'$',
                found: b'\n'
            })
            .unwrap(),
            "-ERR Protocol error: expected '$', got ' '\r\n"
        );
        assert_eq!(reply(FrameError::TooLong { limit: 5 }), None);
    }

    /// Numbers follow redis's `string2ll` exactly.
    #[test]
    fn numbers_are_read_as_string2ll() {
        let cases: [(&[u8], Option<i64>); 12] = [
            (b"0", Some(0)),
            (b"7", Some(7)),
            (b"-1", Some(-1)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"9223372036854775808", None),
            (b"-9223372036854775809", None),
            (b"01", None),
            (b"-0", None),
            (b"", None),
            (b"+1", None),
            (b"1a", None),
        ];
        for (s, want) in cases {
            assert_eq!(string2ll(s), want, "{:?}", s.escape_ascii().to_string());
        }
    }
}

const SKIPPED: [&[u8]; 4] = [b"*0\r\n", b"*-1\r\n", b"\r\n", b" \n"];

/// One valid request and the arguments it must give (none: skipped).
fn request() -> impl Strategy<Value = (Vec<u8>, Option<Args>)> {
    let word = proptest::collection::vec(
        prop_oneof![Just(b'a'), Just(b'Z'), Just(b'0'), Just(b'"')],
        1..6,
    );
    let space = proptest::collection::vec(prop_oneof![Just(b' '), Just(b'\t')], 1..3);
    prop_oneof![
        // An array of binary arguments.
        4 => proptest::collection::vec(
            proptest::collection::vec(prop_oneof![3 => Just(b'x'), 1 => Just(b'\r'), 1 => Just(b'\n'), 1 => any::<u8>()], 0..12),
            1..5,
        )
        .prop_map(|a| {
            let refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
            (array(&refs), Some(a))
        }),
        // An inline command.
        2 => (proptest::collection::vec((space.clone(), word), 1..4), space, any::<bool>()).prop_map(|(words, trailing, crlf)| {
            let mut line = Vec::new();
            for (sp, w) in &words {
                line.extend_from_slice(sp);
                line.extend_from_slice(w);
            }
            line.extend_from_slice(&trailing);
            line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            (line, Some(words.into_iter().map(|(_, w)| w).collect()))
        }),
        // Requests redis skips.
        1 => proptest::sample::select(&SKIPPED[..]).prop_map(|s| (s.to_vec(), None)),
    ]
}

/// Bytes made of RESP's pieces, valid or not.
fn resp_like() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: [&[u8]; 16] = [
        b"*",
        b"$",
        b"\r\n",
        b"\r",
        b"\n",
        b"1",
        b"2",
        b"0",
        b"-",
        b"9",
        b"ab",
        b" ",
        b"*2\r\n",
        b"$3\r\n",
        b"$1\r\nx\r\n",
        b"GET k\r\n",
    ];
    proptest::collection::vec(proptest::sample::select(&PIECES[..]), 0..48)
        .prop_map(|pieces| pieces.concat())
}

proptest! {
    /// A stream of valid requests, cut anywhere, yields exactly its
    /// commands, and the remainder stays under the request bound.
    #[test]
    fn valid_requests_survive_any_cuts(
        requests in proptest::collection::vec(request(), 0..24),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let data: Vec<u8> = requests.iter().flat_map(|(b, _)| b.clone()).collect();
        let want: Vec<Args> = requests.into_iter().filter_map(|(_, a)| a).collect();
        let max = 128;
        let (got, rest, res, peak) = run(&mut Resp::new().max_frame(max), &cut(&data, &cuts), own);
        prop_assert_eq!(res, Ok(()));
        prop_assert_eq!(got, want);
        prop_assert!(rest.is_empty());
        prop_assert!(peak < max);
    }

    /// Any RESP-like bytes, cut anywhere, give the same commands,
    /// leftover and verdict as one read, with tight bounds; the
    /// remainder stays under the request bound.
    #[test]
    fn chunking_never_changes_the_outcome(
        data in resp_like(),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
        max_frame in 2usize..48,
        max_bulk in 0usize..8,
    ) {
        let resp = Resp::new().max_frame(max_frame).max_bulk_len(max_bulk);
        let (whole, whole_rest, whole_res) = frame(resp.clone(), &[&data]);
        let (pieces, rest, res, peak) = run(&mut resp.clone(), &cut(&data, &cuts), own);
        prop_assert_eq!(whole_res, res);
        prop_assert_eq!(whole, pieces);
        if res.is_ok() {
            prop_assert_eq!(whole_rest.as_slice(), rest.as_slice());
        }
        prop_assert!(peak < max_frame);
        prop_assert!(rest.capacity() <= max_frame);
    }
}
