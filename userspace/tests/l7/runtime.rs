//! Runtime drain and weight of pool servers (the admin API's `/command/l7/<verb>`): drain
//! sends new requests elsewhere while in-flight ones finish, moves hashed keys away, and
//! survives unrelated reloads; weight changes the round-robin share; undrain restores.

use crate::harness::*;
use crate::pools::wait_until;
use portier::l7::L7;
use portier::part::Command;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn command(p: &mut L7, verb: &str, server: &Backend, weight: Option<u32>) -> serde_json::Value {
    let mut args = BTreeMap::from([
        ("pool".to_owned(), "p".to_owned()),
        ("server".to_owned(), server.addr.to_string()),
    ]);
    if let Some(w) = weight {
        args.insert("weight".into(), w.to_string());
    }
    let c = Command::parse("l7", verb, &args).unwrap_or_else(|e| panic!("{verb}: {e}"));
    p.command(c).unwrap_or_else(|e| panic!("{verb}: {e}"))
}

async fn names(addr: std::net::SocketAddr, n: usize, req: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = exchange(addr, req).await;
        assert_eq!(status(&r), 200, "{r}");
        out.push(body(&r).to_owned());
    }
    out
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

/// `n` requests on one kept-alive client connection; the bodies name the servers.
async fn share(c: &mut Client, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..n {
        c.send(&get("x", "/")).await;
        got.push(body(&c.response().await).to_owned());
    }
    got
}

fn server_status(p: &L7, i: usize) -> serde_json::Value {
    p.status()["pools"]["p"]["servers"][i].clone()
}

#[tokio::test]
async fn drain_sends_new_requests_elsewhere_while_in_flight_ones_finish() {
    let mut a = Backend::scripted(
        "a",
        Arc::new(|req: &[u8]| {
            if req.starts_with(b"GET /slow ") {
                Action::Delay(Duration::from_millis(800), ok("a"))
            } else {
                Action::Send(ok("a"))
            }
        }),
    )
    .await;
    let b = Backend::named("b").await;
    let config = simple(&[&a, &b], "", "");
    let (mut p, addr) = proxy(&config);

    // Round robin starts at the first server: the slow request is on `a`.
    let mut slow = Client::connect(addr).await;
    slow.send(&get("x", "/slow")).await;
    wait_until(|| server_status(&p, 0)["outstanding"] == 1).await;

    let answer = command(&mut p, "drain", &a, None);
    assert_eq!(answer["weight"], 0, "{answer}");
    let s = server_status(&p, 0);
    assert_eq!(
        (&s["state"], &s["weight"], &s["configured_weight"]),
        (&"drained".into(), &0.into(), &1.into()),
        "{s}"
    );
    let got = names(addr, 10, &get("x", "/")).await;
    assert_eq!(count(&got, "b"), 10, "{got:?}");

    // The in-flight request on the drained server completes.
    let r = slow.response().await;
    assert_eq!((status(&r), body(&r)), (200, "a"), "{r}");
    assert!(a.request().await.starts_with("GET /slow "));
    a.no_request().await;

    // A reload of something unrelated (a new route) keeps the drain.
    let reloaded = format!("{config}\n[[l7.route]]\nhost = \"new.example\"\npool = \"p\"\n");
    reconfigure(&mut p, &reloaded);
    let got = names(addr, 6, &get("new.example", "/")).await;
    assert_eq!(count(&got, "b"), 6, "{got:?}");
    assert_eq!(server_status(&p, 0)["state"], "drained");

    // Undrain: both again, alternating.
    let answer = command(&mut p, "undrain", &a, None);
    assert_eq!(answer["weight"], 1, "{answer}");
    let got = names(addr, 6, &get("x", "/")).await;
    assert_eq!((count(&got, "a"), count(&got, "b")), (3, 3), "{got:?}");
    assert_eq!(server_status(&p, 0)["state"], "active");
}

#[tokio::test]
async fn runtime_weight_sets_the_round_robin_share_and_keeps_connections() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let (mut p, addr) = proxy(&simple(&[&a, &b], "", ""));
    // One client connection, kept alive: the upstream connections are reused throughout.
    let mut c = Client::connect(addr).await;
    let got = share(&mut c, 4).await;
    assert_eq!((count(&got, "a"), count(&got, "b")), (2, 2), "{got:?}");

    let answer = command(&mut p, "weight", &a, Some(3));
    assert_eq!(answer["weight"], 3, "{answer}");
    let got = share(&mut c, 40).await;
    assert_eq!((count(&got, "a"), count(&got, "b")), (30, 10), "{got:?}");
    let s = server_status(&p, 0);
    assert_eq!(
        (&s["weight"], &s["configured_weight"]),
        (&3.into(), &1.into())
    );
    // The servers were kept (not rebuilt): still one upstream connection each.
    assert_eq!(a.connections.load(Ordering::SeqCst), 1);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);

    command(&mut p, "undrain", &a, None);
    let got = share(&mut c, 4).await;
    assert_eq!((count(&got, "a"), count(&got, "b")), (2, 2), "{got:?}");
}

#[tokio::test]
async fn drain_moves_hashed_keys_away_and_undrain_brings_them_back() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let (mut p, addr) = proxy(&simple(&[&a, &b], "balance = \"hash-header:X-User\"", ""));
    let req = |user: usize| format!("GET / HTTP/1.1\r\nHost: x\r\nX-User: u{user}\r\n\r\n");
    // A key that hashes to `a`.
    let mut on_a = None;
    for user in 0..64 {
        if body(&exchange(addr, req(user).as_bytes()).await) == "a" {
            on_a = Some(user);
            break;
        }
    }
    let user = on_a.expect("no key hashed to a");
    command(&mut p, "drain", &a, None);
    let got = names(addr, 3, req(user).as_bytes()).await;
    assert_eq!(count(&got, "b"), 3, "{got:?}");
    command(&mut p, "undrain", &a, None);
    let got = names(addr, 3, req(user).as_bytes()).await;
    assert_eq!(count(&got, "a"), 3, "{got:?}");
}

#[tokio::test]
async fn bad_commands_are_refused_without_a_change() {
    let a = Backend::named("a").await;
    let (mut p, _addr) = proxy(&simple(&[&a], "", ""));
    let args = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let drain = Command::parse(
        "l7",
        "drain",
        &args(&[("pool", "p"), ("server", "127.0.0.1:1")]),
    )
    .expect("well-formed");
    let e = p.command(drain).unwrap_err().to_string();
    assert!(e.contains("pool p has no server 127.0.0.1:1"), "{e}");
    let server = a.addr.to_string();
    let e = Command::parse(
        "l7",
        "weight",
        &args(&[("pool", "p"), ("server", &server), ("weight", "70000")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("weight must be"), "{e}");
    assert_eq!(server_status(&p, 0)["state"], "active");
}

/// A `portier run` child process, killed (and reaped) on drop, also when the test panics.
struct Daemon {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the `portier` CLI and returns its standard output; panics when it fails.
fn cli(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portier"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "portier {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn cli_drains_undrains_and_weighs_a_server_of_a_running_daemon() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let [admin, http] = crate::ports::daemon_ports(2)[..] else {
        unreachable!()
    };
    let admin_addr = format!("127.0.0.1:{admin}");
    let dir = std::env::temp_dir().join(format!("portier-l7-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("admin.sock");
    let sock = socket.to_string_lossy().into_owned();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let config = |extra: &str| {
        format!(
            "[node]\nname = \"t\"\n[admin]\nlisten = \"{admin_addr}\"\nsocket = \"{sock}\"\n{}{extra}",
            simple(&[&a, &b], "", "").replace("127.0.0.1:0", &addr.to_string())
        )
    };
    let file = dir.join("portier.toml");
    std::fs::write(&file, config("")).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_portier"))
        .args(["run", "--config", file.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _daemon = Daemon { child, dir };
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(addr).is_err()
        || std::net::TcpStream::connect(&admin_addr).is_err()
    {
        assert!(std::time::Instant::now() < deadline, "daemon not up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server = a.addr.to_string();
    let target = ["--pool", "p", "--server", &server, "--socket", &sock];

    let out = cli(&[&["drain"], &target[..]].concat());
    assert!(out.contains("\"weight\": 0"), "{out}");
    let got = names(addr, 4, &get("x", "/")).await;
    assert_eq!(count(&got, "b"), 4, "{got:?}");
    // Reload with a new route: the drain stays.
    std::fs::write(
        &file,
        config("\n[[l7.route]]\nhost = \"new.example\"\npool = \"p\"\n"),
    )
    .unwrap();
    cli(&["reload", "--socket", &sock]);
    let got = names(addr, 4, &get("new.example", "/")).await;
    assert_eq!(count(&got, "b"), 4, "{got:?}");
    let status: serde_json::Value =
        serde_json::from_str(&cli(&["status", "--json", "--admin", &admin_addr])).unwrap();
    assert_eq!(status["l7"]["pools"]["p"]["servers"][0]["state"], "drained");

    cli(&[&["undrain"], &target[..]].concat());
    let got = names(addr, 4, &get("x", "/")).await;
    assert_eq!((count(&got, "a"), count(&got, "b")), (2, 2), "{got:?}");

    let out = cli(&[&["weight"], &target[..], &["3"]].concat());
    assert!(out.contains("\"weight\": 3"), "{out}");
    let got = names(addr, 8, &get("x", "/")).await;
    assert_eq!((count(&got, "a"), count(&got, "b")), (6, 2), "{got:?}");
    let tcp = portier::admin::client::Target::Tcp(admin_addr.parse().unwrap());
    let metrics = portier::admin::client::request(&tcp, "GET", "/metrics").unwrap();
    let line = format!("portier_l7_server_weight{{pool=\"p\",server=\"{server}\"}} 3");
    assert!(metrics.contains(&line), "{metrics}");
}
