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

/// `cargo xtask forward` entry point: runs until killed.
pub fn forward(args: &[String]) -> Result<()> {
    let (mut listen, mut upstream, mut splice) = (None, None, false);
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
            other => bail!("unknown forward option {other:?} (use --listen ADDR --upstream ADDR [--splice])"),
        }
    }
    let (Some(listen), Some(upstream)) = (listen, upstream) else {
        bail!("forward needs --listen ADDR and --upstream ADDR");
    };
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    serve(listener, upstream, splice, &AtomicBool::new(false))
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
    splice: bool,
    sides: Vec<Option<Side>>,
    free: Vec<usize>,
    buf: Box<[u8]>,
    upstream: SocketAddr,
}

/// Forwards every connection `listener` accepts to `upstream` (the upstream's bytes spliced
/// with `splice`) until `stop` is set (checked every 100 ms).
pub fn serve(mut listener: TcpListener, upstream: SocketAddr, splice: bool, stop: &AtomicBool) -> Result<()> {
    let poll = Poll::new().context("creating the epoll instance")?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let buf = vec![0; READ_BUF].into();
    let mut f = Forwarder { poll, splice, sides: Vec::new(), free: Vec::new(), buf, upstream };
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
        let pipe = if self.splice { Some(Pipe::new().context("creating a splice pipe")?) } else { None };
        let (c, u) = (self.slot(), self.slot());
        let both = Interest::READABLE | Interest::WRITABLE;
        let registered = self
            .poll
            .registry()
            .register(&mut client, Token(c), both)
            .and_then(|()| self.poll.registry().register(&mut up, Token(u), both));
        let side = |stream, peer, pipe| {
            let pending = Vec::new();
            Some(Side { stream, peer, pending, pipe, piped: 0, eof: false, hup: false, shut_after_flush: false })
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
        loop {
            let Some(side) = self.sides[t].as_ref() else { return };
            let (peer, hup) = (side.peer, side.hup);
            if side.eof || self.sides[peer].as_ref().is_some_and(Side::backlog) {
                return; // ended, or resumed by `flush` once the peer has taken its backlog
            }
            let pipe_in = self.sides[peer].as_ref().and_then(|p| p.pipe.as_ref());
            let spliced = pipe_in.is_some();
            let got = match pipe_in {
                Some(pipe) => splice(&side.stream, &pipe.write, READ_BUF),
                None => (&side.stream).read(&mut self.buf),
            };
            let n = match got {
                Ok(0) => return self.end(t),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(t),
            };
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
            if n < READ_BUF && !hup {
                return; // a short read drained the socket; the next bytes raise a new edge
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
        splice: bool,
    ) -> (SocketAddr, Arc<AtomicBool>, std::thread::JoinHandle<Result<()>>) {
        let l = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        (addr, stop, std::thread::spawn(move || serve(l, upstream, splice, &s)))
    }

    #[test]
    fn bytes_go_both_ways_with_backpressure_and_the_pair_closes_after_the_last_byte() {
        both_ways(false);
    }

    #[test]
    fn spliced_bytes_go_both_ways_with_backpressure_and_the_pair_closes_after_the_last_byte() {
        both_ways(true);
    }

    fn both_ways(splice: bool) {
        let (addr, stop, handle) = start_forwarder(echo_upstream(), splice);
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
        let (addr, stop, handle) = start_forwarder(dead, true);
        for _ in 0..3 {
            let mut c = StdStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut b = [0; 1];
            assert_eq!(c.read(&mut b).unwrap_or(0), 0, "the client is closed, not served");
        }
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
    }
}
