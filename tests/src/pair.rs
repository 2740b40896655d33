//! Two namespaces joined by one veth (`eth0` on both sides), `<prefix>-r` at 10.77.N.1/24 and
//! `<prefix>-p` at .2 (and fd77:N::1/64, ::2): the smallest network for a protocol test
//! against a real peer. Dropping it kills what runs in them and removes them.

use anyhow::Result;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::netns::{self, ip, ip_in};

pub struct Pair {
    prefix: String,
    subnet: u8,
}

impl Pair {
    pub fn new(prefix: &str, subnet: u8) -> Result<Pair> {
        netns::require_root()?;
        let pair = Pair {
            prefix: prefix.to_owned(),
            subnet,
        };
        pair.cleanup();
        let (r, p) = (pair.ns("r"), pair.ns("p"));
        netns::add(&r)?;
        netns::add(&p)?;
        ip(&[
            "link", "add", "eth0", "netns", &r, "type", "veth", "peer", "name", "eth0", "netns", &p,
        ])?;
        for (ns, host) in [(&r, 1), (&p, 2)] {
            ip_in(ns, &["link", "set", "lo", "up"])?;
            ip_in(
                ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", pair.addr(host)),
                    "dev",
                    "eth0",
                ],
            )?;
            ip_in(
                ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/64", pair.addr6(host)),
                    "dev",
                    "eth0",
                    "nodad",
                ],
            )?;
            ip_in(ns, &["link", "set", "eth0", "up"])?;
        }
        Ok(pair)
    }

    /// `r` (the reference peer's side) or `p` (portier's).
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, host)
    }

    pub fn addr6(&self, host: u8) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd77,
            u16::from(self.subnet),
            0,
            0,
            0,
            0,
            0,
            u16::from(host),
        )
    }

    fn cleanup(&self) {
        for role in ["r", "p"] {
            let ns = self.ns(role);
            netns::kill_all_in(&ns);
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.cleanup();
    }
}
