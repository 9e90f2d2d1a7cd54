//! Replies reserved in order and filled out of order: the part of a
//! connection's output that waits for other threads.
//!
//! A handler that hands a request to another thread reserves the place of
//! its reply first ([`Conn::defer`](crate::Conn::defer)). Everything the
//! connection sends after that point must wait behind the place until the
//! reply arrives, because a request/response protocol pairs replies with
//! requests by position alone. So a connection with replies outstanding has
//! an output shaped like this:
//!
//! ```text
//!   wire queue (sealed, ready)  | slot 4 | bytes sent after 4 | slot 5 | slot 6 | bytes after 6
//!   └ Outbox's buffer ─────────┘ └ Ordered: one entry per slot, each with what followed it ───┘
//! ```
//!
//! Filling a slot stores its reply in its entry. Whenever the first entry is
//! filled, it and every filled entry right behind it are *released*: their
//! replies and the bytes that followed them leave, in order, as one run of
//! plaintext for the driver to seal and write. A slot dropped unfilled is
//! filled with nothing, so it releases its place instead of stalling the
//! connection.
//!
//! Everything here is plaintext: on a TLS connection the bytes are sealed
//! only when released, so TLS records leave in the order of the stream.
//!
//! Sequence numbers are dense per connection and restart at 0 whenever
//! nothing is outstanding: a slot's number is used once (its one fill or
//! drop arrives before its entry can be released), so an old number can
//! never match a new entry.

use std::collections::VecDeque;

/// The outstanding replies of one connection, in reservation order.
#[derive(Debug, Default)]
pub(crate) struct Ordered {
    /// One entry per slot not yet released; `entries[i]` is slot `first + i`.
    entries: VecDeque<Entry>,
    /// The sequence number of `entries[0]`.
    first: u64,
    /// Slots reserved during the handler call in progress: their positions
    /// in the call's output, and their numbers (see [`Ordered::settle`]).
    marks: Vec<(usize, u64)>,
    /// Bytes held in the entries (replies and what followed them): they
    /// count toward the connection's water marks and output limit.
    held: usize,
}

/// One reserved reply and the output that followed it.
#[derive(Debug, Default)]
struct Entry {
    /// `None` until filled (a dropped slot is filled with nothing).
    reply: Option<Vec<u8>>,
    /// Bytes sent after this slot, before the next one.
    after: Vec<u8>,
}

/// What became of a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// The reply is in its place.
    Filled,
    /// No outstanding slot has that number (already released, or never
    /// reserved): a stale fill, dropped.
    Unknown,
}

impl Ordered {
    /// Slots reserved and not yet released (filled ones waiting behind an
    /// earlier slot included): what the outstanding bound counts.
    #[inline]
    pub(crate) fn outstanding(&self) -> usize {
        self.entries.len() + self.marks.len()
    }

    /// Bytes held behind unfilled slots.
    #[inline]
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.marks.is_empty()
    }

    /// Reserves the next slot at position `at` of the output the handler is
    /// writing now; returns its number. The place takes effect at
    /// [`settle`](Ordered::settle), when the handler call is over.
    pub(crate) fn mark(&mut self, at: usize) -> u64 {
        let seq = self.first + self.outstanding() as u64;
        debug_assert!(self.marks.last().map_or(true, |&(prev, _)| prev <= at));
        self.marks.push((at, seq));
        seq
    }

    /// After a handler call: `out` is what the call wrote, from `start` on.
    /// Bytes behind a slot (reserved before the call, or by it) move out of
    /// `out` into the entries; `out` keeps only what may leave now.
    pub(crate) fn settle(&mut self, out: &mut Vec<u8>, start: usize) {
        // Where the bytes that must wait begin: everything the call wrote if
        // a slot was already outstanding, else from its first reservation.
        let cut = match (self.entries.is_empty(), self.marks.first()) {
            (false, _) => start,
            (true, Some(&(at, _))) => at,
            (true, None) => return,
        };
        let marks = std::mem::take(&mut self.marks);
        let mut from = cut;
        for &(at, seq) in &marks {
            self.hold(&out[from..at]);
            debug_assert_eq!(seq, self.first + self.entries.len() as u64);
            self.entries.push_back(Entry::default());
            from = at;
        }
        self.hold(&out[from..]);
        out.truncate(cut);
        // Keep the vector's memory for the next call's marks.
        self.marks = marks;
        self.marks.clear();
    }

    /// Drops the marks of a handler call that did not finish (it panicked;
    /// the connection is closing at once).
    pub(crate) fn forget_marks(&mut self) {
        self.marks.clear();
    }

    /// Appends `bytes` behind the last slot.
    fn hold(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let last = self
            .entries
            .back_mut()
            .expect("bytes are held only behind a slot");
        last.after.extend_from_slice(bytes);
        self.held += bytes.len();
    }

    /// Appends `bytes` at the end of the output: behind every outstanding
    /// slot. Only called while one is outstanding.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.hold(bytes);
    }

    /// Puts `reply` in slot `seq`'s place.
    pub(crate) fn fill(&mut self, seq: u64, reply: Vec<u8>) -> Fill {
        let Some(index) = seq.checked_sub(self.first) else {
            return Fill::Unknown;
        };
        match self.entries.get_mut(index as usize) {
            Some(entry) if entry.reply.is_none() => {
                self.held += reply.len();
                entry.reply = Some(reply);
                Fill::Filled
            }
            _ => Fill::Unknown,
        }
    }

    /// Takes the run of filled replies at the front, with what followed
    /// each, as one buffer (the first reply's own); `None` while the first
    /// slot is unfilled, or when what it lets go is empty (dropped slots).
    pub(crate) fn take_ready(&mut self) -> Option<Vec<u8>> {
        let mut ready: Option<Vec<u8>> = None;
        while self.entries.front().is_some_and(|e| e.reply.is_some()) {
            let entry = self.entries.pop_front().expect("checked above");
            self.first += 1;
            let reply = entry.reply.expect("checked above");
            self.held -= reply.len() + entry.after.len();
            match &mut ready {
                None => ready = Some(reply),
                Some(buf) => buf.extend_from_slice(&reply),
            }
            let buf = ready.as_mut().expect("set above");
            buf.extend_from_slice(&entry.after);
        }
        if self.is_empty() {
            // Numbers restart; see the module's note.
            self.first = 0;
        }
        ready.filter(|r| !r.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler call: `script` is what it does, in order: `Ok(bytes)`
    /// sends, `Err(())` reserves a slot. Returns the slots' numbers and
    /// what may leave at once.
    fn call(o: &mut Ordered, script: &[Result<&[u8], ()>]) -> (Vec<u64>, Vec<u8>) {
        let mut out = Vec::new();
        let mut seqs = Vec::new();
        for step in script {
            match step {
                Ok(bytes) => out.extend_from_slice(bytes),
                Err(()) => seqs.push(o.mark(out.len())),
            }
        }
        o.settle(&mut out, 0);
        (seqs, out)
    }

    #[test]
    fn bytes_before_the_first_slot_leave_and_the_rest_waits() {
        let mut o = Ordered::default();
        let (seqs, now) = call(&mut o, &[Ok(b"a"), Err(()), Ok(b"b"), Err(()), Ok(b"c")]);
        assert_eq!(seqs, [0, 1]);
        assert_eq!(now, b"a");
        assert_eq!((o.outstanding(), o.held()), (2, 2));
        assert_eq!(o.take_ready(), None, "slot 0 is unfilled");
        assert_eq!(o.fill(1, b"R1".to_vec()), Fill::Filled);
        assert_eq!(o.take_ready(), None, "slot 1 waits behind slot 0");
        assert_eq!(o.fill(0, b"R0".to_vec()), Fill::Filled);
        assert_eq!(o.take_ready().unwrap(), b"R0bR1c");
        assert!(o.is_empty());
        assert_eq!(o.held(), 0);
    }

    #[test]
    fn a_call_after_a_slot_waits_entirely() {
        let mut o = Ordered::default();
        call(&mut o, &[Err(())]);
        let (seqs, now) = call(&mut o, &[Ok(b"x"), Err(()), Ok(b"y")]);
        assert_eq!(seqs, [1]);
        assert!(now.is_empty(), "x was sent after slot 0");
        o.fill(0, b"A".to_vec());
        assert_eq!(o.take_ready().unwrap(), b"Ax");
        o.fill(1, b"B".to_vec());
        assert_eq!(o.take_ready().unwrap(), b"By");
    }

    #[test]
    fn a_dropped_slot_releases_its_place() {
        let mut o = Ordered::default();
        call(&mut o, &[Err(()), Ok(b"after")]);
        o.fill(0, Vec::new());
        assert_eq!(o.take_ready().unwrap(), b"after");
    }

    #[test]
    fn stale_and_repeated_fills_are_refused() {
        let mut o = Ordered::default();
        call(&mut o, &[Err(()), Err(())]);
        assert_eq!(o.fill(7, b"x".to_vec()), Fill::Unknown, "never reserved");
        assert_eq!(o.fill(1, b"x".to_vec()), Fill::Filled);
        assert_eq!(o.fill(1, b"y".to_vec()), Fill::Unknown, "filled already");
        o.fill(0, Vec::new());
        o.take_ready();
        assert_eq!(o.fill(0, b"z".to_vec()), Fill::Unknown, "released already");
    }

    #[test]
    fn numbers_restart_once_nothing_is_outstanding() {
        let mut o = Ordered::default();
        call(&mut o, &[Err(())]);
        o.fill(0, b"x".to_vec());
        o.take_ready();
        let (seqs, _) = call(&mut o, &[Err(())]);
        assert_eq!(seqs, [0]);
    }

    #[test]
    fn a_panicked_call_leaves_no_slot() {
        let mut o = Ordered::default();
        o.mark(0);
        o.forget_marks();
        assert!(o.is_empty());
    }

    /// Replies filled in any order come out in reservation order, with what
    /// was sent between them, whatever the interleaving of calls.
    #[test]
    fn any_fill_order_keeps_the_stream_order() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let mut o = Ordered::default();
            let (mut want, mut got) = (Vec::new(), Vec::new());
            let mut unfilled: Vec<(u64, Vec<u8>)> = Vec::new();
            for step in 0..(next() % 40) {
                if next() % 3 == 0 && !unfilled.is_empty() {
                    let (seq, reply) = unfilled.swap_remove((next() as usize) % unfilled.len());
                    assert_eq!(o.fill(seq, reply), Fill::Filled);
                    if let Some(ready) = o.take_ready() {
                        got.extend_from_slice(&ready);
                    }
                    continue;
                }
                let text = format!("s{step};");
                let reply = format!("r{step};");
                let deferred = next() % 2 == 0;
                let (seqs, now) = if deferred {
                    call(&mut o, &[Ok(text.as_bytes()), Err(())])
                } else {
                    call(&mut o, &[Ok(text.as_bytes())])
                };
                got.extend_from_slice(&now);
                want.extend_from_slice(text.as_bytes());
                if deferred {
                    want.extend_from_slice(reply.as_bytes());
                    unfilled.push((seqs[0], reply.into_bytes()));
                }
            }
            while let Some((seq, reply)) = unfilled.pop() {
                o.fill(seq, reply);
                if let Some(ready) = o.take_ready() {
                    got.extend_from_slice(&ready);
                }
            }
            assert_eq!(got, want);
            assert!(o.is_empty() && o.held() == 0);
        }
    }
}
