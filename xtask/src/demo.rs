//! `cargo xtask demo`: the lab, and portier doing its job in it, narrated.

use anyhow::Result;
use portier_tests::{client, lab, netns};
use std::collections::BTreeMap;
use std::net::SocketAddr;

pub fn lab_up(prefix: &str) -> Result<()> {
    let l = lab::Lab::up(prefix)?;
    let config = l.lb_config("lb1")?;
    let d = l.start_portier("lb1", &config)?;
    l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;
    std::mem::forget(d);
    l.keep();
    Ok(())
}

fn vip() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 10], lab::HTTP_PORT))
}

fn spread(l: &lab::Lab, n: usize) -> Result<BTreeMap<String, usize>> {
    netns::in_netns(&l.ns("client"), || {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let r = client::get(vip(), None, "/")?;
            *seen.entry(r.served_by).or_insert(0) += 1;
        }
        Ok::<_, anyhow::Error>(seen)
    })?
}

pub fn run() -> Result<()> {
    let prefix = "pt";
    println!(
        "== Building the lab (namespaces pt-*): client -> router -> LAN with lb1, lb2, host1..3"
    );
    let l = lab::Lab::up(prefix)?;
    let config = l.lb_config("lb1")?;
    let d = l.start_portier("lb1", &config)?;
    let took = l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;
    println!(
        "== pt-lb1 is VRRP master and announces the VIP by OSPF; pt-router (FRR) learnt it after {took:.1?}:"
    );
    println!(
        "   {}",
        netns::ip_in(
            &l.ns("router"),
            &["route", "show", &format!("{}/32", lab::VIP)]
        )?
        .trim()
    );
    println!(
        "== portier runs on pt-lb1: XDP balancer on eth0, VIP {} TCP 80 + UDP",
        lab::VIP
    );
    println!(
        "{}",
        netns::exec_in(&l.ns("lb1"), "ip", &["-d", "link", "show", "eth0"])?
            .lines()
            .filter(|s| s.contains("xdp") || s.contains("prog"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    println!(
        "\n== 60 HTTP requests from pt-client to http://{}/ (new connection each):",
        lab::VIP
    );
    for (host, n) in spread(&l, 60)? {
        println!("   {host}: {n}");
    }
    println!("\n== Replies go from the hosts straight to the client (direct server return):");
    // Counted on the bridge: frames XDP handles never show in lb1's own counters.
    let sent_to = |port: &str| netns::link_counter(&l.ns("lan"), port, "tx_bytes");
    let (lb_before, router_before) = (sent_to("lb1")?, sent_to("router")?);
    let big = netns::in_netns(&l.ns("client"), || {
        let mut total = 0usize;
        for _ in 0..20 {
            total += client::get(vip(), None, "/?size=100000")?.bytes;
        }
        Ok::<_, anyhow::Error>(total)
    })??;
    println!(
        "   client received {big} bytes of replies; the LAN sent {} bytes to pt-lb1 (requests) and {} to the router",
        sent_to("lb1")? - lb_before,
        sent_to("router")? - router_before
    );

    println!(
        "\n== Counters (pinned maps, `bpftool map dump pinned /sys/fs/bpf/portier/pt-lb1/REASONS`):"
    );
    let status = netns::exec_in(
        &l.ns("lb1"),
        &lab::bin_dir().join("portier").to_string_lossy(),
        &["stats", "--node", "pt-lb1"],
    );
    match status {
        Ok(s) => print!("{s}"),
        Err(e) => println!("   (stats unavailable: {e})"),
    }

    println!("\n== Reload without host3 (SIGHUP): only host3's flows move");
    let without3 = config
        .split("\n\n")
        .filter(|block| !block.contains("10.0.0.23"))
        .collect::<Vec<_>>()
        .join("\n\n");
    d.reload(&without3)?;
    for (host, n) in spread(&l, 60)? {
        println!("   {host}: {n}");
    }
    d.reload(&config)?;
    println!("\n== host3 back:");
    for (host, n) in spread(&l, 60)? {
        println!("   {host}: {n}");
    }
    std::mem::forget(d);
    l.keep();
    println!(
        "\nThe lab stays up: try `ip netns exec pt-client curl -s http://{}/`.",
        lab::VIP
    );
    println!("`cargo xtask lab down` removes it.");
    Ok(())
}
