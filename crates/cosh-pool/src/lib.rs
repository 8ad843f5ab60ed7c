//! Pools of memory behind one trait.
//!
//! Cosh promises that a correct program cannot tell what kind of memory its peer shares with
//! it (invariant 5). This crate makes the kinds concrete at the level where they differ: how
//! one domain sees the bytes of one buffer (a [`Window`]), and what it must do around a
//! transfer — [`Window::flush`] before handing a buffer on, [`Window::invalidate`] after
//! receiving one. The client library does both on every transfer, so applications never do.
//!
//! - [`host::HostPool`]: cache-coherent shared memory (a memfd). Every window reads and writes
//!   the memory itself; flush and invalidate have nothing to do.
//! - [`nc::NcPool`]: shared memory *without* coherence, emulated. Each window keeps a private
//!   copy of the lines it touched, with a twin (the line as it was loaded), in 64-byte lines
//!   ([`LINE`]): reads and writes go to the private copy, [`Window::flush`] writes dirty lines
//!   back, [`Window::invalidate`] drops the copy. A missing flush or invalidate therefore
//!   reads stale data deterministically, and [`Window::dirty_lines`] /
//!   [`Window::stale_lines`] report it. A random-eviction mode writes dirty lines back and
//!   drops clean ones at random moments, as hardware caches do.
//!
//! Memory that another process may write at the same moment is never seen as a plain slice:
//! windows copy it word by word with atomic loads and stores.
//!
//! [`conformance`] is the one suite every pool, and every ordered pair of pools (a copy
//! engine between them), must pass.

#![forbid(unsafe_code)]

pub mod conformance;
pub mod device;
pub mod engine;
pub mod host;
pub mod nc;
mod shared;

pub use shared::Buffer;

/// The copy engine's view of a buffer: its memory, not any domain's cache.
#[derive(Clone, Debug)]
pub struct EngineView {
    buffer: Buffer,
}

impl EngineView {
    /// Copies the first `len` bytes of `source` here, in one pass.
    pub fn copy_from(&self, source: &EngineView, len: u64) -> Result<()> {
        shared::engine_copy(&source.buffer, &self.buffer, len)
    }
}

impl Window for EngineView {
    fn len(&self) -> u64 {
        self.buffer.len()
    }

    fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<()> {
        self.buffer.with_engine_map(|m| m.read(offset, out))
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.buffer.with_engine_map(|m| m.write(offset, data))
    }

    fn flush(&mut self) -> Result<()> {
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        Ok(())
    }

    fn invalidate(&mut self) -> Result<()> {
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        Ok(())
    }

    fn dirty_lines(&mut self) -> Vec<u64> {
        Vec::new()
    }

    fn stale_lines(&mut self) -> Vec<u64> {
        Vec::new()
    }
}

/// The granule of the non-coherent pool's emulated caches, in bytes.
pub const LINE: u64 = 64;

/// The kinds of pool (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PoolKind {
    /// Cache-coherent shared memory on this host.
    Host,
    /// Shared memory without coherence (emulated): flush before a transfer out, invalidate
    /// after a receive.
    Nc,
    /// Memory only the pool's own domains map (an accelerator's): every transfer to or from
    /// another pool goes through a copy engine.
    Device,
}

impl PoolKind {
    /// Every kind built so far.
    pub const ALL: [PoolKind; 3] = [PoolKind::Host, PoolKind::Nc, PoolKind::Device];

    /// The name used in configuration and status.
    pub fn name(self) -> &'static str {
        match self {
            PoolKind::Host => "host",
            PoolKind::Nc => "nc",
            PoolKind::Device => "device",
        }
    }
}

impl std::fmt::Display for PoolKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a pool or window refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An access past the buffer's end.
    #[error("{len} bytes at offset {offset} run past the end of a buffer of {size} bytes")]
    OutOfRange {
        /// Where the access started.
        offset: u64,
        /// How long it was.
        len: u64,
        /// The buffer's length.
        size: u64,
    },
    /// The kernel refused (memory, descriptors, mappings).
    #[error(transparent)]
    Sys(#[from] cosh_sys::Error),
    /// A write-back through a read-only mapping.
    #[error("a read-only mapping cannot be written back")]
    ReadOnly,
    /// A copy of a buffer onto itself.
    #[error("the copy engine copies between two different buffers")]
    SameBuffer,
    /// The copy engine's worker is gone (it could not start, or it stopped).
    #[error("the copy engine is not running")]
    EngineGone,
    /// A buffer of a size the address space cannot hold.
    #[error("a buffer of {len} bytes does not fit this address space")]
    TooLarge {
        /// The length asked for.
        len: u64,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A pool: where buffers live, and how a domain and the copy engine see them.
pub trait Pool {
    /// Its kind.
    fn kind(&self) -> PoolKind;

    /// A fresh buffer of `len` zeroed bytes.
    fn create(&self, len: u64) -> Result<Buffer>;

    /// How one domain sees `buffer`: each call is another domain (another mapping, and for a
    /// non-coherent pool its own cache).
    fn window(&self, buffer: &Buffer) -> Result<Box<dyn Window>>;

    /// How the copy engine sees `buffer`: the memory itself, as a DMA engine would (one
    /// mapping per buffer, kept while the buffer lives).
    fn engine(&self, buffer: &Buffer) -> Result<EngineView> {
        Ok(EngineView {
            buffer: buffer.clone(),
        })
    }
}

/// One domain's view of one buffer.
pub trait Window: Send {
    /// The buffer's length in bytes.
    fn len(&self) -> u64;

    /// Whether the buffer is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `out.len()` bytes at `offset` into `out`.
    fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<()>;

    /// Copies `data` to `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()>;

    /// Makes every write of this domain visible in memory: before a transfer out.
    fn flush(&mut self) -> Result<()>;

    /// Forgets what this domain cached, so that its next reads see memory: after a receive.
    /// Writes not flushed are lost (as on hardware); [`Window::dirty_lines`] says which.
    fn invalidate(&mut self) -> Result<()>;

    /// The detector for a missing flush: lines this domain wrote and did not flush.
    fn dirty_lines(&mut self) -> Vec<u64>;

    /// The detector for a missing invalidate: lines this domain holds unwritten whose copy
    /// differs from memory.
    fn stale_lines(&mut self) -> Vec<u64>;
}

/// Checks that `len` bytes at `offset` fit a buffer of `size`.
fn check_range(offset: u64, len: usize, size: u64) -> Result<()> {
    let len = len as u64;
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange { offset, len, size }),
    }
}
