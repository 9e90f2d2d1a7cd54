//! Why a connection ended.

use std::fmt;
use std::io;

/// Why a connection ended, as told to [`Handler::on_disconnect`](crate::Handler::on_disconnect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer shut down its side (end of stream). The complete lines it had
    /// sent were handled and the replies flushed before the close; a trailing
    /// fragment without `\n` was dropped.
    PeerClosed,
    /// A frame did not follow the protocol (a malformed Redis request, say).
    /// Replies to earlier frames were flushed, then the framing's own error
    /// reply, if it has one.
    BadFrame,
    /// The peer reset the connection (`ECONNRESET` or `EPIPE`); unsent output
    /// was dropped.
    Reset,
    /// A line grew past [`Builder::max_line_len`](crate::Builder::max_line_len)
    /// (or a frame past its framing's bound). Replies to earlier frames were
    /// flushed first.
    LineTooLong,
    /// Pending output passed [`Builder::output_limit`](crate::Builder::output_limit):
    /// the peer was not reading. The output was dropped.
    OutputOverflow,
    /// [`Conn::close`](crate::Conn::close) or [`ConnHandle::close`](crate::ConnHandle::close) was called. Output was flushed
    /// first.
    Closed,
    /// The server was stopped. Output was flushed first, unless the stop's
    /// grace period ran out.
    Stopped,
    /// No complete line arrived and no output made progress for
    /// [`Builder::idle_timeout`](crate::Builder::idle_timeout). Closed
    /// gracefully.
    IdleTimeout,
    /// A frame (a line, with the default framing) was started but not
    /// completed within [`Builder::frame_timeout`](crate::Builder::frame_timeout):
    /// a client trickling bytes without ever ending its frame (slowloris).
    /// Replies to earlier frames were flushed first.
    FrameTimeout,
    /// Output waited longer than
    /// [`Builder::write_stall_timeout`](crate::Builder::write_stall_timeout)
    /// without any of it being written: the peer stopped reading. The output
    /// was dropped.
    WriteStalled,
    /// The PROXY protocol header was missing, malformed, too long or too
    /// late. The handler never hears of such a connection; the reason shows
    /// in the logs and in [`Stats::bad_proxy_headers`](crate::Stats::bad_proxy_headers).
    BadProxyHeader,
    /// The client address (from the PROXY header) is not allowed by the
    /// address filter. The handler never hears of such a connection; see
    /// [`Stats::denied`](crate::Stats::denied).
    Denied,
    /// With the PROXY protocol, the client the header names already had
    /// [`Builder::max_per_ip`](crate::Builder::max_per_ip) connections: the
    /// refusal message was sent (plaintext) and the connection closed. The
    /// handler never hears of such a connection; see
    /// [`Stats::refused_per_ip`](crate::Stats::refused_per_ip).
    TooManyFromAddress,
    /// The handler panicked while serving this connection. The panic was
    /// caught and logged; only this connection was closed.
    HandlerPanicked,
    /// Any other I/O error on the socket.
    Io(io::ErrorKind),
    /// TLS failed: the peer sent something that is not valid TLS, or a
    /// record that does not decrypt. The alert rustls produced was flushed
    /// before closing; the details are logged at debug level.
    Tls,
    /// The TLS handshake did not finish within
    /// [`Builder::tls_handshake_timeout`](crate::Builder::tls_handshake_timeout).
    /// The handler never saw such a connection, so this reason shows up only
    /// in the log and in [`Stats::tls_handshake_timeouts`](crate::Stats::tls_handshake_timeouts).
    HandshakeTimeout,
    /// The loop was at [`Builder::max_handshakes`](crate::Builder::max_handshakes)
    /// when a new connection came, and this handshake, of the address
    /// holding the most handshakes, had made the least progress for the
    /// longest: it was closed to make room. The handler
    /// never saw such a connection; see
    /// [`Stats::tls_handshake_evictions`](crate::Stats::tls_handshake_evictions).
    HandshakeEvicted,
}

impl CloseReason {
    /// True for reasons that flush pending output before closing.
    pub(crate) fn is_graceful(self) -> bool {
        matches!(
            self,
            CloseReason::PeerClosed
                | CloseReason::LineTooLong
                | CloseReason::BadFrame
                | CloseReason::Closed
                | CloseReason::Stopped
                | CloseReason::Tls
                | CloseReason::IdleTimeout
                | CloseReason::FrameTimeout
                | CloseReason::TooManyFromAddress
        )
    }

    /// True for reasons that still have something to tell a peer whose TLS
    /// handshake is unfinished (an alert); the others close it at once.
    pub(crate) fn flushes_during_handshake(self) -> bool {
        self == CloseReason::Tls
    }

    /// Maps a socket error to a reason.
    pub(crate) fn from_io(err: &io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => CloseReason::Reset,
            kind => CloseReason::Io(kind),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed"),
            CloseReason::Reset => f.write_str("connection reset by peer"),
            CloseReason::LineTooLong => f.write_str("line too long"),
            CloseReason::BadFrame => f.write_str("malformed frame"),
            CloseReason::OutputOverflow => f.write_str("output overflow: peer not reading"),
            CloseReason::Closed => f.write_str("closed"),
            CloseReason::Stopped => f.write_str("server stopped"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::FrameTimeout => f.write_str("frame not completed in time"),
            CloseReason::WriteStalled => f.write_str("write stalled: peer not reading"),
            CloseReason::HandlerPanicked => f.write_str("handler panicked"),
            CloseReason::BadProxyHeader => f.write_str("bad PROXY protocol header"),
            CloseReason::Denied => f.write_str("denied by the address filter"),
            CloseReason::TooManyFromAddress => {
                f.write_str("refused: too many connections from this address")
            }
            CloseReason::Io(kind) => write!(f, "I/O error: {kind}"),
            CloseReason::Tls => f.write_str("TLS error"),
            CloseReason::HandshakeTimeout => f.write_str("TLS handshake timed out"),
            CloseReason::HandshakeEvicted => {
                f.write_str("TLS handshake given up to make room for a newer one")
            }
        }
    }
}
