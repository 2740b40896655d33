//! Capabilities advertisement (RFC 5492): multiprotocol (RFC 4760), route refresh (RFC 2918),
//! graceful restart (RFC 4724, RFC 8538), four-octet AS numbers (RFC 6793); any other
//! capability is kept as received.

use super::{OpenError, Reader};
use crate::bgp::prefix::Family;

/// Capability codes (IANA).
pub mod cap_code {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const EXTENDED_NEXT_HOP: u8 = 5;
    pub const EXTENDED_MESSAGE: u8 = 6;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ADD_PATH: u8 = 69;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
    pub const LONG_LIVED_GRACEFUL_RESTART: u8 = 71;
    pub const FQDN: u8 = 73;
    /// The pre-standard route refresh code some implementations still send.
    pub const ROUTE_REFRESH_OLD: u8 = 128;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    Multiprotocol(Family),
    RouteRefresh,
    GracefulRestart(GracefulRestart),
    FourOctetAs(u32),
    Unknown { code: u8, value: Vec<u8> },
}

/// The graceful restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The four restart flag bits (high nibble of the first octet): R = 0x8, N = 0x4.
    pub flags: u8,
    /// Seconds (12 bits).
    pub restart_time: u16,
    /// Families the sender preserves state for, and whether it kept forwarding state (F bit).
    pub families: Vec<(Family, bool)>,
}

impl GracefulRestart {
    pub const RESTART_STATE: u8 = 0x8;
    pub const NOTIFICATION: u8 = 0x4;

    /// R: the sender has restarted.
    pub fn restart_state(&self) -> bool {
        self.flags & Self::RESTART_STATE != 0
    }

    /// N: the sender supports graceful restart for NOTIFICATION messages (RFC 8538).
    pub fn notification(&self) -> bool {
        self.flags & Self::NOTIFICATION != 0
    }
}

impl Capability {
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol(_) => cap_code::MULTIPROTOCOL,
            Capability::RouteRefresh => cap_code::ROUTE_REFRESH,
            Capability::GracefulRestart(_) => cap_code::GRACEFUL_RESTART,
            Capability::FourOctetAs(_) => cap_code::FOUR_OCTET_AS,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// Parses the capabilities in one Capabilities optional parameter.
    pub(crate) fn decode_all(value: &[u8], out: &mut Vec<Capability>) -> Result<(), OpenError> {
        let mut r = Reader::new(value);
        while !r.is_empty() {
            let (Some(code), Some(len)) = (r.u8(), r.u8()) else {
                return Err(OpenError::Malformed("capability header truncated"));
            };
            let v = r
                .take(usize::from(len))
                .ok_or(OpenError::Malformed("capability overruns its parameter"))?;
            out.push(Self::decode_one(code, v)?);
        }
        Ok(())
    }

    fn decode_one(code: u8, v: &[u8]) -> Result<Capability, OpenError> {
        Ok(match code {
            cap_code::MULTIPROTOCOL => match v {
                [a, b, _reserved, safi] => Capability::Multiprotocol(Family {
                    afi: u16::from_be_bytes([*a, *b]),
                    safi: *safi,
                }),
                _ => return Err(OpenError::Malformed("multiprotocol capability length")),
            },
            // The value is empty by definition; anything in it is ignored.
            cap_code::ROUTE_REFRESH => Capability::RouteRefresh,
            cap_code::FOUR_OCTET_AS => match v {
                [a, b, c, d] => Capability::FourOctetAs(u32::from_be_bytes([*a, *b, *c, *d])),
                _ => return Err(OpenError::Malformed("four-octet AS capability length")),
            },
            cap_code::GRACEFUL_RESTART => {
                if v.len() < 2 || !(v.len() - 2).is_multiple_of(4) {
                    return Err(OpenError::Malformed("graceful restart capability length"));
                }
                let word = u16::from_be_bytes([v[0], v[1]]);
                let families = v[2..]
                    .chunks_exact(4)
                    .map(|c| {
                        (
                            Family {
                                afi: u16::from_be_bytes([c[0], c[1]]),
                                safi: c[2],
                            },
                            c[3] & 0x80 != 0,
                        )
                    })
                    .collect();
                Capability::GracefulRestart(GracefulRestart {
                    flags: (word >> 12) as u8,
                    restart_time: word & 0x0fff,
                    families,
                })
            }
            code => Capability::Unknown {
                code,
                value: v.to_vec(),
            },
        })
    }

    /// Appends code, length and value.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.code());
        let at = out.len();
        out.push(0);
        match self {
            Capability::Multiprotocol(f) => {
                out.extend_from_slice(&f.afi.to_be_bytes());
                out.push(0);
                out.push(f.safi);
            }
            Capability::RouteRefresh => {}
            Capability::GracefulRestart(gr) => {
                let word = (u16::from(gr.flags & 0x0f) << 12) | (gr.restart_time & 0x0fff);
                out.extend_from_slice(&word.to_be_bytes());
                for (f, forwarding) in &gr.families {
                    out.extend_from_slice(&f.afi.to_be_bytes());
                    out.push(f.safi);
                    out.push(if *forwarding { 0x80 } else { 0 });
                }
            }
            Capability::FourOctetAs(asn) => out.extend_from_slice(&asn.to_be_bytes()),
            Capability::Unknown { value, .. } => out.extend_from_slice(value),
        }
        out[at] = u8::try_from(out.len() - at - 1).unwrap_or(u8::MAX);
    }
}
