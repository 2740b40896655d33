//! A LAN of VRRP routers for the interop tests: nodes on one bridge, each running portier or
//! Debian's keepalived, and a client. Everything is removed on drop, also after a panic.
//!
//! ```text
//!  <p>-a 10.77.0.1   <p>-b 10.77.0.2   <p>-c 10.77.0.3 (client)
//!        \________________|________________/
//!                  br0 in <p>-lan            VIP 10.77.0.100
//! ```

use crate::lab::bin_dir;
use crate::netns::{self, ip, ip_in, spawn_in};
use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

pub const VIP: &str = "10.77.0.100";
pub const VIP6: &str = "fd00:77::100";
pub const NODES: [(&str, &str); 3] = [("a", "10.77.0.1"), ("b", "10.77.0.2"), ("c", "10.77.0.3")];
pub const VRID: u8 = 51;

/// Which implementation a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Portier,
    Keepalived,
}

/// One node's VRRP setup.
#[derive(Debug, Clone)]
pub struct Router {
    pub kind: Kind,
    pub priority: u8,
    pub version: u8,
    pub advert_ms: u32,
    pub preempt: bool,
    /// Interface to track and the weight it takes away while down (portier only).
    pub track_interface: Option<(String, u8)>,
    /// Service to track (portier only); `services` must define it.
    pub track_service: Option<(String, u8)>,
    /// Extra portier config: `[[service]]` tables (the node then attaches XDP to eth0).
    pub services: String,
    /// Serve the admin API on 127.0.0.1:9900 inside the node (portier only).
    pub admin: bool,
    /// An IPv6 virtual router (VRRPv3 over IPv6, VIP [`VIP6`]) instead of IPv4.
    pub ipv6: bool,
    /// Unicast adverts to these peers instead of multicast.
    pub unicast_peers: Vec<String>,
    /// Own the VIP with the virtual router MAC (portier `virtual_mac`, keepalived `use_vmac`).
    pub virtual_mac: bool,
    /// RFC 5798 Accept_Mode (portier `accept`): false drops traffic to the VIP while master.
    pub accept: bool,
}

impl Router {
    pub fn new(kind: Kind, priority: u8, version: u8, advert_ms: u32) -> Self {
        Self {
            kind,
            priority,
            version,
            advert_ms,
            preempt: true,
            track_interface: None,
            track_service: None,
            services: String::new(),
            admin: false,
            ipv6: false,
            unicast_peers: Vec::new(),
            virtual_mac: false,
            accept: true,
        }
    }

    fn portier_config(&self, node: &str) -> String {
        let interfaces = if self.services.is_empty() {
            ""
        } else {
            "interfaces = [\"eth0\"]\n"
        };
        let mut text = format!(
            "[node]\nname = \"{node}\"\n{interfaces}\n{}\n[[vrrp.instance]]\nname = \"vip{VRID}\"\ninterface = \"eth0\"\n\
             vrid = {VRID}\npriority = {}\nversion = {}\nadvert_interval_ms = {}\npreempt = {}\n\
             vips = [\"{}\"]\ngarp_repeat_delay_ms = 1000\nunicast_peers = [{}]\nvirtual_mac = {}\naccept = {}\n",
            self.services,
            self.priority,
            self.version,
            self.advert_ms,
            self.preempt,
            self.vip(),
            self.unicast_peers
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", "),
            self.virtual_mac,
            self.accept
        );
        if self.admin {
            text.insert_str(0, "[admin]\nlisten = \"127.0.0.1:9900\"\n\n");
        }
        if let Some((interface, weight)) = &self.track_interface {
            text.push_str(&format!(
                "  [[vrrp.instance.track]]\n  interface = \"{interface}\"\n  weight = {weight}\n"
            ));
        }
        if let Some((service, weight)) = &self.track_service {
            text.push_str(&format!(
                "  [[vrrp.instance.track]]\n  service = \"{service}\"\n  weight = {weight}\n"
            ));
        }
        text
    }

    fn vip(&self) -> &'static str {
        if self.ipv6 { VIP6 } else { VIP }
    }

    fn keepalived_config(&self, node: &str) -> String {
        let advert = if self.advert_ms.is_multiple_of(1000) {
            format!("{}", self.advert_ms / 1000)
        } else {
            format!("{:.2}", f64::from(self.advert_ms) / 1000.0)
        };
        let mut preempt = if self.preempt { "" } else { "  nopreempt\n" }.to_string();
        if self.virtual_mac {
            preempt.push_str("  use_vmac\n");
        }
        let (vip, prefix) = if self.ipv6 { (VIP6, 128) } else { (VIP, 32) };
        let unicast = if self.unicast_peers.is_empty() {
            String::new()
        } else {
            let own = NODES
                .iter()
                .find(|(n, _)| node.ends_with(&format!("-{n}")))
                .map_or("", |(_, a)| *a);
            format!(
                "  unicast_src_ip {own}\n  unicast_peer {{\n{}  }}\n",
                self.unicast_peers
                    .iter()
                    .map(|p| format!("    {p}\n"))
                    .collect::<String>()
            )
        };
        format!(
            "global_defs {{\n  router_id {node}\n  vrrp_version {}\n  vrrp_garp_master_delay 1\n}}\n\
             vrrp_instance V{VRID} {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {VRID}\n\
             priority {}\n  advert_int {advert}\n{preempt}{unicast}  virtual_ipaddress {{\n    {vip}/{prefix}\n  }}\n}}\n",
            self.version, self.priority
        )
    }
}

struct Process {
    kind: Kind,
    child: Child,
    /// keepalived's VRRP child, whose pid file the parent writes.
    vrrp_pid_file: Option<PathBuf>,
}

/// The LAN. Drop removes namespaces and every process in them.
pub struct Lan {
    pub prefix: String,
    pub dir: PathBuf,
    running: BTreeMap<String, Process>,
    starts: usize,
}

impl Lan {
    pub fn up(prefix: &str) -> Result<Lan> {
        netns::require_root()?;
        crate::lab::down(prefix);
        let dir = PathBuf::from(format!("/run/portier-vrrp/{prefix}"));
        // Pid files of an earlier run would make keepalived think it is already running.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let lan = Lan {
            prefix: prefix.to_string(),
            dir,
            running: BTreeMap::new(),
            starts: 0,
        };
        lan.build()
            .with_context(|| format!("building VRRP LAN {prefix}"))?;
        Ok(lan)
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    fn build(&self) -> Result<()> {
        let lan = self.ns("lan");
        crate::netns::add(&lan)?;
        ip_in(&lan, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(&lan, &["link", "set", "br0", "up"])?;
        for (node, address) in NODES {
            let ns = self.ns(node);
            crate::netns::add(&ns)?;
            ip_in(&ns, &["link", "set", "lo", "up"])?;
            // Link-local addresses usable at once: VRRPv3 over IPv6 sends from them.
            for key in ["all", "default"] {
                netns::exec_in(
                    &ns,
                    "sysctl",
                    &["-qw", &format!("net.ipv6.conf.{key}.accept_dad=0")],
                )?;
            }
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", node, "netns",
                &lan,
            ])?;
            ip_in(&lan, &["link", "set", "dev", node, "master", "br0", "up"])?;
            ip_in(
                &ns,
                &["addr", "add", &format!("{address}/24"), "dev", "eth0"],
            )?;
            ip_in(&ns, &["link", "set", "eth0", "up"])?;
            // Something to track that a test can take down without touching the LAN.
            // (No dummy module on these kernels: a veth pair inside the namespace.)
            ip_in(
                &ns,
                &[
                    "link", "add", "trk0", "type", "veth", "peer", "name", "trk1",
                ],
            )?;
            ip_in(&ns, &["link", "set", "trk1", "up"])?;
            ip_in(&ns, &["link", "set", "trk0", "up"])?;
        }
        Ok(())
    }

    /// Starts `router` on `node`; returns once the process runs (portier: once ready).
    pub fn start(&mut self, node: &str, router: &Router) -> Result<()> {
        self.starts += 1;
        let log = self.log(node);
        let ns = self.ns(node);
        let process = match router.kind {
            Kind::Portier => {
                let config = self.dir.join(format!("{node}.toml"));
                std::fs::write(&config, router.portier_config(&ns))?;
                let before = count(&log, "portier ready");
                let child = spawn_in(
                    &ns,
                    &bin_dir().join("portier"),
                    &["run", "-c", &config.to_string_lossy()],
                    &log,
                )?;
                let process = Process {
                    kind: Kind::Portier,
                    child,
                    vrrp_pid_file: None,
                };
                self.running.insert(node.to_string(), process);
                self.wait_log(node, "portier ready", before + 1, Duration::from_secs(20))?;
                return Ok(());
            }
            Kind::Keepalived => {
                let config = self.dir.join(format!("{node}-keepalived.conf"));
                std::fs::write(&config, router.keepalived_config(&ns))?;
                let pid = self.dir.join(format!("{node}-{}.pid", self.starts));
                let vrrp_pid = self.dir.join(format!("{node}-{}-vrrp.pid", self.starts));
                let child = spawn_in(
                    &ns,
                    std::path::Path::new("/usr/sbin/keepalived"),
                    &[
                        "-n",
                        "-l",
                        "-D",
                        "--dont-respawn",
                        "-f",
                        &config.to_string_lossy(),
                        "-p",
                        &pid.to_string_lossy(),
                        "-r",
                        &vrrp_pid.to_string_lossy(),
                    ],
                    &log,
                )?;
                Process {
                    kind: Kind::Keepalived,
                    child,
                    vrrp_pid_file: Some(vrrp_pid),
                }
            }
        };
        let before = count(&log, "Entering BACKUP STATE");
        self.running.insert(node.to_string(), process);
        // keepalived always starts as backup here (state BACKUP, priority below 255).
        self.wait_log(
            node,
            "Entering BACKUP STATE",
            before + 1,
            Duration::from_secs(10),
        )
    }

    /// Rewrites a running portier's config and sends SIGHUP; waits until it is applied.
    pub fn reload(&self, node: &str, router: &Router) -> Result<()> {
        let p = self.running.get(node).context("node not running")?;
        let config = self.dir.join(format!("{node}.toml"));
        std::fs::write(&config, router.portier_config(&self.ns(node)))?;
        let before = count(&self.log(node), "reload applied");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.child.id() as i32),
            Signal::SIGHUP,
        )?;
        self.wait_log(node, "reload applied", before + 1, Duration::from_secs(10))
    }

    pub fn log(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.log"))
    }

    /// Waits until `pattern` appears `n` times in the node's log.
    pub fn wait_log(&self, node: &str, pattern: &str, n: usize, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while count(&self.log(node), pattern) < n {
            if start.elapsed() > timeout {
                bail!(
                    "{node}: no '{pattern}' after {timeout:?}; log:\n{}",
                    std::fs::read_to_string(self.log(node)).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Hard failure: SIGKILL, no goodbye. For keepalived the VRRP child first, so the parent
    /// cannot make it resign.
    pub fn kill(&mut self, node: &str) -> Result<()> {
        let mut p = self.running.remove(node).context("node not running")?;
        if let Some(file) = &p.vrrp_pid_file {
            let pid: i32 = std::fs::read_to_string(file)?.trim().parse()?;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL)?;
        }
        p.child.kill()?;
        p.child.wait()?;
        Ok(())
    }

    /// Clean shutdown: SIGTERM, and wait for the process to exit.
    pub fn stop(&mut self, node: &str) -> Result<()> {
        let mut p = self.running.remove(node).context("node not running")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.child.id() as i32),
            Signal::SIGTERM,
        )?;
        let start = Instant::now();
        while p.child.try_wait()?.is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = p.child.kill();
                bail!("{node} ({:?}) did not stop within 10 s", p.kind);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Whether `node` holds the IPv4 or the IPv6 VIP (on eth0, or its virtual-MAC macvlan).
    pub fn has_vip(&self, node: &str) -> Result<bool> {
        let out = ip_in(&self.ns(node), &["-o", "addr", "show"])?;
        Ok(out.contains(&format!(" {VIP}/")) || out.contains(&format!(" {VIP6}/")))
    }

    /// Polls until `node` has (or lacks) the VIP; returns how long that took.
    pub fn wait_vip(&self, node: &str, present: bool, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.has_vip(node)? == present {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{node} {} the VIP after {timeout:?}; log:\n{}",
                    if present { "still lacks" } else { "still has" },
                    std::fs::read_to_string(self.log(node)).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Fails if `node`'s VIP ownership differs from `present` at any poll during `window`:
    /// the way to check that something does not happen.
    pub fn holds(&self, node: &str, present: bool, window: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < window {
            if self.has_vip(node)? != present {
                bail!(
                    "{node} {} the VIP after {:?}",
                    if present { "lost" } else { "took" },
                    start.elapsed()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Exactly one of `a` and `b` owns the VIP, and it is `owner`.
    pub fn owner_is(&self, owner: &str, other: &str, timeout: Duration) -> Result<()> {
        self.wait_vip(owner, true, timeout)?;
        self.wait_vip(other, false, timeout)?;
        Ok(())
    }

    /// Starts an HTTP app on the client node (a backend for service tracking), listening on
    /// `port`; stop it with [`Lan::kill`] on `"app"`.
    pub fn start_app(&mut self, port: u16) -> Result<()> {
        let log = self.dir.join("app.log");
        let before = count(&log, "ready");
        let child = spawn_in(
            &self.ns("c"),
            &bin_dir().join("portier-lab-app"),
            &["--name", "app", "--http", &format!("{}:{port}", NODES[2].1)],
            &log,
        )?;
        self.running.insert(
            "app".to_string(),
            Process {
                kind: Kind::Portier,
                child,
                vrrp_pid_file: None,
            },
        );
        let start = Instant::now();
        while count(&log, "ready") <= before {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("the app on node c did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `portier status` of a node (admin API on), as text or JSON.
    pub fn portier_status(&self, node: &str, json: bool) -> Result<String> {
        let portier = bin_dir().join("portier");
        // The node's config names it after its namespace; its admin socket follows.
        let name = self.ns(node);
        let mut args = vec!["status", "--node", &name];
        if json {
            args.push("--json");
        }
        netns::exec_in(&self.ns(node), &portier.to_string_lossy(), &args)
    }

    /// GET `path` from a node's admin API.
    pub fn admin_get(&self, node: &str, path: &str) -> Result<String> {
        use std::io::{Read, Write};
        netns::in_netns(&self.ns(node), || -> Result<String> {
            let mut stream = std::net::TcpStream::connect("127.0.0.1:9900")?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })?
    }

    pub fn set_link(&self, node: &str, dev: &str, up: bool) -> Result<()> {
        ip_in(
            &self.ns(node),
            &["link", "set", dev, if up { "up" } else { "down" }],
        )?;
        Ok(())
    }

    /// Pings the VIP from the client every `interval` for `duration`; returns the longest
    /// time between two replies (the failover gap a client sees).
    pub fn ping_gap(&self, interval: Duration, duration: Duration) -> Result<Duration> {
        ping_gap(&self.ns("c"), interval, duration)
    }
}

/// Pings the VIP from namespace `ns` every `interval` for `duration`; returns the longest
/// time between two replies (the failover gap a client sees).
pub fn ping_gap(ns: &str, interval: Duration, duration: Duration) -> Result<Duration> {
    let count = (duration.as_secs_f64() / interval.as_secs_f64()).ceil() as u64;
    // ping exits 1 when replies were lost, which is the point here: read stdout anyway.
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args([
            "ping",
            "-D",
            "-n",
            "-i",
            &format!("{:.3}", interval.as_secs_f64()),
            "-c",
            &count.to_string(),
            "-W",
            "1",
            VIP,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run ping")?;
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    gap_from_ping(&out)
}

/// Longest gap between `[timestamp] ... bytes from` lines of `ping -D` output.
pub fn gap_from_ping(out: &str) -> Result<Duration> {
    let times: Vec<f64> = out
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    if times.len() < 2 {
        bail!("too few ping replies to measure a gap:\n{out}");
    }
    let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    Ok(Duration::from_secs_f64(gap))
}

impl Drop for Lan {
    fn drop(&mut self) {
        for (_, mut p) in std::mem::take(&mut self.running) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        crate::lab::down(&self.prefix);
        // Logs stay for a failed test to be read; PORTIER_KEEP_LOGS keeps them always.
        if !std::thread::panicking() && std::env::var_os("PORTIER_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn count(log: &std::path::Path, pattern: &str) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.matches(pattern).count())
        .unwrap_or(0)
}

/// The longest time a client pinging the VIP every `every` for `run` goes without a reply
/// when the master of a pair of `kind` (priorities 150 and 100, VRRPv3, adverts every
/// `advert_ms`) fails `fail_after` into the run: SIGKILL and its LAN link cut at once
/// (`clean`: a clean stop instead), so that neither the VIP left on the dead node nor a
/// goodbye advert can hide the gap. Shared by `cargo xtask bench failover` and the
/// `vrrp_bench` test.
pub fn failover_gap(
    prefix: &str,
    kind: Kind,
    advert_ms: u32,
    clean: bool,
    every: Duration,
    run: Duration,
    fail_after: Duration,
) -> Result<Duration> {
    let mut lan = Lan::up(prefix)?;
    lan.start("b", &Router::new(kind, 100, 3, advert_ms))?;
    lan.start("a", &Router::new(kind, 150, 3, advert_ms))?;
    lan.owner_is("a", "b", Duration::from_secs(10))?;
    std::thread::scope(|s| {
        let client = lan.ns("c");
        let pinger = s.spawn(move || ping_gap(&client, every, run));
        std::thread::sleep(fail_after);
        if clean {
            lan.stop("a")?;
        } else {
            lan.kill("a")?;
            lan.set_link("a", "eth0", false)?;
        }
        pinger
            .join()
            .map_err(|_| anyhow::anyhow!("the pinger panicked"))?
    })
}
