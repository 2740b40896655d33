//! Vectors from keepalived 2.2.7 captures (testdata/, copied from shared/captures) and
//! malformed variants of them.

use super::*;
use crate::vrrp::announce;

/// Frames of a classic little-endian pcap file.
fn pcap_frames(file: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(&file[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= file.len() {
        let len = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
        frames.push(file[at + 16..at + 16 + len].to_vec());
        at += 16 + len;
    }
    frames
}

fn v3_frames() -> Vec<Vec<u8>> {
    pcap_frames(include_bytes!("testdata/keepalived-vrrpv3.pcap"))
}

fn v2_frames() -> Vec<Vec<u8>> {
    pcap_frames(include_bytes!("testdata/keepalived-vrrpv2.pcap"))
}

/// The IPv4 packet of an Ethernet frame.
fn ip_of(frame: &[u8]) -> &[u8] {
    assert_eq!(&frame[12..14], &[0x08, 0x00]);
    &frame[14..]
}

const V3: Expect = Expect {
    version: Version::V3,
    checksum: Checksum::WithPseudoHeader,
};
const V2: Expect = Expect {
    version: Version::V2,
    checksum: Checksum::VrrpOnly,
};
const SRC: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const KEEPALIVED_MAC: [u8; 6] = [0x42, 0x84, 0xa4, 0x34, 0x2c, 0xc9];

fn advert(version: Version, priority: u8, interval_cs: u16) -> Advert {
    Advert {
        version,
        vrid: 51,
        priority,
        interval_cs,
        addresses: vec![VIP.into()],
    }
}

/// (frame index, IP ident, priority) of the adverts in each capture.
const ADVERTS: [(usize, u16, u8); 3] = [(0, 1, 150), (6, 2, 150), (7, 3, 0)];

#[test]
fn keepalived_v3_adverts_decode() {
    let frames = v3_frames();
    assert_eq!(frames.len(), 8);
    for (index, _, priority) in ADVERTS {
        let received = decode_ipv4(ip_of(&frames[index]), V3).unwrap();
        assert_eq!(received.src, IpAddr::from(SRC));
        assert_eq!(received.dst, IpAddr::from(MULTICAST_V4));
        assert_eq!(received.advert, advert(Version::V3, priority, 100));
    }
}

#[test]
fn keepalived_v3_adverts_encode_byte_for_byte() {
    let frames = v3_frames();
    for (index, ident, priority) in ADVERTS {
        let message = encode(
            &advert(Version::V3, priority, 100),
            SRC.into(),
            MULTICAST_V4.into(),
            Checksum::WithPseudoHeader,
        );
        let packet = encode_ipv4(&message, SRC, MULTICAST_V4, ident);
        assert_eq!(packet, ip_of(&frames[index]), "frame {index}");
        assert_eq!(&frames[index][..6], &[0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
    }
}

#[test]
fn keepalived_v2_adverts_decode_and_encode_byte_for_byte() {
    let frames = v2_frames();
    assert_eq!(frames.len(), 8);
    for (index, ident, priority) in ADVERTS {
        let received = decode_ipv4(ip_of(&frames[index]), V2).unwrap();
        assert_eq!(received.advert, advert(Version::V2, priority, 100));
        let message = encode(
            &received.advert,
            SRC.into(),
            MULTICAST_V4.into(),
            Checksum::VrrpOnly,
        );
        assert_eq!(
            encode_ipv4(&message, SRC, MULTICAST_V4, ident),
            ip_of(&frames[index])
        );
    }
}

#[test]
fn keepalived_gratuitous_arps_match() {
    for frames in [v3_frames(), v2_frames()] {
        for frame in &frames[1..6] {
            assert_eq!(
                frame.as_slice(),
                announce::gratuitous_arp(KEEPALIVED_MAC, VIP)
            );
        }
    }
}

#[test]
fn checksum_variant_is_per_instance() {
    let packet = ip_of(&v3_frames()[0]).to_vec();
    let without = Expect {
        checksum: Checksum::VrrpOnly,
        ..V3
    };
    assert_eq!(decode_ipv4(&packet, without), Err(Drop::Checksum));

    // A sender without the pseudo-header is understood by an instance set up the same way.
    let message = encode(
        &advert(Version::V3, 150, 100),
        SRC.into(),
        MULTICAST_V4.into(),
        Checksum::VrrpOnly,
    );
    let packet = encode_ipv4(&message, SRC, MULTICAST_V4, 9);
    assert_eq!(
        decode_ipv4(&packet, without).unwrap().advert,
        advert(Version::V3, 150, 100)
    );
    assert_eq!(decode_ipv4(&packet, V3), Err(Drop::Checksum));
}

#[test]
fn ipv6_round_trip_and_hop_limit() {
    let src: Ipv6Addr = "fe80::1".parse().unwrap();
    let sent = Advert {
        version: Version::V3,
        vrid: 7,
        priority: 100,
        interval_cs: 50,
        addresses: vec![
            "2001:db8::10".parse().unwrap(),
            "2001:db8::11".parse().unwrap(),
        ],
    };
    let message = encode(
        &sent,
        src.into(),
        MULTICAST_V6.into(),
        Checksum::WithPseudoHeader,
    );
    assert_eq!(message.len(), 8 + 32);
    let received = decode_ipv6(&message, src, MULTICAST_V6, 255, V3).unwrap();
    assert_eq!(received.advert, sent);
    assert_eq!(
        decode_ipv6(&message, src, MULTICAST_V6, 64, V3),
        Err(Drop::Ttl)
    );
    // The pseudo-header binds the source: a spoofed source fails the checksum.
    let other: Ipv6Addr = "fe80::2".parse().unwrap();
    assert_eq!(
        decode_ipv6(&message, other, MULTICAST_V6, 255, V3),
        Err(Drop::Checksum)
    );
    // VRRPv2 has no IPv6.
    let mut v2 = message.clone();
    v2[0] = 0x21;
    assert_eq!(
        decode_ipv6(&v2, src, MULTICAST_V6, 255, V2),
        Err(Drop::Version)
    );
}

#[test]
fn max_interval_is_12_bits() {
    let mut a = advert(Version::V3, 100, 4095);
    let message = encode(&a, SRC.into(), MULTICAST_V4.into(), Checksum::VrrpOnly);
    assert_eq!(&message[4..6], &[0x0f, 0xff]);
    a.interval_cs = 5000;
    let message = encode(&a, SRC.into(), MULTICAST_V4.into(), Checksum::VrrpOnly);
    assert_eq!(
        &message[4..6],
        &[0x0f, 0xff],
        "clamped, never spills into rsvd"
    );
}

/// Rewrites the VRRP checksum so a test reaches the check after it.
fn fix_checksum(packet: &mut [u8], expect: Expect) {
    let (src, dst) = (
        Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
    );
    let message = &mut packet[20..];
    message[6..8].copy_from_slice(&[0, 0]);
    let version = if message[0] >> 4 == 2 {
        Version::V2
    } else {
        Version::V3
    };
    let sum = vrrp_checksum(message, src.into(), dst.into(), version, expect.checksum);
    message[6..8].copy_from_slice(&sum.to_be_bytes());
}

#[track_caller]
fn assert_drop(packet: &[u8], expect: Expect, reason: Drop) {
    assert_eq!(decode_ipv4(packet, expect), Err(reason));
}

#[test]
fn malformed_packets_are_dropped_with_their_reason() {
    let good = ip_of(&v3_frames()[0]).to_vec();
    let good_v2 = ip_of(&v2_frames()[0]).to_vec();

    // Every truncation, of the IP header and of the message.
    for len in 0..good.len() {
        let reason = decode_ipv4(&good[..len], V3).unwrap_err();
        assert!(
            matches!(reason, Drop::Truncated),
            "cut at {len}: {reason:?}"
        );
    }

    let mut p = good.clone();
    p[8] = 254;
    assert_drop(&p, V3, Drop::Ttl);

    let mut p = good.clone();
    p[9] = 17;
    assert_drop(&p, V3, Drop::BadIpHeader);
    let mut p = good.clone();
    p[0] = 0x65;
    assert_drop(&p, V3, Drop::BadIpHeader);
    let mut p = good.clone();
    p[6] = 0x20; // more fragments
    assert_drop(&p, V3, Drop::BadIpHeader);
    let mut p = good.clone();
    p[0] = 0x44; // IHL 16 bytes
    assert_drop(&p, V3, Drop::BadIpHeader);

    // A v2 packet to a v3 instance and the reverse; an unknown version.
    assert_drop(&good_v2, V3, Drop::Version);
    assert_drop(&good, V2, Drop::Version);
    let mut p = good.clone();
    p[20] = 0x41;
    assert_drop(&p, V3, Drop::Version);

    let mut p = good.clone();
    p[20] = 0x32;
    fix_checksum(&mut p, V3);
    assert_drop(&p, V3, Drop::Type);

    let mut p = good.clone();
    p[23] = 0;
    fix_checksum(&mut p, V3);
    assert_drop(&p, V3, Drop::AddressCount);
    let mut p = good.clone();
    p[23] = 2; // says two addresses, carries one
    assert_drop(&p, V3, Drop::Truncated);
    // Longer than the count says (IP total length grown to include 4 more bytes).
    let mut p = good.clone();
    p.extend_from_slice(&[10, 99, 0, 101]);
    p[3] += 4;
    assert_drop(&p, V3, Drop::AddressCount);

    // Any single flipped bit in the message fails the checksum (or an earlier check).
    for byte in 20..good.len() {
        for bit in 0..8 {
            let mut p = good.clone();
            p[byte] ^= 1 << bit;
            assert!(
                decode_ipv4(&p, V3).is_err(),
                "flip of bit {bit} in byte {byte} went through"
            );
        }
    }
    let mut p = good.clone();
    p[31] ^= 0xff;
    assert_drop(&p, V3, Drop::Checksum);

    let mut p = good_v2.clone();
    p[24] = 1; // simple-text authentication
    fix_checksum(&mut p, V2);
    assert_drop(&p, V2, Drop::AuthType);

    // An IP total length shorter than the header, and longer than the buffer.
    let mut p = good.clone();
    p[2..4].copy_from_slice(&10u16.to_be_bytes());
    assert_drop(&p, V3, Drop::Truncated);
    let mut p = good.clone();
    p[2..4].copy_from_slice(&100u16.to_be_bytes());
    assert_drop(&p, V3, Drop::Truncated);
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A fixed-seed generator: reproducible, and no dependency for a fuzz loop.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let template = ip_of(&v3_frames()[0]).to_vec();
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half of the inputs keep a valid-looking IP header so the VRRP paths are reached.
        if next() % 2 == 0 && p.len() >= 20 {
            p[..20].copy_from_slice(&template[..20]);
            let total = (p.len() as u16).to_be_bytes();
            p[2..4].copy_from_slice(&total);
        }
        let _ = decode_ipv4(&p, V3);
        let _ = decode_ipv4(&p, V2);
        let _ = decode_ipv6(
            &p,
            Ipv6Addr::LOCALHOST,
            MULTICAST_V6,
            255,
            Expect {
                version: Version::V3,
                checksum: Checksum::WithPseudoHeader,
            },
        );
    }
}
