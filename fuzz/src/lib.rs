//! Helpers the fuzz targets share: a cursor over the fuzzer's bytes, and "sealing" of
//! packets (valid checksums and digests) so a mutated packet reaches the decoders behind the
//! integrity checks instead of being dropped at the first one.

use md5::{Digest, Md5};

/// Reads the fuzzer's input front to back; past the end every read yields zeros / nothing.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Ones-complement sum (RFC 1071) of `bytes` added to `sum`, not yet folded.
pub fn sum16(bytes: &[u8], mut sum: u32) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for w in &mut chunks {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// How an OSPF packet is to be sealed: RFC 2328 D.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OspfSeal<'a> {
    Null,
    Simple(&'a [u8; 8]),
    /// Key id and the 16-byte zero-padded key.
    Md5(u8, &'a [u8; 16], u32),
}

/// Makes the header of the OSPF packet in `p` (at least 24 bytes) consistent with its length
/// field and `seal`: the length field is kept when it fits the buffer, else set to the
/// buffer's length; then the checksum (null, simple) or the MD5 digest is written.
pub fn seal_ospf(p: &mut Vec<u8>, seal: OspfSeal<'_>) {
    if p.len() < 24 {
        p.resize(24, 0);
    }
    let mut length = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if !(24..=p.len()).contains(&length) {
        length = p.len().min(usize::from(u16::MAX));
        p[2..4].copy_from_slice(&(length as u16).to_be_bytes());
    }
    p[12..14].fill(0);
    match seal {
        OspfSeal::Null | OspfSeal::Simple(_) => {
            p[14..16].copy_from_slice(&[0, u8::from(matches!(seal, OspfSeal::Simple(_)))]);
            let sum = fold(sum16(&p[24..length], sum16(&p[..16], 0)));
            p[12..14].copy_from_slice(&sum.to_be_bytes());
            match seal {
                OspfSeal::Simple(password) => p[16..24].copy_from_slice(password),
                _ => p[16..24].fill(0),
            }
        }
        OspfSeal::Md5(id, key, seq) => {
            p[14..16].copy_from_slice(&[0, 2]);
            p[16..20].copy_from_slice(&[0, 0, id, 16]);
            p[20..24].copy_from_slice(&seq.to_be_bytes());
            let mut h = Md5::new();
            h.update(&p[..length]);
            h.update(key);
            let digest: [u8; 16] = h.finalize().into();
            p.truncate(length);
            p.extend_from_slice(&digest);
        }
    }
}
