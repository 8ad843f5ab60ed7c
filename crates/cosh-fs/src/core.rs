//! The service's core, [`Fs`]: the namespace (directories, files, inode numbers, link
//! counts, permission bits and modification times) and the files' contents in buffers of the
//! service's domain ([`crate::data`]: 1 MiB chunks, written in place until handed out, copied
//! on write after). A read that hands bytes out assembles the file with `select` and `concat`
//! and selects the range: the aggregate it returns is a **snapshot** — bytes once handed out
//! are never written again — and a read that starts after a write returned sees that write. Unlinking a file removes its name; its data
//! stays readable through open handles until the last one closes. Errors are [`FsError`]s
//! with their errno values.

use std::collections::{BTreeMap, HashMap};

use cosh::{Agg, Domain};

use crate::data::{FileData, Mem};

/// What a file system operation can fail with (each with the errno a POSIX program expects).
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No such file or directory.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// The name is taken.
    #[error("{0}: already exists")]
    Exists(String),
    /// A path component, or the operand, is not a directory.
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// The operand is a directory.
    #[error("{0}: is a directory")]
    IsADirectory(String),
    /// A directory to remove is not empty.
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    /// A malformed path or an argument out of range.
    #[error("{0}")]
    Invalid(String),
    /// A name longer than 255 bytes.
    #[error("{0}: file name too long")]
    NameTooLong(String),
    /// A file would grow past the largest size.
    #[error("file too large: {0}")]
    TooBig(String),
    /// An unknown or closed handle.
    #[error("bad file handle {0}")]
    BadHandle(u64),
    /// The aggregate layer or the service failed; the message says how.
    #[error("{0}")]
    Io(String),
    /// The service cannot be reached (it stopped, or cut this client off).
    #[error("the file service is unavailable: {0}")]
    Unavailable(String),
}

impl From<cosh::Error> for FsError {
    fn from(e: cosh::Error) -> FsError {
        FsError::Io(e.to_string())
    }
}

impl FsError {
    /// The errno value for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound(_) => 2,       // ENOENT
            FsError::Exists(_) => 17,        // EEXIST
            FsError::NotADirectory(_) => 20, // ENOTDIR
            FsError::IsADirectory(_) => 21,  // EISDIR
            FsError::NotEmpty(_) => 39,      // ENOTEMPTY
            FsError::Invalid(_) => 22,       // EINVAL
            FsError::NameTooLong(_) => 36,   // ENAMETOOLONG
            FsError::TooBig(_) => 27,        // EFBIG
            FsError::BadHandle(_) => 9,      // EBADF
            FsError::Io(_) => 5,             // EIO
            FsError::Unavailable(_) => 107,  // ENOTCONN
        }
    }

    /// What the error says beyond its kind (the path, the handle, the message): with
    /// [`FsError::errno`], all a wire message needs to carry.
    pub fn detail(&self) -> String {
        match self {
            FsError::NotFound(s)
            | FsError::Exists(s)
            | FsError::NotADirectory(s)
            | FsError::IsADirectory(s)
            | FsError::NotEmpty(s)
            | FsError::Invalid(s)
            | FsError::NameTooLong(s)
            | FsError::TooBig(s)
            | FsError::Io(s)
            | FsError::Unavailable(s) => s.clone(),
            FsError::BadHandle(h) => h.to_string(),
        }
    }

    /// The error that `errno` and `detail` describe (the inverse of the two above; an errno
    /// this type has no variant for becomes [`FsError::Io`] naming it).
    pub fn from_parts(errno: i32, detail: String) -> FsError {
        match errno {
            2 => FsError::NotFound(detail),
            17 => FsError::Exists(detail),
            20 => FsError::NotADirectory(detail),
            21 => FsError::IsADirectory(detail),
            39 => FsError::NotEmpty(detail),
            22 => FsError::Invalid(detail),
            36 => FsError::NameTooLong(detail),
            27 => FsError::TooBig(detail),
            9 => FsError::BadHandle(detail.parse().unwrap_or(0)),
            107 => FsError::Unavailable(detail),
            5 => FsError::Io(detail),
            other => FsError::Io(format!("{detail} (errno {other})")),
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = FsError> = std::result::Result<T, E>;

/// What `stat` says (also what the protocol carries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stat {
    /// The inode number.
    pub ino: u64,
    /// Whether it is a directory.
    pub dir: bool,
    /// Bytes (files), entries (directories).
    pub size: u64,
    /// Names that refer to it.
    pub nlink: u64,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Last modification, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// One entry of a directory (also what the protocol carries).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirEntry {
    /// The name.
    pub name: String,
    /// Its inode.
    pub ino: u64,
    /// Whether it is a directory.
    pub dir: bool,
}

/// Now, in nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Permission bits and times, kept for every node.
#[derive(Clone, Copy, Debug)]
struct Meta {
    mode: u32,
    mtime_ns: i64,
}

impl Meta {
    fn new(mode: u32) -> Meta {
        Meta {
            mode: mode & 0o7777,
            mtime_ns: now_ns(),
        }
    }
}

enum Node {
    File {
        meta: Meta,
        data: FileData,
        nlink: u64,
        open: u64,
    },
    Dir {
        meta: Meta,
        entries: BTreeMap<String, u64>,
        parent: u64,
    },
}

impl Node {
    fn meta_mut(&mut self) -> &mut Meta {
        match self {
            Node::File { meta, .. } | Node::Dir { meta, .. } => meta,
        }
    }
}

/// The file system (see the crate documentation).
pub struct Fs {
    domain: Mem,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    handles: HashMap<u64, u64>,
    next_handle: u64,
}

/// The root directory's inode.
pub const ROOT: u64 = 1;

/// Splits a path into its components: absolute, `/`-separated, no empty, `.` or `..` parts.
fn components(path: &str) -> Result<Vec<&str>> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| FsError::Invalid(format!("{path}: paths are absolute")))?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(FsError::Invalid(format!(
            "{path}: a component is empty, '.' or '..'"
        )));
    }
    if parts.iter().any(|p| p.len() > 255) {
        return Err(FsError::NameTooLong(path.to_string()));
    }
    Ok(parts)
}

impl Fs {
    /// An empty file system served by `domain`.
    pub fn new(domain: Domain) -> Fs {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node::Dir {
                meta: Meta::new(0o755),
                entries: BTreeMap::new(),
                parent: ROOT,
            },
        );
        Fs {
            domain: Mem::new(domain),
            nodes,
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_handle: 1,
        }
    }

    /// The service's domain (its aggregates are the files' contents).
    pub fn domain(&mut self) -> &mut Domain {
        &mut self.domain
    }

    /// The service's domain with the chunk buffers it keeps spare (see [`crate::data`]).
    pub fn memory(&mut self) -> &mut Mem {
        &mut self.domain
    }

    /// The inode at `path`.
    fn resolve(&self, path: &str) -> Result<u64> {
        let mut ino = ROOT;
        for c in components(path)? {
            match self.nodes.get(&ino) {
                Some(Node::Dir { entries, .. }) => {
                    ino = *entries
                        .get(c)
                        .ok_or_else(|| FsError::NotFound(path.to_string()))?;
                }
                _ => return Err(FsError::NotADirectory(path.to_string())),
            }
        }
        Ok(ino)
    }

    /// The parent directory of `path` and the last component.
    fn parent<'p>(&self, path: &'p str) -> Result<(u64, &'p str)> {
        let parts = components(path)?;
        let Some((last, _)) = parts.split_last() else {
            return Err(FsError::Invalid(format!("{path}: the root has no name")));
        };
        let cut = path.len() - last.len() - 1;
        let dir = if cut == 0 { "/" } else { &path[..cut] };
        let ino = self.resolve(dir)?;
        match self.nodes.get(&ino) {
            Some(Node::Dir { .. }) => Ok((ino, last)),
            _ => Err(FsError::NotADirectory(dir.to_string())),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<String, u64>> {
        match self.nodes.get_mut(&dir) {
            Some(Node::Dir { entries, .. }) => Ok(entries),
            // Callers pass directories only (`parent` checked).
            _ => Err(FsError::Invalid(format!(
                "internal error: inode {dir} is no directory"
            ))),
        }
    }

    fn add(&mut self, path: &str, node: Node) -> Result<u64> {
        let (dir, name) = self.parent(path)?;
        if self.entries_mut(dir)?.contains_key(name) {
            return Err(FsError::Exists(path.to_string()));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.entries_mut(dir)?.insert(name.to_string(), ino);
        Ok(ino)
    }

    /// Creates an empty file (permission bits 0644).
    pub fn create(&mut self, path: &str) -> Result<u64> {
        self.create_with_mode(path, 0o644)
    }

    /// Creates an empty file with permission bits `mode`.
    pub fn create_with_mode(&mut self, path: &str, mode: u32) -> Result<u64> {
        self.add(
            path,
            Node::File {
                meta: Meta::new(mode),
                data: FileData::default(),
                nlink: 1,
                open: 0,
            },
        )
    }

    /// Creates a directory (permission bits 0755).
    pub fn mkdir(&mut self, path: &str) -> Result<u64> {
        self.mkdir_with_mode(path, 0o755)
    }

    /// Creates a directory with permission bits `mode`.
    pub fn mkdir_with_mode(&mut self, path: &str, mode: u32) -> Result<u64> {
        let (parent, _) = self.parent(path)?;
        self.add(
            path,
            Node::Dir {
                meta: Meta::new(mode),
                entries: BTreeMap::new(),
                parent,
            },
        )
    }

    /// What `path` is.
    pub fn stat(&self, path: &str) -> Result<Stat> {
        let ino = self.resolve(path)?;
        self.stat_ino(ino)
            .ok_or_else(|| FsError::NotFound(path.to_string()))
    }

    /// What the file behind an open handle is (even once unlinked).
    pub fn fstat(&self, handle: u64) -> Result<Stat> {
        let ino = self.handle_ino(handle)?;
        self.stat_ino(ino).ok_or(FsError::BadHandle(handle))
    }

    /// The inode an open handle refers to.
    pub fn handle_ino(&self, handle: u64) -> Result<u64> {
        self.handles
            .get(&handle)
            .copied()
            .ok_or(FsError::BadHandle(handle))
    }

    fn stat_ino(&self, ino: u64) -> Option<Stat> {
        Some(match self.nodes.get(&ino)? {
            Node::File {
                meta, data, nlink, ..
            } => Stat {
                ino,
                dir: false,
                size: data.len(),
                nlink: *nlink,
                mode: meta.mode,
                mtime_ns: meta.mtime_ns,
            },
            Node::Dir { meta, entries, .. } => Stat {
                ino,
                dir: true,
                size: entries.len() as u64,
                nlink: 2,
                mode: meta.mode,
                mtime_ns: meta.mtime_ns,
            },
        })
    }

    /// Sets the permission bits of `path`.
    pub fn chmod(&mut self, path: &str, mode: u32) -> Result<()> {
        let ino = self.resolve(path)?;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.meta_mut().mode = mode & 0o7777;
        }
        Ok(())
    }

    /// Sets the modification time of `path`.
    pub fn set_mtime(&mut self, path: &str, mtime_ns: i64) -> Result<()> {
        let ino = self.resolve(path)?;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.meta_mut().mtime_ns = mtime_ns;
        }
        Ok(())
    }

    /// The names in directory `path`, sorted.
    pub fn readdir(&self, path: &str) -> Result<Vec<String>> {
        Ok(self.list(path)?.into_iter().map(|e| e.name).collect())
    }

    /// The entries of directory `path`, sorted by name.
    pub fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        match self.nodes.get(&self.resolve(path)?) {
            Some(Node::Dir { entries, .. }) => Ok(entries
                .iter()
                .map(|(name, &ino)| DirEntry {
                    name: name.clone(),
                    ino,
                    dir: matches!(self.nodes.get(&ino), Some(Node::Dir { .. })),
                })
                .collect()),
            _ => Err(FsError::NotADirectory(path.to_string())),
        }
    }

    /// Opens the file at `path`: a handle that keeps its data readable even once unlinked.
    pub fn open(&mut self, path: &str) -> Result<u64> {
        let ino = self.resolve(path)?;
        match self.nodes.get_mut(&ino) {
            Some(Node::File { open, .. }) => *open += 1,
            Some(Node::Dir { .. }) => return Err(FsError::IsADirectory(path.to_string())),
            None => return Err(FsError::NotFound(path.to_string())),
        }
        let h = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(h, ino);
        Ok(h)
    }

    /// Closes a handle; the last one of an unlinked file frees its data.
    pub fn close(&mut self, handle: u64) -> Result<()> {
        let ino = self
            .handles
            .remove(&handle)
            .ok_or(FsError::BadHandle(handle))?;
        if let Some(Node::File { open, .. }) = self.nodes.get_mut(&ino) {
            *open -= 1;
        }
        self.reap(ino)
    }

    /// Frees a file nobody names or holds open.
    fn reap(&mut self, ino: u64) -> Result<()> {
        if matches!(
            self.nodes.get(&ino),
            Some(Node::File {
                nlink: 0,
                open: 0,
                ..
            })
        ) && let Some(Node::File { data, .. }) = self.nodes.remove(&ino)
        {
            data.free(&mut self.domain)?;
        }
        Ok(())
    }

    /// The open file's bytes and the domain, to work on both.
    fn data(&mut self, handle: u64) -> Result<(&mut FileData, &mut Mem)> {
        let ino = self.handle_ino(handle)?;
        self.data_ino(ino, &format!("handle {handle}"))
    }

    fn data_ino(&mut self, ino: u64, what: &str) -> Result<(&mut FileData, &mut Mem)> {
        let Fs { domain, nodes, .. } = self;
        match nodes.get_mut(&ino) {
            Some(Node::File { meta, data, .. }) => {
                meta.mtime_ns = now_ns();
                Ok((data, domain))
            }
            Some(Node::Dir { .. }) => Err(FsError::IsADirectory(what.to_string())),
            None => Err(FsError::NotFound(what.to_string())),
        }
    }

    fn data_ref(&self, handle: u64) -> Result<&FileData> {
        match self.nodes.get(&self.handle_ino(handle)?) {
            Some(Node::File { data, .. }) => Ok(data),
            _ => Err(FsError::BadHandle(handle)),
        }
    }

    /// Writes the bytes of `data` (an aggregate of the service's domain, consumed) at
    /// `offset` of the open file (zeros fill any gap past its end); returns the bytes written.
    pub fn write(&mut self, handle: u64, offset: u64, data: Agg) -> Result<u64> {
        let (file, d) = match self.data(handle) {
            Ok(x) => x,
            Err(e) => {
                self.domain.decref(data)?;
                return Err(e);
            }
        };
        file.write_agg(d, offset, data)
    }

    /// Writes `data` at `offset` of the open file, in place where nothing was handed out.
    pub fn write_bytes(&mut self, handle: u64, offset: u64, data: &[u8]) -> Result<u64> {
        let (file, d) = self.data(handle)?;
        file.write_bytes(d, offset, data)?;
        Ok(data.len() as u64)
    }

    /// [`Fs::write_bytes`], with the file's modification time set to `mtime_ns`: the time the
    /// writer made a write that is applied later (written behind).
    pub fn write_bytes_made_at(
        &mut self,
        handle: u64,
        offset: u64,
        data: &[u8],
        mtime_ns: i64,
    ) -> Result<u64> {
        let n = self.write_bytes(handle, offset, data)?;
        let ino = self.handle_ino(handle)?;
        if let Some(Node::File { meta, .. }) = self.nodes.get_mut(&ino) {
            meta.mtime_ns = mtime_ns;
        }
        Ok(n)
    }

    /// Copies up to `len` bytes of the open file from `offset` (fewer at its end), straight
    /// from the service's mappings.
    pub fn read_bytes(&self, handle: u64, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.data_ref(handle)?.read_bytes(&self.domain, offset, len)
    }

    /// The whole content of the open file (`None` while empty) and its length: the
    /// service's own aggregate, to share, not to consume.
    pub fn content(&mut self, handle: u64) -> Result<(Option<Agg>, u64)> {
        let ino = self.handle_ino(handle)?;
        let Fs { domain, nodes, .. } = self;
        match nodes.get_mut(&ino) {
            Some(Node::File { data, .. }) => Ok((data.whole(domain)?, data.len())),
            _ => Err(FsError::BadHandle(handle)),
        }
    }

    /// A snapshot of up to `len` bytes of the open file from `offset` (fewer at its end;
    /// `None` past it): an aggregate of the service's domain, to hand out.
    pub fn read(&mut self, handle: u64, offset: u64, len: u64) -> Result<Option<Agg>> {
        let ino = self.handle_ino(handle)?;
        let Fs { domain, nodes, .. } = self;
        match nodes.get_mut(&ino) {
            Some(Node::File { data, .. }) => data.range(domain, offset, len),
            _ => Err(FsError::BadHandle(handle)),
        }
    }

    /// Buffers holding the open file's bytes (at most one per MiB).
    pub fn buffers(&self, handle: u64) -> Result<usize> {
        Ok(self.data_ref(handle)?.chunk_count())
    }

    /// Cuts or extends (with zeros) the file at `path` to `len` bytes; returns its inode.
    pub fn truncate(&mut self, path: &str, len: u64) -> Result<u64> {
        let ino = self.resolve(path)?;
        self.truncate_ino(ino, len, path)?;
        Ok(ino)
    }

    /// Cuts or extends (with zeros) the file behind an open handle to `len` bytes.
    pub fn ftruncate(&mut self, handle: u64, len: u64) -> Result<()> {
        let ino = self.handle_ino(handle)?;
        self.truncate_ino(ino, len, &format!("handle {handle}"))
    }

    fn truncate_ino(&mut self, ino: u64, len: u64, path: &str) -> Result<()> {
        let (file, d) = self.data_ino(ino, path)?;
        file.truncate(d, len)
    }

    /// The directory holding `path`, the last component, and the inode it names.
    fn named<'p>(&mut self, path: &'p str) -> Result<(u64, &'p str, u64)> {
        let (dir, name) = self.parent(path)?;
        let ino = *self
            .entries_mut(dir)?
            .get(name)
            .ok_or_else(|| FsError::NotFound(path.to_string()))?;
        Ok((dir, name, ino))
    }

    /// Removes the name `path` of a file; open handles keep reading its data.
    pub fn unlink(&mut self, path: &str) -> Result<()> {
        let (dir, name, ino) = self.named(path)?;
        match self.nodes.get_mut(&ino) {
            Some(Node::File { nlink, .. }) => *nlink -= 1,
            Some(Node::Dir { .. }) => return Err(FsError::IsADirectory(path.to_string())),
            None => return Err(FsError::NotFound(path.to_string())),
        }
        self.entries_mut(dir)?.remove(name);
        self.reap(ino)
    }

    /// Removes the empty directory `path`.
    pub fn rmdir(&mut self, path: &str) -> Result<()> {
        let (dir, name, ino) = self.named(path)?;
        match self.nodes.get(&ino) {
            Some(Node::Dir { entries, .. }) if !entries.is_empty() => {
                return Err(FsError::NotEmpty(path.to_string()));
            }
            Some(Node::Dir { .. }) => {}
            _ => return Err(FsError::NotADirectory(path.to_string())),
        }
        self.entries_mut(dir)?.remove(name);
        self.nodes.remove(&ino);
        Ok(())
    }

    /// Renames `from` to `to`, replacing a file at `to` (as rename(2)); a directory cannot
    /// move into itself.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (fdir, fname, ino) = self.named(from)?;
        let (tdir, tname) = self.parent(to)?;
        // A directory cannot go below itself.
        if matches!(self.nodes.get(&ino), Some(Node::Dir { .. })) {
            let mut up = tdir;
            loop {
                if up == ino {
                    return Err(FsError::Invalid(format!("{from}: cannot move into itself")));
                }
                match self.nodes.get(&up) {
                    Some(Node::Dir { parent, .. }) if *parent != up => up = *parent,
                    _ => break,
                }
            }
        }
        if let Some(&old) = self.entries_mut(tdir)?.get(tname) {
            if old == ino {
                return Ok(());
            }
            match (self.nodes.get(&ino), self.nodes.get(&old)) {
                (Some(Node::File { .. }), Some(Node::Dir { .. })) => {
                    return Err(FsError::IsADirectory(to.to_string()));
                }
                (Some(Node::Dir { .. }), Some(Node::File { .. })) => {
                    return Err(FsError::NotADirectory(to.to_string()));
                }
                (Some(Node::Dir { .. }), Some(Node::Dir { entries, .. }))
                    if !entries.is_empty() =>
                {
                    return Err(FsError::NotEmpty(to.to_string()));
                }
                _ => {}
            }
            match self.nodes.get_mut(&old) {
                Some(Node::File { nlink, .. }) => *nlink -= 1,
                Some(Node::Dir { .. }) => {
                    self.nodes.remove(&old);
                }
                None => {}
            }
            self.reap(old)?;
        }
        self.entries_mut(fdir)?.remove(fname);
        self.entries_mut(tdir)?.insert(tname.to_string(), ino);
        if let Some(Node::Dir { parent, .. }) = self.nodes.get_mut(&ino) {
            *parent = tdir;
        }
        Ok(())
    }
}
