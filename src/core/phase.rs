//! Where a connection is in its life: one enum, so that no two flags can
//! contradict each other.

use std::fmt;

use crate::base::close::CloseReason;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// TLS only: the handshake is under way. Reading and writing TLS records,
    /// no lines yet; the handler has not seen the connection.
    Handshaking,
    /// PROXY protocol on: reading the header that names the real client.
    /// No line is read and the handler has not heard of the connection yet.
    ProxyHeader,
    /// Reading lines and writing replies.
    Open,
    /// Not reading: unsent output is above the high-water mark. Only writing
    /// until it drops to the low-water mark.
    Throttled,
    /// No more lines are read; pending output is being flushed. Then the
    /// write side is shut down, and the connection lingers (if the peer may
    /// still send) or closes.
    Closing { reason: CloseReason, linger: bool },
    /// Our side is shut down. Reading and discarding until the peer closes,
    /// so that closing never turns into a reset that could destroy replies
    /// the peer has not read yet.
    Lingering { reason: CloseReason },
    /// Done: the loop removes it.
    Closed { reason: CloseReason },
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Handshaking => f.write_str("handshaking"),
            Phase::ProxyHeader => f.write_str("awaiting PROXY header"),
            Phase::Open => f.write_str("open"),
            Phase::Throttled => f.write_str("throttled"),
            Phase::Closing { reason, .. } => write!(f, "closing ({reason})"),
            Phase::Lingering { reason } => write!(f, "lingering ({reason})"),
            Phase::Closed { reason } => write!(f, "closed ({reason})"),
        }
    }
}
