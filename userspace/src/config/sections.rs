//! Readers for each section of the file. Each reads what it can and reports the rest, so one
//! run shows every problem; cross-section rules live in `checks`.

use std::collections::HashMap;
use std::net::IpAddr;

use super::model::{
    BackendConfig, DataplaneConfig, Forwarding, HealthCheckConfig, NodeConfig, Protocol, XdpMode,
};
use super::reader::{Located, Table};
use super::report::Report;
use super::rules;

/// Largest table size the dataplane's MAGLEV map is sized for.
pub(super) const MAX_MAGLEV_TABLE_SIZE: u32 = 4_194_301;
const MIN_MAGLEV_TABLE_SIZE: u32 = 7;
const MAX_CONNTRACK_SIZE: u32 = 16_777_216;

/// The node section, with the interface list kept located for the "needed by services" rule.
pub(super) struct NodeDraft {
    pub offset: usize,
    pub name: Option<String>,
    pub interfaces: Option<Located<Vec<String>>>,
    /// Whether the key is written at all, even wrongly (then its problems are reported).
    pub interfaces_written: bool,
    /// Entries written, valid or not, so an all-invalid list is not also called empty.
    pub interfaces_listed: usize,
    pub xdp_mode: Option<XdpMode>,
}

impl NodeDraft {
    pub(super) fn finish(self) -> Option<NodeConfig> {
        Some(NodeConfig {
            name: self.name?,
            interfaces: self.interfaces.map(|i| i.value).unwrap_or_default(),
            xdp_mode: self.xdp_mode?,
        })
    }
}

pub(super) fn node(report: &mut Report<'_>, table: &Table<'_, '_>) -> NodeDraft {
    table.deny_unknown(report, &["name", "interfaces", "xdp_mode"]);
    let name = table
        .required_str(report, "name")
        .and_then(|v| rules::node_name(report, v));
    let interfaces = table.optional_str_array(report, "interfaces").map(|list| {
        let names = rules::interface_names(report, list.value);
        Located {
            value: names,
            offset: list.offset,
            key: list.key,
        }
    });
    let xdp_mode = match table.optional_str(report, "xdp_mode") {
        Some(v) => rules::choice(report, v),
        None => Some(XdpMode::default()),
    };
    NodeDraft {
        offset: table.offset(),
        name,
        interfaces_written: table.has("interfaces"),
        interfaces_listed: table.array_len("interfaces").unwrap_or(0),
        interfaces,
        xdp_mode,
    }
}

pub(super) fn dataplane(report: &mut Report<'_>, table: &Table<'_, '_>) -> Option<DataplaneConfig> {
    table.deny_unknown(
        report,
        &[
            "maglev_table_size",
            "conntrack_size",
            "encap_source_v4",
            "encap_source_v6",
            "midflow_sources",
            "new_flow_rate",
            "debug",
        ],
    );
    let defaults = DataplaneConfig::default();
    let maglev_table_size = match table.optional_int(report, "maglev_table_size") {
        Some(v) => {
            let (offset, key) = (v.offset, v.key.clone());
            let range = i128::from(MIN_MAGLEV_TABLE_SIZE)..=i128::from(MAX_MAGLEV_TABLE_SIZE);
            rules::in_range::<u32>(report, v, range).filter(|&size| {
                let prime = crate::limits::is_prime(size);
                if !prime {
                    // Maglev's permutations only cover every slot when the size is prime.
                    report.add(offset, key, format!("{size} is not a prime number"));
                }
                prime
            })
        }
        None => Some(defaults.maglev_table_size),
    };
    let conntrack_size = match table.optional_int(report, "conntrack_size") {
        Some(v) => rules::in_range(report, v, 1..=i128::from(MAX_CONNTRACK_SIZE)),
        None => Some(defaults.conntrack_size),
    };
    let encap_source_v4 = match encap_prefix(report, table, "encap_source_v4", true) {
        Some(Some((IpAddr::V4(a), len))) => Some(Some((a, len))),
        Some(_) => Some(None),
        None => None,
    };
    let encap_source_v6 = match encap_prefix(report, table, "encap_source_v6", false) {
        Some(Some((IpAddr::V6(a), len))) => Some(Some((a, len))),
        Some(_) => Some(None),
        None => None,
    };
    let midflow_sources = match table.optional_str_array(report, "midflow_sources") {
        Some(list) => {
            let (offset, key) = (list.offset, list.key.clone());
            let prefixes: Vec<_> = list
                .value
                .into_iter()
                .filter_map(|item| match item.value {
                    // Everyone: every mid-flow miss is recorded, as before this setting.
                    "0.0.0.0/0" => Some((IpAddr::from([0u8; 4]), 0)),
                    "::/0" => Some((IpAddr::from([0u8; 16]), 0)),
                    _ => rules::prefix(report, item),
                })
                .collect();
            let max = dataplane_common::MAX_MIDFLOW_SOURCES as usize;
            if prefixes.len() > max {
                report.add(offset, key, format!("lists more than {max} prefixes"));
            }
            prefixes
        }
        None => Vec::new(),
    };
    let new_flow_rate = match table.optional_int(report, "new_flow_rate") {
        Some(v) => rules::in_range(report, v, 0..=i128::from(u32::MAX)),
        None => conntrack_size.map(super::model::default_new_flow_rate),
    };
    let debug = table
        .optional_bool(report, "debug")
        .map(|v| v.value)
        .unwrap_or(defaults.debug);
    Some(DataplaneConfig {
        debug,
        new_flow_rate: new_flow_rate?,
        maglev_table_size: maglev_table_size?,
        conntrack_size: conntrack_size?,
        encap_source_v4: encap_source_v4?,
        encap_source_v6: encap_source_v6?,
        midflow_sources,
    })
}

/// `Some(None)`: not written; `None`: written wrongly (reported).
fn encap_prefix(
    report: &mut Report<'_>,
    table: &Table<'_, '_>,
    name: &str,
    v4: bool,
) -> Option<Option<(IpAddr, u8)>> {
    let Some(value) = table.optional_str(report, name) else {
        return Some(None);
    };
    let (offset, key) = (value.offset, value.key.clone());
    let prefix = rules::prefix(report, value)?;
    if prefix.0.is_ipv4() != v4 {
        let family = if v4 { "IPv4" } else { "IPv6" };
        report.add(offset, key, format!("{name} must be an {family} prefix"));
        return None;
    }
    Some(Some(prefix))
}

/// A service as far as it could be read; `None` fields were reported.
pub(super) struct ServiceDraft {
    pub offset: usize,
    pub path: String,
    pub name: Option<Located<String>>,
    pub vip: Option<Located<IpAddr>>,
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
    pub forwarding: Option<Located<Forwarding>>,
    pub backends: Vec<BackendDraft>,
    pub health: Option<Option<HealthCheckConfig>>,
}

pub(super) struct BackendDraft {
    pub address: Option<Located<IpAddr>>,
    pub weight: Option<u32>,
}

pub(super) fn service(report: &mut Report<'_>, table: &Table<'_, '_>) -> ServiceDraft {
    table.deny_unknown(
        report,
        &[
            "name",
            "vip",
            "port",
            "protocol",
            "forwarding",
            "backend",
            "health",
        ],
    );
    let name = table.required_str(report, "name").and_then(|v| {
        let (offset, key) = (v.offset, v.key.clone());
        rules::service_name(report, v).map(|value| Located { value, offset, key })
    });
    let vip = table
        .required_str(report, "vip")
        .and_then(|v| rules::unicast_ip(report, v));
    let port = match table.optional_int(report, "port") {
        Some(v) => rules::in_range(report, v, 0..=i128::from(crate::limits::L4_MAX_WEIGHT)),
        None => Some(0),
    };
    let protocol = table
        .required_str(report, "protocol")
        .and_then(|v| rules::choice(report, v));
    let forwarding = match table.optional_str(report, "forwarding") {
        Some(v) => {
            let (offset, key) = (v.offset, v.key.clone());
            rules::choice(report, v).map(|value| Located { value, offset, key })
        }
        None => Some(Located {
            value: Forwarding::default(),
            offset: table.offset(),
            key: table.key_path("forwarding"),
        }),
    };

    let health = match table.optional_table(report, "health") {
        Some(t) => super::health::health(report, &t, port).map(Some),
        None => Some(None),
    };

    let mut backends = Vec::new();
    let mut seen: HashMap<IpAddr, usize> = HashMap::new();
    for backend_table in table.array_of_tables(report, "backend") {
        let mut backend = self::backend(report, &backend_table);
        if let Some(address) = &backend.address {
            if let Some(vip) = &vip {
                check_family(report, address, &vip.value);
                if address.value == vip.value {
                    // The balancer would send the packet back to itself.
                    report.add(
                        address.offset,
                        address.key.clone(),
                        format!("{} is the service vip itself", address.value),
                    );
                }
            }
            if let Some(&first) = seen.get(&address.value) {
                let line = report.line_of(first);
                report.add(
                    address.offset,
                    address.key.clone(),
                    format!(
                        "backend {} is already in this service (line {line})",
                        address.value
                    ),
                );
                backend.address = None;
            } else {
                seen.insert(address.value, address.offset);
            }
        }
        backends.push(backend);
    }

    ServiceDraft {
        offset: table.offset(),
        path: table.path().to_owned(),
        name,
        vip,
        port,
        protocol,
        forwarding,
        backends,
        health,
    }
}

fn backend(report: &mut Report<'_>, table: &Table<'_, '_>) -> BackendDraft {
    table.deny_unknown(report, &["address", "weight"]);
    let address = table
        .required_str(report, "address")
        .and_then(|v| rules::unicast_ip(report, v));
    let weight = match table.optional_int(report, "weight") {
        Some(v) => rules::in_range(report, v, 0..=i128::from(crate::limits::L4_MAX_WEIGHT)),
        None => Some(1),
    };
    BackendDraft { address, weight }
}

/// DSR forwards the client's packet unchanged apart from L2, so a host can only receive a VIP
/// of its own family.
fn check_family(report: &mut Report<'_>, address: &Located<IpAddr>, vip: &IpAddr) {
    if address.value.is_ipv4() != vip.is_ipv4() {
        let family = |ip: &IpAddr| if ip.is_ipv4() { "IPv4" } else { "IPv6" };
        report.add(
            address.offset,
            address.key.clone(),
            format!(
                "{} is {} but the service vip {vip} is {}",
                address.value,
                family(&address.value),
                family(vip)
            ),
        );
    }
}

impl BackendDraft {
    pub(super) fn finish(&self) -> Option<BackendConfig> {
        Some(BackendConfig {
            address: self.address.as_ref()?.value,
            weight: self.weight?,
        })
    }
}
