//! A client connection that joins the event loop only when it has to wait.
//!
//! An accepted socket is tried at once: the request is usually in its receive queue already
//! (the listener defers the accept until the first bytes arrive), and a short response
//! usually fits its send buffer. Only a read or write that would block registers the socket
//! with the worker's reactor. A connection that carries one request and closes (the
//! connection-per-request shape) then never costs the reactor's `epoll_ctl` ADD and DEL,
//! only `accept4`, its reads and writes, and `close`, as in HAProxy's speculative I/O.
//!
//! `ClientSocket` is what the fast path asks of a client connection beyond its bytes.

use crate::l7::splice::Pipe;
use crate::l7::timeouts::ClientIo;
use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

enum State {
    /// Not known to the reactor yet: every call is tried directly on the socket.
    Direct(std::net::TcpStream),
    Registered(TcpStream),
    /// Registration failed; the error was returned and the socket closed.
    Failed,
}

pub struct ClientStream {
    state: State,
}

impl ClientStream {
    /// `stream` must be non-blocking (`accept4` with `SOCK_NONBLOCK`).
    pub fn new(stream: std::net::TcpStream) -> ClientStream {
        ClientStream {
            state: State::Direct(stream),
        }
    }

    /// Whether the socket had to join the reactor (tests and counters).
    pub fn is_registered(&self) -> bool {
        matches!(self.state, State::Registered(_))
    }

    /// Hands the socket to the reactor: from now on tokio waits for it. Called only from a
    /// task on a worker, where a runtime is current.
    fn register(&mut self) -> io::Result<&mut TcpStream> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Direct(s) => self.state = State::Registered(TcpStream::from_std(s)?),
            other => self.state = other,
        }
        match &mut self.state {
            State::Registered(s) => Ok(s),
            _ => Err(io::Error::other("client socket not registered")),
        }
    }

    fn failed() -> io::Error {
        io::Error::other("client socket could not join the event loop")
    }
}

/// One `recv` into the unfilled part of `buf`, without zeroing it first.
fn recv(fd: &std::net::TcpStream, buf: &mut ReadBuf<'_>) -> io::Result<()> {
    loop {
        // SAFETY: `recv` writes at most `unfilled.len()` bytes into the unfilled part and
        // reports how many; only those are then marked initialised and filled.
        let unfilled = unsafe { buf.unfilled_mut() };
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                unfilled.as_mut_ptr().cast(),
                unfilled.len(),
                0,
            )
        };
        if n >= 0 {
            let n = n as usize;
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

impl ClientStream {
    /// One I/O call: `direct` on the socket while it is not registered, and `registered`
    /// through the reactor once it is, or once `direct` would block (then registered first).
    fn poll_io<A: ?Sized, T>(
        &mut self,
        cx: &mut Context<'_>,
        arg: &mut A,
        direct: impl FnOnce(&std::net::TcpStream, &mut A) -> io::Result<T>,
        registered: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>, &mut A) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match &mut self.state {
            State::Registered(s) => return registered(Pin::new(s), cx, arg),
            State::Failed => return Poll::Ready(Err(ClientStream::failed())),
            State::Direct(s) => match direct(s, arg) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            },
        }
        match self.register() {
            Ok(s) => registered(Pin::new(s), cx, arg),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl ClientStream {
    /// One call `f` on the raw socket (a splice), made directly while the socket is not
    /// registered, and once it is, when the reactor reports it ready for `interest`.
    pub fn poll_raw<T>(
        &mut self,
        cx: &mut Context<'_>,
        interest: Interest,
        mut f: impl FnMut(RawFd) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        self.poll_io(
            cx,
            &mut f,
            |s, f| f(s.as_raw_fd()),
            |s, cx, f| {
                let fd = s.as_raw_fd();
                loop {
                    let ready = if interest.is_readable() {
                        s.poll_read_ready(cx)
                    } else {
                        s.poll_write_ready(cx)
                    };
                    if let Err(e) = ready!(ready) {
                        return Poll::Ready(Err(e));
                    }
                    match s.try_io(interest, || f(fd)) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        r => return Poll::Ready(r),
                    }
                }
            },
        )
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_io(
            cx,
            buf,
            |s, buf| recv(s, buf),
            |s, cx, buf| s.poll_read(cx, buf),
        )
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // std's write is `send` with MSG_NOSIGNAL: a closed peer is an error, no signal.
        self.get_mut().poll_io(
            cx,
            &mut (),
            |mut s, _| retry(|| s.write(buf)),
            |s, cx, _| s.poll_write(cx, buf),
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_io(
            cx,
            &mut (),
            |mut s, _| retry(|| s.write_vectored(bufs)),
            |s, cx, _| s.poll_write_vectored(cx, bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Registered(s) => Pin::new(s).poll_shutdown(cx),
            State::Direct(s) => Poll::Ready(s.shutdown(Shutdown::Write)),
            State::Failed => Poll::Ready(Err(ClientStream::failed())),
        }
    }
}

impl ClientStream {
    /// Acknowledges what the client has sent at once, and leaves delayed-ACK mode.
    ///
    /// Accepted sockets start in that mode (the listener turns `TCP_QUICKACK` off, as
    /// HAProxy does on its HTTP frontends), so the ACK of a request rides on its response
    /// instead of costing a segment of its own, sent and taken in the client's context. A
    /// request that is not whole yet needs its ACK now: a client whose Nagle algorithm holds
    /// the rest until then would otherwise wait for the kernel's delayed-ACK timer (40 ms).
    pub fn ack_now(&self) {
        let quick = |s: socket2::SockRef<'_>| {
            // Best effort: a socket that refuses keeps the kernel's delayed ACK, which only
            // costs time.
            let _ = s.set_tcp_quickack(true);
        };
        match &self.state {
            State::Direct(s) => quick(s.into()),
            State::Registered(s) => quick(s.into()),
            State::Failed => {}
        }
    }
}

/// What the fast path asks of a client connection beyond its bytes: splicing body bytes to
/// and from it (a plain socket; TLS keeps the copying path, its bytes must pass through the
/// proxy), and an ACK at once while a request is incomplete (see `ClientStream::ack_now`).
pub trait ClientSocket {
    fn spliceable(&self) -> bool {
        false
    }

    /// Drains (part of) `pipe` into the client; bounded by the client timeout like every
    /// other write to it.
    fn poll_splice_out(&mut self, _: &mut Context<'_>, _: &mut Pipe) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    /// Fills `pipe` from the client with at most `max` bytes (0 at its end).
    fn poll_splice_in(
        &mut self,
        _: &mut Context<'_>,
        _: &mut Pipe,
        _: usize,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }

    fn ack_now(&self);
}

impl ClientSocket for ClientIo<ClientStream> {
    fn spliceable(&self) -> bool {
        true
    }

    fn poll_splice_out(
        &mut self,
        cx: &mut Context<'_>,
        pipe: &mut Pipe,
    ) -> Poll<io::Result<usize>> {
        let polled = self
            .get_mut()
            .poll_raw(cx, Interest::WRITABLE, |fd| pipe.drain(fd));
        self.check(cx, polled)
    }

    fn poll_splice_in(
        &mut self,
        cx: &mut Context<'_>,
        pipe: &mut Pipe,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_raw(cx, Interest::READABLE, |fd| pipe.fill(fd, max))
    }

    fn ack_now(&self) {
        self.get_ref().ack_now();
    }
}

impl<I: ClientSocket> ClientSocket for tokio_rustls::server::TlsStream<I> {
    fn ack_now(&self) {
        self.get_ref().0.ack_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (ClientStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let peer = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        s.set_nonblocking(true).expect("nonblocking");
        (ClientStream::new(s), peer)
    }

    #[tokio::test]
    async fn what_is_there_is_read_and_written_without_the_reactor() {
        let (mut c, mut peer) = pair();
        peer.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send");
        // Loopback delivers at once; wait for it without touching `c`.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n\r\n");
        c.write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("write");
        assert!(!c.is_registered());
        c.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut peer, &mut got).expect("peer reads");
        assert_eq!(got, b"HTTP/1.1 200 OK\r\n\r\n");
    }

    #[tokio::test]
    async fn a_read_that_would_wait_joins_the_reactor_and_is_woken() {
        let (mut c, mut peer) = pair();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            peer.write_all(b"late").expect("send");
            peer
        });
        let mut buf = [0u8; 16];
        let n = c.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"late");
        assert!(c.is_registered());
        let peer = sender.join().expect("sender");
        drop(peer);
        assert_eq!(c.read(&mut buf).await.expect("eof"), 0);
    }

    #[tokio::test]
    async fn a_full_send_buffer_waits_for_the_peer() {
        let (mut c, mut peer) = pair();
        let big = vec![7u8; 32 << 20];
        // Nobody reads yet, so the buffers fill and a write has to wait: a reader running
        // from the start could keep up with every write (it once did, under load).
        let mut sent = 0;
        let waited = std::future::poll_fn(|cx| {
            loop {
                match Pin::new(&mut c).poll_write(cx, &big[sent..]) {
                    Poll::Pending => return Poll::Ready(true),
                    Poll::Ready(Ok(n)) if n > 0 && sent + n < big.len() => sent += n,
                    Poll::Ready(_) => return Poll::Ready(false),
                }
            }
        })
        .await;
        assert!(waited, "32 MB went into the socket without a wait");
        assert!(c.is_registered());
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut peer, &mut got).expect("peer reads");
            got.len()
        });
        c.write_all(&big[sent..]).await.expect("write");
        c.shutdown().await.expect("shutdown");
        drop(c);
        assert_eq!(reader.join().expect("reader"), big.len());
    }
}
