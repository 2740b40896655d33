//! Packet access helpers. Every read is bounds-checked against `data_end` right before it, in
//! the `start + offset + size > end` shape the verifier understands.

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

/// Reads a `T` of 1, 2, 4, 8 or 16 bytes at `at`, whatever its alignment; the caller has
/// checked `at + size_of::<T>() <= data_end` (or `at` points into a map value).
///
/// The loads are written as BPF instructions: `read_unaligned` becomes a byte-by-byte loop
/// on this target, and telling LLVM that misaligned access is allowed everywhere
/// (`allows-misaligned-mem-access`) also lets it merge stack stores into misaligned 64-bit
/// ones, which the verifier refuses. Misaligned packet and map-value loads are fine for the
/// kernel on the architectures we run on (efficient unaligned access).
///
/// # Safety
/// `at .. at + size_of::<T>()` must be readable, and any bit pattern must be a valid `T`.
#[inline(always)]
pub unsafe fn read<T: Copy>(at: usize) -> T {
    unsafe {
        match core::mem::size_of::<T>() {
            1 => core::mem::transmute_copy(&load8(at)),
            2 => core::mem::transmute_copy(&load16(at)),
            4 => core::mem::transmute_copy(&load32(at)),
            8 => core::mem::transmute_copy(&load64(at)),
            16 => core::mem::transmute_copy(&[load64(at), load64(at + 8)]),
            _ => core::ptr::read_unaligned(at as *const T),
        }
    }
}

/// Writes `v` (1, 2, 4 or 8 bytes) at `at`, whatever its alignment.
///
/// # Safety
/// `at .. at + size_of::<T>()` must be writable packet memory.
#[inline(always)]
pub unsafe fn write<T: Copy>(at: usize, v: T) {
    unsafe {
        match core::mem::size_of::<T>() {
            1 => store8(at, core::mem::transmute_copy(&v)),
            2 => store16(at, core::mem::transmute_copy(&v)),
            4 => store32(at, core::mem::transmute_copy(&v)),
            8 => store64(at, core::mem::transmute_copy(&v)),
            _ => core::ptr::write_unaligned(at as *mut T, v),
        }
    }
}

macro_rules! load {
    ($name:ident, $t:ty, $w:literal) => {
        #[inline(always)]
        unsafe fn $name(at: usize) -> $t {
            let v: u64;
            unsafe {
                core::arch::asm!(
                    concat!("{v} = *(", $w, " *)({p} + 0)"),
                    v = lateout(reg) v,
                    p = in(reg) at,
                    options(readonly, nostack, preserves_flags)
                );
            }
            v as $t
        }
    };
}

macro_rules! store {
    ($name:ident, $t:ty, $w:literal) => {
        #[inline(always)]
        unsafe fn $name(at: usize, v: $t) {
            unsafe {
                core::arch::asm!(
                    concat!("*(", $w, " *)({p} + 0) = {v}"),
                    p = in(reg) at,
                    v = in(reg) v as u64,
                    options(nostack, preserves_flags)
                );
            }
        }
    };
}

load!(load8, u8, "u8");
load!(load16, u16, "u16");
load!(load32, u32, "u32");
load!(load64, u64, "u64");
store!(store8, u8, "u8");
store!(store16, u16, "u16");
store!(store32, u32, "u32");
store!(store64, u64, "u64");

/// A value kept on the stack at 8-byte alignment. Map keys are built in these: with
/// misaligned access allowed, LLVM may merge neighbouring 32-bit stores into 64-bit ones,
/// and the verifier refuses a 64-bit stack access that is not 8-aligned.
#[repr(C, align(8))]
pub struct Stack<T>(pub T);
