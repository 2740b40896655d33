//! `portier run`: load the config, attach the balancer, keep the maps in line with the config
//! and the neighbour table, reload on SIGHUP, tear down on SIGTERM/SIGINT.

use crate::config::{self, Config, XdpMode};
use crate::dataplane::{Dataplane, DataplaneOptions, XdpAttachMode};
use crate::l4::{NextHop, Op, Reconciler};
use crate::net::neigh::{self, Lookup};
use crate::stats::{IdNames, id_names_path};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

/// How often next hops are re-read from the kernel.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(1);
/// Routes change rarely; re-read them every this many neighbour refreshes.
const ROUTE_REFRESH_TICKS: u32 = 10;
/// How long a (re)load waits for new backends' MACs before publishing tables.
const RESOLVE_WAIT: Duration = Duration::from_secs(3);

pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/portier";

struct Daemon {
    config_path: PathBuf,
    config: Config,
    dataplane: Dataplane,
    reconciler: Reconciler,
    handle: rtnetlink::Handle,
    /// Backend address -> egress interface, or why there is none (logged once per change).
    routes: HashMap<IpAddr, Result<u32, String>>,
    src_macs: HashMap<u32, [u8; 6]>,
    ticks: u32,
    generation: u64,
}

pub async fn run(config_path: &Path) -> Result<()> {
    let config = config::load(config_path)?;
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
        pin_root: PathBuf::from(DEFAULT_PIN_ROOT),
    };
    let dataplane = Dataplane::load(&opts).context("cannot set up the XDP dataplane")?;
    for i in dataplane.interfaces() {
        info!(interface = %i.name, ifindex = i.ifindex, mode = ?i.mode, "balancer attached");
    }
    let mut d = Daemon {
        config_path: config_path.to_path_buf(),
        config: config.clone(),
        dataplane,
        reconciler: Reconciler::new(),
        handle,
        routes: HashMap::new(),
        src_macs: HashMap::new(),
        ticks: 0,
        generation: 0,
    };
    d.install(&config).await?;
    info!(
        node = %d.config.node.name,
        services = d.config.services.len(),
        "portier ready"
    );

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(NEIGHBOUR_REFRESH);
    loop {
        tokio::select! {
            _ = hup.recv() => d.reload().await,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                d.ticks = d.ticks.wrapping_add(1);
                if d.ticks.is_multiple_of(ROUTE_REFRESH_TICKS) {
                    d.routes.clear();
                }
                if let Err(e) = d.refresh_next_hops(Duration::ZERO).await {
                    warn!("neighbour refresh failed: {e:#}");
                }
            }
        }
    }
    info!("shutting down: detaching the balancer and removing its pins");
    if let Some(dir) = id_names_path(&d.config.node.name).parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

impl Daemon {
    /// Applies `config`: new backends, then their MACs, then tables, then removals.
    async fn install(&mut self, config: &Config) -> Result<()> {
        let ops = self
            .reconciler
            .apply(config)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let first_table = ops
            .iter()
            .position(|o| !matches!(o, Op::SetBackend { .. }))
            .unwrap_or(ops.len());
        let (new_backends, rest) = ops.split_at(first_table);
        self.apply_ops(new_backends)?;
        self.routes.clear();
        self.refresh_next_hops(RESOLVE_WAIT).await?;
        self.apply_ops(rest)?;
        self.config = config.clone();
        self.generation += 1;
        self.write_id_names();
        Ok(())
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

    async fn reload(&mut self) {
        let new = match config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, the running configuration stays:\n{e}");
                return;
            }
        };
        if new.node != self.config.node
            || new.dataplane.conntrack_size != self.config.dataplane.conntrack_size
        {
            warn!("reload: [node] and dataplane.conntrack_size take effect on restart only");
        }
        match self.install(&new).await {
            Ok(()) => info!(generation = self.generation, "reload applied"),
            Err(e) => error!("reload failed: {e:#}"),
        }
    }

    fn apply_ops(&mut self, ops: &[Op]) -> Result<()> {
        for op in ops {
            match op {
                Op::SetBackend { id, backend } => self.dataplane.set_backend(*id, backend)?,
                Op::SetService { key, id, table } => {
                    self.dataplane.set_service(*key, *id, table)?
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
                let ifindex = match self.route(addr, &attached).await {
                    Some(i) => i,
                    None => continue,
                };
                let lookup = table
                    .get(&(ifindex, addr))
                    .copied()
                    .unwrap_or(Lookup::Unknown { ifindex });
                let mac = match lookup {
                    Lookup::Known { mac, .. } => Some(mac),
                    Lookup::Stale { mac, .. } => {
                        // Still usable; a probe notices a host that was replaced.
                        let _ = neigh::solicit(&self.handle, ifindex, addr).await;
                        Some(mac)
                    }
                    Lookup::Unknown { .. } => {
                        unresolved += 1;
                        if let Err(e) = neigh::solicit(&self.handle, ifindex, addr).await {
                            warn!(backend = %addr, "cannot trigger neighbour resolution: {e}");
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
                        info!(backend = %addr, mac = %fmt_mac(&nh.mac), ifindex, "backend next hop");
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

    async fn route(&mut self, addr: IpAddr, attached: &[u32]) -> Option<u32> {
        if !self.routes.contains_key(&addr) {
            let r = match neigh::route_ifindex(&self.handle, addr).await {
                Ok(i) if attached.contains(&i) => Ok(i),
                Ok(i) => Err(format!(
                    "backend {addr} is reached through ifindex {i}, where the balancer is not attached"
                )),
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
}

fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}
