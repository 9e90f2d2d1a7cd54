//! The crate's error type.

use std::fmt;
use std::io;

/// Everything that can go wrong when starting, running or reaching a server.
///
/// Errors on one connection never surface here: they close that connection
/// and are reported to [`Handler::on_disconnect`](crate::Handler::on_disconnect)
/// as a [`CloseReason`](crate::CloseReason).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed: binding, listening, creating the poll, or the
    /// poll itself.
    Io(io::Error),
    /// A configuration value is out of range; the text says which and why.
    InvalidConfig(String),
    /// The server's loop has exited, so the handle cannot reach it.
    Stopped,
    /// [`ServerHandle::stop`](crate::ServerHandle::stop) was called on the
    /// loop's own thread, where it would wait for itself. Use
    /// [`ServerHandle::request_stop`](crate::ServerHandle::request_stop).
    StopFromLoop,
    /// The thread running the loop panicked outside any handler.
    LoopPanicked,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            Error::Stopped => f.write_str("the server has stopped"),
            Error::StopFromLoop => f.write_str(
                "stop() called on the server's own loop thread; use request_stop() there",
            ),
            Error::LoopPanicked => f.write_str("the server's loop thread panicked"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
