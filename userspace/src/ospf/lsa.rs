//! LSAs (RFC 2328 A.4): the header, the bodies portier originates or reads (Router,
//! Network, AS-external), the Fletcher checksum and the "which instance is newer" rule.

use std::cmp::Ordering;
use std::net::Ipv4Addr;

use super::packet::ipv4;

pub mod grace;

pub const LSA_HEADER_LEN: usize = 20;
/// Seconds.
pub const MAX_AGE: u16 = 3600;
pub const MAX_AGE_DIFF: u16 = 900;
pub const LS_REFRESH_TIME: u16 = 1800;
pub const INITIAL_SEQ: i32 = 0x8000_0001_u32 as i32;
pub const MAX_SEQ: i32 = 0x7fff_ffff;

pub const TYPE_ROUTER: u8 = 1;
pub const TYPE_NETWORK: u8 = 2;
pub const TYPE_SUMMARY_NETWORK: u8 = 3;
pub const TYPE_SUMMARY_ASBR: u8 = 4;
pub const TYPE_AS_EXTERNAL: u8 = 5;
/// Opaque LSAs (RFC 5250) by flooding scope: link, area, AS.
pub const TYPE_OPAQUE_LINK: u8 = 9;
pub const TYPE_OPAQUE_AREA: u8 = 10;
pub const TYPE_OPAQUE_AS: u8 = 11;

/// Types this router stores and floods (no NSSA: we never set that option). Opaque LSAs
/// are kept and flooded as RFC 5250 asks of a router that sets the O option, which we do
/// for graceful restart's grace-LSA.
pub fn known_type(ls_type: u8) -> bool {
    (TYPE_ROUTER..=TYPE_AS_EXTERNAL).contains(&ls_type)
        || (TYPE_OPAQUE_LINK..=TYPE_OPAQUE_AS).contains(&ls_type)
}

/// Link-local flooding scope: the LSA never leaves the link it belongs to.
pub fn link_local(ls_type: u8) -> bool {
    ls_type == TYPE_OPAQUE_LINK
}

/// The types whose change is a topology change (RFC 3623 3.2: types 1 to 5 and 7).
pub fn topology_type(ls_type: u8) -> bool {
    (TYPE_ROUTER..=TYPE_AS_EXTERNAL).contains(&ls_type) || ls_type == 7
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LsaKey {
    pub ls_type: u8,
    pub ls_id: Ipv4Addr,
    pub advertising_router: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsaHeader {
    pub age: u16,
    pub options: u8,
    pub ls_type: u8,
    pub ls_id: Ipv4Addr,
    pub advertising_router: Ipv4Addr,
    pub seq: i32,
    pub checksum: u16,
    pub length: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LsaError {
    #[error("LSA shorter than its header or length field")]
    Truncated,
    #[error("LSA length {0} is inconsistent")]
    Length(u16),
    #[error("LSA checksum mismatch")]
    Checksum,
    #[error("malformed LSA body")]
    Body,
}

impl LsaHeader {
    pub fn decode(bytes: &[u8]) -> Result<Self, LsaError> {
        if bytes.len() < LSA_HEADER_LEN {
            return Err(LsaError::Truncated);
        }
        Ok(Self {
            // The top bit is DoNotAge (RFC 1793); without demand circuits it is never set,
            // and treating it as age keeps a bogus value from looking young.
            age: u16::from_be_bytes([bytes[0], bytes[1]]).min(MAX_AGE),
            options: bytes[2],
            ls_type: bytes[3],
            ls_id: ipv4(&bytes[4..8]),
            advertising_router: ipv4(&bytes[8..12]),
            seq: i32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
            checksum: u16::from_be_bytes([bytes[16], bytes[17]]),
            length: u16::from_be_bytes([bytes[18], bytes[19]]),
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.age.to_be_bytes());
        out.push(self.options);
        out.push(self.ls_type);
        out.extend_from_slice(&self.ls_id.octets());
        out.extend_from_slice(&self.advertising_router.octets());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.checksum.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }

    pub fn key(&self) -> LsaKey {
        LsaKey {
            ls_type: self.ls_type,
            ls_id: self.ls_id,
            advertising_router: self.advertising_router,
        }
    }

    /// RFC 2328 13.1: `Greater` when `self` is the more recent instance.
    pub fn compare(&self, other: &LsaHeader) -> Ordering {
        self.seq
            .cmp(&other.seq)
            .then(self.checksum.cmp(&other.checksum))
            .then_with(|| match (self.age == MAX_AGE, other.age == MAX_AGE) {
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ if self.age.abs_diff(other.age) > MAX_AGE_DIFF => other.age.cmp(&self.age),
                _ => Ordering::Equal,
            })
    }
}

/// A whole LSA as it travels: the header decoded, the bytes kept (age field as received).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lsa {
    pub header: LsaHeader,
    bytes: Vec<u8>,
}

impl Lsa {
    /// Validates length and checksum of one LSA (exactly `bytes`).
    pub fn decode(bytes: &[u8]) -> Result<Self, LsaError> {
        let header = LsaHeader::decode(bytes)?;
        if usize::from(header.length) != bytes.len() {
            return Err(LsaError::Length(header.length));
        }
        if !bytes.len().is_multiple_of(4) {
            return Err(LsaError::Length(header.length));
        }
        // Over the whole LSA including its check bytes, valid sums are zero.
        if fletcher(&bytes[2..], usize::MAX - 1) != [0, 0] {
            return Err(LsaError::Checksum);
        }
        Ok(Self {
            header,
            bytes: bytes.to_vec(),
        })
    }

    /// Builds an LSA from header fields and body, computing length and checksum.
    pub fn build(
        ls_type: u8,
        ls_id: Ipv4Addr,
        advertising_router: Ipv4Addr,
        options: u8,
        seq: i32,
        body: &[u8],
    ) -> Self {
        let length = (LSA_HEADER_LEN + body.len()) as u16;
        let mut header = LsaHeader {
            age: 0,
            options,
            ls_type,
            ls_id,
            advertising_router,
            seq,
            checksum: 0,
            length,
        };
        let mut bytes = Vec::with_capacity(usize::from(length));
        header.encode(&mut bytes);
        bytes.extend_from_slice(body);
        let sum = fletcher_checksum(&bytes[2..], 14);
        bytes[16..18].copy_from_slice(&sum.to_be_bytes());
        header.checksum = sum;
        Self { header, bytes }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn body(&self) -> &[u8] {
        &self.bytes[LSA_HEADER_LEN..]
    }

    pub fn key(&self) -> LsaKey {
        self.header.key()
    }

    /// The same instance with another age (the age is outside the checksum).
    pub fn with_age(&self, age: u16) -> Self {
        let mut lsa = self.clone();
        lsa.header.age = age.min(MAX_AGE);
        lsa.bytes[0..2].copy_from_slice(&lsa.header.age.to_be_bytes());
        lsa
    }
}

/// Fletcher sums over `data` with the two checksum bytes at `offset` counted as zero
/// (an offset past the end counts every byte).
fn fletcher(data: &[u8], offset: usize) -> [u8; 2] {
    let (mut c0, mut c1) = (0u32, 0u32);
    for (i, &b) in data.iter().enumerate() {
        let b = if i == offset || i == offset + 1 { 0 } else { b };
        c0 = (c0 + u32::from(b)) % 255;
        c1 = (c1 + c0) % 255;
    }
    [c0 as u8, c1 as u8]
}

/// The ISO 8473 check bytes that make the Fletcher sums of `data` zero (RFC 905 annex B).
fn fletcher_checksum(data: &[u8], offset: usize) -> u16 {
    let [c0, c1] = fletcher(data, offset);
    let (c0, c1) = (i64::from(c0), i64::from(c1));
    let remaining = (data.len() - offset - 1) as i64;
    let mut x = (remaining * c0 - c1).rem_euclid(255);
    if x == 0 {
        x = 255;
    }
    let mut y = (510 - c0 - x).rem_euclid(255);
    if y == 0 {
        y = 255;
    }
    ((x as u16) << 8) | y as u16
}

pub const LINK_POINT_TO_POINT: u8 = 1;
pub const LINK_TRANSIT: u8 = 2;
pub const LINK_STUB: u8 = 3;

/// Router-LSA flag E: this router is an AS boundary router.
pub const ROUTER_FLAG_E: u8 = 0x02;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterLink {
    pub link_id: Ipv4Addr,
    pub link_data: Ipv4Addr,
    pub link_type: u8,
    pub metric: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterLsa {
    pub flags: u8,
    pub links: Vec<RouterLink>,
}

impl RouterLsa {
    pub fn decode(body: &[u8]) -> Result<Self, LsaError> {
        if body.len() < 4 {
            return Err(LsaError::Body);
        }
        let count = usize::from(u16::from_be_bytes([body[2], body[3]]));
        let mut rest = &body[4..];
        let mut links = Vec::with_capacity(count.min(256));
        for _ in 0..count {
            if rest.len() < 12 {
                return Err(LsaError::Body);
            }
            let tos_count = usize::from(rest[9]);
            let len = 12 + 4 * tos_count;
            if rest.len() < len {
                return Err(LsaError::Body);
            }
            links.push(RouterLink {
                link_id: ipv4(&rest[0..4]),
                link_data: ipv4(&rest[4..8]),
                link_type: rest[8],
                metric: u16::from_be_bytes([rest[10], rest[11]]),
            });
            rest = &rest[len..];
        }
        Ok(Self {
            flags: body[0],
            links,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.flags, 0];
        out.extend_from_slice(&(self.links.len() as u16).to_be_bytes());
        for l in &self.links {
            out.extend_from_slice(&l.link_id.octets());
            out.extend_from_slice(&l.link_data.octets());
            out.push(l.link_type);
            out.push(0);
            out.extend_from_slice(&l.metric.to_be_bytes());
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkLsa {
    pub mask: Ipv4Addr,
    pub attached_routers: Vec<Ipv4Addr>,
}

impl NetworkLsa {
    pub fn decode(body: &[u8]) -> Result<Self, LsaError> {
        if body.len() < 4 || !body.len().is_multiple_of(4) {
            return Err(LsaError::Body);
        }
        Ok(Self {
            mask: ipv4(&body[0..4]),
            attached_routers: body[4..].chunks_exact(4).map(ipv4).collect(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.mask.octets().to_vec();
        for r in &self.attached_routers {
            out.extend_from_slice(&r.octets());
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalLsa {
    pub mask: Ipv4Addr,
    /// E bit: type-2 metric (not comparable with internal costs).
    pub type2: bool,
    /// 24 bits.
    pub metric: u32,
    pub forwarding_address: Ipv4Addr,
    pub route_tag: u32,
}

impl ExternalLsa {
    pub fn decode(body: &[u8]) -> Result<Self, LsaError> {
        if body.len() < 16 {
            return Err(LsaError::Body);
        }
        Ok(Self {
            mask: ipv4(&body[0..4]),
            type2: body[4] & 0x80 != 0,
            metric: u32::from_be_bytes([0, body[5], body[6], body[7]]),
            forwarding_address: ipv4(&body[8..12]),
            route_tag: u32::from_be_bytes([body[12], body[13], body[14], body[15]]),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.mask.octets().to_vec();
        let metric = self.metric.min(0x00ff_ffff).to_be_bytes();
        out.push(if self.type2 { 0x80 } else { 0 });
        out.extend_from_slice(&metric[1..]);
        out.extend_from_slice(&self.forwarding_address.octets());
        out.extend_from_slice(&self.route_tag.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests;
