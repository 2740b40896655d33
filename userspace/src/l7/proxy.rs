//! One request through the proxy: validate the host, route, pick a server, rewrite headers,
//! send with bounded retries, and relay the response (or tunnel an upgrade).

use crate::l7::attempt::{AttemptError, Attempts};
use crate::l7::body::{Body, Silence};
use crate::l7::downstream::{Downstream, Hold};
use crate::l7::headers::{self, ClientInfo};
use crate::l7::metrics::{ListenerMetrics, PoolMetrics};
use crate::l7::pool::{Pool, SendError};
use crate::l7::router::normalise_host;
use crate::l7::snapshot::Shared;
use crate::l7::timeouts::Upload;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What the proxy knows about the downstream connection a request came on.
pub struct ConnInfo {
    pub listener: Arc<str>,
    /// The client: from PROXY protocol when the listener expects it, else the peer.
    pub client: SocketAddr,
    pub tls: bool,
    /// The client formatted for the forwarding fields, once per connection.
    pub forwarding: ClientInfo,
    pub metrics: Arc<ListenerMetrics>,
    /// The listener's `max_body_bytes` (0: no limit).
    pub max_body: u64,
}

/// The future of one general-path request, as hyper's servers hold it.
pub type Handling = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// One request of a general-path connection; its hold on the connection (`down`) travels
/// with the response body.
///
/// Boxed once, here: hyper's HTTP/2 server moves the service's future six times before it
/// first runs (into its stream future, the executor, tokio's task cell), and each move is
/// then a pointer's copy instead of the request's whole state, 1.4 KB (perf: those copies
/// were about 1% of an h2c request's CPU). The forwarding futures inside are not boxed
/// again: nothing moves them once this box holds them.
pub fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    down: Arc<Downstream>,
) -> Handling {
    Box::pin(async move {
        let mut hold = down.enter(req.version() < Version::HTTP_2);
        let resp = route_and_forward(req, &conn, &shared, &down, &mut hold).await;
        Ok(resp.map(|b| b.with_hold(hold)))
    })
}

async fn route_and_forward(
    mut req: Request<Incoming>,
    conn: &ConnInfo,
    shared: &Shared,
    down: &Arc<Downstream>,
    hold: &mut Hold,
) -> Response<Body> {
    conn.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let snap = shared.load();
    let Some(view) = snap.listeners.get(&*conn.listener) else {
        return local(
            StatusCode::SERVICE_UNAVAILABLE,
            "listener is being removed\n",
        );
    };
    // Only the access log reads the request's start: no clock read without it.
    let start = view.access_log.then(Instant::now);
    let field = request_host(&req);
    let normal = field
        .as_ref()
        .map_err(|why| *why)
        .and_then(|f| normalise_host(f.as_bytes()).ok_or("invalid Host\n"));
    let host = match normal {
        Ok(h) => h,
        Err(why) => {
            conn.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
            let mut r = local(StatusCode::BAD_REQUEST, why);
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    if req.method() == Method::CONNECT {
        return local(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not proxied\n");
    }
    if let Err(why) = normalise_target(&mut req) {
        conn.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
        return local(StatusCode::BAD_REQUEST, why);
    }
    let Some(route_id) = view.router.route(&host, req.uri().path()) else {
        conn.metrics.no_route.fetch_add(1, Ordering::Relaxed);
        return local(view.no_route_status, "no route for this host and path\n");
    };
    let route = &snap.routes[route_id];
    route.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let pool = route.pool.clone();
    // A declared length over the limit is refused before anything reaches a server; the
    // body is not read, so the connection closes.
    if conn.max_body != 0 && http_body::Body::size_hint(req.body()).lower() > conn.max_body {
        conn.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
        let text = "request body too large\n";
        return client_fault(&pool.metrics, StatusCode::PAYLOAD_TOO_LARGE, text);
    }
    let access = start.map(|start| Access {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        host: host.clone().into_owned(),
        start,
    });
    drop(snap);
    // The connection's requests at the servers are capped: an HTTP/2 client that reads no
    // response (a zero window) holds no more server slots than that.
    let Some(place) = down.upstream_place(pool.timeouts.queue).await else {
        pool.metrics.no_server.fetch_add(1, Ordering::Relaxed);
        pool.metrics
            .response(StatusCode::SERVICE_UNAVAILABLE.as_u16());
        if let Some(a) = access {
            a.log(conn, 503, &pool.name, None);
        }
        return local(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in progress on this connection\n",
        );
    };
    hold.set_upstream(place);
    let (resp, server) = if crate::l7::raw::takes(&req, &pool) {
        forward_raw(req, conn, &pool).await
    } else {
        forward(req, conn, down, &pool).await
    };
    if let Some(a) = access {
        a.log(conn, resp.status().as_u16(), &pool.name, server);
    }
    resp
}

/// What an access log line tells of a request, kept from its head (both paths log it).
pub(crate) struct Access {
    pub method: String,
    pub path: String,
    pub host: String,
    pub start: Instant,
}

impl Access {
    pub(crate) fn log(&self, conn: &ConnInfo, status: u16, pool: &str, server: Option<SocketAddr>) {
        tracing::info!(
            target: "portier::access",
            listener = %conn.listener,
            client = %conn.client,
            method = %self.method,
            host = self.host.as_str(),
            path = self.path.as_str(),
            status,
            pool = %pool,
            server = server.map(|s| s.to_string()).unwrap_or_default(),
            micros = self.start.elapsed().as_micros() as u64,
        );
    }
}

/// The field a request names its host in, held apart from the request (a reference count,
/// no copy) so that its normal form can borrow from it while the request changes.
enum HostField {
    Authority(http::uri::Authority),
    Field(HeaderValue),
}

impl HostField {
    fn as_bytes(&self) -> &[u8] {
        match self {
            HostField::Authority(a) => a.as_str().as_bytes(),
            HostField::Field(v) => v.as_bytes(),
        }
    }
}

/// The field that says which host a request is for; the reason for a 400 otherwise.
fn request_host(req: &Request<Incoming>) -> Result<HostField, &'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header\n");
    }
    let field = if req.version() == Version::HTTP_2 {
        // :authority stands in for Host; a Host field, if any, must not contradict it.
        match (req.uri().authority(), first) {
            (Some(a), Some(h)) if a.as_str().as_bytes() != h.as_bytes() => {
                return Err(":authority and Host disagree\n");
            }
            (Some(a), _) => HostField::Authority(a.clone()),
            (None, Some(h)) => HostField::Field(h.clone()),
            (None, None) => return Err("no :authority or Host\n"),
        }
    } else {
        let Some(h) = first else {
            return Err("no Host header\n");
        };
        // An absolute-form target overrides Host (RFC 9112 3.2.2).
        match req.uri().authority() {
            Some(a) => HostField::Authority(a.clone()),
            None => HostField::Field(h.clone()),
        }
    };
    if field.as_bytes().contains(&b'@') {
        return Err("invalid Host\n");
    }
    Ok(field)
}

/// Routes and forwards by the normal form of the path (`l7::path`), the query untouched.
fn normalise_target<B>(req: &mut Request<B>) -> Result<(), &'static str> {
    let std::borrow::Cow::Owned(path) = crate::l7::path::normalise(req.uri().path()) else {
        return Ok(());
    };
    let target = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query =
        Some(http::uri::PathAndQuery::try_from(target).map_err(|_| "invalid request target\n")?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| "invalid request target\n")?;
    Ok(())
}

pub fn local(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The upstream request's parts, kept when the request may be sent again after a failure
/// that happened once it was on the wire (idempotent and without a body).
struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Template {
    fn build(&self) -> Request<Body> {
        let mut r = Request::new(Body::empty());
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// An HTTP/2 client's body-less GET or HEAD to a plain HTTP/1 pool: the upstream request
/// is written as bytes straight from the client's fields (HTTP/2 has no connection-specific
/// fields and lower-case names, so they are what hyper's client would write) and sent on
/// the fast path's connections.
async fn forward_raw(
    req: Request<Incoming>,
    conn: &ConnInfo,
    pool: &Arc<Pool>,
) -> (Response<Body>, Option<SocketAddr>) {
    pool.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let mut request = Vec::with_capacity(512);
    crate::l7::raw::encode_h2_request(&req, &conn.forwarding, pool.config.forwarding, &mut request);
    let head_only = req.method() == Method::HEAD;
    let (result, server) = crate::l7::raw::forward(pool, &request, req.headers(), head_only).await;
    match result {
        Ok(resp) => (resp, server),
        Err((status, text)) => (local(status, text), server),
    }
}

async fn forward(
    req: Request<Incoming>,
    conn: &ConnInfo,
    down: &Arc<Downstream>,
    pool: &Arc<Pool>,
) -> (Response<Body>, Option<SocketAddr>) {
    let m = &pool.metrics;
    m.requests.fetch_add(1, Ordering::Relaxed);
    let (mut parts, body) = req.into_parts();
    let down_version = parts.version;
    // For HTTP/2 the authority is in the URI; HTTP/1 backends need it as Host.
    // The authority of an absolute-form target (or HTTP/2's :authority) wins over Host
    // (RFC 9112 3.2.2), and is what the next hop sees as Host.
    let host_value = match (parts.uri.authority(), parts.headers.get(header::HOST)) {
        (Some(a), _) => HeaderValue::from_str(a.as_str()).unwrap_or(HeaderValue::from_static("")),
        (None, Some(h)) => h.clone(),
        (None, None) => HeaderValue::from_static(""),
    };
    let hop = headers::strip_hop_by_hop(&mut parts.headers);
    let down_upgrade = match (&hop.upgrade, down_version) {
        (Some(_), Version::HTTP_11) => parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
        _ => None,
    };
    let host_text = host_value.to_str().unwrap_or("").to_owned();
    headers::add_forwarding(
        &mut parts.headers,
        &conn.forwarding,
        &host_text,
        pool.config.forwarding,
    );
    if let (Some(u), Some(_)) = (hop.upgrade, &down_upgrade) {
        headers::restore_upgrade(&mut parts.headers, u);
    }
    if hop.te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let h2_upstream = !matches!(pool.config.protocol, crate::config::HttpProtocol::Http1);
    let origin_form = parts.uri.scheme().is_none() && parts.uri.authority().is_none();
    let path = if h2_upstream || !origin_form {
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned()
    } else {
        String::new()
    };
    if h2_upstream {
        parts.headers.remove(header::HOST);
        parts.uri = Uri::builder()
            .scheme(if pool.config.tls.is_some() {
                "https"
            } else {
                "http"
            })
            .authority(host_text.as_str())
            .path_and_query(path.as_str())
            .build()
            .unwrap_or_default();
        parts.version = Version::HTTP_2;
    } else {
        if !parts.headers.contains_key(header::HOST) {
            // Host goes first, where an HTTP/1 request normally has it.
            let mut with_host = HeaderMap::with_capacity(parts.headers.len() + 1);
            with_host.insert(header::HOST, host_value.clone());
            with_host.extend(parts.headers.drain());
            parts.headers = with_host;
        }
        // Origin-form already (the usual HTTP/1 case): keep it rather than re-parse.
        if !origin_form {
            parts.uri = Uri::try_from(path.as_str()).unwrap_or_default();
            if down_version != Version::HTTP_2 {
                parts.headers.insert(header::HOST, host_value.clone());
            }
        }
        parts.version = Version::HTTP_11;
    }
    let deadline = (pool.config.total_timeout_ms > 0).then(|| {
        tokio::time::Instant::now() + std::time::Duration::from_millis(pool.config.total_timeout_ms)
    });
    let template = (pool.config.retries > 0
        && idempotent(&parts.method)
        && http_body::Body::is_end_stream(&body))
    .then(|| Template {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
    });
    // A body is the client's to send: its silence is bounded by the client timeout, and the
    // response timeout waits for its end.
    let upload = !http_body::Body::is_end_stream(&body);
    let mut body = Body::incoming(body);
    if upload {
        body = body
            .with_upload(Upload::new())
            .with_idle(down.client_timeout, Silence::Client);
        if conn.max_body != 0 {
            body = body.with_limit(conn.max_body);
        }
    }
    let mut pending = Some(Request::from_parts(parts, body));
    let mut attempts = Attempts::new(pool);
    // Sent again after a failure once on the wire only when kept as a template.
    let resendable = template.is_some();
    while let Some(req) = pending
        .take()
        .or_else(|| template.as_ref().map(Template::build))
    {
        let Some(server) = attempts.next(req.headers()) else {
            break;
        };
        // Boxed (in a statement of its own, see route_and_forward): hyper's client futures
        // (handshake, TLS, send) take kilobytes, which would otherwise be part of every
        // request's future, moved with it at each spawn, also on the paths that never use them.
        let sending = Box::pin(server.send(req, &pool.timeouts));
        let sent = sending.await;
        let failure = match sent {
            Ok((mut resp, lease)) => {
                let status = resp.status();
                attempts.answered(server, status.as_u16());
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    let idle = Duration::from_millis(pool.config.tunnel_timeout_ms);
                    let tunnel = tunnel(resp, down_upgrade, lease, down.clone(), idle);
                    return (tunnel, attempts.last_server());
                }
                let rh = resp.headers_mut();
                headers::strip_hop_by_hop(rh);
                let (mut rparts, rbody) = resp.into_parts();
                rparts.version = if down_version == Version::HTTP_2 {
                    Version::HTTP_2
                } else {
                    Version::HTTP_11
                };
                let body = Body::incoming(rbody)
                    .with_deadline(deadline)
                    .with_idle(pool.timeouts.response, Silence::Server(m.clone()))
                    .with_guard(Box::new(lease));
                return (Response::from_parts(rparts, body), attempts.last_server());
            }
            Err(SendError::NotSent(back, why)) => {
                pending = Some(back);
                AttemptError::NotSent("upstream connection failed\n", why)
            }
            Err(SendError::Busy(back)) => {
                pending = Some(back);
                AttemptError::Busy
            }
            Err(SendError::Sent(why)) => {
                AttemptError::Sent("upstream failed during the exchange\n", why)
            }
            Err(SendError::Timeout) => AttemptError::Timeout,
            Err(SendError::Downstream(why)) => {
                // A client sending a broken body must not count against, or eject, a
                // healthy server; nor is the request retried.
                tracing::debug!("request body failed: {why}");
                conn.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
                let r = client_fault(m, StatusCode::BAD_REQUEST, "malformed request body\n");
                return (r, attempts.last_server());
            }
            Err(SendError::ClientTimeout) => {
                // The client stopped sending its body: its timeout, never the server's.
                conn.metrics.client_timeouts.fetch_add(1, Ordering::Relaxed);
                let r = client_fault(m, StatusCode::REQUEST_TIMEOUT, "request body timeout\n");
                return (r, attempts.last_server());
            }
            Err(SendError::TooLarge) => {
                conn.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
                let r = client_fault(m, StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
                return (r, attempts.last_server());
            }
        };
        if !attempts.failed(server, failure, resendable) {
            break;
        }
    }
    let (status, text) = attempts.give_up();
    (local(status, text), attempts.last_server())
}

/// The answer to a request whose client failed it (its body): counted in the pool's
/// responses, never against the server, and the connection closes.
fn client_fault(m: &PoolMetrics, status: StatusCode, text: &'static str) -> Response<Body> {
    m.response(status.as_u16());
    let mut r = local(status, text);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Answers 101 to the client and splices the two upgraded connections together until either
/// side closes or nothing moves either way for `idle` (the pool's `tunnel_timeout_ms`).
fn tunnel(
    mut resp: Response<Incoming>,
    down_upgrade: Option<hyper::upgrade::OnUpgrade>,
    lease: crate::l7::pool::Lease,
    down: Arc<Downstream>,
    idle: Duration,
) -> Response<Body> {
    let Some(down_upgrade) = down_upgrade else {
        // The backend switched protocols without being asked: nothing to splice.
        return local(StatusCode::BAD_GATEWAY, "unexpected 101 from upstream\n");
    };
    let up = hyper::upgrade::on(&mut resp);
    let upgrade = resp.headers().get(header::UPGRADE).cloned();
    tokio::spawn(async move {
        // The lease keeps the server's slot for the tunnel's life, and the client
        // connection's hold its place under the listener's max_connections.
        let _lease = lease;
        let _down = down;
        if let (Ok(d), Ok(u)) = tokio::join!(down_upgrade, up) {
            let mut d = TokioIo::new(d);
            let mut u = TokioIo::new(u);
            if crate::l7::timeouts::splice(&mut d, &mut u, idle).await {
                tracing::debug!("tunnel closed after {idle:?} without traffic");
            }
        }
    });
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = out.headers_mut();
    for (name, value) in resp.headers() {
        h.append(name, value.clone());
    }
    headers::strip_hop_by_hop(h);
    if let Some(u) = upgrade {
        headers::restore_upgrade(h, u);
    }
    out
}
