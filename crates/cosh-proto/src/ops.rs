//! The operations of the aggregate API on the wire: one [`Request`] per client call, answered
//! by one [`Response`] or an error frame, except a transfer that needs the sender to drop
//! mappings first (the block manager answers [`Response::Revoke`], the client drops them and
//! says [`Request::Revoked`], and only then comes the transfer's own answer).
//!
//! Identifiers travel as plain integers (aggregate, buffer and domain ids, tickets); rights,
//! modes, strengths and accesses as small enums whose unknown values do not decode. Every list
//! is bounded so that a frame always fits in [`MAX_FRAME`](crate::MAX_FRAME): long answers come
//! in pages.

use cosh_core::{Access, Mode, Rights, Strength};
use serde::{Deserialize, Serialize};

/// The longest name a domain may register, in bytes.
pub const MAX_NAME: usize = 255;
/// The most pieces in one [`Response::Pieces`] page.
pub const MAX_PIECES: usize = 1024;
/// The most aggregate ids in one [`Response::Aggs`] page.
pub const MAX_AGGS: usize = 4096;
/// The most buffers in one [`Request::Map`] (and descriptors in its answer).
pub const MAX_MAP: usize = 16;
/// The most buffers in one [`Response::Revoke`] page.
pub const MAX_REVOKE: usize = 4096;
/// The most domains listed in one [`Status`].
pub const MAX_STATUS_DOMAINS: usize = 256;
/// The longest domain name in a [`Status`], in bytes (longer hello names are cut).
pub const MAX_STATUS_NAME: usize = 64;

/// Rights on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireRights {
    /// No access.
    None,
    /// Read-only.
    Read,
    /// Read/write.
    ReadWrite,
}

impl From<Rights> for WireRights {
    fn from(r: Rights) -> Self {
        match r {
            Rights::None => WireRights::None,
            Rights::Read => WireRights::Read,
            Rights::ReadWrite => WireRights::ReadWrite,
        }
    }
}

impl From<WireRights> for Rights {
    fn from(r: WireRights) -> Self {
        match r {
            WireRights::None => Rights::None,
            WireRights::Read => Rights::Read,
            WireRights::ReadWrite => Rights::ReadWrite,
        }
    }
}

/// A transfer mode on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireMode {
    /// Move.
    Move,
    /// Share.
    Share,
    /// Copy.
    Copy,
}

impl From<Mode> for WireMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Move => WireMode::Move,
            Mode::Share => WireMode::Share,
            Mode::Copy => WireMode::Copy,
        }
    }
}

impl From<WireMode> for Mode {
    fn from(m: WireMode) -> Self {
        match m {
            WireMode::Move => Mode::Move,
            WireMode::Share => Mode::Share,
            WireMode::Copy => Mode::Copy,
        }
    }
}

/// A strength on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireStrength {
    /// Strong.
    Strong,
    /// Weak.
    Weak,
}

impl From<Strength> for WireStrength {
    fn from(s: Strength) -> Self {
        match s {
            Strength::Strong => WireStrength::Strong,
            Strength::Weak => WireStrength::Weak,
        }
    }
}

impl From<WireStrength> for Strength {
    fn from(s: WireStrength) -> Self {
        match s {
            WireStrength::Strong => Strength::Strong,
            WireStrength::Weak => Strength::Weak,
        }
    }
}

/// A memory access on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireAccess {
    /// Reading.
    Read,
    /// Reading and writing.
    Write,
}

impl From<Access> for WireAccess {
    fn from(a: Access) -> Self {
        match a {
            Access::Read => WireAccess::Read,
            Access::Write => WireAccess::Write,
        }
    }
}

impl From<WireAccess> for Access {
    fn from(a: WireAccess) -> Self {
        match a {
            WireAccess::Read => Access::Read,
            WireAccess::Write => Access::Write,
        }
    }
}

/// One maximal contiguous piece of an aggregate: bytes of a buffer, which lives in a memory
/// slot (one memfd). Clients cache mappings by slot: a slot outlives the buffers it holds when
/// the block manager recycles it to the same domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePiece {
    /// The buffer.
    pub buffer: u64,
    /// The slot holding the buffer.
    pub slot: u64,
    /// The first byte in the slot.
    pub offset: u64,
    /// The length in bytes.
    pub len: u64,
}

/// One buffer a client asks to map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapRequest {
    /// The buffer.
    pub buffer: u64,
    /// How the client will touch it.
    pub access: WireAccess,
}

/// One buffer granted by [`Response::Mapped`]; its descriptor travels beside the frame, in
/// the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedBuffer {
    /// The buffer.
    pub buffer: u64,
    /// The slot holding it; the descriptor is the slot's.
    pub slot: u64,
    /// The slot's length in bytes (map all of it).
    pub len: u64,
    /// The access the descriptor allows.
    pub access: WireAccess,
}

/// What a transfer did, for statistics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReport {
    /// Bytes the receiver got by reference to the sender's buffers.
    pub referenced_bytes: u64,
    /// Bytes copied into new buffers of the receiver's.
    pub copied_bytes: u64,
    /// Buffers sealed against writing by this transfer.
    pub sealed_buffers: u32,
    /// Seals the kernel refused (those buffers were copied instead).
    pub refused_seals: u32,
    /// Whether the transfer was honoured as weak.
    pub weak: bool,
}

/// One domain as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainStatus {
    /// Its id, as [`DomainId::to_bits`](cosh_core::DomainId::to_bits) makes it.
    pub domain: u64,
    /// The name it gave in its hello, cut to [`MAX_STATUS_NAME`] bytes.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// Its user id.
    pub uid: u32,
    /// Aggregates it holds.
    pub aggregates: u64,
    /// Buffers it holds.
    pub buffers: u64,
    /// Bytes of those buffers.
    pub bytes: u64,
    /// Bytes of live buffers it made (or that were copied for its transfers), counted
    /// against its quota.
    pub quota_bytes: u64,
    /// Those buffers, counted.
    pub quota_buffers: u64,
}

/// The block manager's limits, as status shows them (0: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of live buffers one domain may have made.
    pub domain_bytes: u64,
    /// Such buffers, counted.
    pub domain_buffers: u64,
    /// Bytes of live buffers the domains of one uid (but the block manager's) may have made.
    pub uid_bytes: u64,
    /// Such buffers, counted.
    pub uid_buffers: u64,
    /// Transfers one sender may have waiting for one receiver.
    pub sender_pending: u64,
    /// Transfers that may wait for one receiver.
    pub receiver_pending: u64,
    /// Connections one uid may have.
    pub uid_connections: u64,
    /// Connections in all (what the descriptor limit leaves room for).
    pub connections: u64,
    /// Buffers in all, free ones included (each is an open descriptor).
    pub buffers: u64,
    /// The block manager's open-descriptor limit.
    pub descriptors: u64,
}

/// Counters of transfers by mode and by how they were carried out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferCounts {
    /// Transfers by move.
    pub moves: u64,
    /// Transfers by share.
    pub shares: u64,
    /// Transfers by copy.
    pub copies: u64,
    /// Transfers honoured as weak.
    pub weak: u64,
    /// Pieces carried by descriptor (by reference).
    pub by_descriptor: u64,
    /// Buffers sealed.
    pub by_seal: u64,
    /// Pieces carried by copy.
    pub by_copy: u64,
    /// Bytes copied.
    pub copied_bytes: u64,
    /// Seals refused by the kernel (copied instead).
    pub refused_seals: u64,
    /// Transfers sent to domains of other pools and confirmed.
    pub exported: u64,
    /// Transfers received from other pools.
    pub imported: u64,
    /// Weak transfers to other pools lost after their senders were answered (the
    /// destination failed, or the link broke, before the copy).
    pub lost: u64,
    /// Microseconds the copy engine spent copying transfers from other pools (its bytes
    /// are in `copied_bytes`).
    pub engine_busy_us: u64,
    /// Transfers whose bytes the libraries copied on a direct ring (counted in `moves`,
    /// `shares` or `copies` too, and in `weak` when weak).
    pub inline: u64,
    /// Their bytes (not in `copied_bytes`, which counts the block manager's copies).
    pub inline_bytes: u64,
}

impl SmallTransfers {
    /// What was measured, in words (for `cosh status` and the benchmarks): `chosen at start-up
    /// from: ...`, or that it was set by hand.
    pub fn measured(&self) -> String {
        let mut parts = Vec::new();
        if self.fixed {
            parts.push("inline limits set by coshd --inline-max".to_string());
        }
        if self.share_fixed {
            parts.push("share copies set by coshd --share-copy-max".to_string());
        }
        if !(self.fixed && self.share_fixed) {
            parts.push(format!(
                "chosen at start-up from: ring {} ns/KiB, hand-off to another process {:.1} us, mapping a new buffer {:.1} us + {:.1} us/MiB, copying a large buffer {:.1} us/MiB, unmapping and sealing {:.1} us/MiB",
                self.ring_ns_per_kib,
                self.handoff_ns as f64 / 1000.0,
                self.map_ns as f64 / 1000.0,
                self.map_ns_per_mib as f64 / 1000.0,
                self.copy_ns_per_mib as f64 / 1000.0,
                self.seal_ns_per_mib as f64 / 1000.0
            ));
        }
        parts.join("; ")
    }
}

/// The copy-versus-reference policy for small transfers between domains of one pool, chosen
/// by the block manager from what it measured when it started (see `PROTOCOL.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmallTransfers {
    /// A strong transfer (or a copy) of an aggregate of at most this many bytes that the
    /// sender's library knows to be one piece travels inline: its bytes copied on the
    /// direct ring to the receiver, which lands them in a buffer of its own. 0: never.
    pub inline_max: u64,
    /// The same for a weak move or share to a receiver that does not map the buffer yet
    /// (one that does takes it by reference: nothing to copy, nothing to map).
    pub inline_max_weak: u64,
    /// Measured: nanoseconds to carry one KiB inline (the sender's copy into the ring, the
    /// receiver's copy out of it into its buffer).
    pub ring_ns_per_kib: u64,
    /// Measured: nanoseconds the block manager's path adds to a transfer, one more process
    /// woken (the median wake-up of a sleeping thread by another).
    pub handoff_ns: u64,
    /// Measured: nanoseconds a receiver spends mapping a buffer it never mapped (a 4 KiB one:
    /// the descriptor's round trip to the block manager is `handoff_ns` more).
    pub map_ns: u64,
    /// Measured: nanoseconds more per MiB of that buffer.
    pub map_ns_per_mib: u64,
    /// Whether the limits were set by hand (`coshd --inline-max`) rather than chosen.
    pub fixed: bool,
    /// A strong share through the block manager of a buffer never shared, referencing at
    /// most this many bytes of it, copies them into a buffer of the receiver's rather than
    /// seal the buffer and have the receiver map it (0: never; see `PROTOCOL.md`).
    pub share_copy_max: u64,
    /// Measured: nanoseconds per MiB for the block manager to copy a buffer too large for
    /// the caches.
    pub copy_ns_per_mib: u64,
    /// Measured: nanoseconds per MiB for a sender to drop its writable mapping of a buffer
    /// it filled, and for the kernel to seal it, as a strong share by reference needs.
    pub seal_ns_per_mib: u64,
    /// Whether `share_copy_max` was set by hand (`coshd --share-copy-max`).
    pub share_fixed: bool,
}

/// A link between this block manager and another pool's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// The other pool.
    pub pool: u32,
    /// Opened by this block manager (its transfers go out on it) or by the other.
    pub outgoing: bool,
    /// Transfers on their way: sent and not yet confirmed (outgoing), or being copied
    /// (incoming).
    pub in_flight: u64,
    /// Whether the connection is up (an outgoing link is opened on first use).
    pub open: bool,
    /// Over TCP (another host) rather than a socket of this machine.
    pub remote: bool,
}

/// A DMA model pacing a block manager's copies (an emulation, not this machine's speed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmaStatus {
    /// Set-up latency per copy, in microseconds.
    pub setup_us: u64,
    /// Bytes per second once set up.
    pub bytes_per_second: u64,
}

/// The block manager's state, for `cosh status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The pool served.
    pub pool: u32,
    /// The block manager's process id.
    pub pid: u32,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// Connected domains.
    pub domain_count: u64,
    /// Up to [`MAX_STATUS_DOMAINS`] of them.
    pub domains: Vec<DomainStatus>,
    /// Buffers in use (held by some aggregate).
    pub buffers: u64,
    /// Bytes of those buffers.
    pub bytes_in_use: u64,
    /// Prefaulted buffers waiting in free lists.
    pub free_buffers: u64,
    /// Bytes of those.
    pub free_bytes: u64,
    /// Bytes of memory the pool holds (in use and recycled; buffers are rounded up to size
    /// classes).
    pub pool_bytes: u64,
    /// The most it may hold.
    pub pool_limit: u64,
    /// Registered names.
    pub names: u64,
    /// Transfer counters.
    pub transfers: TransferCounts,
    /// Links to other pools' block managers (at most [`MAX_STATUS_LINKS`]).
    pub links: Vec<LinkStatus>,
    /// The DMA model pacing copies from other pools, if one is on.
    pub dma: Option<DmaStatus>,
    /// Its limits and quotas.
    pub limits: Limits,
    /// The copy-versus-reference policy for small transfers, and what it was chosen from.
    pub small: SmallTransfers,
}

/// The most links a status lists.
pub const MAX_STATUS_LINKS: usize = 256;

impl Request {
    /// Whether this is a record (a request without answer, read only from the request ring).
    pub fn is_record(&self) -> bool {
        matches!(
            self,
            Request::Direct { .. }
                | Request::Wake { .. }
                | Request::Release { .. }
                | Request::Inline { .. }
                | Request::Land { .. }
        )
    }
}

/// A client's request. See `PROTOCOL.md` for each one's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `alloc(len)` → [`Response::Agg`].
    Alloc {
        /// Length in bytes.
        len: u64,
    },
    /// `incref` → [`Response::Done`].
    Incref {
        /// The aggregate.
        agg: u64,
    },
    /// `decref` → [`Response::Done`].
    Decref {
        /// The aggregate.
        agg: u64,
    },
    /// `getlen` and `getrights` → [`Response::Info`].
    Info {
        /// The aggregate.
        agg: u64,
    },
    /// Iteration: the pieces from `offset` → [`Response::Pieces`], at most `max` of them (and
    /// at most [`MAX_PIECES`]).
    Pieces {
        /// The aggregate.
        agg: u64,
        /// How the pieces will be touched (checked against the rights).
        access: WireAccess,
        /// Where to start.
        offset: u64,
        /// The most pieces wanted.
        max: u32,
    },
    /// Descriptors for buffers the client may touch → [`Response::Mapped`].
    Map {
        /// At most [`MAX_MAP`] buffers.
        buffers: Vec<MapRequest>,
    },
    /// `concat` → [`Response::Agg`].
    Concat {
        /// The first part.
        first: u64,
        /// The second part.
        second: u64,
    },
    /// `select` → [`Response::Agg`].
    Select {
        /// The aggregate.
        agg: u64,
        /// The first byte.
        offset: u64,
        /// The length.
        len: u64,
    },
    /// `find_related` → [`Response::Aggs`], ids above `after` only.
    FindRelated {
        /// The aggregate.
        agg: u64,
        /// The rights a culprit holds at least.
        min_rights: WireRights,
        /// Page start: only ids greater than this.
        after: u64,
    },
    /// `downgrade` → [`Response::Done`].
    Downgrade {
        /// The aggregate.
        agg: u64,
        /// The new rights.
        rights: WireRights,
    },
    /// `transfer` / `attach_transfer` → optionally [`Response::Revoke`], then
    /// [`Response::Transferred`].
    Transfer {
        /// The aggregate.
        agg: u64,
        /// The receiving domain.
        dest: u64,
        /// The mode.
        mode: WireMode,
        /// [`TransferFlags`](cosh_core::TransferFlags) bits.
        flags: u32,
        /// Whether the receiver takes it with `attach_recv` (a ticket is returned).
        ticketed: bool,
        /// The sender already dropped every writable mapping of every slot of `agg`, so a
        /// strong share needs no [`Response::Revoke`] round trip. A sender that claims it
        /// falsely only makes the seal fail (the block manager then copies).
        revoked: bool,
        /// Between domains with a direct ring: the transfer's place in the order of
        /// everything this sender sent the receiver since the ring opened (ring records
        /// included), handed to the receiver with the transfer.
        seq: Option<u64>,
    },
    /// The answer to [`Response::Revoke`]: the mappings are gone.
    Revoked,
    /// `receive` → [`Response::Received`]; with nothing pending it waits up to `timeout_ms`
    /// (`None`: for ever, `Some(0)`: not at all) and then fails with `nothing_pending`.
    Receive {
        /// Only from this domain.
        source: Option<u64>,
        /// How long to wait.
        timeout_ms: Option<u64>,
    },
    /// `attach_recv` → [`Response::Received`], waiting like [`Request::Receive`].
    AttachRecv {
        /// The sender.
        source: u64,
        /// The ticket.
        ticket: u64,
        /// How long to wait.
        timeout_ms: Option<u64>,
    },
    /// Trust `peer`: weak transfers that leave it with excess permissions are honoured →
    /// [`Response::Done`].
    Trust {
        /// The trusted domain.
        peer: u64,
    },
    /// Registers this domain under `name` (gone when it disconnects) → [`Response::Done`].
    Register {
        /// At most [`MAX_NAME`] bytes.
        name: String,
    },
    /// Finds the domain registered under `name` → [`Response::Domain`].
    Lookup {
        /// At most [`MAX_NAME`] bytes.
        name: String,
    },
    /// The block manager's state → [`Response::Status`].
    Status,
    /// Asks the block manager to shut down (only its own uid or root may) → [`Response::Done`].
    Shutdown,
    /// Opens the shared-memory rings for this connection → [`Response::RingsOpened`], on the
    /// socket. From then on, requests that pass no descriptors may travel through the request
    /// ring; each is answered on the channel it came by.
    OpenRings {
        /// Records per ring (a power of two, at most [`MAX_RING_RECORDS`]; the block manager
        /// may choose fewer, but enough for the largest frame).
        capacity: u32,
    },
    /// Opens a direct ring to `to` for weak transfers → [`Response::DirectOpened`], on the
    /// socket (a descriptor goes with it). Refused unless `to` trusts this domain and both
    /// use rings. From then on every transfer to `to` goes through the ring, in order.
    OpenDirect {
        /// The receiving domain.
        to: u64,
    },
    /// The direct ring from `from` announced by [`Response::DirectInbound`] →
    /// [`Response::DirectAttached`], on the socket (a descriptor goes with it).
    AttachDirect {
        /// The sending domain.
        from: u64,
    },
    /// A record, not a request (no answer), and only through the request ring: this domain
    /// moved or shared `agg` to `to` weakly on their direct ring, where the receiver knows
    /// it as `new`, the next id of this domain's lease. Applied before any later request of
    /// any domain; one the ledger cannot honour by reference cuts the sender off.
    Direct {
        /// The sender's aggregate.
        agg: u64,
        /// The receiving domain.
        to: u64,
        /// Move or share.
        mode: WireMode,
        /// The receiver's aggregate id.
        new: u64,
    },
    /// A record, not a request (no answer), and only through the request ring: `to` said on
    /// its direct ring from this domain that it is parked in a receive here; end that wait
    /// with [`Response::Woken`].
    Wake {
        /// The parked receiver.
        to: u64,
    },
    /// A fresh lease of aggregate ids for direct transfers → [`Response::Leased`].
    Lease,
    /// A record, not a request (no answer), and only through the request ring: `decref` of an
    /// aggregate this domain knows it holds. Applied before any later request of any domain;
    /// one the ledger refuses cuts the client off.
    Release {
        /// The aggregate.
        agg: u64,
    },
    /// [`Request::Alloc`] without zeroing a recycled buffer: its bytes are unspecified, but
    /// only ever bytes this domain could already see (its free list holds buffers no other
    /// domain can map). For producers that overwrite what they allocate.
    AllocUnzeroed {
        /// Bytes.
        len: u64,
    },
    /// The pool this block manager serves and its kind → [`Response::PoolInfo`]: a client
    /// of a non-coherent pool keeps its own cache of the memory it maps, flushes it before
    /// every transfer out and refreshes it after every receive.
    PoolInfo,
    /// A record, not a request (no answer), and only through the request ring: this domain
    /// copied the bytes of `agg` on its direct ring to `to` (an inline transfer); `agg`
    /// keeps what `mode` leaves it. Applied before any later request of any domain; one the
    /// ledger refuses cuts the client off.
    Inline {
        /// The sender's aggregate.
        agg: u64,
        /// The receiving domain.
        to: u64,
        /// Move, share or copy.
        mode: WireMode,
        /// Whether the transfer was weak (for the counters: a copy is a correct way to
        /// carry out either strength).
        weak: bool,
    },
    /// A record, not a request (no answer), and only through the request ring: this domain
    /// landed an inline transfer in `agg`, a buffer of its own held once by its library, which
    /// becomes its first `len` bytes with `rights`. Applied like `Inline`.
    Land {
        /// The landing aggregate.
        agg: u64,
        /// The bytes received.
        len: u64,
        /// The rights the transfer gives.
        rights: WireRights,
    },
    /// The copy-versus-reference policy for small transfers → [`Response::SmallTransfers`].
    SmallTransfers,
    /// Up to `count` (at most [`MAX_ALLOC_MANY`]) buffers of `len` bytes of this domain's
    /// own, unzeroed like [`Request::AllocUnzeroed`], in one round trip →
    /// [`Response::AllocatedMany`] (fewer when a limit is reached first; `len` must be
    /// larger than a slab piece).
    AllocMany {
        /// Bytes each.
        len: u64,
        /// How many.
        count: u32,
    },
}

/// The most buffers one [`Request::AllocMany`] makes.
pub const MAX_ALLOC_MANY: u32 = 16;

/// One buffer made by [`Request::AllocMany`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatedBuffer {
    /// Its aggregate.
    pub agg: u64,
    /// Its one piece: the whole buffer.
    pub piece: WirePiece,
}

/// The kind of memory a pool has (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WirePoolKind {
    /// Cache-coherent shared memory.
    Host,
    /// Shared memory without coherence (emulated).
    Nc,
    /// Memory only the pool's own domains map (an accelerator's).
    Device,
}

/// The most records a per-client ring may have.
pub const MAX_RING_RECORDS: u32 = 1 << 14;

/// The block manager's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Done, nothing to return.
    Done,
    /// A new aggregate.
    Agg {
        /// Its id.
        agg: u64,
    },
    /// Length and rights.
    Info {
        /// Length in bytes.
        len: u64,
        /// Current rights.
        rights: WireRights,
    },
    /// A page of pieces.
    Pieces {
        /// At most [`MAX_PIECES`].
        pieces: Vec<WirePiece>,
        /// Whether pieces follow the last one (ask again from its end).
        more: bool,
    },
    /// Descriptors, in order, beside the frame.
    Mapped {
        /// At most [`MAX_MAP`].
        buffers: Vec<MappedBuffer>,
    },
    /// A page of aggregate ids, ascending.
    Aggs {
        /// At most [`MAX_AGGS`].
        aggs: Vec<u64>,
        /// Whether more follow the last one.
        more: bool,
    },
    /// Before a transfer proceeds: drop every mapping of these slots, then send
    /// [`Request::Revoked`] after the last page.
    Revoke {
        /// At most [`MAX_REVOKE`] slots.
        slots: Vec<u64>,
        /// Whether another page follows.
        more: bool,
    },
    /// The transfer is done.
    Transferred {
        /// The ticket, for a ticketed transfer.
        ticket: Option<u64>,
        /// What was done.
        report: TransferReport,
    },
    /// A transfer received.
    Received {
        /// The new aggregate.
        agg: u64,
        /// The sender.
        source: u64,
        /// The mode.
        mode: WireMode,
        /// The strength the sender asked for.
        strength: WireStrength,
        /// The ticket, for `attach_recv`.
        ticket: Option<u64>,
        /// The sender's sequence number, for a sender with a direct ring to this domain.
        seq: Option<u64>,
        /// Where it is, when it is one whole buffer: its reads need not ask.
        piece: Option<WirePiece>,
        /// With `piece`: every domain that maps the buffer, when this domain alone holds it
        /// read/write (so that it may travel on direct rings), at most [`MAX_MAPPERS`].
        mappers: Option<Vec<u64>>,
    },
    /// A domain found by name.
    Domain {
        /// Its id.
        domain: u64,
    },
    /// The block manager's state.
    Status(Box<Status>),
    /// A notice, not an answer: these slots are gone; drop their mappings, and read on for
    /// the answer. Sent before the answer to any request.
    Forget {
        /// At most [`MAX_REVOKE`] slots.
        slots: Vec<u64>,
    },
    /// The rings are open: two descriptors travel beside the frame, a memfd holding the
    /// request ring (client → block manager) at offset 0 and the answer ring right after
    /// it, and the eventfd that wakes the block manager.
    RingsOpened {
        /// Records per ring.
        capacity: u32,
    },
    /// The answer to `alloc` when the aggregate is one whole buffer of its own that may
    /// travel on direct rings (otherwise [`Response::Agg`]).
    Allocated {
        /// Its id.
        agg: u64,
        /// Its one piece.
        piece: WirePiece,
    },
    /// A direct ring is open: its memfd travels beside the frame (one ring, this domain
    /// produces), with a lease of aggregate ids for the transfers it will carry.
    DirectOpened {
        /// Records in the ring.
        capacity: u32,
        /// The first leased id.
        first: u64,
        /// How many ids.
        count: u64,
    },
    /// The direct ring asked for: its memfd travels beside the frame (this domain consumes).
    DirectAttached {
        /// Records in the ring.
        capacity: u32,
    },
    /// A notice, not an answer: `from` opened a direct ring to this domain, and every
    /// transfer it sends from now on comes that way; attach it with
    /// [`Request::AttachDirect`].
    DirectInbound {
        /// The sending domain.
        from: u64,
    },
    /// A notice, not an answer: `peer` disconnected, so the direct ring to it or from it is
    /// closed; transfers to it go through the block manager again (and fail).
    DirectClosed {
        /// The domain that left.
        peer: u64,
    },
    /// The answer to a waiting receive that a direct ring (or a new one) interrupted: look at
    /// the direct rings, then ask again.
    Woken,
    /// A lease of aggregate ids for direct transfers.
    Leased {
        /// The first id.
        first: u64,
        /// How many.
        count: u64,
    },
    /// The pool served.
    PoolInfo {
        /// Its id.
        pool: u32,
        /// Its kind of memory.
        kind: WirePoolKind,
        /// For an `Nc` pool: clients' caches write a line back and reload it at random, one
        /// chance in this many per request, as hardware caches evict (0: never).
        eviction: u32,
    },
    /// The copy-versus-reference policy for small transfers.
    SmallTransfers(SmallTransfers),
    /// The answer to `alloc` when the aggregate is a piece of a slab (a buffer holding several
    /// small allocations of this domain): where it is, so that the library reaches its bytes
    /// without asking. Never sent by reference on a direct ring (that would expose the slab).
    AllocatedPiece {
        /// Its id.
        agg: u64,
        /// Its one piece.
        piece: WirePiece,
    },
    /// The answer to [`Request::AllocMany`]: at least one buffer.
    AllocatedMany {
        /// The buffers.
        buffers: Vec<AllocatedBuffer>,
    },
}

/// The most mappers a [`DirectRecord::Transfer`] lists.
pub const MAX_MAPPERS: usize = 8;

/// Up to [`MAX_MAPPERS`] domain ids, kept inline (a record is read and written per
/// transfer, without allocating).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Mappers {
    len: u8,
    ids: [u64; MAX_MAPPERS],
}

impl Mappers {
    /// None.
    pub fn new() -> Mappers {
        Mappers::default()
    }

    /// These ids, or `None` when there are more than [`MAX_MAPPERS`].
    pub fn from_slice(ids: &[u64]) -> Option<Mappers> {
        let mut m = Mappers::new();
        for id in ids {
            if !m.push(*id) {
                return None;
            }
        }
        Some(m)
    }

    /// Adds `id` (even if present); `false` when full.
    pub fn push(&mut self, id: u64) -> bool {
        let Some(slot) = self.ids.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = id;
        self.len += 1;
        true
    }

    /// The ids.
    pub fn as_slice(&self) -> &[u64] {
        &self.ids[..usize::from(self.len)]
    }

    /// Whether `id` is among them.
    pub fn contains(&self, id: u64) -> bool {
        self.as_slice().contains(&id)
    }

    /// How many.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for Mappers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// What a direct ring carries, one frame per transfer, in the order they were sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectRecord {
    /// A weak move or share by reference: the receiver holds `agg` already.
    Transfer {
        /// Its place in the order of everything the sender sent this receiver since the
        /// ring opened; transfers that went through the block manager carry theirs in
        /// [`Response::Received`].
        seq: u64,
        /// The receiver's aggregate id.
        agg: u64,
        /// Move (read/write) or share (read-only).
        mode: WireMode,
        /// Its one piece: a whole buffer.
        piece: WirePiece,
        /// Every domain that may map the buffer, the receiver included.
        mappers: Mappers,
    },
    /// The transfer numbered `seq` went through the block manager: take it with a receive
    /// from this sender (its answer carries the number).
    Queued {
        /// Its number.
        seq: u64,
    },
    /// An inline transfer: its `len` bytes wait in the ring's staging area from position
    /// `at` (a wrapping byte count; the offset is `at` modulo the area's size, and the bytes
    /// never wrap); the receiver copies them into a buffer of its own, then says it is done
    /// with them by raising the staging counter to `at + len`. A `streamed` one is announced
    /// before all its bytes are there: the sender raises the ring's filled counter as it
    /// copies them, and the receiver copies out only bytes below it.
    Inline {
        /// Its place in the sender's order, as for `Transfer`.
        seq: u64,
        /// Move, share or copy: the rights the receiver gets.
        mode: WireMode,
        /// Whether the transfer was weak (reported to the receiver as asked).
        weak: bool,
        /// How many bytes.
        len: u64,
        /// Where they start in the staging area.
        at: u32,
        /// Whether the bytes arrive behind the record (the filled counter says how far).
        streamed: bool,
    },
}

/// The most bytes an inline transfer carries (a quarter of a direct ring's staging area, so
/// that several can be in flight).
pub const MAX_INLINE: u64 = 1024 * 1024;

/// Why a direct-ring record did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad direct-ring record: {0}")]
pub struct RecordError(pub String);

/// The most bytes a direct-ring record takes.
pub const MAX_RECORD: usize = 51 + 8 * MAX_MAPPERS;

const RECORD_TRANSFER: u8 = 1;
const RECORD_QUEUED: u8 = 2;
const RECORD_INLINE: u8 = 3;
const RECORD_STREAMED: u8 = 4;

/// Encodes a direct-ring record. Records use a fixed little-endian layout rather than
/// postcard (one is written and read per transfer): a tag byte, then for `Transfer` the
/// sequence number, the aggregate, the mode (0 move, 1 share), the piece (buffer, slot,
/// offset, length), the mapper count (one byte) and the mappers, every number eight bytes;
/// for `Queued` the sequence number; for `Inline` the sequence number, the mode (0 move,
/// 1 share, 2 copy), the strength (0 strong, 1 weak), the length and the staging position
/// (four bytes), under tag 3, or tag 4 when it is streamed.
pub fn encode_record(r: &DirectRecord) -> Result<Vec<u8>, RecordError> {
    let mut out = [0u8; MAX_RECORD];
    let n = encode_record_into(r, &mut out)?;
    Ok(out[..n].to_vec())
}

/// [`encode_record`] into a buffer of [`MAX_RECORD`] bytes; returns the length.
pub fn encode_record_into(
    r: &DirectRecord,
    out: &mut [u8; MAX_RECORD],
) -> Result<usize, RecordError> {
    check_record(r)?;
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    match r {
        DirectRecord::Transfer {
            seq,
            agg,
            mode,
            piece,
            mappers,
        } => {
            put(&[RECORD_TRANSFER]);
            put(&seq.to_le_bytes());
            put(&agg.to_le_bytes());
            put(&[u8::from(*mode == WireMode::Share)]);
            for v in [piece.buffer, piece.slot, piece.offset, piece.len] {
                put(&v.to_le_bytes());
            }
            // At most MAX_MAPPERS (checked above).
            put(&[mappers.len() as u8]);
            for m in mappers.as_slice() {
                put(&m.to_le_bytes());
            }
        }
        DirectRecord::Queued { seq } => {
            put(&[RECORD_QUEUED]);
            put(&seq.to_le_bytes());
        }
        DirectRecord::Inline {
            seq,
            mode,
            weak,
            len,
            at,
            streamed,
        } => {
            put(&[if *streamed {
                RECORD_STREAMED
            } else {
                RECORD_INLINE
            }]);
            put(&seq.to_le_bytes());
            put(&[match mode {
                WireMode::Move => 0,
                WireMode::Share => 1,
                WireMode::Copy => 2,
            }]);
            put(&[u8::from(*weak)]);
            put(&len.to_le_bytes());
            put(&at.to_le_bytes());
        }
    }
    Ok(at)
}

/// Decodes a direct-ring record: exact length, known tag and mode, bounded mapper count,
/// never a panic. Every record has exactly one encoding.
pub fn decode_record(bytes: &[u8]) -> Result<DirectRecord, RecordError> {
    let bad = |why: &str| RecordError(why.to_string());
    let u64_at = |at: usize| -> Result<u64, RecordError> {
        bytes
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| bad("truncated"))
    };
    match bytes.first() {
        Some(&RECORD_QUEUED) => {
            if bytes.len() != 9 {
                return Err(bad("a queued marker is 9 bytes"));
            }
            Ok(DirectRecord::Queued { seq: u64_at(1)? })
        }
        Some(&tag @ (RECORD_INLINE | RECORD_STREAMED)) => {
            if bytes.len() != 23 {
                return Err(bad("an inline transfer is 23 bytes"));
            }
            let mode = match bytes[9] {
                0 => WireMode::Move,
                1 => WireMode::Share,
                2 => WireMode::Copy,
                m => return Err(RecordError(format!("mode {m}"))),
            };
            let weak = match bytes[10] {
                0 => false,
                1 => true,
                w => return Err(RecordError(format!("strength {w}"))),
            };
            Ok(DirectRecord::Inline {
                seq: u64_at(1)?,
                mode,
                weak,
                len: u64_at(11)?,
                at: u32::from_le_bytes([bytes[19], bytes[20], bytes[21], bytes[22]]),
                streamed: tag == RECORD_STREAMED,
            })
        }
        Some(&RECORD_TRANSFER) => {
            let mode = match bytes.get(17) {
                Some(0) => WireMode::Move,
                Some(1) => WireMode::Share,
                Some(m) => return Err(RecordError(format!("mode {m}"))),
                None => return Err(bad("truncated")),
            };
            let n = usize::from(*bytes.get(50).ok_or_else(|| bad("truncated"))?);
            if n > MAX_MAPPERS {
                return Err(RecordError(format!("{n} mappers, more than {MAX_MAPPERS}")));
            }
            if bytes.len() != 51 + 8 * n {
                return Err(RecordError(format!(
                    "{} bytes for a transfer with {n} mappers",
                    bytes.len()
                )));
            }
            let mut mappers = Mappers::new();
            for i in 0..n {
                // At most MAX_MAPPERS (checked above).
                mappers.push(u64_at(51 + 8 * i)?);
            }
            Ok(DirectRecord::Transfer {
                seq: u64_at(1)?,
                agg: u64_at(9)?,
                mode,
                piece: WirePiece {
                    buffer: u64_at(18)?,
                    slot: u64_at(26)?,
                    offset: u64_at(34)?,
                    len: u64_at(42)?,
                },
                mappers,
            })
        }
        Some(t) => Err(RecordError(format!("record tag {t}"))),
        None => Err(bad("empty")),
    }
}

fn check_record(r: &DirectRecord) -> Result<(), RecordError> {
    match r {
        DirectRecord::Queued { .. } | DirectRecord::Inline { .. } => Ok(()),
        DirectRecord::Transfer { mode, .. } => {
            if *mode == WireMode::Copy {
                return Err(RecordError("a copy on a direct ring".into()));
            }
            Ok(())
        }
    }
}

/// Checks the bounds that keep every message within a frame; `Err` names what is wrong.
pub(crate) fn check_request(r: &Request) -> Result<(), String> {
    match r {
        Request::Map { buffers } if buffers.len() > MAX_MAP => Err(format!(
            "{} buffers in one map request, more than {MAX_MAP}",
            buffers.len()
        )),
        Request::Register { name } | Request::Lookup { name } => check_name(name),
        _ => Ok(()),
    }
}

/// Checks a name for the name service.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("a name must not be empty".into())
    } else if name.len() > MAX_NAME {
        Err(format!(
            "a name of {} bytes is longer than {MAX_NAME}",
            name.len()
        ))
    } else if name.chars().any(char::is_control) {
        Err("a name must not contain control characters".into())
    } else {
        Ok(())
    }
}

pub(crate) fn check_response(r: &Response) -> Result<(), String> {
    let over = |what: &str, n: usize, max: usize| {
        if n > max {
            Err(format!("{n} {what} in one page, more than {max}"))
        } else {
            Ok(())
        }
    };
    match r {
        Response::Pieces { pieces, .. } => over("pieces", pieces.len(), MAX_PIECES),
        Response::Mapped { buffers } => over("descriptors", buffers.len(), MAX_MAP),
        Response::Aggs { aggs, .. } => over("aggregates", aggs.len(), MAX_AGGS),
        Response::Revoke { slots, .. } | Response::Forget { slots } => {
            over("slots", slots.len(), MAX_REVOKE)
        }
        Response::Received {
            mappers: Some(m), ..
        } => over("mappers", m.len(), MAX_MAPPERS),
        Response::AllocatedMany { buffers } => {
            over("buffers", buffers.len(), MAX_ALLOC_MANY as usize)
        }
        Response::Status(s) => {
            over("domains", s.domains.len(), MAX_STATUS_DOMAINS)?;
            over("links", s.links.len(), MAX_STATUS_LINKS)?;
            for d in &s.domains {
                if d.name.len() > MAX_STATUS_NAME {
                    return Err(format!(
                        "a domain name of {} bytes in a status, more than {MAX_STATUS_NAME}",
                        d.name.len()
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
