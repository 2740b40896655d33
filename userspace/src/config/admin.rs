//! `[admin]`: where the admin API (status, metrics, runtime commands) listens.

use std::net::SocketAddr;

use super::model::AdminConfig;
use super::reader::Table;
use super::report::Report;

/// The admin API must not be reachable from the network by accident.
fn is_local(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

pub(super) fn admin(report: &mut Report<'_>, table: &Table<'_, '_>) -> Option<AdminConfig> {
    table.deny_unknown(report, &["listen"]);
    let Some(listen) = table.optional_str(report, "listen") else {
        return Some(AdminConfig::default());
    };
    match listen.value.parse::<SocketAddr>() {
        Ok(addr) if is_local(&addr) => Some(AdminConfig { listen: addr }),
        Ok(addr) => {
            report.add(
                listen.offset,
                listen.key,
                format!("{addr} is not a loopback address; the admin API has no authentication"),
            );
            None
        }
        Err(_) => {
            report.add(
                listen.offset,
                listen.key,
                format!("\"{}\" is not an address:port", listen.value),
            );
            None
        }
    }
}
