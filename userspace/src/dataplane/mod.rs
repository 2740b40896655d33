//! The XDP balancer's userspace half: loads `portier-xdp`, pins and attaches it, and writes the
//! service, Maglev and backend maps that the program reads.
//!
//! Maglev tables are swapped whole: every change builds a fresh inner array and replaces the
//! service's slot in the outer `MAGLEV` array, so a packet sees either the old table or the new
//! one, never a half-written mix. The inner map template carries `BPF_F_INNER_MAP`, which lets
//! each service's table have its own (prime) size.

mod decap;
mod error;
mod persist;
pub mod stats;
mod sys;

use std::{
    collections::HashMap,
    fs,
    net::IpAddr,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader, TestRun as _, TestRunOptions,
    maps::{
        Array, ArrayOfMaps, HashMap as BpfHashMap, MapData, PerCpuArray, lpm_trie::LpmTrie,
        xdp::DevMapHash,
    },
    programs::{Xdp, XdpMode},
};
pub use dataplane_common::{
    BACKEND_F_VALID, Backend, Counters, DEFAULT_CONNTRACK_SIZE, DEFAULT_MAGLEV_SIZE, DecapReason,
    EncapSource, FAMILY_V4, FAMILY_V6, FlowKey, FlowValue, MAX_BACKENDS, MAX_SERVICES, NO_BACKEND,
    PROTO_TCP, PROTO_UDP, REASON_COUNT, REASON_SLOTS, Reason, SERVICE_F_ENCAP_IPIP, ServiceKey,
    ServiceSlot, ServiceValue, flow_hash, service_slot_index,
};
use dataplane_common::{
    MAX_MIDFLOW_SOURCES, PROTO_ADDR_MARKER, SERVICE_F_ADDR_MARKER, SERVICE_F_EXACT_TCP,
    SERVICE_F_EXACT_UDP, SERVICE_F_WILDCARD_TCP, SERVICE_F_WILDCARD_UDP, SourcePrefix, maps,
    programs, vip_filter_index,
};
pub use decap::{DecapOptions, Decapsulator};
pub use error::DataplaneError;
pub use sys::{parse_mac, pin_to_cpu};

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

/// Result of one `BPF_PROG_TEST_RUN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// XDP action (`XDP_PASS` = 2, `XDP_TX` = 3, ...).
    pub action: u32,
    pub frame: Vec<u8>,
    /// Mean time per repetition, as measured by the kernel.
    pub duration_ns: u64,
}

/// Size and memory of one map, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapMemory {
    pub name: &'static str,
    pub max_entries: u32,
    pub key_size: u32,
    pub value_size: u32,
    /// `max_entries * (key_size + value_size)`, times the CPU count for per-CPU maps.
    pub bytes: u64,
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
const ALL_MAPS: [&str; 12] = [
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
];

/// How a service's packets reach its backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardMode {
    /// L2 direct server return: only the MACs change; backends share the LB's LAN and hold
    /// the VIP on a loopback.
    #[default]
    Dsr,
    /// IPIP (IPv4 in IPv4, IPv6 in IPv6) to the backend's address, through the next hop in
    /// the backend's `mac`; the backend runs `portier_decap` and holds the VIP locally.
    /// Needs `set_encap_source` for the service's family. The outer header adds 20 / 40
    /// bytes: the path MTU to the backends must allow for it.
    Ipip,
}

/// Outer source addresses for IPIP services: one prefix per family, a flow hash picks the
/// host part, so a backend's flows arrive from many sources and spread over its receive
/// queues. `None` leaves that family without IPIP (its IPIP services drop, counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncapSourceConfig {
    pub v4: Option<(std::net::Ipv4Addr, u8)>,
    pub v6: Option<(std::net::Ipv6Addr, u8)>,
}

impl EncapSourceConfig {
    /// The map value; errors on a prefix length past the address width.
    pub fn to_map_value(&self) -> Result<EncapSource, DataplaneError> {
        fn split<const N: usize>(
            addr: [u8; N],
            len: u8,
        ) -> Result<([u8; N], [u8; N]), DataplaneError> {
            let bits = N * 8;
            if usize::from(len) > bits {
                return Err(DataplaneError::Invalid(format!(
                    "source prefix length {len} > {bits}"
                )));
            }
            let mut prefix = addr;
            let mut mask = [0u8; N];
            for i in 0..N {
                let net_bits = usize::from(len).saturating_sub(i * 8).min(8);
                let net = if net_bits == 0 {
                    0u8
                } else {
                    0xffu8 << (8 - net_bits)
                };
                prefix[i] &= net;
                mask[i] = !net;
            }
            Ok((prefix, mask))
        }
        let mut v = EncapSource::default();
        if let Some((a, len)) = self.v4 {
            (v.v4_prefix, v.v4_host_mask) = split(a.octets(), len)?;
            v.flags |= dataplane_common::ENCAP_SOURCE_F_V4;
        }
        if let Some((a, len)) = self.v6 {
            (v.v6_prefix, v.v6_host_mask) = split(a.octets(), len)?;
            v.flags |= dataplane_common::ENCAP_SOURCE_F_V6;
        }
        Ok(v)
    }
}

fn require_root() -> Result<(), DataplaneError> {
    match sys::euid() {
        0 => Ok(()),
        uid => Err(DataplaneError::NotRoot(uid)),
    }
}

/// Programs only `load_for_test` loads.
const TEST_PROGRAMS: [&str; 2] = [programs::BENCH_NEW_FLOWS, programs::BENCH_GEN];

/// Loads the object with `ALL_PROGRAMS` and `extra`; with `pins`, every map is opened from (or
/// created and pinned at) `<pins>/<MAP>`, which is how a restart keeps the state.
fn load_object(
    conntrack_size: u32,
    pins: Option<&Path>,
    extra: &[&str],
) -> Result<Ebpf, DataplaneError> {
    if conntrack_size == 0 {
        return Err(DataplaneError::Invalid("conntrack_size must be > 0".into()));
    }
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(maps::CONNTRACK, conntrack_size);
    if let Some(dir) = pins {
        for name in ALL_MAPS {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(OBJECT)?;
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
        let ebpf = match load_object(opts.conntrack_size, Some(&pin_dir), &[]) {
            Ok(e) => e,
            Err(e) if pin_dir.read_dir().is_ok_and(|mut d| d.next().is_some()) => {
                tracing::warn!(
                    pin_dir = %pin_dir.display(),
                    "pinned state cannot be adopted, starting fresh: {e}"
                );
                remove_pins(&pin_dir)?;
                fs::create_dir_all(&pin_dir).map_err(DataplaneError::io(&pin_dir))?;
                load_object(opts.conntrack_size, Some(&pin_dir), &[])?
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
            _lock: Some(lock),
        };
        if adopted {
            dp.services = dp.read_services()?;
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
    pub fn load_for_test(conntrack_size: u32) -> Result<Self, DataplaneError> {
        require_root()?;
        Ok(Self {
            ebpf: load_object(conntrack_size, None, &TEST_PROGRAMS)?,
            interfaces: Vec::new(),
            pin_dir: None,
            services: HashMap::new(),
            keep_pinned: false,
            adopted: false,
            _lock: None,
        })
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

    /// Installs or replaces service `id` for `key` with Maglev `table` (slot -> backend id,
    /// `NO_BACKEND` for none; its length is the table size), forwarding by L2 DSR.
    pub fn set_service(
        &mut self,
        key: ServiceKey,
        id: u32,
        table: &[u32],
    ) -> Result<(), DataplaneError> {
        self.set_service_with_mode(key, id, table, ForwardMode::Dsr)
    }

    /// `set_service` with the forwarding mode spelled out.
    pub fn set_service_with_mode(
        &mut self,
        key: ServiceKey,
        id: u32,
        table: &[u32],
        mode: ForwardMode,
    ) -> Result<(), DataplaneError> {
        validate_key(&key)?;
        if id >= MAX_SERVICES {
            return Err(DataplaneError::Invalid(format!(
                "service id {id} >= {MAX_SERVICES}"
            )));
        }
        let size = u32::try_from(table.len())
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| DataplaneError::Invalid(format!("table size {}", table.len())))?;
        if let Some(&bad) = table
            .iter()
            .find(|&&b| b != NO_BACKEND && b >= MAX_BACKENDS)
        {
            return Err(DataplaneError::Invalid(format!(
                "backend id {bad} >= {MAX_BACKENDS}"
            )));
        }

        let mut inner: Array<MapData, u32> =
            Array::create(size, BPF_F_INNER_MAP).map_err(DataplaneError::map(maps::MAGLEV))?;
        for (slot, backend) in (0u32..).zip(table) {
            inner
                .set(slot, *backend, 0)
                .map_err(DataplaneError::map(maps::MAGLEV))?;
        }
        {
            let mut outer: ArrayOfMaps<&mut MapData, Array<MapData, u32>> =
                self.typed_mut(maps::MAGLEV)?;
            outer
                .set(id, &inner, 0)
                .map_err(DataplaneError::map(maps::MAGLEV))?;
        }
        // The outer slot now holds its own reference; our fd can go.
        drop(inner);

        let value = ServiceValue {
            id,
            table_size: size,
            flags: match mode {
                ForwardMode::Dsr => 0,
                ForwardMode::Ipip => SERVICE_F_ENCAP_IPIP,
            },
            _pad: 0,
        };
        {
            let mut services: BpfHashMap<&mut MapData, ServiceKey, ServiceValue> =
                self.typed_mut(maps::SERVICES)?;
            services
                .insert(key, value, 0)
                .map_err(DataplaneError::map(maps::SERVICES))?;
        }
        self.services.insert(key, value);
        self.sync_marker(&key)?;
        self.sync_slot(&key)
    }

    /// Removes a service: it stops matching first, then its table goes.
    pub fn remove_service(&mut self, key: &ServiceKey, id: u32) -> Result<(), DataplaneError> {
        validate_key(key)?;
        if id >= MAX_SERVICES {
            return Err(DataplaneError::Invalid(format!(
                "service id {id} >= {MAX_SERVICES}"
            )));
        }
        // The fast-path slot forgets the key before the authoritative map does, so no reader
        // can find it in the slot once it is gone from `SERVICES`.
        self.services.remove(key);
        self.sync_slot(key)?;
        {
            let mut services: BpfHashMap<&mut MapData, ServiceKey, ServiceValue> =
                self.typed_mut(maps::SERVICES)?;
            match services.remove(key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(DataplaneError::map(maps::SERVICES)(e)),
            }
        }
        self.sync_marker(key)?;
        // Another key may still use this id (e.g. the same table for TCP and UDP).
        if self.services.values().all(|v| v.id != id) {
            let map = self
                .ebpf
                .map(maps::MAGLEV)
                .ok_or(DataplaneError::MissingMap(maps::MAGLEV))?;
            let data: &MapData = match map {
                aya::maps::Map::ArrayOfMaps(d) => d,
                _ => return Err(DataplaneError::MissingMap(maps::MAGLEV)),
            };
            match sys::map_delete(data.fd().as_fd(), &id) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    return Err(DataplaneError::Io {
                        path: maps::MAGLEV.into(),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    /// Marker flags of the services matching `pred`.
    fn marker_flags(&self, pred: impl Fn(&ServiceKey) -> bool) -> u32 {
        self.services.keys().filter(|k| pred(k)).fold(0u32, |f, k| {
            f | SERVICE_F_ADDR_MARKER
                | match (k.proto, k.port) {
                    (PROTO_TCP, 0) => SERVICE_F_WILDCARD_TCP,
                    (PROTO_TCP, _) => SERVICE_F_EXACT_TCP,
                    (PROTO_UDP, 0) => SERVICE_F_WILDCARD_UDP,
                    (_, _) => SERVICE_F_EXACT_UDP,
                }
        })
    }

    /// Rewrites the address marker of `key.addr` and its `VIP_FILTER` slot from the configured
    /// services. The two may disagree for a moment: a filter hit without a marker reads as
    /// not a VIP, which the address is about to be or just was.
    fn sync_marker(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        let flags = self.marker_flags(|k| k.addr == key.addr && k.family == key.family);
        let slot = vip_filter_index(&key.addr, key.family);
        let slot_flags = self.marker_flags(|k| vip_filter_index(&k.addr, k.family) == slot);
        let marker = ServiceKey {
            addr: key.addr,
            port: 0,
            proto: PROTO_ADDR_MARKER,
            family: key.family,
        };
        let mut services: BpfHashMap<&mut MapData, ServiceKey, ServiceValue> =
            self.typed_mut(maps::SERVICES)?;
        if flags == 0 {
            match services.remove(&marker) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(DataplaneError::map(maps::SERVICES)(e)),
            }
        } else {
            let value = ServiceValue {
                id: 0,
                table_size: 0,
                flags,
                _pad: 0,
            };
            services
                .insert(marker, value, 0)
                .map_err(DataplaneError::map(maps::SERVICES))?;
        }
        let mut filter: Array<&mut MapData, u32> = self.typed_mut(maps::VIP_FILTER)?;
        filter
            .set(slot, slot_flags, 0)
            .map_err(DataplaneError::map(maps::VIP_FILTER))
    }

    /// Rewrites the `SERVICE_SLOTS` slot of `key` from the configured services: it holds the
    /// smallest key hashing there (any fixed choice would do), and `spill` when there are more.
    fn sync_slot(&mut self, key: &ServiceKey) -> Result<(), DataplaneError> {
        let index = service_slot_index(&key.words());
        let mut here = self
            .services
            .iter()
            .filter(|(k, _)| service_slot_index(&k.words()) == index);
        let slot = match here.clone().min_by_key(|(k, _)| **k) {
            Some((k, v)) => ServiceSlot::new(*k, *v, here.nth(1).is_some()),
            None => ServiceSlot::default(),
        };
        let mut slots: Array<&mut MapData, ServiceSlot> = self.typed_mut(maps::SERVICE_SLOTS)?;
        slots
            .set(index, slot, 0)
            .map_err(DataplaneError::map(maps::SERVICE_SLOTS))
    }

    /// The `SERVICE_SLOTS` slot `key` maps to, as the program sees it.
    pub fn service_slot(&self, key: &ServiceKey) -> Result<ServiceSlot, DataplaneError> {
        let slots: Array<&MapData, ServiceSlot> = self.typed(maps::SERVICE_SLOTS)?;
        slots
            .get(&service_slot_index(&key.words()), 0)
            .map_err(DataplaneError::map(maps::SERVICE_SLOTS))
    }

    /// Sets the outer source prefixes of IPIP services.
    pub fn set_encap_source(&mut self, cfg: &EncapSourceConfig) -> Result<(), DataplaneError> {
        let value = cfg.to_map_value()?;
        let mut m: Array<&mut MapData, EncapSource> = self.typed_mut(maps::ENCAP_SOURCE)?;
        m.set(0, value, 0)
            .map_err(DataplaneError::map(maps::ENCAP_SOURCE))
    }

    /// Mid-flow TCP segments without a connection-table entry are recorded only when their
    /// source lies in one of `prefixes` (the clients of another LB whose flows may move
    /// here); others are forwarded by Maglev and not recorded. Replaces the previous set.
    pub fn set_midflow_sources(&mut self, prefixes: &[(IpAddr, u8)]) -> Result<(), DataplaneError> {
        let name = maps::MIDFLOW_SOURCES;
        if prefixes.len() > MAX_MIDFLOW_SOURCES as usize {
            return Err(DataplaneError::Invalid(format!(
                "{} mid-flow source prefixes, at most {MAX_MIDFLOW_SOURCES}",
                prefixes.len()
            )));
        }
        let mut trie: LpmTrie<&mut MapData, SourcePrefix, u32> = self.typed_mut(name)?;
        let wanted: Vec<_> = prefixes
            .iter()
            .map(|&(a, l)| decap::source_key(a, l))
            .collect();
        let present: Vec<_> = trie
            .keys()
            .collect::<Result<_, _>>()
            .map_err(DataplaneError::map(name))?;
        for k in &present {
            let keep = wanted
                .iter()
                .any(|w| w.prefix_len() == k.prefix_len() && w.data() == k.data());
            if !keep {
                match trie.remove(k) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(e) => return Err(DataplaneError::map(name)(e)),
                }
            }
        }
        for k in &wanted {
            trie.insert(k, 1, 0).map_err(DataplaneError::map(name))?;
        }
        Ok(())
    }

    /// Overwrites the raw `SERVICE_SLOTS` slot of `key`, bypassing the bookkeeping: lets
    /// tests show what the program does with a torn or foreign slot. The next change to a
    /// service of that slot rewrites it properly.
    pub fn overwrite_service_slot(
        &mut self,
        key: &ServiceKey,
        slot: &ServiceSlot,
    ) -> Result<(), DataplaneError> {
        let mut slots: Array<&mut MapData, ServiceSlot> = self.typed_mut(maps::SERVICE_SLOTS)?;
        slots
            .set(service_slot_index(&key.words()), slot, 0)
            .map_err(DataplaneError::map(maps::SERVICE_SLOTS))
    }

    pub fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), DataplaneError> {
        let mut backends: Array<&mut MapData, Backend> = self.typed_mut(maps::BACKENDS)?;
        backends
            .set(id, backend, 0)
            .map_err(DataplaneError::map(maps::BACKENDS))
    }

    /// Marks slot `id` invalid. Its generation is kept: flows pinned to it are re-balanced
    /// because the slot is no longer valid, and a later `set_backend` decides the generation.
    pub fn clear_backend(&mut self, id: u32) -> Result<(), DataplaneError> {
        let mut backends: Array<&mut MapData, Backend> = self.typed_mut(maps::BACKENDS)?;
        let mut b = backends
            .get(&id, 0)
            .map_err(DataplaneError::map(maps::BACKENDS))?;
        b.flags &= !BACKEND_F_VALID;
        backends
            .set(id, b, 0)
            .map_err(DataplaneError::map(maps::BACKENDS))
    }

    pub fn backend(&self, id: u32) -> Result<Backend, DataplaneError> {
        let backends: Array<&MapData, Backend> = self.typed(maps::BACKENDS)?;
        backends
            .get(&id, 0)
            .map_err(DataplaneError::map(maps::BACKENDS))
    }

    /// The connection-table entry of `key`, if any.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, DataplaneError> {
        let ct: aya::maps::HashMap<&MapData, FlowKey, FlowValue> = {
            let map = self
                .ebpf
                .map(maps::CONNTRACK)
                .ok_or(DataplaneError::MissingMap(maps::CONNTRACK))?;
            aya::maps::HashMap::try_from(map).map_err(DataplaneError::map(maps::CONNTRACK))?
        };
        match ct.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DataplaneError::map(maps::CONNTRACK)(e)),
        }
    }

    fn sum_counters(&self, name: &'static str, id: u32) -> Result<Counters, DataplaneError> {
        let map: PerCpuArray<&MapData, Counters> = self.typed(name)?;
        let per_cpu = map.get(&id, 0).map_err(DataplaneError::map(name))?;
        Ok(per_cpu.iter().fold(Counters::default(), |a, c| Counters {
            packets: a.packets + c.packets,
            bytes: a.bytes + c.bytes,
        }))
    }

    pub fn service_counters(&self, id: u32) -> Result<Counters, DataplaneError> {
        self.sum_counters(maps::SVC_STATS, id)
    }

    pub fn backend_counters(&self, id: u32) -> Result<Counters, DataplaneError> {
        self.sum_counters(maps::BACKEND_STATS, id)
    }

    /// Every reason with its count, summed over CPUs, in `Reason::ALL` order.
    pub fn reasons(&self) -> Result<Vec<(Reason, u64)>, DataplaneError> {
        let map: PerCpuArray<&MapData, [u64; REASON_SLOTS as usize]> = self.typed(maps::REASONS)?;
        let per_cpu = map.get(&0, 0).map_err(DataplaneError::map(maps::REASONS))?;
        Ok(Reason::ALL
            .iter()
            .map(|&r| (r, per_cpu.iter().map(|c| c[r as usize]).sum()))
            .collect())
    }

    /// One reason's count, summed over CPUs.
    pub fn reason(&self, reason: Reason) -> Result<u64, DataplaneError> {
        Ok(self
            .reasons()?
            .into_iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| n))
    }

    /// Runs `program` on `frame` through `BPF_PROG_TEST_RUN`, `repeat` times.
    pub fn test_run(
        &self,
        program: &str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutput, DataplaneError> {
        let prog: &Xdp = self
            .ebpf
            .program(program)
            .ok_or_else(|| DataplaneError::MissingProgram(program.into()))?
            .try_into()
            .map_err(DataplaneError::program(program))?;
        // Room for programs that grow the frame; ours only rewrite it.
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: repeat.max(1),
            ..TestRunOptions::new()
        };
        let r = prog
            .test_run(opts)
            .map_err(DataplaneError::program(program))?;
        out.truncate(r.data_size_out as usize);
        Ok(TestRunOutput {
            action: r.return_value,
            frame: out,
            duration_ns: r.duration.as_nanos() as u64,
        })
    }

    /// Runs `program` in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`): `repeat` copies of
    /// `frame`, in batches of `batch`, with `ingress_ifindex` as the receiving interface, so
    /// `XDP_TX` really transmits out of it. The interface is looked up in the calling
    /// thread's network namespace. Returns the wall time of the whole run.
    pub fn test_run_live(
        &self,
        program: &str,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
        batch: u32,
    ) -> Result<std::time::Duration, DataplaneError> {
        let prog: &Xdp = self
            .ebpf
            .program(program)
            .ok_or_else(|| DataplaneError::MissingProgram(program.into()))?
            .try_into()
            .map_err(DataplaneError::program(program))?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. Live mode takes only the interface (and queue 0).
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: repeat.max(1),
            attrs: aya::programs::TestRunAttrs::new().xdp_live_frames(batch),
            ..TestRunOptions::new()
        };
        let start = std::time::Instant::now();
        prog.test_run(opts)
            .map_err(DataplaneError::program(program))?;
        Ok(start.elapsed())
    }

    /// Memory of every map, from the kernel's map info.
    pub fn map_memory(&self) -> Result<Vec<MapMemory>, DataplaneError> {
        let cpus = aya::util::nr_cpus().map(|n| n as u64).unwrap_or(1);
        ALL_MAPS
            .iter()
            .map(|&name| {
                let map = self
                    .ebpf
                    .map(name)
                    .ok_or(DataplaneError::MissingMap(name))?;
                let data = map_data(map).ok_or(DataplaneError::MissingMap(name))?;
                let info = data.info().map_err(DataplaneError::map(name))?;
                let per_cpu = matches!(map, aya::maps::Map::PerCpuArray(_));
                let entry = u64::from(info.key_size())
                    + u64::from(info.value_size()) * if per_cpu { cpus } else { 1 };
                Ok(MapMemory {
                    name,
                    max_entries: info.max_entries(),
                    key_size: info.key_size(),
                    value_size: info.value_size(),
                    bytes: u64::from(info.max_entries()) * entry,
                })
            })
            .collect()
    }
}

fn map_data(map: &aya::maps::Map) -> Option<&MapData> {
    use aya::maps::Map;
    Some(match map {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d) => d,
        _ => return None,
    })
}

fn validate_key(key: &ServiceKey) -> Result<(), DataplaneError> {
    if key.proto != PROTO_TCP && key.proto != PROTO_UDP {
        return Err(DataplaneError::Invalid(format!(
            "service protocol {}",
            key.proto
        )));
    }
    if key.family != FAMILY_V4 && key.family != FAMILY_V6 {
        return Err(DataplaneError::Invalid(format!(
            "service family {}",
            key.family
        )));
    }
    if key.family == FAMILY_V4 && key.addr[4..].iter().any(|&b| b != 0) {
        return Err(DataplaneError::Invalid(
            "IPv4 service address with bytes past 4".into(),
        ));
    }
    Ok(())
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

/// A benchmark program attached to an interface (native mode); detached on drop.
pub struct BenchAttachment {
    _ebpf: Ebpf,
}

/// Attaches one of the programs that only benchmarks use (`portier_bench_sink`, or
/// `portier_floor` in place of the balancer) to `interface` in the calling thread's network
/// namespace, natively: a veth only transmits `XDP_TX` frames to a peer that runs XDP.
pub fn attach_bench_program(
    program: &str,
    interface: &str,
) -> Result<BenchAttachment, DataplaneError> {
    require_root()?;
    if ![programs::BENCH_SINK, programs::FLOOR].contains(&program) {
        return Err(DataplaneError::MissingProgram(program.into()));
    }
    let mut ebpf = Ebpf::load(OBJECT)?;
    let prog = xdp_mut(&mut ebpf, program)?;
    prog.load().map_err(DataplaneError::program(program))?;
    attach(prog, interface, XdpAttachMode::Native)?;
    Ok(BenchAttachment { _ebpf: ebpf })
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
