//! Adopting the pins of a previous instance when the connection table it left was made
//! differently: the LRU hash of earlier versions (one shared LRU, map flags 0, or an LRU list
//! per CPU, flags 2), or another size. The old table is made by `bpftool`, as an older
//! portier would have left it.
//!
//! Needs root and bpffs; pins go under /sys/fs/bpf/portier-test-pins/ and are removed also
//! when a test fails.

use std::{path::PathBuf, process::Command};

use portier::dataplane::*;

mod common;
use common::*;

const PIN_ROOT: &str = "/sys/fs/bpf/portier-test-pins";

/// Removes the node's pin directory on drop, whatever the test did.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One test at a time: a node's lock is an flock, and a `bpftool` forked by the other test
/// while this one holds it keeps a copy of the descriptor until its exec, so reloading the
/// node right after dropping it could find it still locked.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn bpftool(args: &[&str]) -> String {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool (apt-get install bpftool)");
    assert!(
        out.status.success(),
        "bpftool {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn hex(bytes: &[u8]) -> Vec<String> {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn flow(sport: u16) -> FlowKey {
    FlowKey {
        src: v4(CLIENT),
        dst: v4(VIP),
        sport: sport.to_be(),
        dport: 80u16.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V4,
        _pad: [0; 2],
    }
}

fn key_bytes(k: &FlowKey) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    b.extend_from_slice(&k.src);
    b.extend_from_slice(&k.dst);
    b.extend_from_slice(&k.sport.to_ne_bytes());
    b.extend_from_slice(&k.dport.to_ne_bytes());
    b.extend_from_slice(&[k.proto, k.family, 0, 0]);
    b
}

/// `(type, flags, max_entries)` of the pinned map at `path`.
fn map_shape(path: &str) -> (String, u64, u64) {
    let v: serde_json::Value =
        serde_json::from_str(&bpftool(&["-j", "map", "show", "pinned", path])).expect("json");
    (
        v["type"].as_str().expect("type").to_string(),
        v["flags"].as_u64().expect("flags"),
        v["max_entries"].as_u64().expect("max_entries"),
    )
}

fn options(node: &str, size: u32) -> DataplaneOptions {
    let mut o = DataplaneOptions::new(node, Vec::new());
    o.pin_root = PIN_ROOT.into();
    o.keep_pinned = true;
    o.conntrack_size = size;
    o
}

/// An earlier version's table (an LRU hash with `flags`) with `flows` in it, pinned where
/// this version's table was.
fn replace_with_lru(path: &str, flags: u32, flows: &[(FlowKey, FlowValue)]) {
    std::fs::remove_file(path).expect("removing the new table's pin");
    let flags = flags.to_string();
    bpftool(&[
        "map",
        "create",
        path,
        "type",
        "lru_hash",
        "key",
        "40",
        "value",
        "8",
        "entries",
        "4096",
        "name",
        "CONNTRACK",
        "flags",
        &flags,
    ]);
    for (k, v) in flows {
        let mut args = vec!["map", "update", "pinned", path, "key", "hex"];
        let key = hex(&key_bytes(k));
        args.extend(key.iter().map(String::as_str));
        let mut value = v.backend.to_ne_bytes().to_vec();
        value.extend_from_slice(&v.generation.to_ne_bytes());
        let value = hex(&value);
        args.extend(["value", "hex"]);
        args.extend(value.iter().map(String::as_str));
        bpftool(&args);
    }
    assert_eq!(map_shape(path).0, "lru_hash");
}

#[test]
fn an_lru_table_left_pinned_is_migrated_with_its_flows() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The shared LRU of the first versions, then the one with an LRU list per CPU.
    for flags in [0, 2] {
        let node = format!("ftmig-flags{flags}");
        let _pins = Pins(PathBuf::from(PIN_ROOT).join(&node));
        let path = format!("{PIN_ROOT}/{node}/CONNTRACK");
        drop(Dataplane::load(&options(&node, 4096)).expect("first load"));
        assert_eq!(
            map_shape(&path),
            ("array".to_string(), 0, 512),
            "this version makes an array of 4096 / 8 buckets"
        );

        let flows: Vec<(FlowKey, FlowValue)> = (0..300)
            .map(|i| {
                let v = FlowValue {
                    backend: 1 + i % 3,
                    generation: 7,
                };
                (flow(40_000 + i as u16), v)
            })
            .collect();
        replace_with_lru(&path, flags, &flows);

        let dp = Dataplane::load(&options(&node, 4096)).expect("load over the old table");
        assert!(dp.adopted(), "the other maps are still adopted");
        assert_eq!(map_shape(&path).0, "array");
        for (k, v) in &flows {
            assert_eq!(dp.flow(k).expect("lookup"), Some(*v), "flow {k:?} lost");
        }
        // Named fields in the dump: the flow's addresses and its backend.
        let dump = bpftool(&["map", "dump", "pinned", &path]);
        for field in [
            "\"tags\"",
            "\"ways\"",
            "\"src\"",
            "\"backend\": 1",
            "\"sport\"",
        ] {
            assert!(dump.contains(field), "{field} not in the dump");
        }
        drop(dp);

        // Adopted as it is now: the same table, nothing to migrate, the flows still there.
        let dp = Dataplane::load(&options(&node, 4096)).expect("load again");
        assert_eq!(dp.flow(&flows[0].0).expect("lookup"), Some(flows[0].1));
        assert_eq!(dp.flows().expect("flows").len(), flows.len());
    }
}

/// Backend 1 and a TCP service on the VIP's port 80 whose whole table points at it.
fn one_service(dp: &mut Dataplane) {
    dp.set_backend(
        1,
        &Backend {
            mac: host_mac(1),
            src_mac: LB_MAC,
            ifindex: LO,
            generation: 1,
            flags: BACKEND_F_VALID,
            addr: v4([10, 0, 0, 21]),
            family: FAMILY_V4,
            _pad: [0; 3],
        },
    )
    .expect("backend");
    let key = ServiceKey {
        addr: v4(VIP),
        port: 80u16.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V4,
    };
    dp.set_service(key, 0, &[1; 65537]).expect("service");
}

#[test]
fn a_changed_conntrack_size_takes_effect_on_restart_and_keeps_the_flows() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = "ftmig-size";
    let _pins = Pins(PathBuf::from(PIN_ROOT).join(node));
    let path = format!("{PIN_ROOT}/{node}/CONNTRACK");
    let mut dp = Dataplane::load(&options(node, 4096)).expect("first load");
    one_service(&mut dp);
    // A real flow, written by the program.
    let mut syn = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(40_000, 80, 1, 65535)
        .syn()
        .write(&mut syn, b"")
        .expect("frame");
    assert_eq!(
        dp.test_run("portier_lb", &syn, 1).expect("run").action,
        XDP_TX
    );
    let recorded = dp.flow(&flow(40_000)).expect("lookup").expect("recorded");
    drop(dp);

    let dp = Dataplane::load(&options(node, 8192)).expect("load with a bigger table");
    assert_eq!(map_shape(&path).2, 8192 / 8);
    assert_eq!(dp.flow(&flow(40_000)).expect("lookup"), Some(recorded));
}

/// `frame` of `flow(sport)`: a SYN, or else an ACK of an established connection.
fn tcp_frame(sport: u16, syn: bool) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(sport, 80, 1, 65535);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut frame = Vec::new();
    b.write(&mut frame, b"").expect("frame");
    frame
}

/// The seed pinned at `path` (`CONNTRACK_SEED`), as `FlowHashKeys`.
fn pinned_keys(path: &str) -> FlowHashKeys {
    let v: serde_json::Value =
        serde_json::from_str(&bpftool(&["-j", "map", "dump", "pinned", path])).expect("json");
    let words = v[0]["formatted"]["value"]
        .as_array()
        .or_else(|| v[0]["value"].as_array())
        .unwrap_or_else(|| panic!("no value in {v}"));
    let mut seed = [0u32; 10];
    for (s, w) in seed.iter_mut().zip(words) {
        *s = w.as_u64().unwrap_or_else(|| panic!("seed word {w}")) as u32;
    }
    assert_eq!(words.len(), 10, "{v}");
    FlowHashKeys::new(&seed)
}

/// Sends each flow's ACK through the program; how many hit their connection-table entry.
fn hits(dp: &Dataplane, sports: impl Iterator<Item = u16>) -> u64 {
    let before = dp.reason(Reason::ConntrackHit).expect("reasons");
    for sport in sports {
        let action = dp
            .test_run("portier_lb", &tcp_frame(sport, false), 1)
            .expect("run")
            .action;
        assert_eq!(action, XDP_TX);
    }
    dp.reason(Reason::ConntrackHit).expect("reasons") - before
}

/// The connection table's hash seed lives exactly as long as the pinned table: random for a
/// new table, pinned beside it and kept by a restart (the program's entries still hit, and
/// userspace finds them); 0 for a table pinned by a build without the seed; new for a table
/// migration makes anew, whose refill must then hash with the new seed.
#[test]
fn the_table_seed_is_random_pinned_and_kept_with_the_table() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = "ftseed";
    let _pins = Pins(PathBuf::from(PIN_ROOT).join(node));
    let seed_path = format!("{PIN_ROOT}/{node}/CONNTRACK_SEED");
    let mut dp = Dataplane::load(&options(node, 4096)).expect("first load");
    let keys = dp.flow_keys();
    assert_ne!(
        keys,
        FlowHashKeys::UNSEEDED,
        "a new table gets a random seed"
    );
    assert_eq!(pinned_keys(&seed_path), keys, "the seed is pinned");
    one_service(&mut dp);
    let seeded = 41_000..41_064u16;
    for sport in seeded.clone() {
        let action = dp
            .test_run("portier_lb", &tcp_frame(sport, true), 1)
            .expect("run")
            .action;
        assert_eq!(action, XDP_TX);
    }
    // Found by userspace, which computes the bucket from the seed: not where the unseeded
    // hash would put most of them.
    let mask = conntrack_buckets(4096) - 1;
    let mut moved = 0;
    for sport in seeded.clone() {
        let w = flow(sport).words();
        let value = dp.flow(&flow(sport)).expect("lookup");
        assert_eq!(value.map(|v| v.backend), Some(1), "flow {sport} not found");
        moved += u32::from(
            flow_bucket(flow_index_hash(&w, &keys), mask)
                != flow_bucket(flow_index_hash(&w, &FlowHashKeys::UNSEEDED), mask),
        );
    }
    assert!(moved > 48, "only {moved} of 64 flows moved by the seed");
    drop(dp);

    // A restart adopts the table with its seed: the program's entries still hit.
    let dp = Dataplane::load(&options(node, 4096)).expect("restart");
    assert_eq!(dp.flow_keys(), keys, "the restart keeps the seed");
    assert_eq!(hits(&dp, seeded.clone()), 64);
    drop(dp);

    // A table pinned by a build before the seed (no seed pin): adopted with seed 0, which
    // is then pinned, so the next restart keeps it too.
    std::fs::remove_file(&seed_path).expect("removing the seed pin");
    let dp = Dataplane::load(&options(node, 4096)).expect("load an old build's table");
    assert_eq!(dp.flow_keys(), FlowHashKeys::UNSEEDED);
    assert_eq!(pinned_keys(&seed_path), FlowHashKeys::UNSEEDED);
    let unseeded = 42_000..42_016u16;
    for sport in unseeded.clone() {
        dp.test_run("portier_lb", &tcp_frame(sport, true), 1)
            .expect("run");
        assert!(dp.flow(&flow(sport)).expect("lookup").is_some());
    }
    drop(dp);
    let dp = Dataplane::load(&options(node, 4096)).expect("restart, seed 0");
    assert_eq!(dp.flow_keys(), FlowHashKeys::UNSEEDED);
    assert_eq!(hits(&dp, unseeded.clone()), 16);
    drop(dp);

    // Another size: a new table, a new random seed; the migrated flows are put where the
    // program, with the new seed, finds them.
    let dp = Dataplane::load(&options(node, 8192)).expect("load with a bigger table");
    let new = dp.flow_keys();
    assert_ne!(
        new,
        FlowHashKeys::UNSEEDED,
        "the new table gets a random seed"
    );
    assert_eq!(pinned_keys(&seed_path), new);
    for sport in unseeded.clone() {
        assert!(
            dp.flow(&flow(sport)).expect("lookup").is_some(),
            "flow {sport} lost"
        );
    }
    assert_eq!(hits(&dp, unseeded), 16);
}
