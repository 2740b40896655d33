//! In the lab: the router (FRR, DR) learns the VIP by OSPF from portier on the LBs.
//! Anycast (both LBs announce while their service is healthy): the router installs both next
//! hops (ECMP), and established connections survive one LB leaving (daemon and XDP gone),
//! because both LBs compute the same Maglev table and the flow lands on the same host.
//! The ignored benchmark compares portier's convergence with FRR's announcing the same /32.

use anyhow::{Context, Result};
use portier_tests::client;
use portier_tests::frr::{self, Frr};
use portier_tests::lab::{self, Lab, VIP};
use portier_tests::netns;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn vip() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 10], lab::HTTP_PORT))
}

/// The lab's LB config with the VIP announced under `policy`, and without VRRP (anycast
/// needs no shared address); the default lab's router runs no bfdd.
fn anycast_config(l: &Lab, node: &str, policy: &str) -> Result<String> {
    lab::anycast_config(&l.lb_config(node)?, policy, false)
}

fn xdp_attached(l: &Lab, node: &str) -> Result<bool> {
    Ok(netns::ip_in(&l.ns(node), &["-d", "link", "show", "eth0"])?.contains("xdp"))
}

#[test]
fn anycast_two_next_hops_and_established_flows_survive_one_lb_leaving() -> Result<()> {
    let l = Lab::up("os")?;
    // lb1 cleans up on exit: its XDP program goes with the daemon.
    let lb1 = l.start_portier_with(
        "lb1",
        &anycast_config(&l, "lb1", "healthy")?,
        &["--teardown-on-exit"],
    )?;
    let lb2 = l.start_portier("lb2", &anycast_config(&l, "lb2", "healthy")?)?;
    let took = l.wait_vip_route(&["10.0.0.11", "10.0.0.12"], lab::VIP_ROUTE_TIMEOUT)?;
    let route = netns::ip_in(&l.ns("router"), &["route", "show", &format!("{VIP}/32")])?;
    assert!(route.contains("proto ospf"), "{route}");
    println!("both next hops installed {took:?} after the LBs were ready");

    // (a) The client reaches the VIP through the router's OSPF route, and the router's L4
    // hash spreads new connections over both LBs.
    let sent_to = |n: &str| netns::link_counter(&l.ns("lan"), n, "tx_bytes");
    let before = (sent_to("lb1")?, sent_to("lb2")?);
    netns::in_netns(&l.ns("client"), || -> Result<()> {
        for i in 0..60 {
            client::get(vip(), None, "/").with_context(|| format!("request {i}"))?;
        }
        Ok(())
    })??;
    let (to1, to2) = (sent_to("lb1")? - before.0, sent_to("lb2")? - before.1);
    assert!(to1 > 2000 && to2 > 2000, "bytes to lb1 {to1}, to lb2 {to2}");

    // (b) Established keep-alive connections, some through each LB. The router's multipath
    // hash is keyed at random per boot: 32 connections all take lb2 once in 2^32 runs (16
    // did once in 65,536).
    let mut conns: Vec<(TcpStream, String)> =
        netns::in_netns(&l.ns("client"), || -> Result<Vec<(TcpStream, String)>> {
            (0..32)
                .map(|_| {
                    let mut s = client::connect(vip(), None, Duration::from_secs(3))?;
                    let host = client::get_on(&mut s, lab::TODO_HOST, "/")?.served_by;
                    Ok((s, host))
                })
                .collect()
        })??;
    let mark = sent_to("lb1")?;
    for (s, host) in &mut conns {
        assert_eq!(&client::get_on(s, lab::TODO_HOST, "/")?.served_by, host);
    }
    assert!(
        sent_to("lb1")? > mark,
        "no established connection goes through lb1"
    );

    // lb1 leaves cleanly: it flushes its Router-LSA (withdrawal without the dead interval)
    // and its XDP program is detached.
    let stopped = Instant::now();
    lb1.stop()?;
    let gone = l.wait_vip_route(&["10.0.0.12"], Duration::from_secs(10))?;
    println!(
        "lb1 stopped: router down to lb2 after {:?}",
        stopped.elapsed()
    );
    assert!(gone < Duration::from_secs(4), "withdrawal took {gone:?}");
    assert!(!xdp_attached(&l, "lb1")?, "lb1's XDP is still attached");

    let mark = sent_to("lb1")?;
    for (i, (s, host)) in conns.iter_mut().enumerate() {
        let r = client::get_on(s, lab::TODO_HOST, "/")
            .with_context(|| format!("established connection {i} after lb1 left"))?;
        assert_eq!(&r.served_by, host, "connection {i} moved host");
    }
    // Only the router's OSPF multicast (hellos, a flooded LSA) still reaches lb1's port; the
    // 32 requests alone would be several kilobytes.
    let to1 = sent_to("lb1")? - mark;
    assert!(to1 < 1500, "{to1} bytes still sent to lb1");
    netns::in_netns(&l.ns("client"), || -> Result<()> {
        for i in 0..20 {
            client::get(vip(), None, "/").with_context(|| format!("new request {i}"))?;
        }
        Ok(())
    })??;
    drop(lb2);
    Ok(())
}

/// Time from start to the router's VIP route via `hop`, and from withdrawal to no route.
struct Convergence {
    installed: Duration,
    withdrawn: Duration,
}

/// Withdrawal is measured in steady state: MinLSInterval (5 s) after the announcing
/// Router-LSA, as both speakers apply it.
fn settle() {
    std::thread::sleep(Duration::from_secs(6));
}

fn portier_run(l: &Lab) -> Result<Convergence> {
    let config = anycast_config(l, "lb1", "always")?;
    let start = Instant::now();
    let d = l.start_portier("lb1", &config)?;
    l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;
    let installed = start.elapsed();
    settle();
    let without = config
        .split("\n\n")
        .filter(|b| !b.contains("[[ospf.announce]]"))
        .collect::<Vec<_>>()
        .join("\n\n");
    let start = Instant::now();
    d.reload(&without)?;
    l.wait_vip_route(&[], Duration::from_secs(20))?;
    let withdrawn = start.elapsed();
    d.stop()?;
    Ok(Convergence {
        installed,
        withdrawn,
    })
}

fn frr_run(l: &Lab) -> Result<Convergence> {
    let ns = l.ns("lb2");
    // FRR announces the /32 as a stub link of a passive loopback, with the same timers.
    netns::ip_in(&ns, &["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
    let config = format!(
        "frr defaults traditional\nhostname {ns}\n!\n{}router ospf\n ospf router-id 10.0.0.12\n network 10.0.0.0/24 area 0\n network {VIP}/32 area 0\n passive-interface lo\n!\n",
        frr::interface_config("eth0", false, 0, None)
    );
    let start = Instant::now();
    let f = Frr::start(&ns, &ns, &config)?;
    l.wait_vip_route(&["10.0.0.12"], lab::VIP_ROUTE_TIMEOUT)
        .with_context(|| f.log("ospfd"))?;
    let installed = start.elapsed();
    settle();
    let start = Instant::now();
    netns::ip_in(&ns, &["addr", "del", &format!("{VIP}/32"), "dev", "lo"])?;
    l.wait_vip_route(&[], Duration::from_secs(20))?;
    let withdrawn = start.elapsed();
    Ok(Convergence {
        installed,
        withdrawn,
    })
}

#[test]
#[ignore = "benchmark: cargo test -p portier-tests --test lab_ospf -- --ignored --nocapture"]
fn convergence_portier_vs_frr() -> Result<()> {
    let l = Lab::up("ob")?;
    let p = portier_run(&l)?;
    let f = frr_run(&l)?;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "ospf-lab-bench portier->FRR: installed {:?}, withdrawn {:?}",
        p.installed, p.withdrawn
    );
    println!(
        "ospf-lab-bench FRR->FRR:     installed {:?}, withdrawn {:?}",
        f.installed, f.withdrawn
    );
    println!(
        "ospf-lab-bench ratio portier/FRR: installed {:.2}, withdrawn {:.2}",
        ratio(p.installed, f.installed),
        ratio(p.withdrawn, f.withdrawn)
    );
    Ok(())
}
