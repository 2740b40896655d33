//! The form in which HTTP hosts are compared: what the config's route patterns and every
//! request's `Host` (or authority) are normalised to, by the same rules on both sides.

use std::borrow::Cow;

/// Lowercase, no trailing dot, port removed (and checked): the form routes are keyed by.
/// `None` for anything that is not a reg-name, IPv4 or bracketed IPv6 literal with an
/// optional port. Borrowed from `raw` when that is already lowercase: every request's host
/// goes through here.
pub fn normalise_host(raw: &[u8]) -> Option<Cow<'_, str>> {
    let text = std::str::from_utf8(raw).ok()?.trim_matches([' ', '\t']);
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        return check_port(port).then(|| Cow::Owned(format!("[{}]", inside.to_ascii_lowercase())));
    } else {
        match text.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (text, None),
        }
    };
    if !check_port(port) {
        return None;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    // One pass: a dot after a dot (or first) is an empty label. (`str::contains("..")` set
    // up a substring searcher for each request.)
    let mut previous = b'.';
    let mut upper = false;
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| {
            let ok = b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_')
                || (b == b'.' && previous != b'.');
            upper |= b.is_ascii_uppercase();
            previous = b;
            ok
        });
    valid.then(|| {
        if upper {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        }
    })
}

fn check_port(port: Option<&str>) -> bool {
    match port {
        None => true,
        // An empty port is allowed by RFC 3986 (`host:`).
        Some("") => true,
        Some(p) => {
            p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
        }
    }
}

/// A route's host as written in the config: `*`, `*.suffix` or a name, without port.
pub fn normalise_pattern(raw: &str) -> Option<String> {
    if raw == "*" {
        return Some("*".to_owned());
    }
    let (wild, name) = match raw.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if name.contains(':') && !name.starts_with('[') {
        return None;
    }
    let normal = normalise_host(name.as_bytes())?.into_owned();
    if wild {
        if normal.starts_with('[') {
            return None;
        }
        Some(format!("*.{normal}"))
    } else {
        Some(normal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normalisation() {
        fn n(s: &str) -> Option<Cow<'_, str>> {
            normalise_host(s.as_bytes())
        }
        assert_eq!(n("Todo.Example").as_deref(), Some("todo.example"));
        assert_eq!(n("todo.example:80").as_deref(), Some("todo.example"));
        assert_eq!(n("todo.example.:8080").as_deref(), Some("todo.example"));
        assert_eq!(n("todo.example:").as_deref(), Some("todo.example"));
        assert_eq!(n("10.0.0.1:80").as_deref(), Some("10.0.0.1"));
        assert_eq!(n("[2001:DB8::1]:443").as_deref(), Some("[2001:db8::1]"));
        assert_eq!(n("[2001:db8::1]").as_deref(), Some("[2001:db8::1]"));
        assert_eq!(n("a.b.:1").as_deref(), Some("a.b"));
        assert_eq!(n("a-_9.B").as_deref(), Some("a-_9.b"));
        // Already in normal form: the request's own bytes, not a copy.
        assert!(matches!(
            n("todo.example:80"),
            Some(Cow::Borrowed("todo.example"))
        ));
        assert!(matches!(n("Todo.example"), Some(Cow::Owned(_))));
        for bad in [
            "",
            ":80",
            "a b",
            "todo.example:99999",
            "todo.example:8o",
            "a:b:c",
            "[2001:db8::1",
            "[nope]",
            "[::1]x",
            "a..b",
            ".a",
            "..",
            ".",
            "todo/example",
            "todo@example",
            "\u{e9}.example",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
        assert_eq!(normalise_host(b"\xff.example"), None);
    }

    #[test]
    fn patterns() {
        let p = |s: &str| normalise_pattern(s);
        assert_eq!(p("*").as_deref(), Some("*"));
        assert_eq!(p("*.Example").as_deref(), Some("*.example"));
        assert_eq!(p("Todo.example").as_deref(), Some("todo.example"));
        for bad in [
            "*example",
            "todo.example:80",
            "*.*.example",
            "a*.example",
            "http://x",
            "",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }
}
