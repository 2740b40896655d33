//! TCP MD5 signatures (RFC 2385) through Linux's `TCP_MD5SIG` socket option: a key per peer
//! address, set on the listening socket (the kernel then drops unsigned or wrongly signed
//! SYNs from that address) and on an outgoing socket before `connect`.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// `TCP_MD5SIG` from linux/tcp.h.
const TCP_MD5SIG: libc::c_int = 14;
/// `TCP_MD5SIG_MAXKEYLEN`.
pub const MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` (linux/tcp.h):
///
/// ```c
/// struct tcp_md5sig {
///     struct __kernel_sockaddr_storage tcpm_addr; /* 128 octets */
///     __u8  tcpm_flags;
///     __u8  tcpm_prefixlen;
///     __u16 tcpm_keylen;
///     int   tcpm_ifindex;
///     __u8  tcpm_key[TCP_MD5SIG_MAXKEYLEN];
/// };
/// ```
///
/// The address is kept as raw octets: the kernel copies the struct by size, so only the
/// offsets matter, and they are the same.
#[repr(C)]
struct TcpMd5Sig {
    addr: [u8; 128],
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_KEY_LEN],
}

const _: () = assert!(std::mem::size_of::<TcpMd5Sig>() == 216);

/// A `sockaddr_in` / `sockaddr_in6` for `addr` (port 0) in the first octets of a
/// `sockaddr_storage`.
fn sockaddr(addr: IpAddr) -> [u8; 128] {
    let mut out = [0u8; 128];
    match addr {
        IpAddr::V4(a) => {
            // sa_family (host order), sin_port, sin_addr.
            out[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            out[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            // sa_family, sin6_port, sin6_flowinfo, sin6_addr, sin6_scope_id.
            out[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            out[8..24].copy_from_slice(&a.octets());
        }
    }
    out
}

/// Sets (or with an empty `key`, removes) the MD5 key for segments to and from `peer` on
/// `sock`. `peer` must be of the socket's family.
pub fn set_key(sock: &impl AsRawFd, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP MD5 key longer than 80 octets",
        ));
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr(peer),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: `sig` is a live, initialised struct of the size passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_MD5SIG,
            (&sig as *const TcpMd5Sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_kernel() {
        let v4 = sockaddr("10.0.0.1".parse().unwrap());
        assert_eq!(&v4[..8], &[2, 0, 0, 0, 10, 0, 0, 1]);
        let v6 = sockaddr("2001:db8::1".parse().unwrap());
        assert_eq!(&v6[..2], &10u16.to_ne_bytes());
        assert_eq!(v6[8..10], [0x20, 0x01]);
        assert_eq!(v6[23], 1);
    }

    #[test]
    fn keys_are_accepted_per_family_and_removed() {
        let s4 = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        set_key(&s4, "10.0.0.1".parse().unwrap(), b"portier-lab").unwrap();
        set_key(&s4, "10.0.0.1".parse().unwrap(), b"").unwrap();
        assert!(set_key(&s4, "10.0.0.1".parse().unwrap(), &[b'x'; 81]).is_err());
        let s6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        set_key(&s6, "2001:db8::1".parse().unwrap(), b"portier-lab").unwrap();
    }
}
