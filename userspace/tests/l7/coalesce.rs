//! `[l7] coalesce_us`: a busy worker waits before it polls, and serves as before.

use crate::harness::*;
use std::sync::Arc;

fn waits(p: &portier::l7::L7) -> u64 {
    metric(p, "portier_l7_coalesce_waits_total")
}

/// The measured time of every wait, in seconds.
fn waited(p: &portier::l7::L7) -> f64 {
    let family = "portier_l7_coalesce_wait_seconds_total";
    p.metrics()
        .lines()
        .find(|l| l.starts_with(family))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {family}"))
}

/// One worker in front of a backend answering "b", with `l7` added to the `[l7]` table.
async fn coalescing(
    l7: &str,
    listener_extra: &str,
) -> (Backend, portier::l7::L7, std::net::SocketAddr) {
    let reply: Reply = Arc::new(|_: &[u8]| Action::Send(ok("b")));
    let b = Backend::scripted("b", reply).await;
    let config = format!(
        "[l7]\nworkers = 1\n{l7}\n{}",
        simple(&[&b], "", listener_extra)
    );
    let (p, addr) = proxy(&config);
    (b, p, addr)
}

const BUSY_AT_FOUR: &str = "coalesce_us = 200\ncoalesce_min_requests = 4\n";

/// `clients` keep-alive connections, each sending `each` requests one after another and
/// getting `answer` to each.
async fn load_expecting(
    addr: std::net::SocketAddr,
    clients: usize,
    each: usize,
    answer: &'static str,
) {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                for i in 0..each {
                    let path = format!("/{c}/{i}");
                    client.send(&get("x.example", &path)).await;
                    let r = client.response().await;
                    assert_eq!(status(&r), 200, "{r}");
                    assert_eq!(body(&r), answer, "{r}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client");
    }
}

/// [`load_expecting`] the answer of the backend of [`coalescing`].
async fn load(addr: std::net::SocketAddr, clients: usize, each: usize) {
    load_expecting(addr, clients, each, "b").await;
}

#[tokio::test]
async fn a_busy_worker_waits_and_every_request_is_answered() {
    let (_b, p, addr) = coalescing(BUSY_AT_FOUR, "").await;
    // One client at a time never has four requests in progress: no wait.
    load(addr, 1, 20).await;
    assert_eq!(waits(&p), 0);
    assert_eq!(waited(&p), 0.0);
    // Sixteen at once: the worker waits, and every request is still answered in full.
    load(addr, 16, 20).await;
    let n = waits(&p);
    assert!(n > 0, "no wait with 16 clients");
    // A sleep never ends early: the measured time is at least what was asked of each wait.
    assert!(
        waited(&p) >= n as f64 * 200e-6,
        "{n} waits in {} s",
        waited(&p)
    );
}

/// By default a worker waits only with 128 requests or more in progress: sixteen clients
/// never make it wait, 130 whose server holds every answer for a while do.
#[tokio::test]
async fn by_default_from_128_requests_in_progress() {
    let (_b, p, addr) = coalescing("", "").await;
    load(addr, 16, 20).await;
    assert_eq!(waits(&p), 0);

    let reply: Reply =
        Arc::new(|_: &[u8]| Action::Delay(std::time::Duration::from_millis(500), ok("slow")));
    let slow = Backend::scripted("slow", reply).await;
    let config = format!("[l7]\nworkers = 1\n{}", simple(&[&slow], "", ""));
    let (p, addr) = proxy(&config);
    load_expecting(addr, 130, 1, "slow").await;
    assert!(waits(&p) > 0, "no wait with 130 requests in progress");
}

#[tokio::test]
async fn http2_streams_do_not_make_a_worker_wait() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (_b, p, addr) = coalescing(BUSY_AT_FOUR, "protocols = [\"http1\", \"h2c\"]").await;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    // 32 streams at once, GETs (the raw path) and POSTs (the general path).
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let mut send = send.clone();
            tokio::spawn(async move {
                let req = if i % 2 == 0 {
                    http::Request::get(format!("http://x/{i}")).body(Full::new(Bytes::new()))
                } else {
                    http::Request::post(format!("http://x/{i}"))
                        .body(Full::new(Bytes::from_static(b"abc")))
                }
                .expect("request");
                send.ready().await.expect("ready");
                let resp = send.send_request(req).await.expect("response");
                assert_eq!(resp.status(), 200);
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                assert_eq!(body, "b");
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("stream");
    }
    assert_eq!(waits(&p), 0);
}

fn spliced(p: &portier::l7::L7) -> u64 {
    metric(p, "portier_l7_listener_spliced_bytes_total")
}

/// Waits until the proxy has spliced `bytes` of request bodies in all.
async fn until_spliced(p: &portier::l7::L7, bytes: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while spliced(p) < bytes {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {bytes} bytes spliced",
            spliced(p)
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A new client that has sent `head` and the body's first `piece` bytes with it (so every
/// later piece is spliced), and the bytes of the body it has sent.
async fn upload(addr: std::net::SocketAddr, head: &str, piece: usize) -> (Client, usize) {
    let mut c = Client::connect(addr).await;
    let mut first = head.as_bytes().to_vec();
    first.extend_from_slice(&vec![b'u'; piece]);
    c.send(&first).await;
    (c, piece)
}

/// One more `piece` bytes of each client's upload.
async fn piece_each(clients: &mut [Client], sent: &mut [usize], piece: usize) {
    for (c, n) in clients.iter_mut().zip(sent.iter_mut()) {
        c.send(&vec![b'u'; piece]).await;
        *n += piece;
    }
}

/// A request whose body is spliced from its client weighs seventeen requests: by default
/// (100 us from 128 requests in progress) seven uploads at once never make the worker wait,
/// an eighth does, and every upload still arrives whole.
#[tokio::test]
async fn eight_spliced_uploads_make_a_worker_busy() {
    const BODY: usize = 200_000;
    const PIECE: usize = 1000;
    let (mut b, p, addr) = coalescing("", "").await;
    let head = format!("POST /up HTTP/1.1\r\nHost: x.example\r\nContent-Length: {BODY}\r\n\r\n");
    let mut clients = Vec::new();
    let mut sent = Vec::new();
    for _ in 0..7 {
        let (c, n) = upload(addr, &head, PIECE).await;
        clients.push(c);
        sent.push(n);
    }
    for round in 1..=5u64 {
        piece_each(&mut clients, &mut sent, PIECE).await;
        until_spliced(&p, round * 7 * PIECE as u64).await;
    }
    assert_eq!(waits(&p), 0, "seven uploads made the worker wait");

    let (c, n) = upload(addr, &head, PIECE).await;
    clients.push(c);
    sent.push(n);
    let before = spliced(&p);
    for round in 1..=5u64 {
        piece_each(&mut clients, &mut sent, PIECE).await;
        until_spliced(&p, before + round * 8 * PIECE as u64).await;
    }
    assert!(waits(&p) > 0, "eight uploads did not make the worker wait");

    for (c, n) in clients.iter_mut().zip(&sent) {
        c.send(&vec![b'u'; BODY - n]).await;
    }
    for c in &mut clients {
        let r = c.response().await;
        assert_eq!(status(&r), 200, "{r}");
        assert_eq!(body(&r), "b", "{r}");
    }
    assert_eq!(b.drain(), 8);
}
