//! Ports for the daemons the tests start as processes (`portier run`, varnishtest's).
//!
//! Such a port must be chosen before the daemon binds it, so it is free only when chosen. A
//! port from `bind(127.0.0.1:0)`, released for the daemon, is the next pick of any other
//! `bind(…:0)` one time in 7,000 to 15,000 (with SO_REUSEADDR, as std and tokio set it, Linux
//! draws odd ports from the lower half of the ephemeral range: 7,058 of them here; 200,000
//! bind and close rounds gave the same port twice in a row 13 times). Two such
//! picks in a row gave a daemon's admin API and its listener the same port, and the in-process
//! proxies and backends other tests bind meanwhile could take it before the daemon started. A
//! port below the ephemeral range is never handed out by the kernel, only taken by number.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out.
const FIRST: u32 = 10_000;

/// `n` distinct ports on 127.0.0.1 below the ephemeral range, each bindable when chosen.
/// Consecutive from a random start: the tests of one process never share a port, and
/// concurrent runs of the suite rarely meet (a port in use is skipped).
pub fn daemon_ports(n: usize) -> Vec<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let end = ephemeral_start().max(FIRST + 1_000);
    let span = end - FIRST;
    let start = {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32 % span
    };
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    // Held until all are chosen, so no two are the same even when the range wraps.
    let mut held = Vec::with_capacity(n);
    for _ in 0..span {
        if held.len() == n {
            break;
        }
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(port).expect("ports fit in u16");
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, l));
        }
    }
    assert_eq!(held.len(), n, "no {n} free ports in {FIRST}..{end}");
    held.into_iter().map(|(p, _)| p).collect()
}

/// The first port of `net.ipv4.ip_local_port_range` (32768 unless configured).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
        .min(65_536)
}
