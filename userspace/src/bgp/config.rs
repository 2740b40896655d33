//! What a peer is configured with, and what is announced to it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::Serialize;

use super::packet::{Community, LargeCommunity};
use super::prefix::{Family, Prefix};

/// The routes to announce: every peer gets each of them (in the families it negotiated),
/// with the route's attributes merged with the peer's own [`PeerConfig::export`].
pub type Routes = BTreeMap<Prefix, RouteAttrs>;

/// Attributes of an announced route, or the fixed ones a peer adds to every route.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RouteAttrs {
    /// MULTI_EXIT_DISC; none when absent.
    pub med: Option<u32>,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
    /// How many extra times our AS is put in front of the AS_PATH (eBGP only).
    pub as_path_prepend: u8,
}

impl RouteAttrs {
    /// A route's attributes with a peer's added: communities of both (sorted, without
    /// duplicates), the route's MED or else the peer's, and both prepend counts.
    pub fn merged(&self, peer: &RouteAttrs) -> RouteAttrs {
        let mut communities: Vec<Community> = self
            .communities
            .iter()
            .chain(&peer.communities)
            .copied()
            .collect();
        communities.sort_unstable();
        communities.dedup();
        let mut large_communities: Vec<LargeCommunity> = self
            .large_communities
            .iter()
            .chain(&peer.large_communities)
            .copied()
            .collect();
        large_communities.sort_unstable();
        large_communities.dedup();
        RouteAttrs {
            med: self.med.or(peer.med),
            communities,
            large_communities,
            as_path_prepend: self.as_path_prepend.saturating_add(peer.as_path_prepend),
        }
    }
}

/// One BGP neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The neighbour's address: where we connect, and whom we accept connections from.
    pub address: IpAddr,
    /// The peer's TCP port when we connect (179).
    pub port: u16,
    pub remote_as: u32,
    pub local_as: u32,
    /// Our BGP identifier towards this peer.
    pub router_id: Ipv4Addr,
    /// Only accept connections, never connect.
    pub passive: bool,
    /// Proposed hold time in seconds: 0 (no keepalives) or at least 3.
    pub hold_time: u16,
    /// First wait before reconnecting; doubles after each failed attempt up to
    /// `connect_retry_max`, and starts over once a session is established.
    pub connect_retry: Duration,
    pub connect_retry_max: Duration,
    /// TCP MD5 signature (RFC 2385) key, at most 80 octets.
    pub md5_password: Option<String>,
    /// Source address of outgoing connections; the kernel's choice when absent.
    pub local_address: Option<IpAddr>,
    pub ipv4_unicast: bool,
    pub ipv6_unicast: bool,
    /// Attributes added to every route sent to this peer.
    pub export: RouteAttrs,
    /// NEXT_HOP of IPv4 routes; our address on the connection (next hop self) when absent.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Global IPv6 next hop; when absent, a global address of the interface the session
    /// runs on, plus its link-local address when the peer is on that link.
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Graceful restart (RFC 4724) as the restarting speaker, with this restart time in
    /// seconds (1 to 4095): our OPEN carries the capability with the forwarding bit for each
    /// family (the XDP dataplane keeps forwarding while the daemon is away) and the N bit
    /// (RFC 8538). None: no capability, a peer drops our routes as soon as the session ends.
    pub graceful_restart: Option<u16>,
}

/// Why a [`PeerConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("hold time {0} s: must be 0 or at least 3")]
    HoldTime(u16),
    #[error("router id 0.0.0.0 is not a BGP identifier")]
    RouterId,
    #[error("AS number 0 is reserved")]
    AsZero,
    #[error("MD5 password longer than 80 octets")]
    Md5Length,
    #[error("connect retry must be positive and not above its maximum")]
    ConnectRetry,
    #[error("local address {local} and peer {peer} are of different families")]
    LocalAddressFamily { local: IpAddr, peer: IpAddr },
    #[error("no address family enabled")]
    NoFamily,
    #[error("restart time {0} s: must be 1 to 4095")]
    RestartTime(u16),
}

impl PeerConfig {
    /// A peer with the defaults: active, hold time 90 s, reconnect after 5 s doubling up to
    /// 120 s, IPv4 and IPv6 unicast, next hop self, no extra attributes.
    pub fn new(address: IpAddr, remote_as: u32, local_as: u32, router_id: Ipv4Addr) -> Self {
        Self {
            address,
            port: super::packet::BGP_PORT,
            remote_as,
            local_as,
            router_id,
            passive: false,
            hold_time: 90,
            connect_retry: Duration::from_secs(5),
            connect_retry_max: Duration::from_secs(120),
            md5_password: None,
            local_address: None,
            ipv4_unicast: true,
            ipv6_unicast: true,
            export: RouteAttrs::default(),
            next_hop_v4: None,
            next_hop_v6: None,
            graceful_restart: None,
        }
    }

    pub fn is_ibgp(&self) -> bool {
        self.remote_as == self.local_as
    }

    /// The families we offer in the OPEN.
    pub fn families(&self) -> Vec<Family> {
        let mut out = Vec::new();
        if self.ipv4_unicast {
            out.push(Family::IPV4_UNICAST);
        }
        if self.ipv6_unicast {
            out.push(Family::IPV6_UNICAST);
        }
        out
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if matches!(self.hold_time, 1 | 2) {
            return Err(ConfigError::HoldTime(self.hold_time));
        }
        if self.router_id.is_unspecified() {
            return Err(ConfigError::RouterId);
        }
        if self.remote_as == 0 || self.local_as == 0 {
            return Err(ConfigError::AsZero);
        }
        if self.md5_password.as_ref().is_some_and(|p| p.len() > 80) {
            return Err(ConfigError::Md5Length);
        }
        if self.connect_retry.is_zero() || self.connect_retry > self.connect_retry_max {
            return Err(ConfigError::ConnectRetry);
        }
        if let Some(local) = self.local_address
            && local.is_ipv4() != self.address.is_ipv4()
        {
            return Err(ConfigError::LocalAddressFamily {
                local,
                peer: self.address,
            });
        }
        if !self.ipv4_unicast && !self.ipv6_unicast {
            return Err(ConfigError::NoFamily);
        }
        if let Some(t) = self.graceful_restart
            && !(1..=0x0fff).contains(&t)
        {
            return Err(ConfigError::RestartTime(t));
        }
        Ok(())
    }
}
