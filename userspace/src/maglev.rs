//! Weighted Maglev lookup-table builder (Eisenbud et al., NSDI 2016).
//!
//! Every LB node builds its table independently, and ECMP may send one flow to any of them, so
//! the table must be a pure function of the backend set: the hashes are fixed (no per-process
//! seed) and the input order does not matter.
//!
//! Weights use credits: each round every backend earns its weight and claims a slot only when
//! its credit reaches the largest weight. The heaviest backend therefore claims one slot per
//! round and the others in proportion, so shares match weights to within one round.

/// One backend as the table builder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevInput<'a> {
    /// Stable identity, e.g. the backend address as text. Keys must be unique: two equal keys
    /// get the same permutation and which of them wins a slot depends on input order.
    pub key: &'a str,
    /// Relative share of the table; 0 means no slots (drained).
    pub weight: u32,
}

/// Builds a Maglev table of `table_size` entries, each an index into `backends`.
///
/// Returns `None` when no backend has a weight above 0, or when `table_size` is not prime
/// (a composite size lets some permutations cycle without ever visiting a free slot).
pub fn build(backends: &[MaglevInput<'_>], table_size: u32) -> Option<Vec<u32>> {
    if !is_prime(table_size) {
        return None;
    }
    let max_weight = backends.iter().map(|b| b.weight).max().filter(|&w| w > 0)?;
    let size = u64::from(table_size);

    // Sorting by key makes the result independent of input order; `index` maps back.
    let mut order: Vec<usize> = (0..backends.len())
        .filter(|&i| backends[i].weight > 0)
        .collect();
    order.sort_by(|&a, &b| {
        (backends[a].key, backends[a].weight).cmp(&(backends[b].key, backends[b].weight))
    });

    let mut walkers: Vec<Walker> = order
        .iter()
        .map(|&index| {
            let key = backends[index].key.as_bytes();
            Walker {
                // usize -> u32 cannot truncate in practice: the table holds u32 indices and
                // a backend list longer than u32::MAX does not fit in memory anyway.
                index: index as u32,
                weight: u64::from(backends[index].weight),
                credit: 0,
                position: hash(OFFSET_SEED, key) % size,
                skip: hash(SKIP_SEED, key) % (size - 1) + 1,
            }
        })
        .collect();

    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; table_size as usize];
    let mut filled: u64 = 0;
    let max_weight = u64::from(max_weight);
    while filled < size {
        for walker in &mut walkers {
            walker.credit += walker.weight;
            if walker.credit < max_weight {
                continue;
            }
            walker.credit -= max_weight;
            // Terminates: `skip` is in [1, size-1] and `size` is prime, so the walk visits
            // every slot, and at least one is still free.
            while table[walker.position as usize] != EMPTY {
                walker.advance(size);
            }
            table[walker.position as usize] = walker.index;
            walker.advance(size);
            filled += 1;
            if filled == size {
                break;
            }
        }
    }
    Some(table)
}

/// Deterministic trial division; table sizes are at most a few million, so this is cheap.
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = u64::from(n);
    let mut d: u64 = 5;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// A backend's walk through its permutation, plus its weight credit.
struct Walker {
    index: u32,
    weight: u64,
    credit: u64,
    position: u64,
    skip: u64,
}

impl Walker {
    fn advance(&mut self, size: u64) {
        self.position += self.skip;
        if self.position >= size {
            self.position -= size;
        }
    }
}

// Two different FNV-1a offset bases give two hash functions; the first is the standard one.
const OFFSET_SEED: u64 = 0xcbf2_9ce4_8422_2325;
const SKIP_SEED: u64 = 0x8422_2325_cbf2_9ce4;

/// FNV-1a 64 followed by the murmur3 finaliser: FNV alone mixes its last bytes poorly into
/// the low bits, and the low bits are what `% size` keeps. Part of the cross-node contract:
/// changing it changes every node's table.
fn hash(seed: u64, key: &[u8]) -> u64 {
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = seed;
    for &byte in key {
        h ^= u64::from(byte);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests;
