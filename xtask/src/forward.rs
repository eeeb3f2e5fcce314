//! `cargo xtask forward --listen ADDR --upstream ADDR`: the benchmark's `floor` row.
//!
//! A minimal TCP byte-copy forwarder on one thread (mio, edge-triggered epoll): each client
//! connection gets its own upstream connection and every read is written straight to the other
//! side. It parses no HTTP, keeps no pool and does nothing per request beyond one read and one
//! write per message, so what it costs per request is what the kernel charges any epoll proxy
//! for that traffic on the host: the floor a real proxy's "CPU us/req" is measured against
//! (bench/README.md, "Method"). It must stay that minimal: anything added here raises the floor.
//!
//! A read shorter than the buffer is taken to have drained the socket (nginx and tokio do the
//! same), so a keep-alive request costs no recv that returns EAGAIN. A side whose peer cannot
//! take more bytes stops being read until the peer drains (no unbounded buffering). A side that
//! ends (EOF) has its peer's write half shut once the bytes already read are written; the pair
//! is closed when both have ended, or at once on an error.
//!
//! With `--splice` (the `floor-splice` row of the large-body scenarios) the upstream's bytes go
//! to the client through a pipe with splice(2) instead of a read and a write, as a proxy that
//! splices response bodies moves them; requests are still copied. It is the floor for such a
//! proxy: what the kernel charges for the traffic when the payload never enters user space.
//! Each pipe is sized to [`PIPE_BYTES`], so a splice shorter than [`READ_BUF`] means the socket
//! drained, as a short read does (the pipe is empty when a splice into it starts, and
//! [`PIPE_BYTES`] leaves room for one [`READ_BUF`] splice of packets down to 1 KiB each).
//!
//! With `--http` as well (the `floor-http` row), the forwarder does the least HTTP a splicing
//! proxy must: it parses each request head it copies (httparse, nothing rewritten), and before
//! each response it peeks at the head ([`HEAD_PEEK`] bytes, `MSG_PEEK`, as Portcullis does),
//! parses it and splices exactly the head and its `Content-Length` body, so it knows where the
//! next response starts. No routing, timers, pool, metrics or runtime: what a hand-written epoll
//! loop that understands HTTP/1.1 costs here, between the splicing floor and a real proxy.
//! Once a response is out it waits for the next edge rather than peek again (which would find
//! nothing and cost a call per request), so it does not take pipelined requests: a response
//! already waiting behind the last one waits for more bytes. Nor does it frame what wrk's
//! GETs never meet: each read from a client is parsed as a whole request head (no request
//! bodies), and a response's length is its head's `Content-Length` (no HEAD requests, no 204 or
//! 304; without one the body runs to the connection's end).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustix::pipe::{PipeFlags, SpliceFlags};

const LISTENER: Token = Token(usize::MAX);
const READ_BUF: usize = 64 * 1024;
/// A splice pipe's capacity (`F_SETPIPE_SZ`): 64 slots of 4 KiB pages.
const PIPE_BYTES: usize = 256 * 1024;
/// `--http`: how much of a response a head peek copies (Portcullis' first head read).
const HEAD_PEEK: usize = 1024;
/// `--http`: the most headers a request or response head may have.
const MAX_HEADERS: usize = 32;

/// How the forwarder treats the bytes it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Read and write both ways (`floor`).
    Copy,
    /// The upstream's bytes spliced to the client (`--splice`, `floor-splice`).
    Splice,
    /// Spliced, with request and response heads parsed (`--splice --http`, `floor-http`).
    Http,
}

/// `cargo xtask forward` entry point: runs until killed.
pub(crate) fn forward(args: &[String]) -> Result<()> {
    let (mut listen, mut upstream, mut splice, mut http) = (None, None, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |name: &str| -> Result<SocketAddr> {
            let v = it.next().with_context(|| format!("{name} needs an address (e.g. 127.0.0.1:18187)"))?;
            v.parse().with_context(|| format!("{name} {v:?}: not an IP:port address"))
        };
        match a.as_str() {
            "--listen" => listen = Some(val("--listen")?),
            "--upstream" => upstream = Some(val("--upstream")?),
            "--splice" => splice = true,
            "--http" => http = true,
            other => bail!("unknown forward option {other:?} (use --listen ADDR --upstream ADDR [--splice [--http]])"),
        }
    }
    let (Some(listen), Some(upstream)) = (listen, upstream) else {
        bail!("forward needs --listen ADDR and --upstream ADDR");
    };
    let mode = match (splice, http) {
        (false, false) => Mode::Copy,
        (true, false) => Mode::Splice,
        (true, true) => Mode::Http,
        (false, true) => bail!("forward --http parses the heads of spliced responses: give --splice too"),
    };
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    serve(listener, upstream, mode, &AtomicBool::new(false))
}

/// One side of a forwarded pair.
struct Side {
    stream: TcpStream,
    /// Token of the other side.
    peer: usize,
    /// Bytes read from the peer that this side's socket has not taken yet.
    pending: Vec<u8>,
    /// `--splice`, on the client side: the pipe the upstream's bytes pass through to it, and
    /// how many of them the pipe still holds.
    pipe: Option<Pipe>,
    piped: usize,
    /// `--http`, on the upstream side: bytes of the current response (head and body) not yet
    /// spliced; 0 between responses, `usize::MAX` for a body that runs to the connection's end.
    response_left: usize,
    /// This side's read half ended (EOF).
    eof: bool,
    /// epoll reported the peer's FIN: read on past a short read, up to the EOF, since no
    /// further edge will come for it.
    hup: bool,
    /// The peer ended: shut this side's write half once `pending` is written.
    shut_after_flush: bool,
}

impl Side {
    /// Bytes this side's socket has yet to take.
    fn backlog(&self) -> bool {
        !self.pending.is_empty() || self.piped > 0
    }
}

/// A pipe's two ends.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        rustix::pipe::fcntl_setpipe_size(&write, PIPE_BYTES)?;
        Ok(Pipe { read, write })
    }
}

/// splice(2) of up to `len` bytes, non-blocking.
fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    Ok(rustix::pipe::splice(from, None, to, None, len, SpliceFlags::MOVE | SpliceFlags::NONBLOCK)?)
}

struct Forwarder {
    poll: Poll,
    mode: Mode,
    sides: Vec<Option<Side>>,
    free: Vec<usize>,
    buf: Box<[u8]>,
    upstream: SocketAddr,
}

/// Forwards every connection `listener` accepts to `upstream` (the upstream's bytes moved as
/// `mode` says) until `stop` is set (checked every 100 ms).
pub(crate) fn serve(mut listener: TcpListener, upstream: SocketAddr, mode: Mode, stop: &AtomicBool) -> Result<()> {
    let poll = Poll::new().context("creating the epoll instance")?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let buf = vec![0; READ_BUF].into();
    let mut f = Forwarder { poll, mode, sides: Vec::new(), free: Vec::new(), buf, upstream };
    let mut events = Events::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        match f.poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("epoll_wait"),
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => f.accept_all(&listener),
                Token(t) => {
                    if ev.is_writable() {
                        f.flush(t);
                    }
                    let hup = ev.is_read_closed() || ev.is_error();
                    if let (true, Some(s)) = (hup, f.sides.get_mut(t).and_then(Option::as_mut)) {
                        s.hup = true;
                    }
                    if ev.is_readable() || hup {
                        f.relay(t);
                    }
                }
            }
        }
    }
    Ok(())
}

impl Forwarder {
    fn accept_all(&mut self, listener: &TcpListener) {
        loop {
            match listener.accept() {
                Ok((client, _)) => {
                    if let Err(e) = self.open_pair(client) {
                        eprintln!("forward: dropping a client: {e:#}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and the like: leave the rest queued for the next event.
                    eprintln!("forward: accept: {e}");
                    return;
                }
            }
        }
    }

    fn open_pair(&mut self, mut client: TcpStream) -> Result<()> {
        // A blocking connect: on loopback it completes at once, and the floor has no use for
        // connection setup that overlaps other work.
        let up = StdStream::connect(self.upstream).with_context(|| format!("connecting to {}", self.upstream))?;
        up.set_nonblocking(true)?;
        let mut up = TcpStream::from_std(up);
        client.set_nodelay(true)?;
        up.set_nodelay(true)?;
        let pipe = if self.mode != Mode::Copy { Some(Pipe::new().context("creating a splice pipe")?) } else { None };
        let (c, u) = (self.slot(), self.slot());
        let both = Interest::READABLE | Interest::WRITABLE;
        let registered = self
            .poll
            .registry()
            .register(&mut client, Token(c), both)
            .and_then(|()| self.poll.registry().register(&mut up, Token(u), both));
        let side = |stream, peer, pipe| {
            let pending = Vec::new();
            let (piped, response_left, eof, hup, shut_after_flush) = (0, 0, false, false, false);
            Some(Side { stream, peer, pending, pipe, piped, response_left, eof, hup, shut_after_flush })
        };
        self.sides[c] = side(client, u, pipe);
        self.sides[u] = side(up, c, None);
        if let Err(e) = registered {
            self.close(c);
            return Err(e).context("registering the pair");
        }
        Ok(())
    }

    fn slot(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.sides.push(None);
            self.sides.len() - 1
        })
    }

    /// Reads from `t` and writes each read to its peer (or splices it through the peer's pipe),
    /// until `t` is drained, ends, or the peer stops taking bytes.
    fn relay(&mut self, t: usize) {
        let http = self.mode == Mode::Http;
        loop {
            let Some(side) = self.sides[t].as_ref() else { return };
            let (peer, hup, mut left) = (side.peer, side.hup, side.response_left);
            if side.eof || self.sides[peer].as_ref().is_some_and(Side::backlog) {
                return; // ended, or resumed by `flush` once the peer has taken its backlog
            }
            let pipe_in = self.sides[peer].as_ref().and_then(|p| p.pipe.as_ref());
            let spliced = pipe_in.is_some();
            // `--http`: splice one response at a time, its length read from its head (a peek
            // consumes nothing, so a head seen again after a failed splice reads the same).
            let framed = http && spliced;
            if framed && left == 0 {
                match next_response(&side.stream, &mut self.buf) {
                    Ok(Some(len)) => left = len,
                    Ok(None) if !hup => return, // the head's rest raises a new edge
                    Ok(None) => return self.end(t),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return self.close(t),
                }
            }
            let want = if framed { READ_BUF.min(left) } else { READ_BUF };
            let got = match pipe_in {
                Some(pipe) => splice(&side.stream, &pipe.write, want),
                None => (&side.stream).read(&mut self.buf),
            };
            let n = match got {
                Ok(0) => return self.end(t),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(t),
            };
            if framed && left != usize::MAX {
                if let Some(side) = self.sides[t].as_mut() {
                    side.response_left = left - n;
                }
            }
            if http && !spliced && request_head(&self.buf[..n]).is_err() {
                return self.close(t); // not HTTP: a proxy would answer 400 and close
            }
            let Some(p) = self.sides[peer].as_mut() else { return self.close(t) };
            let sent = if spliced {
                p.piped = n;
                drain_pipe(p)
            } else {
                write_some(&mut p.stream, &self.buf[..n]).map(|w| p.pending.extend_from_slice(&self.buf[w..n]))
            };
            if sent.is_err() {
                return self.close(t);
            }
            if n < want && !hup {
                return; // a short read drained the socket; the next bytes raise a new edge
            }
            if framed && left == n && !hup {
                return; // the response is out; the next comes after the next request
            }
        }
    }

    /// Writes `t`'s backlog; once it is gone, shuts `t`'s write half if its peer has ended,
    /// or resumes reading the peer.
    fn flush(&mut self, t: usize) {
        let Some(side) = self.sides[t].as_mut() else { return };
        if !side.backlog() {
            return;
        }
        let written = if side.piped > 0 {
            drain_pipe(side)
        } else {
            write_some(&mut side.stream, &side.pending).map(|w| {
                side.pending.drain(..w);
            })
        };
        if written.is_err() {
            return self.close(t);
        }
        if side.backlog() {
            return;
        }
        let peer = side.peer;
        if side.shut_after_flush {
            let _ = side.stream.shutdown(std::net::Shutdown::Write);
            self.close_if_done(t);
        } else {
            self.relay(peer);
        }
    }

    /// `t`'s read half ended: shut its peer's write half (after the peer's backlog).
    fn end(&mut self, t: usize) {
        let Some(side) = self.sides[t].as_mut() else { return };
        side.eof = true;
        let peer = side.peer;
        let Some(p) = self.sides[peer].as_mut() else { return self.close(t) };
        if !p.backlog() {
            let _ = p.stream.shutdown(std::net::Shutdown::Write);
        } else {
            p.shut_after_flush = true;
        }
        self.close_if_done(t);
    }

    /// Closes the pair once both read halves have ended and nothing is left to write.
    fn close_if_done(&mut self, t: usize) {
        let done = |s: &Option<Side>| s.as_ref().is_none_or(|s| s.eof && !s.backlog());
        let Some(peer) = self.sides[t].as_ref().map(|s| s.peer) else { return };
        if done(&self.sides[t]) && done(&self.sides[peer]) {
            self.close(t);
        }
    }

    /// Closes both sides of `t`'s pair (closing an fd takes it out of the epoll set).
    fn close(&mut self, t: usize) {
        let Some(side) = self.sides[t].take() else { return };
        self.free.push(t);
        if self.sides[side.peer].take().is_some() {
            self.free.push(side.peer);
        }
    }
}

/// Splices what `side`'s pipe holds into its socket, as much as the socket takes now.
fn drain_pipe(side: &mut Side) -> io::Result<()> {
    let Some(pipe) = side.pipe.as_ref() else { return Ok(()) };
    while side.piped > 0 {
        match splice(&pipe.read, &side.stream, side.piped) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => side.piped -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `--http`: peeks at the next response's head and returns how many bytes the response has,
/// head and `Content-Length` body (`usize::MAX` without one: the body ends with the
/// connection); `None` while the head is incomplete (or at EOF, when nothing was peeked).
fn next_response(s: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let (n, _) =
        rustix::net::recv(s, &mut buf[..HEAD_PEEK], rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT)?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    let head = match res.parse(&buf[..n]) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) if n < HEAD_PEEK => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(invalid(format!("response head over {HEAD_PEEK} bytes"))),
        Err(e) => return Err(invalid(format!("response head: {e}"))),
    };
    let length = res.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length"));
    let body = match length.map(|h| std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok())) {
        Some(Some(len)) => len,
        Some(None) => return Err(invalid("response Content-Length is not a number".into())),
        None => return Ok(Some(usize::MAX)),
    };
    head.checked_add(body).map(Some).ok_or_else(|| invalid(format!("response Content-Length {body} is too large")))
}

/// `--http`: parses a request head read from the client (it is forwarded as it came).
fn request_head(bytes: &[u8]) -> Result<(), httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    httparse::Request::new(&mut headers).parse(bytes).map(drop)
}

/// Writes as much of `bytes` as the socket takes now (0 when it takes nothing).
fn write_some(s: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match s.write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener as StdListener};
    use std::sync::Arc;

    /// An upstream that echoes every byte back; returns its address.
    fn echo_upstream() -> SocketAddr {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in l.incoming().take(8) {
                let Ok(mut c) = conn else { continue };
                std::thread::spawn(move || {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut r = c.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut c);
                    let _ = c.shutdown(Shutdown::Write);
                });
            }
        });
        addr
    }

    fn start_forwarder(
        upstream: SocketAddr,
        mode: Mode,
    ) -> (SocketAddr, Arc<AtomicBool>, std::thread::JoinHandle<Result<()>>) {
        let l = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        (addr, stop, std::thread::spawn(move || serve(l, upstream, mode, &s)))
    }

    #[test]
    fn bytes_go_both_ways_with_backpressure_and_the_pair_closes_after_the_last_byte() {
        both_ways(Mode::Copy);
    }

    #[test]
    fn spliced_bytes_go_both_ways_with_backpressure_and_the_pair_closes_after_the_last_byte() {
        both_ways(Mode::Splice);
    }

    fn both_ways(mode: Mode) {
        let (addr, stop, handle) = start_forwarder(echo_upstream(), mode);
        // Small messages, one at a time (a keep-alive exchange).
        let mut c = StdStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for i in 0..50u32 {
            let msg = format!("request {i}\n");
            c.write_all(msg.as_bytes()).unwrap();
            let mut back = vec![0; msg.len()];
            c.read_exact(&mut back).unwrap();
            assert_eq!(back, msg.as_bytes());
        }
        // 8 MiB written by one thread while another reads: more than the sockets buffer, so
        // the forwarder has to stop reading one side and resume it after a flush.
        let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let mut w = c.try_clone().unwrap();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap(); // ends: upstream saw EOF, echoed all, closed
        writer.join().unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "bytes came back changed or reordered");
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap().unwrap();
    }

    #[test]
    fn an_upstream_that_refuses_drops_the_client_and_the_forwarder_goes_on() {
        // A port nothing listens on: bind, read the port, close.
        let dead = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (addr, stop, handle) = start_forwarder(dead, Mode::Http);
        for _ in 0..3 {
            let mut c = StdStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut b = [0; 1];
            assert_eq!(c.read(&mut b).unwrap_or(0), 0, "the client is closed, not served");
        }
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap().unwrap();
    }

    /// An HTTP/1.1 upstream answering each request on a connection with the next of `bodies`
    /// (a `Content-Length` response, its head and body written apart and the head in two
    /// pieces, so the forwarder sees partial heads), then one without a length that ends with
    /// the connection.
    fn http_upstream(bodies: Vec<Vec<u8>>) -> SocketAddr {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let Ok((mut c, _)) = l.accept() else { return };
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.set_nodelay(true).unwrap();
            let mut req = Vec::new();
            let mut next_request = |c: &mut StdStream| loop {
                if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    req.drain(..end + 4);
                    return true;
                }
                let mut b = [0; 512];
                match c.read(&mut b) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            };
            for body in &bodies {
                assert!(next_request(&mut c));
                let head = format!("HTTP/1.1 200 OK\r\nServer: test\r\nContent-Length: {}\r\n\r\n", body.len());
                let (a, b) = head.as_bytes().split_at(10);
                c.write_all(a).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                c.write_all(b).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                c.write_all(body).unwrap();
            }
            assert!(next_request(&mut c));
            c.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end").unwrap();
        });
        addr
    }

    #[test]
    fn http_responses_are_spliced_one_at_a_time_by_their_length() {
        let bodies: Vec<Vec<u8>> =
            [16 * 1024, 0, 12, 200 * 1024].iter().map(|&len| (0..len).map(|i| (i % 251) as u8).collect()).collect();
        let (addr, stop, handle) = start_forwarder(http_upstream(bodies.clone()), Mode::Http);
        let mut c = StdStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let read_response = |c: &mut StdStream| {
            let mut got = Vec::new();
            let mut b = [0; 1];
            while !got.ends_with(b"\r\n\r\n") {
                assert_eq!(c.read(&mut b).unwrap(), 1, "response head cut short: {got:?}");
                got.push(b[0]);
            }
            got
        };
        for body in &bodies {
            c.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let head = read_response(&mut c);
            let len = format!("Content-Length: {}\r\n", body.len());
            assert!(head.windows(len.len()).any(|w| w == len.as_bytes()), "{head:?}");
            let mut got = vec![0; body.len()];
            c.read_exact(&mut got).unwrap();
            assert!(&got == body, "a body of {} bytes came back changed", body.len());
        }
        // A body without a length runs to the end of the connection.
        c.write_all(b"GET /last HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        read_response(&mut c);
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"to the end");
        // Bytes that are not an HTTP request close the client rather than reach the upstream.
        let mut bad = StdStream::connect(addr).unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        bad.write_all(b"\x00\x01 not http\r\n\r\n").unwrap();
        assert_eq!(bad.read(&mut [0; 16]).unwrap_or(0), 0, "closed without an answer");
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap().unwrap();
    }

    #[test]
    fn a_response_that_is_not_http_closes_the_pair_unforwarded() {
        let l = StdListener::bind("127.0.0.1:0").unwrap();
        let upstream = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let Ok((mut c, _)) = l.accept() else { return };
            let mut b = [0; 512];
            let _ = c.read(&mut b);
            let _ = c.write_all(b"garbage, no status line\r\n\r\n");
            std::thread::sleep(Duration::from_secs(2)); // the forwarder, not an EOF, must close
        });
        let (addr, stop, handle) = start_forwarder(upstream, Mode::Http);
        let mut c = StdStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert!(got.is_empty(), "forwarded {got:?}");
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap().unwrap();
    }

    #[test]
    fn options_are_checked() {
        assert!(forward(&["--listen".into()]).unwrap_err().to_string().contains("needs an address"));
        assert!(forward(&["--listen".into(), "nowhere".into()]).unwrap_err().to_string().contains("not an IP:port"));
        assert!(forward(&["--port".into()]).unwrap_err().to_string().contains("unknown forward option"));
        assert!(forward(&[]).unwrap_err().to_string().contains("needs --listen"));
        assert!(forward(&["--splice".into()]).unwrap_err().to_string().contains("needs --listen"));
        let http_alone = ["--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:2", "--http"].map(String::from);
        assert!(forward(&http_alone).unwrap_err().to_string().contains("give --splice too"));
    }
}
