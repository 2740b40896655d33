//! IPIP encapsulation for services in IPIP mode: IPv4 in IPv4 (RFC 2003) and IPv6 in IPv6
//! (RFC 2473). The frame grows at the front by the outer header; the L2 header (MACs, an
//! 802.1Q tag if there was one, the ethertype) is written again in front of it.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use dataplane_common::{Backend, ENCAP_SOURCE_F_V4, ENCAP_SOURCE_F_V6, FAMILY_V4, FAMILY_V6};

use crate::{maps::ENCAP_SOURCE, parse::*};

const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const TUNNEL_TTL: u8 = 64;

/// Writes `macs` (destination then source, as in `Backend`) and the ethertype in front of an
/// L3 header at `l2len`, keeping the VLAN tag `vlan` when `l2len` says there is one.
///
/// # Safety
/// `data .. data + l2len` must be inside the frame.
#[inline(always)]
unsafe fn write_l2(data: usize, b: &Backend, l2len: usize, vlan: u32, ethertype: u16) {
    unsafe {
        let macs = b as *const Backend as usize;
        write::<u64>(data, read::<u64>(macs));
        write::<u32>(data + 8, read::<u32>(macs + 8));
        if l2len == ETH_HLEN + VLAN_HLEN {
            write::<u32>(data + 12, vlan);
        }
        write::<u16>(data + l2len - 2, ethertype);
    }
}

/// Ones' complement checksum of a 20-byte header given as five words in memory order; the
/// sum of 16-bit halves does not depend on the host's byte order.
#[inline(always)]
fn ipv4_checksum(w: &[u32; 5]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < 5 {
        sum += (w[i] & 0xffff) + (w[i] >> 16);
        i += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Encapsulates the frame whose L3 header starts at `l2len` (the client's packet, of
/// `family`) towards `b`, with the outer source chosen by `hash`. Err when the family has no
/// source prefix, the backend is of another family, or the frame cannot grow.
///
/// A BPF subprogram, not inlined: the balancer reaches it from every path that forwards,
/// and inlined it would be copied into each of them (the object tripled in size).
#[inline(never)]
pub fn encapsulate(
    ctx: &XdpContext,
    b: &Backend,
    family: u8,
    l2len: usize,
    hash: u32,
) -> Result<(), ()> {
    let src = ENCAP_SOURCE.get(0).ok_or(())?;
    if b.family != family {
        return Err(());
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    if family == FAMILY_V4 {
        if src.flags & ENCAP_SOURCE_F_V4 == 0 || data + l2len + IPV4_HLEN > end {
            return Err(());
        }
        // SAFETY: the inner fixed header is inside the frame (checked above), as is the
        // VLAN tag when l2len counts one.
        let (inner0, inner_frag, vlan) = unsafe {
            (
                read::<u32>(data + l2len),
                read::<u16>(data + l2len + 6),
                if l2len > ETH_HLEN {
                    read::<u32>(data + 12)
                } else {
                    0
                },
            )
        };
        let b0 = inner0.to_ne_bytes();
        let tot = u16::from_be_bytes([b0[2], b0[3]]).wrapping_add(IPV4_HLEN as u16);
        let t = tot.to_be_bytes();
        // RFC 2003: the outer DF copies the inner one, so PMTU discovery keeps working.
        let df = (inner_frag.to_ne_bytes()[0]) & 0x40;
        let saddr = read_word(&src.v4_prefix) | (hash & read_word(&src.v4_host_mask));
        let daddr = read_word4(&b.addr);
        let mut w: [u32; 5] = [
            u32::from_ne_bytes([0x45, b0[1], t[0], t[1]]),
            u32::from_ne_bytes([0, 0, df, 0]),
            u32::from_ne_bytes([TUNNEL_TTL, IPPROTO_IPIP, 0, 0]),
            saddr,
            daddr,
        ];
        let csum = ipv4_checksum(&w);
        let c = csum.to_ne_bytes();
        w[2] = u32::from_ne_bytes([TUNNEL_TTL, IPPROTO_IPIP, c[0], c[1]]);
        // SAFETY: helper call on our context; pointers are re-derived and checked after.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(IPV4_HLEN as i32)) } != 0 {
            return Err(());
        }
        let (data, end) = (ctx.data(), ctx.data_end());
        if data + l2len + IPV4_HLEN > end {
            return Err(());
        }
        // SAFETY: l2len + 20 bytes checked above.
        unsafe {
            write_l2(data, b, l2len, vlan, ETH_P_IP);
            let ip = data + l2len;
            let mut i = 0;
            while i < 5 {
                write::<u32>(ip + i * 4, w[i]);
                i += 1;
            }
        }
        Ok(())
    } else if family == FAMILY_V6 {
        if src.flags & ENCAP_SOURCE_F_V6 == 0 || data + l2len + IPV6_HLEN > end {
            return Err(());
        }
        // SAFETY: the inner fixed header (and tag) are inside the frame, checked above.
        let (inner0, inner_plen, vlan) = unsafe {
            (
                read::<u32>(data + l2len),
                read::<u16>(data + l2len + 4),
                if l2len > ETH_HLEN {
                    read::<u32>(data + 12)
                } else {
                    0
                },
            )
        };
        let b0 = inner0.to_ne_bytes();
        let tclass = (b0[0] << 4) | (b0[1] >> 4);
        let label = hash & 0xf_ffff;
        let plen = u16::from_be(inner_plen).wrapping_add(IPV6_HLEN as u16);
        let p = plen.to_be_bytes();
        let w0 = u32::from_ne_bytes([
            0x60 | (tclass >> 4),
            (tclass << 4) | ((label >> 16) as u8 & 0xf),
            (label >> 8) as u8,
            label as u8,
        ]);
        let w1 = u32::from_ne_bytes([p[0], p[1], IPPROTO_IPV6, TUNNEL_TTL]);
        let pre = read_words(&src.v6_prefix);
        let mask = read_words(&src.v6_host_mask);
        // Spread the hash over the words a mask longer than 32 bits reaches.
        let h = [
            hash.rotate_left(24),
            hash.rotate_left(16),
            hash.rotate_left(8),
            hash,
        ];
        let saddr = [
            pre[0] | (h[0] & mask[0]),
            pre[1] | (h[1] & mask[1]),
            pre[2] | (h[2] & mask[2]),
            pre[3] | (h[3] & mask[3]),
        ];
        let daddr = read_words(&b.addr);
        // SAFETY: helper call on our context; pointers are re-derived and checked after.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(IPV6_HLEN as i32)) } != 0 {
            return Err(());
        }
        let (data, end) = (ctx.data(), ctx.data_end());
        if data + l2len + IPV6_HLEN > end {
            return Err(());
        }
        // SAFETY: l2len + 40 bytes checked above.
        unsafe {
            write_l2(data, b, l2len, vlan, ETH_P_IPV6);
            let ip = data + l2len;
            write::<u32>(ip, w0);
            write::<u32>(ip + 4, w1);
            let mut i = 0;
            while i < 4 {
                write::<u32>(ip + 8 + i * 4, saddr[i]);
                write::<u32>(ip + 24 + i * 4, daddr[i]);
                i += 1;
            }
        }
        Ok(())
    } else {
        Err(())
    }
}

// Word loads from map values: byte arrays copied whole become byte loops.

#[inline(always)]
fn read_word(b: &[u8; 4]) -> u32 {
    // SAFETY: 4 readable bytes.
    unsafe { read::<u32>(b.as_ptr() as usize) }
}

#[inline(always)]
fn read_word4(b: &[u8; 16]) -> u32 {
    // SAFETY: 16 readable bytes.
    unsafe { read::<u32>(b.as_ptr() as usize) }
}

#[inline(always)]
fn read_words(b: &[u8; 16]) -> [u32; 4] {
    let p = b.as_ptr() as usize;
    // SAFETY: 16 readable bytes.
    unsafe {
        [
            read::<u32>(p),
            read::<u32>(p + 4),
            read::<u32>(p + 8),
            read::<u32>(p + 12),
        ]
    }
}
