//! The VRRP state machine of RFC 5798 §6.4 as amended by RFC 9568 (and RFC 3768 for v2):
//! pure, with time passed in. Inputs are startup, shutdown, received adverts, priority changes
//! and the clock; outputs are [`Action`]s for the I/O edge to carry out in order.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::packet::{Advert, Drop, Received, Version};

/// Priority of the address owner: it answers for the VIPs at once and never waits.
pub const OWNER_PRIORITY: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Initialize,
    Backup,
    Master,
    /// The instance's interface is down or has lost its primary address: no adverts, no
    /// VIPs, until it comes back and the instance starts over (keepalived's FAULT; RFC 9568
    /// leaves it in Initialize).
    Fault,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

/// Why a transition happened; logged and shown in /status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Reason {
    /// Started as the address owner (priority 255).
    StartupOwner,
    /// Started below 255: wait as backup for a master to show itself.
    Startup,
    /// No advert from a master within Master_Down_Interval.
    MasterDown,
    /// The master sent priority 0 (it is leaving) and nobody took over within Skew_Time.
    MasterResigned,
    /// An advert with a higher priority (or equal and a higher address) arrived.
    HigherPriority {
        from: IpAddr,
        priority: u8,
    },
    Shutdown,
    /// The interface lost its link (down, or no carrier) or went away.
    InterfaceDown,
    /// The interface has no address left to send adverts from.
    AddressLost,
    /// The interface is usable again: starting over as after startup.
    InterfaceUp,
    /// The process restarted while master, within the master-down interval: it goes on as
    /// master, so the backups never see the master missing.
    Resumed,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::StartupOwner => write!(f, "started as address owner (priority 255)"),
            Reason::Startup => write!(f, "started"),
            Reason::Resumed => write!(
                f,
                "restarted while master within the master-down interval: resumed"
            ),
            Reason::MasterDown => write!(f, "no advertisement within the master-down interval"),
            Reason::MasterResigned => write!(f, "master resigned (priority 0)"),
            Reason::HigherPriority { from, priority } => {
                write!(f, "advertisement from {from} with priority {priority}")
            }
            Reason::Shutdown => write!(f, "shutdown"),
            Reason::InterfaceDown => write!(f, "interface down"),
            Reason::AddressLost => write!(f, "interface has no primary address"),
            Reason::InterfaceUp => write!(f, "interface up again"),
        }
    }
}

/// What the I/O edge must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Log it, publish it, count it. Always first for a transition.
    Transition {
        from: State,
        to: State,
        reason: Reason,
    },
    /// Send an advert with this priority (ours, or 0 when leaving).
    SendAdvert { priority: u8 },
    /// Become the owner of the VIPs: add them, announce them (GARP / NA), tell the daemon.
    TakeOver,
    /// Stop owning the VIPs: tell the daemon, then remove them.
    Release,
}

/// The instance parameters the machine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub version: Version,
    pub vrid: u8,
    /// Effective priority (configured minus failed tracking weights), 1..=255.
    pub priority: u8,
    /// Advertisement_Interval in centiseconds.
    pub interval_cs: u16,
    pub preempt: bool,
    /// After startup, a higher-priority backup keeps a lower-priority master this long.
    pub preempt_delay: Duration,
    /// Our primary address on the interface: the tie-breaker between equal priorities.
    pub primary: IpAddr,
    /// When not empty, the only routers adverts are accepted from.
    pub unicast_peers: Vec<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct Machine {
    params: Params,
    state: State,
    /// Master_Adver_Interval in centiseconds: learned from the master (v3), ours for v2.
    master_interval_cs: u16,
    adver_deadline: Option<Instant>,
    master_down_deadline: Option<Instant>,
    /// Set when the master resigned, so the takeover that follows says so.
    master_resigned: bool,
    started: Option<Instant>,
    /// The address of the last master heard from while backup.
    master: Option<IpAddr>,
}

fn cs(centiseconds: u16) -> Duration {
    Duration::from_millis(u64::from(centiseconds) * 10)
}

impl Machine {
    pub fn new(params: Params) -> Self {
        Self {
            master_interval_cs: params.interval_cs,
            params,
            state: State::Initialize,
            adver_deadline: None,
            master_down_deadline: None,
            master_resigned: false,
            started: None,
            master: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn master_interval_cs(&self) -> u16 {
        self.master_interval_cs
    }

    /// The master we last heard from (backup), or none.
    pub fn master(&self) -> Option<IpAddr> {
        match self.state {
            State::Backup => self.master,
            _ => None,
        }
    }

    fn owner(&self) -> bool {
        self.params.priority == OWNER_PRIORITY
    }

    /// Skew_Time: lower priorities wait longer, so the best backup wins the race.
    pub fn skew(&self) -> Duration {
        cs(self.master_interval_cs) * (256 - u32::from(self.params.priority)) / 256
    }

    /// Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        cs(self.master_interval_cs) * 3 + self.skew()
    }

    /// The earliest time [`Machine::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Initialize | State::Fault => None,
            State::Backup => self.master_down_deadline,
            State::Master => self.adver_deadline,
        }
    }

    /// The receive checks of RFC 5798 §7.1 that depend on the instance. Packet-level checks
    /// were made by the decoder.
    pub fn check(&self, received: &Received) -> Result<(), Drop> {
        let advert = &received.advert;
        if advert.vrid != self.params.vrid {
            return Err(Drop::Vrid);
        }
        if advert.version != self.params.version {
            return Err(Drop::Version);
        }
        if received.src.is_ipv4() != self.params.primary.is_ipv4() {
            return Err(Drop::Family);
        }
        if !self.params.unicast_peers.is_empty()
            && !self.params.unicast_peers.contains(&received.src)
        {
            return Err(Drop::UnicastPeer);
        }
        if self.owner() {
            return Err(Drop::Owner);
        }
        // RFC 3768 §7.1: v2 routers must agree on the interval; v3 learns it instead.
        if advert.version == Version::V2 && advert.interval_cs != self.params.interval_cs {
            return Err(Drop::Interval);
        }
        Ok(())
    }

    pub fn startup(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Initialize {
            return Vec::new();
        }
        let reason = if self.owner() {
            Reason::StartupOwner
        } else {
            Reason::Startup
        };
        self.start(now, reason)
    }

    /// Startup of a process that was master until moments ago (within the master-down
    /// interval, so no backup has taken over): straight back to master, the VIPs it still
    /// holds kept, an advert at once.
    pub fn resume(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Initialize {
            return Vec::new();
        }
        self.started = Some(now);
        self.become_master(now, Reason::Resumed)
    }

    /// Startup proper; a restart after a fault gives its own reason. The preempt delay runs
    /// again from here, as after a process start.
    fn start(&mut self, now: Instant, reason: Reason) -> Vec<Action> {
        self.started = Some(now);
        self.master_resigned = false;
        if self.owner() {
            self.become_master(now, reason)
        } else {
            self.become_backup(now, reason, None)
        }
    }

    /// The interface became unusable (`reason`: [`Reason::InterfaceDown`] or
    /// [`Reason::AddressLost`]): stop advertising and give up the VIPs. No priority 0 goes
    /// out: the interface it would leave by is the one that failed.
    pub fn fault(&mut self, reason: Reason) -> Vec<Action> {
        let from = self.state;
        if from == State::Fault {
            return Vec::new();
        }
        self.state = State::Fault;
        self.adver_deadline = None;
        self.master_down_deadline = None;
        self.master_resigned = false;
        self.master = None;
        let mut actions = vec![Action::Transition {
            from,
            to: State::Fault,
            reason,
        }];
        if from == State::Master {
            actions.push(Action::Release);
        }
        actions
    }

    /// The interface is usable again: start over, backup (or master as the owner).
    pub fn recover(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Fault {
            return Vec::new();
        }
        self.start(now, Reason::InterfaceUp)
    }

    pub fn shutdown(&mut self) -> Vec<Action> {
        let from = self.state;
        self.state = State::Initialize;
        self.adver_deadline = None;
        self.master_down_deadline = None;
        self.master = None;
        let transition = Action::Transition {
            from,
            to: State::Initialize,
            reason: Reason::Shutdown,
        };
        match from {
            State::Initialize => Vec::new(),
            State::Backup | State::Fault => vec![transition],
            // Priority 0 lets a backup take over after Skew_Time instead of Master_Down.
            State::Master => vec![
                transition,
                Action::SendAdvert { priority: 0 },
                Action::Release,
            ],
        }
    }

    /// Fires whatever timer is due at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Initialize | State::Fault => Vec::new(),
            State::Backup => match self.master_down_deadline {
                Some(deadline) if deadline <= now => {
                    let reason = if self.master_resigned {
                        Reason::MasterResigned
                    } else {
                        Reason::MasterDown
                    };
                    self.become_master(now, reason)
                }
                _ => Vec::new(),
            },
            State::Master => match self.adver_deadline {
                Some(deadline) if deadline <= now => {
                    self.adver_deadline = Some(now + cs(self.params.interval_cs));
                    vec![Action::SendAdvert {
                        priority: self.params.priority,
                    }]
                }
                _ => Vec::new(),
            },
        }
    }

    /// An advert that passed [`Machine::check`].
    pub fn receive(&mut self, now: Instant, src: IpAddr, advert: &Advert) -> Vec<Action> {
        match self.state {
            State::Initialize | State::Fault => Vec::new(),
            State::Backup => {
                if advert.priority == 0 {
                    self.master_resigned = true;
                    self.master_down_deadline = Some(now + self.skew());
                    return Vec::new();
                }
                let in_preempt_delay = self
                    .started
                    .is_some_and(|started| now < started + self.params.preempt_delay);
                if !self.params.preempt
                    || advert.priority >= self.params.priority
                    || in_preempt_delay
                {
                    self.master_resigned = false;
                    self.master = Some(src);
                    self.learn_interval(advert);
                    self.master_down_deadline = Some(now + self.master_down_interval());
                }
                // Otherwise the lower-priority master is ignored: our Master_Down timer runs
                // out and we preempt it.
                Vec::new()
            }
            State::Master => {
                if advert.priority == 0 {
                    // A leaving master: assert ourselves at once so backups do not take over.
                    self.adver_deadline = Some(now + cs(self.params.interval_cs));
                    return vec![Action::SendAdvert {
                        priority: self.params.priority,
                    }];
                }
                let higher = advert.priority > self.params.priority
                    || (advert.priority == self.params.priority
                        && ip_greater(src, self.params.primary));
                if higher {
                    self.learn_interval(advert);
                    let reason = Reason::HigherPriority {
                        from: src,
                        priority: advert.priority,
                    };
                    let mut actions = self.become_backup(now, reason, Some(src));
                    actions.push(Action::Release);
                    actions
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// A tracked object changed the effective priority; takes effect with the next advert
    /// (a master) or the next received advert (a backup), as the RFC's timers dictate.
    pub fn set_priority(&mut self, priority: u8) {
        self.params.priority = priority.max(1);
    }

    /// The interface came back with another address to send from (and to break ties with).
    pub fn set_primary(&mut self, primary: IpAddr) {
        self.params.primary = primary;
    }

    fn learn_interval(&mut self, advert: &Advert) {
        if self.params.version == Version::V3 && advert.interval_cs > 0 {
            self.master_interval_cs = advert.interval_cs;
        }
    }

    fn become_master(&mut self, now: Instant, reason: Reason) -> Vec<Action> {
        let from = self.state;
        self.state = State::Master;
        self.master_down_deadline = None;
        self.master_resigned = false;
        self.master = None;
        self.adver_deadline = Some(now + cs(self.params.interval_cs));
        vec![
            Action::Transition {
                from,
                to: State::Master,
                reason,
            },
            Action::SendAdvert {
                priority: self.params.priority,
            },
            Action::TakeOver,
        ]
    }

    fn become_backup(
        &mut self,
        now: Instant,
        reason: Reason,
        master: Option<IpAddr>,
    ) -> Vec<Action> {
        let from = self.state;
        self.state = State::Backup;
        self.adver_deadline = None;
        self.master = master;
        if matches!(from, State::Initialize | State::Fault) {
            self.master_interval_cs = self.params.interval_cs;
        }
        self.master_down_deadline = Some(now + self.master_down_interval());
        vec![Action::Transition {
            from,
            to: State::Backup,
            reason,
        }]
    }
}

/// Addresses compare as unsigned integers in network byte order (RFC 5798 §6.4.3).
fn ip_greater(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => u32::from(a) > u32::from(b),
        (IpAddr::V6(a), IpAddr::V6(b)) => u128::from(a) > u128::from(b),
        _ => false,
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
