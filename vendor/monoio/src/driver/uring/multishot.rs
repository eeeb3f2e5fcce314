//! Portcullis patch: a multishot receive (`IORING_OP_RECV` with `IORING_RECV_MULTISHOT` and a
//! provided-buffer ring, Linux 6.0+).
//!
//! A one-shot receive on a socket with no data arms the socket's poll, waits, receives, and
//! disarms; the next receive arms it again. A multishot receive is armed once and stays armed:
//! each arrival of data completes into one of the ring's buffers, and the reader copies the
//! bytes out and gives the buffer back. Data read from the socket is never lost: completions
//! queue until taken, a receive that finds the ring empty (`ENOBUFS`) ends the multishot and the
//! next read arms a new one, the data still in the socket.

use std::{
    cell::UnsafeCell,
    future::poll_fn,
    io,
    rc::Rc,
    task::{Context, Poll},
};

use io_uring::cqueue;

use super::UringInner;
use crate::{
    buf::{IoBufMut, IoVecBufMut},
    driver::{shared_fd::SharedFd, Inner, CURRENT},
    io::AsyncReadRent,
    BufResult,
};

/// Reads a stream socket through one multishot receive (io_uring driver only).
///
/// Once created, all reads of the socket must go through it: a plain read beside it would race
/// it for the data. Dropping it cancels the receive; the socket stays open until both this and
/// the stream it came from are dropped.
pub struct MultishotRecv {
    driver: Rc<UnsafeCell<UringInner>>,
    fd: SharedFd,
    /// The armed receive's slab index (`None`: not armed, arm on the next read).
    index: Option<usize>,
    /// A completed receive's buffer not yet fully copied out: (bid, offset, len).
    chunk: Option<(u16, u32, u32)>,
    /// The peer closed its side; reads return 0 from now on.
    eof: bool,
    /// An error completion not yet returned to a read.
    error: Option<io::Error>,
}

impl MultishotRecv {
    /// A reader for `fd`, or `None` when the current runtime is not io_uring or its kernel has
    /// no provided-buffer rings.
    pub(crate) fn new(fd: SharedFd) -> Option<Self> {
        if !CURRENT.is_set() {
            return None;
        }
        let driver = CURRENT.with(|inner| match inner {
            Inner::Uring(this) => Some(this.clone()),
            #[allow(unreachable_patterns)]
            _ => None,
        })?;
        UringInner::multishot_ready(&driver).ok()?;
        Some(MultishotRecv { driver, fd, index: None, chunk: None, eof: false, error: None })
    }

    /// Whether bytes, EOF or an error are ready to be taken without waiting.
    pub fn is_ready(&self) -> bool {
        self.chunk.is_some() || self.eof || self.error.is_some()
    }

    /// Waits until bytes, EOF or an error can be taken with [`take`](Self::take), without
    /// needing a destination yet (a caller can allocate its buffer once data is there).
    pub async fn ready(&mut self) {
        poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// Poll form of [`ready`](Self::ready).
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while !self.is_ready() {
            let index = match self.index {
                Some(i) => i,
                None => match UringInner::multishot_recv(&self.driver, self.fd.raw_fd()) {
                    Ok(i) => {
                        self.index = Some(i);
                        i
                    }
                    Err(e) => {
                        self.error = Some(e);
                        break;
                    }
                },
            };
            let (res, flags) = std::task::ready!(UringInner::multishot_poll(&self.driver, index, cx));
            if !cqueue::more(flags) {
                // That was the last completion of this receive (taken from the slab already).
                self.index = None;
            }
            if res > 0 {
                match cqueue::buffer_select(flags) {
                    Some(bid) => self.chunk = Some((bid, 0, res as u32)),
                    None => self.error = Some(io::Error::other("multishot receive completed without a buffer")),
                }
            } else if res == 0 {
                self.eof = true;
            } else if res == -libc::ENOBUFS || res == -libc::ECANCELED {
                // ENOBUFS: every buffer is held by completions not yet taken; the bytes are still
                // in the socket. ECANCELED: a `stop` was interrupted. Arm again (after other
                // tasks have run and given buffers back).
                continue;
            } else {
                self.error = Some(io::Error::from_raw_os_error(-res));
            }
        }
        Poll::Ready(())
    }

    /// Takes what is ready (see [`ready`](Self::ready)): copies up to `len` bytes to `dst` and
    /// returns the count, 0 at EOF. Returns `Ok(0)` with nothing copied when nothing is ready,
    /// which callers avoid by waiting first.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes.
    pub unsafe fn take(&mut self, dst: *mut u8, len: usize) -> io::Result<usize> {
        if let Some((bid, off, total)) = self.chunk {
            let n = ((total - off) as usize).min(len);
            let src = UringInner::multishot_buf(&self.driver, bid).add(off as usize);
            std::ptr::copy_nonoverlapping(src, dst, n);
            if off as usize + n == total as usize {
                self.chunk = None;
                UringInner::multishot_recycle(&self.driver, bid);
            } else {
                self.chunk = Some((bid, off + n as u32, total));
            }
            return Ok(n);
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        Ok(0)
    }

    /// Cancels the armed receive and waits for its last completion, handing the bytes it still
    /// received to `sink` in order (an EOF or error stays for the next read). Until the next
    /// read through this reader arms a new receive, the socket may be read directly: for
    /// large bodies, whose reads are cheaper in one-shot receives of a large buffer than in
    /// buffer-sized completions copied out.
    pub async fn stop(&mut self, mut sink: impl FnMut(&[u8])) {
        if let Some((bid, off, total)) = self.chunk.take() {
            // SAFETY: the chunk's bytes are in buffer `bid` until it is recycled.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    UringInner::multishot_buf(&self.driver, bid).add(off as usize),
                    (total - off) as usize,
                )
            };
            sink(bytes);
            UringInner::multishot_recycle(&self.driver, bid);
        }
        let Some(index) = self.index else { return };
        UringInner::multishot_cancel(&self.driver, index);
        loop {
            let (res, flags) = poll_fn(|cx| UringInner::multishot_poll(&self.driver, index, cx)).await;
            if res > 0 {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    let bytes =
                        unsafe { std::slice::from_raw_parts(UringInner::multishot_buf(&self.driver, bid), res as usize) };
                    sink(bytes);
                    UringInner::multishot_recycle(&self.driver, bid);
                }
            } else if res == 0 {
                self.eof = true;
            } else if res != -libc::ECANCELED && res != -libc::ENOBUFS {
                self.error = Some(io::Error::from_raw_os_error(-res));
            }
            if !cqueue::more(flags) {
                self.index = None;
                return;
            }
        }
    }

    /// Whether a receive is armed (after [`stop`](Self::stop): not until the next read).
    pub fn is_armed(&self) -> bool {
        self.index.is_some()
    }

    /// Reads once into `dst[..len]`: waits for data, copies what is there. `Ok(0)` is EOF.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes until the returned future completes or is
    /// dropped (the kernel never writes to it: the bytes are copied when the future completes).
    pub async unsafe fn read_raw(&mut self, dst: *mut u8, len: usize) -> io::Result<usize> {
        if len == 0 {
            return Ok(0);
        }
        self.ready().await;
        self.take(dst, len)
    }
}

impl AsyncReadRent for MultishotRecv {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let len = buf.bytes_total();
        let ptr = buf.write_ptr();
        // SAFETY: the rented buffer owns `len` writable bytes from `write_ptr`.
        let res = unsafe { self.read_raw(ptr, len).await };
        if let Ok(n) = res {
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // Fill the first non-empty iovec (a short read is allowed).
        let iovs = buf.write_iovec_ptr();
        let count = buf.write_iovec_len();
        let mut res = Ok(0);
        for i in 0..count {
            // SAFETY: the rented buffer owns `count` iovecs.
            let iov = unsafe { *iovs.add(i) };
            if iov.iov_len > 0 {
                res = unsafe { self.read_raw(iov.iov_base as *mut u8, iov.iov_len).await };
                break;
            }
        }
        if let Ok(n) = res {
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }
}

impl Drop for MultishotRecv {
    fn drop(&mut self) {
        if let Some((bid, _, _)) = self.chunk.take() {
            UringInner::multishot_recycle(&self.driver, bid);
        }
        if let Some(index) = self.index.take() {
            UringInner::multishot_drop(&self.driver, index);
        }
    }
}
