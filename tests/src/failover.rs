//! Node loss in the anycast lab: pt-lb1 goes silent with its link up (its bridge port stops
//! forwarding: a power loss or a hung kernel, as the switch sees it) while UDP probes run;
//! how long the flows ECMP had sent through lb1 went without answers. Shared by the lab test
//! and `cargo xtask bench failover`.

use anyhow::{Context, Result, ensure};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::client::{UdpProbe, longest_gap};
use crate::lab::{self, Lab};
use crate::netns::{exec_in, ip_in};

fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> Result<bool>) -> Result<()> {
    crate::wait::until(what, timeout, f).map(|_| ())
}

/// The router's BFD peers that are up on 50 ms from the LB's side.
pub fn bfd_up_at_router(l: &Lab) -> Result<Vec<String>> {
    let frr = l.frr().context("the lab runs FRR")?;
    let text = frr.vtysh("show bfd peers json")?;
    let peers: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("vtysh said: {text}"))?;
    let mut up: Vec<String> = peers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"] == "up" && p["remote-transmit-interval"] == 50)
        .filter_map(|p| p["peer"].as_str().map(str::to_owned))
        .collect();
    up.sort();
    Ok(up)
}

/// The LB the router sends a client flow to (its multipath hash covers the ports).
pub fn next_hop_of(l: &Lab, sport: u16) -> Result<String> {
    let out = ip_in(
        &l.ns("router"),
        &[
            "route",
            "get",
            lab::VIP,
            "from",
            lab::CLIENT_ADDR,
            "iif",
            "eth0",
            "ipproto",
            "udp",
            "sport",
            &sport.to_string(),
            "dport",
            &lab::UDP_PORT.to_string(),
        ],
    )?;
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "via")
        .map(|w| w[1].to_owned())
        .with_context(|| format!("no next hop in {out}"))
}

/// Source ports whose UDP flows the router sends `per_hop` each through lb1 and lb2. Its
/// multipath hash is keyed at random per boot, so 16 flows from ephemeral ports all took the
/// same LB in one run in 32,768, leaving the test no lb1 flow to follow.
pub fn ports_over_both_lbs(l: &Lab, per_hop: usize) -> Result<Vec<u16>> {
    let (mut lb1, mut lb2) = (Vec::new(), Vec::new());
    for port in 40_000..41_000u16 {
        match next_hop_of(l, port)?.as_str() {
            "10.0.0.11" if lb1.len() < per_hop => lb1.push(port),
            "10.0.0.12" if lb2.len() < per_hop => lb2.push(port),
            _ => {}
        }
        if lb1.len() == per_hop && lb2.len() == per_hop {
            return Ok(lb1.into_iter().chain(lb2).collect());
        }
    }
    anyhow::bail!(
        "ECMP over source ports 40000-40999: {} via lb1, {} via lb2",
        lb1.len(),
        lb2.len()
    )
}

/// What a silenced lb1 cost.
#[derive(Debug, Clone)]
pub struct Silenced {
    /// Flows (of 16, chosen so that 8 do) the router had sent through lb1.
    pub via_lb1: usize,
    /// Until the router's route no longer had lb1.
    pub rerouted: Duration,
    /// The longest time one of lb1's flows went without an answer.
    pub worst_gap: Duration,
    /// Flows whose answering host changed (both LBs share the Maglev table: none should).
    pub moved: Vec<u16>,
}

/// Waits for both next hops and BFD (by the router: `bfd_peers` up on 50 ms), runs the UDP
/// probe, silences lb1, and measures. `reroute_within` bounds the wait for the router to drop
/// lb1 (below the dead interval, so only BFD can have done it).
pub fn silence_lb1(l: &Lab, bfd_peers: &[&str], reroute_within: Duration) -> Result<Silenced> {
    l.wait_vip_route(&["10.0.0.11", "10.0.0.12"], lab::VIP_ROUTE_TIMEOUT)?;
    wait_until("BFD up at the router", Duration::from_secs(15), || {
        Ok(bfd_up_at_router(l)? == bfd_peers)
    })?;
    let vip_udp = SocketAddr::from(([203, 0, 113, 10], lab::UDP_PORT));
    let ports = ports_over_both_lbs(l, 8)?;
    let probe = UdpProbe::start(
        &l.ns("client"),
        vip_udp,
        &ports,
        Duration::from_millis(10),
        Duration::from_secs(90),
    )?;
    wait_until("every probe flow answered", Duration::from_secs(10), || {
        Ok(probe.flows().iter().all(|(_, e)| e.len() >= 5))
    })?;
    let mut via_lb1 = Vec::new();
    for (port, _) in probe.flows() {
        if next_hop_of(l, port)? == "10.0.0.11" {
            via_lb1.push(port);
        }
    }
    ensure!(
        !via_lb1.is_empty() && via_lb1.len() < 16,
        "ECMP sent {} of 16 flows via lb1",
        via_lb1.len()
    );
    exec_in(
        &l.ns("lan"),
        "bridge",
        &["link", "set", "dev", "lb1", "state", "0"],
    )?;
    let silenced = Instant::now();
    l.wait_vip_route(&["10.0.0.12"], reroute_within)?;
    let rerouted = silenced.elapsed();
    wait_until("lb1's flows answered again", Duration::from_secs(5), || {
        Ok(probe
            .flows()
            .iter()
            .filter(|(p, _)| via_lb1.contains(p))
            .all(|(_, e)| e.last().is_some_and(|x| x.at > silenced)))
    })?;
    let end = Instant::now();
    let flows = probe.stop();
    let mut worst = Duration::ZERO;
    let mut moved = Vec::new();
    for (port, echoes) in &flows {
        let last = |after: bool| {
            echoes
                .iter()
                .filter(|e| (e.at > silenced) == after)
                .map(|e| e.host.clone())
                .next_back()
        };
        if last(false) != last(true) {
            moved.push(*port);
        }
        if via_lb1.contains(port) {
            worst = worst.max(longest_gap(echoes, silenced, end));
        }
    }
    Ok(Silenced {
        via_lb1: via_lb1.len(),
        rerouted,
        worst_gap: worst,
        moved,
    })
}
