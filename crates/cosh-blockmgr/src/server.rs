//! The block manager's main loop: one thread polling the listening socket, every client's
//! socket, the seal worker's doorbell and the signal pipe. Every request is answered from the
//! ledger (the single authority on rights) and the store (the memory); nothing a client says
//! about rights is believed.
//!
//! A client is in one of a few phases. Idle clients may send any request. A transfer that
//! seals buffers first asks the sender to revoke its mappings (`Revoking`), then hands the
//! seals to the worker (`Sealing`); a receive with nothing pending parks the client
//! (`Waiting`) until a transfer arrives, its source disconnects, or its deadline passes. A
//! client that sends anything out of turn, sends a malformed frame, or does not read its
//! answers is disconnected, and everything it held is reclaimed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use cosh_core::ledger::{
    CopyReason, Delivery, Ledger, Policy, Received, Release, Route, TransferRequest,
};
use cosh_core::{
    Access, AggId, BufferId, DomainId, Error as CoreError, ErrorKind, Mode, Rights, Strength,
    Ticket, TransferFlags,
};
use cosh_proto::ops::{
    self, DomainStatus, MAX_AGGS, MAX_MAP, MAX_PIECES, MAX_REVOKE, MAX_STATUS_DOMAINS,
    MAX_STATUS_NAME, MappedBuffer, Request, Response, Status, TransferCounts, TransferReport,
    WirePiece,
};
use cosh_proto::{MAX_FRAME, Message, decode, encode, negotiate};
use cosh_ring::frames::{FrameReader, push_frame};
use cosh_ring::{AtomicU32, Consumer, Futex, Producer, RingError};
use cosh_sys::eventfd::EventFd;
use cosh_sys::mapping::{Mapping, Prefault, ReadWrite, SharedWords};
use cosh_sys::memfd::Memfd;
use cosh_sys::socket::{PeerCredentials, SeqPacket, SeqPacketListener};
use rustix::event::{PollFd, PollFlags};

mod links;

use crate::copier::Copier;
use crate::sealer::{Job, Sealer};
use crate::store::{Quota, SlotId, Store, StoreError};
use crate::{Config, StartError};

/// A request that failed: the error frame to send.
struct Failure {
    kind: ErrorKind,
    message: String,
}

impl From<CoreError> for Failure {
    fn from(e: CoreError) -> Self {
        Failure {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// A buffer the store could not provide: over the domain's quota, or out of memory or
/// descriptors.
fn store_failure(e: &StoreError) -> Failure {
    let kind = match e {
        StoreError::OverQuota { .. } => ErrorKind::OverQuota,
        _ => ErrorKind::Unavailable,
    };
    fail(kind, e.to_string())
}

fn fail(kind: ErrorKind, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        message: message.into(),
    }
}

/// How many gone domains of other pools a block manager remembers.
const MAX_GONE_REMOTE: usize = 1 << 16;

/// A transfer waiting for its sender's revoke or for the seal worker.
struct PendingTransfer {
    request: TransferRequest,
    seals: Vec<(BufferId, SlotId)>,
    refused: BTreeSet<SlotId>,
}

enum Wait {
    Queued(Option<DomainId>),
    Ticket(DomainId, Ticket),
}

impl Wait {
    /// The one sender waited for, if any.
    fn source(&self) -> Option<DomainId> {
        match self {
            Wait::Queued(s) => *s,
            Wait::Ticket(s, _) => Some(*s),
        }
    }
}

enum Phase {
    Handshake,
    Idle,
    Revoking(PendingTransfer),
    Sealing(PendingTransfer),
    Waiting(Wait, Option<Instant>),
    /// A transfer to another pool waits for the destination's confirmation.
    Exporting,
}

struct Client {
    sock: SeqPacket,
    creds: PeerCredentials,
    domain: Option<DomainId>,
    name: String,
    phase: Phase,
    /// Slots destroyed since the client's last answer.
    forget: Vec<SlotId>,
    /// The shared-memory rings, once opened.
    rings: Option<ClientRings>,
    /// Where the request being answered came from (answers go back the same way).
    via_ring: bool,
    /// A request read from the ring while applying direct-transfer records ahead of another
    /// client's request; handled at this client's next turn.
    held: Option<Message>,
    /// A record waiting for another client's record (see `settle`).
    stalled: Option<Request>,
    /// Being disconnected: its remaining records are applied, its errors ignored.
    dying: bool,
    /// Its request ring can no longer be read (a dying client's broke).
    broken: bool,
    /// The sequence number of the transfer this client has in progress (see
    /// [`Request::Transfer`]).
    transfer_seq: Option<u64>,
    /// Direct rings to announce ([`Response::DirectInbound`]) or to close
    /// ([`Response::DirectClosed`]) with the next answer: (peer, opened).
    direct_notices: Vec<(DomainId, bool)>,
}

/// What applying a direct-ring record did.
enum Applied {
    Done,
    /// It moves an aggregate the ledger does not know yet: try again after other records.
    Stalled,
}

/// Descriptors polled before the clients': signals, the seal worker, the listener, the
/// doorbell and the copy engine.
const FIXED: usize = 5;

/// What a poll reported of the links and their helpers.
struct Fired {
    /// Incoming links on this machine with something to read (or room to write).
    incoming: Vec<u64>,
    /// Outgoing links on this machine, likewise.
    outgoing: Vec<cosh_core::PoolId>,
    /// The copy engine finished jobs.
    copies: bool,
    /// The I/O threads of links over TCP have news.
    remote: bool,
    /// A connection from another host waits.
    tcp: bool,
}

/// Records in a direct ring (its staging area for inline transfers comes after them).
const DIRECT_CAPACITY: u32 = 1024;
/// Aggregate ids leased at a time for direct transfers.
const LEASE: u64 = 4096;

/// A direct ring from one domain to another: its memory, kept to hand to the receiver.
struct DirectPair {
    memfd: Memfd,
    /// Whether the receiver was told (only once no transfer from the sender waits for it in
    /// the queue, so that it never takes a ring record before an older queued transfer).
    announced: bool,
    /// The sender disconnected; the ring is kept for the receiver to read.
    sender_gone: bool,
}

/// A client's rings: one memfd, the request ring then the answer ring. Positions are kept
/// here, never read back from the shared memory the client can write.
struct ClientRings {
    map: Mapping<ReadWrite>,
    capacity: u32,
    request_tail: u32,
    answer_head: u32,
    /// The client's tail of the answer ring as last read ([`Producer::seen`]).
    answer_seen: u32,
    reader: FrameReader,
}

impl ClientRings {
    /// Runs `f` on the request ring, attached at the position kept here, and the frame reader;
    /// keeps the position `f` leaves.
    fn request<T>(
        &mut self,
        f: impl FnOnce(&mut Consumer<'_>, &mut FrameReader) -> Result<T, RingError>,
    ) -> Result<T, RingError> {
        let words = self.map.shared_words();
        let (request, _) = ring_words(&words, self.capacity).ok_or(RingError::TooSmall {
            needed: cosh_ring::pair_words(self.capacity),
            got: 0,
        })?;
        let mut c = Consumer::resume(request, self.capacity, self.request_tail)?;
        let r = f(&mut c, &mut self.reader)?;
        self.request_tail = c.position();
        Ok(r)
    }

    /// Runs `f` on the answer ring, attached at the position kept here; keeps the position
    /// `f` leaves.
    fn answer<T>(
        &mut self,
        f: impl FnOnce(&mut Producer<'_>) -> Result<T, RingError>,
    ) -> Result<T, RingError> {
        let words = self.map.shared_words();
        let (_, answer) = ring_words(&words, self.capacity).ok_or(RingError::TooSmall {
            needed: cosh_ring::pair_words(self.capacity),
            got: 0,
        })?;
        let mut p =
            Producer::resume_seen(answer, self.capacity, self.answer_head, self.answer_seen)?;
        let r = f(&mut p)?;
        self.answer_head = p.position();
        self.answer_seen = p.seen();
        Ok(r)
    }
}

/// The two rings' word ranges in a client's ring memory.
fn ring_words<'w>(
    words: &'w SharedWords<'_>,
    capacity: u32,
) -> Option<(&'w [AtomicU32], &'w [AtomicU32])> {
    cosh_ring::split_pair(
        words.atomic_u32s(0, cosh_ring::pair_words(capacity))?,
        capacity,
    )
}

/// What a request produced.
enum Answer {
    /// Answer now, with descriptors of these slots (read/write when `true`).
    Now(Response, Vec<(SlotId, bool)>),
    /// The answer comes later (the client's phase says why).
    Later,
}

fn now(r: Response) -> Result<Answer, Failure> {
    Ok(Answer::Now(r, Vec::new()))
}

/// The block manager (see the crate documentation).
pub struct BlockManager {
    config: Config,
    listener: SeqPacketListener,
    signals: UnixStream,
    ledger: Ledger,
    store: Store,
    sealer: Sealer,
    clients: BTreeMap<u64, Client>,
    next_client: u64,
    by_domain: HashMap<DomainId, u64>,
    /// Registered names, by the registrant's uid: each user has a namespace of its own, so
    /// nobody can squat a name another user's programs look up.
    names: BTreeMap<(u32, String), DomainId>,
    /// The block manager's own uid: names its services (and root's) register are seen by
    /// everyone.
    own_uid: u32,
    /// Domains of other pools their block managers said are gone (the most recent
    /// [`MAX_GONE_REMOTE`]), oldest first.
    gone_remote: (BTreeSet<DomainId>, std::collections::VecDeque<DomainId>),
    counts: TransferCounts,
    /// The copy-versus-reference policy for small transfers.
    small: ops::SmallTransfers,
    started: Instant,
    stop: bool,
    /// The receive buffer, reused for every message.
    inbox: Vec<u8>,
    /// Each domain's current slab and the next free offset in it.
    slabs: HashMap<DomainId, (BufferId, u64)>,
    /// How the descriptors are shared out.
    budget: crate::DescriptorBudget,
    /// A descriptor kept to be given up when the limit is reached (see `accept`).
    spare_fd: Option<std::fs::File>,
    /// The eventfd clients ring when they put a request in a ring while this loop sleeps.
    doorbell: EventFd,
    /// When a request was last handled (for spinning before sleep).
    last_request: Instant,
    /// Direct rings, by (sender, receiver).
    direct: BTreeMap<(DomainId, DomainId), DirectPair>,
    /// Clients whose request rings may carry records without answer (every client with
    /// rings): their records are applied before any request.
    loggers: BTreeSet<u64>,
    /// Sequence numbers of queued transfers between domains with a direct ring:
    /// (receiver, its aggregate) → (sender, number).
    seqs: HashMap<(DomainId, AggId), (DomainId, u64)>,
    /// The ledger domain that holds transfers in flight to other pools (made on first use).
    holder: Option<DomainId>,
    /// Links this block manager opened, by destination pool.
    out_links: BTreeMap<cosh_core::PoolId, links::OutLink>,
    /// Links other block managers opened to this one, by connection token.
    in_links: BTreeMap<u64, links::InLink>,
    /// The next transfer number on outgoing links.
    next_delivery: u64,
    /// The copy engine for transfers arriving from other pools.
    copier: Copier,
    /// Transfers from other pools on the copy engine, by (link, transfer).
    importing: HashMap<(u64, u64), links::Importing>,
    /// Where links from other hosts come in.
    tcp_listener: Option<std::net::TcpListener>,
    /// What the I/O threads of links over TCP hear, by link key, and their doorbell.
    remote_tx: std::sync::mpsc::Sender<(u64, crate::remote::FromIo)>,
    remote_rx: std::sync::mpsc::Receiver<(u64, crate::remote::FromIo)>,
    remote_bell: std::sync::Arc<EventFd>,
    /// Links over TCP this block manager opened: key → pool.
    remote_out: HashMap<u64, cosh_core::PoolId>,
    /// Links over TCP other hosts opened.
    remote_in: BTreeMap<u64, links::RemoteIn>,
    /// The transfer each incoming link over TCP is reading.
    remote_current: HashMap<u64, u64>,
}

impl BlockManager {
    /// Binds the socket (refusing if another block manager serves it) and prepares to serve.
    pub fn bind(config: Config) -> Result<BlockManager, StartError> {
        if config.policy.strong_move != cosh_core::ledger::MoveMechanism::Copy {
            return Err(StartError::Config(
                "a host pool cannot revoke mappings, so strong moves must copy".into(),
            ));
        }
        if let Some(dir) = config.socket.parent() {
            cosh_sys::runtime::ensure_runtime_dir(dir).map_err(StartError::Runtime)?;
        }
        // The TCP listener first: once the socket answers, links can connect too.
        let tcp_listener = match config.listen {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr).map_err(|e| {
                    StartError::Config(format!("cannot listen for links on {addr}: {e}"))
                })?;
                l.set_nonblocking(true).map_err(StartError::Io)?;
                Some(l)
            }
            None => None,
        };
        // The signals before the socket too: once the socket answers, SIGINT and SIGTERM stop
        // the block manager cleanly (a signal in between used to kill it outright).
        let (signals, writer) = UnixStream::pair().map_err(StartError::Io)?;
        signals.set_nonblocking(true).map_err(StartError::Io)?;
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let w = writer.try_clone().map_err(StartError::Io)?;
            signal_hook::low_level::pipe::register(signal, w).map_err(StartError::Io)?;
        }
        let listener =
            SeqPacketListener::bind_exclusive(&config.socket).map_err(StartError::Bind)?;
        let sealer = Sealer::start().map_err(StartError::Runtime)?;
        let budget = crate::DescriptorBudget::for_limit(crate::descriptor_limit());
        // Kept open to be closed when the descriptors run out anyway: then one more
        // connection can be accepted, told why, and closed (rather than left in the backlog,
        // the listener readable for ever).
        let spare_fd = std::fs::File::open("/dev/null").ok();
        let own_uid = rustix::process::geteuid().as_raw();
        let config_dma = config.dma;
        let small = small_transfers(&config);
        let (remote_tx, remote_rx) = std::sync::mpsc::channel();
        Ok(BlockManager {
            ledger: Ledger::new(Policy {
                share_copy_max: small.share_copy_max,
                ..config.policy
            }),
            spare_fd,
            store: Store::new(
                config.free_budget,
                config.pool_limit,
                (
                    Quota {
                        bytes: config.max_domain_bytes,
                        buffers: config.max_domain_buffers,
                    },
                    Quota {
                        bytes: config.max_uid_bytes,
                        buffers: config.max_uid_buffers,
                    },
                    own_uid,
                ),
                budget.slots,
            ),
            budget,
            config,
            listener,
            signals,
            sealer,
            clients: BTreeMap::new(),
            next_client: 1,
            by_domain: HashMap::new(),
            names: BTreeMap::new(),
            own_uid,
            gone_remote: Default::default(),
            counts: TransferCounts::default(),
            small,
            started: Instant::now(),
            stop: false,
            inbox: vec![0; MAX_FRAME],
            slabs: HashMap::new(),
            doorbell: EventFd::new().map_err(StartError::Runtime)?,
            last_request: Instant::now(),
            direct: BTreeMap::new(),
            loggers: BTreeSet::new(),
            seqs: HashMap::new(),
            holder: None,
            out_links: BTreeMap::new(),
            in_links: BTreeMap::new(),
            next_delivery: 1,
            copier: Copier::start(config_dma).map_err(StartError::Runtime)?,
            importing: HashMap::new(),
            tcp_listener,
            remote_tx,
            remote_rx,
            remote_bell: std::sync::Arc::new(EventFd::new().map_err(StartError::Runtime)?),
            remote_out: HashMap::new(),
            remote_in: BTreeMap::new(),
            remote_current: HashMap::new(),
        })
    }

    /// The socket served.
    pub fn socket(&self) -> &std::path::Path {
        self.listener.path()
    }

    /// Serves until SIGINT, SIGTERM or a shutdown request; the socket is removed on return.
    pub fn run(mut self) -> Result<(), StartError> {
        while !self.stop {
            self.turn()?;
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .values()
            .filter_map(|c| match &c.phase {
                // A wait for a transfer on the copy engine ends when the copy does.
                Phase::Waiting(wait, deadline)
                    if !c.domain.is_some_and(|d| self.import_pending(d, wait)) =>
                {
                    *deadline
                }
                _ => None,
            })
            .chain(self.remote_open_deadline())
            .min()
    }

    /// One poll and everything it reports.
    fn turn(&mut self) -> Result<(), StartError> {
        let tokens: Vec<u64> = self.clients.keys().copied().collect();
        let in_tokens: Vec<u64> = self.in_links.keys().copied().collect();
        let out_pools: Vec<cosh_core::PoolId> = self
            .out_links
            .iter()
            .filter(|(_, l)| matches!(l.chan, links::OutChan::Local { .. }))
            .map(|(p, _)| *p)
            .collect();
        let timeout = self.next_deadline().map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            rustix::event::Timespec {
                tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(left.subsec_nanos()),
            }
        });
        // Clients with rings learn that this loop is about to sleep (so that they ring the
        // doorbell); a request already waiting means no sleep at all.
        let ringed: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.rings.is_some())
            .map(|(t, _)| *t)
            .collect();
        let mut work_waiting =
            self.spin_for_requests(&ringed) || self.clients.values().any(|c| c.held.is_some());
        for t in &ringed {
            match self.with_request_ring(*t, |c| c.prepare_sleep()) {
                Some(Ok(true)) => work_waiting = true,
                Some(Ok(false)) | None => {}
                Some(Err(_)) => work_waiting = true, // read (and reject) it below
            }
        }
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let timeout = if work_waiting { Some(zero) } else { timeout };
        let (signal_ready, bell_ready, listener_ready, ready) = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(FIXED + tokens.len());
            fds.push(PollFd::new(&self.signals, PollFlags::IN));
            fds.push(PollFd::new(self.sealer.bell(), PollFlags::IN));
            fds.push(PollFd::new(&self.listener, PollFlags::IN));
            fds.push(PollFd::new(&self.doorbell, PollFlags::IN));
            fds.push(PollFd::new(self.copier.bell(), PollFlags::IN));
            for t in &tokens {
                if let Some(c) = self.clients.get(t) {
                    fds.push(PollFd::new(&c.sock, PollFlags::IN));
                }
            }
            let wants = |empty: bool| {
                if empty {
                    PollFlags::IN
                } else {
                    PollFlags::IN | PollFlags::OUT
                }
            };
            for t in &in_tokens {
                if let Some(l) = self.in_links.get(t) {
                    fds.push(PollFd::new(&l.sock, wants(l.outbox.is_empty())));
                }
            }
            for p in &out_pools {
                if let Some(links::OutChan::Local { sock, outbox }) =
                    self.out_links.get(p).map(|l| &l.chan)
                {
                    fds.push(PollFd::new(sock, wants(outbox.is_empty())));
                }
            }
            let tail = fds.len();
            fds.push(PollFd::new(&*self.remote_bell, PollFlags::IN));
            if let Some(l) = &self.tcp_listener {
                fds.push(PollFd::new(l, PollFlags::IN));
            }
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(StartError::Io(e.into())),
            }
            let fired = |f: &PollFd<'_>| !f.revents().is_empty();
            let ready: Vec<u64> = fds[FIXED..]
                .iter()
                .zip(&tokens)
                .filter(|(f, _)| fired(f))
                .map(|(_, t)| *t)
                .collect();
            // The links' descriptors, incoming then outgoing, sit between the clients' and
            // the remote doorbell.
            let link_fds = &fds[FIXED + tokens.len()..tail];
            let (ins, outs) = link_fds.split_at(in_tokens.len().min(link_fds.len()));
            let links = Fired {
                incoming: ins
                    .iter()
                    .zip(&in_tokens)
                    .filter(|(f, _)| fired(f))
                    .map(|(_, t)| *t)
                    .collect(),
                outgoing: outs
                    .iter()
                    .zip(&out_pools)
                    .filter(|(f, _)| fired(f))
                    .map(|(_, p)| *p)
                    .collect(),
                copies: fired(&fds[4]),
                remote: fired(&fds[tail]),
                tcp: fds.get(tail + 1).is_some_and(fired),
            };
            (
                fired(&fds[0]),
                fired(&fds[1]),
                fired(&fds[2]),
                (ready, links),
            )
        };
        let (ready, links) = ready;
        for t in &ringed {
            let _ = self.with_request_ring(*t, |c| {
                c.awake();
                Ok(())
            });
        }
        let _ = self.doorbell.take();
        if signal_ready {
            let mut buf = [0u8; 16];
            let _ = (&self.signals).read(&mut buf);
            self.stop = true;
            return Ok(());
        }
        if bell_ready {
            for done in self.sealer.finished() {
                self.seals_done(done.client, &done.sealed, &done.refused);
            }
        }
        if listener_ready {
            self.accept();
        }
        for token in ready {
            self.readable(token);
        }
        for token in ringed {
            self.read_ring(token);
        }
        for token in links.incoming {
            self.in_link_readable(token);
        }
        for pool in links.outgoing {
            self.out_link_readable(pool);
        }
        if links.copies {
            self.imports_done();
        }
        if links.tcp {
            self.accept_tcp();
        }
        if links.remote {
            self.remote_ready();
        }
        self.expire_waits();
        self.expire_remote_opens();
        self.flush_link_forgets();
        Ok(())
    }

    /// Right after handling requests, looks at the rings for up to `config.spin` before
    /// letting the loop sleep: `true` if a request came meanwhile.
    fn spin_for_requests(&mut self, ringed: &[u64]) -> bool {
        let spin = self.config.spin;
        if spin.is_zero() || self.last_request.elapsed() > spin {
            return false;
        }
        while self.last_request.elapsed() < spin {
            for t in ringed {
                if let Some(Ok(n)) = self.with_request_ring(*t, |c| c.available())
                    && n > 0
                {
                    return true;
                }
            }
            std::hint::spin_loop();
        }
        false
    }

    /// Runs `f` on the client's request ring, attached at the position this side keeps.
    fn with_request_ring<T>(
        &mut self,
        token: u64,
        f: impl FnOnce(&mut Consumer<'_>) -> Result<T, RingError>,
    ) -> Option<Result<T, RingError>> {
        let rings = self.clients.get_mut(&token)?.rings.as_mut()?;
        Some(rings.request(|c, _| f(c)))
    }

    /// Handles the requests waiting in a client's ring (a few at most, for fairness).
    fn read_ring(&mut self, token: u64) {
        for _ in 0..16 {
            // Records without answer first, up to the next request (held for here).
            if self.drain_client(token) {
                self.last_request = Instant::now();
            }
            if self
                .clients
                .get(&token)
                .is_some_and(|c| c.stalled.is_some())
            {
                // It waits for another client's record.
                self.settle();
            }
            let Some(held) = self.clients.get_mut(&token).and_then(|c| c.held.take()) else {
                return;
            };
            self.last_request = Instant::now();
            self.handle(token, held, true);
        }
    }

    /// Makes a client's rings and sends them, with the doorbell, over its socket.
    fn open_rings(&mut self, token: u64, asked: u32) {
        let need = cosh_ring::frames::records_for(MAX_FRAME) as u32;
        let capacity = asked
            .clamp(need, ops::MAX_RING_RECORDS)
            .next_power_of_two()
            .min(ops::MAX_RING_RECORDS);
        let made = (|| -> Result<(Memfd, Mapping<ReadWrite>), cosh_sys::Error> {
            let memfd = Memfd::create("cosh-rings", 4 * cosh_ring::pair_words(capacity) as u64)?;
            let mut map = memfd.map_write(Prefault::Now)?;
            {
                let words = map.shared_words();
                if let Some((request, answer)) = ring_words(&words, capacity) {
                    let _ = cosh_ring::init(request, capacity);
                    let _ = cosh_ring::init(answer, capacity);
                }
            }
            Ok((memfd, map))
        })();
        let (memfd, map) = match made {
            Ok(m) => m,
            Err(e) => {
                let m = Message::Error {
                    kind: ErrorKind::Unavailable,
                    message: format!("cannot make rings: {e}"),
                };
                return self.send(token, &m, &[]);
            }
        };
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        // Its rings may carry records (direct transfers, releases) that must be applied
        // before anyone's request.
        self.loggers.insert(token);
        client.rings = Some(ClientRings {
            map,
            capacity,
            request_tail: 0,
            answer_head: 0,
            answer_seen: 0,
            reader: FrameReader::new(MAX_FRAME),
        });
        client.via_ring = false;
        let m = Message::Response(Response::RingsOpened { capacity });
        let bell = self.doorbell.as_fd().try_clone_to_owned();
        match bell {
            Ok(bell) => self.send(token, &m, &[memfd.as_fd(), bell.as_fd()]),
            Err(_) => self.disconnect(token),
        }
    }

    /// Applies the records without answer waiting in every client's request ring, up to its
    /// next real request (kept for its turn). A record may move an aggregate that
    /// another sender's record, not applied yet, gave its sender (the sender read it on a
    /// direct ring, which the other sender wrote only after its record): such a record waits
    /// while the others are applied. One that still cannot apply when nothing else can is a
    /// lie, and cuts its sender off.
    fn settle(&mut self) {
        loop {
            loop {
                let tokens: Vec<u64> = self.loggers.iter().copied().collect();
                let mut progress = false;
                for t in tokens {
                    progress |= self.drain_client(t);
                }
                if !progress {
                    break;
                }
            }
            let stuck: Vec<u64> = self
                .clients
                .iter()
                .filter(|(_, c)| c.stalled.is_some())
                .map(|(t, _)| *t)
                .collect();
            if stuck.is_empty() {
                return;
            }
            for t in stuck {
                let release = self.clients.get_mut(&t).and_then(|c| {
                    if let Some(Request::Release { agg }) = c.stalled {
                        c.stalled = None;
                        Some(agg)
                    } else {
                        None
                    }
                });
                // A free of what a lying peer announced on a direct ring (the client only
                // believed it) frees nothing, and the client's other records go on.
                if release.is_none() {
                    self.cut(t, "a direct transfer of an aggregate it does not hold");
                }
            }
        }
    }

    /// Cuts off a client met while applying records (its own records are not applied again).
    /// A client already being disconnected is only left alone.
    fn cut(&mut self, token: u64, why: &str) {
        if let Some(c) = self.clients.get_mut(&token)
            && c.dying
        {
            c.stalled = None;
            c.broken = true;
            return;
        }
        self.loggers.remove(&token);
        if let Some(c) = self.clients.get_mut(&token) {
            c.stalled = None;
            c.held = None;
        }
        self.reject(token, why);
    }

    /// Applies one client's waiting records; `true` if it applied any.
    fn drain_client(&mut self, token: u64) -> bool {
        let mut progress = false;
        loop {
            let Some(client) = self.clients.get_mut(&token) else {
                return progress;
            };
            if client.held.is_some() || client.broken {
                return progress;
            }
            if let Some(r) = client.stalled.take() {
                if !self.apply_or_stall(token, r) {
                    return progress;
                }
                progress = true;
                continue;
            }
            let Some(rings) = client.rings.as_mut() else {
                return progress;
            };
            let decoded = match rings.request(|c, reader| Ok(reader.read(c)?.map(decode))) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => return progress,
                Err(e) => {
                    let why = format!("request ring: {e}");
                    self.cut(token, &why);
                    return true;
                }
            };
            match decoded {
                Ok(Message::Request(r)) if r.is_record() => {
                    if !self.apply_or_stall(token, r) {
                        return progress;
                    }
                    progress = true;
                }
                Ok(m) => {
                    if let Some(c) = self.clients.get_mut(&token) {
                        c.held = Some(m);
                    }
                    return progress;
                }
                Err(e) => {
                    self.cut(token, &e.to_string());
                    return true;
                }
            }
        }
    }

    /// Applies a record, or keeps it as the client's stalled one: `false` then.
    fn apply_or_stall(&mut self, token: u64, record: Request) -> bool {
        match self.apply_record(token, &record) {
            Applied::Done => true,
            Applied::Stalled => {
                if let Some(c) = self.clients.get_mut(&token) {
                    c.stalled = Some(record);
                }
                false
            }
        }
    }

    /// A record without answer: a weak transfer already carried out (the ledger must agree, or
    /// the sender broke the rules and is cut off), a free, or a receiver to wake.
    fn apply_record(&mut self, token: u64, record: &Request) -> Applied {
        let Ok(sender) = self.domain_of(token) else {
            return Applied::Done;
        };
        match *record {
            Request::Direct { agg, to, mode, new } => {
                let to = DomainId::from_bits(to);
                if !self.ledger.has_domain(to) {
                    // The receiver died after the sender wrote the record: like a transfer
                    // it received just before dying.
                    return Applied::Done;
                }
                let mode: Mode = mode.into();
                if !self.direct.contains_key(&(sender, to)) {
                    self.cut(token, "a direct transfer without a direct ring");
                    return Applied::Done;
                }
                match self
                    .ledger
                    .transfer_direct(sender, AggId(agg), to, mode, AggId(new))
                {
                    Ok(()) => {
                        match mode {
                            Mode::Move => self.counts.moves += 1,
                            _ => self.counts.shares += 1,
                        }
                        self.counts.weak += 1;
                        self.counts.by_descriptor += 1;
                    }
                    Err(e) if e.kind() == ErrorKind::UnknownAggregate => return Applied::Stalled,
                    Err(e) => {
                        let why = format!("direct transfer: {e}");
                        self.cut(token, &why);
                    }
                }
            }
            Request::Wake { to } => {
                let to = DomainId::from_bits(to);
                if self.direct.contains_key(&(sender, to)) {
                    self.end_wait(to);
                }
            }
            Request::Release { agg } => match self.ledger.decref(sender, AggId(agg)) {
                Ok(release) => self.released(&release),
                Err(e) if e.kind() == ErrorKind::UnknownAggregate => return Applied::Stalled,
                Err(e) => {
                    let why = format!("release: {e}");
                    self.cut(token, &why);
                }
            },
            Request::Inline {
                agg,
                to,
                mode,
                weak,
            } => return self.apply_inline(token, sender, AggId(agg), to, mode.into(), weak),
            Request::Land { agg, len, rights } => {
                // The buffer must be the domain's alone in memory too: no other domain was
                // ever given a descriptor of its slot.
                let private = self
                    .ledger
                    .chunks(sender, AggId(agg))
                    .ok()
                    .and_then(|c| c.chunks().first().copied())
                    .and_then(|c| self.store.slot_of(c.buffer))
                    .is_some_and(|slot| self.store.private_to(slot, sender));
                let landed = if private {
                    self.ledger.land(sender, AggId(agg), len, rights.into())
                } else {
                    Err(CoreError::DirectRefused {
                        agg: AggId(agg),
                        reason: "a landing's memory is private to the domain",
                    })
                };
                match landed {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::UnknownAggregate => return Applied::Stalled,
                    Err(e) => {
                        let why = format!("landing: {e}");
                        self.cut(token, &why);
                    }
                }
            }
            _ => {}
        }
        Applied::Done
    }

    /// The sender's half of an inline transfer (see [`Ledger::sent_inline`]).
    fn apply_inline(
        &mut self,
        token: u64,
        sender: DomainId,
        agg: AggId,
        to: u64,
        mode: Mode,
        weak: bool,
    ) -> Applied {
        let to = DomainId::from_bits(to);
        let len = match self.ledger.len(sender, agg) {
            Ok(len) => len,
            Err(e) if e.kind() == ErrorKind::UnknownAggregate => return Applied::Stalled,
            Err(e) => {
                self.cut(token, &format!("inline transfer: {e}"));
                return Applied::Done;
            }
        };
        // (A receiver that died after the sender wrote the record has no ring any more.)
        if self.ledger.has_domain(to) && !self.direct.contains_key(&(sender, to)) {
            self.cut(token, "an inline transfer without a direct ring");
            return Applied::Done;
        }
        match self.ledger.sent_inline(sender, agg, to, mode) {
            Ok(()) => {
                match mode {
                    Mode::Move => self.counts.moves += 1,
                    Mode::Share => self.counts.shares += 1,
                    Mode::Copy => self.counts.copies += 1,
                }
                if weak && mode != Mode::Copy {
                    self.counts.weak += 1;
                }
                self.counts.inline += 1;
                self.counts.inline_bytes += len;
                Applied::Done
            }
            Err(e) => {
                self.cut(token, &format!("inline transfer: {e}"));
                Applied::Done
            }
        }
    }

    /// Block manager `from` says its domain `domain` is gone: receives waiting for it are
    /// woken to find out (after whatever of its is still being copied in).
    fn remote_gone(&mut self, from: cosh_core::PoolId, domain: DomainId) -> Result<(), String> {
        if domain.pool != from || from == self.config.pool {
            return Err(format!("pool {from} says domain {domain} is gone"));
        }
        let (set, order) = &mut self.gone_remote;
        if set.insert(domain) {
            order.push_back(domain);
            if order.len() > MAX_GONE_REMOTE
                && let Some(old) = order.pop_front()
            {
                set.remove(&old);
            }
        }
        let waiting: Vec<DomainId> = self
            .clients
            .values()
            .filter(|c| matches!(&c.phase, Phase::Waiting(w, _) if w.source() == Some(domain)))
            .filter_map(|c| c.domain)
            .collect();
        for receiver in waiting {
            self.end_wait(receiver);
        }
        Ok(())
    }

    /// A link from pool `pool` (re)opened: its domain ids start afresh.
    fn forget_gone_of(&mut self, pool: cosh_core::PoolId) {
        let (set, order) = &mut self.gone_remote;
        set.retain(|d| d.pool != pool);
        order.retain(|d| d.pool != pool);
    }

    /// Ends a parked receive with [`Response::Woken`] (and the notices it carries).
    fn end_wait(&mut self, domain: DomainId) {
        let Some(&token) = self.by_domain.get(&domain) else {
            return;
        };
        // Only a receive from the queue: a ticketed one waits for its ticket alone.
        if let Some(c) = self.clients.get_mut(&token)
            && matches!(c.phase, Phase::Waiting(Wait::Queued(_), _))
        {
            c.phase = Phase::Idle;
            self.answer(token, now(Response::Woken));
        }
    }

    /// Opens a direct ring from the client's domain to `to` and sends it over the socket.
    fn open_direct(
        &mut self,
        token: u64,
        sender: DomainId,
        to: DomainId,
    ) -> Result<Answer, Failure> {
        if to == sender {
            return Err(CoreError::SelfTransfer { domain: sender }.into());
        }
        if to.pool != self.config.pool {
            return Err(fail(
                ErrorKind::Unavailable,
                format!("{to} is in another pool: direct rings join domains of one pool"),
            ));
        }
        let Some(&receiver_token) = self.by_domain.get(&to) else {
            return Err(CoreError::UnknownDomain { domain: to }.into());
        };
        if !self.ledger.trusts(to, sender) {
            return Err(fail(
                ErrorKind::InsufficientRights,
                format!("domain {to} does not trust {sender}: weak transfers to it are strong"),
            ));
        }
        let ringed = |t: u64| self.clients.get(&t).is_some_and(|c| c.rings.is_some());
        if !ringed(token) || !ringed(receiver_token) {
            return Err(fail(
                ErrorKind::Unavailable,
                "direct rings need both domains to use rings",
            ));
        }
        if self.direct.contains_key(&(sender, to)) {
            return Err(fail(
                ErrorKind::Protocol,
                format!("a direct ring to {to} is already open"),
            ));
        }
        let words = cosh_ring::direct_words(DIRECT_CAPACITY);
        let made = (|| -> Result<Memfd, cosh_sys::Error> {
            let memfd = Memfd::create(
                "cosh-direct",
                cosh_ring::direct_bytes(DIRECT_CAPACITY) as u64,
            )?;
            let mut map = memfd.map_write(Prefault::OnFirstTouch)?;
            let shared = map.shared_words();
            if let Some(w) = shared.atomic_u32s(0, words) {
                let _ = cosh_ring::init(w, DIRECT_CAPACITY);
            }
            Ok(memfd)
        })();
        let memfd =
            made.map_err(|e| fail(ErrorKind::Unavailable, format!("cannot make a ring: {e}")))?;
        let first = self.ledger.lease_ids(sender, LEASE)?;
        let m = Message::Response(Response::DirectOpened {
            capacity: DIRECT_CAPACITY,
            first,
            count: LEASE,
        });
        self.send(token, &m, &[memfd.as_fd()]);
        self.direct.insert(
            (sender, to),
            DirectPair {
                memfd,
                announced: false,
                sender_gone: false,
            },
        );
        self.announce_rings(to);
        Ok(Answer::Later)
    }

    /// Tells `receiver` about the direct rings to it that it may use now: those from senders
    /// with no transfer waiting for it in the queue.
    fn announce_rings(&mut self, receiver: DomainId) {
        let ready: Vec<DomainId> = self
            .direct
            .iter()
            .filter(|((s, r), p)| {
                // Transfers queued before the ring opened carry no sequence number: the
                // receiver takes them all before it looks at the ring.
                let numbered = self
                    .seqs
                    .iter()
                    .filter(|((to, _), (from, _))| to == r && from == s)
                    .count();
                *r == receiver && !p.announced && self.ledger.queued_from(receiver, *s) <= numbered
            })
            .map(|((s, _), _)| *s)
            .collect();
        if ready.is_empty() {
            return;
        }
        let Some(&token) = self.by_domain.get(&receiver) else {
            return;
        };
        for s in ready {
            if let Some(p) = self.direct.get_mut(&(s, receiver)) {
                p.announced = true;
            }
            if let Some(c) = self.clients.get_mut(&token) {
                c.direct_notices.push((s, true));
            }
        }
        // A parked receiver hears at once (its receive ends with `Woken`).
        self.end_wait(receiver);
    }

    fn accept(&mut self) {
        let sock = match self.listener.accept() {
            Ok(sock) => sock,
            Err(e) if e.errno() == Some(rustix::io::Errno::MFILE) => {
                // Out of descriptors: give up the spare one for a moment to take the
                // connection off the backlog and say why, rather than leave the listener
                // readable (the loop would spin on it).
                self.spare_fd = None;
                if let Ok(sock) = self.listener.accept() {
                    self.turn_away(
                        &sock,
                        ErrorKind::Unavailable,
                        "the block manager is out of descriptors; try again later".into(),
                    );
                }
                self.spare_fd = std::fs::File::open("/dev/null").ok();
                return;
            }
            Err(_) => return,
        };
        let Ok(creds) = sock.peer_credentials() else {
            return;
        };
        let of_uid = self
            .clients
            .values()
            .filter(|c| c.creds.uid == creds.uid)
            .count();
        if of_uid >= self.config.max_uid_connections {
            self.turn_away(
                &sock,
                ErrorKind::OverQuota,
                format!(
                    "uid {} already has {of_uid} connections to this block manager, the most \
                     one user may have; close some first",
                    creds.uid
                ),
            );
            return;
        }
        if self.clients.len() >= self.budget.connections {
            self.turn_away(
                &sock,
                ErrorKind::Unavailable,
                format!(
                    "the block manager serves {} connections, the most its descriptor limit \
                     leaves room for; try again later",
                    self.clients.len()
                ),
            );
            return;
        }
        if sock.set_nonblocking(true).is_err() {
            return;
        }
        let token = self.next_client;
        self.next_client += 1;
        self.clients.insert(
            token,
            Client {
                sock,
                creds,
                domain: None,
                name: String::new(),
                phase: Phase::Handshake,
                forget: Vec::new(),
                rings: None,
                via_ring: false,
                held: None,
                stalled: None,
                dying: false,
                broken: false,
                transfer_seq: None,
                direct_notices: Vec::new(),
            },
        );
    }

    fn readable(&mut self, token: u64) {
        let mut buf = std::mem::take(&mut self.inbox);
        buf.resize(MAX_FRAME, 0);
        let received = match self.clients.get(&token) {
            Some(c) => c.sock.recv(&mut buf),
            None => {
                self.inbox = buf;
                return;
            }
        };
        let frame = self.frame(token, received, &buf);
        self.inbox = buf;
        if let Some(frame) = frame {
            self.handle(token, frame, false);
        }
    }

    /// Decodes what a client sent; `None` when it was nothing or the client was dropped.
    fn frame(
        &mut self,
        token: u64,
        received: Result<Option<cosh_sys::socket::Message>, cosh_sys::Error>,
        buf: &[u8],
    ) -> Option<Message> {
        let message = match received {
            Ok(Some(m)) => m,
            Err(e) if e.would_block() => return None,
            // End of stream or a broken socket: the client is gone.
            Ok(None) | Err(_) => {
                self.disconnect(token);
                return None;
            }
        };
        if !message.fds.is_empty() {
            self.reject(token, "clients never send descriptors");
            return None;
        }
        match decode(&buf[..message.len]) {
            Ok(f) => Some(f),
            Err(e) => {
                self.reject(token, &e.to_string());
                None
            }
        }
    }

    /// Tells a connection it is not served, and why (it is closed when dropped).
    fn turn_away(&mut self, sock: &SeqPacket, kind: ErrorKind, message: String) {
        let _ = sock.set_nonblocking(true);
        if let Ok(bytes) = encode(&Message::Error { kind, message }) {
            let _ = sock.send(&bytes, &[]);
        }
        // Closing a socket with unread messages makes the peer's next read fail with
        // ECONNRESET before it sees the error: stop taking messages (a later hello fails to
        // send, and the client reads the error), then drop what already came.
        let _ = rustix::net::shutdown(sock, rustix::net::Shutdown::Read);
        let mut buf = std::mem::take(&mut self.inbox);
        buf.resize(MAX_FRAME, 0);
        while let Ok(Some(_)) = sock.try_recv(&mut buf) {}
        self.inbox = buf;
    }

    /// Answers a protocol violation with an error frame and drops the client.
    fn reject(&mut self, token: u64, why: &str) {
        if let Some(c) = self.clients.get(&token) {
            let error = Message::Error {
                kind: ErrorKind::Protocol,
                message: truncate(&format!("protocol violation: {why}"), 1024),
            };
            if let Ok(bytes) = encode(&error) {
                let _ = c.sock.send(&bytes, &[]);
            }
        }
        self.disconnect(token);
    }

    fn handle(&mut self, token: u64, frame: Message, via_ring: bool) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        client.via_ring = via_ring;
        if let Message::Request(Request::OpenRings { capacity }) = frame {
            if via_ring || client.rings.is_some() || !matches!(client.phase, Phase::Idle) {
                return self.reject(token, "rings open once, over the socket, between requests");
            }
            return self.open_rings(token, capacity);
        }
        if via_ring
            && matches!(
                frame,
                Message::Request(
                    Request::Map { .. } | Request::OpenDirect { .. } | Request::AttachDirect { .. }
                )
            )
        {
            return self.reject(token, "requests that pass descriptors come over the socket");
        }
        // Records are read (and applied) by `drain_client`, never handed here from a ring.
        if let Message::Request(r) = &frame
            && r.is_record()
        {
            return self.reject(
                token,
                "records without answer come through the request ring",
            );
        }
        // Every direct transfer announced so far happened before this request: the ledger
        // must know of it first.
        self.settle();
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        match (&client.phase, frame) {
            (
                Phase::Handshake,
                Message::Hello {
                    min_version,
                    max_version,
                    name,
                },
            ) => match negotiate(min_version, max_version) {
                Ok(version) => {
                    let domain = self.ledger.add_domain(self.config.pool);
                    client.domain = Some(domain);
                    client.name = truncate(&name, MAX_STATUS_NAME);
                    client.phase = Phase::Idle;
                    self.by_domain.insert(domain, token);
                    let uid = self.uid_of(token);
                    self.store.set_uid(domain, uid);
                    self.send(token, &Message::Welcome { version, domain }, &[]);
                }
                Err(refusal) => {
                    let m = Message::Refused {
                        reason: refusal.to_string(),
                    };
                    self.send(token, &m, &[]);
                    self.disconnect(token);
                }
            },
            (
                Phase::Handshake,
                Message::Link(cosh_proto::link::LinkMessage::Open {
                    pool,
                    min_version,
                    max_version,
                }),
            ) => self.accept_link(token, pool, min_version, max_version),
            (Phase::Handshake, _) => self.reject(token, "the first message must be a hello"),
            (Phase::Idle, Message::Request(request)) => {
                let answer = self.dispatch(token, request);
                self.answer(token, answer);
            }
            (Phase::Revoking(_), Message::Request(Request::Revoked)) => {
                let Some(Phase::Revoking(pending)) = self
                    .clients
                    .get_mut(&token)
                    .map(|c| std::mem::replace(&mut c.phase, Phase::Idle))
                else {
                    return;
                };
                self.start_seals(token, pending);
            }
            (Phase::Revoking(_), _) => self.reject(token, "expected revoked"),
            (Phase::Sealing(_) | Phase::Waiting(..) | Phase::Exporting, _) => {
                self.reject(token, "a request arrived before the answer to the last one")
            }
            (Phase::Idle, other) => {
                let why = format!("unexpected {} message", other.name());
                self.reject(token, &why);
            }
        }
    }

    fn answer(&mut self, token: u64, answer: Result<Answer, Failure>) {
        for (slot, tell) in self.store.take_evicted() {
            self.tell_forget(slot, &tell);
        }
        match answer {
            Ok(Answer::Now(response, slots)) => {
                self.send_with_slots(token, &Message::Response(response), &slots)
            }
            Ok(Answer::Later) => {}
            Err(f) => self.send(
                token,
                &Message::Error {
                    kind: f.kind,
                    message: truncate(&f.message, cosh_proto::MAX_TEXT),
                },
                &[],
            ),
        }
    }

    fn send_with_slots(&mut self, token: u64, message: &Message, slots: &[(SlotId, bool)]) {
        let Some(domain) = self.clients.get(&token).and_then(|c| c.domain) else {
            return;
        };
        let mut owned = Vec::with_capacity(slots.len());
        for (slot, write) in slots {
            match self.store.descriptor(*slot, domain, *write) {
                Ok(fd) => owned.push(fd),
                Err(e) => {
                    let m = Message::Error {
                        kind: ErrorKind::Unavailable,
                        message: format!("cannot pass a descriptor: {e}"),
                    };
                    return self.send(token, &m, &[]);
                }
            }
        }
        let borrowed: Vec<BorrowedFd<'_>> = owned.iter().map(AsFd::as_fd).collect();
        self.send(token, message, &borrowed);
    }

    /// Sends a frame (after any pending forget notices); a client that cannot take it is
    /// disconnected.
    fn send(&mut self, token: u64, message: &Message, fds: &[BorrowedFd<'_>]) {
        self.flush_forget(token);
        self.flush_direct_notices(token);
        let ok = encode(message)
            .ok()
            .is_some_and(|bytes| self.deliver(token, &bytes, fds));
        if !ok {
            self.disconnect(token);
        }
    }

    /// Puts one frame on the client's channel: its answer ring if the request came that way
    /// and no descriptors go with it, else its socket. `false` if it could not.
    fn deliver(&mut self, token: u64, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> bool {
        let Some(client) = self.clients.get_mut(&token) else {
            return false;
        };
        if client.via_ring
            && fds.is_empty()
            && let Some(rings) = client.rings.as_mut()
        {
            // A full answer ring (or a corrupt one): the client does not read its answers.
            return matches!(rings.answer(|p| push_frame(p, bytes, &Futex)), Ok(true));
        }
        client.sock.send(bytes, fds).is_ok()
    }

    /// The uid of the client behind `token`.
    fn uid_of(&self, token: u64) -> u32 {
        self.clients.get(&token).map_or(u32::MAX, |c| c.creds.uid)
    }

    fn domain_of(&self, token: u64) -> Result<DomainId, Failure> {
        self.clients
            .get(&token)
            .and_then(|c| c.domain)
            .ok_or_else(|| fail(ErrorKind::Protocol, "no domain"))
    }

    /// Up to `count` whole unzeroed buffers of `len` bytes, stopping at the first limit
    /// (refused only if not even one could be made).
    fn alloc_many(&mut self, domain: DomainId, len: u64, count: u32) -> Result<Answer, Failure> {
        if len <= self.config.slab_object_max {
            return Err(fail(
                ErrorKind::Protocol,
                format!(
                    "alloc_many makes whole buffers, of more than {} bytes",
                    self.config.slab_object_max
                ),
            ));
        }
        let mut buffers = Vec::new();
        for _ in 0..count.min(ops::MAX_ALLOC_MANY) {
            if self.ledger.aggregate_count(domain) >= self.config.max_aggregates {
                break;
            }
            match self.alloc(domain, len, false) {
                Ok(Answer::Now(Response::Allocated { agg, piece }, _)) => {
                    buffers.push(ops::AllocatedBuffer { agg, piece });
                }
                Ok(Answer::Now(Response::Agg { agg }, _)) => {
                    // Not a buffer of its own after all (shared by nobody, but not whole):
                    // of no use here.
                    if let Ok(release) = self.ledger.decref(domain, AggId(agg)) {
                        self.released(&release);
                    }
                    break;
                }
                Err(e) if buffers.is_empty() => return Err(e),
                _ => break,
            }
        }
        if buffers.is_empty() {
            return Err(fail(
                ErrorKind::Unavailable,
                "no whole buffer could be made for this domain",
            ));
        }
        now(Response::AllocatedMany { buffers })
    }

    /// An allocation: a slab piece when small, else a whole buffer of its own (recycled from
    /// this domain's free list when one fits, zeroed only if `zero`: an unzeroed one holds
    /// only bytes this domain could already see).
    fn alloc(&mut self, domain: DomainId, len: u64, zero: bool) -> Result<Answer, Failure> {
        if len > 0 && len <= self.config.slab_object_max && len <= self.config.slab_len {
            let agg = self.slab_alloc(domain, len)?;
            // Where it is, so that the library reads and writes it (and sends it inline)
            // without asking; never by reference (the slab is the unit of exposure).
            let piece = self
                .ledger
                .chunks(domain, agg)
                .ok()
                .and_then(|c| c.chunks().first().copied())
                .and_then(|c| {
                    let slot = self.store.slot_of(c.buffer)?;
                    Some(WirePiece {
                        buffer: c.buffer.0,
                        slot,
                        offset: c.offset,
                        len: c.len,
                    })
                });
            return now(match piece {
                Some(piece) => Response::AllocatedPiece { agg: agg.0, piece },
                None => Response::Agg { agg: agg.0 },
            });
        }
        if len > self.config.max_buffer {
            return Err(CoreError::TooLarge {
                len,
                max: self.config.max_buffer,
            }
            .into());
        }
        let allocation = self.ledger.alloc(domain, len)?;
        if let Some(b) = allocation.buffer
            && let Err(e) = self.store.provide(b.id, b.len, domain, zero)
        {
            let release = self.ledger.decref(domain, allocation.agg)?;
            self.released(&release);
            return Err(store_failure(&e));
        }
        // A whole buffer of its own may travel on direct rings: say where it is.
        if let Some(info) = self.ledger.direct_info(domain, allocation.agg)
            && let Some(slot) = self.store.slot_of(info.buffer)
        {
            return now(Response::Allocated {
                agg: allocation.agg.0,
                piece: WirePiece {
                    buffer: info.buffer.0,
                    slot,
                    offset: 0,
                    len: info.len,
                },
            });
        }
        now(Response::Agg {
            agg: allocation.agg.0,
        })
    }

    fn dispatch(&mut self, token: u64, request: Request) -> Result<Answer, Failure> {
        let domain = self.domain_of(token)?;
        if matches!(
            request,
            Request::Alloc { .. }
                | Request::AllocUnzeroed { .. }
                | Request::AllocMany { .. }
                | Request::Select { .. }
                | Request::Concat { .. }
        ) && self.ledger.aggregate_count(domain) >= self.config.max_aggregates
        {
            return Err(fail(
                ErrorKind::Unavailable,
                format!(
                    "domain {domain} holds {} aggregates, the most allowed; drop some first",
                    self.config.max_aggregates
                ),
            ));
        }
        match request {
            Request::Alloc { len } => self.alloc(domain, len, true),
            Request::AllocUnzeroed { len } => self.alloc(domain, len, false),
            Request::AllocMany { len, count } => self.alloc_many(domain, len, count),
            Request::Incref { agg } => {
                self.ledger.incref(domain, AggId(agg))?;
                now(Response::Done)
            }
            Request::Decref { agg } => {
                let release = self.ledger.decref(domain, AggId(agg))?;
                self.released(&release);
                now(Response::Done)
            }
            Request::Info { agg } => now(Response::Info {
                len: self.ledger.len(domain, AggId(agg))?,
                rights: self.ledger.rights(domain, AggId(agg))?.into(),
            }),
            Request::Pieces {
                agg,
                access,
                offset,
                max,
            } => {
                let take = (max as usize).clamp(1, MAX_PIECES);
                let (page, more) =
                    self.ledger
                        .pieces_page(domain, AggId(agg), access.into(), offset, take)?;
                let mut pieces = Vec::with_capacity(page.len());
                for c in &page {
                    let slot = self.store.slot_of(c.buffer).ok_or_else(|| {
                        fail(
                            ErrorKind::Unavailable,
                            format!("{} has no memory", c.buffer),
                        )
                    })?;
                    pieces.push(WirePiece {
                        buffer: c.buffer.0,
                        slot,
                        offset: c.offset,
                        len: c.len,
                    });
                }
                now(Response::Pieces { more, pieces })
            }
            Request::Map { buffers } => {
                if buffers.len() > MAX_MAP {
                    return Err(fail(ErrorKind::Protocol, "too many buffers in one map"));
                }
                let mut granted = Vec::with_capacity(buffers.len());
                let mut slots = Vec::with_capacity(buffers.len());
                for m in buffers {
                    let buffer = BufferId(m.buffer);
                    let access: Access = m.access.into();
                    let permission = self.ledger.mapping(domain, buffer);
                    let slot = self.store.slot_of(buffer);
                    let Some(slot) = slot.filter(|_| permission >= access.needs()) else {
                        return Err(CoreError::Fault {
                            domain,
                            buffer,
                            needed: access.needs(),
                        }
                        .into());
                    };
                    let write = access == Access::Write;
                    // Sealed memory cannot be mapped writable by anyone (the seal may also
                    // come from a transfer that failed after sealing, say because its
                    // receiver died meanwhile).
                    if write && (self.ledger.is_sealed(buffer) || self.store.is_sealed(slot)) {
                        return Err(CoreError::Fault {
                            domain,
                            buffer,
                            needed: Rights::ReadWrite,
                        }
                        .into());
                    }
                    let len = self.store.slot(slot).map_or(0, |s| s.len());
                    granted.push(MappedBuffer {
                        buffer: m.buffer,
                        slot,
                        len,
                        access: m.access,
                    });
                    slots.push((slot, write));
                }
                Ok(Answer::Now(Response::Mapped { buffers: granted }, slots))
            }
            Request::Concat { first, second } => now(Response::Agg {
                agg: self.ledger.concat(domain, AggId(first), AggId(second))?.0,
            }),
            Request::Select { agg, offset, len } => now(Response::Agg {
                agg: self.ledger.select(domain, AggId(agg), offset, len)?.0,
            }),
            Request::FindRelated {
                agg,
                min_rights,
                after,
            } => {
                let mut found: Vec<u64> = self
                    .ledger
                    .find_related(domain, AggId(agg), min_rights.into())?
                    .into_iter()
                    .map(|a| a.0)
                    .filter(|a| *a > after)
                    .collect();
                found.sort_unstable();
                let more = found.len() > MAX_AGGS;
                found.truncate(MAX_AGGS);
                now(Response::Aggs { aggs: found, more })
            }
            Request::Downgrade { agg, rights } => {
                self.ledger.downgrade(domain, AggId(agg), rights.into())?;
                now(Response::Done)
            }
            Request::Transfer {
                agg,
                dest,
                mode,
                flags,
                ticketed,
                revoked,
                seq,
            } => {
                let flags = TransferFlags::from_bits(flags).map_err(|bits| {
                    fail(
                        ErrorKind::Protocol,
                        format!("unknown transfer flag bits {bits:#x}"),
                    )
                })?;
                let dest = DomainId::from_bits(dest);
                let mut request =
                    TransferRequest::new(domain, AggId(agg), dest, mode.into(), flags);
                if ticketed {
                    request.delivery = Delivery::Ticketed;
                }
                if dest.pool != self.config.pool {
                    return self.export_transfer(token, request);
                }
                let mine = self.ledger.queued_from(dest, domain);
                if mine >= self.config.max_sender_pending {
                    return Err(fail(
                        ErrorKind::OverQuota,
                        format!(
                            "domain {domain} has {mine} transfers waiting for domain {dest}, \
                             the most one sender may have queued for one receiver; wait until \
                             {dest} receives some"
                        ),
                    ));
                }
                let waiting = self.ledger.pending_count(dest);
                if waiting >= self.config.max_pending
                    || self.ledger.aggregate_count(dest) >= self.config.max_aggregates
                {
                    return Err(fail(
                        ErrorKind::Unavailable,
                        format!(
                            "domain {dest} is not keeping up: {waiting} transfers wait for it; \
                             try again once it has received some"
                        ),
                    ));
                }
                // A sequence number orders a queued transfer among the records of a direct
                // ring from this sender to this receiver; without a ring it means nothing.
                let seq = seq.filter(|_| !ticketed && self.direct.contains_key(&(domain, dest)));
                if let Some(c) = self.clients.get_mut(&token) {
                    c.transfer_seq = seq;
                }
                self.transfer(token, request, revoked)
            }
            Request::Revoked => Err(fail(ErrorKind::Protocol, "nothing to revoke")),
            Request::OpenRings { .. } => Err(fail(ErrorKind::Protocol, "rings open only once")),
            Request::Receive { source, timeout_ms } => {
                let source = source.map(DomainId::from_bits);
                self.receive_or_wait(token, domain, Wait::Queued(source), timeout_ms)
            }
            Request::AttachRecv {
                source,
                ticket,
                timeout_ms,
            } => self.receive_or_wait(
                token,
                domain,
                Wait::Ticket(DomainId::from_bits(source), Ticket(ticket)),
                timeout_ms,
            ),
            Request::Trust { peer } => {
                let peer = DomainId::from_bits(peer);
                // Transfers from other pools are copies whatever the trust: nothing to record.
                if peer.pool == self.config.pool {
                    self.ledger.trust(domain, peer)?;
                }
                now(Response::Done)
            }
            Request::Register { name } => {
                ops::check_name(&name).map_err(|m| fail(ErrorKind::Protocol, m))?;
                if name.contains('@') {
                    return Err(fail(
                        ErrorKind::Protocol,
                        format!(
                            "the name {name:?} contains '@', which marks a user in lookups \
                             (NAME@UID); register it without"
                        ),
                    ));
                }
                let uid = self.uid_of(token);
                let held = self.names.values().filter(|d| **d == domain).count();
                match self.names.get(&(uid, name.clone())) {
                    None if held >= self.config.max_names => Err(fail(
                        ErrorKind::Unavailable,
                        format!("domain {domain} already holds {held} names, the most allowed"),
                    )),
                    Some(holder) if *holder != domain => Err(fail(
                        ErrorKind::NameTaken,
                        format!("the name {name:?} is taken by domain {holder}"),
                    )),
                    _ => {
                        self.names.insert((uid, name), domain);
                        now(Response::Done)
                    }
                }
            }
            Request::Lookup { name } => {
                // NAME@UID: that user's name. NAME: the caller's own user's, else the block
                // manager's (its services), else root's — never another user's.
                let uid = self.uid_of(token);
                let explicit = name
                    .rsplit_once('@')
                    .and_then(|(base, owner)| Some((base, owner.parse::<u32>().ok()?)));
                let found = match explicit {
                    Some((base, owner)) => self.names.get(&(owner, base.to_string())),
                    None => [uid, self.own_uid, 0]
                        .iter()
                        .find_map(|u| self.names.get(&(*u, name.clone()))),
                };
                match found {
                    Some(d) => now(Response::Domain {
                        domain: d.to_bits(),
                    }),
                    None => Err(fail(
                        ErrorKind::UnknownName,
                        format!(
                            "no domain of your user (or of the block manager's) is registered \
                             as {name:?}; is its process running? (NAME@UID finds another \
                             user's)"
                        ),
                    )),
                }
            }
            Request::Status => now(Response::Status(Box::new(self.status()))),
            Request::OpenDirect { to } => self.open_direct(token, domain, DomainId::from_bits(to)),
            Request::AttachDirect { from } => {
                let from = DomainId::from_bits(from);
                let Some(pair) = self.direct.get(&(from, domain)).filter(|p| p.announced) else {
                    return Err(fail(
                        ErrorKind::UnknownDomain,
                        format!("no direct ring from {from} waits for domain {domain}"),
                    ));
                };
                let fd = pair
                    .memfd
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| fail(ErrorKind::Unavailable, e.to_string()))?;
                let m = Message::Response(Response::DirectAttached {
                    capacity: DIRECT_CAPACITY,
                });
                if pair.sender_gone {
                    self.direct.remove(&(from, domain));
                }
                self.send(token, &m, &[fd.as_fd()]);
                Ok(Answer::Later)
            }
            Request::PoolInfo => now(Response::PoolInfo {
                pool: self.config.pool.0,
                kind: match self.config.kind {
                    cosh_pool::PoolKind::Host => ops::WirePoolKind::Host,
                    cosh_pool::PoolKind::Nc => ops::WirePoolKind::Nc,
                    cosh_pool::PoolKind::Device => ops::WirePoolKind::Device,
                },
                eviction: self.config.nc_eviction,
            }),
            Request::Lease => {
                let first = self.ledger.lease_ids(domain, LEASE)?;
                now(Response::Leased {
                    first,
                    count: LEASE,
                })
            }
            Request::Direct { .. }
            | Request::Wake { .. }
            | Request::Release { .. }
            | Request::Inline { .. }
            | Request::Land { .. } => Err(fail(
                ErrorKind::Protocol,
                "direct-ring records come through the request ring",
            )),
            Request::SmallTransfers => now(Response::SmallTransfers(self.small)),
            Request::Shutdown => {
                let uid = self.clients.get(&token).map_or(u32::MAX, |c| c.creds.uid);
                let own = rustix::process::getuid().as_raw();
                if uid != own && uid != 0 {
                    return Err(fail(
                        ErrorKind::InsufficientRights,
                        format!("only uid {own} or root may stop this block manager"),
                    ));
                }
                self.stop = true;
                now(Response::Done)
            }
        }
    }

    /// A small allocation: the next free bytes of the domain's slab, or a new slab.
    fn slab_alloc(&mut self, domain: DomainId, len: u64) -> Result<AggId, Failure> {
        /// Allocations in a slab start on cache-line boundaries.
        const ALIGN: u64 = 64;
        let size = len.div_ceil(ALIGN) * ALIGN;
        if let Some((buffer, next)) = self.slabs.get(&domain).copied()
            && next + size <= self.config.slab_len
            && let Some(agg) = self.ledger.alloc_in(domain, buffer, next, len)?
        {
            self.slabs.insert(domain, (buffer, next + size));
            return Ok(agg);
        }
        let allocation = self
            .ledger
            .alloc_with_capacity(domain, len, self.config.slab_len)?;
        if let Some(b) = allocation.buffer {
            if let Err(e) = self.store.provide(b.id, b.len, domain, true) {
                let release = self.ledger.decref(domain, allocation.agg)?;
                self.released(&release);
                return Err(store_failure(&e));
            }
            self.slabs.insert(domain, (b.id, size));
        }
        Ok(allocation.agg)
    }

    fn receive_or_wait(
        &mut self,
        token: u64,
        domain: DomainId,
        wait: Wait,
        timeout_ms: Option<u64>,
    ) -> Result<Answer, Failure> {
        let mut tried = self.try_receive(domain, &wait);
        if tried.as_ref().is_err_and(may_still_come) && !self.in_links.is_empty() {
            // What a finished transfer from another pool sent may still be in a link.
            self.drain_links();
            tried = self.try_receive(domain, &wait);
        }
        match tried {
            Ok(r) => {
                self.announce_rings(domain);
                now(self.received(domain, &r))
            }
            Err(e)
                if may_still_come(&e)
                    && matches!(wait, Wait::Queued(_))
                    && self
                        .clients
                        .get(&token)
                        .is_some_and(|c| !c.direct_notices.is_empty()) =>
            {
                // A direct ring to announce first: the receiver looks there, then asks again.
                now(Response::Woken)
            }
            Err(e)
                if may_still_come(&e)
                    && wait.source().is_some_and(|s| {
                        s.pool == self.config.pool && !self.ledger.has_domain(s)
                    }) =>
            {
                let source = wait.source().map(|s| s.to_string()).unwrap_or_default();
                Err(fail(
                    ErrorKind::UnknownDomain,
                    format!("domain {source} disconnected; nothing more will come from it"),
                ))
            }
            Err(e) if may_still_come(&e) && self.import_pending(domain, &wait) => {
                // A transfer from another pool was accepted (its sender may have been answered)
                // and is being copied: a receive that started after the transfer returned sees
                // it, even one that does not wait.
                let deadline = Instant::now()
                    .checked_add(Duration::from_millis(timeout_ms.unwrap_or(u64::MAX / 2)));
                if let Some(c) = self.clients.get_mut(&token) {
                    c.phase = Phase::Waiting(wait, deadline);
                }
                Ok(Answer::Later)
            }
            Err(e)
                if may_still_come(&e)
                    && wait
                        .source()
                        .is_some_and(|s| self.gone_remote.0.contains(&s)) =>
            {
                let source = wait.source().map(|s| s.to_string()).unwrap_or_default();
                Err(fail(
                    ErrorKind::UnknownDomain,
                    format!(
                        "domain {source} of another pool disconnected; nothing more will come \
                         from it"
                    ),
                ))
            }
            Err(e) if may_still_come(&e) && timeout_ms != Some(0) => {
                let deadline =
                    timeout_ms.and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)));
                if let Some(c) = self.clients.get_mut(&token) {
                    c.phase = Phase::Waiting(wait, deadline);
                }
                // Idle from now on: a good moment to drop stale mappings.
                self.flush_forget(token);
                Ok(Answer::Later)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The answer to a receive, with the transfer's sequence number if it has one.
    fn received(&mut self, domain: DomainId, r: &Received) -> Response {
        let seq = self.seqs.remove(&(domain, r.agg)).map(|(_, s)| s);
        // A whole buffer: say where, and whether it may travel on direct rings.
        let whole = self
            .ledger
            .whole_buffer(domain, r.agg)
            .and_then(|(buffer, len)| Some((buffer, len, self.store.slot_of(buffer)?)));
        let piece = whole.map(|(buffer, len, slot)| WirePiece {
            buffer: buffer.0,
            slot,
            offset: 0,
            len,
        });
        let mappers = piece
            .and_then(|_| self.ledger.direct_info(domain, r.agg))
            .filter(|info| info.mappers.len() <= ops::MAX_MAPPERS)
            .map(|info| info.mappers.iter().map(|d| d.to_bits()).collect());
        Response::Received {
            agg: r.agg.0,
            source: r.source.to_bits(),
            mode: r.mode.into(),
            strength: r.strength.into(),
            ticket: r.ticket.map(|t| t.0),
            seq,
            piece,
            mappers,
        }
    }

    fn try_receive(&mut self, domain: DomainId, wait: &Wait) -> Result<Received, CoreError> {
        match wait {
            Wait::Queued(source) => self.ledger.receive(domain, *source),
            Wait::Ticket(source, ticket) => self.ledger.attach_recv(domain, *source, *ticket),
        }
    }

    /// Answers a parked receiver if its transfer arrived.
    fn wake(&mut self, domain: DomainId) {
        let Some(&token) = self.by_domain.get(&domain) else {
            return;
        };
        let Some(Phase::Waiting(wait, _)) = self.clients.get(&token).map(|c| &c.phase) else {
            return;
        };
        let wait = match wait {
            Wait::Queued(s) => Wait::Queued(*s),
            Wait::Ticket(s, t) => Wait::Ticket(*s, *t),
        };
        match self.try_receive(domain, &wait) {
            Ok(r) => {
                if let Some(c) = self.clients.get_mut(&token) {
                    c.phase = Phase::Idle;
                }
                self.announce_rings(domain);
                let response = self.received(domain, &r);
                self.answer(token, now(response));
            }
            Err(e) if may_still_come(&e) => {}
            Err(e) => {
                if let Some(c) = self.clients.get_mut(&token) {
                    c.phase = Phase::Idle;
                }
                self.answer(token, Err(e.into()));
            }
        }
    }

    fn expire_waits(&mut self) {
        let now_ = Instant::now();
        let expired: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| match &c.phase {
                Phase::Waiting(wait, Some(d)) => {
                    *d <= now_ && !c.domain.is_some_and(|dom| self.import_pending(dom, wait))
                }
                _ => false,
            })
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            let Some(c) = self.clients.get_mut(&token) else {
                continue;
            };
            let Phase::Waiting(wait, _) = std::mem::replace(&mut c.phase, Phase::Idle) else {
                continue;
            };
            let Some(domain) = c.domain else {
                continue;
            };
            // The error a receive that does not wait would give now.
            let e = match self.try_receive(domain, &wait) {
                Ok(r) => {
                    let response = self.received(domain, &r);
                    self.answer(token, now(response));
                    continue;
                }
                Err(e) => e,
            };
            self.answer(token, Err(e.into()));
        }
    }

    fn transfer(
        &mut self,
        token: u64,
        request: TransferRequest,
        revoked: bool,
    ) -> Result<Answer, Failure> {
        let plan = self.ledger.plan_transfer(request.clone())?;
        if plan.seals().is_empty() {
            return self.finish_transfer(token, request, 0, 0);
        }
        let mut seals = Vec::new();
        for b in plan.seals() {
            let slot = self
                .store
                .slot_of(*b)
                .ok_or_else(|| fail(ErrorKind::Unavailable, format!("{b} has no memory")))?;
            seals.push((*b, slot));
        }
        let sender = request.sender;
        let revoke: Vec<u64> = seals
            .iter()
            .map(|(_, s)| *s)
            .filter(|s| !revoked && self.store.exposed_to(*s, sender))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let pending = PendingTransfer {
            request,
            seals,
            refused: BTreeSet::new(),
        };
        if revoke.is_empty() {
            self.start_seals(token, pending);
            return Ok(Answer::Later);
        }
        if let Some(c) = self.clients.get_mut(&token) {
            c.phase = Phase::Revoking(pending);
        }
        let pages: Vec<&[u64]> = revoke.chunks(MAX_REVOKE).collect();
        for (i, page) in pages.iter().enumerate() {
            let m = Message::Response(Response::Revoke {
                slots: page.to_vec(),
                more: i + 1 < pages.len(),
            });
            self.send(token, &m, &[]);
        }
        Ok(Answer::Later)
    }

    fn start_seals(&mut self, token: u64, pending: PendingTransfer) {
        let mut slots = Vec::new();
        for (_, slot) in &pending.seals {
            if let Some(memfd) = self.store.prepare_seal(*slot) {
                slots.push((*slot, memfd));
            }
        }
        if let Some(c) = self.clients.get_mut(&token) {
            c.phase = Phase::Sealing(pending);
        }
        if !self.sealer.submit(Job {
            client: token,
            slots,
        }) {
            self.stop = true;
        }
    }

    fn seals_done(&mut self, token: u64, sealed: &[SlotId], refused: &[SlotId]) {
        for s in sealed {
            self.store.mark_sealed(*s);
        }
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        let Phase::Sealing(mut pending) = std::mem::replace(&mut c.phase, Phase::Idle) else {
            return;
        };
        pending.refused.extend(refused.iter().copied());
        let mut request = pending.request;
        for (b, s) in &pending.seals {
            if pending.refused.contains(s) {
                request.force_copy.insert(*b);
            }
        }
        let answer = self.finish_transfer(token, request, sealed.len(), refused.len());
        self.answer(token, answer);
    }

    /// Plans again (forcing a copy of whatever could not be sealed), commits and carries the
    /// transfer out.
    fn finish_transfer(
        &mut self,
        token: u64,
        mut request: TransferRequest,
        sealed: usize,
        refused: usize,
    ) -> Result<Answer, Failure> {
        let plan = loop {
            let plan = self.ledger.plan_transfer(request.clone())?;
            let unsealed: Vec<BufferId> = plan
                .seals()
                .iter()
                .copied()
                .filter(|b| {
                    !self
                        .store
                        .slot_of(*b)
                        .is_some_and(|s| self.store.is_sealed(s))
                })
                .collect();
            if unsealed.is_empty() {
                break plan;
            }
            request.force_copy.extend(unsealed);
        };
        // Refuse before committing anything: a copy this large cannot be made.
        if plan.copied_bytes() > self.config.max_buffer {
            return Err(CoreError::TooLarge {
                len: plan.copied_bytes(),
                max: self.config.max_buffer,
            }
            .into());
        }
        let receiver = request.receiver;
        let mode = request.mode;
        let weak = plan.effective_strength() == Strength::Weak;
        let referenced = plan
            .pieces()
            .iter()
            .filter(|p| p.route == Route::Reference)
            .count();
        let referenced_bytes: u64 = plan
            .pieces()
            .iter()
            .filter(|p| p.route == Route::Reference)
            .map(|p| p.source.len)
            .sum();
        // Memory for the copies first, so that a full pool fails the transfer before the
        // ledger commits it. The commit makes one buffer per run of copied pieces.
        let runs = plan.copy_runs();
        // The copies count against the sender's quota: a sender cannot fill its receiver's.
        // Copies that will be sealed take fresh slots: a recycled one may still be mapped
        // writable by the receiver, and the seal would be refused.
        let mut reserved = Vec::with_capacity(runs.len());
        for run in &runs {
            match self
                .store
                .reserve_charged(run.len, receiver, request.sender, false, !run.seal)
            {
                Ok(slot) => reserved.push(slot),
                Err(e) => {
                    for slot in reserved {
                        self.store.unreserve(slot, receiver);
                    }
                    // Copies chosen only because they cost less than a seal: seal instead.
                    let cost_copies = plan
                        .pieces()
                        .iter()
                        .any(|p| p.route == Route::Copy(CopyReason::SealCost));
                    if cost_copies {
                        request.no_cost_copies = true;
                        return self.transfer(token, request, false);
                    }
                    return Err(store_failure(&e));
                }
            }
        }
        let queued = request.delivery == Delivery::Queued;
        let committed = match self.ledger.commit(plan) {
            Ok(c) => c,
            Err(e) => {
                for slot in reserved {
                    self.store.unreserve(slot, receiver);
                }
                return Err(e.into());
            }
        };
        let seq = self
            .clients
            .get_mut(&token)
            .and_then(|c| c.transfer_seq.take());
        if let Some(seq) = seq.filter(|_| queued) {
            self.seqs
                .insert((receiver, committed.receiver_agg), (request.sender, seq));
        }
        let lengths: Vec<u64> = committed.new_buffers.iter().map(|nb| nb.len).collect();
        let runs: Vec<u64> = runs.iter().map(|r| r.len).collect();
        if lengths != runs {
            return Err(fail(
                ErrorKind::Unavailable,
                format!("internal error: planned copies of {runs:?} bytes, committed {lengths:?}"),
            ));
        }
        for (nb, slot) in committed.new_buffers.iter().zip(reserved) {
            self.store.bind(nb.id, slot);
        }
        let mut copied_bytes = 0;
        for op in &committed.copies {
            let (Some(from), Some(to)) = (
                self.store.slot_of(op.from.buffer),
                self.store.slot_of(op.to.buffer),
            ) else {
                return Err(fail(
                    ErrorKind::Unavailable,
                    "a copied buffer has no memory",
                ));
            };
            self.store
                .copy((from, op.from.offset), (to, op.to.offset), op.from.len)
                .map_err(|e| fail(ErrorKind::Unavailable, e))?;
            copied_bytes += op.from.len;
        }
        let (mut fresh_seals, mut refused) = (0, refused);
        for nb in committed.new_buffers.iter().filter(|nb| nb.seal) {
            // A fresh copy in a fresh slot nobody else has seen: no pipe can pin its pages and
            // nobody maps it writable, so the seal is quick and safe on the main loop. (The
            // transfer is committed: a refusal could only be counted, not undone.)
            if let Some(slot) = self.store.slot_of(nb.id)
                && let Some(memfd) = self.store.prepare_seal(slot)
            {
                if memfd.seal_write().is_ok() {
                    self.store.mark_sealed(slot);
                    fresh_seals += 1;
                } else {
                    refused += 1;
                }
            }
        }
        match mode {
            Mode::Move => self.counts.moves += 1,
            Mode::Share => self.counts.shares += 1,
            Mode::Copy => self.counts.copies += 1,
        }
        if weak {
            self.counts.weak += 1;
        }
        self.counts.by_descriptor += referenced as u64;
        self.counts.by_copy += committed.copies.len() as u64;
        self.counts.copied_bytes += copied_bytes;
        self.counts.by_seal += (sealed + fresh_seals) as u64;
        self.counts.refused_seals += refused as u64;
        let report = TransferReport {
            referenced_bytes,
            copied_bytes,
            sealed_buffers: u32::try_from(sealed + fresh_seals).unwrap_or(u32::MAX),
            refused_seals: u32::try_from(refused).unwrap_or(u32::MAX),
            weak,
        };
        let response = Response::Transferred {
            ticket: committed.ticket.map(|t| t.0),
            report,
        };
        // The receiver first: its latency is the transfer's; the sender only learns that it
        // is done.
        self.wake(receiver);
        self.answer(token, now(response));
        Ok(Answer::Later)
    }

    /// Frees or recycles the slots of buffers the ledger released.
    fn released(&mut self, release: &Release) {
        for b in &release.freed {
            let alive = |d: DomainId| self.by_domain.contains_key(&d);
            if let Some((slot, tell)) = self.store.release(*b, alive) {
                self.tell_forget(slot, &tell);
            }
        }
    }

    fn tell_forget(&mut self, slot: SlotId, domains: &[DomainId]) {
        let mut idle = Vec::new();
        for d in domains {
            if let Some(&token) = self.by_domain.get(d)
                && let Some(c) = self.clients.get_mut(&token)
            {
                c.forget.push(slot);
                if matches!(c.phase, Phase::Waiting(..)) {
                    idle.push(token);
                }
            }
        }
        // A client parked in a receive is idle: let it drop its mappings now rather than on
        // the critical path of the transfer that wakes it.
        for token in idle {
            self.flush_forget(token);
        }
    }

    /// Sends a client its pending forget notices; a client that cannot take them is
    /// disconnected.
    fn flush_forget(&mut self, token: u64) {
        let mut ok = true;
        while ok {
            let Some(client) = self.clients.get_mut(&token) else {
                return;
            };
            if client.forget.is_empty() {
                break;
            }
            let n = client.forget.len().min(MAX_REVOKE);
            let slots: Vec<u64> = client.forget.drain(..n).collect();
            let Ok(bytes) = encode(&Message::Response(Response::Forget {
                slots: slots.clone(),
            })) else {
                ok = false;
                break;
            };
            // Notices are not urgent (slot ids are never reused, so a late forget confuses
            // nothing): on a ring, leave room for the largest answer and send the rest later.
            if let Some(free) = self.answer_ring_room(token)
                && free
                    < cosh_ring::frames::records_for(bytes.len())
                        + cosh_ring::frames::records_for(MAX_FRAME)
            {
                if let Some(client) = self.clients.get_mut(&token) {
                    client.forget.splice(0..0, slots);
                }
                return;
            }
            ok = self.deliver(token, &bytes, &[]);
        }
        if !ok {
            self.disconnect(token);
        }
    }

    /// Sends a client its direct-ring notices (few: one per peer).
    fn flush_direct_notices(&mut self, token: u64) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        let notices = std::mem::take(&mut client.direct_notices);
        for (peer, opened) in notices {
            let r = if opened {
                Response::DirectInbound {
                    from: peer.to_bits(),
                }
            } else {
                Response::DirectClosed {
                    peer: peer.to_bits(),
                }
            };
            let ok = encode(&Message::Response(r))
                .ok()
                .is_some_and(|bytes| self.deliver(token, &bytes, &[]));
            if !ok {
                return self.disconnect(token);
            }
        }
    }

    /// Free records in the client's answer ring, if its answers go there now.
    fn answer_ring_room(&mut self, token: u64) -> Option<usize> {
        let client = self.clients.get_mut(&token)?;
        if !client.via_ring {
            return None;
        }
        let rings = client.rings.as_mut()?;
        let capacity = rings.capacity;
        // A corrupt ring: report no room; delivering the answer will cut the client off.
        Some(
            rings
                .answer(|p| p.pending())
                .map_or(0, |used| (capacity - used) as usize),
        )
    }

    fn disconnect(&mut self, token: u64) {
        // Transfers it made on direct rings happened: the ledger learns of them first.
        if self.loggers.contains(&token)
            && let Some(c) = self.clients.get_mut(&token)
        {
            c.held = None;
            c.dying = true;
            self.settle();
            self.loggers.remove(&token);
        }
        let Some(client) = self.clients.remove(&token) else {
            return;
        };
        let Some(domain) = client.domain else {
            return;
        };
        self.seqs.retain(|(to, _), _| *to != domain);
        let pairs: Vec<(DomainId, DomainId)> = self
            .direct
            .keys()
            .filter(|(s, r)| *s == domain || *r == domain)
            .copied()
            .collect();
        for (s, r) in pairs {
            let peer = if s == domain { r } else { s };
            let Some(&t) = self.by_domain.get(&peer) else {
                self.direct.remove(&(s, r));
                continue;
            };
            if s == domain {
                // The receiver may still read what the sender left: keep the ring until it
                // attaches, announcing it now if it was not yet.
                let Some(pair) = self.direct.get_mut(&(s, r)) else {
                    continue;
                };
                pair.sender_gone = true;
                if !std::mem::replace(&mut pair.announced, true)
                    && let Some(c) = self.clients.get_mut(&t)
                {
                    c.direct_notices.push((domain, true));
                }
            } else {
                self.direct.remove(&(s, r));
            }
            if let Some(c) = self.clients.get_mut(&t) {
                c.direct_notices.push((domain, false));
            }
            self.end_wait(peer);
        }
        self.by_domain.remove(&domain);
        self.slabs.remove(&domain);
        self.names.retain(|_, d| *d != domain);
        self.tell_links_gone(domain);
        if let Ok(release) = self.ledger.remove_domain(domain) {
            self.released(&release);
        }
        let alive = |d: DomainId| self.by_domain.contains_key(&d);
        for (slot, tell) in self.store.remove_domain(domain, alive) {
            self.tell_forget(slot, &tell);
        }
        // Receivers waiting on this domain learn it is gone.
        let waiting: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                matches!(c.phase,
                    Phase::Waiting(Wait::Queued(Some(s)), _) | Phase::Waiting(Wait::Ticket(s, _), _)
                    if s == domain)
            })
            .map(|(t, _)| *t)
            .collect();
        for t in waiting {
            let Some(d) = self.clients.get(&t).and_then(|c| c.domain) else {
                continue;
            };
            self.wake(d);
            if let Some(c) = self.clients.get_mut(&t)
                && matches!(c.phase, Phase::Waiting(..))
            {
                c.phase = Phase::Idle;
                self.answer(
                    t,
                    Err(fail(
                        ErrorKind::UnknownDomain,
                        format!("domain {domain} disconnected while you waited for it"),
                    )),
                );
            }
        }
    }

    fn status(&self) -> Status {
        let mut domains = Vec::new();
        let mut per_domain: BTreeMap<DomainId, (u64, BTreeSet<BufferId>)> = BTreeMap::new();
        for (d, agg, _) in self.ledger.aggregates() {
            let entry = per_domain.entry(d).or_default();
            entry.0 += 1;
            if let Ok(chunks) = self.ledger.chunks(d, agg) {
                entry.1.extend(chunks.buffers());
            }
        }
        let mut bytes_in_use = 0;
        let mut buffers = 0;
        for b in self.ledger.buffers() {
            buffers += 1;
            bytes_in_use += self.ledger.buffer_len(b).unwrap_or(0);
        }
        for c in self.clients.values() {
            let Some(d) = c.domain else { continue };
            if domains.len() >= MAX_STATUS_DOMAINS {
                break;
            }
            let (aggregates, held) = per_domain.remove(&d).unwrap_or_default();
            let (quota_bytes, quota_buffers) = self.store.charged(d);
            domains.push(DomainStatus {
                quota_bytes,
                quota_buffers,
                domain: d.to_bits(),
                name: c.name.clone(),
                pid: u32::try_from(c.creds.pid).unwrap_or(0),
                uid: c.creds.uid,
                aggregates,
                buffers: held.len() as u64,
                bytes: held
                    .iter()
                    .map(|b| self.ledger.buffer_len(*b).unwrap_or(0))
                    .sum(),
            });
        }
        let stats = self.store.stats();
        Status {
            pool: self.config.pool.0,
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs(),
            domain_count: self.by_domain.len() as u64,
            domains,
            buffers,
            bytes_in_use,
            free_buffers: stats.free_slots,
            free_bytes: stats.free_bytes,
            pool_bytes: self.store.total_bytes(),
            pool_limit: self.config.pool_limit,
            names: self.names.len() as u64,
            transfers: self.counts,
            small: self.small,
            links: self.link_status(),
            dma: self.copier.model().map(|m| ops::DmaStatus {
                setup_us: u64::try_from(m.setup.as_micros()).unwrap_or(u64::MAX),
                bytes_per_second: m.bytes_per_second,
            }),
            limits: ops::Limits {
                domain_bytes: self.config.max_domain_bytes,
                domain_buffers: self.config.max_domain_buffers,
                uid_bytes: self.config.max_uid_bytes,
                uid_buffers: self.config.max_uid_buffers,
                sender_pending: self.config.max_sender_pending as u64,
                receiver_pending: self.config.max_pending as u64,
                uid_connections: self.config.max_uid_connections as u64,
                connections: self.budget.connections as u64,
                buffers: self.budget.slots as u64,
                descriptors: self.budget.limit as u64,
            },
        }
    }
}

/// The copy-versus-reference policy for small transfers and strong shares: as configured,
/// or chosen from what is measured now (40–50 ms here); off in pools that are not
/// coherent, and when the measurement fails.
fn small_transfers(config: &Config) -> ops::SmallTransfers {
    let limit = cosh_proto::ops::MAX_INLINE;
    if config.kind != cosh_pool::PoolKind::Host {
        return ops::SmallTransfers::default();
    }
    let mut policy = if config.inline_max.is_some() && config.share_copy_max.is_some() {
        ops::SmallTransfers::default()
    } else {
        // Nothing measured: status shows zeros, nothing travels inline, shares seal.
        crate::small::measure()
            .map(|m| crate::small::choose(&m, limit))
            .unwrap_or_default()
    };
    if let Some(max) = config.inline_max {
        policy.inline_max = max.min(limit);
        policy.inline_max_weak = max.min(limit);
        policy.fixed = true;
    }
    if let Some(max) = config.share_copy_max {
        policy.share_copy_max = max;
        policy.share_fixed = true;
    }
    policy
}

/// Whether a receive that failed with `e` may succeed later (a transfer or ticket that has
/// not arrived yet).
fn may_still_come(e: &CoreError) -> bool {
    matches!(
        e,
        CoreError::NothingPending { .. } | CoreError::UnknownTicket { .. }
    )
}

/// Cuts `text` to at most `max` bytes at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
