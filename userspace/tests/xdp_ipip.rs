//! IPIP services (balancer side) and `portier_decap` (host side), through
//! `BPF_PROG_TEST_RUN`, checked byte for byte. Needs root: a test that cannot load fails.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{Ipv4HeaderSlice, PacketBuilder, VlanId};
use portier::dataplane::*;

mod common;
use common::*;

const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const HOST: [u8; 4] = [10, 9, 0, 21];
const HOST6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x21,
];
/// Outer sources: 192.0.2.0/24 and 2001:db8:ff::/64.
const SRC4: [u8; 4] = [192, 0, 2, 0];
const SRC6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn backend(addr: [u8; 16], family: u8) -> Backend {
    Backend {
        mac: GATEWAY_MAC,
        src_mac: LB_MAC,
        ifindex: LO,
        generation: 1,
        flags: BACKEND_F_VALID,
        addr,
        family,
        _pad: [0; 3],
    }
}

fn sources() -> EncapSourceConfig {
    EncapSourceConfig {
        v4: Some((Ipv4Addr::from(SRC4), 24)),
        v6: Some((Ipv6Addr::from(SRC6), 64)),
    }
}

/// A balancer with IPIP services VIP:80/tcp (to HOST) and [VIP6]:443/tcp (to HOST6).
fn balancer(with_sources: bool) -> Dataplane {
    let mut dp = Dataplane::load_for_test(4096)
        .unwrap_or_else(|e| panic!("loading the XDP balancer (these tests need root): {e}"));
    dp.set_backend(1, &backend(v4(HOST), FAMILY_V4))
        .expect("backend");
    dp.set_backend(2, &backend(HOST6, FAMILY_V6))
        .expect("backend");
    let k4 = ServiceKey {
        addr: v4(VIP),
        port: 80u16.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V4,
    };
    let k6 = ServiceKey {
        addr: VIP6,
        port: 443u16.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V6,
    };
    dp.set_service_with_mode(k4, 0, &[1; 31], ForwardMode::Ipip)
        .expect("service");
    dp.set_service_with_mode(k6, 1, &[2; 31], ForwardMode::Ipip)
        .expect("service");
    if with_sources {
        dp.set_encap_source(&sources()).expect("sources");
    }
    dp
}

fn run(dp: &Dataplane, frame: &[u8], action: u32, reason: Reason) -> Vec<u8> {
    let before = dp.reason(reason).expect("reasons");
    let out = dp.test_run("portier_lb", frame, 1).expect("test_run");
    assert_eq!(out.action, action, "action ({reason:?})");
    assert_eq!(
        dp.reason(reason).expect("reasons") - before,
        1,
        "{reason:?}"
    );
    out.frame
}

fn syn4(sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(sport, 80, 1000, 65535)
        .syn()
        .write(&mut v, b"hello")
        .expect("frame");
    v
}

fn syn6(sport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(CLIENT6, VIP6, 64)
        .tcp(sport, 443, 1000, 65535)
        .syn()
        .write(&mut v, b"hello")
        .expect("frame");
    v
}

fn hash4(sport: u16) -> u32 {
    flow_hash(&FlowKey {
        src: v4(CLIENT),
        dst: v4(VIP),
        sport: sport.to_be(),
        dport: 80u16.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V4,
        _pad: [0; 2],
    })
}

fn hash6(sport: u16) -> u32 {
    flow_hash(&FlowKey {
        src: CLIENT6,
        dst: VIP6,
        sport: sport.to_be(),
        dport: 443u16.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V6,
        _pad: [0; 2],
    })
}

fn checksum(h: &[u8]) -> u16 {
    let mut s: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The outer IPv4 header the balancer must write for `inner` (an IPv4 packet).
fn outer4(inner: &[u8], hash: u32) -> Vec<u8> {
    let tot = (inner.len() + 20) as u16;
    // The host part of 192.0.2.0/24 is the last byte: the hash's byte at that position in
    // memory order.
    let host = hash.to_ne_bytes()[3];
    let mut h = vec![0x45, inner[1]];
    h.extend_from_slice(&tot.to_be_bytes());
    h.extend_from_slice(&[0, 0, inner[6] & 0x40, 0, 64, 4, 0, 0]);
    h.extend_from_slice(&[192, 0, 2, host]);
    h.extend_from_slice(&HOST);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

fn outer6(inner: &[u8], hash: u32) -> Vec<u8> {
    let label = hash & 0xf_ffff;
    let tclass = (inner[0] << 4) | (inner[1] >> 4);
    let mut h = vec![
        0x60 | (tclass >> 4),
        (tclass << 4) | ((label >> 16) as u8),
        (label >> 8) as u8,
        label as u8,
    ];
    h.extend_from_slice(&(inner.len() as u16).to_be_bytes());
    h.extend_from_slice(&[41, 64]);
    // /64: the last two words are host bits, filled with the hash turned as the program
    // turns it for those words (memory order).
    let mut src = SRC6;
    src[8..12].copy_from_slice(&hash.rotate_left(8).to_ne_bytes());
    src[12..16].copy_from_slice(&hash.to_ne_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&HOST6);
    h
}

fn eth(ethertype: u16) -> Vec<u8> {
    let mut e = GATEWAY_MAC.to_vec();
    e.extend_from_slice(&LB_MAC);
    e.extend_from_slice(&ethertype.to_be_bytes());
    e
}

#[test]
fn ipip4_service_wraps_the_packet_for_the_backend() {
    let dp = balancer(true);
    let syn = syn4(40000);
    let out = run(&dp, &syn, XDP_TX, Reason::EncapIpip);
    let inner = &syn[14..];
    let mut expected = eth(0x0800);
    expected.extend_from_slice(&outer4(inner, hash4(40000)));
    expected.extend_from_slice(inner);
    assert_eq!(out, expected);
    // And an independent reading of the checksum.
    let outer = Ipv4HeaderSlice::from_slice(&out[14..34]).expect("outer header");
    assert_eq!(
        outer.header_checksum(),
        outer.to_header().calc_header_checksum()
    );
    assert_eq!(dp.reason(Reason::ForwardTx).expect("reasons"), 1);
    assert_eq!(dp.reason(Reason::ConntrackNew).expect("reasons"), 1);
    // Established packets take the same way, from the connection table.
    let mut ack = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(40000, 80, 1001, 65535)
        .ack(1)
        .write(&mut ack, b"GET /")
        .expect("frame");
    let out = run(&dp, &ack, XDP_TX, Reason::ConntrackHit);
    assert_eq!(out[34..], ack[14..]);
    assert_eq!(out[14..34], outer4(&ack[14..], hash4(40000))[..]);
}

#[test]
fn outer_sources_spread_with_the_flow() {
    let dp = balancer(true);
    let mut seen = std::collections::HashSet::new();
    for sport in 40000..40032 {
        let out = run(&dp, &syn4(sport), XDP_TX, Reason::EncapIpip);
        assert_eq!(out[26..29], [192, 0, 2]);
        assert_eq!(out[29], hash4(sport).to_ne_bytes()[3]);
        seen.insert(out[29]);
    }
    assert!(seen.len() > 16, "32 flows over {} sources", seen.len());
}

#[test]
fn ipv6_in_ipv6_service() {
    let dp = balancer(true);
    let syn = syn6(40000);
    let out = run(&dp, &syn, XDP_TX, Reason::EncapIpip);
    let inner = &syn[14..];
    let mut expected = eth(0x86dd);
    expected.extend_from_slice(&outer6(inner, hash6(40000)));
    expected.extend_from_slice(inner);
    assert_eq!(out, expected);
}

#[test]
fn vlan_tag_stays_in_front_of_the_outer_header() {
    let dp = balancer(true);
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .single_vlan(VlanId::try_new(100).expect("vid"))
        .ipv4(CLIENT, VIP, 64)
        .tcp(40000, 80, 1000, 65535)
        .syn()
        .write(&mut f, &[])
        .expect("frame");
    let out = run(&dp, &f, XDP_TX, Reason::EncapIpip);
    let mut expected = GATEWAY_MAC.to_vec();
    expected.extend_from_slice(&LB_MAC);
    expected.extend_from_slice(&[0x81, 0x00, 0x00, 100, 0x08, 0x00]);
    expected.extend_from_slice(&outer4(&f[18..], hash4(40000)));
    expected.extend_from_slice(&f[18..]);
    assert_eq!(out, expected);
}

#[test]
fn ipip_without_a_source_prefix_or_with_a_foreign_backend_drops() {
    let mut dp = balancer(false);
    let syn = syn4(40000);
    assert_eq!(run(&dp, &syn, XDP_DROP, Reason::DropEncapFailed), syn);
    // Only IPv4 configured: the IPv6 service cannot encapsulate.
    dp.set_encap_source(&EncapSourceConfig {
        v4: Some((Ipv4Addr::from(SRC4), 24)),
        v6: None,
    })
    .expect("sources");
    run(&dp, &syn, XDP_TX, Reason::EncapIpip);
    run(&dp, &syn6(40000), XDP_DROP, Reason::DropEncapFailed);
    // An IPv4 service whose backend has an IPv6 address: no outer header fits both.
    dp.set_backend(1, &backend(HOST6, FAMILY_V6))
        .expect("backend");
    run(&dp, &syn4(40001), XDP_DROP, Reason::DropEncapFailed);
}

#[test]
fn dsr_services_are_untouched_by_ipip_config() {
    let mut dp = balancer(true);
    let key = ServiceKey {
        addr: v4(VIP),
        port: 80u16.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V4,
    };
    dp.set_service(key, 0, &[1; 31]).expect("dsr");
    let syn = syn4(40000);
    let out = run(&dp, &syn, XDP_TX, Reason::ConntrackNew);
    assert_eq!(out.len(), syn.len());
    assert_eq!(out[12..], syn[12..]);
    assert_eq!(dp.reason(Reason::EncapIpip).expect("reasons"), 0);
}

fn decap() -> Decapsulator {
    let mut d = Decapsulator::load_for_test()
        .unwrap_or_else(|e| panic!("loading portier_decap (these tests need root): {e}"));
    d.add_address(IpAddr::from(HOST)).expect("address");
    d.add_address(IpAddr::from(HOST6)).expect("address");
    d.add_source(IpAddr::from(SRC4), 24).expect("source");
    d.add_source(IpAddr::from(SRC6), 64).expect("source");
    d.add_vip(IpAddr::from(VIP)).expect("vip");
    d.add_vip(IpAddr::from(VIP6)).expect("vip");
    d
}

fn decap_run(d: &Decapsulator, frame: &[u8], action: u32, reason: DecapReason) -> Vec<u8> {
    let count = |d: &Decapsulator| {
        d.reasons()
            .expect("reasons")
            .into_iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, n)| n)
            .unwrap_or(0)
    };
    let before = count(d);
    let out = d.test_run(frame).expect("test_run");
    assert_eq!(out.action, action, "action ({reason:?})");
    assert_eq!(count(d) - before, 1, "{reason:?}");
    out.frame
}

#[test]
fn decap_restores_what_the_client_sent() {
    let dp = balancer(true);
    let d = decap();
    for syn in [syn4(40000), syn6(40000)] {
        let wrapped = run(&dp, &syn, XDP_TX, Reason::EncapIpip);
        let out = decap_run(&d, &wrapped, XDP_PASS, DecapReason::Decapsulated);
        // The MACs of the frame as it arrived, the client's IP packet untouched.
        assert_eq!(out[..12], wrapped[..12]);
        assert_eq!(out[12..], syn[12..]);
    }
}

#[test]
fn decap_leaves_other_traffic_alone() {
    let dp = balancer(true);
    let mut d = decap();
    let plain = syn4(40000);
    assert_eq!(
        decap_run(&d, &plain, XDP_PASS, DecapReason::PassNotTunnel),
        plain
    );
    let wrapped = run(&dp, &syn4(40001), XDP_TX, Reason::EncapIpip);
    d.remove_address(IpAddr::from(HOST)).expect("remove");
    assert_eq!(
        decap_run(&d, &wrapped, XDP_PASS, DecapReason::PassNotLocal),
        wrapped
    );
    d.add_address(IpAddr::from(HOST)).expect("address");
    // A fragment of a tunnel packet: not ours to reassemble.
    let mut frag = wrapped.clone();
    frag[20] |= 0x20;
    assert_eq!(
        decap_run(&d, &frag, XDP_PASS, DecapReason::PassUnsupported),
        frag
    );
    // Outer header says IPv4 inside, the payload is something else.
    let mut bad = wrapped.clone();
    bad[34] = 0x60;
    decap_run(&d, &bad, XDP_DROP, DecapReason::DropBadInner);
    // Outer header and nothing after it.
    decap_run(&d, &wrapped[..34], XDP_DROP, DecapReason::DropTruncated);
}

#[test]
fn source_prefix_lengths_are_checked_and_split() {
    let v = EncapSourceConfig {
        v4: Some((Ipv4Addr::new(10, 1, 2, 3), 20)),
        v6: None,
    }
    .to_map_value()
    .expect("value");
    assert_eq!(v.v4_prefix, [10, 1, 0, 0]);
    assert_eq!(v.v4_host_mask, [0, 0, 0x0f, 0xff]);
    assert!(
        EncapSourceConfig {
            v4: Some((Ipv4Addr::new(10, 1, 2, 3), 33)),
            v6: None,
        }
        .to_map_value()
        .is_err()
    );
    assert!(
        EncapSourceConfig {
            v4: None,
            v6: Some((Ipv6Addr::LOCALHOST, 129)),
        }
        .to_map_value()
        .is_err()
    );
}

/// The IPv4 tunnel of `syn4(sport)` with its outer source (bytes 26..30) replaced.
fn from_source(dp: &Dataplane, sport: u16, src: [u8; 4]) -> Vec<u8> {
    let mut f = run(dp, &syn4(sport), XDP_TX, Reason::EncapIpip);
    f[26..30].copy_from_slice(&src);
    // Keep the outer checksum right: the program does not check it, the stack would.
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn decap_is_no_open_relay() {
    let dp = balancer(true);
    let mut d = decap();
    // From the balancers' prefix, any host part: stripped.
    decap_run(
        &d,
        &from_source(&dp, 40010, [192, 0, 2, 200]),
        XDP_PASS,
        DecapReason::Decapsulated,
    );
    // From anywhere else, even next door: dropped and counted, never handed to the stack.
    for src in [[192, 0, 3, 1], [10, 9, 0, 99], [0, 0, 0, 0]] {
        decap_run(
            &d,
            &from_source(&dp, 40011, src),
            XDP_DROP,
            DecapReason::DropSource,
        );
    }
    // An IPv6 prefix never admits IPv4 sources (the family is part of the key).
    let mut v6only = decap();
    v6only
        .remove_source(IpAddr::from(SRC4), 24)
        .expect("remove");
    decap_run(
        &v6only,
        &from_source(&dp, 40012, [192, 0, 2, 1]),
        XDP_DROP,
        DecapReason::DropSource,
    );
    // IPv6 outer sources are checked as well.
    let mut wrapped6 = run(&dp, &syn6(40013), XDP_TX, Reason::EncapIpip);
    decap_run(&d, &wrapped6, XDP_PASS, DecapReason::Decapsulated);
    wrapped6 = run(&dp, &syn6(40014), XDP_TX, Reason::EncapIpip);
    wrapped6[22 + 5] ^= 0xff; // outside 2001:db8:ff::/64
    decap_run(&d, &wrapped6, XDP_DROP, DecapReason::DropSource);
    // A prefix written with host bits set is the same prefix.
    d.remove_source(IpAddr::from(SRC4), 24).expect("remove");
    d.add_source(IpAddr::from([192, 0, 2, 77]), 24)
        .expect("source");
    decap_run(
        &d,
        &from_source(&dp, 40015, [192, 0, 2, 5]),
        XDP_PASS,
        DecapReason::Decapsulated,
    );
    d.remove_source(IpAddr::from([192, 0, 2, 1]), 24)
        .expect("remove");
    decap_run(
        &d,
        &from_source(&dp, 40016, [192, 0, 2, 5]),
        XDP_DROP,
        DecapReason::DropSource,
    );
}

#[test]
fn decap_delivers_only_vip_traffic() {
    let dp = balancer(true);
    let mut d = decap();
    let wrapped = run(&dp, &syn4(40020), XDP_TX, Reason::EncapIpip);
    // The inner packet to another address of the host (or anything else): dropped.
    let mut elsewhere = wrapped.clone();
    elsewhere[34 + 16..34 + 20].copy_from_slice(&HOST);
    decap_run(&d, &elsewhere, XDP_DROP, DecapReason::DropNotVip);
    d.remove_vip(IpAddr::from(VIP)).expect("remove");
    decap_run(&d, &wrapped, XDP_DROP, DecapReason::DropNotVip);
    d.add_vip(IpAddr::from(VIP)).expect("vip");
    decap_run(&d, &wrapped, XDP_PASS, DecapReason::Decapsulated);
    let wrapped6 = run(&dp, &syn6(40021), XDP_TX, Reason::EncapIpip);
    d.remove_vip(IpAddr::from(VIP6)).expect("remove");
    decap_run(&d, &wrapped6, XDP_DROP, DecapReason::DropNotVip);
    // An inner header cut short after the version nibble: truncated, not delivered.
    decap_run(
        &d,
        &wrapped[..34 + 12],
        XDP_DROP,
        DecapReason::DropTruncated,
    );
}
