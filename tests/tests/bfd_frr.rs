//! portier's BFD part (a real `portier run`) against Debian's FRR bfdd and BIRD 2, in
//! namespaces made here: sessions up with negotiated 50 ms timers, a silent peer detected in
//! the detection time (both directions), keyed SHA1 authentication with BIRD, and a wrong key
//! refused and counted. Prints how long detection took.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use portier_tests::bird::Bird;
use portier_tests::frr::Frr;
use portier_tests::lab::Daemon;
use portier_tests::pair::Pair;

fn dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("portier-bfd-{name}"))
}

fn portier_config(node: &str, peer: &str, extra: &str) -> String {
    format!(
        "[node]\nname = \"{node}\"\n\n[bfd]\nmin_tx_ms = 50\nmin_rx_ms = 50\nmultiplier = 3\n\
         \n  [[bfd.peer]]\n  address = \"{peer}\"\n  interface = \"eth0\"\n{extra}"
    )
}

/// The first BFD session of a running daemon, from its status.
fn session(d: &Daemon, ns: &str) -> Result<serde_json::Value> {
    let status: serde_json::Value = serde_json::from_str(&d.cli(ns, &["status", "--json"])?)?;
    Ok(status["bfd"]["sessions"][0].clone())
}

fn wait(what: &str, timeout: Duration, f: impl FnMut() -> Result<bool>) -> Result<Duration> {
    portier_tests::wait::until(what, timeout, f)
}

fn frr_peer_status(frr: &Frr, peer: &str) -> Result<Option<serde_json::Value>> {
    let text = frr.vtysh("show bfd peers json")?;
    let peers: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("vtysh said: {text}"))?;
    Ok(peers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["peer"] == peer).cloned()))
}

#[test]
fn frr_bfdd_session_timers_and_loss_both_ways() -> Result<()> {
    let pair = Pair::new("bfr", 78)?;
    let (frr_addr, our_addr) = (pair.addr(1).to_string(), pair.addr(2).to_string());
    let frr_conf = format!(
        "frr defaults traditional\nhostname bfr\n!\nbfd\n peer {our_addr} interface eth0\n  \
         transmit-interval 50\n  receive-interval 50\n  detect-multiplier 3\n  no shutdown\n !\n!\n"
    );
    let mut frr = Frr::start_daemons(&pair.ns("r"), "bfr", &frr_conf, &["zebra", "bfdd"])?;
    let ns = pair.ns("p");
    let d = Daemon::spawn(
        &ns,
        "bfr-p",
        &portier_config("bfr-p", &frr_addr, ""),
        &dir("bfr"),
    )?;

    wait("session up at both ends", Duration::from_secs(10), || {
        let ours = session(&d, &ns)?;
        let theirs = frr_peer_status(&frr, &our_addr)?;
        Ok(ours["session"]["state"] == "up" && theirs.is_some_and(|t| t["status"] == "up"))
    })?;
    // The fast timers, negotiated by the poll sequence after coming up.
    wait("50 ms timers", Duration::from_secs(5), || {
        let s = session(&d, &ns)?;
        Ok(s["session"]["tx_interval_ms"] == 50 && s["session"]["detect_time_ms"] == 150)
    })?;
    let theirs = frr_peer_status(&frr, &our_addr)?.context("FRR lists us")?;
    assert_eq!(theirs["remote-transmit-interval"], 50, "{theirs}");
    assert_eq!(theirs["remote-detect-multiplier"], 3, "{theirs}");

    // FRR goes silent: portier declares the session down in its detection time.
    frr.kill("bfdd")?;
    let took = wait("detected down", Duration::from_secs(3), || {
        Ok(session(&d, &ns)?["session"]["state"] == "down")
    })?;
    let s = session(&d, &ns)?;
    assert_eq!(
        s["session"]["diag"], "control_detection_time_expired",
        "{s}"
    );
    println!("portier detected the silent FRR bfdd after {took:?} (detection time 150 ms)");
    drop(frr);

    // The other way: FRR watches portier, which dies.
    let frr = Frr::start_daemons(&pair.ns("r"), "bfr", &frr_conf, &["zebra", "bfdd"])?;
    wait("session up again", Duration::from_secs(10), || {
        Ok(
            frr_peer_status(&frr, &our_addr)?.is_some_and(|t| t["status"] == "up")
                && session(&d, &ns)?["session"]["state"] == "up",
        )
    })?;
    wait("FRR on 50 ms", Duration::from_secs(5), || {
        Ok(frr_peer_status(&frr, &our_addr)?.is_some_and(|t| t["remote-transmit-interval"] == 50))
    })?;
    d.kill()?;
    let took = wait("FRR detected down", Duration::from_secs(3), || {
        Ok(frr_peer_status(&frr, &our_addr)?.is_some_and(|t| t["status"] == "down"))
    })?;
    let theirs = frr_peer_status(&frr, &our_addr)?.context("FRR lists us")?;
    assert_eq!(
        theirs["diagnostic"], "control detection time expired",
        "{theirs}"
    );
    println!("FRR detected the killed portier after {took:?}");
    Ok(())
}

#[test]
fn bird_meticulous_sha1_and_a_wrong_key() -> Result<()> {
    let pair = Pair::new("bbr", 79)?;
    let (bird_addr, our_addr) = (pair.addr(1).to_string(), pair.addr(2).to_string());
    let bird = Bird::start(
        &pair.ns("r"),
        "bbr",
        &format!(
            "router id {bird_addr};\nprotocol device {{ }}\nprotocol bfd {{\n  interface \"eth0\" {{\n    \
             min rx interval 50 ms;\n    min tx interval 50 ms;\n    multiplier 3;\n    \
             authentication meticulous keyed sha1;\n    password \"portier-lab\" {{ id 1; }};\n  }};\n  \
             neighbor {our_addr} dev \"eth0\";\n}}\n"
        ),
    )?;
    let ns = pair.ns("p");
    let auth = "  auth = \"meticulous-sha1\"\n  key_id = 1\n  key = \"portier-lab\"\n";
    let d = Daemon::spawn(
        &ns,
        "bbr-p",
        &portier_config("bbr-p", &bird_addr, auth),
        &dir("bbr"),
    )?;
    wait("authenticated session up", Duration::from_secs(10), || {
        Ok(session(&d, &ns)?["session"]["state"] == "up"
            && bird.show("show bfd sessions")?.contains(" Up "))
    })?;

    // A wrong key: BIRD's packets fail our check, the session goes down and stays down.
    d.reload(&portier_config(
        "bbr-p",
        &bird_addr,
        &auth.replace("portier-lab", "wrong-key"),
    ))?;
    wait("down with the wrong key", Duration::from_secs(5), || {
        Ok(session(&d, &ns)?["session"]["state"] == "down")
    })?;
    wait("auth failures counted", Duration::from_secs(5), || {
        let status: serde_json::Value = serde_json::from_str(&d.cli(&ns, &["status", "--json"])?)?;
        Ok(status["bfd"]["discarded"]["auth_failed"]
            .as_u64()
            .is_some_and(|n| n > 0))
    })?;
    assert!(!bird.show("show bfd sessions")?.contains(" Up "));
    Ok(())
}

/// OSPF neighbours watched by BFD (`bfd = true` on portier, `ip ospf bfd` on FRR), with a
/// dead interval of 40 s (point-to-point: no DR election waiting for it) so that only BFD
/// can act within the waits: when portier dies, FRR
/// drops its VIP route, and when FRR's bfdd goes silent portier brings the neighbour down.
#[test]
fn ospf_neighbours_follow_bfd_both_ways() -> Result<()> {
    let pair = Pair::new("bfo", 80)?;
    let (frr_addr, our_addr) = (pair.addr(1).to_string(), pair.addr(2).to_string());
    let frr_conf = format!(
        "frr defaults traditional\nhostname bfo\n!\nbfd\n profile fast\n  transmit-interval 50\n  \
         receive-interval 50\n  detect-multiplier 3\n !\n!\ninterface eth0\n ip ospf hello-interval 1\n \
         ip ospf dead-interval 40\n ip ospf network point-to-point\n ip ospf bfd\n ip ospf bfd profile fast\n!\nrouter ospf\n \
         ospf router-id {frr_addr}\n network 10.77.80.0/24 area 0\n!\n"
    );
    let mut frr = Frr::start_daemons(&pair.ns("r"), "bfo", &frr_conf, &["zebra", "bfdd", "ospfd"])?;
    let ns = pair.ns("p");
    let config = format!(
        "[node]\nname = \"bfo-p\"\n\n[bfd]\nmin_tx_ms = 50\nmin_rx_ms = 50\n\n[ospf]\n\
         router_id = \"{our_addr}\"\n  [[ospf.interface]]\n  name = \"eth0\"\n  hello_interval = 1\n  \
         dead_interval = 40\n  network = \"point-to-point\"\n  bfd = true\n  [[ospf.announce]]\n  vip = \"203.0.113.80\"\n  \
         policy = \"always\"\n"
    );
    let d = Daemon::spawn(&ns, "bfo-p", &config, &dir("bfo"))?;
    let route = || {
        portier_tests::netns::ip_in(&pair.ns("r"), &["route", "show", "203.0.113.80/32"])
            .unwrap_or_default()
    };
    wait("VIP route at FRR", Duration::from_secs(30), || {
        Ok(route().contains(&our_addr))
    })?;
    wait(
        "BFD up for the OSPF neighbour",
        Duration::from_secs(10),
        || {
            let s = session(&d, &ns)?;
            Ok(s["session"]["state"] == "up"
                && s["clients"] == serde_json::json!(["ospf"])
                && frr_peer_status(&frr, &our_addr)?.is_some_and(|t| t["status"] == "up"))
        },
    )?;
    wait("FRR on 50 ms", Duration::from_secs(5), || {
        Ok(frr_peer_status(&frr, &our_addr)?.is_some_and(|t| t["remote-transmit-interval"] == 50))
    })?;

    // FRR's bfdd goes silent (its ospfd still says hello): portier drops the neighbour now.
    frr.kill("bfdd")?;
    let took = wait(
        "portier dropped the OSPF neighbour",
        Duration::from_secs(3),
        || {
            let status: serde_json::Value =
                serde_json::from_str(&d.cli(&ns, &["status", "--json"])?)?;
            Ok(status["ospf"]["interfaces"][0]["neighbors"]
                .as_array()
                .is_some_and(|n| n.iter().all(|x| x["state"] != "full")))
        },
    )?;
    println!("portier brought the OSPF neighbour down {took:?} after FRR's bfdd went silent");
    assert!(d.log_text().contains("neighbour down by BFD"));
    drop(frr);

    // And FRR: portier dies, the route goes in BFD time, long before the dead interval.
    let frr = Frr::start_daemons(&pair.ns("r"), "bfo", &frr_conf, &["zebra", "bfdd", "ospfd"])?;
    wait("VIP route at FRR again", Duration::from_secs(30), || {
        Ok(route().contains(&our_addr))
    })?;
    wait("BFD up again on 50 ms", Duration::from_secs(10), || {
        Ok(frr_peer_status(&frr, &our_addr)?
            .is_some_and(|t| t["status"] == "up" && t["remote-transmit-interval"] == 50))
    })?;
    d.kill()?;
    let took = wait("route withdrawn at FRR", Duration::from_secs(3), || {
        Ok(!route().contains(&our_addr))
    })?;
    println!(
        "FRR removed the VIP route {took:?} after portier was killed (OSPF dead interval 40 s)"
    );
    Ok(())
}
