//! `portier stats`: counters of a running node, read straight from its pinned maps, so they
//! work even when the daemon is busy or gone.

use anyhow::{Context, Result};
use aya::maps::{Map, MapData, PerCpuArray};
use dataplane_common::{Counters, REASON_SLOTS, Reason, maps};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Names for the ids in the maps, written by the daemon next to its run state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct IdNames {
    pub services: BTreeMap<u32, String>,
    pub backends: BTreeMap<u32, String>,
}

/// Where the daemon of `node` keeps [`IdNames`].
pub fn id_names_path(node: &str) -> PathBuf {
    PathBuf::from("/run/portier").join(node).join("ids.json")
}

#[derive(Debug, Serialize)]
struct Report {
    reasons: BTreeMap<&'static str, u64>,
    services: BTreeMap<String, Totals>,
    backends: BTreeMap<String, Totals>,
}

#[derive(Debug, Serialize)]
struct Totals {
    packets: u64,
    bytes: u64,
}

fn open(pin_dir: &Path, name: &str) -> Result<Map> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "cannot open {} (is portier running with this node name?)",
            path.display()
        )
    })?;
    Ok(Map::from_map_data(data)?)
}

fn sum_counters(map: &PerCpuArray<MapData, Counters>, id: u32) -> Result<Counters> {
    let mut c = Counters::default();
    for v in map.get(&id, 0)?.iter() {
        c.packets += v.packets;
        c.bytes += v.bytes;
    }
    Ok(c)
}

pub fn print(pin_dir: &Path, json: bool) -> Result<()> {
    let node = pin_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let names: IdNames = std::fs::read(id_names_path(&node))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();

    // One per-CPU value holding every reason's count (one lookup per packet in the program).
    let reasons_map: PerCpuArray<MapData, [u64; REASON_SLOTS as usize]> =
        open(pin_dir, maps::REASONS)?.try_into()?;
    let per_cpu = reasons_map.get(&0, 0)?;
    let mut reasons = BTreeMap::new();
    for r in Reason::ALL {
        let total: u64 = per_cpu.iter().map(|c| c[r as usize]).sum();
        reasons.insert(r.name(), total);
    }
    let svc: PerCpuArray<MapData, Counters> = open(pin_dir, maps::SVC_STATS)?.try_into()?;
    let be: PerCpuArray<MapData, Counters> = open(pin_dir, maps::BACKEND_STATS)?.try_into()?;
    let mut services = BTreeMap::new();
    for (id, name) in &names.services {
        let c = sum_counters(&svc, *id)?;
        services.insert(
            name.clone(),
            Totals {
                packets: c.packets,
                bytes: c.bytes,
            },
        );
    }
    let mut backends = BTreeMap::new();
    for (id, name) in &names.backends {
        let c = sum_counters(&be, *id)?;
        backends.insert(
            name.clone(),
            Totals {
                packets: c.packets,
                bytes: c.bytes,
            },
        );
    }
    let report = Report {
        reasons,
        services,
        backends,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{:<28} {:>14} {:>16}", "service", "packets", "bytes");
    for (n, c) in &report.services {
        println!("{n:<28} {:>14} {:>16}", c.packets, c.bytes);
    }
    println!("{:<28} {:>14} {:>16}", "backend", "packets", "bytes");
    for (n, c) in &report.backends {
        println!("{n:<28} {:>14} {:>16}", c.packets, c.bytes);
    }
    println!("{:<28} {:>14}", "event", "count");
    for (n, v) in &report.reasons {
        if *v > 0 {
            println!("{n:<28} {v:>14}");
        }
    }
    Ok(())
}
