//! `[admin]`: the command socket and the read-only TCP listener.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::model::{AdminConfig, Config};
use super::reader::Table;
use super::report::Report;
use super::rules;

pub(super) fn admin(report: &mut Report<'_>, table: &Table<'_, '_>) -> Option<AdminConfig> {
    table.deny_unknown(report, &["listen", "allow", "socket", "group"]);
    let listen = match table.optional_str(report, "listen") {
        None => Some(AdminConfig::DEFAULT_LISTEN),
        Some(v) => match v.value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                report.add(
                    v.offset,
                    v.key,
                    format!("\"{}\" is not an address:port", v.value),
                );
                None
            }
        },
    };
    let allow = rules::cidrs(report, table, "allow");
    let socket = match table.optional_str(report, "socket") {
        None => Some(None),
        Some(v) if v.value.starts_with('/') => Some(Some(PathBuf::from(v.value))),
        Some(v) => {
            report.add(v.offset, v.key, "must be an absolute path");
            None
        }
    };
    let group = match table.optional_str(report, "group") {
        None => Some(None),
        Some(v) => rules::name(
            report,
            v,
            32,
            |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
            "letters, digits, '-', '_' and '.'",
        )
        .map(Some),
    };
    Some(AdminConfig {
        listen: Some(listen?),
        allow: allow?,
        socket: socket?,
        group: group?,
    })
}

/// What is valid but probably not meant: the operator sees it in `portier check` and in the
/// daemon's log at start.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(listen) = config.admin.listen
        && !listen.ip().is_loopback()
        && config.admin.allow.is_empty()
    {
        out.push(format!(
            "admin.listen: {listen} is reachable beyond this host and admin.allow is empty: \
             anyone who can reach it reads status and metrics (commands need the socket)"
        ));
    }
    out
}
