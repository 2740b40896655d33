//! portier's BGP speaker against Debian's FRR bgpd (AS 64512, router id 10.0.0.1), portier
//! being AS 64513 (eBGP), in two namespaces joined by a veth: sessions without and with TCP
//! MD5 (either side listening; a wrong password gives no session), the VIP
//! 203.0.113.10/32 and 2001:db8:f::10/128 learnt by FRR and in its kernel table with the
//! communities, large communities, prepends and MED we set, a route refresh asked by FRR
//! answered, withdrawal when the set shrinks, and a clean stop whose shutdown communication
//! FRR shows. Prints the time to establish and to install (the raw numbers for a benchmark).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use portier::bgp::{
    Community, LocalConfig, PeerConfig, PeerStatus, Prefix, RouteAttrs, Routes, Speaker,
    SpeakerStatus, State,
};
use portier_tests::frr::Frr;
use portier_tests::netns::{self, exec_in, ip_in};
use portier_tests::pair::Pair;
use serde_json::Value;
use tokio::sync::watch;

const VIP4: &str = "203.0.113.10/32";
const VIP6: &str = "2001:db8:f::10/128";
const FRR_AS: u32 = 64512;
const PORTIER_AS: u32 = 64513;

/// Addresses of the pair's ends (`r`: FRR, .1 / ::1; `p`: portier, .2 / ::2).
fn v4(pair: &Pair, host: u8) -> IpAddr {
    IpAddr::V4(pair.addr(host))
}

fn v6(pair: &Pair, host: u8) -> IpAddr {
    IpAddr::V6(pair.addr6(host))
}

/// The route to `prefix` in FRR's kernel table, if any.
fn kernel_route(pair: &Pair, prefix: &str) -> String {
    let family = if prefix.contains(':') { "-6" } else { "-4" };
    ip_in(&pair.ns("r"), &[family, "route", "show", prefix]).unwrap_or_default()
}

/// `TcpExtTCPMD5Failure` in a namespace: segments dropped for a bad signature.
fn md5_failures(pair: &Pair, role: &str) -> u64 {
    let text = exec_in(&pair.ns(role), "cat", &["/proc/net/netstat"]).unwrap_or_default();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if names.starts_with("TcpExt:") {
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                if n == "TCPMD5Failure" {
                    return v.parse().unwrap_or(0);
                }
            }
        }
    }
    0
}

/// FRR's side: neighbour portier, IPv6 unicast activated, short timers.
fn frr_config(pair: &Pair, password: Option<&str>, passive: bool) -> String {
    let peer = v4(pair, 2);
    let mut c = format!(
        "frr defaults traditional\nhostname {}\n!\nrouter bgp {FRR_AS}\n bgp router-id 10.0.0.1\n \
         no bgp ebgp-requires-policy\n neighbor {peer} remote-as {PORTIER_AS}\n \
         neighbor {peer} timers 3 9\n neighbor {peer} timers connect 1\n",
        pair.ns("r")
    );
    if let Some(p) = password {
        c.push_str(&format!(" neighbor {peer} password {p}\n"));
    }
    if passive {
        c.push_str(&format!(" neighbor {peer} passive\n"));
    }
    c.push_str(&format!(
        " address-family ipv6 unicast\n  neighbor {peer} activate\n exit-address-family\n!\n"
    ));
    c
}

fn start_frr(pair: &Pair, password: Option<&str>, passive: bool) -> Result<Frr> {
    let ns = pair.ns("r");
    Frr::start_daemons(
        &ns,
        &ns,
        &frr_config(pair, password, passive),
        &["zebra", "bgpd"],
    )
}

fn json(frr: &Frr, command: &str) -> Value {
    let text = frr.vtysh(command).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// FRR's view of portier: `show bgp neighbor ADDR json`.
fn neighbor(frr: &Frr, pair: &Pair) -> Value {
    let addr = v4(pair, 2).to_string();
    json(frr, &format!("show bgp neighbor {addr} json"))[&addr].clone()
}

fn frr_established(frr: &Frr, pair: &Pair) -> bool {
    neighbor(frr, pair)["bgpState"] == "Established"
}

/// FRR's best path to `prefix`, if it has one.
fn frr_path(frr: &Frr, prefix: &str) -> Option<Value> {
    let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
    let v = json(frr, &format!("show bgp {family} unicast {prefix} json"));
    v["paths"].as_array().and_then(|p| p.first().cloned())
}

/// The VIPs, the IPv4 one with a community and a large community of its own.
fn vips() -> Routes {
    let mut r = Routes::new();
    r.insert(
        VIP4.parse::<Prefix>().unwrap(),
        RouteAttrs {
            communities: vec![Community::new(PORTIER_AS as u16, 100)],
            large_communities: vec!["64513:1:2".parse().unwrap()],
            ..RouteAttrs::default()
        },
    );
    r.insert(VIP6.parse::<Prefix>().unwrap(), RouteAttrs::default());
    r
}

fn peer_config(pair: &Pair, password: Option<&str>, passive: bool) -> PeerConfig {
    let mut p = PeerConfig::new(
        v4(pair, 1),
        FRR_AS,
        PORTIER_AS,
        "10.0.0.11".parse().unwrap(),
    );
    p.hold_time = 9;
    p.connect_retry = Duration::from_secs(1);
    p.passive = passive;
    p.md5_password = password.map(str::to_owned);
    // Every route to FRR: MED 50, two more 64513 in the path, no-export.
    p.export = RouteAttrs {
        med: Some(50),
        communities: vec![Community::NO_EXPORT],
        large_communities: Vec::new(),
        as_path_prepend: 2,
    };
    p
}

/// The speaker on its own thread inside the portier namespace.
struct Running {
    announce: watch::Sender<Routes>,
    shutdown: watch::Sender<Option<String>>,
    status: watch::Receiver<SpeakerStatus>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(pair: &Pair, peer: PeerConfig, routes: Routes) -> Result<Running> {
        let local = LocalConfig {
            listen: vec![SocketAddr::new(v4(pair, 2), 179)],
        };
        let (announce, announce_rx) = watch::channel(routes);
        let (shutdown, shutdown_rx) = watch::channel(None);
        let (status_tx, status) = watch::channel(SpeakerStatus::default());
        let file = std::fs::File::open(format!("/run/netns/{}", pair.ns("p")))?;
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            if nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                return;
            }
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(Speaker::new(local, vec![peer]).run(announce_rx, shutdown_rx, status_tx));
        });
        Ok(Running {
            announce,
            shutdown,
            status,
            thread: Some(thread),
        })
    }

    fn peer(&self) -> Option<PeerStatus> {
        self.status.borrow().peers.first().cloned()
    }

    fn state(&self) -> Option<State> {
        self.peer().map(|p| p.state)
    }

    /// Stops with `message` and waits for the speaker to return.
    fn stop(&mut self, message: &str) {
        let _ = self.shutdown.send(Some(message.to_owned()));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop("");
    }
}

/// With `PORTIER_BGP_CAPTURE=DIR`, tcpdump records the BGP session in FRR's namespace to
/// `DIR/NAME.pcap` (how the codec's FRR test vectors were taken). Stops when dropped.
struct Capture(Option<std::process::Child>);

impl Capture {
    fn start(pair: &Pair, name: &str) -> Result<Capture> {
        let Ok(dir) = std::env::var("PORTIER_BGP_CAPTURE") else {
            return Ok(Capture(None));
        };
        let pcap = format!("{dir}/{name}.pcap");
        let log = std::path::PathBuf::from(format!("{dir}/{name}.tcpdump.log"));
        let _ = std::fs::remove_file(&log);
        let child = netns::spawn_in(
            &pair.ns("r"),
            std::path::Path::new("tcpdump"),
            &[
                "-i",
                "eth0",
                "--immediate-mode",
                "-U",
                "-w",
                &pcap,
                "tcp",
                "port",
                "179",
            ],
            &log,
        )?;
        let capture = Capture(Some(child));
        wait("tcpdump to listen", Duration::from_secs(5), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on"))
        })?;
        Ok(capture)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            // SIGTERM through nsenter reaches tcpdump, which then closes its file.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<Duration> {
    portier_tests::wait::until(what, timeout, || Ok(cond()))
}

/// Waits for both sides to be established; returns how long it took.
fn establish(frr: &Frr, pair: &Pair, speaker: &Running) -> Result<Duration> {
    let took = wait("FRR to be Established", Duration::from_secs(30), || {
        frr_established(frr, pair)
    })
    .with_context(|| format!("{:#?}\n{}", speaker.peer(), frr.log("bgpd")))?;
    wait("portier to be Established", Duration::from_secs(5), || {
        speaker.state() == Some(State::Established)
    })
    .with_context(|| format!("{:#?}", speaker.peer()))?;
    Ok(took)
}

#[test]
fn session_routes_refresh_withdrawal_and_shutdown_with_frr() -> Result<()> {
    let pair = Pair::new("bgf", 1)?;
    let capture = Capture::start(&pair, "frr-portier")?;
    let frr = start_frr(&pair, None, false)?;
    let mut speaker = Running::start(&pair, peer_config(&pair, None, false), vips())?;
    let up = establish(&frr, &pair, &speaker)?;

    // The IPv4 VIP with everything we set on it.
    let installed = wait("FRR to learn the IPv4 VIP", Duration::from_secs(10), || {
        kernel_route(&pair, VIP4).contains("proto bgp")
    })
    .with_context(|| format!("{:#?}", speaker.peer()))?;
    let route = kernel_route(&pair, VIP4);
    assert!(route.contains(&format!("via {}", v4(&pair, 2))), "{route}");
    let path = frr_path(&frr, VIP4).context("no BGP path to the IPv4 VIP")?;
    assert_eq!(path["aspath"]["string"], "64513 64513 64513", "{path:#}");
    assert_eq!(path["metric"], 50, "{path:#}");
    assert_eq!(
        path["community"]["string"], "64513:100 no-export",
        "{path:#}"
    );
    assert_eq!(path["largeCommunity"]["string"], "64513:1:2", "{path:#}");
    assert_eq!(path["origin"], "IGP", "{path:#}");
    assert_eq!(
        path["nexthops"][0]["ip"],
        v4(&pair, 2).to_string(),
        "{path:#}"
    );

    // The IPv6 VIP, by MP_REACH_NLRI with our global and link-local next hops.
    wait("FRR to learn the IPv6 VIP", Duration::from_secs(10), || {
        kernel_route(&pair, VIP6).contains("proto bgp")
    })?;
    let path6 = frr_path(&frr, VIP6).context("no BGP path to the IPv6 VIP")?;
    assert_eq!(path6["aspath"]["string"], "64513 64513 64513", "{path6:#}");
    assert_eq!(
        path6["nexthops"][0]["ip"],
        v6(&pair, 2).to_string(),
        "{path6:#}"
    );
    // The link-local next hop too, once the kernel lists that address (it may still be
    // in duplicate address detection when the session comes up).
    wait(
        "the link-local IPv6 next hop",
        Duration::from_secs(10),
        || {
            frr_path(&frr, VIP6).is_some_and(|p| p["nexthops"][1]["scope"] == "link-local")
                && kernel_route(&pair, VIP6).contains("via fe80::")
        },
    )
    .with_context(|| format!("{:#?} {:#?}", frr_path(&frr, VIP6), speaker.peer()))?;
    let n = neighbor(&frr, &pair);
    assert_eq!(n["remoteAs"], PORTIER_AS);
    assert_eq!(n["remoteRouterId"], "10.0.0.11");
    println!(
        "bgp-bench frr: established {up:?}, IPv4 VIP in FRR's kernel table {:?} later",
        installed
    );

    // FRR asks for our routes again (inbound soft reset sends ROUTE-REFRESH): we resend.
    let sent_before = speaker.peer().map_or(0, |p| p.stats.prefixes_announced);
    frr.vtysh(&format!("clear bgp ipv4 unicast {} soft in", v4(&pair, 2)))?;
    wait(
        "portier to answer the route refresh",
        Duration::from_secs(10),
        || {
            speaker.peer().is_some_and(|p| {
                p.stats.route_refresh_received >= 1 && p.stats.prefixes_announced > sent_before
            })
        },
    )
    .with_context(|| format!("{:#?}", speaker.peer()))?;
    assert!(kernel_route(&pair, VIP4).contains("proto bgp"));

    // The set shrinks: the IPv4 VIP is withdrawn, the IPv6 one stays.
    let mut only6 = vips();
    only6.remove(&VIP4.parse::<Prefix>().unwrap());
    speaker.announce.send(only6)?;
    let gone = wait("FRR to drop the IPv4 VIP", Duration::from_secs(10), || {
        kernel_route(&pair, VIP4).is_empty() && frr_path(&frr, VIP4).is_none()
    })?;
    assert!(kernel_route(&pair, VIP6).contains("proto bgp"));
    println!("bgp-bench frr: withdrawn {gone:?}");

    // A clean stop: FRR shows our shutdown communication and drops the IPv6 VIP.
    speaker.stop("maintenance: back at 18:00");
    wait("FRR to see the Cease", Duration::from_secs(10), || {
        !frr_established(&frr, &pair)
    })?;
    let n = neighbor(&frr, &pair);
    assert_eq!(
        n["lastShutdownDescription"], "maintenance: back at 18:00",
        "{n:#}"
    );
    assert_eq!(
        n["lastNotificationReason"], "Cease/Administrative Shutdown",
        "{n:#}"
    );
    wait("FRR to drop the IPv6 VIP", Duration::from_secs(10), || {
        kernel_route(&pair, VIP6).is_empty()
    })?;
    drop(capture);
    Ok(())
}

/// MD5 on our listening socket: portier passive, FRR connects.
#[test]
fn md5_session_with_frr_connecting() -> Result<()> {
    let pair = Pair::new("bgm", 2)?;
    let frr = start_frr(&pair, Some("portier-lab"), false)?;
    let speaker = Running::start(&pair, peer_config(&pair, Some("portier-lab"), true), vips())?;
    establish(&frr, &pair, &speaker)?;
    assert_eq!(neighbor(&frr, &pair)["bgpConnection"], "sharedNetwork");
    let p = speaker.peer().context("no status")?;
    assert!(!p.negotiated.context("not negotiated")?.outgoing);
    wait("FRR to learn the IPv4 VIP", Duration::from_secs(10), || {
        kernel_route(&pair, VIP4).contains("proto bgp")
    })?;
    Ok(())
}

/// MD5 on our outgoing socket: FRR passive, portier connects.
#[test]
fn md5_session_with_portier_connecting() -> Result<()> {
    let pair = Pair::new("bgo", 3)?;
    let frr = start_frr(&pair, Some("portier-lab"), true)?;
    let speaker = Running::start(
        &pair,
        peer_config(&pair, Some("portier-lab"), false),
        vips(),
    )?;
    establish(&frr, &pair, &speaker)?;
    let p = speaker.peer().context("no status")?;
    assert!(p.negotiated.context("not negotiated")?.outgoing);
    wait("FRR to learn the IPv6 VIP", Duration::from_secs(10), || {
        kernel_route(&pair, VIP6).contains("proto bgp")
    })?;
    Ok(())
}

/// Different passwords: both sides' kernels drop the other's SYNs, no session at all.
#[test]
fn wrong_md5_password_gives_no_session() -> Result<()> {
    let pair = Pair::new("bgw", 4)?;
    let frr = start_frr(&pair, Some("portier-lab"), false)?;
    let speaker = Running::start(&pair, peer_config(&pair, Some("wrong"), false), vips())?;
    // Wait until each kernel has refused the other side's signed SYNs at least once.
    wait(
        "MD5 failures on both sides",
        Duration::from_secs(20),
        || md5_failures(&pair, "r") > 0 && md5_failures(&pair, "p") > 0,
    )?;
    assert!(!frr_established(&frr, &pair));
    let p = speaker.peer().context("no status")?;
    assert!(matches!(p.state, State::Connect | State::Active), "{p:#?}");
    assert_eq!(p.stats.messages_in, 0, "{p:#?}");
    assert!(frr_path(&frr, VIP4).is_none());
    Ok(())
}
