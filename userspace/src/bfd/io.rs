//! The socket edge of BFD: one receiving socket per family on port 3784 that reports each
//! packet's source, interface and TTL, and one sending socket per session (bound to its
//! interface, a source port from 49152-65535, TTL 255). GTSM (RFC 5082, as RFC 5881 §5
//! requires): only packets that arrive with TTL 255 are looked at.

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::packet::{CONTROL_PORT, SOURCE_PORTS, TTL};

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("BFD {what}: {source}")]
    Socket {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BFD: interface {0} not found")]
    NoInterface(String),
    #[error("BFD: no free source port in 49152-65535 for {0}")]
    NoPort(SocketAddr),
}

fn err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> IoError {
    let what = what.into();
    move |source| IoError::Socket { what, source }
}

/// A received control packet.
#[derive(Debug)]
pub struct Rx {
    pub src: IpAddr,
    pub ifindex: u32,
    pub ttl: u8,
    pub data: Vec<u8>,
}

/// The receiving sockets' tasks; dropped, they stop.
pub struct Receivers {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Receivers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How many packets may wait for the part; more are dropped (and the peer's next one counts).
const QUEUE: usize = 1024;

/// Binds port 3784 for IPv4 and IPv6; received packets arrive on the returned channel.
pub fn listen() -> Result<(Receivers, mpsc::Receiver<Rx>), IoError> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let mut tasks = Vec::new();
    for v6 in [false, true] {
        let sock = receiver(v6)?;
        // SAFETY: the socket owns its fd, which is neither replaced nor closed while the
        // AsyncFd holds it.
        let fd = Arc::new(
            unsafe { AsyncFd::register(sock) }
                .map_err(|e| err("registering with tokio")(e.into_parts().1))?,
        );
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok(mut guard) = fd.readable().await else {
                    return;
                };
                match guard.try_io(|s| read_one(s.get_ref())) {
                    Ok(Ok(Some(p))) => {
                        if tx.try_send(p).is_err() && tx.is_closed() {
                            return;
                        }
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::debug!("bfd receive: {e}"),
                    Err(_would_block) => {}
                }
            }
        }));
    }
    Ok((Receivers { tasks }, rx))
}

fn receiver(v6: bool) -> Result<Socket, IoError> {
    let (domain, addr) = if v6 {
        (
            Domain::IPV6,
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), CONTROL_PORT),
        )
    } else {
        (
            Domain::IPV4,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), CONTROL_PORT),
        )
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(err("socket"))?;
    s.set_reuse_address(true).map_err(err("SO_REUSEADDR"))?;
    if v6 {
        s.set_only_v6(true).map_err(err("IPV6_V6ONLY"))?;
        setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true)
            .map_err(|e| err("IPV6_RECVHOPLIMIT")(e.into()))?;
        setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true)
            .map_err(|e| err("IPV6_RECVPKTINFO")(e.into()))?;
    } else {
        setsockopt(&s, sockopt::Ipv4RecvTtl, &true).map_err(|e| err("IP_RECVTTL")(e.into()))?;
        setsockopt(&s, sockopt::Ipv4PacketInfo, &true).map_err(|e| err("IP_PKTINFO")(e.into()))?;
    }
    s.set_nonblocking(true).map_err(err("nonblocking"))?;
    s.bind(&SockAddr::from(addr))
        .map_err(err(format!("bind {addr}")))?;
    Ok(s)
}

/// One datagram, or `None` for one without the ancillary data we need.
fn read_one(s: &Socket) -> std::io::Result<Option<Rx>> {
    let mut buf = [0u8; 512];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg =
        recvmsg::<SockaddrStorage>(s.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
            .map_err(std::io::Error::from)?;
    let (mut ttl, mut ifindex) = (None, None);
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv4Ttl(t) => ttl = u8::try_from(t).ok(),
            ControlMessageOwned::Ipv6HopLimit(t) => ttl = u8::try_from(t).ok(),
            ControlMessageOwned::Ipv4PacketInfo(i) => ifindex = u32::try_from(i.ipi_ifindex).ok(),
            ControlMessageOwned::Ipv6PacketInfo(i) => ifindex = Some(i.ipi6_ifindex),
            _ => {}
        }
    }
    let src = msg.address.and_then(|a| {
        a.as_sockaddr_in()
            .map(|v4| IpAddr::V4(v4.ip()))
            .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
    });
    let len = msg.bytes;
    let (Some(src), Some(ttl), Some(ifindex)) = (src, ttl, ifindex) else {
        return Ok(None);
    };
    // An IPv4 peer of the v6 socket never arrives: it is v6-only.
    Ok(Some(Rx {
        src,
        ifindex,
        ttl,
        data: buf[..len].to_vec(),
    }))
}

/// A session's sending socket: bound to its interface and a source port of the range,
/// connected to the peer's port 3784.
pub struct Sender {
    sock: Socket,
    pub ifindex: u32,
}

impl Sender {
    pub fn open(peer: IpAddr, interface: &str, seed: u32) -> Result<Sender, IoError> {
        let ifindex = nix::net::if_::if_nametoindex(interface)
            .map_err(|_| IoError::NoInterface(interface.to_string()))?;
        let domain = if peer.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let dst = SocketAddr::new(peer, CONTROL_PORT);
        let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
        for attempt in 0..64u32 {
            let port = SOURCE_PORTS.start()
                + u16::try_from(seed.wrapping_add(attempt.wrapping_mul(7919)) % span).unwrap_or(0);
            let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(err("socket"))?;
            s.bind_device(Some(interface.as_bytes()))
                .map_err(err(format!("SO_BINDTODEVICE {interface}")))?;
            if peer.is_ipv4() {
                s.set_ttl_v4(u32::from(TTL)).map_err(err("IP_TTL"))?;
            } else {
                s.set_unicast_hops_v6(u32::from(TTL))
                    .map_err(err("IPV6_UNICAST_HOPS"))?;
            }
            let local = match peer {
                IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            };
            match s.bind(&SockAddr::from(local)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(err(format!("bind {local}"))(e)),
            }
            s.set_nonblocking(true).map_err(err("nonblocking"))?;
            s.connect(&SockAddr::from(dst))
                .map_err(err(format!("connect {dst}")))?;
            return Ok(Sender { sock: s, ifindex });
        }
        Err(IoError::NoPort(dst))
    }

    /// Sends without waiting; a full socket buffer or a missing route loses this packet
    /// only (BFD's own timers cover a lost packet).
    pub fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.sock.send(bytes).map(|_| ())
    }
}
