//! BFD control packets (RFC 5880 §4): the 24-byte mandatory section and the optional
//! authentication section (simple password, keyed and meticulous keyed MD5 and SHA1).
//!
//! Decoding checks what §6.8.6 lets a receiver check without a session (version, lengths,
//! multiplier, the multipoint bit, a zero My Discriminator); authentication needs the
//! session's key and sequence state and is verified by [`Auth::verify`].

use md5::{Digest as _, Md5};
use sha1::Sha1;
use subtle::ConstantTimeEq as _;

/// UDP port of single-hop control packets (RFC 5881 §4).
pub const CONTROL_PORT: u16 = 3784;
/// Source ports of single-hop control packets (RFC 5881 §4).
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// Single-hop packets are sent with TTL / hop limit 255 and only those are accepted (GTSM).
pub const TTL: u8 = 255;

const VERSION: u8 = 1;
const MANDATORY_LEN: usize = 24;

/// Session states on the wire (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

/// Diagnostic codes (§4.1): why the local system last changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Diag {
    None = 0,
    ControlDetectionTimeExpired = 1,
    EchoFunctionFailed = 2,
    NeighborSignaledSessionDown = 3,
    ForwardingPlaneReset = 4,
    PathDown = 5,
    ConcatenatedPathDown = 6,
    AdministrativelyDown = 7,
    ReverseConcatenatedPathDown = 8,
    /// Codes 9-31 are reserved; kept as a value.
    Reserved = 31,
}

impl Diag {
    fn from_bits(b: u8) -> Diag {
        match b & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            _ => Diag::Reserved,
        }
    }
}

/// The mandatory section, intervals in microseconds as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub diag: Diag,
    pub state: State,
    pub poll: bool,
    pub fin: bool,
    pub cpi: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discr: u32,
    pub your_discr: u32,
    pub desired_min_tx: u32,
    pub required_min_rx: u32,
    pub required_min_echo_rx: u32,
}

/// Authentication types (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthType {
    Simple = 1,
    KeyedMd5 = 2,
    MeticulousMd5 = 3,
    KeyedSha1 = 4,
    MeticulousSha1 = 5,
}

impl AuthType {
    fn from_byte(b: u8) -> Option<AuthType> {
        Some(match b {
            1 => AuthType::Simple,
            2 => AuthType::KeyedMd5,
            3 => AuthType::MeticulousMd5,
            4 => AuthType::KeyedSha1,
            5 => AuthType::MeticulousSha1,
            _ => return None,
        })
    }

    /// The digest's length, or `None` for the simple password.
    fn digest_len(self) -> Option<usize> {
        match self {
            AuthType::Simple => None,
            AuthType::KeyedMd5 | AuthType::MeticulousMd5 => Some(16),
            AuthType::KeyedSha1 | AuthType::MeticulousSha1 => Some(20),
        }
    }

    pub fn meticulous(self) -> bool {
        matches!(self, AuthType::MeticulousMd5 | AuthType::MeticulousSha1)
    }
}

/// A session's authentication settings. The key never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    pub kind: AuthType,
    pub key_id: u8,
    /// 1-16 bytes (simple, MD5) or 1-20 bytes (SHA1).
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("kind", &self.kind)
            .field("key_id", &self.key_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why a packet was discarded; each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Discard {
    #[error("shorter than the mandatory section or its length field")]
    Truncated,
    #[error("version is not 1")]
    Version,
    #[error("length field out of range")]
    Length,
    #[error("detect multiplier 0")]
    DetectMult,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("my discriminator 0")]
    MyDiscriminator,
    #[error("your discriminator names no session")]
    NoSession,
    #[error("your discriminator 0 while the session is up")]
    YourDiscriminator,
    #[error("TTL is not 255")]
    Ttl,
    #[error("authentication present or absent against the session's setting")]
    AuthMismatch,
    #[error("authentication section malformed or of another type or key")]
    AuthMalformed,
    #[error("authentication digest or password wrong")]
    AuthFailed,
    #[error("authentication sequence number out of window")]
    AuthSequence,
}

impl Discard {
    pub const ALL: [Discard; 13] = [
        Discard::Truncated,
        Discard::Version,
        Discard::Length,
        Discard::DetectMult,
        Discard::Multipoint,
        Discard::MyDiscriminator,
        Discard::NoSession,
        Discard::YourDiscriminator,
        Discard::Ttl,
        Discard::AuthMismatch,
        Discard::AuthMalformed,
        Discard::AuthFailed,
        Discard::AuthSequence,
    ];

    /// Stable metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Discard::Truncated => "truncated",
            Discard::Version => "version",
            Discard::Length => "length",
            Discard::DetectMult => "detect_mult",
            Discard::Multipoint => "multipoint",
            Discard::MyDiscriminator => "my_discriminator",
            Discard::NoSession => "no_session",
            Discard::YourDiscriminator => "your_discriminator",
            Discard::Ttl => "ttl",
            Discard::AuthMismatch => "auth_mismatch",
            Discard::AuthMalformed => "auth_malformed",
            Discard::AuthFailed => "auth_failed",
            Discard::AuthSequence => "auth_sequence",
        }
    }
}

/// A decoded packet: the mandatory section and whether it carries authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub control: Control,
    pub authenticated: bool,
}

/// Reads a packet, checking what needs no session (§6.8.6, first part).
pub fn decode(b: &[u8]) -> Result<Received, Discard> {
    if b.len() < MANDATORY_LEN {
        return Err(Discard::Truncated);
    }
    if b[0] >> 5 != VERSION {
        return Err(Discard::Version);
    }
    let auth = b[1] & 0x04 != 0;
    let len = usize::from(b[3]);
    let min = if auth {
        MANDATORY_LEN + 2
    } else {
        MANDATORY_LEN
    };
    if len < min || len > b.len() {
        return Err(Discard::Length);
    }
    if b[2] == 0 {
        return Err(Discard::DetectMult);
    }
    if b[1] & 0x01 != 0 {
        return Err(Discard::Multipoint);
    }
    let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let control = Control {
        diag: Diag::from_bits(b[0]),
        state: State::from_bits(b[1] >> 6),
        poll: b[1] & 0x20 != 0,
        fin: b[1] & 0x10 != 0,
        cpi: b[1] & 0x08 != 0,
        demand: b[1] & 0x02 != 0,
        detect_mult: b[2],
        my_discr: word(4),
        your_discr: word(8),
        desired_min_tx: word(12),
        required_min_rx: word(16),
        required_min_echo_rx: word(20),
    };
    if control.my_discr == 0 {
        return Err(Discard::MyDiscriminator);
    }
    Ok(Received {
        control,
        authenticated: auth,
    })
}

/// Writes `c`, with an authentication section when `auth` is given (`seq` for the keyed
/// types).
pub fn encode(c: &Control, auth: Option<(&Auth, u32)>) -> Vec<u8> {
    let mut b = Vec::with_capacity(MANDATORY_LEN + 28);
    b.push((VERSION << 5) | (c.diag as u8 & 0x1f));
    let flags = ((c.state as u8) << 6)
        | (u8::from(c.poll) << 5)
        | (u8::from(c.fin) << 4)
        | (u8::from(c.cpi) << 3)
        | (u8::from(auth.is_some()) << 2)
        | (u8::from(c.demand) << 1);
    b.push(flags);
    b.push(c.detect_mult);
    b.push(0); // length, below
    for w in [
        c.my_discr,
        c.your_discr,
        c.desired_min_tx,
        c.required_min_rx,
        c.required_min_echo_rx,
    ] {
        b.extend_from_slice(&w.to_be_bytes());
    }
    if let Some((a, seq)) = auth {
        match a.kind.digest_len() {
            None => {
                b.push(a.kind as u8);
                b.push((3 + a.key.len()) as u8);
                b.push(a.key_id);
                b.extend_from_slice(&a.key);
            }
            Some(n) => {
                b.push(a.kind as u8);
                b.push((8 + n) as u8);
                b.push(a.key_id);
                b.push(0);
                b.extend_from_slice(&seq.to_be_bytes());
                // The digest is computed over the packet with the key, zero-padded, in its
                // place (§6.7.3, §6.7.4).
                let at = b.len();
                b.extend_from_slice(&padded(&a.key, n));
                b[3] = b.len() as u8;
                let digest = digest(a.kind, &b);
                b[at..at + n].copy_from_slice(&digest);
                return b;
            }
        }
    }
    b[3] = b.len() as u8;
    b
}

fn padded(key: &[u8], n: usize) -> Vec<u8> {
    let mut k = key.to_vec();
    k.resize(n, 0);
    k
}

fn digest(kind: AuthType, bytes: &[u8]) -> Vec<u8> {
    match kind {
        AuthType::KeyedSha1 | AuthType::MeticulousSha1 => Sha1::digest(bytes).to_vec(),
        _ => Md5::digest(bytes).to_vec(),
    }
}

impl Auth {
    /// Checks the authentication section of `b` (a packet `decode` accepted with the A bit)
    /// and returns its sequence number (0 for the simple password). The caller checks the
    /// sequence window, which needs the session's state.
    pub fn verify(&self, b: &[u8]) -> Result<u32, Discard> {
        let len = usize::from(b[3]).min(b.len());
        let sec = b.get(MANDATORY_LEN..len).ok_or(Discard::AuthMalformed)?;
        let (&kind, &auth_len) = (
            sec.first().ok_or(Discard::AuthMalformed)?,
            sec.get(1).ok_or(Discard::AuthMalformed)?,
        );
        if AuthType::from_byte(kind) != Some(self.kind) || usize::from(auth_len) != sec.len() {
            return Err(Discard::AuthMalformed);
        }
        if sec.get(2) != Some(&self.key_id) {
            return Err(Discard::AuthMalformed);
        }
        match self.kind.digest_len() {
            None => {
                let password = &sec[3..];
                if bool::from(password.ct_eq(&self.key)) {
                    Ok(0)
                } else {
                    Err(Discard::AuthFailed)
                }
            }
            Some(n) => {
                if sec.len() != 8 + n {
                    return Err(Discard::AuthMalformed);
                }
                let seq = u32::from_be_bytes([sec[4], sec[5], sec[6], sec[7]]);
                let at = MANDATORY_LEN + 8;
                let mut copy = b[..len].to_vec();
                copy[at..at + n].copy_from_slice(&padded(&self.key, n));
                let expected = digest(self.kind, &copy);
                if bool::from(expected.as_slice().ct_eq(&b[at..at + n])) {
                    Ok(seq)
                } else {
                    Err(Discard::AuthFailed)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> Control {
        Control {
            diag: Diag::None,
            state: State::Down,
            poll: false,
            fin: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_discr: 0x0102_0304,
            your_discr: 0,
            desired_min_tx: 1_000_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
        }
    }

    #[test]
    fn mandatory_section_byte_for_byte() {
        let b = encode(&control(), None);
        assert_eq!(
            b,
            [
                0x20, 0x40, 3, 24, 1, 2, 3, 4, 0, 0, 0, 0, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x04,
                0x93, 0xe0, 0, 0, 0, 0
            ]
        );
        assert_eq!(
            decode(&b),
            Ok(Received {
                control: control(),
                authenticated: false
            })
        );
        let mut up = control();
        up.state = State::Up;
        up.poll = true;
        up.diag = Diag::NeighborSignaledSessionDown;
        let b = encode(&up, None);
        assert_eq!(&b[..2], &[0x23, 0xe0]);
        assert_eq!(decode(&b).unwrap().control, up);
    }

    #[test]
    fn every_session_free_check_discards() {
        let good = encode(&control(), None);
        let with = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            b
        };
        assert_eq!(decode(&good[..23]), Err(Discard::Truncated));
        assert_eq!(decode(&with(0, 0x40)), Err(Discard::Version));
        assert_eq!(decode(&with(3, 23)), Err(Discard::Length));
        assert_eq!(decode(&with(3, 25)), Err(Discard::Length));
        assert_eq!(decode(&with(2, 0)), Err(Discard::DetectMult));
        assert_eq!(decode(&with(1, 0x41)), Err(Discard::Multipoint));
        let mut zero = good.clone();
        zero[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(decode(&zero), Err(Discard::MyDiscriminator));
        // A bit set without room for the section.
        assert_eq!(decode(&with(1, 0x44)), Err(Discard::Length));
    }

    fn auth(kind: AuthType, key: &[u8]) -> Auth {
        Auth {
            kind,
            key_id: 7,
            key: key.to_vec(),
        }
    }

    #[test]
    fn authentication_sections_sign_and_verify() {
        for kind in [
            AuthType::Simple,
            AuthType::KeyedMd5,
            AuthType::MeticulousMd5,
            AuthType::KeyedSha1,
            AuthType::MeticulousSha1,
        ] {
            let a = auth(kind, b"portier-lab");
            let b = encode(&control(), Some((&a, 42)));
            let expect_len = match kind {
                AuthType::Simple => 24 + 3 + 11,
                AuthType::KeyedMd5 | AuthType::MeticulousMd5 => 48,
                _ => 52,
            };
            assert_eq!(b.len(), expect_len, "{kind:?}");
            let r = decode(&b).expect("decodes");
            assert!(r.authenticated);
            let seq = if kind == AuthType::Simple { 0 } else { 42 };
            assert_eq!(a.verify(&b), Ok(seq), "{kind:?}");
            assert_eq!(
                auth(kind, b"wrong").verify(&b),
                Err(Discard::AuthFailed),
                "{kind:?}"
            );
            let mut other_id = a.clone();
            other_id.key_id = 8;
            assert_eq!(other_id.verify(&b), Err(Discard::AuthMalformed));
            // Any flipped bit of the signed packet fails a digest.
            if kind != AuthType::Simple {
                let mut tampered = b.clone();
                tampered[12] ^= 1;
                assert_eq!(a.verify(&tampered), Err(Discard::AuthFailed), "{kind:?}");
            }
        }
        let md5 = encode(&control(), Some((&auth(AuthType::KeyedMd5, b"k"), 1)));
        assert_eq!(
            auth(AuthType::KeyedSha1, b"k").verify(&md5),
            Err(Discard::AuthMalformed)
        );
    }

    /// RFC 5880 §6.7.3 by hand: MD5 over the packet with the key padded to 16 bytes.
    #[test]
    fn keyed_md5_digest_vector() {
        let a = auth(AuthType::KeyedMd5, b"secret");
        let b = encode(&control(), Some((&a, 1)));
        let mut signed = b.clone();
        let mut key = b"secret".to_vec();
        key.resize(16, 0);
        signed[32..48].copy_from_slice(&key);
        assert_eq!(&b[24..32], &[2, 24, 7, 0, 0, 0, 0, 1]);
        assert_eq!(&b[32..48], Md5::digest(&signed).as_slice());
    }

    #[test]
    fn keys_stay_out_of_debug_output() {
        let text = format!("{:?}", auth(AuthType::Simple, b"hunter2"));
        assert!(!text.contains("hunter2"), "{text}");
    }
}
