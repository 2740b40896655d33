//! The decap part (hosts behind IPIP services): attach the decapsulator, keep its tunnel
//! addresses in line with `[decap]`, publish its counters.

use crate::config::{Config, DecapConfig};
use crate::dataplane::{DecapOptions, Decapsulator};
use crate::part::board::PartBoard;
use crate::part::{Applied, ApplyError, Env, Part};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::fmt::Write as _;
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
        Ok(start(&config.node.name, &wanted)?)
    }

    async fn apply(&mut self, config: &Arc<Config>) -> Result<Applied, ApplyError> {
        // A removed section leaves nothing to decapsulate for.
        let wanted = config.decap.clone().unwrap_or(DecapConfig {
            interfaces: self.interfaces.clone(),
            addresses: Vec::new(),
        });
        if wanted.interfaces != self.interfaces {
            warn!("decap: interfaces take effect on restart only");
        }
        self.sync(&wanted.addresses)?;
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
    };
    d.sync(&config.addresses)?;
    Ok(d)
}

impl Decap {
    /// Adds new tunnel addresses before removing old ones, so a renumbering loses nothing
    /// addressed to either.
    fn sync(&mut self, wanted: &[IpAddr]) -> Result<()> {
        let wanted: BTreeSet<IpAddr> = wanted.iter().copied().collect();
        for a in wanted
            .difference(&self.addresses)
            .copied()
            .collect::<Vec<_>>()
        {
            self.decapsulator
                .add_address(a)
                .with_context(|| format!("cannot add tunnel address {a}"))?;
            self.addresses.insert(a);
            info!(address = %a, "decap: accepting tunnels to this address");
        }
        for a in self
            .addresses
            .difference(&wanted)
            .copied()
            .collect::<Vec<_>>()
        {
            self.decapsulator
                .remove_address(a)
                .with_context(|| format!("cannot remove tunnel address {a}"))?;
            self.addresses.remove(&a);
            info!(address = %a, "decap: no longer accepting tunnels to this address");
        }
        Ok(())
    }

    fn publish_status(&self, board: &PartBoard) {
        let mut metrics = String::new();
        let mut reasons = serde_json::Map::new();
        let _ = writeln!(metrics, "# TYPE portier_decap_packets_total counter");
        match self.decapsulator.reasons() {
            Ok(rs) => {
                for (r, n) in rs {
                    reasons.insert(r.name().to_string(), n.into());
                    let _ = writeln!(
                        metrics,
                        "portier_decap_packets_total{{reason=\"{}\"}} {n}",
                        r.name()
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
            "addresses": self.addresses,
            "events": reasons,
        }));
        board.set_metrics(metrics);
    }
}
