//! The HTTP/1.1 fast path: the common request (a GET or HEAD, or a request with a body
//! framed by one valid `Content-Length` or by `Transfer-Encoding: chunked`, routed to a plain
//! HTTP/1 pool with a free slot) is forwarded as bytes, the way HAProxy and nginx do it: the
//! client's head is parsed once in place, rewritten straight into the upstream request, the
//! request body relayed as it arrives (chunked bodies checked by the same strict scanner as
//! responses), and the response head is rewritten the same way while its body (by length,
//! chunked or to close) is relayed unchanged. No header map, no task or channel per request.
//!
//! Anything else is handed, with the bytes read so far, to the general path (hyper), which
//! then owns the connection: other methods, HTTP/1.0, upgrades, `TE`, an `Expect` other than
//! `100-continue`, repeated or unusual framing fields (both `Content-Length` and
//! `Transfer-Encoding`, two `Content-Length`s, a coding other than chunked), a declared body
//! above `max_body_bytes`, invalid or repeated Host, unknown routes, hashing pools, HTTP/2
//! (its preface is not an HTTP/1 request line), oversized heads. So every refusal, limit and
//! defence of an odd head stays where it is implemented and tested once.
//!
//! A request body is the client's to send: its silence is bounded by `client_timeout_ms`
//! (408, counted against the client, never the server), the response timeout starts once it
//! has been sent, and a request any byte of whose body went to a server is never sent again.
//! The server may answer before the body's end: a refusal goes to the client at once
//! (`Early`), and an answer that came before the server stopped taking the body is
//! relayed rather than turned into a 502 (`answer_received`).

use crate::config::{Balance, HttpProtocol};
use crate::l7::attempt::{AttemptError, Attempts};
use crate::l7::chunked::ChunkedScanner;
use crate::l7::client_stream::ClientSocket;
use crate::l7::clock;
use crate::l7::headers::{self, HOP_BY_HOP, PROTECTED, push_field};
use crate::l7::pool::{Claim, Pool, Server, Timeouts};
use crate::l7::proxy::{Access, ConnInfo};
use crate::l7::response_fields::{self, Framing};
use crate::l7::router::normalise_host;
use crate::l7::snapshot::Shared;
use crate::l7::splice::Pipe;
use crate::l7::timeouts::Stall;
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// More fields than this take the general path.
const MAX_HEADERS: usize = 64;
/// A response head larger than this is refused (502).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Connection-named fields the fast path strips; more take the general path.
const MAX_NAMED: usize = 8;
/// Bytes asked of one read of a body.
const READ_SIZE: usize = 16 * 1024;
/// ... of a body still longer than that: a 64 KB response or a large upload then moves in
/// one or two reads and writes rather than four or more (loopback delivers up to 64 KB at
/// once). The buffer grows only on connections that carry such bodies.
const LARGE_READ_SIZE: usize = 64 * 1024;

fn read_size(left: u64) -> usize {
    if left > READ_SIZE as u64 {
        LARGE_READ_SIZE
    } else {
        READ_SIZE
    }
}

pub struct Settings {
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    /// The client's silence allowed while its request body is awaited.
    pub client_timeout: Duration,
    /// The connection is TLS: closing it starts with a close_notify (`shutdown`). A plain
    /// one is just dropped: its `close` sends the same FIN a `shutdown` would, one system
    /// call fewer on every connection that ends here.
    pub tls: bool,
}

/// How a connection left the fast path.
pub enum Outcome {
    Closed,
    /// The general path takes over; these bytes were read and not consumed.
    Handoff(Vec<u8>),
}

/// Serves requests on `io` until the connection ends or a request needs the general path.
pub async fn serve<I>(
    io: &mut I,
    info: &ConnInfo,
    shared: &Shared,
    settings: &Settings,
    stopped: &mut watch::Receiver<bool>,
) -> Outcome
where
    I: AsyncRead + AsyncWrite + Unpin + ClientSocket,
{
    let mut buffers = Buffers::take();
    let Buffers {
        buf,
        upstream,
        scratch,
    } = &mut buffers;
    let mut client_silence = Stall::default();
    // One timer per connection, re-armed for each head (the slowloris bound), made only when
    // a read of a head has to wait: a request already in the socket when the connection is
    // accepted (the listener defers accepts until it is) costs no timer.
    let mut head_timer: Option<Pin<Box<Sleep>>> = None;
    // A stop closes connections between requests, not before their first: that client
    // connected while the listener was open and its request may be on the way (a drain, a
    // hand-over to a new process); it is served within the drain time.
    let mut served = false;
    loop {
        let head_deadline = clock::coarse_now() + settings.header_timeout;
        let mut acked = false;
        let mut plan = loop {
            if !buf.is_empty() {
                match prepare(buf, info, shared, upstream) {
                    Prep::Partial if buf.len() < settings.max_header_bytes => {
                        if !acked {
                            io.ack_now();
                            acked = true;
                        }
                    }
                    Prep::Partial | Prep::Handoff => {
                        return Outcome::Handoff(std::mem::take(buf));
                    }
                    Prep::Ready(plan) => break plan,
                }
            } else if served && *stopped.borrow() {
                return Outcome::Closed;
            }
            buf.reserve(4096);
            // The read first: the deadline's timer is polled (and made) only when it waits.
            // A read that succeeds past the deadline is bounded by max_header_bytes.
            let read = tokio::select! {
                biased;
                r = io.read_buf(buf) => r,
                () = Deadline::new(&mut head_timer, head_deadline) => return Outcome::Closed,
                _ = stopped.changed(), if buf.is_empty() && served => return Outcome::Closed,
            };
            match read {
                Ok(0) | Err(_) => return Outcome::Closed,
                Ok(_) => {}
            }
        };
        buf.drain(..plan.head_len);
        let mut client = Downstream {
            io: &mut *io,
            buf,
            timeout: settings.client_timeout,
            silence: &mut client_silence,
        };
        let busy = crate::l7::coalesce::InFlight::start();
        let keep = exchange(&mut client, &mut plan, upstream, info, scratch).await;
        drop(busy);
        served = true;
        if !keep {
            if settings.tls {
                let _ = io.shutdown().await;
            }
            return Outcome::Closed;
        }
    }
}

/// A deadline whose timer is made (or moved) only when the deadline is first polled.
struct Deadline<'a> {
    timer: &'a mut Option<Pin<Box<Sleep>>>,
    at: Instant,
}

impl<'a> Deadline<'a> {
    fn new(timer: &'a mut Option<Pin<Box<Sleep>>>, at: Instant) -> Deadline<'a> {
        Deadline { timer, at }
    }
}

impl Future for Deadline<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let at = this.at;
        let timer = match this.timer {
            Some(t) => {
                if t.deadline() != at {
                    t.as_mut().reset(at);
                }
                t
            }
            None => this.timer.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        timer.as_mut().poll(cx)
    }
}

/// What a parsed request head turned into.
pub enum Prep {
    Partial,
    Handoff,
    Ready(Plan),
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    Chunked,
}

pub struct Plan {
    pub head_len: usize,
    pub body: RequestBody,
    /// The client sent `Expect: 100-continue`: it may wait for a 100 before its body.
    pub expect_continue: bool,
    pool: Arc<Pool>,
    /// The first server, and its claim when a slot was free at once.
    first: usize,
    claim: Option<Claim>,
    pub head_only: bool,
    pub client_close: bool,
    access: Option<Access>,
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Parses the head in `buf`; when it is a fast-path request, writes the upstream request
/// into `out` and claims a server. Public for the fuzz target (fuzz/fuzz_targets/
/// http_fast_head.rs).
pub fn prepare(buf: &[u8], info: &ConnInfo, shared: &Shared, out: &mut Vec<u8>) -> Prep {
    // Left uninitialised for httparse: 64 empty fields written first cost a 2 KB copy per
    // request.
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Prep::Partial,
        Err(_) => return Prep::Handoff,
    };
    let (Some(1), Some(method), Some(target)) = (req.version, req.method, req.path) else {
        return Prep::Handoff;
    };
    let head_only = match method {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => false,
        "HEAD" => true,
        _ => return Prep::Handoff,
    };
    // Origin-form only, of bytes any URI parser accepts: anything odder is for the general
    // path to refuse or pass as it does.
    if !target.starts_with('/') || !target.bytes().all(plain_target_byte) {
        return Prep::Handoff;
    }
    let mut host: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut client_close = false;
    let mut named: [&[u8]; MAX_NAMED] = [&[]; MAX_NAMED];
    let mut n_named = 0;
    for f in req.headers.iter() {
        let name = f.name;
        if eq(name, "host") {
            if host.is_some() {
                return Prep::Handoff;
            }
            host = Some(f.value);
        } else if eq(name, "connection") {
            for t in tokens(f.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    client_close = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") || n_named == MAX_NAMED {
                    return Prep::Handoff;
                } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                    named[n_named] = t;
                    n_named += 1;
                }
            }
        } else if eq(name, "content-length") {
            // One plain decimal length; lists, repeats and signs are the general path's to
            // refuse (or fold) as it does.
            let Some(n) = decimal(f.value).filter(|_| length.is_none()) else {
                return Prep::Handoff;
            };
            length = Some(n);
        } else if eq(name, "transfer-encoding") {
            if chunked || !f.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Prep::Handoff;
            }
            chunked = true;
        } else if eq(name, "expect") {
            if expect_continue || !f.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Prep::Handoff;
            }
            expect_continue = true;
        } else if eq(name, "upgrade") || eq(name, "te") {
            return Prep::Handoff;
        }
    }
    let body = match (length, chunked) {
        (None, false) | (Some(0), false) => RequestBody::None,
        (Some(n), false) if info.max_body == 0 || n <= info.max_body => RequestBody::Length(n),
        (None, true) => RequestBody::Chunked,
        // Both (a smuggling shape), or a declared body over the limit (413).
        _ => return Prep::Handoff,
    };
    if expect_continue && body == RequestBody::None {
        return Prep::Handoff;
    }
    let Some(host_raw) = host else {
        return Prep::Handoff;
    };
    if host_raw.contains(&b'@') {
        return Prep::Handoff;
    }
    let (Some(host), Ok(host_text)) = (normalise_host(host_raw), std::str::from_utf8(host_raw))
    else {
        return Prep::Handoff;
    };
    let path = target.split('?').next().unwrap_or(target);
    // Paths that need normalising are rewritten by the general path, in one place.
    if !crate::l7::path::is_normal(path) {
        return Prep::Handoff;
    }
    let snap = shared.load();
    let Some(view) = snap.listeners.get(&*info.listener) else {
        return Prep::Handoff;
    };
    let Some(route_id) = view.router.route(&host, path) else {
        return Prep::Handoff;
    };
    let route = &snap.routes[route_id];
    let pool = &route.pool;
    if pool.config.protocol != HttpProtocol::Http1
        || pool.config.tls.is_some()
        || pool.config.total_timeout_ms != 0
        || !matches!(
            pool.config.balance,
            Balance::RoundRobin | Balance::LeastOutstanding
        )
    {
        return Prep::Handoff;
    }
    let Some(idx) = pool.pick(&http::HeaderMap::new(), &[]) else {
        return Prep::Handoff;
    };
    let claim = pool.servers[idx].try_claim();
    info.metrics.requests.fetch_add(1, Ordering::Relaxed);
    info.metrics.fast_requests.fetch_add(1, Ordering::Relaxed);
    route.metrics.requests.fetch_add(1, Ordering::Relaxed);

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let fields = pool.config.forwarding;
    let mut xff_name = "x-forwarded-for";
    let mut xff: Vec<&[u8]> = Vec::new();
    let mut proto_name = "x-forwarded-proto";
    let mut host_name = "x-forwarded-host";
    for f in req.headers.iter() {
        let name = f.name;
        if HOP_BY_HOP.iter().any(|h| eq(name, h))
            || (named[..n_named]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
                && !PROTECTED.iter().any(|p| eq(name, p)))
        {
            continue;
        }
        if fields.xff && eq(name, "x-forwarded-for") {
            if xff.is_empty() {
                xff_name = name;
            }
            xff.push(f.value);
            continue;
        }
        if fields.proto && eq(name, "x-forwarded-proto") {
            proto_name = name;
            continue;
        }
        if fields.host && eq(name, "x-forwarded-host") {
            host_name = name;
            continue;
        }
        push_field(out, name.as_bytes(), f.value);
    }
    if body == RequestBody::Chunked {
        // Hop-by-hop, so skipped above; the body goes on in the same coding.
        push_field(out, b"transfer-encoding", b"chunked");
    }
    headers::push_forwarding(
        out,
        &info.forwarding,
        fields,
        [xff_name, proto_name, host_name],
        &xff,
        host_raw,
        host_text,
    );
    out.extend_from_slice(b"\r\n");

    let access = view.access_log.then(|| Access {
        method: method.to_owned(),
        path: path.to_owned(),
        host: host.clone().into_owned(),
        start: std::time::Instant::now(),
    });
    Prep::Ready(Plan {
        head_len,
        body,
        expect_continue,
        pool: pool.clone(),
        first: idx,
        claim,
        head_only,
        client_close,
        access,
    })
}

/// A Content-Length value: digits only, at most 18 of them (no u64 overflow).
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn plain_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !b"\"#<>\\^`{|}".contains(&b)
}

/// Spare connection buffers a worker thread keeps (at most this many sets).
const SPARE_SETS: usize = 64;
/// A buffer grown past this is not kept.
const SPARE_CAPACITY: usize = 64 * 1024;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<[Vec<u8>; 5]>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A connection's buffers on the fast path: taken from its worker thread's spares and given
/// back when the connection leaves, so a churn of short connections allocates none (the
/// profile of a connection per request showed their allocation and growth).
struct Buffers {
    /// What the client sent and was not forwarded yet.
    buf: Vec<u8>,
    /// The rewritten request head.
    upstream: Vec<u8>,
    scratch: Scratch,
}

impl Buffers {
    fn take() -> Buffers {
        let spare = SPARE.try_with(|s| s.borrow_mut().pop()).ok().flatten();
        let [buf, upstream, from, to, first] = spare.unwrap_or_else(|| {
            [
                Vec::with_capacity(4096),
                Vec::with_capacity(1024),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            ]
        });
        Buffers {
            buf,
            upstream,
            // Not a kept timer: it would belong to another connection's task.
            scratch: Scratch {
                from,
                to,
                first,
                silence: Stall::default(),
                response_timer: None,
            },
        }
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        let s = &mut self.scratch;
        let vecs = [
            &mut self.buf,
            &mut self.upstream,
            &mut s.from,
            &mut s.to,
            &mut s.first,
        ];
        if vecs.iter().any(|v| v.capacity() > SPARE_CAPACITY) {
            return;
        }
        let spare = vecs.map(|v| {
            v.clear();
            std::mem::take(v)
        });
        // At thread exit the spares are gone already: nothing to give back to.
        let _ = SPARE.try_with(|spares| {
            let mut spares = spares.borrow_mut();
            if spares.len() < SPARE_SETS {
                spares.push(spare);
            }
        });
    }
}

/// Buffers kept for the connection's life.
#[derive(Default)]
struct Scratch {
    /// What the backend sent.
    from: Vec<u8>,
    /// What goes to the client next.
    to: Vec<u8>,
    /// What goes to the server first: the head and the body's first bytes, in one write.
    first: Vec<u8>,
    /// The server's silence while a response body is awaited.
    silence: Stall,
    /// The bound on the wait for each response head of this connection.
    response_timer: Option<Pin<Box<Sleep>>>,
}

/// The client side of a request being forwarded: its connection, what was read of it past
/// the head (the body's start, perhaps the next request), and the bound on its silence.
struct Downstream<'a, I> {
    io: &'a mut I,
    buf: &'a mut Vec<u8>,
    timeout: Duration,
    silence: &'a mut Stall,
}

impl<I: AsyncRead + Unpin> Downstream<'_, I> {
    /// Reads more of the request body into `buf`, up to `want` bytes; fails when the client
    /// sends nothing for the client timeout (the timer is armed only when a read has to
    /// wait).
    async fn read(&mut self, want: usize) -> Result<(), ClientFail> {
        self.read_watching(want, None).await.map(|_| ())
    }

    /// As `read`, and while the client has nothing, also looks for the server's answer on
    /// `watch` (the request body going out): false when bytes of it came instead.
    async fn read_watching(
        &mut self,
        want: usize,
        mut watch: Option<(&TcpStream, &mut Early<'_>)>,
    ) -> Result<bool, ClientFail> {
        self.buf.reserve(want);
        let (io, buf, silence, limit) = (
            &mut *self.io,
            &mut *self.buf,
            &mut *self.silence,
            self.timeout,
        );
        std::future::poll_fn(|cx| {
            match tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut *io), cx, buf) {
                Poll::Ready(Ok(0) | Err(_)) => {
                    silence.progress();
                    Poll::Ready(Err(ClientFail::Gone))
                }
                Poll::Ready(Ok(_)) => {
                    silence.progress();
                    Poll::Ready(Ok(true))
                }
                Poll::Pending if silence.pending(cx, limit) => {
                    silence.progress();
                    Poll::Ready(Err(ClientFail::Timeout))
                }
                Poll::Pending => match &mut watch {
                    Some((up, early)) => early.poll_bytes(cx, up).map(|()| Ok(false)),
                    None => Poll::Pending,
                },
            }
        })
        .await
    }
}

/// Why the client's request body could not be forwarded: the client's fault, never the
/// server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientFail {
    Malformed,
    Timeout,
    TooLarge,
    /// The client closed its connection (or it failed).
    Gone,
}

/// The part of a request body still to come.
enum BodyLeft {
    Length(u64),
    Chunked(ChunkedScanner),
    Done,
}

impl BodyLeft {
    fn new(body: RequestBody) -> BodyLeft {
        match body {
            RequestBody::None | RequestBody::Length(0) => BodyLeft::Done,
            RequestBody::Length(n) => BodyLeft::Length(n),
            RequestBody::Chunked => BodyLeft::Chunked(ChunkedScanner::new()),
        }
    }

    /// How many bytes at the start of `input` belong to the body (checked, and counted
    /// against `max`, 0 for no limit).
    fn take(&mut self, input: &[u8], max: u64) -> Result<usize, ClientFail> {
        match self {
            BodyLeft::Done => Ok(0),
            BodyLeft::Length(left) => {
                let n = input
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                if *left == 0 {
                    *self = BodyLeft::Done;
                }
                Ok(n)
            }
            BodyLeft::Chunked(scanner) => {
                let n = scanner.feed(input).map_err(|_| ClientFail::Malformed)?;
                if max != 0 && scanner.declared() > max {
                    return Err(ClientFail::TooLarge);
                }
                if scanner.is_done() {
                    *self = BodyLeft::Done;
                }
                Ok(n)
            }
        }
    }

    fn is_done(&self) -> bool {
        matches!(self, BodyLeft::Done)
    }

    fn read_size(&self) -> usize {
        match self {
            BodyLeft::Length(left) => read_size(*left),
            _ => READ_SIZE,
        }
    }
}

/// Why an attempt on one server failed.
enum Fail {
    /// No response head: the retry loop decides (`l7::attempt`).
    Upstream(AttemptError),
    /// The response had started: the client connection must close.
    Broken,
    /// The server sent nothing of the body for the response timeout; the client connection
    /// closes.
    Silent,
    /// The client's body failed; the server is not at fault.
    Client(ClientFail),
}

impl From<AttemptError> for Fail {
    fn from(e: AttemptError) -> Fail {
        Fail::Upstream(e)
    }
}

/// Forwards one request with retries; whether the client connection stays open.
async fn exchange<I>(
    client: &mut Downstream<'_, I>,
    plan: &mut Plan,
    request: &[u8],
    info: &ConnInfo,
    s: &mut Scratch,
) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin + ClientSocket,
{
    let pool = plan.pool.clone();
    let m = &pool.metrics;
    m.requests.fetch_add(1, Ordering::Relaxed);
    // A request with a body cannot be sent twice: what the client sent of it is gone.
    let resendable = plan.body == RequestBody::None;
    let mut attempts = Attempts::new(&pool);
    let mut server = attempts.start(plan.first);
    let mut claim = match plan.claim.take() {
        Some(c) => Some(c),
        None => server.claim(pool.timeouts.queue).await,
    };
    loop {
        let result = match claim.take() {
            None => Err(Fail::Upstream(AttemptError::Busy)),
            Some(c) => attempt_once(client, server, c, request, plan, info, s).await,
        };
        match result {
            Ok((status, keep)) => {
                attempts.answered(server, status);
                return keep && !plan.client_close;
            }
            Err(Fail::Upstream(e)) => {
                if !attempts.failed(server, e, resendable) {
                    break;
                }
            }
            Err(Fail::Broken) => return false,
            Err(Fail::Silent) => {
                m.timeouts.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            Err(Fail::Client(why)) => {
                let (status, text) = match why {
                    ClientFail::Gone => return false,
                    ClientFail::Malformed => {
                        info.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
                        (400, "malformed request body\n")
                    }
                    ClientFail::Timeout => {
                        info.metrics.client_timeouts.fetch_add(1, Ordering::Relaxed);
                        (408, "request body timeout\n")
                    }
                    ClientFail::TooLarge => {
                        info.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
                        (413, "request body too large\n")
                    }
                };
                m.response(status);
                log_access(plan, info, status, attempts.last_server());
                s.to.clear();
                local_response(&mut s.to, status, text, true);
                let _ = client.io.write_all(&s.to).await;
                return false;
            }
        }
        let Some(next) = attempts.next(&http::HeaderMap::new()) else {
            break;
        };
        server = next;
        claim = server.claim(pool.timeouts.queue).await;
    }
    let (status, text) = attempts.give_up();
    log_access(plan, info, status.as_u16(), attempts.last_server());
    // What is left of a body the client may still be sending is not read: the connection
    // closes after the answer.
    let close = plan.client_close || !resendable;
    s.to.clear();
    local_response(&mut s.to, status.as_u16(), text, close);
    client.io.write_all(&s.to).await.is_ok() && !close
}

fn log_access(plan: &Plan, info: &ConnInfo, status: u16, server: Option<std::net::SocketAddr>) {
    if let Some(a) = &plan.access {
        a.log(info, status, &plan.pool.name, server);
    }
}

pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    pub reusable: bool,
}

const DURING: &str = "upstream failed during the exchange\n";

/// One try on one server: a kept-alive connection if there is one (a fresh one if that
/// turns out closed, for a request without a body), the request and its body, the response
/// head, the response body.
async fn attempt_once<I>(
    client: &mut Downstream<'_, I>,
    server: &Arc<Server>,
    claim: Claim,
    request: &[u8],
    plan: &Plan,
    info: &ConnInfo,
    s: &mut Scratch,
) -> Result<(u16, bool), Fail>
where
    I: AsyncRead + AsyncWrite + Unpin + ClientSocket,
{
    let t = &plan.pool.timeouts;
    let head_read = client.io.spliceable().then_some(HEAD_READ);
    let mut reused = true;
    // The server answered and stopped taking the body: the client's connection closes after
    // the answer, its body's rest unread.
    let mut cut_short = false;
    let mut up = match server.take_raw(t.idle) {
        Some(c) => c,
        None => {
            reused = false;
            connect(server, t).await?
        }
    };
    let head = if plan.body == RequestBody::None {
        loop {
            if up.write_all(request).await.is_err() {
                if reused {
                    reused = false;
                    up = connect(server, t).await?;
                    continue;
                }
                return Err(AttemptError::Sent(
                    DURING,
                    format!("{}: write failed", server.address),
                )
                .into());
            }
            s.from.clear();
            match read_head(&mut up, plan, t, head_read, s).await {
                Ok(h) => break h,
                // A kept-alive connection the server closed meanwhile: nothing of this
                // request was processed, so a fresh connection to the same server is safe.
                Err(HeadError::Closed) if reused => {
                    reused = false;
                    up = connect(server, t).await?;
                }
                Err(e) => return Err(e.fail(server)),
            }
        }
    } else {
        s.from.clear();
        match send_body(client, &mut up, request, plan, info, t, s).await {
            Ok(Some(answer)) => {
                log_access(plan, info, answer.status, Some(server.address));
                if answer.body_sent {
                    let clean = answer.clean && !crate::l7::splice::has_more(&up);
                    let mut upstream = Upstream {
                        stream: Some(up),
                        server,
                        claim: Some(claim),
                        reusable: true,
                    };
                    upstream.release(clean);
                }
                return Ok((answer.status, answer.body_sent));
            }
            Ok(None) => read_head(&mut up, plan, t, head_read, s)
                .await
                .map_err(|e| e.fail(server))?,
            Err(Fail::Upstream(e)) => match answer_received(&up, plan, s) {
                Some(head) => {
                    cut_short = true;
                    head
                }
                None => return Err(Fail::Upstream(e)),
            },
            Err(e) => return Err(e),
        }
    };
    // Logged with the head, as the general path does, before the body streams.
    log_access(plan, info, head.status, Some(server.address));
    let mut upstream = Upstream {
        stream: Some(up),
        server,
        claim: Some(claim),
        reusable: head.reusable && !cut_short,
    };
    let keep_client = relay_body(
        client.io,
        &mut upstream,
        head.framing,
        head.len,
        t.response,
        &info.metrics.spliced_bytes,
        s,
    )
    .await?;
    Ok((head.status, keep_client && !cut_short))
}

/// The response a server sent before it stopped taking the request body: an answer given on
/// the head (a 413 over a size limit, a 401, a redirect) by a server that then closes, or
/// that waits without reading the rest. It is the client's answer, as HAProxy relays it, not
/// a failure of the server (which a 502 would count against it). Only what has arrived
/// counts: read without waiting, past what tokio knows of the socket's readiness, since the
/// bytes came while the body was being written. A complete final head is rewritten into
/// `s.to` with `Connection: close` (the body's rest is unread); what follows it in `s.from`
/// starts the response body.
fn answer_received(up: &TcpStream, plan: &Plan, s: &mut Scratch) -> Option<ResponseHead> {
    use std::os::fd::AsRawFd;
    // `s.from` may hold the answer's start already, read while the body went out.
    while s.from.len() <= MAX_RESPONSE_HEAD {
        s.from.reserve(8192);
        let room = s.from.spare_capacity_mut();
        // SAFETY: a non-blocking read into the vector's spare capacity, of at most its length;
        // the bytes the kernel wrote are then counted in.
        let n = unsafe {
            libc::recv(
                up.as_raw_fd(),
                room.as_mut_ptr().cast(),
                room.len(),
                libc::MSG_DONTWAIT,
            )
        };
        let Ok(n) = usize::try_from(n) else { break };
        if n == 0 {
            break;
        }
        // SAFETY: the kernel initialised `n` bytes past the length.
        unsafe { s.from.set_len(s.from.len() + n) };
    }
    loop {
        match rewrite_response_head(&s.from, plan, &mut s.to) {
            Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                s.from.drain(..h.len);
            }
            Ok(Some(h)) if h.status >= 200 => {
                close_after(&mut s.to, &h, plan);
                return Some(h);
            }
            _ => return None,
        }
    }
}

/// Marks a head rewritten into `to` with `Connection: close` (the client's connection ends
/// after this response), unless [`rewrite_response_head`] did already.
fn close_after(to: &mut Vec<u8>, head: &ResponseHead, plan: &Plan) {
    if plan.client_close || head.framing == Framing::Close {
        return;
    }
    // The rewritten head ends with its blank line; the field goes before it.
    to.truncate(to.len().saturating_sub(2));
    push_field(to, b"connection", b"close");
    to.extend_from_slice(b"\r\n");
}

async fn connect(server: &Server, t: &Timeouts) -> Result<TcpStream, Fail> {
    server
        .connect_raw(t)
        .await
        .map_err(|e| AttemptError::NotSent("upstream connection failed\n", e).into())
}

/// Sends the head with the body's first bytes in one write (read first, after a `100
/// Continue` when the client waits for one, so a malformed start reaches no server), then
/// the rest as the client sends it. Writes the server does not take within the response
/// timeout fail the attempt. The server's answer when it came before the body's end and
/// was relayed at once ([`Early`]).
async fn send_body<I>(
    client: &mut Downstream<'_, I>,
    up: &mut TcpStream,
    request: &[u8],
    plan: &Plan,
    info: &ConnInfo,
    t: &Timeouts,
    s: &mut Scratch,
) -> Result<Option<Answered>, Fail>
where
    I: AsyncRead + AsyncWrite + Unpin + ClientSocket,
{
    let mut body = BodyLeft::new(plan.body);
    let mut acked = false;
    if client.buf.is_empty() {
        if plan.expect_continue {
            client
                .io
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(|_| Fail::Client(ClientFail::Gone))?;
        }
        client.io.ack_now();
        acked = true;
        client.read(body.read_size()).await.map_err(Fail::Client)?;
    }
    let n = body.take(client.buf, info.max_body).map_err(Fail::Client)?;
    if !acked && !body.is_done() {
        client.io.ack_now();
    }
    s.first.clear();
    s.first.extend_from_slice(request);
    s.first.extend_from_slice(&client.buf[..n]);
    client.buf.drain(..n);
    let sent = |r: Result<Result<(), std::io::Error>, tokio::time::error::Elapsed>| match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Fail::Upstream(AttemptError::Sent(
            DURING,
            "request body not taken".to_owned(),
        ))),
        Err(_) => Err(Fail::Upstream(AttemptError::Timeout)),
    };
    sent(tokio::time::timeout(t.response, up.write_all(&s.first)).await)?;
    let mut early = Early {
        from: &mut s.from,
        to: &mut s.to,
        plan,
        watching: true,
        answered: None,
    };
    let result = if let BodyLeft::Length(left) = body
        && left >= SPLICE_MIN
        && client.buf.is_empty()
        && client.io.spliceable()
        && let Ok(mut pipe) = Pipe::take()
    {
        splice_request(
            client,
            up,
            &mut pipe,
            left,
            t.response,
            &info.metrics.spliced_bytes,
            &mut early,
        )
        .await
    } else {
        copy_request(client, up, &mut body, info.max_body, t.response, &mut early).await
    };
    match (result, early.answered) {
        (Ok(()), answered) => Ok(answered),
        // The client has its answer: what failed after it only closes both connections.
        (Err(_), Some(a)) => Ok(Some(Answered {
            body_sent: false,
            ..a
        })),
        (Err(e), None) => Err(e),
    }
}

/// Relays the rest of a request body the copying way (chunked bodies, short ones, TLS
/// clients), watching for the server's answer whenever the client or the server makes it
/// wait, as [`splice_request`] does. The server's refusal to take bytes is bounded by the
/// response timeout.
async fn copy_request<I: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Downstream<'_, I>,
    up: &TcpStream,
    body: &mut BodyLeft,
    max_body: u64,
    limit: Duration,
    early: &mut Early<'_>,
) -> Result<(), Fail> {
    let mut server_silence = Stall::default();
    while !body.is_done() {
        if !client
            .read_watching(body.read_size(), Some((up, &mut *early)))
            .await
            .map_err(Fail::Client)?
        {
            early.settle(&mut *client.io).await?;
            if early.cut_short() {
                return Ok(());
            }
            continue;
        }
        let n = body.take(client.buf, max_body).map_err(Fail::Client)?;
        let mut at = 0;
        while at < n {
            let chunk = &client.buf[at..n];
            let not_taken = || {
                Fail::Upstream(AttemptError::Sent(
                    DURING,
                    "request body not taken".to_owned(),
                ))
            };
            let wrote = std::future::poll_fn(|cx| {
                loop {
                    match up.poll_write_ready(cx) {
                        Poll::Ready(Ok(())) => match up.try_write(chunk) {
                            Ok(k) => {
                                server_silence.progress();
                                return Poll::Ready(Ok(Some(k)));
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => return Poll::Ready(Err(not_taken())),
                        },
                        Poll::Ready(Err(_)) => return Poll::Ready(Err(not_taken())),
                        Poll::Pending if server_silence.pending(cx, limit) => {
                            return Poll::Ready(Err(Fail::Upstream(AttemptError::Timeout)));
                        }
                        Poll::Pending => return early.poll_bytes(cx, up).map(|()| Ok(None)),
                    }
                }
            })
            .await?;
            match wrote {
                Some(k) => at += k,
                None => {
                    early.settle(&mut *client.io).await?;
                    if early.cut_short() {
                        return Ok(());
                    }
                }
            }
        }
        client.buf.drain(..n);
    }
    Ok(())
}

/// A server's complete answer relayed while the request body was still on its way.
#[derive(Debug, Clone, Copy)]
struct Answered {
    status: u16,
    /// The server sent nothing past its response.
    clean: bool,
    /// The whole body reached the server afterwards, so both connections are at a boundary.
    body_sent: bool,
}

/// A refusal of an upload while its body is still on its way (a 413 over a size limit,
/// a 401 or 403 of an auth check, a redirect, given on the head). HAProxy relays a server's
/// answer at once; so does this for a refusal that is complete and small, and the client
/// learns it without waiting for its whole body to pass (RFC 9112 9.5: a client that sees
/// an error answer may stop sending). A server that keeps its connection still gets the
/// body to its end, so both connections stay usable; one that closes gets no more, and the
/// client connection closes after the answer.
///
/// A success (2xx) waits for the body's end, as before: a client is told its upload went
/// through only once all of it has reached the server. Relaying nginx's early `return 200`
/// at once also made the 1 MB upload row's p99 worse (median of six rounds 50 against 36 ms,
/// 2026-12-03). A long or unframed answer waits too: relayed while the client still sends,
/// it could stall a client that reads only after it has written.
struct Early<'a> {
    from: &'a mut Vec<u8>,
    to: &'a mut Vec<u8>,
    plan: &'a Plan,
    /// Off once answered, after a close, or once what came cannot be relayed early.
    watching: bool,
    answered: Option<Answered>,
}

impl Early<'_> {
    /// Answered, and the server takes no more of the body.
    fn cut_short(&self) -> bool {
        self.answered.is_some_and(|a| !a.body_sent)
    }

    /// Reads what the server sent meanwhile; ready when new bytes came. Run only when the
    /// body has to wait, so a body that flows costs nothing here.
    fn poll_bytes(&mut self, cx: &mut std::task::Context<'_>, up: &TcpStream) -> Poll<()> {
        while self.watching {
            match up.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => self.watching = false,
                Poll::Ready(Ok(())) => {
                    self.from.reserve(8192);
                    match up.try_read_buf(self.from) {
                        Ok(0) => self.watching = false,
                        Ok(_) => return Poll::Ready(()),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => self.watching = false,
                    }
                }
            }
        }
        Poll::Pending
    }

    /// Relays the answer if what came makes one that may go early.
    async fn settle<I: AsyncWrite + Unpin>(&mut self, client: &mut I) -> Result<(), Fail> {
        // The `100 Continue` a server sends to an `Expect`, and any other interim answer,
        // are dropped as read_head drops them.
        loop {
            let head = match rewrite_response_head(self.from, self.plan, self.to) {
                Ok(None) if self.from.len() <= MAX_RESPONSE_HEAD => return Ok(()),
                Ok(Some(h)) if (100..200).contains(&h.status) && h.status != 101 => {
                    self.from.drain(..h.len);
                    continue;
                }
                Ok(Some(h)) if h.status >= 300 => h,
                _ => {
                    self.watching = false;
                    return Ok(());
                }
            };
            let end = match head.framing {
                Framing::None => Some(head.len),
                Framing::Length(n) => usize::try_from(n)
                    .ok()
                    .and_then(|n| n.checked_add(head.len)),
                Framing::Chunked | Framing::Close => None,
            };
            let Some(end) = end.filter(|e| *e <= self.from.len()) else {
                // Not whole yet (more may come), or long or unframed: the latter waits for
                // the body's end.
                if end.is_none() || self.from.len() > MAX_RESPONSE_HEAD {
                    self.watching = false;
                }
                return Ok(());
            };
            if !head.reusable {
                // The server closes: so does the client's connection, its body's rest unread.
                close_after(self.to, &head, self.plan);
            }
            write_two(client, self.to, &self.from[head.len..end])
                .await
                .map_err(|_| Fail::Broken)?;
            self.answered = Some(Answered {
                status: head.status,
                clean: self.from.len() == end,
                body_sent: head.reusable,
            });
            self.from.clear();
            self.watching = false;
            return Ok(());
        }
    }
}

/// Moves the last `left` bytes of a request body by length from the client to the server
/// through `pipe`, asking no more than the body's rest of the client (what follows is the
/// next request's). The client's silence is bounded by the client timeout (its 408), the
/// server's refusal to take bytes by the response timeout, as on the copying path.
async fn splice_request<I: ClientSocket + AsyncWrite + Unpin>(
    client: &mut Downstream<'_, I>,
    up: &TcpStream,
    pipe: &mut Pipe,
    mut left: u64,
    limit: Duration,
    spliced: &AtomicU64,
    early: &mut Early<'_>,
) -> Result<(), Fail> {
    let mut server_silence = Stall::default();
    let _weighs_more = crate::l7::coalesce::SplicedBody::start();
    while left > 0 {
        let max = usize::try_from(left).unwrap_or(usize::MAX).min(pipe.room());
        let (io, silence, timeout) = (&mut *client.io, &mut *client.silence, client.timeout);
        let step = std::future::poll_fn(|cx| match io.poll_splice_in(cx, pipe, max) {
            Poll::Ready(Ok(0) | Err(_)) => {
                silence.progress();
                Poll::Ready(Err(Fail::Client(ClientFail::Gone)))
            }
            Poll::Ready(Ok(n)) => {
                silence.progress();
                Poll::Ready(Ok(Some(n)))
            }
            Poll::Pending if silence.pending(cx, timeout) => {
                silence.progress();
                Poll::Ready(Err(Fail::Client(ClientFail::Timeout)))
            }
            Poll::Pending => early.poll_bytes(cx, up).map(|()| Ok(None)),
        })
        .await?;
        let Some(n) = step else {
            early.settle(&mut *client.io).await?;
            if early.cut_short() {
                return Ok(());
            }
            continue;
        };
        spliced.fetch_add(n as u64, Ordering::Relaxed);
        left -= n as u64;
        while pipe.held() > 0 {
            let answer = std::future::poll_fn(|cx| match pipe.poll_drain_to(cx, up) {
                Poll::Ready(Ok(_)) => {
                    server_silence.progress();
                    Poll::Ready(Ok(false))
                }
                Poll::Ready(Err(_)) => Poll::Ready(Err(Fail::Upstream(AttemptError::Sent(
                    DURING,
                    "request body not taken".to_owned(),
                )))),
                Poll::Pending if server_silence.pending(cx, limit) => {
                    Poll::Ready(Err(Fail::Upstream(AttemptError::Timeout)))
                }
                Poll::Pending => early.poll_bytes(cx, up).map(|()| Ok(true)),
            })
            .await?;
            if answer {
                early.settle(&mut *client.io).await?;
                if early.cut_short() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

enum HeadError {
    Closed,
    Timeout,
    Invalid(&'static str),
}

impl HeadError {
    fn fail(self, server: &Server) -> Fail {
        Fail::Upstream(match self {
            HeadError::Closed => AttemptError::Sent(
                DURING,
                format!("{}: closed before a response", server.address),
            ),
            HeadError::Timeout => AttemptError::Timeout,
            HeadError::Invalid(why) => {
                AttemptError::Sent(DURING, format!("{}: {why}", server.address))
            }
        })
    }
}

/// Reads up to the end of the final response head, writing the client's version of the
/// head into `s.to`. What `s.from` holds already (read while the body went out) comes first.
///
/// `head_read`: the most one read may take, when a long body's rest is better spliced than
/// read along with the head.
async fn read_head(
    up: &mut TcpStream,
    plan: &Plan,
    t: &Timeouts,
    head_read: Option<usize>,
    s: &mut Scratch,
) -> Result<ResponseHead, HeadError> {
    let Scratch {
        from,
        to,
        response_timer,
        ..
    } = s;
    let read = async {
        loop {
            if !from.is_empty() {
                match rewrite_response_head(from, plan, to) {
                    Ok(Some(head)) if (100..200).contains(&head.status) => {
                        // Interim responses (a server's own 100 Continue among them): dropped,
                        // as the general path does.
                        if head.status == 101 {
                            return Err(HeadError::Invalid("unexpected 101"));
                        }
                        from.drain(..head.len);
                        continue;
                    }
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) if from.len() > MAX_RESPONSE_HEAD => {
                        return Err(HeadError::Invalid("response head too large"));
                    }
                    Ok(None) => {}
                    Err(why) => return Err(HeadError::Invalid(why)),
                }
            }
            from.reserve(8192);
            let read = match head_read {
                Some(max) => (&mut *up).take(max as u64).read_buf(&mut *from).await,
                None => up.read_buf(&mut *from).await,
            };
            match read {
                Ok(0) | Err(_) if from.is_empty() => return Err(HeadError::Closed),
                Ok(0) | Err(_) => {
                    return Err(HeadError::Invalid("closed inside the response head"));
                }
                Ok(_) => {}
            }
        }
    };
    // The connection's one response timer, moved on for each request: a later deadline only
    // updates the armed timer (and requests within one tick of the coarse clock leave it as
    // it is), where a timer made per request went into tokio's timer wheel and out again
    // each time (callgrind: 2% fewer instructions per keep-alive GET).
    let deadline = Deadline::new(response_timer, clock::coarse_now() + t.response);
    tokio::select! {
        biased;
        r = read => r,
        () = deadline => Err(HeadError::Timeout),
    }
}

/// Parses a response head; when complete, writes the client's head into `to`. Public for the
/// fuzz target.
pub fn rewrite_response_head(
    bytes: &[u8],
    plan: &Plan,
    to: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, &'static str> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS * 2];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        bytes,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("invalid response head"),
    };
    let status = resp.code.ok_or("invalid response head")?;
    if (100..200).contains(&status) {
        return Ok(Some(ResponseHead {
            len,
            status,
            framing: Framing::None,
            reusable: false,
        }));
    }
    let no_body = plan.head_only || status == 204 || status == 304;
    let fields = response_fields::scan(resp.version, resp.headers, no_body)?;
    to.clear();
    to.extend_from_slice(b"HTTP/1.1 ");
    to.extend_from_slice(itoa3(status).as_slice());
    to.push(b' ');
    to.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    to.extend_from_slice(b"\r\n");
    for f in resp.headers.iter() {
        if !fields.is_hop(f.name) {
            push_field(to, f.name.as_bytes(), f.value);
        }
    }
    if fields.chunked {
        push_field(to, b"transfer-encoding", b"chunked");
    }
    if !fields.has_date {
        // RFC 9110 6.6.1: a recipient with a clock adds Date to a response it forwards.
        push_field(to, b"date", http_date().as_bytes());
    }
    if plan.client_close || fields.framing == Framing::Close {
        push_field(to, b"connection", b"close");
    }
    to.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        len,
        status,
        framing: fields.framing,
        reusable: fields.reusable,
    }))
}

fn itoa3(n: u16) -> [u8; 3] {
    let n = n.min(999);
    [
        b'0' + (n / 100) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]
}

/// The upstream side of an exchange being relayed. It is released (the connection back to
/// the idle list when the message ended exactly at what was read, the server's slot freed)
/// as soon as the backend has sent the whole message, before the last bytes go to the
/// client: the next request can use both at once.
struct Upstream<'a> {
    stream: Option<TcpStream>,
    server: &'a Arc<Server>,
    claim: Option<Claim>,
    reusable: bool,
}

impl Upstream<'_> {
    fn release(&mut self, at_boundary: bool) {
        if let Some(up) = self.stream.take()
            && self.reusable
            && at_boundary
        {
            self.server.put_raw(up);
        }
        self.claim = None;
    }

    /// Reads more of the body; fails when the server sends nothing for `limit` (the timer
    /// is armed only when a read has to wait).
    async fn read(
        &mut self,
        buf: &mut Vec<u8>,
        want: usize,
        silence: &mut Stall,
        limit: Duration,
    ) -> Result<usize, Fail> {
        let Some(up) = self.stream.as_mut() else {
            return Err(Fail::Broken);
        };
        buf.clear();
        buf.reserve(want);
        std::future::poll_fn(|cx| {
            match tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut *up), cx, buf) {
                Poll::Ready(r) => {
                    silence.progress();
                    Poll::Ready(r.map_err(|_| Fail::Broken))
                }
                Poll::Pending if silence.pending(cx, limit) => Poll::Ready(Err(Fail::Silent)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

/// Sends the client head and relays the body; whether the client connection stays open.
async fn relay_body<I>(
    client: &mut I,
    up: &mut Upstream<'_>,
    framing: Framing,
    head_len: usize,
    limit: Duration,
    spliced: &AtomicU64,
    s: &mut Scratch,
) -> Result<bool, Fail>
where
    I: AsyncRead + AsyncWrite + Unpin + ClientSocket,
{
    let first = &s.from[head_len..];
    match framing {
        Framing::None => {
            up.release(first.is_empty());
            client.write_all(&s.to).await.map_err(|_| Fail::Broken)?;
            Ok(true)
        }
        Framing::Length(total) => {
            let take = first
                .len()
                .min(usize::try_from(total).unwrap_or(usize::MAX));
            let mut clean = first.len() == take;
            let mut left = total - take as u64;
            if left == 0 {
                up.release(clean);
            }
            // The pipe is taken before the head goes: a worker out of descriptors just
            // copies.
            let pipe = (left >= SPLICE_MIN && client.spliceable())
                .then(Pipe::take)
                .and_then(Result::ok);
            write_two(client, &mut s.to, &first[..take])
                .await
                .map_err(|_| Fail::Broken)?;
            if let Some(mut pipe) = pipe {
                splice_response(client, up, &mut pipe, left, limit, spliced, &mut s.silence)
                    .await?;
                return Ok(true);
            }
            while left > 0 {
                let n = up
                    .read(&mut s.from, read_size(left), &mut s.silence, limit)
                    .await?;
                if n == 0 {
                    return Err(Fail::Broken);
                }
                let take = n.min(usize::try_from(left).unwrap_or(usize::MAX));
                clean &= take == n;
                left -= take as u64;
                if left == 0 {
                    up.release(clean);
                }
                client
                    .write_all(&s.from[..take])
                    .await
                    .map_err(|_| Fail::Broken)?;
            }
            Ok(true)
        }
        Framing::Chunked => {
            let mut scanner = ChunkedScanner::new();
            let used = scanner.feed(first).map_err(|_| Fail::Broken)?;
            let mut clean = used == first.len();
            if scanner.is_done() {
                up.release(clean);
            }
            write_two(client, &mut s.to, &first[..used])
                .await
                .map_err(|_| Fail::Broken)?;
            while !scanner.is_done() {
                let n = up
                    .read(&mut s.from, READ_SIZE, &mut s.silence, limit)
                    .await?;
                if n == 0 {
                    return Err(Fail::Broken);
                }
                let used = scanner.feed(&s.from).map_err(|_| Fail::Broken)?;
                clean &= used == n;
                if scanner.is_done() {
                    up.release(clean);
                }
                client
                    .write_all(&s.from[..used])
                    .await
                    .map_err(|_| Fail::Broken)?;
            }
            Ok(true)
        }
        Framing::Close => {
            write_two(client, &mut s.to, first)
                .await
                .map_err(|_| Fail::Broken)?;
            loop {
                if up
                    .read(&mut s.from, READ_SIZE, &mut s.silence, limit)
                    .await?
                    == 0
                {
                    up.release(false);
                    return Ok(false);
                }
                client.write_all(&s.from).await.map_err(|_| Fail::Broken)?;
            }
        }
    }
}

/// A body by length with at least this much left after what came with its head moves
/// with splice(2) when the client's connection is a plain socket. Measured: 56 KB left (a
/// 64 KB response) costs 0.55-0.73 of the copying path's CPU per request, 16-24 KB left (24
/// and 32 KB responses) the same as copying within the noise, so it stays above those.
const SPLICE_MIN: u64 = 32 * 1024;
/// ... and then a read of the response head takes at most this much: what comes with it is
/// copied, the rest spliced.
const HEAD_READ: usize = 8 * 1024;

/// Moves the last `left` bytes of a response body from the server to the client through
/// `pipe`. Each fill asks for no more than the body's rest, so the server connection ends
/// exactly at the body's end and goes back to the idle list before the last bytes leave
/// (unless the server sent more than its body, or closed).
async fn splice_response<I: ClientSocket>(
    client: &mut I,
    up: &mut Upstream<'_>,
    pipe: &mut Pipe,
    mut left: u64,
    limit: Duration,
    spliced: &AtomicU64,
    silence: &mut Stall,
) -> Result<(), Fail> {
    while left > 0 {
        let Some(stream) = up.stream.as_ref() else {
            return Err(Fail::Broken);
        };
        let max = usize::try_from(left).unwrap_or(usize::MAX).min(pipe.room());
        let n = std::future::poll_fn(|cx| match pipe.poll_fill_from(cx, stream, max) {
            Poll::Ready(r) => {
                silence.progress();
                Poll::Ready(r.map_err(|_| Fail::Broken))
            }
            Poll::Pending if silence.pending(cx, limit) => Poll::Ready(Err(Fail::Silent)),
            Poll::Pending => Poll::Pending,
        })
        .await?;
        if n == 0 {
            // The server closed inside the body: the client connection closes after what
            // came, never kept with a short body.
            return Err(Fail::Broken);
        }
        spliced.fetch_add(n as u64, Ordering::Relaxed);
        left -= n as u64;
        if left == 0 {
            let clean = !crate::l7::splice::has_more(stream);
            up.release(clean);
        }
        while pipe.held() > 0 {
            std::future::poll_fn(|cx| client.poll_splice_out(cx, pipe))
                .await
                .map_err(|_| Fail::Broken)?;
        }
    }
    Ok(())
}

/// Bodies shorter than this go out copied behind the head; longer ones in one vectored
/// write with it, which saves copying them (a 64 KB response's first read is mostly body).
const GATHER_MIN: usize = 4096;

/// Writes `head` then `body` to the client: in one system call either way, without copying
/// a large `body` when the stream writes vectors. `head` may be extended.
async fn write_two<I>(client: &mut I, head: &mut Vec<u8>, body: &[u8]) -> std::io::Result<()>
where
    I: AsyncWrite + Unpin,
{
    if body.len() < GATHER_MIN || !client.is_write_vectored() {
        head.extend_from_slice(body);
        return client.write_all(head).await;
    }
    let mut done = 0;
    let total = head.len() + body.len();
    while done < head.len() {
        let bufs = [
            std::io::IoSlice::new(&head[done..]),
            std::io::IoSlice::new(body),
        ];
        let n = client.write_vectored(&bufs).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    if done < total {
        client.write_all(&body[done - head.len()..]).await?;
    }
    Ok(())
}

/// The proxy's own answer, as the general path's `proxy::local` writes it.
fn local_response(to: &mut Vec<u8>, status: u16, text: &str, close: bool) {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    to.extend_from_slice(b"HTTP/1.1 ");
    to.extend_from_slice(&itoa3(status));
    to.push(b' ');
    to.extend_from_slice(reason.as_bytes());
    to.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    to.extend_from_slice(text.len().to_string().as_bytes());
    to.extend_from_slice(b"\r\ndate: ");
    to.extend_from_slice(http_date().as_bytes());
    if close {
        to.extend_from_slice(b"\r\nconnection: close");
    }
    to.extend_from_slice(b"\r\n\r\n");
    to.extend_from_slice(text.as_bytes());
}

/// The current time as an HTTP date, formatted at most once a second per thread.
fn http_date() -> String {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        c.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Context;

    /// A client that takes at most `step` bytes a call, from vectors or not.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        vectored: bool,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut room = self.step;
            for b in bufs {
                let n = b.len().min(room);
                self.out.extend_from_slice(&b[..n]);
                room -= n;
            }
            self.calls += 1;
            Poll::Ready(Ok(self.step - room))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn head_and_body_arrive_whole_and_in_order_however_the_writes_split() {
        let body: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        for len in [0, 100, GATHER_MIN, body.len()] {
            for step in [1, 7, 50, 200, 4096, 1 << 20] {
                for vectored in [true, false] {
                    let mut head = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n".to_vec();
                    let mut want = head.clone();
                    want.extend_from_slice(&body[..len]);
                    let mut c = Trickle {
                        out: Vec::new(),
                        step,
                        vectored,
                        calls: 0,
                    };
                    let r = write_two(&mut c, &mut head, &body[..len]).await;
                    assert!(r.is_ok());
                    assert!(c.out == want, "len {len} step {step} vectored {vectored}");
                    if step == 1 << 20 {
                        assert_eq!(c.calls, 1, "one write when the client takes it all");
                    }
                }
            }
        }
    }
}
