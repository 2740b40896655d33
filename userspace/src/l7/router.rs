//! Request routing by host and path: pure, built once per config snapshot.
//!
//! Specificity, most to least: exact host, then the longest matching `*.suffix`, then the
//! default `*`. Within a host the longest matching path prefix wins; a host whose prefixes
//! all miss falls through to the next less specific host.

pub use crate::hostname::normalise_host;
use std::collections::HashMap;

/// Where a request goes: an index into the snapshot's routes.
pub type RouteId = usize;

#[derive(Debug, Default, Clone)]
pub struct Router {
    /// Looked up by every request (foldhash: see the dependency's note).
    exact: HashMap<String, Prefixes, foldhash::fast::RandomState>,
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
}
