//! The `[discovery]` section: where L7 servers and routes come from besides the file.
//!
//! ```toml
//! [discovery.docker]
//! endpoint = "unix:///var/run/docker.sock"   # or Podman's: unix:///run/podman/podman.sock
//! network = "apps"                           # which of a container's addresses to use
//! label_prefix = "portier"
//! max_containers = 1024
//! [discovery.docker.defaults]                # pools only containers make
//! balance = "least-outstanding"
//! ```

use serde::Serialize;
use toml::de::DeTable;

use super::l7::{self, PoolConfig};
use super::reader::Table;
use super::report::Report;
use super::rules;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveryConfig {
    pub docker: Option<DockerDiscoveryConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DockerDiscoveryConfig {
    /// `unix:///path` or `tcp://host:port` (plain HTTP).
    pub endpoint: String,
    /// Use the container's address on this network; `None`: its only network's (a
    /// container on several networks is then an error, as Traefik's "network" setting).
    pub network: Option<String>,
    /// Labels read are `<prefix>.host`, `<prefix>.port`, ...
    pub label_prefix: String,
    /// Containers with our labels kept at most; more are refused and counted.
    pub max_containers: usize,
    /// Pool settings (balance, health, timeouts, TLS) of pools no `[[l7.pool]]` defines;
    /// `name` empty and `servers` empty.
    pub defaults: PoolConfig,
}

/// The settings of a `[[l7.pool]]` that gives none: read from an empty table, so the
/// defaults live in one place (the pool reader).
pub fn pool_defaults() -> PoolConfig {
    let mut report = Report::new("", "");
    DeTable::parse("")
        .ok()
        .and_then(|empty| l7::pool_defaults(&mut report, &Table::root(&empty)))
        .unwrap_or_else(|| unreachable!("an empty pool table is valid"))
}

pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";

pub(super) fn section(
    report: &mut Report<'_>,
    table: &Table<'_, '_>,
    has_l7: bool,
) -> Option<DiscoveryConfig> {
    table.deny_unknown(report, &["docker"]);
    let docker = match table.optional_table(report, "docker") {
        Some(t) => {
            if !has_l7 {
                report.add(
                    t.offset(),
                    t.path().to_owned(),
                    "discovered containers become L7 servers: an [l7] section with a \
                     listener is needed",
                );
            }
            docker(report, &t).map(Some)
        }
        None => Some(None),
    };
    Some(DiscoveryConfig { docker: docker? })
}

fn docker(report: &mut Report<'_>, table: &Table<'_, '_>) -> Option<DockerDiscoveryConfig> {
    table.deny_unknown(
        report,
        &[
            "endpoint",
            "network",
            "label_prefix",
            "max_containers",
            "defaults",
        ],
    );
    let endpoint = match table.optional_str(report, "endpoint") {
        Some(v) => {
            let ok = match v.value.split_once("://") {
                Some(("unix", path)) => path.starts_with('/'),
                Some(("tcp" | "http", rest)) => !rest.is_empty(),
                _ => false,
            };
            if ok {
                Some(v.value.to_owned())
            } else {
                report.add(
                    v.offset,
                    v.key,
                    format!(
                        "\"{}\" is not unix:///path/to/socket or tcp://host:port",
                        v.value
                    ),
                );
                None
            }
        }
        None => Some(DEFAULT_ENDPOINT.to_owned()),
    };
    let network = match table.optional_str(report, "network") {
        Some(v) => rules::name(
            report,
            v,
            128,
            |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
            "A-Z, a-z, 0-9, '_', '.' and '-'",
        )
        .map(Some),
        None => Some(None),
    };
    let label_prefix = match table.optional_str(report, "label_prefix") {
        Some(v) => rules::name(
            report,
            v,
            64,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'),
            "a-z, 0-9, '.', '-' and '_'",
        ),
        None => Some("portier".to_owned()),
    };
    let max_containers = rules::int_or(report, table, "max_containers", 1..=65_536, 1024usize);
    let defaults = match table.optional_table(report, "defaults") {
        Some(t) => l7::pool_defaults(report, &t),
        None => Some(pool_defaults()),
    };
    Some(DockerDiscoveryConfig {
        endpoint: endpoint?,
        network: network?,
        label_prefix: label_prefix?,
        max_containers: max_containers?,
        defaults: defaults?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const BASE: &str =
        "[node]\nname = \"t\"\n[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:80\"\n";

    #[test]
    fn defaults_and_keys() {
        let c = parse(&format!("{BASE}[discovery.docker]\n"), "t.toml").expect("valid");
        let d = c.discovery.expect("discovery").docker.expect("docker");
        assert_eq!(d.endpoint, "unix:///var/run/docker.sock");
        assert_eq!(d.label_prefix, "portier");
        assert_eq!(d.network, None);
        assert_eq!(d.max_containers, 1024);
        assert_eq!(d.defaults.connect_timeout_ms, 3000);
        assert!(d.defaults.servers.is_empty());

        let c = parse(
            &format!(
                "{BASE}[discovery.docker]\nendpoint = \"unix:///run/podman/podman.sock\"\n\
                 network = \"apps\"\nlabel_prefix = \"lb\"\nmax_containers = 5\n\
                 [discovery.docker.defaults]\nbalance = \"least-outstanding\"\n\
                 health = {{ path = \"/health\" }}\n"
            ),
            "t.toml",
        )
        .expect("valid");
        let d = c.discovery.expect("discovery").docker.expect("docker");
        assert_eq!(d.network.as_deref(), Some("apps"));
        assert_eq!(d.label_prefix, "lb");
        assert_eq!(d.max_containers, 5);
        assert_eq!(d.defaults.balance, crate::config::Balance::LeastOutstanding);
        assert_eq!(d.defaults.health.expect("health").path, "/health");
    }

    #[test]
    fn bad_values_name_line_and_key() {
        let err = parse(
            &format!(
                "{BASE}[discovery.docker]\nendpoint = \"/var/run/docker.sock\"\n\
                 label_prefix = \"Portier!\"\n[discovery.docker.defaults]\nname = \"x\"\n"
            ),
            "t.toml",
        )
        .expect_err("invalid")
        .to_string();
        assert!(err.contains("t.toml:7: discovery.docker.endpoint"), "{err}");
        assert!(err.contains("not unix:///path"), "{err}");
        assert!(
            err.contains("t.toml:8: discovery.docker.label_prefix"),
            "{err}"
        );
        assert!(
            err.contains("t.toml:10: discovery.docker.defaults.name: unknown key"),
            "{err}"
        );
    }

    #[test]
    fn needs_an_l7_section() {
        let err = parse("[node]\nname = \"t\"\n[discovery.docker]\n", "t.toml")
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("an [l7] section"), "{err}");
    }
}
