//! The daemon part: decides which VIPs to announce (per-VIP policy from VRRP roles and
//! service health on the bus, with a hold-down before announcing), runs the speaker, and
//! publishes its status and metrics. On shutdown the speaker withdraws first, then stops.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::instance::{Announce, IfaceConfig, InstanceStatus};
use super::interface::NetworkType;
use super::io::Speaker;
use super::neighbor::NbrState;
use super::packet::{Auth, AuthKey};
use crate::bus::{Bus, Event};
use crate::config::{AnnouncePolicy, Config, OspfAnnounce, OspfAuth, OspfConfig, OspfNetwork};
use crate::part::board::PartBoard;
use crate::part::{Applied, ApplyError, Env, Part};

/// Which VIPs should be announced now. Pure: events and time in, the set out.
#[derive(Debug, Default)]
pub struct Policy {
    announce: Vec<OspfAnnounce>,
    /// Since when each VIP's condition has held without interruption.
    since: HashMap<Ipv4Addr, Instant>,
    vrrp: HashMap<String, (Vec<IpAddr>, bool)>,
    healthy: HashSet<Ipv4Addr>,
}

impl Policy {
    pub fn new(announce: Vec<OspfAnnounce>) -> Self {
        Self {
            announce,
            ..Self::default()
        }
    }

    pub fn reconfigure(&mut self, announce: Vec<OspfAnnounce>) {
        self.announce = announce;
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
                vip: Some(IpAddr::V4(vip)),
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

    fn holds(&self, a: &OspfAnnounce) -> bool {
        match a.policy {
            AnnouncePolicy::Always => true,
            AnnouncePolicy::Healthy => self.healthy.contains(&a.vip),
            AnnouncePolicy::VrrpMaster => self
                .vrrp
                .values()
                .any(|(vips, master)| *master && vips.contains(&IpAddr::V4(a.vip))),
        }
    }

    /// The announcements due at `now`: a failing condition withdraws at once, a holding
    /// one announces after its hold-down.
    pub fn announced(&mut self, now: Instant) -> BTreeMap<Ipv4Addr, Announce> {
        let mut out = BTreeMap::new();
        let mut since = HashMap::new();
        for a in &self.announce {
            if !self.holds(a) {
                continue;
            }
            let start = *self.since.get(&a.vip).unwrap_or(&now);
            since.insert(a.vip, start);
            if now.saturating_duration_since(start) >= Duration::from_millis(a.hold_down_ms) {
                out.insert(a.vip, announce_of(a));
            }
        }
        self.since = since;
        out
    }
}

fn announce_of(a: &OspfAnnounce) -> Announce {
    if a.as_external {
        Announce::External {
            metric: a.metric,
            type2: a.metric_type == 2,
        }
    } else {
        Announce::Stub {
            metric: u16::try_from(a.metric).unwrap_or(u16::MAX),
        }
    }
}

/// The speaker's interface list from the config.
pub fn interfaces(cfg: &OspfConfig) -> Vec<IfaceConfig> {
    cfg.interfaces
        .iter()
        .map(|i| IfaceConfig {
            name: i.name.clone(),
            area: i.area,
            network: match i.network {
                OspfNetwork::Broadcast => NetworkType::Broadcast,
                OspfNetwork::PointToPoint => NetworkType::PointToPoint,
            },
            hello_interval: i.hello_interval,
            dead_interval: i.dead_interval,
            retransmit_interval: i.retransmit_interval,
            transmit_delay: 1,
            priority: i.priority,
            cost: i.cost,
            auth: match &i.auth {
                OspfAuth::None => Auth::Null,
                OspfAuth::Simple(p) => Auth::simple(p.as_bytes()),
                OspfAuth::Md5(keys) => Auth::Md5(
                    keys.iter()
                        .map(|(id, k)| AuthKey::new(*id, k.as_bytes()))
                        .collect(),
                ),
            },
        })
        .collect()
}

struct Running {
    cfg: OspfConfig,
    announce: watch::Sender<BTreeMap<Ipv4Addr, Announce>>,
    shutdown: watch::Sender<bool>,
    status: watch::Receiver<Option<InstanceStatus>>,
    task: tokio::task::JoinHandle<()>,
    /// Neighbours BFD found gone, to bring down at once.
    kills: mpsc::UnboundedSender<(String, Ipv4Addr)>,
}

fn start(cfg: &OspfConfig, initial: BTreeMap<Ipv4Addr, Announce>) -> Running {
    let (announce, announce_rx) = watch::channel(initial);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (status_tx, status) = watch::channel(None);
    let mut speaker = Speaker::new(cfg.router_id, interfaces(cfg));
    let kills = speaker.neighbor_kills();
    let task = tokio::spawn(speaker.run(announce_rx, shutdown_rx, status_tx));
    info!(router_id = %cfg.router_id, interfaces = cfg.interfaces.len(), "ospf started");
    Running {
        cfg: cfg.clone(),
        announce,
        shutdown,
        status,
        task,
        kills,
    }
}

impl Running {
    /// Graceful: the speaker flushes our LSAs and waits for acknowledgments.
    async fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.task).await;
    }
}

/// The OSPF part: `[ospf]` present in the config.
pub struct Ospf {
    policy: Policy,
    running: Running,
    bus: Bus,
    /// Neighbours (address, interface) BFD watches for us.
    bfd_watched: BTreeSet<(Ipv4Addr, String)>,
}

impl Part for Ospf {
    const NAME: &'static str = "ospf";
    /// The announce policy's hold-downs are checked this often.
    const TICK: Duration = Duration::from_millis(100);
    type Wake = bool;

    fn wanted(config: &Config) -> bool {
        config.ospf.is_some()
    }

    async fn start(env: Env, config: &Arc<Config>) -> Result<Self, ApplyError> {
        let cfg = config.ospf.clone().ok_or("no [ospf] section")?;
        let mut policy = Policy::new(cfg.announce.clone());
        let running = start(&cfg, policy.announced(Instant::now()));
        Ok(Ospf {
            policy,
            running,
            bus: env.bus,
            bfd_watched: BTreeSet::new(),
        })
    }

    async fn apply(&mut self, config: &Arc<Config>) -> Result<Applied, ApplyError> {
        let Some(new) = config.ospf.clone() else {
            warn!("ospf: section removed; withdrawing and stopping");
            return Ok(Applied::Retired);
        };
        self.policy.reconfigure(new.announce.clone());
        if new.router_id != self.running.cfg.router_id
            || new.interfaces != self.running.cfg.interfaces
        {
            // A new router ID or interface set is a new router: withdraw under the old
            // identity, then start over.
            self.running.stop().await;
            self.running = start(&new, self.policy.announced(Instant::now()));
        }
        self.running.cfg = new;
        Ok(Applied::Running)
    }

    async fn event(&mut self, event: &Event) {
        if let Event::BfdState {
            peer: IpAddr::V4(peer),
            interface,
            up: false,
        } = event
            && self.bfd_watched.contains(&(*peer, interface.clone()))
        {
            let _ = self.running.kills.send((interface.clone(), *peer));
        }
        self.policy.event(event);
    }

    async fn woken(&mut self, _changed: bool) {
        self.sync_bfd();
    }

    /// `true` when the speaker published a new status; `false` when it ended.
    async fn wake(&mut self) -> bool {
        if self.running.status.changed().await.is_ok() {
            true
        } else {
            std::future::pending().await
        }
    }

    async fn tick(&mut self) {
        let set = self.policy.announced(Instant::now());
        self.running.announce.send_if_modified(|current| {
            let changed = *current != set;
            if changed {
                info!(vips = ?set.keys().collect::<Vec<_>>(), "ospf: announced VIPs changed");
                *current = set;
            }
            changed
        });
    }

    fn publish(&mut self, board: &PartBoard) {
        if let Some(status) = self.running.status.borrow_and_update().as_ref() {
            board.set(serde_json::to_value(status).unwrap_or_default());
            board.set_metrics(status.metrics());
        }
    }

    async fn stop(mut self) {
        self.running.stop().await;
        for (peer, interface) in std::mem::take(&mut self.bfd_watched) {
            self.watch(peer, interface, false);
        }
    }
}

impl Ospf {
    /// Asks BFD to watch every neighbour at 2-Way or beyond on interfaces with `bfd = true`,
    /// and to stop watching the others (as FRR's `ip ospf bfd` registers neighbours).
    fn sync_bfd(&mut self) {
        let bfd_ifaces: BTreeSet<&str> = self
            .running
            .cfg
            .interfaces
            .iter()
            .filter(|i| i.bfd)
            .map(|i| i.name.as_str())
            .collect();
        let wanted: BTreeSet<(Ipv4Addr, String)> = match self.running.status.borrow().as_ref() {
            Some(status) => status
                .interfaces
                .iter()
                .filter(|i| bfd_ifaces.contains(i.name.as_str()))
                .flat_map(|i| {
                    i.neighbors
                        .iter()
                        .filter(|n| n.state >= NbrState::TwoWay)
                        .map(|n| (n.address, i.name.clone()))
                })
                .collect(),
            None => BTreeSet::new(),
        };
        for (peer, iface) in wanted.difference(&self.bfd_watched) {
            self.watch(*peer, iface.clone(), true);
        }
        for (peer, iface) in self.bfd_watched.difference(&wanted) {
            self.watch(*peer, iface.clone(), false);
        }
        self.bfd_watched = wanted;
    }

    fn watch(&self, peer: Ipv4Addr, interface: String, watch: bool) {
        self.bus.publish(Event::BfdWatch {
            client: "ospf",
            peer: IpAddr::V4(peer),
            interface,
            watch,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(vip: u8, policy: AnnouncePolicy, hold_down_ms: u64) -> OspfAnnounce {
        OspfAnnounce {
            vip: Ipv4Addr::new(203, 0, 113, vip),
            policy,
            as_external: false,
            metric: 10,
            metric_type: 2,
            hold_down_ms,
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
        let v = |n| Ipv4Addr::new(203, 0, 113, n);
        assert_eq!(
            p.announced(t0).keys().copied().collect::<Vec<_>>(),
            vec![v(3)]
        );
        p.event(&Event::VrrpRole {
            instance: "vip51".into(),
            vips: vec![IpAddr::V4(v(1))],
            master: true,
        });
        p.event(&Event::ServiceHealth {
            service: "web".into(),
            vip: Some(IpAddr::V4(v(2))),
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
            vip: Some(IpAddr::V4(v(2))),
            healthy: 0,
            total: 3,
        });
        p.event(&Event::VrrpRole {
            instance: "vip51".into(),
            vips: vec![IpAddr::V4(v(1))],
            master: false,
        });
        let t4 = t3 + Duration::from_millis(100);
        assert_eq!(
            p.announced(t4).keys().copied().collect::<Vec<_>>(),
            vec![v(3)]
        );
        p.event(&Event::ServiceHealth {
            service: "web".into(),
            vip: Some(IpAddr::V4(v(2))),
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
}
