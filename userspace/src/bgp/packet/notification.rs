//! NOTIFICATION (RFC 4271 §4.5) with the Cease subcodes of RFC 4486 and the shutdown
//! communication of RFC 8203 / RFC 9003.

use std::fmt;

/// Error codes.
pub mod code {
    pub const HEADER: u8 = 1;
    pub const OPEN: u8 = 2;
    pub const UPDATE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH: u8 = 7;
}

/// Error subcodes, per error code.
pub mod subcode {
    pub const UNSPECIFIC: u8 = 0;

    pub mod header {
        pub const NOT_SYNCHRONIZED: u8 = 1;
        pub const BAD_LENGTH: u8 = 2;
        pub const BAD_TYPE: u8 = 3;
    }

    pub mod open {
        pub const UNSUPPORTED_VERSION: u8 = 1;
        pub const BAD_PEER_AS: u8 = 2;
        pub const BAD_BGP_ID: u8 = 3;
        pub const UNSUPPORTED_OPT_PARAM: u8 = 4;
        pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
        pub const UNSUPPORTED_CAPABILITY: u8 = 7;
    }

    pub mod update {
        pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
        pub const UNRECOGNIZED_WELL_KNOWN: u8 = 2;
        pub const MISSING_WELL_KNOWN: u8 = 3;
        pub const ATTRIBUTE_FLAGS: u8 = 4;
        pub const ATTRIBUTE_LENGTH: u8 = 5;
        pub const INVALID_ORIGIN: u8 = 6;
        pub const INVALID_NEXT_HOP: u8 = 8;
        pub const OPTIONAL_ATTRIBUTE: u8 = 9;
        pub const INVALID_NETWORK: u8 = 10;
        pub const MALFORMED_AS_PATH: u8 = 11;
    }

    /// RFC 6608.
    pub mod fsm {
        pub const IN_OPEN_SENT: u8 = 1;
        pub const IN_OPEN_CONFIRM: u8 = 2;
        pub const IN_ESTABLISHED: u8 = 3;
    }

    /// RFC 4486, RFC 8538.
    pub mod cease {
        pub const MAX_PREFIXES: u8 = 1;
        pub const ADMIN_SHUTDOWN: u8 = 2;
        pub const PEER_DECONFIGURED: u8 = 3;
        pub const ADMIN_RESET: u8 = 4;
        pub const CONNECTION_REJECTED: u8 = 5;
        pub const OTHER_CONFIG_CHANGE: u8 = 6;
        pub const COLLISION: u8 = 7;
        pub const OUT_OF_RESOURCES: u8 = 8;
        pub const HARD_RESET: u8 = 9;
        /// RFC 9384: the BFD session of the peer went down.
        pub const BFD_DOWN: u8 = 10;
    }

    /// RFC 7313.
    pub mod route_refresh {
        pub const INVALID_LENGTH: u8 = 1;
    }
}

/// Longest shutdown communication (RFC 9003 raised RFC 8203's 128 octets to 255).
pub const MAX_SHUTDOWN_COMMUNICATION: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Self {
        Self::with_data(code, subcode, Vec::new())
    }

    pub fn with_data(code: u8, subcode: u8, data: Vec<u8>) -> Self {
        Self {
            code,
            subcode,
            data,
        }
    }

    /// Cease with `subcode` (Administrative Shutdown or Reset) and, when given and not
    /// empty, a shutdown communication (RFC 9003): a length octet and UTF-8 text, cut at a
    /// character boundary to 255 octets.
    pub fn cease(subcode: u8, message: Option<&str>) -> Self {
        let mut data = Vec::new();
        if let Some(text) = message.filter(|m| !m.is_empty()) {
            let mut end = text.len().min(MAX_SHUTDOWN_COMMUNICATION);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            data.push(end as u8);
            data.extend_from_slice(&text.as_bytes()[..end]);
        }
        Self::with_data(code::CEASE, subcode, data)
    }

    /// Cease / Hard Reset (RFC 8538 §3) wrapping `inner`: its code, subcode and data. With
    /// the N bit negotiated, this is the NOTIFICATION that ends graceful restart (the peer
    /// drops our routes at once) where any other one would let it keep them.
    pub fn hard_reset(inner: &Notification) -> Self {
        let mut data = vec![inner.code, inner.subcode];
        data.extend_from_slice(&inner.data);
        Self::with_data(code::CEASE, subcode::cease::HARD_RESET, data)
    }

    /// The NOTIFICATION a Cease / Hard Reset carries, when it holds one.
    pub fn hard_reset_inner(&self) -> Option<Notification> {
        if self.code != code::CEASE || self.subcode != subcode::cease::HARD_RESET {
            return None;
        }
        match self.data.as_slice() {
            [c, s, rest @ ..] => Some(Self::with_data(*c, *s, rest.to_vec())),
            _ => None,
        }
    }

    pub(crate) fn decode(body: &[u8]) -> Self {
        // The header check guarantees the two octets.
        Self::with_data(
            body.first().copied().unwrap_or(0),
            body.get(1).copied().unwrap_or(0),
            body.get(2..).unwrap_or_default().to_vec(),
        )
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.code);
        out.push(self.subcode);
        out.extend_from_slice(&self.data);
    }

    /// The shutdown communication of a Cease / Administrative Shutdown or Reset, when the
    /// data holds a well-formed one (RFC 9003 §2: otherwise it is not to be shown).
    pub fn shutdown_communication(&self) -> Option<String> {
        if let Some(inner) = self.hard_reset_inner() {
            return inner.shutdown_communication();
        }
        if self.code != code::CEASE
            || !matches!(
                self.subcode,
                subcode::cease::ADMIN_SHUTDOWN | subcode::cease::ADMIN_RESET
            )
        {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        if text.is_empty() {
            return None;
        }
        String::from_utf8(text.to_vec()).ok()
    }

    /// `Cease/Administrative Shutdown`, as FRR writes it.
    pub fn describe(&self) -> String {
        let c = match self.code {
            code::HEADER => "Message Header Error",
            code::OPEN => "OPEN Message Error",
            code::UPDATE => "UPDATE Message Error",
            code::HOLD_TIMER_EXPIRED => "Hold Timer Expired",
            code::FSM => "Finite State Machine Error",
            code::CEASE => "Cease",
            code::ROUTE_REFRESH => "ROUTE-REFRESH Message Error",
            _ => return format!("code {}/subcode {}", self.code, self.subcode),
        };
        let s = match (self.code, self.subcode) {
            (_, subcode::UNSPECIFIC) => return c.to_owned(),
            (code::HEADER, subcode::header::NOT_SYNCHRONIZED) => "Connection Not Synchronized",
            (code::HEADER, subcode::header::BAD_LENGTH) => "Bad Message Length",
            (code::HEADER, subcode::header::BAD_TYPE) => "Bad Message Type",
            (code::OPEN, subcode::open::UNSUPPORTED_VERSION) => "Unsupported Version Number",
            (code::OPEN, subcode::open::BAD_PEER_AS) => "Bad Peer AS",
            (code::OPEN, subcode::open::BAD_BGP_ID) => "Bad BGP Identifier",
            (code::OPEN, subcode::open::UNSUPPORTED_OPT_PARAM) => "Unsupported Optional Parameter",
            (code::OPEN, subcode::open::UNACCEPTABLE_HOLD_TIME) => "Unacceptable Hold Time",
            (code::OPEN, subcode::open::UNSUPPORTED_CAPABILITY) => "Unsupported Capability",
            (code::UPDATE, subcode::update::MALFORMED_ATTRIBUTE_LIST) => "Malformed Attribute List",
            (code::UPDATE, subcode::update::UNRECOGNIZED_WELL_KNOWN) => {
                "Unrecognized Well-known Attribute"
            }
            (code::UPDATE, subcode::update::MISSING_WELL_KNOWN) => "Missing Well-known Attribute",
            (code::UPDATE, subcode::update::ATTRIBUTE_FLAGS) => "Attribute Flags Error",
            (code::UPDATE, subcode::update::ATTRIBUTE_LENGTH) => "Attribute Length Error",
            (code::UPDATE, subcode::update::INVALID_ORIGIN) => "Invalid ORIGIN Attribute",
            (code::UPDATE, subcode::update::INVALID_NEXT_HOP) => "Invalid NEXT_HOP Attribute",
            (code::UPDATE, subcode::update::OPTIONAL_ATTRIBUTE) => "Optional Attribute Error",
            (code::UPDATE, subcode::update::INVALID_NETWORK) => "Invalid Network Field",
            (code::UPDATE, subcode::update::MALFORMED_AS_PATH) => "Malformed AS_PATH",
            (code::FSM, subcode::fsm::IN_OPEN_SENT) => "Unexpected Message in OpenSent",
            (code::FSM, subcode::fsm::IN_OPEN_CONFIRM) => "Unexpected Message in OpenConfirm",
            (code::FSM, subcode::fsm::IN_ESTABLISHED) => "Unexpected Message in Established",
            (code::CEASE, subcode::cease::MAX_PREFIXES) => "Maximum Number of Prefixes Reached",
            (code::CEASE, subcode::cease::ADMIN_SHUTDOWN) => "Administrative Shutdown",
            (code::CEASE, subcode::cease::PEER_DECONFIGURED) => "Peer De-configured",
            (code::CEASE, subcode::cease::ADMIN_RESET) => "Administrative Reset",
            (code::CEASE, subcode::cease::CONNECTION_REJECTED) => "Connection Rejected",
            (code::CEASE, subcode::cease::OTHER_CONFIG_CHANGE) => "Other Configuration Change",
            (code::CEASE, subcode::cease::COLLISION) => "Connection Collision Resolution",
            (code::CEASE, subcode::cease::OUT_OF_RESOURCES) => "Out of Resources",
            (code::CEASE, subcode::cease::HARD_RESET) => {
                return match self.hard_reset_inner() {
                    Some(inner) => format!("{c}/Hard Reset ({})", inner.describe()),
                    None => format!("{c}/Hard Reset"),
                };
            }
            (code::CEASE, subcode::cease::BFD_DOWN) => "BFD Down",
            (code::ROUTE_REFRESH, subcode::route_refresh::INVALID_LENGTH) => {
                "Invalid Message Length"
            }
            _ => return format!("{c}/subcode {}", self.subcode),
        };
        format!("{c}/{s}")
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())?;
        if let Some(text) = self.shutdown_communication() {
            write!(f, " {text:?}")?;
        } else if !self.data.is_empty() && self.hard_reset_inner().is_none() {
            f.write_str(" data ")?;
            for b in self.data.iter().take(32) {
                write!(f, "{b:02x}")?;
            }
            if self.data.len() > 32 {
                f.write_str("...")?;
            }
        }
        Ok(())
    }
}
