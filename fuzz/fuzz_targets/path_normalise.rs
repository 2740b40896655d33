//! Request path normalisation (`portier::l7::path::normalise`): never panics; the result
//! starts with `/`, is normal (`is_normal`) unless it keeps escapes, is idempotent, has no
//! empty, `.` or `..` segment, and keeps only escapes normalising would not decode (not of
//! an unreserved character or `/`, hex digits upper-cased).

#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use portier::l7::path::{is_normal, normalise};

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let normal = normalise(path);
    if path == "*" {
        assert_eq!(normal, "*");
        return;
    }
    if is_normal(path) {
        assert!(matches!(normal, Cow::Borrowed(p) if p == path));
    }
    assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
    assert!(
        is_normal(&normal) || normal.contains('%'),
        "{path:?} -> {normal:?}"
    );
    assert_eq!(normalise(&normal), normal, "not idempotent: {path:?}");
    let segments: Vec<&str> = normal.split('/').skip(1).collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        assert!(
            !seg.is_empty() || (i == last && i > 0) || normal == "/",
            "empty segment in {normal:?} from {path:?}"
        );
        assert!(
            *seg != "." && *seg != "..",
            "dot segment in {normal:?} from {path:?}"
        );
    }
    // Escapes left: each of a character normalising keeps encoded, in upper case.
    let b = normal.as_bytes();
    for (i, _) in normal.match_indices('%') {
        if let (Some(h), Some(l)) = (
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            let c = h << 4 | l;
            assert!(
                !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'/')),
                "escape of {:?} left in {normal:?} from {path:?}",
                char::from(c)
            );
            assert!(
                !b[i + 1].is_ascii_lowercase() && !b[i + 2].is_ascii_lowercase(),
                "lower-case escape in {normal:?} from {path:?}"
            );
        }
    }
});
