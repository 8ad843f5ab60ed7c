//! Memory of a non-coherent pool: this domain's cache of what it maps.
//!
//! A block manager of kind `nc` serves memory that no hardware keeps coherent (emulated). The
//! library keeps a private copy of every slot it maps, with a twin, in 64-byte lines
//! ([`cosh_pool::nc::LineCache`]): the bytes a program reads and writes are the private copy.
//! Before anything leaves this domain (a transfer, a free, a revoked mapping) every dirty line
//! is written back; after anything arrives (a receive, an allocation that may recycle memory)
//! every clean line of a mapping is reloaded before the mapping's bytes are next handed out.
//! Programs never see the difference, and the flushes and
//! refreshes they would otherwise forget are the library's to make.

use cosh_pool::nc::Lines;
use cosh_sys::mapping::{Mapping, Protection, ReadOnly, ReadWrite};

const LINE: usize = cosh_pool::LINE as usize;
const WORDS: usize = LINE / 8;

/// A mapping seen in whole lines, each word read (and written) atomically.
pub(crate) struct Mapped<P: Protection>(pub(crate) Mapping<P>);

fn load<P: Protection>(
    map: &Mapping<P>,
    line: usize,
    out: &mut [u8; LINE],
) -> cosh_pool::Result<()> {
    let mut words = [0u64; WORDS];
    if !map.load_u64s(line * LINE, &mut words) {
        return Err(cosh_pool::Error::OutOfRange {
            offset: (line * LINE) as u64,
            len: LINE as u64,
            size: map.len() as u64,
        });
    }
    for (b, w) in out.chunks_exact_mut(8).zip(words) {
        b.copy_from_slice(&w.to_le_bytes());
    }
    Ok(())
}

impl Lines for Mapped<ReadOnly> {
    fn lines(&self) -> usize {
        self.0.len() / LINE
    }
    fn load(&mut self, line: usize, out: &mut [u8; LINE]) -> cosh_pool::Result<()> {
        load(&self.0, line, out)
    }
    fn store(&mut self, _line: usize, _data: &[u8; LINE]) -> cosh_pool::Result<()> {
        Err(cosh_pool::Error::ReadOnly)
    }
}

impl Lines for Mapped<ReadWrite> {
    fn lines(&self) -> usize {
        self.0.len() / LINE
    }
    fn load(&mut self, line: usize, out: &mut [u8; LINE]) -> cosh_pool::Result<()> {
        load(&self.0, line, out)
    }
    fn store(&mut self, line: usize, data: &[u8; LINE]) -> cosh_pool::Result<()> {
        let size = self.0.len() as u64;
        let words = self.0.shared_words();
        let w = words
            .atomic_u64s(line * LINE, WORDS)
            .ok_or(cosh_pool::Error::OutOfRange {
                offset: (line * LINE) as u64,
                len: LINE as u64,
                size,
            })?;
        for (word, b) in w.iter().zip(data.chunks_exact(8)) {
            let mut v = [0u8; 8];
            v.copy_from_slice(b);
            word.store(u64::from_le_bytes(v), std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}
