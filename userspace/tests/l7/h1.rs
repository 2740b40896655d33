//! HTTP/1.x downstream: routing, exact request bytes upstream, header rewriting, framing
//! defences, limits, upgrades, 100-continue, trailers, PROXY v2, reload and shutdown.

use crate::harness::*;
use std::sync::Arc;
use std::time::Duration;

fn routes(
    todo: &Backend,
    shop: &Backend,
    api: &Backend,
    fallback: &Backend,
    extra: &str,
) -> String {
    format!(
        r#"[[l7.listener]]
name = "http"
bind = "127.0.0.1:0"
{extra}

[[l7.route]]
host = "todo.example"
pool = "todo"

[[l7.route]]
host = "todo.example"
path_prefix = "/api"
pool = "api"

[[l7.route]]
host = "*.shop.example"
pool = "shop"

[[l7.route]]
host = "*"
pool = "fallback"

[[l7.pool]]
name = "todo"
servers = [{{ address = "{}" }}]

[[l7.pool]]
name = "api"
servers = [{{ address = "{}" }}]

[[l7.pool]]
name = "shop"
servers = [{{ address = "{}" }}]

[[l7.pool]]
name = "fallback"
servers = [{{ address = "{}" }}]
"#,
        todo.addr, api.addr, shop.addr, fallback.addr
    )
}

#[tokio::test]
async fn routes_by_host_and_path_most_specific_first() {
    let mut todo = Backend::named("todo").await;
    let mut shop = Backend::named("shop").await;
    let mut api = Backend::named("api").await;
    let mut fallback = Backend::named("fallback").await;
    let (_p, addr) = proxy(&routes(&todo, &shop, &api, &fallback, ""));
    for (host, path, want) in [
        ("todo.example", "/", "todo"),
        ("TODO.example:80", "/x", "todo"),
        ("todo.example.", "/api", "api"),
        ("todo.example", "/api/items?x=1", "api"),
        ("todo.example", "/apix", "todo"),
        ("cart.shop.example:8080", "/", "shop"),
        ("a.b.shop.example", "/", "shop"),
        ("shop.example", "/", "fallback"),
        ("10.1.2.3", "/", "fallback"),
        ("[2001:db8::1]:80", "/", "fallback"),
    ] {
        let r = exchange(addr, &get(host, path)).await;
        assert_eq!(status(&r), 200, "{host}{path}: {r}");
        assert_eq!(body(&r), want, "{host}{path}");
    }
    let total = todo.drain() + shop.drain() + api.drain() + fallback.drain();
    assert_eq!(total, 10);
}

/// `/x/../api` must reach the `/api` route's pool, and the backend must see the path it was
/// routed by: routing on the raw path would let a `/public` route carry `/public/../admin`.
#[tokio::test]
async fn dot_segments_and_encoded_slashes_route_as_the_backend_resolves_them() {
    let mut todo = Backend::named("todo").await;
    let shop = Backend::named("shop").await;
    let mut api = Backend::named("api").await;
    let fallback = Backend::named("fallback").await;
    let (_p, addr) = proxy(&routes(&todo, &shop, &api, &fallback, ""));
    for (path, want, at_backend) in [
        ("/x/../api/items?q=1", "api", "/api/items?q=1"),
        ("/x/%2e%2e/api", "api", "/api"),
        ("/x%2F..%2Fapi", "api", "/api"),
        ("//api/items", "api", "/api/items"),
        ("/./api/./items", "api", "/api/items"),
        ("/api/../x", "todo", "/x"),
        ("/api/../../../x", "todo", "/x"),
        ("/%61pi", "api", "/api"),
    ] {
        let r = exchange(addr, &get("todo.example", path)).await;
        assert_eq!(status(&r), 200, "{path}: {r}");
        assert_eq!(body(&r), want, "{path}");
        let seen = if want == "api" {
            api.request().await
        } else {
            todo.request().await
        };
        assert!(
            seen.starts_with(&format!("GET {at_backend} HTTP/1.1\r\n")),
            "{path}: {seen}"
        );
    }
    // Normal paths go out byte for byte (the fast path), queries untouched.
    let r = exchange(addr, &get("todo.example", "/api/a.b/c..d?x=/../y")).await;
    assert_eq!(body(&r), "api", "{r}");
    assert!(
        api.request()
            .await
            .starts_with("GET /api/a.b/c..d?x=/../y HTTP/1.1\r\n")
    );
}

#[tokio::test]
async fn exact_request_bytes_at_the_backend() {
    let mut b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    let r = exchange(
        addr,
        b"GET /a/b?c=d HTTP/1.1\r\n\
          Host: Todo.Example:80\r\n\
          User-Agent: conformance\r\n\
          Connection: keep-alive, X-Private\r\n\
          X-Private: secret\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          TE: trailers\r\n\
          Upgrade: h2c\r\n\
          X-Forwarded-For: 192.0.2.1\r\n\
          Accept: */*\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 200);
    assert_eq!(
        b.request().await,
        "GET /a/b?c=d HTTP/1.1\r\n\
         Host: Todo.Example:80\r\n\
         User-Agent: conformance\r\n\
         Accept: */*\r\n\
         X-Forwarded-For: 192.0.2.1, 127.0.0.1\r\n\
         x-forwarded-proto: http\r\n\
         x-forwarded-host: Todo.Example:80\r\n\
         forwarded: for=127.0.0.1;proto=http;host=\"Todo.Example:80\"\r\n\
         TE: trailers\r\n\r\n"
    );
}

#[tokio::test]
async fn absolute_form_target_overrides_host() {
    let mut todo = Backend::named("todo").await;
    let mut shop = Backend::named("shop").await;
    let mut api = Backend::named("api").await;
    let mut fallback = Backend::named("fallback").await;
    let (_p, addr) = proxy(&routes(&todo, &shop, &api, &fallback, ""));
    let r = exchange(
        addr,
        b"GET http://todo.example:80/api/x?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n",
    )
    .await;
    assert_eq!(body(&r), "api", "{r}");
    assert_eq!(
        api.request().await,
        "GET /api/x?q=1 HTTP/1.1\r\nHost: todo.example:80\r\nx-forwarded-for: 127.0.0.1\r\n\
         x-forwarded-proto: http\r\nx-forwarded-host: todo.example:80\r\n\
         forwarded: for=127.0.0.1;proto=http;host=\"todo.example:80\"\r\n\r\n"
    );
    assert_eq!(todo.drain() + shop.drain() + fallback.drain(), 0);
}

#[tokio::test]
async fn http10_client_gets_http11_upstream_and_a_closed_connection() {
    let mut b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    c.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let r = c.response().await;
    assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
    assert_eq!(body(&r), "b");
    assert!(c.closed().await);
    assert_eq!(
        b.request().await,
        "GET / HTTP/1.1\r\nHost: x\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\
         x-forwarded-host: x\r\nforwarded: for=127.0.0.1;proto=http;host=x\r\n\r\n"
    );
}

#[tokio::test]
async fn response_hop_by_hop_fields_are_stripped() {
    let reply = Arc::new(|_: &[u8]| {
        Action::Send(
            b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=9\r\n\
              X-Public: 2\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    });
    let b = Backend::scripted("b", reply).await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    let r = exchange(addr, &get("x", "/")).await;
    assert!(
        r.contains("X-Public: 2\r\n") || r.contains("x-public: 2\r\n"),
        "{r}"
    );
    assert!(!r.to_ascii_lowercase().contains("x-internal"), "{r}");
    assert!(
        !r.to_ascii_lowercase().contains("keep-alive: timeout"),
        "{r}"
    );
}

#[tokio::test]
async fn bad_hosts_get_400_and_reach_no_backend() {
    let mut b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    for req in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ] {
        let r = exchange(addr, req).await;
        assert_eq!(status(&r), 400, "{}: {r}", String::from_utf8_lossy(req));
    }
    b.no_request().await;
}

#[tokio::test]
async fn no_route_status_is_configurable() {
    let todo = Backend::named("todo").await;
    let cfg = |status: &str| {
        format!(
            "[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n{status}\n\
             [[l7.route]]\nhost = \"todo.example\"\npool = \"todo\"\n\
             [[l7.pool]]\nname = \"todo\"\nservers = [{{ address = \"{}\" }}]\n",
            todo.addr
        )
    };
    let (_p, addr) = proxy(&cfg(""));
    assert_eq!(
        status(&exchange(addr, &get("other.example", "/")).await),
        404
    );
    let (_p, addr) = proxy(&cfg("no_route_status = 421"));
    let r = exchange(addr, &get("other.example", "/")).await;
    assert!(r.starts_with("HTTP/1.1 421 Misdirected Request\r\n"), "{r}");
    assert_eq!(
        status(&exchange(addr, &get("todo.example", "/")).await),
        200
    );
}

#[tokio::test]
async fn content_length_body_is_forwarded_exactly() {
    let mut b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    let r = exchange(
        addr,
        b"POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(status(&r), 200);
    assert_eq!(
        b.request().await,
        "POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nx-forwarded-for: 127.0.0.1\r\n\
         x-forwarded-proto: http\r\nx-forwarded-host: x\r\n\
         forwarded: for=127.0.0.1;proto=http;host=x\r\n\r\nhello"
    );
}

#[tokio::test]
async fn chunked_body_with_trailers_is_rechunked() {
    let mut b = Backend::named("b").await;
    // A total timeout keeps the request on the general path (the fast path relays chunks as
    // they came: tests/l7/fast.rs).
    let (_p, addr) = proxy(&simple(&[&b], "total_timeout_ms = 30000", ""));
    let r = exchange(
        addr,
        b"POST /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    let got = b.request().await;
    assert!(
        got.starts_with(
            "POST /f HTTP/1.1\r\nHost: x\r\nTrailer: X-Sum\r\nx-forwarded-for: 127.0.0.1\r\n"
        ),
        "{got}"
    );
    assert!(got.contains("\r\nTransfer-Encoding: chunked\r\n"), "{got}");
    // Chunk extensions are dropped, the data re-chunked as read.
    assert!(
        got.ends_with("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n"),
        "{got:?}"
    );
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_framed_as_chunked_then_closed() {
    // RFC 9112 6.3: Transfer-Encoding overrides Content-Length, and the connection must be
    // closed after the response so a smuggled second request is never read from it.
    let mut b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    c.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let r = c.response().await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(c.closed().await, "connection kept open after CL+TE");
    let got = b.request().await;
    assert!(
        !got.to_ascii_lowercase().contains("content-length"),
        "{got}"
    );
    assert!(got.ends_with("\r\n\r\n"), "{got:?}");
    assert!(got.starts_with("POST / HTTP/1.1\r\n"), "{got}");
    b.no_request().await;
}

#[tokio::test]
async fn conflicting_lengths_and_bad_chunks_are_refused() {
    let mut b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    for req in [
        &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let r = exchange(addr, req).await;
        assert_eq!(status(&r), 400, "{}: {r}", String::from_utf8_lossy(req));
    }
    b.no_request().await;

    // Duplicate equal lengths are one length (RFC 9110 8.6); the backend sees it once.
    let r = exchange(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(status(&r), 200);
    let got = b.request().await;
    assert_eq!(got.matches("Content-Length: 3").count(), 1, "{got}");

    // A bad chunk size: the backend never gets a complete request.
    let mut c = Client::connect(addr).await;
    c.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(c.stream(), &mut buf),
    )
    .await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    b.no_request().await;
    // The client's broken body is not the server's failure: a few such requests must not
    // eject a healthy server.
    let metrics = p.metrics();
    assert!(
        metrics.contains(&format!(
            "portier_l7_server_failures_total{{pool=\"p\",server=\"{}\"}} 0\n",
            b.addr
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("portier_l7_pool_upstream_errors_total{pool=\"p\"} 0\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let mut b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(&[&b], "", "max_header_bytes = 8192"));
    let big = "a".repeat(9000);
    let r = exchange(
        addr,
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&r), 431, "{r}");
    b.no_request().await;
    // Just under the limit passes.
    let ok = "a".repeat(7000);
    let r = exchange(
        addr,
        format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {ok}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&r), 200);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let mut b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(&[&b], "", "header_timeout_ms = 300"));
    let mut c = Client::connect(addr).await;
    let start = std::time::Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n").await;
    // One more byte now and then, never the end of the head (slowloris).
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.send(b"X-A: b\r\n").await;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(c.stream(), &mut buf),
    )
    .await;
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(elapsed >= Duration::from_millis(280), "{elapsed:?}");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    b.no_request().await;
}

#[tokio::test]
async fn listener_connection_limit_queues_new_clients() {
    let b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(&[&b], "", "max_connections = 2"));
    let mut c1 = Client::connect(addr).await;
    let mut c2 = Client::connect(addr).await;
    c1.send(&get("x", "/")).await;
    c2.send(&get("x", "/")).await;
    assert_eq!(status(&c1.response().await), 200);
    assert_eq!(status(&c2.response().await), 200);
    // The third connects (kernel backlog) but is not served while two are open.
    let mut c3 = Client::connect(addr).await;
    c3.send(&get("x", "/")).await;
    let mut buf = [0u8; 16];
    let early = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::io::AsyncReadExt::read(c3.stream(), &mut buf),
    )
    .await;
    assert!(early.is_err(), "third connection served beyond the limit");
    drop(c1);
    assert_eq!(status(&c3.response().await), 200);
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let reply = Arc::new(|req: &[u8]| {
        let text = String::from_utf8_lossy(req).to_ascii_lowercase();
        if text.contains("upgrade: websocket") && text.contains("connection: upgrade") {
            Action::Echo(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Action::Send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec())
        }
    });
    let mut b = Backend::scripted("b", reply).await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    c.send(
        b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    let r = c.response().await;
    assert!(r.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{r}");
    assert!(r.contains("upgrade: websocket\r\n"), "{r}");
    assert!(r.contains("connection: upgrade\r\n"), "{r}");
    let got = b.request().await;
    assert_eq!(
        got,
        "GET /chat HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\
         x-forwarded-host: x\r\nforwarded: for=127.0.0.1;proto=http;host=x\r\n\
         Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
    // Bytes after the switch flow both ways untouched.
    c.send(b"\x81\x05hello").await;
    let mut echo = [0u8; 7];
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_exact(c.stream(), &mut echo),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&echo, b"\x81\x05hello");
}

#[tokio::test]
async fn expect_100_continue_is_relayed() {
    let reply = Arc::new(|_: &[u8]| Action::Send(ok("b")));
    let mut b = Backend::scripted("b", reply).await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    c.send(b"PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .await;
    let interim = c.response().await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"data").await;
    let r = c.response().await;
    assert_eq!(status(&r), 200);
    let got = b.request().await;
    assert!(got.contains("Expect: 100-continue\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\ndata"), "{got:?}");
}

#[tokio::test]
async fn response_trailers_reach_a_client_that_accepts_them() {
    let reply = Arc::new(|_: &[u8]| {
        Action::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
              2\r\nok\r\n0\r\nX-Checksum: 7\r\n\r\n"
                .to_vec(),
        )
    });
    let mut b = Backend::scripted("b", reply).await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    let r = exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n").await;
    assert!(
        r.ends_with("2\r\nok\r\n0\r\nx-checksum: 7\r\n\r\n"),
        "{r:?}"
    );
    assert!(b.request().await.contains("\r\nTE: trailers\r\n"));
}

/// A PROXY v2 header naming client 198.51.100.10:41000, then `GET /`.
fn proxied_get() -> Vec<u8> {
    let mut bytes = portier::l7::proxy_protocol::encode(
        "198.51.100.10:41000".parse().unwrap(),
        "203.0.113.10:80".parse().unwrap(),
    );
    bytes.extend_from_slice(&get("x", "/"));
    bytes
}

#[tokio::test]
async fn proxy_protocol_v2_names_the_client() {
    let mut b = Backend::named("b").await;
    let listener = "proxy_protocol = true\nproxy_from = [\"127.0.0.0/8\"]";
    let (_p, addr) = proxy(&simple(&[&b], "", listener));
    let mut c = Client::connect(addr).await;
    c.send(&proxied_get()).await;
    assert_eq!(status(&c.response().await), 200);
    let got = b.request().await;
    assert!(got.contains("x-forwarded-for: 198.51.100.10\r\n"), "{got}");
    assert!(got.contains("forwarded: for=198.51.100.10;"), "{got}");
    // Without the header the connection is dropped unanswered.
    let mut c = Client::connect(addr).await;
    c.send(&get("x", "/")).await;
    assert!(c.closed().await);
    b.no_request().await;
}

#[tokio::test]
async fn proxy_protocol_only_from_proxy_from() {
    let mut b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(
        &[&b],
        "",
        "proxy_protocol = true\nproxy_from = [\"192.0.2.0/24\", \"::1/128\"]",
    ));
    // A well-formed header from a peer that may not send one: closed unread, counted.
    let mut c = Client::connect(addr).await;
    c.send(&proxied_get()).await;
    assert!(c.closed().await);
    b.no_request().await;
    let metrics = p.metrics();
    assert!(
        metrics.contains("portier_l7_listener_proxy_protocol_refused_total{listener=\"http\"} 1"),
        "{metrics}"
    );
}

#[test]
fn proxy_protocol_without_proxy_from_is_refused_by_the_config() {
    let e = portier::config::parse(
        "[node]\nname = \"h\"\n[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\nproxy_protocol = true\n",
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("l7.listener[0].proxy_from") && e.contains("needs proxy_from"),
        "{e}"
    );
}

#[tokio::test]
async fn reload_adds_a_host_without_dropping_the_connection() {
    let todo = Backend::named("todo").await;
    let shop = Backend::named("shop").await;
    let cfg = |with_shop: bool| {
        let shop_route = if with_shop {
            format!(
                "[[l7.route]]\nhost = \"shop.example\"\npool = \"shop\"\n\
                 [[l7.pool]]\nname = \"shop\"\nservers = [{{ address = \"{}\" }}]\n",
                shop.addr
            )
        } else {
            String::new()
        };
        format!(
            "[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n\
             [[l7.route]]\nhost = \"todo.example\"\npool = \"todo\"\n\
             [[l7.pool]]\nname = \"todo\"\nservers = [{{ address = \"{}\" }}]\n{shop_route}",
            todo.addr
        )
    };
    let (mut p, addr) = proxy(&cfg(false));
    let mut c = Client::connect(addr).await;
    c.send(&get("shop.example", "/")).await;
    assert_eq!(status(&c.response().await), 404);
    reconfigure(&mut p, &cfg(true));
    assert_eq!(p.local_addr("http"), Some(addr), "listener was rebound");
    c.send(&get("shop.example", "/")).await;
    let r = c.response().await;
    assert_eq!(body(&r), "shop");
    c.send(&get("todo.example", "/")).await;
    assert_eq!(body(&c.response().await), "todo");
    assert!(p.metrics().contains(
        "portier_l7_route_requests_total{host=\"shop.example\",path=\"/\",pool=\"shop\"} 1\n"
    ));
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let reply = Arc::new(|_: &[u8]| Action::Delay(Duration::from_millis(300), ok("slow")));
    let mut b = Backend::scripted("slow", reply).await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    c.send(&get("x", "/")).await;
    // Shut down once the request is at the backend, i.e. in flight.
    b.request().await;
    let shutdown = tokio::spawn(p.shutdown());
    let r = c.response().await;
    assert_eq!(body(&r), "slow");
    tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Collects what the tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn access_log_is_one_structured_line_per_request() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_env_filter("portier::access=info")
        .finish();
    // Thread-local: this test's runtime is single-threaded, so the proxy logs here.
    let _guard = tracing::subscriber::set_default(subscriber);
    let b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(&[&b], "", "access_log = true"));
    assert_eq!(
        status(&exchange(addr, &get("todo.example", "/a?secret=1")).await),
        200
    );
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    for field in [
        "listener=http",
        "method=GET",
        "host=\"todo.example\"",
        "path=\"/a\"",
        "status=200",
        "pool=p",
    ] {
        assert!(lines[0].contains(field), "{field} not in {}", lines[0]);
    }
    // The query string is not logged.
    assert!(!lines[0].contains("secret"), "{}", lines[0]);
}
