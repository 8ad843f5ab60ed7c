//! Buffers in shared memory, and word-by-word atomic access to them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cosh_sys::mapping::{Mapping, Prefault, ReadWrite};
use cosh_sys::memfd::Memfd;

use crate::{Error, LINE, Result, check_range};

/// A buffer: a memfd of whole lines, and the length the pool's users see.
#[derive(Clone)]
pub struct Buffer {
    memfd: Arc<Memfd>,
    len: u64,
    /// The copy engine's mapping, made on first use and kept for the buffer's life.
    engine: Arc<Mutex<Option<Memory>>>,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Buffer {
    /// A zeroed buffer of `len` bytes (the memory behind it is rounded up to whole lines).
    pub(crate) fn create(name: &str, len: u64) -> Result<Buffer> {
        let lines = len.div_ceil(LINE).max(1);
        let bytes = lines.checked_mul(LINE).ok_or(Error::TooLarge { len })?;
        usize::try_from(bytes).map_err(|_| Error::TooLarge { len })?;
        Ok(Buffer {
            memfd: Arc::new(Memfd::create(name, bytes)?),
            len,
            engine: Arc::new(Mutex::new(None)),
        })
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A mapping of its memory.
    pub(crate) fn map(&self) -> Result<Memory> {
        Ok(Memory {
            map: self.memfd.map_write(Prefault::OnFirstTouch)?,
            len: self.len,
        })
    }

    /// Whether `other` is this buffer (or a clone of its handle).
    pub(crate) fn same(&self, other: &Buffer) -> bool {
        Arc::ptr_eq(&self.memfd, &other.memfd)
    }

    /// Runs `f` on the copy engine's mapping (made, every page at once, on first use).
    pub(crate) fn with_engine_map<T>(&self, f: impl FnOnce(&mut Memory) -> Result<T>) -> Result<T> {
        let mut slot = self
            .engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(Memory {
                map: self.memfd.map_write(Prefault::Now)?,
                len: self.len,
            });
        }
        match slot.as_mut() {
            Some(m) => f(m),
            None => Err(Error::EngineGone),
        }
    }
}

/// Copies the first `len` bytes of `source` into `target` (two different buffers) through
/// the copy engine's mappings, one atomic word at a time, in one pass.
pub(crate) fn engine_copy(source: &Buffer, target: &Buffer, len: u64) -> Result<()> {
    if source.same(target) {
        return Err(Error::SameBuffer);
    }
    check_range(
        0,
        usize::try_from(len).map_err(|_| Error::TooLarge { len })?,
        source.len,
    )?;
    check_range(
        0,
        usize::try_from(len).map_err(|_| Error::TooLarge { len })?,
        target.len,
    )?;
    let words = usize::try_from(len.div_ceil(LINE) * LINE_WORDS as u64)
        .map_err(|_| Error::TooLarge { len })?;
    with_both(source, target, |from, to| {
        let size = to.len;
        let (fw, tw) = (from.map.shared_words(), to.map.shared_words());
        let (Some(src), Some(dst)) = (fw.atomic_u64s(0, words), tw.atomic_u64s(0, words)) else {
            return Err(Error::OutOfRange {
                offset: 0,
                len,
                size,
            });
        };
        let whole = usize::try_from(len / WORD).unwrap_or(0);
        for (d, s) in dst[..whole].iter().zip(&src[..whole]) {
            d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        // A last partial word: bytes past `len` are not the target's to change.
        let rest = (len % WORD) as usize;
        if rest > 0 {
            let m = mask(0..rest);
            let v = src[whole].load(Ordering::Relaxed) & m;
            let _ = dst[whole].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some((old & !m) | v)
            });
        }
        Ok(())
    })
}

/// Runs `f` on the engine mappings of two different buffers, locked in a fixed order (by
/// address) so that two engines copying opposite ways cannot deadlock.
fn with_both<T>(
    source: &Buffer,
    target: &Buffer,
    f: impl FnOnce(&mut Memory, &mut Memory) -> Result<T>,
) -> Result<T> {
    if Arc::as_ptr(&source.memfd) < Arc::as_ptr(&target.memfd) {
        source.with_engine_map(|s| target.with_engine_map(|t| f(s, t)))
    } else {
        target.with_engine_map(|t| source.with_engine_map(|s| f(s, t)))
    }
}

/// One mapping of a buffer's memory, read and written only through atomic words: another
/// domain may write the same memory at any moment.
pub(crate) struct Memory {
    map: Mapping<ReadWrite>,
    len: u64,
}

const WORD: u64 = 8;
const LINE_WORDS: usize = (LINE / WORD) as usize;

/// A byte range cut into 8-byte words: a partial first word, whole words, a partial last one.
struct Words {
    /// Byte offset of the first word.
    first: usize,
    /// How many words the range touches.
    count: usize,
    /// Bytes of the range in the first word, from where.
    head: std::ops::Range<usize>,
    /// Bytes of the range in the last word (when more than one word).
    tail: usize,
}

fn words(offset: u64, len: usize) -> Option<Words> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(len)?;
    let first = start / WORD as usize * WORD as usize;
    let count = (end - first).div_ceil(WORD as usize);
    let head = start - first..(end - first).min(WORD as usize);
    let tail = (end - first) - (count - 1) * WORD as usize;
    Some(Words {
        first,
        count,
        head,
        tail,
    })
}

fn mask(bytes: std::ops::Range<usize>) -> u64 {
    let mut m = [0u8; 8];
    m[bytes].fill(0xff);
    u64::from_le_bytes(m)
}

impl Memory {
    /// The buffer's length (the memory holds whole lines beyond it).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Runs `f` on `count` words from byte `at`.
    fn with_words<T>(
        &mut self,
        at: usize,
        count: usize,
        f: impl FnOnce(&[AtomicU64]) -> T,
    ) -> Result<T> {
        let size = self.len;
        let words = self.map.shared_words();
        let w = words.atomic_u64s(at, count).ok_or(Error::OutOfRange {
            offset: at as u64,
            len: count as u64 * WORD,
            size,
        })?;
        Ok(f(w))
    }

    fn line_at(line: u64) -> Result<usize> {
        line.checked_mul(LINE)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or(Error::TooLarge { len: line })
    }

    /// Loads line `line` into `out`.
    pub(crate) fn load_line(&mut self, line: u64, out: &mut [u8; LINE as usize]) -> Result<()> {
        self.with_words(Self::line_at(line)?, LINE_WORDS, |w| {
            for (b, word) in out.chunks_exact_mut(WORD as usize).zip(w) {
                b.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
            }
        })
    }

    /// Stores `data` as line `line`, whole.
    pub(crate) fn store_line(&mut self, line: u64, data: &[u8; LINE as usize]) -> Result<()> {
        self.with_words(Self::line_at(line)?, LINE_WORDS, |w| {
            for (b, word) in data.chunks_exact(WORD as usize).zip(w) {
                let mut v = [0u8; 8];
                v.copy_from_slice(b);
                word.store(u64::from_le_bytes(v), Ordering::Relaxed);
            }
        })
    }

    /// Copies bytes at `offset` out, word by word.
    pub(crate) fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<()> {
        check_range(offset, out.len(), self.len)?;
        if out.is_empty() {
            return Ok(());
        }
        let r = words(offset, out.len()).ok_or(Error::TooLarge { len: self.len })?;
        self.with_words(r.first, r.count, |w| {
            let head = r.head.len();
            out[..head].copy_from_slice(&w[0].load(Ordering::Relaxed).to_le_bytes()[r.head]);
            if r.count == 1 {
                return;
            }
            let n = out.len();
            let body = &mut out[head..n - r.tail];
            for (b, word) in body.chunks_exact_mut(WORD as usize).zip(&w[1..r.count - 1]) {
                b.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
            }
            let last = w[r.count - 1].load(Ordering::Relaxed).to_le_bytes();
            out[n - r.tail..].copy_from_slice(&last[..r.tail]);
        })
    }

    /// Copies `data` to `offset`, word by word; a word written in part keeps its other bytes,
    /// whatever another domain writes there meanwhile.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        check_range(offset, data.len(), self.len)?;
        if data.is_empty() {
            return Ok(());
        }
        let r = words(offset, data.len()).ok_or(Error::TooLarge { len: self.len })?;
        let put = |word: &AtomicU64, bytes: std::ops::Range<usize>, part: &[u8]| {
            let mut v = [0u8; 8];
            v[bytes.clone()].copy_from_slice(part);
            let (m, v) = (mask(bytes), u64::from_le_bytes(v));
            if m == u64::MAX {
                word.store(v, Ordering::Relaxed);
            } else {
                let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    Some((old & !m) | v)
                });
            }
        };
        self.with_words(r.first, r.count, |w| {
            let head = r.head.len();
            put(&w[0], r.head.clone(), &data[..head]);
            if r.count == 1 {
                return;
            }
            let body = &data[head..data.len() - r.tail];
            for (b, word) in body.chunks_exact(WORD as usize).zip(&w[1..r.count - 1]) {
                let mut v = [0u8; 8];
                v.copy_from_slice(b);
                word.store(u64::from_le_bytes(v), Ordering::Relaxed);
            }
            put(&w[r.count - 1], 0..r.tail, &data[data.len() - r.tail..]);
        })
    }
}
