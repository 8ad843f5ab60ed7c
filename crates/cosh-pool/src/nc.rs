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
        let memory = buffer.map()?;
        let lines = usize::try_from(buffer.len().div_ceil(LINE))
            .map_err(|_| crate::Error::TooLarge { len: buffer.len() })?;
        let n = self.windows.fetch_add(1, Ordering::Relaxed);
        let rng = self.eviction.map(|e| {
            (
                XorShift::new(e.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                e.one_in.max(1),
            )
        });
        Ok(NcWindow {
            memory,
            private: vec![0; lines * L],
            twin: vec![0; lines * L],
            valid: vec![false; lines],
            rng,
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

/// A domain's view of a non-coherent buffer: its own cache of the lines it touched.
pub struct NcWindow {
    memory: Memory,
    private: Vec<u8>,
    twin: Vec<u8>,
    valid: Vec<bool>,
    rng: Option<(XorShift, u32)>,
}

impl NcWindow {
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
        self.memory.store_line(line as u64, &bytes)?;
        self.twin[Self::range(line)].copy_from_slice(&bytes);
        Ok(())
    }

    /// Loads line `line` unless cached; first, maybe, a random eviction.
    fn touch(&mut self, line: usize) -> Result<()> {
        if let Some((rng, one_in)) = &mut self.rng
            && rng.next().is_multiple_of(u64::from(*one_in))
        {
            let victim = (rng.next() % self.valid.len() as u64) as usize;
            if self.valid[victim] {
                self.write_back(victim)?;
                self.valid[victim] = false;
            }
        }
        if !self.valid[line] {
            let mut bytes = [0u8; L];
            self.memory.load_line(line as u64, &mut bytes)?;
            self.private[Self::range(line)].copy_from_slice(&bytes);
            self.twin[Self::range(line)].copy_from_slice(&bytes);
            self.valid[line] = true;
        }
        Ok(())
    }

    /// Runs `f(line, within_line, at_in_data, n)` over the lines `len` bytes at `offset` touch,
    /// each loaded first.
    fn each_line(
        &mut self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(&mut NcWindow, usize, usize, usize, usize),
    ) -> Result<()> {
        check_range(offset, len, self.memory.len())?;
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let line = (at / LINE) as usize;
            let within = (at % LINE) as usize;
            let n = (L - within).min(len - done);
            self.touch(line)?;
            f(self, line, within, done, n);
            done += n;
        }
        Ok(())
    }
}

impl Window for NcWindow {
    fn len(&self) -> u64 {
        self.memory.len()
    }

    fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<()> {
        self.each_line(offset, out.len(), |w, line, within, at, n| {
            let from = line * L + within;
            out[at..at + n].copy_from_slice(&w.private[from..from + n]);
        })
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.each_line(offset, data.len(), |w, line, within, at, n| {
            let to = line * L + within;
            w.private[to..to + n].copy_from_slice(&data[at..at + n]);
        })
    }

    fn flush(&mut self) -> Result<()> {
        for line in 0..self.valid.len() {
            self.write_back(line)?;
        }
        fence(Ordering::Release);
        Ok(())
    }

    fn invalidate(&mut self) -> Result<()> {
        fence(Ordering::Acquire);
        self.valid.fill(false);
        Ok(())
    }

    fn dirty_lines(&mut self) -> Vec<u64> {
        (0..self.valid.len())
            .filter(|l| self.dirty(*l))
            .map(|l| l as u64)
            .collect()
    }

    fn stale_lines(&mut self) -> Vec<u64> {
        let mut stale = Vec::new();
        for line in 0..self.valid.len() {
            if !self.valid[line] || self.dirty(line) {
                continue;
            }
            let mut now = [0u8; L];
            if self.memory.load_line(line as u64, &mut now).is_ok()
                && now[..] != self.twin[Self::range(line)]
            {
                stale.push(line as u64);
            }
        }
        stale
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
