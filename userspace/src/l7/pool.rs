//! Backend pools: servers with their state (health, ejection, load), the choice among them,
//! and upstream connections kept alive in per-worker idle lists.

use crate::config::{Balance, HttpProtocol, PoolConfig};
use crate::l7::balance::{self, Candidate};
use crate::l7::body::{Body, BodyError, EndGuard};
use crate::l7::headers;
use crate::l7::metrics::{PoolMetrics, ServerMetrics};
use crate::l7::timeouts::ClientFailure;
use crate::l7::upstream_tls::{Connector, ServerTls};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Milliseconds since the first call: a cheap clock for atomics.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// This thread's idle-list shard: tokio workers each get their own, so returning and taking
/// connections rarely contends.
fn shard_index(shards: usize) -> usize {
    use std::cell::Cell;
    if let Some(worker) = crate::l7::workers::current() {
        return worker % shards;
    }
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = Cell::new(NEXT.fetch_add(1, Ordering::Relaxed));
    }
    INDEX.with(Cell::get) % shards
}

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Polls readiness once: `None` when the connection cannot tell yet.
    fn poll_ready_now(&mut self) -> Option<hyper::Result<()>> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let poll = match self {
            Sender::H1(s) => s.poll_ready(&mut cx),
            Sender::H2(s) => s.poll_ready(&mut cx),
        };
        match poll {
            std::task::Poll::Ready(r) => Some(r),
            std::task::Poll::Pending => None,
        }
    }

    async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// An idle upstream connection of the HTTP/1 fast path: a plain stream between messages.
struct RawIdle {
    stream: TcpStream,
    since: Instant,
}

/// Upstream timeouts and limits, from the pool's config.
#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
    pub idle: Duration,
    pub queue: Duration,
}

pub struct Server {
    pub address: SocketAddr,
    /// Atomic so a runtime weight change (or drain: 0) keeps the server, its connections,
    /// health and counters; the pool's round-robin order is rebuilt with the snapshot.
    weight: AtomicU32,
    id: u64,
    protocol: HttpProtocol,
    /// TLS to this server; part of what a reload must keep for the server to be reused.
    tls: Option<ServerTls>,
    healthy: AtomicBool,
    ejected_until: AtomicU64,
    failures: AtomicU32,
    outstanding: AtomicUsize,
    slots: Arc<Semaphore>,
    /// Also the bound of each idle list: every connection a burst opened comes back for
    /// the next burst rather than being closed and opened again (the slots bound how many
    /// exist anyway).
    max_connections: u32,
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// The fast path's connections, per worker: a stream is registered with the event loop
    /// of the worker that opened it, so it is never handed to another worker.
    raw_idle: Box<[Mutex<Vec<RawIdle>>]>,
    /// The HTTP/2 connection shared by all requests to this server.
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    pub metrics: ServerMetrics,
}

/// Why a request did not get a response head from a server.
pub enum SendError {
    /// Nothing reached the server; the request comes back for another try.
    NotSent(Request<Body>, String),
    /// Every connection slot stayed taken for the queue timeout (not the server's fault).
    Busy(Request<Body>),
    /// The request (or part of it) was sent; whether it can be retried depends on it.
    Sent(String),
    /// Reading the client's request body failed while it was being sent (bad chunk size,
    /// client gone mid-body): the client's fault, not the server's.
    Downstream(String),
    /// The client sent nothing of its request body for the client timeout: its fault too.
    ClientTimeout,
    /// The client's body grew past the listener's `max_body_bytes`: its fault too.
    TooLarge,
    /// The server was silent for the response timeout: no response head once the request
    /// was sent, or none of the request body taken.
    Timeout,
}

impl Server {
    fn new(
        address: SocketAddr,
        weight: u32,
        config: &PoolConfig,
        tls: Option<ServerTls>,
    ) -> Server {
        let shards = std::thread::available_parallelism().map_or(2, |n| n.get());
        Server {
            address,
            weight: AtomicU32::new(weight),
            id: balance::hash_bytes(address.to_string().as_bytes()),
            protocol: config.protocol,
            tls,
            healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            outstanding: AtomicUsize::new(0),
            slots: Arc::new(Semaphore::new(config.max_connections as usize)),
            max_connections: config.max_connections,
            idle: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            raw_idle: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            h2: Mutex::new(None),
            metrics: ServerMetrics::default(),
        }
    }

    pub fn tls(&self) -> Option<&ServerTls> {
        self.tls.as_ref()
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Weight 0 drains: no new requests, and idle connections close now rather than wait
    /// for their idle timeout; in-flight requests finish on the connections they hold.
    fn set_weight(&self, weight: u32) {
        if self.weight.swap(weight, Ordering::Relaxed) != weight && weight == 0 {
            self.drop_idle();
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
        if !healthy {
            self.drop_idle();
        }
    }

    pub fn ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms()
    }

    pub fn available(&self) -> bool {
        self.weight() > 0 && self.healthy() && !self.ejected()
    }

    /// Kept-alive connections waiting in the idle lists (both kinds, every worker).
    pub fn idle_connections(&self) -> usize {
        fn count<T>(lists: &[Mutex<Vec<T>>]) -> usize {
            lists.iter().map(|l| l.lock().map_or(0, |l| l.len())).sum()
        }
        count(&self.idle) + count(&self.raw_idle)
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    fn candidate(&self) -> Candidate {
        Candidate {
            available: self.available(),
            weight: self.weight(),
            outstanding: self.outstanding(),
            id: self.id,
        }
    }

    /// Passive health: a run of `eject_after` connect errors or 5xx ejects the server for
    /// `eject_ms`; any good answer ends the run.
    pub fn record(&self, ok: bool, eject_after: u32, eject_ms: u64) {
        if ok {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if eject_after > 0 && n >= eject_after {
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until
                .store(now_ms() + eject_ms, Ordering::Relaxed);
            self.metrics.ejections.fetch_add(1, Ordering::Relaxed);
            self.drop_idle();
            tracing::warn!(server = %self.address, eject_ms, "server ejected after {n} failures in a row");
        }
    }

    fn drop_idle(&self) {
        for shard in self.idle.iter() {
            if let Ok(mut list) = shard.lock() {
                list.clear();
            }
        }
        for shard in self.raw_idle.iter() {
            if let Ok(mut list) = shard.lock() {
                list.clear();
            }
        }
        if let Ok(mut h2) = self.h2.lock() {
            *h2 = None;
        }
    }

    /// An idle connection from this worker's shard, else one from another worker's: a
    /// connection driven by another thread costs cross-thread wake-ups but saves the
    /// backend a connection.
    fn take_idle(&self, max_idle: Duration) -> Option<Sender> {
        let own = shard_index(self.idle.len());
        let shards = self.idle.len();
        (0..shards).find_map(|i| {
            let mut list = self.idle[(own + i) % shards].lock().ok()?;
            while let Some(idle) = list.pop() {
                if idle.since.elapsed() < max_idle && !idle.sender.is_closed() {
                    return Some(idle.sender);
                }
            }
            None
        })
    }

    fn put_idle(&self, sender: Sender) {
        if sender.is_closed() || !self.available() {
            return;
        }
        let shard = &self.idle[shard_index(self.idle.len())];
        if let Ok(mut list) = shard.lock()
            && list.len() < self.max_connections as usize
        {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect_tcp(&self, t: &Timeouts) -> Result<TcpStream, String> {
        let stream = match tokio::time::timeout(t.connect, TcpStream::connect(self.address)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("connect to {}: {e}", self.address)),
            Err(_) => return Err(format!("connect to {}: timed out", self.address)),
        };
        let _ = stream.set_nodelay(true);
        self.metrics.connects.fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    }

    /// A new plain connection for the fast path.
    pub async fn connect_raw(&self, t: &Timeouts) -> Result<TcpStream, String> {
        self.connect_tcp(t).await
    }

    /// An idle fast-path connection the server has not closed: this worker's first, else
    /// another's (its events then arrive through that worker's loop, which costs a
    /// cross-thread wake-up but saves the backend a connection).
    pub fn take_raw(&self, max_idle: Duration) -> Option<TcpStream> {
        let shards = self.raw_idle.len();
        let own = shard_index(shards);
        (0..shards).find_map(|i| {
            let mut list = self.raw_idle[(own + i) % shards].lock().ok()?;
            while let Some(idle) = list.pop() {
                if idle.since.elapsed() >= max_idle {
                    continue;
                }
                // No system call: the event loop has marked the stream readable if the
                // server closed it (or, wrongly, sent something) while it was idle.
                let mut probe = [0u8; 1];
                match idle.stream.try_read(&mut probe) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        self.metrics.reuses.fetch_add(1, Ordering::Relaxed);
                        return Some(idle.stream);
                    }
                    _ => continue,
                }
            }
            None
        })
    }

    /// Returns a fast-path connection after a complete exchange.
    pub fn put_raw(&self, stream: TcpStream) {
        if !self.available() {
            return;
        }
        let shard = &self.raw_idle[shard_index(self.raw_idle.len())];
        if let Ok(mut list) = shard.lock()
            && list.len() < self.max_connections as usize
        {
            list.push(RawIdle {
                stream,
                since: Instant::now(),
            });
        }
    }

    /// A connection slot and an outstanding request, if a slot is free now.
    pub fn try_claim(self: &Arc<Self>) -> Option<Claim> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(self.claimed(permit))
    }

    /// A connection slot, waiting in the server's queue up to `queue`.
    pub async fn claim(self: &Arc<Self>, queue: Duration) -> Option<Claim> {
        if let Some(c) = self.try_claim() {
            return Some(c);
        }
        match tokio::time::timeout(queue, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Some(self.claimed(p)),
            _ => None,
        }
    }

    fn claimed(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Claim {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Claim {
            server: self.clone(),
            _permit: permit,
        }
    }

    async fn connect(&self, t: &Timeouts) -> Result<Sender, String> {
        let stream = self.connect_tcp(t).await?;
        let Some(tls) = &self.tls else {
            return self.handshake(stream).await;
        };
        let secured = match tokio::time::timeout(t.connect, tls.connect(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.metrics.tls_errors.fetch_add(1, Ordering::Relaxed);
                return Err(format!("TLS with {}: {e}", self.address));
            }
            Err(_) => {
                self.metrics.tls_errors.fetch_add(1, Ordering::Relaxed);
                return Err(format!("TLS with {}: handshake timed out", self.address));
            }
        };
        self.handshake(secured).await
    }

    async fn handshake<I>(&self, stream: I) -> Result<Sender, String>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(stream);
        match self.protocol {
            HttpProtocol::Http1 => {
                let (sender, conn) = http1::Builder::new()
                    .preserve_header_case(true)
                    .handshake(io)
                    .await
                    .map_err(|e| format!("handshake with {}: {e}", self.address))?;
                tokio::spawn(conn.with_upgrades());
                Ok(Sender::H1(sender))
            }
            HttpProtocol::H2c | HttpProtocol::H2 => {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await
                    .map_err(|e| format!("h2 handshake with {}: {e}", self.address))?;
                tokio::spawn(conn);
                Ok(Sender::H2(sender))
            }
        }
    }

    /// A connection to send on, and for a plain HTTP/1 one the flag that sends its stream
    /// back to the raw idle list once the exchange has completed.
    async fn sender(
        self: &Arc<Self>,
        t: &Timeouts,
        upgrade: bool,
    ) -> Result<(Sender, Option<Arc<AtomicBool>>), String> {
        if matches!(self.protocol, HttpProtocol::H2c | HttpProtocol::H2) {
            let shared = self.h2.lock().ok().and_then(|h| h.clone());
            if let Some(s) = shared.filter(|s| !s.is_closed()) {
                return Ok((Sender::H2(s), None));
            }
            let s = self.connect(t).await?;
            if let (Sender::H2(h2), Ok(mut slot)) = (&s, self.h2.lock()) {
                *slot = Some(h2.clone());
            }
            return Ok((s, None));
        }
        if self.tls.is_none() {
            // Plain HTTP/1 connections live in one list whichever path uses them: the
            // fast paths write on them directly, hyper's client is put on for one exchange.
            let stream = match self.take_raw(t.idle) {
                Some(s) => s,
                None => self.connect_tcp(t).await?,
            };
            return self.handshake_plain(stream, upgrade).await;
        }
        while let Some(mut s) = self.take_idle(t.idle) {
            // An idle HTTP/1 connection is ready at once unless the server closed it; only
            // one whose connection task has not yet seen the last response end needs a wait
            // (and a timer).
            let ready = match s.poll_ready_now() {
                Some(r) => r.is_ok(),
                None => matches!(tokio::time::timeout(t.connect, s.ready()).await, Ok(Ok(()))),
            };
            if ready {
                self.metrics.reuses.fetch_add(1, Ordering::Relaxed);
                return Ok((s, None));
            }
        }
        Ok((self.connect(t).await?, None))
    }

    /// hyper's HTTP/1 client on a plain stream for one exchange: once the request's lease
    /// has seen the response end and let go of the sender, the connection task ends without
    /// closing the stream and gives it back. An upgrade keeps the stream for its tunnel.
    async fn handshake_plain(
        self: &Arc<Self>,
        stream: TcpStream,
        upgrade: bool,
    ) -> Result<(Sender, Option<Arc<AtomicBool>>), String> {
        if upgrade {
            return Ok((self.handshake(stream).await?, None));
        }
        let (sender, conn) = http1::Builder::new()
            .preserve_header_case(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {}: {e}", self.address))?;
        let complete = Arc::new(AtomicBool::new(false));
        let (server, done) = (self.clone(), complete.clone());
        tokio::spawn(async move {
            if let Ok(parts) = conn.without_shutdown().await
                && done.load(Ordering::Acquire)
                && parts.read_buf.is_empty()
            {
                server.put_raw(parts.io.into_inner());
            }
        });
        Ok((Sender::H1(sender), Some(complete)))
    }

    /// A health-check request on a connection of its own, in the pool's protocol and over its
    /// TLS: the response status. Plain pools use the shared checker's raw probe instead.
    pub async fn probe(&self, path: &str, host: &str, timeout: Duration) -> Result<u16, String> {
        let t = Timeouts {
            connect: timeout,
            response: timeout,
            idle: timeout,
            queue: timeout,
        };
        let mut sender = self.connect(&t).await?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let mut req = Request::new(Body::empty());
        let sent = match &mut sender {
            Sender::H1(s) => {
                *req.uri_mut() = path.parse().map_err(|_| "bad check path".to_string())?;
                let host = http::HeaderValue::from_str(host).map_err(|e| e.to_string())?;
                req.headers_mut().insert(http::header::HOST, host);
                req.headers_mut().insert(
                    http::header::USER_AGENT,
                    http::HeaderValue::from_static("portier-health"),
                );
                s.send_request(req).await
            }
            Sender::H2(s) => {
                *req.uri_mut() = format!("https://{host}{path}")
                    .parse()
                    .map_err(|_| "bad check path".to_string())?;
                *req.version_mut() = http::Version::HTTP_2;
                s.send_request(req).await
            }
        };
        sent.map(|r| r.status().as_u16()).map_err(|e| e.to_string())
    }

    /// Sends `req` and waits for the response head. The returned lease must travel with the
    /// response body: it keeps the server's slot and returns the connection when the body
    /// ends.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Body>,
        t: &Timeouts,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        // The queue timer is armed only when every slot is taken.
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                match tokio::time::timeout(t.queue, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => return Err(SendError::Busy(req)),
                }
            }
        };
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        let mut lease = Lease {
            server: self.clone(),
            sender: None,
            back_to_raw: None,
            _permit: permit,
        };
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        let (mut sender, back_to_raw) = match self.sender(t, upgrade).await {
            Ok(s) => s,
            Err(e) => return Err(SendError::NotSent(req, e)),
        };
        lease.back_to_raw = back_to_raw;
        // With a body, the response timeout counts only the server's silence: not the time
        // its request body waits for the client (whose own timeout the body enforces).
        let upload = req.body().upload();
        let fut = async {
            match &mut sender {
                Sender::H1(s) => s.try_send_request(req).await,
                Sender::H2(s) => s.try_send_request(req).await,
            }
        };
        let result = match &upload {
            None => tokio::time::timeout(t.response, fut).await.ok(),
            Some(u) => {
                u.start();
                tokio::select! {
                    r = fut => Some(r),
                    () = u.server_silent(t.response) => None,
                }
            }
        };
        let client_failure = upload.as_ref().and_then(|u| u.client_failure());
        match result {
            Some(Err(e)) if client_failure.is_some() => Err(match client_failure {
                Some(ClientFailure::Timeout) => SendError::ClientTimeout,
                Some(ClientFailure::TooLarge) => SendError::TooLarge,
                _ => SendError::Downstream(e.into_error().to_string()),
            }),
            Some(Ok(resp)) => {
                // HTTP/1: reusable once the response body ends; HTTP/2 multiplexes anyway.
                if matches!(sender, Sender::H1(_))
                    && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS
                {
                    lease.sender = Some(sender);
                }
                Ok((resp, lease))
            }
            Some(Err(mut e)) => match e.take_message() {
                Some(req) => Err(SendError::NotSent(req, e.into_error().to_string())),
                None if request_body_failed(e.error()) => {
                    Err(SendError::Downstream(e.into_error().to_string()))
                }
                None => Err(SendError::Sent(e.into_error().to_string())),
            },
            None => Err(SendError::Timeout),
        }
    }
}

/// Whether hyper gave up because polling the request body failed: the body is the client's
/// (see `Body::incoming`), so its errors carry our `BodyError` as their cause.
fn request_body_failed(e: &hyper::Error) -> bool {
    std::error::Error::source(e).is_some_and(|cause| cause.is::<BodyError>())
}

/// A request's claim on a server: outstanding count, connection slot, and the connection to
/// give back when the response body ends cleanly.
pub struct Lease {
    server: Arc<Server>,
    sender: Option<Sender>,
    /// Set for a plain connection: it returns as a stream when its task sees the sender go.
    back_to_raw: Option<Arc<AtomicBool>>,
    _permit: OwnedSemaphorePermit,
}

impl EndGuard for Lease {
    fn finish(&mut self, complete: bool) {
        let Some(s) = self.sender.take() else { return };
        match &self.back_to_raw {
            Some(flag) => flag.store(complete, Ordering::Release),
            None if complete => self.server.put_idle(s),
            None => {}
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.server.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A fast-path request's hold on a server: its connection slot and outstanding count.
pub struct Claim {
    server: Arc<Server>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.server.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Pool {
    pub name: String,
    pub config: PoolConfig,
    pub servers: Vec<Arc<Server>>,
    pub timeouts: Timeouts,
    sequence: Vec<usize>,
    tick: AtomicUsize,
    pub metrics: Arc<PoolMetrics>,
}

impl Pool {
    /// Builds a pool; servers in `previous` with the same address and limits keep their state
    /// and connections, so a reload does not reset health or drop keep-alives.
    pub fn new(config: &PoolConfig, previous: Option<&Pool>, tls: Option<Arc<Connector>>) -> Pool {
        let servers: Vec<Arc<Server>> = config
            .servers
            .iter()
            .map(|s| {
                let server_tls = tls
                    .as_ref()
                    .map(|c| ServerTls::new(c.clone(), s.address, s.sni.as_deref()));
                let reused = previous.and_then(|p| {
                    p.servers.iter().find(|old| {
                        old.address == s.address
                            && old.protocol == config.protocol
                            && old.tls == server_tls
                            && old.max_connections == config.max_connections
                    })
                });
                match reused {
                    Some(old) => {
                        old.set_weight(s.weight);
                        old.clone()
                    }
                    None => Arc::new(Server::new(s.address, s.weight, config, server_tls)),
                }
            })
            .collect();
        let weights: Vec<u32> = servers.iter().map(|s| s.weight()).collect();
        Pool {
            name: config.name.clone(),
            config: config.clone(),
            timeouts: Timeouts {
                connect: Duration::from_millis(config.connect_timeout_ms),
                response: Duration::from_millis(config.response_timeout_ms),
                idle: Duration::from_millis(config.idle_timeout_ms),
                queue: Duration::from_millis(config.queue_timeout_ms),
            },
            sequence: balance::round_robin_sequence(&weights),
            tick: AtomicUsize::new(0),
            metrics: previous
                .filter(|p| p.name == config.name)
                .map(|p| p.metrics.clone())
                .unwrap_or_default(),
            servers,
        }
    }

    /// Chooses a server for a request, skipping those in `tried`.
    pub fn pick(&self, headers: &http::HeaderMap, tried: &[usize]) -> Option<usize> {
        let mut view: Vec<Candidate> = self.servers.iter().map(|s| s.candidate()).collect();
        for &t in tried {
            if let Some(c) = view.get_mut(t) {
                c.available = false;
            }
        }
        match &self.config.balance {
            Balance::RoundRobin => {
                let tick = self.tick.fetch_add(1, Ordering::Relaxed);
                balance::round_robin(&self.sequence, tick, &view)
            }
            Balance::LeastOutstanding => {
                balance::least_outstanding(&view, (balance::random(), balance::random()))
            }
            Balance::HashHeader(name) => {
                let key = headers.get(name.as_str()).map(|v| v.as_bytes());
                self.hashed(&view, key)
            }
            Balance::HashCookie(name) => {
                let key = headers::cookie(headers, name);
                self.hashed(&view, key)
            }
        }
    }

    /// Requests without the key spread by round robin rather than piling onto one server.
    fn hashed(&self, view: &[Candidate], key: Option<&[u8]>) -> Option<usize> {
        match key {
            Some(k) => balance::consistent_hash(view, balance::hash_bytes(k)),
            None => {
                let tick = self.tick.fetch_add(1, Ordering::Relaxed);
                balance::round_robin(&self.sequence, tick, view)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn server() -> Arc<Server> {
        let text = "[node]\nname = \"t\"\n[[l7.listener]]\nname = \"h\"\nbind = \"127.0.0.1:0\"\n\
                    [[l7.route]]\nhost = \"*\"\npool = \"p\"\n\
                    [[l7.pool]]\nname = \"p\"\nservers = [{ address = \"127.0.0.1:9\" }]\n";
        let config = crate::config::parse(text, "t.toml").unwrap_or_else(|e| panic!("{e}"));
        let pool = &config.l7.as_ref().unwrap().pools[0];
        Arc::new(Server::new(pool.servers[0].address, 1, pool, None))
    }

    /// An HTTP/1 client connection over an in-memory pipe; the other end is returned.
    async fn h1_sender() -> (http1::SendRequest<Body>, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (sender, conn) = http1::handshake(TokioIo::new(ours)).await.unwrap();
        tokio::spawn(conn);
        (sender, theirs)
    }

    fn post(body: Body) -> Request<Body> {
        Request::post("/").header("host", "x").body(body).unwrap()
    }

    #[tokio::test]
    async fn a_failing_request_body_is_told_apart_from_a_failing_server() {
        // The request body fails (as a client's bad chunk would): the client's fault.
        let (mut s, _peer) = h1_sender().await;
        let failing = Body::full("x").with_deadline(Some(tokio::time::Instant::now()));
        // Past the deadline by the timer's clock too, so the body's first poll fails.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = tokio::time::timeout(WAIT, s.try_send_request(post(failing)));
        let e = sent.await.expect("no answer in time").err().unwrap();
        assert!(e.message().is_none());
        assert!(request_body_failed(e.error()), "{}", e.error());

        // The server goes away mid-exchange: its fault.
        let (mut s, peer) = h1_sender().await;
        drop(peer);
        let sent = tokio::time::timeout(WAIT, s.try_send_request(post(Body::full("x"))));
        let e = sent.await.expect("no answer in time").err().unwrap();
        assert!(!request_body_failed(e.error()), "{}", e.error());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_connection_is_taken_from_another_workers_shard() {
        let server = server();
        let (sender, _peer) = h1_sender().await;
        // Each std thread gets its own shard index.
        let s = server.clone();
        std::thread::spawn(move || s.put_idle(Sender::H1(sender)))
            .join()
            .unwrap();
        let s = server.clone();
        let taken = std::thread::spawn(move || s.take_idle(Duration::from_secs(60)))
            .join()
            .unwrap();
        assert!(taken.is_some(), "an idle connection was left unused");
        assert!(server.take_idle(Duration::from_secs(60)).is_none());
    }
}
