//! [`Builder`]: every setting of a server, with its default and how to size
//! it. Binding (`Builder::bind`, `Builder::unix`, `Builder::listener`,
//! `Builder::inherit`, `Builder::take_over`...) is in `server.rs`, beside
//! the [`Server`](crate::Server) it makes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use std::fmt;

use crate::alarm::{Alarm, AlarmConfig};
use crate::budget::Overflow;
use crate::config::{Config, HandoverConfig};
use crate::distribution::Distribution;
use crate::framing::{Framing, Lines};
#[cfg(feature = "tls")]
use crate::tls_config::TlsSource;

/// Configures and binds a [`Server`](crate::Server).
///
/// Setters never fail; [`bind`](Builder::bind) checks every setting, alone
/// and against the others, before anything is bound, and a bad one is an
/// [`Error::InvalidConfig`](crate::Error::InvalidConfig) whose
/// [`ConfigError::setting`](crate::ConfigError::setting) names the method
/// at fault.
///
/// ```
/// use netpool::{Overflow, Server};
///
/// let server = Server::builder()
///     .acceptors(2)
///     .overflow(Overflow::Refuse)
///     .refuse_message(b"-ERR max number of clients reached\r\n".to_vec())
///     .bind("127.0.0.1:0".parse().unwrap())?;
/// assert_ne!(server.local_addr().port(), 0);
/// # Ok::<(), netpool::Error>(())
/// ```
#[derive(Clone)]
pub struct Builder<F: Framing = Lines> {
    pub(crate) config: Config,
    /// How the bytes of every connection become frames; copied to each loop.
    pub(crate) framing: F,
}

impl Default for Builder<Lines> {
    fn default() -> Self {
        Builder {
            config: Config::default(),
            framing: Lines::default(),
        }
    }
}

impl<F: Framing> fmt::Debug for Builder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("framing", &std::any::type_name::<F>())
            .finish()
    }
}

impl Builder<Lines> {
    /// A builder with the defaults documented on each method: lines, up to
    /// 64 KiB each.
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest line accepted, in bytes, counted without its `\n` and
    /// without a trailing `\r`. Default 64 KiB (Redis's inline limit); at
    /// least 1. A longer line closes the connection with
    /// [`CloseReason::LineTooLong`](crate::CloseReason::LineTooLong).
    ///
    /// It also bounds the per-connection buffer of an incomplete line, which
    /// is the only input a connection holds: at most `acceptors ×
    /// max_line_len` in partial lines for the whole server (64 MiB with the
    /// defaults, if every client stops mid-line at once). Size the two
    /// together: to the longest line your protocol needs, and to the memory
    /// you can give to clients that hold half a line each. How long they may
    /// hold it is [`frame_timeout`](Builder::frame_timeout). (Other framings
    /// carry their own bound, which plays the same part: see
    /// [`framing`](Builder::framing).)
    pub fn max_line_len(mut self, bytes: usize) -> Self {
        self.config.max_line_len = bytes;
        self.framing = Lines::new(bytes);
        self
    }
}

impl<F: Framing> Builder<F> {
    /// How the bytes of a connection become the frames its handler sees.
    /// Default [`Lines`]. Others built in: [`LengthPrefixed`](crate::LengthPrefixed)
    /// (a binary length header), [`Resp`](crate::Resp) (the Redis protocol)
    /// and [`Raw`](crate::Raw) (bytes as they come); or a [`Framing`] of your
    /// own. The handler then implements `Handler<G>`; a closure
    /// `|frame: &[u8], conn: &mut Conn|` serves any framing whose frames are
    /// byte slices. Each framing bounds what one connection may buffer; set
    /// the bound on the framing itself (for example
    /// `LengthPrefixed::new(4).max_frame(1 << 20)`).
    ///
    /// ```
    /// use netpool::{LengthPrefixed, Server};
    ///
    /// let server = Server::builder()
    ///     .framing(LengthPrefixed::new(2).max_frame(4096))
    ///     .bind("127.0.0.1:0".parse().unwrap())?;
    /// # Ok::<(), netpool::Error>(())
    /// ```
    pub fn framing<G: Framing>(self, framing: G) -> Builder<G> {
        Builder {
            config: self.config,
            framing,
        }
    }

    /// The number of acceptor slots: the most connections served at once.
    /// Default 1024; at least 1. Each idle connection costs a few hundred
    /// bytes of user memory plus the kernel's socket buffers; size it to the
    /// descriptors you can spare (`ulimit -n`) and to what your handler can
    /// serve. Each connection may also hold one incomplete line, up to
    /// [`max_line_len`](Builder::max_line_len): see there for the memory
    /// bound.
    pub fn acceptors(mut self, slots: usize) -> Self {
        self.config.acceptors = slots;
        self
    }

    /// What to do when every slot is busy. Default [`Overflow::Refuse`].
    /// [`Overflow::Grow`] needs a `step` of at least 1 and a `max` of at
    /// least [`acceptors`](Builder::acceptors).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.config.overflow = overflow;
        self
    }

    /// How long slots added by [`Overflow::Grow`] must go unused before they
    /// are given back. Default 60 s. Once the budget has had `step` unused
    /// slots for this long (at every moment: a burst in between starts the
    /// wait again), `step` slots go back, then the next `step` after another
    /// cooldown, never below [`acceptors`](Builder::acceptors), and never by
    /// closing a served connection: lowering the budget only makes new
    /// connections wait for it, or grow it again. `Duration::ZERO` keeps
    /// grown slots for good. Size it above the gap between the bursts you
    /// expect, so that the budget does not shrink and grow with every one.
    pub fn grow_cooldown(mut self, cooldown: Duration) -> Self {
        self.config.grow_cooldown = cooldown;
        self
    }

    /// Bytes written to a refused connection before it is closed (as Redis
    /// writes `-ERR max number of clients reached`). Default: none. It is
    /// written once, without waiting: keep it well under the socket's send
    /// buffer (a few KiB are always safe). A TLS server sends no message (it
    /// would reach a TLS client as garbage): it just closes.
    pub fn refuse_message(mut self, message: impl Into<Vec<u8>>) -> Self {
        self.config.refuse_message = message.into();
        self
    }

    /// The listen backlog: connections the kernel queues before they are
    /// accepted. Default 1024 (the kernel caps it at `net.core.somaxconn`).
    /// Under [`Overflow::Pause`] this is the waiting room.
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.config.backlog = backlog;
        self
    }

    /// Sets `TCP_NODELAY` on accepted sockets, so small replies leave at once
    /// instead of waiting for Nagle's algorithm. Default on. (A Unix socket
    /// has no such delay.)
    pub fn nodelay(mut self, on: bool) -> Self {
        self.config.nodelay = on;
        self
    }

    /// The size of the loop's one shared read buffer. Default 64 KiB. It is
    /// allocated once per loop, not per connection; larger values mean fewer
    /// `read` calls for bulk input.
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.config.read_buffer = bytes;
        self
    }

    /// Backpressure marks for a connection's unsent output. Above `high`
    /// bytes the loop stops reading from that connection; at or below `low`
    /// it reads again. Defaults 64 KiB and 16 KiB (Netty uses 64/32 KiB).
    ///
    /// # Backpressure
    ///
    /// A client that sends requests but never reads replies would otherwise
    /// make the server buffer replies without bound. With the marks, its
    /// requests simply stay in the kernel's buffers until it reads.
    pub fn output_water_marks(mut self, low: usize, high: usize) -> Self {
        self.config.low_water = low;
        self.config.high_water = high;
        self
    }

    /// The hard cap on a connection's unsent output, in bytes. Default 1 MiB.
    /// Past it the output is dropped and the connection is closed with
    /// [`CloseReason::OutputOverflow`](crate::CloseReason::OutputOverflow).
    /// Reading stops at the high-water mark, so only a handler that sends a
    /// lot per line, or [`ConnHandle::send`](crate::ConnHandle::send) to a
    /// peer that does not read, can reach it.
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.config.output_limit = bytes;
        self
    }

    /// The most replies one connection may have deferred to other threads
    /// ([`Conn::defer`](crate::Conn::defer)) and not yet written. Default
    /// 128.
    ///
    /// # Backpressure
    ///
    /// At the bound the loop stops reading the connection, as above the
    /// high-water mark, and reads again once half of them are written: a
    /// client that pipelines faster than the workers answer waits in the
    /// kernel's buffers instead of queuing work without limit. Each
    /// outstanding reply costs the connection about 50 bytes, plus what waits
    /// behind it (counted by the water marks). The pool's size, not this
    /// bound, sets throughput: a few times the pool's threads is plenty for
    /// one connection.
    pub fn max_deferred_replies(mut self, replies: usize) -> Self {
        self.config.max_deferred_replies = replies;
        self
    }

    /// The most bytes other threads may have queued for one loop: replies
    /// ([`ConnHandle::send`](crate::ConnHandle::send),
    /// [`ReplySlot::send`](crate::ReplySlot::send)) and closures
    /// ([`ConnHandle::run`](crate::ConnHandle::run)), each counted with a
    /// few dozen bytes of its own. Default 4 MiB.
    ///
    /// # Backpressure
    ///
    /// The loop takes its whole queue once per turn, so the bound is what a
    /// pool of workers may produce between two turns. Past it, the sends
    /// that do not wait fail with [`Error::Full`](crate::Error::Full) and
    /// nothing is queued; `send_wait` waits for the loop's next turn (but
    /// never on a loop thread). One command larger than the bound still
    /// passes when the queue is empty. Size it to a few times the replies
    /// your workers finish per millisecond.
    pub fn command_queue_limit(mut self, bytes: usize) -> Self {
        self.config.command_queue_limit = bytes;
        self
    }

    /// How long a closing connection waits for the peer to finish after the
    /// server has shut down its side. Default 2 s. Closing a socket that
    /// still has unread input makes the kernel send a reset, which can
    /// destroy replies the peer has not read yet; so the loop shuts down
    /// writing, reads and discards until the peer closes, and closes at the
    /// latest after this long (nginx calls it lingering close).
    pub fn linger(mut self, timeout: Duration) -> Self {
        self.config.linger = timeout;
        self
    }

    /// Closes a connection on which no complete line arrived and no output
    /// made progress for this long ([`CloseReason::IdleTimeout`](crate::CloseReason::IdleTimeout)).
    /// Bytes without a newline do not count as activity, so a client that
    /// trickles a line byte by byte (slowloris) is closed too. Default:
    /// `Duration::ZERO`, off: a client that keeps a connection open and
    /// silent (a subscriber, a pooled connection) is legitimate, and
    /// [`frame_timeout`](Builder::frame_timeout) already bounds a line that
    /// has started.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// How long a frame may take to arrive, from its first byte to its end
    /// (a line's `\n`, with the default [`Lines`] framing; whatever ends a
    /// frame in another [`framing`](Builder::framing)). Default 30 s;
    /// `Duration::ZERO` turns it off. A client that trickles a frame without
    /// ever ending it (slowloris: with no bound, 1,024 of them hold 64 MiB of
    /// half lines at no cost to themselves) is closed gracefully with
    /// [`CloseReason::FrameTimeout`](crate::CloseReason::FrameTimeout); one
    /// that sends nothing has no frame under way and keeps its connection
    /// (bound that with [`idle_timeout`](Builder::idle_timeout)). While the
    /// server is not reading a connection (backpressure), its clock stops,
    /// and starts again when reading resumes.
    ///
    /// Size it well above the time a legitimate frame takes over the slowest
    /// link you serve (a 64 KiB line at 20 kbit/s takes 26 s). On a TLS
    /// connection it bounds the frame, not a TLS record held incomplete by
    /// rustls (at most one record, about 18 KiB).
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.config.frame_timeout = timeout;
        self
    }

    /// Closes a connection whose queued output made no progress for this
    /// long: the peer stopped reading ([`CloseReason::WriteStalled`](crate::CloseReason::WriteStalled)).
    /// This is what bounds a graceful close to a peer that never reads.
    /// Default 30 s; `Duration::ZERO` turns it off.
    pub fn write_stall_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_stall_timeout = timeout;
        self
    }

    /// How long to stop accepting after `accept` fails for lack of resources
    /// (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`). Default 100 ms (Ranch's
    /// figure). The loop retries on its own timer, so connections that queued
    /// meanwhile are accepted even if no new one arrives.
    pub fn accept_backoff(mut self, backoff: Duration) -> Self {
        self.config.accept_backoff = backoff;
        self
    }

    /// Keeps one descriptor open (on `/dev/null`) for the moment `accept`
    /// fails with `EMFILE`: the loop then closes it, accepts the waiting
    /// client, writes the refusal message, closes it and reopens the spare.
    /// Queued clients get an answer instead of hanging in the backlog until
    /// descriptors free up. Default on; off, the loop only backs off and
    /// retries ([`accept_backoff`](Builder::accept_backoff)), and clients
    /// wait.
    pub fn spare_descriptor(mut self, on: bool) -> Self {
        self.config.spare_descriptor = on;
        self
    }

    /// At most this many connections at once from one IP address, so one
    /// address cannot take the whole budget; the excess is refused (with the
    /// refusal message) and counted in [`Stats::refused_per_ip`](crate::Stats::refused_per_ip).
    /// Default 0: no cap. With [`proxy_protocol`](Builder::proxy_protocol)
    /// on, the address is the client's that the header names, never the
    /// balancer's: the cap is applied once the header is in, and a refused
    /// client gets the refusal message then
    /// ([`CloseReason::TooManyFromAddress`](crate::CloseReason::TooManyFromAddress)).
    /// It caps TCP clients only: a client on a Unix socket has no IP
    /// address (unless a PROXY header names one), and is counted only in
    /// the budget.
    pub fn max_per_ip(mut self, connections: u32) -> Self {
        self.config.max_per_ip = connections;
        self
    }

    /// Accepts at most this many connections per second on average (a token
    /// bucket holding one second's worth, so short bursts pass). The excess
    /// meets the overflow strategy: under [`Overflow::Pause`] it waits in
    /// the backlog, otherwise it is refused and counted in
    /// [`Stats::rate_limited`](crate::Stats::rate_limited). Default 0: no
    /// limit.
    pub fn accept_rate(mut self, per_second: u32) -> Self {
        self.config.accept_rate = per_second;
        self
    }

    /// Expects every connection to start with a PROXY protocol header (v1 or
    /// v2, HAProxy's spec), as sent by a load balancer in front of the
    /// server. The header is read before anything reaches the handler; the
    /// connection's [`peer_addr`](crate::Conn::peer_addr) becomes the client
    /// address it carries, and [`proxy_addr`](crate::Conn::proxy_addr) keeps
    /// the balancer's, and every policy keyed by address (the filters, the
    /// per-address cap) applies to that client. A missing, malformed or
    /// over-long header, or one not complete within
    /// [`proxy_header_timeout`](Builder::proxy_header_timeout), closes the
    /// connection (counted in [`Stats::bad_proxy_headers`](crate::Stats::bad_proxy_headers)).
    /// Default off. Turn it on only behind a proxy that always sends it:
    /// anyone who can connect directly could claim any address. With TLS,
    /// the header comes first, in the clear, and the handshake follows it
    /// (as HAProxy sends it in TCP mode).
    pub fn proxy_protocol(mut self, on: bool) -> Self {
        self.config.proxy_protocol = on;
        self
    }

    /// How long a connection may take to send its PROXY protocol header.
    /// Default 5 s (Ranch's handshake timeout); at least 1 ms.
    pub fn proxy_header_timeout(mut self, timeout: Duration) -> Self {
        self.config.proxy_header_timeout = timeout;
        self
    }

    /// Serves only clients in these ranges (call once per range; with none,
    /// everyone not denied is served). Decided at accept, before the socket
    /// is registered, or with the PROXY protocol on, right after the header,
    /// against the client address it carries. Turned away clients are closed
    /// without the refusal message and counted in [`Stats::denied`](crate::Stats::denied).
    /// Filters apply to TCP clients only: a client on a Unix socket has no
    /// address (file permissions, [`unix_mode`](Builder::unix_mode), decide
    /// who may connect there), unless a PROXY header names one.
    ///
    /// ```
    /// let builder = netpool::Server::builder()
    ///     .allow("10.0.0.0/8".parse().unwrap())
    ///     .deny("10.9.0.0/16".parse().unwrap());
    /// ```
    pub fn allow(mut self, range: IpNet) -> Self {
        self.config.filter.allow.push(range);
        self
    }

    /// Never serves clients in this range (call once per range); deny wins
    /// over [`allow`](Builder::allow).
    pub fn deny(mut self, range: IpNet) -> Self {
        self.config.filter.deny.push(range);
        self
    }

    /// Calls `callback` when a connection is accepted while `threshold` or
    /// more are active, at most once per `cooldown`, so a count that flaps
    /// around the threshold does not flood it (Ranch's alarms). It runs on
    /// the loop's thread: keep it short (log, bump a metric, send to a
    /// channel). A panic in it is caught and logged.
    pub fn alarm(
        mut self,
        threshold: usize,
        cooldown: Duration,
        callback: impl Fn(&Alarm) + Send + Sync + 'static,
    ) -> Self {
        self.config.alarm = Some(AlarmConfig {
            threshold,
            cooldown,
            callback: Arc::new(callback),
        });
        self
    }

    /// Busy-polling: after a turn that handled events, the loop keeps
    /// polling without sleeping for up to this long before it blocks, so
    /// that a client's next request is picked up without the cost of waking
    /// a sleeping thread. Default `Duration::ZERO`: off. At most 1 s.
    ///
    /// It trades CPU for latency. On request/response traffic the round
    /// trip is dominated by waking the loop, not by serving the request: on
    /// the 2-core machine of BENCHMARKS.md a 100 µs spin gave one
    /// connection 2 to 2.8 times tokio's requests/s (README, "Latency").
    /// The spin burns its core
    /// while it waits, so it pays only when the loop has a core of its own
    /// (pin it, [`workers`](Builder::workers) at most the spare cores); on a
    /// machine whose cores are all busy, it takes CPU from the work.
    ///
    /// It is adaptive and bounded: the loop spins only after a turn that
    /// found work (an idle server blocks at once and uses no CPU); a spin
    /// that comes up empty halves the next one, so under light load
    /// (requests milliseconds apart) spinning stops after a few requests;
    /// it comes back at full length once a request arrives within it again.
    /// Timers, handles and stop keep working while spinning. The time spent
    /// spinning is counted in [`Stats::busy_poll_micros`](crate::Stats::busy_poll_micros).
    ///
    /// Set it a little above one client turnaround (from our reply to the
    /// client's next request): a spin shorter than that catches nothing and
    /// stops. On the 2-core virtual machine of BENCHMARKS.md, with client
    /// and server on different cores, a turnaround is about 80 µs: 20 and
    /// 40 µs gained nothing there, 100 µs paid. Measure yours.
    pub fn busy_poll(mut self, spin: Duration) -> Self {
        self.config.busy_poll = spin;
        self
    }

    /// Writes replies at the end of the turn: the replies produced while
    /// the loop handles one batch of ready connections are written once per
    /// connection after the whole batch, instead of after each read (as
    /// redis-server does before it sleeps). Default: on.
    ///
    /// Never more `write` calls than writing after each read, and fewer
    /// when a connection is read more than once in a turn. A connection
    /// that closes, or whose held replies pass 64 KiB, is written at once,
    /// so its replies still come before its FIN.
    ///
    /// Measured against writing after each read (BENCHMARKS.md, the
    /// `netpool-each-read` rows; 3 rounds, pinned): with 50 connections
    /// at one request each, 3.8 % more requests/s for 4.7 % less CPU per
    /// request and a lower p50 (`rr-c50`), 1.8 % more and 3 % less at
    /// PING `-c 50 -P 1`; with one connection no difference beyond noise;
    /// at `-P 16` about 9 more user-space instructions per request (the
    /// copy into the held buffer), within the noise of total CPU. `false`
    /// writes after each read.
    pub fn write_at_turn_end(mut self, on: bool) -> Self {
        self.config.write_at_turn_end = on;
        self
    }

    /// Calls [`Handler::on_tick`](crate::Handler::on_tick) on every loop
    /// every `period`, for periodic work of the handler's own. Default
    /// `Duration::ZERO`: off, and `on_tick` is never called.
    ///
    /// There is no timer thread and no sleep: each loop folds its next tick
    /// into its `poll` timeout, as it does for its connections' deadlines,
    /// and calls `on_tick` between events once the period has come round.
    /// An idle loop therefore wakes once per period (and not at all with
    /// ticks off). Periods are whole milliseconds (a shorter one is 1 ms);
    /// a tick missed while the loop was busy is not made up.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let builder = netpool::Server::builder().tick(Duration::from_millis(100));
    /// ```
    pub fn tick(mut self, period: Duration) -> Self {
        self.config.tick = period;
        self
    }

    /// The permissions of the Unix socket files this builder binds
    /// ([`unix`](Builder::unix), [`bind_all`](Builder::bind_all)), for
    /// example `0o660` to let the socket file's group connect. Set before the
    /// socket listens, so nobody connects under the wrong mode. Default: the
    /// process's umask applied to `0o777`.
    pub fn unix_mode(mut self, mode: u32) -> Self {
        self.config.unix_mode = Some(mode);
        self
    }

    /// Lets a successor process take the server's listening sockets over
    /// without refusing or resetting a single connection: the server
    /// listens on the Unix control socket `ctl_path` (mode `0600`; only our
    /// own user, or root, may take over), and when a successor has taken the
    /// sockets ([`take_over`](Builder::take_over)) and accepts on them, this
    /// server stops accepting and *drains*: the connections it has are
    /// served on until their clients close them, for at most `grace`; then
    /// those still open are closed as at [`ServerHandle::stop`](crate::ServerHandle::stop)
    /// (with one more second to flush), and the loops return as after a
    /// stop. Its Unix socket files stay: the successor serves them. Default
    /// off.
    ///
    /// A stale control file is replaced; a live one (another server's) makes
    /// binding fail. The file is removed when the server stops.
    pub fn handover(mut self, ctl_path: impl Into<PathBuf>, grace: Duration) -> Self {
        self.config.handover = Some(HandoverConfig {
            path: ctl_path.into(),
            grace,
        });
        self
    }

    /// How many readiness events one `poll` call can return. Default 1024.
    pub fn events_capacity(mut self, events: usize) -> Self {
        self.config.events_capacity = events;
        self
    }

    /// Serves TLS with `config`: every connection is a TLS session, and the
    /// handler sees the same lines as on a plaintext server. The config is
    /// shared by all connections; replace it at run time with
    /// [`ServerHandle::reload_tls`](crate::ServerHandle::reload_tls).
    ///
    /// Build it with any crypto provider you like (see the `tls` module's
    /// notes on providers), or use [`tls_pem`](Builder::tls_pem).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.config.tls = Some(TlsSource::Config(config));
        self
    }

    /// Serves TLS with a certificate chain and private key read from PEM
    /// files when the server is bound (see [`tls_config_from_pem`](crate::tls_config_from_pem):
    /// ring provider, TLS 1.3 and 1.2). The key may be PKCS#8, PKCS#1 or
    /// SEC1.
    ///
    /// A problem with the files is reported by [`bind`](Builder::bind),
    /// naming the file and what is wrong with it. A renewal on disk is put
    /// in force by itself: see [`tls_watch`](Builder::tls_watch).
    #[cfg(feature = "tls")]
    pub fn tls_pem(mut self, cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Self {
        self.config.tls = Some(TlsSource::Pem {
            cert: cert_path.into(),
            key: key_path.into(),
        });
        self
    }

    /// How often the certificate and key files given to
    /// [`tls_pem`](Builder::tls_pem) are looked at for a renewal; zero turns
    /// the watch off. Default 5 s.
    ///
    /// One loop (loop 0) compares each file's identity (device and inode,
    /// through symlinks), size and modification time with what it was at the
    /// last load: two `stat` calls per period, so certbot's symlink swap,
    /// Kubernetes' directory swap, a rename over the old file and a rewrite
    /// in place are all seen. A changed pair is loaded and put in force for
    /// new connections; connections already open keep the one they started
    /// with. A pair that does not load (a half-written file, a key that does
    /// not match the certificate) is logged as a warning with the reason,
    /// counted in [`Stats::tls_cert_reload_failures`](crate::Stats::tls_cert_reload_failures),
    /// and not tried again until a file changes again; the last good pair
    /// stays in service. [`ServerHandle::reload_tls_pem`](crate::ServerHandle::reload_tls_pem)
    /// still reloads at once (and its files are watched from then on).
    #[cfg(feature = "tls")]
    pub fn tls_watch(mut self, period: Duration) -> Self {
        self.config.tls_watch = period;
        self
    }

    /// The ALPN protocols offered, most preferred first (for example
    /// `[b"h2".to_vec(), b"http/1.1".to_vec()]`). Default: the config's own
    /// list (none for [`tls_pem`](Builder::tls_pem)). When set, it replaces
    /// the list of every config the server uses, reloaded ones included. A
    /// client that offers ALPN but none of these protocols is refused with a
    /// `no_application_protocol` alert.
    #[cfg(feature = "tls")]
    pub fn alpn_protocols<P: Into<Vec<u8>>>(
        mut self,
        protocols: impl IntoIterator<Item = P>,
    ) -> Self {
        self.config.alpn = Some(protocols.into_iter().map(Into::into).collect());
        self
    }

    /// How long a TLS handshake may take, from accept to the client's
    /// `Finished`. Default 5 s (Ranch's figure; actix uses 3 s). A client that
    /// connects and never speaks holds one handshake place this long, and
    /// blocks nobody else.
    pub fn tls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// The most TLS handshakes in progress at once, per loop (each of
    /// [`workers`](Builder::workers) has its own). Default 256 (actix's
    /// figure); an established connection never counts. At the cap a new
    /// connection is not refused: to make room for it the loop closes a
    /// handshake of the address holding the most, the one that has made the
    /// least progress for the longest
    /// ([`CloseReason::HandshakeEvicted`](crate::CloseReason::HandshakeEvicted),
    /// counted in [`Stats::tls_handshake_evictions`](crate::Stats::tls_handshake_evictions)).
    /// So clients that open handshakes and go silent cannot lock the others
    /// out, however many they open, while the handshakes in progress, and
    /// their memory, stay bounded by the cap. Size it to what a loop can
    /// compute within a handshake timeout: a TLS 1.3 handshake with an ECDSA
    /// P-256 certificate took about 0.15 ms of server CPU here (ring, release
    /// build); RSA keys cost several times more.
    pub fn max_handshakes(mut self, handshakes: usize) -> Self {
        self.config.max_handshakes = handshakes;
        self
    }

    /// The number of event loops, each on its own thread. Default 1; at most
    /// 1024. One per core ([`workers_per_core`](Builder::workers_per_core))
    /// is the usual choice for a server that has the machine to itself.
    ///
    /// The loops share one listener ([`distribution`](Builder::distribution))
    /// and one exact budget of [`acceptors`](Builder::acceptors) slots: a
    /// slot is reserved before `accept`, so the server as a whole never
    /// serves more than the budget, whichever loops the connections land on.
    /// Under [`Overflow::Pause`], a slot freed on any loop resumes the paused
    /// accept.
    ///
    /// Each loop needs its own handler: run the server with
    /// [`Server::run_workers`](crate::Server::run_workers) or [`Server::spawn_workers`](crate::Server::spawn_workers) and a factory.
    /// [`Server::run`](crate::Server::run) and [`Server::spawn`](crate::Server::spawn) take one handler, so they serve
    /// with one loop and refuse a configuration of more.
    pub fn workers(mut self, loops: usize) -> Self {
        self.config.workers = loops;
        self
    }

    /// One event loop per core: [`workers`](Builder::workers) set to
    /// [`std::thread::available_parallelism`] (which honours CPU affinity
    /// masks and cgroup quotas), or 1 if that is unknown.
    pub fn workers_per_core(self) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.workers(cores)
    }

    /// How the loops share the listener. Default [`Distribution::Handoff`]:
    /// loop 0 accepts and hands each connection to the least loaded loop.
    /// Irrelevant with one loop.
    pub fn distribution(mut self, distribution: Distribution) -> Self {
        self.config.distribution = distribution;
        self
    }

    /// Pins loop `i` to core `i` (modulo the number of cores), through the
    /// `core_affinity` crate. Default off. Pinning keeps a loop's caches warm
    /// on a machine dedicated to the server; on a shared machine it can hurt,
    /// as the scheduler can no longer move a loop off a busy core. With
    /// [`Server::run_workers`](crate::Server::run_workers), the calling thread runs loop 0 and is pinned
    /// too. A failure to pin is logged and the loop runs unpinned.
    ///
    /// Available with the cargo feature `core_affinity`.
    #[cfg(feature = "core_affinity")]
    pub fn pin_cores(mut self, on: bool) -> Self {
        self.config.pin_cores = on;
        self
    }
}
