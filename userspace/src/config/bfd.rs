//! `[bfd]`: default timers for every session, and static `[[bfd.peer]]` sessions. Sessions
//! other parts ask for (OSPF neighbours with `bfd = true`) use the defaults.

use std::collections::HashSet;
use std::net::IpAddr;

use serde::Serialize;

use super::model::Choice;
use super::reader::Table;
use super::report::Report;
use super::rules;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BfdConfig {
    pub timers: BfdTimers,
    pub peers: Vec<BfdPeer>,
}

/// Intervals in milliseconds, as FRR's `transmit-interval`, `receive-interval`,
/// `detect-multiplier` (defaults 300, 300, 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BfdTimers {
    pub min_tx_ms: u32,
    pub min_rx_ms: u32,
    pub multiplier: u8,
}

impl Default for BfdTimers {
    fn default() -> Self {
        Self {
            min_tx_ms: 300,
            min_rx_ms: 300,
            multiplier: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BfdPeer {
    pub address: IpAddr,
    pub interface: String,
    pub timers: BfdTimers,
    #[serde(skip)]
    pub auth: Option<BfdAuth>,
}

/// The key never reaches `Debug` output, logs or `/status`.
#[derive(Clone, PartialEq, Eq)]
pub struct BfdAuth {
    pub kind: BfdAuthKind,
    pub key_id: u8,
    pub key: String,
}

impl std::fmt::Debug for BfdAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BfdAuth")
            .field("kind", &self.kind)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BfdAuthKind {
    Simple,
    KeyedMd5,
    MeticulousMd5,
    KeyedSha1,
    MeticulousSha1,
}

impl Choice for BfdAuthKind {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("simple", BfdAuthKind::Simple),
        ("keyed-md5", BfdAuthKind::KeyedMd5),
        ("meticulous-md5", BfdAuthKind::MeticulousMd5),
        ("keyed-sha1", BfdAuthKind::KeyedSha1),
        ("meticulous-sha1", BfdAuthKind::MeticulousSha1),
    ];
}

/// Intervals RFC 5880 allows are microseconds in 32 bits; 10 ms is as fast as a userspace
/// sender here keeps time, 60 s as slow as is useful.
const INTERVAL_MS: std::ops::RangeInclusive<i128> = 10..=60_000;

fn timers(report: &mut Report<'_>, table: &Table<'_, '_>, base: BfdTimers) -> Option<BfdTimers> {
    let tx = rules::int_or(report, table, "min_tx_ms", INTERVAL_MS, base.min_tx_ms);
    let rx = rules::int_or(report, table, "min_rx_ms", INTERVAL_MS, base.min_rx_ms);
    let mult = rules::int_or(report, table, "multiplier", 1..=255, base.multiplier);
    Some(BfdTimers {
        min_tx_ms: tx?,
        min_rx_ms: rx?,
        multiplier: mult?,
    })
}

pub(super) fn section(report: &mut Report<'_>, table: &Table<'_, '_>) -> Option<BfdConfig> {
    table.deny_unknown(report, &["min_tx_ms", "min_rx_ms", "multiplier", "peer"]);
    let defaults = timers(report, table, BfdTimers::default());
    let mut seen = HashSet::new();
    let peers: Vec<Option<BfdPeer>> = table
        .array_of_tables(report, "peer")
        .iter()
        .map(|t| peer(report, t, defaults.unwrap_or_default(), &mut seen))
        .collect();
    Some(BfdConfig {
        timers: defaults?,
        peers: peers.into_iter().collect::<Option<_>>()?,
    })
}

fn peer(
    report: &mut Report<'_>,
    t: &Table<'_, '_>,
    defaults: BfdTimers,
    seen: &mut HashSet<(IpAddr, String)>,
) -> Option<BfdPeer> {
    t.deny_unknown(
        report,
        &[
            "address",
            "interface",
            "min_tx_ms",
            "min_rx_ms",
            "multiplier",
            "auth",
            "key_id",
            "key",
        ],
    );
    let address = t
        .required_str(report, "address")
        .and_then(|v| rules::unicast_ip(report, v));
    let interface = t
        .required_str(report, "interface")
        .and_then(|v| rules::interface_name(report, v));
    let timers = timers(report, t, defaults);
    let kind = t
        .optional_str(report, "auth")
        .map(|v| rules::choice::<BfdAuthKind>(report, v));
    let key_id = rules::int_or(report, t, "key_id", 0..=255, 1u8);
    let key = t.optional_str(report, "key");
    let auth = match (kind, key) {
        (None, None) => Some(None),
        (Some(kind), Some(key)) => {
            let max = match kind {
                Some(BfdAuthKind::KeyedSha1 | BfdAuthKind::MeticulousSha1) => 20,
                _ => 16,
            };
            if key.value.is_empty() || key.value.len() > max {
                report.add(
                    key.offset,
                    key.key.clone(),
                    format!("must be 1 to {max} bytes for this authentication type"),
                );
                None
            } else {
                Some(Some(BfdAuth {
                    kind: kind?,
                    key_id: key_id?,
                    key: key.value.to_string(),
                }))
            }
        }
        (Some(_), None) => {
            report.add(
                t.offset(),
                t.key_path("key"),
                "missing key: auth needs a key",
            );
            None
        }
        (None, Some(key)) => {
            report.add(
                key.offset,
                key.key.clone(),
                "a key without auth (simple, keyed-md5, meticulous-md5, keyed-sha1, meticulous-sha1)",
            );
            None
        }
    };
    let (address, interface) = (address?, interface?);
    if !seen.insert((address.value, interface.clone())) {
        report.add(
            address.offset,
            address.key,
            format!("{} on {interface} is already a peer", address.value),
        );
        return None;
    }
    Some(BfdPeer {
        address: address.value,
        interface,
        timers: timers?,
        auth: auth?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{FILE, assert_one};
    use super::super::*;

    const BASE: &str = "[node]\nname = \"lb1\"\n[bfd]\nmin_tx_ms = 50\nmin_rx_ms = 50\n";

    #[test]
    fn defaults_and_peers() {
        let c = parse(
            &format!(
                "{BASE}  [[bfd.peer]]\n  address = \"10.0.0.1\"\n  interface = \"eth0\"\n  multiplier = 5\n  auth = \"meticulous-sha1\"\n  key = \"portier-lab\"\n"
            ),
            FILE,
        )
        .unwrap();
        let b = c.bfd.unwrap();
        assert_eq!(
            b.timers,
            BfdTimers {
                min_tx_ms: 50,
                min_rx_ms: 50,
                multiplier: 3
            }
        );
        let p = &b.peers[0];
        assert_eq!(
            (p.timers.min_tx_ms, p.timers.multiplier),
            (50, 5),
            "peer timers start from the section's"
        );
        let auth = p.auth.as_ref().unwrap();
        assert_eq!((auth.kind, auth.key_id), (BfdAuthKind::MeticulousSha1, 1));
        assert!(!format!("{p:?}").contains("portier-lab"));
        let plain = parse("[node]\nname = \"lb1\"\n[bfd]\n", FILE).unwrap();
        assert_eq!(plain.bfd.unwrap().timers, BfdTimers::default());
    }

    #[test]
    fn problems_name_their_keys() {
        assert_one(
            &format!("{BASE}multiplier = 0\n"),
            6,
            "bfd.multiplier",
            "1..=255",
        );
        assert_one(
            &format!("{BASE}min_tx_ms = 5\n").replacen("min_tx_ms = 50\n", "", 1),
            5,
            "bfd.min_tx_ms",
            "10..=60000",
        );
        let peer = "  [[bfd.peer]]\n  address = \"10.0.0.1\"\n  interface = \"eth0\"\n";
        assert_one(
            &format!("{BASE}{peer}  auth = \"keyed-md5\"\n  key = \"12345678901234567\"\n"),
            10,
            "bfd.peer[0].key",
            "1 to 16 bytes",
        );
        assert_one(
            &format!("{BASE}{peer}  auth = \"md5\"\n  key = \"k\"\n"),
            9,
            "bfd.peer[0].auth",
            "keyed-md5",
        );
        assert_one(
            &format!("{BASE}{peer}  key = \"k\"\n"),
            9,
            "bfd.peer[0].key",
            "without auth",
        );
        assert_one(
            &format!("{BASE}{peer}{peer}"),
            10,
            "bfd.peer[1].address",
            "already a peer",
        );
    }
}
