//! What changed between two `/status` documents, and what is wrong in one: the dashboard's
//! log of state transitions and the node's health. Pure (JSON in, records out), so every
//! part's shape is tested here without a daemon.
//!
//! Reading the published status instead of asking each part for its events keeps the parts
//! unaware of the log, and the log sees exactly what an operator saw.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One object's state at one moment, and the reason the part gave for it if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub state: String,
    pub reason: Option<String>,
}

/// A state change as the log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub part: String,
    pub object: String,
    /// `None` when the object appeared (a new backend, a new neighbour).
    pub from: Option<String>,
    /// `None` when the object went away.
    pub to: Option<String>,
    pub reason: Option<String>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn observed(state: &Value, reason: Option<&Value>) -> Observed {
    Observed {
        state: text(state),
        reason: reason
            .filter(|r| !r.is_null())
            .map(text)
            .filter(|r| !r.is_empty()),
    }
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// Every object with a state in a status document, keyed by (part, object name).
pub fn states(status: &Value) -> BTreeMap<(String, String), Observed> {
    let mut out = BTreeMap::new();
    let mut put = |part: &str, object: String, o: Observed| {
        out.insert((part.to_string(), object), o);
    };
    for svc in items(&status["l4"]["services"]) {
        for b in items(&svc["backends"]) {
            put(
                "l4",
                format!("{} {}", text(&svc["name"]), text(&b["address"])),
                observed(&b["state"], b.get("reason")),
            );
        }
    }
    if let Some(pools) = status["l7"]["pools"].as_object() {
        for (pool, p) in pools {
            for s in items(&p["servers"]) {
                put(
                    "l7",
                    format!("{pool} {}", text(&s["address"])),
                    observed(&s["state"], None),
                );
            }
        }
    }
    for i in items(&status["vrrp"]["instances"]) {
        put(
            "vrrp",
            text(&i["name"]),
            observed(&i["state"], i.get("last_transition").map(|t| &t["reason"])),
        );
    }
    for i in items(&status["ospf"]["interfaces"]) {
        put(
            "ospf",
            format!("interface {}", text(&i["name"])),
            observed(&i["state"], None),
        );
        for n in items(&i["neighbors"]) {
            put(
                "ospf",
                format!("neighbor {} on {}", text(&n["router_id"]), text(&i["name"])),
                observed(&n["state"], None),
            );
        }
    }
    for s in items(&status["bfd"]["sessions"]) {
        put(
            "bfd",
            format!("{} on {}", text(&s["peer"]), text(&s["interface"])),
            observed(&s["session"]["state"], s["session"].get("diag")),
        );
    }
    for p in items(&status["bgp"]["peers"]) {
        put(
            "bgp",
            format!("peer {}", text(&p["address"])),
            observed(&p["state"], p.get("last_error")),
        );
    }
    out
}

/// The transitions from `before` to `after`, at `at_ms`.
pub fn diff(
    before: &BTreeMap<(String, String), Observed>,
    after: &BTreeMap<(String, String), Observed>,
    at_ms: u64,
) -> Vec<Transition> {
    let record =
        |(part, object): &(String, String), from: Option<&Observed>, to: Option<&Observed>| {
            Transition {
                at_ms,
                part: part.clone(),
                object: object.clone(),
                from: from.map(|o| o.state.clone()),
                to: to.map(|o| o.state.clone()),
                reason: to.and_then(|o| o.reason.clone()),
            }
        };
    let changed = after.iter().filter_map(|(key, now)| match before.get(key) {
        Some(was) if was.state == now.state => None,
        was => Some(record(key, was, Some(now))),
    });
    let gone = before
        .iter()
        .filter(|(key, _)| !after.contains_key(*key))
        .map(|(key, was)| record(key, Some(was), None));
    changed.chain(gone).collect()
}

/// What an operator should look at, one line each; empty when all is well. Expected states
/// are not problems: a drained backend, a VRRP backup, OSPF neighbours in 2-Way with a
/// DROther (they never form an adjacency).
pub fn problems(status: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for svc in items(&status["l4"]["services"]) {
        let backends: Vec<&Value> = items(&svc["backends"]).collect();
        for b in &backends {
            let state = text(&b["state"]);
            if state != "active" && state != "drained" {
                out.push(format!(
                    "l4 {}: backend {} {state}",
                    text(&svc["name"]),
                    text(&b["address"])
                ));
            }
        }
        if !backends.is_empty() && backends.iter().all(|b| b["state"] != "active") {
            out.push(format!("l4 {}: no active backend", text(&svc["name"])));
        }
    }
    if let Some(pools) = status["l7"]["pools"].as_object() {
        for (pool, p) in pools {
            for s in items(&p["servers"]) {
                let state = text(&s["state"]);
                if state == "down" || state == "ejected" {
                    out.push(format!("l7 {pool}: server {} {state}", text(&s["address"])));
                }
            }
        }
    }
    for i in items(&status["vrrp"]["instances"]) {
        if i["state"] == "fault" {
            out.push(format!("vrrp {}: fault", text(&i["name"])));
        }
    }
    for i in items(&status["ospf"]["interfaces"]) {
        if i["state"] == "down" {
            out.push(format!("ospf interface {}: down", text(&i["name"])));
        }
        for n in items(&i["neighbors"]) {
            let state = text(&n["state"]);
            if !matches!(state.as_str(), "full" | "2-way") {
                out.push(format!(
                    "ospf neighbor {} on {}: {state}",
                    text(&n["router_id"]),
                    text(&i["name"])
                ));
            }
        }
    }
    for s in items(&status["bfd"]["sessions"]) {
        if s["session"]["state"] != "up" {
            out.push(format!(
                "bfd {} on {}: {}",
                text(&s["peer"]),
                text(&s["interface"]),
                text(&s["session"]["state"])
            ));
        }
    }
    for p in items(&status["bgp"]["peers"]) {
        if p["state"] != "Established" {
            out.push(format!(
                "bgp peer {}: {}",
                text(&p["address"]),
                text(&p["state"])
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lab(backend_22: &str, vrrp: &str) -> Value {
        json!({
            "l4": { "services": [{ "name": "web", "backends": [
                { "address": "10.0.0.21", "state": "active" },
                { "address": "10.0.0.22", "state": backend_22 },
            ]}]},
            "vrrp": { "instances": [{ "name": "vip51", "state": vrrp,
                "last_transition": { "reason": "master down timer expired" } }]},
            "ospf": { "interfaces": [{ "name": "eth0", "state": "drother", "neighbors": [
                { "router_id": "10.0.0.1", "state": "full" },
                { "router_id": "10.0.0.12", "state": "2-way" },
            ]}]},
            "bgp": { "peers": [{ "address": "10.0.0.1", "state": "Established", "last_error": null }]},
        })
    }

    #[test]
    fn a_backend_going_down_and_a_vrrp_takeover_are_logged_with_their_reason() {
        let before = states(&lab("active", "backup"));
        let after = states(&lab("down", "master"));
        let t = diff(&before, &after, 7);
        assert_eq!(
            t,
            vec![
                Transition {
                    at_ms: 7,
                    part: "l4".into(),
                    object: "web 10.0.0.22".into(),
                    from: Some("active".into()),
                    to: Some("down".into()),
                    reason: None,
                },
                Transition {
                    at_ms: 7,
                    part: "vrrp".into(),
                    object: "vip51".into(),
                    from: Some("backup".into()),
                    to: Some("master".into()),
                    reason: Some("master down timer expired".into()),
                },
            ]
        );
        assert!(diff(&after, &after, 8).is_empty());
    }

    #[test]
    fn objects_appearing_and_leaving_are_logged() {
        let before = states(&json!({}));
        let after = states(&lab("active", "master"));
        let t = diff(&before, &after, 1);
        assert_eq!(t.len(), after.len());
        assert!(t.iter().all(|t| t.from.is_none()));
        let t = diff(&after, &before, 2);
        assert!(t.iter().all(|t| t.to.is_none()) && t.len() == after.len());
    }

    #[test]
    fn problems_name_what_is_wrong_and_not_what_is_expected() {
        assert!(problems(&lab("drained", "backup")).is_empty());
        assert_eq!(
            problems(&lab("down", "fault")),
            vec![
                "l4 web: backend 10.0.0.22 down".to_string(),
                "vrrp vip51: fault".to_string()
            ]
        );
        let mut s = lab("active", "master");
        s["bgp"]["peers"][0]["state"] = json!("Active");
        assert_eq!(problems(&s), vec!["bgp peer 10.0.0.1: Active".to_string()]);
    }
}
