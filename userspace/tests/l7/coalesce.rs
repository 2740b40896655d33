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
