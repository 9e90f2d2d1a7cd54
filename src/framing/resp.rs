//! RESP framing: Redis requests, as redis-server parses them.
//!
//! A request is either an array of bulk strings,
//!
//! ```text
//! *3\r\n $3\r\n SET\r\n $1\r\n k\r\n $5\r\n v\r\nv\0\r\n      (binary-safe)
//! ```
//!
//! or an *inline* command, one line split on white space (`PING\r\n` typed
//! into a terminal). This file follows redis-server's `processMultibulkBuffer`
//! and `processInlineBuffer` (networking.c) rule for rule, with the same
//! error words, except where noted on [`Resp`].
//!
//! # Parsing once, buffering only the straddler
//!
//! Commands inside one read are parsed in place and handed out as a
//! [`Command`]: the command's bytes (borrowed from the read) and the offsets
//! of its arguments, kept in the framing's scratch vector, which is reused
//! from command to command. A command that straddles reads is the one case
//! that copies: its bytes, and only its bytes, go to the remainder, together
//! with how far it has been parsed (the remainder's mark: the offset of its
//! next element and how many are left). The next read finishes the element
//! in flight from a small stack copy of its header, then parses on in the
//! input and copies exactly the bytes the command still needs. Once complete,
//! its headers are parsed a second time, in the remainder, to produce the
//! offsets: only a straddling command's headers are read twice, never its
//! payload, and never anything of the other commands.
//!
//! # Same verdict however the stream is cut
//!
//! The bound on a command is checked as "the first `max_frame` bytes of the
//! command do not finish it": the parser never looks past that many bytes of
//! one command. An incomplete command that already holds `max_frame` bytes is
//! [`FrameError::TooLong`]; so is a bulk header announcing a payload that
//! would end past the bound. So the error a stream gets, and where, does not
//! depend on where the reads were cut, which the property tests check.

use memchr::memchr;

use super::{Flow, FrameError, Framing, Remainder};

/// redis-server's `PROTO_INLINE_MAX_SIZE`: the longest inline command.
const INLINE_MAX: usize = 64 * 1024;
/// redis-server's bound on the element count of a request array.
const MAX_ARGS: i64 = 1024 * 1024;
/// The longest number `string2ll` accepts: `-9223372036854775808`.
const MAX_DIGITS: usize = 20;
/// The longest header (`$`, digits, `\r`, one more byte) that can be valid.
const HEADER_MAX: usize = 1 + MAX_DIGITS + 2;
/// Scratch offsets kept for reuse between commands; a bigger command's are
/// given back after it, so one huge request does not pin memory for good.
const SCRATCH_KEEP: usize = 64 * 1024;

const INVALID_MULTIBULK: &str = "invalid multibulk length";
const INVALID_BULK: &str = "invalid bulk length";
const TOO_BIG_INLINE: &str = "too big inline request";

/// Redis requests: arrays of bulk strings (binary-safe) and inline commands.
/// The frame is a [`Command`], a borrowed view of the arguments.
///
/// ```
/// use netpool::{Command, Flow, Framing, Remainder, Resp};
///
/// let mut resp = Resp::new();
/// let mut rest = Remainder::new();
/// let mut seen = Vec::new();
/// let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\nPING\r\n*2\r\n$3\r\nGET";
/// resp.split(&mut rest, input, |cmd: Command<'_>| {
///     seen.push(cmd.iter().map(<[u8]>::to_vec).collect::<Vec<_>>());
///     Flow::Continue
/// })?;
/// assert_eq!(seen[0], [&b"SET"[..], b"k", b"a\r\nb"]);
/// assert_eq!(seen[1], [b"PING"]);
/// // `GET` waits for the rest of its command; only its bytes are kept.
/// assert_eq!(rest.as_slice(), b"*2\r\n$3\r\nGET");
/// # Ok::<(), netpool::FrameError>(())
/// ```
///
/// # As redis-server does
///
/// - A request starting with `*` is an array; its count must be at most
///   1,048,576 ("invalid multibulk length"), and a count of zero or less is
///   skipped. Each element must start with `$` ("expected '$', got 'x'") and
///   have a length from 0 to [`max_bulk_len`](Self::max_bulk_len) ("invalid
///   bulk length"). Numbers are parsed as redis's `string2ll`: no `+`, no
///   leading zero, no space.
/// - As redis-server, the byte after each header's `\r` and the two after a
///   bulk's payload are skipped without being looked at.
/// - Anything else is an inline command: a line up to `\n` (one `\r` before
///   it stripped), split on ASCII white space; an empty line is skipped. Over
///   64 KiB it is "too big inline request".
/// - [`error_reply`](Framing::error_reply) gives redis's reply,
///   `-ERR Protocol error: ...\r\n`, to send before closing.
///
/// Unlike redis-server: an inline command's quotes and escapes are not
/// interpreted (`"a b"` is two arguments, `"a` and `b"`); clients other than
/// a person at a terminal send arrays. A header longer than a number can be
/// (21 bytes without `\r`) is an invalid length at once, where redis-server
/// waits for 64 KiB ("too big mbulk count string").
///
/// # Memory
///
/// Lengths are checked before anything is buffered or allocated: an announced
/// count or length over its bound is refused at once, whatever follows (a
/// client announcing a 2^40-byte bulk gets "invalid bulk length" and the
/// server allocates nothing). A connection buffers only a command that
/// straddles reads, at most [`max_frame`](Self::max_frame) − 1 bytes (default
/// 1 GiB, redis-server's `client-query-buffer-limit`), in a buffer that grows
/// with the bytes that arrive, never with the lengths announced. A single
/// bulk longer than `max_frame` is "invalid bulk length"; a command whose
/// whole encoding passes `max_frame` is [`FrameError::TooLong`], closed
/// without a reply as redis-server does at its query buffer limit. Size
/// `max_frame` to the largest request you serve times the connections you
/// can afford to have sending one at once. The framing itself keeps 8 bytes
/// of scratch per argument of the largest command seen, given back after
/// commands of more than 65,536 arguments.
#[derive(Clone)]
pub struct Resp {
    max_bulk: usize,
    max_frame: usize,
    /// The current command's arguments: (offset from the command's first
    /// byte, length). `u32` is enough: `max_frame` is at most `u32::MAX`.
    spans: Vec<(u32, u32)>,
}

impl Default for Resp {
    fn default() -> Self {
        Resp::new()
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resp")
            .field("max_bulk_len", &self.max_bulk)
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}

/// How a parse of one command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parsed {
    /// A command ending just before `end`; its arguments are in `spans`.
    Command { end: usize },
    /// Something to skip up to `end` (`*0`, `*-1`, an empty line).
    Skipped { end: usize },
    /// Unfinished: the next element starts at `pos`, and `remaining` are
    /// still to come (0: the array's count itself, or an inline command).
    Partial { pos: usize, remaining: u32 },
}

/// A header line (`*N\r?` or `$N\r?`) starting at its type byte.
enum Header {
    /// The number, and the header's length including `\r` and the byte after.
    Complete { value: i64, len: usize },
    /// More bytes are needed.
    Partial,
    /// No valid number can come of it.
    Invalid,
}

impl Resp {
    /// Requests with bulk strings of at most 512 MiB and commands of at most
    /// 1 GiB, redis-server's defaults.
    pub fn new() -> Self {
        Resp {
            max_bulk: 512 * 1024 * 1024,
            max_frame: 1024 * 1024 * 1024,
            spans: Vec::new(),
        }
    }

    /// The longest bulk string accepted (redis-server's
    /// `proto-max-bulk-len`, default 512 MiB); longer is "invalid bulk
    /// length", refused from its header.
    pub fn max_bulk_len(mut self, bytes: usize) -> Self {
        self.max_bulk = bytes;
        self
    }

    /// The longest request accepted, counted as sent (headers, `\r\n`s and
    /// payloads), and so the most a connection buffers; see `# Memory`.
    /// Default 1 GiB.
    ///
    /// # Panics
    ///
    /// If `bytes` is less than 2 or more than `u32::MAX`.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        assert!(
            (2..=u32::MAX as usize).contains(&bytes),
            "Resp::max_frame must be from 2 to u32::MAX bytes"
        );
        self.max_frame = bytes;
        self
    }

    /// The longest bulk string accepted, in bytes.
    pub fn bulk_limit(&self) -> usize {
        self.max_bulk
    }

    /// The longest request accepted, in bytes.
    pub fn frame_limit(&self) -> usize {
        self.max_frame
    }

    /// The longest inline command: redis's 64 KiB, or less if the whole
    /// line (with `\r\n`) would not fit in `max_frame`.
    fn inline_limit(&self) -> usize {
        INLINE_MAX.min(self.max_frame - 2)
    }

    /// The error for an incomplete command with `present` bytes so far: it
    /// needs more than that, so `present >= max_frame` is already too long.
    fn unfinished(&self, present: usize, pos: usize, remaining: u32) -> Result<Parsed, FrameError> {
        if present >= self.max_frame {
            return Err(FrameError::TooLong {
                limit: self.max_frame,
            });
        }
        Ok(Parsed::Partial { pos, remaining })
    }

    /// Checks a bulk string's announced length; returns its whole size
    /// (header, payload, `\r\n`) counted from the command's first byte,
    /// given that its header starts at command offset `at` and is
    /// `header_len` long.
    fn bulk_end(&self, at: usize, header_len: usize, value: i64) -> Result<usize, FrameError> {
        if value < 0 || value as u64 > self.max_bulk.min(self.max_frame) as u64 {
            return Err(FrameError::Malformed(INVALID_BULK));
        }
        let end = at as u64 + header_len as u64 + value as u64 + 2;
        if end > self.max_frame as u64 {
            return Err(FrameError::TooLong {
                limit: self.max_frame,
            });
        }
        Ok(end as usize)
    }

    /// Parses the array request that starts at `buf[start]`, from element
    /// `pos` with `remaining` elements to go (0: from its count). `prefix`
    /// bytes of the command came before `buf[start]` (in the remainder);
    /// with `keep`, argument offsets are recorded relative to `start`.
    fn parse_array(
        &mut self,
        buf: &[u8],
        start: usize,
        prefix: usize,
        mut pos: usize,
        mut remaining: u32,
        keep: bool,
    ) -> Result<Parsed, FrameError> {
        // Never look past the command's first `max_frame` bytes (see the
        // module doc): what is not finished by then is too long.
        let view = &buf[..buf.len().min(start + (self.max_frame - prefix))];
        let present = prefix + (buf.len() - start);
        if remaining == 0 {
            match header(&view[pos..]) {
                Header::Invalid => return Err(FrameError::Malformed(INVALID_MULTIBULK)),
                Header::Partial => return self.unfinished(present, pos, 0),
                Header::Complete { value, len } => {
                    if value > MAX_ARGS {
                        return Err(FrameError::Malformed(INVALID_MULTIBULK));
                    }
                    pos += len;
                    if value <= 0 {
                        return Ok(Parsed::Skipped { end: pos });
                    }
                    remaining = value as u32;
                }
            }
        }
        while remaining > 0 {
            let Some(&kind) = view.get(pos) else {
                return self.unfinished(present, pos, remaining);
            };
            if kind != b'$' {
                return Err(FrameError::Unexpected {
                    expected: b'$',
                    found: kind,
                });
            }
            let (value, len) = match header(&view[pos..]) {
                Header::Invalid => return Err(FrameError::Malformed(INVALID_BULK)),
                Header::Partial => return self.unfinished(present, pos, remaining),
                Header::Complete { value, len } => (value, len),
            };
            let end = self.bulk_end(prefix + (pos - start), len, value)? - prefix + start;
            if end > buf.len() {
                return self.unfinished(present, pos, remaining);
            }
            if keep {
                self.spans.push(((pos + len - start) as u32, value as u32));
            }
            pos = end;
            remaining -= 1;
        }
        Ok(Parsed::Command { end: pos })
    }

    /// Parses the inline command that starts at `buf[start]`.
    fn parse_inline(&mut self, buf: &[u8], start: usize) -> Result<Parsed, FrameError> {
        let limit = self.inline_limit();
        // A valid line ends within its content, a `\r` and the `\n`.
        let window = &buf[start..buf.len().min(start + limit + 2)];
        match memchr(b'\n', window) {
            Some(i) => {
                let line = strip_cr(&window[..i]);
                if line.len() > limit {
                    return Err(FrameError::Malformed(TOO_BIG_INLINE));
                }
                let end = start + i + 1;
                if self.tokenize(line) {
                    Ok(Parsed::Command { end })
                } else {
                    Ok(Parsed::Skipped { end })
                }
            }
            None => {
                let tail = &buf[start..];
                if content_len(tail.len(), tail.last().copied()) > limit {
                    return Err(FrameError::Malformed(TOO_BIG_INLINE));
                }
                Ok(Parsed::Partial {
                    pos: start,
                    remaining: 0,
                })
            }
        }
    }

    /// Records the white-space separated words of `line` as the arguments;
    /// false if there are none.
    fn tokenize(&mut self, line: &[u8]) -> bool {
        let mut i = 0;
        while i < line.len() {
            while i < line.len() && is_space(line[i]) {
                i += 1;
            }
            let word = i;
            while i < line.len() && !is_space(line[i]) {
                i += 1;
            }
            if i > word {
                self.spans.push((word as u32, (i - word) as u32));
            }
        }
        !self.spans.is_empty()
    }

    /// Continues the command that straddles, kept in `rest`, with `input`.
    /// `Ok(None)`: `input` was all taken and the command is still unfinished.
    /// `Ok(Some(used))`: the command is complete in `rest`, with the first
    /// `used` bytes of `input`.
    fn resume(&mut self, rest: &mut Remainder, input: &[u8]) -> Result<Option<usize>, FrameError> {
        if rest.as_slice()[0] != b'*' {
            return self.resume_inline(rest, input);
        }
        let (pos, mut remaining) = unpack(rest.mark());
        let mut used = 0;

        // 1. Finish the element in flight, if it has begun: its header is
        // parsed from a stack copy of what we have and what just came.
        if pos < rest.len() {
            let have = &rest.as_slice()[pos..];
            let mut head = [0u8; HEADER_MAX];
            let n1 = have.len().min(HEADER_MAX);
            head[..n1].copy_from_slice(&have[..n1]);
            // Not past the command's first `max_frame` bytes.
            let room = (self.max_frame - pos).saturating_sub(n1);
            let n2 = (HEADER_MAX - n1).min(input.len()).min(room);
            head[n1..n1 + n2].copy_from_slice(&input[..n2]);
            match header(&head[..n1 + n2]) {
                Header::Invalid if remaining == 0 => {
                    return Err(FrameError::Malformed(INVALID_MULTIBULK))
                }
                Header::Invalid => return Err(FrameError::Malformed(INVALID_BULK)),
                Header::Partial => {
                    // A partial header is under HEADER_MAX bytes, so this
                    // took all of `input`, or hit the bound.
                    rest.extend(&input[..n2], self.max_frame);
                    self.unfinished(rest.len() + (input.len() - n2), pos, remaining)?;
                    return Ok(None);
                }
                Header::Complete { value, len } if remaining == 0 => {
                    if value > MAX_ARGS {
                        return Err(FrameError::Malformed(INVALID_MULTIBULK));
                    }
                    // The count's header was unfinished: all of `have` is
                    // header, and the rest of it comes from `input`.
                    used = len - have.len();
                    rest.extend(&input[..used], self.max_frame);
                    if value <= 0 {
                        return Ok(Some(used));
                    }
                    remaining = value as u32;
                }
                Header::Complete { value, len } => {
                    let end = self.bulk_end(pos, len, value)?;
                    used = (end - rest.len()).min(input.len());
                    rest.extend(&input[..used], end);
                    if rest.len() < end {
                        rest.set_mark(pack(pos, remaining));
                        return Ok(None);
                    }
                    remaining -= 1;
                }
            }
        }

        // 2. The next elements begin in `input` (and at the end of `rest`):
        // parse them there, then copy exactly the bytes of the command.
        if remaining > 0 {
            let before = rest.len();
            match self.parse_array(input, used, before, used, remaining, false)? {
                Parsed::Command { end } => {
                    rest.extend(&input[used..end], self.max_frame);
                    used = end;
                }
                Parsed::Partial { pos, remaining } => {
                    rest.extend(&input[used..], self.max_frame);
                    rest.set_mark(pack(before + (pos - used), remaining));
                    return Ok(None);
                }
                Parsed::Skipped { .. } => unreachable!("only the count can be skipped"),
            }
        }
        Ok(Some(used))
    }

    /// [`resume`](Self::resume) for an inline command: `rest` holds no `\n`,
    /// so only `input` is searched.
    fn resume_inline(
        &mut self,
        rest: &mut Remainder,
        input: &[u8],
    ) -> Result<Option<usize>, FrameError> {
        let limit = self.inline_limit();
        let window = &input[..input.len().min((limit + 2).saturating_sub(rest.len()))];
        let (len, last, used) = match memchr(b'\n', window) {
            Some(i) => (
                rest.len() + i,
                if i > 0 {
                    Some(input[i - 1])
                } else {
                    rest.as_slice().last().copied()
                },
                Some(i + 1),
            ),
            None => (
                rest.len() + window.len(),
                window.last().or(rest.as_slice().last()).copied(),
                None,
            ),
        };
        if content_len(len, last) > limit {
            return Err(FrameError::Malformed(TOO_BIG_INLINE));
        }
        // Within the bound, so `window` was not cut short: it is all of the
        // line that is in `input`.
        let taken = used.unwrap_or(window.len());
        rest.extend(&input[..taken], limit + 2);
        Ok(used)
    }

    /// Parses the complete command held in `rest` again, to record its
    /// arguments; false if it is one to skip.
    fn reparse(&mut self, command: &[u8]) -> Result<bool, FrameError> {
        self.spans.clear();
        let parsed = if command[0] == b'*' {
            self.parse_array(command, 0, 0, 0, 0, true)?
        } else {
            self.parse_inline(command, 0)?
        };
        debug_assert!(
            matches!(parsed, Parsed::Command { end } | Parsed::Skipped { end } if end == command.len())
        );
        Ok(matches!(parsed, Parsed::Command { .. }))
    }
}

impl Framing for Resp {
    type Frame<'a> = Command<'a>;

    fn split<F>(
        &mut self,
        rest: &mut Remainder,
        input: &[u8],
        mut on_frame: F,
    ) -> Result<(), FrameError>
    where
        F: FnMut(Command<'_>) -> Flow,
    {
        let mut at = 0;
        if !rest.is_empty() {
            let Some(used) = self.resume(rest, input)? else {
                return Ok(());
            };
            at = used;
            let flow = if self.reparse(rest.as_slice())? {
                on_frame(Command {
                    buf: rest.as_slice(),
                    spans: &self.spans,
                })
            } else {
                Flow::Continue
            };
            rest.clear();
            if flow == Flow::Stop {
                return Ok(());
            }
        }

        while at < input.len() {
            self.spans.clear();
            let parsed = if input[at] == b'*' {
                self.parse_array(input, at, 0, at, 0, true)?
            } else {
                self.parse_inline(input, at)?
            };
            match parsed {
                Parsed::Command { end } => {
                    let flow = on_frame(Command {
                        buf: &input[at..end],
                        spans: &self.spans,
                    });
                    if flow == Flow::Stop {
                        break;
                    }
                    at = end;
                }
                Parsed::Skipped { end } => at = end,
                Parsed::Partial { pos, remaining } => {
                    rest.extend(&input[at..], self.max_frame);
                    rest.set_mark(pack(pos - at, remaining));
                    break;
                }
            }
        }
        if self.spans.capacity() > SCRATCH_KEEP {
            self.spans = Vec::new();
        }
        Ok(())
    }

    fn error_reply(&self, error: &FrameError) -> Option<&[u8]> {
        match *error {
            FrameError::Malformed(INVALID_MULTIBULK) => {
                Some(b"-ERR Protocol error: invalid multibulk length\r\n")
            }
            FrameError::Malformed(INVALID_BULK) => {
                Some(b"-ERR Protocol error: invalid bulk length\r\n")
            }
            FrameError::Malformed(TOO_BIG_INLINE) => {
                Some(b"-ERR Protocol error: too big inline request\r\n")
            }
            FrameError::Unexpected {
                expected: b'$',
                found,
            } => Some(&EXPECTED_DOLLAR[usize::from(found)]),
            _ => None,
        }
    }
}

/// One request's arguments, borrowed: the command's name is the first.
///
/// A view over the request's bytes (in the loop's read buffer, or the
/// connection's remainder) and the framing's offsets: nothing is copied or
/// allocated per command. Valid for the duration of the handler call; copy
/// out what must outlive it.
#[derive(Clone, Copy)]
pub struct Command<'a> {
    buf: &'a [u8],
    spans: &'a [(u32, u32)],
}

impl<'a> Command<'a> {
    /// How many arguments, the name included (at least 1).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Always false: a command has at least its name.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Argument `i` (0 is the name), if there is one.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.spans.get(i).map(|&s| span(self.buf, s))
    }

    /// The command's name, as sent (`get`, `GET`, ...).
    pub fn name(&self) -> &'a [u8] {
        self.get(0).unwrap_or_default()
    }

    /// Whether the name is `name`, ignoring ASCII case, as Redis commands
    /// are matched: `cmd.name_eq_ignore_case(b"GET")`.
    pub fn name_eq_ignore_case(&self, name: &[u8]) -> bool {
        self.name().eq_ignore_ascii_case(name)
    }

    /// The arguments in order, the name first.
    pub fn iter(&self) -> Args<'a> {
        Args {
            buf: self.buf,
            spans: self.spans.iter(),
        }
    }

    /// The request as it was sent, for logging or forwarding.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

impl<'a> IntoIterator for Command<'a> {
    type Item = &'a [u8];
    type IntoIter = Args<'a>;

    fn into_iter(self) -> Args<'a> {
        self.iter()
    }
}

impl std::fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|a| a.escape_ascii().to_string()))
            .finish()
    }
}

/// The arguments of a [`Command`], name first.
#[derive(Debug, Clone)]
pub struct Args<'a> {
    buf: &'a [u8],
    spans: std::slice::Iter<'a, (u32, u32)>,
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        self.spans.next().map(|&s| span(self.buf, s))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl DoubleEndedIterator for Args<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.spans.next_back().map(|&s| span(self.buf, s))
    }
}

impl ExactSizeIterator for Args<'_> {}
impl std::iter::FusedIterator for Args<'_> {}

#[inline]
fn span(buf: &[u8], (start, len): (u32, u32)) -> &[u8] {
    &buf[start as usize..][..len as usize]
}

/// Parses the header that starts at `line[0]` (its type byte), as redis
/// does: the number runs to the first `\r`, which must be followed by one
/// more byte (not looked at).
fn header(line: &[u8]) -> Header {
    // A plain loop, not memchr: the number is a few bytes, shorter than
    // memchr's set-up.
    let window = line.len().min(1 + MAX_DIGITS + 1);
    let mut cr = 1;
    while cr < window && line[cr] != b'\r' {
        cr += 1;
    }
    if cr == window {
        return if window - 1 > MAX_DIGITS {
            Header::Invalid
        } else {
            Header::Partial
        };
    }
    if cr + 1 >= line.len() {
        return Header::Partial;
    }
    match string2ll(&line[1..cr]) {
        Some(value) => Header::Complete { value, len: cr + 2 },
        None => Header::Invalid,
    }
}

/// redis's `string2ll`: an optional `-`, then digits without a leading zero
/// (`0` alone is zero; `-0` is refused), fitting in an `i64`.
fn string2ll(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s {
        [b'-', digits @ ..] => (true, digits),
        _ => (false, s),
    };
    match digits {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        // i64::MIN's magnitude is one more than i64::MAX.
        (v <= 1 << 63).then(|| (v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// The white space `sdssplitargs` splits an inline command on (C's
/// `isspace`).
#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

#[inline]
fn strip_cr(line: &[u8]) -> &[u8] {
    match line.split_last() {
        Some((b'\r', rest)) => rest,
        _ => line,
    }
}

/// The content of an unfinished line of `len` bytes ending in `last`: a
/// final `\r` may yet be stripped, so it does not count.
#[inline]
fn content_len(len: usize, last: Option<u8>) -> usize {
    len - usize::from(last == Some(b'\r'))
}

fn pack(pos: usize, remaining: u32) -> u64 {
    pos as u64 | u64::from(remaining) << 32
}

fn unpack(mark: u64) -> (usize, u32) {
    ((mark & u64::from(u32::MAX)) as usize, (mark >> 32) as u32)
}

const EXPECTED_PREFIX: &[u8] = b"-ERR Protocol error: expected '$', got '";
const EXPECTED_LEN: usize = EXPECTED_PREFIX.len() + 4;

/// redis's `-ERR Protocol error: expected '$', got 'x'` for every byte `x`,
/// built at compile time so that `error_reply` can lend it. As redis's
/// `addReplyErrorFormat` does, a `\r` or `\n` is written as a space, which
/// keeps the reply one line.
static EXPECTED_DOLLAR: [[u8; EXPECTED_LEN]; 256] = expected_dollar();

const fn expected_dollar() -> [[u8; EXPECTED_LEN]; 256] {
    let mut table = [[0u8; EXPECTED_LEN]; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < EXPECTED_PREFIX.len() {
            table[b][i] = EXPECTED_PREFIX[i];
            i += 1;
        }
        table[b][i] = if b == b'\r' as usize || b == b'\n' as usize {
            b' '
        } else {
            b as u8
        };
        table[b][i + 1] = b'\'';
        table[b][i + 2] = b'\r';
        table[b][i + 3] = b'\n';
        b += 1;
    }
    table
}

#[cfg(test)]
mod tests;
