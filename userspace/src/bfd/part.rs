//! The BFD part: sessions for `[[bfd.peer]]` and for what other parts ask on the bus, driven
//! by received packets and each session's own deadlines; every change between up and not up
//! is announced on the bus (`Event::BfdState`) for OSPF, BGP and the operator.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::io::{self, Receivers, Rx, Sender};
use super::packet::{self, Auth, AuthType, Discard, State};
use super::session::{Action, Params, Session, Snapshot};
use crate::bus::{Bus, Event};
use crate::config::{BfdAuth, BfdAuthKind, BfdConfig, BfdPeer, BfdTimers, Config};
use crate::labels;
use crate::part::board::PartBoard;
use crate::part::prometheus::Metrics;
use crate::part::{Applied, ApplyError, Env, Part};

/// Sessions one node may hold: a peer on the LAN could otherwise make us create one per
/// address it announces (OSPF neighbours are bounded too, but not by us).
pub const MAX_SESSIONS: usize = 256;

/// Who wants a session: the config, and/or parts by name.
#[derive(Debug, Default)]
struct Wanted {
    configured: Option<BfdPeer>,
    clients: BTreeSet<&'static str>,
}

struct Entry {
    session: Session,
    sender: Sender,
    wanted: Wanted,
    /// Last state announced on the bus.
    announced_up: bool,
}

type Key = (IpAddr, String);

pub struct Bfd {
    bus: Bus,
    timers: BfdTimers,
    sessions: BTreeMap<Key, Entry>,
    /// Requests for sessions not created yet (no interface, no port): retried on each tick.
    pending: BTreeMap<Key, Wanted>,
    by_discr: HashMap<u32, Key>,
    next_discr: u32,
    packets: mpsc::Receiver<Rx>,
    _receivers: Receivers,
    discards: BTreeMap<&'static str, u64>,
    refused_sessions: u64,
    send_errors: u64,
    dirty: bool,
}

pub enum Wake {
    Packet(Rx),
    Timer,
}

fn params(timers: &BfdTimers, auth: Option<&BfdAuth>) -> Params {
    Params {
        desired_min_tx: Duration::from_millis(u64::from(timers.min_tx_ms)),
        required_min_rx: Duration::from_millis(u64::from(timers.min_rx_ms)),
        detect_mult: timers.multiplier,
        auth: auth.map(|a| Auth {
            kind: match a.kind {
                BfdAuthKind::Simple => AuthType::Simple,
                BfdAuthKind::KeyedMd5 => AuthType::KeyedMd5,
                BfdAuthKind::MeticulousMd5 => AuthType::MeticulousMd5,
                BfdAuthKind::KeyedSha1 => AuthType::KeyedSha1,
                BfdAuthKind::MeticulousSha1 => AuthType::MeticulousSha1,
            },
            key_id: a.key_id,
            key: a.key.as_bytes().to_vec(),
        }),
    }
}

impl Part for Bfd {
    const NAME: &'static str = "bfd";
    /// Counters are published this often; state changes at once.
    const TICK: Duration = Duration::from_secs(1);
    type Wake = Wake;

    fn wanted(config: &Config) -> bool {
        config.bfd.is_some()
    }

    async fn start(env: Env, config: &Arc<Config>) -> Result<Self, ApplyError> {
        let (receivers, packets) = io::listen()?;
        // Discriminators only need to be unique here; starting from the clock makes a
        // restarted daemon's differ from its last run's, which peers may still remember.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
        let mut bfd = Bfd {
            bus: env.bus,
            timers: BfdTimers::default(),
            sessions: BTreeMap::new(),
            pending: BTreeMap::new(),
            by_discr: HashMap::new(),
            next_discr: seed | 1,
            packets,
            _receivers: receivers,
            discards: BTreeMap::new(),
            refused_sessions: 0,
            send_errors: 0,
            dirty: true,
        };
        bfd.apply_config(config.bfd.as_ref(), Instant::now());
        Ok(bfd)
    }

    async fn apply(&mut self, config: &Arc<Config>) -> Result<Applied, ApplyError> {
        self.apply_config(config.bfd.as_ref(), Instant::now());
        Ok(Applied::Running)
    }

    async fn event(&mut self, event: &Event) {
        if let Event::BfdWatch {
            client,
            peer,
            interface,
            watch,
        } = event
        {
            let key = (*peer, interface.clone());
            let now = Instant::now();
            if *watch {
                let mut w = self.take_wanted(&key);
                w.clients.insert(client);
                self.ensure(key, w, now);
            } else {
                let mut w = self.take_wanted(&key);
                w.clients.remove(client);
                self.ensure(key, w, now);
            }
        }
    }

    async fn wake(&mut self) -> Wake {
        let deadline = self
            .sessions
            .values()
            .map(|e| e.session.next_deadline())
            .min();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            p = self.packets.recv() => match p {
                Some(p) => Wake::Packet(p),
                None => std::future::pending().await,
            },
            _ = sleep => Wake::Timer,
        }
    }

    async fn woken(&mut self, wake: Wake) {
        let now = Instant::now();
        match wake {
            Wake::Packet(p) => self.receive(p, now),
            Wake::Timer => {
                let keys: Vec<Key> = self.sessions.keys().cloned().collect();
                for key in keys {
                    let Some(e) = self.sessions.get_mut(&key) else {
                        continue;
                    };
                    if e.session.next_deadline() <= now {
                        let actions = e.session.tick(now);
                        self.perform(&key, actions);
                    }
                }
            }
        }
    }

    async fn tick(&mut self) {
        self.dirty = true;
        if !self.pending.is_empty() {
            let now = Instant::now();
            for (key, w) in std::mem::take(&mut self.pending) {
                self.ensure(key, w, now);
            }
        }
    }

    fn publish(&mut self, board: &PartBoard) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let now = Instant::now();
        let sessions: Vec<_> = self
            .sessions
            .iter()
            .map(|((peer, iface), e)| (peer, iface, &e.wanted, e.session.snapshot(now)))
            .collect();
        board.set(serde_json::json!({
            "sessions": sessions.iter().map(|(peer, iface, w, s)| serde_json::json!({
                "peer": peer,
                "interface": iface,
                "clients": w.clients.iter().chain(w.configured.as_ref().map(|_| &"config")).collect::<Vec<_>>(),
                "session": s,
            })).collect::<Vec<_>>(),
            "pending": self.pending.keys().map(|(p, i)| format!("{p}%{i}")).collect::<Vec<_>>(),
            "discarded": self.discards,
            "refused_sessions": self.refused_sessions,
            "send_errors": self.send_errors,
        }));
        board.set_metrics(metrics(&sessions, &self.discards, self.refused_sessions));
    }

    async fn stop(mut self) {
        // AdminDown tells the peers we are going on purpose (diag 7), so they do not treat it
        // as a failure of the path.
        let now = Instant::now();
        let keys: Vec<Key> = self.sessions.keys().cloned().collect();
        for key in keys {
            if let Some(e) = self.sessions.get_mut(&key) {
                let actions = e.session.set_admin_down(true, now);
                self.perform(&key, actions);
            }
        }
        info!("bfd: sessions set AdminDown");
    }
}

impl Bfd {
    fn take_wanted(&mut self, key: &Key) -> Wanted {
        if let Some(w) = self.pending.remove(key) {
            return w;
        }
        match self.sessions.get_mut(key) {
            Some(e) => std::mem::take(&mut e.wanted),
            None => Wanted::default(),
        }
    }

    fn apply_config(&mut self, config: Option<&BfdConfig>, now: Instant) {
        self.timers = config.map(|c| c.timers).unwrap_or_default();
        let configured: BTreeMap<Key, BfdPeer> = config
            .map(|c| {
                c.peers
                    .iter()
                    .map(|p| ((p.address, p.interface.clone()), p.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut keys: BTreeSet<Key> = self.sessions.keys().cloned().collect();
        keys.extend(self.pending.keys().cloned());
        keys.extend(configured.keys().cloned());
        for key in keys {
            let mut w = self.take_wanted(&key);
            w.configured = configured.get(&key).cloned();
            self.ensure(key, w, now);
        }
        self.dirty = true;
    }

    /// Makes the session of `key` match `wanted`: created, reconfigured or removed.
    fn ensure(&mut self, key: Key, wanted: Wanted, now: Instant) {
        if wanted.configured.is_none() && wanted.clients.is_empty() {
            if let Some(e) = self.sessions.remove(&key) {
                self.by_discr.remove(&e.session.local_discr());
                if e.announced_up {
                    self.announce(&key, false, true);
                }
                info!(peer = %key.0, interface = %key.1, "bfd session removed");
            }
            self.dirty = true;
            return;
        }
        let p = match &wanted.configured {
            Some(c) => params(&c.timers, c.auth.as_ref()),
            None => params(&self.timers, None),
        };
        if let Some(e) = self.sessions.get_mut(&key) {
            e.wanted = wanted;
            let actions = e.session.reconfigure(p, now);
            self.perform(&key, actions);
            return;
        }
        if self.sessions.len() >= MAX_SESSIONS {
            self.refused_sessions += 1;
            warn!(peer = %key.0, interface = %key.1, max = MAX_SESSIONS, "bfd: session limit reached; not created");
            return;
        }
        let discr = self.discriminator();
        let sender = match Sender::open(key.0, &key.1, discr) {
            Ok(s) => s,
            Err(e) => {
                warn!(peer = %key.0, interface = %key.1, "bfd: cannot open the session's socket yet: {e}");
                self.pending.insert(key, wanted);
                self.dirty = true;
                return;
            }
        };
        info!(peer = %key.0, interface = %key.1, discriminator = discr, "bfd session created");
        self.by_discr.insert(discr, key.clone());
        self.sessions.insert(
            key.clone(),
            Entry {
                session: Session::new(p, discr, now),
                sender,
                wanted,
                announced_up: false,
            },
        );
        let actions = self
            .sessions
            .get_mut(&key)
            .map(|e| e.session.tick(now))
            .unwrap_or_default();
        self.perform(&key, actions);
        self.dirty = true;
    }

    fn discriminator(&mut self) -> u32 {
        loop {
            self.next_discr = self.next_discr.wrapping_add(1);
            if self.next_discr != 0 && !self.by_discr.contains_key(&self.next_discr) {
                return self.next_discr;
            }
        }
    }

    fn discard(&mut self, why: Discard) {
        *self.discards.entry(why.name()).or_insert(0) += 1;
    }

    fn receive(&mut self, p: Rx, now: Instant) {
        if p.ttl != packet::TTL {
            return self.discard(Discard::Ttl);
        }
        let rx = match packet::decode(&p.data) {
            Ok(rx) => rx,
            Err(d) => return self.discard(d),
        };
        // By our discriminator when the peer knows it, else by source and interface.
        let key = if rx.control.your_discr != 0 {
            self.by_discr.get(&rx.control.your_discr).cloned()
        } else {
            self.sessions
                .iter()
                .find(|((peer, _), e)| *peer == p.src && e.sender.ifindex == p.ifindex)
                .map(|(k, _)| k.clone())
        };
        let Some(key) = key else {
            return self.discard(Discard::NoSession);
        };
        let Some(e) = self.sessions.get_mut(&key) else {
            return self.discard(Discard::NoSession);
        };
        if key.0 != p.src || e.sender.ifindex != p.ifindex {
            return self.discard(Discard::NoSession);
        }
        match e.session.receive(now, &p.data, &rx) {
            Ok(actions) => self.perform(&key, actions),
            Err(d) => {
                e.session.counters.discarded += 1;
                self.discard(d);
            }
        }
    }

    fn perform(&mut self, key: &Key, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(bytes) => {
                    if let Some(e) = self.sessions.get(key)
                        && e.sender.send(&bytes).is_err()
                    {
                        self.send_errors += 1;
                    }
                }
                Action::Changed { from, to, diag } => {
                    info!(peer = %key.0, interface = %key.1, ?from, ?to, ?diag, "bfd session state");
                    self.dirty = true;
                    let up = to == State::Up;
                    if let Some(e) = self.sessions.get_mut(key)
                        && e.announced_up != up
                    {
                        e.announced_up = up;
                        let admin =
                            to == State::AdminDown || e.session.remote_state() == State::AdminDown;
                        self.announce(key, up, admin);
                    }
                }
            }
        }
    }

    fn announce(&self, key: &Key, up: bool, admin: bool) {
        self.bus.publish(Event::BfdState {
            peer: key.0,
            interface: key.1.clone(),
            up,
            admin,
        });
    }
}

fn metrics(
    sessions: &[(&IpAddr, &String, &Wanted, Snapshot)],
    discards: &BTreeMap<&'static str, u64>,
    refused: u64,
) -> String {
    let mut m = Metrics::new("bfd");
    for (peer, iface, _, s) in sessions {
        let label = || labels![("peer", peer), ("interface", iface)];
        m.gauge(
            "session_up",
            "1 while the session is up.",
            label(),
            i64::from(s.state == State::Up),
        );
        for (name, help, v) in [
            (
                "session_up_transitions",
                "Times the session came up.",
                s.counters.up,
            ),
            (
                "session_down_transitions",
                "Times the session went down from up.",
                s.counters.down,
            ),
            ("packets_sent", "Control packets sent.", s.counters.sent),
            (
                "packets_received",
                "Control packets accepted.",
                s.counters.received,
            ),
        ] {
            m.counter(name, help, label(), v);
        }
    }
    for d in Discard::ALL {
        m.counter(
            "discarded_packets",
            "Control packets discarded, by failed check.",
            labels![("reason", d.name())],
            discards.get(d.name()).copied().unwrap_or(0),
        );
    }
    m.counter(
        "refused_sessions",
        "Sessions not created because the limit was reached.",
        vec![],
        refused,
    );
    m.text()
}
