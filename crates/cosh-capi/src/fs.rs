//! CoshFS clients for C (`cosh_fs_*` in [`crate::ffi`]): each owns a domain of its own,
//! connected to the block manager the caller names, and speaks to the CoshFS service with the
//! legacy API (bytes copied into and out of the caller's buffers). Failures are negative
//! errno values (`-ENOENT`, `-EEXIST`, `-EBADF`, ...), as C file code expects.

use std::collections::BTreeMap;

use ::cosh_fs::{Client, Fh, FsError, OpenFlags, Stat};
use cosh::{Domain, Options};

use crate::{Failure, Outcome, Registry};

/// `EBADF`: not a connected client, or not an open file of it.
const EBADF: i32 = 9;

/// A CoshFS client of a C program (opaque).
pub struct cosh_fs {
    _opaque: [u8; 0],
}

/// The attributes `cosh_fs_stat` gives of a file or directory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct cosh_fs_attrs {
    /// The inode number.
    pub ino: u64,
    /// Bytes (files), entries (directories).
    pub size: u64,
    /// Names that refer to it.
    pub nlink: u64,
    /// Last modification, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// 1 for a directory, 0 for a file.
    pub is_dir: u32,
}

impl From<Stat> for cosh_fs_attrs {
    fn from(s: Stat) -> cosh_fs_attrs {
        cosh_fs_attrs {
            ino: s.ino,
            size: s.size,
            nlink: s.nlink,
            mtime_ns: s.mtime_ns,
            mode: s.mode,
            is_dir: u32::from(s.dir),
        }
    }
}

/// `cosh_fs_open` flag: create the file if it does not exist.
pub const COSH_FS_CREATE: u32 = 1;
/// `cosh_fs_open` flag: with `COSH_FS_CREATE`, fail if it exists.
pub const COSH_FS_EXCL: u32 = 2;
/// `cosh_fs_open` flag: cut the file to zero bytes.
pub const COSH_FS_TRUNC: u32 = 4;

struct Open {
    client: Client,
    handles: BTreeMap<u64, Fh>,
}

static CLIENTS: Registry<Open> = Registry::new(0xE, "a connected cosh_fs");

/// A failure of the file system: its errno, negated.
fn fs_failure(e: FsError) -> Failure {
    Failure::new(-e.errno(), e.to_string())
}

/// A handle that names no client: `-EBADF`, as for a closed file.
fn bad_client(f: Failure) -> Failure {
    Failure::new(-EBADF, f.message)
}

/// Connects a new client (a domain named `name` at the block manager at `block_manager`) to
/// the service at `service`; returns its handle.
pub(crate) fn connect(name: &str, block_manager: &str, service: &str) -> Outcome<*mut cosh_fs> {
    let domain = Domain::connect_with(&Options::new(name).socket(block_manager).no_spawn())?;
    let client = Client::connect(domain, std::path::Path::new(service)).map_err(fs_failure)?;
    Ok(CLIENTS.add(Open {
        client,
        handles: BTreeMap::new(),
    }) as *mut cosh_fs)
}

/// Runs `f` with the client a handle names (`end`: and disconnects it afterwards).
pub(crate) fn with_client<T>(
    handle: *const cosh_fs,
    end: bool,
    f: impl FnOnce(&mut Client, &mut BTreeMap<u64, Fh>) -> Result<T, FsError>,
) -> Outcome<T> {
    let bits = handle as usize;
    let done = if end {
        let mut open = CLIENTS.take(bits).map_err(bad_client)?;
        f(&mut open.client, &mut open.handles)
    } else {
        CLIENTS
            .with(bits, |open| f(&mut open.client, &mut open.handles))
            .map_err(bad_client)?
    };
    done.map_err(fs_failure)
}

/// The handle a C program names by `fh`.
pub(crate) fn handle(handles: &BTreeMap<u64, Fh>, fh: i64) -> Result<Fh, FsError> {
    u64::try_from(fh)
        .ok()
        .and_then(|k| handles.get(&k).copied())
        .ok_or(FsError::BadHandle(fh as u64))
}

/// Decodes `cosh_fs_open` flags.
pub(crate) fn open_flags(flags: u32, mode: u32) -> Result<OpenFlags, FsError> {
    if flags & !(COSH_FS_CREATE | COSH_FS_EXCL | COSH_FS_TRUNC) != 0 {
        return Err(FsError::Invalid(format!("unknown open flags {flags:#x}")));
    }
    Ok(OpenFlags {
        create: flags & COSH_FS_CREATE != 0,
        excl: flags & COSH_FS_EXCL != 0,
        trunc: flags & COSH_FS_TRUNC != 0,
        mode,
    })
}
