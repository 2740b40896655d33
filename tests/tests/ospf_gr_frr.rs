//! OSPF graceful restart (RFC 3623) between portier and Debian's FRR 8.4 ospfd, in
//! namespaces made here (prefix `ogr`). portier restarting with FRR as helper, unplanned
//! (the speaker dies as with SIGKILL and starts again from its state file) and planned (a
//! clean stop that sends grace-LSAs, then a start past the dead interval): FRR's route to
//! the announced /32 never leaves its kernel table, polled throughout, and FRR says it
//! helped. FRR restarting gracefully (`graceful-restart prepare ip ospf`, ospfd killed and
//! started again) with portier as helper: portier keeps the adjacency and its own LSAs
//! unchanged, and shows the helper mode.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use portier::ospf::instance::{Announce, GrConfig, IfaceConfig, InstanceStatus};
use portier::ospf::interface::NetworkType;
use portier::ospf::io::{RestartState, Speaker};
use portier::ospf::neighbor::NbrState;
use portier::ospf::packet::Auth;
use portier_tests::frr::{self, Frr};
use portier_tests::netns::ip_in;
use portier_tests::pair::Pair;
use tokio::sync::watch;

const VIP: &str = "203.0.113.78";
const GRACE: u32 = 60;
/// FRR's own grace period, short: its restart note is machine-wide (`FrrRestartPending`).
const FRR_GRACE: u32 = 20;

fn vip_route(ns: &str) -> String {
    ip_in(ns, &["route", "show", &format!("{VIP}/32")]).unwrap_or_default()
}

fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<Duration> {
    portier_tests::wait::until(what, timeout, || Ok(cond()))
}

/// portier's speaker on its own thread inside the portier namespace, with graceful restart.
struct Running {
    shutdown: watch::Sender<bool>,
    restart_on_stop: watch::Sender<bool>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    status: watch::Receiver<Option<InstanceStatus>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _announce: watch::Sender<BTreeMap<Ipv4Addr, Announce>>,
}

impl Running {
    fn start(pair: &Pair, state_file: PathBuf) -> Result<Running> {
        let iface = IfaceConfig {
            name: "eth0".into(),
            area: Ipv4Addr::UNSPECIFIED,
            network: NetworkType::Broadcast,
            hello_interval: 1,
            dead_interval: 4,
            retransmit_interval: 2,
            transmit_delay: 1,
            priority: 0,
            cost: 10,
            auth: Auth::Null,
        };
        let router_id = pair.addr(2);
        let mut set = BTreeMap::new();
        set.insert(VIP.parse()?, Announce::Stub { metric: 10 });
        let (announce, announce_rx) = watch::channel(set);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (kill, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let (status_tx, status) = watch::channel(None);
        let (restart_tx, restart_rx) = std::sync::mpsc::channel();
        let file = std::fs::File::open(format!("/run/netns/{}", pair.ns("p")))?;
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            if nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                return;
            }
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let mut speaker = Speaker::new(router_id, vec![iface]);
                speaker.set_graceful_restart(
                    GrConfig {
                        restart: true,
                        grace_period: GRACE,
                        helper: true,
                    },
                    Some(state_file),
                );
                let _ = restart_tx.send(speaker.restart_on_stop());
                tokio::select! {
                    _ = speaker.run(announce_rx, shutdown_rx, status_tx) => {}
                    _ = kill_rx => {}
                }
            });
        });
        let restart_on_stop = restart_rx
            .recv_timeout(Duration::from_secs(5))
            .context("speaker did not start")?;
        Ok(Running {
            shutdown,
            restart_on_stop,
            kill: Some(kill),
            status,
            thread: Some(thread),
            _announce: announce,
        })
    }

    /// In-process SIGKILL: the runtime is dropped mid-flight.
    fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// A clean stop for a planned graceful restart.
    fn stop_for_restart(&mut self) {
        let _ = self.restart_on_stop.send(true);
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn status<T>(&self, f: impl FnOnce(&InstanceStatus) -> T) -> Option<T> {
        self.status.borrow().as_ref().map(f)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.kill();
    }
}

fn frr_config(pair: &Pair, priority: u8, grace: u32) -> String {
    format!(
        "frr defaults traditional\nhostname {}\nlog file {}/ospfd-gr.log\ndebug ospf graceful-restart\n!\n{}router ospf\n ospf router-id {}\n capability opaque\n graceful-restart grace-period {grace}\n graceful-restart helper enable\n network 10.77.{}.0/24 area 0\n!\n",
        pair.ns("r"),
        frr::dir(&pair.ns("r")).display(),
        frr::interface_config("eth0", false, priority, None),
        pair.addr(1),
        pair.addr(0).octets()[2],
    )
}

/// Polls FRR's route to the VIP until stopped; counts the polls that found none.
struct RouteWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl RouteWatch {
    fn start(ns: String, via: String) -> RouteWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut polls, mut missing) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                polls += 1;
                if !vip_route(&ns).contains(&via) {
                    missing += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (polls, missing)
        });
        RouteWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// (polls, polls without the route).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or((0, 0))
    }
}

/// The restart ended as `completed`, with every own LSA re-learnt (not re-originated past a
/// route the router had).
fn restart_completed(s: &InstanceStatus) -> bool {
    !s.graceful_restart.restarting
        && s.graceful_restart.last_restart_exit.as_deref() == Some("completed")
}

fn diagnose(frr: &Frr, speaker: &Running) -> String {
    format!(
        "FRR ospfd log:\n{}\nFRR debug log:\n{}\nportier: {}",
        frr.log("ospfd"),
        std::fs::read_to_string(frr.dir.join("ospfd-gr.log")).unwrap_or_default(),
        speaker
            .status(|s| serde_json::to_string_pretty(s).unwrap_or_default())
            .unwrap_or_default()
    )
}

/// FRR's helper view (text: 8.4's `detail json` corrupts its heap and ospfd crashes).
fn helper_text(frr: &Frr) -> String {
    frr.vtysh("show ip ospf graceful-restart helper detail")
        .unwrap_or_default()
}

/// FRR's graceful-restart debug log: how often it became helper for `nbr`, and the reasons
/// it gave for each exit.
fn frr_helper_log(frr: &Frr, nbr: Ipv4Addr) -> (usize, Vec<String>) {
    let log = std::fs::read_to_string(frr.dir.join("ospfd-gr.log")).unwrap_or_default();
    let entered = log
        .matches(&format!("becomes a HELPER for the neighbour {nbr}"))
        .count();
    let exit = format!("Exiting from HELPER support to {nbr}, due to ");
    let exits = log
        .lines()
        .filter_map(|l| l.split_once(&exit).map(|(_, r)| r.trim().to_string()))
        .collect();
    (entered, exits)
}

#[test]
fn portier_restarts_gracefully_with_frr_as_helper() -> Result<()> {
    let pair = Pair::new("ogra", 31)?;
    let state_dir = std::env::temp_dir().join("portier-ogra");
    let _ = std::fs::remove_dir_all(&state_dir);
    let state_file = state_dir.join("restart.state");
    let frr = Frr::start(&pair.ns("r"), &pair.ns("r"), &frr_config(&pair, 100, GRACE))?;
    let mut speaker = Running::start(&pair, state_file.clone())?;
    let via = format!("via {}", pair.addr(2));
    let me = pair.addr(2);
    wait("the VIP route via portier", Duration::from_secs(30), || {
        vip_route(&pair.ns("r")).contains(&via)
    })
    .with_context(|| diagnose(&frr, &speaker))?;
    assert!(matches!(
        RestartState::read(&state_file),
        Some(RestartState::Running { .. })
    ));

    // Unplanned: killed, started again at once from the state file.
    let watch = RouteWatch::start(pair.ns("r"), via.clone());
    speaker.kill();
    let mut speaker = Running::start(&pair, state_file.clone())?;
    wait("portier restarting", Duration::from_secs(5), || {
        speaker
            .status(|s| s.graceful_restart.restarting)
            .unwrap_or(false)
    })?;
    wait("the restart to complete", Duration::from_secs(30), || {
        speaker.status(restart_completed).unwrap_or(false)
    })
    .with_context(|| diagnose(&frr, &speaker))?;
    // FRR helped, and left helper mode when our grace-LSA was flushed.
    wait("FRR out of helper mode", Duration::from_secs(10), || {
        frr_helper_log(&frr, me).1.len() == 1
    })
    .with_context(|| diagnose(&frr, &speaker))?;
    let (polls, missing) = watch.finish();
    println!(
        "unplanned restart: {polls} polls of FRR's route, {missing} without it; FRR says:\n{}",
        helper_text(&frr)
    );
    assert_eq!(
        frr_helper_log(&frr, me),
        (1, vec!["Successful graceful restart".to_string()])
    );
    assert_eq!(
        missing, 0,
        "FRR lost the route during the unplanned restart"
    );

    // Planned: grace-LSAs acknowledged before the stop, silence past the dead interval.
    let watch = RouteWatch::start(pair.ns("r"), via.clone());
    speaker.stop_for_restart();
    assert!(
        matches!(
            RestartState::read(&state_file),
            Some(RestartState::Planned { .. })
        ),
        "state file says {:?}",
        RestartState::read(&state_file)
    );
    // FRR keeps helping past its dead interval (4 s): the neighbour stays.
    wait(
        "FRR helping through the planned restart",
        Duration::from_secs(5),
        || frr_helper_log(&frr, me).0 == 2,
    )?;
    let silent = std::time::Instant::now();
    wait("the dead interval to pass", Duration::from_secs(10), || {
        silent.elapsed() > Duration::from_secs(5)
    })?;
    assert!(
        frr.neighbor_state(&pair.addr(2).to_string())?.is_some(),
        "FRR dropped portier within its grace period"
    );
    let speaker = Running::start(&pair, state_file.clone())?;
    wait(
        "the planned restart to complete",
        Duration::from_secs(30),
        || speaker.status(restart_completed).unwrap_or(false),
    )
    .with_context(|| diagnose(&frr, &speaker))?;
    wait("FRR out of helper mode", Duration::from_secs(10), || {
        frr_helper_log(&frr, me).1.len() == 2
    })?;
    let (polls, missing) = watch.finish();
    println!("planned restart: {polls} polls of FRR's route, {missing} without it");
    assert_eq!(
        frr_helper_log(&frr, me).1,
        vec!["Successful graceful restart".to_string(); 2]
    );
    assert_eq!(missing, 0, "FRR lost the route during the planned restart");
    drop(speaker);
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(())
}

/// FRR 8.4 notes a prepared restart in /var/run/frr/ospfd-gr.json whatever the pathspace:
/// every ospfd on the machine starting within the grace period would take it for its own.
/// A test that fails between `prepare` and ospfd's start clears it.
struct FrrRestartPending(bool);

impl Drop for FrrRestartPending {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::fs::write("/var/run/frr/ospfd-gr.json", "{\n  \"instances\":{\n  }\n}");
        }
    }
}

#[test]
fn frr_restarts_gracefully_with_portier_as_helper() -> Result<()> {
    let pair = Pair::new("ogrb", 32)?;
    let state_dir = std::env::temp_dir().join("portier-ogrb");
    let _ = std::fs::remove_dir_all(&state_dir);
    let mut frr = Frr::start(
        &pair.ns("r"),
        &pair.ns("r"),
        &frr_config(&pair, 100, FRR_GRACE),
    )?;
    let speaker = Running::start(&pair, state_dir.join("restart.state"))?;
    let via = format!("via {}", pair.addr(2));
    let frr_id = pair.addr(1);
    wait("the VIP route via portier", Duration::from_secs(30), || {
        vip_route(&pair.ns("r")).contains(&via)
    })
    .with_context(|| diagnose(&frr, &speaker))?;
    // The status is a snapshot a second old at most: wait for one showing the adjacency
    // and our Router-LSA in FRR's hands before counting originations.
    wait(
        "portier's status with FRR Full",
        Duration::from_secs(5),
        || {
            speaker
                .status(|s| {
                    s.counters.lsa_originated > 0
                        && s.interfaces[0].neighbors.iter().any(|n| {
                            n.router_id == frr_id
                                && n.state == NbrState::Full
                                && n.retransmit_list == 0
                        })
                })
                .unwrap_or(false)
        },
    )?;
    let originated = speaker
        .status(|s| s.counters.lsa_originated)
        .unwrap_or_default();

    let mut pending = FrrRestartPending(true);
    let out = frr.vtysh("graceful-restart prepare ip ospf")?;
    if out.contains('%') {
        bail!("FRR refused: {out}");
    }
    wait("portier helping FRR", Duration::from_secs(10), || {
        speaker
            .status(|s| {
                s.graceful_restart
                    .helping
                    .iter()
                    .any(|h| h.router_id == frr_id)
            })
            .unwrap_or(false)
    })
    .with_context(|| diagnose(&frr, &speaker))?;
    frr.kill("ospfd")?;
    // Past FRR's dead interval portier still has it, helping, and still advertises it.
    let silent = std::time::Instant::now();
    wait("the dead interval to pass", Duration::from_secs(10), || {
        silent.elapsed() > Duration::from_secs(5)
    })?;
    let held = speaker
        .status(|s| {
            let nbr = s.interfaces[0]
                .neighbors
                .iter()
                .find(|n| n.router_id == frr_id);
            (
                nbr.map(|n| n.state),
                s.graceful_restart.helping.len(),
                s.lsdb.by_type.get("network").copied(),
                s.lsdb.by_type.get("router").copied(),
            )
        })
        .unwrap_or_default();
    // FRR's Router- and Network-LSA stay in the database: its routes stay computed.
    assert_eq!(
        held,
        (Some(NbrState::Full), 1, Some(1), Some(2)),
        "after the dead interval"
    );
    frr.spawn("ospfd")?;
    pending.0 = false;
    wait(
        "portier out of helper mode",
        Duration::from_secs(40),
        || {
            speaker
                .status(|s| {
                    s.graceful_restart.helping.is_empty()
                        && s.graceful_restart.last_helper_exit.as_deref()
                            == Some(&format!("{frr_id}: completed")[..])
                })
                .unwrap_or(false)
        },
    )
    .with_context(|| diagnose(&frr, &speaker))?;
    wait("FRR Full again", Duration::from_secs(10), || {
        frr.neighbor_state(&pair.addr(2).to_string())
            .ok()
            .flatten()
            .is_some_and(|s| s.starts_with("Full"))
    })?;
    wait("the VIP route via portier", Duration::from_secs(10), || {
        vip_route(&pair.ns("r")).contains(&via)
    })?;
    // portier's own LSAs never changed: FRR's restart was no topology change for it.
    let after = speaker
        .status(|s| s.counters.lsa_originated)
        .unwrap_or_default();
    assert_eq!(
        after, originated,
        "portier re-originated during FRR's restart"
    );
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(())
}
