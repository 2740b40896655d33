//! What the instance shows: neighbours, interfaces, an LSDB summary, announced VIPs, and
//! counters for Prometheus.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use serde::Serialize;

use super::{Announce, GrConfig, Instance, Limits};
use crate::labels;
use crate::ospf::interface::IfState;
use crate::ospf::lsa;
use crate::ospf::lsa::grace::RestartReason;
use crate::ospf::neighbor::NbrState;
use crate::part::prometheus::Metrics;

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
    /// Milliseconds until the neighbour is declared down unless it says Hello (vtysh's
    /// "Dead Time").
    pub dead_in_ms: u64,
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
                            dead_in_ms: u64::try_from(
                                n.inactivity_deadline
                                    .saturating_duration_since(now)
                                    .as_millis(),
                            )
                            .unwrap_or(u64::MAX),
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
    /// The OSPF families, `portier_ospf_...`.
    pub fn metrics(&self) -> String {
        let mut m = Metrics::new("ospf");
        let c = &self.counters;
        m.counter("rx_packets", "OSPF packets received.", vec![], c.rx_packets);
        for (kind, v) in &c.rx {
            m.counter(
                "rx",
                "Packets accepted, by type.",
                labels![("type", kind)],
                *v,
            );
        }
        for (kind, v) in &c.tx {
            m.counter("tx", "Packets sent, by type.", labels![("type", kind)], *v);
        }
        for (reason, v) in &c.dropped {
            m.counter(
                "dropped",
                "Packets and LSAs dropped, by reason.",
                labels![("reason", reason)],
                *v,
            );
        }
        for (name, help, v) in [
            (
                "neighbor_transitions",
                "Neighbour state changes.",
                c.nbr_transitions,
            ),
            (
                "lsa_originated",
                "LSAs this router originated.",
                c.lsa_originated,
            ),
            ("lsa_flushed", "LSAs this router flushed.", c.lsa_flushed),
            (
                "lsa_installed",
                "LSAs installed in the database.",
                c.lsa_installed,
            ),
            ("lsa_retransmitted", "LSAs retransmitted.", c.retransmitted),
        ] {
            m.counter(name, help, vec![], v);
        }
        let full = self
            .interfaces
            .iter()
            .flat_map(|i| &i.neighbors)
            .filter(|n| n.state == NbrState::Full)
            .count();
        m.gauge_u(
            "neighbors_full",
            "Neighbours in state Full.",
            vec![],
            full as u64,
        );
        m.gauge_u(
            "lsdb_lsas",
            "LSAs in the database.",
            vec![],
            self.lsdb.total as u64,
        );
        for (kind, n) in &self.lsdb.by_type {
            m.gauge_u(
                "lsdb_lsas_by_type",
                "LSAs in the database, by type.",
                labels![("type", kind)],
                *n as u64,
            );
        }
        m.gauge_u(
            "max_neighbors_per_interface",
            "The configured bound on neighbours per interface.",
            vec![],
            self.limits.max_neighbors as u64,
        );
        m.gauge_u(
            "max_lsas",
            "The configured bound on LSAs in the database.",
            vec![],
            self.limits.max_lsas as u64,
        );
        for limit in super::LIMIT_REASONS {
            m.gauge(
                "limit_reached",
                "1 while the limit is reached (what exceeds it is dropped).",
                labels![("limit", limit)],
                i64::from(self.limits_reached.contains(&limit)),
            );
        }
        m.gauge_u(
            "announced_vips",
            "VIPs announced now.",
            vec![],
            self.announced.len() as u64,
        );
        let gr = &self.graceful_restart;
        m.gauge(
            "gr_restarting",
            "1 while this router restarts gracefully (RFC 3623).",
            vec![],
            i64::from(gr.restarting),
        );
        m.counter(
            "gr_restarts",
            "Graceful restarts begun.",
            vec![],
            c.gr_restarts,
        );
        for (reason, v) in &c.gr_restart_exits {
            m.counter(
                "gr_restart_exits",
                "Graceful restarts ended, by reason.",
                labels![("reason", reason)],
                *v,
            );
        }
        m.gauge_u(
            "gr_helping",
            "Neighbours this router helps through their restart now.",
            vec![],
            gr.helping.len() as u64,
        );
        m.counter(
            "gr_helper_entered",
            "Times helper mode was entered.",
            vec![],
            c.gr_helper_entered,
        );
        for (reason, v) in &c.gr_helper_exits {
            m.counter(
                "gr_helper_exits",
                "Helper modes ended, by reason.",
                labels![("reason", reason)],
                *v,
            );
        }
        for (reason, v) in &c.gr_helper_rejected {
            m.counter(
                "gr_helper_rejected",
                "Grace-LSAs not helped, by reason.",
                labels![("reason", reason)],
                *v,
            );
        }
        m.text()
    }
}
