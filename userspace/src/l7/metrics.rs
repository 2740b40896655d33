//! Counters per listener, route, pool and server, rendered as Prometheus text for the admin
//! API. Plain relaxed atomics: read rarely, bumped on every request.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct ListenerMetrics {
    pub connections: AtomicU64,
    pub active: AtomicU64,
    pub requests: AtomicU64,
    /// Of those, the requests forwarded by the byte-level HTTP/1.1 fast path.
    pub fast_requests: AtomicU64,
    /// Requests refused before routing: missing, repeated or invalid Host.
    pub bad_requests: AtomicU64,
    pub no_route: AtomicU64,
    pub proxy_protocol_errors: AtomicU64,
    /// Connections of a PROXY listener from peers outside `proxy_from`, closed unread.
    pub proxy_protocol_refused: AtomicU64,
    pub tls_errors: AtomicU64,
    /// Clients cut for their silence (`client_timeout_ms`): a response not taken, or a
    /// request body not sent.
    pub client_timeouts: AtomicU64,
}

#[derive(Debug, Default)]
pub struct RouteMetrics {
    pub requests: AtomicU64,
}

#[derive(Debug, Default)]
pub struct PoolMetrics {
    pub requests: AtomicU64,
    /// Responses by class: 1xx..5xx.
    pub responses: [AtomicU64; 5],
    /// Requests answered 502/503/504 by the proxy itself.
    pub no_server: AtomicU64,
    pub upstream_errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub retries: AtomicU64,
}

#[derive(Debug, Default)]
pub struct ServerMetrics {
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    pub connects: AtomicU64,
    pub reuses: AtomicU64,
    pub ejections: AtomicU64,
    /// Upstream TLS handshakes that failed (certificate refused, no common protocol...).
    pub tls_errors: AtomicU64,
}

impl PoolMetrics {
    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Escapes a label value for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render_listener(out: &mut String, name: &str, m: &ListenerMetrics) {
    let l = label(name);
    for (metric, value) in [
        ("connections_total", get(&m.connections)),
        ("connections_active", get(&m.active)),
        ("requests_total", get(&m.requests)),
        ("fast_path_requests_total", get(&m.fast_requests)),
        ("bad_requests_total", get(&m.bad_requests)),
        ("no_route_total", get(&m.no_route)),
        ("proxy_protocol_errors_total", get(&m.proxy_protocol_errors)),
        (
            "proxy_protocol_refused_total",
            get(&m.proxy_protocol_refused),
        ),
        ("tls_errors_total", get(&m.tls_errors)),
        ("client_timeouts_total", get(&m.client_timeouts)),
    ] {
        let _ = writeln!(
            out,
            "portier_l7_listener_{metric}{{listener=\"{l}\"}} {value}"
        );
    }
}

pub fn render_route(out: &mut String, host: &str, path: &str, pool: &str, m: &RouteMetrics) {
    let _ = writeln!(
        out,
        "portier_l7_route_requests_total{{host=\"{}\",path=\"{}\",pool=\"{}\"}} {}",
        label(host),
        label(path),
        label(pool),
        get(&m.requests)
    );
}

pub fn render_pool(out: &mut String, name: &str, m: &PoolMetrics) {
    let p = label(name);
    let _ = writeln!(
        out,
        "portier_l7_pool_requests_total{{pool=\"{p}\"}} {}",
        get(&m.requests)
    );
    for (i, c) in m.responses.iter().enumerate() {
        let _ = writeln!(
            out,
            "portier_l7_pool_responses_total{{pool=\"{p}\",class=\"{}xx\"}} {}",
            i + 1,
            get(c)
        );
    }
    for (metric, value) in [
        ("no_server_total", get(&m.no_server)),
        ("upstream_errors_total", get(&m.upstream_errors)),
        ("timeouts_total", get(&m.timeouts)),
        ("retries_total", get(&m.retries)),
    ] {
        let _ = writeln!(out, "portier_l7_pool_{metric}{{pool=\"{p}\"}} {value}");
    }
}

/// A server's state at the time of rendering.
pub struct ServerGauges {
    pub outstanding: usize,
    /// Upstream connections kept alive, waiting for a request.
    pub idle: usize,
    pub up: bool,
    pub weight: u32,
}

pub fn render_server(
    out: &mut String,
    pool: &str,
    server: &str,
    m: &ServerMetrics,
    g: &ServerGauges,
) {
    let ServerGauges {
        outstanding,
        idle,
        up,
        weight,
    } = *g;
    let labels = format!("pool=\"{}\",server=\"{}\"", label(pool), label(server));
    for (metric, value) in [
        ("requests_total", get(&m.requests)),
        ("failures_total", get(&m.failures)),
        ("connects_total", get(&m.connects)),
        ("reuses_total", get(&m.reuses)),
        ("ejections_total", get(&m.ejections)),
        ("tls_errors_total", get(&m.tls_errors)),
        ("outstanding", outstanding as u64),
        ("idle_connections", idle as u64),
        ("up", u64::from(up)),
        ("weight", u64::from(weight)),
    ] {
        let _ = writeln!(out, "portier_l7_server_{metric}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_lines() {
        let m = PoolMetrics::default();
        m.requests.fetch_add(3, Ordering::Relaxed);
        m.response(204);
        m.response(503);
        m.response(0);
        let mut out = String::new();
        render_pool(&mut out, "to\"do", &m);
        assert!(
            out.contains("portier_l7_pool_requests_total{pool=\"to\\\"do\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("class=\"2xx\"} 1\n"));
        assert!(out.contains("class=\"5xx\"} 1\n"));
        assert!(out.contains("class=\"1xx\"} 1\n"));
    }
}
