//! `cargo xtask bench failover`: how long the flows through an LB that goes silent (link up,
//! nothing forwarded) go unanswered in the `--anycast` lab, with portier announcing the VIP
//! (OSPF, BFD 50 ms x3 to the router) against FRR ospfd + bfdd doing the same on the LB
//! nodes (portier then only balancing in XDP), in interleaved rounds of one run.

use anyhow::{Context, Result};
use portier_tests::failover;
use portier_tests::frr::Frr;
use portier_tests::lab::{self, Lab, Variant};
use portier_tests::netns;
use portier_tests::vrrp;
use std::time::Duration;

const ROUNDS: usize = 3;
/// Below OSPF's dead interval (4 s): only BFD reroutes in time.
const REROUTE_WITHIN: Duration = Duration::from_secs(3);

fn anycast() -> Variant {
    Variant {
        anycast: true,
        ..Variant::default()
    }
}

fn portier_round() -> Result<failover::Silenced> {
    let l = Lab::up_with("fb", anycast())?;
    let _lb1 = l.start_portier("lb1", &l.lb_config("lb1")?)?;
    let _lb2 = l.start_portier("lb2", &l.lb_config("lb2")?)?;
    failover::silence_lb1(&l, &["10.0.0.11", "10.0.0.12"], REROUTE_WITHIN)
}

/// FRR as the LB's routing, as an operator would run it next to an XDP balancer: the VIP on a
/// passive loopback, OSPF with `ip ospf bfd` at the lab's timers.
fn frr_config(ns: &str, router_id: &str) -> String {
    format!(
        "frr defaults traditional\nhostname {ns}\n!\nbfd\n profile lab\n  transmit-interval 50\n  \
         receive-interval 50\n  detect-multiplier 3\n !\n!\ninterface eth0\n ip ospf hello-interval 1\n \
         ip ospf dead-interval 4\n ip ospf retransmit-interval 2\n ip ospf priority 0\n ip ospf bfd\n \
         ip ospf bfd profile lab\n!\nrouter ospf\n ospf router-id {router_id}\n network 10.0.0.0/24 area 0\n \
         network {}/32 area 0\n passive-interface lo\n!\n",
        lab::VIP
    )
}

fn frr_round() -> Result<failover::Silenced> {
    let l = Lab::up_with("fb", anycast())?;
    let mut keep = Vec::new();
    for (node, addr) in lab::LBS {
        keep.push(l.start_portier(node, &l.lb_config_l4_only(node)?)?);
        let ns = l.ns(node);
        netns::ip_in(
            &ns,
            &["addr", "add", &format!("{}/32", lab::VIP), "dev", "lo"],
        )?;
        let frr = Frr::start_daemons(
            &ns,
            &ns,
            &frr_config(&ns, addr),
            &["zebra", "bfdd", "ospfd"],
        )
        .with_context(|| format!("FRR on {node}"))?;
        std::mem::forget(frr);
    }
    let s = failover::silence_lb1(&l, &["10.0.0.11", "10.0.0.12"], REROUTE_WITHIN);
    // The LBs' FRR dies with their namespaces when the lab goes down.
    drop(keep);
    lab::down("fb");
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn run() -> Result<()> {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let p = portier_round()?;
        println!(
            "round {round} portier: gap {:?} over {} flows via lb1 (route left lb1 after {:?})",
            p.worst_gap, p.via_lb1, p.rerouted
        );
        ours.push(p.worst_gap);
        let f = frr_round()?;
        println!(
            "round {round} FRR:     gap {:?} over {} flows via lb1 (route left lb1 after {:?})",
            f.worst_gap, f.via_lb1, f.rerouted
        );
        theirs.push(f.worst_gap);
    }
    let (p, f) = (median(ours), median(theirs));
    println!(
        "failover (silent LB, BFD 50 ms x3), median of {ROUNDS}: portier {p:?}, FRR ospfd+bfdd {f:?}, ratio {:.2}",
        p.as_secs_f64() / f.as_secs_f64()
    );
    vrrp_fast()?;
    Ok(())
}

/// VRRP at 20 ms adverts (master down after ~3 x 20 ms + skew): the VRRP lab's master killed
/// and its link cut, a client pinging the VIP every 10 ms; portier and keepalived pairs in
/// interleaved rounds.
fn vrrp_fast() -> Result<()> {
    const ADVERT_MS: u32 = 20;
    let gap = |kind| {
        vrrp::failover_gap(
            "fv",
            kind,
            ADVERT_MS,
            false,
            Duration::from_millis(10),
            Duration::from_secs(4),
            Duration::from_secs(2),
        )
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let p = gap(vrrp::Kind::Portier)?;
        let k = gap(vrrp::Kind::Keepalived)?;
        println!("round {round} VRRP {ADVERT_MS} ms: portier {p:?}, keepalived {k:?}");
        ours.push(p);
        theirs.push(k);
    }
    let (p, k) = (median(ours), median(theirs));
    println!(
        "VRRP failover (master killed, adverts {ADVERT_MS} ms), median of {ROUNDS}: portier {p:?}, keepalived {k:?}, ratio {:.2}",
        p.as_secs_f64() / k.as_secs_f64()
    );
    Ok(())
}
