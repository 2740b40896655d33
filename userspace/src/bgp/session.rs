//! The session of one peer (RFC 4271 §8) as a pure state machine: events in, actions out,
//! time passed in. No sockets, no clocks, no tasks: the I/O edge (`io`) performs the
//! actions and feeds back what happened.
//!
//! Shape: [`Session::event`] takes `now` and an [`Event`] and returns the [`Action`]s to
//! perform in order; [`Session::next_deadline`] says when to deliver [`Event::Tick`] next
//! (connect retry, hold and keepalive timers live inside as deadlines).
//!
//! Connections are named by the caller ([`ConnId`]). Up to two exist at once, one per
//! direction, while a connection collision (§6.8) is being resolved: the one initiated by the
//! speaker with the higher BGP identifier survives, the other gets Cease / Connection
//! Collision Resolution.
//!
//! Received routes are counted and discarded. What we announce is the [`Routes`] set given
//! by [`Event::Announce`]: the whole set once a session is established (IPv4 in classic NLRI,
//! IPv6 in MP_REACH_NLRI, each only if negotiated), then End-of-RIB per family, and from then
//! on only the differences.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::{PeerConfig, RouteAttrs, Routes};
use super::packet::{
    AsPath, Capability, Codec, DecodeError, GracefulRestart, MAX_LEN, Message, MpReach, MpUnreach,
    NextHop, Notification, Open, OpenError, Origin, PathAttrs, RouteRefresh, Update, code, decode,
    subcode,
};
use super::prefix::{Family, Prefix};

/// The "large value" hold timer of OpenSent (RFC 4271 §8.2.2 suggests 4 minutes).
const OPEN_HOLD: Duration = Duration::from_secs(240);
/// LOCAL_PREF sent to iBGP peers.
const IBGP_LOCAL_PREF: u32 = 100;

/// A TCP connection, named by the I/O edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ConnId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// Our addresses usable as next hops on a connection, found by the I/O edge from the local
/// end of the socket and the interface it is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NextHops {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// Only when the peer is on the same link (RFC 2545 §3).
    pub v6_link_local: Option<Ipv6Addr>,
}

// Messages are the large variants and the common ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start (or restart after `ManualStop`): connect, or wait for the peer if passive.
    ManualStart,
    /// Stop: Cease / Administrative Shutdown with the optional shutdown communication on
    /// every connection, then Idle until the next `ManualStart`.
    ManualStop {
        message: Option<String>,
    },
    /// Cease / Administrative Reset with the optional communication, then start over.
    AdminReset {
        message: Option<String>,
    },
    /// A TCP connection is up: ours from the last `Action::Connect` (`outgoing`), or one the
    /// peer opened to us.
    TcpConnected {
        conn: ConnId,
        outgoing: bool,
        next_hops: NextHops,
    },
    /// The attempt started by the last `Action::Connect` failed.
    TcpFailed,
    /// The peer closed the connection, or it broke.
    TcpClosed {
        conn: ConnId,
    },
    Message {
        conn: ConnId,
        msg: Message,
    },
    /// A message that could not be decoded; the session answers with its NOTIFICATION.
    DecodeError {
        conn: ConnId,
        error: DecodeError,
    },
    /// Time passed: fire whatever deadline is due.
    Tick,
    /// A new set of routes to announce.
    Announce(Routes),
    /// Whether the routes given so far are what this process means to announce (the
    /// announce policy has settled after a start). Until then, a restarting session with
    /// graceful restart negotiated holds its End-of-RIB back, so the peer keeps our stale
    /// routes rather than dropping those whose condition is not true again yet. Settled
    /// unless told otherwise.
    Settled(bool),
    /// The peer's BFD session went down (RFC 5882 §4.3): the connection goes at once with
    /// Cease / BFD Down (RFC 9384) rather than waiting for the hold timer.
    BfdDown,
    /// Our addresses on a connection, found again by the I/O edge (an address appeared,
    /// e.g. the link-local one after duplicate address detection, or changed): routes
    /// already sent go again with the new next hops, those left without one are withdrawn.
    NextHops {
        conn: ConnId,
        next_hops: NextHops,
    },
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer (abandoning any attempt still under way); answer
    /// with `TcpConnected { outgoing: true }` or `TcpFailed`.
    Connect,
    /// Abandon the attempt under way, if any.
    AbortConnect,
    /// Send this message on this connection (encode with [`Session::codec`]).
    Send {
        conn: ConnId,
        msg: Message,
    },
    /// Close the connection once what was sent on it is written.
    Close {
        conn: ConnId,
    },
    StateChanged {
        from: State,
        to: State,
    },
    Established(Box<Negotiated>),
    /// A connection that had reached OpenSent went away, and why. Collision losers are not
    /// reported.
    Down {
        reason: DownReason,
        was_established: bool,
    },
}

/// What the OPEN exchange settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Negotiated {
    pub peer_as: u32,
    pub peer_id: Ipv4Addr,
    /// Seconds; 0 means no hold timer and no keepalives.
    pub hold_time: u16,
    pub keepalive: u16,
    pub four_octet_as: bool,
    pub route_refresh: bool,
    /// Families both sides offered.
    pub families: Vec<Family>,
    /// The peer's graceful restart capability. As the receiving side we hold none of the
    /// peer's routes, so helper mode has nothing to keep: the capability is only noted.
    pub graceful_restart: Option<GracefulRestartInfo>,
    /// Both sides sent the graceful restart capability: when this session ends without a
    /// NOTIFICATION (our process killed), the peer keeps our routes for our restart time.
    pub graceful_restart_negotiated: bool,
    /// Both sides set the N bit (RFC 8538): a NOTIFICATION other than Hard Reset also
    /// keeps the routes, so a deliberate stop is sent as Hard Reset.
    pub graceful_notification: bool,
    /// Codes of every capability the peer sent.
    pub peer_capabilities: Vec<u8>,
    /// Whether the surviving connection is the one we opened.
    pub outgoing: bool,
}

/// The peer's graceful restart capability, as shown in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GracefulRestartInfo {
    pub restart_time: u16,
    pub restart_state: bool,
    pub notification: bool,
    /// Families and whether forwarding state was preserved.
    pub families: Vec<(Family, bool)>,
}

impl From<&GracefulRestart> for GracefulRestartInfo {
    fn from(g: &GracefulRestart) -> Self {
        Self {
            restart_time: g.restart_time,
            restart_state: g.restart_state(),
            notification: g.notification(),
            families: g.families.clone(),
        }
    }
}

impl Negotiated {
    pub fn codec(&self) -> Codec {
        Codec {
            four_octet_as: self.four_octet_as,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// `ManualStop` or `AdminReset`.
    Stopped,
    /// We found an error and said so (hold timer expiry included).
    NotificationSent {
        notification: Notification,
        cause: String,
    },
    NotificationReceived(Notification),
    /// Closed without a NOTIFICATION.
    TcpClosed,
    /// The peer's BFD session went down; we sent this Cease.
    BfdDown(Notification),
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::Stopped => f.write_str("stopped"),
            DownReason::NotificationSent {
                notification,
                cause,
            } => write!(f, "sent {notification} ({cause})"),
            DownReason::NotificationReceived(n) => write!(f, "received {n}"),
            DownReason::TcpClosed => f.write_str("connection closed by peer"),
            DownReason::BfdDown(n) => write!(f, "BFD session down (sent {n})"),
        }
    }
}

/// Counters of one peer, over the life of the session object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SessionStats {
    pub messages_in: u64,
    pub messages_out: u64,
    pub updates_in: u64,
    pub updates_out: u64,
    /// Prefixes the peer announced to us (counted, then discarded).
    pub prefixes_received: u64,
    /// Prefixes the peer withdrew, treat-as-withdraw included.
    pub withdrawals_received: u64,
    /// UPDATEs handled as withdraw (RFC 7606).
    pub treat_as_withdraw: u64,
    /// Attributes dropped (RFC 7606 attribute discard).
    pub attributes_discarded: u64,
    pub end_of_rib_received: u64,
    pub route_refresh_received: u64,
    /// Announcements and withdrawals we sent.
    pub prefixes_announced: u64,
    pub prefixes_withdrawn: u64,
    pub connect_attempts: u64,
    pub established_transitions: u64,
    pub collisions: u64,
    /// Sessions brought down because the peer's BFD session went down.
    pub bfd_down: u64,
    /// Routes of the set not sent because the family was not negotiated or no next hop of
    /// that family is known, at the last computation.
    pub prefixes_unsendable: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ConnState {
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug, Clone)]
struct Conn {
    id: ConnId,
    outgoing: bool,
    state: ConnState,
    next_hops: NextHops,
    negotiated: Option<Negotiated>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
}

/// A peer's session. See the module documentation.
#[derive(Debug, Clone)]
pub struct Session {
    cfg: PeerConfig,
    state: State,
    started: bool,
    conns: Vec<Conn>,
    connect_pending: bool,
    retry_at: Option<Instant>,
    retry_interval: Duration,
    routes: Routes,
    /// What the established peer has from us: prefix and the merged attributes.
    adj_out: BTreeMap<Prefix, RouteAttrs>,
    stats: SessionStats,
    established_at: Option<Instant>,
    /// The R bit of our graceful restart capability: set until this session object has
    /// sent its first End-of-RIB, i.e. on the sessions right after the process (re)started.
    restarting: bool,
    settled: bool,
    /// End-of-RIB not sent yet on the established connection (waiting to be settled).
    end_of_rib_held: bool,
}

impl Session {
    pub fn new(cfg: PeerConfig) -> Self {
        Self {
            retry_interval: cfg.connect_retry,
            cfg,
            state: State::Idle,
            started: false,
            conns: Vec::new(),
            connect_pending: false,
            retry_at: None,
            routes: Routes::new(),
            adj_out: BTreeMap::new(),
            stats: SessionStats::default(),
            established_at: None,
            restarting: true,
            settled: true,
            end_of_rib_held: false,
        }
    }

    pub fn config(&self) -> &PeerConfig {
        &self.cfg
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// The End-of-RIB of the established session is held back until [`Event::Settled`].
    pub fn end_of_rib_held(&self) -> bool {
        self.end_of_rib_held
    }

    /// Since when the session is established.
    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }

    /// What the established (or OpenConfirm) connection negotiated.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.conns
            .iter()
            .filter(|c| c.negotiated.is_some())
            .max_by_key(|c| c.state)
            .and_then(|c| c.negotiated.as_ref())
    }

    /// The established connection.
    pub fn established_conn(&self) -> Option<ConnId> {
        self.established().map(|i| self.conns[i].id)
    }

    /// Our next hops on the established connection (before configured overrides).
    pub fn next_hops(&self) -> Option<NextHops> {
        self.established().map(|i| self.conns[i].next_hops)
    }

    /// The routes the peer currently has from us.
    pub fn advertised(&self) -> &BTreeMap<Prefix, RouteAttrs> {
        &self.adj_out
    }

    /// The wire format on `conn`: what its OPEN exchange negotiated, the default before.
    pub fn codec(&self, conn: ConnId) -> Codec {
        self.conns
            .iter()
            .find(|c| c.id == conn)
            .and_then(|c| c.negotiated.as_ref())
            .map(Negotiated::codec)
            .unwrap_or_default()
    }

    /// When to deliver the next [`Event::Tick`].
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .flat_map(|c| [c.hold_at, c.keepalive_at])
            .chain([self.retry_at])
            .flatten()
            .min()
    }

    /// Decodes one whole message received on `conn` with the connection's codec and feeds it.
    pub fn receive(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) -> Vec<Action> {
        let ev = match decode(bytes, self.codec(conn)) {
            Ok(msg) => Event::Message { conn, msg },
            Err(error) => Event::DecodeError { conn, error },
        };
        self.event(now, ev)
    }

    pub fn event(&mut self, now: Instant, ev: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match ev {
            Event::ManualStart => self.start(now, &mut out),
            Event::ManualStop { message } => {
                self.stop(now, subcode::cease::ADMIN_SHUTDOWN, message, &mut out);
            }
            Event::AdminReset { message } => {
                let started = self.started;
                self.stop(now, subcode::cease::ADMIN_RESET, message, &mut out);
                if started {
                    self.started = true;
                    if !self.cfg.passive {
                        self.retry_at = Some(now + self.retry_interval);
                    }
                }
            }
            Event::TcpConnected {
                conn,
                outgoing,
                next_hops,
            } => self.connected(now, conn, outgoing, next_hops, &mut out),
            Event::TcpFailed => {
                if self.connect_pending {
                    self.connect_pending = false;
                    if self.started && self.retry_at.is_none() {
                        self.retry_at = Some(now + self.retry_interval);
                    }
                }
            }
            Event::TcpClosed { conn } => {
                if let Some(i) = self.index(conn) {
                    self.drop_conn(now, i, DownReason::TcpClosed, &mut out);
                }
            }
            Event::Message { conn, msg } => {
                if let Some(i) = self.index(conn) {
                    self.stats.messages_in += 1;
                    self.message(now, i, msg, &mut out);
                }
            }
            Event::DecodeError { conn, error } => {
                if let Some(i) = self.index(conn) {
                    self.stats.messages_in += 1;
                    let n = error.notification();
                    self.fail(now, i, n, error.to_string(), &mut out);
                }
            }
            Event::Tick => self.tick(now, &mut out),
            Event::Settled(settled) => {
                self.settled = settled;
                if settled
                    && self.end_of_rib_held
                    && let Some(i) = self.established()
                {
                    self.end_of_rib(now, i, &mut out);
                }
            }
            Event::BfdDown => {
                let n = Notification::new(code::CEASE, subcode::cease::BFD_DOWN);
                let mut any = false;
                while !self.conns.is_empty() {
                    any = true;
                    self.send(now, 0, Message::Notification(n.clone()), &mut out);
                    self.drop_conn(now, 0, DownReason::BfdDown(n.clone()), &mut out);
                }
                if any {
                    self.stats.bfd_down += 1;
                }
            }
            Event::Announce(routes) => {
                self.routes = routes;
                if let Some(i) = self.established() {
                    self.sync(now, i, &[], &mut out);
                }
            }
            Event::NextHops { conn, next_hops } => {
                if let Some(i) = self.index(conn) {
                    let before = self.effective_next_hops(&self.conns[i].next_hops);
                    self.conns[i].next_hops = next_hops;
                    let after = self.effective_next_hops(&next_hops);
                    if self.conns[i].state == ConnState::Established {
                        let mut again = Vec::new();
                        if before.0 != after.0 {
                            again.push(Family::IPV4_UNICAST);
                        }
                        if before.1 != after.1 {
                            again.push(Family::IPV6_UNICAST);
                        }
                        if !again.is_empty() {
                            self.sync(now, i, &again, &mut out);
                        }
                    }
                }
            }
        }
        let to = self.derive_state();
        if to != self.state {
            out.push(Action::StateChanged {
                from: self.state,
                to,
            });
            self.state = to;
        }
        out
    }

    fn derive_state(&self) -> State {
        match self.conns.iter().map(|c| c.state).max() {
            Some(ConnState::Established) => State::Established,
            Some(ConnState::OpenConfirm) => State::OpenConfirm,
            Some(ConnState::OpenSent) => State::OpenSent,
            None if !self.started => State::Idle,
            None if self.connect_pending => State::Connect,
            None => State::Active,
        }
    }

    fn index(&self, conn: ConnId) -> Option<usize> {
        self.conns.iter().position(|c| c.id == conn)
    }

    fn established(&self) -> Option<usize> {
        self.conns
            .iter()
            .position(|c| c.state == ConnState::Established)
    }

    fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.started {
            return;
        }
        self.started = true;
        self.retry_interval = self.cfg.connect_retry;
        if !self.cfg.passive {
            self.connect(now, out);
        }
    }

    fn connect(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::Connect);
        self.stats.connect_attempts += 1;
        self.connect_pending = true;
        self.retry_at = Some(now + self.retry_interval);
        self.retry_interval = (self.retry_interval * 2).min(self.cfg.connect_retry_max);
    }

    fn stop(&mut self, now: Instant, sub: u8, message: Option<String>, out: &mut Vec<Action>) {
        let n = Notification::cease(sub, message.as_deref());
        let had = !self.conns.is_empty();
        let was_established = self.established().is_some();
        for i in 0..self.conns.len() {
            // A deliberate stop must not leave our routes at the peer as stale ones.
            let n = if self.conns[i]
                .negotiated
                .as_ref()
                .is_some_and(|n| n.graceful_notification)
            {
                Notification::hard_reset(&n)
            } else {
                n.clone()
            };
            self.send(now, i, Message::Notification(n), out);
            out.push(Action::Close {
                conn: self.conns[i].id,
            });
        }
        self.conns.clear();
        if self.connect_pending {
            out.push(Action::AbortConnect);
            self.connect_pending = false;
        }
        self.started = false;
        self.retry_at = None;
        self.retry_interval = self.cfg.connect_retry;
        self.adj_out.clear();
        self.established_at = None;
        self.end_of_rib_held = false;
        if had {
            out.push(Action::Down {
                reason: DownReason::Stopped,
                was_established,
            });
        }
    }

    fn connected(
        &mut self,
        now: Instant,
        conn: ConnId,
        outgoing: bool,
        next_hops: NextHops,
        out: &mut Vec<Action>,
    ) {
        if outgoing {
            self.connect_pending = false;
        }
        let refuse = !self.started
            || self.established().is_some()
            || self.conns.iter().any(|c| c.outgoing == outgoing)
            || self.index(conn).is_some()
            || (outgoing && self.cfg.passive);
        if refuse {
            out.push(Action::Close { conn });
            return;
        }
        self.retry_at = None;
        self.conns.push(Conn {
            id: conn,
            outgoing,
            state: ConnState::OpenSent,
            next_hops,
            negotiated: None,
            hold_at: Some(now + OPEN_HOLD),
            keepalive_at: None,
        });
        let i = self.conns.len() - 1;
        let open = self.our_open();
        self.send(now, i, Message::Open(open), out);
    }

    /// Our OPEN: multiprotocol per configured family, route refresh, graceful restart when
    /// configured, four-octet AS.
    pub fn our_open(&self) -> Open {
        let mut caps: Vec<Capability> = self
            .cfg
            .families()
            .into_iter()
            .map(Capability::Multiprotocol)
            .collect();
        caps.push(Capability::RouteRefresh);
        if let Some(restart_time) = self.cfg.graceful_restart {
            let mut flags = GracefulRestart::NOTIFICATION;
            if self.restarting {
                flags |= GracefulRestart::RESTART_STATE;
            }
            caps.push(Capability::GracefulRestart(GracefulRestart {
                flags,
                restart_time,
                // Forwarding state is preserved: the XDP program and its maps outlive us.
                families: self.cfg.families().into_iter().map(|f| (f, true)).collect(),
            }));
        }
        caps.push(Capability::FourOctetAs(self.cfg.local_as));
        Open::new(
            self.cfg.local_as,
            self.cfg.hold_time,
            self.cfg.router_id,
            caps,
        )
    }

    fn send(&mut self, now: Instant, i: usize, msg: Message, out: &mut Vec<Action>) {
        let c = &mut self.conns[i];
        if matches!(msg, Message::Keepalive | Message::Update(_))
            && let Some(n) = &c.negotiated
            && n.keepalive > 0
        {
            // RFC 4271 §10: the keepalive timer restarts with every KEEPALIVE or UPDATE.
            c.keepalive_at = Some(now + Duration::from_secs(u64::from(n.keepalive)));
        }
        if let Message::Update(u) = &msg {
            self.stats.updates_out += 1;
            self.stats.prefixes_announced += u.announced().count() as u64;
            self.stats.prefixes_withdrawn += u.withdrawn_all().count() as u64;
        }
        self.stats.messages_out += 1;
        out.push(Action::Send { conn: c.id, msg });
    }

    /// Sends `n` on connection `i`, closes it and reports it down.
    fn fail(
        &mut self,
        now: Instant,
        i: usize,
        n: Notification,
        cause: String,
        out: &mut Vec<Action>,
    ) {
        self.send(now, i, Message::Notification(n.clone()), out);
        self.drop_conn(
            now,
            i,
            DownReason::NotificationSent {
                notification: n,
                cause,
            },
            out,
        );
    }

    /// Closes connection `i` and reports it down.
    fn drop_conn(&mut self, now: Instant, i: usize, reason: DownReason, out: &mut Vec<Action>) {
        let c = self.conns.remove(i);
        out.push(Action::Close { conn: c.id });
        let was_established = c.state == ConnState::Established;
        if was_established {
            self.adj_out.clear();
            self.established_at = None;
            self.end_of_rib_held = false;
        }
        out.push(Action::Down {
            reason,
            was_established,
        });
        if self.conns.is_empty() && self.started && !self.cfg.passive && !self.connect_pending {
            self.retry_at = Some(now + self.retry_interval);
        }
    }

    /// Closes the collision loser with Cease / Connection Collision Resolution.
    fn drop_collision(&mut self, now: Instant, i: usize, out: &mut Vec<Action>) {
        let n = Notification::new(code::CEASE, subcode::cease::COLLISION);
        self.send(now, i, Message::Notification(n), out);
        out.push(Action::Close {
            conn: self.conns[i].id,
        });
        self.conns.remove(i);
        self.stats.collisions += 1;
    }

    fn message(&mut self, now: Instant, i: usize, msg: Message, out: &mut Vec<Action>) {
        let state = self.conns[i].state;
        let unexpected = |sub: u8| Notification::new(code::FSM, sub);
        match (state, msg) {
            (_, Message::Notification(n)) => {
                self.drop_conn(now, i, DownReason::NotificationReceived(n), out);
            }
            (ConnState::OpenSent, Message::Open(o)) => self.open(now, i, o, out),
            (ConnState::OpenSent, m) => {
                let cause = format!("{} in OpenSent", m.name());
                self.fail(now, i, unexpected(subcode::fsm::IN_OPEN_SENT), cause, out);
            }
            (ConnState::OpenConfirm, Message::Keepalive) => self.establish(now, i, out),
            (ConnState::OpenConfirm, m) => {
                let cause = format!("{} in OpenConfirm", m.name());
                self.fail(
                    now,
                    i,
                    unexpected(subcode::fsm::IN_OPEN_CONFIRM),
                    cause,
                    out,
                );
            }
            (ConnState::Established, Message::Open(_)) => {
                let cause = "open in Established".to_owned();
                self.fail(now, i, unexpected(subcode::fsm::IN_ESTABLISHED), cause, out);
            }
            (ConnState::Established, m) => {
                self.restart_hold(now, i);
                match m {
                    Message::Update(u) => self.count_update(&u),
                    Message::RouteRefresh(r) => self.route_refresh(now, i, r, out),
                    _ => {}
                }
            }
        }
    }

    fn restart_hold(&mut self, now: Instant, i: usize) {
        let c = &mut self.conns[i];
        if let Some(n) = &c.negotiated {
            c.hold_at =
                (n.hold_time > 0).then(|| now + Duration::from_secs(u64::from(n.hold_time)));
        }
    }

    /// The peer's OPEN on connection `i` (in OpenSent): checks, negotiation, collision.
    fn open(&mut self, now: Instant, i: usize, o: Open, out: &mut Vec<Action>) {
        if let Err(e) = self.check_open(&o) {
            self.fail(now, i, e.notification(), e.to_string(), out);
            return;
        }
        let mut families: Vec<Family> = o
            .families()
            .into_iter()
            .filter(|f| self.cfg.families().contains(f))
            .collect();
        families.sort();
        families.dedup();
        let hold_time = self.cfg.hold_time.min(o.hold_time);
        let neg = Negotiated {
            peer_as: o.asn(),
            peer_id: o.bgp_id,
            hold_time,
            keepalive: hold_time / 3,
            four_octet_as: o.four_octet_as().is_some(),
            route_refresh: o.route_refresh(),
            families,
            graceful_restart: o.graceful_restart().map(GracefulRestartInfo::from),
            graceful_restart_negotiated: self.cfg.graceful_restart.is_some()
                && o.graceful_restart().is_some(),
            graceful_notification: self.cfg.graceful_restart.is_some()
                && o.graceful_restart()
                    .is_some_and(GracefulRestart::notification),
            peer_capabilities: o.capabilities.iter().map(Capability::code).collect(),
            outgoing: self.conns[i].outgoing,
        };
        let id = self.conns[i].id;
        // Collision detection (§6.8) against the other connection, if it got as far.
        if let Some(j) = (0..self.conns.len()).find(|&j| j != i) {
            match self.conns[j].state {
                ConnState::Established => {
                    self.drop_collision(now, i, out);
                    return;
                }
                ConnState::OpenConfirm => {
                    let ours = u32::from(self.cfg.router_id);
                    let theirs = u32::from(o.bgp_id);
                    // RFC 6286 §2.3: equal identifiers, the larger AS wins.
                    let we_win =
                        ours > theirs || (ours == theirs && self.cfg.local_as > self.cfg.remote_as);
                    // Keep the connection opened by the winner.
                    let loser = if self.conns[i].outgoing == we_win {
                        j
                    } else {
                        i
                    };
                    self.drop_collision(now, loser, out);
                    if loser == i {
                        return;
                    }
                }
                ConnState::OpenSent => {}
            }
        }
        let Some(i) = self.index(id) else { return };
        let c = &mut self.conns[i];
        c.state = ConnState::OpenConfirm;
        c.hold_at = (hold_time > 0).then(|| now + Duration::from_secs(u64::from(hold_time)));
        c.negotiated = Some(neg);
        self.send(now, i, Message::Keepalive, out);
    }

    fn check_open(&self, o: &Open) -> Result<(), OpenError> {
        if o.asn() != self.cfg.remote_as {
            return Err(OpenError::BadPeerAs {
                expected: self.cfg.remote_as,
                got: o.asn(),
            });
        }
        // RFC 6286 §2.2: the identifier must differ from ours within an AS only.
        if self.cfg.is_ibgp() && o.bgp_id == self.cfg.router_id {
            return Err(OpenError::BadBgpId(o.bgp_id));
        }
        Ok(())
    }

    fn establish(&mut self, now: Instant, i: usize, out: &mut Vec<Action>) {
        let id = self.conns[i].id;
        // The other connection, if any, loses (it cannot be further than OpenConfirm, or
        // this one would have been dropped at its OPEN).
        if let Some(j) = (0..self.conns.len()).find(|&j| self.conns[j].id != id) {
            self.drop_collision(now, j, out);
        }
        if self.connect_pending {
            out.push(Action::AbortConnect);
            self.connect_pending = false;
        }
        let i = self.index(id).unwrap_or(0);
        self.conns[i].state = ConnState::Established;
        self.restart_hold(now, i);
        self.retry_at = None;
        self.retry_interval = self.cfg.connect_retry;
        self.established_at = Some(now);
        self.stats.established_transitions += 1;
        let neg = self.conns[i].negotiated.clone();
        if let Some(neg) = neg {
            out.push(Action::Established(Box::new(neg.clone())));
            self.adj_out.clear();
            self.sync(now, i, &[], out);
            if self.restarting && !self.settled && neg.graceful_restart_negotiated {
                self.end_of_rib_held = true;
            } else {
                self.end_of_rib(now, i, out);
            }
        }
    }

    /// End-of-RIB of the negotiated families only: a restarted session's peer then drops
    /// whatever stale routes of ours we did not send again (RFC 4724 §4.2).
    fn end_of_rib(&mut self, now: Instant, i: usize, out: &mut Vec<Action>) {
        let families = self.conns[i]
            .negotiated
            .as_ref()
            .map(|n| n.families.clone())
            .unwrap_or_default();
        for f in [Family::IPV4_UNICAST, Family::IPV6_UNICAST] {
            if families.contains(&f) {
                self.send(now, i, Message::Update(Update::end_of_rib(f)), out);
            }
        }
        self.end_of_rib_held = false;
        self.restarting = false;
    }

    /// What should be in the peer's Adj-RIB-In from us now.
    fn wanted(&mut self, i: usize) -> BTreeMap<Prefix, RouteAttrs> {
        let c = &self.conns[i];
        let Some(neg) = &c.negotiated else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        let mut unsendable = 0;
        let (v4, (v6, _)) = self.effective_next_hops(&c.next_hops);
        for (p, a) in &self.routes {
            let ok = neg.families.contains(&p.family())
                && if p.is_ipv4() {
                    v4.is_some()
                } else {
                    v6.is_some()
                };
            if ok {
                out.insert(*p, a.merged(&self.cfg.export));
            } else {
                unsendable += 1;
            }
        }
        self.stats.prefixes_unsendable = unsendable;
        out
    }

    /// Sends the difference between what the peer has and what it should have, and the
    /// routes of the families in `again` even if unchanged (their next hops changed).
    fn sync(&mut self, now: Instant, i: usize, again: &[Family], out: &mut Vec<Action>) {
        let wanted = self.wanted(i);
        let withdraw: Vec<Prefix> = self
            .adj_out
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        let announce: Vec<(Prefix, RouteAttrs)> = wanted
            .iter()
            .filter(|(p, a)| again.contains(&p.family()) || self.adj_out.get(p) != Some(a))
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for u in self.updates(i, &announce, &withdraw) {
            self.send(now, i, Message::Update(u), out);
        }
        self.adj_out = wanted;
    }

    /// RFC 2918: send the family's routes again.
    fn route_refresh(&mut self, now: Instant, i: usize, r: RouteRefresh, out: &mut Vec<Action>) {
        self.stats.route_refresh_received += 1;
        if r.subtype != 0 {
            return;
        }
        let again: Vec<(Prefix, RouteAttrs)> = self
            .adj_out
            .iter()
            .filter(|(p, _)| p.family() == r.family)
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for u in self.updates(i, &again, &[]) {
            self.send(now, i, Message::Update(u), out);
        }
    }

    /// Packs withdrawals and announcements (grouped by attributes) into UPDATEs that each fit
    /// in 4096 octets.
    fn updates(
        &self,
        i: usize,
        announce: &[(Prefix, RouteAttrs)],
        withdraw: &[Prefix],
    ) -> Vec<Update> {
        let c = &self.conns[i];
        let Some(neg) = &c.negotiated else {
            return Vec::new();
        };
        let codec = neg.codec();
        let mut out = Vec::new();
        // Withdrawals: IPv4 in the withdrawn routes field, IPv6 in MP_UNREACH_NLRI.
        let (w4, w6): (Vec<Prefix>, Vec<Prefix>) = withdraw.iter().partition(|p| p.is_ipv4());
        let base = Update::default().encoded_len(codec);
        for chunk in pack(&w4, base) {
            out.push(Update {
                withdrawn: chunk,
                ..Update::default()
            });
        }
        // +1: the MP_UNREACH_NLRI length takes its extended form once it carries prefixes.
        let base = Update::end_of_rib(Family::IPV6_UNICAST).encoded_len(codec) + 1;
        for chunk in pack(&w6, base) {
            out.push(Update {
                attrs: PathAttrs {
                    mp_unreach: Some(MpUnreach {
                        family: Family::IPV6_UNICAST,
                        withdrawn: chunk,
                        opaque_withdrawn: Vec::new(),
                    }),
                    ..PathAttrs::default()
                },
                ..Update::default()
            });
        }
        // Announcements, one group per family and attribute set.
        let mut groups: BTreeMap<(Family, &RouteAttrs), Vec<Prefix>> = BTreeMap::new();
        for (p, a) in announce {
            groups.entry((p.family(), a)).or_default().push(*p);
        }
        for ((family, a), prefixes) in groups {
            let v4 = family == Family::IPV4_UNICAST;
            let attrs = self.path_attrs(c, v4, a);
            let template = Update {
                attrs,
                ..Update::default()
            };
            let base = template.encoded_len(codec);
            for chunk in pack(&prefixes, base) {
                let mut u = template.clone();
                if v4 {
                    u.nlri = chunk;
                } else if let Some(mp) = &mut u.attrs.mp_reach {
                    mp.nlri = chunk;
                }
                out.push(u);
            }
        }
        out
    }

    /// The IPv4 next hop and the IPv6 ones (global, link-local) our routes carry with these
    /// addresses: the configured ones first.
    fn effective_next_hops(
        &self,
        hops: &NextHops,
    ) -> (Option<Ipv4Addr>, (Option<Ipv6Addr>, Option<Ipv6Addr>)) {
        let v6 = match self.cfg.next_hop_v6 {
            Some(g) => (Some(g), None),
            None => (hops.v6, hops.v6_link_local),
        };
        (self.cfg.next_hop_v4.or(hops.v4), v6)
    }

    /// The attributes of our routes of one family towards connection `c`'s peer.
    fn path_attrs(&self, c: &Conn, v4: bool, a: &RouteAttrs) -> PathAttrs {
        let ibgp = self.cfg.is_ibgp();
        let as_path = if ibgp {
            AsPath::default()
        } else {
            AsPath::sequence(vec![self.cfg.local_as; 1 + usize::from(a.as_path_prepend)])
        };
        let mut attrs = PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(as_path),
            med: a.med,
            local_pref: ibgp.then_some(IBGP_LOCAL_PREF),
            communities: a.communities.clone(),
            large_communities: a.large_communities.clone(),
            ..PathAttrs::default()
        };
        let (v4_hop, (global, link_local)) = self.effective_next_hops(&c.next_hops);
        if v4 {
            attrs.next_hop = v4_hop;
        } else {
            attrs.mp_reach = Some(MpReach {
                family: Family::IPV6_UNICAST,
                next_hop: NextHop::V6 {
                    global: global.unwrap_or(Ipv6Addr::UNSPECIFIED),
                    link_local,
                },
                nlri: Vec::new(),
                opaque_nlri: Vec::new(),
            });
        }
        attrs
    }

    fn count_update(&mut self, u: &Update) {
        let s = &mut self.stats;
        s.updates_in += 1;
        if u.end_of_rib_family().is_some() {
            s.end_of_rib_received += 1;
            return;
        }
        let announced = u.announced().count() as u64;
        let withdrawn = u.withdrawn_all().count() as u64;
        s.attributes_discarded += u.discarded.len() as u64;
        if u.treat_as_withdraw.is_empty() {
            s.prefixes_received += announced;
            s.withdrawals_received += withdrawn;
        } else {
            s.treat_as_withdraw += 1;
            s.withdrawals_received += announced + withdrawn;
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            if self.started && !self.cfg.passive && self.conns.is_empty() {
                if self.connect_pending {
                    // The attempt took a whole retry interval: start over (§8.2.2, Connect).
                    out.push(Action::AbortConnect);
                }
                self.connect(now, out);
            }
        }
        let mut i = 0;
        while i < self.conns.len() {
            let c = &self.conns[i];
            if c.hold_at.is_some_and(|t| t <= now) {
                let n = Notification::new(code::HOLD_TIMER_EXPIRED, subcode::UNSPECIFIC);
                self.fail(now, i, n, "hold timer expired".to_owned(), out);
                continue;
            }
            if c.keepalive_at.is_some_and(|t| t <= now) {
                self.send(now, i, Message::Keepalive, out);
            }
            i += 1;
        }
    }
}

/// Splits `prefixes` into runs whose NLRI fit next to `base` octets in one message.
fn pack(prefixes: &[Prefix], base: usize) -> Vec<Vec<Prefix>> {
    let mut out: Vec<Vec<Prefix>> = Vec::new();
    let mut cur = Vec::new();
    let mut len = base;
    for p in prefixes {
        if len + p.nlri_len() > MAX_LEN && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            len = base;
        }
        len += p.nlri_len();
        cur.push(*p);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests;
