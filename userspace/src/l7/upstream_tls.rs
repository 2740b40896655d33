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

    /// The name a server's certificate is checked against: the server's own `sni`, else
    /// the pool's, else the server's IP address (rustls sends no SNI for an address).
    pub fn name_for(&self, addr: SocketAddr, own: Option<&str>) -> ServerName<'static> {
        own.and_then(|n| ServerName::try_from(n).ok())
            .map(|n| n.to_owned())
            .or_else(|| self.sni.clone())
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
    }
}

/// One server's TLS: its pool's connector and the name it is checked against.
#[derive(Debug, PartialEq)]
pub struct ServerTls {
    connector: Arc<Connector>,
    name: ServerName<'static>,
}

impl ServerTls {
    pub fn new(connector: Arc<Connector>, addr: SocketAddr, own_sni: Option<&str>) -> ServerTls {
        let name = connector.name_for(addr, own_sni);
        ServerTls { connector, name }
    }

    /// The SNI sent, if a name (not an address) is checked: the health check's Host.
    pub fn sni(&self) -> Option<&str> {
        match &self.name {
            ServerName::DnsName(n) => Some(n.as_ref()),
            _ => None,
        }
    }

    pub async fn connect(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector
            .connector
            .connect(self.name.clone(), tcp)
            .await
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
pub fn for_pools(pools: &[PoolConfig]) -> Result<HashMap<String, Arc<Connector>>, String> {
    let mut out = HashMap::new();
    for p in pools {
        let Some(tls) = &p.tls else { continue };
        let c = Connector::new(tls, p.protocol).map_err(|e| format!("pool {}: {e}", p.name))?;
        out.insert(p.name.clone(), Arc::new(c));
    }
    Ok(out)
}

/// Logs the pools of `next` that turn certificate checks off, unless `previous` had them so
/// already: once at startup and once per change, not on every reload or runtime command.
pub fn warn_insecure(previous: &[PoolConfig], next: &[PoolConfig]) {
    let insecure = |p: &PoolConfig| p.tls.as_ref().is_some_and(|t| !t.verify);
    for p in next.iter().filter(|p| insecure(p)) {
        if !previous.iter().any(|o| o.name == p.name && insecure(o)) {
            tracing::warn!(
                pool = %p.name,
                "INSECURE: upstream TLS certificates are not verified (verify = false)"
            );
        }
    }
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
        let c = Arc::new(Connector::new(&cfg(None, None, false), HttpProtocol::Http1).unwrap());
        assert_eq!(
            c.name_for(addr, None),
            ServerName::IpAddress("192.0.2.7".parse::<std::net::IpAddr>().unwrap().into())
        );
        assert_eq!(ServerTls::new(c.clone(), addr, None).sni(), None);
        let own = ServerTls::new(c, addr, Some("one.internal"));
        assert_eq!(own.sni(), Some("one.internal"));
        let c = Arc::new(
            Connector::new(&cfg(None, Some("api.internal"), false), HttpProtocol::H2).unwrap(),
        );
        assert_eq!(
            c.name_for(addr, None),
            ServerName::try_from("api.internal").unwrap()
        );
        // The server's own name wins over the pool's.
        assert_eq!(
            c.name_for(addr, Some("one.internal")),
            ServerName::try_from("one.internal").unwrap()
        );
        assert!(ServerTls::new(c.clone(), addr, None) != ServerTls::new(c, addr, Some("x.test")));
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
