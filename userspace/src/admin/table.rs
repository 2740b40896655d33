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

fn print_l7(l7: &Value) {
    println!("[l7] generation {}", s(&l7["generation"]));
    if let Some(listeners) = l7["listeners"].as_object() {
        for (name, l) in listeners {
            println!("listener {name} on {}", s(&l["address"]));
        }
    }
    println!(
        "{:<16} {:<24} {:>6} {:>10} {:<8} {:>11}  source",
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
        println!("docker discovery {}: {link}", s(&docker["endpoint"]));
        println!(
            "{:<24} {:<12} {:<10} {:<16} {:<22} detail",
            "container", "id", "state", "pool", "address"
        );
        for c in docker["containers"].as_array().into_iter().flatten() {
            println!(
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
