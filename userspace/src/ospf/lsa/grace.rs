//! The grace-LSA (RFC 3623 appendix A): a link-local opaque LSA (type 9, opaque type 3,
//! opaque ID 0) whose body is TLVs: the grace period, the restart reason and, on broadcast
//! and NBMA links, the restarting router's interface address.

use std::net::Ipv4Addr;

use super::{LsaError, TYPE_OPAQUE_LINK};
use crate::ospf::packet::ipv4;

/// Opaque type 3 (RFC 3623 A), opaque ID 0: the Link State ID `3.0.0.0`.
pub const GRACE_OPAQUE_TYPE: u8 = 3;
pub const GRACE_LS_ID: Ipv4Addr = Ipv4Addr::new(GRACE_OPAQUE_TYPE, 0, 0, 0);

const TLV_GRACE_PERIOD: u16 = 1;
const TLV_REASON: u16 = 2;
const TLV_ADDRESS: u16 = 3;

/// Why the router restarts (RFC 3623 A, TLV 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartReason {
    Unknown,
    SoftwareRestart,
    SoftwareUpgrade,
    SwitchToRedundant,
    Other(u8),
}

impl RestartReason {
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Unknown,
            1 => Self::SoftwareRestart,
            2 => Self::SoftwareUpgrade,
            3 => Self::SwitchToRedundant,
            v => Self::Other(v),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::SoftwareRestart => 1,
            Self::SoftwareUpgrade => 2,
            Self::SwitchToRedundant => 3,
            Self::Other(v) => v,
        }
    }

    /// Planned restarts are those announced before the router went down.
    pub fn planned(self) -> bool {
        !matches!(self, Self::Unknown)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraceLsa {
    /// Seconds, counted from the LSA's origination (its age says how much is left).
    pub grace_period: u32,
    pub reason: RestartReason,
    /// The restarting router's address on the link (required on broadcast links, where
    /// helpers find the neighbour by it).
    pub address: Option<Ipv4Addr>,
}

/// Whether an LSA's type and ID make it a grace-LSA.
pub fn is_grace(ls_type: u8, ls_id: Ipv4Addr) -> bool {
    ls_type == TYPE_OPAQUE_LINK && ls_id.octets()[0] == GRACE_OPAQUE_TYPE
}

impl GraceLsa {
    /// TLVs in any order; unknown ones are skipped (RFC 3623 A), the grace period is
    /// required, a TLV running past the body or of the wrong length is malformed.
    pub fn decode(body: &[u8]) -> Result<Self, LsaError> {
        let mut grace_period = None;
        let mut reason = None;
        let mut address = None;
        let mut rest = body;
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(LsaError::Body);
            }
            let kind = u16::from_be_bytes([rest[0], rest[1]]);
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            let padded = 4 + len.div_ceil(4) * 4;
            if rest.len() < 4 + len {
                return Err(LsaError::Body);
            }
            let value = &rest[4..4 + len];
            match (kind, len) {
                (TLV_GRACE_PERIOD, 4) => {
                    grace_period =
                        Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]]))
                }
                (TLV_REASON, 1) => reason = Some(RestartReason::from_u8(value[0])),
                (TLV_ADDRESS, 4) => address = Some(ipv4(value)),
                (TLV_GRACE_PERIOD | TLV_REASON | TLV_ADDRESS, _) => return Err(LsaError::Body),
                _ => {}
            }
            rest = rest.get(padded..).unwrap_or(&[]);
        }
        Ok(Self {
            grace_period: grace_period.ok_or(LsaError::Body)?,
            reason: reason.unwrap_or(RestartReason::Unknown),
            address,
        })
    }

    /// Grace period, reason, then the address, as FRR orders them.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(&TLV_GRACE_PERIOD.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&self.grace_period.to_be_bytes());
        out.extend_from_slice(&TLV_REASON.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&[self.reason.to_u8(), 0, 0, 0]);
        if let Some(a) = self.address {
            out.extend_from_slice(&TLV_ADDRESS.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&a.octets());
        }
        out
    }
}
