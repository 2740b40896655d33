//! Hello body (RFC 2328 A.3.2).

use std::net::Ipv4Addr;

use super::{DecodeError, ipv4};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub network_mask: Ipv4Addr,
    pub hello_interval: u16,
    pub options: u8,
    pub priority: u8,
    pub dead_interval: u32,
    pub designated_router: Ipv4Addr,
    pub backup_designated_router: Ipv4Addr,
    /// Router IDs of the neighbours heard from recently.
    pub neighbors: Vec<Ipv4Addr>,
}

const FIXED: usize = 20;

impl Hello {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        if body.len() < FIXED || !(body.len() - FIXED).is_multiple_of(4) {
            return Err(DecodeError::Body("hello"));
        }
        Ok(Self {
            network_mask: ipv4(&body[0..4]),
            hello_interval: u16::from_be_bytes([body[4], body[5]]),
            options: body[6],
            priority: body[7],
            dead_interval: u32::from_be_bytes([body[8], body[9], body[10], body[11]]),
            designated_router: ipv4(&body[12..16]),
            backup_designated_router: ipv4(&body[16..20]),
            neighbors: body[FIXED..].chunks_exact(4).map(ipv4).collect(),
        })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.network_mask.octets());
        out.extend_from_slice(&self.hello_interval.to_be_bytes());
        out.push(self.options);
        out.push(self.priority);
        out.extend_from_slice(&self.dead_interval.to_be_bytes());
        out.extend_from_slice(&self.designated_router.octets());
        out.extend_from_slice(&self.backup_designated_router.octets());
        for n in &self.neighbors {
            out.extend_from_slice(&n.octets());
        }
    }
}
