//! Writing RESP (RESP2) replies: what a Redis-protocol handler sends back.
//!
//! Each function writes one reply into any [`std::io::Write`]: a `Vec<u8>`,
//! or the connection itself. Numbers are formatted on the stack, and each
//! header goes out in one `write_all`, so nothing is allocated per reply.
//!
//! ```
//! use netpool::resp;
//!
//! let mut out = Vec::new();
//! resp::array_header(&mut out, 2)?;
//! resp::bulk(&mut out, b"a\r\nb")?;
//! resp::null_bulk(&mut out)?;
//! resp::integer(&mut out, -12)?;
//! resp::simple(&mut out, "OK")?;
//! resp::error(&mut out, "ERR unknown command 'x'")?;
//! assert_eq!(out, b"*2\r\n$4\r\na\r\nb\r\n$-1\r\n:-12\r\n+OK\r\n-ERR unknown command 'x'\r\n");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Errors
//!
//! Every function returns what the writer returns; writing to a `Vec<u8>`
//! never fails.

use std::io::{self, Write};

use memchr::memchr2;

/// `+text\r\n`. A `\r` or `\n` inside `text` would end the reply early and
/// is written as a space, as redis-server does.
pub fn simple(out: &mut impl Write, text: impl AsRef<[u8]>) -> io::Result<()> {
    line(out, b'+', text.as_ref())
}

/// `-text\r\n`, where `text` starts with the error's code: `"ERR ..."`,
/// `"WRONGTYPE ..."`. A `\r` or `\n` inside it is written as a space.
pub fn error(out: &mut impl Write, text: impl AsRef<[u8]>) -> io::Result<()> {
    line(out, b'-', text.as_ref())
}

/// `:n\r\n`.
pub fn integer(out: &mut impl Write, n: i64) -> io::Result<()> {
    header(out, b':', n)
}

/// `$len\r\n` + `bytes` + `\r\n`: a binary-safe string.
pub fn bulk(out: &mut impl Write, bytes: impl AsRef<[u8]>) -> io::Result<()> {
    let bytes = bytes.as_ref();
    bulk_header(out, bytes.len())?;
    out.write_all(bytes)?;
    out.write_all(b"\r\n")
}

/// `$len\r\n`, the start of a bulk string whose `len` bytes and final `\r\n`
/// the caller writes, for a value that is not in one piece.
pub fn bulk_header(out: &mut impl Write, len: usize) -> io::Result<()> {
    // A length past i64::MAX cannot exist in memory.
    header(out, b'$', len as i64)
}

/// `$-1\r\n`: the null bulk string (a missing key).
pub fn null_bulk(out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"$-1\r\n")
}

/// `*len\r\n`, the header of an array of `len` replies, which follow.
pub fn array_header(out: &mut impl Write, len: usize) -> io::Result<()> {
    header(out, b'*', len as i64)
}

/// `*-1\r\n`: the null array.
pub fn null_array(out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"*-1\r\n")
}

/// `kind`, then `n` in decimal, then `\r\n`, in one write.
fn header(out: &mut impl Write, kind: u8, n: i64) -> io::Result<()> {
    // kind, a sign, 19 digits, CRLF.
    let mut buf = [0u8; 23];
    let mut at = buf.len() - 2;
    buf[at..].copy_from_slice(b"\r\n");
    let mut v = n.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    at -= 1;
    buf[at] = kind;
    out.write_all(&buf[at..])
}

/// `kind` + `text` + `\r\n`, with any `\r` or `\n` of `text` as a space.
fn line(out: &mut impl Write, kind: u8, text: &[u8]) -> io::Result<()> {
    out.write_all(&[kind])?;
    let mut rest = text;
    while let Some(i) = memchr2(b'\r', b'\n', rest) {
        out.write_all(&rest[..i])?;
        out.write_all(b" ")?;
        rest = &rest[i + 1..];
    }
    out.write_all(rest)?;
    out.write_all(b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        out
    }

    /// Integers at the edges of `i64` are written exactly.
    #[test]
    fn integers_at_the_edges() {
        for n in [0, 7, -7, 10, -10, i64::MAX, i64::MIN] {
            assert_eq!(written(|o| integer(o, n)), format!(":{n}\r\n").into_bytes());
        }
    }

    /// A bulk string is binary-safe; its length counts bytes.
    #[test]
    fn bulk_strings_are_binary_safe() {
        assert_eq!(written(|o| bulk(o, b"a\r\n\0")), b"$4\r\na\r\n\0\r\n");
        assert_eq!(written(|o| bulk(o, "")), b"$0\r\n\r\n");
        assert_eq!(
            written(|o| bulk(o, vec![b'x'; 12])),
            [&b"$12\r\n"[..], &[b'x'; 12], b"\r\n"].concat()
        );
        assert_eq!(written(null_bulk), b"$-1\r\n");
    }

    /// Array headers and the null array.
    #[test]
    fn arrays() {
        assert_eq!(written(|o| array_header(o, 0)), b"*0\r\n");
        assert_eq!(written(|o| array_header(o, 1234)), b"*1234\r\n");
        assert_eq!(written(null_array), b"*-1\r\n");
    }

    /// A line break inside a simple string or an error cannot end it early.
    #[test]
    fn line_breaks_in_one_line_replies_become_spaces() {
        assert_eq!(written(|o| simple(o, "OK")), b"+OK\r\n");
        assert_eq!(
            written(|o| error(o, "ERR a\r\nb\nc\r")),
            b"-ERR a  b c \r\n"
        );
    }
}
