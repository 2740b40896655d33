//! A Docker engine of a test's own (Debian's `docker.io`): `dockerd` in a network namespace
//! of its own, with its own data root, exec root, pid file and socket under a temporary
//! directory, no default bridge and no iptables rules, so it touches nothing outside the
//! test. Dropping it removes its containers, stops the daemon, unmounts what it mounted and
//! deletes the namespace and the directory (also when the test panics).
//!
//! No registry is reachable: the test image is made with `docker import` from a tarball
//! holding Debian's static busybox (`busybox httpd` serves each container's name).
//!
//! [`Engine::start_in`] runs one in a namespace someone else owns (a docker lab host, see
//! `lab_docker`), its files under a directory of theirs; [`remove`] undoes it by name.

use crate::netns::{self, ip_in, spawn_in};
use crate::wait;
use anyhow::{Context, Result, bail};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Debian's client, not whatever else `docker` on PATH may be.
pub const DOCKER: &str = "/usr/bin/docker";
const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's `busybox-static`.
const BUSYBOX: &str = "/bin/busybox";
/// The test image: busybox as /bin/busybox and /bin/sh, serving /w on 8080 (EXPOSE 8080).
pub const IMAGE: &str = "portier-test/busybox:1";

pub struct Engine {
    pub ns: String,
    pub dir: PathBuf,
    /// The cgroup (v1, cgroupfs driver) the engine puts its containers under: how cleanup
    /// finds container processes whatever state the daemon is in.
    cgroup: String,
    daemon: Option<Child>,
    /// The namespace is the engine's own (deleted with it), not a host's it was started in.
    own_ns: bool,
}

/// The cgroup (under each v1 controller) of the containers of the engine in namespace `ns`.
fn cgroup_of(ns: &str) -> String {
    format!("portier-{ns}-docker")
}

fn require_tools(tools: &[&str]) -> Result<()> {
    for tool in tools {
        if !Path::new(tool).exists() {
            bail!("{tool} is missing: `cargo xtask setup` installs docker.io and busybox-static");
        }
    }
    Ok(())
}

impl Engine {
    /// Starts an engine in namespace `PREFIX-eng` with its files under
    /// /tmp/portier-PREFIX-docker, and makes the test image.
    pub fn start(prefix: &str) -> Result<Engine> {
        netns::require_root()?;
        require_tools(&[DOCKER, DOCKERD, BUSYBOX])?;
        let ns = format!("{prefix}-eng");
        let dir = PathBuf::from(format!("/tmp/portier-{prefix}-docker"));
        let cgroup = cgroup_of(&ns);
        // Left over by a test that was killed: clean before use.
        cleanup(&ns, &dir, &cgroup, true);
        std::fs::create_dir_all(&dir)?;
        netns::add(&ns)?;
        let mut e = Engine {
            ns,
            dir,
            cgroup,
            daemon: None,
            own_ns: true,
        };
        ip_in(&e.ns, &["link", "set", "lo", "up"])?;
        e.start_daemon()?;
        e.make_image()?;
        Ok(e)
    }

    /// Starts an engine in namespace `ns`, which the caller made and deletes, with its files
    /// under `dir` (made here; [`remove`] with the same two names undoes it all). No image.
    pub fn start_in(ns: &str, dir: &Path) -> Result<Engine> {
        netns::require_root()?;
        require_tools(&[DOCKER, DOCKERD])?;
        std::fs::create_dir_all(dir)?;
        let mut e = Engine {
            ns: ns.to_owned(),
            dir: dir.to_owned(),
            cgroup: cgroup_of(ns),
            daemon: None,
            own_ns: false,
        };
        e.start_daemon()?;
        Ok(e)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `unix:///tmp/.../docker.sock`, for `[discovery.docker] endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn start_daemon(&mut self) -> Result<()> {
        let d = &self.dir;
        let arg = |name: &str, sub: &str| format!("--{name}={}", d.join(sub).display());
        let args = [
            arg("data-root", "data"),
            arg("exec-root", "exec"),
            arg("pidfile", "dockerd.pid"),
            format!("--host=unix://{}", self.socket().display()),
            "--bridge=none".into(),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            "--ip-masq=false".into(),
            format!("--cgroup-parent=/{}", self.cgroup),
            // Containers outlive a daemon restart, as on hosts that upgrade the engine.
            "--live-restore".into(),
            // The namespace stays a host, not a router, whatever the engine would like.
            "--ip-forward=false".into(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = spawn_in(&self.ns, Path::new(DOCKERD), &args, &d.join("dockerd.log"))?;
        self.daemon = Some(child);
        wait::until("dockerd answers", Duration::from_secs(60), || {
            if let Some(c) = &mut self.daemon
                && let Some(status) = c.try_wait()?
            {
                bail!(
                    "dockerd exited ({status}): {}",
                    tail(&self.dir.join("dockerd.log"))
                );
            }
            Ok(self
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .is_ok())
        })?;
        Ok(())
    }

    /// Stops the daemon (SIGTERM, as systemd does); containers keep running (live restore).
    pub fn stop_daemon(&mut self) -> Result<()> {
        if let Some(mut c) = self.daemon.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            wait::until("dockerd stops", Duration::from_secs(30), || {
                Ok(c.try_wait()?.is_some())
            })?;
        }
        Ok(())
    }

    pub fn restart_daemon(&mut self) -> Result<()> {
        self.stop_daemon()?;
        self.start_daemon()
    }

    /// `docker ARGS` against this engine; stdout, trimmed.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        docker_at(&self.dir, args)
    }

    fn make_image(&self) -> Result<()> {
        let root = self.dir.join("image");
        std::fs::create_dir_all(root.join("bin"))?;
        std::fs::copy(BUSYBOX, root.join("bin/busybox"))?;
        let _ = std::fs::remove_file(root.join("bin/sh"));
        std::os::unix::fs::symlink("busybox", root.join("bin/sh"))?;
        self.import(
            IMAGE,
            &root,
            &[
                "EXPOSE 8080",
                r#"CMD ["/bin/sh", "-c", "mkdir -p /w && echo -n $HOSTNAME > /w/index.html && exec busybox httpd -f -p 8080 -h /w"]"#,
            ],
        )
    }

    /// `docker import` of the directory `root` as image `tag` (`FROM scratch`), with
    /// Dockerfile instructions `changes` (`EXPOSE 8080`, `CMD [...]`).
    pub fn import(&self, tag: &str, root: &Path, changes: &[&str]) -> Result<()> {
        let tar = self
            .dir
            .join(format!("{}.tar", tag.replace(['/', ':'], "-")));
        netns::run(
            "tar",
            &[
                "-C",
                &root.to_string_lossy(),
                "-cf",
                &tar.to_string_lossy(),
                ".",
            ],
        )?;
        let mut args = vec!["import"];
        for c in changes {
            args.extend(["--change", c]);
        }
        let tar = tar.to_string_lossy();
        args.extend([tar.as_ref(), tag]);
        self.docker(&args)?;
        Ok(())
    }

    /// `docker network create` of a bridge network (its bridge `BRIDGE`) on `subnet`.
    pub fn network(&self, name: &str, bridge: &str, subnet: &str) -> Result<()> {
        self.docker(&[
            "network",
            "create",
            "--driver=bridge",
            &format!("--subnet={subnet}"),
            "-o",
            &format!("com.docker.network.bridge.name={bridge}"),
            name,
        ])?;
        Ok(())
    }

    /// `docker run -d --init --name NAME --hostname NAME` of the test image, with `labels`
    /// and `extra` arguments; the app answers every GET with NAME.
    pub fn run_app(
        &self,
        name: &str,
        network: &str,
        labels: &[(&str, &str)],
        extra: &[&str],
    ) -> Result<String> {
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--init",
            "--name",
            name,
            "--hostname",
            name,
            "--network",
            network,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(IMAGE.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.docker(&args)
    }

    /// The container's address on `network`.
    pub fn ip_of(&self, name: &str, network: &str) -> Result<IpAddr> {
        let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
        let text = self.docker(&["inspect", "--format", &f, name])?;
        text.parse()
            .with_context(|| format!("{name} has no address on {network}: {text:?}"))
    }

    /// The container's main process as the host sees it.
    pub fn pid_of(&self, name: &str) -> Result<i32> {
        let text = self.docker(&["inspect", "--format", "{{.State.Pid}}", name])?;
        Ok(text.parse()?)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // (In a host's namespace the whole namespace is going: the cgroups' SIGKILL does.)
        if self.daemon.is_some()
            && self.own_ns
            && let Ok(ids) = self.docker(&["ps", "-aq"])
            && !ids.is_empty()
        {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.lines());
            let _ = self.docker(&args);
        }
        let _ = self.stop_daemon();
        cleanup(&self.ns, &self.dir, &self.cgroup, self.own_ns);
    }
}

/// `docker ARGS` against the engine whose files are under `dir` (its socket
/// `dir/docker.sock`); stdout, trimmed.
pub fn docker_at(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(DOCKER)
        .arg(format!(
            "--host=unix://{}",
            dir.join("docker.sock").display()
        ))
        .args(args)
        .env("DOCKER_CONFIG", dir.join("cli"))
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .output()
        .context("cannot run docker")?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Removes what [`Engine::start_in`]`(ns, dir)` made, in whatever state it is (a lab left up,
/// a test killed): its containers, every process in `ns`, its mounts, cgroups and `dir`.
/// The namespace itself stays, for its owner to delete. Safe when nothing is there.
pub fn remove(ns: &str, dir: &Path) {
    cleanup(ns, dir, &cgroup_of(ns), false);
}

/// Everything an engine of `ns`/`dir`/`cgroup` may leave: container processes (they outlive
/// the daemon: live restore), processes in the namespace (containerd, its shims), mounts
/// under `dir`, the cgroups, the directory, and with `own_ns` the namespace.
fn cleanup(ns: &str, dir: &Path, cgroup: &str, own_ns: bool) {
    let groups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .map(|c| c.path().join(cgroup))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    for g in &groups {
        let children: Vec<PathBuf> = std::fs::read_dir(g)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        for c in children.iter().chain(std::iter::once(g)) {
            let procs = std::fs::read_to_string(c.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    if Path::new(&format!("/run/netns/{ns}")).exists() {
        netns::kill_all_in(ns);
    }
    let prefix = dir.to_string_lossy().into_owned();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    // Deepest first.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    // A cgroup can only go once its processes have exited.
    for g in &groups {
        let _ = wait::until("container cgroups empty", Duration::from_secs(5), || {
            let children: Vec<PathBuf> = std::fs::read_dir(g)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .collect()
                })
                .unwrap_or_default();
            for c in &children {
                let _ = std::fs::remove_dir(c);
            }
            Ok(std::fs::remove_dir(g).is_ok() || !g.exists())
        });
    }
    if own_ns {
        let _ = netns::ip(&["netns", "del", ns]);
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
