//! Next hops of the balancer: which interface reaches a backend and the MAC address of the
//! backend (L2 DSR) or of the gateway towards it (IPIP), read from the kernel's routing and neighbour tables.

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug, thiserror::Error)]
pub enum NeighError {
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("no route to {0}")]
    NoRoute(IpAddr),
    #[error(
        "{addr} is reached through gateway {via}: L2 direct server return needs backends on a directly connected network"
    )]
    NotOnLink { addr: IpAddr, via: IpAddr },
    #[error("interface {0} has no MAC address")]
    NoLinkAddress(u32),
}

/// What the kernel knows about a backend now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The MAC is known and fresh enough to use.
    Known { ifindex: u32, mac: [u8; 6] },
    /// Known but STALE: usable, and worth re-verifying so a replaced host is noticed.
    Stale { ifindex: u32, mac: [u8; 6] },
    /// No usable entry (absent, INCOMPLETE or FAILED) on `ifindex`.
    Unknown { ifindex: u32 },
}

/// How the kernel would send to an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub ifindex: u32,
    /// `None`: on-link; the frame goes to the address itself.
    pub gateway: Option<IpAddr>,
}

impl Route {
    /// The neighbour whose MAC a frame towards the routed address carries.
    pub fn neighbour(&self, addr: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(addr)
    }

    /// L2 direct server return needs the host on the link: a routed one is an error.
    pub fn on_link(self, addr: IpAddr) -> Result<u32, NeighError> {
        match self.gateway {
            None => Ok(self.ifindex),
            Some(via) => Err(NeighError::NotOnLink { addr, via }),
        }
    }
}

/// The interface (and gateway, if any) the kernel would use for `addr`.
pub async fn route(handle: &Handle, addr: IpAddr) -> Result<Route, NeighError> {
    let prefix = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let msg = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(addr, prefix)
        .map_err(|_| NeighError::NoRoute(addr))?
        .build();
    let mut routes = handle.route().get(msg).execute();
    let Some(route) = routes.try_next().await? else {
        return Err(NeighError::NoRoute(addr));
    };
    let mut oif = None;
    let mut gateway = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(IpAddr::V4(*g)),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gateway = Some(IpAddr::V6(*g)),
            _ => {}
        }
    }
    let ifindex = oif.ok_or(NeighError::NoRoute(addr))?;
    Ok(Route { ifindex, gateway })
}

/// The interface the kernel would use for `addr`; refuses gateways (L2 DSR needs the host on
/// the link).
pub async fn route_ifindex(handle: &Handle, addr: IpAddr) -> Result<u32, NeighError> {
    route(handle, addr).await?.on_link(addr)
}

/// The MAC address of one of our interfaces.
pub async fn link_mac(handle: &Handle, ifindex: u32) -> Result<[u8; 6], NeighError> {
    let mut links = handle.link().get().match_index(ifindex).execute();
    while let Some(link) = links.try_next().await? {
        for attr in link.attributes {
            if let LinkAttribute::Address(a) = attr
                && let Ok(mac) = <[u8; 6]>::try_from(a.as_slice())
            {
                return Ok(mac);
            }
        }
    }
    Err(NeighError::NoLinkAddress(ifindex))
}

/// The neighbour table, one dump for all backends: (ifindex, address) -> what is known.
pub async fn dump(handle: &Handle) -> Result<HashMap<(u32, IpAddr), Lookup>, NeighError> {
    let mut table = HashMap::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let mut entries = handle.neighbours().get().set_family(version).execute();
        while let Some(n) = entries.try_next().await? {
            let ifindex = n.header.ifindex;
            let mut dst = None;
            let mut mac = None;
            for attr in &n.attributes {
                match attr {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        dst = Some(IpAddr::V4(*a))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        dst = Some(IpAddr::V6(*a))
                    }
                    NeighbourAttribute::LinkLocalAddress(l) => {
                        mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                    }
                    _ => {}
                }
            }
            let Some(dst) = dst else { continue };
            let lookup = match (n.header.state, mac) {
                (
                    NeighbourState::Reachable
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
                    | NeighbourState::Noarp,
                    Some(mac),
                ) => Lookup::Known { ifindex, mac },
                (NeighbourState::Stale, Some(mac)) => Lookup::Stale { ifindex, mac },
                _ => Lookup::Unknown { ifindex },
            };
            table.insert((ifindex, dst), lookup);
        }
    }
    Ok(table)
}

/// Asks the kernel to (re)resolve `addr` as if it had a packet for it (NTF_USE): an ARP or
/// neighbour solicitation goes out, and no packet of ours has to.
pub async fn solicit(handle: &Handle, ifindex: u32, addr: IpAddr) -> Result<(), NeighError> {
    handle
        .neighbours()
        .add(ifindex, addr)
        .flags(NeighbourFlags::Use)
        .state(NeighbourState::None)
        .replace()
        .execute()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routed_backends_go_to_the_gateway_and_dsr_refuses_them() {
        let host: IpAddr = "10.1.0.21".parse().unwrap();
        let gw: IpAddr = "10.0.0.1".parse().unwrap();
        let routed = Route {
            ifindex: 3,
            gateway: Some(gw),
        };
        assert_eq!(routed.neighbour(host), gw);
        let err = routed.on_link(host).unwrap_err().to_string();
        assert!(err.contains("through gateway 10.0.0.1"), "{err}");
        let direct = Route {
            ifindex: 3,
            gateway: None,
        };
        assert_eq!(direct.neighbour(host), host);
        assert_eq!(direct.on_link(host).unwrap(), 3);
    }
}
