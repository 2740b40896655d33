//! Database exchange (RFC 2328 10.6, 10.8), link state requests (10.7, 10.9) and every
//! retransmission timer.

use std::time::{Duration, Instant};

use super::{Instance, REQUEST_LIMIT};
use crate::ospf::lsa::{self, LSA_HEADER_LEN, Lsa};
use crate::ospf::neighbor::{NbrEvent, NbrState};
use crate::ospf::packet::{
    Body, DbDescription, DdFlags, HEADER_LEN, LsRequest, LsRequestEntry, LsUpdate, OPTION_E,
    OPTION_O,
};

impl Instance {
    fn rxmt(&self, i: usize) -> Duration {
        Duration::from_secs(u64::from(self.ifaces[i].cfg.retransmit_interval.max(1)))
    }

    /// Entering ExStart: claim master with a fresh sequence number (10.8).
    pub(super) fn start_exstart(&mut self, i: usize, n: usize, now: Instant) {
        self.dd_seed = self.dd_seed.wrapping_add(0x1000_0001);
        let rxmt = self.rxmt(i);
        let nbr = &mut self.ifaces[i].neighbors[n];
        nbr.master = true;
        nbr.dd_seq = self.dd_seed;
        nbr.last_tx_dd = Some(DbDescription {
            interface_mtu: 0,
            options: OPTION_E | OPTION_O,
            flags: DdFlags {
                init: true,
                more: true,
                master: true,
            },
            dd_sequence: nbr.dd_seq,
            lsa_headers: Vec::new(),
        });
        nbr.dd_rxmt_at = Some(now + rxmt);
        self.resend_dd(i, n);
    }

    /// Sends the neighbour's `last_tx_dd` (with the interface MTU filled in).
    fn resend_dd(&mut self, i: usize, n: usize) {
        let mtu = self.ifaces[i].mtu();
        let nbr = &self.ifaces[i].neighbors[n];
        let Some(mut dd) = nbr.last_tx_dd.clone() else {
            return;
        };
        dd.interface_mtu = mtu;
        let dst = nbr.addr;
        self.send(i, dst, Body::DbDescription(dd));
    }

    /// Builds and sends the next DD of the exchange from the summary list.
    fn send_next_dd(&mut self, i: usize, n: usize, now: Instant) {
        let per_packet = (self.ifaces[i].budget() - HEADER_LEN - 8) / LSA_HEADER_LEN;
        let rxmt = self.rxmt(i);
        let nbr = &mut self.ifaces[i].neighbors[n];
        let take = nbr.summary.len().min(per_packet);
        let lsa_headers: Vec<_> = nbr.summary.drain(..take).collect();
        nbr.last_tx_dd = Some(DbDescription {
            interface_mtu: 0,
            options: OPTION_E | OPTION_O,
            flags: DdFlags {
                init: false,
                more: !nbr.summary.is_empty(),
                master: nbr.master,
            },
            dd_sequence: nbr.dd_seq,
            lsa_headers,
        });
        nbr.dd_rxmt_at = nbr.master.then_some(now + rxmt);
        self.resend_dd(i, n);
    }

    pub(super) fn on_dd(
        &mut self,
        i: usize,
        n: usize,
        dd: DbDescription,
        now: Instant,
    ) -> Result<(), &'static str> {
        if dd.interface_mtu > self.ifaces[i].mtu() {
            return Err("dd-mtu");
        }
        let state = self.ifaces[i].neighbors[n].state;
        match state {
            NbrState::Down | NbrState::TwoWay => return Err("dd-state"),
            NbrState::Init => {
                self.nbr_event(i, n, NbrEvent::TwoWayReceived, now);
                if self.ifaces[i].neighbors[n].state != NbrState::ExStart {
                    return Ok(());
                }
                return self.dd_exstart(i, n, dd, now);
            }
            NbrState::ExStart => return self.dd_exstart(i, n, dd, now),
            _ => {}
        }
        let nbr = &self.ifaces[i].neighbors[n];
        let this = (dd.flags, dd.options, dd.dd_sequence);
        if nbr.last_rx_dd == Some(this) {
            // A duplicate: the slave answers it again, the master ignores it.
            if !nbr.master {
                self.resend_dd(i, n);
            }
            return Ok(());
        }
        if state != NbrState::Exchange {
            self.nbr_event(i, n, NbrEvent::SeqNumberMismatch, now);
            return Err("dd-mismatch");
        }
        let expected_seq = if nbr.master {
            nbr.dd_seq
        } else {
            nbr.dd_seq.wrapping_add(1)
        };
        let options_changed = nbr.last_rx_dd.is_some_and(|(_, o, _)| o != dd.options);
        if dd.flags.master == nbr.master
            || dd.flags.init
            || options_changed
            || dd.dd_sequence != expected_seq
        {
            self.nbr_event(i, n, NbrEvent::SeqNumberMismatch, now);
            return Err("dd-mismatch");
        }
        self.dd_accept(i, n, dd, now)
    }

    /// ExStart: decide master/slave (10.6).
    fn dd_exstart(
        &mut self,
        i: usize,
        n: usize,
        dd: DbDescription,
        now: Instant,
    ) -> Result<(), &'static str> {
        let nbr = &mut self.ifaces[i].neighbors[n];
        let flags = dd.flags;
        if flags.init
            && flags.more
            && flags.master
            && dd.lsa_headers.is_empty()
            && nbr.router_id > self.router_id
        {
            nbr.master = false;
            nbr.dd_seq = dd.dd_sequence;
            nbr.dd_rxmt_at = None;
        } else if !flags.init
            && !flags.master
            && dd.dd_sequence == nbr.dd_seq
            && nbr.router_id < self.router_id
        {
            nbr.master = true;
        } else {
            return Err("dd-negotiation");
        }
        nbr.options = dd.options;
        self.nbr_event(i, n, NbrEvent::NegotiationDone, now);
        self.dd_accept(i, n, dd, now)
    }

    /// The packet is next in sequence: take its headers and move the exchange on.
    fn dd_accept(
        &mut self,
        i: usize,
        n: usize,
        dd: DbDescription,
        now: Instant,
    ) -> Result<(), &'static str> {
        for header in &dd.lsa_headers {
            if !lsa::known_type(header.ls_type) {
                self.nbr_event(i, n, NbrEvent::SeqNumberMismatch, now);
                return Err("dd-lsa-type");
            }
            let key = header.key();
            let newer = self
                .lsdb
                .get(&key)
                .is_none_or(|e| header.compare(&e.header(now)).is_gt());
            if !newer {
                continue;
            }
            let requests = &mut self.ifaces[i].neighbors[n].requests;
            if requests.len() >= self.limits.max_lsas && !requests.contains_key(&key) {
                self.limit_reached(REQUEST_LIMIT, i);
            } else {
                requests.insert(key, *header);
            }
        }
        let nbr = &mut self.ifaces[i].neighbors[n];
        nbr.last_rx_dd = Some((dd.flags, dd.options, dd.dd_sequence));
        if nbr.master {
            let sent_last = nbr
                .last_tx_dd
                .as_ref()
                .is_some_and(|d| !d.flags.more && !d.flags.init);
            nbr.dd_seq = nbr.dd_seq.wrapping_add(1);
            if sent_last && !dd.flags.more {
                nbr.dd_rxmt_at = None;
                self.exchange_done(i, n, now);
            } else {
                self.send_next_dd(i, n, now);
            }
        } else {
            nbr.dd_seq = dd.dd_sequence;
            self.send_next_dd(i, n, now);
            let nbr = &self.ifaces[i].neighbors[n];
            let sent_more = nbr.last_tx_dd.as_ref().is_some_and(|d| d.flags.more);
            if !dd.flags.more && !sent_more {
                self.exchange_done(i, n, now);
            }
        }
        Ok(())
    }

    fn exchange_done(&mut self, i: usize, n: usize, now: Instant) {
        let requests_empty = self.ifaces[i].neighbors[n].requests.is_empty();
        self.nbr_event(i, n, NbrEvent::ExchangeDone { requests_empty }, now);
    }

    /// Requests as many missing LSAs as fit in one packet.
    pub(super) fn send_lsr(&mut self, i: usize, n: usize, now: Instant) {
        let per_packet = (self.ifaces[i].budget() - HEADER_LEN) / 12;
        let rxmt = self.rxmt(i);
        let nbr = &mut self.ifaces[i].neighbors[n];
        let keys: Vec<_> = nbr.requests.keys().take(per_packet).copied().collect();
        if keys.is_empty() {
            nbr.lsr_rxmt_at = None;
            return;
        }
        nbr.requests_outstanding = keys.clone();
        nbr.lsr_rxmt_at = Some(now + rxmt);
        let dst = nbr.addr;
        let entries = keys.into_iter().map(LsRequestEntry::from).collect();
        self.send(i, dst, Body::LsRequest(LsRequest { entries }));
    }

    /// After updates arrive: next request batch, or LoadingDone when nothing is missing.
    pub(super) fn check_requests(&mut self, i: usize, n: usize, now: Instant) {
        let nbr = &self.ifaces[i].neighbors[n];
        if !nbr.exchanging() {
            return;
        }
        if nbr.state == NbrState::Loading && nbr.requests.is_empty() {
            self.ifaces[i].neighbors[n].lsr_rxmt_at = None;
            self.nbr_event(i, n, NbrEvent::LoadingDone, now);
            return;
        }
        let answered = nbr
            .requests_outstanding
            .iter()
            .all(|k| !nbr.requests.contains_key(k));
        if nbr.state == NbrState::Loading && answered {
            self.send_lsr(i, n, now);
        }
    }

    pub(super) fn on_lsr(
        &mut self,
        i: usize,
        n: usize,
        lsr: LsRequest,
        now: Instant,
    ) -> Result<(), &'static str> {
        let nbr = &self.ifaces[i].neighbors[n];
        if nbr.state < NbrState::Exchange {
            return Err("lsr-state");
        }
        let mut lsas = Vec::with_capacity(lsr.entries.len());
        for entry in &lsr.entries {
            match entry.key().and_then(|k| self.lsdb.get(&k)) {
                Some(e) => lsas.push(e.lsa(now)),
                None => {
                    self.nbr_event(i, n, NbrEvent::BadLsReq, now);
                    return Err("lsr-unknown");
                }
            }
        }
        let dst = nbr.addr;
        self.send_lsas(i, dst, lsas);
        Ok(())
    }

    /// Sends `lsas` in as few updates as fit, each aged by the transmit delay (13.3).
    pub(super) fn send_lsas(&mut self, i: usize, dst: std::net::Ipv4Addr, lsas: Vec<Lsa>) {
        let budget = self.ifaces[i].budget() - HEADER_LEN - 4;
        let delay = self.ifaces[i].cfg.transmit_delay;
        let mut batch: Vec<Lsa> = Vec::new();
        let mut size = 0;
        for lsa in lsas {
            let lsa = lsa.with_age(lsa.header.age.saturating_add(delay));
            let len = lsa.bytes().len();
            if !batch.is_empty() && size + len > budget {
                self.send(
                    i,
                    dst,
                    Body::LsUpdate(LsUpdate::new(std::mem::take(&mut batch))),
                );
                size = 0;
            }
            size += len;
            batch.push(lsa);
        }
        if !batch.is_empty() {
            self.send(i, dst, Body::LsUpdate(LsUpdate::new(batch)));
        }
    }

    /// DD (master), LSR and LSU retransmissions for one neighbour.
    pub(super) fn retransmit(&mut self, i: usize, n: usize, now: Instant) {
        let rxmt = self.rxmt(i);
        let nbr = &mut self.ifaces[i].neighbors[n];
        if nbr.dd_rxmt_at.is_some_and(|t| now >= t)
            && matches!(nbr.state, NbrState::ExStart | NbrState::Exchange)
            && nbr.master
        {
            nbr.dd_rxmt_at = Some(now + rxmt);
            self.resend_dd(i, n);
        }
        let nbr = &mut self.ifaces[i].neighbors[n];
        if nbr.lsr_rxmt_at.is_some_and(|t| now >= t) {
            self.send_lsr(i, n, now);
        }
        let nbr = &mut self.ifaces[i].neighbors[n];
        if nbr.rxmt_at.is_some_and(|t| now >= t) {
            if nbr.retransmit.is_empty() {
                nbr.rxmt_at = None;
                return;
            }
            nbr.rxmt_at = Some(now + rxmt);
            let wanted: Vec<_> = nbr.retransmit.iter().map(|(k, h)| (*k, *h)).collect();
            let dst = nbr.addr;
            let mut lsas = Vec::new();
            let mut stale = Vec::new();
            for (key, header) in wanted {
                match self.lsdb.get(&key) {
                    Some(e) if e.header(now).compare(&header).is_eq() => lsas.push(e.lsa(now)),
                    _ => match self.own_grace(i, &key) {
                        Some(g) if g.header.compare(&header).is_eq() => lsas.push(g.clone()),
                        _ => stale.push(key),
                    },
                }
            }
            let nbr = &mut self.ifaces[i].neighbors[n];
            for key in stale {
                nbr.retransmit.remove(&key);
            }
            self.counters.retransmitted += lsas.len() as u64;
            self.send_lsas(i, dst, lsas);
        }
    }
}
