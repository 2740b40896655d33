//! The balancer's tables as the daemon writes them: services (Maglev tables, the fast-path
//! slots and address markers), backends, IPIP source prefixes, mid-flow sources, and the
//! connection table as tests read it.

use std::{net::IpAddr, os::fd::AsFd as _};

use aya::maps::{Array, ArrayOfMaps, HashMap as BpfHashMap, MapData, lpm_trie::LpmTrie};
use dataplane_common::{
    BACKEND_F_VALID, Backend, EncapSource, FAMILY_V4, FAMILY_V6, FlowBucket, FlowGuard,
    FlowHashKeys, FlowKey, FlowValue, MAX_BACKENDS, MAX_MIDFLOW_SOURCES, MAX_SERVICES, NO_BACKEND,
    PROTO_ADDR_MARKER, PROTO_TCP, PROTO_UDP, SERVICE_F_ADDR_MARKER, SERVICE_F_ENCAP_IPIP,
    SERVICE_F_EXACT_TCP, SERVICE_F_EXACT_UDP, SERVICE_F_WILDCARD_TCP, SERVICE_F_WILDCARD_UDP,
    ServiceKey, ServiceSlot, ServiceValue, SourcePrefix, flow_bucket, flow_clock, flow_index_hash,
    maps, service_slot_index, vip_filter_index,
};

use super::{BPF_F_INNER_MAP, Dataplane, DataplaneError, decap, sys};

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

impl Dataplane {
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

    /// The SYN-flood guard: at most `rate` new connection-table entries per CPU per second
    /// (0: no limit); new flows past it are balanced by Maglev without an entry.
    pub fn set_new_flow_rate(&mut self, rate: u32) -> Result<(), DataplaneError> {
        self.update_flow_guard(|g| g.new_flow_rate = rate)
    }

    /// How old (in `flow_clock` units, 2^24 ns, about 16.8 ms) an unused connection-table
    /// entry must be before a new flow may replace it (`FlowGuard::hold`); 0: at once, as an
    /// LRU would.
    pub fn set_flow_hold(&mut self, hold: u32) -> Result<(), DataplaneError> {
        self.update_flow_guard(|g| g.hold = hold)
    }

    fn update_flow_guard(&mut self, f: impl FnOnce(&mut FlowGuard)) -> Result<(), DataplaneError> {
        let mut m: Array<&mut MapData, FlowGuard> = self.typed_mut(maps::FLOW_GUARD)?;
        let mut value = m
            .get(&0, 0)
            .map_err(DataplaneError::map(maps::FLOW_GUARD))?;
        f(&mut value);
        m.set(0, value, 0)
            .map_err(DataplaneError::map(maps::FLOW_GUARD))
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

    /// Writes `flows` (a migrated table's) into the connection table, before the program
    /// that uses it is attached (nothing else writes it meanwhile); returns how many it took.
    /// A flow whose bucket is full is left to Maglev. Each is stamped now and used, as the
    /// live flows they are most likely to be.
    pub fn restore_flows(
        &mut self,
        flows: &[(FlowKey, FlowValue)],
    ) -> Result<usize, DataplaneError> {
        let mask = self.conntrack_mask()?;
        let keys = self.flow_keys();
        let stamp = flow_clock(sys::monotonic_ns());
        let mut buckets: std::collections::BTreeMap<u32, Vec<&(FlowKey, FlowValue)>> =
            std::collections::BTreeMap::new();
        for f in flows {
            buckets
                .entry(flow_bucket(flow_index_hash(&f.0.words(), &keys), mask))
                .or_default()
                .push(f);
        }
        let mut table: Array<&mut MapData, FlowBucket> = self.typed_mut(maps::CONNTRACK)?;
        let mut kept = 0;
        for (i, fs) in buckets {
            let mut b = table
                .get(&i, 0)
                .map_err(DataplaneError::map(maps::CONNTRACK))?;
            kept += fs
                .iter()
                .filter(|(k, v)| b.put(*k, *v, stamp, &keys))
                .count();
            table
                .set(i, b, 0)
                .map_err(DataplaneError::map(maps::CONNTRACK))?;
        }
        Ok(kept)
    }

    /// The connection table's hash keys: what the program was loaded with.
    pub fn flow_keys(&self) -> FlowHashKeys {
        FlowHashKeys::new(&self.flow_seed)
    }

    /// Buckets of the connection table minus one, from the map itself.
    fn conntrack_mask(&self) -> Result<u32, DataplaneError> {
        let table: Array<&MapData, FlowBucket> = self.typed(maps::CONNTRACK)?;
        Ok(table.len().max(1) - 1)
    }

    /// The connection-table entry of `key`, if any.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, DataplaneError> {
        let mask = self.conntrack_mask()?;
        let keys = self.flow_keys();
        let table: Array<&MapData, FlowBucket> = self.typed(maps::CONNTRACK)?;
        let b = table
            .get(&flow_bucket(flow_index_hash(&key.words(), &keys), mask), 0)
            .map_err(DataplaneError::map(maps::CONNTRACK))?;
        Ok(b.find(key, &keys).map(|w| b.ways[w].value))
    }

    /// Points the entry of `key` at `backend` without updating its check, as a reader sees
    /// a way another CPU is halfway through rewriting: lets tests show that such a way is
    /// not followed. `false` when the flow has no entry.
    pub fn tear_flow(&mut self, key: &FlowKey, backend: u32) -> Result<bool, DataplaneError> {
        let keys = self.flow_keys();
        let i = flow_bucket(flow_index_hash(&key.words(), &keys), self.conntrack_mask()?);
        let mut table: Array<&mut MapData, FlowBucket> = self.typed_mut(maps::CONNTRACK)?;
        let mut b = table
            .get(&i, 0)
            .map_err(DataplaneError::map(maps::CONNTRACK))?;
        let Some(w) = b.find(key, &keys) else {
            return Ok(false);
        };
        b.ways[w].value.backend = backend;
        table
            .set(i, b, 0)
            .map_err(DataplaneError::map(maps::CONNTRACK))?;
        Ok(true)
    }

    /// Every flow in the connection table.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, DataplaneError> {
        let table: Array<&MapData, FlowBucket> = self.typed(maps::CONNTRACK)?;
        let mut out = Vec::new();
        for b in table.iter() {
            out.extend(b.map_err(DataplaneError::map(maps::CONNTRACK))?.flows());
        }
        Ok(out)
    }
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
