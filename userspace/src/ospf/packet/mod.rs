//! OSPFv2 packet codecs (RFC 2328 A.3): the common header, the five packet bodies and
//! authentication. Decoding never panics on any input; every reason to drop a packet is a
//! `DecodeError` variant so the caller can count it.

pub mod auth;
mod dd;
mod hello;
mod lsack;
mod lsr;
mod lsu;

use std::net::Ipv4Addr;

pub use auth::{Auth, AuthError, AuthKey};
pub use dd::{DbDescription, DdFlags};
pub use hello::Hello;
pub use lsack::LsAck;
pub use lsr::{LsRequest, LsRequestEntry};
pub use lsu::LsUpdate;

use crate::ospf::lsa::LsaError;

pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 24;
pub const ALL_SPF_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 5);
pub const ALL_D_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 6);
/// IP protocol number of OSPF.
pub const IPPROTO_OSPF: i32 = 89;

/// Options bit E: the area carries AS-external LSAs (RFC 2328 A.2).
pub const OPTION_E: u8 = 0x02;
/// O: opaque LSAs understood (RFC 5250); set in DDs (not Hellos: FRR warns of "O-bit
/// abuse") so neighbours flood us grace-LSAs.
pub const OPTION_O: u8 = 0x40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    Hello = 1,
    DbDescription = 2,
    LsRequest = 3,
    LsUpdate = 4,
    LsAck = 5,
}

impl PacketType {
    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Hello,
            2 => Self::DbDescription,
            3 => Self::LsRequest,
            4 => Self::LsUpdate,
            5 => Self::LsAck,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::DbDescription => "dd",
            Self::LsRequest => "lsr",
            Self::LsUpdate => "lsu",
            Self::LsAck => "lsack",
        }
    }
}

/// The fields of the common header that matter after authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub packet_type: PacketType,
    pub router_id: Ipv4Addr,
    pub area_id: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Hello(Hello),
    DbDescription(DbDescription),
    LsRequest(LsRequest),
    LsUpdate(LsUpdate),
    LsAck(LsAck),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub header: Header,
    pub body: Body,
}

/// Why a received packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("packet shorter than its header or length field")]
    Truncated,
    #[error("OSPF version {0}, expected 2")]
    Version(u8),
    #[error("unknown packet type {0}")]
    UnknownType(u8),
    #[error("length field {0} is inconsistent")]
    BadLength(usize),
    #[error("bad packet checksum")]
    Checksum,
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    #[error("malformed {0} body")]
    Body(&'static str),
    #[error("bad LSA: {0}")]
    Lsa(#[from] LsaError),
}

impl DecodeError {
    /// A short label for a metric.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::Version(_) => "version",
            Self::UnknownType(_) => "type",
            Self::BadLength(_) => "length",
            Self::Checksum => "checksum",
            Self::Auth(_) => "auth",
            Self::Body(_) | Self::Lsa(_) => "body",
        }
    }
}

/// The authentication-relevant facts of a packet, for the caller's per-neighbour replay
/// check of the cryptographic sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub crypto_seq: Option<u32>,
}

/// Decodes an OSPF packet (the IP payload). `auth` is the receiving interface's scheme.
pub fn decode(data: &[u8], auth: &Auth) -> Result<(Packet, Received), DecodeError> {
    if data.len() < HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    if data[0] != VERSION {
        return Err(DecodeError::Version(data[0]));
    }
    let packet_type = PacketType::from_u8(data[1]).ok_or(DecodeError::UnknownType(data[1]))?;
    let length = usize::from(u16::from_be_bytes([data[2], data[3]]));
    if length < HEADER_LEN {
        return Err(DecodeError::BadLength(length));
    }
    if length > data.len() {
        return Err(DecodeError::Truncated);
    }
    let router_id = ipv4(&data[4..8]);
    let area_id = ipv4(&data[8..12]);
    let au_type = u16::from_be_bytes([data[14], data[15]]);
    let crypto_seq = auth.verify(data, length, au_type)?;
    if crypto_seq.is_none() && checksum(&data[..length]) != 0 {
        return Err(DecodeError::Checksum);
    }
    let body = &data[HEADER_LEN..length];
    let body = match packet_type {
        PacketType::Hello => Body::Hello(Hello::decode(body)?),
        PacketType::DbDescription => Body::DbDescription(DbDescription::decode(body)?),
        PacketType::LsRequest => Body::LsRequest(LsRequest::decode(body)?),
        PacketType::LsUpdate => Body::LsUpdate(LsUpdate::decode(body)?),
        PacketType::LsAck => Body::LsAck(LsAck::decode(body)?),
    };
    Ok((
        Packet {
            header: Header {
                packet_type,
                router_id,
                area_id,
            },
            body,
        },
        Received { crypto_seq },
    ))
}

impl Packet {
    /// Encodes with `auth`; `crypto_seq` is used only by MD5.
    pub fn encode(&self, auth: &Auth, crypto_seq: u32) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_LEN];
        out[0] = VERSION;
        out[1] = self.header.packet_type as u8;
        out[4..8].copy_from_slice(&self.header.router_id.octets());
        out[8..12].copy_from_slice(&self.header.area_id.octets());
        match &self.body {
            Body::Hello(b) => b.encode(&mut out),
            Body::DbDescription(b) => b.encode(&mut out),
            Body::LsRequest(b) => b.encode(&mut out),
            Body::LsUpdate(b) => b.encode(&mut out),
            Body::LsAck(b) => b.encode(&mut out),
        }
        let length = u16::try_from(out.len()).unwrap_or(u16::MAX);
        out[2..4].copy_from_slice(&length.to_be_bytes());
        auth.sign(&mut out, crypto_seq);
        out
    }
}

impl Body {
    pub fn packet_type(&self) -> PacketType {
        match self {
            Body::Hello(_) => PacketType::Hello,
            Body::DbDescription(_) => PacketType::DbDescription,
            Body::LsRequest(_) => PacketType::LsRequest,
            Body::LsUpdate(_) => PacketType::LsUpdate,
            Body::LsAck(_) => PacketType::LsAck,
        }
    }
}

/// The IP ones-complement checksum; the 8-byte authentication field (bytes 16..24) is
/// excluded as RFC 2328 D.4.1/D.4.2 require. Returns 0 over a packet with a valid checksum.
pub(crate) fn checksum(packet: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = match pair {
                [a, b] => u16::from_be_bytes([*a, *b]),
                [a] => u16::from_be_bytes([*a, 0]),
                _ => 0,
            };
            sum += u32::from(word);
        }
    };
    add(&packet[..packet.len().min(16)]);
    if packet.len() > HEADER_LEN {
        add(&packet[HEADER_LEN..]);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub(crate) fn ipv4(bytes: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
}

#[cfg(test)]
pub(crate) mod tests;
