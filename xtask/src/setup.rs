//! Installs what the project needs, idempotently; quick when everything is there.

use anyhow::{Context, Result, bail};
use std::process::{Command, Stdio};

/// Debian packages: lab tools, real peers and comparators, LLVM 22 for bpf-linker, and the
/// Debian packaging tools.
const PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "ethtool",
    "tcpdump",
    "util-linux",
    "frr",
    "bird2",
    "keepalived",
    "haproxy",
    "nginx",
    "wrk",
    "nghttp2-client",
    // The L7 matrix bench's self-signed certificate.
    "openssl",
    "varnish",
    "curl",
    "iputils-ping",
    "nftables",
    // The dashboard's browser test and the demo's screenshot: headless, driven over DevTools.
    "chromium",
    // A strict OpenMetrics parser (the Prometheus project's) for the /metrics tests.
    "python3-prometheus-client",
    // Docker discovery's tests run an engine of their own (tests/src/dockerd.rs) and make
    // their image from the static busybox (no registry needed).
    "docker.io",
    "busybox-static",
    // The docker lab's image is the lab app linked statically against glibc (libc.a).
    "libc6-dev",
    // `xtask package` and its test: dpkg-shlibdeps and strip (binutils), man -l and groff,
    // systemd-analyze verify.
    "dpkg-dev",
    "binutils",
    "man-db",
    "groff-base",
    "systemd",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Builds with the preinstalled stable toolchain; newer releases may need a newer rustc.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn run() -> Result<()> {
    apt_packages()?;
    rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    bpffs()?;
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    sh("apt-get", &["update", "-q"], &[])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    sh("apt-get", &args, &[("DEBIAN_FRONTEND", "noninteractive")])?;
    // Debian starts these on install; the lab runs its own instances in namespaces.
    for svc in [
        "frr",
        "bird",
        "keepalived",
        "haproxy",
        "nginx",
        "varnish",
        "docker.socket",
        "docker",
    ] {
        let _ = Command::new("systemctl")
            .args(["stop", svc])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status();
    }
    Ok(())
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("rustup is needed")?;
    if String::from_utf8_lossy(&out.stdout).contains("rust-src") {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the nightly toolchain");
    sh(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
        &[],
    )
}

fn bpf_linker() -> Result<()> {
    let ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false);
    if ok {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes)");
    sh(
        "cargo",
        &[
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ],
        &[("LLVM_PREFIX", "/usr/lib/llvm-22")],
    )
}

/// `cargo xtask fuzz` (and the fuzz step of `test`) runs cargo-fuzz on the nightly toolchain.
fn cargo_fuzz() -> Result<()> {
    let ok = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    sh(
        "cargo",
        &[
            "install",
            &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
            "--locked",
        ],
        &[],
    )
}

fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(());
    }
    sh("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"], &[])
}

fn sh(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}
