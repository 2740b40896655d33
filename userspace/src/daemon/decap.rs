//! The decap part (hosts behind IPIP services): attach the decapsulator, keep its tunnel
//! addresses in line with `[decap]`, publish its counters.

use super::{ConfigUpdate, PartContext};
use crate::config::DecapConfig;
use crate::dataplane::{DecapOptions, Decapsulator};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;
use tracing::{error, info, warn};

/// How often the counters are refreshed on the status board.
const TICK: Duration = Duration::from_secs(1);

struct Decap {
    decapsulator: Decapsulator,
    interfaces: Vec<String>,
    addresses: BTreeSet<IpAddr>,
}

pub async fn run(mut ctx: PartContext) -> Result<()> {
    let ConfigUpdate { generation, config } = ctx.config.borrow_and_update().clone();
    let Some(wanted) = config.decap.clone() else {
        ctx.applied(generation, Ok(()));
        return Ok(());
    };
    let mut decap = match start(&config.node.name, &wanted) {
        Ok(d) => d,
        Err(e) => {
            ctx.applied(generation, Err(format!("{e:#}")));
            return Err(e);
        }
    };
    ctx.applied(generation, Ok(()));
    decap.publish(&ctx);

    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            changed = ctx.config.changed() => {
                if changed.is_err() { break; }
                let ConfigUpdate { generation, config } = ctx.config.borrow_and_update().clone();
                // A removed section leaves nothing to decapsulate for.
                let wanted = config.decap.clone().unwrap_or(DecapConfig {
                    interfaces: decap.interfaces.clone(),
                    addresses: Vec::new(),
                });
                if wanted.interfaces != decap.interfaces {
                    warn!("decap: interfaces take effect on restart only");
                }
                let r = decap.sync(&wanted.addresses);
                if let Err(e) = &r {
                    error!("decap: applying the new config failed: {e:#}");
                }
                ctx.applied(generation, r.map_err(|e| format!("{e:#}")));
                decap.publish(&ctx);
            }
            _ = ctx.shutdown.changed() => break,
            _ = tick.tick() => decap.publish(&ctx),
        }
    }
    // Dropping the decapsulator detaches it: a host without the daemon gets no tunnels.
    info!("decap: detaching the decapsulator");
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

    fn publish(&self, ctx: &PartContext) {
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
        ctx.status.set(
            "decap",
            serde_json::json!({
                "interfaces": interfaces,
                "addresses": self.addresses,
                "events": reasons,
            }),
        );
        ctx.status.set_metrics("decap", metrics);
    }
}
