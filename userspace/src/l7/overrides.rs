//! Runtime changes an operator made to pool servers on top of the config (`drain`,
//! `weight`), as HAProxy's `set server pool/srv state drain` and `set server weight`.
//! They survive reloads that keep the server, so a reload for an unrelated change does not
//! put a server in maintenance back into rotation; `undrain` removes the override and the
//! configured weight applies again.

use crate::config::L7Config;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// Highest runtime weight, as in the config: the round-robin order has one entry per unit of
/// weight, so it stays small.
pub const MAX_WEIGHT: u32 = 256;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Overrides {
    weights: BTreeMap<(String, SocketAddr), u32>,
}

/// A parsed `drain`, `undrain` or `weight` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub pool: String,
    pub server: SocketAddr,
    /// `None`: back to the configured weight.
    pub weight: Option<u32>,
}

impl Change {
    /// Reads a command's verb and arguments (`pool=`, `server=`, `weight=`), checking the
    /// server is in the pool of `config`.
    pub fn parse(
        config: &L7Config,
        verb: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<Change, String> {
        let arg = |k: &str| args.get(k).ok_or_else(|| format!("missing argument {k}"));
        let weight = match verb {
            "drain" => Some(0),
            "undrain" => None,
            "weight" => Some(
                arg("weight")?
                    .parse::<u32>()
                    .ok()
                    .filter(|w| *w <= MAX_WEIGHT)
                    .ok_or(format!("weight must be 0..={MAX_WEIGHT}"))?,
            ),
            other => {
                return Err(format!(
                    "unknown l7 command {other} (drain, undrain, weight)"
                ));
            }
        };
        let pool = arg("pool")?.clone();
        let server: SocketAddr = arg("server")?
            .parse()
            .map_err(|_| "server must be an address with a port, e.g. 10.0.0.5:8080")?;
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

    fn args(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn commands_are_checked_against_the_config() {
        let c = cfg(TWO);
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let target = [("pool", "web"), ("server", "10.0.0.1:80")];
        assert_eq!(
            Change::parse(&c, "drain", &args(&target)),
            Ok(Change {
                pool: "web".into(),
                server: a,
                weight: Some(0)
            })
        );
        assert_eq!(
            Change::parse(&c, "undrain", &args(&target)).map(|c| c.weight),
            Ok(None)
        );
        let mut w = target.to_vec();
        w.push(("weight", "7"));
        assert_eq!(
            Change::parse(&c, "weight", &args(&w)).map(|c| c.weight),
            Ok(Some(7))
        );
        for (verb, kv, why) in [
            ("weight", target.to_vec(), "missing argument weight"),
            (
                "weight",
                [target[0], target[1], ("weight", "257")].to_vec(),
                "weight must be 0..=256",
            ),
            (
                "weight",
                [target[0], target[1], ("weight", "-1")].to_vec(),
                "weight must be",
            ),
            ("drain", vec![("pool", "web")], "missing argument server"),
            (
                "drain",
                vec![("pool", "web"), ("server", "10.0.0.1")],
                "address with a port",
            ),
            (
                "drain",
                vec![("pool", "api"), ("server", "10.0.0.1:80")],
                "pool api has no server 10.0.0.1:80",
            ),
            (
                "drain",
                vec![("pool", "nope"), ("server", "10.0.0.1:80")],
                "pool nope has no server",
            ),
            ("stop", target.to_vec(), "unknown l7 command stop"),
        ] {
            let e = Change::parse(&c, verb, &args(&kv)).unwrap_err();
            assert!(e.contains(why), "{verb} {kv:?}: {e}");
        }
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
