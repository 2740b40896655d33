//! Builds the XDP programs (dataplane-ebpf) with the nightly toolchain for the BPF target and
//! hands the object to the daemon through OUT_DIR.
//!
//! This does what `aya_build::build_ebpf` does, with one difference: the BPF build keeps one
//! target directory for the whole workspace (target/bpf) instead of one per OUT_DIR. Every
//! profile and tool (build, test, clippy, release) has its own OUT_DIR, and rebuilding `core`
//! for each costs over a minute a time on CI.

use std::path::{Path, PathBuf};
use std::process::Command;

const PACKAGE: &str = "dataplane-ebpf";
const BINARY: &str = "portier-xdp";

fn main() {
    if let Err(e) = build() {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .ok_or("userspace has no parent directory")?;
    for dir in ["dataplane-ebpf", "dataplane-common"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let arch = env("CARGO_CFG_TARGET_ARCH")?;
    let endian = env("CARGO_CFG_TARGET_ENDIAN")?;
    let target = if endian == "big" {
        "bpfeb-unknown-none"
    } else {
        "bpfel-unknown-none"
    };
    let target_dir = workspace.join("target").join("bpf");
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_string(),
        "-Clink-arg=--btf".to_string(),
        // bpf-linker does the codegen. v3 gives 32-bit ALU and jumps (fewer zero-extensions).
        // Not `allows-misaligned-mem-access`: it also lets LLVM merge stack stores into
        // misaligned 64-bit ones, which the verifier refuses; packet loads are written as
        // BPF instructions instead (dataplane-ebpf/src/parse.rs).
        "-Ctarget-cpu=v3".to_string(),
    ]
    .join("\x1f");
    let build = |features: &[&str]| -> Result<(), String> {
        let status = Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "build",
                "--package",
                PACKAGE,
                "--bins",
            ])
            .args(features)
            .args(["--release", "--target", target, "-Z", "build-std=core"])
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(workspace)
            .env("CARGO_ENCODED_RUSTFLAGS", &rustflags)
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("RUSTFLAGS")
            .status()
            .map_err(|e| {
                format!("cannot run `rustup run nightly cargo`: {e} (run `cargo xtask setup`)")
            })?;
        if !status.success() {
            return Err(format!(
                "building {PACKAGE} failed ({status}); `cargo xtask setup` installs rust-src and bpf-linker"
            ));
        }
        Ok(())
    };
    let built = target_dir.join(target).join("release").join(BINARY);
    // The benchmark's comparator: the object without the diagnostics feature, so `bench xdp`
    // can show that debug off costs what no log calls at all cost.
    if std::env::var_os("CARGO_FEATURE_BENCH").is_some() {
        build(&["--no-default-features"])?;
        copy(&built, &out_dir.join(format!("{BINARY}-nodiag")))?;
    }
    build(&[])?;
    copy(&built, &out_dir.join(BINARY))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

fn env(key: &str) -> Result<String, String> {
    std::env::var(key).map_err(|_| format!("{key} is not set"))
}
