//! A strict reader of `/metrics` for tests: the Prometheus project's own OpenMetrics parser
//! (Debian's python3-prometheus-client), so what portier writes is checked by a consumer it
//! does not share code with. It refuses a missing `# EOF`, a counter sample without `_total`,
//! a family split in two, a malformed or badly escaped label, and a repeated family.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// Debian's interpreter, which sees Debian's python3-prometheus-client.
const PYTHON: &str = "/usr/bin/python3";

const SCRIPT: &str = r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = [
    {"name": f.name, "type": f.type, "help": f.documentation,
     "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
    for f in text_string_to_metric_families(sys.stdin.read())
]
print(json.dumps(families))
"#;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    /// `counter`, `gauge`, ... (`unknown` when the text gave no TYPE).
    pub kind: String,
    pub help: String,
    pub samples: Vec<Sample>,
}

/// Parses an OpenMetrics exposition; an error carries the parser's complaint.
pub fn parse(text: &str) -> Result<Vec<Family>> {
    let mut child = Command::new(PYTHON)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run python3 (`cargo xtask setup` installs python3-prometheus-client)")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "the OpenMetrics parser refused the text: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let families = v
        .as_array()
        .context("a list")?
        .iter()
        .map(|f| Family {
            name: f["name"].as_str().unwrap_or_default().to_string(),
            kind: f["type"].as_str().unwrap_or_default().to_string(),
            help: f["help"].as_str().unwrap_or_default().to_string(),
            samples: f["samples"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| Sample {
                    name: s["name"].as_str().unwrap_or_default().to_string(),
                    labels: s["labels"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect(),
                    value: s["value"].as_f64().unwrap_or(f64::NAN),
                })
                .collect(),
        })
        .collect();
    Ok(families)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_parser_is_strict() {
        let good = "# HELP x_a A.\n# TYPE x_a counter\nx_a_total{l=\"q\\\"\"} 1\n# EOF\n";
        let f = super::parse(good).unwrap();
        assert_eq!(f[0].name, "x_a");
        assert_eq!(f[0].kind, "counter");
        assert_eq!(f[0].samples[0].labels["l"], "q\"");
        // No EOF; a counter sample without _total.
        assert!(super::parse("# TYPE x_a counter\nx_a_total 1\n").is_err());
        assert!(super::parse("# TYPE x_a counter\nx_a 1\n# EOF\n").is_err());
    }
}
