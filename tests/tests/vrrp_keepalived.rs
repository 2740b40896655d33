//! portier's VRRP against Debian's keepalived (VRRPv3 and VRRPv2), and against itself, on a
//! LAN of namespaces. Needs root. Timings use short intervals so the file runs in seconds:
//! master-down = 3 x interval + skew, and a clean shutdown hands over within skew.

use std::time::Duration;

use portier_tests::vrrp::{Kind, Lan, Router};

const V3_MS: u32 = 500;
/// Master_Down_Interval of a priority-100 backup at 500 ms: 1.5 s + 0.305 s.
const V3_MASTER_DOWN: Duration = Duration::from_millis(1805);
/// A resignation (priority 0) is taken over after skew (0.305 s): well under master-down.
const V3_RESIGN_BOUND: Duration = Duration::from_millis(1000);
/// Process start plus one master-down interval, with room for a loaded CI machine.
const SETTLE: Duration = Duration::from_secs(8);
/// Scheduling and polling slack on top of protocol timers.
const SLACK: Duration = Duration::from_millis(700);

fn portier(priority: u8, version: u8, ms: u32) -> Router {
    Router::new(Kind::Portier, priority, version, ms)
}

fn keepalived(priority: u8, version: u8, ms: u32) -> Router {
    Router::new(Kind::Keepalived, priority, version, ms)
}

/// `high` on node a (priority 150) and `low` on node b (priority 100): a wins, loses it on a
/// kill, takes it back by preemption, and hands it over on a clean stop.
fn master_backup_cycle(prefix: &str, high: Router, low: Router, master_down: Duration) {
    let resign_bound = if high.version == 2 {
        Duration::from_millis(1500)
    } else {
        V3_RESIGN_BOUND
    };
    let mut lan = Lan::up(prefix).unwrap();
    lan.start("b", &low).unwrap();
    lan.start("a", &high).unwrap();
    lan.owner_is("a", "b", SETTLE).unwrap();
    // The backup accepts the master's adverts: it keeps off the VIP for longer than its
    // master-down interval.
    lan.holds("b", false, master_down + SLACK).unwrap();
    assert!(lan.has_vip("a").unwrap());

    // Hard failure of the master: the backup takes over within master-down.
    lan.kill("a").unwrap();
    let took = lan.wait_vip("b", true, SETTLE).unwrap();
    assert!(
        took <= master_down + SLACK,
        "takeover after kill took {took:?}"
    );

    // The higher priority comes back and preempts.
    lan.start("a", &high).unwrap();
    lan.owner_is("a", "b", SETTLE).unwrap();

    // Clean shutdown: priority 0, taken over within skew, not master-down.
    lan.stop("a").unwrap();
    let took = lan.wait_vip("b", true, SETTLE).unwrap();
    assert!(
        took <= resign_bound,
        "takeover after clean stop took {took:?}"
    );
    assert!(!lan.has_vip("a").unwrap(), "a clean stop removes the VIP");
}

#[test]
fn v3_portier_master_keepalived_backup() {
    master_backup_cycle(
        "vk1",
        portier(150, 3, V3_MS),
        keepalived(100, 3, V3_MS),
        V3_MASTER_DOWN,
    );
}

#[test]
fn v3_keepalived_master_portier_backup() {
    master_backup_cycle(
        "vk2",
        keepalived(150, 3, V3_MS),
        portier(100, 3, V3_MS),
        V3_MASTER_DOWN,
    );
}

/// VRRPv2 carries whole seconds: master-down of priority 100 at 1 s is 3.61 s.
#[test]
fn v2_portier_master_keepalived_backup() {
    master_backup_cycle(
        "vk3",
        portier(150, 2, 1000),
        keepalived(100, 2, 1000),
        Duration::from_millis(3610),
    );
}

#[test]
fn v2_keepalived_master_portier_backup() {
    master_backup_cycle(
        "vk4",
        keepalived(150, 2, 1000),
        portier(100, 2, 1000),
        Duration::from_millis(3610),
    );
}

#[test]
fn portier_pair() {
    master_backup_cycle(
        "vp1",
        portier(150, 3, V3_MS),
        portier(100, 3, V3_MS),
        V3_MASTER_DOWN,
    );
}

/// State, transitions and counters in /status, /metrics and `portier status`.
#[test]
fn portier_pair_reports_state_and_counters() {
    let mut lan = Lan::up("vp2").unwrap();
    let mut high = portier(150, 3, V3_MS);
    high.admin = true;
    let mut low = portier(100, 3, V3_MS);
    low.admin = true;
    lan.start("b", &low).unwrap();
    lan.start("a", &high).unwrap();
    lan.owner_is("a", "b", SETTLE).unwrap();
    // The status board is refreshed every 500 ms: poll, do not sleep.
    let deadline = std::time::Instant::now() + SETTLE;
    let (a, b) = loop {
        let a: serde_json::Value =
            serde_json::from_str(&lan.portier_status("a", true).unwrap()).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(&lan.portier_status("b", true).unwrap()).unwrap();
        let (ia, ib) = (&a["vrrp"]["instances"][0], &b["vrrp"]["instances"][0]);
        if ia["state"] == "master"
            && ib["state"] == "backup"
            && ib["counters"]["adverts_received"].as_u64() > Some(2)
        {
            break (ia.clone(), ib.clone());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never settled:\n{a:#}\n{b:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(b["master"], "10.77.0.1");
    assert_eq!(a["last_transition"]["to"], "master");
    assert!(
        a["last_transition"]["reason"]
            .as_str()
            .unwrap()
            .contains("no advertisement"),
        "{a:#}"
    );
    assert_eq!(b["master_adver_interval_ms"], 500);
    assert!(a["counters"]["adverts_sent"].as_u64() > Some(0));
    assert_eq!(a["counters"]["became_master"], 1);

    let metrics = lan.admin_get("a", "/metrics").unwrap();
    assert!(
        metrics.contains("portier_vrrp_master{instance=\"vip51\",vrid=\"51\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "portier_vrrp_drops_total{instance=\"vip51\",vrid=\"51\",reason=\"checksum\"} 0"
    ));
    let table = lan.portier_status("b", false).unwrap();
    assert!(
        table.contains("[vrrp]") && table.contains("backup"),
        "{table}"
    );
}

/// With preempt off, a higher priority that starts while another router is master stays
/// backup; with preempt on (the cycles above) it takes over. Both directions of the pair.
#[test]
fn no_preempt_keeps_the_running_master() {
    for (prefix, master, mut late) in [
        ("vk5", keepalived(100, 3, V3_MS), portier(150, 3, V3_MS)),
        ("vk6", portier(100, 3, V3_MS), keepalived(150, 3, V3_MS)),
        ("vp3", portier(100, 3, V3_MS), portier(150, 3, V3_MS)),
    ] {
        late.preempt = false;
        let mut lan = Lan::up(prefix).unwrap();
        lan.start("b", &master).unwrap();
        lan.wait_vip("b", true, SETTLE).unwrap();
        lan.start("a", &late).unwrap();
        lan.holds("a", false, V3_MASTER_DOWN * 2).unwrap();
        assert!(
            lan.has_vip("b").unwrap(),
            "{prefix}: the master kept the VIP"
        );
    }
}

/// The master's own interface goes down: portier enters fault (no VIP, no adverts, "fault"
/// in /status and /metrics), keepalived takes over. Link up: portier starts over as backup
/// and preempts keepalived, or with preempt off stays backup.
#[test]
fn own_link_down_is_a_fault_and_link_up_starts_over() {
    for (prefix, preempt) in [("vf1", true), ("vf2", false)] {
        let mut lan = Lan::up(prefix).unwrap();
        let mut high = portier(150, 3, V3_MS);
        high.admin = true;
        high.preempt = preempt;
        lan.start("b", &keepalived(100, 3, V3_MS)).unwrap();
        lan.start("a", &high).unwrap();
        lan.owner_is("a", "b", SETTLE).unwrap();

        lan.set_link("a", "eth0", false).unwrap();
        lan.wait_vip("a", false, SETTLE).unwrap();
        let took = lan.wait_vip("b", true, SETTLE).unwrap();
        assert!(
            took <= V3_MASTER_DOWN + SLACK,
            "{prefix}: takeover took {took:?}"
        );
        lan.wait_log("a", "master -> fault: interface down", 1, SETTLE)
            .unwrap();
        let deadline = std::time::Instant::now() + SETTLE;
        loop {
            let status: serde_json::Value =
                serde_json::from_str(&lan.portier_status("a", true).unwrap()).unwrap();
            let instance = &status["vrrp"]["instances"][0];
            if instance["state"] == "fault" {
                assert_eq!(instance["last_transition"]["reason"], "interface down");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{prefix}: no fault in /status:\n{instance:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let metrics = lan.admin_get("a", "/metrics").unwrap();
        assert!(
            metrics.contains("portier_vrrp_state{instance=\"vip51\",vrid=\"51\"} 3"),
            "{metrics}"
        );
        // Silent while faulty: keepalived, now master, hears no one to yield to.
        lan.holds("b", true, V3_MASTER_DOWN).unwrap();

        lan.set_link("a", "eth0", true).unwrap();
        lan.wait_log("a", "fault -> backup: interface up again", 1, SETTLE)
            .unwrap();
        if preempt {
            lan.owner_is("a", "b", SETTLE).unwrap();
            // Losing the address adverts come from is a fault too; an address's return a
            // restart, sending from the new address.
            let ns = lan.ns("a");
            portier_tests::netns::ip_in(&ns, &["addr", "del", "10.77.0.1/24", "dev", "eth0"])
                .unwrap();
            lan.owner_is("b", "a", SETTLE).unwrap();
            lan.wait_log(
                "a",
                "master -> fault: interface has no primary address",
                1,
                SETTLE,
            )
            .unwrap();
            portier_tests::netns::ip_in(&ns, &["addr", "add", "10.77.0.9/24", "dev", "eth0"])
                .unwrap();
            lan.owner_is("a", "b", SETTLE).unwrap();
            lan.wait_log("a", "VRRP source address changed", 1, SETTLE)
                .unwrap();
            let status: serde_json::Value =
                serde_json::from_str(&lan.portier_status("a", true).unwrap()).unwrap();
            assert_eq!(status["vrrp"]["instances"][0]["source"], "10.77.0.9");
        } else {
            lan.holds("a", false, V3_MASTER_DOWN * 2).unwrap();
            assert!(
                lan.has_vip("b").unwrap(),
                "{prefix}: keepalived kept the VIP"
            );
        }
    }
}

/// A tracked interface going down costs portier its VIP (150 - 60 < 100), and it takes the
/// VIP back by preemption when the interface returns.
#[test]
fn tracking_makes_portier_yield_to_keepalived() {
    interface_tracking("vk7", keepalived(100, 3, V3_MS));
}

#[test]
fn tracking_makes_portier_yield_to_portier() {
    interface_tracking("vp4", portier(100, 3, V3_MS));
}

fn interface_tracking(prefix: &str, peer: Router) {
    let mut lan = Lan::up(prefix).unwrap();
    let mut high = portier(150, 3, V3_MS);
    high.track_interface = Some(("trk0".into(), 60));
    lan.start("b", &peer).unwrap();
    lan.start("a", &high).unwrap();
    lan.owner_is("a", "b", SETTLE).unwrap();

    lan.set_link("a", "trk0", false).unwrap();
    lan.owner_is("b", "a", SETTLE).unwrap();
    lan.wait_log("a", "effective priority 90", 1, SETTLE)
        .unwrap();

    lan.set_link("a", "trk0", true).unwrap();
    lan.owner_is("a", "b", SETTLE).unwrap();
}

/// A service without a healthy backend costs portier its VIP: the L4 part's health checks
/// publish the service's health on the bus, VRRP tracking lowers the priority, keepalived
/// (preempt on) takes over. The backend's return gives the VIP back.
#[test]
fn service_tracking_makes_portier_yield_to_keepalived() {
    let mut lan = Lan::up("vk8").unwrap();
    let mut high = portier(150, 3, V3_MS);
    high.services = format!(
        "[[service]]\nname = \"web\"\nvip = \"{}\"\nport = 8080\nprotocol = \"tcp\"\n\
         \x20 [[service.backend]]\n  address = \"10.77.0.3\"\n\
         \x20 [service.health]\n  kind = \"tcp\"\n  interval_ms = 200\n  timeout_ms = 100\n  rise = 1\n  fall = 1\n",
        portier_tests::vrrp::VIP
    );
    high.track_service = Some(("web".into(), 60));
    lan.start_app(8080).unwrap();
    lan.start("b", &keepalived(100, 3, V3_MS)).unwrap();
    lan.start("a", &high).unwrap();
    lan.owner_is("a", "b", SETTLE).unwrap();

    lan.kill("app").unwrap();
    lan.owner_is("b", "a", SETTLE).unwrap();
    lan.wait_log("a", "effective priority 90", 1, SETTLE)
        .unwrap();

    lan.start_app(8080).unwrap();
    lan.owner_is("a", "b", SETTLE).unwrap();
}

/// VRRPv3 over IPv6: adverts from link-local addresses to ff02::12 with hop limit 255, the
/// VIP taken over with unsolicited neighbour advertisements.
#[test]
fn v3_ipv6_portier_and_keepalived_both_ways() {
    for (prefix, mut high, mut low) in [
        ("vk9", portier(150, 3, V3_MS), keepalived(100, 3, V3_MS)),
        ("vka", keepalived(150, 3, V3_MS), portier(100, 3, V3_MS)),
    ] {
        high.ipv6 = true;
        low.ipv6 = true;
        master_backup_cycle(prefix, high, low, V3_MASTER_DOWN);
    }
}

/// Unicast peers instead of multicast, against keepalived's unicast_peer.
#[test]
fn v3_unicast_portier_and_keepalived() {
    let mut high = portier(150, 3, V3_MS);
    high.unicast_peers = vec!["10.77.0.2".into()];
    let mut low = keepalived(100, 3, V3_MS);
    low.unicast_peers = vec!["10.77.0.1".into()];
    master_backup_cycle("vku", high, low, V3_MASTER_DOWN);
}

/// A reload applies only the difference: an unchanged instance keeps running (and stays
/// master); a changed one resigns and restarts with its new settings.
#[test]
fn reload_applies_priority_changes() {
    let mut lan = Lan::up("vkr").unwrap();
    let mut high = portier(150, 3, V3_MS);
    lan.start("b", &keepalived(100, 3, V3_MS)).unwrap();
    lan.start("a", &high).unwrap();
    lan.owner_is("a", "b", SETTLE).unwrap();

    lan.reload("a", &high).unwrap();
    lan.holds("a", true, V3_MASTER_DOWN + SLACK).unwrap();

    high.priority = 50;
    lan.reload("a", &high).unwrap();
    lan.owner_is("b", "a", SETTLE).unwrap();

    high.priority = 150;
    lan.reload("a", &high).unwrap();
    lan.owner_is("a", "b", SETTLE).unwrap();
}

/// accept = false: the master owns the VIP on the link (the client resolves it to the
/// master's MAC) but drops packets to it (no ping reply), counted in /metrics. A clean stop
/// removes the nftables table; one left by a kill is removed by the next start, which with
/// accept = true answers pings.
#[test]
fn no_accept_master_owns_the_vip_but_drops_its_traffic() {
    use portier_tests::netns::{exec_in, ip_in};
    use portier_tests::vrrp::VIP;
    let mut lan = Lan::up("vna").unwrap();
    let mut router = portier(150, 3, V3_MS);
    router.admin = true;
    router.accept = false;
    lan.start("a", &router).unwrap();
    lan.wait_vip("a", true, SETTLE).unwrap();
    let (a, c) = (lan.ns("a"), lan.ns("c"));
    let tables = || exec_in(&a, "nft", &["list", "tables"]).unwrap();
    assert!(tables().contains("inet portier_vna_a"), "{}", tables());

    assert!(
        exec_in(&c, "ping", &["-c", "2", "-i", "0.2", "-W", "1", VIP]).is_err(),
        "the VIP answered ping with accept = false"
    );
    let mac = ip_in(&a, &["-o", "link", "show", "eth0"]).unwrap();
    let mac = mac
        .split("link/ether ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let neigh = ip_in(&c, &["neigh", "show", VIP]).unwrap();
    assert!(
        neigh.contains(&mac),
        "client should resolve the VIP to {mac}: {neigh}"
    );
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let metrics = lan.admin_get("a", "/metrics").unwrap();
        let dropped = metrics
            .lines()
            .find_map(|l| l.strip_prefix("portier_vrrp_no_accept_dropped_packets_total "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        if dropped >= Some(2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no drops counted:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The primary address is not a VIP: it still answers.
    exec_in(&c, "ping", &["-c", "1", "-W", "1", "10.77.0.1"]).unwrap();

    lan.stop("a").unwrap();
    assert!(
        !tables().contains("portier"),
        "a clean stop removes the table"
    );

    lan.start("a", &router).unwrap();
    lan.wait_vip("a", true, SETTLE).unwrap();
    lan.kill("a").unwrap();
    assert!(tables().contains("portier"), "a kill leaves the table");
    router.accept = true;
    lan.start("a", &router).unwrap();
    lan.wait_vip("a", true, SETTLE).unwrap();
    // The part deletes the stale table before it starts its instances.
    assert!(
        !tables().contains("portier"),
        "startup removes a stale table"
    );
    exec_in(&c, "ping", &["-c", "1", "-W", "1", VIP]).unwrap();
}

/// With virtual_mac, portier answers for the VIP at the virtual router MAC
/// (00-00-5E-00-01-33 for VRID 51), also after taking it back from keepalived's use_vmac;
/// failover both ways keeps the VIP reachable.
#[test]
fn virtual_mac_with_keepalived() {
    const VMAC: &str = "00:00:5e:00:01:33";
    let mut lan = Lan::up("vkv").unwrap();
    let mut high = portier(150, 3, V3_MS);
    high.virtual_mac = true;
    let mut low = keepalived(100, 3, V3_MS);
    low.virtual_mac = true;
    lan.start("b", &low).unwrap();
    lan.start("a", &high).unwrap();
    lan.owner_is("a", "b", SETTLE).unwrap();
    let vmac_link =
        portier_tests::netns::ip_in(&lan.ns("a"), &["-o", "link", "show", "vrrp.51"]).unwrap();
    assert!(vmac_link.contains(VMAC), "{vmac_link}");
    // Reachable within a deadline, not at once: when a vmac master hands over, the old one
    // may still hold the VIP for a moment and answer the new master's gratuitous ARP from the
    // same MAC, which the bridge then learns at the old master's port until the new master's
    // next advert (sent from the vmac too) teaches it back; keepalived pairs race the same way.
    let client_sees = |lan: &Lan, phase: &str| {
        let deadline = std::time::Instant::now() + SETTLE;
        while let Err(e) = portier_tests::netns::exec_in(
            &lan.ns("c"),
            "ping",
            &["-c", "1", "-W", "1", portier_tests::vrrp::VIP],
        ) {
            if std::time::Instant::now() > deadline {
                let fdb =
                    portier_tests::netns::run("bridge", &["-n", &lan.ns("lan"), "fdb", "show"]);
                let neigh = portier_tests::netns::ip_in(&lan.ns("c"), &["neigh"]);
                panic!("{phase}: {e}\nfdb {fdb:?}\nclient neigh {neigh:?}");
            }
        }
        portier_tests::netns::ip_in(&lan.ns("c"), &["neigh", "show", portier_tests::vrrp::VIP])
            .unwrap()
    };
    let neigh = client_sees(&lan, "portier master");
    assert!(neigh.contains(VMAC), "client: {neigh}");

    // keepalived takes over on a clean stop and the client still reaches the VIP. (Which MAC
    // the client then holds is keepalived's business: its base interface asks for the
    // client's MAC with the VIP as sender address, which portier avoids by arp_announce.)
    lan.stop("a").unwrap();
    lan.wait_vip("b", true, SETTLE).unwrap();
    client_sees(&lan, "keepalived master");
    assert!(
        portier_tests::netns::ip_in(&lan.ns("a"), &["link", "show", "vrrp.51"]).is_err(),
        "portier removes its macvlan on exit"
    );

    // And portier preempts back, from the same MAC.
    lan.start("a", &high).unwrap();
    lan.owner_is("a", "b", SETTLE).unwrap();
    let neigh = client_sees(&lan, "portier master again");
    assert!(neigh.contains(VMAC), "client: {neigh}");
}

/// IPv6 with a virtual MAC: the master owns the VIP at 00-00-5E-00-02-33 on its macvlan
/// `vrrp6.51` (adverts and NAs from a link-local address of the macvlan's own), the client
/// resolves the VIP to it and reaches it, and failover to the peer and back keeps it so.
/// Against keepalived's use_vmac and against another portier.
#[test]
fn virtual_mac_ipv6() {
    use portier_tests::netns::{exec_in, ip_in};
    use portier_tests::vrrp::VIP6;
    const VMAC6: &str = "00:00:5e:00:02:33";
    for (prefix, mut low) in [
        ("vv6", keepalived(100, 3, V3_MS)),
        ("vp6", portier(100, 3, V3_MS)),
    ] {
        let mut lan = Lan::up(prefix).unwrap();
        for (node, address) in [
            ("a", "fd00:77::1/64"),
            ("b", "fd00:77::2/64"),
            ("c", "fd00:77::3/64"),
        ] {
            ip_in(&lan.ns(node), &["addr", "add", address, "dev", "eth0"]).unwrap();
        }
        let mut high = portier(150, 3, V3_MS);
        for r in [&mut high, &mut low] {
            r.ipv6 = true;
            r.virtual_mac = true;
        }
        lan.start("b", &low).unwrap();
        lan.start("a", &high).unwrap();
        lan.owner_is("a", "b", SETTLE).unwrap();
        let vlink = ip_in(&lan.ns("a"), &["-o", "link", "show", "vrrp6.51"]).unwrap();
        assert!(vlink.contains(VMAC6), "{prefix}: {vlink}");

        let client_sees = |lan: &Lan, phase: &str| {
            let deadline = std::time::Instant::now() + SETTLE;
            while let Err(e) = exec_in(&lan.ns("c"), "ping", &["-c", "1", "-W", "1", VIP6]) {
                if std::time::Instant::now() > deadline {
                    let neigh = ip_in(&lan.ns("c"), &["-6", "neigh"]);
                    panic!("{prefix} {phase}: {e}\nclient neigh {neigh:?}");
                }
            }
            ip_in(&lan.ns("c"), &["-6", "neigh", "show", VIP6]).unwrap()
        };
        let neigh = client_sees(&lan, "portier master");
        assert!(neigh.contains(VMAC6), "{prefix}: client: {neigh}");

        lan.stop("a").unwrap();
        lan.wait_vip("b", true, SETTLE).unwrap();
        client_sees(&lan, "peer master");
        assert!(
            ip_in(&lan.ns("a"), &["link", "show", "vrrp6.51"]).is_err(),
            "{prefix}: portier removes its macvlan on exit"
        );

        lan.start("a", &high).unwrap();
        lan.owner_is("a", "b", SETTLE).unwrap();
        let neigh = client_sees(&lan, "portier master again");
        assert!(neigh.contains(VMAC6), "{prefix}: client: {neigh}");
    }
}
