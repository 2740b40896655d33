//! PROXY protocol v2 (the binary form HAProxy defines): a header before the first byte of a
//! connection that names the original client. The parser is pure; the reader bounds the
//! bytes and time it spends.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest address block accepted (addresses plus TLVs); real senders stay far below.
pub const MAX_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// A connection from the proxy itself (health check): use the peer address.
    Local,
    /// A relayed TCP connection.
    Proxy {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// PROXY command with an address family we do not decode (UNIX, UDP, unspecified).
    Unsupported,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no PROXY v2 signature")]
    Signature,
    #[error("version {0} is not 2")]
    Version(u8),
    #[error("unknown command {0}")]
    Command(u8),
    #[error("address block of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("address block of {len} bytes is too short for family {family:#04x}")]
    Short { family: u8, len: usize },
    #[error("connection closed or failed before the header was complete")]
    Io,
    #[error("header not complete in time")]
    Timeout,
}

/// Checks the fixed 16-byte part; returns the length of the block that follows.
pub fn parse_fixed(fixed: &[u8; 16]) -> Result<usize, Error> {
    if fixed[..12] != SIGNATURE {
        return Err(Error::Signature);
    }
    let version = fixed[12] >> 4;
    if version != 2 {
        return Err(Error::Version(version));
    }
    let command = fixed[12] & 0x0f;
    if command > 1 {
        return Err(Error::Command(command));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > MAX_LEN {
        return Err(Error::TooLong(len));
    }
    Ok(len)
}

/// Decodes a complete header: the fixed part and its `block`.
pub fn parse(fixed: &[u8; 16], block: &[u8]) -> Result<Header, Error> {
    parse_fixed(fixed)?;
    if fixed[12] & 0x0f == 0 {
        return Ok(Header::Local);
    }
    let family = fixed[13];
    let short = || Error::Short {
        family,
        len: block.len(),
    };
    match family {
        // TCP over IPv4.
        0x11 => {
            let b: &[u8; 12] = block
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(short)?;
            let src = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let dst = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Ok(Header::Proxy {
                source: SocketAddr::from((src, u16::from_be_bytes([b[8], b[9]]))),
                destination: SocketAddr::from((dst, u16::from_be_bytes([b[10], b[11]]))),
            })
        }
        // TCP over IPv6.
        0x21 => {
            let b: &[u8; 36] = block
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(short)?;
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[o..o + 16]);
                Ipv6Addr::from(a)
            };
            Ok(Header::Proxy {
                source: SocketAddr::from((ip(0), u16::from_be_bytes([b[32], b[33]]))),
                destination: SocketAddr::from((ip(16), u16::from_be_bytes([b[34], b[35]]))),
            })
        }
        _ => Ok(Header::Unsupported),
    }
}

/// Reads exactly one header from `io`, never past it, within `timeout`.
pub async fn read<R: AsyncRead + Unpin>(io: &mut R, timeout: Duration) -> Result<Header, Error> {
    let work = async {
        let mut fixed = [0u8; 16];
        io.read_exact(&mut fixed).await.map_err(|_| Error::Io)?;
        let len = parse_fixed(&fixed)?;
        let mut block = vec![0u8; len];
        io.read_exact(&mut block).await.map_err(|_| Error::Io)?;
        parse(&fixed, &block)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Error::Timeout)?
}

/// Encodes a TCP PROXY header (tests and the benchmark use it to play the sending proxy).
pub fn encode(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x21);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(v) => v.ip().to_ipv6_mapped(),
                SocketAddr::V6(v) => *v.ip(),
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(bytes: &[u8]) -> ([u8; 16], &[u8]) {
        (bytes[..16].try_into().unwrap(), &bytes[16..])
    }

    /// The bytes HAProxy's `send-proxy-v2` writes for 198.51.100.10:41000 -> 203.0.113.10:80
    /// (spec section 2.2 layout, written out by hand).
    const IPV4: &[u8] = &[
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // signature
        0x21, 0x11, 0x00, 0x0c, // v2 PROXY, TCP4, 12 bytes
        198, 51, 100, 10, 203, 0, 113, 10, 0xa0, 0x28, 0x00, 0x50,
    ];

    #[test]
    fn decodes_ipv4() {
        let (fixed, block) = split(IPV4);
        assert_eq!(
            parse(&fixed, block),
            Ok(Header::Proxy {
                source: "198.51.100.10:41000".parse().unwrap(),
                destination: "203.0.113.10:80".parse().unwrap(),
            })
        );
        assert_eq!(
            encode(
                "198.51.100.10:41000".parse().unwrap(),
                "203.0.113.10:80".parse().unwrap()
            ),
            IPV4
        );
    }

    #[test]
    fn decodes_ipv6_with_tlvs() {
        let src: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::2]:443".parse().unwrap();
        let mut bytes = encode(src, dst);
        // Append a NOOP TLV (type 0x04) and fix the length: TLVs are skipped.
        bytes.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]);
        bytes[15] += 5;
        let (fixed, block) = split(&bytes);
        assert_eq!(
            parse(&fixed, block),
            Ok(Header::Proxy {
                source: src,
                destination: dst
            })
        );
    }

    #[test]
    fn local_and_unsupported() {
        let mut local = IPV4[..16].to_vec();
        local[12] = 0x20;
        local[13] = 0x00;
        local[14] = 0;
        local[15] = 0;
        let fixed: [u8; 16] = local.try_into().unwrap();
        assert_eq!(parse(&fixed, &[]), Ok(Header::Local));
        let mut unix = IPV4.to_vec();
        unix[13] = 0x31;
        let (fixed, block) = split(&unix);
        assert_eq!(parse(&fixed, block), Ok(Header::Unsupported));
    }

    #[test]
    fn rejects_malformed() {
        let (mut fixed, block) = split(IPV4);
        fixed[0] = b'G';
        assert_eq!(parse(&fixed, block), Err(Error::Signature));
        let (mut fixed, block) = split(IPV4);
        fixed[12] = 0x11;
        assert_eq!(parse(&fixed, block), Err(Error::Version(1)));
        let (mut fixed, block) = split(IPV4);
        fixed[12] = 0x22;
        assert_eq!(parse(&fixed, block), Err(Error::Command(2)));
        let (mut fixed, _) = split(IPV4);
        fixed[14] = 0xff;
        assert_eq!(parse_fixed(&fixed), Err(Error::TooLong(0xff0c)));
        let (fixed, block) = split(IPV4);
        assert_eq!(
            parse(&fixed, &block[..8]),
            Err(Error::Short {
                family: 0x11,
                len: 8
            })
        );
        let mut v6 = IPV4.to_vec();
        v6[13] = 0x21;
        let (fixed, block) = split(&v6);
        assert!(matches!(parse(&fixed, block), Err(Error::Short { .. })));
    }

    #[tokio::test]
    async fn reads_exactly_the_header() {
        let mut stream = IPV4.to_vec();
        stream.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut r = &stream[..];
        let h = read(&mut r, Duration::from_secs(1)).await.unwrap();
        assert!(matches!(h, Header::Proxy { .. }));
        assert_eq!(r, b"GET / HTTP/1.1\r\n");
        let mut short = &IPV4[..20];
        assert_eq!(
            read(&mut short, Duration::from_secs(1)).await,
            Err(Error::Io)
        );
        let mut plain = &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..];
        assert_eq!(
            read(&mut plain, Duration::from_secs(1)).await,
            Err(Error::Signature)
        );
    }
}
