//! CoshFS through FUSE: a mount that unmodified programs use.
//!
//! [`CoshFuse`] answers the kernel's FUSE requests with a [`cosh_fs::Client`] (so a mount is
//! one more client of the service, with its cache and write-behind). FUSE inode numbers are
//! CoshFS inode numbers (both call the root 1); the adapter remembers the path of every inode
//! the kernel has looked up, and moves the paths below a renamed directory with it. Reads and
//! writes are the client's legacy API (the kernel hands over byte buffers); `flush` and
//! `fsync` report a write-behind that failed. Symbolic and hard links are not supported
//! (`EPERM`), as CoshFS has neither.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cosh_fs::{Client, Fh, FsError, OpenFlags as CoshOpen, Stat};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// How long the kernel may trust what it was told (other clients may change the files).
const TTL: Duration = Duration::from_secs(1);

struct Inner {
    client: Client,
    /// Every inode the kernel knows, and its path in the service.
    paths: HashMap<u64, String>,
    /// Open files by their raw handle.
    files: HashMap<u64, Fh>,
    uid: u32,
    gid: u32,
}

/// The FUSE file system (see the crate documentation).
pub struct CoshFuse {
    inner: Mutex<Inner>,
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

/// The client's results with the kernel's error numbers.
trait OrErrno<T> {
    fn or_errno(self) -> Result<T, Errno>;
}

impl<T> OrErrno<T> for cosh_fs::Result<T> {
    fn or_errno(self) -> Result<T, Errno> {
        self.map_err(|e| errno(&e))
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn name_of(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn time(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

impl Inner {
    fn attr(&self, s: &Stat) -> FileAttr {
        let t = time(s.mtime_ns);
        FileAttr {
            ino: INodeNo(s.ino),
            size: s.size,
            blocks: s.size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: if s.dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: (s.mode & 0o7777) as u16,
            nlink: u32::try_from(s.nlink).unwrap_or(u32::MAX),
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn path(&self, ino: INodeNo) -> Result<String, Errno> {
        self.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<String, Errno> {
        Ok(join(&self.path(parent)?, name_of(name)?))
    }

    /// Stats `path` and remembers its inode.
    fn known(&mut self, path: String) -> Result<FileAttr, Errno> {
        let s = self.client.stat(&path).or_errno()?;
        self.paths.insert(s.ino, path);
        Ok(self.attr(&s))
    }

    fn fh(&self, fh: FileHandle) -> Result<Fh, Errno> {
        self.files.get(&fh.0).copied().ok_or(Errno::EBADF)
    }

    fn open_path(&mut self, path: &str, flags: CoshOpen) -> Result<(Fh, Stat), Errno> {
        let fh = self.client.open(path, flags).or_errno()?;
        let s = self.client.fstat(fh).or_errno()?;
        self.files.insert(fh.raw(), fh);
        self.paths.insert(s.ino, path.to_string());
        Ok((fh, s))
    }
}

impl CoshFuse {
    /// A file system answering with `client`.
    pub fn new(client: Client) -> CoshFuse {
        let mut paths = HashMap::new();
        paths.insert(INodeNo::ROOT.0, "/".to_string());
        let (uid, gid) = owner_ids();
        CoshFuse {
            inner: Mutex::new(Inner {
                client,
                paths,
                files: HashMap::new(),
                uid,
                gid,
            }),
        }
    }

    /// Waits for the service to apply this client's writes; reports one that failed.
    fn sync(&self, fh: FileHandle, reply: ReplyEmpty) {
        let mut i = self.lock();
        let result = i.fh(fh).and_then(|fh| i.client.fsync(fh).or_errno());
        reply_empty(reply, result);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            // A panic elsewhere left it: the state is still the best there is.
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// This process's user and group (files appear to belong to whoever mounted them).
fn owner_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0))
}

impl Filesystem for CoshFuse {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut i = self.lock();
        let result = i.child(parent, name).and_then(|p| i.known(p));
        reply_entry(reply, result);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut i = self.lock();
        let got = match fh.map(|f| i.fh(f)) {
            Some(Ok(fh)) => i.client.fstat(fh).or_errno(),
            _ => i.path(ino).and_then(|p| i.client.stat(&p).or_errno()),
        };
        match got {
            Ok(s) => reply.attr(&TTL, &i.attr(&s)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut i = self.lock();
        let result = (|| -> Result<Stat, Errno> {
            let path = i.path(ino)?;
            if let Some(len) = size {
                match fh.map(|f| i.fh(f)) {
                    Some(Ok(fh)) => i.client.ftruncate(fh, len),
                    _ => i.client.truncate(&path, len),
                }
                .or_errno()?;
            }
            if let Some(mode) = mode {
                i.client.chmod(&path, mode).or_errno()?;
            }
            if let Some(t) = mtime {
                let at = match t {
                    TimeOrNow::SpecificTime(t) => t,
                    TimeOrNow::Now => SystemTime::now(),
                };
                let ns = at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
                i.client.set_mtime(&path, ns).or_errno()?;
            }
            i.client.stat(&path).or_errno()
        })();
        match result {
            Ok(s) => reply.attr(&TTL, &i.attr(&s)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut i = self.lock();
        let result = (|| {
            let path = i.child(parent, name)?;
            i.client.mkdir(&path).or_errno()?;
            i.client.chmod(&path, mode & !umask & 0o7777).or_errno()?;
            i.known(path)
        })();
        reply_entry(reply, result);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut i = self.lock();
        let result = i
            .child(parent, name)
            .and_then(|p| i.client.unlink(&p).or_errno());
        reply_empty(reply, result);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut i = self.lock();
        let result = i
            .child(parent, name)
            .and_then(|p| i.client.rmdir(&p).or_errno());
        reply_empty(reply, result);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut i = self.lock();
        let result = (|| {
            let from = i.child(parent, name)?;
            let to = i.child(newparent, newname)?;
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(Errno::EINVAL);
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) && i.client.stat(&to).is_ok() {
                return Err(Errno::EEXIST);
            }
            i.client.rename(&from, &to).or_errno()?;
            // Every known path at or below `from` moves.
            let below = format!("{from}/");
            for p in i.paths.values_mut() {
                if *p == from {
                    p.clone_from(&to);
                } else if let Some(rest) = p.strip_prefix(&below) {
                    *p = format!("{to}/{rest}");
                }
            }
            Ok(())
        })();
        reply_empty(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut i = self.lock();
        let trunc = flags.0 & libc_o_trunc() != 0;
        let result = i.path(ino).and_then(|p| {
            i.open_path(
                &p,
                CoshOpen {
                    trunc,
                    ..CoshOpen::default()
                },
            )
        });
        match result {
            Ok((fh, _)) => reply.opened(FileHandle(fh.raw()), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut i = self.lock();
        let result = i.child(parent, name).and_then(|p| {
            i.open_path(
                &p,
                CoshOpen {
                    create: true,
                    excl: flags & libc_o_excl() != 0,
                    trunc: flags & libc_o_trunc() != 0,
                    mode: mode & !umask & 0o7777,
                },
            )
        });
        match result {
            Ok((fh, s)) => reply.created(
                &TTL,
                &i.attr(&s),
                Generation(0),
                FileHandle(fh.raw()),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut i = self.lock();
        let mut buf = vec![0u8; size as usize];
        let result = i
            .fh(fh)
            .and_then(|fh| i.client.read_into(fh, offset, &mut buf).or_errno());
        match result {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut i = self.lock();
        let result = i
            .fh(fh)
            .and_then(|fh| i.client.write_from(fh, offset, data).or_errno());
        match result {
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.sync(fh, reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut i = self.lock();
        let result = match i.files.remove(&fh.0) {
            Some(fh) => i.client.close(fh).or_errno(),
            None => Err(Errno::EBADF),
        };
        reply_empty(reply, result);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(fh, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut i = self.lock();
        let result = (|| {
            let path = i.path(ino)?;
            let entries = i.client.readdir(&path).or_errno()?;
            let mut all: Vec<(u64, FileType, String)> = vec![
                (ino.0, FileType::Directory, ".".into()),
                (ino.0, FileType::Directory, "..".into()),
            ];
            for e in entries {
                i.paths.insert(e.ino, join(&path, &e.name));
                let kind = if e.dir {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                all.push((e.ino, kind, e.name));
            }
            Ok(all)
        })();
        match result {
            Ok(all) => {
                for (k, (ino, kind, name)) in all.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(*ino), k as u64 + 1, *kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Memory, not blocks: report a large, mostly free file system.
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let mut i = self.lock();
        let result = i.path(ino).and_then(|p| i.client.stat(&p).or_errno());
        reply_empty(reply, result.map(|_| ()));
    }
}

/// `O_TRUNC` and `O_EXCL` as Linux numbers them (the flags FUSE passes through).
fn libc_o_trunc() -> i32 {
    0o1000
}

fn libc_o_excl() -> i32 {
    0o200
}

/// Mounts `fs` at `dir` and serves it on a thread of its own until the returned session is
/// dropped (which unmounts).
pub fn spawn(fs: CoshFuse, dir: &Path) -> std::io::Result<fuser::BackgroundSession> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("coshfs".into()),
        fuser::MountOption::Subtype("coshfs".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    fuser::spawn_mount(fs, dir, &config)
}

/// Whether a file system is mounted at `dir` (as this process's mount table says).
pub fn mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        let d = dir.to_string_lossy();
        m.lines().any(|l| l.split(' ').nth(4) == Some(&d))
    })
}

/// Whether this machine can mount FUSE file systems (`/dev/fuse` opens, and `fusermount3`
/// or `fusermount` is installed); `Err` says what is missing.
pub fn usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| format!("/dev/fuse cannot be opened: {e}"))?;
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|d| d.join("fusermount3").exists() || d.join("fusermount").exists())
    });
    if found {
        Ok(())
    } else {
        Err("fusermount3 is not installed (Debian: apt-get install fuse3)".into())
    }
}
