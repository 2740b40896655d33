//! Running things inside network namespaces: commands, daemons and closures.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Runs a command to completion; its stderr becomes the error on failure.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// `ip -n NS ARGS`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Runs a command inside a namespace. `nsenter --net` rather than `ip netns exec`, because the
/// latter remounts /sys and would hide /sys/fs/bpf from the command.
pub fn exec_in(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let net = format!("--net=/run/netns/{ns}");
    let mut full = vec![net.as_str(), program];
    full.extend_from_slice(args);
    run("nsenter", &full)
}

/// Starts a long-running process inside a namespace, output appended to `log`.
///
/// It inherits no file descriptor but those three: a lab kept up (`cargo xtask lab up`,
/// `demo`) must not hold what its starter held, such as the lab lock of `flock
/// /tmp/portier-lab.lock cargo xtask demo`, until `lab down`.
pub fn spawn_in(ns: &str, program: &Path, args: &[&str], log: &Path) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}"))
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: one syscall between fork and exec. CLOEXEC rather than closing: the pipe
    // through which std reports a failed exec must stay open until the exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {} in {ns}", program.display()))
}

/// Runs `f` on a thread that has joined namespace `ns`: sockets it opens live there.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).with_context(|| format!("no namespace {ns}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("setns into {ns}"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
    })
}

/// Namespaces whose names start with `prefix-`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let want = format!("{prefix}-");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&want))
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process inside a namespace (daemons the lab started there).
pub fn kill_all_in(ns: &str) {
    let Ok(pids) = ip(&["netns", "pids", ns]) else {
        return;
    };
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Fails clearly when not root: the lab and the XDP tests need it, and must never skip silently.
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "this needs root (network namespaces, XDP); run it as root, e.g. via `cargo xtask test`"
        );
    }
    Ok(())
}

/// One of an interface's statistics counters (e.g. `tx_bytes`) inside a namespace.
/// `ip netns exec` because it remounts /sys for the namespace, which `nsenter --net` does not.
pub fn link_counter(ns: &str, dev: &str, counter: &str) -> Result<u64> {
    let path = format!("/sys/class/net/{dev}/statistics/{counter}");
    run("ip", &["netns", "exec", ns, "cat", &path])?
        .trim()
        .parse()
        .with_context(|| format!("{ns}: {path}"))
}

/// `ip netns add NAME`, retried: concurrent `ip netns add/del` (tests run in parallel) race on
/// setting up the shared /run/netns mount, and the loser fails with ENOENT.
pub fn add(name: &str) -> Result<()> {
    let mut last = None;
    for attempt in 0..5u64 {
        match ip(&["netns", "add", name]) {
            Ok(_) => return Ok(()),
            Err(e) => {
                let _ = ip(&["netns", "del", name]);
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(20 * (attempt + 1)));
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("ip netns add {name} failed")))
}
