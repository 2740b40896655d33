//! portier's OSPF speaker against Debian's FRR ospfd, in namespaces made here: adjacencies
//! on broadcast and point-to-point links, with and without MD5, the VIP /32 in FRR's kernel
//! table via portier's address, gone on withdrawal and after portier dies (dead interval).
//! Prints the convergence times (the benchmark's raw numbers).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use portier::ospf::instance::{Announce, IfaceConfig, InstanceStatus, Limits};
use portier::ospf::interface::NetworkType;
use portier::ospf::io::Speaker;
use portier::ospf::neighbor::NbrState;
use portier::ospf::packet::{Auth, AuthKey};
use portier_tests::frr::{self, Frr};
use portier_tests::netns::ip_in;
use portier_tests::pair::Pair;
use tokio::sync::watch;

const VIP: &str = "203.0.113.77";

/// Tight, but room for what the scenario holds: one neighbour, a few LSAs.
const LIMITS: Limits = Limits {
    max_neighbors: 2,
    max_lsas: 50,
};

/// The VIP route in the FRR namespace's kernel table, if any.
fn vip_route(pair: &Pair) -> String {
    ip_in(&pair.ns("r"), &["route", "show", &format!("{VIP}/32")]).unwrap_or_default()
}

/// The speaker on its own thread inside the portier namespace.
struct Running {
    announce: watch::Sender<BTreeMap<Ipv4Addr, Announce>>,
    shutdown: watch::Sender<bool>,
    /// Dropping the runtime mid-flight is the in-process equivalent of SIGKILL.
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    status: watch::Receiver<Option<InstanceStatus>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(pair: &Pair, network: NetworkType, auth: Auth) -> Result<Running> {
        let iface = IfaceConfig {
            name: "eth0".into(),
            area: Ipv4Addr::UNSPECIFIED,
            network,
            hello_interval: 1,
            dead_interval: 4,
            retransmit_interval: 2,
            transmit_delay: 1,
            priority: 0,
            cost: 10,
            auth,
        };
        let router_id = pair.addr(2);
        let (announce, announce_rx) = watch::channel(BTreeMap::new());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (kill, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let (status_tx, status) = watch::channel(None);
        let ns = pair.ns("p");
        let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            if nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                return;
            }
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let mut speaker = Speaker::new(router_id, vec![iface]);
                speaker.set_limits(LIMITS);
                tokio::select! {
                    _ = speaker.run(announce_rx, shutdown_rx, status_tx) => {}
                    _ = kill_rx => {}
                }
            });
        });
        Ok(Running {
            announce,
            shutdown,
            kill: Some(kill),
            status,
            thread: Some(thread),
        })
    }

    fn announce(&self, on: bool) {
        let mut set = BTreeMap::new();
        if on {
            set.insert(
                VIP.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
                Announce::Stub { metric: 10 },
            );
        }
        let _ = self.announce.send(set);
    }

    fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Drops whose reason is in `reasons`, from the last status.
    fn dropped(&self, reasons: &[&str]) -> Vec<(String, u64)> {
        self.status
            .borrow()
            .as_ref()
            .map(|s| {
                s.counters
                    .dropped
                    .iter()
                    .filter(|(r, _)| reasons.contains(r))
                    .map(|(r, n)| (r.to_string(), *n))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn full_with(&self, router_id: Ipv4Addr) -> bool {
        self.status.borrow().as_ref().is_some_and(|s| {
            s.interfaces
                .iter()
                .flat_map(|i| &i.neighbors)
                .any(|n| n.router_id == router_id && n.state == NbrState::Full)
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.kill();
    }
}

fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<Duration> {
    portier_tests::wait::until(what, timeout, || Ok(cond()))
}

fn frr_config(pair: &Pair, p2p: bool, md5: Option<&str>) -> String {
    format!(
        "frr defaults traditional\nhostname {}\nlog file {}/ospfd-debug.log\n!\n{}router ospf\n ospf router-id {}\n network 10.77.{}.0/24 area 0\n!\n",
        pair.ns("r"),
        std::env::temp_dir().display(),
        frr::interface_config("eth0", p2p, 100, md5),
        pair.addr(1),
        pair.addr(0).octets()[2],
    )
}

/// The whole scenario for one link type and auth; returns (route installed after start,
/// route gone after withdrawal) for the benchmark note.
fn scenario(prefix: &str, subnet: u8, network: NetworkType, md5: bool) -> Result<()> {
    let pair = Pair::new(prefix, subnet)?;
    let p2p = network == NetworkType::PointToPoint;
    let key = md5.then_some("s3cret");
    let frr = Frr::start(&pair.ns("r"), &pair.ns("r"), &frr_config(&pair, p2p, key))?;
    let auth = if md5 {
        Auth::Md5(vec![AuthKey::new(1, b"s3cret")])
    } else {
        Auth::Null
    };
    let mut speaker = Running::start(&pair, network, auth)?;
    speaker.announce(true);
    let start = Instant::now();
    let portier_id = pair.addr(2).to_string();
    let full = wait("FRR to see portier Full", Duration::from_secs(20), || {
        frr.neighbor_state(&portier_id)
            .ok()
            .flatten()
            .is_some_and(|s| s.starts_with("Full"))
    })
    .with_context(|| frr.log("ospfd"))?;
    wait("portier to see FRR Full", Duration::from_secs(5), || {
        speaker.full_with(pair.addr(1))
    })?;
    let via = format!("via {}", pair.addr(2));
    wait("the VIP route via portier", Duration::from_secs(20), || {
        let r = vip_route(&pair);
        r.contains(&via) && r.contains("proto ospf")
    })
    .with_context(|| frr.vtysh("show ip ospf database").unwrap_or_default())?;
    let installed = start.elapsed();
    // FRR's packets arrive on-link with TTL 1, within the limits; the status summarises the
    // database (both Router-LSAs, and a Network-LSA on broadcast).
    let limits = [
        "ttl",
        "subnet",
        "neighbor-limit",
        "lsdb-limit",
        "request-limit",
        "retransmit-limit",
    ];
    assert_eq!(speaker.dropped(&limits), vec![]);
    wait(
        "status with both Router-LSAs",
        Duration::from_secs(5),
        || {
            speaker.status.borrow().as_ref().is_some_and(|s| {
                s.limits == LIMITS
                    && s.limits_reached.is_empty()
                    && s.lsdb.by_type.get("router") == Some(&2)
                    && s.lsdb.lsas.len() == s.lsdb.total
            })
        },
    )?;

    speaker.announce(false);
    let gone = wait(
        "the VIP route to go on withdrawal",
        Duration::from_secs(15),
        || vip_route(&pair).is_empty(),
    )?;

    speaker.announce(true);
    wait(
        "the VIP route to come back",
        Duration::from_secs(15),
        || vip_route(&pair).contains(&via),
    )?;
    speaker.kill();
    let dead = wait(
        "the VIP route to go after portier died",
        Duration::from_secs(15),
        || vip_route(&pair).is_empty(),
    )?;
    println!(
        "ospf-bench {prefix} network={network:?} md5={md5}: full {:?}, installed {:?}, withdrawn {:?}, dead {:?}",
        full, installed, gone, dead
    );
    assert!(
        dead >= Duration::from_secs(2),
        "route left before the dead interval: {dead:?}"
    );
    Ok(())
}

#[test]
fn broadcast_adjacency_with_frr() -> Result<()> {
    scenario("ofb", 1, NetworkType::Broadcast, false)
}

#[test]
fn broadcast_adjacency_with_frr_md5() -> Result<()> {
    scenario("ofbm", 2, NetworkType::Broadcast, true)
}

#[test]
fn point_to_point_adjacency_with_frr() -> Result<()> {
    scenario("ofp", 3, NetworkType::PointToPoint, false)
}

#[test]
fn point_to_point_adjacency_with_frr_md5() -> Result<()> {
    scenario("ofpm", 4, NetworkType::PointToPoint, true)
}
