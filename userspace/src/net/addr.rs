//! Interface addresses and link state through rtnetlink: what VRRP needs to find its source
//! address and to add and remove VIPs.

use futures::TryStreamExt;
use rtnetlink::Handle;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("no interface named {0}")]
    NoSuchLink(String),
}

/// One of our interfaces as VRRP sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// Administratively up and with carrier.
    pub up: bool,
}

pub async fn link_by_name(handle: &Handle, name: &str) -> Result<Link, AddrError> {
    let found = one_dump_at_a_time(|| async {
        let mut links = handle.link().get().match_name(name.to_owned()).execute();
        links.try_next().await
    })
    .await;
    let message = match found {
        Ok(Some(m)) => m,
        // The kernel answers ENODEV for an unknown name.
        Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => {
            return Err(AddrError::NoSuchLink(name.to_owned()));
        }
        Err(e) => return Err(e.into()),
    };
    let mac = message
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(a) => <[u8; 6]>::try_from(a.as_slice()).ok(),
            _ => None,
        })
        .unwrap_or_default();
    let flags = message.header.flags;
    Ok(Link {
        name: name.to_owned(),
        index: message.header.index,
        mac,
        up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running),
    })
}

/// Addresses on interface `index` with their prefix length.
pub async fn addresses(handle: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, AddrError> {
    Ok(messages(handle, index)
        .await?
        .iter()
        .filter_map(|m| address_of(m).map(|a| (a, m.header.prefix_len)))
        .collect())
}

async fn messages(handle: &Handle, index: u32) -> Result<Vec<AddressMessage>, AddrError> {
    Ok(one_dump_at_a_time(|| {
        handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
    })
    .await?)
}

/// The kernel refuses a dump (EBUSY) while another runs on the same socket, and VRRP's
/// instances share one socket and change state in the same instant: a backup once kept a VIP
/// because its removal's dump met its sibling's. Dumps here take turns. The lock alone is not
/// enough: the kernel queues a dump's last message a moment before it marks the dump over, so
/// a dump that still meets EBUSY is tried again, briefly.
async fn one_dump_at_a_time<T, F, Fut>(dump: F) -> Result<T, rtnetlink::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, rtnetlink::Error>>,
{
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    const TRIES: u32 = 50;
    let _turn = TURN.lock().await;
    let mut tries = 1;
    loop {
        match dump().await {
            Err(e) if is_busy(&e) && tries < TRIES => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            other => return other,
        }
    }
}

fn is_busy(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.code.map(|c| c.get()) == Some(-libc::EBUSY))
}

fn address_of(message: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS otherwise.
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(a) => Some(*a),
        _ => None,
    });
    local.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(a) => Some(*a),
            _ => None,
        })
    })
}

/// The first IPv4 address on the interface that is not one of `exclude` (the VIPs): adverts
/// are sent from it.
pub async fn primary_v4(
    handle: &Handle,
    index: u32,
    exclude: &[IpAddr],
) -> Result<Option<Ipv4Addr>, AddrError> {
    Ok(messages(handle, index)
        .await?
        .iter()
        .find_map(|m| match address_of(m) {
            Some(IpAddr::V4(a)) if !exclude.contains(&IpAddr::V4(a)) => Some(a),
            _ => None,
        }))
}

/// The interface's link-local IPv6 address: VRRPv3 over IPv6 is sent from it (RFC 5798 §5.1.2.1).
pub async fn link_local_v6(handle: &Handle, index: u32) -> Result<Option<Ipv6Addr>, AddrError> {
    Ok(messages(handle, index)
        .await?
        .iter()
        .find_map(|m| match (address_of(m), m.header.scope) {
            (Some(IpAddr::V6(a)), AddressScope::Link) => Some(a),
            _ => None,
        }))
}

/// Adds `address` as a host address (/32, /128); already present is fine. IPv6 skips DAD:
/// the VIP must answer at once, and the VRRP election already decided who owns it.
pub async fn add_host(handle: &Handle, index: u32, address: IpAddr) -> Result<(), AddrError> {
    if addresses(handle, index)
        .await?
        .iter()
        .any(|(a, _)| *a == address)
    {
        return Ok(());
    }
    let prefix = if address.is_ipv4() { 32 } else { 128 };
    let mut request = handle.address().add(index, address, prefix);
    if address.is_ipv6() {
        let message = request.message_mut();
        message.header.flags |= AddressHeaderFlags::Nodad;
        message
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    request.execute().await?;
    Ok(())
}

/// Removes `address` from the interface; absent is fine.
pub async fn remove(handle: &Handle, index: u32, address: IpAddr) -> Result<(), AddrError> {
    for message in messages(handle, index).await? {
        if address_of(&message) == Some(address) {
            handle.address().del(message).execute().await?;
        }
    }
    Ok(())
}

/// A macvlan `name` on `parent` with address `mac` (private mode: it talks to the LAN, not to
/// sibling macvlans), up, reused when it exists as wanted. It must never speak from `mac` on
/// its own: for IPv4 its IPv6 is off (no link-local address, router solicitations or DAD);
/// with `ipv6` it keeps IPv6 but generates no link-local address (the caller adds the one
/// it sends from), solicits no router and skips DAD.
pub async fn ensure_macvlan(
    handle: &Handle,
    name: &str,
    parent: u32,
    mac: [u8; 6],
    ipv6: bool,
) -> Result<Link, AddrError> {
    if let Ok(link) = link_by_name(handle, name).await {
        if link.mac == mac {
            set_up(handle, link.index).await?;
            return link_by_name(handle, name).await;
        }
        handle.link().del(link.index).execute().await?;
    }
    handle
        .link()
        .add(
            rtnetlink::LinkMacVlan::new(
                name,
                parent,
                rtnetlink::packet_route::link::MacVlanMode::Private,
            )
            .address(mac.to_vec())
            .build(),
        )
        .execute()
        .await?;
    // /proc/sys/net is the caller's network namespace. Set before the link goes up, when
    // the kernel would configure IPv6 on it.
    let settings: &[(&str, &str)] = if ipv6 {
        &[
            ("addr_gen_mode", "1"),
            ("accept_dad", "0"),
            ("accept_ra", "0"),
            ("router_solicitations", "0"),
        ]
    } else {
        &[("disable_ipv6", "1")]
    };
    for (key, value) in settings {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/{key}"), value);
    }
    let link = link_by_name(handle, name).await?;
    set_up(handle, link.index).await?;
    link_by_name(handle, name).await
}

pub async fn set_up(handle: &Handle, index: u32) -> Result<(), AddrError> {
    handle
        .link()
        .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await?;
    Ok(())
}

pub async fn delete_link(handle: &Handle, index: u32) -> Result<(), AddrError> {
    handle.link().del(index).execute().await?;
    Ok(())
}

/// Sets an IPv4 per-interface sysctl (`/proc/sys/net/ipv4/conf/<interface>/<key>`).
pub fn set_ipv4_conf(interface: &str, key: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(format!("/proc/sys/net/ipv4/conf/{interface}/{key}"), value)
}
