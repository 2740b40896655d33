//! TLS to backends: one rustls client config per pool (its CA file or the system store, or
//! no verification when the config asks for it), the name each server is checked against,
//! and ALPN matching the pool's HTTP version.

use crate::config::{HttpProtocol, PoolConfig, UpstreamTlsConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A pool's TLS client side.
pub struct Connector {
    connector: TlsConnector,
    sni: Option<ServerName<'static>>,
    /// Settings, protocol and the trusted roots' bytes: equal identities give equal
    /// connections, so servers (and their keep-alive connections) survive a reload only
    /// when this is unchanged, e.g. not after the CA file was replaced.
    identity: u64,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("sni", &self.sni)
            .field("identity", &self.identity)
            .finish()
    }
}

impl PartialEq for Connector {
    fn eq(&self, other: &Self) -> bool {
        self.identity == other.identity
    }
}

impl Connector {
    pub fn new(config: &UpstreamTlsConfig, protocol: HttpProtocol) -> Result<Connector, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut identity = std::collections::hash_map::DefaultHasher::new();
        config.hash(&mut identity);
        protocol.hash(&mut identity);
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let mut client = if config.verify {
            let roots = roots(config.ca_file.as_deref())?;
            for r in &roots {
                r.as_ref().hash(&mut identity);
            }
            let mut store = rustls::RootCertStore::empty();
            let (added, _ignored) = store.add_parsable_certificates(roots);
            if added == 0 {
                return Err(match &config.ca_file {
                    Some(f) => format!("{}: no usable CA certificate", f.display()),
                    None => "no usable CA certificate in the system store".into(),
                });
            }
            builder.with_root_certificates(store).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth()
        };
        client.alpn_protocols = match protocol {
            HttpProtocol::H2 | HttpProtocol::H2c => vec![b"h2".to_vec()],
            HttpProtocol::Http1 => vec![b"http/1.1".to_vec()],
        };
        let sni = match &config.sni {
            Some(name) => Some(
                ServerName::try_from(name.as_str())
                    .map_err(|e| format!("sni {name}: {e}"))?
                    .to_owned(),
            ),
            None => None,
        };
        Ok(Connector {
            connector: TlsConnector::from(Arc::new(client)),
            sni,
            identity: identity.finish(),
        })
    }

    /// The name a server's certificate is checked against: the configured SNI, else the
    /// server's IP address (rustls sends no SNI for an address).
    pub fn name_for(&self, addr: SocketAddr) -> ServerName<'static> {
        self.sni
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }

    /// The configured SNI, for the health check's Host header.
    pub fn sni(&self) -> Option<&ServerName<'static>> {
        self.sni.as_ref()
    }

    pub async fn connect(
        &self,
        addr: SocketAddr,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name_for(addr), tcp).await
    }
}

/// The trust anchors: the CA file's certificates, or the system store.
fn roots(ca_file: Option<&std::path::Path>) -> Result<Vec<CertificateDer<'static>>, String> {
    match ca_file {
        Some(path) => CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", path.display())),
        None => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty()
                && let Some(e) = found.errors.first()
            {
                return Err(format!("system CA store: {e}"));
            }
            Ok(found.certs)
        }
    }
}

/// Connectors for every TLS pool of a config, by pool name; the first failure names the pool.
/// Pools with `verify = false` are logged as insecure each time they are (re)built.
pub fn for_pools(pools: &[PoolConfig]) -> Result<HashMap<String, Arc<Connector>>, String> {
    let mut out = HashMap::new();
    for p in pools {
        let Some(tls) = &p.tls else { continue };
        let c = Connector::new(tls, p.protocol).map_err(|e| format!("pool {}: {e}", p.name))?;
        if !tls.verify {
            tracing::warn!(
                pool = %p.name,
                "INSECURE: upstream TLS certificates are not verified (verify = false)"
            );
        }
        out.insert(p.name.clone(), Arc::new(c));
    }
    Ok(out)
}

/// `verify = false`: any certificate is accepted; handshake signatures are still checked,
/// so the connection is at least bound to the key the server presented.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ca_file: Option<&str>, sni: Option<&str>, verify: bool) -> UpstreamTlsConfig {
        UpstreamTlsConfig {
            ca_file: ca_file.map(Into::into),
            sni: sni.map(Into::into),
            verify,
        }
    }

    #[test]
    fn name_is_the_sni_or_the_address() {
        let addr: SocketAddr = "192.0.2.7:443".parse().unwrap();
        let c = Connector::new(&cfg(None, None, false), HttpProtocol::Http1).unwrap();
        assert_eq!(
            c.name_for(addr),
            ServerName::IpAddress("192.0.2.7".parse::<std::net::IpAddr>().unwrap().into())
        );
        let c = Connector::new(&cfg(None, Some("api.internal"), false), HttpProtocol::H2).unwrap();
        assert_eq!(
            c.name_for(addr),
            ServerName::try_from("api.internal").unwrap()
        );
    }

    #[test]
    fn identity_follows_settings_and_protocol() {
        let a = Connector::new(&cfg(None, None, false), HttpProtocol::Http1).unwrap();
        let b = Connector::new(&cfg(None, None, false), HttpProtocol::Http1).unwrap();
        let h2 = Connector::new(&cfg(None, None, false), HttpProtocol::H2).unwrap();
        let named = Connector::new(&cfg(None, Some("x.test"), false), HttpProtocol::Http1).unwrap();
        assert!(a == b);
        assert!(a != h2 && a != named);
    }

    #[test]
    fn bad_ca_files_are_named() {
        let dir = std::env::temp_dir().join(format!("portier-utls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = Connector::new(
            &cfg(Some(missing.to_str().unwrap()), None, true),
            HttpProtocol::Http1,
        )
        .unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Connector::new(
            &cfg(Some(empty.to_str().unwrap()), None, true),
            HttpProtocol::Http1,
        )
        .unwrap_err();
        assert!(e.contains("no usable CA certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
        let text = format!(
            "[node]\nname = \"t\"\n[[l7.pool]]\nname = \"api\"\nservers = []\n\
             tls = true\nca_file = \"{}\"\n",
            missing.display()
        );
        let config = crate::config::parse(&text, "t.toml").unwrap();
        let e = for_pools(&config.l7.unwrap().pools).unwrap_err();
        assert!(e.starts_with("pool api: "), "{e}");
    }
}
