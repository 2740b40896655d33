//! `portier run`: one process, several parts (L4 balancer, L7 proxy, VRRP, OSPF) on one tokio
//! runtime. The daemon loads the config, starts the parts whose sections are present, fans
//! reloads out to them, serves the admin API, and on SIGTERM/SIGINT lets every part do its
//! graceful exit before returning.

mod decap;
pub mod l4;
mod status;

use crate::admin;
use crate::bus::Bus;
use crate::config::{self, Config};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub use status::StatusBoard;

/// A configuration as handed to the parts: `generation` counts applied loads.
#[derive(Debug, Clone)]
pub struct ConfigUpdate {
    pub generation: u64,
    pub config: Arc<Config>,
}

/// What a part gets from the daemon.
pub struct PartContext {
    /// The current config; changes on every accepted reload.
    pub config: watch::Receiver<ConfigUpdate>,
    pub bus: Bus,
    /// Becomes `true` when the daemon stops: do the graceful exit, then return.
    pub shutdown: watch::Receiver<bool>,
    pub status: StatusBoard,
    /// Runtime commands addressed to this part (from the admin API).
    pub commands: mpsc::Receiver<Command>,
    /// Undo everything in the kernel on exit (XDP programs, pins) instead of leaving the
    /// dataplane running for the next instance.
    pub teardown_on_exit: bool,
    acks: mpsc::UnboundedSender<Ack>,
    name: &'static str,
}

impl PartContext {
    /// Tells the daemon that this part has applied config `generation` (or could not).
    pub fn applied(&self, generation: u64, result: Result<(), String>) {
        let _ = self.acks.send(Ack {
            part: self.name,
            generation,
            result,
        });
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A runtime command for a part, with where to send the answer.
#[derive(Debug)]
pub struct Command {
    pub verb: String,
    pub args: BTreeMap<String, String>,
    pub reply: oneshot::Sender<Result<serde_json::Value, String>>,
}

#[derive(Debug)]
struct Ack {
    part: &'static str,
    generation: u64,
    result: Result<(), String>,
}

type PartFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// The parts the daemon knows: a name, whether a config wants it, and how to run it.
struct PartSpec {
    name: &'static str,
    wanted: fn(&Config) -> bool,
    run: fn(PartContext) -> PartFuture,
}

fn part_specs() -> Vec<PartSpec> {
    vec![
        PartSpec {
            name: "l4",
            wanted: |c| !c.services.is_empty(),
            run: |ctx| Box::pin(l4::run(ctx)),
        },
        PartSpec {
            name: "decap",
            wanted: |c| c.decap.is_some(),
            run: |ctx| Box::pin(decap::run(ctx)),
        },
        PartSpec {
            name: "vrrp",
            wanted: |c| c.vrrp.is_some(),
            run: |ctx| Box::pin(crate::vrrp::run(ctx)),
        },
        PartSpec {
            name: "l7",
            wanted: |c| c.l7.is_some(),
            run: |ctx| Box::pin(crate::l7::run(ctx)),
        },
        PartSpec {
            name: "ospf",
            wanted: |c| c.ospf.is_some(),
            run: |ctx| Box::pin(crate::ospf::part::run(ctx)),
        },
    ]
}

struct Running {
    handle: JoinHandle<Result<()>>,
}

/// Routes admin commands to parts.
#[derive(Clone, Default)]
pub struct Control {
    parts: Arc<std::sync::Mutex<BTreeMap<&'static str, mpsc::Sender<Command>>>>,
    reload: Option<mpsc::Sender<oneshot::Sender<Result<u64, String>>>>,
}

impl Control {
    /// Sends `verb` to `part` and waits for its answer.
    pub async fn command(
        &self,
        part: &str,
        verb: &str,
        args: BTreeMap<String, String>,
    ) -> Result<serde_json::Value, String> {
        let tx = self
            .parts
            .lock()
            .map_err(|_| "internal error".to_string())?
            .get(part)
            .cloned()
            .ok_or_else(|| format!("part {part} is not running on this node"))?;
        let (reply, rx) = oneshot::channel();
        tx.send(Command {
            verb: verb.to_string(),
            args,
            reply,
        })
        .await
        .map_err(|_| format!("part {part} stopped"))?;
        rx.await
            .map_err(|_| format!("part {part} dropped the command"))?
    }

    /// Reloads the config file, as SIGHUP does; answers with the applied generation.
    pub async fn reload(&self) -> Result<u64, String> {
        let tx = self.reload.as_ref().ok_or("reload unavailable")?;
        let (reply, rx) = oneshot::channel();
        tx.send(reply).await.map_err(|_| "daemon stopping")?;
        rx.await.map_err(|_| "daemon stopping".to_string())?
    }
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
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Ack>();
    let (reload_tx, mut reload_rx) = mpsc::channel(4);
    let control = Control {
        parts: Arc::default(),
        reload: Some(reload_tx),
    };
    let mut d = Orchestrator {
        config_path: config_path.to_path_buf(),
        config_tx,
        shutdown_rx,
        ack_tx,
        bus,
        status: status.clone(),
        control: control.clone(),
        running: BTreeMap::new(),
        generation: 1,
        options,
    };
    d.start_wanted_parts(&config)?;
    // Every part must have applied the first config before the node is "ready".
    d.await_acks(&mut ack_rx, 1).await?;

    let admin_task = match &config.admin {
        Some(a) => Some(admin::serve(a.listen, status.clone(), control.clone()).await?),
        None => None,
    };
    info!(node = %config.node.name, parts = ?d.running.keys().collect::<Vec<_>>(), "portier ready");

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => { let _ = d.reload(&mut ack_rx).await; }
            Some(reply) = reload_rx.recv() => { let _ = reply.send(d.reload(&mut ack_rx).await); }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("shutting down");
    if let Some(t) = admin_task {
        t.abort();
    }
    let _ = shutdown_tx.send(true);
    for (name, part) in std::mem::take(&mut d.running) {
        match part.handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(part = name, "stopped with an error: {e:#}"),
            Err(e) => error!(part = name, "panicked: {e}"),
        }
    }
    info!("stopped");
    Ok(())
}

struct Orchestrator {
    config_path: PathBuf,
    config_tx: watch::Sender<ConfigUpdate>,
    shutdown_rx: watch::Receiver<bool>,
    ack_tx: mpsc::UnboundedSender<Ack>,
    bus: Bus,
    status: StatusBoard,
    control: Control,
    running: BTreeMap<&'static str, Running>,
    generation: u64,
    options: RunOptions,
}

impl Orchestrator {
    fn start_wanted_parts(&mut self, config: &Config) -> Result<()> {
        for spec in part_specs() {
            if self.running.contains_key(spec.name) || !(spec.wanted)(config) {
                continue;
            }
            let (cmd_tx, cmd_rx) = mpsc::channel(16);
            let ctx = PartContext {
                config: self.config_tx.subscribe(),
                bus: self.bus.clone(),
                shutdown: self.shutdown_rx.clone(),
                status: self.status.clone(),
                commands: cmd_rx,
                teardown_on_exit: self.options.teardown_on_exit,
                acks: self.ack_tx.clone(),
                name: spec.name,
            };
            let handle = tokio::spawn((spec.run)(ctx));
            self.control
                .parts
                .lock()
                .map_err(|_| anyhow::anyhow!("control lock poisoned"))?
                .insert(spec.name, cmd_tx);
            self.running.insert(spec.name, Running { handle });
            info!(part = spec.name, "started");
        }
        Ok(())
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
                anyhow::bail!("{}: {e}", ack.part);
            }
        }
        Ok(())
    }

    async fn reload(&mut self, acks: &mut mpsc::UnboundedReceiver<Ack>) -> Result<u64, String> {
        let new = match config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, the running configuration stays:\n{e}");
                return Err(e.to_string());
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
        if let Err(e) = self.start_wanted_parts(&new) {
            error!("reload failed: {e:#}");
            return Err(e.to_string());
        }
        match self.await_acks(acks, generation).await {
            Ok(()) => {
                info!(generation, "reload applied");
                Ok(generation)
            }
            Err(e) => {
                error!("reload failed: {e:#}");
                Err(format!("{e:#}"))
            }
        }
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
        Ok(Err(e)) => format!("{e:#}"),
        Err(e) => format!("panicked: {e}"),
    };
    running.remove(name);
    (name, why)
}
