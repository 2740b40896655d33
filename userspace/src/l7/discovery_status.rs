//! Docker discovery in `/status` and `/metrics`: the engine connection and every container
//! with our labels, with what became of it.

use crate::discovery::docker::source::Report;
use crate::part::prometheus::family;
use std::collections::BTreeMap;

/// `refused`: containers the config made discovery refuse (short id -> why).
pub fn status(r: &Report, refused: &BTreeMap<String, String>) -> serde_json::Value {
    let containers: Vec<serde_json::Value> = r
        .discovered
        .containers
        .iter()
        .map(|e| {
            let (state, detail) = match refused.get(&e.source.id) {
                Some(why) => ("refused", Some(why.as_str())),
                None => (e.state.word(), e.state.detail()),
            };
            serde_json::json!({
                "id": e.source.id,
                "name": e.source.name,
                "state": state,
                "detail": detail,
                "pool": e.pool,
                "address": e.address.map(|a| a.to_string()),
            })
        })
        .collect();
    serde_json::json!({
        "endpoint": r.endpoint,
        "connected": r.connected,
        "stale": r.stale,
        "last_error": r.last_error,
        "containers": containers,
        "over_limit": r.over_limit,
        "events": r.events,
        "resyncs": r.resyncs,
        "disconnects": r.disconnects,
    })
}

pub fn metrics(out: &mut String, r: &Report) {
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &r.discovered.containers {
        *by_state.entry(e.state.word()).or_default() += 1;
    }
    family(
        out,
        "portier_l7_discovery_connected",
        "gauge",
        "1 while the container engine answers.",
        [(String::new(), u64::from(r.connected))],
    );
    family(
        out,
        "portier_l7_discovery_stale",
        "gauge",
        "1 while the engine is unreachable and the last known containers stay in force.",
        [(String::new(), u64::from(r.stale))],
    );
    family(
        out,
        "portier_l7_discovery_containers",
        "gauge",
        "Containers with portier labels, by what became of them.",
        by_state
            .into_iter()
            .map(|(s, n)| (format!("state=\"{s}\""), n)),
    );
    family(
        out,
        "portier_l7_discovery_servers",
        "gauge",
        "Pool servers that come from containers.",
        [(String::new(), r.discovered.servers.len() as u64)],
    );
    family(
        out,
        "portier_l7_discovery_over_limit_total",
        "counter",
        "Containers not taken because max_containers were already.",
        [(String::new(), r.over_limit)],
    );
    family(
        out,
        "portier_l7_discovery_events_total",
        "counter",
        "Engine events received.",
        [(String::new(), r.events)],
    );
    family(
        out,
        "portier_l7_discovery_resyncs_total",
        "counter",
        "Full listings of the engine's containers (at start and after each reconnect).",
        [(String::new(), r.resyncs)],
    );
    family(
        out,
        "portier_l7_discovery_disconnects_total",
        "counter",
        "Times the engine connection was lost.",
        [(String::new(), r.disconnects)],
    );
}
