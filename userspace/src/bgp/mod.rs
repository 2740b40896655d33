//! BGP-4 speaker core (issue 13): announces the VIPs as /32 and /128 routes to edge
//! routers. Routes received from peers are only counted and discarded: there is no RIB and no
//! best path selection.
//!
//! The same shape as `ospf`: pure codecs and state machines (bytes in, decisions out, time
//! passed in), and the sockets at the edge.
//!
//! - [`packet`]: the message codec (RFC 4271 messages, RFC 5492 capabilities, RFC 7606 error
//!   handling, RFC 9003 shutdown communications), byte-exact against FRR and BIRD captures.
//! - [`prefix`]: prefixes and address families.
//! - [`config`]: [`PeerConfig`] (address, ASes, router id, passive, hold time, MD5 password,
//!   per-peer communities / large communities / MED / prepend, next hops) and the routes to
//!   announce, [`Routes`] = `BTreeMap<Prefix, RouteAttrs>`.
//! - [`session`]: one peer's RFC 4271 §8 state machine, `event(now, Event) -> Vec<Action>`.
//! - [`io`]: the tokio edge, [`Speaker`].
//! - [`md5`]: TCP MD5 signatures through `TCP_MD5SIG`.
//! - [`part`]: the daemon part that drives the speaker from `[bgp]`.
//!
//! Using it (mirrors `ospf::io::Speaker`):
//!
//! ```no_run
//! # async fn demo() {
//! use portier::bgp::{LocalConfig, PeerConfig, Prefix, RouteAttrs, Routes, Speaker, SpeakerStatus};
//! use tokio::sync::watch;
//!
//! let mut peer = PeerConfig::new("10.0.0.1".parse().unwrap(), 64512, 64513,
//!     "10.0.0.11".parse().unwrap());
//! peer.md5_password = Some("portier-lab".into());
//! let local = LocalConfig { listen: vec!["10.0.0.11:179".parse().unwrap()] };
//!
//! let mut routes = Routes::new();
//! routes.insert("203.0.113.10/32".parse::<Prefix>().unwrap(), RouteAttrs::default());
//! let (announce, announce_rx) = watch::channel(routes);
//! let (shutdown, shutdown_rx) = watch::channel(None::<String>);
//! let (status_tx, status) = watch::channel(SpeakerStatus::default());
//! let task = tokio::spawn(Speaker::new(local, vec![peer]).run(announce_rx, shutdown_rx, status_tx));
//!
//! announce.send_modify(|r| { r.clear(); });         // withdraw everything
//! println!("{:?}", status.borrow().peers[0].state); // per-peer state and counters
//! shutdown.send(Some("maintenance".into())).ok();    // Cease with this message, then return
//! task.await.ok();
//! # }
//! ```
//!
//! What a peer gets: each route of the set in the families the session negotiated (IPv4 in
//! classic NLRI, IPv6 in MP_REACH_NLRI), ORIGIN IGP, AS_PATH of our AS (plus prepends; empty
//! for iBGP, with LOCAL_PREF 100), next hop self unless configured, the route's and the peer's
//! communities, large communities and MED; then End-of-RIB per family; then only changes.
//! A route refresh from the peer resends the family. A peer whose configuration is invalid is
//! reported in its status and left idle; the others run regardless.
//!
//! Next hops follow the addresses: the I/O edge looks at the connection's interface again
//! every second, and routes go again when ours changed (e.g. the link-local address, which
//! the kernel lists only some time after the link comes up).
//!
//! Graceful restart (RFC 4724) as the restarting speaker when `PeerConfig::graceful_restart`
//! is set: capability with R (first session of the process), F for every family and N (RFC
//! 8538), a deliberate stop sent as Hard Reset when N was negotiated, and End-of-RIB held
//! after a restart until [`Speaker::with_settled`] says the announce set is complete. BFD
//! ([`Speaker::with_bfd`]): a peer whose BFD session goes down loses its session at once.
//!
//! Not here: enhanced route refresh, extended messages, ADD-PATH, GTSM, received routes
//! (so graceful restart's helper side has nothing to keep).

pub mod config;
pub mod io;
pub mod md5;
pub mod packet;
pub mod part;
pub mod prefix;
pub mod session;

pub use config::{PeerConfig, RouteAttrs, Routes};
pub use io::{BfdPeerState, BfdStates, LocalConfig, PeerStatus, Speaker, SpeakerStatus};
pub use packet::{Community, LargeCommunity};
pub use prefix::{Family, Prefix};
pub use session::State;
