//! `[decap]` (a host behind IPIP services runs the decapsulator) and the rule that IPIP
//! services have an outer source prefix of their family.

use std::net::IpAddr;

use super::model::{DataplaneConfig, DecapConfig, Forwarding};
use super::reader::{Located, Table};
use super::report::Report;
use super::rules;
use super::sections::ServiceDraft;

pub(super) fn section(report: &mut Report<'_>, table: &Table<'_, '_>) -> Option<DecapConfig> {
    table.deny_unknown(report, &["interfaces", "addresses", "sources", "vips"]);
    for (key, what) in [
        (
            "sources",
            "the balancers' outer source prefixes ([dataplane] encap_source_v4/v6 on the balancers); tunnels from elsewhere are dropped",
        ),
        (
            "vips",
            "the VIPs this host serves; tunnelled packets to other addresses are dropped",
        ),
    ] {
        if !table.has(key) {
            report.add(
                table.offset(),
                table.key_path(key),
                format!("missing key: {what}"),
            );
        }
    }
    if !table.has("interfaces") {
        report.add(
            table.offset(),
            table.key_path("interfaces"),
            "missing key: the interfaces the decapsulator attaches to",
        );
    }
    if !table.has("addresses") {
        report.add(
            table.offset(),
            table.key_path("addresses"),
            "missing key: the host's tunnel addresses (its backend address in the balancers' services)",
        );
    }
    let interfaces = table.optional_str_array(report, "interfaces").map(|list| {
        if list.value.is_empty() && table.array_len("interfaces") == Some(0) {
            report.add(list.offset, list.key.clone(), "lists no interface");
        }
        rules::interface_names(report, list.value)
    });
    let addresses = table.optional_str_array(report, "addresses").map(|list| {
        if list.value.is_empty() && table.array_len("addresses") == Some(0) {
            report.add(list.offset, list.key.clone(), "lists no address");
        }
        addresses_of(rules::unique_ips(report, list.value))
    });
    let sources = table.optional_str_array(report, "sources").map(|list| {
        if list.value.is_empty() && table.array_len("sources") == Some(0) {
            report.add(list.offset, list.key.clone(), "lists no prefix");
        }
        list.value
            .into_iter()
            .filter_map(|item| rules::prefix(report, item))
            .collect::<Vec<_>>()
    });
    let vips = table.optional_str_array(report, "vips").map(|list| {
        if list.value.is_empty() && table.array_len("vips") == Some(0) {
            report.add(list.offset, list.key.clone(), "lists no VIP");
        }
        addresses_of(rules::unique_ips(report, list.value))
    });
    Some(DecapConfig {
        interfaces: interfaces?,
        addresses: addresses?,
        sources: sources?,
        vips: vips?,
    })
}

fn addresses_of(list: Vec<Located<IpAddr>>) -> Vec<IpAddr> {
    list.into_iter().map(|a| a.value).collect()
}

/// An IPIP service's packets leave with an outer source from `[dataplane]`; without one of
/// its family the balancer would drop them all.
pub(super) fn check_sources(
    report: &mut Report<'_>,
    services: &[ServiceDraft],
    dataplane: &DataplaneConfig,
) {
    for s in services {
        let (Some(forwarding), Some(vip)) = (&s.forwarding, &s.vip) else {
            continue;
        };
        if forwarding.value != Forwarding::Ipip {
            continue;
        }
        let (missing, key) = match vip.value {
            IpAddr::V4(_) => (dataplane.encap_source_v4.is_none(), "encap_source_v4"),
            IpAddr::V6(_) => (dataplane.encap_source_v6.is_none(), "encap_source_v6"),
        };
        if missing {
            report.add(
                forwarding.offset,
                forwarding.key.clone(),
                format!(
                    "forwarding = \"ipip\" for vip {} needs [dataplane] {key} (the outer source prefix)",
                    vip.value
                ),
            );
        }
    }
}
