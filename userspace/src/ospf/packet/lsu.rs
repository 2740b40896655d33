//! Link State Update body (RFC 2328 A.3.5): a count, then whole LSAs.

use super::DecodeError;
use crate::ospf::lsa::{LSA_HEADER_LEN, Lsa, LsaError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsUpdate {
    /// Each LSA as received; one with a bad checksum or length is kept as the error so the
    /// rest of the update is still processed (RFC 2328 13, step 1 discards only that LSA).
    pub lsas: Vec<Result<Lsa, LsaError>>,
}

impl LsUpdate {
    pub fn new(lsas: Vec<Lsa>) -> Self {
        Self {
            lsas: lsas.into_iter().map(Ok).collect(),
        }
    }

    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        if body.len() < 4 {
            return Err(DecodeError::Body("lsu"));
        }
        let count = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
        let mut rest = &body[4..];
        let mut lsas = Vec::new();
        for _ in 0..count {
            if rest.len() < LSA_HEADER_LEN {
                return Err(DecodeError::Body("lsu"));
            }
            let length = usize::from(u16::from_be_bytes([rest[18], rest[19]]));
            if length < LSA_HEADER_LEN || length > rest.len() {
                // Without a usable length the following LSAs cannot be found either.
                return Err(DecodeError::Body("lsu"));
            }
            lsas.push(Lsa::decode(&rest[..length]));
            rest = &rest[length..];
        }
        Ok(Self { lsas })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        let valid: Vec<&Lsa> = self.lsas.iter().filter_map(|l| l.as_ref().ok()).collect();
        out.extend_from_slice(&(valid.len() as u32).to_be_bytes());
        for lsa in valid {
            out.extend_from_slice(lsa.bytes());
        }
    }
}
