//! Value rules shared by the section readers: ranges, names, addresses, enumerations.

use std::net::IpAddr;
use std::ops::RangeInclusive;

use super::model::{Choice, Cidr};
use super::reader::Located;
use super::report::Report;

pub(super) fn in_range<T: TryFrom<i128>>(
    report: &mut Report<'_>,
    value: Located<i128>,
    range: RangeInclusive<i128>,
) -> Option<T> {
    let converted = range
        .contains(&value.value)
        .then(|| T::try_from(value.value).ok())
        .flatten();
    if converted.is_none() {
        report.add(
            value.offset,
            value.key,
            format!(
                "{} is out of range {}..={}",
                value.value,
                range.start(),
                range.end()
            ),
        );
    }
    converted
}

pub(super) fn choice<T: Choice>(report: &mut Report<'_>, value: Located<&str>) -> Option<T> {
    let chosen = T::from_name(value.value);
    if chosen.is_none() {
        let allowed: Vec<&str> = T::CHOICES.iter().map(|(name, _)| *name).collect();
        report.add(
            value.offset,
            value.key,
            format!(
                "unknown value \"{}\" (allowed: {})",
                value.value,
                allowed.join(", ")
            ),
        );
    }
    chosen
}

/// A unicast address: the unspecified and multicast ranges can be neither a VIP nor a host.
pub(super) fn unicast_ip(report: &mut Report<'_>, value: Located<&str>) -> Option<Located<IpAddr>> {
    let Ok(address) = value.value.parse::<IpAddr>() else {
        report.add(
            value.offset,
            value.key,
            format!("\"{}\" is not an IP address", value.value),
        );
        return None;
    };
    if address.is_unspecified() || address.is_multicast() {
        let kind = if address.is_multicast() {
            "multicast"
        } else {
            "unspecified"
        };
        report.add(
            value.offset,
            value.key,
            format!("{address} is a {kind} address"),
        );
        return None;
    }
    Some(Located {
        value: address,
        offset: value.offset,
        key: value.key,
    })
}

/// `address/length`, e.g. `10.255.0.0/24`; the length fits the family.
pub(super) fn prefix(report: &mut Report<'_>, value: Located<&str>) -> Option<(IpAddr, u8)> {
    let parsed = value.value.split_once('/').and_then(|(a, l)| {
        let address = a.parse::<IpAddr>().ok()?;
        let len = l.parse::<u8>().ok()?;
        let width = if address.is_ipv4() { 32 } else { 128 };
        (len <= width).then_some((address, len))
    });
    match parsed {
        Some((address, _)) if address.is_unspecified() || address.is_multicast() => {
            report.add(
                value.offset,
                value.key,
                format!("{address} cannot be a source address"),
            );
            None
        }
        Some(p) => Some(p),
        None => {
            report.add(
                value.offset,
                value.key,
                format!(
                    "\"{}\" is not an address/length prefix (e.g. 10.255.0.0/24)",
                    value.value
                ),
            );
            None
        }
    }
}

/// Checks `value` against a character class and a length; `what` describes both for the
/// message.
pub(super) fn name(
    report: &mut Report<'_>,
    value: Located<&str>,
    max_len: usize,
    allowed: impl Fn(char) -> bool,
    what: &str,
) -> Option<String> {
    let len = value.value.chars().count();
    if (1..=max_len).contains(&len) && value.value.chars().all(allowed) {
        return Some(value.value.to_owned());
    }
    report.add(
        value.offset,
        value.key,
        format!(
            "\"{}\" must be 1 to {max_len} characters from {what}",
            value.value
        ),
    );
    None
}

pub(super) fn node_name(report: &mut Report<'_>, value: Located<&str>) -> Option<String> {
    // It becomes a directory under /sys/fs/bpf/portier/, so keep it to a portable set.
    name(
        report,
        value,
        32,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
        "a-z, 0-9 and '-'",
    )
}

pub(super) fn service_name(report: &mut Report<'_>, value: Located<&str>) -> Option<String> {
    name(
        report,
        value,
        64,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
        "A-Z, a-z, 0-9, '_', '.' and '-'",
    )
}

/// The kernel's own rule (`dev_valid_name`): under IFNAMSIZ, no '/', ':' or whitespace.
pub(super) fn interface_name(report: &mut Report<'_>, value: Located<&str>) -> Option<String> {
    let text = value.value;
    let valid = (1..=15).contains(&text.len())
        && text != "."
        && text != ".."
        && !text
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if valid {
        return Some(text.to_owned());
    }
    report.add(
        value.offset,
        value.key,
        format!("\"{text}\" is not an interface name (1 to 15 bytes, no '/', ':' or whitespace)"),
    );
    None
}

/// A list of interface names: each valid, none twice (a repeat names the first one's line).
pub(super) fn interface_names(report: &mut Report<'_>, items: Vec<Located<&str>>) -> Vec<String> {
    let mut seen = FirstSeen::new();
    let mut names = Vec::new();
    for item in items {
        let repeat = |line| {
            format!(
                "interface \"{}\" is already listed (line {line})",
                item.value
            )
        };
        if !seen.first(report, item.value, &item, repeat) {
            continue;
        }
        if let Some(name) = interface_name(report, item) {
            names.push(name);
        }
    }
    names
}

/// `address/length`; unlike a source prefix, `0.0.0.0/0` is a fine thing to allow.
pub(super) fn cidr(report: &mut Report<'_>, value: Located<&str>) -> Option<Cidr> {
    let parsed = value.value.split_once('/').and_then(|(a, l)| {
        let address = a.parse::<IpAddr>().ok()?;
        let len = l.parse::<u8>().ok()?;
        let width = if address.is_ipv4() { 32 } else { 128 };
        (len <= width).then_some(Cidr { address, len })
    });
    if parsed.is_none() {
        report.add(
            value.offset,
            value.key,
            format!(
                "\"{}\" is not an address/length prefix (e.g. 10.0.0.0/8)",
                value.value
            ),
        );
    }
    parsed
}

/// An optional integer key in `range`, else `default`.
pub(super) fn int_or<T: TryFrom<i128>>(
    report: &mut Report<'_>,
    table: &super::reader::Table<'_, '_>,
    key: &str,
    range: RangeInclusive<i128>,
    default: T,
) -> Option<T> {
    match table.optional_int(report, key) {
        Some(v) => in_range(report, v, range),
        None => Some(default),
    }
}

/// Where each value was first written, so that a repeat is reported with the first one's line.
pub(super) struct FirstSeen<K>(std::collections::HashMap<K, usize>);

impl<K: std::hash::Hash + Eq> FirstSeen<K> {
    pub(super) fn new() -> FirstSeen<K> {
        FirstSeen(std::collections::HashMap::new())
    }

    /// `true` the first time `value` is seen; a repeat is reported at `at` with `message`
    /// given the first one's line.
    pub(super) fn first<T>(
        &mut self,
        report: &mut Report<'_>,
        value: K,
        at: &Located<T>,
        message: impl FnOnce(usize) -> String,
    ) -> bool {
        if let Some(&first) = self.0.get(&value) {
            let line = report.line_of(first);
            report.add(at.offset, at.key.clone(), message(line));
            return false;
        }
        self.0.insert(value, at.offset);
        true
    }
}

/// Names that must be unique among `what`s (pools, listeners, instances...).
pub(super) fn unique_names<'a>(
    report: &mut Report<'_>,
    names: impl IntoIterator<Item = &'a Located<String>>,
    what: &str,
) {
    let mut seen = FirstSeen::new();
    for name in names {
        seen.first(report, name.value.as_str(), name, |line| {
            format!(
                "{what} name \"{}\" is already used (line {line})",
                name.value
            )
        });
    }
}

/// A list of unicast addresses, none twice.
pub(super) fn unique_ips(
    report: &mut Report<'_>,
    items: Vec<Located<&str>>,
) -> Vec<Located<IpAddr>> {
    let mut seen = FirstSeen::new();
    let mut out = Vec::new();
    for item in items {
        let Some(address) = unicast_ip(report, item) else {
            continue;
        };
        if seen.first(report, address.value, &address, |line| {
            format!("{} is already listed (line {line})", address.value)
        }) {
            out.push(address);
        }
    }
    out
}

/// An optional list of address/length prefixes (empty when absent); `None` if one is bad.
pub(super) fn cidrs(
    report: &mut Report<'_>,
    table: &super::reader::Table<'_, '_>,
    key: &str,
) -> Option<Vec<Cidr>> {
    match table.optional_str_array(report, key) {
        None => Some(Vec::new()),
        Some(items) => items
            .value
            .into_iter()
            .map(|item| cidr(report, item))
            .collect::<Vec<_>>()
            .into_iter()
            .collect(),
    }
}

/// `bfd = true` of a routing neighbour: only where the BFD part runs the sessions.
pub(super) fn bfd_flag(
    report: &mut Report<'_>,
    table: &super::reader::Table<'_, '_>,
    bfd_runs: bool,
) -> Option<bool> {
    match table.optional_bool(report, "bfd") {
        Some(v) if v.value && !bfd_runs => {
            report.add(
                v.offset,
                v.key,
                "needs a [bfd] section (the BFD part runs the sessions)",
            );
            None
        }
        Some(v) => Some(v.value),
        None => Some(false),
    }
}

/// An announcement's `policy`; `healthy` follows a service's health, so its VIP needs one.
pub(super) fn announce_policy(
    report: &mut Report<'_>,
    table: &super::reader::Table<'_, '_>,
    vip: Option<IpAddr>,
    service_vips: &[IpAddr],
) -> Option<super::ospf::AnnouncePolicy> {
    use super::ospf::AnnouncePolicy;
    let v = table.required_str(report, "policy")?;
    let (offset, key) = (v.offset, v.key.clone());
    let p = choice::<AnnouncePolicy>(report, v)?;
    if p == AnnouncePolicy::Healthy
        && let Some(vip) = vip
        && !service_vips.contains(&vip)
    {
        report.add(
            offset,
            key,
            format!("policy \"healthy\" needs a [[service]] on {vip}"),
        );
        return None;
    }
    Some(p)
}
