//! VRRP v2/v3 advertisements (userspace/src/vrrp/packet.rs): decoding never panics, and an
//! accepted advert re-encodes to a message that decodes to the same advert.
//!
//! Input: a flags byte, then the bytes. Bit 0: expect v3 (else v2); bit 1: v3 IPv4 checksum
//! without the pseudo-header; bits 2-3: what the bytes are: an IPv4 packet as the raw socket
//! gives it (`decode_ipv4`), an IPv6 payload with addresses fe80::1 -> ff02::12, or an IPv4
//! payload 10.99.0.1 -> 224.0.0.18 (`decode`); bit 4: repair the VRRP checksum first so the
//! checks behind it are reached; bit 5: hop limit other than 255 (IPv6).

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use portier::vrrp::packet::{
    Checksum, Expect, MULTICAST_V4, MULTICAST_V6, PROTOCOL, Version, decode, decode_ipv4,
    decode_ipv6, encode,
};
use portier_fuzz::{fold, sum16};

/// The checksum field a VRRP message needs (its own checksum field counted as zero).
fn repair(message: &mut [u8], src: IpAddr, dst: IpAddr, version: u8, mode: Checksum) {
    if message.len() < 8 {
        return;
    }
    message[6..8].fill(0);
    let pseudo = match (version, src, dst, mode) {
        (2, ..) => 0,
        (_, IpAddr::V4(s), IpAddr::V4(d), Checksum::WithPseudoHeader) => {
            let mut h = s.octets().to_vec();
            h.extend_from_slice(&d.octets());
            h.extend_from_slice(&[0, PROTOCOL]);
            h.extend_from_slice(&(message.len() as u16).to_be_bytes());
            sum16(&h, 0)
        }
        (_, IpAddr::V4(_), _, Checksum::VrrpOnly) => 0,
        (_, s, d, _) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            };
            let mut h = v6(s).to_vec();
            h.extend_from_slice(&v6(d));
            h.extend_from_slice(&(message.len() as u32).to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, PROTOCOL]);
            sum16(&h, 0)
        }
    };
    let sum = fold(sum16(message, pseudo));
    message[6..8].copy_from_slice(&sum.to_be_bytes());
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let version = if flags & 1 != 0 {
        Version::V3
    } else {
        Version::V2
    };
    let checksum = if flags & 2 != 0 {
        Checksum::VrrpOnly
    } else {
        Checksum::WithPseudoHeader
    };
    let expect = Expect { version, checksum };
    let mut bytes = bytes.to_vec();
    let vnum = bytes.first().map_or(0, |b| b >> 4);
    let fix = flags & 16 != 0;
    let (advert, src, dst) = match flags >> 2 & 3 {
        0 => {
            let ihl = usize::from(bytes.first().map_or(0, |b| b & 0x0f)) * 4;
            if fix && bytes.len() >= 20 && ihl >= 20 {
                let total = usize::from(u16::from_be_bytes([bytes[2], bytes[3]])).min(bytes.len());
                let src = Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15]);
                let dst = Ipv4Addr::new(bytes[16], bytes[17], bytes[18], bytes[19]);
                if let Some(m) = bytes.get_mut(ihl..total) {
                    let v = m.first().map_or(0, |b| b >> 4);
                    repair(m, src.into(), dst.into(), v, checksum);
                }
            }
            match decode_ipv4(&bytes, expect) {
                Ok(r) => (r.advert, r.src, r.dst),
                Err(e) => {
                    let _ = e.name();
                    return;
                }
            }
        }
        1 => {
            let src = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
            if fix {
                repair(&mut bytes, src.into(), MULTICAST_V6.into(), vnum, checksum);
            }
            let hop_limit = if flags & 32 != 0 { 64 } else { 255 };
            match decode_ipv6(&bytes, src, MULTICAST_V6, hop_limit, expect) {
                Ok(r) => (r.advert, r.src, r.dst),
                Err(e) => {
                    let _ = e.name();
                    return;
                }
            }
        }
        _ => {
            let src = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1));
            let dst = IpAddr::V4(MULTICAST_V4);
            if fix {
                repair(&mut bytes, src, dst, vnum, checksum);
            }
            match decode(&bytes, src, dst, expect) {
                Ok(a) => (a, src, dst),
                Err(e) => {
                    let _ = e.name();
                    return;
                }
            }
        }
    };
    assert_eq!(advert.version, version);
    assert!(!advert.addresses.is_empty() && advert.addresses.len() <= 255);
    assert!(
        advert
            .addresses
            .iter()
            .all(|a| a.is_ipv4() == src.is_ipv4())
    );
    let again = encode(&advert, src, dst, checksum);
    assert_eq!(decode(&again, src, dst, expect), Ok(advert));
});
