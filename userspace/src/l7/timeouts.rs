//! Inactivity timeouts without a timer per byte: a timer is armed when a wait starts (a poll
//! returned `Pending`) and checked when the task wakes; progress only clears a flag. The
//! client's silence (`client_timeout_ms`), the server's (`response_timeout_ms`) and a
//! tunnel's (`tunnel_timeout_ms`) are measured with these, like HAProxy's `timeout client`,
//! `timeout server` and `timeout tunnel`.

use crate::l7::clock::now_ms;
use crate::l7::metrics::ListenerMetrics;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The timer of one kind of wait, allocated at the first wait that does not end at once.
#[derive(Default)]
pub struct Stall {
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Stall {
    /// After a poll returned `Pending`: starts the clock when this wait has just begun, and
    /// tells whether it has lasted `limit` (the task is woken when it does).
    pub fn pending(&mut self, cx: &mut Context<'_>, limit: Duration) -> bool {
        if !self.armed {
            let at = Instant::now() + limit;
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(at),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.armed = true;
        }
        self.sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }

    /// The wait ended: the next one starts a new clock. (A timer left registered only wakes
    /// the task once, for nothing.)
    pub fn progress(&mut self) {
        self.armed = false;
    }
}

/// A client connection whose writes fail once the client has taken no byte for
/// `client_timeout_ms`: a response it does not read (or an HTTP/2 connection it does not
/// read) no longer holds the server slot behind it. Reads pass through untouched; their
/// waits are bounded where a read is expected (heads, request bodies).
pub struct ClientIo<I> {
    io: I,
    limit: Duration,
    stall: Stall,
    metrics: Arc<ListenerMetrics>,
    counted: bool,
}

impl<I> ClientIo<I> {
    pub fn new(io: I, limit: Duration, metrics: Arc<ListenerMetrics>) -> ClientIo<I> {
        ClientIo {
            io,
            limit,
            stall: Stall::default(),
            metrics,
            counted: false,
        }
    }

    pub fn get_ref(&self) -> &I {
        &self.io
    }

    pub fn get_mut(&mut self) -> &mut I {
        &mut self.io
    }

    /// Applies the client timeout to one polled write (a splice to the client among them).
    pub(crate) fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.stall.progress();
                Poll::Ready(r)
            }
            Poll::Pending if self.stall.pending(cx, self.limit) => {
                if !self.counted {
                    self.counted = true;
                    self.metrics.client_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took nothing within the client timeout",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ClientIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ClientIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.check(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.check(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.check(cx, polled)
    }
}

const WAITING_ON_CLIENT: u64 = u64::MAX;

/// Why reading a client's request body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFailure {
    /// It sent nothing for the client timeout.
    Timeout,
    /// A malformed body, or the client went away.
    Broken,
    /// The body grew past the listener's `max_body_bytes`.
    TooLarge,
}

/// Whom a request with a body waits on while it is being sent, so that the response timeout
/// counts only the server's silence: the server is accountable from the body's last frame
/// handed on (so from the end of the upload), never while the body waits for the client.
#[derive(Debug)]
pub struct Upload {
    /// `now_ms()` since which the server is accountable; `WAITING_ON_CLIENT` while the
    /// body waits for the client.
    since: AtomicU64,
    failed: AtomicU8,
}

impl Upload {
    pub fn new() -> Arc<Upload> {
        Arc::new(Upload {
            since: AtomicU64::new(now_ms()),
            failed: AtomicU8::new(0),
        })
    }

    /// The request goes out: its head is the server's to take.
    pub fn start(&self) {
        self.since.store(now_ms(), Ordering::Relaxed);
    }

    pub fn waiting_on_client(&self) {
        self.since.store(WAITING_ON_CLIENT, Ordering::Relaxed);
    }

    /// A frame (or the end) of the body was handed on: the server's turn to take it.
    pub fn handed_on(&self) {
        self.since.store(now_ms(), Ordering::Relaxed);
    }

    pub fn fail(&self, why: ClientFailure) {
        let code = match why {
            ClientFailure::Timeout => 1,
            ClientFailure::Broken => 2,
            ClientFailure::TooLarge => 3,
        };
        let _ = self
            .failed
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub fn client_failure(&self) -> Option<ClientFailure> {
        match self.failed.load(Ordering::Relaxed) {
            1 => Some(ClientFailure::Timeout),
            2 => Some(ClientFailure::Broken),
            3 => Some(ClientFailure::TooLarge),
            _ => None,
        }
    }

    /// Resolves once the server has been accountable, without a break, for `limit`.
    pub async fn server_silent(&self, limit: Duration) {
        let limit_ms = limit.as_millis() as u64;
        loop {
            let since = self.since.load(Ordering::Relaxed);
            let wait = if since == WAITING_ON_CLIENT {
                limit_ms
            } else {
                let at = since.saturating_add(limit_ms);
                let now = now_ms();
                if now >= at {
                    return;
                }
                at - now
            };
            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
        }
    }
}

/// Resolves once `last` (a `now_ms()` stamp of the last activity) is `limit` old.
pub async fn idle_since(last: &AtomicU64, limit: Duration) {
    let limit_ms = limit.as_millis() as u64;
    loop {
        let at = last.load(Ordering::Relaxed).saturating_add(limit_ms);
        let now = now_ms();
        if now >= at {
            return;
        }
        tokio::time::sleep(Duration::from_millis(at - now)).await;
    }
}

/// Stamps `last` on every read or write that moved bytes.
struct Active<'a, T> {
    io: &'a mut T,
    last: &'a AtomicU64,
}

impl<T> Active<'_, T> {
    fn stamp(&self, moved: bool) {
        if moved {
            self.last.store(now_ms(), Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.io).poll_read(cx, buf);
        this.stamp(buf.filled().len() > before);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.io).poll_write(cx, buf);
        this.stamp(matches!(polled, Poll::Ready(Ok(n)) if n > 0));
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}

/// Splices two connections (a tunnel) until either side ends, or no byte has moved either
/// way for `idle`; whether it was the idle timeout that ended it.
pub async fn splice<A, B>(a: &mut A, b: &mut B, idle: Duration) -> bool
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let last = AtomicU64::new(now_ms());
    let mut a = Active { io: a, last: &last };
    let mut b = Active { io: b, last: &last };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => false,
        () = idle_since(&last, idle) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_the_peer_does_not_take_fails_after_the_limit() {
        let (ours, mut theirs) = tokio::io::duplex(16);
        let metrics = Arc::new(ListenerMetrics::default());
        let mut io = ClientIo::new(ours, Duration::from_millis(50), metrics.clone());
        // Taken in time: no error, however long the whole transfer.
        let reader = tokio::spawn(async move {
            let mut got = [0u8; 64];
            for chunk in got.chunks_mut(16) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                theirs.read_exact(chunk).await.unwrap();
            }
            theirs
        });
        io.write_all(&[7u8; 64]).await.unwrap();
        let theirs = reader.await.unwrap();
        // Not taken: the write fails once, counted once.
        let start = std::time::Instant::now();
        let e = io.write_all(&[7u8; 64]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(45));
        assert_eq!(metrics.client_timeouts.load(Ordering::Relaxed), 1);
        drop(theirs);
    }

    #[tokio::test]
    async fn a_tunnel_ends_after_its_idle_time_but_not_while_bytes_move() {
        let (mut a, mut a_peer) = tokio::io::duplex(1024);
        let (mut b, mut b_peer) = tokio::io::duplex(1024);
        let start = std::time::Instant::now();
        let tunnel =
            tokio::spawn(async move { splice(&mut a, &mut b, Duration::from_millis(150)).await });
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(60)).await;
            a_peer.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            b_peer.read_exact(&mut one).await.unwrap();
        }
        assert!(tunnel.await.unwrap(), "the tunnel ended otherwise");
        assert!(start.elapsed() >= Duration::from_millis(380));
    }
}
