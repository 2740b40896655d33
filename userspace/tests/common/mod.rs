//! Addresses and verdicts shared by the BPF_PROG_TEST_RUN test files. Each test binary uses a
//! different subset, hence the allow.
#![allow(dead_code)]

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// `BPF_PROG_TEST_RUN` runs XDP with `lo` as the ingress device.
pub const LO: u32 = 1;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
pub const CLIENT: [u8; 4] = [198, 51, 100, 10];
pub const VIP: [u8; 4] = [203, 0, 113, 10];
pub const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
pub const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// An IPv4 address in the 16-byte address fields of the map keys.
pub fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[..4].copy_from_slice(&a);
    o
}

/// The MAC of test backend `i`.
pub fn host_mac(i: u32) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x21, i as u8]
}
