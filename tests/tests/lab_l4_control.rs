//! The L4 control plane under continuous client traffic: health checks, drain, reloads that
//! touch other services. One lab (prefix `pc`) for the file, torn down also on panic.

use anyhow::{Context, Result};
use portier_tests::client::{self, Sample, Traffic};
use portier_tests::lab::{self, Lab};
use portier_tests::netns;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const PREFIX: &str = "pc";

fn vip() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 10], 80))
}

fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples.iter().filter(|s| s.result.is_err()).collect()
}

fn served_by(samples: &[Sample], host: &str) -> usize {
    samples
        .iter()
        .filter(|s| s.result.as_deref() == Ok(host))
        .count()
}

/// Waits until `f` holds, polling; the condition is an event we cannot subscribe to.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    portier_tests::wait::until(what, timeout, || Ok(f())).map(|_| ())
}

fn fixed_port_hosts(l: &Lab) -> Result<BTreeMap<u16, String>> {
    netns::in_netns(&l.ns("client"), || -> Result<BTreeMap<u16, String>> {
        (42000..42030u16)
            .map(|p| {
                let from = SocketAddr::from(([198, 51, 100, 10], p));
                Ok((p, client::get(vip(), Some(from), "/")?.served_by))
            })
            .collect()
    })?
}

#[test]
fn l4_control_plane_under_traffic() -> Result<()> {
    let l = Lab::up(PREFIX)?;
    // L4 alone: a restart of a node that also speaks OSPF resets its adjacency (no OSPF
    // graceful restart yet), which is not what this test is about.
    let config = l.lb_config_l4_only("lb1")?;
    let lb = l.start_portier("lb1", &config)?;
    l.route_vip_statically("10.0.0.11")?;
    let lb_ns = l.ns("lb1");

    // --- A host's app stops: it leaves within fall x interval, returns after rise x interval.
    let traffic = Traffic::start(&l.ns("client"), vip(), Duration::from_secs(120))?;
    wait_until("traffic", Duration::from_secs(10), || {
        traffic.samples().len() > 50
    })?;
    let stopped_at = Instant::now();
    l.stop_app("host2")?;
    // The IPv4 service's backend (the IPv6 twin's goes down too, in its own time).
    lb.wait_for("service=web backend=10.0.0.22", 1, Duration::from_secs(10))?;
    let detected = stopped_at.elapsed();
    println!("dead backend out of the table after {detected:?} (fall 2 x interval 500 ms)");
    // fall 2 x interval 500 ms (+ a probe timeout and scheduling).
    assert!(detected < Duration::from_secs(3), "down after {detected:?}");
    let detected_at = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let mark = traffic.samples().len();
    wait_until(
        "traffic after the host left",
        Duration::from_secs(10),
        || traffic.samples().len() > mark + 100,
    )?;
    let after: Vec<Sample> = traffic
        .samples()
        .into_iter()
        .filter(|s| s.started > detected_at)
        .collect();
    assert!(
        failures(&after).is_empty(),
        "failures after host2 left the table: {:?}",
        failures(&after).iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(served_by(&after, "host2"), 0);
    l.start_app("host2")?;
    lb.wait_for("service=web backend=10.0.0.22", 2, Duration::from_secs(10))?;
    let mark = traffic.samples().len();
    wait_until("host2 serving again", Duration::from_secs(10), || {
        served_by(&traffic.samples()[mark..], "host2") > 5
    })?;
    let samples = traffic.stop();
    let failed = failures(&samples);
    // By when a request began, as for `after`: one sent to host2 just before the table
    // changed is refused there, and the client may note that a moment after detected_at.
    assert!(
        failed.iter().all(|s| s.started < detected_at),
        "a request begun after the host left failed: {failed:?}"
    );

    // --- Drain host1: zero failed requests; its established connection finishes normally.
    let mut long_lived: Vec<(TcpStream, String)> =
        netns::in_netns(&l.ns("client"), || -> Result<Vec<(TcpStream, String)>> {
            let mut v = Vec::new();
            for _ in 0..30 {
                let mut s = client::connect(vip(), None, Duration::from_secs(3))?;
                let host = client::get_on(&mut s, lab::TODO_HOST, "/")?.served_by;
                v.push((s, host));
            }
            Ok(v)
        })??;
    assert!(long_lived.iter().any(|(_, h)| h == "host1"));
    let traffic = Traffic::start(&l.ns("client"), vip(), Duration::from_secs(60))?;
    wait_until("traffic", Duration::from_secs(10), || {
        traffic.samples().len() > 50
    })?;
    lb.cli(
        &lb_ns,
        &["drain", "--service", "web", "--backend", "10.0.0.21"],
    )?;
    let drained_at = Instant::now();
    let mark = traffic.samples().len();
    wait_until("traffic after drain", Duration::from_secs(10), || {
        traffic.samples().len() > mark + 100
    })?;
    for (s, host) in &mut long_lived {
        let again =
            client::get_on(s, lab::TODO_HOST, "/").context("established connection broke")?;
        assert_eq!(&again.served_by, host);
    }
    let samples = traffic.stop();
    assert!(failures(&samples).is_empty(), "{:?}", failures(&samples));
    let after: Vec<_> = samples
        .iter()
        // New flows: requests whose connection began after the drain.
        .filter(|s| s.started > drained_at)
        .cloned()
        .collect();
    assert_eq!(served_by(&after, "host1"), 0, "drained host got new flows");
    let status = lb.cli(&lb_ns, &["status", "--json"])?;
    let v: serde_json::Value = serde_json::from_str(&status)?;
    let states: Vec<String> = v["l4"]["services"][0]["backends"]
        .as_array()
        .context("status has backends")?
        .iter()
        .map(|b| format!("{}={}", b["address"], b["state"]))
        .collect();
    assert!(
        states.contains(&"\"10.0.0.21\"=\"drained\"".to_string()),
        "{states:?}"
    );
    lb.cli(
        &lb_ns,
        &["undrain", "--service", "web", "--backend", "10.0.0.21"],
    )?;
    drop(long_lived);

    // --- 100 reloads that change an unrelated service: no failure, no flow moves.
    let before = fixed_port_hosts(&l)?;
    let keepalive: Vec<(TcpStream, String)> =
        netns::in_netns(&l.ns("client"), || -> Result<Vec<(TcpStream, String)>> {
            (0..20)
                .map(|_| {
                    let mut s = client::connect(vip(), None, Duration::from_secs(3))?;
                    let host = client::get_on(&mut s, lab::TODO_HOST, "/")?.served_by;
                    Ok((s, host))
                })
                .collect()
        })??;
    let traffic = Traffic::start(&l.ns("client"), vip(), Duration::from_secs(120))?;
    for i in 0..100 {
        // An extra service comes and goes, with a weight that changes each time.
        let next = if i % 2 == 0 {
            format!(
                "{config}\n[[service]]\nname = \"extra\"\nvip = \"203.0.113.10\"\nport = 8080\nprotocol = \"tcp\"\n  [[service.backend]]\n  address = \"10.0.0.21\"\n  weight = {}\n  [[service.backend]]\n  address = \"10.0.0.22\"\n",
                i + 1
            )
        } else {
            config.clone()
        };
        std::fs::write(&lb.config, &next)?;
        lb.cli(&lb_ns, &["reload"])
            .with_context(|| format!("reload {i}"))?;
    }
    let samples = traffic.stop();
    assert!(samples.len() > 100);
    assert!(failures(&samples).is_empty(), "{:?}", failures(&samples));
    let status: serde_json::Value = serde_json::from_str(&lb.cli(&lb_ns, &["status", "--json"])?)?;
    assert_eq!(
        status["l4"]["services"][0]["backends"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "web must keep its three backends through the reloads"
    );
    let mut keepalive = keepalive;
    for (s, host) in &mut keepalive {
        assert_eq!(&client::get_on(s, lab::TODO_HOST, "/")?.served_by, host);
    }
    assert_eq!(fixed_port_hosts(&l)?, before, "flows moved");

    // --- kill -9 and start again: the kernel keeps forwarding, the new process adopts it.
    std::fs::write(&lb.config, &config)?;
    let traffic = Traffic::start(&l.ns("client"), vip(), Duration::from_secs(120))?;
    wait_until("traffic", Duration::from_secs(10), || {
        traffic.samples().len() > 50
    })?;
    lb.signal(nix::sys::signal::Signal::SIGKILL)?;
    let mark = traffic.samples().len();
    wait_until(
        "traffic while no daemon runs",
        Duration::from_secs(10),
        || traffic.samples().len() > mark + 100,
    )?;
    drop(lb);
    let lb = l.start_portier("lb1", &config)?;
    lb.wait_for("adopted the running dataplane", 1, Duration::from_secs(5))?;
    let mark = traffic.samples().len();
    wait_until("traffic after the restart", Duration::from_secs(10), || {
        traffic.samples().len() > mark + 100
    })?;
    let samples = traffic.stop();
    assert!(failures(&samples).is_empty(), "{:?}", failures(&samples));
    for (s, host) in &mut keepalive {
        assert_eq!(&client::get_on(s, lab::TODO_HOST, "/")?.served_by, host);
    }
    assert_eq!(
        fixed_port_hosts(&l)?,
        before,
        "flows moved across the restart"
    );

    lb.stop()?;
    Ok(())
}
