//! TLS termination: rustls with the certificate chosen by SNI (wildcards included, as the
//! certificate's own names say), ALPN offering what the listener serves, and session
//! tickets for resumption.

use crate::config::{CertificateConfig, HttpProtocol};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::{Arc, OnceLock};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

struct Entry {
    key: Arc<CertifiedKey>,
    leaf: CertificateDer<'static>,
}

/// Picks the first certificate (in config order) valid for the SNI name; the first one when
/// there is no SNI or nothing matches, as a default certificate.
#[derive(Debug)]
pub struct SniResolver {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Entry")
    }
}

impl SniResolver {
    pub fn choose(&self, sni: Option<&str>) -> Option<usize> {
        let by_name = sni.and_then(|name| {
            let name = ServerName::try_from(name).ok()?;
            self.entries.iter().position(|e| {
                webpki::EndEntityCert::try_from(&e.leaf)
                    .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
            })
        });
        by_name.or((!self.entries.is_empty()).then_some(0))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = self.choose(hello.server_name())?;
        Some(self.entries[i].key.clone())
    }
}

fn load_one(c: &CertificateConfig) -> Result<Entry, TlsError> {
    let file_err = |path: &std::path::Path, why: String| TlsError::File {
        path: path.display().to_string(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
        .map_err(|e| file_err(&c.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(&c.cert, e.to_string()))?;
    let Some(leaf) = chain.first().cloned() else {
        return Err(file_err(&c.cert, "no certificate in the file".into()));
    };
    webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| file_err(&c.cert, format!("not a usable certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|e| file_err(&c.key, e.to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| file_err(&c.key, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| file_err(&c.key, format!("does not match {}: {e}", c.cert.display())))?;
    Ok(Entry {
        key: Arc::new(certified),
        leaf,
    })
}

pub fn resolver(certs: &[CertificateConfig]) -> Result<SniResolver, TlsError> {
    Ok(SniResolver {
        entries: certs.iter().map(load_one).collect::<Result<_, _>>()?,
    })
}

/// One ticket key set for the process, rotated every 6 hours by rustls (tickets of the key
/// before still accepted): listeners share it, and a reload keeps it, so a reload does not
/// cost every returning client a full handshake.
fn ticketer() -> Result<Arc<dyn ProducesTickets>, TlsError> {
    static TICKETER: OnceLock<Arc<dyn ProducesTickets>> = OnceLock::new();
    if let Some(t) = TICKETER.get() {
        return Ok(t.clone());
    }
    let made = rustls::crypto::ring::Ticketer::new()?;
    Ok(TICKETER.get_or_init(|| made).clone())
}

pub fn server_config(
    certs: &[CertificateConfig],
    protocols: &[HttpProtocol],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver(certs)?));
    // Stateless tickets, as HAProxy (OpenSSL) sends by default: without them rustls keeps
    // resumable sessions in a cache of 256, and past 128 clients resuming (two tickets each)
    // a returning client's session is gone and it pays a full handshake.
    config.ticketer = ticketer()?;
    // Server preference: h2 first when offered.
    if protocols.contains(&HttpProtocol::H2) {
        config.alpn_protocols.push(b"h2".to_vec());
    }
    if protocols.contains(&HttpProtocol::Http1) {
        config.alpn_protocols.push(b"http/1.1".to_vec());
        config.alpn_protocols.push(b"http/1.0".to_vec());
    }
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_shares_the_process_ticket_keys() {
        // A reload builds its listeners' configs anew; their tickets must still open.
        let (a, b) = (ticketer(), ticketer());
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("no ticketer");
        };
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.enabled());
    }
}
