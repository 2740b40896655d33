//! What the instance shows: neighbours, interfaces, an LSDB summary, announced VIPs, and
//! counters for Prometheus.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::time::Instant;

use serde::Serialize;

use super::{Announce, GrConfig, Instance, Limits};
use crate::ospf::interface::IfState;
use crate::ospf::lsa;
use crate::ospf::lsa::grace::RestartReason;
use crate::ospf::neighbor::NbrState;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx: BTreeMap<&'static str, u64>,
    pub tx: BTreeMap<&'static str, u64>,
    /// Dropped packets (and LSAs) by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    pub nbr_transitions: u64,
    pub lsa_originated: u64,
    pub lsa_flushed: u64,
    pub lsa_installed: u64,
    pub retransmitted: u64,
    /// Graceful restarts begun, and how they ended.
    pub gr_restarts: u64,
    pub gr_restart_exits: BTreeMap<&'static str, u64>,
    /// Helper modes entered for neighbours, how they ended, and grace-LSAs not helped.
    pub gr_helper_entered: u64,
    pub gr_helper_exits: BTreeMap<&'static str, u64>,
    pub gr_helper_rejected: BTreeMap<&'static str, u64>,
}

/// Graceful restart (RFC 3623) as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GrStatus {
    pub config: GrConfig,
    /// This router is restarting gracefully now.
    pub restarting: bool,
    pub restart_reason: Option<RestartReason>,
    /// Seconds left of the grace period of our restart.
    pub restart_remaining_secs: Option<u64>,
    /// How our last graceful restart ended, and how long ago.
    pub last_restart_exit: Option<String>,
    pub last_restart_exit_secs_ago: Option<u64>,
    /// Neighbours we help through their restart now.
    pub helping: Vec<HelperStatus>,
    /// The last helper mode that ended: for whom and why.
    pub last_helper_exit: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HelperStatus {
    pub router_id: Ipv4Addr,
    pub address: Ipv4Addr,
    pub interface: String,
    pub reason: RestartReason,
    pub grace_period: u32,
    pub remaining_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NeighborStatus {
    pub router_id: Ipv4Addr,
    pub address: Ipv4Addr,
    pub state: NbrState,
    pub priority: u8,
    pub dr: Ipv4Addr,
    pub bdr: Ipv4Addr,
    pub retransmit_list: usize,
    pub request_list: usize,
    /// Seconds since the neighbour last reached or left Full.
    pub since_secs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub address: Option<String>,
    pub state: IfState,
    pub dr: Ipv4Addr,
    pub bdr: Ipv4Addr,
    pub neighbors: Vec<NeighborStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LsaStatus {
    #[serde(rename = "type")]
    pub ls_type: u8,
    pub id: Ipv4Addr,
    pub advertising_router: Ipv4Addr,
    pub seq: String,
    pub age: u16,
    pub checksum: String,
}

/// At most this many LSAs are listed in the status; the counts cover all of them.
pub const STATUS_LSAS: usize = 100;

/// The database in the status: counts by type, and a capped list (our own LSAs first).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LsdbSummary {
    pub total: usize,
    pub by_type: BTreeMap<&'static str, usize>,
    pub lsas: Vec<LsaStatus>,
    /// `lsas` lists `STATUS_LSAS` of `total`.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub router_id: Ipv4Addr,
    pub interfaces: Vec<InterfaceStatus>,
    pub lsdb: LsdbSummary,
    pub announced: BTreeMap<Ipv4Addr, Announce>,
    pub limits: Limits,
    /// Limits reached now (their `dropped` reasons).
    pub limits_reached: Vec<&'static str>,
    pub counters: Counters,
    pub graceful_restart: GrStatus,
}

fn type_name(ls_type: u8) -> &'static str {
    match ls_type {
        lsa::TYPE_ROUTER => "router",
        lsa::TYPE_NETWORK => "network",
        lsa::TYPE_SUMMARY_NETWORK => "summary-network",
        lsa::TYPE_SUMMARY_ASBR => "summary-asbr",
        lsa::TYPE_AS_EXTERNAL => "as-external",
        _ => "other",
    }
}

impl Instance {
    pub fn status(&self, now: Instant) -> InstanceStatus {
        InstanceStatus {
            router_id: self.router_id,
            interfaces: self
                .ifaces
                .iter()
                .map(|i| InterfaceStatus {
                    name: i.cfg.name.clone(),
                    address: i.addr.map(|a| format!("{}/{}", a.addr, a.prefix_len)),
                    state: i.state,
                    dr: i.dr,
                    bdr: i.bdr,
                    neighbors: i
                        .neighbors
                        .iter()
                        .map(|n| NeighborStatus {
                            router_id: n.router_id,
                            address: n.addr,
                            state: n.state,
                            priority: n.priority,
                            dr: n.dr,
                            bdr: n.bdr,
                            retransmit_list: n.retransmit.len(),
                            request_list: n.requests.len(),
                            since_secs: now.saturating_duration_since(n.since).as_secs(),
                        })
                        .collect(),
                })
                .collect(),
            lsdb: self.lsdb_summary(now),
            announced: self.announced.clone(),
            limits: self.limits,
            limits_reached: self.limits_reached.iter().copied().collect(),
            counters: self.counters.clone(),
            graceful_restart: self.gr_status(now),
        }
    }

    fn gr_status(&self, now: Instant) -> GrStatus {
        let helping = self
            .ifaces
            .iter()
            .flat_map(|i| i.neighbors.iter().map(move |n| (i, n)))
            .filter_map(|(i, n)| {
                let h = n.helping?;
                Some(HelperStatus {
                    router_id: n.router_id,
                    address: n.addr,
                    interface: i.cfg.name.clone(),
                    reason: h.reason,
                    grace_period: h.grace_period,
                    remaining_secs: h.until.saturating_duration_since(now).as_secs(),
                })
            })
            .collect();
        GrStatus {
            config: self.gr,
            restarting: self.restart.is_some(),
            restart_reason: self.restart.map(|r| r.reason),
            restart_remaining_secs: self
                .restart
                .map(|r| r.until.saturating_duration_since(now).as_secs()),
            last_restart_exit: self.gr_restart_exit.map(|(r, _)| r.to_string()),
            last_restart_exit_secs_ago: self
                .gr_restart_exit
                .map(|(_, t)| now.saturating_duration_since(t).as_secs()),
            helping,
            last_helper_exit: self.gr_helper_exit.map(|(id, r, _)| format!("{id}: {r}")),
        }
    }

    /// Counts by type (kept by the database) and up to `STATUS_LSAS` entries: this runs
    /// every second, so it never copies a large database.
    fn lsdb_summary(&self, now: Instant) -> LsdbSummary {
        let by_type = (lsa::TYPE_ROUTER..=lsa::TYPE_AS_EXTERNAL)
            .map(|t| (type_name(t), self.lsdb.count_of(t)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let own = |k: &crate::ospf::lsa::LsaKey| k.advertising_router == self.router_id;
        let lsas = self
            .lsdb
            .iter()
            .filter(|(k, _)| own(k))
            .chain(self.lsdb.iter().filter(|(k, _)| !own(k)))
            .take(STATUS_LSAS)
            .map(|(k, e)| {
                let h = e.header(now);
                LsaStatus {
                    ls_type: k.ls_type,
                    id: k.ls_id,
                    advertising_router: k.advertising_router,
                    seq: format!("{:#010x}", h.seq as u32),
                    age: h.age,
                    checksum: format!("{:#06x}", h.checksum),
                }
            })
            .collect();
        LsdbSummary {
            total: self.lsdb.len(),
            by_type,
            lsas,
            truncated: self.lsdb.len() > STATUS_LSAS,
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The state of the neighbour with `router_id` on any interface.
    pub fn neighbor_state(&self, router_id: Ipv4Addr) -> Option<NbrState> {
        self.ifaces
            .iter()
            .flat_map(|i| &i.neighbors)
            .find(|n| n.router_id == router_id)
            .map(|n| n.state)
    }

    pub fn interface_state(&self, i: usize) -> Option<IfState> {
        self.ifaces.get(i).map(|i| i.state)
    }

    pub fn lsdb(&self) -> &crate::ospf::lsdb::Lsdb {
        &self.lsdb
    }
}

impl InstanceStatus {
    /// Prometheus text lines, `portier_ospf_...`.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let c = &self.counters;
        let _ = writeln!(out, "portier_ospf_rx_packets_total {}", c.rx_packets);
        for (kind, v) in &c.rx {
            let _ = writeln!(out, "portier_ospf_rx_total{{type=\"{kind}\"}} {v}");
        }
        for (kind, v) in &c.tx {
            let _ = writeln!(out, "portier_ospf_tx_total{{type=\"{kind}\"}} {v}");
        }
        for (reason, v) in &c.dropped {
            let _ = writeln!(out, "portier_ospf_dropped_total{{reason=\"{reason}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "portier_ospf_neighbor_transitions_total {}",
            c.nbr_transitions
        );
        let _ = writeln!(
            out,
            "portier_ospf_lsa_originated_total {}",
            c.lsa_originated
        );
        let _ = writeln!(out, "portier_ospf_lsa_flushed_total {}", c.lsa_flushed);
        let _ = writeln!(out, "portier_ospf_lsa_installed_total {}", c.lsa_installed);
        let _ = writeln!(
            out,
            "portier_ospf_lsa_retransmitted_total {}",
            c.retransmitted
        );
        let full = self
            .interfaces
            .iter()
            .flat_map(|i| &i.neighbors)
            .filter(|n| n.state == NbrState::Full)
            .count();
        let _ = writeln!(out, "portier_ospf_neighbors_full {full}");
        let _ = writeln!(out, "portier_ospf_lsdb_lsas {}", self.lsdb.total);
        for (kind, n) in &self.lsdb.by_type {
            let _ = writeln!(out, "portier_ospf_lsdb_lsas_by_type{{type=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "portier_ospf_max_neighbors_per_interface {}",
            self.limits.max_neighbors
        );
        let _ = writeln!(out, "portier_ospf_max_lsas {}", self.limits.max_lsas);
        for limit in super::LIMIT_REASONS {
            let reached = u8::from(self.limits_reached.contains(&limit));
            let _ = writeln!(
                out,
                "portier_ospf_limit_reached{{limit=\"{limit}\"}} {reached}"
            );
        }
        let _ = writeln!(out, "portier_ospf_announced_vips {}", self.announced.len());
        let gr = &self.graceful_restart;
        let _ = writeln!(
            out,
            "portier_ospf_gr_restarting {}",
            u8::from(gr.restarting)
        );
        let _ = writeln!(out, "portier_ospf_gr_restarts_total {}", c.gr_restarts);
        for (reason, v) in &c.gr_restart_exits {
            let _ = writeln!(
                out,
                "portier_ospf_gr_restart_exits_total{{reason=\"{reason}\"}} {v}"
            );
        }
        let _ = writeln!(out, "portier_ospf_gr_helping {}", gr.helping.len());
        let _ = writeln!(
            out,
            "portier_ospf_gr_helper_entered_total {}",
            c.gr_helper_entered
        );
        for (reason, v) in &c.gr_helper_exits {
            let _ = writeln!(
                out,
                "portier_ospf_gr_helper_exits_total{{reason=\"{reason}\"}} {v}"
            );
        }
        for (reason, v) in &c.gr_helper_rejected {
            let _ = writeln!(
                out,
                "portier_ospf_gr_helper_rejected_total{{reason=\"{reason}\"}} {v}"
            );
        }
        out
    }
}
