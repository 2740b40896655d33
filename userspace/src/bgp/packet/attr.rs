//! Path attributes (RFC 4271 §4.3, §5) with the revised error handling of RFC 7606 §7:
//! ORIGIN, AS_PATH, NEXT_HOP, MULTI_EXIT_DISC, LOCAL_PREF, ATOMIC_AGGREGATE, COMMUNITIES
//! (RFC 1997), MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760, RFC 2545 IPv6 next hops), AS4_PATH
//! (RFC 6793), LARGE_COMMUNITY (RFC 8092). AGGREGATOR, AS4_AGGREGATOR, ORIGINATOR_ID,
//! CLUSTER_LIST and extended communities are checked and kept raw, as are unknown optional
//! transitive attributes; unknown optional non-transitive ones are ignored.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Serialize, Serializer};

use super::update::UpdateError;
use super::{AS_TRANS, Codec, Reader};
use crate::bgp::prefix::{Family, NlriError, Prefix, decode_nlri};

/// Attribute type codes (IANA).
pub mod attr_code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITY: u8 = 32;
}

/// Attribute flag bits.
pub mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

const WELL_KNOWN: u8 = flag::TRANSITIVE;
const OPTIONAL: u8 = flag::OPTIONAL;
const OPTIONAL_TRANSITIVE: u8 = flag::OPTIONAL | flag::TRANSITIVE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AsSegment {
    pub kind: SegmentType,
    pub asns: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// One AS_SEQUENCE (none when `asns` is empty, as for iBGP).
    pub fn sequence(asns: Vec<u32>) -> Self {
        let segments = if asns.is_empty() {
            Vec::new()
        } else {
            vec![AsSegment {
                kind: SegmentType::Sequence,
                asns,
            }]
        };
        Self { segments }
    }

    fn needs_four_octets(&self) -> bool {
        self.segments
            .iter()
            .flat_map(|s| &s.asns)
            .any(|a| *a > u32::from(u16::MAX))
    }

    fn decode(value: &[u8], width: usize) -> Option<AsPath> {
        let mut r = Reader::new(value);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let kind = match r.u8()? {
                1 => SegmentType::Set,
                2 => SegmentType::Sequence,
                3 => SegmentType::ConfedSequence,
                4 => SegmentType::ConfedSet,
                _ => return None,
            };
            let count = usize::from(r.u8()?);
            if count == 0 {
                return None;
            }
            let bytes = r.take(count * width)?;
            let asns = bytes
                .chunks_exact(width)
                .map(|c| match c {
                    [a, b] => u32::from(u16::from_be_bytes([*a, *b])),
                    [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
                    _ => 0,
                })
                .collect();
            segments.push(AsSegment { kind, asns });
        }
        Some(AsPath { segments })
    }

    /// Segments of at most 255 AS numbers, 2 or 4 octets each (AS_TRANS for those that do not
    /// fit in 2).
    fn encode(&self, four_octet: bool, out: &mut Vec<u8>) {
        for seg in &self.segments {
            for chunk in seg.asns.chunks(255) {
                out.push(seg.kind as u8);
                out.push(chunk.len() as u8);
                for asn in chunk {
                    if four_octet {
                        out.extend_from_slice(&asn.to_be_bytes());
                    } else {
                        let two = u16::try_from(*asn).unwrap_or(AS_TRANS);
                        out.extend_from_slice(&two.to_be_bytes());
                    }
                }
            }
        }
    }
}

impl fmt::Display for AsPath {
    /// `64513 64513 {64700 64701}`, as FRR and BIRD show paths.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.segments {
            let (open, close) = match seg.kind {
                SegmentType::Sequence => ("", ""),
                SegmentType::Set => ("{", "}"),
                SegmentType::ConfedSequence => ("(", ")"),
                SegmentType::ConfedSet => ("[", "]"),
            };
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(open)?;
            for (i, a) in seg.asns.iter().enumerate() {
                if i > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{a}")?;
            }
            f.write_str(close)?;
        }
        Ok(())
    }
}

/// A community (RFC 1997): 16 bits of AS, 16 bits of value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Community(pub u32);

impl Community {
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xffff_0000);
    pub const BLACKHOLE: Community = Community(0xffff_029a);
    pub const NO_EXPORT: Community = Community(0xffff_ff01);
    pub const NO_ADVERTISE: Community = Community(0xffff_ff02);
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xffff_ff03);

    const NAMES: [(&str, Community); 5] = [
        ("graceful-shutdown", Self::GRACEFUL_SHUTDOWN),
        ("blackhole", Self::BLACKHOLE),
        ("no-export", Self::NO_EXPORT),
        ("no-advertise", Self::NO_ADVERTISE),
        ("no-export-subconfed", Self::NO_EXPORT_SUBCONFED),
    ];

    pub fn new(asn: u16, value: u16) -> Self {
        Self((u32::from(asn) << 16) | u32::from(value))
    }
}

impl fmt::Display for Community {
    /// `64512:100`, or the well-known name (`no-export`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((name, _)) = Self::NAMES.iter().find(|(_, c)| c == self) {
            return f.write_str(name);
        }
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xffff)
    }
}

impl FromStr for Community {
    type Err = String;

    /// `ASN:VALUE` (16 bits each) or a well-known name.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((_, c)) = Self::NAMES.iter().find(|(n, _)| *n == s) {
            return Ok(*c);
        }
        let bad = || format!("not a community: {s:?} (expected ASN:VALUE, 16 bits each)");
        let (a, v) = s.split_once(':').ok_or_else(bad)?;
        Ok(Community::new(
            a.parse().map_err(|_| bad())?,
            v.parse().map_err(|_| bad())?,
        ))
    }
}

impl Serialize for Community {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A large community (RFC 8092): global administrator and two local data parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.local1, self.local2)
    }
}

impl FromStr for LargeCommunity {
    type Err = String;

    /// `GLOBAL:LOCAL1:LOCAL2`, 32 bits each.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("not a large community: {s:?} (expected A:B:C, 32 bits each)");
        let mut it = s.split(':').map(|p| p.parse::<u32>().map_err(|_| bad()));
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(g), Some(a), Some(b), None) => Ok(LargeCommunity {
                global: g?,
                local1: a?,
                local2: b?,
            }),
            _ => Err(bad()),
        }
    }
}

impl Serialize for LargeCommunity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The next hop of MP_REACH_NLRI.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NextHop {
    V4(Ipv4Addr),
    /// RFC 2545: a global address, and a link-local one when the peers share a link.
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
    /// Families whose next hop we do not interpret.
    Other(Vec<u8>),
}

impl NextHop {
    fn encode(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.push(0);
        match self {
            NextHop::V4(a) => out.extend_from_slice(&a.octets()),
            NextHop::V6 { global, link_local } => {
                out.extend_from_slice(&global.octets());
                if let Some(ll) = link_local {
                    out.extend_from_slice(&ll.octets());
                }
            }
            NextHop::Other(raw) => out.extend_from_slice(raw),
        }
        out[at] = u8::try_from(out.len() - at - 1).unwrap_or(u8::MAX);
    }
}

/// MP_REACH_NLRI. For families other than IPv4/IPv6 unicast and multicast, the next hop is
/// `Other` and the NLRI stay raw in `opaque_nlri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    pub family: Family,
    pub next_hop: NextHop,
    pub nlri: Vec<Prefix>,
    pub opaque_nlri: Vec<u8>,
}

/// MP_UNREACH_NLRI; an empty one is the End-of-RIB marker of its family (RFC 4724 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    pub family: Family,
    pub withdrawn: Vec<Prefix>,
    pub opaque_withdrawn: Vec<u8>,
}

/// An attribute kept as received (flags, type code, value).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawAttr {
    pub flags: u8,
    pub code: u8,
    pub value: Vec<u8>,
}

/// The path attributes of an UPDATE. Empty community lists mean the attribute is absent (an
/// empty one is malformed anyway).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathAttrs {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    /// Only between a 2-octet and a 4-octet speaker (RFC 6793); a four-octet session drops it.
    pub as4_path: Option<AsPath>,
    /// AGGREGATOR, AS4_AGGREGATOR, ORIGINATOR_ID, CLUSTER_LIST, extended communities and
    /// unknown optional transitive attributes, in the order received.
    pub other: Vec<RawAttr>,
}

/// A malformed attribute that RFC 7606 handles without resetting the session: the UPDATE's
/// routes are withdrawn ("treat-as-withdraw") or the attribute is dropped ("attribute
/// discard"), depending on the attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    #[error("attribute {code}: flags {flags:#04x} conflict with its type")]
    Flags { code: u8, flags: u8 },
    #[error("attribute {code}: bad length {len}")]
    Length { code: u8, len: usize },
    #[error("attribute {code}: {what}")]
    Value { code: u8, what: &'static str },
    #[error("missing well-known attribute {0}")]
    Missing(u8),
    #[error("attribute {0} repeated")]
    Repeated(u8),
    #[error("attributes overrun the attribute list")]
    Overrun,
}

/// Where a decoded attribute's problems go.
pub(crate) struct Outcome<'a> {
    pub treat_as_withdraw: &'a mut Vec<AttrError>,
    pub discarded: &'a mut Vec<AttrError>,
}

/// The optional and transitive bits each known attribute must have, and whether a bad
/// instance is discarded (RFC 7606 §7.6-7.7, RFC 6793 §6) rather than treated as withdraw.
fn expected(code: u8) -> Option<(u8, bool)> {
    use attr_code::*;
    Some(match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF => (WELL_KNOWN, false),
        ATOMIC_AGGREGATE => (WELL_KNOWN, true),
        MULTI_EXIT_DISC | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH_NLRI | MP_UNREACH_NLRI => {
            (OPTIONAL, false)
        }
        COMMUNITIES | EXTENDED_COMMUNITIES | LARGE_COMMUNITY => (OPTIONAL_TRANSITIVE, false),
        AGGREGATOR | AS4_PATH | AS4_AGGREGATOR => (OPTIONAL_TRANSITIVE, true),
        _ => return None,
    })
}

impl PathAttrs {
    /// Parses the path attributes field. Errors that RFC 7606 still answers with a session
    /// reset are returned; the others are recorded in `outcome`.
    pub(crate) fn decode(
        bytes: &[u8],
        codec: Codec,
        outcome: &mut Outcome<'_>,
    ) -> Result<PathAttrs, UpdateError> {
        let mut attrs = PathAttrs::default();
        let mut seen = [false; 256];
        let mut r = Reader::new(bytes);
        while !r.is_empty() {
            let start = bytes.len() - r.remaining();
            let Some(flags) = r.u8() else { break };
            let code = r.u8();
            let len = if flags & flag::EXTENDED_LENGTH != 0 {
                r.u16().map(usize::from)
            } else {
                r.u8().map(usize::from)
            };
            let (Some(code), Some(len)) = (code, len) else {
                // RFC 7606 §4: fewer octets than an attribute header.
                outcome.treat_as_withdraw.push(AttrError::Overrun);
                break;
            };
            let Some(value) = r.take(len) else {
                if matches!(code, attr_code::MP_REACH_NLRI | attr_code::MP_UNREACH_NLRI) {
                    // The NLRI inside cannot be located: session reset (RFC 7606 §5.3).
                    return Err(UpdateError::MalformedAttributeList(
                        "MP_REACH_NLRI or MP_UNREACH_NLRI overruns the attributes",
                    ));
                }
                outcome.treat_as_withdraw.push(AttrError::Overrun);
                break;
            };
            let whole = &bytes[start..bytes.len() - r.remaining()];
            if seen[usize::from(code)] {
                if matches!(code, attr_code::MP_REACH_NLRI | attr_code::MP_UNREACH_NLRI) {
                    return Err(UpdateError::MalformedAttributeList(
                        "MP_REACH_NLRI or MP_UNREACH_NLRI repeated",
                    ));
                }
                // RFC 7606 §3 (g): later occurrences are discarded.
                outcome.discarded.push(AttrError::Repeated(code));
                continue;
            }
            seen[usize::from(code)] = true;
            attrs.decode_one(flags, code, value, whole, codec, outcome)?;
        }
        Ok(attrs)
    }

    fn decode_one(
        &mut self,
        flags: u8,
        code: u8,
        value: &[u8],
        whole: &[u8],
        codec: Codec,
        outcome: &mut Outcome<'_>,
    ) -> Result<(), UpdateError> {
        use attr_code::*;
        let Some((bits, discard)) = expected(code) else {
            if flags & flag::OPTIONAL == 0 {
                return Err(UpdateError::UnrecognizedWellKnown {
                    code,
                    attr: whole.to_vec(),
                });
            }
            if flags & flag::TRANSITIVE != 0 {
                self.other.push(RawAttr {
                    flags,
                    code,
                    value: value.to_vec(),
                });
            }
            // Unknown optional non-transitive: quietly ignored (RFC 4271 §5).
            return Ok(());
        };
        let is_mp = code == MP_REACH_NLRI || code == MP_UNREACH_NLRI;
        let fail = |e: AttrError, outcome: &mut Outcome<'_>| {
            if discard {
                outcome.discarded.push(e);
            } else {
                outcome.treat_as_withdraw.push(e);
            }
        };
        if flags & (flag::OPTIONAL | flag::TRANSITIVE) != bits {
            if is_mp {
                return Err(UpdateError::OptionalAttribute {
                    code,
                    what: "flags",
                    attr: whole.to_vec(),
                });
            }
            fail(AttrError::Flags { code, flags }, outcome);
            return Ok(());
        }
        let bad_len = AttrError::Length {
            code,
            len: value.len(),
        };
        let u32_of = |v: &[u8]| match v {
            [a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        };
        match code {
            ORIGIN => match value {
                [0] => self.origin = Some(Origin::Igp),
                [1] => self.origin = Some(Origin::Egp),
                [2] => self.origin = Some(Origin::Incomplete),
                [_] => fail(
                    AttrError::Value {
                        code,
                        what: "undefined ORIGIN",
                    },
                    outcome,
                ),
                _ => fail(bad_len, outcome),
            },
            AS_PATH => {
                let width = if codec.four_octet_as { 4 } else { 2 };
                match AsPath::decode(value, width) {
                    Some(p) => self.as_path = Some(p),
                    None => fail(
                        AttrError::Value {
                            code,
                            what: "malformed AS_PATH",
                        },
                        outcome,
                    ),
                }
            }
            NEXT_HOP => match u32_of(value).map(Ipv4Addr::from) {
                Some(a) if !matches!(a.octets()[0], 0 | 127 | 224..) => self.next_hop = Some(a),
                Some(_) => fail(
                    AttrError::Value {
                        code,
                        what: "NEXT_HOP is not a unicast host address",
                    },
                    outcome,
                ),
                None => fail(bad_len, outcome),
            },
            MULTI_EXIT_DISC => match u32_of(value) {
                Some(v) => self.med = Some(v),
                None => fail(bad_len, outcome),
            },
            LOCAL_PREF => match u32_of(value) {
                Some(v) => self.local_pref = Some(v),
                None => fail(bad_len, outcome),
            },
            ATOMIC_AGGREGATE => {
                if value.is_empty() {
                    self.atomic_aggregate = true;
                } else {
                    fail(bad_len, outcome);
                }
            }
            COMMUNITIES => {
                if value.is_empty() || !value.len().is_multiple_of(4) {
                    fail(bad_len, outcome);
                } else {
                    self.communities = value
                        .chunks_exact(4)
                        .map(|c| Community(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                        .collect();
                }
            }
            LARGE_COMMUNITY => {
                if value.is_empty() || !value.len().is_multiple_of(12) {
                    fail(bad_len, outcome);
                } else {
                    self.large_communities = value
                        .chunks_exact(12)
                        .map(|c| LargeCommunity {
                            global: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                            local1: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                            local2: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                        })
                        .collect();
                }
            }
            AS4_PATH => {
                if codec.four_octet_as {
                    // RFC 6793 §4.1: not to be sent between four-octet speakers.
                    fail(
                        AttrError::Value {
                            code,
                            what: "AS4_PATH from a four-octet speaker",
                        },
                        outcome,
                    );
                    return Ok(());
                }
                match AsPath::decode(value, 4) {
                    Some(p)
                        if p.segments.iter().all(|s| {
                            matches!(s.kind, SegmentType::Set | SegmentType::Sequence)
                        }) =>
                    {
                        self.as4_path = Some(p)
                    }
                    _ => fail(
                        AttrError::Value {
                            code,
                            what: "malformed AS4_PATH",
                        },
                        outcome,
                    ),
                }
            }
            MP_REACH_NLRI => self.mp_reach = Some(decode_mp_reach(value, whole)?),
            MP_UNREACH_NLRI => self.mp_unreach = Some(decode_mp_unreach(value, whole)?),
            _ => {
                let ok = match code {
                    AGGREGATOR => value.len() == if codec.four_octet_as { 8 } else { 6 },
                    AS4_AGGREGATOR => value.len() == 8 && !codec.four_octet_as,
                    ORIGINATOR_ID => value.len() == 4,
                    CLUSTER_LIST => !value.is_empty() && value.len().is_multiple_of(4),
                    EXTENDED_COMMUNITIES => !value.is_empty() && value.len().is_multiple_of(8),
                    _ => true,
                };
                if ok {
                    self.other.push(RawAttr {
                        flags,
                        code,
                        value: value.to_vec(),
                    });
                } else {
                    fail(bad_len, outcome);
                }
            }
        }
        Ok(())
    }

    /// Writes the attributes: MP_REACH_NLRI and MP_UNREACH_NLRI first (RFC 7606 §5.1), then
    /// the others by type code. Towards a 2-octet speaker, AS numbers that need four octets
    /// become AS_TRANS in AS_PATH and the real path goes in AS4_PATH.
    pub(crate) fn encode(&self, codec: Codec, out: &mut Vec<u8>) {
        use attr_code::*;
        if let Some(mp) = &self.mp_reach {
            let mut v = Vec::new();
            v.extend_from_slice(&mp.family.afi.to_be_bytes());
            v.push(mp.family.safi);
            mp.next_hop.encode(&mut v);
            v.push(0);
            for p in &mp.nlri {
                p.encode_nlri(&mut v);
            }
            v.extend_from_slice(&mp.opaque_nlri);
            put(out, OPTIONAL, MP_REACH_NLRI, &v, true);
        }
        if let Some(mp) = &self.mp_unreach {
            let mut v = Vec::new();
            v.extend_from_slice(&mp.family.afi.to_be_bytes());
            v.push(mp.family.safi);
            for p in &mp.withdrawn {
                p.encode_nlri(&mut v);
            }
            v.extend_from_slice(&mp.opaque_withdrawn);
            let carries = !mp.withdrawn.is_empty() || !mp.opaque_withdrawn.is_empty();
            put(out, OPTIONAL, MP_UNREACH_NLRI, &v, carries);
        }
        // (code, flags, value), sorted by code before writing.
        let mut rest: Vec<(u8, u8, Vec<u8>)> = Vec::new();
        if let Some(o) = self.origin {
            rest.push((ORIGIN, WELL_KNOWN, vec![o as u8]));
        }
        if let Some(p) = &self.as_path {
            let mut v = Vec::new();
            p.encode(codec.four_octet_as, &mut v);
            rest.push((AS_PATH, WELL_KNOWN, v));
            if !codec.four_octet_as && self.as4_path.is_none() && p.needs_four_octets() {
                let mut v = Vec::new();
                let real = AsPath {
                    segments: p
                        .segments
                        .iter()
                        .filter(|s| matches!(s.kind, SegmentType::Set | SegmentType::Sequence))
                        .cloned()
                        .collect(),
                };
                real.encode(true, &mut v);
                rest.push((AS4_PATH, OPTIONAL_TRANSITIVE, v));
            }
        }
        if let Some(a) = self.next_hop {
            rest.push((NEXT_HOP, WELL_KNOWN, a.octets().to_vec()));
        }
        if let Some(m) = self.med {
            rest.push((MULTI_EXIT_DISC, OPTIONAL, m.to_be_bytes().to_vec()));
        }
        if let Some(l) = self.local_pref {
            rest.push((LOCAL_PREF, WELL_KNOWN, l.to_be_bytes().to_vec()));
        }
        if self.atomic_aggregate {
            rest.push((ATOMIC_AGGREGATE, WELL_KNOWN, Vec::new()));
        }
        if !self.communities.is_empty() {
            let v = self
                .communities
                .iter()
                .flat_map(|c| c.0.to_be_bytes())
                .collect();
            rest.push((COMMUNITIES, OPTIONAL_TRANSITIVE, v));
        }
        if let Some(p) = self.as4_path.as_ref().filter(|_| !codec.four_octet_as) {
            let mut v = Vec::new();
            p.encode(true, &mut v);
            rest.push((AS4_PATH, OPTIONAL_TRANSITIVE, v));
        }
        if !self.large_communities.is_empty() {
            let v = self
                .large_communities
                .iter()
                .flat_map(|c| {
                    let mut b = [0u8; 12];
                    b[..4].copy_from_slice(&c.global.to_be_bytes());
                    b[4..8].copy_from_slice(&c.local1.to_be_bytes());
                    b[8..].copy_from_slice(&c.local2.to_be_bytes());
                    b
                })
                .collect();
            rest.push((LARGE_COMMUNITY, OPTIONAL_TRANSITIVE, v));
        }
        for a in &self.other {
            rest.push((a.code, a.flags & !flag::EXTENDED_LENGTH, a.value.clone()));
        }
        rest.sort_by_key(|(code, _, _)| *code);
        for (code, flags, value) in rest {
            put(out, flags, code, &value, false);
        }
    }
}

/// Appends one attribute; the extended length form when the value needs it or `extended`.
fn put(out: &mut Vec<u8>, flags: u8, code: u8, value: &[u8], extended: bool) {
    if extended || value.len() > 255 {
        out.push(flags | flag::EXTENDED_LENGTH);
        out.push(code);
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(flags & !flag::EXTENDED_LENGTH);
        out.push(code);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(value);
}

/// IPv4 or IPv6, unicast or multicast: the families whose NLRI are plain prefixes.
fn prefix_family(f: Family) -> Option<bool> {
    match (f.afi, f.safi) {
        (1, 1 | 2) => Some(false),
        (2, 1 | 2) => Some(true),
        _ => None,
    }
}

fn nlri_error(e: NlriError) -> UpdateError {
    UpdateError::InvalidNetworkField(e)
}

fn decode_mp_reach(value: &[u8], whole: &[u8]) -> Result<MpReach, UpdateError> {
    let malformed = |what| UpdateError::OptionalAttribute {
        code: attr_code::MP_REACH_NLRI,
        what,
        attr: whole.to_vec(),
    };
    let mut r = Reader::new(value);
    let (Some(afi), Some(safi), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
        return Err(malformed("truncated"));
    };
    let nh = r
        .take(usize::from(nh_len))
        .ok_or(malformed("next hop overruns the attribute"))?;
    r.u8().ok_or(malformed("truncated"))?;
    let family = Family { afi, safi };
    let rest = r.rest();
    let Some(v6) = prefix_family(family) else {
        return Ok(MpReach {
            family,
            next_hop: NextHop::Other(nh.to_vec()),
            nlri: Vec::new(),
            opaque_nlri: rest.to_vec(),
        });
    };
    let v6_addr = |b: &[u8]| -> Ipv6Addr {
        let mut o = [0u8; 16];
        o.copy_from_slice(b);
        Ipv6Addr::from(o)
    };
    let next_hop = match (v6, nh.len()) {
        (false, 4) => NextHop::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
        // IPv6 next hops (RFC 2545), also for IPv4 NLRI (RFC 8950).
        (_, 16) => NextHop::V6 {
            global: v6_addr(nh),
            link_local: None,
        },
        (_, 32) => NextHop::V6 {
            global: v6_addr(&nh[..16]),
            link_local: Some(v6_addr(&nh[16..])),
        },
        _ => return Err(malformed("next hop length")),
    };
    Ok(MpReach {
        family,
        next_hop,
        nlri: decode_nlri(rest, v6).map_err(nlri_error)?,
        opaque_nlri: Vec::new(),
    })
}

fn decode_mp_unreach(value: &[u8], whole: &[u8]) -> Result<MpUnreach, UpdateError> {
    let mut r = Reader::new(value);
    let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
        return Err(UpdateError::OptionalAttribute {
            code: attr_code::MP_UNREACH_NLRI,
            what: "truncated",
            attr: whole.to_vec(),
        });
    };
    let family = Family { afi, safi };
    let rest = r.rest();
    Ok(match prefix_family(family) {
        Some(v6) => MpUnreach {
            family,
            withdrawn: decode_nlri(rest, v6).map_err(nlri_error)?,
            opaque_withdrawn: Vec::new(),
        },
        None => MpUnreach {
            family,
            withdrawn: Vec::new(),
            opaque_withdrawn: rest.to_vec(),
        },
    })
}
