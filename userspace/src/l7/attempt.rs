//! The upstream retry loop's rules, written once for the three paths that send a request to
//! a pool (the general path `proxy.rs`, the HTTP/2-to-HTTP/1 `raw.rs`, the fast path
//! `fast.rs`): which servers were tried and how many tries are left, what a failed attempt
//! means for the server (a failure recorded, perhaps an ejection) and for the request
//! (another server, or the answer to give), and the pool's counters. Retry is decided by
//! the attempt's typed error, as Pingora's `RetryType` does; each path keeps only how it
//! sends one attempt and the failures that are the client's.

use crate::l7::pool::{Pool, Server};
use http::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Why an attempt on one server got no response head.
#[derive(Debug)]
pub enum AttemptError {
    /// Every connection slot stayed taken for the queue time: not the server's fault.
    Busy,
    /// Nothing of the request reached the server (connecting failed): another may be tried.
    NotSent(&'static str, String),
    /// The server failed once the request, or part of it, was sent: another is tried only
    /// when the request can be sent again (no body, and a method that allows it).
    Sent(&'static str, String),
    /// No response head within the response timeout of the request's end.
    Timeout,
}

/// Attempts one request may make: the config allows at most 10 retries. The servers tried
/// are kept inline, so a request allocates nothing for them.
const MAX_ATTEMPTS: usize = 11;

/// The attempts of one request on one pool.
pub struct Attempts<'a> {
    pool: &'a Pool,
    tried: [usize; MAX_ATTEMPTS],
    attempts: usize,
    last: (StatusCode, &'static str),
    last_server: Option<SocketAddr>,
    /// When the request was routed: its latency ends at the response head.
    started: Instant,
}

impl<'a> Attempts<'a> {
    pub fn new(pool: &'a Pool) -> Attempts<'a> {
        Attempts {
            pool,
            tried: [0; MAX_ATTEMPTS],
            attempts: 0,
            last: (StatusCode::SERVICE_UNAVAILABLE, "no server available\n"),
            last_server: None,
            started: Instant::now(),
        }
    }

    /// The next server to try, counted as tried; `None` once the pool's retries are spent
    /// or no untried server is available.
    pub fn next(&mut self, headers: &http::HeaderMap) -> Option<&'a Arc<Server>> {
        if self.attempts > self.pool.config.retries as usize || self.attempts == MAX_ATTEMPTS {
            return None;
        }
        let idx = self.pool.pick(headers, &self.tried[..self.attempts])?;
        Some(self.start(idx))
    }

    /// An attempt on server `idx` begins (the fast path picks its first server itself, when
    /// it reads the head).
    pub fn start(&mut self, idx: usize) -> &'a Arc<Server> {
        if self.attempts > 0 {
            self.pool.metrics.retries.fetch_add(1, Ordering::Relaxed);
        }
        // The fast path's first attempt comes through here too, never past the bound.
        if let Some(slot) = self.tried.get_mut(self.attempts) {
            *slot = idx;
            self.attempts += 1;
        }
        let server = &self.pool.servers[idx];
        self.last_server = Some(server.address);
        server.metrics.requests.fetch_add(1, Ordering::Relaxed);
        server
    }

    /// The server answered with `status` (5xx counts as its failure).
    pub fn answered(&self, server: &Server, status: u16) {
        let c = &self.pool.config;
        server.record(status < 500, c.eject_after, c.eject_ms);
        if status >= 500 {
            server.metrics.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.pool.metrics.response(status);
        self.pool.metrics.latency.observe(self.started.elapsed());
    }

    /// After a failed attempt: whether another server may be tried. `resendable`: the
    /// request can go out again once it was (partly) sent.
    pub fn failed(&mut self, server: &Server, e: AttemptError, resendable: bool) -> bool {
        let (c, m) = (&self.pool.config, &self.pool.metrics);
        match e {
            AttemptError::Busy => {
                self.last = (StatusCode::SERVICE_UNAVAILABLE, "all servers busy\n");
                true
            }
            AttemptError::NotSent(text, why) => {
                note_failure(server, &why, c.eject_after, c.eject_ms);
                m.upstream_errors.fetch_add(1, Ordering::Relaxed);
                self.last = (StatusCode::BAD_GATEWAY, text);
                true
            }
            AttemptError::Sent(text, why) => {
                note_failure(server, &why, c.eject_after, c.eject_ms);
                m.upstream_errors.fetch_add(1, Ordering::Relaxed);
                self.last = (StatusCode::BAD_GATEWAY, text);
                resendable
            }
            AttemptError::Timeout => {
                note_failure(server, "response timeout", c.eject_after, c.eject_ms);
                m.timeouts.fetch_add(1, Ordering::Relaxed);
                self.last = (StatusCode::GATEWAY_TIMEOUT, "upstream response timeout\n");
                resendable
            }
        }
    }

    /// No attempt got an answer: the proxy's own, counted.
    pub fn give_up(&self) -> (StatusCode, &'static str) {
        let m = &self.pool.metrics;
        m.no_server.fetch_add(1, Ordering::Relaxed);
        m.response(self.last.0.as_u16());
        m.latency.observe(self.started.elapsed());
        self.last
    }

    /// The server of the latest attempt.
    pub fn last_server(&self) -> Option<SocketAddr> {
        self.last_server
    }
}

pub(crate) fn note_failure(server: &Server, why: &str, eject_after: u32, eject_ms: u64) {
    tracing::debug!(server = %server.address, "upstream failure: {why}");
    server.metrics.failures.fetch_add(1, Ordering::Relaxed);
    server.record(false, eject_after, eject_ms);
}
