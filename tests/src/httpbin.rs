//! An httpbin-like HTTP/1.1 server (thread per connection) for tests and the demo.
//!
//! httpbin endpoints: `/get`, `/headers`, `/ip`, `/user-agent`, `/anything[/...]`,
//! `/status/{code}`, `/delay/{seconds}`, `/bytes/{n}`. Test endpoints: `/echo` (body back with the
//! same framing, trailers included), `/stream-bytes/{n}` (chunked, with an `X-Checksum` trailer),
//! `/close-delimited/{n}` (no Content-Length, ends by closing), `/ws` (101 then echoes bytes),
//! `/slow-head/{ms}` (waits before the head), `/bytes-header/{n}/{name}/{value}` (`/bytes/{n}`
//! with one more header). It counts accepted connections and request heads read.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

/// A running server; stops accepting when dropped.
pub struct Httpbin {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Name reported in the `X-Upstream` response header (tells load-balanced targets apart).
    pub name: String,
}

impl Httpbin {
    pub fn start(addr: &str) -> io::Result<Httpbin> {
        Self::start_named(addr, "httpbin")
    }

    pub fn start_named(addr: &str, name: &str) -> io::Result<Httpbin> {
        Self::start_with(addr, name, None)
    }

    /// An HTTPS server (`tls`: its rustls configuration), named `name`.
    pub fn start_tls(addr: &str, name: &str, tls: Arc<rustls::ServerConfig>) -> io::Result<Httpbin> {
        Self::start_with(addr, name, Some(tls))
    }

    fn start_with(addr: &str, name: &str, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<Httpbin> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, h, s, n) = (Arc::clone(&accepted), Arc::clone(&heads), Arc::clone(&stop), name.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let (n, h, tls) = (n.clone(), Arc::clone(&h), tls.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &n, &h, tls);
                });
            }
        });
        Ok(Httpbin { addr, accepted, heads, stop, name: name.to_string() })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Request heads read so far, counted before the body is read (so a request whose body is
    /// still coming, or whose answer is delayed, has been counted).
    pub fn heads(&self) -> usize {
        self.heads.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The `https://` URL of a server started with [`start_tls`](Self::start_tls), by `host`
    /// (the name its certificate has) and its port.
    pub fn https_url(&self, host: &str) -> String {
        format!("https://{host}:{}/", self.addr.port())
    }
}

/// An upstream for one test on a free loopback port, named `name` (its `X-Upstream` header).
pub fn upstream(name: &str) -> Httpbin {
    Httpbin::start_named("127.0.0.1:0", name).expect("upstream")
}

impl Drop for Httpbin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

struct Req {
    method: String,
    target: String,
    minor: u8,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
    trailers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn read_head(r: &mut BufReader<Side>) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            return if head.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
        if head.len() > 1 << 20 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
    }
}

/// Header (name, value) pairs, in order.
pub type Fields = Vec<(String, String)>;

/// Reads a chunked body; returns (data, trailers).
pub fn read_chunked<R: BufRead>(r: &mut R) -> io::Result<(Vec<u8>, Fields)> {
    let mut data = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size {line:?}")))?;
        if size == 0 {
            break;
        }
        let start = data.len();
        data.resize(start + size, 0);
        r.read_exact(&mut data[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
    let mut trailers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            trailers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((data, trailers))
}

fn read_req(r: &mut BufReader<Side>, w: &mut Side, heads: &AtomicUsize) -> io::Result<Option<Req>> {
    let Some(head) = read_head(r)? else {
        return Ok(None);
    };
    heads.fetch_add(1, Ordering::SeqCst);
    let mut hs = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut hs);
    req.parse(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let headers: Vec<(String, String)> =
        req.headers.iter().map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned())).collect();
    let mut out = Req {
        method: req.method.unwrap_or("").to_string(),
        target: req.path.unwrap_or("").to_string(),
        minor: req.version.unwrap_or(1),
        headers,
        body: Vec::new(),
        chunked: false,
        trailers: Vec::new(),
    };
    if out.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if out.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let (data, trailers) = read_chunked(r)?;
        out.body = data;
        out.trailers = trailers;
        out.chunked = true;
    } else if let Some(n) = out.header("content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
        out.body = vec![0; n];
        r.read_exact(&mut out.body)?;
    }
    Ok(Some(out))
}

/// One side of a connection the server reads from or writes to: the socket, or TLS over it
/// (both sides then share the rustls connection, on the connection's one thread).
enum Side {
    Plain(TcpStream),
    Tls(std::rc::Rc<std::cell::RefCell<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>>),
}

impl Read for Side {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Side::Plain(s) => s.read(buf),
            Side::Tls(t) => match t.borrow_mut().read(buf) {
                // A client closing without close_notify has still closed.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl Write for Side {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Side::Plain(s) => s.write(buf),
            Side::Tls(t) => t.borrow_mut().write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Side::Plain(s) => s.flush(),
            Side::Tls(t) => t.borrow_mut().flush(),
        }
    }
}

fn serve(conn: TcpStream, name: &str, heads: &AtomicUsize, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let peer = conn.peer_addr()?;
    let (mut w, r) = match tls {
        None => (Side::Plain(conn.try_clone()?), Side::Plain(conn)),
        Some(config) => {
            let mut t =
                rustls::StreamOwned::new(rustls::ServerConnection::new(config).map_err(io::Error::other)?, conn);
            while t.conn.is_handshaking() {
                t.conn.complete_io(&mut t.sock)?;
            }
            let t = std::rc::Rc::new(std::cell::RefCell::new(t));
            (Side::Tls(t.clone()), Side::Tls(t))
        }
    };
    let mut r = BufReader::new(r);
    loop {
        let Some(req) = read_req(&mut r, &mut w, heads)? else {
            return Ok(());
        };
        let close = req.minor == 0 || req.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let keep = respond(&req, &mut r, &mut w, peer, name, close)?;
        if !keep || close {
            return Ok(());
        }
    }
}

fn query_of(target: &str) -> &str {
    target.split_once('?').map_or("", |(_, q)| q)
}

fn json_body(req: &Req, peer: SocketAddr, with_body: bool) -> Value {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let mut args = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        args.insert(k.to_string(), Value::String(v.to_string()));
    }
    let mut headers = Map::new();
    for (k, v) in &req.headers {
        headers.insert(k.clone(), Value::String(v.clone()));
    }
    let host = req.header("host").unwrap_or("");
    let mut v = json!({
        "args": args,
        "headers": headers,
        "origin": peer.ip().to_string(),
        "url": format!("http://{host}{path}{}", if query.is_empty() { String::new() } else { format!("?{query}") }),
    });
    if with_body {
        let data = String::from_utf8_lossy(&req.body).into_owned();
        v["method"] = Value::String(req.method.clone());
        v["json"] = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        v["data"] = Value::String(data);
        v["trailers"] =
            Value::Object(req.trailers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect());
    }
    v
}

fn write_response(w: &mut Side, status: u16, ctype: &str, body: &[u8], name: &str, close: bool) -> io::Result<()> {
    write_response_with(w, status, ctype, &[], body, name, close)
}

/// [`write_response`] with `extra` headers after the standard ones.
fn write_response_with(
    w: &mut Side,
    status: u16,
    ctype: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    name: &str,
    close: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nAccess-Control-Allow-Origin: *\r\nX-Upstream: {name}\r\n"
    )
    .into_bytes();
    for (k, v) in extra {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if status != 204 && status != 304 {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    w.write_all(&out)
}

/// Deterministic body bytes for `/bytes` and `/stream-bytes`: `abc…z0…9` repeated.
///
/// Built by doubling with memcpy rather than byte by byte: the tests run in debug builds, where
/// a per-byte iterator took the better part of a second for 20 MB on a slow host — longer than
/// the 400 ms upstream head timeout of the test that asks for it, which then saw a 504.
pub fn pattern(n: usize) -> Vec<u8> {
    const UNIT: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut v = Vec::with_capacity(n.max(UNIT.len()));
    v.extend_from_slice(UNIT);
    // Before each copy the length is a multiple of 36 (or the copy is the last one), so copying
    // a prefix continues the sequence.
    while v.len() < n {
        v.extend_from_within(..v.len().min(n - v.len()));
    }
    v.truncate(n);
    v
}

fn respond(
    req: &Req,
    r: &mut BufReader<Side>,
    w: &mut Side,
    peer: SocketAddr,
    name: &str,
    close: bool,
) -> io::Result<bool> {
    let path = req.target.split('?').next().unwrap_or("");
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let json_ct = "application/json";
    match seg.as_slice() {
        ["get"] | ["headers"] => {
            let mut v = json_body(req, peer, false);
            if seg[0] == "headers" {
                v = json!({"headers": v["headers"]});
            }
            write_response(w, 200, json_ct, serde_json::to_string_pretty(&v)?.as_bytes(), name, close)?;
        }
        ["response-headers"] => {
            // As httpbin: every query argument becomes a response header (values unescaped:
            // tests pass plain tokens), and the body lists them.
            let query = req.target.split_once('?').map_or("", |(_, q)| q);
            let pairs: Vec<(&str, &str)> =
                query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
            let body =
                json!(pairs.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect::<Map<_, _>>());
            write_response_with(w, 200, json_ct, &pairs, body.to_string().as_bytes(), name, close)?;
        }
        ["ip"] => write_response(
            w,
            200,
            json_ct,
            json!({"origin": peer.ip().to_string()}).to_string().as_bytes(),
            name,
            close,
        )?,
        ["user-agent"] => write_response(
            w,
            200,
            json_ct,
            json!({"user-agent": req.header("user-agent")}).to_string().as_bytes(),
            name,
            close,
        )?,
        ["anything", ..] => {
            let v = json_body(req, peer, true);
            write_response(w, 200, json_ct, serde_json::to_string_pretty(&v)?.as_bytes(), name, close)?;
        }
        ["status", code] => {
            let code: u16 = code.parse().unwrap_or(400);
            write_response(w, code, "text/html; charset=utf-8", b"", name, close)?;
        }
        ["delay", s] => {
            let s: f64 = s.parse().unwrap_or(0.0);
            // The delay is what this endpoint is for (httpbin's `/delay`).
            std::thread::sleep(Duration::from_secs_f64(s.clamp(0.0, 10.0)));
            let v = json_body(req, peer, false);
            write_response(w, 200, json_ct, serde_json::to_string_pretty(&v)?.as_bytes(), name, close)?;
        }
        ["slow-head", ms] => {
            // A slow upstream is what this endpoint is for.
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            write_response(w, 200, "text/plain", b"slow", name, close)?;
        }
        ["bytes", n] => {
            let n: usize = n.parse().unwrap_or(0).min(100 << 20);
            write_response(w, 200, "application/octet-stream", &pattern(n), name, close)?;
        }
        ["bytes-header", n, h, v] => {
            // `/bytes/{n}` with one more header in the head.
            let n: usize = n.parse().unwrap_or(0).min(100 << 20);
            write_response_with(w, 200, "application/octet-stream", &[(h, v)], &pattern(n), name, close)?;
        }
        ["stream-bytes", n] => {
            let n: usize = n.parse().unwrap_or(0).min(100 << 20);
            let body = pattern(n);
            let sum: u64 = body.iter().map(|&b| b as u64).sum();
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nX-Upstream: {name}\r\n\r\n"
            )
            .into_bytes();
            for chunk in body.chunks(7000) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(format!("0\r\nX-Checksum: {sum}\r\n\r\n").as_bytes());
            w.write_all(&out)?;
        }
        ["drip", n, pieces, ms] => {
            // A Content-Length body of `n` bytes in `pieces` writes `ms` apart (the head first).
            let n: usize = n.parse().unwrap_or(0).min(100 << 20);
            let pieces: usize = pieces.parse().unwrap_or(1).clamp(1, 1000);
            let pause = Duration::from_millis(ms.parse().unwrap_or(0).min(1000));
            w.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nX-Upstream: {name}\r\n\r\n")
                    .as_bytes(),
            )?;
            let body = pattern(n);
            for chunk in body.chunks(n.div_ceil(pieces).max(1)) {
                // Trickling the body is what this endpoint is for.
                std::thread::sleep(pause);
                w.write_all(chunk)?;
            }
        }
        ["truncated", n, sent, ms] => {
            // Announces `n` body bytes, sends `sent` of them, waits `ms`, then closes.
            let n: usize = n.parse().unwrap_or(0).min(100 << 20);
            let sent: usize = sent.parse().unwrap_or(0).min(n);
            w.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nX-Upstream: {name}\r\n\r\n")
                    .as_bytes(),
            )?;
            w.write_all(&pattern(n)[..sent])?;
            // Stalling before the close is what this endpoint is for.
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0).min(10_000)));
            return Ok(false);
        }
        ["close-delimited", n] => {
            let n: usize = n.parse().unwrap_or(0).min(100 << 20);
            w.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nX-Upstream: {name}\r\n\r\n")
                    .as_bytes(),
            )?;
            w.write_all(&pattern(n))?;
            return Ok(false);
        }
        ["echo"] => {
            if req.chunked {
                let mut out =
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                        .to_vec();
                for chunk in req.body.chunks(5000) {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                for (k, v) in &req.trailers {
                    out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                w.write_all(&out)?;
            } else {
                write_response(w, 200, "application/octet-stream", &req.body, name, close)?;
            }
        }
        ["ws"] if req.header("upgrade").is_some() => {
            w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")?;
            // Echo whatever arrives until the peer closes.
            let mut buf = [0u8; 8192];
            let buffered = r.buffer().to_vec();
            r.consume(buffered.len());
            w.write_all(&buffered)?;
            loop {
                let n = r.get_mut().read(&mut buf)?;
                if n == 0 {
                    return Ok(false);
                }
                w.write_all(&buf[..n])?;
            }
        }
        _ => {
            let (status, v) = crate::jsonplaceholder::respond(&req.method, &seg, query_of(&req.target), &req.body)
                .unwrap_or_else(|| (404, json!({"error": "not found", "path": path})));
            let ctype = if status == 404 { json_ct } else { "application/json; charset=utf-8" };
            write_response(w, status, ctype, v.to_string().as_bytes(), name, close)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pattern_repeats_the_alphabet_and_digits_at_every_length() {
        for n in [0, 1, 35, 36, 37, 71, 72, 73, 1000, 100_003] {
            let want: Vec<u8> = (0..n).map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36]).collect();
            assert_eq!(super::pattern(n), want, "n = {n}");
        }
    }
}
