//! portier: L4 balancing in XDP, L7 proxying, VRRP and OSPF in one daemon.

pub mod admin;
pub mod announce;
pub mod bfd;
pub mod bgp;
pub mod bus;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod decap;
pub mod discovery;
pub mod health;
pub mod hostname;
pub mod l4;
pub mod l7;
pub mod limits;
pub mod net;
pub mod ospf;
pub mod part;
pub mod vrrp;
