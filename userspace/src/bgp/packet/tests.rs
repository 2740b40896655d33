//! Codec tests: messages captured between FRR 8.4.4 and BIRD 2.0.12 (see
//! `../testdata/frr-bird-session.txt`), byte layouts written out from the RFCs, every
//! RFC 7606 error class, and random inputs.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::attr::flag;
use super::*;
use crate::bgp::prefix::Prefix;

const SESSION: &str = include_str!("../testdata/frr-bird-session.txt");

/// One captured message: connection number, sender (`frr` or `bird`), type name, bytes.
pub(crate) struct Captured {
    pub conn: u32,
    pub sender: &'static str,
    pub kind: &'static str,
    pub bytes: Vec<u8>,
}

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// The session between portier and FRR, taken by the interop test.
pub(crate) const PORTIER_SESSION: &str = include_str!("../testdata/frr-portier-session.txt");

pub(crate) fn captured() -> Vec<Captured> {
    captured_from(SESSION)
}

pub(crate) fn captured_from(text: &'static str) -> Vec<Captured> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace();
            let conn = f.next().unwrap().parse().unwrap();
            let sender = f.next().unwrap();
            let kind = f.next().unwrap();
            let bytes = hex(f.next().unwrap());
            Captured {
                conn,
                sender,
                kind,
                bytes,
            }
        })
        .collect()
}

/// The `i`-th captured message of `sender` and `kind`.
pub(crate) fn nth(sender: &str, kind: &str, i: usize) -> Vec<u8> {
    captured()
        .into_iter()
        .filter(|c| c.sender == sender && c.kind == kind)
        .nth(i)
        .unwrap_or_else(|| panic!("no {sender} {kind} #{i}"))
        .bytes
}

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn dec(bytes: &[u8]) -> Message {
    decode(bytes, Codec::FOUR_OCTET).unwrap_or_else(|e| panic!("{e}: {}", hexs(bytes)))
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn update(bytes: &[u8]) -> Update {
    match dec(bytes) {
        Message::Update(u) => u,
        m => panic!("not an update: {m:?}"),
    }
}

fn body_update(body: &[u8], codec: Codec) -> Result<Update, DecodeError> {
    let mut msg = MARKER.to_vec();
    msg.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    msg.push(msg_type::UPDATE);
    msg.extend_from_slice(body);
    match decode(&msg, codec)? {
        Message::Update(u) => Ok(u),
        m => panic!("{m:?}"),
    }
}

/// An UPDATE body with the given attribute bytes and IPv4 NLRI.
fn with_attrs(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0];
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    b
}

/// ORIGIN IGP, AS_PATH 64513 (4 octets), NEXT_HOP 10.0.0.11.
const BASE_ATTRS: &str = "400101 00 400206 0201 0000fc01 400304 0a00000b";
/// NLRI 203.0.113.10/32.
const VIP_NLRI: &str = "20 cb00710a";

#[test]
fn every_captured_message_decodes_and_reencodes() {
    let all = captured();
    assert_eq!(all.len(), 53);
    // BIRD's own connection lost the collision after its OPEN.
    let second: Vec<_> = all.iter().filter(|c| c.conn == 2).map(|c| c.kind).collect();
    assert_eq!(second, ["OPEN"]);
    for (i, c) in all.iter().enumerate() {
        let msg = dec(&c.bytes);
        assert_eq!(msg.name().replace('_', "-"), c.kind.to_lowercase(), "#{i}");
        let again = msg.encode(Codec::FOUR_OCTET);
        assert_eq!(dec(&again), msg, "#{i} {} {}", c.sender, c.kind);
        // FRR writes AS_PATH with the extended length bit and each capability in its own
        // optional parameter; everything else comes back byte for byte.
        let frr_style = c.sender == "frr"
            && match &msg {
                Message::Open(_) => true,
                Message::Update(u) => u.attrs.as_path.is_some(),
                _ => false,
            };
        if !frr_style {
            assert_eq!(hexs(&again), hexs(&c.bytes), "#{i} {} {}", c.sender, c.kind);
        }
        if let Message::Update(u) = &msg {
            assert!(
                u.treat_as_withdraw.is_empty() && u.discarded.is_empty(),
                "#{i}"
            );
        }
    }
}

/// What portier sent FRR re-encodes byte for byte, and FRR's side decodes.
#[test]
fn portier_frr_capture() {
    let all = captured_from(PORTIER_SESSION);
    assert_eq!(all.len(), 13);
    for (i, c) in all.iter().enumerate() {
        let msg = dec(&c.bytes);
        if c.sender == "portier" {
            assert_eq!(hexs(&msg.encode(Codec::FOUR_OCTET)), hexs(&c.bytes), "#{i}");
        }
    }
    let frr: Vec<&Captured> = all.iter().filter(|c| c.sender == "frr").collect();
    let Message::Open(o) = dec(&frr[0].bytes) else {
        panic!()
    };
    assert_eq!((o.asn(), o.hold_time), (64512, 9));
    assert_eq!(o.bgp_id, Ipv4Addr::new(10, 0, 0, 1));
    // Graceful restart (helper only): R and N, 120 s, no families.
    let gr = o.graceful_restart().unwrap();
    assert_eq!((gr.flags, gr.restart_time), (0xc, 120));
    assert!(gr.families.is_empty());
    assert_eq!(
        dec(&frr[2].bytes),
        Message::RouteRefresh(RouteRefresh::request(Family::IPV4_UNICAST))
    );
}

#[test]
fn frr_open() {
    let Message::Open(o) = dec(&nth("frr", "OPEN", 0)) else {
        panic!()
    };
    assert_eq!((o.my_as, o.hold_time), (64512, 30));
    assert_eq!(o.bgp_id, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(o.asn(), 64512);
    assert_eq!(o.four_octet_as(), Some(64512));
    assert_eq!(o.families(), [Family::IPV4_UNICAST, Family::IPV6_UNICAST]);
    assert!(o.route_refresh());
    let codes: Vec<u8> = o.capabilities.iter().map(Capability::code).collect();
    assert_eq!(codes, [1, 1, 128, 2, 70, 65, 6, 69, 73, 64, 71]);
    assert_eq!(
        o.graceful_restart(),
        Some(&GracefulRestart {
            flags: GracefulRestart::RESTART_STATE | GracefulRestart::NOTIFICATION,
            restart_time: 120,
            families: vec![(Family::IPV4_UNICAST, false), (Family::IPV6_UNICAST, false)],
        })
    );
    // The FQDN capability (73) is kept as it came: hostname "bc-r", no domain.
    assert!(o.capabilities.contains(&Capability::Unknown {
        code: 73,
        value: b"\x04bc-r\x00".to_vec()
    }));
    // FRR gives each of its 11 capabilities its own optional parameter (2 octets of header
    // each); we write them all in one, so the re-encoding is 10 headers shorter.
    let ours = Message::Open(o.clone()).encode(Codec::default());
    assert_eq!(ours.len(), nth("frr", "OPEN", 0).len() - 2 * 10);
}

#[test]
fn bird_open_with_one_capabilities_parameter() {
    let bytes = nth("bird", "OPEN", 0);
    let Message::Open(o) = dec(&bytes) else {
        panic!()
    };
    assert_eq!(
        (o.asn(), o.hold_time, o.bgp_id),
        (64513, 240, Ipv4Addr::new(10, 0, 0, 2))
    );
    let gr = o.graceful_restart().unwrap();
    assert_eq!((gr.flags, gr.restart_time, gr.families.len()), (0, 120, 0));
    assert_eq!(Message::Open(o).encode(Codec::default()), bytes);
}

#[test]
fn frr_ipv4_update_attributes() {
    let u = update(&nth("frr", "UPDATE", 0));
    let a = &u.attrs;
    assert_eq!(a.origin, Some(Origin::Igp));
    assert_eq!(a.as_path.as_ref().unwrap().to_string(), "64512 64512 64512");
    assert_eq!(a.next_hop, Some(Ipv4Addr::new(10, 79, 0, 1)));
    assert_eq!(a.med, Some(50));
    assert_eq!(
        a.communities,
        [Community::new(64512, 100), Community::NO_EXPORT]
    );
    assert_eq!(
        a.large_communities,
        [LargeCommunity {
            global: 64512,
            local1: 1,
            local2: 2
        }]
    );
    assert_eq!(u.nlri, [p("192.0.2.128/25"), p("198.51.100.0/24")]);
    assert!(u.withdrawn.is_empty() && a.mp_reach.is_none());
    assert_eq!(u.end_of_rib_family(), None);
}

#[test]
fn frr_ipv6_update_has_global_and_link_local_next_hop() {
    let u = update(&nth("frr", "UPDATE", 1));
    let mp = u.attrs.mp_reach.as_ref().unwrap();
    assert_eq!(mp.family, Family::IPV6_UNICAST);
    assert_eq!(
        mp.next_hop,
        NextHop::V6 {
            global: "fd00:79::1".parse().unwrap(),
            link_local: Some("fe80::c5a:40ff:fe91:56bf".parse().unwrap()),
        }
    );
    assert_eq!(mp.nlri, [p("2001:db8:100::/48")]);
    assert!(u.nlri.is_empty() && u.attrs.next_hop.is_none());
    assert_eq!(
        u.announced().copied().collect::<Vec<_>>(),
        [p("2001:db8:100::/48")]
    );
}

#[test]
fn end_of_rib_and_withdrawals() {
    assert_eq!(
        update(&nth("frr", "UPDATE", 2)).end_of_rib_family(),
        Some(Family::IPV4_UNICAST)
    );
    assert_eq!(
        update(&nth("frr", "UPDATE", 3)).end_of_rib_family(),
        Some(Family::IPV6_UNICAST)
    );
    let eor4 = Message::Update(Update::end_of_rib(Family::IPV4_UNICAST));
    assert_eq!(
        hexs(&eor4.encode(Codec::FOUR_OCTET)),
        hexs(&nth("frr", "UPDATE", 2))
    );
    let eor6 = Message::Update(Update::end_of_rib(Family::IPV6_UNICAST));
    assert_eq!(
        hexs(&eor6.encode(Codec::FOUR_OCTET)),
        hexs(&nth("frr", "UPDATE", 3))
    );
    // FRR withdraws 192.0.2.128/25, then 2001:db8:100::/48 by MP_UNREACH_NLRI.
    let w4 = update(&nth("frr", "UPDATE", 14));
    assert_eq!(w4.withdrawn, [p("192.0.2.128/25")]);
    assert_eq!(w4.end_of_rib_family(), None);
    let w6 = update(&nth("frr", "UPDATE", 15));
    assert_eq!(
        w6.withdrawn_all().copied().collect::<Vec<_>>(),
        [p("2001:db8:100::/48")]
    );
    assert_eq!(w6.end_of_rib_family(), None);
}

#[test]
fn bird_updates() {
    let u = update(&nth("bird", "UPDATE", 0));
    assert_eq!(u.nlri, [p("203.0.113.10/32")]);
    assert_eq!(u.attrs.as_path.as_ref().unwrap().to_string(), "64513");
    assert_eq!(u.attrs.communities, [Community::new(64513, 10)]);
    let u6 = update(&nth("bird", "UPDATE", 2));
    let mp = u6.attrs.mp_reach.as_ref().unwrap();
    assert_eq!(mp.nlri, [p("2001:db8:f::10/128")]);
    assert!(matches!(
        mp.next_hop,
        NextHop::V6 {
            link_local: Some(_),
            ..
        }
    ));
}

#[test]
fn notifications_with_shutdown_communication() {
    let Message::Notification(n) = dec(&nth("frr", "NOTIFICATION", 0)) else {
        panic!()
    };
    assert_eq!(
        (n.code, n.subcode),
        (code::CEASE, subcode::cease::ADMIN_SHUTDOWN)
    );
    assert_eq!(
        n.shutdown_communication().as_deref(),
        Some("\"maintenance: back at 18:00\"")
    );
    assert_eq!(
        n.to_string(),
        "Cease/Administrative Shutdown \"\\\"maintenance: back at 18:00\\\"\""
    );
    assert_eq!(
        Message::Notification(Notification::cease(
            subcode::cease::ADMIN_SHUTDOWN,
            Some("\"maintenance: back at 18:00\"")
        ))
        .encode(Codec::default()),
        nth("frr", "NOTIFICATION", 0)
    );
    let Message::Notification(b) = dec(&nth("bird", "NOTIFICATION", 0)) else {
        panic!()
    };
    assert_eq!(
        b.shutdown_communication().as_deref(),
        Some("upgrade to bird 3")
    );
    assert_eq!(
        b.to_string(),
        "Cease/Administrative Shutdown \"upgrade to bird 3\""
    );
    // Without text there is no data at all; the length octet cannot lie.
    assert!(Notification::cease(2, None).data.is_empty());
    assert!(Notification::cease(2, Some("")).data.is_empty());
    let liar = Notification::with_data(6, 2, vec![10, b'a']);
    assert_eq!(liar.shutdown_communication(), None);
    let not_utf8 = Notification::with_data(6, 4, vec![1, 0xff]);
    assert_eq!(not_utf8.shutdown_communication(), None);
    assert_eq!(
        Notification::with_data(6, 3, vec![1, b'x']).shutdown_communication(),
        None,
        "only Administrative Shutdown and Reset carry one"
    );
    // 255 octets at most, cut at a character boundary.
    let long = "é".repeat(200);
    let n = Notification::cease(4, Some(&long));
    assert_eq!(n.data[0], 254);
    assert_eq!(n.shutdown_communication().unwrap(), "é".repeat(127));
}

#[test]
fn route_refresh_and_enhanced_markers() {
    assert_eq!(
        dec(&nth("frr", "ROUTE-REFRESH", 0)),
        Message::RouteRefresh(RouteRefresh::request(Family::IPV4_UNICAST))
    );
    assert_eq!(
        dec(&nth("frr", "ROUTE-REFRESH", 1)),
        Message::RouteRefresh(RouteRefresh::request(Family::IPV6_UNICAST))
    );
    assert_eq!(
        dec(&nth("bird", "ROUTE-REFRESH", 0)),
        Message::RouteRefresh(RouteRefresh {
            family: Family::IPV4_UNICAST,
            subtype: 1
        })
    );
    // BoRR with trailing octets: ROUTE-REFRESH Message Error / Invalid Message Length, with
    // the whole message as data (RFC 7313 §5).
    let mut bad = nth("bird", "ROUTE-REFRESH", 0);
    bad.extend_from_slice(&[0, 0]);
    bad[17] = 25;
    let e = decode(&bad, Codec::default()).unwrap_err();
    assert_eq!(e.notification(), Notification::with_data(7, 1, bad.clone()));
    // A plain request may carry ORF entries (RFC 5291), which are ignored.
    let mut orf = nth("frr", "ROUTE-REFRESH", 0);
    orf.extend_from_slice(&[1, 0, 0]);
    orf[17] = 26;
    assert!(decode(&orf, Codec::default()).is_ok());
}

/// Our OPEN, written out from RFC 4271 §4.2 and RFC 5492 §4.
#[test]
fn open_layout() {
    let o = Open::new(
        64513,
        90,
        Ipv4Addr::new(10, 0, 0, 11),
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Multiprotocol(Family::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(64513),
        ],
    );
    let expected = hex(concat!(
        "ffffffffffffffffffffffffffffffff 0033 01", // marker, length 51, OPEN
        "04 fc01 005a 0a00000b",                    // version, AS, hold 90, identifier
        "16 02 14",                                 // 22 octets of parameters; capabilities, 20
        "01 04 0001 00 01",                         // multiprotocol IPv4 unicast
        "01 04 0002 00 01",                         // multiprotocol IPv6 unicast
        "02 00",                                    // route refresh
        "41 04 0000fc01",                           // four-octet AS 64513
    ));
    let m = Message::Open(o);
    assert_eq!(hexs(&m.encode(Codec::default())), hexs(&expected));
    assert_eq!(dec(&expected), m);

    // A four-octet AS: AS_TRANS in the 2-octet field (RFC 6793 §4.1).
    let big = Open::new(
        4_200_000_001,
        0,
        Ipv4Addr::new(10, 0, 0, 11),
        vec![Capability::FourOctetAs(4_200_000_001)],
    );
    assert_eq!(big.my_as, AS_TRANS);
    let bytes = Message::Open(big.clone()).encode(Codec::default());
    assert_eq!(hexs(&bytes[19..]), "045ba000000a00000b0802064104fa56ea01");
    let Message::Open(back) = dec(&bytes) else {
        panic!()
    };
    assert_eq!(back.asn(), 4_200_000_001);
    // Without any multiprotocol capability the peer speaks IPv4 unicast only.
    assert_eq!(back.families(), [Family::IPV4_UNICAST]);
    assert!(!back.route_refresh());
}

#[test]
fn open_with_extended_parameters_length() {
    // RFC 9072: 255, type 255, a 2-octet length, parameters with 2-octet lengths. Enough
    // unknown capabilities to need it.
    let caps: Vec<Capability> = (0..60)
        .map(|i| Capability::Unknown {
            code: 200,
            value: vec![i; 3],
        })
        .collect();
    let o = Open::new(64513, 90, Ipv4Addr::new(10, 0, 0, 11), caps);
    let bytes = Message::Open(o.clone()).encode(Codec::default());
    assert_eq!(&bytes[28..31], &[255, 255, 1]);
    assert_eq!(dec(&bytes), Message::Open(o));
}

#[test]
fn open_errors_name_their_notification() {
    let base = hex("ffffffffffffffffffffffffffffffff 001d 01 04 fc01 005a 0a00000b 00");
    assert!(decode(&base, Codec::default()).is_ok());
    let with = |i: usize, v: &[u8]| {
        let mut b = base.clone();
        b[i..i + v.len()].copy_from_slice(v);
        decode(&b, Codec::default()).map(|_| ())
    };
    let n = |r: Result<(), DecodeError>| r.unwrap_err().notification();
    assert_eq!(n(with(19, &[3])), Notification::with_data(2, 1, vec![0, 4]));
    assert_eq!(n(with(22, &[0, 1])), Notification::new(2, 6));
    assert_eq!(n(with(22, &[0, 2])), Notification::new(2, 6));
    assert!(with(22, &[0, 3]).is_ok());
    assert!(with(22, &[0, 0]).is_ok(), "hold time 0 is allowed");
    assert_eq!(n(with(24, &[0, 0, 0, 0])), Notification::new(2, 3));
    // Parameter length past the message, trailing octets, unsupported parameter type 1,
    // a capability overrunning its parameter, a short multiprotocol capability.
    let with_params = |params: &str| {
        let mut b = base.clone();
        let p = hex(params);
        b[28] = p.len() as u8;
        b.extend_from_slice(&p);
        b[17] = b.len() as u8;
        decode(&b, Codec::default()).map(|_| ())
    };
    assert_eq!(n(with(28, &[1])), Notification::new(2, 0));
    assert_eq!(n(with_params("01 02 0000")), Notification::new(2, 4));
    assert_eq!(n(with_params("02 03 0104")), Notification::new(2, 0));
    assert_eq!(n(with_params("02 04 0102 0001")), Notification::new(2, 0));
    assert_eq!(n(with_params("02 04 4102 0001")), Notification::new(2, 0));
    assert_eq!(n(with_params("02 02 4001")), Notification::new(2, 0));
    assert!(with_params("02 00").is_ok());
    assert!(
        with_params("02 03 020100").is_ok(),
        "route refresh value ignored"
    );
    let mut trailing = base.clone();
    trailing.push(0);
    trailing[17] += 1;
    assert_eq!(
        decode(&trailing, Codec::default())
            .unwrap_err()
            .notification(),
        Notification::new(2, 0)
    );
}

#[test]
fn header_errors_name_their_notification() {
    let ka = hex("ffffffffffffffffffffffffffffffff 0013 04");
    assert_eq!(decode(&ka, Codec::default()), Ok(Message::Keepalive));
    assert_eq!(
        Message::Keepalive.encode(Codec::default()),
        nth("frr", "KEEPALIVE", 0)
    );
    let n = |b: &[u8]| decode(b, Codec::default()).unwrap_err().notification();
    let mut bad = ka.clone();
    bad[3] = 0xfe;
    assert_eq!(n(&bad), Notification::new(1, 1));
    let mut short = ka.clone();
    short[17] = 18;
    assert_eq!(n(&short), Notification::with_data(1, 2, vec![0, 18]));
    let mut long_ka = ka.clone();
    long_ka.push(0);
    long_ka[17] = 20;
    assert_eq!(n(&long_ka), Notification::with_data(1, 2, vec![0, 20]));
    let mut huge = ka.clone();
    huge[16..18].copy_from_slice(&4097u16.to_be_bytes());
    assert_eq!(
        frame_len(huge[..19].try_into().unwrap()),
        Err(DecodeError::Length(4097))
    );
    let mut t = ka.clone();
    t[18] = 9;
    assert_eq!(n(&t), Notification::with_data(1, 3, vec![9]));
    // A message shorter than its type's minimum: OPEN below 29, UPDATE below 23,
    // NOTIFICATION below 21.
    for (ty, len) in [(1u8, 28u8), (2, 22), (3, 20), (5, 22)] {
        let mut m = ka.clone();
        m[18] = ty;
        m[17] = len;
        m.resize(usize::from(len), 0);
        assert_eq!(
            n(&m),
            Notification::with_data(1, 2, vec![0, len]),
            "type {ty}"
        );
    }
    // Length field and buffer disagree.
    let mut two = ka.clone();
    two.extend_from_slice(&ka);
    assert!(decode(&two, Codec::default()).is_err());
    assert!(decode(&ka[..10], Codec::default()).is_err());
}

/// What we announce for a VIP, written out from RFC 4271 §4.3 and RFC 1997 / 8092.
#[test]
fn ipv4_update_layout() {
    let u = Update {
        nlri: vec![p("203.0.113.10/32")],
        attrs: PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(vec![64513, 64513])),
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 11)),
            med: Some(10),
            communities: vec![Community::new(64513, 100)],
            large_communities: vec![LargeCommunity {
                global: 64513,
                local1: 0,
                local2: 7,
            }],
            ..PathAttrs::default()
        },
        ..Update::default()
    };
    let expected = hex(concat!(
        "ffffffffffffffffffffffffffffffff 0051 02",
        "0000",                                // no withdrawn routes
        "0035",                                // 53 octets of attributes
        "40 01 01 00",                         // ORIGIN IGP
        "40 02 0a 02 02 0000fc01 0000fc01",    // AS_PATH: one AS_SEQUENCE of two 4-octet ASNs
        "40 03 04 0a00000b",                   // NEXT_HOP
        "80 04 04 0000000a",                   // MULTI_EXIT_DISC 10
        "c0 08 04 fc010064",                   // COMMUNITIES 64513:100
        "c0 20 0c 0000fc01 00000000 00000007", // LARGE_COMMUNITY 64513:0:7
        "20 cb00710a",                         // NLRI 203.0.113.10/32
    ));
    let m = Message::Update(u);
    assert_eq!(hexs(&m.encode(Codec::FOUR_OCTET)), hexs(&expected));
    assert_eq!(dec(&expected), m);
}

/// An IPv6 VIP in MP_REACH_NLRI with a global and a link-local next hop (RFC 4760 §3,
/// RFC 2545 §3), and its withdrawal in MP_UNREACH_NLRI.
#[test]
fn ipv6_update_layout() {
    let global: Ipv6Addr = "2001:db8:a::11".parse().unwrap();
    let ll: Ipv6Addr = "fe80::1".parse().unwrap();
    let u = Update {
        attrs: PathAttrs {
            mp_reach: Some(MpReach {
                family: Family::IPV6_UNICAST,
                next_hop: NextHop::V6 {
                    global,
                    link_local: Some(ll),
                },
                nlri: vec![p("2001:db8:f::10/128")],
                opaque_nlri: Vec::new(),
            }),
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(vec![64513])),
            ..PathAttrs::default()
        },
        ..Update::default()
    };
    let expected = hex(concat!(
        "ffffffffffffffffffffffffffffffff 005e 02 0000 0047",
        "90 0e 0036 0002 01 20", // MP_REACH_NLRI, extended length; AFI 2 SAFI 1
        "20010db8000a00000000000000000011", // global next hop
        "fe800000000000000000000000000001", // link-local next hop
        "00",                    // reserved
        "80 20010db8000f00000000000000000010", // 2001:db8:f::10/128
        "40 01 01 00 40 02 06 02 01 0000fc01",
    ));
    let m = Message::Update(u);
    assert_eq!(hexs(&m.encode(Codec::FOUR_OCTET)), hexs(&expected));
    assert_eq!(dec(&expected), m);

    let w = Update {
        attrs: PathAttrs {
            mp_unreach: Some(MpUnreach {
                family: Family::IPV6_UNICAST,
                withdrawn: vec![p("2001:db8:f::10/128")],
                opaque_withdrawn: Vec::new(),
            }),
            ..PathAttrs::default()
        },
        ..Update::default()
    };
    assert_eq!(
        hexs(&Message::Update(w).encode(Codec::FOUR_OCTET)),
        hexs(&hex(concat!(
            "ffffffffffffffffffffffffffffffff 002f 02 0000 0018",
            "90 0f 0014 0002 01 80 20010db8000f00000000000000000010"
        )))
    );
}

#[test]
fn two_octet_speakers_get_as_trans_and_as4_path() {
    let u = Update {
        nlri: vec![p("203.0.113.10/32")],
        attrs: PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(vec![4_200_000_001, 64513])),
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 11)),
            ..PathAttrs::default()
        },
        ..Update::default()
    };
    let two = Codec::default();
    let bytes = Message::Update(u.clone()).encode(two);
    let body = &bytes[19..];
    // AS_PATH: 2-octet AS_TRANS (0x5ba0) then 64513; AS4_PATH (17) carries the real path.
    assert_eq!(
        hexs(body),
        "000000214001010040020602025ba0fc014003040a00000bc0110a0202fa56ea010000fc0120cb00710a"
    );
    let Message::Update(back) = decode(&bytes, two).unwrap() else {
        panic!()
    };
    assert_eq!(
        back.attrs.as_path.as_ref().unwrap().to_string(),
        "23456 64513"
    );
    assert_eq!(
        back.attrs.as4_path.as_ref().unwrap().to_string(),
        "4200000001 64513"
    );
    assert_eq!(Message::Update(back).encode(two), bytes);
    // Between four-octet speakers, AS4_PATH is not sent, and dropped when received.
    let four = Message::Update(u).encode(Codec::FOUR_OCTET);
    assert!(!hexs(&four).contains("c011"));
    let mut attrs = hex(BASE_ATTRS);
    attrs.extend_from_slice(&hex("c0 11 06 0201 0000fc01"));
    let got = body_update(&with_attrs(&attrs, &hex(VIP_NLRI)), Codec::FOUR_OCTET).unwrap();
    assert!(got.attrs.as4_path.is_none());
    assert_eq!(got.discarded.len(), 1);
    assert!(got.treat_as_withdraw.is_empty());
}

/// RFC 7606 §7 attribute by attribute: what is treat-as-withdraw, what is discarded, and
/// what still resets the session.
#[test]
fn revised_error_handling_per_attribute() {
    let four = Codec::FOUR_OCTET;
    // Replace the attribute with type `code` in BASE_ATTRS by `replacement` (or add it).
    let run = |extra: &str| {
        let mut attrs = hex(BASE_ATTRS);
        attrs.extend_from_slice(&hex(extra));
        body_update(&with_attrs(&attrs, &hex(VIP_NLRI)), four)
    };
    let taw = |extra: &str| {
        let u = run(extra).unwrap_or_else(|e| panic!("{extra}: {e}"));
        assert!(!u.treat_as_withdraw.is_empty(), "{extra}: {u:?}");
        assert_eq!(
            u.nlri,
            [p("203.0.113.10/32")],
            "{extra}: NLRI still located"
        );
        u.treat_as_withdraw
    };
    let discard = |extra: &str| {
        let u = run(extra).unwrap_or_else(|e| panic!("{extra}: {e}"));
        assert!(u.treat_as_withdraw.is_empty(), "{extra}: {u:?}");
        assert!(!u.discarded.is_empty(), "{extra}: {u:?}");
        u
    };
    let reset = |extra: &str| run(extra).unwrap_err().notification();

    assert!(run("").unwrap().treat_as_withdraw.is_empty());
    // MULTI_EXIT_DISC of 3 octets, LOCAL_PREF of 5, COMMUNITIES of 0 and 3 octets,
    // LARGE_COMMUNITY of 11, ORIGINATOR_ID of 3, CLUSTER_LIST of 2, extended communities of 7.
    for bad in [
        "80 04 03 000001",
        "40 05 05 0000000001",
        "c0 08 00",
        "c0 08 03 000001",
        "c0 20 0b 0000000000000000000000",
        "80 09 03 010203",
        "80 0a 02 0102",
        "c0 10 07 00000000000000",
    ] {
        assert!(matches!(taw(bad)[..], [AttrError::Length { .. }]), "{bad}");
    }
    // MULTI_EXIT_DISC flagged well-known; COMMUNITIES flagged non-transitive.
    assert_eq!(
        taw("40 04 04 00000001"),
        [AttrError::Flags {
            code: 4,
            flags: 0x40
        }]
    );
    assert_eq!(
        taw("80 08 04 fc010064"),
        [AttrError::Flags {
            code: 8,
            flags: 0x80
        }]
    );
    // ATOMIC_AGGREGATE with a value, AGGREGATOR of the wrong size: attribute discard.
    discard("40 06 01 00");
    discard("c0 07 06 fc01 0a00000b");
    let ok = run("c0 07 08 0000fc01 0a00000b").unwrap();
    assert_eq!(ok.attrs.other[0].code, 7);
    // Repeated attributes: the later ones are discarded.
    let u = discard("40 01 01 02");
    assert_eq!(u.attrs.origin, Some(Origin::Igp));
    assert_eq!(u.discarded, [AttrError::Repeated(1)]);
    // Unknown attributes: well-known resets (with the attribute as data), optional
    // transitive is kept with its flags, optional non-transitive is ignored.
    assert_eq!(
        reset("40 63 02 abcd"),
        Notification::with_data(3, 2, hex("40 63 02 abcd"))
    );
    let kept = run("e0 63 02 abcd 80 64 01 00").unwrap();
    assert_eq!(
        kept.attrs.other,
        [RawAttr {
            flags: 0xe0,
            code: 99,
            value: vec![0xab, 0xcd]
        }]
    );
    let again = Message::Update(kept.clone()).encode(four);
    assert!(hexs(&again).contains("e06302abcd") && !hexs(&again).contains("806401"));
    // The same attribute with an extended length field is the same attribute.
    let ext = run("d0 63 0002 abcd").unwrap();
    assert_eq!(ext.attrs.other[0].flags & !flag::EXTENDED_LENGTH, 0xc0);
}

#[test]
fn revised_error_handling_well_known_attributes() {
    let four = Codec::FOUR_OCTET;
    let origin = "400101 00";
    let path = "400206 0201 0000fc01";
    let nh = "400304 0a00000b";
    let go = |attrs: &str| body_update(&with_attrs(&hex(attrs), &hex(VIP_NLRI)), four);
    let taw = |attrs: &str| {
        let u = go(attrs).unwrap_or_else(|e| panic!("{attrs}: {e}"));
        assert_eq!(u.nlri.len(), 1);
        u.treat_as_withdraw
    };
    // ORIGIN: undefined value, wrong length, optional flag.
    assert_eq!(
        taw(&format!("400101 03 {path} {nh}")),
        [AttrError::Value {
            code: 1,
            what: "undefined ORIGIN"
        }]
    );
    assert_eq!(
        taw(&format!("400102 0000 {path} {nh}")),
        [AttrError::Length { code: 1, len: 2 }]
    );
    assert_eq!(
        taw(&format!("c00101 00 {path} {nh}")),
        [AttrError::Flags {
            code: 1,
            flags: 0xc0
        }]
    );
    // AS_PATH: zero-length segment, unknown segment type, segment overrun, and a 2-octet
    // path read as 4-octet (odd length).
    for bad in [
        "400202 0200",
        "400206 0501 0000fc01",
        "400206 0202 0000fc01",
        "400204 0201 fc01",
    ] {
        assert!(
            matches!(
                taw(&format!("{origin} {bad} {nh}"))[..],
                [AttrError::Value { code: 2, .. }]
            ),
            "{bad}"
        );
    }
    // NEXT_HOP: wrong length, 0.0.0.0, multicast, loopback.
    assert_eq!(
        taw(&format!("{origin} {path} 400305 0a00000b00")),
        [AttrError::Length { code: 3, len: 5 }]
    );
    for bad in ["00000000", "e0000005", "7f000001", "ffffffff"] {
        assert!(
            matches!(
                taw(&format!("{origin} {path} 400304 {bad}"))[..],
                [AttrError::Value { code: 3, .. }]
            ),
            "{bad}"
        );
    }
    // Missing well-known attributes (RFC 7606 §3 (d)).
    assert_eq!(taw(&format!("{path} {nh}")), [AttrError::Missing(1)]);
    assert_eq!(taw(&format!("{origin} {nh}")), [AttrError::Missing(2)]);
    assert_eq!(taw(&format!("{origin} {path}")), [AttrError::Missing(3)]);
    // Without NLRI nothing is missing (a withdrawal or End-of-RIB).
    let w = body_update(&hex("0005 20cb00710a 0000"), four).unwrap();
    assert!(w.treat_as_withdraw.is_empty());
    assert_eq!(w.withdrawn, [p("203.0.113.10/32")]);
}

#[test]
fn revised_error_handling_lengths_and_mp_attributes() {
    let four = Codec::FOUR_OCTET;
    let n = |body: &[u8]| body_update(body, four).unwrap_err().notification();
    // Withdrawn Routes Length and Total Path Attribute Length past the message: session
    // reset with Malformed Attribute List.
    assert_eq!(n(&hex("0009 20cb00710a 0000")), Notification::new(3, 1));
    assert_eq!(n(&hex("0000 0009 400101 00")), Notification::new(3, 1));
    assert_eq!(n(&hex("0000")), Notification::with_data(1, 2, vec![0, 21]));
    // The last attribute's length runs past the attribute list: treat-as-withdraw, and
    // the NLRI are found by the total length (RFC 7606 §4).
    let mut attrs = hex(BASE_ATTRS);
    attrs.extend_from_slice(&hex("c0 08 08 fc010064"));
    let u = body_update(&with_attrs(&attrs, &hex(VIP_NLRI)), four).unwrap();
    assert_eq!(u.treat_as_withdraw, [AttrError::Overrun]);
    assert_eq!(u.nlri, [p("203.0.113.10/32")]);
    // Two octets left over: fewer than an attribute header.
    let mut attrs = hex(BASE_ATTRS);
    attrs.extend_from_slice(&[0xc0, 0x08]);
    let u = body_update(&with_attrs(&attrs, &hex(VIP_NLRI)), four).unwrap();
    assert_eq!(u.treat_as_withdraw, [AttrError::Overrun]);
    // Invalid NLRI (prefix length 33, or truncated): Invalid Network Field.
    assert_eq!(
        n(&with_attrs(&hex(BASE_ATTRS), &hex("21 cb00710a00"))),
        Notification::new(3, 10)
    );
    assert_eq!(
        n(&with_attrs(&hex(BASE_ATTRS), &hex("20 cb0071"))),
        Notification::new(3, 10)
    );
    assert_eq!(n(&hex("0002 2001 0000")), Notification::new(3, 10));
    // MP_REACH_NLRI: bad next hop length, NLRI overrun, truncated; repeated; overrunning the
    // list; MP_UNREACH_NLRI truncated. All reset the session.
    let mp = |v: &str| {
        format!(
            "400101 00 400206 0201 0000fc01 900e {:04x} {v}",
            hex(v).len()
        )
    };
    let reach_nh = "0002 01 08 0000000000000000 00 80 20010db8000f00000000000000000010";
    assert!(matches!(
        body_update(&with_attrs(&hex(&mp(reach_nh)), &[]), four),
        Err(DecodeError::Update(UpdateError::OptionalAttribute {
            code: 14,
            ..
        }))
    ));
    assert_eq!(
        n(&with_attrs(&hex(&mp(reach_nh)), &[])).subcode,
        subcode::update::OPTIONAL_ATTRIBUTE
    );
    let reach_nlri = "0002 01 10 20010db8000a00000000000000000011 00 80 20010db8";
    assert_eq!(
        n(&with_attrs(&hex(&mp(reach_nlri)), &[])),
        Notification::new(3, 10)
    );
    assert_eq!(n(&with_attrs(&hex(&mp("0002")), &[])).subcode, 9);
    let good = "0002 01 10 20010db8000a00000000000000000011 00 80 20010db8000f00000000000000000010";
    let twice = format!("{} 900e {:04x} {good}", mp(good), hex(good).len());
    assert_eq!(n(&with_attrs(&hex(&twice), &[])), Notification::new(3, 1));
    assert_eq!(
        n(&with_attrs(&hex("400101 00 900e 0040 0002 01"), &[])),
        Notification::new(3, 1)
    );
    assert_eq!(n(&with_attrs(&hex("800f 01 00"), &[])).subcode, 9);
    // MP_REACH_NLRI flagged transitive.
    assert_eq!(
        n(&with_attrs(&hex("400101 00 c00e 05 0002 01 00 00"), &[])).subcode,
        9
    );
    // A good one, but without ORIGIN: treat-as-withdraw.
    let u = body_update(
        &with_attrs(
            &hex(&format!(
                "400206 0201 0000fc01 900e {:04x} {good}",
                hex(good).len()
            )),
            &[],
        ),
        four,
    )
    .unwrap();
    assert_eq!(u.treat_as_withdraw, [AttrError::Missing(1)]);
    // Families we do not parse pass through untouched (here IPv4 labeled unicast, SAFI 4).
    let other = "0001 04 04 0a00000b 00 38 000011 0a0000";
    let u = body_update(&with_attrs(&hex(&mp(other)), &[]), four).unwrap();
    let r = u.attrs.mp_reach.clone().unwrap();
    assert_eq!(r.family, Family { afi: 1, safi: 4 });
    assert_eq!(r.next_hop, NextHop::Other(hex("0a00000b")));
    assert_eq!(r.opaque_nlri, hex("38 000011 0a0000"));
    // Re-encoded with MP_REACH_NLRI first (RFC 7606 §5.1).
    let first = format!(
        "900e {:04x} {other} 400101 00 400206 0201 0000fc01",
        hex(other).len()
    );
    assert_eq!(
        hexs(&Message::Update(u).encode(four)[19..]),
        hexs(&with_attrs(&hex(&first), &[]))
    );
}

#[test]
fn community_and_prefix_text() {
    assert_eq!(
        "64512:100".parse::<Community>(),
        Ok(Community::new(64512, 100))
    );
    assert_eq!("no-export".parse::<Community>(), Ok(Community::NO_EXPORT));
    assert_eq!(Community::NO_EXPORT.to_string(), "no-export");
    assert_eq!(Community::new(1, 2).to_string(), "1:2");
    assert!("70000:1".parse::<Community>().is_err());
    assert!("1".parse::<Community>().is_err());
    let l: LargeCommunity = "64513:1:4294967295".parse().unwrap();
    assert_eq!(l.to_string(), "64513:1:4294967295");
    assert!("1:2".parse::<LargeCommunity>().is_err());
    assert!("1:2:3:4".parse::<LargeCommunity>().is_err());
}

/// A small deterministic generator, so failures reproduce.
pub(crate) struct XorShift(pub u64);

impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutated captures and random bytes: decoding returns, never panics, and whatever decodes
/// re-encodes to something that decodes to the same message.
#[test]
fn random_inputs_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<Vec<u8>> = captured().into_iter().map(|c| c.bytes).collect();
    let mut decoded = 0;
    for round in 0..40_000 {
        let mut m = seeds[round % seeds.len()].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(5) {
                0 if !m.is_empty() => {
                    let i = rng.below(m.len());
                    m[i] ^= 1 << rng.below(8);
                }
                1 if m.len() > 19 => {
                    let i = 19 + rng.below(m.len() - 19);
                    m[i] = rng.next() as u8;
                }
                2 => m.truncate(rng.below(m.len() + 1)),
                3 => {
                    let extra = rng.below(8);
                    for _ in 0..extra {
                        m.push(rng.next() as u8);
                    }
                }
                _ => {}
            }
        }
        // Keep the header's length consistent half of the time, so the bodies get parsed.
        if round % 2 == 0 && m.len() >= 19 && m.len() <= MAX_LEN {
            let l = m.len() as u16;
            m[16..18].copy_from_slice(&l.to_be_bytes());
        }
        for codec in [Codec::default(), Codec::FOUR_OCTET] {
            if let Ok(msg) = decode(&m, codec) {
                decoded += 1;
                let again = msg.encode(codec);
                let back = decode(&again, codec);
                // Re-encoding may legitimately differ (dropped attributes, normalised
                // lengths), but must decode again unless it grew past the maximum.
                if again.len() <= MAX_LEN {
                    let back = back.unwrap_or_else(|e| panic!("{e}: {}", hexs(&again)));
                    if let (Message::Update(a), Message::Update(b)) = (&msg, &back) {
                        assert_eq!(a.announced().count(), b.announced().count());
                    }
                }
            } else if let Err(e) = decode(&m, codec) {
                let _ = e.notification();
            }
        }
        let random: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        let _ = decode(&random, Codec::default());
        if random.len() >= 19 {
            let _ = frame_len(random[..19].try_into().unwrap());
        }
    }
    assert!(decoded > 5_000, "only {decoded} mutants decoded");
}

/// RFC 8538 §3: Hard Reset carries the real NOTIFICATION's code, subcode and data.
#[test]
fn hard_reset_wraps_the_real_notification() {
    let inner = Notification::cease(subcode::cease::ADMIN_SHUTDOWN, Some("bye"));
    let hr = Notification::hard_reset(&inner);
    assert_eq!(
        Message::Notification(hr.clone()).encode(Codec::default()),
        [
            &[0xff; 16][..],
            &[0, 27, 3, 6, 9, 6, 2, 3, b'b', b'y', b'e'][..]
        ]
        .concat()
    );
    assert_eq!(hr.hard_reset_inner(), Some(inner));
    assert_eq!(hr.shutdown_communication().as_deref(), Some("bye"));
    assert_eq!(
        hr.to_string(),
        "Cease/Hard Reset (Cease/Administrative Shutdown) \"bye\""
    );
    // Too short to hold a NOTIFICATION: shown as a bare Hard Reset.
    let bare = Notification::with_data(code::CEASE, subcode::cease::HARD_RESET, vec![6]);
    assert_eq!(bare.hard_reset_inner(), None);
    assert_eq!(bare.to_string(), "Cease/Hard Reset data 06");
    assert_eq!(
        Notification::new(code::CEASE, subcode::cease::BFD_DOWN).to_string(),
        "Cease/BFD Down"
    );
}

/// Our graceful restart capability (RFC 4724 §3) as FRR sends its own: R and N set, restart
/// time 120 s, IPv4 and IPv6 unicast with the forwarding bit.
#[test]
fn graceful_restart_capability_bytes() {
    let gr = Capability::GracefulRestart(GracefulRestart {
        flags: GracefulRestart::RESTART_STATE | GracefulRestart::NOTIFICATION,
        restart_time: 120,
        families: vec![(Family::IPV4_UNICAST, true), (Family::IPV6_UNICAST, true)],
    });
    let mut out = Vec::new();
    gr.encode(&mut out);
    assert_eq!(out, [64, 10, 0xc0, 120, 0, 1, 1, 0x80, 0, 2, 1, 0x80]);
    let mut back = Vec::new();
    Capability::decode_all(&out, &mut back).unwrap();
    assert_eq!(back, [gr]);
}
