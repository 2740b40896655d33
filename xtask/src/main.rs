//! Developer tasks: `cargo xtask setup|build|build-and-load|lab|demo|package|test|bench`.
//!
//! Every task runs `setup` first, so a fresh Debian machine needs nothing but this repository.

mod bench_bgp;
mod bench_failover;
mod bench_l7;
mod cpu_budget;
mod demo;
mod demo_docker;
mod fuzz;
mod package;
mod setup;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use portier_tests::lab;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(about = "portier development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (Debian packages, rust-src, bpf-linker).
    Setup,
    /// Build the daemon (with its XDP programs) and the lab tools.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run the daemon on a config in the foreground.
    BuildAndLoad {
        #[arg(long)]
        config: PathBuf,
    },
    /// Bring the lab of DESIGN.md up or down, or show it.
    Lab {
        #[command(subcommand)]
        action: LabAction,
        #[arg(long, default_value = "pt")]
        prefix: String,
    },
    /// Bring up the lab and show portier at work.
    Demo {
        /// On the docker lab (`lab up --docker`), ending with a new container on pt-host2
        /// that announces itself by labels and answers through the VIP.
        #[arg(long)]
        docker: bool,
    },
    /// The Debian package of the release build: target/debian/portier_VERSION_ARCH.deb.
    Package {
        /// Package the debug build instead (quicker; what `test` checks).
        #[arg(long)]
        debug: bool,
    },
    /// Lint, unit tests, BPF_PROG_TEST_RUN tests and lab end-to-end tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Coverage-guided fuzzing of the decoders (cargo-fuzz, nightly): builds fuzz/, then runs
    /// each target (or the one named) for `seconds` on a copy of its committed corpus.
    Fuzz {
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Benchmarks: `xdp` (ns per packet against a floor program), `l7` (portier vs HAProxy vs
    /// direct: requests/s, p99, CPU per request), `failover` (a silent anycast LB: portier vs
    /// FRR ospfd+bfdd), `bgp` (VIP route in and out of an FRR edge router: portier vs FRR
    /// bgpd announcing).
    Bench {
        #[arg(default_value = "xdp")]
        what: String,
        /// `l7` only: another portier binary (an earlier build) measured in the same run.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// `l7` only: the shapes to run, comma-separated (get, post, h2c; with `--matrix`, its
        /// rows: get, post, get1k-256, get1k-close, tls, tls-close, get64k, upload1m, h2-tls,
        /// h2c); all by default.
        #[arg(long)]
        shapes: Option<String>,
        /// `l7` only: measure this portier binary instead of building the tree's.
        #[arg(long)]
        portier: Option<PathBuf>,
        /// `l7` only: the shapes of issue 17 against HAProxy (keep-alive and connection per
        /// request, TLS, large bodies, HTTP/2), printed as a Markdown table.
        #[arg(long)]
        matrix: bool,
        /// `l7` only: cap each proxy at PCT percent of one CPU (a cgroup each), so requests/s
        /// compares the proxies at equal CPU instead of the load generator's share.
        #[arg(long, value_name = "PCT")]
        proxy_cpu: Option<u32>,
        /// `l7` only: interleaved rounds per shape (medians of them are reported); more
        /// rounds narrow the spread a shared machine adds to each run.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=15))]
        rounds: u32,
    },
}

#[derive(Subcommand)]
enum LabAction {
    Up {
        /// VRRP off, both LBs announce the VIP by OSPF while healthy, BFD 50 ms x3 to the
        /// router, ECMP over both.
        #[arg(long)]
        anycast: bool,
        /// How the VIP reaches the router: OSPF, or eBGP (FRR bgpd AS 64512, the LBs
        /// AS 64513, MD5).
        #[arg(long, value_parser = ["ospf", "bgp"], default_value = "ospf")]
        routing: String,
        /// Each host runs its own Docker engine; its containers are real containers found
        /// by their labels (`[discovery.docker]`).
        #[arg(long)]
        docker: bool,
    },
    /// The lab plus hosts on 10.1.0.0/24 behind the router, served by lb1 over IPIP.
    UpRouted,
    Down,
    Status,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    setup::run()?;
    match cli.task {
        Task::Setup => Ok(()),
        Task::Build { release } => build(release),
        Task::BuildAndLoad { config } => {
            build(false)?;
            let status = Command::new(root.join("target/debug/portier"))
                .args(["run", "-c"])
                .arg(&config)
                .status()?;
            if !status.success() {
                bail!("portier exited with {status}");
            }
            Ok(())
        }
        Task::Lab { action, prefix } => match action {
            LabAction::Up {
                anycast,
                routing,
                docker,
            } => {
                build(false)?;
                let bgp = routing == "bgp";
                demo::lab_up(
                    &prefix,
                    lab::Variant {
                        anycast,
                        bgp,
                        docker,
                    },
                )?;
                println!("lab {prefix} is up; `cargo xtask lab down` removes it");
                Ok(())
            }
            LabAction::UpRouted => {
                build(false)?;
                demo::lab_up_routed(&prefix)?;
                println!(
                    "lab {prefix} is up with routed hosts (IPIP from lb1); `cargo xtask lab down` removes it"
                );
                Ok(())
            }
            LabAction::Down => {
                lab::down(&prefix);
                println!("lab {prefix} removed");
                Ok(())
            }
            LabAction::Status => {
                let ns = lab::status(&prefix);
                if ns.is_empty() {
                    println!("lab {prefix} is not up");
                } else {
                    println!("lab {prefix} namespaces: {}", ns.join(" "));
                }
                Ok(())
            }
        },
        Task::Demo { docker } => {
            build(false)?;
            demo::run(docker)
        }
        Task::Package { debug } => package::run(&root, debug).map(|_| ()),
        Task::Test { args } => test(&args),
        Task::Fuzz { target, seconds } => fuzz::run(&root, target.as_deref(), seconds),
        Task::Bench {
            what,
            baseline,
            shapes,
            portier,
            matrix,
            proxy_cpu,
            rounds,
        } => bench(
            &what,
            bench_l7::Options {
                baseline,
                shapes,
                portier,
                matrix,
                proxy_cpu,
                rounds: rounds as usize,
            },
        ),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new("cargo")
        .args(args)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

fn build(release: bool) -> Result<()> {
    let mut args = vec!["build", "-p", "portier", "-p", "portier-tests", "--bins"];
    if release {
        args.push("--release");
    }
    cargo(&args)
}

fn test(extra: &[String]) -> Result<()> {
    xtask_stays_light()?;
    cargo(&["fmt", "--all", "--", "--check"]).context("run `cargo fmt --all`")?;
    cargo(&[
        "clippy",
        "-p",
        "dataplane-common",
        "-p",
        "portier",
        "-p",
        "portier-tests",
        "-p",
        "xtask",
        "--all-targets",
        // portier-bench and the benchmark-only kernel interface are linted too.
        "--features",
        "portier/bench",
        "--",
        "-D",
        "warnings",
    ])?;
    build(false)?;
    // userspace/tests/package.rs checks the .deb. From the debug build: the release build
    // (fat LTO, one codegen unit) takes ~3 minutes after a change here, ~7 from scratch.
    package::run(&workspace_root(), true)?;
    let mut args = vec!["test"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)?;
    fuzz::run(&workspace_root(), None, fuzz::TEST_SECONDS)
}

/// xtask must build with nothing but the preinstalled toolchain: a dependency on the daemon's
/// library would build the eBPF programs (rust-src, bpf-linker) before `setup` can install
/// what they need, and the README's first command would fail on a fresh machine.
fn xtask_stays_light() -> Result<()> {
    let out = Command::new("cargo")
        .args([
            "tree",
            "-p",
            "xtask",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .output()
        .context("cannot run cargo tree")?;
    if !out.status.success() {
        bail!("cargo tree -p xtask failed");
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let heavy: Vec<&str> = tree
        .lines()
        .filter(|l| l.starts_with("portier v") || l.starts_with("dataplane-ebpf "))
        .collect();
    if !heavy.is_empty() {
        bail!(
            "xtask depends on crates that build the eBPF programs ({}); keep them dev-dependencies",
            heavy.join(", ")
        );
    }
    Ok(())
}

fn bench(what: &str, l7: bench_l7::Options) -> Result<()> {
    let run = |sub: &str| {
        cargo(&[
            "run",
            "--release",
            "-p",
            "portier",
            "--features",
            "bench",
            "--bin",
            "portier-bench",
            "--",
            sub,
        ])
    };
    match what {
        // ns per packet class (BPF_PROG_TEST_RUN), then packets per second between two
        // namespaces with a live-frames generator, each next to its floor.
        "xdp" => {
            run("xdp")?;
            run("xdp-live")
        }
        "l7" => bench_l7::run(&workspace_root(), l7),
        // Needs the debug build the lab runs (`build`), not the release one.
        "failover" => {
            build(false)?;
            bench_failover::run()
        }
        "bgp" => {
            build(false)?;
            bench_bgp::run()
        }
        other => bail!("unknown benchmark {other:?} (known: xdp, l7, failover, bgp)"),
    }
}
