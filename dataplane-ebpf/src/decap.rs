//! `portier_decap`, on hosts behind IPIP services: strips the outer header of IPv4-in-IPv4,
//! IPv6-in-IPv6 (and the mixed pairs) addressed to one of the host's tunnel addresses and
//! passes the inner packet to the stack, which sees it as if it had arrived directly. The
//! kernels here have no ipip module, and a host needs none.
//!
//! Only tunnels from the balancers' source prefixes (`DECAP_SOURCES`) carrying packets to the
//! node's VIPs (`DECAP_VIPS`) are stripped: anything else addressed to a tunnel address is
//! dropped and counted, so the host is no open relay (the CVE-2020-10136 class).

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use dataplane_common::{DecapKey, DecapReason, FAMILY_V4, FAMILY_V6};

use crate::{
    maps::{DECAP_ADDRS, DECAP_REASONS, DECAP_SOURCES, DECAP_VIPS},
    parse::*,
    prefix::in_prefixes,
};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;

#[inline(always)]
fn verdict(reason: DecapReason, action: u32) -> u32 {
    if let Some(p) = DECAP_REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this program on this CPU writes it.
        unsafe { *p += 1 };
    }
    action
}

#[inline(always)]
fn pass(reason: DecapReason) -> u32 {
    verdict(reason, xdp_action::XDP_PASS)
}

#[inline(always)]
fn drop(reason: DecapReason) -> u32 {
    verdict(reason, xdp_action::XDP_DROP)
}

#[inline(always)]
fn is_local(addr: [u32; 4], family: u8) -> bool {
    in_addr_map(addr, family, false)
}

#[inline(always)]
fn is_vip(addr: [u32; 4], family: u8) -> bool {
    in_addr_map(addr, family, true)
}

#[inline(always)]
fn in_addr_map(addr: [u32; 4], family: u8, vips: bool) -> bool {
    // DecapKey's layout as words: the address, then the family byte and padding.
    let words = Stack([
        addr[0],
        addr[1],
        addr[2],
        addr[3],
        u32::from_ne_bytes([family, 0, 0, 0]),
    ]);
    // SAFETY: DecapKey is repr(C, align(4)), 20 bytes, no padding, any bit pattern valid.
    let key = unsafe { &*(words.0.as_ptr() as *const DecapKey) };
    if vips {
        DECAP_VIPS.get_ptr(key).is_some()
    } else {
        DECAP_ADDRS.get_ptr(key).is_some()
    }
}

/// Whether the outer source lies in one of the balancers' prefixes.
#[inline(always)]
fn from_balancer(addr: [u32; 4], family: u8) -> bool {
    in_prefixes(&DECAP_SOURCES, addr, family)
}

#[inline(always)]
pub fn process(ctx: &XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + ETH_HLEN > end {
        return pass(DecapReason::PassNotTunnel);
    }
    // SAFETY: the Ethernet header is inside the frame.
    let ethertype: u16 = unsafe { read(data + 12) };
    let ip = data + ETH_HLEN;
    let (outer_len, inner_proto) = if ethertype == ETH_P_IP {
        if ip + 20 > end {
            return pass(DecapReason::PassNotTunnel);
        }
        // SAFETY: the fixed IPv4 header is inside the frame.
        let (vihl, frag, proto, saddr, daddr) = unsafe {
            (
                read::<u8>(ip),
                read::<u16>(ip + 6),
                read::<u8>(ip + 9),
                read::<u32>(ip + 12),
                read::<u32>(ip + 16),
            )
        };
        if proto != IPPROTO_IPIP && proto != IPPROTO_IPV6 {
            return pass(DecapReason::PassNotTunnel);
        }
        if !is_local([daddr, 0, 0, 0], FAMILY_V4) {
            return pass(DecapReason::PassNotLocal);
        }
        if !from_balancer([saddr, 0, 0, 0], FAMILY_V4) {
            return drop(DecapReason::DropSource);
        }
        // Options, or a fragment of a tunnel packet: the stack's business (it drops them).
        if vihl != 0x45 || frag & 0x3fffu16.to_be() != 0 {
            return pass(DecapReason::PassUnsupported);
        }
        (20usize, proto)
    } else if ethertype == ETH_P_IPV6 {
        if ip + 40 > end {
            return pass(DecapReason::PassNotTunnel);
        }
        // SAFETY: the fixed IPv6 header is inside the frame.
        let (nh, saddr, daddr) = unsafe {
            (
                read::<u8>(ip + 6),
                [
                    read::<u32>(ip + 8),
                    read::<u32>(ip + 12),
                    read::<u32>(ip + 16),
                    read::<u32>(ip + 20),
                ],
                [
                    read::<u32>(ip + 24),
                    read::<u32>(ip + 28),
                    read::<u32>(ip + 32),
                    read::<u32>(ip + 36),
                ],
            )
        };
        if nh != IPPROTO_IPIP && nh != IPPROTO_IPV6 {
            return pass(DecapReason::PassNotTunnel);
        }
        if !is_local(daddr, FAMILY_V6) {
            return pass(DecapReason::PassNotLocal);
        }
        if !from_balancer(saddr, FAMILY_V6) {
            return drop(DecapReason::DropSource);
        }
        (40usize, nh)
    } else if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return pass(DecapReason::PassUnsupported);
    } else {
        return pass(DecapReason::PassNotTunnel);
    };
    let inner = ip + outer_len;
    if inner + 1 > end {
        return verdict(DecapReason::DropTruncated, xdp_action::XDP_DROP);
    }
    // SAFETY: checked above.
    let version = unsafe { read::<u8>(inner) } >> 4;
    let inner_type = match (inner_proto, version) {
        (IPPROTO_IPIP, 4) => ETH_P_IP,
        (IPPROTO_IPV6, 6) => ETH_P_IPV6,
        _ => return verdict(DecapReason::DropBadInner, xdp_action::XDP_DROP),
    };
    // Only VIP traffic comes through the tunnel; anything else from a balancer's prefix is
    // not ours to deliver.
    let to_vip = if inner_type == ETH_P_IP {
        if inner + 20 > end {
            return drop(DecapReason::DropTruncated);
        }
        // SAFETY: the inner fixed IPv4 header is inside the frame.
        is_vip([unsafe { read::<u32>(inner + 16) }, 0, 0, 0], FAMILY_V4)
    } else {
        if inner + 40 > end {
            return drop(DecapReason::DropTruncated);
        }
        // SAFETY: the inner fixed IPv6 header is inside the frame.
        let daddr = unsafe {
            [
                read::<u32>(inner + 24),
                read::<u32>(inner + 28),
                read::<u32>(inner + 32),
                read::<u32>(inner + 36),
            ]
        };
        is_vip(daddr, FAMILY_V6)
    };
    if !to_vip {
        return drop(DecapReason::DropNotVip);
    }
    // The Ethernet header moves to just before the inner packet; the MACs stay (the frame
    // was addressed to us), the ethertype names the inner protocol.
    // SAFETY: `inner - ETH_HLEN .. inner` lies inside the outer header, inside the frame.
    unsafe {
        let dst = inner - ETH_HLEN;
        let (lo, hi) = (read::<u64>(data), read::<u32>(data + 8));
        write::<u64>(dst, lo);
        write::<u32>(dst + 8, hi);
        write::<u16>(dst + 12, inner_type);
    }
    // SAFETY: helper call on our context; nothing is read through old pointers after it.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return verdict(DecapReason::DropTruncated, xdp_action::XDP_DROP);
    }
    pass(DecapReason::Decapsulated)
}
