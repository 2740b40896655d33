//! This router's own LSAs (RFC 2328 12.4): the Router-LSA (links plus one /32 stub per
//! announced VIP), a Network-LSA where it is DR, and AS-external LSAs for VIPs announced
//! that way. Reoriginated on change within MinLSInterval, refreshed every LSRefreshTime,
//! flushed when no longer wanted, and re-claimed when an older incarnation's copy turns up
//! (13.4).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use super::{Announce, Instance};
use crate::ospf::interface::IfState;
use crate::ospf::lsa::{
    self, ExternalLsa, INITIAL_SEQ, LINK_POINT_TO_POINT, LINK_STUB, LINK_TRANSIT, LS_REFRESH_TIME,
    Lsa, LsaKey, MAX_AGE, MAX_SEQ, NetworkLsa, ROUTER_FLAG_E, RouterLink, RouterLsa,
};
use crate::ospf::neighbor::NbrState;
use crate::ospf::packet::OPTION_E;

impl Instance {
    fn key(&self, ls_type: u8, ls_id: Ipv4Addr) -> LsaKey {
        LsaKey {
            ls_type,
            ls_id,
            advertising_router: self.router_id,
        }
    }

    /// Every LSA this router should have in the database now, by key, with its body.
    pub(super) fn desired(&self) -> BTreeMap<LsaKey, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut links = Vec::new();
        for iface in &self.ifaces {
            let Some(addr) = iface.addr.filter(|_| iface.state != IfState::Down) else {
                continue;
            };
            let stub = RouterLink {
                link_id: addr.network(),
                link_data: addr.mask(),
                link_type: LINK_STUB,
                metric: iface.cfg.cost,
            };
            // A neighbour we help through its restart stays advertised as Full (RFC 3623 3).
            let full = |n: &&crate::ospf::neighbor::Neighbor| {
                n.state == NbrState::Full || n.helping.is_some()
            };
            match iface.state {
                IfState::PointToPoint => {
                    for nbr in iface.neighbors.iter().filter(full) {
                        links.push(RouterLink {
                            link_id: nbr.router_id,
                            link_data: addr.addr,
                            link_type: LINK_POINT_TO_POINT,
                            metric: iface.cfg.cost,
                        });
                    }
                    links.push(stub);
                }
                IfState::Dr | IfState::Backup | IfState::DrOther => {
                    let adjacent_to_dr = if iface.state == IfState::Dr {
                        iface.neighbors.iter().any(|n| full(&n))
                    } else {
                        iface
                            .neighbors
                            .iter()
                            .any(|n| n.addr == iface.dr && full(&n))
                    };
                    if adjacent_to_dr {
                        links.push(RouterLink {
                            link_id: iface.dr,
                            link_data: addr.addr,
                            link_type: LINK_TRANSIT,
                            metric: iface.cfg.cost,
                        });
                        if iface.state == IfState::Dr {
                            let mut attached = vec![self.router_id];
                            attached
                                .extend(iface.neighbors.iter().filter(full).map(|n| n.router_id));
                            let body = NetworkLsa {
                                mask: addr.mask(),
                                attached_routers: attached,
                            };
                            out.insert(self.key(lsa::TYPE_NETWORK, addr.addr), body.encode());
                        }
                    } else {
                        links.push(stub);
                    }
                }
                IfState::Waiting | IfState::Down => links.push(stub),
            }
        }
        let mut flags = 0;
        for (vip, announce) in &self.announced {
            match *announce {
                Announce::Stub { metric } => links.push(RouterLink {
                    link_id: *vip,
                    link_data: Ipv4Addr::BROADCAST,
                    link_type: LINK_STUB,
                    metric,
                }),
                Announce::External { metric, type2 } => {
                    flags |= ROUTER_FLAG_E;
                    let body = ExternalLsa {
                        mask: Ipv4Addr::BROADCAST,
                        type2,
                        metric,
                        forwarding_address: Ipv4Addr::UNSPECIFIED,
                        route_tag: 0,
                    };
                    out.insert(self.key(lsa::TYPE_AS_EXTERNAL, *vip), body.encode());
                }
            }
        }
        let router = RouterLsa { flags, links };
        out.insert(self.key(lsa::TYPE_ROUTER, self.router_id), router.encode());
        out
    }

    /// Brings the database's own LSAs in line with `desired`.
    fn any_full_adjacency(&self) -> bool {
        self.ifaces
            .iter()
            .any(|i| i.neighbors.iter().any(|n| n.state == NbrState::Full))
    }

    pub(super) fn originate(&mut self, now: Instant) {
        if self.shutting_down || self.restart.is_some() {
            // A restarting router neither originates nor flushes (RFC 3623 2.2).
            return;
        }
        let desired = self.desired();
        let mut changed = false;
        for (key, body) in &desired {
            let current = self.lsdb.get(key);
            let needed = match current {
                None => true,
                Some(e) => {
                    e.age(now) >= MAX_AGE
                        || e.body() != &body[..]
                        || e.age(now) >= LS_REFRESH_TIME
                        || self.force_originate.contains(key)
                }
            };
            if !needed {
                continue;
            }
            if current.is_none()
                && !self.own_seq.contains_key(key)
                && now < self.first_origination_by
                && !self.any_full_adjacency()
            {
                // First origination: wait for an adjacency to flood it over (the tick
                // after one reaches Full, or the wait running out, picks this up).
                continue;
            }
            if self
                .last_originated
                .get(key)
                .is_some_and(|t| now.saturating_duration_since(*t) < self.min_ls_interval)
            {
                // MinLSInterval: the next tick after it elapses picks this up.
                continue;
            }
            // The highest instance known, in the database or seen before.
            let last = current
                .map(|e| e.header(now).seq)
                .max(self.own_seq.get(key).copied());
            let seq = match (last, current) {
                (None, _) => INITIAL_SEQ,
                (Some(MAX_SEQ), Some(e)) => {
                    // 12.1.6: the sequence space is exhausted. Flush the instance and wait
                    // until it has left the database (every neighbour acknowledged the
                    // flush), then start over.
                    if e.age(now) < MAX_AGE {
                        self.flush(*key, now);
                    }
                    continue;
                }
                (Some(MAX_SEQ), None) => INITIAL_SEQ,
                (Some(seq), _) => seq + 1,
            };
            let differs = current.is_none_or(|e| e.body() != &body[..] || e.age(now) >= MAX_AGE);
            changed |= differs;
            self.own_seq.insert(*key, seq);
            let lsa = Lsa::build(
                key.ls_type,
                key.ls_id,
                key.advertising_router,
                OPTION_E,
                seq,
                body,
            );
            self.force_originate.remove(key);
            self.last_originated.insert(*key, now);
            self.note_change(&lsa, differs);
            self.lsdb.install(lsa.clone(), now, false);
            self.counters.lsa_originated += 1;
            self.flood(&lsa, None, now);
        }
        let stale: Vec<LsaKey> = self
            .lsdb
            .iter()
            .filter(|(k, e)| {
                k.advertising_router == self.router_id
                    && !desired.contains_key(k)
                    && e.age(now) < MAX_AGE
            })
            .map(|(k, _)| *k)
            .collect();
        changed |= !stale.is_empty();
        for key in stale {
            self.flush(key, now);
        }
        if changed && self.helping_any() {
            // Strict LSA checking: a restarting neighbour cannot act on a change.
            self.exit_helping_all(super::EXIT_TOPOLOGY, now);
        }
    }

    /// What is remembered of own LSAs stays within the database bound: neighbours can make
    /// up any number of LSAs in our name, and once their flushes are gone only the LSAs we
    /// still originate need their sequence numbers.
    pub(super) fn bound_own_state(&mut self) {
        if self.own_seq.len() + self.force_originate.len() <= self.limits.max_lsas {
            return;
        }
        let desired = self.desired();
        let lsdb = &self.lsdb;
        let keep = |k: &LsaKey| desired.contains_key(k) || lsdb.get(k).is_some();
        self.own_seq.retain(|k, _| keep(k));
        self.force_originate.retain(|k| keep(k));
    }

    /// 13.4: a newer instance of one of our LSAs arrived (an earlier incarnation's, or one
    /// for an interface address we now hold): re-originate past it, or flush it.
    pub(super) fn self_originated_received(&mut self, lsa: &Lsa, now: Instant) {
        let key = lsa.key();
        let ours = key.advertising_router == self.router_id;
        let our_network = key.ls_type == lsa::TYPE_NETWORK
            && self
                .ifaces
                .iter()
                .any(|i| i.addr.is_some_and(|a| a.addr == key.ls_id));
        if !ours && !our_network {
            return;
        }
        let seen = self.own_seq.entry(key).or_insert(lsa.header.seq);
        *seen = (*seen).max(lsa.header.seq);
        if self.restart.is_some() {
            // Re-learnt from a helper: valid as it is until the restart ends (RFC 3623 2.2).
            return;
        }
        if lsa.header.age == MAX_AGE {
            // Somebody flushed it; if we still want it, the next origination brings it back.
            if ours && !self.shutting_down {
                self.force_originate.insert(key);
            }
            return;
        }
        if ours && !self.shutting_down && self.desired().contains_key(&key) {
            self.force_originate.insert(key);
            self.originate(now);
        } else {
            self.flush(key, now);
        }
    }
}
