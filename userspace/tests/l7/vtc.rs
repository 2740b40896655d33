//! Runs the varnishtest files in `tests/vtc/` against the built `portier` binary: each file
//! starts its own backends (varnishtest servers that assert the request they receive), writes
//! a config pointing at them, runs `portier run` on ports chosen here, and drives it with
//! varnishtest clients. Two files run at a time; a failing file's whole varnishtest log is
//! printed.
//!
//! By hand: `varnishtest -v -Dportier=target/debug/portier -Dlisten=127.0.0.1:8081
//! "-Dlisten_sock=127.0.0.1 8081" -Dlisten2=127.0.0.1:8082 "-Dlisten2_sock=127.0.0.1 8082"
//! -Dadmin=127.0.0.1:8083 userspace/tests/vtc/FILE.vtc`

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

const PARALLEL: usize = 2;

fn varnishtest(file: &Path) -> Output {
    let ports = crate::ports::daemon_ports(3);
    let (listen, listen2, admin) = (ports[0], ports[1], ports[2]);
    Command::new("varnishtest")
        .arg("-v")
        .arg("-t")
        .arg("30")
        .arg(format!("-Dportier={}", env!("CARGO_BIN_EXE_portier")))
        .arg(format!("-Dlisten=127.0.0.1:{listen}"))
        .arg(format!("-Dlisten_sock=127.0.0.1 {listen}"))
        .arg(format!("-Dlisten2=127.0.0.1:{listen2}"))
        .arg(format!("-Dlisten2_sock=127.0.0.1 {listen2}"))
        .arg(format!("-Dadmin=127.0.0.1:{admin}"))
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run varnishtest ({e}): install it with `cargo xtask setup` (Debian package varnish)")
        })
}

/// Runs one file; `Err` holds its log. A port taken between choosing it and portier binding
/// it (another test on the machine) is a retry, not a failure.
fn run(file: &Path) -> Result<(), String> {
    let mut log = String::new();
    for _ in 0..2 {
        let out = varnishtest(file);
        if out.status.success() {
            return Ok(());
        }
        log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !log.contains("Address already in use") {
            break;
        }
    }
    Err(log)
}

fn vtc_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vtc");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "vtc"))
        .collect();
    files.sort();
    files
}

#[test]
fn varnishtest_conformance_suite() {
    let files = vtc_files();
    assert!(files.len() >= 15, "only {} .vtc files", files.len());
    let queue = Mutex::new(files.clone());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                loop {
                    let Some(file) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    if let Err(log) = run(&file) {
                        failures.lock().unwrap().push((file, log));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    for (file, log) in &failures {
        eprintln!("===== {} FAILED =====\n{log}", file.display());
    }
    let names: Vec<String> = failures
        .iter()
        .map(|(f, _)| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.is_empty(),
        "{} of {} varnishtest files failed: {names:?}",
        names.len(),
        files.len()
    );
}
