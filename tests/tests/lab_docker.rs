//! The docker lab end to end (`Variant::docker`, tests/src/lab_docker.rs): every host runs
//! its own Docker engine, its todo and shop servers are containers of it, and its portier
//! finds them by labels alone. Through the VIP (XDP on lb1, DSR to the hosts), todo.example
//! and shop.example reach the containers of every host; a new `todo` container started on
//! host2 with labels only receives requests through the VIP without any config change; a
//! `docker stop` of it under continuous traffic drains it (the engine's `kill` event) and
//! removes it without one failed request. Prints how long each step took.
//!
//! One lab (prefix `dk`), torn down by `Lab`'s Drop (engines included), also on panic.

use anyhow::{Context, Result, bail};
use portier_tests::client::{self, Traffic};
use portier_tests::lab::{self, Lab, Variant};
use portier_tests::lab_docker;
use portier_tests::netns;
use portier_tests::wait;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PREFIX: &str = "dk";

fn vip() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 10], lab::HTTP_PORT))
}

/// Requests for `host` through the VIP, each on a new connection, until every container of
/// `want` has answered: container -> count.
fn until_all_answer(
    l: &Lab,
    host: &str,
    want: &BTreeSet<String>,
) -> Result<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    let r = netns::in_netns(&l.ns("client"), || {
        wait::until(
            &format!("every container of {host} answering"),
            Duration::from_secs(30),
            || {
                let r = client::get_host(vip(), None, host, "/")?;
                *seen.entry(r.container).or_insert(0) += 1;
                Ok(want.iter().all(|c| seen.contains_key(c)))
            },
        )
    })?;
    r.with_context(|| format!("answered so far: {seen:?}"))?;
    Ok(seen)
}

fn names(containers: &[&str]) -> BTreeSet<String> {
    lab::HOSTS
        .iter()
        .flat_map(|(h, _)| containers.iter().map(move |c| format!("{h}-{c}")))
        .collect()
}

#[test]
fn docker_lab_containers_found_by_labels() -> Result<()> {
    let start = Instant::now();
    let l = Lab::up_with(
        PREFIX,
        Variant {
            docker: true,
            ..Variant::default()
        },
    )?;
    let built = start.elapsed();
    let _lb = l.start_portier("lb1", &l.lb_config("lb1")?)?;
    l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;
    println!(
        "lab up with three engines and nine containers in {built:?}; VIP routed {:?} later",
        start.elapsed() - built
    );

    // The hosts' configs name no container: the servers are the engines' containers.
    for (host, _) in lab::HOSTS {
        let config = l.host_config(host)?;
        let written = config
            .lines()
            .filter(|l| l.trim_start().starts_with("servers") && !l.contains("[]"))
            .count();
        assert_eq!(written, 0, "{host}: servers written in\n{config}");
        let ip = lab_docker::docker(
            PREFIX,
            host,
            &[
                "inspect",
                "--format",
                "{{.NetworkSettings.Networks.lab.IPAddress}}",
                &format!("{host}-todo1"),
            ],
        )?;
        let mut todo1 = None;
        wait::until(
            &format!("{host}'s pool todo listing todo1"),
            Duration::from_secs(10),
            || {
                todo1 = lab_docker::server_of(&l, host, "todo", &format!("{host}-todo1"))?;
                Ok(todo1.is_some())
            },
        )?;
        assert_eq!(
            todo1.as_ref().map(|s| s["address"].clone()),
            Some(format!("{ip}:8080").into()),
            "{host}: {:?}",
            lab_docker::pool_servers(&l, host, "todo")?
        );
    }

    // Through the VIP: each name reaches its own containers, on every host.
    let todo = until_all_answer(&l, lab::TODO_HOST, &names(&["todo1", "todo2"]))?;
    let shop = until_all_answer(&l, lab::SHOP_HOST, &names(&["shop1"]))?;
    println!("todo.example: {todo:?}\nshop.example: {shop:?}");
    assert!(todo.keys().all(|c| c.contains("-todo")), "{todo:?}");
    assert!(shop.keys().all(|c| c.ends_with("-shop1")), "{shop:?}");

    // A new todo container on host2, labels only: listed, then answering through the VIP.
    let t0 = Instant::now();
    l.start_container("host2", "todo3")?;
    let ran = t0.elapsed();
    let listed = wait::until(
        "host2-todo3 in host2's pool todo",
        Duration::from_secs(10),
        || Ok(lab_docker::server_of(&l, "host2", "todo", "host2-todo3")?.is_some()),
    )?;
    let mut before = 0usize;
    let answered = netns::in_netns(&l.ns("client"), || {
        wait::until(
            "host2-todo3 answering through the VIP",
            Duration::from_secs(10),
            || {
                let r = client::get_host(vip(), None, lab::TODO_HOST, "/")?;
                before += 1;
                Ok(r.container == "host2-todo3")
            },
        )
    })??;
    let since_run = t0.elapsed();
    println!(
        "docker run host2-todo3 took {ran:?}; a server of host2's pool {listed:?} after it \
         returned; answered through the VIP {answered:?} later (request {before}), \
         {since_run:?} after docker run began"
    );

    // docker stop under continuous traffic: drained at the kill event, removed at die; the
    // app finishes what it has. No request may fail.
    let traffic = Traffic::start(&l.ns("client"), vip(), Duration::from_secs(120))?;
    wait::until(
        "traffic served by host2-todo3",
        Duration::from_secs(20),
        || {
            Ok(traffic
                .samples()
                .iter()
                .filter(|s| s.container.as_deref() == Some("host2-todo3"))
                .count()
                >= 3)
        },
    )?;
    // And requests in flight at host2-todo3 when it is stopped: slow ones (1.5 s) straight
    // to host2's portier, whose least-outstanding balance spreads them over its three. It
    // picks the less loaded of two random servers, so n requests, each seeing the ones before
    // it (20 ms apart), leave one server without any with probability 0.41% for n = 6 and
    // 7e-8 for n = 16.
    let front = SocketAddr::from(([127, 0, 0, 1], lab::HTTP_PORT));
    let slow: Vec<_> = (0..16)
        .map(|_| {
            let ns = l.ns("host2");
            std::thread::sleep(Duration::from_millis(20));
            std::thread::spawn(move || {
                netns::in_netns(&ns, || {
                    client::get_host(front, None, lab::TODO_HOST, "/?delay_ms=1500")
                })?
            })
        })
        .collect();
    wait::until(
        "a slow request in flight at host2-todo3",
        Duration::from_secs(10),
        || {
            Ok(lab_docker::server_of(&l, "host2", "todo", "host2-todo3")?
                .is_some_and(|s| s["outstanding"].as_u64() >= Some(1)))
        },
    )?;
    let t2 = Instant::now();
    lab_docker::docker(PREFIX, "host2", &["stop", "host2-todo3"])?;
    let stopped = t2.elapsed();
    let mut slow_by = BTreeMap::new();
    for t in slow {
        let r = t
            .join()
            .map_err(|_| anyhow::anyhow!("slow request panicked"))?
            .context("a slow request failed")?;
        *slow_by.entry(r.container).or_insert(0) += 1;
    }
    println!("slow requests in flight at the stop, all answered: {slow_by:?}");
    assert!(slow_by.contains_key("host2-todo3"), "{slow_by:?}");
    let gone = wait::until(
        "host2-todo3 out of host2's pool",
        Duration::from_secs(10),
        || Ok(lab_docker::server_of(&l, "host2", "todo", "host2-todo3")?.is_none()),
    )?;
    let mark = Instant::now();
    wait::until("traffic after the stop", Duration::from_secs(20), || {
        Ok(traffic
            .samples()
            .iter()
            .filter(|s| s.started > mark)
            .count()
            >= 100)
    })?;
    let samples = traffic.stop();
    let failed: Vec<_> = samples.iter().filter(|s| s.result.is_err()).collect();
    let by_todo3: Vec<_> = samples
        .iter()
        .filter(|s| s.container.as_deref() == Some("host2-todo3"))
        .collect();
    let hosts: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.started > mark)
        .filter_map(|s| s.result.as_deref().ok())
        .collect();
    println!(
        "docker stop took {stopped:?}, out of the pool {gone:?} after; {} requests, {} by \
         host2-todo3, {} failed; after: {hosts:?}",
        samples.len(),
        by_todo3.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!(
            "requests failed around docker stop: {:?}",
            &failed[..failed.len().min(5)]
        );
    }
    assert!(
        by_todo3.iter().all(|s| s.started < t2 + stopped),
        "host2-todo3 answered after docker stop returned"
    );
    assert_eq!(
        hosts.len(),
        3,
        "every host serves after the stop: {hosts:?}"
    );
    println!("test took {:?} (lab teardown not counted)", start.elapsed());
    Ok(())
}
