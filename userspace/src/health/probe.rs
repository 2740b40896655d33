//! One probe against one server, bounded by a timeout.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Passes when a TCP connection is accepted.
    Tcp,
    /// Passes when `GET path` is answered with `status`.
    Http {
        path: String,
        host: String,
        status: u16,
    },
}

/// Runs `probe` against `addr`; `Err` says why it failed (for logs on state changes).
pub async fn run_probe(probe: &Probe, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, attempt(probe, addr)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

async fn attempt(probe: &Probe, addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let Probe::Http { path, host, status } = probe else {
        return Ok(());
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portier-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    // The status line is all we need: "HTTP/1.1 200 ...".
    let mut head = [0u8; 64];
    let mut filled = 0;
    while filled < 12 {
        let n = stream
            .read(&mut head[filled..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before a status line".into());
        }
        filled += n;
    }
    let line = &head[..filled];
    if !line.starts_with(b"HTTP/1.") || line[8] != b' ' {
        return Err("not an HTTP/1 response".into());
    }
    let got = std::str::from_utf8(&line[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("bad status code")?;
    if got == *status {
        Ok(())
    } else {
        Err(format!("status {got}, expected {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn server(reply: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let mut got = Vec::new();
            while !got.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(reply).await.unwrap();
            got
        });
        (addr, task)
    }

    fn http(status: u16) -> Probe {
        Probe::Http {
            path: "/health".into(),
            host: "todo.example".into(),
            status,
        }
    }

    #[tokio::test]
    async fn http_probe_sends_exact_request_and_checks_status() {
        let (addr, task) = server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(
            run_probe(&http(200), addr, Duration::from_secs(2)).await,
            Ok(())
        );
        assert_eq!(
            task.await.unwrap(),
            b"GET /health HTTP/1.1\r\nHost: todo.example\r\nUser-Agent: portier-health\r\nConnection: close\r\n\r\n"
        );
        let (addr, _) = server(b"HTTP/1.1 503 Unavailable\r\n\r\n").await;
        let err = run_probe(&http(200), addr, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.contains("503"), "{err}");
        let (addr, _) = server(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        assert!(
            run_probe(&http(200), addr, Duration::from_secs(2))
                .await
                .is_err()
        );
        let (addr, _) = server(b"HTTP/1.1").await;
        assert!(
            run_probe(&http(200), addr, Duration::from_secs(2))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn timeouts_and_refusals_fail() {
        // Accepts but never answers.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let err = run_probe(&http(200), addr, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(err.contains("no answer"), "{err}");
        assert_eq!(
            run_probe(&Probe::Tcp, addr, Duration::from_secs(1)).await,
            Ok(())
        );
        drop(l);
        assert!(
            run_probe(&Probe::Tcp, addr, Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}
