//! Database Description body (RFC 2328 A.3.3).

use super::DecodeError;
use crate::ospf::lsa::{LSA_HEADER_LEN, LsaHeader};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DdFlags {
    /// I: first packet of the sequence.
    pub init: bool,
    /// M: more packets follow.
    pub more: bool,
    /// MS: the sender is master.
    pub master: bool,
}

impl DdFlags {
    pub fn bits(self) -> u8 {
        (u8::from(self.init) << 2) | (u8::from(self.more) << 1) | u8::from(self.master)
    }

    pub fn from_bits(bits: u8) -> Self {
        Self {
            init: bits & 4 != 0,
            more: bits & 2 != 0,
            master: bits & 1 != 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbDescription {
    pub interface_mtu: u16,
    pub options: u8,
    pub flags: DdFlags,
    pub dd_sequence: u32,
    pub lsa_headers: Vec<LsaHeader>,
}

const FIXED: usize = 8;

impl DbDescription {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        if body.len() < FIXED || !(body.len() - FIXED).is_multiple_of(LSA_HEADER_LEN) {
            return Err(DecodeError::Body("dd"));
        }
        let lsa_headers = body[FIXED..]
            .chunks_exact(LSA_HEADER_LEN)
            .map(LsaHeader::decode)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            interface_mtu: u16::from_be_bytes([body[0], body[1]]),
            options: body[2],
            flags: DdFlags::from_bits(body[3]),
            dd_sequence: u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
            lsa_headers,
        })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.interface_mtu.to_be_bytes());
        out.push(self.options);
        out.push(self.flags.bits());
        out.extend_from_slice(&self.dd_sequence.to_be_bytes());
        for h in &self.lsa_headers {
            h.encode(out);
        }
    }
}
