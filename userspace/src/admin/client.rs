//! The CLI's side of the admin API: one request over loopback, `Connection: close`.
//! Small on purpose: plain HTTP/1.1 to our own server, no TLS, no keep-alive.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends `method path` and returns the body; non-2xx answers become errors with the body.
pub fn request(admin: SocketAddr, method: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(3))
        .with_context(|| format!("cannot reach the admin API at {admin} (is portier running?)"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed answer from the admin API")?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed status line from the admin API")?;
    if !(200..300).contains(&code) {
        bail!("admin API answered {code}: {}", body.trim());
    }
    Ok(body.to_string())
}
