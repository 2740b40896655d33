//! Finding the end of a chunked body in a byte stream without decoding it, so the fast path
//! can relay a backend's chunks (and trailers) to an HTTP/1.1 client unchanged. Sizes and
//! delimiters are checked as strictly as a decoder would: a malformed body ends the exchange
//! rather than letting the proxy and the next hop disagree about where the message ends.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        digits: u8,
        value: u64,
    },
    /// Whitespace after the size: more of it, `;` or CR (RFC 9112 7.1.1 BWS).
    SizeWs {
        value: u64,
    },
    /// After `;`: extensions up to CR.
    Extension {
        value: u64,
    },
    /// CR of the size line seen; LF expected.
    SizeLf {
        value: u64,
    },
    /// Inside chunk data.
    Data {
        left: u64,
    },
    /// Data done; CR expected.
    DataCr,
    /// Data done; LF expected.
    DataLf,
    /// After the last chunk: at the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// CR of a trailer line seen; LF expected.
    TrailerLf,
    /// CR of the final empty line seen; LF expected.
    EndLf,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct Malformed;

/// Bytes of trailer section accepted before the body counts as malformed.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Sixteen hex digits overflow no u64 and no sane chunk needs more.
const MAX_SIZE_DIGITS: u8 = 15;

#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    trailer_bytes: usize,
    /// The sum of the chunk sizes announced so far (the body's data length once done).
    declared: u64,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedScanner {
    pub fn new() -> ChunkedScanner {
        ChunkedScanner {
            state: State::Size {
                digits: 0,
                value: 0,
            },
            trailer_bytes: 0,
            declared: 0,
        }
    }

    /// The data bytes the chunk-size lines read so far announce: a size limit is enforced
    /// at the line, before the chunk's data arrives.
    pub fn declared(&self) -> u64 {
        self.declared
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes `input`; returns how many of its bytes belong to the body (all of them
    /// unless the body ends inside `input`).
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, Malformed> {
        self.step(input, false, None)
    }

    /// Chunk data still to come in the current chunk, when inside one.
    pub fn data_left(&self) -> Option<u64> {
        match self.state {
            State::Data { left } => Some(left),
            _ => None,
        }
    }

    /// Passes `n` bytes of chunk data (at most [`Self::data_left`]).
    pub fn take_data(&mut self, n: u64) {
        if let State::Data { left } = self.state {
            let left = left.saturating_sub(n);
            self.state = if left == 0 {
                State::DataCr
            } else {
                State::Data { left }
            };
        }
    }

    /// For decoding: consumes framing bytes up to the start of chunk data or the end of the
    /// body, copying the trailer section into `trailers` (all but the final LF); returns the
    /// bytes consumed.
    pub fn feed_framing(
        &mut self,
        input: &[u8],
        trailers: &mut Vec<u8>,
    ) -> Result<usize, Malformed> {
        self.step(input, true, Some(trailers))
    }

    fn step(
        &mut self,
        input: &[u8],
        stop_at_data: bool,
        mut trailers: Option<&mut Vec<u8>>,
    ) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            if stop_at_data && matches!(self.state, State::Data { .. }) {
                return Ok(i);
            }
            if let Some(t) = trailers.as_deref_mut()
                && matches!(
                    self.state,
                    State::TrailerStart | State::Trailer | State::TrailerLf
                )
            {
                t.push(b);
            }
            self.state = match self.state {
                State::Done => return Ok(i),
                State::Size { digits, value } => match hex(b) {
                    Some(d) if digits < MAX_SIZE_DIGITS => State::Size {
                        digits: digits + 1,
                        value: value << 4 | u64::from(d),
                    },
                    Some(_) => return Err(Malformed),
                    None if digits == 0 => return Err(Malformed),
                    None => match b {
                        b'\r' => State::SizeLf { value },
                        b';' => State::Extension { value },
                        b' ' | b'\t' => State::SizeWs { value },
                        _ => return Err(Malformed),
                    },
                },
                State::SizeWs { value } => match b {
                    b' ' | b'\t' => State::SizeWs { value },
                    b';' => State::Extension { value },
                    b'\r' => State::SizeLf { value },
                    _ => return Err(Malformed),
                },
                State::Extension { value } => match b {
                    b'\r' => State::SizeLf { value },
                    b'\n' => return Err(Malformed),
                    _ => State::Extension { value },
                },
                State::SizeLf { value } => match (b, value) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', v) => {
                        self.declared = self.declared.saturating_add(v);
                        State::Data { left: v }
                    }
                    _ => return Err(Malformed),
                },
                State::Data { left } => {
                    let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size {
                    digits: 0,
                    value: 0,
                },
                State::DataCr | State::DataLf => return Err(Malformed),
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\n' => return Err(Malformed),
                    _ => self.trailer_byte()?,
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(Malformed),
                    _ => self.trailer_byte()?,
                },
                State::TrailerLf if b == b'\n' => State::TrailerStart,
                State::TrailerLf => return Err(Malformed),
                State::EndLf if b == b'\n' => {
                    self.state = State::Done;
                    return Ok(i + 1);
                }
                State::EndLf => return Err(Malformed),
            };
            i += 1;
        }
        Ok(i)
    }

    fn trailer_byte(&mut self) -> Result<State, Malformed> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(Malformed);
        }
        Ok(State::Trailer)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_sizes_are_summed_at_each_size_line() {
        let mut s = ChunkedScanner::new();
        assert_eq!(s.feed(b"3\r\nab"), Ok(5));
        assert_eq!(s.declared(), 3);
        assert_eq!(s.feed(b"c\r\n10;x=y\r\n"), Ok(11));
        assert_eq!(s.declared(), 19);
        assert_eq!(s.feed(b"0123456789abcdef\r\n0\r\n\r\n"), Ok(23));
        assert!(s.is_done());
        assert_eq!(s.declared(), 19);
    }

    /// Feeds `body` in pieces of `step` bytes; the body's length, or the error.
    fn scan(body: &[u8], step: usize) -> Result<Option<usize>, Malformed> {
        let mut s = ChunkedScanner::new();
        let mut used = 0;
        for piece in body.chunks(step) {
            let n = s.feed(piece)?;
            used += n;
            if s.is_done() {
                return Ok(Some(used));
            }
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_at_any_split() {
        let body =
            b"5\r\nhello\r\n1a;name=v\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\n\r\n";
        let mut with_tail = body.to_vec();
        with_tail.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        for step in 1..=with_tail.len() {
            assert_eq!(scan(&with_tail, step), Ok(Some(body.len())), "step {step}");
        }
    }

    #[test]
    fn last_chunk_without_trailers() {
        assert_eq!(scan(b"0\r\n\r\n", 3), Ok(Some(5)));
        assert_eq!(scan(b"000\r\n\r\n", 1), Ok(Some(7)));
    }

    #[test]
    fn whitespace_before_extensions() {
        assert_eq!(scan(b"5 \t ;a=b\r\nhello\r\n0 \r\n\r\n", 1), Ok(Some(23)));
    }

    #[test]
    fn incomplete_is_not_done() {
        assert_eq!(scan(b"5\r\nhel", 2), Ok(None));
        assert_eq!(scan(b"0\r\nX-A: 1\r\n", 2), Ok(None));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\rX",
            b"-1\r\n",
            b"0x5\r\n",
            b"1234567890abcdef0\r\n",
            b"0\r\n\n",
            b"0\r\nX-A: 1\n\r\n",
            b"5;ext\n",
            // Found by fuzz/fuzz_targets/chunked.rs: only whitespace before `;` or CR (httparse
            // and hyper refuse these too, so the two hops could disagree on the chunk size).
            b"A %",
            b"5 x\r\n",
            b"5\t0\r\n",
        ] {
            assert_eq!(
                scan(bad, 1),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Decodes `body` fed in pieces of `step`: the data and the trailer section.
    fn decode(body: &[u8], step: usize) -> (Vec<u8>, Vec<u8>) {
        let mut s = ChunkedScanner::new();
        let (mut data, mut trailers) = (Vec::new(), Vec::new());
        for piece in body.chunks(step) {
            let mut at = 0;
            while at < piece.len() && !s.is_done() {
                if let Some(left) = s.data_left() {
                    let n = (piece.len() - at).min(left as usize);
                    data.extend_from_slice(&piece[at..at + n]);
                    s.take_data(n as u64);
                    at += n;
                } else {
                    at += s.feed_framing(&piece[at..], &mut trailers).unwrap();
                }
            }
        }
        assert!(s.is_done());
        (data, trailers)
    }

    #[test]
    fn decodes_data_and_trailers_at_any_split() {
        let body =
            b"5\r\nhello\r\n1a;name=v\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\n\r\n";
        for step in 1..=body.len() {
            let (data, trailers) = decode(body, step);
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert_eq!(trailers, b"X-Sum: 1\r\n\r", "step {step}");
        }
        assert_eq!(decode(b"0\r\n\r\n", 1), (vec![], b"\r".to_vec()));
    }

    #[test]
    fn oversized_trailers_are_refused() {
        let mut body = b"0\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'a', MAX_TRAILER_BYTES + 1));
        assert_eq!(scan(&body, 4096), Err(Malformed));
    }
}
