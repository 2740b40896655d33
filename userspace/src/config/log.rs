//! `[log]`: how the daemon writes its log (tracing output and the L7 access log) to stderr,
//! which journald (or a container runtime) collects. Read when the daemon starts: a reload
//! does not switch the format of a running process.

use serde::Serialize;

use super::model::Choice;
use super::reader::Table;
use super::report::Report;
use super::rules;

/// `format`: `text` (the default, one readable line per event with `key=value` fields) or
/// `json` (one JSON object per line: timestamp, level, target, and the event's fields as
/// fields, for journald's or a log shipper's structured fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Choice for LogFormat {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
}

pub(super) fn log(report: &mut Report<'_>, table: &Table<'_, '_>) -> Option<LogConfig> {
    table.deny_unknown(report, &["format"]);
    let format = match table.optional_str(report, "format") {
        Some(v) => rules::choice(report, v)?,
        None => LogFormat::default(),
    };
    Some(LogConfig { format })
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::test_support::{FILE, assert_problem, problems};
    use super::LogFormat;

    #[test]
    fn text_by_default_json_on_request_anything_else_named() {
        let base = "[node]\nname = \"lb1\"\n";
        let config = parse(base, FILE).unwrap();
        assert_eq!(config.log.format, LogFormat::Text);
        let config = parse(&format!("{base}[log]\nformat = \"json\"\n"), FILE).unwrap();
        assert_eq!(config.log.format, LogFormat::Json);
        let found = problems(&format!("{base}[log]\nformat = \"xml\"\n"));
        assert_problem(&found[0], 4, "log.format", "text");
        let found = problems(&format!("{base}[log]\nlevel = \"debug\"\n"));
        assert_problem(&found[0], 4, "log.level", "unknown");
    }
}
