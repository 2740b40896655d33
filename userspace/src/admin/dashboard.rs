//! The dashboard: one page, its stylesheet and its script, compiled into the binary so the
//! node serves it with nothing else installed and the browser fetches nothing from elsewhere
//! (the Content-Security-Policy says so: no inline script, no other origin).
//!
//! No framework: the page is a few tables redrawn from each status document, which plain DOM
//! calls do in a few hundred lines anyone can read and change.

use super::{Body, live::Live, reply};
use crate::part::prometheus::Metrics;
use hyper::header::{CACHE_CONTROL, HeaderValue};
use hyper::{Response, StatusCode};
use std::sync::atomic::Ordering;

const INDEX: &str = include_str!("dashboard/index.html");
const FILES: [(&str, &str, &str); 2] = [
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/dashboard.css"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/dashboard.js"),
    ),
];

/// What the page may load: only from the node itself; no frames, no form posts.
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn with_headers(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // Small and compiled in: always fresh after an upgrade of the node.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub fn page() -> Response<Body> {
    with_headers(reply(StatusCode::OK, "text/html; charset=utf-8", INDEX))
}

pub fn has(name: &str) -> bool {
    FILES.iter().any(|(n, _, _)| *n == name)
}

pub fn file(name: &str) -> Response<Body> {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, text)) => with_headers(reply(StatusCode::OK, kind, *text)),
        None => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// The admin API's own families: dashboards streaming, and those refused at the bound.
pub fn metrics(live: &Live) -> String {
    let mut m = Metrics::new("admin");
    m.gauge_u(
        "event_streams",
        "Dashboards streaming /events now.",
        vec![],
        live.streams() as u64,
    );
    m.counter(
        "event_streams_refused",
        "Requests for /events refused at the bound on streams.",
        vec![],
        live.counters.refused.load(Ordering::Relaxed),
    );
    m.text()
}
