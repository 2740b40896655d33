//! HTTP/2 downstream with prior knowledge (h2c), HTTP/2 upstream, and the HTTP/2 floods:
//! rapid reset and CONTINUATION.

use crate::harness::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn h2_client(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

#[tokio::test]
async fn h2c_prior_knowledge_reaches_an_http1_backend() {
    let mut b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(&[&b], "", "protocols = [\"http1\", \"h2c\"]"));
    let mut send = h2_client(addr).await;
    let req = http::Request::post("http://todo.example:8080/x?y=1")
        .header("x-test", "1")
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "b");
    assert_eq!(
        b.request().await,
        "POST /x?y=1 HTTP/1.1\r\nhost: todo.example:8080\r\nx-test: 1\r\ncontent-length: 3\r\n\
         x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: todo.example:8080\r\n\
         forwarded: for=127.0.0.1;proto=http;host=\"todo.example:8080\"\r\n\r\nabc"
    );
    // The same listener still speaks HTTP/1.1.
    assert_eq!(status(&exchange(addr, &get("x", "/")).await), 200);
    // Many streams on one connection.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut s = send.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::get(format!("http://x/{i}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            s.send_request(req).await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn h2_get_to_an_http1_pool_goes_as_bytes_and_chunked_bodies_are_decoded() {
    let reply: Reply = std::sync::Arc::new(|req: &[u8]| {
        if req.starts_with(b"GET /chunked") {
            Action::Send(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n\
                  3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\nX-Sum: 7\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Action::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\nhello".to_vec())
        }
    });
    let mut b = Backend::scripted("b", reply).await;
    let (_p, addr) = proxy(&simple(&[&b], "", "protocols = [\"h2c\"]"));
    let mut send = h2_client(addr).await;
    let req = http::Request::get("http://todo.example/p?q=1")
        .header("x-test", "1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-hop").is_none());
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "hello"
    );
    assert_eq!(
        b.request().await,
        "GET /p?q=1 HTTP/1.1\r\nhost: todo.example\r\nx-test: 1\r\n\
         x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: todo.example\r\n\
         forwarded: for=127.0.0.1;proto=http;host=todo.example\r\n\r\n"
    );
    let req = http::Request::get("http://todo.example/chunked")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["x-kind"], "chunked");
    assert!(resp.headers().get("transfer-encoding").is_none());
    let body = resp.into_body().collect().await.unwrap();
    assert_eq!(
        body.trailers().map(|t| t["x-sum"].clone()),
        Some(http::HeaderValue::from_static("7"))
    );
    assert_eq!(body.to_bytes(), "abcdefg");
    // Both over the one kept-alive connection.
    assert_eq!(b.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn h2_upstream_when_the_pool_asks_for_it() {
    // The backend is the proxy's own h2c listener in front of an HTTP/1 backend: proxy A
    // (h2 upstream) -> proxy B (h2c) -> backend.
    let mut b = Backend::named("b").await;
    let (_inner, inner_addr) = proxy(&simple(&[&b], "", "protocols = [\"h2c\"]"));
    let cfg = format!(
        "[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n\
         [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
         [[l7.pool]]\nname = \"p\"\nprotocol = \"h2c\"\nservers = [{{ address = \"{inner_addr}\" }}]\n"
    );
    let (_outer, addr) = proxy(&cfg);
    for _ in 0..3 {
        let r = exchange(addr, &get("todo.example", "/h2")).await;
        assert_eq!(body(&r), "b", "{r}");
    }
    let got = b.request().await;
    assert!(
        got.starts_with("GET /h2 HTTP/1.1\r\nhost: todo.example\r\n"),
        "{got}"
    );
    assert!(
        got.contains("x-forwarded-for: 127.0.0.1, 127.0.0.1\r\n"),
        "{got}"
    );
}

#[tokio::test]
async fn h2_without_authority_or_with_two_hosts_is_refused() {
    let mut b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(&[&b], "", "protocols = [\"h2c\"]"));
    let mut send = h2_client(addr).await;
    let req = http::Request::get("http://a.example/")
        .header("host", "b.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 400);
    b.no_request().await;
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for GET http://x/ from the static table: :method GET, :scheme http, :path /,
/// :authority x (literal, indexed name 1).
const GET_X: &[u8] = &[0x82, 0x86, 0x84, 0x41, 0x01, b'x'];

/// Reads frames until a GOAWAY (its error code) or the end of the connection (None);
/// `Err` when the server neither closes nor sends GOAWAY in time.
async fn goaway(s: &mut TcpStream) -> Result<Option<u32>, &'static str> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = match tokio::time::timeout(WAIT, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) => return Ok(None),
            Err(_) => return Err("connection still open, no GOAWAY"),
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 7 && len >= 8 {
                return Ok(Some(u32::from_be_bytes([
                    buf[13], buf[14], buf[15], buf[16],
                ])));
            }
            buf.drain(..9 + len);
        }
    }
}

#[tokio::test]
async fn rapid_reset_flood_ends_the_connection() {
    let mut b = Backend::scripted(
        "b",
        std::sync::Arc::new(|_: &[u8]| Action::Delay(Duration::from_millis(100), ok("b"))),
    )
    .await;
    let (_p, addr) = proxy(&simple(&[&b], "", "protocols = [\"h2c\"]"));
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(4, 0, 0, &[]));
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        out.extend(frame(1, 0x5, id, GET_X));
        out.extend(frame(3, 0, id, &8u32.to_be_bytes()));
    }
    // The server may close mid-write: that is the defence working.
    let _ = s.write_all(&out).await;
    // ENHANCE_YOUR_CALM (0xb), or a plain close.
    let code = goaway(&mut s).await;
    assert!(matches!(code, Ok(None | Some(0xb))), "{code:?}");
    let reached = b.drain();
    assert!(
        reached < 300,
        "{reached} of 2000 reset streams reached the backend"
    );
}

#[tokio::test]
async fn continuation_flood_ends_the_connection() {
    let mut b = Backend::named("b").await;
    let (_p, addr) = proxy(&simple(
        &[&b],
        "",
        "protocols = [\"h2c\"]\nmax_header_bytes = 16384",
    ));
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(4, 0, 0, &[]));
    // HEADERS without END_HEADERS, then endless CONTINUATION frames of literal fields.
    out.extend(frame(1, 0x1, 1, GET_X));
    // Literal field, new name "x-a", value of 1000 bytes (127 + 873 as a varint).
    let mut field = vec![0x00, 0x03, b'x', b'-', b'a', 0x7f, 0xe9, 0x06];
    field.extend(std::iter::repeat_n(b'a', 1000));
    let block: Vec<u8> = field.iter().copied().cycle().take(16_000).collect();
    s.write_all(&out).await.unwrap();
    let mut sent = 0usize;
    let mut cut_off = false;
    for _ in 0..640 {
        if s.write_all(&frame(9, 0, 1, &block)).await.is_err() {
            cut_off = true;
            break;
        }
        sent += block.len();
    }
    if !cut_off {
        let end = goaway(&mut s).await;
        assert!(
            end.is_ok(),
            "server took {sent} bytes of one header block: {end:?}"
        );
    }
    b.no_request().await;
}
