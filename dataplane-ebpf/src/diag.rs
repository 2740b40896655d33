//! The debug entry points' half (see `dataplane_common::diag`): they run the unchanged packet
//! path between two reads of this CPU's reason counters and log, through aya-log, the drop or
//! the new flow the counters show, with the packet's addresses as they arrived.
//!
//! Nothing here runs while debug is off: the attached programs are then `portier_lb` and
//! `portier_decap`, which never reach this module.

use aya_ebpf::{
    btf_maps::PerCpuArray, helpers::bpf_ktime_get_ns, macros::btf_map, programs::XdpContext,
};
use aya_log_ebpf::info;
use dataplane_common::{
    DecapReason, Reason,
    diag::{
        EVENT_DECAP_DROP, EVENT_DROP, EVENT_NEW_FLOW, EVENT_SUPPRESSED, RECORDS_PER_CPU_SECOND,
    },
};

use crate::{
    maps::{DECAP_REASONS, REASONS},
    parse::*,
};

/// The balancer's reasons that make a record: every drop, then every way a flow the
/// connection table did not know was balanced.
const LB_DROPS: [Reason; 9] = [
    Reason::DropTruncated,
    Reason::DropBadIhl,
    Reason::DropBadLength,
    Reason::DropFragment,
    Reason::DropNoBackend,
    Reason::DropBackendInvalid,
    Reason::DropNoTxPort,
    Reason::DropEncapFailed,
    Reason::DropIcmpMismatch,
];
const LB_NEW: [Reason; 6] = [
    Reason::ConntrackNew,
    Reason::ConntrackMissMidflow,
    Reason::ConntrackStale,
    Reason::ConntrackMidflowUntracked,
    Reason::ConntrackFloodUntracked,
    Reason::ConntrackTableFull,
];
/// Counters a record compares: every drop, then every new-flow outcome.
const LB_COUNTED: usize = LB_DROPS.len() + LB_NEW.len();
const DECAP_DROPS: [DecapReason; 4] = [
    DecapReason::DropTruncated,
    DecapReason::DropBadInner,
    DecapReason::DropSource,
    DecapReason::DropNotVip,
];

/// This CPU's log budget: the second it counts from, records written and records refused in it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Budget {
    start_ns: u64,
    sent: u64,
    suppressed: u64,
}

#[btf_map]
static DIAG_BUDGET: PerCpuArray<Budget, 1> = PerCpuArray::new();

/// The packet as it arrived: what a record says about it.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Seen {
    src: [u32; 4],
    dst: [u32; 4],
    len: u32,
    ifindex: u32,
    sport: u16,
    dport: u16,
    family: u8,
    proto: u8,
    _pad: [u8; 2],
}

/// What the debug entry points keep between before and after the packet: in a per-CPU map,
/// not on the stack, which the balancer itself nearly fills (512 bytes for the whole call
/// chain).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scratch {
    seen: Seen,
    counts: [u64; LB_COUNTED],
}

#[btf_map]
static DIAG_SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// Notes the packet and this CPU's counters before the program runs on it.
#[inline(always)]
pub fn lb_before(ctx: &XdpContext) -> Option<*mut Scratch> {
    let p = DIAG_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's value; only the debug programs on this CPU use it, one packet at a
    // time.
    unsafe {
        (*p).seen = seen(ctx);
        (*p).counts = lb_counts();
    }
    Some(p)
}

#[inline(always)]
pub fn decap_before(ctx: &XdpContext) -> Option<*mut Scratch> {
    let p = DIAG_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: as in `lb_before`.
    unsafe {
        (*p).seen = seen(ctx);
        let c = decap_counts();
        for (i, v) in c.iter().enumerate() {
            (*p).counts[i] = *v;
        }
    }
    Some(p)
}

/// Reads the addresses, protocol and ports; whatever the frame is too short for stays zero.
#[inline(always)]
fn seen(ctx: &XdpContext) -> Seen {
    let (data, end) = (ctx.data(), ctx.data_end());
    let mut s = Seen {
        src: [0; 4],
        dst: [0; 4],
        len: (end - data) as u32,
        ifindex: ctx.ingress_ifindex() as u32,
        sport: 0,
        dport: 0,
        family: 0,
        proto: 0,
        _pad: [0; 2],
    };
    if data + ETH_HLEN > end {
        return s;
    }
    // SAFETY: every read below is inside a range checked against `end` just before it.
    unsafe {
        let mut ethertype: u16 = read(data + 12);
        let mut ip = data + ETH_HLEN;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            if ip + VLAN_HLEN > end {
                return s;
            }
            ethertype = read(data + 16);
            ip += VLAN_HLEN;
        }
        let l4 = if ethertype == ETH_P_IP {
            if ip + 20 > end {
                return s;
            }
            s.family = 4;
            s.proto = read::<u8>(ip + 9);
            s.src[0] = read::<u32>(ip + 12);
            s.dst[0] = read::<u32>(ip + 16);
            if read::<u16>(ip + 6) & 0x1fffu16.to_be() != 0 {
                return s;
            }
            ip + usize::from(read::<u8>(ip) & 0xf) * 4
        } else if ethertype == ETH_P_IPV6 {
            if ip + 40 > end {
                return s;
            }
            s.family = 6;
            s.proto = read::<u8>(ip + 6);
            for i in 0..4 {
                s.src[i] = read::<u32>(ip + 8 + 4 * i);
                s.dst[i] = read::<u32>(ip + 24 + 4 * i);
            }
            ip + 40
        } else {
            return s;
        };
        if (s.proto == IPPROTO_TCP || s.proto == IPPROTO_UDP) && l4 + 4 <= end {
            s.sport = u16::from_be(read::<u16>(l4));
            s.dport = u16::from_be(read::<u16>(l4 + 2));
        }
    }
    s
}

/// The balancer's counters that make a record, on this CPU.
#[inline(always)]
fn lb_counts() -> [u64; LB_COUNTED] {
    let mut c = [0u64; LB_COUNTED];
    if let Some(p) = REASONS.get_ptr(0) {
        // SAFETY: this CPU's value; the indices are reasons, below REASON_SLOTS.
        unsafe {
            for (i, r) in LB_DROPS.iter().chain(LB_NEW.iter()).enumerate() {
                c[i] = (*p)[*r as usize];
            }
        }
    }
    c
}

/// Logs what the balancer did with the packet `lb_before` noted.
#[inline(always)]
pub fn lb_after(ctx: &XdpContext, scratch: Option<*mut Scratch>) {
    let Some(p) = scratch else { return };
    let after = lb_counts();
    for (i, r) in LB_DROPS.iter().chain(LB_NEW.iter()).enumerate() {
        // SAFETY: this CPU's value, see `lb_before`.
        if after[i] != unsafe { (*p).counts[i] } {
            let event = if i < LB_DROPS.len() {
                EVENT_DROP
            } else {
                EVENT_NEW_FLOW
            };
            // The next hop's MAC, for a forwarded frame: the backend's (DSR) or the router's
            // towards it (IPIP).
            let mut mac = [0u8; 6];
            let (data, end) = (ctx.data(), ctx.data_end());
            if event == EVENT_NEW_FLOW && data + 6 <= end {
                // SAFETY: six bytes checked above.
                let (lo, hi) = unsafe { (read::<u32>(data), read::<u16>(data + 4)) };
                mac[..4].copy_from_slice(&lo.to_ne_bytes());
                mac[4..].copy_from_slice(&hi.to_ne_bytes());
            }
            // SAFETY: as above.
            record(event, *r as u32, unsafe { &(*p).seen }, &mac);
            return;
        }
    }
}

#[inline(always)]
fn decap_counts() -> [u64; 4] {
    let mut c = [0u64; 4];
    for (i, r) in DECAP_DROPS.iter().enumerate() {
        if let Some(v) = DECAP_REASONS.get(*r as u32) {
            c[i] = *v;
        }
    }
    c
}

#[inline(always)]
pub fn decap_after(scratch: Option<*mut Scratch>) {
    let Some(p) = scratch else { return };
    let after = decap_counts();
    for (i, r) in DECAP_DROPS.iter().enumerate() {
        // SAFETY: this CPU's value, see `lb_before`.
        if after[i] != unsafe { (*p).counts[i] } {
            record(EVENT_DECAP_DROP, *r as u32, unsafe { &(*p).seen }, &[0; 6]);
            return;
        }
    }
}

/// Whether this CPU may write a record now; logs the count of refused ones when a new second
/// begins.
#[inline(always)]
fn admit() -> bool {
    let Some(b) = DIAG_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's value, written only by the debug programs on this CPU.
    unsafe {
        let now = bpf_ktime_get_ns();
        if now.wrapping_sub((*b).start_ns) >= 1_000_000_000 {
            let refused = (*b).suppressed;
            (*b).start_ns = now;
            (*b).sent = 0;
            (*b).suppressed = 0;
            if refused != 0 {
                info!(&(), "event={} count={}", EVENT_SUPPRESSED, refused);
            }
        }
        if (*b).sent >= RECORDS_PER_CPU_SECOND {
            (*b).suppressed += 1;
            return false;
        }
        (*b).sent += 1;
    }
    true
}

/// One record. A function of its own (a BPF-to-BPF call): the log calls are written once,
/// not into every place the debug programs inline them.
#[inline(never)]
fn record(event: u32, reason: u32, s: &Seen, mac: &[u8; 6]) {
    if !admit() {
        return;
    }
    let (len, ifindex, proto, sport, dport) = (s.len, s.ifindex, s.proto, s.sport, s.dport);
    let mac = *mac;
    if s.family == 4 {
        let (src, dst) = (s.src[0].to_ne_bytes(), s.dst[0].to_ne_bytes());
        info!(
            &(),
            "event={} reason={} ifindex={} len={} proto={} src={:i} sport={} dst={:i} dport={} mac={:mac}",
            event,
            reason,
            ifindex,
            len,
            proto,
            src,
            sport,
            dst,
            dport,
            mac
        );
    } else if s.family == 6 {
        let (src, dst) = (words_to_bytes(&s.src), words_to_bytes(&s.dst));
        info!(
            &(),
            "event={} reason={} ifindex={} len={} proto={} src={:i} sport={} dst={:i} dport={} mac={:mac}",
            event,
            reason,
            ifindex,
            len,
            proto,
            src,
            sport,
            dst,
            dport,
            mac
        );
    } else {
        info!(
            &(),
            "event={} reason={} ifindex={} len={}", event, reason, ifindex, len
        );
    }
}

#[inline(always)]
fn words_to_bytes(w: &[u32; 4]) -> [u8; 16] {
    let mut b = [0u8; 16];
    for i in 0..4 {
        b[4 * i..4 * i + 4].copy_from_slice(&w[i].to_ne_bytes());
    }
    b
}
