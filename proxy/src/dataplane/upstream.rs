//! Per-worker upstream connection pool: idle keep-alive connections by target address, and the
//! per-target cap on connections in use (`upstream_max_connections`).
//!
//! Owned by one worker (`RefCell`/`Cell`, no lock, no sharing). LIFO reuse keeps the hottest
//! connection warm; connections idle longer than `upstream_idle_timeout_ms` are dropped on
//! checkout, before an upstream with a shorter keep-alive timeout closes them under us. Past
//! `upstream_pool_size` per target, a burst's connections stay pooled as surplus for
//! `upstream_pool_surplus_ms` so the next burst reuses them (see [`Pool::prune`]).
//!
//! The cap: an exchange holds a [`Slot`] for as long as it uses an upstream connection. When all
//! slots of a target are taken, further exchanges wait in FIFO order (up to
//! `upstream_queue_timeout_ms`, then 503) and each finished exchange hands its slot, and with it
//! the keep-alive connection it just returned to the pool, to the oldest waiter. Without the cap a
//! burst of N concurrent requests opens N connections to the upstream. The queue is a few lines
//! of `Cell`/`RefCell` rather than a semaphore crate: `tokio::sync::Semaphore` and `async-lock`
//! synchronise through a mutex or atomics, and nothing on the request path may lock; here a slot
//! costs one hash lookup and an `Rc` clone (the `small` scenario measured 1.00x with and without
//! it, docs/decisions/0011-upstream-connection-cap.md). This module must not do I/O other than
//! connecting, and never blocks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use monoio::net::TcpStream;

use super::error::{ErrorKind, ProxyError, Result};
use super::stream::Stream;

struct Idle {
    stream: Stream,
    nonblocking: bool,
    since: Instant,
}

/// What pooled connections are told apart by: the target's address, and for TLS the client
/// configuration it was made with (each `https://` target has its own: its verification, its
/// client certificate and its server name). A TLS connection holds its configuration, so the
/// address in the key is never reused for another one while the connection lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct PoolKey {
    pub addr: SocketAddr,
    tls: usize,
}

impl PoolKey {
    pub(super) fn new(addr: SocketAddr, tls: Option<&crate::config::UpstreamTls>) -> PoolKey {
        PoolKey { addr, tls: tls.map_or(0, |t| std::sync::Arc::as_ptr(&t.config) as usize) }
    }
}

impl From<SocketAddr> for PoolKey {
    fn from(addr: SocketAddr) -> PoolKey {
        PoolKey { addr, tls: 0 }
    }
}

/// A connection checked out of the pool or freshly made.
pub(super) struct Upstream {
    pub stream: Stream,
    pub key: PoolKey,
    /// Came from the pool: a failure before the first response byte may be a stale connection.
    pub reused: bool,
    /// The socket has been made non-blocking for splice(2) (see `splice`).
    pub nonblocking: bool,
}

#[derive(Default)]
pub(super) struct Pool {
    idle: RefCell<AHashMap<PoolKey, Vec<Idle>>>,
    slots: RefCell<AHashMap<SocketAddr, Rc<Slots>>>,
}

/// One target's slots on one worker.
#[derive(Default)]
struct Slots {
    in_use: Cell<usize>,
    waiters: RefCell<VecDeque<Rc<Waiter>>>,
}

#[derive(Default)]
struct Waiter {
    /// A finished exchange passed its slot to this waiter.
    granted: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Slots {
    /// Gives a slot back: to the oldest waiter still waiting, else to the free count.
    fn release(&self) {
        let next = self.waiters.borrow_mut().pop_front();
        match next {
            Some(w) => {
                w.granted.set(true);
                if let Some(waker) = w.waker.take() {
                    waker.wake();
                }
            }
            None => self.in_use.set(self.in_use.get().saturating_sub(1)),
        }
    }
}

/// The right to use one upstream connection to a target; given back (to the next waiter, if
/// any) when dropped.
pub(super) struct Slot {
    slots: Rc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release();
    }
}

/// Why no slot was had.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct QueueTimeout;

/// Waits for a slot; on drop before it is granted, leaves the queue, and if it was granted but
/// never taken, passes the slot on, so a client that goes away loses no slot.
struct WaitSlot {
    slots: Rc<Slots>,
    me: Rc<Waiter>,
    done: bool,
}

impl Future for WaitSlot {
    type Output = Slot;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Slot> {
        if self.me.granted.get() {
            self.done = true;
            return Poll::Ready(Slot { slots: self.slots.clone() });
        }
        self.me.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.me.granted.get() {
            self.slots.release();
        } else {
            self.slots.waiters.borrow_mut().retain(|w| !Rc::ptr_eq(w, &self.me));
        }
    }
}

impl Pool {
    /// Takes the freshest idle connection to `addr` younger than `max_idle` at `now` (a time the
    /// caller read anyway: a clock read per request was measurable).
    pub(super) fn take(&self, key: PoolKey, max_idle: Duration, now: Instant) -> Option<Upstream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&key)?;
        while let Some(c) = list.pop() {
            if now.saturating_duration_since(c.since) < max_idle {
                return Some(Upstream { stream: c.stream, key, reused: true, nonblocking: c.nonblocking });
            }
        }
        None
    }

    /// Returns a connection whose last response was read completely, at `now`. `keep` is the
    /// pool size per target (0: no pooling, the connection closes). Past it the connection is
    /// pooled as surplus, which [`prune`](Self::prune) closes after a while, unless
    /// `no_surplus`: then the oldest connection closes at once (nginx's `keepalive N`).
    pub(super) fn put(&self, up: Upstream, keep: usize, no_surplus: bool, now: Instant) {
        if keep == 0 {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(up.key).or_default();
        if no_surplus && list.len() >= keep {
            // Drop the oldest: the newest is the likeliest to still be open.
            list.remove(0);
        }
        list.push(Idle { stream: up.stream, nonblocking: up.nonblocking, since: now });
    }

    /// Closes pooled connections idle for `max_idle` or longer (they would not be reused, and
    /// one the upstream has closed would sit in CLOSE-WAIT holding its descriptor until then),
    /// and of the connections beyond `keep` per target, the oldest ones idle for `surplus_idle`
    /// or longer; forgets targets with nothing pooled and slot counts with nothing in use or
    /// waiting (targets a reload removed). Called once per stats tick.
    ///
    /// Why surplus is kept at all: under 1,000 concurrent clients, responses complete in
    /// batches, so closing everything past `keep` at once closed connections the next batch
    /// reopened milliseconds later — 3,300-32,000 upstream connects in 5 s of c1000, against
    /// 1,000 with the surplus kept (p99 0.67x, CPU per request 0.96-0.98x;
    /// docs/decisions/0012-upstream-pool-surplus.md).
    pub(super) fn prune(&self, max_idle: Duration, keep: usize, surplus_idle: Duration) {
        let now = Instant::now();
        self.idle.borrow_mut().retain(|_, list| {
            list.retain(|c| now.saturating_duration_since(c.since) < max_idle);
            // Oldest first (pushed in return order, taken from the back): the surplus that has
            // waited long enough is a prefix.
            let excess = list.len().saturating_sub(keep);
            let expired =
                list.iter().take(excess).take_while(|c| now.saturating_duration_since(c.since) >= surplus_idle).count();
            list.drain(..expired);
            !list.is_empty()
        });
        self.slots.borrow_mut().retain(|_, s| s.in_use.get() > 0 || !s.waiters.borrow().is_empty());
    }

    /// Idle connections held now.
    pub(super) fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }

    /// A slot for one exchange with `addr`: at once while fewer than `max` are in use (`max` 0 =
    /// no cap: `Ok(None)`, nothing counted), else after waiting in line for up to `wait`.
    /// Returns whether the exchange had to wait, for the queued counter.
    pub(super) async fn slot(
        &self,
        addr: SocketAddr,
        max: usize,
        wait: Duration,
    ) -> Result<(Option<Slot>, bool), QueueTimeout> {
        if max == 0 {
            return Ok((None, false));
        }
        let slots = self.slots.borrow_mut().entry(addr).or_default().clone();
        if slots.in_use.get() < max {
            slots.in_use.set(slots.in_use.get() + 1);
            return Ok((Some(Slot { slots }), false));
        }
        let me = Rc::new(Waiter::default());
        slots.waiters.borrow_mut().push_back(me.clone());
        let waiting = WaitSlot { slots, me, done: false };
        match monoio::time::timeout(wait, waiting).await {
            Ok(slot) => Ok((Some(slot), true)),
            Err(_) => Err(QueueTimeout),
        }
    }

    /// Exchanges waiting for a slot now, over all targets.
    pub(super) fn queued_count(&self) -> usize {
        self.slots.borrow().values().map(|s| s.waiters.borrow().len()).sum()
    }
}

/// Opens a new connection with a timeout, and with `tls` its TLS handshake within the same
/// time: refused, unreachable, timed out or a failed handshake (a certificate that does not
/// verify), it is `UpstreamConnect` (Tyk answers a failed dial or TLS handshake, timeout
/// included, with 500).
pub(super) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&crate::config::UpstreamTls>,
) -> Result<Upstream> {
    let key = PoolKey::new(addr, tls);
    let connected = async {
        let stream = TcpStream::connect_addr(addr)
            .await
            .map_err(|e| ProxyError::io(ErrorKind::UpstreamConnect, "cannot connect to upstream", e))?;
        let _ = stream.set_nodelay(true);
        match tls {
            None => Ok(Stream::Plain(stream)),
            Some(t) => Stream::connect_tls(stream, t.config.clone(), t.name.clone())
                .await
                .map_err(|e| ProxyError::io(ErrorKind::UpstreamConnect, "TLS handshake with the upstream failed", e)),
        }
    };
    match monoio::time::timeout(timeout, connected).await {
        Ok(Ok(stream)) => Ok(Upstream { stream, key, reused: false, nonblocking: false }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProxyError::io(
            ErrorKind::UpstreamConnect,
            "upstream connect timed out",
            io::Error::from(io::ErrorKind::TimedOut),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime")
    }

    const A: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);
    const LONG: Duration = Duration::from_secs(5);

    /// A fresh connection to `addr`, as the pool holds it.
    async fn fresh(addr: SocketAddr) -> Upstream {
        let stream = Stream::Plain(TcpStream::connect_addr(addr).await.unwrap());
        Upstream { stream, key: addr.into(), reused: false, nonblocking: false }
    }

    #[test]
    fn prune_closes_expired_idle_connections_and_forgets_unused_targets() {
        rt().block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let pool = Pool::default();
            for _ in 0..2 {
                pool.put(fresh(addr).await, 8, false, Instant::now());
            }
            let (slot, _) = pool.slot(A, 4, LONG).await.unwrap();
            pool.prune(LONG, 8, LONG);
            assert_eq!(pool.idle_count(), 2, "young connections stay");
            assert_eq!(pool.slots.borrow().len(), 1, "a slot in use stays");
            drop(slot);
            pool.prune(Duration::ZERO, 8, LONG);
            assert_eq!(pool.idle_count(), 0);
            assert!(pool.idle.borrow().is_empty() && pool.slots.borrow().is_empty());
            // The pruned connections were closed: the listener's side reads EOF.
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                s.set_read_timeout(Some(LONG)).unwrap();
                let mut b = [0u8; 1];
                assert_eq!(std::io::Read::read(&mut s, &mut b).unwrap(), 0);
            }
        });
    }

    /// Connections past the pool size stay pooled until they have been idle for the surplus
    /// time, and then the oldest go first; with no surplus allowed the oldest goes at once.
    #[test]
    fn surplus_connections_outlive_a_burst_then_the_oldest_close() {
        rt().block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let pool = Pool::default();
            let t0 = Instant::now();
            let mut local_ports = Vec::new();
            for i in 0..5u64 {
                let up = fresh(addr).await;
                local_ports.push(up.stream.plain().unwrap().local_addr().unwrap().port());
                pool.put(up, 2, false, t0 + Duration::from_millis(i));
            }
            assert_eq!(pool.idle_count(), 5, "a burst's connections are all pooled");
            pool.prune(LONG, 2, LONG);
            assert_eq!(pool.idle_count(), 5, "surplus younger than the surplus time stays");
            pool.prune(LONG, 2, Duration::ZERO);
            assert_eq!(pool.idle_count(), 2, "surplus past its time closes, down to the pool size");
            let port = |u: Option<Upstream>| u.map(|u| u.stream.plain().unwrap().local_addr().unwrap().port());
            assert_eq!(port(pool.take(addr.into(), LONG, t0)), Some(local_ports[4]), "the newest stays");
            assert_eq!(port(pool.take(addr.into(), LONG, t0)), Some(local_ports[3]));
            assert!(pool.take(addr.into(), LONG, t0).is_none());

            // No surplus: the pool never holds more than its size.
            for _ in 0..3 {
                pool.put(fresh(addr).await, 2, true, Instant::now());
            }
            assert_eq!(pool.idle_count(), 2);
        });
    }

    #[test]
    fn no_cap_counts_nothing() {
        rt().block_on(async {
            let pool = Pool::default();
            let (slot, waited) = pool.slot(A, 0, LONG).await.unwrap();
            assert!(slot.is_none() && !waited);
            assert!(pool.slots.borrow().is_empty());
        });
    }

    #[test]
    fn waiters_are_served_in_order_and_a_released_slot_is_passed_on() {
        rt().block_on(async {
            let pool = Rc::new(Pool::default());
            let (first, _) = pool.slot(A, 1, LONG).await.unwrap();
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for i in 0..3 {
                let (pool, order) = (pool.clone(), order.clone());
                tasks.push(monoio::spawn(async move {
                    let (slot, waited) = pool.slot(A, 1, LONG).await.unwrap();
                    assert!(waited);
                    order.borrow_mut().push(i);
                    monoio::time::sleep(Duration::from_millis(5)).await;
                    drop(slot);
                }));
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(pool.queued_count(), 3);
            drop(first);
            for t in tasks {
                t.await;
            }
            assert_eq!(*order.borrow(), vec![0, 1, 2]);
            assert_eq!(pool.queued_count(), 0);
            // Every slot came back: one is free again at once.
            let (slot, waited) = pool.slot(A, 1, LONG).await.unwrap();
            assert!(slot.is_some() && !waited);
        });
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_the_line_and_loses_no_slot() {
        rt().block_on(async {
            let pool = Rc::new(Pool::default());
            let (held, _) = pool.slot(A, 1, LONG).await.unwrap();
            assert_eq!(pool.slot(A, 1, Duration::from_millis(10)).await.err(), Some(QueueTimeout));
            assert_eq!(pool.queued_count(), 0);
            // Granted but dropped before it ran (its client went away): the slot is not lost.
            {
                let mut waiting = std::pin::pin!(pool.slot(A, 1, LONG));
                let mut cx = Context::from_waker(Waker::noop());
                assert!(waiting.as_mut().poll(&mut cx).is_pending());
                assert_eq!(pool.queued_count(), 1);
                drop(held);
                assert_eq!(pool.queued_count(), 0, "the slot went to the waiter");
            }
            let (slot, waited) = pool.slot(A, 1, Duration::from_millis(100)).await.unwrap();
            assert!(!waited, "the abandoned grant was passed back");
            assert!(slot.is_some());
        });
    }
}
