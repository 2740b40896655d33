//! `cargo xtask bench bgp`: a VIP route reaching an edge router by BGP and leaving it, with
//! portier announcing against FRR bgpd announcing, to the same receiving FRR, in interleaved
//! rounds of one run (see `portier_tests::bgp_bench` for what is timed).

use anyhow::Result;
use portier_tests::bgp_bench::{Bench, Round};
use std::time::Duration;

const ROUNDS: usize = 7;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn show(who: &str, round: usize, r: &Round) {
    println!(
        "round {round} {who:<8} established {:>9.1?}  installed {:>9.1?}  withdrawn {:>9.1?} (command {:.1?})",
        r.established, r.installed, r.withdrawn, r.command
    );
}

pub fn run() -> Result<()> {
    let bench = Bench::new()?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        // Alternate who goes first, so neither always follows the other's teardown.
        let order = if round % 2 == 1 {
            [true, false]
        } else {
            [false, true]
        };
        for portier in order {
            if portier {
                let r = bench.portier_round()?;
                show("portier", round, &r);
                ours.push(r);
            } else {
                let r = bench.frr_round()?;
                show("FRR", round, &r);
                theirs.push(r);
            }
        }
    }
    let m = |v: &[Round], f: fn(&Round) -> Duration| median(v.iter().map(f).collect());
    for (what, f) in [
        (
            "start -> established",
            (|r: &Round| r.established) as fn(&Round) -> Duration,
        ),
        ("start -> route installed", |r: &Round| r.installed),
        ("established -> installed", |r: &Round| {
            r.installed.saturating_sub(r.established)
        }),
        ("withdraw -> route gone", |r: &Round| r.withdrawn),
        ("  of which the command", |r: &Round| r.command),
    ] {
        let (p, q) = (m(&ours, f), m(&theirs, f));
        println!(
            "bgp {what:<26} median of {ROUNDS}: portier {p:>9.1?}, FRR bgpd {q:>9.1?}, ratio {:.2}",
            p.as_secs_f64() / q.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}
