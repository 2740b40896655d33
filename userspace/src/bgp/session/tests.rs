//! Scripted sessions: the peer's messages (FRR's own OPEN, UPDATEs and NOTIFICATIONs where
//! it fits, from `../testdata/frr-bird-session.txt`) replayed against the state machine, with
//! the exact actions and bytes expected back.

use std::net::IpAddr;

use super::*;
use crate::bgp::packet::tests::{PORTIER_SESSION, captured_from, hex, nth};
use crate::bgp::packet::{Community, decode};

const C1: ConnId = ConnId(1);
const C2: ConnId = ConnId(2);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

/// FRR's side of the lab: AS 64512, identifier 10.0.0.1; we are AS 64513, 10.0.0.11.
fn cfg() -> PeerConfig {
    PeerConfig::new(ip("10.79.0.1"), 64512, 64513, "10.0.0.11".parse().unwrap())
}

fn hops() -> NextHops {
    NextHops {
        v4: Some("10.79.0.2".parse().unwrap()),
        v6: Some("fd00:79::2".parse().unwrap()),
        v6_link_local: Some("fe80::2".parse().unwrap()),
    }
}

fn vips() -> Routes {
    let mut r = Routes::new();
    r.insert(
        p("203.0.113.10/32"),
        RouteAttrs {
            communities: vec![Community::new(64513, 100)],
            ..RouteAttrs::default()
        },
    );
    r.insert(p("2001:db8:f::10/128"), RouteAttrs::default());
    r
}

fn keepalive() -> Vec<u8> {
    Message::Keepalive.encode(Codec::default())
}

fn frr_open() -> Vec<u8> {
    nth("frr", "OPEN", 0)
}

fn open_bytes(asn: u32, hold: u16, id: &str, caps: Vec<Capability>) -> Vec<u8> {
    Message::Open(Open::new(asn, hold, id.parse().unwrap(), caps)).encode(Codec::default())
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct H {
    s: Session,
    t0: Instant,
    now: Instant,
}

impl H {
    fn new(cfg: PeerConfig) -> H {
        let t0 = Instant::now();
        H {
            s: Session::new(cfg),
            t0,
            now: t0,
        }
    }

    fn ev(&mut self, ev: Event) -> Vec<Action> {
        self.s.event(self.now, ev)
    }

    fn recv(&mut self, conn: ConnId, bytes: &[u8]) -> Vec<Action> {
        self.s.receive(self.now, conn, bytes)
    }

    /// Moves the clock to `secs` after the start and ticks.
    fn at(&mut self, secs: u64) -> Vec<Action> {
        self.now = self.t0 + Duration::from_secs(secs);
        self.ev(Event::Tick)
    }

    fn deadline(&self) -> Option<u64> {
        self.s.next_deadline().map(|d| (d - self.t0).as_secs())
    }

    fn connected(&mut self, conn: ConnId, outgoing: bool) -> Vec<Action> {
        self.ev(Event::TcpConnected {
            conn,
            outgoing,
            next_hops: hops(),
        })
    }

    /// Start, connect out on C1, FRR's OPEN, KEEPALIVE: Established. Returns the last actions.
    fn establish(&mut self) -> Vec<Action> {
        self.ev(Event::ManualStart);
        self.connected(C1, true);
        self.recv(C1, &frr_open());
        self.recv(C1, &keepalive())
    }
}

fn state(from: State, to: State) -> Action {
    Action::StateChanged { from, to }
}

fn send(conn: ConnId, msg: Message) -> Action {
    Action::Send { conn, msg }
}

/// The bytes of every Send, in order.
fn wire(actions: &[Action], codec: Codec) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { msg, .. } => Some(hexs(&msg.encode(codec))),
            _ => None,
        })
        .collect()
}

fn updates(actions: &[Action]) -> Vec<Update> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                msg: Message::Update(u),
                ..
            } => Some(u.clone()),
            _ => None,
        })
        .collect()
}

const MARKER: &str = "ffffffffffffffffffffffffffffffff";
/// 203.0.113.10/32: ORIGIN IGP, AS_PATH 64513, NEXT_HOP 10.79.0.2, COMMUNITIES 64513:100.
const VIP4_UPDATE: &str = "ffffffffffffffffffffffffffffffff0037020000001b400101004002060201\
0000fc014003040a4f0002c00804fc01006420cb00710a";
/// 2001:db8:f::10/128 in MP_REACH_NLRI, next hops fd00:79::2 and fe80::2; ORIGIN, AS_PATH.
const VIP6_UPDATE: &str = "ffffffffffffffffffffffffffffffff005e0200000047900e003600020120fd00\
0079000000000000000000000002fe80000000000000000000000000000200802001\
0db8000f000000000000000000104001010040020602010000fc01";
const EOR4: &str = "ffffffffffffffffffffffffffffffff001702 00000000";
const EOR6: &str = "ffffffffffffffffffffffffffffffff001d02 00000006 800f03 000201";

fn canon(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn active_peer_opens_establishes_announces_and_ends_with_end_of_rib() {
    let mut h = H::new(cfg());
    assert_eq!(h.ev(Event::Announce(vips())), []);
    assert_eq!(
        h.ev(Event::ManualStart),
        [Action::Connect, state(State::Idle, State::Connect)]
    );
    let a = h.connected(C1, true);
    assert_eq!(
        a,
        [
            send(C1, Message::Open(h.s.our_open())),
            state(State::Connect, State::OpenSent)
        ]
    );
    assert_eq!(
        wire(&a, Codec::default()),
        [canon(&format!(
            "{MARKER} 0033 01 04 fc01 005a 0a00000b 16 02 14 01040001 0001 01040002 0001 0200 4104 0000fc01"
        ))]
    );
    assert_eq!(
        h.recv(C1, &frr_open()),
        [
            send(C1, Message::Keepalive),
            state(State::OpenSent, State::OpenConfirm)
        ]
    );
    let a = h.recv(C1, &keepalive());
    let neg = Negotiated {
        peer_as: 64512,
        peer_id: "10.0.0.1".parse().unwrap(),
        hold_time: 30,
        keepalive: 10,
        four_octet_as: true,
        route_refresh: true,
        families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        graceful_restart: Some(GracefulRestartInfo {
            restart_time: 120,
            restart_state: true,
            notification: true,
            families: vec![(Family::IPV4_UNICAST, false), (Family::IPV6_UNICAST, false)],
        }),
        graceful_restart_negotiated: false,
        graceful_notification: false,
        peer_capabilities: vec![1, 1, 128, 2, 70, 65, 6, 69, 73, 64, 71],
        outgoing: true,
    };
    assert_eq!(a[0], Action::Established(Box::new(neg)));
    assert_eq!(a[5], state(State::OpenConfirm, State::Established));
    assert_eq!(a.len(), 6);
    assert_eq!(
        wire(&a, Codec::FOUR_OCTET),
        [
            canon(VIP4_UPDATE),
            canon(VIP6_UPDATE),
            canon(EOR4),
            canon(EOR6)
        ]
    );
    assert_eq!(h.s.state(), State::Established);
    assert_eq!(h.s.established_at(), Some(h.t0));
    assert_eq!(h.s.advertised().len(), 2);
    let st = h.s.stats();
    assert_eq!((st.prefixes_announced, st.updates_out), (2, 4));
    assert_eq!((st.messages_in, st.messages_out), (2, 6));
    // The next thing due is our keepalive (hold/3).
    assert_eq!(h.deadline(), Some(10));
}

#[test]
fn keepalives_hold_timer_and_reconnect() {
    let mut h = H::new(cfg());
    h.establish();
    assert_eq!(h.at(9), []);
    assert_eq!(h.at(10), [send(C1, Message::Keepalive)]);
    assert_eq!(h.deadline(), Some(20));
    // A KEEPALIVE from FRR at 25 moves the hold timer to 55.
    h.at(20);
    h.now = h.t0 + Duration::from_secs(25);
    assert_eq!(h.recv(C1, &keepalive()), []);
    assert_eq!(h.at(30), [send(C1, Message::Keepalive)]);
    assert_eq!(h.at(40), [send(C1, Message::Keepalive)]);
    assert_eq!(h.at(50), [send(C1, Message::Keepalive)]);
    let hold = Notification::new(code::HOLD_TIMER_EXPIRED, 0);
    assert_eq!(
        h.at(55),
        [
            send(C1, Message::Notification(hold.clone())),
            Action::Close { conn: C1 },
            Action::Down {
                reason: DownReason::NotificationSent {
                    notification: hold,
                    cause: "hold timer expired".into()
                },
                was_established: true
            },
            state(State::Established, State::Active)
        ]
    );
    assert!(h.s.advertised().is_empty());
    // The back-off started over when the session was established: 5 s.
    assert_eq!(h.deadline(), Some(60));
    assert_eq!(
        h.at(60),
        [Action::Connect, state(State::Active, State::Connect)]
    );
}

#[test]
fn connect_retry_backs_off_exponentially_to_the_maximum() {
    let mut h = H::new(cfg());
    h.ev(Event::ManualStart);
    let mut when = vec![0];
    for _ in 0..8 {
        assert_eq!(
            h.ev(Event::TcpFailed),
            [state(State::Connect, State::Active)]
        );
        let next = h.deadline().unwrap();
        assert_eq!(
            h.at(next),
            [Action::Connect, state(State::Active, State::Connect)]
        );
        when.push(next);
    }
    let gaps: Vec<u64> = when.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [5, 10, 20, 40, 80, 120, 120, 120]);
    // An attempt that hangs a whole interval is abandoned and started again.
    assert_eq!(h.at(when[8] + 120), [Action::AbortConnect, Action::Connect]);
    assert_eq!(h.s.stats().connect_attempts, 10);
}

#[test]
fn bad_peer_as_is_refused_and_retried_later() {
    let mut c = cfg();
    c.remote_as = 64999;
    let mut h = H::new(c);
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    let bad = Notification::new(code::OPEN, subcode::open::BAD_PEER_AS);
    assert_eq!(
        h.recv(C1, &frr_open()),
        [
            send(C1, Message::Notification(bad.clone())),
            Action::Close { conn: C1 },
            Action::Down {
                reason: DownReason::NotificationSent {
                    notification: bad,
                    cause: "bad peer AS 64512 (configured 64999)".into()
                },
                was_established: false
            },
            state(State::OpenSent, State::Active)
        ]
    );
    // The first attempt doubled the interval: next try in 10 s.
    assert_eq!(h.deadline(), Some(10));
}

#[test]
fn open_checks_hold_time_and_identifier() {
    // Hold time 1 or 2 from the peer: Unacceptable Hold Time (the codec finds it).
    for bad_hold in [1u16, 2] {
        let mut h = H::new(cfg());
        h.ev(Event::ManualStart);
        h.connected(C1, true);
        let mut open = frr_open();
        open[22..24].copy_from_slice(&bad_hold.to_be_bytes());
        let a = h.recv(C1, &open);
        assert_eq!(
            a[0],
            send(
                C1,
                Message::Notification(Notification::new(2, subcode::open::UNACCEPTABLE_HOLD_TIME))
            )
        );
        assert_eq!(h.s.state(), State::Active);
    }
    // iBGP: the peer may not use our identifier; eBGP may (RFC 6286).
    let mut c = cfg();
    c.remote_as = 64513;
    let mut h = H::new(c);
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    let same = open_bytes(64513, 90, "10.0.0.11", vec![Capability::FourOctetAs(64513)]);
    let a = h.recv(C1, &same);
    assert_eq!(
        a[0],
        send(
            C1,
            Message::Notification(Notification::new(2, subcode::open::BAD_BGP_ID))
        )
    );
    let mut h = H::new(cfg());
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    let same = open_bytes(64512, 90, "10.0.0.11", vec![Capability::FourOctetAs(64512)]);
    assert_eq!(
        h.recv(C1, &same),
        [
            send(C1, Message::Keepalive),
            state(State::OpenSent, State::OpenConfirm)
        ]
    );
    // Version 3: Unsupported Version Number, data = 4.
    let mut h = H::new(cfg());
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    let mut v3 = frr_open();
    v3[19] = 3;
    assert_eq!(
        h.recv(C1, &v3)[0],
        send(
            C1,
            Message::Notification(Notification::with_data(2, 1, vec![0, 4]))
        )
    );
}

#[test]
fn hold_time_zero_means_no_timers() {
    let mut c = cfg();
    c.hold_time = 0;
    let mut h = H::new(c);
    h.establish();
    let n = h.s.negotiated().unwrap();
    assert_eq!((n.hold_time, n.keepalive), (0, 0));
    assert_eq!(h.deadline(), None);
    assert_eq!(h.at(100_000), []);
    // Otherwise the smaller proposal wins: ours 9 against FRR's 30.
    let mut c = cfg();
    c.hold_time = 9;
    let mut h = H::new(c);
    h.establish();
    let n = h.s.negotiated().unwrap();
    assert_eq!((n.hold_time, n.keepalive), (9, 3));
    assert_eq!(h.deadline(), Some(3));
}

#[test]
fn passive_peer_waits_and_accepts() {
    let mut c = cfg();
    c.passive = true;
    let mut h = H::new(c);
    assert_eq!(
        h.ev(Event::ManualStart),
        [state(State::Idle, State::Active)]
    );
    assert_eq!(h.deadline(), None);
    let a = h.connected(C2, false);
    assert_eq!(a[1], state(State::Active, State::OpenSent));
    h.recv(C2, &frr_open());
    let a = h.recv(C2, &keepalive());
    let Action::Established(n) = &a[0] else {
        panic!("{a:?}")
    };
    assert!(!n.outgoing);
    // After a drop a passive peer just waits again.
    let a = h.ev(Event::TcpClosed { conn: C2 });
    assert_eq!(
        a,
        [
            Action::Close { conn: C2 },
            Action::Down {
                reason: DownReason::TcpClosed,
                was_established: true
            },
            state(State::Established, State::Active)
        ]
    );
    assert_eq!(h.deadline(), None);
}

#[test]
fn collision_keeps_the_connection_of_the_higher_identifier() {
    let collision = Message::Notification(Notification::new(6, subcode::cease::COLLISION));
    // We (10.0.0.11) are higher than FRR (10.0.0.1): our outgoing connection stays.
    let mut h = H::new(cfg());
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    assert_eq!(
        h.connected(C2, false),
        [send(C2, Message::Open(h.s.our_open()))]
    );
    h.recv(C1, &frr_open());
    assert_eq!(
        h.recv(C2, &frr_open()),
        [send(C2, collision.clone()), Action::Close { conn: C2 }]
    );
    let a = h.recv(C1, &keepalive());
    assert!(matches!(&a[0], Action::Established(n) if n.outgoing));
    // The same, with the OPENs in the other order.
    let mut h = H::new(cfg());
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    h.connected(C2, false);
    h.recv(C2, &frr_open());
    assert_eq!(
        h.recv(C1, &frr_open()),
        [
            send(C2, collision.clone()),
            Action::Close { conn: C2 },
            send(C1, Message::Keepalive)
        ]
    );

    // We are lower (1.1.1.1): the peer's connection stays, ours goes.
    let mut c = cfg();
    c.router_id = "1.1.1.1".parse().unwrap();
    let mut h = H::new(c);
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    h.connected(C2, false);
    h.recv(C1, &frr_open());
    assert_eq!(
        h.recv(C2, &frr_open()),
        [
            send(C1, collision.clone()),
            Action::Close { conn: C1 },
            send(C2, Message::Keepalive)
        ]
    );
    assert_eq!(h.s.state(), State::OpenConfirm);
    let a = h.recv(C2, &keepalive());
    assert!(matches!(&a[0], Action::Established(n) if !n.outgoing));
    assert_eq!(h.s.stats().collisions, 1);
    // Once established, a new connection from the peer is closed at once.
    assert_eq!(
        h.connected(ConnId(3), false),
        [Action::Close { conn: ConnId(3) }]
    );
    // And messages on connections we no longer know are ignored.
    assert_eq!(h.recv(C1, &keepalive()), []);
    assert_eq!(h.ev(Event::TcpClosed { conn: C1 }), []);
}

#[test]
fn establishing_drops_the_other_connection_and_the_attempt() {
    let mut h = H::new(cfg());
    h.ev(Event::ManualStart);
    // FRR connects to us while our own attempt is still under way.
    h.connected(C2, false);
    h.recv(C2, &frr_open());
    let a = h.recv(C2, &keepalive());
    assert_eq!(a[0], Action::AbortConnect);
    assert!(matches!(a[1], Action::Established(_)));
    // Our attempt completing now is refused.
    assert_eq!(h.connected(C1, true), [Action::Close { conn: C1 }]);
    // Established on one connection while the other is still in OpenSent.
    let mut h = H::new(cfg());
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    h.connected(C2, false);
    h.recv(C1, &frr_open());
    let a = h.recv(C1, &keepalive());
    assert_eq!(
        a[..2],
        [
            send(
                C2,
                Message::Notification(Notification::new(6, subcode::cease::COLLISION))
            ),
            Action::Close { conn: C2 }
        ]
    );
    assert!(matches!(a[2], Action::Established(_)));
}

#[test]
fn announce_set_changes_send_only_the_difference() {
    let mut h = H::new(cfg());
    h.ev(Event::Announce(vips()));
    h.establish();
    // Unchanged set: nothing.
    assert_eq!(h.ev(Event::Announce(vips())), []);
    // The IPv4 VIP goes: one withdrawal in the classic field.
    let mut only6 = vips();
    only6.remove(&p("203.0.113.10/32"));
    let a = h.ev(Event::Announce(only6.clone()));
    assert_eq!(
        wire(&a, Codec::FOUR_OCTET),
        [canon(&format!("{MARKER} 001c 02 0005 20cb00710a 0000"))]
    );
    // It comes back with a MED: one announcement, the IPv6 one untouched.
    let mut back = only6.clone();
    back.insert(
        p("203.0.113.10/32"),
        RouteAttrs {
            med: Some(5),
            ..RouteAttrs::default()
        },
    );
    let a = h.ev(Event::Announce(back));
    let u = updates(&a);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].nlri, [p("203.0.113.10/32")]);
    assert_eq!(u[0].attrs.med, Some(5));
    assert!(u[0].attrs.communities.is_empty());
    // Everything goes: a classic withdrawal and an MP_UNREACH_NLRI one.
    let a = h.ev(Event::Announce(Routes::new()));
    assert_eq!(
        wire(&a, Codec::FOUR_OCTET),
        [
            canon(&format!("{MARKER} 001c 02 0005 20cb00710a 0000")),
            canon(&format!(
                "{MARKER} 002f 02 0000 0018 900f 0014 000201 80 20010db8000f00000000000000000010"
            ))
        ]
    );
    assert!(h.s.advertised().is_empty());
    assert_eq!(h.s.stats().prefixes_withdrawn, 3);
}

#[test]
fn peer_attributes_are_merged_and_prepended() {
    let mut c = cfg();
    c.export = RouteAttrs {
        med: Some(50),
        communities: vec![Community::NO_EXPORT, Community::new(64513, 100)],
        large_communities: vec!["64513:1:2".parse().unwrap()],
        as_path_prepend: 2,
    };
    let mut h = H::new(c);
    h.ev(Event::Announce(vips()));
    let a = h.establish();
    let u = updates(&a);
    let v4 = &u[0].attrs;
    assert_eq!(
        v4.as_path.as_ref().unwrap().to_string(),
        "64513 64513 64513"
    );
    assert_eq!(v4.med, Some(50));
    assert_eq!(
        v4.communities,
        [Community::new(64513, 100), Community::NO_EXPORT]
    );
    assert_eq!(v4.large_communities.len(), 1);
    assert_eq!(u[1].attrs.med, Some(50), "IPv6 too");
    assert_eq!(v4.local_pref, None, "eBGP");
}

#[test]
fn route_refresh_resends_the_family() {
    let mut h = H::new(cfg());
    h.ev(Event::Announce(vips()));
    h.establish();
    let a = h.recv(C1, &nth("frr", "ROUTE-REFRESH", 0));
    assert_eq!(wire(&a, Codec::FOUR_OCTET), [canon(VIP4_UPDATE)]);
    let a = h.recv(C1, &nth("frr", "ROUTE-REFRESH", 1));
    assert_eq!(wire(&a, Codec::FOUR_OCTET), [canon(VIP6_UPDATE)]);
    // BIRD's enhanced refresh markers are only noted.
    assert_eq!(h.recv(C1, &nth("bird", "ROUTE-REFRESH", 0)), []);
    assert_eq!(h.s.stats().route_refresh_received, 3);
}

#[test]
fn manual_stop_sends_the_shutdown_communication() {
    let mut h = H::new(cfg());
    h.ev(Event::Announce(vips()));
    h.establish();
    let a = h.ev(Event::ManualStop {
        message: Some("maintenance: back at 18:00".into()),
    });
    let cease = Notification::cease(
        subcode::cease::ADMIN_SHUTDOWN,
        Some("maintenance: back at 18:00"),
    );
    assert_eq!(
        a,
        [
            send(C1, Message::Notification(cease)),
            Action::Close { conn: C1 },
            Action::Down {
                reason: DownReason::Stopped,
                was_established: true
            },
            state(State::Established, State::Idle)
        ]
    );
    assert_eq!(
        wire(&a, Codec::FOUR_OCTET),
        [canon(&format!(
            "{MARKER} 0030 03 0602 1a {}",
            hexs(b"maintenance: back at 18:00")
        ))]
    );
    assert_eq!(h.deadline(), None);
    // Stopped: connections are refused until started again.
    assert_eq!(h.connected(C2, false), [Action::Close { conn: C2 }]);
    assert_eq!(
        h.ev(Event::ManualStart),
        [Action::Connect, state(State::Idle, State::Connect)]
    );
    // Stopping while connecting abandons the attempt.
    assert_eq!(
        h.ev(Event::ManualStop { message: None }),
        [Action::AbortConnect, state(State::Connect, State::Idle)]
    );
}

#[test]
fn admin_reset_says_so_and_starts_over() {
    let mut h = H::new(cfg());
    h.establish();
    let a = h.ev(Event::AdminReset {
        message: Some("config change".into()),
    });
    assert_eq!(
        a[0],
        send(
            C1,
            Message::Notification(Notification::cease(
                subcode::cease::ADMIN_RESET,
                Some("config change")
            ))
        )
    );
    assert_eq!(*a.last().unwrap(), state(State::Established, State::Active));
    assert_eq!(h.deadline(), Some(5));
    assert_eq!(h.at(5)[0], Action::Connect);
}

#[test]
fn unexpected_messages_are_fsm_errors() {
    // KEEPALIVE in OpenSent.
    let mut h = H::new(cfg());
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    let a = h.recv(C1, &keepalive());
    assert_eq!(
        a[0],
        send(C1, Message::Notification(Notification::new(5, 1)))
    );
    assert_eq!(*a.last().unwrap(), state(State::OpenSent, State::Active));
    // UPDATE in OpenConfirm.
    let mut h = H::new(cfg());
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    h.recv(C1, &frr_open());
    let a = h.recv(C1, &nth("frr", "UPDATE", 2));
    assert_eq!(
        a[0],
        send(C1, Message::Notification(Notification::new(5, 2)))
    );
    // OPEN in Established.
    let mut h = H::new(cfg());
    h.establish();
    let a = h.recv(C1, &frr_open());
    assert_eq!(
        a[0],
        send(C1, Message::Notification(Notification::new(5, 3)))
    );
    assert!(matches!(
        a[2],
        Action::Down {
            was_established: true,
            ..
        }
    ));
}

#[test]
fn decode_errors_answer_with_their_notification() {
    let mut h = H::new(cfg());
    h.establish();
    let mut bad = keepalive();
    bad[0] = 0;
    let a = h.recv(C1, &bad);
    let n = Notification::new(1, 1);
    assert_eq!(
        a,
        [
            send(C1, Message::Notification(n.clone())),
            Action::Close { conn: C1 },
            Action::Down {
                reason: DownReason::NotificationSent {
                    notification: n,
                    cause: "connection not synchronized (marker is not all ones)".into()
                },
                was_established: true
            },
            state(State::Established, State::Active)
        ]
    );
}

#[test]
fn peer_notification_ends_the_session_without_answer() {
    let mut h = H::new(cfg());
    h.establish();
    let bytes = nth("frr", "NOTIFICATION", 0);
    let Message::Notification(n) = decode(&bytes, Codec::default()).unwrap() else {
        panic!()
    };
    let a = h.recv(C1, &bytes);
    assert_eq!(
        a,
        [
            Action::Close { conn: C1 },
            Action::Down {
                reason: DownReason::NotificationReceived(n),
                was_established: true
            },
            state(State::Established, State::Active)
        ]
    );
    let Action::Down { reason, .. } = &a[1] else {
        panic!()
    };
    assert_eq!(
        reason.to_string(),
        "received Cease/Administrative Shutdown \"\\\"maintenance: back at 18:00\\\"\""
    );
}

#[test]
fn received_routes_are_counted_and_discarded() {
    let mut h = H::new(cfg());
    h.establish();
    // FRR's first announcements (2 + 1 prefixes), its End-of-RIBs, its withdrawals.
    for i in [0, 1, 2, 3, 14, 15] {
        assert_eq!(h.recv(C1, &nth("frr", "UPDATE", i)), [], "#{i}");
    }
    // One with an undefined ORIGIN: treat-as-withdraw.
    let mut bad = nth("frr", "UPDATE", 0);
    let at = hexs(&bad).find("40010100").unwrap() / 2;
    bad[at + 3] = 7;
    assert_eq!(h.recv(C1, &bad), []);
    let s = h.s.stats();
    assert_eq!(s.updates_in, 7);
    assert_eq!(s.prefixes_received, 3);
    assert_eq!(s.withdrawals_received, 2 + 2);
    assert_eq!(s.end_of_rib_received, 2);
    assert_eq!(s.treat_as_withdraw, 1);
    assert_eq!(h.s.state(), State::Established);
}

#[test]
fn families_follow_the_negotiation_and_next_hops() {
    // A peer without multiprotocol capabilities speaks IPv4 unicast only.
    let mut h = H::new(cfg());
    h.ev(Event::Announce(vips()));
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    h.recv(
        C1,
        &open_bytes(64512, 90, "10.0.0.1", vec![Capability::FourOctetAs(64512)]),
    );
    let a = h.recv(C1, &keepalive());
    assert_eq!(
        wire(&a, Codec::FOUR_OCTET),
        [canon(VIP4_UPDATE), canon(EOR4)]
    );
    assert_eq!(h.s.stats().prefixes_unsendable, 1);
    // No IPv6 address on the link and none configured: the IPv6 VIP waits, the End-of-RIB
    // still goes.
    let mut h = H::new(cfg());
    h.ev(Event::Announce(vips()));
    h.ev(Event::ManualStart);
    h.ev(Event::TcpConnected {
        conn: C1,
        outgoing: true,
        next_hops: NextHops {
            v6: None,
            v6_link_local: None,
            ..hops()
        },
    });
    h.recv(C1, &frr_open());
    let a = h.recv(C1, &keepalive());
    assert_eq!(
        wire(&a, Codec::FOUR_OCTET),
        [canon(VIP4_UPDATE), canon(EOR4), canon(EOR6)]
    );
    // An explicit IPv6 next hop replaces both automatic ones.
    let mut c = cfg();
    c.next_hop_v6 = Some("2001:db8:a::11".parse().unwrap());
    c.next_hop_v4 = Some("10.0.0.11".parse().unwrap());
    let mut h = H::new(c);
    h.ev(Event::Announce(vips()));
    let u = updates(&h.establish());
    assert_eq!(u[0].attrs.next_hop, Some("10.0.0.11".parse().unwrap()));
    assert_eq!(
        u[1].attrs.mp_reach.as_ref().unwrap().next_hop,
        NextHop::V6 {
            global: "2001:db8:a::11".parse().unwrap(),
            link_local: None
        }
    );
    // IPv6 switched off locally: not offered, not sent.
    let mut c = cfg();
    c.ipv6_unicast = false;
    let mut h = H::new(c);
    h.ev(Event::Announce(vips()));
    let a = h.establish();
    assert_eq!(
        wire(&a, Codec::FOUR_OCTET),
        [canon(VIP4_UPDATE), canon(EOR4)]
    );
}

#[test]
fn two_octet_peer_and_four_octet_local_as() {
    let mut c = cfg();
    c.local_as = 4_200_000_001;
    let mut h = H::new(c);
    h.ev(Event::Announce(vips()));
    h.ev(Event::ManualStart);
    let a = h.connected(C1, true);
    let Action::Send {
        msg: Message::Open(o),
        ..
    } = &a[0]
    else {
        panic!()
    };
    assert_eq!((o.my_as, o.asn()), (23456, 4_200_000_001));
    // The peer has no four-octet AS capability.
    h.recv(
        C1,
        &open_bytes(
            64512,
            90,
            "10.0.0.1",
            vec![
                Capability::Multiprotocol(Family::IPV4_UNICAST),
                Capability::Multiprotocol(Family::IPV6_UNICAST),
            ],
        ),
    );
    assert_eq!(h.s.codec(C1), Codec::default());
    let a = h.recv(C1, &keepalive());
    let w = wire(&a, h.s.codec(C1));
    // AS_PATH 23456 (2 octets), AS4_PATH 4200000001.
    assert!(
        w[0].contains("400204 0201 5ba0".replace(' ', "").as_str()),
        "{}",
        w[0]
    );
    assert!(
        w[0].contains("c01106 0201 fa56ea01".replace(' ', "").as_str()),
        "{}",
        w[0]
    );
    let n = h.s.negotiated().unwrap();
    assert!(!n.four_octet_as && !n.route_refresh);
}

#[test]
fn ibgp_routes_carry_local_pref_and_an_empty_path() {
    let mut c = cfg();
    c.remote_as = 64513;
    c.export.as_path_prepend = 3;
    let mut h = H::new(c);
    h.ev(Event::Announce(vips()));
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    h.recv(
        C1,
        &open_bytes(64513, 90, "10.0.0.1", vec![Capability::FourOctetAs(64513)]),
    );
    let u = updates(&h.recv(C1, &keepalive()));
    assert_eq!(u[0].attrs.as_path, Some(AsPath::default()));
    assert_eq!(u[0].attrs.local_pref, Some(100));
}

#[test]
fn large_sets_are_split_into_messages_that_fit() {
    let mut routes = Routes::new();
    for i in 0..1500u32 {
        let v4 = std::net::Ipv4Addr::from(0xc633_0000 + i);
        routes.insert(Prefix::host(v4.into()), RouteAttrs::default());
    }
    for i in 0..600u128 {
        let v6 = Ipv6Addr::from(0x2001_0db8_000f_0000_0000_0000_0000_0000u128 + i);
        routes.insert(Prefix::host(v6.into()), RouteAttrs::default());
    }
    let mut h = H::new(cfg());
    h.ev(Event::Announce(routes.clone()));
    let a = h.establish();
    let mut total = 0;
    let mut messages = 0;
    for bytes in wire(&a, Codec::FOUR_OCTET) {
        let b = hex(&bytes);
        assert!(b.len() <= MAX_LEN, "{}", b.len());
        let Message::Update(u) = decode(&b, Codec::FOUR_OCTET).unwrap() else {
            panic!()
        };
        total += u.announced().count();
        messages += 1;
    }
    assert_eq!(total, 2100);
    // 1500 * 5 octets need two messages, 600 * 17 three; plus two End-of-RIBs.
    assert_eq!(messages, 2 + 3 + 2);
    // And withdrawing all of them packs the same way.
    let a = h.ev(Event::Announce(Routes::new()));
    let mut withdrawn = 0;
    for bytes in wire(&a, Codec::FOUR_OCTET) {
        let b = hex(&bytes);
        assert!(b.len() <= MAX_LEN);
        let Message::Update(u) = decode(&b, Codec::FOUR_OCTET).unwrap() else {
            panic!()
        };
        withdrawn += u.withdrawn_all().count();
    }
    assert_eq!(withdrawn, 2100);
}

#[test]
fn changed_next_hops_send_the_family_again() {
    let mut h = H::new(cfg());
    h.ev(Event::Announce(vips()));
    h.ev(Event::ManualStart);
    let no_ll = NextHops {
        v6_link_local: None,
        ..hops()
    };
    h.ev(Event::TcpConnected {
        conn: C1,
        outgoing: true,
        next_hops: no_ll,
    });
    h.recv(C1, &frr_open());
    let u = updates(&h.recv(C1, &keepalive()));
    assert_eq!(
        u[1].attrs.mp_reach.as_ref().unwrap().next_hop,
        NextHop::V6 {
            global: "fd00:79::2".parse().unwrap(),
            link_local: None
        }
    );
    assert_eq!(h.s.established_conn(), Some(C1));
    assert_eq!(h.s.next_hops(), Some(no_ll));
    // Nothing new: nothing sent.
    assert_eq!(
        h.ev(Event::NextHops {
            conn: C1,
            next_hops: no_ll
        }),
        []
    );
    // The link-local address appears: the IPv6 route goes again.
    let a = h.ev(Event::NextHops {
        conn: C1,
        next_hops: hops(),
    });
    assert_eq!(wire(&a, Codec::FOUR_OCTET), [canon(VIP6_UPDATE)]);
    // The IPv6 address goes: the IPv6 VIP is withdrawn.
    let a = h.ev(Event::NextHops {
        conn: C1,
        next_hops: NextHops {
            v6: None,
            v6_link_local: None,
            ..hops()
        },
    });
    let u = updates(&a);
    assert_eq!(
        u[0].withdrawn_all().copied().collect::<Vec<_>>(),
        [p("2001:db8:f::10/128")]
    );
    assert_eq!(u.len(), 1, "only the withdrawal");
    assert_eq!(h.s.advertised().len(), 1);
    // A configured next hop hides changes of the discovered one.
    let mut c = cfg();
    c.next_hop_v4 = Some("10.0.0.11".parse().unwrap());
    let mut h = H::new(c);
    h.ev(Event::Announce(vips()));
    h.establish();
    let moved = NextHops {
        v4: Some("10.79.0.3".parse().unwrap()),
        ..hops()
    };
    assert_eq!(
        h.ev(Event::NextHops {
            conn: C1,
            next_hops: moved
        }),
        []
    );
    assert_eq!(h.s.next_hops(), Some(moved));
}

/// The session the interop test had with FRR, replayed: same configuration, FRR's messages
/// and the same events in the same order give exactly the bytes portier sent on the wire.
#[test]
fn replay_of_the_frr_interop_session() {
    let all = captured_from(PORTIER_SESSION);
    let from = |who: &str| -> Vec<Vec<u8>> {
        all.iter()
            .filter(|c| c.sender == who)
            .map(|c| c.bytes.clone())
            .collect()
    };
    let (frr, ours) = (from("frr"), from("portier"));
    let mut c = PeerConfig::new(ip("10.78.1.1"), 64512, 64513, "10.0.0.11".parse().unwrap());
    c.hold_time = 9;
    c.connect_retry = Duration::from_secs(1);
    c.export = RouteAttrs {
        med: Some(50),
        communities: vec![Community::NO_EXPORT],
        large_communities: Vec::new(),
        as_path_prepend: 2,
    };
    let mut set = Routes::new();
    set.insert(
        p("203.0.113.10/32"),
        RouteAttrs {
            communities: vec![Community::new(64513, 100)],
            large_communities: vec!["64513:1:2".parse().unwrap()],
            ..RouteAttrs::default()
        },
    );
    set.insert(p("2001:db8:f::10/128"), RouteAttrs::default());
    // The link-local address we announced once the kernel listed it.
    let Message::Update(u) = decode(&ours[6], Codec::FOUR_OCTET).unwrap() else {
        panic!()
    };
    let Some(NextHop::V6 {
        link_local: Some(ll),
        ..
    }) = u.attrs.mp_reach.map(|m| m.next_hop)
    else {
        panic!()
    };
    let first = NextHops {
        v4: Some("10.78.1.2".parse().unwrap()),
        v6: Some("fd00:78:1::2".parse().unwrap()),
        v6_link_local: None,
    };

    let mut h = H::new(c);
    let mut sent = Vec::new();
    let mut run = |h: &mut H, a: Vec<Action>| sent.extend(wire(&a, h.s.codec(C1)));
    let a = h.ev(Event::Announce(set.clone()));
    run(&mut h, a);
    let a = h.ev(Event::ManualStart);
    run(&mut h, a);
    let a = h.ev(Event::TcpConnected {
        conn: C1,
        outgoing: true,
        next_hops: first,
    });
    run(&mut h, a);
    let a = h.recv(C1, &frr[0]);
    run(&mut h, a);
    let a = h.recv(C1, &frr[1]);
    run(&mut h, a);
    let a = h.ev(Event::NextHops {
        conn: C1,
        next_hops: NextHops {
            v6_link_local: Some(ll),
            ..first
        },
    });
    run(&mut h, a);
    let a = h.recv(C1, &frr[2]);
    run(&mut h, a);
    set.remove(&p("203.0.113.10/32"));
    let a = h.ev(Event::Announce(set));
    run(&mut h, a);
    let a = h.ev(Event::ManualStop {
        message: Some("maintenance: back at 18:00".into()),
    });
    run(&mut h, a);
    let ours: Vec<String> = ours.iter().map(|b| hexs(b)).collect();
    assert_eq!(sent, ours);
}

/// RFC 4724 as the restarting speaker, RFC 8538's N bit: the first OPEN after a (re)start says
/// R, later ones do not; every family with F; a deliberate stop is a Hard Reset.
#[test]
fn graceful_restart_capability_and_hard_reset_on_stop() {
    let mut c = cfg();
    c.graceful_restart = Some(120);
    let mut h = H::new(c);
    h.ev(Event::Announce(vips()));
    h.ev(Event::ManualStart);
    let a = h.connected(C1, true);
    assert_eq!(
        wire(&a, Codec::default()),
        [canon(&format!(
            "{MARKER} 003f 01 04 fc01 005a 0a00000b 22 02 20 01040001 0001 01040002 0001 0200 \
             400a c078 00010180 00020180 4104 0000fc01"
        ))]
    );
    h.recv(C1, &frr_open());
    h.recv(C1, &keepalive());
    let neg = h.s.negotiated().unwrap().clone();
    assert!(neg.graceful_restart_negotiated && neg.graceful_notification);
    // FRR's capability as noted: nothing to keep for it (no RIB), but shown.
    assert_eq!(neg.graceful_restart.unwrap().restart_time, 120);
    // The session after this one is not a restart any more: no R bit.
    let Capability::GracefulRestart(gr) =
        h.s.our_open()
            .capabilities
            .into_iter()
            .find(|c| c.code() == 64)
            .unwrap()
    else {
        panic!()
    };
    assert_eq!(gr.flags, GracefulRestart::NOTIFICATION);
    let a = h.ev(Event::ManualStop {
        message: Some("bye".into()),
    });
    let cease = Notification::cease(subcode::cease::ADMIN_SHUTDOWN, Some("bye"));
    assert_eq!(
        a[0],
        send(C1, Message::Notification(Notification::hard_reset(&cease)))
    );
    assert_eq!(
        wire(&a[..1], Codec::FOUR_OCTET),
        [canon(&format!(
            "{MARKER} 001b 03 0609 0602 03 {}",
            hexs(b"bye")
        ))]
    );
}

/// Without the N bit from the peer, a stop stays a plain Cease (a Hard Reset would mean
/// nothing to it), and without our capability nothing is negotiated.
#[test]
fn no_hard_reset_without_the_peers_n_bit() {
    let mut c = cfg();
    c.graceful_restart = Some(90);
    let mut h = H::new(c);
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    let gr = Capability::GracefulRestart(GracefulRestart {
        flags: 0,
        restart_time: 60,
        families: vec![(Family::IPV4_UNICAST, false)],
    });
    h.recv(C1, &open_bytes(64512, 30, "10.0.0.1", vec![gr]));
    h.recv(C1, &keepalive());
    let neg = h.s.negotiated().unwrap().clone();
    assert!(neg.graceful_restart_negotiated && !neg.graceful_notification);
    let a = h.ev(Event::ManualStop { message: None });
    assert_eq!(
        a[0],
        send(
            C1,
            Message::Notification(Notification::cease(subcode::cease::ADMIN_SHUTDOWN, None))
        )
    );
    let mut h = H::new(cfg());
    h.establish();
    let neg = h.s.negotiated().unwrap().clone();
    assert!(!neg.graceful_restart_negotiated && !neg.graceful_notification);
}

/// BFD down: the session goes at once with Cease / BFD Down (RFC 9384), counted, and the
/// connect retry starts; when no connection exists it changes nothing.
#[test]
fn bfd_down_ends_the_session_at_once() {
    let mut h = H::new(cfg());
    h.ev(Event::Announce(vips()));
    assert_eq!(h.ev(Event::BfdDown), []);
    h.establish();
    let a = h.ev(Event::BfdDown);
    let n = Notification::new(code::CEASE, subcode::cease::BFD_DOWN);
    assert_eq!(
        a,
        [
            send(C1, Message::Notification(n.clone())),
            Action::Close { conn: C1 },
            Action::Down {
                reason: DownReason::BfdDown(n),
                was_established: true
            },
            state(State::Established, State::Active)
        ]
    );
    assert_eq!(
        wire(&a, Codec::FOUR_OCTET),
        [canon(&format!("{MARKER} 0015 03 060a"))]
    );
    assert_eq!(h.s.stats().bfd_down, 1);
    assert!(h.s.advertised().is_empty());
    assert_eq!(h.deadline(), Some(5));
    assert_eq!(
        DownReason::BfdDown(Notification::new(6, 10)).to_string(),
        "BFD session down (sent Cease/BFD Down)"
    );
}

/// After a restart, with graceful restart negotiated, End-of-RIB waits until the announce
/// policy has settled: the peer keeps our stale routes until then. Without the capability
/// on both sides there is nothing to wait for.
#[test]
fn end_of_rib_waits_for_the_settled_policy_after_a_restart() {
    let mut c = cfg();
    c.graceful_restart = Some(120);
    let mut h = H::new(c);
    let mut only4 = vips();
    only4.remove(&p("2001:db8:f::10/128"));
    h.ev(Event::Announce(only4));
    h.ev(Event::Settled(false));
    let a = h.establish();
    assert_eq!(wire(&a, Codec::FOUR_OCTET), [canon(VIP4_UPDATE)]);
    assert!(h.s.end_of_rib_held());
    // The other VIP comes back, then the policy says it has settled: End-of-RIB now.
    let a = h.ev(Event::Announce(vips()));
    assert_eq!(wire(&a, Codec::FOUR_OCTET), [canon(VIP6_UPDATE)]);
    let a = h.ev(Event::Settled(true));
    assert_eq!(wire(&a, Codec::FOUR_OCTET), [canon(EOR4), canon(EOR6)]);
    assert!(!h.s.end_of_rib_held());
    assert_eq!(h.ev(Event::Settled(true)), []);

    // FRR's OPEN without graceful restart: End-of-RIB at once, settled or not.
    let mut c = cfg();
    c.graceful_restart = Some(120);
    let mut h = H::new(c);
    h.ev(Event::Announce(vips()));
    h.ev(Event::Settled(false));
    h.ev(Event::ManualStart);
    h.connected(C1, true);
    h.recv(
        C1,
        &open_bytes(
            64512,
            30,
            "10.0.0.1",
            vec![
                Capability::Multiprotocol(Family::IPV6_UNICAST),
                Capability::Multiprotocol(Family::IPV4_UNICAST),
            ],
        ),
    );
    let a = h.recv(C1, &keepalive());
    let w = wire(&a, Codec::default());
    assert_eq!(w.len(), 4, "{w:?}");
    assert!(!h.s.end_of_rib_held());
}
