//! OPEN (RFC 4271 §4.2) with optional parameters (RFC 5492 capabilities; RFC 9072 extended
//! parameter length on receipt, and on sending when the capabilities do not fit 255 octets).

use std::net::Ipv4Addr;

use super::capability::{Capability, GracefulRestart};
use super::notification::{Notification, code, subcode};
use super::{AS_TRANS, Reader, VERSION};
use crate::bgp::prefix::Family;

/// Optional parameter type of the capabilities (RFC 5492).
const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072: a non-extended length of 255 followed by this type means extended lengths.
const PARAM_EXTENDED: u8 = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field: AS_TRANS when the AS needs four octets.
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

/// An OPEN the receiver must refuse, with the NOTIFICATION to send. The codec finds the
/// syntactic ones; the session adds the checks against its configuration (peer AS, our own
/// identifier).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported version number {0}")]
    UnsupportedVersion(u8),
    #[error("bad peer AS {got} (configured {expected})")]
    BadPeerAs { expected: u32, got: u32 },
    #[error("bad BGP identifier {0}")]
    BadBgpId(Ipv4Addr),
    #[error("unsupported optional parameter type {0}")]
    UnsupportedOptionalParameter(u8),
    #[error("unacceptable hold time {0}")]
    UnacceptableHoldTime(u16),
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

impl OpenError {
    pub fn notification(&self) -> Notification {
        use subcode::open as s;
        match self {
            // The data is the largest version we support (RFC 4271 §6.2).
            Self::UnsupportedVersion(_) => Notification::with_data(
                code::OPEN,
                s::UNSUPPORTED_VERSION,
                u16::from(VERSION).to_be_bytes().to_vec(),
            ),
            Self::BadPeerAs { .. } => Notification::new(code::OPEN, s::BAD_PEER_AS),
            Self::BadBgpId(_) => Notification::new(code::OPEN, s::BAD_BGP_ID),
            Self::UnsupportedOptionalParameter(_) => {
                Notification::new(code::OPEN, s::UNSUPPORTED_OPT_PARAM)
            }
            Self::UnacceptableHoldTime(_) => {
                Notification::new(code::OPEN, s::UNACCEPTABLE_HOLD_TIME)
            }
            Self::Malformed(_) => Notification::new(code::OPEN, subcode::UNSPECIFIC),
        }
    }
}

impl Open {
    /// An OPEN for `asn`: the 2-octet field holds AS_TRANS when `asn` does not fit. The caller
    /// lists the capabilities, the four-octet AS one included.
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Self {
        Self {
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The four-octet AS capability's value, if sent.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(a) => Some(*a),
            _ => None,
        })
    }

    /// The sender's AS: the four-octet capability's when present (RFC 6793 §4.1), else
    /// the 2-octet field.
    pub fn asn(&self) -> u32 {
        self.four_octet_as()
            .unwrap_or_else(|| u32::from(self.my_as))
    }

    /// Families of the multiprotocol capabilities; without any, IPv4 unicast (RFC 4760 §8).
    pub fn families(&self) -> Vec<Family> {
        let mut out: Vec<Family> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(f) => Some(*f),
                _ => None,
            })
            .collect();
        if out.is_empty() {
            out.push(Family::IPV4_UNICAST);
        }
        out
    }

    /// Route refresh, by the standard code or the pre-standard 128.
    pub fn route_refresh(&self) -> bool {
        self.capabilities.iter().any(|c| {
            matches!(c, Capability::RouteRefresh)
                || matches!(
                    c,
                    Capability::Unknown {
                        code: super::cap_code::ROUTE_REFRESH_OLD,
                        ..
                    }
                )
        })
    }

    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g),
            _ => None,
        })
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Open, OpenError> {
        let mut r = Reader::new(body);
        let version = r.u8().ok_or(OpenError::Malformed("truncated"))?;
        if version != VERSION {
            return Err(OpenError::UnsupportedVersion(version));
        }
        let (Some(my_as), Some(hold_time), Some(bgp_id), Some(opt_len)) =
            (r.u16(), r.u16(), r.ipv4(), r.u8())
        else {
            return Err(OpenError::Malformed("truncated"));
        };
        let mut capabilities = Vec::new();
        let extended = opt_len == 255 && r.rest_starts_with(PARAM_EXTENDED);
        if extended {
            r.u8();
            let len = r
                .u16()
                .ok_or(OpenError::Malformed("extended parameters length"))?;
            let mut params = Reader::new(
                r.take(usize::from(len))
                    .ok_or(OpenError::Malformed("optional parameters overrun"))?,
            );
            while !params.is_empty() {
                let (Some(t), Some(l)) = (params.u8(), params.u16()) else {
                    return Err(OpenError::Malformed("optional parameter header"));
                };
                let v = params
                    .take(usize::from(l))
                    .ok_or(OpenError::Malformed("optional parameter overrun"))?;
                param(t, v, &mut capabilities)?;
            }
        } else {
            let mut params = Reader::new(
                r.take(usize::from(opt_len))
                    .ok_or(OpenError::Malformed("optional parameters overrun"))?,
            );
            while !params.is_empty() {
                let (Some(t), Some(l)) = (params.u8(), params.u8()) else {
                    return Err(OpenError::Malformed("optional parameter header"));
                };
                let v = params
                    .take(usize::from(l))
                    .ok_or(OpenError::Malformed("optional parameter overrun"))?;
                param(t, v, &mut capabilities)?;
            }
        }
        if !r.is_empty() {
            return Err(OpenError::Malformed("octets after the optional parameters"));
        }
        if hold_time == 1 || hold_time == 2 {
            return Err(OpenError::UnacceptableHoldTime(hold_time));
        }
        if bgp_id.is_unspecified() {
            return Err(OpenError::BadBgpId(bgp_id));
        }
        Ok(Open {
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        })
    }

    /// Writes the body: every capability in one Capabilities parameter, with RFC 9072's
    /// extended lengths only if they do not fit in 255 octets.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let mut caps = Vec::new();
        for c in &self.capabilities {
            c.encode(&mut caps);
        }
        if caps.is_empty() {
            out.push(0);
        } else if caps.len() + 2 <= 255 {
            out.push((caps.len() + 2) as u8);
            out.push(PARAM_CAPABILITIES);
            out.push(caps.len() as u8);
            out.extend_from_slice(&caps);
        } else {
            out.push(255);
            out.push(PARAM_EXTENDED);
            let len = u16::try_from(caps.len() + 3).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.push(PARAM_CAPABILITIES);
            let clen = u16::try_from(caps.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&clen.to_be_bytes());
            out.extend_from_slice(&caps);
        }
    }
}

fn param(t: u8, v: &[u8], caps: &mut Vec<Capability>) -> Result<(), OpenError> {
    match t {
        PARAM_CAPABILITIES => Capability::decode_all(v, caps),
        // Type 1 (authentication) is deprecated; nothing else is defined.
        t => Err(OpenError::UnsupportedOptionalParameter(t)),
    }
}

impl Reader<'_> {
    fn rest_starts_with(&self, b: u8) -> bool {
        let mut copy = *self;
        copy.u8() == Some(b)
    }
}
