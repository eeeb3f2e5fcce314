//! A sampled exchange on its way from a worker to the visibility thread: one frame, written in
//! steps into the exchange's pooled buffer (`ExchangeBufs::sample`) as the exchange goes, and
//! appended whole to the worker's batch when the response is out. No allocation per frame on
//! the worker; no encoding (the captured bytes are copied as they are, credentials already
//! redacted by `analytics::capture`).
//!
//! ```text
//! u32 frame length (after these 4 bytes)
//! u16 api_id length, api_id
//! u16 path length, path (relative to the listen path)
//! u8  flags: 1 request body cut, 2 response body cut
//! u32 request length, request (head, then body)
//! u32 response length, response (head, then body)
//! ```

/// The request's body was cut at the bound (or not read).
pub const REQ_CUT: u8 = 1;
/// The response's body was cut at the bound (or spliced).
pub const RESP_CUT: u8 = 2;

/// Starts a frame in `out` (emptied): the API, the path and the request head.
pub fn begin(out: &mut Vec<u8>, api_id: &str, path: &str) {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    put_str(out, api_id);
    put_str(out, path);
    out.push(0);
    out.extend_from_slice(&[0; 4]);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

/// Where the flags byte of the frame in `out` is.
fn flags_at(out: &[u8]) -> Option<usize> {
    let a = 4 + 2 + u16::from_le_bytes(out.get(4..6)?.try_into().ok()?) as usize;
    let b = a + 2 + u16::from_le_bytes(out.get(a..a + 2)?.try_into().ok()?) as usize;
    (b < out.len()).then_some(b)
}

/// Sets `flag` on the frame in `out`.
pub fn flag(out: &mut [u8], flag: u8) {
    if let Some(i) = flags_at(out) {
        out[i] |= flag;
    }
}

/// The request bytes written so far into the frame in `out`.
pub fn request_so_far(out: &[u8]) -> &[u8] {
    flags_at(out).and_then(|i| out.get(i + 5..)).unwrap_or(&[])
}

/// Ends the request part (everything written after `begin`).
pub fn end_request(out: &mut [u8]) {
    if let Some(i) = flags_at(out) {
        let len = (out.len() - (i + 5)) as u32;
        out[i + 1..i + 5].copy_from_slice(&len.to_le_bytes());
    }
}

/// Starts the response part; call [`end`] once its bytes are written.
pub fn begin_response(out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&[0; 4]);
    out.len()
}

/// Ends the frame whose response started at `resp_at` ([`begin_response`]).
pub fn end(out: &mut [u8], resp_at: usize) {
    let resp_len = (out.len() - resp_at) as u32;
    out[resp_at - 4..resp_at].copy_from_slice(&resp_len.to_le_bytes());
    let frame_len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&frame_len.to_le_bytes());
}

/// One frame, read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub api_id: &'a str,
    pub path: &'a str,
    pub flags: u8,
    pub request: &'a [u8],
    pub response: &'a [u8],
}

/// The frames of a batch, in order; stops at the first malformed one.
pub fn frames(mut bytes: &[u8]) -> impl Iterator<Item = Frame<'_>> {
    std::iter::from_fn(move || {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let frame = bytes.get(4..4 + len)?;
        bytes = &bytes[4 + len..];
        let mut r = Reader(frame);
        let api_id = std::str::from_utf8(r.take_u16()?).ok()?;
        let path = std::str::from_utf8(r.take_u16()?).ok()?;
        let flags = *r.take(1)?.first()?;
        let request = r.take_u32()?;
        let response = r.take_u32()?;
        Some(Frame { api_id, path, flags, request, response })
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }
    fn take_u16(&mut self) -> Option<&'a [u8]> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        self.take(n)
    }
    fn take_u32(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_written_in_steps_read_back_whole() {
        let mut batch = Vec::new();
        let mut out = Vec::new();
        for i in 0..3u8 {
            begin(&mut out, "api", "/users/1");
            out.extend_from_slice(b"GET /u/users/1 HTTP/1.1\r\n\r\n");
            end_request(&mut out);
            if i == 1 {
                flag(&mut out, RESP_CUT);
            }
            let at = begin_response(&mut out);
            out.extend_from_slice(&[b'x'; 3][..i as usize]);
            end(&mut out, at);
            batch.extend_from_slice(&out);
        }
        let got: Vec<_> = frames(&batch).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[1],
            Frame {
                api_id: "api",
                path: "/users/1",
                flags: RESP_CUT,
                request: b"GET /u/users/1 HTTP/1.1\r\n\r\n",
                response: b"x",
            }
        );
        assert_eq!(got[2].response, b"xx");
        // Cut anywhere, a batch yields its whole frames and no garbage.
        for cut in 0..batch.len() {
            assert!(frames(&batch[..cut]).count() <= 3);
        }
    }
}
