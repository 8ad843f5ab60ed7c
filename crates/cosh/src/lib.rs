//! The Cosh client library: a process connects to its pool's block manager as a *domain* and
//! moves, shares and copies aggregates to other domains with the semantics of Table 1, whether
//! they run in this process, another process or (later) another pool.
//!
//! ```no_run
//! use cosh::{Domain, Mode, TransferFlags};
//!
//! let mut a = Domain::connect("producer")?; // starts a block manager if none runs
//! let mut b = Domain::connect("consumer")?;
//! let agg = a.alloc(1 << 20)?;
//! a.write(agg, 0, b"hello")?;
//! a.transfer(agg, b.id(), Mode::Move, TransferFlags::strong())?;
//! let got = b.receive(Some(a.id()), None)?;
//! assert_eq!(b.read(got.agg, 0, 5)?, b"hello");
//! # Ok::<(), cosh::Error>(())
//! ```
//!
//! Memory is touched through pieces, the maximal contiguous parts of an aggregate:
//! [`Domain::read_pieces`] gives [`ReadPiece`]s, whose bytes are `&[u8]`;
//! [`Domain::write_pieces`] gives [`WritePiece`]s, whose bytes are `&mut [u8]`, and asks for
//! read/write rights. The library maps buffers on first touch and caches the mappings, so a
//! buffer's descriptor crosses the socket once per domain.
//!
//! Requests travel through a pair of shared-memory rings to the block manager (the socket
//! carries only descriptors): a request and its answer take a few microseconds instead of
//! tens. A receive waits by spinning briefly and then sleeping on a futex;
//! [`Domain::set_spins`] and [`Domain::receive_with`] choose busy-polling or blocking instead.
//!
//! Between domains that trust each other ([`Domain::trust`]), weak moves and shares of whole
//! buffers go on a direct ring from sender to receiver, with the block manager off the path
//! (about 2 us one way at any size, busy-polling); the block manager still learns of each one
//! before it answers anybody, so rights stay exact. Nothing changes in the API.

#![forbid(unsafe_code)]

mod connect;
mod direct;
mod inline;
mod nc;
pub mod pattern;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

pub use cosh_core::{
    Access, DomainId, ErrorKind, Mode, PoolId, RelatedPolicy, Rights, Strength, Ticket,
    TransferFlags,
};
use cosh_pool::nc::LineCache;
use cosh_proto::ops::{MAX_MAP, MAX_PIECES, MapRequest, Request, Response, WireAccess, WirePiece};
pub use cosh_proto::ops::{SmallTransfers, Status, TransferReport};
use cosh_proto::{MAX_FRAME, Message, decode, encode};
use cosh_ring::frames::{FrameReader, push_frame};
use cosh_ring::{Consumer, EventBell, Futex, Producer};
use cosh_sys::eventfd::EventFd;
use cosh_sys::mapping::{Mapping, Prefault, ReadOnly, ReadWrite, SharedWords};
use cosh_sys::memfd::Memfd;
use cosh_sys::socket::SeqPacket;

pub use connect::{NcSkip, Options, default_socket};

/// An error of the client library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The block manager refused the request.
    #[error("{message}")]
    Cosh {
        /// The kind.
        kind: ErrorKind,
        /// What happened and what to do.
        message: String,
    },
    /// The block manager could not be reached or started.
    #[error("{0}")]
    Connect(String),
    /// The connection broke or a system call failed.
    #[error("{0}")]
    Sys(#[from] cosh_sys::Error),
    /// The block manager broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// The stable kind of the error: the block manager's, [`ErrorKind::Unavailable`] for
    /// connection failures, [`ErrorKind::Protocol`] for protocol errors.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Cosh { kind, .. } => *kind,
            Error::Connect(_) | Error::Sys(_) => ErrorKind::Unavailable,
            Error::Protocol(_) => ErrorKind::Protocol,
        }
    }
}

/// Spins that never end: a receive that busy-polls its answer ring (one core at 100 % while
/// it waits, no wake-up to pay when the transfer comes).
pub const SPIN_FOREVER: u32 = u32::MAX;

/// How long a wait for an answer spins by default before it sleeps: long enough for a
/// request the block manager answers at once (a few microseconds), even when it must first
/// wake up (tens of microseconds on a busy or virtual machine). Transfers that copy large
/// buffers do not spin at all: their answer takes longer, and the core is better left to
/// whoever has work.
pub const DEFAULT_SPIN_TIME: Duration = Duration::from_micros(50);

/// The number of looks at an answer ring that take about [`DEFAULT_SPIN_TIME`] on this
/// machine, measured once per process (one look costs from about ten nanoseconds to over a
/// hundred, depending on the processor's pause instruction): the default of
/// [`Domain::set_spins`] unless `COSH_SPINS` says otherwise.
pub fn default_spins() -> u32 {
    static SPINS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *SPINS.get_or_init(|| {
        // The fastest of a few short rounds: a round the scheduler interrupted says nothing.
        const LOOKS: u32 = 200;
        let each = (0..8)
            .map(|_| {
                let start = std::time::Instant::now();
                for _ in 0..LOOKS {
                    std::hint::spin_loop();
                }
                start.elapsed().as_nanos() / u128::from(LOOKS)
            })
            .min()
            .unwrap_or(1)
            .max(1);
        let spins = DEFAULT_SPIN_TIME.as_nanos() / each;
        u32::try_from(spins).unwrap_or(u32::MAX).clamp(50, 50_000)
    })
}

/// Transfers that copy at least this many bytes wait for their answer without spinning.
const LONG_COPY: u64 = 256 * 1024;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An aggregate of this domain: a handle, like a file descriptor. It stays valid until its
/// last reference is dropped with [`Domain::decref`] (or the domain disconnects).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Agg(pub u64);

/// A transfer received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The new aggregate.
    pub agg: Agg,
    /// The sender.
    pub source: DomainId,
    /// The mode.
    pub mode: Mode,
    /// The strength the sender asked for (copies are strong).
    pub strength: Strength,
    /// The ticket, for [`Domain::attach_recv`].
    pub ticket: Option<Ticket>,
}

/// Where a piece's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The buffer.
    pub buffer: u64,
    /// The memory slot holding it.
    pub slot: u64,
    /// The first byte in the slot.
    pub offset: u64,
    /// The length.
    pub len: u64,
}

/// A piece of an aggregate, for reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPiece(pub Location);

/// A piece of an aggregate, for reading and writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WritePiece(pub Location);

enum Cached {
    Read(Mapping<ReadOnly>),
    Write(Mapping<ReadWrite>),
    /// A non-coherent pool's memory, through this domain's cache of it.
    NcRead(Box<LineCache<nc::Mapped<ReadOnly>>>),
    NcWrite(Box<LineCache<nc::Mapped<ReadWrite>>>),
}

impl Cached {
    fn bytes(&self) -> &[u8] {
        match self {
            Cached::Read(m) => m.as_slice(),
            Cached::Write(m) => m.as_slice(),
            Cached::NcRead(c) => c.bytes(),
            Cached::NcWrite(c) => c.bytes(),
        }
    }

    fn writable(&self) -> bool {
        matches!(self, Cached::Write(_) | Cached::NcWrite(_))
    }

    fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        match self {
            Cached::Write(m) => Some(m.as_mut_slice()),
            Cached::NcWrite(c) => Some(c.bytes_mut()),
            Cached::Read(_) | Cached::NcRead(_) => None,
        }
    }

    /// Writes this domain's changes back to memory (a non-coherent pool's only).
    fn flush(&mut self) -> Result<()> {
        match self {
            Cached::NcWrite(c) => c.flush().map_err(nc_error),
            _ => Ok(()),
        }
    }

    /// Drops a mapping this domain lets go of, its changes written back first (unless a test
    /// of the emulation says not to: then they are lost, as on hardware).
    fn let_go(mut self, skip: connect::NcSkip) -> Result<()> {
        if !skip.flush {
            self.flush()?;
        }
        Ok(())
    }

    /// A random eviction, if the cache has them on (a non-coherent pool's only).
    fn maybe_evict(&mut self) -> Result<()> {
        match self {
            Cached::NcWrite(c) => c.maybe_evict().map_err(nc_error),
            Cached::NcRead(c) => c.maybe_evict().map_err(nc_error),
            _ => Ok(()),
        }
    }

    /// Reloads what this domain did not change from memory (a non-coherent pool's only).
    fn refresh(&mut self) -> Result<()> {
        match self {
            Cached::NcWrite(c) => c.refresh_clean().map_err(nc_error),
            Cached::NcRead(c) => c.refresh_clean().map_err(nc_error),
            _ => Ok(()),
        }
    }
}

fn nc_error(e: cosh_pool::Error) -> Error {
    Error::Protocol(format!("non-coherent memory: {e}"))
}

/// Mappings at least this large are unmapped on a helper thread when their slot is gone:
/// unmapping costs 0.25–0.5 us a page, milliseconds for large buffers, which a receive that
/// happens to read the notice should not wait for.
const RETIRE_ASIDE: usize = 1 << 20;

/// Starts the thread that drops the mappings [`Domain::retire`] hands it, running on `cpus`
/// where given; `None` if no thread can be started (the mappings are then dropped in place).
fn start_reaper(cpus: Option<rustix::thread::CpuSet>) -> Option<std::sync::mpsc::Sender<Cached>> {
    let (tx, rx) = std::sync::mpsc::channel::<Cached>();
    std::thread::Builder::new()
        .name(REAPER_NAME.into())
        .spawn(move || {
            if let Some(cpus) = cpus {
                cosh_sys::cpu::restore(&cpus);
            }
            rx.into_iter().for_each(drop);
        })
        .ok()
        .map(|_| tx)
}

/// The name of [`start_reaper`]'s thread.
const REAPER_NAME: &str = "cosh-unmap";

/// A connection to a block manager: one protection domain.
pub struct Domain {
    sock: SeqPacket,
    id: DomainId,
    maps: direct::IdMap<u64, Cached>,
    /// For a non-coherent pool: the refresh epoch (see `nc_refresh`) and, per mapped slot,
    /// the epoch its cache was last refreshed in.
    nc_epoch: u64,
    nc_seen: direct::IdMap<u64, u64>,
    /// Every slot of an aggregate, as a full iteration found them (the chunk structure of an
    /// aggregate never changes), so that a strong share can drop writable mappings up front.
    slots_of: direct::IdMap<Agg, Vec<u64>>,
    /// The shared-memory rings to the block manager, once open.
    rings: Option<Rings>,
    /// Direct rings to and from other domains, and what they need to know.
    direct: direct::Direct,
    /// The thread that unmaps large mappings of destroyed slots, once started.
    reaper: Option<std::sync::mpsc::Sender<Cached>>,
    /// The CPUs the connecting thread could run on, which that thread gets: started later,
    /// it would inherit the CPU a program pinned its own thread to since, and compete with
    /// that thread instead of taking the unmapping off its path.
    reaper_cpus: Option<rustix::thread::CpuSet>,
    /// Large mappings of slots that are gone, kept until the request at hand is done: an
    /// unmapping holds the process's memory map, which the mappings that request may still
    /// make (a receive's first map of a new buffer) would wait for.
    retired: Vec<Cached>,
    spins: u32,
    /// How long the next receive in the block manager spins (adapts: see `receive_queued`),
    /// unless spins were set explicitly.
    recv_spins: u32,
    adaptive_receive: bool,
    buf: Vec<u8>,
    socket: PathBuf,
    /// The pool's memory is not coherent: mappings are cached (see `nc.rs`).
    nc: bool,
    /// The pool's kind (from `PoolInfo` at connect).
    kind: cosh_pool::PoolKind,
    /// With `nc`: one random eviction per this many requests and cache (0: none).
    nc_eviction: u32,
    /// Tests of the emulation only: skip the write-back before transfers, or the refresh
    /// after receives.
    nc_skip: connect::NcSkip,
}

/// The rings to the block manager: requests at offset 0, answers after them, in one memfd the
/// block manager made. Positions are kept here, not read back from shared memory.
struct Rings {
    map: Mapping<ReadWrite>,
    capacity: u32,
    request_head: u32,
    /// The block manager's tail of the request ring as last read ([`Producer::seen`]).
    request_seen: u32,
    answer_tail: u32,
    reader: FrameReader,
    bell: EventFd,
}

impl Rings {
    /// Runs `f` on the request ring, attached at the position kept here, with the block
    /// manager's doorbell; keeps the position `f` leaves.
    fn request<T>(
        &mut self,
        f: impl FnOnce(&mut Producer<'_>, &EventFd) -> Result<T, cosh_ring::RingError>,
    ) -> Result<T> {
        let words = self.map.shared_words();
        let (request, _) = ring_words(&words, self.capacity)?;
        let mut p =
            Producer::resume_seen(request, self.capacity, self.request_head, self.request_seen)
                .map_err(ring_error)?;
        let r = f(&mut p, &self.bell).map_err(ring_error)?;
        self.request_head = p.position();
        self.request_seen = p.seen();
        Ok(r)
    }

    /// Runs `f` on the answer ring, attached at the position kept here, with the frame
    /// reader; keeps the position `f` leaves.
    fn answer<T>(
        &mut self,
        f: impl FnOnce(&mut Consumer<'_>, &mut FrameReader) -> Result<T, cosh_ring::RingError>,
    ) -> Result<T> {
        let words = self.map.shared_words();
        let (_, answer) = ring_words(&words, self.capacity)?;
        let mut c =
            Consumer::resume(answer, self.capacity, self.answer_tail).map_err(ring_error)?;
        let r = f(&mut c, &mut self.reader).map_err(ring_error)?;
        self.answer_tail = c.position();
        Ok(r)
    }
}

fn ring_words<'w>(
    words: &'w SharedWords<'_>,
    capacity: u32,
) -> Result<(&'w [cosh_ring::AtomicU32], &'w [cosh_ring::AtomicU32])> {
    words
        .atomic_u32s(0, cosh_ring::pair_words(capacity))
        .and_then(|w| cosh_ring::split_pair(w, capacity))
        .ok_or_else(|| Error::Protocol("the rings' memory is too small".into()))
}

fn ring_error(e: cosh_ring::RingError) -> Error {
    Error::Protocol(format!("ring: {e}"))
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain")
            .field("id", &self.id)
            .field("socket", &self.socket)
            .field("mappings", &self.maps.len())
            .finish()
    }
}

fn unexpected(r: &Response) -> Error {
    Error::Protocol(format!("unexpected answer {r:?}"))
}

fn ms(timeout: Option<Duration>) -> Option<u64> {
    timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

impl Domain {
    /// Connects to the host pool's block manager with the default [`Options`], starting one
    /// if none is running. `name` identifies this domain in `cosh status`.
    pub fn connect(name: &str) -> Result<Domain> {
        Domain::connect_with(&Options::new(name))
    }

    /// Connects with explicit options.
    pub fn connect_with(options: &Options) -> Result<Domain> {
        let (sock, socket) = connect::open(options)?;
        let hello = Message::Hello {
            min_version: *cosh_proto::PROTOCOL_VERSIONS.start(),
            max_version: *cosh_proto::PROTOCOL_VERSIONS.end(),
            name: options.name.clone(),
        };
        let mut domain = Domain {
            sock,
            id: DomainId::from_bits(0),
            maps: direct::IdMap::default(),
            nc_epoch: 0,
            nc_seen: direct::IdMap::default(),
            slots_of: direct::IdMap::default(),
            rings: None,
            direct: direct::Direct::default(),
            reaper: None,
            reaper_cpus: cosh_sys::cpu::allowed(),
            retired: Vec::new(),
            spins: options.spins,
            recv_spins: options.spins,
            adaptive_receive: true,
            buf: vec![0; MAX_FRAME],
            socket,
            nc: false,
            kind: cosh_pool::PoolKind::Host,
            nc_eviction: 0,
            nc_skip: options.nc_skip,
        };
        // A block manager that turns the connection away answers before it reads the hello
        // and closes: the hello may then fail to go, but the answer is still there to read.
        let sent = domain.send(&hello);
        let answer = domain.recv();
        if let Err(e) = sent
            && !matches!(
                answer,
                Ok((Message::Error { .. } | Message::Refused { .. }, _))
            )
        {
            return Err(e);
        }
        match answer?.0 {
            Message::Welcome { domain: id, .. } => {
                domain.id = id;
                if options.rings {
                    domain.open_rings()?;
                }
                match domain.call(Request::PoolInfo)? {
                    Response::PoolInfo { kind, eviction, .. } => {
                        domain.nc = kind == cosh_proto::ops::WirePoolKind::Nc;
                        domain.kind = match kind {
                            cosh_proto::ops::WirePoolKind::Host => cosh_pool::PoolKind::Host,
                            cosh_proto::ops::WirePoolKind::Nc => cosh_pool::PoolKind::Nc,
                            cosh_proto::ops::WirePoolKind::Device => cosh_pool::PoolKind::Device,
                        };
                        domain.nc_eviction = eviction;
                    }
                    r => return Err(unexpected(&r)),
                }
                Ok(domain)
            }
            Message::Refused { reason } => Err(Error::Connect(reason)),
            // Turned away before the handshake (a quota of connections): the kind says why.
            Message::Error { kind, message } => Err(Error::Cosh { kind, message }),
            other => Err(Error::Protocol(format!(
                "expected welcome, got {}",
                other.name()
            ))),
        }
    }

    fn open_rings(&mut self) -> Result<()> {
        // Room for the largest frame, twice over: 2,048 records, 128 KiB a ring.
        let (r, fds) = self.call_with_fds(Request::OpenRings { capacity: 2048 })?;
        let Response::RingsOpened { capacity } = r else {
            return Err(unexpected(&r));
        };
        let [memory, bell]: [OwnedFd; 2] = fds.try_into().map_err(|fds: Vec<OwnedFd>| {
            Error::Protocol(format!("rings came with {} descriptors, not 2", fds.len()))
        })?;
        let memfd = Memfd::from_fd(memory)?;
        if memfd.len() < 4 * cosh_ring::pair_words(capacity) as u64 {
            return Err(Error::Protocol("the rings' memory is too small".into()));
        }
        let mut map = memfd.map_write(Prefault::Now)?;
        let (request_head, request_seen, answer_tail) = {
            let words = map.shared_words();
            let (request, answer) = ring_words(&words, capacity)?;
            let p = Producer::attach(request).map_err(ring_error)?;
            (
                p.position(),
                p.seen(),
                Consumer::attach(answer).map_err(ring_error)?.position(),
            )
        };
        self.rings = Some(Rings {
            map,
            capacity,
            request_head,
            request_seen,
            answer_tail,
            reader: FrameReader::new(MAX_FRAME),
            bell: EventFd::from_fd(bell)?,
        });
        Ok(())
    }

    /// How this domain waits for answers from now on: `spins` looks at its answer ring
    /// before sleeping on its futex (0: block at once; [`SPIN_FOREVER`]: busy-poll). Only
    /// matters with rings.
    pub fn set_spins(&mut self, spins: u32) {
        self.spins = spins;
        // Spins asked for are spins given: receives no longer adapt theirs.
        self.adaptive_receive = false;
    }

    /// A receive that waits its own way for this call only: `spins` as in
    /// [`Domain::set_spins`].
    pub fn receive_with(
        &mut self,
        source: Option<DomainId>,
        timeout: Option<Duration>,
        spins: u32,
    ) -> Result<Incoming> {
        let session = std::mem::replace(&mut self.spins, spins);
        let adaptive = std::mem::replace(&mut self.adaptive_receive, false);
        let result = self.receive(source, timeout);
        self.spins = session;
        self.adaptive_receive = adaptive;
        result
    }

    /// Whether requests travel through shared-memory rings.
    pub fn uses_rings(&self) -> bool {
        self.rings.is_some()
    }

    /// Puts a frame in the request ring, waiting (briefly) for room.
    fn send_ring(&mut self, bytes: &[u8]) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut pause = Duration::from_micros(10);
        loop {
            let rings = self
                .rings
                .as_mut()
                .ok_or_else(|| Error::Protocol("no rings".into()))?;
            let pushed = rings.request(|p, bell| {
                let pushed = push_frame(p, bytes, &EventBell(bell))?;
                if !pushed {
                    // Full: make sure the block manager is awake to empty it.
                    p.notify(&EventBell(bell));
                }
                Ok(pushed)
            })?;
            if pushed {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(self.lost("its request ring stayed full for 30 s"));
            }
            // Sleep rather than spin: on a busy machine the block manager needs this core.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    /// Reads the next frame from the answer ring, spinning, then sleeping on its futex; checks
    /// that the block manager is alive while it waits.
    fn recv_ring(&mut self) -> Result<Message> {
        let spins = self.spins;
        // A busy-polling wait still looks at the socket now and then, to notice a dead block
        // manager.
        let polling = spins == SPIN_FOREVER;
        let mut last_check = std::time::Instant::now();
        loop {
            let rings = self
                .rings
                .as_mut()
                .ok_or_else(|| Error::Protocol("no rings".into()))?;
            let (message, arrived) = rings.answer(|c, reader| {
                if let Some(frame) = reader.read(c)? {
                    return Ok((Some(decode(frame)), true));
                }
                let arrived = if polling {
                    c.wait(&Futex, 1 << 16, Some(Duration::ZERO))?
                } else {
                    c.wait(&Futex, spins, Some(Duration::from_millis(100)))?
                };
                Ok((None, arrived))
            })?;
            if let Some(message) = message {
                return message.map_err(|e| Error::Protocol(e.to_string()));
            }
            if !arrived && (!polling || last_check.elapsed() >= Duration::from_millis(100)) {
                self.check_alive()?;
                last_check = std::time::Instant::now();
            }
        }
    }

    /// Fails if the block manager closed the socket (it died, or cut this client off).
    fn check_alive(&mut self) -> Result<()> {
        let mut fds = [rustix::event::PollFd::new(
            &self.sock,
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let readable = matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0);
        if !readable {
            return Ok(());
        }
        match self.sock.recv(&mut self.buf) {
            Ok(Some(got)) => {
                // Only an error frame may come this way while rings are in use.
                match decode(&self.buf[..got.len]) {
                    Ok(Message::Error { kind, message }) => Err(Error::Cosh { kind, message }),
                    _ => Err(Error::Protocol("an unexpected frame on the socket".into())),
                }
            }
            Ok(None) => Err(self.lost("it closed the connection")),
            Err(e) => Err(self.lost(&e.to_string())),
        }
    }

    /// This domain's id (it names the pool).
    pub fn id(&self) -> DomainId {
        self.id
    }

    /// The socket of the block manager this domain is connected to.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    fn lost(&self, why: &str) -> Error {
        Error::Cosh {
            kind: ErrorKind::Unavailable,
            message: format!(
                "lost the connection to the block manager at {} ({why}); did it stop? \
                 (`cosh status` tells)",
                self.socket.display()
            ),
        }
    }

    fn send(&mut self, m: &Message) -> Result<()> {
        let bytes = encode(m).map_err(|e| Error::Protocol(e.to_string()))?;
        self.sock
            .send(&bytes, &[])
            .map_err(|e| self.lost(&e.to_string()))
    }

    fn recv(&mut self) -> Result<(Message, Vec<OwnedFd>)> {
        let got = match self.sock.recv(&mut self.buf) {
            Ok(Some(got)) => got,
            Ok(None) => return Err(self.lost("it closed the connection")),
            Err(e) => return Err(self.lost(&e.to_string())),
        };
        let m = decode(&self.buf[..got.len]).map_err(|e| Error::Protocol(e.to_string()))?;
        Ok((m, got.fds))
    }

    /// Sends a request and reads its answer, handling forget and revoke notices on the way.
    /// Requests that pass no descriptors go through the rings when they are open.
    fn call_with_fds(&mut self, request: Request) -> Result<(Response, Vec<OwnedFd>)> {
        self.nc_jitter()?;
        let via_ring = self.rings.is_some()
            && !matches!(
                request,
                Request::Map { .. }
                    | Request::OpenRings { .. }
                    | Request::OpenDirect { .. }
                    | Request::AttachDirect { .. }
            );
        let send = |d: &mut Domain, m: &Message| -> Result<()> {
            if via_ring {
                let bytes = encode(m).map_err(|e| Error::Protocol(e.to_string()))?;
                d.send_ring(&bytes)
            } else {
                d.send(m)
            }
        };
        // A map request's caller maps what it gets first, then lets retired mappings go.
        let maps = matches!(request, Request::Map { .. });
        send(self, &Message::Request(request))?;
        loop {
            let received = if via_ring {
                (self.recv_ring()?, Vec::new())
            } else {
                self.recv()?
            };
            match received {
                (Message::Response(Response::Forget { slots }), _) => {
                    for s in slots {
                        self.nc_seen.remove(&s);
                        if let Some(m) = self.maps.remove(&s) {
                            self.retire(m);
                        }
                    }
                }
                (
                    Message::Response(
                        r @ (Response::DirectInbound { .. } | Response::DirectClosed { .. }),
                    ),
                    _,
                ) => {
                    self.direct_notice(&r);
                }
                (Message::Response(Response::Revoke { slots, more }), _) => {
                    for s in slots {
                        if let Some(m) = self.maps.remove(&s) {
                            // What this domain wrote reaches memory before it lets go.
                            m.let_go(self.nc_skip)?;
                        }
                    }
                    if !more {
                        send(self, &Message::Request(Request::Revoked))?;
                    }
                }
                (Message::Response(r), fds) => {
                    if !maps {
                        self.let_retired_go();
                    }
                    return Ok((r, fds));
                }
                (Message::Error { kind, message }, _) => return Err(Error::Cosh { kind, message }),
                (other, _) => {
                    return Err(Error::Protocol(format!(
                        "unexpected {} message",
                        other.name()
                    )));
                }
            }
        }
    }

    /// Drops the mapping of a slot that is gone: large ones on the helper thread, once the
    /// request at hand is done ([`Domain::let_retired_go`]).
    fn retire(&mut self, m: Cached) {
        if m.bytes().len() >= RETIRE_ASIDE {
            self.retired.push(m);
        }
    }

    /// Hands the large mappings retired so far to the helper thread, which unmaps them.
    fn let_retired_go(&mut self) {
        if self.retired.is_empty() {
            return;
        }
        if self.reaper.is_none() {
            self.reaper = start_reaper(self.reaper_cpus.take());
        }
        for m in self.retired.drain(..) {
            if let Some(tx) = &self.reaper {
                // A stopped thread gives the mapping back: it is dropped here instead.
                let _ = tx.send(m);
            }
        }
    }

    fn call(&mut self, request: Request) -> Result<Response> {
        Ok(self.call_with_fds(request)?.0)
    }

    /// In a non-coherent pool, writes every change this domain made back to memory: before
    /// anything leaves it (a transfer, a free).
    fn nc_flush(&mut self) -> Result<()> {
        if self.nc && !self.nc_skip.flush {
            for m in self.maps.values_mut() {
                m.flush()?;
            }
        }
        Ok(())
    }

    /// The random eviction of a cache of `slot`, if the pool asks for it: seeded by domain
    /// and slot, so that a run repeats.
    fn eviction_for(&self, slot: u64) -> Option<cosh_pool::nc::Eviction> {
        (self.nc_eviction > 0).then(|| cosh_pool::nc::Eviction {
            seed: self.id.to_bits().rotate_left(17) ^ slot,
            one_in: self.nc_eviction,
        })
    }

    /// With random eviction on, gives every cache its chance to evict a line: at each request,
    /// a moment the program cannot predict.
    fn nc_jitter(&mut self) -> Result<()> {
        if self.nc_eviction > 0 {
            for m in self.maps.values_mut() {
                m.maybe_evict()?;
            }
        }
        Ok(())
    }

    /// In a non-coherent pool, reloads from memory what this domain did not change: after
    /// anything arrives (a receive, or an allocation, which may reuse memory).
    /// After a receive or an allocation: what this domain caches of a non-coherent pool may
    /// be stale. Each mapping is refreshed (its clean lines reloaded) before its bytes are
    /// next handed out (`ensure_mapped`), so a receive costs nothing for the buffers it does
    /// not touch. (Pieces handed out before stay as they were: by the rules no other domain
    /// can have changed those bytes.)
    fn nc_refresh(&mut self) -> Result<()> {
        if self.nc && !self.nc_skip.refresh {
            self.nc_epoch += 1;
        }
        Ok(())
    }

    /// Whether the pool's memory is coherent (`false` for an `nc` pool, whose memory this
    /// library caches and keeps in step around every transfer).
    pub fn coherent(&self) -> bool {
        !self.nc
    }

    /// The kind of memory of this domain's pool.
    pub fn pool_kind(&self) -> cosh_pool::PoolKind {
        self.kind
    }

    fn done(&mut self, request: Request) -> Result<()> {
        match self.call(request)? {
            Response::Done => Ok(()),
            r => Err(unexpected(&r)),
        }
    }

    fn agg(&mut self, request: Request) -> Result<Agg> {
        match self.call(request)? {
            Response::Agg { agg } => Ok(Agg(agg)),
            r => Err(unexpected(&r)),
        }
    }

    /// `alloc`: a fresh read/write aggregate of `len` zeroed bytes, private to this domain.
    pub fn alloc(&mut self, len: u64) -> Result<Agg> {
        let r = self.call(Request::Alloc { len })?;
        let agg = self.allocated(r)?;
        self.nc_refresh()?;
        Ok(agg)
    }

    /// Like [`Domain::alloc`], without zeroing: a recycled buffer keeps what this domain
    /// last left in it (never another domain's bytes: a domain's recycled buffers are ones
    /// no other domain can map). For a producer that overwrites what it allocates, this
    /// saves writing every byte twice.
    pub fn alloc_unzeroed(&mut self, len: u64) -> Result<Agg> {
        if let Some(agg) = self.alloc_spare(len)? {
            return Ok(agg);
        }
        let r = self.call(Request::AllocUnzeroed { len })?;
        let agg = self.allocated(r)?;
        self.nc_refresh()?;
        Ok(agg)
    }

    /// `incref`: one more reference.
    pub fn incref(&mut self, agg: Agg) -> Result<()> {
        self.done(Request::Incref { agg: agg.0 })?;
        if let Some(l) = self.direct.local.get_mut(&agg) {
            l.refs += 1;
        }
        Ok(())
    }

    /// `decref`: one reference fewer; the last frees the aggregate.
    pub fn decref(&mut self, agg: Agg) -> Result<()> {
        self.nc_flush()?;
        // A whole buffer this library knows of (even only from a peer's ring record) is freed
        // without an answer: a free of what does not exist is dropped by the block manager.
        let known = self.direct.local.contains_key(&agg);
        let last = self.direct.local.get_mut(&agg).is_none_or(|l| {
            l.refs = l.refs.saturating_sub(1);
            l.refs == 0
        });
        if last {
            // A landing still private waits for the next inline transfer instead.
            if self.restock(agg)? {
                return Ok(());
            }
            self.slots_of.remove(&agg);
            self.direct.local.remove(&agg);
        }
        if known && self.rings.is_some() {
            // Known to exist: no answer needed. The block manager applies it before anyone's
            // next request.
            return self.release_quietly(agg);
        }
        self.done(Request::Decref { agg: agg.0 })
    }

    /// `getlen` and `getrights` in one call.
    pub fn info(&mut self, agg: Agg) -> Result<(u64, Rights)> {
        match self.call(Request::Info { agg: agg.0 })? {
            Response::Info { len, rights } => Ok((len, rights.into())),
            r => Err(unexpected(&r)),
        }
    }

    /// `getlen`.
    pub fn len(&mut self, agg: Agg) -> Result<u64> {
        Ok(self.info(agg)?.0)
    }

    /// `getrights`.
    pub fn rights(&mut self, agg: Agg) -> Result<Rights> {
        Ok(self.info(agg)?.1)
    }

    /// `concat`.
    pub fn concat(&mut self, first: Agg, second: Agg) -> Result<Agg> {
        // Relatives now share the buffers: no longer sent directly.
        self.direct.unsend(first, None);
        self.direct.unsend(second, None);
        self.agg(Request::Concat {
            first: first.0,
            second: second.0,
        })
    }

    /// `select`.
    pub fn select(&mut self, agg: Agg, offset: u64, len: u64) -> Result<Agg> {
        self.direct.unsend(agg, None);
        self.agg(Request::Select {
            agg: agg.0,
            offset,
            len,
        })
    }

    /// `find_related`: aggregates related to `agg` holding at least `min_rights`.
    pub fn find_related(&mut self, agg: Agg, min_rights: Rights) -> Result<Vec<Agg>> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            match self.call(Request::FindRelated {
                agg: agg.0,
                min_rights: min_rights.into(),
                after,
            })? {
                Response::Aggs { aggs, more } => {
                    after = aggs.last().copied().unwrap_or(after);
                    all.extend(aggs.into_iter().map(Agg));
                    if !more {
                        return Ok(all);
                    }
                }
                r => return Err(unexpected(&r)),
            }
        }
    }

    /// `downgrade`.
    pub fn downgrade(&mut self, agg: Agg, rights: Rights) -> Result<()> {
        self.done(Request::Downgrade {
            agg: agg.0,
            rights: rights.into(),
        })?;
        self.direct.unsend(agg, Some(rights));
        Ok(())
    }

    fn send_transfer(
        &mut self,
        agg: Agg,
        dest: DomainId,
        mode: Mode,
        flags: TransferFlags,
        ticketed: bool,
        seq: Option<u64>,
    ) -> Result<(Option<u64>, TransferReport)> {
        // A strong share seals what goes by reference, and the kernel seals only memory
        // nobody maps writable: drop ours now rather than in a revoke round trip. Unless the
        // block manager will copy the bytes instead (a buffer nobody else maps, small enough
        // for its policy): then the mapping stays for the sender's next use.
        let mut revoked = false;
        let share_strong = mode == Mode::Share && flags.strength == Strength::Strong;
        let me = self.id.to_bits();
        let unshared = self
            .direct
            .local
            .get(&agg)
            .filter(|l| l.mappers.as_slice().iter().all(|m| *m == me))
            .map(|l| l.at.len);
        let copied = match unshared {
            Some(len) if share_strong => len <= self.small_transfer_policy()?.share_copy_max,
            _ => false,
        };
        if share_strong
            && !copied
            && let Some(slots) = self.slots_of.get(&agg)
        {
            for s in slots {
                if self.maps.get(s).is_some_and(Cached::writable)
                    && let Some(m) = self.maps.remove(s)
                {
                    m.let_go(self.nc_skip)?;
                }
            }
            revoked = true;
        }
        // A transfer that copies a large buffer keeps the block manager busy for a while:
        // wait for it asleep, leaving the core to whoever has work (the receiver, say), unless
        // this domain asked to busy-poll.
        // So does a strong transfer or a copy to another pool: its answer waits until the bytes
        // are in that pool's memory, and its copy engine needs the cores. (A weak one is
        // answered at once.)
        let copies =
            mode == Mode::Copy || (mode == Mode::Move && flags.strength == Strength::Strong);
        let strong = mode == Mode::Copy || flags.strength == Strength::Strong;
        let long = self.spins != SPIN_FOREVER
            && (dest.pool != self.id.pool && strong
                || copies
                    && self
                        .direct
                        .local
                        .get(&agg)
                        .is_some_and(|l| l.at.len >= LONG_COPY));
        let session = long.then(|| std::mem::replace(&mut self.spins, 0));
        let answer = self.call(Request::Transfer {
            agg: agg.0,
            dest: dest.to_bits(),
            mode: mode.into(),
            flags: flags.to_bits(),
            ticketed,
            revoked,
            seq,
        });
        if let Some(spins) = session {
            self.spins = spins;
        }
        match answer? {
            Response::Transferred { ticket, report } => Ok((ticket, report)),
            r => Err(unexpected(&r)),
        }
    }

    /// `transfer`: sends `agg` to `dest` by `mode`; returns what the block manager did.
    pub fn transfer(
        &mut self,
        agg: Agg,
        dest: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<TransferReport> {
        self.nc_flush()?;
        if self.rings.is_some()
            && let Some(report) = self.transfer_direct(agg, dest, mode, flags)?
        {
            return Ok(report);
        }
        self.direct.after_transfer(agg, mode);
        Ok(self.send_transfer(agg, dest, mode, flags, false, None)?.1)
    }

    /// `attach_transfer`: like [`Domain::transfer`], for a receiver that takes it with
    /// [`Domain::attach_recv`] and the ticket returned (send the ticket in your own message).
    pub fn attach_transfer(
        &mut self,
        agg: Agg,
        dest: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<Ticket> {
        self.nc_flush()?;
        self.direct.after_transfer(agg, mode);
        match self.send_transfer(agg, dest, mode, flags, true, None)? {
            (Some(t), _) => Ok(Ticket(t)),
            (None, _) => Err(Error::Protocol(
                "a ticketed transfer came back without a ticket".into(),
            )),
        }
    }

    fn incoming(&mut self, r: Response) -> Result<Incoming> {
        Ok(self.numbered(r)?.0)
    }

    /// A received transfer and its sequence number on a direct ring, if it has one; a whole
    /// buffer is remembered, so that reading it needs no request.
    fn numbered(&mut self, r: Response) -> Result<(Incoming, Option<u64>)> {
        let Response::Received {
            agg,
            source,
            mode,
            strength,
            ticket,
            seq,
            piece,
            mappers,
        } = r
        else {
            return Err(unexpected(&r));
        };
        let mode: Mode = mode.into();
        if let Some(piece) = piece {
            let rights = match mode {
                Mode::Share => Rights::Read,
                Mode::Move | Mode::Copy => Rights::ReadWrite,
            };
            // More mappers than a ring record holds: never sent directly.
            let mappers = mappers.and_then(|m| cosh_proto::ops::Mappers::from_slice(&m));
            self.direct.know(Agg(agg), piece, rights, mappers);
        }
        let got = Incoming {
            agg: Agg(agg),
            source: DomainId::from_bits(source),
            mode,
            strength: strength.into(),
            ticket: ticket.map(Ticket),
        };
        Ok((got, seq))
    }

    /// `receive`: the oldest transfer to this domain (from `source`, or anyone), waiting up to
    /// `timeout` (`None`: for ever); `nothing_pending` when it runs out, `unknown_domain` when
    /// `source` disconnects first.
    pub fn receive(
        &mut self,
        source: Option<DomainId>,
        timeout: Option<Duration>,
    ) -> Result<Incoming> {
        let got = if self.rings.is_some() {
            self.receive_any(source, timeout)?
        } else {
            let r = self.call(Request::Receive {
                source: source.map(DomainId::to_bits),
                timeout_ms: ms(timeout),
            })?;
            self.incoming(r)?
        };
        self.nc_refresh()?;
        Ok(got)
    }

    /// A receive that does not wait: `None` when nothing is pending.
    pub fn try_receive(&mut self, source: Option<DomainId>) -> Result<Option<Incoming>> {
        match self.receive(source, Some(Duration::ZERO)) {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.kind() == ErrorKind::NothingPending => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `attach_recv`: the transfer `ticket` from `source`, waiting up to `timeout` for it.
    pub fn attach_recv(
        &mut self,
        source: DomainId,
        ticket: Ticket,
        timeout: Option<Duration>,
    ) -> Result<Incoming> {
        let r = self.call(Request::AttachRecv {
            source: source.to_bits(),
            ticket: ticket.0,
            timeout_ms: ms(timeout),
        })?;
        let got = self.incoming(r)?;
        self.nc_refresh()?;
        Ok(got)
    }

    /// Declares that this domain trusts `peer`: weak transfers that leave `peer` with
    /// permissions beyond its rights are honoured as weak.
    pub fn trust(&mut self, peer: DomainId) -> Result<()> {
        self.done(Request::Trust {
            peer: peer.to_bits(),
        })
    }

    /// Registers this domain under `name` until it disconnects.
    pub fn register(&mut self, name: &str) -> Result<()> {
        self.done(Request::Register { name: name.into() })
    }

    /// The domain registered under `name`.
    pub fn lookup(&mut self, name: &str) -> Result<DomainId> {
        match self.call(Request::Lookup { name: name.into() })? {
            Response::Domain { domain } => Ok(DomainId::from_bits(domain)),
            r => Err(unexpected(&r)),
        }
    }

    /// The block manager's state.
    pub fn status(&mut self) -> Result<Status> {
        match self.call(Request::Status)? {
            Response::Status(s) => Ok(*s),
            r => Err(unexpected(&r)),
        }
    }

    /// Asks the block manager to shut down (same uid or root only).
    pub fn shutdown(mut self) -> Result<()> {
        self.done(Request::Shutdown)
    }

    fn locations(&mut self, agg: Agg, access: Access, offset: u64) -> Result<Vec<Location>> {
        if let Some(known) = self.local_piece(agg, access, offset) {
            self.slots_of
                .insert(agg, known.iter().map(|l| l.slot).collect());
            self.ensure_mapped(&known, access)?;
            return Ok(known);
        }
        let mut out = Vec::new();
        let mut at = offset;
        loop {
            let r = self.call(Request::Pieces {
                agg: agg.0,
                access: access.into(),
                offset: at,
                max: u32::try_from(MAX_PIECES).unwrap_or(u32::MAX),
            })?;
            let Response::Pieces { pieces, more } = r else {
                return Err(unexpected(&r));
            };
            for WirePiece {
                buffer,
                slot,
                offset,
                len,
            } in pieces
            {
                at = at.saturating_add(len);
                out.push(Location {
                    buffer,
                    slot,
                    offset,
                    len,
                });
            }
            if !more {
                break;
            }
        }
        if offset == 0 {
            let mut slots: Vec<u64> = out.iter().map(|l| l.slot).collect();
            slots.sort_unstable();
            slots.dedup();
            self.slots_of.insert(agg, slots);
        }
        self.ensure_mapped(&out, access)?;
        Ok(out)
    }

    /// Maps every slot of `pieces` not yet mapped with `access`.
    fn ensure_mapped(&mut self, pieces: &[Location], access: Access) -> Result<()> {
        let mut missing: Vec<MapRequest> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for p in pieces {
            let ok = match self.maps.get(&p.slot) {
                Some(m) => m.writable() || access == Access::Read,
                None => false,
            };
            if !ok && seen.insert(p.slot) {
                missing.push(MapRequest {
                    buffer: p.buffer,
                    access: access.into(),
                });
            }
        }
        for batch in missing.chunks(MAX_MAP) {
            let (r, fds) = self.call_with_fds(Request::Map {
                buffers: batch.to_vec(),
            })?;
            let Response::Mapped { buffers } = r else {
                return Err(unexpected(&r));
            };
            if buffers.len() != fds.len() {
                return Err(Error::Protocol(format!(
                    "{} buffers granted with {} descriptors",
                    buffers.len(),
                    fds.len()
                )));
            }
            for (granted, fd) in buffers.into_iter().zip(fds) {
                let memfd = Memfd::from_fd(fd)?;
                if memfd.len() != granted.len {
                    return Err(Error::Protocol(format!(
                        "slot {} is {} bytes, not the {} announced",
                        granted.slot,
                        memfd.len(),
                        granted.len
                    )));
                }
                // Every mapping faults its pages in as they are first touched: the slot's
                // pages exist (the block manager allocated them), and a read fault maps the
                // pages around it too (64 KiB here), so that reading a whole mapping this way
                // took 47-52 us a MiB where `MAP_POPULATE` took 89-93 (Linux 6.18, 1-16 MiB),
                // and a receiver that reads a few bytes of a large buffer pays for those.
                let cached = match (granted.access, self.nc) {
                    (WireAccess::Write, false) => {
                        Cached::Write(memfd.map_write(Prefault::OnFirstTouch)?)
                    }
                    (WireAccess::Read, false) => {
                        Cached::Read(memfd.map_read(Prefault::OnFirstTouch)?)
                    }
                    (WireAccess::Write, true) => {
                        let map = nc::Mapped(memfd.map_write(Prefault::OnFirstTouch)?);
                        let evict = self.eviction_for(granted.slot);
                        let mut cache = Box::new(LineCache::new(map, evict));
                        cache.load_all().map_err(nc_error)?;
                        Cached::NcWrite(cache)
                    }
                    (WireAccess::Read, true) => {
                        let map = nc::Mapped(memfd.map_read(Prefault::OnFirstTouch)?);
                        let evict = self.eviction_for(granted.slot);
                        let mut cache = Box::new(LineCache::new(map, evict));
                        cache.load_all().map_err(nc_error)?;
                        Cached::NcRead(cache)
                    }
                };
                // The descriptor closes here: the mapping is all the domain keeps.
                self.maps.insert(granted.slot, cached);
                self.nc_seen.insert(granted.slot, self.nc_epoch);
            }
        }
        self.let_retired_go();
        if self.nc && !self.nc_skip.refresh {
            for p in pieces {
                let seen = self.nc_seen.get(&p.slot).copied().unwrap_or(0);
                if seen < self.nc_epoch
                    && let Some(m) = self.maps.get_mut(&p.slot)
                {
                    m.refresh()?;
                    self.nc_seen.insert(p.slot, self.nc_epoch);
                }
            }
        }
        Ok(())
    }

    /// Iteration for reading: the maximal contiguous pieces from `offset` to the end.
    pub fn read_pieces(&mut self, agg: Agg, offset: u64) -> Result<Vec<ReadPiece>> {
        Ok(self
            .locations(agg, Access::Read, offset)?
            .into_iter()
            .map(ReadPiece)
            .collect())
    }

    /// Iteration for writing (needs read/write rights).
    pub fn write_pieces(&mut self, agg: Agg, offset: u64) -> Result<Vec<WritePiece>> {
        Ok(self
            .locations(agg, Access::Write, offset)?
            .into_iter()
            .map(WritePiece)
            .collect())
    }

    fn fault(&self, at: &Location, needed: Rights) -> Error {
        Error::Cosh {
            kind: ErrorKind::Fault,
            message: format!(
                "memory fault: domain {} has no {needed} mapping of buffer b{} (slot {})",
                self.id, at.buffer, at.slot
            ),
        }
    }

    fn range(at: &Location) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(at.offset).ok()?;
        let end = start.checked_add(usize::try_from(at.len).ok()?)?;
        Some(start..end)
    }

    /// The bytes of a piece, or a fault if this domain no longer maps its buffer.
    pub fn bytes(&self, piece: &ReadPiece) -> Result<&[u8]> {
        self.location_bytes(&piece.0)
    }

    /// Bytes at a location, through whatever mapping this domain has (no rights check: the
    /// memory protection is the check).
    pub fn location_bytes(&self, at: &Location) -> Result<&[u8]> {
        let map = self
            .maps
            .get(&at.slot)
            .ok_or_else(|| self.fault(at, Rights::Read))?;
        Domain::range(at)
            .and_then(|r| map.bytes().get(r))
            .ok_or_else(|| Error::Protocol(format!("piece {at:?} is outside its slot")))
    }

    /// The writable bytes of a piece, or a fault if this domain no longer maps its buffer
    /// read/write.
    pub fn bytes_mut(&mut self, piece: &WritePiece) -> Result<&mut [u8]> {
        self.location_bytes_mut(&piece.0)
    }

    /// Writable bytes at a location, through a read/write mapping if this domain has one.
    pub fn location_bytes_mut(&mut self, at: &Location) -> Result<&mut [u8]> {
        if !self.maps.get(&at.slot).is_some_and(Cached::writable) {
            return Err(self.fault(at, Rights::ReadWrite));
        }
        let Some(bytes) = self.maps.get_mut(&at.slot).and_then(Cached::bytes_mut) else {
            return Err(Error::Protocol("a mapping vanished".into()));
        };
        Domain::range(at)
            .and_then(|r| bytes.get_mut(r))
            .ok_or_else(|| Error::Protocol(format!("piece {at:?} is outside its slot")))
    }

    /// Copies `len` bytes from `offset` of `agg` out (needs read rights).
    pub fn read(&mut self, agg: Agg, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for p in self.read_pieces(agg, offset)? {
            if out.len() as u64 >= len {
                break;
            }
            let bytes = self.bytes(&p)?;
            let take = bytes
                .len()
                .min(usize::try_from(len).unwrap_or(usize::MAX) - out.len());
            out.extend_from_slice(&bytes[..take]);
        }
        if (out.len() as u64) < len {
            return Err(Error::Cosh {
                kind: ErrorKind::OutOfRange,
                message: format!(
                    "reading {len} bytes at {offset} runs past the end of aggregate {}",
                    agg.0
                ),
            });
        }
        Ok(out)
    }

    /// Copies `data` into `agg` at `offset` (needs read/write rights).
    pub fn write(&mut self, agg: Agg, offset: u64, data: &[u8]) -> Result<()> {
        let pieces = self.write_pieces(agg, offset)?;
        let mut rest = data;
        for p in pieces {
            if rest.is_empty() {
                break;
            }
            let bytes = self.bytes_mut(&p)?;
            let n = bytes.len().min(rest.len());
            bytes[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        if !rest.is_empty() {
            return Err(Error::Cosh {
                kind: ErrorKind::OutOfRange,
                message: format!(
                    "writing {} bytes at {offset} runs past the end of aggregate {}",
                    data.len(),
                    agg.0
                ),
            });
        }
        Ok(())
    }

    /// The raw descriptor of the slot holding a piece, read-only for [`Access::Read`] and
    /// read/write for [`Access::Write`], granted only up to this domain's permission on the
    /// buffer. For tools and tests that need the memfd itself (the library maps for you);
    /// the block manager records that this domain may map the slot from now on.
    pub fn descriptor(&mut self, at: &Location, access: Access) -> Result<OwnedFd> {
        let (r, mut fds) = self.call_with_fds(Request::Map {
            buffers: vec![MapRequest {
                buffer: at.buffer,
                access: access.into(),
            }],
        })?;
        self.let_retired_go();
        match (r, fds.pop()) {
            (Response::Mapped { buffers }, Some(fd)) if buffers.len() == 1 && fds.is_empty() => {
                Ok(fd)
            }
            (r, _) => Err(unexpected(&r)),
        }
    }

    /// Memory slots this domain maps now.
    pub fn mapped_slots(&self) -> usize {
        self.maps.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPUs of this process's threads named `name`, by thread id.
    fn cpus_of_threads(name: &str) -> Vec<u32> {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .filter_map(|t| {
                let tid = t.file_name().to_str()?.parse::<i32>().ok()?;
                let pid = rustix::process::Pid::from_raw(tid)?;
                Some(rustix::thread::sched_getaffinity(Some(pid)).ok()?.count())
            })
            .collect()
    }

    #[test]
    fn the_unmapping_thread_runs_where_the_domain_connected_not_where_its_caller_was_pinned() {
        std::thread::spawn(|| {
            let before = cosh_sys::cpu::allowed().expect("affinity");
            let Some((first, _)) = cosh_sys::cpu::first_two() else {
                return; // one CPU: nothing to compete for
            };
            cosh_sys::cpu::pin(first).expect("pin");
            let reaper = start_reaper(Some(before)).expect("a thread");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                let seen = cpus_of_threads(REAPER_NAME);
                if !seen.is_empty() && seen.iter().all(|n| *n == before.count()) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the thread kept the pinned CPU: {seen:?}, not {}",
                    before.count()
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            drop(reaper);
        })
        .join()
        .expect("test thread");
    }
}
