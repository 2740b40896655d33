//! Long bodies by length on plain connections move with splice(2): every byte arrives once
//! and in order, the connections stay usable at the body's exact end, and a body cut short
//! (by the server or the client) closes the connection rather than leaving it short.

use crate::harness::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn spliced(p: &portier::l7::L7) -> u64 {
    p.metrics()
        .lines()
        .find_map(|l| {
            l.strip_prefix("portier_l7_listener_spliced_bytes_total{listener=\"http\"} ")?
                .parse()
                .ok()
        })
        .expect("spliced bytes counter")
}

/// `len` bytes no two of whose 4-byte windows at different offsets below 2^24 agree, tagged
/// by `seed`: a lost, repeated or moved piece changes what arrives.
fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .flat_map(|i| (i ^ seed.rotate_left(24)).to_le_bytes())
        .take(len)
        .collect()
}

fn response(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The body of the request for `/N` is `pattern(N, N)`.
fn sized() -> Reply {
    Arc::new(|req: &[u8]| {
        let text = String::from_utf8_lossy(&req[..req.len().min(64)]);
        let n: usize = text
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.trim_start_matches('/').parse().ok())
            .unwrap_or(0);
        Action::Send(response(&pattern(n as u32, n)))
    })
}

/// `data` as chunks of `piece` bytes; `last`: with the final, empty chunk.
fn chunked_body(data: &[u8], piece: usize, last: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for p in data.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    if last {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    out
}

fn no_server_failures(p: &portier::l7::L7) -> bool {
    p.metrics()
        .lines()
        .any(|l| l.starts_with("portier_l7_server_failures_total") && l.ends_with(" 0"))
}

async fn raw_response(c: &mut Client) -> Vec<u8> {
    tokio::time::timeout(WAIT, read_message(c.stream(), true))
        .await
        .expect("no response in time")
        .expect("connection closed before a response")
}

#[tokio::test]
async fn long_response_bodies_arrive_whole_and_in_order_on_one_kept_connection() {
    let mut b = Backend::scripted("b", sized()).await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    // Around the thresholds, above the pipe's size, and a megabyte and a bit.
    let sizes = [
        1000, 24_000, 40_000, 40_961, 65_536, 100_001, 262_144, 300_000, 1_048_583,
    ];
    for n in sizes {
        c.send(&get("x", &format!("/{n}"))).await;
        let r = raw_response(&mut c).await;
        assert!(r == response(&pattern(n as u32, n)), "size {n}");
    }
    // Pipelined: each body ends exactly where the next response starts.
    let mut all = Vec::new();
    for n in sizes {
        all.extend_from_slice(&get("x", &format!("/{n}")));
    }
    c.send(&all).await;
    for n in sizes {
        let r = raw_response(&mut c).await;
        assert!(r == response(&pattern(n as u32, n)), "pipelined {n}");
    }
    assert_eq!(b.drain(), 2 * sizes.len());
    // Each server connection went back to the idle list at the body's end, and was reused.
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
    let total: usize = sizes.iter().sum();
    let moved = spliced(&p);
    assert!(moved > 0, "nothing was spliced");
    assert!(moved <= 2 * total as u64, "{moved}");
}

#[tokio::test]
async fn a_server_closing_inside_a_long_body_closes_the_client_connection() {
    let declared = 400_000;
    let sent = 150_000;
    let reply: Reply = Arc::new(move |req: &[u8]| {
        if req.starts_with(b"GET /short") {
            let mut r = format!("HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: {declared}\r\n\r\n")
                .into_bytes();
            let head = r.len();
            r.extend_from_slice(&pattern(7, declared));
            r.truncate(head + sent);
            Action::SendClose(r)
        } else {
            Action::Send(response(b"fine"))
        }
    });
    let mut b = Backend::scripted("b", reply).await;
    let (p, addr) = proxy(&simple(&[&b], "retries = 1", ""));
    let mut c = Client::connect(addr).await;
    c.send(&get("x", "/short")).await;
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, c.stream().read_to_end(&mut got))
        .await
        .expect("the client connection stayed open")
        .expect("read");
    let head = format!("HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: {declared}\r\n\r\n");
    assert!(got.starts_with(head.as_bytes()));
    // What the server sent, every byte of it in order, and then the end; never retried.
    assert_eq!(&got[head.len()..], &pattern(7, declared)[..sent]);
    assert!(spliced(&p) > 0, "nothing was spliced");
    assert_eq!(b.drain(), 1);
    // The next client is served on a fresh server connection.
    let r = exchange(addr, &get("x", "/")).await;
    assert_eq!(body(&r), "fine");
    assert_eq!(b.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_long_upload_arrives_whole_and_the_next_request_behind_it_is_served() {
    let mut b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    for n in [50_000, 1_048_583] {
        let data = pattern(n as u32, n);
        let head = format!("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n");
        // In uneven pieces, the last one with the next request right behind it.
        c.send(head.as_bytes()).await;
        let mut at = 0;
        for (i, step) in [1, 5000, 70_000, 3].into_iter().cycle().enumerate() {
            let end = (at + step).min(n);
            if end == n {
                let mut last = data[at..].to_vec();
                last.extend_from_slice(&get("x", "/next"));
                c.send(&last).await;
                break;
            }
            c.send(&data[at..end]).await;
            at = end;
            if i % 7 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        assert_eq!(body(&c.response().await), "b");
        assert_eq!(body(&c.response().await), "b");
        let got = b.request().await;
        let (got_head, got_body) = got.split_once("\r\n\r\n").expect("a head");
        assert!(got_head.starts_with("POST /up HTTP/1.1\r\n"), "{got_head}");
        assert_eq!(
            b.request().await.split_once("\r\n").map(|l| l.0),
            Some("GET /next HTTP/1.1")
        );
        assert!(got_body == String::from_utf8_lossy(&data), "body of {n}");
    }
    assert!(spliced(&p) > 0, "nothing was spliced");
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_long_upload_relayed_byte_for_byte() {
    // A server that records the raw bytes of one request with a body by length.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let n = 777_777;
    let recorder = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let body_at = loop {
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0, "closed early");
            got.extend_from_slice(&buf[..k]);
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        while got.len() < body_at + n {
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0, "closed early");
            got.extend_from_slice(&buf[..k]);
        }
        s.write_all(&response(b"ok")).await.unwrap();
        got.split_off(body_at)
    });
    let l7 = format!(
        "[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n\
         [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
         [[l7.pool]]\nname = \"p\"\nservers = [{{ address = \"{server}\" }}]\n"
    );
    let (p, addr) = proxy(&l7);
    let data = pattern(3, n);
    let mut c = Client::connect(addr).await;
    let mut req =
        format!("PUT /doc HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n").into_bytes();
    req.extend_from_slice(&data[..1000]);
    c.send(&req).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.send(&data[1000..]).await;
    assert_eq!(body(&c.response().await), "ok");
    let got = recorder.await.unwrap();
    assert!(
        got == data,
        "the body differs ({} bytes arrived)",
        got.len()
    );
    assert!(spliced(&p) > 0, "nothing was spliced");
}

#[tokio::test]
async fn a_long_upload_the_client_abandons_is_408_and_not_the_servers_fault() {
    let mut b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(
        &[&b],
        "response_timeout_ms = 100\neject_after = 1\nretries = 0",
        "client_timeout_ms = 300",
    ));
    let mut c = Client::connect(addr).await;
    let mut req = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n".to_vec();
    req.extend_from_slice(&pattern(1, 100));
    c.send(&req).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // More than the threshold's worth, then silence.
    c.send(&pattern(2, 90_000)).await;
    let r = c.response().await;
    assert!(r.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{r}");
    assert!(c.closed().await);
    assert!(spliced(&p) > 0, "nothing was spliced");
    assert!(no_server_failures(&p), "{}", p.metrics());
    assert_eq!(status(&exchange(addr, &get("x", "/")).await), 200);
    b.drain();
}

#[tokio::test]
async fn a_long_upload_the_server_stops_taking_is_502_and_never_retried() {
    // The first server reads the head and some of the body, then closes; the second is
    // healthy, yet nothing reaches it.
    let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first_addr = first.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = first.accept().await.unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; 65536];
        while got < 100_000 {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early");
            got += n;
        }
        drop(s);
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
    let n = 8 << 20;
    let mut c = Client::connect(addr).await;
    c.send(format!("PUT /doc HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n").as_bytes())
        .await;
    // Once the proxy gives up it answers.
    let text = send_reading(&mut c, &pattern(5, n)).await;
    assert!(text.starts_with("HTTP/1.1 502 "), "{text}");
    reader.await.unwrap();
    second.no_request().await;
    assert!(spliced(&p) > 0, "nothing was spliced");
}

#[tokio::test]
async fn bytes_a_server_sends_past_a_long_body_never_reach_a_client() {
    let reply: Reply = Arc::new(|req: &[u8]| {
        if req.starts_with(b"GET /long") {
            let mut r = response(&pattern(9, 60_000));
            r.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nWRONG");
            Action::Send(r)
        } else {
            Action::Send(response(b"right"))
        }
    });
    let b = Backend::scripted("b", reply).await;
    let (p, addr) = proxy(&simple(&[&b], "", ""));
    let mut c = Client::connect(addr).await;
    c.send(&get("x", "/long")).await;
    assert!(raw_response(&mut c).await == response(&pattern(9, 60_000)));
    assert!(spliced(&p) > 0, "nothing was spliced");
    // The server connection with the stray response in it is not used again.
    c.send(&get("x", "/next")).await;
    assert_eq!(body(&c.response().await), "right");
    assert_eq!(b.connections.load(Ordering::SeqCst), 2);
}

/// A proxy (h2c too) in front of a server that answers `answer` as soon as a request's head
/// is in and closes, the body unread, so its kernel resets the connection behind the answer.
/// `keys`: more of the pool's settings.
async fn proxy_to_a_refuser(
    answer: &'static [u8],
    keys: &str,
) -> (portier::l7::L7, std::net::SocketAddr) {
    let refuser = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = refuser.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = refuser.accept().await {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(answer).await;
            // Its write side shut first, as a server closing at once does: the answer leaves
            // before the close (the body unread) resets the connection.
            let _ = s.shutdown().await;
        }
    });
    proxy(&format!(
        "[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\nprotocols = [\"http1\", \"h2c\"]\n\
         [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
         [[l7.pool]]\nname = \"p\"\n{keys}\nservers = [{{ address = \"{server}\" }}]\n"
    ))
}

const TOO_LARGE: &[u8] =
    b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large";

/// Sends an upload of `head` and `body` on a connection of its own: what came back until
/// the proxy closed, checked to be the server's 413.
async fn refused_upload(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    let mut c = Client::connect(addr).await;
    c.send(head.as_bytes()).await;
    let text = send_reading(&mut c, body).await;
    assert!(
        text.starts_with("HTTP/1.") && text.contains(" 413 Payload Too Large\r\n"),
        "{head}: {text}"
    );
    text
}

#[tokio::test]
async fn a_long_upload_the_server_refuses_on_its_head_gets_the_servers_answer() {
    let (p, addr) = proxy_to_a_refuser(TOO_LARGE, "eject_after = 1").await;
    let n: usize = 8 << 20;
    // By length (spliced) and chunked (copied): far more than the sockets between hold.
    let by_length = (
        format!("PUT /doc HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n"),
        pattern(6, n),
    );
    let chunked = (
        "PUT /doc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
        chunked_body(&pattern(7, n), 1 << 20, true),
    );
    for (head, body) in [by_length, chunked] {
        let text = refused_upload(addr, &head, &body).await;
        assert!(
            text.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{head}: {text}"
        );
        assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\ntoo large"), "{text}");
    }
    // The server's answer is not its failure: it stays in the pool.
    assert!(no_server_failures(&p), "{}", p.metrics());
    assert!(spliced(&p) > 0, "nothing was spliced");
}

#[tokio::test]
async fn an_upload_on_the_general_path_the_server_refuses_on_its_head_gets_the_servers_answer() {
    // As above, for requests the fast path hands to hyper: an HTTP/1.0 client, a chunked body
    // whose request asks for trailers, and an HTTP/2 client. Whether the answer or the reset
    // is seen first is a race, so each goes several times.
    let (p, addr) = proxy_to_a_refuser(TOO_LARGE, "eject_after = 1").await;
    let n: usize = 4 << 20;
    let http10 = (
        format!("PUT /doc HTTP/1.0\r\nHost: x\r\nContent-Length: {n}\r\n\r\n"),
        pattern(8, n),
    );
    let trailers = (
        "PUT /doc HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_owned(),
        chunked_body(&pattern(9, n), 1 << 20, true),
    );
    let before = metric(&p, "portier_l7_listener_fast_path_requests_total");
    for (head, body) in [http10, trailers] {
        for _ in 0..5 {
            let text = refused_upload(addr, &head, &body).await;
            assert!(text.ends_with("\r\n\r\ntoo large"), "{text}");
        }
    }
    // An HTTP/2 client: the answer, then (RFC 9113 8.1) the stream's reset with NO_ERROR,
    // which ends its upload.
    for _ in 0..5 {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let body = http_body_util::Full::new(bytes::Bytes::from(pattern(10, n)));
        let req = http::Request::put("http://x/doc").body(body).unwrap();
        let resp = tokio::time::timeout(WAIT, send.send_request(req))
            .await
            .expect("no answer in time")
            .expect("no answer");
        assert_eq!(resp.status(), 413);
        let text = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .expect("the answer's body")
            .to_bytes();
        assert_eq!(&text[..], b"too large");
    }
    assert_eq!(
        metric(&p, "portier_l7_listener_fast_path_requests_total"),
        before,
        "the fast path took them"
    );
    assert!(no_server_failures(&p), "{}", p.metrics());
}

#[tokio::test]
async fn a_server_that_sends_more_than_its_refusal_cannot_hold_the_connections() {
    // Bytes past the answer's end, then the reset: hyper leaves them unread while the request
    // is going out, so the failed write's wait ends with the response timeout.
    let (_p, addr) = proxy_to_a_refuser(
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo largeHTTP/1.1 200 OK\r\n",
        "response_timeout_ms = 300",
    )
    .await;
    let n: usize = 4 << 20;
    // The client's connection closes (the upstream one has ended), long before the client's
    // own timeout.
    let head = format!("PUT /doc HTTP/1.0\r\nHost: x\r\nContent-Length: {n}\r\n\r\n");
    refused_upload(addr, &head, &pattern(11, n)).await;
}

/// A server that answers `/up` with `answer` as soon as its head is in, then reads and
/// discards the body as nginx does (unless `close`: then it reads that many bytes of it
/// and stops, closing 10 s later), and answers anything else with 200 "next".
fn answering_early(
    listener: tokio::net::TcpListener,
    answer: &'static [u8],
    close: Option<usize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 65536];
                loop {
                    let at = loop {
                        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&got[..at]).to_lowercase();
                    let len: usize = head
                        .split("content-length: ")
                        .nth(1)
                        .and_then(|v| v.split("\r\n").next()?.parse().ok())
                        .unwrap_or(0);
                    got.drain(..at);
                    if !head.starts_with("put /up ") {
                        let _ = s.write_all(&response(b"next")).await;
                        continue;
                    }
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                    let stop = close.unwrap_or(len);
                    while got.len() < stop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    if close.is_some() {
                        // A lingering close: the connection stays a while, unread.
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        return;
                    }
                    got.drain(..len);
                }
            });
        }
    })
}

fn pool_of(server: std::net::SocketAddr) -> String {
    format!(
        "[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n\
         [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
         [[l7.pool]]\nname = \"p\"\nservers = [{{ address = \"{server}\" }}]\n"
    )
}

#[tokio::test]
async fn a_refusal_on_the_head_of_a_long_upload_reaches_the_client_before_its_body_ends() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let _s = answering_early(
        listener,
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\n\r\ndenied",
        None,
    );
    let (p, addr) = proxy(&pool_of(server));
    let mut c = Client::connect(addr).await;
    // Spliced (4 MB, 200 KB sent before the answer), then copied (20 KB, 10 KB before it).
    for (n, first) in [(4 << 20, 200_000), (20_000, 10_000)] {
        let data = pattern(8, n);
        let mut req =
            format!("PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        req.extend_from_slice(&data[..first]);
        c.send(&req).await;
        // The answer comes while the rest of the body has not even been sent.
        let r = c.response().await;
        assert!(r.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{n}: {r}");
        assert_eq!(body(&r), "denied");
        // The server reads the rest: both connections stay in use for the next request.
        let mut rest = data[first..].to_vec();
        rest.extend_from_slice(&get("x", "/next"));
        c.send(&rest).await;
        assert_eq!(body(&c.response().await), "next");
    }
    assert!(spliced(&p) > 0, "nothing was spliced");
    let one_connection = p
        .metrics()
        .lines()
        .any(|l| l.starts_with("portier_l7_server_connects_total") && l.ends_with(" 1"));
    assert!(one_connection, "{}", p.metrics());
}

#[tokio::test]
async fn on_the_general_path_too_a_refusal_reaches_the_client_before_its_body_ends() {
    // hyper hands the proxy a response as soon as its head is in, body or no body.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let _s = answering_early(
        listener,
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\n\r\ndenied",
        None,
    );
    let (p, addr) = proxy(&pool_of(server));
    let before = metric(&p, "portier_l7_listener_fast_path_requests_total");
    let mut c = Client::connect(addr).await;
    let n = 1 << 20;
    let data = pattern(12, n);
    // Asking for trailers hands the request to the general path.
    let mut req =
        format!("PUT /up HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nContent-Length: {n}\r\n\r\n")
            .into_bytes();
    req.extend_from_slice(&data[..100_000]);
    c.send(&req).await;
    let r = c.response().await;
    assert!(r.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{r}");
    assert_eq!(body(&r), "denied");
    // The server reads the rest, and the client's connection carries the next request (the
    // server connection goes back to the pool only once the body's end is out, which the
    // next request may beat).
    let mut rest = data[100_000..].to_vec();
    rest.extend_from_slice(&get("x", "/next"));
    c.send(&rest).await;
    assert_eq!(body(&c.response().await), "next");
    assert_eq!(
        metric(&p, "portier_l7_listener_fast_path_requests_total"),
        before,
        "the fast path took it"
    );
}

#[tokio::test]
async fn a_refusal_that_closes_ends_the_upload_and_the_client_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    // It reads 100 KB of the body after its answer, then neither reads nor closes for longer
    // than the test waits.
    let _s = answering_early(
        listener,
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large",
        Some(100_000),
    );
    let (p, addr) = proxy(&pool_of(server));
    let n: usize = 8 << 20;
    let mut chunked = b"PUT /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend_from_slice(&chunked_body(&pattern(9, 300_000), 30_000, false));
    let mut by_length =
        format!("PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n").into_bytes();
    by_length.extend_from_slice(&pattern(9, 300_000));
    // By length (spliced) and chunked (copied), neither finished.
    for req in [by_length, chunked] {
        let mut c = Client::connect(addr).await;
        c.send(&req).await;
        let r = c.response().await;
        assert!(r.starts_with("HTTP/1.1 413 Payload Too Large\r\n"), "{r}");
        assert!(r.contains("\r\nconnection: close\r\n"), "{r}");
        assert_eq!(body(&r), "too large");
        assert!(c.closed().await);
    }
    assert!(no_server_failures(&p), "{}", p.metrics());
}
