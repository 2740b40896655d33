use crate::config::{HealthCheckConfig, HealthKind};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One check of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp {
        addr: SocketAddr,
    },
    Http {
        addr: SocketAddr,
        method: String,
        path: String,
        host: String,
        expect_status: u16,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("timed out")]
    Timeout,
    #[error("connect: {0}")]
    Connect(String),
    #[error("i/o: {0}")]
    Io(String),
    #[error("malformed response")]
    Malformed,
    #[error("status {got}, expected {expected}")]
    Status { got: u16, expected: u16 },
}

impl Probe {
    /// The probe a health-check config describes for `backend` (whose service listens on
    /// `service_port`).
    pub fn for_backend(check: &HealthCheckConfig, backend: IpAddr, service_port: u16) -> Probe {
        let addr = SocketAddr::new(backend, check.port.unwrap_or(service_port));
        match (&check.kind, &check.http) {
            (HealthKind::Http, Some(h)) => Probe::Http {
                addr,
                method: h.method.clone(),
                path: h.path.clone(),
                host: h.host.clone().unwrap_or_else(|| match backend {
                    IpAddr::V4(a) => a.to_string(),
                    IpAddr::V6(a) => format!("[{a}]"),
                }),
                expect_status: h.expect_status,
            },
            _ => Probe::Tcp { addr },
        }
    }
}

/// Largest response head we read: a status line is all we need.
const MAX_HEAD: usize = 8192;

pub async fn run_probe(probe: &Probe, timeout: Duration) -> Result<(), ProbeError> {
    tokio::time::timeout(timeout, probe_inner(probe))
        .await
        .map_err(|_| ProbeError::Timeout)?
}

async fn probe_inner(probe: &Probe) -> Result<(), ProbeError> {
    match probe {
        Probe::Tcp { addr } => {
            TcpStream::connect(addr)
                .await
                .map_err(|e| ProbeError::Connect(e.to_string()))?;
            Ok(())
        }
        Probe::Http {
            addr,
            method,
            path,
            host,
            expect_status,
        } => {
            let mut s = TcpStream::connect(addr)
                .await
                .map_err(|e| ProbeError::Connect(e.to_string()))?;
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portier-health\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| ProbeError::Io(e.to_string()))?;
            let mut head = Vec::with_capacity(256);
            let mut buf = [0u8; 1024];
            while !head.windows(2).any(|w| w == b"\r\n") {
                let n = s
                    .read(&mut buf)
                    .await
                    .map_err(|e| ProbeError::Io(e.to_string()))?;
                if n == 0 || head.len() + n > MAX_HEAD {
                    return Err(ProbeError::Malformed);
                }
                head.extend_from_slice(&buf[..n]);
            }
            let got = parse_status(&head).ok_or(ProbeError::Malformed)?;
            if got != *expect_status {
                return Err(ProbeError::Status {
                    got,
                    expected: *expect_status,
                });
            }
            Ok(())
        }
    }
}

/// The status code of an HTTP/1.x status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let mut parts = line.split(|&b| b == b' ');
    let version = parts.next()?;
    if !version.starts_with(b"HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"HTTP/2 200\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 20 OK\r\n"), None);
        assert_eq!(parse_status(b"garbage"), None);
    }

    async fn server(response: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response).await;
            }
        });
        addr
    }

    fn http(addr: SocketAddr, expect_status: u16) -> Probe {
        Probe::Http {
            addr,
            method: "GET".into(),
            path: "/health".into(),
            host: "h".into(),
            expect_status,
        }
    }

    #[tokio::test]
    async fn http_probe_checks_the_status() {
        let ok = server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(
            run_probe(&http(ok, 200), Duration::from_secs(2)).await,
            Ok(())
        );
        assert_eq!(
            run_probe(&http(ok, 204), Duration::from_secs(2)).await,
            Err(ProbeError::Status {
                got: 200,
                expected: 204
            })
        );
        let bad = server(b"SSH-2.0-OpenSSH\r\n").await;
        assert_eq!(
            run_probe(&http(bad, 200), Duration::from_secs(2)).await,
            Err(ProbeError::Malformed)
        );
    }

    #[tokio::test]
    async fn tcp_probe_fails_on_a_closed_port_and_times_out_on_silence() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        assert_eq!(
            run_probe(&Probe::Tcp { addr }, Duration::from_secs(2)).await,
            Ok(())
        );
        drop(l);
        assert!(matches!(
            run_probe(&Probe::Tcp { addr }, Duration::from_secs(2)).await,
            Err(ProbeError::Connect(_))
        ));
        // Accepts, never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = silent.local_addr().expect("addr");
        assert_eq!(
            run_probe(&http(addr, 200), Duration::from_millis(200)).await,
            Err(ProbeError::Timeout)
        );
    }
}
