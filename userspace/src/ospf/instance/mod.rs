//! One OSPFv2 router: interfaces, neighbours, the LSDB and this router's own LSAs, driven
//! by received packets, timer ticks and announcement changes; it queues packets to send.
//! Pure: time is passed in, nothing here touches a socket.
//!
//! All interfaces belong to one area, so one database holds area- and AS-scoped LSAs alike.

mod exchange;
mod flood;
mod graceful;
mod hello;
mod origin;
mod status;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::warn;

use super::interface::{Candidate, IfState, NetworkType, elect};
use super::lsa::{Lsa, LsaHeader, LsaKey};
use super::lsdb::Lsdb;
use super::neighbor::{NbrEvent, NbrState, Neighbor, next_state};
use super::packet::{self, Auth, Body, Header, Packet};

pub use graceful::{EXIT_COMPLETED, EXIT_TIMEOUT, EXIT_TOPOLOGY, GrConfig};
pub use status::{Counters, GrStatus, HelperStatus, InstanceStatus};

/// RFC 2328 appendix B.
pub const MIN_LS_INTERVAL: Duration = Duration::from_secs(5);
pub const MIN_LS_ARRIVAL: Duration = Duration::from_secs(1);
/// IP header (20) plus room for an MD5 digest, taken off the MTU when sizing packets.
const PACKET_OVERHEAD: usize = 20 + 16;

/// Bounds on the state neighbours can make this router keep (RFC 2328 sets none). What
/// goes past one is dropped and counted (`dropped` reasons `neighbor-limit`, `lsdb-limit`,
/// `request-limit`, `retransmit-limit`), and logged once each time the bound is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Neighbours per interface: Hellos from further routers are ignored.
    pub max_neighbors: usize,
    /// LSAs in the database: new LSAs beyond it are not installed (updates of LSAs already
    /// held, and this router's own, always are). Also bounds every neighbour's link state
    /// request and retransmission list.
    pub max_lsas: usize,
}

/// The config's defaults (`[ospf]` `max_neighbors`, `max_lsas`).
impl Default for Limits {
    fn default() -> Self {
        Self {
            max_neighbors: crate::config::OspfConfig::DEFAULT_MAX_NEIGHBORS,
            max_lsas: crate::config::OspfConfig::DEFAULT_MAX_LSAS,
        }
    }
}

impl From<&crate::config::OspfConfig> for Limits {
    fn from(cfg: &crate::config::OspfConfig) -> Self {
        Self {
            max_neighbors: cfg.max_neighbors,
            max_lsas: cfg.max_lsas,
        }
    }
}

/// The `dropped` reasons of the limits, also what `InstanceStatus::limits_reached` lists.
const NEIGHBOR_LIMIT: &str = "neighbor-limit";
const LSDB_LIMIT: &str = "lsdb-limit";
const REQUEST_LIMIT: &str = "request-limit";
const RETRANSMIT_LIMIT: &str = "retransmit-limit";
const LIMIT_REASONS: [&str; 4] = [NEIGHBOR_LIMIT, LSDB_LIMIT, REQUEST_LIMIT, RETRANSMIT_LIMIT];

/// How long a starting router's first LSAs wait for an adjacency to reach Full. Until then
/// nobody could receive them, and originating early would make the one that matters (with
/// the adjacency, and the VIPs) wait MinLSInterval behind it; FRR originates on the first
/// Full adjacency too. A router that stays alone originates when this passes.
const FIRST_ORIGINATION_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceConfig {
    pub name: String,
    pub area: Ipv4Addr,
    pub network: NetworkType,
    pub hello_interval: u16,
    pub dead_interval: u32,
    pub retransmit_interval: u16,
    pub transmit_delay: u16,
    pub priority: u8,
    pub cost: u16,
    pub auth: Auth,
}

/// The address an interface runs OSPF on, learned from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfaceAddr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u16,
}

impl IfaceAddr {
    pub fn mask(&self) -> Ipv4Addr {
        let bits = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len.min(32)))
            .unwrap_or(0);
        Ipv4Addr::from(bits)
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & u32::from(self.mask()))
    }

    pub fn contains(&self, other: Ipv4Addr) -> bool {
        u32::from(other) & u32::from(self.mask()) == u32::from(self.network())
    }
}

/// How one VIP is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "as", rename_all = "kebab-case")]
pub enum Announce {
    /// A /32 stub link in the Router-LSA.
    Stub { metric: u16 },
    /// An AS-external LSA for the /32.
    External { metric: u32, type2: bool },
}

/// A packet to send on interface `iface` to `dst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub iface: usize,
    pub dst: Ipv4Addr,
    pub data: Vec<u8>,
}

struct Iface {
    cfg: IfaceConfig,
    addr: Option<IfaceAddr>,
    state: IfState,
    dr: Ipv4Addr,
    bdr: Ipv4Addr,
    hello_at: Instant,
    wait_until: Option<Instant>,
    neighbors: Vec<Neighbor>,
    delayed_acks: Vec<LsaHeader>,
    /// LSAs flooded out of this interface since the output was last taken: they leave
    /// together, in as few updates as the MTU allows (`take_output`).
    floods: BTreeMap<LsaKey, Lsa>,
    /// Our grace-LSA on this link (RFC 3623), kept out of the database: each interface has
    /// its own under the same key.
    grace: Option<Lsa>,
}

impl Iface {
    fn is_broadcast(&self) -> bool {
        self.cfg.network == NetworkType::Broadcast
    }

    fn mtu(&self) -> u16 {
        self.addr.map_or(1500, |a| a.mtu)
    }

    fn budget(&self) -> usize {
        usize::from(self.mtu())
            .saturating_sub(PACKET_OVERHEAD)
            .max(256)
    }

    fn my_addr(&self) -> Ipv4Addr {
        self.addr.map_or(Ipv4Addr::UNSPECIFIED, |a| a.addr)
    }

    /// Destination for floods and delayed acks (13.3 step 5, 13.5).
    fn flood_dst(&self) -> Ipv4Addr {
        if self.is_broadcast() && !matches!(self.state, IfState::Dr | IfState::Backup) {
            packet::ALL_D_ROUTERS
        } else {
            packet::ALL_SPF_ROUTERS
        }
    }
}

pub struct Instance {
    router_id: Ipv4Addr,
    ifaces: Vec<Iface>,
    lsdb: Lsdb,
    announced: BTreeMap<Ipv4Addr, Announce>,
    /// Until when a first origination waits for an adjacency (see `originate`).
    first_origination_by: Instant,
    last_originated: HashMap<LsaKey, Instant>,
    /// Highest sequence number seen for each own LSA, ours or an earlier incarnation's: the
    /// next origination goes past it even after the database dropped a flushed copy (else a
    /// restart would re-originate at InitialSequenceNumber and neighbours holding the old
    /// MaxAge instance would keep preferring it).
    own_seq: HashMap<LsaKey, i32>,
    /// LSAs of types 1-5 and 7 whose instance (by sequence number) changed content from the
    /// one it replaced, rather than refreshing it: such an instance still on a neighbour's
    /// retransmission list is a topology change it has not acknowledged (RFC 3623 3.1).
    changed_seq: HashMap<LsaKey, i32>,
    /// Own LSAs seen with a higher sequence number (13.4): originate past them.
    force_originate: HashSet<LsaKey>,
    min_ls_interval: Duration,
    crypto_seq: u32,
    wall_secs: u32,
    dd_seed: u32,
    shutting_down: bool,
    out: Vec<Transmit>,
    counters: Counters,
    limits: Limits,
    /// Limits reached and logged; a limit is logged again only after usage fell below it.
    limits_reached: BTreeSet<&'static str>,
    /// The interface each link-local LSA in the database belongs to.
    link_scope: HashMap<LsaKey, usize>,
    gr: GrConfig,
    restart: Option<graceful::Restart>,
    /// The grace period this restart announced (seconds).
    restart_grace_period: u32,
    /// How the last graceful restart ended, and when.
    gr_restart_exit: Option<(&'static str, Instant)>,
    /// The last helper mode that ended: for whom, why, when.
    gr_helper_exit: Option<(Ipv4Addr, &'static str, Instant)>,
    /// The time of the last event handled, for calls that are not given one.
    last_tick: Instant,
}

impl Instance {
    /// `wall_secs` (seconds since the epoch) seeds the MD5 sequence number so it keeps
    /// increasing across restarts, and the DD sequence numbers.
    pub fn new(
        router_id: Ipv4Addr,
        interfaces: Vec<IfaceConfig>,
        wall_secs: u32,
        now: Instant,
    ) -> Self {
        Self {
            router_id,
            ifaces: interfaces
                .into_iter()
                .map(|cfg| Iface {
                    cfg,
                    addr: None,
                    state: IfState::Down,
                    dr: Ipv4Addr::UNSPECIFIED,
                    bdr: Ipv4Addr::UNSPECIFIED,
                    hello_at: now,
                    wait_until: None,
                    neighbors: Vec::new(),
                    delayed_acks: Vec::new(),
                    floods: BTreeMap::new(),
                    grace: None,
                })
                .collect(),
            lsdb: Lsdb::default(),
            announced: BTreeMap::new(),
            first_origination_by: now + FIRST_ORIGINATION_WAIT,
            last_originated: HashMap::new(),
            own_seq: HashMap::new(),
            changed_seq: HashMap::new(),
            force_originate: HashSet::new(),
            min_ls_interval: MIN_LS_INTERVAL,
            crypto_seq: wall_secs,
            wall_secs,
            dd_seed: wall_secs,
            shutting_down: false,
            out: Vec::new(),
            counters: Counters::default(),
            limits: Limits::default(),
            limits_reached: BTreeSet::new(),
            link_scope: HashMap::new(),
            gr: GrConfig::default(),
            restart: None,
            restart_grace_period: 0,
            gr_restart_exit: None,
            gr_helper_exit: None,
            last_tick: now,
        }
    }

    /// Replaces the bounds; state already past a lowered bound stays until it goes.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = Limits {
            max_neighbors: limits.max_neighbors.max(1),
            max_lsas: limits.max_lsas.max(1),
        };
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Something was dropped at a bound: counted always, logged once per crossing.
    fn limit_reached(&mut self, reason: &'static str, iface: usize) {
        *self.counters.dropped.entry(reason).or_default() += 1;
        if self.limits_reached.insert(reason) {
            let name = self.ifaces.get(iface).map_or("", |i| i.cfg.name.as_str());
            warn!(
                interface = name,
                limit = reason,
                max_neighbors = self.limits.max_neighbors,
                max_lsas = self.limits.max_lsas,
                "ospf: limit reached, dropping what goes past it"
            );
        }
    }

    /// Forgets the limits usage fell below, so reaching them again is logged again.
    fn rearm_limits(&mut self) {
        if self.limits_reached.is_empty() {
            return;
        }
        let Limits {
            max_neighbors,
            max_lsas,
        } = self.limits;
        let neighbors = || self.ifaces.iter().flat_map(|i| &i.neighbors);
        let at = |reason: &str| match reason {
            NEIGHBOR_LIMIT => self
                .ifaces
                .iter()
                .any(|i| i.neighbors.len() >= max_neighbors),
            LSDB_LIMIT => self.lsdb.len() >= max_lsas,
            REQUEST_LIMIT => neighbors().any(|n| n.requests.len() >= max_lsas),
            RETRANSMIT_LIMIT => neighbors().any(|n| n.retransmit.len() >= max_lsas),
            _ => false,
        };
        let still: BTreeSet<&'static str> = self
            .limits_reached
            .iter()
            .copied()
            .filter(|r| at(r))
            .collect();
        self.limits_reached = still;
    }

    pub fn router_id(&self) -> Ipv4Addr {
        self.router_id
    }

    /// Packets queued since the last call. What was flooded since leaves now: one update
    /// per interface carrying every LSA due (more only where the MTU requires).
    pub fn take_output(&mut self) -> Vec<Transmit> {
        self.send_floods();
        std::mem::take(&mut self.out)
    }

    pub fn set_wall_clock(&mut self, wall_secs: u32) {
        self.wall_secs = wall_secs;
    }

    pub fn set_min_ls_interval(&mut self, interval: Duration) {
        self.min_ls_interval = interval;
    }

    /// Replaces the announced VIPs; new ones and withdrawals are originated or flushed now
    /// (a Router-LSA change still waits out MinLSInterval).
    pub fn set_announcements(&mut self, announced: BTreeMap<Ipv4Addr, Announce>, now: Instant) {
        if announced != self.announced {
            self.announced = announced;
            self.originate(now);
        }
    }

    pub fn announced(&self) -> &BTreeMap<Ipv4Addr, Announce> {
        &self.announced
    }

    /// Updates the configuration of interface `i` in place (timers, cost, auth, priority).
    /// A change of area or network type restarts the interface.
    pub fn reconfigure_interface(&mut self, i: usize, cfg: IfaceConfig, now: Instant) {
        let Some(iface) = self.ifaces.get_mut(i) else {
            return;
        };
        let restart = iface.cfg.area != cfg.area
            || iface.cfg.network != cfg.network
            || iface.cfg.hello_interval != cfg.hello_interval
            || iface.cfg.dead_interval != cfg.dead_interval
            || iface.cfg.priority != cfg.priority;
        iface.cfg = cfg;
        if restart && let Some(addr) = iface.addr {
            self.interface_down(i, now);
            self.interface_up(i, addr, now);
        } else {
            self.originate(now);
        }
    }

    /// InterfaceUp (9.3), or an address/MTU change.
    pub fn interface_up(&mut self, i: usize, addr: IfaceAddr, now: Instant) {
        let Some(iface) = self.ifaces.get_mut(i) else {
            return;
        };
        if iface.state != IfState::Down {
            if iface.addr == Some(addr) {
                return;
            }
            self.interface_down(i, now);
        }
        let iface = &mut self.ifaces[i];
        iface.addr = Some(addr);
        iface.hello_at = now;
        iface.state = match iface.cfg.network {
            NetworkType::PointToPoint => IfState::PointToPoint,
            NetworkType::Broadcast if iface.cfg.priority == 0 => IfState::DrOther,
            NetworkType::Broadcast => {
                iface.wait_until =
                    Some(now + Duration::from_secs(u64::from(iface.cfg.dead_interval)));
                IfState::Waiting
            }
        };
        self.announce_restart(i);
        self.originate(now);
    }

    /// InterfaceDown (9.3): every neighbour is killed.
    pub fn interface_down(&mut self, i: usize, now: Instant) {
        let Some(iface) = self.ifaces.get(i) else {
            return;
        };
        for n in 0..iface.neighbors.len() {
            self.nbr_event(i, n, NbrEvent::KillNbr, now);
        }
        let iface = &mut self.ifaces[i];
        iface.neighbors.clear();
        iface.state = IfState::Down;
        iface.addr = None;
        iface.dr = Ipv4Addr::UNSPECIFIED;
        iface.bdr = Ipv4Addr::UNSPECIFIED;
        iface.wait_until = None;
        iface.delayed_acks.clear();
        iface.floods.clear();
        self.originate(now);
    }

    /// A lower layer (BFD) says the neighbour at `addr` on interface `i` is gone: KillNbr
    /// (10.2) at once, rather than after the dead interval.
    pub fn kill_neighbor(&mut self, i: usize, addr: Ipv4Addr, now: Instant) {
        let Some(n) = self
            .ifaces
            .get(i)
            .and_then(|iface| iface.neighbors.iter().position(|nb| nb.addr == addr))
        else {
            return;
        };
        if self.ifaces[i].neighbors[n].helping.is_some() {
            // Its BFD went with its daemon; the grace period decides (RFC 3623 3).
            return;
        }
        self.nbr_event(i, n, NbrEvent::KillNbr, now);
        self.ifaces[i]
            .neighbors
            .retain(|n| n.state != NbrState::Down);
    }

    /// Handles one received OSPF packet (the IP payload) on interface `i`, sent from the
    /// link itself (IP TTL 1).
    pub fn receive(&mut self, i: usize, src: Ipv4Addr, dst: Ipv4Addr, data: &[u8], now: Instant) {
        self.receive_with_ttl(i, src, dst, 1, data, now);
    }

    /// Handles one received OSPF packet with the IP TTL it arrived with: OSPF speakers send
    /// with TTL 1 (RFC 2328 A.1; 255 with GTSM, as BIRD's `ttl security`), so anything
    /// else crossed a router and is dropped.
    pub fn receive_with_ttl(
        &mut self,
        i: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        data: &[u8],
        now: Instant,
    ) {
        self.counters.rx_packets += 1;
        self.last_tick = now;
        if let Err(reason) = self.receive_inner(i, src, dst, ttl, data, now) {
            *self.counters.dropped.entry(reason).or_default() += 1;
        }
    }

    fn receive_inner(
        &mut self,
        i: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        data: &[u8],
        now: Instant,
    ) -> Result<(), &'static str> {
        let iface = self.ifaces.get(i).ok_or("interface")?;
        let Some(addr) = iface.addr.filter(|_| iface.state != IfState::Down) else {
            return Err("interface-down");
        };
        if src == addr.addr {
            return Err("own");
        }
        if ttl != 1 && ttl != 255 {
            return Err("ttl");
        }
        // On-link sources only: on broadcast networks the neighbours share our subnet
        // (8.2); on point-to-point links too, unless the address is a /32 (unnumbered or
        // with a peer address), where the TTL is the check.
        let on_link = addr.contains(src) || (!iface.is_broadcast() && addr.prefix_len >= 32);
        if !on_link {
            return Err("subnet");
        }
        let dst_ok = dst == addr.addr
            || dst == packet::ALL_SPF_ROUTERS
            || (dst == packet::ALL_D_ROUTERS
                && matches!(iface.state, IfState::Dr | IfState::Backup));
        if !dst_ok {
            return Err("destination");
        }
        let (packet, received) = packet::decode(data, &iface.cfg.auth).map_err(|e| e.label())?;
        let Packet { header, body } = packet;
        if header.router_id == self.router_id {
            return Err("own");
        }
        if header.area_id != iface.cfg.area {
            return Err("area");
        }
        *self
            .counters
            .rx
            .entry(body.packet_type().name())
            .or_default() += 1;
        let found = self.find_neighbor(i, src, header.router_id);
        if let (Some(seq), Some(n)) = (received.crypto_seq, found) {
            let nbr = &mut self.ifaces[i].neighbors[n];
            if nbr.crypto_seq.is_some_and(|last| seq < last) {
                return Err("auth-replay");
            }
            nbr.crypto_seq = Some(seq);
        }
        match body {
            Body::Hello(h) => self.on_hello(i, src, header, h, received.crypto_seq, now),
            other => {
                let n = found.ok_or("unknown-neighbor")?;
                match other {
                    Body::DbDescription(dd) => self.on_dd(i, n, dd, now),
                    Body::LsRequest(lsr) => self.on_lsr(i, n, lsr, now),
                    Body::LsUpdate(lsu) => self.on_lsu(i, n, lsu, now),
                    Body::LsAck(ack) => self.on_ack(i, n, ack),
                    Body::Hello(_) => Ok(()),
                }
            }
        }
    }

    /// On broadcast networks neighbours are known by address, on point-to-point by ID.
    fn find_neighbor(&self, i: usize, src: Ipv4Addr, router_id: Ipv4Addr) -> Option<usize> {
        let iface = &self.ifaces[i];
        iface.neighbors.iter().position(|n| {
            if iface.is_broadcast() {
                n.addr == src
            } else {
                n.router_id == router_id
            }
        })
    }

    /// Timers: hellos, wait timer, inactivity, retransmissions, delayed acks, aging,
    /// pending and refreshed originations.
    pub fn tick(&mut self, now: Instant) {
        self.last_tick = now;
        self.check_helping(now);
        self.check_restart(now);
        for i in 0..self.ifaces.len() {
            if self.ifaces[i].state == IfState::Down {
                continue;
            }
            if self.ifaces[i].wait_until.is_some_and(|t| now >= t) {
                self.ifaces[i].wait_until = None;
                if self.ifaces[i].state == IfState::Waiting {
                    self.run_election(i, now);
                }
            }
            if now >= self.ifaces[i].hello_at {
                self.send_hello(i, false);
                let interval = Duration::from_secs(u64::from(self.ifaces[i].cfg.hello_interval));
                self.ifaces[i].hello_at = now + interval;
            }
            for n in 0..self.ifaces[i].neighbors.len() {
                let nbr = &self.ifaces[i].neighbors[n];
                if nbr.state == NbrState::Down {
                    continue;
                }
                if now >= nbr.inactivity_deadline && nbr.helping.is_none() {
                    self.nbr_event(i, n, NbrEvent::InactivityTimer, now);
                    continue;
                }
                self.retransmit(i, n, now);
            }
            self.ifaces[i]
                .neighbors
                .retain(|n| n.state != NbrState::Down);
            for nbr in &mut self.ifaces[i].neighbors {
                nbr.sent_back
                    .retain(|_, t| now.saturating_duration_since(*t) < MIN_LS_ARRIVAL);
            }
            self.flush_delayed_acks(i);
        }
        self.age(now);
        self.originate(now);
        self.bound_own_state();
        self.rearm_limits();
    }

    /// Graceful stop: every own LSA is flushed (premature aging), so the VIPs leave the
    /// routers' tables before this router goes silent. Call `tick` until
    /// `flush_acknowledged`, then `say_goodbye`.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let own: Vec<LsaKey> = self
            .lsdb
            .iter()
            .filter(|(k, e)| {
                k.advertising_router == self.router_id && e.age(now) < super::lsa::MAX_AGE
            })
            .map(|(k, _)| *k)
            .collect();
        for key in own {
            self.flush(key, now);
        }
    }

    /// Whether every neighbour acknowledged everything we flooded.
    pub fn flush_acknowledged(&self) -> bool {
        self.ifaces
            .iter()
            .flat_map(|i| &i.neighbors)
            .all(|n| n.retransmit.is_empty())
    }

    /// A last Hello listing no neighbours: they see 1-Way and drop the adjacency at once
    /// instead of waiting out the dead interval.
    pub fn say_goodbye(&mut self) {
        for i in 0..self.ifaces.len() {
            if self.ifaces[i].state != IfState::Down {
                self.send_hello(i, true);
            }
        }
    }

    /// Applies a neighbour event and its side effects (10.3).
    fn nbr_event(&mut self, i: usize, n: usize, event: NbrEvent, now: Instant) {
        let adjacency = self.adjacency_wanted(i, n);
        let old = self.ifaces[i].neighbors[n].state;
        let new = next_state(old, event, adjacency);
        let restart = new == NbrState::ExStart && old >= NbrState::Exchange;
        if new == old && !restart {
            return;
        }
        self.counters.nbr_transitions += 1;
        let nbr = &mut self.ifaces[i].neighbors[n];
        nbr.state = new;
        if new <= NbrState::ExStart {
            nbr.clear_lists();
        }
        if new == NbrState::Down {
            nbr.crypto_seq = None;
        }
        match new {
            NbrState::ExStart => self.start_exstart(i, n, now),
            NbrState::Exchange => {
                let opaque_ok = self.ifaces[i].neighbors[n].options & packet::OPTION_O != 0;
                let scope = &self.link_scope;
                let nbr = &mut self.ifaces[i].neighbors[n];
                for header in self.lsdb.headers(now) {
                    let key = header.key();
                    if (key.ls_type >= super::lsa::TYPE_OPAQUE_LINK && !opaque_ok)
                        || (super::lsa::link_local(key.ls_type)
                            && scope.get(&key).is_some_and(|s| *s != i))
                    {
                        continue;
                    }
                    if header.age >= super::lsa::MAX_AGE {
                        nbr.retransmit.insert(header.key(), header);
                    } else {
                        nbr.summary.push_back(header);
                    }
                }
            }
            NbrState::Loading => self.send_lsr(i, n, now),
            _ => {}
        }
        if (old == NbrState::Full) != (new == NbrState::Full) {
            self.ifaces[i].neighbors[n].since = now;
            self.originate(now);
        }
        if (old >= NbrState::TwoWay) != (new >= NbrState::TwoWay) {
            self.neighbor_change(i, now);
        }
    }

    /// 10.4: adjacencies form on point-to-point links and with the DR and BDR.
    fn adjacency_wanted(&self, i: usize, n: usize) -> bool {
        let iface = &self.ifaces[i];
        if !iface.is_broadcast() {
            return true;
        }
        let nbr = &iface.neighbors[n];
        matches!(iface.state, IfState::Dr | IfState::Backup)
            || nbr.addr == iface.dr
            || nbr.addr == iface.bdr
    }

    /// The NeighborChange event (9.3).
    fn neighbor_change(&mut self, i: usize, now: Instant) {
        if matches!(
            self.ifaces[i].state,
            IfState::DrOther | IfState::Backup | IfState::Dr
        ) && self.ifaces[i].is_broadcast()
        {
            self.run_election(i, now);
        }
    }

    fn run_election(&mut self, i: usize, now: Instant) {
        let iface = &self.ifaces[i];
        let me = Candidate {
            router_id: self.router_id,
            addr: iface.my_addr(),
            priority: iface.cfg.priority,
            dr: iface.dr,
            bdr: iface.bdr,
        };
        let others: Vec<Candidate> = iface
            .neighbors
            .iter()
            .filter(|n| n.state >= NbrState::TwoWay)
            .map(|n| Candidate {
                router_id: n.router_id,
                addr: n.addr,
                priority: n.priority,
                dr: n.dr,
                bdr: n.bdr,
            })
            .collect();
        let result = elect(me, &others);
        let changed = (result.dr, result.bdr) != (iface.dr, iface.bdr);
        let iface = &mut self.ifaces[i];
        iface.dr = result.dr;
        iface.bdr = result.bdr;
        iface.state = result.state_of(me.addr);
        if changed {
            for n in 0..iface.neighbors.len() {
                if self.ifaces[i].neighbors[n].state >= NbrState::TwoWay {
                    self.nbr_event(i, n, NbrEvent::AdjOk, now);
                }
            }
            // Tell the others at once rather than at the next hello.
            self.send_hello(i, false);
        }
        self.originate(now);
    }

    fn send(&mut self, i: usize, dst: Ipv4Addr, body: Body) {
        let packet = Packet {
            header: Header {
                packet_type: body.packet_type(),
                router_id: self.router_id,
                area_id: self.ifaces[i].cfg.area,
            },
            body,
        };
        // Non-decreasing and ahead of any earlier run: the larger of wall time and last + 1.
        self.crypto_seq = self.wall_secs.max(self.crypto_seq.wrapping_add(1));
        let data = packet.encode(&self.ifaces[i].cfg.auth, self.crypto_seq);
        *self
            .counters
            .tx
            .entry(packet.header.packet_type.name())
            .or_default() += 1;
        self.out.push(Transmit {
            iface: i,
            dst,
            data,
        });
    }
}

#[cfg(test)]
mod tests;
