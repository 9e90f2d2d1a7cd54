//! The tests of `handles.rs`: every counter of [`Stats`] reaches the
//! Prometheus text, under the series that says what it counts.

use super::*;
use crate::metrics::reader::parse_checked;

/// Where one [`Stats`] field shows in the exposition.
struct Shown {
    /// The field's name, as `Stats`'s `Debug` output spells it.
    field: &'static str,
    /// Sets the field (written by the macro from the same name, so that
    /// `field` and what `set` touches cannot disagree).
    set: fn(&mut Stats, u64),
    /// The sample that shows it: its name and labels.
    series: &'static str,
    labels: &'static [(&'static str, &'static str)],
    /// The field's units per unit of the series (10^6 for microseconds
    /// written as seconds).
    per: f64,
}

macro_rules! shown {
    ($($field:ident => $series:literal [$($k:literal = $v:literal),*] $(/ $per:literal)?,)*) => {
        vec![$(Shown {
            field: stringify!($field),
            set: |s: &mut Stats, v: u64| s.$field = v as _,
            series: $series,
            labels: &[$(($k, $v)),*],
            per: shown!(@per $($per)?),
        },)*]
    };
    (@per) => { 1.0 };
    (@per $per:literal) => { $per };
}

/// Every [`Stats`] field and its sample. A field missing here fails
/// [`every_stats_field_has_a_series`]: write it in `server_wide` and
/// `metrics.rs`, then list it.
fn table() -> Vec<Shown> {
    shown! {
        active => "netpool_connections_active" [],
        budget => "netpool_budget_slots" [],
        accepted => "netpool_connections_accepted_total" [],
        refused => "netpool_connections_refused_total" ["reason" = "budget"],
        refused_emfile => "netpool_connections_refused_total" ["reason" = "emfile"],
        refused_per_ip => "netpool_connections_refused_total" ["reason" = "per_ip"],
        rate_limited => "netpool_connections_refused_total" ["reason" = "rate"],
        denied => "netpool_connections_refused_total" ["reason" = "denied"],
        bad_proxy_headers => "netpool_connections_refused_total" ["reason" = "proxy"],
        grown => "netpool_budget_grows_total" [],
        retired => "netpool_budget_retirements_total" [],
        pause_episodes => "netpool_accept_pauses_total" [],
        accept_errors => "netpool_accept_errors_total" [],
        bytes_in => "netpool_bytes_received_total" [],
        bytes_out => "netpool_bytes_sent_total" [],
        lines => "netpool_frames_total" [],
        stale_handle_commands => "netpool_stale_handle_commands_total" [],
        handler_panics => "netpool_handler_panics_total" [],
        tls_handshakes => "netpool_tls_handshakes_total" ["result" = "completed"],
        tls_handshake_failures => "netpool_tls_handshakes_total" ["result" = "failed"],
        tls_handshake_timeouts => "netpool_tls_handshakes_total" ["result" = "timed_out"],
        tls_handshake_evictions => "netpool_tls_handshakes_total" ["result" = "evicted"],
        tls_cert_reloads => "netpool_tls_cert_reloads_total" ["result" = "loaded"],
        tls_cert_reload_failures => "netpool_tls_cert_reloads_total" ["result" = "failed"],
        busy_poll_micros => "netpool_busy_poll_seconds_total" [] / 1e6,
        busy_polls_found => "netpool_busy_polls_total" ["result" = "found"],
        busy_polls_empty => "netpool_busy_polls_total" ["result" = "empty"],
        reply_slots_dropped => "netpool_reply_slots_dropped_total" [],
        commands_refused_full => "netpool_commands_refused_total" ["reason" = "full"],
    }
}

/// `Stats`'s fields and values, read from its derived `Debug` output
/// (`Stats { active: 0, budget: 0, .. }`), so that a field added to
/// `Stats` is seen here without being listed.
fn fields(stats: &Stats) -> Vec<(String, u64)> {
    let debug = format!("{stats:?}");
    let body = debug
        .strip_prefix("Stats { ")
        .and_then(|b| b.strip_suffix(" }"))
        .unwrap_or_else(|| panic!("unexpected Debug output: {debug}"));
    body.split(", ")
        .map(|pair| {
            let (name, value) = pair.split_once(": ").expect("name: value");
            (name.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

/// Each field of `Stats`, set to a value of its own, reads back in its
/// series of the text (which passes the strict reader and, where
/// installed, Prometheus's Python parser); a field with no series fails.
#[test]
fn every_stats_field_has_a_series() {
    let table = table();
    let mut stats = Stats::default();
    for (i, shown) in table.iter().enumerate() {
        (shown.set)(&mut stats, 1_001 + i as u64);
    }
    let listed: Vec<&str> = table.iter().map(|s| s.field).collect();
    let read = fields(&stats);
    for (name, _) in &read {
        assert!(
            listed.contains(&name.as_str()),
            "Stats::{name} is in no series of the Prometheus text: write it \
             (handles.rs `server_wide`, metrics.rs) and list it in this table"
        );
    }
    assert_eq!(read.len(), table.len(), "a field listed twice");
    for (i, shown) in table.iter().enumerate() {
        let at = read.iter().find(|(name, _)| name == shown.field);
        assert_eq!(
            at.map(|(_, v)| *v),
            Some(1_001 + i as u64),
            "{}",
            shown.field
        );
    }

    let mut text = Vec::new();
    let metrics = Metrics {
        snapshot: server_wide(&stats, true),
    };
    metrics.write_prometheus(&mut text).unwrap();
    let m = parse_checked(&String::from_utf8(text).unwrap());
    for (i, shown) in table.iter().enumerate() {
        assert_eq!(
            m.value(shown.series, shown.labels),
            (1_001 + i) as f64 / shown.per,
            "Stats::{} as {}{:?}",
            shown.field,
            shown.series,
            shown.labels
        );
    }
}

/// A server without TLS has no TLS series, rather than zeros that suggest
/// TLS; every other counter is still there.
#[test]
fn without_tls_the_tls_series_are_left_out() {
    let mut text = Vec::new();
    let metrics = Metrics {
        snapshot: server_wide(&Stats::default(), false),
    };
    metrics.write_prometheus(&mut text).unwrap();
    let m = parse_checked(&String::from_utf8(text).unwrap());
    for shown in table() {
        let got = m.get(shown.series, shown.labels);
        if shown.field.starts_with("tls_") {
            assert_eq!(got, None, "{}", shown.field);
        } else {
            assert_eq!(got, Some(0.0), "{}", shown.field);
        }
    }
}
