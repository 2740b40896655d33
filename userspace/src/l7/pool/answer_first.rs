//! A server connection as hyper's HTTP/1 client sees it: when the server stops taking the
//! request (it refused an upload on its head and closed, so its kernel reset the connection
//! behind the answer), the failed write is held back until the read side has ended.
//!
//! hyper polls reading before writing, but tokio learns of the answer's readiness only on its
//! next turn of the reactor while the write fails at once, so without this the reset usually
//! won: hyper failed the exchange and the client got a 502 instead of the server's 413 (two
//! of three tries of an HTTP/1.0 upload). Held back, hyper reads the answer (Linux gives the
//! bytes that came before a reset first), hands its head to the proxy, reads its body, and
//! then meets the end of the stream or the reset, which ends the connection; only then does
//! the write error come out, so nothing waits on a write that can never finish. A server that
//! leaves hyper with nothing to read for (bytes past its answer, which hyper does not read
//! while a request is still going out) cannot hold the connection either: the error comes out
//! after the pool's response timeout at the latest.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub struct AnswerFirst<S> {
    io: S,
    /// The kind of write error the server's reset or close gave.
    held: Option<io::ErrorKind>,
    /// The read side has met the end of the stream or an error.
    read_ended: bool,
    /// The task whose write waits on the read side's end.
    writer: Option<Waker>,
    /// How long a write error may be held.
    limit: Duration,
    /// Armed when an error is first held.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> AnswerFirst<S> {
    /// `limit`: the longest a write error waits for the read side's end.
    pub fn new(io: S, limit: Duration) -> Self {
        AnswerFirst {
            io,
            held: None,
            read_ended: false,
            writer: None,
            limit,
            deadline: None,
        }
    }

    /// The stream, unless a write to it has failed (it is then no use to anyone).
    pub fn into_healthy(self) -> Option<S> {
        self.held.is_none().then_some(self.io)
    }

    /// One write-side call (write, vectored write, flush) on the stream, unless an error is
    /// held already; an error meaning the peer is gone waits for the read side's end.
    fn write_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        call: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        S: Unpin,
    {
        if self.held.is_some() {
            return self.wait(cx);
        }
        match call(Pin::new(&mut self.io), cx) {
            Poll::Ready(Err(e)) if peer_gone(&e) => {
                self.held = Some(e.kind());
                self.wait(cx)
            }
            r => r,
        }
    }

    fn wait<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if self.read_ended || deadline.as_mut().poll(cx).is_ready() {
            let kind = self.held.unwrap_or(io::ErrorKind::BrokenPipe);
            return Poll::Ready(Err(kind.into()));
        }
        self.writer = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Errors of a connection the peer has reset or closed: reading it still gives what the
/// peer sent before.
fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for AnswerFirst<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let room = buf.remaining();
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        let ended = match &r {
            Poll::Ready(Ok(())) => room > 0 && buf.filled().len() == before,
            Poll::Ready(Err(_)) => true,
            Poll::Pending => false,
        };
        if ended {
            this.read_ended = true;
            if let Some(w) = this.writer.take() {
                w.wake();
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AnswerFirst<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_with(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_with(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().write_with(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection is gone already: closing it needs no wait.
        if self.held.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const WAIT: Duration = Duration::from_secs(5);

    /// A connection whose server answered `answer` and then reset it, the request unread.
    async fn refused(answer: &[u8]) -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let mut client = client;
        client
            .write_all(b"PUT / HTTP/1.1\r\n")
            .await
            .expect("write");
        server.write_all(answer).await.expect("answer");
        // Closing with unread bytes resets the connection.
        let mut head = [0u8; 4];
        server.read_exact(&mut head).await.expect("read");
        drop(server);
        // The reset has arrived once a write fails.
        let chunk = vec![0u8; 65536];
        for _ in 0..100 {
            if client.write_all(&chunk).await.is_err() {
                return client;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the reset never came");
    }

    #[tokio::test]
    async fn the_answer_before_a_reset_is_read_before_the_write_fails() {
        let mut s = AnswerFirst::new(refused(b"HTTP/1.1 413 Too Large\r\n\r\n").await, WAIT);
        // The write would fail: it waits instead, for the read side.
        let pending = futures_poll(&mut s, |s, cx| Pin::new(s).poll_write(cx, b"more"));
        assert!(pending.is_pending());
        let mut answer = Vec::new();
        // The reset's error went to the write that met it: reading then ends cleanly.
        let end = s.read_to_end(&mut answer).await;
        assert_eq!(&answer[..], b"HTTP/1.1 413 Too Large\r\n\r\n");
        assert!(end.is_ok(), "{end:?}");
        // Then the write fails, and keeps failing.
        for _ in 0..2 {
            let e = s
                .write_all(b"more")
                .await
                .expect_err("written to a reset connection");
            assert!(peer_gone(&e), "{e}");
        }
        assert!(s.into_healthy().is_none());
    }

    #[tokio::test]
    async fn a_write_after_the_read_side_ended_fails_at_once() {
        let mut s = AnswerFirst::new(refused(b"").await, WAIT);
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).await.ok(), Some(0));
        assert!(s.write_all(b"more").await.is_err());
        assert!(s.shutdown().await.is_ok());
    }

    #[tokio::test]
    async fn a_write_error_is_held_no_longer_than_the_limit() {
        // Nothing reads the answer (as hyper when bytes follow it): the error comes out anyway.
        let limit = Duration::from_millis(50);
        let mut s = AnswerFirst::new(refused(b"HTTP/1.1 200 OK\r\n\r\nand more").await, limit);
        let started = tokio::time::Instant::now();
        let written = tokio::time::timeout(WAIT, s.write_all(b"more")).await;
        let e = written
            .expect("held past the limit")
            .expect_err("written to a reset connection");
        assert!(peer_gone(&e), "{e}");
        assert!(started.elapsed() >= limit);
    }

    #[tokio::test]
    async fn a_healthy_stream_passes_through() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let mut s = AnswerFirst::new(client, WAIT);
        s.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.expect("read");
        server.write_all(b"pong").await.expect("write");
        s.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong");
        assert!(s.into_healthy().is_some());
    }

    /// Polls once with a waker that does nothing.
    fn futures_poll<T>(
        s: &mut AnswerFirst<TcpStream>,
        f: impl FnOnce(&mut AnswerFirst<TcpStream>, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let mut cx = Context::from_waker(Waker::noop());
        f(s, &mut cx)
    }
}
