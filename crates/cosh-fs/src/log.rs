//! The write log: how a lease holder that shares coherent memory with the service writes
//! behind without a system call per write.
//!
//! The client makes a ring of 8-byte words in a memfd, maps it and hands the memfd to the
//! service ([`crate::proto::Request::Log`]), which maps it too. Each small write the client
//! makes under a lease is then one entry appended to the ring — four header words (length,
//! handle, offset, the time the write was made) and the bytes, padded to a word — and
//! nothing else: no message, no
//! doorbell. Both sides touch the ring only with atomic word loads and stores; the client
//! publishes an entry by advancing `head` (release) once it is whole, the service frees room
//! by advancing `tail`.
//!
//! The service takes the entries whenever it looks: before it handles any message of that
//! client (so the client's own order holds), before it answers anyone (so a request
//! that starts after the write completed sees it), and whenever it has nothing else to do.
//! A full log makes the client fall back to a write that waits for its answer, which the
//! service handles only after taking everything logged before it.
//!
//! The service trusts nothing in the log: it reads the ring's size once, a `head` that claims
//! more than the ring holds or an entry longer than an inline write or than what was
//! published is corruption (the client is cut off), each entry is copied out before it is
//! used, and it is applied only as a write-behind of that client, with the same checks (its
//! handle, its lease). Bytes a client changes after appending them only ever land in its own
//! leased file.
//!
//! | words | content |
//! |---|---|
//! | 0 | magic ("CoshLog1") |
//! | 1 | the ring's size in words (a power of two) |
//! | 2 | set by the service when it is about to sleep, taken by a client that must wake it |
//! | 8 | `head`: words ever appended, written by the client |
//! | 16 | `tail`: words ever taken, written by the service |
//! | 24 | notices the service has sent the client, counted by the service |
//! | 32.. | the ring |
//!
//! **The notice count.** The service counts every notice it sends the client (after the
//! send), so a client that must look at its socket before it trusts its cache looks at this
//! word instead, and reads the socket only when the count moved: no system call per cached
//! read.
//!
//! **Waking the service.** A service with nothing to do sleeps in `poll`, where entries do not
//! wake it. Before it sleeps it sets the sleep word, fences, and looks at the log once more;
//! a client fences after publishing an entry and looks at the sleep word: of the two, at
//! least one sees the other's store, so either the service finds the entry or the client
//! takes the word and wakes the service with a message (one per sleep, not per write).

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use cosh_sys::mapping::{Mapping, Prefault, ReadWrite};
use cosh_sys::memfd::Memfd;

use crate::proto::INLINE_MAX;

/// Words in the ring of a log the client makes (4 MiB: a client writing a large file in
/// small pieces runs ahead of the service rather than waiting for it).
pub const WORDS: u64 = 1 << 19;

/// The most words a service accepts in a ring (64 MiB of memory).
pub const MAX_WORDS: u64 = 1 << 23;

const MAGIC: u64 = u64::from_le_bytes(*b"CoshLog1");
const W_MAGIC: usize = 0;
const W_SIZE: usize = 1;
const W_ASLEEP: usize = 2;
const W_HEAD: usize = 8;
const W_TAIL: usize = 16;
const W_NOTICES: usize = 24;
const W_RING: usize = 32;

/// Header words of each entry: the length, the handle, the offset, the time.
const HEADER: u64 = 4;

fn check_size(words: u64) -> Result<(), String> {
    if !words.is_power_of_two() || words > MAX_WORDS {
        return Err(format!("a log of {words} words"));
    }
    Ok(())
}

/// Bytes of memory for a ring of `words` words.
fn bytes_for(words: u64) -> u64 {
    (W_RING as u64 + words) * 8
}

/// Runs `f` on the log's words (header and ring), as atomics.
fn with_words<T>(
    map: &mut Mapping<ReadWrite>,
    words: u64,
    f: impl FnOnce(&[AtomicU64]) -> Result<T, String>,
) -> Result<T, String> {
    let shared = map.shared_words();
    let w = shared
        .atomic_u64s(0, W_RING + words as usize)
        .ok_or("the log's memory is smaller than its ring")?;
    f(w)
}

/// Words an entry of `len` bytes takes.
fn entry_words(len: usize) -> u64 {
    HEADER + (len as u64).div_ceil(8)
}

/// The client's end: appends writes.
#[derive(Debug)]
pub struct LogWriter {
    memfd: Memfd,
    map: Mapping<ReadWrite>,
    words: u64,
    head: u64,
}

impl LogWriter {
    /// A new, empty log whose ring holds `words` words (a power of two up to
    /// [`MAX_WORDS`]).
    pub fn create(words: u64) -> Result<LogWriter, String> {
        check_size(words)?;
        let memfd = Memfd::create("coshfs-log", bytes_for(words)).map_err(|e| e.to_string())?;
        let mut map = memfd.map_write(Prefault::Now).map_err(|e| e.to_string())?;
        with_words(&mut map, words, |w| {
            w[W_SIZE].store(words, Ordering::Relaxed);
            w[W_MAGIC].store(MAGIC, Ordering::Release);
            Ok(())
        })?;
        Ok(LogWriter {
            memfd,
            map,
            words,
            head: 0,
        })
    }

    /// The memory to hand to the service.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    /// The ring's size in words.
    pub fn words(&self) -> u64 {
        self.words
    }

    /// After an append: whether the service went to sleep and must be woken (taking the
    /// sleep word, so that one wake-up is sent per sleep).
    pub fn must_wake(&mut self) -> bool {
        let size = self.words;
        with_words(&mut self.map, size, |w| {
            std::sync::atomic::fence(Ordering::SeqCst);
            Ok(w[W_ASLEEP].load(Ordering::Relaxed) == 1
                && w[W_ASLEEP].swap(0, Ordering::AcqRel) == 1)
        })
        .unwrap_or(false)
    }

    /// How many notices the service has sent so far (every one counted is in the socket).
    pub fn notices(&mut self) -> u64 {
        let size = self.words;
        with_words(&mut self.map, size, |w| {
            Ok(w[W_NOTICES].load(Ordering::Acquire))
        })
        .unwrap_or(u64::MAX)
    }

    /// Appends a write of `data` at `offset` through handle `fh`, made at `made_ns`
    /// (nanoseconds since the Unix epoch: the file's new modification time); `Ok(false)` when
    /// the log has no room for it now. A write of more than [`INLINE_MAX`] bytes takes one
    /// entry per [`INLINE_MAX`] bytes, all published at once, so the service applies it whole
    /// or not at all. An error means the service broke the ring (moved its position
    /// impossibly).
    pub fn append(
        &mut self,
        fh: u64,
        offset: u64,
        made_ns: i64,
        data: &[u8],
    ) -> Result<bool, String> {
        let (size, head) = (self.words, self.head);
        let pieces = || data.chunks(INLINE_MAX).enumerate();
        let need: u64 = if data.is_empty() {
            entry_words(0)
        } else {
            pieces().map(|(_, p)| entry_words(p.len())).sum()
        };
        if need > size {
            return Err(format!(
                "a logged write of {} bytes, more than the log holds",
                data.len()
            ));
        }
        with_words(&mut self.map, size, |w| {
            let tail = w[W_TAIL].load(Ordering::Acquire);
            let used = head.wrapping_sub(tail);
            if used > size {
                return Err(format!(
                    "the service moved the log's tail to {tail}, past {head}"
                ));
            }
            if size - used < need {
                return Ok(false);
            }
            let ring = &w[W_RING..];
            let mask = size - 1;
            let mut at = head;
            let mut put = |v: u64| {
                ring[(at & mask) as usize].store(v, Ordering::Relaxed);
                at += 1;
            };
            let empty: &[u8] = &[];
            let all: Vec<(usize, &[u8])> = if data.is_empty() {
                vec![(0, empty)]
            } else {
                pieces().collect()
            };
            for (k, piece) in all {
                put(piece.len() as u64);
                put(fh);
                put(offset.wrapping_add((k * INLINE_MAX) as u64));
                put(made_ns as u64);
                let mut chunks = piece.chunks_exact(8);
                for c in &mut chunks {
                    let mut v = [0u8; 8];
                    v.copy_from_slice(c);
                    put(u64::from_le_bytes(v));
                }
                let rest = chunks.remainder();
                if !rest.is_empty() {
                    let mut v = [0u8; 8];
                    v[..rest.len()].copy_from_slice(rest);
                    put(u64::from_le_bytes(v));
                }
            }
            w[W_HEAD].store(head + need, Ordering::Release);
            Ok(true)
        })
        .inspect(|&appended| {
            if appended {
                self.head = head + need;
            }
        })
    }
}

impl LogWriter {
    /// Like [`LogWriter::append`], but a full log is tried again for up to `patience`: the
    /// service takes entries while it is awake, and a little waiting costs less than a write
    /// that waits for its answer.
    pub fn append_within(
        &mut self,
        fh: u64,
        offset: u64,
        made_ns: i64,
        data: &[u8],
        patience: std::time::Duration,
    ) -> Result<bool, String> {
        let started = std::time::Instant::now();
        loop {
            if self.append(fh, offset, made_ns, data)? {
                return Ok(true);
            }
            if started.elapsed() >= patience {
                return Ok(false);
            }
            std::hint::spin_loop();
        }
    }
}

/// One write taken from a log.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The client's handle.
    pub fh: u64,
    /// The first byte.
    pub offset: u64,
    /// When the write was made (nanoseconds since the Unix epoch).
    pub made_ns: i64,
    /// The bytes.
    pub data: &'a [u8],
}

/// The service's end: takes writes.
#[derive(Debug)]
pub struct LogReader {
    map: Mapping<ReadWrite>,
    words: u64,
    tail: u64,
    data: Vec<u8>,
}

impl LogReader {
    /// Maps the log a client handed over, checking its memory and its header.
    pub fn attach(fd: OwnedFd, words: u64) -> Result<LogReader, String> {
        check_size(words)?;
        let memfd = Memfd::from_fd(fd).map_err(|e| e.to_string())?;
        if memfd.len() < bytes_for(words) {
            return Err("the log's memory is smaller than its ring".into());
        }
        let mut map = memfd.map_write(Prefault::Now).map_err(|e| e.to_string())?;
        let tail = with_words(&mut map, words, |w| {
            if w[W_MAGIC].load(Ordering::Acquire) != MAGIC {
                return Err("the memory is not a write log".into());
            }
            let size = w[W_SIZE].load(Ordering::Relaxed);
            if size != words {
                return Err(format!(
                    "the log holds {size} words, not the {words} announced"
                ));
            }
            Ok(w[W_TAIL].load(Ordering::Relaxed))
        })?;
        Ok(LogReader {
            map,
            words,
            tail,
            data: Vec::with_capacity(INLINE_MAX),
        })
    }

    /// Says the service is about to sleep (`true`) or is awake (`false`). After saying it
    /// sleeps, the service must look at the log once more before it does.
    pub fn set_asleep(&mut self, asleep: bool) {
        let size = self.words;
        let _ = with_words(&mut self.map, size, |w| {
            w[W_ASLEEP].store(u64::from(asleep), Ordering::Relaxed);
            if asleep {
                std::sync::atomic::fence(Ordering::SeqCst);
            }
            Ok(())
        });
    }

    /// Counts a notice sent to the client.
    pub fn noticed(&mut self) {
        let size = self.words;
        let _ = with_words(&mut self.map, size, |w| {
            w[W_NOTICES].fetch_add(1, Ordering::Release);
            Ok(())
        });
    }

    /// The next complete write, `None` if there is none yet; an error means the log is
    /// corrupt (the client broke it).
    pub fn take(&mut self) -> Result<Option<Entry<'_>>, String> {
        let (size, tail) = (self.words, self.tail);
        let data = &mut self.data;
        let taken = with_words(&mut self.map, size, |w| {
            let head = w[W_HEAD].load(Ordering::Acquire);
            let avail = head.wrapping_sub(tail);
            if avail == 0 {
                return Ok(None);
            }
            if avail > size {
                return Err(format!(
                    "head {head} is more than the ring past tail {tail}"
                ));
            }
            let ring = &w[W_RING..];
            let mask = size - 1;
            let get = |i: u64| ring[((tail + i) & mask) as usize].load(Ordering::Relaxed);
            let len = get(0);
            if len > INLINE_MAX as u64 || entry_words(len as usize) > avail {
                return Err(format!(
                    "an entry of {len} bytes, with {} bytes published",
                    avail * 8
                ));
            }
            let (fh, offset, made_ns) = (get(1), get(2), get(3) as i64);
            let len = len as usize;
            data.clear();
            for i in 0..(len as u64).div_ceil(8) {
                data.extend_from_slice(&get(HEADER + i).to_le_bytes());
            }
            data.truncate(len);
            let next = tail + entry_words(len);
            w[W_TAIL].store(next, Ordering::Release);
            Ok(Some((fh, offset, made_ns, next)))
        })?;
        Ok(taken.map(|(fh, offset, made_ns, next)| {
            self.tail = next;
            Entry {
                fh,
                offset,
                made_ns,
                data: &self.data,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_come_out_in_order_and_a_full_log_says_so() {
        let mut w = LogWriter::create(512).expect("ok");
        let fd = w.fd().try_clone_to_owned().expect("ok");
        let mut r = LogReader::attach(fd, 512).expect("ok");
        assert_eq!(r.take().expect("ok"), None);
        assert!(w.append(3, 10, 7, b"hello").expect("ok"));
        assert!(w.append(4, 0, 8, &[7u8; 1000]).expect("ok"));
        assert_eq!(
            r.take().expect("ok"),
            Some(Entry {
                fh: 3,
                offset: 10,
                made_ns: 7,
                data: b"hello"
            })
        );
        let e = r.take().expect("ok").expect("ok");
        assert_eq!((e.fh, e.offset, e.made_ns, e.data.len()), (4, 0, 8, 1000));
        assert!(e.data.iter().all(|&b| b == 7));
        assert_eq!(r.take().expect("ok"), None);
        // 516 words would hold four 1,000-byte writes (129 words each): 512 hold three.
        let fits = (0..8)
            .take_while(|_| w.append(1, 0, 0, &[1u8; 1000]).expect("ok"))
            .count();
        assert_eq!(fits, 3);
        assert!(!w.append(1, 0, 0, &[1u8; 1000]).expect("ok"));
        // Taking one makes room for one.
        assert!(r.take().expect("ok").is_some());
        assert!(w.append(1, 0, 0, &[1u8; 1000]).expect("ok"));
        // The notice count is the service's to move.
        assert_eq!(w.notices(), 0);
        r.noticed();
        r.noticed();
        assert_eq!(w.notices(), 2);
    }

    #[test]
    fn oversized_writes_and_bad_logs_are_refused() {
        let mut w = LogWriter::create(64).expect("ok");
        assert!(
            w.append(1, 0, 0, &vec![0u8; 1000]).is_err(),
            "more than the log holds"
        );
        assert!(LogWriter::create(100).is_err());
        let fd = w.fd().try_clone_to_owned().expect("ok");
        // The announced size must be the ring's.
        assert!(LogReader::attach(fd, 128).is_err());
        // Memory that is not a sealed memfd is refused.
        let plain = std::fs::File::open("/dev/null").expect("ok");
        assert!(LogReader::attach(plain.into(), 64).is_err());
    }

    #[test]
    fn a_large_write_is_several_entries_published_together() {
        let mut w = LogWriter::create(1 << 16).expect("log");
        let mut r =
            LogReader::attach(w.fd().try_clone_to_owned().expect("fd"), 1 << 16).expect("ok");
        let data: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
        assert!(w.append(9, 1000, 5, &data).expect("append"));
        let mut got = Vec::new();
        while let Some(e) = r.take().expect("take") {
            assert_eq!((e.fh, e.made_ns), (9, 5));
            assert_eq!(e.offset, 1000 + got.len() as u64);
            assert!(e.data.len() <= INLINE_MAX);
            got.extend_from_slice(e.data);
        }
        assert_eq!(got, data);
    }

    #[test]
    fn a_sleeping_service_is_woken_once_per_sleep() {
        let mut w = LogWriter::create(64).expect("log");
        let mut r = LogReader::attach(w.fd().try_clone_to_owned().expect("fd"), 64).expect("ok");
        assert!(!w.must_wake(), "awake");
        r.set_asleep(true);
        assert!(w.append(1, 0, 0, b"x").expect("append"));
        assert!(w.must_wake(), "asleep: wake it");
        assert!(!w.must_wake(), "one wake-up per sleep");
        r.set_asleep(true);
        r.set_asleep(false);
        assert!(!w.must_wake(), "it woke by itself");
    }

    /// What a hostile client can do to the words the service reads.
    fn poke(w: &LogWriter, word: usize, value: u64) {
        let fd = w.fd().try_clone_to_owned().expect("ok");
        let mut map = Memfd::from_fd(fd)
            .expect("ok")
            .map_write(Prefault::Now)
            .expect("ok");
        let words = map.shared_words();
        words.atomic_u64s(0, W_RING + 1).expect("ok")[word].store(value, Ordering::Release);
    }

    #[test]
    fn a_corrupt_log_is_an_error_not_a_crash() {
        let mut w = LogWriter::create(64).expect("ok");
        let mut r = LogReader::attach(w.fd().try_clone_to_owned().expect("ok"), 64).expect("ok");
        // A head far past the tail.
        poke(&w, W_HEAD, 1 << 40);
        assert!(r.take().is_err());
        // An entry longer than what was published.
        poke(&w, W_HEAD, 0);
        assert!(w.append(1, 2, 0, b"abc").expect("ok"));
        poke(&w, W_RING, 1000);
        assert!(r.take().is_err());
        // One longer than any write.
        poke(&w, W_HEAD, 64);
        poke(&w, W_RING, u64::MAX);
        assert!(r.take().is_err());
        // The client's end refuses a tail the service moved past its head.
        poke(&w, W_TAIL, 1 << 30);
        assert!(w.append(1, 0, 0, b"x").is_err());
        // Memory that is not a log.
        let other = Memfd::create("not-a-log", bytes_for(64)).expect("ok");
        assert!(LogReader::attach(other.into(), 64).is_err());
    }
}
