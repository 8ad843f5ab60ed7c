//! Single-producer single-consumer rings of fixed-size records in shared memory, with futex
//! doorbells: the fast path between a client and its block manager, and between domains.
//!
//! A ring is an array of atomic 32-bit words (a shared mapping seen through
//! `cosh_sys::mapping::SharedWords::atomic_u32s`, or plain atomics in tests):
//!
//! | words | content |
//! |---|---|
//! | 0..4 | magic, layout version, capacity (records, a power of two), record size (words) |
//! | 16 | `head`: records ever pushed (wrapping), written by the producer only |
//! | 32 | `tail`: records ever popped (wrapping), written by the consumer only |
//! | 48 | consumers asleep (or about to be), a hint for the producer |
//! | 64 | producers asleep (or about to be), a hint for the consumer |
//! | 80.. | `capacity` records of [`RECORD_WORDS`] words |
//!
//! Each side keeps its own position privately and trusts nothing the other side wrote: the
//! capacity is read once when attaching, and a `head` or `tail` that claims more records than
//! the ring holds is reported as [`RingError::Corrupt`]. A peer that scribbles over the ring
//! therefore only hurts itself: the other side sees garbage records (which the layer above
//! validates) or an error, never a panic, an out-of-bounds access or a hang (every wait has a
//! timeout, and spurious wake-ups are harmless).
//!
//! **Doorbells.** A consumer that finds the ring empty spins a little, then announces itself
//! as a sleeper, issues a sequentially consistent fence, looks again, and only then sleeps on
//! the futex of `head` (the kernel re-checks that `head` still holds the value it saw). A
//! producer publishes `head`, issues the same fence, and wakes only if it sees a sleeper. The
//! two fences guarantee that at least one side sees the other's write, so a wake-up is never
//! lost; `tests/loom.rs` checks the protocol under every interleaving. A producer about to
//! spend a while preparing a record (copying its bytes) may wake a sleeping consumer early
//! ([`Producer::rouse`]), so that the wake-up overlaps the copy; the consumer, woken with
//! nothing to read, spins again before it sleeps. Producers blocked on a full ring use the
//! mirror image on `tail`.

#![forbid(unsafe_code)]

pub mod frames;
mod sync;

use std::time::{Duration, Instant};

use sync::fence;
pub use sync::{AtomicU32, Ordering};

/// Words in one record (64 bytes: one cache line).
pub const RECORD_WORDS: usize = 16;
/// A record.
pub type Record = [u32; RECORD_WORDS];

/// The first word of every ring: "CoR1".
pub const MAGIC: u32 = 0x436f_5231;
/// The layout version.
pub const VERSION: u32 = 1;

const W_MAGIC: usize = 0;
const W_VERSION: usize = 1;
const W_CAPACITY: usize = 2;
const W_RECORD: usize = 3;
const W_HEAD: usize = 16;
const W_TAIL: usize = 32;
const W_CONSUMERS_ASLEEP: usize = 48;
const W_PRODUCERS_ASLEEP: usize = 64;
const W_RECORDS: usize = 80;

/// The most records a ring may hold.
pub const MAX_CAPACITY: u32 = 1 << 20;

/// Words needed for a ring of `capacity` records.
pub fn words_for(capacity: u32) -> usize {
    W_RECORDS + capacity as usize * RECORD_WORDS
}

/// Bytes needed for a ring of `capacity` records.
pub fn bytes_for(capacity: u32) -> usize {
    words_for(capacity) * 4
}

/// Words of a direct ring between two domains: the ring, then one record of flags. The first
/// flag word ([`direct_parked_word`]) is set by a consumer that sleeps somewhere the producer
/// cannot wake with a futex (parked in its block manager), so that the producer asks the
/// block manager to wake it; the second and third are the staging area's counters
/// ([`direct_staged_word`], [`direct_filled_word`]).
pub fn direct_words(capacity: u32) -> usize {
    words_for(capacity) + RECORD_WORDS
}

/// The index of the parked flag in a direct ring's words.
pub fn direct_parked_word(capacity: u32) -> usize {
    words_for(capacity)
}

/// The index of the staging counter in a direct ring's words: how many bytes of the staging
/// area (a wrapping count) the consumer has finished with, written only by the consumer.
pub fn direct_staged_word(capacity: u32) -> usize {
    words_for(capacity) + 1
}

/// The index of the filled counter in a direct ring's words: how many bytes of the staging
/// area (a wrapping count, as the staging counter) the producer has written, raised as it
/// copies a streamed inline transfer's bytes so that the consumer may copy them out behind
/// it; written only by the producer.
pub fn direct_filled_word(capacity: u32) -> usize {
    words_for(capacity) + 2
}

/// Bytes of a direct ring's staging area, where the producer puts the bytes a record
/// announces (inline transfers) for the consumer to copy out. Its pages are touched only as
/// used: a producer starts again at its beginning whenever the consumer has caught up.
pub const DIRECT_STAGING: usize = 4 << 20;

/// Where a direct ring's staging area starts, in bytes: the page after its words.
pub fn direct_staging_offset(capacity: u32) -> usize {
    (direct_words(capacity) * 4).div_ceil(4096) * 4096
}

/// The bytes of a direct ring's memory: its words, then its staging area.
pub fn direct_bytes(capacity: u32) -> usize {
    direct_staging_offset(capacity) + DIRECT_STAGING
}

/// Words for a pair of rings of `capacity` records laid out one after the other (a client's
/// request ring, then its answer ring).
pub fn pair_words(capacity: u32) -> usize {
    2 * words_for(capacity)
}

/// The two rings of a pair laid out by [`pair_words`]; `None` if `words` is too short.
pub fn split_pair(words: &[AtomicU32], capacity: u32) -> Option<(&[AtomicU32], &[AtomicU32])> {
    let n = words_for(capacity);
    Some((words.get(..n)?, words.get(n..2 * n)?))
}

/// What went wrong with a ring.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The memory is not a ring this build understands.
    #[error("not a ring: {0}")]
    BadHeader(String),
    /// The memory is too small for the ring it describes.
    #[error("the ring needs {needed} words but the memory has {got}")]
    TooSmall {
        /// Words the header asks for.
        needed: usize,
        /// Words given.
        got: usize,
    },
    /// The peer wrote an impossible position: it broke the protocol.
    #[error("the peer corrupted the ring: {0}")]
    Corrupt(String),
}

/// How a side sleeps and wakes: futexes across processes, a model under loom.
pub trait Doorbell {
    /// Sleeps while `word` holds `expected`, at most `timeout` (`None`: for ever). May return
    /// early for no reason.
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>);
    /// Wakes every sleeper on `word`.
    fn wake(&self, word: &AtomicU32);
}

/// Futex doorbells: they work across processes sharing the ring's memory.
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug, Default)]
pub struct Futex;

#[cfg(not(loom))]
impl Doorbell for Futex {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        // An error (impossible for a valid, aligned word) is a spurious wake-up: the caller
        // looks again.
        let _ = cosh_sys::futex::wait(word, expected, timeout);
    }

    fn wake(&self, word: &AtomicU32) {
        let _ = cosh_sys::futex::wake(word, u32::MAX);
    }
}

/// An eventfd doorbell: waking rings the eventfd, so that a consumer can sleep in `poll`
/// together with its other descriptors (the block manager's side of per-client rings).
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug)]
pub struct EventBell<'a>(pub &'a cosh_sys::eventfd::EventFd);

#[cfg(not(loom))]
impl Doorbell for EventBell<'_> {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        if word.load(Ordering::SeqCst) == expected {
            let _ = self.0.wait(timeout);
        }
    }

    fn wake(&self, _word: &AtomicU32) {
        // A full eventfd counter (impossible in practice) still leaves it readable.
        let _ = self.0.ring();
    }
}

/// Writes a fresh ring header over `words` (the creator does this once, before anyone
/// attaches).
pub fn init(words: &[AtomicU32], capacity: u32) -> Result<(), RingError> {
    if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
        return Err(RingError::BadHeader(format!(
            "capacity {capacity} is not a power of two up to {MAX_CAPACITY}"
        )));
    }
    let needed = words_for(capacity);
    if words.len() < needed {
        return Err(RingError::TooSmall {
            needed,
            got: words.len(),
        });
    }
    for w in &words[..W_RECORDS] {
        w.store(0, Ordering::Relaxed);
    }
    words[W_VERSION].store(VERSION, Ordering::Relaxed);
    words[W_CAPACITY].store(capacity, Ordering::Relaxed);
    words[W_RECORD].store(RECORD_WORDS as u32, Ordering::Relaxed);
    words[W_MAGIC].store(MAGIC, Ordering::Release);
    Ok(())
}

/// Reads and checks the header; returns the capacity.
fn attach(words: &[AtomicU32]) -> Result<u32, RingError> {
    if words.len() < W_RECORDS {
        return Err(RingError::TooSmall {
            needed: W_RECORDS,
            got: words.len(),
        });
    }
    let magic = words[W_MAGIC].load(Ordering::Acquire);
    if magic != MAGIC {
        return Err(RingError::BadHeader(format!("magic {magic:#x}")));
    }
    let version = words[W_VERSION].load(Ordering::Relaxed);
    if version != VERSION {
        return Err(RingError::BadHeader(format!(
            "layout version {version}, this build reads {VERSION}"
        )));
    }
    let record = words[W_RECORD].load(Ordering::Relaxed);
    if record as usize != RECORD_WORDS {
        return Err(RingError::BadHeader(format!("records of {record} words")));
    }
    let capacity = words[W_CAPACITY].load(Ordering::Relaxed);
    reattach(words, capacity)?;
    Ok(capacity)
}

/// Checks a capacity (read from the header, or kept from an earlier attach: then the header
/// is not read again, and this side trusts only what it kept) against the words.
fn reattach(words: &[AtomicU32], capacity: u32) -> Result<(), RingError> {
    if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
        return Err(RingError::BadHeader(format!("capacity {capacity}")));
    }
    let needed = words_for(capacity);
    if words.len() < needed {
        return Err(RingError::TooSmall {
            needed,
            got: words.len(),
        });
    }
    Ok(())
}

fn record_at(words: &[AtomicU32], capacity: u32, position: u32) -> &[AtomicU32] {
    let slot = (position & (capacity - 1)) as usize;
    let start = W_RECORDS + slot * RECORD_WORDS;
    &words[start..start + RECORD_WORDS]
}

/// The writing side of a ring.
#[derive(Debug)]
pub struct Producer<'a> {
    words: &'a [AtomicU32],
    capacity: u32,
    head: u32,
    /// The consumer's tail as last read: the consumer only ever raises it, so the room it
    /// shows is a lower bound, and the shared word (a cache line the consumer writes) is read
    /// again only when that bound is too small.
    seen: u32,
}

impl<'a> Producer<'a> {
    /// Attaches to a ring made by [`init`], continuing from its current position.
    pub fn attach(words: &'a [AtomicU32]) -> Result<Self, RingError> {
        let capacity = attach(words)?;
        let head = words[W_HEAD].load(Ordering::Relaxed);
        let tail = words[W_TAIL].load(Ordering::Acquire);
        if head.wrapping_sub(tail) > capacity {
            return Err(RingError::Corrupt(format!(
                "head {head} is more than {capacity} records past tail {tail}"
            )));
        }
        Ok(Producer {
            words,
            capacity,
            head,
            seen: tail,
        })
    }

    /// Attaches at a position this side kept itself (not trusting the shared `head`).
    pub fn attach_at(words: &'a [AtomicU32], head: u32) -> Result<Self, RingError> {
        Producer::resume(words, attach(words)?, head)
    }

    /// Attaches again with the capacity and position this side kept from an earlier attach
    /// (the header is not read again): the cheap way back to a ring used many times.
    pub fn resume(words: &'a [AtomicU32], capacity: u32, head: u32) -> Result<Self, RingError> {
        reattach(words, capacity)?;
        let mut p = Producer {
            words,
            capacity,
            head,
            seen: head,
        };
        p.refresh()?;
        Ok(p)
    }

    /// [`Producer::resume`] with the consumer's tail as this side last saw it
    /// ([`Producer::seen`]), not read again until the room it leaves runs out.
    pub fn resume_seen(
        words: &'a [AtomicU32],
        capacity: u32,
        head: u32,
        seen: u32,
    ) -> Result<Self, RingError> {
        reattach(words, capacity)?;
        if head.wrapping_sub(seen) > capacity {
            return Err(RingError::Corrupt(format!(
                "a tail {seen} kept beyond head {head}"
            )));
        }
        Ok(Producer {
            words,
            capacity,
            head,
            seen,
        })
    }

    /// The consumer's tail as this side last read it, for [`Producer::resume_seen`].
    pub fn seen(&self) -> u32 {
        self.seen
    }

    /// Reads the consumer's tail again; returns the records it has not taken.
    pub fn refresh(&mut self) -> Result<u32, RingError> {
        let used = self.pending()?;
        self.seen = self.head.wrapping_sub(used);
        Ok(used)
    }

    /// At most this many records are pending (the tail as last read): no shared read.
    pub fn pending_at_most(&self) -> u32 {
        self.head.wrapping_sub(self.seen)
    }

    /// Whether `needed` records fit, reading the consumer's tail only when the last reading
    /// leaves too little room.
    pub fn has_room(&mut self, needed: u32) -> Result<bool, RingError> {
        if self.capacity - self.pending_at_most() >= needed {
            return Ok(true);
        }
        Ok(self.capacity - self.refresh()? >= needed)
    }

    /// This side's position (records ever pushed), to attach again later with
    /// [`Producer::attach_at`] or [`Producer::resume`].
    pub fn position(&self) -> u32 {
        self.head
    }

    /// The ring's capacity in records.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Records the consumer has not taken yet.
    pub fn pending(&self) -> Result<u32, RingError> {
        let tail = self.words[W_TAIL].load(Ordering::Acquire);
        let used = self.head.wrapping_sub(tail);
        if used > self.capacity {
            return Err(RingError::Corrupt(format!(
                "tail {tail} claims records beyond head {}",
                self.head
            )));
        }
        Ok(used)
    }

    /// Appends `record` unless the ring is full (`Ok(false)`). The consumer may see it at once,
    /// but is not woken: call [`Producer::notify`] after a batch.
    pub fn try_push(&mut self, record: &Record) -> Result<bool, RingError> {
        if !self.has_room(1)? {
            return Ok(false);
        }
        for (w, v) in record_at(self.words, self.capacity, self.head)
            .iter()
            .zip(record)
        {
            w.store(*v, Ordering::Relaxed);
        }
        self.head = self.head.wrapping_add(1);
        self.words[W_HEAD].store(self.head, Ordering::Release);
        Ok(true)
    }

    /// The record `ahead` places past the head, to be written before [`Producer::publish`]
    /// (the caller checked that the ring has room for it).
    pub(crate) fn staged(&self, ahead: u32) -> &[AtomicU32] {
        record_at(self.words, self.capacity, self.head.wrapping_add(ahead))
    }

    /// Makes the next `n` staged records visible to the consumer at once.
    pub(crate) fn publish(&mut self, n: u32) {
        self.head = self.head.wrapping_add(n);
        self.words[W_HEAD].store(self.head, Ordering::Release);
    }

    /// After a push: [`Producer::notify`], and for a consumer that may wait where no doorbell
    /// of this ring reaches it (see [`Consumer::park`]), `true` if it said so, clearing the
    /// flag; then the producer must wake it its own way. Either this sees the flag or the
    /// consumer sees the record. One fence serves both.
    pub fn notify_or_take_parked(&self, bell: &impl Doorbell, flag: &AtomicU32) -> bool {
        fence(Ordering::SeqCst);
        if self.words[W_CONSUMERS_ASLEEP].load(Ordering::Relaxed) != 0 {
            bell.wake(&self.words[W_HEAD]);
        }
        flag.load(Ordering::Relaxed) != 0 && flag.swap(0, Ordering::Relaxed) != 0
    }

    /// Wakes the consumer if it sleeps (or is about to).
    pub fn notify(&self, bell: &impl Doorbell) {
        fence(Ordering::SeqCst);
        if self.words[W_CONSUMERS_ASLEEP].load(Ordering::Relaxed) != 0 {
            bell.wake(&self.words[W_HEAD]);
        }
    }

    /// Before a push that takes a while to prepare (bytes to copy first): wakes a consumer
    /// that sleeps now, so that its wake-up (tens of microseconds on a virtual machine)
    /// overlaps the preparation; `true` if one did. A hint that costs one load when nobody
    /// sleeps: the notification after the push is still needed. A consumer woken before the
    /// record is there looks again for its spins before it sleeps again ([`Consumer::wait`]).
    pub fn rouse(&self, bell: &impl Doorbell) -> bool {
        let asleep = self.words[W_CONSUMERS_ASLEEP].load(Ordering::Relaxed) != 0;
        if asleep {
            bell.wake(&self.words[W_HEAD]);
        }
        asleep
    }

    /// Appends `record`, waiting up to `timeout` for room (spinning `spins` times before
    /// sleeping), then notifies. `Ok(false)` if the ring stayed full.
    pub fn push(
        &mut self,
        record: &Record,
        bell: &impl Doorbell,
        spins: u32,
        timeout: Option<Duration>,
    ) -> Result<bool, RingError> {
        loop {
            if self.try_push(record)? {
                self.notify(bell);
                return Ok(true);
            }
            let (head, capacity) = (self.head, self.capacity);
            let room = Waiter {
                words: self.words,
                asleep: W_PRODUCERS_ASLEEP,
                watched: W_TAIL,
            }
            .wait(
                || Ok(self.pending()? < capacity),
                |tail| head.wrapping_sub(tail) == capacity,
                bell,
                spins,
                timeout,
            )?;
            if !room {
                return Ok(false);
            }
        }
    }
}

/// Looks between two yields of a waiter woken before the other side's write.
const YIELD_EVERY: u32 = 64;

/// One side waiting for the other to move a position word: spin, then announce the sleep in
/// `asleep`, fence, look again, and sleep on `watched` while it still holds what was seen.
struct Waiter<'a> {
    words: &'a [AtomicU32],
    asleep: usize,
    watched: usize,
}

impl Waiter<'_> {
    /// Waits until `ready()` (`Ok(true)`) or the timeout (`Ok(false)`). `blocked(value)` says
    /// whether a `watched` word holding `value` still means waiting.
    fn wait(
        &self,
        mut ready: impl FnMut() -> Result<bool, RingError>,
        blocked: impl Fn(u32) -> bool,
        bell: &impl Doorbell,
        spins: u32,
        timeout: Option<Duration>,
    ) -> Result<bool, RingError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut spun = 0;
        let mut woken = false;
        loop {
            if ready()? {
                return Ok(true);
            }
            if spun < spins {
                spun += 1;
                // Woken ahead of the other side's write, it may be about to run on this very
                // core: yield now and then rather than hold the core it needs.
                if woken && spun % YIELD_EVERY == 0 {
                    sync::yield_now();
                } else {
                    sync::spin();
                }
                continue;
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(false),
                },
                None => None,
            };
            let asleep = &self.words[self.asleep];
            asleep.fetch_add(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            let seen = self.words[self.watched].load(Ordering::Relaxed);
            if blocked(seen) {
                bell.wait(&self.words[self.watched], seen, left);
                // Perhaps woken ahead of the write ([`Producer::rouse`]): spin again before
                // sleeping again.
                spun = 0;
                woken = true;
            }
            asleep.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The reading side of a ring.
#[derive(Debug)]
pub struct Consumer<'a> {
    words: &'a [AtomicU32],
    capacity: u32,
    tail: u32,
}

impl<'a> Consumer<'a> {
    /// Attaches to a ring made by [`init`], continuing from its current position.
    pub fn attach(words: &'a [AtomicU32]) -> Result<Self, RingError> {
        let capacity = attach(words)?;
        let tail = words[W_TAIL].load(Ordering::Relaxed);
        Ok(Consumer {
            words,
            capacity,
            tail,
        })
    }

    /// Attaches at a position this side kept itself (not trusting the shared `tail`).
    pub fn attach_at(words: &'a [AtomicU32], tail: u32) -> Result<Self, RingError> {
        Consumer::resume(words, attach(words)?, tail)
    }

    /// Attaches again with the capacity and position this side kept, like
    /// [`Producer::resume`].
    pub fn resume(words: &'a [AtomicU32], capacity: u32, tail: u32) -> Result<Self, RingError> {
        reattach(words, capacity)?;
        let c = Consumer {
            words,
            capacity,
            tail,
        };
        c.available()?;
        Ok(c)
    }

    /// This side's position (records ever taken), to attach again later with
    /// [`Consumer::attach_at`] or [`Consumer::resume`].
    pub fn position(&self) -> u32 {
        self.tail
    }

    /// The ring's capacity in records.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Waits until records are available (`Ok(true)`), spinning `spins` times and then
    /// sleeping (woken with nothing there, as [`Producer::rouse`] may do, it spins again,
    /// yielding now and then), or until `timeout` passes (`Ok(false)`). Takes nothing.
    pub fn wait(
        &self,
        bell: &impl Doorbell,
        spins: u32,
        timeout: Option<Duration>,
    ) -> Result<bool, RingError> {
        let tail = self.tail;
        Waiter {
            words: self.words,
            asleep: W_CONSUMERS_ASLEEP,
            watched: W_HEAD,
        }
        .wait(
            || {
                // The slot the next record will fill, read with `head` on every look: the
                // record's cache line travels while `head`'s does, not after it.
                std::hint::black_box(self.peek(0)[0].load(Ordering::Relaxed));
                Ok(self.available()? > 0)
            },
            |head| head == tail,
            bell,
            spins,
            timeout,
        )
    }

    /// Records waiting, as the producer claims (checked against the capacity).
    pub fn available(&self) -> Result<u32, RingError> {
        let head = self.words[W_HEAD].load(Ordering::Acquire);
        let ready = head.wrapping_sub(self.tail);
        if ready > self.capacity {
            return Err(RingError::Corrupt(format!(
                "head {head} claims {ready} records past tail {}, more than the {} the ring holds",
                self.tail, self.capacity
            )));
        }
        Ok(ready)
    }

    /// The record `ahead` places past the tail, to be read before [`Consumer::release`] (the
    /// caller checked that it is available).
    pub(crate) fn peek(&self, ahead: u32) -> &[AtomicU32] {
        record_at(self.words, self.capacity, self.tail.wrapping_add(ahead))
    }

    /// Gives the next `n` records back to the producer at once.
    pub(crate) fn release(&mut self, n: u32) {
        self.tail = self.tail.wrapping_add(n);
        self.words[W_TAIL].store(self.tail, Ordering::Release);
    }

    /// Takes the oldest record, if any. The producer may reuse its slot at once, but is not
    /// woken: call [`Consumer::notify`] after a batch if producers may wait for room.
    pub fn try_pop(&mut self) -> Result<Option<Record>, RingError> {
        if self.available()? == 0 {
            return Ok(None);
        }
        let mut record = [0u32; RECORD_WORDS];
        for (v, w) in record
            .iter_mut()
            .zip(record_at(self.words, self.capacity, self.tail))
        {
            *v = w.load(Ordering::Relaxed);
        }
        self.tail = self.tail.wrapping_add(1);
        self.words[W_TAIL].store(self.tail, Ordering::Release);
        Ok(Some(record))
    }

    /// For a consumer that sleeps elsewhere (in `poll`, on an [`EventBell`]'s eventfd, say):
    /// announces the sleep to the producer and looks once more. `Ok(true)` means records are
    /// already waiting: do not sleep. Either way, call [`Consumer::awake`] afterwards.
    pub fn prepare_sleep(&self) -> Result<bool, RingError> {
        self.words[W_CONSUMERS_ASLEEP].fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Ok(self.available()? > 0)
    }

    /// For a consumer about to wait somewhere else (in another process's hands): sets `flag`
    /// and looks once more. `Ok(true)` means records already wait: do not wait. Either way,
    /// [`Consumer::unpark`] afterwards.
    pub fn park(&self, flag: &AtomicU32) -> Result<bool, RingError> {
        flag.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Ok(self.available()? > 0)
    }

    /// Clears a flag set by [`Consumer::park`].
    pub fn unpark(&self, flag: &AtomicU32) {
        flag.store(0, Ordering::Relaxed);
    }

    /// Ends a sleep announced by [`Consumer::prepare_sleep`].
    pub fn awake(&self) {
        self.words[W_CONSUMERS_ASLEEP].fetch_sub(1, Ordering::Relaxed);
    }

    /// Wakes a producer waiting for room, if any.
    pub fn notify(&self, bell: &impl Doorbell) {
        fence(Ordering::SeqCst);
        if self.words[W_PRODUCERS_ASLEEP].load(Ordering::Relaxed) != 0 {
            bell.wake(&self.words[W_TAIL]);
        }
    }

    /// Takes the oldest record, spinning `spins` times and then sleeping until one comes or
    /// `timeout` passes (`Ok(None)`).
    pub fn pop(
        &mut self,
        bell: &impl Doorbell,
        spins: u32,
        timeout: Option<Duration>,
    ) -> Result<Option<Record>, RingError> {
        if !self.wait(bell, spins, timeout)? {
            return Ok(None);
        }
        let record = self.try_pop()?;
        self.notify(bell);
        Ok(record)
    }
}

#[cfg(loom)]
pub use sync::{LoomBell, LoomEventBell};
