//! Link State Request body (RFC 2328 A.3.4).

use std::net::Ipv4Addr;

use super::{DecodeError, ipv4};
use crate::ospf::lsa::LsaKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LsRequestEntry {
    /// 32 bits on the wire; a value above 255 can never match an LSA.
    pub ls_type: u32,
    pub ls_id: Ipv4Addr,
    pub advertising_router: Ipv4Addr,
}

impl From<LsaKey> for LsRequestEntry {
    fn from(key: LsaKey) -> Self {
        Self {
            ls_type: u32::from(key.ls_type),
            ls_id: key.ls_id,
            advertising_router: key.advertising_router,
        }
    }
}

impl LsRequestEntry {
    /// The LSDB key, or `None` for a type no LSA can have.
    pub fn key(&self) -> Option<LsaKey> {
        Some(LsaKey {
            ls_type: u8::try_from(self.ls_type).ok()?,
            ls_id: self.ls_id,
            advertising_router: self.advertising_router,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsRequest {
    pub entries: Vec<LsRequestEntry>,
}

pub(crate) const ENTRY_LEN: usize = 12;

impl LsRequest {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        if !body.len().is_multiple_of(ENTRY_LEN) {
            return Err(DecodeError::Body("lsr"));
        }
        let entries = body
            .chunks_exact(ENTRY_LEN)
            .map(|e| LsRequestEntry {
                ls_type: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
                ls_id: ipv4(&e[4..8]),
                advertising_router: ipv4(&e[8..12]),
            })
            .collect();
        Ok(Self { entries })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        for e in &self.entries {
            out.extend_from_slice(&e.ls_type.to_be_bytes());
            out.extend_from_slice(&e.ls_id.octets());
            out.extend_from_slice(&e.advertising_router.octets());
        }
    }
}
