//! The `[vrrp]` section: `[[vrrp.instance]]` tables, each a virtual router sharing VIPs with
//! other nodes, with optional `[[vrrp.instance.track]]` objects that lower its priority.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use super::reader::{Located, Table};
use super::report::Report;
use super::rules;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VrrpConfig {
    pub instances: Vec<VrrpInstanceConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum VrrpVersion {
    V2,
    V3,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VrrpInstanceConfig {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    /// Configured priority; 255 means this node owns the VIPs.
    pub priority: u8,
    pub version: VrrpVersion,
    /// Advertisement interval in centiseconds, the protocol's unit.
    pub advert_interval_cs: u16,
    pub preempt: bool,
    pub preempt_delay_ms: u32,
    /// Whether the master accepts packets to VIPs it does not own (RFC 5798 Accept_Mode).
    /// Off: nftables drops them while master below priority 255 (keepalived's no_accept).
    pub accept: bool,
    pub vips: Vec<IpAddr>,
    /// Empty: multicast to 224.0.0.18 / ff02::12.
    pub unicast_peers: Vec<IpAddr>,
    /// IPv4 VRRPv3 checksum over the pseudo-header too (RFC 5798; keepalived and FRR do).
    pub checksum_pseudo_header: bool,
    /// Gratuitous ARPs / unsolicited NAs sent on becoming master...
    pub garp_burst: u32,
    /// ...and again this long after (0: no repeat).
    pub garp_repeat_delay_ms: u32,
    /// Own the VIPs with 00-00-5E-00-01-{VRID} (IPv4) / 00-00-5E-00-02-{VRID} (IPv6) on a
    /// macvlan `vrrp.{VRID}` / `vrrp6.{VRID}` instead of the interface's MAC.
    pub virtual_mac: bool,
    pub track: Vec<TrackConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackConfig {
    pub target: TrackTarget,
    /// Subtracted from the priority while the target is down.
    pub weight: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackTarget {
    /// Down when the link is not up.
    Interface(String),
    /// Down when the service has no healthy backend.
    Service(String),
}

const MAX_VIPS: usize = 20;
const MAX_PREEMPT_DELAY_MS: i128 = 3_600_000;
const MAX_GARP_BURST: i128 = 100;
const MAX_GARP_REPEAT_MS: i128 = 600_000;

/// An instance as read, with what the cross-checks need kept located.
pub(super) struct InstanceDraft {
    name: Option<Located<String>>,
    interface: Option<String>,
    vrid: Option<Located<u8>>,
    priority: Option<u8>,
    version: Option<VrrpVersion>,
    advert_interval_cs: Option<u16>,
    preempt: Option<bool>,
    preempt_delay_ms: Option<u32>,
    accept: Option<bool>,
    vips: Option<Vec<IpAddr>>,
    unicast_peers: Option<Vec<IpAddr>>,
    checksum_pseudo_header: Option<bool>,
    garp_burst: Option<u32>,
    garp_repeat_delay_ms: Option<u32>,
    virtual_mac: Option<bool>,
    track: Vec<Option<(TrackConfig, Option<Located<String>>)>>,
}

pub(super) fn section(report: &mut Report<'_>, table: &Table<'_, '_>) -> Vec<InstanceDraft> {
    table.deny_unknown(report, &["instance"]);
    table
        .array_of_tables(report, "instance")
        .iter()
        .map(|t| instance(report, t))
        .collect()
}

fn bool_or(report: &mut Report<'_>, table: &Table<'_, '_>, name: &str, default: bool) -> bool {
    table
        .optional_bool(report, name)
        .map_or(default, |v| v.value)
}

fn int_or<T: TryFrom<i128>>(
    report: &mut Report<'_>,
    table: &Table<'_, '_>,
    name: &str,
    range: std::ops::RangeInclusive<i128>,
    default: T,
) -> Option<T> {
    match table.optional_int(report, name) {
        Some(v) => rules::in_range(report, v, range),
        None => Some(default),
    }
}

fn instance(report: &mut Report<'_>, table: &Table<'_, '_>) -> InstanceDraft {
    table.deny_unknown(
        report,
        &[
            "name",
            "interface",
            "vrid",
            "priority",
            "version",
            "advert_interval_ms",
            "preempt",
            "preempt_delay_ms",
            "accept",
            "vips",
            "unicast_peers",
            "checksum_pseudo_header",
            "garp_burst",
            "garp_repeat_delay_ms",
            "virtual_mac",
            "track",
        ],
    );
    let name = table.required_str(report, "name").and_then(|v| {
        let (offset, key) = (v.offset, v.key.clone());
        rules::service_name(report, v).map(|value| Located { value, offset, key })
    });
    let interface = table
        .required_str(report, "interface")
        .and_then(|v| rules::interface_name(report, v));
    let vrid = match table.optional_int(report, "vrid") {
        Some(v) => {
            let (offset, key) = (v.offset, v.key.clone());
            rules::in_range(report, v, 1..=255).map(|value| Located { value, offset, key })
        }
        None => {
            report.add(
                table.offset(),
                table.key_path("vrid"),
                "missing required key",
            );
            None
        }
    };
    let priority = int_or(report, table, "priority", 1..=255, 100u8);
    let version = match table.optional_int(report, "version") {
        Some(v) if v.value == 2 => Some(VrrpVersion::V2),
        Some(v) if v.value == 3 => Some(VrrpVersion::V3),
        Some(v) => {
            report.add(
                v.offset,
                v.key,
                format!("unknown VRRP version {} (allowed: 2, 3)", v.value),
            );
            None
        }
        None => Some(VrrpVersion::V3),
    };
    let advert_interval_cs = interval(report, table, version);
    let preempt = Some(bool_or(report, table, "preempt", true));
    let preempt_delay_ms = int_or(
        report,
        table,
        "preempt_delay_ms",
        0..=MAX_PREEMPT_DELAY_MS,
        0u32,
    );
    // On by default: a node that serves the VIPs (XDP aside, the L7 proxy) must accept
    // their traffic while master.
    let accept = Some(bool_or(report, table, "accept", true));
    let vips = addresses(report, table, "vips", true, version)
        .map(|list| list.into_iter().map(|a| a.value).collect::<Vec<_>>());
    let family = vips
        .as_ref()
        .and_then(|v| v.first())
        .map(|first| first.is_ipv4());
    let unicast_peers = addresses(report, table, "unicast_peers", false, version).map(|peers| {
        let mut same = Vec::new();
        for peer in peers {
            match family {
                Some(v4) if peer.value.is_ipv4() != v4 => report.add(
                    peer.offset,
                    peer.key,
                    format!(
                        "{} is not of the vips' family ({})",
                        peer.value,
                        if v4 { "IPv4" } else { "IPv6" }
                    ),
                ),
                _ => same.push(peer.value),
            }
        }
        same
    });
    let checksum_pseudo_header = Some(bool_or(report, table, "checksum_pseudo_header", true));
    let garp_burst = int_or(report, table, "garp_burst", 0..=MAX_GARP_BURST, 5u32);
    let garp_repeat_delay_ms = int_or(
        report,
        table,
        "garp_repeat_delay_ms",
        0..=MAX_GARP_REPEAT_MS,
        2000u32,
    );
    let virtual_mac = Some(bool_or(report, table, "virtual_mac", false));
    let track = table
        .array_of_tables(report, "track")
        .iter()
        .map(|t| track(report, t))
        .collect();
    InstanceDraft {
        name,
        interface,
        vrid,
        priority,
        version,
        advert_interval_cs,
        preempt,
        preempt_delay_ms,
        accept,
        vips,
        unicast_peers,
        checksum_pseudo_header,
        garp_burst,
        garp_repeat_delay_ms,
        virtual_mac,
        track,
    }
}

/// v3 carries centiseconds in 12 bits; v2 carries whole seconds in 8 bits.
fn interval(
    report: &mut Report<'_>,
    table: &Table<'_, '_>,
    version: Option<VrrpVersion>,
) -> Option<u16> {
    let Some(v) = table.optional_int(report, "advert_interval_ms") else {
        return Some(100);
    };
    let (step, max) = match version {
        Some(VrrpVersion::V2) => (1000, 255_000),
        _ => (10, 40_950),
    };
    let (offset, key, value) = (v.offset, v.key.clone(), v.value);
    let ms: u32 = rules::in_range(report, v, step..=max)?;
    if value % step != 0 {
        let unit = if step == 1000 {
            "whole seconds with VRRPv2"
        } else {
            "a multiple of 10 ms (centiseconds)"
        };
        report.add(offset, key, format!("{value} ms is not {unit}"));
        return None;
    }
    u16::try_from(ms / 10).ok()
}

fn addresses(
    report: &mut Report<'_>,
    table: &Table<'_, '_>,
    name: &str,
    required: bool,
    version: Option<VrrpVersion>,
) -> Option<Vec<Located<IpAddr>>> {
    let Some(list) = table.optional_str_array(report, name) else {
        if required && !table.has(name) {
            report.add(table.offset(), table.key_path(name), "missing required key");
            return None;
        }
        return if required { None } else { Some(Vec::new()) };
    };
    if required && list.value.is_empty() && table.array_len(name) == Some(0) {
        report.add(
            list.offset,
            list.key.clone(),
            "must list at least one address",
        );
        return None;
    }
    if list.value.len() > MAX_VIPS {
        report.add(
            list.offset,
            list.key.clone(),
            format!(
                "{} addresses, at most {MAX_VIPS} fit an advertisement",
                list.value.len()
            ),
        );
        return None;
    }
    let mut out = Vec::new();
    let mut first_family: Option<bool> = None;
    for address in rules::unique_ips(report, list.value) {
        if version == Some(VrrpVersion::V2) && address.value.is_ipv6() {
            report.add(
                address.offset,
                address.key,
                format!(
                    "{} is IPv6, which VRRPv2 does not carry (use version = 3)",
                    address.value
                ),
            );
            continue;
        }
        let v4 = address.value.is_ipv4();
        if name == "vips" && *first_family.get_or_insert(v4) != v4 {
            report.add(
                address.offset,
                address.key,
                format!(
                    "{} mixes address families: an instance is IPv4 or IPv6 (use two instances)",
                    address.value
                ),
            );
            continue;
        }
        out.push(address);
    }
    Some(out)
}

fn track(
    report: &mut Report<'_>,
    table: &Table<'_, '_>,
) -> Option<(TrackConfig, Option<Located<String>>)> {
    table.deny_unknown(report, &["interface", "service", "weight"]);
    let interface = table
        .optional_str(report, "interface")
        .and_then(|v| rules::interface_name(report, v));
    let service = table.optional_str(report, "service");
    let weight = match table.optional_int(report, "weight") {
        Some(v) => rules::in_range::<u8>(report, v, 1..=254),
        None => {
            report.add(
                table.offset(),
                table.key_path("weight"),
                "missing required key",
            );
            None
        }
    };
    let written = (table.has("interface"), table.has("service"));
    if written.0 == written.1 {
        report.add(
            table.offset(),
            table.path(),
            "a track names exactly one of `interface` or `service`",
        );
        return None;
    }
    let (target, service) = match (interface, service) {
        (Some(i), None) => (TrackTarget::Interface(i), None),
        (None, Some(s)) => (
            TrackTarget::Service(s.value.to_owned()),
            Some(Located {
                value: s.value.to_owned(),
                offset: s.offset,
                key: s.key,
            }),
        ),
        _ => return None,
    };
    Some((
        TrackConfig {
            target,
            weight: weight?,
        },
        service,
    ))
}

/// Uniqueness across instances, and tracked services that exist.
pub(super) fn check(report: &mut Report<'_>, instances: &[InstanceDraft], services: &[&str]) {
    let mut names = rules::FirstSeen::new();
    let mut routers: HashMap<(&str, u8, bool), usize> = HashMap::new();
    for instance in instances {
        if let Some(name) = &instance.name {
            names.first(report, name.value.as_str(), name, |line| {
                format!(
                    "instance name \"{}\" is already used (line {line})",
                    name.value
                )
            });
        }
        let family = instance
            .vips
            .as_ref()
            .and_then(|v| v.first())
            .map(IpAddr::is_ipv4);
        if let (Some(interface), Some(vrid), Some(v4)) =
            (&instance.interface, &instance.vrid, family)
        {
            let router = (interface.as_str(), vrid.value, v4);
            if let Some(&first) = routers.get(&router) {
                let line = report.line_of(first);
                report.add(
                    vrid.offset,
                    vrid.key.clone(),
                    format!(
                        "VRID {} on {interface} is already used by another instance of the same family (line {line})",
                        vrid.value
                    ),
                );
            } else {
                routers.insert(router, vrid.offset);
            }
        }
        for (_, service) in instance.track.iter().flatten() {
            if let Some(service) = service
                && !services.contains(&service.value.as_str())
            {
                report.add(
                    service.offset,
                    service.key.clone(),
                    format!("no service is named \"{}\"", service.value),
                );
            }
        }
    }
}

impl InstanceDraft {
    pub(super) fn finish(self) -> Option<VrrpInstanceConfig> {
        Some(VrrpInstanceConfig {
            name: self.name?.value,
            interface: self.interface?,
            vrid: self.vrid?.value,
            priority: self.priority?,
            version: self.version?,
            advert_interval_cs: self.advert_interval_cs?,
            preempt: self.preempt?,
            preempt_delay_ms: self.preempt_delay_ms?,
            accept: self.accept?,
            vips: self.vips?,
            unicast_peers: self.unicast_peers?,
            checksum_pseudo_header: self.checksum_pseudo_header?,
            garp_burst: self.garp_burst?,
            garp_repeat_delay_ms: self.garp_repeat_delay_ms?,
            virtual_mac: self.virtual_mac?,
            track: self
                .track
                .into_iter()
                .map(|t| t.map(|(track, _)| track))
                .collect::<Option<_>>()?,
        })
    }
}

#[cfg(test)]
#[path = "vrrp_tests.rs"]
mod tests;
