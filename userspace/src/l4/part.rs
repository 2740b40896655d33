//! The L4 part: attach the balancer, keep its maps in line with the config, runtime overrides
//! (drain, weight) and the neighbour table; publish status and counters.

use crate::bus::{Bus, Event};
use crate::config::{Config, Forwarding, XdpMode};
use crate::dataplane::stats::{IdNames, id_names_path};
use crate::dataplane::{
    Dataplane, DataplaneOptions, DebugSwitch, EncapSourceConfig, ForwardMode, XdpAttachMode,
};
use crate::health::{Checker, Probe, Schedule, Transition};
use crate::l4::neigh::{self, Lookup};
use crate::l4::{NextHop, Op, Overrides, Reconciler};
use crate::labels;
use crate::part::board::PartBoard;
use crate::part::prometheus::Metrics;
use crate::part::{Applied, ApplyError, Command, CommandError, Env, Part, Reply};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// How often next hops are re-read from the kernel and status is refreshed.
const TICK: Duration = Duration::from_secs(1);
/// Routes change rarely; re-read them every this many ticks.
const ROUTE_REFRESH_TICKS: u32 = 10;
/// How long a (re)load waits for new backends' MACs before publishing tables.
const RESOLVE_WAIT: Duration = Duration::from_secs(3);

pub struct L4 {
    config: Config,
    overrides: Overrides,
    checker: Checker,
    transitions: mpsc::UnboundedReceiver<Transition>,
    bus: Bus,
    teardown_on_exit: bool,
    /// (service, backend) pairs whose health check failed: out of the Maglev table, while
    /// their established flows keep going through the connection table.
    down: BTreeSet<(String, IpAddr)>,
    /// Why each backend in `down` went down (the last probe's error), for the status.
    down_reasons: BTreeMap<(String, IpAddr), String>,
    dataplane: Dataplane,
    reconciler: Reconciler,
    handle: rtnetlink::Handle,
    /// Backend address -> egress interface and the neighbour whose MAC frames to it carry
    /// (the backend, or the gateway for IPIP), or why there is none (logged once per change).
    routes: HashMap<IpAddr, Result<(u32, IpAddr), String>>,
    /// Backends only IPIP services use: they may sit behind a router.
    routed_ok: BTreeSet<IpAddr>,
    /// Outer source prefixes as written to the map; `None` before the first write.
    encap: Option<EncapSourceConfig>,
    /// `[dataplane] midflow_sources` as last written to the program.
    midflow: Option<Vec<(std::net::IpAddr, u8)>>,
    /// `[dataplane] new_flow_rate` as last written.
    new_flow_rate: Option<u32>,
    src_macs: HashMap<u32, [u8; 6]>,
    ticks: u32,
    /// `[dataplane] debug` / `portier debug xdp`: which balancer program is attached.
    debug: DebugSwitch,
}

impl Part for L4 {
    const NAME: &'static str = "l4";
    const TICK: Duration = TICK;
    type Wake = Transition;

    fn wanted(config: &Config) -> bool {
        !config.services.is_empty()
    }

    async fn start(env: Env, config: &Arc<Config>) -> Result<Self, ApplyError> {
        let mut l4 = start(config, env).await?;
        l4.install(config).await?;
        l4.announce_all();
        Ok(l4)
    }

    async fn apply(&mut self, config: &Arc<Config>) -> Result<Applied, ApplyError> {
        if config.node != self.config.node
            || config.dataplane.conntrack_size != self.config.dataplane.conntrack_size
        {
            warn!("l4: [node] and dataplane.conntrack_size take effect on restart only");
        }
        let r = self.install(config).await;
        self.announce_all();
        r?;
        Ok(Applied::Running)
    }

    async fn command(&mut self, command: Command) -> Result<Reply, CommandError> {
        if let Command::XdpDebug { on } = command {
            let dp = &mut self.dataplane;
            self.debug
                .set(on, |on| dp.set_debug(on))
                .map_err(|e| CommandError::Failed(e.into()))?;
            return Ok(serde_json::json!({ "program": dp.attached_program(), "debug": on }));
        }
        let Command::Backend {
            service,
            backend,
            change,
        } = command
        else {
            return Err(CommandError::Unsupported {
                part: Self::NAME,
                verb: command.verb(),
            });
        };
        let exists = self
            .config
            .services
            .iter()
            .any(|s| s.name == service && s.backends.iter().any(|b| b.address == backend));
        if !exists {
            return Err(CommandError::NoSuchTarget(format!(
                "service {service} has no backend {backend}"
            )));
        }
        self.overrides.set(&service, backend, change.weight());
        let config = self.config.clone();
        self.install(&config)
            .await
            .map_err(|e| CommandError::Failed(e.into()))?;
        info!(%service, %backend, verb = change.verb(), weight = ?change.weight(), "runtime change applied");
        Ok(serde_json::json!({
            "service": service,
            "backend": backend,
            "weight": self.overrides.effective_weight(&config, &service, backend),
        }))
    }

    async fn wake(&mut self) -> Transition {
        match self.transitions.recv().await {
            Some(t) => t,
            // The checker lives as long as the part; nothing more will come.
            None => std::future::pending().await,
        }
    }

    async fn woken(&mut self, t: Transition) {
        let key = (t.service.clone(), t.backend);
        if t.healthy {
            self.down.remove(&key);
            self.down_reasons.remove(&key);
        } else {
            self.down.insert(key.clone());
            self.down_reasons.insert(key, t.reason.clone());
        }
        let config = self.config.clone();
        match self.install(&config).await {
            // Logged once the table is swapped: from here on no new flow goes there.
            Ok(()) if t.healthy => {
                info!(service = %t.service, backend = %t.backend, "backend up: back in the table")
            }
            Ok(()) => {
                warn!(service = %t.service, backend = %t.backend, reason = %t.reason, "backend down: out of the table, established flows continue")
            }
            Err(e) => error!("l4: applying a health change failed: {e:#}"),
        }
        self.announce_health(&t.service);
    }

    async fn tick(&mut self) {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(ROUTE_REFRESH_TICKS) {
            self.routes.clear();
        }
        if let Err(e) = self.refresh_next_hops(Duration::ZERO).await {
            warn!("neighbour refresh failed: {e:#}");
        }
    }

    fn publish(&mut self, board: &PartBoard) {
        self.publish_status(board);
    }

    async fn stop(self) {
        if self.teardown_on_exit {
            info!("l4: detaching the balancer and removing its pins");
            if let Some(dir) = id_names_path(&self.config.node.name).parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        } else {
            info!("l4: leaving the balancer running for the next instance");
        }
    }
}

async fn start(config: &Config, env: Env) -> Result<L4> {
    let teardown_on_exit = env.teardown_on_exit;
    let (checker, transitions) = Checker::new();
    let (connection, handle, _) =
        rtnetlink::new_connection().context("cannot open an rtnetlink socket")?;
    tokio::spawn(connection);
    let opts = DataplaneOptions {
        node: config.node.name.clone(),
        interfaces: config.node.interfaces.clone(),
        mode: match config.node.xdp_mode {
            XdpMode::Auto => XdpAttachMode::Auto,
            XdpMode::Native => XdpAttachMode::Native,
            XdpMode::Generic => XdpAttachMode::Generic,
        },
        conntrack_size: config.dataplane.conntrack_size,
        pin_root: PathBuf::from(crate::dataplane::DEFAULT_PIN_ROOT),
        // Traffic keeps flowing in the kernel while the daemon restarts or is upgraded.
        keep_pinned: !teardown_on_exit,
    };
    let dataplane = Dataplane::load(&opts).context("cannot set up the XDP dataplane")?;
    for i in dataplane.interfaces() {
        info!(interface = %i.name, ifindex = i.ifindex, mode = ?i.mode, "balancer attached");
    }
    let reconciler = if dataplane.adopted() {
        let services = dataplane.existing_services();
        let backends = dataplane.existing_backends()?;
        info!(
            services = services.len(),
            "adopted the running dataplane: connections, tables and counters carry over"
        );
        Reconciler::adopt(&backends, &services)
    } else {
        Reconciler::new()
    };
    Ok(L4 {
        config: config.clone(),
        overrides: Overrides::default(),
        checker,
        transitions,
        bus: env.bus,
        teardown_on_exit,
        down: BTreeSet::new(),
        down_reasons: BTreeMap::new(),
        dataplane,
        reconciler,
        handle,
        routes: HashMap::new(),
        routed_ok: BTreeSet::new(),
        encap: None,
        midflow: None,
        new_flow_rate: None,
        src_macs: HashMap::new(),
        ticks: 0,
        debug: DebugSwitch::default(),
    })
}

impl L4 {
    /// Applies `config` (with the runtime overrides): new backends, then their MACs, then
    /// tables, then removals.
    async fn install(&mut self, config: &Config) -> Result<()> {
        self.overrides.retain_existing(config);
        self.sync_checks(config);
        let dp = &mut self.dataplane;
        self.debug
            .configure(config.dataplane.debug, |on| dp.set_debug(on))
            .context("cannot switch the XDP debug program")?;
        let mut effective = self.overrides.apply_to(config);
        for s in &mut effective.services {
            for b in &mut s.backends {
                if self.down.contains(&(s.name.clone(), b.address)) {
                    b.weight = 0;
                }
            }
        }
        let encap = EncapSourceConfig {
            v4: config.dataplane.encap_source_v4,
            v6: config.dataplane.encap_source_v6,
        };
        if self.encap != Some(encap) {
            // Before the tables: an IPIP service without its source drops its packets.
            self.dataplane
                .set_encap_source(&encap)
                .context("cannot set the IPIP source prefixes")?;
            self.encap = Some(encap);
        }
        if self.new_flow_rate != Some(config.dataplane.new_flow_rate) {
            self.dataplane
                .set_new_flow_rate(config.dataplane.new_flow_rate)
                .context("cannot set the new-flow rate")?;
            self.new_flow_rate = Some(config.dataplane.new_flow_rate);
        }
        if self.midflow.as_ref() != Some(&config.dataplane.midflow_sources) {
            self.dataplane
                .set_midflow_sources(&config.dataplane.midflow_sources)
                .context("cannot set the mid-flow source prefixes")?;
            self.midflow = Some(config.dataplane.midflow_sources.clone());
        }
        let routed_ok = Reconciler::routed_ok(&effective);
        if routed_ok != self.routed_ok {
            self.routed_ok = routed_ok;
            self.routes.clear();
        }
        let ops = self
            .reconciler
            .apply(&effective)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let first_table = ops
            .iter()
            .position(|o| !matches!(o, Op::SetBackend { .. }))
            .unwrap_or(ops.len());
        let (new_backends, rest) = ops.split_at(first_table);
        self.apply_ops(new_backends)?;
        if !new_backends.is_empty() {
            self.routes.clear();
            self.refresh_next_hops(RESOLVE_WAIT).await?;
        }
        self.apply_ops(rest)?;
        self.config = config.clone();
        self.write_id_names();
        Ok(())
    }

    /// Checks exactly the backends of services that have a health check; a new or changed
    /// check starts from healthy.
    fn sync_checks(&mut self, config: &Config) {
        let mut targets = BTreeMap::new();
        for s in &config.services {
            let Some(check) = &s.health else { continue };
            for b in &s.backends {
                targets.insert(
                    (s.name.clone(), b.address),
                    Schedule {
                        probe: Probe::for_backend(check, b.address, s.port),
                        interval: Duration::from_millis(check.interval_ms.into()),
                        timeout: Duration::from_millis(check.timeout_ms.into()),
                        rise: check.rise,
                        fall: check.fall,
                    },
                );
            }
        }
        for key in self.checker.sync(targets.clone()) {
            self.down.remove(&key);
        }
        self.down.retain(|k| targets.contains_key(k));
        let down = &self.down;
        self.down_reasons.retain(|k, _| down.contains(k));
    }

    fn announce_all(&self) {
        for s in &self.config.services {
            self.announce_health(&s.name);
        }
    }

    /// Tells the other parts (VRRP tracking, OSPF announce policy) how healthy a service is.
    fn announce_health(&self, service: &str) {
        let Some(s) = self.config.services.iter().find(|s| s.name == service) else {
            return;
        };
        let total = s.backends.len();
        let healthy = s
            .backends
            .iter()
            .filter(|b| !self.down.contains(&(s.name.clone(), b.address)))
            .count();
        self.bus.publish(Event::ServiceHealth {
            service: s.name.clone(),
            vip: Some(s.vip),
            healthy,
            total,
        });
    }

    fn apply_ops(&mut self, ops: &[Op]) -> Result<()> {
        for op in ops {
            match op {
                Op::SetBackend { id, backend } => self.dataplane.set_backend(*id, backend)?,
                Op::SetService {
                    key,
                    id,
                    table,
                    forwarding,
                } => {
                    let mode = match forwarding {
                        Forwarding::Dsr => ForwardMode::Dsr,
                        Forwarding::Ipip => ForwardMode::Ipip,
                    };
                    self.dataplane
                        .set_service_with_mode(*key, *id, table, mode)?
                }
                Op::RemoveService { key, id } => self.dataplane.remove_service(key, *id)?,
            }
        }
        Ok(())
    }

    /// Re-reads every backend's next hop; waits up to `wait` for unresolved ones.
    async fn refresh_next_hops(&mut self, wait: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + wait;
        let attached: Vec<u32> = self
            .dataplane
            .interfaces()
            .iter()
            .map(|i| i.ifindex)
            .collect();
        loop {
            let table = neigh::dump(&self.handle).await?;
            let mut unresolved = 0;
            for addr in self.reconciler.backend_addresses() {
                let Some((ifindex, neighbour)) = self.route(addr, &attached).await else {
                    continue;
                };
                let lookup = table
                    .get(&(ifindex, neighbour))
                    .copied()
                    .unwrap_or(Lookup::Unknown { ifindex });
                let mac = match lookup {
                    Lookup::Known { mac, .. } => Some(mac),
                    Lookup::Stale { mac, .. } => {
                        // Still usable; a probe notices a host that was replaced.
                        let _ = neigh::solicit(&self.handle, ifindex, neighbour).await;
                        Some(mac)
                    }
                    Lookup::Unknown { .. } => {
                        unresolved += 1;
                        if let Err(e) = neigh::solicit(&self.handle, ifindex, neighbour).await {
                            warn!(backend = %addr, %neighbour, "cannot trigger neighbour resolution: {e}");
                        }
                        None
                    }
                };
                let next_hop = match mac {
                    Some(mac) => Some(NextHop {
                        ifindex,
                        mac,
                        src_mac: self.src_mac(ifindex).await?,
                    }),
                    None => self.reconciler.next_hop(&addr),
                };
                if let Some(op) = self.reconciler.set_next_hop(addr, next_hop) {
                    if let Some(nh) = next_hop {
                        info!(backend = %addr, %neighbour, mac = %fmt_mac(&nh.mac), ifindex, "backend next hop");
                    }
                    self.apply_ops(&[op])?;
                }
            }
            if unresolved == 0 || tokio::time::Instant::now() >= deadline {
                if unresolved > 0 && !wait.is_zero() {
                    warn!(
                        unresolved,
                        "some backends have no MAC address yet; their flows drop until they resolve"
                    );
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn route(&mut self, addr: IpAddr, attached: &[u32]) -> Option<(u32, IpAddr)> {
        if !self.routes.contains_key(&addr) {
            let routed_ok = self.routed_ok.contains(&addr);
            let r = match neigh::route(&self.handle, addr).await {
                Ok(r) if !attached.contains(&r.ifindex) => Err(format!(
                    "backend {addr} is reached through ifindex {}, where the balancer is not attached",
                    r.ifindex
                )),
                Ok(r) if routed_ok => Ok((r.ifindex, r.neighbour(addr))),
                Ok(r) => r
                    .on_link(addr)
                    .map(|i| (i, addr))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = &r {
                error!("{e}");
            }
            self.routes.insert(addr, r);
        }
        self.routes
            .get(&addr)
            .and_then(|r| r.as_ref().ok().copied())
    }

    async fn src_mac(&mut self, ifindex: u32) -> Result<[u8; 6]> {
        if let Some(m) = self.src_macs.get(&ifindex) {
            return Ok(*m);
        }
        let m = neigh::link_mac(&self.handle, ifindex).await?;
        self.src_macs.insert(ifindex, m);
        Ok(m)
    }

    /// Lets `portier stats` name the ids it finds in the maps.
    fn write_id_names(&self) {
        let names = IdNames {
            services: self
                .reconciler
                .service_ids()
                .into_iter()
                .map(|(n, id)| (id, n))
                .collect(),
            backends: self
                .reconciler
                .backend_ids()
                .into_iter()
                .map(|(a, id)| (id, a.to_string()))
                .collect(),
        };
        let path = id_names_path(&self.config.node.name);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, serde_json::to_vec(&names).unwrap_or_default()));
        if let Err(e) = written {
            warn!("cannot write {}: {e}", path.display());
        }
    }

    /// Status JSON and metrics for the admin API.
    fn publish_status(&self, board: &PartBoard) {
        let ids: HashMap<String, u32> = self.reconciler.service_ids().into_iter().collect();
        let mut services = Vec::new();
        let mut metrics = Metrics::new("l4");
        for s in &self.config.services {
            let counters = ids
                .get(&s.name)
                .and_then(|id| self.dataplane.service_counters(*id).ok())
                .unwrap_or_default();
            metrics.counter(
                "service_packets",
                "Packets to the service's VIP and port that the balancer forwarded.",
                labels![("service", s.name)],
                counters.packets,
            );
            metrics.counter(
                "service_bytes",
                "Bytes of those packets.",
                labels![("service", s.name)],
                counters.bytes,
            );
            let mut backends = Vec::new();
            let slots = self.reconciler.slots(&s.name);
            for b in &s.backends {
                let weight = self
                    .overrides
                    .effective_weight(&self.config, &s.name, b.address);
                let next_hop = self.reconciler.next_hop(&b.address);
                let down = self.down.contains(&(s.name.clone(), b.address));
                let state = match (weight, next_hop, down) {
                    (_, None, _) => "unresolved",
                    (_, _, true) => "down",
                    (0, _, _) => "drained",
                    _ => "active",
                };
                metrics.gauge_u(
                    "backend_weight",
                    "The backend's weight in the service's Maglev table (0: drained).",
                    labels![("service", s.name), ("backend", b.address)],
                    u64::from(weight),
                );
                let key = (s.name.clone(), b.address);
                backends.push(serde_json::json!({
                    "address": b.address,
                    "weight": weight,
                    "configured_weight": b.weight,
                    "state": state,
                    "reason": if down { self.down_reasons.get(&key) } else { None },
                    "check": self.checker.report(&s.name, b.address),
                    // Maglev table entries: the share of new flows it gets.
                    "share": slots.and_then(|m| m.get(&b.address)).copied().unwrap_or(0),
                }));
            }
            services.push(serde_json::json!({
                "name": s.name,
                "vip": s.vip,
                "port": s.port,
                "protocol": format!("{:?}", s.protocol).to_lowercase(),
                "forwarding": format!("{:?}", s.forwarding).to_lowercase(),
                "packets": counters.packets,
                "bytes": counters.bytes,
                "backends": backends,
            }));
        }
        // A host serving several services has one slot, so its counters cover all of them.
        let mut hosts = Vec::new();
        for (addr, id) in self.reconciler.backend_ids() {
            let c = self.dataplane.backend_counters(id).unwrap_or_default();
            metrics.counter(
                "backend_packets",
                "Packets sent to the host, for all services it serves.",
                labels![("backend", addr)],
                c.packets,
            );
            metrics.counter(
                "backend_bytes",
                "Bytes of those packets.",
                labels![("backend", addr)],
                c.bytes,
            );
            hosts.push(serde_json::json!({
                "address": addr,
                "mac": self.reconciler.next_hop(&addr).map(|n| fmt_mac(&n.mac)),
                "packets": c.packets,
                "bytes": c.bytes,
            }));
        }
        let mut reasons = serde_json::Map::new();
        if let Ok(rs) = self.dataplane.reasons() {
            for (r, n) in rs {
                reasons.insert(r.name().to_string(), n.into());
                metrics.counter(
                    "packets",
                    "Packets the balancer saw, by what it did with them.",
                    labels![("reason", r.name())],
                    n,
                );
            }
        }
        let interfaces: Vec<_> = self
            .dataplane
            .interfaces()
            .iter()
            .map(|i| serde_json::json!({ "name": i.name, "ifindex": i.ifindex, "mode": format!("{:?}", i.mode) }))
            .collect();
        board.set(serde_json::json!({
            "interfaces": interfaces,
            "xdp_debug": self.debug.on(),
            "services": services,
            "backends": hosts,
            "events": reasons,
        }));
        board.set_metrics(metrics.text());
    }
}

fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}
