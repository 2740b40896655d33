//! What a new master sends so the LAN's caches point the VIPs at it: gratuitous ARP for IPv4,
//! unsolicited neighbour advertisements for IPv6 (RFC 5798 §6.4.1 / §6.4.2).

use std::net::{Ipv4Addr, Ipv6Addr};

pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
/// All-nodes multicast, where unsolicited NAs go (RFC 4861 §7.2.6).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The virtual router MAC 00-00-5E-00-01-{VRID} (IPv4) / 00-00-5E-00-02-{VRID} (IPv6).
pub fn virtual_mac(vrid: u8, ipv6: bool) -> Mac {
    [0x00, 0x00, 0x5e, 0x00, if ipv6 { 0x02 } else { 0x01 }, vrid]
}

/// The link-local address an IPv6 instance with a virtual MAC sends from on its macvlan: the
/// parent's with the universal/local bit of the interface identifier flipped. It must not be
/// the parent's own (the macvlan would answer neighbour solicitations for it with the virtual
/// MAC, stealing the parent's link-local traffic), and must differ between routers, which
/// their parents' addresses already do.
pub fn vmac_link_local(parent: Ipv6Addr) -> Ipv6Addr {
    let mut octets = parent.octets();
    octets[8] ^= 0x02;
    Ipv6Addr::from(octets)
}

/// A broadcast gratuitous ARP request for `vip`, the form keepalived sends (target MAC all
/// ones), as a whole Ethernet frame for an `AF_PACKET` socket.
pub fn gratuitous_arp(mac: Mac, vip: Ipv4Addr) -> [u8; 42] {
    let mut frame = [0u8; 42];
    frame[0..6].copy_from_slice(&BROADCAST);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    // Ethernet, IPv4, hardware length 6, protocol length 4, request.
    frame[14..22].copy_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&vip.octets());
    frame[32..38].copy_from_slice(&BROADCAST);
    frame[38..42].copy_from_slice(&vip.octets());
    frame
}

/// An unsolicited neighbour advertisement for `vip` (ICMPv6 message, override flag, target
/// link-layer address option). The checksum is left zero: the kernel fills it in on
/// `IPPROTO_ICMPV6` raw sockets.
pub fn unsolicited_na(mac: Mac, vip: Ipv6Addr) -> [u8; 32] {
    let mut message = [0u8; 32];
    message[0] = 136; // neighbour advertisement
    message[4] = 0x20; // override: replace what caches hold for the VIP
    message[8..24].copy_from_slice(&vip.octets());
    message[24] = 2; // option: target link-layer address
    message[25] = 1; // length in units of 8 bytes
    message[26..32].copy_from_slice(&mac);
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_macs_follow_rfc_5798_7_3() {
        assert_eq!(virtual_mac(51, false), [0, 0, 0x5e, 0, 1, 51]);
        assert_eq!(virtual_mac(7, true), [0, 0, 0x5e, 0, 2, 7]);
    }

    #[test]
    fn vmac_link_local_differs_from_the_parents_and_stays_link_local() {
        let parent: Ipv6Addr = "fe80::a8c1:abff:fe12:3456".parse().unwrap();
        let derived = vmac_link_local(parent);
        assert_eq!(
            derived,
            "fe80::aac1:abff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert!(derived.is_unicast_link_local());
        assert_eq!(vmac_link_local(derived), parent);
    }

    #[test]
    fn na_carries_target_and_link_address() {
        let mac = [2, 0, 0, 0, 0, 9];
        let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let na = unsolicited_na(mac, vip);
        assert_eq!(na[0], 136);
        assert_eq!(na[4] & 0xe0, 0x20, "only the override flag");
        assert_eq!(&na[8..24], &vip.octets());
        assert_eq!(&na[24..32], &[2, 1, 2, 0, 0, 0, 0, 9]);
    }
}
