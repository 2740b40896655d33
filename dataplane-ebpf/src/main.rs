#![no_std]
#![no_main]

mod balancer;
mod maps;
mod parse;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// The L4 balancer (see `balancer`).
#[xdp]
// Inlined into the entry point the macro generates: a BPF-to-BPF call costs a frame and a
// return through the CPU's return thunk on every packet.
#[inline(always)]
pub fn portier_lb(ctx: XdpContext) -> u32 {
    balancer::process(&ctx)
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
        let sport = (data + 34) as *mut u16;
        let next = u16::from_be(core::ptr::read_unaligned(sport)).wrapping_add(1);
        core::ptr::write_unaligned(sport, next.to_be());
        if next == 0 {
            let src_lo = (data + 28) as *mut u16;
            let lo = u16::from_be(core::ptr::read_unaligned(src_lo)).wrapping_add(1);
            core::ptr::write_unaligned(src_lo, lo.to_be());
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
        let (d0, d1) = (
            core::ptr::read_unaligned(data as *const u32),
            core::ptr::read_unaligned((data + 4) as *const u16),
        );
        let (s0, s1) = (
            core::ptr::read_unaligned((data + 6) as *const u16),
            core::ptr::read_unaligned((data + 8) as *const u32),
        );
        core::ptr::write_unaligned(data as *mut u16, s0);
        core::ptr::write_unaligned((data + 2) as *mut u32, s1);
        core::ptr::write_unaligned((data + 6) as *mut u32, d0);
        core::ptr::write_unaligned((data + 10) as *mut u16, d1);
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
