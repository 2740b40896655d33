//! IP prefixes and address families as BGP carries them (RFC 4271 §4.3 NLRI, RFC 4760 AFI/SAFI).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// An address family and subsequent address family (RFC 4760), kept as raw numbers so that
/// families we do not speak survive a round trip through the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Family {
    pub afi: u16,
    pub safi: u8,
}

impl Family {
    pub const IPV4_UNICAST: Family = Family { afi: 1, safi: 1 };
    pub const IPV6_UNICAST: Family = Family { afi: 2, safi: 1 };

    /// Whether this is a family whose NLRI are plain prefixes we can parse.
    pub fn is_unicast_ip(self) -> bool {
        self == Self::IPV4_UNICAST || self == Self::IPV6_UNICAST
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IPV4_UNICAST => f.write_str("ipv4-unicast"),
            Self::IPV6_UNICAST => f.write_str("ipv6-unicast"),
            Family { afi, safi } => write!(f, "afi{afi}-safi{safi}"),
        }
    }
}

impl Serialize for Family {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An IPv4 or IPv6 prefix with its host bits cleared. Orders IPv4 before IPv6, then by
/// address and length, so a `BTreeMap<Prefix, _>` lists each family together.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("prefix length {len} is longer than {max}")]
    Length { len: u8, max: u8 },
    #[error("not a prefix: {0:?} (expected ADDRESS/LENGTH or ADDRESS)")]
    Syntax(String),
}

impl Prefix {
    /// `addr/len` with the host bits cleared.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        let max = max_len(&addr);
        if len > max {
            return Err(PrefixError::Length { len, max });
        }
        Ok(Prefix {
            addr: mask(addr, len),
            len,
        })
    }

    /// The host route of `addr`: a /32 or a /128.
    pub fn host(addr: IpAddr) -> Prefix {
        Prefix {
            len: max_len(&addr),
            addr,
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    /// Always false: a prefix has an address even at length 0; here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    pub fn family(&self) -> Family {
        if self.is_ipv4() {
            Family::IPV4_UNICAST
        } else {
            Family::IPV6_UNICAST
        }
    }

    /// Bytes this prefix takes in an NLRI field: the length octet and the significant octets.
    pub fn nlri_len(&self) -> usize {
        1 + usize::from(self.len).div_ceil(8)
    }

    /// Appends the NLRI encoding (RFC 4271 §4.3): length in bits, then the fewest octets that
    /// hold it.
    pub fn encode_nlri(&self, out: &mut Vec<u8>) {
        out.push(self.len);
        let n = usize::from(self.len).div_ceil(8);
        match self.addr {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n]),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n]),
        }
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// Why an NLRI field could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NlriError {
    #[error("prefix length {0} is too long for the family")]
    Length(u8),
    #[error("prefix runs past the end of the field")]
    Truncated,
}

/// Parses a whole NLRI (or withdrawn routes) field of IPv4 (`v6 == false`) or IPv6 prefixes.
/// Host bits beyond the length are cleared, as receivers do.
pub fn decode_nlri(mut bytes: &[u8], v6: bool) -> Result<Vec<Prefix>, NlriError> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = bytes.split_first() {
        let max = if v6 { 128 } else { 32 };
        if len > max {
            return Err(NlriError::Length(len));
        }
        let n = usize::from(len).div_ceil(8);
        let Some(significant) = rest.get(..n) else {
            return Err(NlriError::Truncated);
        };
        let addr = if v6 {
            let mut o = [0u8; 16];
            o[..n].copy_from_slice(significant);
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            let mut o = [0u8; 4];
            o[..n].copy_from_slice(significant);
            IpAddr::V4(Ipv4Addr::from(o))
        };
        out.push(Prefix {
            addr: mask(addr, len),
            len,
        });
        bytes = &rest[n..];
    }
    Ok(out)
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// `203.0.113.10/32`, `2001:db8::/32`, or a bare address for its host route.
    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let syntax = || PrefixError::Syntax(s.to_owned());
        match s.split_once('/') {
            Some((a, l)) => {
                let addr: IpAddr = a.parse().map_err(|_| syntax())?;
                let len: u8 = l.parse().map_err(|_| syntax())?;
                Prefix::new(addr, len)
            }
            None => Ok(Prefix::host(s.parse().map_err(|_| syntax())?)),
        }
    }
}

impl From<IpAddr> for Prefix {
    fn from(addr: IpAddr) -> Prefix {
        Prefix::host(addr)
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn parse_mask_and_display() {
        assert_eq!(p("203.0.113.10").to_string(), "203.0.113.10/32");
        assert_eq!(p("2001:db8:f::10").to_string(), "2001:db8:f::10/128");
        assert_eq!(p("192.0.2.129/25").to_string(), "192.0.2.128/25");
        assert_eq!(p("2001:db8:1:2::1/48").to_string(), "2001:db8:1::/48");
        assert_eq!(p("10.1.2.3/0").to_string(), "0.0.0.0/0");
        assert_eq!(p("::1/0").to_string(), "::/0");
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("::/129".parse::<Prefix>().is_err());
        assert!("10.0.0.0/x".parse::<Prefix>().is_err());
        assert!("nope".parse::<Prefix>().is_err());
        assert!(p("10.0.0.0/8") < p("::/0"));
    }

    #[test]
    fn nlri_round_trip_and_errors() {
        let all = [
            p("0.0.0.0/0"),
            p("10.0.0.0/8"),
            p("192.0.2.128/25"),
            p("203.0.113.10/32"),
        ];
        let mut bytes = Vec::new();
        for x in &all {
            x.encode_nlri(&mut bytes);
        }
        assert_eq!(
            bytes,
            [0, 8, 10, 25, 192, 0, 2, 128, 32, 203, 0, 113, 10],
            "RFC 4271 4.3 layout"
        );
        assert_eq!(decode_nlri(&bytes, false).unwrap(), all);
        assert_eq!(
            decode_nlri(&[33, 1, 2, 3, 4, 5], false),
            Err(NlriError::Length(33))
        );
        assert_eq!(decode_nlri(&[24, 10, 0], false), Err(NlriError::Truncated));
        // Host bits beyond the length are cleared.
        assert_eq!(decode_nlri(&[8, 10], false).unwrap(), [p("10.0.0.0/8")]);
        assert_eq!(decode_nlri(&[7, 0xff], false).unwrap(), [p("254.0.0.0/7")]);
        let v6 = p("2001:db8:f::10/128");
        let mut b6 = Vec::new();
        v6.encode_nlri(&mut b6);
        assert_eq!(b6.len(), 17);
        assert_eq!(decode_nlri(&b6, true).unwrap(), [v6]);
        assert_eq!(decode_nlri(&[129], true), Err(NlriError::Length(129)));
    }
}
