//! The data plane's connections, to clients and to upstreams: plain TCP, or TLS that rustls
//! runs over the TCP socket on the connection's own task (docs/decisions/0031-tls.md).
//!
//! [`Stream`] is what every read and write of an exchange goes through. Its TLS arm is boxed,
//! and so are the futures of its TLS reads and writes, so that a plaintext connection's task
//! keeps its size (decision 0006): TLS costs the connections that use it.
//!
//! What only a plain socket can do stays with [`Stream::plain`]: splice(2) and `MSG_PEEK` move
//! bytes inside the kernel, which over TLS would move ciphertext. Kernel TLS (kTLS: rustls'
//! secrets handed to the socket after the handshake, `TCP_ULP "tls"`) would make a TLS
//! connection a plain socket again for them; it would go in here, as a third arm or as a
//! `Plain` made from a finished handshake.

use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

use std::rc::Rc;

use futures_util::future::Either;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::pki_types::CertificateDer;

use super::io::{send_now, Wire};

/// A client or upstream connection.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

/// Ciphertext read from the socket at a time: one TLS record of the largest size (16 KiB of
/// plaintext and its overhead), as nginx reads.
const TLS_READ: usize = 16 * 1024 + 512;

/// A TLS connection: rustls' state over the TCP socket, with the ciphertext on its way in and out.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    st: TlsState,
    /// Ciphertext read from the socket; `inbuf[in_pos..]` is not yet given to rustls (it takes
    /// records as its plaintext buffer has room).
    inbuf: Vec<u8>,
    in_pos: usize,
    /// Ciphertext rustls wrote, on its way to the socket.
    outbuf: Vec<u8>,
}

/// What of a TLS connection is not I/O: rustls' connection and what it holds for us.
pub(crate) struct TlsState {
    conn: rustls::Connection,
    /// Plaintext rustls holds, ready to read.
    plain: usize,
    /// The peer closed: with `close_notify`, or the socket reached EOF.
    eof: bool,
}

impl Stream {
    /// The TCP socket when no TLS runs over it: for splice(2), peeks and the socket's options.
    pub(crate) fn plain(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(_) => None,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Over TLS, the certificates the peer presented in its handshake (leaf first; empty: none);
    /// `None` on a plain connection.
    pub(crate) fn peer_chain(&self) -> Option<Rc<Vec<CertificateDer<'static>>>> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => Some(Rc::new(t.st.conn.peer_certificates().map(<[_]>::to_vec).unwrap_or_default())),
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.tcp,
        }
    }

    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp().set_nodelay(on)
    }

    /// Reads like `AsyncReadRent::read`; `expect_empty` says the socket is most likely empty
    /// now (see `ReadBuf::fill_socket`). Over TLS, what arrives is decrypted into `buf`.
    ///
    /// Not an `async fn`: the future is the plain socket's own, or the TLS read's boxed, with no
    /// state machine around them, so a plaintext connection's task is as large as before TLS.
    pub(crate) fn read_poll_first<T: IoBufMut>(
        &mut self,
        buf: T,
        expect_empty: bool,
    ) -> impl Future<Output = BufResult<usize, T>> + '_ {
        match self {
            Stream::Plain(s) => Either::Left(s.read_poll_first(buf, expect_empty)),
            Stream::Tls(t) => Either::Right(Box::pin(t.read(buf, expect_empty))),
        }
    }

    /// [`read_poll_first`](Self::read_poll_first) with `MSG_PEEK`: the bytes stay queued in the
    /// socket. Plain sockets only (a peek at ciphertext says nothing); a TLS stream refuses.
    pub(crate) fn peek_poll_first<T: IoBufMut>(
        &mut self,
        buf: T,
        expect_empty: bool,
    ) -> impl Future<Output = BufResult<usize, T>> + '_ {
        match self {
            Stream::Plain(s) => Either::Left(s.peek_poll_first(buf, expect_empty)),
            Stream::Tls(_) => Either::Right(std::future::ready((
                Err(io::Error::new(io::ErrorKind::Unsupported, "no peeking under TLS")),
                buf,
            ))),
        }
    }

    /// Waits until a read would find something (data, EOF or an error) without reading, for an
    /// idle connection that has given its buffer back (a TLS one gives its ciphertext buffers
    /// back too).
    pub(crate) fn readable(&mut self) -> impl Future<Output = io::Result<()>> + '_ {
        match self {
            Stream::Plain(s) => Either::Left(s.readable(false)),
            Stream::Tls(t) => Either::Right(Box::pin(async move {
                if t.st.ready() || t.in_pos < t.inbuf.len() {
                    return Ok(());
                }
                t.release_buffers();
                t.tcp.readable(false).await
            })),
        }
    }

    /// A client connection that just arrived on the TLS listener: its handshake, run on this
    /// connection's task. The caller bounds it in time.
    pub(crate) async fn accept_tls(tcp: TcpStream, config: std::sync::Arc<rustls::ServerConfig>) -> io::Result<Stream> {
        let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        let mut t = Box::new(TlsStream::new(tcp, conn.into()));
        Box::pin(t.handshake()).await?;
        Ok(Stream::Tls(t))
    }

    /// An upstream connection over TLS to `name`: its handshake, bounded in time by the caller.
    pub(crate) async fn connect_tls(
        tcp: TcpStream,
        config: std::sync::Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<Stream> {
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut t = Box::new(TlsStream::new(tcp, conn.into()));
        Box::pin(t.handshake()).await?;
        Ok(Stream::Tls(t))
    }
}

impl Wire for Stream {
    fn write_span(&mut self, buf: &mut Vec<u8>, span: std::ops::Range<usize>) -> impl Future<Output = io::Result<()>> {
        match self {
            Stream::Plain(s) => Either::Left(s.write_span(buf, span)),
            Stream::Tls(t) => Either::Right(Box::pin(t.write_plain(&buf[span]))),
        }
    }
}

impl AsyncReadRent for Stream {
    fn read<T: IoBufMut>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.read_poll_first(buf, false)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.readv(buf).await,
            Stream::Tls(_) => (Err(io::Error::new(io::ErrorKind::Unsupported, "no vectored reads under TLS")), buf),
        }
    }
}

impl AsyncWriteRent for Stream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.write(buf).await,
            Stream::Tls(t) => {
                // SAFETY: `read_ptr` and `bytes_init` describe `buf`'s initialised bytes, borrowed
                // while `buf` is held here.
                let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
                let res = Box::pin(t.write_plain(data)).await.map(|()| data.len());
                (res, buf)
            }
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            Stream::Plain(s) => s.writev(buf).await,
            Stream::Tls(_) => (Err(io::Error::new(io::ErrorKind::Unsupported, "no vectored writes under TLS")), buf),
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush().await,
            Stream::Tls(t) => Box::pin(t.flush()).await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(t) => Box::pin(t.shutdown()).await,
        }
    }
}

impl TlsState {
    /// Decrypted bytes into `buf`, as many as are ready and fit; `Ok(0)` when none are.
    fn take_plain<T: IoBufMut>(&mut self, buf: &mut T) -> io::Result<usize> {
        let n = self.plain.min(buf.bytes_total());
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: `write_ptr..+bytes_total` is `buf`'s writable memory, held exclusively here;
        // the first `n` bytes are zeroed before a slice over them is made, so the slice is
        // initialised (rustls' reader takes a `&mut [u8]`).
        let dst = unsafe {
            std::ptr::write_bytes(buf.write_ptr(), 0, n);
            std::slice::from_raw_parts_mut(buf.write_ptr(), n)
        };
        match self.conn.reader().read(dst) {
            Ok(k) => {
                self.plain -= k;
                // SAFETY: `k <= n` bytes were written above.
                unsafe { buf.set_init(k) };
                Ok(k)
            }
            // Nothing after all, or closed without close_notify: EOF, as for a plain socket.
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::UnexpectedEof) => {
                self.plain = 0;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether a read has something to return without more ciphertext.
    fn ready(&self) -> bool {
        self.plain > 0 || self.eof
    }

    /// Gives rustls the ciphertext `inbuf[*pos..]` until it has plaintext to read or takes no
    /// more; an empty `inbuf` is the socket's EOF.
    fn feed(&mut self, inbuf: &[u8], pos: &mut usize) -> io::Result<()> {
        if inbuf.is_empty() {
            self.eof = true;
            // rustls learns of the EOF (a handshake cut short fails).
            let _ = self.conn.read_tls(&mut &[][..]);
            return self.process();
        }
        while *pos < inbuf.len() {
            let n = self.conn.read_tls(&mut &inbuf[*pos..])?;
            *pos += n;
            self.process()?;
            if self.plain > 0 || n == 0 {
                break;
            }
        }
        Ok(())
    }

    fn process(&mut self) -> io::Result<()> {
        match self.conn.process_new_packets() {
            Ok(state) => {
                self.plain = state.plaintext_bytes_to_read();
                if state.peer_has_closed() {
                    self.eof = true;
                }
                Ok(())
            }
            // rustls queued an alert for the peer; it goes with the next flush, if any.
            Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }

    /// All the ciphertext rustls has to send, appended to `out`.
    fn drain(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(out)?;
        }
        Ok(())
    }
}

/// `buf` emptied for a read of ciphertext (allocated again after an idle release).
fn cipher_buf(mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    if buf.capacity() < TLS_READ {
        buf.reserve_exact(TLS_READ);
    }
    buf
}

/// Sends `out` whole: a direct send first (`io::send_now`), the runtime's write for the rest.
async fn send_cipher<W: AsyncWriteRent>(fd: std::os::fd::RawFd, w: &mut W, out: &mut Vec<u8>) -> io::Result<()> {
    let sent = send_now(fd, out);
    if sent < out.len() {
        let buf = std::mem::take(out);
        let len = buf.len();
        let (res, slice) = w.write_all(buf.slice(sent..len)).await;
        *out = slice.into_inner();
        res?;
    }
    out.clear();
    Ok(())
}

impl TlsStream {
    fn new(tcp: TcpStream, mut conn: rustls::Connection) -> TlsStream {
        // At most this much plaintext waits to be encrypted and sent: a larger write goes out
        // in turns, so a 256 KiB body is never all ciphertext in memory at once.
        conn.set_buffer_limit(Some(64 * 1024));
        TlsStream { tcp, st: TlsState { conn, plain: 0, eof: false }, inbuf: Vec::new(), in_pos: 0, outbuf: Vec::new() }
    }

    async fn handshake(&mut self) -> io::Result<()> {
        while self.st.conn.is_handshaking() {
            self.flush().await?;
            if !self.st.conn.is_handshaking() {
                break;
            }
            if self.st.eof {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.receive(false).await?;
        }
        // The last flight (a TLS 1.2 server's Finished, TLS 1.3 session tickets).
        self.flush().await
    }

    /// Decrypted bytes into `buf`: what rustls holds, else what the next ciphertext brings.
    /// `Ok(0)` at the peer's `close_notify` or the socket's EOF (an HTTP message cut short is
    /// then seen by its framing, as over plain TCP).
    async fn read<T: IoBufMut>(&mut self, mut buf: T, expect_empty: bool) -> BufResult<usize, T> {
        loop {
            if self.st.ready() {
                let res = self.st.take_plain(&mut buf);
                return (res, buf);
            }
            if let Err(e) = self.receive(expect_empty).await {
                return (Err(e), buf);
            }
        }
    }

    /// Gives rustls more ciphertext: what is left of the last read, else a read from the
    /// socket, sending first whatever rustls has to send (a handshake flight, an alert, a key
    /// update's answer).
    async fn receive(&mut self, expect_empty: bool) -> io::Result<()> {
        self.flush().await?;
        if self.in_pos == self.inbuf.len() {
            self.in_pos = 0;
            let buf = cipher_buf(std::mem::take(&mut self.inbuf));
            let (res, buf) = self.tcp.read_poll_first(buf, expect_empty).await;
            self.inbuf = buf;
            res?;
        }
        let fed = self.st.feed(&self.inbuf, &mut self.in_pos);
        if self.st.conn.wants_write() {
            // Best effort for an alert after an error; the error is what the caller sees.
            let flushed = self.flush().await;
            fed?;
            return flushed;
        }
        fed
    }

    /// Encrypts `data` and sends it, in turns of the buffer limit.
    async fn write_plain(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.st.conn.writer().write(data)?;
            data = &data[n..];
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends all the ciphertext rustls has.
    async fn flush(&mut self) -> io::Result<()> {
        while self.st.conn.wants_write() {
            self.st.drain(&mut self.outbuf)?;
            send_cipher(self.tcp.as_raw_fd(), &mut self.tcp, &mut self.outbuf).await?;
        }
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.st.conn.send_close_notify();
        self.flush().await?;
        self.tcp.shutdown().await
    }

    /// Frees the ciphertext buffers of an idle connection (nothing in them is pending).
    fn release_buffers(&mut self) {
        if self.in_pos == self.inbuf.len() {
            self.inbuf = Vec::new();
            self.in_pos = 0;
        }
        self.outbuf = Vec::new();
    }
}

type Shared = std::rc::Rc<std::cell::RefCell<TlsState>>;

impl Drop for TlsStream {
    /// A connection closed by the proxy says so (`close_notify`), so that a client reading a
    /// body delimited by the close knows it has all of it. Best effort: one non-blocking send.
    fn drop(&mut self) {
        if self.st.eof {
            return;
        }
        self.st.conn.send_close_notify();
        let mut out = std::mem::take(&mut self.outbuf);
        out.clear();
        if self.st.drain(&mut out).is_ok() && !out.is_empty() {
            // SAFETY: `out` is a live buffer for the duration of the call; the socket is still open.
            unsafe {
                libc::send(
                    self.tcp.as_raw_fd(),
                    out.as_ptr().cast(),
                    out.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
        }
    }
}

/// The reading half of a tunnelled stream. Under TLS the halves share rustls' state, borrowed
/// only between awaits; what the reading half makes rustls want to send (an alert, a key
/// update's answer) goes out with the writing half's next write.
pub(crate) enum ReadHalf {
    Plain(monoio::net::tcp::TcpOwnedReadHalf),
    Tls { tcp: monoio::net::tcp::TcpOwnedReadHalf, st: Shared, inbuf: Vec<u8>, in_pos: usize },
}

/// The writing half of a tunnelled stream.
pub(crate) enum WriteHalf {
    Plain(monoio::net::tcp::TcpOwnedWriteHalf),
    Tls { tcp: monoio::net::tcp::TcpOwnedWriteHalf, fd: std::os::fd::RawFd, st: Shared, outbuf: Vec<u8> },
}

impl Stream {
    /// Splits the stream for an upgraded connection's tunnel (both directions at once).
    pub(crate) fn into_halves(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Stream::Tls(t) => {
                // The halves take the fields over, and with them the close (`close_notify` on
                // the writing half's shutdown); `TlsStream`'s own drop must not run.
                let t = std::mem::ManuallyDrop::new(*t);
                // SAFETY: each field is read exactly once out of `t`, which is never used or
                // dropped afterwards.
                let (tcp, st, inbuf, in_pos, outbuf) = unsafe {
                    (
                        std::ptr::read(&t.tcp),
                        std::ptr::read(&t.st),
                        std::ptr::read(&t.inbuf),
                        t.in_pos,
                        std::ptr::read(&t.outbuf),
                    )
                };
                let fd = tcp.as_raw_fd();
                let st = std::rc::Rc::new(std::cell::RefCell::new(st));
                let (r, w) = tcp.into_split();
                (ReadHalf::Tls { tcp: r, st: st.clone(), inbuf, in_pos }, WriteHalf::Tls { tcp: w, fd, st, outbuf })
            }
        }
    }
}

impl AsyncReadRent for ReadHalf {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        match self {
            ReadHalf::Plain(r) => r.read(buf).await,
            ReadHalf::Tls { tcp, st, inbuf, in_pos } => loop {
                {
                    let mut st = st.borrow_mut();
                    if st.ready() {
                        let res = st.take_plain(&mut buf);
                        return (res, buf);
                    }
                }
                if *in_pos == inbuf.len() {
                    *in_pos = 0;
                    let (res, b) = tcp.read(cipher_buf(std::mem::take(inbuf))).await;
                    *inbuf = b;
                    if let Err(e) = res {
                        return (Err(e), buf);
                    }
                }
                if let Err(e) = st.borrow_mut().feed(inbuf, in_pos) {
                    return (Err(e), buf);
                }
            },
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ReadHalf::Plain(r) => r.readv(buf).await,
            ReadHalf::Tls { .. } => {
                (Err(io::Error::new(io::ErrorKind::Unsupported, "no vectored reads under TLS")), buf)
            }
        }
    }
}

impl AsyncWriteRent for WriteHalf {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            WriteHalf::Plain(w) => w.write(buf).await,
            WriteHalf::Tls { tcp, fd, st, outbuf } => {
                // SAFETY: `read_ptr` and `bytes_init` describe `buf`'s initialised bytes, borrowed
                // while `buf` is held here.
                let data = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
                let taken = {
                    let mut st = st.borrow_mut();
                    let taken = st.conn.writer().write(data).and_then(|n| st.drain(outbuf).map(|()| n));
                    match taken {
                        Ok(n) => n,
                        Err(e) => return (Err(e), buf),
                    }
                };
                let res = send_cipher(*fd, tcp, outbuf).await.map(|()| taken);
                (res, buf)
            }
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            WriteHalf::Plain(w) => w.writev(buf).await,
            WriteHalf::Tls { .. } => {
                (Err(io::Error::new(io::ErrorKind::Unsupported, "no vectored writes under TLS")), buf)
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Plain(w) => w.flush().await,
            WriteHalf::Tls { tcp, fd, st, outbuf } => {
                st.borrow_mut().drain(outbuf)?;
                send_cipher(*fd, tcp, outbuf).await
            }
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Plain(w) => w.shutdown().await,
            WriteHalf::Tls { tcp, fd, st, outbuf } => {
                {
                    let mut st = st.borrow_mut();
                    st.conn.send_close_notify();
                    st.drain(outbuf)?;
                }
                send_cipher(*fd, tcp, outbuf).await?;
                tcp.shutdown().await
            }
        }
    }
}
