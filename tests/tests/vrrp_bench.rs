//! Benchmark, not a timed test (run with `--ignored --nocapture`): the failover gap a client
//! sees (longest time without ping replies from the VIP) when the master node fails, for a
//! portier pair and a keepalived pair with the same intervals, in one run.
//!
//! A node failure is the master's daemon killed (SIGKILL) and its LAN link cut at once, so
//! that neither the VIP left on the dead node nor a goodbye advert can hide the gap.

use std::time::Duration;

use portier_tests::vrrp::Kind;

const PING_EVERY: Duration = Duration::from_millis(10);
const RUN: Duration = Duration::from_secs(8);
const FAIL_AFTER: Duration = Duration::from_secs(2);

fn gaps(prefix: &str, kind: Kind, advert_ms: u32, clean: bool) -> Duration {
    portier_tests::vrrp::failover_gap(prefix, kind, advert_ms, clean, PING_EVERY, RUN, FAIL_AFTER)
        .unwrap()
}

/// Samples per case: the failure lands at a random point of the advert cycle, so one sample
/// varies by up to one interval.
const SAMPLES: usize = 3;

fn median_of(prefix: &str, kind: Kind, advert_ms: u32, clean: bool) -> (Duration, Vec<u128>) {
    let mut all: Vec<Duration> = (0..SAMPLES)
        .map(|_| gaps(prefix, kind, advert_ms, clean))
        .collect();
    all.sort();
    (
        all[SAMPLES / 2],
        all.iter().map(Duration::as_millis).collect(),
    )
}

#[test]
#[ignore = "benchmark: cargo test -p portier-tests --test vrrp_bench -- --ignored --nocapture"]
fn failover_gap_portier_vs_keepalived() {
    for (advert_ms, label) in [(1000, "1 s"), (200, "200 ms"), (20, "20 ms")] {
        println!(
            "advert {label}, ping every {PING_EVERY:?}; longest time without replies (median of {SAMPLES}):"
        );
        for (case, clean) in [("node failure", false), ("clean shutdown", true)] {
            let (p, ps) = median_of("vb1", Kind::Portier, advert_ms, clean);
            let (k, ks) = median_of("vb2", Kind::Keepalived, advert_ms, clean);
            println!(
                "  {case:<15} portier {:>5} ms {ps:?}  keepalived {:>5} ms {ks:?}  ratio {:.2}",
                p.as_millis(),
                k.as_millis(),
                p.as_secs_f64() / k.as_secs_f64()
            );
        }
    }
}
