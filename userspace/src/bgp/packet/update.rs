//! UPDATE (RFC 4271 §4.3) and End-of-RIB markers (RFC 4724 §2).

use super::attr::{AttrError, MpUnreach, Outcome, PathAttrs, attr_code};
use super::notification::{Notification, code, subcode};
use super::{Codec, HEADER_LEN, MAX_LEN};
use crate::bgp::prefix::{Family, NlriError, Prefix, decode_nlri};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// Withdrawn IPv4 unicast routes.
    pub withdrawn: Vec<Prefix>,
    pub attrs: PathAttrs,
    /// Announced IPv4 unicast routes.
    pub nlri: Vec<Prefix>,
    /// RFC 7606 treat-as-withdraw: when not empty, every route this UPDATE announces is to be
    /// handled as withdrawn. Set by the decoder only.
    pub treat_as_withdraw: Vec<AttrError>,
    /// RFC 7606 attribute discard: attributes dropped while decoding. Set by the decoder only.
    pub discarded: Vec<AttrError>,
}

/// An UPDATE that resets the session, with the NOTIFICATION to send (RFC 4271 §6.3 as
/// revised by RFC 7606).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("malformed attribute list: {0}")]
    MalformedAttributeList(&'static str),
    #[error("unrecognized well-known attribute {code}")]
    UnrecognizedWellKnown { code: u8, attr: Vec<u8> },
    #[error("attribute {code}: {what}")]
    OptionalAttribute {
        code: u8,
        what: &'static str,
        attr: Vec<u8>,
    },
    #[error("invalid network field: {0}")]
    InvalidNetworkField(NlriError),
}

impl UpdateError {
    pub fn notification(&self) -> Notification {
        use subcode::update as s;
        match self {
            Self::MalformedAttributeList(_) => {
                Notification::new(code::UPDATE, s::MALFORMED_ATTRIBUTE_LIST)
            }
            Self::UnrecognizedWellKnown { attr, .. } => {
                Notification::with_data(code::UPDATE, s::UNRECOGNIZED_WELL_KNOWN, attr.clone())
            }
            Self::OptionalAttribute { attr, .. } => {
                Notification::with_data(code::UPDATE, s::OPTIONAL_ATTRIBUTE, attr.clone())
            }
            Self::InvalidNetworkField(_) => Notification::new(code::UPDATE, s::INVALID_NETWORK),
        }
    }
}

impl Update {
    /// The End-of-RIB marker of `family`: an empty UPDATE for IPv4 unicast, an UPDATE with
    /// only an empty MP_UNREACH_NLRI otherwise.
    pub fn end_of_rib(family: Family) -> Update {
        let mut u = Update::default();
        if family != Family::IPV4_UNICAST {
            u.attrs.mp_unreach = Some(MpUnreach {
                family,
                withdrawn: Vec::new(),
                opaque_withdrawn: Vec::new(),
            });
        }
        u
    }

    /// The family whose End-of-RIB this is, if it is one.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        let only_unreach = PathAttrs {
            mp_unreach: self.attrs.mp_unreach.clone(),
            ..PathAttrs::default()
        };
        if self.attrs != only_unreach {
            return None;
        }
        match &self.attrs.mp_unreach {
            None => Some(Family::IPV4_UNICAST),
            Some(mp) if mp.withdrawn.is_empty() && mp.opaque_withdrawn.is_empty() => {
                Some(mp.family)
            }
            Some(_) => None,
        }
    }

    /// Routes announced, classic NLRI and MP_REACH_NLRI together.
    pub fn announced(&self) -> impl Iterator<Item = &Prefix> {
        self.nlri
            .iter()
            .chain(self.attrs.mp_reach.iter().flat_map(|m| &m.nlri))
    }

    /// Routes withdrawn, classic and MP_UNREACH_NLRI together.
    pub fn withdrawn_all(&self) -> impl Iterator<Item = &Prefix> {
        self.withdrawn
            .iter()
            .chain(self.attrs.mp_unreach.iter().flat_map(|m| &m.withdrawn))
    }

    pub(crate) fn decode(body: &[u8], codec: Codec) -> Result<Update, UpdateError> {
        let overrun = UpdateError::MalformedAttributeList(
            "withdrawn routes or attribute length exceeds the message",
        );
        let wlen = match body {
            [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
            _ => return Err(overrun),
        };
        let withdrawn_bytes = body.get(2..2 + wlen).ok_or(overrun.clone())?;
        let alen = match body.get(2 + wlen..4 + wlen) {
            Some([a, b]) => usize::from(u16::from_be_bytes([*a, *b])),
            _ => return Err(overrun),
        };
        let attr_bytes = body.get(4 + wlen..4 + wlen + alen).ok_or(overrun)?;
        let nlri_bytes = &body[4 + wlen + alen..];
        let withdrawn =
            decode_nlri(withdrawn_bytes, false).map_err(UpdateError::InvalidNetworkField)?;
        let mut treat_as_withdraw = Vec::new();
        let mut discarded = Vec::new();
        let attrs = PathAttrs::decode(
            attr_bytes,
            codec,
            &mut Outcome {
                treat_as_withdraw: &mut treat_as_withdraw,
                discarded: &mut discarded,
            },
        )?;
        let nlri = decode_nlri(nlri_bytes, false).map_err(UpdateError::InvalidNetworkField)?;
        // RFC 7606 §3 (d): missing well-known attributes are treat-as-withdraw. Only checked
        // when the UPDATE announces something, and only for attributes that were not present
        // in a malformed form (already recorded).
        let reach = attrs
            .mp_reach
            .as_ref()
            .is_some_and(|m| !m.nlri.is_empty() || !m.opaque_nlri.is_empty());
        if !nlri.is_empty() || reach {
            let present = |c: u8| {
                treat_as_withdraw.iter().any(|e| {
                    matches!(e, AttrError::Flags { code, .. } | AttrError::Length { code, .. } | AttrError::Value { code, .. } if *code == c)
                })
            };
            let mut missing = Vec::new();
            if attrs.origin.is_none() && !present(attr_code::ORIGIN) {
                missing.push(attr_code::ORIGIN);
            }
            if attrs.as_path.is_none() && !present(attr_code::AS_PATH) {
                missing.push(attr_code::AS_PATH);
            }
            if !nlri.is_empty() && attrs.next_hop.is_none() && !present(attr_code::NEXT_HOP) {
                missing.push(attr_code::NEXT_HOP);
            }
            treat_as_withdraw.extend(missing.into_iter().map(AttrError::Missing));
        }
        Ok(Update {
            withdrawn,
            attrs,
            nlri,
            treat_as_withdraw,
            discarded,
        })
    }

    pub(crate) fn encode(&self, codec: Codec, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0, 0]);
        for p in &self.withdrawn {
            p.encode_nlri(out);
        }
        let wlen = u16::try_from(out.len() - at - 2).unwrap_or(u16::MAX);
        out[at..at + 2].copy_from_slice(&wlen.to_be_bytes());
        let at = out.len();
        out.extend_from_slice(&[0, 0]);
        self.attrs.encode(codec, out);
        let alen = u16::try_from(out.len() - at - 2).unwrap_or(u16::MAX);
        out[at..at + 2].copy_from_slice(&alen.to_be_bytes());
        for p in &self.nlri {
            p.encode_nlri(out);
        }
    }

    /// The encoded size, header included; an UPDATE must not exceed [`MAX_LEN`].
    pub fn encoded_len(&self, codec: Codec) -> usize {
        let mut out = Vec::new();
        self.encode(codec, &mut out);
        HEADER_LEN + out.len()
    }

    pub fn fits(&self, codec: Codec) -> bool {
        self.encoded_len(codec) <= MAX_LEN
    }
}
