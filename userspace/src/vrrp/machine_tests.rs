//! Replays of event sequences through the state machine, one virtual clock per test.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::*;

const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11));
const PEER_LOW: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
const PEER_HIGH: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 12));

fn params(priority: u8) -> Params {
    Params {
        version: Version::V3,
        vrid: 51,
        priority,
        interval_cs: 100,
        preempt: true,
        preempt_delay: Duration::ZERO,
        primary: ME,
        unicast_peers: Vec::new(),
    }
}

fn advert(priority: u8, interval_cs: u16) -> Advert {
    Advert {
        version: Version::V3,
        vrid: 51,
        priority,
        interval_cs,
        addresses: vec!["203.0.113.10".parse().unwrap()],
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn to(state: State) -> impl Fn(&Action) -> bool {
    move |a| matches!(a, Action::Transition { to, .. } if *to == state)
}

fn reason_of(actions: &[Action]) -> Option<Reason> {
    actions.iter().find_map(|a| match a {
        Action::Transition { reason, .. } => Some(*reason),
        _ => None,
    })
}

/// Runs the machine's timers from `from` to `until` in 1 ms steps, returning what happened
/// and when (relative to `t0`).
fn run_timers(
    m: &mut Machine,
    t0: Instant,
    from: Duration,
    until: Duration,
) -> Vec<(Duration, Action)> {
    let mut log = Vec::new();
    let mut t = from;
    while t <= until {
        for action in m.tick(t0 + t) {
            log.push((t, action));
        }
        t += ms(1);
    }
    log
}

#[test]
fn timers_follow_rfc_formulas() {
    let m = Machine::new(params(100));
    // Skew = (256 - 100) * 1 s / 256 = 609.375 ms.
    assert_eq!(m.skew(), Duration::from_micros(609_375));
    assert_eq!(m.master_down_interval(), Duration::from_micros(3_609_375));
    let m = Machine::new(params(254));
    assert_eq!(m.skew(), Duration::from_nanos(7_812_500)); // 2/256 s
}

#[test]
fn non_owner_starts_backup_then_takes_over_after_master_down() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(100));
    let actions = m.startup(t0);
    assert_eq!(
        actions,
        vec![Action::Transition {
            from: State::Initialize,
            to: State::Backup,
            reason: Reason::Startup
        }]
    );
    let log = run_timers(&mut m, t0, ms(0), ms(5_700));
    // Master at ceil(3609.375 ms) in 1 ms steps, then an advert each second.
    assert_eq!(log[0].0, ms(3_610));
    assert!(to(State::Master)(&log[0].1));
    assert_eq!(log[1].1, Action::SendAdvert { priority: 100 });
    assert_eq!(log[2].1, Action::TakeOver);
    let adverts: Vec<Duration> = log[3..].iter().map(|(t, _)| *t).collect();
    assert_eq!(adverts, vec![ms(4_610), ms(5_610)]);
}

#[test]
fn owner_starts_master_and_ignores_others() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(OWNER_PRIORITY));
    let actions = m.startup(t0);
    assert_eq!(reason_of(&actions), Some(Reason::StartupOwner));
    assert_eq!(m.state(), State::Master);
    let rx = Received {
        src: PEER_HIGH,
        dst: "224.0.0.18".parse().unwrap(),
        advert: advert(200, 100),
    };
    assert_eq!(m.check(&rx), Err(Drop::Owner));
}

#[test]
fn backup_stays_while_master_advertises_and_learns_its_interval() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(100));
    m.startup(t0);
    for i in 0..10 {
        assert!(m.tick(t0 + ms(i * 1000)).is_empty());
        assert!(
            m.receive(t0 + ms(i * 1000), PEER_HIGH, &advert(150, 100))
                .is_empty()
        );
    }
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.master(), Some(PEER_HIGH));
    // The master switches to 50 cs: Master_Down becomes 1.5 s + skew.
    m.receive(t0 + ms(10_000), PEER_HIGH, &advert(150, 50));
    assert_eq!(m.master_interval_cs(), 50);
    assert_eq!(
        m.next_deadline(),
        Some(t0 + ms(10_000) + ms(1_500) + Duration::from_nanos(304_687_500))
    );
}

#[test]
fn v2_does_not_learn_the_interval_and_checks_it() {
    let mut p = params(100);
    p.version = Version::V2;
    let t0 = Instant::now();
    let mut m = Machine::new(p);
    m.startup(t0);
    let mut a = advert(150, 100);
    a.version = Version::V2;
    m.receive(t0, PEER_HIGH, &a);
    assert_eq!(m.master_interval_cs(), 100);
    a.interval_cs = 200;
    let rx = Received {
        src: PEER_HIGH,
        dst: "224.0.0.18".parse().unwrap(),
        advert: a,
    };
    assert_eq!(m.check(&rx), Err(Drop::Interval));
}

#[test]
fn instance_checks() {
    let m = Machine::new(params(100));
    let good = Received {
        src: PEER_HIGH,
        dst: "224.0.0.18".parse().unwrap(),
        advert: advert(150, 100),
    };
    assert_eq!(m.check(&good), Ok(()));
    let mut rx = good.clone();
    rx.advert.vrid = 52;
    assert_eq!(m.check(&rx), Err(Drop::Vrid));
    let mut rx = good.clone();
    rx.advert.version = Version::V2;
    assert_eq!(m.check(&rx), Err(Drop::Version));
    let mut rx = good.clone();
    rx.src = "fe80::1".parse().unwrap();
    assert_eq!(m.check(&rx), Err(Drop::Family));
}

#[test]
fn with_unicast_peers_only_listed_sources_are_heard() {
    let mut p = params(100);
    p.unicast_peers = vec![PEER_HIGH];
    let m = Machine::new(p);
    let listed = Received {
        src: PEER_HIGH,
        dst: ME,
        advert: advert(150, 100),
    };
    assert_eq!(m.check(&listed), Ok(()));
    let stranger = Received {
        src: PEER_LOW,
        ..listed.clone()
    };
    assert_eq!(m.check(&stranger), Err(Drop::UnicastPeer));
    // Multicast adverts from a listed peer are fine too: the source is what counts.
    let multicast = Received {
        dst: "224.0.0.18".parse().unwrap(),
        ..listed
    };
    assert_eq!(m.check(&multicast), Ok(()));
    // Without peers configured, anyone on the link is heard.
    assert_eq!(Machine::new(params(100)).check(&stranger), Ok(()));
}

#[test]
fn priority_zero_makes_backup_take_over_after_skew() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(100));
    m.startup(t0);
    m.receive(t0 + ms(500), PEER_HIGH, &advert(150, 100));
    m.receive(t0 + ms(1_000), PEER_HIGH, &advert(0, 100));
    let log = run_timers(&mut m, t0, ms(1_000), ms(2_000));
    // Skew for priority 100 is 609.375 ms.
    assert_eq!(log[0].0, ms(1_610));
    assert!(matches!(
        log[0].1,
        Action::Transition {
            reason: Reason::MasterResigned,
            ..
        }
    ));
}

#[test]
fn preempt_takes_over_from_a_lower_master() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(150));
    m.startup(t0);
    // Adverts of a priority-100 master keep coming but do not reset the timer.
    let mut took_over = None;
    for i in 0..100u64 {
        let now = t0 + ms(i * 100);
        if i % 10 == 0 {
            m.receive(now, PEER_HIGH, &advert(100, 100));
        }
        if !m.tick(now).is_empty() {
            took_over = Some(i * 100);
            break;
        }
    }
    // 3 s + (256 - 150) / 256 s = 3.414 s, seen at the next 100 ms step.
    assert_eq!(took_over, Some(3_500));
    assert_eq!(m.state(), State::Master);
}

#[test]
fn without_preempt_a_lower_master_is_kept() {
    let t0 = Instant::now();
    let mut p = params(150);
    p.preempt = false;
    let mut m = Machine::new(p);
    m.startup(t0);
    for i in 0..100u64 {
        let now = t0 + ms(i * 100);
        if i % 10 == 0 {
            m.receive(now, PEER_HIGH, &advert(100, 100));
        }
        assert!(m.tick(now).is_empty(), "took over at {} ms", i * 100);
    }
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn preempt_delay_holds_off_preemption_after_startup() {
    let t0 = Instant::now();
    let mut p = params(150);
    p.preempt_delay = ms(5_000);
    let mut m = Machine::new(p);
    m.startup(t0);
    let mut took_over = None;
    for i in 0..200u64 {
        let now = t0 + ms(i * 100);
        if i % 10 == 0 {
            m.receive(now, PEER_HIGH, &advert(100, 100));
        }
        if !m.tick(now).is_empty() {
            took_over = Some(i * 100);
            break;
        }
    }
    // The last accepted advert is at 4 s (inside the delay); 3.414 s after it, we preempt.
    assert_eq!(took_over, Some(7_500));
}

#[test]
fn master_yields_to_higher_priority_and_to_equal_with_higher_address() {
    let t0 = Instant::now();
    for (from, priority, yields) in [
        (PEER_LOW, 150, true),
        (PEER_HIGH, 100, true), // equal priority, 10.0.0.12 > 10.0.0.11
        (PEER_LOW, 100, false), // equal priority, lower address
        (PEER_HIGH, 50, false),
    ] {
        let mut m = Machine::new(params(100));
        m.startup(t0);
        m.tick(t0 + ms(4_000));
        assert_eq!(m.state(), State::Master);
        let actions = m.receive(t0 + ms(4_100), from, &advert(priority, 200));
        if yields {
            assert_eq!(
                actions,
                vec![
                    Action::Transition {
                        from: State::Master,
                        to: State::Backup,
                        reason: Reason::HigherPriority { from, priority }
                    },
                    Action::Release
                ]
            );
            assert_eq!(m.master_interval_cs(), 200, "learned from the new master");
            assert_eq!(m.master(), Some(from));
        } else {
            assert!(actions.is_empty());
            assert_eq!(m.state(), State::Master);
        }
    }
}

#[test]
fn master_answers_a_resigning_peer_at_once() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(100));
    m.startup(t0);
    m.tick(t0 + ms(4_000));
    let actions = m.receive(t0 + ms(4_300), PEER_LOW, &advert(0, 100));
    assert_eq!(actions, vec![Action::SendAdvert { priority: 100 }]);
    assert_eq!(m.next_deadline(), Some(t0 + ms(5_300)));
}

#[test]
fn shutdown_sends_priority_zero_then_releases() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(100));
    m.startup(t0);
    assert_eq!(
        m.shutdown(),
        vec![Action::Transition {
            from: State::Backup,
            to: State::Initialize,
            reason: Reason::Shutdown
        }]
    );
    m.startup(t0);
    m.tick(t0 + ms(4_000));
    assert_eq!(
        m.shutdown(),
        vec![
            Action::Transition {
                from: State::Master,
                to: State::Initialize,
                reason: Reason::Shutdown
            },
            Action::SendAdvert { priority: 0 },
            Action::Release
        ]
    );
    assert!(m.shutdown().is_empty());
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn tracked_priority_changes_what_the_master_advertises() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(150));
    m.startup(t0);
    m.tick(t0 + ms(4_000));
    m.set_priority(90);
    assert_eq!(
        m.tick(t0 + ms(5_000)),
        vec![Action::SendAdvert { priority: 90 }]
    );
    m.set_priority(0);
    assert_eq!(m.params().priority, 1, "0 is reserved for resigning");
}

/// Two machines on a lossless virtual wire; `alive[i]` false drops everything node i sends.
struct Wire {
    nodes: Vec<(IpAddr, Machine)>,
    alive: Vec<bool>,
}

impl Wire {
    fn step(&mut self, now: Instant) {
        let mut sent = Vec::new();
        for (i, (src, m)) in self.nodes.iter_mut().enumerate() {
            for action in m.tick(now) {
                if let Action::SendAdvert { priority } = action {
                    sent.push((i, *src, priority));
                }
            }
        }
        self.deliver(now, sent);
    }

    fn deliver(&mut self, now: Instant, mut sent: Vec<(usize, IpAddr, u8)>) {
        while let Some((from, src, priority)) = sent.pop() {
            if !self.alive[from] {
                continue;
            }
            for (i, (_, m)) in self.nodes.iter_mut().enumerate() {
                if i == from || !self.alive[i] {
                    continue;
                }
                for action in m.receive(now, src, &advert(priority, 100)) {
                    if let Action::SendAdvert { priority } = action {
                        sent.push((i, self_addr(i), priority));
                    }
                }
            }
        }
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.alive[i] && self.nodes[i].1.state() == State::Master)
            .collect()
    }
}

fn self_addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11 + i as u8))
}

fn pair(t0: Instant) -> Wire {
    let nodes = [150, 100]
        .into_iter()
        .enumerate()
        .map(|(i, priority)| {
            let mut p = params(priority);
            p.primary = self_addr(i);
            let mut m = Machine::new(p);
            m.startup(t0);
            (self_addr(i), m)
        })
        .collect();
    Wire {
        nodes,
        alive: vec![true, true],
    }
}

#[test]
fn pair_elects_one_master_and_fails_over_within_three_intervals_and_skew() {
    let t0 = Instant::now();
    let mut wire = pair(t0);
    let mut now = t0;
    for _ in 0..10_000 {
        now += ms(1);
        wire.step(now);
    }
    assert_eq!(wire.masters(), vec![0]);
    let killed = now;
    wire.alive[0] = false;
    while wire.masters().is_empty() {
        now += ms(1);
        wire.step(now);
    }
    assert_eq!(wire.masters(), vec![1]);
    let gap = now - killed;
    // Master_Down_Interval of priority 100 is 3.609 s; the last advert was < 1 s before.
    assert!(gap <= ms(3_610), "{gap:?}");
    assert!(gap > ms(2_600), "{gap:?}");

    // The higher node returns and preempts: exactly one master throughout, node 0 at the end.
    wire.alive[0] = true;
    let restarted = &mut wire.nodes[0].1;
    restarted.shutdown();
    restarted.startup(now);
    for _ in 0..6_000 {
        now += ms(1);
        wire.step(now);
        assert!(wire.masters().len() <= 1, "two masters at once");
    }
    assert_eq!(wire.masters(), vec![0]);
}

#[test]
fn pair_hands_over_within_skew_on_clean_shutdown() {
    let t0 = Instant::now();
    let mut wire = pair(t0);
    let mut now = t0;
    for _ in 0..10_000 {
        now += ms(1);
        wire.step(now);
    }
    let actions = wire.nodes[0].1.shutdown();
    let sent: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::SendAdvert { priority } => Some((0, self_addr(0), *priority)),
            _ => None,
        })
        .collect();
    wire.deliver(now, sent);
    wire.alive[0] = false;
    let stopped = now;
    while wire.masters().is_empty() {
        now += ms(1);
        wire.step(now);
    }
    // Skew of priority 100 with a 1 s interval: 609.375 ms.
    assert_eq!(now - stopped, ms(610));
}

#[test]
fn link_down_on_master_releases_without_advert_and_stays_silent() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(100));
    m.startup(t0);
    run_timers(&mut m, t0, ms(0), ms(4_000));
    assert_eq!(m.state(), State::Master);

    let actions = m.fault(Reason::InterfaceDown);
    assert_eq!(
        actions,
        vec![
            Action::Transition {
                from: State::Master,
                to: State::Fault,
                reason: Reason::InterfaceDown
            },
            Action::Release
        ]
    );
    assert_eq!(m.state(), State::Fault);
    assert_eq!(m.next_deadline(), None);
    // Neither timers nor adverts (not even a lower priority's) move a faulty instance.
    assert!(run_timers(&mut m, t0, ms(4_001), ms(20_000)).is_empty());
    assert!(
        m.receive(t0 + ms(20_000), PEER_LOW, &advert(50, 100))
            .is_empty()
    );
    assert!(
        m.receive(t0 + ms(20_000), PEER_LOW, &advert(0, 100))
            .is_empty()
    );
    assert_eq!(m.state(), State::Fault);
    // A second report of the same fault changes nothing.
    assert!(m.fault(Reason::AddressLost).is_empty());
}

#[test]
fn link_down_on_backup_is_a_fault_without_release() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(100));
    m.startup(t0);
    m.receive(t0 + ms(100), PEER_HIGH, &advert(150, 100));
    let actions = m.fault(Reason::AddressLost);
    assert_eq!(actions.len(), 1);
    assert_eq!(reason_of(&actions), Some(Reason::AddressLost));
    assert!(to(State::Fault)(&actions[0]));
    assert_eq!(m.master(), None);
}

#[test]
fn link_up_restarts_as_backup_then_takes_over_after_master_down() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(100));
    m.startup(t0);
    m.fault(Reason::InterfaceDown);
    // Recovering is only for a faulty instance.
    let mut healthy = Machine::new(params(100));
    healthy.startup(t0);
    assert!(healthy.recover(t0).is_empty());

    let back = t0 + ms(10_000);
    let actions = m.recover(back);
    assert_eq!(
        actions,
        vec![Action::Transition {
            from: State::Fault,
            to: State::Backup,
            reason: Reason::InterfaceUp
        }]
    );
    // A master heard in time keeps us backup; silence makes us master after master-down.
    assert_eq!(m.next_deadline(), Some(back + m.master_down_interval()));
    let log = run_timers(&mut m, back, ms(0), ms(3_700));
    assert_eq!(log[0].0, ms(3_610));
    assert!(to(State::Master)(&log[0].1));
    assert_eq!(reason_of(&[log[0].1.clone()]), Some(Reason::MasterDown));
}

#[test]
fn owner_recovers_straight_to_master() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(OWNER_PRIORITY));
    m.startup(t0);
    m.fault(Reason::InterfaceDown);
    let actions = m.recover(t0 + ms(500));
    assert_eq!(reason_of(&actions), Some(Reason::InterfaceUp));
    assert_eq!(m.state(), State::Master);
    assert!(actions.contains(&Action::TakeOver));
    assert!(actions.contains(&Action::SendAdvert { priority: 255 }));
}

#[test]
fn preempt_delay_runs_again_after_a_fault() {
    let t0 = Instant::now();
    let mut p = params(200);
    p.preempt_delay = ms(5_000);
    let mut m = Machine::new(p);
    m.startup(t0);
    m.fault(Reason::InterfaceDown);
    let back = t0 + ms(60_000);
    m.recover(back);
    // Within the delay after recovery a lower-priority master is still accepted.
    m.receive(back + ms(1_000), PEER_LOW, &advert(100, 100));
    assert_eq!(m.master(), Some(PEER_LOW));
}

#[test]
fn shutdown_in_fault_sends_nothing() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(100));
    m.startup(t0);
    run_timers(&mut m, t0, ms(0), ms(4_000));
    m.fault(Reason::InterfaceDown);
    let actions = m.shutdown();
    assert_eq!(actions.len(), 1);
    assert_eq!(reason_of(&actions), Some(Reason::Shutdown));
    assert_eq!(m.state(), State::Initialize);
}

#[test]
fn a_new_address_after_a_fault_breaks_ties() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(100));
    m.startup(t0);
    run_timers(&mut m, t0, ms(0), ms(4_000));
    m.fault(Reason::AddressLost);
    // Back with an address above the peer's: an equal-priority master now yields to us...
    m.set_primary("10.0.0.13".parse().unwrap());
    m.recover(t0 + ms(5_000));
    run_timers(&mut m, t0 + ms(5_000), ms(0), ms(4_000));
    assert_eq!(m.state(), State::Master);
    assert!(
        m.receive(t0 + ms(9_100), PEER_HIGH, &advert(100, 100))
            .is_empty()
    );
    assert_eq!(m.state(), State::Master);
    // ...where with the old one (10.0.0.11 < 10.0.0.12) it would have taken over.
    m.set_primary(ME);
    let actions = m.receive(t0 + ms(9_200), PEER_HIGH, &advert(100, 100));
    assert!(actions.iter().any(to(State::Backup)));
}

#[test]
fn a_restarted_master_resumes_at_once_and_yields_to_a_higher_priority() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(150));
    let actions = m.resume(t0);
    assert_eq!(m.state(), State::Master);
    assert_eq!(reason_of(&actions), Some(Reason::Resumed));
    assert!(actions.contains(&Action::SendAdvert { priority: 150 }));
    assert!(actions.contains(&Action::TakeOver));
    // Only from Initialize: a running instance is not thrown back.
    assert!(m.resume(t0 + ms(10)).is_empty());
    // A higher priority master than us still wins, as after any start.
    let back = m.receive(t0 + ms(20), PEER_HIGH, &advert(200, 100));
    assert_eq!(m.state(), State::Backup, "{back:?}");
    assert!(back.contains(&Action::Release));
}
