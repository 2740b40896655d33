//! Runtime changes an operator made to pool servers on top of the config (`drain`,
//! `weight`), as HAProxy's `set server pool/srv state drain` and `set server weight`.
//! They survive reloads that keep the server, so a reload for an unrelated change does not
//! put a server in maintenance back into rotation; `undrain` removes the override and the
//! configured weight applies again.

use crate::config::L7Config;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Overrides {
    weights: BTreeMap<(String, SocketAddr), u32>,
}

/// A `drain`, `undrain` or `weight` command for a server the config has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub pool: String,
    pub server: SocketAddr,
    /// `None`: back to the configured weight.
    pub weight: Option<u32>,
}

impl Change {
    /// A change of `server` in `pool`, if `config` has that server there.
    pub fn checked(
        config: &L7Config,
        pool: String,
        server: SocketAddr,
        weight: Option<u32>,
    ) -> Result<Change, String> {
        let exists = config
            .pools
            .iter()
            .any(|p| p.name == pool && p.servers.iter().any(|s| s.address == server));
        if !exists {
            return Err(format!("pool {pool} has no server {server}"));
        }
        Ok(Change {
            pool,
            server,
            weight,
        })
    }
}

impl Overrides {
    pub fn set(&mut self, change: &Change) {
        let key = (change.pool.clone(), change.server);
        match change.weight {
            Some(w) => {
                self.weights.insert(key, w);
            }
            None => {
                self.weights.remove(&key);
            }
        }
    }

    /// Forgets overrides of pools or servers the config no longer has.
    pub fn retain_existing(&mut self, config: &L7Config) {
        self.weights.retain(|(pool, server), _| {
            config
                .pools
                .iter()
                .any(|p| &p.name == pool && p.servers.iter().any(|s| s.address == *server))
        });
    }

    /// The config with overridden weights in place: what the proxy runs.
    pub fn apply_to(&self, config: &L7Config) -> L7Config {
        let mut c = config.clone();
        for p in &mut c.pools {
            for s in &mut p.servers {
                if let Some(w) = self.weights.get(&(p.name.clone(), s.address)) {
                    s.weight = *w;
                }
            }
        }
        c
    }

    /// The weights the config gives, for showing next to the effective ones.
    pub fn configured(config: &L7Config) -> HashMap<(&str, SocketAddr), u32> {
        config
            .pools
            .iter()
            .flat_map(|p| {
                p.servers
                    .iter()
                    .map(move |s| ((p.name.as_str(), s.address), s.weight))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(servers: &str) -> L7Config {
        let text = format!(
            "[node]\nname = \"t\"\n[[l7.pool]]\nname = \"web\"\nservers = [{servers}]\n\
             [[l7.pool]]\nname = \"api\"\nservers = [{{ address = \"10.0.0.9:80\" }}]\n"
        );
        crate::config::parse(&text, "t.toml")
            .expect("valid")
            .l7
            .expect("l7")
    }

    const TWO: &str = "{ address = \"10.0.0.1:80\", weight = 3 }, { address = \"10.0.0.2:80\" }";

    #[test]
    fn commands_are_checked_against_the_config() {
        let c = cfg(TWO);
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(
            Change::checked(&c, "web".into(), a, Some(0)),
            Ok(Change {
                pool: "web".into(),
                server: a,
                weight: Some(0)
            })
        );
        assert_eq!(
            Change::checked(&c, "api".into(), a, None),
            Err("pool api has no server 10.0.0.1:80".to_string())
        );
        assert!(
            Change::checked(&c, "nope".into(), a, None)
                .unwrap_err()
                .contains("pool nope has no server")
        );
    }

    #[test]
    fn drain_weight_and_undrain_restore_the_configured_weight() {
        let c = cfg(TWO);
        let mut o = Overrides::default();
        let change = |weight| Change {
            pool: "web".into(),
            server: "10.0.0.1:80".parse().unwrap(),
            weight,
        };
        o.set(&change(Some(0)));
        assert_eq!(o.apply_to(&c).pools[0].servers[0].weight, 0);
        assert_eq!(o.apply_to(&c).pools[0].servers[1].weight, 1);
        o.set(&change(Some(9)));
        assert_eq!(o.apply_to(&c).pools[0].servers[0].weight, 9);
        o.set(&change(None));
        assert_eq!(o.apply_to(&c), c);
        let configured = Overrides::configured(&c);
        assert_eq!(configured[&("web", "10.0.0.1:80".parse().unwrap())], 3);
    }

    #[test]
    fn overrides_survive_reloads_that_keep_the_server_only() {
        let mut o = Overrides::default();
        o.set(&Change {
            pool: "web".into(),
            server: "10.0.0.1:80".parse().unwrap(),
            weight: Some(0),
        });
        // A reload that adds a server elsewhere keeps the drain.
        let grown = cfg(&format!("{TWO}, {{ address = \"10.0.0.3:80\" }}"));
        o.retain_existing(&grown);
        assert_eq!(o.apply_to(&grown).pools[0].servers[0].weight, 0);
        // One without the server forgets it: a server added back later starts as configured.
        let without = cfg("{ address = \"10.0.0.2:80\" }");
        o.retain_existing(&without);
        assert_eq!(o, Overrides::default());
        assert_eq!(o.apply_to(&grown).pools[0].servers[0].weight, 3);
    }
}
