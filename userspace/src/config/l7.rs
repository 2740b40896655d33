//! The `[l7]` section: HTTP listeners, routes and backend pools.
//!
//! ```toml
//! [[l7.listener]]
//! name = "http"
//! bind = "0.0.0.0:80"
//! [[l7.route]]
//! host = "todo.example"
//! pool = "todo"
//! [[l7.pool]]
//! name = "todo"
//! servers = [{ address = "172.17.0.2:8080" }]
//! ```

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use super::l7_tls;
pub use super::l7_tls::UpstreamTlsConfig;
use super::model::{Choice, Cidr};
use super::reader::{Located, Table};
use super::report::Report;
use super::rules;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct L7Config {
    pub listeners: Vec<ListenerConfig>,
    pub routes: Vec<RouteConfig>,
    pub pools: Vec<PoolConfig>,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub drain_timeout_ms: u64,
    /// Proxy threads, each with its own event loop and its own socket per listener; 0 means
    /// one per CPU the daemon may run on. Read at start: a reload keeps the running count.
    pub workers: u32,
    /// How long a busy worker waits before it looks at its sockets again, so that it answers
    /// several connections per wake-up (0: never waits; 100 by default).
    pub coalesce_us: u32,
    /// The HTTP/1 requests in progress on a worker from which it counts as busy (128); one
    /// whose body is spliced from its client counts 17.
    pub coalesce_min_requests: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpProtocol {
    Http1,
    /// HTTP/2 with prior knowledge on a plain listener (or to a plain upstream).
    H2c,
    /// HTTP/2 negotiated by ALPN on a TLS listener.
    H2,
}

impl Choice for HttpProtocol {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("http1", HttpProtocol::Http1),
        ("h2c", HttpProtocol::H2c),
        ("h2", HttpProtocol::H2),
    ];
}

/// A forwarding field the proxy adds to the requests it sends a pool's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ForwardingField {
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Forwarded,
}

impl Choice for ForwardingField {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("x-forwarded-for", ForwardingField::XForwardedFor),
        ("x-forwarded-proto", ForwardingField::XForwardedProto),
        ("x-forwarded-host", ForwardingField::XForwardedHost),
        ("forwarded", ForwardingField::Forwarded),
    ];
}

/// The forwarding fields of a pool's requests (`forwarding = [...]`). A field left out is
/// neither added nor overwritten: what the client sent under that name goes on unchanged,
/// as with HAProxy without `option forwardfor` or nginx without a `proxy_set_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ForwardingFields {
    pub xff: bool,
    pub proto: bool,
    pub host: bool,
    pub forwarded: bool,
}

impl ForwardingFields {
    /// The default: all four.
    pub const ALL: ForwardingFields = ForwardingFields {
        xff: true,
        proto: true,
        host: true,
        forwarded: true,
    };
    pub const NONE: ForwardingFields = ForwardingFields {
        xff: false,
        proto: false,
        host: false,
        forwarded: false,
    };

    fn flag(&mut self, field: ForwardingField) -> &mut bool {
        match field {
            ForwardingField::XForwardedFor => &mut self.xff,
            ForwardingField::XForwardedProto => &mut self.proto,
            ForwardingField::XForwardedHost => &mut self.host,
            ForwardingField::Forwarded => &mut self.forwarded,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateConfig {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub protocols: Vec<HttpProtocol>,
    /// TLS is terminated when certificates are given; chosen by SNI.
    pub certificates: Vec<CertificateConfig>,
    /// Expect a PROXY protocol v2 header before each connection's first byte.
    pub proxy_protocol: bool,
    /// Peers allowed to send that header; connections from others are closed and counted.
    pub proxy_from: Vec<Cidr>,
    pub max_connections: u32,
    /// Time allowed for a request head to arrive (slowloris defence); on HTTP/1 it also
    /// bounds how long an idle keep-alive connection waits for its next request.
    pub header_timeout_ms: u64,
    pub max_header_bytes: usize,
    /// The client's silence (HAProxy's `timeout client`): a response it takes no byte of, or
    /// a request body it stops sending, for this long ends the request (408 or a close),
    /// counted against the client, never the server.
    pub client_timeout_ms: u64,
    /// The largest request body accepted (0: no limit); a larger one gets 413 and the
    /// connection closes (nginx's `client_max_body_size`).
    pub max_body_bytes: u64,
    /// An HTTP/2 connection with no request in progress for this long is closed (GOAWAY).
    pub h2_idle_timeout_ms: u64,
    /// Requests one client connection may have at the servers at once (HTTP/2 streams hold
    /// a server slot until their response is sent); more wait up to the pool's queue time.
    pub max_upstream_per_connection: u32,
    /// Status sent when no route matches (404, or 421 Misdirected Request).
    pub no_route_status: u16,
    /// One structured log line per request (target `portier::access`).
    pub access_log: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteConfig {
    /// `name`, `*.suffix` or `*`, lowercase, without port.
    pub host: String,
    pub path_prefix: String,
    pub pool: String,
    /// Only on this listener; every listener when absent.
    pub listener: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    RoundRobin,
    /// Power of two choices on outstanding requests.
    LeastOutstanding,
    /// Consistent hash of a header's value.
    HashHeader(String),
    /// Consistent hash of a cookie's value.
    HashCookie(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerConfig {
    pub address: SocketAddr,
    /// 0 drains the server: no new requests.
    pub weight: u32,
    /// With upstream TLS: this server's SNI and certificate name, over the pool's `sni`.
    pub sni: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpHealthConfig {
    pub path: String,
    pub status: u16,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolConfig {
    pub name: String,
    pub balance: Balance,
    pub servers: Vec<ServerConfig>,
    pub health: Option<HttpHealthConfig>,
    pub protocol: HttpProtocol,
    /// TLS to the servers; plain TCP when absent.
    pub tls: Option<UpstreamTlsConfig>,
    pub connect_timeout_ms: u64,
    /// The server's silence (HAProxy's `timeout server`): from the request's last byte
    /// sent to the response head, while the server takes none of the request body, and
    /// between two reads of the response body.
    pub response_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// Whole exchange, head to end of response body; 0 for none.
    pub total_timeout_ms: u64,
    /// Per server; requests beyond it wait in a queue up to `queue_timeout_ms`.
    pub max_connections: u32,
    pub queue_timeout_ms: u64,
    pub retries: u32,
    /// Consecutive connect errors or 5xx responses that eject a server; 0 disables.
    pub eject_after: u32,
    pub eject_ms: u64,
    /// An upgraded connection (WebSocket) with no byte either way for this long is closed
    /// (HAProxy's `timeout tunnel`).
    pub tunnel_timeout_ms: u64,
    pub forwarding: ForwardingFields,
}

/// On from 128 requests in progress on a worker, 100 us: on a VM whose rounds agree within a
/// few percent (2026-12-04), the matrix's 256 keep-alive row got 1.09-1.14x the requests/s at
/// 0.82-0.87x the CPU per request, POST 1 MB (16 connections, waits from 8) 1.16x, rows of 64
/// connections were unchanged at 128 (0.97-1.01x) but lost 4-5% waiting from 8. Below 128 a
/// worker keeps up without its wake-ups costing the clients and servers much; above it every
/// send woke a worker asleep in `epoll_wait` from the other CPU (1.38 calls per request).
/// Earlier runs on a noisier VM, waiting from 8, had turned either way (2026-12-03).
pub const DEFAULT_COALESCE_US: u32 = 100;
pub const DEFAULT_COALESCE_MIN_REQUESTS: u32 = 128;

pub(super) fn read(report: &mut Report<'_>, table: &Table<'_, '_>) -> Option<L7Config> {
    table.deny_unknown(
        report,
        &[
            "listener",
            "route",
            "pool",
            "drain_timeout_ms",
            "workers",
            "coalesce_us",
            "coalesce_min_requests",
        ],
    );
    let drain_timeout_ms = ms(report, table, "drain_timeout_ms", 10_000);
    let workers = int(report, table, "workers", 0..=1024, 0u32);
    let coalesce_us = int(report, table, "coalesce_us", 0..=1000, DEFAULT_COALESCE_US);
    let coalesce_min_requests = int(
        report,
        table,
        "coalesce_min_requests",
        1..=100_000,
        DEFAULT_COALESCE_MIN_REQUESTS,
    );
    let listeners: Vec<_> = table
        .array_of_tables(report, "listener")
        .iter()
        .map(|t| listener(report, t))
        .collect();
    let pools: Vec<_> = table
        .array_of_tables(report, "pool")
        .iter()
        .map(|t| pool(report, t))
        .collect();
    let routes: Vec<_> = table
        .array_of_tables(report, "route")
        .iter()
        .map(|t| route(report, t))
        .collect();

    rules::unique_names(
        report,
        listeners.iter().filter_map(|l| l.0.as_ref()),
        "listener",
    );
    rules::unique_names(report, pools.iter().filter_map(|p| p.0.as_ref()), "pool");
    let mut binds: HashMap<SocketAddr, usize> = HashMap::new();
    for bind in listeners.iter().filter_map(|l| l.1.as_ref()) {
        if let Some(&first) = binds.get(&bind.value) {
            let line = report.line_of(first);
            report.add(
                bind.offset,
                bind.key.clone(),
                format!(
                    "{} is already bound by a listener (line {line})",
                    bind.value
                ),
            );
        } else {
            binds.insert(bind.value, bind.offset);
        }
    }
    let pool_names: HashSet<&str> = pools
        .iter()
        .filter_map(|p| p.0.as_ref())
        .map(|n| n.value.as_str())
        .collect();
    let listener_names: HashSet<&str> = listeners
        .iter()
        .filter_map(|l| l.0.as_ref())
        .map(|n| n.value.as_str())
        .collect();
    let mut seen_routes: HashMap<(Option<String>, String, String), usize> = HashMap::new();
    for r in &routes {
        if let Some(pool) = &r.pool
            && !pool_names.contains(pool.value.as_str())
        {
            report.add(
                pool.offset,
                pool.key.clone(),
                format!("no pool named \"{}\"", pool.value),
            );
        }
        if let Some(Some(l)) = &r.listener
            && !listener_names.contains(l.value.as_str())
        {
            report.add(
                l.offset,
                l.key.clone(),
                format!("no listener named \"{}\"", l.value),
            );
        }
        if let (Some(host), Some(path), Some(listener)) = (&r.host, &r.path_prefix, &r.listener) {
            let key = (
                listener.as_ref().map(|l| l.value.clone()),
                host.value.clone(),
                path.clone(),
            );
            if let Some(&first) = seen_routes.get(&key) {
                let line = report.line_of(first);
                report.add(
                    host.offset,
                    host.key.clone(),
                    format!(
                        "route {}{} is already defined (line {line})",
                        host.value, path
                    ),
                );
            } else {
                seen_routes.insert(key, host.offset);
            }
        }
    }

    let listeners = listeners
        .into_iter()
        .map(|(name, bind, rest)| {
            let mut l = rest?;
            l.name = name?.value;
            l.bind = bind?.value;
            Some(l)
        })
        .collect::<Option<Vec<_>>>()?;
    let pools = pools
        .into_iter()
        .map(|(name, rest)| {
            let mut p = rest?;
            p.name = name?.value;
            Some(p)
        })
        .collect::<Option<Vec<_>>>()?;
    let routes = routes
        .into_iter()
        .map(|r| {
            Some(RouteConfig {
                host: r.host?.value,
                path_prefix: r.path_prefix?,
                pool: r.pool?.value,
                listener: r.listener?.map(|l| l.value),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(L7Config {
        listeners,
        routes,
        pools,
        drain_timeout_ms: drain_timeout_ms?,
        workers: workers?,
        coalesce_us: coalesce_us?,
        coalesce_min_requests: coalesce_min_requests?,
    })
}

fn ms(report: &mut Report<'_>, table: &Table<'_, '_>, key: &str, default: u64) -> Option<u64> {
    match table.optional_int(report, key) {
        Some(v) => rules::in_range(report, v, 1..=3_600_000),
        None => Some(default),
    }
}

fn int<T: TryFrom<i128>>(
    report: &mut Report<'_>,
    table: &Table<'_, '_>,
    key: &str,
    range: std::ops::RangeInclusive<i128>,
    default: T,
) -> Option<T> {
    rules::int_or(report, table, key, range, default)
}

fn name(report: &mut Report<'_>, table: &Table<'_, '_>) -> Option<Located<String>> {
    table.required_str(report, "name").and_then(|v| {
        let (offset, key) = (v.offset, v.key.clone());
        rules::service_name(report, v).map(|value| Located { value, offset, key })
    })
}

fn socket_addr(report: &mut Report<'_>, v: Located<&str>) -> Option<Located<SocketAddr>> {
    match v.value.parse::<SocketAddr>() {
        Ok(value) => Some(Located {
            value,
            offset: v.offset,
            key: v.key,
        }),
        Err(_) => {
            report.add(
                v.offset,
                v.key,
                format!(
                    "\"{}\" is not an address with a port (e.g. 0.0.0.0:80 or [::]:80)",
                    v.value
                ),
            );
            None
        }
    }
}

type ListenerDraft = (
    Option<Located<String>>,
    Option<Located<SocketAddr>>,
    Option<ListenerConfig>,
);

fn listener(report: &mut Report<'_>, table: &Table<'_, '_>) -> ListenerDraft {
    table.deny_unknown(
        report,
        &[
            "name",
            "bind",
            "protocols",
            "certificate",
            "proxy_protocol",
            "proxy_from",
            "max_connections",
            "header_timeout_ms",
            "max_header_bytes",
            "client_timeout_ms",
            "max_body_bytes",
            "h2_idle_timeout_ms",
            "max_upstream_per_connection",
            "no_route_status",
            "access_log",
        ],
    );
    let name = name(report, table);
    let bind = table
        .required_str(report, "bind")
        .and_then(|v| socket_addr(report, v));
    let certificates: Vec<_> = table
        .array_of_tables(report, "certificate")
        .iter()
        .map(|t| {
            t.deny_unknown(report, &["cert", "key"]);
            let cert = t.required_str(report, "cert");
            let key = t.required_str(report, "key");
            Some(CertificateConfig {
                cert: PathBuf::from(cert?.value),
                key: PathBuf::from(key?.value),
            })
        })
        .collect();
    let tls = table.has("certificate");
    let protocols = match table.optional_str_array(report, "protocols") {
        Some(list) => {
            if list.value.is_empty() {
                report.add(
                    list.offset,
                    list.key.clone(),
                    "must list at least one protocol",
                );
            }
            let mut out = Vec::new();
            for item in list.value {
                let (offset, key) = (item.offset, item.key.clone());
                let Some(p) = rules::choice::<HttpProtocol>(report, item) else {
                    continue;
                };
                match (p, tls) {
                    (HttpProtocol::H2c, true) => report.add(
                        offset,
                        key,
                        "h2c is HTTP/2 without TLS; on a listener with certificates use h2",
                    ),
                    (HttpProtocol::H2, false) => report.add(
                        offset,
                        key,
                        "h2 is negotiated by TLS ALPN and needs [[l7.listener.certificate]]; \
                         use h2c for HTTP/2 without TLS",
                    ),
                    _ if out.contains(&p) => report.add(offset, key, "listed twice"),
                    _ => out.push(p),
                }
            }
            Some(out)
        }
        None => Some(vec![HttpProtocol::Http1]),
    };
    let proxy_protocol = table
        .optional_bool(report, "proxy_protocol")
        .map(|v| v.value);
    let proxy_from = rules::cidrs(report, table, "proxy_from");
    // A PROXY header names the client; taking it from anyone lets anyone claim any address.
    if proxy_protocol == Some(true) && !table.has("proxy_from") {
        report.add(
            table.offset(),
            table.key_path("proxy_from"),
            "proxy_protocol = true needs proxy_from: the addresses of the balancers or \
             proxies allowed to send PROXY headers",
        );
    }
    let access_log = table.optional_bool(report, "access_log").map(|v| v.value);
    let max_connections = int(report, table, "max_connections", 1..=1_000_000, 10_000);
    let header_timeout_ms = ms(report, table, "header_timeout_ms", 10_000);
    // hyper's read buffer cannot be smaller than 8 KiB.
    let max_header_bytes = int(report, table, "max_header_bytes", 8192..=1 << 20, 65_536);
    let client_timeout_ms = ms(report, table, "client_timeout_ms", 30_000);
    let max_body_bytes = int(report, table, "max_body_bytes", 0..=1 << 50, 0u64);
    let h2_idle_timeout_ms = ms(report, table, "h2_idle_timeout_ms", 30_000);
    let max_upstream_per_connection = int(
        report,
        table,
        "max_upstream_per_connection",
        1..=100_000,
        100u32,
    );
    let no_route_status = int(report, table, "no_route_status", 400..=599, 404);
    let rest = (|| {
        Some(ListenerConfig {
            name: String::new(),
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            protocols: protocols?,
            certificates: certificates.into_iter().collect::<Option<_>>()?,
            proxy_protocol: proxy_protocol.unwrap_or(false),
            proxy_from: proxy_from?,
            max_connections: max_connections?,
            header_timeout_ms: header_timeout_ms?,
            max_header_bytes: max_header_bytes?,
            client_timeout_ms: client_timeout_ms?,
            max_body_bytes: max_body_bytes?,
            h2_idle_timeout_ms: h2_idle_timeout_ms?,
            max_upstream_per_connection: max_upstream_per_connection?,
            no_route_status: no_route_status?,
            access_log: access_log.unwrap_or(false),
        })
    })();
    (name, bind, rest)
}

struct RouteDraft {
    host: Option<Located<String>>,
    path_prefix: Option<String>,
    pool: Option<Located<String>>,
    /// `Some(None)`: every listener.
    listener: Option<Option<Located<String>>>,
}

fn route(report: &mut Report<'_>, table: &Table<'_, '_>) -> RouteDraft {
    table.deny_unknown(report, &["host", "path_prefix", "pool", "listener"]);
    let host = table.required_str(report, "host").and_then(|v| {
        let normal = crate::hostname::normalise_pattern(v.value);
        if normal.is_none() {
            report.add(
                v.offset,
                v.key.clone(),
                format!(
                    "\"{}\" is not a host name, \"*.suffix\" or \"*\" (no port, no scheme)",
                    v.value
                ),
            );
        }
        normal.map(|value| Located {
            value,
            offset: v.offset,
            key: v.key,
        })
    });
    let path_prefix = match table.optional_str(report, "path_prefix") {
        Some(v) if v.value.starts_with('/') && !v.value.contains(['?', '#', ' ']) => {
            Some(v.value.to_owned())
        }
        Some(v) => {
            report.add(
                v.offset,
                v.key,
                format!(
                    "\"{}\" must start with '/' and hold no '?', '#' or space",
                    v.value
                ),
            );
            None
        }
        None => Some("/".to_owned()),
    };
    let pool = table.required_str(report, "pool").map(|v| Located {
        value: v.value.to_owned(),
        offset: v.offset,
        key: v.key,
    });
    let listener = if table.has("listener") {
        table.optional_str(report, "listener").map(|v| {
            Some(Located {
                value: v.value.to_owned(),
                offset: v.offset,
                key: v.key,
            })
        })
    } else {
        Some(None)
    };
    RouteDraft {
        host,
        path_prefix,
        pool,
        listener,
    }
}

fn balance(report: &mut Report<'_>, v: Located<&str>) -> Option<Balance> {
    let b = match v.value {
        "round-robin" => Some(Balance::RoundRobin),
        "least-outstanding" => Some(Balance::LeastOutstanding),
        other => match other.split_once(':') {
            Some(("hash-header", h)) if http::HeaderName::from_bytes(h.as_bytes()).is_ok() => {
                Some(Balance::HashHeader(h.to_ascii_lowercase()))
            }
            Some(("hash-cookie", c)) if !c.is_empty() && c.bytes().all(is_token_byte) => {
                Some(Balance::HashCookie(c.to_owned()))
            }
            _ => None,
        },
    };
    if b.is_none() {
        report.add(
            v.offset,
            v.key,
            format!(
                "unknown value \"{}\" (allowed: round-robin, least-outstanding, \
                 hash-header:NAME, hash-cookie:NAME)",
                v.value
            ),
        );
    }
    b
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn pool(
    report: &mut Report<'_>,
    table: &Table<'_, '_>,
) -> (Option<Located<String>>, Option<PoolConfig>) {
    let name = name(report, table);
    if !table.has("servers") {
        report.add(
            table.offset(),
            table.key_path("servers"),
            "missing required key",
        );
    }
    (name, pool_settings(report, table, true))
}

/// `[discovery.docker.defaults]`: the settings of pools that only containers make, as a
/// `[[l7.pool]]` without `name` and `servers`.
pub(super) fn pool_defaults(report: &mut Report<'_>, table: &Table<'_, '_>) -> Option<PoolConfig> {
    pool_settings(report, table, false)
}

/// A pool's settings; with `listed`, also its `name` and `servers` keys (read by the caller
/// and here).
fn pool_settings(
    report: &mut Report<'_>,
    table: &Table<'_, '_>,
    listed: bool,
) -> Option<PoolConfig> {
    let listing: &[&str] = if listed { &["name", "servers"] } else { &[] };
    let keys: Vec<&str> = listing
        .iter()
        .copied()
        .chain([
            "balance",
            "health",
            "protocol",
            "connect_timeout_ms",
            "response_timeout_ms",
            "idle_timeout_ms",
            "total_timeout_ms",
            "max_connections",
            "queue_timeout_ms",
            "retries",
            "eject_after",
            "eject_ms",
            "tunnel_timeout_ms",
            "forwarding",
        ])
        .chain(l7_tls::KEYS.iter().copied())
        .collect();
    table.deny_unknown(report, &keys);
    let balance = match table.optional_str(report, "balance") {
        Some(v) => balance(report, v),
        None => Some(Balance::RoundRobin),
    };
    let tls = l7_tls::read(report, table);
    let with_tls = matches!(tls, Some(Some(_)));
    let protocol = match table.optional_str(report, "protocol") {
        Some(v) => {
            let (offset, key) = (v.offset, v.key.clone());
            rules::choice::<HttpProtocol>(report, v).filter(|p| {
                let why = match (p, with_tls) {
                    (HttpProtocol::H2, false) => Some(
                        "h2 is HTTP/2 negotiated by TLS ALPN: set tls = true, \
                         or use h2c for HTTP/2 without TLS",
                    ),
                    (HttpProtocol::H2c, true) => {
                        Some("h2c is HTTP/2 without TLS; with tls = true use h2")
                    }
                    _ => None,
                };
                if let Some(why) = why {
                    report.add(offset, key.clone(), why);
                }
                why.is_none()
            })
        }
        None => Some(HttpProtocol::Http1),
    };
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    let server_tables = if listed {
        table.array_of_tables(report, "servers")
    } else {
        Vec::new()
    };
    let servers: Vec<Option<ServerConfig>> = server_tables
        .iter()
        .map(|t| {
            t.deny_unknown(report, &["address", "weight", "sni"]);
            let address = t
                .required_str(report, "address")
                .and_then(|v| socket_addr(report, v))
                .filter(|a| {
                    if let Some(&first) = seen.get(&a.value) {
                        let line = report.line_of(first);
                        report.add(
                            a.offset,
                            a.key.clone(),
                            format!("server {} is already in this pool (line {line})", a.value),
                        );
                        return false;
                    }
                    seen.insert(a.value, a.offset);
                    true
                });
            let weight = int(
                report,
                t,
                "weight",
                0..=i128::from(crate::limits::L7_MAX_WEIGHT),
                1u32,
            );
            let sni = l7_tls::server_sni(report, t, with_tls);
            Some(ServerConfig {
                address: address?.value,
                weight: weight?,
                sni: sni?,
            })
        })
        .collect();
    let health = match table.optional_table(report, "health") {
        Some(t) => {
            t.deny_unknown(
                report,
                &[
                    "path",
                    "status",
                    "interval_ms",
                    "timeout_ms",
                    "rise",
                    "fall",
                ],
            );
            let path = match t.optional_str(report, "path") {
                Some(v) if v.value.starts_with('/') && !v.value.contains([' ', '\r', '\n']) => {
                    Some(v.value.to_owned())
                }
                Some(v) => {
                    report.add(
                        v.offset,
                        v.key,
                        "must start with '/' and hold no whitespace",
                    );
                    None
                }
                None => Some("/".to_owned()),
            };
            let status = int(report, &t, "status", 100..=599, 200u16);
            let interval_ms = ms(report, &t, "interval_ms", 2000);
            let timeout_ms = ms(report, &t, "timeout_ms", 1000);
            let rise = int(report, &t, "rise", 1..=100, 2u32);
            let fall = int(report, &t, "fall", 1..=100, 3u32);
            (|| {
                Some(Some(HttpHealthConfig {
                    path: path?,
                    status: status?,
                    interval_ms: interval_ms?,
                    timeout_ms: timeout_ms?,
                    rise: rise?,
                    fall: fall?,
                }))
            })()
        }
        None => Some(None),
    };
    let connect_timeout_ms = ms(report, table, "connect_timeout_ms", 3000);
    let response_timeout_ms = ms(report, table, "response_timeout_ms", 30_000);
    let idle_timeout_ms = ms(report, table, "idle_timeout_ms", 30_000);
    let total_timeout_ms = int(report, table, "total_timeout_ms", 0..=86_400_000, 0u64);
    let max_connections = int(report, table, "max_connections", 1..=1_000_000, 1000u32);
    let queue_timeout_ms = ms(report, table, "queue_timeout_ms", 5000);
    let retries = int(report, table, "retries", 0..=10, 2u32);
    let eject_after = int(report, table, "eject_after", 0..=1000, 5u32);
    let eject_ms = ms(report, table, "eject_ms", 10_000);
    let tunnel_timeout_ms = int(
        report,
        table,
        "tunnel_timeout_ms",
        1..=86_400_000,
        3_600_000u64,
    );
    let forwarding = match table.optional_str_array(report, "forwarding") {
        Some(list) => {
            let mut chosen = ForwardingFields::NONE;
            for item in list.value {
                let (offset, key) = (item.offset, item.key.clone());
                let Some(field) = rules::choice::<ForwardingField>(report, item) else {
                    continue;
                };
                let flag = chosen.flag(field);
                if *flag {
                    report.add(offset, key, "listed twice");
                }
                *flag = true;
            }
            chosen
        }
        None => ForwardingFields::ALL,
    };
    (|| {
        Some(PoolConfig {
            name: String::new(),
            balance: balance?,
            servers: servers.into_iter().collect::<Option<_>>()?,
            health: health?,
            protocol: protocol?,
            tls: tls?,
            connect_timeout_ms: connect_timeout_ms?,
            response_timeout_ms: response_timeout_ms?,
            idle_timeout_ms: idle_timeout_ms?,
            total_timeout_ms: total_timeout_ms?,
            max_connections: max_connections?,
            queue_timeout_ms: queue_timeout_ms?,
            retries: retries?,
            eject_after: eject_after?,
            eject_ms: eject_ms?,
            tunnel_timeout_ms: tunnel_timeout_ms?,
            forwarding,
        })
    })()
}

#[cfg(test)]
#[path = "l7_tests.rs"]
mod tests;
