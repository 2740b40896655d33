//! In the lab: pt-lb1 and pt-lb2 share the VIP by VRRP (examples/lab-lb.toml) and the VRRP
//! master announces it to the router by OSPF; stopping lb1 under client traffic moves the VIP
//! and the router's next hop to lb2, and the traffic resumes through lb2's balancer (the same
//! Maglev table, so to the same hosts).

use anyhow::Result;
use portier_tests::client::Traffic;
use portier_tests::lab::{self, Lab};
use portier_tests::netns;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PREFIX: &str = "lv";

fn vip() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 10], 80))
}

fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> Result<bool>) -> Result<()> {
    portier_tests::wait::until(what, timeout, f).map(|_| ())
}

#[test]
fn stopping_lb1_moves_the_vip_and_traffic_to_lb2() -> Result<()> {
    let l = Lab::up(PREFIX)?;
    // lb1 leaves for good here: no OSPF graceful restart on its clean stop.
    let lb2 = l.start_portier("lb2", &l.lb_config("lb2")?)?;
    let lb1 = l.start_portier("lb1", &l.lb_config_leaving("lb1")?)?;
    // Master-down at priority 150 with 1 s adverts is 3.4 s.
    wait_until("lb1 master, lb2 backup", Duration::from_secs(20), || {
        Ok(l.has_vip_on_lan("lb1")? && !l.has_vip_on_lan("lb2")?)
    })
    .map_err(|e| {
        let vrrp = |d: &lab::Daemon, node: &str| {
            d.cli(&l.ns(node), &["status", "--json"])
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .map(|v| v["vrrp"].to_string())
                .unwrap_or_default()
        };
        e.context(format!(
            "lb1 vrrp {}\nlb2 vrrp {}\nlb1 log:\n{}\nlb2 log:\n{}",
            vrrp(&lb1, "lb1"),
            vrrp(&lb2, "lb2"),
            lb1.log_text(),
            lb2.log_text()
        ))
    })?;
    l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;

    let traffic = Traffic::start(&l.ns("client"), vip(), Duration::from_secs(60))?;
    let ok_count = |t: &Traffic, after: Instant| {
        t.samples()
            .iter()
            .filter(|s| s.at > after && s.result.is_ok())
            .count()
    };
    let began = Instant::now();
    wait_until("traffic through lb1", Duration::from_secs(10), || {
        Ok(ok_count(&traffic, began) >= 20)
    })?;

    let stopped = Instant::now();
    lb1.stop()?;
    // A clean stop sends priority 0: lb2 takes over after its skew time (0.61 s) and
    // announces the VIP; lb1 flushes its announcement on the way out.
    wait_until("lb2 takes the VIP", Duration::from_secs(3), || {
        l.has_vip_on_lan("lb2")
    })?;
    let took_vip = stopped.elapsed();
    assert!(!l.has_vip_on_lan("lb1")?, "lb1 released the VIP");
    let rerouted = l.wait_vip_route(&["10.0.0.12"], Duration::from_secs(10))? + took_vip;
    wait_until(
        "traffic resumes through lb2",
        Duration::from_secs(10),
        || Ok(ok_count(&traffic, stopped + took_vip) >= 20),
    )?;
    // The router now routes the VIP via lb2, and the requests cross the bridge towards lb2,
    // not lb1 (whose XDP program stays attached after its daemon exits, so only the route
    // change can move the traffic).
    assert_eq!(l.vip_next_hops()?, ["10.0.0.12"]);
    let before = (bridge_tx(&l, "lb1")?, bridge_tx(&l, "lb2")?);
    let mark = Instant::now();
    wait_until("more traffic through lb2", Duration::from_secs(10), || {
        Ok(ok_count(&traffic, mark) >= 20)
    })?;
    let after = (bridge_tx(&l, "lb1")?, bridge_tx(&l, "lb2")?);
    let (to_lb1, to_lb2) = (after.0 - before.0, after.1 - before.1);
    assert!(
        to_lb2 > 2000 && to_lb1 < to_lb2 / 4,
        "bytes to lb1 {to_lb1}, to lb2 {to_lb2}"
    );
    let samples = traffic.stop();

    let ok_times: Vec<Instant> = samples
        .iter()
        .filter(|s| s.result.is_ok())
        .map(|s| s.at)
        .collect();
    let gap = ok_times
        .windows(2)
        .filter(|w| w[1] > stopped)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let failed = samples
        .iter()
        .filter(|s| s.at > stopped && s.result.is_err())
        .count();
    println!(
        "lb1 stopped: lb2 had the VIP after {took_vip:?}, the router's route after {rerouted:?}; longest time without a completed request {gap:?}; {failed} failed requests"
    );
    // The takeover needs the skew (0.61 s), lb2's Router-LSA (at once: its last one is
    // older than MinLSInterval) and the router's SPF; requests in flight may time out once.
    assert!(gap < Duration::from_secs(4), "gap {gap:?}");
    drop(lb2);
    Ok(())
}

/// Bytes the LAN bridge sent out of its port towards `node`.
fn bridge_tx(l: &Lab, node: &str) -> Result<u64> {
    netns::link_counter(&l.ns("lan"), node, "tx_bytes")
}
