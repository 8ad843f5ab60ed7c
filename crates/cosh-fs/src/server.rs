//! The CoshFS service: one domain, one thread, a `SOCK_SEQPACKET` socket for requests.
//!
//! Clients connect, name their domain and prove it (a one-byte copy to the service's domain
//! whose ticket only that domain can hold), then send [`Request`]s one at a time. The service
//! keeps the files in an [`Fs`] and remembers which clients cache which files: before it
//! answers a request that changed a file's content it sends every other client caching it an
//! [`ToClient::Invalidate`]. Sends never wait: a client that does not read its socket (so a
//! notice cannot be queued) is cut off rather than left with a stale cache, and a client that
//! breaks the protocol is cut off too. A client that goes away has its handles closed and its
//! leases ended.
//!
//! A client may hold a file's write lease and send small writes behind ([`Request::Lease`],
//! [`Request::WriteBehind`]); nobody else caches a leased file, and before answering any
//! request the service applies what every other lease holder has queued (see
//! [`crate::proto`]): in its socket, and in its write log ([`crate::log`]) if it handed one
//! over. Write logs are also emptied whenever the service has nothing else to do.
//!
//! Every client that can connect has every right over every file: the socket's directory
//! decides who can (the runtime directory is its user's alone, mode 0700).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cosh::{Domain, DomainId, Mode, Options, Ticket, TransferFlags};
use cosh_sys::socket::{SeqPacket, SeqPacketListener};
use rustix::event::{PollFd, PollFlags};

use crate::core::{Fs, FsError, Result};
use crate::log::LogReader;
use crate::proto::{self, INLINE_MAX, MAX_MESSAGE, Reply, Request, ToClient};

/// How long the service waits for a transfer a client announced by ticket: not at all. A
/// client sends the request only once its strong transfer or copy was answered, which is when
/// the service's block manager holds it, so a ticket that is not there is a made-up one — and
/// waiting for it would let one client stall every other.
const TICKET_WAIT: Duration = Duration::ZERO;

/// The most bytes one `Share` hands out (a larger read is answered short, as read(2) may be)
/// and the largest file a `Fetch` sends whole: a request must not keep the service from the
/// others for long.
const MAX_HANDOUT: u64 = 256 << 20;

/// No client: `changed(ino, NOBODY)` tells every client caching the file.
const NOBODY: u64 = 0;

/// Entries per `List` page (names are at most 255 bytes: a page fits a message).
const LIST_PAGE: usize = 128;

/// Where and as whom the service runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The socket clients connect to.
    pub socket: PathBuf,
    /// The block manager's socket (the service's domain lives in its pool).
    pub block_manager: PathBuf,
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding the socket failed (another service owns it, or the directory is unusable).
    #[error("cannot listen at {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: cosh_sys::Error,
    },
    /// The service's domain could not connect to its block manager.
    #[error("cannot connect to the block manager: {0}")]
    Connect(cosh::Error),
    /// Polling failed.
    #[error("poll: {0}")]
    Poll(std::io::Error),
}

struct Conn {
    sock: SeqPacket,
    /// The domain the client named in `Hello`.
    claimed: Option<DomainId>,
    /// Set once the claim is proved.
    domain: Option<DomainId>,
    /// The service's handles this client opened.
    handles: HashSet<u64>,
    /// Files this client caches.
    cached: HashSet<u64>,
    /// Files whose write lease this client holds.
    leased: HashSet<u64>,
    /// A request read early (while settling write-behinds), to answer in its turn.
    pending: VecDeque<Request>,
    /// The client's write log, once it handed one over.
    log: Option<LogReader>,
    /// The memfd attached to the `Log` request being handled.
    log_fd: Option<OwnedFd>,
}

/// The service (see the module documentation).
pub struct Server {
    listener: SeqPacketListener,
    fs: Fs,
    me: DomainId,
    clients: HashMap<u64, Conn>,
    next_token: u64,
    /// Which clients cache each file.
    cachers: HashMap<u64, BTreeSet<u64>>,
    /// Each file's content version (absent: 0).
    versions: HashMap<u64, u64>,
    /// Which client holds each leased file's write lease.
    leases: HashMap<u64, u64>,
    /// Clients that cached a lookup since they were last told of a namespace change.
    ns_watchers: BTreeSet<u64>,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
}

impl Server {
    /// Connects the service's domain and binds its socket (as the path's only owner).
    pub fn bind(config: &ServerConfig) -> Result<Server, ServeError> {
        let domain = Domain::connect_with(
            &Options::new("coshfs")
                .socket(&config.block_manager)
                .no_spawn(),
        )
        .map_err(ServeError::Connect)?;
        Server::with_domain(domain, &config.socket)
    }

    /// A service on a domain already connected.
    pub fn with_domain(domain: Domain, socket: &Path) -> Result<Server, ServeError> {
        let listener =
            SeqPacketListener::bind_exclusive(socket).map_err(|source| ServeError::Bind {
                path: socket.to_path_buf(),
                source,
            })?;
        let me = domain.id();
        Ok(Server {
            listener,
            fs: Fs::new(domain),
            me,
            clients: HashMap::new(),
            next_token: 1,
            cachers: HashMap::new(),
            versions: HashMap::new(),
            leases: HashMap::new(),
            ns_watchers: BTreeSet::new(),
            inbuf: vec![0; MAX_MESSAGE],
            outbuf: Vec::with_capacity(MAX_MESSAGE),
        })
    }

    /// The socket clients connect to.
    pub fn path(&self) -> &Path {
        self.listener.path()
    }

    /// The file system the service serves (to fill it before clients come, or to inspect).
    pub fn fs(&mut self) -> &mut Fs {
        &mut self.fs
    }

    /// Serves until polling fails. After a request the service keeps looking for the next
    /// one for [`Server::SPIN`] before it sleeps: a wake-up from sleep costs more than most
    /// requests take.
    pub fn run(mut self) -> Result<(), ServeError> {
        let mut last = std::time::Instant::now();
        loop {
            let idle = last.elapsed();
            let timeout = if idle < Server::SPIN {
                Some(Duration::ZERO)
            } else if self.asleep(true) > 0 {
                // A client wrote while the service was about to sleep.
                self.asleep(false);
                last = std::time::Instant::now();
                continue;
            } else if self.fs.memory().spare_buffers() > 0 {
                Some(Server::KEEP_SPARE)
            } else {
                None
            };
            let any = self.turn(timeout)?;
            if timeout != Some(Duration::ZERO) {
                self.asleep(false);
            }
            if any {
                last = std::time::Instant::now();
            } else if last.elapsed() >= Server::KEEP_SPARE {
                // Quiet for a while: the spare chunk buffers go back to the pool.
                let _ = self.fs.memory().release_spare();
            }
        }
    }

    /// How long [`Server::run`] keeps looking for requests after one before it sleeps.
    pub const SPIN: Duration = Duration::from_micros(200);

    /// How long the service keeps spare chunk buffers (see [`crate::data`]) while nothing
    /// happens.
    pub const KEEP_SPARE: Duration = Duration::from_secs(1);

    /// Handles what is ready, waiting up to `timeout` (`None`: until something is); says
    /// whether anything was.
    pub fn turn(&mut self, timeout: Option<Duration>) -> Result<bool, ServeError> {
        let tokens: Vec<u64> = self.clients.keys().copied().collect();
        let waiting: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.pending.is_empty())
            .map(|(t, _)| *t)
            .collect();
        let timeout = if waiting.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let (accept, mut ready) = {
            let mut fds = Vec::with_capacity(tokens.len() + 1);
            fds.push(PollFd::new(&self.listener, PollFlags::IN));
            for t in &tokens {
                if let Some(c) = self.clients.get(t) {
                    fds.push(PollFd::new(&c.sock, PollFlags::IN));
                }
            }
            let timeout = timeout.map(|d| rustix::event::Timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(d.subsec_nanos()),
            });
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(ServeError::Poll(e.into())),
            }
            let fired = |f: &PollFd<'_>| !f.revents().is_empty();
            let ready: Vec<u64> = fds[1..]
                .iter()
                .zip(&tokens)
                .filter(|(f, _)| fired(f))
                .map(|(_, t)| *t)
                .collect();
            (fired(&fds[0]), ready)
        };
        for t in waiting {
            if !ready.contains(&t) {
                ready.push(t);
            }
        }
        // Nothing to answer: a good time to apply the write logs. A client writing into its
        // log is busy with the service: it keeps the service looking as a request would.
        let any = accept || !ready.is_empty() || self.drain_all() > 0;
        if accept {
            self.accept();
        }
        for t in ready {
            self.serve(t);
        }
        Ok(any)
    }

    fn accept(&mut self) {
        let Ok(sock) = self.listener.accept() else {
            return;
        };
        if sock.set_nonblocking(true).is_err() {
            return;
        }
        let t = self.next_token;
        self.next_token += 1;
        self.clients.insert(
            t,
            Conn {
                sock,
                claimed: None,
                domain: None,
                handles: HashSet::new(),
                cached: HashSet::new(),
                leased: HashSet::new(),
                pending: VecDeque::new(),
                log: None,
                log_fd: None,
            },
        );
    }

    /// Reads and answers every request waiting on client `t`.
    fn serve(&mut self, t: u64) {
        loop {
            // What the client logged came before anything it sends now.
            self.drain(t);
            let queued = self.clients.get_mut(&t).and_then(|c| c.pending.pop_front());
            let request = match queued {
                Some(r) => r,
                None => match self.next_message(t) {
                    Some(Ok(r)) => r,
                    Some(Err(())) => return self.drop_client(t),
                    None => return,
                },
            };
            if !request.answered() {
                self.apply_quiet(t, request);
                continue;
            }
            // Everything lease holders wrote behind before this request came is applied
            // before it is answered.
            self.settle(t);
            if !self.clients.contains_key(&t) {
                return;
            }
            let reply = match self.handle(t, request) {
                Ok(r) => r,
                Err(e) => Reply::Failed {
                    errno: e.errno(),
                    detail: e.detail(),
                },
            };
            if let Some(c) = self.clients.get_mut(&t) {
                // Memory sent with a request that did not take it is not kept.
                c.log_fd = None;
            }
            if !self.send(t, &ToClient::Reply(reply)) {
                return self.drop_client(t);
            }
        }
    }

    /// The next message from client `t`: `None` if none is waiting, `Err` if the client
    /// closed, failed or broke the protocol.
    fn next_message(&mut self, t: u64) -> Option<Result<Request, ()>> {
        let c = self.clients.get_mut(&t)?;
        match c.sock.recv(&mut self.inbuf) {
            Ok(Some(mut m)) => {
                let request = proto::decode::<Request>(&self.inbuf[..m.len]).map_err(|_| ());
                match (&request, m.fds.len()) {
                    (_, 0) => {}
                    // Only a log comes with memory, and only one memfd.
                    (Ok(Request::Log { .. }), 1) => c.log_fd = m.fds.pop(),
                    _ => return Some(Err(())),
                }
                Some(request)
            }
            Err(e) if e.would_block() => None,
            _ => Some(Err(())),
        }
    }

    /// Applies a message that has no answer.
    fn apply_quiet(&mut self, t: u64, request: Request) {
        match request {
            Request::Uncache { inos } => self.uncache(t, &inos),
            Request::WriteBehind {
                fh,
                offset,
                made_ns,
                data,
            } => {
                let done = self.write_behind(t, fh, offset, made_ns, &data);
                self.deferred(t, done);
            }
            _ => {}
        }
    }

    /// Tells client `t` of a write-behind that failed (cutting it off if it cannot be told).
    fn deferred(&mut self, t: u64, done: Result<()>) {
        if let Err(e) = done {
            let told = self.send(
                t,
                &ToClient::Deferred {
                    errno: e.errno(),
                    detail: e.detail(),
                },
            );
            if !told {
                self.drop_client(t);
            }
        }
    }

    /// Applies everything in client `t`'s write log (a corrupt log cuts the client off);
    /// says how many writes it found.
    fn drain(&mut self, t: u64) -> usize {
        let Some(mut log) = self.clients.get_mut(&t).and_then(|c| c.log.take()) else {
            return 0;
        };
        let mut found = 0;
        loop {
            match log.take() {
                Ok(Some(e)) => {
                    found += 1;
                    let done = self.write_behind(t, e.fh, e.offset, e.made_ns, e.data);
                    self.deferred(t, done);
                }
                Ok(None) => break,
                Err(_) => {
                    self.drop_client(t);
                    return found;
                }
            }
        }
        if let Some(c) = self.clients.get_mut(&t) {
            c.log = Some(log);
        }
        found
    }

    /// Tells every write log the service is about to sleep (`true`: then takes what they
    /// hold once more, and says how many writes it found) or is awake (`false`).
    fn asleep(&mut self, asleep: bool) -> usize {
        for c in self.clients.values_mut() {
            if let Some(log) = c.log.as_mut() {
                log.set_asleep(asleep);
            }
        }
        if asleep { self.drain_all() } else { 0 }
    }

    /// Applies every client's write log; says how many writes it found.
    fn drain_all(&mut self) -> usize {
        let logged: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.log.is_some())
            .map(|(t, _)| *t)
            .collect();
        logged.into_iter().map(|t| self.drain(t)).sum()
    }

    fn write_behind(
        &mut self,
        t: u64,
        fh: u64,
        offset: u64,
        made_ns: i64,
        data: &[u8],
    ) -> Result<()> {
        let fh = self.own(t, fh)?;
        let ino = self.fs.handle_ino(fh)?;
        if self.leases.get(&ino) != Some(&t) {
            return Err(FsError::Invalid(format!(
                "a write-behind to handle {fh} without its file's lease"
            )));
        }
        if data.len() > INLINE_MAX {
            return Err(FsError::Invalid(format!(
                "an inline write of {} bytes (at most {INLINE_MAX})",
                data.len()
            )));
        }
        self.fs.write_bytes_made_at(fh, offset, data, made_ns)?;
        self.changed(ino, t);
        Ok(())
    }

    /// Applies what lease holders (other than `except`) have written behind so far: reads
    /// their sockets twice over, so that anything queued before the request being answered is
    /// in. A request met on the way waits in its client's queue.
    fn settle(&mut self, except: u64) {
        self.drain_all();
        for _ in 0..2 {
            let holders: Vec<u64> = self
                .clients
                .iter()
                .filter(|(k, c)| {
                    // A client with a write log writes nothing behind through its socket.
                    **k != except && !c.leased.is_empty() && c.pending.is_empty() && c.log.is_none()
                })
                .map(|(k, _)| *k)
                .collect();
            for h in holders {
                loop {
                    if self.clients.get(&h).is_none_or(|c| !c.pending.is_empty()) {
                        break;
                    }
                    match self.next_message(h) {
                        None => break,
                        Some(Err(())) => {
                            self.drop_client(h);
                            break;
                        }
                        Some(Ok(r)) if !r.answered() => self.apply_quiet(h, r),
                        Some(Ok(r)) => {
                            if let Some(c) = self.clients.get_mut(&h) {
                                c.pending.push_back(r);
                            }
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Sends without waiting; `false` if the client cannot take it.
    fn send(&mut self, t: u64, message: &ToClient) -> bool {
        let Some(c) = self.clients.get(&t) else {
            return false;
        };
        if proto::encode(message, &mut self.outbuf).is_err() {
            return false;
        }
        let sent = c.sock.send(&self.outbuf, &[]).is_ok();
        if sent
            && !matches!(message, ToClient::Reply(_))
            && let Some(log) = self.clients.get_mut(&t).and_then(|c| c.log.as_mut())
        {
            log.noticed();
        }
        sent
    }

    fn drop_client(&mut self, t: u64) {
        let Some(c) = self.clients.remove(&t) else {
            return;
        };
        for ino in &c.cached {
            if let Some(set) = self.cachers.get_mut(ino) {
                set.remove(&t);
            }
        }
        for ino in &c.leased {
            if self.leases.get(ino) == Some(&t) {
                self.leases.remove(ino);
            }
        }
        self.ns_watchers.remove(&t);
        for h in c.handles {
            let _ = self.fs.close(h);
        }
    }

    fn uncache(&mut self, t: u64, inos: &[u64]) {
        for ino in inos {
            if let Some(set) = self.cachers.get_mut(ino) {
                set.remove(&t);
            }
            if let Some(c) = self.clients.get_mut(&t) {
                c.cached.remove(ino);
            }
        }
    }

    /// `ino`'s content changed by client `by`: a new version, and every other client that
    /// caches it told before `by` is answered (one that cannot be told is cut off).
    fn changed(&mut self, ino: u64, by: u64) {
        let v = self.versions.entry(ino).or_insert(0);
        *v += 1;
        let version = *v;
        let mut set = self.cachers.remove(&ino).unwrap_or_default();
        // The changer knows of its own change, and stays told of others' (its lookups of
        // the file stay right as it corrects them itself).
        if set.remove(&by) {
            self.cachers.entry(ino).or_default().insert(by);
        }
        // The lease holder hears of others' changes too (it may keep the file's bytes).
        if let Some(&h) = self.leases.get(&ino)
            && h != by
        {
            set.insert(h);
        }
        for c in set {
            if let Some(conn) = self.clients.get_mut(&c) {
                conn.cached.remove(&ino);
            }
            if !self.send(c, &ToClient::Invalidate { ino, version }) {
                self.drop_client(c);
            }
        }
    }

    /// A name was made, removed or moved by client `by`: every other client with cached
    /// lookups is told before `by` is answered (`by` keeps its own cache right itself).
    fn namespace_changed(&mut self, by: u64) {
        let watchers = std::mem::take(&mut self.ns_watchers);
        for w in watchers {
            if w == by {
                self.ns_watchers.insert(w);
            } else if !self.send(w, &ToClient::Namespace) {
                self.drop_client(w);
            }
        }
    }

    /// Client `t` is told `stat` and may cache it as a lookup of its path (not while another
    /// client holds the file's lease: its size moves without the service being asked): from
    /// now on it is told of any change to the file, as a cache of it is, and of any name
    /// made, removed or moved. Says whether it may.
    fn looked_up(&mut self, t: u64, stat: crate::core::Stat) -> bool {
        if self.leases.get(&stat.ino).is_some_and(|&h| h != t) {
            return false;
        }
        self.cachers.entry(stat.ino).or_default().insert(t);
        if let Some(c) = self.clients.get_mut(&t) {
            c.cached.insert(stat.ino);
        }
        self.ns_watchers.insert(t);
        true
    }

    /// The attributes of the directory holding `path`, cacheable by client `t` as its
    /// lookup.
    fn parent_looked_up(&mut self, t: u64, path: &str) -> Option<crate::core::Stat> {
        let stat = self.fs.stat(proto::parent_of(path)?).ok()?;
        self.looked_up(t, stat).then_some(stat)
    }

    /// The answer to a change of a name within a directory: its attributes now.
    fn changed_in(&mut self, t: u64, path: &str) -> Result<Reply> {
        match self.parent_looked_up(t, path) {
            Some(parent) => Ok(Reply::Changed { parent }),
            None => Ok(Reply::Done),
        }
    }

    /// The client's domain, once proved.
    fn domain_of(&self, t: u64) -> Result<DomainId> {
        self.clients
            .get(&t)
            .and_then(|c| c.domain)
            .ok_or_else(|| FsError::Invalid("say Hello and Prove first".into()))
    }

    /// A handle the client owns.
    fn own(&self, t: u64, fh: u64) -> Result<u64> {
        if self
            .clients
            .get(&t)
            .is_some_and(|c| c.handles.contains(&fh))
        {
            Ok(fh)
        } else {
            Err(FsError::BadHandle(fh))
        }
    }

    fn handle(&mut self, t: u64, request: Request) -> Result<Reply> {
        match request {
            Request::Hello { version, domain } => {
                if version != proto::VERSION {
                    return Err(FsError::Invalid(format!(
                        "protocol version {version}; this service speaks {}",
                        proto::VERSION
                    )));
                }
                if let Some(c) = self.clients.get_mut(&t) {
                    c.claimed = Some(DomainId::from_bits(domain));
                }
                Ok(Reply::Welcome {
                    server: self.me.to_bits(),
                })
            }
            Request::Prove { ticket } => {
                let claimed = self
                    .clients
                    .get(&t)
                    .and_then(|c| c.claimed)
                    .ok_or_else(|| FsError::Invalid("say Hello first".into()))?;
                let d = self.fs.domain();
                let got = d
                    .attach_recv(claimed, Ticket(ticket), Some(TICKET_WAIT))
                    .map_err(|e| FsError::Invalid(format!("the proof did not arrive: {e}")))?;
                d.decref(got.agg)?;
                if let Some(c) = self.clients.get_mut(&t) {
                    c.domain = Some(claimed);
                }
                Ok(Reply::Done)
            }
            other => {
                let domain = self.domain_of(t)?;
                self.handle_proved(t, domain, other)
            }
        }
    }

    fn handle_proved(&mut self, t: u64, domain: DomainId, request: Request) -> Result<Reply> {
        match request {
            Request::Hello { .. } | Request::Prove { .. } => {
                Err(FsError::Invalid("Hello and Prove come once, first".into()))
            }
            Request::Uncache { .. } | Request::WriteBehind { .. } | Request::Wake => Err(
                FsError::Invalid("a message without an answer was handled as a request".into()),
            ),
            Request::Log { words } => {
                let c = self
                    .clients
                    .get_mut(&t)
                    .ok_or_else(|| FsError::Invalid("no such client".into()))?;
                let fd = c
                    .log_fd
                    .take()
                    .ok_or_else(|| FsError::Invalid("a log without its memory".into()))?;
                if c.log.is_some() {
                    return Err(FsError::Invalid("a client has one write log".into()));
                }
                let log = LogReader::attach(fd, words)
                    .map_err(|e| FsError::Invalid(format!("unusable write log: {e}")))?;
                c.log = Some(log);
                Ok(Reply::Done)
            }
            Request::Lease { fh } => {
                let fh = self.own(t, fh)?;
                let ino = self.fs.handle_ino(fh)?;
                let stat = self.fs.fstat(fh)?;
                if self.leases.get(&ino).is_some_and(|&h| h != t) {
                    return Ok(Reply::Leased {
                        granted: false,
                        stat,
                    });
                }
                self.leases.insert(ino, t);
                if let Some(c) = self.clients.get_mut(&t) {
                    c.leased.insert(ino);
                }
                // Nobody else may cache it while the lease lasts.
                self.changed(ino, t);
                Ok(Reply::Leased {
                    granted: true,
                    stat,
                })
            }
            Request::Open { path, flags, mode } => {
                if flags & !proto::open::ALL != 0 {
                    return Err(FsError::Invalid(format!("unknown open flags {flags:#x}")));
                }
                let create = flags & proto::open::CREATE != 0;
                match self.fs.stat(&path) {
                    Ok(_) if create && flags & proto::open::EXCL != 0 => {
                        return Err(FsError::Exists(path));
                    }
                    Ok(s) if s.dir => return Err(FsError::IsADirectory(path)),
                    Ok(_) => {}
                    Err(FsError::NotFound(_)) if create => {
                        self.fs.create_with_mode(&path, mode)?;
                        self.namespace_changed(t);
                    }
                    Err(e) => return Err(e),
                }
                let fh = self.fs.open(&path)?;
                if let Some(c) = self.clients.get_mut(&t) {
                    c.handles.insert(fh);
                }
                if flags & proto::open::TRUNC != 0 && self.fs.fstat(fh)?.size > 0 {
                    self.fs.ftruncate(fh, 0)?;
                    let ino = self.fs.handle_ino(fh)?;
                    self.changed(ino, t);
                }
                let stat = self.fs.fstat(fh)?;
                Ok(Reply::Opened {
                    fh,
                    stat,
                    cacheable: self.looked_up(t, stat),
                    parent: self.parent_looked_up(t, &path),
                })
            }
            Request::Close { fh } => {
                self.own(t, fh)?;
                let ino = self.fs.handle_ino(fh)?;
                if let Some(c) = self.clients.get_mut(&t) {
                    c.handles.remove(&fh);
                }
                self.fs.close(fh)?;
                // The lease ends with the client's last handle of the file.
                let still_open = self.clients.get(&t).is_some_and(|c| {
                    c.handles
                        .iter()
                        .any(|h| self.fs.handle_ino(*h).ok() == Some(ino))
                });
                if !still_open && self.leases.get(&ino) == Some(&t) {
                    self.leases.remove(&ino);
                    if let Some(c) = self.clients.get_mut(&t) {
                        c.leased.remove(&ino);
                    }
                }
                Ok(Reply::Done)
            }
            Request::Stat { path } => Ok(Reply::Attr(self.fs.stat(&path)?)),
            Request::Fstat { fh } => Ok(Reply::Attr(self.fs.fstat(self.own(t, fh)?)?)),
            Request::Mkdir { path, mode } => {
                self.fs.mkdir_with_mode(&path, mode)?;
                self.namespace_changed(t);
                self.changed_in(t, &path)
            }
            Request::Rmdir { path } => {
                self.fs.rmdir(&path)?;
                self.namespace_changed(t);
                self.changed_in(t, &path)
            }
            Request::Lookup { path } => match self.fs.stat(&path) {
                Ok(s) => Ok(Reply::Looked {
                    stat: Some(s),
                    cacheable: self.looked_up(t, s),
                }),
                Err(FsError::NotFound(_)) => {
                    self.ns_watchers.insert(t);
                    Ok(Reply::Looked {
                        stat: None,
                        cacheable: true,
                    })
                }
                Err(e) => Err(e),
            },
            // Attribute changes are notified as content changes are (the file's link count,
            // mode or time is cached with it) — to the client that made them too: it knows
            // the path, not which file of its cache that is.
            Request::Unlink { path } => {
                let ino = self.fs.stat(&path)?.ino;
                self.fs.unlink(&path)?;
                self.changed(ino, NOBODY);
                self.namespace_changed(t);
                self.changed_in(t, &path)
            }
            Request::Rename { from, to } => {
                let replaced = self.fs.stat(&to).ok().map(|s| s.ino);
                self.fs.rename(&from, &to)?;
                if let Some(ino) = replaced {
                    self.changed(ino, NOBODY);
                }
                self.namespace_changed(t);
                Ok(Reply::Done)
            }
            Request::Chmod { path, mode } => {
                self.fs.chmod(&path, mode)?;
                let stat = self.fs.stat(&path)?;
                self.changed(stat.ino, NOBODY);
                Ok(Reply::Looked {
                    stat: Some(stat),
                    cacheable: self.looked_up(t, stat),
                })
            }
            Request::SetMtime { path, mtime_ns } => {
                self.fs.set_mtime(&path, mtime_ns)?;
                let stat = self.fs.stat(&path)?;
                self.changed(stat.ino, NOBODY);
                Ok(Reply::Looked {
                    stat: Some(stat),
                    cacheable: self.looked_up(t, stat),
                })
            }
            Request::List { path, after } => {
                let all = self.fs.list(&path)?;
                let start = match &after {
                    Some(a) => all.partition_point(|e| e.name.as_str() <= a.as_str()),
                    None => 0,
                };
                let end = (start + LIST_PAGE).min(all.len());
                let entries = all[start..end].to_vec();
                Ok(Reply::Entries {
                    entries,
                    more: end < all.len(),
                })
            }
            Request::Truncate { path, len } => {
                let ino = self.fs.truncate(&path, len)?;
                self.changed(ino, t);
                Ok(Reply::Attr(self.fs.stat(&path)?))
            }
            Request::Ftruncate { fh, len } => {
                let fh = self.own(t, fh)?;
                self.fs.ftruncate(fh, len)?;
                let ino = self.fs.handle_ino(fh)?;
                self.changed(ino, t);
                Ok(Reply::Attr(self.fs.fstat(fh)?))
            }
            Request::Read { fh, offset, len } => {
                let fh = self.own(t, fh)?;
                let data = self.fs.read_bytes(fh, offset, len.min(INLINE_MAX as u64))?;
                Ok(Reply::Bytes { data })
            }
            Request::Share { fh, offset, len } => {
                let fh = self.own(t, fh)?;
                match self.fs.read(fh, offset, len.min(MAX_HANDOUT))? {
                    Some(agg) => {
                        let d = self.fs.domain();
                        let n = d.len(agg)?;
                        let sent =
                            d.attach_transfer(agg, domain, Mode::Share, TransferFlags::weak());
                        d.decref(agg)?;
                        Ok(Reply::Shared {
                            ticket: Some(sent?.0),
                            len: n,
                        })
                    }
                    None => Ok(Reply::Shared {
                        ticket: None,
                        len: 0,
                    }),
                }
            }
            Request::Fetch { fh, max } => {
                let fh = self.own(t, fh)?;
                let max = max.min(MAX_HANDOUT);
                let ino = self.fs.handle_ino(fh)?;
                let version = self.versions.get(&ino).copied().unwrap_or(0);
                let leased = self.leases.get(&ino).is_some_and(|&h| h != t);
                let stat = self.fs.fstat(fh)?;
                let len = stat.size;
                if len > max || leased {
                    return Ok(Reply::Fetched {
                        ino,
                        version,
                        len,
                        ticket: None,
                        data: None,
                        too_big: len > max,
                        leased,
                        stat,
                    });
                }
                let (ticket, data) = if len <= INLINE_MAX as u64 {
                    (None, Some(self.fs.read_bytes(fh, 0, len)?))
                } else {
                    let (content, _) = self.fs.content(fh)?;
                    let ticket = match content {
                        Some(agg) => Some(
                            self.fs
                                .domain()
                                .attach_transfer(agg, domain, Mode::Share, TransferFlags::weak())?
                                .0,
                        ),
                        None => None,
                    };
                    (ticket, None)
                };
                self.cachers.entry(ino).or_default().insert(t);
                if let Some(c) = self.clients.get_mut(&t) {
                    c.cached.insert(ino);
                }
                Ok(Reply::Fetched {
                    ino,
                    version,
                    len,
                    ticket,
                    data,
                    too_big: false,
                    leased: false,
                    stat,
                })
            }
            Request::Write { fh, offset, data } => {
                let fh = self.own(t, fh)?;
                if data.len() > INLINE_MAX {
                    return Err(FsError::Invalid(format!(
                        "an inline write of {} bytes (at most {INLINE_MAX})",
                        data.len()
                    )));
                }
                let n = self.fs.write_bytes(fh, offset, &data)?;
                self.written(t, fh, n)
            }
            Request::WriteAgg { fh, offset, ticket } => {
                let fh = self.own(t, fh)?;
                let d = self.fs.domain();
                let got = d
                    .attach_recv(domain, Ticket(ticket), Some(TICKET_WAIT))
                    .map_err(|e| FsError::Invalid(format!("the written aggregate: {e}")))?;
                // Only bytes nobody else can change may become a file's content.
                if got.mode == Mode::Share || got.strength == cosh::Strength::Weak {
                    d.decref(got.agg)?;
                    return Err(FsError::Invalid(
                        "writes arrive by strong move or copy, not by share or weak transfer"
                            .into(),
                    ));
                }
                let n = self.fs.write(fh, offset, got.agg)?;
                self.written(t, fh, n)
            }
        }
    }

    fn written(&mut self, t: u64, fh: u64, n: u64) -> Result<Reply> {
        let ino = self.fs.handle_ino(fh)?;
        if n > 0 {
            self.changed(ino, t);
        }
        Ok(Reply::Written {
            n,
            stat: self.fs.fstat(fh)?,
        })
    }
}
