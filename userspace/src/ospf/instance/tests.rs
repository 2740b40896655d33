//! Replay tests: instances on a simulated segment (multicast to all, unicast to the owner
//! of the address), captured FRR packets fed in, and hand-made malformed input.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::ospf::interface::NetworkType;
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
