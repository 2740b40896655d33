//! Receiving updates (RFC 2328 13), flooding (13.3), acknowledgments (13.5, 13.7) and
//! aging out MaxAge LSAs (14).

use std::time::{Duration, Instant};

use super::{Instance, LSDB_LIMIT, MIN_LS_ARRIVAL, RETRANSMIT_LIMIT, graceful};
use crate::ospf::interface::IfState;
use crate::ospf::lsa::{self, Lsa, LsaHeader, LsaKey, MAX_AGE, MAX_SEQ};
use crate::ospf::neighbor::{NbrEvent, NbrState};
use crate::ospf::packet::{Body, LsAck, LsUpdate};

impl Instance {
    pub(super) fn on_lsu(
        &mut self,
        i: usize,
        n: usize,
        update: LsUpdate,
        now: Instant,
    ) -> Result<(), &'static str> {
        if self.ifaces[i].neighbors[n].state < NbrState::Exchange {
            return Err("lsu-state");
        }
        let mut direct_acks = Vec::new();
        let mut sent_back = Vec::new();
        let mut result = Ok(());
        for lsa in update.lsas {
            let lsa = match lsa {
                Ok(lsa) => lsa,
                Err(_) => {
                    *self.counters.dropped.entry("lsa-checksum").or_default() += 1;
                    continue;
                }
            };
            if !lsa::known_type(lsa.header.ls_type) {
                *self.counters.dropped.entry("lsa-type").or_default() += 1;
                continue;
            }
            if self
                .on_lsa(i, n, lsa, &mut direct_acks, &mut sent_back, now)
                .is_err()
            {
                result = Err("bad-ls-req");
                break;
            }
        }
        let dst = self.ifaces[i].neighbors[n].addr;
        if !sent_back.is_empty() {
            self.send_lsas(i, dst, sent_back);
        }
        if !direct_acks.is_empty() {
            self.send(
                i,
                dst,
                Body::LsAck(LsAck {
                    lsa_headers: direct_acks,
                }),
            );
        }
        for j in 0..self.ifaces.len() {
            for m in 0..self.ifaces[j].neighbors.len() {
                self.check_requests(j, m, now);
            }
        }
        result
    }

    /// Steps 4 to 8 of section 13 for one valid LSA; `Err` is BadLSReq. Direct acks and
    /// our newer copies to send back are collected for one packet each per update.
    fn on_lsa(
        &mut self,
        i: usize,
        n: usize,
        lsa: Lsa,
        direct_acks: &mut Vec<LsaHeader>,
        sent_back: &mut Vec<Lsa>,
        now: Instant,
    ) -> Result<(), ()> {
        let key = lsa.key();
        let current = self.lsdb.get(&key).map(|e| (e.header(now), e.received));
        if lsa.header.age == MAX_AGE && current.is_none() && !self.any_exchanging() {
            direct_acks.push(lsa.header);
            return Ok(());
        }
        let newer = current
            .as_ref()
            .is_none_or(|(h, _)| lsa.header.compare(h).is_gt());
        if newer {
            if current.is_none() && self.lsdb.len() >= self.limits.max_lsas {
                // No room: not installed nor acknowledged (a flush of something we do not
                // hold is), and no longer requested, so a database exchange still ends.
                for nbr in self.ifaces.iter_mut().flat_map(|i| &mut i.neighbors) {
                    nbr.requests.remove(&key);
                }
                if lsa.header.age == MAX_AGE {
                    direct_acks.push(lsa.header);
                }
                self.limit_reached(LSDB_LIMIT, i);
                return Ok(());
            }
            if let Some((_, Some(received))) = current
                && now.saturating_duration_since(received) < MIN_LS_ARRIVAL
            {
                *self.counters.dropped.entry("min-ls-arrival").or_default() += 1;
                return Ok(());
            }
            if lsa::link_local(key.ls_type) {
                self.link_scope.insert(key, i);
            }
            let topology_change = lsa::topology_type(key.ls_type)
                && self
                    .lsdb
                    .get(&key)
                    .is_none_or(|e| e.body() != lsa.body() || lsa.header.age == MAX_AGE);
            self.note_change(&lsa, topology_change);
            let inconsistent = self.restart_inconsistent(&lsa);
            let flooded_back = self.flood(&lsa, Some((i, n)), now);
            self.drop_older_from_retransmit(&lsa.header);
            let maxage = lsa.header.age == MAX_AGE;
            self.lsdb.install(lsa.clone(), now, true);
            if maxage {
                self.lsdb.mark_maxage_flooded(&key);
            }
            self.counters.lsa_installed += 1;
            if !flooded_back {
                let iface = &self.ifaces[i];
                let from_dr = iface.neighbors[n].addr == iface.dr;
                if iface.state != IfState::Backup || from_dr {
                    self.ifaces[i].delayed_acks.push(lsa.header);
                }
            }
            self.self_originated_received(&lsa, now);
            if graceful::is_grace_key(&key) {
                self.grace_received(i, n, &lsa, now);
                self.own_grace_returned(i, &lsa);
            }
            if topology_change && self.helping_any() {
                self.exit_helping_all(super::EXIT_TOPOLOGY, now);
            }
            if inconsistent {
                self.end_restart(super::EXIT_TOPOLOGY, now);
            }
            return Ok(());
        }
        let Some((db_header, _)) = current else {
            return Ok(());
        };
        if self.ifaces[i].neighbors[n].requests.contains_key(&key) {
            self.nbr_event(i, n, NbrEvent::BadLsReq, now);
            return Err(());
        }
        if lsa.header.compare(&db_header).is_eq() {
            let nbr = &mut self.ifaces[i].neighbors[n];
            if nbr.retransmit.remove(&key).is_some() {
                // An implied acknowledgment.
                let iface = &self.ifaces[i];
                if iface.state == IfState::Backup && iface.neighbors[n].addr == iface.dr {
                    self.ifaces[i].delayed_acks.push(lsa.header);
                }
            } else {
                direct_acks.push(lsa.header);
            }
            return Ok(());
        }
        // Our copy is newer: send it back unless it is a wrapping MaxAge instance.
        if db_header.age == MAX_AGE && db_header.seq == MAX_SEQ {
            return Ok(());
        }
        let nbr = &mut self.ifaces[i].neighbors[n];
        let recently = nbr
            .sent_back
            .get(&key)
            .is_some_and(|t| now.saturating_duration_since(*t) < MIN_LS_ARRIVAL);
        if !recently {
            nbr.sent_back.insert(key, now);
            if let Some(e) = self.lsdb.get(&key) {
                sent_back.push(e.lsa(now));
            }
        }
        Ok(())
    }

    fn any_exchanging(&self) -> bool {
        self.ifaces
            .iter()
            .flat_map(|i| &i.neighbors)
            .any(|n| n.exchanging())
    }

    /// 13 step 5c: a newer instance replaces the old one on every retransmission list.
    fn drop_older_from_retransmit(&mut self, new: &LsaHeader) {
        let key = new.key();
        for nbr in self.ifaces.iter_mut().flat_map(|i| &mut i.neighbors) {
            if nbr
                .retransmit
                .get(&key)
                .is_some_and(|h| !h.compare(new).is_eq())
            {
                nbr.retransmit.remove(&key);
            }
        }
    }

    /// 13.3: puts `lsa` on the retransmission lists of the adjacent neighbours that need it
    /// and queues it on each interface where one does (`send_floods` sends the queues).
    /// Returns whether it went back out of the interface it came in on.
    pub(super) fn flood(&mut self, lsa: &Lsa, from: Option<(usize, usize)>, now: Instant) -> bool {
        let key = lsa.key();
        let max = self.limits.max_lsas;
        let mut flooded_back = false;
        let mut full_lists = None;
        // Link-local LSAs stay on their link; opaque ones go only to neighbours that set O.
        let scope = lsa::link_local(key.ls_type)
            .then(|| self.link_scope.get(&key).copied())
            .flatten();
        let opaque = key.ls_type >= lsa::TYPE_OPAQUE_LINK;
        for i in 0..self.ifaces.len() {
            if self.ifaces[i].state == IfState::Down || scope.is_some_and(|s| s != i) {
                continue;
            }
            let rxmt =
                Duration::from_secs(u64::from(self.ifaces[i].cfg.retransmit_interval.max(1)));
            let mut added = false;
            for (m, nbr) in self.ifaces[i].neighbors.iter_mut().enumerate() {
                if nbr.state < NbrState::Exchange
                    || (opaque && nbr.options & crate::ospf::packet::OPTION_O == 0)
                {
                    continue;
                }
                if nbr.exchanging()
                    && let Some(requested) = nbr.requests.get(&key).copied()
                {
                    let order = lsa.header.compare(&requested);
                    if order.is_lt() {
                        continue;
                    }
                    nbr.requests.remove(&key);
                    if order.is_eq() {
                        continue;
                    }
                }
                if from == Some((i, m)) {
                    continue;
                }
                if nbr.retransmit.len() >= max && !nbr.retransmit.contains_key(&key) {
                    full_lists = Some(i);
                    continue;
                }
                nbr.retransmit.insert(key, lsa.header);
                nbr.rxmt_at.get_or_insert(now + rxmt);
                added = true;
            }
            if !added {
                continue;
            }
            let iface = &self.ifaces[i];
            if let Some((fi, fnbr)) = from
                && fi == i
            {
                let sender = iface.neighbors[fnbr].addr;
                if iface.is_broadcast() && (sender == iface.dr || sender == iface.bdr) {
                    continue;
                }
                if iface.state == IfState::Backup {
                    continue;
                }
                flooded_back = true;
            }
            self.ifaces[i].floods.insert(key, lsa.clone());
        }
        if let Some(i) = full_lists {
            self.limit_reached(RETRANSMIT_LIMIT, i);
        }
        flooded_back
    }

    /// Sends what `flood` queued: per interface, every LSA due in as few updates as fit.
    pub(super) fn send_floods(&mut self) {
        for i in 0..self.ifaces.len() {
            if self.ifaces[i].floods.is_empty() {
                continue;
            }
            let lsas: Vec<Lsa> = std::mem::take(&mut self.ifaces[i].floods)
                .into_values()
                .collect();
            if self.ifaces[i].state == IfState::Down {
                continue;
            }
            let dst = self.ifaces[i].flood_dst();
            self.send_lsas(i, dst, lsas);
        }
    }

    pub(super) fn on_ack(&mut self, i: usize, n: usize, ack: LsAck) -> Result<(), &'static str> {
        let nbr = &mut self.ifaces[i].neighbors[n];
        if nbr.state < NbrState::Exchange {
            return Err("ack-state");
        }
        for header in ack.lsa_headers {
            let key = header.key();
            if nbr
                .retransmit
                .get(&key)
                .is_some_and(|h| h.compare(&header).is_eq())
            {
                nbr.retransmit.remove(&key);
            }
        }
        if nbr.retransmit.is_empty() {
            nbr.rxmt_at = None;
        }
        Ok(())
    }

    pub(super) fn flush_delayed_acks(&mut self, i: usize) {
        if self.ifaces[i].delayed_acks.is_empty() {
            return;
        }
        let headers = std::mem::take(&mut self.ifaces[i].delayed_acks);
        let dst = self.ifaces[i].flood_dst();
        let per_packet = (self.ifaces[i].budget() - crate::ospf::packet::HEADER_LEN) / 20;
        for chunk in headers.chunks(per_packet.max(1)) {
            self.send(
                i,
                dst,
                Body::LsAck(LsAck {
                    lsa_headers: chunk.to_vec(),
                }),
            );
        }
    }

    /// Notes whether `lsa`, about to be installed and flooded, changes content (a topology
    /// change) or only refreshes what it replaces.
    pub(super) fn note_change(&mut self, lsa: &Lsa, changed: bool) {
        let key = lsa.key();
        if changed && lsa::topology_type(key.ls_type) {
            self.changed_seq.insert(key, lsa.header.seq);
        } else {
            self.changed_seq.remove(&key);
        }
    }

    /// Premature aging (14.1): floods our instance at MaxAge.
    pub(super) fn flush(&mut self, key: LsaKey, now: Instant) {
        let Some(entry) = self.lsdb.get(&key) else {
            return;
        };
        let lsa = entry.lsa(now).with_age(MAX_AGE);
        self.note_change(&lsa, true);
        self.lsdb.install(lsa.clone(), now, false);
        self.lsdb.mark_maxage_flooded(&key);
        self.counters.lsa_flushed += 1;
        self.drop_older_from_retransmit(&lsa.header);
        self.flood(&lsa, None, now);
    }

    /// 14: floods LSAs that aged out, and removes MaxAge LSAs nobody still needs.
    pub(super) fn age(&mut self, now: Instant) {
        for key in self.lsdb.at_max_age(now) {
            let Some(entry) = self.lsdb.get(&key) else {
                continue;
            };
            if !entry.maxage_flooded {
                let lsa = entry.lsa(now);
                self.note_change(&lsa, true);
                self.lsdb.mark_maxage_flooded(&key);
                self.drop_older_from_retransmit(&lsa.header);
                self.flood(&lsa, None, now);
                continue;
            }
            let listed = self
                .ifaces
                .iter()
                .flat_map(|i| &i.neighbors)
                .any(|n| n.retransmit.contains_key(&key));
            if !listed && !self.any_exchanging() {
                self.lsdb.remove(&key);
                self.link_scope.remove(&key);
                self.changed_seq.remove(&key);
            }
        }
    }
}
