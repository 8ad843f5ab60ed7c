//! The device pool: memory that only the pool's own domains map, as an accelerator's private
//! memory is. Its domains see it coherently (as the device's cores see theirs); nothing of
//! another pool gets a window on it — its bytes leave and arrive only through the copy engine
//! (`crate::engine`), whose optional DMA model paces copies like a PCIe engine.

use crate::host::HostWindow;
use crate::{Buffer, Pool, PoolKind, Result, Window};

/// Memory private to one device.
#[derive(Debug, Default)]
pub struct DevicePool {
    _private: (),
}

impl DevicePool {
    /// A device pool.
    pub fn new() -> DevicePool {
        DevicePool::default()
    }
}

impl Pool for DevicePool {
    fn kind(&self) -> PoolKind {
        PoolKind::Device
    }

    fn create(&self, len: u64) -> Result<Buffer> {
        Buffer::create("cosh-device", len)
    }

    /// A window for one of the device's own domains.
    fn window(&self, buffer: &Buffer) -> Result<Box<dyn Window>> {
        Ok(Box::new(HostWindow::over(buffer.map()?)))
    }
}
