//! The socket edge: one raw IPPROTO 89 socket per interface (bound to the device, joined to
//! 224.0.0.5 and 224.0.0.6, TTL 1, precedence internetwork control), interface addresses
//! polled from the kernel, and a loop that feeds the pure `Instance` and sends what it
//! queues.

use std::collections::BTreeMap;
use std::io::Read;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::instance::{
    Announce, GrConfig, IfaceAddr, IfaceConfig, Instance, InstanceStatus, Limits,
};
use super::lsa::grace::RestartReason;
use super::packet::{ALL_D_ROUTERS, ALL_SPF_ROUTERS, IPPROTO_OSPF};

/// Timer resolution of the instance.
const TICK: Duration = Duration::from_millis(50);
/// How often interface addresses, MTU and link state are re-read.
const LINK_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{interface}: {what}: {source}")]
    Socket {
        interface: String,
        what: &'static str,
        source: std::io::Error,
    },
}

struct Link {
    name: String,
    addr: Option<IfaceAddr>,
    sock: Option<Arc<AsyncFd<Socket>>>,
    reader: Option<JoinHandle<()>>,
    /// Last socket error, logged once per change.
    error: Option<String>,
}

/// A received packet: interface index in the instance, IP source, IP destination, IP TTL,
/// payload.
type Rx = (usize, Ipv4Addr, Ipv4Addr, u8, Vec<u8>);

/// Runs the OSPF speaker until `shutdown` turns true, then withdraws gracefully.
pub struct Speaker {
    inst: Instance,
    links: Vec<Link>,
    rx_tx: mpsc::Sender<Rx>,
    rx: mpsc::Receiver<Rx>,
    /// Upper bound on how long a graceful stop waits for acknowledgments.
    pub shutdown_grace: Duration,
    /// Neighbours to bring down now (interface name, address), from BFD.
    kills: Option<mpsc::UnboundedReceiver<(String, Ipv4Addr)>>,
    /// Where the speaker notes that it runs with graceful restart, or stopped for one.
    state_file: Option<std::path::PathBuf>,
    /// Whether the coming stop is a planned graceful restart rather than a withdrawal.
    restart_on_stop: Option<watch::Receiver<bool>>,
    /// The longest dead interval of the interfaces, in ms.
    dead_ms: u64,
}

/// What the state file says about the last run (`RestartState::read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartState {
    /// It ran with graceful restart, still alive at `at_ms` (ms since the epoch; noted every
    /// second), and did not stop cleanly: an unplanned restart, if neighbours still hold the
    /// adjacency (within the dead interval).
    Running { at_ms: u64 },
    /// It stopped for a planned restart; helpers wait until then (ms since the epoch).
    Planned { until_ms: u64 },
}

impl RestartState {
    pub fn read(path: &std::path::Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut words = text.split_whitespace();
        match words.next()? {
            "running" => Some(Self::Running {
                at_ms: words.next()?.parse().ok()?,
            }),
            "planned" => Some(Self::Planned {
                until_ms: words.next()?.parse().ok()?,
            }),
            _ => None,
        }
    }

    fn write(self, path: &std::path::Path) {
        let text = match self {
            Self::Running { at_ms } => format!("running {at_ms}\n"),
            Self::Planned { until_ms } => format!("planned {until_ms}\n"),
        };
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(path, text));
        if let Err(e) = written {
            warn!("ospf: cannot write {}: {e}", path.display());
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn next_kill(
    kills: &mut Option<mpsc::UnboundedReceiver<(String, Ipv4Addr)>>,
) -> Option<(String, Ipv4Addr)> {
    match kills {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn wall_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

impl Speaker {
    pub fn new(router_id: Ipv4Addr, interfaces: Vec<IfaceConfig>) -> Self {
        let links = interfaces
            .iter()
            .map(|c| Link {
                name: c.name.clone(),
                addr: None,
                sock: None,
                reader: None,
                error: None,
            })
            .collect();
        let grace = interfaces
            .iter()
            .map(|c| u64::from(c.retransmit_interval))
            .max()
            .unwrap_or(5)
            + 1;
        let dead_ms = interfaces
            .iter()
            .map(|c| u64::from(c.dead_interval) * 1000)
            .max()
            .unwrap_or(40_000);
        let (rx_tx, rx) = mpsc::channel(1024);
        Self {
            inst: Instance::new(router_id, interfaces, wall_secs(), Instant::now()),
            links,
            rx_tx,
            rx,
            shutdown_grace: Duration::from_secs(grace),
            kills: None,
            state_file: None,
            restart_on_stop: None,
            dead_ms,
        }
    }

    /// Graceful restart (`[ospf]` `graceful_restart`, `grace_period`, `gr_helper`), with
    /// the file that tells the next start whether this run stopped for a restart.
    pub fn set_graceful_restart(&mut self, gr: GrConfig, state_file: Option<std::path::PathBuf>) {
        self.inst.set_graceful_restart(gr);
        self.state_file = state_file;
    }

    /// Set it to `true` before the shutdown to stop for a planned graceful restart: grace-
    /// LSAs instead of a withdrawal (only with `graceful_restart`).
    pub fn restart_on_stop(&mut self) -> watch::Sender<bool> {
        let (tx, rx) = watch::channel(false);
        self.restart_on_stop = Some(rx);
        tx
    }

    /// Notes that we still run with graceful restart (every second: /run is a tmpfs).
    fn heartbeat(&self) {
        if let Some(path) = &self.state_file
            && self.inst.graceful_restart().restart
        {
            RestartState::Running { at_ms: now_ms() }.write(path);
        }
    }

    /// At start: a graceful restart if the state file says the last run had one coming
    /// (planned, within its grace period) or died while running with it (unplanned).
    fn resume_restart(&mut self, now: Instant) {
        let Some(path) = self.state_file.clone() else {
            return;
        };
        let gr = self.inst.graceful_restart();
        match RestartState::read(&path) {
            Some(RestartState::Planned { until_ms }) if gr.restart => {
                let left = until_ms.saturating_sub(now_ms()) / 1000;
                if left > 0 {
                    let left = u32::try_from(left).unwrap_or(gr.grace_period);
                    self.inst
                        .begin_restart(left, RestartReason::SoftwareRestart, false, now);
                }
            }
            // Past the dead interval the neighbours dropped us: a grace-LSA would be refused
            // and only hold back our LSAs.
            Some(RestartState::Running { at_ms })
                if gr.restart && now_ms().saturating_sub(at_ms) < self.dead_ms =>
            {
                self.inst
                    .begin_restart(gr.grace_period, RestartReason::Unknown, true, now);
            }
            _ => {}
        }
        if gr.restart {
            RestartState::Running { at_ms: now_ms() }.write(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }

    pub fn instance(&mut self) -> &mut Instance {
        &mut self.inst
    }

    /// Bounds on neighbours and database (`[ospf]` `max_neighbors`, `max_lsas`; see
    /// `Limits::from(&OspfConfig)`); the defaults apply until this is called.
    pub fn set_limits(&mut self, limits: Limits) {
        self.inst.set_limits(limits);
    }

    /// Applies a changed interface list entry by entry; interfaces are matched by position
    /// and name (the caller restarts the speaker when the set of names changes).
    pub fn reconfigure(&mut self, interfaces: Vec<IfaceConfig>) {
        let now = Instant::now();
        for (i, cfg) in interfaces.into_iter().enumerate() {
            self.inst.reconfigure_interface(i, cfg, now);
        }
        self.send_output();
    }

    /// Where to say that a neighbour is gone (interface name, its address): it is brought
    /// down at once (KillNbr), as a BFD session going down does in FRR.
    pub fn neighbor_kills(&mut self) -> mpsc::UnboundedSender<(String, Ipv4Addr)> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.kills = Some(rx);
        tx
    }

    /// The main loop. `status` receives a fresh snapshot every second and on exit.
    pub async fn run(
        mut self,
        mut announce: watch::Receiver<BTreeMap<Ipv4Addr, Announce>>,
        mut shutdown: watch::Receiver<bool>,
        status: watch::Sender<Option<InstanceStatus>>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_poll: Option<Instant> = None;
        let mut last_status = Instant::now();
        let first = announce.borrow_and_update().clone();
        self.resume_restart(Instant::now());
        self.inst.set_announcements(first, Instant::now());
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = Instant::now();
                    if last_poll.is_none_or(|t| now - t >= LINK_POLL) {
                        last_poll = Some(now);
                        self.poll_links(now);
                    }
                    self.inst.set_wall_clock(wall_secs());
                    self.inst.tick(now);
                    self.send_output();
                    if now - last_status >= Duration::from_secs(1) {
                        last_status = now;
                        self.heartbeat();
                        let _ = status.send(Some(self.inst.status(now)));
                    }
                }
                Some((i, src, dst, ttl, data)) = self.rx.recv() => {
                    self.inst.receive_with_ttl(i, src, dst, ttl, &data, Instant::now());
                    self.send_output();
                }
                Some((name, addr)) = next_kill(&mut self.kills) => {
                    if let Some(i) = self.links.iter().position(|l| l.name == name) {
                        info!(interface = %name, neighbor = %addr, "ospf: neighbour down by BFD");
                        self.inst.kill_neighbor(i, addr, Instant::now());
                        self.send_output();
                        let _ = status.send(Some(self.inst.status(Instant::now())));
                    }
                }
                changed = announce.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let set = announce.borrow_and_update().clone();
                    self.inst.set_announcements(set, Instant::now());
                    self.send_output();
                    let _ = status.send(Some(self.inst.status(Instant::now())));
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        self.graceful_stop().await;
        let _ = status.send(Some(self.inst.status(Instant::now())));
        for link in &mut self.links {
            if let Some(r) = link.reader.take() {
                r.abort();
            }
        }
    }

    /// Flushes our LSAs, waits for acknowledgments (bounded), then a goodbye Hello. Or,
    /// for a planned graceful restart: grace-LSAs, acknowledged, and silence.
    async fn graceful_stop(&mut self) {
        let start = Instant::now();
        let gr = self.inst.graceful_restart();
        let planned = gr.restart && self.restart_on_stop.as_ref().is_some_and(|r| *r.borrow());
        if planned {
            self.inst
                .prepare_restart(RestartReason::SoftwareRestart, start);
        } else {
            self.inst.shutdown(start);
        }
        self.send_output();
        while !self.inst.flush_acknowledged() && start.elapsed() < self.shutdown_grace {
            tokio::select! {
                Some((i, src, dst, ttl, data)) = self.rx.recv() => {
                    self.inst.receive_with_ttl(i, src, dst, ttl, &data, Instant::now());
                }
                _ = tokio::time::sleep(TICK) => self.inst.tick(Instant::now()),
            }
            self.send_output();
        }
        if planned {
            if let Some(path) = &self.state_file {
                let until_ms = now_ms() + u64::from(gr.grace_period) * 1000;
                RestartState::Planned { until_ms }.write(path);
            }
            info!(
                acknowledged = self.inst.flush_acknowledged(),
                "ospf: grace-LSAs sent, leaving for a graceful restart"
            );
            return;
        }
        if let Some(path) = &self.state_file {
            let _ = std::fs::remove_file(path);
        }
        self.inst.say_goodbye();
        self.send_output();
        info!(
            acknowledged = self.inst.flush_acknowledged(),
            "ospf: own LSAs flushed, leaving"
        );
    }

    fn send_output(&mut self) {
        for t in self.inst.take_output() {
            let Some(link) = self.links.get(t.iface) else {
                continue;
            };
            let Some(sock) = &link.sock else {
                continue;
            };
            let dst = SockAddr::from(SocketAddrV4::new(t.dst, 0));
            if let Err(e) = sock.get_ref().send_to(&t.data, &dst) {
                // Transient (e.g. ENOBUFS, a link going down); the protocol retransmits.
                tracing::debug!(interface = %link.name, "ospf send failed: {e}");
            }
        }
    }

    /// Re-reads each interface's address, MTU and state; opens or closes its socket and
    /// tells the instance.
    fn poll_links(&mut self, now: Instant) {
        let current = read_interfaces();
        for i in 0..self.links.len() {
            let found = current.get(&self.links[i].name).copied();
            let link = &mut self.links[i];
            if found == link.addr && (found.is_none() || link.sock.is_some()) {
                continue;
            }
            if let Some(r) = link.reader.take() {
                r.abort();
            }
            link.sock = None;
            link.addr = found;
            match found {
                None => {
                    info!(interface = %link.name, "ospf: interface down or without IPv4 address");
                    self.inst.interface_down(i, now);
                }
                Some(addr) => match open_socket(&link.name, addr.addr) {
                    Ok(sock) => {
                        let sock = Arc::new(sock);
                        link.reader =
                            Some(tokio::spawn(read_loop(i, sock.clone(), self.rx_tx.clone())));
                        link.sock = Some(sock);
                        link.error = None;
                        info!(interface = %link.name, address = %addr.addr, mtu = addr.mtu, "ospf: interface up");
                        self.inst.interface_up(i, addr, now);
                    }
                    Err(e) => {
                        let text = e.to_string();
                        if link.error.as_ref() != Some(&text) {
                            warn!("ospf: {text}");
                            link.error = Some(text);
                        }
                        // Retry at the next poll.
                        link.addr = None;
                    }
                },
            }
        }
    }
}

async fn read_loop(i: usize, sock: Arc<AsyncFd<Socket>>, tx: mpsc::Sender<Rx>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok(mut guard) = sock.readable().await else {
            return;
        };
        let n = match guard.try_io(|s| s.get_ref().read(&mut buf)) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(Err(_)) => return,
            Err(_would_block) => continue,
        };
        if let Some((src, dst, ttl, payload)) = ip_payload(&buf[..n])
            && tx.send((i, src, dst, ttl, payload.to_vec())).await.is_err()
        {
            return;
        }
    }
}

/// Splits a raw socket read (a raw IPv4 socket delivers the IP header, so no IP_RECVTTL is
/// needed) into IPv4 source, destination, TTL and payload; `None` for anything that is not
/// a whole IPv4 OSPF packet.
pub(crate) fn ip_payload(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, &[u8])> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if ihl < 20 || total < ihl || total > packet.len() || i32::from(packet[9]) != IPPROTO_OSPF {
        return None;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Some((src, dst, packet[8], &packet[ihl..total]))
}

fn open_socket(name: &str, addr: Ipv4Addr) -> Result<AsyncFd<Socket>, IoError> {
    let err = |what| {
        move |source| IoError::Socket {
            interface: name.to_owned(),
            what,
            source,
        }
    };
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_OSPF)))
        .map_err(err("raw socket (needs CAP_NET_RAW)"))?;
    sock.bind_device(Some(name.as_bytes()))
        .map_err(err("SO_BINDTODEVICE"))?;
    let ifindex = nix::net::if_::if_nametoindex(name)
        .map_err(|e| err("interface index")(std::io::Error::from(e)))?;
    for group in [ALL_SPF_ROUTERS, ALL_D_ROUTERS] {
        sock.join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(ifindex))
            .map_err(err("multicast join"))?;
    }
    sock.set_multicast_if_v4(&addr)
        .map_err(err("IP_MULTICAST_IF"))?;
    sock.set_multicast_loop_v4(false)
        .map_err(err("IP_MULTICAST_LOOP"))?;
    sock.set_multicast_ttl_v4(1).map_err(err("multicast TTL"))?;
    sock.set_ttl_v4(1).map_err(err("TTL"))?;
    // Precedence "internetwork control", as RFC 2328 A.1 asks.
    sock.set_tos_v4(0xc0).map_err(err("IP_TOS"))?;
    sock.set_nonblocking(true).map_err(err("O_NONBLOCK"))?;
    // SAFETY: the socket owns its fd, which is neither replaced nor closed while the
    // AsyncFd holds it.
    unsafe { AsyncFd::register(sock) }.map_err(|e| err("registering with tokio")(e.into()))
}

/// IPv4 address, prefix and MTU of every interface that is up and running.
fn read_interfaces() -> BTreeMap<String, IfaceAddr> {
    use nix::net::if_::InterfaceFlags;
    let mut out = BTreeMap::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        if !a
            .flags
            .contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING)
        {
            continue;
        }
        let (Some(addr), Some(mask)) = (
            a.address.as_ref().and_then(|s| s.as_sockaddr_in()),
            a.netmask.as_ref().and_then(|s| s.as_sockaddr_in()),
        ) else {
            continue;
        };
        if out.contains_key(&a.interface_name) {
            // The first (primary) address is the one OSPF runs on.
            continue;
        }
        let Some(mtu) = interface_mtu(&a.interface_name) else {
            continue;
        };
        out.insert(
            a.interface_name.clone(),
            IfaceAddr {
                addr: addr.ip(),
                prefix_len: u32::from(mask.ip()).count_ones() as u8,
                mtu,
            },
        );
    }
    out
}

/// SIOCGIFMTU; /sys is not used because under `nsenter --net` it still shows the caller's
/// namespace.
fn interface_mtu(name: &str) -> Option<u16> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None).ok()?;
    let mut req: libc::ifreq = unsafe { MaybeUninit::zeroed().assume_init() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return None;
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: ifreq is a plain C struct the kernel fills; the fd is a valid socket.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if rc != 0 {
        return None;
    }
    // SAFETY: SIOCGIFMTU wrote the ifru_mtu member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u16::try_from(mtu).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_state_file_round_trips_and_rejects_garbage() {
        let dir = std::env::temp_dir().join(format!("portier-ospf-state-{}", std::process::id()));
        let path = dir.join("restart.state");
        for state in [
            RestartState::Running {
                at_ms: 1_796_000_000_123,
            },
            RestartState::Planned { until_ms: 42 },
        ] {
            state.write(&path);
            assert_eq!(RestartState::read(&path), Some(state));
        }
        for garbage in ["", "running", "planned soon", "master 12\n"] {
            std::fs::write(&path, garbage).unwrap();
            assert_eq!(RestartState::read(&path), None, "{garbage:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ip_payload_takes_the_ospf_part_and_rejects_the_rest() {
        let frame = &crate::ospf::packet::tests::frames(crate::ospf::packet::tests::BROADCAST)[0];
        // TTL 1 (byte 8), protocol 89.
        let mut ip = vec![0x45, 0xc0, 0, 0, 0, 0, 0, 0, 1, 89, 0, 0];
        ip.extend_from_slice(&frame.src.octets());
        ip.extend_from_slice(&frame.dst.octets());
        ip.extend_from_slice(&frame.payload);
        let total = ip.len() as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let (src, dst, ttl, payload) = ip_payload(&ip).unwrap();
        assert_eq!(
            (src, dst, ttl, payload),
            (frame.src, frame.dst, 1, &frame.payload[..])
        );
        assert!(ip_payload(&ip[..19]).is_none());
        let mut udp = ip.clone();
        udp[9] = 17;
        assert!(ip_payload(&udp).is_none());
        let mut long = ip.clone();
        long[2] = 0xff;
        assert!(ip_payload(&long).is_none());
        let mut v6 = ip;
        v6[0] = 0x65;
        assert!(ip_payload(&v6).is_none());
    }
}
