//! Surviving restarts: the balancer's maps, program and XDP links stay pinned when the daemon
//! exits, and the next `portier run` adopts them. Traffic is forwarded in the kernel the whole
//! time; the new process swaps its program in with `bpf_link_update` (atomic) and reads the
//! state it needs back from the maps.

use super::error::DataplaneError;
use aya::maps::{Array, HashMap, Map, MapData, MapError, MapInfo, MapType};
use aya::programs::Xdp;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use dataplane_common::{FlowBucket, FlowGuard, FlowKey, FlowValue, conntrack_buckets, maps};
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

/// Checks the pinned connection table in `pin_dir` against what this build creates: an
/// array of `conntrack_buckets(size)` buckets of `FlowBucket`. A table left by an earlier
/// version (an LRU hash, shared or with a list per CPU) or made for another
/// `conntrack_size` would otherwise be adopted silently as it is, since a pinned map is
/// opened without comparing its definition: its flows are read out and its pin removed, so
/// loading creates the table anew; `None` when the pin is absent or right.
pub fn migrate_conntrack(
    pin_dir: &Path,
    size: u32,
) -> Result<Option<ConntrackMigration>, DataplaneError> {
    let path = pin_dir.join(maps::CONNTRACK);
    if !path.exists() {
        return Ok(None);
    }
    let buckets = conntrack_buckets(size);
    let bucket_size = std::mem::size_of::<FlowBucket>() as u32;
    let (reason, flows) = match MapInfo::from_pin(&path) {
        Err(e) => (format!("unreadable ({e})"), Ok(Vec::new())),
        Ok(info)
            if !matches!(info.map_type(), Ok(MapType::Array))
                || info.value_size() != bucket_size =>
        {
            (
                format!(
                    "a {:?} with {}-byte values, this version uses an array of {bucket_size}-byte \
                 buckets",
                    info.map_type().ok(),
                    info.value_size()
                ),
                read_hash_flows(&path),
            )
        }
        Ok(info) if info.max_entries() != buckets => (
            format!(
                "{} buckets, conntrack_size asks for {buckets}",
                info.max_entries()
            ),
            read_bucket_flows(&path),
        ),
        Ok(_) => return Ok(None),
    };
    let flows = flows.unwrap_or_else(|e| {
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

/// The flows of an earlier version's table, an LRU hash of `FlowKey` -> `FlowValue`.
fn read_hash_flows(path: &Path) -> Result<Vec<(FlowKey, FlowValue)>, MapError> {
    let map = Map::from_map_data(MapData::from_pin(path)?)?;
    let table: HashMap<MapData, FlowKey, FlowValue> = HashMap::try_from(map)?;
    // An entry evicted while we iterate ends the walk early: the rest are Maglev's again.
    Ok(table.iter().map_while(Result::ok).collect())
}

/// The flows of a bucket table of another size.
fn read_bucket_flows(path: &Path) -> Result<Vec<(FlowKey, FlowValue)>, MapError> {
    let map = Map::from_map_data(MapData::from_pin(path)?)?;
    let table: Array<MapData, FlowBucket> = Array::try_from(map)?;
    let mut flows = Vec::new();
    for bucket in table.iter() {
        flows.extend(bucket?.flows());
    }
    Ok(flows)
}

/// A fresh table's seed, from the kernel's random pool.
pub fn random_seed() -> Result<[u32; 10], DataplaneError> {
    let mut bytes = [0u8; 40];
    getrandom::getrandom(&mut bytes).map_err(DataplaneError::Random)?;
    let mut seed = [0u32; 10];
    for (s, b) in seed.iter_mut().zip(bytes.chunks_exact(4)) {
        *s = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(seed)
}

/// The seed the connection table in `pin_dir` is hashed with, called after
/// [`migrate_conntrack`]: the pinned `CONNTRACK_SEED` when the table is pinned beside it; 0
/// (the unseeded hash) for a table pinned by a build before the seed, which has none; a new
/// random one for a table about to be created, whose stale seed pin (if any) goes. A table
/// whose seed cannot be read cannot be looked up: both pins go and it starts empty.
pub fn conntrack_seed(pin_dir: &Path) -> Result<[u32; 10], DataplaneError> {
    let table = pin_dir.join(maps::CONNTRACK);
    let pin = pin_dir.join(maps::CONNTRACK_SEED);
    if table.exists() {
        if !pin.exists() {
            tracing::info!(pin = %table.display(), "connection table from a build without a seed: kept unseeded");
            return Ok([0; 10]);
        }
        match read_seed(&pin) {
            Ok(seed) => return Ok(seed),
            Err(e) => {
                tracing::warn!(pin = %pin.display(), "connection table seed unreadable, table made anew: {e}");
                std::fs::remove_file(&table).map_err(DataplaneError::io(&table))?;
            }
        }
    }
    if pin.exists() {
        std::fs::remove_file(&pin).map_err(DataplaneError::io(&pin))?;
    }
    random_seed()
}

fn read_seed(path: &Path) -> Result<[u32; 10], MapError> {
    let map = Map::from_map_data(MapData::from_pin(path)?)?;
    let seed: Array<MapData, [u32; 10]> = Array::try_from(map)?;
    seed.get(&0, 0)
}

/// Removes the pin of the SYN-flood guard's setting when it has another value size than
/// this build's (the daemon writes it anew), so the other pinned maps stay adoptable.
pub fn check_flow_guard(pin_dir: &Path) -> Result<(), DataplaneError> {
    let path = pin_dir.join(maps::FLOW_GUARD);
    let want = std::mem::size_of::<FlowGuard>() as u32;
    match MapInfo::from_pin(&path) {
        Ok(info) if info.value_size() != want => {
            tracing::warn!(pin = %path.display(), "pinned flow guard of another shape: made anew");
            std::fs::remove_file(&path).map_err(DataplaneError::io(&path))
        }
        _ => Ok(()),
    }
}
