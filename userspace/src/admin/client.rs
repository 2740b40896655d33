//! The CLI's side of the admin API: one request, `Connection: close`, over the node's Unix
//! socket (everything) or its TCP listener (reads only). Small on purpose: plain HTTP/1.1 to
//! our own server, no TLS, no keep-alive.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a running node's admin API is.
#[derive(Debug, Clone)]
pub enum Target {
    Socket(PathBuf),
    Tcp(SocketAddr),
}

impl Target {
    /// `--socket`, else `--node`'s default socket, else the only socket in /run/portier.
    pub fn choose(
        socket: Option<PathBuf>,
        node: Option<&str>,
        tcp: Option<SocketAddr>,
    ) -> Result<Target> {
        if let Some(s) = socket {
            return Ok(Target::Socket(s));
        }
        if let Some(n) = node {
            return Ok(Target::Socket(crate::config::default_socket(n)));
        }
        if let Some(a) = tcp {
            return Ok(Target::Tcp(a));
        }
        only_socket(Path::new("/run/portier"))
    }
}

fn only_socket(dir: &Path) -> Result<Target> {
    // A daemon killed with SIGKILL leaves its socket file behind: count only live ones.
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .filter(|p| UnixStream::connect(p).is_ok())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.len() {
        1 => Ok(Target::Socket(found.remove(0))),
        0 => bail!(
            "no portier admin socket in {} (is portier running? give --node or --socket)",
            dir.display()
        ),
        _ => bail!(
            "several nodes run here ({}): give --node NAME",
            found
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Sends `method path` and returns the body; non-2xx answers become errors with the body.
pub fn request(target: &Target, method: &str, path: &str) -> Result<String> {
    let raw = match target {
        Target::Socket(p) => {
            let s = UnixStream::connect(p).with_context(|| {
                format!(
                    "cannot reach the admin socket {} (is portier running, and are you root or in [admin] group?)",
                    p.display()
                )
            })?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            exchange(s, method, path, "localhost")?
        }
        Target::Tcp(a) => {
            let s = TcpStream::connect_timeout(a, Duration::from_secs(3)).with_context(|| {
                format!("cannot reach the admin API at {a} (is portier running?)")
            })?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            exchange(s, method, path, &a.to_string())?
        }
    };
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

fn exchange(mut s: impl Read + Write, method: &str, path: &str, host: &str) -> Result<Vec<u8>> {
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(raw)
}
