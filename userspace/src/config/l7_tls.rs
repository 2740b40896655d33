//! Upstream TLS of an `[[l7.pool]]`: the pool keys that make the proxy talk TLS to its
//! servers.
//!
//! ```toml
//! [[l7.pool]]
//! name = "api"
//! protocol = "h2"                  # h2 needs tls; http1 over TLS offers ALPN http/1.1
//! tls = true
//! ca_file = "/etc/portier/backend-ca.pem"   # default: the system's CA store
//! sni = "api.internal"             # default: no SNI, the certificate must name the IP
//! verify = false                   # default true; false is logged as insecure
//! servers = [{ address = "10.0.0.5:443", sni = "api-1.internal" }]  # per-server SNI
//! ```

use std::path::PathBuf;

use serde::Serialize;

use super::reader::{Located, Table};
use super::report::Report;

/// The pool keys this module reads.
pub(super) const KEYS: &[&str] = &["tls", "ca_file", "sni", "verify"];

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct UpstreamTlsConfig {
    /// PEM CA certificates the servers' chains must lead to; the system store when absent.
    pub ca_file: Option<PathBuf>,
    /// The name sent as SNI and checked against the certificate; without it no SNI is sent
    /// and the certificate must be valid for the server's IP address.
    pub sni: Option<String>,
    /// Check the certificate chain and name. Off only on request, and then logged.
    pub verify: bool,
}

/// `Some(None)`: a plain pool; `None`: a problem was reported.
pub(super) fn read(
    report: &mut Report<'_>,
    table: &Table<'_, '_>,
) -> Option<Option<UpstreamTlsConfig>> {
    let tls = table.optional_bool(report, "tls");
    let ca_file = table.optional_str(report, "ca_file");
    let sni = table.optional_str(report, "sni");
    let verify = table.optional_bool(report, "verify");
    let on = tls.as_ref().is_some_and(|t| t.value);
    if !on {
        // Settings that would silently do nothing point at their own key.
        let mut stray = false;
        let located = [
            ca_file.as_ref().map(|v| (v.offset, v.key.clone())),
            sni.as_ref().map(|v| (v.offset, v.key.clone())),
            verify.as_ref().map(|v| (v.offset, v.key.clone())),
        ];
        for (offset, key) in located.into_iter().flatten() {
            report.add(offset, key, "only applies with tls = true");
            stray = true;
        }
        let bad_type = table.has("tls") && tls.is_none();
        return (!stray && !bad_type).then_some(None);
    }
    let mut ok = true;
    let verify = verify.is_none_or(|v| v.value);
    if let Some(c) = &ca_file {
        if c.value.is_empty() {
            report.add(c.offset, c.key.clone(), "must name a PEM file");
            ok = false;
        } else if !verify {
            report.add(
                c.offset,
                c.key.clone(),
                "is unused with verify = false: remove one of the two",
            );
            ok = false;
        }
    }
    if let Some(s) = &sni
        && !sni_name(report, s)
    {
        ok = false;
    }
    ok.then(|| {
        Some(UpstreamTlsConfig {
            ca_file: ca_file.map(|c| PathBuf::from(c.value)),
            sni: sni.map(|s| s.value.to_ascii_lowercase()),
            verify,
        })
    })
}

/// A server's own `sni` (inside `servers = [{ .. }]`); `None` when a problem was reported.
pub(super) fn server_sni(
    report: &mut Report<'_>,
    server: &Table<'_, '_>,
    with_tls: bool,
) -> Option<Option<String>> {
    let Some(v) = server.optional_str(report, "sni") else {
        return (!server.has("sni")).then_some(None);
    };
    if !with_tls {
        report.add(v.offset, v.key, "only applies with tls = true on the pool");
        return None;
    }
    sni_name(report, &v).then(|| Some(v.value.to_ascii_lowercase()))
}

fn sni_name(report: &mut Report<'_>, v: &Located<&str>) -> bool {
    let ok = rustls_pki_types::ServerName::try_from(v.value).is_ok();
    if !ok {
        report.add(
            v.offset,
            v.key.clone(),
            format!("\"{}\" is not a DNS name or IP address", v.value),
        );
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::test_support::{FILE, L7_BASE, assert_one};
    use super::*;

    /// The shared L7 base with the server on a TLS port.
    fn base() -> String {
        L7_BASE.replace(":8080\"", ":8443\"")
    }

    fn pool_tls(text: &str) -> Option<UpstreamTlsConfig> {
        let full = format!("{}{text}", base());
        parse(&full, FILE).unwrap().l7.unwrap().pools[0].tls.clone()
    }

    #[test]
    fn defaults_and_every_key() {
        assert_eq!(pool_tls(""), None);
        assert_eq!(pool_tls("tls = false\n"), None);
        assert_eq!(
            pool_tls("tls = true\n"),
            Some(UpstreamTlsConfig {
                ca_file: None,
                sni: None,
                verify: true
            })
        );
        assert_eq!(
            pool_tls("tls = true\nca_file = \"/etc/ca.pem\"\nsni = \"Api.Internal\"\n"),
            Some(UpstreamTlsConfig {
                ca_file: Some("/etc/ca.pem".into()),
                sni: Some("api.internal".into()),
                verify: true
            })
        );
        let full = format!(
            "{}tls = true\n",
            base().replace("8443\" }", "8443\", sni = \"A.internal\" }")
        );
        let pool = &parse(&full, FILE).unwrap().l7.unwrap().pools[0];
        assert_eq!(pool.servers[0].sni.as_deref(), Some("a.internal"));
        let c = pool_tls("tls = true\nverify = false\nprotocol = \"h2\"\n").unwrap();
        assert!(!c.verify);
        let full = format!("{}tls = true\nprotocol = \"h2\"\n", base());
        assert_eq!(
            parse(&full, FILE).unwrap().l7.unwrap().pools[0].protocol,
            super::super::HttpProtocol::H2
        );
    }

    #[test]
    fn problems_name_the_key() {
        let at = |extra: &str, line: usize, key: &str, fragment: &str| {
            assert_one(&format!("{}{extra}", base()), line, key, fragment);
        };
        at("tls = 1\n", 15, "l7.pool[0].tls", "a boolean");
        at(
            "ca_file = \"/etc/ca.pem\"\n",
            15,
            "l7.pool[0].ca_file",
            "only applies with tls = true",
        );
        at(
            "tls = false\nsni = \"a.example\"\n",
            16,
            "l7.pool[0].sni",
            "only applies with tls = true",
        );
        at(
            "tls = true\nsni = \"not a name\"\n",
            16,
            "l7.pool[0].sni",
            "not a DNS name or IP address",
        );
        at(
            "tls = true\nca_file = \"\"\n",
            16,
            "l7.pool[0].ca_file",
            "must name a PEM file",
        );
        at(
            "tls = true\nverify = false\nca_file = \"/etc/ca.pem\"\n",
            17,
            "l7.pool[0].ca_file",
            "unused with verify = false",
        );
        at(
            "tls = true\nverify = \"no\"\n",
            16,
            "l7.pool[0].verify",
            "a boolean",
        );
        let server_sni = |sni: &str, extra: &str| {
            format!(
                "{}{extra}",
                base().replace("8443\" }", &format!("8443\", sni = \"{sni}\" }}"))
            )
        };
        assert_one(
            &server_sni("a.internal", ""),
            14,
            "l7.pool[0].servers[0].sni",
            "only applies with tls = true on the pool",
        );
        assert_one(
            &server_sni("a b", "tls = true\n"),
            14,
            "l7.pool[0].servers[0].sni",
            "not a DNS name",
        );
        at(
            "protocol = \"h2\"\n",
            15,
            "l7.pool[0].protocol",
            "set tls = true",
        );
        at(
            "tls = true\nprotocol = \"h2c\"\n",
            16,
            "l7.pool[0].protocol",
            "with tls = true use h2",
        );
    }
}
