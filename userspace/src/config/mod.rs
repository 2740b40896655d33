//! The TOML config file: schema, validation, and errors that name file, line and key.
//!
//! Reading goes document tree -> per-section drafts (`sections`) -> cross-section rules
//! (`checks`) -> `Config`. Every stage keeps going after a problem so that one `portier check`
//! lists everything wrong with the file.

mod admin;
mod bfd;
mod bgp;
mod checks;
mod decap;
pub mod discovery;
mod error;
mod health;
pub mod l7;
mod l7_tls;
mod log;
mod model;
mod ospf;
mod reader;
mod report;
mod rules;
mod secrets;
mod sections;
mod syntax;
mod vrrp;

use std::path::Path;

use toml::de::DeTable;

pub use admin::warnings;
pub use bfd::{BfdAuth, BfdAuthKind, BfdConfig, BfdPeer, BfdTimers};
pub use bgp::{BgpAnnounce, BgpAttrs, BgpConfig, BgpPeer};
pub use discovery::{DiscoveryConfig, DockerDiscoveryConfig};
pub use error::{ConfigError, Problem};
pub use l7::{
    Balance, CertificateConfig, ForwardingFields, HttpHealthConfig, HttpProtocol, L7Config,
    ListenerConfig, PoolConfig, RouteConfig, ServerConfig, UpstreamTlsConfig,
};
pub use log::{LogConfig, LogFormat};
pub use model::{
    AdminConfig, BackendConfig, Cidr, Config, DataplaneConfig, DecapConfig, Forwarding,
    HealthCheckConfig, HealthKind, HttpCheck, NodeConfig, Protocol, ServiceConfig, XdpMode,
    default_socket,
};
pub use ospf::{AnnouncePolicy, OspfAnnounce, OspfAuth, OspfConfig, OspfInterface, OspfNetwork};
pub use secrets::secret_warnings;
pub use vrrp::{TrackConfig, TrackTarget, VrrpConfig, VrrpInstanceConfig, VrrpVersion};

use reader::Table;
use report::Report;

/// Reads and validates the config at `path`; problems name the path as given.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        file: file.clone(),
        error,
    })?;
    parse(&text, &file)
}

/// Validates config `text`; `file_name` is only used in problems.
pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
    let mut report = Report::new(file_name, text);
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        // A recovered tree would add follow-on noise (missing keys, wrong types) to the
        // real syntax problems, so stop here.
        for error in syntax_errors {
            let offset = error.span().map_or(0, |span| span.start);
            report.add(offset, syntax::key_near(text, offset), error.message());
        }
        return Err(ConfigError::Invalid(report.into_problems()));
    }

    let config = read(&mut report, &Table::root(&document));
    match config {
        Some(config) if report.is_clean() => Ok(config),
        _ => {
            if report.is_clean() {
                // Every `None` above comes with a problem; this is a guard, not a path.
                report.add(
                    0,
                    "",
                    "internal error: config incomplete without a reported problem",
                );
            }
            Err(ConfigError::Invalid(report.into_problems()))
        }
    }
}

fn read(report: &mut Report<'_>, root: &Table<'_, '_>) -> Option<Config> {
    root.deny_unknown(
        report,
        &[
            "node",
            "dataplane",
            "service",
            "l7",
            "admin",
            "ospf",
            "vrrp",
            "decap",
            "bfd",
            "bgp",
            "discovery",
            "log",
        ],
    );
    let node = root
        .required_table(report, "node")
        .map(|table| sections::node(report, &table));
    let dataplane = match root.optional_table(report, "dataplane") {
        Some(table) => sections::dataplane(report, &table),
        None => Some(DataplaneConfig::default()),
    };
    let log = match root.optional_table(report, "log") {
        Some(table) => log::log(report, &table),
        None => Some(LogConfig::default()),
    };
    let admin = match root.optional_table(report, "admin") {
        Some(table) => admin::admin(report, &table),
        None => Some(AdminConfig::default()),
    };
    let services: Vec<_> = root
        .array_of_tables(report, "service")
        .iter()
        .map(|table| sections::service(report, table))
        .collect();
    let l7 = match root.optional_table(report, "l7") {
        Some(table) => l7::read(report, &table).map(Some),
        None => Some(None),
    };
    let discovery = match root.optional_table(report, "discovery") {
        Some(table) => discovery::section(report, &table, root.has("l7")).map(Some),
        None => Some(None),
    };
    checks::services(report, &services);
    if let Some(dataplane) = &dataplane {
        decap::check_sources(report, &services, dataplane);
    }
    let bfd = match root.optional_table(report, "bfd") {
        Some(table) => bfd::section(report, &table).map(Some),
        None => Some(None),
    };
    let decap = match root.optional_table(report, "decap") {
        Some(table) => decap::section(report, &table).map(Some),
        None => Some(None),
    };
    let vrrp = root
        .optional_table(report, "vrrp")
        .map(|table| vrrp::section(report, &table));
    if let Some(instances) = &vrrp {
        let names: Vec<&str> = services
            .iter()
            .filter_map(|s| s.name.as_ref().map(|n| n.value.as_str()))
            .collect();
        vrrp::check(report, instances, &names);
    }
    let service_vips: Vec<_> = services
        .iter()
        .filter_map(|s| s.vip.as_ref().map(|v| v.value))
        .collect();
    let bgp = match root.optional_table(report, "bgp") {
        Some(table) => bgp::section(report, &table, &service_vips, root.has("bfd")).map(Some),
        None => Some(None),
    };
    let ospf = match root.optional_table(report, "ospf") {
        Some(table) => ospf::ospf(report, &table, &service_vips, root.has("bfd")).map(Some),
        None => Some(None),
    };
    if let Some(node) = &node {
        checks::interfaces(report, node, &services);
    }

    let services = services
        .into_iter()
        .map(|s| {
            Some(ServiceConfig {
                name: s.name?.value,
                vip: s.vip?.value,
                port: s.port?,
                protocol: s.protocol?,
                forwarding: s.forwarding?.value,
                backends: s
                    .backends
                    .iter()
                    .map(sections::BackendDraft::finish)
                    .collect::<Option<_>>()?,
                health: s.health?,
            })
        })
        .collect::<Option<_>>()?;
    let vrrp = match vrrp {
        Some(instances) => Some(VrrpConfig {
            instances: instances
                .into_iter()
                .map(vrrp::InstanceDraft::finish)
                .collect::<Option<_>>()?,
        }),
        None => None,
    };
    Some(Config {
        node: node?.finish()?,
        dataplane: dataplane?,
        services,
        l7: l7?,
        admin: admin?,
        vrrp,
        ospf: ospf?,
        decap: decap?,
        bfd: bfd?,
        bgp: bgp?,
        discovery: discovery?,
        log: log?,
    })
}

#[cfg(test)]
mod decap_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
