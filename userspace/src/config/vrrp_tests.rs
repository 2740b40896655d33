use std::net::IpAddr;

use super::super::parse;
use super::super::test_support::{FILE, assert_one};
use super::*;

/// A service `web` plus one VRRP instance; tests replace lines to break it.
const BASE: &str = r#"[node]
name = "lb1"
interfaces = ["eth0"]

[[service]]
name = "web"
vip = "203.0.113.10"
port = 80
protocol = "tcp"

[[vrrp.instance]]
name = "vip51"
interface = "eth0"
vrid = 51
priority = 150
vips = ["203.0.113.10"]
"#;

fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

#[test]
fn defaults() {
    let config = parse(BASE, FILE).unwrap();
    let vrrp = config.vrrp.unwrap();
    assert_eq!(
        vrrp.instances,
        vec![VrrpInstanceConfig {
            name: "vip51".into(),
            interface: "eth0".into(),
            vrid: 51,
            priority: 150,
            version: VrrpVersion::V3,
            advert_interval_cs: 100,
            preempt: true,
            preempt_delay_ms: 0,
            accept: true,
            vips: vec!["203.0.113.10".parse::<IpAddr>().unwrap()],
            unicast_peers: vec![],
            checksum_pseudo_header: true,
            garp_burst: 5,
            garp_repeat_delay_ms: 2000,
            virtual_mac: false,
            track: vec![],
        }]
    );
    let without = parse("[node]\nname = \"lb1\"\n", FILE).unwrap();
    assert_eq!(without.vrrp, None);
}

#[test]
fn every_key() {
    let text = with(
        "vips = [\"203.0.113.10\"]\n",
        r#"vips = ["203.0.113.10", "203.0.113.11"]
version = 2
advert_interval_ms = 2000
preempt = false
preempt_delay_ms = 1500
accept = false
unicast_peers = ["10.0.0.12"]
checksum_pseudo_header = false
garp_burst = 3
garp_repeat_delay_ms = 0
virtual_mac = true
  [[vrrp.instance.track]]
  interface = "eth1"
  weight = 60
  [[vrrp.instance.track]]
  service = "web"
  weight = 100
"#,
    );
    let config = parse(&text, FILE).unwrap();
    let i = &config.vrrp.unwrap().instances[0];
    assert_eq!(i.version, VrrpVersion::V2);
    assert_eq!(i.advert_interval_cs, 200);
    assert!(!i.preempt && !i.accept && i.virtual_mac && !i.checksum_pseudo_header);
    assert_eq!(
        (i.preempt_delay_ms, i.garp_burst, i.garp_repeat_delay_ms),
        (1500, 3, 0)
    );
    assert_eq!(
        i.unicast_peers,
        vec!["10.0.0.12".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        i.track,
        vec![
            TrackConfig {
                target: TrackTarget::Interface("eth1".into()),
                weight: 60
            },
            TrackConfig {
                target: TrackTarget::Service("web".into()),
                weight: 100
            }
        ]
    );
}

#[test]
fn example_file_has_a_vrrp_instance() {
    let config = parse(include_str!("example.toml"), "example.toml").unwrap();
    assert_eq!(config.vrrp.unwrap().instances.len(), 1);
}

#[test]
fn missing_keys_point_at_the_instance() {
    let text = with("vrid = 51\n", "");
    assert_one(&text, 11, "vrrp.instance[0].vrid", "missing required key");
    let text = with("vips = [\"203.0.113.10\"]\n", "");
    assert_one(&text, 11, "vrrp.instance[0].vips", "missing required key");
    let text = with("interface = \"eth0\"\n", "");
    assert_one(
        &text,
        11,
        "vrrp.instance[0].interface",
        "missing required key",
    );
}

#[test]
fn ranges_and_types() {
    assert_one(
        &with("vrid = 51", "vrid = 0"),
        14,
        "vrrp.instance[0].vrid",
        "out of range 1..=255",
    );
    assert_one(
        &with("vrid = 51", "vrid = 256"),
        14,
        "vrrp.instance[0].vrid",
        "out of range",
    );
    assert_one(
        &with("priority = 150", "priority = 0"),
        15,
        "vrrp.instance[0].priority",
        "out of range 1..=255",
    );
    assert_one(
        &with("priority = 150", "priority = \"high\""),
        15,
        "vrrp.instance[0].priority",
        "expected an integer",
    );
    assert_one(
        &with("priority = 150", "priority = 150\nversion = 4"),
        16,
        "vrrp.instance[0].version",
        "allowed: 2, 3",
    );
    assert_one(
        &with("priority = 150", "priority = 150\npreempt = 1"),
        16,
        "vrrp.instance[0].preempt",
        "expected a boolean",
    );
    assert_one(
        &with("priority = 150", "priority = 150\ngarp_burst = 101"),
        16,
        "vrrp.instance[0].garp_burst",
        "out of range 0..=100",
    );
    assert_one(
        &with("priority = 150", "priority = 150\nspeed = 1"),
        16,
        "vrrp.instance[0].speed",
        "unknown key",
    );
    assert_one(
        "[node]\nname = \"a\"\n[vrrp]\ninstances = []\n",
        4,
        "vrrp.instances",
        "unknown key",
    );
}

#[test]
fn virtual_mac_for_both_families() {
    for vips in ["vips = [\"203.0.113.10\"]", "vips = [\"2001:db8::10\"]"] {
        let text = with(
            "vips = [\"203.0.113.10\"]",
            &format!("{vips}\nvirtual_mac = true"),
        );
        let config = parse(&text, FILE).unwrap();
        assert!(config.vrrp.unwrap().instances[0].virtual_mac, "{vips}");
    }
}

#[test]
fn intervals_follow_the_version() {
    let v3 = |ms: &str| {
        with(
            "priority = 150",
            &format!("priority = 150\nadvert_interval_ms = {ms}"),
        )
    };
    assert_eq!(
        parse(&v3("50"), FILE).unwrap().vrrp.unwrap().instances[0].advert_interval_cs,
        5
    );
    assert_one(
        &v3("55"),
        16,
        "vrrp.instance[0].advert_interval_ms",
        "multiple of 10 ms",
    );
    assert_one(
        &v3("5"),
        16,
        "vrrp.instance[0].advert_interval_ms",
        "out of range 10..=40950",
    );
    assert_one(
        &v3("40960"),
        16,
        "vrrp.instance[0].advert_interval_ms",
        "out of range",
    );
    let v2 = |ms: &str| {
        with(
            "priority = 150",
            &format!("priority = 150\nversion = 2\nadvert_interval_ms = {ms}"),
        )
    };
    assert_one(
        &v2("1500"),
        17,
        "vrrp.instance[0].advert_interval_ms",
        "whole seconds",
    );
    assert_one(
        &v2("500"),
        17,
        "vrrp.instance[0].advert_interval_ms",
        "out of range 1000..=255000",
    );
}

#[test]
fn address_rules() {
    let vips = |list: &str| with("vips = [\"203.0.113.10\"]", &format!("vips = {list}"));
    assert_one(
        &vips("[]"),
        16,
        "vrrp.instance[0].vips",
        "at least one address",
    );
    assert_one(
        &vips("[\"x\"]"),
        16,
        "vrrp.instance[0].vips[0]",
        "not an IP address",
    );
    assert_one(
        &vips("[\"203.0.113.10\", \"203.0.113.10\"]"),
        16,
        "vrrp.instance[0].vips[1]",
        "already listed (line 16)",
    );
    assert_one(
        &vips("[\"203.0.113.10\", \"2001:db8::1\"]"),
        16,
        "vrrp.instance[0].vips[1]",
        "mixes address families",
    );
    assert_one(
        &vips("[\"224.0.0.18\"]"),
        16,
        "vrrp.instance[0].vips[0]",
        "multicast",
    );
    let many: Vec<String> = (1..=21).map(|i| format!("\"203.0.113.{i}\"")).collect();
    assert_one(
        &vips(&format!("[{}]", many.join(", "))),
        16,
        "vrrp.instance[0].vips",
        "at most 20",
    );
    let v2_v6 = with(
        "vips = [\"203.0.113.10\"]",
        "version = 2\nvips = [\"2001:db8::1\"]",
    );
    assert_one(
        &v2_v6,
        17,
        "vrrp.instance[0].vips[0]",
        "VRRPv2 does not carry",
    );
    let peers = with(
        "vips = [\"203.0.113.10\"]",
        "vips = [\"203.0.113.10\"]\nunicast_peers = [\"10.0.0.12\", \"fe80::2\"]",
    );
    assert_one(
        &peers,
        17,
        "vrrp.instance[0].unicast_peers[1]",
        "not of the vips' family (IPv4)",
    );
}

#[test]
fn track_rules() {
    let track = |body: &str| format!("{BASE}  [[vrrp.instance.track]]\n{body}");
    assert_one(
        &track("  service = \"nope\"\n  weight = 10\n"),
        18,
        "vrrp.instance[0].track[0].service",
        "no service is named \"nope\"",
    );
    assert_one(
        &track("  weight = 10\n"),
        17,
        "vrrp.instance[0].track[0]",
        "exactly one of",
    );
    assert_one(
        &track("  interface = \"eth1\"\n  service = \"web\"\n  weight = 10\n"),
        17,
        "vrrp.instance[0].track[0]",
        "exactly one of",
    );
    assert_one(
        &track("  interface = \"eth1\"\n"),
        17,
        "vrrp.instance[0].track[0].weight",
        "missing required key",
    );
    assert_one(
        &track("  interface = \"eth1\"\n  weight = 255\n"),
        19,
        "vrrp.instance[0].track[0].weight",
        "out of range 1..=254",
    );
    assert_one(
        &track("  interface = \"eth/1\"\n  weight = 5\n"),
        18,
        "vrrp.instance[0].track[0].interface",
        "not an interface name",
    );
}

#[test]
fn instances_are_unique() {
    let second = |name: &str, vrid: u8, vip: &str| {
        format!(
            "{BASE}\n[[vrrp.instance]]\nname = \"{name}\"\ninterface = \"eth0\"\nvrid = {vrid}\nvips = [\"{vip}\"]\n"
        )
    };
    assert_one(
        &second("vip51", 52, "203.0.113.11"),
        19,
        "vrrp.instance[1].name",
        "already used (line 12)",
    );
    assert_one(
        &second("other", 51, "203.0.113.11"),
        21,
        "vrrp.instance[1].vrid",
        "VRID 51 on eth0 is already used",
    );
    // The same VRID for IPv6 is another virtual router (RFC 5798 §5.2.3).
    assert!(parse(&second("other", 51, "2001:db8::10"), FILE).is_ok());
}
