//! The HTTP/1 fast path's two rewrites (userspace/src/l7/fast.rs): the client's request head
//! into the upstream request, and the backend's response head into the client's. Never
//! panics, and what it writes is a well-formed head that says the same thing:
//! - upstream request: parses completely, same method and target, one Host with the client's
//!   value, no hop-by-hop field nor one the client's Connection named, one each of
//!   X-Forwarded-For/-Proto/-Host, and as framing the client's one Content-Length or
//!   `transfer-encoding: chunked` alone (requests with both, or repeats, are not fast);
//! - client response: parses completely, same status, and its framing fields describe exactly
//!   what the proxy relays (Content-Length n, chunked, or to close with `connection: close`).
//!
//! Input: a flags byte, then bytes. Flags bit 0 clear: the bytes are a request head and
//! whatever follows it is the response; set: the bytes are the response to a fixed GET (HEAD
//! with bit 1; with `Connection: close` with bit 2). Bit 3: the client came over TLS.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use portier::l7::fast::{Prep, prepare, rewrite_response_head};
use portier::l7::headers::ClientInfo;
use portier::l7::metrics::ListenerMetrics;
use portier::l7::proxy::ConnInfo;
use portier::l7::response_fields::Framing;
use portier::l7::snapshot::{Shared, Snapshot};

const CONFIG: &str = r#"
[node]
name = "fuzz"

[[l7.listener]]
name = "http"
bind = "127.0.0.1:8080"

[[l7.route]]
host = "*"
pool = "p"

[[l7.route]]
host = "shop.example"
path_prefix = "/api"
pool = "h2"

[[l7.pool]]
name = "p"
servers = [{ address = "127.0.0.1:9" }, { address = "[::1]:9", weight = 2 }]

[[l7.pool]]
name = "h2"
protocol = "h2c"
servers = [{ address = "127.0.0.1:9" }]
"#;

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let config = portier::config::parse(CONFIG, "fuzz.toml").expect("the fuzz config");
        let l7 = config.l7.expect("[l7]");
        let shared = Shared::default();
        shared.store(Snapshot::build(
            &l7,
            &Snapshot::default(),
            &Default::default(),
        ));
        shared
    })
}

fn conn(tls: bool) -> ConnInfo {
    let client = "192.0.2.7:40000".parse::<std::net::SocketAddr>().unwrap();
    ConnInfo {
        listener: "http".into(),
        client,
        tls,
        forwarding: ClientInfo::new(client.ip(), tls),
        metrics: Arc::new(ListenerMetrics::default()),
        max_body: 0,
    }
}

fn count(fields: &[httparse::Header<'_>], name: &str) -> usize {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case(name))
        .count()
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The upstream request written for `buf` (whose head is `head_len` bytes).
fn check_request(buf: &[u8], head_len: usize, out: &[u8]) {
    assert!(head_len <= buf.len());
    let mut in_fields = [httparse::EMPTY_HEADER; 64];
    let mut original = httparse::Request::new(&mut in_fields);
    assert_eq!(
        original.parse(buf),
        Ok(httparse::Status::Complete(head_len))
    );
    let mut out_fields = [httparse::EMPTY_HEADER; 80];
    let mut req = httparse::Request::new(&mut out_fields);
    match req.parse(out) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, out.len(), "bytes after the head"),
        other => panic!(
            "upstream head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(out)
        ),
    }
    assert_eq!(req.method, original.method);
    assert_eq!(req.path, original.path);
    assert_eq!(req.version, Some(1));
    let host: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("host"))
        .map(|f| f.value)
        .collect();
    let client_host: Vec<&[u8]> = original
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("host"))
        .map(|f| f.value)
        .collect();
    assert_eq!(host, client_host);
    assert_eq!(host.len(), 1);
    let named: Vec<&[u8]> = original
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .flat_map(|f| tokens(f.value))
        .collect();
    // The body's framing: one Content-Length as the client sent it, or chunked alone.
    let lengths = count(original.headers, "content-length");
    let codings = count(original.headers, "transfer-encoding");
    assert!(lengths + codings <= 1, "odd framing taken");
    assert_eq!(count(req.headers, "content-length"), lengths);
    assert_eq!(count(req.headers, "transfer-encoding"), codings);
    for f in req.headers.iter() {
        let name = f.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            assert!(f.value.eq_ignore_ascii_case(b"chunked"));
            continue;
        }
        assert!(
            !HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)),
            "hop-by-hop {name} forwarded"
        );
        assert!(
            name.eq_ignore_ascii_case("host")
                || name.eq_ignore_ascii_case("content-length")
                || !named
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name.as_bytes())),
            "{name} named by Connection forwarded"
        );
    }
    for f in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
        assert_eq!(count(req.headers, f), 1, "{f}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let info = conn(flags & 8 != 0);
    let shared = shared();
    let mut upstream = Vec::new();
    let (plan, response) = if flags & 1 == 0 {
        match prepare(bytes, &info, shared, &mut upstream) {
            Prep::Ready(plan) => {
                check_request(bytes, plan.head_len, &upstream);
                let rest = &bytes[plan.head_len..];
                (plan, rest)
            }
            Prep::Partial | Prep::Handoff => return,
        }
    } else {
        let method = if flags & 2 != 0 { "HEAD" } else { "GET" };
        let close = if flags & 4 != 0 {
            "Connection: close\r\n"
        } else {
            ""
        };
        let request = format!("{method} / HTTP/1.1\r\nHost: fuzz.example\r\n{close}\r\n");
        match prepare(request.as_bytes(), &info, shared, &mut upstream) {
            Prep::Ready(plan) => (plan, bytes),
            _ => panic!("the fixed request is not fast"),
        }
    };
    let mut to = Vec::new();
    let head = match rewrite_response_head(response, &plan, &mut to) {
        Ok(Some(head)) => head,
        Ok(None) | Err(_) => return,
    };
    assert!(head.len <= response.len());
    if (100..200).contains(&head.status) {
        assert_eq!(head.framing, Framing::None);
        return;
    }
    let mut fields = [httparse::EMPTY_HEADER; 160];
    let mut resp = httparse::Response::new(&mut fields);
    match resp.parse(&to) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, to.len(), "bytes after the head"),
        other => panic!(
            "client head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&to)
        ),
    }
    assert_eq!(resp.code, Some(head.status));
    assert_eq!(resp.version, Some(1));
    let lengths: Vec<&[u8]> = resp
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("content-length"))
        .map(|f| f.value)
        .collect();
    let te: Vec<&[u8]> = resp
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|f| f.value)
        .collect();
    let close = resp.headers.iter().any(|f| {
        f.name.eq_ignore_ascii_case("connection")
            && tokens(f.value).any(|t| t.eq_ignore_ascii_case(b"close"))
    });
    assert_eq!(count(resp.headers, "date").min(1), 1, "a Date");
    for f in resp.headers.iter() {
        let hop = HOP_BY_HOP.iter().any(|h| f.name.eq_ignore_ascii_case(h));
        let ours = (f.name == "transfer-encoding" && f.value == b"chunked")
            || (f.name == "connection" && f.value == b"close");
        assert!(!hop || ours, "hop-by-hop {} relayed", f.name);
    }
    assert_eq!(close, plan.client_close || head.framing == Framing::Close);
    assert!(!head.reusable || !matches!(head.framing, Framing::Close));
    match head.framing {
        Framing::None => assert!(plan.head_only || head.status == 204 || head.status == 304),
        Framing::Length(n) => {
            assert!(te.is_empty());
            assert!(!lengths.is_empty());
            for l in lengths {
                assert_eq!(
                    std::str::from_utf8(l).ok().and_then(|l| l.parse().ok()),
                    Some(n)
                );
            }
        }
        Framing::Chunked => {
            assert_eq!(te, [b"chunked"]);
            assert!(lengths.is_empty());
        }
        Framing::Close => {
            assert!(te.is_empty() && lengths.is_empty());
            assert!(!head.reusable);
        }
    }
});
