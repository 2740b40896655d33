//! The L7 proxy as a part of the daemon: follows config reloads, answers drain and weight
//! commands, takes what Docker discovery reports, and on shutdown stops accepting and
//! drains in-flight requests.

use super::L7;
use crate::config::{Config, DockerDiscoveryConfig};
use crate::discovery::docker::source::{Report, Source};
use crate::part::board::PartBoard;
use crate::part::{Applied, ApplyError, Command, CommandError, Env, Part, Reply};
use std::sync::Arc;
use std::time::Duration;

pub struct L7Part {
    l7: L7,
    /// Running while the config has `[discovery.docker]`.
    docker: Option<Source>,
    /// The source's latest report, for status and metrics.
    report: Option<Report>,
}

fn docker_config(config: &Config) -> Option<&DockerDiscoveryConfig> {
    config.discovery.as_ref().and_then(|d| d.docker.as_ref())
}

impl L7Part {
    /// Starts, restarts or stops the discovery source for this config.
    fn follow_discovery(&mut self, config: &Config) -> Result<(), ApplyError> {
        let wanted = docker_config(config);
        if self.docker.as_ref().map(|s| &s.config) == wanted {
            return Ok(());
        }
        // A new source starts from nothing: what the old one found stays in force until
        // the new one has listed the engine (see `woken`), so a reload empties no pool.
        self.docker = wanted.map(Source::start);
        if self.docker.is_none() {
            self.report = None;
            let defaults = self.l7.discovery_defaults.clone();
            self.l7.apply_discovered(&Default::default(), &defaults)?;
        }
        Ok(())
    }
}

impl Part for L7Part {
    const NAME: &'static str = "l7";
    /// Metrics and status are published this often.
    const TICK: Duration = Duration::from_secs(1);
    type Wake = ();

    fn wanted(config: &Config) -> bool {
        config.l7.is_some()
    }

    async fn start(_env: Env, config: &Arc<Config>) -> Result<Self, ApplyError> {
        let mut l7 = L7::new();
        if let Some(d) = docker_config(config) {
            l7.discovery_defaults = d.defaults.clone();
        }
        l7.apply(&config.l7.clone().unwrap_or_default())?;
        let mut part = L7Part {
            l7,
            docker: None,
            report: None,
        };
        part.follow_discovery(config)?;
        Ok(part)
    }

    async fn apply(&mut self, config: &Arc<Config>) -> Result<Applied, ApplyError> {
        let next = config.l7.clone().unwrap_or_default();
        let defaults = docker_config(config)
            .map(|d| d.defaults.clone())
            .unwrap_or_else(|| self.l7.discovery_defaults.clone());
        if next != *self.l7.config() || defaults != self.l7.discovery_defaults {
            self.l7.discovery_defaults = defaults;
            self.l7.apply(&next)?;
        }
        self.follow_discovery(config)?;
        Ok(Applied::Running)
    }

    async fn command(&mut self, command: Command) -> Result<Reply, CommandError> {
        self.l7.command(command)
    }

    async fn wake(&mut self) {
        match &mut self.docker {
            // An error means the source task is gone (only when dropped): wait for nothing.
            Some(s) => {
                if s.reports.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }

    async fn woken(&mut self, _: ()) {
        let Some(source) = &mut self.docker else {
            return;
        };
        let report = source.reports.borrow_and_update().clone();
        // Until its first listing a source knows nothing; what is in force stays.
        if report.resyncs > 0 {
            let defaults = source.config.defaults.clone();
            if let Err(e) = self.l7.apply_discovered(&report.discovered, &defaults) {
                tracing::error!("l7: discovered servers not applied: {e}");
            }
        }
        self.report = Some(report);
    }

    fn publish(&mut self, board: &PartBoard) {
        let mut status = self.l7.status();
        let mut metrics = self.l7.metrics();
        if let Some(r) = &self.report {
            status["discovery"] = serde_json::json!({
                "docker": super::discovery_status::status(r, self.l7.refused()),
            });
            super::discovery_status::metrics(&mut metrics, r, self.l7.refused());
        }
        board.set(status);
        board.set_metrics(metrics);
    }

    async fn stop(self) {
        tracing::info!("l7: stopped accepting, draining in-flight requests");
        drop(self.docker);
        self.l7.shutdown().await;
    }
}
