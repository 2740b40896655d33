//! Slow clients and silent servers (issue 12): a client that takes no response or sends no
//! body is cut after the client timeout and never counted against the server; the response
//! timeout counts only the server's silence; an HTTP/2 connection holds at most its cap of
//! server slots and is closed when idle; an idle tunnel is closed, and counts against the
//! listener's connections while open.

use crate::harness::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Larger than every buffer on the way (client receive, proxy send, proxy receive, backend
/// send; loopback autotuning grows them to a few MiB).
const BIG: usize = 48 << 20;

fn metric(p: &portier::l7::L7, name: &str) -> u64 {
    let text = p.metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// A client that reads nothing: its receive buffer kept small.
async fn deaf_client(addr: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test]
async fn a_client_that_reads_no_response_is_cut_and_frees_the_server_slot() {
    let big: Arc<Vec<u8>> = Arc::new({
        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
        r.resize(r.len() + BIG, b'x');
        r
    });
    let reply: Reply = Arc::new(move |req: &[u8]| {
        if req.windows(4).any(|w| w == b"/big") {
            Action::Send(big.to_vec())
        } else {
            Action::Send(ok("b"))
        }
    });
    let mut b = Backend::scripted("b", reply).await;
    // One slot at the server; a request waits for it up to 3 s.
    let (p, addr) = proxy(&simple(
        &[&b],
        "max_connections = 1\nqueue_timeout_ms = 3000\nretries = 0",
        "client_timeout_ms = 300",
    ));
    // The fast path (GET) and the general path (a POST with a body).
    for (n, request) in [
        &b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
    ]
    .into_iter()
    .enumerate()
    {
        let mut deaf = deaf_client(addr).await;
        deaf.write_all(request).await.unwrap();
        b.request().await;
        // The slot is taken by the response the client does not read; once the client
        // timeout cuts it, the next request gets the slot.
        let start = Instant::now();
        let r = exchange(addr, &get("x", "/")).await;
        assert_eq!(status(&r), 200, "{r}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        b.request().await;
        assert_eq!(
            metric(
                &p,
                "portier_l7_listener_client_timeouts_total{listener=\"http\"}"
            ),
            n as u64 + 1
        );
        // The deaf client's connection is closed: after what was buffered, the end.
        let mut sink = vec![0u8; 1 << 20];
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                match deaf.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        });
        closed
            .await
            .expect("the deaf client's connection stayed open");
    }
    // Not the server's fault.
    let metrics = p.metrics();
    assert!(
        metrics.contains(&format!(
            "portier_l7_server_failures_total{{pool=\"p\",server=\"{}\"}} 0\n",
            b.addr
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_stalled_upload_is_the_clients_408_and_never_ejects_the_server() {
    let mut b = Backend::named("b").await;
    // A short response timeout: it must not run while the body waits for the client.
    let (p, addr) = proxy(&simple(
        &[&b],
        "response_timeout_ms = 100\neject_after = 2\nretries = 0",
        "client_timeout_ms = 300",
    ));
    for _ in 0..4 {
        let mut c = Client::connect(addr).await;
        let start = Instant::now();
        c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            .await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(WAIT, c.stream().read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{text}"
        );
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(
            start.elapsed() >= Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
    }
    // Four stalled uploads, more than eject_after: the server is still active, nothing
    // counted against it, and it serves the next request.
    let server = &p.status()["pools"]["p"]["servers"][0];
    assert_eq!(server["state"], "active", "{server}");
    let metrics = p.metrics();
    for expected in [
        format!(
            "portier_l7_server_failures_total{{pool=\"p\",server=\"{}\"}} 0\n",
            b.addr
        ),
        "portier_l7_pool_timeouts_total{pool=\"p\"} 0\n".into(),
        "portier_l7_listener_client_timeouts_total{listener=\"http\"} 4\n".into(),
    ] {
        assert!(metrics.contains(&expected), "{expected} in\n{metrics}");
    }
    b.no_request().await;
    let r = exchange(addr, &get("x", "/")).await;
    assert_eq!(status(&r), 200, "{r}");
}

#[tokio::test]
async fn the_response_timeout_starts_once_the_request_is_sent() {
    let mut b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(
        &[&b],
        "response_timeout_ms = 150\nretries = 0",
        "client_timeout_ms = 1000",
    ));
    // An upload slower than the response timeout, but steady: the server is not at fault.
    let mut c = Client::connect(addr).await;
    c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n")
        .await;
    for byte in [b"a", b"b", b"c", b"d", b"e", b"f"] {
        tokio::time::sleep(Duration::from_millis(60)).await;
        c.send(byte).await;
    }
    let r = c.response().await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(b.request().await.ends_with("\r\n\r\nabcdef"));

    // A server silent once it has the whole request still gets its 504.
    let silent = Backend::scripted(
        "silent",
        Arc::new(|_: &[u8]| Action::Delay(Duration::from_secs(3), ok("silent"))),
    )
    .await;
    let (p, addr) = proxy(&simple(
        &[&silent],
        "response_timeout_ms = 150\nretries = 0",
        "",
    ));
    let start = Instant::now();
    let r = exchange(
        addr,
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(status(&r), 504, "{r}");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(
        p.metrics()
            .contains("portier_l7_pool_timeouts_total{pool=\"p\"} 1\n")
    );
}

/// The fast path keeps one response timer per connection and moves it on for each request:
/// each request gets the whole timeout, counted from its own start, not from the first.
#[tokio::test]
async fn each_request_of_a_connection_gets_its_own_response_timeout() {
    let server = Backend::scripted(
        "s",
        Arc::new(|req: &[u8]| {
            if req.starts_with(b"GET /silent ") {
                Action::Delay(Duration::from_secs(5), ok("silent"))
            } else {
                Action::Delay(Duration::from_millis(250), ok("s"))
            }
        }),
    )
    .await;
    let (p, addr) = proxy(&simple(
        &[&server],
        "response_timeout_ms = 400\nretries = 0",
        "",
    ));
    let mut c = Client::connect(addr).await;
    // Together longer than one timeout: a timer left at the first request's deadline would
    // cut the second.
    for _ in 0..3 {
        c.send(&get("x", "/slow")).await;
        let r = c.response().await;
        assert_eq!(status(&r), 200, "{r}");
    }
    // And a silent server still gets its 504, one timeout after this request.
    let start = Instant::now();
    c.send(&get("x", "/silent")).await;
    let r = c.response().await;
    assert_eq!(status(&r), 504, "{r}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(390) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(metric(&p, "portier_l7_pool_timeouts_total{pool=\"p\"}"), 1);
}

#[tokio::test]
async fn an_h2_upload_that_stalls_is_the_clients_408() {
    let b = Backend::named("b").await;
    let (p, addr) = proxy(&simple(
        &[&b],
        "response_timeout_ms = 100\neject_after = 1\nretries = 0",
        "protocols = [\"h2c\"]\nclient_timeout_ms = 300",
    ));
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Two bytes, then nothing (the sender is kept, so the body never ends).
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, std::io::Error>>();
    tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"ab"))))
        .unwrap();
    let req = http::Request::post("http://x/up")
        .body(StreamBody::new(rx))
        .unwrap();
    let resp = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .expect("no response in time")
        .unwrap();
    assert_eq!(resp.status(), 408);
    drop(tx);
    assert_eq!(p.status()["pools"]["p"]["servers"][0]["state"], "active");
}

#[tokio::test]
async fn an_h2_client_with_a_zero_window_holds_at_most_its_cap_of_server_slots() {
    // More than one frame of body: hyper takes the first before it waits for the window.
    let large: Reply = Arc::new(|_: &[u8]| {
        let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
        r.resize(r.len() + (1 << 20), b'x');
        Action::Send(r)
    });
    let mut b = Backend::scripted("b", large).await;
    let (p, addr) = proxy(&simple(
        &[&b],
        "queue_timeout_ms = 300",
        "protocols = [\"h2c\"]\nmax_upstream_per_connection = 2",
    ));
    let stream = TcpStream::connect(addr).await.unwrap();
    // The client never opens its streams' windows: no response body can be sent, and each
    // response holds its server slot.
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let mut s = send.clone();
            tokio::spawn(async move {
                let req = http::Request::get(format!("http://x/{i}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                // The head arrives; the body never can. Kept to hold the stream.
                let resp = s.send_request(req).await.unwrap();
                (resp.status(), resp)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut held = Vec::new();
    for t in tasks {
        let (status, resp) = tokio::time::timeout(WAIT, t).await.unwrap().unwrap();
        statuses.push(status.as_u16());
        held.push(resp);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503, 503, 503, 503, 503, 503, 503, 503]);
    assert_eq!(p.status()["pools"]["p"]["servers"][0]["outstanding"], 2);
    b.request().await;
    b.request().await;
    b.no_request().await;
    drop(held);
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_but_not_during_a_request() {
    let b = Backend::scripted(
        "b",
        Arc::new(|_: &[u8]| Action::Delay(Duration::from_millis(500), ok("b"))),
    )
    .await;
    let (_p, addr) = proxy(&simple(
        &[&b],
        "",
        "protocols = [\"h2c\"]\nh2_idle_timeout_ms = 300",
    ));
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    // A request longer than the idle time: the connection is busy, not idle.
    let req = http::Request::get("http://x/slow")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "b");
    // Then idle: closed (the client answers the proxy's pings, so only the idle timeout can
    // end it).
    let idle = Instant::now();
    tokio::time::timeout(WAIT, conn)
        .await
        .expect("the idle connection stayed open")
        .unwrap()
        .unwrap();
    assert!(
        idle.elapsed() >= Duration::from_millis(250),
        "{:?}",
        idle.elapsed()
    );
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_and_counts_against_the_listener_while_open() {
    let reply: Reply = Arc::new(|req: &[u8]| {
        if String::from_utf8_lossy(req)
            .to_ascii_lowercase()
            .contains("upgrade: websocket")
        {
            Action::Echo(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Action::Send(ok("b"))
        }
    });
    let b = Backend::scripted("b", reply).await;
    let (p, addr) = proxy(&simple(
        &[&b],
        "tunnel_timeout_ms = 500",
        "max_connections = 1",
    ));
    let mut ws = Client::connect(addr).await;
    ws.send(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await;
    let r = ws.response().await;
    assert!(r.starts_with("HTTP/1.1 101 "), "{r}");
    let open = Instant::now();
    // Bytes pass while it is open.
    ws.send(b"ping").await;
    let mut echo = [0u8; 4];
    tokio::time::timeout(WAIT, ws.stream().read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping");
    // The tunnel is the listener's one connection: counted, and another client waits.
    assert_eq!(
        metric(
            &p,
            "portier_l7_listener_connections_active{listener=\"http\"}"
        ),
        1
    );
    let mut other = Client::connect(addr).await;
    other.send(&get("x", "/")).await;
    let mut buf = [0u8; 16];
    let early =
        tokio::time::timeout(Duration::from_millis(200), other.stream().read(&mut buf)).await;
    assert!(early.is_err(), "a client served beyond max_connections");
    // Idle for the tunnel timeout: closed, and the waiting client is served.
    assert!(ws.closed().await, "the idle tunnel stayed open");
    assert!(
        open.elapsed() >= Duration::from_millis(450),
        "{:?}",
        open.elapsed()
    );
    assert_eq!(status(&other.response().await), 200);
}

#[tokio::test]
async fn a_server_silent_inside_its_response_body_is_cut_after_the_response_timeout() {
    // The head and part of the body, then nothing (the connection stays open).
    let reply: Reply = Arc::new(|_: &[u8]| {
        Action::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".to_vec())
    });
    let b = Backend::scripted("b", reply).await;
    let (p, addr) = proxy(&simple(
        &[&b],
        "response_timeout_ms = 200\nretries = 0",
        "protocols = [\"http1\", \"h2c\"]",
    ));
    // The fast path (GET) and the general path (a POST with a body).
    for request in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
    ] {
        let mut c = Client::connect(addr).await;
        let start = Instant::now();
        c.send(request).await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(WAIT, c.stream().read_to_end(&mut buf))
            .await
            .expect("the client connection stayed open");
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("partial"), "{text}");
        assert!(
            start.elapsed() >= Duration::from_millis(150),
            "{:?}",
            start.elapsed()
        );
    }
    // HTTP/2 to the HTTP/1 pool (the raw path): the stream fails.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://x/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(WAIT, resp.into_body().collect()).await;
    assert!(body.expect("the stream stayed open").is_err());
    assert!(
        p.metrics()
            .contains("portier_l7_pool_timeouts_total{pool=\"p\"} 3\n"),
        "{}",
        p.metrics()
    );
}
