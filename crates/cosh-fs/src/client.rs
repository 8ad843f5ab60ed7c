//! The CoshFS client library: the aggregate API, the legacy byte API, and the client cache.
//!
//! **Aggregate API.** [`Client::read`] returns an [`Extent`]: a range of a snapshot of the
//! file, readable in place ([`Client::slices`]) without a copy; [`Client::read_agg`] makes it
//! an aggregate of the client's domain, to transfer on. [`Client::write`] takes an aggregate
//! and hands it to the service by strong move; [`Client::write_range`] writes a range of an
//! aggregate the caller keeps (a strong copy). Aggregates of up to 64 KiB travel inside the
//! request instead: copying that little is cheaper than a transfer.
//!
//! **Legacy API.** [`Client::read_into`] and [`Client::write_from`] copy into and out of the
//! caller's buffer, once.
//!
//! **Cache.** A read first fetches the whole file (up to [`Client::max_cached_file`]) by
//! weak share — in the service's pool the client maps the service's buffers, in another pool
//! the transfer copies them into the client's pool — and serves every later read from it
//! without asking the service. The service never changes bytes it has shared, so a cached
//! file is a stable snapshot; it sends a notice to every client caching a file before it
//! answers a write to it, and the client looks at its socket before each read, so a read that
//! starts after a write completed always sees it. A client caches at most
//! [`Client::MAX_CACHED_FILES`] files (least recently used dropped first), which also bounds
//! the notices the service ever has to queue for it. A file this client is writing is read
//! from the service for a few reads before it is fetched whole again. `stat` by path is
//! cached too, found or missing ([`Client::MAX_CACHED_PATHS`]): the service tells the client
//! of names others make, remove or move and of changes to the files it looked up.
//!
//! **Write-behind.** The first small write to a file asks for its write lease; while the
//! client holds it, small writes are sent without waiting ([`Client::set_write_behind`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cosh::{Agg, Domain, DomainId, Location, Mode, Ticket, TransferFlags};
use cosh_sys::socket::SeqPacket;

use crate::core::{DirEntry, FsError, Result, Stat};
use crate::log::LogWriter;
use crate::proto::{self, INLINE_MAX, MAX_MESSAGE, Reply, Request, ToClient};

/// How long the client waits for a transfer the service announced by ticket.
const TICKET_WAIT: Duration = Duration::from_secs(5);

/// An open file of a [`Client`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fh(u64);

impl Fh {
    /// The service's number for the handle.
    pub fn raw(self) -> u64 {
        self.0
    }
}

/// How to open a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenFlags {
    /// Create it if it does not exist.
    pub create: bool,
    /// With `create`: fail if it exists.
    pub excl: bool,
    /// Cut it to zero bytes.
    pub trunc: bool,
    /// Permission bits for a new file (0 means 0644).
    pub mode: u32,
}

impl OpenFlags {
    /// Open an existing file.
    pub fn existing() -> OpenFlags {
        OpenFlags::default()
    }

    /// Create or truncate (`open(O_CREAT | O_TRUNC)`).
    pub fn create() -> OpenFlags {
        OpenFlags {
            create: true,
            trunc: true,
            ..OpenFlags::default()
        }
    }

    fn bits(self) -> u32 {
        let mut b = 0;
        if self.create {
            b |= proto::open::CREATE;
        }
        if self.excl {
            b |= proto::open::EXCL;
        }
        if self.trunc {
            b |= proto::open::TRUNC;
        }
        b
    }
}

/// What the cache did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads that had to fetch the file first.
    pub misses: u64,
    /// Reads that bypassed the cache (caching off, or a file too big for it).
    pub uncached: u64,
    /// Bytes fetched into the cache.
    pub fetched_bytes: u64,
    /// Cached files dropped because the service said they changed.
    pub invalidations: u64,
    /// Cached files dropped to make room.
    pub evictions: u64,
    /// `fstat`s answered from the cache.
    pub attr_hits: u64,
    /// `stat`s answered from cached lookups.
    pub lookup_hits: u64,
    /// Reads of a file this client holds the lease of and knows whole, answered locally.
    pub shadow_reads: u64,
    /// Writes sent behind (not waited for).
    pub writes_behind: u64,
    /// Of those, the writes appended to the write log shared with the service.
    pub writes_logged: u64,
    /// Writes that found the write log full and waited for the service instead.
    pub log_full: u64,
}

/// A snapshot of a file (or a range of it) in the client's domain.
struct Snapshot {
    agg: Option<Agg>,
    /// The content itself, when the service sent a small file inline (then there is no
    /// aggregate and there are no pieces).
    copied: Option<Vec<u8>>,
    len: u64,
    pieces: Vec<Location>,
    /// Where each piece ends, counted from the start of the snapshot.
    ends: Vec<u64>,
    released: Arc<Mutex<Vec<Agg>>>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Some(agg) = self.agg.take()
            && let Ok(mut list) = self.released.lock()
        {
            // Freed by the client at its next call (a drop cannot reach the domain).
            list.push(agg);
        }
    }
}

/// A range of a file as it was when read: it stays the same whatever is written later, and
/// reading it copies nothing ([`Client::slices`]).
#[derive(Clone)]
pub struct Extent {
    snap: Option<Arc<Snapshot>>,
    /// A small read the service copied into its answer (cheaper than sharing it).
    copied: Option<Arc<Vec<u8>>>,
    offset: u64,
    len: u64,
}

impl std::fmt::Debug for Extent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extent")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

impl Extent {
    /// Bytes in the range (fewer than asked at the end of the file).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the range is empty (the read started at or past the end of the file).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn empty() -> Extent {
        Extent {
            snap: None,
            copied: None,
            offset: 0,
            len: 0,
        }
    }
}

struct Cached {
    snap: Arc<Snapshot>,
    /// The attributes that came with it.
    stat: Stat,
    version: u64,
    used: u64,
}

/// A connection to a CoshFS service (see the module documentation).
pub struct Client {
    domain: Domain,
    sock: SeqPacket,
    server: DomainId,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// Open handles and their inodes.
    handles: HashMap<u64, u64>,
    cache: HashMap<u64, Cached>,
    tick: u64,
    /// Files dropped from the cache that the service has not been told of.
    forget: Vec<u64>,
    released: Arc<Mutex<Vec<Agg>>>,
    caching: bool,
    max_cached_file: u64,
    stats: CacheStats,
    /// Set when the service went away: nothing cached can be trusted any more.
    gone: bool,
    /// How long to look for an answer before sleeping.
    spin: Duration,
    /// Files this client wrote since it last fetched them, and the reads since: a file being
    /// written is read without fetching it whole, until it has been read a few times in a row.
    written: HashMap<u64, u32>,
    /// Write leases asked for: held (`true`) or refused.
    leases: HashMap<u64, bool>,
    /// The whole content of leased files that were empty when leased: this client's own
    /// writes are all there is, so its reads are answered here.
    shadows: HashMap<u64, Arc<Vec<u8>>>,
    /// The attributes of files this client holds the lease of: only its own writes change
    /// them, or the service says otherwise (a notice drops them), so `fstat` is answered
    /// here.
    lease_attrs: HashMap<u64, Stat>,
    /// Cached lookups: path → attributes (`None`: nothing has that name).
    paths: HashMap<String, Option<Stat>>,
    /// How many cached lookups name each file (the service keeps telling this client of
    /// changes to a file while any does, or the file is cached).
    path_inos: HashMap<u64, usize>,
    write_behind: bool,
    /// A write-behind the service could not apply, for the next call to report.
    deferred: Option<FsError>,
    /// The write log shared with the service, once made (see [`crate::log`]).
    log: Option<LogWriter>,
    /// The service's notice count (see [`crate::log`]) when this client last read its socket
    /// dry.
    notices_seen: u64,
    /// What a select of part of a snapshot has cost this client lately (nanoseconds, a
    /// moving average; `None`: not measured yet): [`Client::extent_agg`] copies a piece
    /// instead where the copy costs less.
    select_ns: Option<u64>,
    /// What the copies made instead since the last select cost, by the same estimate: at
    /// eight selects' worth, the next piece is selected to measure again.
    copied_ns: u64,
}

fn unexpected(r: &Reply) -> FsError {
    FsError::Io(format!("the service answered out of turn: {r:?}"))
}

/// The estimated cost of copying `len` bytes instead of selecting them (see
/// [`Client::extent_agg`]), or `None` where a select is to be taken: when none was measured
/// yet, when one costs less than the copy, when the copies since the last add up to eight
/// of it, or above the inline limit.
fn copy_costs(
    len: u64,
    policy: &cosh::SmallTransfers,
    select_ns: Option<u64>,
    copied_ns: u64,
) -> Option<u64> {
    let copy_ns = len.div_ceil(1024).saturating_mul(policy.ring_ns_per_kib);
    let select = select_ns?;
    (len <= policy.inline_max
        && copy_ns <= select
        && copied_ns.saturating_add(copy_ns) <= select.saturating_mul(8))
    .then_some(copy_ns)
}

impl Client {
    /// The most files one client caches.
    pub const MAX_CACHED_FILES: usize = 128;

    /// The most lookups one client caches (with the files, what bounds the notices the
    /// service may have to queue for it).
    pub const MAX_CACHED_PATHS: usize = 512;

    /// The most files the cache and the cached lookups may name together: the service may
    /// have to queue a notice for each, so this bounds what it queues for a client (lookups
    /// of missing names are bounded by [`Client::MAX_CACHED_PATHS`] alone).
    pub const MAX_NOTIFIED_FILES: usize = 256;

    /// How long a request looks for its answer before it sleeps, unless set: long enough
    /// for what the service does at once (a few microseconds) and for most of what it has to
    /// catch up on first (applying the writes a client logged, up to a millisecond), since a
    /// sleeping client costs a wake-up (50–100 us on a virtual machine) on top. On the
    /// devtrace replay, 1 ms against 50 us: 53–58 ms against 55–78 ms, alternating runs.
    pub const DEFAULT_SPIN: Duration = Duration::from_micros(1000);

    /// Sets how long a request looks for its answer before it sleeps (zero: sleep at once).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// Connects `domain` to the service at `socket`: names the domain, proves it with a
    /// one-byte copy, and trusts the service (its weak shares stay zero-copy).
    pub fn connect(domain: Domain, socket: &Path) -> Result<Client> {
        let sock = SeqPacket::connect(socket).map_err(|e| {
            FsError::Unavailable(format!("no CoshFS service at {}: {e}", socket.display()))
        })?;
        let mut c = Client {
            server: domain.id(),
            domain,
            sock,
            inbuf: vec![0; MAX_MESSAGE],
            outbuf: Vec::with_capacity(MAX_MESSAGE),
            handles: HashMap::new(),
            cache: HashMap::new(),
            tick: 0,
            forget: Vec::new(),
            released: Arc::new(Mutex::new(Vec::new())),
            caching: true,
            max_cached_file: 64 << 20,
            stats: CacheStats::default(),
            select_ns: None,
            copied_ns: 0,
            gone: false,
            spin: Client::DEFAULT_SPIN,
            written: HashMap::new(),
            leases: HashMap::new(),
            shadows: HashMap::new(),
            lease_attrs: HashMap::new(),
            paths: HashMap::new(),
            path_inos: HashMap::new(),
            write_behind: true,
            deferred: None,
            log: None,
            notices_seen: 0,
        };
        let me = c.domain.id();
        match c.call(&Request::Hello {
            version: proto::VERSION,
            domain: me.to_bits(),
        })? {
            Reply::Welcome { server } => c.server = DomainId::from_bits(server),
            r => return Err(unexpected(&r)),
        }
        c.domain.trust(c.server)?;
        let proof = c.domain.alloc(1)?;
        let ticket = c
            .domain
            .attach_transfer(proof, c.server, Mode::Copy, TransferFlags::strong());
        c.domain.decref(proof)?;
        match c.call(&Request::Prove { ticket: ticket?.0 })? {
            Reply::Done => {}
            r => return Err(unexpected(&r)),
        }
        // Memory both map is the service's memory too only in its pool, and only coherent
        // memory makes appended bytes visible without a transfer.
        if c.server.pool == me.pool && c.domain.coherent() {
            c.start_log()?;
        }
        Ok(c)
    }

    /// The client's domain.
    pub fn domain(&mut self) -> &mut Domain {
        &mut self.domain
    }

    /// The service's domain.
    pub fn server(&self) -> DomainId {
        self.server
    }

    /// Turns the cache on (the default) or off; off drops what it holds, and every read
    /// then asks the service (reads up to [`INLINE_MAX`] bytes copied into its answer,
    /// larger ones by weak share).
    pub fn set_caching(&mut self, on: bool) {
        self.caching = on;
        if !on {
            let inos: Vec<u64> = self.cache.keys().copied().collect();
            for ino in inos {
                self.drop_cached(ino);
            }
        }
    }

    /// The largest file the cache takes whole (64 MiB unless set).
    pub fn max_cached_file(&self) -> u64 {
        self.max_cached_file
    }

    /// Sets [`Client::max_cached_file`].
    pub fn set_max_cached_file(&mut self, bytes: u64) {
        self.max_cached_file = bytes;
    }

    /// What the cache did so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Turns write-behind on (the default) or off. On, small writes to a file whose write
    /// lease this client holds are sent without waiting for the service: complete once sent
    /// (the service applies them before it answers anyone). A write-behind that fails is
    /// reported by a later call — the first that starts after the service applied it, and at
    /// the latest by [`Client::fsync`] or [`Client::close`]. Off, every write waits for its
    /// answer.
    pub fn set_write_behind(&mut self, on: bool) {
        self.write_behind = on;
    }

    // ---- the conversation with the service ----

    /// Applies one message that is not a reply; a reply here is out of turn.
    fn notice(&mut self, m: ToClient) -> Result<Option<Reply>> {
        match m {
            ToClient::Reply(r) => Ok(Some(r)),
            ToClient::Namespace => {
                self.paths_clear();
                Ok(None)
            }
            ToClient::Deferred { errno, detail } => {
                // A write the service did not apply may be in a shadow, and in attributes.
                self.shadows.clear();
                self.lease_attrs.clear();
                if self.deferred.is_none() {
                    self.deferred = Some(FsError::from_parts(errno, detail));
                }
                Ok(None)
            }
            ToClient::Invalidate { ino, version } => {
                // Someone else changed it (or its attributes): the shadow may be wrong, and
                // so may any lookup that named it.
                self.shadows.remove(&ino);
                self.lease_attrs.remove(&ino);
                self.paths_drop_ino(ino);
                if self.cache.get(&ino).is_some_and(|c| c.version < version) {
                    self.stats.invalidations += 1;
                    self.cache.remove(&ino);
                }
                Ok(None)
            }
        }
    }

    fn lost(&mut self, why: String) -> FsError {
        self.gone = true;
        self.cache.clear();
        FsError::Unavailable(why)
    }

    /// Reads every notice waiting, frees aggregates no extent holds any more. Before any
    /// read from the cache.
    fn catch_up(&mut self) -> Result<()> {
        if self.gone {
            return Err(FsError::Unavailable("the service went away".into()));
        }
        // With a shared page, the socket is read only when the service counted a notice
        // since it was last read dry (a count read before reading it, so a notice counted
        // meanwhile is looked for next time).
        let count = self.log.as_mut().map(LogWriter::notices);
        let look = count.is_none_or(|n| n != self.notices_seen);
        if look {
            loop {
                match self.sock.try_recv(&mut self.inbuf) {
                    Ok(Some(m)) => {
                        let msg = proto::decode::<ToClient>(&self.inbuf[..m.len])
                            .map_err(|e| self.lost(format!("an undecodable message: {e}")))?;
                        if let Some(r) = self.notice(msg)? {
                            return Err(self.lost(format!("a reply nobody asked for: {r:?}")));
                        }
                    }
                    Ok(None) => return Err(self.lost("the service closed the connection".into())),
                    Err(e) if e.would_block() => break,
                    Err(e) => return Err(self.lost(e.to_string())),
                }
            }
        }
        if let Some(n) = count {
            self.notices_seen = n;
        }
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        let released = match self.released.lock() {
            Ok(mut list) => std::mem::take(&mut *list),
            Err(_) => Vec::new(),
        };
        for agg in released {
            self.domain.decref(agg)?;
        }
        Ok(())
    }

    /// Sends a request and waits for its reply, applying notices met on the way.
    fn call(&mut self, request: &Request) -> Result<Reply> {
        self.catch_up()?;
        if !self.forget.is_empty() {
            let inos = std::mem::take(&mut self.forget);
            self.send(&Request::Uncache { inos })?;
        }
        self.send(request)?;
        let sent = std::time::Instant::now();
        loop {
            // Look without waiting for a while first: a wake-up from sleep costs more than
            // most answers take.
            let spinning = sent.elapsed() < self.spin;
            let got = if spinning {
                self.sock.try_recv(&mut self.inbuf)
            } else {
                self.sock.recv(&mut self.inbuf)
            };
            let got = match got {
                Ok(Some(m)) => m.len,
                Ok(None) => return Err(self.lost("the service closed the connection".into())),
                Err(e) if spinning && e.would_block() => {
                    std::hint::spin_loop();
                    continue;
                }
                Err(e) => return Err(self.lost(e.to_string())),
            };
            let msg = proto::decode::<ToClient>(&self.inbuf[..got])
                .map_err(|e| self.lost(format!("an undecodable message: {e}")))?;
            match self.notice(msg)? {
                Some(Reply::Failed { errno, detail }) => {
                    return Err(FsError::from_parts(errno, detail));
                }
                Some(r) => return Ok(r),
                None => {}
            }
        }
    }

    fn send(&mut self, request: &Request) -> Result<()> {
        proto::encode(request, &mut self.outbuf)
            .map_err(|e| FsError::Invalid(format!("cannot encode the request: {e}")))?;
        let sent = match (&request, &self.log) {
            (Request::Log { .. }, Some(log)) => self.sock.send(&self.outbuf, &[log.fd()]),
            _ => self.sock.send(&self.outbuf, &[]),
        };
        if let Err(e) = sent {
            return Err(self.lost(e.to_string()));
        }
        Ok(())
    }

    /// Makes a write log and hands it to the service; without one, write-behinds travel as
    /// messages and every look for notices is a system call.
    fn start_log(&mut self) -> Result<()> {
        let Ok(log) = LogWriter::create(crate::log::WORDS) else {
            return Ok(());
        };
        let words = log.words();
        self.log = Some(log);
        if self.call(&Request::Log { words }).is_err() {
            self.log = None;
        }
        if self.gone {
            return Err(FsError::Unavailable("the service went away".into()));
        }
        Ok(())
    }

    fn done(&mut self, request: &Request) -> Result<()> {
        match self.call(request)? {
            Reply::Done => Ok(()),
            r => Err(unexpected(&r)),
        }
    }

    fn attr(&mut self, request: &Request) -> Result<Stat> {
        match self.call(request)? {
            Reply::Attr(s) => Ok(s),
            r => Err(unexpected(&r)),
        }
    }

    fn ino(&self, fh: Fh) -> Result<u64> {
        self.handles
            .get(&fh.0)
            .copied()
            .ok_or(FsError::BadHandle(fh.0))
    }

    fn drop_cached(&mut self, ino: u64) {
        if self.cache.remove(&ino).is_some() && !self.path_inos.contains_key(&ino) {
            self.forget.push(ino);
        }
    }

    /// Tells the service (with the next request) that this client no longer needs to hear of
    /// `ino`, unless it still caches it or a lookup of it.
    fn release_ino(&mut self, ino: u64) {
        if !self.cache.contains_key(&ino) && !self.path_inos.contains_key(&ino) {
            self.forget.push(ino);
        }
    }

    fn path_insert(&mut self, path: &str, stat: Option<Stat>) {
        self.path_remove(path);
        let new_file = stat.is_some_and(|s| self.notified(s.ino).is_none());
        if self.paths.len() >= Self::MAX_CACHED_PATHS
            || (new_file && self.notified_files() >= Self::MAX_NOTIFIED_FILES)
        {
            self.paths_clear();
        }
        if let Some(s) = stat {
            *self.path_inos.entry(s.ino).or_insert(0) += 1;
            // The answer just told the service to tell this client of the file again: a
            // forgetting not yet sent would undo that.
            self.forget.retain(|&i| i != s.ino);
        }
        self.paths.insert(path.to_string(), stat);
    }

    /// Whether the service tells this client of changes to `ino` (a file it caches or
    /// looked up).
    fn notified(&self, ino: u64) -> Option<()> {
        (self.cache.contains_key(&ino) || self.path_inos.contains_key(&ino)).then_some(())
    }

    /// How many files the service tells this client of: each may call for one notice.
    fn notified_files(&self) -> usize {
        self.path_inos.len()
            + self
                .cache
                .keys()
                .filter(|i| !self.path_inos.contains_key(i))
                .count()
    }

    fn path_remove(&mut self, path: &str) {
        if let Some(Some(s)) = self.paths.remove(path)
            && let Some(n) = self.path_inos.get_mut(&s.ino)
        {
            *n -= 1;
            if *n == 0 {
                self.path_inos.remove(&s.ino);
                self.release_ino(s.ino);
            }
        }
    }

    fn paths_clear(&mut self) {
        self.paths.clear();
        let inos: Vec<u64> = self.path_inos.drain().map(|(i, _)| i).collect();
        for ino in inos {
            self.release_ino(ino);
        }
    }

    /// Drops every cached lookup that named `ino`.
    fn paths_drop_ino(&mut self, ino: u64) {
        if self.path_inos.remove(&ino).is_some() {
            self.paths.retain(|_, s| s.is_none_or(|s| s.ino != ino));
            self.release_ino(ino);
        }
    }

    /// This client changed the name `path`: its lookup, its parent's, and those below it
    /// are stale.
    fn renamed(&mut self, path: &str) {
        self.path_remove(path);
        if let Some(parent) = proto::parent_of(path) {
            self.path_remove(parent);
        }
        let below = format!("{path}/");
        let stale: Vec<String> = self
            .paths
            .keys()
            .filter(|p| p.starts_with(&below))
            .cloned()
            .collect();
        for p in stale {
            self.path_remove(&p);
        }
    }

    /// This client changed `ino`: its cached copy is stale, and reads should not fetch it
    /// whole again at once.
    fn wrote(&mut self, ino: u64) {
        self.drop_cached(ino);
        // Lookups of a leased file are answered with the attributes kept with the lease.
        if !self.lease_attrs.contains_key(&ino) {
            self.paths_drop_ino(ino);
        }
        if self.written.len() > 4 * Self::MAX_CACHED_FILES {
            self.written.clear();
        }
        self.written.insert(ino, 0);
    }

    /// The service answered a change to `ino` with its attributes: kept if this client holds
    /// the file's lease.
    fn attrs_now(&mut self, ino: u64, stat: Stat) {
        if let Some(s) = self.lease_attrs.get_mut(&ino) {
            *s = stat;
        }
    }

    /// Writes `buf` as an aggregate of this client's, by strong move.
    fn write_by_transfer(&mut self, fh: Fh, offset: u64, buf: &[u8]) -> Result<usize> {
        let agg = self.domain.alloc_unzeroed(buf.len() as u64)?;
        if let Err(e) = self.domain.write(agg, 0, buf) {
            self.domain.decref(agg)?;
            return Err(e.into());
        }
        Ok(self.write(fh, offset, agg)? as usize)
    }

    /// Whether a write of `len` bytes (more than travel inline) at `offset` goes through the
    /// write log (one entry per 64 KiB, applied whole): under the lease, with a log, and at most
    /// [`Client::LOGGED_WRITE_MAX`] — cheaper than a transfer, which costs requests to both
    /// block managers' ends and copies as much.
    fn may_log_large(&mut self, fh: Fh, ino: u64, offset: u64, len: u64) -> Result<bool> {
        let fits = offset
            .checked_add(len)
            .is_some_and(|end| end <= crate::data::MAX_FILE);
        Ok(fits
            && len <= Self::LOGGED_WRITE_MAX
            && self.log.is_some()
            && self.write_behind
            && self.lease(fh, ino)?)
    }

    /// The largest write (of bytes the caller keeps) sent through the write log rather than
    /// as a transfer: three quarters of the log.
    pub const LOGGED_WRITE_MAX: u64 = 3 << 20;

    /// How long a write waits for room in a full write log before it waits for an answer
    /// instead.
    const LOG_PATIENCE: Duration = Duration::from_micros(200);

    /// Reads of a file this client is writing before the cache takes it whole again.
    const READS_BEFORE_FETCH: u32 = 8;

    // ---- namespace ----

    /// Opens the file at `path` (absolute, within the service).
    pub fn open(&mut self, path: &str, flags: OpenFlags) -> Result<Fh> {
        let mode = if flags.mode == 0 { 0o644 } else { flags.mode };
        if flags.create {
            // It may make the name.
            self.renamed(path);
        }
        match self.call(&Request::Open {
            path: path.into(),
            flags: flags.bits(),
            mode,
        })? {
            Reply::Opened {
                fh,
                stat,
                cacheable,
                parent,
            } => {
                if flags.trunc {
                    // The truncation changed it (the service told everyone else).
                    self.wrote(stat.ino);
                    self.attrs_now(stat.ino, stat);
                    if let Some(sh) = self.shadows.get_mut(&stat.ino) {
                        Arc::make_mut(sh).clear();
                    }
                }
                self.handles.insert(fh, stat.ino);
                // What the service said is what a lookup would say now.
                if self.caching {
                    if cacheable {
                        self.path_insert(path, Some(stat));
                    }
                    self.parent_now(path, parent);
                }
                Ok(Fh(fh))
            }
            r => Err(unexpected(&r)),
        }
    }

    /// Creates or truncates the file at `path` and opens it.
    pub fn create(&mut self, path: &str) -> Result<Fh> {
        self.open(path, OpenFlags::create())
    }

    /// Closes a handle (the file's cached snapshot stays, and stays current).
    pub fn close(&mut self, fh: Fh) -> Result<()> {
        let ino = self.ino(fh)?;
        self.handles.remove(&fh.0);
        if !self.handles.values().any(|&i| i == ino) {
            // The service ends the lease with the last handle; what the lease's attributes
            // say is what lookups of the file say from now on.
            self.leases.remove(&ino);
            self.shadows.remove(&ino);
            if let Some(s) = self.lease_attrs.remove(&ino) {
                for known in self.paths.values_mut().flatten() {
                    if known.ino == ino {
                        *known = s;
                    }
                }
            }
        }
        self.done(&Request::Close { fh: fh.0 })?;
        self.deferred.take().map_or(Ok(()), Err)
    }

    /// Waits until the service has applied every write this client sent, and reports one that
    /// failed (as `fsync(2)` reports a failed write-behind).
    pub fn fsync(&mut self, fh: Fh) -> Result<()> {
        self.ino(fh)?;
        // A round trip: everything sent before it is applied when it is answered.
        self.attr(&Request::Fstat { fh: fh.0 })?;
        self.deferred.take().map_or(Ok(()), Err)
    }

    /// Whether this client holds the write lease of `ino` (asking for it the first time).
    fn lease(&mut self, fh: Fh, ino: u64) -> Result<bool> {
        if let Some(&held) = self.leases.get(&ino) {
            return Ok(held);
        }
        match self.call(&Request::Lease { fh: fh.0 })? {
            Reply::Leased { granted, stat } => {
                self.leases.insert(ino, granted);
                if granted {
                    self.lease_attrs.insert(ino, stat);
                    if stat.size == 0 {
                        self.shadows.insert(ino, Arc::new(Vec::new()));
                    }
                }
                Ok(granted)
            }
            r => Err(unexpected(&r)),
        }
    }

    /// Attributes of `path`.
    pub fn stat(&mut self, path: &str) -> Result<Stat> {
        if !self.caching {
            return self.attr(&Request::Stat { path: path.into() });
        }
        self.catch_up()?;
        if let Some(&known) = self.paths.get(path) {
            self.stats.lookup_hits += 1;
            // A file this client holds the lease of: its own writes moved the attributes.
            let known = known.map(|s| self.lease_attrs.get(&s.ino).copied().unwrap_or(s));
            return known.ok_or_else(|| FsError::NotFound(path.to_string()));
        }
        match self.call(&Request::Lookup { path: path.into() })? {
            Reply::Looked {
                stat: got,
                cacheable,
            } => {
                if cacheable {
                    self.path_insert(path, got);
                }
                got.ok_or_else(|| FsError::NotFound(path.to_string()))
            }
            r => Err(unexpected(&r)),
        }
    }

    /// Attributes of an open file (from the cache when the file is cached: any change to it
    /// would have been notified).
    pub fn fstat(&mut self, fh: Fh) -> Result<Stat> {
        let ino = self.ino(fh)?;
        self.catch_up()?;
        if let Some(c) = self.cache.get(&ino) {
            self.stats.attr_hits += 1;
            return Ok(c.stat);
        }
        if let Some(&s) = self.lease_attrs.get(&ino) {
            self.stats.attr_hits += 1;
            return Ok(s);
        }
        self.attr(&Request::Fstat { fh: fh.0 })
    }

    /// Makes a directory (permission bits 0755).
    pub fn mkdir(&mut self, path: &str) -> Result<()> {
        self.renamed(path);
        let r = self.call(&Request::Mkdir {
            path: path.into(),
            mode: 0o755,
        })?;
        self.name_changed(path, r)
    }

    /// Removes an empty directory.
    pub fn rmdir(&mut self, path: &str) -> Result<()> {
        self.renamed(path);
        let r = self.call(&Request::Rmdir { path: path.into() })?;
        self.name_changed(path, r)
    }

    /// Removes a file's name (open handles keep reading it).
    pub fn unlink(&mut self, path: &str) -> Result<()> {
        self.renamed(path);
        let r = self.call(&Request::Unlink { path: path.into() })?;
        self.name_changed(path, r)
    }

    /// The answer to a change of the name `path`: the attributes of its directory now.
    fn name_changed(&mut self, path: &str, r: Reply) -> Result<()> {
        match r {
            Reply::Changed { parent } => {
                if self.caching {
                    self.parent_now(path, Some(parent));
                }
                Ok(())
            }
            Reply::Done => Ok(()),
            r => Err(unexpected(&r)),
        }
    }

    /// The service said what the directory holding `path` is now: cached as its lookup.
    fn parent_now(&mut self, path: &str, parent: Option<Stat>) {
        if let (Some(dir), Some(stat)) = (proto::parent_of(path), parent) {
            self.path_insert(dir, Some(stat));
        }
    }

    /// The answer to a change of the attributes of `path`: what a lookup would say now.
    fn attributes_changed(&mut self, path: &str, r: Reply) -> Result<()> {
        match r {
            Reply::Looked { stat, cacheable } => {
                if let Some(s) = stat
                    && self.leases.get(&s.ino) == Some(&true)
                {
                    // The notice of this very change dropped the lease's attributes.
                    self.lease_attrs.insert(s.ino, s);
                }
                if self.caching && cacheable {
                    self.path_insert(path, stat);
                }
                Ok(())
            }
            Reply::Done => Ok(()),
            r => Err(unexpected(&r)),
        }
    }

    /// Renames `from` to `to`, replacing what `to` named.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.renamed(from);
        self.renamed(to);
        self.done(&Request::Rename {
            from: from.into(),
            to: to.into(),
        })
    }

    /// Sets permission bits.
    pub fn chmod(&mut self, path: &str, mode: u32) -> Result<()> {
        let r = self.call(&Request::Chmod {
            path: path.into(),
            mode,
        })?;
        self.attributes_changed(path, r)
    }

    /// Sets the modification time (nanoseconds since the Unix epoch).
    pub fn set_mtime(&mut self, path: &str, mtime_ns: i64) -> Result<()> {
        let r = self.call(&Request::SetMtime {
            path: path.into(),
            mtime_ns,
        })?;
        self.attributes_changed(path, r)
    }

    /// The entries of a directory, sorted by name.
    pub fn readdir(&mut self, path: &str) -> Result<Vec<DirEntry>> {
        let mut all: Vec<DirEntry> = Vec::new();
        loop {
            let after = all.last().map(|e| e.name.clone());
            match self.call(&Request::List {
                path: path.into(),
                after,
            })? {
                Reply::Entries { entries, more } => {
                    all.extend(entries);
                    if !more {
                        return Ok(all);
                    }
                }
                r => return Err(unexpected(&r)),
            }
        }
    }

    /// Cuts or extends (with zeros) the file at `path`.
    pub fn truncate(&mut self, path: &str, len: u64) -> Result<Stat> {
        let s = self.attr(&Request::Truncate {
            path: path.into(),
            len,
        })?;
        self.wrote(s.ino);
        self.shadows.remove(&s.ino);
        Ok(s)
    }

    /// Cuts or extends (with zeros) an open file.
    pub fn ftruncate(&mut self, fh: Fh, len: u64) -> Result<Stat> {
        let ino = self.ino(fh)?;
        self.wrote(ino);
        let s = self.attr(&Request::Ftruncate { fh: fh.0, len })?;
        self.attrs_now(ino, s);
        if let Some(sh) = self.shadows.get_mut(&ino) {
            if len <= Self::SHADOW_MAX {
                Arc::make_mut(sh).resize(len as usize, 0);
            } else {
                self.shadows.remove(&ino);
            }
        }
        Ok(s)
    }

    // ---- reading ----

    /// A snapshot of up to `len` bytes of the file from `offset` (fewer at its end, empty
    /// past it), without copying: from the cache, filling it first if need be.
    pub fn read(&mut self, fh: Fh, offset: u64, len: u64) -> Result<Extent> {
        let ino = self.ino(fh)?;
        self.catch_up()?;
        if let Some(sh) = self.shadows.get(&ino) {
            // The shadow as it is now (the next write copies it if this extent still holds it).
            self.stats.shadow_reads += 1;
            let offset = offset.min(sh.len() as u64);
            let len = len.min(sh.len() as u64 - offset);
            return Ok(Extent {
                snap: None,
                offset,
                len,
                copied: Some(sh.clone()),
            });
        }
        if self.caching
            && let Some(snap) = self.cached(fh, ino)?
        {
            return Ok(Self::cut(snap, offset, len));
        }
        self.read_uncached(fh, offset, len)
    }

    /// The largest file whose bytes a lease holder keeps.
    const SHADOW_MAX: u64 = 16 << 20;

    /// A read the service answers: small ranges copied into the answer, larger ones shared.
    fn read_uncached(&mut self, fh: Fh, offset: u64, len: u64) -> Result<Extent> {
        self.stats.uncached += 1;
        if len <= INLINE_MAX as u64 {
            return match self.call(&Request::Read {
                fh: fh.0,
                offset,
                len,
            })? {
                Reply::Bytes { data } => Ok(Extent {
                    snap: None,
                    len: data.len() as u64,
                    copied: Some(Arc::new(data)),
                    offset: 0,
                }),
                r => Err(unexpected(&r)),
            };
        }
        match self.call(&Request::Share {
            fh: fh.0,
            offset,
            len,
        })? {
            Reply::Shared {
                ticket: Some(ticket),
                len,
            } => {
                let snap = self.take(ticket, len)?;
                Ok(Self::cut(snap, 0, len))
            }
            Reply::Shared { ticket: None, .. } => Ok(Extent::empty()),
            r => Err(unexpected(&r)),
        }
    }

    /// Like [`Client::read`], as an aggregate of the client's domain (`None` when empty),
    /// to keep or transfer on.
    pub fn read_agg(&mut self, fh: Fh, offset: u64, len: u64) -> Result<Option<Agg>> {
        let e = self.read(fh, offset, len)?;
        self.extent_agg(&e)
    }

    /// The extent as an aggregate of the client's domain (`None` when empty).
    pub fn extent_agg(&mut self, e: &Extent) -> Result<Option<Agg>> {
        if let Some(bytes) = &e.copied {
            let bytes = Self::copied_range(bytes, e)?;
            if bytes.is_empty() {
                return Ok(None);
            }
            return Ok(self.domain.alloc_copy(bytes)?);
        }
        if let Some(s) = &e.snap
            && s.copied.is_some()
        {
            let bytes = self.slices(e)?.concat();
            let e = Extent {
                snap: None,
                copied: Some(Arc::new(bytes)),
                offset: 0,
                len: e.len,
            };
            return self.extent_agg(&e);
        }
        match &e.snap {
            Some(s) if e.len > 0 => match s.agg {
                Some(agg) if e.offset == 0 && e.len == s.len => {
                    self.domain.incref(agg)?;
                    Ok(Some(agg))
                }
                // A small piece is copied into a buffer of the client's own, where that
                // costs less than the block manager's select (a round trip) costs this
                // client, as measured; a larger one is selected.
                Some(_) if self.copy_beats_select(e.len)? => {
                    let bytes = self.slices(e)?.concat();
                    Ok(self.domain.alloc_copy(&bytes)?)
                }
                Some(agg) => {
                    let started = std::time::Instant::now();
                    let part = self.domain.select(agg, e.offset, e.len)?;
                    let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    self.select_ns = Some(match self.select_ns {
                        Some(before) => before.saturating_add(took) / 2,
                        None => took,
                    });
                    self.copied_ns = 0;
                    Ok(Some(part))
                }
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// Whether copying `len` bytes into a buffer of this client's own costs less than a
    /// select: the copy at the rate the block manager measured for copies on rings, against
    /// this client's own selects lately. A select is taken to measure them first, and again
    /// whenever the copies made instead add up to eight selects (a select measured while the
    /// block manager slept says little about one while it is busy); never a copy above the
    /// inline limit, which bounds what waits in spare buffers.
    fn copy_beats_select(&mut self, len: u64) -> Result<bool> {
        let p = self.domain.small_transfer_policy()?;
        let copy = copy_costs(len, &p, self.select_ns, self.copied_ns);
        if let Some(ns) = copy {
            self.copied_ns += ns;
        }
        Ok(copy.is_some())
    }

    /// Copies up to `buf.len()` bytes of the file from `offset` into `buf`; returns how many
    /// (0 at or past the end).
    pub fn read_into(&mut self, fh: Fh, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let ino = self.ino(fh)?;
        self.catch_up()?;
        if let Some(sh) = self.shadows.get(&ino) {
            self.stats.shadow_reads += 1;
            let from = (offset.min(sh.len() as u64)) as usize;
            let n = (sh.len() - from).min(buf.len());
            buf[..n].copy_from_slice(&sh[from..from + n]);
            return Ok(n);
        }
        if self.caching
            && let Some(snap) = self.cached(fh, ino)?
        {
            let e = Self::cut(snap, offset, buf.len() as u64);
            return self.copy_out(&e, buf);
        }
        let e = self.read_uncached(fh, offset, buf.len() as u64)?;
        self.copy_out(&e, buf)
    }

    /// The bytes of an extent, in place, piece by piece.
    pub fn slices<'a>(&'a self, e: &'a Extent) -> Result<Vec<&'a [u8]>> {
        if let Some(bytes) = &e.copied {
            return Ok(vec![Self::copied_range(bytes, e)?]);
        }
        let Some(snap) = &e.snap else {
            return Ok(Vec::new());
        };
        if let Some(bytes) = &snap.copied {
            return Ok(vec![Self::copied_range(bytes, e)?]);
        }
        let mut out = Vec::new();
        let end = e.offset + e.len;
        let mut i = snap.ends.partition_point(|&x| x <= e.offset);
        let mut at = e.offset;
        while at < end && i < snap.pieces.len() {
            let start_of_piece = if i == 0 { 0 } else { snap.ends[i - 1] };
            let piece = &snap.pieces[i];
            let bytes = self.domain.location_bytes(piece)?;
            let from = usize::try_from(at - start_of_piece)
                .map_err(|_| FsError::Io("an extent past the address space".into()))?;
            let to = usize::try_from(end.min(snap.ends[i]) - start_of_piece)
                .map_err(|_| FsError::Io("an extent past the address space".into()))?;
            out.push(bytes.get(from..to).ok_or_else(|| {
                FsError::Io(format!("piece {piece:?} is shorter than the snapshot says"))
            })?);
            at = snap.ends[i];
            i += 1;
        }
        Ok(out)
    }

    /// The bytes of an extent the client holds a copy of.
    fn copied_range<'a>(bytes: &'a [u8], e: &Extent) -> Result<&'a [u8]> {
        usize::try_from(e.offset)
            .ok()
            .zip(usize::try_from(e.offset + e.len).ok())
            .and_then(|(a, b)| bytes.get(a..b))
            .ok_or_else(|| FsError::Io("an extent past its bytes".into()))
    }

    /// Copies an extent into `out` (as much as fits); returns how many bytes.
    pub fn copy_out(&self, e: &Extent, out: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        for s in self.slices(e)? {
            let k = s.len().min(out.len() - n);
            out[n..n + k].copy_from_slice(&s[..k]);
            n += k;
            if n == out.len() {
                break;
            }
        }
        Ok(n)
    }

    /// The cached snapshot of `ino`, fetched first on a miss; `None` if the file is too big.
    fn cached(&mut self, fh: Fh, ino: u64) -> Result<Option<Arc<Snapshot>>> {
        self.tick += 1;
        if let Some(c) = self.cache.get_mut(&ino) {
            c.used = self.tick;
            self.stats.hits += 1;
            return Ok(Some(c.snap.clone()));
        }
        if let Some(reads) = self.written.get_mut(&ino) {
            if *reads < Self::READS_BEFORE_FETCH {
                *reads += 1;
                return Ok(None);
            }
            self.written.remove(&ino);
        }
        let max = self.max_cached_file;
        let (ino, version, len, ticket, data, attrs) =
            match self.call(&Request::Fetch { fh: fh.0, max })? {
                // Too big for the cache, or being written behind by another client: the service
                // answers each read.
                Reply::Fetched { too_big: true, .. } | Reply::Fetched { leased: true, .. } => {
                    return Ok(None);
                }
                Reply::Fetched {
                    ino,
                    version,
                    len,
                    ticket,
                    data,
                    stat: attrs,
                    ..
                } => (ino, version, len, ticket, data, attrs),
                r => return Err(unexpected(&r)),
            };
        let snap = match (ticket, data) {
            (Some(t), _) => self.take(t, len)?,
            (None, data) => {
                let got = data.as_ref().map_or(0, |d| d.len() as u64);
                if got != len {
                    return Err(FsError::Io(format!(
                        "the service sent {got} bytes for a {len}-byte file"
                    )));
                }
                Arc::new(Snapshot {
                    agg: None,
                    copied: data,
                    len,
                    pieces: Vec::new(),
                    ends: Vec::new(),
                    released: self.released.clone(),
                })
            }
        };
        self.stats.misses += 1;
        self.stats.fetched_bytes += len;
        if self.cache.len() >= Self::MAX_CACHED_FILES
            && let Some((&old, _)) = self.cache.iter().min_by_key(|(_, c)| c.used)
        {
            self.stats.evictions += 1;
            self.drop_cached(old);
        }
        if self.notified(ino).is_none() && self.notified_files() >= Self::MAX_NOTIFIED_FILES {
            self.paths_clear();
        }
        self.forget.retain(|&i| i != ino);
        self.cache.insert(
            ino,
            Cached {
                snap: snap.clone(),
                stat: attrs,
                version,
                used: self.tick,
            },
        );
        Ok(Some(snap))
    }

    /// Takes the service's transfer `ticket` and maps it.
    fn take(&mut self, ticket: u64, len: u64) -> Result<Arc<Snapshot>> {
        let got = self
            .domain
            .attach_recv(self.server, Ticket(ticket), Some(TICKET_WAIT))?;
        let pieces: Vec<Location> = match self.domain.read_pieces(got.agg, 0) {
            Ok(p) => p.into_iter().map(|p| p.0).collect(),
            Err(e) => {
                self.domain.decref(got.agg)?;
                return Err(e.into());
            }
        };
        let mut ends = Vec::with_capacity(pieces.len());
        let mut at = 0;
        for p in &pieces {
            at += p.len;
            ends.push(at);
        }
        if at != len {
            self.domain.decref(got.agg)?;
            return Err(FsError::Io(format!(
                "the service sent {at} bytes for a {len}-byte snapshot"
            )));
        }
        Ok(Arc::new(Snapshot {
            agg: Some(got.agg),
            copied: None,
            len,
            pieces,
            ends,
            released: self.released.clone(),
        }))
    }

    fn cut(snap: Arc<Snapshot>, offset: u64, len: u64) -> Extent {
        let offset = offset.min(snap.len);
        let len = len.min(snap.len - offset);
        Extent {
            snap: Some(snap),
            copied: None,
            offset,
            len,
        }
    }

    // ---- writing ----

    /// Writes the aggregate `data` (of the client's domain, consumed: it goes to the service
    /// by strong move) at `offset`; returns the bytes written.
    pub fn write(&mut self, fh: Fh, offset: u64, data: Agg) -> Result<u64> {
        let ino = self.ino(fh)?;
        // Small aggregates are copied into the request: cheaper than a transfer.
        let pieces = match self.domain.read_pieces(data, 0) {
            Ok(p) => p,
            Err(e) => {
                self.domain.decref(data)?;
                return Err(e.into());
            }
        };
        let len: u64 = pieces.iter().map(|p| p.0.len).sum();
        if len <= INLINE_MAX as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            for p in &pieces {
                bytes.extend_from_slice(self.domain.bytes(p)?);
            }
            self.domain.decref(data)?;
            return Ok(self.write_from(fh, offset, &bytes)? as u64);
        }
        self.wrote(ino);
        // Large writes are not copied into the shadow: it goes.
        self.shadows.remove(&ino);
        let ticket =
            self.domain
                .attach_transfer(data, self.server, Mode::Move, TransferFlags::strong())?;
        match self.call(&Request::WriteAgg {
            fh: fh.0,
            offset,
            ticket: ticket.0,
        })? {
            Reply::Written { n, stat } => {
                self.attrs_now(ino, stat);
                Ok(n)
            }
            r => Err(unexpected(&r)),
        }
    }

    /// Writes bytes `from..from + len` of the aggregate `data` (which stays the caller's) at
    /// `offset`; returns the bytes written. A producer that keeps its data in a long-lived
    /// aggregate writes ranges of it this way without making an aggregate per write: small
    /// ranges are copied into the request, larger ones go to the service as a strong copy.
    pub fn write_range(
        &mut self,
        fh: Fh,
        offset: u64,
        data: Agg,
        from: u64,
        len: u64,
    ) -> Result<u64> {
        let ino = self.ino(fh)?;
        if len > INLINE_MAX as u64 && self.may_log_large(fh, ino, offset, len)? {
            let bytes = self.domain.read(data, from, len)?;
            return Ok(self.write_from(fh, offset, &bytes)? as u64);
        }
        if len <= INLINE_MAX as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            for p in self.domain.read_pieces(data, from)? {
                let b = self.domain.bytes(&p)?;
                let k = b.len().min(len as usize - bytes.len());
                bytes.extend_from_slice(&b[..k]);
                if bytes.len() as u64 == len {
                    break;
                }
            }
            if (bytes.len() as u64) < len {
                return Err(FsError::Invalid(format!(
                    "bytes {from}..{} are past the aggregate's end",
                    from + len
                )));
            }
            return Ok(self.write_from(fh, offset, &bytes)? as u64);
        }
        self.wrote(ino);
        self.shadows.remove(&ino);
        let part = self.domain.select(data, from, len)?;
        let ticket =
            self.domain
                .attach_transfer(part, self.server, Mode::Copy, TransferFlags::strong());
        self.domain.decref(part)?;
        match self.call(&Request::WriteAgg {
            fh: fh.0,
            offset,
            ticket: ticket?.0,
        })? {
            Reply::Written { n, stat } => {
                self.attrs_now(ino, stat);
                Ok(n)
            }
            r => Err(unexpected(&r)),
        }
    }

    /// Writes `buf` at `offset` (copied once: inline for small writes, into an aggregate for
    /// larger ones); returns the bytes written.
    pub fn write_from(&mut self, fh: Fh, offset: u64, buf: &[u8]) -> Result<usize> {
        let ino = self.ino(fh)?;
        let large = buf.len() > INLINE_MAX;
        if large && !self.may_log_large(fh, ino, offset, buf.len() as u64)? {
            return self.write_by_transfer(fh, offset, buf);
        }
        let leased = self.write_behind && self.lease(fh, ino)?;
        self.wrote(ino);
        if leased {
            // No look at the socket here: notices matter to reads, and a failed write-behind
            // is reported by the next call that asks the service anything.
            if self.gone {
                return Err(FsError::Unavailable("the service went away".into()));
            }
            if let Some(sh) = self.shadows.get_mut(&ino) {
                let end = offset.saturating_add(buf.len() as u64);
                if end <= Self::SHADOW_MAX {
                    // Extents handed out keep the bytes they were cut from.
                    let sh = Arc::make_mut(sh);
                    if (sh.len() as u64) < end {
                        sh.resize(end as usize, 0);
                    }
                    sh[offset as usize..end as usize].copy_from_slice(buf);
                } else {
                    self.shadows.remove(&ino);
                }
            }
            let made_ns = crate::core::now_ns();
            let patience = Self::LOG_PATIENCE;
            let logged = match self
                .log
                .as_mut()
                .map(|l| l.append_within(fh.0, offset, made_ns, buf, patience))
            {
                None => {
                    self.send(&Request::WriteBehind {
                        fh: fh.0,
                        offset,
                        made_ns,
                        data: buf.to_vec(),
                    })?;
                    true
                }
                Some(Ok(logged)) => {
                    if logged {
                        self.stats.writes_logged += 1;
                    } else {
                        self.stats.log_full += 1;
                    }
                    logged
                }
                Some(Err(e)) => return Err(self.lost(format!("the write log broke: {e}"))),
            };
            if logged {
                self.stats.writes_behind += 1;
                if self.log.as_mut().is_some_and(LogWriter::must_wake) {
                    self.send(&Request::Wake)?;
                }
                // The attributes the service will have once it applies the write.
                let end = offset.checked_add(buf.len() as u64);
                match (self.lease_attrs.get_mut(&ino), end) {
                    (Some(s), Some(end)) if end <= crate::data::MAX_FILE => {
                        s.size = s.size.max(end);
                        s.mtime_ns = made_ns;
                    }
                    // A write the service will refuse: ask it afterwards.
                    _ => {
                        self.lease_attrs.remove(&ino);
                    }
                }
                return Ok(buf.len());
            }
            // The log is full: this write waits for its answer, which comes once the service
            // has taken everything logged before it (the shadow has it already).
            if large {
                return self.write_by_transfer(fh, offset, buf);
            }
            return self.write_waiting(fh, ino, offset, buf);
        }
        self.shadows.remove(&ino);
        self.write_waiting(fh, ino, offset, buf)
    }

    /// Writes `buf` (at most [`INLINE_MAX`] bytes) inside a request and waits for the answer.
    fn write_waiting(&mut self, fh: Fh, ino: u64, offset: u64, buf: &[u8]) -> Result<usize> {
        match self.call(&Request::Write {
            fh: fh.0,
            offset,
            data: buf.to_vec(),
        })? {
            Reply::Written { n, stat } => {
                self.attrs_now(ino, stat);
                Ok(n as usize)
            }
            r => Err(unexpected(&r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_is_copied_only_where_that_costs_less_than_a_select_measured_lately() {
        let policy = cosh::SmallTransfers {
            inline_max: 512 << 10,
            ring_ns_per_kib: 40,
            ..cosh::SmallTransfers::default()
        };
        // No select measured yet: select, to measure one.
        assert_eq!(copy_costs(4096, &policy, None, 0), None);
        // Selects at 5 us: 64 KiB copies in 2.6 us, 256 KiB would take 10.2 us.
        assert_eq!(copy_costs(64 << 10, &policy, Some(5_000), 0), Some(2_560));
        assert_eq!(copy_costs(256 << 10, &policy, Some(5_000), 0), None);
        // Selects at 20 us (the block manager asleep): 256 KiB is copied; 1 MiB never, even
        // against selects at 100 us that cost more than its 41 us copy: it is above the
        // inline limit.
        assert_eq!(
            copy_costs(256 << 10, &policy, Some(20_000), 0),
            Some(10_240)
        );
        assert_eq!(copy_costs(1 << 20, &policy, Some(100_000), 0), None);
        // Copies worth eight selects since the last: select once, to measure again.
        assert_eq!(
            copy_costs(64 << 10, &policy, Some(5_000), 37_000),
            Some(2_560)
        );
        assert_eq!(
            copy_costs(64 << 10, &policy, Some(5_000), 37_000 + 2_560),
            None
        );
    }
}
