//! The `--anycast` lab: VRRP off, both LBs announce the VIP by OSPF while healthy, and the
//! router (FRR ospfd + bfdd) watches each LB with BFD at 50 ms x3. pt-lb1 then goes silent
//! with its link up (its bridge port stops forwarding: a power loss or a hung kernel, as the
//! switch sees it). The router must drop lb1's next hop by BFD, before OSPF's dead interval
//! (4 s) could, so the UDP flows and established TCP connections ECMP had sent through lb1
//! continue through lb2 to the same hosts. Prints the longest gap the lb1 flows saw.

use anyhow::{Context, Result, bail, ensure};
use portier_tests::client::{self, UdpProbe, longest_gap};
use portier_tests::lab::{self, Lab, Variant};
use portier_tests::netns::{self, exec_in, ip_in};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while !f()? {
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The router's BFD peers that are up on 50 ms from the LB's side.
fn bfd_up_at_router(l: &Lab) -> Result<Vec<String>> {
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
fn next_hop_of(l: &Lab, sport: u16) -> Result<String> {
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

#[test]
fn bfd_reroutes_around_a_silent_lb_before_the_dead_interval() -> Result<()> {
    let l = Lab::up_with(
        "an",
        Variant {
            anycast: true,
            ..Variant::default()
        },
    )?;
    let _lb1 = l.start_portier("lb1", &l.lb_config("lb1")?)?;
    let _lb2 = l.start_portier("lb2", &l.lb_config("lb2")?)?;
    l.wait_vip_route(&["10.0.0.11", "10.0.0.12"], lab::VIP_ROUTE_TIMEOUT)?;
    wait_until("BFD up at the router", Duration::from_secs(15), || {
        Ok(bfd_up_at_router(&l)? == ["10.0.0.11", "10.0.0.12"])
    })?;

    let vip_http = SocketAddr::from(([203, 0, 113, 10], lab::HTTP_PORT));
    let vip_udp = SocketAddr::from(([203, 0, 113, 10], lab::UDP_PORT));
    let mut conns: Vec<(TcpStream, String)> =
        netns::in_netns(&l.ns("client"), || -> Result<Vec<(TcpStream, String)>> {
            (0..16)
                .map(|_| {
                    let mut s = client::connect(vip_http, None, Duration::from_secs(3))?;
                    let host = client::get_on(&mut s, lab::TODO_HOST, "/")?.served_by;
                    Ok((s, host))
                })
                .collect()
        })??;
    let probe = UdpProbe::start(
        &l.ns("client"),
        vip_udp,
        16,
        Duration::from_millis(10),
        Duration::from_secs(90),
    )?;
    wait_until("every probe flow answered", Duration::from_secs(10), || {
        Ok(probe.flows().iter().all(|(_, e)| e.len() >= 5))
    })?;
    let mut via_lb1 = Vec::new();
    for (port, _) in probe.flows() {
        if next_hop_of(&l, port)? == "10.0.0.11" {
            via_lb1.push(port);
        }
    }
    ensure!(
        !via_lb1.is_empty() && via_lb1.len() < 16,
        "ECMP sent {} of 16 flows via lb1",
        via_lb1.len()
    );

    // lb1 goes silent, its link still up.
    exec_in(
        &l.ns("lan"),
        "bridge",
        &["link", "set", "dev", "lb1", "state", "0"],
    )?;
    let silenced = Instant::now();
    // The dead interval is 4 s: a route change within 3 s is BFD's doing.
    l.wait_vip_route(&["10.0.0.12"], Duration::from_secs(3))?;
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
    for (port, echoes) in &flows {
        let before: Vec<&str> = echoes
            .iter()
            .filter(|e| e.at < silenced)
            .map(|e| e.host.as_str())
            .collect();
        let after: Vec<&str> = echoes
            .iter()
            .filter(|e| e.at > silenced)
            .map(|e| e.host.as_str())
            .collect();
        // Both LBs compute the same Maglev table: a flow keeps its host.
        assert_eq!(
            before.last(),
            after.last(),
            "flow from port {port} moved host"
        );
        if via_lb1.contains(port) {
            worst = worst.max(longest_gap(echoes, silenced, end));
        }
    }
    println!(
        "lb1 silent: the router's route left it after {rerouted:?}; longest gap of the {} flows via lb1: {worst:?}",
        via_lb1.len()
    );
    for (i, (s, host)) in conns.iter_mut().enumerate() {
        let r = client::get_on(s, lab::TODO_HOST, "/")
            .with_context(|| format!("established connection {i} after lb1 went silent"))?;
        assert_eq!(&r.served_by, host, "connection {i} moved host");
    }
    Ok(())
}
