//! Clocks for the request path. A precise clock read costs a `rdtsc` and the vDSO's
//! arithmetic (24 ns in a tight loop on this machine's TSC clocksource, more when cold), and
//! a keep-alive request used to take six of them where HAProxy takes a tenth of one (its loop
//! caches "now"). Timeouts and idle ages of seconds do not need that precision: they read the
//! kernel's tick-stamped `CLOCK_MONOTONIC_COARSE` (one scheduler tick, 1-4 ms, behind; 5 ns a
//! read). Latencies and anything shorter than a few ticks keep the precise clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn monotonic(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on every Linux this
    // daemon runs on (2.6.32+), so the call cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Milliseconds of `CLOCK_MONOTONIC`: a precise clock for atomics.
pub fn now_ms() -> u64 {
    monotonic(libc::CLOCK_MONOTONIC).as_millis() as u64
}

/// Milliseconds of `CLOCK_MONOTONIC_COARSE`: at most one tick behind `now_ms()` (never ahead,
/// so a coarse stamp compared with a precise one only ever looks younger).
pub fn coarse_ms() -> u64 {
    monotonic(libc::CLOCK_MONOTONIC_COARSE).as_millis() as u64
}

/// A tokio deadline base from the coarse clock: within one tick of `Instant::now()`, which
/// is all a header or response timeout of seconds needs.
pub fn coarse_now() -> tokio::time::Instant {
    // `Instant` cannot be made from a timespec, so the coarse clock's progress is added to
    // an `Instant` taken with it.
    static BASE: OnceLock<(Instant, Duration)> = OnceLock::new();
    let (at, coarse) =
        *BASE.get_or_init(|| (Instant::now(), monotonic(libc::CLOCK_MONOTONIC_COARSE)));
    let since = monotonic(libc::CLOCK_MONOTONIC_COARSE).saturating_sub(coarse);
    tokio::time::Instant::from_std(at + since)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clocks_stay_within_a_tick_of_the_precise_ones() {
        // A tick is at most 10 ms (HZ=100); the margin covers a preemption between reads.
        let slack = 50;
        for _ in 0..1000 {
            let coarse = coarse_ms();
            let precise = now_ms();
            assert!(coarse <= precise, "coarse {coarse} ahead of {precise}");
            assert!(precise - coarse < slack, "coarse {coarse} behind {precise}");
            let deadline = coarse_now();
            let now = tokio::time::Instant::now();
            let off = if deadline > now {
                deadline - now
            } else {
                now - deadline
            };
            assert!(
                off < Duration::from_millis(slack),
                "coarse instant {off:?} off"
            );
        }
    }

    #[test]
    fn the_coarse_clock_moves() {
        let start = coarse_ms();
        std::thread::sleep(Duration::from_millis(30));
        assert!(coarse_ms() >= start + 20);
    }
}
