use crate::config::{Config, Forwarding, Protocol, ServiceConfig};
use crate::l4::maglev::{self, MaglevInput};
use dataplane_common::{
    BACKEND_F_VALID, Backend, FAMILY_V4, FAMILY_V6, MAX_BACKENDS, MAX_SERVICES, NO_BACKEND,
    PROTO_TCP, PROTO_UDP, ServiceKey, ServiceValue,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// Where a backend's frames go: the backend itself (on-link) or, for IPIP, the gateway
/// that routes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// Our MAC address on `ifindex`.
    pub src_mac: [u8; 6],
}

/// One change to the dataplane maps, in the order it must be applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    SetBackend {
        id: u32,
        backend: Backend,
    },
    SetService {
        key: ServiceKey,
        id: u32,
        table: Arc<Vec<u32>>,
        forwarding: Forwarding,
    },
    RemoveService {
        key: ServiceKey,
        id: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct ServiceState {
    id: u32,
    name: String,
    /// (address, weight) in configuration order; the table is rebuilt only when this changes.
    members: Vec<(IpAddr, u32)>,
    table_size: u32,
    /// `None` after `adopt`: unknown until the config is applied.
    forwarding: Option<Forwarding>,
}

#[derive(Debug, Clone)]
struct BackendState {
    id: u32,
    generation: u32,
    next_hop: Option<NextHop>,
}

/// The L4 state as the maps hold it.
#[derive(Debug, Default)]
pub struct Reconciler {
    services: BTreeMap<ServiceKey, ServiceState>,
    backends: BTreeMap<IpAddr, BackendState>,
    /// Last generation given out per backend slot: a reused slot never repeats a generation, so
    /// connection-table entries of its previous occupant are recognised as stale.
    slot_generations: Vec<u32>,
    free_slots: BTreeSet<u32>,
    free_service_ids: BTreeSet<u32>,
    next_service_id: u32,
    /// Table slots per backend of each service (by name), as last built: the share of new
    /// flows each gets, for the status.
    shares: BTreeMap<String, BTreeMap<IpAddr, u32>>,
}

/// The map key of a configured service.
pub fn service_key(s: &ServiceConfig) -> ServiceKey {
    let (addr, family) = addr_bytes(s.vip);
    ServiceKey {
        addr,
        port: s.port.to_be(),
        proto: match s.protocol {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        },
        family,
    }
}

fn addr_bytes(ip: IpAddr) -> ([u8; 16], u8) {
    let mut b = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            b[..4].copy_from_slice(&v4.octets());
            (b, FAMILY_V4)
        }
        IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
    }
}

impl Reconciler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from what a previous instance left in the maps (`backends`: every slot, index =
    /// id), so that ids and generations carry over and live flows keep their backend.
    pub fn adopt(backends: &[Backend], services: &[(ServiceKey, ServiceValue)]) -> Self {
        let mut r = Self::new();
        r.slot_generations = backends.iter().map(|b| b.generation).collect();
        for (id, b) in (0u32..).zip(backends) {
            let addr = match b.family {
                FAMILY_V4 => Some(IpAddr::from([b.addr[0], b.addr[1], b.addr[2], b.addr[3]])),
                FAMILY_V6 => Some(IpAddr::from(b.addr)),
                _ => None,
            };
            match addr {
                Some(addr) if !r.backends.contains_key(&addr) => {
                    let next_hop = (b.flags & BACKEND_F_VALID != 0).then_some(NextHop {
                        ifindex: b.ifindex,
                        mac: b.mac,
                        src_mac: b.src_mac,
                    });
                    r.backends.insert(
                        addr,
                        BackendState {
                            id,
                            generation: b.generation,
                            next_hop,
                        },
                    );
                }
                _ => {
                    r.free_slots.insert(id);
                }
            }
        }
        let mut used = BTreeSet::new();
        for (key, value) in services {
            used.insert(value.id);
            r.services.insert(
                *key,
                ServiceState {
                    id: value.id,
                    name: String::new(),
                    // Unknown until the config is applied: the table is rewritten once, with
                    // the same content for an unchanged config.
                    members: Vec::new(),
                    table_size: 0,
                    forwarding: None,
                },
            );
        }
        r.next_service_id = used.last().map_or(0, |m| m + 1);
        r.free_service_ids = (0..r.next_service_id)
            .filter(|i| !used.contains(i))
            .collect();
        r
    }

    /// Addresses of every configured backend.
    pub fn backend_addresses(&self) -> Vec<IpAddr> {
        self.backends.keys().copied().collect()
    }

    /// Backends that only IPIP services use: the only ones that may sit behind a router
    /// (a DSR frame must reach the backend itself on the link).
    pub fn routed_ok(config: &Config) -> BTreeSet<IpAddr> {
        let mut dsr = BTreeSet::new();
        let mut ipip = BTreeSet::new();
        for s in &config.services {
            let set = match s.forwarding {
                Forwarding::Dsr => &mut dsr,
                Forwarding::Ipip => &mut ipip,
            };
            set.extend(s.backends.iter().map(|b| b.address));
        }
        ipip.difference(&dsr).copied().collect()
    }

    /// (service name, service id) pairs, for counters.
    pub fn service_ids(&self) -> Vec<(String, u32)> {
        self.services
            .values()
            .map(|s| (s.name.clone(), s.id))
            .collect()
    }

    /// (backend address, slot id) pairs, for counters.
    pub fn backend_ids(&self) -> Vec<(IpAddr, u32)> {
        self.backends.iter().map(|(a, b)| (*a, b.id)).collect()
    }

    pub fn next_hop(&self, addr: &IpAddr) -> Option<NextHop> {
        self.backends.get(addr).and_then(|b| b.next_hop)
    }

    /// Operations that take the maps from the current state to `config`'s. Nothing is changed
    /// when the result is an error (limits exceeded), so the running state keeps serving.
    pub fn apply(&mut self, config: &Config) -> Result<Vec<Op>, String> {
        let wanted_backends: BTreeSet<IpAddr> = config
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| b.address))
            .collect();
        let added = wanted_backends
            .iter()
            .filter(|a| !self.backends.contains_key(a))
            .count();
        let removed = self
            .backends
            .keys()
            .filter(|a| !wanted_backends.contains(a))
            .count();
        if self.backends.len() + added - removed > MAX_BACKENDS as usize {
            return Err(format!("more than {MAX_BACKENDS} backends"));
        }
        if config.services.len() > MAX_SERVICES as usize {
            return Err(format!("more than {MAX_SERVICES} services"));
        }

        let mut ops = Vec::new();
        // 1. New backends first, so tables never point at an empty slot.
        for addr in &wanted_backends {
            if !self.backends.contains_key(addr) {
                let id = self.take_slot();
                let generation = self.bump_generation(id);
                let st = BackendState {
                    id,
                    generation,
                    next_hop: None,
                };
                ops.push(Op::SetBackend {
                    id,
                    backend: backend_value(*addr, &st),
                });
                self.backends.insert(*addr, st);
            }
        }
        // 2. Services: new or changed tables.
        let wanted_keys: BTreeSet<ServiceKey> = config.services.iter().map(service_key).collect();
        let stale: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !wanted_keys.contains(k))
            .copied()
            .collect();
        for key in &stale {
            if let Some(st) = self.services.remove(key) {
                self.free_service_ids.insert(st.id);
                self.shares.remove(&st.name);
                ops.push(Op::RemoveService {
                    key: *key,
                    id: st.id,
                });
            }
        }
        let table_size = config.dataplane.maglev_table_size;
        for svc in &config.services {
            let key = service_key(svc);
            let members: Vec<(IpAddr, u32)> =
                svc.backends.iter().map(|b| (b.address, b.weight)).collect();
            if let Some(st) = self.services.get_mut(&key) {
                st.name = svc.name.clone();
                if st.members == members
                    && st.table_size == table_size
                    && st.forwarding == Some(svc.forwarding)
                {
                    continue;
                }
                st.members = members;
                st.table_size = table_size;
                st.forwarding = Some(svc.forwarding);
            } else {
                let id = self.take_service_id();
                self.services.insert(
                    key,
                    ServiceState {
                        id,
                        name: svc.name.clone(),
                        members,
                        table_size,
                        forwarding: Some(svc.forwarding),
                    },
                );
            }
            if let Some(st) = self.services.get(&key) {
                let (table, slots) = self.table_for(st);
                ops.push(Op::SetService {
                    key,
                    id: st.id,
                    table: Arc::new(table),
                    forwarding: st.forwarding.unwrap_or_default(),
                });
                self.shares.insert(st.name.clone(), slots);
            }
        }
        // 3. Backends nobody references any more: invalidate (new generation) and free the slot.
        let gone: Vec<IpAddr> = self
            .backends
            .keys()
            .filter(|a| !wanted_backends.contains(a))
            .copied()
            .collect();
        for addr in gone {
            if let Some(st) = self.backends.remove(&addr) {
                let generation = self.bump_generation(st.id);
                ops.push(Op::SetBackend {
                    id: st.id,
                    backend: Backend {
                        generation,
                        ..Backend::default()
                    },
                });
                self.free_slots.insert(st.id);
            }
        }
        Ok(ops)
    }

    /// Records a (re)resolved next hop; returns the map update if anything changed.
    pub fn set_next_hop(&mut self, addr: IpAddr, next_hop: Option<NextHop>) -> Option<Op> {
        let st = self.backends.get_mut(&addr)?;
        if st.next_hop == next_hop {
            return None;
        }
        st.next_hop = next_hop;
        let st = st.clone();
        Some(Op::SetBackend {
            id: st.id,
            backend: backend_value(addr, &st),
        })
    }

    /// Table slots per backend of service `name`, as last built.
    pub fn slots(&self, name: &str) -> Option<&BTreeMap<IpAddr, u32>> {
        self.shares.get(name)
    }

    /// The service's Maglev table (backend slot ids) and how many entries each member got.
    fn table_for(&self, st: &ServiceState) -> (Vec<u32>, BTreeMap<IpAddr, u32>) {
        let keys: Vec<String> = st.members.iter().map(|(a, _)| a.to_string()).collect();
        let inputs: Vec<MaglevInput<'_>> = keys
            .iter()
            .zip(&st.members)
            .map(|(k, (_, w))| MaglevInput { key: k, weight: *w })
            .collect();
        let mut slots = BTreeMap::new();
        let table = match maglev::build(&inputs, st.table_size) {
            Some(t) => t
                .into_iter()
                .map(|i| {
                    let member = st.members.get(i as usize);
                    if let Some((a, _)) = member {
                        *slots.entry(*a).or_insert(0) += 1;
                    }
                    member
                        .and_then(|(a, _)| self.backends.get(a))
                        .map_or(NO_BACKEND, |b| b.id)
                })
                .collect(),
            None => vec![NO_BACKEND; st.table_size as usize],
        };
        (table, slots)
    }

    fn take_slot(&mut self) -> u32 {
        if let Some(id) = self.free_slots.pop_first() {
            return id;
        }
        let id = self.slot_generations.len() as u32;
        self.slot_generations.push(0);
        id
    }

    fn bump_generation(&mut self, id: u32) -> u32 {
        let g = &mut self.slot_generations[id as usize];
        *g = g.wrapping_add(1).max(1);
        *g
    }

    fn take_service_id(&mut self) -> u32 {
        if let Some(id) = self.free_service_ids.pop_first() {
            return id;
        }
        let id = self.next_service_id;
        self.next_service_id += 1;
        id
    }
}

fn backend_value(addr: IpAddr, st: &BackendState) -> Backend {
    let (a, family) = addr_bytes(addr);
    let mut b = Backend {
        addr: a,
        family,
        generation: st.generation,
        ..Backend::default()
    };
    if let Some(nh) = st.next_hop {
        b.mac = nh.mac;
        b.src_mac = nh.src_mac;
        b.ifindex = nh.ifindex;
        b.flags = BACKEND_F_VALID;
    }
    b
}

#[cfg(test)]
mod tests;
