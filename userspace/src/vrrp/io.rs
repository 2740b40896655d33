//! Sockets at the edge of the VRRP part: the raw IP protocol 112 socket adverts go through,
//! and the sockets that announce a new master (gratuitous ARP, unsolicited NA).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::announce::{self, Mac};
use super::packet::{self, Drop, Expect, Received};

/// Largest packet read: an IPv4 header with options plus 255 IPv6 addresses fits.
const RECV_BUFFER: usize = 4200;

/// One instance's advert socket, bound to its interface.
pub struct AdvertSocket {
    socket: AsyncFd<Socket>,
    ipv6: bool,
    ifindex: u32,
}

impl AdvertSocket {
    /// `multicast`: join the VRRP group (not needed with unicast peers only).
    pub fn open(interface: &str, ifindex: u32, ipv6: bool, multicast: bool) -> io::Result<Self> {
        let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
        let socket = Socket::new(
            domain,
            Type::RAW,
            Some(Protocol::from(i32::from(packet::PROTOCOL))),
        )?;
        socket.set_nonblocking(true)?;
        // Only this interface's adverts, and ours leave only through it.
        socket.bind_device(Some(interface.as_bytes()))?;
        if ipv6 {
            socket.set_multicast_hops_v6(u32::from(packet::TTL))?;
            socket.set_unicast_hops_v6(u32::from(packet::TTL))?;
            socket.set_multicast_if_v6(ifindex)?;
            socket.set_multicast_loop_v6(false)?;
            setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?;
            setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true)?;
            if multicast {
                socket.join_multicast_v6(&packet::MULTICAST_V6, ifindex)?;
            }
        } else {
            // We write the IP header: TTL 255, TOS and the source are then ours for sure.
            socket.set_header_included_v4(true)?;
            socket.set_multicast_loop_v4(false)?;
            if multicast {
                socket.join_multicast_v4_n(
                    &packet::MULTICAST_V4,
                    &InterfaceIndexOrAddress::Index(ifindex),
                )?;
            }
        }
        // SAFETY: the socket owns its descriptor, and AsyncFd owns the socket for its whole
        // life, so the descriptor stays open and the same.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
        Ok(Self {
            socket,
            ipv6,
            ifindex,
        })
    }

    /// The next packet, decoded: `Err(Drop)` for one that failed a packet check.
    pub async fn recv(&self, expect: Expect) -> io::Result<Result<Received, Drop>> {
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            let mut guard = self.socket.readable().await?;
            let result = guard.try_io(|fd| {
                if self.ipv6 {
                    recv_v6(fd.get_ref(), &mut buf, expect)
                } else {
                    let n = recv_plain(fd.get_ref(), &mut buf)?;
                    Ok(packet::decode_ipv4(&buf[..n], expect))
                }
            });
            match result {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends a VRRP message. IPv4: `message` is the whole IP packet (header included).
    pub fn send(&self, message: &[u8], src: IpAddr, dst: IpAddr) -> io::Result<()> {
        match (src, dst) {
            (_, IpAddr::V4(dst)) => {
                self.socket
                    .get_ref()
                    .send_to(message, &SockAddr::from(SocketAddrV4::new(dst, 0)))?;
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: src.octets(),
                    },
                    ipi6_ifindex: self.ifindex,
                };
                let scope = if dst.is_unicast_link_local() || dst.is_multicast() {
                    self.ifindex
                } else {
                    0
                };
                let to = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, scope));
                sendmsg(
                    self.socket.get_ref().as_raw_fd(),
                    &[IoSlice::new(message)],
                    &[ControlMessage::Ipv6PacketInfo(&info)],
                    MsgFlags::empty(),
                    Some(&to),
                )?;
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "IPv4 source for an IPv6 destination",
                ));
            }
        }
        Ok(())
    }
}

fn recv_plain(socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: u8 and MaybeUninit<u8> share their layout; recv only writes into the buffer.
    let uninit = unsafe {
        std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<MaybeUninit<u8>>(), buf.len())
    };
    socket.recv(uninit)
}

fn recv_v6(socket: &Socket, buf: &mut [u8], expect: Expect) -> io::Result<Result<Received, Drop>> {
    let mut space = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn6>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    let len = msg.bytes;
    let src = msg.address.map(|a| a.ip());
    let mut dst = None;
    let mut hop_limit = None;
    for cmsg in msg.cmsgs()? {
        match cmsg {
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
            }
            ControlMessageOwned::Ipv6HopLimit(limit) => hop_limit = u8::try_from(limit).ok(),
            _ => {}
        }
    }
    let (Some(src), Some(dst)) = (src, dst) else {
        return Ok(Err(Drop::BadIpHeader));
    };
    // A missing hop limit reads as 0, which the decoder drops as a TTL failure.
    Ok(packet::decode_ipv6(
        &buf[..len],
        src,
        dst,
        hop_limit.unwrap_or(0),
        expect,
    ))
}

/// Sends gratuitous ARPs and unsolicited NAs out of one interface.
pub struct Announcer {
    packet: OwnedFd,
    icmp6: Option<Socket>,
    ifindex: u32,
    mac: Mac,
}

impl Announcer {
    pub fn open(ifindex: u32, mac: Mac, ipv6: bool) -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked and owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let packet = unsafe { OwnedFd::from_raw_fd(fd) };
        let icmp6 = if ipv6 {
            let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
            // ND messages are only accepted with hop limit 255 (RFC 4861 §7.1.2).
            s.set_multicast_hops_v6(255)?;
            s.set_multicast_if_v6(ifindex)?;
            s.set_multicast_loop_v6(false)?;
            Some(s)
        } else {
            None
        };
        Ok(Self {
            packet,
            icmp6,
            ifindex,
            mac,
        })
    }

    pub fn gratuitous_arp(&self, vip: Ipv4Addr) -> io::Result<()> {
        let frame = announce::gratuitous_arp(self.mac, vip);
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = i32::try_from(self.ifindex).unwrap_or(0);
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&announce::BROADCAST);
        // SAFETY: frame and address outlive the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.packet.as_fd().as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn unsolicited_na(&self, src: Ipv6Addr, vip: Ipv6Addr) -> io::Result<()> {
        let Some(socket) = &self.icmp6 else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "announcer opened for IPv4 only",
            ));
        };
        let message = announce::unsolicited_na(self.mac, vip);
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: src.octets(),
            },
            ipi6_ifindex: self.ifindex,
        };
        let to = SockaddrIn6::from(SocketAddrV6::new(announce::ALL_NODES, 0, 0, self.ifindex));
        sendmsg(
            socket.as_raw_fd(),
            &[IoSlice::new(&message)],
            &[ControlMessage::Ipv6PacketInfo(&info)],
            MsgFlags::empty(),
            Some(&to),
        )?;
        Ok(())
    }
}
