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
