//! Static config and discovered containers made into the one L7 config the proxy runs.
//! Pure, and predictable: a pool or route in both is one pool with both kinds of servers;
//! a container that contradicts the config (its route goes to another pool, its protocol
//! differs from the configured pool's) is refused and reported, the config always wins.

use crate::config::{L7Config, PoolConfig, RouteConfig, ServerConfig};
use crate::discovery::docker::inventory::{Discovered, Source};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Merged {
    pub config: L7Config,
    /// The container behind each discovered server; servers absent here come from the file.
    pub sources: HashMap<(String, SocketAddr), Source>,
    /// Containers refused because of the config: short id -> why.
    pub refused: BTreeMap<String, String>,
}

/// `defaults`: the settings of pools only containers make.
pub fn merge(config: &L7Config, d: &Discovered, defaults: &PoolConfig) -> Merged {
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    for r in &d.routes {
        let taken = config
            .routes
            .iter()
            .find(|c| c.listener.is_none() && c.host == r.host && c.path_prefix == r.path_prefix);
        if let Some(c) = taken
            && c.pool != r.pool
        {
            refused.entry(r.source.id.clone()).or_insert_with(|| {
                format!(
                    "route {}{} goes to pool {} in the config",
                    r.host, r.path_prefix, c.pool
                )
            });
        }
    }
    for s in &d.servers {
        if let (Some(p), Some(mine)) = (config.pools.iter().find(|p| p.name == s.pool), s.protocol)
            && p.protocol != mine
        {
            refused.entry(s.source.id.clone()).or_insert_with(|| {
                format!(
                    "pool {} speaks {:?} in the config, the container asks {mine:?}",
                    p.name, p.protocol
                )
            });
        }
    }
    for (id, why) in &refused {
        tracing::warn!(container = %id, "docker discovery: {why}");
    }

    let mut out = config.clone();
    let mut sources = HashMap::new();
    let accepted = |source: &Source| !refused.contains_key(&source.id);
    let configured_pools: HashSet<String> = config.pools.iter().map(|p| p.name.clone()).collect();
    let pool_index = |pools: &mut Vec<PoolConfig>, name: &str| -> usize {
        match pools.iter().position(|p| p.name == name) {
            Some(i) => i,
            None => {
                pools.push(PoolConfig {
                    name: name.to_owned(),
                    servers: Vec::new(),
                    ..defaults.clone()
                });
                pools.len() - 1
            }
        }
    };
    for r in d.routes.iter().filter(|r| accepted(&r.source)) {
        pool_index(&mut out.pools, &r.pool);
        let exists = out
            .routes
            .iter()
            .any(|c| c.listener.is_none() && c.host == r.host && c.path_prefix == r.path_prefix);
        if !exists {
            out.routes.push(RouteConfig {
                host: r.host.clone(),
                path_prefix: r.path_prefix.clone(),
                pool: r.pool.clone(),
                listener: None,
            });
        }
    }
    for s in d.servers.iter().filter(|s| accepted(&s.source)) {
        let i = pool_index(&mut out.pools, &s.pool);
        let pool = &mut out.pools[i];
        if !configured_pools.contains(&pool.name)
            && let Some(p) = s.protocol
        {
            pool.protocol = p;
        }
        // The file's server at the same address stays as written.
        if pool.servers.iter().any(|c| c.address == s.address) {
            continue;
        }
        pool.servers.push(ServerConfig {
            address: s.address,
            weight: s.weight,
            sni: None,
        });
        sources.insert((s.pool.clone(), s.address), s.source.clone());
    }
    Merged {
        config: out,
        sources,
        refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HttpProtocol;
    use crate::discovery::docker::inventory::{Route, Server};

    fn config() -> (L7Config, PoolConfig) {
        let text = "[node]\nname = \"t\"\n[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:80\"\n\
                    [[l7.route]]\nhost = \"todo.example\"\npool = \"todo\"\n\
                    [[l7.pool]]\nname = \"todo\"\nservers = [{ address = \"10.0.0.1:80\" }]\n\
                    [discovery.docker]\n[discovery.docker.defaults]\nretries = 7\n";
        let c = crate::config::parse(text, "t.toml").expect("valid");
        let defaults = c.discovery.unwrap().docker.unwrap().defaults;
        (c.l7.unwrap(), defaults)
    }

    fn src(name: &str) -> Source {
        Source {
            id: format!("{name}-id"),
            name: name.into(),
        }
    }

    fn server(pool: &str, addr: &str, name: &str, protocol: Option<HttpProtocol>) -> Server {
        Server {
            pool: pool.into(),
            address: addr.parse().unwrap(),
            weight: 1,
            protocol,
            source: src(name),
        }
    }

    fn route(host: &str, pool: &str, name: &str) -> Route {
        Route {
            host: host.into(),
            path_prefix: "/".into(),
            pool: pool.into(),
            source: src(name),
        }
    }

    #[test]
    fn one_pool_with_both_kinds_of_servers_and_new_pools_from_defaults() {
        let (c, defaults) = config();
        let d = Discovered {
            servers: vec![
                server("todo", "172.17.0.2:8080", "todo1", None),
                server("todo", "10.0.0.1:80", "same-as-file", None),
                server("shop", "172.17.0.3:8080", "shop1", Some(HttpProtocol::H2c)),
            ],
            routes: vec![
                route("todo.example", "todo", "todo1"),
                route("shop.example", "shop", "shop1"),
            ],
            containers: vec![],
        };
        let m = merge(&c, &d, &defaults);
        assert!(m.refused.is_empty(), "{:?}", m.refused);
        let todo = m.config.pools.iter().find(|p| p.name == "todo").unwrap();
        let addrs: Vec<String> = todo.servers.iter().map(|s| s.address.to_string()).collect();
        assert_eq!(addrs, vec!["10.0.0.1:80", "172.17.0.2:8080"]);
        assert_eq!(todo.retries, 2, "the file's pool keeps its settings");
        let shop = m.config.pools.iter().find(|p| p.name == "shop").unwrap();
        assert_eq!((shop.retries, shop.protocol), (7, HttpProtocol::H2c));
        assert_eq!(m.config.routes.len(), 2);
        assert_eq!(
            m.sources[&("todo".into(), "172.17.0.2:8080".parse().unwrap())].name,
            "todo1"
        );
        // The file's server is the file's, not the container's.
        assert!(
            !m.sources
                .contains_key(&("todo".into(), "10.0.0.1:80".parse().unwrap()))
        );
        // Nothing discovered: the config as written.
        assert_eq!(merge(&c, &Discovered::default(), &defaults).config, c);
    }

    #[test]
    fn contradicting_the_config_is_refused() {
        let (c, defaults) = config();
        let d = Discovered {
            servers: vec![
                server("other", "172.17.0.9:8080", "thief", None),
                server("todo", "172.17.0.8:8080", "h2", Some(HttpProtocol::H2c)),
            ],
            routes: vec![route("todo.example", "other", "thief")],
            containers: vec![],
        };
        let m = merge(&c, &d, &defaults);
        assert_eq!(
            m.refused["thief-id"],
            "route todo.example/ goes to pool todo in the config"
        );
        assert!(m.refused["h2-id"].contains("speaks Http1 in the config"));
        assert_eq!(m.config, c);
    }
}
