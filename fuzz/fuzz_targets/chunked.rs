//! The chunked body scanner/decoder (userspace/src/l7/chunked.rs), differential against a
//! reference decoder whose chunk-size lines are read by `httparse::parse_chunk_size` (what
//! hyper's HTTP/1 stack does, which sits on the general path and on the client side):
//! - wherever the body is split into reads, the scanner finds the same end (or the same
//!   refusal), and its decoding mode (`feed_framing`/`data_left`/`take_data`) agrees with its
//!   scanning mode on the end, the data and the trailer section;
//! - a body the scanner accepts, the reference accepts with the same end and data;
//! - a body the reference accepts and the scanner refuses uses one of the forms the scanner
//!   refuses on purpose (documented below); anything else is a disagreement about where the
//!   message ends.
//!
//! Input: a byte giving read sizes, then the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portier::l7::chunked::ChunkedScanner;

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The body ends after this many bytes, with this data and trailer section.
    Done(usize, Vec<u8>, Vec<u8>),
    Incomplete,
    Malformed,
}

/// Scanning mode, fed in reads of the given sizes.
fn scan(body: &[u8], sizes: &mut impl Iterator<Item = usize>) -> Outcome {
    let mut s = ChunkedScanner::new();
    let mut used = 0;
    let mut at = 0;
    while at < body.len() {
        let n = sizes.next().unwrap_or(usize::MAX).clamp(1, body.len() - at);
        let piece = &body[at..at + n];
        match s.feed(piece) {
            Ok(k) => {
                assert!(k <= piece.len());
                used += k;
                if s.is_done() {
                    return Outcome::Done(used, Vec::new(), Vec::new());
                }
                assert_eq!(k, piece.len(), "consumed less without finishing");
            }
            Err(_) => return Outcome::Malformed,
        }
        at += n;
    }
    Outcome::Incomplete
}

/// Decoding mode: data and trailers out.
fn decode(body: &[u8], sizes: &mut impl Iterator<Item = usize>) -> Outcome {
    let mut s = ChunkedScanner::new();
    let (mut data, mut trailers) = (Vec::new(), Vec::new());
    let mut at = 0;
    while at < body.len() {
        let n = sizes.next().unwrap_or(usize::MAX).clamp(1, body.len() - at);
        let end = at + n;
        while at < end && !s.is_done() {
            if let Some(left) = s.data_left() {
                let k = (end - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                data.extend_from_slice(&body[at..at + k]);
                s.take_data(k as u64);
                at += k;
            } else {
                match s.feed_framing(&body[at..end], &mut trailers) {
                    Ok(k) => at += k,
                    Err(_) => return Outcome::Malformed,
                }
            }
        }
        if s.is_done() {
            return Outcome::Done(at, data, trailers);
        }
    }
    Outcome::Incomplete
}

/// Why the reference accepted what the scanner may refuse: forms the scanner refuses on
/// purpose, stricter than httparse.
#[derive(Debug, Default)]
struct Lenient {
    /// A size line without digits (httparse reads it as 0).
    empty_size: bool,
    /// Sixteen hex digits (the scanner stops at fifteen: no real chunk is 2^60 bytes).
    sixteen_digits: bool,
    /// A bare LF inside an extension (httparse skips any byte there; RFC 9112 allows none).
    lf_in_extension: bool,
}

/// The reference: sizes by httparse, then data, CRLF; after the last chunk, trailer lines
/// ending in CRLF up to an empty line (bare CR or LF refused, as the scanner does, at most
/// 16 KiB of trailer fields).
fn reference(body: &[u8], lenient: &mut Lenient) -> Outcome {
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let line = &body[at..];
        // What the line has that the scanner refuses, complete or not.
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        lenient.empty_size |= digits == 0 && !line.is_empty();
        lenient.sixteen_digits |= digits > 15;
        let before_cr = line.split(|&b| b == b'\r').next().unwrap_or(&[]);
        lenient.lf_in_extension |= before_cr.contains(&b'\n');
        let (n, size) = match httparse::parse_chunk_size(line) {
            Ok(httparse::Status::Complete(ok)) => ok,
            Ok(httparse::Status::Partial) => return Outcome::Incomplete,
            Err(_) => return Outcome::Malformed,
        };
        at += n;
        if size == 0 {
            break;
        }
        let Ok(size) = usize::try_from(size) else {
            return Outcome::Incomplete;
        };
        if body.len() - at < size {
            return Outcome::Incomplete;
        }
        data.extend_from_slice(&body[at..at + size]);
        at += size;
        match body.get(at..at + 2) {
            Some(b"\r\n") => at += 2,
            Some(_) => return Outcome::Malformed,
            None if body[at..].iter().all(|&b| b == b'\r') => return Outcome::Incomplete,
            None => return Outcome::Malformed,
        }
    }
    // Trailer section.
    let start = at;
    let mut trailer_bytes = 0;
    loop {
        let rest = &body[at..];
        let Some(cr) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
            return if trailer_bytes + rest.len() > 16 * 1024 {
                Outcome::Malformed
            } else {
                Outcome::Incomplete
            };
        };
        if rest[cr] == b'\n' {
            return Outcome::Malformed;
        }
        trailer_bytes += cr;
        if trailer_bytes > 16 * 1024 {
            return Outcome::Malformed;
        }
        match rest.get(cr + 1) {
            Some(b'\n') => {}
            Some(_) => return Outcome::Malformed,
            None => return Outcome::Incomplete,
        }
        at += cr + 2;
        if cr == 0 {
            // The decoder's trailer section is everything but the final LF.
            return Outcome::Done(at, data, body[start..at - 1].to_vec());
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, body)) = input.split_first() else {
        return;
    };
    // Read sizes: the whole body at once, one byte at a time, and a pattern from `split`.
    let whole = scan(body, &mut std::iter::empty());
    assert_eq!(scan(body, &mut std::iter::repeat(1)), whole, "byte by byte");
    let pattern = move || {
        let a = usize::from(split & 0x0f) + 1;
        let b = usize::from(split >> 4) + 1;
        [a, b].into_iter().cycle()
    };
    assert_eq!(scan(body, &mut pattern()), whole, "reads of {split:#04x}");
    let decoded = decode(body, &mut pattern());
    assert_eq!(decode(body, &mut std::iter::empty()), decoded);
    assert_eq!(decode(body, &mut std::iter::repeat(1)), decoded);
    match (&whole, &decoded) {
        (Outcome::Done(a, ..), Outcome::Done(b, ..)) => assert_eq!(a, b),
        (a, b) => assert_eq!(a, b),
    }

    let mut lenient = Lenient::default();
    let reference = reference(body, &mut lenient);
    match (&decoded, &reference) {
        (a, b) if a == b => {}
        (Outcome::Malformed, Outcome::Done(..) | Outcome::Incomplete)
            if lenient.empty_size || lenient.sixteen_digits || lenient.lf_in_extension => {}
        (a, b) => panic!(
            "scanner {a:?}, reference {b:?} on {:?}",
            String::from_utf8_lossy(body)
        ),
    }
});
