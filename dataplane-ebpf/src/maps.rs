//! Map definitions. BTF maps throughout, so pinned maps dump with named fields.

use aya_ebpf::{
    bindings::BPF_F_INNER_MAP,
    btf_maps::{Array, ArrayOfMaps, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use dataplane_common::{
    Backend, CONNTRACK_MAP_FLAGS, Counters, DECAP_REASON_COUNT, DEFAULT_CONNTRACK_SIZE,
    DEFAULT_MAGLEV_SIZE, DecapKey, EncapSource, FlowGuard, FlowKey, FlowValue, FlowWindow,
    MAX_BACKENDS, MAX_DECAP_ADDRS, MAX_DECAP_SOURCES, MAX_DECAP_VIPS, MAX_MIDFLOW_SOURCES,
    MAX_SERVICE_ENTRIES, MAX_SERVICES, MAX_TX_PORTS, REASON_SLOTS, SERVICE_SLOTS_SIZE, ServiceKey,
    ServiceSlot, ServiceValue, SourcePrefix, VIP_FILTER_SIZE,
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

/// The connection table: one hash table every CPU looks flows up in, with an LRU list per CPU
/// (`BPF_F_NO_COMMON_LRU`). A CPU takes free entries and evicts only from its own list (its
/// share, max_entries / CPUs), so new flows on one CPU never wait on another's lock; a flow
/// that moves to another CPU (RSS change, veth) is still found, and hits from any CPU keep it
/// young. The trade-off (README, "Connection table"): a CPU that gets more than its share of
/// new flows evicts its own oldest entries while other CPUs' shares sit unused.
#[btf_map]
pub static CONNTRACK: LruHashMap<
    FlowKey,
    FlowValue,
    { DEFAULT_CONNTRACK_SIZE as usize },
    { CONNTRACK_MAP_FLAGS as usize },
> = LruHashMap::new();

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
