//! What one client connection holds and shares with its requests: its place under the
//! listener's `max_connections` (kept by a tunnel the connection turns into), the cap on its
//! requests at the servers (`max_upstream_per_connection`), and the count of its requests in
//! progress that tells when an HTTP/2 connection is idle.

use crate::l7::clock::coarse_ms;
use crate::l7::metrics::ListenerMetrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection's place under the listener's limit and in its active gauge, from accept to
/// the end of the connection or of the tunnel it became.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<ListenerMetrics>,
}

impl Slot {
    pub fn new(permit: OwnedSemaphorePermit, metrics: Arc<ListenerMetrics>) -> Slot {
        metrics.active.fetch_add(1, Ordering::Relaxed);
        Slot {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client connection served by the general path.
pub struct Downstream {
    _slot: Slot,
    upstream: Arc<Semaphore>,
    in_progress: AtomicUsize,
    /// `coarse_ms()` when the last request ended (or the connection began).
    last_end: AtomicU64,
    /// How long the client may leave a request body waiting.
    pub client_timeout: Duration,
}

impl Downstream {
    pub fn new(slot: Slot, client_timeout: Duration, max_upstream: u32) -> Arc<Downstream> {
        Arc::new(Downstream {
            _slot: slot,
            upstream: Arc::new(Semaphore::new(max_upstream.max(1) as usize)),
            in_progress: AtomicUsize::new(0),
            last_end: AtomicU64::new(coarse_ms()),
            client_timeout,
        })
    }

    /// A request begins; it counts as in progress until its hold is dropped (its response
    /// sent, or the request given up). HTTP/1 requests also count for the worker's
    /// coalescing; HTTP/2 ones do not: a connection's streams already arrive together (0.14
    /// `epoll_wait` per request without waiting).
    pub fn enter(self: &Arc<Self>, http1: bool) -> Hold {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        Hold {
            down: self.clone(),
            _upstream: None,
            _busy: http1.then(crate::l7::coalesce::InFlight::start),
        }
    }

    /// A place among this connection's requests at the servers, waiting up to `queue` for
    /// one of them to end. (The wait is boxed: the request's future stays small.)
    pub async fn upstream_place(&self, queue: Duration) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.upstream.clone().try_acquire_owned() {
            return Some(p);
        }
        let wait = Box::pin(tokio::time::timeout(
            queue,
            self.upstream.clone().acquire_owned(),
        ));
        wait.await.ok()?.ok()
    }

    /// Resolves once no request has been in progress for `limit`. Checked on wake: requests
    /// only bump counters.
    pub async fn idle(&self, limit: Duration) {
        let limit_ms = limit.as_millis() as u64;
        loop {
            let wait = if self.in_progress.load(Ordering::Acquire) > 0 {
                limit_ms
            } else {
                let at = self
                    .last_end
                    .load(Ordering::Relaxed)
                    .saturating_add(limit_ms);
                let now = coarse_ms();
                if now >= at {
                    return;
                }
                at - now
            };
            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
        }
    }
}

/// One request's hold on its connection: its count in progress and, once it goes to a
/// server, its place among the connection's requests there. Travels with the response body.
pub struct Hold {
    down: Arc<Downstream>,
    _upstream: Option<OwnedSemaphorePermit>,
    _busy: Option<crate::l7::coalesce::InFlight>,
}

impl Hold {
    pub fn set_upstream(&mut self, permit: OwnedSemaphorePermit) {
        self._upstream = Some(permit);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.down.last_end.store(coarse_ms(), Ordering::Relaxed);
        self.down.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}
