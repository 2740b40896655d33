//! `[bgp]`: our AS and router ID, the peers (edge routers) and which VIPs are announced
//! when, with the same policies as OSPF.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

use super::ospf::AnnouncePolicy;
use super::reader::{Located, Table};
use super::report::Report;
use super::rules;
use crate::bgp::{Community, LargeCommunity};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpConfig {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Where passive peers connect to (port 179 of a local address).
    pub listen: Vec<SocketAddr>,
    pub peers: Vec<BgpPeer>,
    pub announce: Vec<BgpAnnounce>,
    /// On a clean stop, first re-announce every route with GRACEFUL_SHUTDOWN (RFC 8326) and
    /// `drain_prepend` extra AS prepends, wait this long for the routers to move traffic,
    /// then withdraw. 0: withdraw at once.
    pub drain_ms: u64,
    pub drain_prepend: u8,
    /// Graceful restart (RFC 4724) as the restarting speaker, with the forwarding bit and
    /// RFC 8538's N bit: peers keep our routes for `restart_time` seconds while the daemon
    /// is away (the XDP dataplane keeps forwarding). None: off.
    pub graceful_restart: Option<u16>,
}

/// What every route to a peer, or one VIP's route, carries besides the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BgpAttrs {
    pub med: Option<u32>,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    pub as_path_prepend: u8,
}

#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct BgpPeer {
    pub address: IpAddr,
    pub remote_as: u32,
    pub passive: bool,
    pub hold_time: u16,
    /// TCP MD5 (RFC 2385). Never in `Debug` output, logs or `/status`.
    #[serde(skip)]
    pub password: Option<String>,
    pub local_address: Option<IpAddr>,
    pub ipv4_unicast: bool,
    pub ipv6_unicast: bool,
    pub export: BgpAttrs,
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    /// BFD watches the peer (the `[bfd]` part runs the session): down ends the BGP session.
    pub bfd: bool,
}

impl std::fmt::Debug for BgpPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgpPeer")
            .field("address", &self.address)
            .field("remote_as", &self.remote_as)
            .field("passive", &self.passive)
            .field("hold_time", &self.hold_time)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("local_address", &self.local_address)
            .field("export", &self.export)
            .field("bfd", &self.bfd)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BgpAnnounce {
    pub vip: IpAddr,
    pub policy: AnnouncePolicy,
    pub hold_down_ms: u64,
    pub attrs: BgpAttrs,
}

const ATTR_KEYS: [&str; 4] = ["med", "communities", "large_communities", "as_path_prepend"];

fn attrs(report: &mut Report<'_>, t: &Table<'_, '_>) -> Option<BgpAttrs> {
    let med = t
        .optional_int(report, "med")
        .map(|v| rules::in_range::<u32>(report, v, 0..=i128::from(u32::MAX)));
    let communities = list(report, t, "communities", |s| s.parse::<Community>());
    let large = list(report, t, "large_communities", |s| {
        s.parse::<LargeCommunity>()
    });
    let prepend = rules::int_or(report, t, "as_path_prepend", 0..=16, 0u8);
    Some(BgpAttrs {
        med: match med {
            Some(m) => Some(m?),
            None => None,
        },
        communities: communities?,
        large_communities: large?,
        as_path_prepend: prepend?,
    })
}

fn list<T>(
    report: &mut Report<'_>,
    t: &Table<'_, '_>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<Vec<T>> {
    let Some(items) = t.optional_str_array(report, key) else {
        return Some(Vec::new());
    };
    let mut out = Vec::new();
    let mut ok = true;
    for item in items.value {
        match parse(item.value) {
            Ok(v) => out.push(v),
            Err(e) => {
                report.add(item.offset, item.key, e);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn ip(report: &mut Report<'_>, v: Located<&str>) -> Option<IpAddr> {
    match v.value.parse::<IpAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            report.add(
                v.offset,
                v.key,
                format!("\"{}\" is not an IP address", v.value),
            );
            None
        }
    }
}

fn asn(report: &mut Report<'_>, t: &Table<'_, '_>, key: &str) -> Option<u32> {
    match t.optional_int(report, key) {
        Some(v) => rules::in_range(report, v, 1..=i128::from(u32::MAX)),
        None => {
            report.add(t.offset(), t.key_path(key), "missing key: an AS number");
            None
        }
    }
}

pub(super) fn section(
    report: &mut Report<'_>,
    table: &Table<'_, '_>,
    service_vips: &[IpAddr],
    bfd_runs: bool,
) -> Option<BgpConfig> {
    table.deny_unknown(
        report,
        &[
            "asn",
            "router_id",
            "listen",
            "peer",
            "announce",
            "drain_ms",
            "drain_prepend",
            "graceful_restart",
            "restart_time",
        ],
    );
    let graceful_restart = t_bool(report, table, "graceful_restart");
    let restart_time = rules::int_or(report, table, "restart_time", 1..=4095, 120u16);
    let drain_ms = rules::int_or(report, table, "drain_ms", 0..=600_000, 0u64);
    let drain_prepend = rules::int_or(report, table, "drain_prepend", 0..=16, 0u8);
    let asn = asn(report, table, "asn");
    let router_id = table.required_str(report, "router_id").and_then(|v| {
        let (offset, key) = (v.offset, v.key.clone());
        match ip(report, v)? {
            IpAddr::V4(a) if !a.is_unspecified() => Some(a),
            _ => {
                report.add(
                    offset,
                    key,
                    "must be a non-zero IPv4 address (the BGP identifier)",
                );
                None
            }
        }
    });
    let listen = list(report, table, "listen", |s| {
        s.parse::<SocketAddr>()
            .map_err(|_| format!("\"{s}\" is not an address:port (e.g. 10.0.0.11:179)"))
    });
    let peer_tables = table.array_of_tables(report, "peer");
    if peer_tables.is_empty() {
        report.add(
            table.offset(),
            table.key_path("peer"),
            "at least one [[bgp.peer]] is required: sessions only go to configured peers",
        );
    }
    let mut seen = HashSet::new();
    let peers: Vec<Option<BgpPeer>> = peer_tables
        .iter()
        .map(|t| peer(report, t, &mut seen, bfd_runs))
        .collect();
    let mut vips = HashSet::new();
    let announce: Vec<Option<BgpAnnounce>> = table
        .array_of_tables(report, "announce")
        .iter()
        .map(|t| announcement(report, t, service_vips, &mut vips))
        .collect();
    Some(BgpConfig {
        asn: asn?,
        router_id: router_id?,
        listen: listen?,
        peers: peers.into_iter().collect::<Option<_>>()?,
        announce: announce.into_iter().collect::<Option<_>>()?,
        drain_ms: drain_ms?,
        drain_prepend: drain_prepend?,
        graceful_restart: match graceful_restart? {
            true => Some(restart_time?),
            false => None,
        },
    })
}

fn t_bool(report: &mut Report<'_>, t: &Table<'_, '_>, key: &str) -> Option<bool> {
    t.optional_bool(report, key)
        .map_or(Some(false), |v| Some(v.value))
}

fn peer(
    report: &mut Report<'_>,
    t: &Table<'_, '_>,
    seen: &mut HashSet<IpAddr>,
    bfd_runs: bool,
) -> Option<BgpPeer> {
    let mut keys = vec![
        "address",
        "remote_as",
        "passive",
        "hold_time",
        "password",
        "local_address",
        "families",
        "next_hop_v4",
        "next_hop_v6",
        "bfd",
    ];
    keys.extend(ATTR_KEYS);
    t.deny_unknown(report, &keys);
    let address = t.required_str(report, "address").and_then(|v| {
        let (offset, key) = (v.offset, v.key.clone());
        let a = ip(report, v)?;
        if !seen.insert(a) {
            report.add(offset, key, format!("{a} is already a peer"));
            return None;
        }
        Some(a)
    });
    let remote_as = asn(report, t, "remote_as");
    let passive = t
        .optional_bool(report, "passive")
        .map_or(Some(false), |v| Some(v.value));
    let hold_time = match t.optional_int(report, "hold_time") {
        Some(v) => {
            let (offset, key) = (v.offset, v.key.clone());
            rules::in_range::<u16>(report, v, 0..=65535).filter(|h| {
                let ok = !matches!(h, 1 | 2);
                if !ok {
                    report.add(offset, key.clone(), "must be 0 or at least 3 (RFC 4271)");
                }
                ok
            })
        }
        None => Some(90),
    };
    let password = match t.optional_str(report, "password") {
        Some(p) if (1..=80).contains(&p.value.len()) => Some(Some(p.value.to_string())),
        Some(p) => {
            report.add(p.offset, p.key, "must be 1 to 80 bytes (TCP MD5 key)");
            None
        }
        None => Some(None),
    };
    let local_address = match t.optional_str(report, "local_address") {
        Some(v) => ip(report, v).map(Some),
        None => Some(None),
    };
    let families = list(report, t, "families", |s| match s {
        "ipv4" | "ipv6" => Ok(s.to_string()),
        other => Err(format!("unknown family \"{other}\" (allowed: ipv4, ipv6)")),
    });
    let next_hop_v4 = match t.optional_str(report, "next_hop_v4") {
        Some(v) => {
            let (offset, key) = (v.offset, v.key.clone());
            match ip(report, v)? {
                IpAddr::V4(a) => Some(Some(a)),
                IpAddr::V6(_) => {
                    report.add(offset, key, "must be an IPv4 address");
                    None
                }
            }
        }
        None => Some(None),
    };
    let next_hop_v6 = match t.optional_str(report, "next_hop_v6") {
        Some(v) => {
            let (offset, key) = (v.offset, v.key.clone());
            match ip(report, v)? {
                IpAddr::V6(a) => Some(Some(a)),
                IpAddr::V4(_) => {
                    report.add(offset, key, "must be an IPv6 address");
                    None
                }
            }
        }
        None => Some(None),
    };
    let bfd = rules::bfd_flag(report, t, bfd_runs);
    let export = attrs(report, t);
    let families = families?;
    let (ipv4_unicast, ipv6_unicast) = if families.is_empty() {
        (true, true)
    } else {
        (
            families.iter().any(|f| f == "ipv4"),
            families.iter().any(|f| f == "ipv6"),
        )
    };
    Some(BgpPeer {
        address: address?,
        remote_as: remote_as?,
        passive: passive?,
        hold_time: hold_time?,
        password: password?,
        local_address: local_address?,
        ipv4_unicast,
        ipv6_unicast,
        export: export?,
        next_hop_v4: next_hop_v4?,
        next_hop_v6: next_hop_v6?,
        bfd: bfd?,
    })
}

fn announcement(
    report: &mut Report<'_>,
    t: &Table<'_, '_>,
    service_vips: &[IpAddr],
    seen: &mut HashSet<IpAddr>,
) -> Option<BgpAnnounce> {
    let mut keys = vec!["vip", "policy", "hold_down_ms"];
    keys.extend(ATTR_KEYS);
    t.deny_unknown(report, &keys);
    let vip = t.required_str(report, "vip").and_then(|v| {
        let (offset, key) = (v.offset, v.key.clone());
        let a = ip(report, v)?;
        if a.is_unspecified() || a.is_multicast() {
            report.add(offset, key, format!("{a} is not a unicast address"));
            return None;
        }
        if !seen.insert(a) {
            report.add(offset, key, format!("{a} is already announced"));
            return None;
        }
        Some(a)
    });
    let policy = rules::announce_policy(report, t, vip, service_vips);
    let hold_down_ms = rules::int_or(report, t, "hold_down_ms", 0..=3_600_000, 0u64);
    let attrs = attrs(report, t);
    Some(BgpAnnounce {
        vip: vip?,
        policy: policy?,
        hold_down_ms: hold_down_ms?,
        attrs: attrs?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{FILE, assert_one};
    use super::super::*;

    const BASE: &str = "[node]\nname = \"lb1\"\n[bgp]\nasn = 64513\nrouter_id = \"10.0.0.11\"\n";
    const PEER: &str = "  [[bgp.peer]]\n  address = \"10.0.0.1\"\n  remote_as = 64512\n";

    #[test]
    fn peers_and_announcements() {
        let c = parse(
            &format!(
                "{BASE}listen = [\"10.0.0.11:179\"]\n{PEER}  password = \"portier-lab\"\n  \
                 communities = [\"64513:100\", \"no-export\"]\n  med = 5\n  families = [\"ipv4\"]\n  \
                 [[bgp.announce]]\n  vip = \"203.0.113.10\"\n  policy = \"always\"\n  \
                 large_communities = [\"64513:1:2\"]\n  as_path_prepend = 2\n"
            ),
            FILE,
        )
        .unwrap();
        let b = c.bgp.unwrap();
        assert_eq!((b.asn, b.listen.len()), (64513, 1));
        let p = &b.peers[0];
        assert_eq!((p.remote_as, p.hold_time, p.passive), (64512, 90, false));
        assert_eq!((p.ipv4_unicast, p.ipv6_unicast), (true, false));
        assert_eq!(p.export.communities.len(), 2);
        assert_eq!(p.export.med, Some(5));
        assert!(!format!("{p:?}").contains("portier-lab"));
        assert!(!p.bfd);
        assert_eq!(b.graceful_restart, None);
        let a = &b.announce[0];
        assert_eq!(
            (a.attrs.as_path_prepend, a.attrs.large_communities.len()),
            (2, 1)
        );
    }

    #[test]
    fn problems_name_their_keys() {
        assert_one(BASE, 3, "bgp.peer", "at least one [[bgp.peer]]");
        assert_one(
            &format!("{BASE}{PEER}  hold_time = 2\n"),
            9,
            "bgp.peer[0].hold_time",
            "0 or at least 3",
        );
        assert_one(
            &format!("{BASE}{PEER}  communities = [\"70000:1\"]\n"),
            9,
            "bgp.peer[0].communities[0]",
            "not a community",
        );
        assert_one(
            &format!("{BASE}{PEER}{PEER}"),
            10,
            "bgp.peer[1].address",
            "already a peer",
        );
        assert_one(
            &format!(
                "{BASE}{PEER}  [[bgp.announce]]\n  vip = \"203.0.113.10\"\n  policy = \"healthy\"\n"
            ),
            11,
            "bgp.announce[0].policy",
            "needs a [[service]]",
        );
        assert_one(
            &format!("{BASE}{PEER}  bfd = true\n"),
            9,
            "bgp.peer[0].bfd",
            "needs a [bfd] section",
        );
        assert_one(
            &format!("{BASE}graceful_restart = true\nrestart_time = 5000\n{PEER}"),
            7,
            "bgp.restart_time",
            "4095",
        );
        assert_one(
            &format!("[node]\nname = \"lb1\"\n[bgp]\nrouter_id = \"10.0.0.11\"\n{PEER}"),
            3,
            "bgp.asn",
            "missing key",
        );
    }
}

#[cfg(test)]
mod gr_bfd_tests {
    use super::super::test_support::FILE;
    use super::super::*;

    #[test]
    fn graceful_restart_and_bfd_peers() {
        let c = parse(
            "[node]\nname = \"lb1\"\n[bfd]\n[bgp]\nasn = 64513\nrouter_id = \"10.0.0.11\"\n\
             graceful_restart = true\n  [[bgp.peer]]\n  address = \"10.0.0.1\"\n  remote_as = 64512\n  \
             bfd = true\n",
            FILE,
        )
        .unwrap();
        let b = c.bgp.unwrap();
        assert_eq!(b.graceful_restart, Some(120));
        assert!(b.peers[0].bfd);
    }
}
