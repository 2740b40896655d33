//! Replay tests: instances on a simulated segment (multicast to all, unicast to the owner
//! of the address), captured FRR packets fed in, and hand-made malformed input.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::ospf::interface::NetworkType;
use crate::ospf::lsa::grace::RestartReason;
use crate::ospf::lsa::{self, MAX_AGE, RouterLsa};
use crate::ospf::packet::tests::{BROADCAST, frames};
use crate::ospf::packet::{AuthKey, DdFlags, Hello, decode};

const STEP: Duration = Duration::from_millis(50);

fn rid(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}

fn iface_cfg(network: NetworkType, priority: u8, auth: Auth) -> IfaceConfig {
    IfaceConfig {
        name: "eth0".into(),
        area: Ipv4Addr::UNSPECIFIED,
        network,
        hello_interval: 1,
        dead_interval: 4,
        retransmit_interval: 2,
        transmit_delay: 1,
        priority,
        cost: 10,
        auth,
    }
}

type DropRule = Box<dyn FnMut(u8, &[u8]) -> bool>;

/// Routers on one segment, router N at 10.0.0.N/24.
struct Segment {
    t0: Instant,
    now: Instant,
    routers: Vec<(u8, Instance)>,
    /// Frames lost on the way, by (from, packet type): lets tests drop packets.
    drop: DropRule,
    wire: Vec<(u8, Transmit)>,
}

impl Segment {
    fn new(members: &[(u8, u8)], network: NetworkType, auth: Auth) -> Self {
        let t0 = Instant::now();
        let routers = members
            .iter()
            .map(|&(n, priority)| {
                let mut r = Instance::new(
                    rid(n),
                    vec![iface_cfg(network, priority, auth.clone())],
                    1_700_000_000,
                    t0,
                );
                r.interface_up(
                    0,
                    IfaceAddr {
                        addr: rid(n),
                        prefix_len: 24,
                        mtu: 1500,
                    },
                    t0,
                );
                (n, r)
            })
            .collect();
        Self {
            t0,
            now: t0,
            routers,
            drop: Box::new(|_, _| false),
            wire: Vec::new(),
        }
    }

    fn router(&mut self, n: u8) -> &mut Instance {
        &mut self.routers.iter_mut().find(|(m, _)| *m == n).unwrap().1
    }

    /// Delivers everything queued, repeatedly, then ticks once.
    fn step(&mut self) {
        self.now += STEP;
        for (n, r) in &mut self.routers {
            r.tick(self.now);
            self.wire
                .extend(r.take_output().into_iter().map(|t| (*n, t)));
        }
        while !self.wire.is_empty() {
            let batch = std::mem::take(&mut self.wire);
            for (from, t) in batch {
                if (self.drop)(from, &t.data) {
                    continue;
                }
                for (n, r) in &mut self.routers {
                    let multicast = t.dst.is_multicast();
                    if *n == from || (!multicast && t.dst != rid(*n)) {
                        continue;
                    }
                    r.receive(0, rid(from), t.dst, &t.data, self.now);
                    self.wire
                        .extend(r.take_output().into_iter().map(|t| (*n, t)));
                }
            }
        }
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Self) -> bool) -> Duration {
        while self.now - self.t0 < limit {
            if done(self) {
                return self.now - self.t0;
            }
            self.step();
        }
        panic!("condition not reached within {limit:?}");
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    fn full(&self, a: u8, b: u8) -> bool {
        let ra = &self.routers.iter().find(|(m, _)| *m == a).unwrap().1;
        ra.neighbor_state(rid(b)) == Some(NbrState::Full)
    }

    /// Whether router `n`'s database holds `key` with stub VIP `vip` in `adv`'s Router-LSA.
    fn sees_stub(&self, n: u8, adv: u8, vip: Ipv4Addr) -> bool {
        let r = &self.routers.iter().find(|(m, _)| *m == n).unwrap().1;
        let key = LsaKey {
            ls_type: lsa::TYPE_ROUTER,
            ls_id: rid(adv),
            advertising_router: rid(adv),
        };
        r.lsdb().get(&key).is_some_and(|e| {
            e.age(self.now) < MAX_AGE
                && RouterLsa::decode(e.body())
                    .unwrap()
                    .links
                    .iter()
                    .any(|l| l.link_id == vip && l.link_data == Ipv4Addr::BROADCAST)
        })
    }

    fn databases_equal(&self) -> bool {
        let view = |r: &Instance| -> Vec<(LsaKey, i32, u16)> {
            r.lsdb()
                .iter()
                .map(|(k, e)| (*k, e.header(self.now).seq, e.header(self.now).checksum))
                .collect()
        };
        let first = view(&self.routers[0].1);
        self.routers.iter().all(|(_, r)| view(r) == first)
    }
}

fn vip() -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, 10)
}

fn stub(metric: u16) -> BTreeMap<Ipv4Addr, Announce> {
    BTreeMap::from([(vip(), Announce::Stub { metric })])
}

#[test]
fn broadcast_dr_and_priority_zero_router_reach_full_and_sync() {
    // 1 plays the router (priority 100), 11 is portier with priority 0.
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    let now = seg.now;
    seg.router(11).set_announcements(stub(10), now);
    seg.run_until(Duration::from_secs(10), |s| s.full(1, 11) && s.full(11, 1));
    assert_eq!(seg.router(1).interface_state(0), Some(IfState::Dr));
    assert_eq!(seg.router(11).interface_state(0), Some(IfState::DrOther));
    seg.run_until(Duration::from_secs(20), |s| {
        s.sees_stub(1, 11, vip()) && s.databases_equal()
    });
    // Router-LSAs of both plus the DR's Network-LSA listing both.
    let net = seg
        .router(1)
        .lsdb()
        .iter()
        .find(|(k, _)| k.ls_type == lsa::TYPE_NETWORK)
        .map(|(_, e)| lsa::NetworkLsa::decode(e.body()).unwrap())
        .expect("network LSA");
    assert_eq!(net.attached_routers, vec![rid(1), rid(11)]);
}

#[test]
fn eligible_routers_elect_dr_and_bdr_and_two_drothers_stay_two_way() {
    let mut seg = Segment::new(
        &[(1, 100), (11, 1), (12, 1)],
        NetworkType::Broadcast,
        Auth::Null,
    );
    seg.run_until(Duration::from_secs(15), |s| {
        s.full(1, 11) && s.full(1, 12) && s.full(11, 12)
    });
    assert_eq!(seg.router(1).interface_state(0), Some(IfState::Dr));
    // 10.0.0.12 wins the BDR tie on router ID; 11 and 12 are adjacent through the BDR role.
    assert_eq!(seg.router(12).interface_state(0), Some(IfState::Backup));
    assert_eq!(seg.router(11).interface_state(0), Some(IfState::DrOther));
    seg.run_until(Duration::from_secs(20), |s| s.databases_equal());
}

#[test]
fn drothers_do_not_form_an_adjacency() {
    let mut seg = Segment::new(
        &[(1, 100), (2, 50), (11, 0), (12, 0)],
        NetworkType::Broadcast,
        Auth::Null,
    );
    seg.run_until(Duration::from_secs(15), |s| s.full(11, 1) && s.full(12, 2));
    seg.run_for(Duration::from_secs(2));
    assert_eq!(
        seg.router(11).neighbor_state(rid(12)),
        Some(NbrState::TwoWay)
    );
}

#[test]
fn point_to_point_with_md5_reaches_full_and_carries_the_vip() {
    let auth = Auth::Md5(vec![AuthKey::new(1, b"s3cret")]);
    let mut seg = Segment::new(&[(1, 1), (11, 1)], NetworkType::PointToPoint, auth);
    let now = seg.now;
    seg.router(11).set_announcements(stub(5), now);
    seg.run_until(Duration::from_secs(10), |s| {
        s.full(1, 11) && s.sees_stub(1, 11, vip())
    });
    let router = seg
        .router(1)
        .lsdb()
        .iter()
        .find(|(k, _)| k.advertising_router == rid(11) && k.ls_type == 1)
        .map(|(_, e)| RouterLsa::decode(e.body()).unwrap())
        .unwrap();
    assert!(
        router
            .links
            .iter()
            .any(|l| l.link_type == lsa::LINK_POINT_TO_POINT && l.link_id == rid(1))
    );
}

#[test]
fn withdrawal_reoriginates_after_min_ls_interval_and_external_flushes_at_once() {
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    let now = seg.now;
    let external = BTreeMap::from([(
        vip(),
        Announce::External {
            metric: 20,
            type2: true,
        },
    )]);
    seg.router(11).set_announcements(external, now);
    let ext_key = LsaKey {
        ls_type: lsa::TYPE_AS_EXTERNAL,
        ls_id: vip(),
        advertising_router: rid(11),
    };
    let live = |s: &Segment| {
        s.routers[0]
            .1
            .lsdb()
            .get(&ext_key)
            .is_some_and(|e| e.age(s.now) < MAX_AGE)
    };
    seg.run_until(Duration::from_secs(15), |s| live(s));
    // Past MinLSArrival at router 1, so it accepts the flush on first receipt.
    seg.run_for(MIN_LS_ARRIVAL);
    let body =
        lsa::ExternalLsa::decode(seg.router(1).lsdb().get(&ext_key).unwrap().body()).unwrap();
    assert_eq!((body.metric, body.type2), (20, true));

    let withdrawn_at = seg.now;
    seg.router(11)
        .set_announcements(BTreeMap::new(), withdrawn_at);
    // The flush is flooded at once; router 1 acknowledges and both drop it.
    seg.step();
    assert!(!live(&seg));
    seg.run_until(Duration::from_secs(30), |s| {
        s.routers
            .iter()
            .all(|(_, r)| r.lsdb().get(&ext_key).is_none())
    });

    // Stub announce then withdraw: the withdrawal waits for MinLSInterval at most.
    let now = seg.now;
    seg.router(11).set_announcements(stub(1), now);
    seg.run_until(Duration::from_secs(45), |s| s.sees_stub(1, 11, vip()));
    let withdrawn_at = seg.now;
    seg.router(11)
        .set_announcements(BTreeMap::new(), withdrawn_at);
    seg.run_until(Duration::from_secs(60), |s| !s.sees_stub(1, 11, vip()));
    assert!(seg.now - withdrawn_at <= MIN_LS_INTERVAL + Duration::from_secs(1));
}

#[test]
fn lost_updates_are_retransmitted() {
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    seg.run_until(Duration::from_secs(10), |s| {
        s.full(1, 11) && s.databases_equal()
    });
    // Drop the next three updates router 11 sends.
    let mut left = 3;
    seg.drop = Box::new(move |from, data| {
        if from == 11 && data[1] == 4 && left > 0 {
            left -= 1;
            return true;
        }
        false
    });
    seg.run_for(MIN_LS_INTERVAL);
    let now = seg.now;
    seg.router(11).set_announcements(stub(1), now);
    seg.run_until(Duration::from_secs(40), |s| s.sees_stub(1, 11, vip()));
    assert!(seg.router(11).counters().retransmitted > 0);
}

#[test]
fn dead_interval_drops_the_neighbor_and_its_transit_link() {
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    seg.run_until(Duration::from_secs(10), |s| s.full(1, 11));
    seg.drop = Box::new(|from, _| from == 11);
    let start = seg.now;
    seg.run_until(Duration::from_secs(30), |s| {
        s.routers[0].1.neighbor_state(rid(11)).is_none()
    });
    let gone = seg.now - start;
    assert!(
        gone >= Duration::from_secs(3) && gone <= Duration::from_millis(4100),
        "{gone:?}"
    );
}

/// Router 11 after a restart: a fresh instance with its interface up, nothing announced.
fn restarted_11(now: Instant) -> Instance {
    let mut fresh = Instance::new(
        rid(11),
        vec![iface_cfg(NetworkType::Broadcast, 0, Auth::Null)],
        1_700_000_100,
        now,
    );
    fresh.interface_up(
        0,
        IfaceAddr {
            addr: rid(11),
            prefix_len: 24,
            mtu: 1500,
        },
        now,
    );
    fresh
}

#[test]
fn restart_reclaims_own_lsa_with_a_higher_sequence_number() {
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    let now = seg.now;
    seg.router(11).set_announcements(stub(1), now);
    seg.run_until(Duration::from_secs(10), |s| {
        s.full(1, 11) && s.sees_stub(1, 11, vip())
    });
    // Bump 11's sequence a few times so the old incarnation is well ahead.
    for metric in 2..5 {
        seg.run_for(MIN_LS_INTERVAL);
        let now = seg.now;
        seg.router(11).set_announcements(stub(metric), now);
    }
    seg.run_for(Duration::from_secs(2));
    let key = LsaKey {
        ls_type: lsa::TYPE_ROUTER,
        ls_id: rid(11),
        advertising_router: rid(11),
    };
    let now = seg.now;
    let old_seq = seg.router(1).lsdb().get(&key).unwrap().header(now).seq;
    assert!(old_seq > lsa::INITIAL_SEQ + 2);

    // 11 restarts: fresh instance, no VIP. It must end up with old_seq + 1 or more, and
    // the stale VIP must go.
    let now = seg.now;
    let fresh = restarted_11(now);
    seg.routers[1].1 = fresh;
    seg.run_until(Duration::from_secs(60), |s| {
        s.full(1, 11)
            && !s.sees_stub(1, 11, vip())
            && s.routers[0]
                .1
                .lsdb()
                .get(&key)
                .is_some_and(|e| e.header(s.now).seq > old_seq)
            && s.databases_equal()
    });
}

#[test]
fn graceful_shutdown_flushes_everything_then_says_goodbye() {
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    let now = seg.now;
    seg.router(11).set_announcements(stub(1), now);
    seg.run_until(Duration::from_secs(10), |s| {
        s.full(1, 11) && s.sees_stub(1, 11, vip())
    });
    let now = seg.now;
    seg.router(11).shutdown(now);
    seg.run_until(Duration::from_secs(20), |s| {
        s.routers[1].1.flush_acknowledged()
    });
    assert!(!seg.sees_stub(1, 11, vip()));
    seg.router(11).say_goodbye();
    let goodbye = seg.router(11).take_output();
    let now = seg.now;
    for t in goodbye {
        seg.router(1).receive(0, rid(11), t.dst, &t.data, now);
    }
    assert_eq!(seg.router(1).neighbor_state(rid(11)), Some(NbrState::Init));
}

#[test]
fn frr_hello_from_the_capture_creates_a_neighbor_and_is_answered() {
    let t0 = Instant::now();
    let mut me = Instance::new(
        Ipv4Addr::new(10, 99, 0, 11),
        vec![iface_cfg(NetworkType::Broadcast, 0, Auth::Null)],
        1_700_000_000,
        t0,
    );
    me.interface_up(
        0,
        IfaceAddr {
            addr: Ipv4Addr::new(10, 99, 0, 11),
            prefix_len: 24,
            mtu: 1500,
        },
        t0,
    );
    let hello = &frames(BROADCAST)[0];
    me.receive(0, hello.src, hello.dst, &hello.payload, t0);
    assert_eq!(
        me.neighbor_state(Ipv4Addr::new(10, 99, 0, 1)),
        Some(NbrState::Init)
    );
    me.tick(t0 + STEP);
    let out = me.take_output();
    let (packet, _) = decode(&out[0].data, &Auth::Null).unwrap();
    let Body::Hello(h) = packet.body else {
        panic!("hello expected")
    };
    assert_eq!(h.neighbors, vec![Ipv4Addr::new(10, 99, 0, 1)]);
    assert_eq!(h.priority, 0);
    // A DD from FRR before 2-Way is dropped, not an error path that panics.
    let dd = &frames(BROADCAST)[21];
    me.receive(
        0,
        dd.src,
        Ipv4Addr::new(10, 99, 0, 11),
        &dd.payload,
        t0 + STEP,
    );
    assert!(me.counters().dropped.values().sum::<u64>() >= 1);
}

fn fresh(n: u8, network: NetworkType, auth: Auth) -> (Instance, Instant) {
    let t0 = Instant::now();
    let mut me = Instance::new(rid(n), vec![iface_cfg(network, 1, auth)], 1_700_000_000, t0);
    me.interface_up(
        0,
        IfaceAddr {
            addr: rid(n),
            prefix_len: 24,
            mtu: 1500,
        },
        t0,
    );
    (me, t0)
}

fn hello_from(
    n: u8,
    mask: Ipv4Addr,
    hello_interval: u16,
    neighbors: Vec<Ipv4Addr>,
    auth: &Auth,
    seq: u32,
) -> Vec<u8> {
    Packet {
        header: Header {
            packet_type: packet::PacketType::Hello,
            router_id: rid(n),
            area_id: Ipv4Addr::UNSPECIFIED,
        },
        body: Body::Hello(Hello {
            network_mask: mask,
            hello_interval,
            options: packet::OPTION_E,
            priority: 1,
            dead_interval: 4,
            designated_router: Ipv4Addr::UNSPECIFIED,
            backup_designated_router: Ipv4Addr::UNSPECIFIED,
            neighbors,
        }),
    }
    .encode(auth, seq)
}

#[test]
fn hello_mismatches_and_bad_packets_are_counted_and_dropped() {
    let (mut me, t0) = fresh(11, NetworkType::Broadcast, Auth::Null);
    let mask = Ipv4Addr::new(255, 255, 255, 0);
    let all = packet::ALL_SPF_ROUTERS;
    me.receive(
        0,
        rid(1),
        all,
        &hello_from(1, Ipv4Addr::new(255, 255, 0, 0), 1, vec![], &Auth::Null, 0),
        t0,
    );
    me.receive(
        0,
        rid(1),
        all,
        &hello_from(1, mask, 10, vec![], &Auth::Null, 0),
        t0,
    );
    me.receive(
        0,
        Ipv4Addr::new(192, 0, 2, 1),
        all,
        &hello_from(1, mask, 1, vec![], &Auth::Null, 0),
        t0,
    );
    me.receive(
        0,
        rid(1),
        packet::ALL_D_ROUTERS,
        &hello_from(1, mask, 1, vec![], &Auth::Null, 0),
        t0,
    );
    me.receive(
        0,
        rid(1),
        all,
        &hello_from(1, mask, 1, vec![], &Auth::simple(b"x"), 0),
        t0,
    );
    me.receive(0, rid(1), all, &[2, 1, 0], t0);
    me.receive(
        0,
        rid(11),
        all,
        &hello_from(11, mask, 1, vec![], &Auth::Null, 0),
        t0,
    );
    let d = &me.counters().dropped;
    for reason in [
        "hello-mask",
        "hello-timers",
        "subnet",
        "destination",
        "auth",
        "truncated",
        "own",
    ] {
        assert_eq!(d.get(reason), Some(&1), "{reason}: {d:?}");
    }
    assert_eq!(me.neighbor_state(rid(1)), None);
    me.receive(
        0,
        rid(1),
        all,
        &hello_from(1, mask, 1, vec![], &Auth::Null, 0),
        t0,
    );
    assert_eq!(me.neighbor_state(rid(1)), Some(NbrState::Init));
}

#[test]
fn md5_replayed_sequence_numbers_are_rejected() {
    let auth = Auth::Md5(vec![AuthKey::new(1, b"k")]);
    let (mut me, t0) = fresh(11, NetworkType::Broadcast, auth.clone());
    let mask = Ipv4Addr::new(255, 255, 255, 0);
    let all = packet::ALL_SPF_ROUTERS;
    me.receive(
        0,
        rid(1),
        all,
        &hello_from(1, mask, 1, vec![], &auth, 100),
        t0,
    );
    me.receive(
        0,
        rid(1),
        all,
        &hello_from(1, mask, 1, vec![], &auth, 100),
        t0,
    );
    me.receive(
        0,
        rid(1),
        all,
        &hello_from(1, mask, 1, vec![], &auth, 99),
        t0,
    );
    assert_eq!(me.counters().dropped.get("auth-replay"), Some(&1));
    assert_eq!(me.neighbor_state(rid(1)), Some(NbrState::Init));
}

/// Drives a bare neighbour by hand into ExStart with router `n` (n > 11, so we are slave).
fn to_exstart(n: u8) -> (Instance, Instant) {
    let (mut me, t0) = fresh(11, NetworkType::PointToPoint, Auth::Null);
    let hello = hello_from(
        n,
        Ipv4Addr::new(255, 255, 255, 0),
        1,
        vec![rid(11)],
        &Auth::Null,
        0,
    );
    me.receive(0, rid(n), packet::ALL_SPF_ROUTERS, &hello, t0);
    assert_eq!(me.neighbor_state(rid(n)), Some(NbrState::ExStart));
    me.take_output();
    (me, t0)
}

fn dd_from(n: u8, mtu: u16, flags: DdFlags, seq: u32) -> Vec<u8> {
    Packet {
        header: Header {
            packet_type: packet::PacketType::DbDescription,
            router_id: rid(n),
            area_id: Ipv4Addr::UNSPECIFIED,
        },
        body: Body::DbDescription(packet::DbDescription {
            interface_mtu: mtu,
            options: packet::OPTION_E,
            flags,
            dd_sequence: seq,
            lsa_headers: vec![],
        }),
    }
    .encode(&Auth::Null, 0)
}

#[test]
fn dd_mtu_mismatch_is_refused_and_duplicates_are_answered_by_the_slave() {
    let (mut me, t0) = to_exstart(20);
    let init = DdFlags {
        init: true,
        more: true,
        master: true,
    };
    me.receive(0, rid(20), rid(11), &dd_from(20, 9000, init, 77), t0);
    assert_eq!(me.counters().dropped.get("dd-mtu"), Some(&1));
    assert_eq!(me.neighbor_state(rid(20)), Some(NbrState::ExStart));

    me.receive(0, rid(20), rid(11), &dd_from(20, 1500, init, 77), t0);
    assert_eq!(me.neighbor_state(rid(20)), Some(NbrState::Exchange));
    let reply = me.take_output();
    let Body::DbDescription(first) = decode(&reply[0].data, &Auth::Null).unwrap().0.body else {
        panic!("dd reply")
    };
    assert_eq!(first.dd_sequence, 77);
    assert!(!first.flags.master);
    // The master's retransmission of the same packet gets the same answer again.
    me.receive(0, rid(20), rid(11), &dd_from(20, 1500, init, 77), t0);
    let again = me.take_output();
    assert_eq!(again.len(), 1);
    assert_eq!(
        decode(&again[0].data, &Auth::Null).unwrap().0.body,
        Body::DbDescription(first)
    );
    // Out of sequence: back to ExStart.
    let next = DdFlags {
        init: false,
        more: false,
        master: true,
    };
    me.receive(0, rid(20), rid(11), &dd_from(20, 1500, next, 90), t0);
    assert_eq!(me.neighbor_state(rid(20)), Some(NbrState::ExStart));
    assert_eq!(me.counters().dropped.get("dd-mismatch"), Some(&1));
}

#[test]
fn captured_frr_update_installs_and_a_corrupt_lsa_is_skipped() {
    let (mut me, t0) = to_exstart(20);
    let init = DdFlags {
        init: true,
        more: true,
        master: true,
    };
    me.receive(0, rid(20), rid(11), &dd_from(20, 1500, init, 5), t0);
    let done = DdFlags {
        init: false,
        more: false,
        master: true,
    };
    me.receive(0, rid(20), rid(11), &dd_from(20, 1500, done, 6), t0);
    assert_eq!(me.neighbor_state(rid(20)), Some(NbrState::Full));
    // FRR's 4-LSA update from the capture, with one LSA corrupted, re-addressed from 20.
    let mut lsu = frames(BROADCAST)[30].payload.clone();
    lsu[4..8].copy_from_slice(&rid(20).octets());
    lsu[28 + 48 + 25] ^= 0xff;
    crate::ospf::packet::tests::reseal(&mut lsu);
    me.receive(0, rid(20), rid(11), &lsu, t0);
    assert_eq!(me.counters().dropped.get("lsa-checksum"), Some(&1));
    // The update carries two instances of FRR's Router-LSA; the second arrives within
    // MinLSArrival of the first and is discarded.
    assert_eq!(me.counters().dropped.get("min-ls-arrival"), Some(&1));
    assert_eq!(me.counters().lsa_installed, 2);
}

/// The lab's failover-and-back: the old incarnation flushed its LSA on a clean stop, the DR
/// still holds that MaxAge copy; the restarted router announces again and must go past its
/// sequence number even when its own database has dropped the flushed copy meanwhile.
#[test]
fn restart_after_a_clean_stop_announces_again() {
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    let now = seg.now;
    seg.router(11).set_announcements(stub(1), now);
    seg.run_until(Duration::from_secs(10), |s| {
        s.full(1, 11) && s.sees_stub(1, 11, vip())
    });
    let now = seg.now;
    seg.router(11).shutdown(now);
    seg.run_until(Duration::from_secs(20), |s| {
        s.routers[1].1.flush_acknowledged()
    });
    assert!(!seg.sees_stub(1, 11, vip()));

    let now = seg.now;
    let mut fresh = restarted_11(now);
    fresh.set_announcements(stub(1), now);
    seg.routers[1].1 = fresh;
    seg.run_until(Duration::from_secs(60), |s| {
        s.full(1, 11) && s.sees_stub(1, 11, vip()) && s.databases_equal()
    });
}

/// `to_exstart(20)` taken on to Full through an empty database exchange (we are slave).
fn full_with_20() -> (Instance, Instant) {
    let (mut me, t0) = to_exstart(20);
    let init = DdFlags {
        init: true,
        more: true,
        master: true,
    };
    let done = DdFlags {
        init: false,
        more: false,
        master: true,
    };
    me.receive(0, rid(20), rid(11), &dd_from(20, 1500, init, 5), t0);
    me.receive(0, rid(20), rid(11), &dd_from(20, 1500, done, 6), t0);
    assert_eq!(me.neighbor_state(rid(20)), Some(NbrState::Full));
    me.take_output();
    (me, t0)
}

/// An AS-external LSA for 198.51.100.k/32 originated by router `n`.
fn external_of(n: u8, k: u8, seq: i32) -> lsa::Lsa {
    let body = lsa::ExternalLsa {
        mask: Ipv4Addr::BROADCAST,
        type2: true,
        metric: 20,
        forwarding_address: Ipv4Addr::UNSPECIFIED,
        route_tag: 0,
    };
    lsa::Lsa::build(
        lsa::TYPE_AS_EXTERNAL,
        Ipv4Addr::new(198, 51, 100, k),
        rid(n),
        packet::OPTION_E,
        seq,
        &body.encode(),
    )
}

fn lsu_from(n: u8, lsas: Vec<lsa::Lsa>) -> Vec<u8> {
    Packet {
        header: Header {
            packet_type: packet::PacketType::LsUpdate,
            router_id: rid(n),
            area_id: Ipv4Addr::UNSPECIFIED,
        },
        body: Body::LsUpdate(packet::LsUpdate::new(lsas)),
    }
    .encode(&Auth::Null, 0)
}

/// The LSAs of every update in `out`, per update.
fn updates(out: &[Transmit]) -> Vec<Vec<lsa::Lsa>> {
    out.iter()
        .filter_map(|t| match decode(&t.data, &Auth::Null).unwrap().0.body {
            Body::LsUpdate(u) => Some(u.lsas.into_iter().map(Result::unwrap).collect()),
            _ => None,
        })
        .collect()
}

fn acked(out: &[Transmit]) -> usize {
    out.iter()
        .map(|t| match decode(&t.data, &Auth::Null).unwrap().0.body {
            Body::LsAck(a) => a.lsa_headers.len(),
            _ => 0,
        })
        .sum()
}

#[test]
fn neighbors_per_interface_are_bounded_and_the_bound_rearms() {
    let (mut me, t0) = fresh(11, NetworkType::Broadcast, Auth::Null);
    me.set_limits(Limits {
        max_neighbors: 2,
        max_lsas: 100,
    });
    let mask = Ipv4Addr::new(255, 255, 255, 0);
    let hello = |n| hello_from(n, mask, 1, vec![], &Auth::Null, 0);
    let all = packet::ALL_SPF_ROUTERS;
    for n in [1, 2, 3, 3] {
        me.receive(0, rid(n), all, &hello(n), t0);
    }
    assert_eq!(me.neighbor_state(rid(2)), Some(NbrState::Init));
    assert_eq!(me.neighbor_state(rid(3)), None);
    assert_eq!(me.counters().dropped.get("neighbor-limit"), Some(&2));
    let status = me.status(t0);
    assert_eq!(status.limits_reached, vec!["neighbor-limit"]);
    assert!(
        status
            .metrics()
            .contains("portier_ospf_limit_reached{limit=\"neighbor-limit\"} 1")
    );
    assert!(
        status
            .metrics()
            .contains("portier_ospf_dropped_total{reason=\"neighbor-limit\"} 2")
    );
    // Both go silent past the dead interval: the bound is clear, and 3 gets in.
    let later = t0 + Duration::from_secs(5);
    me.tick(later);
    assert_eq!(me.neighbor_state(rid(1)), None);
    assert!(me.status(later).limits_reached.is_empty());
    me.receive(0, rid(3), all, &hello(3), later);
    assert_eq!(me.neighbor_state(rid(3)), Some(NbrState::Init));
}

#[test]
fn the_database_is_bounded_and_what_does_not_fit_is_neither_installed_nor_acked() {
    let (mut me, t0) = full_with_20();
    me.set_limits(Limits {
        max_neighbors: 64,
        max_lsas: 5,
    });
    assert_eq!(me.lsdb().len(), 1, "our Router-LSA");
    let lsas: Vec<_> = (1..=8)
        .map(|k| external_of(20, k, lsa::INITIAL_SEQ))
        .collect();
    me.receive(0, rid(20), rid(11), &lsu_from(20, lsas.clone()), t0);
    assert_eq!(me.lsdb().len(), 5);
    assert_eq!(me.counters().dropped.get("lsdb-limit"), Some(&4));
    me.tick(t0 + STEP);
    assert_eq!(acked(&me.take_output()), 4);
    let status = me.status(t0 + STEP);
    assert_eq!(status.limits_reached, vec!["lsdb-limit"]);
    assert_eq!(status.lsdb.total, 5);
    // A newer instance of an LSA held still replaces it; our own LSAs always fit.
    let later = t0 + Duration::from_secs(2);
    let newer = external_of(20, 1, lsa::INITIAL_SEQ + 1);
    me.receive(
        0,
        rid(20),
        rid(11),
        &lsu_from(20, vec![newer.clone()]),
        later,
    );
    assert_eq!(
        me.lsdb().get(&newer.key()).unwrap().header(later).seq,
        lsa::INITIAL_SEQ + 1
    );
    me.set_announcements(
        BTreeMap::from([(
            vip(),
            Announce::External {
                metric: 1,
                type2: true,
            },
        )]),
        later,
    );
    assert_eq!(me.lsdb().len(), 6);
    // The others are dropped again, counted, but not logged again (still at the bound).
    me.receive(0, rid(20), rid(11), &lsu_from(20, lsas), later);
    assert_eq!(me.counters().dropped.get("lsdb-limit"), Some(&8));
}

fn dd_with(n: u8, flags: DdFlags, seq: u32, lsa_headers: Vec<LsaHeader>) -> Vec<u8> {
    Packet {
        header: Header {
            packet_type: packet::PacketType::DbDescription,
            router_id: rid(n),
            area_id: Ipv4Addr::UNSPECIFIED,
        },
        body: Body::DbDescription(packet::DbDescription {
            interface_mtu: 1500,
            options: packet::OPTION_E,
            flags,
            dd_sequence: seq,
            lsa_headers,
        }),
    }
    .encode(&Auth::Null, 0)
}

#[test]
fn request_lists_are_bounded_and_loading_ends_when_the_database_is_full() {
    let (mut me, t0) = to_exstart(20);
    me.set_limits(Limits {
        max_neighbors: 64,
        max_lsas: 3,
    });
    let lsas: Vec<_> = (1..=8)
        .map(|k| external_of(20, k, lsa::INITIAL_SEQ))
        .collect();
    let init = DdFlags {
        init: true,
        more: true,
        master: true,
    };
    let last = DdFlags {
        init: false,
        more: false,
        master: true,
    };
    me.receive(0, rid(20), rid(11), &dd_from(20, 1500, init, 5), t0);
    let headers = lsas.iter().map(|l| l.header).collect();
    me.receive(0, rid(20), rid(11), &dd_with(20, last, 6, headers), t0);
    assert_eq!(me.neighbor_state(rid(20)), Some(NbrState::Loading));
    let status = me.status(t0);
    assert_eq!(status.interfaces[0].neighbors[0].request_list, 3);
    assert_eq!(me.counters().dropped.get("request-limit"), Some(&5));
    assert!(status.limits_reached.contains(&"request-limit"));
    // The answer: the three requested fit (our first Router-LSA waits for a Full
    // adjacency), the other five are dropped and not requested, so the adjacency still
    // reaches Full; then our own Router-LSA goes in, as own LSAs always do.
    me.receive(0, rid(20), rid(11), &lsu_from(20, lsas), t0);
    assert_eq!(me.neighbor_state(rid(20)), Some(NbrState::Full));
    assert_eq!(me.lsdb().len(), 4);
    me.tick(t0 + STEP);
    assert_eq!(me.status(t0 + STEP).limits_reached, vec!["lsdb-limit"]);
}

#[test]
fn point_to_point_accepts_only_on_link_sources_with_ttl_one() {
    let (mut me, t0) = fresh(11, NetworkType::PointToPoint, Auth::Null);
    let mask = Ipv4Addr::new(255, 255, 255, 0);
    let all = packet::ALL_SPF_ROUTERS;
    let hello = hello_from(1, mask, 1, vec![], &Auth::Null, 0);
    // Crossed a router (TTL decremented), or sent from beyond the link.
    me.receive_with_ttl(0, rid(1), all, 64, &hello, t0);
    me.receive_with_ttl(0, Ipv4Addr::new(192, 0, 2, 1), rid(11), 1, &hello, t0);
    assert_eq!(me.counters().dropped.get("ttl"), Some(&1));
    assert_eq!(me.counters().dropped.get("subnet"), Some(&1));
    assert_eq!(me.neighbor_state(rid(1)), None);
    // GTSM's 255 cannot have crossed a router either.
    me.receive_with_ttl(0, rid(1), all, 255, &hello, t0);
    assert_eq!(me.neighbor_state(rid(1)), Some(NbrState::Init));

    // A /32 (unnumbered, or with a peer address) has no subnet: the TTL decides.
    let mut unnumbered = Instance::new(
        rid(11),
        vec![iface_cfg(NetworkType::PointToPoint, 1, Auth::Null)],
        1_700_000_000,
        t0,
    );
    unnumbered.interface_up(
        0,
        IfaceAddr {
            addr: rid(11),
            prefix_len: 32,
            mtu: 1500,
        },
        t0,
    );
    let peer = Ipv4Addr::new(192, 0, 2, 1);
    unnumbered.receive_with_ttl(0, peer, all, 2, &hello, t0);
    assert_eq!(unnumbered.neighbor_state(rid(1)), None);
    unnumbered.receive_with_ttl(0, peer, all, 1, &hello, t0);
    assert_eq!(unnumbered.neighbor_state(rid(1)), Some(NbrState::Init));
}

fn externals(count: u8) -> BTreeMap<Ipv4Addr, Announce> {
    (1..=count)
        .map(|k| {
            (
                Ipv4Addr::new(203, 0, 113, k),
                Announce::External {
                    metric: 20,
                    type2: true,
                },
            )
        })
        .collect()
}

#[test]
fn a_flood_round_sends_one_update_per_interface_within_the_mtu() {
    let (mut me, t0) = full_with_20();
    me.set_announcements(externals(40), t0);
    let out = me.take_output();
    let lsus = updates(&out);
    // 40 AS-external LSAs of 36 bytes: one update would exceed the MTU, so two.
    assert_eq!(
        lsus.len(),
        2,
        "{:?}",
        lsus.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(lsus.iter().map(Vec::len).sum::<usize>(), 40);
    for t in &out {
        assert!(t.data.len() + 20 <= 1500, "{} bytes", t.data.len());
        assert_eq!(t.dst, packet::ALL_SPF_ROUTERS);
    }
    // Withdrawing five: their flushes leave together.
    let later = t0 + Duration::from_secs(1);
    me.set_announcements(externals(35), later);
    let lsus = updates(&me.take_output());
    assert_eq!(lsus.len(), 1);
    assert_eq!(lsus[0].len(), 5);
    assert!(lsus[0].iter().all(|l| l.header.age == MAX_AGE));
}

#[test]
fn status_shows_counts_by_type_and_a_capped_list() {
    let (mut me, t0) = full_with_20();
    me.set_announcements(externals(150), t0);
    let status = me.status(t0);
    assert_eq!(status.lsdb.total, 151);
    assert_eq!(
        status.lsdb.by_type,
        BTreeMap::from([("as-external", 150), ("router", 1)])
    );
    assert_eq!(status.lsdb.lsas.len(), status::STATUS_LSAS);
    assert!(status.lsdb.truncated);
    assert!(status.metrics().contains("portier_ospf_lsdb_lsas 151\n"));
    assert!(
        status
            .metrics()
            .contains("portier_ospf_lsdb_lsas_by_type{type=\"as-external\"} 150\n")
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["lsdb"]["lsas"].as_array().unwrap().len(), 100);
    assert_eq!(json["limits"]["max_lsas"], 10_000);
}

/// RFC 2328 12.1.6: our Router-LSA reached MaxSequenceNumber (here: an earlier
/// incarnation's copy at 0x7fffffff turns up). It is flushed, and once the flush is gone
/// re-originated at InitialSequenceNumber, still carrying the VIP.
#[test]
fn own_lsa_at_max_sequence_number_wraps_to_the_initial_one() {
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    let now = seg.now;
    seg.router(11).set_announcements(stub(1), now);
    seg.run_until(Duration::from_secs(10), |s| {
        s.full(1, 11) && s.sees_stub(1, 11, vip()) && s.databases_equal()
    });
    let key = LsaKey {
        ls_type: lsa::TYPE_ROUTER,
        ls_id: rid(11),
        advertising_router: rid(11),
    };
    let now = seg.now;
    let current = seg.router(11).lsdb().get(&key).unwrap().lsa(now);
    let at_max = lsa::Lsa::build(
        lsa::TYPE_ROUTER,
        rid(11),
        rid(11),
        current.header.options,
        lsa::MAX_SEQ,
        current.body(),
    );
    seg.router(11).receive(
        0,
        rid(1),
        packet::ALL_SPF_ROUTERS,
        &lsu_from(1, vec![at_max]),
        now,
    );
    let out = seg.router(11).take_output();
    seg.wire.extend(out.into_iter().map(|t| (11, t)));
    let seq_at = |s: &Segment, r: usize| {
        s.routers[r]
            .1
            .lsdb()
            .get(&key)
            .map(|e| (e.header(s.now).seq, e.age(s.now)))
    };
    // Both see the flush first: MaxSequenceNumber at MaxAge.
    seg.run_until(Duration::from_secs(20), |s| {
        seq_at(s, 0) == Some((lsa::MAX_SEQ, MAX_AGE))
    });
    seg.run_until(Duration::from_secs(60), |s| {
        let initial = |r| seq_at(s, r).is_some_and(|(seq, _)| seq == lsa::INITIAL_SEQ);
        initial(0) && initial(1) && s.sees_stub(1, 11, vip())
    });
    assert!(seg.sees_stub(1, 11, vip()));
    // And it goes on from there: the next change is InitialSequenceNumber + 1.
    seg.run_for(MIN_LS_INTERVAL);
    let now = seg.now;
    seg.router(11).set_announcements(stub(2), now);
    seg.run_until(Duration::from_secs(80), |s| {
        seq_at(s, 0).is_some_and(|(seq, _)| seq == lsa::INITIAL_SEQ + 1) && s.databases_equal()
    });
    assert!(seg.sees_stub(1, 11, vip()));
}

fn lsack_from(n: u8, lsa_headers: Vec<LsaHeader>) -> Vec<u8> {
    Packet {
        header: Header {
            packet_type: packet::PacketType::LsAck,
            router_id: rid(n),
            area_id: Ipv4Addr::UNSPECIFIED,
        },
        body: Body::LsAck(packet::LsAck { lsa_headers }),
    }
    .encode(&Auth::Null, 0)
}

#[test]
fn lsas_made_up_in_our_name_leave_no_state_behind() {
    let (mut me, t0) = full_with_20();
    me.set_limits(Limits {
        max_neighbors: 64,
        max_lsas: 4,
    });
    let mut now = t0;
    let mask = Ipv4Addr::new(255, 255, 255, 0);
    let hello = hello_from(20, mask, 1, vec![rid(11)], &Auth::Null, 0);
    for k in 1..=20 {
        now += Duration::from_secs(1);
        me.receive(0, rid(20), packet::ALL_SPF_ROUTERS, &hello, now);
        // 20 floods an AS-external LSA with our router ID; we flush it, 20 acknowledges.
        let forged = external_of(11, k, lsa::INITIAL_SEQ + 7);
        me.receive(
            0,
            rid(20),
            rid(11),
            &lsu_from(20, vec![forged.clone()]),
            now,
        );
        let flushes: Vec<LsaHeader> = updates(&me.take_output())
            .into_iter()
            .flatten()
            .map(|l| l.header)
            .filter(|h| h.key() == forged.key() && h.age == MAX_AGE)
            .collect();
        assert_eq!(flushes.len(), 1, "round {k}");
        me.receive(0, rid(20), rid(11), &lsack_from(20, flushes), now);
        me.tick(now);
        assert!(me.lsdb().get(&forged.key()).is_none(), "round {k}");
    }
    assert!(me.own_seq.len() + me.force_originate.len() <= 4);
    assert_eq!(me.lsdb().len(), 1);
}

/// Router 11 restarts gracefully without warning (its process died) while 1, the DR, helps:
/// 1 never stops advertising 11 nor loses 11's VIP, 11 re-learns its Router-LSA instead of
/// originating, and both leave their modes as `completed`.
#[test]
fn unplanned_graceful_restart_keeps_the_vip_at_the_helper() {
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    let now = seg.now;
    seg.router(11).set_announcements(stub(1), now);
    seg.run_until(Duration::from_secs(10), |s| {
        s.full(1, 11) && s.sees_stub(1, 11, vip())
    });
    seg.run_for(Duration::from_secs(2));
    let network = |s: &Segment| {
        let key = LsaKey {
            ls_type: lsa::TYPE_NETWORK,
            ls_id: rid(1),
            advertising_router: rid(1),
        };
        let r = &s.routers[0].1;
        r.lsdb().get(&key).map(|e| e.header(s.now).seq)
    };
    let network_before = network(&seg);

    // 11 is silent for 3 s (within the dead interval), then starts again.
    seg.drop = Box::new(|from, _| from == 11);
    seg.run_for(Duration::from_secs(3));
    seg.drop = Box::new(|_, _| false);
    let now = seg.now;
    let mut fresh = restarted_11(now);
    fresh.set_graceful_restart(GrConfig {
        restart: true,
        ..GrConfig::default()
    });
    fresh.set_announcements(stub(1), now);
    fresh.begin_restart(60, RestartReason::Unknown, true, now);
    seg.routers[1].1 = fresh;
    let mut helped = false;
    seg.run_until(Duration::from_secs(60), |s| {
        assert!(s.sees_stub(1, 11, vip()), "the helper lost the VIP");
        helped |= s.routers[0].1.status(s.now).graceful_restart.helping.len() == 1;
        !s.routers[1].1.restarting()
    });
    assert!(helped, "router 1 never helped");
    seg.run_until(Duration::from_secs(70), |s| {
        s.routers[0]
            .1
            .status(s.now)
            .graceful_restart
            .helping
            .is_empty()
    });
    let (helper, restarter) = (
        seg.routers[0].1.status(seg.now),
        seg.routers[1].1.status(seg.now),
    );
    assert_eq!(
        restarter.graceful_restart.last_restart_exit.as_deref(),
        Some("completed")
    );
    assert_eq!(
        helper.graceful_restart.last_helper_exit.as_deref(),
        Some("10.0.0.11: completed")
    );
    // The helper's Network-LSA never changed: no topology change for anyone.
    assert_eq!(network(&seg), network_before);
    assert!(seg.full(1, 11) && seg.full(11, 1));
    seg.run_until(Duration::from_secs(90), |s| s.databases_equal());
}

/// A helper with `gr_helper = false` refuses, counted; the restarter then times out only at
/// the end of its grace period or completes as the adjacency forms again.
#[test]
fn grace_lsa_refused_when_helping_is_off() {
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    seg.router(1).set_graceful_restart(GrConfig {
        helper: false,
        ..GrConfig::default()
    });
    seg.run_until(Duration::from_secs(10), |s| s.full(1, 11));
    let now = seg.now;
    let mut fresh = restarted_11(now);
    fresh.begin_restart(60, RestartReason::Unknown, true, now);
    seg.routers[1].1 = fresh;
    seg.run_until(Duration::from_secs(120), |s| !s.routers[1].1.restarting());
    let helper = seg.routers[0].1.status(seg.now);
    assert_eq!(
        helper.counters.gr_helper_rejected.get("helper-disabled"),
        Some(&1)
    );
    assert!(helper.graceful_restart.helping.is_empty());
}

/// A planned restart: 11 floods grace-LSAs, which 1 acknowledges and helps; 11 goes silent
/// past the dead interval and comes back without sending new ones: 1 kept the adjacency and
/// the VIP all along.
#[test]
fn planned_graceful_restart_outlasts_the_dead_interval() {
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    let now = seg.now;
    seg.router(11).set_announcements(stub(1), now);
    seg.run_until(Duration::from_secs(10), |s| {
        s.full(1, 11) && s.sees_stub(1, 11, vip())
    });
    seg.run_for(Duration::from_secs(2));
    let now = seg.now;
    seg.router(11).set_graceful_restart(GrConfig {
        restart: true,
        ..GrConfig::default()
    });
    seg.router(11)
        .prepare_restart(RestartReason::SoftwareRestart, now);
    seg.run_until(Duration::from_secs(30), |s| {
        s.routers[1].1.flush_acknowledged()
            && s.routers[0].1.status(s.now).graceful_restart.helping.len() == 1
    });
    let helping = &seg.routers[0].1.status(seg.now).graceful_restart.helping[0];
    assert_eq!(helping.router_id, rid(11));
    assert_eq!(helping.grace_period, GrConfig::default().grace_period);
    assert_eq!(helping.reason, RestartReason::SoftwareRestart);

    // Silent for 6 s: past the 4 s dead interval, the helper still has it, Full, and the VIP.
    seg.drop = Box::new(|from, _| from == 11);
    let quiet = seg.now;
    while seg.now - quiet < Duration::from_secs(6) {
        seg.step();
        assert!(
            seg.full(1, 11),
            "the helper dropped the restarting neighbour"
        );
        assert!(seg.sees_stub(1, 11, vip()));
    }
    seg.drop = Box::new(|_, _| false);
    let now = seg.now;
    let mut fresh = restarted_11(now);
    fresh.set_announcements(stub(1), now);
    fresh.begin_restart(100, RestartReason::SoftwareRestart, false, now);
    seg.routers[1].1 = fresh;
    seg.run_until(Duration::from_secs(60), |s| {
        assert!(s.sees_stub(1, 11, vip()), "the helper lost the VIP");
        !s.routers[1].1.restarting()
            && s.routers[0]
                .1
                .status(s.now)
                .graceful_restart
                .helping
                .is_empty()
    });
    assert_eq!(
        seg.routers[0]
            .1
            .status(seg.now)
            .graceful_restart
            .last_helper_exit
            .as_deref(),
        Some("10.0.0.11: completed")
    );
}

/// RFC 3623 3.1: router 1 changes its Router-LSA (a new VIP) and 11's acknowledgment of it is
/// lost; 11 then begins a planned restart. The changed LSA still on 11's retransmission list
/// is a topology change 11 has not seen, so 1 does not help (counted by reason).
#[test]
fn helper_refuses_while_a_changed_lsa_awaits_the_restarters_ack() {
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    seg.run_until(Duration::from_secs(10), |s| s.full(1, 11) && s.full(11, 1));
    seg.run_for(Duration::from_secs(6));
    // Every LS Ack from 11 is lost from now on.
    seg.drop = Box::new(|from, data| from == 11 && data.get(1) == Some(&5));
    let now = seg.now;
    seg.router(1).set_announcements(stub(1), now);
    seg.run_until(Duration::from_secs(30), |s| s.sees_stub(11, 1, vip()));
    let now = seg.now;
    seg.router(11).set_graceful_restart(GrConfig {
        restart: true,
        ..GrConfig::default()
    });
    seg.router(11)
        .prepare_restart(RestartReason::SoftwareRestart, now);
    seg.run_until(Duration::from_secs(40), |s| {
        let helper = s.routers[0].1.status(s.now);
        helper
            .counters
            .gr_helper_rejected
            .contains_key("retransmit-list-change")
    });
    assert!(
        seg.routers[0]
            .1
            .status(seg.now)
            .graceful_restart
            .helping
            .is_empty()
    );
}

/// The same planned restart with the change acknowledged: a refreshed or acknowledged LSA on
/// the list is no reason to refuse, and 1 helps.
#[test]
fn helper_helps_once_the_change_is_acknowledged() {
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    seg.run_until(Duration::from_secs(10), |s| s.full(1, 11) && s.full(11, 1));
    let now = seg.now;
    seg.router(1).set_announcements(stub(1), now);
    seg.run_until(Duration::from_secs(30), |s| s.sees_stub(11, 1, vip()));
    seg.run_for(Duration::from_secs(3));
    let now = seg.now;
    seg.router(11)
        .prepare_restart(RestartReason::SoftwareRestart, now);
    seg.run_until(Duration::from_secs(40), |s| {
        s.routers[0].1.status(s.now).graceful_restart.helping.len() == 1
    });
    let helper = seg.routers[0].1.status(seg.now);
    assert!(helper.counters.gr_helper_rejected.is_empty());
}

/// RFC 3623 2.2 (3): 11, the DR (priority 200 against 1's 100), restarts without warning.
/// While its interface waits, 1's Hello names 11 the DR, so 11 declares itself DR again
/// instead of letting the election promote 1, the BDR: 1 never sees another DR, its help
/// ends `completed`, and 11 is DR again.
#[test]
fn restarting_dr_takes_its_role_back_from_the_neighbours_hellos() {
    let dr_11 = |wall: u32, now: Instant| {
        let mut r = Instance::new(
            rid(11),
            vec![iface_cfg(NetworkType::Broadcast, 200, Auth::Null)],
            wall,
            now,
        );
        r.interface_up(
            0,
            IfaceAddr {
                addr: rid(11),
                prefix_len: 24,
                mtu: 1500,
            },
            now,
        );
        r
    };
    let mut seg = Segment::new(&[(1, 100)], NetworkType::Broadcast, Auth::Null);
    let now = seg.now;
    seg.routers.push((11, dr_11(1_700_000_000, now)));
    seg.router(11).set_announcements(stub(1), now);
    let dr_at = |s: &Segment, k: usize| s.routers[k].1.status(s.now).interfaces[0].dr;
    seg.run_until(Duration::from_secs(20), |s| {
        s.full(1, 11) && s.sees_stub(1, 11, vip()) && dr_at(s, 0) == rid(11)
    });
    seg.run_for(Duration::from_secs(2));

    seg.drop = Box::new(|from, _| from == 11);
    seg.run_for(Duration::from_secs(2));
    seg.drop = Box::new(|_, _| false);
    let now = seg.now;
    let mut fresh = dr_11(1_700_000_100, now);
    fresh.set_graceful_restart(GrConfig {
        restart: true,
        ..GrConfig::default()
    });
    fresh.set_announcements(stub(1), now);
    fresh.begin_restart(60, RestartReason::Unknown, true, now);
    seg.routers[1].1 = fresh;
    seg.run_until(Duration::from_secs(60), |s| {
        assert_eq!(dr_at(s, 0), rid(11), "router 1 saw another DR");
        assert_ne!(dr_at(s, 1), rid(1), "11 let 1 become DR");
        assert!(s.sees_stub(1, 11, vip()), "the helper lost the VIP");
        !s.routers[1].1.restarting()
    });
    let restarter = seg.routers[1].1.status(seg.now);
    assert_eq!(
        restarter.graceful_restart.last_restart_exit.as_deref(),
        Some("completed")
    );
    assert_eq!(restarter.interfaces[0].dr, rid(11));
    seg.run_until(Duration::from_secs(70), |s| {
        s.routers[0]
            .1
            .status(s.now)
            .graceful_restart
            .last_helper_exit
            .is_some()
    });
    assert_eq!(
        seg.routers[0]
            .1
            .status(seg.now)
            .graceful_restart
            .last_helper_exit
            .as_deref(),
        Some("10.0.0.11: completed")
    );
}

/// 11 dies during a planned restart (1 helps, holding its grace-LSA) and starts again
/// unplanned 100 s of wall clock later: its grace-LSA's sequence number counts from the wall
/// clock, past the planned one's, so 1 takes the new grace period and reason. At
/// InitialSequenceNumber it would have been older than what 1 holds, and ignored.
#[test]
fn unplanned_grace_lsa_goes_past_a_planned_one_the_helper_holds() {
    let mut seg = Segment::new(&[(1, 100), (11, 0)], NetworkType::Broadcast, Auth::Null);
    let now = seg.now;
    seg.router(11).set_announcements(stub(1), now);
    seg.run_until(Duration::from_secs(10), |s| {
        s.full(1, 11) && s.sees_stub(1, 11, vip())
    });
    seg.run_for(Duration::from_secs(2));
    let now = seg.now;
    seg.router(11)
        .prepare_restart(RestartReason::SoftwareRestart, now);
    seg.run_until(Duration::from_secs(30), |s| {
        s.routers[1].1.flush_acknowledged()
            && s.routers[0].1.status(s.now).graceful_restart.helping.len() == 1
    });
    let planned_seq = graceful::grace_seq_floor(1_700_000_000);

    let now = seg.now;
    let mut fresh = restarted_11(now);
    fresh.set_announcements(stub(1), now);
    fresh.begin_restart(60, RestartReason::Unknown, true, now);
    // The bytes on the wire: one grace-LSA, sequence number from the wall clock.
    let out = fresh.take_output();
    let sent = updates(&out);
    assert_eq!(sent.len(), 1);
    let grace = &sent[0][0];
    assert_eq!(grace.header.ls_type, lsa::TYPE_OPAQUE_LINK);
    assert_eq!(grace.header.advertising_router, rid(11));
    assert_eq!(grace.header.seq, graceful::grace_seq_floor(1_700_000_100));
    assert_eq!(grace.header.seq, planned_seq + 100);
    assert_eq!(
        grace.header.seq,
        lsa::INITIAL_SEQ + 1_700_000_100_i32 % (1 << 30)
    );
    seg.wire.extend(out.into_iter().map(|t| (11, t)));
    seg.routers[1].1 = fresh;
    seg.run_until(Duration::from_secs(60), |s| {
        let helping = s.routers[0].1.status(s.now).graceful_restart.helping;
        helping.len() == 1 && helping[0].grace_period == 60
    });
    let helping = &seg.routers[0].1.status(seg.now).graceful_restart.helping[0];
    assert_eq!(helping.reason, RestartReason::Unknown);
}
