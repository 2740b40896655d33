//! The one body type the proxy sends both ways: a streamed hyper body or a small local one,
//! plus an optional guard that runs when the body ends (returning the upstream connection to
//! its pool, releasing the server's slot), an optional deadline, and an optional bound on
//! the silence of whoever sends it (the client for a request body, the server for a
//! response body), armed only while a frame is awaited.

use crate::l7::downstream::Hold;
use crate::l7::metrics::PoolMetrics;
use crate::l7::pool::{Claim, Server};
use crate::l7::raw::ChunkedState;
use crate::l7::timeouts::{ClientFailure, Stall, Upload};
use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Called with `true` when the body was read to its end, `false` when dropped early or failed.
pub trait EndGuard: Send + Sync {
    fn finish(&mut self, complete: bool);
}

pub struct Body {
    inner: Inner,
    guard: Option<Box<dyn EndGuard>>,
    deadline: Option<Pin<Box<Sleep>>>,
    idle: Option<Idle>,
    /// A request body being sent upstream: tells the exchange whom it waits on.
    upload: Option<Arc<Upload>>,
    /// The client connection's hold for this request, released when the body ends.
    hold: Option<Hold>,
    /// Data bytes a request body may still carry (`max_body_bytes`), when limited.
    allowed: Option<u64>,
}

/// Whose silence a body's idle bound measures.
pub enum Silence {
    /// A request body: the client's (`client_timeout_ms`).
    Client,
    /// A response body: the server's (`response_timeout_ms`), counted in its pool's timeouts.
    Server(Arc<PoolMetrics>),
}

struct Idle {
    limit: Duration,
    stall: Stall,
    whose: Silence,
}

enum Inner {
    Incoming(Incoming),
    Full(Option<Bytes>),
    Raw(Box<RawBody>),
}

/// How a raw upstream body ends.
pub enum RawFraming {
    Length(u64),
    Chunked(Box<ChunkedState>),
    /// At the upstream's close (the connection is not reused).
    Close,
    Done,
}

/// A response body read straight from an upstream HTTP/1 connection, which goes back to the
/// server's idle list when the message has ended exactly at what was read.
pub struct RawBody {
    up: Option<TcpStream>,
    buf: BytesMut,
    framing: RawFraming,
    reusable: bool,
    server: Arc<Server>,
    claim: Option<Claim>,
}

impl RawBody {
    pub fn new(
        up: TcpStream,
        buf: BytesMut,
        framing: RawFraming,
        reusable: bool,
        server: Arc<Server>,
        claim: Claim,
    ) -> RawBody {
        RawBody {
            up: Some(up),
            buf,
            framing,
            reusable,
            server,
            claim: Some(claim),
        }
    }

    fn complete(&mut self) {
        self.framing = RawFraming::Done;
        if let Some(up) = self.up.take()
            && self.reusable
            && self.buf.is_empty()
        {
            self.server.put_raw(up);
        }
        self.claim = None;
    }

    fn fail(&mut self, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.framing = RawFraming::Done;
        self.up = None;
        self.claim = None;
        Poll::Ready(Some(Err(BodyError::Upstream(why))))
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            match &mut self.framing {
                RawFraming::Done => return Poll::Ready(None),
                RawFraming::Length(0) => {
                    self.complete();
                    return Poll::Ready(None);
                }
                RawFraming::Length(left) if !self.buf.is_empty() => {
                    let n = self
                        .buf
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    let data = self.buf.split_to(n).freeze();
                    if *left == 0 {
                        self.complete();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                RawFraming::Chunked(c) if !self.buf.is_empty() => {
                    if let Some(left) = c.scanner.data_left() {
                        let n = self
                            .buf
                            .len()
                            .min(usize::try_from(left).unwrap_or(usize::MAX));
                        c.scanner.take_data(n as u64);
                        return Poll::Ready(Some(Ok(Frame::data(self.buf.split_to(n).freeze()))));
                    }
                    let used = match c.scanner.feed_framing(&self.buf, &mut c.trailers) {
                        Ok(n) => n,
                        Err(_) => return self.fail("malformed chunked body"),
                    };
                    let _ = self.buf.split_to(used);
                    if c.scanner.is_done() {
                        let mut section = std::mem::take(&mut c.trailers);
                        self.complete();
                        if section.len() <= 1 {
                            return Poll::Ready(None);
                        }
                        section.push(b'\n');
                        return match trailers(&section) {
                            Some(map) => Poll::Ready(Some(Ok(Frame::trailers(map)))),
                            None => Poll::Ready(None),
                        };
                    }
                    continue;
                }
                RawFraming::Close if !self.buf.is_empty() => {
                    let data = self.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                _ => {}
            }
            let Some(up) = self.up.as_mut() else {
                return self.fail("upstream connection gone");
            };
            self.buf.reserve(16 * 1024);
            match tokio_util::io::poll_read_buf(Pin::new(up), cx, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if matches!(self.framing, RawFraming::Close) => {
                    self.complete();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    return self.fail("upstream closed inside the body");
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, RawFraming::Done | RawFraming::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            RawFraming::Length(n) => SizeHint::with_exact(n),
            RawFraming::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A decoded trailer section; fields that are not valid are left out.
fn trailers(section: &[u8]) -> Option<http::HeaderMap> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let parsed = match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, f))) => f,
        _ => return None,
    };
    let mut map = http::HeaderMap::new();
    for f in parsed {
        if let (Ok(n), Ok(v)) = (
            http::header::HeaderName::from_bytes(f.name.as_bytes()),
            http::HeaderValue::from_bytes(f.value),
        ) {
            map.append(n, v);
        }
    }
    Some(map)
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error("total timeout reached while streaming the body")]
    Deadline,
    #[error("the client sent nothing of the request body within the client timeout")]
    ClientTimeout,
    #[error("the server sent nothing of the response body within the response timeout")]
    ServerTimeout,
    #[error("the request body is larger than max_body_bytes")]
    TooLarge,
    #[error("{0}")]
    Upstream(&'static str),
}

impl Body {
    pub fn incoming(body: Incoming) -> Body {
        Body {
            inner: Inner::Incoming(body),
            guard: None,
            deadline: None,
            idle: None,
            upload: None,
            hold: None,
            allowed: None,
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
            guard: None,
            deadline: None,
            idle: None,
            upload: None,
            hold: None,
            allowed: None,
        }
    }

    /// A body read straight from an upstream connection.
    pub fn raw(mut body: RawBody) -> Body {
        if body.is_end_stream() {
            body.complete();
        }
        Body {
            inner: Inner::Raw(Box::new(body)),
            guard: None,
            deadline: None,
            idle: None,
            upload: None,
            hold: None,
            allowed: None,
        }
    }

    pub fn empty() -> Body {
        Body::full(Bytes::new())
    }

    pub fn with_guard(mut self, guard: Box<dyn EndGuard>) -> Body {
        self.guard = Some(guard);
        self.end_if_done();
        self
    }

    pub fn with_deadline(mut self, deadline: Option<tokio::time::Instant>) -> Body {
        self.deadline = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        self
    }

    /// Fails the body when `whose` sends nothing for `limit` while a frame is awaited.
    pub fn with_idle(mut self, limit: Duration, whose: Silence) -> Body {
        self.idle = Some(Idle {
            limit,
            stall: Stall::default(),
            whose,
        });
        self
    }

    /// A request body that fails once it has carried more than `max` data bytes.
    pub fn with_limit(mut self, max: u64) -> Body {
        self.allowed = Some(max);
        self
    }

    /// A request body: its progress tells the upstream exchange whom it waits on.
    pub fn with_upload(mut self, upload: Arc<Upload>) -> Body {
        self.upload = Some(upload);
        self
    }

    pub fn upload(&self) -> Option<Arc<Upload>> {
        self.upload.clone()
    }

    /// Keeps the client connection's hold for the request until the body ends (or is
    /// dropped, as an empty one is once sent).
    pub fn with_hold(mut self, hold: Hold) -> Body {
        self.hold = Some(hold);
        self
    }

    fn end(&mut self, complete: bool) {
        if let Some(mut g) = self.guard.take() {
            g.finish(complete);
        }
        self.hold = None;
    }

    /// The inner body has no frame yet: whoever sends it is silent.
    fn pending(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(u) = &self.upload {
            u.waiting_on_client();
        }
        let Some(idle) = &mut self.idle else {
            return Poll::Pending;
        };
        if !idle.stall.pending(cx, idle.limit) {
            return Poll::Pending;
        }
        let e = match &idle.whose {
            Silence::Client => {
                if let Some(u) = &self.upload {
                    u.fail(ClientFailure::Timeout);
                }
                BodyError::ClientTimeout
            }
            Silence::Server(m) => {
                m.timeouts.fetch_add(1, Ordering::Relaxed);
                BodyError::ServerTimeout
            }
        };
        self.idle = None;
        self.end(false);
        Poll::Ready(Some(Err(e)))
    }

    /// A body that is empty from the start never gets polled to its end by hyper.
    fn end_if_done(&mut self) {
        if self.is_end_stream() {
            self.end(true);
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.end(false);
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(d) = this.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            this.end(false);
            return Poll::Ready(Some(Err(BodyError::Deadline)));
        }
        let polled = match &mut this.inner {
            Inner::Incoming(b) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(r) => r.map(|f| f.map_err(BodyError::from)),
                Poll::Pending => return this.pending(cx),
            },
            Inner::Full(b) => b.take().map(|b| Ok(Frame::data(b))),
            Inner::Raw(r) => match r.poll_frame(cx) {
                Poll::Pending => return this.pending(cx),
                Poll::Ready(r) => r,
            },
        };
        if let Some(idle) = &mut this.idle {
            idle.stall.progress();
        }
        if let (Some(allowed), Some(Ok(frame))) = (&mut this.allowed, &polled) {
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            match allowed.checked_sub(n) {
                Some(rest) => *allowed = rest,
                None => {
                    if let Some(u) = &this.upload {
                        u.fail(ClientFailure::TooLarge);
                    }
                    this.end(false);
                    return Poll::Ready(Some(Err(BodyError::TooLarge)));
                }
            }
        }
        if let Some(Err(_)) = &polled {
            if let Some(u) = &this.upload {
                u.fail(ClientFailure::Broken);
            }
            this.end(false);
            return Poll::Ready(polled);
        }
        if let Some(u) = &this.upload {
            u.handed_on();
        }
        // Trailers are always the last frame, and hyper does not poll past them: waiting
        // for the `None` after them would never finish the body, so its upstream connection
        // would be closed instead of reused.
        let last = match &polled {
            None => true,
            Some(Ok(frame)) => frame.is_trailers(),
            Some(Err(_)) => false,
        };
        if last || this.is_end_stream() {
            this.end(true);
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Incoming(b) => b.is_end_stream(),
            Inner::Full(b) => b.is_none(),
            Inner::Raw(r) => r.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Incoming(b) => b.size_hint(),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Raw(r) => r.size_hint(),
        }
    }
}
