//! The path a request is routed by, and forwarded with: normalised first, so that what the
//! router matches is what the backend will resolve. Without this `/public/../admin` matches a
//! `/public` route and reaches the backend as `/admin`.
//!
//! As HAProxy's `normalize-uri` (path-strip-dot, path-strip-dotdot, path-merge-slashes,
//! percent-decode-unreserved) plus encoded slashes and dots, which backends commonly decode
//! before resolving: percent-encoded unreserved characters, `/` and `.` are decoded (RFC 3986
//! §6.2.2.2), runs of slashes merged, and dot-segments removed (§5.2.4). `..` above the root
//! stays at the root. Other escapes stay as they are, with their hex digits upper-cased, and a
//! `%` that starts no escape is written `%25`: left bare, it would make an escape with the
//! characters decoded after it (`%%32%65` -> `%2e`), which the backend would decode again.

use std::borrow::Cow;

/// The normal form of `path` (without query); borrowed when it already is.
pub fn normalise(path: &str) -> Cow<'_, str> {
    // `OPTIONS *` names the server, not a path.
    if is_normal(path) || path == "*" {
        return Cow::Borrowed(path);
    }
    let decoded = decode(path);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    let last = segments.len().saturating_sub(1);
    // A path ending in a dot-segment or a slash names a directory: keep the trailing slash.
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "" => trailing = i == last && i > 0,
            "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for seg in &out {
        normal.push('/');
        normal.push_str(seg);
    }
    if trailing || normal.is_empty() {
        normal.push('/');
    }
    // A relative or empty path (not an origin-form target) gets its leading slash too.
    Cow::Owned(normal)
}

/// The cheap check the fast path runs on every request: nothing to decode, no empty or dot
/// segments.
pub fn is_normal(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') || b.contains(&b'%') {
        return false;
    }
    b.split(|&c| c == b'/')
        .enumerate()
        .skip(1)
        .all(|(i, seg)| match seg {
            b"" => i == b.split(|&c| c == b'/').count() - 1,
            b"." | b".." => false,
            _ => true,
        })
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes escapes of unreserved characters and of `/`; upper-cases the others; encodes a
/// `%` that starts no escape.
fn decode(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len() + 1);
    if b.first() != Some(&b'/') {
        out.push('/');
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            let c = (h << 4) | l;
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'/') {
                out.push(char::from(c));
            } else {
                out.push('%');
                out.push(char::from(b[i + 1].to_ascii_uppercase()));
                out.push(char::from(b[i + 2].to_ascii_uppercase()));
            }
            i += 3;
            continue;
        }
        if b[i] == b'%' {
            out.push_str("%25");
            i += 1;
            continue;
        }
        // The target was validated as visible ASCII before routing; anything else is kept
        // byte for byte by pushing the char it starts.
        match path[i..].chars().next() {
            Some(ch) => {
                out.push(ch);
                i += ch.len_utf8();
            }
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_encoded_separators_are_resolved() {
        for (raw, normal) in [
            ("/public/../admin", "/admin"),
            ("/public/./x", "/public/x"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E%2Fadmin", "/admin"),
            ("/public%2F..%2Fadmin", "/admin"),
            ("/a/b/../../../../etc", "/etc"),
            ("/..", "/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("//admin", "/admin"),
            ("/a//b///c/", "/a/b/c/"),
            ("/%7Euser/%41", "/~user/A"),
            ("/a%20b", "/a%20b"),
            ("/a%2fb", "/a/b"),
            ("/a%3f", "/a%3F"),
            ("/100%", "/100%25"),
            ("/%zz", "/%25zz"),
            ("a/b", "/a/b"),
        ] {
            assert_eq!(normalise(raw), normal, "{raw}");
            assert!(is_normal(&normalise(raw)) || normal.contains('%'), "{raw}");
        }
    }

    /// Found by fuzz/fuzz_targets/path_normalise.rs: a bare `%` followed by escapes of hex
    /// digits became a new escape, decoded by the next normalisation (or by the backend).
    #[test]
    fn a_bare_percent_does_not_make_an_escape_of_decoded_digits() {
        for (raw, normal) in [
            ("%%33%33", "/%2533"),
            ("/public/%%32%65%%32%65/admin", "/public/%252e%252e/admin"),
            ("/a%%2F..", "/"),
        ] {
            assert_eq!(normalise(raw), normal, "{raw}");
            assert_eq!(normalise(normal), normal, "{raw}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        assert!(matches!(normalise("*"), Cow::Borrowed("*")));
        for p in ["/", "/a", "/a/b/", "/api/v1/items", "/a.b/c..d/.e"] {
            assert!(is_normal(p), "{p}");
            assert!(matches!(normalise(p), Cow::Borrowed(_)), "{p}");
        }
        for p in ["", "a", "/a/../b", "/./", "//", "/a%41"] {
            assert!(!is_normal(p), "{p}");
        }
    }
}
