//! The lab of DESIGN.md, built from namespaces and veths on one machine.
//!
//! ```text
//!  <p>-client eth0 198.51.100.10/24 (gw .1)
//!      |
//!  <p>-router eth0 198.51.100.1/24, eth1 10.0.0.1/24
//!      |  LAN 10.0.0.0/24: bridge br0 in namespace <p>-lan
//!      +-- <p>-lb1 10.0.0.11, <p>-lb2 10.0.0.12      portier
//!      +-- <p>-host1..3 10.0.0.21..23                VIP on lo, portier L7 on :80
//!             br0 172.17.0.1/16 (not routed)
//!               +-- <p>-hostN-todo1 172.17.0.10, -todo2 .11, -shop1 .12   lab app :8080
//! ```
//! IPv6 beside it: client 2001:db8:c::10/64 (gw ::1, router eth0), router eth1
//! 2001:db8:a::1/64, LAN 2001:db8:a::/64 with lb1 ::11, lb2 ::12, host1-3 ::21-::23; VIP
//! 2001:db8:f::10 (TCP 80, every UDP port) owned by VRRPv3 VRID 52. The router learns it by
//! MP-BGP in `--routing bgp`; with OSPF (OSPFv2 carries no IPv6) the stand-in is an on-link
//! route, so the router's neighbour discovery finds whichever LB is VRRP master (and, in
//! `--anycast` without BGP, static ECMP routes over both LBs, which nothing withdraws).
//! Each host's portier (examples/lab-host.toml) routes `todo.example` and `shop.example` to
//! its own containers; a small app per host answers UDP on port 9000.
//! The router runs FRR (zebra + ospfd, DR on eth1, ECMP) and learns the VIP /32 from the
//! LBs' portier by OSPF; [`Lab::wait_vip_route`] waits for the next hops a test expects.
//! In the docker variant ([`Variant::docker`], [`crate::lab_docker`]) the hosts' containers
//! are containers of a Docker engine per host instead, found by labels.

use crate::frr::{self, Frr};
use crate::netns::{self, exec_in, ip, ip_in, spawn_in};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

pub const VIP: &str = "203.0.113.10";
pub const VIP6: &str = "2001:db8:f::10";
pub const CLIENT_ADDR: &str = "198.51.100.10";
pub const CLIENT_ADDR6: &str = "2001:db8:c::10";
/// The router's address on the LAN, IPv6.
pub const ROUTER_LAN6: &str = "2001:db8:a::1";
/// A node's IPv6 address on the LAN: its IPv4 address's last byte, as hex digits (::11 for
/// 10.0.0.11).
pub fn lan6(addr4: &str) -> String {
    let last = addr4.rsplit('.').next().unwrap_or("0");
    format!("2001:db8:a::{last}")
}
pub const HTTP_PORT: u16 = 80;
/// UDP service port of the lab apps (the UDP service is a wildcard-port one).
pub const UDP_PORT: u16 = 9000;
/// Enough for VRRP mastership (3.4 s), the OSPF adjacency and MinLSInterval (5 s).
pub const VIP_ROUTE_TIMEOUT: Duration = Duration::from_secs(30);
/// examples/lab-lb.toml's `standby_metric` for the VIP: a VRRP backup's announcement.
pub const LAB_STANDBY_METRIC: u64 = 1000;
pub const LBS: [(&str, &str); 2] = [("lb1", "10.0.0.11"), ("lb2", "10.0.0.12")];
/// Containers on every host's bridge: (name suffix, address).
pub const CONTAINERS: [(&str, &str); 3] = [
    ("todo1", "172.17.0.10"),
    ("todo2", "172.17.0.11"),
    ("shop1", "172.17.0.12"),
];
/// The port the container apps listen on.
pub const APP_PORT: u16 = 8080;
pub const TODO_HOST: &str = "todo.example";
pub const SHOP_HOST: &str = "shop.example";
pub const HOSTS: [(&str, &str); 3] = [
    ("host1", "10.0.0.21"),
    ("host2", "10.0.0.22"),
    ("host3", "10.0.0.23"),
];

/// Where the binaries are: `PORTIER_BIN_DIR`, else the workspace's target/debug.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("PORTIER_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("debug")
        })
}

fn bin(name: &str) -> Result<PathBuf> {
    let p = bin_dir().join(name);
    if !p.exists() {
        bail!(
            "{} is missing: build it first (`cargo xtask build`, which `cargo xtask test` runs)",
            p.display()
        );
    }
    Ok(p)
}

/// The workspace's examples/ folder.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
}

/// A running lab. Dropping it tears everything down, also when a test panics.
/// Which lab: DESIGN.md's default (VRRP picks the LB that announces the VIP), or a variant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Variant {
    /// VRRP off; both LBs announce the VIP by OSPF while their service is healthy, and the
    /// router runs bfdd too: BFD 50 ms x3 to each LB, ECMP over both.
    pub anycast: bool,
    /// The VIP reaches the router by eBGP instead of OSPF: FRR bgpd AS 64512 (multipath, MD5
    /// password `portier-lab`), the LBs AS 64513.
    pub bgp: bool,
    /// Each host runs a Docker engine of its own, the containers are real containers of it
    /// and the host's portier finds them by labels ([`crate::lab_docker`]).
    pub docker: bool,
}

/// The lab's BGP: the router's AS, the LBs' AS, the sessions' MD5 password.
pub const ROUTER_AS: u32 = 64512;
pub const LB_AS: u32 = 64513;
pub const BGP_PASSWORD: &str = "portier-lab";

pub struct Lab {
    pub prefix: String,
    pub run_dir: PathBuf,
    pub variant: Variant,
    keep: bool,
    apps: std::sync::Mutex<std::collections::HashMap<String, Child>>,
    /// Each host's portier (its front door), by host name.
    doors: std::sync::Mutex<std::collections::HashMap<String, Daemon>>,
    /// The router's FRR (zebra + ospfd).
    frr: Option<Frr>,
    /// The hosts' Docker engines, in the docker variant.
    engines: std::sync::Mutex<Vec<crate::dockerd::Engine>>,
}

/// A portier process started in a lab namespace.
pub struct Daemon {
    pub node: String,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl Lab {
    /// Builds the lab (removing leftovers of an earlier one with the same prefix first) and
    /// starts the host apps. portier itself is started with [`Lab::start_portier`].
    pub fn up(prefix: &str) -> Result<Lab> {
        Self::up_with(prefix, Variant::default())
    }

    /// [`Lab::up`] for a variant of the lab.
    pub fn up_with(prefix: &str, variant: Variant) -> Result<Lab> {
        netns::require_root()?;
        down(prefix);
        let run_dir = PathBuf::from(format!("/run/portier-lab/{prefix}"));
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        let mut lab = Lab {
            prefix: prefix.to_string(),
            run_dir,
            variant,
            keep: false,
            apps: Default::default(),
            doors: Default::default(),
            frr: None,
            engines: Default::default(),
        };
        lab.build_topology()
            .with_context(|| format!("building lab {prefix}"))?;
        let router = lab.ns("router");
        let mut daemons = vec!["zebra"];
        if variant.anycast {
            daemons.push("bfdd");
        }
        daemons.push(if variant.bgp { "bgpd" } else { "ospfd" });
        lab.frr = Some(Frr::start_daemons(
            &router,
            &router,
            &router_frr_config(&router, variant),
            &daemons,
        )?);
        if !variant.bgp {
            lab.route_vip6_standin()?;
        }
        lab.start_apps()?;
        Ok(lab)
    }

    /// Leaves the lab running after this value is dropped (for `cargo xtask lab up`/demo).
    pub fn keep(mut self) {
        self.keep = true;
        drop(self);
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    fn build_topology(&self) -> Result<()> {
        let mut nodes = vec!["client", "router", "lan"];
        nodes.extend(LBS.iter().map(|(n, _)| *n));
        nodes.extend(HOSTS.iter().map(|(n, _)| *n));
        for n in &nodes {
            netns::add(&self.ns(n))?;
            ip_in(&self.ns(n), &["link", "set", "lo", "up"])?;
            // Explicit, so a host's defaults never change what the lab does.
            // No duplicate address detection either: link-local addresses (VRRPv3 adverts
            // leave from them) are usable the moment a link is up.
            for key in [
                "net.ipv4.conf.all.rp_filter",
                "net.ipv4.conf.default.rp_filter",
                "net.ipv6.conf.all.accept_dad",
                "net.ipv6.conf.default.accept_dad",
            ] {
                exec_in(&self.ns(n), "sysctl", &["-qw", &format!("{key}=0")])?;
            }
        }
        let lan = self.ns("lan");
        ip_in(&lan, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(&lan, &["link", "set", "br0", "up"])?;

        let (client, router) = (self.ns("client"), self.ns("router"));
        veth(&client, "eth0", &router, "eth0")?;
        veth(&router, "eth1", &lan, "router")?;
        ip_in(&lan, &["link", "set", "router", "master", "br0", "up"])?;
        addr_up(&client, "eth0", "198.51.100.10/24")?;
        ip_in(&client, &["route", "add", "default", "via", "198.51.100.1"])?;
        addr6(&client, "eth0", &format!("{CLIENT_ADDR6}/64"))?;
        ip_in(
            &client,
            &["-6", "route", "add", "default", "via", "2001:db8:c::1"],
        )?;
        addr_up(&router, "eth0", "198.51.100.1/24")?;
        addr_up(&router, "eth1", "10.0.0.1/24")?;
        addr6(&router, "eth0", "2001:db8:c::1/64")?;
        addr6(&router, "eth1", &format!("{ROUTER_LAN6}/64"))?;
        exec_in(&router, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        exec_in(
            &router,
            "sysctl",
            &["-qw", "net.ipv6.conf.all.forwarding=1"],
        )?;
        exec_in(
            &router,
            "sysctl",
            &["-qw", "net.ipv6.fib_multipath_hash_policy=1"],
        )?;
        exec_in(
            &router,
            "sysctl",
            &["-qw", "net.ipv4.fib_multipath_hash_policy=1"],
        )?;
        // Lab fact (DESIGN.md): veth TX checksum offload leaves partial checksums that the
        // host behind an XDP_TX hop sees as wrong.
        exec_in(&client, "ethtool", &["-K", "eth0", "tx", "off"])?;
        exec_in(&router, "ethtool", &["-K", "eth0", "tx", "off"])?;
        exec_in(&router, "ethtool", &["-K", "eth1", "tx", "off"])?;

        for (name, addr) in LBS.iter().chain(HOSTS.iter()) {
            let ns = self.ns(name);
            veth(&ns, "eth0", &lan, name)?;
            ip_in(&lan, &["link", "set", name, "master", "br0", "up"])?;
            addr_up(&ns, "eth0", &format!("{addr}/24"))?;
            ip_in(&ns, &["route", "add", "default", "via", "10.0.0.1"])?;
            addr6(&ns, "eth0", &format!("{}/64", lan6(addr)))?;
            ip_in(&ns, &["-6", "route", "add", "default", "via", ROUTER_LAN6])?;
        }
        for (name, _) in HOSTS {
            if !self.variant.docker {
                self.build_containers(name)?;
            }
        }
        for (name, _) in HOSTS {
            let ns = self.ns(name);
            // DSR: the host accepts the VIP but must never answer ARP for it. (IPv6 neighbour
            // discovery answers only for addresses of the interface asked, so the IPv6 VIP on
            // lo needs nothing more.)
            ip_in(&ns, &["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            addr6(&ns, "lo", &format!("{VIP6}/128"))?;
            for (k, v) in [
                ("net.ipv4.conf.all.arp_ignore", "1"),
                ("net.ipv4.conf.all.arp_announce", "2"),
                ("net.ipv4.conf.eth0.arp_ignore", "1"),
                ("net.ipv4.conf.eth0.arp_announce", "2"),
            ] {
                exec_in(&ns, "sysctl", &["-qw", &format!("{k}={v}")])?;
            }
        }
        // Lab fact (DESIGN.md): frames an XDP program sends with XDP_TX into a veth are only
        // delivered when the peer end has an XDP program too.
        let portier = bin("portier")?;
        for (name, _) in LBS {
            let pin = format!("/sys/fs/bpf/portier/{}-lan-{name}-pass", self.prefix);
            exec_in(
                &lan,
                &portier.to_string_lossy(),
                &["xdp-pass", "--interface", name, "--pin", &pin],
            )?;
        }
        Ok(())
    }

    /// A bridge inside `host` with its containers, each a namespace on a veth.
    fn build_containers(&self, host: &str) -> Result<()> {
        let ns = self.ns(host);
        ip_in(&ns, &["link", "add", "br0", "type", "bridge"])?;
        addr_up(&ns, "br0", "172.17.0.1/16")?;
        for (c, addr) in CONTAINERS {
            let cns = self.ns(&format!("{host}-{c}"));
            netns::add(&cns)?;
            ip_in(&cns, &["link", "set", "lo", "up"])?;
            let port = format!("v-{c}");
            veth(&cns, "eth0", &ns, &port)?;
            ip_in(&ns, &["link", "set", &port, "master", "br0", "up"])?;
            addr_up(&cns, "eth0", &format!("{addr}/16"))?;
            ip_in(&cns, &["route", "add", "default", "via", "172.17.0.1"])?;
        }
        Ok(())
    }

    fn start_apps(&self) -> Result<()> {
        if self.variant.docker {
            self.start_engines()?;
        }
        for (host, addr) in HOSTS {
            for (c, _) in CONTAINERS {
                self.start_container(host, c)?;
            }
            // UDP stand-in: answers on the VIP and the host's own address.
            let udp_vip = format!("{VIP}:{UDP_PORT}");
            let udp_own = format!("{addr}:{UDP_PORT}");
            let udp_vip6 = format!("[{VIP6}]:{UDP_PORT}");
            let udp_own6 = format!("[{}]:{UDP_PORT}", lan6(addr));
            self.spawn_app(
                &format!("{host}-udp"),
                &self.ns(host),
                &[
                    "--name", host, "--udp", &udp_vip, "--udp", &udp_own, "--udp", &udp_vip6,
                    "--udp", &udp_own6,
                ],
            )?;
            self.start_app(host)?;
        }
        Ok(())
    }

    fn spawn_app(&self, key: &str, ns: &str, args: &[&str]) -> Result<()> {
        let app = bin("portier-lab-app")?;
        let log = self.run_dir.join(format!("{key}-app.log"));
        let before = count_in_log(&log, "ready");
        let child = spawn_in(ns, &app, args, &log)?;
        if let Ok(mut apps) = self.apps.lock() {
            apps.insert(key.to_string(), child);
        }
        let start = Instant::now();
        while count_in_log(&log, "ready") <= before {
            if start.elapsed() > Duration::from_secs(10) {
                bail!(
                    "{key}: app not ready; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The hosts' engines, started side by side (each takes a few seconds to answer).
    fn start_engines(&self) -> Result<()> {
        let app = crate::lab_docker::static_app()?;
        let prefix = self.prefix.as_str();
        let started: Vec<Result<crate::dockerd::Engine>> = std::thread::scope(|s| {
            let threads: Vec<_> = HOSTS
                .iter()
                .map(|(host, _)| {
                    let app = &app;
                    s.spawn(move || crate::lab_docker::start_engine(prefix, host, app))
                })
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("engine start panicked")))
                })
                .collect()
        });
        let mut engines = self
            .engines
            .lock()
            .map_err(|_| anyhow::anyhow!("lab state poisoned"))?;
        let mut first_error = None;
        for e in started {
            match e {
                Ok(e) => engines.push(e),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Starts the app of container `container` (e.g. `todo1`) on `host`; its body and
    /// X-Served-By name it `host-container`. In the docker variant, a `docker run` with the
    /// container's labels ([`crate::lab_docker::run_args`]).
    pub fn start_container(&self, host: &str, container: &str) -> Result<()> {
        if self.variant.docker {
            let args = crate::lab_docker::run_args(host, container);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::lab_docker::docker(&self.prefix, host, &args)?;
            return Ok(());
        }
        let name = format!("{host}-{container}");
        let http = format!("0.0.0.0:{APP_PORT}");
        self.spawn_app(&name, &self.ns(&name), &["--name", &name, "--http", &http])
    }

    /// Kills a container's app: its connections are reset, new ones refused. In the docker
    /// variant, `docker stop` (the app drains, then exits) and `docker rm`.
    pub fn stop_container(&self, host: &str, container: &str) -> Result<()> {
        let name = format!("{host}-{container}");
        if self.variant.docker {
            crate::lab_docker::docker(&self.prefix, host, &["stop", &name])?;
            crate::lab_docker::docker(&self.prefix, host, &["rm", &name])?;
            return Ok(());
        }
        self.kill_app(&name)
    }

    fn kill_app(&self, key: &str) -> Result<()> {
        let child = self.apps.lock().ok().and_then(|mut a| a.remove(key));
        let mut child = child.with_context(|| format!("{key}: not running"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// The config of `host`'s portier (examples/lab-host.toml with this lab's node name; in
    /// the docker variant examples/lab-host-docker.toml with its engine).
    pub fn host_config(&self, host: &str) -> Result<String> {
        if self.variant.docker {
            return crate::lab_docker::host_config(self, host);
        }
        let path = examples_dir().join("lab-host.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(text.replace(
            "name = \"pt-host1\"",
            &format!("name = \"{}\"", self.ns(host)),
        ))
    }

    /// Starts the front door of host `name` (one of [`HOSTS`]): its portier, serving HTTP on
    /// port 80 for its containers. Waits until it is ready.
    pub fn start_app(&self, name: &str) -> Result<()> {
        let d = self.start_portier(name, &self.host_config(name)?)?;
        if let Ok(mut doors) = self.doors.lock() {
            doors.insert(name.to_string(), d);
        }
        Ok(())
    }

    /// Kills the front door of host `name`: its connections are reset, new ones refused.
    pub fn stop_app(&self, name: &str) -> Result<()> {
        let d = self.doors.lock().ok().and_then(|mut d| d.remove(name));
        drop(d.with_context(|| format!("{name}: front door not running"))?);
        Ok(())
    }

    /// Takes the front door of host `name` out of the lab's keeping, for a test that stops
    /// or replaces it itself.
    pub fn take_door(&self, name: &str) -> Result<Daemon> {
        let d = self.doors.lock().ok().and_then(|mut d| d.remove(name));
        d.with_context(|| format!("{name}: front door not running"))
    }

    /// Rewrites `host`'s portier config and reloads it (SIGHUP); waits until applied.
    pub fn reload_host(&self, host: &str, config: &str) -> Result<()> {
        let doors = self
            .doors
            .lock()
            .map_err(|_| anyhow::anyhow!("lab state poisoned"))?;
        let d = doors
            .get(host)
            .with_context(|| format!("{host}: front door not running"))?;
        d.reload(config)
    }

    /// Starts portier on `node` with `config` (a TOML text), and waits until it reports ready.
    pub fn start_portier(&self, node: &str, config: &str) -> Result<Daemon> {
        self.start_portier_with(node, config, &[])
    }

    /// [`Lab::start_portier`] with extra `portier run` arguments (e.g. `--teardown-on-exit`).
    pub fn start_portier_with(&self, node: &str, config: &str, extra: &[&str]) -> Result<Daemon> {
        let path = self.run_dir.join(format!("{node}.toml"));
        std::fs::write(&path, config)?;
        let log = self.run_dir.join(format!("{node}.log"));
        let _ = std::fs::remove_file(&log);
        let child = spawn_in(
            &self.ns(node),
            &bin("portier")?,
            &[&["run", "-c", &path.to_string_lossy()][..], extra].concat(),
            &log,
        )?;
        let d = Daemon {
            node: node.to_string(),
            config: path,
            log,
            child,
        };
        d.wait_for("portier ready", 1, Duration::from_secs(30))?;
        Ok(d)
    }

    /// The lab's LB config for `node` as a pure L4 node: no VRRP, no OSPF. For tests of the
    /// L4 control plane alone, with [`Lab::route_vip_statically`] standing in for the routing.
    pub fn lb_config_l4_only(&self, node: &str) -> Result<String> {
        let text = self.vrrp_lb_config(node)?;
        let cut = ["[[vrrp", "[ospf"]
            .iter()
            .filter_map(|h| text.find(h))
            .min()
            .unwrap_or(text.len());
        Ok(text[..cut].to_string())
    }

    /// Without BGP the router has no protocol that carries the IPv6 VIP (OSPFv2 is IPv4
    /// only): an on-link route lets neighbour discovery find the VRRPv3 master; anycast has
    /// no VRRP, so static ECMP routes over both LBs stand in (not withdrawn on failure).
    fn route_vip6_standin(&self) -> Result<()> {
        let router = self.ns("router");
        let dst = format!("{VIP6}/128");
        if self.variant.anycast {
            let mut args = vec!["-6".to_string(), "route".into(), "replace".into(), dst];
            for (_, addr) in LBS {
                args.extend(["nexthop".into(), "via".into(), lan6(addr)]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ip_in(&router, &args)?;
        } else {
            ip_in(&router, &["-6", "route", "replace", &dst, "dev", "eth1"])?;
        }
        Ok(())
    }

    /// The IPv6 VIP's port `port`.
    pub fn vip6(port: u16) -> std::net::SocketAddr {
        let addr: std::net::Ipv6Addr = VIP6.parse().unwrap_or(std::net::Ipv6Addr::UNSPECIFIED);
        std::net::SocketAddr::from((addr, port))
    }

    /// `n` requests for `host` from the client through the IPv6 VIP, each on its own
    /// connection, the first retried until `timeout` (the VRRPv3 master and the router's
    /// route or neighbour entry come up meanwhile): container -> count.
    pub fn spread6(
        &self,
        host: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<std::collections::BTreeMap<String, usize>> {
        let to = Self::vip6(HTTP_PORT);
        netns::in_netns(&self.ns("client"), || {
            let mut seen = std::collections::BTreeMap::new();
            let mut first = None;
            crate::wait::until("an answer through the IPv6 VIP", timeout, || {
                first = crate::client::get_host(to, None, host, "/").ok();
                Ok(first.is_some())
            })?;
            if let Some(r) = first {
                *seen.entry(r.container).or_insert(0) += 1;
            }
            for i in 1..n {
                let r = crate::client::get_host(to, None, host, "/")
                    .with_context(|| format!("IPv6 request {i}"))?;
                *seen.entry(r.container).or_insert(0) += 1;
            }
            Ok(seen)
        })?
    }

    /// Routes the VIP on pt-router to `via` statically (for L4-only nodes, which announce
    /// nothing).
    pub fn route_vip_statically(&self, via: &str) -> Result<()> {
        ip_in(
            &self.ns("router"),
            &["route", "replace", &format!("{VIP}/32"), "via", via],
        )?;
        Ok(())
    }

    /// The lab's LB config for `node`: examples/lab-lb.toml with this lab's node name, in the
    /// anycast variant made anycast ([`anycast_config`], with BFD).
    pub fn lb_config(&self, node: &str) -> Result<String> {
        let mut text = self.vrrp_lb_config(node)?;
        if self.variant.anycast {
            text = anycast_config(&text, "healthy", !self.variant.bgp)?;
        }
        if self.variant.bgp {
            text = bgp_config(&text, node, self.variant.anycast)?;
        }
        Ok(text)
    }

    /// [`Lab::lb_config`] without OSPF graceful restart: for scenarios where a cleanly stopped
    /// LB leaves (with graceful restart a clean stop is a planned restart, and the router
    /// keeps the route via the stopped node, whose XDP program keeps forwarding).
    pub fn lb_config_leaving(&self, node: &str) -> Result<String> {
        Ok(self
            .lb_config(node)?
            .replace("graceful_restart = true", "graceful_restart = false"))
    }

    /// examples/lab-lb.toml for `node`, with this lab's node name.
    fn vrrp_lb_config(&self, node: &str) -> Result<String> {
        let path = examples_dir().join("lab-lb.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let text = text.replace(
            "name = \"pt-lb1\"",
            &format!("name = \"{}\"", self.ns(node)),
        );
        // The lab's VRRP priorities: lb1 150 (the file's), lb2 100; the OSPF router ID is
        // the node's LAN address.
        Ok(if node == "lb2" {
            text.replace("priority = 150", "priority = 100")
                .replace("router_id = \"10.0.0.11\"", "router_id = \"10.0.0.12\"")
        } else {
            text
        })
    }

    /// The router's FRR, for vtysh queries.
    pub fn frr(&self) -> Option<&Frr> {
        self.frr.as_ref()
    }

    /// The next hops of the router's VIP route now (sorted; empty when there is none).
    pub fn vip_next_hops(&self) -> Result<Vec<String>> {
        let out = ip_in(&self.ns("router"), &["route", "show", &format!("{VIP}/32")])?;
        let words: Vec<&str> = out.split_whitespace().collect();
        let mut hops: Vec<String> = words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_owned())
            .collect();
        hops.sort();
        Ok(hops)
    }

    /// Waits until the router's VIP route has exactly `next_hops` (any order; empty: no route)
    /// and returns how long that took. OSPF needs the adjacency (a few hellos) and the LB's
    /// Router-LSA, which MinLSInterval (5 s) may hold back after its first origination.
    pub fn wait_vip_route(&self, next_hops: &[&str], timeout: Duration) -> Result<Duration> {
        let mut want: Vec<String> = next_hops.iter().map(|s| s.to_string()).collect();
        want.sort();
        let start = Instant::now();
        loop {
            let now = self.vip_next_hops()?;
            if now == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let db = self
                    .frr
                    .as_ref()
                    .and_then(|f| f.vtysh("show ip ospf neighbor").ok())
                    .unwrap_or_default();
                bail!(
                    "router's VIP next hops {now:?}, not {want:?}, after {timeout:?}; neighbours:\n{db}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The cost of the router's VIP route as its FRR has it (with OSPF: link plus announced
    /// metric); `None` without a route.
    pub fn vip_route_cost(&self) -> Result<Option<u64>> {
        let Some(frr) = &self.frr else {
            return Ok(None);
        };
        let text = frr.vtysh(&format!("show ip route {VIP}/32 json"))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("vtysh said {text:?}"))?;
        Ok(json[format!("{VIP}/32")][0]["metric"].as_u64())
    }

    /// Waits until the router routes the VIP via `next_hop` alone at a master's cost, below
    /// examples/lab-lb.toml's `standby_metric`. Right after the LBs start, a VRRP master's
    /// Router-LSA still carries the standby metric (announce hold-down, then MinLSInterval),
    /// and whichever LB's standby LSA reaches the router first is for a moment its only next
    /// hop: "via lb1 alone" then is a passing state, soon "via both at 1010".
    pub fn wait_vip_master_route(&self, next_hop: &str, timeout: Duration) -> Result<Duration> {
        let mut last = (Vec::new(), None);
        crate::wait::until("the VIP route via the master", timeout, || {
            last = (self.vip_next_hops()?, self.vip_route_cost()?);
            Ok(last.0 == [next_hop] && last.1.is_some_and(|c| c < LAB_STANDBY_METRIC))
        })
        .with_context(|| {
            format!(
                "router's VIP next hops {:?} at cost {:?}, not {next_hop} below {LAB_STANDBY_METRIC}",
                last.0, last.1
            )
        })
    }

    /// Whether `node` holds the VIP on its LAN interface (VRRP master).
    pub fn has_vip_on_lan(&self, node: &str) -> Result<bool> {
        let out = ip_in(&self.ns(node), &["-4", "-o", "addr", "show", "dev", "eth0"])?;
        Ok(out.contains(&format!(" {VIP}/")))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(frr) = self.frr.take()
            && self.keep
        {
            std::mem::forget(frr);
        }
        if let Ok(mut doors) = self.doors.lock() {
            for (_, d) in doors.drain() {
                if self.keep {
                    std::mem::forget(d);
                }
            }
        }
        if let Ok(mut apps) = self.apps.lock() {
            for (_, mut c) in apps.drain() {
                if self.keep {
                    std::mem::forget(c);
                } else {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        if let Ok(mut engines) = self.engines.lock() {
            for e in engines.drain(..) {
                if self.keep {
                    std::mem::forget(e);
                }
            }
        }
        if !self.keep {
            down(&self.prefix);
        }
    }
}

impl Daemon {
    /// Starts `portier run` in namespace `ns` on `config` (written to `dir/NODE.toml`, its log
    /// to `dir/NODE.log`) and waits until it reports ready. For tests outside the lab.
    pub fn spawn(ns: &str, node: &str, config: &str, dir: &Path) -> Result<Daemon> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{node}.toml"));
        std::fs::write(&path, config)?;
        let log = dir.join(format!("{node}.log"));
        let _ = std::fs::remove_file(&log);
        let child = spawn_in(
            ns,
            &bin("portier")?,
            &["run", "-c", &path.to_string_lossy()],
            &log,
        )?;
        let d = Daemon {
            node: node.to_string(),
            config: path,
            log,
            child,
        };
        d.wait_for("portier ready", 1, Duration::from_secs(30))?;
        Ok(d)
    }

    /// What the daemon logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process at once (SIGKILL), as a crash or power loss would.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Replaces the config file and sends SIGHUP; waits until the reload is applied.
    pub fn reload(&self, config: &str) -> Result<()> {
        let before = count_in_log(&self.log, "reload applied");
        std::fs::write(&self.config, config)?;
        self.signal(nix::sys::signal::Signal::SIGHUP)?;
        self.wait_for("reload applied", before + 1, Duration::from_secs(20))
    }

    /// Runs `portier ARGS --node NAME` (an admin command through this daemon's socket) in
    /// its namespace and returns stdout.
    pub fn cli(&self, ns: &str, args: &[&str]) -> Result<String> {
        let name = self.node_name()?;
        exec_in(
            ns,
            &bin("portier")?.to_string_lossy(),
            &[args, &["--node", &name]].concat(),
        )
    }

    /// `[node] name` of this daemon's config: its admin socket is /run/portier/NAME.sock.
    pub fn node_name(&self) -> Result<String> {
        let text = std::fs::read_to_string(&self.config)?;
        let mut in_node = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_node = line == "[node]";
            } else if in_node
                && let Some(v) = line.strip_prefix("name")
                && let Some(v) = v.trim_start().strip_prefix('=')
            {
                return Ok(v.trim().trim_matches('"').to_string());
            }
        }
        bail!("{}: no [node] name", self.config.display())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        // The child is nsenter, which execs portier: same pid.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)?;
        Ok(())
    }

    /// Waits until `pattern` has appeared `count` times in the log.
    pub fn wait_for(&self, pattern: &str, count: usize, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if count_in_log(&self.log, pattern) >= count {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{}: no '{pattern}' after {timeout:?}; log:\n{}",
                    self.node,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, once the process has exited by itself.
    pub fn try_exit(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    pub fn stop(mut self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGTERM)?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count_in_log(log: &Path, pattern: &str) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.matches(pattern).count())
        .unwrap_or(0)
}

/// A veth pair with one end in each namespace.
pub(crate) fn veth(ns_a: &str, a: &str, ns_b: &str, b: &str) -> Result<()> {
    ip(&[
        "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b,
    ])
    .map(|_| ())
}

/// Gives `dev` an address and brings it up.
/// An IPv6 address usable at once (no duplicate address detection: the lab's addresses are
/// unique by construction).
pub(crate) fn addr6(ns: &str, dev: &str, cidr: &str) -> Result<()> {
    ip_in(ns, &["-6", "addr", "add", cidr, "dev", dev, "nodad"])?;
    Ok(())
}

pub(crate) fn addr_up(ns: &str, dev: &str, cidr: &str) -> Result<()> {
    ip_in(ns, &["addr", "add", cidr, "dev", dev])?;
    ip_in(ns, &["link", "set", dev, "up"])?;
    Ok(())
}

/// Removes everything a lab with this prefix made: processes, namespaces, pins, run files.
/// Safe to call when nothing is there.
pub fn down(prefix: &str) {
    // First: the engines' containers live in namespaces of their own, their mounts under
    // the run directory.
    crate::lab_docker::remove_engines(prefix);
    let namespaces = netns::namespaces_with_prefix(prefix);
    for ns in &namespaces {
        netns::kill_all_in(ns);
    }
    for ns in &namespaces {
        let _ = ip(&["netns", "del", ns]);
    }
    remove_with_prefix(Path::new("/sys/fs/bpf/portier"), prefix);
    // Run state of the lab's nodes (admin sockets, id names, VRRP state files).
    remove_with_prefix(Path::new("/run/portier"), prefix);
    let _ = std::fs::remove_dir_all(format!("/run/portier-lab/{prefix}"));
    let _ = std::fs::remove_dir_all(frr::dir(&format!("{prefix}-router")));
}

/// Removes the entries of `dir` named `<prefix>-...` (pins, run files of the lab's nodes).
fn remove_with_prefix(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let want = format!("{prefix}-");
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&want) {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// The router's FRR config: DR on the LAN with the lab timers, ECMP over the LBs.
fn router_frr_config(router: &str, variant: Variant) -> String {
    let mut bfd = String::new();
    if variant.anycast {
        // As an operator of FRR would: neighbours watched by BFD at 50 ms x3.
        bfd = "bfd\n profile lab\n  transmit-interval 50\n  receive-interval 50\n  detect-multiplier 3\n !\n!\n".into();
    }
    if variant.bgp {
        let mut neighbors = String::new();
        let mut activate6 = String::new();
        for (_, addr) in LBS {
            // MP-BGP: the IPv6 VIP over the IPv4 sessions (RFC 4760, next hop RFC 2545).
            activate6.push_str(&format!("  neighbor {addr} activate\n"));
            neighbors.push_str(&format!(
                " neighbor {addr} remote-as {LB_AS}\n neighbor {addr} password {BGP_PASSWORD}\n neighbor {addr} timers 3 9\n neighbor {addr} timers connect 2\n"
            ));
            if variant.anycast {
                neighbors.push_str(&format!(" neighbor {addr} bfd profile lab\n"));
            }
        }
        return format!(
            "frr defaults traditional\nhostname {router}\n!\n{bfd}router bgp {ROUTER_AS}\n bgp router-id 10.0.0.1\n no bgp ebgp-requires-policy\n bgp bestpath as-path multipath-relax\n{neighbors} address-family ipv4 unicast\n  maximum-paths 4\n exit-address-family\n address-family ipv6 unicast\n{activate6}  maximum-paths 4\n exit-address-family\n!\n"
        );
    }
    let mut iface = frr::interface_config("eth1", false, 100, None);
    if variant.anycast {
        iface = iface.replace("!\n", " ip ospf bfd\n ip ospf bfd profile lab\n!\n");
    }
    format!(
        "frr defaults traditional\nhostname {router}\n!\n{bfd}{iface}router ospf\n ospf router-id 10.0.0.1\n capability opaque\n graceful-restart helper enable\n network 10.0.0.0/24 area 0\n maximum-paths 8\n!\n"
    )
}

/// An LB config announcing by eBGP to the router instead of OSPF: the `[ospf]` section
/// replaced by `[bgp]` with the same announce policy; in the anycast variant the router is
/// watched by BFD (`bfd = true` on the peer, 50 ms x3), whose going down ends the session.
pub fn bgp_config(text: &str, node: &str, anycast: bool) -> Result<String> {
    let start = text.find("[ospf]").context("no [ospf] in the LB config")?;
    let policy = if anycast { "healthy" } else { "vrrp-master" };
    let router_id = LBS
        .iter()
        .find(|(n, _)| *n == node)
        .map(|(_, a)| *a)
        .context("not an LB")?;
    let bfd = if anycast { "  bfd = true\n" } else { "" };
    let mut out = text[..start].to_string();
    out.push_str(&format!(
        "[bgp]\nasn = {LB_AS}\nrouter_id = \"{router_id}\"\n\n  [[bgp.peer]]\n  address = \"10.0.0.1\"\n           remote_as = {ROUTER_AS}\n  password = \"{BGP_PASSWORD}\"\n  hold_time = 9\n  families = [\"ipv4\", \"ipv6\"]\n{bfd}\n           [[bgp.announce]]\n  vip = \"{VIP}\"\n  policy = \"{policy}\"\n  communities = [\"{LB_AS}:100\"]\n\n  [[bgp.announce]]\n  vip = \"{VIP6}\"\n  policy = \"{policy}\"\n  communities = [\"{LB_AS}:100\"]\n"
    ));
    if anycast {
        out.push_str("\n[bfd]\nmin_tx_ms = 50\nmin_rx_ms = 50\nmultiplier = 3\n");
    }
    Ok(out)
}

/// An LB config made anycast: no VRRP, the VIP announced under `policy`; with `bfd`, the OSPF
/// interface's neighbours watched by BFD at 50 ms x3 (the `--anycast` lab's timers).
pub fn anycast_config(text: &str, policy: &str, bfd: bool) -> Result<String> {
    anyhow::ensure!(text.contains("[[vrrp.instance]]"), "no vrrp in lab-lb.toml");
    let mut text = text.to_string();
    while let Some(start) = text.find("[[vrrp.instance]]") {
        let end = text[start..].find("\n\n").map_or(text.len(), |e| start + e);
        text = format!("{}{}", &text[..start], &text[end..]);
    }
    anyhow::ensure!(text.contains("policy = \"vrrp-master\""), "no announce");
    text = text.replace(
        "policy = \"vrrp-master\"",
        &format!("policy = \"{policy}\""),
    );
    if bfd {
        anyhow::ensure!(text.contains("  priority = 0\n"), "no OSPF interface");
        text = text.replacen("  priority = 0\n", "  priority = 0\n  bfd = true\n", 1);
        text.push_str("\n[bfd]\nmin_tx_ms = 50\nmin_rx_ms = 50\nmultiplier = 3\n");
    }
    Ok(text)
}

/// Namespaces of a lab with this prefix that exist now.
pub fn status(prefix: &str) -> Vec<String> {
    let mut v = netns::namespaces_with_prefix(prefix);
    v.sort();
    v
}
