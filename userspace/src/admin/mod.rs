//! The admin API. Two doors, as HAProxy's stats socket next to its stats page:
//!
//! - The Unix socket (`/run/portier/<node>.sock`, mode 0600 root, or 0660 with `[admin]
//!   group`) serves everything, and is the only way to change the node. The CLI uses it.
//!   Every command is logged with the peer's uid, gid and pid (SO_PEERCRED).
//! - The TCP listener (`[admin] listen`, optional `allow` list) serves reads only, so it can
//!   face a Prometheus server: any other method gets 405 and a pointer to the socket.
//!
//! Requests:
//! - `GET /`: the dashboard, one page (`dashboard/`, compiled in) live over `/events`.
//! - `GET /status`: JSON, one entry per running part and `node` (name, version, uptime,
//!   health, the log of state transitions).
//! - `GET /events`: the same JSON every second as Server-Sent Events, for the dashboard.
//! - `GET /metrics`: every part's metrics in the OpenMetrics text format (Prometheus
//!   scrapes it as is).
//! - `POST /reload`: re-read the config file (as SIGHUP), answers once applied or refused.
//! - `POST /command/<part>/<verb>?key=value&...`: a runtime command for one part, e.g.
//!   `/command/l4/drain?service=web&backend=10.0.0.21` or
//!   `/command/l7/weight?pool=todo&server=172.17.0.10:8080&weight=3`. Unknown parts and verbs
//!   are 404 with the known ones; a part that cannot answer within a second, 503.
//!   `/command/xdp/debug?state=on|off` goes to every running part that attaches XDP
//!   programs (`l4`, `decap`) and answers with each one's reply.
//!
//! Both doors bound what a client can hold: a header read timeout, a cap on connections and
//! on a connection's lifetime, and a pause after accept errors (out of file descriptors).

pub mod client;
mod dashboard;
pub mod live;
mod server;
pub mod table;
pub mod transitions;

pub use server::{Admin, serve};

use crate::part::command::{Command, CommandError, ParseError};
use crate::part::control::ReloadError;
use crate::part::{Control, StatusBoard};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use live::Live;
use std::collections::BTreeMap;
use std::convert::Infallible;

/// Who is asking: what the door lets them do, and who they are for the log.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A Unix socket peer: may read and change.
    Local {
        uid: u32,
        gid: u32,
        pid: Option<i32>,
    },
    /// A TCP client: may read.
    Remote(std::net::SocketAddr),
}

/// A whole answer, or the dashboard's endless one.
type Body = UnsyncBoxBody<Bytes, Infallible>;

fn reply(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = code;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json(code: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_string_pretty(v).unwrap_or_default();
    body.push('\n');
    reply(code, "application/json", body)
}

fn error(code: StatusCode, e: &(dyn std::error::Error + 'static)) -> Response<Body> {
    json(
        code,
        &serde_json::json!({ "error": crate::part::driver::chain(e) }),
    )
}

/// As HAProxy's and most REST APIs: what does not exist is 404, a part that cannot answer now
/// is 503 (try again), a change the kernel or the proxy refused is 500.
fn command_status(e: &CommandError) -> StatusCode {
    match e {
        CommandError::Unsupported { .. }
        | CommandError::NoSuchTarget(_)
        | CommandError::NotRunning { .. } => StatusCode::NOT_FOUND,
        CommandError::Busy(_) | CommandError::Gone(_) => StatusCode::SERVICE_UNAVAILABLE,
        CommandError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    parse_query(req.uri().query().unwrap_or(""))
}

/// The `key=value&...` pairs of a query string, percent-decoded; a repeated key keeps its
/// last value. Pure, for the fuzz target.
pub fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (a space); anything else, and a `%` not followed by two
/// hex digits, is kept. Bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Two hex digits: `from_str_radix` alone would also take a sign (`%+A`).
        let escaped = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (escaped, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, c) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(
    req: Request<Incoming>,
    caller: &Caller,
    status: &StatusBoard,
    control: &Control,
    live: &Live,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Caller::Remote(_) = caller
        && req.method() != Method::GET
        && req.method() != Method::HEAD
    {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "this listener only serves GET (the dashboard, /status, /events, /metrics); changes go through the \
             node's admin socket (/run/portier/<node>.sock), e.g. with the portier CLI as root\n",
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    if req.method() == Method::POST
        && let Caller::Local { uid, gid, pid } = caller
    {
        tracing::info!(uid, gid, pid = ?pid, path = %req.uri(), "admin command");
    }
    match (req.method(), segments.as_slice()) {
        (&Method::GET | &Method::HEAD, [""]) => dashboard::page(),
        (&Method::GET | &Method::HEAD, [file]) if dashboard::has(file) => dashboard::file(file),
        (&Method::GET, ["status"]) => json(StatusCode::OK, &status.status()),
        (&Method::GET, ["events"]) => events(live),
        (&Method::GET, ["metrics"]) => reply(
            StatusCode::OK,
            crate::part::prometheus::CONTENT_TYPE,
            status.metrics() + &dashboard::metrics(live) + &crate::part::prometheus::eof(),
        ),
        (&Method::POST, ["reload"]) => match control.reload().await {
            Ok(g) => json(StatusCode::OK, &serde_json::json!({ "applied": g })),
            Err(e) => {
                let code = match e {
                    ReloadError::Refused(_) | ReloadError::Failed(_) => {
                        StatusCode::UNPROCESSABLE_ENTITY
                    }
                    ReloadError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
                };
                error(code, &e)
            }
        },
        (&Method::POST, ["command", "xdp", verb]) => xdp_command(control, verb, &query(&req)).await,
        (&Method::POST, ["command", part, verb]) => {
            let running = control.running();
            if !running.iter().any(|r| r == part) {
                let e = CommandError::NotRunning {
                    part: part.to_string(),
                    running,
                };
                return error(StatusCode::NOT_FOUND, &e);
            }
            let command = match Command::parse(part, verb, &query(&req)) {
                Ok(c) => c,
                Err(e @ ParseError::UnknownVerb { .. }) => return error(StatusCode::NOT_FOUND, &e),
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            match control.command(part, command).await {
                Ok(v) => json(StatusCode::OK, &v),
                Err(e) => error(command_status(&e), &e),
            }
        }
        (_, ["status"] | ["events"] | ["metrics"] | ["reload"] | ["command", _, _]) => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// `/command/xdp/<verb>`: the same command to every running part that attaches XDP programs,
/// answered with each one's reply.
async fn xdp_command(
    control: &Control,
    verb: &str,
    args: &BTreeMap<String, String>,
) -> Response<Body> {
    let command = match Command::parse("xdp", verb, args) {
        Ok(c) => c,
        Err(e @ ParseError::UnknownVerb { .. }) => return error(StatusCode::NOT_FOUND, &e),
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let running = control.running();
    let parts: Vec<&str> = crate::part::command::XDP_PARTS
        .into_iter()
        .filter(|p| running.iter().any(|r| r == p))
        .collect();
    if parts.is_empty() {
        let e = CommandError::NotRunning {
            part: crate::part::command::XDP_PARTS.join(" or "),
            running,
        };
        return error(StatusCode::NOT_FOUND, &e);
    }
    let mut replies = serde_json::Map::new();
    for part in parts {
        match control.command(part, command.clone()).await {
            Ok(v) => {
                replies.insert(part.to_string(), v);
            }
            Err(e) => return error(command_status(&e), &e),
        }
    }
    json(StatusCode::OK, &serde_json::Value::Object(replies))
}

/// The Server-Sent Events stream of the status document, or 503 past the bound on streams.
fn events(live: &Live) -> Response<Body> {
    let Some(slot) = live.admit() else {
        let mut r = reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "too many dashboards streaming; poll /status\n",
        );
        r.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("5"),
        );
        return r;
    };
    let mut r = Response::new(StreamBody::new(live.stream(slot)).boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("2001%3Adb8%3A%3A1"), "2001:db8::1");
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    /// Found by fuzz/fuzz_targets/admin_query.rs: `%+A` decoded as a newline.
    #[test]
    fn a_sign_is_not_a_hex_digit() {
        assert_eq!(percent_decode("%+A%-1"), "% A%-1");
        assert_eq!(
            super::parse_query("pool=a%2Bb&server=%+1"),
            std::collections::BTreeMap::from([
                ("pool".to_string(), "a+b".to_string()),
                ("server".to_string(), "% 1".to_string())
            ])
        );
    }
}
