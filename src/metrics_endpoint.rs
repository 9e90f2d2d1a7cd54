//! [`MetricsEndpoint`]: a handler that answers `GET /metrics` over HTTP with
//! a server's metrics, so that netpool serves its own scrapes.
//!
//! A scrape is one short HTTP/1.x request per connection every few seconds,
//! and its head is a run of lines: a line handler, run by a second netpool
//! [`Server`](crate::Server), reads it a line at a time
//! (`metrics_http.rs`), answers once and closes. No HTTP library, no thread
//! of its own beyond that server's loop.

use crate::handler::{Conn, Handler};
use crate::handles::ServerHandle;
use crate::metrics::CONTENT_TYPE;
use crate::metrics_http::{write_http_error, write_http_response, RequestHead, Status};

/// Answers `GET /metrics` with the [`Metrics`](crate::Metrics) of the
/// server `handle` reaches, in the Prometheus text format, then closes the
/// connection; any other request gets its HTTP error (404 for another path,
/// 405 for another method, 400 for what is not HTTP/1.x, 431 for a head over
/// 8 KiB). Run it on a server of its own, on another address:
///
/// ```
/// use std::io::{Read, Write};
/// use std::time::Duration;
/// use netpool::{Conn, MetricsEndpoint, Server};
///
/// let server = Server::bind("127.0.0.1:0".parse().unwrap())?;
/// let handle = server.handle();
/// let running = server.spawn(|line: &[u8], conn: &mut Conn| conn.send(line))?;
///
/// // A few connections at once are plenty for scrapers.
/// let metrics = Server::builder()
///     .acceptors(16)
///     .bind("127.0.0.1:0".parse().unwrap())?
///     .spawn(MetricsEndpoint::new(handle))?;
///
/// let mut scrape = std::net::TcpStream::connect(metrics.local_addr())?;
/// scrape.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
/// let mut response = String::new();
/// scrape.read_to_string(&mut response)?;
/// assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
/// assert!(response.contains("Content-Type: text/plain; version=0.0.4\r\n"));
/// assert!(response.contains("\nnetpool_connections_accepted_total 0\n"));
///
/// // Stop it with the server it watches.
/// metrics.stop(Duration::from_secs(1))?;
/// running.stop(Duration::from_secs(1))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The endpoint's own server counts its scrapes in its own metrics, not in
/// those it serves.
#[derive(Debug, Clone)]
pub struct MetricsEndpoint {
    handle: ServerHandle,
}

impl MetricsEndpoint {
    /// An endpoint serving the metrics of the server `handle` reaches.
    pub fn new(handle: ServerHandle) -> Self {
        MetricsEndpoint { handle }
    }
}

/// One scrape connection's state, [`MetricsEndpoint`]'s
/// [`Handler::State`]: how far its request head has come.
#[derive(Debug, Default)]
pub struct ScrapeState(RequestHead);

impl Handler for MetricsEndpoint {
    type State = ScrapeState;

    fn on_frame(&mut self, line: &[u8], conn: &mut Conn<'_, ScrapeState>) {
        let Some(verdict) = conn.state().0.line(line) else {
            return; // the head goes on
        };
        let mut response = Vec::new();
        // Writing into a vector cannot fail.
        let _ = match verdict {
            Ok(()) => {
                let mut body = Vec::with_capacity(8 * 1024);
                let _ = self.handle.write_prometheus(&mut body);
                write_http_response(&mut response, Status::Ok, CONTENT_TYPE, &body)
            }
            Err(status) => write_http_error(&mut response, status),
        };
        conn.send(&response);
        // Closing flushes the response first, then lingers, so that the
        // scraper reads it all.
        conn.close();
    }
}
