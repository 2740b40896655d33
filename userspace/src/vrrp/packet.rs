//! VRRP advertisements on the wire: VRRPv2 (RFC 3768, IPv4, no authentication) and VRRPv3
//! (RFC 5798 / RFC 9568, IPv4 and IPv6), plus the IPv4 header portier writes itself.
//!
//! Decoding performs the per-packet checks of RFC 5798 §7.1 that need nothing but the packet
//! (TTL, version, type, length, address count, checksum); the checks that need the instance
//! (VRID, address owner, interval) live in [`super::machine`]. Every failure is a [`Drop`]
//! reason so it can be counted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Adverts must be sent with, and received with, TTL / hop limit 255 (RFC 5798 §5.1.1.3).
pub const TTL: u8 = 255;
/// Precedence "internetwork control", as keepalived sends.
const TOS: u8 = 0xc0;
const TYPE_ADVERTISEMENT: u8 = 1;
const V2_AUTH_DATA_LEN: usize = 8;
/// Largest v3 interval: the field has 12 bits of centiseconds.
pub const MAX_INTERVAL_CS_V3: u16 = 0x0fff;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// How the IPv4 VRRPv3 checksum is computed. RFC 5798 includes the pseudo-header; some early
/// implementations did not, so it is configurable. VRRPv2 never includes it, IPv6 always does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Checksum {
    WithPseudoHeader,
    VrrpOnly,
}

/// One advertisement, independent of its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Max_Adver_Int in centiseconds (v2 carries whole seconds: multiples of 100).
    pub interval_cs: u16,
    pub addresses: Vec<IpAddr>,
}

/// Why a received packet was dropped; each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    /// Shorter than its headers or its address count says.
    Truncated,
    /// Not an unfragmented IPv4 packet carrying protocol 112.
    BadIpHeader,
    /// TTL / hop limit other than 255: it was routed, so it is not from this link.
    Ttl,
    Version,
    Type,
    /// Zero addresses (v3), or a count that does not match the packet length.
    AddressCount,
    Checksum,
    /// VRRPv2 authentication other than none (RFC 3768 deprecates it; keepalived 2 sends none).
    AuthType,
    /// No instance with this VRID here.
    Vrid,
    /// We own the addresses (priority 255): adverts of others are a misconfiguration.
    Owner,
    /// VRRPv2 interval different from ours (RFC 3768 §7.1).
    Interval,
    /// Wrong address family for the instance.
    Family,
    /// Unicast peers are configured and the source is not one of them (as keepalived).
    UnicastPeer,
}

impl Drop {
    pub const ALL: [Drop; 13] = [
        Drop::Truncated,
        Drop::BadIpHeader,
        Drop::Ttl,
        Drop::Version,
        Drop::Type,
        Drop::AddressCount,
        Drop::Checksum,
        Drop::AuthType,
        Drop::Vrid,
        Drop::Owner,
        Drop::Interval,
        Drop::Family,
        Drop::UnicastPeer,
    ];

    /// Label used in /status and /metrics.
    pub fn name(self) -> &'static str {
        match self {
            Drop::Truncated => "truncated",
            Drop::BadIpHeader => "bad_ip_header",
            Drop::Ttl => "ttl",
            Drop::Version => "version",
            Drop::Type => "type",
            Drop::AddressCount => "address_count",
            Drop::Checksum => "checksum",
            Drop::AuthType => "auth_type",
            Drop::Vrid => "vrid",
            Drop::Owner => "owner",
            Drop::Interval => "interval",
            Drop::Family => "family",
            Drop::UnicastPeer => "unicast_peer",
        }
    }
}

/// A decoded advert with what the IP layer said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub advert: Advert,
}

/// What the receiving instance expects, for the checks that depend on configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub version: Version,
    pub checksum: Checksum,
}

/// The VRRP message (IP payload) for `advert` sent from `src` to `dst`.
pub fn encode(advert: &Advert, src: IpAddr, dst: IpAddr, checksum: Checksum) -> Vec<u8> {
    let count = u8::try_from(advert.addresses.len()).unwrap_or(u8::MAX);
    let mut out = Vec::with_capacity(8 + advert.addresses.len() * 16 + V2_AUTH_DATA_LEN);
    out.push(advert.version.number() << 4 | TYPE_ADVERTISEMENT);
    out.push(advert.vrid);
    out.push(advert.priority);
    out.push(count);
    match advert.version {
        Version::V2 => {
            out.push(0); // authentication: none
            out.push(u8::try_from(advert.interval_cs / 100).unwrap_or(u8::MAX));
        }
        Version::V3 => {
            let interval = advert.interval_cs.min(MAX_INTERVAL_CS_V3);
            out.extend_from_slice(&interval.to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0]);
    for address in advert.addresses.iter().take(usize::from(count)) {
        match address {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
        }
    }
    if advert.version == Version::V2 {
        out.extend_from_slice(&[0; V2_AUTH_DATA_LEN]);
    }
    let sum = vrrp_checksum(&out, src, dst, advert.version, checksum);
    out[6..8].copy_from_slice(&sum.to_be_bytes());
    out
}

/// A whole IPv4 packet around `payload`, as keepalived sends it (TOS 0xc0, no DF, TTL 255).
/// Sent through an `IP_HDRINCL` socket so TTL, TOS and the source are ours, not the route's.
pub fn encode_ipv4(payload: &[u8], src: Ipv4Addr, dst: Ipv4Addr, ident: u16) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(usize::from(total));
    out.extend_from_slice(&[0x45, TOS]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&ident.to_be_bytes());
    out.extend_from_slice(&[0, 0, TTL, PROTOCOL, 0, 0]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    let sum = finish(sum_words(&out, 0));
    out[10..12].copy_from_slice(&sum.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes an IPv4 packet as a raw socket hands it over (IP header included).
pub fn decode_ipv4(packet: &[u8], expect: Expect) -> Result<Received, Drop> {
    if packet.len() < 20 {
        return Err(Drop::Truncated);
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let fragmented = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0;
    if packet[0] >> 4 != 4 || ihl < 20 || packet[9] != PROTOCOL || fragmented {
        return Err(Drop::BadIpHeader);
    }
    if total < ihl || packet.len() < total {
        return Err(Drop::Truncated);
    }
    if packet[8] != TTL {
        return Err(Drop::Ttl);
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let advert = decode(&packet[ihl..total], src.into(), dst.into(), expect)?;
    Ok(Received {
        src: src.into(),
        dst: dst.into(),
        advert,
    })
}

/// Decodes an IPv6 VRRP message; the kernel strips the IPv6 header, so the hop limit and the
/// addresses come from ancillary data.
pub fn decode_ipv6(
    payload: &[u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    expect: Expect,
) -> Result<Received, Drop> {
    if hop_limit != TTL {
        return Err(Drop::Ttl);
    }
    let advert = decode(payload, src.into(), dst.into(), expect)?;
    Ok(Received {
        src: src.into(),
        dst: dst.into(),
        advert,
    })
}

/// Decodes a VRRP message sent from `src` to `dst` (both needed for the v3 checksum).
pub fn decode(message: &[u8], src: IpAddr, dst: IpAddr, expect: Expect) -> Result<Advert, Drop> {
    if message.len() < 8 {
        return Err(Drop::Truncated);
    }
    let version = match message[0] >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        _ => return Err(Drop::Version),
    };
    if version != expect.version {
        return Err(Drop::Version);
    }
    if message[0] & 0x0f != TYPE_ADVERTISEMENT {
        return Err(Drop::Type);
    }
    let count = usize::from(message[3]);
    let address_len = if src.is_ipv4() { 4 } else { 16 };
    if version == Version::V2 && src.is_ipv6() {
        return Err(Drop::Version);
    }
    let trailer = if version == Version::V2 {
        V2_AUTH_DATA_LEN
    } else {
        0
    };
    if count == 0 {
        return Err(Drop::AddressCount);
    }
    let needed = 8 + count * address_len + trailer;
    if message.len() < needed {
        return Err(Drop::Truncated);
    }
    // The IP length bounds the message exactly (Ethernet padding is already gone), so extra
    // bytes mean the count lies.
    if message.len() > needed {
        return Err(Drop::AddressCount);
    }
    let checksum_mode = expect.checksum;
    if vrrp_checksum(message, src, dst, version, checksum_mode) != 0 {
        return Err(Drop::Checksum);
    }
    let interval_cs = match version {
        Version::V2 => {
            if message[4] != 0 {
                return Err(Drop::AuthType);
            }
            u16::from(message[5]) * 100
        }
        Version::V3 => u16::from_be_bytes([message[4], message[5]]) & MAX_INTERVAL_CS_V3,
    };
    let addresses = message[8..8 + count * address_len]
        .chunks_exact(address_len)
        .map(|chunk| match <[u8; 4]>::try_from(chunk) {
            Ok(v4) => IpAddr::from(v4),
            Err(_) => {
                let mut v6 = [0u8; 16];
                v6.copy_from_slice(chunk);
                IpAddr::from(v6)
            }
        })
        .collect();
    Ok(Advert {
        version,
        vrid: message[1],
        priority: message[2],
        interval_cs,
        addresses,
    })
}

/// The checksum field's value for `message` (with its checksum field zero), or 0 when
/// verifying a message whose checksum is right.
fn vrrp_checksum(
    message: &[u8],
    src: IpAddr,
    dst: IpAddr,
    version: Version,
    mode: Checksum,
) -> u16 {
    let len = message.len();
    let pseudo = match (version, src, dst, mode) {
        (Version::V2, _, _, _) => 0,
        (Version::V3, IpAddr::V4(s), IpAddr::V4(d), Checksum::WithPseudoHeader) => {
            let mut header = Vec::with_capacity(12);
            header.extend_from_slice(&s.octets());
            header.extend_from_slice(&d.octets());
            header.extend_from_slice(&[0, PROTOCOL]);
            header.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
            sum_words(&header, 0)
        }
        (Version::V3, IpAddr::V4(_), _, Checksum::VrrpOnly) => 0,
        (Version::V3, s, d, _) => {
            let (s, d) = (v6_octets(s), v6_octets(d));
            let mut header = Vec::with_capacity(40);
            header.extend_from_slice(&s);
            header.extend_from_slice(&d);
            header.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            header.extend_from_slice(&[0, 0, 0, PROTOCOL]);
            sum_words(&header, 0)
        }
    };
    finish(sum_words(message, pseudo))
}

fn v6_octets(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// One's-complement sum of 16-bit words (RFC 1071), odd byte padded with zero.
fn sum_words(bytes: &[u8], start: u32) -> u32 {
    let mut sum = start;
    let mut chunks = bytes.chunks_exact(2);
    for word in &mut chunks {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn finish(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
