//! Codec tests on packets captured from FRR 8.4.4 (10.99.0.1) and BIRD 2.0.12 (10.99.0.2).

use std::net::Ipv4Addr;

use super::*;
use crate::ospf::lsa::{self, ExternalLsa, LsaError, NetworkLsa, RouterLsa};

/// One captured OSPF packet: IP source, destination and payload.
pub(crate) struct Frame {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub payload: Vec<u8>,
}

pub(crate) const BROADCAST: &[u8] = include_bytes!("../testdata/ospf-frr-bird-broadcast.pcap");
pub(crate) const MD5_HELLOS: &[u8] = include_bytes!("../testdata/ospf-md5-hellos-frr-bird.pcap");

/// Reads a little-endian Ethernet pcap; enough for our own fixtures.
pub(crate) fn frames(pcap: &[u8]) -> Vec<Frame> {
    assert_eq!(&pcap[0..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    let mut rest = &pcap[24..];
    let mut out = Vec::new();
    while rest.len() >= 16 {
        let caplen = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
        let frame = &rest[16..16 + caplen];
        rest = &rest[16 + caplen..];
        let sliced = etherparse::SlicedPacket::from_ethernet(frame).expect("ethernet frame");
        let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net else {
            panic!("not IPv4");
        };
        out.push(Frame {
            src: ip.header().source_addr(),
            dst: ip.header().destination_addr(),
            payload: ip.payload().payload.to_vec(),
        });
    }
    out
}

fn md5_auth() -> Auth {
    Auth::Md5(vec![AuthKey::new(1, b"s3cret")])
}

fn decode_ok(frame: &Frame, auth: &Auth) -> Packet {
    decode(&frame.payload, auth)
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

#[test]
fn every_captured_packet_decodes_and_reencodes_to_the_same_bytes() {
    for (i, frame) in frames(BROADCAST).iter().enumerate() {
        let packet = decode_ok(frame, &Auth::Null);
        assert_eq!(
            packet.encode(&Auth::Null, 0),
            frame.payload,
            "frame {}",
            i + 1
        );
    }
}

#[test]
fn frr_hello_fields() {
    let f = &frames(BROADCAST)[0];
    assert_eq!(f.dst, ALL_SPF_ROUTERS);
    let p = decode_ok(f, &Auth::Null);
    assert_eq!(p.header.router_id, Ipv4Addr::new(10, 99, 0, 1));
    assert_eq!(p.header.area_id, Ipv4Addr::UNSPECIFIED);
    let Body::Hello(h) = p.body else {
        panic!("not a hello")
    };
    assert_eq!(h.network_mask, Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!((h.hello_interval, h.dead_interval), (1, 4));
    assert_eq!((h.options, h.priority), (OPTION_E, 1));
    assert_eq!(h.designated_router, Ipv4Addr::new(10, 99, 0, 1));
    assert_eq!(h.backup_designated_router, Ipv4Addr::new(10, 99, 0, 2));
    assert_eq!(h.neighbors, vec![Ipv4Addr::new(10, 99, 0, 2)]);
}

#[test]
fn dd_negotiation_from_the_capture() {
    let all = frames(BROADCAST);
    let Body::DbDescription(first) = decode_ok(&all[21], &Auth::Null).body else {
        panic!("frame 22 is a DD")
    };
    assert_eq!(first.interface_mtu, 1500);
    assert_eq!(
        first.flags,
        DdFlags {
            init: true,
            more: true,
            master: true
        }
    );
    assert_eq!(first.dd_sequence, 1_757_026_785);
    assert!(first.lsa_headers.is_empty());

    // FRR (lower router ID) became slave and echoed BIRD's sequence number.
    let Body::DbDescription(slave) = decode_ok(&all[26], &Auth::Null).body else {
        panic!("frame 27 is a DD")
    };
    assert_eq!(slave.flags, DdFlags::default());
    assert_eq!(slave.dd_sequence, 4_204_209_965);
    assert_eq!(slave.lsa_headers.len(), 2);
    let h = slave.lsa_headers[0];
    assert_eq!((h.ls_type, h.age, h.seq), (1, 7, 0x8000_0005_u32 as i32));
    assert_eq!((h.checksum, h.length), (0xd047, 48));
}

#[test]
fn lsr_lsu_and_ack_from_the_capture() {
    let all = frames(BROADCAST);
    let Body::LsRequest(lsr) = decode_ok(&all[28], &Auth::Null).body else {
        panic!("frame 29 is an LSR")
    };
    assert!(!lsr.entries.is_empty());
    assert!(lsr.entries.iter().all(|e| e.key().is_some()));

    let Body::LsUpdate(lsu) = decode_ok(&all[30], &Auth::Null).body else {
        panic!("frame 31 is an LSU")
    };
    let lsas: Vec<_> = lsu.lsas.into_iter().map(Result::unwrap).collect();
    assert_eq!(lsas.len(), 4);
    let router = RouterLsa::decode(lsas[0].body()).unwrap();
    assert_eq!(router.links.len(), 2);
    assert_eq!(router.links[1].link_id, Ipv4Addr::new(10, 99, 0, 101));
    assert_eq!(router.links[1].link_data, Ipv4Addr::BROADCAST);
    assert_eq!(router.links[1].link_type, lsa::LINK_STUB);
    let network = NetworkLsa::decode(lsas[3].body()).unwrap();
    assert_eq!(
        network.attached_routers,
        vec![Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2)]
    );

    // A premature-aged AS-external LSA (the flush) and its acknowledgment.
    let Body::LsUpdate(flush) = decode_ok(&all[44], &Auth::Null).body else {
        panic!("frame 45 is an LSU")
    };
    let ext = flush.lsas[0].as_ref().unwrap();
    assert_eq!(ext.header.age, lsa::MAX_AGE);
    let body = ExternalLsa::decode(ext.body()).unwrap();
    assert!(body.type2);
    assert_eq!(body.metric, 10000);
    assert_eq!(body.mask, Ipv4Addr::BROADCAST);
    let Body::LsAck(ack) = decode_ok(&all[48], &Auth::Null).body else {
        panic!("frame 49 is an LSAck")
    };
    assert_eq!(ack.lsa_headers[0].key(), ext.key());
}

#[test]
fn md5_hellos_from_frr_and_bird_verify_and_resign_identically() {
    for frame in frames(MD5_HELLOS) {
        let (packet, received) = decode(&frame.payload, &md5_auth()).unwrap();
        let seq = received.crypto_seq.expect("crypto sequence");
        assert_eq!(packet.encode(&md5_auth(), seq), frame.payload);
    }
}

#[test]
fn md5_rejects_wrong_key_unknown_id_missing_digest_and_null_auth() {
    let frame = &frames(MD5_HELLOS)[0];
    let wrong = Auth::Md5(vec![AuthKey::new(1, b"other")]);
    assert_eq!(
        decode(&frame.payload, &wrong).unwrap_err(),
        DecodeError::Auth(AuthError::Digest)
    );
    let other_id = Auth::Md5(vec![AuthKey::new(2, b"s3cret")]);
    assert_eq!(
        decode(&frame.payload, &other_id).unwrap_err(),
        DecodeError::Auth(AuthError::UnknownKey(1))
    );
    let cut = &frame.payload[..frame.payload.len() - 1];
    assert_eq!(
        decode(cut, &md5_auth()).unwrap_err(),
        DecodeError::Auth(AuthError::NoDigest)
    );
    assert!(matches!(
        decode(&frame.payload, &Auth::Null).unwrap_err(),
        DecodeError::Auth(AuthError::Type {
            got: 2,
            expected: 0
        })
    ));
    // Rotation: the old key is still accepted while a newer one signs.
    let rotated = Auth::Md5(vec![AuthKey::new(1, b"s3cret"), AuthKey::new(2, b"next")]);
    let (packet, _) = decode(&frame.payload, &rotated).unwrap();
    let resigned = packet.encode(&rotated, 7);
    assert_eq!(resigned[18], 2, "the last key signs");
    assert!(decode(&resigned, &rotated).is_ok());
    assert!(decode(&resigned, &md5_auth()).is_err());
}

#[test]
fn simple_password_round_trip_and_mismatch() {
    let frame = &frames(BROADCAST)[0];
    let packet = decode_ok(frame, &Auth::Null);
    let auth = Auth::simple(b"pw");
    let bytes = packet.encode(&auth, 0);
    assert_eq!(&bytes[16..24], b"pw\0\0\0\0\0\0");
    assert_eq!(decode(&bytes, &auth).unwrap().0, packet);
    assert_eq!(
        decode(&bytes, &Auth::simple(b"px")).unwrap_err(),
        DecodeError::Auth(AuthError::Password)
    );
}

#[test]
fn debug_output_never_shows_a_password_or_key() {
    let simple = format!("{:?}", Auth::simple(b"pw"));
    assert_eq!(simple, "Simple(<redacted>)");
    let key = AuthKey::new(7, b"s3cret");
    let md5 = format!("{:?}", Auth::Md5(vec![key.clone()]));
    assert!(md5.contains("id: 7") && md5.contains("<redacted>"), "{md5}");
    // The bytes of "s3cret" as a derived Debug of the key array would print them.
    for shown in [md5, format!("{key:?}"), format!("{key:#?}")] {
        assert!(
            !shown.contains("115, 51") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}

#[test]
fn malformed_packets_are_errors_not_panics() {
    let good = frames(BROADCAST)[0].payload.clone();
    assert_eq!(
        decode(&good[..10], &Auth::Null),
        Err(DecodeError::Truncated)
    );
    let mut v3 = good.clone();
    v3[0] = 3;
    assert_eq!(decode(&v3, &Auth::Null), Err(DecodeError::Version(3)));
    let mut t9 = good.clone();
    t9[1] = 9;
    assert_eq!(decode(&t9, &Auth::Null), Err(DecodeError::UnknownType(9)));
    let mut long = good.clone();
    long[3] = 200;
    assert_eq!(decode(&long, &Auth::Null), Err(DecodeError::Truncated));
    let mut short = good.clone();
    short[3] = 10;
    assert_eq!(decode(&short, &Auth::Null), Err(DecodeError::BadLength(10)));
    let mut flipped = good.clone();
    flipped[30] ^= 1;
    assert_eq!(decode(&flipped, &Auth::Null), Err(DecodeError::Checksum));

    // A hello body whose neighbour list is not whole: fix the length and checksum so only
    // the body is at fault.
    let mut odd = good[..good.len() - 2].to_vec();
    let len = odd.len() as u16;
    odd[2..4].copy_from_slice(&len.to_be_bytes());
    reseal(&mut odd);
    assert_eq!(decode(&odd, &Auth::Null), Err(DecodeError::Body("hello")));

    // An LSU whose LSA length runs past the packet.
    let mut lsu = frames(BROADCAST)[2].payload.clone();
    lsu[24 + 4 + 19] = 0xff;
    reseal(&mut lsu);
    assert_eq!(decode(&lsu, &Auth::Null), Err(DecodeError::Body("lsu")));

    // Every truncation of every captured packet, and random byte flips, never panic.
    for frame in frames(BROADCAST) {
        for n in 0..frame.payload.len() {
            let _ = decode(&frame.payload[..n], &Auth::Null);
            let mut flipped = frame.payload.clone();
            flipped[n] = flipped[n].wrapping_add(0x5a);
            if n >= 2 {
                reseal(&mut flipped);
            }
            let _ = decode(&flipped, &Auth::Null);
        }
    }
}

#[test]
fn an_lsa_with_a_bad_checksum_is_dropped_alone() {
    let mut lsu = frames(BROADCAST)[30].payload.clone();
    // Second LSA's body: first LSA is 48 bytes at offset 28.
    lsu[28 + 48 + 25] ^= 0xff;
    reseal(&mut lsu);
    let Body::LsUpdate(update) = decode(&lsu, &Auth::Null).unwrap().0.body else {
        panic!("an LSU")
    };
    assert_eq!(update.lsas.len(), 4);
    assert_eq!(update.lsas[1], Err(LsaError::Checksum));
    assert!(update.lsas[0].is_ok() && update.lsas[2].is_ok() && update.lsas[3].is_ok());
}

/// Recomputes the header checksum after a test edits a packet.
pub(crate) fn reseal(packet: &mut [u8]) {
    packet[12..14].fill(0);
    let sum = checksum(packet);
    packet[12..14].copy_from_slice(&sum.to_be_bytes());
}
