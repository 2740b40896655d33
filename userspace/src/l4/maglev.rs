//! Weighted Maglev lookup-table builder (Eisenbud et al., NSDI 2016).
//!
//! Every LB node builds its table independently, and ECMP may send one flow to any of them, so
//! the table must be a pure function of the backend set: the hashes are fixed (no per-process
//! seed) and the input order does not matter.
//!
//! Weights use credits: each round every backend earns its weight and claims a slot only when
//! its credit reaches the largest weight. The heaviest backend therefore claims one slot per
//! round and the others in proportion, so shares match weights to within one round. Within a
//! round backends go in key order.

pub use crate::limits::is_prime;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

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
        .map(|&index| Walker::new(index, &backends[index], size))
        .collect();

    let max_weight = u64::from(max_weight);
    // Round by round costs N per round; rounds ~ M * max / sum. When a few heavy backends sit
    // among many light ones most rounds fill one slot, and the heap (O(M log N), but slower
    // per slot) wins. Both fill in exactly the same order, so the choice is invisible.
    let total: u64 = walkers.iter().map(|w| w.weight).sum();
    let rounds = size.saturating_mul(max_weight) / total.max(1) + 1;
    let table = if rounds.saturating_mul(walkers.len() as u64) <= 16 * size {
        fill_by_rounds(&mut walkers, size, max_weight)
    } else {
        fill_by_heap(&mut walkers, size, max_weight)
    };
    Some(table)
}

const EMPTY: u32 = u32::MAX;

fn fill_by_rounds(walkers: &mut [Walker], size: u64, max_weight: u64) -> Vec<u32> {
    let mut table = vec![EMPTY; size as usize];
    let mut filled: u64 = 0;
    let mut round: u64 = 0;
    while filled < size {
        round += 1;
        for walker in walkers.iter_mut() {
            if walker.next_round(max_weight) > round {
                continue;
            }
            walker.claim(&mut table, size);
            filled += 1;
            if filled == size {
                break;
            }
        }
    }
    table
}

fn fill_by_heap(walkers: &mut [Walker], size: u64, max_weight: u64) -> Vec<u32> {
    // Ties in round go by rank, i.e. key order, exactly as `fill_by_rounds` visits them.
    let mut due: BinaryHeap<Reverse<(u64, usize)>> = walkers
        .iter()
        .enumerate()
        .map(|(rank, walker)| Reverse((walker.next_round(max_weight), rank)))
        .collect();
    let mut table = vec![EMPTY; size as usize];
    let mut filled: u64 = 0;
    while filled < size {
        let Some(Reverse((_, rank))) = due.pop() else {
            break; // unreachable: every walker is always due again
        };
        let walker = &mut walkers[rank];
        walker.claim(&mut table, size);
        filled += 1;
        due.push(Reverse((walker.next_round(max_weight), rank)));
    }
    table
}

/// A backend's walk through its permutation, plus how many slots it has claimed.
struct Walker {
    index: u32,
    weight: u64,
    fills: u64,
    position: u64,
    skip: u64,
}

impl Walker {
    fn new(index: usize, backend: &MaglevInput<'_>, size: u64) -> Self {
        let key = backend.key.as_bytes();
        Self {
            // usize -> u32 cannot truncate in practice: the table holds u32 indices and a
            // backend list longer than u32::MAX does not fit in memory anyway.
            index: index as u32,
            weight: u64::from(backend.weight),
            fills: 0,
            position: hash(OFFSET_SEED, key) % size,
            skip: hash(SKIP_SEED, key) % (size - 1) + 1,
        }
    }

    /// The 1-based round in which the credit (`weight` per round, `max_weight` per slot)
    /// pays for the next slot: the first `r` with `r * weight >= (fills + 1) * max_weight`.
    fn next_round(&self, max_weight: u64) -> u64 {
        let owed = u128::from(self.fills + 1) * u128::from(max_weight);
        let round = owed.div_ceil(u128::from(self.weight));
        // At most fills + 1 <= table_size <= u32::MAX times max_weight / 1: fits in u64.
        u64::try_from(round).unwrap_or(u64::MAX)
    }

    /// Takes the next free slot on this walker's permutation.
    fn claim(&mut self, table: &mut [u32], size: u64) {
        // Terminates: `skip` is in [1, size-1] and `size` is prime, so the walk visits every
        // slot, and the callers stop once none is free.
        while table[self.position as usize] != EMPTY {
            self.advance(size);
        }
        table[self.position as usize] = self.index;
        self.advance(size);
        self.fills += 1;
    }

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
