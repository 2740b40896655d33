//! The RFC 5798 §7.1 receive checks on a running node: packets that fail them, sent on the
//! wire from another namespace, are dropped (the master stays master) and counted per reason
//! in /status.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use portier_tests::netns;
use portier_tests::vrrp::{Kind, Lan, Router};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const FROM: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const TO: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// One's-complement sum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A priority-200 VRRPv3 advert (IPv4, pseudo-header checksum) from FROM to TO, as an IP
/// packet.
fn advert(version: u8, vrid: u8, ttl: u8) -> Vec<u8> {
    advert_from(FROM, 200, version, vrid, ttl)
}

fn advert_from(from: Ipv4Addr, priority: u8, version: u8, vrid: u8, ttl: u8) -> Vec<u8> {
    let mut vrrp = vec![
        version << 4 | 1,
        vrid,
        priority,
        1,
        0x00,
        0x32,
        0,
        0,
        10,
        77,
        0,
        100,
    ];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&from.octets());
    pseudo.extend_from_slice(&TO.octets());
    pseudo.extend_from_slice(&[0, 112, 0, vrrp.len() as u8]);
    pseudo.extend_from_slice(&vrrp);
    let sum = checksum(&pseudo);
    vrrp[6..8].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x45, 0xc0, 0, 0, 0, 0, 0, 0, ttl, 112, 0, 0];
    ip.extend_from_slice(&from.octets());
    ip.extend_from_slice(&TO.octets());
    ip.extend_from_slice(&vrrp);
    ip
}

#[test]
fn malformed_adverts_are_dropped_and_counted() {
    let mut lan = Lan::up("vkc").unwrap();
    let mut router = Router::new(Kind::Portier, 100, 3, 500);
    router.admin = true;
    lan.start("a", &router).unwrap();
    lan.wait_vip("a", true, Duration::from_secs(8)).unwrap();

    let mut bad_checksum = advert(3, 51, 255);
    bad_checksum[26] ^= 0xff; // inside the checksum field
    let mut truncated = advert(3, 51, 255);
    truncated.truncate(20 + 6);
    let mut bad_type = advert(3, 51, 255);
    bad_type[20] = 0x32;
    let packets = [
        ("ttl", advert(3, 51, 64)),
        ("checksum", bad_checksum),
        ("version", advert(2, 51, 255)),
        ("truncated", truncated),
        ("type", bad_type),
        ("vrid", advert(3, 52, 255)),
    ];
    send_from_client(
        &lan,
        &packets.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
    );

    // Counters reach /status within a publish period (500 ms): poll for them.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let instance = instance_status(&lan);
        let drops = &instance["counters"]["drops"];
        let missing: Vec<&str> = packets
            .iter()
            .map(|(reason, _)| *reason)
            .filter(|reason| drops[*reason].as_u64() != Some(1))
            .collect();
        if missing.is_empty() {
            // A priority-200 advert with a wrong VRID or TTL must not have moved the master.
            assert_eq!(instance["state"], "master", "{instance:#}");
            assert_eq!(instance["counters"]["adverts_received"], 0, "{instance:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not counted: {missing:?}\n{instance:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lan.has_vip("a").unwrap());
}

/// Raw packets (IP header included) from the client namespace to node a.
fn send_from_client(lan: &Lan, packets: &[Vec<u8>]) {
    netns::in_netns(&lan.ns("c"), || {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).unwrap();
        socket.set_header_included_v4(true).unwrap();
        let to = SockAddr::from(SocketAddrV4::new(TO, 0));
        for packet in packets {
            socket.send_to(packet, &to).unwrap();
        }
    })
    .unwrap();
}

/// Node a's first VRRP instance as `portier status --json` shows it.
fn instance_status(lan: &Lan) -> serde_json::Value {
    let status: serde_json::Value =
        serde_json::from_str(&lan.portier_status("a", true).unwrap()).unwrap();
    status["vrrp"]["instances"][0].clone()
}

/// With unicast peers configured, an otherwise valid advert from an unlisted source is
/// dropped and counted under its own reason (a priority-200 one would have taken the
/// master's place); one from a listed peer is heard.
#[test]
fn adverts_from_unlisted_unicast_sources_are_dropped() {
    let mut lan = Lan::up("vkp").unwrap();
    let mut router = Router::new(Kind::Portier, 100, 3, 500);
    router.admin = true;
    router.unicast_peers = vec!["10.77.0.2".into()];
    lan.start("a", &router).unwrap();
    lan.wait_vip("a", true, Duration::from_secs(8)).unwrap();

    let listed = Ipv4Addr::new(10, 77, 0, 2);
    send_from_client(
        &lan,
        &[advert(3, 51, 255), advert_from(listed, 50, 3, 51, 255)],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let instance = instance_status(&lan);
        let counters = &instance["counters"];
        if counters["drops"]["unicast_peer"] == 1 && counters["adverts_received"] == 1 {
            assert_eq!(instance["state"], "master", "{instance:#}");
            break;
        }
        assert!(Instant::now() < deadline, "not counted:\n{instance:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = lan.admin_get("a", "/metrics").unwrap();
    assert!(
        metrics.contains(
            "portier_vrrp_drops_total{instance=\"vip51\",vrid=\"51\",reason=\"unicast_peer\"} 1"
        ),
        "{metrics}"
    );
    assert!(lan.has_vip("a").unwrap());
}
