//! A raw HTTP/1.1 client over std sockets: sends exactly the bytes a test gives it (so tests can
//! send malformed and smuggling-shaped requests) and parses responses strictly.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a [`Conn`] talks over: a socket, or TLS over it.
pub enum Wire {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Wire {
    fn socket(&self) -> &TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(t) => &t.sock,
        }
    }

    fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Tls(t) => &mut t.sock,
        }
    }

    /// The TLS connection's state (version, ALPN, the server's certificates).
    pub fn tls(&self) -> Option<&rustls::ClientConnection> {
        match self {
            Wire::Plain(_) => None,
            Wire::Tls(t) => Some(&t.conn),
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf),
            Wire::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.write(buf),
            Wire::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(s) => s.flush(),
            Wire::Tls(t) => t.flush(),
        }
    }
}

/// One client connection (keep-alive capable), plain or TLS.
pub struct Conn {
    r: BufReader<Wire>,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        Self::connect_timeout(addr, Duration::from_secs(5))
    }

    /// Connects within `timeout` (reads time out after 15 s).
    pub fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.set_nodelay(true)?;
        Ok(Conn { r: BufReader::new(Wire::Plain(s)) })
    }

    /// Connects and completes a TLS handshake for `server_name` (the SNI, and the name the
    /// certificate is checked against) with `config`.
    pub fn connect_tls(
        addr: SocketAddr,
        server_name: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut t = rustls::StreamOwned::new(conn, s);
        while t.conn.is_handshaking() {
            t.conn.complete_io(&mut t.sock)?;
        }
        Ok(Conn { r: BufReader::new(Wire::Tls(Box::new(t))) })
    }

    /// Connects to an IPv4 `addr` from the loopback address `from` (any of 127.0.0.0/8), so
    /// the proxy sees a client other than 127.0.0.1.
    pub fn connect_from(addr: SocketAddr, from: std::net::Ipv4Addr) -> io::Result<Conn> {
        use std::os::fd::FromRawFd as _;
        let SocketAddr::V4(to) = addr else { return Err(io::Error::other("IPv4 only")) };
        let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: a new socket we own; the sockaddr_in structs live across the calls that read
        // them; on failure the descriptor is closed before returning.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let s = TcpStream::from_raw_fd(fd);
            let local = sin(from, 0);
            if libc::bind(fd, (&raw const local).cast(), len) != 0 {
                return Err(io::Error::last_os_error());
            }
            let remote = sin(*to.ip(), to.port());
            if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
                return Err(io::Error::last_os_error());
            }
            s.set_read_timeout(Some(Duration::from_secs(15)))?;
            s.set_nodelay(true)?;
            Ok(Conn { r: BufReader::new(Wire::Plain(s)) })
        }
    }

    /// The socket (under TLS, the one carrying it).
    pub fn stream(&mut self) -> &mut TcpStream {
        self.r.get_mut().socket_mut()
    }

    /// What the connection talks over.
    pub fn wire(&self) -> &Wire {
        self.r.get_ref()
    }

    pub fn set_read_timeout(&mut self, d: Duration) -> io::Result<()> {
        self.r.get_ref().socket().set_read_timeout(Some(d))
    }

    pub fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.r.get_mut().write_all(raw)
    }

    /// Sends a simple request with `Host: test` and optional extra header lines.
    pub fn request(&mut self, method: &str, path: &str, extra: &str, body: &[u8]) -> io::Result<Response> {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}").into_bytes();
        if !body.is_empty() || method == "POST" || method == "PUT" {
            raw.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(body);
        self.send(&raw)?;
        self.read_response(method == "HEAD")
    }

    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.request("GET", path, "", b"")
    }

    /// Reads one response (skipping 100 Continue).
    pub fn read_response(&mut self, head_request: bool) -> io::Result<Response> {
        loop {
            let resp = self.read_head()?;
            if resp.status == 100 {
                continue;
            }
            return self.read_body(resp, head_request);
        }
    }

    /// Reads only a response head (for 101 and 100 handling).
    pub fn read_head(&mut self) -> io::Result<Response> {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.r.read_until(b'\n', &mut line)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response"));
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let mut hs = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut hs);
        resp.parse(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(Response {
            status: resp.code.unwrap_or(0),
            headers: resp
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                .collect(),
            body: Vec::new(),
            trailers: Vec::new(),
        })
    }

    fn read_body(&mut self, mut resp: Response, head_request: bool) -> io::Result<Response> {
        if head_request || resp.status == 204 || resp.status == 304 || resp.status == 101 {
            return Ok(resp);
        }
        if resp.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            let (data, trailers) = crate::httpbin::read_chunked(&mut self.r)?;
            resp.body = data;
            resp.trailers = trailers;
        } else if let Some(n) = resp.header("content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
            resp.body = vec![0; n];
            self.r.read_exact(&mut resp.body)?;
        } else {
            self.r.read_to_end(&mut resp.body)?;
        }
        Ok(resp)
    }

    /// Reads until EOF (or error); true if the peer closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(self.r.read(&mut buf), Ok(0) | Err(_))
    }

    pub fn reader(&mut self) -> &mut BufReader<Wire> {
        &mut self.r
    }
}

/// One-shot GET with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let mut c = Conn::connect(addr)?;
    c.request("GET", path, "Connection: close\r\n", b"")
}
