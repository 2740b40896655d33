//! Types shared by the XDP programs and the userspace loader.
//!
//! Every type here is a map key or value: `#[repr(C)]`, padding spelled out as named fields so
//! the kernel never sees uninitialised bytes and BTF shows the true layout. Addresses and ports
//! are stored in network byte order, exactly as they appear on the wire, so the fast path never
//! swaps bytes.
#![no_std]

/// Upper bound on configured services (outer Maglev array, per-service counters).
pub const MAX_SERVICES: u32 = 256;
/// Upper bound on backend slots (backend array, per-backend counters).
pub const MAX_BACKENDS: u32 = 4096;
/// Default Maglev table size: prime, and large against 100 backends (evenness within 1%).
pub const DEFAULT_MAGLEV_SIZE: u32 = 65537;
/// Default connection table size (LRU entries).
pub const DEFAULT_CONNTRACK_SIZE: u32 = 65536;

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

/// Entries of `SERVICES`: every service plus one address marker per VIP address.
pub const MAX_SERVICE_ENTRIES: u32 = MAX_SERVICES * 2;
/// Slots of `VIP_FILTER` (a power of two).
pub const VIP_FILTER_SIZE: u32 = 4096;

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
    pub const REASONS: &str = "REASONS";
    /// `Array<u32>` indexed by `vip_filter_index`: the OR of the address-marker flags of every
    /// VIP hashing there. Array lookups are inlined by the verifier, hash lookups are calls;
    /// this keeps non-VIP traffic free of hash lookups and spares VIP traffic the marker
    /// lookup. A collision only costs a lookup that misses, never a wrong verdict.
    pub const VIP_FILTER: &str = "VIP_FILTER";
}

/// Program names in the object file.
pub mod programs {
    /// The balancer, attached to the LB node's LAN interfaces.
    pub const BALANCER: &str = "portier_lb";
    /// A plain `XDP_PASS`, needed on the peer of a veth that receives `XDP_TX` frames.
    pub const PASS: &str = "portier_pass";
    /// MAC swap + `XDP_TX`: the benchmark floor.
    pub const FLOOR: &str = "portier_floor";
}

/// Key of the service map: which VIP, port and protocol a packet is addressed to.
///
/// IPv4 addresses occupy the first four bytes of `addr`, the rest is zero. `port` 0 means
/// every port of that address and protocol; the program tries the exact port first.
#[repr(C)]
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
#[repr(C)]
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
    /// Non-SYN TCP packet with no entry (table pressure or another LB's flow): Maglev, recorded.
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
}

pub const REASON_COUNT: u32 = 20;

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
        }
    }
}

/// Slot of `addr` in `VIP_FILTER`.
#[inline(always)]
pub fn vip_filter_index(addr: &[u8; 16], family: u8) -> u32 {
    let w = word(addr, 0) ^ word(addr, 4) ^ word(addr, 8) ^ word(addr, 12) ^ family as u32;
    // Fibonacci hashing: the top bits of the product are well mixed.
    w.wrapping_mul(0x9e37_79b1) >> (32 - VIP_FILTER_SIZE.trailing_zeros())
}

/// The flow hash both the program and userspace tests use to pick a Maglev slot.
///
/// Deterministic and seedless on purpose: every LB node must map a flow to the same slot, so
/// that ECMP moving a flow between nodes does not move it between hosts.
#[inline(always)]
pub fn flow_hash(key: &FlowKey) -> u32 {
    // Murmur3-style mixing over the 36 meaningful bytes, as 9 little-endian words.
    let mut h: u32 = 0x9747_b28c;
    let mut i = 0;
    while i < 4 {
        h = mix(h, word(&key.src, i * 4));
        h = mix(h, word(&key.dst, i * 4));
        i += 1;
    }
    let ports = (key.sport as u32) | ((key.dport as u32) << 16);
    h = mix(h, ports);
    h = mix(h, (key.proto as u32) | ((key.family as u32) << 8));
    fmix(h ^ 36)
}

#[inline(always)]
fn word(b: &[u8; 16], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
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
    unsafe impl aya::Pod for Counters {}
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
        assert_eq!(size_of::<Counters>(), 16);
    }

    #[test]
    fn reasons_are_indexed_in_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
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
        // Seedless: a fixed vector, so any change to the hash is a visible, deliberate one.
        assert_eq!(flow_hash(&base), flow_hash(&base));
    }
}
