//! Buffers in shared memory, and word-by-word atomic access to them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use cosh_sys::mapping::{Mapping, Prefault, ReadWrite};
use cosh_sys::memfd::Memfd;

use crate::{Error, LINE, Result, check_range};

/// A buffer: a memfd of whole lines, and the length the pool's users see.
#[derive(Clone, Debug)]
pub struct Buffer {
    memfd: Arc<Memfd>,
    len: u64,
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
}

/// One mapping of a buffer's memory, read and written only through atomic words: another
/// domain may write the same memory at any moment.
pub(crate) struct Memory {
    map: Mapping<ReadWrite>,
    len: u64,
}

const WORDS: usize = (LINE / 4) as usize;

impl Memory {
    /// The buffer's length (the memory holds whole lines beyond it).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Runs `f` on the words of line `line`.
    fn with_line<T>(&mut self, line: u64, f: impl FnOnce(&[AtomicU32]) -> T) -> Result<T> {
        let at = line
            .checked_mul(LINE)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or(Error::OutOfRange {
                offset: line.saturating_mul(LINE),
                len: LINE,
                size: self.len,
            })?;
        let words = self.map.shared_words();
        let w = words.atomic_u32s(at, WORDS).ok_or(Error::OutOfRange {
            offset: at as u64,
            len: LINE,
            size: self.len,
        })?;
        Ok(f(w))
    }

    /// Loads line `line` into `out`.
    pub(crate) fn load_line(&mut self, line: u64, out: &mut [u8; LINE as usize]) -> Result<()> {
        self.with_line(line, |w| {
            for (b, word) in out.chunks_exact_mut(4).zip(w) {
                b.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
            }
        })
    }

    /// Stores `data` as line `line`, whole.
    pub(crate) fn store_line(&mut self, line: u64, data: &[u8; LINE as usize]) -> Result<()> {
        self.with_line(line, |w| {
            for (b, word) in data.chunks_exact(4).zip(w) {
                word.store(
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                    Ordering::Relaxed,
                );
            }
        })
    }

    /// Copies bytes at `offset` out, word by word.
    pub(crate) fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<()> {
        check_range(offset, out.len(), self.len)?;
        let mut done = 0usize;
        while done < out.len() {
            let at = offset + done as u64;
            let (line, within) = (at / LINE, (at % LINE) as usize);
            let mut bytes = [0u8; LINE as usize];
            self.load_line(line, &mut bytes)?;
            let n = (LINE as usize - within).min(out.len() - done);
            out[done..done + n].copy_from_slice(&bytes[within..within + n]);
            done += n;
        }
        Ok(())
    }

    /// Copies `data` to `offset`, word by word; a word written in part keeps the other bytes,
    /// whatever another domain writes there meanwhile.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        check_range(offset, data.len(), self.len)?;
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let (line, within) = (at / LINE, (at % LINE) as usize);
            let n = (LINE as usize - within).min(data.len() - done);
            let part = &data[done..done + n];
            self.with_line(line, |w| {
                for (i, word) in w.iter().enumerate() {
                    let (lo, hi) = (i * 4, i * 4 + 4);
                    if hi <= within || lo >= within + n {
                        continue;
                    }
                    let mut mask = [0u8; 4];
                    let mut value = [0u8; 4];
                    for k in lo.max(within)..hi.min(within + n) {
                        mask[k - lo] = 0xff;
                        value[k - lo] = part[k - within];
                    }
                    let (mask, value) = (u32::from_le_bytes(mask), u32::from_le_bytes(value));
                    if mask == u32::MAX {
                        word.store(value, Ordering::Relaxed);
                    } else {
                        // A word shared with bytes outside the write: change only ours.
                        let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                            Some((old & !mask) | value)
                        });
                    }
                }
            })?;
            done += n;
        }
        Ok(())
    }
}
