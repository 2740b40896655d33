//! Graceful restart (RFC 3623), both roles. As the restarting router: grace-LSAs on every
//! interface (before a planned stop, or first thing after an unplanned one), own LSAs
//! re-learnt from the helpers and neither re-originated nor flushed until the adjacencies
//! of the pre-restart Router-LSA are back (2.2, 2.3). As helper: a neighbour announcing a
//! restart stays advertised as fully adjacent for its grace period, until it completes, the
//! period ends or the topology changes (strict LSA checking, as FRR by default) (3).
//! Entering helper mode checks the restarter's retransmission list as RFC 3623 3.1 says (and
//! FRR does): an LSA of types 1-5 or 7 waiting there whose content changed (not a refresh)
//! is a topology change the restarter has not seen, so we do not help.

use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::info;

use super::Instance;
use crate::ospf::interface::IfState;
use crate::ospf::lsa::grace::{self, GRACE_LS_ID, GraceLsa, RestartReason};
use crate::ospf::lsa::{
    self, INITIAL_SEQ, LINK_POINT_TO_POINT, LINK_TRANSIT, Lsa, LsaKey, MAX_AGE, MAX_SEQ,
    NetworkLsa, RouterLsa,
};
use crate::ospf::neighbor::{Helping, NbrState};
use crate::ospf::packet::{self, OPTION_E, OPTION_O};

/// `[ospf]` `graceful_restart`, `grace_period`, `gr_helper`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GrConfig {
    /// Restart gracefully: grace-LSAs before a clean stop and after an unplanned one.
    pub restart: bool,
    /// Seconds the helpers are asked to wait.
    pub grace_period: u32,
    /// Help neighbours that restart gracefully.
    pub helper: bool,
}

impl Default for GrConfig {
    fn default() -> Self {
        Self {
            restart: false,
            grace_period: crate::config::OspfConfig::DEFAULT_GRACE_PERIOD,
            helper: true,
        }
    }
}

/// This router restarting gracefully.
#[derive(Debug, Clone, Copy)]
pub(super) struct Restart {
    pub until: Instant,
    pub started: Instant,
    pub reason: RestartReason,
    /// Grace-LSAs still to announce on interfaces as they come up (unplanned restart).
    pub announce: bool,
}

/// Why a graceful restart or a helper mode ended (the FRR names).
pub const EXIT_COMPLETED: &str = "completed";
pub const EXIT_TIMEOUT: &str = "grace-period-expired";
pub const EXIT_TOPOLOGY: &str = "topology-change";

impl Instance {
    pub fn set_graceful_restart(&mut self, gr: GrConfig) {
        self.gr = gr;
        if !gr.helper {
            let now = self.last_tick;
            self.exit_helping_all(EXIT_TOPOLOGY, now);
        }
    }

    pub fn graceful_restart(&self) -> GrConfig {
        self.gr
    }

    /// Starts in graceful restart (2.2): own LSAs are not originated nor flushed until the
    /// adjacencies are back or `grace_period` (seconds, from `now`) ends. `announce`: send
    /// grace-LSAs on each interface as it comes up, before any Hello (an unplanned restart;
    /// a planned one sent them before stopping).
    pub fn begin_restart(
        &mut self,
        grace_period: u32,
        reason: RestartReason,
        announce: bool,
        now: Instant,
    ) {
        self.restart = Some(Restart {
            until: now + Duration::from_secs(u64::from(grace_period)),
            started: now,
            reason,
            announce,
        });
        self.restart_grace_period = grace_period;
        self.counters.gr_restarts += 1;
        info!(grace_period, ?reason, "ospf: graceful restart begins");
        if announce {
            for i in 0..self.ifaces.len() {
                self.announce_restart(i);
            }
        }
    }

    pub fn restarting(&self) -> bool {
        self.restart.is_some()
    }

    /// An unplanned restart's grace-LSA on interface `i`, sent straight away to
    /// AllSPFRouters: no adjacency exists yet to flood it over, but helpers still hold ours
    /// as Full and accept it (as FRR does).
    pub(super) fn announce_restart(&mut self, i: usize) {
        let Some(restart) = self.restart.filter(|r| r.announce) else {
            return;
        };
        let iface = &self.ifaces[i];
        let Some(addr) = iface.addr.filter(|_| iface.state != IfState::Down) else {
            return;
        };
        let body = GraceLsa {
            grace_period: self.restart_grace_period,
            reason: restart.reason,
            address: Some(addr.addr),
        };
        let lsa = self.grace_lsa(&body, 0);
        self.send_lsas(i, packet::ALL_SPF_ROUTERS, vec![lsa]);
    }

    /// A neighbour sent back a newer instance of our grace-LSA than the one an unplanned
    /// restart announced (13 (8): it holds one from before the restart, a planned restart's
    /// or its flush, which our announcement at InitialSequenceNumber did not pass, so it
    /// ignored ours): announce again past it.
    pub(super) fn own_grace_returned(&mut self, i: usize, lsa: &Lsa) {
        if lsa.header.advertising_router == self.router_id
            && self.restart.is_some_and(|r| r.announce)
        {
            self.announce_restart(i);
        }
    }

    fn grace_key(&self) -> LsaKey {
        LsaKey {
            ls_type: lsa::TYPE_OPAQUE_LINK,
            ls_id: GRACE_LS_ID,
            advertising_router: self.router_id,
        }
    }

    /// Our grace-LSA, past every instance of it we know of.
    fn grace_lsa(&mut self, body: &GraceLsa, age: u16) -> Lsa {
        let key = self.grace_key();
        let known = self
            .own_seq
            .get(&key)
            .copied()
            .max(self.lsdb.get(&key).map(|e| e.header(self.last_tick).seq));
        let floor = grace_seq_floor(self.wall_secs);
        let seq = match known {
            None | Some(MAX_SEQ) => floor,
            Some(s) => (s + 1).max(floor),
        };
        self.own_seq.insert(key, seq);
        Lsa::build(
            key.ls_type,
            key.ls_id,
            key.advertising_router,
            OPTION_E | OPTION_O,
            seq,
            &body.encode(),
        )
        .with_age(age)
    }

    /// Floods `lsa` (ours, link-local) on interface `i` only, reliably: it is kept per
    /// interface, out of the database, since every interface has its own.
    fn flood_on(&mut self, i: usize, lsa: Lsa, now: Instant) {
        let rxmt = Duration::from_secs(u64::from(self.ifaces[i].cfg.retransmit_interval.max(1)));
        let key = lsa.key();
        let mut any = false;
        for nbr in &mut self.ifaces[i].neighbors {
            if nbr.state < NbrState::Exchange {
                continue;
            }
            nbr.retransmit.insert(key, lsa.header);
            nbr.rxmt_at.get_or_insert(now + rxmt);
            any = true;
        }
        if any {
            self.ifaces[i].floods.insert(key, lsa.clone());
        }
        self.ifaces[i].grace = Some(lsa);
    }

    /// A planned restart (2.1): grace-LSAs flooded on every interface; the caller waits
    /// for `flush_acknowledged`, then stops without a goodbye and without flushing.
    pub fn prepare_restart(&mut self, reason: RestartReason, now: Instant) {
        self.shutting_down = true;
        for i in 0..self.ifaces.len() {
            let iface = &self.ifaces[i];
            let Some(addr) = iface.addr.filter(|_| iface.state != IfState::Down) else {
                continue;
            };
            let body = GraceLsa {
                grace_period: self.gr.grace_period,
                reason,
                address: Some(addr.addr),
            };
            let lsa = self.grace_lsa(&body, 0);
            self.flood_on(i, lsa, now);
        }
        info!(
            grace_period = self.gr.grace_period,
            "ospf: grace-LSAs sent for a planned restart"
        );
    }

    /// 2.3: ends the restart when its time is up, or when every adjacency of the
    /// pre-restart Router-LSA (re-learnt from the helpers) is Full again.
    pub(super) fn check_restart(&mut self, now: Instant) {
        let Some(restart) = self.restart else {
            return;
        };
        if now >= restart.until {
            self.end_restart(EXIT_TIMEOUT, now);
        } else if self.adjacencies_back() {
            self.end_restart(EXIT_COMPLETED, now);
        }
    }

    fn adjacencies_back(&self) -> bool {
        let full = |n: &&crate::ospf::neighbor::Neighbor| n.state == NbrState::Full;
        let busy = self
            .ifaces
            .iter()
            .flat_map(|i| &i.neighbors)
            .any(|n| n.state >= NbrState::ExStart && n.state < NbrState::Full);
        let Some(pre) = self.own_router_lsa() else {
            // Nothing re-learnt: once some adjacency is Full and none is still
            // synchronising, there is nothing left to protect.
            let any_full = self
                .ifaces
                .iter()
                .flat_map(|i| &i.neighbors)
                .any(|n| full(&n));
            return any_full && !busy;
        };
        pre.links.iter().all(|link| match link.link_type {
            LINK_POINT_TO_POINT => self.ifaces.iter().any(|i| {
                i.addr.is_some_and(|a| a.addr == link.link_data)
                    && i.neighbors
                        .iter()
                        .any(|n| n.router_id == link.link_id && n.state == NbrState::Full)
            }),
            LINK_TRANSIT => self.ifaces.iter().any(|i| {
                i.addr.is_some_and(|a| a.addr == link.link_data)
                    && i.dr == link.link_id
                    && if i.state == IfState::Dr {
                        i.neighbors.iter().any(|n| n.state == NbrState::Full)
                    } else {
                        i.neighbors
                            .iter()
                            .any(|n| n.addr == i.dr && n.state == NbrState::Full)
                    }
            }),
            _ => true,
        })
    }

    /// Our own Router-LSA as the database holds it: during a restart, the one re-learnt
    /// from the neighbours (what we announced before the restart).
    fn own_router_lsa(&self) -> Option<RouterLsa> {
        let key = LsaKey {
            ls_type: lsa::TYPE_ROUTER,
            ls_id: self.router_id,
            advertising_router: self.router_id,
        };
        self.lsdb
            .get(&key)
            .and_then(|e| RouterLsa::decode(e.body()).ok())
    }

    /// 2.2 (1): a helper's LSA no longer shows the adjacency our pre-restart Router-LSA
    /// had with it, so it gave up helping: the restart cannot complete.
    pub(super) fn restart_inconsistent(&self, lsa: &Lsa) -> bool {
        if self.restart.is_none() || lsa.header.advertising_router == self.router_id {
            return false;
        }
        let Some(pre) = self.own_router_lsa() else {
            return false;
        };
        let gone = lsa.header.age == MAX_AGE;
        match lsa.header.ls_type {
            lsa::TYPE_ROUTER => {
                let from = lsa.header.advertising_router;
                let had = pre
                    .links
                    .iter()
                    .any(|l| l.link_type == LINK_POINT_TO_POINT && l.link_id == from);
                had && (gone
                    || RouterLsa::decode(lsa.body()).is_ok_and(|r| {
                        !r.links.iter().any(|l| {
                            l.link_type == LINK_POINT_TO_POINT && l.link_id == self.router_id
                        })
                    }))
            }
            lsa::TYPE_NETWORK => {
                let dr = lsa.header.ls_id;
                let had = pre
                    .links
                    .iter()
                    .any(|l| l.link_type == LINK_TRANSIT && l.link_id == dr);
                had && (gone
                    || NetworkLsa::decode(lsa.body())
                        .is_ok_and(|n| !n.attached_routers.contains(&self.router_id)))
            }
            _ => false,
        }
    }

    /// Leaves graceful restart: originates what the router now wants (past the re-learnt
    /// instances), flushes what it no longer does, and flushes the grace-LSAs (2.3).
    pub(super) fn end_restart(&mut self, reason: &'static str, now: Instant) {
        let Some(restart) = self.restart.take() else {
            return;
        };
        let took = now.saturating_duration_since(restart.started);
        info!(reason, took = ?took, "ospf: graceful restart ends");
        self.gr_restart_exit = Some((reason, now));
        *self.counters.gr_restart_exits.entry(reason).or_default() += 1;
        let key = self.grace_key();
        self.lsdb.remove(&key);
        self.link_scope.remove(&key);
        for i in 0..self.ifaces.len() {
            let iface = &self.ifaces[i];
            let Some(addr) = iface.addr.filter(|_| iface.state != IfState::Down) else {
                continue;
            };
            let body = GraceLsa {
                grace_period: self.restart_grace_period,
                reason: restart.reason,
                address: Some(addr.addr),
            };
            let lsa = self.grace_lsa(&body, MAX_AGE);
            self.counters.lsa_flushed += 1;
            self.flood_on(i, lsa, now);
        }
        for i in 0..self.ifaces.len() {
            self.neighbor_change(i, now);
        }
        self.originate(now);
    }

    /// A grace-LSA from a neighbour arrived on interface `i` (3.1, 3.2).
    pub(super) fn grace_received(&mut self, i: usize, from: usize, lsa: &Lsa, now: Instant) {
        if lsa.header.advertising_router == self.router_id {
            return;
        }
        let Ok(body) = GraceLsa::decode(lsa.body()) else {
            *self.counters.dropped.entry("grace-lsa").or_default() += 1;
            return;
        };
        let iface = &self.ifaces[i];
        // On broadcast links the restarter is named by its address (the LSA may come via
        // the DR); on point-to-point links it is the sender.
        let restarter = if iface.is_broadcast() {
            body.address
                .and_then(|a| iface.neighbors.iter().position(|n| n.addr == a))
        } else {
            iface
                .neighbors
                .iter()
                .position(|n| n.router_id == lsa.header.advertising_router)
                .or(Some(from))
        };
        let Some(n) = restarter else {
            self.helper_rejected("not-a-neighbor");
            return;
        };
        if lsa.header.age == MAX_AGE {
            self.exit_helping(i, n, EXIT_COMPLETED, now);
            return;
        }
        let nbr = &self.ifaces[i].neighbors[n];
        let reject = if !self.gr.helper {
            Some("helper-disabled")
        } else if self.restart.is_some() || self.shutting_down {
            Some("restarting")
        } else if nbr.state != NbrState::Full && nbr.helping.is_none() {
            Some("not-full")
        } else if u32::from(lsa.header.age) >= body.grace_period {
            Some("grace-period-expired")
        } else if nbr.helping.is_none() && self.changed_unacknowledged(&nbr.retransmit) {
            Some("retransmit-list-change")
        } else {
            None
        };
        if let Some(reason) = reject {
            self.helper_rejected(reason);
            return;
        }
        let left = body.grace_period - u32::from(lsa.header.age);
        let nbr = &mut self.ifaces[i].neighbors[n];
        let renewed = nbr.helping.is_some();
        let (priority, dr, bdr) = match nbr.helping {
            Some(h) => (h.priority, h.dr, h.bdr),
            None => (nbr.priority, nbr.dr, nbr.bdr),
        };
        nbr.helping = Some(Helping {
            until: now + Duration::from_secs(u64::from(left)),
            grace_period: body.grace_period,
            reason: body.reason,
            priority,
            dr,
            bdr,
        });
        if !renewed {
            self.counters.gr_helper_entered += 1;
            info!(
                neighbor = %nbr.router_id,
                grace_period = body.grace_period,
                reason = ?body.reason,
                "ospf: helping a neighbour through its graceful restart"
            );
        }
    }

    /// 3.1: whether `list` (a restarter's retransmission list) holds an instance of an LSA
    /// of types 1-5 or 7 that changed content, rather than refreshing it.
    fn changed_unacknowledged(&self, list: &crate::ospf::neighbor::RetransmitList) -> bool {
        list.iter().any(|(key, header)| {
            lsa::topology_type(key.ls_type) && self.changed_seq.get(key) == Some(&header.seq)
        })
    }

    fn helper_rejected(&mut self, reason: &'static str) {
        *self.counters.gr_helper_rejected.entry(reason).or_default() += 1;
    }

    /// 3.2: stops helping neighbour `n` on interface `i`; what the router advertises
    /// follows the adjacency's real state again.
    pub(super) fn exit_helping(&mut self, i: usize, n: usize, reason: &'static str, now: Instant) {
        let nbr = &mut self.ifaces[i].neighbors[n];
        if nbr.helping.take().is_none() {
            return;
        }
        info!(neighbor = %nbr.router_id, reason, "ospf: helper mode ends");
        self.gr_helper_exit = Some((nbr.router_id, reason, now));
        *self.counters.gr_helper_exits.entry(reason).or_default() += 1;
        self.neighbor_change(i, now);
        self.originate(now);
    }

    pub(super) fn exit_helping_all(&mut self, reason: &'static str, now: Instant) {
        for i in 0..self.ifaces.len() {
            for n in 0..self.ifaces[i].neighbors.len() {
                self.exit_helping(i, n, reason, now);
            }
        }
    }

    pub(super) fn helping_any(&self) -> bool {
        self.ifaces
            .iter()
            .flat_map(|i| &i.neighbors)
            .any(|n| n.helping.is_some())
    }

    /// Grace periods that ran out.
    pub(super) fn check_helping(&mut self, now: Instant) {
        for i in 0..self.ifaces.len() {
            for n in 0..self.ifaces[i].neighbors.len() {
                if self.ifaces[i].neighbors[n]
                    .helping
                    .is_some_and(|h| now >= h.until)
                {
                    self.exit_helping(i, n, EXIT_TIMEOUT, now);
                }
            }
        }
    }

    /// Our own grace-LSA on interface `i`, if it is the instance `header` names (for
    /// retransmission: it lives outside the database).
    pub(super) fn own_grace(&self, i: usize, key: &LsaKey) -> Option<&Lsa> {
        self.ifaces[i].grace.as_ref().filter(|g| g.key() == *key)
    }
}

/// The lowest sequence number of a grace-LSA sent at `wall_secs` (seconds since the epoch).
/// An unplanned restart knows nothing of the instances its helpers hold: a planned
/// restart's not yet flushed, or one of a process that died while restarting. Had it
/// started at InitialSequenceNumber, a helper holding a newer instance would have ignored it
/// (RFC 2328 13 (5)), and at an equal one taken it for a duplicate. Counting from the wall
/// clock puts it past every instance an earlier restart sent (each sends a few, seconds
/// apart); 2^30 seconds (34 years) before it wraps.
pub(super) fn grace_seq_floor(wall_secs: u32) -> i32 {
    INITIAL_SEQ + (wall_secs % (1 << 30)) as i32
}

/// Whether `key` is a grace-LSA's.
pub(super) fn is_grace_key(key: &LsaKey) -> bool {
    grace::is_grace(key.ls_type, key.ls_id)
}
