//! When a VIP is announced to the routers: one policy for every routing part (OSPF, BGP), so
//! that a VIP is announced exactly while this node can serve it, whichever protocol carries
//! it. Pure: bus events and time in, the announced set out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::bus::Event;
use crate::config::AnnouncePolicy;

/// One VIP to announce under a condition, with what the routing part needs to announce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<T> {
    pub vip: IpAddr,
    pub policy: AnnouncePolicy,
    /// How long the condition must hold before (re-)announcing; withdrawal is at once.
    pub hold_down: Duration,
    pub payload: T,
    /// Announced instead while the condition does not hold (a worse metric: standby).
    pub standby: Option<T>,
}

/// Which VIPs should be announced now.
#[derive(Debug)]
pub struct Policy<T> {
    entries: Vec<Entry<T>>,
    /// Since when each VIP's condition has held without interruption.
    since: HashMap<IpAddr, Instant>,
    vrrp: HashMap<String, (Vec<IpAddr>, bool)>,
    healthy: HashSet<IpAddr>,
}

impl<T: Clone> Policy<T> {
    pub fn new(entries: Vec<Entry<T>>) -> Self {
        Self {
            entries,
            since: HashMap::new(),
            vrrp: HashMap::new(),
            healthy: HashSet::new(),
        }
    }

    pub fn reconfigure(&mut self, entries: Vec<Entry<T>>) {
        self.entries = entries;
    }

    pub fn event(&mut self, event: &Event) {
        match event {
            Event::VrrpRole {
                instance,
                vips,
                master,
            } => {
                self.vrrp.insert(instance.clone(), (vips.clone(), *master));
            }
            Event::ServiceHealth {
                vip: Some(vip),
                healthy,
                ..
            } => {
                if *healthy > 0 {
                    self.healthy.insert(*vip);
                } else {
                    self.healthy.remove(vip);
                }
            }
            _ => {}
        }
    }

    fn holds(&self, e: &Entry<T>) -> bool {
        match e.policy {
            AnnouncePolicy::Always => true,
            AnnouncePolicy::Healthy => self.healthy.contains(&e.vip),
            AnnouncePolicy::VrrpMaster => self
                .vrrp
                .values()
                .any(|(vips, master)| *master && vips.contains(&e.vip)),
        }
    }

    /// The announcements due at `now`: a failing condition withdraws at once, a holding
    /// one announces after its hold-down.
    pub fn announced(&mut self, now: Instant) -> BTreeMap<IpAddr, T> {
        let mut out = BTreeMap::new();
        let mut since = HashMap::new();
        for e in &self.entries {
            if !self.holds(e) {
                if let Some(standby) = &e.standby {
                    out.insert(e.vip, standby.clone());
                }
                continue;
            }
            let start = *self.since.get(&e.vip).unwrap_or(&now);
            since.insert(e.vip, start);
            if now.saturating_duration_since(start) >= e.hold_down {
                out.insert(e.vip, e.payload.clone());
            } else if let Some(standby) = &e.standby {
                out.insert(e.vip, standby.clone());
            }
        }
        self.since = since;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ann(vip: u8, policy: AnnouncePolicy, hold_down_ms: u64) -> Entry<()> {
        Entry {
            vip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, vip)),
            policy,
            hold_down: Duration::from_millis(hold_down_ms),
            payload: (),
            standby: None,
        }
    }

    #[test]
    fn vrrp_master_health_and_hold_down() {
        let t0 = Instant::now();
        let mut p = Policy::new(vec![
            ann(1, AnnouncePolicy::VrrpMaster, 0),
            ann(2, AnnouncePolicy::Healthy, 2000),
            ann(3, AnnouncePolicy::Always, 0),
        ]);
        let v = |n| IpAddr::V4(Ipv4Addr::new(203, 0, 113, n));
        assert_eq!(
            p.announced(t0).keys().copied().collect::<Vec<_>>(),
            vec![v(3)]
        );
        p.event(&Event::VrrpRole {
            instance: "vip51".into(),
            vips: vec![v(1)],
            master: true,
        });
        p.event(&Event::ServiceHealth {
            service: "web".into(),
            vip: Some(v(2)),
            healthy: 2,
            total: 3,
        });
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            p.announced(t1).keys().copied().collect::<Vec<_>>(),
            vec![v(1), v(3)]
        );
        let t2 = t1 + Duration::from_millis(1999);
        assert!(!p.announced(t2).contains_key(&v(2)));
        let t3 = t1 + Duration::from_millis(2000);
        assert!(p.announced(t3).contains_key(&v(2)));
        // Failing conditions withdraw at once; coming back restarts the hold-down.
        p.event(&Event::ServiceHealth {
            service: "web".into(),
            vip: Some(v(2)),
            healthy: 0,
            total: 3,
        });
        p.event(&Event::VrrpRole {
            instance: "vip51".into(),
            vips: vec![v(1)],
            master: false,
        });
        let t4 = t3 + Duration::from_millis(100);
        assert_eq!(
            p.announced(t4).keys().copied().collect::<Vec<_>>(),
            vec![v(3)]
        );
        p.event(&Event::ServiceHealth {
            service: "web".into(),
            vip: Some(v(2)),
            healthy: 1,
            total: 3,
        });
        assert!(
            !p.announced(t4 + Duration::from_millis(100))
                .contains_key(&v(2))
        );
        assert!(
            p.announced(t4 + Duration::from_millis(2100))
                .contains_key(&v(2))
        );
    }

    #[test]
    fn a_standby_announcement_covers_the_time_the_condition_does_not_hold() {
        let t0 = Instant::now();
        let vip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
        let mut p = Policy::new(vec![Entry {
            vip,
            policy: AnnouncePolicy::VrrpMaster,
            hold_down: Duration::from_millis(500),
            payload: 10u32,
            standby: Some(1000u32),
        }]);
        assert_eq!(p.announced(t0).get(&vip), Some(&1000));
        p.event(&Event::VrrpRole {
            instance: "vip51".into(),
            vips: vec![vip],
            master: true,
        });
        // During the hold-down the standby stays; then the real one.
        assert_eq!(p.announced(t0).get(&vip), Some(&1000));
        assert_eq!(
            p.announced(t0 + Duration::from_millis(500)).get(&vip),
            Some(&10)
        );
    }
}
