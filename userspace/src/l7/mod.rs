//! The L7 HTTP proxy: listeners terminate HTTP/1.x and HTTP/2 (plain or TLS), route each
//! request by host and path to a pool, and forward it to one of the pool's servers.
//!
//! Requests read an immutable [`snapshot::Snapshot`] swapped atomically on reload; listeners
//! are restarted only when their own settings change, and then the new socket is bound (with
//! SO_REUSEPORT) before the old one stops, so a reload never refuses a connection.

pub mod attempt;
pub mod balance;
pub mod body;
pub mod chunked;
pub mod client_stream;
pub mod clock;
pub mod coalesce;
pub mod discovery_status;
pub mod downstream;
pub mod fast;
pub mod headers;
pub mod health;
pub mod latency;
pub mod listener;
pub mod merge;
pub mod metrics;
pub mod overrides;
pub mod part;
pub mod path;
pub mod pool;
pub mod prefixed;
pub mod proxy;
pub mod proxy_protocol;
pub mod raw;
pub mod response_fields;
pub mod router;
pub mod snapshot;
pub mod splice;
pub mod timeouts;
pub mod tls;
pub mod upstream_tls;
pub mod workers;

use crate::config::{L7Config, ListenerConfig, PoolConfig};
use crate::discovery::docker::inventory::Discovered;
use crate::part::command::{Command, CommandError, Reply};
use listener::Listener;
use metrics::ListenerMetrics;
use snapshot::{Shared, Snapshot};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct L7Error(String);

pub struct L7 {
    shared: Arc<Shared>,
    listeners: HashMap<String, Listener>,
    listener_metrics: HashMap<String, Arc<ListenerMetrics>>,
    health: health::HealthChecks,
    /// The configured settings, before discovery and runtime overrides.
    config: L7Config,
    /// What discovery reported last, and the settings of pools only it makes.
    discovered: Discovered,
    discovery_defaults: PoolConfig,
    /// The file and discovery together (before overrides): what commands are checked against.
    merged: merge::Merged,
    overrides: overrides::Overrides,
    /// Started with the first config (their count is read once).
    workers: Option<workers::Workers>,
    /// The workers' coalescing settings, which a reload changes in place.
    coalesce: Arc<coalesce::Coalesce>,
}

impl Default for L7 {
    fn default() -> Self {
        Self::new()
    }
}

impl L7 {
    pub fn new() -> L7 {
        L7 {
            shared: Arc::new(Shared::default()),
            listeners: HashMap::new(),
            listener_metrics: HashMap::new(),
            health: health::HealthChecks::default(),
            config: L7Config::default(),
            discovered: Discovered::default(),
            discovery_defaults: crate::config::discovery::pool_defaults(),
            merged: merge::Merged::default(),
            overrides: overrides::Overrides::default(),
            workers: None,
            coalesce: Arc::default(),
        }
    }

    /// Applies a config: routes and pools by swapping the snapshot, listeners by starting
    /// new and changed ones before retiring the old. Runtime overrides (drain, weight) of
    /// servers the config keeps stay in force. On error nothing changes.
    pub fn apply(&mut self, config: &L7Config) -> Result<(), L7Error> {
        let (discovered, defaults) = (self.discovered.clone(), self.discovery_defaults.clone());
        self.rebuild(config, &discovered, &defaults)
    }

    /// Takes what discovery found, through the same snapshot swap as a reload: servers that
    /// stay keep their connections and counters, removed ones finish their requests.
    pub fn apply_discovered(
        &mut self,
        discovered: &Discovered,
        defaults: &PoolConfig,
    ) -> Result<(), L7Error> {
        if *discovered == self.discovered && *defaults == self.discovery_defaults {
            return Ok(());
        }
        let config = self.config.clone();
        self.rebuild(&config, discovered, defaults)
    }

    /// The configured settings as read from the file.
    pub fn config(&self) -> &L7Config {
        &self.config
    }

    fn rebuild(
        &mut self,
        config: &L7Config,
        discovered: &Discovered,
        defaults: &PoolConfig,
    ) -> Result<(), L7Error> {
        let merged = merge::merge(config, discovered, defaults);
        let mut overrides = self.overrides.clone();
        overrides.retain_existing(&merged.config);
        self.apply_effective(&overrides.apply_to(&merged.config))?;
        upstream_tls::warn_insecure(&self.merged.config.pools, &merged.config.pools);
        self.overrides = overrides;
        self.config = config.clone();
        self.discovered = discovered.clone();
        self.discovery_defaults = defaults.clone();
        self.merged = merged;
        Ok(())
    }

    /// Containers the config made discovery refuse: short id -> why.
    pub fn refused(&self) -> &std::collections::BTreeMap<String, String> {
        &self.merged.refused
    }

    /// A runtime command: `drain`, `undrain` or `weight` of a pool's server; the answer names
    /// the server's weight now in force.
    pub fn command(&mut self, command: Command) -> Result<Reply, CommandError> {
        let Command::Server {
            pool,
            server,
            change,
        } = command
        else {
            return Err(CommandError::Unsupported {
                part: "l7",
                verb: command.verb(),
            });
        };
        let change = overrides::Change::checked(&self.merged.config, pool, server, change.weight())
            .map_err(CommandError::NoSuchTarget)?;
        let mut next = self.overrides.clone();
        next.set(&change);
        let merged = self.merged.config.clone();
        self.apply_effective(&next.apply_to(&merged))
            .map_err(|e| CommandError::Failed(e.into()))?;
        self.overrides = next;
        let snap = self.shared.load();
        let weight = snap
            .pools
            .get(&change.pool)
            .and_then(|p| p.servers.iter().find(|s| s.address == change.server))
            .map(|s| s.weight());
        tracing::info!(pool = %change.pool, server = %change.server, ?weight, "l7: runtime change applied");
        Ok(serde_json::json!({
            "pool": change.pool,
            "server": change.server.to_string(),
            "weight": weight,
        }))
    }

    fn apply_effective(&mut self, config: &L7Config) -> Result<(), L7Error> {
        let tls = upstream_tls::for_pools(&config.pools).map_err(L7Error)?;
        self.coalesce
            .set(config.coalesce_us, config.coalesce_min_requests);
        if self.workers.is_none() {
            let w = workers::Workers::start(config.workers, self.coalesce.clone())
                .map_err(|e| L7Error(format!("cannot start the L7 workers: {e}")))?;
            self.workers = Some(w);
        } else if config.workers != self.config.workers {
            tracing::warn!("l7: a new `workers` count takes effect at the next start");
        }
        let Some(workers) = &self.workers else {
            return Err(L7Error("no L7 workers".into()));
        };
        let previous = self.shared.load();
        let next = Snapshot::build(config, &previous, &tls);
        let drain = Duration::from_millis(config.drain_timeout_ms);
        self.shared.store(next);

        let mut started: Vec<Listener> = Vec::new();
        for l in &config.listeners {
            if self
                .listeners
                .get(&l.name)
                .is_some_and(|old| same_socket(&old.config, l))
            {
                continue;
            }
            let metrics = self
                .listener_metrics
                .entry(l.name.clone())
                .or_default()
                .clone();
            // Changing the address of a listener: the old one goes first, or a wildcard and
            // a specific bind on the same port would both take connections.
            match Listener::start(l.clone(), self.shared.clone(), metrics, drain, workers) {
                Ok(new) => started.push(new),
                Err(e) => {
                    for s in started {
                        s.retire();
                    }
                    self.shared.restore(previous);
                    return Err(L7Error(e));
                }
            }
        }
        for new in started {
            if let Some(old) = self.listeners.insert(new.config.name.clone(), new) {
                old.retire();
            }
        }
        let names: Vec<String> = self.listeners.keys().cloned().collect();
        for name in names {
            if !config.listeners.iter().any(|l| l.name == name)
                && let Some(old) = self.listeners.remove(&name)
            {
                tracing::info!(listener = %name, "L7 listener removed");
                old.retire();
                self.listener_metrics.remove(&name);
            }
        }
        self.health.apply(&self.shared.load());
        Ok(())
    }

    /// The bound address of a listener (useful with port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.listeners.get(listener).map(|l| l.local_addr)
    }

    /// Metrics of every listener, route, pool and server (OpenMetrics text).
    pub fn metrics(&self) -> String {
        let mut out = crate::part::prometheus::Metrics::new("l7");
        let mut names: Vec<_> = self.listener_metrics.keys().collect();
        names.sort();
        for n in names {
            metrics::render_listener(&mut out, n, &self.listener_metrics[n]);
        }
        self.coalesce.render(&mut out);
        out.gauge_u(
            "splice_pipes",
            "Pipes the fast path holds for splice(2): in use by a body, or kept for the next.",
            crate::labels![],
            splice::PIPES_OPEN.load(std::sync::atomic::Ordering::Relaxed),
        );
        let snap = self.shared.load();
        for r in &snap.routes {
            metrics::render_route(&mut out, &r.host, &r.path_prefix, &r.pool.name, &r.metrics);
        }
        let mut pools: Vec<_> = snap.pools.values().collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        for p in pools {
            metrics::render_pool(&mut out, &p.name, &p.metrics);
            for s in &p.servers {
                metrics::render_server(
                    &mut out,
                    &p.name,
                    &s.address.to_string(),
                    &s.metrics,
                    &metrics::ServerGauges {
                        outstanding: s.outstanding(),
                        idle: s.idle_connections(),
                        up: s.available(),
                        weight: s.weight(),
                    },
                );
            }
        }
        out.text()
    }

    /// For `/status`: listeners, routes, pools with their counters, and each server's state.
    pub fn status(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        let snap = self.shared.load();
        let configured = overrides::Overrides::configured(&self.merged.config);
        let pools: serde_json::Map<String, serde_json::Value> = snap
            .pools
            .values()
            .map(|p| {
                let servers: Vec<_> = p
                    .servers
                    .iter()
                    .map(|s| {
                        let state = if !s.healthy() {
                            "down"
                        } else if s.ejected() {
                            "ejected"
                        } else if s.weight() == 0 {
                            "drained"
                        } else {
                            "active"
                        };
                        let source = match self.merged.sources.get(&(p.name.clone(), s.address)) {
                            Some(c) => format!("container {} ({})", c.name, c.id),
                            None => "config".to_owned(),
                        };
                        serde_json::json!({
                            "address": s.address.to_string(),
                            "source": source,
                            "weight": s.weight(),
                            "configured_weight": configured.get(&(p.name.as_str(), s.address)),
                            "state": state,
                            "healthy": s.healthy(),
                            "ejected": s.ejected(),
                            "outstanding": s.outstanding(),
                        })
                    })
                    .collect();
                let m = &p.metrics;
                let responses: serde_json::Map<String, serde_json::Value> = m
                    .responses
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("{}xx", i + 1), c.load(Relaxed).into()))
                    .collect();
                let mut pool = serde_json::json!({
                    "servers": servers,
                    "requests": m.requests.load(Relaxed),
                    "responses": responses,
                });
                // Of the requests answered in the last seconds; absent when there were none.
                if let Some(p99) = m.latency.recent_p99(std::time::Instant::now()) {
                    pool["p99_ms"] = serde_json::json!((p99 * 1e4).round() / 10.0);
                }
                (p.name.clone(), pool)
            })
            .collect();
        let listeners: serde_json::Map<String, serde_json::Value> = self
            .listeners
            .iter()
            .map(|(n, l)| {
                let m = self.listener_metrics.get(n);
                let get = |f: fn(&metrics::ListenerMetrics) -> &std::sync::atomic::AtomicU64| {
                    m.map_or(0, |m| f(m).load(Relaxed))
                };
                (
                    n.clone(),
                    serde_json::json!({
                        "address": l.local_addr.to_string(),
                        "requests": get(|m| &m.requests),
                        "connections": get(|m| &m.connections),
                        "connections_active": get(|m| &m.active),
                    }),
                )
            })
            .collect();
        let routes: Vec<_> = snap
            .routes
            .iter()
            .map(|r| {
                serde_json::json!({
                    "host": r.host,
                    "path": r.path_prefix,
                    "pool": r.pool.name,
                    "requests": r.metrics.requests.load(Relaxed),
                })
            })
            .collect();
        serde_json::json!({
            "generation": snap.generation,
            "listeners": listeners,
            "routes": routes,
            "pools": pools,
        })
    }

    /// Stops accepting everywhere, then waits for in-flight requests (up to the drain time).
    pub async fn shutdown(mut self) {
        self.health.stop();
        let listeners: Vec<Listener> = self.listeners.drain().map(|(_, l)| l).collect();
        futures::future::join_all(listeners.into_iter().map(Listener::stop)).await;
        // Dropped off the async threads: joining the workers blocks.
        if let Some(w) = self.workers.take() {
            let _ = tokio::task::spawn_blocking(move || drop(w)).await;
        }
    }
}

/// Settings that need a new socket or a new accept loop when they change.
fn same_socket(a: &ListenerConfig, b: &ListenerConfig) -> bool {
    a == b || {
        let strip = |l: &ListenerConfig| ListenerConfig {
            no_route_status: 0,
            access_log: false,
            ..l.clone()
        };
        strip(a) == strip(b)
    }
}
