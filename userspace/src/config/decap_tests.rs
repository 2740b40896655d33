use super::test_support::{FILE, assert_one, problems};
use super::*;

const IPIP: &str = r#"[node]
name = "lb1"
interfaces = ["eth0"]

[dataplane]
encap_source_v4 = "10.255.0.0/24"

[[service]]
name = "web"
vip = "203.0.113.10"
port = 80
protocol = "tcp"
forwarding = "ipip"

  [[service.backend]]
  address = "10.1.0.21"
"#;

const HOST: &str = r#"[node]
name = "host1"

[decap]
interfaces = ["eth0"]
addresses = ["10.1.0.21"]
sources = ["10.255.0.0/24"]
vips = ["203.0.113.10"]
"#;

fn with(base: &str, from: &str, to: &str) -> String {
    assert!(base.contains(from), "{from:?} not in base");
    base.replacen(from, to, 1)
}

#[test]
fn ipip_service_with_its_source() {
    let c = parse(IPIP, FILE).unwrap();
    assert_eq!(c.services[0].forwarding, Forwarding::Ipip);
    assert_eq!(
        c.dataplane.encap_source_v4,
        Some(("10.255.0.0".parse().unwrap(), 24))
    );
    assert_eq!(c.dataplane.encap_source_v6, None);
    assert_eq!(c.decap, None);
}

#[test]
fn ipip_needs_a_source_of_its_family() {
    let text = with(
        IPIP,
        "encap_source_v4 = \"10.255.0.0/24\"",
        "encap_source_v6 = \"fd00:ff::/64\"",
    );
    assert_one(
        &text,
        13,
        "service[0].forwarding",
        "needs [dataplane] encap_source_v4",
    );
    let text = with(
        &with(IPIP, "203.0.113.10", "2001:db8::10"),
        "10.1.0.21",
        "2001:db8:1::21",
    );
    assert_one(
        &text,
        13,
        "service[0].forwarding",
        "needs [dataplane] encap_source_v6",
    );
    // DSR services need no source.
    let text = with(
        &with(IPIP, "forwarding = \"ipip\"", "forwarding = \"dsr\""),
        "encap_source_v4 = \"10.255.0.0/24\"",
        "",
    );
    parse(&text, FILE).unwrap();
}

#[test]
fn bad_sources() {
    for (value, fragment) in [
        ("\"10.255.0.0\"", "not an address/length prefix"),
        ("\"10.255.0.0/33\"", "not an address/length prefix"),
        ("\"banana/8\"", "not an address/length prefix"),
        ("\"0.0.0.0/0\"", "cannot be a source address"),
        ("\"fd00::/64\"", "must be an IPv4 prefix"),
        ("24", "expected a string"),
    ] {
        let text = with(IPIP, "\"10.255.0.0/24\"", value);
        let found = problems(&text);
        assert!(!found.is_empty());
        let p = &found[0];
        assert_eq!(
            (p.line, p.key.as_str()),
            (6, "dataplane.encap_source_v4"),
            "{value}: {p:?}"
        );
        assert!(p.message.contains(fragment), "{value}: {:?}", p.message);
    }
    let text = with(
        IPIP,
        "encap_source_v4 = \"10.255.0.0/24\"",
        "encap_source_v4 = \"10.255.0.0/24\"\nencap_source_v6 = \"10.0.0.0/8\"",
    );
    assert_one(
        &text,
        7,
        "dataplane.encap_source_v6",
        "must be an IPv6 prefix",
    );
    let text = with(IPIP, "encap_source_v4", "encap_source");
    let found = problems(&text);
    assert!(
        found
            .iter()
            .any(|p| p.line == 6 && p.key == "dataplane.encap_source"),
        "{found:#?}"
    );
}

#[test]
fn decap_section() {
    let c = parse(HOST, FILE).unwrap();
    let d = c.decap.unwrap();
    assert_eq!(d.interfaces, vec!["eth0".to_string()]);
    assert_eq!(
        d.addresses,
        vec!["10.1.0.21".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(d.sources, vec![("10.255.0.0".parse().unwrap(), 24)]);
    assert_eq!(
        d.vips,
        vec!["203.0.113.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(c.services.is_empty());
}

#[test]
fn decap_needs_sources_and_vips() {
    assert_one(
        &with(HOST, "sources = [\"10.255.0.0/24\"]\n", ""),
        4,
        "decap.sources",
        "missing key: the balancers' outer source prefixes",
    );
    assert_one(
        &with(HOST, "vips = [\"203.0.113.10\"]\n", ""),
        4,
        "decap.vips",
        "missing key: the VIPs this host serves",
    );
    assert_one(
        &with(HOST, "[\"10.255.0.0/24\"]", "[]"),
        7,
        "decap.sources",
        "lists no prefix",
    );
    assert_one(
        &with(HOST, "[\"10.255.0.0/24\"]", "[\"0.0.0.0/0\"]"),
        7,
        "decap.sources[0]",
        "cannot be a source address",
    );
    assert_one(
        &with(
            HOST,
            "[\"203.0.113.10\"]",
            "[\"203.0.113.10\", \"203.0.113.10\"]",
        ),
        8,
        "decap.vips[1]",
        "already listed (line 8)",
    );
}

#[test]
fn decap_errors() {
    assert_one(
        &with(HOST, "interfaces = [\"eth0\"]\n", ""),
        4,
        "decap.interfaces",
        "missing key",
    );
    assert_one(
        &with(HOST, "addresses = [\"10.1.0.21\"]\n", ""),
        4,
        "decap.addresses",
        "missing key",
    );
    assert_one(
        &with(HOST, "[\"eth0\"]", "[]"),
        5,
        "decap.interfaces",
        "lists no interface",
    );
    assert_one(
        &with(HOST, "[\"10.1.0.21\"]", "[]"),
        6,
        "decap.addresses",
        "lists no address",
    );
    assert_one(
        &with(HOST, "[\"eth0\"]", "[\"eth0\", \"eth0\"]"),
        5,
        "decap.interfaces[1]",
        "already listed (line 5)",
    );
    assert_one(
        &with(HOST, "[\"10.1.0.21\"]", "[\"10.1.0.21\", \"224.0.0.1\"]"),
        6,
        "decap.addresses[1]",
        "multicast",
    );
    assert_one(
        &with(HOST, "[\"10.1.0.21\"]", "[\"10.1.0.21\", \"10.1.0.21\"]"),
        6,
        "decap.addresses[1]",
        "already listed",
    );
    assert_one(
        &with(HOST, "[\"10.1.0.21\"]", "[\"host\"]"),
        6,
        "decap.addresses[0]",
        "not an IP address",
    );
    assert_one(
        &format!("{HOST}mode = \"tc\"\n"),
        9,
        "decap.mode",
        "unknown",
    );
    assert_one("decap = 1\n[node]\nname = \"host1\"\n", 1, "decap", "table");
}
