//! One listening socket: accepts within the connection limit, reads the PROXY header and the
//! TLS handshake when configured, and serves HTTP/1 and HTTP/2 on each connection with hyper.

use crate::config::{HttpProtocol, ListenerConfig};
use crate::l7::client_stream::{ClientSocket, ClientStream};
use crate::l7::downstream::{Downstream, Slot};
use crate::l7::fast;
use crate::l7::metrics::ListenerMetrics;
use crate::l7::prefixed::Prefixed;
use crate::l7::proxy::{self, ConnInfo};
use crate::l7::proxy_protocol::{self, Header};
use crate::l7::snapshot::Shared;
use crate::l7::timeouts::ClientIo;
use crate::l7::workers::Workers;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// HTTP/2 streams a client may reset before the server waits for the acknowledgement of its
/// own resets: the rapid reset (CVE-2023-44487) bound.
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams a client may make the server reset on its behalf before the connection goes.
const H2_MAX_LOCAL_RESETS: usize = 200;
const H2_MAX_STREAMS: u32 = 256;

/// Seconds the kernel holds a connection whose client has sent nothing yet before handing
/// it over anyway (TCP_DEFER_ACCEPT; rounded up to SYN-ACK retransmissions, the first of
/// which comes after one second). Every protocol served here has the client speak first, so
/// the accept then finds the request (or ClientHello, or PROXY header) already in the
/// socket, and a client that never speaks costs no slot and no task meanwhile.
const DEFER_ACCEPT_S: libc::c_int = 1;

/// Binds with SO_REUSEPORT so a reconfigured listener can bind before the old one stops:
/// no moment without a socket accepting.
/// The socket is returned without a runtime: the worker that accepts on it registers it
/// with its own.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit it: no setsockopt per connection.
    socket.set_tcp_nodelay(true)?;
    defer_accept(&socket)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // Accepted sockets inherit this too; set after listen(), which clears it. Without quick
    // ACKs a request's ACK rides on its response (HAProxy's HTTP frontends do the same);
    // the fast path asks for them back while a request is incomplete
    // (`ClientStream::ack_now`).
    socket.set_tcp_quickack(false)?;
    Ok(socket.into())
}

fn defer_accept(socket: &Socket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let seconds: libc::c_int = DEFER_ACCEPT_S;
    // SAFETY: a valid socket, and an option value of the size passed.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const seconds).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Accepts one connection: `accept4` straight to a non-blocking socket (no `fcntl`), not
/// registered with the reactor (see `ClientStream`).
async fn accept(socket: &AsyncFd<Socket>) -> std::io::Result<(ClientStream, SocketAddr)> {
    loop {
        let mut ready = socket.readable().await?;
        let accepted = ready.try_io(|s| {
            s.get_ref()
                .accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
        });
        if let Ok(r) = accepted {
            let (stream, peer) = r?;
            let peer = peer.as_socket().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "not an IP peer")
            })?;
            return Ok((ClientStream::new(stream.into()), peer));
        }
    }
}

pub struct Listener {
    pub config: ListenerConfig,
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Listener {
    /// Binds one socket per worker on the same address (the kernel spreads connections
    /// over them) and starts an accept loop on each worker.
    pub fn start(
        config: ListenerConfig,
        shared: Arc<Shared>,
        metrics: Arc<ListenerMetrics>,
        drain: Duration,
        workers: &Workers,
    ) -> Result<Listener, String> {
        let tls = if config.certificates.is_empty() {
            None
        } else {
            let c = crate::l7::tls::server_config(&config.certificates, &config.protocols)
                .map_err(|e| format!("listener {}: {e}", config.name))?;
            Some(TlsAcceptor::from(c))
        };
        let bind_error = |e| format!("listener {}: bind {}: {e}", config.name, config.bind);
        let first = bind(config.bind).map_err(bind_error)?;
        // With port 0 the others must join the port the first one got.
        let local_addr = first.local_addr().map_err(|e| e.to_string())?;
        let mut sockets = vec![first];
        for _ in 1..workers.len() {
            sockets.push(bind(local_addr).map_err(bind_error)?);
        }
        let (stop, stopped) = watch::channel(false);
        let limit = Arc::new(Semaphore::new(config.max_connections as usize));
        let tasks = sockets
            .into_iter()
            .zip(workers.handles())
            .map(|(socket, worker)| {
                worker.spawn(accept_loop(
                    socket,
                    config.clone(),
                    tls.clone(),
                    shared.clone(),
                    metrics.clone(),
                    limit.clone(),
                    stopped.clone(),
                    drain,
                ))
            })
            .collect();
        tracing::info!(listener = %config.name, address = %local_addr, "L7 listener up");
        Ok(Listener {
            config,
            local_addr,
            stop,
            tasks,
        })
    }

    /// Stops accepting at once; in-flight requests get up to the drain time.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        futures::future::join_all(self.tasks).await;
    }

    /// Stops accepting and drains in the background (reload: the new listener is up already).
    pub fn retire(self) {
        let _ = self.stop.send(true);
    }
}

/// hyper's servers for one listener. HTTP/2 connections go to hyper's HTTP/2 server
/// directly (the protocol is known from ALPN or the preface), not through the auto-detecting
/// wrapper, which costs a copy of its state on every poll.
pub(crate) struct Http {
    h1: auto::Builder<TokioExecutor>,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

#[derive(Clone, Copy)]
enum Proto {
    H1,
    H2,
}

/// The HTTP/2 connection preface's request line, as far as the fast path reads it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl Http {
    fn new(config: &ListenerConfig) -> Http {
        let header_timeout = Duration::from_millis(config.header_timeout_ms);
        let mut h1 = auto::Builder::new(TokioExecutor::new());
        h1.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(config.max_header_bytes)
            .preserve_header_case(true);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(config.max_header_bytes as u32)
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS)
            .keep_alive_interval(header_timeout)
            .keep_alive_timeout(header_timeout);
        Http {
            h1: h1.http1_only(),
            h2,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    socket: std::net::TcpListener,
    config: ListenerConfig,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    metrics: Arc<ListenerMetrics>,
    limit: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
    drain: Duration,
) {
    let name: Arc<str> = Arc::from(config.name.as_str());
    // SAFETY: the AsyncFd owns the socket and closes it only when dropped, after it has
    // left the reactor.
    let registered =
        unsafe { AsyncFd::register_with_interest(Socket::from(socket), Interest::READABLE) };
    let socket = match registered {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(listener = %name, "cannot register the socket: {e}");
            return;
        }
    };
    let graceful = GracefulShutdown::new();
    let http = Arc::new(Http::new(&config));
    let header_timeout = Duration::from_millis(config.header_timeout_ms);
    // Plain connections start on the fast path when the listener speaks HTTP/1 (an h2c
    // preface is handed on to hyper), TLS ones when ALPN did not pick h2.
    let fast = Arc::new(fast::Settings {
        header_timeout,
        max_header_bytes: config.max_header_bytes,
        client_timeout: Duration::from_millis(config.client_timeout_ms),
        tls: tls.is_some(),
    });
    let limits = Limits {
        client_timeout: Duration::from_millis(config.client_timeout_ms),
        h2_idle_timeout: Duration::from_millis(config.h2_idle_timeout_ms),
        max_upstream_per_connection: config.max_upstream_per_connection,
        max_body: config.max_body_bytes,
    };
    let plain_fast = config.protocols.contains(&HttpProtocol::Http1);
    let plain_h2 = config.protocols.contains(&HttpProtocol::H2c);
    let proxy_from: Arc<[crate::config::Cidr]> = config.proxy_from.clone().into();
    let proto = Conn {
        name: name.clone(),
        shared,
        metrics: metrics.clone(),
        proxy_protocol: config.proxy_protocol,
        proxy_from,
        header_timeout,
        fast,
        plain_fast,
        plain_h2,
        stopped: stopped.clone(),
        limits,
    };
    let serve = move |stream: ClientStream, peer: SocketAddr, permit, watcher| {
        metrics.connections.fetch_add(1, Ordering::Relaxed);
        // Held until the connection ends, or the tunnel it becomes does.
        let slot = Slot::new(permit, metrics.clone());
        proto
            .clone()
            .serve(stream, peer, tls.clone(), http.clone(), watcher, slot)
    };
    // A connection accepted while the limit is reached, when the stop comes.
    let mut waiting = None;
    loop {
        let (stream, peer) = tokio::select! {
            r = accept(&socket) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(listener = %name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        // At the limit the accepted connection waits unserved, and this worker accepts no
        // more: further clients wait in the kernel's backlog. The limit is shared by the
        // workers and the permit is taken only for a connection in hand, so a freed slot
        // cannot go to a worker whose backlog is empty while another's has clients.
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => tokio::select! {
                p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stopped.changed() => {
                    waiting = Some((stream, peer));
                    break;
                }
            },
        };
        tokio::spawn(serve(stream, peer, permit, graceful.watcher()));
    }
    // Closing the socket hands its queued connections to the other sockets of its
    // SO_REUSEPORT group (a new process taking over) when net.ipv4.tcp_migrate_req = 1.
    drop(socket);
    // The client of a connection in hand may be sending its request already: it is served
    // when a slot frees, within the drain, as if it had come a moment earlier.
    // The watcher it holds meanwhile keeps the drain (and its bound) waiting for it.
    if let Some((stream, peer)) = waiting {
        let watcher = graceful.watcher();
        let slot = limit.clone().acquire_owned();
        let conn = async move {
            if let Ok(permit) = slot.await {
                serve(stream, peer, permit, watcher).await;
            }
        };
        tokio::spawn(conn);
    }
    tracing::info!(listener = %name, "L7 listener stopped accepting; draining");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listener = %name, "drain time over: closing remaining connections");
    }
}

#[derive(Clone)]
struct Conn {
    name: Arc<str>,
    shared: Arc<Shared>,
    metrics: Arc<ListenerMetrics>,
    proxy_protocol: bool,
    proxy_from: Arc<[crate::config::Cidr]>,
    header_timeout: Duration,
    fast: Arc<fast::Settings>,
    plain_fast: bool,
    /// A plain connection may open with the HTTP/2 preface (h2c prior knowledge).
    plain_h2: bool,
    /// The listener's stop: fast-path connections close between requests when it fires.
    stopped: watch::Receiver<bool>,
    limits: Limits,
}

/// A listener's bounds on each client connection.
#[derive(Clone, Copy)]
struct Limits {
    client_timeout: Duration,
    h2_idle_timeout: Duration,
    max_upstream_per_connection: u32,
    max_body: u64,
}

impl Conn {
    async fn serve(
        self,
        mut stream: ClientStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        http: Arc<Http>,
        watcher: hyper_util::server::graceful::Watcher,
        slot: Slot,
    ) {
        let mut client = peer;
        if self.proxy_protocol && !self.proxy_from.iter().any(|c| c.contains(peer.ip())) {
            self.metrics
                .proxy_protocol_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(listener = %self.name, %peer, "PROXY listener: peer not in proxy_from");
            return;
        }
        if self.proxy_protocol {
            match proxy_protocol::read(&mut stream, self.header_timeout).await {
                Ok(Header::Proxy { source, .. }) => client = source,
                Ok(Header::Local | Header::Unsupported) => {}
                Err(e) => {
                    self.metrics
                        .proxy_protocol_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(listener = %self.name, %peer, "PROXY header refused: {e}");
                    return;
                }
            }
        }
        // Every write to the client is bounded by the client timeout, on every path.
        let stream = ClientIo::new(stream, self.limits.client_timeout, self.metrics.clone());
        match tls {
            None => {
                let info = self.info(client, false);
                if self.plain_fast {
                    let h2 = self.plain_h2;
                    self.fast_then_http(stream, info, &http, h2, watcher, slot)
                        .await
                } else {
                    stream.ack_now();
                    let down = self.downstream(slot);
                    Box::pin(run_http(
                        stream,
                        info,
                        self,
                        &http,
                        Proto::H2,
                        watcher,
                        down,
                    ))
                    .await
                }
            }
            // Boxed, as hyper's paths are: the task spawned for each connection holds only
            // the plain fast path's state inline, so it is small to build and move (a
            // connection per request showed its copying in the profile).
            Some(acceptor) => {
                Box::pin(self.serve_tls(stream, acceptor, client, http, watcher, slot)).await
            }
        }
    }

    async fn serve_tls(
        self,
        stream: ClientIo<ClientStream>,
        acceptor: TlsAcceptor,
        client: SocketAddr,
        http: Arc<Http>,
        watcher: hyper_util::server::graceful::Watcher,
        slot: Slot,
    ) {
        let handshake = tokio::time::timeout(self.header_timeout, acceptor.accept(stream));
        let tls_stream = match handshake.await {
            Ok(Ok(s)) => s,
            _ => {
                self.metrics.tls_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let info = self.info(client, true);
        if h2 {
            tls_stream.ack_now();
            let down = self.downstream(slot);
            Box::pin(run_http(
                tls_stream,
                info,
                self,
                &http,
                Proto::H2,
                watcher,
                down,
            ))
            .await
        } else {
            self.fast_then_http(tls_stream, info, &http, false, watcher, slot)
                .await
        }
    }

    /// Serves on the fast path until a request needs hyper, which then gets the connection
    /// with what was read of it. The watcher, held meanwhile, keeps a drain waiting.
    async fn fast_then_http<I>(
        mut self,
        mut io: I,
        info: Arc<ConnInfo>,
        http: &Http,
        h2_allowed: bool,
        watcher: hyper_util::server::graceful::Watcher,
        slot: Slot,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static + ClientSocket,
    {
        let outcome =
            fast::serve(&mut io, &info, &self.shared, &self.fast, &mut self.stopped).await;
        if let fast::Outcome::Handoff(read) = outcome {
            // hyper reads as it likes from here: quick ACKs as the kernel has them by default.
            io.ack_now();
            let proto = if h2_allowed && read.starts_with(H2_PREFACE) {
                Proto::H2
            } else {
                Proto::H1
            };
            let down = self.downstream(slot);
            let io = Prefixed::new(read, io);
            Box::pin(run_http(io, info, self, http, proto, watcher, down)).await
        }
    }

    fn downstream(&self, slot: Slot) -> Arc<Downstream> {
        Downstream::new(
            slot,
            self.limits.client_timeout,
            self.limits.max_upstream_per_connection,
        )
    }

    fn info(&self, client: SocketAddr, tls: bool) -> Arc<ConnInfo> {
        Arc::new(ConnInfo {
            listener: self.name.clone(),
            client,
            tls,
            forwarding: crate::l7::headers::ClientInfo::new(client.ip(), tls),
            metrics: self.metrics.clone(),
            max_body: self.limits.max_body,
        })
    }
}

async fn run_http<I>(
    io: I,
    info: Arc<ConnInfo>,
    conn: Conn,
    http: &Http,
    proto: Proto,
    watcher: hyper_util::server::graceful::Watcher,
    down: Arc<Downstream>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        shared,
        mut stopped,
        limits,
        ..
    } = conn;
    let d = down.clone();
    let service =
        service_fn(move |req| proxy::handle(req, info.clone(), shared.clone(), d.clone()));
    let io = TokioIo::new(io);
    let ended = match proto {
        Proto::H1 => {
            let conn = http.h1.serve_connection_with_upgrades(io, service);
            watcher.watch(conn.into_owned()).await
        }
        Proto::H2 => {
            // Served here rather than by the watcher, which cannot also close the connection
            // when idle; held meanwhile, it keeps a drain waiting for the connection.
            let conn = http.h2.serve_connection(io, service);
            tokio::pin!(conn);
            let mut closing = *stopped.borrow();
            if closing {
                conn.as_mut().graceful_shutdown();
            }
            let ended = loop {
                tokio::select! {
                    r = conn.as_mut() => break r,
                    _ = stopped.changed(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    () = down.idle(limits.h2_idle_timeout), if !closing => {
                        tracing::debug!("h2 connection idle: closing");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            };
            drop(watcher);
            ended.map_err(Into::into)
        }
    };
    if let Err(e) = ended {
        tracing::debug!("connection ended: {e}");
    }
}
