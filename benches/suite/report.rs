//! Turns the per-round measurements into the markdown report, the SVG charts
//! and BENCHMARKS.md.
//!
//! Every figure is the median over rounds; every ratio is the median of the
//! per-round ratios (servers run interleaved, so a round's ratio compares runs
//! made a few seconds apart, and the median drops the round the machine was
//! busy). Nothing here is typed in by hand: BENCHMARKS.md is regenerated.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::{Kind, Record, Scenario, ServerKind};

pub type Metrics = BTreeMap<String, f64>;

/// Median of the finite values (NaN if none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The columns shown for a scenario: (metric key, header).
fn columns(sc: &Scenario) -> Vec<(&'static str, &'static str)> {
    match &sc.kind {
        Kind::Accept { .. } if sc.tls => vec![
            ("ops_s", "handshakes/s"),
            ("p50_us", "connect→reply p50 µs"),
            ("p99_us", "connect→reply p99 µs"),
            ("srv_cpu_us", "server CPU µs/handshake"),
            ("srv_user_us", "of which user"),
            ("gen_cpu_us", "loadgen CPU µs/handshake"),
        ],
        Kind::Stream { depth: 1, .. } => vec![
            ("ops_s", "req/s"),
            ("p50_us", "p50 µs"),
            ("p99_us", "p99 µs"),
            ("p999_us", "p99.9 µs"),
            ("srv_cpu_us", "server CPU µs/req"),
            ("srv_user_us", "of which user"),
            ("gen_cpu_us", "loadgen CPU µs/req"),
        ],
        Kind::Stream { .. } => vec![
            ("ops_s", "lines/s"),
            ("mib_s", "MiB/s (each way)"),
            ("srv_cpu_us", "server CPU µs/line"),
            ("srv_user_us", "of which user"),
            ("gen_cpu_us", "loadgen CPU µs/line"),
        ],
        Kind::Accept { .. } => vec![
            ("ops_s", "conn/s"),
            ("p50_us", "connect→reply p50 µs"),
            ("p99_us", "connect→reply p99 µs"),
            ("srv_cpu_us", "server CPU µs/conn"),
            ("srv_user_us", "of which user"),
            ("gen_cpu_us", "loadgen CPU µs/conn"),
        ],
        Kind::Idle { .. } if sc.tls => vec![
            ("conns", "idle conns"),
            ("rss_base_kib", "RSS before, KiB"),
            ("rss_after_kib", "RSS after, KiB"),
            ("rss_per_conn_b", "RSS B/conn"),
            ("rss_after_16k_kib", "RSS after 16 KiB records, KiB"),
            ("rss_per_conn_16k_b", "RSS B/conn after 16 KiB"),
        ],
        Kind::Idle { .. } => vec![
            ("conns", "idle conns"),
            ("rss_base_kib", "RSS before, KiB"),
            ("rss_after_kib", "RSS after, KiB"),
            ("rss_per_conn_b", "RSS B/conn"),
        ],
        Kind::Storm { .. } => vec![
            ("refusals_s", "refusals/s"),
            ("unloaded_p99_us", "served p99 µs, no storm"),
            ("p99_us", "served p99 µs, storm"),
            ("p99_growth", "p99 storm/no storm"),
            ("ops_s", "served req/s, storm"),
            ("srv_cpu_us", "server CPU µs/refusal (incl. served)"),
            ("srv_user_us", "of which user"),
            ("gen_cpu_us", "loadgen CPU µs/refusal"),
        ],
        Kind::Paced { .. } => vec![
            ("ops_s", "req/s"),
            ("p50_us", "p50 µs"),
            ("p99_us", "p99 µs"),
            ("srv_core_pct", "server CPU, % of a core"),
            ("srv_cpu_us", "server CPU µs/req"),
        ],
        Kind::Ping { .. } => vec![
            ("ops_s", "req/s"),
            ("p50_us", "p50 µs"),
            ("p99_us", "p99 µs"),
            ("srv_cpu_us", "server CPU µs/req"),
            ("srv_user_us", "of which user"),
            ("gen_cpu_us", "redis-benchmark CPU µs/req"),
        ],
        Kind::Kv { .. } => vec![
            ("ops_s", "req/s (mix)"),
            ("set_ops_s", "SET/s"),
            ("get_ops_s", "GET/s"),
            ("incr_ops_s", "INCR/s"),
            ("mset_ops_s", "MSET/s"),
            ("p50_us", "p50 µs (worst test)"),
            ("p99_us", "p99 µs (worst test)"),
            ("srv_cpu_us", "server CPU µs/req"),
            ("srv_user_us", "of which user"),
            ("gen_cpu_us", "redis-benchmark CPU µs/req"),
        ],
    }
}

/// The metrics compared as ratios: (key, label, whether lower is better).
fn ratio_keys(sc: &Scenario) -> Vec<(&'static str, &'static str)> {
    match &sc.kind {
        Kind::Idle { .. } if sc.tls => vec![
            ("rss_per_conn_b", "RSS/conn"),
            ("rss_per_conn_16k_b", "RSS/conn after 16 KiB"),
        ],
        Kind::Idle { .. } => vec![("rss_per_conn_b", "RSS/conn")],
        Kind::Paced { .. } => vec![("p99_us", "p99"), ("srv_core_pct", "CPU share")],
        Kind::Storm { .. } => vec![
            ("refusals_s", "refusals/s"),
            ("p99_us", "served p99"),
            ("srv_cpu_us", "CPU/refusal"),
        ],
        Kind::Stream { depth, .. } if *depth > 1 => {
            vec![("ops_s", "lines/s"), ("srv_cpu_us", "CPU/line")]
        }
        _ => vec![
            ("ops_s", "throughput"),
            ("p99_us", "p99"),
            ("srv_cpu_us", "CPU/op"),
        ],
    }
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 || v == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A ratio: always three decimals, so a value next to a limit reads right.
fn fmt_ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "–".into()
    }
}

/// All rounds' values of one metric for one server in one scenario.
fn values(records: &[Record], sc: &str, server: ServerKind, key: &str) -> Vec<f64> {
    records
        .iter()
        .filter(|r| r.scenario == sc && r.server == server)
        .filter_map(|r| r.result.as_ref().ok())
        .filter_map(|m| m.get(key).copied())
        .collect()
}

/// Median over rounds of a/b for one metric.
pub fn ratio(records: &[Record], sc: &str, a: ServerKind, b: ServerKind, key: &str) -> f64 {
    let get = |server: ServerKind, round: usize| {
        records
            .iter()
            .find(|r| r.scenario == sc && r.server == server && r.round == round)
            .and_then(|r| r.result.as_ref().ok())
            .and_then(|m| m.get(key).copied())
    };
    let rounds = records.iter().map(|r| r.round).max().map_or(0, |m| m + 1);
    let v = (0..rounds)
        .filter_map(|round| match (get(a, round), get(b, round)) {
            (Some(x), Some(y)) if y != 0.0 => Some(x / y),
            _ => None,
        })
        .collect();
    median(v)
}

pub fn med(records: &[Record], sc: &str, server: ServerKind, key: &str) -> f64 {
    median(values(records, sc, server, key))
}

/// One target of issue 5, evaluated.
pub struct Target {
    pub what: String,
    pub value: f64,
    /// The same measure with the bare-mio floor in netpool's place: the
    /// practical limit of the design. A target the floor misses too is out of
    /// reach for any server built this way on this machine.
    pub floor: f64,
    pub limit: String,
    pub met: Option<bool>,
    /// Whether `value` is a ratio (else an absolute figure).
    pub ratio: bool,
}

pub fn targets(scenarios: &[Scenario], records: &[Record]) -> Vec<Target> {
    use ServerKind::*;
    let mut out = Vec::new();
    let has = |id: &str| scenarios.iter().any(|s| s.id == id);
    let mut push = |what: String, value: f64, floor: f64, limit: &str, met: bool, ratio: bool| {
        out.push(Target {
            what,
            value,
            floor,
            limit: limit.into(),
            met: value.is_finite().then_some(met),
            ratio,
        })
    };
    for id in ["pipe-c50-k16", "ping-p16", "accept-c32"] {
        if !has(id) {
            continue;
        }
        let r = ratio(records, id, Netpool, Floor, "srv_cpu_us");
        push(
            format!("{id}: CPU/op netpool ÷ mio-floor"),
            r,
            1.0,
            "≤ 1.05",
            r <= 1.05,
            true,
        );
        for t in [TokioCt, TokioMt] {
            let r = ratio(records, id, Netpool, t, "srv_cpu_us");
            if r.is_finite() {
                let f = ratio(records, id, Floor, t, "srv_cpu_us");
                push(
                    format!("{id}: CPU/op netpool ÷ {}", t.name()),
                    r,
                    f,
                    "≤ 0.85",
                    r <= 0.85,
                    true,
                );
            }
        }
    }
    for id in ["rr-c1", "rr-c50", "rr-c500"] {
        if !has(id) {
            continue;
        }
        for t in [TokioCt, TokioMt] {
            let r = ratio(records, id, Netpool, t, "p99_us");
            let f = ratio(records, id, Floor, t, "p99_us");
            push(
                format!("{id}: p99 netpool ÷ {}", t.name()),
                r,
                f,
                "≤ 1.00",
                r <= 1.0,
                true,
            );
        }
    }
    for sc in scenarios
        .iter()
        .filter(|s| matches!(s.kind, Kind::Idle { .. }) && !s.tls)
    {
        let v = med(records, sc.id, Netpool, "rss_per_conn_b");
        let f = med(records, sc.id, Floor, "rss_per_conn_b");
        push(
            format!("{}: RSS per idle conn, B", sc.id),
            v,
            f,
            "≤ 512",
            v <= 512.0,
            false,
        );
    }
    // Issue 13's goals for the key-value server; no floor exists for it.
    if has("kv-set-get-p16") {
        for (other, limit, max) in [(Redis, "≤ 0.60", 0.6), (TokioKv, "≤ 0.85", 0.85)] {
            let r = ratio(records, "kv-set-get-p16", NetpoolKv, other, "srv_cpu_us");
            push(
                format!("kv-set-get-p16: CPU/req netpool-kv ÷ {}", other.name()),
                r,
                f64::NAN,
                limit,
                r <= max,
                true,
            );
        }
    }
    if has("kv-set-get-p1") {
        let r = ratio(records, "kv-set-get-p1", NetpoolKv, Redis, "ops_s");
        push(
            "kv-set-get-p1: req/s netpool-kv ÷ redis-server".into(),
            r,
            f64::NAN,
            "≥ 1.00",
            r >= 1.0,
            true,
        );
    }
    // Issue 12's goals for busy-polling (`netpool-busy`); the floor does
    // not busy-poll, so it has no figure here.
    for id in ["ping-c1", "rr-c1"] {
        if !has(id) {
            continue;
        }
        let r = ratio(records, id, NetpoolBusy, TokioCt, "ops_s");
        push(
            format!("{id}: req/s netpool-busy ÷ tokio-ct"),
            r,
            f64::NAN,
            "≥ 1.70",
            r >= 1.7,
            true,
        );
        let r = ratio(records, id, NetpoolBusy, TokioCt, "p50_us");
        push(
            format!("{id}: p50 netpool-busy ÷ tokio-ct"),
            r,
            f64::NAN,
            "≤ 0.60",
            r <= 0.6,
            true,
        );
    }
    if has("ping-p1") {
        // Both budgets: 100 µs (one connection's turnaround) and 20 µs
        // (fifty connections'); see the suite's `BUSY_POLL_SHORT`.
        for busy in [NetpoolBusy, NetpoolBusyShort] {
            let r = ratio(records, "ping-p1", busy, Redis, "ops_s");
            push(
                format!("ping-p1: req/s {} ÷ redis-server", busy.name()),
                r,
                f64::NAN,
                "≥ 1.10",
                r >= 1.1,
                true,
            );
            let r = ratio(records, "ping-p1", busy, Redis, "srv_cpu_us");
            push(
                format!("ping-p1: CPU/req {} ÷ redis-server", busy.name()),
                r,
                f64::NAN,
                "≤ 1.00",
                r <= 1.0,
                true,
            );
        }
    }
    if has("light-1k") {
        let busy = med(records, "light-1k", NetpoolBusy, "srv_core_pct");
        let plain = med(records, "light-1k", Netpool, "srv_core_pct");
        push(
            "light-1k: CPU of spinning, % of a core (netpool-busy − netpool)".into(),
            busy - plain,
            f64::NAN,
            "≤ 5",
            busy - plain <= 5.0,
            false,
        );
    }
    for id in ["ping-p1", "ping-p16"] {
        if !has(id) {
            continue;
        }
        let r = ratio(records, id, Netpool, Redis, "ops_s");
        let f = ratio(records, id, Floor, Redis, "ops_s");
        push(
            format!("{id}: req/s netpool ÷ redis-server"),
            r,
            f,
            "≥ 1.00",
            r >= 1.0,
            true,
        );
    }
    out
}

/// The markdown report: one section per scenario, then ratios and targets.
pub fn markdown(
    scenarios: &[Scenario],
    records: &[Record],
    skips: &[String],
    rounds: usize,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Medians over {rounds} round(s); servers interleaved within each round. \
         CPU is user + system time of the server process (all threads) from \
         /proc/PID/stat over the measured window, divided by the operations \
         completed; the load generator's is its own getrusage.\n"
    );
    for sc in scenarios {
        let _ = writeln!(md, "### {} — {}\n", sc.id, sc.title);
        let cols = columns(sc);
        let _ = write!(md, "| server |");
        for (_, h) in &cols {
            let _ = write!(md, " {h} |");
        }
        let _ = write!(md, "\n|---|");
        for _ in &cols {
            let _ = write!(md, "---:|");
        }
        md.push('\n');
        let mut errors = Vec::new();
        for &server in &sc.servers {
            for r in records
                .iter()
                .filter(|r| r.scenario == sc.id && r.server == server)
            {
                if let Err(e) = &r.result {
                    errors.push(format!(
                        "{} failed in round {}: {e}",
                        server.name(),
                        r.round + 1
                    ));
                }
            }
            let _ = write!(md, "| {} |", server.name());
            for (k, _) in &cols {
                let _ = write!(md, " {} |", fmt(med(records, sc.id, server, k)));
            }
            md.push('\n');
        }
        if !errors.is_empty() {
            md.push('\n');
            for e in errors {
                let _ = writeln!(md, "> {e}  ");
            }
        }
        // Ratio rows: netpool against every other server, and netpool's
        // per-core loops against tokio's multi-thread runtime.
        let mut pairs: Vec<(ServerKind, ServerKind)> = Vec::new();
        if sc.servers.contains(&ServerKind::Netpool) {
            for &other in &sc.servers {
                if other != ServerKind::Netpool {
                    pairs.push((ServerKind::Netpool, other));
                }
            }
        }
        for (a, b) in [
            (ServerKind::NetpoolMt, ServerKind::TokioMt),
            (ServerKind::NetpoolMt, ServerKind::TokioNct),
            (ServerKind::NetpoolTls, ServerKind::TokioTls),
            (ServerKind::NetpoolKv, ServerKind::TokioKv),
            (ServerKind::NetpoolKv, ServerKind::Redis),
            (ServerKind::NetpoolKvMt, ServerKind::NetpoolKv),
            (ServerKind::TokioKv, ServerKind::Redis),
            (ServerKind::NetpoolBusy, ServerKind::TokioCt),
            (ServerKind::NetpoolBusy, ServerKind::Redis),
            (ServerKind::NetpoolBusyShort, ServerKind::Redis),
            (ServerKind::NetpoolOffload, ServerKind::TokioOffload),
        ] {
            if sc.servers.contains(&a) && sc.servers.contains(&b) {
                pairs.push((a, b));
            }
        }
        if !pairs.is_empty() {
            let keys = ratio_keys(sc);
            let _ = write!(md, "\n| ratio |");
            for (_, label) in &keys {
                let _ = write!(md, " {label} |");
            }
            let _ = write!(md, "\n|---|");
            for _ in &keys {
                let _ = write!(md, "---:|");
            }
            md.push('\n');
            for (a, b) in pairs {
                let _ = write!(md, "| {} ÷ {} |", a.name(), b.name());
                for (k, _) in &keys {
                    let _ = write!(md, " {} |", fmt_ratio(ratio(records, sc.id, a, b, k)));
                }
                md.push('\n');
            }
        }
        md.push('\n');
    }
    scaling(&mut md, scenarios, records);
    let _ = writeln!(md, "### Targets of issues 5, 12 and 13\n");
    let _ = writeln!(
        md,
        "Measured for netpool, and the same measure with the bare-mio floor in \
         netpool's place (the practical limit: a target the floor misses too is \
         beyond what this design reaches on this machine). The key-value \
         targets are netpool-kv's and have no floor.\n"
    );
    let _ = writeln!(
        md,
        "| target | netpool | mio-floor | limit | met |\n|---|---:|---:|---|---|"
    );
    for t in targets(scenarios, records) {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {met} |",
            t.what,
            if t.ratio {
                fmt_ratio(t.value)
            } else {
                fmt(t.value)
            },
            if t.ratio {
                fmt_ratio(t.floor)
            } else {
                fmt(t.floor)
            },
            t.limit
        );
    }
    if !skips.is_empty() {
        let _ = writeln!(md, "\n### Skipped\n");
        for s in skips {
            let _ = writeln!(md, "- {s}");
        }
    }
    md
}

/// One colour per server, in `ServerKind::ALL` order.
const COLORS: [RGBColor; 11] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0x39, 0x3b, 0x79),
];

/// A grouped bar chart of one metric, each server relative to tokio-ct (1.0).
pub fn chart(
    path: &Path,
    title: &str,
    key: &str,
    scenarios: &[Scenario],
    records: &[Record],
) -> Result<(), Box<dyn std::error::Error>> {
    let servers = ServerKind::ALL;
    let shown: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| s.servers.contains(&ServerKind::TokioCt))
        .filter(|s| !matches!(s.kind, Kind::Idle { .. }))
        .collect();
    let mut bars: Vec<(usize, usize, f64)> = Vec::new(); // (scenario, server, value)
    for (i, sc) in shown.iter().enumerate() {
        for (j, &server) in servers.iter().enumerate() {
            if !sc.servers.contains(&server) {
                continue;
            }
            // The storm's throughput is its refusals; its served clients'
            // request rate is a side effect of the storm.
            let key = match sc.kind {
                Kind::Storm { .. } if key == "ops_s" => "refusals_s",
                _ => key,
            };
            let r = ratio(records, sc.id, server, ServerKind::TokioCt, key);
            if r.is_finite() {
                bars.push((i, j, r));
            }
        }
    }
    // Headroom above the tallest bar for the legend.
    let ymax = bars.iter().map(|b| b.2).fold(1.2f64, f64::max) * 1.35;
    let n = shown.len().max(1) as f64;
    let root = SVGBackend::new(path, (960, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..n, 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("relative to tokio-ct")
        .draw()?;
    let width = 0.8 / servers.len() as f64;
    for (j, &server) in servers.iter().enumerate() {
        let color = COLORS[j % COLORS.len()];
        let series: Vec<Rectangle<(f64, f64)>> = bars
            .iter()
            .filter(|b| b.1 == j)
            .map(|&(i, _, v)| {
                let x0 = i as f64 + 0.1 + j as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], color.filled())
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        chart
            .draw_series(series)?
            .label(server.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 1.0), (n, 1.0)],
        BLACK.stroke_width(1),
    )))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    for (i, sc) in shown.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(
            sc.id.to_string(),
            (px - 4 * sc.id.len() as i32, py + 8),
            ("sans-serif", 13),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// The scaling table (issue 4): n loops (or runtimes) against one, for
/// netpool and for tokio, in every scenario that ran both sides.
fn scaling(md: &mut String, scenarios: &[Scenario], records: &[Record]) {
    use ServerKind::*;
    let pairs = [
        (NetpoolMt, Netpool),
        (TokioMt, TokioCt),
        (TokioNct, TokioCt),
    ];
    let rows: Vec<(&Scenario, ServerKind, ServerKind)> = scenarios
        .iter()
        .filter(|sc| matches!(sc.kind, Kind::Stream { .. } | Kind::Accept { .. }))
        .flat_map(|sc| pairs.iter().map(move |&(n, one)| (sc, n, one)))
        .filter(|(sc, n, one)| sc.servers.contains(n) && sc.servers.contains(one))
        .collect();
    if rows.is_empty() {
        return;
    }
    let cores = crate::pin::cpus();
    let _ = writeln!(md, "### Scaling: {cores} loops against 1\n");
    let _ = writeln!(
        md,
        "Each row divides the n-loop server's figure by its one-loop \
         counterpart's in the same round (n = {cores}, the cores of this \
         machine). On a 2-core machine shared with the load generator, scaling \
         cannot show: the load generator needs most of one core, so n loops \
         have about one core between them, and a throughput ratio near 1 (and \
         a CPU-per-operation ratio above 1, the price of cross-thread \
         hand-off and wake-ups) is the expected result here, not a verdict on \
         either design. Run the suite on a machine with spare cores for a \
         real scaling curve.\n"
    );
    let _ = writeln!(
        md,
        "| scenario | n loops ÷ 1 loop | throughput | CPU/op |\n|---|---|---:|---:|"
    );
    for (sc, n, one) in rows {
        let _ = writeln!(
            md,
            "| {} | {} ÷ {} | {} | {} |",
            sc.id,
            n.name(),
            one.name(),
            fmt_ratio(ratio(records, sc.id, n, one, "ops_s")),
            fmt_ratio(ratio(records, sc.id, n, one, "srv_cpu_us")),
        );
    }
    md.push('\n');
}
