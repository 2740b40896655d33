//! The balancer, run on crafted frames through `BPF_PROG_TEST_RUN`.
//!
//! Needs root and a kernel that loads the program: a test that cannot load fails, it does not
//! skip, so CI cannot go green without exercising the dataplane.

use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, VlanId, icmpv4::DestUnreachableHeader};
use portier::dataplane::*;

mod common;
use common::*;

const ROUTER: [u8; 4] = [198, 51, 100, 1];
const OTHER: [u8; 4] = [10, 0, 0, 11];
const ROUTER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
];

fn load() -> Dataplane {
    Dataplane::load_for_test(4096)
        .unwrap_or_else(|e| panic!("loading the XDP balancer (these tests need root): {e}"))
}

fn backend(i: u32, generation: u32) -> Backend {
    Backend {
        mac: host_mac(i),
        src_mac: LB_MAC,
        ifindex: LO,
        generation,
        flags: BACKEND_F_VALID,
        addr: [10, 0, 0, 20 + i as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        family: FAMILY_V4,
        _pad: [0; 3],
    }
}

fn svc4(port: u16, proto: u8) -> ServiceKey {
    ServiceKey {
        addr: v4(VIP),
        port: port.to_be(),
        proto,
        family: FAMILY_V4,
    }
}

fn svc6(port: u16, proto: u8) -> ServiceKey {
    ServiceKey {
        addr: VIP6,
        port: port.to_be(),
        proto,
        family: FAMILY_V6,
    }
}

/// A balancer with backends 1 and 2 and TCP VIP:80 sending everything to `to`.
fn setup(to: u32) -> Dataplane {
    let mut dp = load();
    dp.set_backend(1, &backend(1, 1)).expect("backend 1");
    dp.set_backend(2, &backend(2, 1)).expect("backend 2");
    dp.set_service(svc4(80, PROTO_TCP), 0, &[to; 65537])
        .expect("service");
    dp
}

fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
}

fn tcp4(sport: u16, dst: [u8; 4], dport: u16, syn: bool) -> Vec<u8> {
    let b = eth().ipv4(CLIENT, dst, 64).tcp(sport, dport, 1000, 65535);
    let b = if syn { b.syn() } else { b.ack(2000) };
    let mut v = Vec::new();
    b.write(&mut v, b"hello").expect("frame");
    v
}

fn udp4(sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    eth()
        .ipv4(CLIENT, VIP, 64)
        .udp(sport, dport)
        .write(&mut v, b"query")
        .expect("frame");
    v
}

fn flow4(sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: v4(CLIENT),
        dst: v4(VIP),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        family: FAMILY_V4,
        _pad: [0; 2],
    }
}

/// Runs `frame`, checks the action and that `reason` went up by exactly one.
fn run(dp: &Dataplane, frame: &[u8], action: u32, reason: Reason) -> Vec<u8> {
    let before = dp.reason(reason).expect("reasons");
    let out = dp.test_run("portier_lb", frame, 1).expect("test_run");
    let after = dp.reason(reason).expect("reasons");
    assert_eq!(
        out.action,
        action,
        "action for {reason:?}; reasons: {:?}",
        nonzero(dp)
    );
    assert_eq!(
        after - before,
        1,
        "{reason:?} count; reasons: {:?}",
        nonzero(dp)
    );
    out.frame
}

fn nonzero(dp: &Dataplane) -> Vec<(Reason, u64)> {
    dp.reasons()
        .expect("reasons")
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// L2 DSR: the frame goes to host `to`, and only the two MACs changed.
fn assert_forwarded(input: &[u8], output: &[u8], to: u32) {
    assert_eq!(output.len(), input.len());
    assert_eq!(output[..6], host_mac(to), "destination MAC");
    assert_eq!(output[6..12], LB_MAC, "source MAC");
    assert_eq!(
        output[12..],
        input[12..],
        "bytes past the MACs must be untouched"
    );
}

#[test]
fn syn_to_vip_goes_to_the_maglev_backend() {
    let dp = setup(1);
    let syn = tcp4(40000, VIP, 80, true);
    let out = run(&dp, &syn, XDP_TX, Reason::ConntrackNew);
    assert_forwarded(&syn, &out, 1);
    assert_eq!(dp.reason(Reason::ForwardTx).expect("reasons"), 1);
    let flow = dp.flow(&flow4(40000, 80, PROTO_TCP)).expect("conntrack");
    assert_eq!(
        flow,
        Some(FlowValue {
            backend: 1,
            generation: 1
        })
    );
    let svc = dp.service_counters(0).expect("counters");
    assert_eq!(
        svc,
        Counters {
            packets: 1,
            bytes: syn.len() as u64
        }
    );
    assert_eq!(dp.backend_counters(1).expect("counters"), svc);
    assert_eq!(dp.backend_counters(2).expect("counters").packets, 0);
}

#[test]
fn established_flow_survives_a_table_change_and_new_syns_follow_the_new_table() {
    let mut dp = setup(1);
    let syn = tcp4(40000, VIP, 80, true);
    run(&dp, &syn, XDP_TX, Reason::ConntrackNew);
    // Backend 1 leaves the table (drained), but stays a valid backend.
    dp.set_service(svc4(80, PROTO_TCP), 0, &[2; 65537])
        .expect("swap table");
    let ack = tcp4(40000, VIP, 80, false);
    let out = run(&dp, &ack, XDP_TX, Reason::ConntrackHit);
    assert_forwarded(&ack, &out, 1);
    let syn2 = tcp4(40001, VIP, 80, true);
    let out = run(&dp, &syn2, XDP_TX, Reason::ConntrackNew);
    assert_forwarded(&syn2, &out, 2);
}

#[test]
fn stale_generation_rebalances() {
    let mut dp = setup(1);
    run(
        &dp,
        &tcp4(40000, VIP, 80, true),
        XDP_TX,
        Reason::ConntrackNew,
    );
    dp.set_service(svc4(80, PROTO_TCP), 0, &[2; 65537])
        .expect("table");
    // Slot 1 now holds a different host: the old flows must not follow it there.
    let mut b = backend(1, 2);
    b.mac = host_mac(9);
    dp.set_backend(1, &b).expect("backend");
    let ack = tcp4(40000, VIP, 80, false);
    let out = run(&dp, &ack, XDP_TX, Reason::ConntrackStale);
    assert_forwarded(&ack, &out, 2);
    let flow = dp.flow(&flow4(40000, 80, PROTO_TCP)).expect("conntrack");
    assert_eq!(
        flow,
        Some(FlowValue {
            backend: 2,
            generation: 1
        })
    );
    // And the repaired entry is followed from then on.
    run(&dp, &ack, XDP_TX, Reason::ConntrackHit);
}

#[test]
fn cleared_backend_rebalances_its_flows() {
    let mut dp = setup(1);
    run(
        &dp,
        &tcp4(40000, VIP, 80, true),
        XDP_TX,
        Reason::ConntrackNew,
    );
    dp.set_service(svc4(80, PROTO_TCP), 0, &[2; 65537])
        .expect("table");
    dp.clear_backend(1).expect("clear");
    let ack = tcp4(40000, VIP, 80, false);
    let out = run(&dp, &ack, XDP_TX, Reason::ConntrackStale);
    assert_forwarded(&ack, &out, 2);
}

#[test]
fn midflow_miss_is_balanced_but_recorded_only_from_midflow_sources() {
    let mut dp = setup(2);
    let ack = tcp4(40000, VIP, 80, false);
    let out = run(&dp, &ack, XDP_TX, Reason::ConntrackMidflowUntracked);
    assert_forwarded(&ack, &out, 2);
    assert_eq!(dp.flow(&flow4(40000, 80, PROTO_TCP)).expect("ct"), None);
    run(&dp, &ack, XDP_TX, Reason::ConntrackMidflowUntracked);
    // Another LB's clients: their moved flows are recorded.
    dp.set_midflow_sources(&[("198.51.100.0".parse().expect("a"), 24)])
        .expect("midflow sources");
    let out = run(&dp, &ack, XDP_TX, Reason::ConntrackMissMidflow);
    assert_forwarded(&ack, &out, 2);
    run(&dp, &ack, XDP_TX, Reason::ConntrackHit);
    // A prefix elsewhere, and the set replaced: not recorded any more.
    dp.set_midflow_sources(&[("192.0.2.0".parse().expect("a"), 24)])
        .expect("midflow sources");
    run(
        &dp,
        &tcp4(40001, VIP, 80, false),
        XDP_TX,
        Reason::ConntrackMidflowUntracked,
    );
}

/// A flood of mid-flow segments from ever new flows (the source port bumped each
/// repetition), four times the table: recorded (and allowed to replace entries at once), it
/// evicts an established flow; not recorded (the default), the flow keeps its host after the
/// table changed.
#[test]
fn midflow_flood_does_not_evict_established_flows() {
    for everyone in [true, false] {
        let mut dp = setup(1);
        if everyone {
            dp.set_midflow_sources(&[("0.0.0.0".parse().expect("a"), 0)])
                .expect("midflow sources");
            dp.set_flow_hold(0).expect("hold");
        }
        let syn = tcp4(50000, VIP, 80, true);
        run(&dp, &syn, XDP_TX, Reason::ConntrackNew);
        dp.set_service(svc4(80, PROTO_TCP), 0, &[2; 65537])
            .expect("table");
        let flood = tcp4(1, VIP, 80, false);
        let reps = 4 * 4096;
        let reason = if everyone {
            Reason::ConntrackMissMidflow
        } else {
            Reason::ConntrackMidflowUntracked
        };
        let before = dp.reason(reason).expect("reasons");
        dp.test_run("portier_bench_new_flows", &flood, reps)
            .expect("flood");
        assert_eq!(
            dp.reason(reason).expect("reasons") - before,
            u64::from(reps)
        );
        let kept = dp.flow(&flow4(50000, 80, PROTO_TCP)).expect("ct");
        if everyone {
            assert_eq!(kept, None, "the flood should have evicted the flow");
        } else {
            assert!(kept.is_some(), "the flood evicted an established flow");
            let ack = tcp4(50000, VIP, 80, false);
            assert_forwarded(&ack, &run(&dp, &ack, XDP_TX, Reason::ConntrackHit), 1);
        }
    }
}

/// Katran's flood test: 10,000 established flows, then a million distinct SYNs. With the
/// guard every established flow keeps its entry, and most of the flood is not recorded.
/// Without the guard the table itself keeps them while they are younger than its hold (the
/// flood finds full buckets and is not recorded); an LRU-like table (hold 0) lets the flood
/// evict them, which is what both defences are for. The table's seed is random, so a bucket
/// may get more than its eight ways of the established flows (a few in a hundred runs): those
/// few are refused or evicted by the design, and the test follows the flows it recorded.
#[test]
fn syn_flood_guard_keeps_established_flows() {
    const ESTABLISHED: u32 = 10_000;
    const FLOOD: u32 = 1_000_000;
    for (guard, hold) in [(0, 0), (0, DEFAULT_FLOW_HOLD), (5_000, DEFAULT_FLOW_HOLD)] {
        let mut dp = Dataplane::load_for_test(65_536).expect("load");
        dp.set_flow_hold(hold).expect("hold");
        dp.set_backend(1, &backend(1, 1)).expect("backend 1");
        dp.set_service(svc4(80, PROTO_TCP), 0, &[1; 65537])
            .expect("service");
        // Source ports 2..=10001 from CLIENT.
        dp.test_run(
            "portier_bench_new_flows",
            &tcp4(1, VIP, 80, true),
            ESTABLISHED,
        )
        .expect("established");
        let held =
            |dp: &Dataplane, port: u16| dp.flow(&flow4(port, 80, PROTO_TCP)).expect("ct").is_some();
        let recorded: Vec<u16> = (2..2 + ESTABLISHED as u16)
            .filter(|&p| held(&dp, p))
            .collect();
        let lost = ESTABLISHED as usize - recorded.len();
        assert!(lost <= 16, "{lost} established flows found no way");
        assert_eq!(
            dp.reason(Reason::ConntrackNew).expect("r")
                + dp.reason(Reason::ConntrackTableFull).expect("r"),
            u64::from(ESTABLISHED)
        );
        let full_before = dp.reason(Reason::ConntrackTableFull).expect("r");
        let evicted_before = dp.reason(Reason::ConntrackEvicted).expect("r");
        dp.set_new_flow_rate(guard).expect("guard");
        // From 198.51.101.10 upwards (the bump carries into the address): never CLIENT.
        let mut syn = Vec::new();
        eth()
            .ipv4([198, 51, 101, 10], VIP, 64)
            .tcp(1, 80, 1000, 65535)
            .syn()
            .write(&mut syn, b"")
            .expect("frame");
        dp.test_run("portier_bench_new_flows", &syn, FLOOD)
            .expect("flood");
        let untracked = dp.reason(Reason::ConntrackFloodUntracked).expect("r");
        let full = dp.reason(Reason::ConntrackTableFull).expect("r") - full_before;
        let evicted = dp.reason(Reason::ConntrackEvicted).expect("r") - evicted_before;
        let kept = recorded.iter().filter(|&&p| held(&dp, p)).count();
        match (guard, hold) {
            (0, 0) => {
                assert_eq!(untracked + full, 0);
                assert!(evicted > u64::from(FLOOD) / 2, "{evicted} evicted");
                assert!(
                    kept < recorded.len() / 2,
                    "{kept} kept without the guard and the hold"
                );
            }
            (0, _) => {
                assert_eq!(untracked, 0);
                assert_eq!(evicted, 0, "nothing is old enough to go");
                assert!(full > u64::from(FLOOD) / 2, "{full} refused");
                assert_eq!(kept, recorded.len(), "flows evicted by the flood");
            }
            _ => {
                // The flood ran for seconds at most: a few windows' worth was recorded.
                assert!(
                    untracked > u64::from(FLOOD) * 9 / 10,
                    "{untracked} untracked"
                );
                assert_eq!(evicted, 0);
                assert_eq!(kept, recorded.len(), "flows evicted by the flood");
            }
        }
        if guard != 0 || hold != 0 {
            let ack = tcp4(recorded[recorded.len() / 2], VIP, 80, false);
            run(&dp, &ack, XDP_TX, Reason::ConntrackHit);
        }
    }
}

/// Each way is accepted only whole: a way whose value was rewritten without its check (as a
/// reader sees one another CPU is halfway through writing) is a miss, and Maglev decides.
#[test]
fn a_torn_way_reads_as_a_miss() {
    let mut dp = setup(1);
    let syn = tcp4(40000, VIP, 80, true);
    run(&dp, &syn, XDP_TX, Reason::ConntrackNew);
    let key = flow4(40000, 80, PROTO_TCP);
    assert!(dp.flow(&key).expect("ct").is_some());
    // The flow's entry names backend 2 now, but its check is still backend 1's.
    assert!(dp.tear_flow(&key, 2).expect("tear"), "entry found");
    let ack = tcp4(40000, VIP, 80, false);
    // Not the torn entry's backend 2: the miss path, Maglev's pick (1), not recorded.
    assert_forwarded(
        &ack,
        &run(&dp, &ack, XDP_TX, Reason::ConntrackMidflowUntracked),
        1,
    );
}

#[test]
fn non_vip_passes_untouched() {
    let dp = setup(1);
    let f = tcp4(40000, OTHER, 80, true);
    let out = run(&dp, &f, XDP_PASS, Reason::PassNotVip);
    assert_eq!(out, f);
    // The VIP on a port with no service is not ours either.
    let f = tcp4(40000, VIP, 81, true);
    assert_eq!(run(&dp, &f, XDP_PASS, Reason::PassNotVip), f);
    let f = udp4(40000, 80);
    assert_eq!(run(&dp, &f, XDP_PASS, Reason::PassNotVip), f);
}

#[test]
fn non_ip_passes() {
    let dp = setup(1);
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.resize(60, 0);
    assert_eq!(run(&dp, &arp, XDP_PASS, Reason::PassNotIp), arp);
}

#[test]
fn udp_first_packet_is_new_then_hits() {
    let mut dp = setup(1);
    dp.set_service(svc4(53, PROTO_UDP), 1, &[2; 251])
        .expect("udp service");
    let f = udp4(5353, 53);
    let out = run(&dp, &f, XDP_TX, Reason::ConntrackNew);
    assert_forwarded(&f, &out, 2);
    let out = run(&dp, &f, XDP_TX, Reason::ConntrackHit);
    assert_forwarded(&f, &out, 2);
    assert_eq!(dp.service_counters(1).expect("counters").packets, 2);
}

#[test]
fn wildcard_port_matches_any_port_and_exact_wins() {
    let mut dp = setup(1);
    dp.set_service(svc4(0, PROTO_UDP), 2, &[2; 13])
        .expect("wildcard");
    dp.set_service(svc4(53, PROTO_UDP), 3, &[1; 13])
        .expect("exact");
    let f = udp4(5353, 9999);
    assert_forwarded(&f, &run(&dp, &f, XDP_TX, Reason::ConntrackNew), 2);
    let f = udp4(5353, 53);
    assert_forwarded(&f, &run(&dp, &f, XDP_TX, Reason::ConntrackNew), 1);
    // Removing the exact service leaves the wildcard in charge of new flows.
    dp.remove_service(&svc4(53, PROTO_UDP), 3).expect("remove");
    let f = udp4(5354, 53);
    assert_forwarded(&f, &run(&dp, &f, XDP_TX, Reason::ConntrackNew), 2);
}

#[test]
fn removed_service_passes() {
    let mut dp = setup(1);
    dp.remove_service(&svc4(80, PROTO_TCP), 0).expect("remove");
    let f = tcp4(40000, VIP, 80, true);
    assert_eq!(run(&dp, &f, XDP_PASS, Reason::PassNotVip), f);
}

#[test]
fn ipv6_vip() {
    let mut dp = setup(1);
    let mut b = backend(3, 1);
    b.family = FAMILY_V6;
    dp.set_backend(3, &b).expect("backend");
    dp.set_service(svc6(443, PROTO_TCP), 4, &[3; 1021])
        .expect("service");
    let mut syn = Vec::new();
    eth()
        .ipv6(CLIENT6, VIP6, 64)
        .tcp(40000, 443, 1, 65535)
        .syn()
        .write(&mut syn, &[])
        .expect("frame");
    assert_forwarded(&syn, &run(&dp, &syn, XDP_TX, Reason::ConntrackNew), 3);
    let mut ack = Vec::new();
    eth()
        .ipv6(CLIENT6, VIP6, 64)
        .tcp(40000, 443, 2, 65535)
        .ack(5)
        .write(&mut ack, b"GET /")
        .expect("frame");
    assert_forwarded(&ack, &run(&dp, &ack, XDP_TX, Reason::ConntrackHit), 3);
    // Same address bytes, other family: not a VIP.
    let mut other = Vec::new();
    eth()
        .ipv6(CLIENT6, v4(VIP), 64)
        .tcp(40000, 80, 1, 65535)
        .syn()
        .write(&mut other, &[])
        .expect("frame");
    run(&dp, &other, XDP_PASS, Reason::PassNotVip);
}

#[test]
fn vlan_tag_is_kept() {
    let dp = setup(2);
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .single_vlan(VlanId::try_new(100).expect("vid"))
        .ipv4(CLIENT, VIP, 64)
        .tcp(40000, 80, 1, 65535)
        .syn()
        .write(&mut f, &[])
        .expect("frame");
    let out = run(&dp, &f, XDP_TX, Reason::ConntrackNew);
    assert_forwarded(&f, &out, 2);
    assert_eq!(out[12..16], [0x81, 0x00, 0x00, 100]);

    let mut qinq = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .double_vlan(
            VlanId::try_new(10).expect("vid"),
            VlanId::try_new(100).expect("vid"),
        )
        .ipv4(CLIENT, VIP, 64)
        .tcp(40000, 80, 1, 65535)
        .syn()
        .write(&mut qinq, &[])
        .expect("frame");
    assert_eq!(run(&dp, &qinq, XDP_PASS, Reason::PassVlanUnsupported), qinq);
}

/// The first bytes of the VIP's reply to the client, as a router quotes it.
fn quoted_reply4(sport: u16) -> Vec<u8> {
    let mut inner = Vec::new();
    PacketBuilder::ipv4(VIP, CLIENT, 64)
        .tcp(80, sport, 1, 65535)
        .ack(1)
        .write(&mut inner, &[0u8; 100])
        .expect("inner");
    inner.truncate(28);
    inner
}

#[test]
fn icmp_frag_needed_follows_the_flow() {
    let mut dp = setup(1);
    run(
        &dp,
        &tcp4(40000, VIP, 80, true),
        XDP_TX,
        Reason::ConntrackNew,
    );
    // New flows would go to 2 now; the ICMP error must still reach the flow's host, 1.
    dp.set_service(svc4(80, PROTO_TCP), 0, &[2; 65537])
        .expect("table");
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(ROUTER, VIP, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut f, &quoted_reply4(40000))
        .expect("frame");
    let out = run(&dp, &f, XDP_TX, Reason::IcmpErrorForwarded);
    assert_forwarded(&f, &out, 1);
    // About a flow we never saw: Maglev decides, nothing is recorded.
    let mut g = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(ROUTER, VIP, 64)
        .icmpv4(Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
        ))
        .write(&mut g, &quoted_reply4(40077))
        .expect("frame");
    assert_forwarded(&g, &run(&dp, &g, XDP_TX, Reason::IcmpErrorForwarded), 2);
    assert_eq!(
        dp.flow(&flow4(40077, 80, PROTO_TCP)).expect("conntrack"),
        None
    );
}

#[test]
fn icmpv6_packet_too_big_follows_the_flow() {
    let mut dp = setup(1);
    dp.set_service(svc6(443, PROTO_TCP), 4, &[2; 1021])
        .expect("service");
    let mut syn = Vec::new();
    eth()
        .ipv6(CLIENT6, VIP6, 64)
        .tcp(40000, 443, 1, 65535)
        .syn()
        .write(&mut syn, &[])
        .expect("f");
    run(&dp, &syn, XDP_TX, Reason::ConntrackNew);
    dp.set_service(svc6(443, PROTO_TCP), 4, &[1; 1021])
        .expect("service");
    let mut inner = Vec::new();
    PacketBuilder::ipv6(VIP6, CLIENT6, 64)
        .tcp(443, 40000, 1, 65535)
        .ack(1)
        .write(&mut inner, &[0u8; 1400])
        .expect("inner");
    inner.truncate(1232);
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(ROUTER6, VIP6, 64)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut f, &inner)
        .expect("frame");
    assert_forwarded(&f, &run(&dp, &f, XDP_TX, Reason::IcmpErrorForwarded), 2);
}

/// Frag-needed about the VIP's flow from client port `sport`, addressed to `dst`.
fn frag_needed4(dst: [u8; 4], sport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(ROUTER, dst, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut f, &quoted_reply4(sport))
        .expect("frame");
    f
}

#[test]
fn icmp_errors_not_addressed_to_the_quoted_vip_are_dropped() {
    let mut dp = setup(1);
    const VIP2: [u8; 4] = [203, 0, 113, 11];
    dp.set_service(
        ServiceKey {
            addr: v4(VIP2),
            ..svc4(80, PROTO_TCP)
        },
        1,
        &[2; 65537],
    )
    .expect("service");
    let good = frag_needed4(VIP, 40000);
    assert_forwarded(
        &good,
        &run(&dp, &good, XDP_TX, Reason::IcmpErrorForwarded),
        1,
    );
    // To another VIP, and to an address that is no VIP, quoting VIP's flow.
    run(
        &dp,
        &frag_needed4(VIP2, 40000),
        XDP_DROP,
        Reason::DropIcmpMismatch,
    );
    run(
        &dp,
        &frag_needed4(OTHER, 40000),
        XDP_DROP,
        Reason::DropIcmpMismatch,
    );
}

#[test]
fn icmp_quote_must_fit_the_ip_datagram_not_just_the_frame() {
    let dp = setup(1);
    // The IP length says the message ends inside the quoted header; the frame goes on
    // (padding, or bytes an attacker appended).
    let mut f = frag_needed4(VIP, 40000);
    let ip_len = 20 + 8 + 20 + 2;
    set_tot_len(&mut f, ip_len);
    run(&dp, &f, XDP_DROP, Reason::DropIcmpMismatch);
    let mut f = frag_needed4(VIP, 40000);
    set_tot_len(&mut f, 20 + 8 + 10);
    run(&dp, &f, XDP_DROP, Reason::DropIcmpMismatch);
    // IPv6: the payload length cuts the quoted fixed header.
    let mut dp = setup(1);
    dp.set_service(svc6(443, PROTO_TCP), 4, &[2; 1021])
        .expect("service");
    let mut inner = Vec::new();
    PacketBuilder::ipv6(VIP6, CLIENT6, 64)
        .tcp(443, 40000, 1, 65535)
        .ack(1)
        .write(&mut inner, &[0u8; 64])
        .expect("inner");
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(ROUTER6, VIP6, 64)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut f, &inner)
        .expect("frame");
    assert_forwarded(&f, &run(&dp, &f, XDP_TX, Reason::IcmpErrorForwarded), 2);
    f[14 + 4..14 + 6].copy_from_slice(&(8u16 + 30).to_be_bytes());
    run(&dp, &f, XDP_DROP, Reason::DropIcmpMismatch);
}

#[test]
fn ping_to_vip_passes() {
    let dp = setup(1);
    let mut f = Vec::new();
    eth()
        .ipv4(CLIENT, VIP, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut f, b"ping")
        .expect("f");
    assert_eq!(run(&dp, &f, XDP_PASS, Reason::PassVipOther), f);
    let mut f = Vec::new();
    eth()
        .ipv4(CLIENT, OTHER, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut f, b"ping")
        .expect("f");
    assert_eq!(run(&dp, &f, XDP_PASS, Reason::PassNotVip), f);
}

/// Sets IPv4 flags/fragment offset and fixes nothing else: the program does not check sums.
fn with_frag(mut f: Vec<u8>, value: u16) -> Vec<u8> {
    f[14 + 6..14 + 8].copy_from_slice(&value.to_be_bytes());
    f
}

#[test]
fn ipv4_fragments_to_a_vip_are_dropped() {
    let dp = setup(1);
    run(
        &dp,
        &with_frag(tcp4(40000, VIP, 80, true), 0x2000),
        XDP_DROP,
        Reason::DropFragment,
    );
    run(
        &dp,
        &with_frag(tcp4(40000, VIP, 80, true), 0x00b9),
        XDP_DROP,
        Reason::DropFragment,
    );
    // DF alone is not a fragment.
    run(
        &dp,
        &with_frag(tcp4(40000, VIP, 80, true), 0x4000),
        XDP_TX,
        Reason::ConntrackNew,
    );
    run(
        &dp,
        &with_frag(tcp4(40000, OTHER, 80, true), 0x2000),
        XDP_PASS,
        Reason::PassNotVip,
    );
}

#[test]
fn ipv6_fragment_and_extension_headers() {
    let mut dp = setup(1);
    dp.set_service(svc6(443, PROTO_TCP), 4, &[1; 13])
        .expect("service");
    let mut f = Vec::new();
    eth()
        .ipv6(CLIENT6, VIP6, 64)
        .tcp(40000, 443, 1, 65535)
        .syn()
        .write(&mut f, &[])
        .expect("f");
    // Insert an 8-byte extension header (next header TCP) after the fixed header.
    let with_ext = |nh: u8| {
        let mut g = f[..54].to_vec();
        g[14 + 6] = nh;
        let plen = u16::from_be_bytes([g[18], g[19]]) + 8;
        g[18..20].copy_from_slice(&plen.to_be_bytes());
        g.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        g.extend_from_slice(&f[54..]);
        g
    };
    run(&dp, &with_ext(44), XDP_DROP, Reason::DropFragment);
    let hbh = with_ext(0);
    assert_eq!(run(&dp, &hbh, XDP_PASS, Reason::PassIpv6ExtHeader), hbh);
    run(&dp, &with_ext(60), XDP_PASS, Reason::PassIpv6ExtHeader);
}

#[test]
fn backend_problems_drop() {
    let mut dp = setup(NO_BACKEND);
    run(
        &dp,
        &tcp4(40000, VIP, 80, true),
        XDP_DROP,
        Reason::DropNoBackend,
    );
    dp.set_service(svc4(80, PROTO_TCP), 0, &[7; 13])
        .expect("table");
    run(
        &dp,
        &tcp4(40000, VIP, 80, true),
        XDP_DROP,
        Reason::DropBackendInvalid,
    );
    let mut b = backend(7, 1);
    b.ifindex = 0xfff0;
    dp.set_backend(7, &b).expect("backend");
    run(
        &dp,
        &tcp4(40000, VIP, 80, true),
        XDP_DROP,
        Reason::DropNoTxPort,
    );
}

#[test]
fn maglev_tables_of_different_sizes_pick_by_flow_hash() {
    let mut dp = setup(1);
    for (id, size) in [(5u32, 7usize), (6, 65537), (7, 131071)] {
        // Alternate backends by slot so the chosen slot is visible in the output.
        let table: Vec<u32> = (0..size).map(|s| 1 + (s % 2) as u32).collect();
        let port = 1000 + id as u16;
        dp.set_service(svc4(port, PROTO_TCP), id, &table)
            .expect("service");
        for sport in 40000..40008u16 {
            let f = tcp4(sport, VIP, port, true);
            let key = flow4(sport, port, PROTO_TCP);
            let want = table[(flow_hash(&key) % size as u32) as usize];
            assert_forwarded(&f, &run(&dp, &f, XDP_TX, Reason::ConntrackNew), want);
        }
    }
}

fn set_tot_len(f: &mut [u8], len: u16) {
    f[16..18].copy_from_slice(&len.to_be_bytes());
}

#[test]
fn malformed_frames() {
    let dp = setup(1);
    let syn = tcp4(40000, VIP, 80, true);
    let udp = udp4(5353, 53);

    // Truncated at each header boundary.
    // (The kernel refuses test frames shorter than an Ethernet header, so that boundary
    // cannot be fed here; the program drops them as truncated all the same.)
    assert!(dp.test_run("portier_lb", &syn[..13], 1).is_err());
    run(&dp, &syn[..14], XDP_DROP, Reason::DropTruncated); // Ethernet only
    let mut vlan = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .single_vlan(VlanId::try_new(100).expect("vid"))
        .ipv4(CLIENT, VIP, 64)
        .tcp(40000, 80, 1, 65535)
        .syn()
        .write(&mut vlan, &[])
        .expect("frame");
    run(&dp, &vlan[..16], XDP_DROP, Reason::DropTruncated); // inside the tag
    run(&dp, &vlan[..18], XDP_DROP, Reason::DropTruncated); // tag, no IP
    run(&dp, &syn[..14 + 19], XDP_DROP, Reason::DropTruncated); // inside IPv4
    let mut v6 = Vec::new();
    eth()
        .ipv6(CLIENT6, VIP6, 64)
        .udp(1, 2)
        .write(&mut v6, &[])
        .expect("frame");
    run(&dp, &v6[..14 + 39], XDP_DROP, Reason::DropTruncated); // inside IPv6
    let mut t = syn[..14 + 20 + 12].to_vec(); // inside TCP, IP length consistent
    set_tot_len(&mut t, 32);
    run(&dp, &t, XDP_DROP, Reason::DropTruncated);
    let mut u = udp[..14 + 20 + 4].to_vec(); // inside UDP
    set_tot_len(&mut u, 24);
    run(&dp, &u, XDP_DROP, Reason::DropTruncated);

    // Bad header lengths.
    let mut f = syn.clone();
    f[14] = 0x44;
    run(&dp, &f, XDP_DROP, Reason::DropBadIhl);
    let mut f = syn.clone();
    f[14] = 0x65; // version 6 in an IPv4 ethertype
    run(&dp, &f, XDP_DROP, Reason::DropBadIhl);
    let mut f = syn.clone();
    f[14] = 0x4f; // 60-byte header in a 45-byte datagram
    run(&dp, &f, XDP_DROP, Reason::DropBadLength);
    let mut f = syn.clone();
    set_tot_len(&mut f, 1500);
    run(&dp, &f, XDP_DROP, Reason::DropBadLength);
    let mut f = syn.clone();
    set_tot_len(&mut f, 19);
    run(&dp, &f, XDP_DROP, Reason::DropBadLength);
    let mut f = v6.clone();
    f[18..20].copy_from_slice(&100u16.to_be_bytes());
    run(&dp, &f, XDP_DROP, Reason::DropBadLength);

    // Ethernet padding past the IP datagram is fine.
    let mut padded = tcp4(40001, VIP, 80, true);
    padded.resize(padded.len() + 20, 0);
    assert_forwarded(&padded, &run(&dp, &padded, XDP_TX, Reason::ConntrackNew), 1);
}

#[test]
fn ipv4_options_are_skipped() {
    let dp = setup(2);
    let syn = tcp4(40000, VIP, 80, true);
    // Rebuild with a 24-byte IPv4 header (one NOP option word).
    let mut f = syn[..14 + 20].to_vec();
    f[14] = 0x46;
    let tot = u16::from_be_bytes([f[16], f[17]]) + 4;
    f[16..18].copy_from_slice(&tot.to_be_bytes());
    f.extend_from_slice(&[1, 1, 1, 0]);
    f.extend_from_slice(&syn[14 + 20..]);
    assert_forwarded(&f, &run(&dp, &f, XDP_TX, Reason::ConntrackNew), 2);
}

#[test]
fn floor_and_pass_programs() {
    let dp = load();
    let f = tcp4(40000, VIP, 80, true);
    let out = dp.test_run("portier_floor", &f, 1).expect("floor");
    assert_eq!(out.action, XDP_TX);
    assert_eq!(out.frame[..6], CLIENT_MAC);
    assert_eq!(out.frame[6..12], LB_MAC);
    assert_eq!(out.frame[12..], f[12..]);
    let out = dp.test_run("portier_pass", &f, 1).expect("pass");
    assert_eq!((out.action, out.frame), (XDP_PASS, f));
}

/// Two TCP ports of the VIP whose services share a `SERVICE_SLOTS` slot.
fn colliding_ports() -> (u16, u16) {
    let mut seen = std::collections::HashMap::new();
    for port in 1..=u16::MAX {
        let i = service_slot_index(&svc4(port, PROTO_TCP).words());
        if let Some(first) = seen.insert(i, port) {
            return (first, port);
        }
    }
    unreachable!("65535 ports in 4096 slots must collide")
}

#[test]
fn services_sharing_a_slot_are_both_found() {
    let (p1, p2) = colliding_ports();
    let mut dp = load();
    dp.set_backend(1, &backend(1, 1)).expect("backend 1");
    dp.set_backend(2, &backend(2, 1)).expect("backend 2");
    dp.set_service(svc4(p1, PROTO_TCP), 0, &[1; 31])
        .expect("p1");
    dp.set_service(svc4(p2, PROTO_TCP), 1, &[2; 31])
        .expect("p2");
    let slot = dp.service_slot(&svc4(p2, PROTO_TCP)).expect("slot");
    assert_ne!(slot.spill, 0, "two services in one slot must spill");
    let syn = tcp4(40000, VIP, p1, true);
    assert_forwarded(&syn, &run(&dp, &syn, XDP_TX, Reason::ConntrackNew), 1);
    let syn = tcp4(40000, VIP, p2, true);
    assert_forwarded(&syn, &run(&dp, &syn, XDP_TX, Reason::ConntrackNew), 2);
    // Whichever of the two the slot held, removing it leaves the other reachable, and the
    // removed one is gone.
    let (gone, kept, to) = if u16::from_be(slot.key.port) == p1 {
        (p1, p2, 2)
    } else {
        (p2, p1, 1)
    };
    let id = if gone == p1 { 0 } else { 1 };
    dp.remove_service(&svc4(gone, PROTO_TCP), id)
        .expect("remove");
    let after = dp.service_slot(&svc4(kept, PROTO_TCP)).expect("slot");
    assert_eq!(u16::from_be(after.key.port), kept);
    assert_eq!(after.spill, 0);
    let syn = tcp4(40001, VIP, kept, true);
    assert_forwarded(&syn, &run(&dp, &syn, XDP_TX, Reason::ConntrackNew), to);
    run(
        &dp,
        &tcp4(40002, VIP, gone, true),
        XDP_PASS,
        Reason::PassNotVip,
    );
}

#[test]
fn torn_service_slot_falls_back_to_the_service_map() {
    let mut dp = setup(1);
    let key = svc4(80, PROTO_TCP);
    let whole = dp.service_slot(&key).expect("slot");
    assert_eq!(whole.key, key);
    // Half-written: the key and check of the real contents, a value from other ones (a
    // service id with no table: used, it would drop).
    let mut torn = whole;
    torn.value.id = 5;
    dp.overwrite_service_slot(&key, &torn).expect("overwrite");
    let syn = tcp4(40000, VIP, 80, true);
    assert_forwarded(&syn, &run(&dp, &syn, XDP_TX, Reason::ConntrackNew), 1);
    // An empty slot that checks out, without spill, means "no such service": the map is
    // not consulted (this is what makes non-VIP ports cheap).
    dp.overwrite_service_slot(&key, &ServiceSlot::default())
        .expect("overwrite");
    run(
        &dp,
        &tcp4(40001, VIP, 80, true),
        XDP_PASS,
        Reason::PassNotVip,
    );
    dp.overwrite_service_slot(&key, &ServiceSlot::spill_only())
        .expect("overwrite");
    let syn = tcp4(40002, VIP, 80, true);
    assert_forwarded(&syn, &run(&dp, &syn, XDP_TX, Reason::ConntrackNew), 1);
}

#[test]
fn syn_of_a_recorded_flow_rewrites_the_entry_only_when_the_pick_changed() {
    let mut dp = setup(1);
    let syn = tcp4(40000, VIP, 80, true);
    run(&dp, &syn, XDP_TX, Reason::ConntrackNew);
    // Same pick: the SYN is new again (retransmit), the entry stays.
    assert_forwarded(&syn, &run(&dp, &syn, XDP_TX, Reason::ConntrackNew), 1);
    let one = Some(FlowValue {
        backend: 1,
        generation: 1,
    });
    assert_eq!(dp.flow(&flow4(40000, 80, PROTO_TCP)).expect("ct"), one);
    // The table moved on: a SYN on the same tuple is a new connection, balanced afresh, and
    // the rest of it follows the new pick.
    dp.set_service(svc4(80, PROTO_TCP), 0, &[2; 65537])
        .expect("table");
    assert_forwarded(&syn, &run(&dp, &syn, XDP_TX, Reason::ConntrackNew), 2);
    let ack = tcp4(40000, VIP, 80, false);
    assert_forwarded(&ack, &run(&dp, &ack, XDP_TX, Reason::ConntrackHit), 2);
}
