//! A whole OSPF router (`portier::ospf::instance::Instance`, pure) fed a sequence of packets
//! while time advances: it must never panic, and every packet it sends must decode.
//!
//! The router under test is 10.99.0.3/24 on the segment the captures in
//! ../shared/captures were taken on (FRR 10.99.0.1, BIRD 10.99.0.2, hello 1 s, dead 4 s), so
//! captured packets replay as they are. A second portier router, 10.99.0.4, shares the
//! segment: the two form an adjacency by themselves, which puts the database exchange and
//! flooding within the fuzzer's reach, and the fuzzer can drop or corrupt their packets.
//!
//! Input: a config byte (network type, priority, MD5), then operations:
//! - 0 raw: src (4), dst (4), length (2), packet: delivered to the router as is;
//! - 1 crafted: type, sender index, body length, body: header, checksum or digest made here;
//! - 2 time: advance by n x 50 ms, then both routers tick and their packets are exchanged;
//! - 3 announce: the VIPs 203.0.113.0..7 from a bit set, as stub or external;
//! - 4 interface down/up; 5 kill a neighbour; 6 shutdown and goodbye; 7 reconfigure;
//! - 8 corrupt the next exchanged packet at an offset (resealed or not); 9 cut/restore the
//!   link between the two routers.

#![no_main]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use portier::ospf::instance::{Announce, IfaceAddr, IfaceConfig, Instance, Transmit};
use portier::ospf::interface::NetworkType;
use portier::ospf::packet::{ALL_D_ROUTERS, ALL_SPF_ROUTERS, Auth, AuthKey, decode};
use portier_fuzz::{Input, OspfSeal, seal_ospf};

const ME: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 4);
/// Who crafted packets claim to come from: FRR, BIRD, the peer, a stranger off the subnet,
/// ourselves.
const SENDERS: [Ipv4Addr; 5] = [
    Ipv4Addr::new(10, 99, 0, 1),
    Ipv4Addr::new(10, 99, 0, 2),
    PEER,
    Ipv4Addr::new(192, 0, 2, 1),
    ME,
];
const MAX_OPS: usize = 200;

fn config(network: NetworkType, priority: u8, auth: &Auth, cost: u16) -> IfaceConfig {
    IfaceConfig {
        name: "eth0".into(),
        area: Ipv4Addr::UNSPECIFIED,
        network,
        hello_interval: 1,
        dead_interval: 4,
        retransmit_interval: 2,
        transmit_delay: 1,
        priority,
        cost,
        auth: auth.clone(),
    }
}

fn addr(a: Ipv4Addr) -> IfaceAddr {
    IfaceAddr {
        addr: a,
        prefix_len: 24,
        mtu: 1500,
    }
}

struct Wire {
    /// Packets in flight: (sender, transmit).
    queue: Vec<(Ipv4Addr, Transmit)>,
    link_up: bool,
    /// Corrupt the next packet: offset, xor, reseal.
    corrupt: Option<(usize, u8, bool)>,
}

/// Every packet a router sends must be one it would accept itself.
fn check_output(from: Ipv4Addr, out: Vec<Transmit>, auth: &Auth, wire: &mut Wire) {
    for t in out {
        if let Err(e) = decode(&t.data, auth) {
            panic!(
                "{from} sent a packet it cannot decode ({e}): {:02x?}",
                t.data
            );
        }
        wire.queue.push((from, t));
    }
}

fn exchange(me: &mut Instance, peer: &mut Instance, wire: &mut Wire, auth: &Auth, now: Instant) {
    // Bounded: a flood that never settles would be found by the fuzzer as a timeout.
    for _ in 0..64 {
        if wire.queue.is_empty() {
            return;
        }
        for (from, mut t) in std::mem::take(&mut wire.queue) {
            if !wire.link_up {
                continue;
            }
            if let Some((offset, xor, reseal)) = wire.corrupt.take() {
                let at = offset % t.data.len().max(1);
                if let Some(b) = t.data.get_mut(at) {
                    *b ^= xor;
                }
                if reseal {
                    reseal_as(&mut t.data, auth);
                }
            }
            let (to, to_addr) = if from == ME {
                (&mut *peer, PEER)
            } else {
                (&mut *me, ME)
            };
            if t.dst.is_multicast() || t.dst == to_addr {
                to.receive(0, from, t.dst, &t.data, now);
            }
            let out = to.take_output();
            check_output(to_addr, out, auth, wire);
        }
    }
}

fn reseal_as(p: &mut Vec<u8>, auth: &Auth) {
    match auth {
        Auth::Md5(keys) => {
            let k = &keys[0];
            let seq = p
                .get(20..24)
                .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
            seal_ospf(p, OspfSeal::Md5(k.id, &k.key, seq));
        }
        Auth::Simple(pw) => seal_ospf(p, OspfSeal::Simple(pw)),
        Auth::Null => seal_ospf(p, OspfSeal::Null),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let cfg = input.u8();
    let mut network = if cfg & 1 == 0 {
        NetworkType::Broadcast
    } else {
        NetworkType::PointToPoint
    };
    let mut priority = [1, 0, 2, 255][usize::from(cfg >> 1 & 3)];
    let mut auth = if cfg & 8 != 0 {
        Auth::Md5(vec![AuthKey::new(1, b"s3cret")])
    } else {
        Auth::Null
    };
    let t0 = Instant::now();
    let mut now = t0;
    let wall = 1_700_000_000;
    let mut me = Instance::new(ME, vec![config(network, priority, &auth, 10)], wall, t0);
    let mut peer = Instance::new(PEER, vec![config(network, 1, &auth, 10)], wall, t0);
    me.set_min_ls_interval(Duration::from_millis(u64::from(cfg >> 4) * 500));
    me.interface_up(0, addr(ME), t0);
    peer.interface_up(0, addr(PEER), t0);
    let mut wire = Wire {
        queue: Vec::new(),
        link_up: true,
        corrupt: None,
    };
    let mut crypto_seq = 1u32;
    let mut iface_up = true;

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 10 {
            0 => {
                let src = Ipv4Addr::from(input.u32());
                let dst = Ipv4Addr::from(input.u32());
                let len = usize::from(input.u16());
                let packet = input.bytes(len);
                me.receive(0, src, dst, packet, now);
            }
            1 => {
                let kind = input.u8();
                let sender = SENDERS[usize::from(input.u8()) % SENDERS.len()];
                let len = usize::from(input.u8()) * 4;
                let body = input.bytes(len);
                let mut p = vec![2, kind % 6, 0, 0];
                p.extend_from_slice(&sender.octets());
                p.extend_from_slice(&[0; 16]);
                p.extend_from_slice(body);
                let length = (p.len() as u16).to_be_bytes();
                p[2..4].copy_from_slice(&length);
                match &auth {
                    Auth::Md5(keys) => {
                        crypto_seq += 1;
                        let k = &keys[0];
                        seal_ospf(&mut p, OspfSeal::Md5(k.id, &k.key, crypto_seq));
                    }
                    _ => seal_ospf(&mut p, OspfSeal::Null),
                }
                let dst = [ALL_SPF_ROUTERS, ALL_D_ROUTERS, ME][usize::from(kind >> 4) % 3];
                me.receive(0, sender, dst, &p, now);
            }
            2 => {
                now += Duration::from_millis(u64::from(input.u8()) * 50);
                me.tick(now);
                peer.tick(now);
            }
            3 => {
                let set = input.u8();
                let how = input.u8();
                let announced: BTreeMap<Ipv4Addr, Announce> = (0..8u8)
                    .filter(|i| set & (1 << i) != 0)
                    .map(|i| {
                        let a = if how & (1 << i) != 0 {
                            Announce::External {
                                metric: u32::from(how) << 16 | u32::from(i),
                                type2: i % 2 == 0,
                            }
                        } else {
                            Announce::Stub {
                                metric: u16::from(how) * 3,
                            }
                        };
                        (Ipv4Addr::new(203, 0, 113, i), a)
                    })
                    .collect();
                me.set_announcements(announced, now);
            }
            4 => {
                if iface_up {
                    me.interface_down(0, now);
                } else {
                    me.interface_up(0, addr(ME), now);
                }
                iface_up = !iface_up;
            }
            5 => {
                let who = SENDERS[usize::from(input.u8()) % SENDERS.len()];
                me.kill_neighbor(0, who, now);
            }
            6 => {
                me.shutdown(now);
                if input.u8() & 1 == 1 || me.flush_acknowledged() {
                    me.say_goodbye();
                }
            }
            7 => {
                let what = input.u8();
                match what % 4 {
                    0 => {
                        network = if network == NetworkType::Broadcast {
                            NetworkType::PointToPoint
                        } else {
                            NetworkType::Broadcast
                        }
                    }
                    1 => priority = what >> 2,
                    // Both routers change keys together: the exchanged packets stay valid.
                    2 => {
                        auth = match auth {
                            Auth::Null => Auth::Md5(vec![AuthKey::new(1, b"s3cret")]),
                            _ => Auth::Null,
                        };
                        peer.reconfigure_interface(0, config(network, 1, &auth, 10), now);
                    }
                    _ => {}
                }
                let cost = u16::from(what) * 7 + 1;
                me.reconfigure_interface(0, config(network, priority, &auth, cost), now);
            }
            8 => {
                let offset = usize::from(input.u16());
                let xor = input.u8();
                wire.corrupt = Some((offset, xor.max(1), offset & 1 == 0));
            }
            _ => wire.link_up = !wire.link_up,
        }
        let out = me.take_output();
        check_output(ME, out, &auth, &mut wire);
        let out = peer.take_output();
        check_output(PEER, out, &auth, &mut wire);
        exchange(&mut me, &mut peer, &mut wire, &auth, now);
    }
    let status = me.status(now);
    let _ = serde_json::to_string(&status);
    let _ = status.metrics();
    let _ = me.lsdb();
});
