//! Shared by the config tests of every section: parse expecting problems, and assert one
//! problem's file, line, key and message.

use super::{Problem, parse};

pub(super) const FILE: &str = "portier.toml";

pub(super) fn problems(text: &str) -> Vec<Problem> {
    match parse(text, FILE) {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(error) => error.problems().to_vec(),
    }
}

#[track_caller]
pub(super) fn assert_problem(p: &Problem, line: usize, key: &str, fragment: &str) {
    assert_eq!(
        (p.file.as_str(), p.line, p.key.as_str()),
        (FILE, line, key),
        "{p:?}"
    );
    assert!(
        p.message.contains(fragment),
        "{:?} lacks {fragment:?}",
        p.message
    );
}

/// Exactly one problem, at `line` on `key`, whose message contains `fragment`.
#[track_caller]
pub(super) fn assert_one(text: &str, line: usize, key: &str, fragment: &str) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(&found[0], line, key, fragment);
}

/// A node with one L7 listener, route and pool (one server on port 8080), for the `[l7]`
/// tests to extend.
pub(super) const L7_BASE: &str = r#"[node]
name = "host1"

[[l7.listener]]
name = "http"
bind = "0.0.0.0:80"

[[l7.route]]
host = "todo.example"
pool = "todo"

[[l7.pool]]
name = "todo"
servers = [{ address = "172.17.0.2:8080" }]
"#;
