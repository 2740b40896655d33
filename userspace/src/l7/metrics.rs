//! Counters per listener, route, pool and server, rendered as metrics for the admin API.
//! Plain relaxed atomics: read rarely, bumped on every request.

use crate::labels;
use crate::part::prometheus::Metrics;
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
    /// Body bytes the fast path moved with splice(2) rather than copying them.
    pub spliced_bytes: AtomicU64,
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
    /// Routing to response head, per request (see `latency`).
    pub latency: super::latency::Latency,
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

pub fn render_listener(out: &mut Metrics, name: &str, m: &ListenerMetrics) {
    let l = || labels![("listener", name)];
    out.counter(
        "listener_connections",
        "Connections accepted.",
        l(),
        get(&m.connections),
    );
    out.gauge_u(
        "listener_connections_active",
        "Connections open now.",
        l(),
        get(&m.active),
    );
    for (metric, help, value) in [
        ("listener_requests", "Requests received.", get(&m.requests)),
        (
            "listener_fast_path_requests",
            "Requests forwarded by the byte-level HTTP/1.1 fast path.",
            get(&m.fast_requests),
        ),
        (
            "listener_bad_requests",
            "Requests refused before routing: missing, repeated or invalid Host.",
            get(&m.bad_requests),
        ),
        (
            "listener_no_route",
            "Requests no route matched.",
            get(&m.no_route),
        ),
        (
            "listener_proxy_protocol_errors",
            "Connections with a malformed PROXY header.",
            get(&m.proxy_protocol_errors),
        ),
        (
            "listener_proxy_protocol_refused",
            "Connections of a PROXY listener from peers outside proxy_from, closed unread.",
            get(&m.proxy_protocol_refused),
        ),
        (
            "listener_tls_errors",
            "TLS handshakes that failed.",
            get(&m.tls_errors),
        ),
        (
            "listener_client_timeouts",
            "Clients cut for their silence (client_timeout_ms).",
            get(&m.client_timeouts),
        ),
        (
            "listener_spliced_bytes",
            "Body bytes moved between sockets with splice(2) instead of copies.",
            get(&m.spliced_bytes),
        ),
    ] {
        out.counter(metric, help, l(), value);
    }
}

pub fn render_route(out: &mut Metrics, host: &str, path: &str, pool: &str, m: &RouteMetrics) {
    out.counter(
        "route_requests",
        "Requests routed by the route.",
        labels![("host", host), ("path", path), ("pool", pool)],
        get(&m.requests),
    );
}

pub fn render_pool(out: &mut Metrics, name: &str, m: &PoolMetrics) {
    out.counter(
        "pool_requests",
        "Requests sent to the pool.",
        labels![("pool", name)],
        get(&m.requests),
    );
    for (i, c) in m.responses.iter().enumerate() {
        out.counter(
            "pool_responses",
            "Responses, by status class.",
            labels![("pool", name), ("class", format!("{}xx", i + 1))],
            get(c),
        );
    }
    for (metric, help, value) in [
        (
            "pool_no_server",
            "Requests answered 502/503/504 by the proxy itself.",
            get(&m.no_server),
        ),
        (
            "pool_upstream_errors",
            "Requests that failed on the upstream connection.",
            get(&m.upstream_errors),
        ),
        (
            "pool_timeouts",
            "Requests that timed out upstream.",
            get(&m.timeouts),
        ),
        (
            "pool_retries",
            "Requests retried on another server.",
            get(&m.retries),
        ),
    ] {
        out.counter(metric, help, labels![("pool", name)], value);
    }
    out.histogram(
        "pool_request_duration_seconds",
        "Time from routing a request to its response head: queue, connect, send and the server's answer.",
        labels![("pool", name)],
        m.latency.counts().histogram(),
    );
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
    out: &mut Metrics,
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
    let l = || labels![("pool", pool), ("server", server)];
    for (metric, help, value) in [
        (
            "server_requests",
            "Requests sent to the server.",
            get(&m.requests),
        ),
        (
            "server_failures",
            "Requests that failed at the server (connect, reset, timeout).",
            get(&m.failures),
        ),
        (
            "server_connects",
            "Upstream connections opened.",
            get(&m.connects),
        ),
        (
            "server_reuses",
            "Requests sent on a kept-alive connection.",
            get(&m.reuses),
        ),
        (
            "server_ejections",
            "Times the server was ejected by passive health checks.",
            get(&m.ejections),
        ),
        (
            "server_tls_errors",
            "Upstream TLS handshakes that failed.",
            get(&m.tls_errors),
        ),
    ] {
        out.counter(metric, help, l(), value);
    }
    for (metric, help, value) in [
        (
            "server_outstanding",
            "Requests in flight to the server.",
            outstanding as u64,
        ),
        (
            "server_idle_connections",
            "Upstream connections kept alive, waiting for a request.",
            idle as u64,
        ),
        (
            "server_up",
            "1 while the server takes requests.",
            u64::from(up),
        ),
        (
            "server_weight",
            "The server's weight now (0: drained).",
            u64::from(weight),
        ),
    ] {
        out.gauge_u(metric, help, l(), value);
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
        let mut out = Metrics::new("l7");
        render_pool(&mut out, "to\"do", &m);
        let out = out.text();
        assert!(
            out.contains("portier_l7_pool_requests_total{pool=\"to\\\"do\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("class=\"2xx\"} 1\n"));
        assert!(out.contains("class=\"5xx\"} 1\n"));
        assert!(out.contains("class=\"1xx\"} 1\n"));
    }
}
