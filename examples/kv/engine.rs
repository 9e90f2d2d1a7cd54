//! The key-value engine of `examples/kv`: Redis commands in, RESP replies out.
//!
//! Like netpool's connection core, this file does no I/O and reads no clock.
//! A command arrives as its arguments ([`Args`]: the command view of a RESP
//! frame, borrowed from the read buffer), the caller passes the time it read
//! (`now`), and the reply is appended to the caller's output buffer. What the
//! connection must do next (go on, close after the reply, listen for
//! messages, deliver a published one) comes back as an [`Outcome`]. So every
//! command, every expiry and every error reply is tested without a socket or
//! a sleep (`tests/kv_engine.rs`), and the same engine serves both
//! `examples/kv` on netpool and the tokio twin in the benchmark suite
//! (`benches/suite/tokio_kv.rs`), which include this file with
//! `#[path = ...] mod engine;`.
//!
//! # Layout of this file
//! - [`Args`]: what a command looks like to the engine.
//! - [`Store`]: the keys, in [`SHARDS`] locked shards; [`Store::execute`] runs
//!   one command; [`Store::sweep`] is the active expiry.
//! - [`Session`] and [`Outcome`]: one connection's state (its subscriptions)
//!   and what it must do after a command.
//! - [`Channels`]: the pub/sub registry, channel -> subscriber ids, and the
//!   encoders of the pub/sub arrays ([`message`], [`subscription`]).
//! - The command table, one function per command, integer parsing, and the
//!   small private RESP writers at the end.
//!
//! # Sharing the store between event loops
//! With `--workers N`, N event loops on N threads execute commands against
//! one store. The keys are split over [`SHARDS`] (64) shards, each a
//! `Mutex<HashMap>`, and a key's shard is picked by a fast hash of the key.
//! Why this and not the alternatives:
//! - One `Mutex` over one map serialises every loop on every command: N loops
//!   would do the work of one, plus the lock hand-offs.
//! - A `RwLock` does not help: a read (GET) may delete an expired key, so it
//!   needs write access anyway, and readers still write the lock's counter.
//! - One store per loop (share nothing, keys routed to their owner loop, as
//!   Dragonfly or a thread-per-core design does) needs a message to another
//!   loop and a reply back for most commands; netpool routes connections
//!   between loops, not commands.
//! - Sharded locks (what `dashmap` does, without the dependency): two loops
//!   only wait for each other when they touch the same shard in the same
//!   instant, about (N-1)/64 of the time under a uniform load. With one loop
//!   the lock is never contended: an atomic read-modify-write on the way in
//!   and another on the way out. `lock_cost` in `tests/kv_engine.rs`
//!   measures it (`cargo test --release --test kv_engine -- --ignored
//!   --nocapture lock_cost`): on the 2-core development VM, shard pick plus
//!   lock and unlock added 10 to 21 ns to a 25 to 175 ns map lookup, and a
//!   whole GET through [`Store::execute`] took 50 ns (keys in cache) to
//!   370 ns (100,000 keys), next to about 1.7 µs of server CPU per request
//!   that the tokio twin spends at 16 requests in flight.
//!   With two threads hammering one store, the mutexes' cache lines move
//!   between the cores and a GET costs more than twice as much (same
//!   measurement), which is the price of sharing at all, not of sharding.
//!
//! The shard hash is FxHash's mixing step (unkeyed, a few cycles per 8
//! bytes); the map inside a shard keeps std's keyed SipHash, so that keys a
//! client chooses cannot turn a map into a list (the HashDoS attack Redis
//! also defends against with SipHash). An attacker can at worst pile keys into
//! one shard, which costs contention, never quadratic work. Each shard sits on
//! its own 128-byte block so that two loops locking neighbouring shards do not
//! bounce one cache line between their cores (false sharing).
//!
//! Multi-key commands (DEL, EXISTS, MGET, MSET) and FLUSHALL lock every
//! shard they touch at once, always in ascending shard order, so no two
//! commands can wait for each other in a cycle, and each is atomic as in
//! Redis: no client sees half of an MSET. DBSIZE adds up the shards one at a
//! time (a count, not a snapshot).
//!
//! # Expiry
//! A key with a TTL carries its deadline (an `Instant`). It is removed lazily
//! by the first command that touches it after the deadline, and actively by
//! [`Store::sweep`], which the example calls from a loop timer (Redis's
//! `activeExpireCycle`: bounded work per call). Redis samples random keys
//! with a TTL; std's `HashMap` cannot sample, so each shard keeps a min-heap
//! of (deadline, key) instead, with lazy deletion as netpool's timer heap
//! (`src/timers.rs`): a sweep pops only what is due, and a popped deadline
//! that no longer matches its key (overwritten, persisted, deleted) is
//! dropped. Keys are `Arc<[u8]>` so that the heap shares the map's key
//! instead of copying it. Stale heap entries are bounded: when the heap holds
//! more than twice as many entries as the shard has keys (plus 64), it is
//! rebuilt from the map, which halves it at least, so the rebuild costs O(1)
//! per insertion amortised.
//!
//! A key is alive while `now <= deadline` and expired after, as in Redis
//! (`keyIsExpired`: `now > when`). Because the engine works on `Instant`s,
//! not Unix time, a TTL is refused only when `Instant` arithmetic would
//! overflow (hundreds of millions of years); Redis refuses one whose absolute
//! Unix time in milliseconds overflows an i64, a bound about 2^63 ms from
//! 1970.
//!
//! # Allocation
//! Nothing is allocated per command except what storing a new key or a
//! longer value needs: replies are written into the caller's buffer, integers
//! without `format!`, a SET over an existing key of similar size reuses the
//! value's buffer, INCR rewrites its digits in place, and the per-connection
//! scratch for PUBLISH is reused.
//!
//! # Memory bound
//! [`Store::with_max_bytes`] bounds the keys and values held (approximately:
//! lengths plus a fixed per-entry overhead, counted in one relaxed atomic
//! that is touched only when a write changes a size). A write that would go
//! past it is refused with Redis's
//! `-OOM command not allowed when used memory > 'maxmemory'.`; reads and
//! deletes always work. Nothing is evicted. The
//! default, like Redis's, is no bound.
//!
//! # Data types
//! Only strings exist, so Redis's `-WRONGTYPE Operation against a key holding
//! the wrong kind of value` can never arise; a list, hash or set type would
//! have to add it.
//!
//! # Not implemented
//! SET's GET, KEEPTTL, EXAT and PXAT options (a syntax error here), EXPIRE's
//! NX, XX, GT and LT (`-ERR Unsupported option`), CONFIG SET (an unknown
//! subcommand), glob patterns in CONFIG GET (names match exactly), pattern
//! subscriptions, RESP3, databases other than 0, eviction.

// Included by `examples/kv`, `tests/kv_engine.rs` and the benchmark suite,
// each of which uses a different subset of the engine.
#![allow(dead_code)]

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{self, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The arguments of one command: the command name first, then its
/// arguments, each a byte string (binary-safe).
///
/// netpool's RESP framing hands each frame over as a borrowed view with
/// these two methods; the tokio twin implements it over its own parser.
pub trait Args {
    /// How many arguments, the command name included.
    fn len(&self) -> usize;

    /// Argument `i` (0 is the command name), or `None` past the end.
    fn get(&self, i: usize) -> Option<&[u8]>;

    /// Whether the command is empty (`*0\r\n`), which Redis ignores.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Args for [&[u8]] {
    fn len(&self) -> usize {
        <[&[u8]]>::len(self)
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        <[&[u8]]>::get(self, i).copied()
    }
}

impl Args for [Vec<u8>] {
    fn len(&self) -> usize {
        <[Vec<u8>]>::len(self)
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        <[Vec<u8>]>::get(self, i).map(Vec::as_slice)
    }
}

/// Argument `i`, empty if a broken [`Args`] implementation has none: the
/// engine checks arity against `len()` first, so this never hides a bug of
/// its own.
fn arg<A: Args + ?Sized>(args: &A, i: usize) -> &[u8] {
    args.get(i).unwrap_or(&[])
}

/// How many shards the keys are split into. A power of two (the shard is the
/// top bits of the hash) and at most 64, so that the shards of a multi-key
/// command fit in a `u64` mask.
pub const SHARDS: usize = 64;

/// Bytes counted per key on top of its key and value lengths, for
/// [`Store::with_max_bytes`]: the table slot (`Arc` pointer, `Vec`, deadline),
/// the `Arc`'s counters and the allocator's rounding, roughly.
pub const ENTRY_OVERHEAD: usize = 96;

/// How often the example should call [`Store::sweep`]: Redis's default `hz`
/// (10 per second).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// How many deadlines one [`Store::sweep`] call should look at, at most.
/// Removing a due key took about 0.6 µs on the development VM (`lock_cost`
/// in `tests/kv_engine.rs`), so a full call holds its loop for well under a
/// millisecond; when a call uses its whole budget, call again (a few times
/// per interval at most) rather than raise it.
pub const SWEEP_BUDGET: usize = 1000;

/// The id under which a connection subscribes; the example uses netpool's
/// `ConnId::as_u64`, which is unique for the life of the server.
pub type SubscriberId = u64;

/// The keys and the channels, shared by every connection of every loop
/// (`Arc<Store>`).
pub struct Store {
    shards: Box<[Padded; SHARDS]>,
    channels: Channels,
    /// Approximate bytes held (see [`ENTRY_OVERHEAD`]), for `max_bytes`.
    used: AtomicUsize,
    max_bytes: Option<usize>,
    /// Where the next [`Store::sweep`] starts, so that a sweep that runs out
    /// of budget in one shard does not starve the others.
    sweep_cursor: AtomicUsize,
}

/// One shard on a 128-byte block of its own: two cores locking neighbouring
/// shards would otherwise write the same cache line (128 because adjacent-
/// line prefetch on x86 pairs 64-byte lines, as crossbeam's `CachePadded`).
#[repr(align(128))]
struct Padded(Mutex<Shard>);

#[derive(Default)]
struct Shard {
    map: HashMap<Arc<[u8]>, Entry>,
    /// Deadlines of keys with a TTL, soonest first; may hold stale entries.
    deadlines: BinaryHeap<Deadline>,
    /// Approximate bytes held by this shard; the sum over shards is
    /// `Store::used`.
    bytes: usize,
}

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    /// Expired strictly after the deadline, as Redis's `keyIsExpired`.
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at < now)
    }
}

/// A heap entry: ordered by deadline only, reversed so that std's max-heap
/// pops the soonest first.
struct Deadline {
    at: Instant,
    key: Arc<[u8]>,
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

/// What [`Store::sweep`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    /// Deadlines looked at (at most the budget); each was due.
    pub examined: usize,
    /// Keys removed because they had expired.
    pub removed: usize,
}

impl Swept {
    /// Whether the budget ran out before the due deadlines did: call again
    /// soon rather than at the next interval.
    pub fn more(&self, budget: usize) -> bool {
        self.examined >= budget
    }
}

/// What the connection must do after [`Store::execute`]. The reply, if any,
/// is already in `out` in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// Send the reply (an empty command writes none) and read the next
    /// command. Every error reply is this: an error never closes.
    Reply,
    /// QUIT: send the `+OK` in `out`, then close the connection; read no
    /// further commands.
    Quit,
    /// SUBSCRIBE: the confirmations are in `out`, and the connection now
    /// listens under [`Session::id`]. Make sure messages published to that
    /// id reach this connection (register its handle under the id, if it is
    /// not registered yet) before the next command.
    Subscribed,
    /// PUBLISH with at least one receiver: `:n` is in `out`; send
    /// [`Session::delivery`]'s message to each of its subscriber ids.
    Publish,
}

/// One connection's engine state: its subscriptions, and the scratch of a
/// PUBLISH. Create one per connection, pass it to every
/// [`Store::execute`], and give it to [`Store::end_session`] when the
/// connection closes.
pub struct Session {
    id: SubscriberId,
    /// The channels this connection listens to. Redis answers SUBSCRIBE and
    /// UNSUBSCRIBE with this count, and allows only a few commands while it is
    /// not zero.
    channels: HashSet<Box<[u8]>>,
    /// PUBLISH scratch, reused: who receives the message, and the message.
    receivers: Vec<SubscriberId>,
    message: Vec<u8>,
}

impl Session {
    /// A session for the connection whose subscriber id is `id` (unique
    /// among the connections of one store).
    pub fn new(id: SubscriberId) -> Session {
        Session {
            id,
            channels: HashSet::new(),
            receivers: Vec::new(),
            message: Vec::new(),
        }
    }

    /// The id this connection subscribes under.
    pub fn id(&self) -> SubscriberId {
        self.id
    }

    /// How many channels this connection listens to.
    pub fn subscriptions(&self) -> usize {
        self.channels.len()
    }

    /// After [`Outcome::Publish`]: the RESP message array (`message`,
    /// channel, payload) and the subscriber ids to send it to. Deliver the
    /// same bytes to each; a subscriber that closed meanwhile is skipped.
    pub fn delivery(&self) -> (&[u8], &[SubscriberId]) {
        (&self.message, &self.receivers)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("subscriptions", &self.channels.len())
            .finish()
    }
}

/// The pub/sub registry: which subscriber ids listen to which channel.
///
/// One mutex over one map: PUBLISH and SUBSCRIBE are rare next to GET and
/// SET, and a publish holds the lock only to copy the ids out. Delivery is
/// the connection layer's: [`Channels::publish`] says who, the caller sends.
#[derive(Default)]
pub struct Channels {
    map: Mutex<HashMap<Box<[u8]>, HashSet<SubscriberId>>>,
}

impl Channels {
    /// An empty registry.
    pub fn new() -> Channels {
        Channels::default()
    }

    /// Adds `id` to `channel`'s subscribers; false if it was there already.
    pub fn subscribe(&self, channel: &[u8], id: SubscriberId) -> bool {
        let mut map = lock(&self.map);
        match map.get_mut(channel) {
            Some(ids) => ids.insert(id),
            None => {
                map.insert(channel.into(), HashSet::from([id]));
                true
            }
        }
    }

    /// Removes `id` from `channel`'s subscribers; false if it was not there.
    /// A channel without subscribers is forgotten.
    pub fn unsubscribe(&self, channel: &[u8], id: SubscriberId) -> bool {
        let mut map = lock(&self.map);
        let Some(ids) = map.get_mut(channel) else {
            return false;
        };
        let removed = ids.remove(&id);
        if ids.is_empty() {
            map.remove(channel);
        }
        removed
    }

    /// Replaces `receivers` with `channel`'s subscribers and returns how many
    /// there are (PUBLISH's reply). The caller's vector is reused, so a
    /// publish allocates nothing once it has grown to the audience.
    pub fn publish(&self, channel: &[u8], receivers: &mut Vec<SubscriberId>) -> usize {
        receivers.clear();
        if let Some(ids) = lock(&self.map).get(channel) {
            receivers.extend(ids.iter().copied());
        }
        receivers.len()
    }

    /// How many subscribers `channel` has.
    pub fn subscribers(&self, channel: &[u8]) -> usize {
        lock(&self.map).get(channel).map_or(0, HashSet::len)
    }

    /// How many channels have at least one subscriber.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether no channel has a subscriber.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Channels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channels")
            .field("channels", &self.len())
            .finish()
    }
}

/// Appends a published message as Redis delivers it to a subscriber:
/// `*3\r\n$7\r\nmessage\r\n` then the channel and the payload as bulk strings.
pub fn message(out: &mut Vec<u8>, channel: &[u8], payload: &[u8]) {
    array(out, 3);
    bulk(out, b"message");
    bulk(out, channel);
    bulk(out, payload);
}

/// Appends a subscribe or unsubscribe confirmation: `kind` (`subscribe` or
/// `unsubscribe`), the channel (a null bulk string when UNSUBSCRIBE had none
/// to leave), and how many channels the connection listens to afterwards.
pub fn subscription(out: &mut Vec<u8>, kind: &[u8], channel: Option<&[u8]>, count: usize) {
    array(out, 3);
    bulk(out, kind);
    match channel {
        Some(c) => bulk(out, c),
        None => null(out),
    }
    integer(out, count as i64);
}

/// Locks a mutex, taking the data of a poisoned one: the engine does not
/// panic while holding a lock (it only indexes what it checked), so a poison
/// can only come from an allocation failure, after which the map is still
/// consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shard of a key, `0..SHARDS`: FxHash's multiply-rotate over 8-byte
/// words (rustc's hasher), then the top 6 bits, which are the best mixed after
/// a multiply. Public for the lock-cost measurement in `tests/kv_engine.rs`.
pub fn shard_of(key: &[u8]) -> usize {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = key.len() as u64;
    let mut words = key.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
    }
    (h >> (64 - SHARDS.trailing_zeros())) as usize
}

/// Bytes counted for one key (see [`ENTRY_OVERHEAD`]).
fn cost(key: usize, value: usize) -> usize {
    key + value + ENTRY_OVERHEAD
}

/// Copies `src` into `dst`, reusing `dst`'s buffer unless it is too small or
/// much too big (a 1 MiB buffer is not kept for a 10-byte value).
fn replace(dst: &mut Vec<u8>, src: &[u8]) {
    if dst.capacity() >= src.len() && dst.capacity() <= 2 * src.len() + 64 {
        dst.clear();
        dst.extend_from_slice(src);
    } else {
        *dst = src.to_vec();
    }
}

impl Shard {
    /// Records that `key` now expires at `at`, unless its deadline did not
    /// change (then the heap already holds it: a deadline is pushed every
    /// time it changes, and only dropped once stale). `key` is the map's own
    /// `Arc`, so the heap copies no key.
    fn push_deadline(&mut self, key: Arc<[u8]>, before: Option<Instant>, at: Option<Instant>) {
        let Some(at) = at else { return };
        if before == Some(at) {
            return;
        }
        self.deadlines.push(Deadline { at, key });
        if self.deadlines.len() > 2 * self.map.len() + 64 {
            // Rebuilt from the map: one entry per key with a TTL, so at least
            // half of the heap goes, and duplicates with it.
            self.deadlines = self
                .map
                .iter()
                .filter_map(|(k, e)| e.expires.map(|at| Deadline { at, key: k.clone() }))
                .collect();
        }
    }

    /// The map's `Arc` for a key that is present.
    fn key_arc(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        self.map.get_key_value(key).map(|(k, _)| k.clone())
    }
}

/// Redis's arity: positive is exact, negative is "at least", the command
/// name included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Get,
    Set,
    Incr,
    MGet,
    MSet,
    Del,
    Exists,
    IncrBy,
    Decr,
    Expire,
    PExpire,
    Ttl,
    PTtl,
    Ping,
    Echo,
    DbSize,
    FlushAll,
    Quit,
    Command,
    Config,
    Subscribe,
    Unsubscribe,
    Publish,
}

struct Spec {
    cmd: Cmd,
    /// Lower case, as Redis names a command in its error replies.
    name: &'static str,
    arity: i32,
}

/// The commands, most frequent first (a lookup is a scan comparing lengths,
/// then names without regard to case; 23 entries cost less than hashing).
/// Arities are Redis 7.0's.
const COMMANDS: [Spec; 23] = [
    spec(Cmd::Get, "get", 2),
    spec(Cmd::Set, "set", -3),
    spec(Cmd::Incr, "incr", 2),
    spec(Cmd::MGet, "mget", -2),
    spec(Cmd::MSet, "mset", -3),
    spec(Cmd::Del, "del", -2),
    spec(Cmd::Exists, "exists", -2),
    spec(Cmd::IncrBy, "incrby", 3),
    spec(Cmd::Decr, "decr", 2),
    spec(Cmd::Expire, "expire", -3),
    spec(Cmd::PExpire, "pexpire", -3),
    spec(Cmd::Ttl, "ttl", 2),
    spec(Cmd::PTtl, "pttl", 2),
    spec(Cmd::Ping, "ping", -1),
    spec(Cmd::Echo, "echo", 2),
    spec(Cmd::DbSize, "dbsize", 1),
    spec(Cmd::FlushAll, "flushall", -1),
    spec(Cmd::Quit, "quit", -1),
    spec(Cmd::Command, "command", -1),
    spec(Cmd::Config, "config", -2),
    spec(Cmd::Subscribe, "subscribe", -2),
    spec(Cmd::Unsubscribe, "unsubscribe", -1),
    spec(Cmd::Publish, "publish", 3),
];

const fn spec(cmd: Cmd, name: &'static str, arity: i32) -> Spec {
    Spec { cmd, name, arity }
}

fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|s| s.name.len() == name.len() && s.name.as_bytes().eq_ignore_ascii_case(name))
}

fn arity_ok(arity: i32, n: usize) -> bool {
    if arity >= 0 {
        n == arity as usize
    } else {
        n >= arity.unsigned_abs() as usize
    }
}

/// Case-insensitive comparison with an upper-case keyword.
fn is(arg: &[u8], keyword: &str) -> bool {
    arg.eq_ignore_ascii_case(keyword.as_bytes())
}

const OK: &[u8] = b"+OK\r\n";
const PONG: &[u8] = b"+PONG\r\n";
const NULL: &[u8] = b"$-1\r\n";
const SYNTAX: &[u8] = b"-ERR syntax error\r\n";
const NOT_INTEGER: &[u8] = b"-ERR value is not an integer or out of range\r\n";
const OVERFLOW: &[u8] = b"-ERR increment or decrement would overflow\r\n";
const OOM: &[u8] = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n";

/// Seconds or milliseconds, for SET's EX/PX and EXPIRE/PEXPIRE.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    Millis,
}

/// Why a TTL argument was refused, in Redis's order of checks.
enum BadTtl {
    NotInteger,
    Invalid,
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("shards", &SHARDS)
            .field("used_bytes", &self.used_bytes())
            .field("max_bytes", &self.max_bytes)
            .field("channels", &self.channels)
            .finish()
    }
}

/// The guards of the shards a multi-key command touches, taken in ascending
/// order; `None` for the shards it does not touch.
type Guards<'a> = [Option<MutexGuard<'a, Shard>>; SHARDS];

impl Store {
    /// An empty store with no memory bound (Redis's default).
    pub fn new() -> Store {
        Store {
            shards: Box::new(std::array::from_fn(|_| Padded(Mutex::default()))),
            channels: Channels::new(),
            used: AtomicUsize::new(0),
            max_bytes: None,
            sweep_cursor: AtomicUsize::new(0),
        }
    }

    /// An empty store that refuses writes that would hold more than about
    /// `max` bytes of keys and values (see the module doc).
    pub fn with_max_bytes(max: usize) -> Store {
        Store {
            max_bytes: Some(max),
            ..Store::new()
        }
    }

    /// The pub/sub registry.
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// Approximate bytes held by keys and values (see [`ENTRY_OVERHEAD`]).
    pub fn used_bytes(&self) -> usize {
        self.used.load(atomic::Ordering::Relaxed)
    }

    /// Keys held, including expired ones not yet removed (what DBSIZE
    /// answers, as in Redis).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).map.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deadlines held for the active expiry, stale ones included: at most
    /// twice the keys of each shard plus 64 (see the module doc). For tests
    /// and metrics.
    pub fn deadlines(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).deadlines.len()).sum()
    }

    /// Unsubscribes a closing connection from every channel, without replies.
    pub fn end_session(&self, session: &mut Session) {
        for channel in session.channels.drain() {
            self.channels.unsubscribe(&channel, session.id);
        }
    }

    /// Runs one command and appends its reply to `out`.
    ///
    /// `now` is the time the command is executed at (the example passes the
    /// `Instant` of the read that brought it; tests pass made-up ones).
    /// Errors are replies (`-ERR ...`) with [`Outcome::Reply`]; the only
    /// command that ends the connection is QUIT.
    pub fn execute<A: Args + ?Sized>(
        &self,
        session: &mut Session,
        args: &A,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let n = args.len();
        if n == 0 {
            // Redis ignores an empty multibulk (`*0\r\n`) without a reply.
            return Outcome::Reply;
        }
        // Redis's order of checks (processCommand): unknown command, arity,
        // then the subscribed-connection restriction.
        let Some(spec) = lookup(arg(args, 0)) else {
            unknown_command(out, args);
            return Outcome::Reply;
        };
        if !arity_ok(spec.arity, n) {
            wrong_arity(out, spec.name);
            return Outcome::Reply;
        }
        if !session.channels.is_empty()
            && !matches!(
                spec.cmd,
                Cmd::Subscribe | Cmd::Unsubscribe | Cmd::Ping | Cmd::Quit
            )
        {
            out.extend_from_slice(b"-ERR Can't execute '");
            out.extend_from_slice(spec.name.as_bytes());
            out.extend_from_slice(
                b"': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET \
                  are allowed in this context\r\n",
            );
            return Outcome::Reply;
        }
        match spec.cmd {
            Cmd::Get => self.get(arg(args, 1), now, out),
            Cmd::Set => self.set(args, now, out),
            Cmd::Incr => self.incr_by(arg(args, 1), 1, now, out),
            Cmd::Decr => self.incr_by(arg(args, 1), -1, now, out),
            Cmd::IncrBy => match parse_i64(arg(args, 2)) {
                Some(by) => self.incr_by(arg(args, 1), by, now, out),
                None => out.extend_from_slice(NOT_INTEGER),
            },
            Cmd::MGet => self.mget(args, now, out),
            Cmd::MSet if n % 2 == 0 => wrong_arity(out, spec.name),
            Cmd::MSet => self.mset(args, out),
            Cmd::Del => self.del(args, now, out),
            Cmd::Exists => self.exists(args, now, out),
            Cmd::Expire => self.expire(args, Unit::Seconds, spec.name, now, out),
            Cmd::PExpire => self.expire(args, Unit::Millis, spec.name, now, out),
            Cmd::Ttl => self.ttl(arg(args, 1), Unit::Seconds, now, out),
            Cmd::PTtl => self.ttl(arg(args, 1), Unit::Millis, now, out),
            Cmd::Ping => ping(session, args, out),
            Cmd::Echo => bulk(out, arg(args, 1)),
            Cmd::DbSize => integer(out, self.len() as i64),
            Cmd::FlushAll => self.flushall(args, out),
            Cmd::Quit => {
                out.extend_from_slice(OK);
                return Outcome::Quit;
            }
            Cmd::Command => command(args, out),
            Cmd::Config => config(args, out),
            Cmd::Subscribe => return self.subscribe(session, args, out),
            Cmd::Unsubscribe => self.unsubscribe(session, args, out),
            Cmd::Publish => return self.publish(session, arg(args, 1), arg(args, 2), out),
        }
        Outcome::Reply
    }

    /// Removes expired keys, looking at no more than `budget` due deadlines
    /// (Redis's active expiry: bounded work per call). Shards are visited
    /// round robin from where the last sweep stopped. Call it every
    /// [`SWEEP_INTERVAL`] with [`SWEEP_BUDGET`], and again at once while
    /// [`Swept::more`] says the budget ran out.
    pub fn sweep(&self, now: Instant, budget: usize) -> Swept {
        let mut swept = Swept::default();
        let start = self.sweep_cursor.load(atomic::Ordering::Relaxed);
        for k in 0..SHARDS {
            let i = (start + k) % SHARDS;
            let mut guard = lock(&self.shards[i].0);
            let shard = &mut *guard;
            while swept.examined < budget {
                match shard.deadlines.peek() {
                    Some(d) if d.at < now => {}
                    _ => break,
                }
                let Some(d) = shard.deadlines.pop() else {
                    break;
                };
                swept.examined += 1;
                // The deadline may be stale: check the key's own.
                if shard.map.get(&d.key).is_some_and(|e| e.expired(now)) {
                    if let Some(e) = shard.map.remove(&d.key) {
                        let c = cost(d.key.len(), e.value.len());
                        shard.bytes -= c;
                        self.used.fetch_sub(c, atomic::Ordering::Relaxed);
                        swept.removed += 1;
                    }
                }
            }
            if swept.examined >= budget {
                self.sweep_cursor.store(i, atomic::Ordering::Relaxed);
                return swept;
            }
        }
        swept
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        lock(&self.shards[shard_of(key)].0)
    }

    /// Locks the shards of arguments `first..` stepping by `step` (keys of
    /// DEL, or of MSET's key-value pairs), in ascending shard order.
    fn lock_keys<A: Args + ?Sized>(&self, args: &A, first: usize, step: usize) -> Guards<'_> {
        let mut mask = 0u64;
        for i in (first..args.len()).step_by(step) {
            mask |= 1 << shard_of(arg(args, i));
        }
        self.lock_mask(mask)
    }

    fn lock_mask(&self, mask: u64) -> Guards<'_> {
        let mut guards: Guards<'_> = std::array::from_fn(|_| None);
        // Ascending order, the one order every command takes locks in.
        for (i, g) in guards.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *g = Some(lock(&self.shards[i].0));
            }
        }
        guards
    }

    /// Whether a write that grows the store by `grow` bytes may go ahead.
    fn admit(&self, grow: usize) -> bool {
        match self.max_bytes {
            None => true,
            Some(max) => grow == 0 || self.used_bytes() + grow <= max,
        }
    }

    /// Applies a change of size to the shard and the store.
    fn account(&self, shard: &mut Shard, before: usize, after: usize) {
        if after > before {
            shard.bytes += after - before;
            self.used
                .fetch_add(after - before, atomic::Ordering::Relaxed);
        } else if before > after {
            shard.bytes -= before - after;
            self.used
                .fetch_sub(before - after, atomic::Ordering::Relaxed);
        }
    }

    fn get(&self, key: &[u8], now: Instant, out: &mut Vec<u8>) {
        let mut guard = self.shard(key);
        match guard.map.get(key) {
            None => return out.extend_from_slice(NULL),
            Some(e) if !e.expired(now) => return bulk(out, &e.value),
            Some(_) => {}
        }
        self.remove(&mut guard, key);
        out.extend_from_slice(NULL);
    }

    /// Removes a key; returns it if it was there (expired or not).
    fn remove(&self, shard: &mut Shard, key: &[u8]) -> Option<Entry> {
        let e = shard.map.remove(key)?;
        self.account(shard, cost(key.len(), e.value.len()), 0);
        Some(e)
    }

    fn set<A: Args + ?Sized>(&self, args: &A, now: Instant, out: &mut Vec<u8>) {
        let (key, value) = (arg(args, 1), arg(args, 2));
        // Options first, all of them, then the TTL's value: Redis answers a
        // syntax error before a bad number. EX after EX (and NX after NX) is
        // allowed, the last one wins; EX with PX, or NX with XX, is not.
        let (mut nx, mut xx) = (false, false);
        let mut ttl: Option<(&[u8], Unit)> = None;
        let mut i = 3;
        while i < args.len() {
            let opt = arg(args, i);
            let has_next = i + 1 < args.len();
            let unit = ttl.map(|(_, u)| u);
            if is(opt, "NX") && !xx {
                nx = true;
            } else if is(opt, "XX") && !nx {
                xx = true;
            } else if is(opt, "EX") && unit != Some(Unit::Millis) && has_next {
                ttl = Some((arg(args, i + 1), Unit::Seconds));
                i += 1;
            } else if is(opt, "PX") && unit != Some(Unit::Seconds) && has_next {
                ttl = Some((arg(args, i + 1), Unit::Millis));
                i += 1;
            } else {
                return out.extend_from_slice(SYNTAX);
            }
            i += 1;
        }
        let expires = match ttl {
            None => None,
            Some((text, unit)) => match set_deadline(text, unit, now) {
                Ok(at) => Some(at),
                Err(BadTtl::NotInteger) => return out.extend_from_slice(NOT_INTEGER),
                Err(BadTtl::Invalid) => return invalid_expire(out, "set"),
            },
        };
        let mut guard = self.shard(key);
        let shard = &mut *guard;
        let new_cost = cost(key.len(), value.len());
        if let Some(e) = shard.map.get_mut(key) {
            let alive = !e.expired(now);
            if (nx && alive) || (xx && !alive) {
                return out.extend_from_slice(NULL);
            }
            let old_cost = cost(key.len(), e.value.len());
            if !self.admit(new_cost.saturating_sub(old_cost)) {
                return out.extend_from_slice(OOM);
            }
            replace(&mut e.value, value);
            let before = std::mem::replace(&mut e.expires, expires);
            self.account(shard, old_cost, new_cost);
            if expires.is_some() && before != expires {
                if let Some(k) = shard.key_arc(key) {
                    shard.push_deadline(k, before, expires);
                }
            }
        } else {
            if xx {
                return out.extend_from_slice(NULL);
            }
            if !self.admit(new_cost) {
                return out.extend_from_slice(OOM);
            }
            let k: Arc<[u8]> = Arc::from(key);
            shard.map.insert(
                k.clone(),
                Entry {
                    value: value.to_vec(),
                    expires,
                },
            );
            self.account(shard, 0, new_cost);
            shard.push_deadline(k, None, expires);
        }
        out.extend_from_slice(OK);
    }

    fn incr_by(&self, key: &[u8], by: i64, now: Instant, out: &mut Vec<u8>) {
        let mut guard = self.shard(key);
        let shard = &mut *guard;
        if let Some(e) = shard.map.get_mut(key) {
            // An expired key counts as absent: start from 0, without a TTL.
            let expired = e.expired(now);
            let current = if expired {
                0
            } else {
                match parse_i64(&e.value) {
                    Some(v) => v,
                    None => return out.extend_from_slice(NOT_INTEGER),
                }
            };
            let Some(next) = current.checked_add(by) else {
                return out.extend_from_slice(OVERFLOW);
            };
            let old_cost = cost(key.len(), e.value.len());
            // The digits are rewritten in place: at most 20 bytes, so the
            // buffer is reused unless it was much bigger.
            let mut digits = [0u8; 20];
            let text = itoa(next, &mut digits);
            if !self.admit(text.len().saturating_sub(e.value.len())) {
                return out.extend_from_slice(OOM);
            }
            replace(&mut e.value, text);
            if expired {
                e.expires = None;
            }
            self.account(shard, old_cost, cost(key.len(), text.len()));
            integer(out, next);
        } else {
            let mut digits = [0u8; 20];
            let text = itoa(by, &mut digits);
            let c = cost(key.len(), text.len());
            if !self.admit(c) {
                return out.extend_from_slice(OOM);
            }
            shard.map.insert(
                Arc::from(key),
                Entry {
                    value: text.to_vec(),
                    expires: None,
                },
            );
            self.account(shard, 0, c);
            integer(out, by);
        }
    }

    fn mget<A: Args + ?Sized>(&self, args: &A, now: Instant, out: &mut Vec<u8>) {
        let mut guards = self.lock_keys(args, 1, 1);
        array(out, args.len() - 1);
        for i in 1..args.len() {
            let key = arg(args, i);
            let Some(shard) = guards[shard_of(key)].as_deref_mut() else {
                continue; // unreachable: lock_keys locked every key's shard
            };
            match shard.map.get(key) {
                None => out.extend_from_slice(NULL),
                Some(e) if !e.expired(now) => bulk(out, &e.value),
                Some(_) => {
                    self.remove(shard, key);
                    out.extend_from_slice(NULL);
                }
            }
        }
    }

    fn mset<A: Args + ?Sized>(&self, args: &A, out: &mut Vec<u8>) {
        let mut guards = self.lock_keys(args, 1, 2);
        if self.max_bytes.is_some() {
            // All or nothing: the growth of the whole command is admitted
            // before any key is written (duplicated keys make it an estimate).
            let mut grow = 0usize;
            for i in (1..args.len()).step_by(2) {
                let (key, value) = (arg(args, i), arg(args, i + 1));
                if let Some(shard) = guards[shard_of(key)].as_deref() {
                    let old = shard
                        .map
                        .get(key)
                        .map_or(0, |e| cost(key.len(), e.value.len()));
                    grow += cost(key.len(), value.len()).saturating_sub(old);
                }
            }
            if !self.admit(grow) {
                return out.extend_from_slice(OOM);
            }
        }
        for i in (1..args.len()).step_by(2) {
            let (key, value) = (arg(args, i), arg(args, i + 1));
            let Some(shard) = guards[shard_of(key)].as_deref_mut() else {
                continue; // unreachable: lock_keys locked every key's shard
            };
            let new_cost = cost(key.len(), value.len());
            // MSET is SET without options: the value replaces, the TTL goes.
            if let Some(e) = shard.map.get_mut(key) {
                let old_cost = cost(key.len(), e.value.len());
                replace(&mut e.value, value);
                e.expires = None;
                self.account(shard, old_cost, new_cost);
            } else {
                shard.map.insert(
                    Arc::from(key),
                    Entry {
                        value: value.to_vec(),
                        expires: None,
                    },
                );
                self.account(shard, 0, new_cost);
            }
        }
        out.extend_from_slice(OK);
    }

    fn del<A: Args + ?Sized>(&self, args: &A, now: Instant, out: &mut Vec<u8>) {
        let mut guards = self.lock_keys(args, 1, 1);
        let mut deleted = 0;
        for i in 1..args.len() {
            let key = arg(args, i);
            if let Some(shard) = guards[shard_of(key)].as_deref_mut() {
                // An expired key is removed too, but was not there to delete.
                if self.remove(shard, key).is_some_and(|e| !e.expired(now)) {
                    deleted += 1;
                }
            }
        }
        integer(out, deleted);
    }

    fn exists<A: Args + ?Sized>(&self, args: &A, now: Instant, out: &mut Vec<u8>) {
        let guards = self.lock_keys(args, 1, 1);
        let mut found = 0;
        for i in 1..args.len() {
            let key = arg(args, i);
            // A key named twice counts twice, as in Redis.
            if let Some(shard) = guards[shard_of(key)].as_deref() {
                if shard.map.get(key).is_some_and(|e| !e.expired(now)) {
                    found += 1;
                }
            }
        }
        integer(out, found);
    }

    fn expire<A: Args + ?Sized>(
        &self,
        args: &A,
        unit: Unit,
        name: &str,
        now: Instant,
        out: &mut Vec<u8>,
    ) {
        if args.len() > 3 {
            out.extend_from_slice(b"-ERR Unsupported option ");
            push_sanitized(out, arg(args, 3), usize::MAX);
            out.extend_from_slice(b"\r\n");
            return;
        }
        let Some(amount) = parse_i64(arg(args, 2)) else {
            return out.extend_from_slice(NOT_INTEGER);
        };
        // Redis checks for overflow before it looks the key up.
        let millis = match unit {
            Unit::Millis => Some(amount),
            Unit::Seconds => amount.checked_mul(1000),
        };
        let Some(millis) = millis else {
            return invalid_expire(out, name);
        };
        // A time in the past (or now) deletes the key, as in Redis.
        let at = if millis > 0 {
            match now.checked_add(Duration::from_millis(millis as u64)) {
                Some(at) => Some(at),
                None => return invalid_expire(out, name),
            }
        } else {
            None
        };
        let key = arg(args, 1);
        let mut guard = self.shard(key);
        let shard = &mut *guard;
        let before = match shard.map.get_mut(key) {
            Some(e) if !e.expired(now) => match at {
                Some(_) => std::mem::replace(&mut e.expires, at),
                None => {
                    self.remove(shard, key);
                    return integer(out, 1);
                }
            },
            Some(_) => {
                self.remove(shard, key);
                return integer(out, 0);
            }
            None => return integer(out, 0),
        };
        if let Some(k) = shard.key_arc(key) {
            shard.push_deadline(k, before, at);
        }
        integer(out, 1);
    }

    fn ttl(&self, key: &[u8], unit: Unit, now: Instant, out: &mut Vec<u8>) {
        let mut guard = self.shard(key);
        let expires = match guard.map.get(key) {
            None => return integer(out, -2),
            Some(e) if !e.expired(now) => e.expires,
            Some(_) => {
                self.remove(&mut guard, key);
                return integer(out, -2);
            }
        };
        let Some(at) = expires else {
            return integer(out, -1);
        };
        let ms = i64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(i64::MAX);
        match unit {
            Unit::Millis => integer(out, ms),
            // Rounded to the nearest second, as Redis does.
            Unit::Seconds => integer(out, ms.saturating_add(500) / 1000),
        }
    }

    fn flushall<A: Args + ?Sized>(&self, args: &A, out: &mut Vec<u8>) {
        // ASYNC and SYNC are accepted; both free at once here.
        if args.len() > 2
            || (args.len() == 2 && !is(arg(args, 1), "ASYNC") && !is(arg(args, 1), "SYNC"))
        {
            return out.extend_from_slice(SYNTAX);
        }
        let mut guards = self.lock_mask(u64::MAX);
        for shard in guards.iter_mut().flatten() {
            shard.map.clear();
            shard.deadlines.clear();
            self.used.fetch_sub(shard.bytes, atomic::Ordering::Relaxed);
            shard.bytes = 0;
        }
        out.extend_from_slice(OK);
    }

    fn subscribe<A: Args + ?Sized>(
        &self,
        session: &mut Session,
        args: &A,
        out: &mut Vec<u8>,
    ) -> Outcome {
        for i in 1..args.len() {
            let channel = arg(args, i);
            // A channel named twice is confirmed twice and counted once.
            if !session.channels.contains(channel) {
                session.channels.insert(channel.into());
                self.channels.subscribe(channel, session.id);
            }
            subscription(out, b"subscribe", Some(channel), session.channels.len());
        }
        Outcome::Subscribed
    }

    fn unsubscribe<A: Args + ?Sized>(&self, session: &mut Session, args: &A, out: &mut Vec<u8>) {
        if args.len() == 1 {
            // Every channel, in no particular order; one confirmation even
            // when there was none.
            if session.channels.is_empty() {
                return subscription(out, b"unsubscribe", None, 0);
            }
            let all: Vec<Box<[u8]>> = session.channels.drain().collect();
            for (left, channel) in all.iter().enumerate() {
                self.channels.unsubscribe(channel, session.id);
                subscription(out, b"unsubscribe", Some(channel), all.len() - left - 1);
            }
            return;
        }
        for i in 1..args.len() {
            let channel = arg(args, i);
            if session.channels.remove(channel) {
                self.channels.unsubscribe(channel, session.id);
            }
            subscription(out, b"unsubscribe", Some(channel), session.channels.len());
        }
    }

    fn publish(
        &self,
        session: &mut Session,
        channel: &[u8],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Outcome {
        let n = self.channels.publish(channel, &mut session.receivers);
        integer(out, n as i64);
        if n == 0 {
            return Outcome::Reply;
        }
        session.message.clear();
        message(&mut session.message, channel, payload);
        Outcome::Publish
    }
}

/// SET's EX/PX value as a deadline, with Redis's checks: an integer, above
/// zero, and not overflowing once converted and added to now.
fn set_deadline(text: &[u8], unit: Unit, now: Instant) -> Result<Instant, BadTtl> {
    let amount = parse_i64(text).ok_or(BadTtl::NotInteger)?;
    if amount <= 0 {
        return Err(BadTtl::Invalid);
    }
    let millis = match unit {
        Unit::Millis => amount,
        Unit::Seconds => amount.checked_mul(1000).ok_or(BadTtl::Invalid)?,
    };
    now.checked_add(Duration::from_millis(millis as u64))
        .ok_or(BadTtl::Invalid)
}

fn ping<A: Args + ?Sized>(session: &Session, args: &A, out: &mut Vec<u8>) {
    if args.len() > 2 {
        return wrong_arity(out, "ping");
    }
    if session.channels.is_empty() {
        match args.get(1) {
            None => out.extend_from_slice(PONG),
            Some(m) => bulk(out, m),
        }
    } else {
        // A subscribed connection gets PING's answer in the shape of a
        // message (RESP2): `pong` and the argument, or an empty string.
        array(out, 2);
        bulk(out, b"pong");
        bulk(out, args.get(1).unwrap_or(b""));
    }
}

/// COMMAND answers just enough for clients to start: an empty list of
/// commands and docs (they then go without hints), and the real count.
fn command<A: Args + ?Sized>(args: &A, out: &mut Vec<u8>) {
    let Some(sub) = args.get(1) else {
        return array(out, 0);
    };
    if is(sub, "COUNT") {
        if args.len() != 2 {
            return wrong_arity(out, "command|count");
        }
        integer(out, COMMANDS.len() as i64);
    } else if is(sub, "DOCS") {
        array(out, 0);
    } else {
        unknown_subcommand(out, sub, "COMMAND");
    }
}

/// The configuration parameters CONFIG GET knows: `redis-benchmark` asks for
/// these two before it starts.
const CONFIG: [(&str, &str); 2] = [("save", ""), ("appendonly", "no")];

/// CONFIG GET: a flat array of name, value for each parameter asked for
/// that exists (named as asked, as Redis does); nothing for the others.
fn config<A: Args + ?Sized>(args: &A, out: &mut Vec<u8>) {
    let sub = arg(args, 1);
    if !is(sub, "GET") {
        return unknown_subcommand(out, sub, "CONFIG");
    }
    if args.len() < 3 {
        return wrong_arity(out, "config|get");
    }
    let value = |name: &[u8]| {
        CONFIG
            .iter()
            .find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let found = (2..args.len())
        .filter(|&i| value(arg(args, i)).is_some())
        .count();
    array(out, 2 * found);
    for i in 2..args.len() {
        if let Some(v) = value(arg(args, i)) {
            bulk(out, arg(args, i));
            bulk(out, v.as_bytes());
        }
    }
}

/// `-ERR unknown command 'foo', with args beginning with: 'a' 'b' `, as Redis
/// words it: the name cut at 128 bytes, arguments quoted until 128 bytes of
/// them are written, and CR/LF turned into spaces so the reply stays one line.
fn unknown_command<A: Args + ?Sized>(out: &mut Vec<u8>, args: &A) {
    out.extend_from_slice(b"-ERR unknown command '");
    push_sanitized(out, arg(args, 0), 128);
    out.extend_from_slice(b"', with args beginning with: ");
    let mut written = 0;
    for i in 1..args.len() {
        if written >= 128 {
            break;
        }
        let a = arg(args, i);
        let take = a.len().min(128 - written);
        out.push(b'\'');
        push_sanitized(out, a, take);
        out.extend_from_slice(b"' ");
        written += take + 3;
    }
    out.extend_from_slice(b"\r\n");
}

fn unknown_subcommand(out: &mut Vec<u8>, sub: &[u8], command: &str) {
    out.extend_from_slice(b"-ERR unknown subcommand '");
    push_sanitized(out, sub, 128);
    out.extend_from_slice(b"'. Try ");
    out.extend_from_slice(command.as_bytes());
    out.extend_from_slice(b" HELP.\r\n");
}

fn wrong_arity(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b"-ERR wrong number of arguments for '");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"' command\r\n");
}

fn invalid_expire(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b"-ERR invalid expire time in '");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"' command\r\n");
}

/// Appends at most `max` bytes of client text to an error line, CR and LF
/// replaced by spaces (Redis's `addReplyErrorLength` does the same).
fn push_sanitized(out: &mut Vec<u8>, text: &[u8], max: usize) {
    out.extend(
        text.iter()
            .take(max)
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// Parses an integer exactly as Redis's `string2ll`: optional `-`, digits,
/// no sign `+`, no spaces, no leading zeros (`"0"` itself is fine, `"-0"` is
/// not), at most 20 bytes, within i64.
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
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
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

/// Writes `n` in decimal into the end of `buf` and returns the digits.
fn itoa(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

// The private RESP writers. netpool will have public ones next to its RESP
// framing; these stay small so that switching costs nothing.

fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    out.extend_from_slice(itoa(n, &mut [0; 20]));
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa(data.len() as i64, &mut [0; 20]));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(NULL);
}

fn array(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    out.extend_from_slice(itoa(n as i64, &mut [0; 20]));
    out.extend_from_slice(b"\r\n");
}
