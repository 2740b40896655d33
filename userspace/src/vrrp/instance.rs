//! One running virtual router: feeds the state machine from its socket, its clock and its
//! tracked objects, and carries out what the machine decides (adverts, VIPs, announcements,
//! bus events).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rtnetlink::Handle;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::io::{AdvertSocket, Announcer};
use super::machine::{Action, Machine, OWNER_PRIORITY, Params, Reason, State};
use super::no_accept;
use super::packet::{self, Advert, Checksum, Drop, Expect, Version};
use crate::bus::{Bus, Event};
use crate::config::{TrackTarget, VrrpInstanceConfig, VrrpVersion};
use crate::net::addr;

/// Messages from the part to an instance.
#[derive(Debug)]
pub enum Control {
    /// A tracked object went down (`true`) or came back.
    Track { target: TrackTarget, down: bool },
    /// The instance's own interface changed: a fault, or usable again.
    Link(LinkHealth),
    /// Resign (priority 0 when master), release the VIPs and stop.
    Shutdown,
}

/// What the instance's own interface is like, as the part's link watch sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkHealth {
    Up,
    /// Down, without carrier, or gone.
    Down,
    /// Up but without the address adverts are sent from.
    NoAddress,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub priority_zero_sent: u64,
    pub priority_zero_received: u64,
    pub became_master: u64,
    pub transitions: u64,
    pub announcements_sent: u64,
    pub send_errors: u64,
    /// Received packets dropped, by reason (every §7.1 check has its own).
    pub drops: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrackStatus {
    pub target: TrackTarget,
    pub weight: u8,
    pub down: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: String,
    /// Unix time in milliseconds.
    pub at_ms: u64,
}

/// What /status and /metrics show of an instance.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: u8,
    pub state: State,
    pub priority: u8,
    pub effective_priority: u8,
    pub vips: Vec<IpAddr>,
    pub source: Option<IpAddr>,
    /// The master heard from, while backup.
    pub master: Option<IpAddr>,
    pub master_adver_interval_ms: u32,
    pub last_transition: Option<Transition>,
    pub tracks: Vec<TrackStatus>,
    pub counters: Counters,
}

/// The configured priority less the weights of the tracked objects that are down, never
/// below 1 (0 is reserved for resigning).
pub fn effective_priority(configured: u8, tracks: &[TrackStatus]) -> u8 {
    let lost: u32 = tracks
        .iter()
        .filter(|t| t.down)
        .map(|t| u32::from(t.weight))
        .sum();
    let p = u32::from(configured).saturating_sub(lost).max(1);
    u8::try_from(p).unwrap_or(u8::MAX)
}

/// A started instance: its socket is open, its loop not yet running.
pub struct Instance {
    cfg: VrrpInstanceConfig,
    handle: Handle,
    bus: Bus,
    socket: AdvertSocket,
    announcer: Announcer,
    /// Where the VIPs go and adverts leave: the interface, or its macvlan.
    ifindex: u32,
    /// The macvlan made for the virtual MAC, removed when the instance stops.
    macvlan: Option<u32>,
    src: IpAddr,
    expect: Expect,
    ident: u16,
    garp_repeat_at: Option<Instant>,
    tracks: Vec<TrackStatus>,
    snapshot: Snapshot,
    report: watch::Sender<Snapshot>,
    /// `accept = false`: the nftables table whose sets drop traffic to our VIPs while master.
    no_accept: Option<String>,
    /// Our VIPs are in the drop sets now.
    dropping: bool,
    /// Where the instance notes that it is master, and when it last was: a restart within
    /// the master-down interval resumes instead of starting over as backup.
    state_file: PathBuf,
    last_heartbeat: Option<Instant>,
    resume: bool,
}

/// What the state file says: master until `at_ms` (wall clock), or not master.
fn was_master_until(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.strip_prefix("master ")?.trim().parse().ok()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Instance {
    /// Finds the interface and its source address, opens the sockets and clears VIPs left
    /// over from an earlier run (a backup must not answer for them).
    /// `no_accept`: the part's nftables table, set up, for an instance with `accept = false`.
    pub async fn start(
        cfg: VrrpInstanceConfig,
        handle: Handle,
        bus: Bus,
        no_accept: Option<String>,
        state_dir: &Path,
    ) -> Result<(Self, watch::Receiver<Snapshot>)> {
        let name = &cfg.name;
        let state_file = state_dir.join(format!("{name}.state"));
        // Master_Down_Interval as the backups compute it from our adverts (RFC 5798 §6.1).
        let interval_ms = u64::from(cfg.advert_interval_cs) * 10;
        let master_down_ms = 3 * interval_ms + interval_ms * (256 - u64::from(cfg.priority)) / 256;
        let resume = was_master_until(&state_file)
            .is_some_and(|at| now_ms().saturating_sub(at) < master_down_ms);
        let link = addr::link_by_name(&handle, &cfg.interface)
            .await
            .with_context(|| format!("vrrp instance {name}"))?;
        let ipv6 = cfg.vips.first().is_some_and(IpAddr::is_ipv6);
        let mut src: IpAddr = if ipv6 {
            addr::link_local_v6(&handle, link.index)
                .await?
                .with_context(|| {
                    format!(
                        "vrrp instance {name}: {} has no link-local IPv6 address",
                        link.name
                    )
                })?
                .into()
        } else {
            addr::primary_v4(&handle, link.index, &cfg.vips)
                .await?
                .with_context(|| {
                    format!(
                        "vrrp instance {name}: {} has no IPv4 address besides the VIPs to send adverts from",
                        link.name
                    )
                })?
                .into()
        };
        // With a virtual MAC the VIPs live on a macvlan that carries it, and adverts and
        // announcements leave from it, so the LAN never has to relearn the VIPs' MAC.
        let macvlan = if cfg.virtual_mac {
            let mac = super::announce::virtual_mac(cfg.vrid, ipv6);
            // IPv4 and IPv6 routers may share a VRID: their macvlans differ.
            let vname = format!("{}.{}", if ipv6 { "vrrp6" } else { "vrrp" }, cfg.vrid);
            let vlink = addr::ensure_macvlan(&handle, &vname, link.index, mac, ipv6)
                .await
                .with_context(|| format!("vrrp instance {name}: cannot set up {vname}"))?;
            if let IpAddr::V6(parent) = src {
                // Adverts and NAs leave the macvlan from a link-local address of its own (the
                // kernel wants the source on the sending interface). The parent answers no
                // neighbour solicitation for addresses on the macvlan: no sysctl needed.
                src = super::announce::vmac_link_local(parent).into();
                addr::add_host(&handle, vlink.index, src)
                    .await
                    .with_context(|| format!("vrrp instance {name}: link-local on {vname}"))?;
            } else {
                // The VIPs are on the macvlan but replies from them leave by the parent: it
                // must neither answer ARP for them (arp_ignore) nor ask with a VIP as sender
                // (arp_announce), or the LAN would learn the VIPs at the parent's own MAC.
                for (key, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
                    addr::set_ipv4_conf(&link.name, key, value)
                        .with_context(|| format!("vrrp instance {name}: {key} on {}", link.name))?;
                }
                let _ = addr::set_ipv4_conf(&vname, "rp_filter", "0");
            }
            Some(vlink)
        } else {
            None
        };
        let out = macvlan.as_ref().unwrap_or(&link);
        if !resume {
            for vip in &cfg.vips {
                addr::remove(&handle, link.index, *vip).await?;
                addr::remove(&handle, out.index, *vip).await?;
            }
        }
        let socket =
            AdvertSocket::open(&out.name, out.index, ipv6, cfg.unicast_peers.is_empty())
                .with_context(|| format!("vrrp instance {name}: cannot open the VRRP socket"))?;
        let announcer = Announcer::open(out.index, out.mac, ipv6)
            .with_context(|| format!("vrrp instance {name}: cannot open the announce socket"))?;
        let version = match cfg.version {
            VrrpVersion::V2 => Version::V2,
            VrrpVersion::V3 => Version::V3,
        };
        let checksum = if cfg.checksum_pseudo_header || ipv6 {
            Checksum::WithPseudoHeader
        } else {
            Checksum::VrrpOnly
        };
        let tracks = cfg
            .track
            .iter()
            .map(|t| TrackStatus {
                target: t.target.clone(),
                weight: t.weight,
                down: false,
            })
            .collect::<Vec<_>>();
        let snapshot = Snapshot {
            name: cfg.name.clone(),
            interface: cfg.interface.clone(),
            vrid: cfg.vrid,
            version: if version == Version::V2 { 2 } else { 3 },
            state: State::Initialize,
            priority: cfg.priority,
            effective_priority: cfg.priority,
            vips: cfg.vips.clone(),
            source: Some(src),
            master: None,
            master_adver_interval_ms: u32::from(cfg.advert_interval_cs) * 10,
            last_transition: None,
            tracks: tracks.clone(),
            counters: Counters::default(),
        };
        let (report, reader) = watch::channel(snapshot.clone());
        Ok((
            Self {
                expect: Expect { version, checksum },
                cfg,
                handle,
                bus,
                socket,
                announcer,
                ifindex: out.index,
                macvlan: macvlan.map(|m| m.index),
                src,
                ident: 0,
                garp_repeat_at: None,
                tracks,
                snapshot,
                report,
                no_accept,
                dropping: false,
                state_file,
                last_heartbeat: None,
                resume,
            },
            reader,
        ))
    }

    fn effective_priority(&self) -> u8 {
        effective_priority(self.cfg.priority, &self.tracks)
    }

    fn params(&self) -> Params {
        Params {
            version: self.expect.version,
            vrid: self.cfg.vrid,
            priority: self.effective_priority(),
            interval_cs: self.cfg.advert_interval_cs,
            preempt: self.cfg.preempt,
            preempt_delay: Duration::from_millis(u64::from(self.cfg.preempt_delay_ms)),
            primary: self.src,
            unicast_peers: self.cfg.unicast_peers.clone(),
        }
    }

    /// Runs until told to shut down (or the part goes away).
    pub async fn run(mut self, mut control: mpsc::Receiver<Control>) -> Result<()> {
        let mut machine = Machine::new(self.params());
        let actions = if self.resume {
            machine.resume(Instant::now())
        } else {
            machine.startup(Instant::now())
        };
        self.execute(&machine, actions).await;
        loop {
            let deadline = [machine.next_deadline(), self.garp_repeat_at]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = self.socket.recv(self.expect) => match received {
                    Ok(Ok(rx)) => match machine.check(&rx) {
                        Ok(()) => {
                            self.snapshot.counters.adverts_received += 1;
                            if rx.advert.priority == 0 {
                                self.snapshot.counters.priority_zero_received += 1;
                            }
                            let actions = machine.receive(Instant::now(), rx.src, &rx.advert);
                            self.execute(&machine, actions).await;
                        }
                        Err(reason) => self.count_drop(reason),
                    },
                    Ok(Err(reason)) => self.count_drop(reason),
                    Err(e) => {
                        warn!(instance = %self.cfg.name, "VRRP socket receive failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = sleep => {
                    let now = Instant::now();
                    if self.garp_repeat_at.is_some_and(|t| t <= now) {
                        self.garp_repeat_at = None;
                        if machine.state() == State::Master {
                            self.announce();
                        }
                    }
                    let actions = machine.tick(now);
                    self.execute(&machine, actions).await;
                }
                message = control.recv() => match message {
                    Some(Control::Track { target, down }) => {
                        let mut changed = false;
                        for t in self.tracks.iter_mut().filter(|t| t.target == target) {
                            changed |= t.down != down;
                            t.down = down;
                        }
                        if changed {
                            let priority = self.effective_priority();
                            info!(
                                instance = %self.cfg.name, ?target, down, priority,
                                "tracked object changed: effective priority {priority}"
                            );
                            machine.set_priority(priority);
                        }
                    }
                    Some(Control::Link(health)) => {
                        if health == LinkHealth::Up {
                            self.refresh_source(&mut machine).await;
                        }
                        let actions = match health {
                            LinkHealth::Up => machine.recover(Instant::now()),
                            LinkHealth::Down => machine.fault(Reason::InterfaceDown),
                            LinkHealth::NoAddress => machine.fault(Reason::AddressLost),
                        };
                        self.execute(&machine, actions).await;
                    }
                    Some(Control::Shutdown) | None => {
                        let actions = machine.shutdown();
                        self.execute(&machine, actions).await;
                        if let Some(index) = self.macvlan
                            && let Err(e) = addr::delete_link(&self.handle, index).await
                        {
                            warn!(instance = %self.cfg.name, "cannot remove the virtual MAC interface: {e}");
                        }
                        self.publish(&machine);
                        return Ok(());
                    }
                },
            }
            self.publish(&machine);
        }
    }

    /// Before restarting after a fault: the interface may have come back with another
    /// address (IPv4) or link-local (IPv6) to send from; with a virtual MAC, the macvlan's
    /// link-local may have gone with the parent's link.
    async fn refresh_source(&mut self, machine: &mut Machine) {
        let name = &self.cfg.name;
        let Ok(link) = addr::link_by_name(&self.handle, &self.cfg.interface).await else {
            return;
        };
        let found: Option<IpAddr> = match self.src {
            IpAddr::V4(_) => addr::primary_v4(&self.handle, link.index, &self.cfg.vips)
                .await
                .ok()
                .flatten()
                .map(IpAddr::from),
            IpAddr::V6(_) => addr::link_local_v6(&self.handle, link.index)
                .await
                .ok()
                .flatten()
                .map(|parent| match self.macvlan {
                    Some(_) => super::announce::vmac_link_local(parent).into(),
                    None => parent.into(),
                }),
        };
        let Some(src) = found else {
            return;
        };
        if src != self.src {
            info!(instance = %name, old = %self.src, new = %src, "VRRP source address changed");
            if let Some(index) = self.macvlan
                && src.is_ipv6()
            {
                let _ = addr::remove(&self.handle, index, self.src).await;
            }
            self.src = src;
            self.snapshot.source = Some(src);
            machine.set_primary(src);
        }
        if let Some(index) = self.macvlan
            && src.is_ipv6()
            && let Err(e) = addr::add_host(&self.handle, index, src).await
        {
            warn!(instance = %name, "cannot restore the virtual MAC's link-local address: {e}");
        }
    }

    fn count_drop(&mut self, reason: Drop) {
        *self
            .snapshot
            .counters
            .drops
            .entry(reason.name())
            .or_default() += 1;
    }

    fn publish(&mut self, machine: &Machine) {
        let s = &mut self.snapshot;
        s.state = machine.state();
        s.effective_priority = machine.params().priority;
        s.master = machine.master();
        s.master_adver_interval_ms = u32::from(machine.master_interval_cs()) * 10;
        s.tracks = self.tracks.clone();
        self.report.send_replace(s.clone());
    }

    async fn execute(&mut self, machine: &Machine, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Transition { from, to, reason } => {
                    info!(
                        instance = %self.cfg.name, vrid = self.cfg.vrid,
                        "VRRP {} -> {}: {reason}", from.name(), to.name()
                    );
                    self.snapshot.counters.transitions += 1;
                    if to == State::Master {
                        self.snapshot.counters.became_master += 1;
                    }
                    self.snapshot.last_transition = Some(Transition {
                        from,
                        to,
                        reason: reason.to_string(),
                        at_ms: now_ms(),
                    });
                }
                Action::SendAdvert { priority } => {
                    self.send_advert(machine, priority);
                    self.heartbeat(machine.state() == State::Master && priority > 0);
                }
                Action::TakeOver => {
                    // The drop goes in before the VIPs, so no packet to them is accepted.
                    if machine.params().priority != OWNER_PRIORITY
                        && let Some(table) = self.no_accept.clone()
                    {
                        match set_drop(table, self.cfg.vips.clone(), true).await {
                            Ok(()) => self.dropping = true,
                            Err(e) => warn!(
                                instance = %self.cfg.name,
                                "accept = false: cannot drop traffic to the VIPs: {e:#}"
                            ),
                        }
                    }
                    for vip in &self.cfg.vips {
                        if let Err(e) = addr::add_host(&self.handle, self.ifindex, *vip).await {
                            warn!(instance = %self.cfg.name, %vip, "cannot add the VIP: {e}");
                        }
                    }
                    self.announce();
                    if self.cfg.garp_repeat_delay_ms > 0 {
                        self.garp_repeat_at = Some(
                            Instant::now()
                                + Duration::from_millis(u64::from(self.cfg.garp_repeat_delay_ms)),
                        );
                    }
                    self.bus.publish(Event::VrrpRole {
                        instance: self.cfg.name.clone(),
                        vips: self.cfg.vips.clone(),
                        master: true,
                    });
                }
                Action::Release => {
                    self.heartbeat(false);
                    self.garp_repeat_at = None;
                    // Others stop attracting and serving traffic first, then the VIPs go.
                    self.bus.publish(Event::VrrpRole {
                        instance: self.cfg.name.clone(),
                        vips: self.cfg.vips.clone(),
                        master: false,
                    });
                    for vip in &self.cfg.vips {
                        if let Err(e) = addr::remove(&self.handle, self.ifindex, *vip).await {
                            warn!(instance = %self.cfg.name, %vip, "cannot remove the VIP: {e}");
                        }
                    }
                    if self.dropping
                        && let Some(table) = self.no_accept.clone()
                    {
                        self.dropping = false;
                        if let Err(e) = set_drop(table, self.cfg.vips.clone(), false).await {
                            warn!(
                                instance = %self.cfg.name,
                                "accept = false: cannot stop dropping traffic to the VIPs: {e:#}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Notes in the state file that we are master now (at most twice a second), or that we
    /// are not.
    fn heartbeat(&mut self, master: bool) {
        let now = Instant::now();
        if master {
            if self
                .last_heartbeat
                .is_some_and(|t| now - t < Duration::from_millis(500))
            {
                return;
            }
            self.last_heartbeat = Some(now);
            let write = self
                .state_file
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&self.state_file, format!("master {}\n", now_ms())));
            if let Err(e) = write {
                warn!(instance = %self.cfg.name, "cannot write {}: {e}", self.state_file.display());
            }
        } else if self.last_heartbeat.take().is_some() || self.resume {
            self.resume = false;
            let _ = std::fs::remove_file(&self.state_file);
        }
    }

    fn send_advert(&mut self, machine: &Machine, priority: u8) {
        let advert = Advert {
            version: self.expect.version,
            vrid: self.cfg.vrid,
            priority,
            interval_cs: machine.params().interval_cs,
            addresses: self.cfg.vips.clone(),
        };
        let destinations: Vec<IpAddr> = if self.cfg.unicast_peers.is_empty() {
            vec![match self.src {
                IpAddr::V4(_) => packet::MULTICAST_V4.into(),
                IpAddr::V6(_) => packet::MULTICAST_V6.into(),
            }]
        } else {
            self.cfg.unicast_peers.clone()
        };
        for dst in destinations {
            let message = packet::encode(&advert, self.src, dst, self.expect.checksum);
            let bytes = match (self.src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    self.ident = self.ident.wrapping_add(1);
                    packet::encode_ipv4(&message, s, d, self.ident)
                }
                _ => message,
            };
            match self.socket.send(&bytes, self.src, dst) {
                Ok(()) => {
                    self.snapshot.counters.adverts_sent += 1;
                    if priority == 0 {
                        self.snapshot.counters.priority_zero_sent += 1;
                    }
                }
                Err(e) => {
                    self.snapshot.counters.send_errors += 1;
                    warn!(instance = %self.cfg.name, %dst, "cannot send an advert: {e}");
                }
            }
        }
    }

    /// The burst of gratuitous ARPs / unsolicited NAs for every VIP.
    fn announce(&mut self) {
        for _ in 0..self.cfg.garp_burst {
            for vip in &self.cfg.vips {
                let sent = match (vip, self.src) {
                    (IpAddr::V4(v), _) => self.announcer.gratuitous_arp(*v),
                    (IpAddr::V6(v), IpAddr::V6(src)) => self.announcer.unsolicited_na(src, *v),
                    (IpAddr::V6(_), IpAddr::V4(_)) => continue,
                };
                match sent {
                    Ok(()) => self.snapshot.counters.announcements_sent += 1,
                    Err(e) => {
                        self.snapshot.counters.send_errors += 1;
                        warn!(instance = %self.cfg.name, %vip, "cannot announce the VIP: {e}");
                    }
                }
            }
        }
    }
}

/// Adds the VIPs to (or removes them from) the no-accept drop sets; `nft` runs off the
/// async threads.
async fn set_drop(table: String, vips: Vec<IpAddr>, add: bool) -> Result<()> {
    tokio::task::spawn_blocking(move || no_accept::apply(&no_accept::elements(&table, &vips, add)))
        .await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(name: &str, weight: u8, down: bool) -> TrackStatus {
        TrackStatus {
            target: TrackTarget::Interface(name.into()),
            weight,
            down,
        }
    }

    #[test]
    fn tracked_weights_lower_the_priority_down_to_one() {
        assert_eq!(effective_priority(150, &[]), 150);
        let tracks = [track("eth1", 60, true), track("eth2", 30, false)];
        assert_eq!(effective_priority(150, &tracks), 90);
        let tracks = [track("eth1", 100, true), track("eth2", 100, true)];
        assert_eq!(effective_priority(150, &tracks), 1);
        // An owner that loses a tracked object is no longer the owner.
        assert_eq!(effective_priority(255, &[track("eth1", 5, true)]), 250);
    }
}
