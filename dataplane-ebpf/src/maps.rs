//! Map definitions. BTF maps throughout, so pinned maps dump with named fields.

use aya_ebpf::{
    Global,
    bindings::BPF_F_INNER_MAP,
    btf_maps::{Array, ArrayOfMaps, DevMapHash, HashMap, LpmTrie, PerCpuArray},
    macros::btf_map,
};
use dataplane_common::{
    Backend, Counters, DECAP_REASON_COUNT, DEFAULT_CONNTRACK_BUCKETS, DEFAULT_MAGLEV_SIZE,
    DecapKey, EncapSource, FlowBucket, FlowGuard, FlowHashKeys, FlowWindow, MAX_BACKENDS,
    MAX_DECAP_ADDRS, MAX_DECAP_SOURCES, MAX_DECAP_VIPS, MAX_MIDFLOW_SOURCES, MAX_SERVICE_ENTRIES,
    MAX_SERVICES, MAX_TX_PORTS, REASON_SLOTS, SERVICE_SLOTS_SIZE, ServiceKey, ServiceSlot,
    ServiceValue, SourcePrefix, VIP_FILTER_SIZE,
};

/// Template of a service's Maglev table. `BPF_F_INNER_MAP` lets userspace insert tables of any
/// size (the configured prime), not just `DEFAULT_MAGLEV_SIZE`.
pub type MaglevTable = Array<u32, { DEFAULT_MAGLEV_SIZE as usize }, { BPF_F_INNER_MAP as usize }>;

#[btf_map]
pub static SERVICES: HashMap<ServiceKey, ServiceValue, { MAX_SERVICE_ENTRIES as usize }> =
    HashMap::new();

#[btf_map]
pub static MAGLEV: ArrayOfMaps<MaglevTable, { MAX_SERVICES as usize }> = ArrayOfMaps::new();

#[btf_map]
pub static BACKENDS: Array<Backend, { MAX_BACKENDS as usize }> = Array::new();

/// The connection table: a set-associative array of buckets the program indexes itself
/// (`flow_index_hash` masked by `CONNTRACK_MASK`), shared by all CPUs. An array lookup is
/// inlined by the verifier, where a hash map's is a helper call (hash, bucket walk, memcmp,
/// each return through the CPU's return thunk); replacing the oldest unused way of a bucket
/// costs a few stores, where the kernel LRU's insert pops free lists and evicts under locks.
/// Ways are written with plain stores: each carries a check word, so a way torn by a
/// concurrent writer reads as a miss (README, "Connection table").
#[btf_map]
pub static CONNTRACK: Array<FlowBucket, { DEFAULT_CONNTRACK_BUCKETS as usize }> = Array::new();

/// Buckets of `CONNTRACK` minus one (a power of two minus one), set by the loader from
/// `conntrack_size` together with the map's `max_entries`.
#[unsafe(no_mangle)]
pub static CONNTRACK_MASK: Global<u32> = Global::new(DEFAULT_CONNTRACK_BUCKETS - 1);

/// `FlowHashKeys` of `CONNTRACK`, set by the loader from the table's seed (`CONNTRACK_SEED`).
/// In the frozen .rodata, so the verifier knows the words as constants; read word by word
/// (`conntrack_keys`) so each is one load, not a copy of the array through the stack.
#[unsafe(no_mangle)]
static CONNTRACK_KEYS: [u32; 10] = FlowHashKeys::UNSEEDED.0;

/// The keys in `CONNTRACK_KEYS`.
#[inline(always)]
pub fn conntrack_keys() -> FlowHashKeys {
    let mut k = [0u32; 10];
    let mut i = 0;
    while i < 10 {
        // SAFETY: `i < 10`; volatile, so the build's default is not folded in.
        k[i] = unsafe { core::ptr::read_volatile(CONNTRACK_KEYS.as_ptr().add(i)) };
        i += 1;
    }
    FlowHashKeys(k)
}

/// The seed `CONNTRACK_KEYS` was made from, pinned with the table: only the loader reads it.
#[btf_map]
pub static CONNTRACK_SEED: Array<[u32; 10], 1> = Array::new();

#[btf_map]
pub static TX_PORTS: DevMapHash<{ MAX_TX_PORTS as usize }> = DevMapHash::new();

#[btf_map]
pub static SVC_STATS: PerCpuArray<Counters, { MAX_SERVICES as usize }> = PerCpuArray::new();

#[btf_map]
pub static BACKEND_STATS: PerCpuArray<Counters, { MAX_BACKENDS as usize }> = PerCpuArray::new();

#[btf_map]
pub static REASONS: PerCpuArray<[u64; REASON_SLOTS as usize], 1> = PerCpuArray::new();

#[btf_map]
pub static VIP_FILTER: Array<u32, { VIP_FILTER_SIZE as usize }> = Array::new();

#[btf_map]
pub static SERVICE_SLOTS: Array<ServiceSlot, { SERVICE_SLOTS_SIZE as usize }> = Array::new();

#[btf_map]
pub static ENCAP_SOURCE: Array<EncapSource, 1> = Array::new();

#[btf_map]
pub static DECAP_ADDRS: HashMap<DecapKey, u32, { MAX_DECAP_ADDRS as usize }> = HashMap::new();

#[btf_map]
pub static DECAP_REASONS: PerCpuArray<u64, { DECAP_REASON_COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub static DECAP_SOURCES: LpmTrie<SourcePrefix, u32, { MAX_DECAP_SOURCES as usize }> =
    LpmTrie::new();

#[btf_map]
pub static DECAP_VIPS: HashMap<DecapKey, u32, { MAX_DECAP_VIPS as usize }> = HashMap::new();

#[btf_map]
pub static MIDFLOW_SOURCES: LpmTrie<SourcePrefix, u32, { MAX_MIDFLOW_SOURCES as usize }> =
    LpmTrie::new();

#[btf_map]
pub static FLOW_GUARD: Array<FlowGuard, 1> = Array::new();

#[btf_map]
pub static FLOW_WINDOW: PerCpuArray<FlowWindow, 1> = PerCpuArray::new();

/// Benchmark only: the mixed live-frames generator's frame count on this CPU (slot 0) and its
/// period of new flows (slot 1: one frame in that many; 0, none).
#[btf_map]
pub static BENCH_GEN_STATE: PerCpuArray<u64, 2> = PerCpuArray::new();
