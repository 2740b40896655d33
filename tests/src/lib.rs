//! The lab harness: network namespaces, the lab topology of DESIGN.md, and client helpers.
//! Used by `cargo xtask lab|demo` and by the end-to-end tests.

pub mod bgp_bench;
pub mod bird;
pub mod browser;
pub mod client;
pub mod dockerd;
pub mod failover;
pub mod frr;
pub mod lab;
pub mod lab_docker;
pub mod lab_routed;
pub mod netns;
pub mod openmetrics;
pub mod pair;
pub mod vrrp;
pub mod wait;
