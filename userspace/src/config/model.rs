//! The validated config. Plain data that derives `PartialEq` so a reload can be diffed
//! against the running config.

use std::net::IpAddr;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub node: NodeConfig,
    pub dataplane: DataplaneConfig,
    pub services: Vec<ServiceConfig>,
    /// The HTTP proxy; absent when the node runs no L7 listener.
    pub l7: Option<super::l7::L7Config>,
    /// The admin socket (always) and the read-only TCP listener (when configured).
    pub admin: AdminConfig,
    /// Present when the file has a `[vrrp]` section: the daemon runs the VRRP part.
    pub vrrp: Option<super::VrrpConfig>,
    /// `None`: OSPF does not run.
    pub ospf: Option<super::ospf::OspfConfig>,
    /// `[decap]`: this node is a host behind IPIP services and runs the decapsulator.
    pub decap: Option<DecapConfig>,
    /// `[bfd]`: the BFD part runs (static peers, and sessions other parts ask for).
    pub bfd: Option<super::BfdConfig>,
    /// `[bgp]`: the BGP part announces VIPs to the configured peers.
    pub bgp: Option<super::BgpConfig>,
    /// `[discovery]`: L7 servers and routes found at runtime (Docker/Podman containers).
    pub discovery: Option<super::DiscoveryConfig>,
    /// `[log]`: text or JSON lines on stderr.
    pub log: super::LogConfig,
}

/// `[decap]`: where the host receives IPIP from the balancers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecapConfig {
    /// Interfaces the decapsulator attaches to.
    pub interfaces: Vec<String>,
    /// The host's tunnel addresses: the backend addresses balancers send IPIP to. Tunnel
    /// packets to any other address are left to the stack.
    pub addresses: Vec<IpAddr>,
    /// The balancers' outer source prefixes: tunnels from other sources are dropped.
    pub sources: Vec<(IpAddr, u8)>,
    /// The VIPs this host serves: tunnelled packets to other addresses are dropped.
    pub vips: Vec<IpAddr>,
}

/// `[admin]`: the Unix socket every command goes through, and an optional TCP listener that
/// only serves reads (`/status`, `/metrics`), e.g. for Prometheus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct AdminConfig {
    /// `None`: no TCP listener. `[admin]` without `listen` means 127.0.0.1:9900.
    pub listen: Option<std::net::SocketAddr>,
    /// Clients the TCP listener serves; empty: every client that can reach it.
    pub allow: Vec<Cidr>,
    /// `None`: `/run/portier/<node>.sock`.
    pub socket: Option<std::path::PathBuf>,
    /// A group whose members may drive the node too (socket mode 0660), as FRR's vty group;
    /// `None`: root only (0600).
    pub group: Option<String>,
}

/// Where the daemon of `node` listens for commands unless `[admin] socket` says otherwise.
pub fn default_socket(node: &str) -> std::path::PathBuf {
    std::path::PathBuf::from("/run/portier").join(format!("{node}.sock"))
}

impl AdminConfig {
    /// The TCP listener's default address when `[admin]` names none.
    pub const DEFAULT_LISTEN: std::net::SocketAddr =
        std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9900);

    pub fn socket_path(&self, node: &str) -> std::path::PathBuf {
        self.socket.clone().unwrap_or_else(|| default_socket(node))
    }
}

/// An address prefix, `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cidr {
    pub address: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> (u128, u8) {
            match a {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        // An IPv4 client of a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let ((net, width), (addr, other)) = (bits(self.address), bits(ip));
        if width != other {
            return false;
        }
        let len = u32::from(self.len.min(width));
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        net & mask == addr & mask
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeConfig {
    /// `[a-z0-9-]{1,32}`: it becomes a path component of the pin directory.
    pub name: String,
    /// Interfaces the XDP balancer attaches to.
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native where the driver supports it, generic otherwise.
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataplaneConfig {
    /// Prime, so every Maglev permutation visits every slot.
    pub maglev_table_size: u32,
    pub conntrack_size: u32,
    /// Outer source prefix of IPv4 IPIP services (a flow hash picks the host part, so a
    /// backend's flows spread over its receive queues); required when one exists.
    pub encap_source_v4: Option<(std::net::Ipv4Addr, u8)>,
    pub encap_source_v6: Option<(std::net::Ipv6Addr, u8)>,
    /// Sources whose mid-flow TCP segments may create connection-table entries (clients of
    /// another LB whose flows the routers may move here); from elsewhere such a segment is
    /// forwarded by Maglev but not recorded.
    pub midflow_sources: Vec<(std::net::IpAddr, u8)>,
    /// The SYN-flood guard: new connection-table entries one CPU may write per second (0: no
    /// limit); past it new flows go by Maglev alone, unrecorded.
    pub new_flow_rate: u32,
    /// Attach the XDP programs' debug twins: each drop and new flow is logged, rate-limited.
    pub debug: bool,
}

/// A tenth of the table per CPU per second: a flood at the guard's rate on every CPU turns
/// the table over no faster than every 10 s / CPUs, while a burst of real new connections
/// above it only loses stickiness across backend changes (Maglev still picks its host).
pub fn default_new_flow_rate(conntrack_size: u32) -> u32 {
    (conntrack_size / 10).max(1)
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            maglev_table_size: dataplane_common::DEFAULT_MAGLEV_SIZE,
            conntrack_size: dataplane_common::DEFAULT_CONNTRACK_SIZE,
            encap_source_v4: None,
            encap_source_v6: None,
            midflow_sources: Vec::new(),
            new_flow_rate: default_new_flow_rate(dataplane_common::DEFAULT_CONNTRACK_SIZE),
            debug: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceConfig {
    pub name: String,
    pub vip: IpAddr,
    /// 0 means every port of the VIP; a service on a specific port wins over it.
    pub port: u16,
    pub protocol: Protocol,
    pub forwarding: Forwarding,
    pub backends: Vec<BackendConfig>,
    /// `None`: no active check, every backend counts as healthy.
    pub health: Option<HealthCheckConfig>,
}

/// An active health check: a backend leaves after `fall` failures in a row and returns after
/// `rise` successes in a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheckConfig {
    pub kind: HealthKind,
    /// `None`: the service's port.
    pub port: Option<u16>,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    pub rise: u32,
    pub fall: u32,
    /// Set exactly when `kind` is `Http`.
    pub http: Option<HttpCheck>,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            kind: HealthKind::Tcp,
            port: None,
            interval_ms: 2000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
            http: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// The check passes when a TCP connection is established.
    Tcp,
    /// The check passes when a request gets the expected status.
    Http,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpCheck {
    pub method: String,
    pub path: String,
    /// `Host` header; `None`: the backend's address.
    pub host: Option<String>,
    pub expect_status: u16,
}

impl Default for HttpCheck {
    fn default() -> Self {
        Self {
            method: "GET".into(),
            path: "/".into(),
            host: None,
            expect_status: 200,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// Direct server return: the balancer rewrites only L2, hosts answer the client directly.
    #[default]
    Dsr,
    /// IPIP (IPv4 in IPv4, IPv6 in IPv6) to each backend's address, through any router; the
    /// hosts run the decapsulator (`[decap]`).
    Ipip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BackendConfig {
    /// Same address family as the service's VIP.
    pub address: IpAddr,
    /// Relative Maglev share, 0..=65535; 0 drains the backend (no new flows).
    pub weight: u32,
}

/// Names as written in the file, so parsing and the "allowed values" message share one list.
pub(super) trait Choice: Sized + Copy + 'static {
    const CHOICES: &'static [(&'static str, Self)];

    fn from_name(name: &str) -> Option<Self> {
        Self::CHOICES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, value)| value)
    }
}

impl Choice for XdpMode {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("auto", XdpMode::Auto),
        ("native", XdpMode::Native),
        ("generic", XdpMode::Generic),
    ];
}

impl Choice for Protocol {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
}

impl Choice for Forwarding {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("dsr", Forwarding::Dsr), ("ipip", Forwarding::Ipip)];
}
