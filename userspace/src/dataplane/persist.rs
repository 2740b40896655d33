//! Surviving restarts: the balancer's maps, program and XDP links stay pinned when the daemon
//! exits, and the next `portier run` adopts them. Traffic is forwarded in the kernel the whole
//! time; the new process swaps its program in with `bpf_link_update` (atomic) and reads the
//! state it needs back from the maps.

use super::error::DataplaneError;
use aya::programs::Xdp;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// One daemon per node name: an exclusive `flock` on /run/portier/<node>.lock, released by the
/// kernel when the process dies however it dies (so kill -9 leaves nothing to clean up).
#[derive(Debug)]
pub struct NodeLock {
    _file: File,
}

impl NodeLock {
    pub fn acquire(node: &str) -> Result<Self, DataplaneError> {
        let dir = Path::new("/run/portier");
        std::fs::create_dir_all(dir).map_err(DataplaneError::io(dir))?;
        let path = dir.join(format!("{node}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(DataplaneError::io(&path))?;
        // SAFETY: flock on an fd we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(DataplaneError::NodeLocked {
                node: node.to_string(),
                path,
            });
        }
        Ok(Self { _file: file })
    }
}

/// Where the XDP link of `interface` is pinned.
pub fn link_pin(pin_dir: &Path, interface: &str) -> PathBuf {
    pin_dir.join(format!("link_{interface}"))
}

/// Points an existing pinned XDP link at `prog` (atomic replacement: no packet sees no
/// program). `Ok(false)` when there is no usable pinned link, so the caller attaches anew.
pub fn adopt_link(prog: &mut Xdp, pin: &Path) -> Result<bool, DataplaneError> {
    if !pin.exists() {
        return Ok(false);
    }
    let adopted = PinnedLink::from_pin(pin)
        .map_err(|e| e.to_string())
        .and_then(|p| XdpLink::try_from(FdLink::from(p)).map_err(|e| e.to_string()))
        .and_then(|link| prog.attach_to_link(link).map_err(|e| e.to_string()));
    match adopted {
        Ok(_) => Ok(true),
        Err(e) => {
            tracing::warn!(pin = %pin.display(), "pinned XDP link unusable, attaching anew: {e}");
            std::fs::remove_file(pin).map_err(DataplaneError::io(pin))?;
            Ok(false)
        }
    }
}

/// Points the pinned link at `pin` to `prog` now (atomic), as [`adopt_link`] does, but for a
/// link this process attached and must exist: the debug toggle.
pub fn repoint(prog: &mut Xdp, program: &str, pin: &Path) -> Result<(), DataplaneError> {
    let unusable = |e: &dyn std::error::Error| DataplaneError::Interface {
        name: pin.display().to_string(),
        reason: format!("pinned XDP link unusable: {e}"),
    };
    let pinned = PinnedLink::from_pin(pin).map_err(|e| unusable(&e))?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| unusable(&e))?;
    let id = prog
        .attach_to_link(link)
        .map_err(DataplaneError::program(program))?;
    // The pin holds the link; our descriptor of it can go (closing it detaches nothing).
    drop(prog.take_link(id));
    Ok(())
}

/// Pins the link `prog` just got for `id`, so it outlives this process.
pub fn pin_link(
    prog: &mut Xdp,
    program: &str,
    id: aya::programs::xdp::XdpLinkId,
    interface: &str,
    pin: &Path,
) -> Result<(), DataplaneError> {
    let link = prog
        .take_link(id)
        .map_err(DataplaneError::program(program))?;
    let fd_link = FdLink::try_from(link).map_err(|e| DataplaneError::Interface {
        name: interface.into(),
        reason: format!("attached without a BPF link, cannot pin it: {e}"),
    })?;
    fd_link.pin(pin).map_err(|source| DataplaneError::Pin {
        path: pin.into(),
        source,
    })?;
    Ok(())
}

/// Removes link pins of interfaces no longer configured: their XDP program detaches.
pub fn drop_other_links(pin_dir: &Path, keep: &[String]) -> Result<(), DataplaneError> {
    let wanted: Vec<PathBuf> = keep.iter().map(|i| link_pin(pin_dir, i)).collect();
    for entry in std::fs::read_dir(pin_dir).map_err(DataplaneError::io(pin_dir))? {
        let path = entry.map_err(DataplaneError::io(pin_dir))?.path();
        let is_link = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link_"));
        if is_link && !wanted.contains(&path) {
            tracing::info!(pin = %path.display(), "detaching from an interface no longer configured");
            std::fs::remove_file(&path).map_err(DataplaneError::io(&path))?;
        }
    }
    Ok(())
}
