//! The daemon part: decides which VIPs to announce (per-VIP policy from VRRP roles and
//! service health on the bus, with a hold-down before announcing), runs the speaker, and
//! publishes its status and metrics. On shutdown the speaker withdraws first, then stops.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use std::path::PathBuf;

use super::instance::{Announce, GrConfig, IfaceConfig, InstanceStatus, Limits};
use super::interface::NetworkType;
use super::io::Speaker;
use super::neighbor::NbrState;
use super::packet::{Auth, AuthKey};
use crate::announce::{Entry, Policy};
use crate::bus::{Bus, Event};
use crate::config::{Config, OspfAnnounce, OspfAuth, OspfConfig, OspfNetwork};
use crate::part::board::PartBoard;
use crate::part::{Applied, ApplyError, Env, Part};

/// The announce policy's entries: each VIP with its condition and how OSPF announces it.
fn entries(cfg: &OspfConfig) -> Vec<Entry<Announce>> {
    cfg.announce
        .iter()
        .map(|a| Entry {
            vip: IpAddr::V4(a.vip),
            policy: a.policy,
            hold_down: Duration::from_millis(a.hold_down_ms),
            payload: announce_of(a, a.metric),
            standby: a.standby_metric.map(|m| announce_of(a, m)),
        })
        .collect()
}

/// The OSPF speaker's set from the policy's (only IPv4 VIPs are OSPFv2's).
fn v4_set(set: BTreeMap<IpAddr, Announce>) -> BTreeMap<Ipv4Addr, Announce> {
    set.into_iter()
        .filter_map(|(vip, a)| match vip {
            IpAddr::V4(v) => Some((v, a)),
            IpAddr::V6(_) => None,
        })
        .collect()
}

fn announce_of(a: &OspfAnnounce, metric: u32) -> Announce {
    if a.as_external {
        Announce::External {
            metric,
            type2: a.metric_type == 2,
        }
    } else {
        Announce::Stub {
            metric: u16::try_from(metric).unwrap_or(u16::MAX),
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
    /// Set before a stop that is a planned graceful restart.
    restart_on_stop: watch::Sender<bool>,
}

/// The graceful restart settings of `[ospf]`.
fn gr_config(cfg: &OspfConfig) -> GrConfig {
    GrConfig {
        restart: cfg.graceful_restart,
        grace_period: cfg.grace_period,
        helper: cfg.gr_helper,
    }
}

/// Where the speaker notes across restarts that it runs with graceful restart.
pub fn state_file(node: &str) -> PathBuf {
    PathBuf::from("/run/portier")
        .join(node)
        .join("ospf")
        .join("restart.state")
}

fn start(cfg: &OspfConfig, initial: BTreeMap<Ipv4Addr, Announce>, state_file: PathBuf) -> Running {
    let (announce, announce_rx) = watch::channel(initial);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (status_tx, status) = watch::channel(None);
    let mut speaker = Speaker::new(cfg.router_id, interfaces(cfg));
    speaker.set_limits(Limits::from(cfg));
    let kills = speaker.neighbor_kills();
    speaker.set_graceful_restart(gr_config(cfg), Some(state_file));
    let restart_on_stop = speaker.restart_on_stop();
    let task = tokio::spawn(speaker.run(announce_rx, shutdown_rx, status_tx));
    info!(router_id = %cfg.router_id, interfaces = cfg.interfaces.len(), "ospf started");
    Running {
        cfg: cfg.clone(),
        announce,
        shutdown,
        status,
        task,
        kills,
        restart_on_stop,
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
    policy: Policy<Announce>,
    running: Running,
    bus: Bus,
    /// Neighbours (address, interface) BFD watches for us.
    bfd_watched: BTreeSet<(Ipv4Addr, String)>,
    state_file: PathBuf,
    /// The process stops but the dataplane stays: a stop is a planned graceful restart
    /// (with `graceful_restart`), not a withdrawal.
    dataplane_stays: bool,
    /// The `[ospf]` section went away: the stop withdraws.
    retiring: bool,
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
        let mut policy = Policy::new(entries(&cfg));
        let state_file = state_file(&config.node.name);
        let running = start(
            &cfg,
            v4_set(policy.announced(Instant::now())),
            state_file.clone(),
        );
        Ok(Ospf {
            policy,
            running,
            bus: env.bus,
            bfd_watched: BTreeSet::new(),
            state_file,
            dataplane_stays: !env.teardown_on_exit,
            retiring: false,
        })
    }

    async fn apply(&mut self, config: &Arc<Config>) -> Result<Applied, ApplyError> {
        let Some(new) = config.ospf.clone() else {
            warn!("ospf: section removed; withdrawing and stopping");
            self.retiring = true;
            return Ok(Applied::Retired);
        };
        self.policy.reconfigure(entries(&new));
        if new.router_id != self.running.cfg.router_id
            || new.interfaces != self.running.cfg.interfaces
            || Limits::from(&new) != Limits::from(&self.running.cfg)
        {
            // A new router ID or interface set is a new router: withdraw under the old
            // identity, then start over.
            self.running.stop().await;
            self.running = start(
                &new,
                v4_set(self.policy.announced(Instant::now())),
                self.state_file.clone(),
            );
        } else if new.graceful_restart != self.running.cfg.graceful_restart
            || new.grace_period != self.running.cfg.grace_period
            || new.gr_helper != self.running.cfg.gr_helper
        {
            // Takes effect at the next stop (or start): the speaker reads them then.
            warn!("ospf: graceful restart settings change at the next restart of portier");
        }
        self.running.cfg = new;
        self.push_announcements();
        Ok(Applied::Running)
    }

    async fn event(&mut self, event: &Event) {
        if let Event::BfdState {
            peer: IpAddr::V4(peer),
            interface,
            up: false,
            admin: false,
        } = event
            && self.bfd_watched.contains(&(*peer, interface.clone()))
        {
            let _ = self.running.kills.send((interface.clone(), *peer));
        }
        self.policy.event(event);
        // A condition that changed acts now, not at the next tick (which is for hold-downs).
        self.push_announcements();
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
        self.push_announcements();
    }

    fn publish(&mut self, board: &PartBoard) {
        if let Some(status) = self.running.status.borrow_and_update().as_ref() {
            board.set(serde_json::to_value(status).unwrap_or_default());
            board.set_metrics(status.metrics());
        }
    }

    async fn stop(mut self) {
        if self.running.cfg.graceful_restart && self.dataplane_stays && !self.retiring {
            let _ = self.running.restart_on_stop.send(true);
        }
        self.running.stop().await;
        for (peer, interface) in std::mem::take(&mut self.bfd_watched) {
            self.watch(peer, interface, false);
        }
    }
}

impl Ospf {
    /// Hands the policy's current set to the speaker if it changed.
    fn push_announcements(&mut self) {
        let set = v4_set(self.policy.announced(Instant::now()));
        self.running.announce.send_if_modified(|current| {
            let changed = *current != set;
            if changed {
                info!(vips = ?set.keys().collect::<Vec<_>>(), "ospf: announced VIPs changed");
                *current = set;
            }
            changed
        });
    }

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
