//! What discovery needs of a container, read from the engine's inspect answer
//! (`GET /containers/{id}/json`, Docker's and Podman's alike).

use bollard::models::{ContainerInspectResponse, HealthStatusEnum};
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Without Docker's leading '/'.
    pub name: String,
    /// RFC 3339 as the engine wrote it; orders containers (the later one loses a conflict).
    pub created: String,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    pub paused: bool,
    pub health: Health,
    /// Network name -> the container's address there (IPv4, else global IPv6).
    pub networks: BTreeMap<String, Option<IpAddr>>,
    /// TCP ports the image or `docker run --expose` declares.
    pub exposed_tcp: Vec<u16>,
    /// The image's STOPSIGNAL (`docker stop` sends it first), as a number.
    pub stop_signal: Option<i32>,
    /// A stop signal was sent: no new requests while it finishes the ones it has.
    pub stopping: bool,
}

/// The Docker healthcheck's state; `None` when the container has no healthcheck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    None,
    Starting,
    Healthy,
    Unhealthy,
}

impl Container {
    /// `None` when the answer lacks the container's id (never from a real engine).
    pub fn from_inspect(r: &ContainerInspectResponse) -> Option<Container> {
        let id = r.id.clone()?;
        let name = r
            .name
            .as_deref()
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_else(|| id.chars().take(12).collect());
        let state = r.state.as_ref();
        let health = match state.and_then(|s| s.health.as_ref()).and_then(|h| h.status) {
            Some(HealthStatusEnum::STARTING) => Health::Starting,
            Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
            Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
            _ => Health::None,
        };
        let config = r.config.as_ref();
        let labels = config
            .and_then(|c| c.labels.as_ref())
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut exposed_tcp: Vec<u16> = config
            .and_then(|c| c.exposed_ports.as_ref())
            .map(|ports| {
                ports
                    .keys()
                    .filter_map(|p| match p.split_once('/') {
                        Some((n, "tcp")) => n.parse().ok(),
                        None => p.parse().ok(),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        exposed_tcp.sort_unstable();
        let networks = r
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .map(|nets| {
                nets.iter()
                    .map(|(name, e)| {
                        let v4 = e.ip_address.as_deref().and_then(|a| a.parse().ok());
                        let v6 = e
                            .global_ipv6_address
                            .as_deref()
                            .and_then(|a| a.parse().ok());
                        (name.clone(), v4.or(v6))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Container {
            id,
            name,
            created: r.created.clone().unwrap_or_default(),
            labels,
            running: state.and_then(|s| s.running).unwrap_or(false),
            paused: state.and_then(|s| s.paused).unwrap_or(false),
            health,
            networks,
            exposed_tcp,
            stop_signal: config
                .and_then(|c| c.stop_signal.as_deref())
                .and_then(super::events::signal_number),
            stopping: false,
        })
    }

    /// From the inspect answer's JSON as the engine sent it.
    pub fn from_inspect_json(json: &[u8]) -> Result<Option<Container>, serde_json::Error> {
        let r: ContainerInspectResponse = serde_json::from_slice(json)?;
        Ok(Container::from_inspect(&r))
    }

    /// The first 12 characters of the id, as `docker ps` shows it.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

#[cfg(test)]
pub(super) fn from_testdata(name: &str) -> Container {
    let path = format!(
        "{}/src/discovery/docker/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read(&path).expect("testdata");
    Container::from_inspect_json(&text)
        .expect("engine JSON")
        .expect("an id")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker 20.10's answers, captured from a dockerd started as the tests start it.
    #[test]
    fn reads_the_engines_inspect_answers() {
        let c3 = from_testdata("inspect_c3.json");
        assert_eq!(c3.name, "c3");
        assert!(c3.id.starts_with("6925e3057c77"), "{}", c3.id);
        assert!(c3.running && !c3.paused);
        assert_eq!(c3.health, Health::Healthy);
        assert_eq!(c3.exposed_tcp, vec![8080]);
        assert_eq!(c3.networks.keys().collect::<Vec<_>>(), vec!["net1", "net2"]);
        assert_eq!(c3.networks["net1"], Some("172.30.0.2".parse().unwrap()));
        assert_eq!(c3.labels["portier.path_prefix"], "/api");

        let c2 = from_testdata("inspect_c2.json");
        assert_eq!(c2.name, "c2b");
        assert_eq!(c2.health, Health::Unhealthy);
        assert!(c2.exposed_tcp.is_empty());
        assert_eq!(c2.labels["portier.weight"], "3");

        // Killed: not running, and its network endpoints are gone (no address).
        let c1 = from_testdata("inspect_c1.json");
        assert!(!c1.running);
        assert_eq!(c1.health, Health::None);
        assert!(
            c1.networks.values().all(Option::is_none),
            "{:?}",
            c1.networks
        );
    }

    /// Podman 4.3's compatible answer for a running container without a healthcheck.
    #[test]
    fn reads_podmans_inspect_answer() {
        let p2 = from_testdata("podman_inspect_p2.json");
        assert_eq!(p2.name, "p2");
        assert!(p2.running && !p2.paused);
        assert_eq!(p2.health, Health::None);
        assert_eq!(p2.exposed_tcp, vec![8080]);
        assert_eq!(p2.networks["pmnet"], Some("172.27.0.6".parse().unwrap()));
        assert_eq!(p2.labels["portier.host"], "todo.example");
        assert_eq!(p2.stop_signal, Some(15));
    }
}
