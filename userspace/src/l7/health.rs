//! Active HTTP health checks for pool servers, one task per (pool, server), driven by the
//! shared checker in `crate::health`.

use crate::config::HttpHealthConfig;
use crate::health::{HealthState, Probe, ProbeError, run_probe};
use crate::l7::pool::Server;
use crate::l7::snapshot::Snapshot;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

struct Check {
    config: HttpHealthConfig,
    server: Arc<Server>,
    task: JoinHandle<()>,
}

#[derive(Default)]
pub struct HealthChecks {
    checks: HashMap<(String, SocketAddr), Check>,
}

impl HealthChecks {
    /// Starts checks for new servers, stops those of removed ones, keeps unchanged ones (and
    /// their rise/fall progress).
    pub fn apply(&mut self, snapshot: &Snapshot) {
        let mut wanted = HashMap::new();
        for pool in snapshot.pools.values() {
            for server in &pool.servers {
                match &pool.config.health {
                    Some(h) => {
                        wanted.insert(
                            (pool.name.clone(), server.address),
                            (h.clone(), server.clone()),
                        );
                    }
                    // Without checks a server is taken as healthy.
                    None => server.set_healthy(true),
                }
            }
        }
        self.checks.retain(|key, check| {
            let keep = wanted.get(key).is_some_and(|(config, server)| {
                *config == check.config && Arc::ptr_eq(server, &check.server)
            });
            if !keep {
                check.task.abort();
            }
            keep
        });
        for (key, (config, server)) in wanted {
            if self.checks.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(check_loop(key.0.clone(), server.clone(), config.clone()));
            self.checks.insert(
                key,
                Check {
                    config,
                    server,
                    task,
                },
            );
        }
    }

    pub fn stop(&mut self) {
        for (_, c) in self.checks.drain() {
            c.task.abort();
        }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn check_loop(pool: String, server: Arc<Server>, config: HttpHealthConfig) {
    let probe = Probe::Http {
        addr: server.address,
        method: "GET".into(),
        path: config.path.clone(),
        host: server.address.to_string(),
        expect_status: config.status,
    };
    let timeout = Duration::from_millis(config.timeout_ms);
    let mut state = HealthState::new();
    if !server.healthy() {
        // A server carried over from the previous config as down stays down until it rises.
        state.record(false, 1, 1);
    }
    let mut tick = tokio::time::interval(Duration::from_millis(config.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = match server.tls() {
            None => run_probe(&probe, timeout).await,
            Some(tls) => {
                let host = tls
                    .sni()
                    .map_or_else(|| server.address.to_string(), str::to_owned);
                tls_probe(&server, &config, &host, timeout).await
            }
        };
        if let Some(up) = state.record(result.is_ok(), config.rise, config.fall) {
            server.set_healthy(up);
            match result {
                Ok(()) => tracing::info!(%pool, server = %server.address, "server up"),
                Err(why) => {
                    tracing::warn!(%pool, server = %server.address, "server down: {why}")
                }
            }
        }
    }
}

/// A check of a TLS pool's server: the same request, over the pool's TLS and protocol.
async fn tls_probe(
    server: &Server,
    config: &HttpHealthConfig,
    host: &str,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let status = tokio::time::timeout(timeout, server.probe(&config.path, host, timeout))
        .await
        .map_err(|_| ProbeError::Timeout)?
        .map_err(ProbeError::Io)?;
    if status != config.status {
        return Err(ProbeError::Status {
            got: status,
            expected: config.status,
        });
    }
    Ok(())
}
