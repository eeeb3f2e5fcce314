//! Chunked transfer coding (RFC 9112 7.1), scanned strictly: where a chunked body ends and
//! which bytes are data. The relays forward the bytes verbatim (or only the data spans, when
//! decoding for an HTTP/1.0 client); this scanner only finds the boundaries, and refuses every
//! shape that a lenient parser behind the proxy could read differently (bare LFs, malformed
//! trailers, whitespace inside a size, nameless extensions).

use crate::request::is_field_value_byte;

/// Longest chunk-size line (size + extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size,
    /// Whitespace after the size digits (only before a `;`).
    SizeWs,
    /// After a `;`: optional whitespace, then an extension name.
    ExtStart,
    /// After the size: extensions until CRLF.
    Ext,
    /// Expecting LF after CR of the size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field's name.
    TrailerName,
    /// Inside a trailer field's value.
    TrailerValue,
    TrailerLf,
    /// CR of the final empty line seen.
    EndLf,
    Done,
}

/// Incremental scanner of chunked transfer coding.
#[derive(Debug)]
pub struct ChunkedScanner {
    state: State,
    size: u64,
    digits: u32,
    line: usize,
    /// Data bytes seen so far.
    pub data_total: u64,
}

/// What one scan step found.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    /// Bytes of the input that belong to the body.
    pub consumed: usize,
    /// The body ended within them.
    pub done: bool,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        ChunkedScanner { state: State::Size, size: 0, digits: 0, line: 0, data_total: 0 }
    }
}

impl ChunkedScanner {
    /// One more byte of a size or trailer line; `Err(too_long)` past [`MAX_CHUNK_LINE`].
    fn count_line(&mut self, too_long: &'static str) -> Result<(), &'static str> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE {
            return Err(too_long);
        }
        Ok(())
    }

    /// Scans `input`, calling `data` with the range of every data span found.
    pub fn scan(&mut self, input: &[u8], mut data: impl FnMut(std::ops::Range<usize>)) -> Result<Scan, &'static str> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => match (b as char).to_digit(16) {
                    Some(d) => {
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err("chunk size too large");
                        }
                        self.size = self.size * 16 + d as u64;
                    }
                    None if self.digits == 0 => return Err("chunk size missing"),
                    None if b == b'\r' => self.state = State::SizeLf,
                    None if b == b';' => {
                        self.state = State::ExtStart;
                        self.line = 0;
                    }
                    None if b == b' ' || b == b'\t' => {
                        self.state = State::SizeWs;
                        self.line = 0;
                    }
                    None => return Err("invalid chunk size"),
                },
                // Whitespace is only allowed before an extension (RFC 9112 7.1.1, BWS before
                // `;`): `5 6` is no size, and `5 ` CRLF is one that node refuses and nginx takes.
                State::SizeWs => {
                    self.count_line("chunk extension too long")?;
                    match b {
                        b' ' | b'\t' => {}
                        b';' => self.state = State::ExtStart,
                        _ => return Err("invalid chunk size"),
                    }
                }
                State::ExtStart => {
                    self.count_line("chunk extension too long")?;
                    match b {
                        b' ' | b'\t' => {}
                        b if is_tchar(b) => self.state = State::Ext,
                        _ => return Err("empty chunk extension name"),
                    }
                }
                State::Ext => {
                    self.count_line("chunk extension too long")?;
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' {
                        return Err("bare LF in chunk size line");
                    } else if !is_field_value_byte(b) {
                        return Err("control byte in chunk extension");
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err("expected LF after chunk size");
                    }
                    self.digits = 0;
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let n = (self.size as usize).min(input.len() - i);
                    data(i..i + n);
                    self.size -= n as u64;
                    self.data_total += n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err("expected CR after chunk data");
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err("expected LF after chunk data");
                    }
                    self.state = State::Size;
                }
                // Every trailer line is `name: value` CRLF, as a header line: a bare LF or any
                // other shape is where lenient parsers behind us end the body early (`0\r\n\n`
                // followed by a request), so it is refused, never relayed.
                State::TrailerStart => {
                    if b == b'\r' {
                        self.state = State::EndLf;
                    } else if is_tchar(b) {
                        self.state = State::TrailerName;
                        self.line = 1;
                    } else if b == b'\n' {
                        return Err("bare LF in chunked trailer section");
                    } else {
                        return Err("invalid trailer field name");
                    }
                }
                State::TrailerName | State::TrailerValue => {
                    self.count_line("trailer line too long")?;
                    match (self.state, b) {
                        (_, b'\r') if self.state == State::TrailerValue => self.state = State::TrailerLf,
                        (State::TrailerName, b':') => self.state = State::TrailerValue,
                        (State::TrailerName, b) if is_tchar(b) => {}
                        (State::TrailerValue, b) if is_field_value_byte(b) => {}
                        (_, b'\n') => return Err("bare LF in chunked trailer"),
                        _ => return Err("invalid trailer field"),
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err("expected LF after trailer");
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err("expected LF at end of chunked body");
                    }
                    self.state = State::Done;
                    return Ok(Scan { consumed: i + 1, done: true });
                }
                State::Done => return Ok(Scan { consumed: i, done: true }),
            }
            i += 1;
        }
        Ok(Scan { consumed: i, done: self.state == State::Done })
    }
}

/// A token character (RFC 9110 5.6.2), as in a field name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8], step: usize) -> (Result<Scan, &'static str>, Vec<u8>) {
        let mut s = ChunkedScanner::default();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + step).min(input.len());
            let part = &input[pos..end];
            let r = s.scan(part, |r| out.extend_from_slice(&part[r]));
            match r {
                Ok(Scan { consumed, done: true }) => return (Ok(Scan { consumed: pos + consumed, done: true }), out),
                Ok(Scan { consumed, .. }) => pos += consumed,
                Err(e) => return (Err(e), out),
            }
        }
        (Ok(Scan { consumed: pos, done: false }), out)
    }

    #[test]
    fn chunked_with_extensions_and_trailers_any_split() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (r, data) = scan_all(body, step);
            assert_eq!(r, Ok(Scan { consumed: body.len() - 4, done: true }), "step {step}");
            assert_eq!(data, b"hello world");
        }
    }

    #[test]
    fn chunked_errors() {
        for bad in [&b"zz\r\n"[..], b"\r\n", b"5\r\nhelloXX", b"5\nhello", b"1234567890123456\r\n"] {
            assert!(scan_all(bad, 100).0.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Trailer and size-line shapes that lenient parsers read differently from strict ones:
    /// each is refused, at any split.
    #[test]
    fn chunked_desync_shapes_refused() {
        for bad in [
            // A bare LF ends the body for nginx and node, which then run the next bytes.
            &b"0\r\n\nGET /admin HTTP/1.1\r\nHost: internal\r\n\r\n"[..],
            b"0\r\nX-T: 1\nGET /admin HTTP/1.1\r\n\r\n",
            b"0\r\nX-T: 1\r\n\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\nX-T: a\x00b\r\n\r\n",
            b"0\r\nX-T: a\x0bb\r\n\r\n",
            b"0\r\n X-T: folded\r\n\r\n",
            b"0\r\nX-T : 1\r\n\r\n",
            b"5 6\r\nhello\r\n",
            b"5;a\x00b\r\nhello\r\n",
            b"5;a\nhello\r\n",
            b"5 \r\nhello\r\n",
            b"5\t\r\nhello\r\n",
            b"5;\r\nhello\r\n",
            b"5; =x\r\nhello\r\n",
        ] {
            for step in [1, 3, 100] {
                assert!(scan_all(bad, step).0.is_err(), "{:?} step {step}", String::from_utf8_lossy(bad));
            }
        }
        for good in [&b"5 \t;x=\"y z\"\r\nhello\r\n0\r\n\r\n"[..], b"5  ;a\r\nhello\r\n0\r\nA: \r\nB:c\td\r\n\r\n"] {
            let (r, data) = scan_all(good, 1);
            assert_eq!(r, Ok(Scan { consumed: good.len(), done: true }), "{:?}", String::from_utf8_lossy(good));
            assert_eq!(data, b"hello");
        }
    }
}
