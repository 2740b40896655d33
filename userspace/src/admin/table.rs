//! `portier status` for people: the admin API's JSON as tables, the way `vtysh` and `birdc`
//! users read their daemons. Rendered into a string so `--watch` redraws in one write.

use serde_json::Value;
use std::fmt::Write as _;

/// `writeln!` into the output string; writing to a String cannot fail.
macro_rules! w {
    ($out:expr) => {
        let _ = writeln!($out);
    };
    ($out:expr, $($arg:tt)*) => {
        let _ = writeln!($out, $($arg)*);
    };
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// Seconds as `1d02h03m`, `2h03m04s`, `3m04s`, `4s`.
fn duration(v: &Value) -> String {
    let Some(secs) = v.as_u64() else {
        return "-".into();
    };
    let (d, h, m, sec) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m{sec:02}s"),
        (0, _, _) => format!("{h}h{m:02}m{sec:02}s"),
        _ => format!("{d}d{h:02}h{m:02}m"),
    }
}

pub fn print(status: &Value) {
    print!("{}", render(status));
}

/// Every part as tables; a part this CLI does not know yet as indented JSON.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let Some(parts) = status.as_object() else {
        w!(out, "{status}");
        return out;
    };
    if let Some(node) = parts.get("node") {
        render_node(&mut out, node);
        w!(out);
    }
    for (part, value) in parts {
        match part.as_str() {
            "node" => continue,
            "l4" => print_l4(&mut out, value),
            "vrrp" => print_vrrp(&mut out, value),
            "l7" => print_l7(&mut out, value),
            "ospf" => print_ospf(&mut out, value),
            "bfd" => print_bfd(&mut out, value),
            "bgp" => print_bgp(&mut out, value),
            _ => {
                w!(out, "[{part}]");
                w!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(value).unwrap_or_default()
                );
            }
        }
        w!(out);
    }
    out
}

fn render_node(out: &mut String, node: &Value) {
    w!(
        out,
        "node {} (portier {}), up {}, health {}",
        s(&node["name"]),
        s(&node["version"]),
        duration(&node["uptime_secs"]),
        s(&node["health"])
    );
    for p in items(&node["problems"]) {
        w!(out, "  problem: {}", s(p));
    }
    let log: Vec<&Value> = items(&node["transitions"]).take(5).collect();
    if !log.is_empty() {
        w!(out, "last transitions (newest first):");
    }
    for t in log {
        let ago = node["now_ms"]
            .as_u64()
            .zip(t["at_ms"].as_u64())
            .map(|(now, at)| Value::from(now.saturating_sub(at) / 1000));
        w!(
            out,
            "  {:>8} ago  {:<5} {:<32} {} -> {}{}",
            ago.as_ref().map_or("-".into(), duration),
            s(&t["part"]),
            s(&t["object"]),
            s(&t["from"]),
            s(&t["to"]),
            if t["reason"].is_null() {
                String::new()
            } else {
                format!(" ({})", s(&t["reason"]))
            }
        );
    }
}

/// A health check's last probe: `ok 2ms`, `FAIL 250ms timeout`, or `-` (not checked).
fn check(c: &Value) -> String {
    match c["ok"].as_bool() {
        Some(true) => format!("ok {}ms", s(&c["latency_ms"])),
        Some(false) => format!("FAIL {}ms {}", s(&c["latency_ms"]), s(&c["error"])),
        None => "-".into(),
    }
}

fn print_ospf(out: &mut String, ospf: &Value) {
    w!(out, "[ospf] router ID {}", s(&ospf["router_id"]));
    w!(
        out,
        "{:<10} {:<20} {:<15} {:<15} {:<15} {:>4}",
        "interface",
        "address",
        "state",
        "DR",
        "BDR",
        "nbrs"
    );
    for i in items(&ospf["interfaces"]) {
        w!(
            out,
            "{:<10} {:<20} {:<15} {:<15} {:<15} {:>4}",
            s(&i["name"]),
            s(&i["address"]),
            s(&i["state"]),
            s(&i["dr"]),
            s(&i["bdr"]),
            items(&i["neighbors"]).count()
        );
    }
    w!(
        out,
        "{:<15} {:>3} {:<10} {:>9} {:<15} {:<10} {:<15} {:<15} {:>9} {:>6}",
        "neighbor ID",
        "pri",
        "state",
        "dead time",
        "address",
        "interface",
        "DR",
        "BDR",
        "since",
        "rxmt"
    );
    for i in items(&ospf["interfaces"]) {
        for n in items(&i["neighbors"]) {
            w!(
                out,
                "{:<15} {:>3} {:<10} {:>9} {:<15} {:<10} {:<15} {:<15} {:>9} {:>6}",
                s(&n["router_id"]),
                s(&n["priority"]),
                s(&n["state"]),
                n["dead_in_ms"]
                    .as_u64()
                    .map_or("-".into(), |ms| format!("{:.3}s", ms as f64 / 1000.0)),
                s(&n["address"]),
                s(&i["name"]),
                s(&n["dr"]),
                s(&n["bdr"]),
                duration(&n["since_secs"]),
                s(&n["retransmit_list"])
            );
        }
    }
    let by_type: Vec<String> = ospf["lsdb"]["by_type"]
        .as_object()
        .map(|m| m.iter().map(|(t, n)| format!("{t} {n}")).collect())
        .unwrap_or_default();
    w!(
        out,
        "LSDB: {} LSAs ({})",
        s(&ospf["lsdb"]["total"]),
        if by_type.is_empty() {
            "none".to_string()
        } else {
            by_type.join(", ")
        }
    );
    let announced: Vec<String> = ospf["announced"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(vip, a)| match a["as"].as_str() {
                    Some("external") => format!(
                        "{vip} (external type {}, metric {})",
                        if a["type2"] == true { 2 } else { 1 },
                        s(&a["metric"])
                    ),
                    Some(kind) => format!("{vip} ({kind}, metric {})", s(&a["metric"])),
                    None => format!("{vip} ({a})"),
                })
                .collect()
        })
        .unwrap_or_default();
    w!(out, "announced: {}", list_or_nothing(&announced));
    let reached: Vec<String> = items(&ospf["limits_reached"]).map(s).collect();
    if !reached.is_empty() {
        w!(out, "limits reached: {}", reached.join(", "));
    }
}

/// `a, b, c`, or `nothing` for an empty list.
fn list_or_nothing(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".to_string()
    } else {
        items.join(", ")
    }
}

fn print_bfd(out: &mut String, bfd: &Value) {
    w!(out, "[bfd]");
    w!(
        out,
        "{:<26} {:<10} {:<10} {:<10} {:<22} {:>6} {:>8} {:>10}  for",
        "peer",
        "interface",
        "state",
        "remote",
        "diag",
        "tx ms",
        "detect",
        "up for"
    );
    for x in items(&bfd["sessions"]) {
        let ses = &x["session"];
        let up = ses["up_for_ms"].as_u64().map(|ms| Value::from(ms / 1000));
        let clients: Vec<String> = items(&x["clients"]).map(s).collect();
        w!(
            out,
            "{:<26} {:<10} {:<10} {:<10} {:<22} {:>6} {:>8} {:>10}  {}",
            s(&x["peer"]),
            s(&x["interface"]),
            s(&ses["state"]),
            s(&ses["remote_state"]),
            s(&ses["diag"]),
            s(&ses["tx_interval_ms"]),
            s(&ses["detect_time_ms"]),
            up.as_ref().map_or("-".into(), duration),
            clients.join(",")
        );
    }
}

fn print_bgp(out: &mut String, bgp: &Value) {
    w!(
        out,
        "[bgp] AS {}, router ID {}",
        s(&bgp["asn"]),
        s(&bgp["router_id"])
    );
    w!(
        out,
        "{:<26} {:>10} {:<12} {:>10} {:>8} {:>8} {:<10} {:<14}  last error",
        "neighbor",
        "AS",
        "state",
        "up/down",
        "PfxSnt",
        "MsgRcvd",
        "bfd",
        "graceful rst"
    );
    for p in items(&bgp["peers"]) {
        let bfd = match p["bfd"].as_object() {
            None => "-".to_string(),
            Some(b) => format!(
                "{} ({} down)",
                if b.get("up") == Some(&Value::Bool(true)) {
                    "up"
                } else {
                    "down"
                },
                b.get("downs").map(s).unwrap_or_default()
            ),
        };
        let n = &p["negotiated"];
        let gr = match (p["graceful_restart"].as_u64(), n.is_object()) {
            (None, _) => "off".to_string(),
            (Some(t), false) => format!("{t} s"),
            (Some(t), true) if n["graceful_restart_negotiated"] == true => {
                let notif = if n["graceful_notification"] == true {
                    " +N"
                } else {
                    ""
                };
                format!("{t} s, on{notif}")
            }
            (Some(t), true) => format!("{t} s, peer no"),
        };
        w!(
            out,
            "{:<26} {:>10} {:<12} {:>10} {:>8} {:>8} {:<10} {:<14}  {}",
            s(&p["address"]),
            s(&p["remote_as"]),
            s(&p["state"]),
            duration(&p["uptime_secs"]),
            s(&p["prefixes_advertised"]),
            s(&p["stats"]["messages_in"]),
            bfd,
            gr,
            s(&p["last_error"])
        );
    }
    let announced: Vec<String> = items(&bgp["announced"]).map(s).collect();
    w!(out, "announced: {}", list_or_nothing(&announced));
    let drained: Vec<String> = items(&bgp["drained"]).map(s).collect();
    if !drained.is_empty() {
        w!(out, "drained: {}", drained.join(", "));
    }
}

fn print_l4(out: &mut String, l4: &Value) {
    w!(out, "[l4]");
    for i in l4["interfaces"].as_array().into_iter().flatten() {
        w!(
            out,
            "interface {} (ifindex {}, {})",
            s(&i["name"]),
            s(&i["ifindex"]),
            s(&i["mode"])
        );
    }
    if l4["xdp_debug"] == true {
        w!(
            out,
            "XDP debug on: drops and new flows are logged (portier debug xdp off)"
        );
    }
    w!(
        out,
        "{:<16} {:<24} {:>12} {:>14}  {:<18} {:>6} {:<10} {:>6}  last check",
        "service",
        "vip",
        "packets",
        "bytes",
        "backend",
        "weight",
        "state",
        "share"
    );
    for svc in l4["services"].as_array().into_iter().flatten() {
        let addr = s(&svc["vip"]);
        let addr = if addr.contains(':') {
            format!("[{addr}]")
        } else {
            addr
        };
        let port = match svc["port"].as_u64() {
            Some(0) | None => "any".to_string(),
            Some(p) => p.to_string(),
        };
        let vip = format!("{addr}:{port}/{}", s(&svc["protocol"]));
        let backends = svc["backends"].as_array().cloned().unwrap_or_default();
        let slots: u64 = backends.iter().filter_map(|b| b["share"].as_u64()).sum();
        if backends.is_empty() {
            w!(out, "{:<16} {:<24} (no backends)", s(&svc["name"]), vip);
        }
        for (i, b) in backends.iter().enumerate() {
            let (name, vip, packets, bytes) = if i == 0 {
                (
                    s(&svc["name"]),
                    vip.clone(),
                    s(&svc["packets"]),
                    s(&svc["bytes"]),
                )
            } else {
                Default::default()
            };
            w!(
                out,
                "{name:<16} {vip:<24} {packets:>12} {bytes:>14}  {:<18} {:>6} {:<10} {:>6}  {}",
                s(&b["address"]),
                s(&b["weight"]),
                s(&b["state"]),
                match b["share"].as_u64() {
                    Some(n) if slots > 0 => format!("{:.1}%", 100.0 * n as f64 / slots as f64),
                    _ => "-".into(),
                },
                check(&b["check"])
            );
        }
    }
    w!(
        out,
        "{:<18} {:<18} {:>12} {:>14}",
        "backend",
        "mac",
        "packets",
        "bytes"
    );
    for b in l4["backends"].as_array().into_iter().flatten() {
        w!(
            out,
            "{:<18} {:<18} {:>12} {:>14}",
            s(&b["address"]),
            s(&b["mac"]),
            s(&b["packets"]),
            s(&b["bytes"])
        );
    }
    if let Some(events) = l4["events"].as_object() {
        let nonzero: Vec<String> = events
            .iter()
            .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        w!(out, "events: {}", nonzero.join(" "));
    }
}

fn print_vrrp(out: &mut String, vrrp: &Value) {
    w!(out, "[vrrp]");
    w!(
        out,
        "{:<12} {:<8} {:>4} {:<8} {:>8} {:<16} {:>9} {:>9} {:>6}  last transition",
        "instance",
        "iface",
        "vrid",
        "state",
        "priority",
        "master",
        "adv sent",
        "adv rcvd",
        "drops"
    );
    for i in vrrp["instances"].as_array().into_iter().flatten() {
        let drops: u64 = i["counters"]["drops"]
            .as_object()
            .map(|d| d.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        let priority = format!("{}/{}", s(&i["effective_priority"]), s(&i["priority"]));
        let master = if i["state"] == "master" {
            "(this node)".to_string()
        } else {
            s(&i["master"])
        };
        w!(
            out,
            "{:<12} {:<8} {:>4} {:<8} {:>8} {:<16} {:>9} {:>9} {:>6}  {}",
            s(&i["name"]),
            s(&i["interface"]),
            s(&i["vrid"]),
            s(&i["state"]),
            priority,
            master,
            s(&i["counters"]["adverts_sent"]),
            s(&i["counters"]["adverts_received"]),
            drops,
            s(&i["last_transition"]["reason"]),
        );
        let vips: Vec<String> = i["vips"].as_array().into_iter().flatten().map(s).collect();
        w!(out, "{:<12} vips {}", "", vips.join(", "));
        for t in i["tracks"].as_array().into_iter().flatten() {
            w!(
                out,
                "{:<12} track {} weight {}: {}",
                "",
                t["target"],
                s(&t["weight"]),
                if t["down"] == true { "DOWN" } else { "up" }
            );
        }
    }
}

fn print_l7(out: &mut String, l7: &Value) {
    w!(out, "[l7] generation {}", s(&l7["generation"]));
    if let Some(listeners) = l7["listeners"].as_object() {
        for (name, l) in listeners {
            w!(out, "listener {name} on {}", s(&l["address"]));
        }
    }
    let mut pools: Vec<(&String, &Value)> = l7["pools"]
        .as_object()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    pools.sort_by_key(|(name, _)| name.as_str());
    // As HAProxy's stats page: one line per pool, the p99 of the last seconds.
    w!(
        out,
        "{:<16} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "pool",
        "servers up",
        "requests",
        "2xx",
        "4xx",
        "5xx",
        "p99 (10s)"
    );
    for (name, pool) in &pools {
        let servers = pool["servers"].as_array().map_or(&[][..], |v| v.as_slice());
        let up = servers.iter().filter(|s| s["state"] == "active").count();
        let p99 = match pool["p99_ms"].as_f64() {
            Some(ms) => format!("{ms} ms"),
            None => "-".to_string(),
        };
        w!(
            out,
            "{:<16} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            name,
            format!("{up}/{}", servers.len()),
            s(&pool["requests"]),
            s(&pool["responses"]["2xx"]),
            s(&pool["responses"]["4xx"]),
            s(&pool["responses"]["5xx"]),
            p99
        );
    }
    w!(out);
    w!(
        out,
        "{:<16} {:<24} {:>6} {:>10} {:<8} {:>11}  source",
        "pool",
        "server",
        "weight",
        "configured",
        "state",
        "outstanding"
    );
    for (name, pool) in pools {
        for (i, server) in pool["servers"].as_array().into_iter().flatten().enumerate() {
            w!(
                out,
                "{:<16} {:<24} {:>6} {:>10} {:<8} {:>11}  {}",
                if i == 0 { name.as_str() } else { "" },
                s(&server["address"]),
                s(&server["weight"]),
                s(&server["configured_weight"]),
                s(&server["state"]),
                s(&server["outstanding"]),
                s(&server["source"]),
            );
        }
    }
    let docker = &l7["discovery"]["docker"];
    if docker.is_object() {
        let link = match (docker["connected"] == true, docker["stale"] == true) {
            (true, _) => "connected".to_owned(),
            (false, true) => format!(
                "UNREACHABLE, last known containers kept (stale): {}",
                s(&docker["last_error"])
            ),
            (false, false) => format!("unreachable: {}", s(&docker["last_error"])),
        };
        w!(out, "docker discovery {}: {link}", s(&docker["endpoint"]));
        w!(
            out,
            "{:<24} {:<12} {:<10} {:<16} {:<22} detail",
            "container",
            "id",
            "state",
            "pool",
            "address"
        );
        for c in docker["containers"].as_array().into_iter().flatten() {
            w!(
                out,
                "{:<24} {:<12} {:<10} {:<16} {:<22} {}",
                s(&c["name"]),
                s(&c["id"]),
                s(&c["state"]),
                s(&c["pool"]),
                s(&c["address"]),
                if c["detail"].is_null() {
                    String::new()
                } else {
                    s(&c["detail"])
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn l7_pools_show_requests_classes_and_p99() {
        let status = json!({
            "l7": { "generation": 1, "listeners": {}, "routes": [], "pools": {
                "todo": { "requests": 120, "p99_ms": 2.4,
                    "responses": { "1xx": 0, "2xx": 118, "3xx": 0, "4xx": 1, "5xx": 1 },
                    "servers": [
                        { "address": "172.17.0.2:8080", "state": "active", "weight": 1 },
                        { "address": "172.17.0.3:8080", "state": "down", "weight": 1 } ] },
                "idle": { "requests": 0,
                    "responses": { "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0 },
                    "servers": [] } } },
        });
        let out = super::render(&status);
        let row = |first: &str| {
            out.lines()
                .find(|l| l.starts_with(first))
                .unwrap_or_else(|| panic!("no row {first}:\n{out}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert!(out.contains("p99 (10s)"), "{out}");
        assert_eq!(
            row("todo "),
            ["todo", "1/2", "120", "118", "1", "1", "2.4", "ms"]
        );
        assert_eq!(row("idle "), ["idle", "0/0", "0", "0", "0", "0", "-"]);
    }

    #[test]
    fn ospf_bfd_and_bgp_are_tables_not_json() {
        let status = json!({
            "node": { "name": "lb1", "version": "0.1.0", "uptime_secs": 3725, "health": "ok",
                "now_ms": 10_000, "problems": [],
                "transitions": [{ "at_ms": 4_000, "part": "vrrp", "object": "vip51",
                    "from": "backup", "to": "master", "reason": "master down timer expired" }] },
            "ospf": {
                "router_id": "10.0.0.11",
                "interfaces": [{ "name": "eth0", "address": "10.0.0.11/24", "state": "drother",
                    "dr": "10.0.0.1", "bdr": "0.0.0.0", "neighbors": [{
                        "router_id": "10.0.0.1", "address": "10.0.0.1", "state": "full",
                        "priority": 100, "dr": "10.0.0.1", "bdr": "0.0.0.0",
                        "retransmit_list": 0, "request_list": 0, "since_secs": 65,
                        "dead_in_ms": 3_250 }] }],
                "lsdb": { "total": 3, "by_type": { "router": 2, "network": 1 }, "lsas": [], "truncated": false },
                "announced": { "203.0.113.10": { "as": "stub", "metric": 10 } },
                "limits_reached": [],
            },
            "bfd": { "sessions": [{ "peer": "10.0.0.1", "interface": "eth0", "clients": ["ospf"],
                "session": { "state": "up", "remote_state": "up", "diag": "none",
                    "tx_interval_ms": 50, "detect_time_ms": 150, "up_for_ms": 61_000 } }] },
            "bgp": { "asn": 64513, "router_id": "10.0.0.11", "announced": ["203.0.113.10/32"],
                "drained": false, "peers": [{ "address": "10.0.0.1", "remote_as": 64512,
                    "state": "Established", "uptime_secs": 42, "prefixes_advertised": 1,
                    "last_error": null, "stats": { "messages_in": 7 } }] },
        });
        let out = super::render(&status);
        assert!(!out.contains('{'), "no JSON left:\n{out}");
        for line in [
            "node lb1 (portier 0.1.0), up 1h02m05s, health ok",
            "6s ago  vrrp  vip51",
            "backup -> master (master down timer expired)",
            "[ospf] router ID 10.0.0.11",
            "LSDB: 3 LSAs (network 1, router 2)",
            "announced: 203.0.113.10 (stub, metric 10)",
            "[bgp] AS 64513, router ID 10.0.0.11",
            "announced: 203.0.113.10/32",
        ] {
            assert!(out.contains(line), "{line:?} missing in:\n{out}");
        }
        let row = |first: &str| {
            out.lines()
                .find(|l| l.starts_with(first))
                .unwrap_or_else(|| panic!("no row {first}:\n{out}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            row("10.0.0.1        100"),
            [
                "10.0.0.1", "100", "full", "3.250s", "10.0.0.1", "eth0", "10.0.0.1", "0.0.0.0",
                "1m05s", "0"
            ]
        );
        assert_eq!(
            row("eth0"),
            [
                "eth0",
                "10.0.0.11/24",
                "drother",
                "10.0.0.1",
                "0.0.0.0",
                "1"
            ]
        );
        assert_eq!(
            row("10.0.0.1                   eth0"),
            [
                "10.0.0.1", "eth0", "up", "up", "none", "50", "150", "1m01s", "ospf"
            ]
        );
        assert_eq!(
            row("10.0.0.1                        64512"),
            [
                "10.0.0.1",
                "64512",
                "Established",
                "42s",
                "1",
                "7",
                "-",
                "off",
                "-"
            ]
        );
    }
}
