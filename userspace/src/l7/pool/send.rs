//! Sending one request through hyper's client: a connection slot (waiting in the server's
//! queue if all are taken), a connection, the response head within the timeouts, and the
//! lease that returns the connection when the response body ends. The error says who failed
//! and whether the request may be tried elsewhere.

use super::idle::Sender;
use super::server::{Server, Timeouts};
use crate::l7::body::{Body, BodyError, EndGuard};
use crate::l7::timeouts::ClientFailure;
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::OwnedSemaphorePermit;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::pool::testing::h1_sender;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);

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
}
