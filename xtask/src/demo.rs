//! `cargo xtask demo`: the lab, and portier doing its job in it, narrated.

use anyhow::Result;
use portier_tests::browser::Browser;
use portier_tests::client::{self, Traffic};
use portier_tests::lab::{self, Lab};
use portier_tests::netns;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// `cargo xtask lab up [--anycast]`: the lab with portier on both LBs (lb1 VRRP master, or
/// both announcing the VIP with BFD) and the hosts.
pub fn lab_up(prefix: &str, variant: lab::Variant) -> Result<()> {
    let l = Lab::up_with(prefix, variant)?;
    let lb2 = l.start_portier("lb2", &l.lb_config("lb2")?)?;
    let lb1 = l.start_portier("lb1", &l.lb_config("lb1")?)?;
    if variant.anycast {
        l.wait_vip_route(&["10.0.0.11", "10.0.0.12"], lab::VIP_ROUTE_TIMEOUT)?;
    } else {
        wait_until("lb1 to become VRRP master", Duration::from_secs(10), || {
            l.has_vip_on_lan("lb1")
        })?;
        l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;
    }
    println!("\n== The dashboard of pt-lb1 (its admin listener, 127.0.0.1:9900 in pt-lb1):");
    let shot = l.run_dir.join("dashboard.png");
    dashboard_screenshot(&l.ns("lb1"), &shot)?;
    println!(
        "   a screenshot as Chromium renders it live: {}",
        shot.display()
    );

    std::mem::forget(lb1);
    std::mem::forget(lb2);
    l.keep();
    Ok(())
}

/// `cargo xtask lab up-routed`: the lab with hosts behind the router (tests/src/lab_routed.rs),
/// lb1 serving both VIPs' port 80 over them by IPIP and IPv6-in-IPv6.
pub fn lab_up_routed(prefix: &str) -> Result<()> {
    let r = portier_tests::lab_routed::RoutedLab::up(prefix)?;
    let lb1 = r.lab.start_portier("lb1", &r.lb_config())?;
    std::mem::forget(lb1);
    r.keep();
    Ok(())
}

pub(crate) fn vip() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 10], lab::HTTP_PORT))
}

fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> Result<bool>) -> Result<()> {
    portier_tests::wait::until(what, timeout, f).map(|_| ())
}

/// The router's route to the VIP, as `ip route` prints it.
fn route(l: &Lab) -> Result<String> {
    Ok(netns::ip_in(
        &l.ns("router"),
        &["route", "show", &format!("{}/32", lab::VIP)],
    )?
    .trim()
    .to_string())
}

/// `n` requests for `host`, each on a new connection: container -> count.
pub(crate) fn spread(l: &Lab, host: &str, n: usize) -> Result<BTreeMap<String, usize>> {
    netns::in_netns(&l.ns("client"), || {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let r = client::get_host(vip(), None, host, "/")?;
            *seen.entry(r.container).or_insert(0) += 1;
        }
        Ok::<_, anyhow::Error>(seen)
    })?
}

pub(crate) fn show(seen: &BTreeMap<String, usize>) {
    let mut by_host: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (container, n) in seen {
        let host = container.split('-').next().unwrap_or_default();
        by_host
            .entry(host)
            .or_default()
            .push(format!("{container} x{n}"));
    }
    for (host, containers) in by_host {
        println!("   {host}: {}", containers.join(", "));
    }
}

pub fn run(docker: bool) -> Result<()> {
    println!("== Building the lab (namespaces pt-*): client -> router -> LAN with lb1, lb2 and");
    println!("   host1..3, each host with containers todo1, todo2, shop1 behind its own portier");
    if docker {
        crate::demo_docker::intro();
    }
    let variant = lab::Variant {
        docker,
        ..lab::Variant::default()
    };
    let l = Lab::up_with("pt", variant)?;
    let lb2 = l.start_portier("lb2", &l.lb_config("lb2")?)?;
    // lb1 leaves at the failover below: no OSPF graceful restart on that clean stop.
    let lb1 = l.start_portier("lb1", &l.lb_config_leaving("lb1")?)?;
    wait_until("lb1 to become VRRP master", Duration::from_secs(10), || {
        l.has_vip_on_lan("lb1")
    })?;
    let took = l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;
    println!(
        "== pt-lb1 and pt-lb2 run portier: VRRP (VRID 51) made lb1 master of VIP {}; its XDP",
        lab::VIP
    );
    println!("   balancer spreads TCP 80 over the hosts by Maglev, with direct server return.");
    println!(
        "   As master it announces the VIP by OSPF; pt-router (FRR) learnt it after {took:.1?}:"
    );
    println!("   {}", route(&l)?);
    let took = wait_settled(&l)?;
    println!(
        "   Health checks: lb1 sees all three hosts up, and each host's portier all its containers"
    );
    println!("   (every check risen {:.1?} after the VIP's route):", took);

    println!("\n== 60 requests for http://todo.example/ through the VIP (a new connection each):");
    show(&spread(&l, lab::TODO_HOST, 60)?);
    println!("   (Maglev splits the hosts; each host's pool picks the less busy of two random");
    println!("   containers, so requests sent one at a time split between them by chance)");
    println!("== 30 requests for http://shop.example/: only shop containers answer");
    show(&spread(&l, lab::SHOP_HOST, 30)?);
    println!(
        "== And over IPv6: 30 requests for http://todo.example/ to [{}] (VRRPv3 VRID 52 on the LBs)",
        lab::VIP6
    );
    show(&l.spread6(lab::TODO_HOST, 30, lab::VIP_ROUTE_TIMEOUT)?);

    println!("\n== Replies go from the hosts straight to the client, not back through lb1:");
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
        "   client received {big} bytes; the LAN sent {} bytes to lb1 (requests) and {} to the router",
        sent_to("lb1")? - lb_before,
        sent_to("router")? - router_before
    );

    println!("\n== `portier status` on pt-lb1:");
    print!("{}", lb1.cli(&l.ns("lb1"), &["status"])?);

    println!("\n== Failover: lb1 stops while the client keeps sending requests");
    let traffic = Traffic::start(&l.ns("client"), vip(), Duration::from_secs(60))?;
    wait_until("traffic", Duration::from_secs(10), || {
        Ok(traffic.samples().len() > 50)
    })?;
    let stopped = Instant::now();
    lb1.stop()?;
    wait_until("lb2 to take the VIP", Duration::from_secs(10), || {
        l.has_vip_on_lan("lb2")
    })?;
    let took = stopped.elapsed();
    l.wait_vip_route(&["10.0.0.12"], lab::VIP_ROUTE_TIMEOUT)?;
    let rerouted = stopped.elapsed();
    let mark = Instant::now();
    wait_until("traffic through lb2", Duration::from_secs(10), || {
        Ok(traffic
            .samples()
            .iter()
            .filter(|s| s.at > mark && s.result.is_ok())
            .count()
            > 50)
    })?;
    let samples = traffic.stop();
    let gap = client::longest_pause_after(&samples, stopped);
    let failed = samples
        .iter()
        .filter(|s| s.at > stopped && s.result.is_err())
        .count();
    println!(
        "   lb2 owned the VIP {} ms after lb1 stopped, the router routed it to lb2 after {} ms;",
        took.as_millis(),
        rerouted.as_millis()
    );
    println!(
        "   longest pause between answered requests {} ms; {failed} failed",
        gap.as_millis()
    );
    println!("   {}", route(&l)?);
    println!("   (the same Maglev table on both LBs: flows land on the same hosts)");

    println!("\n== lb1 comes back and, with the higher priority, takes the VIP again (preempt)");
    let lb1 = l.start_portier("lb1", &l.lb_config("lb1")?)?;
    wait_until("lb1 to preempt", Duration::from_secs(10), || {
        Ok(l.has_vip_on_lan("lb1")? && !l.has_vip_on_lan("lb2")?)
    })?;
    l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;
    println!("   {}", route(&l)?);
    show(&spread(&l, lab::TODO_HOST, 12)?);

    println!("\n== Restart under load: lb1 is killed (SIGKILL) and started again 1 s later");
    let traffic = Traffic::start(&l.ns("client"), vip(), Duration::from_secs(60))?;
    wait_until("traffic", Duration::from_secs(10), || {
        Ok(traffic.samples().len() > 50)
    })?;
    lb1.kill()?;
    println!(
        "   the XDP program and its maps stay pinned: lb1's kernel keeps balancing meanwhile;"
    );
    println!("   back, lb1 sends OSPF grace-LSAs first and the router keeps its route via lb1");
    std::thread::sleep(Duration::from_secs(1));
    let lb1 = l.start_portier("lb1", &l.lb_config("lb1")?)?;
    let mark = Instant::now();
    wait_until("traffic after the restart", Duration::from_secs(10), || {
        Ok(traffic.samples().iter().filter(|s| s.at > mark).count() > 100)
    })?;
    let samples = traffic.stop();
    let failed = samples.iter().filter(|s| s.result.is_err()).count();
    let lb2_state = if l.has_vip_on_lan("lb2")? {
        "holds the VIP too (!)"
    } else {
        "never took over"
    };
    println!(
        "   {} requests, {failed} failed; lb1 resumed as VRRP master (it was master moments before), lb2 {lb2_state}",
        samples.len()
    );
    println!("   {}", route(&l)?);

    let shot = l.run_dir.join("dashboard.png");
    dashboard_screenshot(&l.ns("lb1"), &shot)?;

    if docker {
        crate::demo_docker::new_container(&l)?;
    }

    std::mem::forget(lb1);
    std::mem::forget(lb2);
    l.keep();
    println!(
        "\nThe lab stays up: try `ip netns exec pt-client curl -s -H 'Host: shop.example' http://{}/`;",
        lab::VIP
    );
    println!("`cargo xtask lab down` removes it.");
    println!(
        "\n== The dashboard of pt-lb1: http://127.0.0.1:9900/ inside pt-lb1 (a browser started"
    );
    println!("   with `ip netns exec pt-lb1` reaches it). As Chromium renders it live:");
    println!("   {}", shot.display());
    Ok(())
}

/// Waits until what the tour is about to show holds: lb1 has every backend of every service
/// active (its health checks risen, MACs resolved), and each host's portier every server of
/// every L7 pool up. Right after start-up a host may still be rising one container, and its
/// first table would look uneven for no reason a newcomer could see. Returns how long it took.
fn wait_settled(l: &Lab) -> Result<Duration> {
    let nodes: Vec<String> = std::iter::once(l.ns("lb1"))
        .chain(lab::HOSTS.iter().map(|(h, _)| l.ns(h)))
        .collect();
    let mut waiting = String::new();
    let took = portier_tests::wait::until(
        "every health check up (lb1's backends, every host's L7 servers)",
        Duration::from_secs(30),
        || {
            waiting.clear();
            for node in &nodes {
                for what in not_up(node)? {
                    waiting.push_str(&format!(" {node}: {what};"));
                }
            }
            Ok(waiting.is_empty())
        },
    )
    .map_err(|e| e.context(format!("still waiting for:{waiting}")))?;
    Ok(took)
}

/// What is not up on `node` per its `portier status --json`: L4 backends and L7 servers whose
/// state is not `active`.
fn not_up(node: &str) -> Result<Vec<String>> {
    let out = std::process::Command::new(lab::bin_dir().join("portier"))
        .args(["status", "--json", "--node", node])
        .output()?;
    if !out.status.success() {
        return Ok(vec![format!(
            "status: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )]);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut waiting = Vec::new();
    for s in v["l4"]["services"].as_array().into_iter().flatten() {
        for b in s["backends"].as_array().into_iter().flatten() {
            if b["state"] != "active" {
                waiting.push(format!("{} {} {}", s["name"], b["address"], b["state"]));
            }
        }
    }
    for (pool, p) in v["l7"]["pools"].as_object().into_iter().flatten() {
        for server in p["servers"].as_array().into_iter().flatten() {
            if server["state"] != "active" {
                waiting.push(format!("{pool} {} {}", server["address"], server["state"]));
            }
        }
    }
    Ok(waiting)
}

/// Opens lb1's dashboard in headless Chromium inside `ns`, waits until it shows lb1 as VRRP
/// master with all three hosts serving, and saves a PNG of it.
fn dashboard_screenshot(ns: &str, path: &std::path::Path) -> Result<()> {
    let mut b = Browser::open(Some(ns), "http://127.0.0.1:9900/", 1400, 1000)?;
    wait_until(
        "the dashboard to show lb1 live",
        Duration::from_secs(20),
        || {
            let text = b.text()?;
            Ok(text.contains("live") && text.contains("3/3") && text.contains("master"))
        },
    )?;
    b.screenshot(path)
}
