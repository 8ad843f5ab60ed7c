//! The concurrency shim: std atomics normally, loom's when built with `--cfg loom`, so that the
//! same ring code runs in production and under the model checker.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::fence;
#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU32, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::fence;
#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicU32, Ordering};

/// One turn of a spin loop (a yield under loom, which must see progress).
pub(crate) fn spin() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Gives the core to another thread that may be waiting for it.
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// A futex modelled for loom: the word is checked and the sleeper parked under one lock, and
/// wakers take the same lock, which is exactly the atomicity a futex gives.
#[cfg(loom)]
#[derive(Debug, Default)]
pub struct LoomBell {
    lock: loom::sync::Mutex<()>,
    parked: loom::sync::Condvar,
}

#[cfg(loom)]
impl crate::Doorbell for LoomBell {
    fn wait(&self, word: &AtomicU32, expected: u32, _timeout: Option<std::time::Duration>) {
        if let Ok(guard) = self.lock.lock()
            && word.load(Ordering::SeqCst) == expected
        {
            let _ = self.parked.wait(guard);
        }
    }

    fn wake(&self, _word: &AtomicU32) {
        if let Ok(_guard) = self.lock.lock() {
            self.parked.notify_all();
        }
    }
}

/// An eventfd modelled for loom: a counter under a lock; waking adds one, sleeping waits for
/// a non-zero count and takes it.
#[cfg(loom)]
#[derive(Debug, Default)]
pub struct LoomEventBell {
    count: loom::sync::Mutex<u64>,
    rung: loom::sync::Condvar,
}

#[cfg(loom)]
impl LoomEventBell {
    /// Sleeps until rung, and takes the rings.
    pub fn sleep(&self) {
        if let Ok(mut count) = self.count.lock() {
            while *count == 0 {
                match self.rung.wait(count) {
                    Ok(c) => count = c,
                    Err(_) => return,
                }
            }
            *count = 0;
        }
    }
}

#[cfg(loom)]
impl crate::Doorbell for LoomEventBell {
    fn wait(&self, _word: &AtomicU32, _expected: u32, _timeout: Option<std::time::Duration>) {
        self.sleep();
    }

    fn wake(&self, _word: &AtomicU32) {
        if let Ok(mut count) = self.count.lock() {
            *count += 1;
            self.rung.notify_all();
        }
    }
}
