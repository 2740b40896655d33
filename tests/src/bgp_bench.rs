//! `cargo xtask bench bgp`: how fast a VIP route reaches an edge router by BGP, and leaves it,
//! with portier announcing against FRR bgpd announcing the same, to the same receiving FRR in
//! one run. Two namespaces (a [`Pair`]): the receiver (FRR zebra + bgpd, AS 64512) at .1, the
//! announcer at .2 (AS 64513): in turn a `portier run` and an FRR bgpd (its zebra already up,
//! as on a router that runs it anyway), same hold time, both connecting and listening.
//!
//! Per round and announcer:
//! - installed: from starting the announcing daemon to the /32 in the receiver's kernel table
//!   (process start, connect, OPEN exchange, first UPDATE, the receiver's best path and zebra);
//!   `established` is when the receiver's bgpd said Established, for the split;
//! - withdrawn: from the operator's change (portier: config without the VIP + SIGHUP; FRR:
//!   `no network` through vtysh) to the route gone from the receiver's kernel table.
//!
//! Time is taken by a thread polling `ip route` in the receiver's namespace (a few ms per poll).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::frr::Frr;
use crate::lab::Daemon;
use crate::netns::ip_in;
use crate::pair::Pair;

pub const PREFIX: &str = "bgz";
const SUBNET: u8 = 134;
const RECEIVER_AS: u32 = 64512;
const ANNOUNCER_AS: u32 = 64513;
pub const VIP: &str = "203.0.113.40/32";
const HOLD: u16 = 9;
const TIMEOUT: Duration = Duration::from_secs(30);

/// One announcer's times in one round.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub established: Duration,
    pub installed: Duration,
    pub withdrawn: Duration,
    /// What the withdraw command costs by itself, measured on a no-op just before (vtysh
    /// starting and connecting; zero for portier's signal): part of `withdrawn`.
    pub command: Duration,
}

/// Polls `cond` on a thread until it holds; `at` says when it first did.
struct Edge {
    found: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Option<Instant>>>,
}

impl Edge {
    fn start(cond: impl Fn() -> bool + Send + 'static) -> Edge {
        let found = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (found.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if cond() {
                    f.store(true, Ordering::Relaxed);
                    return Some(Instant::now());
                }
            }
            None
        });
        Edge {
            found,
            stop,
            thread: Some(thread),
        }
    }

    /// The VIP route via `via` in `ns`'s kernel table (or, `present` false, not).
    fn route(ns: &str, via: &str, present: bool) -> Edge {
        let (ns, via) = (ns.to_owned(), via.to_owned());
        Edge::start(move || {
            ip_in(&ns, &["-4", "route", "show", VIP]).is_ok_and(|r| r.contains(&via) == present)
        })
    }

    fn at(mut self, what: &str) -> Result<Instant> {
        crate::wait::until(what, TIMEOUT, || Ok(self.found.load(Ordering::Relaxed)))
            .inspect_err(|_| self.stop.store(true, Ordering::Relaxed))?;
        self.thread
            .take()
            .and_then(|t| t.join().ok().flatten())
            .context("poller ended without an answer")
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub struct Bench {
    pair: Pair,
    receiver: Frr,
    dir: std::path::PathBuf,
}

fn receiver_config(announcer: &str) -> String {
    format!(
        "frr defaults traditional\nhostname {PREFIX}-r\n!\nrouter bgp {RECEIVER_AS}\n bgp router-id 10.0.0.1\n \
         no bgp ebgp-requires-policy\n neighbor {announcer} remote-as {ANNOUNCER_AS}\n \
         neighbor {announcer} timers 3 {HOLD}\n neighbor {announcer} timers connect 1\n!\n"
    )
}

fn portier_config(pair: &Pair, with_vip: bool) -> String {
    let mut c = format!(
        "[node]\nname = \"{PREFIX}-p\"\n\n[bgp]\nasn = {ANNOUNCER_AS}\nrouter_id = \"10.0.0.11\"\n\
         listen = [\"{}:179\"]\n\n  [[bgp.peer]]\n  address = \"{}\"\n  remote_as = {RECEIVER_AS}\n  \
         hold_time = {HOLD}\n  families = [\"ipv4\"]\n",
        pair.addr(2),
        pair.addr(1)
    );
    if with_vip {
        c.push_str("\n  [[bgp.announce]]\n  vip = \"203.0.113.40\"\n  policy = \"always\"\n");
    }
    c
}

fn announcer_frr_config(pair: &Pair) -> String {
    let peer = pair.addr(1);
    format!(
        "frr defaults traditional\nhostname {PREFIX}-p\n!\nrouter bgp {ANNOUNCER_AS}\n bgp router-id 10.0.0.11\n \
         no bgp ebgp-requires-policy\n no bgp network import-check\n neighbor {peer} remote-as {RECEIVER_AS}\n \
         neighbor {peer} timers {} {HOLD}\n neighbor {peer} timers connect 1\n \
         address-family ipv4 unicast\n  network {VIP}\n exit-address-family\n!\n",
        HOLD / 3
    )
}

impl Bench {
    /// The two namespaces and the receiving FRR.
    pub fn new() -> Result<Bench> {
        let pair = Pair::new(PREFIX, SUBNET)?;
        let receiver = Frr::start_daemons(
            &pair.ns("r"),
            &pair.ns("r"),
            &receiver_config(&pair.addr(2).to_string()),
            &["zebra", "bgpd"],
        )?;
        let dir = std::env::temp_dir().join("portier-bench-bgp");
        Ok(Bench {
            pair,
            receiver,
            dir,
        })
    }

    fn via(&self) -> String {
        format!("via {}", self.pair.addr(2))
    }

    fn receiver_established(&self) -> bool {
        let addr = self.pair.addr(2).to_string();
        let text = self
            .receiver
            .vtysh(&format!("show bgp neighbor {addr} json"))
            .unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text)
            .is_ok_and(|v| v[&addr]["bgpState"] == "Established")
    }

    /// Before a round: the receiver has no session and no route.
    fn quiet(&self) -> Result<()> {
        crate::wait::until("the receiver's session down", TIMEOUT, || {
            Ok(!self.receiver_established()
                && !ip_in(&self.pair.ns("r"), &["-4", "route", "show", VIP])?.contains(&self.via()))
        })
        .map(|_| ())
    }

    /// Pollers for the receiver's session and the route, started just before the announcer.
    fn begin(&self) -> Result<(Edge, Edge, Instant)> {
        self.quiet()?;
        let vty = self.receiver.dir.clone();
        let addr = self.pair.addr(2).to_string();
        let established = Edge::start(move || {
            let text = crate::netns::run(
                "vtysh",
                &[
                    "--vty_socket",
                    &vty.to_string_lossy(),
                    "-c",
                    &format!("show bgp neighbor {addr} json"),
                ],
            )
            .unwrap_or_default();
            serde_json::from_str::<serde_json::Value>(&text)
                .is_ok_and(|v| v[&addr]["bgpState"] == "Established")
        });
        let route = Edge::route(&self.pair.ns("r"), &self.via(), true);
        Ok((established, route, Instant::now()))
    }

    fn announced(
        &self,
        (established, route, t0): (Edge, Edge, Instant),
    ) -> Result<(Duration, Duration)> {
        let installed = route.at("the VIP route installed")? - t0;
        let established = established.at("the receiver Established")? - t0;
        Ok((established, installed))
    }

    pub fn portier_round(&self) -> Result<Round> {
        let ns = self.pair.ns("p");
        let pending = self.begin()?;
        let daemon = Daemon::spawn(
            &ns,
            &format!("{PREFIX}-p"),
            &portier_config(&self.pair, true),
            &self.dir,
        )?;
        let (established, installed) = self.announced(pending)?;
        let gone = Edge::route(&self.pair.ns("r"), &self.via(), false);
        std::fs::write(&daemon.config, portier_config(&self.pair, false))?;
        let t1 = Instant::now();
        daemon.signal(nix::sys::signal::Signal::SIGHUP)?;
        let withdrawn = gone.at("the VIP route withdrawn")? - t1;
        daemon.kill()?;
        Ok(Round {
            established,
            installed,
            withdrawn,
            command: Duration::ZERO,
        })
    }

    pub fn frr_round(&self) -> Result<Round> {
        let ns = self.pair.ns("p");
        let name = format!("{PREFIX}-p");
        // zebra first, outside the measurement: a router has it running already.
        let mut frr =
            Frr::start_daemons(&ns, &name, &announcer_frr_config(&self.pair), &["zebra"])?;
        let pending = self.begin()?;
        frr.spawn("bgpd")?;
        let (established, installed) = self.announced(pending)?;
        let noop = Instant::now();
        frr.vtysh_lines(&["configure terminal", &format!("router bgp {ANNOUNCER_AS}")])?;
        let command = noop.elapsed();
        let gone = Edge::route(&self.pair.ns("r"), &self.via(), false);
        let t1 = Instant::now();
        frr.vtysh_lines(&[
            "configure terminal",
            &format!("router bgp {ANNOUNCER_AS}"),
            "address-family ipv4 unicast",
            &format!("no network {VIP}"),
        ])?;
        let withdrawn = gone.at("the VIP route withdrawn")? - t1;
        drop(frr);
        Ok(Round {
            established,
            installed,
            withdrawn,
            command,
        })
    }
}
