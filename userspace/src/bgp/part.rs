//! The BGP part: runs the speaker for `[bgp]`, announcing each VIP while its policy holds
//! (the same `announce::Policy` as OSPF: VRRP mastership, service health, always, with
//! hold-down), and publishes the peers' state. A clean stop ends every session with Cease /
//! Administrative Shutdown and a shutdown communication (RFC 8203).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;

use super::{LocalConfig, PeerConfig, Prefix, RouteAttrs, Routes, Speaker, SpeakerStatus, State};
use crate::announce::{Entry, Policy};
use crate::bus::Event;
use crate::config::{BgpAttrs, BgpConfig, Config};
use crate::part::board::PartBoard;
use crate::part::{Applied, ApplyError, Env, Part};

/// What peers read in our Cease when the daemon stops or the section changes.
const STOP_MESSAGE: &str = "portier stopping";
const RECONFIGURE_MESSAGE: &str = "portier reconfigured";

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
        })
        .collect()
}

fn routes(set: BTreeMap<IpAddr, RouteAttrs>) -> Routes {
    set.into_iter()
        .map(|(vip, attrs)| (Prefix::host(vip), attrs))
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

fn start(cfg: &BgpConfig, initial: Routes) -> Running {
    let (announce, announce_rx) = watch::channel(initial);
    let (shutdown, shutdown_rx) = watch::channel(None);
    let (status_tx, status) = watch::channel(SpeakerStatus::default());
    let speaker = Speaker::new(
        LocalConfig {
            listen: cfg.listen.clone(),
        },
        peers(cfg),
    );
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
}

impl Part for Bgp {
    const NAME: &'static str = "bgp";
    /// Hold-downs are checked this often.
    const TICK: Duration = Duration::from_millis(100);
    type Wake = ();

    fn wanted(config: &Config) -> bool {
        config.bgp.is_some()
    }

    async fn start(_env: Env, config: &Arc<Config>) -> Result<Self, ApplyError> {
        let cfg = config.bgp.clone().ok_or("no [bgp] section")?;
        let mut policy = Policy::new(entries(&cfg));
        let running = start(&cfg, routes(policy.announced(Instant::now())));
        Ok(Bgp { policy, running })
    }

    async fn apply(&mut self, config: &Arc<Config>) -> Result<Applied, ApplyError> {
        let Some(new) = config.bgp.clone() else {
            info!("bgp: section removed; closing the sessions");
            return Ok(Applied::Retired);
        };
        self.policy.reconfigure(entries(&new));
        if !same_sessions(&new, &self.running.cfg) {
            self.running.stop(RECONFIGURE_MESSAGE).await;
            self.running = start(&new, routes(self.policy.announced(Instant::now())));
        }
        self.running.cfg = new;
        Ok(Applied::Running)
    }

    async fn event(&mut self, event: &Event) {
        self.policy.event(event);
    }

    async fn wake(&mut self) {
        if self.running.status.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    async fn tick(&mut self) {
        let set = routes(self.policy.announced(Instant::now()));
        self.running.announce.send_if_modified(|current| {
            let changed = *current != set;
            if changed {
                info!(vips = ?set.keys().map(|p| p.addr()).collect::<Vec<_>>(), "bgp: announced VIPs changed");
                *current = set;
            }
            changed
        });
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
            "listeners": status.listeners,
            "peers": status.peers,
        }));
        board.set_metrics(metrics(&status, announced.len()));
    }

    async fn stop(mut self) {
        self.running.stop(STOP_MESSAGE).await;
    }
}

fn metrics(status: &SpeakerStatus, announced: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP portier_bgp_announced_prefixes VIP routes announced now."
    );
    let _ = writeln!(out, "# TYPE portier_bgp_announced_prefixes gauge");
    let _ = writeln!(out, "portier_bgp_announced_prefixes {announced}");
    let _ = writeln!(
        out,
        "# HELP portier_bgp_peer_established 1 while the session is established."
    );
    let _ = writeln!(out, "# TYPE portier_bgp_peer_established gauge");
    for p in &status.peers {
        let _ = writeln!(
            out,
            "portier_bgp_peer_established{{peer=\"{}\"}} {}",
            p.address,
            u8::from(p.state == State::Established)
        );
    }
    let _ = writeln!(
        out,
        "# HELP portier_bgp_peer_prefixes_advertised Prefixes the peer has from us."
    );
    let _ = writeln!(out, "# TYPE portier_bgp_peer_prefixes_advertised gauge");
    for p in &status.peers {
        let _ = writeln!(
            out,
            "portier_bgp_peer_prefixes_advertised{{peer=\"{}\"}} {}",
            p.address, p.prefixes_advertised
        );
    }
    out
}
