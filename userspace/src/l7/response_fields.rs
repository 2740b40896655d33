//! What a backend's response head says about the connection and the body, read from its
//! fields as httparse found them: shared by the paths that relay responses as bytes.

use crate::l7::headers::{HOP_BY_HOP, PROTECTED};

/// Connection-named fields remembered for stripping; more are left (and logged nowhere):
/// no sane response names that many.
const MAX_NAMED: usize = 8;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the backend closes; the client connection closes after it.
    Close,
}

pub struct Fields<'a> {
    pub framing: Framing,
    /// The connection can carry another request once this response has ended.
    pub reusable: bool,
    pub has_date: bool,
    pub chunked: bool,
    named: [&'a [u8]; MAX_NAMED],
    n_named: usize,
}

impl Fields<'_> {
    /// Whether a field stays on this hop: hop-by-hop, or named by `Connection` (but for the
    /// fields that frame or route the message).
    pub fn is_hop(&self, name: &str) -> bool {
        HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || (self.named[..self.n_named]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_bytes()))
                && !PROTECTED.iter().any(|p| name.eq_ignore_ascii_case(p)))
    }
}

fn tokens(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Reads the framing and connection fields of a final response. `no_body`: the request was
/// HEAD or the status is 204/304. Conflicting or unusable framing is an error (the proxy
/// and the client must agree where the message ends).
pub fn scan<'a>(
    version: Option<u8>,
    fields: &[httparse::Header<'a>],
    no_body: bool,
) -> Result<Fields<'a>, &'static str> {
    let mut f = Fields {
        framing: Framing::None,
        reusable: version == Some(1),
        has_date: false,
        chunked: false,
        named: [&[]; MAX_NAMED],
        n_named: 0,
    };
    let mut length: Option<u64> = None;
    for h in fields {
        if h.name.eq_ignore_ascii_case("connection") {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    f.reusable = false;
                } else if !t.eq_ignore_ascii_case(b"keep-alive") && f.n_named < MAX_NAMED {
                    f.named[f.n_named] = t;
                    f.n_named += 1;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("invalid Content-Length")?;
            if length.is_some_and(|l| l != v) {
                return Err("conflicting Content-Length");
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last_chunked = tokens(h.value)
                .next_back()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            if f.chunked || !last_chunked {
                return Err("unsupported Transfer-Encoding");
            }
            f.chunked = true;
        } else if h.name.eq_ignore_ascii_case("date") {
            f.has_date = true;
        }
    }
    // A Date the backend's Connection named is stripped like any other named field, and
    // the proxy then adds its own.
    f.has_date = f.has_date && !f.is_hop("date");
    f.framing = match (no_body, f.chunked, length) {
        (true, _, _) => Framing::None,
        (false, true, Some(_)) => return Err("both Content-Length and chunked"),
        (false, true, None) => Framing::Chunked,
        (false, false, Some(n)) => Framing::Length(n),
        (false, false, None) => {
            f.reusable = false;
            Framing::Close
        }
    };
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(head: &[u8], no_body: bool) -> Result<(Framing, bool, Vec<String>), &'static str> {
        let mut storage = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut storage);
        let _ = resp.parse(head);
        let f = scan(resp.version, resp.headers, no_body)?;
        let kept = resp
            .headers
            .iter()
            .filter(|h| !f.is_hop(h.name))
            .map(|h| h.name.to_owned())
            .collect();
        Ok((f.framing, f.reusable, kept))
    }

    #[test]
    fn framing_reuse_and_stripping() {
        assert_eq!(
            fields(
                b"HTTP/1.1 200 OK\r\nConnection: X-Hop, Content-Length\r\nX-Hop: 1\r\n\
                  Keep-Alive: t=1\r\nContent-Length: 3\r\nX-Kept: y\r\n\r\n",
                false
            ),
            Ok((
                Framing::Length(3),
                true,
                vec!["Content-Length".into(), "X-Kept".into()]
            ))
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(fields(chunked, false).map(|f| f.0), Ok(Framing::Chunked));
        assert_eq!(fields(chunked, true).map(|f| f.0), Ok(Framing::None));
        assert_eq!(
            fields(b"HTTP/1.0 200 OK\r\n\r\n", false).map(|f| (f.0, f.1)),
            Ok((Framing::Close, false))
        );
        assert_eq!(
            fields(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            )
            .map(|f| f.1),
            Ok(false)
        );
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
        ] {
            assert!(
                fields(bad, false).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Found by the http_fast_head fuzz target: a Date that Connection names is stripped,
    /// so the proxy must add its own rather than relay none.
    #[test]
    fn a_date_named_by_connection_is_not_kept() {
        let head = b"HTTP/1.1 200 OK\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\n\
                     Connection: Date\r\nContent-Length: 0\r\n\r\n";
        let mut storage = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut storage);
        assert!(resp.parse(head).is_ok());
        let f = scan(resp.version, resp.headers, false).expect("a valid head");
        assert!(f.is_hop("Date"));
        assert!(!f.has_date);
        let plain = b"HTTP/1.1 200 OK\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\n\r\n";
        let mut storage = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut storage);
        assert!(resp.parse(plain).is_ok());
        assert!(
            scan(resp.version, resp.headers, false)
                .expect("valid")
                .has_date
        );
    }
}
