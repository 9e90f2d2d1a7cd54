//! A strict reader of the Prometheus text exposition format (0.0.4) as
//! netpool writes it, for the tests; and, where `python3` has
//! `prometheus_client`, the reference parser's view of the same text.
//!
//! One file for both kinds of test: the socket tests use it as
//! `util::prometheus`, and `src/metrics.rs` includes it (`#[path]`) for the
//! unit tests, so that a single reader says what valid output is.
//!
//! Stricter than the format, on purpose: every line is a `# HELP`, a
//! `# TYPE` or a sample; each family has its HELP, then its TYPE
//! (`counter`, `gauge` or `histogram`, the kinds netpool writes), then its
//! samples, all together; counters end in `_total`; no series appears twice;
//! label values are quoted and escaped; one space before the value, and no
//! timestamp; each histogram series has cumulative buckets with increasing
//! bounds, ending in `+Inf` equal to `_count`, and one `_sum`. Anything else
//! panics, naming the line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Every sample, in the order of the text.
    pub samples: Vec<Sample>,
    /// Family name to its type.
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// The value of the one sample `name` with exactly `labels`, if any.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .collect();
        assert!(found.len() <= 1, "{name}{labels:?} appears twice");
        found.first().map(|s| s.value)
    }

    /// As [`get`](Exposition::get), panicking if the sample is missing.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    /// Every sample of family `name`, by its `label`.
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| (s.labels[label].clone(), s.value))
            .collect()
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    is_metric_name(s) && !s.contains(':')
}

/// Parses one sample line, `name{k="v",...} value`, strictly; panics with
/// the line on any deviation.
pub fn parse_sample(line: &str) -> Sample {
    let fail = |why: &str| -> ! { panic!("{why}: {line:?}") };
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| fail("no value"));
    let name = &line[..name_end];
    if !is_metric_name(name) {
        fail("bad metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            let eq = rest.find('=').unwrap_or_else(|| fail("label without '='"));
            let key = &rest[..eq];
            if !is_label_name(key) {
                fail("bad label name");
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .unwrap_or_else(|| fail("label value not quoted"));
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => fail("bad escape"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, '\n')) => fail("raw newline in label value"),
                    Some((_, c)) => value.push(c),
                    None => fail("unterminated label value"),
                }
            };
            if labels.insert(key.to_string(), value).is_some() {
                fail("label given twice");
            }
            rest = &rest[end + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            } else {
                fail("expected ',' or '}' after a label");
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| fail("no single space before the value"));
    if value.contains(' ') {
        fail("timestamps are not written, nor extra fields");
    }
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| fail("value is not a number")),
    };
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

/// Parses `text`, panicking on anything the module doc does not allow.
pub fn parse(text: &str) -> Exposition {
    assert!(text.ends_with('\n'), "the last line ends with a newline");
    let mut e = Exposition::default();
    let mut helped: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').expect("HELP has text");
            assert!(is_metric_name(name), "bad family name: {line}");
            assert!(helped.insert(name.to_string()), "second HELP: {line}");
            if let Some(prev) = current.replace(name.to_string()) {
                finished.insert(prev);
            }
            assert!(!finished.contains(name), "family split: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert_eq!(current.as_deref(), Some(name), "TYPE after its HELP");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter name: {line}");
            }
            let first = e.types.insert(name.to_string(), kind.into()).is_none();
            assert!(first, "typed twice: {line}");
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let s = parse_sample(line);
        let family = current.as_deref().expect("sample before any HELP");
        let kind = e.types.get(family).expect("sample before its TYPE");
        if kind == "histogram" {
            let suffix = s.name.strip_prefix(family).unwrap_or("");
            assert!(
                ["_bucket", "_sum", "_count"].contains(&suffix),
                "histogram sample outside its family: {line}"
            );
        } else {
            assert_eq!(s.name, family, "sample outside its family: {line}");
        }
        let key = format!("{}{:?}", s.name, s.labels);
        assert!(series.insert(key), "series written twice: {line}");
        e.samples.push(s);
    }
    for (family, kind) in &e.types {
        if kind == "histogram" {
            check_histogram(family, &e.samples);
        }
    }
    e
}

/// Buckets cumulative, bounds increasing, `+Inf` last and equal to
/// `_count`, one `_sum`, for each label set of `family`.
fn check_histogram(family: &str, samples: &[Sample]) {
    let others = |s: &Sample| -> BTreeMap<String, String> {
        let mut labels = s.labels.clone();
        labels.remove("le");
        labels
    };
    let mut label_sets: Vec<BTreeMap<String, String>> = Vec::new();
    for s in samples.iter().filter(|s| s.name.starts_with(family)) {
        let l = others(s);
        if !label_sets.contains(&l) {
            label_sets.push(l);
        }
    }
    assert!(
        !label_sets.is_empty(),
        "{family}: a histogram with no samples"
    );
    for set in label_sets {
        let of = |suffix: &str| -> Vec<&Sample> {
            samples
                .iter()
                .filter(|s| s.name == format!("{family}{suffix}") && others(s) == set)
                .collect()
        };
        let buckets = of("_bucket");
        assert!(buckets.len() >= 2, "{family}{set:?}: buckets");
        let mut last_le = f64::NEG_INFINITY;
        let mut last_count = 0.0;
        for b in &buckets {
            let le: f64 = match b.labels.get("le").expect("bucket has le").as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().expect("le is a number"),
            };
            assert!(le > last_le, "{family}{set:?}: bounds increase");
            assert!(b.value >= last_count, "{family}{set:?}: cumulative");
            last_le = le;
            last_count = b.value;
        }
        assert_eq!(last_le, f64::INFINITY, "{family}{set:?}: ends in +Inf");
        let count = of("_count");
        assert_eq!(count.len(), 1);
        assert_eq!(count[0].value, last_count, "{family}{set:?}: +Inf == count");
        assert_eq!(of("_sum").len(), 1, "{family}{set:?}: one _sum");
    }
}

/// What Prometheus's reference Python parser (`prometheus_client`) reads
/// in `text`: one `type name labels value` line per sample, sorted; `None`
/// (with a note) where it is not installed. Panics if it rejects the text.
pub fn python_reading(text: &str) -> Option<Vec<String>> {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let available = *AVAILABLE.get_or_init(|| {
        let probe = Command::new("python3")
            .args(["-c", "import prometheus_client.parser"])
            .output();
        probe.is_ok_and(|o| o.status.success())
    });
    if !available {
        eprintln!(
            "note: python3 with prometheus_client not available \
             (python3 -m pip install prometheus_client); reference parser skipped"
        );
        return None;
    }
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out.append(f"{family.type} {s.name} {labels} {float(s.value)!r}")
print("\n".join(sorted(out)))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected the text: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

/// Parses `text` strictly, and with the reference parser where it is
/// installed, which must read as many samples.
pub fn parse_checked(text: &str) -> Exposition {
    let e = parse(text);
    if let Some(reference) = python_reading(text) {
        assert_eq!(reference.len(), e.samples.len(), "{text}");
    }
    e
}
