//! The few system calls aya does not wrap: bpffs mounting, interface facts, map deletes on
//! arrays of maps, CPU pinning.

use std::{
    ffi::CString,
    fs, io,
    os::fd::{AsRawFd, BorrowedFd},
    path::Path,
};

use super::DataplaneError;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs at `dir` unless one is already there (`ip netns exec` hides the host's).
pub fn ensure_bpffs(dir: &Path) -> Result<(), DataplaneError> {
    fs::create_dir_all(dir).map_err(DataplaneError::io(dir))?;
    let c = cstring(dir)?;
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let fstype = c"bpf";
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(DataplaneError::Io {
            path: dir.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn cstring(p: &Path) -> Result<CString, DataplaneError> {
    use std::os::unix::ffi::OsStrExt as _;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| DataplaneError::Invalid(format!("path {} contains NUL", p.display())))
}

pub fn ifindex(name: &str) -> Result<u32, DataplaneError> {
    let c = CString::new(name)
        .map_err(|_| DataplaneError::Invalid(format!("interface name {name:?} contains NUL")))?;
    // SAFETY: valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(DataplaneError::Interface {
            name: name.into(),
            reason: io::Error::last_os_error().to_string(),
        });
    }
    Ok(idx)
}

/// The MAC address of `name` in the calling thread's network namespace. Asked of the kernel
/// through a socket rather than read from /sys: sysfs shows the namespace it was mounted in,
/// which is not ours after `nsenter --net` or `setns`.
pub fn mac(name: &str) -> Result<[u8; 6], DataplaneError> {
    const SIOCGIFHWADDR: libc::c_ulong = 0x8927;
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(DataplaneError::Invalid(format!("interface name {name:?}")));
    }
    // struct ifreq: the name, then a union whose `struct sockaddr ifr_hwaddr` (family, then
    // the address bytes) is the answer.
    let mut ifreq = [0u8; 40];
    ifreq[..bytes.len()].copy_from_slice(bytes);
    let err = |reason: String| DataplaneError::Interface {
        name: name.into(),
        reason,
    };
    // SAFETY: plain socket call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(io::Error::last_os_error().to_string()));
    }
    // SAFETY: ifreq is a 40-byte buffer the size of struct ifreq, valid for the call.
    let rc = unsafe { libc::ioctl(fd, SIOCGIFHWADDR, ifreq.as_mut_ptr()) };
    let ioctl_error = io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(err(ioctl_error.to_string()));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&ifreq[18..24]);
    Ok(mac)
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// `BPF_MAP_DELETE_ELEM`: aya's `ArrayOfMaps` cannot empty a slot.
pub fn map_delete(fd: BorrowedFd<'_>, key: &u32) -> io::Result<()> {
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = Attr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key as *const u32 as u64,
        value: 0,
        flags: 0,
    };
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    // SAFETY: attr is a valid bpf_attr prefix that outlives the call; the key pointer too.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_DELETE_ELEM,
            &attr as *const Attr,
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pins the calling thread to `cpu`, so per-CPU maps and timings stay on one core.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub fn euid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}

/// `CLOCK_MONOTONIC` in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_comes_from_the_kernel() {
        assert_eq!(mac("lo").expect("lo"), [0; 6]);
        assert!(matches!(
            mac("nosuchif0"),
            Err(DataplaneError::Interface { .. })
        ));
        assert!(matches!(
            mac("a-name-far-too-long"),
            Err(DataplaneError::Invalid(_))
        ));
    }
}
