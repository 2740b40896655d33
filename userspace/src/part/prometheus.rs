//! The Prometheus text exposition format, written the same way by every part: a family's
//! HELP and TYPE lines, then its samples.

use std::fmt::Write as _;

/// Writes family `name` (the full metric name) with one sample per row of (labels, value);
/// empty labels give a sample without braces.
pub fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    rows: impl IntoIterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in rows {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn families_with_and_without_labels() {
        let mut out = String::new();
        super::family(
            &mut out,
            "portier_x_total",
            "counter",
            "Xs.",
            [(String::new(), 3)],
        );
        super::family(
            &mut out,
            "portier_y",
            "gauge",
            "Ys.",
            [("a=\"1\"".to_string(), 1)],
        );
        assert_eq!(
            out,
            "# HELP portier_x_total Xs.\n# TYPE portier_x_total counter\nportier_x_total 3\n\
             # HELP portier_y Ys.\n# TYPE portier_y gauge\nportier_y{a=\"1\"} 1\n"
        );
    }
}
