//! Link State Acknowledgment body (RFC 2328 A.3.6): LSA headers.

use super::DecodeError;
use crate::ospf::lsa::{LSA_HEADER_LEN, LsaHeader};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsAck {
    pub lsa_headers: Vec<LsaHeader>,
}

impl LsAck {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        if !body.len().is_multiple_of(LSA_HEADER_LEN) {
            return Err(DecodeError::Body("lsack"));
        }
        let lsa_headers = body
            .chunks_exact(LSA_HEADER_LEN)
            .map(LsaHeader::decode)
            .collect::<Result<_, _>>()?;
        Ok(Self { lsa_headers })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        for h in &self.lsa_headers {
            h.encode(out);
        }
    }
}
