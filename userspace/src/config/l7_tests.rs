//! `[l7]` errors: each names the file, line and key.

use super::super::parse;
use super::super::test_support::{FILE, L7_BASE, assert_one, problems};
use super::*;

const BASE: &str = L7_BASE;

fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?}");
    BASE.replacen(from, to, 1)
}

#[test]
fn defaults() {
    let c = parse(BASE, FILE).unwrap().l7.unwrap();
    assert_eq!(c.drain_timeout_ms, 10_000);
    assert_eq!((c.coalesce_us, c.coalesce_min_requests), (100, 128));
    let l = &c.listeners[0];
    assert_eq!(l.bind, "0.0.0.0:80".parse().unwrap());
    assert_eq!(l.protocols, vec![HttpProtocol::Http1]);
    assert!(l.certificates.is_empty() && !l.proxy_protocol && !l.access_log);
    assert_eq!(
        (
            l.max_connections,
            l.header_timeout_ms,
            l.max_header_bytes,
            l.no_route_status
        ),
        (10_000, 10_000, 65_536, 404)
    );
    // HAProxy-like bounds on slow clients: `timeout client` 30 s, idle HTTP/2 connections
    // closed after as long, at most 100 requests of one connection at the servers.
    assert_eq!(
        (
            l.client_timeout_ms,
            l.h2_idle_timeout_ms,
            l.max_upstream_per_connection
        ),
        (30_000, 30_000, 100)
    );
    assert_eq!(
        c.routes[0],
        RouteConfig {
            host: "todo.example".into(),
            path_prefix: "/".into(),
            pool: "todo".into(),
            listener: None
        }
    );
    let p = &c.pools[0];
    assert_eq!(p.balance, Balance::RoundRobin);
    assert_eq!(p.protocol, HttpProtocol::Http1);
    assert_eq!(
        p.servers,
        vec![ServerConfig {
            address: "172.17.0.2:8080".parse().unwrap(),
            weight: 1,
            sni: None
        }]
    );
    assert_eq!(p.health, None);
    assert_eq!((p.retries, p.max_connections, p.eject_after), (2, 1000, 5));
    // `timeout server` 30 s, `timeout tunnel` 1 h.
    assert_eq!(
        (p.response_timeout_ms, p.tunnel_timeout_ms),
        (30_000, 3_600_000)
    );
    assert_eq!(p.forwarding, ForwardingFields::ALL);
    // No [l7]: no proxy.
    assert_eq!(parse("[node]\nname = \"a\"\n", FILE).unwrap().l7, None);
}

#[test]
fn everything_set() {
    let text = r#"[node]
name = "host1"

[l7]
drain_timeout_ms = 500
coalesce_us = 50
coalesce_min_requests = 64

[[l7.listener]]
name = "https"
bind = "[::]:443"
protocols = ["h2", "http1"]
proxy_protocol = true
proxy_from = ["10.0.0.0/24", "fd00::/64"]
max_connections = 5
header_timeout_ms = 1000
max_header_bytes = 8192
client_timeout_ms = 11
h2_idle_timeout_ms = 12
max_upstream_per_connection = 13
no_route_status = 421
access_log = true
  [[l7.listener.certificate]]
  cert = "/etc/portier/a.pem"
  key = "/etc/portier/a.key"

[[l7.route]]
host = "*.Example"
path_prefix = "/api"
pool = "api"
listener = "https"

[[l7.pool]]
name = "api"
balance = "hash-cookie:session"
protocol = "h2c"
servers = [{ address = "172.17.0.2:8080", weight = 3 }, { address = "[fd00::2]:80", weight = 0 }]
health = { path = "/health", status = 204, interval_ms = 100, timeout_ms = 50, rise = 1, fall = 4 }
connect_timeout_ms = 1
response_timeout_ms = 2
idle_timeout_ms = 3
total_timeout_ms = 4
max_connections = 5
queue_timeout_ms = 6
retries = 0
eject_after = 0
eject_ms = 7
tunnel_timeout_ms = 86400000
"#;
    let c = parse(text, FILE).unwrap().l7.unwrap();
    assert_eq!(c.drain_timeout_ms, 500);
    assert_eq!((c.coalesce_us, c.coalesce_min_requests), (50, 64));
    let l = &c.listeners[0];
    assert_eq!(l.protocols, vec![HttpProtocol::H2, HttpProtocol::Http1]);
    assert!(l.proxy_protocol && l.access_log);
    assert_eq!(l.proxy_from.len(), 2);
    assert!(l.proxy_from[0].contains("10.0.0.11".parse().unwrap()));
    assert_eq!(
        l.certificates[0].key,
        std::path::PathBuf::from("/etc/portier/a.key")
    );
    assert_eq!(l.no_route_status, 421);
    assert_eq!(
        (
            l.client_timeout_ms,
            l.h2_idle_timeout_ms,
            l.max_upstream_per_connection
        ),
        (11, 12, 13)
    );
    assert_eq!(c.routes[0].host, "*.example");
    assert_eq!(c.routes[0].listener.as_deref(), Some("https"));
    let p = &c.pools[0];
    assert_eq!(p.balance, Balance::HashCookie("session".into()));
    assert_eq!(p.servers[1].weight, 0);
    assert_eq!(p.health.as_ref().unwrap().status, 204);
    assert_eq!(
        (
            p.connect_timeout_ms,
            p.response_timeout_ms,
            p.idle_timeout_ms,
            p.total_timeout_ms
        ),
        (1, 2, 3, 4)
    );
    assert_eq!(
        (
            p.max_connections,
            p.queue_timeout_ms,
            p.retries,
            p.eject_after,
            p.eject_ms
        ),
        (5, 6, 0, 0, 7)
    );
    assert_eq!(p.tunnel_timeout_ms, 86_400_000);
}

#[test]
fn unknown_keys() {
    assert_one(
        &with("bind = \"0.0.0.0:80\"", "bind = \"0.0.0.0:80\"\nbnid = 1"),
        7,
        "l7.listener[0].bnid",
        "unknown key",
    );
    assert_one(
        &with("pool = \"todo\"\n", "pool = \"todo\"\nweight = 1\n"),
        11,
        "l7.route[0].weight",
        "unknown key",
    );
    assert_one(
        &with(
            "{ address = \"172.17.0.2:8080\" }",
            "{ address = \"172.17.0.2:8080\", wieght = 2 }",
        ),
        14,
        "l7.pool[0].servers[0].wieght",
        "unknown key",
    );
    assert_one(
        &format!("{BASE}health = {{ paht = \"/\" }}\n"),
        15,
        "l7.pool[0].health.paht",
        "unknown key",
    );
}

#[test]
fn coalescing_problems() {
    let at = |v: &str| format!("[node]\nname = \"h\"\n\n[l7]\n{v}\n");
    assert_one(
        &at("coalesce_us = 5000"),
        5,
        "l7.coalesce_us",
        "out of range 0..=1000",
    );
    assert_one(
        &at("coalesce_min_requests = 0"),
        5,
        "l7.coalesce_min_requests",
        "out of range 1..=100000",
    );
    assert_one(
        &at("coalesce_us = \"30us\""),
        5,
        "l7.coalesce_us",
        "expected an integer",
    );
}

#[test]
fn listener_problems() {
    assert_one(
        &with("0.0.0.0:80", "0.0.0.0"),
        6,
        "l7.listener[0].bind",
        "not an address with a port",
    );
    assert_one(
        &with("name = \"http\"", "name = \"h t\""),
        5,
        "l7.listener[0].name",
        "1 to 64 characters",
    );
    let two = format!("{BASE}\n[[l7.listener]]\nname = \"http\"\nbind = \"0.0.0.0:80\"\n");
    let found = problems(&two);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(
        (found[0].line, found[0].key.as_str()),
        (17, "l7.listener[1].name")
    );
    assert!(found[0].message.contains("already used (line 5)"));
    assert_eq!(
        (found[1].line, found[1].key.as_str()),
        (18, "l7.listener[1].bind")
    );
    assert!(
        found[1]
            .message
            .contains("already bound by a listener (line 6)")
    );
    let p = |v: &str| {
        with(
            "bind = \"0.0.0.0:80\"",
            &format!("bind = \"0.0.0.0:80\"\n{v}"),
        )
    };
    assert_one(
        &p("protocols = [\"h2\"]"),
        7,
        "l7.listener[0].protocols[0]",
        "needs [[l7.listener.certificate]]",
    );
    assert_one(
        &p("protocols = [\"http3\"]"),
        7,
        "l7.listener[0].protocols[0]",
        "allowed: http1, h2c, h2",
    );
    assert_one(
        &p("protocols = []"),
        7,
        "l7.listener[0].protocols",
        "at least one",
    );
    assert_one(
        &p("protocols = [\"h2c\", \"h2c\"]"),
        7,
        "l7.listener[0].protocols[1]",
        "listed twice",
    );
    assert_one(
        &p("protocols = [\"h2c\"]\n[[l7.listener.certificate]]\ncert = \"a\"\nkey = \"b\""),
        7,
        "l7.listener[0].protocols[0]",
        "use h2",
    );
    assert_one(
        &p("[[l7.listener.certificate]]\ncert = \"a\""),
        7,
        "l7.listener[0].certificate[0].key",
        "missing",
    );
    assert_one(
        &p("max_header_bytes = 100"),
        7,
        "l7.listener[0].max_header_bytes",
        "out of range 8192..=1048576",
    );
    assert_one(
        &p("no_route_status = 200"),
        7,
        "l7.listener[0].no_route_status",
        "out of range 400..=599",
    );
    assert_one(
        &p("header_timeout_ms = 0"),
        7,
        "l7.listener[0].header_timeout_ms",
        "out of range",
    );
    assert_one(
        &p("client_timeout_ms = 0"),
        7,
        "l7.listener[0].client_timeout_ms",
        "out of range",
    );
    assert_one(
        &p("max_upstream_per_connection = 0"),
        7,
        "l7.listener[0].max_upstream_per_connection",
        "out of range",
    );
    assert_one(
        &p("proxy_protocol = \"yes\""),
        7,
        "l7.listener[0].proxy_protocol",
        "expected a boolean",
    );
}

#[test]
fn route_problems() {
    assert_one(
        &with("pool = \"todo\"\n\n", "pool = \"shop\"\n\n"),
        10,
        "l7.route[0].pool",
        "no pool named \"shop\"",
    );
    assert_one(
        &with("host = \"todo.example\"", "host = \"todo.example:80\""),
        9,
        "l7.route[0].host",
        "not a host name",
    );
    assert_one(
        &with("host = \"todo.example\"", "host = \"*todo\""),
        9,
        "l7.route[0].host",
        "\"*.suffix\"",
    );
    assert_one(
        &with(
            "pool = \"todo\"\n\n",
            "pool = \"todo\"\npath_prefix = \"api\"\n\n",
        ),
        11,
        "l7.route[0].path_prefix",
        "must start with '/'",
    );
    assert_one(
        &with(
            "pool = \"todo\"\n\n",
            "pool = \"todo\"\nlistener = \"https\"\n\n",
        ),
        11,
        "l7.route[0].listener",
        "no listener named",
    );
    assert_one(
        &with(
            "pool = \"todo\"\n\n",
            "pool = \"todo\"\n\n[[l7.route]]\nhost = \"TODO.example\"\npool = \"todo\"\n\n",
        ),
        13,
        "l7.route[1].host",
        "already defined (line 9)",
    );
    assert_one(
        &with("host = \"todo.example\"\n", ""),
        8,
        "l7.route[0].host",
        "missing required key",
    );
}

#[test]
fn forwarding_fields_chosen() {
    let pool = |v: &str| {
        parse(&format!("{BASE}{v}\n"), FILE)
            .unwrap()
            .l7
            .unwrap()
            .pools[0]
            .forwarding
    };
    assert_eq!(
        pool("forwarding = [\"x-forwarded-for\"]"),
        ForwardingFields {
            xff: true,
            ..ForwardingFields::NONE
        }
    );
    assert_eq!(pool("forwarding = []"), ForwardingFields::NONE);
    assert_eq!(
        pool("forwarding = [\"forwarded\", \"x-forwarded-proto\", \"x-forwarded-host\"]"),
        ForwardingFields {
            xff: false,
            ..ForwardingFields::ALL
        }
    );
}

#[test]
fn pool_problems() {
    let p = |v: &str| format!("{BASE}{v}\n");
    assert_one(
        &p("balance = \"random\""),
        15,
        "l7.pool[0].balance",
        "hash-header:NAME",
    );
    assert_one(
        &p("balance = \"hash-header:bad header\""),
        15,
        "l7.pool[0].balance",
        "unknown value",
    );
    assert_one(
        &p("balance = \"hash-cookie:\""),
        15,
        "l7.pool[0].balance",
        "unknown value",
    );
    assert_one(
        &p("protocol = \"h2\""),
        15,
        "l7.pool[0].protocol",
        "set tls = true",
    );
    assert_one(
        &p("retries = 11"),
        15,
        "l7.pool[0].retries",
        "out of range 0..=10",
    );
    assert_one(
        &p("tunnel_timeout_ms = 0"),
        15,
        "l7.pool[0].tunnel_timeout_ms",
        "out of range 1..=86400000",
    );
    assert_one(
        &p("forwarding = [\"x-forwarded-for\", \"x-real-ip\"]"),
        15,
        "l7.pool[0].forwarding[1]",
        "unknown value \"x-real-ip\" (allowed: x-forwarded-for, x-forwarded-proto, \
         x-forwarded-host, forwarded)",
    );
    assert_one(
        &p("forwarding = [\"forwarded\", \"forwarded\"]"),
        15,
        "l7.pool[0].forwarding[1]",
        "listed twice",
    );
    assert_one(
        &p("forwarding = \"forwarded\""),
        15,
        "l7.pool[0].forwarding",
        "an array of strings",
    );
    assert_one(
        &p("health = { status = 99 }"),
        15,
        "l7.pool[0].health.status",
        "out of range 100..=599",
    );
    assert_one(
        &p("health = { path = \"health\" }"),
        15,
        "l7.pool[0].health.path",
        "must start with '/'",
    );
    assert_one(
        &with(
            "{ address = \"172.17.0.2:8080\" }",
            "{ address = \"172.17.0.2:8080\" }, { address = \"172.17.0.2:8080\" }",
        ),
        14,
        "l7.pool[0].servers[1].address",
        "already in this pool (line 14)",
    );
    assert_one(
        &with(
            "\"172.17.0.2:8080\" }",
            "\"172.17.0.2:8080\", weight = 257 }",
        ),
        14,
        "l7.pool[0].servers[0].weight",
        "out of range 0..=256",
    );
    assert_one(
        &with("172.17.0.2:8080", "172.17.0.2"),
        14,
        "l7.pool[0].servers[0].address",
        "not an address with a port",
    );
    assert_one(
        &with("servers = [{ address = \"172.17.0.2:8080\" }]\n", ""),
        12,
        "l7.pool[0].servers",
        "missing required key",
    );
    assert_one(
        &format!("{BASE}\n[[l7.pool]]\nname = \"todo\"\nservers = []\n"),
        17,
        "l7.pool[1].name",
        "pool name \"todo\" is already used (line 13)",
    );
}

#[test]
fn lab_host_example_parses() {
    let c = parse(
        include_str!("../../../examples/lab-host.toml"),
        "lab-host.toml",
    )
    .unwrap();
    let l7 = c.l7.unwrap();
    assert_eq!(l7.routes.len(), 2);
    assert_eq!(l7.pools[0].balance, Balance::LeastOutstanding);
}

#[test]
fn example_l7_section_parses() {
    let c = parse(include_str!("example.toml"), "example.toml").unwrap();
    let l7 = c.l7.unwrap();
    assert_eq!(l7.listeners.len(), 2);
    assert_eq!(
        l7.listeners[1].protocols,
        vec![HttpProtocol::H2, HttpProtocol::Http1]
    );
    assert_eq!(l7.routes[1].host, "*.shop.example");
    assert_eq!(l7.pools[0].health.as_ref().map(|h| h.fall), Some(3));
    assert_eq!(l7.pools[0].tls, None);
    assert_eq!(l7.listeners[0].client_timeout_ms, 30_000);
    assert_eq!(l7.pools[0].tunnel_timeout_ms, 3_600_000);
    let secure = &l7.pools[1];
    assert_eq!(secure.protocol, HttpProtocol::H2);
    assert_eq!(
        secure.tls,
        Some(UpstreamTlsConfig {
            ca_file: Some("/etc/portier/backend-ca.pem".into()),
            sni: Some("api.internal".into()),
            verify: true
        })
    );
    assert_eq!(secure.servers[0].sni.as_deref(), Some("api-1.internal"));
}
