//! Benchmarks. `portier-bench xdp`: ns per packet of the balancer's paths through
//! `BPF_PROG_TEST_RUN`, next to the floor (MAC swap + `XDP_TX`) and a plain `XDP_PASS`.
//! `portier-bench xdp-live`: packets per second forwarded between namespaces (see `live`).

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use portier::dataplane::{
    BACKEND_F_VALID, Backend, DEFAULT_FLOW_HOLD, DEFAULT_MAGLEV_SIZE, Dataplane, Decapsulator,
    EncapSourceConfig, FAMILY_V4, FAMILY_V6, FLOW_WAYS, ForwardMode, NO_BACKEND, PROTO_TCP,
    PROTO_UDP, Reason, ServiceKey, pin_to_cpu,
};

#[derive(Parser)]
#[command(about = "portier benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

mod live;

#[derive(Subcommand)]
enum Cmd {
    /// Packets per second forwarded between two namespaces, generated in live-frames mode,
    /// through the balancer and through the floor.
    XdpLive {
        /// Namespace prefix (namespaces <prefix>g and <prefix>l).
        #[arg(long, default_value = "xl")]
        prefix: String,
        /// Frames generated per run.
        #[arg(long, default_value_t = 2_000_000)]
        packets: u32,
        /// Live-frames batch size (at most 256).
        #[arg(long, default_value_t = 64)]
        batch: u32,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value_t = 0)]
        cpu: usize,
    },
    /// XDP cost per packet class, via BPF_PROG_TEST_RUN.
    Xdp {
        /// Repetitions per measurement (the kernel reports the mean).
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Measurements per case; the median is reported.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// CPU to pin to (per-CPU maps, stable caches).
        #[arg(long, default_value_t = 0)]
        cpu: usize,
        /// Backends in the Maglev table.
        #[arg(long, default_value_t = 100)]
        backends: u32,
        #[arg(long, default_value_t = 65536)]
        conntrack_size: u32,
        /// Only the cases whose name contains this (the floor always runs); for profiling.
        #[arg(long)]
        only: Option<String>,
        /// Distinct flows per round for the new-flow case (one run of one packet each).
        #[arg(long, default_value_t = 20_000)]
        new_flows: u32,
    },
}

const LO: u32 = 1;
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
const MAC_LB: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const CLIENT: [u8; 4] = [198, 51, 100, 10];
const VIP: [u8; 4] = [203, 0, 113, 10];
const OTHER: [u8; 4] = [10, 0, 0, 11];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Xdp {
            repeat,
            rounds,
            cpu,
            backends,
            conntrack_size,
            new_flows,
            only,
        } => xdp(&Params {
            repeat,
            rounds: rounds.max(1),
            cpu,
            backends,
            ct: conntrack_size,
            new_flows: new_flows.max(1),
            only,
        }),
        Cmd::XdpLive {
            prefix,
            packets,
            batch,
            rounds,
            cpu,
        } => live::run(&live::LiveParams {
            prefix,
            packets,
            batch: batch.clamp(1, 256),
            rounds: rounds.max(1),
            cpu,
        }),
    }
}

/// Hand-built frames: the benchmark binary does not depend on a packet library.
mod frames {
    fn sum16(data: &[u8]) -> u16 {
        let mut s: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&super::MAC_LB);
        f.extend_from_slice(&super::MAC_A);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// TCP (flags) or UDP (flags = None) header plus `payload` bytes of zeros.
    fn l4(sport: u16, dport: u16, tcp_flags: Option<u8>, payload: usize) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        match tcp_flags {
            Some(flags) => {
                h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
            }
            None => {
                h.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0]);
            }
        }
        h.resize(h.len() + payload, 0);
        h
    }

    pub fn v4(dst: [u8; 4], sport: u16, dport: u16, tcp_flags: Option<u8>) -> Vec<u8> {
        v4_from(super::CLIENT, dst, sport, dport, tcp_flags)
    }

    pub fn v4_from(
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        tcp_flags: Option<u8>,
    ) -> Vec<u8> {
        let body = l4(sport, dport, tcp_flags, 18);
        let proto = if tcp_flags.is_some() { 6 } else { 17 };
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + body.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let c = sum16(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut f = eth(0x0800);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&body);
        f
    }

    pub fn v6(sport: u16, dport: u16, tcp_flags: Option<u8>) -> Vec<u8> {
        let body = l4(sport, dport, tcp_flags, 18);
        let mut f = eth(0x86dd);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(body.len() as u16).to_be_bytes());
        f.extend_from_slice(&[6, 64]);
        f.extend_from_slice(&super::CLIENT6);
        f.extend_from_slice(&super::VIP6);
        f.extend_from_slice(&body);
        f
    }
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

struct Case {
    name: &'static str,
    program: &'static str,
    frame: Vec<u8>,
    /// Expected XDP action, so a misconfigured run cannot report a wrong path's cost.
    action: u32,
    /// The SYN-flood guard's rate while the case runs (0: off, as a table write costs).
    guard: u32,
    /// `FlowGuard::hold` while the case runs: 0 makes every new flow in a full table evict
    /// (the write path's worst case), the default refuses while the entries are young.
    hold: u32,
    /// The path the case must take, checked once before timing: a TCP "established" case
    /// whose flow was never opened by a SYN times the mid-flow miss (Maglev) instead.
    expect: Option<Reason>,
}

struct Params {
    repeat: u32,
    rounds: usize,
    cpu: usize,
    backends: u32,
    ct: u32,
    new_flows: u32,
    only: Option<String>,
}

/// Mean ns per packet over `frames`, each run once (repeat = 1), so every packet is a
/// different flow. The kernel's per-run figure then also holds one clock read pair, which
/// is why this is reported next to the floor measured the same way.
fn single_runs(
    dp: &Dataplane,
    program: &str,
    frames: &[Vec<u8>],
    action: u32,
) -> anyhow::Result<f64> {
    let mut total = 0u64;
    for f in frames {
        let out = dp.test_run(program, f, 1)?;
        if out.action != action {
            bail!("{program}: action {} instead of {action}", out.action);
        }
        total += out.duration_ns;
    }
    Ok(total as f64 / frames.len() as f64)
}

/// Mean ns per packet of `portier_bench_new_flows` run on every CPU of `cpus` at once, each
/// from its own source addresses (so every packet is a new flow), into the one table.
fn parallel_new_flows(dp: &Dataplane, cpus: &[usize], repeat: u32) -> anyhow::Result<f64> {
    let per_cpu: Vec<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                s.spawn(move || -> anyhow::Result<u64> {
                    pin_to_cpu(cpu)?;
                    let src = [10, 64 + cpu as u8, 0, 1];
                    let frame = frames::v4_from(src, VIP, 1, 80, Some(SYN));
                    Ok(dp
                        .test_run("portier_bench_new_flows", &frame, repeat)?
                        .duration_ns)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow::anyhow!("worker panicked"))?)
            .collect::<anyhow::Result<Vec<u64>>>()
    })?;
    Ok(per_cpu.iter().sum::<u64>() as f64 / per_cpu.len() as f64)
}

/// The IPIP path and the host's decapsulator, each next to DSR and the floor measured the same
/// way: one run per packet (repeat 1), because a repeated run would encapsulate (or strip)
/// the same buffer again and again.
fn encapsulation(dp: &mut Dataplane, table: &[u32], n: u32, tx: u32) -> anyhow::Result<()> {
    let mut v4 = [0u8; 16];
    v4[..4].copy_from_slice(&VIP);
    let ipip_key = ServiceKey {
        addr: v4,
        port: 8080u16.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V4,
    };
    dp.set_encap_source(&EncapSourceConfig {
        v4: Some((std::net::Ipv4Addr::new(10, 255, 0, 0), 24)),
        v6: None,
    })?;
    dp.set_service_with_mode(ipip_key, 3, table, ForwardMode::Ipip)?;
    // Established flows: the SYN records them, the measured packets are ACKs.
    let (syn_dsr, ack_dsr) = (
        frames::v4(VIP, 40001, 80, Some(SYN)),
        frames::v4(VIP, 40001, 80, Some(ACK)),
    );
    let (syn_ipip, ack_ipip) = (
        frames::v4(VIP, 40001, 8080, Some(SYN)),
        frames::v4(VIP, 40001, 8080, Some(ACK)),
    );
    dp.test_run("portier_lb", &syn_dsr, 1)?;
    let encapsulated = dp.test_run("portier_lb", &syn_ipip, 1)?.frame;
    let n = n as usize;
    let floor = single_runs(dp, "portier_floor", &vec![ack_dsr.clone(); n], tx)?;
    let dsr = single_runs(dp, "portier_lb", &vec![ack_dsr; n], tx)?;
    let ipip = single_runs(dp, "portier_lb", &vec![ack_ipip; n], tx)?;

    let mut decap = Decapsulator::load_for_test().context("loading portier_decap")?;
    // The outer destination is the backend's address.
    let dst = std::net::Ipv4Addr::new(
        encapsulated[30],
        encapsulated[31],
        encapsulated[32],
        encapsulated[33],
    );
    decap.add_address(dst.into())?;
    // Only the balancers' tunnels to the node's VIPs are stripped (see `[decap]`).
    decap.add_source(std::net::Ipv4Addr::new(10, 255, 0, 0).into(), 24)?;
    decap.add_vip(std::net::Ipv4Addr::from(VIP).into())?;
    let pass = 2;
    let mut total = 0u64;
    for _ in 0..n {
        let out = decap.test_run(&encapsulated)?;
        if out.action != pass {
            bail!("portier_decap: action {} instead of XDP_PASS", out.action);
        }
        total += out.duration_ns;
    }
    let decap_ns = total as f64 / n as f64;
    println!("\nEncapsulation: one run per packet ({n} packets each; includes a clock read pair)");
    println!("{:<30} {:>8} {:>10}", "case", "ns/pkt", "x floor");
    for (name, v) in [
        ("floor (MAC swap + XDP_TX)", floor),
        ("TCP established, DSR", dsr),
        ("TCP established, IPIP", ipip),
        ("portier_decap (host)", decap_ns),
    ] {
        println!("{name:<30} {v:>8.0} {:>10.2}", v / floor.max(1.0));
    }
    Ok(())
}

/// Backends, a Maglev table over them and the services every case addresses.
fn setup(dp: &mut Dataplane, backends: u32) -> anyhow::Result<Vec<u32>> {
    for id in 0..backends {
        let b = Backend {
            mac: [0x02, 0, 0, 0, (id >> 8) as u8, id as u8],
            src_mac: MAC_LB,
            ifindex: LO,
            generation: 1,
            flags: BACKEND_F_VALID,
            addr: [
                10,
                0,
                (id >> 8) as u8,
                id as u8,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ],
            family: FAMILY_V4,
            _pad: [0; 3],
        };
        dp.set_backend(id, &b)?;
    }
    // Stand-in for a Maglev table: every backend equally often. Cost does not depend on the
    // permutation, only on the table being a real, full-size inner map.
    let table: Vec<u32> = (0..DEFAULT_MAGLEV_SIZE)
        .map(|s| s % backends.max(1))
        .collect();
    let mut v4 = [0u8; 16];
    v4[..4].copy_from_slice(&VIP);
    let key = |addr, port: u16, proto, family| ServiceKey {
        addr,
        port: port.to_be(),
        proto,
        family,
    };
    dp.set_service(key(v4, 80, PROTO_TCP, FAMILY_V4), 0, &table)?;
    dp.set_service(key(v4, 53, PROTO_UDP, FAMILY_V4), 1, &table)?;
    dp.set_service(key(VIP6, 443, PROTO_TCP, FAMILY_V6), 2, &table)?;
    // A service whose backends are all gone: its packets are dropped (the debug rows).
    let empty = vec![NO_BACKEND; DEFAULT_MAGLEV_SIZE as usize];
    dp.set_service(key(v4, 81, PROTO_TCP, FAMILY_V4), 4, &empty)?;
    Ok(table)
}

/// The diagnostics' cost: `portier_lb` of a build without any log call, `portier_lb` of the
/// real build (attached while debug is off), and `portier_lb_debug` (debug on; its per-CPU
/// budget is spent at once, so past the first records this is the cost of noticing, counting
/// and refusing a record).
fn diagnostics(p: &Params) -> anyhow::Result<()> {
    let mut plain = Dataplane::load_for_test_without_diagnostics(p.ct)
        .context("loading the build without diagnostics")?;
    let mut dp = Dataplane::load_for_test(p.ct)?;
    setup(&mut plain, p.backends)?;
    setup(&mut dp, p.backends)?;
    // The log is read by nobody here: once its ring buffer is full, records are refused
    // there too, as under a flood no reader keeps up with.
    let _log = dp.set_debug(true)?;
    let (pass, tx, drop) = (2, 3, 1);
    let cases: [(&str, Vec<u8>, u32); 5] = [
        (
            "non-VIP pass",
            frames::v4(OTHER, 40000, 80, Some(ACK)),
            pass,
        ),
        ("TCP established", frames::v4(VIP, 40002, 80, Some(ACK)), tx),
        (
            "TCP SYN to VIP (same flow)",
            frames::v4(VIP, 40001, 80, Some(SYN)),
            tx,
        ),
        (
            "IPv6 TCP established",
            frames::v6(40004, 443, Some(ACK)),
            tx,
        ),
        (
            "drop: no backend",
            frames::v4(VIP, 40005, 81, Some(SYN)),
            drop,
        ),
    ];
    let runs: [(&Dataplane, &str); 3] = [
        (&plain, "portier_lb"),
        (&dp, "portier_lb"),
        (&dp, "portier_lb_debug"),
    ];
    for (_, frame, action) in &cases {
        for (d, prog) in runs {
            let out = d.test_run(prog, frame, 1)?;
            if out.action != *action {
                bail!("{prog}: action {} instead of {action}", out.action);
            }
        }
    }
    let mut samples = vec![vec![Vec::with_capacity(p.rounds); runs.len()]; cases.len()];
    for _ in 0..p.rounds {
        for (c, s) in cases.iter().zip(&mut samples) {
            for ((d, prog), s) in runs.iter().zip(s.iter_mut()) {
                s.push(d.test_run(prog, &c.1, p.repeat)?.duration_ns);
            }
        }
    }
    println!(
        "\nDiagnostics (aya-log), ns/pkt, median of {}: the build without log calls, debug off \
         (what is attached), debug on (budget spent: every record noticed and refused)",
        p.rounds
    );
    println!(
        "{:<30} {:>12} {:>10} {:>9} {:>10}",
        "case", "no log calls", "debug off", "debug on", "off/none"
    );
    for ((name, _, _), s) in cases.iter().zip(&mut samples) {
        let m: Vec<u64> = s
            .iter_mut()
            .map(|v| {
                v.sort_unstable();
                v[v.len() / 2]
            })
            .collect();
        println!(
            "{name:<30} {:>12} {:>10} {:>9} {:>10.2}",
            m[0],
            m[1],
            m[2],
            m[1] as f64 / m[0].max(1) as f64
        );
    }
    Ok(())
}

fn xdp(p: &Params) -> anyhow::Result<()> {
    let Params {
        repeat,
        rounds,
        cpu,
        backends,
        ct,
        new_flows,
        ..
    } = *p;
    pin_to_cpu(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
    if p.only.as_deref() == Some("diagnostics") {
        return diagnostics(p);
    }
    let mut dp = Dataplane::load_for_test(ct).context("loading the XDP object (root needed)")?;
    let table = setup(&mut dp, backends)?;

    let (pass, tx) = (2, 3);
    let cases = [
        Case {
            name: "floor (MAC swap + XDP_TX)",
            program: "portier_floor",
            frame: frames::v4(VIP, 40000, 80, Some(ACK)),
            action: tx,
            guard: 0,
            hold: DEFAULT_FLOW_HOLD,
            expect: None,
        },
        Case {
            name: "XDP_PASS program",
            program: "portier_pass",
            frame: frames::v4(VIP, 40000, 80, Some(ACK)),
            action: pass,
            guard: 0,
            hold: DEFAULT_FLOW_HOLD,
            expect: None,
        },
        Case {
            name: "non-VIP pass",
            program: "portier_lb",
            frame: frames::v4(OTHER, 40000, 80, Some(ACK)),
            action: pass,
            guard: 0,
            hold: DEFAULT_FLOW_HOLD,
            expect: Some(Reason::PassNotVip),
        },
        Case {
            name: "TCP SYN to VIP (same flow)",
            program: "portier_lb",
            frame: frames::v4(VIP, 40001, 80, Some(SYN)),
            action: tx,
            guard: 0,
            hold: DEFAULT_FLOW_HOLD,
            expect: Some(Reason::ConntrackNew),
        },
        Case {
            name: "TCP SYN, new flow each",
            program: "portier_bench_new_flows",
            frame: frames::v4(VIP, 1, 80, Some(SYN)),
            action: tx,
            guard: 0,
            hold: 0,
            expect: Some(Reason::ConntrackNew),
        },
        Case {
            name: "TCP SYN flood, guard on",
            program: "portier_bench_new_flows",
            frame: frames::v4(VIP, 1, 80, Some(SYN)),
            action: tx,
            // One entry per second: the flood goes by Maglev alone, as past the guard's rate.
            guard: 1,
            hold: DEFAULT_FLOW_HOLD,
            expect: None,
        },
        Case {
            name: "TCP established",
            program: "portier_lb",
            frame: frames::v4(VIP, 40002, 80, Some(ACK)),
            action: tx,
            guard: 0,
            hold: DEFAULT_FLOW_HOLD,
            expect: Some(Reason::ConntrackHit),
        },
        Case {
            name: "UDP established",
            program: "portier_lb",
            frame: frames::v4(VIP, 40003, 53, None),
            action: tx,
            guard: 0,
            hold: DEFAULT_FLOW_HOLD,
            expect: Some(Reason::ConntrackHit),
        },
        Case {
            name: "IPv6 TCP established",
            program: "portier_lb",
            frame: frames::v6(40004, 443, Some(ACK)),
            action: tx,
            guard: 0,
            hold: DEFAULT_FLOW_HOLD,
            expect: Some(Reason::ConntrackHit),
        },
        Case {
            name: "TCP mid-flow, no entry",
            program: "portier_lb",
            // A source the new-flow case never bumps its way to (its SYNs may record any
            // port from CLIENT and the addresses just above it).
            frame: frames::v4_from([198, 51, 102, 99], VIP, 40005, 80, Some(ACK)),
            action: tx,
            guard: 0,
            hold: DEFAULT_FLOW_HOLD,
            expect: Some(Reason::ConntrackMidflowUntracked),
        },
    ];
    let cases: Vec<Case> = cases
        .into_iter()
        .enumerate()
        .filter(|(i, c)| *i == 0 || p.only.as_ref().is_none_or(|o| c.name.contains(o.as_str())))
        .map(|(_, c)| c)
        .collect();
    // Warm: the established flows are opened by their SYN (UDP by its first datagram), so
    // they find their entry. Again before every timed case: the new-flow case evicts.
    let warm = [
        frames::v4(VIP, 40001, 80, Some(SYN)),
        frames::v4(VIP, 40002, 80, Some(SYN)),
        frames::v6(40004, 443, Some(SYN)),
        frames::v4(VIP, 40003, 53, None),
    ];
    let open = |dp: &Dataplane| -> anyhow::Result<()> {
        for f in &warm {
            dp.test_run("portier_lb", f, 1)?;
        }
        Ok(())
    };
    open(&dp)?;
    for c in &cases {
        dp.set_new_flow_rate(c.guard)?;
        dp.set_flow_hold(c.hold)?;
        // Twice: the first run may open the flow (UDP), the second is the timed path.
        for run in 0..2 {
            let before = c
                .expect
                .filter(|_| run == 1)
                .map(|r| dp.reason(r))
                .transpose()?;
            let out = dp.test_run(c.program, &c.frame, 1)?;
            if out.action != c.action {
                bail!("{}: action {} instead of {}", c.name, out.action, c.action);
            }
            if let (Some(r), Some(b)) = (c.expect, before)
                && dp.reason(r)? != b + 1
            {
                bail!("{}: did not count {} (wrong path)", c.name, r.name());
            }
        }
    }
    let mut samples = vec![Vec::with_capacity(rounds); cases.len()];
    for _ in 0..rounds {
        // Interleaved, so drift (frequency, neighbours) hits every case alike.
        for (c, s) in cases.iter().zip(&mut samples) {
            dp.set_new_flow_rate(c.guard)?;
            // Opened with hold 0: in a table the new-flow case filled, the flows must get
            // their entry back, not be refused as young.
            dp.set_flow_hold(0)?;
            open(&dp)?;
            dp.set_flow_hold(c.hold)?;
            let before = c.expect.map(|r| dp.reason(r)).transpose()?;
            s.push(dp.test_run(c.program, &c.frame, repeat)?.duration_ns);
            // Every repetition took the path the case names, or the figure is not its.
            if let (Some(r), Some(b)) = (c.expect, before) {
                let n = dp.reason(r)? - b;
                if n != u64::from(repeat) {
                    bail!(
                        "{}: {n} of {repeat} counted {} (wrong path)",
                        c.name,
                        r.name()
                    );
                }
            }
        }
    }
    let median = |s: &mut Vec<u64>| {
        s.sort_unstable();
        s[s.len() / 2]
    };
    let ns: Vec<u64> = samples.iter_mut().map(median).collect();
    let floor = ns[0].max(1) as f64;

    println!(
        "XDP via BPF_PROG_TEST_RUN: cpu {cpu}, repeat {repeat}, median of {rounds}, \
         {backends} backends, Maglev {DEFAULT_MAGLEV_SIZE}, conntrack {ct}"
    );
    // The minimum is shown too: on a shared machine interference only ever adds time.
    println!(
        "{:<30} {:>8} {:>10} {:>8}",
        "case", "ns/pkt", "x floor", "min"
    );
    for ((c, n), s) in cases.iter().zip(&ns).zip(&samples) {
        println!(
            "{:<30} {:>8} {:>10.2} {:>8}",
            c.name,
            n,
            *n as f64 / floor,
            s[0]
        );
    }

    // The table's locks under contention: every online CPU writes new flows at once, as in
    // a SYN flood spread by RSS (the single-CPU case above cannot show a shared lock).
    // Online CPUs, not this thread's affinity (pinned above).
    let cpus: Vec<usize> = aya::util::online_cpus()
        .map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?
        .into_iter()
        .map(|c| c as usize)
        .collect();
    if cpus.len() > 1
        && p.only
            .as_ref()
            .is_none_or(|o| "parallel SYN".contains(o.as_str()))
    {
        dp.set_flow_hold(0)?;
        let mut par = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            par.push(parallel_new_flows(&dp, &cpus, repeat)?);
        }
        par.sort_unstable_by(f64::total_cmp);
        let n = par[par.len() / 2];
        println!(
            "{:<30} {:>8.0} {:>10.2}  ({} CPUs at once, ns per packet on each)",
            "TCP SYN, new flow, all CPUs",
            n,
            n / floor,
            cpus.len()
        );
    }
    dp.set_new_flow_rate(0)?;
    dp.set_flow_hold(0)?;

    // New flows for real: every packet a SYN of a flow the table has never seen (source
    // address and port vary, so successive rounds evict older flows as the table fills).
    let flows = |round: u32| -> Vec<Vec<u8>> {
        (0..new_flows)
            .map(|i| {
                let n = round * new_flows + i;
                let src = [
                    10,
                    128 + (n >> 24) as u8 % 64,
                    (n >> 16) as u8,
                    (n >> 8) as u8,
                ];
                frames::v4_from(src, VIP, 1024 + (n & 0xff) as u16, 80, Some(SYN))
            })
            .collect()
    };
    let floor_frames = vec![frames::v4(VIP, 40000, 80, Some(ACK)); new_flows as usize];
    let (mut syn1, mut floor1) = (Vec::new(), Vec::new());
    let new_flow_rounds = match &p.only {
        Some(o) if !"cold SYN".contains(o.as_str()) => 0,
        _ => rounds as u32,
    };
    for round in 0..new_flow_rounds {
        let batch = flows(round);
        floor1.push(single_runs(&dp, "portier_floor", &floor_frames, tx)?);
        syn1.push(single_runs(&dp, "portier_lb", &batch, tx)?);
    }
    let medf = |s: &mut Vec<f64>| {
        s.sort_unstable_by(f64::total_cmp);
        s[s.len() / 2]
    };
    if floor1.is_empty() {
        return Ok(());
    }
    let (f1, s1) = (medf(&mut floor1), medf(&mut syn1));
    println!(
        "\nCold: one run per packet ({new_flows} packets per round, median of {rounds}; each \
         run also holds a clock read pair and starts with cold caches, as does the floor here)"
    );
    println!("{:<30} {:>8} {:>10}", "case", "ns/pkt", "x floor");
    println!(
        "{:<30} {:>8.0} {:>10.2}",
        "floor (MAC swap + XDP_TX)", f1, 1.0
    );
    println!(
        "{:<30} {:>8.0} {:>10.2}",
        "cold SYN, new flow each",
        s1,
        s1 / f1.max(1.0)
    );
    println!("{:<30} {:>8.0}", "  new flow estimate", s1 - f1 + floor);

    encapsulation(&mut dp, &table, new_flows.max(1000), tx)?;
    diagnostics(p)?;

    let reasons = dp.reasons()?;
    let hits: Vec<String> = reasons
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{}={n}", r.name()))
        .collect();
    println!("reasons: {}", hits.join(" "));

    println!(
        "\nmap memory (max_entries x (key + value), per-CPU values x CPUs; memlock: what the \
         kernel charges, from /proc/self/fdinfo)"
    );
    let mut total = 0u64;
    let mut per_million = None;
    for m in dp.map_memory()? {
        let memlock = m.memlock.map_or("?".to_string(), |b| b.to_string());
        println!(
            "{:<15} {:>8} x ({:>2} + {:>3}) = {:>12} bytes, memlock {:>12}",
            m.name, m.max_entries, m.key_size, m.value_size, m.bytes, memlock
        );
        total += m.bytes;
        if m.name == "CONNTRACK" {
            let flows = f64::from(m.max_entries.max(1)) * FLOW_WAYS as f64;
            per_million = m.memlock.map(|b| b as f64 * 1e6 / flows / 1048576.0);
        }
    }
    if let Some(mib) = per_million {
        println!(
            "connection table: {mib:.1} MiB per million flows (memlock / (buckets x \
             {FLOW_WAYS} ways))"
        );
    }
    let inner = u64::from(DEFAULT_MAGLEV_SIZE) * 8;
    println!(
        "{:<14} {:>8} x ( 4 +   4) = {:>12} bytes per service (3 here)",
        "MAGLEV inner", DEFAULT_MAGLEV_SIZE, inner
    );
    println!("total {} bytes (+ {} for the 3 tables)", total, 3 * inner);
    Ok(())
}
