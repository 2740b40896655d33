//! The BGP part: runs the speaker for `[bgp]`, announcing each VIP while its policy holds
//! (the same `announce::Policy` as OSPF: VRRP mastership, service health, always, with
//! hold-down), and publishes the peers' state. A clean stop ends every session with Cease /
//! Administrative Shutdown and a shutdown communication (RFC 8203).

use crate::labels;
use crate::part::prometheus::Metrics;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;

use super::{
    BfdStates, Community, LocalConfig, PeerConfig, Prefix, RouteAttrs, Routes, Speaker,
    SpeakerStatus, State,
};
use crate::announce::{Entry, Policy};
use crate::bus::{Bus, Event};
use crate::config::{BgpAttrs, BgpConfig, Config};
use crate::part::board::PartBoard;
use crate::part::{Applied, ApplyError, Command, CommandError, Env, Part, Reply};

/// What peers read in our Cease when the daemon stops or the section changes.
const STOP_MESSAGE: &str = "portier stopping";
const RECONFIGURE_MESSAGE: &str = "portier reconfigured";
/// After a start with graceful restart, how long our End-of-RIB may wait at most for every
/// configured VIP to be announced again (never longer than the restart time): peers keep
/// our stale routes meanwhile, and the XDP dataplane still forwards what they send.
const SETTLE_MAX: Duration = Duration::from_secs(10);

fn attrs(a: &BgpAttrs) -> RouteAttrs {
    RouteAttrs {
        med: a.med,
        communities: a.communities.clone(),
        large_communities: a.large_communities.clone(),
        as_path_prepend: a.as_path_prepend,
    }
}

fn peers(cfg: &BgpConfig) -> Vec<PeerConfig> {
    cfg.peers
        .iter()
        .map(|p| {
            let mut c = PeerConfig::new(p.address, p.remote_as, cfg.asn, cfg.router_id);
            c.passive = p.passive;
            c.hold_time = p.hold_time;
            c.md5_password = p.password.clone();
            c.local_address = p.local_address;
            c.ipv4_unicast = p.ipv4_unicast;
            c.ipv6_unicast = p.ipv6_unicast;
            c.export = attrs(&p.export);
            c.next_hop_v4 = p.next_hop_v4;
            c.next_hop_v6 = p.next_hop_v6;
            c.graceful_restart = cfg.graceful_restart;
            c
        })
        .collect()
}

fn entries(cfg: &BgpConfig) -> Vec<Entry<RouteAttrs>> {
    cfg.announce
        .iter()
        .map(|a| Entry {
            vip: a.vip,
            policy: a.policy,
            hold_down: Duration::from_millis(a.hold_down_ms),
            payload: attrs(&a.attrs),
            standby: None,
        })
        .collect()
}

/// The routes to announce: the policy's set, with the drained VIPs marked GRACEFUL_SHUTDOWN
/// (RFC 8326: receivers lower their preference, so traffic moves before the withdrawal) and
/// prepended `drain_prepend` more times.
fn routes(
    set: BTreeMap<IpAddr, RouteAttrs>,
    drained: &BTreeSet<IpAddr>,
    all_drained: bool,
    drain_prepend: u8,
) -> Routes {
    set.into_iter()
        .map(|(vip, mut attrs)| {
            if all_drained || drained.contains(&vip) {
                attrs.communities.push(Community::GRACEFUL_SHUTDOWN);
                attrs.communities.sort_unstable();
                attrs.communities.dedup();
                attrs.as_path_prepend = attrs.as_path_prepend.saturating_add(drain_prepend);
            }
            (Prefix::host(vip), attrs)
        })
        .collect()
}

struct Running {
    /// The session-level settings it was started with; a change restarts the speaker.
    cfg: BgpConfig,
    announce: watch::Sender<Routes>,
    shutdown: watch::Sender<Option<String>>,
    status: watch::Receiver<SpeakerStatus>,
    task: tokio::task::JoinHandle<()>,
}

fn start(
    cfg: &BgpConfig,
    initial: Routes,
    bfd: watch::Receiver<BfdStates>,
    settled: watch::Receiver<bool>,
) -> Running {
    let (announce, announce_rx) = watch::channel(initial);
    let (shutdown, shutdown_rx) = watch::channel(None);
    let (status_tx, status) = watch::channel(SpeakerStatus::default());
    let speaker = Speaker::new(
        LocalConfig {
            listen: cfg.listen.clone(),
        },
        peers(cfg),
    )
    .with_bfd(bfd)
    .with_settled(settled);
    let task = tokio::spawn(speaker.run(announce_rx, shutdown_rx, status_tx));
    info!(asn = cfg.asn, router_id = %cfg.router_id, peers = cfg.peers.len(), "bgp started");
    Running {
        cfg: cfg.clone(),
        announce,
        shutdown,
        status,
        task,
    }
}

impl Running {
    async fn stop(&mut self, message: &str) {
        let _ = self.shutdown.send(Some(message.to_string()));
        let _ = (&mut self.task).await;
    }
}

/// The same sessions: only the announcements differ.
fn same_sessions(a: &BgpConfig, b: &BgpConfig) -> bool {
    a.asn == b.asn && a.router_id == b.router_id && a.listen == b.listen && a.peers == b.peers
}

pub struct Bgp {
    policy: Policy<RouteAttrs>,
    running: Running,
    /// VIPs an operator drained (`portier drain --vip`).
    drained: BTreeSet<IpAddr>,
    /// Stopping: every route drained.
    stopping: bool,
    bus: Bus,
    /// Peers with `bfd = true` and the interface BFD watches them on (that of their last
    /// connection), as FRR's `neighbor X bfd` registers them.
    bfd_watched: BTreeSet<(IpAddr, String)>,
    /// Their BFD states, read by the speaker's peer tasks.
    bfd: watch::Sender<BfdStates>,
    /// Whether the announce set has settled since the start (every configured VIP
    /// announced, or `SETTLE_MAX` passed): restarting sessions hold End-of-RIB until then.
    settled: watch::Sender<bool>,
    started: Instant,
}

impl Bgp {
    fn routes(&mut self) -> Routes {
        let set = self.policy.announced(Instant::now());
        routes(
            set,
            &self.drained,
            self.stopping,
            self.running.cfg.drain_prepend,
        )
    }

    fn push_routes(&mut self) {
        let set = self.routes();
        self.update_settled(&set);
        self.running.announce.send_if_modified(|current| {
            let changed = *current != set;
            if changed {
                info!(vips = ?set.keys().map(|p| p.addr()).collect::<Vec<_>>(), "bgp: announced VIPs changed");
                *current = set;
            }
            changed
        });
    }

    fn update_settled(&mut self, set: &Routes) {
        if *self.settled.borrow() {
            return;
        }
        let cfg = &self.running.cfg;
        let max = cfg.graceful_restart.map_or(Duration::ZERO, |t| {
            SETTLE_MAX.min(Duration::from_secs(u64::from(t)))
        });
        let all = cfg
            .announce
            .iter()
            .all(|a| set.contains_key(&Prefix::host(a.vip)));
        if all || self.stopping || self.started.elapsed() >= max {
            info!(
                all_announced = all,
                "bgp: announcements settled; End-of-RIB may go"
            );
            self.settled.send_replace(true);
        }
    }

    /// Asks BFD to watch each `bfd = true` peer once its interface is known, and to stop
    /// watching the others.
    fn sync_bfd(&mut self) {
        let status = self.running.status.borrow().clone();
        let wanted: BTreeSet<(IpAddr, String)> = self
            .running
            .cfg
            .peers
            .iter()
            .filter(|p| p.bfd)
            .filter_map(|p| {
                let s = status.peers.iter().find(|s| s.address == p.address)?;
                Some((p.address, s.interface.clone()?))
            })
            .collect();
        for (peer, iface) in wanted.difference(&self.bfd_watched) {
            self.watch(*peer, iface.clone(), true);
        }
        for (peer, iface) in self.bfd_watched.difference(&wanted) {
            self.watch(*peer, iface.clone(), false);
        }
        let bfd_peers: BTreeSet<IpAddr> = self
            .running
            .cfg
            .peers
            .iter()
            .filter(|p| p.bfd)
            .map(|p| p.address)
            .collect();
        self.bfd.send_if_modified(|states| {
            let before = states.len();
            states.retain(|a, _| bfd_peers.contains(a));
            let mut changed = states.len() != before;
            for a in &bfd_peers {
                if !states.contains_key(a) {
                    states.insert(*a, Default::default());
                    changed = true;
                }
            }
            changed
        });
        self.bfd_watched = wanted;
    }

    fn watch(&self, peer: IpAddr, interface: String, watch: bool) {
        self.bus.publish(Event::BfdWatch {
            client: "bgp",
            peer,
            interface,
            watch,
        });
    }
}

impl Part for Bgp {
    const NAME: &'static str = "bgp";
    /// Hold-downs are checked this often.
    const TICK: Duration = Duration::from_millis(100);
    type Wake = ();

    fn wanted(config: &Config) -> bool {
        config.bgp.is_some()
    }

    async fn start(env: Env, config: &Arc<Config>) -> Result<Self, ApplyError> {
        let cfg = config.bgp.clone().ok_or("no [bgp] section")?;
        let mut policy = Policy::new(entries(&cfg));
        let none = BTreeSet::new();
        let (bfd, bfd_rx) = watch::channel(BfdStates::new());
        let initial = routes(policy.announced(Instant::now()), &none, false, 0);
        let (settled, settled_rx) = watch::channel(cfg.graceful_restart.is_none());
        let running = start(&cfg, initial, bfd_rx, settled_rx);
        let mut bgp = Bgp {
            policy,
            running,
            drained: none,
            stopping: false,
            bus: env.bus,
            bfd_watched: BTreeSet::new(),
            bfd,
            settled,
            started: Instant::now(),
        };
        bgp.push_routes();
        bgp.sync_bfd();
        Ok(bgp)
    }

    async fn apply(&mut self, config: &Arc<Config>) -> Result<Applied, ApplyError> {
        let Some(new) = config.bgp.clone() else {
            info!("bgp: section removed; closing the sessions");
            return Ok(Applied::Retired);
        };
        self.policy.reconfigure(entries(&new));
        self.drained
            .retain(|v| new.announce.iter().any(|a| a.vip == *v));
        if !same_sessions(&new, &self.running.cfg) {
            self.running.stop(RECONFIGURE_MESSAGE).await;
            let set = self.policy.announced(Instant::now());
            self.running = start(
                &new,
                routes(set, &self.drained, false, new.drain_prepend),
                self.bfd.subscribe(),
                self.settled.subscribe(),
            );
        }
        self.running.cfg = new;
        self.push_routes();
        self.sync_bfd();
        Ok(Applied::Running)
    }

    async fn command(&mut self, command: Command) -> Result<Reply, CommandError> {
        let Command::Vip { vip, drain } = command else {
            return Err(CommandError::Unsupported {
                part: Self::NAME,
                verb: command.verb(),
            });
        };
        if !self.running.cfg.announce.iter().any(|a| a.vip == vip) {
            return Err(CommandError::NoSuchTarget(format!(
                "VIP {vip} is not announced by [bgp]"
            )));
        }
        if drain {
            self.drained.insert(vip);
        } else {
            self.drained.remove(&vip);
        }
        self.push_routes();
        info!(%vip, drain, "bgp: runtime change applied");
        Ok(serde_json::json!({ "vip": vip, "drained": drain }))
    }

    async fn event(&mut self, event: &Event) {
        if let Event::BfdState {
            peer,
            interface,
            up,
            admin,
        } = event
            && self.bfd_watched.contains(&(*peer, interface.clone()))
        {
            self.bfd
                .send_if_modified(|states| match states.get_mut(peer) {
                    Some(s) if s.up != *up => {
                        // AdminDown at either end is not a path failure (RFC 5882 §3.2):
                        // the BGP session stays, e.g. while the daemons stop.
                        if s.up && !*admin {
                            s.downs += 1;
                        }
                        s.up = *up;
                        true
                    }
                    _ => false,
                });
        }
        self.policy.event(event);
        // A condition that changed acts now, not at the next tick (which is for hold-downs).
        self.push_routes();
    }

    async fn wake(&mut self) {
        if self.running.status.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    async fn woken(&mut self, _: ()) {
        self.sync_bfd();
    }

    async fn tick(&mut self) {
        self.push_routes();
    }

    fn publish(&mut self, board: &PartBoard) {
        let status = self.running.status.borrow_and_update().clone();
        let announced: Vec<String> = self
            .running
            .announce
            .borrow()
            .keys()
            .map(|p| format!("{}/{}", p.addr(), p.len()))
            .collect();
        board.set(serde_json::json!({
            "asn": self.running.cfg.asn,
            "router_id": self.running.cfg.router_id,
            "announced": announced,
            "drained": self.drained,
            "graceful_restart": self.running.cfg.graceful_restart.map(|t| serde_json::json!({
                "restart_time": t,
                "forwarding_preserved": true,
                "notification": true,
            })),
            "listeners": status.listeners,
            "peers": status.peers,
        }));
        board.set_metrics(metrics(&status, announced.len()));
    }

    async fn stop(mut self) {
        let drain = Duration::from_millis(self.running.cfg.drain_ms);
        if !drain.is_zero() && !self.running.announce.borrow().is_empty() {
            info!(
                ?drain,
                "bgp: draining (GRACEFUL_SHUTDOWN) before withdrawing"
            );
            self.stopping = true;
            self.push_routes();
            tokio::time::sleep(drain).await;
        }
        // Withdrawn explicitly before the Cease, so a peer that keeps routes of a closed
        // session for a while (graceful restart) does not.
        self.running.announce.send_replace(Routes::new());
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.running.stop(STOP_MESSAGE).await;
        for (peer, interface) in std::mem::take(&mut self.bfd_watched) {
            self.watch(peer, interface, false);
        }
    }
}

fn metrics(status: &SpeakerStatus, announced: usize) -> String {
    let mut m = Metrics::new("bgp");
    m.gauge_u(
        "announced_prefixes",
        "VIP routes announced now.",
        vec![],
        announced as u64,
    );
    for p in &status.peers {
        m.gauge(
            "peer_established",
            "1 while the session is established.",
            labels![("peer", p.address)],
            i64::from(p.state == State::Established),
        );
    }
    for p in &status.peers {
        m.gauge_u(
            "peer_prefixes_advertised",
            "Prefixes the peer has from us.",
            labels![("peer", p.address)],
            p.prefixes_advertised as u64,
        );
    }
    for p in &status.peers {
        if let Some(b) = p.bfd {
            m.gauge(
                "peer_bfd_up",
                "1 while the peer's BFD session is up (peers with bfd = true).",
                labels![("peer", p.address)],
                i64::from(b.up),
            );
        }
    }
    for p in &status.peers {
        m.counter(
            "peer_bfd_down",
            "Sessions brought down because BFD went down.",
            labels![("peer", p.address)],
            p.stats.bfd_down,
        );
    }
    for p in &status.peers {
        m.gauge(
            "peer_graceful_restart",
            "1 while the established session negotiated graceful restart.",
            labels![("peer", p.address)],
            i64::from(
                p.negotiated
                    .as_ref()
                    .is_some_and(|n| n.graceful_restart_negotiated),
            ),
        );
    }
    m.text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_show_bfd_and_graceful_restart_per_peer() {
        let cfg = PeerConfig::new(
            "10.0.0.1".parse().unwrap(),
            64512,
            64513,
            "10.0.0.11".parse().unwrap(),
        );
        let mut peer = crate::bgp::io::PeerStatus::idle(&cfg);
        peer.bfd = Some(crate::bgp::BfdPeerState { up: true, downs: 2 });
        peer.stats.bfd_down = 2;
        let status = SpeakerStatus {
            listeners: Vec::new(),
            peers: vec![peer],
        };
        let m = metrics(&status, 1);
        assert!(
            m.contains("portier_bgp_peer_bfd_up{peer=\"10.0.0.1\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("portier_bgp_peer_bfd_down_total{peer=\"10.0.0.1\"} 2"),
            "{m}"
        );
        assert!(
            m.contains("portier_bgp_peer_graceful_restart{peer=\"10.0.0.1\"} 0"),
            "{m}"
        );
    }

    #[test]
    fn drained_routes_carry_graceful_shutdown_and_extra_prepends() {
        let vip: IpAddr = "203.0.113.10".parse().unwrap();
        let other: IpAddr = "203.0.113.11".parse().unwrap();
        let set: BTreeMap<IpAddr, RouteAttrs> = [
            (
                vip,
                RouteAttrs {
                    communities: vec![Community::new(64513, 100)],
                    as_path_prepend: 1,
                    ..RouteAttrs::default()
                },
            ),
            (other, RouteAttrs::default()),
        ]
        .into();
        let drained = BTreeSet::from([vip]);
        let r = routes(set.clone(), &drained, false, 2);
        let a = &r[&Prefix::host(vip)];
        assert!(a.communities.contains(&Community::GRACEFUL_SHUTDOWN));
        assert!(a.communities.contains(&Community::new(64513, 100)));
        assert_eq!(a.as_path_prepend, 3);
        assert_eq!(r[&Prefix::host(other)], RouteAttrs::default());
        let all = routes(set, &BTreeSet::new(), true, 0);
        assert!(
            all.values()
                .all(|a| a.communities.contains(&Community::GRACEFUL_SHUTDOWN))
        );
    }
}
