//! Authentication (RFC 2328 Appendix D): null, simple password and keyed MD5.
//!
//! MD5 keys rotate by configuration: every configured key is accepted on receipt, and the
//! last one listed signs what we send, so a rollover is "add the new key everywhere, then
//! move it last everywhere, then remove the old one" without an adjacency drop.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::HEADER_LEN;

pub const DIGEST_LEN: usize = 16;

/// The secret never reaches `Debug` output (so neither logs nor status).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey {
    pub id: u8,
    /// Zero-padded to 16 bytes as D.3 prescribes.
    pub key: [u8; 16],
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// `Debug` shows the scheme and key IDs, never a password or key.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Auth {
    #[default]
    Null,
    /// Zero-padded to 8 bytes.
    Simple([u8; 8]),
    /// Non-empty; the last key signs.
    Md5(Vec<AuthKey>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Null => f.write_str("Null"),
            Auth::Simple(_) => f.write_str("Simple(<redacted>)"),
            Auth::Md5(keys) => f.debug_tuple("Md5").field(keys).finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication type {got}, expected {expected}")]
    Type { got: u16, expected: u16 },
    #[error("wrong password")]
    Password,
    #[error("unknown key id {0}")]
    UnknownKey(u8),
    #[error("malformed cryptographic authentication field")]
    Malformed,
    #[error("digest missing")]
    NoDigest,
    #[error("digest mismatch")]
    Digest,
}

impl Auth {
    fn au_type(&self) -> u16 {
        match self {
            Auth::Null => 0,
            Auth::Simple(_) => 1,
            Auth::Md5(_) => 2,
        }
    }

    /// Bytes appended after the OSPF packet.
    pub fn trailer_len(&self) -> usize {
        match self {
            Auth::Md5(_) => DIGEST_LEN,
            _ => 0,
        }
    }

    pub fn simple(password: &[u8]) -> Self {
        let mut key = [0u8; 8];
        let n = password.len().min(8);
        key[..n].copy_from_slice(&password[..n]);
        Auth::Simple(key)
    }

    /// Checks the authentication of `data` (the IP payload) whose header says `length`.
    /// Returns the cryptographic sequence number for MD5 (the caller checks replay per
    /// neighbour); `None` means the ordinary checksum must be verified.
    pub(super) fn verify(
        &self,
        data: &[u8],
        length: usize,
        au_type: u16,
    ) -> Result<Option<u32>, AuthError> {
        let expected = self.au_type();
        if au_type != expected {
            return Err(AuthError::Type {
                got: au_type,
                expected,
            });
        }
        match self {
            Auth::Null => Ok(None),
            Auth::Simple(password) => {
                // Constant time: how long the comparison takes says nothing of how much of
                // the password a guess got right.
                if bool::from(data[16..24].ct_eq(&password[..])) {
                    Ok(None)
                } else {
                    Err(AuthError::Password)
                }
            }
            Auth::Md5(keys) => {
                if data[16] != 0 || data[17] != 0 || usize::from(data[19]) != DIGEST_LEN {
                    return Err(AuthError::Malformed);
                }
                let key_id = data[18];
                let key = keys
                    .iter()
                    .find(|k| k.id == key_id)
                    .ok_or(AuthError::UnknownKey(key_id))?;
                let received = data
                    .get(length..length + DIGEST_LEN)
                    .ok_or(AuthError::NoDigest)?;
                if !bool::from(digest(&data[..length], &key.key)[..].ct_eq(received)) {
                    return Err(AuthError::Digest);
                }
                Ok(Some(u32::from_be_bytes([
                    data[20], data[21], data[22], data[23],
                ])))
            }
        }
    }

    /// Fills the checksum and authentication fields of an encoded packet (length already
    /// set) and appends the MD5 digest.
    pub(super) fn sign(&self, out: &mut Vec<u8>, crypto_seq: u32) {
        out[14..16].copy_from_slice(&self.au_type().to_be_bytes());
        out[12..14].copy_from_slice(&[0, 0]);
        out[16..HEADER_LEN].fill(0);
        match self {
            Auth::Null => {
                let sum = super::checksum(out);
                out[12..14].copy_from_slice(&sum.to_be_bytes());
            }
            Auth::Simple(password) => {
                let sum = super::checksum(out);
                out[12..14].copy_from_slice(&sum.to_be_bytes());
                out[16..24].copy_from_slice(password);
            }
            Auth::Md5(keys) => {
                let Some(key) = keys.last() else {
                    return;
                };
                out[18] = key.id;
                out[19] = DIGEST_LEN as u8;
                out[20..24].copy_from_slice(&crypto_seq.to_be_bytes());
                let d = digest(out, &key.key);
                out.extend_from_slice(&d);
            }
        }
    }
}

fn digest(packet: &[u8], key: &[u8; 16]) -> [u8; DIGEST_LEN] {
    let mut hasher = Md5::new();
    hasher.update(packet);
    hasher.update(key);
    hasher.finalize().into()
}

impl AuthKey {
    pub fn new(id: u8, secret: &[u8]) -> Self {
        let mut key = [0u8; 16];
        let n = secret.len().min(16);
        key[..n].copy_from_slice(&secret[..n]);
        Self { id, key }
    }
}
