//! Header rewriting between the two hops: hop-by-hop fields out (including those a
//! `Connection` header names), forwarding fields in. Pure functions on `HeaderMap`.

use crate::config::ForwardingFields;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Fields that describe one connection, never the message (RFC 9110 7.6.1). `Trailer` is
/// end to end in RFC 9110 (it declares the trailer fields the next hop must pass on).
pub(crate) const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Fields a `Connection` header may not remove: the request was routed by them and the
/// framing is re-derived by the next hop anyway.
pub(crate) const PROTECTED: [&str; 2] = ["host", "content-length"];

/// What stripping found that the caller needs to keep.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HopByHop {
    /// The `Upgrade` value when `Connection` asked for an upgrade.
    pub upgrade: Option<HeaderValue>,
    /// The client's `TE` included `trailers`.
    pub te_trailers: bool,
}

/// Removes hop-by-hop fields and every field named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> HopByHop {
    let mut named: Vec<HeaderName> = Vec::new();
    let mut wants_upgrade = false;
    for value in headers.get_all(header::CONNECTION) {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.eq_ignore_ascii_case("upgrade") {
                wants_upgrade = true;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes())
                && !PROTECTED.contains(&name.as_str())
            {
                named.push(name);
            }
        }
    }
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|t| {
            t.split(',').any(|p| {
                p.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("trailers")
            })
        })
    });
    let upgrade = headers
        .get(header::UPGRADE)
        .filter(|_| wants_upgrade)
        .cloned();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    HopByHop {
        upgrade,
        te_trailers,
    }
}

/// The client as seen on this hop, formatted once per connection for the forwarding fields.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The address as `X-Forwarded-For` shows it (v4-mapped addresses as IPv4).
    pub ip: String,
    /// The address as a `Forwarded` node (IPv6 bracketed and quoted).
    pub node: String,
    pub tls: bool,
}

impl ClientInfo {
    pub fn new(ip: IpAddr, tls: bool) -> ClientInfo {
        let ip = ip.to_canonical();
        let node = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        ClientInfo {
            ip: ip.to_string(),
            node,
            tls,
        }
    }
}

/// Appends the client to `X-Forwarded-For` and `Forwarded`; sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (to the `Host` the client sent, `host`). Only the pool's `fields`:
/// the others stay as the client sent them.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    client: &ClientInfo,
    host: &str,
    fields: ForwardingFields,
) {
    let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    if fields.xff {
        let ip = &client.ip;
        let previous: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let xff = if previous.is_empty() {
            ip.clone()
        } else {
            format!("{}, {ip}", previous.join(", "))
        };
        set(headers, "x-forwarded-for", &xff);
    }
    if fields.proto {
        set(
            headers,
            "x-forwarded-proto",
            if client.tls { "https" } else { "http" },
        );
    }
    if fields.host {
        set(headers, "x-forwarded-host", host);
    }
    if fields.forwarded
        && let Ok(v) = HeaderValue::from_str(&forwarded(client, host))
    {
        headers.append(header::FORWARDED, v);
    }
}

/// The `Forwarded` element this hop adds (RFC 7239).
pub fn forwarded(client: &ClientInfo, host: &str) -> String {
    let mut out = Vec::with_capacity(64);
    push_forwarded(&mut out, client, host);
    // Only ASCII and the host's own UTF-8 went in.
    String::from_utf8(out).unwrap_or_default()
}

/// `forwarded`'s value appended to `out` (the fast path writes it into the head as is).
pub fn push_forwarded(out: &mut Vec<u8>, client: &ClientInfo, host: &str) {
    let proto: &[u8] = if client.tls { b"https" } else { b"http" };
    let plain = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    out.extend_from_slice(b"for=");
    out.extend_from_slice(client.node.as_bytes());
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto);
    out.extend_from_slice(b";host=");
    if plain {
        out.extend_from_slice(host.as_bytes());
    } else {
        out.push(b'"');
        out.extend_from_slice(host.as_bytes());
        out.push(b'"');
    }
}

/// A field line of an HTTP/1 head.
pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The pool's forwarding fields at the end of an HTTP/1 request head written by hand (the
/// fast and raw paths), as [`add_forwarding`] sets them on the general path. `names`: how
/// X-Forwarded-For, -Proto and -Host are spelt (the client's spelling where it sent one);
/// `xff`: the client's X-Forwarded-For values, which the new one continues; `host_raw`: the
/// host as the client wrote it, `host` its text.
pub fn push_forwarding(
    out: &mut Vec<u8>,
    client: &ClientInfo,
    fields: ForwardingFields,
    names: [&str; 3],
    xff: &[&[u8]],
    host_raw: &[u8],
    host: &str,
) {
    let [xff_name, proto_name, host_name] = names;
    if fields.xff {
        out.extend_from_slice(xff_name.as_bytes());
        out.extend_from_slice(b": ");
        for previous in xff {
            out.extend_from_slice(previous);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(client.ip.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if fields.proto {
        let proto: &[u8] = if client.tls { b"https" } else { b"http" };
        push_field(out, proto_name.as_bytes(), proto);
    }
    if fields.host {
        push_field(out, host_name.as_bytes(), host_raw);
    }
    if fields.forwarded {
        out.extend_from_slice(b"forwarded: ");
        push_forwarded(out, client, host);
        out.extend_from_slice(b"\r\n");
    }
}

/// Puts the upgrade request back after stripping, so the backend sees it.
pub fn restore_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// The value of cookie `name` in the request's `Cookie` fields.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    /// Sorted: removal may reorder a `HeaderMap`.
    fn names(m: &HeaderMap) -> Vec<&str> {
        let mut v: Vec<&str> = m.keys().map(HeaderName::as_str).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn strips_standard_and_named_fields() {
        let mut m = map(&[
            ("host", "a"),
            ("connection", "keep-alive, X-Secret"),
            ("connection", "close,,Host, content-length"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-connection", "x"),
            ("te", "gzip, trailers;q=1"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("content-length", "3"),
            ("x-keep", "yes"),
        ]);
        let found = strip_hop_by_hop(&mut m);
        assert_eq!(names(&m), ["content-length", "host", "trailer", "x-keep"]);
        assert_eq!(
            found,
            HopByHop {
                upgrade: None,
                te_trailers: true
            }
        );
    }

    #[test]
    fn keeps_the_upgrade_asked_for() {
        let mut m = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let found = strip_hop_by_hop(&mut m);
        assert!(m.is_empty());
        assert_eq!(found.upgrade.as_ref().unwrap(), "websocket");
        restore_upgrade(&mut m, found.upgrade.unwrap());
        assert_eq!(m["connection"], "upgrade");
        // Upgrade without Connection: upgrade is just a stray field.
        let mut m = map(&[("upgrade", "websocket")]);
        assert_eq!(strip_hop_by_hop(&mut m).upgrade, None);
        assert!(m.is_empty());
    }

    #[test]
    fn bad_connection_tokens_are_ignored() {
        let mut m = map(&[("connection", "a b, \"x\""), ("x-a", "1")]);
        strip_hop_by_hop(&mut m);
        assert_eq!(names(&m), ["x-a"]);
    }

    #[test]
    fn forwarding_fields() {
        let mut m = map(&[
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-for", "192.0.2.2"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=192.0.2.1"),
        ]);
        let client = ClientInfo::new("198.51.100.10".parse().unwrap(), false);
        add_forwarding(&mut m, &client, "todo.example:8080", ForwardingFields::ALL);
        assert_eq!(m["x-forwarded-for"], "192.0.2.1, 192.0.2.2, 198.51.100.10");
        assert_eq!(m["x-forwarded-proto"], "http");
        assert_eq!(m["x-forwarded-host"], "todo.example:8080");
        let fwd: Vec<_> = m.get_all("forwarded").iter().collect();
        assert_eq!(fwd.len(), 2);
        assert_eq!(
            fwd[1],
            "for=198.51.100.10;proto=http;host=\"todo.example:8080\""
        );

        let mut m = HeaderMap::new();
        let v6 = ClientInfo::new("2001:db8::7".parse().unwrap(), true);
        add_forwarding(&mut m, &v6, "shop.example", ForwardingFields::ALL);
        assert_eq!(m["x-forwarded-for"], "2001:db8::7");
        assert_eq!(
            m["forwarded"],
            "for=\"[2001:db8::7]\";proto=https;host=shop.example"
        );
        // A v4-mapped address (dual-stack listener) is shown as IPv4.
        let mut m = HeaderMap::new();
        let mapped = ClientInfo::new("::ffff:192.0.2.9".parse().unwrap(), false);
        add_forwarding(&mut m, &mapped, "a", ForwardingFields::ALL);
        assert_eq!(m["x-forwarded-for"], "192.0.2.9");
    }

    #[test]
    fn only_the_pools_forwarding_fields() {
        let sent = [
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "spoofed.example"),
        ];
        let client = ClientInfo::new("198.51.100.10".parse().unwrap(), false);
        let mut m = map(&sent);
        add_forwarding(&mut m, &client, "todo.example", ForwardingFields::NONE);
        assert_eq!(
            m,
            map(&sent),
            "a field left out passes as the client sent it"
        );
        let only_xff = ForwardingFields {
            xff: true,
            ..ForwardingFields::NONE
        };
        let mut m = map(&sent);
        add_forwarding(&mut m, &client, "todo.example", only_xff);
        assert_eq!(m["x-forwarded-for"], "192.0.2.1, 198.51.100.10");
        assert_eq!(m["x-forwarded-proto"], "https");
        assert_eq!(m["x-forwarded-host"], "spoofed.example");
        assert!(!m.contains_key("forwarded"));
        let no_xff = ForwardingFields {
            xff: false,
            ..ForwardingFields::ALL
        };
        let mut m = map(&sent);
        add_forwarding(&mut m, &client, "todo.example", no_xff);
        assert_eq!(m["x-forwarded-for"], "192.0.2.1");
        assert_eq!(m["x-forwarded-proto"], "http");
        assert_eq!(m["x-forwarded-host"], "todo.example");
        assert_eq!(
            m["forwarded"],
            "for=198.51.100.10;proto=http;host=todo.example"
        );
    }

    #[test]
    fn cookies() {
        let m = map(&[("cookie", "a=1; session=abc ;b=2"), ("cookie", "c=3")]);
        assert_eq!(cookie(&m, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie(&m, "c"), Some(&b"3"[..]));
        assert_eq!(cookie(&m, "sess"), None);
        assert_eq!(cookie(&HeaderMap::new(), "a"), None);
    }
}
