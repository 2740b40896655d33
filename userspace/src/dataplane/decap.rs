//! The host side of IPIP services: loads `portier_decap`, attaches it to the host's
//! interfaces and keeps its maps: `DECAP_ADDRS` (the addresses tunnels may be addressed to),
//! `DECAP_SOURCES` (the balancers' prefixes tunnels may come from) and `DECAP_VIPS` (what the
//! inner packets may be addressed to).

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader, TestRun as _, TestRunOptions,
    maps::{
        HashMap as BpfHashMap, MapData, PerCpuArray,
        lpm_trie::{Key as LpmKey, LpmTrie},
    },
    programs::Xdp,
};
use dataplane_common::{
    DECAP_REASON_COUNT, DecapKey, DecapReason, FAMILY_V4, FAMILY_V6, SOURCE_PREFIX_FAMILY_BITS,
    SourcePrefix, maps, programs,
};

use super::{
    AttachedInterface, BPFFS, DataplaneError, TestRunOutput, XdpAttachMode, attach, live_program,
    remove_pins, require_root, sys, xdp_mut,
};

/// Maps of the object `portier_decap` does not use, shrunk: every map in the object is
/// created at load, and the balancer's connection table alone is megabytes.
const UNUSED_SHRUNK: [&str; 1] = [maps::CONNTRACK];
const PINNED_MAPS: [&str; 4] = [
    maps::DECAP_ADDRS,
    maps::DECAP_REASONS,
    maps::DECAP_SOURCES,
    maps::DECAP_VIPS,
];

#[derive(Clone, Debug)]
pub struct DecapOptions {
    /// Pins go to `<pin_root>/<node>-decap/`.
    pub node: String,
    pub interfaces: Vec<String>,
    pub mode: XdpAttachMode,
    pub pin_root: PathBuf,
}

impl DecapOptions {
    pub fn new(node: impl Into<String>, interfaces: Vec<String>) -> Self {
        Self {
            node: node.into(),
            interfaces,
            mode: XdpAttachMode::Auto,
            pin_root: PathBuf::from(super::DEFAULT_PIN_ROOT),
        }
    }
}

/// A loaded decapsulator. Dropping it detaches the program and removes its pins.
pub struct Decapsulator {
    pub(super) ebpf: Ebpf,
    interfaces: Vec<AttachedInterface>,
    pin_dir: Option<PathBuf>,
    /// Each interface's link, owned by the program attached now.
    pub(super) links: Vec<aya::programs::xdp::XdpLinkId>,
    /// `portier_decap_debug` is the one attached.
    pub(super) debug: bool,
    pub(super) log_taken: bool,
}

impl std::fmt::Debug for Decapsulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decapsulator")
            .field("interfaces", &self.interfaces)
            .field("pin_dir", &self.pin_dir)
            .finish()
    }
}

fn load_object() -> Result<Ebpf, DataplaneError> {
    let mut loader = EbpfLoader::new();
    for name in UNUSED_SHRUNK {
        loader.map_max_entries(name, 1);
    }
    let mut ebpf = loader.load(super::OBJECT)?;
    xdp_mut(&mut ebpf, programs::DECAP)?
        .load()
        .map_err(DataplaneError::program(programs::DECAP))?;
    Ok(ebpf)
}

fn key(addr: IpAddr) -> DecapKey {
    let mut k = DecapKey::default();
    match addr {
        IpAddr::V4(a) => {
            k.addr[..4].copy_from_slice(&a.octets());
            k.family = FAMILY_V4;
        }
        IpAddr::V6(a) => {
            k.addr = a.octets();
            k.family = FAMILY_V6;
        }
    }
    k
}

/// The trie key of prefix `addr/len`; the address is masked to the prefix, as the trie
/// stores it.
pub(super) fn source_key(addr: IpAddr, len: u8) -> LpmKey<SourcePrefix> {
    let k = key(addr);
    let mut data = SourcePrefix {
        family: k.family,
        _pad: [0; 3],
        addr: k.addr,
    };
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let len = u32::from(len).min(width);
    for (i, byte) in data.addr.iter_mut().enumerate() {
        let bits_here = len.saturating_sub(8 * i as u32).min(8);
        *byte &= if bits_here == 0 {
            0
        } else {
            0xffu8 << (8 - bits_here)
        };
    }
    LpmKey::new(SOURCE_PREFIX_FAMILY_BITS + len, data)
}

impl Decapsulator {
    /// Loads, pins under `<pin_root>/<node>-decap/` and attaches `portier_decap`. A pin
    /// directory whose program is still attached is refused; a stale one is replaced.
    pub fn load(opts: &DecapOptions) -> Result<Self, DataplaneError> {
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
        let pin_dir = opts.pin_root.join(format!("{}-decap", opts.node));
        if pin_dir.exists() {
            if let Some(prog_id) = live_program(&pin_dir.join(programs::DECAP)) {
                return Err(DataplaneError::PinDirInUse {
                    path: pin_dir,
                    prog_id,
                });
            }
            remove_pins(&pin_dir)?;
        }
        let mut d = Self {
            ebpf: load_object()?,
            interfaces: Vec::new(),
            pin_dir: None,
            links: Vec::new(),
            debug: false,
            log_taken: false,
        };
        fs::create_dir_all(&pin_dir).map_err(DataplaneError::io(&pin_dir))?;
        d.pin_dir = Some(pin_dir.clone());
        for name in PINNED_MAPS {
            let path = pin_dir.join(name);
            d.ebpf
                .map(name)
                .ok_or(DataplaneError::MissingMap(name))?
                .pin(&path)
                .map_err(|source| DataplaneError::Pin { path, source })?;
        }
        let path = pin_dir.join(programs::DECAP);
        xdp_mut(&mut d.ebpf, programs::DECAP)?
            .pin(&path)
            .map_err(|source| DataplaneError::Pin { path, source })?;
        for name in &opts.interfaces {
            let ifindex = sys::ifindex(name)?;
            let mac = sys::mac(name)?;
            let (id, mode) = attach(xdp_mut(&mut d.ebpf, programs::DECAP)?, name, opts.mode)?;
            d.links.push(id);
            d.interfaces.push(AttachedInterface {
                name: name.clone(),
                ifindex,
                mac,
                mode,
            });
        }
        Ok(d)
    }

    /// Loaded but neither attached nor pinned: for `BPF_PROG_TEST_RUN`.
    pub fn load_for_test() -> Result<Self, DataplaneError> {
        require_root()?;
        Ok(Self {
            ebpf: load_object()?,
            interfaces: Vec::new(),
            pin_dir: None,
            links: Vec::new(),
            debug: false,
            log_taken: false,
        })
    }

    pub fn interfaces(&self) -> &[AttachedInterface] {
        &self.interfaces
    }

    fn addrs(&mut self) -> Result<BpfHashMap<&mut MapData, DecapKey, u32>, DataplaneError> {
        let map = self
            .ebpf
            .map_mut(maps::DECAP_ADDRS)
            .ok_or(DataplaneError::MissingMap(maps::DECAP_ADDRS))?;
        BpfHashMap::try_from(map).map_err(DataplaneError::map(maps::DECAP_ADDRS))
    }

    /// Tunnels addressed to `addr` are stripped from now on.
    pub fn add_address(&mut self, addr: IpAddr) -> Result<(), DataplaneError> {
        self.addrs()?
            .insert(key(addr), 1, 0)
            .map_err(DataplaneError::map(maps::DECAP_ADDRS))
    }

    pub fn remove_address(&mut self, addr: IpAddr) -> Result<(), DataplaneError> {
        match self.addrs()?.remove(&key(addr)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(DataplaneError::map(maps::DECAP_ADDRS)(e)),
        }
    }

    fn sources(&mut self) -> Result<LpmTrie<&mut MapData, SourcePrefix, u32>, DataplaneError> {
        let map = self
            .ebpf
            .map_mut(maps::DECAP_SOURCES)
            .ok_or(DataplaneError::MissingMap(maps::DECAP_SOURCES))?;
        LpmTrie::try_from(map).map_err(DataplaneError::map(maps::DECAP_SOURCES))
    }

    /// Tunnels whose outer source is in `addr/len` are accepted from now on.
    pub fn add_source(&mut self, addr: IpAddr, len: u8) -> Result<(), DataplaneError> {
        self.sources()?
            .insert(&source_key(addr, len), 1, 0)
            .map_err(DataplaneError::map(maps::DECAP_SOURCES))
    }

    pub fn remove_source(&mut self, addr: IpAddr, len: u8) -> Result<(), DataplaneError> {
        match self.sources()?.remove(&source_key(addr, len)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(DataplaneError::map(maps::DECAP_SOURCES)(e)),
        }
    }

    fn vips(&mut self) -> Result<BpfHashMap<&mut MapData, DecapKey, u32>, DataplaneError> {
        let map = self
            .ebpf
            .map_mut(maps::DECAP_VIPS)
            .ok_or(DataplaneError::MissingMap(maps::DECAP_VIPS))?;
        BpfHashMap::try_from(map).map_err(DataplaneError::map(maps::DECAP_VIPS))
    }

    /// Inner packets to `vip` are delivered from now on.
    pub fn add_vip(&mut self, vip: IpAddr) -> Result<(), DataplaneError> {
        self.vips()?
            .insert(key(vip), 1, 0)
            .map_err(DataplaneError::map(maps::DECAP_VIPS))
    }

    pub fn remove_vip(&mut self, vip: IpAddr) -> Result<(), DataplaneError> {
        match self.vips()?.remove(&key(vip)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(DataplaneError::map(maps::DECAP_VIPS)(e)),
        }
    }

    /// Every reason with its count, summed over CPUs, in `DecapReason::ALL` order.
    pub fn reasons(&self) -> Result<Vec<(DecapReason, u64)>, DataplaneError> {
        let map = self
            .ebpf
            .map(maps::DECAP_REASONS)
            .ok_or(DataplaneError::MissingMap(maps::DECAP_REASONS))?;
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(DataplaneError::map(maps::DECAP_REASONS))?;
        debug_assert_eq!(DecapReason::ALL.len(), DECAP_REASON_COUNT as usize);
        DecapReason::ALL
            .iter()
            .map(|&r| {
                let v = map
                    .get(&(r as u32), 0)
                    .map_err(DataplaneError::map(maps::DECAP_REASONS))?;
                Ok((r, v.iter().sum()))
            })
            .collect()
    }

    /// Runs the program attached now (`portier_decap`, or its debug twin while debug is on)
    /// on `frame` once through `BPF_PROG_TEST_RUN`.
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRunOutput, DataplaneError> {
        let name = if self.debug {
            dataplane_common::diag::DECAP_DEBUG
        } else {
            programs::DECAP
        };
        let prog: &Xdp = self
            .ebpf
            .program(name)
            .ok_or_else(|| DataplaneError::MissingProgram(name.into()))?
            .try_into()
            .map_err(DataplaneError::program(name))?;
        let mut out = vec![0u8; frame.len() + 64];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..TestRunOptions::new()
        };
        let r = prog.test_run(opts).map_err(DataplaneError::program(name))?;
        out.truncate(r.data_size_out as usize);
        Ok(TestRunOutput {
            action: r.return_value,
            frame: out,
            duration_ns: r.duration.as_nanos() as u64,
        })
    }
}

impl Drop for Decapsulator {
    fn drop(&mut self) {
        if let Some(dir) = &self.pin_dir
            && let Err(e) = remove_pins(dir)
        {
            tracing::warn!(error = %e, "removing decap pins");
        }
    }
}
