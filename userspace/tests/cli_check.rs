//! `portier check` as an operator runs it: exit status and messages naming file, line and key.

use std::process::Command;

fn check(name: &str, text: &str) -> (bool, String) {
    // One directory per call, removed after it: tests run in parallel and leave nothing.
    let dir = std::env::temp_dir().join(format!("portier-check-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_portier"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run portier");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_lab_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/lab-lb.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_portier"))
        .args(["check", "-c", path])
        .output()
        .expect("run portier");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 services"));
}

#[test]
fn errors_name_file_line_and_key() {
    let (ok, msg) = check(
        "badvip",
        "[node]\nname = \"lb1\"\ninterfaces = [\"eth0\"]\n\n[[service]]\nname = \"web\"\nvip = \"203.0.113\"\nprotocol = \"tcp\"\n",
    );
    assert!(!ok);
    assert!(msg.contains("badvip.toml:7:"), "{msg}");
    assert!(msg.contains("service[0].vip"), "{msg}");
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let (ok, msg) = check(
        "two",
        "[node]\nname = \"lb1\"\ninterfaces = [\"eth0\"]\n\n[[service]]\nname = \"web\"\nvip = \"203.0.113.10\"\nprotocol = \"tcp\"\nport = 70000\n\n  [[service.backend]]\n  address = \"2001:db8::1\"\n",
    );
    assert!(!ok);
    assert!(msg.contains("two.toml:9:") && msg.contains("port"), "{msg}");
    assert!(
        msg.contains("two.toml:12:") && msg.contains("address"),
        "{msg}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_portier"))
        .args(["check", "-c", "/nonexistent/portier.toml"])
        .output()
        .expect("run portier");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/portier.toml"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
