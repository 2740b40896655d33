//! `cargo xtask demo --docker`: the demo on the docker lab, and at its end a container that
//! announces itself: started on pt-host2 with labels only, it answers through the VIP without
//! any config change, then leaves by `docker stop` without failing a request.

use crate::demo::{show, spread, vip};
use anyhow::Result;
use portier_tests::client::Traffic;
use portier_tests::lab::{self, Lab};
use portier_tests::lab_docker;
use portier_tests::wait;
use std::time::{Duration, Instant};

const HOST: &str = "host2";
const NEW: &str = "todo3";

pub fn intro() {
    println!("   (--docker: each host runs its own Docker engine, and the containers are real");
    println!("   containers of it, a static lab app FROM scratch, found by their labels)");
}

fn docker_cli(l: &Lab) -> String {
    format!(
        "docker -H unix://{}",
        lab_docker::engine_dir(&l.prefix, HOST)
            .join("docker.sock")
            .display()
    )
}

/// The servers of pt-host2's pool todo, one line each: address and source.
fn print_pool(l: &Lab) -> Result<()> {
    for s in lab_docker::pool_servers(l, HOST, "todo")? {
        println!(
            "     {:<18} {}",
            s["address"].as_str().unwrap_or("?"),
            s["source"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

pub fn new_container(l: &Lab) -> Result<()> {
    let name = format!("{HOST}-{NEW}");
    println!(
        "\n== Docker on pt-host2: its own engine ({}):",
        docker_cli(l)
    );
    let ps = lab_docker::docker(
        &l.prefix,
        HOST,
        &[
            "ps",
            "--format",
            "{{.Names}}\t{{.Image}}\t{{.Label \"portier.host\"}}",
        ],
    )?;
    for line in ps.lines() {
        println!("     {line}");
    }
    println!(
        "   its portier has no container address in its config; its pool todo, found by labels:"
    );
    print_pool(l)?;

    println!("\n== A new todo container on pt-host2, labels only (no config change, no reload):");
    let args = lab_docker::run_args(HOST, NEW);
    println!("   {} {}", docker_cli(l), args.join(" "));
    let started = Instant::now();
    l.start_container(HOST, NEW)?;
    let ran = started.elapsed();
    let listed = wait::until(
        "the new container in pt-host2's pool",
        Duration::from_secs(10),
        || Ok(lab_docker::server_of(l, HOST, "todo", &name)?.is_some()),
    )?;
    println!(
        "   docker run took {} ms; pt-host2's portier had it as a server {} ms later:",
        ran.as_millis(),
        listed.as_millis()
    );
    print_pool(l)?;
    let answering = Instant::now();
    wait::until(
        "the new container answering through the VIP",
        Duration::from_secs(10),
        || Ok(spread(l, lab::TODO_HOST, 1)?.contains_key(&name)),
    )?;
    println!(
        "   it answered through the VIP {} ms after that; 60 requests for todo.example now:",
        answering.elapsed().as_millis()
    );
    show(&spread(l, lab::TODO_HOST, 60)?);

    println!("\n== docker stop {name} while the client sends requests back to back:");
    let traffic = Traffic::start(&l.ns("client"), vip(), Duration::from_secs(60))?;
    wait::until("traffic", Duration::from_secs(10), || {
        Ok(traffic.samples().len() > 50)
    })?;
    let stopping = Instant::now();
    lab_docker::docker(&l.prefix, HOST, &["stop", &name])?;
    let stopped = stopping.elapsed();
    lab_docker::docker(&l.prefix, HOST, &["rm", &name])?;
    let mark = Instant::now();
    wait::until("traffic after the stop", Duration::from_secs(10), || {
        Ok(traffic
            .samples()
            .iter()
            .filter(|s| s.started > mark)
            .count()
            > 50)
    })?;
    let samples = traffic.stop();
    let failed = samples.iter().filter(|s| s.result.is_err()).count();
    let by_new = samples
        .iter()
        .filter(|s| s.container.as_deref() == Some(name.as_str()))
        .count();
    println!(
        "   the engine's kill event drained it at once (no new request), the app finished what"
    );
    println!(
        "   it had and exited ({} ms), its die event removed it: {} requests, {by_new} answered",
        stopped.as_millis(),
        samples.len()
    );
    println!("   by {name} before it left, {failed} failed. pt-host2's pool todo again:");
    print_pool(l)?;
    Ok(())
}
