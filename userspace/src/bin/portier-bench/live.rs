//! `portier-bench xdp-live`: packets per second forwarded between two namespaces.
//!
//! ```text
//!  <prefix>g (generator)                      <prefix>l (load balancer)
//!  portier_bench_gen --XDP_TX--> veth <-> veth --> portier_lb (or portier_floor)
//!  portier_bench_sink (XDP_DROP) <------------------ XDP_TX
//! ```
//!
//! The generator is `BPF_PROG_TEST_RUN` in live-frames mode with the generator veth as
//! ingress, so each copy of the frame is really transmitted; the veth peer runs the program
//! under test in native mode, which sends the frame back (L2 DSR to a backend behind the same
//! port), where the sink drops it. All of it runs in softirq on the generator's CPU, so
//! forwarded packets over the run's wall time is the single-core forwarding rate of the
//! whole path; the floor (MAC swap + `XDP_TX` in place of the balancer) in the same run gives
//! the ratio.

use std::{fs::File, os::fd::AsRawFd as _, process::Command, thread, time::Duration};

use anyhow::{Context as _, bail};
use dataplane_common::bench::{MIXED_CLIENT, MIXED_FLOWS, MIXED_PORT_BASE};
use portier::dataplane::{
    BACKEND_F_VALID, Backend, Dataplane, DataplaneOptions, FAMILY_V4, PROTO_TCP, Reason,
    ServiceKey, XdpAttachMode, attach_bench_program, pin_to_cpu,
};

use super::{ACK, SYN, VIP, frames};

/// A generator program and, for the mixed one, its period of new flows.
#[derive(Clone, Copy)]
enum Gen {
    /// The template frame, always: one established flow.
    Same,
    /// `bench::MIXED_FLOWS` established flows in turn, and one new flow in `n` frames (0: none).
    Mixed(u64),
}

pub struct LiveParams {
    pub prefix: String,
    pub packets: u32,
    pub batch: u32,
    pub rounds: usize,
    pub cpu: usize,
}

/// Namespaces and veth pair; removed on drop, also on panic or error.
struct Topology {
    gen_ns: String,
    lb_ns: String,
    gen_if: String,
    lb_if: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Topology {
    fn up(prefix: &str) -> anyhow::Result<Self> {
        let t = Topology {
            gen_ns: format!("{prefix}g"),
            lb_ns: format!("{prefix}l"),
            gen_if: format!("{prefix}-gen"),
            lb_if: format!("{prefix}-lb"),
        };
        // Left over from a run that was killed: start clean.
        t.remove();
        ip(&["netns", "add", &t.gen_ns])?;
        ip(&["netns", "add", &t.lb_ns])?;
        ip(&[
            "link", "add", &t.gen_if, "netns", &t.gen_ns, "type", "veth", "peer", "name", &t.lb_if,
            "netns", &t.lb_ns,
        ])?;
        for (ns, dev) in [(&t.gen_ns, &t.gen_if), (&t.lb_ns, &t.lb_if)] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(t)
    }

    fn remove(&self) {
        for ns in [&self.gen_ns, &self.lb_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Moves the calling thread into namespace `ns` (network namespaces are per thread).
fn enter(ns: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{ns}");
    let f = File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: a valid namespace fd, for the duration of the call.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns {ns}"));
    }
    Ok(())
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()).with_context(|| format!("interface {name}")),
        i => Ok(i),
    }
}

/// `ethtool -S` counter `name` of `dev` in namespace `ns`.
fn ethtool_stat(ns: &str, dev: &str, name: &str) -> anyhow::Result<u64> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(["ethtool", "-S", dev])
        .output()
        .context("cannot run ethtool")?;
    if !out.status.success() {
        bail!("ethtool -S {dev}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            (k.trim() == name).then(|| v.trim().parse().ok())?
        })
        .with_context(|| format!("no {name} in ethtool -S {dev}"))
}

/// Runs generator `program` in the generator namespace on `cpu`; returns the run's wall time.
fn generate(
    t: &Topology,
    p: &LiveParams,
    generator: Gen,
    frame: &[u8],
) -> anyhow::Result<Duration> {
    let (ns, dev) = (t.gen_ns.clone(), t.gen_if.clone());
    let (packets, batch, cpu) = (p.packets, p.batch, p.cpu);
    let frame = frame.to_vec();
    thread::scope(|s| {
        s.spawn(move || -> anyhow::Result<Duration> {
            pin_to_cpu(cpu)?;
            enter(&ns)?;
            let mut gen_dp = Dataplane::load_for_test(1024)?;
            let idx = ifindex(&dev)?;
            let program = match generator {
                Gen::Same => "portier_bench_gen",
                Gen::Mixed(period) => {
                    gen_dp.set_bench_gen_period(period)?;
                    "portier_bench_gen_mixed"
                }
            };
            Ok(gen_dp.test_run_live(program, &frame, idx, packets, batch)?)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("generator thread panicked"))?
    })
}

struct Sample {
    pps: f64,
    forwarded: u64,
    /// Frames that made it back to the generator side (the sink's drops): proof that
    /// `XDP_TX` really transmitted, not just returned the verdict.
    returned: u64,
}

/// One timed run: forwarded counts from the LB veth's `xdp_tx` (and `count`, when given,
/// from the balancer's own counters).
fn sample(
    t: &Topology,
    p: &LiveParams,
    generator: Gen,
    frame: &[u8],
    count: Option<&dyn Fn() -> anyhow::Result<u64>>,
) -> anyhow::Result<(Sample, Option<u64>)> {
    let tx0 = ethtool_stat(&t.lb_ns, &t.lb_if, "rx_queue_0_xdp_tx")?;
    let rx0 = ethtool_stat(&t.gen_ns, &t.gen_if, "rx_queue_0_xdp_drops")?;
    let c0 = count.map(|c| c()).transpose()?;
    let wall = generate(t, p, generator, frame)?;
    // The last batches may still sit in a veth ring when the run returns: read until the
    // far end stops moving.
    let mut rx1 = ethtool_stat(&t.gen_ns, &t.gen_if, "rx_queue_0_xdp_drops")?;
    let settle = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        thread::sleep(Duration::from_millis(20));
        let now = ethtool_stat(&t.gen_ns, &t.gen_if, "rx_queue_0_xdp_drops")?;
        if now == rx1 || std::time::Instant::now() > settle {
            break;
        }
        rx1 = now;
    }
    let tx1 = ethtool_stat(&t.lb_ns, &t.lb_if, "rx_queue_0_xdp_tx")?;
    let c1 = count.map(|c| c()).transpose()?;
    let forwarded = tx1 - tx0;
    Ok((
        Sample {
            pps: forwarded as f64 / wall.as_secs_f64(),
            forwarded,
            returned: rx1 - rx0,
        },
        c0.zip(c1).map(|(a, b)| b - a),
    ))
}

pub fn run(p: &LiveParams) -> anyhow::Result<()> {
    let t = Topology::up(&p.prefix)?;
    // This thread lives in the LB namespace from here on: the balancer and floor are loaded
    // and attached here, and their interface is looked up here.
    enter(&t.lb_ns)?;
    let lb_idx = ifindex(&t.lb_if)?;
    let frame = frames::v4(VIP, 40002, 80, Some(ACK));

    let mut floor = Vec::new();
    let mut balancer = Vec::new();
    let mut floor_mixed = Vec::new();
    let mut many = Vec::new();
    let mut mixed = Vec::new();
    let mut counted = Vec::new();
    let mut mixed_paths = Vec::new();
    {
        // Frames the LB sends back end here.
        let _sink = {
            let ns = t.gen_ns.clone();
            let dev = t.gen_if.clone();
            thread::scope(|s| {
                s.spawn(move || -> anyhow::Result<_> {
                    enter(&ns)?;
                    Ok(attach_bench_program("portier_bench_sink", &dev)?)
                })
                .join()
                .map_err(|_| anyhow::anyhow!("sink thread panicked"))?
            })?
        };
        for _ in 0..p.rounds {
            let f = attach_bench_program("portier_floor", &t.lb_if)?;
            floor.push(sample(&t, p, Gen::Same, &frame, None)?.0);
            floor_mixed.push(sample(&t, p, Gen::Mixed(10), &frame, None)?.0);
            drop(f);

            let mut opts =
                DataplaneOptions::new(format!("bench-{}", p.prefix), vec![t.lb_if.clone()]);
            opts.mode = XdpAttachMode::Native;
            opts.pin_root = "/sys/fs/bpf/portier-bench".into();
            let mut dp = Dataplane::load(&opts)?;
            let mut vip = [0u8; 16];
            vip[..4].copy_from_slice(&VIP);
            let backend = Backend {
                mac: [0x02, 0, 0, 0, 0x21, 1],
                src_mac: dp.interfaces()[0].mac,
                ifindex: lb_idx,
                generation: 1,
                flags: BACKEND_F_VALID,
                addr: [10, 0, 0, 21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                family: FAMILY_V4,
                _pad: [0; 3],
            };
            dp.set_backend(1, &backend)?;
            let key = ServiceKey {
                addr: vip,
                port: 80u16.to_be(),
                proto: PROTO_TCP,
                family: FAMILY_V4,
            };
            dp.set_service(key, 0, &[1; 65537])?;
            // The established flows are opened by their SYNs first, on the CPU the frames
            // will arrive on (this thread's, as the generator's).
            dp.test_run("portier_lb", &frames::v4(VIP, 40002, 80, Some(SYN)), 1)?;
            for i in 0..MIXED_FLOWS {
                let syn = frames::v4_from(MIXED_CLIENT, VIP, MIXED_PORT_BASE + i, 80, Some(SYN));
                dp.test_run("portier_lb", &syn, 1)?;
            }
            let forwarded_tx = || -> anyhow::Result<u64> { Ok(dp.reason(Reason::ForwardTx)?) };
            let (s, c) = sample(&t, p, Gen::Same, &frame, Some(&forwarded_tx))?;
            counted.push((s.forwarded, c.unwrap_or(0)));
            balancer.push(s);
            // Every new flow of the mixed run written: in a full table it replaces an older
            // unused one (hold 0), the write path's worst case; the established flows, hit
            // meanwhile, stay.
            dp.set_flow_hold(0)?;
            let hits = || -> anyhow::Result<u64> { Ok(dp.reason(Reason::ConntrackHit)?) };
            many.push(sample(&t, p, Gen::Mixed(0), &frame, None)?.0);
            let [new, evicted, full] = [
                Reason::ConntrackNew,
                Reason::ConntrackEvicted,
                Reason::ConntrackTableFull,
            ]
            .map(|r| dp.reason(r));
            let (new, evicted, full) = (new?, evicted?, full?);
            let (s, h) = sample(&t, p, Gen::Mixed(10), &frame, Some(&hits))?;
            mixed_paths.push((
                h.unwrap_or(0),
                dp.reason(Reason::ConntrackNew)? - new,
                dp.reason(Reason::ConntrackEvicted)? - evicted,
                dp.reason(Reason::ConntrackTableFull)? - full,
            ));
            mixed.push(s);
        }
    }
    let median = |v: &mut Vec<Sample>| {
        v.sort_by(|a, b| a.pps.total_cmp(&b.pps));
        let m = &v[v.len() / 2];
        (m.pps, m.forwarded, m.returned)
    };
    let (fpps, ffwd, fret) = median(&mut floor);
    let (bpps, bfwd, bret) = median(&mut balancer);
    let (mfpps, mffwd, mfret) = median(&mut floor_mixed);
    let (mpps, mfwd, mret) = median(&mut mixed);
    let (npps, nfwd, nret) = median(&mut many);
    println!(
        "XDP live frames: {} packets per run in batches of {}, cpu {}, median of {} \
         (veth pair, native XDP; all in softirq on one core)",
        p.packets, p.batch, p.cpu, p.rounds
    );
    println!(
        "{:<34} {:>10} {:>10} {:>8} {:>8}",
        "path", "forwarded", "returned", "Mpps", "x floor"
    );
    let row = |name: &str, fwd: u64, ret: u64, pps: f64, floor: f64| {
        println!(
            "{name:<34} {fwd:>10} {ret:>10} {:>8.3} {:>8.2}",
            pps / 1e6,
            pps / floor.max(1.0)
        );
    };
    row("floor (MAC swap + XDP_TX)", ffwd, fret, fpps, fpps);
    row("balancer, TCP established", bfwd, bret, bpps, fpps);
    row("floor, mixed generator", mffwd, mfret, mfpps, mfpps);
    row(
        "balancer, 10,000 established flows",
        nfwd,
        nret,
        npps,
        mfpps,
    );
    row("balancer, 90% established 10% new", mfwd, mret, mpps, mfpps);
    println!("per balancer run, (veth xdp_tx, balancer's forward_tx counter): {counted:?}");
    println!(
        "per mixed run, (conntrack_hit, conntrack_new, conntrack_evicted, conntrack_table_full) \
         (flood guard off, hold 0: every new flow is written): {mixed_paths:?}"
    );
    Ok(())
}
