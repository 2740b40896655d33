//! TLS termination: certificate chosen by SNI (exact and wildcard names), ALPN h2 and
//! http/1.1, and X-Forwarded-Proto https.

use crate::harness::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Pki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
    wildcard: CertificateDer<'static>,
    other: CertificateDer<'static>,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA and two leaf certificates, in a directory of this call's own: the tests run in
/// parallel, and with one directory per process the second test's files replaced the
/// first's (another CA) or its drop removed them before the first's proxy read them.
fn pki() -> Pki {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("portier-l7-tls-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |name: &str, file: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        cert.der().clone()
    };
    let other = leaf("other.test", "other");
    let wildcard = leaf("*.lab.example", "wildcard");
    Pki {
        ca: ca.der().clone(),
        dir,
        wildcard,
        other,
    }
}

fn client(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Arc::new(client_config(ca, alpn)))
}

fn client_config(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

#[tokio::test]
async fn sni_picks_the_certificate_and_alpn_the_protocol() {
    let pki = pki();
    let mut b = Backend::named("b").await;
    let d = pki.dir.display();
    let listener = format!(
        "protocols = [\"http1\", \"h2\"]\n\
         [[l7.listener.certificate]]\ncert = \"{d}/other.pem\"\nkey = \"{d}/other.key\"\n\
         [[l7.listener.certificate]]\ncert = \"{d}/wildcard.pem\"\nkey = \"{d}/wildcard.key\"\n"
    );
    let (_p, addr) = proxy(&simple(&[&b], "", &listener));

    // HTTP/1.1 to todo.lab.example: the wildcard certificate (verified by the client).
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = client(&pki.ca, &[b"http/1.1"])
        .connect(ServerName::try_from("todo.lab.example").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.peer_certificates().unwrap()[0],
        pki.wildcard
    );
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(b"GET / HTTP/1.1\r\nHost: todo.lab.example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    tls.read_to_end(&mut resp).await.unwrap();
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    let got = b.request().await;
    assert!(got.contains("x-forwarded-proto: https\r\n"), "{got}");
    assert!(
        got.contains("forwarded: for=127.0.0.1;proto=https;host=todo.lab.example\r\n"),
        "{got}"
    );

    // other.test: the exact certificate.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = client(&pki.ca, &[b"http/1.1"])
        .connect(ServerName::try_from("other.test").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], pki.other);

    // h2 by ALPN.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = client(&pki.ca, &[b"h2", b"http/1.1"])
        .connect(ServerName::try_from("shop.lab.example").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://shop.lab.example/h2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "b");
    let got = b.request().await;
    assert!(
        got.starts_with("GET /h2 HTTP/1.1\r\nhost: shop.lab.example\r\n"),
        "{got}"
    );

    // A name no certificate covers: the first (default) certificate, which the client refuses.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let refused = client(&pki.ca, &[b"http/1.1"])
        .connect(ServerName::try_from("nothing.test").unwrap(), tcp)
        .await;
    assert!(refused.is_err());
}

/// A client returning after many others have come and gone resumes its session: the
/// server's tickets hold the session, not a cache of the server's that the others' sessions
/// (two tickets each, 300 clients) would have pushed it out of.
#[tokio::test]
async fn a_returning_client_resumes_after_hundreds_of_others() {
    let pki = pki();
    let b = Backend::named("b").await;
    let d = pki.dir.display();
    let listener = format!(
        "protocols = [\"http1\"]\n\
         [[l7.listener.certificate]]\ncert = \"{d}/other.pem\"\nkey = \"{d}/other.key\"\n"
    );
    let (_p, addr) = proxy(&simple(&[&b], "", &listener));
    let name = ServerName::try_from("other.test").unwrap();
    // A whole exchange, so that the tickets sent after the handshake have been read.
    async fn exchange(
        connector: &tokio_rustls::TlsConnector,
        name: &ServerName<'static>,
        addr: std::net::SocketAddr,
    ) -> rustls::HandshakeKind {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut resp = Vec::new();
        tls.read_to_end(&mut resp).await.unwrap();
        assert!(resp.starts_with(b"HTTP/1.1 200 OK\r\n"));
        tls.get_ref().1.handshake_kind().unwrap()
    }
    let returning = client(&pki.ca, &[b"http/1.1"]);
    assert_eq!(
        exchange(&returning, &name, addr).await,
        rustls::HandshakeKind::Full
    );
    let others = {
        let mut config = client_config(&pki.ca, &[b"http/1.1"]);
        // Each of them a new client: a full handshake, new sessions on the server.
        config.resumption = rustls::client::Resumption::disabled();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };
    for _ in 0..300 {
        assert_eq!(
            exchange(&others, &name, addr).await,
            rustls::HandshakeKind::Full
        );
    }
    assert_eq!(
        exchange(&returning, &name, addr).await,
        rustls::HandshakeKind::Resumed
    );
}

#[test]
fn bad_certificate_files_are_reported() {
    let pki = pki();
    let d = pki.dir.display();
    let text = format!(
        "[node]\nname = \"t\"\n[[l7.listener]]\nname = \"tls\"\nbind = \"127.0.0.1:0\"\n\
         [[l7.listener.certificate]]\ncert = \"{d}/missing.pem\"\nkey = \"{d}/other.key\"\n\
         [[l7.pool]]\nname = \"p\"\nservers = []\n"
    );
    let config = portier::config::parse(&text, "t.toml").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _g = rt.enter();
    let mut p = portier::l7::L7::new();
    let err = p
        .apply(config.l7.as_ref().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.pem"), "{err}");
    // Mismatched key.
    let text = text.replace("missing.pem", "wildcard.pem");
    let config = portier::config::parse(&text, "t.toml").unwrap();
    let err = p
        .apply(config.l7.as_ref().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match"), "{err}");
}
