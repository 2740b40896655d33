//! The L4 balancer: parse, find the service, pick the backend, rewrite MACs, forward.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use dataplane_common::{
    BACKEND_F_VALID, Backend, FAMILY_V4, FAMILY_V6, FlowKey, FlowValue, NO_BACKEND,
    PROTO_ADDR_MARKER, Reason, SERVICE_F_EXACT_TCP, SERVICE_F_EXACT_UDP, SERVICE_F_WILDCARD_TCP,
    SERVICE_F_WILDCARD_UDP, ServiceKey, ServiceValue, flow_hash, vip_filter_index,
};

use crate::{
    maps::{
        BACKEND_STATS, BACKENDS, CONNTRACK, MAGLEV, REASONS, SERVICES, SVC_STATS, TX_PORTS,
        VIP_FILTER,
    },
    parse::*,
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

#[inline(always)]
fn count(reason: Reason) {
    if let Some(p) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this program on this CPU writes it.
        unsafe { *p += 1 };
    }
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

#[inline(always)]
fn v4_addr(a: u32) -> [u8; 16] {
    let b = a.to_ne_bytes();
    [b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// Flags of the `VIP_FILTER` slot of `addr`: 0 means surely not a VIP.
#[inline(always)]
fn filter(addr: &[u8; 16], family: u8) -> u32 {
    match VIP_FILTER.get(vip_filter_index(addr, family)) {
        Some(f) => *f,
        None => 0,
    }
}

/// The address marker of `addr`, if it is a VIP.
#[inline(always)]
fn vip_marker(addr: &[u8; 16], family: u8) -> Option<u32> {
    if filter(addr, family) == 0 {
        return None;
    }
    let key = ServiceKey {
        addr: *addr,
        port: 0,
        proto: PROTO_ADDR_MARKER,
        family,
    };
    // SAFETY: the value is copied out immediately.
    unsafe { SERVICES.get(&key) }.map(|v| v.flags)
}

/// Packets to a VIP address that we do not balance.
#[inline(always)]
fn not_balanced(addr: &[u8; 16], family: u8, vip_reason: Reason) -> u32 {
    if vip_marker(addr, family).is_some() {
        pass(vip_reason)
    } else {
        pass(Reason::PassNotVip)
    }
}

/// Exact `(addr, port, proto)` then `(addr, 0, proto)`, skipping lookups the marker rules out.
#[inline(always)]
fn find_service(addr: &[u8; 16], port: u16, proto: u8, family: u8) -> Option<ServiceValue> {
    let flags = filter(addr, family);
    let (exact, wild) = if proto == IPPROTO_TCP {
        (SERVICE_F_EXACT_TCP, SERVICE_F_WILDCARD_TCP)
    } else {
        (SERVICE_F_EXACT_UDP, SERVICE_F_WILDCARD_UDP)
    };
    let mut key = ServiceKey {
        addr: *addr,
        port,
        proto,
        family,
    };
    if flags & exact != 0 {
        // SAFETY: the value is copied out immediately.
        if let Some(v) = unsafe { SERVICES.get(&key) } {
            return Some(*v);
        }
    }
    if flags & wild != 0 {
        key.port = 0;
        // SAFETY: as above.
        if let Some(v) = unsafe { SERVICES.get(&key) } {
            return Some(*v);
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
    let dst = v4_addr(daddr);
    // MF or a non-zero offset.
    if frag & 0x3fffu16.to_be() != 0 {
        return fragment(&dst, FAMILY_V4);
    }
    let l4 = ip + hlen;
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let need = if proto == IPPROTO_TCP { 20 } else { 8 };
            if l4 + need > end {
                return drop(Reason::DropTruncated);
            }
            let src = v4_addr(saddr);
            transport(ctx, l4, &src, &dst, proto, FAMILY_V4)
        }
        IPPROTO_ICMP => icmp4(ctx, l4, end, &dst),
        _ => not_balanced(&dst, FAMILY_V4, Reason::PassVipOther),
    }
}

/// Without reassembly a non-first fragment has no ports, so fragments to a VIP are dropped
/// (all of them, so the first does not reach a backend that will never see the rest).
#[inline(always)]
fn fragment(dst: &[u8; 16], family: u8) -> u32 {
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
            read::<[u8; 16]>(ip + 8),
            read::<[u8; 16]>(ip + 24),
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
        IPPROTO_ICMPV6 => icmp6(ctx, l4, end, &dst),
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
fn transport(
    ctx: &XdpContext,
    l4: usize,
    src: &[u8; 16],
    dst: &[u8; 16],
    proto: u8,
    family: u8,
) -> u32 {
    // SAFETY: ports are in the first 4 bytes, checked by the caller.
    let (sport, dport) = unsafe { (read::<u16>(l4), read::<u16>(l4 + 2)) };
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
    let key = FlowKey {
        src: *src,
        dst: *dst,
        sport,
        dport,
        proto,
        family,
        _pad: [0; 2],
    };
    forward(ctx, &svc, &key, kind)
}

#[inline(always)]
fn icmp4(ctx: &XdpContext, l4: usize, end: usize, dst: &[u8; 16]) -> u32 {
    if l4 + 8 > end {
        return drop(Reason::DropTruncated);
    }
    // SAFETY: checked above.
    let ty = unsafe { read::<u8>(l4) };
    if ty != ICMP_DEST_UNREACH && ty != ICMP_TIME_EXCEEDED {
        return not_balanced(dst, FAMILY_V4, Reason::PassVipOther);
    }
    let inner = l4 + 8;
    if inner + 20 > end {
        return drop(Reason::DropTruncated);
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
    if ports + 4 > end {
        return drop(Reason::DropTruncated);
    }
    // SAFETY: checked above.
    let (isport, idport) = unsafe { (read::<u16>(ports), read::<u16>(ports + 2)) };
    icmp_error(
        ctx,
        &v4_addr(isrc),
        &v4_addr(idst),
        isport,
        idport,
        proto,
        FAMILY_V4,
        dst,
    )
}

#[inline(always)]
fn icmp6(ctx: &XdpContext, l4: usize, end: usize, dst: &[u8; 16]) -> u32 {
    if l4 + 8 > end {
        return drop(Reason::DropTruncated);
    }
    // SAFETY: checked above.
    let ty = unsafe { read::<u8>(l4) };
    if ty != ICMPV6_DEST_UNREACH && ty != ICMPV6_PKT_TOOBIG && ty != ICMPV6_TIME_EXCEED {
        return not_balanced(dst, FAMILY_V6, Reason::PassVipOther);
    }
    let inner = l4 + 8;
    if inner + 44 > end {
        return drop(Reason::DropTruncated);
    }
    // SAFETY: embedded fixed header plus the 4 port bytes are inside the frame.
    let (proto, isrc, idst, isport, idport) = unsafe {
        (
            read::<u8>(inner + 6),
            read::<[u8; 16]>(inner + 8),
            read::<[u8; 16]>(inner + 24),
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
    isrc: &[u8; 16],
    idst: &[u8; 16],
    isport: u16,
    idport: u16,
    proto: u8,
    family: u8,
    outer_dst: &[u8; 16],
) -> u32 {
    let Some(svc) = find_service(isrc, isport, proto, family) else {
        return not_balanced(outer_dst, family, Reason::PassVipOther);
    };
    let key = FlowKey {
        src: *idst,
        dst: *isrc,
        sport: idport,
        dport: isport,
        proto,
        family,
        _pad: [0; 2],
    };
    forward(ctx, &svc, &key, Kind::IcmpError)
}

/// Chooses the backend for `key` (connection table, else Maglev) and sends the frame there.
#[inline(always)]
fn forward(ctx: &XdpContext, svc: &ServiceValue, key: &FlowKey, kind: Kind) -> u32 {
    let mut stale = false;
    if kind != Kind::Syn {
        if let Some(fv) = CONNTRACK.get_ptr(key) {
            // SAFETY: copied out at once; LRU reuse of the slot can only make it stale, which
            // the generation check below catches.
            let fv: FlowValue = unsafe { *fv };
            if let Some(b) = BACKENDS.get(fv.backend) {
                if b.generation == fv.generation && b.flags & BACKEND_F_VALID != 0 {
                    if kind != Kind::IcmpError {
                        count(Reason::ConntrackHit);
                    }
                    return emit(ctx, svc.id, fv.backend, b, kind);
                }
            }
            stale = true;
        }
    }
    let table_size = svc.table_size;
    if table_size == 0 {
        return drop(Reason::DropNoBackend);
    }
    let slot = flow_hash(key) % table_size;
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
    if kind != Kind::IcmpError {
        let value = FlowValue {
            backend: id,
            generation: b.generation,
        };
        if CONNTRACK.insert(key, value, 0).is_err() {
            count(Reason::ConntrackInsertFailed);
        } else if stale {
            count(Reason::ConntrackStale);
        } else if kind == Kind::TcpOther {
            count(Reason::ConntrackMissMidflow);
        } else {
            count(Reason::ConntrackNew);
        }
    }
    emit(ctx, svc.id, id, b, kind)
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

/// L2 DSR: only the two MAC addresses change.
#[inline(always)]
fn emit(ctx: &XdpContext, svc_id: u32, backend_id: u32, b: &Backend, kind: Kind) -> u32 {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + 12 > end {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: 12 bytes checked above; `mac` and `src_mac` are adjacent in `Backend`, which
    // is exactly the dst+src layout of the Ethernet header.
    unsafe {
        core::ptr::write_unaligned(data as *mut [u8; 12], read_unaligned_macs(b));
    }
    let bytes = (end - data) as u64;
    add(SVC_STATS.get_ptr_mut(svc_id), bytes);
    add(BACKEND_STATS.get_ptr_mut(backend_id), bytes);
    if kind == Kind::IcmpError {
        count(Reason::IcmpErrorForwarded);
    }
    if b.ifindex == ctx.ingress_ifindex() as u32 {
        return verdict(Reason::ForwardTx, xdp_action::XDP_TX);
    }
    match TX_PORTS.redirect(b.ifindex, 0) {
        Ok(action) => verdict(Reason::ForwardRedirect, action),
        Err(_) => drop(Reason::DropNoTxPort),
    }
}

#[inline(always)]
fn read_unaligned_macs(b: &Backend) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..6].copy_from_slice(&b.mac);
    out[6..].copy_from_slice(&b.src_mac);
    out
}
