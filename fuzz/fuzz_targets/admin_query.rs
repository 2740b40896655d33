//! The admin API's query decoding (userspace/src/admin/mod.rs): `percent_decode` against a
//! reference decoder (`%` and exactly two hex digits is a byte, `+` a space, anything else
//! itself), and `parse_query` against splitting by hand. Never panics.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use portier::admin::{parse_query, percent_decode};

fn reference(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if b.len() > i + 2
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    assert_eq!(percent_decode(query), reference(query), "{query:?}");
    let mut expected = BTreeMap::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        expected.insert(reference(k), reference(v));
    }
    assert_eq!(parse_query(query), expected);
});
