#![no_std]
#![no_main]
// Packet loads and stores are written as BPF instructions (see `parse::read`).
#![feature(asm_experimental_arch)]

mod balancer;
mod decap;
#[cfg(feature = "diag")]
mod diag;
mod encap;
mod maps;
mod parse;
mod prefix;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use parse::{read, write};

/// The L4 balancer (see `balancer`).
#[xdp]
// Inlined into the entry point the macro generates: a BPF-to-BPF call costs a frame and a
// return through the CPU's return thunk on every packet.
#[inline(always)]
pub fn portier_lb(ctx: XdpContext) -> u32 {
    balancer::process(&ctx)
}

/// The host side of IPIP services (see `decap`).
#[xdp]
#[inline(always)]
pub fn portier_decap(ctx: XdpContext) -> u32 {
    decap::process(&ctx)
}

/// `portier_lb` with diagnostics (`[dataplane] debug`): attached in its place while debug is
/// on, and logs each drop and new flow (see `diag`).
#[cfg(feature = "diag")]
#[xdp]
#[inline(always)]
pub fn portier_lb_debug(ctx: XdpContext) -> u32 {
    let scratch = diag::lb_before(&ctx);
    let action = balancer::process(&ctx);
    diag::lb_after(&ctx, scratch);
    action
}

/// `portier_decap` with diagnostics: logs each drop.
#[cfg(feature = "diag")]
#[xdp]
#[inline(always)]
pub fn portier_decap_debug(ctx: XdpContext) -> u32 {
    let scratch = diag::decap_before(&ctx);
    let action = decap::process(&ctx);
    diag::decap_after(scratch);
    action
}

/// Plain pass: lets a veth peer accept frames its partner sends with `XDP_TX`.
#[xdp]
pub fn portier_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark only (loaded by `Dataplane::load_for_test`, never attached): the balancer, after
/// bumping the TCP/UDP source port of an IPv4 frame without options, and the source address
/// when the port wraps. `BPF_PROG_TEST_RUN` repeats one frame and keeps the program's changes,
/// so every repetition is a flow the connection table has not seen: new-flow cost with warm
/// caches, including the table's evictions once it is full.
#[xdp]
#[inline(always)]
pub fn portier_bench_new_flows(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    if data + 38 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: 38 bytes checked above: Ethernet, 20-byte IPv4 header, source port.
    unsafe {
        let next = u16::from_be(read::<u16>(data + 34)).wrapping_add(1);
        write::<u16>(data + 34, next.to_be());
        if next == 0 {
            let lo = u16::from_be(read::<u16>(data + 28)).wrapping_add(1);
            write::<u16>(data + 28, lo.to_be());
        }
    }
    balancer::process(&ctx)
}

/// Benchmark only: the live-frames generator. `BPF_PROG_TEST_RUN` with
/// `BPF_F_TEST_XDP_LIVE_FRAMES` runs it on the template frame, and `XDP_TX` sends each copy
/// out of the given interface, towards the program under test on its veth peer.
#[xdp]
pub fn portier_bench_gen(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// Benchmark only: the live-frames generator of the mixed workload. One frame in
/// `BENCH_GEN_STATE[1]` (0: none) is the SYN of a flow never seen before, the others are ACKs
/// of established flows (`bench::MIXED_*`), each in turn. Both fields are written on every
/// frame: live mode may hand back a page this program already changed.
#[xdp]
pub fn portier_bench_gen_mixed(ctx: XdpContext) -> u32 {
    use dataplane_common::bench::{MIXED_CLIENT, MIXED_FLOWS, MIXED_PORT_BASE};
    let data = ctx.data();
    if data + 48 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let (Some(state), Some(period)) = (
        maps::BENCH_GEN_STATE.get_ptr_mut(0),
        maps::BENCH_GEN_STATE.get_ptr(1),
    ) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: per-CPU values only this program (and userspace, before the run) writes; 48
    // bytes checked above: Ethernet, 20-byte IPv4 header, TCP up to its flags.
    unsafe {
        let (n, period) = (*state, *period);
        *state = n + 1;
        let (src, sport, flags) = if period != 0 && n % period == period - 1 {
            let m = (n / period) as u32;
            let src = [10, 128 | ((m >> 16) & 0x3f) as u8, (m >> 8) as u8, m as u8];
            (src, 1024u16, 0x02u8)
        } else {
            // A stride coprime to the flow count: every flow in turn, but never its
            // neighbour in port order, so the order in which flows were opened (the kernel
            // LRU's element order) gives a cache prefetcher nothing to follow.
            let port = MIXED_PORT_BASE + ((n * 7919) % u64::from(MIXED_FLOWS)) as u16;
            (MIXED_CLIENT, port, 0x10u8)
        };
        write::<u32>(data + 26, u32::from_ne_bytes(src));
        write::<u16>(data + 34, sport.to_be());
        write::<u8>(data + 47, flags);
    }
    xdp_action::XDP_TX
}

/// Benchmark only: drops what the program under test sends back, at the cheapest point.
#[xdp]
pub fn portier_bench_sink(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// MAC swap + `XDP_TX`: the cheapest forwarding program, the benchmark floor.
#[xdp]
pub fn portier_floor(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    if data + 12 > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: 12 bytes checked above. Word loads and stores: array copies would become
    // byte loops.
    unsafe {
        let (d0, d1) = (read::<u32>(data), read::<u16>(data + 4));
        let (s0, s1) = (read::<u16>(data + 6), read::<u32>(data + 8));
        write::<u16>(data, s0);
        write::<u32>(data + 2, s1);
        write::<u32>(data + 6, d0);
        write::<u16>(data + 10, d1);
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
