//! Portcullis patch: a ring of provided buffers (`IORING_REGISTER_PBUF_RING`, Linux 5.19+) for
//! multishot receives.
//!
//! The ring owns `entries` buffers of `buf_size` bytes. The kernel takes one for each receive
//! completion of a multishot receive and names it in the CQE's flags; the reader copies the
//! bytes out and gives the buffer back with [`BufRing::recycle`]. The memory stays allocated for
//! the ring's lifetime and is only freed after the ring has been unregistered from the kernel.

use std::{
    alloc::{alloc, alloc_zeroed, dealloc, Layout},
    io,
    ptr::NonNull,
    sync::atomic::{AtomicU16, Ordering},
};

use io_uring::{types::BufRingEntry, IoUring};

pub(crate) struct BufRing {
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    bufs: NonNull<u8>,
    bufs_layout: Layout,
    entries: u16,
    buf_size: u32,
    /// Our copy of the tail (the kernel only reads it).
    tail: u16,
    bgid: u16,
    registered: bool,
}

impl BufRing {
    /// Allocates `entries` (a power of two) buffers of `buf_size` bytes, registers them as buffer
    /// group `bgid` and hands all of them to the kernel.
    pub(crate) fn new(uring: &IoUring, entries: u16, buf_size: u32, bgid: u16) -> io::Result<Self> {
        assert!(entries.is_power_of_two() && buf_size > 0);
        let ring_layout = Layout::from_size_align(entries as usize * std::mem::size_of::<BufRingEntry>(), 4096)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let bufs_layout = Layout::from_size_align(entries as usize * buf_size as usize, 64)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: both layouts have a non-zero size.
        let ring = NonNull::new(unsafe { alloc_zeroed(ring_layout) } as *mut BufRingEntry)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let Some(bufs) = NonNull::new(unsafe { alloc(bufs_layout) }) else {
            unsafe { dealloc(ring.as_ptr() as *mut u8, ring_layout) };
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut me = BufRing { ring, ring_layout, bufs, bufs_layout, entries, buf_size, tail: 0, bgid, registered: false };
        // SAFETY: the ring memory is page aligned, zeroed and lives until `drop`, which
        // unregisters it first.
        unsafe { uring.submitter().register_buf_ring(ring.as_ptr() as u64, entries, bgid)? };
        me.registered = true;
        for bid in 0..entries {
            me.push(bid);
        }
        me.publish();
        Ok(me)
    }

    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// The start of buffer `bid` (valid for `buf_size` bytes while the kernel does not own it).
    pub(crate) fn buf(&self, bid: u16) -> *const u8 {
        debug_assert!(bid < self.entries);
        // SAFETY: bid < entries, so the offset stays inside the allocation.
        unsafe { self.bufs.as_ptr().add(bid as usize * self.buf_size as usize) }
    }

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        let idx = self.tail & (self.entries - 1);
        // SAFETY: idx < entries; the entry at the tail is not read by the kernel until the tail
        // is published past it.
        let entry = unsafe { &mut *self.ring.as_ptr().add(idx as usize) };
        entry.set_addr(self.buf(bid) as u64);
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's `resv` and is only written here.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Unregisters the ring (called before the io_uring itself is dropped).
    pub(crate) fn unregister(&mut self, uring: &IoUring) {
        if self.registered && uring.submitter().unregister_buf_ring(self.bgid).is_ok() {
            self.registered = false;
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // The kernel may still refer to the memory: leak it rather than free it under it.
            return;
        }
        // SAFETY: allocated in `new` with these layouts, no longer known to the kernel.
        unsafe {
            dealloc(self.ring.as_ptr() as *mut u8, self.ring_layout);
            dealloc(self.bufs.as_ptr(), self.bufs_layout);
        }
    }
}
