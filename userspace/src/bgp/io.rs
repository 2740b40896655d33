//! The tokio edge of the BGP speaker: one task per peer running its [`Session`], listeners
//! shared by the peers, and the sockets.
//!
//! ```text
//!  listener (per LocalConfig::listen address, TCP MD5 key per peer)
//!     | accepted stream, matched to a peer by source address
//!     v
//!  peer task ---- Session::event(now, ev) -> actions ----+
//!     ^   connect task (MD5 key set before connect)      |
//!     |   reader task per connection: framed messages    | Send -> writer task
//!     +-- announce / shutdown watch channels             | Close, Connect, ...
//!                                                        v
//!                                  status: watch::Sender<SpeakerStatus>
//! ```
//!
//! A peer task owns its session and nothing else; if it panics it is restarted after a pause
//! with a fresh session, and the other peers do not notice.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use super::config::{PeerConfig, Routes};
use super::md5;
use super::packet::{DecodeError, HEADER_LEN, frame_len};
use super::session::{Action, ConnId, Event, Negotiated, NextHops, Session, SessionStats, State};

/// How long an outgoing connection may take (the session also gives up after its retry
/// interval).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closing connection may take to write what is queued (the NOTIFICATION).
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// Messages queued for one connection before it is deemed stuck and closed.
const SEND_QUEUE: usize = 8192;
/// Pause before a crashed peer task starts again, and between listener bind attempts.
const RESTART_PAUSE: Duration = Duration::from_secs(5);
/// IP precedence "internetwork control", as routing protocols use.
const TOS_INTERNETWORK_CONTROL: u32 = 0xc0;

/// What the speaker does as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalConfig {
    /// Where to accept connections (usually port 179 on a local address; one per address
    /// family for dual-stack peers). Empty: connect only, passive peers never come up.
    pub listen: Vec<SocketAddr>,
}

/// The BFD state of each peer that BFD watches (`bfd = true`), kept by whoever runs BFD
/// (the daemon's BGP part, from the bus). A peer whose `downs` grows loses its session at
/// once; a peer not in the map is not watched.
pub type BfdStates = BTreeMap<IpAddr, BfdPeerState>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BfdPeerState {
    pub up: bool,
    /// Times the BFD session went from up to down.
    pub downs: u64,
}

/// The whole speaker's state, published through a watch channel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpeakerStatus {
    pub listeners: Vec<ListenerStatus>,
    /// In the order of the configured peers.
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerStatus {
    pub address: SocketAddr,
    pub listening: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub remote_as: u32,
    pub state: State,
    /// Seconds since the session was established.
    pub uptime_secs: Option<u64>,
    /// Why the last connection or attempt ended (NOTIFICATION sent or received, connect
    /// error, configuration problem).
    pub last_error: Option<String>,
    pub negotiated: Option<Negotiated>,
    /// Our addresses on the established connection, usable as next hops.
    pub next_hops: Option<NextHops>,
    /// The interface of the last connection (where a BFD session to the peer runs).
    pub interface: Option<String>,
    /// BFD, when it watches this peer.
    pub bfd: Option<BfdPeerState>,
    /// Our graceful restart time when we offer the capability (see `negotiated` for what
    /// the peer said).
    pub graceful_restart: Option<u16>,
    /// Restarted: our End-of-RIB waits for the announce policy to settle.
    pub end_of_rib_held: bool,
    /// Prefixes the peer currently has from us.
    pub prefixes_advertised: usize,
    /// Message and prefix counters; received prefixes are counted, then discarded.
    pub stats: SessionStats,
}

impl PeerStatus {
    pub(crate) fn idle(cfg: &PeerConfig) -> Self {
        Self {
            address: cfg.address,
            remote_as: cfg.remote_as,
            state: State::Idle,
            uptime_secs: None,
            last_error: None,
            negotiated: None,
            next_hops: None,
            interface: None,
            bfd: None,
            graceful_restart: cfg.graceful_restart,
            end_of_rib_held: false,
            prefixes_advertised: 0,
            stats: SessionStats::default(),
        }
    }
}

/// Runs the BGP sessions of all peers until shutdown.
pub struct Speaker {
    local: LocalConfig,
    peers: Vec<PeerConfig>,
    bfd: Option<watch::Receiver<BfdStates>>,
    settled: Option<watch::Receiver<bool>>,
}

/// Where the listeners hand accepted connections: the peer task of each address.
type Registry = Arc<Mutex<HashMap<IpAddr, mpsc::Sender<TcpStream>>>>;

impl Speaker {
    pub fn new(local: LocalConfig, peers: Vec<PeerConfig>) -> Self {
        Self {
            local,
            peers,
            bfd: None,
            settled: None,
        }
    }

    /// Whether the announce set is what this process means to announce (see
    /// [`Event::Settled`]): until it says so, restarting sessions hold their End-of-RIB.
    pub fn with_settled(mut self, settled: watch::Receiver<bool>) -> Self {
        self.settled = Some(settled);
        self
    }

    /// Peers in `states` follow their BFD session: down brings their session down at once.
    pub fn with_bfd(mut self, states: watch::Receiver<BfdStates>) -> Self {
        self.bfd = Some(states);
        self
    }

    /// Runs until `shutdown` holds `Some(message)` (or its sender goes away): then every
    /// session ends with Cease / Administrative Shutdown carrying `message` as its shutdown
    /// communication (none if empty), and `run` returns once those are written (bounded).
    ///
    /// `announce` is the set of routes every peer gets; a new value is sent as differences.
    /// `status` gets a fresh [`SpeakerStatus`] whenever something changes, at most about
    /// once a second for counters and uptime.
    pub async fn run(
        self,
        announce: watch::Receiver<Routes>,
        shutdown: watch::Receiver<Option<String>>,
        status: watch::Sender<SpeakerStatus>,
    ) {
        let status = Arc::new(status);
        status.send_replace(SpeakerStatus {
            listeners: self
                .local
                .listen
                .iter()
                .map(|a| ListenerStatus {
                    address: *a,
                    listening: false,
                    error: None,
                })
                .collect(),
            peers: self.peers.iter().map(PeerStatus::idle).collect(),
        });
        let registry: Registry = Arc::default();
        let keys: Vec<(IpAddr, String)> = self
            .peers
            .iter()
            .filter_map(|p| p.md5_password.clone().map(|k| (p.address, k)))
            .collect();
        let listeners: Vec<JoinHandle<()>> = self
            .local
            .listen
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                tokio::spawn(listen_loop(
                    i,
                    *addr,
                    keys.clone(),
                    registry.clone(),
                    status.clone(),
                ))
            })
            .collect();
        let mut peers = JoinSet::new();
        let mut seen = std::collections::HashSet::new();
        for (i, cfg) in self.peers.into_iter().enumerate() {
            let duplicate = !seen.insert(cfg.address);
            peers.spawn(supervise(
                i,
                cfg,
                duplicate,
                registry.clone(),
                Inputs {
                    announce: announce.clone(),
                    shutdown: shutdown.clone(),
                    bfd: self.bfd.clone(),
                    settled: self.settled.clone(),
                },
                status.clone(),
            ));
        }
        while peers.join_next().await.is_some() {}
        for l in listeners {
            l.abort();
        }
    }
}

fn stopping(shutdown: &watch::Receiver<Option<String>>) -> bool {
    shutdown.borrow().is_some() || shutdown.has_changed().is_err()
}

/// Runs a peer's task, and again after a pause if it panics.
/// What every peer task follows.
#[derive(Clone)]
struct Inputs {
    announce: watch::Receiver<Routes>,
    shutdown: watch::Receiver<Option<String>>,
    bfd: Option<watch::Receiver<BfdStates>>,
    settled: Option<watch::Receiver<bool>>,
}

async fn supervise(
    i: usize,
    cfg: PeerConfig,
    duplicate: bool,
    registry: Registry,
    inputs: Inputs,
    status: Arc<watch::Sender<SpeakerStatus>>,
) {
    let mut shutdown = inputs.shutdown.clone();
    let problem = if duplicate {
        Some(format!("peer {} is configured twice", cfg.address))
    } else {
        cfg.validate().err().map(|e| e.to_string())
    };
    if let Some(text) = problem {
        warn!(peer = %cfg.address, "bgp: {text}");
        status.send_modify(|s| {
            if let Some(p) = s.peers.get_mut(i) {
                p.last_error = Some(text);
            }
        });
        while !stopping(&shutdown) {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        return;
    }
    loop {
        let (tx, rx) = mpsc::channel(4);
        lock(&registry).insert(cfg.address.to_canonical(), tx);
        let task = tokio::spawn(peer_task(
            i,
            cfg.clone(),
            rx,
            inputs.clone(),
            status.clone(),
        ));
        match task.await {
            Ok(()) => break,
            Err(e) => {
                let text = format!("peer task failed: {e}");
                warn!(peer = %cfg.address, "bgp: {text}; restarting");
                status.send_modify(|s| {
                    if let Some(p) = s.peers.get_mut(i) {
                        *p = PeerStatus {
                            last_error: Some(text),
                            ..PeerStatus::idle(&cfg)
                        };
                    }
                });
            }
        }
        if stopping(&shutdown) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(RESTART_PAUSE) => {}
            _ = shutdown.changed() => break,
        }
    }
    lock(&registry).remove(&cfg.address.to_canonical());
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the connection tasks tell the peer task.
enum IoEvent {
    Frame(ConnId, Vec<u8>),
    FrameError(ConnId, DecodeError),
    /// The connection ended; the error, if it was not a clean close.
    Closed(ConnId, Option<String>),
    Connected(u64, io::Result<TcpStream>),
}

struct ConnIo {
    /// Local and remote addresses, to find our next hops again.
    addrs: Option<(IpAddr, IpAddr)>,
    tx: mpsc::Sender<Vec<u8>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// One peer: its session, its connections, its attempt to connect.
struct Peer {
    i: usize,
    session: Session,
    conns: HashMap<ConnId, ConnIo>,
    next_conn: u64,
    attempt: Option<(u64, JoinHandle<()>)>,
    closing: Vec<JoinHandle<()>>,
    events: mpsc::Sender<IoEvent>,
    last_error: Option<String>,
    /// Interface of the last connection.
    interface: Option<String>,
    bfd: Option<BfdPeerState>,
}

async fn peer_task(
    i: usize,
    cfg: PeerConfig,
    mut incoming: mpsc::Receiver<TcpStream>,
    inputs: Inputs,
    status: Arc<watch::Sender<SpeakerStatus>>,
) {
    let Inputs {
        mut announce,
        mut shutdown,
        mut bfd,
        mut settled,
    } = inputs;
    let (events, mut rx) = mpsc::channel(256);
    let mut peer = Peer {
        i,
        session: Session::new(cfg),
        conns: HashMap::new(),
        next_conn: 1,
        attempt: None,
        closing: Vec::new(),
        events,
        last_error: None,
        interface: None,
        bfd: None,
    };
    if let Some(b) = &mut bfd {
        peer.bfd = b.borrow_and_update().get(&peer.addr()).copied();
    }
    let routes = announce.borrow_and_update().clone();
    peer.handle(Event::Announce(routes));
    if let Some(s) = &mut settled {
        let now = *s.borrow_and_update();
        peer.handle(Event::Settled(now));
    }
    if !stopping(&shutdown) {
        peer.handle(Event::ManualStart);
    }
    peer.publish(&status);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = peer.session.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => peer.handle(Event::Tick),
            Some(stream) = incoming.recv() => peer.accepted(stream),
            Some(ev) = rx.recv() => peer.io_event(ev),
            changed = announce.changed() => {
                if changed.is_err() {
                    break;
                }
                let routes = announce.borrow_and_update().clone();
                peer.handle(Event::Announce(routes));
            }
            changed = shutdown.changed() => {
                if changed.is_err() || shutdown.borrow().is_some() {
                    break;
                }
            }
            _ = second.tick() => peer.recheck_next_hops(),
            changed = async {
                match &mut bfd {
                    Some(b) => b.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                match (changed, &mut bfd) {
                    (Ok(()), Some(b)) => {
                        let state = b.borrow_and_update().get(&peer.addr()).copied();
                        peer.bfd_changed(state);
                    }
                    // Whoever ran BFD is gone: nothing watches the peers any more.
                    _ => {
                        bfd = None;
                        peer.bfd = None;
                    }
                }
            }
            changed = async {
                match &mut settled {
                    Some(s) => s.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                // Whoever said it is gone: nothing more to wait for.
                let now = match (changed.is_ok(), &mut settled) {
                    (true, Some(s)) => *s.borrow_and_update(),
                    _ => {
                        settled = None;
                        true
                    }
                };
                peer.handle(Event::Settled(now));
            }
        }
        peer.publish(&status);
    }
    let message = shutdown.borrow().clone().filter(|m| !m.is_empty());
    peer.handle(Event::ManualStop { message });
    // Let the NOTIFICATIONs go out before returning.
    let closing = std::mem::take(&mut peer.closing);
    let _ = tokio::time::timeout(CLOSE_GRACE, futures::future::join_all(closing)).await;
    peer.publish(&status);
}

impl Peer {
    fn addr(&self) -> IpAddr {
        self.session.config().address
    }

    fn handle(&mut self, ev: Event) {
        let actions = self.session.event(Instant::now(), ev);
        self.perform(actions);
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Connect => self.connect(),
                Action::AbortConnect => {
                    if let Some((_, h)) = self.attempt.take() {
                        h.abort();
                    }
                }
                Action::Send { conn, msg } => {
                    let bytes = msg.encode(self.session.codec(conn));
                    let Some(c) = self.conns.get(&conn) else {
                        continue;
                    };
                    if c.tx.try_send(bytes).is_err() {
                        // Stuck (the peer reads nothing) or gone: drop the connection.
                        let _ = self
                            .events
                            .try_send(IoEvent::Closed(conn, Some("send queue full".to_owned())));
                    }
                }
                Action::Close { conn } => self.close(conn),
                Action::StateChanged { from, to } => {
                    debug!(peer = %self.addr(), "bgp: {from:?} -> {to:?}");
                }
                Action::Established(n) => {
                    info!(
                        peer = %self.addr(),
                        peer_as = n.peer_as,
                        peer_id = %n.peer_id,
                        hold_time = n.hold_time,
                        "bgp: session established"
                    );
                }
                Action::Down {
                    reason,
                    was_established,
                } => {
                    let text = reason.to_string();
                    if was_established {
                        warn!(peer = %self.addr(), "bgp: session down: {text}");
                    } else if self.last_error.as_ref() != Some(&text) {
                        info!(peer = %self.addr(), "bgp: session attempt failed: {text}");
                    }
                    self.last_error = Some(text);
                }
            }
        }
    }

    fn bfd_changed(&mut self, state: Option<BfdPeerState>) {
        let before = self.bfd.map_or(0, |b| b.downs);
        if let Some(now) = state
            && now.downs > before
            && self.session.state() != State::Idle
        {
            warn!(peer = %self.addr(), "bgp: BFD session down; closing the BGP session");
            self.handle(Event::BfdDown);
        }
        self.bfd = state;
    }

    fn connect(&mut self) {
        if let Some((_, h)) = self.attempt.take() {
            h.abort();
        }
        let id = self.next_conn;
        self.next_conn += 1;
        let cfg = self.session.config().clone();
        let events = self.events.clone();
        let h = tokio::spawn(async move {
            let r = match tokio::time::timeout(CONNECT_TIMEOUT, connect(&cfg)).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
            };
            let _ = events.send(IoEvent::Connected(id, r)).await;
        });
        self.attempt = Some((id, h));
    }

    fn accepted(&mut self, stream: TcpStream) {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let next_hops = self.setup(id, stream);
        self.handle(Event::TcpConnected {
            conn: id,
            outgoing: false,
            next_hops,
        });
    }

    /// Starts the reader and writer of a new connection; returns our next hops on it.
    fn setup(&mut self, id: ConnId, stream: TcpStream) -> NextHops {
        let _ = stream.set_nodelay(true);
        let addrs = match (stream.local_addr(), stream.peer_addr()) {
            (Ok(l), Ok(p)) => Some((l.ip().to_canonical(), p.ip().to_canonical())),
            _ => None,
        };
        let hops = addrs.map_or_else(NextHops::default, |(l, p)| local_next_hops(l, p));
        if let Some(name) = addrs.and_then(|(l, _)| interface_of(l)) {
            self.interface = Some(name);
        }
        let (rd, wr) = stream.into_split();
        let (tx, queue) = mpsc::channel(SEND_QUEUE);
        let reader = tokio::spawn(read_loop(id, rd, self.events.clone()));
        let writer = tokio::spawn(write_loop(id, queue, wr, self.events.clone()));
        self.conns.insert(
            id,
            ConnIo {
                addrs,
                tx,
                reader,
                writer,
            },
        );
        hops
    }

    /// Addresses come and go (a link-local one is not listed until its duplicate address
    /// detection is under way): find the established connection's next hops again.
    fn recheck_next_hops(&mut self) {
        let (Some(conn), Some(current)) =
            (self.session.established_conn(), self.session.next_hops())
        else {
            return;
        };
        let Some((local, peer)) = self.conns.get(&conn).and_then(|c| c.addrs) else {
            return;
        };
        let next_hops = local_next_hops(local, peer);
        if next_hops != current {
            debug!(peer = %self.addr(), ?next_hops, "bgp: next hops changed");
            self.handle(Event::NextHops { conn, next_hops });
        }
    }

    fn close(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        // Dropping the sender lets the writer flush what is queued, then shut down.
        drop(c.tx);
        let (writer, mut reader) = (c.writer, c.reader);
        self.closing.retain(|h| !h.is_finished());
        self.closing.push(tokio::spawn(async move {
            // Written, then the peer's own close (it closes on our NOTIFICATION): a stop
            // returns only once the peer has read it, so what the daemon does next (BFD's
            // AdminDown) cannot overtake it.
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                let _ = writer.await;
                let _ = (&mut reader).await;
            })
            .await;
            reader.abort();
        }));
    }

    fn io_event(&mut self, ev: IoEvent) {
        match ev {
            IoEvent::Frame(conn, bytes) => {
                if self.conns.contains_key(&conn) {
                    let actions = self.session.receive(Instant::now(), conn, &bytes);
                    self.perform(actions);
                }
            }
            IoEvent::FrameError(conn, error) => {
                if self.conns.contains_key(&conn) {
                    self.handle(Event::DecodeError { conn, error });
                }
            }
            IoEvent::Closed(conn, error) => {
                if self.conns.contains_key(&conn) {
                    self.handle(Event::TcpClosed { conn });
                    if let Some(e) = error {
                        self.last_error = Some(format!("connection lost: {e}"));
                    }
                }
            }
            IoEvent::Connected(id, result) => {
                if self.attempt.as_ref().map(|(a, _)| *a) != Some(id) {
                    return;
                }
                self.attempt = None;
                match result {
                    Ok(stream) => {
                        let conn = ConnId(id);
                        let next_hops = self.setup(conn, stream);
                        self.handle(Event::TcpConnected {
                            conn,
                            outgoing: true,
                            next_hops,
                        });
                    }
                    Err(e) => {
                        let text = format!("connect to port {}: {e}", self.session.config().port);
                        if self.last_error.as_ref() != Some(&text) {
                            debug!(peer = %self.addr(), "bgp: {text}");
                        }
                        self.last_error = Some(text);
                        self.handle(Event::TcpFailed);
                    }
                }
            }
        }
    }

    fn snapshot(&self) -> PeerStatus {
        let cfg = self.session.config();
        PeerStatus {
            address: cfg.address,
            remote_as: cfg.remote_as,
            state: self.session.state(),
            uptime_secs: self.session.established_at().map(|t| t.elapsed().as_secs()),
            last_error: self.last_error.clone(),
            negotiated: (self.session.state() == State::Established)
                .then(|| self.session.negotiated().cloned())
                .flatten(),
            next_hops: self.session.next_hops(),
            interface: self.interface.clone(),
            bfd: self.bfd,
            graceful_restart: cfg.graceful_restart,
            end_of_rib_held: self.session.end_of_rib_held(),
            prefixes_advertised: self.session.advertised().len(),
            stats: self.session.stats().clone(),
        }
    }

    fn publish(&self, status: &watch::Sender<SpeakerStatus>) {
        let snap = self.snapshot();
        status.send_if_modified(|s| match s.peers.get_mut(self.i) {
            Some(p) if *p != snap => {
                *p = snap;
                true
            }
            _ => false,
        });
    }
}

/// Reads framed messages (RFC 4271 §4.1) until the connection ends or a header is bad.
async fn read_loop(conn: ConnId, mut rd: OwnedReadHalf, events: mpsc::Sender<IoEvent>) {
    loop {
        let mut header = [0u8; HEADER_LEN];
        if let Err(e) = rd.read_exact(&mut header).await {
            let _ = events.send(IoEvent::Closed(conn, io_error(e))).await;
            return;
        }
        let len = match frame_len(&header) {
            Ok(n) => n,
            Err(e) => {
                let _ = events.send(IoEvent::FrameError(conn, e)).await;
                return;
            }
        };
        let mut msg = vec![0u8; len];
        msg[..HEADER_LEN].copy_from_slice(&header);
        if let Err(e) = rd.read_exact(&mut msg[HEADER_LEN..]).await {
            let _ = events.send(IoEvent::Closed(conn, io_error(e))).await;
            return;
        }
        if events.send(IoEvent::Frame(conn, msg)).await.is_err() {
            return;
        }
    }
}

/// A clean close reads as end of file: no error to report.
fn io_error(e: io::Error) -> Option<String> {
    (e.kind() != io::ErrorKind::UnexpectedEof).then(|| e.to_string())
}

async fn write_loop(
    conn: ConnId,
    mut queue: mpsc::Receiver<Vec<u8>>,
    mut wr: OwnedWriteHalf,
    events: mpsc::Sender<IoEvent>,
) {
    while let Some(bytes) = queue.recv().await {
        if let Err(e) = wr.write_all(&bytes).await {
            let _ = events
                .send(IoEvent::Closed(conn, Some(e.to_string())))
                .await;
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// A TCP socket towards or from a peer: no Nagle, precedence internetwork control.
fn tcp_socket(family: &SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::for_address(*family),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    if family.is_ipv4() {
        sock.set_tos_v4(TOS_INTERNETWORK_CONTROL)?;
    } else {
        sock.set_tclass_v6(TOS_INTERNETWORK_CONTROL)?;
    }
    Ok(sock)
}

/// Connects to the peer, with the MD5 key set first and from the configured source address.
async fn connect(cfg: &PeerConfig) -> io::Result<TcpStream> {
    let addr = SocketAddr::new(cfg.address, cfg.port);
    let sock = tcp_socket(&addr)?;
    if let Some(key) = &cfg.md5_password {
        md5::set_key(&sock, cfg.address, key.as_bytes())?;
    }
    if let Some(local) = cfg.local_address {
        sock.bind(&SocketAddr::new(local, 0).into())?;
    }
    TcpSocket::from_std_stream(sock.into()).connect(addr).await
}

/// Binds a listener with every peer's MD5 key of its family. IP_FREEBIND lets it bind an
/// address that is not (yet) configured.
fn bind_listener(addr: SocketAddr, keys: &[(IpAddr, String)]) -> io::Result<TcpListener> {
    let sock = tcp_socket(&addr)?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
        sock.set_freebind_v6(true)?;
    } else {
        sock.set_freebind_v4(true)?;
    }
    for (peer, key) in keys {
        if peer.is_ipv4() == addr.is_ipv4() {
            md5::set_key(&sock, *peer, key.as_bytes())?;
        }
    }
    sock.bind(&addr.into())?;
    sock.listen(64)?;
    TcpListener::from_std(sock.into())
}

async fn listen_loop(
    i: usize,
    addr: SocketAddr,
    keys: Vec<(IpAddr, String)>,
    registry: Registry,
    status: Arc<watch::Sender<SpeakerStatus>>,
) {
    let set = |listening: bool, error: Option<String>| {
        status.send_if_modified(|s| match s.listeners.get_mut(i) {
            Some(l) if l.listening != listening || l.error != error => {
                l.listening = listening;
                l.error = error.clone();
                true
            }
            _ => false,
        });
    };
    loop {
        let listener = match bind_listener(addr, &keys) {
            Ok(l) => l,
            Err(e) => {
                let text = format!("listen on {addr}: {e}");
                warn!("bgp: {text}");
                set(false, Some(text));
                tokio::time::sleep(RESTART_PAUSE).await;
                continue;
            }
        };
        info!(%addr, "bgp: listening");
        set(true, None);
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    let ip = from.ip().to_canonical();
                    let tx = lock(&registry).get(&ip).cloned();
                    match tx {
                        Some(tx) => {
                            // A full queue means the peer task is busy with earlier ones.
                            let _ = tx.try_send(stream);
                        }
                        None => debug!(%from, "bgp: connection from an unknown address refused"),
                    }
                }
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    warn!(%addr, "bgp: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Our next hops on a connection from `local` to `peer`: the local address itself, the
/// other family's address of the same interface, and the interface's link-local IPv6
/// address when the peer is on that link.
fn local_next_hops(local: IpAddr, peer: IpAddr) -> NextHops {
    let mut hops = NextHops::default();
    match local {
        IpAddr::V4(a) => hops.v4 = Some(a),
        IpAddr::V6(a) if !is_link_local(&a) => hops.v6 = Some(a),
        IpAddr::V6(_) => {}
    }
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return hops;
    };
    let addrs: Vec<_> = addrs.collect();
    let ip_of = |a: &nix::ifaddrs::InterfaceAddress| -> Option<(IpAddr, Option<IpAddr>)> {
        let addr = a.address.as_ref()?;
        let mask = a.netmask.as_ref();
        if let Some(s) = addr.as_sockaddr_in() {
            let m = mask
                .and_then(|m| m.as_sockaddr_in())
                .map(|m| IpAddr::V4(m.ip()));
            return Some((IpAddr::V4(s.ip()), m));
        }
        let s = addr.as_sockaddr_in6()?;
        let m = mask
            .and_then(|m| m.as_sockaddr_in6())
            .map(|m| IpAddr::V6(m.ip()));
        Some((IpAddr::V6(s.ip()), m))
    };
    let Some(ifname) = addrs
        .iter()
        .find(|a| ip_of(a).is_some_and(|(ip, _)| ip == local))
        .map(|a| a.interface_name.clone())
    else {
        return hops;
    };
    let mut on_link = matches!(peer, IpAddr::V6(p) if is_link_local(&p));
    for a in addrs.iter().filter(|a| a.interface_name == ifname) {
        let Some((ip, mask)) = ip_of(a) else { continue };
        if let Some(m) = mask
            && same_subnet(ip, peer, m)
        {
            on_link = true;
        }
        match ip {
            IpAddr::V4(v4) if hops.v4.is_none() && !v4.is_loopback() => hops.v4 = Some(v4),
            IpAddr::V6(v6) if is_link_local(&v6) => {
                hops.v6_link_local = hops.v6_link_local.or(Some(v6));
            }
            IpAddr::V6(v6) if hops.v6.is_none() && !v6.is_loopback() => hops.v6 = Some(v6),
            _ => {}
        }
    }
    if !on_link {
        hops.v6_link_local = None;
    }
    hops
}

/// The interface holding `local`.
fn interface_of(local: IpAddr) -> Option<String> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|a| {
        let addr = a.address.as_ref()?;
        let ip = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
            (Some(s), _) => IpAddr::V4(s.ip()),
            (None, Some(s)) => IpAddr::V6(s.ip()),
            _ => return None,
        };
        (ip == local).then(|| a.interface_name.clone())
    })
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

fn same_subnet(a: IpAddr, b: IpAddr, mask: IpAddr) -> bool {
    match (a, b, mask) {
        (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(m)) => {
            let m = u32::from(m);
            m != 0 && u32::from(a) & m == u32::from(b) & m
        }
        (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(m)) => {
            let m = u128::from(m);
            m != 0 && u128::from(a) & m == u128::from(b) & m
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
