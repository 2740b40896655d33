//! Rules that span sections: uniqueness across services and the dataplane's map limits.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use dataplane_common::{MAX_BACKENDS, MAX_SERVICES};

use super::model::Protocol;
use super::report::Report;
use super::rules;
use super::sections::{NodeDraft, ServiceDraft};

pub(super) fn services(report: &mut Report<'_>, services: &[ServiceDraft]) {
    if let Some(extra) = services.get(MAX_SERVICES as usize) {
        report.add(
            extra.offset,
            extra.path.clone(),
            format!(
                "{} services configured, at most {MAX_SERVICES} are supported",
                services.len()
            ),
        );
    }

    let mut names = rules::FirstSeen::new();
    // A port-0 service and a specific-port one on the same VIP may coexist (exact port wins),
    // so the key includes the port as written.
    let mut listeners: HashMap<(IpAddr, u16, Protocol), (&str, usize)> = HashMap::new();
    for service in services {
        if let Some(name) = &service.name {
            names.first(report, name.value.as_str(), name, |line| {
                format!(
                    "service name \"{}\" is already used (line {line})",
                    name.value
                )
            });
        }
        if let (Some(vip), Some(port), Some(protocol)) =
            (&service.vip, service.port, service.protocol)
        {
            let listener = (vip.value, port, protocol);
            let this = service.name.as_ref().map_or("", |n| n.value.as_str());
            if let Some(&(other, first)) = listeners.get(&listener) {
                let line = report.line_of(first);
                let protocol = match protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                };
                let port = if port == 0 {
                    "every port".to_owned()
                } else {
                    format!("port {port}")
                };
                report.add(
                    vip.offset,
                    vip.key.clone(),
                    format!(
                        "{} {port}/{protocol} is already served by service \"{other}\" (line {line})",
                        vip.value
                    ),
                );
            } else {
                listeners.insert(listener, (this, vip.offset));
            }
        }
    }

    let mut addresses: HashSet<IpAddr> = HashSet::new();
    let over_limit = services
        .iter()
        .flat_map(|s| &s.backends)
        .filter_map(|b| b.address.as_ref())
        .find(|a| addresses.insert(a.value) && addresses.len() > MAX_BACKENDS as usize);
    if let Some(address) = over_limit {
        report.add(
            address.offset,
            address.key.clone(),
            format!("more than {MAX_BACKENDS} distinct backend addresses in total"),
        );
    }
}

/// Without an interface the balancer has nowhere to attach, so services would silently not
/// be served.
pub(super) fn interfaces(report: &mut Report<'_>, node: &NodeDraft, services: &[ServiceDraft]) {
    if services.is_empty() {
        return;
    }
    if !node.interfaces_written {
        report.add(
            node.offset,
            "node.interfaces",
            "missing required key (needed when services are configured)",
        );
    } else if let Some(list) = node
        .interfaces
        .as_ref()
        .filter(|_| node.interfaces_listed == 0)
    {
        report.add(
            list.offset,
            list.key.clone(),
            "must list at least one interface when services are configured",
        );
    }
}
