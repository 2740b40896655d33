//! Two speakers talking to each other over loopback (127.0.0.1 and 127.0.0.2), one passive
//! behind a listener, one active: sessions, MD5 keys, route counts, withdrawals, shutdown
//! communications, and that a broken peer or a stranger does not disturb the others.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;

use super::*;
use crate::bgp::config::RouteAttrs;
use crate::bgp::packet::Community;
use crate::bgp::prefix::Prefix;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn routes(list: &[&str]) -> Routes {
    list.iter()
        .map(|p| {
            (
                p.parse::<Prefix>().unwrap(),
                RouteAttrs {
                    communities: vec![Community::new(64513, 1)],
                    ..RouteAttrs::default()
                },
            )
        })
        .collect()
}

struct Running {
    announce: watch::Sender<Routes>,
    shutdown: watch::Sender<Option<String>>,
    status: watch::Receiver<SpeakerStatus>,
    task: JoinHandle<()>,
}

fn start(local: LocalConfig, peers: Vec<PeerConfig>, set: Routes) -> Running {
    let (announce, announce_rx) = watch::channel(set);
    let (shutdown, shutdown_rx) = watch::channel(None);
    let (status_tx, status) = watch::channel(SpeakerStatus::default());
    let task = tokio::spawn(Speaker::new(local, peers).run(announce_rx, shutdown_rx, status_tx));
    Running {
        announce,
        shutdown,
        status,
        task,
    }
}

impl Running {
    /// Waits for `f` to hold (once the speaker published its peers).
    async fn until(
        &mut self,
        what: &str,
        mut f: impl FnMut(&SpeakerStatus) -> bool,
    ) -> SpeakerStatus {
        let wait = self.status.wait_for(|s| !s.peers.is_empty() && f(s));
        let got = tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .map(|r| r.map(|s| s.clone()));
        match got {
            Ok(Ok(s)) => s,
            _ => panic!("timed out waiting for {what}: {:#?}", *self.status.borrow()),
        }
    }
}

/// A: AS 64512 on 127.0.0.1, passive; B: AS 64513 from 127.0.0.2, active.
fn pair(
    port: u16,
    key_a: Option<&str>,
    key_b: Option<&str>,
) -> (LocalConfig, PeerConfig, PeerConfig) {
    let mut a = PeerConfig::new(ip("127.0.0.2"), 64513, 64512, "10.0.0.1".parse().unwrap());
    a.passive = true;
    a.hold_time = 9;
    a.md5_password = key_a.map(str::to_owned);
    a.next_hop_v4 = Some("192.0.2.1".parse().unwrap());
    let mut b = PeerConfig::new(ip("127.0.0.1"), 64512, 64513, "10.0.0.11".parse().unwrap());
    b.port = port;
    b.local_address = Some(ip("127.0.0.2"));
    b.hold_time = 9;
    b.md5_password = key_b.map(str::to_owned);
    // Loopback addresses are no next hops (a receiver treats them as withdrawn), and
    // loopback has no global IPv6 address.
    b.next_hop_v4 = Some("192.0.2.2".parse().unwrap());
    b.next_hop_v6 = Some("2001:db8::2".parse().unwrap());
    let local = LocalConfig {
        listen: vec![SocketAddr::new(ip("127.0.0.1"), port)],
    };
    (local, a, b)
}

#[tokio::test]
async fn sessions_routes_withdrawals_and_shutdown_over_loopback() {
    let port = free_port();
    let (local, a, b) = pair(port, None, None);
    // A third peer with an impossible hold time: reported, and harmless to the others.
    let mut broken = PeerConfig::new(ip("127.0.0.9"), 64999, 64512, "10.0.0.1".parse().unwrap());
    broken.hold_time = 1;
    let mut sa = start(local, vec![a, broken], routes(&["198.51.100.0/24"]));
    let mut sb = start(
        LocalConfig::default(),
        vec![b],
        routes(&["203.0.113.10/32", "2001:db8:f::10/128"]),
    );
    let s = sa
        .until("A established with 2 prefixes from B", |s| {
            s.peers[0].state == State::Established && s.peers[0].stats.prefixes_received == 2
        })
        .await;
    assert!(s.listeners[0].listening);
    let n = s.peers[0].negotiated.as_ref().unwrap();
    assert_eq!((n.peer_as, n.hold_time, n.keepalive), (64513, 9, 3));
    assert!(!n.outgoing, "A is passive");
    assert_eq!(s.peers[0].prefixes_advertised, 1);
    assert_eq!(
        s.peers[1].last_error.as_deref(),
        Some("hold time 1 s: must be 0 or at least 3")
    );
    assert_eq!(s.peers[1].state, State::Idle);
    sb.until("B established with A's prefix", |s| {
        s.peers[0].state == State::Established
            && s.peers[0].stats.prefixes_received == 1
            && s.peers[0].prefixes_advertised == 2
    })
    .await;

    // A stranger connecting to A's listener is refused without a word.
    let mut stranger = TcpSocket::new_v4().unwrap();
    stranger.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut conn = stranger
        .connect(SocketAddr::new(ip("127.0.0.1"), port))
        .await
        .unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    stranger = TcpSocket::new_v4().unwrap();
    drop(stranger);

    // B's set shrinks: A sees one withdrawal.
    sb.announce.send(routes(&["2001:db8:f::10/128"])).unwrap();
    sa.until("A to see B's withdrawal", |s| {
        s.peers[0].stats.withdrawals_received == 1
    })
    .await;

    // B stops with a shutdown communication: A shows it, and waits for B again.
    sb.shutdown.send(Some("maintenance window".into())).unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut sb.task)
        .await
        .expect("B stops promptly")
        .unwrap();
    let s = sa
        .until("A to see B's Cease", |s| s.peers[0].state == State::Active)
        .await;
    assert_eq!(
        s.peers[0].last_error.as_deref(),
        Some("received Cease/Administrative Shutdown \"maintenance window\"")
    );
    assert_eq!(s.peers[0].prefixes_advertised, 0);
    assert!(s.peers[0].uptime_secs.is_none());
    let final_b = sb.status.borrow().clone();
    assert_eq!(final_b.peers[0].state, State::Idle);
    assert_eq!(final_b.peers[0].last_error.as_deref(), Some("stopped"));

    sa.shutdown.send(Some(String::new())).unwrap();
    tokio::time::timeout(Duration::from_secs(5), sa.task)
        .await
        .expect("A stops promptly")
        .unwrap();
}

#[tokio::test]
async fn md5_signed_session_over_loopback() {
    let port = free_port();
    let (local, a, b) = pair(port, Some("s3cret"), Some("s3cret"));
    let mut sa = start(local, vec![a], BTreeMap::new());
    let mut sb = start(
        LocalConfig::default(),
        vec![b],
        routes(&["203.0.113.10/32"]),
    );
    sa.until("A established over MD5", |s| {
        s.peers[0].state == State::Established && s.peers[0].stats.prefixes_received == 1
    })
    .await;
    sb.until("B established over MD5", |s| {
        s.peers[0].state == State::Established
    })
    .await;
    sb.shutdown.send(Some(String::new())).unwrap();
    sa.shutdown.send(Some(String::new())).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), sb.task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), sa.task).await;
}

/// `TcpExtTCPMD5Failure`: segments the kernel dropped for a wrong or missing signature.
fn md5_failures() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if n == "TCPMD5Failure" {
                return v.parse().unwrap_or(0);
            }
        }
    }
    0
}

#[tokio::test]
async fn wrong_md5_key_gives_no_session() {
    let port = free_port();
    let before = md5_failures();
    let (local, a, b) = pair(port, Some("s3cret"), Some("wrong"));
    let sa = start(local, vec![a], BTreeMap::new());
    let mut sb = start(
        LocalConfig::default(),
        vec![b],
        routes(&["203.0.113.10/32"]),
    );
    // Wait for the kernel to drop B's signed SYNs, then check nothing got through.
    let deadline = Instant::now() + Duration::from_secs(10);
    while md5_failures() == before {
        assert!(Instant::now() < deadline, "no MD5 failure counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sa.status.borrow().peers[0].state, State::Active);
    assert_eq!(sb.status.borrow().peers[0].state, State::Connect);
    assert_eq!(sa.status.borrow().peers[0].stats.messages_in, 0);
    sb.shutdown.send(Some(String::new())).unwrap();
    sa.shutdown.send(Some(String::new())).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut sb.task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), sa.task).await;
}

#[test]
fn next_hops_of_a_loopback_connection() {
    let h = local_next_hops(ip("127.0.0.2"), ip("127.0.0.1"));
    assert_eq!(h.v4, Some("127.0.0.2".parse().unwrap()));
    // ::1 is no next hop, and lo has no link-local address.
    assert_eq!((h.v6, h.v6_link_local), (None, None));
    assert!(same_subnet(
        ip("10.0.0.1"),
        ip("10.0.0.200"),
        ip("255.255.255.0")
    ));
    assert!(!same_subnet(
        ip("10.0.0.1"),
        ip("10.0.1.1"),
        ip("255.255.255.0")
    ));
    assert!(same_subnet(
        ip("fd00::1"),
        ip("fd00::2"),
        ip("ffff:ffff:ffff:ffff::")
    ));
    assert!(!same_subnet(ip("fd00::1"), ip("10.0.0.1"), ip("ffff::")));
    assert!(is_link_local(&"fe80::1".parse().unwrap()));
    assert!(!is_link_local(&"fd00::1".parse().unwrap()));
}
