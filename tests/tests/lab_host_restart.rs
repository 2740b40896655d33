//! A host's front door (pt-host1's portier, the L7 proxy the LBs balance to at L4 with DSR)
//! restarting under load, while a client opens a new connection to the VIP every 30 ms.
//!
//! Planned: `portier run --take-over` binds its listeners beside the running process's
//! (SO_REUSEPORT), stops it (it closes its listeners, the kernel hands their queued
//! connections to the new ones with `net.ipv4.tcp_migrate_req = 1`, and drains its in-flight
//! requests) and runs the node once it has exited: no request may fail. Then SIGUSR2 to the
//! new process, which starts its own successor the same way: none may fail either.
//!
//! Unplanned: SIGKILL, and the same command again 1 s later. What portier promises, and this
//! asserts: a request whose connection was accepted before the kill may be lost (it dies with
//! the process); every later one either fails before it is sent (refused: the host's kernel
//! answers the SYN with a reset, which a client may retry without risk) or is answered; and
//! none fails once the new process is ready.

use anyhow::{Result, bail};
use portier_tests::client::{Sample, Traffic};
use portier_tests::lab::{self, Lab};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(30);
/// Clients that connect, wait `THINK`, then send: when the old process stops, some of its
/// connections are accepted with no request yet, and (host1 serving at most
/// `MAX_CONNECTIONS` at once) others wait in its listeners' queues.
const BUSY_CLIENTS: usize = 4;
const THINK: Duration = Duration::from_millis(20);
const MAX_CONNECTIONS: usize = 2;
const TAKE_OVERS: usize = 5;

fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> Result<bool>) -> Result<()> {
    portier_tests::wait::until(what, timeout, f).map(|_| ())
}

fn from_host1(samples: &[Sample], after: Instant) -> usize {
    samples
        .iter()
        .filter(|s| s.started > after && s.result.as_deref() == Ok("host1"))
        .count()
}

/// Keeps the traffic going until host1 has answered `n` more requests after `after`.
fn host1_serves(traffic: &Traffic, after: Instant, n: usize) -> Result<()> {
    wait_until("host1 answering", Duration::from_secs(30), || {
        Ok(from_host1(&traffic.samples(), after) >= n)
    })
}

fn failures(samples: &[Sample], since: Instant) -> Vec<(Duration, bool, String)> {
    samples
        .iter()
        .filter_map(|s| {
            let e = s.result.as_ref().err()?;
            let at = s.started.saturating_duration_since(since);
            Some((at, s.sent, e.clone()))
        })
        .collect()
}

#[test]
fn host1_hands_over_without_loss_and_survives_kill_9() -> Result<()> {
    let l = Lab::up("hr")?;
    let _lb2 = l.start_portier("lb2", &l.lb_config("lb2")?)?;
    let _lb1 = l.start_portier("lb1", &l.lb_config("lb1")?)?;
    wait_until("lb1 master", Duration::from_secs(30), || {
        Ok(l.has_vip_on_lan("lb1")? && !l.has_vip_on_lan("lb2")?)
    })?;
    l.wait_vip_route(&["10.0.0.11"], lab::VIP_ROUTE_TIMEOUT)?;
    let vip = SocketAddr::from(([203, 0, 113, 10], lab::HTTP_PORT));
    let config = l.host_config("host1")?.replace(
        "no_route_status = 404",
        &format!("no_route_status = 404\nmax_connections = {MAX_CONNECTIONS}"),
    );
    assert!(config.contains("max_connections"), "lab-host.toml changed");
    let client = l.ns("client");

    // Planned: --take-over (several times, with slow clients besides the paced one, so that
    // the old listeners have connections queued, and just accepted, when they close), then
    // SIGUSR2 to the last new process.
    let mut old = l.take_door("host1")?;
    old.reload(&config)?;
    let traffic = Traffic::start_paced(
        &client,
        vip,
        lab::TODO_HOST,
        EVERY,
        Duration::from_secs(120),
    )?;
    let busy: Vec<Traffic> = (0..BUSY_CLIENTS)
        .map(|_| Traffic::start_slow(&client, vip, THINK, Duration::from_secs(120)))
        .collect::<Result<_>>()?;
    let begin = Instant::now();
    host1_serves(&traffic, begin, 10)?;
    let handed = Instant::now();
    let mut took = Vec::new();
    for _ in 0..TAKE_OVERS {
        let start = Instant::now();
        let new = l.start_portier_with("host1", &config, &["--take-over"])?;
        took.push(start.elapsed());
        // Ready only once the old process has exited.
        let status = old.try_exit()?;
        if !status.is_some_and(|s| s.success()) {
            bail!("the old process has not exited cleanly after the hand-over: {status:?}");
        }
        host1_serves(&traffic, Instant::now(), 5)?;
        old = new;
    }
    let new = old;
    host1_serves(&traffic, Instant::now(), 20)?;
    let pid_file = format!("/run/portier/{}.pid", l.ns("host1"));
    let pid_of = || -> Result<u32> { Ok(std::fs::read_to_string(&pid_file)?.trim().parse()?) };
    assert_eq!(pid_of()?, new.pid(), "the pid file names the new process");
    let usr2 = Instant::now();
    new.signal(nix::sys::signal::Signal::SIGUSR2)?;
    // The successor is the new process's child; it runs the node once `new` has exited.
    wait_until("the SIGUSR2 successor", Duration::from_secs(30), || {
        Ok(pid_of().is_ok_and(|p| p != new.pid()))
    })?;
    let mut new = new;
    wait_until("the old process gone", Duration::from_secs(30), || {
        Ok(new.try_exit()?.is_some())
    })?;
    host1_serves(&traffic, Instant::now(), 20)?;
    let samples = traffic.stop();
    let failed = failures(&samples, handed);
    let busy: Vec<Sample> = busy.into_iter().flat_map(Traffic::stop).collect();
    let busy_failed = failures(&busy, handed);
    println!(
        "planned hand-overs of host1: {TAKE_OVERS} x --take-over (ready {took:?} after each \
         start), then SIGUSR2 ({:?} ago): paced client {} requests, {} answered by host1, {} \
         failed; {BUSY_CLIENTS} slow clients {} requests, {} failed",
        usr2.elapsed(),
        samples.len(),
        from_host1(&samples, begin),
        failed.len(),
        busy.len(),
        busy_failed.len(),
    );
    assert!(
        failed.is_empty() && busy_failed.is_empty(),
        "failed requests (since the first hand-over): {failed:?} {busy_failed:?}"
    );
    // The successor started by SIGUSR2 is not ours to hold: the lab's teardown kills it with
    // everything in its namespaces. Stop it now, as a crash would.
    let successor = pid_of()?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(successor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    wait_until("the successor gone", Duration::from_secs(10), || {
        Ok(!std::path::Path::new(&format!("/proc/{successor}")).exists())
    })?;

    // Unplanned: a fresh process, SIGKILL under load, the same command 1 s later.
    let door = l.start_portier("host1", &config)?;
    let traffic = Traffic::start_paced(
        &client,
        vip,
        lab::TODO_HOST,
        EVERY,
        Duration::from_secs(120),
    )?;
    host1_serves(&traffic, Instant::now(), 10)?;
    door.kill()?;
    let killed = Instant::now();
    // The scenario's pause, not a wait for an event: the operator starts it again 1 s later.
    std::thread::sleep(Duration::from_secs(1));
    let _door = l.start_portier("host1", &config)?;
    let ready = Instant::now();
    host1_serves(&traffic, ready, 20)?;
    let samples = traffic.stop();
    let failed = failures(&samples, killed);
    let lost = failed.iter().filter(|f| f.1).count();
    let refused = failed.len() - lost;
    let last = failed.iter().map(|f| f.0).max().unwrap_or_default();
    println!(
        "host1 killed, started again 1 s later (ready {:?} after the kill): {} requests, {} \
         failed: {refused} before being sent (retryable), {lost} after; last failure {last:?} \
         after the kill; failures {failed:?}",
        ready - killed,
        samples.len(),
        failed.len(),
    );
    // What was sent and then failed was in flight at the kill (its connection accepted by
    // the process that died); what started later failed, if at all, before it was sent.
    for s in samples.iter().filter(|s| s.result.is_err()) {
        if s.sent {
            assert!(
                s.started < killed,
                "a request sent after the kill was lost: {:?} after it: {:?}",
                s.started - killed,
                s.result
            );
        }
        assert!(
            s.started < ready,
            "a request failed after the restarted process was ready: {:?}",
            s.result
        );
    }
    Ok(())
}
