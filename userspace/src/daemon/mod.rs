//! `portier run`: the orchestrator. It loads the config, starts the parts whose sections are
//! present (each in the one driver loop of `part::driver`), fans reloads out to them and waits
//! for every part's acknowledgment, serves the admin API, and on SIGTERM/SIGINT lets every
//! part do its graceful exit before returning. It knows parts only through the `Part` trait:
//! no part imports this module.

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

/// How many commands may wait for a part; more are answered "busy".
const COMMAND_QUEUE: usize = 16;

/// The parts the daemon knows: a name, whether a config wants it, and how to run it.
struct PartSpec {
    name: &'static str,
    /// Stops after the others: parts they use while stopping (BFD: its AdminDown would
    /// otherwise reach routers before the routing parts' goodbyes, and some routers, FRR
    /// among them, drop their sessions on it).
    late: bool,
    wanted: fn(&Config) -> bool,
    spawn: fn(Link) -> JoinHandle<Result<(), String>>,
}

fn spec<P: Part>() -> PartSpec {
    PartSpec {
        name: P::NAME,
        late: P::NAME == crate::bfd::part::Bfd::NAME,
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
    late: bool,
}

/// How this process runs, from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub teardown_on_exit: bool,
}

pub async fn run(config_path: &Path, options: RunOptions) -> Result<()> {
    let config = config::load(config_path)?;
    let bus = Bus::new();
    let status = StatusBoard::new();
    let (config_tx, _) = watch::channel(ConfigUpdate {
        generation: 1,
        config: Arc::new(config.clone()),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (late_shutdown_tx, late_shutdown_rx) = watch::channel(false);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Ack>();
    let (control, mut reload_rx) = Control::new();
    let mut d = Orchestrator {
        config_path: config_path.to_path_buf(),
        config_tx,
        shutdown_rx,
        late_shutdown_rx,
        ack_tx,
        bus,
        status: status.clone(),
        control: control.clone(),
        running: BTreeMap::new(),
        generation: 1,
        options,
    };
    d.start_wanted_parts(&config);
    // Every part must have applied the first config before the node is "ready".
    d.await_acks(&mut ack_rx, 1).await?;

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
    info!(node = %config.node.name, parts = ?d.running.keys().collect::<Vec<_>>(), "portier ready");
    notify(&[NotifyState::Ready]);
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
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("shutting down");
    notify(&[NotifyState::Stopping]);
    drop(admin);
    let (late, early): (Vec<_>, Vec<_>) = std::mem::take(&mut d.running)
        .into_iter()
        .partition(|(_, p)| p.late);
    for (parts, tx) in [(early, &shutdown_tx), (late, &late_shutdown_tx)] {
        let _ = tx.send(true);
        for (name, part) in parts {
            match part.handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!(part = name, "stopped with an error: {e}"),
                Err(e) => error!(part = name, "panicked: {e}"),
            }
        }
    }
    info!("stopped");
    Ok(())
}

struct Orchestrator {
    config_path: PathBuf,
    config_tx: watch::Sender<ConfigUpdate>,
    shutdown_rx: watch::Receiver<bool>,
    late_shutdown_rx: watch::Receiver<bool>,
    ack_tx: mpsc::UnboundedSender<Ack>,
    bus: Bus,
    status: StatusBoard,
    control: Control,
    running: BTreeMap<&'static str, Running>,
    generation: u64,
    options: RunOptions,
}

impl Orchestrator {
    fn start_wanted_parts(&mut self, config: &Config) {
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
        for spec in part_specs() {
            if self.running.contains_key(spec.name) || !(spec.wanted)(config) {
                continue;
            }
            let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
            let link = Link {
                config: self.config_tx.subscribe(),
                bus: self.bus.clone(),
                shutdown: if spec.late {
                    self.late_shutdown_rx.clone()
                } else {
                    self.shutdown_rx.clone()
                },
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
                    late: spec.late,
                },
            );
            info!(part = spec.name, "started");
        }
    }

    /// Waits until every running part acknowledged `generation`; the first failure wins.
    async fn await_acks(
        &mut self,
        acks: &mut mpsc::UnboundedReceiver<Ack>,
        generation: u64,
    ) -> Result<()> {
        let mut pending: Vec<&'static str> = self.running.keys().copied().collect();
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
        self.start_wanted_parts(&new);
        match self.await_acks(acks, generation).await {
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
