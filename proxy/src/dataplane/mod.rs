//! The data plane: one monoio worker thread per core, each pinned to a CPU of the process's
//! affinity mask, with its own SO_REUSEPORT listener, upstream pool and metrics.
//!
//! Must not: await tokio futures, take locks on the request path, or share mutable state between
//! workers. Configuration arrives as an immutable [`Snapshot`](crate::config::Snapshot) swapped
//! whole by the control plane; shutdown arrives through [`Shutdown`], which each worker's accept
//! loop relays to its connections through a [`LocalShutdown`].

pub mod body;
mod conn;
pub mod error;
pub mod http;
mod io;
pub mod path;
mod splice;
pub mod stats;
mod upstream;
mod worker;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use arc_swap::ArcSwap;
use event_listener::{Event, EventListener};

use crate::config::{IoDriver, Snapshot};

pub use stats::WorkerStats;
pub use worker::WorkerHandle;

/// Cross-thread shutdown signal: a flag plus an event that wakes every waiting worker task.
#[derive(Default)]
pub struct Shutdown {
    flag: AtomicBool,
    event: Event,
}

impl Shutdown {
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// A listener to await; check [`is_set`](Self::is_set) after creating it. For a worker's
    /// accept loop: every poll of it locks the event's mutex, which all workers share, so
    /// connections wait on their worker's [`LocalShutdown`] instead.
    pub fn listen(&self) -> EventListener {
        self.event.listen()
    }
}

/// One worker's shutdown notice for its connection tasks, triggered by the worker's accept loop
/// when the process-wide [`Shutdown`] fires. Single-threaded: a listener's poll is a flag check
/// and, while waiting, a waker kept in its own slot. An `event_listener` listener per connection
/// (what the connections used before) locked the process-wide event's mutex on every poll —
/// each request's read — and on every connection's start and end (perf, `small`: 28 ns per
/// request in `poll_internal` on one worker, and a lock every worker's requests would contend on).
#[derive(Default)]
pub(crate) struct LocalShutdown {
    set: Cell<bool>,
    slots: RefCell<Slots>,
}

/// Wakers of waiting listeners, by slot, and the slots dropped listeners left free.
#[derive(Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl LocalShutdown {
    /// Marks shutdown and wakes every waiting listener; listeners created later are ready at once.
    pub fn trigger(&self) {
        self.set.set(true);
        let wakers: Vec<Waker> = self.slots.borrow_mut().wakers.iter_mut().filter_map(Option::take).collect();
        for w in wakers {
            w.wake();
        }
    }

    pub fn listen(self: &Rc<Self>) -> LocalListener {
        LocalListener { notice: Rc::clone(self), slot: None }
    }
}

/// Ready once the worker's [`LocalShutdown`] is triggered.
pub(crate) struct LocalListener {
    notice: Rc<LocalShutdown>,
    slot: Option<usize>,
}

impl Future for LocalListener {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.notice.set.get() {
            return Poll::Ready(());
        }
        let mut slots = this.notice.slots.borrow_mut();
        match this.slot {
            Some(i) => match &mut slots.wakers[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            },
            None => {
                let i = slots.free.pop().unwrap_or_else(|| {
                    slots.wakers.push(None);
                    slots.wakers.len() - 1
                });
                slots.wakers[i] = Some(cx.waker().clone());
                this.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut slots = self.notice.slots.borrow_mut();
            slots.wakers[i] = None;
            slots.free.push(i);
        }
    }
}

/// State shared between the control plane and all workers.
pub struct Shared {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub shutdown: Arc<Shutdown>,
    /// Banned addresses, published by the control plane's ban manager.
    pub bans: Arc<ArcSwap<crate::bans::BanSet>>,
    /// Session lookups to the control plane's key store.
    pub keys: crate::keystore::KeyClient,
    /// Key-change announcements, one receiver per worker (index = worker id).
    pub invalidations: Vec<crossbeam_channel::Receiver<crate::auth::Invalidation>>,
    pub auth_limits: crate::auth::CacheLimits,
    pub limiter: crate::limit::LimiterConfig,
    /// Each worker takes its gossip link (index = worker id) when it starts.
    pub gossip: std::sync::Mutex<Vec<Option<crate::limit::gossip::WorkerLink>>>,
    /// The queue to the analytics pump (each worker takes a clone).
    pub analytics: crate::analytics::Feed,
}

/// CPUs of the process's affinity mask, in order (empty if it cannot be read).
pub fn affinity_cpus() -> Vec<usize> {
    core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect()
}

/// Binds one listener per worker (SO_REUSEPORT) and starts the workers. Binding happens here, on
/// the caller's thread, so an address in use fails startup with a clear error.
pub fn start(
    shared: &Shared,
    listen: SocketAddr,
    workers: usize,
    driver: IoDriver,
    backlog: u32,
) -> std::io::Result<Vec<WorkerHandle>> {
    let cpus = affinity_cpus();
    let mut listeners = Vec::with_capacity(workers);
    let mut addr = listen;
    for _ in 0..workers {
        let l = bind_reuseport(addr, backlog)?;
        // With port 0 the first bind picks the port; the other workers join it.
        addr = l.local_addr()?;
        listeners.push(l);
    }
    let mut handles = Vec::with_capacity(workers);
    for (id, listener) in listeners.into_iter().enumerate() {
        let cpu = if cpus.is_empty() { None } else { Some(cpus[id % cpus.len()]) };
        handles.push(worker::spawn(id, cpu, driver, listener, shared)?);
    }
    Ok(handles)
}

fn bind_reuseport(addr: SocketAddr, backlog: u32) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    use super::LocalShutdown;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&c), Waker::from(c))
    }
    fn poll(f: &mut super::LocalListener, w: &Waker) -> Poll<()> {
        Pin::new(f).poll(&mut Context::from_waker(w))
    }

    #[test]
    fn local_shutdown_wakes_the_waiting_listeners_and_only_the_latest_waker() {
        let notice = Rc::new(LocalShutdown::default());
        let (a_count, a) = waker();
        let (b_old_count, b_old) = waker();
        let (b_count, b) = waker();
        let (gone_count, gone) = waker();
        let mut la = notice.listen();
        let mut lb = notice.listen();
        let mut dropped = notice.listen();
        assert!(poll(&mut la, &a).is_pending());
        assert!(poll(&mut la, &a).is_pending(), "polled again while waiting");
        assert!(poll(&mut lb, &b_old).is_pending());
        assert!(poll(&mut lb, &b).is_pending(), "moved to another task: the new waker replaces the old");
        assert!(poll(&mut dropped, &gone).is_pending());
        drop(dropped);
        // The dropped listener's slot is reused, not grown.
        let mut lc = notice.listen();
        let (c_count, c) = waker();
        assert!(poll(&mut lc, &c).is_pending());
        assert_eq!(notice.slots.borrow().wakers.len(), 3);
        notice.trigger();
        let counts = [&a_count, &b_old_count, &b_count, &gone_count, &c_count].map(|c| c.0.load(Ordering::SeqCst));
        assert_eq!(counts, [1, 0, 1, 0, 1]);
        assert!(poll(&mut la, &a).is_ready());
        assert!(poll(&mut lb, &b).is_ready());
        // Created after the trigger: ready at once, never registered.
        let mut late = notice.listen();
        assert!(poll(&mut late, &a).is_ready());
        drop((la, lb, lc, late));
        notice.trigger();
        assert_eq!(a_count.0.load(Ordering::SeqCst), 1, "nothing left to wake");
    }
}
