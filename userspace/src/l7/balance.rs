//! Choosing a server in a pool: pure functions over a view of the servers, so each policy is
//! tested without sockets. Nothing here locks: state is the caller's atomics.

/// What a policy sees of one server.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// Healthy, not ejected, weight above 0.
    pub available: bool,
    pub weight: u32,
    /// Requests sent and not yet answered.
    pub outstanding: usize,
    /// Stable identity for hashing (from the server's address), so a key keeps its server
    /// across reloads and other servers coming and going.
    pub id: u64,
}

/// The order smooth weighted round robin visits servers in, computed once per snapshot:
/// weights 5,1,1 give a,a,b,a,c,a,a rather than a,a,a,a,a,b,c.
pub fn round_robin_sequence(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let Some(best) = (0..weights.len()).max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
        else {
            break;
        };
        current[best] -= total;
        out.push(best);
    }
    out
}

/// The next available server in `sequence` from position `tick`.
pub fn round_robin(sequence: &[usize], tick: usize, servers: &[Candidate]) -> Option<usize> {
    round_robin_by(sequence, tick, |s| servers[s].available)
}

/// `round_robin` asking `available` about each server it visits, so a pool need not build
/// the view of all its servers for a request (the other policies look at every server).
pub fn round_robin_by(
    sequence: &[usize],
    tick: usize,
    mut available: impl FnMut(usize) -> bool,
) -> Option<usize> {
    if sequence.is_empty() {
        return None;
    }
    (0..sequence.len())
        .map(|i| sequence[(tick.wrapping_add(i)) % sequence.len()])
        .find(|&s| available(s))
}

/// Power of two choices: two random available servers, the one with fewer outstanding
/// requests per unit of weight wins. `random` gives two independent draws.
pub fn least_outstanding(servers: &[Candidate], random: (u64, u64)) -> Option<usize> {
    let available: Vec<usize> = (0..servers.len())
        .filter(|&i| servers[i].available)
        .collect();
    match available.len() {
        0 => None,
        1 => Some(available[0]),
        n => {
            let a = available[(random.0 % n as u64) as usize];
            // Draw the second among the other n-1 so the two always differ.
            let mut b = available[(random.1 % (n as u64 - 1)) as usize];
            if b == a {
                b = available[n - 1];
            }
            // Compare outstanding/weight without division: oa * wb vs ob * wa.
            let load = |x: usize, y: usize| {
                (servers[x].outstanding as u128 + 1) * u128::from(servers[y].weight)
            };
            Some(if load(a, b) <= load(b, a) { a } else { b })
        }
    }
}

/// Weighted rendezvous hashing: each key ranks servers by a per-(key, server) score, so a
/// server leaving moves only its own keys.
pub fn consistent_hash(servers: &[Candidate], key: u64) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    for (i, s) in servers.iter().enumerate().filter(|(_, s)| s.available) {
        let h = mix(key ^ mix(s.id));
        // Uniform in (0, 1); -w / ln(u) is the weighted HRW score.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -f64::from(s.weight) / u.ln();
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| i)
}

/// splitmix64's finaliser: cheap, well spread.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over bytes, then mixed: the hash key of a header or cookie value.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// A per-thread xorshift generator: the balancer needs speed, not quality.
pub fn random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(mix(std::ptr::from_ref(&STATE) as u64 ^ std::process::id() as u64));
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(weight: u32, outstanding: usize, id: u64) -> Candidate {
        Candidate {
            available: weight > 0,
            weight,
            outstanding,
            id,
        }
    }

    #[test]
    fn smooth_weighted_sequence() {
        assert_eq!(round_robin_sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(round_robin_sequence(&[1, 1, 1]), vec![0, 1, 2]);
        assert_eq!(round_robin_sequence(&[0, 2]), vec![1, 1]);
        assert!(round_robin_sequence(&[0, 0]).is_empty());
        assert!(round_robin_sequence(&[]).is_empty());
    }

    #[test]
    fn round_robin_skips_unavailable() {
        let servers = [c(1, 0, 1), c(1, 0, 2), c(1, 0, 3)];
        let seq = round_robin_sequence(&[1, 1, 1]);
        let picks: Vec<_> = (0..6).map(|t| round_robin(&seq, t, &servers)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2].map(Some));
        let mut down = servers;
        down[1].available = false;
        let picks: Vec<_> = (0..4).map(|t| round_robin(&seq, t, &down)).collect();
        assert_eq!(picks, [0, 2, 2, 0].map(Some));
        let none = [c(0, 0, 1)];
        assert_eq!(round_robin(&round_robin_sequence(&[1]), 0, &none), None);
    }

    #[test]
    fn two_choices_prefers_the_less_loaded() {
        let servers = [c(1, 10, 1), c(1, 0, 2)];
        for r in 0..20u64 {
            assert_eq!(least_outstanding(&servers, (r, r * 7)), Some(1));
        }
        // Weight 4 with 3 outstanding is less loaded than weight 1 with 1.
        let servers = [c(4, 3, 1), c(1, 1, 2)];
        assert_eq!(least_outstanding(&servers, (0, 0)), Some(0));
        let servers = [c(0, 0, 1), c(1, 50, 2), c(0, 0, 3)];
        assert_eq!(least_outstanding(&servers, (5, 9)), Some(1));
        assert_eq!(least_outstanding(&[c(0, 0, 1)], (1, 2)), None);
    }

    #[test]
    fn two_choices_spreads_when_equal() {
        let servers = [c(1, 0, 1), c(1, 0, 2), c(1, 0, 3)];
        let mut hits = [0; 3];
        for _ in 0..3000 {
            hits[least_outstanding(&servers, (random(), random())).unwrap()] += 1;
        }
        assert!(hits.iter().all(|&h| h > 700), "{hits:?}");
    }

    #[test]
    fn hash_is_stable_and_moves_only_the_lost_servers_keys() {
        let servers = [c(1, 0, 11), c(1, 0, 22), c(1, 0, 33), c(1, 0, 44)];
        let keys: Vec<u64> = (0..4000)
            .map(|k| hash_bytes(format!("user{k}").as_bytes()))
            .collect();
        let before: Vec<_> = keys
            .iter()
            .map(|&k| consistent_hash(&servers, k).unwrap())
            .collect();
        let mut counts = [0; 4];
        for &b in &before {
            counts[b] += 1;
        }
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
        let mut less = servers;
        less[2].available = false;
        for (&k, &b) in keys.iter().zip(&before) {
            let after = consistent_hash(&less, k).unwrap();
            if b != 2 {
                assert_eq!(after, b, "a key of a remaining server moved");
            } else {
                assert_ne!(after, 2);
            }
        }
        // Weights shift shares: 3:1.
        let weighted = [c(3, 0, 11), c(1, 0, 22)];
        let first = keys
            .iter()
            .filter(|&&k| consistent_hash(&weighted, k) == Some(0))
            .count();
        assert!((2800..3200).contains(&first), "{first}");
        assert_eq!(consistent_hash(&[c(0, 0, 1)], 5), None);
    }
}
