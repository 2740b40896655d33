//! Types shared by the XDP programs and the userspace loader.
//!
//! Every type here is a map key or value: `#[repr(C)]`, padding spelled out as named fields so
//! the kernel never sees uninitialised bytes and BTF shows the true layout. Addresses and ports
//! are stored in network byte order, exactly as they appear on the wire, so the fast path never
//! swaps bytes.
#![no_std]

pub mod diag;

/// Upper bound on configured services (outer Maglev array, per-service counters).
pub const MAX_SERVICES: u32 = 256;
/// Upper bound on backend slots (backend array, per-backend counters).
pub const MAX_BACKENDS: u32 = 4096;
/// Default Maglev table size: prime, and large against 100 backends (evenness within 1%).
pub const DEFAULT_MAGLEV_SIZE: u32 = 65537;
/// Default connection table size (flows).
pub const DEFAULT_CONNTRACK_SIZE: u32 = 65536;
/// Flows one bucket of the connection table holds (its ways). Eight: a bucket's tags and
/// stamps fill one cache line.
pub const FLOW_WAYS: usize = 8;
/// Buckets of the default table: the `max_entries` the program is built with (the loader
/// sets the configured one).
pub const DEFAULT_CONNTRACK_BUCKETS: u32 = conntrack_buckets(DEFAULT_CONNTRACK_SIZE);
/// Default of `FlowGuard::hold`, in `flow_clock` units (2^24 ns, about 16.8 ms): 256, about
/// 4.3 s. An entry is not replaced by a new flow before it is this old (and unused since it
/// was last aged).
pub const DEFAULT_FLOW_HOLD: u32 = 256;
/// Name of the program's global holding the connection table's bucket count minus one (a
/// power of two minus one), set at load from `conntrack_size`.
pub const CONNTRACK_MASK_GLOBAL: &str = "CONNTRACK_MASK";
/// Name of the program's global holding the connection table's `FlowHashKeys`, set at load
/// from the table's seed (`maps::CONNTRACK_SEED`).
pub const CONNTRACK_KEYS_GLOBAL: &str = "CONNTRACK_KEYS";

/// Buckets of a connection table for `size` flows: a power of two (the program masks the
/// flow's index hash), holding at least `size` flows.
pub const fn conntrack_buckets(size: u32) -> u32 {
    let b = size.div_ceil(FLOW_WAYS as u32);
    if b <= 1 { 1 } else { b.next_power_of_two() }
}

/// A Maglev slot value meaning "this service has no backend": such packets are dropped.
pub const NO_BACKEND: u32 = u32::MAX;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// `ServiceKey::proto` of an address marker: the entry `(vip, port 0, proto 0)` exists for every
/// address that has at least one service. The program looks it up first, so a packet to a
/// non-VIP costs one hash lookup, and ICMP/fragments/other protocols to a VIP are recognised.
pub const PROTO_ADDR_MARKER: u8 = 0;

/// `ServiceValue::flags` of an address marker.
pub const SERVICE_F_ADDR_MARKER: u32 = 1;
/// Marker flags: which service lookups can hit for this address, so misses cost nothing.
pub const SERVICE_F_EXACT_TCP: u32 = 1 << 1;
pub const SERVICE_F_EXACT_UDP: u32 = 1 << 2;
pub const SERVICE_F_WILDCARD_TCP: u32 = 1 << 3;
pub const SERVICE_F_WILDCARD_UDP: u32 = 1 << 4;

/// `ServiceValue::flags` of a service (not a marker): forward by IPIP encapsulation (IPv4 in
/// IPv4, IPv6 in IPv6) to the backend's address through the backend's next hop, instead of
/// L2 DSR.
pub const SERVICE_F_ENCAP_IPIP: u32 = 1 << 5;

/// `EncapSource::flags`: the IPv4 / IPv6 source prefix is configured.
pub const ENCAP_SOURCE_F_V4: u32 = 1;
pub const ENCAP_SOURCE_F_V6: u32 = 2;

/// Addresses `DECAP_ADDRS` can hold (the host's own tunnel endpoints).
pub const MAX_DECAP_ADDRS: u32 = 64;

/// Prefixes `DECAP_SOURCES` can hold (the balancers' outer source prefixes).
pub const MAX_DECAP_SOURCES: u32 = 64;

/// Prefixes `MIDFLOW_SOURCES` can hold.
pub const MAX_MIDFLOW_SOURCES: u32 = 256;

/// VIPs `DECAP_VIPS` can hold (what inner packets may be addressed to).
pub const MAX_DECAP_VIPS: u32 = 256;

/// Entries of `SERVICES`: every service plus one address marker per VIP address.
pub const MAX_SERVICE_ENTRIES: u32 = MAX_SERVICES * 2;
/// Slots of `VIP_FILTER` (a power of two).
pub const VIP_FILTER_SIZE: u32 = 4096;

/// Slots of `SERVICE_SLOTS` (a power of two).
pub const SERVICE_SLOTS_SIZE: u32 = 4096;

/// Entries of `TX_PORTS` (egress interfaces for devmap redirect).
pub const MAX_TX_PORTS: u32 = 64;

/// Map names, shared so the loader and the pin layout cannot drift from the program.
pub mod maps {
    pub const SERVICES: &str = "SERVICES";
    pub const MAGLEV: &str = "MAGLEV";
    pub const BACKENDS: &str = "BACKENDS";
    pub const CONNTRACK: &str = "CONNTRACK";
    pub const TX_PORTS: &str = "TX_PORTS";
    pub const SVC_STATS: &str = "SVC_STATS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    /// `PerCpuArray<[u64; REASON_SLOTS]>` of one entry, indexed inside by `Reason`.
    pub const REASONS: &str = "REASONS";
    /// `Array<u32>` indexed by `vip_filter_index`: the OR of the address-marker flags of every
    /// VIP hashing there. Array lookups are inlined by the verifier, hash lookups are calls;
    /// this keeps non-VIP traffic free of hash lookups and spares VIP traffic the marker
    /// lookup. A collision only costs a lookup that misses, never a wrong verdict.
    pub const VIP_FILTER: &str = "VIP_FILTER";
    /// `Array<ServiceSlot>` indexed by `service_slot_index`: a direct-mapped copy of
    /// `SERVICES` for the fast path. A hash lookup is a chain of kernel calls (hash, bucket
    /// walk, memcmp), each paying the return-thunk cost of the CPU's mitigations; an array
    /// lookup is inlined. `SERVICES` stays the authority: a slot that is torn (mid-update),
    /// or that spilled, sends the program there.
    pub const SERVICE_SLOTS: &str = "SERVICE_SLOTS";
    /// `Array<EncapSource>` of one entry: outer source addresses for IPIP services.
    pub const ENCAP_SOURCE: &str = "ENCAP_SOURCE";
    /// `HashMap<DecapKey, u32>`: addresses `portier_decap` strips tunnels addressed to.
    pub const DECAP_ADDRS: &str = "DECAP_ADDRS";
    /// `PerCpuArray<u64>` indexed by `DecapReason`.
    pub const DECAP_REASONS: &str = "DECAP_REASONS";
    /// `LpmTrie<SourcePrefix, u32>`: outer sources `portier_decap` accepts tunnels from.
    pub const DECAP_SOURCES: &str = "DECAP_SOURCES";
    /// `HashMap<DecapKey, u32>`: what inner packets may be addressed to.
    pub const DECAP_VIPS: &str = "DECAP_VIPS";
    /// `LpmTrie<SourcePrefix, u32>`: sources whose mid-flow TCP packets may create
    /// connection-table entries (`[dataplane] midflow_sources`).
    pub const MIDFLOW_SOURCES: &str = "MIDFLOW_SOURCES";
    /// `Array<FlowGuard>` of one entry: the SYN-flood guard's setting.
    pub const FLOW_GUARD: &str = "FLOW_GUARD";
    /// `Array<[u32; 10]>` of one entry: the connection table's seed (`FlowHashKeys::new`),
    /// pinned beside `CONNTRACK` so the seed lives exactly as long as the table. The program
    /// does not read it (it gets the keys as a load-time constant); the loader does.
    pub const CONNTRACK_SEED: &str = "CONNTRACK_SEED";
    /// `PerCpuArray<FlowWindow>` of one entry: new entries this CPU wrote in its current second.
    pub const FLOW_WINDOW: &str = "FLOW_WINDOW";
}

/// Program names in the object file.
/// The mixed live-frames workload (`portier_bench_gen_mixed`): the established flows come
/// from `MIXED_CLIENT`, source ports `MIXED_PORT_BASE ..+ MIXED_FLOWS`; new flows from
/// 10.128.0.0/10, one source address each.
pub mod bench {
    pub const MIXED_CLIENT: [u8; 4] = [198, 51, 100, 10];
    pub const MIXED_PORT_BASE: u16 = 10_000;
    pub const MIXED_FLOWS: u16 = 10_000;
    /// `BENCH_GEN_STATE`: the generator's state, an array of two per-CPU `u64`.
    pub const GEN_STATE: &str = "BENCH_GEN_STATE";
}

pub mod programs {
    /// The balancer, attached to the LB node's LAN interfaces.
    pub const BALANCER: &str = "portier_lb";
    /// A plain `XDP_PASS`, needed on the peer of a veth that receives `XDP_TX` frames.
    pub const PASS: &str = "portier_pass";
    /// MAC swap + `XDP_TX`: the benchmark floor.
    pub const FLOOR: &str = "portier_floor";
    /// The balancer behind a source-port bump: every test-run repetition a new flow.
    pub const BENCH_NEW_FLOWS: &str = "portier_bench_new_flows";
    /// `XDP_TX` everything: the live-frames generator.
    pub const BENCH_GEN: &str = "portier_bench_gen";
    /// The live-frames generator of the mixed workload: ACKs of established flows, and one
    /// SYN of a new flow in a set number of frames.
    pub const BENCH_GEN_MIXED: &str = "portier_bench_gen_mixed";
    /// `XDP_DROP` everything: where forwarded benchmark frames end.
    pub const BENCH_SINK: &str = "portier_bench_sink";
    /// Strips IPIP / IPv6-in-IPv6 addressed to the host and passes the inner packet up.
    pub const DECAP: &str = "portier_decap";
}

/// Key of the service map: which VIP, port and protocol a packet is addressed to.
///
/// IPv4 addresses occupy the first four bytes of `addr`, the rest is zero. `port` 0 means
/// every port of that address and protocol; the program tries the exact port first.
///
/// Aligned to 4 so the program can build it as five 32-bit words on its stack (the verifier
/// refuses misaligned stack access).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ServiceKey {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// Value of the service map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceValue {
    /// Index into `MAGLEV` and `SVC_STATS`.
    pub id: u32,
    /// Number of slots in this service's Maglev table (a prime).
    pub table_size: u32,
    pub flags: u32,
    pub _pad: u32,
}

/// The SYN-flood guard: how many new connection-table entries one CPU may write per second.
/// Past that, new flows are balanced by Maglev alone (consistent while the backend set does
/// not change) and not recorded, so a flood cannot evict established flows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowGuard {
    /// 0: no limit.
    pub new_flow_rate: u32,
    /// In `flow_clock` units (16.8 ms): a new flow replaces no entry younger than this, nor one used
    /// since it was last aged (that one is aged again instead); with no such way left in its
    /// bucket it is balanced by Maglev, not recorded (`conntrack_table_full`). 0: the oldest
    /// unused entry goes at once. (Was `_pad`, always 0, in the LRU table's time.)
    pub hold: u32,
}

/// One CPU's count of new entries in its current one-second window.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowWindow {
    /// `bpf_ktime_get_ns` when the window began.
    pub start_ns: u64,
    pub inserts: u64,
}

/// Outer source addresses for IPIP: `prefix | (flow hash & host_mask)`, so the flows of one
/// backend spread over the source addresses, and with them over the backend's receive queues
/// (RSS hashes the outer header). Bytes in network order.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EncapSource {
    pub v4_prefix: [u8; 4],
    pub v4_host_mask: [u8; 4],
    pub v6_prefix: [u8; 16],
    pub v6_host_mask: [u8; 16],
    /// `ENCAP_SOURCE_F_*`.
    pub flags: u32,
}

/// Data of a `DECAP_SOURCES` and `MIDFLOW_SOURCES` LPM key (after its `u32` prefix length, in bits over this
/// whole struct): the family word first, so a prefix of one family never matches the other.
/// An IPv4 prefix `a/n` is stored with length `32 + n`, IPv6 likewise.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SourcePrefix {
    pub family: u8,
    pub _pad: [u8; 3],
    /// IPv4 in the first four bytes, the rest zero.
    pub addr: [u8; 16],
}

/// Bits of `SourcePrefix` before the address: a prefix's length in the trie is this plus the
/// prefix's own.
pub const SOURCE_PREFIX_FAMILY_BITS: u32 = 32;

/// Key of `DECAP_ADDRS` and `DECAP_VIPS`.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DecapKey {
    /// IPv4 in the first four bytes, the rest zero.
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 3],
}

/// What `portier_decap` did with a packet: index into `DECAP_REASONS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapReason {
    /// Outer header stripped, inner packet passed to the stack.
    Decapsulated = 0,
    /// Not IPIP / IPv6-in-IPv6 (everything else the host receives).
    PassNotTunnel = 1,
    /// A tunnel packet to an address not in `DECAP_ADDRS`: left to the stack.
    PassNotLocal = 2,
    /// A tunnel packet we do not strip (outer IPv4 options, a fragment, VLAN-tagged): left to
    /// the stack, which has no tunnel module and drops it.
    PassUnsupported = 3,
    /// Frame ended inside a header.
    DropTruncated = 4,
    /// Inner packet is not the IP version the outer header announces.
    DropBadInner = 5,
    /// A tunnel from an outer source outside `DECAP_SOURCES`: not one of our balancers, and
    /// decapsulating it would let anyone inject packets with any inner source.
    DropSource = 6,
    /// An inner packet to an address outside `DECAP_VIPS`: the tunnel is for VIP traffic only.
    DropNotVip = 7,
}

pub const DECAP_REASON_COUNT: u32 = 8;

impl DecapReason {
    pub const ALL: [DecapReason; DECAP_REASON_COUNT as usize] = [
        DecapReason::Decapsulated,
        DecapReason::PassNotTunnel,
        DecapReason::PassNotLocal,
        DecapReason::PassUnsupported,
        DecapReason::DropTruncated,
        DecapReason::DropBadInner,
        DecapReason::DropSource,
        DecapReason::DropNotVip,
    ];

    /// Stable metric label.
    pub const fn name(self) -> &'static str {
        match self {
            DecapReason::Decapsulated => "decapsulated",
            DecapReason::PassNotTunnel => "pass_not_tunnel",
            DecapReason::PassNotLocal => "pass_not_local",
            DecapReason::PassUnsupported => "pass_unsupported",
            DecapReason::DropTruncated => "drop_truncated",
            DecapReason::DropBadInner => "drop_bad_inner",
            DecapReason::DropSource => "drop_source",
            DecapReason::DropNotVip => "drop_not_vip",
        }
    }
}

/// One slot of `SERVICE_SLOTS`.
///
/// Userspace writes a slot with a plain array update, which readers may see half done; `check`
/// (`service_slot_check` of the words before it) lets the program tell a torn slot from a
/// whole one, and a torn slot is answered from `SERVICES`, which is updated atomically.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceSlot {
    /// The service stored here (all zero in an empty slot).
    pub key: ServiceKey,
    pub value: ServiceValue,
    /// Non-zero when some service hashing to this slot is not the one stored: look it up in
    /// `SERVICES`.
    pub spill: u32,
    pub check: u32,
}

/// Words of a `ServiceSlot` covered by its check: key (5), value (4), spill (1).
pub const SERVICE_SLOT_WORDS: usize = 10;

impl ServiceKey {
    /// The key as five native-endian words, as the program builds it.
    #[inline(always)]
    pub fn words(&self) -> [u32; 5] {
        let a = addr_words(&self.addr);
        let p = self.port.to_ne_bytes();
        [
            a[0],
            a[1],
            a[2],
            a[3],
            u32::from_ne_bytes([p[0], p[1], self.proto, self.family]),
        ]
    }
}

impl ServiceSlot {
    /// A slot holding `key`/`value`, with its check.
    pub fn new(key: ServiceKey, value: ServiceValue, spill: bool) -> Self {
        let mut s = ServiceSlot {
            key,
            value,
            spill: spill as u32,
            check: 0,
        };
        s.check = service_slot_check(&s.words());
        s
    }

    /// The slot of an address with no service but where others spilled.
    pub fn spill_only() -> Self {
        Self::new(ServiceKey::default(), ServiceValue::default(), true)
    }

    pub fn words(&self) -> [u32; SERVICE_SLOT_WORDS] {
        let k = self.key.words();
        [
            k[0],
            k[1],
            k[2],
            k[3],
            k[4],
            self.value.id,
            self.value.table_size,
            self.value.flags,
            self.value._pad,
            self.spill,
        ]
    }
}

/// Slot of a service key in `SERVICE_SLOTS`.
#[inline(always)]
pub fn service_slot_index(key: &[u32; 5]) -> u32 {
    let a = (key[0] ^ key[1] ^ key[2] ^ key[3]).wrapping_mul(0x9e37_79b1);
    let h = (a ^ key[4]).wrapping_mul(0x85eb_ca6b);
    (h ^ (h >> 15)).wrapping_mul(0xc2b2_ae35) >> (32 - SERVICE_SLOTS_SIZE.trailing_zeros())
}

/// Check word of a slot's contents: a sum of the words times distinct odd constants. Any
/// change to one word changes the sum (an odd factor is invertible mod 2^32), a tear across
/// several words goes unseen with odds of about 2^-32, and the products are independent, so
/// the program computes them in parallel instead of as a chain. An all-zero slot (never
/// written) checks as 0, so an empty array is valid as created.
#[inline(always)]
pub fn service_slot_check(w: &[u32; SERVICE_SLOT_WORDS]) -> u32 {
    check_word(w)
}

/// Odd multipliers of the check words, one per word checked.
const CHECK_K: [u32; 12] = [
    0x9e37_79b1,
    0x85eb_ca6b,
    0xc2b2_ae35,
    0x27d4_eb2f,
    0x1656_67b1,
    0xcc9e_2d51,
    0x1b87_3593,
    0xe654_6b65,
    0x7fee_b3a5,
    0x94d0_49bb,
    0x2545_f491,
    0x9e6c_63d1,
];

/// The sum of each word times its multiplier: independent products, which the program
/// computes in parallel rather than as a chain.
#[inline(always)]
fn check_word<const N: usize>(w: &[u32; N]) -> u32 {
    const { assert!(N <= CHECK_K.len()) };
    let mut h: u32 = 0;
    let mut i = 0;
    while i < N {
        h = h.wrapping_add(w[i].wrapping_mul(CHECK_K[i]));
        i += 1;
    }
    h
}

/// A backend the balancer can send to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    /// The host's MAC address (next hop for L2 DSR).
    pub mac: [u8; 6],
    /// Our MAC address on the egress interface.
    pub src_mac: [u8; 6],
    /// Egress interface; `XDP_TX` when it is the ingress one, devmap redirect otherwise.
    pub ifindex: u32,
    /// Bumped whenever the slot is given to a different backend, so connection-table entries
    /// that still point at the previous occupant are recognised as stale.
    pub generation: u32,
    /// `BACKEND_F_*`.
    pub flags: u32,
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 3],
}

/// The slot holds a live backend whose MAC is known.
pub const BACKEND_F_VALID: u32 = 1;

/// Connection-table key: the flow as the client sent it.
///
/// Aligned to 4 for the same reason as `ServiceKey`: the program builds it as ten words.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Connection-table value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowValue {
    pub backend: u32,
    /// `Backend::generation` when the flow was pinned; a mismatch means the backend was
    /// removed from the configuration, and the flow is re-balanced.
    pub generation: u32,
}

/// One way of a connection-table bucket: a flow and its backend.
///
/// Written with plain stores, so a CPU may read a way another CPU is rewriting; `check`
/// (`flow_entry_check` of the words before it) tells a torn way from a whole one, and a
/// torn one is treated as a miss (Maglev decides, as for an evicted flow).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowEntry {
    pub key: FlowKey,
    pub value: FlowValue,
    pub check: u32,
    /// Non-zero once a packet used the entry since it was written or last aged. Here, not
    /// beside the stamp, so a hit touches the way's line only; not covered by `check`.
    pub used: u32,
    /// To 64 bytes: a way is one cache line (in a bucket that starts on one), so a hit in
    /// its home way reads one line and writing a new flow fills one.
    pub _pad: [u32; 2],
}

/// Words of a `FlowEntry` covered by its check: key (10), backend, generation. Then come
/// `check` (word 12) and `used` (word 13).
pub const FLOW_ENTRY_WORDS: usize = 12;

/// One bucket of the connection table (`CONNTRACK`, an array of them): the first cache line
/// holds each way's tag and stamp, so a miss reads one line and a hit two. 576 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowBucket {
    /// `flow_tag` of the flow in each way; 0: empty.
    pub tags: [u32; FLOW_WAYS],
    /// `flow_clock` when the way was written or last aged. 0: empty.
    pub stamps: [u32; FLOW_WAYS],
    pub ways: [FlowEntry; FLOW_WAYS],
}

impl FlowEntry {
    /// A whole entry for `key` -> `value`.
    pub fn new(key: FlowKey, value: FlowValue) -> Self {
        let w = key.words();
        let words = [
            w[0],
            w[1],
            w[2],
            w[3],
            w[4],
            w[5],
            w[6],
            w[7],
            w[8],
            w[9],
            value.backend,
            value.generation,
        ];
        FlowEntry {
            key,
            value,
            check: flow_entry_check(&words),
            used: 0,
            _pad: [0; 2],
        }
    }

    /// Whether the entry is whole (not torn by a concurrent write, not empty).
    pub fn whole(&self) -> bool {
        self.check == Self::new(self.key, self.value).check && self.check != 0
    }
}

impl FlowBucket {
    /// The way holding `key`, if any (whole entries only), in a table hashed with `keys`.
    pub fn find(&self, key: &FlowKey, keys: &FlowHashKeys) -> Option<usize> {
        let tag = flow_tag(flow_index_hash(&key.words(), keys));
        (0..FLOW_WAYS)
            .find(|&w| self.tags[w] == tag && self.ways[w].key == *key && self.ways[w].whole())
    }

    /// The flows this bucket holds.
    pub fn flows(&self) -> impl Iterator<Item = (FlowKey, FlowValue)> + '_ {
        (0..FLOW_WAYS)
            .filter(|&w| self.tags[w] != 0 && self.ways[w].whole())
            .map(|w| (self.ways[w].key, self.ways[w].value))
    }

    /// Puts `key` -> `value` (marked used) into its way, else the first empty way from its
    /// home on, as the program would; `false` when the bucket is full. `stamp` as in `stamps`;
    /// `keys`: the table's.
    pub fn put(&mut self, key: FlowKey, value: FlowValue, stamp: u32, keys: &FlowHashKeys) -> bool {
        let hash = flow_index_hash(&key.words(), keys);
        let home = flow_home(hash);
        let way = self.find(&key, keys).or_else(|| {
            (0..FLOW_WAYS)
                .map(|i| (home + i) % FLOW_WAYS)
                .find(|&w| self.stamps[w] == 0)
        });
        let Some(w) = way else {
            return false;
        };
        self.ways[w] = FlowEntry::new(key, value);
        self.ways[w].used = 1;
        self.stamps[w] = stamp;
        self.tags[w] = flow_tag(hash);
        true
    }
}

/// Bucket of a flow: its index hash masked to the table (`mask`: buckets - 1).
#[inline(always)]
pub fn flow_bucket(hash: u32, mask: u32) -> u32 {
    hash & mask
}

/// Home way of a flow in its bucket: looked at first, before the tags, and where an insert's
/// scan starts, so that while its bucket has room a flow sits there and a hit reads one line.
/// Bits the bucket index does not use.
#[inline(always)]
pub fn flow_home(hash: u32) -> usize {
    (hash >> 29) as usize & (FLOW_WAYS - 1)
}

/// Tag of a flow in its bucket: never 0, which marks an empty way.
#[inline(always)]
pub fn flow_tag(hash: u32) -> u32 {
    hash | 1
}

/// The connection table's clock: `CLOCK_MONOTONIC` (what `bpf_ktime_get_ns` reads) in units
/// of 2^24 ns (16.8 ms), plus one so a stamp is never 0. Stamps keep 31 bits of it: ages are
/// taken modulo 2^31 units, about 1.1 years, so an entry untouched that long looks young.
#[inline(always)]
pub fn flow_clock(ns: u64) -> u32 {
    ((ns >> 24) as u32 & 0x7fff_ffff).wrapping_add(1)
}

/// The additive keys of `flow_index_hash`: fixed constants XOR a per-table random seed.
/// NH with independent uniformly random keys is a universal hash family, so without the
/// seed nobody can tell which flows share a bucket or a home way; the seed is kept with the
/// pinned table (`maps::CONNTRACK_SEED`). Seed 0 gives the constants, the unseeded hash of
/// the builds before the seed, which a table pinned by one of them keeps.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHashKeys(pub [u32; 10]);

impl FlowHashKeys {
    /// The keys of seed 0.
    pub const UNSEEDED: FlowHashKeys = {
        // The check words' odd multipliers (golden ratio, Murmur3 and xxHash primes) serve
        // as this hash's constants too: one table of them, not two copies.
        let mut k = [0u32; 10];
        let mut i = 0;
        while i < 10 {
            k[i] = CHECK_K[i];
            i += 1;
        }
        FlowHashKeys(k)
    };

    /// The keys of a table seeded with `seed`.
    pub const fn new(seed: &[u32; 10]) -> Self {
        let mut k = Self::UNSEEDED.0;
        let mut i = 0;
        while i < 10 {
            k[i] ^= seed[i];
            i += 1;
        }
        FlowHashKeys(k)
    }
}

/// Index hash of a flow in the connection table, over `FlowKey::words`: NH-style, products
/// of word pairs (each plus a key) summed in 64 bits, then folded and mixed. Five
/// independent multiplies instead of the Maglev hash's chain of ten mixing rounds: the
/// established path computes this on every packet, the Maglev hash only on a miss.
/// `keys` come from the table's random seed (`FlowHashKeys`), so a flow's bucket cannot be
/// aimed at from outside; seed 0 (a table pinned by an older build) is the old unseeded hash.
#[inline(always)]
pub fn flow_index_hash(w: &[u32; 10], k: &FlowHashKeys) -> u32 {
    #[inline(always)]
    fn p(a: u32, b: u32, ka: u32, kb: u32) -> u64 {
        u64::from(a.wrapping_add(ka)).wrapping_mul(u64::from(b.wrapping_add(kb)))
    }
    let k = &k.0;
    let h = p(w[0], w[4], k[0], k[1])
        .wrapping_add(p(w[1], w[5], k[2], k[3]))
        .wrapping_add(p(w[2], w[6], k[4], k[5]))
        .wrapping_add(p(w[3], w[7], k[6], k[7]))
        .wrapping_add(p(w[8], w[9] & 0xffff, k[8], k[9]));
    let x = ((h >> 32) as u32) ^ (h as u32);
    let x = x.wrapping_mul(0x85eb_ca6b);
    x ^ (x >> 15)
}

/// Check word of a `FlowEntry` over its first `FLOW_ENTRY_WORDS` words, computed like
/// `service_slot_check` (independent products, so the program computes them in parallel).
/// Never 0 for a written entry in practice; an all-zero way checks as 0, and 0 marks empty.
#[inline(always)]
pub fn flow_entry_check(w: &[u32; FLOW_ENTRY_WORDS]) -> u32 {
    check_word(w)
}

/// Packet and byte counters (per CPU in the maps; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// Why a packet was passed, dropped or how it was forwarded: index into `REASONS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not IPv4/IPv6 (ARP, LLDP, ...).
    PassNotIp = 0,
    /// IP, but not addressed to a configured VIP/port/protocol (VRRP, OSPF, our own traffic).
    PassNotVip = 1,
    /// Addressed to a VIP but not TCP/UDP nor an ICMP error about a VIP flow (e.g. ping).
    PassVipOther = 2,
    /// IPv6 with an extension header before the transport header.
    PassIpv6ExtHeader = 3,
    /// Frame ended inside a header we needed.
    DropTruncated = 4,
    /// IPv4 header length below 20 bytes, or not IPv4 in an IPv4 ethertype.
    DropBadIhl = 5,
    /// IP total/payload length inconsistent with the frame.
    DropBadLength = 6,
    /// A fragment of a VIP datagram: without reassembly we cannot know its flow.
    DropFragment = 7,
    /// The service has no backend in its table.
    DropNoBackend = 8,
    /// Chosen backend slot holds no valid backend (MAC not resolved yet).
    DropBackendInvalid = 9,
    /// Forwarded back out the ingress interface (`XDP_TX`).
    ForwardTx = 10,
    /// Forwarded out another interface (devmap redirect).
    ForwardRedirect = 11,
    /// Packet followed an existing connection-table entry.
    ConntrackHit = 12,
    /// New flow (TCP SYN or first UDP packet) balanced by Maglev and recorded.
    ConntrackNew = 13,
    /// Non-SYN TCP packet with no entry from a source in `MIDFLOW_SOURCES` (another LB's
    /// flows, moved here by the routers): Maglev, recorded.
    ConntrackMissMidflow = 14,
    /// Entry pointed at a backend removed from the configuration: re-balanced.
    ConntrackStale = 15,
    /// ICMP error about a VIP flow, sent to that flow's backend.
    IcmpErrorForwarded = 16,
    /// More than one VLAN tag, or a tag we do not parse.
    PassVlanUnsupported = 17,
    /// Connection table insert failed.
    ConntrackInsertFailed = 18,
    /// Backend's egress interface is not in `TX_PORTS` (redirect failed): dropped.
    DropNoTxPort = 19,
    /// Forwarded inside an outer IP header (IPIP service); also counted as Tx or Redirect.
    EncapIpip = 20,
    /// IPIP service, but no source prefix for the family, or no room to grow the frame.
    DropEncapFailed = 21,
    /// An ICMP error not addressed to the VIP that sent the quoted datagram, or quoting more
    /// header than the ICMP message holds: a forged error, dropped.
    DropIcmpMismatch = 22,
    /// Non-SYN TCP packet with no entry from a source outside `MIDFLOW_SOURCES`: Maglev, not
    /// recorded, so a flood of forged mid-flow packets cannot evict established flows.
    ConntrackMidflowUntracked = 23,
    /// A new flow (SYN, first UDP datagram) while this CPU wrote more new entries this second
    /// than `FlowGuard::new_flow_rate`: Maglev, not recorded, so a SYN flood cannot evict the
    /// established flows.
    ConntrackFloodUntracked = 24,
    /// A new flow whose bucket held only entries younger than `FlowGuard::hold` or in use:
    /// Maglev, not recorded (the table protects the flows it has over new ones).
    ConntrackTableFull = 25,
    /// A new flow replaced the oldest unused entry of its bucket (counted besides
    /// `conntrack_new` or `conntrack_miss_midflow`).
    ConntrackEvicted = 26,
}

pub const REASON_COUNT: u32 = 27;

/// Counters in the `REASONS` value: room for reasons added later, so a newer program still
/// adopts the pinned map of an older one.
pub const REASON_SLOTS: u32 = 32;
const _: () = assert!(REASON_COUNT <= REASON_SLOTS);

impl Reason {
    pub const ALL: [Reason; REASON_COUNT as usize] = [
        Reason::PassNotIp,
        Reason::PassNotVip,
        Reason::PassVipOther,
        Reason::PassIpv6ExtHeader,
        Reason::DropTruncated,
        Reason::DropBadIhl,
        Reason::DropBadLength,
        Reason::DropFragment,
        Reason::DropNoBackend,
        Reason::DropBackendInvalid,
        Reason::ForwardTx,
        Reason::ForwardRedirect,
        Reason::ConntrackHit,
        Reason::ConntrackNew,
        Reason::ConntrackMissMidflow,
        Reason::ConntrackStale,
        Reason::IcmpErrorForwarded,
        Reason::PassVlanUnsupported,
        Reason::ConntrackInsertFailed,
        Reason::DropNoTxPort,
        Reason::EncapIpip,
        Reason::DropEncapFailed,
        Reason::DropIcmpMismatch,
        Reason::ConntrackMidflowUntracked,
        Reason::ConntrackFloodUntracked,
        Reason::ConntrackTableFull,
        Reason::ConntrackEvicted,
    ];

    pub const fn from_index(i: u32) -> Option<Reason> {
        if i < REASON_COUNT {
            Some(Self::ALL[i as usize])
        } else {
            None
        }
    }

    /// Stable metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassNotVip => "pass_not_vip",
            Reason::PassVipOther => "pass_vip_other",
            Reason::PassIpv6ExtHeader => "pass_ipv6_ext_header",
            Reason::DropTruncated => "drop_truncated",
            Reason::DropBadIhl => "drop_bad_ihl",
            Reason::DropBadLength => "drop_bad_length",
            Reason::DropFragment => "drop_fragment",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::DropBackendInvalid => "drop_backend_invalid",
            Reason::ForwardTx => "forward_tx",
            Reason::ForwardRedirect => "forward_redirect",
            Reason::ConntrackHit => "conntrack_hit",
            Reason::ConntrackNew => "conntrack_new",
            Reason::ConntrackMissMidflow => "conntrack_miss_midflow",
            Reason::ConntrackStale => "conntrack_stale",
            Reason::IcmpErrorForwarded => "icmp_error_forwarded",
            Reason::PassVlanUnsupported => "pass_vlan_unsupported",
            Reason::ConntrackInsertFailed => "conntrack_insert_failed",
            Reason::DropNoTxPort => "drop_no_tx_port",
            Reason::EncapIpip => "encap_ipip",
            Reason::DropEncapFailed => "drop_encap_failed",
            Reason::DropIcmpMismatch => "drop_icmp_mismatch",
            Reason::ConntrackMidflowUntracked => "conntrack_midflow_untracked",
            Reason::ConntrackFloodUntracked => "conntrack_flood_untracked",
            Reason::ConntrackTableFull => "conntrack_table_full",
            Reason::ConntrackEvicted => "conntrack_evicted",
        }
    }
}

/// Slot of `addr` in `VIP_FILTER`.
#[inline(always)]
pub fn vip_filter_index(addr: &[u8; 16], family: u8) -> u32 {
    vip_filter_index_words(&addr_words(addr), family)
}

/// `vip_filter_index` over the address as four native-endian words, as the program reads it.
#[inline(always)]
pub fn vip_filter_index_words(addr: &[u32; 4], family: u8) -> u32 {
    let w = addr[0] ^ addr[1] ^ addr[2] ^ addr[3] ^ family as u32;
    // Fibonacci hashing: the top bits of the product are well mixed.
    w.wrapping_mul(0x9e37_79b1) >> (32 - VIP_FILTER_SIZE.trailing_zeros())
}

/// An address as the four native-endian words the program loads from the packet.
#[inline(always)]
pub fn addr_words(b: &[u8; 16]) -> [u32; 4] {
    [word(b, 0), word(b, 4), word(b, 8), word(b, 12)]
}

impl FlowKey {
    /// The key as ten native-endian words: how the program builds it and hashes it.
    #[inline(always)]
    pub fn words(&self) -> [u32; 10] {
        let s = addr_words(&self.src);
        let d = addr_words(&self.dst);
        let sp = self.sport.to_ne_bytes();
        let dp = self.dport.to_ne_bytes();
        [
            s[0],
            s[1],
            s[2],
            s[3],
            d[0],
            d[1],
            d[2],
            d[3],
            u32::from_ne_bytes([sp[0], sp[1], dp[0], dp[1]]),
            u32::from_ne_bytes([self.proto, self.family, self._pad[0], self._pad[1]]),
        ]
    }
}

/// The flow hash both the program and userspace tests use to pick a Maglev slot.
///
/// Deterministic and seedless on purpose: every LB node must map a flow to the same slot, so
/// that ECMP moving a flow between nodes does not move it between hosts.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    flow_hash_words(&key.words())
}

/// `flow_hash` over `FlowKey::words` (the padding word's upper half is ignored).
#[inline(always)]
pub fn flow_hash_words(w: &[u32; 10]) -> u32 {
    // Murmur3-style mixing over the 36 meaningful bytes, as 9 words.
    let mut h: u32 = 0x9747_b28c;
    let mut i = 0;
    while i < 4 {
        h = mix(h, w[i]);
        h = mix(h, w[4 + i]);
        i += 1;
    }
    h = mix(h, w[8]);
    h = mix(h, w[9] & 0xffff);
    fmix(h ^ 36)
}

/// Native-endian, like a plain load from memory: the program and userspace agree on any host.
#[inline(always)]
fn word(b: &[u8; 16], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let mut k = k.wrapping_mul(0xcc9e_2d51);
    k = k.rotate_left(15);
    k = k.wrapping_mul(0x1b87_3593);
    let h = (h ^ k).rotate_left(13);
    h.wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all types are repr(C), Copy, and have no implicit padding.
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for FlowEntry {}
    unsafe impl aya::Pod for FlowBucket {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for ServiceSlot {}
    unsafe impl aya::Pod for EncapSource {}
    unsafe impl aya::Pod for FlowGuard {}
    unsafe impl aya::Pod for FlowWindow {}
    unsafe impl aya::Pod for DecapKey {}
    // SAFETY: as above; SourcePrefix is repr(C) with explicit padding, 20 bytes.
    unsafe impl aya::Pod for SourcePrefix {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 20);
        assert_eq!(size_of::<ServiceValue>(), 16);
        assert_eq!(size_of::<Backend>(), 44);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowValue>(), 8);
        assert_eq!(size_of::<FlowEntry>(), 64);
        assert_eq!(size_of::<FlowBucket>(), 576);
        assert_eq!(size_of::<Counters>(), 16);
        assert_eq!(size_of::<ServiceSlot>(), 44);
        assert_eq!(size_of::<EncapSource>(), 44);
        assert_eq!(size_of::<DecapKey>(), 20);
        assert_eq!(size_of::<SourcePrefix>(), 20);
    }

    #[test]
    fn reasons_are_indexed_in_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
        for (i, r) in DecapReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
    }

    #[test]
    fn flow_hash_depends_on_every_field() {
        let base = FlowKey {
            src: [198, 51, 100, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [203, 0, 113, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let h = flow_hash(&base);
        let mut k = base;
        k.sport = 40001u16.to_be();
        assert_ne!(flow_hash(&k), h);
        let mut k = base;
        k.src[3] = 11;
        assert_ne!(flow_hash(&k), h);
        let mut k = base;
        k.proto = PROTO_UDP;
        assert_ne!(flow_hash(&k), h);
    }

    #[test]
    fn slot_check_catches_any_single_changed_word() {
        let key = ServiceKey {
            addr: [203, 0, 113, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            port: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
        };
        let value = ServiceValue {
            id: 3,
            table_size: 65537,
            flags: 0,
            _pad: 0,
        };
        let slot = ServiceSlot::new(key, value, false);
        let w = slot.words();
        assert_eq!(service_slot_check(&w), slot.check);
        for i in 0..SERVICE_SLOT_WORDS {
            for bit in [0, 7, 31] {
                let mut t = w;
                t[i] ^= 1 << bit;
                assert_ne!(service_slot_check(&t), slot.check, "word {i} bit {bit}");
            }
            // Torn: this word still from an empty slot.
            let mut t = w;
            t[i] = 0;
            if w[i] != 0 {
                assert_ne!(service_slot_check(&t), slot.check, "word {i} zero");
            }
        }
        assert_eq!(service_slot_check(&[0; SERVICE_SLOT_WORDS]), 0);
    }

    #[test]
    fn entry_check_catches_any_single_changed_word_and_bucket_put_finds() {
        let key = FlowKey {
            src: [198, 51, 100, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [203, 0, 113, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let value = FlowValue {
            backend: 3,
            generation: 1,
        };
        let e = FlowEntry::new(key, value);
        assert!(e.whole());
        let mut t = e;
        t.value.backend = 4;
        assert!(!t.whole(), "a torn value");
        let mut t = e;
        t.key.sport = 1;
        assert!(!t.whole(), "a torn key");
        assert!(!FlowEntry::default().whole(), "an empty way");
        let keys = FlowHashKeys::new(&[0x5eed_0001; 10]);
        let mut b = FlowBucket::default();
        for i in 0..FLOW_WAYS as u16 {
            let mut k = key;
            k.sport = (1000 + i).to_be();
            let home = flow_home(flow_index_hash(&k.words(), &keys));
            let empty_home = b.stamps[home] == 0;
            assert!(b.put(k, value, 2, &keys));
            let w = b.find(&k, &keys).expect("found");
            assert_eq!(b.tags[w], flow_tag(flow_index_hash(&k.words(), &keys)));
            if empty_home {
                assert_eq!(w, home, "a free home way is taken");
            }
            assert_eq!(b.ways[w].used, 1);
        }
        let mut k = key;
        k.sport = 1u16.to_be();
        assert!(!b.put(k, value, 2, &keys), "full");
        assert_eq!(b.flows().count(), FLOW_WAYS);
        assert_eq!(conntrack_buckets(1), 1);
        assert_eq!(conntrack_buckets(65536), 8192);
        assert_eq!(conntrack_buckets(65537), 16384);
    }

    /// Fixed vectors, so any change to the hashes is a visible, deliberate one (every LB
    /// node of a deployment must compute the same Maglev and filter values; the index hash
    /// with seed 0 is what tables pinned by builds before the seed are indexed with).
    #[test]
    fn hash_vectors_are_pinned() {
        let k = FlowKey {
            src: [198, 51, 100, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst: [0x20, 1, 0xd, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        assert_eq!(flow_hash(&k), 0x6e1a_bc68);
        // The index of pinned tables: a change here strands their flows.
        // Seed 0: the builds before the seed hashed with the constants alone.
        assert_eq!(
            flow_index_hash(&k.words(), &FlowHashKeys::new(&[0; 10])),
            0x079e_809a
        );
        assert_eq!(vip_filter_index(&k.dst, FAMILY_V6), 1930);
    }

    /// Another seed moves a flow: over many flows, the bucket (of 2^13) and the home way
    /// differ about as often as for independent hashes. A seed that did not reach the
    /// hash, or reached only some words, would fail this.
    #[test]
    fn seed_moves_flows_between_buckets_and_homes() {
        let seeds = [[0u32; 10], [0x1234_5678; 10], {
            let mut s = [0u32; 10];
            s[9] = 0x8000_0001;
            s
        }];
        let mask = conntrack_buckets(65536) - 1;
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            let (ka, kb) = (FlowHashKeys::new(&seeds[a]), FlowHashKeys::new(&seeds[b]));
            let (mut same_bucket, mut same_home) = (0, 0);
            for i in 0..1000u16 {
                let k = FlowKey {
                    src: [
                        10,
                        0,
                        (i >> 8) as u8,
                        i as u8,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                    ],
                    dst: [203, 0, 113, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    sport: (20000 + i).to_be(),
                    dport: 80u16.to_be(),
                    proto: PROTO_TCP,
                    family: FAMILY_V4,
                    _pad: [0; 2],
                };
                let (ha, hb) = (
                    flow_index_hash(&k.words(), &ka),
                    flow_index_hash(&k.words(), &kb),
                );
                same_bucket += u32::from(flow_bucket(ha, mask) == flow_bucket(hb, mask));
                same_home += u32::from(flow_home(ha) == flow_home(hb));
            }
            // Independent: ~0.12 of 1000 share a bucket, ~125 a home way.
            assert!(
                same_bucket <= 5,
                "seeds {a},{b}: {same_bucket} flows kept their bucket"
            );
            assert!(
                same_home < 200,
                "seeds {a},{b}: {same_home} flows kept their home way"
            );
        }
        assert_eq!(FlowHashKeys::new(&[0; 10]), FlowHashKeys::UNSEEDED);
    }
}
