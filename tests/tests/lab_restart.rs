//! A full LB node restarting under load: pt-lb1 (VRRP master, OSPF announcing the VIP, XDP
//! balancing) is killed with SIGKILL while a client opens a new connection to the VIP after
//! every answer, and started again after 1 s (within VRRP's master-down interval and OSPF's
//! dead interval) and after 5 s (when pt-lb2 has taken over). No request may fail, and after
//! each restart lb1 is back in its role: master, and the router's route to the VIP via it.
//! Within the master-down interval lb1 resumes as master (its VRRP state file says it was
//! master moments ago), so pt-lb2 never takes the VIP; and OSPF graceful restart (RFC 3623:
//! lb1 sends grace-LSAs first thing, pt-router's FRR helps) keeps the router's route via lb1
//! the whole time, whose XDP program never stopped forwarding.

use anyhow::Result;
use portier_tests::client::Traffic;
use portier_tests::lab::{self, Lab};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> Result<bool>) -> Result<()> {
    portier_tests::wait::until(what, timeout, f).map(|_| ())
}

#[test]
fn kill_9_and_restart_of_lb1_loses_no_request() -> Result<()> {
    let l = Lab::up("rs")?;
    let _lb2 = l.start_portier("lb2", &l.lb_config("lb2")?)?;
    let mut lb1 = l.start_portier("lb1", &l.lb_config("lb1")?)?;
    wait_until("lb1 master", Duration::from_secs(10), || {
        Ok(l.has_vip_on_lan("lb1")? && !l.has_vip_on_lan("lb2")?)
    })?;
    l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;
    let vip = SocketAddr::from(([203, 0, 113, 10], lab::HTTP_PORT));

    for pause in [Duration::from_secs(1), Duration::from_secs(5)] {
        let traffic = Traffic::start(&l.ns("client"), vip, Duration::from_secs(120))?;
        wait_until("traffic", Duration::from_secs(10), || {
            Ok(traffic.samples().len() > 30)
        })?;
        // The state the scenario starts from: the router routes the VIP via lb1 alone, at the
        // master's cost. Seconds after the start both LBs' LSAs still carry the standby metric
        // (the route via both for a while), and a kill then would watch that settle rather
        // than the restart.
        l.wait_vip_master_route("10.0.0.11", lab::VIP_ROUTE_TIMEOUT)?;
        let killed = Instant::now();
        lb1.kill()?;
        // The router's next hops for the VIP meanwhile: whether it ever had none.
        // And whether lb2 ever took the VIP.
        let mut seen: Vec<Vec<String>> = Vec::new();
        let mut lb2_took_over = false;
        let mut observe = |seen: &mut Vec<Vec<String>>| -> Result<()> {
            let hops = l.vip_next_hops()?;
            if seen.last() != Some(&hops) {
                seen.push(hops);
            }
            lb2_took_over |= l.has_vip_on_lan("lb2")?;
            Ok(())
        };
        let until = Instant::now() + pause;
        while Instant::now() < until {
            observe(&mut seen)?;
            std::thread::sleep(Duration::from_millis(10));
        }
        lb1 = l.start_portier("lb1", &l.lb_config("lb1")?)?;
        let restarted = killed.elapsed();
        wait_until("lb1 master again", Duration::from_secs(15), || {
            observe(&mut seen)?;
            Ok(l.has_vip_on_lan("lb1")? && !l.has_vip_on_lan("lb2")?)
        })?;
        // Within the master-down interval lb1 resumes as master: the backup never moves.
        if pause < Duration::from_secs(2) {
            let settle = Instant::now() + Duration::from_secs(5);
            while Instant::now() < settle {
                observe(&mut seen)?;
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(!lb2_took_over, "lb2 took the VIP; next hops {seen:?}");
            // Graceful restart: the route via lb1 never leaves the router.
            assert!(
                seen.iter().all(|h| h.iter().any(|hop| hop == "10.0.0.11")),
                "the route via lb1 left the router: {seen:?}"
            );
            assert!(
                lb1.log_text().contains("graceful restart ends"),
                "lb1 did not restart gracefully"
            );
            assert!(lb1.log_text().contains("resumed"), "lb1 did not resume");
        }
        l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;
        // Past the moment: requests keep going while everything settles.
        let mark = traffic.samples().len();
        wait_until("traffic after the restart", Duration::from_secs(10), || {
            Ok(traffic.samples().len() > mark + 100)
        })?;
        let samples = traffic.stop();
        let failed: Vec<_> = samples
            .iter()
            .filter(|s| s.result.is_err())
            .map(|s| {
                (
                    s.started.saturating_duration_since(killed),
                    s.result.clone(),
                )
            })
            .collect();
        println!(
            "lb1 killed, restarted after {pause:?} (ready {restarted:?} after the kill): {} requests, {} failed; the router's next hops went {seen:?}",
            samples.len(),
            failed.len()
        );
        assert!(
            failed.is_empty(),
            "failed requests (since the kill): {failed:?}"
        );
    }
    Ok(())
}
