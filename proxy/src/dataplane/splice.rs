//! Response bodies moved from the upstream socket to the client socket through a pipe with
//! splice(2), so their bytes never enter user space: the kernel hands the payload pages from one
//! socket to the other by reference instead of copying them out to the proxy and back in.
//!
//! Used for `Content-Length` response bodies with at least `proxy.splice_min_body` bytes still
//! to come after the head read (the proxy neither inspects nor rewrites response bodies). For an
//! API whose recent responses were that large, the head is read with a small read
//! ([`HEAD_READ`]) so most of the body is left in the socket for splicing; [`BodyHints`] keeps
//! that per worker and API. Measured in docs/decisions/0009-splice-response-bodies.md.
//!
//! Where the API's heads have also gone to the client unchanged (`portcullis_http1::forwards_verbatim`:
//! the same bytes, or the same less a `Connection: keep-alive` line), the small head read is a
//! peek (`MSG_PEEK`): the head stays queued in the upstream socket and is spliced with the
//! body, so the proxy makes no write of its own for the response (one `sendto` fewer per
//! response; docs/decisions/0010-unchanged-heads-spliced.md). A peeked head that
//! turns out to need rewriting, or a body too small to splice, is taken out of the socket
//! without a copy (`ReadBuf::unqueue_peeked`) and handled as after a read.
//!
//! Must not: block the worker (every splice and send is non-blocking, waits go through the
//! runtime's readiness ops), hand a pipe that still holds bytes to another exchange, or fail an
//! exchange for want of a pipe (the caller falls back to copying).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use monoio::net::TcpStream;

use super::stream::Stream;

use super::body::RelayError;
use super::error::ErrorKind;

/// Bytes the head read takes for an API with large bodies: a head and the start of the body.
/// A head longer than this takes a second read (and that response is copied, not spliced).
pub(super) const HEAD_READ: usize = 1024;

/// Most idle pipes a worker keeps (two descriptors each).
const SPARE_PIPES: usize = 64;

/// One pipe, empty whenever it is not lent to a relay.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe { read, write })
    }
}

/// Two per-API hints, each a two-bit saturating counter (up on a yes, down on a no, so one odd
/// response does not flip it), reset when the configuration generation changes (API indexes
/// move):
/// - *large*: the API's recent `Content-Length` responses were large enough to splice, so its
///   next head is read with [`HEAD_READ`];
/// - *verbatim*: those responses could also have been spliced whole, head included (the head
///   goes to the client unchanged, `portcullis_http1::forwards_verbatim`, and the body is worth splicing),
///   so the next head is peeked rather than read, and head and body leave the upstream socket
///   together by splice.
#[derive(Default)]
pub(super) struct BodyHints {
    generation: Cell<u64>,
    counters: RefCell<Vec<Hint>>,
}

#[derive(Default, Clone, Copy)]
struct Hint {
    large: u8,
    verbatim: u8,
}

impl BodyHints {
    /// The API's bodies have been large: read its next head with [`HEAD_READ`].
    pub(super) fn large(&self, generation: u64, api: usize) -> bool {
        self.get(generation, api).is_some_and(|h| h.large >= 2)
    }

    /// The API's large responses could also have gone whole (unchanged heads, bodies worth
    /// splicing): peek its next head.
    pub(super) fn verbatim(&self, generation: u64, api: usize) -> bool {
        self.get(generation, api).is_some_and(|h| h.large >= 2 && h.verbatim >= 2)
    }

    /// Records one `Content-Length` response body; `large` says it was large enough to splice.
    pub(super) fn note(&self, generation: u64, api: usize, large: bool) {
        self.update(generation, api, large, |h| &mut h.large);
    }

    /// Records whether a response read with [`HEAD_READ`] could have been spliced whole.
    pub(super) fn note_verbatim(&self, generation: u64, api: usize, verbatim: bool) {
        self.update(generation, api, verbatim, |h| &mut h.verbatim);
    }

    fn get(&self, generation: u64, api: usize) -> Option<Hint> {
        (self.generation.get() == generation).then(|| self.counters.borrow().get(api).copied()).flatten()
    }

    fn update(&self, generation: u64, api: usize, yes: bool, field: impl Fn(&mut Hint) -> &mut u8) {
        let mut counters = self.counters.borrow_mut();
        if self.generation.get() != generation {
            self.generation.set(generation);
            counters.clear();
        }
        if counters.len() <= api {
            if !yes {
                return;
            }
            counters.resize(api + 1, Hint::default());
        }
        let c = field(&mut counters[api]);
        *c = if yes { (*c + 1).min(3) } else { c.saturating_sub(1) };
    }
}

/// A worker's splice state: idle pipes, body hints, and whether its sockets are blocking.
#[derive(Default)]
pub(super) struct Splicer {
    spare: RefCell<Vec<Pipe>>,
    pub hints: BodyHints,
    /// The runtime's sockets are blocking (io_uring); see [`ensure_nonblocking`].
    pub blocking_sockets: Cell<bool>,
    /// A pipe could not be made (descriptor limit): logged once, then copied silently.
    warned: Cell<bool>,
}

impl Splicer {
    /// Readies both sockets and lends a pipe for one relay; `None` (logged once per worker)
    /// when the descriptor limit or fcntl refuses, and the caller copies the body instead.
    pub(super) fn prepare(&self, up: &Stream, up_nb: &mut bool, client: &Stream, client_nb: &mut bool) -> Option<Pipe> {
        // Under TLS the socket carries ciphertext: nothing to splice (the plan never asks).
        let (Some(up), Some(client)) = (up.plain(), client.plain()) else { return None };
        let ready = ensure_nonblocking(self.blocking_sockets.get(), up.as_raw_fd(), up_nb)
            .and_then(|_| ensure_nonblocking(self.blocking_sockets.get(), client.as_raw_fd(), client_nb))
            .and_then(|_| match self.spare.borrow_mut().pop() {
                Some(p) => Ok(p),
                None => Pipe::new(),
            });
        match ready {
            Ok(p) => Some(p),
            Err(e) => {
                if !self.warned.replace(true) {
                    tracing::warn!(error = %e, "cannot splice response bodies (pipe or fcntl failed); copying them instead");
                }
                None
            }
        }
    }

    /// Takes back a pipe a relay emptied.
    fn give_back(&self, p: Pipe) {
        let mut spare = self.spare.borrow_mut();
        if spare.len() < SPARE_PIPES {
            spare.push(p);
        }
    }
}

/// Makes `fd` non-blocking once (`*done` remembers it) where the runtime's sockets are blocking.
/// That leaves the runtime's own operations on the socket unchanged: io_uring's send and receive
/// take their blocking behaviour from the message flags, never from the file's O_NONBLOCK
/// (`io_send`/`io_recv` call `sock_sendmsg`/`sock_recvmsg` directly), while splice(2) takes it
/// from the file alone (`tcp_splice_read`, `splice_to_socket`), and on a blocking socket would
/// block the worker.
fn ensure_nonblocking(blocking_sockets: bool, fd: RawFd, done: &mut bool) -> io::Result<()> {
    if *done || !blocking_sockets {
        return Ok(());
    }
    // SAFETY: fcntl on a descriptor the caller keeps open. F_SETFL sets the status flags only;
    // the runtime's sockets have none besides the access mode, which F_SETFL ignores.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    *done = true;
    Ok(())
}

fn splice(from: RawFd, to: RawFd, len: usize, more: bool) -> io::Result<usize> {
    let mut flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    if more {
        flags |= libc::SPLICE_F_MORE;
    }
    // SAFETY: plain descriptors and null offsets (each end is a socket or a pipe); no memory
    // is passed.
    let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sends `head` (the response head and the body bytes read with it) with MSG_MORE, so it leaves
/// in one segment with the spliced body that follows rather than in one of its own (measured:
/// without it, splicing 16 KiB bodies saved nothing, the extra segment cost what the copies did).
async fn send_head(client: &TcpStream, mut head: &[u8]) -> Result<(), RelayError> {
    let fd = client.as_raw_fd();
    while !head.is_empty() {
        // SAFETY: `head` is a live slice for the duration of the call.
        let n = unsafe {
            libc::send(fd, head.as_ptr().cast(), head.len(), libc::MSG_MORE | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if n > 0 {
            head = &head[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        if n < 0 && e.kind() == io::ErrorKind::WouldBlock {
            client.writable(false).await.map_err(|_| RelayError::Sink("writing response head"))?;
            continue;
        }
        return Err(RelayError::Sink("writing response head"));
    }
    Ok(())
}

/// Sends `head`, then moves exactly `n` body bytes from `up` to `client` through `pipe` (from
/// [`Splicer::prepare`]). Waits for the upstream at most `read_timeout` at a time. On error the
/// pipe is closed rather than returned, whatever it still holds.
pub(super) async fn relay(
    splicer: &Splicer,
    pipe: Pipe,
    up: &Stream,
    client: &Stream,
    head: &[u8],
    n: u64,
    read_timeout: Duration,
) -> Result<u64, RelayError> {
    let (Some(up), Some(client)) = (up.plain(), client.plain()) else {
        return Err(RelayError::Sink("splicing needs plain sockets"));
    };
    send_head(client, head).await?;
    let (src, dst) = (up.as_raw_fd(), client.as_raw_fd());
    let mut left = n; // still in the upstream socket
    let mut held = 0usize; // in the pipe
    while left > 0 || held > 0 {
        if left > 0 {
            match splice(src, pipe.write.as_raw_fd(), left.min(1 << 20) as usize, false) {
                Ok(0) => {
                    return Err(RelayError::Source(
                        ErrorKind::UpstreamProtocol,
                        "connection closed in the middle of a body",
                    ))
                }
                Ok(k) => {
                    left -= k as u64;
                    held += k;
                }
                // Nothing more in the socket, or the pipe is full (then `held` > 0 drains it).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if held == 0 {
                        match monoio::time::timeout(read_timeout, up.readable(false)).await {
                            Ok(Ok(())) => continue,
                            Ok(Err(_)) => {
                                return Err(RelayError::Source(
                                    ErrorKind::UpstreamProtocol,
                                    "read failed while relaying body",
                                ))
                            }
                            Err(_) => {
                                return Err(RelayError::Source(ErrorKind::UpstreamTimeout, "timed out reading body"))
                            }
                        }
                    }
                }
                Err(_) => {
                    return Err(RelayError::Source(ErrorKind::UpstreamProtocol, "read failed while relaying body"))
                }
            }
        }
        if held > 0 {
            // SPLICE_F_MORE while body bytes are still to come keeps segments full.
            match splice(pipe.read.as_raw_fd(), dst, held, left > 0) {
                Ok(0) => return Err(RelayError::Sink("write failed while relaying body")),
                Ok(k) => held -= k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    client.writable(false).await.map_err(|_| RelayError::Sink("write failed while relaying body"))?;
                }
                Err(_) => return Err(RelayError::Sink("write failed while relaying body")),
            }
        }
    }
    splicer.give_back(pipe);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_need_two_large_bodies_and_reset_with_the_generation() {
        let h = BodyHints::default();
        assert!(!h.large(1, 3));
        h.note(1, 3, true);
        assert!(!h.large(1, 3), "one large body is not a pattern");
        h.note(1, 3, true);
        assert!(h.large(1, 3));
        assert!(!h.large(1, 2), "other APIs are unaffected");
        h.note(1, 3, true);
        h.note(1, 3, false);
        assert!(h.large(1, 3), "one small body after three large ones keeps it");
        h.note(1, 3, false);
        assert!(!h.large(1, 3));
        h.note(1, 3, true);
        h.note(1, 3, true);
        assert!(!h.large(2, 3), "a new generation forgets");
        h.note(2, 0, false);
        assert!(!h.large(2, 3));
    }

    #[test]
    fn the_verbatim_hint_needs_two_verbatim_heads_of_large_bodies() {
        let h = BodyHints::default();
        h.note_verbatim(1, 0, true);
        h.note_verbatim(1, 0, true);
        assert!(!h.verbatim(1, 0), "verbatim heads of bodies not (yet) large do not count");
        h.note(1, 0, true);
        h.note(1, 0, true);
        assert!(h.verbatim(1, 0));
        h.note_verbatim(1, 0, true);
        h.note_verbatim(1, 0, false);
        assert!(h.verbatim(1, 0), "one rewritten head after three verbatim ones keeps it");
        h.note_verbatim(1, 0, false);
        assert!(!h.verbatim(1, 0));
        assert!(h.large(1, 0), "the two hints are independent");
        h.note_verbatim(1, 0, true);
        h.note_verbatim(1, 0, true);
        assert!(!h.verbatim(2, 0), "a new generation forgets");
    }
}
