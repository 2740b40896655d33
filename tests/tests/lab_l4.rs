//! End to end in the lab: the XDP balancer on lb1 spreads the VIP over the hosts by Maglev
//! with direct server return; a reload moves only the removed host's flows.
//!
//! One lab for the whole file (prefix `pe`), torn down by `Lab`'s Drop, also on panic.

use anyhow::{Context, Result};
use portier_tests::client::{self, Reply};
use portier_tests::lab::{self, Lab};
use portier_tests::netns;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

const PREFIX: &str = "pe";

fn vip(port: u16) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 10], port))
}

fn client_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 10], port))
}

/// Bytes the LAN bridge sent out of its port towards `node`. Counted on the bridge side
/// because frames an XDP program handles never show in the node's own rx counters.
fn bridge_tx_to(l: &Lab, node: &str) -> Result<u64> {
    netns::link_counter(&l.ns("lan"), node, "tx_bytes")
}

fn config_without(config: &str, backend: &str) -> String {
    let needle = format!("  [[service.backend]]\n  address = \"{backend}\"\n");
    assert!(config.contains(&needle), "lab config changed shape");
    config.replace(&needle, "")
}

#[test]
fn l4_balancer_end_to_end() -> Result<()> {
    let l = Lab::up(PREFIX)?;
    let config = l.lb_config("lb1")?;
    let lb = l.start_portier("lb1", &config)?;
    // lb1 becomes VRRP master and announces the VIP to the router by OSPF.
    l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;
    let client_ns = l.ns("client");

    // 300 requests, each on its own connection: all succeed, spread over the three hosts.
    let spread = netns::in_netns(&client_ns, || -> Result<BTreeMap<String, usize>> {
        let mut seen = BTreeMap::new();
        for i in 0..300 {
            let r = client::get(vip(80), None, "/").with_context(|| format!("request {i}"))?;
            *seen.entry(r.served_by).or_insert(0) += 1;
        }
        Ok(seen)
    })??;
    assert_eq!(spread.len(), 3, "{spread:?}");
    for (host, n) in &spread {
        let share = *n as f64 / 300.0;
        assert!(
            (0.20..=0.47).contains(&share),
            "{host} served {n} of 300: {spread:?}"
        );
    }

    // The same 5-tuple always reaches the same host (RST close: no TIME_WAIT to wait out).
    netns::in_netns(&client_ns, || -> Result<()> {
        for port in 41000..41020u16 {
            let first = client::get(vip(80), Some(client_addr(port)), "/")?.served_by;
            for _ in 0..3 {
                let again = client::get(vip(80), Some(client_addr(port)), "/")?.served_by;
                assert_eq!(again, first, "source port {port} moved");
            }
        }
        Ok(())
    })??;

    // Direct server return: 2 MB of replies go from the hosts to the router, none via lb1.
    let (lb_before, router_before) = (bridge_tx_to(&l, "lb1")?, bridge_tx_to(&l, "router")?);
    let reply_bytes = netns::in_netns(&client_ns, || -> Result<usize> {
        let mut total = 0;
        for _ in 0..20 {
            total += client::get(vip(80), None, "/?size=100000")?.bytes;
        }
        Ok(total)
    })??;
    let to_lb = (bridge_tx_to(&l, "lb1")? - lb_before) as usize;
    let to_router = (bridge_tx_to(&l, "router")? - router_before) as usize;
    assert!(reply_bytes >= 2_000_000);
    assert!(
        to_router >= reply_bytes,
        "the router got {to_router} bytes from the LAN for {reply_bytes} bytes of replies"
    );
    assert!(
        to_lb < reply_bytes / 20,
        "lb1 was sent {to_lb} bytes while the client got {reply_bytes} bytes of replies"
    );

    // UDP through the wildcard-port service; replies come from the VIP.
    let udp_hosts = netns::in_netns(&client_ns, || -> Result<BTreeMap<String, usize>> {
        let mut seen = BTreeMap::new();
        for i in 0..60 {
            let s = UdpSocket::bind(client_addr(0))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.connect(vip(lab::UDP_PORT))?;
            s.send(format!("ping {i}").as_bytes())?;
            let mut buf = [0u8; 512];
            let n = s.recv(&mut buf).with_context(|| format!("udp {i}"))?;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let host = text
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            assert!(text.ends_with(&format!("ping {i}")), "{text}");
            *seen.entry(host).or_insert(0) += 1;
        }
        Ok(seen)
    })??;
    assert_eq!(udp_hosts.len(), 3, "{udp_hosts:?}");

    // Reload without host3: live connections to host1/host2 keep going to the same host;
    // new connections never reach host3.
    let (conns, first) =
        netns::in_netns(&client_ns, || -> Result<(Vec<TcpStream>, Vec<Reply>)> {
            let mut conns = Vec::new();
            let mut first = Vec::new();
            for _ in 0..60 {
                let mut s = client::connect(vip(80), None, Duration::from_secs(3))?;
                first.push(client::get_on(&mut s, lab::TODO_HOST, "/")?);
                conns.push(s);
            }
            Ok((conns, first))
        })??;
    lb.reload(&config_without(&config, "10.0.0.23"))?;
    let mut kept = 0;
    for (mut s, r) in conns.into_iter().zip(&first) {
        if r.served_by == "host3" {
            continue;
        }
        let again = client::get_on(&mut s, lab::TODO_HOST, "/")
            .with_context(|| format!("connection to {} broke on reload", r.served_by))?;
        assert_eq!(again.served_by, r.served_by);
        kept += 1;
    }
    assert!(kept >= 20, "only {kept} connections on host1/host2");
    let after = netns::in_netns(&client_ns, || -> Result<Vec<String>> {
        (0..100)
            .map(|_| client::get(vip(80), None, "/").map(|r| r.served_by))
            .collect()
    })??;
    assert!(!after.iter().any(|h| h == "host3"), "{after:?}");

    // An invalid config is refused on reload; the running one keeps serving.
    std::fs::File::create(&lb.config)?.write_all(b"[node]\nname = \"pe-lb1\"\nbogus = 1\n")?;
    lb.signal(nix::sys::signal::Signal::SIGHUP)?;
    lb.wait_for("reload refused", 1, Duration::from_secs(10))?;
    netns::in_netns(&client_ns, || -> Result<()> {
        for _ in 0..20 {
            client::get(vip(80), None, "/")?;
        }
        Ok(())
    })??;

    lb.stop()?;
    drop(l);
    assert!(lab::status(PREFIX).is_empty(), "namespaces left behind");
    let pins: Vec<_> = std::fs::read_dir("/sys/fs/bpf/portier")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("pe-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(pins.is_empty(), "pins left behind: {pins:?}");
    Ok(())
}
