//! The daemon as Debian installs it: the package `cargo xtask package` builds (its files,
//! owners and modes, control fields, the unit as systemd reads it, the shipped example config,
//! man page and completions), and the readiness protocol the unit's `Type=notify` relies on.
//!
//! The package tests read target/debian/portier_VERSION_ARCH.deb: `cargo xtask test` builds
//! it (from the debug profile) before running the tests; by hand, `cargo xtask package
//! --debug` first.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

mod ports;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A folder removed when the test ends, however it ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("portier-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn stdout_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn deb() -> PathBuf {
    let arch = stdout_ok("dpkg", &["--print-architecture"]);
    let deb = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/debian")
        .join(format!("portier_{VERSION}_{}.deb", arch.trim()));
    assert!(
        deb.exists(),
        "{} is missing: `cargo xtask test` builds it, or run `cargo xtask package --debug`",
        deb.display()
    );
    deb
}

/// The package, unpacked.
fn unpacked(name: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(name);
    let root = dir.0.join("root");
    stdout_ok(
        "dpkg-deb",
        &["-x", deb().to_str().unwrap(), root.to_str().unwrap()],
    );
    (dir, root)
}

#[test]
fn package_holds_the_daemon_its_unit_docs_and_completions_owned_by_root() {
    let listing = stdout_ok("dpkg-deb", &["-c", deb().to_str().unwrap()]);
    // "-rwxr-xr-x root/root 12345 2026-01-01 00:00 ./usr/sbin/portier"
    let entries: Vec<(&str, &str, &str)> = listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6).then(|| (f[0], f[1], f[5]))
        })
        .collect();
    for (mode, owner, path) in &entries {
        assert_eq!(*owner, "root/root", "{path} owned by {owner}");
        if mode.starts_with('d') {
            assert_eq!(*mode, "drwxr-xr-x", "{path}");
        }
    }
    let mode_of = |path: &str| {
        entries
            .iter()
            .find(|(_, _, p)| *p == path)
            .map(|(m, _, _)| *m)
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
    };
    assert_eq!(mode_of("./usr/sbin/portier"), "-rwxr-xr-x");
    for file in [
        "./lib/systemd/system/portier@.service",
        "./usr/share/doc/portier/examples/portier.toml",
        "./usr/share/doc/portier/copyright",
        "./usr/share/doc/portier/changelog.Debian.gz",
        "./usr/share/man/man8/portier.8.gz",
        "./usr/share/bash-completion/completions/portier",
        "./usr/share/zsh/vendor-completions/_portier",
        "./usr/share/fish/vendor_completions.d/portier.fish",
    ] {
        assert_eq!(mode_of(file), "-rw-r--r--", "{file}");
    }
    let files = entries.iter().filter(|(m, _, _)| !m.starts_with('d'));
    assert_eq!(files.count(), 9, "unexpected files:\n{listing}");

    let deb = deb();
    let field = |name: &str| stdout_ok("dpkg-deb", &["-f", deb.to_str().unwrap(), name]);
    assert_eq!(field("Package").trim(), "portier");
    assert_eq!(field("Version").trim(), VERSION);
    assert_eq!(
        field("Architecture").trim(),
        stdout_ok("dpkg", &["--print-architecture"]).trim()
    );
    assert_eq!(field("Section").trim(), "net");
    assert_eq!(field("Priority").trim(), "optional");
    assert_eq!(
        field("Maintainer").trim(),
        "portier developers <portier@example.invalid>"
    );
    assert!(
        field("Depends").contains("libc6 (>= "),
        "{}",
        field("Depends")
    );
    assert!(!field("Description").trim().is_empty());
    let size: u64 = field("Installed-Size")
        .trim()
        .parse()
        .expect("Installed-Size");
    assert!(size > 1024, "Installed-Size {size} KiB");
}

/// dpkg installs it into an empty root (its own database there; no maintainer script can
/// reach a systemd there) and verifies every file against the package's md5sums.
#[test]
fn dpkg_installs_and_verifies_the_package_in_a_separate_root() {
    let dir = TempDir::new("dpkg-root");
    let root = dir.0.join("root");
    let admin = root.join("var/lib/dpkg");
    for sub in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(sub)).expect("dpkg admin dir");
    }
    std::fs::write(admin.join("status"), "").expect("status");
    let root_arg = format!("--root={}", root.display());
    let log = format!("--log={}", dir.0.join("dpkg.log").display());
    let deb = deb();
    // Depends (libc6, libgcc-s1) are not in the empty root; the scripts run outside it (they
    // only talk to a running systemd, and there is none in the root).
    let out = run(
        "dpkg",
        &[
            &root_arg,
            &log,
            "--force-depends",
            "--force-script-chrootless",
            "--force-not-root",
            "-i",
            deb.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "dpkg -i: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let files = stdout_ok("dpkg", &[&root_arg, "-L", "portier"]);
    assert!(files.lines().any(|l| l == "/usr/sbin/portier"), "{files}");
    // No output: every file matches its md5sum.
    let verify = stdout_ok("dpkg", &[&root_arg, "--verify", "portier"]);
    assert_eq!(verify, "");
    let status = stdout_ok("dpkg-query", &[&root_arg, "-W", "-f=${Status}", "portier"]);
    assert_eq!(status, "install ok installed");

    // And removes it (prerm, postrm), leaving no file behind.
    let out = run(
        "dpkg",
        &[
            &root_arg,
            &log,
            "--force-depends",
            "--force-script-chrootless",
            "--force-not-root",
            "--purge",
            "portier",
        ],
    );
    assert!(
        out.status.success(),
        "dpkg --purge: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!root.join("usr/sbin/portier").exists());
    assert!(!root.join("lib/systemd/system/portier@.service").exists());
}

#[test]
fn systemd_accepts_the_unit() {
    let (_dir, root) = unpacked("unit");
    let unit_dir = root.join("lib/systemd/system");
    let unit = std::fs::read_to_string(unit_dir.join("portier@.service")).expect("unit");
    for line in [
        "Type=notify",
        "ExecStartPre=/usr/sbin/portier check -c /etc/portier/%i.toml",
        "ExecStart=/usr/sbin/portier run -c /etc/portier/%i.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RuntimeDirectory=portier",
        "RuntimeDirectoryPreserve=yes",
        "LimitMEMLOCK=infinity",
        "LimitNOFILE=1048576",
        "Requires=sys-fs-bpf.mount",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
    // systemd-analyze verifies instances, not templates: verify lb1's, with the unit's paths
    // (/usr/sbin/portier, /bin/kill) looked up in the unpacked root.
    std::fs::create_dir_all(root.join("bin")).expect("bin");
    std::fs::copy("/bin/kill", root.join("bin/kill")).expect("kill");
    let instance = unit_dir.join("portier@lb1.service");
    std::fs::copy(unit_dir.join("portier@.service"), &instance).expect("instance");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--recursive-errors=no"])
        .arg(format!("--root={}", root.display()))
        .arg(&instance)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Unknown keys and bad values are warnings only: none may be about our unit.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("portier@")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify:\n{stderr}");
}

#[test]
fn packaged_binary_checks_the_shipped_example_config() {
    let (_dir, root) = unpacked("check");
    let example = root.join("usr/share/doc/portier/examples/portier.toml");
    let out = Command::new(root.join("usr/sbin/portier"))
        .args(["check", "-c"])
        .arg(&example)
        .output()
        .expect("portier check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": ok ("), "{stdout}");
    // The example is the config reference's own, not a copy that can drift.
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/example.toml");
    assert!(
        std::fs::read(&example).expect("example") == std::fs::read(reference).expect("reference"),
        "the packaged example differs from src/config/example.toml: rebuild the package"
    );
    let version = Command::new(root.join("usr/sbin/portier"))
        .arg("--version")
        .output()
        .expect("portier --version");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("portier {VERSION}")
    );
}

#[test]
fn man_page_renders_and_completions_know_the_commands() {
    let (_dir, root) = unpacked("docs");
    let page = root.join("usr/share/man/man8/portier.8.gz");
    let out = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("man -l");
    // Bold and underline come as overstrikes ("x\x08x"); keep the characters.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&out.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    assert!(
        out.status.success(),
        "man -l: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "portier run",
        "portier check",
        "portier drain",
        "--teardown-on-exit",
        "/etc/portier/NODE.toml",
        "SIGHUP",
    ] {
        assert!(
            text.contains(expected),
            "man page lacks {expected}:\n{text}"
        );
    }
    assert!(!text.contains("xdp-pass") && !text.contains("manpage"));
    // groff parses it without a warning.
    let roff = Command::new(root.join("usr/sbin/portier"))
        .arg("manpage")
        .output()
        .expect("portier manpage");
    let mut groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff");
    std::io::Write::write_all(&mut groff.stdin.take().expect("stdin"), &roff.stdout)
        .expect("groff stdin");
    let groff = groff.wait_with_output().expect("groff");
    assert!(groff.status.success());
    assert_eq!(String::from_utf8_lossy(&groff.stderr), "");

    for (path, marker) in [
        (
            "usr/share/bash-completion/completions/portier",
            "_portier()",
        ),
        (
            "usr/share/zsh/vendor-completions/_portier",
            "#compdef portier",
        ),
        (
            "usr/share/fish/vendor_completions.d/portier.fish",
            "complete -c portier",
        ),
    ] {
        let text = std::fs::read_to_string(root.join(path)).expect(path);
        assert!(text.contains(marker), "{path} lacks {marker}");
        for sub in [
            "run", "check", "status", "reload", "drain", "undrain", "weight",
        ] {
            assert!(text.contains(sub), "{path} lacks {sub}");
        }
        assert!(!text.contains("xdp-pass"), "{path} offers a hidden command");
    }
    let bash = run(
        "bash",
        &[
            "-n",
            root.join("usr/share/bash-completion/completions/portier")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );
}

/// A `portier run` (L7 on loopback: it runs on any machine) with NOTIFY_SOCKET set, killed
/// when the test ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next notification, within 20 s; else the daemon's log.
fn next(sock: &UnixDatagram, log: &Path) -> String {
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!(
            "no notification within 20 s ({e}); the daemon's log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

#[test]
fn daemon_tells_systemd_ready_reloading_and_stopping() {
    let dir = TempDir::new("notify");
    let admin = dir.0.join("admin.sock");
    let config = dir.0.join("portier.toml");
    let ports = ports::daemon_ports(2);
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"notify-test\"\n\
             [admin]\nsocket = \"{}\"\nlisten = \"127.0.0.1:{}\"\n\
             [[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:{}\"\n\
             [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
             [[l7.pool]]\nname = \"p\"\nservers = [{{ address = \"127.0.0.1:9\" }}]\n",
            admin.display(),
            ports[0],
            ports[1]
        ),
    )
    .expect("config");
    let notify = dir.0.join("notify.sock");
    let log = dir.0.join("daemon.log");
    let sock = UnixDatagram::bind(&notify).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_portier"))
            .args(["run", "-c"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify)
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("portier run"),
    );
    assert_eq!(next(&sock, &log), "READY=1\n");
    // Ready means serving: the admin socket answers.
    assert!(admin.exists(), "READY=1 before the admin socket exists");

    let pid = nix::unistd::Pid::from_raw(daemon.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    let reloading = next(&sock, &log);
    let lines: Vec<&str> = reloading.lines().collect();
    assert_eq!(lines.first(), Some(&"RELOADING=1"), "{reloading}");
    let usec: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .expect("MONOTONIC_USEC");
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) },
        0
    );
    let now_usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000;
    assert!(
        usec <= now_usec && now_usec - usec < 20_000_000,
        "{usec} vs {now_usec}"
    );
    assert_eq!(next(&sock, &log), "READY=1\n");

    // `portier reload` goes through the admin socket: the same notifications.
    let out = Command::new(env!("CARGO_BIN_EXE_portier"))
        .args(["reload", "--socket"])
        .arg(&admin)
        .output()
        .expect("portier reload");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(next(&sock, &log).starts_with("RELOADING=1\n"));
    assert_eq!(next(&sock, &log), "READY=1\n");

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    assert_eq!(next(&sock, &log), "STOPPING=1\n");
    let status = daemon.0.wait().expect("wait");
    assert!(status.success(), "{status}");
}
