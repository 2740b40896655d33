//! The pure core of Docker discovery: the containers the engine reported, in, the servers
//! and routes they ask for (and why some get none), out. No I/O and no clock: the source
//! feeds it inspect answers and events, the tests feed it the same JSON.

use super::container::{Container, Health};
use super::labels::{self, Reading};
use crate::config::HttpProtocol;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// Which container a server or route came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    /// Short id (12 characters).
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub pool: String,
    pub address: SocketAddr,
    pub weight: u32,
    pub protocol: Option<HttpProtocol>,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: String,
    pub path_prefix: String,
    pub pool: String,
    pub source: Source,
}

/// What became of one container, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Serving,
    /// A stop signal was sent: weight 0 until it is gone.
    Stopping,
    /// Its Docker healthcheck says `starting` or `unhealthy`: no traffic.
    Starting,
    Unhealthy,
    Paused,
    /// `<prefix>.enable=false`.
    Disabled,
    /// A bad label; the text names it.
    BadLabel(String),
    /// No address on the network discovery uses.
    NoAddress(String),
    /// Another container (or the config) has what it claims.
    Refused(String),
}

impl State {
    pub fn word(&self) -> &'static str {
        match self {
            State::Serving => "serving",
            State::Stopping => "stopping",
            State::Starting => "starting",
            State::Unhealthy => "unhealthy",
            State::Paused => "paused",
            State::Disabled => "disabled",
            State::BadLabel(_) => "bad-label",
            State::NoAddress(_) => "no-address",
            State::Refused(_) => "refused",
        }
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            State::BadLabel(s) | State::NoAddress(s) | State::Refused(s) => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub source: Source,
    pub state: State,
    pub pool: Option<String>,
    pub address: Option<SocketAddr>,
}

/// Everything discovery currently asks of the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Discovered {
    pub servers: Vec<Server>,
    pub routes: Vec<Route>,
    /// Every container with our labels, in the order conflicts were decided.
    pub containers: Vec<Entry>,
}

#[derive(Debug, Clone)]
pub struct Inventory {
    prefix: String,
    network: Option<String>,
    max: usize,
    containers: BTreeMap<String, Container>,
    /// Containers not kept because `max` were already (counted, not listed).
    pub over_limit: u64,
}

impl Inventory {
    pub fn new(prefix: &str, network: Option<&str>, max: usize) -> Inventory {
        Inventory {
            prefix: prefix.to_owned(),
            network: network.map(str::to_owned),
            max,
            containers: BTreeMap::new(),
            over_limit: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.containers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }

    /// The engine's full list (after a start or a reconnect): containers it no longer has
    /// go, the others are replaced by their new state.
    pub fn resync(&mut self, all: Vec<Container>) {
        self.containers.clear();
        for c in all {
            self.upsert(c);
        }
    }

    /// A container's current state (from an inspect after an event). Stopped containers and
    /// containers without our labels are not kept.
    pub fn upsert(&mut self, c: Container) {
        let ours = !matches!(
            labels::read(&c.labels, &self.prefix, &c.exposed_tcp),
            Ok(Reading::NotOurs)
        );
        if !ours || !c.running {
            self.containers.remove(&c.id);
            return;
        }
        if !self.containers.contains_key(&c.id) && self.containers.len() >= self.max {
            self.over_limit += 1;
            tracing::warn!(container = %c.name, max = self.max, "docker discovery: container limit reached, container ignored");
            return;
        }
        // A stop signal seen before this inspect still holds until the container is gone.
        let stopping = self.containers.get(&c.id).is_some_and(|o| o.stopping) && c.running;
        self.containers.insert(
            c.id.clone(),
            Container {
                stopping: stopping || c.stopping,
                ..c
            },
        );
    }

    pub fn remove(&mut self, id: &str) {
        self.containers.remove(id);
    }

    /// Signal `signal` went to the container: a stop signal (TERM, INT, QUIT, KILL, or its
    /// own STOPSIGNAL) drains it from now on; others (HUP for a reload...) change nothing.
    pub fn signalled(&mut self, id: &str, signal: i32) {
        const STOPS: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGKILL];
        if let Some(c) = self.containers.get_mut(id)
            && (STOPS.contains(&signal) || c.stop_signal == Some(signal))
        {
            c.stopping = true;
        }
    }

    /// Whether the engine said something about this container we keep.
    pub fn knows(&self, id: &str) -> bool {
        self.containers.contains_key(id)
    }

    pub fn discovered(&self) -> Discovered {
        let mut ordered: Vec<&Container> = self.containers.values().collect();
        // Oldest first: a container that came later loses a conflict, whatever its id.
        ordered.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        let mut out = Discovered::default();
        // (host, path) -> (pool, container name)
        let mut routes: HashMap<(String, String), (String, String)> = HashMap::new();
        // pool -> (protocol, container name)
        let mut protocols: HashMap<String, (HttpProtocol, String)> = HashMap::new();
        let mut addresses: HashMap<(String, SocketAddr), String> = HashMap::new();
        for c in ordered {
            let source = Source {
                id: c.short_id().to_owned(),
                name: c.name.clone(),
            };
            let entry = |state, pool, address| Entry {
                source: source.clone(),
                state,
                pool,
                address,
            };
            let claim = match labels::read(&c.labels, &self.prefix, &c.exposed_tcp) {
                Ok(Reading::Claim(claim)) => claim,
                Ok(Reading::Disabled) | Ok(Reading::NotOurs) => {
                    out.containers.push(entry(State::Disabled, None, None));
                    continue;
                }
                Err(e) => {
                    out.containers
                        .push(entry(State::BadLabel(e.to_string()), None, None));
                    continue;
                }
            };
            let pool = Some(claim.pool.clone());
            let ip = match &self.network {
                Some(n) => c.networks.get(n).copied().flatten().ok_or_else(|| {
                    format!(
                        "not on network {n} (on: {})",
                        c.networks.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                }),
                None => {
                    let with: Vec<_> = c.networks.iter().filter(|(_, a)| a.is_some()).collect();
                    match with.as_slice() {
                        [(_, Some(a))] => Ok(*a),
                        [] => Err("no address on any network".to_owned()),
                        many => Err(format!(
                            "on several networks ({}): set [discovery.docker] network",
                            many.iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    }
                }
            };
            let address = match ip {
                Ok(ip) => SocketAddr::new(ip, claim.port),
                Err(why) => {
                    out.containers
                        .push(entry(State::NoAddress(why), pool, None));
                    continue;
                }
            };
            let refused = claim
                .hosts
                .iter()
                .find_map(|h| {
                    let (p, other) = routes.get(&(h.clone(), claim.path_prefix.clone()))?;
                    (*p != claim.pool).then(|| {
                        format!(
                            "route {h}{} already goes to pool {p} (container {other})",
                            claim.path_prefix
                        )
                    })
                })
                .or_else(|| {
                    let mine = claim.protocol?;
                    let (theirs, other) = protocols.get(&claim.pool)?;
                    (*theirs != mine).then(|| {
                        format!(
                            "pool {} speaks {theirs:?} (container {other}), this asks {mine:?}",
                            claim.pool
                        )
                    })
                })
                .or_else(|| {
                    let other = addresses.get(&(claim.pool.clone(), address))?;
                    Some(format!(
                        "server {address} is already in pool {} (container {other})",
                        claim.pool
                    ))
                });
            if let Some(why) = refused {
                tracing::warn!(container = %c.name, "docker discovery: {why}");
                out.containers
                    .push(entry(State::Refused(why), pool, Some(address)));
                continue;
            }
            for h in &claim.hosts {
                let key = (h.clone(), claim.path_prefix.clone());
                if routes.contains_key(&key) {
                    continue;
                }
                routes.insert(key, (claim.pool.clone(), c.name.clone()));
                out.routes.push(Route {
                    host: h.clone(),
                    path_prefix: claim.path_prefix.clone(),
                    pool: claim.pool.clone(),
                    source: source.clone(),
                });
            }
            if let Some(p) = claim.protocol {
                protocols
                    .entry(claim.pool.clone())
                    .or_insert((p, c.name.clone()));
            }
            addresses.insert((claim.pool.clone(), address), c.name.clone());
            let state = if c.paused {
                State::Paused
            } else if c.health == Health::Starting {
                State::Starting
            } else if c.health == Health::Unhealthy {
                State::Unhealthy
            } else if c.stopping {
                State::Stopping
            } else {
                State::Serving
            };
            if matches!(state, State::Serving | State::Stopping) {
                out.servers.push(Server {
                    pool: claim.pool.clone(),
                    address,
                    weight: if state == State::Stopping {
                        0
                    } else {
                        claim.weight
                    },
                    protocol: claim.protocol,
                    source: source.clone(),
                });
            }
            out.containers.push(entry(state, pool, Some(address)));
        }
        out.servers
            .sort_by(|a, b| (&a.pool, a.address).cmp(&(&b.pool, b.address)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::container::from_testdata;
    use super::*;

    fn c(id: &str, created: &str, ip: &str, labels: &[(&str, &str)]) -> Container {
        Container {
            id: format!("{id:0<64}"),
            name: id.to_owned(),
            created: created.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            running: true,
            paused: false,
            health: Health::None,
            networks: [("apps".to_owned(), ip.parse().ok())].into(),
            exposed_tcp: vec![8080],
            stop_signal: Some(libc::SIGWINCH),
            stopping: false,
        }
    }

    fn servers(d: &Discovered) -> Vec<(String, String, u32)> {
        d.servers
            .iter()
            .map(|s| (s.pool.clone(), s.address.to_string(), s.weight))
            .collect()
    }

    #[test]
    fn engine_json_to_servers_and_routes() {
        let mut inv = Inventory::new("portier", Some("net1"), 10);
        inv.resync(vec![
            from_testdata("inspect_c1.json"),
            from_testdata("inspect_c2.json"),
            from_testdata("inspect_c3.json"),
        ]);
        let d = inv.discovered();
        // c1 is stopped (not kept); c2b is unhealthy; c3 serves /api of todo.example.
        assert_eq!(inv.len(), 2);
        assert_eq!(
            servers(&d),
            vec![("todo".into(), "172.30.0.2:8080".into(), 1)]
        );
        assert_eq!(d.routes.len(), 2, "{:?}", d.routes);
        assert_eq!(
            (
                d.routes[1].host.as_str(),
                d.routes[1].path_prefix.as_str(),
                d.routes[1].pool.as_str()
            ),
            ("todo.example", "/api", "todo")
        );
        let states: Vec<_> = d
            .containers
            .iter()
            .map(|e| (e.source.name.as_str(), e.state.word()))
            .collect();
        assert_eq!(states, vec![("c2b", "unhealthy"), ("c3", "serving")]);
        // The unhealthy one still holds its route (a 503 rather than another pool's page).
        assert_eq!(d.routes[0].host, "shop.example");

        // Without a network setting, c3 (on net1 and net2) has no one address.
        let mut inv = Inventory::new("portier", None, 10);
        inv.upsert(from_testdata("inspect_c3.json"));
        let d = inv.discovered();
        assert!(d.servers.is_empty());
        assert_eq!(
            d.containers[0].state,
            State::NoAddress(
                "on several networks (net1, net2): set [discovery.docker] network".into()
            )
        );
    }

    #[test]
    fn later_container_loses_a_route_conflict() {
        let mut inv = Inventory::new("portier", None, 10);
        inv.upsert(c(
            "b",
            "2026-01-02",
            "10.1.0.2",
            &[("portier.host", "a.example"), ("portier.pool", "two")],
        ));
        inv.upsert(c(
            "a",
            "2026-01-01",
            "10.1.0.1",
            &[("portier.host", "a.example"), ("portier.pool", "one")],
        ));
        let d = inv.discovered();
        assert_eq!(servers(&d), vec![("one".into(), "10.1.0.1:8080".into(), 1)]);
        assert_eq!(d.containers[1].source.name, "b");
        assert_eq!(
            d.containers[1].state,
            State::Refused("route a.example/ already goes to pool one (container a)".into())
        );
        // The same host and path in the same pool is two servers of one pool.
        inv.upsert(c(
            "c",
            "2026-01-03",
            "10.1.0.3",
            &[
                ("portier.host", "a.example"),
                ("portier.pool", "one"),
                ("portier.weight", "2"),
            ],
        ));
        let d = inv.discovered();
        assert_eq!(
            servers(&d),
            vec![
                ("one".into(), "10.1.0.1:8080".into(), 1),
                ("one".into(), "10.1.0.3:8080".into(), 2)
            ]
        );
        assert_eq!(d.routes.len(), 1);
    }

    #[test]
    fn protocol_conflict_and_bad_labels_are_reported() {
        let mut inv = Inventory::new("portier", None, 10);
        inv.upsert(c(
            "a",
            "1",
            "10.1.0.1",
            &[("portier.pool", "p"), ("portier.protocol", "h2c")],
        ));
        inv.upsert(c(
            "b",
            "2",
            "10.1.0.2",
            &[("portier.pool", "p"), ("portier.protocol", "http1")],
        ));
        inv.upsert(c(
            "d",
            "3",
            "10.1.0.4",
            &[("portier.host", "x.example"), ("portier.port", "http")],
        ));
        inv.upsert(c(
            "e",
            "4",
            "10.1.0.5",
            &[("portier.host", "y.example"), ("portier.enable", "false")],
        ));
        let d = inv.discovered();
        let words: Vec<_> = d.containers.iter().map(|e| e.state.word()).collect();
        assert_eq!(words, vec!["serving", "refused", "bad-label", "disabled"]);
        assert_eq!(
            d.containers[2].state.detail(),
            Some("label portier.port: \"http\" is not a port (1-65535)")
        );
        assert_eq!(servers(&d).len(), 1);
    }

    #[test]
    fn stopping_drains_and_health_paused_and_limits() {
        let mut inv = Inventory::new("portier", None, 2);
        inv.upsert(c("a", "1", "10.1.0.1", &[("portier.host", "a.example")]));
        let a = format!("{:0<64}", "a");
        // A reload signal is not a stop.
        inv.signalled(&a, libc::SIGHUP);
        assert_eq!(servers(&inv.discovered())[0].2, 1);
        // The image's own STOPSIGNAL is.
        inv.signalled(&a, libc::SIGWINCH);
        // A later inspect (still running) keeps the drain.
        inv.upsert(c("a", "1", "10.1.0.1", &[("portier.host", "a.example")]));
        assert_eq!(
            servers(&inv.discovered()),
            vec![("a.example".into(), "10.1.0.1:8080".into(), 0)]
        );
        let mut b = c("b", "2", "10.1.0.2", &[("portier.host", "a.example")]);
        b.health = Health::Starting;
        inv.upsert(b.clone());
        b.health = Health::Healthy;
        b.paused = true;
        inv.upsert(b);
        let d = inv.discovered();
        assert_eq!(d.containers[1].state, State::Paused);
        // Bounded: a third container is counted, not kept.
        inv.upsert(c("z", "3", "10.1.0.3", &[("portier.host", "a.example")]));
        assert_eq!((inv.len(), inv.over_limit), (2, 1));
        // Stopped (not running) removes it; so does remove().
        let mut a = c("a", "1", "10.1.0.1", &[("portier.host", "a.example")]);
        a.running = false;
        inv.upsert(a);
        inv.remove(&format!("{:0<64}", "b"));
        assert!(inv.is_empty());
    }
}
