//! The XDP programs' userspace half, the daemon's kernel interface. This file loads
//! `portier-xdp`, pins and attaches it and adopts the pins of a previous instance
//! (`persist`); `tables` writes the maps the balancer reads (services, Maglev, backends,
//! source prefixes); `counters` reads what it counts; `test_run` drives it on crafted
//! frames; `decap` is the IPIP host side; `bench` (feature `bench`) what only benchmarks use.
//!
//! Maglev tables are swapped whole: every change builds a fresh inner array and replaces the
//! service's slot in the outer `MAGLEV` array, so a packet sees either the old table or the new
//! one, never a half-written mix. The inner map template carries `BPF_F_INNER_MAP`, which lets
//! each service's table have its own (prime) size.

#[cfg(feature = "bench")]
mod bench;
mod counters;
mod decap;
mod diag;
mod error;
mod persist;
pub mod stats;
mod sys;
mod tables;
mod test_run;

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, xdp::DevMapHash},
    programs::{Xdp, XdpMode},
};
#[cfg(feature = "bench")]
pub use bench::{BenchAttachment, attach_bench_program};
pub use counters::MapMemory;
pub use dataplane_common::diag::RECORDS_PER_CPU_SECOND;
pub use dataplane_common::{
    BACKEND_F_VALID, Backend, Counters, DEFAULT_CONNTRACK_SIZE, DEFAULT_FLOW_HOLD,
    DEFAULT_MAGLEV_SIZE, DecapReason, EncapSource, FAMILY_V4, FAMILY_V6, FLOW_WAYS, FlowBucket,
    FlowHashKeys, FlowKey, FlowValue, MAX_BACKENDS, MAX_SERVICES, NO_BACKEND, PROTO_TCP, PROTO_UDP,
    REASON_COUNT, REASON_SLOTS, Reason, SERVICE_F_ENCAP_IPIP, ServiceKey, ServiceSlot,
    ServiceValue, conntrack_buckets, flow_bucket, flow_hash, flow_index_hash, service_slot_index,
};
use dataplane_common::{SERVICE_F_ADDR_MARKER, maps, programs};
pub use decap::{DecapOptions, Decapsulator};
pub use diag::{DebugSwitch, LINES_PER_SECOND, LineBudget, XdpEvent, XdpLog};
pub use error::DataplaneError;
pub use sys::{parse_mac, pin_to_cpu};
pub use tables::{EncapSourceConfig, ForwardMode};
pub use test_run::TestRunOutput;

/// The compiled XDP object, built by `build.rs` through aya-build.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portier-xdp"));

/// `BPF_F_INNER_MAP`: inner arrays whose size may differ from the template's.
const BPF_F_INNER_MAP: u32 = 1 << 12;

pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/portier";
const BPFFS: &str = "/sys/fs/bpf";

/// How to attach XDP to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// Native, falling back to generic when the driver has no XDP support (e.g. `lo`).
    #[default]
    Auto,
    Native,
    Generic,
}

/// The mode an interface actually got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
    /// A pinned link of a previous instance now runs this program (its mode is unchanged).
    Adopted,
}

#[derive(Clone, Debug)]
pub struct DataplaneOptions {
    /// Node name: pins go to `<pin_root>/<node>/` so several lab nodes can share one bpffs.
    pub node: String,
    pub interfaces: Vec<String>,
    pub mode: XdpAttachMode,
    pub conntrack_size: u32,
    pub pin_root: PathBuf,
    /// Leave program, maps and links pinned (and forwarding) when this value is dropped, for
    /// the next instance to adopt. `false`: detach and remove every pin.
    pub keep_pinned: bool,
}

impl DataplaneOptions {
    pub fn new(node: impl Into<String>, interfaces: Vec<String>) -> Self {
        Self {
            node: node.into(),
            interfaces,
            mode: XdpAttachMode::Auto,
            conntrack_size: DEFAULT_CONNTRACK_SIZE,
            pin_root: PathBuf::from(DEFAULT_PIN_ROOT),
            keep_pinned: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedInterface {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mode: AttachedMode,
}

/// A loaded balancer. Dropping it detaches the program and removes its pins.
pub struct Dataplane {
    ebpf: Ebpf,
    interfaces: Vec<AttachedInterface>,
    pin_dir: Option<PathBuf>,
    /// Configured services, to keep each address's marker entry right.
    services: HashMap<ServiceKey, ServiceValue>,
    keep_pinned: bool,
    /// The maps were adopted from a previous instance (their content is live state).
    adopted: bool,
    /// `portier_lb_debug` is attached instead of `portier_lb` (see `diag`).
    debug: bool,
    /// The debug log's ring buffer was handed out (once per load).
    log_taken: bool,
    /// The connection table's seed: the program hashes with `FlowHashKeys::new` of it.
    flow_seed: [u32; 10],
    _lock: Option<persist::NodeLock>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("interfaces", &self.interfaces)
            .field("pin_dir", &self.pin_dir)
            .field("services", &self.services.len())
            .finish()
    }
}

const ALL_PROGRAMS: [&str; 3] = [programs::BALANCER, programs::PASS, programs::FLOOR];
const ALL_MAPS: [&str; 14] = [
    maps::SERVICES,
    maps::MAGLEV,
    maps::BACKENDS,
    maps::CONNTRACK,
    maps::TX_PORTS,
    maps::SVC_STATS,
    maps::BACKEND_STATS,
    maps::REASONS,
    maps::VIP_FILTER,
    maps::SERVICE_SLOTS,
    maps::ENCAP_SOURCE,
    maps::MIDFLOW_SOURCES,
    maps::FLOW_GUARD,
    maps::FLOW_WINDOW,
];

fn require_root() -> Result<(), DataplaneError> {
    match sys::euid() {
        0 => Ok(()),
        uid => Err(DataplaneError::NotRoot(uid)),
    }
}

/// Programs only `load_for_test` loads.
const TEST_PROGRAMS: [&str; 3] = [
    programs::BENCH_NEW_FLOWS,
    programs::BENCH_GEN,
    programs::BENCH_GEN_MIXED,
];

/// Loads the object with `ALL_PROGRAMS` and `extra`; with `pins`, every map is opened from (or
/// created and pinned at) `<pins>/<MAP>`, which is how a restart keeps the state.
/// `seed`: the connection table's (`FlowHashKeys::new`), given to the program as a constant
/// and stored in `CONNTRACK_SEED`, which is pinned with the table.
fn load_object(
    conntrack_size: u32,
    seed: &[u32; 10],
    pins: Option<&Path>,
    extra: &[&str],
) -> Result<Ebpf, DataplaneError> {
    load_object_from(OBJECT, conntrack_size, seed, pins, extra)
}

/// [`load_object`] of another build of the programs (the benchmark's comparator).
fn load_object_from(
    object: &[u8],
    conntrack_size: u32,
    seed: &[u32; 10],
    pins: Option<&Path>,
    extra: &[&str],
) -> Result<Ebpf, DataplaneError> {
    if conntrack_size == 0 {
        return Err(DataplaneError::Invalid("conntrack_size must be > 0".into()));
    }
    let buckets = dataplane_common::conntrack_buckets(conntrack_size);
    let mask = buckets - 1;
    let keys = FlowHashKeys::new(seed).0;
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(maps::CONNTRACK, buckets)
        .override_global(dataplane_common::CONNTRACK_MASK_GLOBAL, &mask, true)
        .override_global(dataplane_common::CONNTRACK_KEYS_GLOBAL, &keys, true);
    if let Some(dir) = pins {
        // The seed is pinned too, but is not in `ALL_MAPS`: pins of a build before it have
        // none and are still adopted whole (`persist::conntrack_seed`).
        for name in ALL_MAPS.iter().chain([&maps::CONNTRACK_SEED]) {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(object)?;
    // Written before any program runs with these keys; an adopted pin already holds `seed`.
    let map = ebpf
        .map_mut(maps::CONNTRACK_SEED)
        .ok_or(DataplaneError::MissingMap(maps::CONNTRACK_SEED))?;
    let mut stored: Array<&mut MapData, [u32; 10]> =
        Array::try_from(map).map_err(DataplaneError::map(maps::CONNTRACK_SEED))?;
    stored
        .set(0, *seed, 0)
        .map_err(DataplaneError::map(maps::CONNTRACK_SEED))?;
    for &name in ALL_PROGRAMS.iter().chain(extra) {
        xdp_mut(&mut ebpf, name)?
            .load()
            .map_err(DataplaneError::program(name))?;
    }
    Ok(ebpf)
}

fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, DataplaneError> {
    ebpf.program_mut(name)
        .ok_or_else(|| DataplaneError::MissingProgram(name.into()))?
        .try_into()
        .map_err(DataplaneError::program(name))
}

/// Attaches `prog` by the requested mode; `Auto` tries native first, since aya does not.
fn attach(
    prog: &mut Xdp,
    interface: &str,
    mode: XdpAttachMode,
) -> Result<(aya::programs::xdp::XdpLinkId, AttachedMode), DataplaneError> {
    let native = match mode {
        XdpAttachMode::Generic => None,
        _ => match prog.attach(interface, XdpMode::Driver) {
            Ok(id) => return Ok((id, AttachedMode::Native)),
            Err(e) if mode == XdpAttachMode::Native => {
                return Err(DataplaneError::Attach {
                    interface: interface.into(),
                    native: error_chain(&e),
                    generic: "not tried".into(),
                });
            }
            Err(e) => Some(error_chain(&e)),
        },
    };
    match prog.attach(interface, XdpMode::Skb) {
        Ok(id) => Ok((id, AttachedMode::Generic)),
        Err(e) => Err(DataplaneError::Attach {
            interface: interface.into(),
            native: native.unwrap_or_else(|| "not tried".into()),
            generic: error_chain(&e),
        }),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Whether a pinned program at `path` is attached anywhere (through a BPF link).
fn live_program(path: &Path) -> Option<u32> {
    let info = aya::programs::ProgramInfo::from_pin(path).ok()?;
    let id = info.id();
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .any(|l| l.program_id() == id)
        .then_some(id)
}

impl Dataplane {
    /// Loads the balancer, pins it under `<pin_root>/<node>/` and attaches it.
    ///
    /// Pins left by an earlier instance of this node (exited or killed) are adopted: the maps
    /// keep their content (connections, tables, counters), the XDP links are pointed at the new
    /// program atomically. Pins that cannot be adopted (an incompatible upgrade) are replaced,
    /// with a warning. A node name held by a running instance is refused.
    pub fn load(opts: &DataplaneOptions) -> Result<Self, DataplaneError> {
        require_root()?;
        if opts.node.is_empty() || opts.node.contains('/') {
            return Err(DataplaneError::Invalid(format!(
                "bad node name {:?}",
                opts.node
            )));
        }
        if opts.pin_root.starts_with(BPFFS) {
            sys::ensure_bpffs(Path::new(BPFFS))?;
        }
        let lock = persist::NodeLock::acquire(&opts.node)?;
        let pin_dir = opts.pin_root.join(&opts.node);
        fs::create_dir_all(&pin_dir).map_err(DataplaneError::io(&pin_dir))?;
        let adopted = ALL_MAPS.iter().all(|m| pin_dir.join(m).exists());
        let migration = persist::migrate_conntrack(&pin_dir, opts.conntrack_size)?;
        persist::check_flow_guard(&pin_dir)?;
        let seed = persist::conntrack_seed(&pin_dir)?;
        let (ebpf, seed) = match load_object(opts.conntrack_size, &seed, Some(&pin_dir), &[]) {
            Ok(e) => (e, seed),
            Err(e) if pin_dir.read_dir().is_ok_and(|mut d| d.next().is_some()) => {
                tracing::warn!(
                    pin_dir = %pin_dir.display(),
                    "pinned state cannot be adopted, starting fresh: {e}"
                );
                remove_pins(&pin_dir)?;
                fs::create_dir_all(&pin_dir).map_err(DataplaneError::io(&pin_dir))?;
                let seed = persist::conntrack_seed(&pin_dir)?;
                (
                    load_object(opts.conntrack_size, &seed, Some(&pin_dir), &[])?,
                    seed,
                )
            }
            Err(e) => return Err(e),
        };
        let mut dp = Self {
            ebpf,
            interfaces: Vec::new(),
            pin_dir: Some(pin_dir.clone()),
            services: HashMap::new(),
            keep_pinned: opts.keep_pinned,
            adopted,
            debug: false,
            log_taken: false,
            flow_seed: seed,
            _lock: Some(lock),
        };
        if adopted {
            dp.services = dp.read_services()?;
        }
        // Not configurable; also fills the field an older version left 0 (`_pad`).
        dp.set_flow_hold(DEFAULT_FLOW_HOLD)?;
        if let Some(m) = migration {
            let (kept, total) = (dp.restore_flows(&m.flows)?, m.flows.len());
            tracing::info!("connection table migrated: {kept} of {total} flows kept");
        }

        let path = pin_dir.join(programs::BALANCER);
        if path.exists() {
            fs::remove_file(&path).map_err(DataplaneError::io(&path))?;
        }
        xdp_mut(&mut dp.ebpf, programs::BALANCER)?
            .pin(&path)
            .map_err(|source| DataplaneError::Pin { path, source })?;

        for name in &opts.interfaces {
            let ifindex = sys::ifindex(name)?;
            let mac = sys::mac(name)?;
            let link = persist::link_pin(&pin_dir, name);
            let prog = xdp_mut(&mut dp.ebpf, programs::BALANCER)?;
            let mode = if persist::adopt_link(prog, &link)? {
                AttachedMode::Adopted
            } else {
                let (id, mode) = attach(prog, name, opts.mode)?;
                persist::pin_link(prog, programs::BALANCER, id, name, &link)?;
                mode
            };
            dp.interfaces.push(AttachedInterface {
                name: name.clone(),
                ifindex,
                mac,
                mode,
            });
            let mut tx: DevMapHash<&mut MapData> = dp.typed_mut(maps::TX_PORTS)?;
            tx.insert(ifindex, ifindex, None, 0)
                .map_err(|source| DataplaneError::DevMap {
                    name: maps::TX_PORTS,
                    source,
                })?;
        }
        persist::drop_other_links(&pin_dir, &opts.interfaces)?;
        Ok(dp)
    }

    /// Whether the maps came from a previous instance.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Services in the map (without the per-address markers), for adopting a previous
    /// instance's state.
    pub fn existing_services(&self) -> Vec<(ServiceKey, ServiceValue)> {
        self.services.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn read_services(&self) -> Result<HashMap<ServiceKey, ServiceValue>, DataplaneError> {
        let services: BpfHashMap<&MapData, ServiceKey, ServiceValue> =
            self.typed(maps::SERVICES)?;
        let mut out = HashMap::new();
        for entry in services.iter() {
            let (k, v) = entry.map_err(DataplaneError::map(maps::SERVICES))?;
            if v.flags & SERVICE_F_ADDR_MARKER == 0 {
                out.insert(k, v);
            }
        }
        Ok(out)
    }

    /// Every backend slot as the map holds it (index = slot id).
    pub fn existing_backends(&self) -> Result<Vec<Backend>, DataplaneError> {
        let backends: Array<&MapData, Backend> = self.typed(maps::BACKENDS)?;
        backends
            .iter()
            .map(|b| b.map_err(DataplaneError::map(maps::BACKENDS)))
            .collect()
    }

    /// Loaded but neither attached nor pinned: for `BPF_PROG_TEST_RUN`.
    /// The connection table's `hold` is the daemon's default, as in [`Dataplane::load`].
    pub fn load_for_test(conntrack_size: u32) -> Result<Self, DataplaneError> {
        require_root()?;
        // A fresh table, so a random seed as `load` gives one: tests that read the table
        // from userspace then fail unless it hashes with the program's keys.
        let seed = persist::random_seed()?;
        let mut dp = Self {
            ebpf: load_object(conntrack_size, &seed, None, &TEST_PROGRAMS)?,
            interfaces: Vec::new(),
            pin_dir: None,
            services: HashMap::new(),
            keep_pinned: false,
            adopted: false,
            debug: false,
            log_taken: false,
            flow_seed: seed,
            _lock: None,
        };
        dp.set_flow_hold(DEFAULT_FLOW_HOLD)?;
        Ok(dp)
    }

    pub fn interfaces(&self) -> &[AttachedInterface] {
        &self.interfaces
    }

    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    fn typed_mut<'a, M>(&'a mut self, name: &'static str) -> Result<M, DataplaneError>
    where
        M: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        M::try_from(map).map_err(DataplaneError::map(name))
    }

    fn typed<'a, M>(&'a self, name: &'static str) -> Result<M, DataplaneError>
    where
        M: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        M::try_from(map).map_err(DataplaneError::map(name))
    }
}

fn remove_pins(dir: &Path) -> Result<(), DataplaneError> {
    for entry in fs::read_dir(dir).map_err(DataplaneError::io(dir))? {
        let path = entry.map_err(DataplaneError::io(dir))?.path();
        fs::remove_file(&path).map_err(DataplaneError::io(&path))?;
    }
    fs::remove_dir(dir).map_err(DataplaneError::io(dir))
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        // Kept pins keep the program attached and the maps alive for the next instance.
        // Otherwise the pins go, and with the last fd (ours, closed after this) the links
        // detach.
        if self.keep_pinned {
            return;
        }
        if let Some(dir) = &self.pin_dir
            && let Err(e) = remove_pins(dir)
        {
            tracing::warn!(error = %e, "removing XDP pins");
        }
    }
}

/// Attaches `portier_pass` to `interface` (native, else generic) and pins the link at `pin`,
/// so it outlives this process. Lab helper: the veth peer of an interface that sends with
/// `XDP_TX` needs an XDP program to accept those frames. Removing the pin (and the interface)
/// detaches it. An existing pin at `pin` is replaced.
pub fn attach_pass(interface: &str, pin: &Path) -> Result<(), DataplaneError> {
    require_root()?;
    if pin.starts_with(BPFFS) {
        sys::ensure_bpffs(Path::new(BPFFS))?;
    }
    if let Some(parent) = pin.parent() {
        fs::create_dir_all(parent).map_err(DataplaneError::io(parent))?;
    }
    if pin.exists() {
        fs::remove_file(pin).map_err(DataplaneError::io(pin))?;
    }
    let mut ebpf = Ebpf::load(OBJECT)?;
    let prog = xdp_mut(&mut ebpf, programs::PASS)?;
    prog.load()
        .map_err(DataplaneError::program(programs::PASS))?;
    let (id, _) = attach(prog, interface, XdpAttachMode::Auto)?;
    persist::pin_link(prog, programs::PASS, id, interface, pin)
}
