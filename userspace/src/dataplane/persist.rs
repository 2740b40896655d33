//! Surviving restarts: the balancer's maps, program and XDP links stay pinned when the daemon
//! exits, and the next `portier run` adopts them. Traffic is forwarded in the kernel the whole
//! time; the new process swaps its program in with `bpf_link_update` (atomic) and reads the
//! state it needs back from the maps.

use super::error::DataplaneError;
use aya::maps::{HashMap, Map, MapData, MapError, MapInfo};
use aya::programs::Xdp;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use dataplane_common::{CONNTRACK_MAP_FLAGS, FlowKey, FlowValue, maps};
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

/// The flows of a pinned connection table that this build cannot adopt as it is, read out
/// before its pin is removed so the new table takes them over (`Dataplane::restore_flows`).
#[derive(Debug, Default)]
pub struct ConntrackMigration {
    pub flows: Vec<(FlowKey, FlowValue)>,
}

/// The `max_entries` the kernel gives a connection table of `size` entries: with an LRU list
/// per CPU it rounds up to a multiple of the possible CPUs.
pub fn conntrack_entries(size: u32) -> u32 {
    let cpus = aya::util::nr_cpus().map_or(1, |n| n.max(1) as u32);
    size.div_ceil(cpus).saturating_mul(cpus)
}

/// Checks the pinned connection table in `pin_dir` against what this build creates
/// (`CONNTRACK_MAP_FLAGS`, `size` entries). A table made with other flags (the shared LRU of
/// earlier versions) or another size (`conntrack_size` changed) would otherwise be adopted
/// silently as it is, since a pinned map is opened without comparing its definition: its
/// flows are read out and its pin removed, so loading creates the table anew; `None` when the
/// pin is absent or right.
pub fn migrate_conntrack(
    pin_dir: &Path,
    size: u32,
) -> Result<Option<ConntrackMigration>, DataplaneError> {
    let path = pin_dir.join(maps::CONNTRACK);
    if !path.exists() {
        return Ok(None);
    }
    let wanted = conntrack_entries(size);
    let reason = match MapInfo::from_pin(&path) {
        Err(e) => format!("unreadable ({e})"),
        Ok(info) if info.map_flags() != CONNTRACK_MAP_FLAGS => format!(
            "made with map flags {:#x}, this version uses {CONNTRACK_MAP_FLAGS:#x} \
             (BPF_F_NO_COMMON_LRU: an LRU list per CPU)",
            info.map_flags()
        ),
        Ok(info) if info.max_entries() != wanted => format!(
            "{} entries, conntrack_size asks for {wanted}",
            info.max_entries()
        ),
        Ok(_) => return Ok(None),
    };
    let flows = read_flows(&path).unwrap_or_else(|e| {
        tracing::warn!(pin = %path.display(), "cannot read the old connection table's flows: {e}");
        Vec::new()
    });
    tracing::warn!(
        pin = %path.display(),
        flows = flows.len(),
        "pinned connection table {reason}: migrating its flows to a new table"
    );
    std::fs::remove_file(&path).map_err(DataplaneError::io(&path))?;
    Ok(Some(ConntrackMigration { flows }))
}

fn read_flows(path: &Path) -> Result<Vec<(FlowKey, FlowValue)>, MapError> {
    let map = Map::from_map_data(MapData::from_pin(path)?)?;
    let table: HashMap<MapData, FlowKey, FlowValue> = HashMap::try_from(map)?;
    // An entry evicted while we iterate ends the walk early: the rest are Maglev's again.
    Ok(table.iter().map_while(Result::ok).collect())
}
