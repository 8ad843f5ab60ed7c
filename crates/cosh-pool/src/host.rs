//! The host pool: cache-coherent shared memory. A window reads and writes the memory itself,
//! so flush and invalidate only order this domain's accesses around the transfer.

use std::sync::atomic::{Ordering, fence};

use crate::shared::Memory;
use crate::{Buffer, Pool, PoolKind, Result, Window};

/// Coherent shared memory on this host.
#[derive(Debug, Default)]
pub struct HostPool {
    _private: (),
}

impl HostPool {
    /// A host pool.
    pub fn new() -> HostPool {
        HostPool::default()
    }
}

impl Pool for HostPool {
    fn kind(&self) -> PoolKind {
        PoolKind::Host
    }

    fn create(&self, len: u64) -> Result<Buffer> {
        Buffer::create("cosh-host", len)
    }

    fn window(&self, buffer: &Buffer) -> Result<Box<dyn Window>> {
        Ok(Box::new(HostWindow::over(buffer.map()?)))
    }
}

/// A domain's view of a host buffer: the memory itself.
pub struct HostWindow {
    memory: Memory,
}

impl HostWindow {
    /// A coherent window on mapped memory.
    pub(crate) fn over(memory: Memory) -> HostWindow {
        HostWindow { memory }
    }
}

impl Window for HostWindow {
    fn len(&self) -> u64 {
        self.memory.len()
    }

    fn read(&mut self, offset: u64, out: &mut [u8]) -> Result<()> {
        self.memory.read(offset, out)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.memory.write(offset, data)
    }

    fn flush(&mut self) -> Result<()> {
        fence(Ordering::Release);
        Ok(())
    }

    fn invalidate(&mut self) -> Result<()> {
        fence(Ordering::Acquire);
        Ok(())
    }

    fn dirty_lines(&mut self) -> Vec<u64> {
        Vec::new()
    }

    fn stale_lines(&mut self) -> Vec<u64> {
        Vec::new()
    }
}
