//! The L4 balancer: parse, find the service, pick the backend, rewrite MACs, forward.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use dataplane_common::{
    BACKEND_F_VALID, Backend, FAMILY_V4, FAMILY_V6, FLOW_ENTRY_WORDS, FLOW_WAYS, FlowBucket,
    FlowValue, NO_BACKEND, PROTO_ADDR_MARKER, REASON_SLOTS, Reason, SERVICE_F_ENCAP_IPIP,
    SERVICE_F_EXACT_TCP, SERVICE_F_EXACT_UDP, SERVICE_F_WILDCARD_TCP, SERVICE_F_WILDCARD_UDP,
    SERVICE_SLOT_WORDS, ServiceKey, ServiceValue, flow_bucket, flow_clock, flow_entry_check,
    flow_hash_words, flow_home, flow_index_hash, flow_tag, service_slot_check, service_slot_index,
    vip_filter_index_words,
};

/// An address as four native-endian words, as loaded from the packet (IPv4: `[a, 0, 0, 0]`).
/// Keys are built from words so every copy is a handful of 32-bit moves, never byte loops.
type Addr = [u32; 4];

use crate::{
    encap::encapsulate,
    maps::{
        BACKEND_STATS, BACKENDS, CONNTRACK, CONNTRACK_MASK, FLOW_GUARD, FLOW_WINDOW, MAGLEV,
        MIDFLOW_SOURCES, REASONS, SERVICE_SLOTS, SERVICES, SVC_STATS, TX_PORTS, VIP_FILTER,
        conntrack_keys,
    },
    parse::*,
    prefix::in_prefixes,
};

/// How the packet relates to its flow; decides conntrack handling.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// TCP SYN without ACK: always balanced afresh.
    Syn,
    /// Any other TCP segment.
    TcpOther,
    Udp,
    /// ICMP error about a flow: follows it, but never creates or repairs state.
    IcmpError,
}

/// The per-CPU reason counters, looked up once per packet where several reasons are
/// counted (a forwarded packet counts its connection-table outcome and its verdict).
struct Tally(Option<*mut [u64; REASON_SLOTS as usize]>);

impl Tally {
    #[inline(always)]
    fn get() -> Self {
        Tally(REASONS.get_ptr_mut(0))
    }

    #[inline(always)]
    fn add(&self, reason: Reason) {
        if let Some(p) = self.0 {
            // SAFETY: per-CPU value, only this program on this CPU writes it; `reason` is
            // below REASON_SLOTS by construction.
            unsafe { (*p)[reason as usize] += 1 };
        }
    }
}

#[inline(always)]
fn count(reason: Reason) {
    Tally::get().add(reason);
}

#[inline(always)]
fn verdict(reason: Reason, action: u32) -> u32 {
    count(reason);
    action
}

#[inline(always)]
fn pass(reason: Reason) -> u32 {
    verdict(reason, xdp_action::XDP_PASS)
}

#[inline(always)]
fn drop(reason: Reason) -> u32 {
    verdict(reason, xdp_action::XDP_DROP)
}

#[inline(always)]
pub fn process(ctx: &XdpContext) -> u32 {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + ETH_HLEN > end {
        return drop(Reason::DropTruncated);
    }
    // SAFETY: bounds checked above.
    let mut ethertype: u16 = unsafe { read(data + 12) };
    let mut l3 = data + ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        if data + ETH_HLEN + VLAN_HLEN > end {
            return drop(Reason::DropTruncated);
        }
        // SAFETY: bounds checked above.
        ethertype = unsafe { read(data + 16) };
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            return pass(Reason::PassVlanUnsupported);
        }
        l3 = data + ETH_HLEN + VLAN_HLEN;
    }
    if ethertype == ETH_P_IP {
        ipv4(ctx, l3, end)
    } else if ethertype == ETH_P_IPV6 {
        ipv6(ctx, l3, end)
    } else {
        pass(Reason::PassNotIp)
    }
}

/// Flags of the `VIP_FILTER` slot of `addr`: 0 means surely not a VIP.
#[inline(always)]
fn filter(addr: &Addr, family: u8) -> u32 {
    match VIP_FILTER.get(vip_filter_index_words(addr, family)) {
        Some(f) => *f,
        None => 0,
    }
}

/// `ServiceKey::words` of a key.
#[inline(always)]
fn service_words(addr: &Addr, port: u16, proto: u8, family: u8) -> Stack<[u32; 5]> {
    let p = port.to_ne_bytes();
    Stack([
        addr[0],
        addr[1],
        addr[2],
        addr[3],
        u32::from_ne_bytes([p[0], p[1], proto, family]),
    ])
}

#[inline(always)]
fn service_key(words: &[u32; 5]) -> &ServiceKey {
    // SAFETY: ServiceKey is repr(C, align(4)), 20 bytes, no padding, any bit pattern valid,
    // and `ServiceKey::words` defines this layout.
    unsafe { &*(words as *const [u32; 5] as *const ServiceKey) }
}

/// The service of `key`: its `SERVICE_SLOTS` slot when that holds it whole, else `SERVICES`
/// when the slot says so (spilled, or torn by a concurrent update).
#[inline(always)]
fn lookup_service(key: &[u32; 5]) -> Option<ServiceValue> {
    let slot = SERVICE_SLOTS.get_ptr(service_slot_index(key))?;
    // SAFETY: `ServiceSlot` is repr(C) of SERVICE_SLOT_WORDS + 1 u32 words; read once.
    let w = unsafe { core::ptr::read(slot as *const [u32; SERVICE_SLOT_WORDS + 1]) };
    let words: &[u32; SERVICE_SLOT_WORDS] =
        // SAFETY: a prefix of `w`.
        unsafe { &*(w.as_ptr() as *const [u32; SERVICE_SLOT_WORDS]) };
    let whole = service_slot_check(words) == w[SERVICE_SLOT_WORDS];
    if whole {
        if w[0] == key[0] && w[1] == key[1] && w[2] == key[2] && w[3] == key[3] && w[4] == key[4] {
            return Some(ServiceValue {
                id: w[5],
                table_size: w[6],
                flags: w[7],
                _pad: w[8],
            });
        }
        if w[9] == 0 {
            return None;
        }
    }
    // SAFETY: the value is copied out immediately.
    unsafe { SERVICES.get(service_key(key)) }.copied()
}

/// The address marker of `addr`, if it is a VIP.
#[inline(always)]
fn vip_marker(addr: &Addr, family: u8) -> Option<u32> {
    if filter(addr, family) == 0 {
        return None;
    }
    let key = service_words(addr, 0, PROTO_ADDR_MARKER, family);
    // SAFETY: the value is copied out immediately.
    unsafe { SERVICES.get(service_key(&key.0)) }.map(|v| v.flags)
}

/// Packets to a VIP address that we do not balance.
#[inline(always)]
fn not_balanced(addr: &Addr, family: u8, vip_reason: Reason) -> u32 {
    if vip_marker(addr, family).is_some() {
        pass(vip_reason)
    } else {
        pass(Reason::PassNotVip)
    }
}

/// Exact `(addr, port, proto)` then `(addr, 0, proto)`, skipping lookups the marker rules out.
#[inline(always)]
fn find_service(addr: &Addr, port: u16, proto: u8, family: u8) -> Option<ServiceValue> {
    let flags = filter(addr, family);
    let (exact, wild) = if proto == IPPROTO_TCP {
        (SERVICE_F_EXACT_TCP, SERVICE_F_WILDCARD_TCP)
    } else {
        (SERVICE_F_EXACT_UDP, SERVICE_F_WILDCARD_UDP)
    };
    if flags & (exact | wild) == 0 {
        return None;
    }
    let mut key = service_words(addr, port, proto, family);
    if flags & exact != 0 {
        if let Some(v) = lookup_service(&key.0) {
            return Some(v);
        }
    }
    if flags & wild != 0 {
        key.0[4] = u32::from_ne_bytes([0, 0, proto, family]);
        if let Some(v) = lookup_service(&key.0) {
            return Some(v);
        }
    }
    None
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, ip: usize, end: usize) -> u32 {
    if ip + 20 > end {
        return drop(Reason::DropTruncated);
    }
    // SAFETY: the 20-byte fixed header is inside the frame.
    let (vihl, tot_len, frag, proto, saddr, daddr) = unsafe {
        (
            read::<u8>(ip),
            u16::from_be(read::<u16>(ip + 2)) as usize,
            read::<u16>(ip + 6),
            read::<u8>(ip + 9),
            read::<u32>(ip + 12),
            read::<u32>(ip + 16),
        )
    };
    if vihl >> 4 != 4 || vihl & 0xf < 5 {
        return drop(Reason::DropBadIhl);
    }
    let hlen = ((vihl & 0xf) as usize) * 4;
    if tot_len < hlen || ip + tot_len > end {
        return drop(Reason::DropBadLength);
    }
    let dst: Addr = [daddr, 0, 0, 0];
    // MF or a non-zero offset.
    if frag & 0x3fffu16.to_be() != 0 {
        return fragment(&dst, FAMILY_V4);
    }
    let l4 = ip + hlen;
    match proto {
        // One constant bounds check per protocol: a check against a length held in a
        // register tells the verifier nothing about the pointer.
        IPPROTO_TCP => {
            if l4 + 20 > end {
                return drop(Reason::DropTruncated);
            }
            transport(ctx, l4, &[saddr, 0, 0, 0], &dst, proto, FAMILY_V4)
        }
        IPPROTO_UDP => {
            if l4 + 8 > end {
                return drop(Reason::DropTruncated);
            }
            transport(ctx, l4, &[saddr, 0, 0, 0], &dst, proto, FAMILY_V4)
        }
        IPPROTO_ICMP => icmp4(ctx, l4, ip + tot_len, end, &dst),
        _ => not_balanced(&dst, FAMILY_V4, Reason::PassVipOther),
    }
}

/// Without reassembly a non-first fragment has no ports, so fragments to a VIP are dropped
/// (all of them, so the first does not reach a backend that will never see the rest).
#[inline(always)]
fn fragment(dst: &Addr, family: u8) -> u32 {
    if vip_marker(dst, family).is_some() {
        drop(Reason::DropFragment)
    } else {
        pass(Reason::PassNotVip)
    }
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, ip: usize, end: usize) -> u32 {
    if ip + 40 > end {
        return drop(Reason::DropTruncated);
    }
    // SAFETY: the 40-byte fixed header is inside the frame.
    let (ver, plen, nh, src, dst) = unsafe {
        (
            read::<u8>(ip),
            u16::from_be(read::<u16>(ip + 4)) as usize,
            read::<u8>(ip + 6),
            read::<Addr>(ip + 8),
            read::<Addr>(ip + 24),
        )
    };
    if ver >> 4 != 6 {
        return drop(Reason::DropBadIhl);
    }
    if ip + 40 + plen > end {
        return drop(Reason::DropBadLength);
    }
    let l4 = ip + 40;
    match nh {
        IPPROTO_TCP => {
            if l4 + 20 > end {
                return drop(Reason::DropTruncated);
            }
            transport(ctx, l4, &src, &dst, nh, FAMILY_V6)
        }
        IPPROTO_UDP => {
            if l4 + 8 > end {
                return drop(Reason::DropTruncated);
            }
            transport(ctx, l4, &src, &dst, nh, FAMILY_V6)
        }
        IPPROTO_ICMPV6 => icmp6(ctx, l4, l4 + plen, end, &dst),
        IPPROTO_FRAGMENT => fragment(&dst, FAMILY_V6),
        // Walking a chain of options costs a bounded loop for traffic that practically never
        // carries them towards a VIP; the kernel stack still gets them.
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
            not_balanced(&dst, FAMILY_V6, Reason::PassIpv6ExtHeader)
        }
        _ => not_balanced(&dst, FAMILY_V6, Reason::PassVipOther),
    }
}

/// TCP or UDP to a possible VIP; the caller checked that the transport header fits
/// (20 bytes for TCP, 8 for UDP).
#[inline(always)]
fn transport(ctx: &XdpContext, l4: usize, src: &Addr, dst: &Addr, proto: u8, family: u8) -> u32 {
    // SAFETY: ports are in the first 4 bytes, checked by the caller. `ports` is both as they
    // sit in memory, which is how `FlowKey` stores them.
    let (ports, dport) = unsafe { (read::<u32>(l4), read::<u16>(l4 + 2)) };
    let Some(svc) = find_service(dst, dport, proto, family) else {
        return pass(Reason::PassNotVip);
    };
    let kind = if proto == IPPROTO_TCP {
        // SAFETY: TCP callers checked 20 bytes.
        let flags = unsafe { read::<u8>(l4 + 13) };
        if flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN {
            Kind::Syn
        } else {
            Kind::TcpOther
        }
    } else {
        Kind::Udp
    };
    let key = flow_words(src, dst, ports, proto, family);
    forward(ctx, &svc, &key.0, kind)
}

/// `FlowKey::words` of a flow; `ports` is source then destination port as in the header.
#[inline(always)]
fn flow_words(src: &Addr, dst: &Addr, ports: u32, proto: u8, family: u8) -> Stack<[u32; 10]> {
    Stack([
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3],
        ports,
        u32::from_ne_bytes([proto, family, 0, 0]),
    ])
}

/// `ip_end` is where the IP datagram ends (the frame may carry padding after it): the quoted
/// header must lie inside the ICMP message, not merely inside the frame.
#[inline(always)]
fn icmp4(ctx: &XdpContext, l4: usize, ip_end: usize, end: usize, dst: &Addr) -> u32 {
    if l4 + 8 > end {
        return drop(Reason::DropTruncated);
    }
    // SAFETY: checked above.
    let ty = unsafe { read::<u8>(l4) };
    if ty != ICMP_DEST_UNREACH && ty != ICMP_TIME_EXCEEDED {
        return not_balanced(dst, FAMILY_V4, Reason::PassVipOther);
    }
    let inner = l4 + 8;
    // The frame first, in the shape the verifier follows: it cannot carry `ip_end <= end`
    // over, and the compiler drops a frame check that comes after the datagram check.
    if inner + 20 > end {
        return drop(Reason::DropTruncated);
    }
    if inner + 20 > ip_end {
        return drop(Reason::DropIcmpMismatch);
    }
    // SAFETY: the embedded fixed header is inside the frame.
    let (vihl, frag, proto, isrc, idst) = unsafe {
        (
            read::<u8>(inner),
            read::<u16>(inner + 6),
            read::<u8>(inner + 9),
            read::<u32>(inner + 12),
            read::<u32>(inner + 16),
        )
    };
    if vihl >> 4 != 4 || vihl & 0xf < 5 {
        return drop(Reason::DropBadIhl);
    }
    // Only the first fragment of the embedded datagram carries its ports.
    if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) || frag & 0x1fffu16.to_be() != 0 {
        return not_balanced(dst, FAMILY_V4, Reason::PassVipOther);
    }
    let ports = inner + ((vihl & 0xf) as usize) * 4;
    // The frame first, in the shape the verifier follows: it cannot carry `ip_end <= end`
    // over, and the compiler drops a frame check that comes after the datagram check.
    if ports + 4 > end {
        return drop(Reason::DropTruncated);
    }
    if ports + 4 > ip_end {
        return drop(Reason::DropIcmpMismatch);
    }
    // SAFETY: checked above.
    let (isport, idport) = unsafe { (read::<u16>(ports), read::<u16>(ports + 2)) };
    icmp_error(
        ctx,
        &[isrc, 0, 0, 0],
        &[idst, 0, 0, 0],
        isport,
        idport,
        proto,
        FAMILY_V4,
        dst,
    )
}

/// `ip_end` as for `icmp4`.
#[inline(always)]
fn icmp6(ctx: &XdpContext, l4: usize, ip_end: usize, end: usize, dst: &Addr) -> u32 {
    if l4 + 8 > end {
        return drop(Reason::DropTruncated);
    }
    // SAFETY: checked above.
    let ty = unsafe { read::<u8>(l4) };
    if ty != ICMPV6_DEST_UNREACH && ty != ICMPV6_PKT_TOOBIG && ty != ICMPV6_TIME_EXCEED {
        return not_balanced(dst, FAMILY_V6, Reason::PassVipOther);
    }
    let inner = l4 + 8;
    // The frame first, in the shape the verifier follows: it cannot carry `ip_end <= end`
    // over, and the compiler drops a frame check that comes after the datagram check.
    if inner + 44 > end {
        return drop(Reason::DropTruncated);
    }
    if inner + 44 > ip_end {
        return drop(Reason::DropIcmpMismatch);
    }
    // SAFETY: embedded fixed header plus the 4 port bytes are inside the frame.
    let (proto, isrc, idst, isport, idport) = unsafe {
        (
            read::<u8>(inner + 6),
            read::<Addr>(inner + 8),
            read::<Addr>(inner + 24),
            read::<u16>(inner + 40),
            read::<u16>(inner + 42),
        )
    };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return not_balanced(dst, FAMILY_V6, Reason::PassVipOther);
    }
    icmp_error(ctx, &isrc, &idst, isport, idport, proto, FAMILY_V6, dst)
}

/// An ICMP error about a datagram the VIP sent (`isrc` is the VIP, `idst` the client): send it
/// to the backend that serves the client's flow, which is the one that can act on it (PMTU).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn icmp_error(
    ctx: &XdpContext,
    isrc: &Addr,
    idst: &Addr,
    isport: u16,
    idport: u16,
    proto: u8,
    family: u8,
    outer_dst: &Addr,
) -> u32 {
    let Some(svc) = find_service(isrc, isport, proto, family) else {
        return not_balanced(outer_dst, family, Reason::PassVipOther);
    };
    // A router sends the error to the datagram's source, the VIP. One addressed elsewhere
    // (another VIP, a host address the frame passes) quoting a VIP flow is forged: following
    // it would let anyone on the path steer ICMP into a backend.
    if outer_dst != isrc {
        return drop(Reason::DropIcmpMismatch);
    }
    // The client's flow: its source port is the embedded destination port.
    let (cp, vp) = (idport.to_ne_bytes(), isport.to_ne_bytes());
    let ports = u32::from_ne_bytes([cp[0], cp[1], vp[0], vp[1]]);
    let key = flow_words(idst, isrc, ports, proto, family);
    forward(ctx, &svc, &key.0, Kind::IcmpError)
}

// Ways are addressed by pointer arithmetic, never by indexing: an index the compiler cannot
// prove in range (a loop it does not unroll) would leave a panic call in the program, which
// the verifier refuses.

/// The tag of way `w` of `b`. SAFETY: `b` a live map value, `w < FLOW_WAYS`.
#[inline(always)]
unsafe fn tag_ptr(b: *mut FlowBucket, w: usize) -> *mut u32 {
    unsafe { (core::ptr::addr_of_mut!((*b).tags) as *mut u32).add(w) }
}

/// The stamp of way `w` of `b`. SAFETY: as for `tag_ptr`.
#[inline(always)]
unsafe fn stamp_ptr(b: *mut FlowBucket, w: usize) -> *mut u32 {
    unsafe { (core::ptr::addr_of_mut!((*b).stamps) as *mut u32).add(w) }
}

/// Way `w` of `b` as words: `FlowEntry` is repr(C), the key's ten words, backend,
/// generation, check, then padding (not read, not written). SAFETY: as for `tag_ptr`.
#[inline(always)]
unsafe fn way_ptr(b: *mut FlowBucket, w: usize) -> *mut [u32; FLOW_ENTRY_WORDS + 1] {
    unsafe {
        (core::ptr::addr_of_mut!((*b).ways) as *mut dataplane_common::FlowEntry).add(w)
            as *mut [u32; FLOW_ENTRY_WORDS + 1]
    }
}

/// The `used` word of way `w` of `b`. SAFETY: as for `tag_ptr`.
#[inline(always)]
unsafe fn used_ptr(b: *mut FlowBucket, w: usize) -> *mut u32 {
    unsafe { (way_ptr(b, w) as *mut u32).add(FLOW_ENTRY_WORDS + 1) }
}

/// Where a flow is, or would go, in the connection table.
struct Place {
    bucket: Option<*mut FlowBucket>,
    tag: u32,
    /// `flow_home` of the flow: where an insert's scan starts.
    home: usize,
    /// The way holding the flow and what it holds.
    found: Option<(usize, FlowValue)>,
}

/// Looks the flow up: one inlined array lookup, then the flow's home way (one cache line,
/// where a flow sits while its bucket has room), then the bucket's tags (one line) and a way
/// whose tag matches. A way is copied once and accepted only whole (its check word matches).
#[inline(always)]
fn lookup_flow(words: &[u32; 10]) -> Place {
    let h = flow_index_hash(words, &conntrack_keys());
    let tag = flow_tag(h);
    let home = flow_home(h);
    let bucket = CONNTRACK.get_ptr_mut(flow_bucket(h, CONNTRACK_MASK.load()));
    let mut found = None;
    if let Some(b) = bucket {
        if let Some(v) = read_way(b, home, words) {
            found = Some((home, v));
        } else {
            let mut w = 0;
            while w < FLOW_WAYS {
                // SAFETY: `b` is a live map value; `w < FLOW_WAYS`.
                if w != home && unsafe { *tag_ptr(b, w) } == tag {
                    if let Some(v) = read_way(b, w, words) {
                        found = Some((w, v));
                        break;
                    }
                }
                w += 1;
            }
        }
    }
    Place {
        bucket,
        tag,
        home,
        found,
    }
}

/// The value of way `w` of `b` if it holds the flow `words` whole.
#[inline(always)]
fn read_way(b: *mut FlowBucket, w: usize, words: &[u32; 10]) -> Option<FlowValue> {
    // SAFETY: `w < FLOW_WAYS`. Read once into the stack, so the check covers what is used.
    let e = unsafe { core::ptr::read(way_ptr(b, w)) };
    let mut i = 0;
    while i < 10 {
        if e[i] != words[i] {
            return None;
        }
        i += 1;
    }
    // SAFETY: a prefix of `e`.
    let covered = unsafe { &*(e.as_ptr() as *const [u32; FLOW_ENTRY_WORDS]) };
    if flow_entry_check(covered) != e[FLOW_ENTRY_WORDS] {
        return None;
    }
    Some(FlowValue {
        backend: e[10],
        generation: e[11],
    })
}

/// Writes `words` -> `value` into way `w` of `b`: the entry first, the tag last, so a reader
/// that sees the tag before the entry is whole fails the check and takes Maglev. `used` is
/// left as it is.
#[inline(always)]
fn write_way(b: *mut FlowBucket, w: usize, words: &[u32; 10], value: FlowValue, tag: u32) {
    let mut e = [0u32; FLOW_ENTRY_WORDS + 1];
    let mut i = 0;
    while i < 10 {
        e[i] = words[i];
        i += 1;
    }
    e[10] = value.backend;
    e[11] = value.generation;
    // SAFETY: a prefix of `e`.
    let covered = unsafe { &*(e.as_ptr() as *const [u32; FLOW_ENTRY_WORDS]) };
    e[FLOW_ENTRY_WORDS] = flow_entry_check(covered);
    // SAFETY: as in `read_way`.
    unsafe {
        core::ptr::write(way_ptr(b, w), e);
        *tag_ptr(b, w) = tag;
    }
}

/// The way a new flow takes in `b`: an empty one, else the oldest unused one at least `hold`
/// old. Used ways at least `hold` old are aged instead (stamp now, used cleared): a flow that
/// carries packets is never replaced, an idle one goes after one to two holds. The scan
/// starts at the flow's home way, which it takes when that is free or as old as any other; so
/// among equally old ways (one tick) the one replaced is the new flow's home, as random as its
/// hash. `(way, evicted)`; `None` when every way is younger or in use.
#[inline(always)]
fn choose_way(b: *mut FlowBucket, now: u32, hold: u32, home: usize) -> Option<(usize, bool)> {
    let mut victim = None;
    let mut oldest = 0u32;
    let mut i = 0;
    while i < FLOW_WAYS {
        let w = (home + i) & (FLOW_WAYS - 1);
        // SAFETY: `b` is a live map value; `w < FLOW_WAYS` (masked).
        let st = unsafe { *stamp_ptr(b, w) };
        if st == 0 {
            return Some((w, false));
        }
        // Stamps hold the clock in 31 bits.
        let age = (now.wrapping_sub(st)) & 0x7fff_ffff;
        if age >= hold {
            // SAFETY: as above.
            unsafe {
                if *used_ptr(b, w) != 0 {
                    *stamp_ptr(b, w) = now;
                    *used_ptr(b, w) = 0;
                } else if victim.is_none() || age > oldest {
                    victim = Some(w);
                    oldest = age;
                }
            }
        }
        i += 1;
    }
    victim.map(|w| (w, true))
}

/// Chooses the backend for the flow `words` (connection table, else Maglev) and sends the
/// frame there.
#[inline(always)]
fn forward(ctx: &XdpContext, svc: &ServiceValue, words: &[u32; 10], kind: Kind) -> u32 {
    // A SYN is balanced afresh, but the entry is still read: when it already names the
    // backend Maglev picks (retransmitted SYN, reused port), the table is left alone.
    let place = lookup_flow(words);
    let recorded = place.found.map(|(_, v)| v);
    if kind != Kind::Syn {
        if let (Some((w, fv)), Some(bucket)) = (place.found, place.bucket) {
            if let Some(b) = BACKENDS.get(fv.backend) {
                if b.generation == fv.generation && b.flags & BACKEND_F_VALID != 0 {
                    if kind != Kind::IcmpError {
                        // Marks the flow used, once per aging: the only write of the
                        // established path, and rare; in the line just read.
                        // SAFETY: a live map value; `w < FLOW_WAYS`.
                        unsafe {
                            let used = used_ptr(bucket, w);
                            if *used == 0 {
                                *used = 1;
                            }
                        }
                    }
                    let ct = (kind != Kind::IcmpError).then_some(Reason::ConntrackHit);
                    return emit(ctx, svc, fv.backend, b, kind, words, ct);
                }
            }
        }
    }
    let table_size = svc.table_size;
    if table_size == 0 {
        return drop(Reason::DropNoBackend);
    }
    let slot = flow_hash_words(words) % table_size;
    let id = match MAGLEV.get_value(svc.id, &slot) {
        Some(id) => *id,
        None => NO_BACKEND,
    };
    if id == NO_BACKEND {
        return drop(Reason::DropNoBackend);
    }
    let b = match BACKENDS.get(id) {
        Some(b) if b.flags & BACKEND_F_VALID != 0 => b,
        _ => return drop(Reason::DropBackendInvalid),
    };
    let mut ct = None;
    // A mid-flow segment without an entry is usually a forged one (or a flow whose entry was
    // evicted): recording it would let a flood of random non-SYN packets evict established
    // flows the table protects. Maglev still sends it to the host a SYN would have reached;
    // only sources trusted to carry real moved flows (another LB's clients,
    // `MIDFLOW_SOURCES`) are recorded.
    let untracked = kind == Kind::TcpOther
        && recorded.is_none()
        && !in_prefixes(
            &MIDFLOW_SOURCES,
            [words[0], words[1], words[2], words[3]],
            words[9].to_ne_bytes()[1],
        );
    if untracked {
        ct = Some(Reason::ConntrackMidflowUntracked);
    } else if kind != Kind::IcmpError {
        let value = FlowValue {
            backend: id,
            generation: b.generation,
        };
        let fresh = if kind == Kind::TcpOther {
            Reason::ConntrackMissMidflow
        } else {
            Reason::ConntrackNew
        };
        ct = Some(match (place.found, place.bucket) {
            // Only a SYN can reach here with an entry that is still right.
            (Some((_, v)), _) if kind == Kind::Syn && v == value => Reason::ConntrackNew,
            // Rewritten in place: the flow keeps its way, nothing is evicted.
            (Some((w, _)), Some(bucket)) => {
                write_way(bucket, w, words, value, place.tag);
                if kind == Kind::Syn {
                    Reason::ConntrackNew
                } else {
                    Reason::ConntrackStale
                }
            }
            (_, None) => Reason::ConntrackInsertFailed,
            (None, Some(bucket)) => insert(bucket, words, value, &place, fresh),
        });
    }
    emit(ctx, svc, id, b, kind, words, ct)
}

/// Records a flow the table does not hold, unless the SYN-flood guard or a bucket of young
/// or busy entries says no; returns the reason to count.
#[inline(always)]
fn insert(
    b: *mut FlowBucket,
    words: &[u32; 10],
    value: FlowValue,
    place: &Place,
    fresh: Reason,
) -> Reason {
    let (rate, hold) = match FLOW_GUARD.get(0) {
        Some(g) => (u64::from(g.new_flow_rate), g.hold),
        None => (0, 0),
    };
    // SAFETY: the clock helper has no preconditions.
    let now_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    if rate != 0 && flooded(now_ns, rate) {
        return Reason::ConntrackFloodUntracked;
    }
    let now = flow_clock(now_ns);
    let Some((w, evicted)) = choose_way(b, now, hold, place.home) else {
        return Reason::ConntrackTableFull;
    };
    write_way(b, w, words, value, place.tag);
    // SAFETY: a live map value; `w < FLOW_WAYS`.
    unsafe {
        *used_ptr(b, w) = 0;
        *stamp_ptr(b, w) = now;
    }
    if evicted {
        count(Reason::ConntrackEvicted);
    }
    fresh
}

/// Whether this CPU has written its budget of `rate` new entries this second (the SYN-flood
/// guard); otherwise counts one more. Only new entries pay for the clock: established flows
/// and rewrites of an existing entry (which evict nothing) never get here.
#[inline(always)]
fn flooded(now: u64, rate: u64) -> bool {
    let Some(w) = FLOW_WINDOW.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU value only this program on this CPU writes.
    unsafe {
        if now.wrapping_sub((*w).start_ns) >= 1_000_000_000 {
            (*w).start_ns = now;
            (*w).inserts = 0;
        }
        if (*w).inserts >= rate {
            return true;
        }
        (*w).inserts += 1;
    }
    false
}

#[inline(always)]
fn add(stats: Option<*mut dataplane_common::Counters>, bytes: u64) {
    if let Some(c) = stats {
        // SAFETY: per-CPU slot, only this program on this CPU writes it.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// Sends the frame to `b`: L2 DSR (only the two MAC addresses change), or inside an outer
/// IP header for IPIP services.
#[inline(always)]
fn emit(
    ctx: &XdpContext,
    svc: &ServiceValue,
    backend_id: u32,
    b: &Backend,
    kind: Kind,
    words: &[u32; 10],
    ct: Option<Reason>,
) -> u32 {
    let svc_id = svc.id;
    let data = ctx.data();
    let end = ctx.data_end();
    if data + ETH_HLEN > end {
        return xdp_action::XDP_ABORTED;
    }
    let bytes = (end - data) as u64;
    let tally = Tally::get();
    if let Some(r) = ct {
        tally.add(r);
    }
    if svc.flags & SERVICE_F_ENCAP_IPIP != 0 {
        // SAFETY: the Ethernet header is inside the frame, checked above.
        let ethertype: u16 = unsafe { read(data + 12) };
        let l2len = if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            ETH_HLEN + VLAN_HLEN
        } else {
            ETH_HLEN
        };
        let family = words[9].to_ne_bytes()[1];
        if encapsulate(ctx, b, family, l2len, flow_hash_words(words)).is_err() {
            tally.add(Reason::DropEncapFailed);
            return xdp_action::XDP_DROP;
        }
        tally.add(Reason::EncapIpip);
    } else {
        // SAFETY: 12 bytes checked above; `mac` and `src_mac` are adjacent at the start of
        // `Backend` (repr(C)), which is exactly the dst+src layout of the Ethernet header.
        // Two explicit loads and stores: a 12-byte array copy becomes a byte loop.
        unsafe {
            let macs = b as *const Backend as usize;
            let (lo, hi) = (read::<u64>(macs), read::<u32>(macs + 8));
            write::<u64>(data, lo);
            write::<u32>(data + 8, hi);
        }
    }
    // One call site, so each path that emits carries one copy of the sending code.
    send(ctx, svc_id, backend_id, b, kind, bytes, &tally)
}

/// Counts the frame (`bytes` as received) and sends it out of the backend's interface.
#[inline(always)]
fn send(
    ctx: &XdpContext,
    svc_id: u32,
    backend_id: u32,
    b: &Backend,
    kind: Kind,
    bytes: u64,
    tally: &Tally,
) -> u32 {
    add(SVC_STATS.get_ptr_mut(svc_id), bytes);
    add(BACKEND_STATS.get_ptr_mut(backend_id), bytes);
    if kind == Kind::IcmpError {
        tally.add(Reason::IcmpErrorForwarded);
    }
    if b.ifindex == ctx.ingress_ifindex() as u32 {
        tally.add(Reason::ForwardTx);
        return xdp_action::XDP_TX;
    }
    match TX_PORTS.redirect(b.ifindex, 0) {
        Ok(action) => {
            tally.add(Reason::ForwardRedirect);
            action
        }
        Err(_) => {
            tally.add(Reason::DropNoTxPort);
            xdp_action::XDP_DROP
        }
    }
}
