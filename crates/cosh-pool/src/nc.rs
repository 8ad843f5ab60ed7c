//! The non-coherent pool, emulated: shared memory that no hardware keeps coherent.
//!
//! Each window is a software write-back cache over the buffer's memory, in 64-byte lines: a
//! line is loaded on first touch into a private copy and a twin (the line as loaded); reads
//! and writes use the private copy; [`Window::flush`] writes back the lines whose copy differs
//! from their twin (whole lines, as hardware does); [`Window::invalidate`] drops every line.
//! So a domain that skips the flush leaves its writes invisible, and one that skips the
//! invalidate reads what it cached before, deterministically, unless random eviction is on:
//! then, on any access, a random cached line may be written back (if dirty) and dropped, as
//! a hardware cache evicts lines when it likes.

use std::sync::atomic::{AtomicU64, Ordering, fence};

use crate::shared::Memory;
use crate::{Buffer, LINE, Pool, PoolKind, Result, Window, check_range};

const L: usize = LINE as usize;

/// Random eviction: on each line a window touches, one chance in `one_in` that a random line
/// of its cache is written back (if dirty) and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eviction {
    /// Seeds the pool's windows (each gets its own sequence, so runs repeat).
    pub seed: u64,
    /// One eviction per this many line accesses, on average (at least 1).
    pub one_in: u32,
}

/// Emulated non-coherent shared memory.
#[derive(Debug, Default)]
pub struct NcPool {
    eviction: Option<Eviction>,
    windows: AtomicU64,
}

impl NcPool {
    /// Caches that keep lines until told (deterministic).
    pub fn new() -> NcPool {
        NcPool::default()
    }

    /// Caches that also evict at random, as hardware does.
    pub fn with_eviction(eviction: Eviction) -> NcPool {
        NcPool {
            eviction: Some(eviction),
            windows: AtomicU64::new(0),
        }
    }

    fn make(&self, buffer: &Buffer) -> Result<NcWindow> {
        let n = self.windows.fetch_add(1, Ordering::Relaxed);
        let eviction = self.eviction.map(|e| Eviction {
            seed: e.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ..e
        });
        Ok(NcWindow {
            len: buffer.len(),
            cache: LineCache::new(buffer.map()?, eviction),
        })
    }
}

impl Pool for NcPool {
    fn kind(&self) -> PoolKind {
        PoolKind::Nc
    }

    fn create(&self, len: u64) -> Result<Buffer> {
        Buffer::create("cosh-nc", len)
    }

    fn window(&self, buffer: &Buffer) -> Result<Box<dyn Window>> {
        Ok(Box::new(self.make(buffer)?))
    }
}

/// Memory seen in whole lines: what a [`LineCache`] caches.
pub trait Lines {
    /// Lines of memory (the last may reach past the buffer's end).
    fn lines(&self) -> usize;
    /// Loads line `line`.
    fn load(&mut self, line: usize, out: &mut [u8; L]) -> Result<()>;
    /// Stores line `line`, whole.
    fn store(&mut self, line: usize, data: &[u8; L]) -> Result<()>;
}

impl Lines for Memory {
    fn lines(&self) -> usize {
        usize::try_from(self.len().div_ceil(LINE)).unwrap_or(usize::MAX)
    }
    fn load(&mut self, line: usize, out: &mut [u8; L]) -> Result<()> {
        self.load_line(line as u64, out)
    }
    fn store(&mut self, line: usize, data: &[u8; L]) -> Result<()> {
        self.store_line(line as u64, data)
    }
}

/// A software write-back cache over memory, in 64-byte lines: a private copy and a twin (the
/// line as loaded) of each line touched. The emulated non-coherent pool's windows are one;
/// the client library keeps one per mapping of a non-coherent pool's buffer.
pub struct LineCache<B: Lines> {
    backing: B,
    private: Vec<u8>,
    twin: Vec<u8>,
    valid: Vec<bool>,
    rng: Option<(XorShift, u32)>,
}

impl<B: Lines> LineCache<B> {
    /// An empty cache over `backing`; with `eviction`, lines also leave it at random.
    pub fn new(backing: B, eviction: Option<Eviction>) -> LineCache<B> {
        let lines = backing.lines();
        LineCache {
            backing,
            private: vec![0; lines * L],
            twin: vec![0; lines * L],
            valid: vec![false; lines],
            rng: eviction.map(|e| (XorShift::new(e.seed), e.one_in.max(1))),
        }
    }

    fn range(line: usize) -> std::ops::Range<usize> {
        line * L..line * L + L
    }

    fn dirty(&self, line: usize) -> bool {
        self.valid[line] && self.private[Self::range(line)] != self.twin[Self::range(line)]
    }

    /// Writes line `line` back if it is dirty.
    fn write_back(&mut self, line: usize) -> Result<()> {
        if !self.dirty(line) {
            return Ok(());
        }
        let mut bytes = [0u8; L];
        bytes.copy_from_slice(&self.private[Self::range(line)]);
        self.backing.store(line, &bytes)?;
        self.twin[Self::range(line)].copy_from_slice(&bytes);
        Ok(())
    }

    fn load(&mut self, line: usize) -> Result<()> {
        let mut bytes = [0u8; L];
        self.backing.load(line, &mut bytes)?;
        self.private[Self::range(line)].copy_from_slice(&bytes);
        self.twin[Self::range(line)].copy_from_slice(&bytes);
        self.valid[line] = true;
        Ok(())
    }

    /// Loads line `line` unless cached; first, maybe, a random eviction.
    fn touch(&mut self, line: usize) -> Result<()> {
        if let Some((rng, one_in)) = &mut self.rng
            && rng.next().is_multiple_of(u64::from(*one_in))
            && !self.valid.is_empty()
        {
            let victim = (rng.next() % self.valid.len() as u64) as usize;
            if self.valid[victim] {
                self.write_back(victim)?;
                self.valid[victim] = false;
            }
        }
        if !self.valid[line] {
            self.load(line)?;
        }
        Ok(())
    }

    /// With random eviction on, one roll: on a hit, a random cached line is written back (if
    /// dirty) and reloaded from memory. For callers that keep every line loaded (slices of
    /// the private copy), this is eviction as they can have it: between their accesses.
    pub fn maybe_evict(&mut self) -> Result<()> {
        let Some((rng, one_in)) = &mut self.rng else {
            return Ok(());
        };
        if self.valid.is_empty() || !rng.next().is_multiple_of(u64::from(*one_in)) {
            return Ok(());
        }
        let victim = (rng.next() % self.valid.len() as u64) as usize;
        if self.valid[victim] {
            self.write_back(victim)?;
            self.load(victim)?;
        }
        Ok(())
    }

    /// Loads every line not cached (for callers that want the whole copy as a slice).
    pub fn load_all(&mut self) -> Result<()> {
        for line in 0..self.valid.len() {
            if !self.valid[line] {
                self.load(line)?;
            }
        }
        Ok(())
    }

    /// The private copy, as loaded so far (see [`LineCache::load_all`]).
    pub fn bytes(&self) -> &[u8] {
        &self.private
    }

    /// The private copy, for writing; what differs from the twin is written back by the next
    /// flush.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.private
    }

    /// Copies `out.len()` bytes at `offset` (within `len`, the buffer's length) out of the
    /// cache, loading lines as needed.
    pub fn read(&mut self, len: u64, offset: u64, out: &mut [u8]) -> Result<()> {
        self.each_line(len, offset, out.len(), |c, from, at, n| {
            out[at..at + n].copy_from_slice(&c.private[from..from + n]);
        })
    }

    /// Copies `data` into the cache at `offset`, loading lines as needed.
    pub fn write(&mut self, len: u64, offset: u64, data: &[u8]) -> Result<()> {
        self.each_line(len, offset, data.len(), |c, to, at, n| {
            c.private[to..to + n].copy_from_slice(&data[at..at + n]);
        })
    }

    /// Runs `f(cache, byte_in_private, at_in_data, n)` over the lines touched, each loaded
    /// first.
    fn each_line(
        &mut self,
        size: u64,
        offset: u64,
        len: usize,
        mut f: impl FnMut(&mut Self, usize, usize, usize),
    ) -> Result<()> {
        check_range(offset, len, size)?;
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let line = (at / LINE) as usize;
            let within = (at % LINE) as usize;
            let n = (L - within).min(len - done);
            self.touch(line)?;
            f(self, line * L + within, done, n);
            done += n;
        }
        Ok(())
    }

    /// Writes every dirty line back.
    pub fn flush(&mut self) -> Result<()> {
        for line in 0..self.valid.len() {
            self.write_back(line)?;
        }
        fence(Ordering::Release);
        Ok(())
    }

    /// Drops every line, dirty ones too (their writes are lost).
    pub fn invalidate(&mut self) {
        fence(Ordering::Acquire);
        self.valid.fill(false);
    }

    /// Reloads every clean line from memory, keeping dirty ones: what a domain that still
    /// holds unflushed writes of its own does after a receive.
    pub fn refresh_clean(&mut self) -> Result<()> {
        fence(Ordering::Acquire);
        for line in 0..self.valid.len() {
            if self.valid[line] && !self.dirty(line) {
                self.load(line)?;
            }
        }
        Ok(())
    }

    /// Lines written and not flushed.
    pub fn dirty_lines(&self) -> Vec<u64> {
        (0..self.valid.len())
            .filter(|l| self.dirty(*l))
            .map(|l| l as u64)
            .collect()
    }

    /// Lines cached clean whose memory changed since they were loaded.
    pub fn stale_lines(&mut self) -> Vec<u64> {
        let mut stale = Vec::new();
        for line in 0..self.valid.len() {
            if !self.valid[line] || self.dirty(line) {
                continue;
            }
            let mut now = [0u8; L];
            if self.backing.load(line, &mut now).is_ok() && now[..] != self.twin[Self::range(line)]
            {
                stale.push(line as u64);
            }
        }
        stale
    }
}

/// A domain's view of a non-coherent buffer: its own cache of the lines it touched.
pub struct NcWindow {
    len: u64,
    cache: LineCache<Memory>,
}

impl Window for NcWindow {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<()> {
        self.cache.read(self.len, offset, out)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.cache.write(self.len, offset, data)
    }

    fn flush(&mut self) -> Result<()> {
        self.cache.flush()
    }

    fn invalidate(&mut self) -> Result<()> {
        self.cache.invalidate();
        Ok(())
    }

    fn dirty_lines(&mut self) -> Vec<u64> {
        self.cache.dirty_lines()
    }

    fn stale_lines(&mut self) -> Vec<u64> {
        self.cache.stale_lines()
    }
}

/// xorshift64*: a small generator, enough to pick lines to evict reproducibly.
#[derive(Clone, Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
