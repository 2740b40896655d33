//! The one body type the proxy sends both ways: a streamed hyper body or a small local one,
//! plus an optional guard that runs when the body ends (returning the upstream connection to
//! its pool, releasing the server's slot) and an optional deadline.

use crate::l7::pool::{Claim, Server};
use crate::l7::raw::ChunkedState;
use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
    #[error("{0}")]
    Upstream(&'static str),
}

impl Body {
    pub fn incoming(body: Incoming) -> Body {
        Body {
            inner: Inner::Incoming(body),
            guard: None,
            deadline: None,
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
            guard: None,
            deadline: None,
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

    fn end(&mut self, complete: bool) {
        if let Some(mut g) = self.guard.take() {
            g.finish(complete);
        }
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
                Poll::Ready(Some(Err(e))) => {
                    this.end(false);
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(r) => r.map(|f| f.map_err(BodyError::from)),
                Poll::Pending => return Poll::Pending,
            },
            Inner::Full(b) => b.take().map(|b| Ok(Frame::data(b))),
            Inner::Raw(r) => match r.poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.end(false);
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(r) => r,
            },
        };
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
