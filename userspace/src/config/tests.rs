use std::net::IpAddr;

use super::test_support::{FILE, assert_one, assert_problem, problems};
use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A valid file with one service; tests append or replace lines to break it.
const BASE: &str = r#"[node]
name = "lb1"
interfaces = ["eth0"]

[[service]]
name = "web"
vip = "203.0.113.10"
port = 80
protocol = "tcp"

  [[service.backend]]
  address = "10.0.0.21"
"#;

fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

#[test]
fn example_parses() {
    let config = parse(include_str!("example.toml"), "example.toml").unwrap();
    assert_eq!(
        config.node,
        NodeConfig {
            name: "lb1".into(),
            interfaces: vec!["eth0".into()],
            xdp_mode: XdpMode::Auto,
        }
    );
    assert_eq!(
        config.dataplane,
        DataplaneConfig {
            encap_source_v4: Some(("10.255.0.0".parse().unwrap(), 24)),
            encap_source_v6: Some(("fd00:255::".parse().unwrap(), 64)),
            midflow_sources: vec![("198.51.100.0".parse().unwrap(), 24)],
            ..DataplaneConfig::default()
        }
    );
    assert_eq!(
        config.decap,
        Some(DecapConfig {
            interfaces: vec!["eth0".into()],
            addresses: vec![ip("10.0.0.21")],
            sources: vec![(ip("10.255.0.0"), 24), (ip("fd00:255::"), 64)],
            vips: vec![ip("203.0.113.10"), ip("2001:db8:f::10")],
        })
    );
    assert_eq!(config.services.len(), 3);
    assert_eq!(
        config.services[0],
        ServiceConfig {
            name: "web".into(),
            vip: ip("203.0.113.10"),
            port: 80,
            protocol: Protocol::Tcp,
            forwarding: Forwarding::Dsr,
            backends: vec![
                BackendConfig {
                    address: ip("10.0.0.21"),
                    weight: 1
                },
                BackendConfig {
                    address: ip("10.0.0.22"),
                    weight: 2
                },
                BackendConfig {
                    address: ip("10.0.0.23"),
                    weight: 0
                },
            ],
            health: None,
        }
    );
    assert_eq!(config.services[1].port, 0);
    assert_eq!(config.services[1].protocol, Protocol::Udp);
    assert_eq!(config.services[2].vip, ip("2001:db8::10"));
}

#[test]
fn defaults_apply() {
    let config = parse("[node]\nname = \"lb-2\"\n", FILE).unwrap();
    assert_eq!(config.node.interfaces, Vec::<String>::new());
    assert_eq!(config.node.xdp_mode, XdpMode::Auto);
    assert_eq!(config.dataplane.maglev_table_size, 65537);
    assert_eq!(config.dataplane.conntrack_size, 65536);
    assert!(config.services.is_empty());

    let config = parse(BASE, FILE).unwrap();
    assert_eq!(config.services[0].forwarding, Forwarding::Dsr);
    assert_eq!(config.services[0].backends[0].weight, 1);
}

#[test]
fn explicit_values() {
    let text = format!("{BASE}\n[dataplane]\nmaglev_table_size = 7\nconntrack_size = 16_777_216\n")
        .replace(
            "interfaces = [\"eth0\"]",
            "interfaces = [\"eth0\"]\nxdp_mode = \"generic\"",
        );
    let config = parse(&text, FILE).unwrap();
    assert_eq!(config.node.xdp_mode, XdpMode::Generic);
    assert_eq!(config.dataplane.maglev_table_size, 7);
    assert_eq!(config.dataplane.conntrack_size, 16_777_216);
}

#[test]
fn syntax_error() {
    let text = base_with("port = 80", "port = 80 81");
    assert_one(&text, 8, "service[0].port", "");
    let text = base_with("address = \"10.0.0.21\"", "address = \"10.0.0.21");
    assert_one(&text, 12, "service[0].backend[0].address", "string");
}

#[test]
fn several_syntax_errors() {
    let text = "[node]\nname = lb1\n\n[[service]]\n[[service]]\nport = 80 81\n";
    let found = problems(text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(&found[0], 2, "node.name", "");
    assert_problem(&found[1], 6, "service[1].port", "");
}

#[test]
fn syntax_error_outside_any_key() {
    let found = problems("[node\nname = \"lb1\"\n");
    assert!(!found.is_empty());
    assert_eq!((found[0].line, found[0].key.as_str()), (1, ""));
    assert!(
        found[0].to_string().starts_with("portier.toml:1: "),
        "{}",
        found[0]
    );
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    let text = base_with("port = 80", "port = 80\nport = 81");
    assert_one(&text, 9, "service[0].port", "duplicate");
}

#[test]
fn unknown_keys_everywhere() {
    let text = format!("{BASE}  wieght = 2\n[services]\n")
        .replace("[node]\n", "[node]\nnmae = \"x\"\n")
        .replace(
            "protocol = \"tcp\"",
            "protocol = \"tcp\"\nhealthcheck = true",
        );
    let found = problems(&text);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert_problem(
        &found[0],
        2,
        "node.nmae",
        "expected one of: name, interfaces, xdp_mode",
    );
    assert_problem(
        &found[1],
        11,
        "service[0].healthcheck",
        "unknown key \"healthcheck\"",
    );
    assert_problem(
        &found[2],
        15,
        "service[0].backend[0].wieght",
        "address, weight",
    );
    assert_problem(&found[3], 16, "services", "node, dataplane, service");
}

#[test]
fn unknown_key_in_dataplane() {
    let text = format!("{BASE}[dataplane]\nmaglev_size = 7\n");
    assert_one(&text, 14, "dataplane.maglev_size", "unknown key");
}

#[test]
fn wrong_types() {
    let text = base_with("port = 80", "port = \"80\"");
    assert_one(
        &text,
        8,
        "service[0].port",
        "expected an integer, found a string",
    );
    let text = base_with("interfaces = [\"eth0\"]", "interfaces = \"eth0\"");
    assert_one(&text, 3, "node.interfaces", "expected an array of strings");
    let text = base_with("interfaces = [\"eth0\"]", "interfaces = [\"eth0\", 1]");
    assert_one(
        &text,
        3,
        "node.interfaces[1]",
        "expected a string, found an integer",
    );
    let text = base_with(
        "  address = \"10.0.0.21\"",
        "  address = \"10.0.0.21\"\n  weight = 1.5",
    );
    assert_one(&text, 13, "service[0].backend[0].weight", "found a float");
    let text = "node = \"lb1\"\n";
    assert_one(text, 1, "node", "expected a table, found a string");
    let text = format!("{BASE}\n[dataplane]\nconntrack_size = true\n");
    assert_one(&text, 15, "dataplane.conntrack_size", "found a boolean");
}

#[test]
fn service_must_be_an_array_of_tables() {
    let text = "[node]\nname = \"lb1\"\n\n[service]\nname = \"web\"\n";
    assert_one(text, 4, "service", "expected an array of tables");
}

#[test]
fn missing_required_keys_point_at_their_table() {
    let text = base_with("protocol = \"tcp\"\n", "");
    assert_one(&text, 5, "service[0].protocol", "missing required key");
    let text = base_with("  address = \"10.0.0.21\"\n", "  weight = 2\n");
    assert_one(
        &text,
        11,
        "service[0].backend[0].address",
        "missing required key",
    );
    let text = base_with("name = \"lb1\"\n", "");
    assert_one(&text, 1, "node.name", "missing required key");
    assert_one("# nothing\n", 1, "node", "missing required key");
    let text = format!("{BASE}\n[[service]]\nname = \"dns\"\nprotocol = \"udp\"\n");
    assert_one(&text, 14, "service[1].vip", "missing required key");
}

#[test]
fn interfaces_needed_once_services_exist() {
    let text = base_with("interfaces = [\"eth0\"]\n", "");
    assert_one(&text, 1, "node.interfaces", "missing required key");
    let text = base_with("interfaces = [\"eth0\"]", "interfaces = []");
    assert_one(&text, 3, "node.interfaces", "at least one interface");
    // Only the bad name is reported, not also an empty list.
    let text = base_with("interfaces = [\"eth0\"]", "interfaces = [\"a/b\"]");
    assert_one(&text, 3, "node.interfaces[0]", "not an interface name");
}

#[test]
fn bad_interface_names() {
    let text = base_with(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\", \"a-very-long-name0\", \"eth0\", \"br/0\"]",
    );
    let found = problems(&text);
    assert_eq!(found.len(), 3, "{found:#?}");
    let mut keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "node.interfaces[1]",
            "node.interfaces[2]",
            "node.interfaces[3]"
        ]
    );
    assert!(found.iter().all(|p| p.line == 3));
}

#[test]
fn bad_ip() {
    let text = base_with("vip = \"203.0.113.10\"", "vip = \"203.0.113\"");
    let found = problems(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        found[0].to_string(),
        "portier.toml:7: service[0].vip: \"203.0.113\" is not an IP address"
    );
    let text = base_with("address = \"10.0.0.21\"", "address = \"host1\"");
    assert_one(
        &text,
        12,
        "service[0].backend[0].address",
        "is not an IP address",
    );
}

#[test]
fn vip_must_be_unicast() {
    let text = base_with("vip = \"203.0.113.10\"", "vip = \"0.0.0.0\"");
    assert_one(&text, 7, "service[0].vip", "unspecified");
    let text = base_with("vip = \"203.0.113.10\"", "vip = \"224.0.0.18\"");
    assert_one(&text, 7, "service[0].vip", "multicast");
}

#[test]
fn backend_family_must_match_vip() {
    let text = base_with("address = \"10.0.0.21\"", "address = \"2001:db8::21\"");
    assert_one(
        &text,
        12,
        "service[0].backend[0].address",
        "2001:db8::21 is IPv6 but the service vip 203.0.113.10 is IPv4",
    );
}

#[test]
fn backend_must_not_be_the_vip() {
    let text = base_with("address = \"10.0.0.21\"", "address = \"203.0.113.10\"");
    assert_one(&text, 12, "service[0].backend[0].address", "vip itself");
}

const SECOND: &str = r#"
[[service]]
name = "NAME"
vip = "VIP"
port = PORT
protocol = "PROTO"

  [[service.backend]]
  address = "10.0.0.22"
"#;

fn with_second(name: &str, vip: &str, port: u32, protocol: &str) -> String {
    let second = SECOND
        .replace("NAME", name)
        .replace("VIP", vip)
        .replace("PORT", &port.to_string())
        .replace("PROTO", protocol);
    format!("{BASE}{second}")
}

#[test]
fn duplicate_service_name() {
    let text = with_second("web", "203.0.113.11", 80, "tcp");
    assert_one(
        &text,
        15,
        "service[1].name",
        "\"web\" is already used (line 6)",
    );
}

#[test]
fn duplicate_listener() {
    let text = with_second("web2", "203.0.113.10", 80, "tcp");
    assert_one(
        &text,
        16,
        "service[1].vip",
        "203.0.113.10 port 80/tcp is already served by service \"web\" (line 7)",
    );
}

#[test]
fn distinct_listeners_are_allowed() {
    // Port 0 (every port) next to a specific port on the same vip: the exact port wins.
    parse(&with_second("all", "203.0.113.10", 0, "tcp"), FILE).unwrap();
    parse(&with_second("udp", "203.0.113.10", 80, "udp"), FILE).unwrap();
    parse(&with_second("other", "203.0.113.11", 80, "tcp"), FILE).unwrap();
    // Two port-0 services on the same vip and protocol do collide.
    let text = with_second("all", "203.0.113.10", 0, "tcp").replace("port = 80\n", "");
    assert_one(&text, 15, "service[1].vip", "every port/tcp");
}

#[test]
fn duplicate_backend_address() {
    let text = format!("{BASE}\n  [[service.backend]]\n  address = \"10.0.0.21\"\n");
    assert_one(
        &text,
        15,
        "service[0].backend[1].address",
        "10.0.0.21 is already in this service (line 12)",
    );
}

#[test]
fn same_backend_in_two_services_is_fine() {
    let text = with_second("web2", "203.0.113.11", 80, "tcp").replace("10.0.0.22", "10.0.0.21");
    parse(&text, FILE).unwrap();
}

#[test]
fn weight_range() {
    for (weight, ok) in [
        ("0", true),
        ("65535", true),
        ("65536", false),
        ("-1", false),
    ] {
        let text = format!("{BASE}  weight = {weight}\n");
        if ok {
            parse(&text, FILE).unwrap();
        } else {
            assert_one(
                &text,
                13,
                "service[0].backend[0].weight",
                &format!("{weight} is out of range 0..=65535"),
            );
        }
    }
}

#[test]
fn port_range() {
    let text = base_with("port = 80", "port = 65536");
    assert_one(&text, 8, "service[0].port", "out of range 0..=65535");
}

#[test]
fn maglev_table_size_must_be_a_prime_in_range() {
    let text = format!("{BASE}[dataplane]\nmaglev_table_size = 65536\n");
    assert_one(
        &text,
        14,
        "dataplane.maglev_table_size",
        "65536 is not a prime",
    );
    let text = format!("{BASE}[dataplane]\nmaglev_table_size = 5\n");
    assert_one(
        &text,
        14,
        "dataplane.maglev_table_size",
        "out of range 7..=4194301",
    );
    let text = format!("{BASE}[dataplane]\nmaglev_table_size = 4_194_301\n");
    parse(&text, FILE).unwrap();
}

#[test]
fn conntrack_size_range() {
    let text = format!("{BASE}[dataplane]\nconntrack_size = 0\n");
    assert_one(
        &text,
        14,
        "dataplane.conntrack_size",
        "out of range 1..=16777216",
    );
}

#[test]
fn midflow_sources() {
    let text = format!("{BASE}[dataplane]\nmidflow_sources = [\"198.51.100.0/24\", \"::/0\"]\n");
    let config = parse(&text, FILE).unwrap();
    assert_eq!(
        config.dataplane.midflow_sources,
        vec![
            ("198.51.100.0".parse().unwrap(), 24),
            ("::".parse().unwrap(), 0)
        ]
    );
    let text = format!("{BASE}[dataplane]\nmidflow_sources = [\"198.51.100.0\"]\n");
    assert_one(
        &text,
        14,
        "dataplane.midflow_sources[0]",
        "is not an address/length prefix",
    );
}

#[test]
fn new_flow_rate_defaults_to_a_tenth_of_the_table() {
    let text = format!("{BASE}[dataplane]\nconntrack_size = 1_000_000\n");
    assert_eq!(parse(&text, FILE).unwrap().dataplane.new_flow_rate, 100_000);
    let text = format!("{BASE}[dataplane]\nnew_flow_rate = 0\n");
    assert_eq!(parse(&text, FILE).unwrap().dataplane.new_flow_rate, 0);
    let text = format!("{BASE}[dataplane]\nnew_flow_rate = -1\n");
    assert_one(&text, 14, "dataplane.new_flow_rate", "out of range");
}

#[test]
fn dataplane_debug_is_a_boolean_off_by_default() {
    assert!(!parse(BASE, FILE).unwrap().dataplane.debug);
    let text = format!("{BASE}[dataplane]\ndebug = true\n");
    assert!(parse(&text, FILE).unwrap().dataplane.debug);
    let text = format!("{BASE}[dataplane]\ndebug = \"yes\"\n");
    assert_one(&text, 14, "dataplane.debug", "a boolean");
}

#[test]
fn node_name_rules() {
    for bad in ["LB1", "", "lb_1", "a23456789012345678901234567890123"] {
        let text = base_with("name = \"lb1\"", &format!("name = \"{bad}\""));
        assert_one(&text, 2, "node.name", "a-z, 0-9 and '-'");
    }
    let text = base_with(
        "name = \"lb1\"",
        "name = \"a2345678901234567890123456789012\"",
    );
    parse(&text, FILE).unwrap();
}

#[test]
fn service_name_rules() {
    let text = base_with("name = \"web\"", "name = \"web site\"");
    assert_one(&text, 6, "service[0].name", "1 to 64 characters");
}

#[test]
fn unknown_enum_values_list_the_allowed_ones() {
    let text = base_with("protocol = \"tcp\"", "protocol = \"sctp\"");
    assert_one(
        &text,
        9,
        "service[0].protocol",
        "unknown value \"sctp\" (allowed: tcp, udp)",
    );
    let text = base_with(
        "protocol = \"tcp\"",
        "protocol = \"tcp\"\nforwarding = \"nat\"",
    );
    assert_one(&text, 10, "service[0].forwarding", "(allowed: dsr, ipip)");
    let text = base_with(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\"]\nxdp_mode = \"skb\"",
    );
    assert_one(
        &text,
        4,
        "node.xdp_mode",
        "(allowed: auto, native, generic)",
    );
}

fn many_services(count: usize, backends_each: usize) -> String {
    let mut text = String::from("[node]\nname = \"lb1\"\ninterfaces = [\"eth0\"]\n");
    for s in 0..count {
        text.push_str(&format!(
            "\n[[service]]\nname = \"s{s}\"\nvip = \"203.0.113.10\"\nport = {}\nprotocol = \"tcp\"\n",
            s + 1
        ));
        for b in 0..backends_each {
            let n = s * backends_each + b;
            text.push_str(&format!(
                "  [[service.backend]]\n  address = \"10.{}.{}.{}\"\n",
                n / 65536,
                n / 256 % 256,
                n % 256
            ));
        }
    }
    text
}

#[test]
fn at_most_256_services() {
    parse(&many_services(256, 1), FILE).unwrap();
    let text = many_services(257, 1);
    // Header of the 257th service: 3 node lines, then 8 lines per service.
    assert_one(
        &text,
        3 + 256 * 8 + 2,
        "service[256]",
        "257 services configured, at most 256",
    );
}

#[test]
fn at_most_4096_distinct_backends() {
    parse(&many_services(64, 64), FILE).unwrap();
    let text = format!(
        "{}  [[service.backend]]\n  address = \"10.1.0.0\"\n",
        many_services(64, 64)
    );
    let last_line = text.lines().count();
    assert_one(
        &text,
        last_line,
        "service[63].backend[64].address",
        "more than 4096 distinct backend addresses",
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = r#"[node]
name = "LB1"
interfaces = ["eth0"]
color = "blue"

[[service]]
name = "web"
vip = "203.0.113"
port = 70000

  [[service.backend]]
  address = "2001:db8::1"
  weight = 100000

[[service]]
name = "web"
vip = "203.0.113.11"
protocol = "icmp"
"#;
    let error = parse(text, FILE).unwrap_err();
    assert_eq!(
        error.to_string(),
        [
            "portier.toml:2: node.name: \"LB1\" must be 1 to 32 characters from a-z, 0-9 and '-'",
            "portier.toml:4: node.color: unknown key \"color\" (expected one of: name, interfaces, xdp_mode)",
            "portier.toml:6: service[0].protocol: missing required key",
            "portier.toml:8: service[0].vip: \"203.0.113\" is not an IP address",
            "portier.toml:9: service[0].port: 70000 is out of range 0..=65535",
            "portier.toml:13: service[0].backend[0].weight: 100000 is out of range 0..=65535",
            "portier.toml:16: service[1].name: service name \"web\" is already used (line 7)",
            "portier.toml:18: service[1].protocol: unknown value \"icmp\" (allowed: tcp, udp)",
        ]
        .join("\n")
    );
}

#[test]
fn load_names_the_file() {
    let missing = std::path::Path::new("/nonexistent/portier.toml");
    let error = load(missing).unwrap_err();
    assert!(matches!(error, ConfigError::Io { .. }));
    assert!(error.problems().is_empty());
    assert!(
        error.to_string().starts_with("/nonexistent/portier.toml: "),
        "{error}"
    );

    let dir = std::env::temp_dir().join(format!("portier-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lab.toml");
    std::fs::write(&path, base_with("port = 80", "port = \"x\"")).unwrap();
    let error = load(&path).unwrap_err();
    std::fs::write(&path, BASE).unwrap();
    let loaded = load(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(error.problems()[0].file, path.display().to_string());
    assert_eq!(error.problems()[0].line, 8);
    assert_eq!(loaded.unwrap(), parse(BASE, FILE).unwrap());
}

#[test]
fn configs_compare_for_reload() {
    let before = parse(BASE, FILE).unwrap();
    let after = parse(&format!("{BASE}  weight = 0\n"), FILE).unwrap();
    assert_ne!(before, after);
    assert_eq!(after.services[0].backends[0].weight, 0);
}

#[test]
fn health_check_defaults_and_http_fields() {
    let text = format!(
        "{BASE}\n[service.health]\nkind = \"http\"\npath = \"/healthz\"\nhost = \"todo.example\"\nexpect_status = 204\nrise = 1\n"
    );
    let c = parse(&text, FILE).unwrap();
    let h = c.services[0].health.clone().unwrap();
    assert_eq!(h.kind, HealthKind::Http);
    assert_eq!(
        (h.interval_ms, h.timeout_ms, h.rise, h.fall),
        (2000, 1000, 1, 3)
    );
    let http = h.http.unwrap();
    assert_eq!(http.method, "GET");
    assert_eq!(http.path, "/healthz");
    assert_eq!(http.host.as_deref(), Some("todo.example"));
    assert_eq!(http.expect_status, 204);
    assert_eq!(parse(BASE, FILE).unwrap().services[0].health, None);
}

#[test]
fn health_check_errors_name_their_keys() {
    // Lines: BASE is 12 lines, then a blank line, the table header at 14.
    let text = format!("{BASE}\n[service.health]\nkind = \"icmp\"\n");
    assert_one(&text, 15, "service[0].health.kind", "allowed: tcp, http");
    let text = format!("{BASE}\n[service.health]\npath = \"/x\"\n");
    assert_one(
        &text,
        14,
        "service[0].health.path",
        "only applies to kind = \"http\"",
    );
    let text = format!("{BASE}\n[service.health]\nkind = \"http\"\npath = \"no-slash\"\n");
    assert_one(&text, 16, "service[0].health.path", "not a request path");
    let text = format!("{BASE}\n[service.health]\ninterval_ms = 100\ntimeout_ms = 200\n");
    assert_one(
        &text,
        14,
        "service[0].health.timeout_ms",
        "longer than interval_ms",
    );
    let text = format!("{BASE}\n[service.health]\nfall = 0\n");
    assert_one(&text, 15, "service[0].health.fall", "out of range");
    let text = format!("{BASE}\n[service.health]\nbogus = 1\n");
    assert_one(&text, 15, "service[0].health.bogus", "unknown key");
}

#[test]
fn health_check_of_an_every_port_service_needs_a_port() {
    let text = format!(
        "{}\n[service.health]\nkind = \"tcp\"\n",
        base_with("port = 80\n", "")
    );
    assert_one(&text, 13, "service[0].health.port", "must name one");
    let text = format!(
        "{}\n[service.health]\nkind = \"tcp\"\nport = 80\n",
        base_with("port = 80\n", "")
    );
    assert_eq!(
        parse(&text, FILE).unwrap().services[0]
            .health
            .as_ref()
            .unwrap()
            .port,
        Some(80)
    );
}

#[test]
fn admin_socket_is_per_node_and_tcp_is_optional() {
    let c = parse(BASE, FILE).unwrap();
    assert_eq!(c.admin.listen, None);
    assert_eq!(
        c.admin.socket_path(&c.node.name),
        std::path::PathBuf::from("/run/portier/lb1.sock")
    );
    let c = parse(&format!("{BASE}[admin]\n"), FILE).unwrap();
    assert_eq!(c.admin.listen, Some(AdminConfig::DEFAULT_LISTEN));
    assert!(warnings(&c).is_empty());
}

#[test]
fn admin_beyond_loopback_warns_without_allow() {
    let open = parse(&format!("{BASE}[admin]\nlisten = \"0.0.0.0:9900\"\n"), FILE).unwrap();
    let w = warnings(&open);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("admin.listen: 0.0.0.0:9900"), "{w:?}");
    let limited = parse(
        &format!(
            "{BASE}[admin]\nlisten = \"0.0.0.0:9900\"\nallow = [\"10.0.0.0/8\", \"::1/128\"]\n"
        ),
        FILE,
    )
    .unwrap();
    assert!(warnings(&limited).is_empty());
    let allow = &limited.admin.allow;
    assert!(allow[0].contains(ip("10.1.2.3")));
    assert!(allow[0].contains(ip("::ffff:10.1.2.3")));
    assert!(!allow[0].contains(ip("11.0.0.1")));
    assert!(allow[1].contains(ip("::1")));
    assert!(!allow[1].contains(ip("127.0.0.1")));
}

#[test]
fn admin_problems_name_their_keys() {
    let line = BASE.lines().count() + 2;
    assert_one(
        &format!("{BASE}[admin]\nallow = [\"10.0.0.0/33\"]\n"),
        line,
        "admin.allow[0]",
        "not an address/length prefix",
    );
    assert_one(
        &format!("{BASE}[admin]\nsocket = \"relative.sock\"\n"),
        line,
        "admin.socket",
        "absolute path",
    );
    assert_one(
        &format!("{BASE}[admin]\ngroup = \"a b\"\n"),
        line,
        "admin.group",
        "must be 1 to 32 characters",
    );
}
