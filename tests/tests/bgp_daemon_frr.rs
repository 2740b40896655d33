//! The BGP part of a real `portier run` against Debian's FRR (bgpd, bfdd) in namespaces made
//! here: BFD per peer (`bfd = true`) bringing the session down when the link silently drops
//! everything, in BFD time rather than hold time; and graceful restart (RFC 4724, RFC 8538)
//! keeping the VIP route in FRR's kernel table across a `kill -9` and restart of portier
//! (End-of-RIB held until the restarted policy announces the VIP again), the stale route
//! replaced after our End-of-RIB and a VIP no longer announced purged, then a clean stop
//! sent as Hard Reset. Prints how long detection took.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use portier_tests::frr::Frr;
use portier_tests::lab::Daemon;
use portier_tests::netns::{exec_in, ip_in};
use portier_tests::pair::Pair;
use serde_json::Value;

const FRR_AS: u32 = 64512;
const PORTIER_AS: u32 = 64513;

fn dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("portier-bgpd-{name}"))
}

fn wait(what: &str, timeout: Duration, f: impl FnMut() -> Result<bool>) -> Result<Duration> {
    portier_tests::wait::until(what, timeout, f)
}

fn json(frr: &Frr, command: &str) -> Value {
    let text = frr.vtysh(command).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// FRR's view of portier (`show bgp neighbor ADDR json`).
fn neighbor(frr: &Frr, addr: &str) -> Value {
    json(frr, &format!("show bgp neighbor {addr} json"))[addr].clone()
}

/// FRR's first path to `prefix`, if any.
fn frr_path(frr: &Frr, prefix: &str) -> Option<Value> {
    let v = json(frr, &format!("show bgp ipv4 unicast {prefix} json"));
    v["paths"].as_array().and_then(|p| p.first().cloned())
}

fn kernel_route(pair: &Pair, prefix: &str) -> String {
    ip_in(&pair.ns("r"), &["-4", "route", "show", prefix]).unwrap_or_default()
}

/// portier's first BGP peer, from its status.
fn our_peer(d: &Daemon, pair: &Pair) -> Result<Value> {
    let status: Value = serde_json::from_str(&d.cli(&pair.ns("p"), &["status", "--json"])?)?;
    Ok(status["bgp"]["peers"][0].clone())
}

/// `[bgp]` towards FRR at .1 with the VIPs announced `always`, plus `extra` keys in the
/// section and `peer_extra` in the peer.
fn portier_config(node: &str, pair: &Pair, extra: &str, peer_extra: &str, vips: &[&str]) -> String {
    let mut c = format!(
        "[node]\nname = \"{node}\"\n\n[bgp]\nasn = {PORTIER_AS}\nrouter_id = \"10.0.0.11\"\n\
         listen = [\"{}:179\"]\n{extra}\n  [[bgp.peer]]\n  address = \"{}\"\n  remote_as = {FRR_AS}\n  \
         families = [\"ipv4\"]\n{peer_extra}",
        pair.addr(2),
        pair.addr(1)
    );
    for v in vips {
        c.push_str(&format!(
            "\n  [[bgp.announce]]\n  vip = \"{v}\"\n  policy = \"always\"\n"
        ));
    }
    c
}

/// The silent cut: FRR's namespace drops every packet in and out, the link stays up.
fn cut(pair: &Pair, on: bool) -> Result<()> {
    let ns = pair.ns("r");
    if on {
        exec_in(&ns, "nft", &["add", "table", "inet", "cut"])?;
        for hook in ["input", "output"] {
            exec_in(
                &ns,
                "nft",
                &[
                    "add",
                    "chain",
                    "inet",
                    "cut",
                    hook,
                    &format!("{{ type filter hook {hook} priority 0; policy drop; }}"),
                ],
            )?;
        }
    } else {
        exec_in(&ns, "nft", &["delete", "table", "inet", "cut"])?;
    }
    Ok(())
}

/// BFD per peer: FRR `neighbor bfd` at 50 ms x3 and portier `bfd = true`, hold time 30 s.
/// When the link silently drops everything, both BFD ends time out within ~150 ms and
/// portier closes the BGP session with Cease / BFD Down, long before its hold timer; when
/// the link is back, BFD and the session come back.
#[test]
fn bfd_brings_the_session_down_before_the_hold_time() -> Result<()> {
    let pair = Pair::new("bgb", 131)?;
    let our_addr = pair.addr(2).to_string();
    let frr_conf = format!(
        "frr defaults traditional\nhostname bgb\n!\nbfd\n profile fast\n  transmit-interval 50\n  \
         receive-interval 50\n  detect-multiplier 3\n !\n!\nrouter bgp {FRR_AS}\n bgp router-id 10.0.0.1\n \
         no bgp ebgp-requires-policy\n neighbor {our_addr} remote-as {PORTIER_AS}\n \
         neighbor {our_addr} timers 10 30\n neighbor {our_addr} timers connect 1\n \
         neighbor {our_addr} bfd profile fast\n!\n"
    );
    let frr = Frr::start_daemons(&pair.ns("r"), "bgb", &frr_conf, &["zebra", "bfdd", "bgpd"])?;
    let config = format!(
        "{}\n[bfd]\nmin_tx_ms = 50\nmin_rx_ms = 50\nmultiplier = 3\n",
        portier_config(
            "bgb-p",
            &pair,
            "",
            "  hold_time = 30\n  bfd = true\n",
            &["203.0.113.31"]
        )
    );
    let d = Daemon::spawn(&pair.ns("p"), "bgb-p", &config, &dir("bgb"))?;
    wait("VIP route at FRR", Duration::from_secs(30), || {
        Ok(kernel_route(&pair, "203.0.113.31/32").contains(&our_addr))
    })
    .with_context(|| d.log_text())?;
    wait("BFD up for the BGP peer", Duration::from_secs(10), || {
        let p = our_peer(&d, &pair)?;
        Ok(p["bfd"]["up"] == true
            && p["interface"] == "eth0"
            && p["state"] == "Established"
            && neighbor(&frr, &our_addr)["peerBfdInfo"]["status"] == "Up")
    })
    .with_context(|| format!("{}\n{}", d.log_text(), frr.log("bgpd")))?;
    let status: Value = serde_json::from_str(&d.cli(&pair.ns("p"), &["status", "--json"])?)?;
    assert_eq!(
        status["bfd"]["sessions"][0]["clients"],
        serde_json::json!(["bgp"]),
        "{status:#}"
    );
    let table = d.cli(&pair.ns("p"), &["status"])?;
    assert!(table.contains("up (0 down)"), "{table}");

    cut(&pair, true)?;
    let took = wait(
        "portier's session down by BFD",
        Duration::from_secs(5),
        || Ok(our_peer(&d, &pair)?["state"] != "Established"),
    )?;
    let p = our_peer(&d, &pair)?;
    assert_eq!(p["stats"]["bfd_down"], 1, "{p:#}");
    assert_eq!(p["bfd"]["up"], false, "{p:#}");
    assert!(
        p["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("BFD session down")),
        "{p:#}"
    );
    println!(
        "portier closed the BGP session {took:?} after the link went silent (hold time 30 s, BFD 50 ms x3)"
    );

    // The link back: BFD first, then the session, and the route again.
    cut(&pair, false)?;
    wait("session and BFD back", Duration::from_secs(30), || {
        let p = our_peer(&d, &pair)?;
        Ok(p["state"] == "Established" && p["bfd"]["up"] == true)
    })
    .with_context(|| d.log_text())?;
    wait("VIP route at FRR again", Duration::from_secs(10), || {
        Ok(kernel_route(&pair, "203.0.113.31/32").contains(&our_addr))
    })?;

    // FRR takes BFD down on purpose (AdminDown): not a path failure, the session stays
    // (RFC 5882 §3.2).
    frr.vtysh_lines(&["configure terminal", "bfd", "profile fast", "shutdown"])?;
    wait("BFD AdminDown seen", Duration::from_secs(5), || {
        Ok(our_peer(&d, &pair)?["bfd"]["up"] == false)
    })?;
    let p = our_peer(&d, &pair)?;
    assert_eq!(p["state"], "Established", "{p:#}");
    assert_eq!(p["stats"]["bfd_down"], 1, "{p:#}");
    frr.vtysh_lines(&["configure terminal", "bfd", "profile fast", "no shutdown"])?;
    wait("BFD up again", Duration::from_secs(10), || {
        Ok(our_peer(&d, &pair)?["bfd"]["up"] == true)
    })?;

    // A clean stop sets our BFD AdminDown too, but after the BGP part's Cease: FRR (which
    // drops sessions on a peer's AdminDown) gets our Cease, not a BFD failure.
    // (FRR may still file the session's end under "BFD down received" when the AdminDown
    // comes right after: its count of received NOTIFICATIONs is what says ours arrived.)
    wait("FRR Established", Duration::from_secs(10), || {
        Ok(neighbor(&frr, &our_addr)["bgpState"] == "Established")
    })?;
    let notifications = || {
        neighbor(&frr, &our_addr)["messageStats"]["notificationsRecv"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = notifications();
    d.stop()?;
    wait("FRR to receive our Cease", Duration::from_secs(5), || {
        Ok(notifications() > before)
    })?;
    Ok(())
}

/// Polls FRR's kernel table for `prefix` on its own thread until stopped: how many polls
/// there were and how many found no route.
struct RouteWatch {
    stop: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
    missing: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RouteWatch {
    fn start(ns: String, prefix: &'static str, via: String) -> RouteWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicU64::new(0));
        let missing = Arc::new(AtomicU64::new(0));
        let (s, p, m) = (stop.clone(), polls.clone(), missing.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let r = ip_in(&ns, &["-4", "route", "show", prefix]).unwrap_or_default();
                p.fetch_add(1, Ordering::Relaxed);
                if !r.contains(&via) {
                    m.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        RouteWatch {
            stop,
            polls,
            missing,
            thread: Some(thread),
        }
    }

    /// (polls, polls without the route)
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.polls.load(Ordering::Relaxed),
            self.missing.load(Ordering::Relaxed),
        )
    }
}

impl Drop for RouteWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Graceful restart: FRR (`bgp graceful-restart`) keeps portier's VIP route while portier is
/// killed (-9) and started again: the route never leaves FRR's kernel table (polled all
/// along), it is stale in between, fresh after our End-of-RIB, and a VIP the restarted
/// portier no longer announces is purged then. A clean stop afterwards is a Hard Reset
/// (N bit negotiated): FRR drops the route at once.
#[test]
fn graceful_restart_keeps_the_route_across_kill_and_restart() -> Result<()> {
    let pair = Pair::new("bgg", 132)?;
    let our_addr = pair.addr(2).to_string();
    let frr_conf = format!(
        "frr defaults traditional\nhostname bgg\n!\nrouter bgp {FRR_AS}\n bgp router-id 10.0.0.1\n \
         bgp graceful-restart\n no bgp ebgp-requires-policy\n neighbor {our_addr} remote-as {PORTIER_AS}\n \
         neighbor {our_addr} timers 3 9\n neighbor {our_addr} timers connect 1\n!\n"
    );
    let frr = Frr::start_daemons(&pair.ns("r"), "bgg", &frr_conf, &["zebra", "bgpd"])?;
    let gr = "graceful_restart = true\nrestart_time = 60\n";
    let both = portier_config(
        "bgg-p",
        &pair,
        gr,
        "  hold_time = 9\n",
        &["203.0.113.32", "203.0.113.33"],
    );
    let d = Daemon::spawn(&pair.ns("p"), "bgg-p", &both, &dir("bgg"))?;
    wait("both VIPs at FRR", Duration::from_secs(30), || {
        Ok(kernel_route(&pair, "203.0.113.32/32").contains(&our_addr)
            && kernel_route(&pair, "203.0.113.33/32").contains(&our_addr))
    })
    .with_context(|| format!("{}\n{}", d.log_text(), frr.log("bgpd")))?;
    let p = our_peer(&d, &pair)?;
    assert_eq!(
        p["negotiated"]["graceful_restart_negotiated"], true,
        "{p:#}"
    );
    assert_eq!(p["negotiated"]["graceful_notification"], true, "{p:#}");
    assert_eq!(p["graceful_restart"], 60, "{p:#}");
    let n = neighbor(&frr, &our_addr);
    println!(
        "FRR's view of our GR: {}",
        serde_json::to_string(&n["gracefulRestartInfo"]).unwrap_or_default()
    );
    assert_eq!(n["gracefulRestartInfo"]["remoteGrMode"], "Restart", "{n:#}");
    assert_eq!(
        n["gracefulRestartInfo"]["timers"]["receivedRestartTimer"], 60,
        "{n:#}"
    );

    let watch = RouteWatch::start(pair.ns("r"), "203.0.113.32/32", our_addr.clone());
    d.kill()?;
    let killed = Instant::now();
    wait(
        "FRR to mark our route stale",
        Duration::from_secs(10),
        || Ok(frr_path(&frr, "203.0.113.32/32").is_some_and(|p| p["stale"] == true)),
    )
    .with_context(|| frr.log("bgpd"))?;
    // Started again without the second VIP, and the first one held down for 3 s (as a
    // health check or VRRP would take a while to say yes again): our End-of-RIB waits for
    // it, so FRR keeps the stale route meanwhile instead of purging it.
    let one = portier_config("bgg-p", &pair, gr, "  hold_time = 9\n", &["203.0.113.32"]).replace(
        "policy = \"always\"\n",
        "policy = \"always\"\n  hold_down_ms = 3000\n",
    );
    let d = Daemon::spawn(&pair.ns("p"), "bgg-p", &one, &dir("bgg"))?;
    wait(
        "established with End-of-RIB held",
        Duration::from_secs(3),
        || {
            let p = our_peer(&d, &pair)?;
            Ok(p["state"] == "Established" && p["end_of_rib_held"] == true)
        },
    )
    .with_context(|| d.log_text())?;
    assert!(
        frr_path(&frr, "203.0.113.33/32").is_some_and(|p| p["stale"] == true),
        "the VIP no longer announced stays stale until our End-of-RIB"
    );
    wait(
        "the fresh route, the other purged",
        Duration::from_secs(30),
        || {
            Ok(
                frr_path(&frr, "203.0.113.32/32").is_some_and(|p| p["stale"] != true)
                    && frr_path(&frr, "203.0.113.33/32").is_none()
                    && kernel_route(&pair, "203.0.113.33/32").is_empty(),
            )
        },
    )
    .with_context(|| format!("{}\n{}", d.log_text(), frr.log("bgpd")))?;
    let fresh = killed.elapsed();
    let (polls, missing) = watch.finish();
    println!(
        "route kept across kill -9 and restart: {polls} polls of FRR's kernel table, {missing} without it; fresh again {fresh:?} after the kill"
    );
    assert!(polls > 10, "{polls} polls");
    assert_eq!(missing, 0, "the route left FRR's kernel table");
    assert!(kernel_route(&pair, "203.0.113.32/32").contains(&our_addr));

    // A clean stop: Hard Reset, the route goes at once (no stale phase).
    d.stop()?;
    wait("FRR to drop the route", Duration::from_secs(5), || {
        Ok(frr_path(&frr, "203.0.113.32/32").is_none()
            && kernel_route(&pair, "203.0.113.32/32").is_empty())
    })?;
    let n = neighbor(&frr, &our_addr);
    // FRR unwraps the Hard Reset and shows what it carries.
    assert_eq!(n["lastNotificationHardReset"], true, "{n:#}");
    assert_eq!(
        n["lastNotificationReason"], "Cease/Administrative Shutdown",
        "{n:#}"
    );
    assert_eq!(n["lastShutdownDescription"], "portier stopping", "{n:#}");
    Ok(())
}
