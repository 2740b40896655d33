#![no_std]
#![no_main]

mod balancer;
mod maps;
mod parse;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// The L4 balancer (see `balancer`).
#[xdp]
pub fn portier_lb(ctx: XdpContext) -> u32 {
    balancer::process(&ctx)
}

/// Plain pass: lets a veth peer accept frames its partner sends with `XDP_TX`.
#[xdp]
pub fn portier_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// MAC swap + `XDP_TX`: the cheapest forwarding program, the benchmark floor.
#[xdp]
pub fn portier_floor(ctx: XdpContext) -> u32 {
    let data = ctx.data();
    if data + 12 > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: 12 bytes checked above.
    unsafe {
        let macs = core::ptr::read_unaligned(data as *const [[u8; 6]; 2]);
        core::ptr::write_unaligned(data as *mut [[u8; 6]; 2], [macs[1], macs[0]]);
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
