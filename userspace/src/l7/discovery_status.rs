//! Docker discovery in `/status` and `/metrics`: the engine connection and every container
//! with our labels, with what became of it.

use crate::discovery::docker::source::Report;
use crate::labels;
use crate::part::prometheus::Metrics;
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

/// Appends the discovery's metric families (`portier_l7_discovery_*`) to `out`.
/// `refused` as for [`status`]: a container the config refused counts as refused here too.
pub fn metrics(out: &mut String, r: &Report, refused: &BTreeMap<String, String>) {
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &r.discovered.containers {
        let state = if refused.contains_key(&e.source.id) {
            "refused"
        } else {
            e.state.word()
        };
        *by_state.entry(state).or_default() += 1;
    }
    let mut m = Metrics::new("l7");
    m.gauge(
        "discovery_connected",
        "1 while the container engine answers.",
        vec![],
        i64::from(r.connected),
    );
    m.gauge(
        "discovery_stale",
        "1 while the engine is unreachable and the last known containers stay in force.",
        vec![],
        i64::from(r.stale),
    );
    for (state, n) in by_state {
        m.gauge_u(
            "discovery_containers",
            "Containers with portier labels, by what became of them.",
            labels![("state", state)],
            n,
        );
    }
    m.gauge_u(
        "discovery_servers",
        "Pool servers that come from containers.",
        vec![],
        r.discovered.servers.len() as u64,
    );
    m.counter(
        "discovery_over_limit",
        "Containers not taken because max_containers were already.",
        vec![],
        r.over_limit,
    );
    m.counter(
        "discovery_events",
        "Engine events received.",
        vec![],
        r.events,
    );
    m.counter(
        "discovery_resyncs",
        "Full listings of the engine's containers (at start and after each reconnect).",
        vec![],
        r.resyncs,
    );
    m.counter(
        "discovery_disconnects",
        "Times the engine connection was lost.",
        vec![],
        r.disconnects,
    );
    out.push_str(&m.text());
}
