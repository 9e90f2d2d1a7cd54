//! The loop's settings: every limit it enforces, with its default. The
//! public way to set them is [`Builder`](crate::Builder); each default is
//! documented on its setter, with how to size it.

use std::time::Duration;

use crate::alarm::AlarmConfig;
use crate::budget::Overflow;
use crate::distribution::Distribution;
use crate::error::Error;
use crate::filter::AddressFilter;
#[cfg(feature = "tls")]
use crate::tls_config::TlsSource;

/// The loop's settings, frozen when the server is built.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) acceptors: usize,
    pub(crate) overflow: Overflow,
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
    /// Checks the settings against each other, before anything is bound.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::InvalidConfig(why.to_string()));
        if self.max_line_len == 0 {
            return bad("max_line_len must be at least 1");
        }
        if self.read_buffer < 512 {
            return bad("read_buffer must be at least 512 bytes");
        }
        if self.low_water > self.high_water {
            return bad("the low-water mark must not exceed the high-water mark");
        }
        if self.high_water > self.output_limit {
            return bad("the high-water mark must not exceed output_limit");
        }
        if let Overflow::Grow { max, .. } = self.overflow {
            if max < self.acceptors {
                return bad("Overflow::Grow's max must be at least the number of acceptors");
            }
        }
        if self.linger.is_zero() {
            return bad("linger must be positive");
        }
        if self.events_capacity == 0 {
            return bad("events_capacity must be at least 1");
        }
        if self.busy_poll > MAX_BUSY_POLL {
            return bad("busy_poll must be at most 1 second");
        }
        if self.max_handshakes == 0 {
            return bad("max_handshakes must be at least 1");
        }
        if self.handshake_timeout.is_zero() {
            return bad("tls_handshake_timeout must be longer than zero");
        }
        if self.workers == 0 {
            return bad("workers must be at least 1");
        }
        if self.workers > MAX_WORKERS {
            return bad("workers must be at most 1024");
        }
        Ok(())
    }
}

/// The longest busy-poll: past this, spinning is not a latency trade but a
/// busy loop.
const MAX_BUSY_POLL: Duration = Duration::from_secs(1);

/// The most event loops one server runs: far beyond any core count a loop per
/// core would need, low enough that a typo cannot spawn a million threads.
const MAX_WORKERS: usize = 1024;
