//! Memfds: the memory of a buffer.
//!
//! A buffer is created with sealing allowed, sealed against shrinking and growing at birth (so
//! nobody can truncate it under another mapper and make it fault with SIGBUS) and chmod 0600
//! (so that, across uids, a read-only descriptor cannot be reopened read/write through
//! `/proc/self/fd`). [`Memfd::seal_write`] later makes it immutable for everyone; it is refused
//! while any process holds a writable shared mapping.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use rustix::io::Errno;

use crate::error::{Error, Result, sys};
use crate::mapping::{Mapping, Prefault, ReadOnly, ReadWrite};

/// The seals every buffer carries from birth.
pub const BIRTH_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);

/// A memfd holding one buffer.
#[derive(Debug)]
pub struct Memfd {
    fd: OwnedFd,
    len: u64,
}

impl Memfd {
    /// Creates a buffer of `len` bytes, sealed against resizing and private to its owner.
    pub fn create(name: &str, len: u64) -> Result<Self> {
        let fd = sys(
            "memfd_create",
            rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING),
        )?;
        sys("ftruncate", rustix::fs::ftruncate(&fd, len))?;
        sys(
            "fchmod",
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600)),
        )?;
        sys(
            "fcntl(F_ADD_SEALS)",
            rustix::fs::fcntl_add_seals(&fd, BIRTH_SEALS),
        )?;
        Ok(Memfd { fd, len })
    }

    /// Allocates every page of the buffer now (zero-filled), without mapping it: whoever maps
    /// it later finds the pages present and pays only for page tables, never for first-touch
    /// faults that allocate. Cheaper than a populated mapping, which would also have to be
    /// torn down before a seal.
    pub fn allocate(&self) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        sys(
            "fallocate",
            rustix::fs::fallocate(&self.fd, rustix::fs::FallocateFlags::empty(), 0, self.len),
        )
    }

    /// Accepts a descriptor received from elsewhere, checking that it is a buffer that cannot
    /// be resized under its mappers (it carries the birth seals), and learning its length.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|errno| Error::BadDescriptor {
            reason: format!("it is not a sealable memfd ({errno})"),
        })?;
        if !seals.contains(BIRTH_SEALS) {
            return Err(Error::BadDescriptor {
                reason: "it can still be shrunk or grown".into(),
            });
        }
        let stat = sys("fstat", rustix::fs::fstat(&fd))?;
        let len = u64::try_from(stat.st_size).map_err(|_| Error::BadDescriptor {
            reason: "negative size".into(),
        })?;
        Ok(Memfd { fd, len })
    }

    /// The buffer's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The descriptor, to pass to another process.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The seals in force.
    pub fn seals(&self) -> Result<SealFlags> {
        sys("fcntl(F_GET_SEALS)", rustix::fs::fcntl_get_seals(&self.fd))
    }

    /// Whether the buffer is sealed against writes.
    pub fn is_write_sealed(&self) -> Result<bool> {
        Ok(self.seals()?.contains(SealFlags::WRITE))
    }

    /// Seals the buffer against writes, for everyone and through any descriptor: a kernel
    /// proof of immutability. Refused with [`Error::SealBusy`] while any process holds a
    /// writable shared mapping. It can block (about 160 ms measured) on pages pinned by a
    /// pipe, so a server must not call it on its main loop.
    pub fn seal_write(&self) -> Result<()> {
        match rustix::fs::fcntl_add_seals(&self.fd, SealFlags::WRITE) {
            Ok(()) => Ok(()),
            Err(Errno::BUSY) => Err(Error::SealBusy),
            Err(errno) => Err(Error::Sys {
                op: "fcntl(F_ADD_SEALS, F_SEAL_WRITE)",
                errno,
            }),
        }
    }

    /// A second descriptor for the same buffer that only allows reading, opened through
    /// `/proc/self/fd`. Read-only mappings must come from such a descriptor: a read-only
    /// shared mapping made through a read/write descriptor still blocks `F_SEAL_WRITE`.
    pub fn reopen_read_only(&self) -> Result<Memfd> {
        let path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.fd)
        );
        let fd = sys(
            "open(/proc/self/fd, O_RDONLY)",
            rustix::fs::open(
                path.as_str(),
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            ),
        )?;
        Ok(Memfd { fd, len: self.len })
    }

    /// Maps the whole buffer read-only. Made through a read/write descriptor, the mapping
    /// still blocks [`Memfd::seal_write`] (measured on Linux 6.18); map through
    /// [`Memfd::reopen_read_only`] when the buffer may be sealed later.
    pub fn map_read(&self, prefault: Prefault) -> Result<Mapping<ReadOnly>> {
        Mapping::new(&self.fd, self.len, prefault)
    }

    /// Maps the whole buffer read/write; refused once it is sealed against writes, or when
    /// this descriptor is read-only.
    pub fn map_write(&self, prefault: Prefault) -> Result<Mapping<ReadWrite>> {
        Mapping::new(&self.fd, self.len, prefault)
    }
}

impl From<Memfd> for OwnedFd {
    fn from(m: Memfd) -> OwnedFd {
        m.fd
    }
}

impl AsFd for Memfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
