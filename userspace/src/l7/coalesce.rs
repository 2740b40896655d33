//! Answering many connections per wake-up when a worker is busy.
//!
//! A worker that goes back to `epoll_wait` the moment its queue is empty wakes for one or two
//! events at a time under load, and each of its sends then finds the client or the server
//! asleep: with 256 keep-alive connections it made 0.5-0.8 `epoll_wait` calls per request
//! where HAProxy makes 0.1-0.15, and the load generator and nginx behind it spent 15-25% more
//! CPU per request on the extra wake-ups (perf, 2026-12-02). So while enough HTTP/1 requests
//! are in progress on a worker (HTTP/2 streams already arrive together), it waits a few tens
//! of microseconds before it looks at its sockets again, and then finds several ready: the
//! idea of a NIC's interrupt coalescing (`ethtool -C rx-usecs`). A worker with few requests
//! in progress never waits, so a quiet proxy's latency does not change.
//!
//! A request whose body is spliced from its client weighs more than one: the body's segments
//! wake the worker again and again (15-18 `epoll_wait` per 1 MB upload, where a small request
//! costs about one), each time for a splice of whatever came meanwhile, and each wake-up is
//! paid on the client's CPU, which sends the segment. Sixteen such uploads make a worker
//! busy; a single one does not.

use crate::part::prometheus::Metrics;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread::LocalKey;
use std::time::{Duration, Instant};

thread_local! {
    static IN_FLIGHT: Cell<u32> = const { Cell::new(0) };
    static SPLICING: Cell<u32> = const { Cell::new(0) };
    static SLACK_SET: Cell<bool> = const { Cell::new(false) };
    static PACING: Cell<Pacing> = const { Cell::new(Pacing { quiet_until: None }) };
}

/// A wait that lasted this much longer than asked found the CPU taken: the sleeping worker
/// gave it to another runnable thread and got it back when the scheduler chose (0.87 ms on
/// average for a 30 us wait beside a busy process, against 59 us on an idle CPU).
const OVERSHOOT: Duration = Duration::from_micros(250);

/// How long a worker whose wait overshot does not wait. Waiting on a shared CPU costs
/// latency without the batching it is for; the CPU is tried again after this.
const BACK_OFF: Duration = Duration::from_millis(100);

/// One worker's record of whether waiting still pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pacing {
    quiet_until: Option<Instant>,
}

impl Pacing {
    fn may_wait(&self, now: Instant) -> bool {
        self.quiet_until.is_none_or(|t| now >= t)
    }

    /// Records a wait of `asked` from `start` to `end`; true when it overshot and the worker
    /// now stops waiting for [`BACK_OFF`].
    fn waited(&mut self, asked: Duration, start: Instant, end: Instant) -> bool {
        let overshot = end.saturating_duration_since(start) > asked + OVERSHOOT;
        self.quiet_until = overshot.then(|| end + BACK_OFF);
        overshot
    }
}

/// A waiting worker's timer slack. Linux lets a thread's timers fire up to 50 us late by
/// default, which made a 30 us wait last 114 us on average here (59 us with 1 us of slack;
/// the rest is the VM's wake-up); only a thread that ever waits has it changed.
const SLACK_NS: libc::c_ulong = 1_000;

/// One unit of a thread's count, given back when dropped. Saturating: a guard dropped on
/// another thread (a response body finished off a worker) must not wrap that thread's count.
struct Counted(&'static LocalKey<Cell<u32>>);

impl Counted {
    fn start(count: &'static LocalKey<Cell<u32>>) -> Counted {
        count.with(|n| n.set(n.get().saturating_add(1)));
        Counted(count)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// A request in progress on this thread, from its head to the end of its response.
pub struct InFlight {
    _count: Counted,
}

impl InFlight {
    pub fn start() -> InFlight {
        InFlight {
            _count: Counted::start(&IN_FLIGHT),
        }
    }
}

/// What a request adds to its thread's requests in progress while its body is spliced from
/// the client (besides its own one): 16 uploads of 1 MB at once, on one worker with the
/// default `coalesce_min_requests` of 128, then waited 100 us before each poll, and the
/// matrix's upload row (`cargo xtask bench l7 --matrix --shapes upload1m --rounds 6`, against
/// the same binary without the weight, three runs, 2026-12-04 19:00-19:10 UTC) took 0.91-0.95x
/// the proxy's CPU per request, 0.88-0.95x its p99, 1.01-1.02x the requests/s, and the load
/// generator's and nginx's CPU per upload went down with it (640-664 us against HAProxy's
/// 662-812 in the same runs).
const SPLICED_BODY_WEIGHT: u32 = 16;

/// A request body being spliced from its client on this thread.
pub struct SplicedBody {
    _count: Counted,
}

impl SplicedBody {
    pub fn start() -> SplicedBody {
        SplicedBody {
            _count: Counted::start(&SPLICING),
        }
    }
}

/// The requests in progress on this thread, spliced bodies weighed in.
fn in_flight() -> u32 {
    let spliced = SPLICING.with(Cell::get).saturating_mul(SPLICED_BODY_WEIGHT);
    IN_FLIGHT.with(Cell::get).saturating_add(spliced)
}

/// `[l7] coalesce_us` and `coalesce_min_requests`, shared by every worker and changed by a
/// reload.
#[derive(Debug, Default)]
pub struct Coalesce {
    wait_us: AtomicU32,
    min_requests: AtomicU32,
    /// How many times a worker waited (a metric: whether the setting is doing anything).
    waits: AtomicU64,
    /// The time those waits took, as measured: what the setting costs in latency, which a
    /// sleep's overshoot makes more than `waits` x `coalesce_us`.
    waited_ns: AtomicU64,
    /// Waits that overshot, each followed by [`BACK_OFF`] without waiting.
    backoffs: AtomicU64,
}

impl Coalesce {
    pub fn new(wait_us: u32, min_requests: u32) -> Arc<Coalesce> {
        let c = Arc::new(Coalesce::default());
        c.set(wait_us, min_requests);
        c
    }

    pub fn set(&self, wait_us: u32, min_requests: u32) {
        self.wait_us.store(wait_us, Ordering::Relaxed);
        self.min_requests.store(min_requests, Ordering::Relaxed);
    }

    /// How long a worker with `in_flight` requests in progress waits before it parks.
    pub fn wait(&self, in_flight: u32) -> Option<Duration> {
        let wait_us = self.wait_us.load(Ordering::Relaxed);
        (wait_us > 0 && in_flight >= self.min_requests.load(Ordering::Relaxed))
            .then(|| Duration::from_micros(u64::from(wait_us)))
    }

    /// Run by a worker's event loop each time it is about to park (its queue is empty): the
    /// sleep lets the sockets' events gather, and the park that follows finds them all.
    pub fn before_park(&self) {
        let Some(wait) = self.wait(in_flight()) else {
            return;
        };
        let mut pacing = PACING.with(Cell::get);
        let start = Instant::now();
        if !pacing.may_wait(start) {
            return;
        }
        if !SLACK_SET.with(|s| s.replace(true)) {
            // SAFETY: PR_SET_TIMERSLACK takes one integer and changes only this thread.
            // A failure leaves the default slack: longer waits, nothing worse.
            let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, SLACK_NS) };
        }
        std::thread::sleep(wait);
        let end = Instant::now();
        self.waits.fetch_add(1, Ordering::Relaxed);
        let took = end.saturating_duration_since(start);
        let took_ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.waited_ns.fetch_add(took_ns, Ordering::Relaxed);
        if pacing.waited(wait, start, end) {
            self.backoffs.fetch_add(1, Ordering::Relaxed);
        }
        PACING.with(|p| p.set(pacing));
    }

    /// The waits, their measured time and the back-offs, for the part's metrics.
    pub fn render(&self, out: &mut Metrics) {
        out.counter(
            "coalesce_waits",
            "Times a worker waited coalesce_us before polling, with coalesce_min_requests in progress (a spliced upload counts 17).",
            crate::labels![],
            self.waits.load(Ordering::Relaxed),
        );
        out.counter_seconds(
            "coalesce_wait_seconds",
            "Time workers spent in those waits, as measured (a sleep overshoots coalesce_us).",
            crate::labels![],
            self.waited_ns.load(Ordering::Relaxed) as f64 / 1e9,
        );
        out.counter(
            "coalesce_backoffs",
            "Waits that overshot coalesce_us by more than 250 us (the CPU was busy elsewhere), each followed by 100 ms without waiting.",
            crate::labels![],
            self.backoffs.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_waits_only_with_enough_requests_in_progress() {
        let c = Coalesce::new(30, 3);
        assert_eq!(in_flight(), 0);
        let a = InFlight::start();
        let b = InFlight::start();
        assert_eq!(c.wait(in_flight()), None);
        let d = InFlight::start();
        assert_eq!(c.wait(in_flight()), Some(Duration::from_micros(30)));
        drop((a, b, d));
        assert_eq!(in_flight(), 0);
        assert_eq!(c.wait(in_flight()), None);
        c.set(0, 0);
        assert_eq!(c.wait(100), None, "0 turns it off");
    }

    #[test]
    fn a_spliced_body_weighs_as_seventeen_requests() {
        let c = Coalesce::new(100, 128);
        let uploads: Vec<_> = (0..7)
            .map(|_| (InFlight::start(), SplicedBody::start()))
            .collect();
        assert_eq!(in_flight(), 7 * 17);
        assert_eq!(c.wait(in_flight()), None, "seven uploads: not busy");
        let eighth = (InFlight::start(), SplicedBody::start());
        assert_eq!(c.wait(in_flight()), Some(Duration::from_micros(100)));
        drop(eighth);
        assert_eq!(c.wait(in_flight()), None);
        drop(uploads);
        assert_eq!(in_flight(), 0);
    }

    #[test]
    fn a_wait_that_overshoots_stops_waiting_for_a_while() {
        let asked = Duration::from_micros(30);
        let t0 = Instant::now();
        let mut p = Pacing { quiet_until: None };
        assert!(p.may_wait(t0));
        // 59 us: an idle CPU's overshoot, waiting goes on.
        let end = t0 + Duration::from_micros(59);
        assert!(!p.waited(asked, t0, end));
        assert!(p.may_wait(end));
        // Exactly asked + OVERSHOOT still counts as on time.
        assert!(!p.waited(asked, t0, t0 + asked + OVERSHOOT));
        // 870 us: the CPU was someone else's.
        let end = t0 + Duration::from_micros(870);
        assert!(p.waited(asked, t0, end));
        assert!(!p.may_wait(end));
        assert!(!p.may_wait(end + BACK_OFF - Duration::from_micros(1)));
        assert!(p.may_wait(end + BACK_OFF));
        // A wait on time after the back-off clears it.
        let later = end + BACK_OFF;
        assert!(!p.waited(asked, later, later + asked));
        assert_eq!(p, Pacing { quiet_until: None });
    }

    #[test]
    fn a_guard_dropped_on_another_thread_does_not_wrap_its_count() {
        let guard = InFlight::start();
        std::thread::spawn(move || {
            drop(guard);
            assert_eq!(in_flight(), 0);
        })
        .join()
        .expect("thread");
        assert_eq!(in_flight(), 1);
        IN_FLIGHT.with(|n| n.set(0));
    }
}
