//! Upstream TLS: rustls backends on loopback see the exact request bytes over TLS, the SNI
//! and ALPN the pool asks for; a certificate from the wrong CA is a counted 502; health
//! checks of a TLS pool go over TLS; `protocol = "h2"` negotiates h2 by ALPN.

use crate::harness::*;
use crate::pools::wait_until;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Two CAs in a temporary directory: the backend's certificate is signed by `good`.
struct Pki {
    dir: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

fn ca(dir: &std::path::Path, file: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join(file), ca.pem()).unwrap();
    ca
}

/// The backend certificate names `backend.test` and 127.0.0.1.
fn pki(tag: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("portier-l7-utls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = ca(&dir, "good-ca.pem");
    let _other = ca(&dir, "other-ca.pem");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["backend.test".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &good).unwrap();
    Pki {
        chain: vec![cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        dir,
    }
}

/// What a TLS backend saw of one request.
#[derive(Debug)]
struct Seen {
    sni: Option<String>,
    alpn: Option<Vec<u8>>,
    request: String,
}

struct TlsBackend {
    addr: std::net::SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsBackend {
    async fn seen(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.seen.recv())
            .await
            .expect("TLS backend got no request in time")
            .expect("backend gone")
    }
}

fn server_config(pki: &Pki, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), PrivateKeyDer::Pkcs8(pki.key.clone_key()))
        .unwrap();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// An HTTP/1.1 backend behind rustls: records SNI, ALPN and each request's exact bytes,
/// answers 200 with body `tls`, keeps the connection.
async fn tls_backend(pki: &Pki) -> TlsBackend {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(pki, &[b"http/1.1"]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, seen) = mpsc::unbounded_channel();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let count = handshakes.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx, count) = (acceptor.clone(), tx.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let mut r = BufReader::new(tls);
                while let Some(req) = read_message(&mut r, false).await {
                    let _ = tx.send(Seen {
                        sni: sni.clone(),
                        alpn: alpn.clone(),
                        request: String::from_utf8_lossy(&req).into_owned(),
                    });
                    if r.get_mut().write_all(&ok("tls")).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    TlsBackend {
        addr,
        seen,
        handshakes,
        task,
    }
}

fn tls_pool(b: &TlsBackend, keys: &str) -> String {
    format!(
        "[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n\
         [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
         [[l7.pool]]\nname = \"p\"\nservers = [{{ address = \"{}\" }}]\ntls = true\n{keys}\n",
        b.addr
    )
}

fn metric(p: &portier::l7::L7, name: &str) -> u64 {
    p.metrics()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

#[tokio::test]
async fn request_reaches_the_backend_over_tls_exactly_with_sni() {
    let pki = pki("exact");
    let mut b = tls_backend(&pki).await;
    let ca = pki.file("good-ca.pem");
    let (_p, addr) = proxy(&tls_pool(
        &b,
        &format!("ca_file = \"{ca}\"\nsni = \"backend.test\""),
    ));
    let mut c = Client::connect(addr).await;
    c.send(b"GET /a?b=c HTTP/1.1\r\nHost: todo.example\r\nAccept: */*\r\n\r\n")
        .await;
    let r = c.response().await;
    assert_eq!((status(&r), body(&r)), (200, "tls"), "{r}");
    let seen = b.seen().await;
    assert_eq!(seen.sni.as_deref(), Some("backend.test"));
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(
        seen.request,
        "GET /a?b=c HTTP/1.1\r\n\
         Host: todo.example\r\n\
         Accept: */*\r\n\
         x-forwarded-for: 127.0.0.1\r\n\
         x-forwarded-proto: http\r\n\
         x-forwarded-host: todo.example\r\n\
         forwarded: for=127.0.0.1;proto=http;host=todo.example\r\n\r\n"
    );
    // The next request rides the kept-alive TLS connection.
    c.send(&get("todo.example", "/again")).await;
    assert_eq!(status(&c.response().await), 200);
    assert!(
        b.seen()
            .await
            .request
            .starts_with("GET /again HTTP/1.1\r\n")
    );
    assert_eq!(b.handshakes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn without_sni_the_certificate_must_name_the_address() {
    let pki = pki("nosni");
    let mut b = tls_backend(&pki).await;
    let ca = pki.file("good-ca.pem");
    let (_p, addr) = proxy(&tls_pool(&b, &format!("ca_file = \"{ca}\"")));
    let r = exchange(addr, &get("x", "/")).await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(b.seen().await.sni, None);
}

#[tokio::test]
async fn wrong_ca_is_a_counted_502_and_verify_false_is_explicit() {
    let pki = pki("wrongca");
    let mut b = tls_backend(&pki).await;
    let other = pki.file("other-ca.pem");
    let (mut p, addr) = proxy(&tls_pool(
        &b,
        &format!("ca_file = \"{other}\"\nsni = \"backend.test\"\nretries = 0"),
    ));
    let r = exchange(addr, &get("x", "/")).await;
    assert_eq!(status(&r), 502, "{r}");
    assert_eq!(metric(&p, "portier_l7_server_tls_errors_total"), 1);
    assert_eq!(metric(&p, "portier_l7_pool_upstream_errors_total"), 1);
    assert!(
        b.seen.try_recv().is_err(),
        "a request crossed a refused TLS"
    );
    // The same backend with verification off: served (and logged as insecure).
    reconfigure(
        &mut p,
        &tls_pool(&b, "verify = false\nsni = \"backend.test\"\nretries = 0"),
    );
    let r = exchange(addr, &get("x", "/")).await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(b.seen().await.sni.as_deref(), Some("backend.test"));
}

#[tokio::test]
async fn health_checks_of_a_tls_pool_use_tls() {
    let pki = pki("health");
    let mut b = tls_backend(&pki).await;
    let ca = pki.file("good-ca.pem");
    let (p, _addr) = proxy(&tls_pool(
        &b,
        &format!(
            "ca_file = \"{ca}\"\nsni = \"backend.test\"\n\
             health = {{ path = \"/health\", interval_ms = 50, timeout_ms = 500, rise = 1, fall = 1 }}"
        ),
    ));
    let seen = b.seen().await;
    assert!(
        seen.request
            .starts_with("GET /health HTTP/1.1\r\nhost: backend.test\r\n"),
        "{seen:?}"
    );
    assert_eq!(seen.sni.as_deref(), Some("backend.test"));
    assert_eq!(p.status()["pools"]["p"]["servers"][0]["healthy"], true);

    // The wrong CA: the check's handshake fails and the server goes down.
    let other = pki.file("other-ca.pem");
    let (p, _addr) = proxy(&tls_pool(
        &b,
        &format!(
            "ca_file = \"{other}\"\n\
             health = {{ path = \"/health\", interval_ms = 50, timeout_ms = 500, rise = 1, fall = 1 }}"
        ),
    ));
    wait_until(|| p.status()["pools"]["p"]["servers"][0]["healthy"] == false).await;
}

#[tokio::test]
async fn h2_pool_negotiates_h2_by_alpn() {
    let pki = pki("h2");
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&pki, &[b"h2", b"http/1.1"]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let _ = tx.send((
                        alpn.clone(),
                        req.version(),
                        req.uri().to_string(),
                        req.headers().get("x-forwarded-host").cloned(),
                    ));
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from("h2"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let ca = pki.file("good-ca.pem");
    let (_p, addr) = proxy(&format!(
        "[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n\
         [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
         [[l7.pool]]\nname = \"p\"\nservers = [{{ address = \"{backend}\" }}]\n\
         tls = true\nprotocol = \"h2\"\nca_file = \"{ca}\"\nsni = \"backend.test\"\n\
         health = {{ path = \"/health\", interval_ms = 50, timeout_ms = 500, rise = 1, fall = 1 }}\n"
    ));
    let r = exchange(addr, &get("todo.example", "/h2?x=1")).await;
    assert_eq!((status(&r), body(&r)), (200, "h2"), "{r}");
    // The proxied request and, in between, health checks: HTTP/2 over TLS as well.
    let (mut proxied, mut checked) = (false, false);
    while !(proxied && checked) {
        let (alpn, version, uri, xfh) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(version, http::Version::HTTP_2);
        if uri == "https://backend.test/health" {
            checked = true;
        } else {
            assert_eq!(uri, "https://todo.example/h2?x=1");
            assert_eq!(xfh.unwrap(), "todo.example");
            proxied = true;
        }
    }
    server.abort();
}

#[tokio::test]
async fn a_servers_own_sni_wins_over_the_pools() {
    let pki = pki("ownsni");
    let mut b = tls_backend(&pki).await;
    let ca = pki.file("good-ca.pem");
    // The pool's name is not on the certificate: only the server's own one makes it work.
    let config = tls_pool(&b, &format!("ca_file = \"{ca}\"\nsni = \"wrong.test\"")).replace(
        &format!("{{ address = \"{}\" }}", b.addr),
        &format!("{{ address = \"{}\", sni = \"backend.test\" }}", b.addr),
    );
    let (_p, addr) = proxy(&config);
    let r = exchange(addr, &get("x", "/")).await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(b.seen().await.sni.as_deref(), Some("backend.test"));
}

#[tokio::test]
async fn an_upload_a_tls_server_refuses_on_its_head_gets_the_servers_answer() {
    // A TLS server with a size limit: it answers on the head and closes, the body unread, so
    // its kernel resets the connection behind the answer.
    let pki = pki("refuse");
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&pki, &[b"http/1.1"]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut r = BufReader::new(tls);
            // The head only: the body stays unread.
            let (mut head, mut line) = (Vec::new(), Vec::new());
            while !head.ends_with(b"\r\n\r\n") {
                line.clear();
                match r.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => head.extend_from_slice(&line),
                }
            }
            if head.ends_with(b"\r\n\r\n") {
                let _ = r
                    .get_mut()
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
                    .await;
                // Its write side shut first, as a server closing at once does: the answer
                // and close_notify leave before the close (the body unread) resets the
                // connection. Without it the kernel may drop the answer still queued.
                let _ = r.get_mut().shutdown().await;
            }
        }
    });
    let ca = pki.file("good-ca.pem");
    let (p, addr) = proxy(&format!(
        "[[l7.listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n\
         [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
         [[l7.pool]]\nname = \"p\"\neject_after = 1\ntls = true\nca_file = \"{ca}\"\n\
         sni = \"backend.test\"\nservers = [{{ address = \"{server}\" }}]\n"
    ));
    let n: usize = 4 << 20;
    // Whether the answer or the reset is seen first is a race: several tries.
    for _ in 0..5 {
        let mut c = Client::connect(addr).await;
        c.send(format!("PUT /doc HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n").as_bytes())
            .await;
        // send_reading fails the test if the client's connection stays open.
        let text = send_reading(&mut c, &vec![b'u'; n]).await;
        assert!(
            text.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\ntoo large"), "{text}");
    }
    assert!(
        p.metrics()
            .lines()
            .any(|l| l.starts_with("portier_l7_server_failures_total") && l.ends_with(" 0")),
        "{}",
        p.metrics()
    );
    task.abort();
}
