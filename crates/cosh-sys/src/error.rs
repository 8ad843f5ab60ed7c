//! Errors of the system layer: the operation that failed and the kernel's error number.

use rustix::io::Errno;

/// A failed system operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{op} failed: {errno}")]
    Sys {
        /// What was attempted.
        op: &'static str,
        /// The kernel's answer.
        errno: Errno,
    },
    /// Sealing against writes was refused because a writable shared mapping of the buffer
    /// still exists somewhere (in any process).
    #[error(
        "cannot seal the buffer against writes: a process still holds a writable shared mapping of it (unmap it, or copy into a fresh buffer)"
    )]
    SealBusy,
    /// A descriptor received from elsewhere is not a buffer this layer accepts.
    #[error("refusing descriptor: {reason}")]
    BadDescriptor {
        /// Why.
        reason: String,
    },
    /// A message did not fit in the receive buffer.
    #[error("message truncated: it is longer than the {capacity}-byte receive buffer")]
    Truncated {
        /// The receive buffer's size.
        capacity: usize,
    },
    /// Descriptors attached to a message were dropped by the kernel (too many for the
    /// control buffer).
    #[error("descriptors attached to a message were dropped: more than {max} were sent")]
    TooManyDescriptors {
        /// The most this layer receives with one message.
        max: usize,
    },
    /// The runtime directory cannot be used safely.
    #[error("runtime directory {path} is not safe to use: {reason}")]
    UnsafeRuntimeDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// Another server already owns the socket path.
    #[error(
        "another server is already listening at {path}; stop it first, or set COSH_RUNTIME_DIR to use another directory"
    )]
    AlreadyServing {
        /// The socket path.
        path: std::path::PathBuf,
    },
    /// A mapping was refused because the process is at the kernel's limit on memory mappings
    /// (`vm.max_map_count`).
    #[error(
        "cannot map a buffer: this process has {mappings} memory mappings and the kernel allows \
         {max} (vm.max_map_count); release aggregates or connections it no longer needs, or \
         raise the limit"
    )]
    OutOfMappings {
        /// Mappings the process has.
        mappings: usize,
        /// The kernel's limit.
        max: usize,
    },
    /// A length does not fit in this machine's address space.
    #[error("a length of {len} bytes does not fit in this address space")]
    TooLong {
        /// The length.
        len: u64,
    },
}

impl Error {
    /// The kernel's error number, for errors that carry one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Sys { errno, .. } => Some(*errno),
            Error::OutOfMappings { .. } => Some(Errno::NOMEM),
            _ => None,
        }
    }

    /// Whether a non-blocking operation found nothing to do (`EAGAIN`).
    pub fn would_block(&self) -> bool {
        self.errno() == Some(Errno::AGAIN)
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a failed `mmap` means: `ENOMEM` near the limit on mappings says so, with the counts.
pub(crate) fn mmap_error(errno: Errno) -> Error {
    if errno == Errno::NOMEM {
        let mappings = std::fs::read_to_string("/proc/self/maps").map(|m| m.lines().count());
        let max = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|m| m.trim().parse::<usize>().ok());
        if let (Ok(mappings), Some(max)) = (mappings, max)
            && mappings + 16 >= max
        {
            return Error::OutOfMappings { mappings, max };
        }
    }
    Error::Sys { op: "mmap", errno }
}

/// Wraps a rustix result with the name of the operation.
pub(crate) fn sys<T>(op: &'static str, r: rustix::io::Result<T>) -> Result<T> {
    r.map_err(|errno| Error::Sys { op, errno })
}
