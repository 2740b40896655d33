//! The I/O edge of Docker discovery: a task that talks to the engine (Docker's API, or
//! Podman's compatible one) with bollard, feeds [`Inventory`] and publishes what it found.
//!
//! Each session subscribes to events first (from a second before now), then lists and
//! inspects the running containers, so nothing that happens during the listing is lost;
//! duplicates only cause a second inspect. When the engine goes away the last known
//! containers stay in force, marked stale, and the task reconnects with back-off; the
//! next session's listing replaces them (what left meanwhile goes, what came is added).

use super::container::Container;
use super::events::{Action, action};
use super::inventory::{Discovered, Inventory};
use crate::config::DockerDiscoveryConfig;
use bollard::Docker;
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the source knows, for the L7 part (servers, routes) and for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub endpoint: String,
    pub connected: bool,
    /// The engine is unreachable and these are the containers it last reported.
    pub stale: bool,
    pub last_error: Option<String>,
    pub discovered: Discovered,
    pub containers: usize,
    pub over_limit: u64,
    pub events: u64,
    pub resyncs: u64,
    pub disconnects: u64,
}

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Bound on one API call (not on the event stream, which stays open).
const REQUEST_TIMEOUT_S: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach the engine at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: bollard::errors::Error,
    },
    #[error("{what}: {source}")]
    Api {
        what: &'static str,
        source: bollard::errors::Error,
    },
    #[error("the engine closed the event stream")]
    StreamEnded,
}

pub struct Source {
    pub config: DockerDiscoveryConfig,
    pub reports: watch::Receiver<Report>,
    task: JoinHandle<()>,
}

impl Source {
    pub fn start(config: &DockerDiscoveryConfig) -> Source {
        let (tx, reports) = watch::channel(Report {
            endpoint: config.endpoint.clone(),
            ..Report::default()
        });
        let task = tokio::spawn(run(config.clone(), tx));
        Source {
            config: config.clone(),
            reports,
            task,
        }
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(config: DockerDiscoveryConfig, tx: watch::Sender<Report>) {
    let mut inventory = Inventory::new(
        &config.label_prefix,
        config.network.as_deref(),
        config.max_containers,
    );
    let mut report = tx.borrow().clone();
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut synced = false;
        let e = session(&config, &mut inventory, &mut report, &tx, &mut synced).await;
        if synced {
            backoff = BACKOFF_MIN;
        }
        let was_connected = report.connected;
        report.connected = false;
        report.stale = !inventory.is_empty();
        report.last_error = Some(e.to_string());
        if was_connected {
            report.disconnects += 1;
            tracing::warn!(endpoint = %config.endpoint, kept = inventory.len(), "docker discovery: {e}; keeping the last known containers");
        } else {
            tracing::debug!(endpoint = %config.endpoint, "docker discovery: {e}");
        }
        tx.send_replace(report.clone());
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn connect(endpoint: &str) -> Result<Docker, bollard::errors::Error> {
    let version = bollard::API_DEFAULT_VERSION;
    match endpoint.strip_prefix("unix://") {
        Some(path) => Docker::connect_with_unix(path, REQUEST_TIMEOUT_S, version),
        None => Docker::connect_with_http(endpoint, REQUEST_TIMEOUT_S, version),
    }
}

async fn session(
    config: &DockerDiscoveryConfig,
    inventory: &mut Inventory,
    report: &mut Report,
    tx: &watch::Sender<Report>,
    synced: &mut bool,
) -> SourceError {
    match follow(config, inventory, report, tx, synced).await {
        Ok(()) => SourceError::StreamEnded,
        Err(e) => e,
    }
}

async fn follow(
    config: &DockerDiscoveryConfig,
    inventory: &mut Inventory,
    report: &mut Report,
    tx: &watch::Sender<Report>,
    synced: &mut bool,
) -> Result<(), SourceError> {
    let connect_error = |source| SourceError::Connect {
        endpoint: config.endpoint.clone(),
        source,
    };
    // The engine's newest API may be older than bollard's (Docker 20.10 has 1.41).
    let docker = connect(&config.endpoint)
        .map_err(connect_error)?
        .negotiate_version()
        .await
        .map_err(connect_error)?;
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().saturating_sub(1));
    let filters: HashMap<&str, Vec<&str>> = [("type", vec!["container", "network"])].into();
    let mut events = docker.events(Some(
        EventsOptionsBuilder::new()
            .since(&since.to_string())
            .filters(&filters)
            .build(),
    ));

    let listed = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(false).build()))
        .await
        .map_err(|source| SourceError::Api {
            what: "listing containers",
            source,
        })?;
    let prefix = format!("{}.", config.label_prefix);
    let mut all = Vec::new();
    for summary in listed {
        let ours = summary
            .labels
            .as_ref()
            .is_some_and(|l| l.keys().any(|k| k.starts_with(&prefix)));
        let Some(id) = summary.id.filter(|_| ours) else {
            continue;
        };
        if let Some(c) = inspect(&docker, &id).await? {
            all.push(c);
        }
    }
    inventory.resync(all);
    *synced = true;
    report.connected = true;
    report.stale = false;
    report.last_error = None;
    report.resyncs += 1;
    publish(inventory, report, tx);
    tracing::info!(endpoint = %config.endpoint, containers = inventory.len(), "docker discovery: synchronised");

    while let Some(event) = events.next().await {
        let event = event.map_err(|source| SourceError::Api {
            what: "event stream",
            source,
        })?;
        report.events += 1;
        match action(&event) {
            Action::Ignore => continue,
            Action::Inspect(id) => match inspect(&docker, &id).await? {
                Some(c) => inventory.upsert(c),
                None => inventory.remove(&id),
            },
            Action::Remove(id) => inventory.remove(&id),
            Action::Signal(id, n) => inventory.signalled(&id, n),
        }
        publish(inventory, report, tx);
    }
    Ok(())
}

/// `None` when the container is gone already.
async fn inspect(docker: &Docker, id: &str) -> Result<Option<Container>, SourceError> {
    match docker
        .inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(r) => Ok(Container::from_inspect(&r)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(source) => Err(SourceError::Api {
            what: "inspecting a container",
            source,
        }),
    }
}

fn publish(inventory: &Inventory, report: &mut Report, tx: &watch::Sender<Report>) {
    report.discovered = inventory.discovered();
    report.containers = inventory.len();
    report.over_limit = inventory.over_limit;
    tx.send_if_modified(|current| {
        if *current == *report {
            false
        } else {
            *current = report.clone();
            true
        }
    });
}
