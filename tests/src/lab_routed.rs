//! The lab's routed variant: hosts on a second subnet behind the router, reached from the
//! balancer by IPIP.
//!
//! ```text
//!  <p>-router eth2 10.1.0.1/24, 2001:db8:b::1/64
//!      |  10.1.0.0/24, 2001:db8:b::/64: bridge br0 in namespace <p>-lan2
//!      +-- <p>-rhost1..3 10.1.0.21..23, 2001:db8:b::21..23
//!                        both VIPs on lo, portier decap on eth0, lab app on [::]:80
//! ```
//! The rest is [`Lab`]'s. lb1 reaches both routed subnets through its default routes via the
//! router, so its tunnel frames carry the router's MAC: IPIP for the IPv4 VIP, IPv6-in-IPv6
//! for the IPv6 one. The router reaches the IPv6 VIP through lb1 by a static route (OSPFv2
//! cannot carry it, and this variant runs no VRRP).
//!
//! MTU: the outer header adds 20 bytes (40 for IPv6) and the lab's links are 1500, so the
//! client's routes carry `mtu 1480 advmss 1440` (IPv6: `mtu 1460 advmss 1400`): its segments
//! and those the hosts send back fit, and so do the encapsulated ones in 1500. A real
//! deployment raises the path MTU to the hosts instead (or clamps MSS on the router).

use crate::lab::{self, Daemon, LBS, Lab, VIP, VIP6, addr_up, addr6, lan6, veth};
use crate::netns::{self, exec_in, ip_in, spawn_in};
use anyhow::{Context, Result, bail};
use std::process::Child;
use std::time::{Duration, Instant};

pub const ROUTED_HOSTS: [(&str, &str); 3] = [
    ("rhost1", "10.1.0.21"),
    ("rhost2", "10.1.0.22"),
    ("rhost3", "10.1.0.23"),
];
pub const ROUTED_SUBNET: &str = "10.1.0.0/24";
/// Outer source prefix of lb1's IPIP packets.
pub const ENCAP_SOURCE: &str = "10.255.0.0/24";
/// Outer source prefix of lb1's IPv6-in-IPv6 packets.
pub const ENCAP_SOURCE6: &str = "fd00:255::/64";
const ROUTER_LAN2_6: &str = "2001:db8:b::1";

/// A routed host's IPv6 address: its IPv4 address's last byte, as hex digits.
pub fn routed6(addr4: &str) -> String {
    let last = addr4.rsplit('.').next().unwrap_or("0");
    format!("2001:db8:b::{last}")
}
/// The routed hosts' admin API (each in its own namespace).
pub const HOST_ADMIN: &str = "127.0.0.1:9900";

/// [`Lab`] plus the routed hosts. Dropping it tears everything down.
pub struct RoutedLab {
    /// Each routed host's portier (the decapsulator).
    pub decaps: Vec<Daemon>,
    apps: Apps,
    pub lab: Lab,
}

/// The hosts' lab apps, killed on drop.
struct Apps(Vec<Child>);

impl Drop for Apps {
    fn drop(&mut self) {
        for mut c in self.0.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl RoutedLab {
    pub fn up(prefix: &str) -> Result<RoutedLab> {
        let lab = Lab::up(prefix)?;
        let mut r = RoutedLab {
            decaps: Vec::new(),
            apps: Apps(Vec::new()),
            lab,
        };
        r.build()
            .with_context(|| format!("building routed hosts of {prefix}"))?;
        Ok(r)
    }

    fn build(&mut self) -> Result<()> {
        let lab = &self.lab;
        let (router, lan2, client) = (lab.ns("router"), lab.ns("lan2"), lab.ns("client"));
        netns::add(&lan2)?;
        ip_in(&lan2, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(&lan2, &["link", "set", "br0", "up"])?;
        veth(&router, "eth2", &lan2, "router")?;
        ip_in(&lan2, &["link", "set", "router", "master", "br0", "up"])?;
        addr_up(&router, "eth2", "10.1.0.1/24")?;
        addr6(&router, "eth2", &format!("{ROUTER_LAN2_6}/64"))?;
        // No OSPFv3 and no VRRP here: the IPv6 VIP is routed to lb1 by hand.
        let lb1 = lan6(LBS[0].1);
        ip_in(
            &router,
            &[
                "-6",
                "route",
                "replace",
                &format!("{VIP6}/128"),
                "via",
                &lb1,
            ],
        )?;
        ip_in(
            &client,
            &[
                "-6",
                "route",
                "replace",
                "default",
                "via",
                "2001:db8:c::1",
                "dev",
                "eth0",
                "mtu",
                "1460",
                "advmss",
                "1400",
            ],
        )?;
        exec_in(&router, "ethtool", &["-K", "eth2", "tx", "off"])?;
        ip_in(
            &client,
            &[
                "route",
                "replace",
                "default",
                "via",
                "198.51.100.1",
                "dev",
                "eth0",
                "mtu",
                "1480",
                "advmss",
                "1440",
            ],
        )?;
        for (name, addr) in ROUTED_HOSTS {
            let ns = lab.ns(name);
            netns::add(&ns)?;
            ip_in(&ns, &["link", "set", "lo", "up"])?;
            exec_in(&ns, "sysctl", &["-qw", "net.ipv4.conf.all.rp_filter=0"])?;
            exec_in(&ns, "sysctl", &["-qw", "net.ipv4.conf.default.rp_filter=0"])?;
            veth(&ns, "eth0", &lan2, name)?;
            ip_in(&lan2, &["link", "set", name, "master", "br0", "up"])?;
            addr_up(&ns, "eth0", &format!("{addr}/24"))?;
            ip_in(&ns, &["route", "add", "default", "via", "10.1.0.1"])?;
            ip_in(&ns, &["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
            addr6(&ns, "eth0", &format!("{}/64", routed6(addr)))?;
            ip_in(
                &ns,
                &["-6", "route", "add", "default", "via", ROUTER_LAN2_6],
            )?;
            addr6(&ns, "lo", &format!("{VIP6}/128"))?;
        }
        for (name, addr) in ROUTED_HOSTS {
            let d = self
                .lab
                .start_portier(name, &host_config(&self.lab, name, addr))?;
            self.decaps.push(d);
            let app = self.spawn_app(name)?;
            self.apps.0.push(app);
        }
        Ok(())
    }

    /// The host's lab app answers HTTP on port 80 (of the VIP, after decapsulation).
    fn spawn_app(&self, host: &str) -> Result<Child> {
        let app = lab::bin_dir().join("portier-lab-app");
        let log = self.lab.run_dir.join(format!("{host}-app.log"));
        let _ = std::fs::remove_file(&log);
        let child = spawn_in(
            &self.lab.ns(host),
            &app,
            &["--name", host, "--http", "[::]:80"],
            &log,
        )?;
        let start = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("ready")
        {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("{host}: app not ready");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(child)
    }

    /// lb1's config: a tunnel service on each VIP's port 80 over the routed hosts.
    pub fn lb_config(&self) -> String {
        let mut text = format!(
            "[node]\nname = \"{}\"\ninterfaces = [\"eth0\"]\n\n[admin]\nlisten = \"127.0.0.1:9900\"\n\n\
             [dataplane]\nmaglev_table_size = 65537\nconntrack_size = 65536\nencap_source_v4 = \"{ENCAP_SOURCE}\"\n\
             encap_source_v6 = \"{ENCAP_SOURCE6}\"\n",
            self.lab.ns("lb1")
        );
        for (name, vip, family) in [("web", VIP, 4), ("web6", VIP6, 6)] {
            text.push_str(&format!(
                "\n[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nport = 80\nprotocol = \"tcp\"\nforwarding = \"ipip\"\n"
            ));
            for (_, addr) in ROUTED_HOSTS {
                let addr = if family == 4 {
                    addr.to_string()
                } else {
                    routed6(addr)
                };
                text.push_str(&format!(
                    "\n  [[service.backend]]\n  address = \"{addr}\"\n"
                ));
            }
        }
        // The router learns the VIP by OSPF, as in the lab; lb1 alone announces it always.
        text.push_str(
            "\n[ospf]\nrouter_id = \"10.0.0.11\"\n  [[ospf.interface]]\n  name = \"eth0\"\n  hello_interval = 1\n  dead_interval = 4\n  retransmit_interval = 2\n  priority = 0\n  [[ospf.announce]]\n  vip = \"203.0.113.10\"\n  policy = \"always\"\n",
        );
        text
    }
}

impl RoutedLab {
    /// Leaves the lab, its hosts' portier and apps running (for `cargo xtask lab up-routed`).
    pub fn keep(self) {
        let RoutedLab { decaps, apps, lab } = self;
        std::mem::forget(decaps);
        std::mem::forget(apps);
        lab.keep();
    }
}

/// A routed host's portier: only the decapsulator, for its own addresses, accepting tunnels
/// from lb1's encap prefixes to the VIPs.
pub fn host_config(lab: &Lab, host: &str, addr: &str) -> String {
    let addr6 = routed6(addr);
    format!(
        "[node]\nname = \"{}\"\n\n[admin]\nlisten = \"{HOST_ADMIN}\"\n\n[decap]\ninterfaces = [\"eth0\"]\n\
         addresses = [\"{addr}\", \"{addr6}\"]\nsources = [\"{ENCAP_SOURCE}\", \"{ENCAP_SOURCE6}\"]\n\
         vips = [\"{VIP}\", \"{VIP6}\"]\n",
        lab.ns(host)
    )
}
