//! The XDP programs' opt-in diagnostics (`[dataplane] debug`, `portier debug xdp on`), run on
//! crafted frames through `BPF_PROG_TEST_RUN` and read back through aya-log's ring buffer.
//!
//! Needs root: a test that cannot load fails, it does not skip.

use etherparse::PacketBuilder;
use portier::dataplane::*;

mod common;
use common::*;

fn backend(i: u32) -> Backend {
    Backend {
        mac: host_mac(i),
        src_mac: LB_MAC,
        ifindex: LO,
        generation: 1,
        flags: BACKEND_F_VALID,
        addr: v4([10, 0, 0, 20 + i as u8]),
        family: FAMILY_V4,
        _pad: [0; 3],
    }
}

/// A balancer with TCP VIP:80 to backend 1 and TCP VIP:81 with no backend at all.
fn balancer() -> Dataplane {
    let mut dp = Dataplane::load_for_test(4096)
        .unwrap_or_else(|e| panic!("loading the XDP balancer (these tests need root): {e}"));
    dp.set_backend(1, &backend(1)).expect("backend");
    let svc = |port: u16| ServiceKey {
        addr: v4(VIP),
        port: port.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V4,
    };
    dp.set_service(svc(80), 0, &[1; 65537]).expect("service 80");
    dp.set_service(svc(81), 1, &[NO_BACKEND; 65537])
        .expect("service 81");
    dp
}

fn syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(sport, dport, 1000, 65535)
        .syn()
        .write(&mut v, b"")
        .expect("frame");
    v
}

fn ack(sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(sport, dport, 1001, 65535)
        .ack(1)
        .write(&mut v, b"GET / HTTP/1.1\r\n\r\n")
        .expect("frame");
    v
}

/// Runs `program` on `frame` once and checks the verdict.
fn run(dp: &Dataplane, program: &str, frame: &[u8], action: u32) {
    let out = dp.test_run(program, frame, 1).expect("test_run");
    assert_eq!(out.action, action, "{program}: verdict");
}

#[test]
fn debug_on_logs_a_drop_and_a_new_flow_with_their_reasons() {
    let mut dp = balancer();
    let mut log = dp
        .set_debug(true)
        .expect("debug on")
        .expect("the first switch hands out the log reader");
    assert!(dp.debug());
    run(&dp, "portier_lb_debug", &syn(40000, 81), XDP_DROP);
    run(&dp, "portier_lb_debug", &syn(40001, 80), XDP_TX);
    // Established now: neither a drop nor a new flow, so no record.
    run(&dp, "portier_lb_debug", &ack(40001, 80), XDP_TX);
    let events = log.read();
    let summaries: Vec<String> = events.iter().map(XdpEvent::summary).collect();
    assert_eq!(
        summaries,
        [
            "drop drop_no_backend 198.51.100.10:40000 -> 203.0.113.10:81 tcp".to_string(),
            format!(
                "new_flow conntrack_new 198.51.100.10:40001 -> 203.0.113.10:80 tcp via {}",
                host_mac(1)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            ),
        ],
        "records: {events:#?}"
    );
    assert_eq!(events[0].ifindex, LO);
}

#[test]
fn debug_off_logs_nothing() {
    let mut dp = balancer();
    let mut log = dp.set_debug(true).expect("debug on").expect("log reader");
    dp.set_debug(false).expect("debug off");
    assert!(!dp.debug());
    // The programs attached while debug is off: the balancer itself.
    run(&dp, "portier_lb", &syn(40000, 81), XDP_DROP);
    run(&dp, "portier_lb", &syn(40002, 80), XDP_TX);
    assert_eq!(log.read(), [], "debug off wrote records");
    // And the reader still works when it comes back on.
    assert!(dp.set_debug(true).expect("debug on again").is_none());
    run(&dp, "portier_lb_debug", &syn(40003, 81), XDP_DROP);
    assert_eq!(log.read().len(), 1);
}

#[test]
fn a_drop_flood_is_cut_to_the_per_cpu_budget() {
    let mut dp = balancer();
    let mut log = dp.set_debug(true).expect("debug on").expect("log reader");
    // One test run of many repetitions: one CPU, well within one second.
    run_repeated(&dp, &syn(40000, 81), 10_000);
    let events = log.read();
    let budget = RECORDS_PER_CPU_SECOND;
    assert!(
        !events.is_empty() && events.len() as u64 <= budget,
        "{} records for 10000 drops; budget {budget} per CPU per second",
        events.len()
    );
    assert!(events.iter().all(|e| e.reason == "drop_no_backend"));
}

fn run_repeated(dp: &Dataplane, frame: &[u8], repeat: u32) {
    let out = dp
        .test_run("portier_lb_debug", frame, repeat)
        .expect("test_run");
    assert_eq!(out.action, XDP_DROP);
}

#[test]
fn decap_debug_logs_a_tunnel_from_a_foreign_source() {
    let mut d = Decapsulator::load_for_test().expect("loading portier_decap (root)");
    d.add_address([10, 0, 0, 21].into()).expect("address");
    d.add_source([10, 255, 0, 0].into(), 24).expect("source");
    d.add_vip(VIP.into()).expect("vip");
    let mut log = d.set_debug(true).expect("debug on").expect("log reader");
    // IPIP from 192.0.2.1, not a balancer's prefix.
    let mut inner = Vec::new();
    PacketBuilder::ipv4(CLIENT, VIP, 64)
        .tcp(40000, 80, 1, 65535)
        .syn()
        .write(&mut inner, b"")
        .expect("inner");
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4([192, 0, 2, 1], [10, 0, 0, 21], 64)
        .write(&mut frame, etherparse::IpNumber(4), &inner)
        .expect("outer");
    assert_eq!(d.test_run(&frame).expect("test_run").action, XDP_DROP);
    let summaries: Vec<String> = log.read().iter().map(XdpEvent::summary).collect();
    assert_eq!(
        summaries,
        ["decap_drop drop_source 192.0.2.1 -> 10.0.0.21 ipip"]
    );
    d.set_debug(false).expect("debug off");
    assert_eq!(d.test_run(&frame).expect("test_run").action, XDP_DROP);
    assert_eq!(log.read(), []);
}
