//! Hello sending and receipt (RFC 2328 9.5, 10.5).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::{Instance, NEIGHBOR_LIMIT};
use crate::ospf::interface::IfState;
use crate::ospf::neighbor::{NbrEvent, NbrState, Neighbor};
use crate::ospf::packet::{self, Body, Header, Hello, OPTION_E};

impl Instance {
    /// `goodbye` lists no neighbours (sent on shutdown).
    pub(super) fn send_hello(&mut self, i: usize, goodbye: bool) {
        let iface = &self.ifaces[i];
        let Some(addr) = iface.addr else {
            return;
        };
        let neighbors = if goodbye {
            Vec::new()
        } else {
            iface
                .neighbors
                .iter()
                .filter(|n| n.state >= NbrState::Init)
                .map(|n| n.router_id)
                .collect()
        };
        let hello = Hello {
            network_mask: addr.mask(),
            hello_interval: iface.cfg.hello_interval,
            options: OPTION_E,
            priority: iface.cfg.priority,
            dead_interval: iface.cfg.dead_interval,
            designated_router: iface.dr,
            backup_designated_router: iface.bdr,
            neighbors,
        };
        self.send(i, packet::ALL_SPF_ROUTERS, Body::Hello(hello));
    }

    pub(super) fn on_hello(
        &mut self,
        i: usize,
        src: Ipv4Addr,
        header: Header,
        hello: Hello,
        crypto_seq: Option<u32>,
        now: Instant,
    ) -> Result<(), &'static str> {
        let iface = &self.ifaces[i];
        let broadcast = iface.is_broadcast();
        if broadcast && iface.addr.map(|a| a.mask()) != Some(hello.network_mask) {
            return Err("hello-mask");
        }
        if hello.hello_interval != iface.cfg.hello_interval
            || hello.dead_interval != iface.cfg.dead_interval
        {
            return Err("hello-timers");
        }
        if hello.options & OPTION_E != OPTION_E {
            return Err("hello-options");
        }
        let dead = Duration::from_secs(u64::from(iface.cfg.dead_interval));
        let n = match self.find_neighbor(i, src, header.router_id) {
            Some(n) => n,
            None if iface.neighbors.len() >= self.limits.max_neighbors => {
                self.limit_reached(NEIGHBOR_LIMIT, i);
                return Ok(());
            }
            None => {
                let mut nbr = Neighbor::new(header.router_id, src, now);
                nbr.crypto_seq = crypto_seq;
                self.ifaces[i].neighbors.push(nbr);
                self.ifaces[i].neighbors.len() - 1
            }
        };
        let nbr = &mut self.ifaces[i].neighbors[n];
        let (old_priority, old_dr, old_bdr) = (nbr.priority, nbr.dr, nbr.bdr);
        let first = nbr.state == NbrState::Down;
        nbr.router_id = header.router_id;
        nbr.addr = src;
        nbr.options = hello.options;
        let helping = nbr.helping.is_some();
        if broadcast && !helping {
            nbr.priority = hello.priority;
            nbr.dr = hello.designated_router;
            nbr.bdr = hello.backup_designated_router;
        }
        nbr.inactivity_deadline = now + dead;
        self.nbr_event(i, n, NbrEvent::HelloReceived, now);

        if !hello.neighbors.contains(&self.router_id) {
            if !helping {
                // A restarting neighbour forgot us; it keeps its adjacency (RFC 3623 3).
                self.nbr_event(i, n, NbrEvent::OneWayReceived, now);
            }
            return Ok(());
        }
        self.nbr_event(i, n, NbrEvent::TwoWayReceived, now);
        if !broadcast || helping {
            return Ok(());
        }

        let waiting = self.ifaces[i].state == IfState::Waiting;
        let declares_dr = hello.designated_router == src;
        let declares_bdr = hello.backup_designated_router == src;
        let declared_dr = !first && old_dr == src;
        let declared_bdr = !first && old_bdr == src;
        let mut change = !first && old_priority != hello.priority;
        let my_addr = self.ifaces[i].my_addr();
        if waiting && self.restart.is_some() && hello.designated_router == my_addr {
            // RFC 3623 2.2 (3): a neighbour names us DR, so we were the DR before the
            // restart: we declare ourselves again. Left to the election, nobody would declare
            // DR and the BDR would take over, with a new Network-LSA that ends every
            // helper's help.
            self.ifaces[i].dr = my_addr;
            self.ifaces[i].wait_until = None;
            self.run_election(i, now);
            return Ok(());
        }
        if waiting
            && ((declares_dr && hello.backup_designated_router.is_unspecified()) || declares_bdr)
        {
            // BackupSeen: the segment already has its DR/BDR, no need to wait longer.
            self.ifaces[i].wait_until = None;
            self.run_election(i, now);
            return Ok(());
        }
        change |= declares_dr != declared_dr || declares_bdr != declared_bdr;
        if change {
            self.neighbor_change(i, now);
        }
        Ok(())
    }
}
