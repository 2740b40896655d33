//! Request latency per pool: a histogram with the buckets a Prometheus user expects, counted
//! without a lock, and the p99 of the last seconds for `portier status` and the dashboard.
//!
//! A request's latency is the time from its routing to its response head (or the proxy's own
//! answer once every attempt failed): queueing for a connection slot, connecting, sending,
//! and the server's think time; as HAProxy's `Tw + Tc + Tr`, the client's own sending apart.
//!
//! Each observation is a bucket search and two relaxed atomic adds on a shard that belongs
//! to the calling thread (one per worker, cache-line aligned), so workers never contend.

use crate::part::prometheus::Histogram;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Upper bounds in seconds: Prometheus' default buckets (5 ms .. 10 s) with three below them
/// (0.5, 1, 2.5 ms), where a proxy in front of a fast backend spends most requests.
pub const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BUCKETS: usize = BOUNDS.len() + 1;
/// The same bounds in nanoseconds, for the search on the request path.
const BOUNDS_NS: [u64; 14] = {
    let mut ns = [0u64; 14];
    let mut i = 0;
    while i < 14 {
        ns[i] = (BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    ns
};
const SHARDS: usize = 8;
/// How far back the status p99 looks.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// Which shard this thread counts in: threads take them in turn.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// Cumulative counts since start, summed over shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub buckets: [u64; BUCKETS],
    pub sum_ns: u64,
}

impl Counts {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn minus(&self, older: &Counts) -> Counts {
        let mut d = *self;
        for (b, o) in d.buckets.iter_mut().zip(older.buckets) {
            *b = b.saturating_sub(o);
        }
        d.sum_ns = d.sum_ns.saturating_sub(older.sum_ns);
        d
    }

    /// The `q` quantile in seconds, as Prometheus' `histogram_quantile` estimates it (linear
    /// within the bucket; the last finite bound when it falls in +Inf). `None` without
    /// observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if (below + n) as f64 >= rank && n > 0 {
                let Some(&upper) = BOUNDS.get(i) else {
                    return Some(BOUNDS[BOUNDS.len() - 1]);
                };
                let lower = if i == 0 { 0.0 } else { BOUNDS[i - 1] };
                let within = (rank - below as f64) / n as f64;
                return Some(lower + (upper - lower) * within);
            }
            below += n;
        }
        Some(BOUNDS[BOUNDS.len() - 1])
    }

    pub fn histogram(&self) -> Histogram {
        let mut buckets: Vec<(f64, u64)> = BOUNDS.iter().copied().zip(self.buckets).collect();
        buckets.push((f64::INFINITY, self.buckets[BUCKETS - 1]));
        Histogram {
            sum: self.sum_ns as f64 / 1e9,
            count: self.count(),
            buckets,
        }
    }
}

/// One pool's request latencies.
#[derive(Debug, Default)]
pub struct Latency {
    shards: [Shard; SHARDS],
    /// Snapshots taken by [`Latency::recent_p99`], newest last (status time only).
    history: Mutex<VecDeque<(Instant, Counts)>>,
}

impl Latency {
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        let s = &self.shards[shard_index()];
        s.buckets[i].fetch_add(1, Relaxed);
        s.sum_ns.fetch_add(ns, Relaxed);
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for s in &self.shards {
            for (t, b) in c.buckets.iter_mut().zip(&s.buckets) {
                *t += b.load(Relaxed);
            }
            c.sum_ns += s.sum_ns.load(Relaxed);
        }
        c
    }

    /// The p99 in seconds of the requests answered in the last [`WINDOW`] (since the oldest
    /// snapshot within it; the status is read every second). `None` when there were none.
    pub fn recent_p99(&self, now: Instant) -> Option<f64> {
        let counts = self.counts();
        let mut h = self.history.lock().ok()?;
        while h.len() > 1
            && h.get(1)
                .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
        {
            h.pop_front();
        }
        let base = h.front().map_or(Counts::default(), |(_, c)| *c);
        if h.back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_millis(500))
        {
            h.push_back((now, counts));
        }
        counts.minus(&base).quantile(0.99)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_prometheus_buckets() {
        let l = Latency::default();
        for ms in [0.2, 0.7, 3.0, 3.0, 40.0, 20_000.0] {
            l.observe(Duration::from_secs_f64(ms / 1000.0));
        }
        // A bound is inclusive, as Prometheus' `le`.
        l.observe(Duration::from_millis(5));
        let h = l.counts().histogram();
        assert_eq!(h.count, 7);
        let at = |bound: f64| h.buckets.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(at(0.0005), 1);
        assert_eq!(at(0.001), 1);
        assert_eq!(at(0.005), 3);
        assert_eq!(at(0.05), 1);
        assert_eq!(at(f64::INFINITY), 1);
        assert!((h.sum - 20.0519).abs() < 1e-6, "{}", h.sum);
    }

    #[test]
    fn p99_interpolates_as_histogram_quantile() {
        let mut c = Counts::default();
        // 99 requests within 1 ms (bucket 0.5..1 ms), one slow at 2 s.
        c.buckets[1] = 99;
        c.buckets[11] = 1;
        let p99 = c.quantile(0.99).unwrap();
        assert!((p99 - 0.001).abs() < 1e-9, "{p99}");
        // Half in (1, 2.5] ms: the median is at 1 + 1.5 * (50 / 100) ms... of that bucket.
        let mut c = Counts::default();
        c.buckets[2] = 100;
        assert!((c.quantile(0.5).unwrap() - 0.00175).abs() < 1e-9);
        assert_eq!(Counts::default().quantile(0.99), None);
        let mut c = Counts::default();
        c.buckets[BUCKETS - 1] = 5;
        assert_eq!(c.quantile(0.99), Some(10.0));
    }

    #[test]
    fn the_status_p99_forgets_what_is_older_than_the_window() {
        let l = Latency::default();
        let t0 = Instant::now();
        for _ in 0..100 {
            l.observe(Duration::from_secs(2));
        }
        assert!(l.recent_p99(t0).unwrap() > 1.0);
        // Ten seconds later only fast requests came.
        for _ in 0..100 {
            l.observe(Duration::from_micros(300));
        }
        let _ = l.recent_p99(t0 + Duration::from_secs(5));
        let p99 = l.recent_p99(t0 + Duration::from_secs(11)).unwrap();
        assert!(p99 <= 0.0005, "{p99}");
        assert_eq!(l.recent_p99(t0 + Duration::from_secs(30)), None);
    }
}
