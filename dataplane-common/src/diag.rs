//! The opt-in diagnostics of the XDP programs (`[dataplane] debug`, `portier debug xdp on`):
//! what the debug programs log through aya-log, shared so the userspace reader renders exactly
//! what the kernel side wrote.
//!
//! The debug programs are separate entry points around the same packet path
//! (`portier_lb_debug` around `portier_lb`, `portier_decap_debug` around `portier_decap`). They
//! read this CPU's reason counters before and after the packet: a drop counter that moved
//! names the drop, a new-flow counter the new flow. The programs attached while debug is off
//! are therefore the very same instructions as without diagnostics.
//!
//! Records are key=value text (aya-log's format string), the numbers looked up here:
//! `event=E reason=R ifindex=I len=L [proto=P src=A sport=S dst=B dport=T] [mac=M | to=C]`,
//! and `event=suppressed count=N` when the per-CPU budget dropped records.

/// The balancer's debug entry point.
pub const BALANCER_DEBUG: &str = "portier_lb_debug";
/// The decapsulator's debug entry point.
pub const DECAP_DEBUG: &str = "portier_decap_debug";

/// `event=` values.
pub const EVENT_DROP: u32 = 1;
pub const EVENT_NEW_FLOW: u32 = 2;
pub const EVENT_DECAP_DROP: u32 = 3;
pub const EVENT_SUPPRESSED: u32 = 4;

/// Records one CPU may write per second; past it records are only counted, and the count is
/// logged once the second is over. A drop flood thus costs the ring buffer at most this many
/// records per CPU per second (the userspace reader caps the total again).
pub const RECORDS_PER_CPU_SECOND: u64 = 20;

/// The name of an `event=` value.
pub const fn event_name(event: u32) -> &'static str {
    match event {
        EVENT_DROP => "drop",
        EVENT_NEW_FLOW => "new_flow",
        EVENT_DECAP_DROP => "decap_drop",
        EVENT_SUPPRESSED => "suppressed",
        _ => "unknown",
    }
}
