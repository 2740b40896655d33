//! The L7 proxy as a part of the daemon: follows config reloads, answers drain and weight
//! commands, and on shutdown stops accepting and drains in-flight requests.

use super::L7;
use crate::config::Config;
use crate::part::board::PartBoard;
use crate::part::{Applied, ApplyError, Command, CommandError, Env, Part, Reply};
use std::sync::Arc;
use std::time::Duration;

pub struct L7Part {
    l7: L7,
}

impl Part for L7Part {
    const NAME: &'static str = "l7";
    /// Metrics and status are published this often.
    const TICK: Duration = Duration::from_secs(1);
    type Wake = std::convert::Infallible;

    fn wanted(config: &Config) -> bool {
        config.l7.is_some()
    }

    async fn start(_env: Env, config: &Arc<Config>) -> Result<Self, ApplyError> {
        let mut l7 = L7::new();
        l7.apply(&config.l7.clone().unwrap_or_default())?;
        Ok(L7Part { l7 })
    }

    async fn apply(&mut self, config: &Arc<Config>) -> Result<Applied, ApplyError> {
        let next = config.l7.clone().unwrap_or_default();
        if next != self.l7.config {
            self.l7.apply(&next)?;
        }
        Ok(Applied::Running)
    }

    async fn command(&mut self, command: Command) -> Result<Reply, CommandError> {
        self.l7.command(command)
    }

    fn publish(&mut self, board: &PartBoard) {
        board.set(self.l7.status());
        board.set_metrics(self.l7.metrics());
    }

    async fn stop(self) {
        tracing::info!("l7: stopped accepting, draining in-flight requests");
        self.l7.shutdown().await;
    }
}
