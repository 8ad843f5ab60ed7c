//! Trace replay (`cosh replay TRACE_DIR`): replays a file system trace in the format of
//! `traces/FORMAT.md` against a target, the way the format's reference replayer does — by
//! path, one handle per path, records in `seq` order — and checks it the same way: every
//! read returns exactly `result` bytes at `offset`, every successful `open`/`stat`/`access`
//! finds the file (and a failed one with `ENOENT` does not), sizes agree with `fsize`, and at
//! the end every file has the size `final_files.csv` lists and nothing else exists.
//!
//! Targets: tmpfs through the kernel; CoshFS through its aggregate API (reads are snapshot
//! extents, writes are aggregates the replayer fills and hands over); CoshFS through the
//! legacy API (reads and writes copy into and out of buffers); each CoshFS target with the
//! client cache on or off, and with the client in another pool than the service.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cosh_fs::{Client, Fh, FsError, OpenFlags};

/// One record of a trace (only the columns a replay needs).
#[derive(Clone, Debug)]
pub struct Record {
    /// Position in the trace.
    pub seq: u64,
    /// The operation.
    pub op: Op,
    /// The path (relative to the work folder; `.` is the folder).
    pub path: String,
    /// The second path (`rename`, `link`, `symlink`).
    pub path2: String,
    /// `read`/`write`: the offset.
    pub offset: Option<u64>,
    /// `truncate`: the new length.
    pub size: Option<i64>,
    /// The call's result.
    pub result: Option<i64>,
    /// The symbolic errno of a failed call.
    pub errno: String,
    /// The flags column.
    pub flags: String,
    /// The mode column (octal).
    pub mode: String,
    /// The file size after the call, if known.
    pub fsize: Option<u64>,
}

/// The operations a replay acts on (the rest are skipped, as the reference replayer does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// open, openat, creat.
    Open,
    /// read, pread, copy_file_range (source) ...
    Read,
    /// write, pwrite ...
    Write,
    /// mmap of a file.
    Mmap,
    /// truncate, ftruncate.
    Truncate,
    /// stat by path.
    Stat,
    /// fstat.
    Fstat,
    /// access.
    Access,
    /// readlink.
    Readlink,
    /// mkdir.
    Mkdir,
    /// rmdir.
    Rmdir,
    /// unlink.
    Unlink,
    /// rename.
    Rename,
    /// link.
    Link,
    /// symlink.
    Symlink,
    /// getdents.
    Readdir,
    /// chmod.
    Chmod,
    /// utimensat.
    Utime,
    /// Anything else (close, seek, dup, lock, fsync, ...): nothing to replay.
    Other,
}

impl Op {
    fn parse(s: &str) -> Op {
        match s {
            "open" => Op::Open,
            "read" => Op::Read,
            "write" => Op::Write,
            "mmap" => Op::Mmap,
            "truncate" => Op::Truncate,
            "stat" => Op::Stat,
            "fstat" => Op::Fstat,
            "access" => Op::Access,
            "readlink" => Op::Readlink,
            "mkdir" => Op::Mkdir,
            "rmdir" => Op::Rmdir,
            "unlink" => Op::Unlink,
            "rename" => Op::Rename,
            "link" => Op::Link,
            "symlink" => Op::Symlink,
            "readdir" => Op::Readdir,
            "chmod" => Op::Chmod,
            "utime" => Op::Utime,
            _ => Op::Other,
        }
    }
}

/// An entry of `initial_files.csv` or `final_files.csv`.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Relative path.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// Bytes.
    pub size: u64,
}

/// A trace folder, loaded.
pub struct Trace {
    /// Where it was read from.
    pub dir: PathBuf,
    /// The records, in `seq` order.
    pub records: Vec<Record>,
    /// The work folder before the run.
    pub initial: Vec<Entry>,
    /// The work folder after the run.
    pub final_files: Vec<Entry>,
}

fn field<'a>(r: &'a csv::StringRecord, h: &HashMap<String, usize>, name: &str) -> &'a str {
    h.get(name).and_then(|&i| r.get(i)).unwrap_or("")
}

fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() { None } else { s.parse().ok() }
}

fn headers(r: &mut csv::Reader<impl std::io::Read>) -> Result<HashMap<String, usize>, String> {
    Ok(r.headers()
        .map_err(|e| e.to_string())?
        .iter()
        .enumerate()
        .map(|(i, h)| (h.to_string(), i))
        .collect())
}

fn entries(input: impl std::io::Read, what: &str) -> Result<Vec<Entry>, String> {
    let mut r = csv::Reader::from_reader(input);
    let h = headers(&mut r).map_err(|e| format!("{what}: {e}"))?;
    for need in ["path", "type", "size"] {
        if !h.contains_key(need) {
            return Err(format!("{what}: no {need:?} column"));
        }
    }
    let mut out = Vec::new();
    for row in r.records() {
        let row = row.map_err(|e| format!("{what}: {e}"))?;
        out.push(Entry {
            path: field(&row, &h, "path").to_string(),
            kind: field(&row, &h, "type").to_string(),
            size: num(field(&row, &h, "size")).unwrap_or(0),
        });
    }
    Ok(out)
}

fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>, String> {
    std::fs::File::open(path)
        .map(std::io::BufReader::new)
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl Trace {
    /// Reads `trace.csv.gz` (or `trace.csv`), `initial_files.csv` and `final_files.csv`.
    pub fn load(dir: &Path) -> Result<Trace, String> {
        let gz = dir.join("trace.csv.gz");
        let plain = dir.join("trace.csv");
        let input: Box<dyn std::io::Read> = if gz.exists() {
            Box::new(flate2::read::GzDecoder::new(
                std::fs::File::open(&gz).map_err(|e| format!("{}: {e}", gz.display()))?,
            ))
        } else {
            Box::new(std::fs::File::open(&plain).map_err(|e| {
                format!(
                    "{}: no trace.csv.gz or trace.csv there ({e}); a trace folder is described in traces/FORMAT.md",
                    dir.display()
                )
            })?)
        };
        let initial = dir.join("initial_files.csv");
        let final_files = dir.join("final_files.csv");
        Trace::parse(
            dir,
            std::io::BufReader::new(input),
            (open(&initial)?, &initial.display().to_string()),
            (open(&final_files)?, &final_files.display().to_string()),
        )
    }

    /// Reads a trace from its three parts (`trace.csv`, `initial_files.csv`,
    /// `final_files.csv`, each with the name to give in errors); `dir` is only remembered.
    pub fn parse(
        dir: &Path,
        trace: impl std::io::Read,
        initial: (impl std::io::Read, &str),
        final_files: (impl std::io::Read, &str),
    ) -> Result<Trace, String> {
        let mut r = csv::Reader::from_reader(trace);
        let h = headers(&mut r).map_err(|e| format!("trace: {e}"))?;
        for need in ["seq", "op", "path", "offset", "result"] {
            if !h.contains_key(need) {
                return Err(format!("the trace has no {need:?} column"));
            }
        }
        let mut records = Vec::new();
        for row in r.records() {
            let row = row.map_err(|e| format!("trace: {e}"))?;
            let path = field(&row, &h, "path");
            if path.starts_with('/') {
                continue;
            }
            records.push(Record {
                seq: num(field(&row, &h, "seq")).unwrap_or(records.len() as u64),
                op: Op::parse(field(&row, &h, "op")),
                path: path.to_string(),
                path2: field(&row, &h, "path2").to_string(),
                offset: num(field(&row, &h, "offset")),
                size: num(field(&row, &h, "size")),
                result: num(field(&row, &h, "result")),
                errno: field(&row, &h, "errno").to_string(),
                flags: field(&row, &h, "flags").to_string(),
                mode: field(&row, &h, "mode").to_string(),
                fsize: num(field(&row, &h, "fsize")),
            });
        }
        records.sort_by_key(|r| r.seq);
        Ok(Trace {
            dir: dir.to_path_buf(),
            initial: entries(initial.0, initial.1)?,
            final_files: entries(final_files.0, final_files.1)?,
            records,
        })
    }
}

/// A failed operation: its errno (`ENOENT` is 2, ...).
#[derive(Debug)]
pub struct Errno(pub i32);

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(5))
    }
}

impl From<FsError> for Errno {
    fn from(e: FsError) -> Errno {
        Errno(e.errno())
    }
}

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file of this many bytes.
    File(u64),
    /// A directory.
    Dir,
}

/// A file system a trace is replayed against, by path (paths are relative to its root).
pub trait Target {
    /// What it is, for the result table.
    fn name(&self) -> String;
    /// What `path` is, if anything.
    fn lookup(&mut self, path: &str) -> Result<Option<Kind>, Errno>;
    /// Creates an empty file (forgetting any handle of an older file at that path).
    fn create(&mut self, path: &str) -> Result<(), Errno>;
    /// Reads `buf.len()` bytes at `offset` through the path's handle; returns how many.
    fn read(&mut self, path: &str, offset: u64, buf: &mut [u8]) -> Result<usize, Errno>;
    /// Writes `data` at `offset` through the path's handle.
    fn write(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<(), Errno>;
    /// Cuts or extends the file through its handle.
    fn truncate(&mut self, path: &str, len: u64) -> Result<(), Errno>;
    /// The size of the file behind the path's handle (even once unlinked), else by path.
    fn fstat(&mut self, path: &str) -> Result<Option<u64>, Errno>;
    /// Makes a directory.
    fn mkdir(&mut self, path: &str) -> Result<(), Errno>;
    /// Removes an empty directory.
    fn rmdir(&mut self, path: &str) -> Result<(), Errno>;
    /// Removes a name (its handle stays usable).
    fn unlink(&mut self, path: &str) -> Result<(), Errno>;
    /// Renames (the handle follows).
    fn rename(&mut self, from: &str, to: &str) -> Result<(), Errno>;
    /// Lists a directory; returns the number of entries.
    fn readdir(&mut self, path: &str) -> Result<usize, Errno>;
    /// Sets permission bits.
    fn chmod(&mut self, path: &str, mode: u32) -> Result<(), Errno>;
    /// Sets the modification time to now.
    fn touch(&mut self, path: &str) -> Result<(), Errno>;
    /// Every entry below the root: (path, kind).
    fn walk(&mut self) -> Result<Vec<(String, Kind)>, Errno>;
    /// Extra lines for the result (cache statistics, ...).
    fn notes(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Operations replayed, by kind.
    pub ops: std::collections::BTreeMap<String, u64>,
    /// Records acted on.
    pub replayed: u64,
    /// Inconsistencies, by kind.
    pub bad: std::collections::BTreeMap<String, u64>,
    /// The first few, described.
    pub examples: Vec<String>,
    /// Files and directories checked against `final_files.csv`.
    pub final_checked: usize,
    /// Mismatches among them.
    pub final_bad: usize,
    /// Entries that should not exist.
    pub unexpected: Vec<String>,
    /// Bytes read and written.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Time replaying the records (setup and final check excluded).
    pub elapsed: Duration,
    /// The target's own notes.
    pub notes: Vec<String>,
    /// Time spent per kind of operation.
    pub time_by_op: std::collections::BTreeMap<String, Duration>,
}

impl Outcome {
    /// Whether the replay was exact.
    pub fn ok(&self) -> bool {
        self.bad.is_empty() && self.final_bad == 0 && self.unexpected.is_empty()
    }

    fn note(&mut self, kind: &str, r: &Record, msg: String) {
        *self.bad.entry(kind.to_string()).or_default() += 1;
        if self.examples.len() < 15 {
            self.examples
                .push(format!("{kind}: seq={} {:?} {} {msg}", r.seq, r.op, r.path));
        }
    }
}

fn errno_is(r: &Record, name: &str) -> bool {
    r.errno == name
}

/// Builds the initial folder (zero-filled files of the listed sizes).
pub fn prepare(trace: &Trace, t: &mut dyn Target) -> Result<(), String> {
    let fail = |what: &str, p: &str, e: Errno| format!("setting up {p} ({what}): errno {}", e.0);
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for e in &trace.initial {
        let mut parts: Vec<&str> = e.path.split('/').collect();
        if e.kind != "dir" {
            parts.pop();
        }
        for i in 1..=parts.len() {
            dirs.insert(parts[..i].join("/"));
        }
    }
    for d in &dirs {
        if !d.is_empty() && t.lookup(d).map_err(|e| fail("lookup", d, e))?.is_none() {
            t.mkdir(d).map_err(|e| fail("mkdir", d, e))?;
        }
    }
    let zeros = vec![0u8; 1 << 20];
    for e in trace.initial.iter().filter(|e| e.kind == "file") {
        t.create(&e.path).map_err(|x| fail("create", &e.path, x))?;
        let mut at = 0;
        while at < e.size {
            let n = (e.size - at).min(zeros.len() as u64);
            t.write(&e.path, at, &zeros[..n as usize])
                .map_err(|x| fail("write", &e.path, x))?;
            at += n;
        }
    }
    Ok(())
}

/// Replays every record against `t`, then checks the final state.
pub fn replay(
    trace: &Trace,
    t: &mut dyn Target,
    progress: Option<&indicatif::ProgressBar>,
) -> Outcome {
    let mut o = Outcome::default();
    let mut buf = vec![0u8; 1 << 20];
    let data = vec![0x5au8; 1 << 20];
    let began = Instant::now();
    for (i, r) in trace.records.iter().enumerate() {
        if i % 1024 == 0
            && let Some(p) = progress
        {
            p.set_position(i as u64);
        }
        if r.op == Op::Other {
            continue;
        }
        o.replayed += 1;
        let kind = format!("{:?}", r.op).to_lowercase();
        *o.ops.entry(kind.clone()).or_default() += 1;
        let started = Instant::now();
        replay_one(r, t, &mut o, &mut buf, &data);
        *o.time_by_op.entry(kind).or_default() += started.elapsed();
    }
    o.elapsed = began.elapsed();
    finish(trace, t, progress, o)
}

fn replay_one(r: &Record, t: &mut dyn Target, o: &mut Outcome, buf: &mut [u8], data: &[u8]) {
    {
        let path = r.path.as_str();
        let res = r.result;
        match r.op {
            Op::Open => {
                let fl = &r.flags;
                let found = match t.lookup(path) {
                    Ok(k) => k,
                    Err(e) => {
                        o.note("lookup_failed", r, format!("errno {}", e.0));
                        return;
                    }
                };
                if res.is_some_and(|x| x >= 0) {
                    if found == Some(Kind::Dir) || fl.contains("O_DIRECTORY") {
                        if found != Some(Kind::Dir) {
                            o.note("open_dir_missing", r, String::new());
                        }
                        return;
                    }
                    let creat = fl.contains("O_CREAT");
                    if found.is_none() && !creat {
                        o.note("open_missing_file", r, String::new());
                    }
                    if creat
                        && found.is_none()
                        && let Err(e) = t.create(path)
                    {
                        o.note("create_failed", r, format!("errno {}", e.0));
                        return;
                    }
                    if fl.contains("O_TRUNC")
                        && (fl.contains("O_WRONLY") || fl.contains("O_RDWR"))
                        && let Err(e) = t.truncate(path, 0)
                    {
                        o.note("truncate_failed", r, format!("errno {}", e.0));
                    }
                    if let Some(want) = r.fsize {
                        match t.lookup(path) {
                            Ok(Some(Kind::File(n))) if n == want => {}
                            other => o.note(
                                "open_size_mismatch",
                                r,
                                format!("trace {want}, replay {other:?}"),
                            ),
                        }
                    }
                } else if errno_is(r, "ENOENT") && found.is_some() && !r.flags.contains("O_CREAT") {
                    o.note("open_should_fail", r, String::new());
                } else if errno_is(r, "EEXIST") && found.is_none() {
                    o.note("open_excl_should_succeed", r, String::new());
                }
            }
            Op::Read | Op::Write => {
                let Some(n) = res.filter(|&n| n > 0) else {
                    return;
                };
                let Some(off) = r.offset else {
                    o.note("io_without_offset", r, String::new());
                    return;
                };
                let mut left = n as u64;
                let mut at = off;
                while left > 0 {
                    let k = left.min(buf.len() as u64) as usize;
                    if r.op == Op::Read {
                        match t.read(path, at, &mut buf[..k]) {
                            Ok(got) if got == k => o.bytes_read += k as u64,
                            Ok(got) => {
                                o.note("short_read", r, format!("wanted {k} at {at}, got {got}"));
                                break;
                            }
                            Err(e) => {
                                o.note("read_failed", r, format!("errno {}", e.0));
                                break;
                            }
                        }
                    } else {
                        match t.write(path, at, &data[..k]) {
                            Ok(()) => o.bytes_written += k as u64,
                            Err(e) => {
                                o.note("write_failed", r, format!("errno {}", e.0));
                                break;
                            }
                        }
                    }
                    left -= k as u64;
                    at += k as u64;
                }
            }
            Op::Mmap => {
                if !matches!(t.lookup(path), Ok(Some(_))) {
                    o.note("mmap_no_file", r, String::new());
                }
            }
            Op::Truncate => {
                if res == Some(0)
                    && let Some(len) = r.size.and_then(|s| u64::try_from(s).ok())
                    && let Err(e) = t.truncate(path, len)
                {
                    o.note("truncate_failed", r, format!("errno {}", e.0));
                }
            }
            Op::Stat | Op::Fstat | Op::Access | Op::Readlink => {
                let size = if r.op == Op::Fstat {
                    t.fstat(path).map(|s| s.map(Kind::File))
                } else {
                    t.lookup(path)
                };
                let size = match size {
                    Ok(s) => s,
                    Err(e) => {
                        o.note("lookup_failed", r, format!("errno {}", e.0));
                        return;
                    }
                };
                if res == Some(0) && size.is_none() {
                    o.note(
                        &format!("{:?}_should_succeed", r.op).to_lowercase(),
                        r,
                        String::new(),
                    );
                } else if errno_is(r, "ENOENT") && size.is_some() {
                    o.note(
                        &format!("{:?}_should_fail", r.op).to_lowercase(),
                        r,
                        String::new(),
                    );
                }
                if res == Some(0)
                    && let (Some(want), Some(Kind::File(got))) = (r.fsize, size)
                    && want != got
                {
                    o.note(
                        &format!("{:?}_size_mismatch", r.op).to_lowercase(),
                        r,
                        format!("trace {want}, replay {got}"),
                    );
                }
            }
            Op::Mkdir => {
                if res == Some(0) {
                    if let Err(e) = t.mkdir(path) {
                        o.note("mkdir_failed", r, format!("errno {}", e.0));
                    }
                } else if errno_is(r, "EEXIST") && t.lookup(path).ok().flatten() != Some(Kind::Dir)
                {
                    o.note("mkdir_should_succeed", r, String::new());
                }
            }
            Op::Rmdir => {
                if res == Some(0)
                    && let Err(e) = t.rmdir(path)
                {
                    o.note("rmdir_failed", r, format!("errno {}", e.0));
                }
            }
            Op::Unlink => {
                if res == Some(0) {
                    if let Err(e) = t.unlink(path) {
                        o.note("unlink_failed", r, format!("errno {}", e.0));
                    }
                } else if errno_is(r, "ENOENT") && matches!(t.lookup(path), Ok(Some(_))) {
                    o.note("unlink_should_fail", r, String::new());
                }
            }
            Op::Rename => {
                if res == Some(0)
                    && !r.path2.starts_with('/')
                    && let Err(e) = t.rename(path, &r.path2)
                {
                    o.note("rename_failed", r, format!("errno {}", e.0));
                }
            }
            Op::Link | Op::Symlink => {
                if res == Some(0) {
                    o.note("unsupported", r, "links are not replayed".into());
                }
            }
            Op::Readdir => {
                if res.is_some_and(|x| x > 0)
                    && let Err(e) = t.readdir(path)
                {
                    o.note("readdir_failed", r, format!("errno {}", e.0));
                }
            }
            Op::Chmod => {
                if res == Some(0)
                    && let Ok(mode) = u32::from_str_radix(r.mode.trim_start_matches("0o"), 8)
                    && let Err(e) = t.chmod(path, mode)
                {
                    o.note("chmod_failed", r, format!("errno {}", e.0));
                }
            }
            Op::Utime => {
                if res == Some(0)
                    && path != "."
                    && let Err(e) = t.touch(path)
                {
                    o.note("utime_failed", r, format!("errno {}", e.0));
                }
            }
            Op::Other => {}
        }
    }
}

fn finish(
    trace: &Trace,
    t: &mut dyn Target,
    progress: Option<&indicatif::ProgressBar>,
    mut o: Outcome,
) -> Outcome {
    if let Some(p) = progress {
        p.set_position(trace.records.len() as u64);
    }
    // The final state.
    let listed: BTreeSet<&str> = trace.final_files.iter().map(|e| e.path.as_str()).collect();
    for e in &trace.final_files {
        o.final_checked += 1;
        let got = t.lookup(&e.path).ok().flatten();
        let ok = match e.kind.as_str() {
            "file" => got == Some(Kind::File(e.size)),
            "dir" => got == Some(Kind::Dir),
            _ => true,
        };
        if !ok {
            o.final_bad += 1;
            if o.examples.len() < 20 {
                o.examples.push(format!(
                    "final: {} is {got:?}, not {} of {}",
                    e.path, e.kind, e.size
                ));
            }
        }
    }
    match t.walk() {
        Ok(all) => {
            for (p, _) in all {
                if !listed.contains(p.as_str()) {
                    o.unexpected.push(p);
                }
            }
        }
        Err(e) => o
            .examples
            .push(format!("final: cannot list the tree: errno {}", e.0)),
    }
    o.notes = t.notes();
    o
}

/// Prints an outcome the way the reference replayer does, plus the time.
pub fn print_outcome(name: &str, o: &Outcome) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "{name}: {} operations replayed in {:.1} ms ({} MiB read, {} MiB written)",
        o.replayed,
        o.elapsed.as_secs_f64() * 1e3,
        o.bytes_read >> 20,
        o.bytes_written >> 20
    );
    let _ = writeln!(
        err,
        "  inconsistencies during replay: {} {:?}",
        o.bad.values().sum::<u64>(),
        o.bad
    );
    let _ = writeln!(
        err,
        "  final state: {} entries checked, {} mismatches, {} unexpected entries {:?}",
        o.final_checked,
        o.final_bad,
        o.unexpected.len(),
        &o.unexpected[..o.unexpected.len().min(5)]
    );
    for x in &o.examples {
        let _ = writeln!(err, "    {x}");
    }
    for n in &o.notes {
        let _ = writeln!(err, "  {n}");
    }
    let by: Vec<String> = o
        .time_by_op
        .iter()
        .map(|(k, d)| format!("{k} {:.1}", d.as_secs_f64() * 1e3))
        .collect();
    let _ = writeln!(err, "  time by operation (ms): {}", by.join(", "));
}

// ---- tmpfs ----

/// A directory of a kernel file system (tmpfs by default), through ordinary system calls.
pub struct Kernel {
    root: PathBuf,
    files: HashMap<String, std::fs::File>,
    /// What to call it.
    pub label: String,
}

impl Kernel {
    /// A fresh, empty directory under `parent`.
    pub fn new(parent: &Path) -> Result<Kernel, String> {
        let root = parent.join(format!(
            "cosh-replay-{}-{}",
            std::process::id(),
            crate::now_ns()
        ));
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        Ok(Kernel {
            label: format!("kernel ({})", parent.display()),
            root,
            files: HashMap::new(),
        })
    }

    fn at(&self, p: &str) -> PathBuf {
        if p == "." {
            self.root.clone()
        } else {
            self.root.join(p)
        }
    }

    fn handle(&mut self, p: &str) -> Result<&std::fs::File, Errno> {
        if !self.files.contains_key(p) {
            let path = self.at(p);
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .or_else(|_| std::fs::File::open(&path))?;
            self.files.insert(p.to_string(), f);
        }
        self.files.get(p).ok_or(Errno(9))
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.files.clear();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Target for Kernel {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn lookup(&mut self, path: &str) -> Result<Option<Kind>, Errno> {
        match std::fs::symlink_metadata(self.at(path)) {
            Ok(m) if m.is_dir() => Ok(Some(Kind::Dir)),
            Ok(m) => Ok(Some(Kind::File(m.len()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(20) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn create(&mut self, path: &str) -> Result<(), Errno> {
        self.files.remove(path);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.at(path))?;
        self.files.insert(path.to_string(), f);
        Ok(())
    }

    fn read(&mut self, path: &str, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let f = self.handle(path)?;
        let mut n = 0;
        while n < buf.len() {
            let k = f.read_at(&mut buf[n..], offset + n as u64)?;
            if k == 0 {
                break;
            }
            n += k;
        }
        Ok(n)
    }

    fn write(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<(), Errno> {
        Ok(self.handle(path)?.write_all_at(data, offset)?)
    }

    fn truncate(&mut self, path: &str, len: u64) -> Result<(), Errno> {
        Ok(self.handle(path)?.set_len(len)?)
    }

    fn fstat(&mut self, path: &str) -> Result<Option<u64>, Errno> {
        if let Some(f) = self.files.get(path) {
            return Ok(Some(f.metadata()?.len()));
        }
        Ok(match self.lookup(path)? {
            Some(Kind::File(n)) => Some(n),
            Some(Kind::Dir) => Some(0),
            None => None,
        })
    }

    fn mkdir(&mut self, path: &str) -> Result<(), Errno> {
        Ok(std::fs::create_dir(self.at(path))?)
    }

    fn rmdir(&mut self, path: &str) -> Result<(), Errno> {
        Ok(std::fs::remove_dir(self.at(path))?)
    }

    fn unlink(&mut self, path: &str) -> Result<(), Errno> {
        Ok(std::fs::remove_file(self.at(path))?)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        self.files.remove(to);
        std::fs::rename(self.at(from), self.at(to))?;
        if let Some(f) = self.files.remove(from) {
            self.files.insert(to.to_string(), f);
        }
        Ok(())
    }

    fn readdir(&mut self, path: &str) -> Result<usize, Errno> {
        Ok(std::fs::read_dir(self.at(path))?.count())
    }

    fn chmod(&mut self, path: &str, mode: u32) -> Result<(), Errno> {
        use std::os::unix::fs::PermissionsExt;
        Ok(std::fs::set_permissions(
            self.at(path),
            std::fs::Permissions::from_mode(mode | 0o600),
        )?)
    }

    fn touch(&mut self, path: &str) -> Result<(), Errno> {
        let f = std::fs::File::open(self.at(path))?;
        Ok(f.set_modified(std::time::SystemTime::now())?)
    }

    fn walk(&mut self) -> Result<Vec<(String, Kind)>, Errno> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d)? {
                let e = e?;
                let p = e.path();
                let rel = p
                    .strip_prefix(&self.root)
                    .map_err(|_| Errno(5))?
                    .to_string_lossy()
                    .into_owned();
                let m = e.metadata()?;
                if m.is_dir() {
                    out.push((rel, Kind::Dir));
                    stack.push(p);
                } else {
                    out.push((rel, Kind::File(m.len())));
                }
            }
        }
        Ok(out)
    }
}

// ---- CoshFS ----

/// How the CoshFS target reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// Reads are snapshot extents; writes are ranges of an aggregate the producer keeps and
    /// fills in place (`Client::write_range`).
    Aggregate,
    /// Reads and writes copy into and out of the caller's buffers.
    Legacy,
}

/// CoshFS through its client library.
pub struct Coshfs {
    client: Client,
    api: Api,
    label: String,
    root: String,
    handles: HashMap<String, Fh>,
    /// The aggregate API's producer buffer (made on the first write, kept).
    scratch: Option<cosh::Agg>,
}

/// The aggregate API's producer buffer: the largest piece the replay writes at once.
const SCRATCH: u64 = 1 << 20;

impl Coshfs {
    /// Replays into a fresh directory of the service `client` is connected to.
    pub fn new(mut client: Client, api: Api, label: &str) -> Result<Coshfs, String> {
        let root = format!("/replay-{}-{}", std::process::id(), crate::now_ns());
        client.mkdir(&root).map_err(|e| e.to_string())?;
        Ok(Coshfs {
            client,
            api,
            label: label.to_string(),
            root,
            handles: HashMap::new(),
            scratch: None,
        })
    }

    fn at(&self, p: &str) -> String {
        if p == "." {
            self.root.clone()
        } else {
            format!("{}/{p}", self.root)
        }
    }

    fn handle(&mut self, p: &str) -> Result<Fh, Errno> {
        if let Some(&fh) = self.handles.get(p) {
            return Ok(fh);
        }
        let fh = self.client.open(&self.at(p), OpenFlags::existing())?;
        self.handles.insert(p.to_string(), fh);
        Ok(fh)
    }

    fn forget(&mut self, p: &str) -> Result<(), Errno> {
        if let Some(fh) = self.handles.remove(p) {
            self.client.close(fh)?;
        }
        Ok(())
    }

    /// The client, to read its cache statistics or give its domain back.
    pub fn into_client(mut self) -> Client {
        if let Some(a) = self.scratch.take() {
            let _ = self.client.domain().decref(a);
        }
        let handles: Vec<Fh> = self.handles.drain().map(|(_, h)| h).collect();
        for h in handles {
            let _ = self.client.close(h);
        }
        let _ = remove_tree(&mut self.client, &self.root);
        self.client
    }
}

/// Removes a directory tree of the service.
fn remove_tree(c: &mut Client, dir: &str) -> Result<(), FsError> {
    for e in c.readdir(dir)? {
        let p = format!("{dir}/{}", e.name);
        if e.dir {
            remove_tree(c, &p)?;
        } else {
            c.unlink(&p)?;
        }
    }
    c.rmdir(dir)
}

impl Target for Coshfs {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn lookup(&mut self, path: &str) -> Result<Option<Kind>, Errno> {
        match self.client.stat(&self.at(path)) {
            Ok(s) if s.dir => Ok(Some(Kind::Dir)),
            Ok(s) => Ok(Some(Kind::File(s.size))),
            Err(FsError::NotFound(_) | FsError::NotADirectory(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn create(&mut self, path: &str) -> Result<(), Errno> {
        self.forget(path)?;
        let fh = self.client.open(
            &self.at(path),
            OpenFlags {
                create: true,
                ..OpenFlags::default()
            },
        )?;
        self.handles.insert(path.to_string(), fh);
        Ok(())
    }

    fn read(&mut self, path: &str, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let fh = self.handle(path)?;
        match self.api {
            Api::Legacy => Ok(self.client.read_into(fh, offset, buf)?),
            Api::Aggregate => {
                let e = self.client.read(fh, offset, buf.len() as u64)?;
                // The bytes are read where they are: the first and last of each piece.
                let mut n = 0;
                for s in self.client.slices(&e)? {
                    std::hint::black_box((s.first(), s.last()));
                    n += s.len();
                }
                Ok(n)
            }
        }
    }

    fn write(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let fh = self.handle(path)?;
        match self.api {
            Api::Legacy => {
                self.client.write_from(fh, offset, data)?;
            }
            Api::Aggregate => {
                // The producer makes its data in place, in an aggregate it keeps, and
                // writes the range it made.
                let scratch = match self.scratch {
                    Some(a) => a,
                    None => {
                        let a = self
                            .client
                            .domain()
                            .alloc_unzeroed(SCRATCH)
                            .map_err(FsError::from)?;
                        self.scratch = Some(a);
                        a
                    }
                };
                let d = self.client.domain();
                let mut at = 0;
                for p in d.write_pieces(scratch, 0).map_err(FsError::from)? {
                    let b = d.bytes_mut(&p).map_err(FsError::from)?;
                    let k = b.len().min(data.len() - at);
                    b[..k].copy_from_slice(&data[at..at + k]);
                    at += k;
                    if at == data.len() {
                        break;
                    }
                }
                self.client
                    .write_range(fh, offset, scratch, 0, data.len() as u64)?;
            }
        }
        Ok(())
    }

    fn truncate(&mut self, path: &str, len: u64) -> Result<(), Errno> {
        let fh = self.handle(path)?;
        self.client.ftruncate(fh, len)?;
        Ok(())
    }

    fn fstat(&mut self, path: &str) -> Result<Option<u64>, Errno> {
        if let Some(&fh) = self.handles.get(path) {
            return Ok(Some(self.client.fstat(fh)?.size));
        }
        Ok(match self.lookup(path)? {
            Some(Kind::File(n)) => Some(n),
            Some(Kind::Dir) => Some(0),
            None => None,
        })
    }

    fn mkdir(&mut self, path: &str) -> Result<(), Errno> {
        Ok(self.client.mkdir(&self.at(path))?)
    }

    fn rmdir(&mut self, path: &str) -> Result<(), Errno> {
        Ok(self.client.rmdir(&self.at(path))?)
    }

    fn unlink(&mut self, path: &str) -> Result<(), Errno> {
        Ok(self.client.unlink(&self.at(path))?)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        self.forget(to)?;
        self.client.rename(&self.at(from), &self.at(to))?;
        if let Some(fh) = self.handles.remove(from) {
            self.handles.insert(to.to_string(), fh);
        }
        Ok(())
    }

    fn readdir(&mut self, path: &str) -> Result<usize, Errno> {
        Ok(self.client.readdir(&self.at(path))?.len())
    }

    fn chmod(&mut self, path: &str, mode: u32) -> Result<(), Errno> {
        Ok(self.client.chmod(&self.at(path), mode)?)
    }

    fn touch(&mut self, path: &str) -> Result<(), Errno> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Ok(self.client.set_mtime(&self.at(path), now)?)
    }

    fn walk(&mut self) -> Result<Vec<(String, Kind)>, Errno> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let dir = if rel.is_empty() {
                self.root.clone()
            } else {
                self.at(&rel)
            };
            for e in self.client.readdir(&dir)? {
                let p = if rel.is_empty() {
                    e.name.clone()
                } else {
                    format!("{rel}/{}", e.name)
                };
                if e.dir {
                    out.push((p.clone(), Kind::Dir));
                    stack.push(p);
                } else {
                    let size = self.client.stat(&self.at(&p))?.size;
                    out.push((p, Kind::File(size)));
                }
            }
        }
        Ok(out)
    }

    fn notes(&mut self) -> Vec<String> {
        let s = self.client.stats();
        vec![
            format!(
                "client cache: {} hits, {} misses, {} uncached reads, {} reads of its own writes, {} invalidations, {} evictions, {} KiB fetched, {} fstats and {} stats answered",
                s.hits,
                s.misses,
                s.uncached,
                s.shadow_reads,
                s.invalidations,
                s.evictions,
                s.fetched_bytes >> 10,
                s.attr_hits,
                s.lookup_hits
            ),
            format!(
                "writes: {} behind ({} through the shared write log), {} waited for a full log",
                s.writes_behind, s.writes_logged, s.log_full
            ),
        ]
    }
}

// ---- the command ----

/// What `cosh replay` and `cosh bench table3` do.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    about = "Replays a file system trace (traces/FORMAT.md) against tmpfs and CoshFS, checks every read and the final tree, and times each target."
)]
pub struct Args {
    /// The trace folder (trace.csv.gz, initial_files.csv, final_files.csv).
    pub trace: Option<PathBuf>,
    /// Targets, comma separated: tmpfs (the kernel), fuse (CoshFS mounted with `cosh fs
    /// mount`, through the kernel), coshfs (aggregate API, client cache),
    /// coshfs-legacy (legacy API, client cache), coshfs-nocache (aggregate API, every read
    /// asks the service), coshfs-legacy-nocache, device-coshfs and device-coshfs-nocache (the
    /// client in a device pool of its own, linked to the service's host pool, with and without
    /// the client cache).
    #[arg(long, value_delimiter = ',', default_value = "tmpfs,coshfs")]
    pub targets: Vec<String>,
    /// Replays per target; the median time is reported.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Untimed replays of every target before the timed ones (at least 1 for `cosh bench
    /// table3`): a service's first replay makes its buffers and fills its cache, which the
    /// kernel behind tmpfs did long ago. The first replay's time is still shown, apart.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(..=100))]
    pub warmup: u32,
    /// Where tmpfs is.
    #[arg(long, default_value = "/dev/shm", value_name = "DIR")]
    pub tmpfs: PathBuf,
    /// Also write the results as CSV here (target, every run's time, the median, the ratio
    /// to tmpfs, whether every replay was exact).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
}

const TARGETS: [&str; 8] = [
    "tmpfs",
    "fuse",
    "coshfs",
    "coshfs-legacy",
    "coshfs-nocache",
    "coshfs-legacy-nocache",
    "device-coshfs",
    "device-coshfs-nocache",
];

/// Runs `cosh replay` (`table3`: every target, one untimed replay and three timed runs each,
/// unless the options say otherwise). Helper processes are this program started with
/// `helpers` (`cosh bench fig2c`).
pub fn main_with(
    helpers: &[&str],
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
    table3: bool,
) -> Result<(), String> {
    let Some(mut args) = crate::parse_args::<Args>(args)? else {
        return Ok(());
    };
    let Some(dir) = args.trace.clone() else {
        return Err("which trace? Give its folder, for example ../shared/traces/devtrace".into());
    };
    if table3 {
        if args.targets == ["tmpfs", "coshfs"] {
            args.targets = TARGETS.iter().map(|s| s.to_string()).collect();
        }
        args.runs = args.runs.max(3);
        args.warmup = args.warmup.max(1);
    }
    for t in &args.targets {
        if !TARGETS.contains(&t.as_str()) {
            return Err(format!("unknown target {t:?}; the targets are {TARGETS:?}"));
        }
    }
    let trace = Trace::load(&dir)?;
    eprintln!(
        "{}: {} records, {} initial entries, {} final entries",
        dir.display(),
        trace.records.len(),
        trace.initial.len(),
        trace.final_files.len()
    );
    if args.warmup > 0 {
        eprintln!(
            "The first {} replay(s) of each target are untimed (a fresh service makes its buffers and fills its cache); the first one's time is shown apart.",
            args.warmup
        );
    }
    let mut service: Option<(Client, crate::fig2c::Helpers)> = None;
    let mut device: Option<(Client, crate::fig2c::Helpers)> = None;
    // Runs go round the targets (each target's first run, then each one's second, ...), so
    // that the machine's ups and downs fall on every target alike.
    let mut tally: Vec<Replayed> = args
        .targets
        .iter()
        .map(|name| Replayed {
            name: name.clone(),
            times: Vec::new(),
            first: None,
            exact: true,
        })
        .collect();
    for run in 0..args.warmup + args.runs {
        for (k, name) in args.targets.iter().enumerate() {
            let bar = indicatif::ProgressBar::new(trace.records.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{name:>22} {}: {{bar:40}} {{pos}}/{{len}} records {{elapsed}}",
                    if run < args.warmup {
                        format!("untimed {}", run + 1)
                    } else {
                        format!("run {}", run - args.warmup + 1)
                    }
                ))
                .map_err(|e| e.to_string())?,
            );
            let outcome = if name == "tmpfs" {
                let mut t = Kernel::new(&args.tmpfs)?;
                prepare(&trace, &mut t)?;
                replay(&trace, &mut t, Some(&bar))
            } else if name == "fuse" {
                if service.is_none() {
                    service = Some(crate::fig2c::start(helpers, "replay")?);
                }
                let dir = service
                    .as_ref()
                    .map(|(_, h)| h.dir.clone())
                    .ok_or("no service")?;
                let mount = FuseMount::start(&dir)?;
                let mut t = Kernel::new(&mount.dir)?;
                t.label = "fuse".into();
                prepare(&trace, &mut t)?;
                let o = replay(&trace, &mut t, Some(&bar));
                drop(t);
                drop(mount);
                o
            } else {
                let on_device = name.starts_with("device-");
                let slot = if on_device { &mut device } else { &mut service };
                let (client, started) = match slot.take() {
                    Some(s) => s,
                    None => crate::fig2c::start_with(
                        helpers,
                        if on_device { "replay-device" } else { "replay" },
                        on_device.then_some("device"),
                    )?,
                };
                let mut client = client;
                client.set_caching(!name.ends_with("nocache"));
                let api = if name.contains("legacy") {
                    Api::Legacy
                } else {
                    Api::Aggregate
                };
                let mut t = Coshfs::new(client, api, name)?;
                prepare(&trace, &mut t)?;
                let o = replay(&trace, &mut t, Some(&bar));
                *(if on_device { &mut device } else { &mut service }) =
                    Some((t.into_client(), started));
                o
            };
            bar.finish_and_clear();
            if run == 0 || !outcome.ok() {
                let label = if run < args.warmup {
                    format!("{name} (untimed)")
                } else {
                    name.clone()
                };
                print_outcome(&label, &outcome);
            }
            let t = &mut tally[k];
            t.exact &= outcome.ok();
            if run < args.warmup {
                t.first = t.first.or(Some(outcome.elapsed));
            } else {
                t.times.push(outcome.elapsed);
            }
        }
    }
    for t in &mut tally {
        t.times.sort();
    }
    let results = tally;
    drop(service);
    drop(device);
    let base = results
        .iter()
        .find(|r| r.name == "tmpfs")
        .map(Replayed::median);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\nTrace replay, {} ({} records; median of {} run(s)):",
        trace.dir.display(),
        trace.records.len(),
        args.runs
    );
    let _ = writeln!(
        err,
        "  {:<24} {:>12} {:>14} {:>8} {:>16}",
        "target", "time (ms)", "vs tmpfs", "exact", "first, untimed"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for r in &results {
        let med = r.median();
        let ratio = base.map_or("-".to_string(), |b| {
            format!("{:.2}x", med.as_secs_f64() / b.as_secs_f64())
        });
        let _ = writeln!(
            err,
            "  {:<24} {:>12.1} {:>14} {:>8} {:>16}",
            r.name,
            ms(med),
            ratio,
            if r.exact { "yes" } else { "NO" },
            r.first.map_or("-".to_string(), |f| format!("{:.1}", ms(f)))
        );
    }
    if let Some(path) = &args.csv {
        let mut csv = String::from("target,runs_ms,median_ms,vs_tmpfs,exact,first_ms\n");
        for r in &results {
            let med = r.median();
            let runs: Vec<String> = r.times.iter().map(|t| format!("{:.3}", ms(*t))).collect();
            let ratio = base.map_or(String::new(), |b| {
                format!("{:.3}", med.as_secs_f64() / b.as_secs_f64())
            });
            csv.push_str(&format!(
                "{},{},{:.3},{ratio},{},{}\n",
                r.name,
                runs.join(";"),
                ms(med),
                if r.exact { "yes" } else { "no" },
                r.first.map_or(String::new(), |f| format!("{:.3}", ms(f)))
            ));
        }
        std::fs::write(path, csv).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if results.iter().all(|r| r.exact) {
        Ok(())
    } else {
        Err("a replay was not exact (see above)".into())
    }
}

/// One target's replays: the timed runs (sorted once all are in), the first untimed one's
/// time, and whether every replay, untimed ones too, was exact.
#[derive(Clone, Debug)]
struct Replayed {
    name: String,
    times: Vec<Duration>,
    first: Option<Duration>,
    exact: bool,
}

impl Replayed {
    /// The median timed run (`runs` is at least 1).
    fn median(&self) -> Duration {
        self.times
            .get(self.times.len() / 2)
            .copied()
            .unwrap_or_default()
    }
}

/// `cosh fs mount` of the service whose sockets are in `dir`, for as long as it lives.
struct FuseMount {
    child: std::process::Child,
    dir: PathBuf,
}

impl FuseMount {
    fn start(service: &Path) -> Result<FuseMount, String> {
        let dir = service.join("mnt");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let child = std::process::Command::new(exe)
            .arg("--socket")
            .arg(service.join("host.sock"))
            .args(["fs", "mount"])
            .arg(&dir)
            .arg("--fs-socket")
            .arg(service.join("fs.sock"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run `cosh fs mount`: {e}"))?;
        let mut m = FuseMount { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mounted(&m.dir) {
            if m.child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                return Err("`cosh fs mount` did not mount (is FUSE usable here?)".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let _ = self.child.wait();
    }
}

fn mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        let d = dir.to_string_lossy();
        m.lines().any(|l| l.split(' ').nth(4) == Some(&d))
    })
}
