//! Packet access helpers. Every read is bounds-checked against `data_end` right before it, in
//! the `start + offset + size > end` shape the verifier understands.

use core::ptr::read_unaligned;

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;

// Ethertypes as they sit in memory (network order read as a little-endian u16), so the fast
// path compares without swapping.
pub const ETH_P_IP: u16 = 0x0800u16.to_be();
pub const ETH_P_IPV6: u16 = 0x86DDu16.to_be();
pub const ETH_P_8021Q: u16 = 0x8100u16.to_be();
pub const ETH_P_8021AD: u16 = 0x88A8u16.to_be();

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;

pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_PKT_TOOBIG: u8 = 2;
pub const ICMPV6_TIME_EXCEED: u8 = 3;

pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_ACK: u8 = 0x10;

/// Reads a `T` at `at`; the caller has checked `at + size_of::<T>() <= data_end`.
///
/// # Safety
/// `at .. at + size_of::<T>()` must be inside the packet.
#[inline(always)]
pub unsafe fn read<T: Copy>(at: usize) -> T {
    unsafe { read_unaligned(at as *const T) }
}
