//! The decap part (hosts behind IPIP services): attach the decapsulator, keep its tunnel
//! addresses in line with `[decap]`, publish its counters.

use crate::config::{Config, DecapConfig};
use crate::dataplane::{DataplaneError, DebugSwitch, DecapOptions, Decapsulator};
use crate::labels;
use crate::part::board::PartBoard;
use crate::part::prometheus::Metrics;
use crate::part::{Applied, ApplyError, Command, CommandError, Env, Part, Reply};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How often the counters are refreshed on the status board.
const TICK: Duration = Duration::from_secs(1);

pub struct Decap {
    decapsulator: Decapsulator,
    interfaces: Vec<String>,
    addresses: BTreeSet<IpAddr>,
    sources: BTreeSet<(IpAddr, u8)>,
    vips: BTreeSet<IpAddr>,
    /// `[dataplane] debug` / `portier debug xdp`: which decap program is attached.
    debug: DebugSwitch,
}

impl Part for Decap {
    const NAME: &'static str = "decap";
    const TICK: Duration = TICK;
    type Wake = std::convert::Infallible;

    fn wanted(config: &Config) -> bool {
        config.decap.is_some()
    }

    async fn start(_env: Env, config: &Arc<Config>) -> Result<Self, ApplyError> {
        let wanted = config.decap.clone().ok_or("no [decap] section")?;
        let mut d = start(&config.node.name, &wanted)?;
        d.configure_debug(config)?;
        Ok(d)
    }

    async fn command(&mut self, command: Command) -> Result<Reply, CommandError> {
        let Command::XdpDebug { on } = command else {
            return Err(CommandError::Unsupported {
                part: Self::NAME,
                verb: command.verb(),
            });
        };
        let d = &mut self.decapsulator;
        self.debug
            .set(on, |on| d.set_debug(on))
            .map_err(|e| CommandError::Failed(e.into()))?;
        Ok(serde_json::json!({ "program": d.attached_program(), "debug": on }))
    }

    async fn apply(&mut self, config: &Arc<Config>) -> Result<Applied, ApplyError> {
        // A removed section leaves nothing to decapsulate for.
        let wanted = config.decap.clone().unwrap_or(DecapConfig {
            interfaces: self.interfaces.clone(),
            addresses: Vec::new(),
            sources: Vec::new(),
            vips: Vec::new(),
        });
        if wanted.interfaces != self.interfaces {
            warn!("decap: interfaces take effect on restart only");
        }
        self.sync(&wanted)?;
        self.configure_debug(config)?;
        Ok(Applied::Running)
    }

    fn publish(&mut self, board: &PartBoard) {
        self.publish_status(board);
    }

    async fn stop(self) {
        // Dropping the decapsulator detaches it: a host without the daemon gets no tunnels.
        info!("decap: detaching the decapsulator");
    }
}

/// Makes `have` (and the map behind `add`/`remove`) equal to `wanted`.
fn sync_set<T: Ord + Copy + std::fmt::Debug>(
    d: &mut Decapsulator,
    have: &mut BTreeSet<T>,
    wanted: &[T],
    add: impl Fn(&mut Decapsulator, T) -> Result<(), DataplaneError>,
    remove: impl Fn(&mut Decapsulator, T) -> Result<(), DataplaneError>,
    what: &str,
) -> Result<()> {
    let wanted: BTreeSet<T> = wanted.iter().copied().collect();
    for x in wanted.difference(have).copied().collect::<Vec<_>>() {
        add(d, x).with_context(|| format!("cannot add {what} {x:?}"))?;
        have.insert(x);
        info!("decap: {what} {x:?} added");
    }
    for x in have.difference(&wanted).copied().collect::<Vec<_>>() {
        remove(d, x).with_context(|| format!("cannot remove {what} {x:?}"))?;
        have.remove(&x);
        info!("decap: {what} {x:?} removed");
    }
    Ok(())
}

fn start(node: &str, config: &DecapConfig) -> Result<Decap> {
    let decapsulator = Decapsulator::load(&DecapOptions::new(node, config.interfaces.clone()))
        .context("cannot set up the IPIP decapsulator")?;
    for i in decapsulator.interfaces() {
        info!(interface = %i.name, ifindex = i.ifindex, mode = ?i.mode, "decapsulator attached");
    }
    let mut d = Decap {
        decapsulator,
        interfaces: config.interfaces.clone(),
        addresses: BTreeSet::new(),
        sources: BTreeSet::new(),
        vips: BTreeSet::new(),
        debug: DebugSwitch::default(),
    };
    d.sync(config)?;
    Ok(d)
}

impl Decap {
    fn configure_debug(&mut self, config: &Config) -> Result<()> {
        let d = &mut self.decapsulator;
        self.debug
            .configure(config.dataplane.debug, |on| d.set_debug(on))
            .context("cannot switch the XDP debug program")
    }

    /// Brings the three maps in line with `config`: additions before removals, so a
    /// renumbering loses nothing addressed to either.
    fn sync(&mut self, config: &DecapConfig) -> Result<()> {
        let d = &mut self.decapsulator;
        sync_set(
            d,
            &mut self.addresses,
            &config.addresses,
            Decapsulator::add_address,
            Decapsulator::remove_address,
            "tunnel address",
        )?;
        sync_set(
            d,
            &mut self.sources,
            &config.sources,
            |d, (a, l)| d.add_source(a, l),
            |d, (a, l)| d.remove_source(a, l),
            "tunnel source",
        )?;
        sync_set(
            d,
            &mut self.vips,
            &config.vips,
            Decapsulator::add_vip,
            Decapsulator::remove_vip,
            "VIP",
        )
    }

    fn publish_status(&self, board: &PartBoard) {
        let mut metrics = Metrics::new("decap");
        let mut reasons = serde_json::Map::new();
        match self.decapsulator.reasons() {
            Ok(rs) => {
                for (r, n) in rs {
                    reasons.insert(r.name().to_string(), n.into());
                    metrics.counter(
                        "packets",
                        "Packets the decapsulator saw, by what it did with them.",
                        labels![("reason", r.name())],
                        n,
                    );
                }
            }
            Err(e) => warn!("decap: cannot read counters: {e}"),
        }
        let interfaces: Vec<_> = self
            .decapsulator
            .interfaces()
            .iter()
            .map(|i| serde_json::json!({ "name": i.name, "ifindex": i.ifindex, "mode": format!("{:?}", i.mode) }))
            .collect();
        board.set(serde_json::json!({
            "interfaces": interfaces,
            "xdp_debug": self.debug.on(),
            "addresses": self.addresses,
            "sources": self.sources.iter().map(|(a, l)| format!("{a}/{l}")).collect::<Vec<_>>(),
            "vips": self.vips,
            "events": reasons,
        }));
        board.set_metrics(metrics.text());
    }
}
