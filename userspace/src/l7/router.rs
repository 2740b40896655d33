//! Request routing by host and path: pure, built once per config snapshot.
//!
//! Specificity, most to least: exact host, then the longest matching `*.suffix`, then the
//! default `*`. Within a host the longest matching path prefix wins; a host whose prefixes
//! all miss falls through to the next less specific host.

use std::collections::HashMap;

/// Where a request goes: an index into the snapshot's routes.
pub type RouteId = usize;

#[derive(Debug, Default, Clone)]
pub struct Router {
    exact: HashMap<String, Prefixes>,
    /// `(".suffix", prefixes)`, longest suffix first.
    wildcard: Vec<(String, Prefixes)>,
    default: Prefixes,
}

/// `(prefix, route)`, longest prefix first.
#[derive(Debug, Default, Clone)]
struct Prefixes(Vec<(String, RouteId)>);

impl Prefixes {
    fn add(&mut self, prefix: &str, id: RouteId) {
        self.0.push((prefix.to_owned(), id));
        self.0.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
    }

    fn find(&self, path: &str) -> Option<RouteId> {
        self.0
            .iter()
            .find(|(prefix, _)| path_matches(prefix, path))
            .map(|&(_, id)| id)
    }
}

/// A prefix ending in '/' matches textually; one that does not matches whole segments, so
/// `/api` takes `/api` and `/api/x` but not `/apix`.
fn path_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

impl Router {
    /// `routes`: `(host pattern as normalised by [`normalise_pattern`], path prefix, id)`.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str, RouteId)>) -> Router {
        let mut r = Router::default();
        for (host, prefix, id) in routes {
            if host == "*" {
                r.default.add(prefix, id);
            } else if let Some(suffix) = host.strip_prefix('*') {
                match r.wildcard.iter_mut().find(|(s, _)| s == suffix) {
                    Some((_, p)) => p.add(prefix, id),
                    None => {
                        let mut p = Prefixes::default();
                        p.add(prefix, id);
                        r.wildcard.push((suffix.to_owned(), p));
                    }
                }
            } else {
                r.exact.entry(host.to_owned()).or_default().add(prefix, id);
            }
        }
        r.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        r
    }

    /// `host` as returned by [`normalise_host`]; `path` without the query.
    pub fn route(&self, host: &str, path: &str) -> Option<RouteId> {
        if let Some(id) = self.exact.get(host).and_then(|p| p.find(path)) {
            return Some(id);
        }
        for (suffix, prefixes) in &self.wildcard {
            // `*.example` covers `a.example` and `a.b.example`, never `example` itself.
            if host.len() > suffix.len()
                && host.ends_with(suffix.as_str())
                && let Some(id) = prefixes.find(path)
            {
                return Some(id);
            }
        }
        self.default.find(path)
    }
}

/// Lowercase, no trailing dot, port removed (and checked): the form routes are keyed by.
/// `None` for anything that is not a reg-name, IPv4 or bracketed IPv6 literal with an
/// optional port.
pub fn normalise_host(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?.trim_matches([' ', '\t']);
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        return check_port(port).then(|| format!("[{}]", inside.to_ascii_lowercase()));
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
    let valid = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    valid.then(|| name.to_ascii_lowercase())
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
    let normal = normalise_host(name.as_bytes())?;
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

    fn router() -> Router {
        Router::new([
            ("todo.example", "/", 0),
            ("todo.example", "/api", 1),
            ("*.example", "/", 2),
            ("*.shop.example", "/", 3),
            ("*", "/", 4),
            ("*", "/static/", 5),
            ("only-api.example", "/api", 6),
        ])
    }

    #[test]
    fn most_specific_wins() {
        let r = router();
        assert_eq!(r.route("todo.example", "/"), Some(0));
        assert_eq!(r.route("todo.example", "/api"), Some(1));
        assert_eq!(r.route("todo.example", "/api/items"), Some(1));
        assert_eq!(r.route("todo.example", "/apix"), Some(0));
        assert_eq!(r.route("a.example", "/x"), Some(2));
        assert_eq!(r.route("a.b.example", "/x"), Some(2));
        assert_eq!(r.route("cart.shop.example", "/"), Some(3));
        assert_eq!(r.route("example", "/"), Some(4));
        assert_eq!(r.route("other.test", "/static/x.css"), Some(5));
        assert_eq!(r.route("other.test", "/static"), Some(4));
        // No prefix of the exact host matches: fall through to the wildcard.
        assert_eq!(r.route("only-api.example", "/"), Some(2));
        assert_eq!(r.route("only-api.example", "/api/v1"), Some(6));
    }

    #[test]
    fn no_default_no_route() {
        let r = Router::new([("todo.example", "/", 0)]);
        assert_eq!(r.route("todo.example", "/"), Some(0));
        assert_eq!(r.route("shop.example", "/"), None);
        let r = Router::new([("todo.example", "/api", 0)]);
        assert_eq!(r.route("todo.example", "/"), None);
    }

    #[test]
    fn host_normalisation() {
        let n = |s: &str| normalise_host(s.as_bytes());
        assert_eq!(n("Todo.Example").as_deref(), Some("todo.example"));
        assert_eq!(n("todo.example:80").as_deref(), Some("todo.example"));
        assert_eq!(n("todo.example.:8080").as_deref(), Some("todo.example"));
        assert_eq!(n("todo.example:").as_deref(), Some("todo.example"));
        assert_eq!(n("10.0.0.1:80").as_deref(), Some("10.0.0.1"));
        assert_eq!(n("[2001:DB8::1]:443").as_deref(), Some("[2001:db8::1]"));
        assert_eq!(n("[2001:db8::1]").as_deref(), Some("[2001:db8::1]"));
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
