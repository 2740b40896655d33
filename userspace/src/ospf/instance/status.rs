//! What the instance shows: neighbours, interfaces, an LSDB summary, announced VIPs, and
//! counters for Prometheus.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::time::Instant;

use serde::Serialize;

use super::{Announce, Instance};
use crate::ospf::interface::IfState;
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

#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub router_id: Ipv4Addr,
    pub interfaces: Vec<InterfaceStatus>,
    pub lsdb: Vec<LsaStatus>,
    pub announced: BTreeMap<Ipv4Addr, Announce>,
    pub counters: Counters,
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
            lsdb: self
                .lsdb
                .iter()
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
                .collect(),
            announced: self.announced.clone(),
            counters: self.counters.clone(),
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
        let _ = writeln!(out, "portier_ospf_lsdb_lsas {}", self.lsdb.len());
        let _ = writeln!(out, "portier_ospf_announced_vips {}", self.announced.len());
        out
    }
}
