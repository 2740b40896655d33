//! Longest-prefix lookups of a source address in an `LpmTrie<SourcePrefix, u32>` (the
//! decapsulator's balancer prefixes, the balancer's mid-flow sources).

use aya_ebpf::btf_maps::{LpmTrie, lpm_trie::Key};
use dataplane_common::{SOURCE_PREFIX_FAMILY_BITS, SourcePrefix};

use crate::parse::Stack;

/// Whether `addr` (IPv4 in the first word) of `family` lies in one of the trie's prefixes.
#[inline(always)]
pub fn in_prefixes<const N: usize, const F: usize>(
    trie: &LpmTrie<SourcePrefix, u32, N, F>,
    addr: [u32; 4],
    family: u8,
) -> bool {
    // Key<SourcePrefix> as words: the prefix length (the whole key: a lookup matches the
    // longest stored prefix), the family word, the address.
    let words = Stack([
        SOURCE_PREFIX_FAMILY_BITS + 128,
        u32::from_ne_bytes([family, 0, 0, 0]),
        addr[0],
        addr[1],
        addr[2],
        addr[3],
    ]);
    // SAFETY: Key<SourcePrefix> is repr(C, packed): u32 then 20 bytes, any bit pattern valid.
    let key = unsafe { &*(words.0.as_ptr() as *const Key<SourcePrefix>) };
    trie.get(key).is_some()
}
