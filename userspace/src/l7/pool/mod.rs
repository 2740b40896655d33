//! Backend pools: the servers of a pool and the choice among them for each request.
//!
//! - `server`: one server's state (weight, health, ejection, load) and the claims on its
//!   connection slots;
//! - `idle`: its kept-alive connections, per worker;
//! - `connect`: opening new connections (TCP, TLS, HTTP/1 or HTTP/2) and the health probe;
//! - `answer_first`: what hyper's HTTP/1 client writes and reads on, so that a server's answer
//!   read after it stopped taking the request is not lost to the failed write;
//! - `send`: one request through hyper's client, and the lease that gives the connection back.
//!
//! The fast paths (`l7::fast`, `l7::raw`) use a server's claims and plain idle streams
//! directly; the general path goes through `send`.

mod answer_first;
mod connect;
mod idle;
mod send;
mod server;

pub use send::{Lease, SendError};
pub use server::{Claim, Server, Timeouts};

use crate::config::{Balance, PoolConfig};
use crate::l7::balance::{self, Candidate};
use crate::l7::headers;
use crate::l7::metrics::PoolMetrics;
use crate::l7::upstream_tls::{Connector, ServerTls};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub struct Pool {
    pub name: String,
    pub config: PoolConfig,
    pub servers: Vec<Arc<Server>>,
    pub timeouts: Timeouts,
    sequence: Vec<usize>,
    tick: AtomicUsize,
    pub metrics: Arc<PoolMetrics>,
}

impl Pool {
    /// Builds a pool; servers in `previous` with the same address and limits keep their state
    /// and connections, so a reload does not reset health or drop keep-alives.
    pub fn new(config: &PoolConfig, previous: Option<&Pool>, tls: Option<Arc<Connector>>) -> Pool {
        let servers: Vec<Arc<Server>> = config
            .servers
            .iter()
            .map(|s| {
                let server_tls = tls
                    .as_ref()
                    .map(|c| ServerTls::new(c.clone(), s.address, s.sni.as_deref()));
                let reused = previous.and_then(|p| {
                    p.servers.iter().find(|old| {
                        old.address == s.address
                            && old.protocol == config.protocol
                            && old.tls == server_tls
                            && old.max_connections == config.max_connections
                    })
                });
                match reused {
                    Some(old) => {
                        old.set_weight(s.weight);
                        old.clone()
                    }
                    None => Arc::new(Server::new(s.address, s.weight, config, server_tls)),
                }
            })
            .collect();
        let weights: Vec<u32> = servers.iter().map(|s| s.weight()).collect();
        // The rotation goes on where the previous snapshot left it: restarting it at 0 on
        // every reload or discovery event would send the first server of the sequence an extra
        // request each time, and a pool rebuilt often (containers coming and going elsewhere)
        // would lean on that server.
        let same_pool = previous.filter(|p| p.name == config.name);
        let tick = same_pool.map_or(0, |p| p.tick.load(Ordering::Relaxed));
        Pool {
            name: config.name.clone(),
            config: config.clone(),
            timeouts: Timeouts {
                connect: Duration::from_millis(config.connect_timeout_ms),
                response: Duration::from_millis(config.response_timeout_ms),
                idle: Duration::from_millis(config.idle_timeout_ms),
                queue: Duration::from_millis(config.queue_timeout_ms),
            },
            sequence: balance::round_robin_sequence(&weights),
            tick: AtomicUsize::new(tick),
            metrics: same_pool.map(|p| p.metrics.clone()).unwrap_or_default(),
            servers,
        }
    }

    /// Chooses a server for a request, skipping those in `tried`.
    pub fn pick(&self, headers: &http::HeaderMap, tried: &[usize]) -> Option<usize> {
        let view = || {
            let mut view: Vec<Candidate> = self.servers.iter().map(|s| s.candidate()).collect();
            for &t in tried {
                if let Some(c) = view.get_mut(t) {
                    c.available = false;
                }
            }
            view
        };
        match &self.config.balance {
            // Round robin asks only the servers it visits: no view is built per request.
            Balance::RoundRobin => {
                let tick = self.tick.fetch_add(1, Ordering::Relaxed);
                balance::round_robin_by(&self.sequence, tick, |s| {
                    !tried.contains(&s) && self.servers.get(s).is_some_and(|s| s.available())
                })
            }
            Balance::LeastOutstanding => {
                balance::least_outstanding(&view(), (balance::random(), balance::random()))
            }
            Balance::HashHeader(name) => {
                let key = headers.get(name.as_str()).map(|v| v.as_bytes());
                self.hashed(&view(), key)
            }
            Balance::HashCookie(name) => {
                let key = headers::cookie(headers, name);
                self.hashed(&view(), key)
            }
        }
    }

    /// Requests without the key spread by round robin rather than piling onto one server.
    fn hashed(&self, view: &[Candidate], key: Option<&[u8]>) -> Option<usize> {
        match key {
            Some(k) => balance::consistent_hash(view, balance::hash_bytes(k)),
            None => {
                let tick = self.tick.fetch_add(1, Ordering::Relaxed);
                balance::round_robin(&self.sequence, tick, view)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;

    fn config(weights: &[u32]) -> PoolConfig {
        let mut c = crate::config::discovery::pool_defaults();
        c.name = "todo".into();
        c.servers = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| ServerConfig {
                address: ([192, 0, 2, 1 + i as u8], 80).into(),
                weight,
                sni: None,
            })
            .collect();
        c
    }

    fn picks(pool: &Pool, n: usize) -> Vec<usize> {
        let headers = http::HeaderMap::new();
        (0..n).filter_map(|_| pool.pick(&headers, &[])).collect()
    }

    #[test]
    fn a_rebuilt_pool_goes_on_with_the_rotation() {
        let c = config(&[1, 1, 3]);
        let first = Pool::new(&c, None, None);
        let all = picks(&Pool::new(&c, None, None), 10);
        assert_eq!(picks(&first, 2), all[..2]);
        // A rebuild with the same servers (another pool's change, a reload) continues the
        // sequence rather than starting it again.
        let second = Pool::new(&c, Some(&first), None);
        assert_eq!(picks(&second, 8), all[2..]);
        let mut counts = [0; 3];
        for &s in &all {
            counts[s] += 1;
        }
        assert_eq!(counts, [2, 2, 6]);
        // Another pool's rotation is not taken over.
        let mut other = c.clone();
        other.name = "other".into();
        let third = Pool::new(&other, Some(&second), None);
        assert_eq!(picks(&third, 2), all[..2]);
    }
}

#[cfg(test)]
mod testing {
    use crate::l7::body::Body;
    use hyper::client::conn::http1;
    use hyper_util::rt::TokioIo;

    /// An HTTP/1 client connection over an in-memory pipe; the other end is returned.
    pub(super) async fn h1_sender() -> (http1::SendRequest<Body>, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (sender, conn) = http1::handshake(TokioIo::new(ours)).await.unwrap();
        tokio::spawn(conn);
        (sender, theirs)
    }
}
