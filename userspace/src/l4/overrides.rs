//! Runtime changes an operator made on top of the config (drain, weight). They survive reloads
//! that keep the backend, so a reload for an unrelated change does not undrain a host in
//! maintenance; `undrain` removes the override and the configured weight applies again.

use crate::config::Config;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Overrides {
    weights: BTreeMap<(String, IpAddr), u32>,
}

impl Overrides {
    /// `None` removes the override.
    pub fn set(&mut self, service: &str, backend: IpAddr, weight: Option<u32>) {
        let key = (service.to_string(), backend);
        match weight {
            Some(w) => {
                self.weights.insert(key, w);
            }
            None => {
                self.weights.remove(&key);
            }
        }
    }

    /// Forgets overrides for services or backends the config no longer has.
    pub fn retain_existing(&mut self, config: &Config) {
        self.weights.retain(|(service, backend), _| {
            config
                .services
                .iter()
                .any(|s| &s.name == service && s.backends.iter().any(|b| b.address == *backend))
        });
    }

    /// The config with overridden weights in place.
    pub fn apply_to(&self, config: &Config) -> Config {
        let mut c = config.clone();
        for s in &mut c.services {
            for b in &mut s.backends {
                if let Some(w) = self.weights.get(&(s.name.clone(), b.address)) {
                    b.weight = *w;
                }
            }
        }
        c
    }

    pub fn effective_weight(&self, config: &Config, service: &str, backend: IpAddr) -> u32 {
        self.weights
            .get(&(service.to_string(), backend))
            .copied()
            .or_else(|| {
                config
                    .services
                    .iter()
                    .find(|s| s.name == service)
                    .and_then(|s| s.backends.iter().find(|b| b.address == backend))
                    .map(|b| b.weight)
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "[node]\nname = \"t\"\ninterfaces = [\"eth0\"]\n[[service]]\nname = \"web\"\nvip = \"203.0.113.10\"\nport = 80\nprotocol = \"tcp\"\n  [[service.backend]]\n  address = \"10.0.0.21\"\n  weight = 3\n{extra}"
        );
        config::parse(&text, "t.toml").expect("valid")
    }

    #[test]
    fn drain_then_undrain_restores_the_configured_weight() {
        let c = cfg("");
        let a: IpAddr = "10.0.0.21".parse().expect("ip");
        let mut o = Overrides::default();
        o.set("web", a, Some(0));
        assert_eq!(o.apply_to(&c).services[0].backends[0].weight, 0);
        assert_eq!(o.effective_weight(&c, "web", a), 0);
        o.set("web", a, None);
        assert_eq!(o.apply_to(&c), c);
        assert_eq!(o.effective_weight(&c, "web", a), 3);
    }

    #[test]
    fn overrides_survive_reloads_that_keep_the_backend_only() {
        let a: IpAddr = "10.0.0.21".parse().expect("ip");
        let mut o = Overrides::default();
        o.set("web", a, Some(0));
        o.retain_existing(&cfg("  [[service.backend]]\n  address = \"10.0.0.22\"\n"));
        assert_eq!(o.effective_weight(&cfg(""), "web", a), 0);
        let other = config::parse(
            "[node]\nname = \"t\"\ninterfaces = [\"eth0\"]\n[[service]]\nname = \"web\"\nvip = \"203.0.113.10\"\nport = 80\nprotocol = \"tcp\"\n  [[service.backend]]\n  address = \"10.0.0.22\"\n",
            "t.toml",
        )
        .expect("valid");
        o.retain_existing(&other);
        assert_eq!(o, Overrides::default());
    }
}
