//! What a dial waits on while it resolves and connects: its own progress, the
//! call's deadline, and warden stopping. Without the last, `Pool::finish` would
//! wait for every running dial to reach its deadline (a call timeout of up to
//! 60 s, twice systemd's stop timeout, which then kills warden with its audit
//! buffer unwritten). With it a running dial gives up as soon as warden stops.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mio::event::Source;
use mio::{Events, Interest, Poll, Token, Waker};

/// The token a connecting socket is registered with.
const SOCKET: Token = Token(0);
/// The token of the waker (warden stopping, a resolution finished).
const WAKE: Token = Token(1);

/// Tells every [`Waiter`] made from it that warden is stopping.
#[derive(Default)]
pub struct Stop {
    stopping: AtomicBool,
    wakers: Mutex<Vec<Arc<Waker>>>,
}

impl Stop {
    /// A waiter for one thread's dials, woken by [`Stop::stop`].
    pub fn waiter(self: &Arc<Self>) -> io::Result<Waiter> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        self.wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&waker));
        Ok(Waiter {
            poll,
            events: Events::with_capacity(4),
            waker,
            stop: Arc::clone(self),
        })
    }

    /// Warden is stopping: every waiting dial gives up, and later ones at once.
    pub fn stop(&self) {
        // The flag first: a waiter woken reads it set; one registered after
        // this reads it before its first wait.
        self.stopping.store(true, Ordering::Release);
        for w in self.wakers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            // A failed wake leaves that waiter to its deadline; nothing better.
            let _ = w.wake();
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// Why a wait ended without what was waited for.
#[derive(Debug, PartialEq, Eq)]
pub enum Interrupted {
    /// The deadline passed.
    TimedOut,
    /// Warden is stopping.
    Stopping,
}

/// One I/O thread's way to wait, reused by each of its dials.
pub struct Waiter {
    poll: Poll,
    events: Events,
    waker: Arc<Waker>,
    stop: Arc<Stop>,
}

impl Drop for Waiter {
    /// Its thread has ended (an idle I/O thread beyond the first ones):
    /// [`Stop`] forgets its waker, whose eventfd would otherwise stay open for
    /// warden's life, one more each time the threads grow and shrink.
    fn drop(&mut self) {
        self.stop
            .wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|w| !Arc::ptr_eq(w, &self.waker));
    }
}

impl Waiter {
    /// A waker for whoever finishes work this waiter waits for (a resolver
    /// thread). A late wake-up (for a wait that has ended) only makes a later
    /// wait look again.
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Blocks until something may have changed (the registered socket became
    /// ready, or the waker was woken), the deadline passes, or warden stops.
    /// The caller checks its own condition again after `Ok`.
    pub fn wait(&mut self, deadline: Instant) -> Result<(), Interrupted> {
        loop {
            if self.stop.stopping() {
                return Err(Interrupted::Stopping);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Interrupted::TimedOut);
            }
            match self.poll.poll(&mut self.events, Some(left)) {
                Ok(()) if !self.events.is_empty() => return Ok(()),
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // epoll_wait fails only for a bad descriptor or buffer: not
                // something to retry, and the dial has no better answer.
                Err(_) => return Err(Interrupted::TimedOut),
            }
        }
    }

    /// Watches `socket` for writability (a connect completing) until
    /// [`Waiter::forget`].
    pub fn watch(&mut self, socket: &mut impl Source) -> io::Result<()> {
        self.poll
            .registry()
            .register(socket, SOCKET, Interest::WRITABLE)
    }

    /// Stops watching `socket`.
    pub fn forget(&mut self, socket: &mut impl Source) {
        let _ = self.poll.registry().deregister(socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_wait_ends_at_its_deadline_or_at_once_when_warden_stops() {
        let stop = Arc::new(Stop::default());
        let mut w = stop.waiter().unwrap();
        let t0 = Instant::now();
        let r = w.wait(t0 + Duration::from_millis(50));
        assert_eq!(r, Err(Interrupted::TimedOut));
        assert!(t0.elapsed() >= Duration::from_millis(50));

        let s = Arc::clone(&stop);
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            s.stop();
        });
        let t0 = Instant::now();
        let mut r = w.wait(t0 + Duration::from_secs(30));
        if r.is_ok() {
            // The wake-up itself; the next wait reads the flag.
            r = w.wait(t0 + Duration::from_secs(30));
        }
        assert_eq!(r, Err(Interrupted::Stopping));
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        stopper.join().unwrap();

        // A waiter made after the stop never waits.
        let mut late = stop.waiter().unwrap();
        assert_eq!(
            late.wait(Instant::now() + Duration::from_secs(30)),
            Err(Interrupted::Stopping)
        );
    }

    #[test]
    fn a_waker_handed_out_ends_a_wait() {
        let stop = Arc::new(Stop::default());
        let mut w = stop.waiter().unwrap();
        let waker = w.waker();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake().unwrap();
        });
        let t0 = Instant::now();
        assert_eq!(w.wait(t0 + Duration::from_secs(30)), Ok(()));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    /// Each I/O thread makes one waiter with its first dial, and a thread
    /// beyond the first four ends after 30 s idle, dropping it. What it held
    /// must go with it: a `warden serve` whose I/O threads grow and shrink
    /// again and again must not keep a descriptor per thread that ever ran.
    #[test]
    fn a_waiter_whose_thread_ended_leaves_no_descriptor_behind() {
        let stop = Arc::new(Stop::default());
        let open_fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        let before = open_fds();
        for _ in 0..64 {
            let s = Arc::clone(&stop);
            std::thread::spawn(move || drop(s.waiter().unwrap()))
                .join()
                .unwrap();
        }
        let kept = stop.wakers.lock().unwrap().len();
        let grown = open_fds().saturating_sub(before);
        assert!(
            grown < 32,
            "64 waiters made and dropped by threads that ended left {grown} more \
             descriptors open ({kept} wakers still held by Stop)"
        );
    }
}
