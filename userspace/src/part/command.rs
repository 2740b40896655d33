//! Operator commands as types: parsed once where they enter (the admin API), so a part gets a
//! [`Command`] it can match on, never a verb string and a map of arguments to re-read.

use crate::limits::{L4_MAX_WEIGHT, L7_MAX_WEIGHT};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// The verbs each part understands, for parsing and for telling an operator what exists.
pub const VERBS: &[(&str, &[&str])] = &[
    ("l4", &["drain", "undrain", "weight"]),
    ("l7", &["drain", "undrain", "weight"]),
    ("bgp", &["drain", "undrain"]),
    // Not a part: the XDP programs' diagnostics, carried out by whichever of `l4` and
    // `decap` runs on the node (see `XDP_PARTS`).
    ("xdp", &["debug"]),
];

/// The parts `/command/xdp/...` goes to: those that attach XDP programs.
pub const XDP_PARTS: [&str; 2] = ["l4", "decap"];

/// A change of a backend's or server's weight, as HAProxy's `set server ... state drain`,
/// `state ready` and `weight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightChange {
    /// Weight 0: no new flows or requests; established ones finish.
    Drain,
    /// Back to the configured weight.
    Undrain,
    Set(u32),
}

impl WeightChange {
    /// The override it leaves: `None` means the configured weight.
    pub fn weight(self) -> Option<u32> {
        match self {
            WeightChange::Drain => Some(0),
            WeightChange::Undrain => None,
            WeightChange::Set(w) => Some(w),
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            WeightChange::Drain => "drain",
            WeightChange::Undrain => "undrain",
            WeightChange::Set(_) => "weight",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// An L4 service's backend.
    Backend {
        service: String,
        backend: IpAddr,
        change: WeightChange,
    },
    /// An L7 pool's server.
    Server {
        pool: String,
        server: SocketAddr,
        change: WeightChange,
    },
    /// A VIP's BGP route: drained (re-announced with GRACEFUL_SHUTDOWN, RFC 8326, so the
    /// routers move traffic away before it is withdrawn) or back to normal.
    Vip { vip: IpAddr, drain: bool },
    /// The XDP programs' diagnostics: the debug twin attached (each drop and new flow logged)
    /// or the plain program (`portier debug xdp on|off`).
    XdpDebug { on: bool },
}

impl Command {
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Backend { change, .. } | Command::Server { change, .. } => change.verb(),
            Command::Vip { drain: true, .. } => "drain",
            Command::Vip { drain: false, .. } => "undrain",
            Command::XdpDebug { .. } => "debug",
        }
    }

    /// Reads `/command/<part>/<verb>?args`: which part, and what to ask of it.
    pub fn parse(
        part: &str,
        verb: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<Command, ParseError> {
        let known = VERBS
            .iter()
            .find(|(p, _)| *p == part)
            .map(|(_, verbs)| *verbs)
            .unwrap_or(&[]);
        if !known.contains(&verb) {
            return Err(ParseError::UnknownVerb {
                part: part.to_string(),
                verb: verb.to_string(),
                known,
            });
        }
        let arg = |k: &'static str| {
            args.get(k)
                .map(String::as_str)
                .ok_or(ParseError::Missing(k))
        };
        if part == "xdp" {
            let on = match arg("state")? {
                "on" => true,
                "off" => false,
                _ => {
                    return Err(ParseError::Invalid {
                        key: "state",
                        expected: "on or off",
                    });
                }
            };
            return Ok(Command::XdpDebug { on });
        }
        if part == "bgp" {
            return Ok(Command::Vip {
                vip: arg("vip")?.parse().map_err(|_| ParseError::Invalid {
                    key: "vip",
                    expected: "an IP address",
                })?,
                drain: verb == "drain",
            });
        }
        let max = if part == "l4" {
            L4_MAX_WEIGHT
        } else {
            L7_MAX_WEIGHT
        };
        let change = match verb {
            "drain" => WeightChange::Drain,
            "undrain" => WeightChange::Undrain,
            _ => WeightChange::Set(
                arg("weight")?
                    .parse::<u32>()
                    .ok()
                    .filter(|w| *w <= max)
                    .ok_or(ParseError::Weight { max })?,
            ),
        };
        if part == "l4" {
            Ok(Command::Backend {
                service: arg("service")?.to_string(),
                backend: arg("backend")?.parse().map_err(|_| ParseError::Invalid {
                    key: "backend",
                    expected: "an IP address",
                })?,
                change,
            })
        } else {
            Ok(Command::Server {
                pool: arg("pool")?.to_string(),
                server: arg("server")?.parse().map_err(|_| ParseError::Invalid {
                    key: "server",
                    expected: "an address with a port, e.g. 10.0.0.5:8080",
                })?,
                change,
            })
        }
    }
}

/// A command the admin API could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("part {part} has no command {verb:?} (known: {})", list(known))]
    UnknownVerb {
        part: String,
        verb: String,
        known: &'static [&'static str],
    },
    #[error("weight must be 0..={max}")]
    Weight { max: u32 },
    #[error("missing argument {0}")]
    Missing(&'static str),
    #[error("{key} must be {expected}")]
    Invalid {
        key: &'static str,
        expected: &'static str,
    },
}

fn list(known: &[&str]) -> String {
    if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    }
}

/// A part's answer: what is in force now, as JSON for the operator.
pub type Reply = serde_json::Value;

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("part {part} has no command {verb}")]
    Unsupported {
        part: &'static str,
        verb: &'static str,
    },
    #[error("{0}")]
    NoSuchTarget(String),
    #[error("part {part} is not running on this node (running: {})", running.join(", "))]
    NotRunning { part: String, running: Vec<String> },
    #[error("part {0} is busy; try again")]
    Busy(String),
    #[error("part {0} stopped")]
    Gone(String),
    #[error("applying the change failed: {0}")]
    Failed(#[source] super::ApplyError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn l4_and_l7_commands_parse_with_their_own_limits() {
        assert_eq!(
            Command::parse(
                "l4",
                "weight",
                &args(&[
                    ("service", "web"),
                    ("backend", "10.0.0.21"),
                    ("weight", "65535")
                ])
            ),
            Ok(Command::Backend {
                service: "web".into(),
                backend: "10.0.0.21".parse().unwrap(),
                change: WeightChange::Set(65535),
            })
        );
        assert_eq!(
            Command::parse(
                "l7",
                "weight",
                &args(&[
                    ("pool", "todo"),
                    ("server", "172.17.0.10:8080"),
                    ("weight", "257")
                ])
            ),
            Err(ParseError::Weight { max: 256 })
        );
        assert_eq!(
            Command::parse("l7", "drain", &args(&[("pool", "todo")])),
            Err(ParseError::Missing("server"))
        );
    }

    #[test]
    fn xdp_debug_takes_on_or_off() {
        assert_eq!(
            Command::parse("xdp", "debug", &args(&[("state", "on")])),
            Ok(Command::XdpDebug { on: true })
        );
        assert_eq!(
            Command::parse("xdp", "debug", &args(&[("state", "off")])),
            Ok(Command::XdpDebug { on: false })
        );
        assert_eq!(
            Command::parse("xdp", "debug", &args(&[("state", "yes")])),
            Err(ParseError::Invalid {
                key: "state",
                expected: "on or off"
            })
        );
    }

    #[test]
    fn unknown_verbs_name_the_known_ones() {
        let e = Command::parse("ospf", "clear", &BTreeMap::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "part ospf has no command \"clear\" (known: none)"
        );
        let e = Command::parse("l4", "kill", &BTreeMap::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "part l4 has no command \"kill\" (known: drain, undrain, weight)"
        );
    }
}
