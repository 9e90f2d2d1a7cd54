//! The tests of `metrics.rs`, in a file of their own so that the module reads in one sitting.
use super::reader::{parse, parse_sample, python_reading};
use super::*;
use std::collections::HashSet;

/// A snapshot with every field set to a distinct value, two loops.
fn full_snapshot() -> MetricsSnapshot {
    let mut s = MetricsSnapshot {
        active: 3,
        accepted: 40,
        budget_slots: 64,
        listen_queue_depth: Some(6),
        listen_backlog: Some(77),
        bytes_received: 1000,
        bytes_sent: 2000,
        frames: 55,
        budget_grows: 8,
        budget_retirements: 9,
        accept_pauses: 10,
        accept_errors: 11,
        handler_panics: 12,
        reply_slots_dropped: 13,
        commands_refused_full: 14,
        stale_handle_commands: 15,
        busy_poll_micros: 1_500_016,
        busy_polls_found: 17,
        busy_polls_empty: 18,
        tls: Some(TlsHandshakes {
            completed: 7,
            failed: 2,
            timed_out: 1,
            evicted: 3,
            cert_reloads: 4,
            cert_reload_failures: 5,
        }),
        ..MetricsSnapshot::default()
    };
    for (n, reason) in RefuseReason::ALL.into_iter().enumerate() {
        s.add_refused(reason, 100 + n as u64);
    }
    for (n, label) in CloseLabel::ALL.into_iter().enumerate() {
        s.add_closed(label, 200 + n as u64);
    }
    for index in 0..2 {
        let h = LoopTurnHistogram::default();
        for us in [0, 1, 3, 3, 700, 5_000_000] {
            h.record(Duration::from_micros(us + index));
        }
        s.loops.push(LoopMetrics {
            index: index as usize,
            active: 1 + index,
            accepted: 20 + index,
            bytes_received: 500 + index,
            bytes_sent: 1000 + index,
            turns: h.snapshot(),
        });
    }
    s
}

fn text(s: &MetricsSnapshot) -> String {
    let mut out = Vec::new();
    write_prometheus(&mut out, s).unwrap();
    String::from_utf8(out).unwrap()
}

mod histogram {
    use super::*;

    /// Each bucket takes the turns up to its bound and none above it.
    #[test]
    fn a_turn_lands_in_the_first_bucket_whose_bound_holds_it() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(1_000), 0);
        assert_eq!(bucket_index(1_001), 1);
        assert_eq!(bucket_index(2_000), 1);
        assert_eq!(bucket_index(2_001), 2);
        for i in 1..TURN_BUCKETS {
            let bound_ns = bucket_bound_us(i) * 1_000;
            assert_eq!(bucket_index(bound_ns), i, "at the bound of {i}");
            assert_eq!(bucket_index(bound_ns + 1), i + 1, "just past {i}");
            assert_eq!(bucket_index(bound_ns / 2 + 1), i, "just past {}", i - 1);
        }
        assert_eq!(bucket_index(1_048_576_000), TURN_BUCKETS - 1);
        assert_eq!(bucket_index(1_048_576_001), TURN_BUCKETS);
        assert_eq!(bucket_index(u64::MAX), TURN_BUCKETS);
    }

    /// Recorded turns show up in count, buckets and sum; a turn too long
    /// for a u64 of nanoseconds saturates into `+Inf`.
    #[test]
    fn records_add_up() {
        let h = LoopTurnHistogram::default();
        h.record(Duration::from_nanos(500));
        h.record(Duration::from_micros(3));
        h.record(Duration::from_micros(3));
        h.record(Duration::from_secs(2));
        let s = h.snapshot();
        assert_eq!(s.count(), 4);
        assert_eq!(
            (s.counts[0], s.counts[2], s.counts[TURN_BUCKETS]),
            (1, 2, 1)
        );
        assert_eq!(s.sum_ns, 500 + 6_000 + 2_000_000_000);
        h.record(Duration::MAX);
        assert_eq!(h.snapshot().counts[TURN_BUCKETS], 2);
    }

    /// A reader on another thread sees every turn once the writer is
    /// done (one writer, relaxed load + store, no lost update).
    #[test]
    fn one_writer_many_readers() {
        let h = std::sync::Arc::new(LoopTurnHistogram::default());
        let writer = {
            let h = h.clone();
            std::thread::spawn(move || {
                for n in 0..10_000u64 {
                    h.record(Duration::from_nanos(n * 37));
                }
            })
        };
        // Read while it writes: counts never go down.
        let mut last = 0;
        while !writer.is_finished() {
            let c = h.snapshot().count();
            assert!(c >= last);
            last = c;
        }
        writer.join().unwrap();
        let s = h.snapshot();
        assert_eq!(s.count(), 10_000);
        assert_eq!(s.sum_ns, (0..10_000u64).map(|n| n * 37).sum::<u64>());
    }

    /// The `le` bounds and the busy-poll time are written exactly, not
    /// through a float.
    #[test]
    fn bounds_are_exact_decimals() {
        assert_eq!(Micros(bucket_bound_us(0)).to_string(), "0.000001");
        assert_eq!(Micros(bucket_bound_us(9)).to_string(), "0.000512");
        assert_eq!(Micros(bucket_bound_us(20)).to_string(), "1.048576");
        assert_eq!(Micros(0).to_string(), "0.000000");
        assert_eq!(Micros(86_400_000_001).to_string(), "86400.000001");
    }
}

mod exposition {
    use super::*;

    /// The whole output passes the strict checker and says what the
    /// snapshot holds, family by family.
    #[test]
    fn a_full_snapshot_is_valid_and_complete() {
        let s = full_snapshot();
        let m = parse(&text(&s));
        assert_eq!(m.value("netpool_connections_active", &[]), 3.0);
        assert_eq!(m.value("netpool_connections_accepted_total", &[]), 40.0);
        let refused = "netpool_connections_refused_total";
        for (n, reason) in ["budget", "per_ip", "rate", "denied", "proxy", "emfile"]
            .into_iter()
            .enumerate()
        {
            assert_eq!(m.value(refused, &[("reason", reason)]), 100.0 + n as f64);
        }
        let closed = "netpool_connections_closed_total";
        for (n, label) in CloseLabel::ALL.into_iter().enumerate() {
            assert_eq!(
                m.value(closed, &[("reason", label.label())]),
                200.0 + n as f64
            );
        }
        assert_eq!(m.value("netpool_budget_slots", &[]), 64.0);
        assert_eq!(m.value("netpool_listen_queue_depth", &[]), 6.0);
        assert_eq!(m.value("netpool_listen_queue_backlog", &[]), 77.0);
        assert_eq!(m.value("netpool_bytes_received_total", &[]), 1000.0);
        assert_eq!(m.value("netpool_bytes_sent_total", &[]), 2000.0);
        assert_eq!(m.value("netpool_frames_total", &[]), 55.0);
        for (name, labels, want) in [
            ("netpool_budget_grows_total", &[][..], 8.0),
            ("netpool_budget_retirements_total", &[], 9.0),
            ("netpool_accept_pauses_total", &[], 10.0),
            ("netpool_accept_errors_total", &[], 11.0),
            ("netpool_handler_panics_total", &[], 12.0),
            ("netpool_reply_slots_dropped_total", &[], 13.0),
            (
                "netpool_commands_refused_total",
                &[("reason", "full")],
                14.0,
            ),
            ("netpool_stale_handle_commands_total", &[], 15.0),
            ("netpool_busy_poll_seconds_total", &[], 1.500016),
            ("netpool_busy_polls_total", &[("result", "found")], 17.0),
            ("netpool_busy_polls_total", &[("result", "empty")], 18.0),
        ] {
            assert_eq!(m.value(name, labels), want, "{name}{labels:?}");
        }
        let tls = "netpool_tls_handshakes_total";
        assert_eq!(m.value(tls, &[("result", "completed")]), 7.0);
        assert_eq!(m.value(tls, &[("result", "failed")]), 2.0);
        assert_eq!(m.value(tls, &[("result", "timed_out")]), 1.0);
        assert_eq!(m.value(tls, &[("result", "evicted")]), 3.0);
        let reloads = "netpool_tls_cert_reloads_total";
        assert_eq!(m.value(reloads, &[("result", "loaded")]), 4.0);
        assert_eq!(m.value(reloads, &[("result", "failed")]), 5.0);
        for (i, l) in ["0", "1"].into_iter().enumerate() {
            let i = i as f64;
            let lp = [("loop", l)];
            assert_eq!(m.value("netpool_loop_connections_active", &lp), 1.0 + i);
            assert_eq!(
                m.value("netpool_loop_connections_accepted_total", &lp),
                20.0 + i
            );
            assert_eq!(m.value("netpool_loop_bytes_received_total", &lp), 500.0 + i);
            assert_eq!(m.value("netpool_loop_bytes_sent_total", &lp), 1000.0 + i);
            assert_eq!(m.value("netpool_loop_turn_seconds_count", &lp), 6.0);
        }
    }

    /// Loop 0 recorded 0, 1, 3, 3, 700 µs and 5 s: the cumulative
    /// buckets and the sum say exactly that.
    #[test]
    fn the_turn_histogram_is_cumulative_with_the_sum_in_seconds() {
        let m = parse(&text(&full_snapshot()));
        let bucket = |le: &str| {
            m.value(
                "netpool_loop_turn_seconds_bucket",
                &[("loop", "0"), ("le", le)],
            )
        };
        assert_eq!(bucket("0.000001"), 2.0); // 0 and 1 µs
        assert_eq!(bucket("0.000002"), 2.0);
        assert_eq!(bucket("0.000004"), 4.0); // the two 3 µs
        assert_eq!(bucket("0.000512"), 4.0);
        assert_eq!(bucket("0.001024"), 5.0); // 700 µs
        assert_eq!(bucket("1.048576"), 5.0);
        assert_eq!(bucket("+Inf"), 6.0); // 5 s
        let sum = m.value("netpool_loop_turn_seconds_sum", &[("loop", "0")]);
        assert_eq!(sum, 5.000707);
    }

    /// Optional families are left out rather than written as zeros.
    #[test]
    fn unknown_figures_are_left_out() {
        let s = MetricsSnapshot::default();
        let text = text(&s);
        let m = parse(&text);
        for absent in [
            "netpool_listen_queue_depth",
            "netpool_listen_queue_backlog",
            "netpool_tls_handshakes_total",
            "netpool_tls_cert_reloads_total",
            "netpool_loop_turn_seconds",
            "netpool_loop_connections_active",
        ] {
            assert!(!text.contains(absent), "{absent}");
        }
        assert_eq!(m.value("netpool_connections_active", &[]), 0.0);
    }

    /// Label values escape backslash, quote and newline; the checker
    /// reads them back to the original.
    #[test]
    fn label_values_are_escaped() {
        let mut out = Vec::new();
        let nasty = "a\\b\"c\nd";
        sample(&mut out, "x_total", &[("k", nasty), ("plain", "é")], 1).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line, "x_total{k=\"a\\\\b\\\"c\\nd\",plain=\"é\"} 1\n");
        let s = parse_sample(line.trim_end_matches('\n'));
        assert_eq!(s.labels["k"], nasty);
    }

    /// HELP text escapes backslash and newline.
    #[test]
    fn help_text_is_escaped() {
        let mut out = Vec::new();
        family(&mut out, "x", Kind::Gauge, "one\\two\nthree").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# HELP x one\\\\two\\nthree\n# TYPE x gauge\n"
        );
    }

    /// The checker is strict: it rejects what a scraper would.
    #[test]
    fn the_checker_rejects_broken_output() {
        let broken = [
                "x 1\n",                                          // no HELP/TYPE
                "# HELP x h\n# TYPE x counter\nx 1\n",           // counter without _total
                "# HELP x h\n# TYPE x gauge\nx{a=b} 1\n",        // unquoted label
                "# HELP x h\n# TYPE x gauge\nx  1\n",            // two spaces
                "# HELP x h\n# TYPE x gauge\nx 1\nx 2\n",        // duplicate series
                "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
                "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
                "# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 2\nh_sum 1\nh_count 2\n",
                "# HELP x h\n# TYPE x gauge\nx 1\n# HELP y h\n# TYPE y gauge\ny 1\nx{a=\"1\"} 1\n",
                "# TYPE x gauge\nx 1\n",                          // TYPE without HELP
                "# HELP x h\n# TYPE x summary\nx 1\n",          // a kind we never write
                "# HELP x h\n# TYPE x gauge\nx{a=\"1\",a=\"2\"} 1\n", // a label twice
                "# HELP x h\n# TYPE x gauge\nx 1 1700000000\n", // a timestamp
            ];
        for (i, text) in broken.into_iter().enumerate() {
            let caught = std::panic::catch_unwind(|| parse(text)).is_err();
            assert!(caught, "case {i} passed the checker:\n{text}");
        }
    }

    /// The output parses with the reference Python client's parser
    /// (`prometheus_client`), when it is installed; skipped otherwise.
    #[test]
    fn the_python_reference_parser_reads_it() {
        let input = text(&full_snapshot());
        let Some(parsed) = python_reading(&input) else {
            return;
        };
        // Every sample we wrote came back, typed as we declared it.
        assert_eq!(parsed.len(), parse(&input).samples.len(), "{parsed:#?}");
        for expected in [
            "counter netpool_connections_refused_total reason=per_ip 101.0",
            "gauge netpool_listen_queue_depth  6.0",
            "histogram netpool_loop_turn_seconds_bucket le=+Inf,loop=1 6.0",
            "histogram netpool_loop_turn_seconds_sum loop=0 5.000707",
        ] {
            assert!(
                parsed.iter().any(|l| l == expected),
                "{expected:?} not in:\n{parsed:#?}"
            );
        }
    }
}

/// Every [`CloseReason`] has a label, and labels are distinct.
#[test]
fn close_reasons_map_to_distinct_labels() {
    let labels: HashSet<&str> = CloseLabel::ALL.iter().map(|l| l.label()).collect();
    assert_eq!(labels.len(), CloseLabel::ALL.len());
    for (i, l) in CloseLabel::ALL.iter().enumerate() {
        assert_eq!(l.index(), i);
    }
    for (i, r) in RefuseReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
    assert_eq!(
        CloseLabel::from(CloseReason::Io(io::ErrorKind::BrokenPipe)),
        CloseLabel::Io
    );
    assert_eq!(
        CloseLabel::from(CloseReason::Closed).label(),
        "closed_by_app"
    );
}
