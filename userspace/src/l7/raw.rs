//! The general path's upstream for requests without a body to a plain HTTP/1 pool when the
//! client speaks HTTP/2: the request is written as bytes on a kept-alive connection, the
//! response head parsed in place, and the body streamed from the connection (decoded when
//! chunked) as the HTTP/2 response's data frames. It shares its connections with the
//! HTTP/1.1 fast path, and leaves out hyper's client, whose connection task, channels and
//! wake-ups cost more than the exchange itself.

use crate::config::{ForwardingFields, HttpProtocol};
use crate::l7::attempt::{AttemptError, Attempts};
use crate::l7::body::{Body, RawBody, RawFraming, Silence};
use crate::l7::chunked::ChunkedScanner;
use crate::l7::clock;
use crate::l7::headers::{ClientInfo, HOP_BY_HOP, push_field, push_forwarding};
use crate::l7::metrics::PoolMetrics;
use crate::l7::pool::{Pool, Server, Timeouts};
use crate::l7::response_fields::{self, Framing};
use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_FIELDS: usize = 128;

/// Whether a request goes by this path: an HTTP/2 client's GET or HEAD without a body or
/// `TE: trailers`, to a plain HTTP/1 pool without a total timeout.
pub fn takes<B: http_body::Body>(req: &Request<B>, pool: &Pool) -> bool {
    req.version() == Version::HTTP_2
        && matches!(*req.method(), Method::GET | Method::HEAD)
        && req.body().is_end_stream()
        && req.uri().authority().is_some()
        && !req.headers().contains_key(http::header::TE)
        && pool.config.protocol == HttpProtocol::Http1
        && pool.config.tls.is_none()
        && pool.config.total_timeout_ms == 0
}

/// The HTTP/1.1 request for an HTTP/2 one: `:authority` as Host first, the client's fields
/// but hop-by-hop ones, then the pool's forwarding fields (as the general path adds them).
pub fn encode_h2_request<B>(
    req: &Request<B>,
    client: &ClientInfo,
    fields: ForwardingFields,
    out: &mut Vec<u8>,
) {
    let host = req.uri().authority().map_or("", |a| a.as_str());
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        req.uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut xff: Vec<&[u8]> = Vec::new();
    for (name, value) in req.headers() {
        let n = name.as_str();
        match n {
            "host" => continue,
            "x-forwarded-proto" if fields.proto => continue,
            "x-forwarded-host" if fields.host => continue,
            "x-forwarded-for" if fields.xff => {
                xff.push(value.as_bytes());
                continue;
            }
            _ if HOP_BY_HOP.contains(&n) => continue,
            _ => {}
        }
        push_field(out, n.as_bytes(), value.as_bytes());
    }
    push_forwarding(
        out,
        client,
        fields,
        ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"],
        &xff,
        host.as_bytes(),
        host,
    );
    out.extend_from_slice(b"\r\n");
}

/// Forwards a body-less request with the pool's retries; the response and the last server.
pub async fn forward(
    pool: &Arc<Pool>,
    request: &[u8],
    headers: &HeaderMap,
    head_only: bool,
) -> (
    Result<Response<Body>, (StatusCode, &'static str)>,
    Option<SocketAddr>,
) {
    let mut attempts = Attempts::new(pool);
    while let Some(server) = attempts.next(headers) {
        match exchange(server, request, head_only, &pool.timeouts, &pool.metrics).await {
            Ok(resp) => {
                attempts.answered(server, resp.status().as_u16());
                return (Ok(resp), attempts.last_server());
            }
            // GET and HEAD without a body: always sent again.
            Err(e) => {
                if !attempts.failed(server, e, true) {
                    break;
                }
            }
        }
    }
    (Err(attempts.give_up()), attempts.last_server())
}

const DURING: &str = "upstream failed during the exchange\n";

async fn exchange(
    server: &Arc<Server>,
    request: &[u8],
    head_only: bool,
    t: &Timeouts,
    metrics: &Arc<PoolMetrics>,
) -> Result<Response<Body>, AttemptError> {
    let claim = server.claim(t.queue).await.ok_or(AttemptError::Busy)?;
    let connect = || async {
        server
            .connect_raw(t)
            .await
            .map_err(|e| AttemptError::NotSent("upstream connection failed\n", e))
    };
    let (mut up, mut reused) = match server.take_raw(t.idle) {
        Some(c) => (c, true),
        None => (connect().await?, false),
    };
    let mut buf = BytesMut::with_capacity(8192);
    let head = loop {
        let deadline = clock::coarse_now() + t.response;
        let sent = send_and_read(&mut up, request, &mut buf, head_only);
        match tokio::time::timeout_at(deadline, sent).await {
            Err(_) => return Err(AttemptError::Timeout),
            Ok(Ok(head)) => break head,
            // A kept-alive connection the server closed meanwhile: nothing was processed.
            Ok(Err(None)) if reused => {
                reused = false;
                up = connect().await?;
            }
            Ok(Err(None)) => {
                return Err(AttemptError::Sent(
                    DURING,
                    format!("{}: closed before a response", server.address),
                ));
            }
            Ok(Err(Some(why))) => {
                return Err(AttemptError::Sent(
                    DURING,
                    format!("{}: {why}", server.address),
                ));
            }
        }
    };
    let framing = match head.framing {
        Framing::None => RawFraming::Length(0),
        Framing::Length(n) => RawFraming::Length(n),
        Framing::Chunked => RawFraming::Chunked(Box::default()),
        Framing::Close => RawFraming::Close,
    };
    let body = RawBody::new(up, buf, framing, head.reusable, server.clone(), claim);
    // The server's silence between reads of the body is bounded like before its head.
    let body = Body::raw(body).with_idle(t.response, Silence::Server(metrics.clone()));
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.headers_mut() = head.headers;
    *resp.version_mut() = Version::HTTP_2;
    Ok(resp)
}

/// Sends the request and reads until `buf` holds a final response head, which it takes off
/// `buf`. `Err(None)`: the connection closed before any byte of a response.
async fn send_and_read(
    up: &mut TcpStream,
    request: &[u8],
    buf: &mut BytesMut,
    head_only: bool,
) -> Result<Head, Option<&'static str>> {
    if up.write_all(request).await.is_err() {
        return Err(None);
    }
    buf.clear();
    loop {
        if !buf.is_empty() {
            match take_head(buf, head_only) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) if buf.len() > MAX_RESPONSE_HEAD => {
                    return Err(Some("response head too large"));
                }
                Ok(None) => {}
                Err(why) => return Err(Some(why)),
            }
        }
        buf.reserve(8192);
        match up.read_buf(buf).await {
            Ok(0) | Err(_) if buf.is_empty() => return Err(None),
            Ok(0) | Err(_) => return Err(Some("closed inside the response head")),
            Ok(_) => {}
        }
    }
}

struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    reusable: bool,
}

/// The final head at the start of `buf`, once complete, as status, end-to-end fields and
/// framing, taken off `buf`; interim (1xx) heads before it, sent to a request that asked for
/// none, are dropped from `buf`. Parsed once per read: a completeness check before the parse
/// proper doubled httparse's share of an h2c request (callgrind). The field values share
/// the head's bytes rather than each being copied into an allocation of its own.
fn take_head(buf: &mut BytesMut, head_only: bool) -> Result<Option<Head>, &'static str> {
    loop {
        // Left uninitialised for httparse (its defaults, as `Response::parse`): 128 empty
        // fields written before each parse were a 4 KB copy, about 2% of an h2c request's
        // CPU in the profile.
        let mut fields = [const { MaybeUninit::uninit() }; MAX_FIELDS];
        let mut resp = httparse::Response::new(&mut []);
        let config = httparse::ParserConfig::default();
        let len = match config.parse_response_with_uninit_headers(&mut resp, buf, &mut fields) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("invalid response head"),
        };
        let status = match resp.code {
            Some(101) => return Err("unexpected 101"),
            Some(c) if (100..200).contains(&c) => {
                let _ = buf.split_to(len);
                continue;
            }
            code => code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or("invalid status")?,
        };
        let no_body =
            head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let fields = response_fields::scan(resp.version, resp.headers, no_body)?;
        // Where each kept field's value lies in the head: the head is split off `buf` (which
        // `resp` borrows) before the values are cut from it.
        let start = buf.as_ptr() as usize;
        let mut kept: Vec<(HeaderName, std::ops::Range<usize>)> =
            Vec::with_capacity(resp.headers.len());
        for f in resp.headers.iter() {
            let name = f.name;
            if fields.is_hop(name) {
                continue;
            }
            let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
                return Err("invalid response field");
            };
            // httparse's values are slices of `buf`; an empty one need not point into it.
            let range = if f.value.is_empty() {
                0..0
            } else {
                let at = (f.value.as_ptr() as usize)
                    .checked_sub(start)
                    .filter(|at| at + f.value.len() <= len)
                    .ok_or("invalid response field")?;
                at..at + f.value.len()
            };
            kept.push((n, range));
        }
        let (framing, reusable) = (fields.framing, fields.reusable);
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(kept.len());
        for (n, range) in kept {
            let Ok(v) = HeaderValue::from_maybe_shared(head.slice(range)) else {
                return Err("invalid response field");
            };
            headers.append(n, v);
        }
        return Ok(Some(Head {
            status,
            headers,
            framing,
            reusable,
        }));
    }
}

/// Chunked decoding state kept by a raw body.
#[derive(Default)]
pub struct ChunkedState {
    pub scanner: ChunkedScanner,
    pub trailers: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        let req = Request::get("http://todo.example:8443/p?q")
            .version(Version::HTTP_2)
            .header("x-a", "1")
            .header("x-a", "2")
            .header("x-forwarded-for", "192.0.2.1")
            .header("x-forwarded-proto", "spoofed")
            .header("te", "trailers")
            .body(())
            .unwrap_or_default();
        let mut out = Vec::new();
        let client = ClientInfo::new(
            "2001:db8::7"
                .parse()
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            true,
        );
        encode_h2_request(&req, &client, ForwardingFields::ALL, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET /p?q HTTP/1.1\r\nhost: todo.example:8443\r\nx-a: 1\r\nx-a: 2\r\n\
             x-forwarded-for: 192.0.2.1, 2001:db8::7\r\nx-forwarded-proto: https\r\n\
             x-forwarded-host: todo.example:8443\r\n\
             forwarded: for=\"[2001:db8::7]\";proto=https;host=\"todo.example:8443\"\r\n\r\n"
        );
        // Only X-Forwarded-For: the client's X-Forwarded-Proto goes on as it came.
        let mut out = Vec::new();
        let only_xff = ForwardingFields {
            xff: true,
            ..ForwardingFields::NONE
        };
        encode_h2_request(&req, &client, only_xff, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET /p?q HTTP/1.1\r\nhost: todo.example:8443\r\nx-a: 1\r\nx-a: 2\r\n\
             x-forwarded-proto: spoofed\r\nx-forwarded-for: 192.0.2.1, 2001:db8::7\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_h2_request(&req, &client, ForwardingFields::NONE, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET /p?q HTTP/1.1\r\nhost: todo.example:8443\r\nx-a: 1\r\nx-a: 2\r\n\
             x-forwarded-for: 192.0.2.1\r\nx-forwarded-proto: spoofed\r\n\r\n"
        );
    }

    #[test]
    fn response_heads() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t=1\r\n\
              Content-Length: 3\r\nX-Kept: y\r\nX-Empty:\r\n\r\nabc"[..],
        );
        let h = parse_head(&mut buf, false).unwrap_or_else(|e| panic!("{e}"));
        // The head is taken off the buffer; the body's first bytes stay.
        assert_eq!(&buf[..], b"abc");
        assert_eq!(h.status, 200);
        assert!(h.reusable);
        assert!(matches!(h.framing, Framing::Length(3)));
        let names: Vec<&str> = h.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-length", "x-kept", "x-empty"]);
        assert_eq!(h.headers["x-kept"], "y");
        assert_eq!(h.headers["content-length"], "3");
        assert_eq!(h.headers["x-empty"], "");
        let h = parse_head(
            &mut BytesMut::from(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..]),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(h.framing, Framing::Chunked));
        assert!(h.headers.is_empty());
        let h = parse_head(&mut BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\n"[..]), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(h.framing, Framing::Close));
        assert!(!h.reusable);
        let h = parse_head(
            &mut BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"[..]),
            true,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(h.framing, Framing::None));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
        ] {
            assert!(
                parse_head(&mut BytesMut::from(bad), false).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn interim_heads_are_dropped() {
        let mut b = BytesMut::from(
            &b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"[..],
        );
        let head = parse_head(&mut b, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(head.status, StatusCode::NO_CONTENT);
        assert!(b.is_empty());
        let mut b = BytesMut::from(&b"HTTP/1.1 101 Switching\r\n\r\n"[..]);
        assert!(take_head(&mut b, false).is_err());
    }

    #[test]
    fn an_incomplete_head_is_left_for_more_bytes() {
        // Cut inside the final head, after a complete interim one: the interim head is gone,
        // the final head's start stays for the next read.
        let mut b =
            BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(matches!(take_head(&mut b, false), Ok(None)));
        assert_eq!(&b[..], b"HTTP/1.1 200 OK\r\nContent-Le");
        b.extend_from_slice(b"ngth: 2\r\n\r\nok");
        let head = parse_head(&mut b, false).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(head.framing, Framing::Length(2)));
        assert_eq!(&b[..], b"ok");
    }

    /// A complete final head, as the tests give them.
    fn parse_head(buf: &mut BytesMut, head_only: bool) -> Result<Head, &'static str> {
        take_head(buf, head_only)?.ok_or("incomplete head")
    }
}
