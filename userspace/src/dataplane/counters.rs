//! Counters of the running balancer: per service, per backend, per reason, and the memory
//! its maps take. (`stats` reads the same counters from the pins, without a daemon.)

use aya::maps::{MapData, PerCpuArray};
use dataplane_common::{Counters, REASON_SLOTS, Reason, maps};

use super::{ALL_MAPS, Dataplane, DataplaneError};

/// Size and memory of one map, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapMemory {
    pub name: &'static str,
    pub max_entries: u32,
    pub key_size: u32,
    pub value_size: u32,
    /// `max_entries * (key_size + value_size)`, times the CPU count for per-CPU maps.
    pub bytes: u64,
    /// What the kernel charges for the map (`memlock` in /proc/self/fdinfo): with its
    /// buckets, element headers, LRU lists and per-CPU copies.
    pub memlock: Option<u64>,
}

impl Dataplane {
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
                    memlock: fdinfo_memlock(data),
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
        | Map::LpmTrie(d)
        | Map::PerCpuArray(d) => d,
        _ => return None,
    })
}

/// The `memlock:` line of the map fd's /proc/self/fdinfo entry.
fn fdinfo_memlock(map: &MapData) -> Option<u64> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let fd = map.fd().as_fd().as_raw_fd();
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}
