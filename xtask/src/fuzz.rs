//! `cargo xtask fuzz [--target NAME] [--seconds N]`: coverage-guided fuzzing of the decoders
//! with cargo-fuzz (libFuzzer) on the nightly toolchain.
//!
//! The targets live in `fuzz/fuzz_targets/`, one file each; `fuzz/` is its own cargo
//! workspace (excluded from the main one). Everything is built once, then each target runs
//! for `seconds` on a copy of its committed corpus (`fuzz/corpus/<target>/`, read-only here)
//! in a temporary directory, so runs never grow the committed corpus. New inputs worth
//! keeping are added by hand (`cargo fuzz cmin`, or copying from the printed directory).
//!
//! Build flags: release with debug assertions and overflow checks (`-a`, an overflow is a
//! crash), no sanitizer (`-s none`): the decoders are safe Rust, and AddressSanitizer would
//! halve the executions per second for nothing.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// What `cargo xtask test` gives each target. Measured on 2 cores: building a fresh
/// `fuzz/target` takes 5.5 minutes (8 while other builds share the machine), each target
/// about 1.5 s more than its time to start and load its corpus; 12 x 10 s keeps the whole
/// step near 8 minutes (with 15 s it was 9).
pub const TEST_SECONDS: u64 = 10;

const BUILD_FLAGS: [&str; 3] = ["-a", "-s", "none"];

/// One target's run.
struct Summary {
    target: String,
    ok: bool,
    runs: Option<u64>,
    cov: Option<u64>,
    features: Option<u64>,
    corpus: Option<u64>,
    seconds: f64,
}

/// The targets, from the files in `fuzz/fuzz_targets`.
pub fn targets(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    Ok(names)
}

fn cargo_fuzz(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz"])
        .current_dir(root.join("fuzz"));
    cmd
}

pub fn run(root: &Path, target: Option<&str>, seconds: u64) -> Result<()> {
    let all = targets(root)?;
    let chosen: Vec<String> = match target {
        Some(t) if all.iter().any(|a| a == t) => vec![t.to_owned()],
        Some(t) => bail!("no fuzz target {t:?} (known: {})", all.join(", ")),
        None => all,
    };
    let started = Instant::now();
    eprintln!("fuzz: building the targets (cargo +nightly fuzz build)");
    let status = cargo_fuzz(root)
        .arg("build")
        .args(BUILD_FLAGS)
        .status()
        .context("cannot run `cargo +nightly fuzz` (`cargo xtask setup` installs cargo-fuzz)")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    let built = started.elapsed();
    eprintln!("fuzz: built in {:.0} s", built.as_secs_f64());

    let work = std::env::temp_dir().join(format!("portier-fuzz-{}", std::process::id()));
    let mut summaries = Vec::new();
    for t in &chosen {
        summaries.push(run_one(root, &work, t, seconds)?);
    }

    println!(
        "\n{:<16} {:>6} {:>12} {:>7} {:>7} {:>7} {:>6}",
        "target", "result", "runs", "cov", "ft", "corpus", "secs"
    );
    let show = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    for s in &summaries {
        println!(
            "{:<16} {:>6} {:>12} {:>7} {:>7} {:>7} {:>6.0}",
            s.target,
            if s.ok { "ok" } else { "FAILED" },
            show(s.runs),
            show(s.cov),
            show(s.features),
            show(s.corpus),
            s.seconds
        );
    }
    println!(
        "fuzz: {} target(s), {} s each, {:.0} s in all (build {:.0} s)",
        summaries.len(),
        seconds,
        started.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
    let failed: Vec<&str> = summaries
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (logs and inputs under {}; crashing inputs in \
             fuzz/artifacts/<target>/; reproduce with `cd fuzz && cargo +nightly fuzz run {} \
             <target> <input>`)",
            failed.join(", "),
            work.display(),
            BUILD_FLAGS.join(" ")
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn run_one(root: &Path, work: &Path, target: &str, seconds: u64) -> Result<Summary> {
    let corpus = work.join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let seeds = root.join("fuzz/corpus").join(target);
    copy_files(&seeds, &corpus)?;
    let log_path = work.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    eprintln!("fuzz: {target} for {seconds} s");
    let started = Instant::now();
    let status = cargo_fuzz(root)
        .arg("run")
        .args(BUILD_FLAGS)
        .arg(target)
        .arg(&corpus)
        .args([
            "--".to_owned(),
            format!("-max_total_time={seconds}"),
            "-timeout=10".to_owned(),
            "-rss_limit_mb=2048".to_owned(),
            "-print_final_stats=1".to_owned(),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .context("cannot run `cargo +nightly fuzz run`")?;
    let seconds = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut s = parse_log(&text);
    s.target = target.to_owned();
    s.ok = status.success();
    s.seconds = seconds;
    if !s.ok {
        eprintln!("fuzz: {target} FAILED ({status}); the end of its log:");
        let lines: Vec<&str> = text.lines().collect();
        for l in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("  {l}");
        }
    }
    Ok(s)
}

fn copy_files(from: &Path, to: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(from) else {
        // A target without seeds starts from nothing.
        return Ok(());
    };
    for e in entries {
        let path: PathBuf = e?.path();
        if path.is_file()
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, to.join(name))
                .with_context(|| format!("cannot copy {}", path.display()))?;
        }
    }
    Ok(())
}

/// Reads libFuzzer's status lines (`#N  DONE  cov: C ft: F corp: K/..`) and final stats.
fn parse_log(text: &str) -> Summary {
    let mut s = Summary {
        target: String::new(),
        ok: false,
        runs: None,
        cov: None,
        features: None,
        corpus: None,
        seconds: 0.0,
    };
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?.trim_start();
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    for line in text.lines() {
        if line.starts_with('#') && line.contains("cov: ") {
            s.runs = field(line, "#").or(s.runs);
            s.cov = field(line, "cov:").or(s.cov);
            s.features = field(line, "ft:").or(s.features);
            s.corpus = field(line, "corp:").or(s.corpus);
        } else if let Some(n) = field(line, "stat::number_of_executed_units:") {
            s.runs = Some(n);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_status_lines() {
        let s = parse_log(
            "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 27Mb\n\
             #131072\tpulse  cov: 120 ft: 300 corp: 40/2Kb lim: 1300 exec/s: 65536 rss: 40Mb\n\
             #262144\tDONE   cov: 133 ft: 321 corp: 44/2310b lim: 4096 exec/s: 87381 rss: 41Mb\n\
             Done 262144 runs in 3 second(s)\nstat::number_of_executed_units: 262150\n",
        );
        assert_eq!(
            (s.runs, s.cov, s.features, s.corpus),
            (Some(262150), Some(133), Some(321), Some(44))
        );
    }
}
