//! The two listeners of the admin API and what bounds their clients.

use super::live::{self, Live};
use super::{Caller, handle};
use crate::config::{AdminConfig, Cidr};
use crate::part::{Control, StatusBoard};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A client must have sent its request head within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer (a reload waits for every part, which takes seconds at most).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Connections served at once per listener; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;
/// The longest pause after failing accepts (EMFILE and the like), doubling from 10 ms.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot create {0}")]
    Dir(PathBuf, #[source] std::io::Error),
    #[error("admin socket {0} is in use by a running portier")]
    InUse(PathBuf),
    #[error("cannot listen on admin socket {0}")]
    Socket(PathBuf, #[source] std::io::Error),
    #[error("[admin] group {0} does not exist")]
    NoGroup(String),
    #[error("cannot set owner and mode of {0}")]
    Permissions(PathBuf, #[source] std::io::Error),
    #[error("admin API cannot listen on {0}")]
    Tcp(std::net::SocketAddr, #[source] std::io::Error),
}

/// The running listeners; dropping it stops them and removes the socket file.
pub struct Admin {
    tasks: Vec<JoinHandle<()>>,
    socket: PathBuf,
}

impl Drop for Admin {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

pub async fn serve(
    config: &AdminConfig,
    node: &str,
    status: StatusBoard,
    control: Control,
) -> Result<Admin, AdminError> {
    let path = config.socket_path(node);
    let unix = bind_socket(&path, config.group.as_deref()).await?;
    info!(socket = %path.display(), group = ?config.group, "admin socket listening");
    let (live, ticker) = live::start(status.clone(), node);
    let mut tasks = vec![
        ticker,
        tokio::spawn(accept_loop(
            Listener::Unix(unix),
            status.clone(),
            control.clone(),
            live.clone(),
        )),
    ];
    if let Some(listen) = config.listen {
        let tcp = TcpListener::bind(listen)
            .await
            .map_err(|e| AdminError::Tcp(listen, e))?;
        info!(%listen, "admin API (read-only) listening");
        tasks.push(tokio::spawn(accept_loop(
            Listener::Tcp(tcp, config.allow.clone()),
            status,
            control,
            live,
        )));
    }
    Ok(Admin {
        tasks,
        socket: path,
    })
}

async fn bind_socket(path: &Path, group: Option<&str>) -> Result<UnixListener, AdminError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| AdminError::Dir(dir.to_path_buf(), e))?;
    }
    if path.exists() {
        // A socket nobody answers on is what a killed daemon left behind.
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(AdminError::InUse(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    let gid = match group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| AdminError::NoGroup(name.to_string()))?
                .gid,
        ),
        None => None,
    };
    // Connecting needs write permission on the socket: with the umask cleared of group and
    // other bits while binding, nobody but root can connect even before the chmod below.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| AdminError::Socket(path.to_path_buf(), e))?;
    let mode = if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| AdminError::Permissions(path.to_path_buf(), e.into()))?;
        0o660
    } else {
        0o600
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| AdminError::Permissions(path.to_path_buf(), e))?;
    Ok(listener)
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener, Vec<Cidr>),
}

async fn accept_loop(listener: Listener, status: StatusBoard, control: Control, live: Live) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = match &listener {
            Listener::Unix(l) => l.accept().await.map(|(s, _)| {
                let caller = s.peer_cred().map_or(
                    Caller::Local {
                        uid: u32::MAX,
                        gid: u32::MAX,
                        pid: None,
                    },
                    |c| Caller::Local {
                        uid: c.uid(),
                        gid: c.gid(),
                        pid: c.pid(),
                    },
                );
                (Stream::Unix(s), caller)
            }),
            Listener::Tcp(l, _) => l.accept().await.map(|(s, peer)| {
                let _ = s.set_nodelay(true);
                (Stream::Tcp(s), Caller::Remote(peer))
            }),
        };
        let (stream, caller) = match accepted {
            Ok(a) => {
                backoff = Duration::ZERO;
                a
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                warn!("admin accept: {e}; pausing {backoff:?}");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if let (Listener::Tcp(_, allow), Caller::Remote(peer)) = (&listener, &caller)
            && !allow.is_empty()
            && !allow.iter().any(|c| c.contains(peer.ip()))
        {
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let status = status.clone();
        let control = control.clone();
        let live = live.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match stream {
                Stream::Unix(s) => serve_connection(s, caller, status, control, live).await,
                Stream::Tcp(s) => serve_connection(s, caller, status, control, live).await,
            }
        });
    }
}

enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn serve_connection<S>(
    stream: S,
    caller: Caller,
    status: StatusBoard,
    control: Control,
    live: Live,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let status = status.clone();
        let control = control.clone();
        let caller = caller.clone();
        let live = live.clone();
        async move {
            Ok::<_, std::convert::Infallible>(handle(req, &caller, &status, &control, &live).await)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
}
