//! The `--anycast` lab: VRRP off, both LBs announce the VIP by OSPF while healthy, and the
//! router (FRR ospfd + bfdd) watches each LB with BFD at 50 ms x3. pt-lb1 then goes silent
//! with its link up (its bridge port stops forwarding: a power loss or a hung kernel, as the
//! switch sees it). The router must drop lb1's next hop by BFD, before OSPF's dead interval
//! (4 s) could, so the UDP flows and established TCP connections ECMP had sent through lb1
//! continue through lb2 to the same hosts. Prints the longest gap the lb1 flows saw.

use anyhow::{Context, Result};
use portier_tests::client;
use portier_tests::failover;
use portier_tests::lab::{self, Lab, Variant};
use portier_tests::netns;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

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
    let vip_http = SocketAddr::from(([203, 0, 113, 10], lab::HTTP_PORT));
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
    // The dead interval is 4 s: a route change within 3 s is BFD's doing.
    let s = failover::silence_lb1(&l, &["10.0.0.11", "10.0.0.12"], Duration::from_secs(3))?;
    println!(
        "lb1 silent: the router's route left it after {:?}; longest gap of the {} flows via lb1: {:?}",
        s.rerouted, s.via_lb1, s.worst_gap
    );
    // Both LBs compute the same Maglev table: a flow keeps its host.
    assert!(
        s.moved.is_empty(),
        "flows from ports {:?} moved host",
        s.moved
    );
    for (i, (s, host)) in conns.iter_mut().enumerate() {
        let r = client::get_on(s, lab::TODO_HOST, "/")
            .with_context(|| format!("established connection {i} after lb1 went silent"))?;
        assert_eq!(&r.served_by, host, "connection {i} moved host");
    }
    Ok(())
}
