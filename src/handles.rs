//! The public handles on a running server: [`ServerHandle`] (stop it, watch
//! it, tune it), the [`Stats`] it reads, and its [`Metrics`] for a
//! Prometheus scrape.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::budget::Overflow;
use crate::config::check_acceptors;
use crate::error::Error;
use crate::listen::Endpoint;
use crate::metrics::{
    CloseLabel, LoopMetrics, Metrics, MetricsSnapshot, RefuseReason, TlsHandshakes,
};
use crate::shared::{Command, LoopShared, ServerShared, StopReport};

/// A snapshot of a server's counters, from [`ServerHandle::stats`]. Each
/// field is also in the Prometheus text ([`ServerHandle::write_prometheus`];
/// [`Metrics::write_prometheus`] lists the series).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections being served now (slots taken).
    pub active: usize,
    /// The current budget: slots in service, including grown ones.
    pub budget: usize,
    /// Connections accepted and served since start.
    pub accepted: u64,
    /// Connections accepted and refused because every slot was busy.
    pub refused: u64,
    /// Connections accepted through the spare descriptor and refused
    /// because the process was out of descriptors (`EMFILE`; see
    /// [`Builder::spare_descriptor`](crate::Builder::spare_descriptor)).
    pub refused_emfile: u64,
    /// Connections refused because their address was at
    /// [`Builder::max_per_ip`](crate::Builder::max_per_ip).
    pub refused_per_ip: u64,
    /// Connections refused by [`Builder::accept_rate`](crate::Builder::accept_rate).
    pub rate_limited: u64,
    /// Connections closed by the address filter ([`Builder::allow`](crate::Builder::allow),
    /// [`Builder::deny`](crate::Builder::deny)).
    pub denied: u64,
    /// Connections closed for a missing, malformed, over-long or late PROXY
    /// protocol header.
    pub bad_proxy_headers: u64,
    /// How many times [`Overflow::Grow`] added slots.
    pub grown: u64,
    /// How many times grown slots were given back after
    /// [`Builder::grow_cooldown`](crate::Builder::grow_cooldown).
    pub retired: u64,
    /// How many times accepting paused under [`Overflow::Pause`], summed
    /// over the loops that accept (each counts its own pauses).
    pub pause_episodes: u64,
    /// `accept` errors other than the harmless ones (e.g. `EMFILE`).
    pub accept_errors: u64,
    /// Bytes read from all connections (on a TLS server, TLS records as
    /// they came off the wire).
    pub bytes_in: u64,
    /// Bytes written to all connections (on a TLS server, TLS records as
    /// they went on the wire).
    pub bytes_out: u64,
    /// Lines handed to the handler.
    pub lines: u64,
    /// Commands from [`ConnHandle`](crate::ConnHandle)s, and replies filled
    /// in [`ReplySlot`](crate::ReplySlot)s, whose connection was already
    /// gone (dropped, never delivered to whoever has its slot now).
    pub stale_handle_commands: u64,
    /// Handler panics caught (each closed its connection).
    pub handler_panics: u64,
    /// TLS handshakes completed (each connection then reached the handler).
    pub tls_handshakes: u64,
    /// TLS handshakes that failed: not TLS, a protocol error, no common
    /// version or cipher suite, or the peer gave up. Logged at debug level.
    pub tls_handshake_failures: u64,
    /// TLS handshakes closed by [`Builder::tls_handshake_timeout`](crate::Builder::tls_handshake_timeout).
    pub tls_handshake_timeouts: u64,
    /// TLS handshakes closed to make room for a new connection, the loop
    /// being at [`Builder::max_handshakes`](crate::Builder::max_handshakes):
    /// each time, of the address holding the most handshakes, the one that
    /// had made the least progress for the longest
    /// ([`CloseReason::HandshakeEvicted`](crate::CloseReason::HandshakeEvicted)).
    pub tls_handshake_evictions: u64,
    /// Certificate pairs loaded from disk and put in force because the
    /// watched files changed ([`Builder::tls_watch`](crate::Builder::tls_watch)).
    pub tls_cert_reloads: u64,
    /// Changes of the watched certificate files that did not load (the pair
    /// in force stayed; the reason is logged as a warning).
    pub tls_cert_reload_failures: u64,
    /// Microseconds the loops spent busy-polling ([`Builder::busy_poll`](crate::Builder::busy_poll)):
    /// the CPU that latency cost.
    pub busy_poll_micros: u64,
    /// Busy-polls that caught an event before their time was up.
    pub busy_polls_found: u64,
    /// Busy-polls that came up empty (each halves the next one).
    pub busy_polls_empty: u64,
    /// Reply slots ([`Conn::defer`](crate::Conn::defer)) dropped unfilled:
    /// each gave up its place, and its connection got no reply for that
    /// request. Logged at warn level.
    pub reply_slots_dropped: u64,
    /// Sends, fills and closures from other threads refused because a
    /// loop's queue was at [`Builder::command_queue_limit`](crate::Builder::command_queue_limit)
    /// ([`Error::Full`]).
    pub commands_refused_full: u64,
}

/// One event loop's counters, from [`ServerHandle::loop_stats`]. Summed over
/// the loops, each field is the [`Stats`] field of the same name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopStats {
    /// The loop's index: `0..workers`, as in its thread's name (`netpool-0`).
    pub index: usize,
    /// Connections open on this loop now, including any handed to it and
    /// not adopted yet. Unlike [`Stats::active`] (slots taken), this counts
    /// connections that no longer hold a slot: lingering ones, and those
    /// released with [`Conn::release_slot`](crate::Conn::release_slot).
    pub active: usize,
    /// Connections this loop has served since start.
    pub accepted: u64,
    /// Connections this loop refused because every slot was busy.
    pub refused: u64,
    /// Connections this loop refused for want of descriptors (`EMFILE`).
    pub refused_emfile: u64,
    /// Connections this loop refused for [`Builder::max_per_ip`](crate::Builder::max_per_ip).
    pub refused_per_ip: u64,
    /// Connections this loop refused for [`Builder::accept_rate`](crate::Builder::accept_rate).
    pub rate_limited: u64,
    /// Connections this loop closed for the address filter.
    pub denied: u64,
    /// Connections this loop closed for a bad PROXY protocol header.
    pub bad_proxy_headers: u64,
    /// How many times this loop paused accepting under [`Overflow::Pause`].
    pub pause_episodes: u64,
    /// `accept` errors on this loop other than the harmless ones.
    pub accept_errors: u64,
    /// Bytes read by this loop.
    pub bytes_in: u64,
    /// Bytes written by this loop.
    pub bytes_out: u64,
    /// Lines this loop handed to its handler.
    pub lines: u64,
    /// Stale [`ConnHandle`](crate::ConnHandle) commands and reply fills
    /// dropped by this loop.
    pub stale_handle_commands: u64,
    /// Handler panics caught on this loop.
    pub handler_panics: u64,
    /// TLS handshakes this loop completed.
    pub tls_handshakes: u64,
    /// TLS handshakes that failed on this loop.
    pub tls_handshake_failures: u64,
    /// TLS handshakes this loop closed at the handshake timeout.
    pub tls_handshake_timeouts: u64,
    /// TLS handshakes this loop closed to make room for a new one.
    pub tls_handshake_evictions: u64,
    /// Certificate pairs this loop loaded from the watched files.
    pub tls_cert_reloads: u64,
    /// Changes of the watched files this loop could not load.
    pub tls_cert_reload_failures: u64,
    /// Microseconds this loop spent busy-polling.
    pub busy_poll_micros: u64,
    /// This loop's busy-polls that caught an event.
    pub busy_polls_found: u64,
    /// This loop's busy-polls that came up empty.
    pub busy_polls_empty: u64,
    /// Reply slots of this loop's connections dropped unfilled.
    pub reply_slots_dropped: u64,
    /// Commands for this loop refused because its queue was full.
    pub commands_refused_full: u64,
}

impl LoopStats {
    fn of(index: usize, l: &LoopShared) -> Self {
        let c = &l.counters;
        LoopStats {
            index,
            active: l.open.load(Ordering::Relaxed),
            accepted: c.accepted.get(),
            refused: c.refused.get(),
            refused_emfile: c.refused_emfile.get(),
            refused_per_ip: c.refused_per_ip.get(),
            rate_limited: c.rate_limited.get(),
            denied: c.denied.get(),
            bad_proxy_headers: c.bad_proxy_headers.get(),
            pause_episodes: c.pause_episodes.get(),
            accept_errors: c.accept_errors.get(),
            bytes_in: c.bytes_in.get(),
            bytes_out: c.bytes_out.get(),
            lines: c.lines.get(),
            stale_handle_commands: c.stale_handle_commands.get(),
            handler_panics: c.handler_panics.get(),
            tls_handshakes: c.tls_handshakes.get(),
            tls_handshake_failures: c.tls_handshake_failures.get(),
            tls_handshake_timeouts: c.tls_handshake_timeouts.get(),
            tls_handshake_evictions: c.tls_handshake_evictions.get(),
            tls_cert_reloads: c.tls_cert_reloads.get(),
            tls_cert_reload_failures: c.tls_cert_reload_failures.get(),
            busy_poll_micros: c.busy_poll_micros.get(),
            busy_polls_found: c.busy_polls_found.get(),
            busy_polls_empty: c.busy_polls_empty.get(),
            reply_slots_dropped: c.reply_slots_dropped.get(),
            commands_refused_full: l.refused_full.load(Ordering::Relaxed),
        }
    }
}

/// A `Send + Clone` handle to a server: stop it, watch it, change its budget.
///
/// # Shutdown
///
/// [`stop`](ServerHandle::stop) is graceful: the listener is closed at once
/// (no new connections), lines already read are handled, pending output is
/// flushed, replies deferred to other threads ([`Conn::defer`](crate::Conn::defer))
/// are waited for and written, then each connection is shut down for writing
/// and closed once the peer has seen its replies. What is still unflushed or
/// owed when the grace period ends is closed anyway and counted in
/// [`StopReport::force_closed`] (and [`StopReport::replies_unsent`]).
#[derive(Clone)]
pub struct ServerHandle {
    pub(crate) shared: Arc<ServerShared>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address the server listens on (the real port when bound to port 0);
    /// as [`Server::local_addr`](crate::Server::local_addr), `0.0.0.0:0` on a
    /// server with Unix listeners only.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Every endpoint the server listens on, as
    /// [`Server::endpoints`](crate::Server::endpoints).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.shared.endpoints
    }

    /// The number of event loops ([`Builder::workers`](crate::Builder::workers)).
    pub fn workers(&self) -> usize {
        self.shared.loops.len()
    }

    /// A snapshot of the counters, summed over the server's loops.
    ///
    /// `active` is the budget's count of taken slots, which includes a
    /// reservation in flight (a slot taken just before `accept`); the loops'
    /// own `active` ([`loop_stats`](ServerHandle::loop_stats)) count open
    /// connections, and add up to it when no accept is under way and every
    /// open connection holds its slot.
    pub fn stats(&self) -> Stats {
        let budget = self.shared.budget();
        let mut s = Stats {
            active: budget.active(),
            budget: budget.limit(),
            grown: budget.grown(),
            retired: budget.retired(),
            ..Stats::default()
        };
        for l in self.loop_stats() {
            s.accepted += l.accepted;
            s.refused += l.refused;
            s.refused_emfile += l.refused_emfile;
            s.refused_per_ip += l.refused_per_ip;
            s.rate_limited += l.rate_limited;
            s.denied += l.denied;
            s.bad_proxy_headers += l.bad_proxy_headers;
            s.pause_episodes += l.pause_episodes;
            s.accept_errors += l.accept_errors;
            s.bytes_in += l.bytes_in;
            s.bytes_out += l.bytes_out;
            s.lines += l.lines;
            s.stale_handle_commands += l.stale_handle_commands;
            s.handler_panics += l.handler_panics;
            s.tls_handshakes += l.tls_handshakes;
            s.tls_handshake_failures += l.tls_handshake_failures;
            s.tls_handshake_timeouts += l.tls_handshake_timeouts;
            s.tls_handshake_evictions += l.tls_handshake_evictions;
            s.tls_cert_reloads += l.tls_cert_reloads;
            s.tls_cert_reload_failures += l.tls_cert_reload_failures;
            s.busy_poll_micros += l.busy_poll_micros;
            s.busy_polls_found += l.busy_polls_found;
            s.busy_polls_empty += l.busy_polls_empty;
            s.reply_slots_dropped += l.reply_slots_dropped;
            s.commands_refused_full += l.commands_refused_full;
        }
        s
    }

    /// A snapshot of each loop's counters, in loop order. Each loop's
    /// counters are read one after the other, not at one instant: under
    /// load, the sum can differ slightly from a later [`stats`](ServerHandle::stats).
    pub fn loop_stats(&self) -> Vec<LoopStats> {
        let loops = &self.shared.loops;
        loops
            .iter()
            .enumerate()
            .map(|(i, l)| LoopStats::of(i, l))
            .collect()
    }

    /// A snapshot of the server's metrics, to write in the Prometheus text
    /// format ([`Metrics::write_prometheus`], or
    /// [`write_prometheus`](ServerHandle::write_prometheus) in one step):
    /// the [`stats`](ServerHandle::stats) and each loop's, connections
    /// closed by reason, each loop's turn durations, and the kernel's accept
    /// queue.
    ///
    /// Reading the accept queue asks the kernel (Linux's socket
    /// diagnostics, a few system calls, about 30 µs): fine for a scrape
    /// every few seconds, not for every request.
    pub fn metrics(&self) -> Metrics {
        #[cfg(feature = "tls")]
        let tls = self.shared.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let tls = false;
        let mut s = server_wide(&self.stats(), tls);
        for (i, l) in self.shared.loops.iter().enumerate() {
            for label in CloseLabel::ALL {
                s.add_closed(label, l.counters.closed[label.index()].get());
            }
            let c = &l.counters;
            s.loops.push(LoopMetrics {
                index: i,
                active: l.open.load(Ordering::Relaxed) as u64,
                accepted: c.accepted.get(),
                bytes_received: c.bytes_in.get(),
                bytes_sent: c.bytes_out.get(),
                turns: l.turns.snapshot(),
            });
        }
        for id in &self.shared.listeners {
            match id.queue() {
                Ok(Some(q)) => {
                    *s.listen_queue_depth.get_or_insert(0) += u64::from(q.depth);
                    *s.listen_backlog.get_or_insert(0) += u64::from(q.backlog);
                }
                // Closed: the server has stopped listening.
                Ok(None) => {}
                Err(e) => log::debug!("accept queue of {}: {e}", self.shared.local_addr),
            }
        }
        Metrics { snapshot: s }
    }

    /// Writes the server's [`metrics`](ServerHandle::metrics) in the
    /// Prometheus text exposition format (see
    /// [`Metrics::write_prometheus`] for the series); serve it with
    /// [`Metrics::CONTENT_TYPE`], or let [`MetricsEndpoint`](crate::MetricsEndpoint)
    /// serve it.
    ///
    /// # Errors
    ///
    /// Whatever `out` returns.
    pub fn write_prometheus<W: io::Write>(&self, out: &mut W) -> io::Result<()> {
        self.metrics().write_prometheus(out)
    }

    /// Replaces the TLS config at run time (certificate rotation without a
    /// restart). Every connection accepted after this returns uses `config`;
    /// established connections, and handshakes already under way, keep the
    /// config they started with. ALPN protocols set with
    /// [`Builder::alpn_protocols`](crate::Builder::alpn_protocols) are applied
    /// to it.
    ///
    /// A config of your own ends the watch on certificate files
    /// ([`Builder::tls_watch`](crate::Builder::tls_watch)): changed files
    /// will not replace it.
    ///
    /// # Errors
    ///
    /// [`Error::TlsNotConfigured`] if the server was built without TLS.
    #[cfg(feature = "tls")]
    pub fn reload_tls(&self, config: Arc<rustls::ServerConfig>) -> Result<(), Error> {
        let tls = self.shared.tls.as_ref().ok_or(Error::TlsNotConfigured)?;
        let mut watched = self.shared.cert_watch.as_ref().map(lock_watch);
        tls.replace(config);
        if let Some(watched) = &mut watched {
            **watched = None;
        }
        log::info!("TLS config reloaded");
        Ok(())
    }

    /// Reads a new certificate chain and key from PEM files (as
    /// [`Builder::tls_pem`](crate::Builder::tls_pem)) and puts them in force
    /// as [`reload_tls`](ServerHandle::reload_tls) does. On any error the
    /// config in force is kept.
    ///
    /// With [`Builder::tls_watch`](crate::Builder::tls_watch) on, these are
    /// the files watched from now on. (Renewals on disk of the files already
    /// watched are put in force by the watch without this call.)
    ///
    /// # Errors
    ///
    /// [`Error::TlsNotConfigured`] if the server was built without TLS; the
    /// `Error::Tls*` variants of [`tls_config_from_pem`](crate::tls_config_from_pem),
    /// each naming the file at fault.
    #[cfg(feature = "tls")]
    pub fn reload_tls_pem(
        &self,
        cert_path: impl AsRef<std::path::Path>,
        key_path: impl AsRef<std::path::Path>,
    ) -> Result<(), Error> {
        let tls = self.shared.tls.as_ref().ok_or(Error::TlsNotConfigured)?;
        let (cert, key) = (cert_path.as_ref(), key_path.as_ref());
        // Under the watch's lock, so that loop 0's look at the files cannot
        // put an older pair in force after this one.
        let mut watched = self.shared.cert_watch.as_ref().map(lock_watch);
        // Stamped before they are read: a change while reading shows later.
        let watch = watched
            .is_some()
            .then(|| crate::tls_watch::CertWatch::new(cert, key));
        let config = crate::tls_config::tls_config_from_pem(cert, key)?;
        tls.replace(Arc::new(config));
        if let Some(watched) = &mut watched {
            **watched = watch;
        }
        log::info!("TLS config reloaded from {}", cert.display());
        Ok(())
    }

    /// Sets the number of acceptor slots at run time (like Ranch's
    /// `set_max_connections`). Lowering it never closes a served connection:
    /// new connections meet the overflow strategy until enough have closed.
    /// Raising it resumes a paused accept at once. The budget is one for the
    /// whole server, shared by all its loops.
    ///
    /// Under [`Overflow::Grow`], `slots` becomes the size that grown slots
    /// are given back down to, and grown slots are forgotten; set above
    /// Grow's `max`, the budget does not grow (`max` is its ceiling).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for 0 slots, the same error (naming
    /// `acceptors`) that [`Builder::acceptors`](crate::Builder::acceptors)
    /// gives at build: a budget of no slot would refuse every new client
    /// (under [`Overflow::Pause`], keep them all waiting). The budget is left
    /// as it was. To stop taking connections, stop the server
    /// ([`request_stop`](ServerHandle::request_stop)).
    pub fn set_acceptors(&self, slots: usize) -> Result<(), Error> {
        check_acceptors(slots)?;
        self.shared.budget().set_limit(slots);
        self.notify_budget();
        Ok(())
    }

    /// Changes the overflow strategy at run time.
    pub fn set_overflow(&self, overflow: Overflow) {
        self.shared.budget().set_overflow(overflow);
        self.notify_budget();
    }

    fn notify_budget(&self) {
        // Every loop looks again, so none stays parked.
        self.shared.budget().unpark_all();
        for l in &self.shared.loops {
            // A loop that has exited has nothing to resume.
            let _ = l.push(Command::BudgetChanged);
        }
    }

    /// Starts a graceful stop of every loop and returns at once. Callable
    /// from anywhere, including a handler on a loop's own thread.
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] if a loop of the server has already exited (the
    /// others are asked to stop all the same).
    pub fn request_stop(&self, grace: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + grace;
        let mut result = Ok(());
        for l in &self.shared.loops {
            if let Err(e) = l.push(Command::Stop {
                deadline,
                done: None,
            }) {
                result = Err(e);
            }
        }
        result
    }

    /// Stops the server gracefully and waits until it has (see
    /// [`# Shutdown`](ServerHandle#shutdown)); returns within about `grace`.
    /// With several loops, all stop under one deadline, `grace` from now, and
    /// the report is their sum. Calling it again after the server stopped
    /// returns the same report.
    ///
    /// # Errors
    ///
    /// [`Error::StopFromLoop`] when called on one of the server's loop threads
    /// (it would wait for itself: use [`request_stop`](ServerHandle::request_stop));
    /// [`Error::Stopped`] if a loop exited without a report (it failed or
    /// never ran), once every other loop has stopped.
    pub fn stop(&self, grace: Duration) -> Result<StopReport, Error> {
        let me = std::thread::current().id();
        if self
            .shared
            .loops
            .iter()
            .any(|l| l.thread.get() == Some(&me))
        {
            return Err(Error::StopFromLoop);
        }
        let deadline = Instant::now() + grace;
        let mut total = StopReport::default();
        let mut waiting = Vec::new();
        for l in &self.shared.loops {
            let (tx, rx) = mpsc::channel();
            match l.push(Command::Stop {
                deadline,
                done: Some(tx),
            }) {
                Ok(()) => waiting.push((l, Some(rx))),
                Err(_) => waiting.push((l, None)),
            }
        }
        let mut failed = false;
        for (l, rx) in waiting {
            // The loop answers on the channel; if it had already exited (or
            // exits before reading the command), the channel closes and the
            // report it left behind is the answer. A loop without a report
            // failed; the others are still waited for.
            let report = rx.and_then(|rx| rx.recv().ok());
            let report = report.or_else(|| *l.report.lock().unwrap_or_else(|e| e.into_inner()));
            match report {
                Some(report) => {
                    total.open_at_stop += report.open_at_stop;
                    total.force_closed += report.force_closed;
                    total.replies_unsent += report.replies_unsent;
                }
                None => failed = true,
            }
        }
        if failed {
            return Err(Error::Stopped);
        }
        Ok(total)
    }
}

/// The server-wide figures of a scrape, from the summed counters; `tls`
/// says whether the server has TLS (without it, no TLS series at all).
///
/// Every [`Stats`] field goes somewhere: `handles/tests.rs` reads the field
/// names from `Stats`'s `Debug` output and fails on one that no series shows.
fn server_wide(stats: &Stats, tls: bool) -> MetricsSnapshot {
    let mut s = MetricsSnapshot {
        active: stats.active as u64,
        accepted: stats.accepted,
        budget_slots: stats.budget as u64,
        budget_grows: stats.grown,
        budget_retirements: stats.retired,
        accept_pauses: stats.pause_episodes,
        accept_errors: stats.accept_errors,
        bytes_received: stats.bytes_in,
        bytes_sent: stats.bytes_out,
        frames: stats.lines,
        handler_panics: stats.handler_panics,
        reply_slots_dropped: stats.reply_slots_dropped,
        commands_refused_full: stats.commands_refused_full,
        stale_handle_commands: stats.stale_handle_commands,
        busy_poll_micros: stats.busy_poll_micros,
        busy_polls_found: stats.busy_polls_found,
        busy_polls_empty: stats.busy_polls_empty,
        tls: tls.then_some(TlsHandshakes {
            completed: stats.tls_handshakes,
            failed: stats.tls_handshake_failures,
            timed_out: stats.tls_handshake_timeouts,
            evicted: stats.tls_handshake_evictions,
            cert_reloads: stats.tls_cert_reloads,
            cert_reload_failures: stats.tls_cert_reload_failures,
        }),
        ..MetricsSnapshot::default()
    };
    for (reason, n) in [
        (RefuseReason::Budget, stats.refused),
        (RefuseReason::PerIp, stats.refused_per_ip),
        (RefuseReason::Rate, stats.rate_limited),
        (RefuseReason::Denied, stats.denied),
        (RefuseReason::Proxy, stats.bad_proxy_headers),
        (RefuseReason::Emfile, stats.refused_emfile),
    ] {
        s.add_refused(reason, n);
    }
    s
}

/// The watched certificate files, locked (a panic elsewhere while holding
/// the lock left nothing half-done: the value is replaced whole).
#[cfg(feature = "tls")]
fn lock_watch(
    watched: &crate::tls_watch::WatchedFiles,
) -> std::sync::MutexGuard<'_, Option<crate::tls_watch::CertWatch>> {
    watched.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
