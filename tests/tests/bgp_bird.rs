//! The BGP part of a real `portier run` against BIRD 2 (Debian's bird2) in namespaces made
//! here: an eBGP session with TCP MD5 and graceful restart on both ends, the IPv4 and IPv6
//! VIPs in BIRD's table with our AS path and next hops, the IPv4 one withdrawn when a reload
//! stops announcing it, and a clean stop whose Cease and shutdown communication BIRD shows.

use std::time::Duration;

use anyhow::{Context, Result};
use portier_tests::bird::Bird;
use portier_tests::lab::Daemon;
use portier_tests::pair::Pair;

const BIRD_AS: u32 = 64512;
const PORTIER_AS: u32 = 64513;
const VIP4: &str = "203.0.113.34/32";
const VIP6: &str = "2001:db8:f::34/128";

fn wait(what: &str, timeout: Duration, f: impl FnMut() -> Result<bool>) -> Result<Duration> {
    portier_tests::wait::until(what, timeout, f)
}

fn portier_config(pair: &Pair, vips: &[&str]) -> String {
    let mut c = format!(
        "[node]\nname = \"bgi-p\"\n\n[bgp]\nasn = {PORTIER_AS}\nrouter_id = \"10.0.0.11\"\ngraceful_restart = true\n\
         listen = [\"{}:179\"]\n\n  [[bgp.peer]]\n  address = \"{}\"\n  remote_as = {BIRD_AS}\n  \
         password = \"portier-lab\"\n  hold_time = 9\n  communities = [\"{PORTIER_AS}:34\"]\n",
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

#[test]
fn md5_session_ipv4_ipv6_withdraw_and_shutdown_with_bird() -> Result<()> {
    let pair = Pair::new("bgi", 133)?;
    let (bird_addr, our_addr) = (pair.addr(1), pair.addr(2));
    let bird = Bird::start(
        &pair.ns("r"),
        "bgi",
        &format!(
            "router id 10.0.0.1;\nprotocol device {{ }}\nprotocol direct {{ ipv4; ipv6; interface \"eth0\"; }}\n\
             protocol bgp portier {{\n  local {bird_addr} as {BIRD_AS};\n  neighbor {our_addr} as {PORTIER_AS};\n  \
             password \"portier-lab\";\n  hold time 9;\n  connect retry time 1;\n  graceful restart on;\n  \
             ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n"
        ),
    )?;
    let ns = pair.ns("p");
    let d = Daemon::spawn(
        &ns,
        "bgi-p",
        &portier_config(&pair, &["203.0.113.34", "2001:db8:f::34"]),
        &std::env::temp_dir().join("portier-bgp-bird"),
    )?;
    let up = wait("BIRD Established", Duration::from_secs(30), || {
        Ok(bird.show("show protocols portier")?.contains("Established"))
    })
    .with_context(|| format!("{}\n{}", bird.log(), d.log_text()))?;
    println!("BIRD established with portier (MD5) after {up:?}");
    // Graceful restart both ways: BIRD sees ours with the R bit (a fresh process), we note
    // BIRD's (nothing to keep for it: no RIB).
    let proto = bird.show("show protocols all portier")?;
    let theirs = proto
        .split("Neighbor capabilities")
        .nth(1)
        .context("no neighbor capabilities")?;
    assert!(
        theirs.contains("Graceful restart") && theirs.contains("Restart recovery"),
        "{proto}"
    );
    let status: serde_json::Value = serde_json::from_str(&d.cli(&ns, &["status", "--json"])?)?;
    let n = &status["bgp"]["peers"][0]["negotiated"];
    assert_eq!(n["graceful_restart_negotiated"], true, "{n:#}");
    assert_eq!(n["graceful_restart"]["restart_time"], 120, "{n:#}");

    // Both VIPs, with our path, community and next hops.
    wait("both VIPs in BIRD", Duration::from_secs(10), || {
        let routes = bird.show("show route protocol portier")?;
        Ok(routes.contains(VIP4) && routes.contains(VIP6))
    })
    .with_context(|| bird.show("show route all").unwrap_or_default())?;
    let v4 = bird.show(&format!("show route {VIP4} all"))?;
    assert!(v4.contains(&format!("via {our_addr} on eth0")), "{v4}");
    assert!(v4.contains(&format!("BGP.as_path: {PORTIER_AS}")), "{v4}");
    assert!(v4.contains(&format!("({PORTIER_AS},34)")), "{v4}");
    let v6 = bird.show(&format!("show route {VIP6} all"))?;
    assert!(
        v6.contains(&format!("via {} on eth0", pair.addr6(2))),
        "{v6}"
    );
    assert!(v6.contains("BGP.next_hop:"), "{v6}");

    // A reload without the IPv4 VIP: withdrawn, the IPv6 one stays.
    d.reload(&portier_config(&pair, &["2001:db8:f::34"]))?;
    wait("IPv4 VIP withdrawn", Duration::from_secs(10), || {
        Ok(!bird.show("show route protocol portier")?.contains(VIP4))
    })?;
    assert!(bird.show("show route protocol portier")?.contains(VIP6));
    // Still the same session: a route change is not a session change.
    assert!(bird.show("show protocols portier")?.contains("Established"));

    // A clean stop: BIRD shows our Cease with its shutdown communication.
    d.stop()?;
    let text = wait("BIRD to see the Cease", Duration::from_secs(10), || {
        Ok(!bird.show("show protocols portier")?.contains("Established"))
    })
    .and_then(|_| bird.show("show protocols all portier"))?;
    println!("{text}");
    assert!(text.contains("Administrative shutdown"), "{text}");
    assert!(text.contains("portier stopping"), "{text}");
    assert!(!bird.show("show route protocol portier")?.contains(VIP6));
    Ok(())
}
