//! The only Cosh crate with unsafe code: safe wrappers over the Linux facilities the block
//! manager and client library are built on.
//!
//! - [`memfd::Memfd`]: a buffer's memory, created sealed against shrinking and growing and
//!   private to its owner (mode 0600); [`memfd::Memfd::seal_write`] makes it immutable for
//!   everyone, a kernel proof that nobody can write it any more.
//! - [`mapping::Mapping`]: a shared mapping of a memfd, typed by its protection: only a
//!   `Mapping<ReadWrite>` hands out `&mut [u8]`, and slices live no longer than the mapping.
//! - [`socket::SeqPacket`]: a SOCK_SEQPACKET Unix socket (one message per request) that passes
//!   file descriptors with SCM_RIGHTS and reports the peer's credentials.
//! - [`eventfd::EventFd`]: a doorbell one process rings and another waits on; [`futex`]:
//!   the same on a word of shared memory ([`mapping::Mapping::shared_words`]).
//! - [`cpu`]: holding a thread on chosen CPUs, for measurements that cross between cores.
//! - [`runtime`]: where the sockets live, and [`socket::SeqPacketListener::bind_exclusive`],
//!   which lets only one server own a socket path.
//!
//! Unsafe code is denied crate-wide and allowed only in `mapping`, where every block carries
//! a `SAFETY:` argument.
//!
//! ```
//! use cosh_sys::memfd::Memfd;
//! use cosh_sys::mapping::Prefault;
//!
//! let buffer = Memfd::create("example", 4096)?;
//! let mut w = buffer.map_write(Prefault::Now)?;
//! w.as_mut_slice()[..5].copy_from_slice(b"hello");
//! drop(w); // a writable mapping would block the seal
//! buffer.seal_write()?;
//! let r = buffer.map_read(Prefault::OnFirstTouch)?;
//! assert_eq!(&r.as_slice()[..5], b"hello");
//! assert!(buffer.map_write(Prefault::Now).is_err()); // sealed: nobody writes any more
//! # Ok::<(), cosh_sys::Error>(())
//! ```

pub mod cpu;
pub mod error;
pub mod eventfd;
pub mod futex;
pub mod mapping;
pub mod memfd;
pub mod runtime;
pub mod socket;

pub use error::{Error, Result};
