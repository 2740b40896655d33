//! Docker discovery against a real engine (Debian's docker.io, started by the test in a
//! namespace of its own, see `portier_tests::dockerd`): portier runs in the engine's
//! namespace with `[discovery.docker]` and a static pool `todo` (one server outside Docker),
//! and containers of a busybox image answer with their own name.
//!
//! Covered: labelled containers become servers of their pool and requests reach them (with
//! the static server, by weight); a new container is routed without a reload; `enable=false`
//! ignored; a bad label named and the container skipped; an unhealthy container gets nothing;
//! a route claimed against the config refused and reported; a container on two networks
//! uses the configured one; runtime drain/undrain of a discovered server; `docker stop`
//! removes a server (a sequential client sees at most
//! one failed request); a container restarted with a new address is followed; a rename
//! shows; the engine stopped keeps the servers (stale) and its restart re-syncs, dropping a
//! container that died meanwhile; a reload to an absent engine keeps them and says why. Prints how long each change took to take effect.
//!
//! Namespace prefix `pd`.

use anyhow::{Context, Result, bail};
use portier_tests::dockerd::Engine;
use portier_tests::lab::Daemon;
use portier_tests::netns::{in_netns, spawn_in};
use portier_tests::wait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

const NODE: &str = "pd-docker";
const LISTEN: &str = "127.0.0.1:8000";
/// A server of pool `todo` written in the config: busybox httpd outside Docker.
const STATIC: &str = "127.0.0.1:9001";
/// The admin API's read-only listener (`/metrics`).
const ADMIN: &str = "127.0.0.1:9902";

fn config(engine: &Engine) -> String {
    format!(
        r#"[node]
name = "{NODE}"

[admin]
listen = "{ADMIN}"

[l7]
drain_timeout_ms = 2000

[[l7.listener]]
name = "http"
bind = "{LISTEN}"

[[l7.route]]
host = "todo.example"
pool = "todo"

[[l7.route]]
host = "static.example"
pool = "todo"

[[l7.pool]]
name = "todo"
servers = [{{ address = "{STATIC}" }}]
connect_timeout_ms = 500

[discovery.docker]
endpoint = "{}"
network = "pdnet"

[discovery.docker.defaults]
connect_timeout_ms = 500
"#,
        engine.endpoint()
    )
}

/// One GET with `host`, on a new connection: (status, body).
fn get(ns: &str, host: &str) -> Result<(u16, String)> {
    get_from(ns, LISTEN, host, "/")
}

/// One GET of `path` from `to` with `host`, on a new connection: (status, body).
fn get_from(ns: &str, to: &str, host: &str, path: &str) -> Result<(u16, String)> {
    in_netns(ns, || -> Result<(u16, String)> {
        let addr: SocketAddr = to.parse()?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let status = text
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("no status line in {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        Ok((status, body))
    })?
}

/// Who answers `n` requests for `host`: body -> count (failures under "error").
fn spread(ns: &str, host: &str, n: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let who = match get(ns, host) {
            Ok((200, body)) => body,
            Ok((status, _)) => format!("status {status}"),
            Err(_) => "error".to_owned(),
        };
        *out.entry(who).or_default() += 1;
    }
    out
}

fn status(d: &Daemon, ns: &str) -> Result<Value> {
    let text = d.cli(ns, &["status", "--json"])?;
    Ok(serde_json::from_str::<Value>(&text)?["l7"].clone())
}

/// Addresses of pool `pool`'s servers with their source.
fn servers(l7: &Value, pool: &str) -> Vec<(String, String)> {
    l7["pools"][pool]["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["address"].as_str().unwrap_or("").to_owned(),
                s["source"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn container<'a>(l7: &'a Value, name: &str) -> Option<&'a Value> {
    l7["discovery"]["docker"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

fn state_of(l7: &Value, name: &str) -> String {
    container(l7, name)
        .and_then(|c| c["state"].as_str())
        .unwrap_or("absent")
        .to_owned()
}

/// Waits until `f` holds for the daemon's L7 status; how long it took.
fn until_status(
    d: &Daemon,
    ns: &str,
    what: &str,
    mut f: impl FnMut(&Value) -> bool,
) -> Result<Duration> {
    let mut last = Value::Null;
    let r = wait::until(what, Duration::from_secs(20), || {
        last = status(d, ns)?;
        Ok(f(&last))
    });
    r.with_context(|| format!("last status: {last:#}"))
}

fn served(ns: &str, host: &str, name: &str) -> bool {
    matches!(get(ns, host), Ok((200, b)) if b == name)
}

#[test]
fn containers_become_servers_and_routes() -> Result<()> {
    let mut engine = Engine::start("pd")?;
    let ns = engine.ns.clone();
    engine.network("pdnet", "pd-br0", "172.28.0.0/24")?;
    engine.network("pdnet2", "pd-br1", "172.29.0.0/24")?;

    // The config's own server of pool todo.
    let www = engine.dir.join("www-static");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "static")?;
    let mut static_server = spawn_in(
        &ns,
        Path::new("/bin/busybox"),
        &["httpd", "-f", "-p", STATIC, "-h", &www.to_string_lossy()],
        &engine.dir.join("static.log"),
    )?;
    let _static_guard = KillOnDrop(&mut static_server);

    let todo = [("portier.host", "todo.example"), ("portier.pool", "todo")];
    engine.run_app("todo1", "pdnet", &todo, &[])?;
    engine.run_app(
        "todo2",
        "pdnet",
        &[("portier.pool", "todo"), ("portier.weight", "3")],
        &[],
    )?;
    engine.run_app(
        "off",
        "pdnet",
        &[("portier.host", "off.example"), ("portier.enable", "false")],
        &[],
    )?;
    engine.run_app(
        "bad",
        "pdnet",
        &[("portier.host", "bad.example"), ("portier.port", "http")],
        &[],
    )?;
    engine.run_app(
        "sick",
        "pdnet",
        &[("portier.host", "sick.example")],
        &[
            "--health-cmd",
            "false",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
        ],
    )?;
    engine.run_app(
        "thief",
        "pdnet",
        &[
            ("portier.host", "static.example"),
            ("portier.pool", "stolen"),
        ],
        &[],
    )?;
    engine.run_app("multi", "pdnet2", &[("portier.host", "multi.example")], &[])?;
    engine.docker(&["network", "connect", "pdnet", "multi"])?;

    let run_dir = engine.dir.join("portier");
    let daemon = Daemon::spawn(&ns, NODE, &config(&engine), &run_dir)?;

    // Listed at start: the static server and two containers in pool todo.
    let took = until_status(&daemon, &ns, "todo1 and todo2 in pool todo", |l7| {
        servers(l7, "todo").len() == 3
    })?;
    println!("initial listing applied {took:?} after the daemon was ready");
    let l7 = status(&daemon, &ns)?;
    let todo_servers = servers(&l7, "todo");
    assert_eq!(todo_servers[0], (STATIC.to_owned(), "config".to_owned()));
    let ip1 = engine.ip_of("todo1", "pdnet")?;
    assert!(
        todo_servers
            .iter()
            .any(|(a, s)| *a == format!("{ip1}:8080") && s.starts_with("container todo1 (")),
        "{todo_servers:?}"
    );

    // Requests reach all three, todo2 (weight 3) three times as often as each other. A
    // container's app may still be starting when the first request reaches it (refused, the
    // request goes on to the next server, one pick more); one full round of the weighted
    // sequence first, so the count below starts with every app listening.
    let round = BTreeMap::from([
        ("static".to_owned(), 1),
        ("todo1".to_owned(), 1),
        ("todo2".to_owned(), 3),
    ]);
    wait::until(
        "one round over static, todo1, todo2 x3",
        Duration::from_secs(15),
        || Ok(spread(&ns, "todo.example", 5) == round),
    )?;
    let got = spread(&ns, "todo.example", 50);
    println!("todo.example over 50 requests: {got:?}");
    assert_eq!(got.get("error"), None, "{got:?}");
    assert_eq!(
        (got["static"], got["todo1"], got["todo2"]),
        (10, 10, 30),
        "{got:?}"
    );

    // What became of the others, in status and on the wire.
    assert_eq!(state_of(&l7, "off"), "disabled");
    assert_eq!(get(&ns, "off.example")?.0, 404);
    let bad = container(&l7, "bad").context("bad listed")?;
    assert_eq!(bad["state"], "bad-label");
    assert_eq!(
        bad["detail"],
        "label portier.port: \"http\" is not a port (1-65535)"
    );
    assert_eq!(get(&ns, "bad.example")?.0, 404);
    let thief = container(&l7, "thief").context("thief listed")?;
    assert_eq!(thief["state"], "refused", "{thief}");
    assert_eq!(
        thief["detail"],
        "route static.example/ goes to pool todo in the config"
    );
    let multi_ip = engine.ip_of("multi", "pdnet")?;
    let multi = container(&l7, "multi").context("multi listed")?;
    assert_eq!(multi["address"], format!("{multi_ip}:8080"));
    assert!(served(&ns, "multi.example", "multi"));
    until_status(&daemon, &ns, "sick is unhealthy", |l7| {
        state_of(l7, "sick") == "unhealthy"
    })?;
    assert_eq!(get(&ns, "sick.example")?.0, 503, "no server for sick");

    // The discovery's families in /metrics.
    let (_, metrics) = get_from(&ns, ADMIN, "localhost", "/metrics")?;
    for want in [
        "portier_l7_discovery_connected 1\n",
        "portier_l7_discovery_stale 0\n",
        "portier_l7_discovery_containers{state=\"bad-label\"} 1\n",
        "portier_l7_discovery_containers{state=\"refused\"} 1\n",
    ] {
        assert!(metrics.contains(want), "{want:?} not in\n{metrics}");
    }

    // A new container is routed without a config change.
    let start = Instant::now();
    engine.run_app("new", "pdnet", &[("portier.host", "new.example")], &[])?;
    let ran = start.elapsed();
    let listed = until_status(&daemon, &ns, "new in pool new.example", |l7| {
        servers(l7, "new.example").len() == 1
    })?;
    let answering = Instant::now();
    wait::until("new.example served by new", Duration::from_secs(20), || {
        Ok(served(&ns, "new.example", "new"))
    })?;
    println!(
        "new container: docker run took {ran:?}; a server {listed:?} after it returned; \
         answering through portier {:?} later",
        answering.elapsed()
    );

    // docker stop: gone from the pool; a sequential client loses at most its one
    // in-flight request.
    let stopper = {
        let ns = ns.clone();
        std::thread::spawn(move || -> BTreeMap<String, usize> {
            let deadline = Instant::now() + Duration::from_secs(4);
            let mut out = BTreeMap::new();
            while Instant::now() < deadline {
                let who = match get(&ns, "todo.example") {
                    Ok((200, body)) => body,
                    Ok((s, _)) => format!("status {s}"),
                    Err(_) => "error".to_owned(),
                };
                *out.entry(who).or_default() += 1;
            }
            out
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    engine.docker(&["stop", "todo1"])?;
    let took = until_status(&daemon, &ns, "todo1 out of pool todo", |l7| {
        servers(l7, "todo").len() == 2
    })?;
    println!(
        "docker stop todo1: {:?} for docker stop, removed {took:?} later",
        start.elapsed()
    );
    let during = stopper
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))?;
    println!("requests during the stop: {during:?}");
    let failed: usize = during
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "static" | "todo1" | "todo2"))
        .map(|(_, n)| n)
        .sum();
    assert!(failed <= 1, "{during:?}");
    assert!(!spread(&ns, "todo.example", 10).contains_key("todo1"));

    // Restarted with a new address: a filler takes todo2's while it is stopped.
    let old = engine.ip_of("todo2", "pdnet")?;
    engine.docker(&["stop", "todo2"])?;
    engine.run_app("filler", "pdnet", &[], &["--ip", &old.to_string()])?;
    engine.docker(&["start", "todo2"])?;
    let new = engine.ip_of("todo2", "pdnet")?;
    assert_ne!(old, new);
    let took = until_status(&daemon, &ns, "todo2 at its new address", |l7| {
        servers(l7, "todo")
            .iter()
            .any(|(a, _)| *a == format!("{new}:8080"))
    })?;
    println!("todo2 restarted at {new} (was {old}): followed within {took:?}");
    assert!(
        !servers(&status(&daemon, &ns)?, "todo")
            .iter()
            .any(|(a, _)| *a == format!("{old}:8080"))
    );
    assert!(spread(&ns, "todo.example", 8).contains_key("todo2"));

    // A rename shows.
    engine.docker(&["rename", "todo2", "todo2b"])?;
    until_status(&daemon, &ns, "todo2 renamed", |l7| {
        servers(l7, "todo")
            .iter()
            .any(|(_, s)| s.starts_with("container todo2b ("))
    })?;

    // A discovered server takes runtime drain and undrain like a configured one.
    let addr = format!("{new}:8080");
    let weight_of = |l7: &Value| {
        l7["pools"]["todo"]["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["address"] == addr.as_str())
            .and_then(|s| s["weight"].as_u64())
    };
    daemon.cli(&ns, &["drain", "--pool", "todo", "--server", &addr])?;
    assert_eq!(weight_of(&status(&daemon, &ns)?), Some(0));
    assert!(!spread(&ns, "todo.example", 6).contains_key("todo2"));
    daemon.cli(&ns, &["undrain", "--pool", "todo", "--server", &addr])?;
    assert_eq!(weight_of(&status(&daemon, &ns)?), Some(3));

    // The engine goes away: servers kept (stale), traffic keeps flowing. A container dies
    // meanwhile; the restarted engine's listing removes it.
    let doomed = engine.pid_of("new")?;
    engine.stop_daemon()?;
    until_status(&daemon, &ns, "discovery stale", |l7| {
        let d = &l7["discovery"]["docker"];
        d["connected"] == false && d["stale"] == true
    })?;
    assert_eq!(servers(&status(&daemon, &ns)?, "todo").len(), 2);
    assert!(served(&ns, "new.example", "new"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(doomed),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    // (The body is the hostname, which a rename keeps.)
    assert!(spread(&ns, "todo.example", 6).contains_key("todo2"));
    engine.restart_daemon()?;
    let took = until_status(&daemon, &ns, "re-synced after the engine restart", |l7| {
        let d = &l7["discovery"]["docker"];
        d["connected"] == true && d["stale"] == false && state_of(l7, "new") == "absent"
    })?;
    println!("engine restarted: re-synced {took:?} after it answered");
    let l7 = status(&daemon, &ns)?;
    assert_eq!(servers(&l7, "todo").len(), 2, "{l7:#}");
    assert_eq!(get(&ns, "new.example")?.0, 404);
    assert!(l7["discovery"]["docker"]["resyncs"].as_u64() >= Some(2));

    // The CLI shows where each server comes from and the containers.
    let table = daemon.cli(&ns, &["status"])?;
    println!("{table}");
    for want in [
        "container todo2b (",
        "docker discovery unix://",
        "bad-label",
        "refused",
    ] {
        if !table.contains(want) {
            bail!("`portier status` lacks {want:?}:\n{table}");
        }
    }

    // A reload pointing discovery at an engine that is not there: the new source reports
    // why, and what the old one found stays in force until a new one lists an engine.
    let gone = format!("unix://{}", engine.dir.join("no-engine.sock").display());
    daemon.reload(&config(&engine).replace(&engine.endpoint(), &gone))?;
    until_status(&daemon, &ns, "the new source's error", |l7| {
        let d = &l7["discovery"]["docker"];
        d["connected"] == false
            && d["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot reach the engine"))
    })?;
    assert_eq!(servers(&status(&daemon, &ns)?, "todo").len(), 2);
    assert!(spread(&ns, "todo.example", 6).contains_key("todo2"));
    Ok(())
}

/// Kills a helper process when the test ends, however it ends.
struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
