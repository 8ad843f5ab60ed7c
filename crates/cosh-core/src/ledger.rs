//! The rights ledger: the single authority on who holds what, and how each transfer happens.
//!
//! The ledger is a pure state machine. It records every domain's aggregates (chunks, rights,
//! reference counts, related groups), every buffer (pool, length, whether it is frozen
//! read-only or sealed) and every domain's memory permission on every buffer it maps, which
//! may exceed its rights after weak transfers, and on a sender's own buffer whose bytes
//! travelled by copy (a copy changes no permission). A transfer is two steps:
//!
//! 1. [`Ledger::plan_transfer`] checks the request against Table 1, the weak/strong rules, the
//!    receiver's trust and the related-aggregate rule, and returns a [`TransferPlan`]: what the
//!    sender keeps, what the receiver gets, which pieces travel by reference and which by copy
//!    (with the reason), which mappings must change and which buffers must be sealed. Planning
//!    changes nothing.
//! 2. [`Ledger::commit`] applies a plan made against the current state and returns the copy
//!    operations and new buffers an executor must carry out.
//!
//! An executor that cannot carry out part of a plan (a seal was refused) plans again with that
//! buffer in [`TransferRequest::force_copy`]: implementing a transfer as a copy is always
//! correct.
//!
//! **Buffer granularity.** The buffer is the unit of mapping and protection, so every routing
//! decision is made per buffer: all pieces of one buffer travel the same way.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use smallvec::SmallVec;

use crate::chunk::{Chunk, ChunkList, ConcatError, MAX_CHUNKS, MAX_LEN};
use crate::error::{Error, Operation, Result};
use crate::id::{AggId, BufferId, DomainId, PoolId, Ticket};
use crate::rights::{Access, Mode, RelatedPolicy, Rights, Strength, TransferFlags};

/// How a strong move may be carried out by reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveMechanism {
    /// Every other domain's mapping can be revoked, so a strong move may hand the buffer over.
    Remap,
    /// Mappings cannot be revoked (Linux with 4 KiB pages): strong moves copy into a buffer of
    /// the receiver's.
    Copy,
}

/// The mechanism choices of an implementation: everything the ledger needs to know to turn
/// what the semantics allow into what actually happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How strong moves are carried out.
    pub strong_move: MoveMechanism,
    /// A buffer of which the transfer references fewer bytes than this is copied.
    pub min_reference_bytes: u64,
    /// A buffer of which the transfer references less than this percentage is copied, so that
    /// a receiver is not exposed to a large buffer for a small part of it.
    pub min_reference_percent: u8,
    /// A strong share of a buffer that was never shared, of which it references at most
    /// this many bytes, copies them into a buffer of the receiver's instead of sealing the
    /// buffer and mapping it in the receiver (with 4 KiB pages, dropping the sender's writable
    /// mapping and making the receiver's cost more per page than a copy). The buffer's next
    /// strong share seals it, so data shared with many receivers is copied at most once.
    /// 0: never.
    pub share_copy_max: u64,
}

impl Policy {
    /// Everything travels by reference wherever the semantics allow it.
    pub fn by_reference() -> Self {
        Policy {
            strong_move: MoveMechanism::Remap,
            min_reference_bytes: 0,
            min_reference_percent: 0,
            share_copy_max: 0,
        }
    }

    /// The Linux host pool: strong moves copy, pieces under 8 KiB copy (cheaper than mapping),
    /// and a buffer is referenced only when the transfer covers at least half of it.
    pub fn linux_host() -> Self {
        Policy {
            strong_move: MoveMechanism::Copy,
            min_reference_bytes: 8 * 1024,
            min_reference_percent: 50,
            share_copy_max: 0,
        }
    }

    /// Every transfer is a copy. Always correct (invariant 3).
    pub fn copy_always() -> Self {
        Policy {
            strong_move: MoveMechanism::Copy,
            min_reference_bytes: u64::MAX,
            min_reference_percent: 100,
            share_copy_max: 0,
        }
    }
}

/// Why a piece travels by copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CopyReason {
    /// The transfer is a copy.
    ModeIsCopy,
    /// Related aggregates of the sender hold the buffer with more rights than the transfer
    /// leaves (the related-aggregate rule).
    Related,
    /// Other, unrelated aggregates of the sender (slab neighbours) hold the buffer with more
    /// rights than the transfer leaves.
    SharedBuffer,
    /// The receiver's pool cannot map the buffer.
    OtherPool,
    /// The executor asked for a copy (for example a seal was refused).
    Forced,
    /// The transfer references too few bytes of the buffer to be worth mapping.
    Small,
    /// The transfer references too small a part of the buffer to expose all of it.
    Exposure,
    /// A strong move, and mappings cannot be revoked.
    StrongMove,
    /// A move of an aggregate that refers to some bytes of the buffer more than once: by
    /// reference the receiver's read/write copies of those bytes would alias each other.
    RepeatedBytes,
    /// A strong share of a buffer never shared before, small enough that copying it costs
    /// less than sealing it and mapping it ([`Policy::share_copy_max`]). The copy is the
    /// receiver's alone and is not sealed.
    SealCost,
}

/// How a piece travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// The receiver gets a reference to the same buffer.
    Reference,
    /// The receiver gets a copy in a new buffer of its pool.
    Copy(CopyReason),
}

/// One piece of the transferred aggregate and how it travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedPiece {
    /// The sender's bytes.
    pub source: Chunk,
    /// How they travel.
    pub route: Route,
}

/// A change to one domain's memory permission on one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MappingChange {
    /// The domain whose mapping changes.
    pub domain: DomainId,
    /// The buffer.
    pub buffer: BufferId,
    /// The permission before.
    pub from: Rights,
    /// The permission after (`Rights::None`: unmap).
    pub to: Rights,
}

/// Whether a transfer carries a ticket for `attach_recv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Delivered to the next `receive` from this source.
    #[default]
    Queued,
    /// Delivered to `attach_recv` with the ticket the commit returns.
    Ticketed,
}

/// A transfer to plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRequest {
    /// The sending domain.
    pub sender: DomainId,
    /// The sender's aggregate.
    pub agg: AggId,
    /// The receiving domain.
    pub receiver: DomainId,
    /// Move, share or copy.
    pub mode: Mode,
    /// Strength and related-aggregate policy.
    pub flags: TransferFlags,
    /// Queued or ticketed delivery.
    pub delivery: Delivery,
    /// Buffers the executor insists on copying.
    pub force_copy: BTreeSet<BufferId>,
    /// The executor cannot afford the copies [`Policy::share_copy_max`] would choose (the
    /// pool is full): pass by reference whatever the semantics allow.
    pub no_cost_copies: bool,
}

impl TransferRequest {
    /// A queued transfer with no forced copies.
    pub fn new(
        sender: DomainId,
        agg: AggId,
        receiver: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Self {
        TransferRequest {
            sender,
            agg,
            receiver,
            mode,
            flags,
            delivery: Delivery::Queued,
            force_copy: BTreeSet::new(),
            no_cost_copies: false,
        }
    }
}

/// What a transfer will do, computed by [`Ledger::plan_transfer`]. Read-only: an executor
/// cannot edit a plan into one the ledger did not make; to copy more, it plans again with
/// [`TransferRequest::force_copy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferPlan {
    request: TransferRequest,
    reported_strength: Strength,
    effective_strength: Strength,
    sender_keeps: Rights,
    receiver_gets: Rights,
    pieces: Vec<PlannedPiece>,
    mapping_changes: Vec<MappingChange>,
    seals: Vec<BufferId>,
    generation: u64,
}

impl TransferPlan {
    /// The strength the receiver is told (the requested one; copy is always strong).
    pub fn reported_strength(&self) -> Strength {
        self.reported_strength
    }

    /// The strength actually applied: weak only when requested, not a copy, and the receiver
    /// trusts every domain left with permissions beyond its rights.
    pub fn effective_strength(&self) -> Strength {
        self.effective_strength
    }

    /// The rights the sender's aggregate keeps.
    pub fn sender_keeps(&self) -> Rights {
        self.sender_keeps
    }

    /// The rights the receiver's aggregate gets.
    pub fn receiver_gets(&self) -> Rights {
        self.receiver_gets
    }

    /// The transferred bytes in order, each with its route.
    pub fn pieces(&self) -> &[PlannedPiece] {
        &self.pieces
    }

    /// Mapping changes to make before the receiver is told (sorted).
    pub fn mapping_changes(&self) -> &[MappingChange] {
        &self.mapping_changes
    }

    /// Existing buffers to seal against writing.
    pub fn seals(&self) -> &[BufferId] {
        &self.seals
    }

    /// The buffers that travel by reference.
    pub fn referenced_buffers(&self) -> BTreeSet<BufferId> {
        self.pieces
            .iter()
            .filter(|p| p.route == Route::Reference)
            .map(|p| p.source.buffer)
            .collect()
    }

    /// Bytes that travel by copy.
    pub fn copied_bytes(&self) -> u64 {
        self.pieces
            .iter()
            .filter(|p| p.route != Route::Reference)
            .map(|p| p.source.len)
            .sum()
    }

    /// The buffers the commit makes for the copies, in order: one per run of consecutive
    /// copied pieces, with its length and whether it is sealed once filled (a strong share's
    /// copy is, unless every piece of it was copied for [`CopyReason::SealCost`]: that one is
    /// the receiver's alone, so the executor may reuse memory the receiver maps writable).
    pub fn copy_runs(&self) -> Vec<CopyRun> {
        let shared_strong =
            self.request.mode == Mode::Share && self.effective_strength == Strength::Strong;
        let mut runs = Vec::new();
        let mut i = 0;
        while i < self.pieces.len() {
            if self.pieces[i].route == Route::Reference {
                i += 1;
                continue;
            }
            let end = self.pieces[i..]
                .iter()
                .position(|p| p.route == Route::Reference)
                .map_or(self.pieces.len(), |n| i + n);
            let run = &self.pieces[i..end];
            runs.push(CopyRun {
                pieces: i..end,
                len: run.iter().map(|p| p.source.len).sum(),
                seal: shared_strong
                    && run
                        .iter()
                        .any(|p| p.route != Route::Copy(CopyReason::SealCost)),
            });
            i = end;
        }
        runs
    }
}

/// One buffer a transfer's commit makes for copied pieces ([`TransferPlan::copy_runs`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyRun {
    /// The plan's pieces copied into it.
    pub pieces: std::ops::Range<usize>,
    /// Its length in bytes.
    pub len: u64,
    /// Whether it must be sealed against writing once filled.
    pub seal: bool,
}

/// A buffer created by the ledger, which the executor must provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewBuffer {
    /// Its id.
    pub id: BufferId,
    /// Its pool.
    pub pool: PoolId,
    /// Its length in bytes.
    pub len: u64,
    /// Whether it must be sealed against writing once filled.
    pub seal: bool,
}

/// One copy the executor must perform, from the sender's bytes into a new buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOp {
    /// Source bytes.
    pub from: Chunk,
    /// Destination bytes, in a buffer of [`Committed::new_buffers`].
    pub to: Chunk,
}

/// What [`Ledger::commit`] did and what the executor must now carry out, in order: create the
/// new buffers, perform the copies, apply the mapping changes and seals, then tell the
/// receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The receiver's new aggregate (pending until received).
    pub receiver_agg: AggId,
    /// The ticket, for a ticketed delivery.
    pub ticket: Option<Ticket>,
    /// Buffers created for copies.
    pub new_buffers: Vec<NewBuffer>,
    /// Copies to perform.
    pub copies: Vec<CopyOp>,
    /// Mapping changes (from the plan).
    pub mapping_changes: Vec<MappingChange>,
    /// Buffers to seal (from the plan).
    pub seals: Vec<BufferId>,
}

/// A delivered transfer, returned by receive and attach_recv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// The receiver's aggregate.
    pub agg: AggId,
    /// The sending domain.
    pub source: DomainId,
    /// The mode.
    pub mode: Mode,
    /// The strength the sender requested (copy: strong).
    pub strength: Strength,
    /// The ticket, for a ticketed transfer.
    pub ticket: Option<Ticket>,
}

/// The sending half of a cross-pool transfer, made by [`Ledger::export`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// The holder's aggregate keeping the bytes alive until the destination copied them.
    pub hold: AggId,
    /// The bytes to copy, in order.
    pub chunks: ChunkList,
    /// The strength the receiver is told (copy: strong).
    pub strength: Strength,
    /// The ticket, for a ticketed transfer.
    pub ticket: Option<Ticket>,
}

/// The receiving half of a cross-pool transfer, made by [`Ledger::import`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Import {
    /// The receiver's aggregate (pending until received).
    pub agg: AggId,
    /// Its buffer, to fill before the receiver is told (none for zero bytes).
    pub buffer: Option<NewBuffer>,
}

/// A whole-buffer aggregate that may travel on a direct ring (see [`Ledger::direct_info`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectInfo {
    /// Its one buffer.
    pub buffer: BufferId,
    /// The buffer's length (the aggregate's).
    pub len: u64,
    /// Every domain that maps the buffer (the receiver of a weak transfer must trust those
    /// left with permissions beyond their rights).
    pub mappers: Vec<DomainId>,
}

/// Buffers released by a decref or a domain's exit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Release {
    /// Buffers no domain refers to any more: the executor frees or recycles them.
    pub freed: Vec<BufferId>,
    /// Mappings of freed buffers that must go.
    pub unmapped: Vec<(DomainId, BufferId)>,
}

/// A buffer created by [`Ledger::alloc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The new aggregate.
    pub agg: AggId,
    /// The new buffer (none for a zero-length allocation).
    pub buffer: Option<NewBuffer>,
}

#[derive(Clone, Debug)]
struct BufferState {
    len: u64,
    pool: PoolId,
    /// No domain may ever get read/write rights again (the data was shared).
    frozen: bool,
    /// Writing is impossible for everyone (a kernel seal).
    sealed: bool,
    /// A strong share copied it ([`CopyReason::SealCost`]): the next one seals it.
    share_copied: bool,
    /// Memory permissions, only entries above `Rights::None`.
    mappings: BTreeMap<DomainId, Rights>,
    /// For each holding domain, how many of its aggregates refer to the buffer, by rights.
    holds: BTreeMap<DomainId, [u32; 3]>,
}

/// Whether `domain` holds the buffer with rights through exactly one read/write aggregate
/// and no read-only one, and no other domain holds it with any rights.
fn held_alone(state: &BufferState, domain: DomainId) -> bool {
    let held = state.holds.get(&domain).copied().unwrap_or_default();
    held[Rights::ReadWrite as usize] == 1
        && held[Rights::Read as usize] == 0
        && state
            .holds
            .iter()
            .all(|(d, c)| *d == domain || top_rights(c) == Rights::None)
}

fn top_rights(counts: &[u32; 3]) -> Rights {
    Rights::ALL
        .into_iter()
        .rev()
        .find(|r| counts[*r as usize] > 0)
        .unwrap_or(Rights::None)
}

/// The buffers an aggregate refers to, sorted, each once: most aggregates refer to one, kept
/// inline (the ledger applies a record of every direct transfer, and each makes an aggregate).
type BufferSet = SmallVec<[BufferId; 1]>;

/// The buffers `chunks` refer to, as a [`BufferSet`].
fn buffer_set(chunks: &ChunkList) -> BufferSet {
    match chunks.chunks() {
        [one] => SmallVec::from_buf([one.buffer]),
        many => many
            .iter()
            .map(|c| c.buffer)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    }
}

/// The aggregates of one related group. Most aggregates are alone in theirs (a received one,
/// a fresh allocation): one member is kept without a heap allocation.
#[derive(Clone, Debug)]
enum Members {
    One(AggId),
    Many(BTreeSet<AggId>),
}

impl Members {
    fn insert(&mut self, id: AggId) {
        match self {
            Members::One(only) if *only == id => {}
            Members::One(only) => *self = Members::Many([*only, id].into_iter().collect()),
            Members::Many(set) => {
                set.insert(id);
            }
        }
    }

    /// Removes `id`; `true` if the group is left empty.
    fn remove(&mut self, id: AggId) -> bool {
        match self {
            Members::One(only) => *only == id,
            Members::Many(set) => {
                set.remove(&id);
                set.is_empty()
            }
        }
    }

    fn contains(&self, id: AggId) -> bool {
        match self {
            Members::One(only) => *only == id,
            Members::Many(set) => set.contains(&id),
        }
    }

    fn len(&self) -> usize {
        match self {
            Members::One(_) => 1,
            Members::Many(set) => set.len(),
        }
    }

    /// The members, in order of id.
    fn iter(&self) -> impl Iterator<Item = AggId> + '_ {
        let (one, many) = match self {
            Members::One(only) => (Some(*only), None),
            Members::Many(set) => (None, Some(set)),
        };
        one.into_iter().chain(many.into_iter().flatten().copied())
    }
}

#[derive(Clone, Debug)]
struct AggState {
    chunks: ChunkList,
    buffers: BufferSet,
    rights: Rights,
    refs: u32,
    group: u64,
    /// Delivered by a transfer but not yet received.
    pending: bool,
}

#[derive(Clone, Debug)]
struct Inbound {
    agg: AggId,
    source: DomainId,
    mode: Mode,
    strength: Strength,
}

#[derive(Clone, Debug)]
struct DomainState {
    pool: PoolId,
    aggs: BTreeMap<AggId, AggState>,
    groups: BTreeMap<u64, Members>,
    trusts: BTreeSet<DomainId>,
    queued: VecDeque<Inbound>,
    ticketed: BTreeMap<(DomainId, Ticket), Inbound>,
    /// Highest ticket delivered from each source (tickets commit in order).
    tickets_delivered: BTreeMap<DomainId, u64>,
    /// Tickets issued to each destination.
    tickets_issued: BTreeMap<DomainId, u64>,
    /// Aggregate ids leased for direct transfers: the next one to use and the end.
    lease: (u64, u64),
}

/// What [`Ledger::direct_fast`] found: the chunk, the rights before and after, and the
/// receiver's new permission if it changes.
#[derive(Clone, Copy, Debug)]
struct FastDirect {
    chunk: Chunk,
    held: Rights,
    keeps: Rights,
    gets: Rights,
    mapping: Option<Rights>,
}

/// The rights ledger (see the module documentation).
#[derive(Clone, Debug)]
pub struct Ledger {
    policy: Policy,
    generation: u64,
    next_domain: u32,
    next_buffer: u64,
    next_agg: u64,
    next_group: u64,
    buffers: BTreeMap<BufferId, BufferState>,
    domains: BTreeMap<DomainId, DomainState>,
}

impl Ledger {
    /// An empty ledger with the given mechanism policy.
    pub fn new(policy: Policy) -> Self {
        Ledger {
            policy,
            generation: 0,
            next_domain: 1,
            next_buffer: 1,
            next_agg: 1,
            next_group: 1,
            buffers: BTreeMap::new(),
            domains: BTreeMap::new(),
        }
    }

    /// Registers a new domain in `pool`. Domain ids are never reused.
    pub fn add_domain(&mut self, pool: PoolId) -> DomainId {
        let id = DomainId {
            pool,
            index: self.next_domain,
        };
        self.next_domain += 1;
        self.domains.insert(
            id,
            DomainState {
                pool,
                aggs: BTreeMap::new(),
                groups: BTreeMap::new(),
                trusts: BTreeSet::new(),
                queued: VecDeque::new(),
                ticketed: BTreeMap::new(),
                tickets_delivered: BTreeMap::new(),
                tickets_issued: BTreeMap::new(),
                lease: (0, 0),
            },
        );
        self.generation += 1;
        id
    }

    /// How many aggregates `domain` holds, received or not (0 for an unknown domain).
    pub fn aggregate_count(&self, domain: DomainId) -> usize {
        self.domains.get(&domain).map_or(0, |d| d.aggs.len())
    }

    /// How many transfers to `domain` wait to be received (0 for an unknown domain).
    pub fn pending_count(&self, domain: DomainId) -> usize {
        self.domains
            .get(&domain)
            .map_or(0, |d| d.queued.len() + d.ticketed.len())
    }

    /// Whether `domain` is connected.
    pub fn has_domain(&self, domain: DomainId) -> bool {
        self.domains.contains_key(&domain)
    }

    /// Removes a domain that exited or was killed: every aggregate it held (received or not)
    /// is dropped and its mappings go. Transfers it sent stay with their receivers.
    pub fn remove_domain(&mut self, domain: DomainId) -> Result<Release> {
        let state = self
            .domains
            .remove(&domain)
            .ok_or(Error::UnknownDomain { domain })?;
        let mut release = Release::default();
        let mut touched = BTreeSet::new();
        for agg in state.aggs.values() {
            touched.extend(agg.buffers.iter().copied());
        }
        for b in self.buffers.values_mut() {
            b.holds.remove(&domain);
            b.mappings.remove(&domain);
        }
        for b in touched {
            self.free_if_unheld(b, &mut release);
        }
        self.generation += 1;
        Ok(release)
    }

    /// Whether `domain` declared that it trusts `peer`.
    pub fn trusts(&self, domain: DomainId, peer: DomainId) -> bool {
        self.domains
            .get(&domain)
            .is_some_and(|d| d.trusts.contains(&peer))
    }

    /// Transfers from `source` queued for `domain`'s next receives.
    pub fn queued_from(&self, domain: DomainId, source: DomainId) -> usize {
        self.domains.get(&domain).map_or(0, |d| {
            d.queued.iter().filter(|t| t.source == source).count()
        })
    }

    /// Records that `domain` trusts `peer`: weak transfers to `domain` that leave `peer` with
    /// permissions beyond its rights are honoured as weak.
    pub fn trust(&mut self, domain: DomainId, peer: DomainId) -> Result<()> {
        if !self.domains.contains_key(&peer) {
            return Err(Error::UnknownDomain { domain: peer });
        }
        self.domain_mut(domain)?.trusts.insert(peer);
        self.generation += 1;
        Ok(())
    }

    fn domain(&self, domain: DomainId) -> Result<&DomainState> {
        self.domains
            .get(&domain)
            .ok_or(Error::UnknownDomain { domain })
    }

    fn domain_mut(&mut self, domain: DomainId) -> Result<&mut DomainState> {
        self.domains
            .get_mut(&domain)
            .ok_or(Error::UnknownDomain { domain })
    }

    fn agg(&self, domain: DomainId, agg: AggId) -> Result<&AggState> {
        self.domain(domain)?
            .aggs
            .get(&agg)
            .filter(|a| !a.pending)
            .ok_or(Error::UnknownAggregate { agg, domain })
    }

    fn agg_mut(&mut self, domain: DomainId, agg: AggId) -> Result<&mut AggState> {
        self.domain_mut(domain)?
            .aggs
            .get_mut(&agg)
            .filter(|a| !a.pending)
            .ok_or(Error::UnknownAggregate { agg, domain })
    }

    fn fresh_agg(&mut self) -> AggId {
        let id = AggId(self.next_agg);
        self.next_agg += 1;
        id
    }

    fn fresh_buffer(&mut self, pool: PoolId, len: u64, frozen: bool, sealed: bool) -> BufferId {
        let id = BufferId(self.next_buffer);
        self.next_buffer += 1;
        self.buffers.insert(
            id,
            BufferState {
                len,
                pool,
                frozen,
                sealed,
                share_copied: false,
                mappings: BTreeMap::new(),
                holds: BTreeMap::new(),
            },
        );
        id
    }

    fn add_holds(&mut self, domain: DomainId, buffers: &[BufferId], rights: Rights) {
        for b in buffers {
            self.add_hold(domain, *b, rights);
        }
    }

    fn add_hold(&mut self, domain: DomainId, buffer: BufferId, rights: Rights) {
        if let Some(state) = self.buffers.get_mut(&buffer) {
            state.holds.entry(domain).or_default()[rights as usize] += 1;
        }
    }

    fn remove_holds(&mut self, domain: DomainId, buffers: &[BufferId], rights: Rights) {
        for b in buffers {
            self.remove_hold(domain, *b, rights);
        }
    }

    fn remove_hold(&mut self, domain: DomainId, buffer: BufferId, rights: Rights) {
        if let Some(state) = self.buffers.get_mut(&buffer)
            && let Some(counts) = state.holds.get_mut(&domain)
        {
            counts[rights as usize] = counts[rights as usize].saturating_sub(1);
            if counts.iter().all(|c| *c == 0) {
                state.holds.remove(&domain);
            }
        }
    }

    fn free_if_unheld(&mut self, buffer: BufferId, release: &mut Release) {
        if let Some(state) = self.buffers.get(&buffer)
            && state.holds.is_empty()
        {
            release
                .unmapped
                .extend(state.mappings.keys().map(|d| (*d, buffer)));
            release.freed.push(buffer);
            self.buffers.remove(&buffer);
        }
    }

    /// Inserts a new aggregate into `domain` with a fresh related group.
    fn insert_agg(
        &mut self,
        domain: DomainId,
        chunks: ChunkList,
        rights: Rights,
        group: Option<u64>,
        pending: bool,
    ) -> Result<AggId> {
        let id = self.fresh_agg();
        self.insert_agg_as(id, domain, chunks, rights, group, pending)
    }

    fn insert_agg_as(
        &mut self,
        id: AggId,
        domain: DomainId,
        chunks: ChunkList,
        rights: Rights,
        group: Option<u64>,
        pending: bool,
    ) -> Result<AggId> {
        let group = group.unwrap_or_else(|| {
            let g = self.next_group;
            self.next_group += 1;
            g
        });
        let buffers = buffer_set(&chunks);
        self.add_holds(domain, &buffers, rights);
        let state = self.domain_mut(domain)?;
        state
            .groups
            .entry(group)
            .and_modify(|m| m.insert(id))
            .or_insert(Members::One(id));
        state.aggs.insert(
            id,
            AggState {
                chunks,
                buffers,
                rights,
                refs: 1,
                group,
                pending,
            },
        );
        self.generation += 1;
        Ok(id)
    }

    /// Allocates a fresh aggregate of `len` bytes in one new buffer of the domain's pool,
    /// mapped read/write by that domain only (invariant 4).
    pub fn alloc(&mut self, domain: DomainId, len: u64) -> Result<Allocation> {
        self.alloc_with_capacity(domain, len, len)
    }

    /// Allocates a fresh aggregate of `len` bytes at the start of a new buffer of `capacity`
    /// bytes, so that later small allocations can go into the rest with
    /// [`Ledger::alloc_in`] (a slab).
    pub fn alloc_with_capacity(
        &mut self,
        domain: DomainId,
        len: u64,
        capacity: u64,
    ) -> Result<Allocation> {
        let pool = self.domain(domain)?.pool;
        if len > MAX_LEN || capacity > MAX_LEN {
            return Err(Error::TooLarge {
                len: len.max(capacity),
                max: MAX_LEN,
            });
        }
        let capacity = capacity.max(len);
        if capacity == 0 {
            let agg = self.insert_agg(domain, ChunkList::new(), Rights::ReadWrite, None, false)?;
            return Ok(Allocation { agg, buffer: None });
        }
        let buffer = self.fresh_buffer(pool, capacity, false, false);
        if let Some(b) = self.buffers.get_mut(&buffer) {
            b.mappings.insert(domain, Rights::ReadWrite);
        }
        let chunks = ChunkList::single(Chunk {
            buffer,
            offset: 0,
            len,
        });
        let agg = self.insert_agg(domain, chunks, Rights::ReadWrite, None, false)?;
        Ok(Allocation {
            agg,
            buffer: Some(NewBuffer {
                id: buffer,
                pool,
                len: capacity,
                seal: false,
            }),
        })
    }

    /// Allocates a fresh aggregate of `len` bytes at `offset` of an existing buffer, if the
    /// buffer is still strongly private to `domain`: it holds it with read/write rights,
    /// nobody else holds or maps it, and it was never shared. `Ok(None)` when it is not
    /// (start a new buffer then). The caller keeps allocations in one buffer disjoint.
    pub fn alloc_in(
        &mut self,
        domain: DomainId,
        buffer: BufferId,
        offset: u64,
        len: u64,
    ) -> Result<Option<AggId>> {
        self.domain(domain)?;
        let Some(state) = self.buffers.get(&buffer) else {
            return Ok(None);
        };
        let private = !state.frozen
            && !state.sealed
            && state.holds.keys().all(|d| *d == domain)
            && state
                .mappings
                .iter()
                .all(|(d, r)| *d == domain && *r == Rights::ReadWrite)
            && state
                .holds
                .get(&domain)
                .is_some_and(|c| c[Rights::ReadWrite as usize] > 0)
            && offset.checked_add(len).is_some_and(|end| end <= state.len);
        if !private || len == 0 {
            return Ok(None);
        }
        let chunks = ChunkList::single(Chunk {
            buffer,
            offset,
            len,
        });
        Ok(Some(self.insert_agg(
            domain,
            chunks,
            Rights::ReadWrite,
            None,
            false,
        )?))
    }

    /// Adds a reference to an aggregate (clone).
    pub fn incref(&mut self, domain: DomainId, agg: AggId) -> Result<()> {
        let a = self.agg_mut(domain, agg)?;
        a.refs = a.refs.saturating_add(1);
        Ok(())
    }

    /// Drops a reference; the last one frees the aggregate, and buffers no domain refers to
    /// any more are released.
    pub fn decref(&mut self, domain: DomainId, agg: AggId) -> Result<Release> {
        let a = self.agg_mut(domain, agg)?;
        a.refs -= 1;
        if a.refs > 0 {
            return Ok(Release::default());
        }
        let state = self.domain_mut(domain)?;
        let Some(a) = state.aggs.remove(&agg) else {
            return Err(Error::UnknownAggregate { agg, domain });
        };
        if let Some(members) = state.groups.get_mut(&a.group)
            && members.remove(agg)
        {
            state.groups.remove(&a.group);
        }
        self.remove_holds(domain, &a.buffers, a.rights);
        let mut release = Release::default();
        for b in &a.buffers {
            self.free_if_unheld(*b, &mut release);
        }
        self.generation += 1;
        Ok(release)
    }

    /// The aggregate's length in bytes.
    pub fn len(&self, domain: DomainId, agg: AggId) -> Result<u64> {
        Ok(self.agg(domain, agg)?.chunks.len())
    }

    /// The aggregate's current rights.
    pub fn rights(&self, domain: DomainId, agg: AggId) -> Result<Rights> {
        Ok(self.agg(domain, agg)?.rights)
    }

    /// The aggregate's chunks, without any rights check (for executors and tests).
    pub fn chunks(&self, domain: DomainId, agg: AggId) -> Result<&ChunkList> {
        Ok(&self.agg(domain, agg)?.chunks)
    }

    /// The maximal contiguous pieces from `offset` to the end, for reading or writing.
    pub fn pieces(
        &self,
        domain: DomainId,
        agg: AggId,
        access: Access,
        offset: u64,
    ) -> Result<Vec<Chunk>> {
        Ok(self.pieces_page(domain, agg, access, offset, usize::MAX)?.0)
    }

    /// At most `max` of the pieces from `offset`, and whether more follow (for answers in
    /// pages: only the page is collected).
    pub fn pieces_page(
        &self,
        domain: DomainId,
        agg: AggId,
        access: Access,
        offset: u64,
        max: usize,
    ) -> Result<(Vec<Chunk>, bool)> {
        let a = self.agg(domain, agg)?;
        let op = match access {
            Access::Read => Operation::Read,
            Access::Write => Operation::Write,
        };
        require(agg, a.rights, access.needs(), op)?;
        let mut pieces = a
            .chunks
            .pieces_from(offset)
            .map_err(|e| out_of_range(agg, e))?;
        let page: Vec<Chunk> = pieces.by_ref().take(max).collect();
        let more = pieces.next().is_some();
        Ok((page, more))
    }

    /// A new aggregate holding `len` bytes of `agg` from `offset`, related to it, with the
    /// same rights.
    pub fn select(&mut self, domain: DomainId, agg: AggId, offset: u64, len: u64) -> Result<AggId> {
        let a = self.agg(domain, agg)?;
        require(agg, a.rights, Rights::Read, Operation::Derive)?;
        let chunks = a
            .chunks
            .select(offset, len)
            .map_err(|e| out_of_range(agg, e))?;
        let (rights, group) = (a.rights, a.group);
        self.insert_agg(domain, chunks, rights, Some(group), false)
    }

    /// A new aggregate holding `first` then `second`, related to both, with the lesser of
    /// their rights.
    pub fn concat(&mut self, domain: DomainId, first: AggId, second: AggId) -> Result<AggId> {
        let a = self.agg(domain, first)?;
        let b = self.agg(domain, second)?;
        require(first, a.rights, Rights::Read, Operation::Derive)?;
        require(second, b.rights, Rights::Read, Operation::Derive)?;
        let chunks = a.chunks.concat(&b.chunks).map_err(|e| match e {
            ConcatError::TooLong { len } => Error::TooLarge { len, max: MAX_LEN },
            ConcatError::TooFragmented { chunks } => Error::TooFragmented {
                chunks,
                max: MAX_CHUNKS,
            },
        })?;
        let rights = a.rights.min(b.rights);
        let (ga, gb) = (a.group, b.group);
        let group = self.merge_groups(domain, ga, gb)?;
        self.insert_agg(domain, chunks, rights, Some(group), false)
    }

    fn merge_groups(&mut self, domain: DomainId, a: u64, b: u64) -> Result<u64> {
        if a == b {
            return Ok(a);
        }
        let state = self.domain_mut(domain)?;
        let size = |g| state.groups.get(&g).map_or(0, Members::len);
        let (keep, gone) = if size(a) >= size(b) { (a, b) } else { (b, a) };
        let Some(moved) = state.groups.remove(&gone) else {
            return Ok(keep);
        };
        for id in moved.iter() {
            if let Some(agg) = state.aggs.get_mut(&id) {
                agg.group = keep;
            }
            state
                .groups
                .entry(keep)
                .and_modify(|m| m.insert(id))
                .or_insert(Members::One(id));
        }
        Ok(keep)
    }

    /// The other aggregates related to `agg` (sharing its select/concat history) whose rights
    /// are at least `min_rights`, in order of id.
    pub fn find_related(
        &self,
        domain: DomainId,
        agg: AggId,
        min_rights: Rights,
    ) -> Result<Vec<AggId>> {
        let a = self.agg(domain, agg)?;
        let state = self.domain(domain)?;
        Ok(state
            .groups
            .get(&a.group)
            .into_iter()
            .flat_map(Members::iter)
            .filter(|id| *id != agg)
            .filter(|id| {
                state
                    .aggs
                    .get(id)
                    .is_some_and(|o| !o.pending && o.rights >= min_rights)
            })
            .collect())
    }

    /// Lowers the aggregate's rights. Raising them is an error.
    pub fn downgrade(&mut self, domain: DomainId, agg: AggId, rights: Rights) -> Result<()> {
        let a = self.agg(domain, agg)?;
        let held = a.rights;
        if rights > held {
            return Err(Error::RightsUpgrade {
                agg,
                held,
                requested: rights,
            });
        }
        let buffers = a.buffers.clone();
        self.remove_holds(domain, &buffers, held);
        self.add_holds(domain, &buffers, rights);
        self.agg_mut(domain, agg)?.rights = rights;
        self.generation += 1;
        Ok(())
    }

    /// Every aggregate of every domain (received or not) with its rights, in order of domain
    /// and handle.
    pub fn aggregates(&self) -> impl Iterator<Item = (DomainId, AggId, Rights)> + '_ {
        self.domains
            .iter()
            .flat_map(|(d, s)| s.aggs.iter().map(move |(id, a)| (*d, *id, a.rights)))
    }

    /// The domain's rights on a buffer: the most any of its aggregates holds.
    pub fn buffer_rights(&self, domain: DomainId, buffer: BufferId) -> Rights {
        self.buffers
            .get(&buffer)
            .and_then(|b| b.holds.get(&domain))
            .map_or(Rights::None, top_rights)
    }

    /// The domain's memory permission on a buffer.
    pub fn mapping(&self, domain: DomainId, buffer: BufferId) -> Rights {
        self.buffers
            .get(&buffer)
            .and_then(|b| b.mappings.get(&domain))
            .copied()
            .unwrap_or(Rights::None)
    }

    /// Whether the buffer exists and is sealed against writing.
    pub fn is_sealed(&self, buffer: BufferId) -> bool {
        self.buffers.get(&buffer).is_some_and(|b| b.sealed)
    }

    /// Whether the buffer exists and was shared, so it stays read-only until freed.
    pub fn is_frozen(&self, buffer: BufferId) -> bool {
        self.buffers.get(&buffer).is_some_and(|b| b.frozen)
    }

    /// The buffer's length, if it exists.
    pub fn buffer_len(&self, buffer: BufferId) -> Option<u64> {
        self.buffers.get(&buffer).map(|b| b.len)
    }

    /// Live buffers, in order of id.
    pub fn buffers(&self) -> impl Iterator<Item = BufferId> + '_ {
        self.buffers.keys().copied()
    }

    /// Whether `buffer` may be recycled into a fresh allocation of `domain`: nobody holds it
    /// and no other domain maps it (invariant 4).
    pub fn recyclable_for(&self, buffer: BufferId, domain: DomainId) -> bool {
        self.buffers
            .get(&buffer)
            .is_none_or(|b| b.holds.is_empty() && b.mappings.keys().all(|d| *d == domain))
    }

    /// Leases `count` fresh aggregate ids to `domain` for [`Ledger::transfer_direct`],
    /// replacing any lease it still had; returns the first. Ids are never reused, so a
    /// lease can name an aggregate of any domain.
    pub fn lease_ids(&mut self, domain: DomainId, count: u64) -> Result<u64> {
        self.domain(domain)?;
        let first = self.next_agg;
        self.next_agg = first.saturating_add(count);
        self.domain_mut(domain)?.lease = (first, self.next_agg);
        self.generation += 1;
        Ok(first)
    }

    /// The next leased id `domain` must use, and how many it has left.
    pub fn lease_left(&self, domain: DomainId) -> Option<(u64, u64)> {
        self.domains
            .get(&domain)
            .map(|d| (d.lease.0, d.lease.1.saturating_sub(d.lease.0)))
    }

    /// The one buffer `agg` covers whole, and its length, if it is one whole buffer.
    pub fn whole_buffer(&self, domain: DomainId, agg: AggId) -> Option<(BufferId, u64)> {
        let a = self.agg(domain, agg).ok()?;
        let [chunk] = a.chunks.chunks() else {
            return None;
        };
        let len = self.buffers.get(&chunk.buffer)?.len;
        (chunk.offset == 0 && chunk.len == len).then_some((chunk.buffer, len))
    }

    /// What a client library needs to know to send `agg` on a direct ring: `Some` when the
    /// aggregate is one whole buffer, held read/write, neither frozen nor sealed, and no other
    /// aggregate of `domain` (received or not) refers to that buffer with any rights. Such a
    /// buffer is held with rights by this aggregate alone in the whole ledger (invariants), so
    /// only `domain`'s own calls can change that; the library keeps the answer until it makes
    /// one.
    pub fn direct_info(&self, domain: DomainId, agg: AggId) -> Option<DirectInfo> {
        let (buffer, len) = self.whole_buffer(domain, agg)?;
        let state = self.buffers.get(&buffer)?;
        let alone = held_alone(state, domain);
        let usable = self.agg(domain, agg).ok()?.rights == Rights::ReadWrite
            && !state.frozen
            && !state.sealed
            && len > 0;
        (alone && usable).then(|| DirectInfo {
            buffer,
            len,
            mappers: state.mappings.keys().copied().collect(),
        })
    }

    /// A weak move or share that the sender's library already carried out on a direct ring:
    /// the receiver holds `new` (the next id of the sender's lease) at once, without a
    /// receive. Refused, changing nothing, unless the plan is what the ring carried: every
    /// piece by reference, honoured as weak, no seal, and no permission change but the
    /// receiver's.
    pub fn transfer_direct(
        &mut self,
        sender: DomainId,
        agg: AggId,
        receiver: DomainId,
        mode: Mode,
        new: AggId,
    ) -> Result<()> {
        let next = self.direct_lease(sender, agg, mode, new)?;
        // The common refusal first, cheaply and as the plan would refuse it: an aggregate not
        // there yet (the record of the transfer that gives it to the sender, from another
        // domain's ring, is not applied yet; the block manager tries this one again after).
        if sender != receiver && self.domains.contains_key(&receiver) {
            self.agg(sender, agg)?;
        }
        if let Some(fast) = self.direct_fast(sender, agg, receiver, mode) {
            self.domain_mut(sender)?.lease.0 = next + 1;
            return self.commit_direct_fast(sender, agg, receiver, mode, new, fast);
        }
        self.transfer_direct_planned(sender, agg, receiver, mode, new)
    }

    /// What every direct transfer must be before anything else is looked at: a move or a
    /// share, under the next id of the sender's lease (returned).
    fn direct_lease(&self, sender: DomainId, agg: AggId, mode: Mode, new: AggId) -> Result<u64> {
        let refuse = |reason| Err(Error::DirectRefused { agg, reason });
        if mode == Mode::Copy {
            return refuse("a copy never travels on a direct ring");
        }
        let (next, end) = self.domain(sender)?.lease;
        if new.0 != next || next >= end {
            return refuse("the new aggregate id is not the next of the sender's lease");
        }
        Ok(next)
    }

    /// The sender's half of a transfer whose bytes its library copied itself on a direct
    /// ring (an *inline* transfer; the receiver's library lands them in a buffer of its own:
    /// [`Ledger::land`]). A copy is a correct way to carry out any mode and strength, so the
    /// sender's aggregate changes exactly as Table 1 says it does when every piece is copied:
    /// it must hold what the mode needs, and keeps what the mode leaves it. Related aggregates
    /// keep their rights (nothing of theirs travelled). A receiver that is gone (it left after
    /// the sender's library wrote the transfer) changes nothing of this: the sender still gave
    /// up what the mode gives up.
    pub fn sent_inline(
        &mut self,
        sender: DomainId,
        agg: AggId,
        receiver: DomainId,
        mode: Mode,
    ) -> Result<()> {
        let held = self.agg(sender, agg)?.rights;
        require(agg, held, mode.sender_needs(), Operation::Transfer(mode))?;
        if receiver == sender {
            return Err(Error::SelfTransfer { domain: sender });
        }
        if let Some(to) = self.domains.get(&receiver)
            && to.pool != self.domain(sender)?.pool
        {
            return Err(Error::DirectRefused {
                agg,
                reason: "an inline transfer joins domains of one pool",
            });
        }
        let keeps = mode.sender_keeps(held);
        if keeps != held {
            self.downgrade(sender, agg, keeps)?;
        }
        Ok(())
    }

    /// The receiver's half of an inline transfer: `agg`, a buffer of `domain`'s own that its
    /// library holds once and wrote the transferred bytes into, becomes the received
    /// aggregate — its first `len` bytes with `rights`. Refused, changing nothing, unless the
    /// buffer is private to `domain`: held with rights by this aggregate alone, mapped by no
    /// other domain, neither frozen nor sealed. So a domain can only ever reshape its own
    /// memory this way.
    ///
    /// An aggregate left without rights (what an inline move leaves its sender: the bytes
    /// went as a copy) may land too, if its buffer is held by nothing else at all: the memory
    /// is the domain's own and no other domain's guarantees involve it, so this is a free
    /// and an allocation of the same memory in one.
    pub fn land(&mut self, domain: DomainId, agg: AggId, len: u64, rights: Rights) -> Result<()> {
        let refuse = |reason| Err(Error::DirectRefused { agg, reason });
        let a = self.agg(domain, agg)?;
        let [chunk] = a.chunks.chunks() else {
            return refuse("a landing is one piece");
        };
        let reclaimed = a.rights == Rights::None;
        if (a.rights != Rights::ReadWrite && !reclaimed) || a.refs != 1 || a.pending {
            return refuse("a landing is held once, read/write, by the domain itself");
        }
        let buffer = chunk.buffer;
        let Some(state) = self.buffers.get(&buffer) else {
            return refuse("a landing's buffer is gone");
        };
        if chunk.offset != 0 || len == 0 || len > state.len {
            return refuse("a landing starts its buffer and fits in it");
        }
        let held = if reclaimed {
            state
                .holds
                .iter()
                .all(|(d, c)| *d == domain && c.iter().sum::<u32>() == 1)
        } else {
            held_alone(state, domain)
        };
        let alone = held && state.mappings.keys().all(|d| *d == domain);
        if !alone || state.frozen || state.sealed {
            return refuse("a landing's buffer is private to the domain");
        }
        if reclaimed {
            self.remove_hold(domain, buffer, Rights::None);
            self.add_hold(domain, buffer, Rights::ReadWrite);
            self.agg_mut(domain, agg)?.rights = Rights::ReadWrite;
        }
        let chunks = ChunkList::single(Chunk {
            buffer,
            offset: 0,
            len,
        });
        let a = self.agg_mut(domain, agg)?;
        a.chunks = chunks;
        if rights < Rights::ReadWrite {
            self.downgrade(domain, agg, rights)?;
        }
        self.generation += 1;
        Ok(())
    }

    /// Whether [`Ledger::transfer_direct`] would take its fast path (for tests).
    #[doc(hidden)]
    pub fn direct_would_be_fast(
        &self,
        sender: DomainId,
        agg: AggId,
        receiver: DomainId,
        mode: Mode,
    ) -> bool {
        self.direct_fast(sender, agg, receiver, mode).is_some()
    }

    /// [`Ledger::transfer_direct`] through the general plan, always (the reference the fast
    /// path is tested against).
    #[doc(hidden)]
    pub fn transfer_direct_planned(
        &mut self,
        sender: DomainId,
        agg: AggId,
        receiver: DomainId,
        mode: Mode,
        new: AggId,
    ) -> Result<()> {
        let refuse = |reason| Err(Error::DirectRefused { agg, reason });
        let next = self.direct_lease(sender, agg, mode, new)?;
        let plan = self.plan_transfer(TransferRequest::new(
            sender,
            agg,
            receiver,
            mode,
            TransferFlags::weak(),
        ))?;
        if plan.effective_strength != Strength::Weak {
            return refuse("the receiver does not trust every domain that maps the buffer");
        }
        if plan.pieces.iter().any(|p| p.route != Route::Reference) || !plan.seals.is_empty() {
            return refuse("the ledger would copy or seal");
        }
        if plan.mapping_changes.iter().any(|c| c.domain != receiver) {
            return refuse("the ledger would change another domain's permission");
        }
        self.domain_mut(sender)?.lease.0 = next + 1;
        self.commit_as(plan, Some(new))?;
        Ok(())
    }

    /// The common case of a direct transfer, recognised without a plan: one chunk covering a
    /// whole buffer of the receiver's pool, rights enough, no other aggregate of the sender
    /// holding more of it than the transfer leaves, and nobody the receiver does not trust
    /// left with permissions beyond their rights. The plan would route it by reference, keep
    /// it weak, seal nothing and change only the receiver's permission; `None` sends anything
    /// else through the plan.
    fn direct_fast(
        &self,
        sender: DomainId,
        agg: AggId,
        receiver: DomainId,
        mode: Mode,
    ) -> Option<FastDirect> {
        if sender == receiver || mode == Mode::Copy {
            return None;
        }
        let receiver_state = self.domains.get(&receiver)?;
        // Not one still pending (delivered, not received): the plan would not find it.
        let a = self.agg(sender, agg).ok()?;
        let [chunk] = a.chunks.chunks() else {
            return None;
        };
        let state = self.buffers.get(&chunk.buffer)?;
        if chunk.offset != 0 || chunk.len != state.len || state.pool != receiver_state.pool {
            return None;
        }
        if a.rights < mode.sender_needs() {
            return None;
        }
        let (held, keeps, gets) = (a.rights, mode.sender_keeps(a.rights), mode.receiver_gets());
        if self.others_hold_more(sender, chunk.buffer, held, keeps) {
            return None;
        }
        // A domain's top rights on the buffer after the transfer.
        let after = |d: DomainId| {
            let mut counts = state.holds.get(&d).copied().unwrap_or_default();
            if d == sender {
                counts[held as usize] = counts[held as usize].saturating_sub(1);
                counts[keeps as usize] += 1;
            }
            if d == receiver {
                counts[gets as usize] += 1;
            }
            top_rights(&counts)
        };
        let untrusted = state
            .mappings
            .iter()
            .any(|(d, m)| *d != receiver && *m > after(*d) && !receiver_state.trusts.contains(d));
        if untrusted {
            return None;
        }
        let current = state
            .mappings
            .get(&receiver)
            .copied()
            .unwrap_or(Rights::None);
        Some(FastDirect {
            chunk: *chunk,
            held,
            keeps,
            gets,
            mapping: (current.max(gets) != current).then_some(current.max(gets)),
        })
    }

    /// Carries out what [`Ledger::direct_fast`] recognised, exactly as the plan's commit would.
    fn commit_direct_fast(
        &mut self,
        sender: DomainId,
        agg: AggId,
        receiver: DomainId,
        mode: Mode,
        new: AggId,
        fast: FastDirect,
    ) -> Result<()> {
        let buffer = fast.chunk.buffer;
        if fast.keeps != fast.held {
            self.remove_hold(sender, buffer, fast.held);
            self.add_hold(sender, buffer, fast.keeps);
        }
        self.agg_mut(sender, agg)?.rights = fast.keeps;
        if let Some(state) = self.buffers.get_mut(&buffer) {
            if let Some(to) = fast.mapping {
                state.mappings.insert(receiver, to);
            }
            if mode == Mode::Share {
                state.frozen = true;
            }
        }
        let mut chunks = ChunkList::new();
        chunks.push(fast.chunk);
        self.insert_agg_as(new, receiver, chunks, fast.gets, None, false)?;
        self.generation += 1;
        Ok(())
    }

    /// Plans a transfer (see the module documentation). Changes nothing.
    pub fn plan_transfer(&self, request: TransferRequest) -> Result<TransferPlan> {
        let TransferRequest {
            sender,
            agg,
            receiver,
            mode,
            flags,
            ..
        } = request;
        let sender_state = self.domain(sender)?;
        let receiver_state = self.domain(receiver)?;
        if sender == receiver {
            return Err(Error::SelfTransfer { domain: sender });
        }
        let a = self.agg(sender, agg)?;
        require(
            agg,
            a.rights,
            mode.sender_needs(),
            Operation::Transfer(mode),
        )?;
        let keeps = mode.sender_keeps(a.rights);
        let gets = mode.receiver_gets();
        let reported_strength = match mode {
            Mode::Copy => Strength::Strong,
            Mode::Move | Mode::Share => flags.strength,
        };

        // Route each buffer on semantic grounds first, so that whether a transfer fails never
        // depends on the mechanism (invariant 5).
        let mut routes: BTreeMap<BufferId, Route> = BTreeMap::new();
        let mut culprits = BTreeSet::new();
        for b in &a.buffers {
            let route = if mode == Mode::Copy {
                Route::Copy(CopyReason::ModeIsCopy)
            } else if !self.others_hold_more(sender, *b, a.rights, keeps) {
                self.unheld_route(&request, *b, receiver_state.pool, &a.chunks)
            } else {
                // Someone else holds more: find out who, to tell relatives from neighbours.
                let (related, neighbours) =
                    Self::holders_of(sender_state, agg, a, *b, keeps, &mut culprits);
                if related {
                    Route::Copy(CopyReason::Related)
                } else if neighbours {
                    Route::Copy(CopyReason::SharedBuffer)
                } else {
                    self.unheld_route(&request, *b, receiver_state.pool, &a.chunks)
                }
            };
            routes.insert(*b, route);
        }
        if flags.related == RelatedPolicy::Fail && !culprits.is_empty() {
            return Err(Error::RelatedAggregates {
                agg,
                related: culprits.into_iter().collect(),
            });
        }

        // A domain's rights on a buffer after the transfer, if the buffer travels by reference.
        let rights_after = |domain: DomainId, buffer: BufferId| -> Rights {
            let mut counts = self
                .buffers
                .get(&buffer)
                .and_then(|s| s.holds.get(&domain))
                .copied()
                .unwrap_or_default();
            if domain == sender {
                counts[a.rights as usize] = counts[a.rights as usize].saturating_sub(1);
                counts[keeps as usize] += 1;
            }
            if domain == receiver {
                counts[gets as usize] += 1;
            }
            top_rights(&counts)
        };

        // A weak transfer stays weak only if the receiver trusts everyone it leaves with
        // permissions beyond their rights on a buffer it receives by reference. (Buffers that
        // travel by copy expose nothing to the receiver.)
        // Whether passing `b` by reference leaves someone the receiver does not trust with
        // permissions beyond their rights.
        let untrusted = |b: BufferId| {
            self.buffers.get(&b).is_some_and(|state| {
                state.mappings.iter().any(|(d, m)| {
                    *d != receiver && *m > rights_after(*d, b) && !receiver_state.trusts.contains(d)
                })
            })
        };
        let mut effective_strength = reported_strength;
        if effective_strength == Strength::Weak
            && routes
                .iter()
                .any(|(b, route)| *route == Route::Reference && untrusted(*b))
        {
            effective_strength = Strength::Strong;
        }
        // Copying is cheaper than mapping a small buffer, but a weak transfer between domains
        // that trust each other passes descriptors only (the receiver maps a buffer once and
        // keeps the mapping): small buffers go by reference too, as long as that exposes
        // nothing more (the share-of-buffer rule) and keeps the transfer weak.
        if effective_strength == Strength::Weak {
            for (b, route) in routes.iter_mut() {
                if *route != Route::Copy(CopyReason::Small) {
                    continue;
                }
                let Some(state) = self.buffers.get(b) else {
                    continue;
                };
                if !self.exposes_more(a.chunks.bytes_in(*b), state.len) && !untrusted(*b) {
                    *route = Route::Reference;
                }
            }
        }
        if effective_strength == Strength::Strong
            && mode == Mode::Move
            && self.policy.strong_move == MoveMechanism::Copy
        {
            for route in routes.values_mut() {
                if *route == Route::Reference {
                    *route = Route::Copy(CopyReason::StrongMove);
                }
            }
        }
        // A strong share of a buffer never shared: copying costs less than sealing and
        // mapping it, up to the size the policy says (once per buffer, see share_copied).
        if effective_strength == Strength::Strong && mode == Mode::Share && !request.no_cost_copies
        {
            for (b, route) in routes.iter_mut() {
                let Some(state) = self.buffers.get(b) else {
                    continue;
                };
                if *route == Route::Reference
                    && !state.sealed
                    && !state.frozen
                    && !state.share_copied
                    && a.chunks.bytes_in(*b) <= self.policy.share_copy_max
                {
                    *route = Route::Copy(CopyReason::SealCost);
                }
            }
        }

        // Only buffers that travel by reference change hands. Weak: the receiver maps what it
        // gets and nobody else changes. Strong: every domain's permission on the buffer drops
        // to its rights and shared buffers are sealed. A copy needs no permission change
        // (paper §3.3): a sender that misuses a stale pointer to its own buffer hurts only
        // itself, and the copy path stays free of mprotect calls.
        let mut mapping_changes = Vec::new();
        let mut seals = Vec::new();
        for (b, route) in &routes {
            if *route != Route::Reference {
                continue;
            }
            let Some(state) = self.buffers.get(b) else {
                continue;
            };
            let current = |d: DomainId| state.mappings.get(&d).copied().unwrap_or(Rights::None);
            let mut change = |domain: DomainId, to: Rights| {
                let from = current(domain);
                if from != to {
                    mapping_changes.push(MappingChange {
                        domain,
                        buffer: *b,
                        from,
                        to,
                    });
                }
            };
            match effective_strength {
                Strength::Weak => change(receiver, current(receiver).max(gets)),
                Strength::Strong => {
                    for (d, m) in &state.mappings {
                        let allowed = rights_after(*d, *b);
                        if *d != receiver && *m > allowed {
                            change(*d, allowed);
                        }
                    }
                    change(receiver, rights_after(receiver, *b));
                    if mode == Mode::Share && !state.sealed {
                        seals.push(*b);
                    }
                }
            }
        }
        mapping_changes.sort();

        let pieces = a
            .chunks
            .chunks()
            .iter()
            .map(|c| PlannedPiece {
                source: *c,
                route: routes
                    .get(&c.buffer)
                    .copied()
                    .unwrap_or(Route::Copy(CopyReason::Forced)),
            })
            .collect();
        Ok(TransferPlan {
            request,
            reported_strength,
            effective_strength,
            sender_keeps: keeps,
            receiver_gets: gets,
            pieces,
            mapping_changes,
            seals,
            generation: self.generation,
        })
    }

    /// Whether aggregates of `domain` other than one holding `held` refer to `buffer` with
    /// more than `keeps` rights (from the holdings index, without scanning aggregates).
    fn others_hold_more(
        &self,
        domain: DomainId,
        buffer: BufferId,
        held: Rights,
        keeps: Rights,
    ) -> bool {
        let Some(mut counts) = self
            .buffers
            .get(&buffer)
            .and_then(|s| s.holds.get(&domain))
            .copied()
        else {
            return false;
        };
        counts[held as usize] = counts[held as usize].saturating_sub(1);
        Rights::ALL
            .into_iter()
            .filter(|r| *r > keeps)
            .any(|r| counts[r as usize] > 0)
    }

    /// Who else among `sender`'s aggregates holds `buffer` with more than `keeps`: whether a
    /// relative of `agg` does (its ids go into `culprits`) and whether a neighbour does.
    fn holders_of(
        sender: &DomainState,
        agg: AggId,
        a: &AggState,
        buffer: BufferId,
        keeps: Rights,
        culprits: &mut BTreeSet<AggId>,
    ) -> (bool, bool) {
        let mut related = false;
        let mut neighbours = false;
        for (id, other) in &sender.aggs {
            if *id == agg || other.rights <= keeps || other.buffers.binary_search(&buffer).is_err()
            {
                continue;
            }
            if other.group == a.group && !other.pending {
                related = true;
                culprits.insert(*id);
            } else {
                neighbours = true;
            }
        }
        (related, neighbours)
    }

    /// Whether referencing `referenced` bytes of a buffer of `len` would expose more of it than
    /// the policy allows (the share-of-buffer rule).
    fn exposes_more(&self, referenced: u64, len: u64) -> bool {
        u128::from(referenced) * 100
            < u128::from(self.policy.min_reference_percent) * u128::from(len)
    }

    /// The route of a buffer no other aggregate of the sender holds with more than the
    /// transfer leaves. A move that refers to some of its bytes twice is copied (the receiver
    /// must get independent bytes, as a copy would give it); otherwise the mechanism policy
    /// decides (the strong-move rule is applied later, once the strength is known).
    fn unheld_route(
        &self,
        request: &TransferRequest,
        buffer: BufferId,
        receiver_pool: PoolId,
        chunks: &ChunkList,
    ) -> Route {
        if request.mode == Mode::Move && chunks.repeats_bytes_of(buffer) {
            return Route::Copy(CopyReason::RepeatedBytes);
        }
        let Some(state) = self.buffers.get(&buffer) else {
            return Route::Copy(CopyReason::Forced);
        };
        let referenced = chunks.bytes_in(buffer);
        if state.pool != receiver_pool {
            Route::Copy(CopyReason::OtherPool)
        } else if request.force_copy.contains(&buffer) {
            Route::Copy(CopyReason::Forced)
        } else if referenced < self.policy.min_reference_bytes {
            Route::Copy(CopyReason::Small)
        } else if self.exposes_more(referenced, state.len) {
            Route::Copy(CopyReason::Exposure)
        } else {
            Route::Reference
        }
    }

    /// Applies a plan made against the current state.
    pub fn commit(&mut self, plan: TransferPlan) -> Result<Committed> {
        self.commit_as(plan, None)
    }

    /// [`Ledger::commit`]; with `direct`, the receiver holds the aggregate under that id at
    /// once instead of having it queued or ticketed.
    fn commit_as(&mut self, plan: TransferPlan, direct: Option<AggId>) -> Result<Committed> {
        if plan.generation != self.generation {
            return Err(Error::StalePlan);
        }
        let TransferRequest {
            sender,
            agg,
            receiver,
            mode,
            delivery,
            ..
        } = plan.request;
        let receiver_pool = self.domain(receiver)?.pool;

        // The sender's aggregate drops to what it keeps (its buffer set taken out and put
        // back, rather than copied, while the holdings change).
        let a = self.agg_mut(sender, agg)?;
        let (held, buffers) = (a.rights, std::mem::take(&mut a.buffers));
        self.remove_holds(sender, &buffers, held);
        self.add_holds(sender, &buffers, plan.sender_keeps);
        let a = self.agg_mut(sender, agg)?;
        a.buffers = buffers;
        a.rights = plan.sender_keeps;

        // Build the receiver's chunks: references as they are, each run of copied pieces into
        // one new buffer.
        let shared = mode == Mode::Share;
        let mut chunks = ChunkList::new();
        let mut new_buffers = Vec::new();
        let mut copies = Vec::new();
        let mut runs = plan.copy_runs().into_iter().peekable();
        let mut i = 0;
        while i < plan.pieces.len() {
            let Some(run) = runs.next_if(|r| r.pieces.start == i) else {
                chunks.push(plan.pieces[i].source);
                i += 1;
                continue;
            };
            let id = self.fresh_buffer(receiver_pool, run.len, shared, run.seal);
            // An unsealed copy may land in memory the receiver already maps writable.
            let mapped = if run.seal {
                plan.receiver_gets
            } else {
                Rights::ReadWrite
            };
            if let Some(b) = self.buffers.get_mut(&id) {
                b.mappings.insert(receiver, mapped);
            }
            new_buffers.push(NewBuffer {
                id,
                pool: receiver_pool,
                len: run.len,
                seal: run.seal,
            });
            let mut at = 0;
            for p in &plan.pieces[run.pieces.clone()] {
                let to = Chunk {
                    buffer: id,
                    offset: at,
                    len: p.source.len,
                };
                copies.push(CopyOp { from: p.source, to });
                at += p.source.len;
                if p.route == Route::Copy(CopyReason::SealCost)
                    && let Some(state) = self.buffers.get_mut(&p.source.buffer)
                {
                    state.share_copied = true;
                }
            }
            chunks.push(Chunk {
                buffer: id,
                offset: 0,
                len: run.len,
            });
            i = run.pieces.end;
        }

        for change in &plan.mapping_changes {
            if let Some(b) = self.buffers.get_mut(&change.buffer) {
                if change.to == Rights::None {
                    b.mappings.remove(&change.domain);
                } else {
                    b.mappings.insert(change.domain, change.to);
                }
            }
        }
        if shared {
            for b in plan.referenced_buffers() {
                if let Some(state) = self.buffers.get_mut(&b) {
                    state.frozen = true;
                }
            }
        }
        for b in &plan.seals {
            if let Some(state) = self.buffers.get_mut(b) {
                state.sealed = true;
            }
        }

        if let Some(id) = direct {
            let receiver_agg =
                self.insert_agg_as(id, receiver, chunks, plan.receiver_gets, None, false)?;
            self.generation += 1;
            return Ok(Committed {
                receiver_agg,
                ticket: None,
                new_buffers,
                copies,
                mapping_changes: plan.mapping_changes,
                seals: plan.seals,
            });
        }
        let receiver_agg = self.insert_agg(receiver, chunks, plan.receiver_gets, None, true)?;
        let inbound = Inbound {
            agg: receiver_agg,
            source: sender,
            mode,
            strength: plan.reported_strength,
        };
        let ticket = match delivery {
            Delivery::Queued => {
                self.domain_mut(receiver)?.queued.push_back(inbound);
                None
            }
            Delivery::Ticketed => {
                let ticket = self.issue_ticket(sender, receiver)?;
                let r = self.domain_mut(receiver)?;
                r.ticketed.insert((sender, ticket), inbound);
                r.tickets_delivered.insert(sender, ticket.0);
                Some(ticket)
            }
        };
        self.generation += 1;
        Ok(Committed {
            receiver_agg,
            ticket,
            new_buffers,
            copies,
            mapping_changes: plan.mapping_changes,
            seals: plan.seals,
        })
    }

    /// The next ticket `sender` issues for `receiver` (tickets start at 1).
    fn issue_ticket(&mut self, sender: DomainId, receiver: DomainId) -> Result<Ticket> {
        let issued = self
            .domain_mut(sender)?
            .tickets_issued
            .entry(receiver)
            .or_default();
        *issued += 1;
        Ok(Ticket(*issued))
    }

    fn deliver(&mut self, domain: DomainId, inbound: Inbound, ticket: Option<Ticket>) -> Received {
        if let Some(a) = self
            .domains
            .get_mut(&domain)
            .and_then(|d| d.aggs.get_mut(&inbound.agg))
        {
            a.pending = false;
        }
        self.generation += 1;
        Received {
            agg: inbound.agg,
            source: inbound.source,
            mode: inbound.mode,
            strength: inbound.strength,
            ticket,
        }
    }

    /// Takes the oldest queued transfer to `domain`, from `source` or from anyone.
    pub fn receive(&mut self, domain: DomainId, source: Option<DomainId>) -> Result<Received> {
        let state = self.domain_mut(domain)?;
        let index = state
            .queued
            .iter()
            .position(|t| source.is_none_or(|s| s == t.source))
            .ok_or(Error::NothingPending {
                domain,
                sender: source,
            })?;
        let inbound = state.queued.remove(index).ok_or(Error::NothingPending {
            domain,
            sender: source,
        })?;
        Ok(self.deliver(domain, inbound, None))
    }

    /// Takes the ticketed transfer `ticket` from `source`.
    pub fn attach_recv(
        &mut self,
        domain: DomainId,
        source: DomainId,
        ticket: Ticket,
    ) -> Result<Received> {
        let state = self.domain_mut(domain)?;
        match state.ticketed.remove(&(source, ticket)) {
            Some(inbound) => Ok(self.deliver(domain, inbound, Some(ticket))),
            None => {
                let delivered = state.tickets_delivered.get(&source).copied().unwrap_or(0);
                if ticket.0 >= 1 && ticket.0 <= delivered {
                    Err(Error::TicketReused {
                        ticket,
                        sender: source,
                    })
                } else {
                    Err(Error::UnknownTicket {
                        ticket,
                        sender: source,
                    })
                }
            }
        }
    }

    /// The sending half of a transfer to `request.receiver`, a domain of another pool (paper
    /// §4.3): the same checks as [`Ledger::plan_transfer`] (so that a transfer fails alike
    /// whatever pool its receiver is in), then `holder` (the block manager's own domain) gets
    /// an aggregate of the same chunks with no rights, which keeps the buffers alive until the
    /// destination has copied them (dropped with [`Ledger::decref`]). The sender keeps its
    /// rights until its block manager answers it and [`Ledger::export_done`] downgrades it
    /// (once the destination confirmed, or at once for a pipelined weak transfer), so a
    /// transfer that fails before changes nothing; until then its block manager serves it
    /// nothing else. Every byte travels by copy, so no mapping changes.
    pub fn export(&mut self, request: &TransferRequest, holder: DomainId) -> Result<Export> {
        let TransferRequest {
            sender,
            agg,
            receiver,
            mode,
            flags,
            delivery,
            ..
        } = *request;
        let sender_state = self.domain(sender)?;
        self.domain(holder)?;
        if receiver.pool == sender_state.pool {
            return Err(Error::UnknownDomain { domain: receiver });
        }
        let a = self.agg(sender, agg)?;
        require(
            agg,
            a.rights,
            mode.sender_needs(),
            Operation::Transfer(mode),
        )?;
        let keeps = mode.sender_keeps(a.rights);
        if mode != Mode::Copy && flags.related == RelatedPolicy::Fail {
            let mut culprits = BTreeSet::new();
            for b in &a.buffers {
                if self.others_hold_more(sender, *b, a.rights, keeps) {
                    Self::holders_of(sender_state, agg, a, *b, keeps, &mut culprits);
                }
            }
            if !culprits.is_empty() {
                return Err(Error::RelatedAggregates {
                    agg,
                    related: culprits.into_iter().collect(),
                });
            }
        }
        let strength = match mode {
            Mode::Copy => Strength::Strong,
            Mode::Move | Mode::Share => flags.strength,
        };
        let chunks = a.chunks.clone();
        let hold = self.insert_agg(holder, chunks.clone(), Rights::None, None, false)?;
        let ticket = match delivery {
            Delivery::Queued => None,
            Delivery::Ticketed => Some(self.issue_ticket(sender, receiver)?),
        };
        self.generation += 1;
        Ok(Export {
            hold,
            chunks,
            strength,
            ticket,
        })
    }

    /// The destination confirmed the transfer [`Ledger::export`] started: the sender's
    /// aggregate drops to what the mode leaves it (Table 1).
    pub fn export_done(&mut self, request: &TransferRequest) -> Result<()> {
        let a = self.agg_mut(request.sender, request.agg)?;
        let held = a.rights;
        let keeps = request.mode.sender_keeps(held);
        let buffers = std::mem::take(&mut a.buffers);
        self.remove_holds(request.sender, &buffers, held);
        self.add_holds(request.sender, &buffers, keeps);
        let a = self.agg_mut(request.sender, request.agg)?;
        a.buffers = buffers;
        a.rights = keeps;
        self.generation += 1;
        Ok(())
    }

    /// The receiving half of a transfer from `source`, a domain of another pool: a fresh
    /// buffer of `len` bytes in the receiver's pool (to be filled by the executor before
    /// anyone looks) in an aggregate queued for `receiver` (or ticketed with `ticket`), with
    /// the rights `mode` gives; a strong share's buffer is sealed, as a local one's copy is.
    pub fn import(
        &mut self,
        receiver: DomainId,
        source: DomainId,
        mode: Mode,
        strength: Strength,
        len: u64,
        ticket: Option<Ticket>,
    ) -> Result<Import> {
        let pool = self.domain(receiver)?.pool;
        if source.pool == pool {
            return Err(Error::UnknownDomain { domain: source });
        }
        if let Some(t) = ticket {
            let delivered = self
                .domain(receiver)?
                .tickets_delivered
                .get(&source)
                .copied()
                .unwrap_or(0);
            if t.0 <= delivered {
                return Err(Error::TicketReused {
                    ticket: t,
                    sender: source,
                });
            }
        }
        let gets = mode.receiver_gets();
        let shared = mode == Mode::Share;
        let seal = shared && strength == Strength::Strong;
        let mut chunks = ChunkList::new();
        let buffer = (len > 0).then(|| {
            let id = self.fresh_buffer(pool, len, shared, seal);
            if let Some(b) = self.buffers.get_mut(&id) {
                b.mappings.insert(receiver, gets);
            }
            chunks.push(Chunk {
                buffer: id,
                offset: 0,
                len,
            });
            NewBuffer {
                id,
                pool,
                len,
                seal,
            }
        });
        let agg = self.insert_agg(receiver, chunks, gets, None, true)?;
        let inbound = Inbound {
            agg,
            source,
            mode,
            strength,
        };
        let r = self.domain_mut(receiver)?;
        match ticket {
            None => r.queued.push_back(inbound),
            Some(t) => {
                r.ticketed.insert((source, t), inbound);
                r.tickets_delivered.insert(source, t.0);
            }
        }
        self.generation += 1;
        Ok(Import { agg, buffer })
    }

    /// Checks the ledger's internal consistency and the rights invariants, returning a
    /// description of the first violation. Used by tests after every operation.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        let mut holds: BTreeMap<BufferId, BTreeMap<DomainId, [u32; 3]>> = BTreeMap::new();
        for (d, state) in &self.domains {
            for (id, a) in &state.aggs {
                if a.buffers != buffer_set(&a.chunks) {
                    return Err(format!("{id} caches the wrong buffer set"));
                }
                if !state.groups.get(&a.group).is_some_and(|g| g.contains(*id)) {
                    return Err(format!("{id} is missing from its related group"));
                }
                for b in &a.buffers {
                    if !self.buffers.contains_key(b) {
                        return Err(format!("{id} in {d} refers to freed buffer {b}"));
                    }
                    holds.entry(*b).or_default().entry(*d).or_default()[a.rights as usize] += 1;
                }
            }
        }
        for (id, b) in &self.buffers {
            let expected = holds.remove(id).unwrap_or_default();
            if b.holds != expected {
                return Err(format!("holdings of {id} are out of date"));
            }
            if b.holds.is_empty() {
                return Err(format!("{id} is held by nobody but was not freed"));
            }
            let writers: Vec<_> = b
                .holds
                .iter()
                .filter(|(_, c)| top_rights(c) == Rights::ReadWrite)
                .map(|(d, _)| *d)
                .collect();
            if writers.len() > 1 {
                return Err(format!("{id} is writable by several domains: {writers:?}"));
            }
            if b.frozen && !writers.is_empty() {
                return Err(format!("shared buffer {id} has a read/write holder"));
            }
            if b.sealed && b.mappings.values().any(|m| *m == Rights::ReadWrite) {
                return Err(format!("sealed buffer {id} is still mapped writable"));
            }
            for (d, c) in &b.holds {
                let rights = top_rights(c);
                let mapped = b.mappings.get(d).copied().unwrap_or(Rights::None);
                if mapped < rights {
                    return Err(format!("{d} holds {rights} on {id} but maps only {mapped}"));
                }
            }
            if b.mappings.values().any(|m| *m == Rights::None) {
                return Err(format!("{id} records an empty mapping"));
            }
        }
        Ok(())
    }
}

fn require(agg: AggId, held: Rights, needed: Rights, op: Operation) -> Result<()> {
    if held >= needed {
        Ok(())
    } else {
        Err(Error::InsufficientRights {
            agg,
            op,
            needed,
            held,
        })
    }
}

fn out_of_range(agg: AggId, e: crate::chunk::OutOfRange) -> Error {
    Error::OutOfRange {
        agg,
        offset: e.offset,
        len: e.len,
        available: e.available,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: u64 = 64 * 1024;

    fn two(policy: Policy) -> (Ledger, DomainId, DomainId) {
        let mut l = Ledger::new(policy);
        let a = l.add_domain(PoolId(0));
        let b = l.add_domain(PoolId(0));
        (l, a, b)
    }

    fn plan(
        l: &Ledger,
        a: DomainId,
        x: AggId,
        b: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> TransferPlan {
        l.plan_transfer(TransferRequest::new(a, x, b, mode, flags))
            .expect("plan")
    }

    fn only_route(p: &TransferPlan) -> Route {
        let routes: BTreeSet<_> = p
            .pieces()
            .iter()
            .map(|x| format!("{:?}", x.route))
            .collect();
        assert_eq!(routes.len(), 1, "{routes:?}");
        p.pieces()[0].route
    }

    #[test]
    fn strong_share_by_reference_seals_and_drops_the_senders_write_mapping() {
        let (mut l, a, b) = two(Policy::by_reference());
        let x = l.alloc(a, BIG).expect("alloc").agg;
        let buf = l.chunks(a, x).expect("chunks").chunks()[0].buffer;
        let p = plan(&l, a, x, b, Mode::Share, TransferFlags::strong());
        assert_eq!(only_route(&p), Route::Reference);
        assert_eq!(p.seals(), vec![buf]);
        assert_eq!(
            p.mapping_changes(),
            vec![
                MappingChange {
                    domain: a,
                    buffer: buf,
                    from: Rights::ReadWrite,
                    to: Rights::Read
                },
                MappingChange {
                    domain: b,
                    buffer: buf,
                    from: Rights::None,
                    to: Rights::Read
                },
            ]
        );
        let c = l.commit(p).expect("commit");
        assert!(c.copies.is_empty() && c.new_buffers.is_empty());
        assert!(l.is_sealed(buf) && l.is_frozen(buf));
        assert_eq!(l.mapping(a, buf), Rights::Read);
        l.check_invariants().expect("invariants");
    }

    #[test]
    fn a_strong_share_copies_a_buffer_never_shared_once_then_seals_it() {
        let policy = Policy {
            share_copy_max: BIG,
            ..Policy::linux_host()
        };
        let (mut l, a, b) = two(policy);
        let c3 = l.add_domain(PoolId(0));
        let x = l.alloc(a, BIG).expect("alloc").agg;
        let buf = l.chunks(a, x).expect("chunks").chunks()[0].buffer;

        // First share: a copy, the receiver's alone, unsealed; the sender's buffer untouched.
        let p = plan(&l, a, x, b, Mode::Share, TransferFlags::strong());
        assert_eq!(only_route(&p), Route::Copy(CopyReason::SealCost));
        assert!(p.seals().is_empty() && p.mapping_changes().is_empty());
        assert_eq!(
            p.copy_runs(),
            vec![CopyRun {
                pieces: 0..1,
                len: BIG,
                seal: false
            }]
        );
        let c = l.commit(p).expect("commit");
        assert_eq!(c.new_buffers.len(), 1);
        assert!(!c.new_buffers[0].seal);
        let copy = c.new_buffers[0].id;
        assert!(!l.is_sealed(buf) && !l.is_sealed(copy));
        assert_eq!(l.mapping(a, buf), Rights::ReadWrite);
        assert_eq!(l.rights(a, x), Ok(Rights::Read));
        assert_eq!(l.buffer_rights(b, copy), Rights::Read);
        l.check_invariants().expect("invariants");

        // The next share of the same bytes seals them: copied at most once.
        let p = plan(&l, a, x, c3, Mode::Share, TransferFlags::strong());
        assert_eq!(only_route(&p), Route::Reference);
        assert_eq!(p.seals(), vec![buf]);
        l.commit(p).expect("commit");
        assert!(l.is_sealed(buf));
        l.check_invariants().expect("invariants");

        // The receiver passing its copy on (shared data) seals the copy: it maps it
        // writable, so the ledger asks for that mapping to go.
        let got = l.receive(b, None).expect("receive").agg;
        let p = plan(&l, b, got, a, Mode::Share, TransferFlags::strong());
        assert_eq!(only_route(&p), Route::Reference);
        assert_eq!(p.seals(), vec![copy]);
        assert!(p.mapping_changes().contains(&MappingChange {
            domain: b,
            buffer: copy,
            from: Rights::ReadWrite,
            to: Rights::Read
        }));

        // An executor that cannot afford the copy (the pool is full) passes by reference.
        let y = l.alloc(a, BIG).expect("alloc").agg;
        let mut request = TransferRequest::new(a, y, b, Mode::Share, TransferFlags::strong());
        request.no_cost_copies = true;
        let p = l.plan_transfer(request).expect("plan");
        assert_eq!(only_route(&p), Route::Reference);
        assert_eq!(p.seals().len(), 1);
    }

    #[test]
    fn a_strong_share_seals_what_is_too_large_or_already_shared() {
        let policy = Policy {
            share_copy_max: BIG - 1,
            ..Policy::linux_host()
        };
        let (mut l, a, b) = two(policy);
        let x = l.alloc(a, BIG).expect("alloc").agg;
        let p = plan(&l, a, x, b, Mode::Share, TransferFlags::strong());
        assert_eq!(only_route(&p), Route::Reference, "above share_copy_max");
        let (mut l, a, b) = two(Policy {
            share_copy_max: BIG,
            ..Policy::linux_host()
        });
        l.trust(b, a).expect("trust");
        let x = l.alloc(a, BIG).expect("alloc").agg;
        let p = plan(&l, a, x, b, Mode::Share, TransferFlags::weak());
        assert_eq!(only_route(&p), Route::Reference);
        l.commit(p).expect("commit");
        let p = plan(&l, a, x, b, Mode::Share, TransferFlags::strong());
        assert_eq!(only_route(&p), Route::Reference, "shared before: seal");
        assert_eq!(p.seals().len(), 1);
    }

    #[test]
    fn on_linux_strong_moves_copy_and_trusted_weak_moves_reference() {
        let (mut l, a, b) = two(Policy::linux_host());
        let x = l.alloc(a, BIG).expect("alloc").agg;
        let p = plan(&l, a, x, b, Mode::Move, TransferFlags::strong());
        assert_eq!(only_route(&p), Route::Copy(CopyReason::StrongMove));
        l.trust(b, a).expect("trust");
        let p = plan(&l, a, x, b, Mode::Move, TransferFlags::weak());
        assert_eq!(only_route(&p), Route::Reference);
        assert_eq!(p.effective_strength(), Strength::Weak);
        let buf = p.pieces()[0].source.buffer;
        assert_eq!(
            p.mapping_changes(),
            vec![MappingChange {
                domain: b,
                buffer: buf,
                from: Rights::None,
                to: Rights::ReadWrite
            }],
            "the trusted sender keeps its mapping"
        );
        l.commit(p).expect("commit");
        assert_eq!(l.mapping(a, buf), Rights::ReadWrite);
        assert_eq!(l.buffer_rights(a, buf), Rights::None);
        l.check_invariants().expect("invariants");
    }

    #[test]
    fn weak_towards_an_untrusting_receiver_is_applied_as_strong() {
        let (l, a, b) = two(Policy::by_reference());
        let mut l = l;
        let x = l.alloc(a, BIG).expect("alloc").agg;
        let p = plan(&l, a, x, b, Mode::Share, TransferFlags::weak());
        assert_eq!(p.reported_strength(), Strength::Weak);
        assert_eq!(p.effective_strength(), Strength::Strong);
        assert_eq!(p.seals().len(), 1);
    }

    #[test]
    fn small_partial_and_foreign_buffers_are_copied() {
        let mut l = Ledger::new(Policy::linux_host());
        let a = l.add_domain(PoolId(0));
        let b = l.add_domain(PoolId(0));
        let far = l.add_domain(PoolId(1));
        let small = l.alloc(a, 4096).expect("alloc").agg;
        assert_eq!(
            only_route(&plan(&l, a, small, b, Mode::Share, TransferFlags::strong())),
            Route::Copy(CopyReason::Small)
        );
        let big = l.alloc(a, BIG).expect("alloc").agg;
        let part = l.select(a, big, 0, 10 * 1024).expect("select");
        l.decref(a, big).expect("decref");
        assert_eq!(
            only_route(&plan(&l, a, part, b, Mode::Share, TransferFlags::strong())),
            Route::Copy(CopyReason::Exposure)
        );
        let whole = l.alloc(a, BIG).expect("alloc").agg;
        assert_eq!(
            only_route(&plan(
                &l,
                a,
                whole,
                far,
                Mode::Share,
                TransferFlags::strong()
            )),
            Route::Copy(CopyReason::OtherPool)
        );
        assert_eq!(
            only_route(&plan(&l, a, whole, b, Mode::Share, TransferFlags::strong())),
            Route::Reference
        );
        assert_eq!(
            only_route(&plan(&l, a, whole, b, Mode::Copy, TransferFlags::strong())),
            Route::Copy(CopyReason::ModeIsCopy)
        );
    }

    #[test]
    fn related_and_neighbouring_aggregates_force_copies() {
        let (mut l, a, b) = two(Policy::by_reference());
        let x = l.alloc(a, BIG).expect("alloc").agg;
        let y = l.select(a, x, 0, BIG).expect("select");
        assert_eq!(
            only_route(&plan(&l, a, y, b, Mode::Move, TransferFlags::strong())),
            Route::Copy(CopyReason::Related)
        );
        let err = l
            .plan_transfer(TransferRequest::new(
                a,
                y,
                b,
                Mode::Move,
                TransferFlags::strong().fail_if_related(),
            ))
            .expect_err("fail-if-related");
        assert_eq!(
            err,
            Error::RelatedAggregates {
                agg: y,
                related: vec![x]
            }
        );
        // A received aggregate on the same buffer is a neighbour, not a relative.
        let z = l.alloc(b, BIG).expect("alloc").agg;
        let p = plan(&l, b, z, a, Mode::Share, TransferFlags::strong());
        l.commit(p).expect("commit");
        let r = l.receive(a, Some(b)).expect("receive").agg;
        assert!(
            l.find_related(a, r, Rights::None)
                .expect("related")
                .is_empty()
        );
    }

    #[test]
    fn concatenation_is_bounded_in_bytes() {
        let (mut l, a, _) = two(Policy::by_reference());
        let x = l.alloc(a, MAX_LEN).expect("alloc").agg;
        let one = l.alloc(a, 1).expect("alloc").agg;
        assert_eq!(
            l.concat(a, x, one),
            Err(Error::TooLarge {
                len: MAX_LEN + 1,
                max: MAX_LEN
            })
        );
        assert_eq!(
            l.alloc(a, MAX_LEN + 1).map(|x| x.agg),
            Err(Error::TooLarge {
                len: MAX_LEN + 1,
                max: MAX_LEN
            })
        );
    }

    #[test]
    fn a_move_never_hands_over_the_same_bytes_twice() {
        let (mut l, a, b) = two(Policy::by_reference());
        let x = l.alloc(a, BIG).expect("alloc").agg;
        let xx = l.concat(a, x, x).expect("concat");
        l.decref(a, x).expect("decref");
        let route =
            |l: &Ledger, mode| only_route(&plan(l, a, xx, b, mode, TransferFlags::strong()));
        assert_eq!(
            route(&l, Mode::Move),
            Route::Copy(CopyReason::RepeatedBytes)
        );
        assert_eq!(
            route(&l, Mode::Share),
            Route::Reference,
            "read-only aliasing is invisible"
        );
    }

    #[test]
    fn a_plan_goes_stale_when_the_ledger_changes() {
        let (mut l, a, b) = two(Policy::by_reference());
        let x = l.alloc(a, BIG).expect("alloc").agg;
        let p = plan(&l, a, x, b, Mode::Move, TransferFlags::strong());
        l.alloc(a, 1).expect("alloc");
        assert_eq!(l.commit(p), Err(Error::StalePlan));
        assert_eq!(l.rights(a, x), Ok(Rights::ReadWrite));
    }

    #[test]
    fn a_refused_seal_is_replanned_as_a_copy() {
        let (mut l, a, b) = two(Policy::by_reference());
        let x = l.alloc(a, BIG).expect("alloc").agg;
        let mut request = TransferRequest::new(a, x, b, Mode::Share, TransferFlags::strong());
        let first = l.plan_transfer(request.clone()).expect("plan");
        request.force_copy = first.seals().iter().copied().collect();
        let second = l.plan_transfer(request).expect("plan");
        assert_eq!(only_route(&second), Route::Copy(CopyReason::Forced));
        assert!(second.seals().is_empty());
        let c = l.commit(second).expect("commit");
        assert_eq!(c.new_buffers.len(), 1);
        assert!(
            c.new_buffers[0].seal,
            "the copy of a strong share is sealed at birth"
        );
        let buf = first.pieces()[0].source.buffer;
        assert_eq!(
            l.mapping(a, buf),
            Rights::ReadWrite,
            "a copy needs no permission change in the sender"
        );
        l.check_invariants().expect("invariants");
    }

    #[test]
    fn copied_runs_coalesce_into_one_new_buffer() {
        let (mut l, a, b) = two(Policy::copy_always());
        let mut parts = Vec::new();
        for _ in 0..3 {
            parts.push(l.alloc(a, 100).expect("alloc").agg);
        }
        let ab = l.concat(a, parts[0], parts[1]).expect("concat");
        let abc = l.concat(a, ab, parts[2]).expect("concat");
        let p = plan(&l, a, abc, b, Mode::Copy, TransferFlags::strong());
        assert_eq!(p.copied_bytes(), 300);
        assert!(p.referenced_buffers().is_empty());
        let c = l.commit(p).expect("commit");
        assert_eq!(c.new_buffers.len(), 1);
        assert_eq!(c.new_buffers[0].len, 300);
        assert_eq!(c.copies.len(), 3);
        assert_eq!(
            c.copies[2].to,
            Chunk {
                buffer: c.new_buffers[0].id,
                offset: 200,
                len: 100
            }
        );
    }

    #[test]
    fn the_last_reference_releases_buffers_and_their_mappings() {
        let (mut l, a, b) = two(Policy::by_reference());
        l.trust(b, a).expect("trust");
        let x = l.alloc(a, BIG).expect("alloc").agg;
        let buf = l.chunks(a, x).expect("chunks").chunks()[0].buffer;
        let p = plan(&l, a, x, b, Mode::Share, TransferFlags::weak());
        l.commit(p).expect("commit");
        let y = l.receive(b, None).expect("receive").agg;
        assert!(!l.recyclable_for(buf, a));
        assert_eq!(l.decref(a, x), Ok(Release::default()));
        let release = l.decref(b, y).expect("decref");
        assert_eq!(release.freed, vec![buf]);
        assert_eq!(release.unmapped, vec![(a, buf), (b, buf)]);
        assert!(l.recyclable_for(buf, a));
        assert_eq!(l.buffers().count(), 0);
    }

    #[test]
    fn a_dead_domain_leaves_nothing_behind() {
        let (mut l, a, b) = two(Policy::by_reference());
        let x = l.alloc(a, BIG).expect("alloc").agg;
        let p = plan(&l, a, x, b, Mode::Move, TransferFlags::strong());
        l.commit(p).expect("commit");
        l.alloc(b, 10).expect("alloc");
        let release = l.remove_domain(b).expect("remove");
        assert_eq!(
            release.freed.len(),
            1,
            "the other buffer is still held by a's moved-away aggregate"
        );
        assert_eq!(l.decref(a, x).expect("decref").freed.len(), 1);
        assert_eq!(l.buffers().count(), 0);
        assert!(!l.has_domain(b));
        l.check_invariants().expect("invariants");
    }
}
