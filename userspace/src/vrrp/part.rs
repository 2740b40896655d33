//! The VRRP part: runs the configured instances, feeds them tracked-object changes (service
//! health from the bus, interfaces polled), and publishes their state and counters. On stop
//! every instance resigns (priority 0) so a backup takes over at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::instance::{Control, Instance, LinkHealth, Snapshot};
use super::machine::State;
use super::{no_accept, packet};
use crate::bus::{Bus, Event};
use crate::config::{Config, TrackTarget, VrrpInstanceConfig};
use crate::labels;
use crate::net::addr;
use crate::part::board::PartBoard;
use crate::part::prometheus::Metrics;
use crate::part::{Applied, ApplyError, Env, Part};

/// How often tracked interfaces and the instances' own are looked at; well under one advert
/// interval.
const LINK_POLL: Duration = Duration::from_millis(200);
/// The `accept = false` drop counter (an `nft` call) is read every this many ticks.
const NFT_READ_TICKS: u32 = 3;
/// A resigning instance has this long to send priority 0 and drop its VIPs.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

struct Running {
    cfg: VrrpInstanceConfig,
    control: mpsc::Sender<Control>,
    snapshot: watch::Receiver<Snapshot>,
    task: JoinHandle<Result<()>>,
    /// The instance's own interface as last told to it; it starts on a usable one.
    link: LinkHealth,
}

/// The node's nftables table for `accept = false` instances.
struct NoAccept {
    table: String,
    /// Set up in the kernel (done when the first instance needs it).
    ready: bool,
    /// Packets its counter has dropped, as last read.
    dropped: u64,
}

impl NoAccept {
    /// Deletes a table a killed earlier run left behind: it would keep dropping.
    async fn new(node: &str) -> Self {
        let table = no_accept::table_name(node);
        let stale = table.clone();
        let removed = tokio::task::spawn_blocking(move || {
            if no_accept::exists(&stale)? {
                no_accept::apply(&no_accept::teardown(&stale))?;
                return Ok(true);
            }
            Ok::<_, nftables::helper::NftablesError>(false)
        })
        .await;
        // Errors (no nft installed) are fine until an instance asks for accept = false.
        if let Ok(Ok(true)) = removed {
            info!(%table, "vrrp: removed a stale nftables table");
        }
        Self {
            table,
            ready: false,
            dropped: 0,
        }
    }

    async fn ensure(&mut self) -> Result<()> {
        if self.ready {
            return Ok(());
        }
        let table = self.table.clone();
        tokio::task::spawn_blocking(move || no_accept::apply(&no_accept::setup(&table)))
            .await?
            .with_context(|| {
                format!(
                    "accept = false needs nftables: cannot create table inet {}",
                    self.table
                )
            })?;
        info!(table = %self.table, "vrrp: nftables table for accept = false set up");
        self.ready = true;
        Ok(())
    }

    async fn read(&mut self) {
        if !self.ready {
            return;
        }
        let table = self.table.clone();
        if let Ok(Ok(n)) = tokio::task::spawn_blocking(move || no_accept::dropped(&table)).await {
            self.dropped = n;
        }
    }

    async fn teardown(&mut self) {
        if !self.ready {
            return;
        }
        let table = self.table.clone();
        match tokio::task::spawn_blocking(move || no_accept::apply(&no_accept::teardown(&table)))
            .await
        {
            Ok(Ok(())) => self.ready = false,
            Ok(Err(e)) => warn!(table = %self.table, "cannot delete the nftables table: {e}"),
            Err(e) => warn!("cannot delete the nftables table: {e}"),
        }
    }
}

/// The VRRP part: `[vrrp]` present in the config.
pub struct Vrrp {
    handle: rtnetlink::Handle,
    bus: Bus,
    running: BTreeMap<String, Running>,
    /// Down tracked objects, as last seen; unknown counts as up.
    down: HashMap<TrackTarget, bool>,
    nft: NoAccept,
    ticks: u32,
}

impl Part for Vrrp {
    const NAME: &'static str = "vrrp";
    /// Tracked interfaces and the instances' own are looked at this often: well under one
    /// advert interval.
    const TICK: Duration = LINK_POLL;
    type Wake = std::convert::Infallible;

    fn wanted(config: &Config) -> bool {
        config.vrrp.is_some()
    }

    async fn start(env: Env, config: &Arc<Config>) -> Result<Self, ApplyError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("cannot open an rtnetlink socket")?;
        tokio::spawn(connection);
        let mut vrrp = Vrrp {
            handle,
            bus: env.bus,
            running: BTreeMap::new(),
            down: HashMap::new(),
            nft: NoAccept::new(&config.node.name).await,
            ticks: 0,
        };
        vrrp.apply_config(config).await?;
        Ok(vrrp)
    }

    async fn apply(&mut self, config: &Arc<Config>) -> Result<Applied, ApplyError> {
        self.apply_config(config).await?;
        Ok(Applied::Running)
    }

    async fn event(&mut self, event: &Event) {
        if let Event::ServiceHealth {
            service, healthy, ..
        } = event
        {
            let target = TrackTarget::Service(service.clone());
            set_down(&mut self.down, &self.running, target, *healthy == 0).await;
        }
    }

    async fn tick(&mut self) {
        for name in tracked_interfaces(&self.running) {
            // A missing interface is as down as a link without carrier.
            let is_down = match addr::link_by_name(&self.handle, &name).await {
                Ok(link) => !link.up,
                Err(_) => true,
            };
            set_down(
                &mut self.down,
                &self.running,
                TrackTarget::Interface(name),
                is_down,
            )
            .await;
        }
        watch_own_links(&self.handle, &mut self.running).await;
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(NFT_READ_TICKS) {
            self.nft.read().await;
        }
    }

    fn publish(&mut self, board: &PartBoard) {
        publish_status(board, &self.running, &self.nft);
    }

    async fn stop(mut self) {
        info!("vrrp: resigning every instance");
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            stop(&mut self.running, &name).await;
        }
        self.nft.teardown().await;
    }
}

impl Vrrp {
    async fn apply_config(&mut self, config: &Arc<Config>) -> Result<()> {
        apply(
            config,
            &mut self.running,
            &self.handle,
            &self.bus,
            &self.down,
            &mut self.nft,
        )
        .await
    }
}

/// Faults an instance whose interface went down or lost its address, and restarts it when
/// the interface is usable again.
async fn watch_own_links(handle: &rtnetlink::Handle, running: &mut BTreeMap<String, Running>) {
    for (name, r) in running.iter_mut() {
        let Some(health) = link_health(handle, &r.cfg).await else {
            continue;
        };
        if health == r.link {
            continue;
        }
        match health {
            LinkHealth::Up => {
                info!(instance = %name, interface = %r.cfg.interface, "vrrp interface usable again")
            }
            LinkHealth::Down => {
                warn!(instance = %name, interface = %r.cfg.interface, "vrrp interface down")
            }
            LinkHealth::NoAddress => {
                warn!(instance = %name, interface = %r.cfg.interface, "vrrp interface lost its primary address")
            }
        }
        r.link = health;
        let _ = r.control.send(Control::Link(health)).await;
    }
}

/// `None` when netlink could not say (the last known state stands).
async fn link_health(handle: &rtnetlink::Handle, cfg: &VrrpInstanceConfig) -> Option<LinkHealth> {
    let link = match addr::link_by_name(handle, &cfg.interface).await {
        Ok(link) if link.up => link,
        Ok(_) | Err(addr::AddrError::NoSuchLink(_)) => return Some(LinkHealth::Down),
        Err(_) => return None,
    };
    let has_address = if cfg.vips.first().is_some_and(std::net::IpAddr::is_ipv6) {
        addr::link_local_v6(handle, link.index)
            .await
            .ok()?
            .is_some()
    } else {
        addr::primary_v4(handle, link.index, &cfg.vips)
            .await
            .ok()?
            .is_some()
    };
    Some(if has_address {
        LinkHealth::Up
    } else {
        LinkHealth::NoAddress
    })
}

fn tracked_interfaces(running: &BTreeMap<String, Running>) -> Vec<String> {
    let mut names: Vec<String> = running
        .values()
        .flat_map(|r| &r.cfg.track)
        .filter_map(|t| match &t.target {
            TrackTarget::Interface(i) => Some(i.clone()),
            TrackTarget::Service(_) => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

async fn set_down(
    down: &mut HashMap<TrackTarget, bool>,
    running: &BTreeMap<String, Running>,
    target: TrackTarget,
    is_down: bool,
) {
    if down.get(&target) == Some(&is_down) {
        return;
    }
    down.insert(target.clone(), is_down);
    for r in running.values() {
        if r.cfg.track.iter().any(|t| t.target == target) {
            let _ = r
                .control
                .send(Control::Track {
                    target: target.clone(),
                    down: is_down,
                })
                .await;
        }
    }
}

/// Starts new and changed instances, resigns removed and changed ones; unchanged ones keep
/// running untouched.
async fn apply(
    config: &Arc<Config>,
    running: &mut BTreeMap<String, Running>,
    handle: &rtnetlink::Handle,
    bus: &Bus,
    down: &HashMap<TrackTarget, bool>,
    nft: &mut NoAccept,
) -> Result<()> {
    // Where instances note their mastership across restarts (see `Instance::start`).
    let state_dir = &std::path::PathBuf::from("/run/portier")
        .join(&config.node.name)
        .join("vrrp");
    let wanted: Vec<VrrpInstanceConfig> = config
        .vrrp
        .as_ref()
        .map(|v| v.instances.clone())
        .unwrap_or_default();
    let stale: Vec<String> = running
        .iter()
        .filter(|(name, r)| !wanted.iter().any(|w| &w.name == *name && *w == r.cfg))
        .map(|(name, _)| name.clone())
        .collect();
    for name in stale {
        stop(running, &name).await;
    }
    let mut first_error = None;
    for cfg in wanted {
        if running.contains_key(&cfg.name) {
            continue;
        }
        let name = cfg.name.clone();
        let no_accept = if cfg.accept {
            None
        } else {
            if let Err(e) = nft.ensure().await {
                error!(instance = %name, "{e:#}");
                first_error.get_or_insert(e);
                continue;
            }
            Some(nft.table.clone())
        };
        match Instance::start(
            cfg.clone(),
            handle.clone(),
            bus.clone(),
            no_accept,
            state_dir,
        )
        .await
        {
            Ok((instance, snapshot)) => {
                let (control, control_rx) = mpsc::channel(16);
                for t in &cfg.track {
                    if down.get(&t.target) == Some(&true) {
                        let _ = control
                            .send(Control::Track {
                                target: t.target.clone(),
                                down: true,
                            })
                            .await;
                    }
                }
                let task = tokio::spawn(instance.run(control_rx));
                info!(instance = %name, vrid = cfg.vrid, interface = %cfg.interface, "vrrp instance started");
                running.insert(
                    name,
                    Running {
                        cfg,
                        control,
                        snapshot,
                        task,
                        link: LinkHealth::Up,
                    },
                );
            }
            Err(e) => {
                error!("{e:#}");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn stop(running: &mut BTreeMap<String, Running>, name: &str) {
    let Some(r) = running.remove(name) else {
        return;
    };
    let _ = r.control.send(Control::Shutdown).await;
    match tokio::time::timeout(SHUTDOWN_GRACE, r.task).await {
        Ok(Ok(Ok(()))) => info!(instance = %name, "vrrp instance stopped"),
        Ok(Ok(Err(e))) => error!(instance = %name, "vrrp instance failed: {e:#}"),
        Ok(Err(e)) => error!(instance = %name, "vrrp instance panicked: {e}"),
        Err(_) => warn!(instance = %name, "vrrp instance did not stop in time"),
    }
}

fn publish_status(board: &PartBoard, running: &BTreeMap<String, Running>, nft: &NoAccept) {
    let snapshots: Vec<Snapshot> = running
        .values()
        .map(|r| r.snapshot.borrow().clone())
        .collect();
    let dropped = nft.ready.then_some(nft.dropped);
    board.set(serde_json::json!({
        "instances": serde_json::to_value(&snapshots).unwrap_or_default(),
        "no_accept_dropped_packets": dropped,
    }));
    board.set_metrics(metrics(&snapshots, dropped));
}

/// Metrics of the instances, and the nftables counter of `accept = false` drops (one per
/// node: the sets are shared) when it is known.
pub fn metrics(snapshots: &[Snapshot], no_accept_dropped: Option<u64>) -> String {
    let mut m = Metrics::new("vrrp");
    let label = |s: &Snapshot| labels![("instance", s.name), ("vrid", s.vrid)];
    for s in snapshots {
        m.gauge(
            "master",
            "1 while the instance is master.",
            label(s),
            i64::from(s.state == State::Master),
        );
        m.gauge(
            "state",
            "0 initialize, 1 backup, 2 master, 3 fault (own interface down or without address).",
            label(s),
            match s.state {
                State::Initialize => 0,
                State::Backup => 1,
                State::Master => 2,
                State::Fault => 3,
            },
        );
        m.gauge(
            "effective_priority",
            "Priority after tracked objects' weights.",
            label(s),
            i64::from(s.effective_priority),
        );
        let c = &s.counters;
        for (name, help, v) in [
            ("adverts_sent", "Advertisements sent.", c.adverts_sent),
            (
                "adverts_received",
                "Advertisements accepted.",
                c.adverts_received,
            ),
            (
                "priority_zero_received",
                "Priority 0 advertisements accepted (a master resigning).",
                c.priority_zero_received,
            ),
            ("transitions", "State transitions.", c.transitions),
            ("became_master", "Transitions to master.", c.became_master),
            (
                "announcements_sent",
                "Gratuitous ARPs and unsolicited NAs sent.",
                c.announcements_sent,
            ),
        ] {
            m.counter(name, help, label(s), v);
        }
        for d in packet::Drop::ALL {
            let mut l = label(s);
            l.push(("reason", d.name().to_string()));
            m.counter(
                "drops",
                "Received packets dropped, by failed check.",
                l,
                c.drops.get(d.name()).copied().unwrap_or(0),
            );
        }
    }
    if let Some(n) = no_accept_dropped {
        m.counter(
            "no_accept_dropped_packets",
            "Packets to VIPs dropped while master with accept = false.",
            vec![],
            n,
        );
    }
    m.text()
}

#[cfg(test)]
mod tests {
    use super::super::instance::{Counters, Snapshot};
    use super::*;

    #[test]
    fn metrics_name_instance_state_and_every_drop_reason() {
        let mut counters = Counters {
            adverts_sent: 7,
            ..Counters::default()
        };
        counters.drops.insert("ttl", 2);
        let snapshot = Snapshot {
            name: "vip51".into(),
            interface: "eth0".into(),
            vrid: 51,
            version: 3,
            state: State::Master,
            priority: 150,
            effective_priority: 90,
            vips: vec!["203.0.113.10".parse().unwrap()],
            source: None,
            master: None,
            master_adver_interval_ms: 1000,
            last_transition: None,
            tracks: vec![],
            counters,
        };
        let mut faulty = snapshot.clone();
        faulty.name = "vip52".into();
        faulty.vrid = 52;
        faulty.state = State::Fault;
        let text = metrics(&[snapshot, faulty], None);
        assert!(
            text.lines()
                .any(|l| l == "portier_vrrp_state{instance=\"vip52\",vrid=\"52\"} 3"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "portier_vrrp_master{instance=\"vip52\",vrid=\"52\"} 0"),
            "{text}"
        );
        let label = "instance=\"vip51\",vrid=\"51\"";
        for line in [
            format!("portier_vrrp_master{{{label}}} 1"),
            format!("portier_vrrp_state{{{label}}} 2"),
            format!("portier_vrrp_effective_priority{{{label}}} 90"),
            format!("portier_vrrp_adverts_sent_total{{{label}}} 7"),
            format!("portier_vrrp_drops_total{{{label},reason=\"ttl\"}} 2"),
            format!("portier_vrrp_drops_total{{{label},reason=\"checksum\"}} 0"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("portier_vrrp_drops_total"))
                .count(),
            2 * packet::Drop::ALL.len()
        );
    }
}
