//! The loop's settings: every limit it enforces, with its default. The
//! public way to set them is [`Builder`](crate::Builder); each default is
//! documented on its setter, with how to size it.

use std::path::PathBuf;
use std::time::Duration;

use crate::alarm::AlarmConfig;
use crate::base::time::millis;
use crate::budget::Overflow;
use crate::distribution::Distribution;
use crate::error::ConfigError;
use crate::filter::AddressFilter;
#[cfg(feature = "tls")]
use crate::tls_config::TlsSource;

/// The loop's settings, frozen when the server is built.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) acceptors: usize,
    pub(crate) overflow: Overflow,
    /// How long grown slots must stay unused before they are given back;
    /// zero: kept.
    pub(crate) grow_cooldown: Duration,
    pub(crate) refuse_message: Vec<u8>,
    pub(crate) backlog: i32,
    pub(crate) nodelay: bool,
    pub(crate) max_line_len: usize,
    pub(crate) read_buffer: usize,
    pub(crate) high_water: usize,
    pub(crate) low_water: usize,
    pub(crate) output_limit: usize,
    pub(crate) linger: Duration,
    pub(crate) idle_timeout: Duration,
    /// How long a started frame may take to complete; zero: no bound.
    pub(crate) frame_timeout: Duration,
    pub(crate) write_stall_timeout: Duration,
    pub(crate) accept_backoff: Duration,
    pub(crate) spare_descriptor: bool,
    pub(crate) max_per_ip: u32,
    pub(crate) accept_rate: u32,
    pub(crate) proxy_protocol: bool,
    pub(crate) proxy_header_timeout: Duration,
    pub(crate) filter: AddressFilter,
    pub(crate) alarm: Option<AlarmConfig>,
    pub(crate) events_capacity: usize,
    pub(crate) busy_poll: Duration,
    /// Replies are written once per connection when a batch of events is
    /// done, not after each read (see `reactor/held.rs`).
    pub(crate) write_at_turn_end: bool,
    /// How often the handler's `on_tick` runs; zero: never.
    pub(crate) tick: Duration,
    /// The mode of Unix socket files bound; `None`: `0o777 & !umask`.
    pub(crate) unix_mode: Option<u32>,
    /// Hand the listeners over to a successor through this control socket.
    pub(crate) handover: Option<HandoverConfig>,
    pub(crate) max_deferred_replies: usize,
    pub(crate) command_queue_limit: usize,
    /// Serve TLS with this config (or these PEM files).
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<TlsSource>,
    #[cfg(feature = "tls")]
    pub(crate) alpn: Option<Vec<Vec<u8>>>,
    /// How often loop 0 looks at the PEM files for a renewal; zero: never.
    #[cfg(feature = "tls")]
    pub(crate) tls_watch: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_handshakes: usize,
    pub(crate) workers: usize,
    pub(crate) distribution: Distribution,
    pub(crate) pin_cores: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            acceptors: 1024,
            overflow: Overflow::Refuse,
            grow_cooldown: Duration::from_secs(60),
            refuse_message: Vec::new(),
            backlog: 1024,
            nodelay: true,
            max_line_len: 64 * 1024,
            read_buffer: 64 * 1024,
            high_water: 64 * 1024,
            low_water: 16 * 1024,
            output_limit: 1024 * 1024,
            linger: Duration::from_secs(2),
            idle_timeout: Duration::ZERO,
            frame_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(30),
            accept_backoff: Duration::from_millis(100),
            spare_descriptor: true,
            max_per_ip: 0,
            accept_rate: 0,
            proxy_protocol: false,
            proxy_header_timeout: Duration::from_secs(5),
            filter: AddressFilter::default(),
            alarm: None,
            events_capacity: 1024,
            busy_poll: Duration::ZERO,
            write_at_turn_end: true,
            tick: Duration::ZERO,
            unix_mode: None,
            handover: None,
            max_deferred_replies: DEFAULT_MAX_DEFERRED_REPLIES,
            command_queue_limit: DEFAULT_COMMAND_QUEUE_LIMIT,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            alpn: None,
            #[cfg(feature = "tls")]
            tls_watch: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 256,
            workers: 1,
            distribution: Distribution::default(),
            pin_cores: false,
        }
    }
}

impl Config {
    /// Checks every setting, alone and against the others, before anything
    /// is bound: a bad value is a usage error that names the setting (the
    /// [`Builder`](crate::Builder) method), never a server that starts and
    /// then misbehaves (`acceptors(0)` would refuse everyone).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let at_least_one =
            |setting: &'static str, value: usize| check(value >= 1, setting, "must be at least 1");
        check_acceptors(self.acceptors)?;
        if let Overflow::Grow { step, max } = self.overflow {
            check(step >= 1, "overflow", "Grow's step must be at least 1")?;
            check(
                max >= self.acceptors,
                "overflow",
                "Grow's max must be at least the number of acceptors",
            )?;
        }
        check(self.backlog >= 1, "backlog", "must be at least 1")?;
        at_least_one("max_line_len", self.max_line_len)?;
        check(
            self.read_buffer >= 512,
            "read_buffer",
            "must be at least 512 bytes",
        )?;
        check(
            self.low_water <= self.high_water,
            "output_water_marks",
            "the low-water mark must not exceed the high-water mark",
        )?;
        check(
            self.high_water <= self.output_limit,
            "output_limit",
            "must be at least the high-water mark",
        )?;
        positive("linger", self.linger)?;
        positive("accept_backoff", self.accept_backoff)?;
        positive("proxy_header_timeout", self.proxy_header_timeout)?;
        positive("tls_handshake_timeout", self.handshake_timeout)?;
        at_least_one("events_capacity", self.events_capacity)?;
        check(
            self.busy_poll <= MAX_BUSY_POLL,
            "busy_poll",
            "must be at most 1 second",
        )?;
        at_least_one("max_deferred_replies", self.max_deferred_replies)?;
        at_least_one("command_queue_limit", self.command_queue_limit)?;
        at_least_one("max_handshakes", self.max_handshakes)?;
        at_least_one("workers", self.workers)?;
        check(
            self.workers <= MAX_WORKERS,
            "workers",
            "must be at most 1024",
        )?;
        check(
            !matches!(self.unix_mode, Some(mode) if mode > 0o7777),
            "unix_mode",
            "must be a permission mode (at most 0o7777)",
        )?;
        Ok(())
    }
}

/// Replies one connection may have deferred and not yet written before the
/// loop stops reading it; see [`Builder::max_deferred_replies`](crate::Builder::max_deferred_replies).
pub(crate) const DEFAULT_MAX_DEFERRED_REPLIES: usize = 128;

/// Bytes other threads may have queued for one loop; see
/// [`Builder::command_queue_limit`](crate::Builder::command_queue_limit).
pub(crate) const DEFAULT_COMMAND_QUEUE_LIMIT: usize = 4 * 1024 * 1024;

/// The longest busy-poll: past this, spinning is not a latency trade but a
/// busy loop.
const MAX_BUSY_POLL: Duration = Duration::from_secs(1);

/// The rule on the budget, at build ([`Builder::acceptors`](crate::Builder::acceptors))
/// and at run time ([`ServerHandle::set_acceptors`](crate::ServerHandle::set_acceptors)),
/// so that both give the same error: a budget of no slot would refuse every
/// new client (under `Pause`, keep them all waiting), which is a mistake,
/// not a mode. (To stop taking connections, stop the server.)
pub(crate) fn check_acceptors(acceptors: usize) -> Result<(), ConfigError> {
    check(acceptors >= 1, "acceptors", "must be at least 1")
}

/// `Err` naming `setting` unless `ok`.
fn check(ok: bool, setting: &'static str, reason: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(setting, reason))
    }
}

/// A duration that must not be zero (zero does not mean "off" for it).
fn positive(setting: &'static str, d: Duration) -> Result<(), ConfigError> {
    check(
        millis(d).is_some(),
        setting,
        "must be at least one millisecond",
    )
}

/// Where a server listens for a successor, and how long it drains after
/// handing over (see [`Builder::handover`](crate::Builder::handover)).
#[derive(Debug, Clone)]
pub(crate) struct HandoverConfig {
    pub(crate) path: PathBuf,
    pub(crate) grace: Duration,
}

/// The most event loops one server runs: far beyond any core count a loop per
/// core would need, low enough that a typo cannot spawn a million threads.
const MAX_WORKERS: usize = 1024;
