//! Futex doorbells on words in shared memory: the waiter sleeps in the kernel only while the
//! word still holds the value it last saw; the ringer changes the word, then wakes. These are
//! shared (not process-private) futexes, so they work across processes mapping one buffer.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex;

use crate::error::{Error, Result};

/// Why a futex wait returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    /// Woken by a ring, or the word no longer held the expected value.
    Changed,
    /// The timeout passed.
    TimedOut,
}

/// Sleeps while `word` holds `expected`, at most `timeout`. Spurious wake-ups happen: callers
/// re-check their condition.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Result<Woken> {
    let spec = timeout.map(|t| rustix::thread::Timespec {
        tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    match futex::wait(word, futex::Flags::empty(), expected, spec.as_ref()) {
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) => Ok(Woken::Changed),
        Err(Errno::TIMEDOUT) => Ok(Woken::TimedOut),
        Err(errno) => Err(Error::Sys {
            op: "futex(FUTEX_WAIT)",
            errno,
        }),
    }
}

/// Wakes up to `count` waiters on `word`; returns how many were woken.
pub fn wake(word: &AtomicU32, count: u32) -> Result<usize> {
    futex::wake(word, futex::Flags::empty(), count).map_err(|errno| Error::Sys {
        op: "futex(FUTEX_WAKE)",
        errno,
    })
}
