//! The one body type the proxy sends both ways: a streamed hyper body or a small local one,
//! plus an optional guard that runs when the body ends (returning the upstream connection to
//! its pool, releasing the server's slot) and an optional deadline.

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
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
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error("total timeout reached while streaming the body")]
    Deadline,
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
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Incoming(b) => b.size_hint(),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
