use super::probe::{Probe, run_probe};
use super::state::HealthState;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A target changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub service: String,
    pub backend: IpAddr,
    pub healthy: bool,
    /// The last probe's error when it went down.
    pub reason: String,
}

/// How one target is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

struct Task {
    schedule: Schedule,
    handle: JoinHandle<()>,
}

/// The last probe of a target, for the status (HAProxy's "last check" and "going up/down").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    pub ok: bool,
    /// How long the probe took (to its timeout when it timed out).
    pub latency_ms: u64,
    /// The probe's error, when it failed.
    pub error: Option<String>,
    /// Results in a row that contradict the current state: above 0 the target is going down
    /// (or up), and changes state when this reaches fall (or rise).
    pub streak: u32,
}

type Reports = Arc<Mutex<BTreeMap<(String, IpAddr), CheckReport>>>;

/// One probing task per (service, backend); `sync` reconciles them with the config, keeping a
/// task (and its rise/fall state) whose schedule did not change.
pub struct Checker {
    tasks: BTreeMap<(String, IpAddr), Task>,
    tx: mpsc::UnboundedSender<Transition>,
    /// One entry per checked target at most: entries leave with their task.
    reports: Reports,
}

impl Checker {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Transition>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tasks: BTreeMap::new(),
                tx,
                reports: Reports::default(),
            },
            rx,
        )
    }

    /// Starts, restarts and stops tasks so that exactly `targets` are checked. Returns the
    /// keys whose state starts over (new or changed schedule): they count as healthy again.
    pub fn sync(&mut self, targets: BTreeMap<(String, IpAddr), Schedule>) -> Vec<(String, IpAddr)> {
        let mut restarted = Vec::new();
        let reports = &self.reports;
        self.tasks.retain(|key, task| {
            let keep = targets.get(key) == Some(&task.schedule);
            if !keep {
                task.handle.abort();
                if let Ok(mut r) = reports.lock() {
                    r.remove(key);
                }
            }
            keep
        });
        for (key, schedule) in targets {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let handle = tokio::spawn(check_loop(
                key.clone(),
                schedule.clone(),
                self.tx.clone(),
                self.reports.clone(),
            ));
            self.tasks.insert(key.clone(), Task { schedule, handle });
            restarted.push(key);
        }
        restarted
    }

    /// The last probe of a target, once it was probed.
    pub fn report(&self, service: &str, backend: IpAddr) -> Option<CheckReport> {
        let r = self.reports.lock().ok()?;
        r.get(&(service.to_string(), backend)).cloned()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.handle.abort();
        }
    }
}

async fn check_loop(
    (service, backend): (String, IpAddr),
    s: Schedule,
    tx: mpsc::UnboundedSender<Transition>,
    reports: Reports,
) {
    let mut state = HealthState::new();
    let mut tick = tokio::time::interval(s.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = Instant::now();
        let result = run_probe(&s.probe, s.timeout).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let changed = state.record(result.is_ok(), s.rise, s.fall);
        if let Ok(mut r) = reports.lock() {
            r.insert(
                (service.clone(), backend),
                CheckReport {
                    ok: result.is_ok(),
                    latency_ms,
                    error: result.as_ref().err().map(ToString::to_string),
                    streak: state.streak(),
                },
            );
        }
        if let Some(healthy) = changed {
            let reason = result.err().map(|e| e.to_string()).unwrap_or_default();
            let t = Transition {
                service: service.clone(),
                backend,
                healthy,
                reason,
            };
            if tx.send(t).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[tokio::test]
    async fn a_dead_target_is_reported_down_then_up_again() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr: SocketAddr = l.local_addr().expect("addr");
        drop(l);
        let (mut checker, mut rx) = Checker::new();
        let key = ("web".to_string(), addr.ip());
        let schedule = Schedule {
            probe: Probe::Tcp { addr },
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(200),
            rise: 2,
            fall: 2,
        };
        let started = checker.sync(BTreeMap::from([(key.clone(), schedule.clone())]));
        assert_eq!(started, vec![key.clone()]);
        let down = rx.recv().await.expect("transition");
        assert!(!down.healthy);
        assert!(down.reason.contains("connect"), "{}", down.reason);
        // The status sees the failed probe; the next one of the same kind confirms the state.
        let report = checker.report("web", addr.ip()).expect("a report");
        assert!(!report.ok);
        assert!(report.error.unwrap_or_default().contains("connect"));
        // Bring the port back: the target rises.
        let _l = std::net::TcpListener::bind(addr).expect("rebind");
        let up = rx.recv().await.expect("transition");
        assert!(up.healthy);
        // Same schedule: the task (and its state) is kept.
        assert!(checker.sync(BTreeMap::from([(key, schedule)])).is_empty());
        // No targets: every task stops, the channel stays open but silent.
        checker.sync(BTreeMap::new());
        assert!(checker.tasks.is_empty());
        assert!(
            checker.report("web", addr.ip()).is_none(),
            "reports leave with their task"
        );
    }

    #[test]
    fn the_streak_counts_results_against_the_state() {
        let mut s = HealthState::new();
        s.record(false, 2, 3);
        assert_eq!(s.streak(), 1, "going down");
        s.record(false, 2, 3);
        s.record(false, 2, 3);
        assert_eq!((s.healthy(), s.streak()), (false, 0));
        s.record(true, 2, 3);
        assert_eq!(s.streak(), 1, "going up");
    }
}
