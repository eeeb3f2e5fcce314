//! Owned-buffer I/O helpers over monoio's rent-style traits: a read buffer that keeps unconsumed
//! bytes (pipelined requests, body bytes read with the head) and writes straight out of it, so a
//! body chunk is copied from kernel to user space and back once, never into a second buffer.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// Capacity a connection's buffers start with. Small buffers of many connections share pages,
/// which is what keeps resident memory per idle or small-message connection low (bench: c1000).
pub(super) const INITIAL_CAPACITY: usize = 2048;

/// Free space below which a read first compacts or grows the buffer.
const MIN_FREE: usize = 512;

/// A growable read buffer: `buf[pos..]` is read but not yet consumed.
///
/// It starts at [`INITIAL_CAPACITY`] and grows to `max` as soon as one read fills all the free
/// space (a large message is arriving), so a connection that carries large bodies reads them in
/// `max`-sized reads from then on, while one that carries small messages stays small.
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
    pos: usize,
    max: usize,
    grow_next: bool,
}

impl ReadBuf {
    #[cfg(test)]
    pub(crate) fn new(max: usize) -> Self {
        ReadBuf { buf: Vec::with_capacity(INITIAL_CAPACITY.min(max)), pos: 0, max, grow_next: false }
    }

    /// A buffer that allocates nothing until its first read.
    pub(crate) fn unallocated(max: usize) -> Self {
        ReadBuf { buf: Vec::new(), pos: 0, max, grow_next: false }
    }

    /// A buffer around `buf` (cleared; an empty `Vec` allocates on the first read).
    pub(crate) fn from_vec(mut buf: Vec<u8>, max: usize) -> Self {
        buf.clear();
        ReadBuf { buf, pos: 0, max, grow_next: false }
    }

    /// Hands out the allocation of an empty buffer (for a pool), leaving it unallocated; an
    /// empty `Vec` when it holds bytes or has none.
    pub(crate) fn take_allocation(&mut self) -> Vec<u8> {
        if !self.is_empty() {
            return Vec::new();
        }
        self.pos = 0;
        self.grow_next = false;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf
    }

    /// The size a full read grows the buffer to.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Sets the size a full read grows the buffer to (config may change on reload).
    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    #[inline]
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes allocated (0: unallocated).
    #[inline]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    fn compact(&mut self) {
        if self.pos > 0 {
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(self.buf.len() - self.pos);
            self.pos = 0;
        }
    }

    /// Makes room for at least `min_free` more bytes (a head bigger than the buffer).
    pub(crate) fn reserve(&mut self, min_free: usize) {
        if self.buf.capacity() - self.buf.len() >= min_free {
            return;
        }
        self.compact();
        if self.buf.capacity() - self.buf.len() < min_free {
            self.buf.reserve(min_free);
        }
    }

    /// Makes room for the rest of a partial message head of at most `max_head` bytes: up to
    /// 4 KiB more than is buffered. Nothing while no partial head is buffered: the first read of
    /// a head uses the buffer as it is ([`INITIAL_CAPACITY`] when fresh), and only a head that
    /// did not fit asks for more. (Reserving before the first read made every upstream buffer
    /// 4 KiB: under c1000, heaptrack put 4.1 MB of the peak heap on it, half of the proxy's
    /// memory per connection.)
    pub(crate) fn reserve_for_head(&mut self, max_head: usize) {
        if !self.is_empty() {
            self.reserve(max_head.min(self.len() + 4096));
        }
    }

    /// Reads once into the free space. `Ok(0)` is EOF.
    pub(crate) async fn fill<R: AsyncReadRent>(&mut self, r: &mut R) -> io::Result<usize> {
        let (buf, len, free, pos) = self.take_for_read();
        let (res, slice) = r.read(buf.slice_mut(len..)).await;
        self.put_back(slice.into_inner(), res, free, pos)
    }

    /// [`fill`](Self::fill) from a socket. `expect_empty` says the read will almost surely find
    /// the socket empty: the response to a request just written upstream, or a client's next
    /// request after its response (a client sends it once it has the response). On io_uring
    /// the receive then arms the socket's poll before its first attempt instead of failing one
    /// receive first (`IORING_RECVSEND_POLL_FIRST`); the result is the same either way.
    ///
    /// Measured (small): 3.8 -> 2.0 socket receives per request, CPU per request 0.99x
    /// (`vendor/monoio/PORTCULLIS.md`).
    pub(crate) async fn fill_socket(&mut self, r: &mut super::stream::Stream, expect_empty: bool) -> io::Result<usize> {
        let (buf, len, free, pos) = self.take_for_read();
        let (res, slice) = r.read_poll_first(buf.slice_mut(len..), expect_empty).await;
        self.put_back(slice.into_inner(), res, free, pos)
    }

    /// [`fill_socket`](Self::fill_socket) reading at most `cap` bytes (`cap` > 0).
    pub(crate) async fn fill_socket_at_most(
        &mut self,
        r: &mut super::stream::Stream,
        expect_empty: bool,
        cap: usize,
    ) -> io::Result<usize> {
        self.read_at_most(r, expect_empty, cap, false).await
    }

    /// [`fill_socket_at_most`](Self::fill_socket_at_most) with `MSG_PEEK`: the bytes land in the
    /// buffer but stay queued in the socket, for splice(2) to move on or
    /// [`unqueue_peeked`](Self::unqueue_peeked) to take out.
    pub(crate) async fn peek_socket_at_most(
        &mut self,
        r: &mut super::stream::Stream,
        expect_empty: bool,
        cap: usize,
    ) -> io::Result<usize> {
        self.read_at_most(r, expect_empty, cap, true).await
    }

    async fn read_at_most(
        &mut self,
        r: &mut super::stream::Stream,
        expect_empty: bool,
        cap: usize,
        peek: bool,
    ) -> io::Result<usize> {
        let (buf, len, free, pos) = self.take_for_read();
        let free = free.min(cap);
        let slice = buf.slice_mut(len..len + free);
        let (res, slice) = if peek {
            r.peek_poll_first(slice, expect_empty).await
        } else {
            r.read_poll_first(slice, expect_empty).await
        };
        self.put_back(slice.into_inner(), res, free, pos)
    }

    /// Takes the last `n` bytes of the buffer, read with
    /// [`peek_socket_at_most`](Self::peek_socket_at_most), out of `fd`'s receive queue, so the
    /// buffer and the socket agree as after a plain read. They are still queued, so this never
    /// waits. TCP's `MSG_TRUNC` drops them in the kernel without a copy; they are received over
    /// the buffer's own copy of them all the same, so a kernel that copied would write the same
    /// bytes.
    pub(crate) fn unqueue_peeked(&mut self, from: &super::stream::Stream, n: usize) -> io::Result<()> {
        let fd = from.plain().ok_or(io::ErrorKind::Unsupported)?.as_raw_fd();
        let end = self.buf.len();
        let mut at = end.checked_sub(n).filter(|&a| a >= self.pos).ok_or(io::ErrorKind::InvalidInput)?;
        while at < end {
            // SAFETY: `buf[at..end]` is initialised memory this buffer owns, borrowed mutably
            // for the duration of the call.
            let r = unsafe {
                libc::recv(fd, self.buf[at..].as_mut_ptr().cast(), end - at, libc::MSG_TRUNC | libc::MSG_DONTWAIT)
            };
            match r {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                k if k > 0 => at += (k as usize).min(end - at),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes room for a read and lends the buffer out: (buffer, filled length, free space,
    /// consumed prefix). While it is lent the `ReadBuf` is empty, so a read that never returns
    /// (timed out, its connection dropped) leaves a consistent empty buffer behind, not a
    /// consumed prefix longer than its data.
    fn take_for_read(&mut self) -> (Vec<u8>, usize, usize, usize) {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(INITIAL_CAPACITY.min(self.max));
        } else if self.buf.capacity() - self.buf.len() < MIN_FREE || self.grow_next {
            self.compact();
            let target = self.max.max(self.buf.len() + MIN_FREE);
            if self.buf.capacity() < target {
                self.buf.reserve_exact(target - self.buf.len());
            }
            self.grow_next = false;
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let free = buf.capacity() - len;
        (buf, len, free, std::mem::take(&mut self.pos))
    }

    /// Takes the buffer back after a read; a read that filled all the free space makes the next
    /// one grow the buffer to `max`.
    fn put_back(&mut self, buf: Vec<u8>, res: io::Result<usize>, free: usize, pos: usize) -> io::Result<usize> {
        self.buf = buf;
        self.pos = pos;
        if matches!(res, Ok(n) if n == free) {
            self.grow_next = true;
        }
        res
    }

    /// Writes the first `n` unconsumed bytes to `w` and consumes them.
    pub(crate) async fn write_out<W: Wire>(&mut self, w: &mut W, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.write_prefixed(w, &[], n).await
    }

    /// Whether `prefix_len` bytes fit in the consumed space just before the unconsumed bytes,
    /// where [`write_prefixed`](Self::write_prefixed) puts them.
    #[inline]
    /// Consumed bytes in front of the data: room for a prefix written in place.
    pub(crate) fn consumed(&self) -> usize {
        self.pos
    }

    pub(crate) fn fits_prefix(&self, prefix_len: usize) -> bool {
        prefix_len <= self.pos
    }

    /// Writes `prefix` followed by the first `n` unconsumed bytes in one write, and consumes
    /// them. The prefix is copied into the consumed bytes in front of the data (e.g. a rewritten
    /// response head over the upstream head it replaces), so a body that arrived with its head
    /// is not copied again in user space. The caller checks [`fits_prefix`](Self::fits_prefix).
    ///
    /// Measured (perf, `16k` scenario): copying a 16 KiB body behind the head in a second
    /// buffer was 4.5 % of the proxy's cycles.
    pub(crate) async fn write_prefixed<W: Wire>(&mut self, w: &mut W, prefix: &[u8], n: usize) -> io::Result<()> {
        debug_assert!(n <= self.len() && self.fits_prefix(prefix.len()));
        let start = self.pos - prefix.len();
        self.buf[start..self.pos].copy_from_slice(prefix);
        write_span(w, &mut self.buf, start..self.pos + n).await?;
        self.consume(n);
        Ok(())
    }

    /// Puts `prefix` in front of the first `n` unconsumed bytes, as
    /// [`write_prefixed`](Self::write_prefixed) does, and returns the whole span without
    /// writing or consuming anything. The caller checks [`fits_prefix`](Self::fits_prefix).
    pub(crate) fn prefixed(&mut self, prefix: &[u8], n: usize) -> &[u8] {
        debug_assert!(n <= self.len() && self.fits_prefix(prefix.len()));
        let start = self.pos - prefix.len();
        self.buf[start..self.pos].copy_from_slice(prefix);
        &self.buf[start..self.pos + n]
    }

    /// Writes an arbitrary sub-range of the unconsumed bytes without consuming anything.
    pub(crate) async fn write_range<W: Wire>(&mut self, w: &mut W, range: std::ops::Range<usize>) -> io::Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        write_span(w, &mut self.buf, self.pos + range.start..self.pos + range.end).await
    }
}

/// Writes a whole owned `Vec` and hands it back cleared, ready for reuse.
pub(super) async fn write_vec<W: Wire>(w: &mut W, v: &mut Vec<u8>) -> io::Result<()> {
    let len = v.len();
    let res = write_span(w, v, 0..len).await;
    v.clear();
    res
}

/// Writes `buf[span]` whole. Every write of the data plane goes through here.
pub(super) fn write_span<'a, W: Wire>(
    w: &'a mut W,
    buf: &'a mut Vec<u8>,
    span: std::ops::Range<usize>,
) -> impl std::future::Future<Output = io::Result<()>> + 'a {
    w.write_span(buf, span)
}

/// A connection the data plane writes to (`stream::Stream`, or a plain socket).
pub(crate) trait Wire {
    /// Writes `buf[span]` whole, lending `buf` to the runtime when it must wait (it is given
    /// back either way).
    fn write_span(
        &mut self,
        buf: &mut Vec<u8>,
        span: std::ops::Range<usize>,
    ) -> impl std::future::Future<Output = io::Result<()>>;
}

impl Wire for TcpStream {
    /// A direct [`send_now`] first, the runtime's write (which borrows the `Vec` and gives it
    /// back) for whatever the socket did not take.
    async fn write_span(&mut self, buf: &mut Vec<u8>, span: std::ops::Range<usize>) -> io::Result<()> {
        let sent = send_now(self.as_raw_fd(), &buf[span.clone()]);
        if sent == span.len() {
            return Ok(());
        }
        let owned = std::mem::take(buf);
        let (res, slice) = self.write_all(owned.slice(span.start + sent..span.end)).await;
        *buf = slice.into_inner();
        res.map(|_| ())
    }
}

thread_local! {
    /// Whether [`send_now`] sends on this thread: a worker-wide mode (one worker per thread),
    /// switched off while the worker is busy (`conn::RELEASE_IDLE_ABOVE` open connections).
    static DIRECT_SEND: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Turns [`send_now`] on or off for the calling thread's worker.
pub(super) fn set_direct_send(on: bool) {
    DIRECT_SEND.with(|d| d.set(on));
}

/// Sends as much of `data` as the socket takes right now with one non-blocking send(2) and
/// returns how many it sent; 0 on any error (the runtime's write that follows reports it).
///
/// Every write tries this first and hands only what is left to the runtime. A runtime write
/// suspends the connection's task until its completion is reaped (io_uring) or the socket is
/// polled writable (epoll) and then polls the task again; a direct send that takes everything,
/// as it almost always does for a request or a response head, spares that round. Measured
/// (alternating 4 s wrk -c32 runs, same binary with and without, us CPU per request, medians):
/// small 8.07 vs 8.16 on io_uring and 8.30 vs 8.45 on epoll, 16k 10.53 vs 10.62.
///
/// Not on a busy worker ([`set_direct_send`]; returns 0 then): with 1,000 connections the
/// runtime's writes, batched into one `io_uring_enter` per loop, cost less. First measured at
/// 12.3 us/request against 16.8 with direct sends, much of it upstream reconnects (the idle pool
/// ran dry more often); re-measured once the pool kept a burst's connections (connects equal,
/// ~1,000 in 5 s either way), 4 alternating 5 s c1000 runs: 10.99 vs 12.07 us (medians), so the
/// batching alone still pays.
pub(super) fn send_now(fd: RawFd, data: &[u8]) -> usize {
    if data.is_empty() || !DIRECT_SEND.with(|d| d.get()) {
        return 0;
    }
    // SAFETY: `data` is a live slice for the duration of the call; `fd` is the caller's open socket.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n > 0 {
        n as usize
    } else {
        0
    }
}

// `IoBuf` is used through the `slice` method above.
#[allow(unused_imports)]
use IoBuf as _;

/// Buffers of one exchange (pooled per worker, see `Worker::take_exchange_bufs`).
pub(crate) struct ExchangeBufs {
    /// Upstream bytes read but not yet consumed.
    pub upstream: ReadBuf,
    /// Upstream request head, kept until the response head arrives so a stale pooled
    /// connection can be retried.
    pub req_head: Vec<u8>,
    /// Client response head (and small bodies written with it).
    pub out: Vec<u8>,
    /// This exchange's request record while it is being written (empty: not recorded).
    pub record: Vec<u8>,
    /// Where the request head's headers sit in the client buffer (parsed once; see `phase`).
    pub headers: Vec<portcullis_http1::HeaderSpan>,
    /// The request's canonical path when it differs from the one sent (see `phase::route`).
    pub path: String,
    /// How this exchange's error answer is written (set when its head is parsed).
    pub errors: super::error::ErrorStyle,
    /// The routed API's `error_overrides`, for an upstream failure (`None`: none).
    pub overrides: Option<std::sync::Arc<crate::config::ErrorOverrides>>,
    /// A response-cache miss whose response may be kept (see `cache`).
    pub cache: Option<Box<super::cache::Fill>>,
    /// API visibility: this exchange's sampled frame while it is written (empty: not sampled;
    /// `visibility::sample`).
    pub sample: Vec<u8>,
}

impl ExchangeBufs {
    pub(super) fn unallocated(max: usize) -> Self {
        ExchangeBufs {
            upstream: ReadBuf::unallocated(max),
            req_head: Vec::new(),
            out: Vec::new(),
            record: Vec::new(),
            headers: Vec::new(),
            path: String::new(),
            errors: super::error::ErrorStyle::default(),
            overrides: None,
            cache: None,
            sample: Vec::new(),
        }
    }

    /// Holds no allocation (not worth pooling).
    pub(super) fn is_unallocated(&self) -> bool {
        self.upstream.capacity() == 0
            && self.req_head.capacity() == 0
            && self.out.capacity() == 0
            && self.record.capacity() == 0
            && self.headers.capacity() == 0
            && self.path.capacity() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::stream::Stream;
    use super::*;

    /// Runs `f` on a monoio epoll runtime with a connected loopback pair: `f` gets the accepted
    /// stream; the peer (a std socket) receives `peer_writes` one by one, each after a short pause.
    fn with_stream<F, Fut>(peer_writes: Vec<Vec<u8>>, f: F)
    where
        F: FnOnce(Stream) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (stream, writer) = peer_pair(peer_writes);
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async move {
            let stream = monoio::net::TcpStream::from_std(stream).unwrap();
            f(Stream::Plain(stream)).await;
        });
        writer.join().unwrap();
    }

    /// A read dropped before it completes (a body timeout) used to leave the consumed prefix of
    /// the lent-out buffer behind: `len()` underflowed, which panicked the worker thread when the
    /// connection gave its buffer back.
    #[test]
    fn a_read_cut_off_by_a_timeout_leaves_a_consistent_buffer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // A peer that stays connected and silent.
        let _peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async move {
            let mut s = monoio::net::TcpStream::from_std(stream).unwrap();
            let mut rb = ReadBuf::new(4096);
            rb.buf = b"headbody".to_vec();
            rb.consume(4);
            assert_eq!(rb.data(), b"body");
            let t = monoio::time::timeout(std::time::Duration::from_millis(20), rb.fill(&mut s)).await;
            assert!(t.is_err(), "the peer sends nothing: the read times out");
            assert!(rb.is_empty());
            let _ = rb.take_allocation();
        });
    }

    /// [`with_stream`] on an io_uring runtime set up as the workers' (`None` where the kernel
    /// has no io_uring; in CI that is a failure, elsewhere the caller skips with a message).
    fn with_stream_uring<F, Fut>(peer_writes: Vec<Vec<u8>>, f: F) -> Option<()>
    where
        F: FnOnce(Stream) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut rt = uring_test_runtime()?;
        let (stream, writer) = peer_pair(peer_writes);
        rt.block_on(async move {
            let stream = monoio::net::TcpStream::from_std(stream).unwrap();
            f(Stream::Plain(stream)).await;
        });
        writer.join().unwrap();
        Some(())
    }

    /// An io_uring runtime set up as the workers' (`None` where the kernel has none; in CI that
    /// is a failure, elsewhere the caller skips with a message).
    fn uring_test_runtime() -> Option<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
        match super::super::accept::uring_runtime(true) {
            Ok(rt) => Some(rt),
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: no io_uring with DEFER_TASKRUN on this kernel ({e})");
                None
            }
            Err(e) => panic!("CI must run the io_uring tests, but the ring could not be set up: {e}"),
        }
    }

    /// An accepted non-blocking loopback stream whose peer (a std socket on its own thread)
    /// writes `peer_writes` one by one, each after a short pause, then closes.
    fn peer_pair(peer_writes: Vec<Vec<u8>>) -> (std::net::TcpStream, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            for w in peer_writes {
                s.write_all(&w).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        let (stream, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        (stream, writer)
    }

    /// Every connection task holds a timeout; the vendored monoio's `Sleep` is not padded to
    /// cache lines (it was 640 bytes at 128-byte alignment; `vendor/monoio/PORTCULLIS.md`).
    #[test]
    fn timers_are_not_cache_padded() {
        assert!(std::mem::size_of::<monoio::time::Sleep>() <= 160, "{}", std::mem::size_of::<monoio::time::Sleep>());
        assert!(std::mem::align_of::<monoio::time::Sleep>() <= 16);
    }

    /// A receive with poll first (io_uring) sees data queued before it was submitted, data that
    /// arrives while it waits, and the peer's FIN; the same calls on epoll ignore the hint.
    #[test]
    fn poll_first_reads_see_queued_data_later_data_and_eof() {
        async fn check(mut s: Stream) {
            // Let the first write arrive before the first read is submitted.
            monoio::time::sleep(std::time::Duration::from_millis(10)).await;
            assert_eq!(read_to_eof(&mut s, Some(true), "poll-first read never completed").await, b"queued-then-later");
        }
        let writes = || vec![b"queued-".to_vec(), b"then-".to_vec(), b"later".to_vec()];
        with_stream(writes(), check);
        with_stream_uring(writes(), check);
    }

    #[test]
    fn peeked_bytes_stay_queued_until_unqueued() {
        async fn check(mut s: Stream) {
            let five = std::time::Duration::from_secs(5);
            let mut b = ReadBuf::new(4096);
            // The peek waits for the first write, takes at most 4 bytes and leaves them queued.
            let n = monoio::time::timeout(five, b.peek_socket_at_most(&mut s, true, 4)).await.unwrap().unwrap();
            assert_eq!(&b.data()[..n], &b"head-body"[..n]);
            let mut again = ReadBuf::new(4096);
            monoio::time::timeout(five, again.fill_socket_at_most(&mut s, false, n)).await.unwrap().unwrap();
            assert_eq!(again.data(), b.data(), "a peek consumed what it read");
            // Now a peek of what is queued, taken out without a copy: the next read sees the rest.
            let mut p = ReadBuf::new(4096);
            let k = monoio::time::timeout(five, p.peek_socket_at_most(&mut s, false, 3)).await.unwrap().unwrap();
            assert!(k > 0);
            let peeked = p.data().to_vec();
            assert!(p.unqueue_peeked(&s, k + 1).is_err(), "more than was peeked");
            p.unqueue_peeked(&s, k).unwrap();
            assert_eq!(p.data(), &peeked[..], "the buffer keeps the bytes");
            let mut rest = read_to_eof(&mut s, Some(false), "read after unqueue never completed").await;
            let mut all = again.data().to_vec();
            all.extend_from_slice(&peeked);
            all.append(&mut rest);
            assert_eq!(all, b"head-body-tail", "bytes lost or seen twice");
        }
        let writes = || vec![b"head-body".to_vec(), b"-tail".to_vec()];
        with_stream(writes(), check);
        with_stream_uring(writes(), check);
    }

    /// A stream dropped on io_uring is closed by one submission. monoio followed that close with
    /// an `AsyncCancel` of it (the kernel searching its io-wq and poll tables for a close that
    /// cannot be cancelled), one per closed connection; the vendored copy no longer does
    /// (`vendor/monoio/PORTCULLIS.md`). Counted from the ring's `SqTail` in `/proc/self/fdinfo`.
    #[test]
    fn a_dropped_stream_is_closed_by_one_submission_without_a_cancel() {
        let Some(mut rt) = uring_test_runtime() else { return };
        let (closed_local, mut closed_peer) = connected_pair();
        let (probe_local, mut probe_peer) = connected_pair();
        std::io::Write::write_all(&mut probe_peer, b"xy").unwrap();
        rt.block_on(async move {
            let ring = monoio::utils::current_uring_fd().expect("an io_uring runtime has a ring");
            let closed = monoio::net::TcpStream::from_std(closed_local).unwrap();
            let mut probe = monoio::net::TcpStream::from_std(probe_local).unwrap();
            // A first read parks the runtime once, which arms its wake-up eventfd (a submission
            // of its own that is not made again until another thread wakes the runtime).
            let (r, _) = monoio::io::AsyncReadRent::read(&mut probe, vec![0u8; 1]).await;
            assert_eq!(r.unwrap(), 1);
            let before = submitted(ring);
            drop(closed);
            // Reading the other queued byte makes the runtime enter the ring with the close queued.
            let (r, _) = monoio::io::AsyncReadRent::read(&mut probe, vec![0u8; 1]).await;
            assert_eq!(r.unwrap(), 1);
            let after = submitted(ring);
            assert_eq!(after.wrapping_sub(before), 2, "expected the close and the probe's receive, nothing else");
        });
        closed_peer.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let n = std::io::Read::read(&mut closed_peer, &mut [0u8; 1]).expect("the dropped stream was never closed");
        assert_eq!(n, 0, "the peer should see the close");
    }

    /// A connected loopback pair: (non-blocking accepted side, blocking connecting side).
    fn connected_pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (local, _) = listener.accept().unwrap();
        local.set_nonblocking(true).unwrap();
        (local, peer)
    }

    /// Submissions made so far on io_uring `ring` (its `SqTail`; wraps at 2^32).
    fn submitted(ring: RawFd) -> u32 {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{ring}")).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("SqTail:"))
            .unwrap_or_else(|| panic!("no SqTail in the ring's fdinfo: {info}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Reads until EOF, each read given 5 s (`stuck` is the panic message otherwise), through
    /// `fill` (`poll_first` None) or `fill_socket`; returns everything read.
    async fn read_to_eof(s: &mut Stream, poll_first: Option<bool>, stuck: &str) -> Vec<u8> {
        let five = std::time::Duration::from_secs(5);
        let mut b = ReadBuf::new(4096);
        let mut got = Vec::new();
        loop {
            let read = match poll_first {
                None => monoio::time::timeout(five, b.fill(s)).await,
                Some(p) => monoio::time::timeout(five, b.fill_socket(s, p)).await,
            };
            let n = read.unwrap_or_else(|_| panic!("{stuck}")).unwrap();
            if n == 0 {
                return got;
            }
            got.extend_from_slice(b.data());
            b.consume(b.len());
        }
    }

    /// Fills until at least `n` bytes are buffered (the peer's writes may arrive split or merged).
    async fn fill_to(b: &mut ReadBuf, s: &mut Stream, n: usize) {
        while b.len() < n {
            assert!(b.fill(s).await.unwrap() > 0, "peer closed early");
        }
    }

    /// A pooled buffer leaves only once empty, and comes back cleared.
    #[test]
    fn take_allocation_hands_out_only_an_empty_buffer() {
        let mut b = ReadBuf::from_vec(Vec::with_capacity(INITIAL_CAPACITY), 4096);
        b.buf.extend_from_slice(b"unread");
        assert_eq!(b.take_allocation().capacity(), 0, "a buffer holding bytes was handed out");
        assert_eq!(b.data(), b"unread");
        b.consume(6);
        let v = b.take_allocation();
        assert_eq!((v.len(), v.capacity()), (0, INITIAL_CAPACITY));
        assert_eq!(b.capacity(), 0);
        let mut dirty = v;
        dirty.extend_from_slice(b"stale");
        let b = ReadBuf::from_vec(dirty, 4096);
        assert!(b.is_empty() && b.capacity() == INITIAL_CAPACITY);
    }

    /// A head read starts with the buffer at its first size; only a partial head grows it.
    #[test]
    fn head_reads_reserve_only_for_a_partial_head() {
        let mut b = ReadBuf::unallocated(64 * 1024);
        b.reserve_for_head(64 * 1024);
        assert_eq!(b.capacity(), 0, "nothing buffered yet: nothing to make room for");
        let mut b = ReadBuf::from_vec(Vec::with_capacity(INITIAL_CAPACITY), 64 * 1024);
        b.reserve_for_head(64 * 1024);
        assert_eq!(b.capacity(), INITIAL_CAPACITY, "an empty pooled buffer keeps its size");
        b.buf.extend_from_slice(&[b'h'; INITIAL_CAPACITY]);
        b.reserve_for_head(64 * 1024);
        assert!(b.capacity() - b.len() >= 4096, "a partial head gets 4 KiB more room");
        assert!(b.data().iter().all(|&c| c == b'h'), "the partial head is kept");
        let mut b = ReadBuf::from_vec(Vec::with_capacity(INITIAL_CAPACITY), 64 * 1024);
        b.buf.extend_from_slice(&[b'h'; INITIAL_CAPACITY]);
        b.reserve_for_head(3000);
        assert!(b.capacity() - b.len() >= 3000, "room for the rest of the head");
        assert!(b.capacity() < INITIAL_CAPACITY + 4096, "bounded by the head limit");
    }

    #[test]
    fn reads_grow_the_buffer_past_its_first_size_without_losing_bytes() {
        with_stream(vec![b"hello".to_vec(), vec![b'x'; 4000], vec![b'y'; 70_000]], |mut s| async move {
            let mut b = ReadBuf::new(64 * 1024);
            fill_to(&mut b, &mut s, 5).await;
            assert_eq!(&b.data()[..5], b"hello");
            b.consume(5);
            fill_to(&mut b, &mut s, 4000).await;
            assert!(b.data()[..4000].iter().all(|&c| c == b'x'));
            b.consume(4000);
            // More than `max` in flight: the buffer grows to max, is drained, and keeps reading.
            let mut ys = 0;
            while ys < 70_000 {
                fill_to(&mut b, &mut s, 1).await;
                assert!(b.data().iter().all(|&c| c == b'y'));
                ys += b.len();
                b.consume(b.len());
            }
        });
    }

    /// The vendored monoio clears a socket's readiness after a short read (no EAGAIN recv per
    /// request); a peer's later data and its FIN, arriving with the data or after it, must still
    /// wake the reader.
    #[test]
    fn short_reads_then_later_data_and_eof_are_all_seen() {
        with_stream(vec![b"abc".to_vec(), b"def".to_vec()], |mut s| async move {
            assert_eq!(read_to_eof(&mut s, None, "reader not woken after a short read").await, b"abcdef");
        });
    }

    /// Data and FIN harvested in one event: the short read must not hide the hang-up.
    #[test]
    fn a_short_read_with_the_fin_already_harvested_still_sees_eof() {
        with_stream(vec![b"abc".to_vec()], |mut s| async move {
            // Let the peer write and close before the first read.
            monoio::time::sleep(std::time::Duration::from_millis(100)).await;
            let mut b = ReadBuf::new(4096);
            let five = std::time::Duration::from_secs(5);
            assert_eq!(monoio::time::timeout(five, b.fill(&mut s)).await.expect("first read").unwrap(), 3);
            b.consume(3);
            let eof = monoio::time::timeout(five, b.fill(&mut s)).await.expect("EOF not seen after a short read");
            assert_eq!(eof.unwrap(), 0);
        });
    }

    #[test]
    fn write_prefixed_sends_the_prefix_and_the_body_in_place() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let (mut s, _) = listener.accept().unwrap();
            let mut v = Vec::new();
            s.read_to_end(&mut v).unwrap();
            v
        });
        with_stream(vec![b"OLD-HEAD:body-bytes+next".to_vec()], |mut s| async move {
            let mut b = ReadBuf::new(4096);
            fill_to(&mut b, &mut s, 24).await;
            b.consume(9); // the "head"
            assert!(b.fits_prefix(9) && !b.fits_prefix(10));
            let mut out = monoio::net::TcpStream::connect(addr).await.unwrap();
            b.write_prefixed(&mut out, b"new-head|", 10).await.unwrap();
            assert_eq!(b.data(), b"+next", "the body is consumed, what follows it kept");
        });
        assert_eq!(reader.join().unwrap(), b"new-head|body-bytes");
    }

    /// The small head read of `splice`: at most `cap` bytes per read on both drivers, the rest
    /// left in the socket; `prefixed` returns prefix + data without consuming.
    #[test]
    fn capped_reads_leave_the_rest_in_the_socket() {
        async fn check(mut s: Stream) {
            // Let the whole write arrive before the first read.
            monoio::time::sleep(std::time::Duration::from_millis(100)).await;
            let mut b = ReadBuf::new(64 * 1024);
            assert_eq!(b.fill_socket_at_most(&mut s, false, 9).await.unwrap(), 9);
            assert_eq!(b.data(), b"HEAD:body");
            b.consume(5);
            assert_eq!(b.prefixed(b"new:", 4), b"new:body");
            assert_eq!(b.data(), b"body", "prefixed consumes nothing");
            b.consume(4);
            let mut rest = Vec::new();
            while rest.len() < 1000 {
                let n = b.fill_socket(&mut s, false).await.unwrap();
                assert!(n > 0, "EOF after {} bytes", rest.len());
                rest.extend_from_slice(b.data());
                b.consume(n);
            }
            assert_eq!(rest, vec![b'x'; 1000]);
        }
        let mut sent = b"HEAD:body".to_vec();
        sent.extend_from_slice(&[b'x'; 1000]);
        with_stream(vec![sent.clone()], check);
        if with_stream_uring(vec![sent], check).is_none() {
            eprintln!("capped_reads_leave_the_rest_in_the_socket: io_uring half skipped");
        }
    }

    /// A write the socket cannot take at once: the direct send takes what fits without
    /// blocking (also on a blocking socket, as io_uring's are), the runtime writes the rest,
    /// and the peer gets every byte in order.
    #[test]
    fn writes_too_big_for_the_socket_send_part_now_and_the_rest_later() {
        const LEN: usize = 64 << 20;
        fn pattern() -> Vec<u8> {
            (0..LEN).map(|i| (i % 251) as u8).collect()
        }
        async fn check(mut s: Stream) {
            let data = pattern();
            let now = send_now(s.plain().unwrap().as_raw_fd(), &data);
            assert!(now > 0 && now < LEN, "a non-reading peer takes part of 64 MiB at once, not {now}");
            let mut rest = data[now..].to_vec();
            write_vec(&mut s, &mut rest).await.unwrap();
            assert!(rest.is_empty());
            let mut tail = b"tail".to_vec();
            write_vec(&mut s, &mut tail).await.unwrap();
        }
        fn run(uring: bool) -> Option<()> {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let reader = std::thread::spawn(move || {
                use std::io::Read;
                let (mut s, _) = listener.accept().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(200));
                let mut v = Vec::new();
                s.read_to_end(&mut v).unwrap();
                v
            });
            let stream = std::net::TcpStream::connect(addr).unwrap();
            if uring {
                let mut rt = match super::super::accept::uring_runtime(true) {
                    Ok(rt) => rt,
                    Err(e) if std::env::var_os("CI").is_none() => {
                        eprintln!("skipped: no io_uring with DEFER_TASKRUN on this kernel ({e})");
                        drop(stream);
                        let _ = reader.join();
                        return None;
                    }
                    Err(e) => panic!("CI must run the io_uring tests, but the ring could not be set up: {e}"),
                };
                // Blocking, as the io_uring driver's sockets are.
                rt.block_on(
                    async move { check(Stream::Plain(monoio::net::TcpStream::from_std(stream).unwrap())).await },
                );
            } else {
                stream.set_nonblocking(true).unwrap();
                let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
                rt.block_on(
                    async move { check(Stream::Plain(monoio::net::TcpStream::from_std(stream).unwrap())).await },
                );
            }
            let got = reader.join().unwrap();
            let mut want = pattern();
            want.extend_from_slice(b"tail");
            assert!(
                got.len() == want.len() && got == want,
                "peer got {} of {} bytes, or out of order",
                got.len(),
                want.len()
            );
            Some(())
        }
        run(false);
        if run(true).is_none() {
            eprintln!("writes_too_big_for_the_socket_send_part_now_and_the_rest_later: io_uring half skipped");
        }
    }

    #[test]
    fn direct_sends_stop_while_the_worker_is_busy_and_resume_after() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let out = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        set_direct_send(false);
        assert_eq!(send_now(out.as_raw_fd(), b"busy"), 0, "a busy worker leaves writes to the runtime");
        set_direct_send(true);
        assert_eq!(send_now(out.as_raw_fd(), b"idle"), 4);
        drop(out);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut peer, &mut got).unwrap();
        assert_eq!(got, b"idle");
    }

    #[test]
    fn unallocated_buffers_allocate_on_first_read_and_compact() {
        with_stream(vec![b"abcdef".to_vec(), b"ghij".to_vec()], |mut s| async move {
            let mut b = ReadBuf::unallocated(4096);
            fill_to(&mut b, &mut s, 6).await;
            b.consume(4);
            assert_eq!(&b.data()[..2], b"ef");
            b.reserve(10_000);
            assert_eq!(&b.data()[..2], b"ef", "reserve compacts without losing data");
            fill_to(&mut b, &mut s, 6).await;
            assert_eq!(b.data(), b"efghij");
        });
    }
}
