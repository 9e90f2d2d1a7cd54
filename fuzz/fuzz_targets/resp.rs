//! Resp, with fuzzer-chosen bounds: cutting the input anywhere must not
//! change the commands, the verdict or the leftover; the remainder stays
//! under the request bound; and every command, sent again as an array,
//! comes back the same.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use netpool::{Command, Resp};

fn own(cmd: Command<'_>) -> Vec<Vec<u8>> {
    cmd.iter().map(<[u8]>::to_vec).collect()
}

fuzz_target!(|input: (u8, u8, Vec<u16>, &[u8])| {
    let (max_frame, max_bulk, cuts, data) = input;
    let max_frame = usize::from(max_frame) + 2;
    let resp = Resp::new().max_frame(max_frame).max_bulk_len(usize::from(max_bulk));
    let whole = common::frame(&resp, &[data], own);
    let pieces = common::frame(&resp, &common::cut(data, &cuts), own);
    common::same(&whole, &pieces, max_frame - 1);
    for args in &whole.frames {
        assert!(!args.is_empty(), "a command has a name");
        let mut encoded = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            encoded.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            encoded.extend_from_slice(a);
            encoded.extend_from_slice(b"\r\n");
        }
        let again = common::frame(&Resp::new(), &[&encoded], own);
        assert_eq!(again.verdict, Ok(()));
        assert_eq!(&again.frames, &[args.clone()]);
    }
});
