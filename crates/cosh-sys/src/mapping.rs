//! Shared mappings of memfds, typed by protection. The only module with unsafe code.
//!
//! A [`Mapping<P>`] owns one `MAP_SHARED` mapping and unmaps it on drop. Slices borrowed from
//! it cannot outlive it. Only `Mapping<ReadWrite>` gives out `&mut [u8]`.
//!
//! **Other processes.** The memory is shared with other processes, which are outside Rust's
//! abstract machine. Cosh's rights protocol keeps them from writing while this process holds
//! a slice (strong transfers enforce it with seals and copies; weak ones rely on declared
//! trust); a peer that breaks it can only make these bytes garbage, never make this process
//! unsafe, because the slices are plain `u8` with no invalid values and no pointers into them
//! escape.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};

use crate::error::{Error, Result, sys};

mod sealed {
    pub trait Sealed {}
}

/// A protection a mapping can have.
pub trait Protection: sealed::Sealed {
    /// The mmap protection bits.
    const PROT: ProtFlags;
    /// A name for messages.
    const NAME: &'static str;
}

/// Read-only protection.
#[derive(Debug)]
pub enum ReadOnly {}
/// Read/write protection.
#[derive(Debug)]
pub enum ReadWrite {}

impl sealed::Sealed for ReadOnly {}
impl sealed::Sealed for ReadWrite {}
impl Protection for ReadOnly {
    const PROT: ProtFlags = ProtFlags::READ;
    const NAME: &'static str = "read-only";
}
impl Protection for ReadWrite {
    const PROT: ProtFlags = ProtFlags::READ.union(ProtFlags::WRITE);
    const NAME: &'static str = "read/write";
}

/// Whether pages are faulted in when the mapping is made (`MAP_POPULATE`) or on first touch.
/// Faulting in a fresh page (one the file does not have yet) costs 20 times copying it, so
/// memory about to be filled is mapped prefaulted; pages the file has already fault in 64
/// KiB at a time on a read, faster than `MAP_POPULATE` maps them (about 50 against 90 us a
/// MiB on Linux 6.18), so mappings of existing buffers fault on first touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefault {
    /// Fault every page in now.
    Now,
    /// Leave pages to be faulted in on first touch.
    OnFirstTouch,
}

/// A shared mapping of a whole memfd with protection `P`.
#[derive(Debug)]
pub struct Mapping<P: Protection> {
    /// Start of the mapping; dangling (and never unmapped) when `len` is 0.
    ptr: NonNull<u8>,
    len: usize,
    _protection: PhantomData<P>,
}

// SAFETY: a Mapping owns its memory region like a Box<[u8]> owns its allocation: moving it to
// another thread moves the only handle that can unmap it, and the region itself is plain bytes.
unsafe impl<P: Protection> Send for Mapping<P> {}
// SAFETY: shared references only give out `&[u8]`; writing needs `&mut self`.
unsafe impl<P: Protection> Sync for Mapping<P> {}

impl<P: Protection> Mapping<P> {
    /// Maps `len` bytes of `fd` from offset 0, shared, with protection `P`.
    pub(crate) fn new(fd: impl AsFd, len: u64, prefault: Prefault) -> Result<Self> {
        let len = usize::try_from(len).map_err(|_| Error::TooLong { len })?;
        if len == 0 {
            return Ok(Mapping {
                ptr: NonNull::dangling(),
                len,
                _protection: PhantomData,
            });
        }
        let flags = match prefault {
            Prefault::Now => MapFlags::SHARED | MapFlags::POPULATE,
            Prefault::OnFirstTouch => MapFlags::SHARED,
        };
        // SAFETY: a null hint lets the kernel choose fresh address space, so no existing
        // memory of this process is replaced; `fd` is a valid descriptor for the duration of
        // the call; the region returned is owned by the new Mapping alone.
        let ptr = unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, P::PROT, flags, fd, 0) }
            .map_err(crate::error::mmap_error)?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Error::Sys {
            op: "mmap",
            errno: rustix::io::Errno::NOMEM,
        })?;
        Ok(Mapping {
            ptr,
            len,
            _protection: PhantomData,
        })
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for reads of `len` bytes for as long as `self` lives (it is
        // mapped readable until drop, or dangling with len 0, which is allowed); the returned
        // borrow cannot outlive `self`, and this process writes the region only through
        // `&mut self`. Writes by other processes are discussed in the module documentation.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<P: Protection> Mapping<P> {
    /// Loads `out.len()` 8-byte words from `offset` with atomic (relaxed) loads: the way to
    /// read memory another process may be writing. `false` (nothing read) when `offset` is not
    /// 8-byte aligned or the words do not fit.
    pub fn load_u64s(&self, offset: usize, out: &mut [u64]) -> bool {
        let Some(end) = out.len().checked_mul(8).and_then(|n| n.checked_add(offset)) else {
            return false;
        };
        if end > self.len || !offset.is_multiple_of(8) {
            return false;
        }
        for (i, v) in out.iter_mut().enumerate() {
            // SAFETY: the word lies inside the mapping (checked above), which is mapped at
            // least readable while `self` lives; mappings start on a page boundary, so the
            // word is 8-byte aligned as AtomicU64 requires; every bit pattern is a valid u64;
            // only a load is made through the reference, which is allowed on read-only memory,
            // and the reference does not outlive this statement.
            let word = unsafe { &*self.ptr.as_ptr().add(offset + 8 * i).cast::<AtomicU64>() };
            *v = word.load(std::sync::atomic::Ordering::Relaxed);
        }
        true
    }
}

impl Mapping<ReadWrite> {
    /// A view of the mapping as words shared with other processes (ring indices, futex
    /// doorbells). It borrows the mapping mutably, so while it lives this process has no
    /// plain slice of the memory that an atomic store could change under it.
    pub fn shared_words(&mut self) -> SharedWords<'_> {
        SharedWords {
            ptr: self.ptr,
            len: self.len,
            _mapping: PhantomData,
        }
    }

    /// The mapped bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as for `as_slice`, and the region is mapped writable; `&mut self` makes this
        // the only borrow of it in this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Lowers the protection to read-only. The mapping still counts as writable for the
    /// kernel's F_SEAL_WRITE check (it could be raised again); to let a buffer be sealed,
    /// drop writable mappings instead.
    pub fn into_read_only(self) -> Result<Mapping<ReadOnly>> {
        if self.len > 0 {
            // SAFETY: the range is exactly this mapping, owned by `self`; after the call no
            // `&mut` borrow exists (we consume `self`), so nothing writes it any more.
            sys("mprotect", unsafe {
                rustix::mm::mprotect(
                    self.ptr.as_ptr().cast::<c_void>(),
                    self.len,
                    MprotectFlags::READ,
                )
            })?;
        }
        let this = std::mem::ManuallyDrop::new(self);
        Ok(Mapping {
            ptr: this.ptr,
            len: this.len,
            _protection: PhantomData,
        })
    }
}

/// A writable mapping seen as atomic words shared with other processes; see
/// [`Mapping::shared_words`].
#[derive(Debug)]
pub struct SharedWords<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _mapping: PhantomData<&'a mut [u8]>,
}

impl SharedWords<'_> {
    /// The 4-byte word at `offset`; `None` when `offset` is not 4-byte aligned or the word
    /// does not fit. Other processes must access the word atomically too.
    pub fn atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        let end = offset.checked_add(4)?;
        if end > self.len || !offset.is_multiple_of(4) {
            return None;
        }
        // SAFETY: the word lies inside the mapping (checked above), which is mapped for as
        // long as the `&mut Mapping` this view borrows; mappings start on a page boundary, so
        // an offset that is a multiple of 4 is 4-byte aligned, as AtomicU32 requires;
        // AtomicU32 has the size of u32 and every bit pattern is valid; the view holds the
        // mapping's only borrow, so no plain slice of this process overlaps the word.
        Some(unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() })
    }

    /// `count` consecutive 4-byte words from `offset`, as atomics; `None` when `offset` is not
    /// 4-byte aligned or the words do not fit. Other processes must access them atomically
    /// too.
    pub fn atomic_u32s(&self, offset: usize, count: usize) -> Option<&[AtomicU32]> {
        let end = count.checked_mul(4)?.checked_add(offset)?;
        if end > self.len || !offset.is_multiple_of(4) {
            return None;
        }
        // SAFETY: as for `atomic_u32`, for every word of the range: all lie inside the mapping
        // (checked above), are 4-byte aligned, valid for any bit pattern, and overlap no plain
        // slice of this process; `[AtomicU32]` has the layout of `count` adjacent u32 words.
        Some(unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(offset).cast::<AtomicU32>(), count)
        })
    }
}

impl SharedWords<'_> {
    /// `count` consecutive 8-byte words from `offset`, as atomics (for bulk copies); `None`
    /// when `offset` is not 8-byte aligned or the words do not fit. Other processes must
    /// access them atomically too.
    pub fn atomic_u64s(&self, offset: usize, count: usize) -> Option<&[AtomicU64]> {
        let end = count.checked_mul(8)?.checked_add(offset)?;
        if end > self.len || !offset.is_multiple_of(8) {
            return None;
        }
        // SAFETY: every word lies inside the mapping (checked above), which stays mapped for
        // as long as the `&mut Mapping` this view borrows; mappings start on a page boundary,
        // so an offset that is a multiple of 8 is 8-byte aligned, as AtomicU64 requires;
        // AtomicU64 has the size of u64 and every bit pattern is valid; the view holds the
        // mapping's only borrow, so no plain slice of this process overlaps the words.
        Some(unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(offset).cast::<AtomicU64>(), count)
        })
    }
}

impl<P: Protection> Drop for Mapping<P> {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: the range is exactly the mapping this value owns, and no borrow of it can
        // outlive `self`. A failure can only mean the range is not mapped, which nothing else
        // in this process could have done, so there is nothing to recover.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}
