//! Opening upstream connections: TCP with its timeout, TLS, the HTTP/1 or HTTP/2 handshake,
//! and the choice between an idle connection and a new one; also the health probe, which
//! opens one of its own in the pool's protocol.

use super::answer_first::AnswerFirst;
use super::idle::Sender;
use super::server::{Server, Timeouts};
use crate::config::HttpProtocol;
use crate::l7::body::Body;
use http::Request;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

/// The send buffer of a connection to a server. Left to the kernel's autotuning, a socket
/// fed by splice grew to hold 0.25-1.8 MB of 1 MB uploads while the server (nginx answering
/// before it had read the body) was slow to take them, and the connection's next request
/// queued behind all of it; bounded here (the kernel doubles it: 128 KB), the bytes wait in
/// the client's receive queue instead, as behind HAProxy's 16 KB buffers, and a server
/// connection's kernel memory has a bound. 16 uploads of 1 MB (2026-12-03): 1.16, 1.08, 1.16
/// and 0.96x the requests/s of unbounded in four matrix runs, 0.98-1.24x its CPU per request
/// (more, smaller splices; still a third of HAProxy's); in direct wrk runs 1.41-1.44k
/// requests/s against 0.93-1.00k. Requests without a large body never fill it.
const SEND_BUFFER: usize = 64 * 1024;

impl Server {
    pub(super) async fn connect_tcp(&self, t: &Timeouts) -> Result<TcpStream, String> {
        let stream = match tokio::time::timeout(t.connect, TcpStream::connect(self.address)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("connect to {}: {e}", self.address)),
            Err(_) => return Err(format!("connect to {}: timed out", self.address)),
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
        self.metrics.connects.fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    }

    /// A new plain connection for the fast path.
    pub async fn connect_raw(&self, t: &Timeouts) -> Result<TcpStream, String> {
        self.connect_tcp(t).await
    }

    async fn connect(&self, t: &Timeouts) -> Result<Sender, String> {
        let stream = self.connect_tcp(t).await?;
        let Some(tls) = &self.tls else {
            return self.handshake(stream, t.response).await;
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
        self.handshake(secured, t.response).await
    }

    /// `hold`: how long a failed write to an HTTP/1 server may wait for its answer to be read
    /// (see `AnswerFirst`).
    async fn handshake<I>(&self, stream: I, hold: Duration) -> Result<Sender, String>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        match self.protocol {
            HttpProtocol::Http1 => {
                let (sender, conn) = http1::Builder::new()
                    .preserve_header_case(true)
                    .handshake(TokioIo::new(AnswerFirst::new(stream, hold)))
                    .await
                    .map_err(|e| format!("handshake with {}: {e}", self.address))?;
                tokio::spawn(conn.with_upgrades());
                Ok(Sender::H1(sender))
            }
            HttpProtocol::H2c | HttpProtocol::H2 => {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("h2 handshake with {}: {e}", self.address))?;
                tokio::spawn(conn);
                Ok(Sender::H2(sender))
            }
        }
    }

    /// A connection to send on, and for a plain HTTP/1 one the flag that sends its stream
    /// back to the raw idle list once the exchange has completed.
    pub(super) async fn sender(
        self: &Arc<Self>,
        t: &Timeouts,
        upgrade: bool,
    ) -> Result<(Sender, Option<Arc<AtomicBool>>), String> {
        if matches!(self.protocol, HttpProtocol::H2c | HttpProtocol::H2) {
            if let Some(s) = self.idle.shared_h2() {
                return Ok((Sender::H2(s), None));
            }
            let s = self.connect(t).await?;
            if let Sender::H2(h2) = &s {
                self.idle.share_h2(h2);
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
            return self.handshake_plain(stream, upgrade, t.response).await;
        }
        while let Some(mut s) = self.idle.take(t.idle) {
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
        hold: Duration,
    ) -> Result<(Sender, Option<Arc<AtomicBool>>), String> {
        if upgrade {
            return Ok((self.handshake(stream, hold).await?, None));
        }
        let (sender, conn) = http1::Builder::new()
            .preserve_header_case(true)
            .handshake(TokioIo::new(AnswerFirst::new(stream, hold)))
            .await
            .map_err(|e| format!("handshake with {}: {e}", self.address))?;
        let complete = Arc::new(AtomicBool::new(false));
        let (server, done) = (self.clone(), complete.clone());
        tokio::spawn(async move {
            if let Ok(parts) = conn.without_shutdown().await
                && done.load(Ordering::Acquire)
                && parts.read_buf.is_empty()
                && let Some(stream) = parts.io.into_inner().into_healthy()
            {
                server.put_raw(stream);
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
}

#[cfg(test)]
mod tests {
    use super::super::Pool;
    use crate::config::ServerConfig;

    #[tokio::test]
    async fn a_connection_to_a_server_has_a_bounded_send_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut c = crate::config::discovery::pool_defaults();
        c.name = "todo".into();
        c.servers = vec![ServerConfig {
            address: listener.local_addr().expect("addr"),
            weight: 1,
            sni: None,
        }];
        let pool = Pool::new(&c, None, None);
        let stream = pool.servers[0]
            .connect_raw(&pool.timeouts)
            .await
            .expect("connect");
        // Linux doubles what is asked, for its own bookkeeping, and fixes it there; left to
        // autotuning it would start at tcp_wmem's default (16 KB here).
        assert_eq!(
            socket2::SockRef::from(&stream)
                .send_buffer_size()
                .expect("getsockopt"),
            2 * super::SEND_BUFFER
        );
    }
}
