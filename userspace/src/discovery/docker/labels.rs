//! The label vocabulary: what a container asks of the proxy (`<prefix>.host`, `.port`, ...).
//! Pure; an error names the label key so `portier status` can say which one is wrong.

use crate::config::HttpProtocol;
use crate::limits::L7_MAX_WEIGHT;
use std::collections::BTreeMap;

/// Host names one container may claim: each becomes a route.
pub const MAX_HOSTS: usize = 16;

const KEYS: &[&str] = &[
    "enable",
    "host",
    "path_prefix",
    "port",
    "pool",
    "weight",
    "protocol",
];

/// What a container's labels ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// No label with our prefix: not a container for us.
    NotOurs,
    /// `<prefix>.enable=false`.
    Disabled,
    Claim(Claim),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Normalised route patterns (`name`, `*.suffix`); empty: a server of `pool` only.
    pub hosts: Vec<String>,
    pub path_prefix: String,
    pub port: u16,
    pub pool: String,
    pub weight: u32,
    /// `None`: the pool's.
    pub protocol: Option<HttpProtocol>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label {key}: {message}")]
pub struct LabelError {
    pub key: String,
    pub message: String,
}

pub fn read(
    labels: &BTreeMap<String, String>,
    prefix: &str,
    exposed_tcp: &[u16],
) -> Result<Reading, LabelError> {
    let ours: BTreeMap<&str, (&str, &str)> = labels
        .iter()
        .filter_map(|(k, v)| {
            let short = k.strip_prefix(prefix)?.strip_prefix('.')?;
            Some((short, (k.as_str(), v.trim())))
        })
        .collect();
    if ours.is_empty() {
        return Ok(Reading::NotOurs);
    }
    let err = |short: &str, message: String| LabelError {
        key: format!("{prefix}.{short}"),
        message,
    };
    if let Some(short) = ours.keys().find(|k| !KEYS.contains(k)) {
        return Err(err(
            short,
            format!("unknown label (known: {})", KEYS.join(", ")),
        ));
    }
    match ours.get("enable").map(|v| v.1) {
        None | Some("true") => {}
        Some("false") => return Ok(Reading::Disabled),
        Some(other) => {
            return Err(err("enable", format!("\"{other}\" is not true or false")));
        }
    }
    let mut hosts = Vec::new();
    if let Some((_, v)) = ours.get("host") {
        for raw in v.split(',').map(str::trim) {
            let Some(h) = crate::hostname::normalise_pattern(raw) else {
                return Err(err(
                    "host",
                    format!("\"{raw}\" is not a host name, \"*.suffix\" or \"*\""),
                ));
            };
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        if hosts.len() > MAX_HOSTS {
            return Err(err("host", format!("more than {MAX_HOSTS} hosts")));
        }
    }
    let path_prefix = match ours.get("path_prefix") {
        Some((_, v)) if v.starts_with('/') && !v.contains(['?', '#', ' ']) => (*v).to_owned(),
        Some((_, v)) => {
            return Err(err(
                "path_prefix",
                format!("\"{v}\" must start with '/' and hold no '?', '#' or space"),
            ));
        }
        None => "/".to_owned(),
    };
    let port = match ours.get("port") {
        Some((_, v)) => match v.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(err("port", format!("\"{v}\" is not a port (1-65535)"))),
        },
        None => match exposed_tcp {
            [one] => *one,
            [] => {
                return Err(err(
                    "port",
                    "missing, and the container exposes no TCP port".to_owned(),
                ));
            }
            many => {
                return Err(err(
                    "port",
                    format!("missing, and the container exposes several ports {many:?}"),
                ));
            }
        },
    };
    let pool = match (ours.get("pool"), hosts.first()) {
        (Some((_, v)), _) => {
            let ok = (1..=64).contains(&v.len())
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !ok {
                return Err(err(
                    "pool",
                    format!(
                        "\"{v}\" must be 1 to 64 characters from A-Z, a-z, 0-9, '_', '.' and '-'"
                    ),
                ));
            }
            (*v).to_owned()
        }
        // As Traefik names a service after its router: the first host, '*' spelled out.
        (None, Some(host)) => pool_name_for(host),
        (None, None) => {
            return Err(err(
                "host",
                format!("missing: a container needs {prefix}.host or {prefix}.pool"),
            ));
        }
    };
    let weight = match ours.get("weight") {
        Some((_, v)) => match v.parse::<u32>() {
            Ok(w) if w <= L7_MAX_WEIGHT => w,
            _ => {
                return Err(err(
                    "weight",
                    format!("\"{v}\" is not a weight (0-{L7_MAX_WEIGHT})"),
                ));
            }
        },
        None => 1,
    };
    let protocol = match ours.get("protocol").map(|v| v.1) {
        None => None,
        Some("http1") => Some(HttpProtocol::Http1),
        Some("h2c") => Some(HttpProtocol::H2c),
        Some(other) => {
            return Err(err(
                "protocol",
                format!("unknown value \"{other}\" (allowed: http1, h2c)"),
            ));
        }
    };
    Ok(Reading::Claim(Claim {
        hosts,
        path_prefix,
        port,
        pool,
        weight,
        protocol,
    }))
}

/// A pool name from a route pattern: `*.shop.example` -> `wildcard.shop.example`.
pub fn pool_name_for(host: &str) -> String {
    let name = match host {
        "*" => "wildcard".to_owned(),
        h => h.replacen('*', "wildcard", 1),
    };
    name.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_full_claim() {
        let l = labels(&[
            ("portier.host", "Todo.example, *.todo.example"),
            ("portier.path_prefix", "/api"),
            ("portier.port", "8080"),
            ("portier.pool", "todo"),
            ("portier.weight", "3"),
            ("portier.protocol", "h2c"),
            ("com.example.other", "x"),
        ]);
        assert_eq!(
            read(&l, "portier", &[]),
            Ok(Reading::Claim(Claim {
                hosts: vec!["todo.example".into(), "*.todo.example".into()],
                path_prefix: "/api".into(),
                port: 8080,
                pool: "todo".into(),
                weight: 3,
                protocol: Some(HttpProtocol::H2c),
            }))
        );
    }

    #[test]
    fn defaults_port_from_the_single_exposed_one_and_pool_from_the_host() {
        let l = labels(&[("portier.host", "*.shop.example")]);
        let Ok(Reading::Claim(c)) = read(&l, "portier", &[8000]) else {
            panic!("a claim");
        };
        assert_eq!((c.port, c.weight, c.path_prefix.as_str()), (8000, 1, "/"));
        assert_eq!(c.pool, "wildcard.shop.example");
        assert_eq!(c.protocol, None);
        let e = read(&l, "portier", &[80, 443]).unwrap_err();
        assert_eq!(e.key, "portier.port");
        assert!(e.message.contains("several ports"), "{e}");
    }

    #[test]
    fn not_ours_disabled_and_other_prefixes() {
        assert_eq!(
            read(&labels(&[("traefik.enable", "true")]), "portier", &[80]),
            Ok(Reading::NotOurs)
        );
        assert_eq!(
            read(
                &labels(&[("portier.enable", "false"), ("portier.host", "a.example")]),
                "portier",
                &[80]
            ),
            Ok(Reading::Disabled)
        );
        // "portierx.host" is not under the prefix "portier".
        assert_eq!(
            read(&labels(&[("portierx.host", "a")]), "portier", &[80]),
            Ok(Reading::NotOurs)
        );
        assert!(matches!(
            read(&labels(&[("lb.host", "a.example")]), "lb", &[80]),
            Ok(Reading::Claim(_))
        ));
    }

    #[test]
    fn errors_name_the_label() {
        // (labels, the key the error names, part of its message)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[("portier.hots", "a.example")],
                "portier.hots",
                "unknown label",
            ),
            (
                &[("portier.host", "a.example:80")],
                "portier.host",
                "not a host name",
            ),
            (
                &[("portier.host", "a.example"), ("portier.port", "0")],
                "portier.port",
                "not a port",
            ),
            (
                &[("portier.host", "a.example"), ("portier.port", "http")],
                "portier.port",
                "not a port",
            ),
            (
                &[("portier.host", "a.example"), ("portier.weight", "-1")],
                "portier.weight",
                "not a weight",
            ),
            (
                &[("portier.host", "a.example"), ("portier.weight", "999")],
                "portier.weight",
                "not a weight",
            ),
            (
                &[("portier.host", "a.example"), ("portier.protocol", "h2")],
                "portier.protocol",
                "allowed: http1, h2c",
            ),
            (
                &[
                    ("portier.host", "a.example"),
                    ("portier.path_prefix", "api"),
                ],
                "portier.path_prefix",
                "must start with '/'",
            ),
            (
                &[("portier.host", "a.example"), ("portier.pool", "a b")],
                "portier.pool",
                "1 to 64",
            ),
            (
                &[("portier.host", "a.example"), ("portier.enable", "yes")],
                "portier.enable",
                "not true or false",
            ),
            (
                &[("portier.port", "80")],
                "portier.host",
                "needs portier.host or portier.pool",
            ),
        ];
        for (pairs, key, message) in cases {
            let e = read(&labels(pairs), "portier", &[80]).unwrap_err();
            assert_eq!(e.key, *key, "{pairs:?}");
            assert!(e.message.contains(message), "{pairs:?}: {e}");
        }
        let many: String = (0..=MAX_HOSTS).map(|i| format!("h{i}.example,")).collect();
        let e = read(
            &labels(&[("portier.host", many.trim_end_matches(','))]),
            "portier",
            &[80],
        );
        assert!(e.unwrap_err().message.contains("more than 16"));
    }
}
