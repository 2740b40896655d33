//! BGP-4 message codec (RFC 4271 §4): the header and the five messages (OPEN with
//! capabilities, UPDATE with path attributes, NOTIFICATION, KEEPALIVE, ROUTE-REFRESH).
//!
//! Decoding never panics on any input. What a receiver must do about a malformed message is
//! in the result's type:
//! - `Err(DecodeError)`: the session is reset; [`DecodeError::notification`] is the
//!   NOTIFICATION to send first (header, OPEN, and the UPDATE errors RFC 7606 still treats
//!   with a session reset);
//! - an [`Update`] whose `treat_as_withdraw` is not empty: RFC 7606 "treat-as-withdraw", the
//!   message's NLRI are to be handled as withdrawn;
//! - an [`Update`] whose `discarded` is not empty: RFC 7606 "attribute discard", the named
//!   attributes were dropped and the rest of the message stands.
//!
//! Encoders write what we send; a decoded message re-encodes to the same bytes except that
//! attribute lengths use the extended-length form only where needed (or, as FRR and BIRD do,
//! for MP_REACH_NLRI / MP_UNREACH_NLRI carrying prefixes).

mod attr;
mod capability;
mod notification;
mod open;
mod update;

use std::net::Ipv4Addr;

pub use attr::{
    AsPath, AsSegment, AttrError, Community, LargeCommunity, MpReach, MpUnreach, NextHop, Origin,
    PathAttrs, RawAttr, SegmentType, attr_code, flag,
};
pub use capability::{Capability, GracefulRestart, cap_code};
pub use notification::{Notification, code, subcode};
pub use open::{Open, OpenError};
pub use update::{Update, UpdateError};

use crate::bgp::prefix::Family;

/// The 16 octets of ones every message starts with.
pub const MARKER: [u8; 16] = [0xff; 16];
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended message capability (RFC 8654), which we do not
/// advertise.
pub const MAX_LEN: usize = 4096;
pub const VERSION: u8 = 4;
/// The 2-octet stand-in for a 4-octet AS number (RFC 6793).
pub const AS_TRANS: u16 = 23456;
pub const BGP_PORT: u16 = 179;

/// Message type codes.
pub mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// What the two speakers negotiated that changes the wire format of later messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Codec {
    /// Both sent the four-octet AS capability: AS_PATH carries 4-octet AS numbers.
    pub four_octet_as: bool,
}

impl Codec {
    pub const FOUR_OCTET: Codec = Codec {
        four_octet_as: true,
    };
}

// UPDATE is the large one and the common one; boxing it would only move the allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// ROUTE-REFRESH (RFC 2918), with the RFC 7313 message subtype (0 request, 1 BoRR, 2 EoRR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub family: Family,
    pub subtype: u8,
}

impl RouteRefresh {
    pub fn request(family: Family) -> Self {
        Self { family, subtype: 0 }
    }
}

/// A message that must reset the session, with the NOTIFICATION to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("connection not synchronized (marker is not all ones)")]
    Marker,
    #[error("bad message length {0}")]
    Length(u16),
    #[error("bad message type {0}")]
    Type(u8),
    #[error("OPEN: {0}")]
    Open(#[from] OpenError),
    #[error("UPDATE: {0}")]
    Update(#[from] UpdateError),
    #[error("ROUTE-REFRESH subtype {subtype} with invalid length {len}")]
    RouteRefreshLength {
        subtype: u8,
        len: u16,
        message: Vec<u8>,
    },
}

impl DecodeError {
    /// The NOTIFICATION a receiver sends before closing (RFC 4271 §6, RFC 7313 §5).
    pub fn notification(&self) -> Notification {
        match self {
            Self::Marker => Notification::new(code::HEADER, subcode::header::NOT_SYNCHRONIZED),
            Self::Length(len) => Notification::with_data(
                code::HEADER,
                subcode::header::BAD_LENGTH,
                len.to_be_bytes().to_vec(),
            ),
            Self::Type(t) => {
                Notification::with_data(code::HEADER, subcode::header::BAD_TYPE, vec![*t])
            }
            Self::Open(e) => e.notification(),
            Self::Update(e) => e.notification(),
            Self::RouteRefreshLength { message, .. } => Notification::with_data(
                code::ROUTE_REFRESH,
                subcode::route_refresh::INVALID_LENGTH,
                message.clone(),
            ),
        }
    }

    /// A short label for a metric.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Marker | Self::Length(_) | Self::Type(_) => "header",
            Self::Open(_) => "open",
            Self::Update(_) => "update",
            Self::RouteRefreshLength { .. } => "route_refresh",
        }
    }
}

/// Checks a message header (RFC 4271 §6.1) and returns the whole message's length, so a
/// reader knows how many more octets to read.
pub fn frame_len(header: &[u8; HEADER_LEN]) -> Result<usize, DecodeError> {
    if header[..16] != MARKER {
        return Err(DecodeError::Marker);
    }
    let len = u16::from_be_bytes([header[16], header[17]]);
    let n = usize::from(len);
    if !(HEADER_LEN..=MAX_LEN).contains(&n) {
        return Err(DecodeError::Length(len));
    }
    let fits = match header[18] {
        msg_type::OPEN => n >= 29,
        msg_type::UPDATE => n >= 23,
        msg_type::NOTIFICATION => n >= 21,
        msg_type::KEEPALIVE => n == HEADER_LEN,
        msg_type::ROUTE_REFRESH => n >= 23,
        t => return Err(DecodeError::Type(t)),
    };
    if !fits {
        return Err(DecodeError::Length(len));
    }
    Ok(n)
}

/// Decodes one whole message (header included). `codec` is what the session negotiated; it
/// matters only for UPDATE.
pub fn decode(msg: &[u8], codec: Codec) -> Result<Message, DecodeError> {
    let header: &[u8; HEADER_LEN] = msg
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(DecodeError::Length(
            msg.len().min(usize::from(u16::MAX)) as u16
        ))?;
    let n = frame_len(header)?;
    if n != msg.len() {
        return Err(DecodeError::Length(n as u16));
    }
    let body = &msg[HEADER_LEN..];
    Ok(match header[18] {
        msg_type::OPEN => Message::Open(Open::decode(body)?),
        msg_type::UPDATE => Message::Update(Update::decode(body, codec)?),
        msg_type::NOTIFICATION => Message::Notification(Notification::decode(body)),
        msg_type::KEEPALIVE => Message::Keepalive,
        msg_type::ROUTE_REFRESH => {
            let family = Family {
                afi: u16::from_be_bytes([body[0], body[1]]),
                safi: body[3],
            };
            let subtype = body[2];
            // Subtype 0 may carry ORF entries (RFC 5291), which we ignore; BoRR and EoRR
            // are exactly four octets (RFC 7313 §5).
            if subtype != 0 && body.len() != 4 {
                return Err(DecodeError::RouteRefreshLength {
                    subtype,
                    len: n as u16,
                    message: msg.to_vec(),
                });
            }
            Message::RouteRefresh(RouteRefresh { family, subtype })
        }
        t => return Err(DecodeError::Type(t)),
    })
}

impl Message {
    /// The whole message, header included.
    pub fn encode(&self, codec: Codec) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MARKER);
        out.extend_from_slice(&[0, 0, self.type_code()]);
        match self {
            Message::Open(o) => o.encode(&mut out),
            Message::Update(u) => u.encode(codec, &mut out),
            Message::Notification(n) => n.encode(&mut out),
            Message::Keepalive => {}
            Message::RouteRefresh(r) => {
                out.extend_from_slice(&r.family.afi.to_be_bytes());
                out.push(r.subtype);
                out.push(r.family.safi);
            }
        }
        let len = u16::try_from(out.len()).unwrap_or(u16::MAX);
        out[16..18].copy_from_slice(&len.to_be_bytes());
        out
    }

    pub fn type_code(&self) -> u8 {
        match self {
            Message::Open(_) => msg_type::OPEN,
            Message::Update(_) => msg_type::UPDATE,
            Message::Notification(_) => msg_type::NOTIFICATION,
            Message::Keepalive => msg_type::KEEPALIVE,
            Message::RouteRefresh(_) => msg_type::ROUTE_REFRESH,
        }
    }

    /// `open`, `update`, ...: for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Open(_) => "open",
            Message::Update(_) => "update",
            Message::Notification(_) => "notification",
            Message::Keepalive => "keepalive",
            Message::RouteRefresh(_) => "route_refresh",
        }
    }
}

/// A bounds-checked reader over a byte slice: every read returns `None` past the end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn ipv4(&mut self) -> Option<Ipv4Addr> {
        self.u32().map(Ipv4Addr::from)
    }
}

#[cfg(test)]
pub(crate) mod tests;
