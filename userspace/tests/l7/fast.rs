//! The HTTP/1.1 fast path: the bytes it sends each way, the response framings it relays,
//! upstream keep-alive failures it recovers from, and the hand-over to the general path in
//! the middle of a connection.

use crate::harness::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The listener's fast-path request count, from the metrics text.
fn fast_count(p: &portier::l7::L7) -> u64 {
    metric(p, "portier_l7_listener_fast_path_requests_total")
}

fn reply(bytes: &'static [u8]) -> Reply {
    Arc::new(move |_: &[u8]| Action::Send(bytes.to_vec()))
}

#[tokio::test]
async fn plain_get_goes_byte_for_byte_both_ways() {
    let mut b = Backend::scripted(
        "b",
        reply(
            b"HTTP/1.1 200 Fine\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\nConnection: keep-alive, X-Hop\r\n\
              X-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: Yes\r\nContent-Length: 2\r\n\r\nhi",
        ),
    )
    .await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let r = exchange(
        addr,
        b"GET /a?b=c HTTP/1.1\r\nHost: Shop.Example\r\nConnection: keep-alive, X-Secret\r\n\
          X-Secret: s\r\nX-Forwarded-For: 192.0.2.7\r\nForwarded: for=192.0.2.7\r\nAccept: */*\r\n\r\n",
    )
    .await;
    assert_eq!(
        r,
        "HTTP/1.1 200 Fine\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\nX-Kept: Yes\r\n\
         Content-Length: 2\r\n\r\nhi"
    );
    assert_eq!(
        b.request().await,
        "GET /a?b=c HTTP/1.1\r\nHost: Shop.Example\r\nForwarded: for=192.0.2.7\r\nAccept: */*\r\n\
         X-Forwarded-For: 192.0.2.7, 127.0.0.1\r\nx-forwarded-proto: http\r\n\
         x-forwarded-host: Shop.Example\r\nforwarded: for=127.0.0.1;proto=http;host=Shop.Example\r\n\r\n"
    );
    assert_eq!(fast_count(&p), 1);
}

/// A pool's `forwarding` list on both HTTP/1 paths: the fields left out are neither added
/// nor replaced, whatever the client sent under their names goes on as it came.
#[tokio::test]
async fn only_the_pools_forwarding_fields_are_added() {
    let request = b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 192.0.2.7\r\n\
                    X-Forwarded-Proto: https\r\nX-Forwarded-Host: other.example\r\n\r\n";
    let fields = "forwarding = [\"x-forwarded-for\"]";
    // The fast path, and the general one (a hashed pool is handed over).
    for (pool_extra, fast) in [
        (fields.to_owned(), 1),
        (format!("{fields}\nbalance = \"hash-header:x-user\""), 0),
    ] {
        let mut b =
            Backend::scripted("b", reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
        let (p, addr) = proxy(&simple(&[&b], &pool_extra, ""));
        let r = exchange(addr, request).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let sent = b.request().await.to_ascii_lowercase();
        assert!(
            sent.contains("x-forwarded-for: 192.0.2.7, 127.0.0.1\r\n"),
            "{pool_extra}: {sent}"
        );
        assert!(
            sent.contains("x-forwarded-proto: https\r\n"),
            "{pool_extra}: {sent}"
        );
        assert!(
            sent.contains("x-forwarded-host: other.example\r\n"),
            "{pool_extra}: {sent}"
        );
        assert!(!sent.contains("forwarded: for="), "{pool_extra}: {sent}");
        assert_eq!(sent.matches("x-forwarded-proto").count(), 1, "{sent}");
        assert_eq!(fast_count(&p), fast, "{pool_extra}");
    }
}

#[tokio::test]
async fn chunked_response_and_its_trailers_are_relayed_unchanged() {
    let b = Backend::scripted(
        "b",
        reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: x\r\n\r\n\
              3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Sum: 9\r\n\r\n",
        ),
    )
    .await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    for _ in 0..2 {
        c.send(&get("x", "/")).await;
        assert_eq!(
            c.response().await,
            "HTTP/1.1 200 OK\r\nDate: x\r\ntransfer-encoding: chunked\r\n\r\n\
             3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Sum: 9\r\n\r\n"
        );
    }
    assert_eq!(fast_count(&p), 2);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn response_delimited_by_close_closes_the_client_connection() {
    let b = Backend::scripted(
        "b",
        Arc::new(|_: &[u8]| {
            Action::SendClose(b"HTTP/1.1 200 OK\r\nDate: x\r\n\r\nuntil the end".to_vec())
        }),
    )
    .await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    c.send(&get("x", "/")).await;
    assert_eq!(
        c.response().await,
        "HTTP/1.1 200 OK\r\nDate: x\r\nconnection: close\r\n\r\nuntil the end"
    );
    assert!(c.closed().await);
}

#[tokio::test]
async fn head_and_no_content_responses_have_no_body_and_keep_the_connection() {
    let b = Backend::scripted(
        "b",
        Arc::new(|req: &[u8]| {
            if req.starts_with(b"HEAD") {
                Action::Send(b"HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: 1000\r\n\r\n".to_vec())
            } else {
                Action::Send(b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n".to_vec())
            }
        }),
    )
    .await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // Read as a HEAD response: the head alone.
    let mut head = String::new();
    loop {
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(c.stream(), &mut line)
            .await
            .unwrap();
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: 1000\r\n\r\n"
    );
    c.send(&get("x", "/")).await;
    assert_eq!(
        c.response().await,
        "HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n"
    );
    assert_eq!(fast_count(&p), 2);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let b = Backend::scripted(
        "b",
        Arc::new(|req: &[u8]| {
            let path = String::from_utf8_lossy(req)
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            Action::Send(
                format!(
                    "HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: {}\r\n\r\n{path}",
                    path.len()
                )
                .into_bytes(),
            )
        }),
    )
    .await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    let mut both = get("x", "/first");
    both.extend_from_slice(&get("x", "/second"));
    c.send(&both).await;
    assert_eq!(body(&c.response().await), "/first");
    assert_eq!(body(&c.response().await), "/second");
    assert_eq!(fast_count(&p), 2);
}

#[tokio::test]
async fn a_request_the_fast_path_does_not_take_continues_on_the_general_path() {
    let mut b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    c.send(&get("x", "/one")).await;
    assert_eq!(body(&c.response().await), "b");
    // Two (equal) lengths: hyper takes over the connection, with the bytes already read.
    c.send(b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    assert_eq!(body(&c.response().await), "b");
    c.send(&get("x", "/three")).await;
    assert_eq!(body(&c.response().await), "b");
    assert!(b.request().await.starts_with("GET /one HTTP/1.1\r\n"));
    let post = b.request().await;
    assert!(post.starts_with("POST /two HTTP/1.1\r\n"), "{post}");
    assert!(post.ends_with("\r\n\r\nhello"), "{post}");
    assert!(b.request().await.starts_with("GET /three HTTP/1.1\r\n"));
    assert_eq!(fast_count(&p), 1);
}

#[tokio::test]
async fn a_kept_alive_connection_the_backend_closed_is_replaced() {
    // The backend answers without announcing a close, then closes: the idle connection the
    // proxy kept is dead when the next request comes.
    let b = Backend::scripted("b", Arc::new(|_: &[u8]| Action::SendClose(ok("b")))).await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    for _ in 0..3 {
        assert_eq!(status(&exchange(addr, &get("x", "/")).await), 200);
    }
    assert_eq!(b.connections.load(Ordering::SeqCst), 3);
    assert_eq!(fast_count(&p), 3);
    assert!(
        p.metrics()
            .contains("portier_l7_pool_upstream_errors_total{pool=\"p\"} 0"),
        "{}",
        p.metrics()
    );
}

#[tokio::test]
async fn interim_responses_are_dropped_and_the_final_one_relayed() {
    let b = Backend::scripted(
        "b",
        reply(
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: 2\r\n\r\nok",
        ),
    )
    .await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    assert_eq!(
        exchange(addr, &get("x", "/")).await,
        "HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: 2\r\n\r\nok"
    );
}

#[tokio::test]
async fn a_response_without_date_gets_one() {
    let b = Backend::scripted("b", reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    let r = exchange(addr, &get("x", "/")).await;
    let date = r
        .lines()
        .find_map(|l| l.strip_prefix("date: "))
        .expect("date added");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
}

#[tokio::test]
async fn bad_response_framing_is_a_502_and_is_counted() {
    for bad in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"NOT HTTP\r\n\r\n",
    ] {
        let b = Backend::scripted("b", reply(bad)).await;
        let (p, addr) = proxy(&simple(&[&b], "retries = 0", ""));
        let r = exchange(addr, &get("x", "/")).await;
        assert_eq!(status(&r), 502, "{}: {r}", String::from_utf8_lossy(bad));
        assert!(
            p.metrics()
                .contains("portier_l7_pool_upstream_errors_total{pool=\"p\"} 1"),
            "{}",
            p.metrics()
        );
    }
}

#[tokio::test]
async fn a_malformed_chunked_body_cuts_the_client_connection() {
    let b = Backend::scripted(
        "b",
        reply(
            b"HTTP/1.1 200 OK\r\nDate: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc\r\nzz\r\n",
        ),
    )
    .await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    c.send(&get("x", "/")).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(c.stream(), &mut got),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "connection not closed"
    );
    let text = String::from_utf8_lossy(&got);
    // The client sees a truncated chunked body and a closed connection, never a message end.
    assert!(!text.ends_with("0\r\n\r\n"), "{text}");
}

#[tokio::test]
async fn a_client_asking_to_close_gets_its_answer_then_the_close() {
    let b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let r = c.response().await;
    assert!(r.contains("\r\nconnection: close\r\n"), "{r}");
    assert_eq!(body(&r), "b");
    assert!(c.closed().await);
    assert_eq!(fast_count(&p), 1);
}

#[tokio::test]
async fn odd_request_targets_are_left_to_the_general_path() {
    let mut b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let r = exchange(addr, b"GET /a{b} HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // Whatever the general path decides, the fast path did not forward it.
    assert_eq!(fast_count(&p), 0);
    if status(&r) == 200 {
        assert!(b.request().await.starts_with("GET /a{b} HTTP/1.1\r\n"));
    }
}

#[tokio::test]
async fn the_fast_and_general_paths_share_upstream_connections() {
    let mut b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    // A connection comes back to the idle list just after its response has gone out: each
    // request waits for that, so a second connection could only come from not sharing.
    let idle_again = || async {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !p.metrics().contains(&format!(
            "portier_l7_server_idle_connections{{pool=\"p\",server=\"{}\"}} 1",
            b.addr
        )) {
            assert!(tokio::time::Instant::now() < deadline, "{}", p.metrics());
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    };
    for round in 0..3 {
        assert_eq!(
            status(&exchange(addr, &get("x", "/")).await),
            200,
            "{round}"
        );
        idle_again().await;
        // Two equal lengths: a request the fast path leaves to the general path.
        let post =
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(status(&exchange(addr, post).await), 200, "{round}");
        idle_again().await;
    }
    assert_eq!(b.drain(), 6);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
    assert_eq!(fast_count(&p), 3);
}

/// A server's failure count, from the metrics text.
fn server_failures(p: &portier::l7::L7, b: &Backend) -> u64 {
    let key = format!(
        "portier_l7_server_failures_total{{pool=\"p\",server=\"{}\"}} ",
        b.addr
    );
    p.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&key)?.parse().ok())
        .expect("server failure counter")
}

#[tokio::test]
async fn a_body_by_length_goes_byte_for_byte_and_the_connection_stays_open() {
    let mut b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    // The body comes in three pieces after the head; the next request is pipelined
    // right behind its last byte.
    c.send(
        b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\n",
    )
    .await;
    c.send(b"hel").await;
    c.send(b"lo ").await;
    c.send(b"worldGET /next HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(body(&c.response().await), "b");
    assert_eq!(body(&c.response().await), "b");
    assert_eq!(
        b.request().await,
        "POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\
         x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: x\r\n\
         forwarded: for=127.0.0.1;proto=http;host=x\r\n\r\nhello world"
    );
    assert!(b.request().await.starts_with("GET /next HTTP/1.1\r\n"));
    assert_eq!(fast_count(&p), 2);
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_chunked_body_is_relayed_as_sent_with_its_extensions_and_trailers() {
    let mut b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    c.send(b"PUT /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;ext=1\r\nhel")
        .await;
    c.send(b"lo\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n").await;
    assert_eq!(body(&c.response().await), "b");
    assert_eq!(
        b.request().await,
        "PUT /f HTTP/1.1\r\nHost: x\r\nTrailer: X-Sum\r\ntransfer-encoding: chunked\r\n\
         x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: x\r\n\
         forwarded: for=127.0.0.1;proto=http;host=x\r\n\r\n\
         5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n"
    );
    // Kept alive after the body's exact end.
    c.send(&get("x", "/again")).await;
    assert_eq!(body(&c.response().await), "b");
    assert_eq!(fast_count(&p), 2);
}

#[tokio::test]
async fn expect_100_continue_gets_100_before_the_body_is_read() {
    let mut b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .await;
    assert_eq!(c.response().await, "HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"data").await;
    assert_eq!(body(&c.response().await), "b");
    let got = b.request().await;
    assert!(got.contains("\r\nExpect: 100-continue\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\ndata"), "{got}");
    assert_eq!(fast_count(&p), 1);
}

#[tokio::test]
async fn a_bad_chunk_size_is_400_reaches_no_server_and_is_not_its_fault() {
    for (first, rest) in [
        // At the start: nothing is sent upstream.
        (&b"zz\r\nhello\r\n0\r\n\r\n"[..], &b""[..]),
        // After a good chunk, in a later read: the upstream connection is dropped.
        (b"5\r\nhello\r\n", b"-1\r\nx\r\n0\r\n\r\n"),
        // Sizes beyond any sane chunk.
        (b"1000000000000000\r\n", b""),
    ] {
        let mut b = Backend::named("b").await;
        let (p, addr) = proxy(&simple(&[&b], "", ""));
        let mut c = Client::connect(addr).await;
        let mut req =
            b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(first);
        c.send(&req).await;
        if !rest.is_empty() {
            c.send(rest).await;
        }
        let r = c.response().await;
        assert_eq!(status(&r), 400, "{r}");
        assert!(r.contains("\r\nconnection: close\r\n"), "{r}");
        assert!(c.closed().await);
        b.no_request().await;
        assert_eq!(fast_count(&p), 1);
        assert_eq!(server_failures(&p, &b), 0);
    }
}

#[tokio::test]
async fn odd_framing_is_left_to_the_general_path() {
    let mut b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    // Differing lengths: 400 from the general path.
    let r = exchange(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    )
    .await;
    assert_eq!(status(&r), 400, "{r}");
    // Both framings (a smuggling shape): chunked wins and the connection closes there.
    let mut c = Client::connect(addr).await;
    c.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(status(&c.response().await), 200);
    assert!(c.closed().await);
    let got = b.request().await;
    assert!(
        !got.to_ascii_lowercase().contains("content-length"),
        "{got}"
    );
    b.no_request().await;
    // Another coding, a sign: the general path's 400.
    for framing in ["Transfer-Encoding: gzip", "Content-Length: +3"] {
        let req = format!("POST / HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\nabc");
        let r = exchange(addr, req.as_bytes()).await;
        assert_eq!(status(&r), 400, "{framing}: {r}");
    }
    assert_eq!(fast_count(&p), 0);
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_413_on_both_paths() {
    let mut b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(&[&b], "", "max_body_bytes = 10"));
    // At the limit: forwarded.
    let r = exchange(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789",
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    b.request().await;
    // Declared over it: refused before any server (by the general path).
    let mut c = Client::connect(addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n0123456789a")
        .await;
    assert_eq!(status(&c.response().await), 413);
    assert!(c.closed().await);
    b.no_request().await;
    // Chunked, growing past it in its second chunk: refused at that chunk's size line.
    let mut c = Client::connect(addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n")
        .await;
    c.send(b"5\r\n6789a\r\n0\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(status(&r), 413, "{r}");
    assert!(c.closed().await);
    assert_eq!(fast_count(&p), 2);
    assert_eq!(server_failures(&p, &b), 0);
    // The general path's own limit on a chunked body (a total timeout keeps it there).
    let mut g = Backend::named("g").await;
    let (_q, addr) = proxy(&simple(
        &[&g],
        "total_timeout_ms = 30000",
        "max_body_bytes = 10",
    ));
    let mut c = Client::connect(addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n5\r\n6789a\r\n0\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!(status(&r), 413, "{r}");
    g.no_request().await;
}

#[tokio::test]
async fn a_request_whose_body_was_partly_sent_is_never_retried() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The first server reads the head and part of the body, then closes; retries are on and
    // the second server is healthy, yet the request must not reach it: what the client sent
    // of the body is gone.
    let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first_addr = first.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = first.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(6).any(|w| w == b"\r\n\r\nab") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
        drop(s);
        got
    });
    let mut second = Backend::named("second").await;
    let l7 = format!(
        "[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n\
         [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
         [[l7.pool]]\nname = \"p\"\nbalance = \"round-robin\"\nretries = 1\neject_after = 0\n\
         servers = [{{ address = \"{first_addr}\" }}, {{ address = \"{}\" }}]\n",
        second.addr
    );
    let (p, addr) = proxy(&l7);
    let mut c = Client::connect(addr).await;
    c.send(b"PUT /doc HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab")
        .await;
    let got = reader.await.unwrap();
    assert!(got.starts_with(b"PUT /doc HTTP/1.1\r\n"));
    // The rest of the body, sent after the server has gone.
    let _ = c.stream().get_mut().write_all(b"cdef").await;
    let r = c.response().await;
    assert_eq!(status(&r), 502, "{r}");
    assert!(c.closed().await);
    second.no_request().await;
    assert_eq!(fast_count(&p), 1);
}

#[tokio::test]
async fn a_stalled_upload_on_the_fast_path_is_408_and_not_the_servers_fault() {
    let mut b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(
        &[&b],
        "response_timeout_ms = 100\neject_after = 1\nretries = 0",
        "client_timeout_ms = 300",
    ));
    let mut c = Client::connect(addr).await;
    c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .await;
    let r = c.response().await;
    assert!(r.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{r}");
    assert!(c.closed().await);
    assert_eq!(fast_count(&p), 1);
    assert_eq!(server_failures(&p, &b), 0);
    // Not ejected: the next request is served.
    assert_eq!(status(&exchange(addr, &get("x", "/")).await), 200);
    b.drain();
}

/// Segments the client received without data (the SYN-ACK and pure ACKs), from TCP_INFO.
fn bare_segments_in(s: &tokio::net::TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain integers; the kernel fills at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_segs_in - info.tcpi_data_segs_in
}

/// Listening sockets start their connections without quick ACKs, as HAProxy's HTTP
/// frontends do: the ACK of a whole request rides on its response instead of coming as a
/// segment of its own. The kernel's delayed-ACK timer (40 ms) still sends one when the
/// answer takes longer (a busy machine), so one connection in five suffices; with quick
/// ACKs every connection gets one.
#[tokio::test]
async fn a_whole_requests_ack_rides_on_its_response() {
    let b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    let mut bare = Vec::new();
    for _ in 0..5 {
        let mut c = Client::connect(addr).await;
        c.send(&get("x", "/")).await;
        let r = c.response().await;
        assert_eq!(status(&r), 200, "{r}");
        let n = bare_segments_in(c.stream().get_ref());
        if n == 1 {
            return; // the SYN-ACK alone
        }
        bare.push(n);
    }
    panic!("each request was acknowledged apart from its response: {bare:?} bare segments");
}

/// A request not whole in its first segment is acknowledged at once, its head or its body:
/// a client with Nagle's algorithm on (no TCP_NODELAY, as Python's http.client) holds the
/// rest until then, and would otherwise wait for the kernel's delayed-ACK timer, which
/// fires 40 ms after the bytes at the earliest. So an exchange under 30 ms shows the ACK
/// came at once; one in five suffices (a busy machine may delay one), and without the ACK
/// none can be.
#[tokio::test]
async fn an_incomplete_request_is_acknowledged_at_once() {
    let b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(&[&b], "", ""));
    let cases: [(&[u8], &[u8]); 2] = [
        (b"GET / HTTP/1.1\r\nHo", b"st: x\r\n\r\n"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n",
            b"body",
        ),
    ];
    for (first, rest) in cases {
        let mut took = Vec::new();
        for _ in 0..5 {
            let mut c = Client::connect(addr).await;
            assert!(!c.stream().get_ref().nodelay().unwrap());
            let start = std::time::Instant::now();
            c.send(first).await;
            // Held by Nagle until `first` is acknowledged.
            c.send(rest).await;
            let r = c.response().await;
            assert_eq!(status(&r), 200, "{r}");
            took.push(start.elapsed());
            if start.elapsed() < std::time::Duration::from_millis(30) {
                break;
            }
        }
        assert!(
            took.last()
                .is_some_and(|t| *t < std::time::Duration::from_millis(30)),
            "{:?} then {:?}: {took:?}",
            String::from_utf8_lossy(first),
            String::from_utf8_lossy(rest)
        );
    }
}
