//! `portier status` for people: the admin API's JSON as tables.

use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub fn print(status: &Value) {
    let Some(parts) = status.as_object() else {
        println!("{status}");
        return;
    };
    for (part, value) in parts {
        match part.as_str() {
            "l4" => print_l4(value),
            "vrrp" => print_vrrp(value),
            "l7" => print_l7(value),
            "bgp" => print_bgp(value),
            _ => {
                println!("[{part}]");
                println!(
                    "{}",
                    serde_json::to_string_pretty(value).unwrap_or_default()
                );
            }
        }
        println!();
    }
}

fn print_l4(l4: &Value) {
    println!("[l4]");
    for i in l4["interfaces"].as_array().into_iter().flatten() {
        println!(
            "interface {} (ifindex {}, {})",
            s(&i["name"]),
            s(&i["ifindex"]),
            s(&i["mode"])
        );
    }
    println!(
        "{:<16} {:<24} {:>12} {:>14}  {:<18} {:>6} {:<10}",
        "service", "vip", "packets", "bytes", "backend", "weight", "state"
    );
    for svc in l4["services"].as_array().into_iter().flatten() {
        let vip = format!(
            "{}:{}/{}",
            s(&svc["vip"]),
            s(&svc["port"]),
            s(&svc["protocol"])
        );
        let backends = svc["backends"].as_array().cloned().unwrap_or_default();
        if backends.is_empty() {
            println!("{:<16} {:<24} (no backends)", s(&svc["name"]), vip);
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
            println!(
                "{name:<16} {vip:<24} {packets:>12} {bytes:>14}  {:<18} {:>6} {:<10}",
                s(&b["address"]),
                s(&b["weight"]),
                s(&b["state"])
            );
        }
    }
    println!(
        "{:<18} {:<18} {:>12} {:>14}",
        "backend", "mac", "packets", "bytes"
    );
    for b in l4["backends"].as_array().into_iter().flatten() {
        println!(
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
        println!("events: {}", nonzero.join(" "));
    }
}

fn print_vrrp(vrrp: &Value) {
    println!("[vrrp]");
    println!(
        "{:<12} {:<8} {:>4} {:<8} {:>8} {:<16} {:>9} {:>9} {:>6}  last transition",
        "instance", "iface", "vrid", "state", "priority", "master", "adv sent", "adv rcvd", "drops"
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
        println!(
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
        println!("{:<12} vips {}", "", vips.join(", "));
        for t in i["tracks"].as_array().into_iter().flatten() {
            println!(
                "{:<12} track {} weight {}: {}",
                "",
                t["target"],
                s(&t["weight"]),
                if t["down"] == true { "DOWN" } else { "up" }
            );
        }
    }
}

/// Peers with their BFD and graceful restart state, then the announced VIPs.
fn print_bgp(bgp: &Value) {
    println!(
        "[bgp] AS {} router id {}",
        s(&bgp["asn"]),
        s(&bgp["router_id"])
    );
    println!(
        "{:<26} {:>10} {:<12} {:>8} {:>5} {:>8} {:<10} {:<14}  last error",
        "peer", "AS", "state", "uptime", "sent", "received", "bfd", "graceful rst"
    );
    for p in bgp["peers"].as_array().into_iter().flatten() {
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
        println!(
            "{:<26} {:>10} {:<12} {:>8} {:>5} {:>8} {:<10} {:<14}  {}",
            format!("{}%{}", s(&p["address"]), s(&p["interface"])),
            s(&p["remote_as"]),
            s(&p["state"]),
            s(&p["uptime_secs"]),
            s(&p["prefixes_advertised"]),
            s(&p["stats"]["prefixes_received"]),
            bfd,
            gr,
            s(&p["last_error"]),
        );
    }
    let vips: Vec<String> = bgp["announced"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    println!("announced {}", vips.join(", "));
    let drained: Vec<String> = bgp["drained"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    if !drained.is_empty() {
        println!("drained {}", drained.join(", "));
    }
}

fn print_l7(l7: &Value) {
    println!("[l7] generation {}", s(&l7["generation"]));
    if let Some(listeners) = l7["listeners"].as_object() {
        for (name, l) in listeners {
            println!("listener {name} on {}", s(&l["address"]));
        }
    }
    println!(
        "{:<16} {:<24} {:>6} {:>10} {:<8} {:>11}",
        "pool", "server", "weight", "configured", "state", "outstanding"
    );
    let mut pools: Vec<(&String, &Value)> = l7["pools"]
        .as_object()
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    pools.sort_by_key(|(name, _)| name.as_str());
    for (name, pool) in pools {
        for (i, server) in pool["servers"].as_array().into_iter().flatten().enumerate() {
            println!(
                "{:<16} {:<24} {:>6} {:>10} {:<8} {:>11}",
                if i == 0 { name.as_str() } else { "" },
                s(&server["address"]),
                s(&server["weight"]),
                s(&server["configured_weight"]),
                s(&server["state"]),
                s(&server["outstanding"]),
            );
        }
    }
}
