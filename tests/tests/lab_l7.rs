//! End to end in the lab: through the VIP (XDP on lb1, then portier L7 on each host),
//! `todo.example` and `shop.example` reach only their own containers, on every host; a
//! stopped container leaves its pool without failing requests beyond the one in flight; a
//! reload adding a host name works under load; a server drained at runtime (admin API, as
//! `portier drain --pool --server`) gets no new request and fails none, and comes back.
//!
//! One lab for the whole file (prefix `pf`), torn down by `Lab`'s Drop, also on panic.

use anyhow::{Context, Result};
use portier_tests::client::{self, Sample, Traffic};
use portier_tests::lab::{self, Lab};
use portier_tests::netns;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PREFIX: &str = "pf";

fn vip() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 10], lab::HTTP_PORT))
}

fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples.iter().filter(|s| s.result.is_err()).collect()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    portier_tests::wait::until(what, timeout, || Ok(f())).map(|_| ())
}

/// Container names answering `n` requests for `host` through the VIP.
fn containers(l: &Lab, host: &str, n: usize) -> Result<BTreeMap<String, usize>> {
    netns::in_netns(&l.ns("client"), || -> Result<BTreeMap<String, usize>> {
        let mut seen = BTreeMap::new();
        for i in 0..n {
            let r = client::get_host(vip(), None, host, "/")
                .with_context(|| format!("{host} request {i}"))?;
            *seen.entry(r.container).or_insert(0) += 1;
        }
        Ok(seen)
    })?
}

#[test]
fn l7_routing_end_to_end() -> Result<()> {
    let l = Lab::up(PREFIX)?;
    let lb = l.start_portier("lb1", &l.lb_config("lb1")?)?;
    l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;

    // --- IPv6 end to end: client -> router -> lb1 (VRRPv3 master of the IPv6 VIP, XDP) ->
    // hosts (DSR, the VIP on lo) -> their todo containers, and UDP to every port.
    let todo6 = l.spread6(lab::TODO_HOST, 30, lab::VIP_ROUTE_TIMEOUT)?;
    let hosts6: std::collections::BTreeSet<&str> =
        todo6.keys().filter_map(|c| c.split('-').next()).collect();
    assert!(
        todo6
            .keys()
            .all(|c| c.ends_with("-todo1") || c.ends_with("-todo2")),
        "todo.example over IPv6 reached {todo6:?}"
    );
    assert!(
        hosts6.len() >= 2,
        "IPv6 flows not spread over hosts: {todo6:?}"
    );
    let udp6 = netns::in_netns(&l.ns("client"), || -> Result<String> {
        let s = std::net::UdpSocket::bind("[::]:0")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(b"who", Lab::vip6(lab::UDP_PORT))?;
        let mut buf = [0u8; 256];
        let (n, _) = s.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })??;
    assert!(udp6.contains("host"), "UDP over IPv6 answered {udp6:?}");

    // --- Each host name reaches only its own containers, on every host.
    let todo = containers(&l, lab::TODO_HOST, 150)?;
    let shop = containers(&l, lab::SHOP_HOST, 90)?;
    for (name, n) in &todo {
        assert!(
            name.ends_with("-todo1") || name.ends_with("-todo2"),
            "todo.example reached {name} ({n}x): {todo:?}"
        );
    }
    for name in shop.keys() {
        assert!(
            name.ends_with("-shop1"),
            "shop.example reached {name}: {shop:?}"
        );
    }
    let hosts = |m: &BTreeMap<String, usize>| {
        m.keys()
            .map(|c| c.split('-').next().unwrap_or_default().to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(hosts(&todo).len(), 3, "{todo:?}");
    assert_eq!(hosts(&shop).len(), 3, "{shop:?}");
    // Both todo containers of some host served.
    assert!(todo.len() >= 5, "{todo:?}");
    // An unknown host name is refused by the host's router, not sent to a container.
    let r = netns::in_netns(&l.ns("client"), || {
        client::get_host(vip(), None, "other.example", "/")
    })?;
    let err = r.expect_err("other.example was served").to_string();
    assert!(err.contains("404"), "{err}");

    // --- Stop a container under traffic: at most the request in flight fails.
    let traffic = Traffic::start(&l.ns("client"), vip(), Duration::from_secs(120))?;
    wait_until("traffic", Duration::from_secs(10), || {
        traffic.samples().len() > 30
    })?;
    l.stop_container("host1", "todo1")?;
    let stopped_at = Instant::now();
    // host1's portier notices (health check: fall 2 x 500 ms).
    let door_log = l.run_dir.join("host1.log");
    wait_until("todo1 marked down", Duration::from_secs(10), || {
        std::fs::read_to_string(&door_log).is_ok_and(|t| t.contains("server down"))
    })?;
    let mark = traffic.samples().len();
    wait_until(
        "traffic after the container left",
        Duration::from_secs(20),
        || traffic.samples().len() > mark + 60,
    )?;
    let samples = traffic.stop();
    let failed = failures(&samples);
    assert!(failed.len() <= 1, "failed requests: {failed:?}");
    let after: Vec<&Sample> = samples.iter().filter(|s| s.started > stopped_at).collect();
    assert!(
        !after
            .iter()
            .any(|s| s.container.as_deref() == Some("host1-todo1")),
        "the stopped container still answered"
    );
    assert!(
        after
            .iter()
            .any(|s| s.container.as_deref() == Some("host1-todo2")),
        "host1 stopped serving todo.example"
    );

    // --- Reload every host adding a host name, under load: no failed request.
    let traffic = Traffic::start(&l.ns("client"), vip(), Duration::from_secs(120))?;
    wait_until("traffic", Duration::from_secs(10), || {
        traffic.samples().len() > 30
    })?;
    for (host, _) in lab::HOSTS {
        let config = l.host_config(host)?.replace(
            "[[l7.pool]]\nname = \"todo\"",
            "[[l7.route]]\nhost = \"new.example\"\npool = \"shop\"\n\n[[l7.pool]]\nname = \"todo\"",
        );
        anyhow::ensure!(
            config.contains("new.example"),
            "lab-host.toml changed shape"
        );
        l.reload_host(host, &config)?;
    }
    let new = containers(&l, "new.example", 30)?;
    assert!(new.keys().all(|c| c.ends_with("-shop1")), "{new:?}");
    let mark = traffic.samples().len();
    wait_until("traffic after the reload", Duration::from_secs(10), || {
        traffic.samples().len() > mark + 30
    })?;
    let samples = traffic.stop();
    assert!(
        failures(&samples).is_empty(),
        "failed during reload: {:?}",
        failures(&samples)
    );

    // --- Drain host2's first todo container at runtime under load, then undrain it.
    let admin =
        portier::admin::client::Target::Socket(portier::config::default_socket(&l.ns("host2")));
    let command = |verb: &str| -> Result<String> {
        let path = format!("/command/l7/{verb}?pool=todo&server=172.17.0.10:8080");
        portier::admin::client::request(&admin, "POST", &path)
    };
    let drained = "host2-todo1";
    let traffic = Traffic::start(&l.ns("client"), vip(), Duration::from_secs(120))?;
    wait_until(
        "traffic reaches the server to drain",
        Duration::from_secs(10),
        || {
            traffic
                .samples()
                .iter()
                .any(|s| s.container.as_deref() == Some(drained))
        },
    )?;
    command("drain")?;
    let drained_at = Instant::now();
    let mark = traffic.samples().len();
    wait_until("traffic while drained", Duration::from_secs(20), || {
        traffic.samples().len() > mark + 90
    })?;
    command("undrain")?;
    let undrained_at = Instant::now();
    wait_until(
        "the undrained server answers",
        Duration::from_secs(20),
        || {
            traffic
                .samples()
                .iter()
                .any(|s| s.started > undrained_at && s.container.as_deref() == Some(drained))
        },
    )?;
    let samples = traffic.stop();
    assert!(
        failures(&samples).is_empty(),
        "failed around the drain: {:?}",
        failures(&samples)
    );
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.started > drained_at && s.at < undrained_at)
        .collect();
    // Samples in flight at either command are left out, so fewer than the 90 waited for.
    assert!(during.len() > 50, "{}", during.len());
    assert!(
        !during
            .iter()
            .any(|s| s.container.as_deref() == Some(drained)),
        "the drained server got new requests"
    );
    assert!(
        during
            .iter()
            .any(|s| s.container.as_deref() == Some("host2-todo2")),
        "host2 stopped serving todo.example while one server was drained"
    );

    lb.stop()?;
    drop(l);
    assert!(lab::status(PREFIX).is_empty(), "namespaces left behind");
    Ok(())
}
