//! The routing state requests read: an immutable snapshot swapped atomically on reload, so a
//! request sees one consistent config and no request ever waits for a reload.

use crate::config::L7Config;
use crate::l7::metrics::RouteMetrics;
use crate::l7::pool::Pool;
use crate::l7::router::Router;
use crate::l7::upstream_tls::Connector;
use arc_swap::ArcSwap;
use http::StatusCode;
use std::collections::HashMap;
use std::sync::Arc;

pub struct ListenerView {
    pub router: Router,
    pub no_route_status: StatusCode,
    pub access_log: bool,
}

pub struct Route {
    /// Only on this listener; every listener when `None`.
    pub listener: Option<String>,
    pub host: String,
    pub path_prefix: String,
    pub pool: Arc<Pool>,
    pub metrics: Arc<RouteMetrics>,
}

#[derive(Default)]
pub struct Snapshot {
    pub generation: u64,
    /// By name; looked up by every request (foldhash: see the dependency's note).
    pub listeners: HashMap<String, ListenerView, foldhash::fast::RandomState>,
    pub routes: Vec<Route>,
    pub pools: HashMap<String, Arc<Pool>>,
}

impl Snapshot {
    /// Builds the next snapshot; pools, servers and counters carry over from `previous`
    /// where the config kept them.
    /// `tls`: the connectors of the pools that talk TLS to their servers, by pool name.
    pub fn build(
        config: &L7Config,
        previous: &Snapshot,
        tls: &HashMap<String, Arc<Connector>>,
    ) -> Snapshot {
        let pools: HashMap<String, Arc<Pool>> = config
            .pools
            .iter()
            .map(|p| {
                let old = previous.pools.get(&p.name).map(|a| &**a);
                let connector = tls.get(&p.name).cloned();
                (p.name.clone(), Arc::new(Pool::new(p, old, connector)))
            })
            .collect();
        let routes: Vec<Route> = config
            .routes
            .iter()
            .filter_map(|r| {
                let metrics = previous
                    .routes
                    .iter()
                    .find(|o| o.host == r.host && o.path_prefix == r.path_prefix)
                    .map(|o| o.metrics.clone())
                    .unwrap_or_default();
                Some(Route {
                    listener: r.listener.clone(),
                    host: r.host.clone(),
                    path_prefix: r.path_prefix.clone(),
                    // The config reader guarantees the pool exists.
                    pool: pools.get(&r.pool)?.clone(),
                    metrics,
                })
            })
            .collect();
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                let router = Router::new(
                    routes
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.listener.as_ref().is_none_or(|n| *n == l.name))
                        .map(|(i, r)| (r.host.as_str(), r.path_prefix.as_str(), i)),
                );
                let view = ListenerView {
                    router,
                    no_route_status: StatusCode::from_u16(l.no_route_status)
                        .unwrap_or(StatusCode::NOT_FOUND),
                    access_log: l.access_log,
                };
                (l.name.clone(), view)
            })
            .collect();
        Snapshot {
            generation: previous.generation + 1,
            listeners,
            routes,
            pools,
        }
    }
}

/// What every connection task holds: the current snapshot.
#[derive(Default)]
pub struct Shared {
    current: ArcSwap<Snapshot>,
}

impl Shared {
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn store(&self, s: Snapshot) {
        self.current.store(Arc::new(s));
    }

    /// Puts back a snapshot taken with [`Shared::load`] (a reload that failed).
    pub fn restore(&self, s: Arc<Snapshot>) {
        self.current.store(s);
    }
}
