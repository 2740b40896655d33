//! The `--routing bgp` lab: the router (FRR bgpd, AS 64512, MD5) learns the VIP /32 from
//! portier's BGP part on the LBs (AS 64513) instead of OSPF. With VRRP, only the master
//! announces it (with its community), and a clean stop of the master moves the route to the
//! new master (the old one's Cease carries a shutdown communication). With `--anycast`, both
//! LBs announce it and the router installs both next hops, each LB watching the router by BFD
//! (`bfd = true` on its BGP peer) and the router each LB.

use anyhow::{Context, Result};
use portier_tests::client;
use portier_tests::lab::{self, Lab, Variant};
use portier_tests::netns;
use std::net::SocketAddr;
use std::time::Duration;

fn wait_until(what: &str, timeout: Duration, f: impl Fn() -> Result<bool>) -> Result<()> {
    portier_tests::wait::until(what, timeout, f).map(|_| ())
}

fn vip_route(l: &Lab) -> Result<String> {
    netns::ip_in(
        &l.ns("router"),
        &["route", "show", &format!("{}/32", lab::VIP)],
    )
}

#[test]
fn vrrp_master_announces_by_bgp_and_a_clean_stop_moves_the_route() -> Result<()> {
    let l = Lab::up_with(
        "bg",
        Variant {
            bgp: true,
            ..Variant::default()
        },
    )?;
    let lb2 = l.start_portier("lb2", &l.lb_config("lb2")?)?;
    let lb1 = l.start_portier("lb1", &l.lb_config("lb1")?)?;
    l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;
    let route = vip_route(&l)?;
    assert!(route.contains("proto bgp"), "{route}");
    let frr = l.frr().context("the lab runs FRR")?;
    let text = frr.vtysh(&format!("show bgp ipv4 unicast {}/32 json", lab::VIP))?;
    assert!(text.contains("64513:100"), "community missing: {text}");
    // Both sessions are up (MD5), though only the master announces.
    let summary = frr.vtysh("show bgp ipv4 unicast summary json")?;
    let json: serde_json::Value = serde_json::from_str(&summary)?;
    for lb in ["10.0.0.11", "10.0.0.12"] {
        assert_eq!(json["peers"][lb]["state"], "Established", "{summary}");
    }
    let vip = SocketAddr::from(([203, 0, 113, 10], lab::HTTP_PORT));
    netns::in_netns(&l.ns("client"), || -> Result<()> {
        for i in 0..10 {
            client::get(vip, None, "/").with_context(|| format!("request {i}"))?;
        }
        Ok(())
    })??;
    // The IPv6 VIP by MP-BGP over the same session (FRR installs the link-local one of the
    // RFC 2545 next hops), and requests through it.
    wait_until(
        "the IPv6 VIP by BGP at the router",
        lab::VIP_ROUTE_TIMEOUT,
        || {
            let r = netns::ip_in(&l.ns("router"), &["-6", "route", "show", lab::VIP6])?;
            Ok(r.contains("proto bgp"))
        },
    )?;
    let todo6 = l.spread6(lab::TODO_HOST, 10, Duration::from_secs(10))?;
    assert!(!todo6.is_empty(), "{todo6:?}");

    // Drain: the route stays, marked GRACEFUL_SHUTDOWN (RFC 8326) for the router to move
    // traffic away; undrain removes the mark.
    let shows_gshut = || -> Result<bool> {
        let t = frr.vtysh(&format!("show bgp ipv4 unicast {}/32 json", lab::VIP))?;
        Ok(t.contains("gshut") || t.contains("graceful-shutdown") || t.contains("65535:0"))
    };
    lb1.cli(&l.ns("lb1"), &["drain", "--vip", lab::VIP])?;
    wait_until(
        "GRACEFUL_SHUTDOWN at the router",
        Duration::from_secs(10),
        shows_gshut,
    )?;
    assert_eq!(l.vip_next_hops()?, ["10.0.0.11"]);
    lb1.cli(&l.ns("lb1"), &["undrain", "--vip", lab::VIP])?;
    wait_until("GRACEFUL_SHUTDOWN gone", Duration::from_secs(10), || {
        Ok(!shows_gshut()?)
    })?;

    lb1.stop()?;
    l.wait_vip_route(&["10.0.0.12"], Duration::from_secs(15))?;
    wait_until(
        "lb1's session down with its reason",
        Duration::from_secs(10),
        || {
            let n = frr.vtysh("show bgp neighbors 10.0.0.11 json")?;
            Ok(n.contains("portier stopping"))
        },
    )?;
    drop(lb2);
    Ok(())
}

#[test]
fn anycast_over_bgp_gives_the_router_both_next_hops() -> Result<()> {
    let l = Lab::up_with(
        "ba",
        Variant {
            bgp: true,
            anycast: true,
            ..Variant::default()
        },
    )?;
    let lb1 = l.start_portier("lb1", &l.lb_config("lb1")?)?;
    let lb2 = l.start_portier("lb2", &l.lb_config("lb2")?)?;
    l.wait_vip_route(&["10.0.0.11", "10.0.0.12"], lab::VIP_ROUTE_TIMEOUT)?;
    let route = vip_route(&l)?;
    assert!(route.contains("proto bgp"), "{route}");
    for (node, d) in [("lb1", &lb1), ("lb2", &lb2)] {
        wait_until("BFD up for the BGP peer", Duration::from_secs(15), || {
            let status: serde_json::Value =
                serde_json::from_str(&d.cli(&l.ns(node), &["status", "--json"])?)?;
            Ok(status["bgp"]["peers"][0]["bfd"]["up"] == true
                && status["bfd"]["sessions"][0]["clients"] == serde_json::json!(["bgp"]))
        })
        .with_context(|| node.to_string())?;
    }
    Ok(())
}
