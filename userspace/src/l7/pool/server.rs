//! One upstream server's state: weight, health, passive ejection, outstanding requests and
//! connection slots (the claims that hold them), and its idle connections.

use super::idle::{IdleConnections, Sender};
use crate::config::{HttpProtocol, PoolConfig};
use crate::l7::balance::{self, Candidate};
use crate::l7::clock::now_ms;
use crate::l7::metrics::ServerMetrics;
use crate::l7::upstream_tls::ServerTls;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Upstream timeouts and limits, from the pool's config.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
    pub idle: Duration,
    pub queue: Duration,
}

pub struct Server {
    pub address: SocketAddr,
    /// Atomic so a runtime weight change (or drain: 0) keeps the server, its connections,
    /// health and counters; the pool's round-robin order is rebuilt with the snapshot.
    weight: AtomicU32,
    id: u64,
    pub(super) protocol: HttpProtocol,
    /// TLS to this server; part of what a reload must keep for the server to be reused.
    pub(super) tls: Option<ServerTls>,
    healthy: AtomicBool,
    ejected_until: AtomicU64,
    failures: AtomicU32,
    pub(super) outstanding: AtomicUsize,
    pub(super) slots: Arc<Semaphore>,
    pub(super) max_connections: u32,
    pub(super) idle: IdleConnections,
    pub metrics: ServerMetrics,
}

impl Server {
    pub(super) fn new(
        address: SocketAddr,
        weight: u32,
        config: &PoolConfig,
        tls: Option<ServerTls>,
    ) -> Server {
        Server {
            address,
            weight: AtomicU32::new(weight),
            id: balance::hash_bytes(address.to_string().as_bytes()),
            protocol: config.protocol,
            tls,
            healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            outstanding: AtomicUsize::new(0),
            slots: Arc::new(Semaphore::new(config.max_connections as usize)),
            max_connections: config.max_connections,
            idle: IdleConnections::new(config.max_connections as usize),
            metrics: ServerMetrics::default(),
        }
    }

    pub fn tls(&self) -> Option<&ServerTls> {
        self.tls.as_ref()
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Weight 0 drains: no new requests, and idle connections close now rather than wait
    /// for their idle timeout; in-flight requests finish on the connections they hold.
    pub(super) fn set_weight(&self, weight: u32) {
        if self.weight.swap(weight, Ordering::Relaxed) != weight && weight == 0 {
            self.idle.clear();
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        if !healthy {
            self.idle.clear();
        }
    }

    pub fn ejected(&self) -> bool {
        // Every pick and every connection given back asks: no clock read unless an ejection
        // was ever recorded.
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > now_ms()
    }

    pub fn available(&self) -> bool {
        self.weight() > 0 && self.healthy() && !self.ejected()
    }

    /// Kept-alive connections waiting in the idle lists (both kinds, every worker).
    pub fn idle_connections(&self) -> usize {
        self.idle.count()
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub(super) fn candidate(&self) -> Candidate {
        Candidate {
            available: self.available(),
            weight: self.weight(),
            outstanding: self.outstanding(),
            id: self.id,
        }
    }

    /// Passive health: a run of `eject_after` connect errors or 5xx ejects the server for
    /// `eject_ms`; any good answer ends the run.
    pub fn record(&self, ok: bool, eject_after: u32, eject_ms: u64) {
        if ok {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if eject_after > 0 && n >= eject_after {
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until
                .store(now_ms() + eject_ms, Ordering::Relaxed);
            self.metrics.ejections.fetch_add(1, Ordering::Relaxed);
            self.idle.clear();
            tracing::warn!(server = %self.address, eject_ms, "server ejected after {n} failures in a row");
        }
    }

    /// Gives a hyper connection back after a complete exchange, unless the server no longer
    /// takes requests.
    pub(super) fn put_idle(&self, sender: Sender) {
        if self.available() {
            self.idle.put(sender);
        }
    }

    /// An idle fast-path connection the server has not closed: this worker's first, else
    /// another's (its events then arrive through that worker's loop, which costs a
    /// cross-thread wake-up but saves the backend a connection).
    pub fn take_raw(&self, max_idle: Duration) -> Option<TcpStream> {
        let stream = self.idle.take_stream(max_idle)?;
        self.metrics.reuses.fetch_add(1, Ordering::Relaxed);
        Some(stream)
    }

    /// Returns a fast-path connection after a complete exchange.
    pub fn put_raw(&self, stream: TcpStream) {
        if self.available() {
            self.idle.put_stream(stream);
        }
    }

    /// A connection slot and an outstanding request, if a slot is free now.
    pub fn try_claim(self: &Arc<Self>) -> Option<Claim> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(self.claimed(permit))
    }

    /// A connection slot, waiting in the server's queue up to `queue`.
    pub async fn claim(self: &Arc<Self>, queue: Duration) -> Option<Claim> {
        if let Some(c) = self.try_claim() {
            return Some(c);
        }
        match tokio::time::timeout(queue, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Some(self.claimed(p)),
            _ => None,
        }
    }

    fn claimed(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Claim {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Claim {
            server: self.clone(),
            _permit: permit,
        }
    }
}

/// A fast-path request's hold on a server: its connection slot and outstanding count.
pub struct Claim {
    server: Arc<Server>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.server.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}
