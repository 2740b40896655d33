//! What an engine event means for discovery. Pure: the source does what the action says.
//!
//! Most events only say "look again": the container is inspected and its new state replaces
//! the old (as Traefik re-reads the engine on each event), so the rules stay in one place
//! ([`super::inventory`]). Two are acted on at once: `die`/`destroy` (gone, no inspect needed)
//! and a signal, which the inventory takes as a stop (drain now, before the process exits)
//! when it is TERM, INT, QUIT, KILL or the container's own STOPSIGNAL.

use bollard::models::{EventMessage, EventMessageTypeEnum};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Inspect this container and take its new state.
    Inspect(String),
    Remove(String),
    /// A signal was sent (its number): a stop signal drains.
    Signal(String, i32),
    Ignore,
}

/// `15`, `SIGTERM` or `TERM` -> 15.
pub fn signal_number(text: &str) -> Option<i32> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i32>() {
        return Some(n);
    }
    let name = text.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// One event of the stream, as the engine sent it.
pub fn action_json(json: &[u8]) -> Result<Action, serde_json::Error> {
    let e: EventMessage = serde_json::from_slice(json)?;
    Ok(action(&e))
}

pub fn action(e: &EventMessage) -> Action {
    let Some(actor) = &e.actor else {
        return Action::Ignore;
    };
    let action = e.action.as_deref().unwrap_or("");
    // `health_status: healthy`, `exec_start: sh -c ...`: the verb is before the colon.
    let verb = action.split(':').next().unwrap_or("").trim();
    match e.typ {
        Some(EventMessageTypeEnum::CONTAINER) => {
            let Some(id) = actor.id.clone() else {
                return Action::Ignore;
            };
            match verb {
                "start" | "restart" | "unpause" | "pause" | "health_status" | "rename"
                | "update" => Action::Inspect(id),
                // Podman says `remove` where Docker says `destroy`.
                "die" | "destroy" | "remove" | "stop" => Action::Remove(id),
                "kill" => actor
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get("signal"))
                    .and_then(|s| signal_number(s))
                    .map_or(Action::Ignore, |n| Action::Signal(id, n)),
                _ => Action::Ignore,
            }
        }
        Some(EventMessageTypeEnum::NETWORK) => match verb {
            "connect" | "disconnect" => actor
                .attributes
                .as_ref()
                .and_then(|a| a.get("container"))
                .map_or(Action::Ignore, |id| Action::Inspect(id.clone())),
            _ => Action::Ignore,
        },
        _ => Action::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker 20.10's event stream while containers were created, connected to a second
    /// network, renamed, paused, found unhealthy, stopped, started and killed.
    #[test]
    fn the_engines_events() {
        let text = include_str!("testdata/events.jsonl");
        let actions: Vec<(String, Action)> = text
            .lines()
            .map(|l| {
                let e: EventMessage = serde_json::from_str(l).expect("engine JSON");
                (e.action.clone().unwrap_or_default(), action(&e))
            })
            .collect();
        let short = |a: &Action| match a {
            Action::Inspect(id) => format!("inspect {}", &id[..12]),
            Action::Remove(id) => format!("remove {}", &id[..12]),
            Action::Signal(id, n) => format!("signal {n} {}", &id[..12]),
            Action::Ignore => "ignore".to_owned(),
        };
        let got: Vec<String> = actions
            .iter()
            .map(|(verb, a)| format!("{verb} -> {}", short(a)))
            .collect();
        let want = [
            "create -> ignore",
            "create -> ignore",
            "connect -> inspect 8d3e345d2435",
            "start -> inspect 8d3e345d2435",
            "connect -> inspect 8d3e345d2435",
            "rename -> inspect 8d3e345d2435",
            "pause -> inspect c49167c807f8",
            "unpause -> inspect c49167c807f8",
            "health_status: unhealthy -> inspect 8d3e345d2435",
            "disconnect -> inspect 8d3e345d2435",
            "disconnect -> inspect 8d3e345d2435",
            "kill -> signal 15 c49167c807f8",
        ];
        assert_eq!(&got[..want.len()], want, "{got:#?}");
        assert!(got.contains(&"die -> remove c49167c807f8".to_owned()));
        assert!(got.contains(&"start -> inspect c49167c807f8".to_owned()));
        assert!(got.contains(&"kill -> signal 9 c49167c807f8".to_owned()));
    }

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(signal_number("15"), Some(15));
        assert_eq!(signal_number("SIGWINCH"), Some(28));
        assert_eq!(signal_number("quit"), Some(3));
        assert_eq!(signal_number("SIGNOPE"), None);
    }

    /// Podman 4.3's compatible event stream (`podman system service`): three containers
    /// that failed to start and were removed, two started, one stopped.
    #[test]
    fn podmans_events() {
        let text = include_str!("testdata/podman_events.jsonl");
        let got: Vec<String> = text
            .lines()
            .map(|l| match action_json(l.as_bytes()).expect("engine JSON") {
                Action::Inspect(id) => format!("inspect {}", &id[..12]),
                Action::Remove(id) => format!("remove {}", &id[..12]),
                Action::Signal(id, n) => format!("signal {n} {}", &id[..12]),
                Action::Ignore => "ignore".to_owned(),
            })
            .filter(|a| a != "ignore")
            .collect();
        assert_eq!(
            got,
            [
                "remove f1fa6513ab2c",
                "remove 6812907b5465",
                "remove 35b07f304c14",
                "inspect 3a05ccee75a5",
                "inspect b6e579398a44",
                "remove 3a05ccee75a5",
            ]
        );
    }
}
