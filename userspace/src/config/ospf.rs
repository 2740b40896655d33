//! `[ospf]`: the router ID, the interfaces OSPF runs on, and which VIPs are announced when.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use super::model::Choice;
use super::reader::{Located, Table};
use super::report::Report;
use super::rules;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OspfConfig {
    pub router_id: Ipv4Addr,
    pub interfaces: Vec<OspfInterface>,
    pub announce: Vec<OspfAnnounce>,
    /// Neighbours kept per interface; Hellos from more routers are ignored.
    pub max_neighbors: usize,
    /// LSAs kept in the database (new ones beyond it are dropped); also bounds each
    /// neighbour's link state request and retransmission list.
    pub max_lsas: usize,
    /// RFC 3623 restarting router: grace-LSAs before a clean stop and after a crash, so
    /// neighbours keep the routes through us while the XDP program keeps forwarding.
    pub graceful_restart: bool,
    /// Seconds neighbours are asked to wait (`grace_period`, FRR's default).
    pub grace_period: u32,
    /// RFC 3623 helper for neighbours that restart (`gr_helper`, on as in FRR).
    pub gr_helper: bool,
}

impl OspfConfig {
    pub const DEFAULT_GRACE_PERIOD: u32 = 120;
    /// As FRR and BIRD behave for an edge node: a LAN or two of routers, an area's LSDB.
    pub const DEFAULT_MAX_NEIGHBORS: usize = 64;
    pub const DEFAULT_MAX_LSAS: usize = 10_000;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OspfInterface {
    pub name: String,
    pub area: Ipv4Addr,
    pub network: OspfNetwork,
    pub hello_interval: u16,
    pub dead_interval: u32,
    pub retransmit_interval: u16,
    pub priority: u8,
    pub cost: u16,
    /// Neighbours on this interface are watched by BFD (the `[bfd]` part must run), as
    /// FRR's `ip ospf bfd`: a BFD session going down brings the neighbour down at once.
    pub bfd: bool,
    #[serde(skip)]
    pub auth: OspfAuth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OspfNetwork {
    Broadcast,
    PointToPoint,
}

/// Passwords and keys never reach `Debug` output, logs or `/status`.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum OspfAuth {
    #[default]
    None,
    Simple(String),
    /// The last key signs; all are accepted (rotation).
    Md5(Vec<(u8, String)>),
}

impl std::fmt::Debug for OspfAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OspfAuth::None => f.write_str("None"),
            OspfAuth::Simple(_) => f.write_str("Simple(<redacted>)"),
            OspfAuth::Md5(keys) => f
                .debug_tuple("Md5")
                .field(&keys.iter().map(|(id, _)| *id).collect::<Vec<_>>())
                .finish(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnnouncePolicy {
    /// While a VRRP instance holding the VIP is master on this node.
    VrrpMaster,
    /// While a service on the VIP has at least one healthy backend (anycast).
    Healthy,
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OspfAnnounce {
    pub vip: Ipv4Addr,
    pub policy: AnnouncePolicy,
    /// A type-5 LSA instead of a stub link in the Router-LSA.
    pub as_external: bool,
    pub metric: u32,
    /// 1 or 2, for AS-external only.
    pub metric_type: u8,
    /// How long the condition must hold before (re-)announcing.
    pub hold_down_ms: u64,
    /// While the condition does not hold, announce with this (worse) metric instead of not at
    /// all: a standby path the routers use only when no better one exists (a VRRP backup that
    /// balances too, covering a master whose adjacency restarts). `None`: withdraw.
    pub standby_metric: Option<u32>,
}

#[derive(Clone, Copy)]
enum AuthKind {
    None,
    Simple,
    Md5,
}

impl Choice for AuthKind {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("none", AuthKind::None),
        ("simple", AuthKind::Simple),
        ("md5", AuthKind::Md5),
    ];
}

impl Choice for OspfNetwork {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("broadcast", OspfNetwork::Broadcast),
        ("point-to-point", OspfNetwork::PointToPoint),
    ];
}

impl Choice for AnnouncePolicy {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("vrrp-master", AnnouncePolicy::VrrpMaster),
        ("healthy", AnnouncePolicy::Healthy),
        ("always", AnnouncePolicy::Always),
    ];
}

fn ipv4(report: &mut Report<'_>, value: Located<&str>) -> Option<Ipv4Addr> {
    match value.value.parse::<Ipv4Addr>() {
        Ok(a) => Some(a),
        Err(_) => {
            report.add(
                value.offset,
                value.key,
                format!("\"{}\" is not a dotted IPv4 address", value.value),
            );
            None
        }
    }
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

/// `service_vips`: the VIPs of configured services, for the `healthy` policy.
pub(super) fn ospf(
    report: &mut Report<'_>,
    table: &Table<'_, '_>,
    service_vips: &[IpAddr],
    bfd_runs: bool,
) -> Option<OspfConfig> {
    table.deny_unknown(
        report,
        &[
            "router_id",
            "interface",
            "announce",
            "max_neighbors",
            "max_lsas",
            "graceful_restart",
            "grace_period",
            "gr_helper",
        ],
    );
    let graceful_restart = table
        .optional_bool(report, "graceful_restart")
        .is_some_and(|v| v.value);
    let gr_helper = table
        .optional_bool(report, "gr_helper")
        .is_none_or(|v| v.value);
    // RFC 3623 A: at most 1800 s (the LSRefreshTime).
    let grace_period = int_or(
        report,
        table,
        "grace_period",
        1..=1800,
        OspfConfig::DEFAULT_GRACE_PERIOD,
    );
    let max_neighbors = int_or(
        report,
        table,
        "max_neighbors",
        1..=1000,
        OspfConfig::DEFAULT_MAX_NEIGHBORS,
    );
    let max_lsas = int_or(
        report,
        table,
        "max_lsas",
        1..=1_000_000,
        OspfConfig::DEFAULT_MAX_LSAS,
    );
    let router_id = table.required_str(report, "router_id").and_then(|v| {
        let (offset, key) = (v.offset, v.key.clone());
        let id = ipv4(report, v)?;
        if id.is_unspecified() {
            report.add(offset, key, "0.0.0.0 cannot be a router ID");
            return None;
        }
        Some(id)
    });

    let tables = table.array_of_tables(report, "interface");
    if tables.is_empty() && !table.has("interface") {
        report.add(
            table.offset(),
            table.key_path("interface"),
            "at least one [[ospf.interface]] is required",
        );
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut first_area: Option<Ipv4Addr> = None;
    let mut interfaces = Vec::new();
    let mut ok = true;
    for t in &tables {
        match interface(report, t, bfd_runs) {
            Some((iface, name_at, area_at)) => {
                if let Some(&line_of) = names.get(&iface.name) {
                    let line = report.line_of(line_of);
                    report.add(
                        name_at.0,
                        name_at.1,
                        format!(
                            "interface \"{}\" is already configured (line {line})",
                            iface.name
                        ),
                    );
                    ok = false;
                }
                names.insert(iface.name.clone(), name_at.0);
                match first_area {
                    Some(a) if a != iface.area => {
                        // One LSDB serves every interface; multi-area needs per-area ones.
                        report.add(
                            area_at.0,
                            area_at.1,
                            format!("all interfaces must be in one area (the first is {a})"),
                        );
                        ok = false;
                    }
                    _ => first_area = Some(iface.area),
                }
                interfaces.push(iface);
            }
            None => ok = false,
        }
    }

    let mut vips: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut announce = Vec::new();
    for t in table.array_of_tables(report, "announce") {
        match announcement(report, &t, service_vips) {
            Some((a, vip_at)) => {
                if let Some(&first) = vips.get(&a.vip) {
                    let line = report.line_of(first);
                    report.add(
                        vip_at.0,
                        vip_at.1,
                        format!("{} is already announced (line {line})", a.vip),
                    );
                    ok = false;
                }
                vips.insert(a.vip, vip_at.0);
                announce.push(a);
            }
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    Some(OspfConfig {
        router_id: router_id?,
        interfaces,
        announce,
        max_neighbors: max_neighbors?,
        max_lsas: max_lsas?,
        graceful_restart,
        grace_period: grace_period?,
        gr_helper,
    })
}

type At = (usize, String);

fn interface(
    report: &mut Report<'_>,
    t: &Table<'_, '_>,
    bfd_runs: bool,
) -> Option<(OspfInterface, At, At)> {
    t.deny_unknown(
        report,
        &[
            "name",
            "area",
            "network",
            "hello_interval",
            "dead_interval",
            "retransmit_interval",
            "priority",
            "cost",
            "auth",
            "password",
            "md5_keys",
            "bfd",
        ],
    );
    let mut name_at = (t.offset(), t.key_path("name"));
    let name = t.required_str(report, "name").and_then(|v| {
        name_at = (v.offset, v.key.clone());
        rules::interface_name(report, v)
    });
    let mut area_at = (t.offset(), t.key_path("area"));
    let area = match t.optional_str(report, "area") {
        Some(v) => {
            area_at = (v.offset, v.key.clone());
            ipv4(report, v)
        }
        None => Some(Ipv4Addr::UNSPECIFIED),
    };
    let network = match t.optional_str(report, "network") {
        Some(v) => rules::choice(report, v),
        None => Some(OspfNetwork::Broadcast),
    };
    let hello: Option<u16> = int_or(report, t, "hello_interval", 1..=65535, 10);
    let dead_value = t.optional_int(report, "dead_interval");
    let dead: Option<u32> = match dead_value {
        Some(v) => {
            let (offset, key) = (v.offset, v.key.clone());
            rules::in_range::<u32>(report, v, 1..=i128::from(u32::MAX)).filter(|&d| {
                let longer = hello.is_none_or(|h| d > u32::from(h));
                if !longer {
                    report.add(offset, key.clone(), "must be longer than hello_interval");
                }
                longer
            })
        }
        None => hello.map(|h| 4 * u32::from(h)),
    };
    let retransmit = int_or(report, t, "retransmit_interval", 1..=3600, 5);
    let priority = int_or(report, t, "priority", 0..=255, 1);
    let cost = int_or(report, t, "cost", 1..=65535, 10);
    let bfd = rules::bfd_flag(report, t, bfd_runs);
    let kind = match t.optional_str(report, "auth") {
        Some(v) => rules::choice(report, v),
        None => Some(AuthKind::None),
    };
    let password = t.optional_str(report, "password");
    let has_keys = t.has("md5_keys");
    let auth = match kind {
        Some(AuthKind::None) | None => {
            if let Some(p) = &password {
                report.add(p.offset, p.key.clone(), "only used with auth = \"simple\"");
            }
            if has_keys {
                report.add(
                    t.offset(),
                    t.key_path("md5_keys"),
                    "only used with auth = \"md5\"",
                );
            }
            kind.map(|_| OspfAuth::None)
        }
        Some(AuthKind::Simple) => match password {
            Some(p) if (1..=8).contains(&p.value.len()) => {
                Some(OspfAuth::Simple(p.value.to_owned()))
            }
            Some(p) => {
                report.add(p.offset, p.key, "must be 1 to 8 bytes");
                None
            }
            None => {
                report.add(
                    t.offset(),
                    t.key_path("password"),
                    "missing (auth = \"simple\")",
                );
                None
            }
        },
        Some(AuthKind::Md5) => md5_keys(report, t),
    };
    Some((
        OspfInterface {
            bfd: bfd?,
            name: name?,
            area: area?,
            network: network?,
            hello_interval: hello?,
            dead_interval: dead?,
            retransmit_interval: retransmit?,
            priority: priority?,
            cost: cost?,
            auth: auth?,
        },
        name_at,
        area_at,
    ))
}

fn md5_keys(report: &mut Report<'_>, t: &Table<'_, '_>) -> Option<OspfAuth> {
    let keys = t.array_of_tables(report, "md5_keys");
    if keys.is_empty() {
        report.add(
            t.offset(),
            t.key_path("md5_keys"),
            "at least one key is required (auth = \"md5\")",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut seen: HashMap<u8, usize> = HashMap::new();
    let mut ok = true;
    for k in keys {
        k.deny_unknown(report, &["id", "key"]);
        let id = match k.optional_int(report, "id") {
            Some(v) => {
                let (offset, key) = (v.offset, v.key.clone());
                let id = rules::in_range::<u8>(report, v, 1..=255);
                if let Some(id) = id {
                    if let Some(&first) = seen.get(&id) {
                        let line = report.line_of(first);
                        report.add(
                            offset,
                            key,
                            format!("key id {id} is already used (line {line})"),
                        );
                        ok = false;
                    }
                    seen.insert(id, offset);
                }
                id
            }
            None => {
                report.add(k.offset(), k.key_path("id"), "missing required key");
                None
            }
        };
        let secret = k.required_str(report, "key").and_then(|v| {
            if (1..=16).contains(&v.value.len()) {
                Some(v.value.to_owned())
            } else {
                report.add(v.offset, v.key, "must be 1 to 16 bytes");
                None
            }
        });
        match (id, secret) {
            (Some(id), Some(secret)) => out.push((id, secret)),
            _ => ok = false,
        }
    }
    ok.then_some(OspfAuth::Md5(out))
}

fn announcement(
    report: &mut Report<'_>,
    t: &Table<'_, '_>,
    service_vips: &[IpAddr],
) -> Option<(OspfAnnounce, At)> {
    t.deny_unknown(
        report,
        &[
            "vip",
            "policy",
            "as_external",
            "metric",
            "metric_type",
            "hold_down_ms",
            "standby_metric",
        ],
    );
    let mut vip_at = (t.offset(), t.key_path("vip"));
    let vip = t.required_str(report, "vip").and_then(|v| {
        vip_at = (v.offset, v.key.clone());
        let a = ipv4(report, v)?;
        if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
            report.add(
                vip_at.0,
                vip_at.1.clone(),
                format!("{a} is not a unicast address"),
            );
            return None;
        }
        Some(a)
    });
    let policy = rules::announce_policy(report, t, vip.map(IpAddr::V4), service_vips);
    let as_external = t
        .optional_bool(report, "as_external")
        .map_or(Some(false), |v| Some(v.value));
    let max_metric = if as_external == Some(true) {
        0x00ff_ffff
    } else {
        0xffff
    };
    let metric = int_or(report, t, "metric", 0..=max_metric, 10);
    let metric_type = match t.optional_int(report, "metric_type") {
        Some(v) if as_external != Some(true) => {
            report.add(v.offset, v.key, "only used with as_external = true");
            None
        }
        Some(v) => rules::in_range(report, v, 1..=2),
        None => Some(2),
    };
    let hold_down_ms = int_or(report, t, "hold_down_ms", 0..=3_600_000, 0);
    let standby_metric = match t.optional_int(report, "standby_metric") {
        Some(v) => rules::in_range::<u32>(report, v, 0..=max_metric).map(Some),
        None => Some(None),
    };
    Some((
        OspfAnnounce {
            vip: vip?,
            policy: policy?,
            as_external: as_external?,
            metric: metric?,
            metric_type: metric_type?,
            hold_down_ms: hold_down_ms?,
            standby_metric: standby_metric?,
        },
        vip_at,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::{Problem, parse};
    use super::*;

    const BASE: &str = "[node]\nname = \"lb1\"\n";

    fn problems(ospf: &str) -> Vec<Problem> {
        let text = format!("{BASE}{ospf}");
        match parse(&text, "p.toml") {
            Ok(c) => panic!("expected problems, got {:?}", c.ospf),
            Err(e) => e.problems().to_vec(),
        }
    }

    #[track_caller]
    fn one(ospf: &str, line: usize, key: &str, fragment: &str) {
        let found = problems(ospf);
        assert_eq!(found.len(), 1, "{found:#?}");
        let p = &found[0];
        assert_eq!((p.line, p.key.as_str()), (line, key), "{p:?}");
        assert!(
            p.message.contains(fragment),
            "{:?} lacks {fragment:?}",
            p.message
        );
    }

    const GOOD: &str = r#"
[ospf]
router_id = "10.0.0.11"
  [[ospf.interface]]
  name = "eth0"
  network = "point-to-point"
  hello_interval = 1
  dead_interval = 4
  priority = 0
  auth = "md5"
  md5_keys = [{ id = 1, key = "s3cret" }, { id = 2, key = "next" }]
  [[ospf.announce]]
  vip = "203.0.113.10"
  policy = "vrrp-master"
  [[ospf.announce]]
  vip = "203.0.113.11"
  policy = "always"
  as_external = true
  metric = 100000
  metric_type = 1
  hold_down_ms = 2000
"#;

    #[test]
    fn full_section_reads_with_defaults() {
        let c = parse(&format!("{BASE}{GOOD}"), "p.toml").unwrap();
        let o = c.ospf.unwrap();
        assert_eq!(o.router_id, Ipv4Addr::new(10, 0, 0, 11));
        let i = &o.interfaces[0];
        assert_eq!(
            (i.network, i.hello_interval, i.dead_interval),
            (OspfNetwork::PointToPoint, 1, 4)
        );
        assert_eq!((i.priority, i.cost, i.retransmit_interval), (0, 10, 5));
        assert_eq!(i.area, Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            i.auth,
            OspfAuth::Md5(vec![(1, "s3cret".into()), (2, "next".into())])
        );
        assert_eq!(o.announce[0].policy, AnnouncePolicy::VrrpMaster);
        assert_eq!(
            (o.announce[0].metric, o.announce[0].as_external),
            (10, false)
        );
        let e = &o.announce[1];
        assert_eq!((e.metric, e.metric_type, e.hold_down_ms), (100000, 1, 2000));
        // Default dead interval is four hellos.
        let c = parse(
            &format!("{BASE}[ospf]\nrouter_id = \"1.1.1.1\"\n[[ospf.interface]]\nname = \"e\"\nhello_interval = 3\n"),
            "p.toml",
        )
        .unwrap();
        assert_eq!(c.ospf.unwrap().interfaces[0].dead_interval, 12);
    }

    #[test]
    fn limits_default_and_are_checked() {
        let c = parse(&format!("{BASE}{GOOD}"), "p.toml")
            .unwrap()
            .ospf
            .unwrap();
        assert_eq!((c.max_neighbors, c.max_lsas), (64, 10_000));
        let c = parse(
            &format!(
                "{BASE}{}",
                GOOD.replace("[ospf]\n", "[ospf]\nmax_neighbors = 8\nmax_lsas = 500\n")
            ),
            "p.toml",
        )
        .unwrap()
        .ospf
        .unwrap();
        assert_eq!((c.max_neighbors, c.max_lsas), (8, 500));
        let i = "router_id = \"1.1.1.1\"\n[[ospf.interface]]\nname = \"e\"\n";
        one(
            &format!("[ospf]\nmax_neighbors = 0\n{i}"),
            4,
            "ospf.max_neighbors",
            "out of range",
        );
        one(
            &format!("[ospf]\nmax_lsas = 2000000\n{i}"),
            4,
            "ospf.max_lsas",
            "out of range",
        );
    }

    #[test]
    fn debug_output_never_shows_passwords_or_keys() {
        let c = parse(&format!("{BASE}{GOOD}"), "p.toml").unwrap();
        let shown = format!("{:?} {:#?}", c, c.ospf);
        assert!(shown.contains("Md5([1, 2])"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("next"),
            "{shown}"
        );
        let simple = OspfAuth::Simple("hunter2".into());
        assert_eq!(format!("{simple:?}"), "Simple(<redacted>)");
    }

    #[test]
    fn errors_name_line_and_key() {
        one(
            "[ospf]\n[[ospf.interface]]\nname = \"eth0\"\n",
            3,
            "ospf.router_id",
            "missing",
        );
        one(
            "[ospf]\nrouter_id = \"0.0.0.0\"\n[[ospf.interface]]\nname = \"e\"\n",
            4,
            "ospf.router_id",
            "cannot be a router ID",
        );
        one(
            "[ospf]\nrouter_id = \"x\"\n[[ospf.interface]]\nname = \"e\"\n",
            4,
            "ospf.router_id",
            "not a dotted IPv4",
        );
        one(
            "[ospf]\nrouter_id = \"1.1.1.1\"\n",
            3,
            "ospf.interface",
            "at least one",
        );
        let i = "[ospf]\nrouter_id = \"1.1.1.1\"\n[[ospf.interface]]\nname = \"e\"\n";
        one(
            &format!("{i}network = \"nbma\"\n"),
            7,
            "ospf.interface[0].network",
            "allowed: broadcast, point-to-point",
        );
        one(
            &format!("{i}hello_interval = 5\ndead_interval = 5\n"),
            8,
            "ospf.interface[0].dead_interval",
            "longer than hello",
        );
        one(
            &format!("{i}priority = 300\n"),
            7,
            "ospf.interface[0].priority",
            "out of range",
        );
        one(
            &format!("{i}auth = \"md5\"\n"),
            5,
            "ospf.interface[0].md5_keys",
            "at least one key",
        );
        one(
            &format!("{i}auth = \"simple\"\npassword = \"123456789\"\n"),
            8,
            "ospf.interface[0].password",
            "1 to 8 bytes",
        );
        one(
            &format!("{i}password = \"x\"\n"),
            7,
            "ospf.interface[0].password",
            "only used with auth",
        );
        one(
            &format!(
                "{i}auth = \"md5\"\nmd5_keys = [{{ id = 1, key = \"a\" }}, {{ id = 1, key = \"b\" }}]\n"
            ),
            8,
            "ospf.interface[0].md5_keys[1].id",
            "already used",
        );
        one(
            &format!("{i}[[ospf.interface]]\nname = \"e\"\n"),
            8,
            "ospf.interface[1].name",
            "already configured",
        );
        one(
            &format!("{i}[[ospf.interface]]\nname = \"f\"\narea = \"0.0.0.1\"\n"),
            9,
            "ospf.interface[1].area",
            "one area",
        );
        one(
            &format!("{i}speed = 1\n"),
            7,
            "ospf.interface[0].speed",
            "unknown key",
        );
        let a = format!("{i}[[ospf.announce]]\nvip = \"203.0.113.1\"\n");
        one(&a, 7, "ospf.announce[0].policy", "missing");
        one(
            &format!("{a}policy = \"healthy\"\n"),
            9,
            "ospf.announce[0].policy",
            "needs a [[service]]",
        );
        one(
            &format!("{a}policy = \"always\"\nmetric = 70000\n"),
            10,
            "ospf.announce[0].metric",
            "out of range",
        );
        one(
            &format!("{a}policy = \"always\"\nmetric_type = 1\n"),
            10,
            "ospf.announce[0].metric_type",
            "only used with as_external",
        );
        one(
            &format!("{a}policy = \"always\"\nas_external = \"yes\"\n"),
            10,
            "ospf.announce[0].as_external",
            "expected a boolean",
        );
        one(
            &format!(
                "{a}policy = \"always\"\n[[ospf.announce]]\nvip = \"203.0.113.1\"\npolicy = \"always\"\n"
            ),
            11,
            "ospf.announce[1].vip",
            "already announced",
        );
        one(
            &format!("{i}[[ospf.announce]]\nvip = \"224.0.0.1\"\npolicy = \"always\"\n"),
            8,
            "ospf.announce[0].vip",
            "not a unicast",
        );
    }
}
