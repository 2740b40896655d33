//! The host side of IPIP services: the decapsulator (an XDP program, `dataplane::decap` loads
//! it) strips tunnels addressed to this host's backend addresses and hands the inner packet to
//! the stack. This folder holds the part that keeps it in line with `[decap]`.

pub mod part;
