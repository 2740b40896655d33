//! portier: L4 balancing in XDP, L7 proxying, VRRP and OSPF in one daemon.
pub mod dataplane;
