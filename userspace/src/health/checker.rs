use super::probe::{Probe, run_probe};
use super::state::HealthState;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;
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

/// One probing task per (service, backend); `sync` reconciles them with the config, keeping a
/// task (and its rise/fall state) whose schedule did not change.
pub struct Checker {
    tasks: BTreeMap<(String, IpAddr), Task>,
    tx: mpsc::UnboundedSender<Transition>,
}

impl Checker {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Transition>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tasks: BTreeMap::new(),
                tx,
            },
            rx,
        )
    }

    /// Starts, restarts and stops tasks so that exactly `targets` are checked. Returns the
    /// keys whose state starts over (new or changed schedule): they count as healthy again.
    pub fn sync(&mut self, targets: BTreeMap<(String, IpAddr), Schedule>) -> Vec<(String, IpAddr)> {
        let mut restarted = Vec::new();
        self.tasks.retain(|key, task| {
            let keep = targets.get(key) == Some(&task.schedule);
            if !keep {
                task.handle.abort();
            }
            keep
        });
        for (key, schedule) in targets {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let handle = tokio::spawn(check_loop(key.clone(), schedule.clone(), self.tx.clone()));
            self.tasks.insert(key.clone(), Task { schedule, handle });
            restarted.push(key);
        }
        restarted
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
) {
    let mut state = HealthState::new();
    let mut tick = tokio::time::interval(s.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = run_probe(&s.probe, s.timeout).await;
        if let Some(healthy) = state.record(result.is_ok(), s.rise, s.fall) {
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
        // Bring the port back: the target rises.
        let _l = std::net::TcpListener::bind(addr).expect("rebind");
        let up = rx.recv().await.expect("transition");
        assert!(up.healthy);
        // Same schedule: the task (and its state) is kept.
        assert!(checker.sync(BTreeMap::from([(key, schedule)])).is_empty());
        // No targets: every task stops, the channel stays open but silent.
        checker.sync(BTreeMap::new());
        assert!(checker.tasks.is_empty());
    }
}
