//! A strict reader of the Prometheus text exposition format (0.0.4), for
//! the tests: every line must be a `# HELP`, a `# TYPE` or a sample; a
//! family's `# TYPE` comes before its samples, which come together; values
//! parse. And, where `python3` has `prometheus_client`, the reference
//! parser's view of the same text.

use std::collections::{BTreeMap, HashMap};
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

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return base;
            }
        }
    }
    name
}

fn parse_sample(line: &str) -> Sample {
    let (head, value) = line.rsplit_once(' ').expect("a sample has a value");
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    let (name, labels) = match head.split_once('{') {
        None => (head, BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').expect("labels end with }");
            let mut labels = BTreeMap::new();
            let mut chars = body.chars().peekable();
            while chars.peek().is_some() {
                let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                assert!(is_name(&key), "bad label name {key:?} in {line:?}");
                assert_eq!(chars.next(), Some('"'), "label value quoted in {line:?}");
                let mut value = String::new();
                loop {
                    match chars.next().expect("label value ends") {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some(c @ ('\\' | '"')) => value.push(c),
                            other => panic!("bad escape {other:?} in {line:?}"),
                        },
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
                match chars.next() {
                    None => break,
                    Some(',') => {}
                    other => panic!("expected , or }} after a label, got {other:?} in {line:?}"),
                }
            }
            (name, labels)
        }
    };
    assert!(is_name(name), "bad metric name {name:?}");
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

/// Parses `text`, panicking on anything the format does not allow.
pub fn parse(text: &str) -> Exposition {
    assert!(text.ends_with('\n'), "the text ends with a newline");
    let mut e = Exposition::default();
    let mut done: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap(), parts.next().expect("a family name"));
            assert!(is_name(name), "bad family name in {line:?}");
            match kw {
                "HELP" => {}
                "TYPE" => {
                    let kind = parts.next().expect("a type");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "bad type in {line:?}"
                    );
                    assert!(
                        e.types.insert(name.to_string(), kind.to_string()).is_none(),
                        "{name} typed twice"
                    );
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "bad line {line:?}"
        );
        let sample = parse_sample(line);
        let family = family_of(&sample.name, &e.types).to_string();
        assert!(
            e.types.contains_key(&family),
            "{family} has no # TYPE before it"
        );
        if current.as_deref() != Some(&family) {
            assert!(
                !done.contains(&family),
                "{family}'s samples are not together"
            );
            if let Some(previous) = current.take() {
                done.push(previous);
            }
            current = Some(family.clone());
        }
        if e.types[&family] == "counter" {
            assert!(
                sample.name.ends_with("_total"),
                "counter {} without _total",
                sample.name
            );
        }
        e.samples.push(sample);
    }
    e
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
        eprintln!("note: python3 with prometheus_client not available; reference parser skipped");
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
