//! The balancer against a model of its decision, on generated frames: valid frames of every
//! kind the README's packet table lists (TCP, UDP and ICMP errors to VIPs and elsewhere, IPv4
//! and IPv6, VLAN tags, fragments, extension headers, ARP), then mutated (truncated at any
//! point, header bytes and lengths overwritten, bytes appended), run through
//! `BPF_PROG_TEST_RUN` and checked:
//! - a frame the model finds addressed to a configured service is forwarded to one of that
//!   service's backends with only the MACs changed;
//! - a frame not addressed to one is never forwarded: passed untouched, or dropped with a
//!   drop counter;
//! - every frame moves at least one counter.
//!
//! A coverage-guided fuzzer would not help here: the program runs in the kernel, where
//! libFuzzer sees no coverage, so the generator spreads its frames over the parser's branches
//! by construction. `PORTIER_XDP_MODEL_FRAMES` sets how many (default 20000, about a second);
//! `PORTIER_XDP_MODEL_SEED` replays a run.

use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4::DestUnreachableHeader};
use portier::dataplane::*;

mod common;
use common::*;

const OTHER: [u8; 4] = [10, 0, 0, 11];
const ROUTER: [u8; 4] = [198, 51, 100, 1];

/// (address, port or 0 for any, protocol, backends): what the balancer is configured with.
struct Svc {
    addr: [u8; 16],
    v6: bool,
    port: u16,
    proto: u8,
    backends: &'static [u32],
}

const SERVICES: [Svc; 3] = [
    Svc {
        addr: [203, 0, 113, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        v6: false,
        port: 80,
        proto: PROTO_TCP,
        backends: &[1, 2],
    },
    Svc {
        addr: [203, 0, 113, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        v6: false,
        port: 0,
        proto: PROTO_UDP,
        backends: &[3],
    },
    Svc {
        addr: VIP6,
        v6: true,
        port: 443,
        proto: PROTO_TCP,
        backends: &[2],
    },
];

fn setup() -> Dataplane {
    let mut dp = Dataplane::load_for_test(4096)
        .unwrap_or_else(|e| panic!("loading the XDP balancer (these tests need root): {e}"));
    for i in 1..=3 {
        let b = Backend {
            mac: host_mac(i),
            src_mac: LB_MAC,
            ifindex: LO,
            generation: 1,
            flags: BACKEND_F_VALID,
            addr: v4([10, 0, 0, 20 + i as u8]),
            family: FAMILY_V4,
            _pad: [0; 3],
        };
        dp.set_backend(i, &b).expect("backend");
    }
    for (id, s) in SERVICES.iter().enumerate() {
        let size = if s.v6 { 1021 } else { 65537 };
        let table: Vec<u32> = (0..size)
            .map(|i| s.backends[i % s.backends.len()])
            .collect();
        let key = ServiceKey {
            addr: s.addr,
            port: s.port.to_be(),
            proto: s.proto,
            family: if s.v6 { FAMILY_V6 } else { FAMILY_V4 },
        };
        dp.set_service(key, id as u32, &table).expect("service");
    }
    dp
}

/// What the balancer must do with a frame.
#[derive(Debug, PartialEq)]
enum Expect {
    /// To one of these backends, only the MACs changed.
    Forward(&'static [u32]),
    /// Passed untouched or dropped with a drop counter; never forwarded.
    Keep,
    /// Lengths the program reads against the frame but a stricter reading would refuse
    /// (a transport header past the IP length, inside the frame's padding): either is right,
    /// but a forward must still be a correct one.
    Either(&'static [u32]),
}

fn service(addr: &[u8], v6: bool, port: u16, proto: u8) -> Option<&'static [u32]> {
    let exact = SERVICES.iter().find(|s| {
        s.v6 == v6 && s.proto == proto && s.port == port && &s.addr[..addr.len()] == addr
    });
    let wild = SERVICES
        .iter()
        .find(|s| s.v6 == v6 && s.proto == proto && s.port == 0 && &s.addr[..addr.len()] == addr);
    exact.or(wild).map(|s| s.backends)
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// The model: what the README's packet table says should happen to `f`.
fn model(f: &[u8]) -> Expect {
    if f.len() < 14 {
        return Expect::Keep;
    }
    let (mut ethertype, mut ip) = (be16(f, 12), 14);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        if f.len() < 18 {
            return Expect::Keep;
        }
        ethertype = be16(f, 16);
        ip = 18;
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            return Expect::Keep;
        }
    }
    match ethertype {
        0x0800 => model4(f, ip),
        0x86dd => model6(f, ip),
        _ => Expect::Keep,
    }
}

/// A TCP/UDP header at `l4` inside the frame: forwarded when it fits the IP datagram too,
/// either way when only the frame holds it.
fn transport(f: &[u8], l4: usize, ip_end: usize, dst: &[u8], v6: bool, proto: u8) -> Expect {
    let need = if proto == PROTO_TCP { 20 } else { 8 };
    if l4 + need > f.len() {
        return Expect::Keep;
    }
    match service(dst, v6, be16(f, l4 + 2), proto) {
        None => Expect::Keep,
        Some(b) if l4 + need <= ip_end => Expect::Forward(b),
        Some(b) => Expect::Either(b),
    }
}

fn model4(f: &[u8], ip: usize) -> Expect {
    if ip + 20 > f.len() || f[ip] >> 4 != 4 || f[ip] & 0xf < 5 {
        return Expect::Keep;
    }
    let hlen = usize::from(f[ip] & 0xf) * 4;
    let tot = usize::from(be16(f, ip + 2));
    if tot < hlen || ip + tot > f.len() || be16(f, ip + 6) & 0x3fff != 0 {
        return Expect::Keep;
    }
    let (proto, dst, l4, ip_end) = (f[ip + 9], &f[ip + 16..ip + 20], ip + hlen, ip + tot);
    match proto {
        6 | 17 => transport(f, l4, ip_end, dst, false, proto),
        1 => {
            if l4 + 8 > ip_end.min(f.len()) || (f[l4] != 3 && f[l4] != 11) {
                return Expect::Keep;
            }
            let inner = l4 + 8;
            if inner + 20 > ip_end || f[inner] >> 4 != 4 || f[inner] & 0xf < 5 {
                return Expect::Keep;
            }
            let iproto = f[inner + 9];
            if (iproto != 6 && iproto != 17) || be16(f, inner + 6) & 0x1fff != 0 {
                return Expect::Keep;
            }
            let ports = inner + usize::from(f[inner] & 0xf) * 4;
            let isrc = &f[inner + 12..inner + 16];
            if ports + 4 > ip_end || isrc != dst {
                return Expect::Keep;
            }
            service(isrc, false, be16(f, ports), iproto).map_or(Expect::Keep, Expect::Forward)
        }
        _ => Expect::Keep,
    }
}

fn model6(f: &[u8], ip: usize) -> Expect {
    if ip + 40 > f.len() || f[ip] >> 4 != 6 {
        return Expect::Keep;
    }
    let plen = usize::from(be16(f, ip + 4));
    if ip + 40 + plen > f.len() {
        return Expect::Keep;
    }
    let (nh, dst, l4, ip_end) = (f[ip + 6], &f[ip + 24..ip + 40], ip + 40, ip + 40 + plen);
    match nh {
        6 | 17 => transport(f, l4, ip_end, dst, true, nh),
        58 => {
            if l4 + 8 > ip_end.min(f.len()) || !matches!(f[l4], 1..=3) {
                return Expect::Keep;
            }
            let inner = l4 + 8;
            if inner + 44 > ip_end {
                return Expect::Keep;
            }
            let (iproto, isrc) = (f[inner + 6], &f[inner + 8..inner + 24]);
            if (iproto != 6 && iproto != 17) || isrc != dst {
                return Expect::Keep;
            }
            service(isrc, true, be16(f, inner + 40), iproto).map_or(Expect::Keep, Expect::Forward)
        }
        _ => Expect::Keep,
    }
}

/// xorshift64*: reproducible from its seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn quoted4(dport: u16, proto: u8) -> Vec<u8> {
    let mut inner = Vec::new();
    let b = PacketBuilder::ipv4(VIP, CLIENT, 64);
    if proto == PROTO_TCP {
        b.tcp(dport, 40000, 1, 65535)
            .ack(1)
            .write(&mut inner, &[0u8; 64])
            .expect("inner");
    } else {
        b.udp(dport, 40000)
            .write(&mut inner, &[0u8; 64])
            .expect("inner");
    }
    inner.truncate(28 + if proto == PROTO_TCP { 12 } else { 0 });
    inner
}

/// A valid frame of one of the kinds the balancer distinguishes.
fn base(r: &mut Rng) -> Vec<u8> {
    let mut f = Vec::new();
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let sport = 1024 + r.below(60000) as u16;
    let payload = vec![0xab; r.below(64)];
    match r.below(12) {
        0 => {
            let b = eth.ipv4(CLIENT, VIP, 64).tcp(sport, 80, 1, 65535);
            let b = if r.below(2) == 0 { b.syn() } else { b.ack(1) };
            b.write(&mut f, &payload).expect("f")
        }
        1 => eth
            .ipv4(CLIENT, VIP, 64)
            .tcp(sport, 81, 1, 65535)
            .syn()
            .write(&mut f, &payload)
            .expect("f"),
        2 => eth
            .ipv4(CLIENT, VIP, 64)
            .udp(sport, r.below(65536) as u16)
            .write(&mut f, &payload)
            .expect("f"),
        3 => eth
            .ipv4(CLIENT, OTHER, 64)
            .tcp(sport, 80, 1, 65535)
            .write(&mut f, &payload)
            .expect("f"),
        4 => eth
            .ipv6(CLIENT6, VIP6, 64)
            .tcp(sport, if r.below(2) == 0 { 443 } else { 444 }, 1, 65535)
            .write(&mut f, &payload)
            .expect("f"),
        5 => eth
            .ipv6(CLIENT6, VIP6, 64)
            .udp(sport, 53)
            .write(&mut f, &payload)
            .expect("f"),
        6 => {
            let dst = [VIP, OTHER, CLIENT][r.below(3)];
            let (port, proto) = [(80, PROTO_TCP), (81, PROTO_TCP), (5353, PROTO_UDP)][r.below(3)];
            eth.ipv4(ROUTER, dst, 64)
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
                ))
                .write(&mut f, &quoted4(port, proto))
                .expect("f")
        }
        7 => eth
            .ipv4(CLIENT, VIP, 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut f, &payload)
            .expect("f"),
        8 => {
            let mut inner = Vec::new();
            PacketBuilder::ipv6(VIP6, CLIENT6, 64)
                .tcp(443, sport, 1, 65535)
                .ack(1)
                .write(&mut inner, &[0u8; 64])
                .expect("inner");
            inner.truncate(40 + 8 + r.below(60));
            eth.ipv6(CLIENT6, VIP6, 64)
                .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
                .write(&mut f, &inner)
                .expect("f")
        }
        9 => {
            // ARP request.
            f.extend_from_slice(&[0xff; 6]);
            f.extend_from_slice(&CLIENT_MAC);
            f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
            f.extend_from_slice(&CLIENT_MAC);
            f.extend_from_slice(&CLIENT);
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&VIP);
        }
        10 => {
            // An IPv4 fragment (MF or an offset) to the VIP.
            eth.ipv4(CLIENT, VIP, 64)
                .tcp(sport, 80, 1, 65535)
                .write(&mut f, &payload)
                .expect("f");
            let v = if r.below(2) == 0 { 0x2000u16 } else { 0x0010 };
            f[20..22].copy_from_slice(&v.to_be_bytes());
        }
        _ => {
            // IPv6 with a hop-by-hop, routing or fragment header first (next header only).
            eth.ipv6(CLIENT6, VIP6, 64)
                .tcp(sport, 443, 1, 65535)
                .write(&mut f, &payload)
                .expect("f");
            f[14 + 6] = [0, 43, 44, 60][r.below(4)];
        }
    }
    if r.below(4) == 0 {
        // One VLAN tag (sometimes two).
        let tag: &[u8] = if r.below(4) == 0 {
            &[0x88, 0xa8, 0, 7, 0x81, 0, 0, 8]
        } else {
            &[0x81, 0, 0, 7]
        };
        let rest = f.split_off(12);
        f.extend_from_slice(tag);
        f.extend_from_slice(&rest);
    }
    f
}

/// Up to three mutations: truncation, a header byte, a length field, appended bytes.
fn mutate(r: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
    for _ in 0..r.below(4) {
        if f.is_empty() {
            break;
        }
        match r.below(5) {
            // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header.
            0 => f.truncate(14 + r.below(f.len().saturating_sub(13))),
            1 => {
                let at = r.below(f.len().min(110));
                f[at] = r.byte();
            }
            2 if f.len() > 18 => {
                // IPv4 total length or IPv6 payload length, wherever the IP header is.
                let ip = if f[12] == 0x81 || f[12] == 0x88 {
                    18
                } else {
                    14
                };
                let at = if f.len() > ip && f[ip] >> 4 == 6 {
                    ip + 4
                } else {
                    ip + 2
                };
                if at + 2 <= f.len() {
                    let v = r.below(f.len() + 40) as u16;
                    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
            3 if f.len() > 18 => {
                let ip = if f[12] == 0x81 || f[12] == 0x88 {
                    18
                } else {
                    14
                };
                if ip < f.len() {
                    f[ip] = (f[ip] & 0xf0) | (r.byte() & 0xf);
                }
            }
            _ => f.extend((0..r.below(40)).map(|_| r.byte())),
        }
    }
    f
}

fn is_drop(r: Reason) -> bool {
    r.name().starts_with("drop_")
}

#[test]
fn balancer_agrees_with_the_model_on_generated_frames() {
    let frames: usize = std::env::var("PORTIER_XDP_MODEL_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("PORTIER_XDP_MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d_1234_5678);
    let dp = setup();
    let mut r = Rng(seed);
    let (mut forwarded, mut kept) = (0usize, 0usize);
    for i in 0..frames {
        let b = base(&mut r);
        let f = mutate(&mut r, b);
        let expect = model(&f);
        let before = dp.reasons().expect("reasons");
        let out = dp.test_run("portier_lb", &f, 1).expect("test_run");
        let after = dp.reasons().expect("reasons");
        let moved: Vec<Reason> = before
            .iter()
            .zip(&after)
            .filter(|((_, a), (_, b))| b > a)
            .map(|((r, _), _)| *r)
            .collect();
        let ctx = || {
            format!(
                "frame {i} (seed {seed}): {f:02x?}\nexpected {expect:?}, action {}, counters {moved:?}",
                out.action
            )
        };
        assert!(!moved.is_empty(), "no counter moved\n{}", ctx());
        let forward_ok = |backends: &[u32]| {
            out.action == XDP_TX
                && out.frame.len() == f.len()
                && out.frame[6..12] == LB_MAC
                && out.frame[12..] == f[12..]
                && backends.iter().any(|&b| out.frame[..6] == host_mac(b))
        };
        match expect {
            Expect::Forward(backends) => {
                assert!(forward_ok(backends), "not forwarded right\n{}", ctx());
                forwarded += 1;
            }
            Expect::Either(backends) => {
                if out.action == XDP_TX {
                    assert!(forward_ok(backends), "forwarded wrong\n{}", ctx());
                }
            }
            Expect::Keep => {
                match out.action {
                    XDP_PASS => assert_eq!(out.frame, f, "passed but changed\n{}", ctx()),
                    XDP_DROP => assert!(
                        moved.iter().any(|&r| is_drop(r)),
                        "dropped without a drop counter\n{}",
                        ctx()
                    ),
                    _ => panic!("forwarded a frame for no service\n{}", ctx()),
                }
                kept += 1;
            }
        }
    }
    // The generator must reach both sides, or the test proves little.
    assert!(forwarded > frames / 10, "{forwarded} of {frames} forwarded");
    assert!(kept > frames / 10, "{kept} of {frames} kept");
}
