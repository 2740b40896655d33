//! `portier run`: the orchestrator. It loads the config, starts the parts whose sections are
//! present (each in the one driver loop of `part::driver`), fans reloads out to them and waits
//! for every part's acknowledgment, serves the admin API, and on SIGTERM/SIGINT lets every
//! part do its graceful exit before returning. It knows parts only through the `Part` trait:
//! no part imports this module. `--take-over` and SIGUSR2 hand the node to a new process
//! (`handover`).

pub mod handover;

use crate::admin;
use crate::bus::Bus;
use crate::config::{self, Config};
use crate::part::control::ReloadError;
use crate::part::driver::{self, Ack, Link};
use crate::part::{ConfigUpdate, Control, Part, StatusBoard};
use anyhow::{Context, Result};
use sd_notify::NotifyState;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// How long a taken-over process may take beyond its L7 drain to exit (its other parts'
/// clean stops: VRRP resigning, OSPF's grace-LSAs acknowledged, BGP's Cease).
const OLD_PROCESS_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// How many commands may wait for a part; more are answered "busy".
const COMMAND_QUEUE: usize = 16;

/// The parts the daemon knows: a name, whether a config wants it, and how to run it.
struct PartSpec {
    name: &'static str,
    /// When it stops, in stages, each once the one before has finished.
    stage: Stage,
    wanted: fn(&Config) -> bool,
    spawn: fn(Link) -> JoinHandle<Result<(), String>>,
}

/// Stop stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Most parts, at once.
    First,
    /// The IPIP decapsulator: it carries the tunnelled clients' packets to the L7 requests
    /// that are draining, so it stays until they are done.
    AfterDrain,
    /// BFD: its AdminDown would otherwise reach routers before the routing parts' goodbyes,
    /// and some routers, FRR among them, drop their sessions on it.
    Last,
}

const STAGES: [Stage; 3] = [Stage::First, Stage::AfterDrain, Stage::Last];

fn spec<P: Part>() -> PartSpec {
    PartSpec {
        name: P::NAME,
        stage: if P::NAME == crate::bfd::part::Bfd::NAME {
            Stage::Last
        } else if P::NAME == crate::decap::part::Decap::NAME {
            Stage::AfterDrain
        } else {
            Stage::First
        },
        wanted: P::wanted,
        spawn: |link| tokio::spawn(driver::drive::<P>(link)),
    }
}

/// In start order: the dataplane first, then what announces it.
fn part_specs() -> Vec<PartSpec> {
    vec![
        spec::<crate::l4::part::L4>(),
        spec::<crate::decap::part::Decap>(),
        spec::<crate::bfd::part::Bfd>(),
        spec::<crate::vrrp::part::Vrrp>(),
        spec::<crate::l7::part::L7Part>(),
        spec::<crate::ospf::part::Ospf>(),
        spec::<crate::bgp::part::Bgp>(),
    ]
}

struct Running {
    handle: JoinHandle<Result<(), String>>,
    stage: Stage,
}

/// How this process runs, from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub teardown_on_exit: bool,
    /// Take the node over from the process running it (`portier run --take-over`).
    pub take_over: bool,
}

/// The part that may run beside the node's old process while it hands over: its listeners
/// join the old ones' SO_REUSEPORT groups. Every other part must be alone on a node.
fn shares_node(name: &str) -> bool {
    name == crate::l7::part::L7Part::NAME
}

pub async fn run(config_path: &Path, options: RunOptions) -> Result<()> {
    let config = config::load(config_path)?;
    let node = config.node.name.clone();
    let predecessor = if options.take_over {
        let p = handover::Predecessor::find(&config.admin, &node)?;
        if p.is_none() {
            info!(node = %node, "--take-over: no running process of this node, starting");
        }
        p
    } else {
        None
    };
    // Without a take-over the node must be free (checked before binding anything).
    let mut pid_file = match predecessor {
        None => Some(handover::PidFile::acquire(&config.admin, &node)?),
        Some(_) => None,
    };
    let bus = Bus::new();
    let status = StatusBoard::new();
    let (config_tx, _) = watch::channel(ConfigUpdate {
        generation: 1,
        config: Arc::new(config.clone()),
    });
    let shutdown: [watch::Sender<bool>; STAGES.len()] =
        std::array::from_fn(|_| watch::channel(false).0);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Ack>();
    let (control, mut reload_rx) = Control::new();
    let mut d = Orchestrator {
        config_path: config_path.to_path_buf(),
        config_tx,
        shutdown: std::array::from_fn(|i| shutdown[i].subscribe()),
        ack_tx,
        bus,
        status: status.clone(),
        control: control.clone(),
        running: BTreeMap::new(),
        generation: 1,
        options,
    };
    if let Some(old) = &predecessor {
        take_over(&mut d, &mut ack_rx, &config, old).await?;
        pid_file = Some(handover::PidFile::acquire(&config.admin, &node)?);
    }
    let started = d.start_wanted_parts(&config, |_| true);
    // Every part must have applied the first config before the node is "ready".
    d.await_acks(&mut ack_rx, 1, &started).await?;

    for w in config::warnings(&config)
        .into_iter()
        .chain(config::secret_warnings(config_path, &config))
    {
        warn!("{}: {w}", config_path.display());
    }
    let admin = admin::serve(
        &config.admin,
        &config.node.name,
        status.clone(),
        control.clone(),
    )
    .await?;
    // Handlers first: systemd may send SIGHUP (reload) as soon as it reads READY=1, and the
    // default action of SIGHUP is to terminate.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    info!(node = %config.node.name, parts = ?d.running.keys().collect::<Vec<_>>(), "portier ready");
    notify(&[NotifyState::Ready]);
    // The process we started to take over (SIGUSR2), until it stops us.
    let mut successor: Option<tokio::process::Child> = None;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                notify_reloading();
                let _ = d.reload(&mut ack_rx).await;
                notify(&[NotifyState::Ready]);
            }
            Some(reply) = reload_rx.recv() => {
                notify_reloading();
                let applied = d.reload(&mut ack_rx).await;
                notify(&[NotifyState::Ready]);
                let _ = reply.send(applied);
            }
            _ = usr2.recv(), if successor.is_none() => {
                match handover::spawn_successor(config_path, options.teardown_on_exit) {
                    Ok(child) => {
                        info!(pid = ?child.id(), "SIGUSR2: a new process takes the node over");
                        successor = Some(child);
                    }
                    Err(e) => error!("SIGUSR2: no hand-over: {e:#}"),
                }
            }
            exit = wait_child(&mut successor), if successor.is_some() => {
                // It stops us once it is ready: ending first means it failed.
                error!("the new process exited before taking the node over ({exit:?}); this one keeps running");
                successor = None;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("shutting down");
    // A successor told systemd it is the main process now; our STOPPING=1 would stop the unit.
    if successor.is_none() {
        notify(&[NotifyState::Stopping]);
    }
    drop(admin);
    let mut running = std::mem::take(&mut d.running);
    for (stage, tx) in STAGES.iter().zip(&shutdown) {
        let _ = tx.send(true);
        let names: Vec<&'static str> = running
            .iter()
            .filter(|(_, p)| p.stage == *stage)
            .map(|(n, _)| *n)
            .collect();
        for name in names {
            let Some(part) = running.remove(name) else {
                continue;
            };
            match part.handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!(part = name, "stopped with an error: {e}"),
                Err(e) => error!(part = name, "panicked: {e}"),
            }
        }
    }
    drop(pid_file);
    info!("stopped");
    Ok(())
}

/// `--take-over`: the L7 part starts beside the running process (its listeners join theirs),
/// then that process is stopped and awaited; the caller starts the other parts.
async fn take_over(
    d: &mut Orchestrator,
    acks: &mut mpsc::UnboundedReceiver<Ack>,
    config: &Config,
    old: &handover::Predecessor,
) -> Result<()> {
    info!(pid = old.pid, "taking the node over");
    handover::enable_migration();
    let started = d.start_wanted_parts(config, shares_node);
    d.await_acks(acks, 1, &started).await?;
    // Before the old process goes: systemd (NotifyAccess=all) follows us as the unit's main
    // process instead of taking its exit for the service's.
    notify(&[NotifyState::MainPid(std::process::id())]);
    old.terminate()?;
    info!(
        pid = old.pid,
        "listeners up beside the old process; it stops accepting and drains"
    );
    // Its drain is bounded by its [l7] drain_timeout_ms (ours, unless the file changed); past
    // that and a margin for its other parts' goodbyes, it is stuck.
    let drain = config.l7.as_ref().map_or(0, |l| l.drain_timeout_ms);
    let bound = std::time::Duration::from_millis(drain) + OLD_PROCESS_MARGIN;
    if tokio::time::timeout(bound, old.exited()).await.is_err() {
        warn!(
            pid = old.pid,
            ?bound,
            "the old process has not exited: killing it"
        );
        old.kill()?;
        old.exited().await?;
    }
    info!(
        pid = old.pid,
        "the old process has exited; starting the other parts"
    );
    Ok(())
}

struct Orchestrator {
    config_path: PathBuf,
    config_tx: watch::Sender<ConfigUpdate>,
    /// Each stop stage's signal, indexed by `Stage`.
    shutdown: [watch::Receiver<bool>; STAGES.len()],
    ack_tx: mpsc::UnboundedSender<Ack>,
    bus: Bus,
    status: StatusBoard,
    control: Control,
    running: BTreeMap<&'static str, Running>,
    generation: u64,
    options: RunOptions,
}

impl Orchestrator {
    /// Starts the parts `config` wants (and `filter` lets through) that are not running;
    /// returns their names.
    fn start_wanted_parts(
        &mut self,
        config: &Config,
        filter: fn(&str) -> bool,
    ) -> Vec<&'static str> {
        // A part that retired (its section was removed) starts again when it comes back.
        let retired: Vec<&'static str> = self
            .running
            .iter()
            .filter(|(_, r)| r.handle.is_finished())
            .map(|(n, _)| *n)
            .collect();
        for name in retired {
            self.running.remove(name);
            self.control.unregister(name);
        }
        let mut started = Vec::new();
        for spec in part_specs() {
            if self.running.contains_key(spec.name) || !(spec.wanted)(config) || !filter(spec.name)
            {
                continue;
            }
            let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
            let link = Link {
                config: self.config_tx.subscribe(),
                bus: self.bus.clone(),
                shutdown: self.shutdown[spec.stage as usize].clone(),
                board: self.status.clone(),
                commands: cmd_rx,
                acks: self.ack_tx.clone(),
                teardown_on_exit: self.options.teardown_on_exit,
            };
            let handle = (spec.spawn)(link);
            self.control.register(spec.name, cmd_tx);
            self.running.insert(
                spec.name,
                Running {
                    handle,
                    stage: spec.stage,
                },
            );
            info!(part = spec.name, "started");
            started.push(spec.name);
        }
        started
    }

    /// Waits until each of `parts` acknowledged `generation`; the first failure wins.
    async fn await_acks(
        &mut self,
        acks: &mut mpsc::UnboundedReceiver<Ack>,
        generation: u64,
        parts: &[&'static str],
    ) -> Result<()> {
        let mut pending: Vec<&'static str> = parts.to_vec();
        while !pending.is_empty() {
            let ack = tokio::select! {
                a = acks.recv() => a.context("all parts stopped")?,
                dead = first_finished(&mut self.running) => {
                    let (name, r) = dead;
                    anyhow::bail!("part {name} stopped while applying the config: {r}");
                }
            };
            if ack.generation != generation {
                continue;
            }
            pending.retain(|p| *p != ack.part);
            if let Err(e) = ack.result {
                anyhow::bail!("{}: {}", ack.part, driver::chain(&*e));
            }
        }
        Ok(())
    }

    async fn reload(
        &mut self,
        acks: &mut mpsc::UnboundedReceiver<Ack>,
    ) -> Result<u64, ReloadError> {
        let new = match config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, the running configuration stays:\n{e}");
                return Err(ReloadError::Refused(e.to_string()));
            }
        };
        let old = self.config_tx.borrow().config.clone();
        if new.node != old.node || new.admin != old.admin {
            warn!("reload: [node] and [admin] take effect on restart only");
        }
        self.generation += 1;
        let generation = self.generation;
        self.config_tx.send_replace(ConfigUpdate {
            generation,
            config: Arc::new(new.clone()),
        });
        self.start_wanted_parts(&new, |_| true);
        let running: Vec<&'static str> = self.running.keys().copied().collect();
        match self.await_acks(acks, generation, &running).await {
            Ok(()) => {
                info!(generation, "reload applied");
                Ok(generation)
            }
            Err(e) => {
                error!("reload failed: {e:#}");
                Err(ReloadError::Failed(format!("{e:#}")))
            }
        }
    }
}

/// Tells systemd (Type=notify) where the node is; nothing without NOTIFY_SOCKET.
fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!("cannot notify systemd: {e}");
    }
}

/// RELOADING=1 with the time it started, as Type=notify-reload wants (systemd 253+); the
/// daemon answers READY=1 once every part has acknowledged the reload, applied or not.
fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// The exit of `child`; never, without one.
async fn wait_child(
    child: &mut Option<tokio::process::Child>,
) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// Resolves when any running part's task has ended (it should only end on shutdown).
async fn first_finished(running: &mut BTreeMap<&'static str, Running>) -> (&'static str, String) {
    if running.is_empty() {
        return std::future::pending().await;
    }
    let (names, handles): (Vec<_>, Vec<_>) =
        running.iter_mut().map(|(n, r)| (*n, &mut r.handle)).unzip();
    let (result, i, _) = futures::future::select_all(handles).await;
    let name = names[i];
    let why = match result {
        Ok(Ok(())) => "returned".to_string(),
        Ok(Err(e)) => e,
        Err(e) => format!("panicked: {e}"),
    };
    running.remove(name);
    (name, why)
}
