//! An equal CPU budget for the proxies of `bench l7 --proxy-cpu`: each proxy process in a
//! cgroup of its own whose CPU bandwidth is capped (cgroup v2 `cpu.max`, v1
//! `cpu.cfs_quota_us`). On two cores the load generator and the backend share one CPU and
//! run out before either proxy does, so requests/s then follows their CPU, not the proxy's;
//! under a budget both proxies are the bottleneck, and requests/s shows what each does with
//! the same CPU time.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A short period: a proxy that spent its quota waits at most the rest of one period, so
/// the cap adds milliseconds, not the default period's 100 ms, to the latencies measured.
const PERIOD_US: u32 = 10_000;

pub struct CpuBudget {
    dir: PathBuf,
}

impl CpuBudget {
    /// Moves `pid` (all its threads) into a new group capped at `percent` of one CPU.
    pub fn new(name: &str, percent: u32, pid: u32) -> Result<CpuBudget> {
        if !(1..=100).contains(&percent) {
            bail!("--proxy-cpu takes 1 to 100 (percent of one CPU), not {percent}");
        }
        let quota = PERIOD_US / 100 * percent;
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let dir = if v2 {
            // The cpu controller must be on for the root's children.
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu");
            PathBuf::from(format!("/sys/fs/cgroup/portier-bench-{name}"))
        } else {
            PathBuf::from(format!("/sys/fs/cgroup/cpu/portier-bench-{name}"))
        };
        // A group left by a run that was killed is empty by now; take it over.
        if !dir.exists() {
            std::fs::create_dir(&dir)
                .with_context(|| format!("cannot create the cgroup {}", dir.display()))?;
        }
        let budget = CpuBudget { dir };
        if v2 {
            budget.write("cpu.max", &format!("{quota} {PERIOD_US}"))?;
        } else {
            budget.write("cpu.cfs_period_us", &PERIOD_US.to_string())?;
            budget.write("cpu.cfs_quota_us", &quota.to_string())?;
        }
        budget.write("cgroup.procs", &pid.to_string())?;
        Ok(budget)
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        let path = self.dir.join(file);
        std::fs::write(&path, value)
            .with_context(|| format!("cannot write {value:?} to {}", path.display()))
    }
}

impl Drop for CpuBudget {
    /// The group goes once its process has exited (the caller stops the process first).
    fn drop(&mut self) {
        let start = Instant::now();
        while std::fs::remove_dir(&self.dir).is_err() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
