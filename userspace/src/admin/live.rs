//! The node's own entry in `/status` (name, version, uptime, health, the transitions log),
//! refreshed every second, and the `/events` stream that sends that document to dashboards.
//!
//! One task renders the document once a second into a watch channel; each Server-Sent Events
//! client only copies the latest, so a hundred open dashboards cost one serialisation.

use super::transitions::{self, Observed, Transition};
use crate::part::StatusBoard;
use bytes::Bytes;
use hyper::body::Frame;
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// How often the document is rendered and sent.
pub const PERIOD: Duration = Duration::from_secs(1);
/// Transitions kept for the log; older ones are dropped (and counted).
pub const MAX_TRANSITIONS: usize = 100;
/// Dashboards streaming at once; more are answered 503 (their EventSource retries, and the
/// page falls back to polling `/status`).
pub const MAX_STREAMS: usize = 16;
/// A stream ends after this, within the admin listener's connection lifetime; the browser's
/// EventSource reconnects at once (`retry:` below), unnoticed by the page.
const STREAM_LIFETIME: Duration = Duration::from_secs(50);
/// What EventSource waits before reconnecting, in milliseconds.
const RETRY_MS: u64 = 1000;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The streaming side: the latest document and the bound on clients.
#[derive(Clone)]
pub struct Live {
    latest: watch::Receiver<Arc<str>>,
    slots: Arc<Semaphore>,
    pub counters: Arc<StreamCounters>,
}

#[derive(Debug, Default)]
pub struct StreamCounters {
    pub opened: AtomicU64,
    pub refused: AtomicU64,
}

impl Live {
    /// Streams open now.
    pub fn streams(&self) -> usize {
        MAX_STREAMS - self.slots.available_permits()
    }

    /// A slot for one more stream, or `None` at the limit (counted).
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        match self.slots.clone().try_acquire_owned() {
            Ok(p) => {
                self.counters.opened.fetch_add(1, Ordering::Relaxed);
                Some(p)
            }
            Err(_) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The `text/event-stream` body: the latest document at once, then each new one.
    pub fn stream(
        &self,
        slot: OwnedSemaphorePermit,
    ) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
        let mut rx = self.latest.clone();
        rx.mark_changed();
        let end = tokio::time::Instant::now() + STREAM_LIFETIME;
        let first = Bytes::from(format!("retry: {RETRY_MS}\n\n"));
        let state = (rx, slot, Some(first));
        futures::stream::unfold(state, move |(mut rx, slot, first)| async move {
            if let Some(f) = first {
                return Some((Ok(Frame::data(f)), (rx, slot, None)));
            }
            match tokio::time::timeout_at(end, rx.changed()).await {
                Ok(Ok(())) => {
                    let doc = rx.borrow_and_update().clone();
                    let event = Bytes::from(format!("data: {doc}\n\n"));
                    Some((Ok(Frame::data(event)), (rx, slot, None)))
                }
                // The daemon is stopping, or the stream's time is up.
                _ => None,
            }
        })
    }
}

/// The log and what the last document held, for the next diff.
struct Journal {
    last: BTreeMap<(String, String), Observed>,
    log: VecDeque<Transition>,
    /// Transitions ever seen, including those dropped from the log.
    total: u64,
    started: bool,
}

impl Journal {
    fn record(&mut self, status: &serde_json::Value, at_ms: u64) {
        let now = transitions::states(status);
        // The first document only sets the baseline: the log starts with changes.
        if self.started {
            for t in transitions::diff(&self.last, &now, at_ms) {
                self.total += 1;
                if self.log.len() == MAX_TRANSITIONS {
                    self.log.pop_front();
                }
                self.log.push_back(t);
            }
        }
        self.started = true;
        self.last = now;
    }
}

/// Starts the task that writes the `node` entry to the board every second and renders the
/// document for the streams. It ends when the returned handle is aborted.
pub fn start(board: StatusBoard, node: &str) -> (Live, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel::<Arc<str>>(Arc::from("{}"));
    let live = Live {
        latest: rx,
        slots: Arc::new(Semaphore::new(MAX_STREAMS)),
        counters: Arc::default(),
    };
    let node = node.to_string();
    let started = Instant::now();
    let started_ms = unix_ms();
    let streams = live.clone();
    let task = tokio::spawn(async move {
        let mut journal = Journal {
            last: BTreeMap::new(),
            log: VecDeque::new(),
            total: 0,
            started: false,
        };
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut status = board.status();
            if let Some(parts) = status.as_object_mut() {
                parts.remove("node");
            }
            let now_ms = unix_ms();
            journal.record(&status, now_ms);
            let problems = transitions::problems(&status);
            let entry = serde_json::json!({
                "name": node,
                "version": env!("CARGO_PKG_VERSION"),
                "started_ms": started_ms,
                "now_ms": now_ms,
                "uptime_secs": started.elapsed().as_secs(),
                "health": if problems.is_empty() { "ok" } else { "degraded" },
                "problems": problems,
                "transitions": journal.log.iter().rev().collect::<Vec<_>>(),
                "transitions_total": journal.total,
                "dashboard_streams": streams.streams(),
            });
            board.set("node", entry.clone());
            if let Some(parts) = status.as_object_mut() {
                parts.insert("node".into(), entry);
            }
            let doc = serde_json::to_string(&status).unwrap_or_default();
            tx.send_replace(Arc::from(doc));
        }
    });
    (live, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(state: &str) -> serde_json::Value {
        json!({ "l7": { "pools": { "p": { "servers": [
            { "address": "127.0.0.1:9", "state": state }
        ]}}}})
    }

    #[test]
    fn the_log_is_bounded_and_counts_what_it_dropped() {
        let mut j = Journal {
            last: BTreeMap::new(),
            log: VecDeque::new(),
            total: 0,
            started: false,
        };
        j.record(&doc("active"), 0);
        assert!(j.log.is_empty(), "the first document is the baseline");
        for i in 0..(MAX_TRANSITIONS as u64 + 10) {
            let state = if i % 2 == 0 { "down" } else { "active" };
            j.record(&doc(state), i);
        }
        assert_eq!(j.log.len(), MAX_TRANSITIONS);
        assert_eq!(j.total, MAX_TRANSITIONS as u64 + 10);
        assert_eq!(
            j.log.back().map(|t| t.at_ms),
            Some(MAX_TRANSITIONS as u64 + 9)
        );
    }

    #[tokio::test]
    async fn streams_beyond_the_limit_are_refused_and_counted() {
        let (live, task) = start(StatusBoard::new(), "n");
        let held: Vec<_> = (0..MAX_STREAMS).map(|_| live.admit()).collect();
        assert!(held.iter().all(Option::is_some));
        assert_eq!(live.streams(), MAX_STREAMS);
        assert!(live.admit().is_none());
        assert_eq!(live.counters.refused.load(Ordering::Relaxed), 1);
        drop(held);
        assert_eq!(live.streams(), 0);
        assert!(live.admit().is_some());
        task.abort();
    }
}
