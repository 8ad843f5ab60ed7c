//! The buffer store: the memfds behind the ledger's buffers.
//!
//! A *slot* is one memfd, sealed against shrinking and growing at birth, mode 0600, with
//! its pages faulted in by the block manager before anyone uses it. A ledger buffer lives in
//! a slot; when the ledger frees the buffer, its slot is recycled into the free list of the
//! one domain that could already see it (it received the slot's descriptor, or the slot was
//! made for it) if it was never sealed and that domain's free list has room; otherwise the
//! slot is destroyed and every live domain that received its descriptor is told to forget
//! its mapping. Slots come in size classes so that recycled ones fit later allocations.
//!
//! Clients cache mappings by slot, so a recycled slot costs its domain no descriptor and no
//! mapping: the steady state of a loop that allocates, transfers and frees passes no
//! descriptor at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use cosh_core::{BufferId, DomainId, PoolId};
use cosh_sys::mapping::{Mapping, Prefault, ReadOnly, ReadWrite};
use cosh_sys::memfd::Memfd;

/// The page size the store rounds to.
pub(crate) const PAGE: u64 = 4096;
const MIB: u64 = 1024 * 1024;

/// The size class of a buffer of `len` bytes: whole pages, a power of two up to 1 MiB, whole
/// MiB beyond (so at most 2x waste for small buffers and under 1 MiB for large ones).
pub(crate) fn class_len(len: u64) -> u64 {
    let pages = len.max(1).div_ceil(PAGE) * PAGE;
    if pages <= MIB {
        pages.next_power_of_two()
    } else {
        pages.div_ceil(MIB) * MIB
    }
}

/// The block manager's own view of a slot.
enum DaemonMap {
    Write(Mapping<ReadWrite>),
    Read(Mapping<ReadOnly>),
}

/// One memfd.
pub(crate) struct Slot {
    memfd: Arc<Memfd>,
    map: Option<DaemonMap>,
    /// Domains that received a descriptor of this slot (they may map it for ever).
    exposed: BTreeSet<DomainId>,
    /// The domain the slot was made or recycled for.
    owner: DomainId,
    /// The domain (and its uid) whose quotas it counts against while in use (`None`: free).
    charged: Option<(DomainId, u32)>,
    sealed: bool,
    /// Pools whose block manager was given a read-only descriptor over a link (trusted: they
    /// read only what a transfer names, so they do not keep the slot from being recycled).
    links: BTreeSet<PoolId>,
    /// A read-only mapping the links to other hosts send from (made on first use).
    shared: Option<Arc<Mapping<ReadOnly>>>,
}

impl Slot {
    /// The length of the memfd.
    pub(crate) fn len(&self) -> u64 {
        self.memfd.len()
    }
}

/// A slot id (stable for the slot's life, never reused).
pub(crate) type SlotId = u64;

/// Why a slot could not be provided.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// The kernel refused (out of memory, out of descriptors).
    #[error("cannot make a buffer of {len} bytes: {source}")]
    Sys { len: u64, source: cosh_sys::Error },
    /// The pool's memory limit would be passed.
    #[error(
        "the pool is full: a buffer of {len} bytes would take it past its limit of {limit} bytes \
         ({in_use} in use); free some aggregates, or give the block manager a larger --pool-mib"
    )]
    Full { len: u64, in_use: u64, limit: u64 },
    /// A domain, or all the domains of its uid, at a quota of live bytes or buffers.
    #[error(
        "{who} at its quota: it made {bytes} bytes in {buffers} buffers that are still alive, \
         and a buffer of {len} more would pass its limit of {max_bytes} bytes in {max_buffers} \
         buffers; free some aggregates (or let receivers take them) first"
    )]
    OverQuota {
        /// `domain p0.d3 is`, or `uid 1000 (all its domains together) is`.
        who: String,
        len: u64,
        bytes: u64,
        buffers: u64,
        max_bytes: u64,
        max_buffers: u64,
    },
    /// The block manager holds as many buffers as its descriptor limit allows.
    #[error(
        "the block manager holds {slots} buffers, the most its limit of {max} open descriptors \
         leaves room for; free some aggregates, or raise the block manager's RLIMIT_NOFILE"
    )]
    Descriptors { slots: usize, max: usize },
}

/// What one domain (or all the domains of one uid) may hold in buffers it made (or copies
/// made for its transfers) that are still alive; 0 means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Quota {
    pub(crate) bytes: u64,
    pub(crate) buffers: u64,
}

/// What one domain (or uid) holds against its quota.
#[derive(Clone, Copy, Debug, Default)]
struct Charge {
    bytes: u64,
    buffers: u64,
}

/// Counters for status.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StoreStats {
    pub(crate) free_slots: u64,
    pub(crate) free_bytes: u64,
}

/// All slots.
pub(crate) struct Store {
    slots: HashMap<SlotId, Slot>,
    next_slot: SlotId,
    by_buffer: HashMap<BufferId, SlotId>,
    /// Per domain, per class length: recycled slots only that domain can see.
    free: HashMap<DomainId, BTreeMap<u64, Vec<SlotId>>>,
    free_bytes: HashMap<DomainId, u64>,
    /// The most bytes kept in one domain's free lists.
    free_budget: u64,
    /// Bytes of all slots, in use or free.
    total: u64,
    /// The most bytes of slots there may be.
    limit: u64,
    /// Free slots destroyed to make room, with the domains to tell.
    evicted: Vec<(SlotId, Vec<DomainId>)>,
    /// Destroyed slots that linked block managers map: they are told to forget them.
    link_forgets: Vec<(PoolId, SlotId)>,
    /// Each domain's quota, and what it holds.
    quota: Quota,
    charges: HashMap<DomainId, Charge>,
    /// Each uid's quota (all its domains together), what each holds, and the one uid exempt
    /// (the block manager's own: its services).
    uid_quota: Quota,
    uid_charges: HashMap<u32, Charge>,
    exempt_uid: u32,
    /// The uid of each connected domain.
    uids: HashMap<DomainId, u32>,
    /// The most slots (each one an open descriptor of the block manager).
    max_slots: usize,
}

impl Store {
    pub(crate) fn new(
        free_budget: u64,
        limit: u64,
        quotas: (Quota, Quota, u32),
        max_slots: usize,
    ) -> Self {
        let (quota, uid_quota, exempt_uid) = quotas;
        Store {
            slots: HashMap::new(),
            next_slot: 1,
            by_buffer: HashMap::new(),
            free: HashMap::new(),
            free_bytes: HashMap::new(),
            free_budget,
            total: 0,
            limit,
            evicted: Vec::new(),
            link_forgets: Vec::new(),
            quota,
            charges: HashMap::new(),
            uid_quota,
            uid_charges: HashMap::new(),
            exempt_uid,
            uids: HashMap::new(),
            max_slots,
        }
    }

    /// `domain` runs as `uid` (its buffers count against that uid's quota too).
    pub(crate) fn set_uid(&mut self, domain: DomainId, uid: u32) {
        self.uids.insert(domain, uid);
    }

    /// Fails if `domain` (or its uid) may not take `class` more bytes in one more buffer.
    fn check_quota(&self, domain: DomainId, len: u64, class: u64) -> Result<(), StoreError> {
        let over = |q: Quota, c: Charge| {
            (q.bytes > 0 && c.bytes + class > q.bytes)
                || (q.buffers > 0 && c.buffers + 1 > q.buffers)
        };
        let refuse = |who: String, q: Quota, c: Charge| StoreError::OverQuota {
            who,
            len,
            bytes: c.bytes,
            buffers: c.buffers,
            max_bytes: q.bytes,
            max_buffers: q.buffers,
        };
        let c = self.charges.get(&domain).copied().unwrap_or_default();
        if over(self.quota, c) {
            return Err(refuse(format!("domain {domain} is"), self.quota, c));
        }
        if let Some(&uid) = self.uids.get(&domain)
            && uid != self.exempt_uid
        {
            let c = self.uid_charges.get(&uid).copied().unwrap_or_default();
            if over(self.uid_quota, c) {
                return Err(refuse(
                    format!("uid {uid} (all its domains together) is"),
                    self.uid_quota,
                    c,
                ));
            }
        }
        Ok(())
    }

    /// Counts slot `id` (in use now) against `domain`'s quota (and its uid's), instead of
    /// whoever it counted against before.
    fn charge(&mut self, id: SlotId, domain: DomainId) {
        self.uncharge(id);
        let uid = self.uids.get(&domain).copied().unwrap_or(self.exempt_uid);
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.charged = Some((domain, uid));
        let len = slot.memfd.len();
        for c in [
            self.charges.entry(domain).or_default(),
            self.uid_charges.entry(uid).or_default(),
        ] {
            c.bytes += len;
            c.buffers += 1;
        }
    }

    /// Slot `id` leaves use: it no longer counts against anyone's quota.
    fn uncharge(&mut self, id: SlotId) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let len = slot.memfd.len();
        let Some((domain, uid)) = slot.charged.take() else {
            return;
        };
        fn take(c: &mut Charge, len: u64) -> bool {
            c.bytes = c.bytes.saturating_sub(len);
            c.buffers = c.buffers.saturating_sub(1);
            c.buffers == 0
        }
        if self.charges.get_mut(&domain).is_some_and(|c| take(c, len)) {
            self.charges.remove(&domain);
        }
        if self.uid_charges.get_mut(&uid).is_some_and(|c| take(c, len)) {
            self.uid_charges.remove(&uid);
        }
    }

    /// Bytes and buffers `domain` holds against its quota.
    pub(crate) fn charged(&self, domain: DomainId) -> (u64, u64) {
        let c = self.charges.get(&domain).copied().unwrap_or_default();
        (c.bytes, c.buffers)
    }

    /// Removes a slot, keeping the byte count.
    fn destroy(&mut self, id: SlotId) -> Option<Slot> {
        let slot = self.slots.remove(&id)?;
        self.total = self.total.saturating_sub(slot.len());
        self.link_forgets
            .extend(slot.links.iter().map(|pool| (*pool, id)));
        Some(slot)
    }

    /// The link to `pool` is gone, and with it that block manager's mappings: a new link
    /// passes descriptors again.
    pub(crate) fn forget_link(&mut self, pool: PoolId) {
        for slot in self.slots.values_mut() {
            slot.links.remove(&pool);
        }
        self.link_forgets.retain(|(p, _)| *p != pool);
    }

    /// Slots destroyed since the last call that linked block managers map.
    pub(crate) fn take_link_forgets(&mut self) -> Vec<(PoolId, SlotId)> {
        std::mem::take(&mut self.link_forgets)
    }

    /// A read-only descriptor of slot `id` for the block manager of `pool`, the first time
    /// it is asked for (`None` after: that block manager keeps its mapping until told to
    /// forget the slot).
    pub(crate) fn link_descriptor(
        &mut self,
        id: SlotId,
        pool: PoolId,
    ) -> Result<Option<std::os::fd::OwnedFd>, cosh_sys::Error> {
        let slot = self
            .slots
            .get_mut(&id)
            .ok_or_else(|| cosh_sys::Error::BadDescriptor {
                reason: format!("no slot {id}"),
            })?;
        if slot.links.contains(&pool) {
            return Ok(None);
        }
        let fd = slot.memfd.reopen_read_only()?;
        slot.links.insert(pool);
        Ok(Some(fd.into()))
    }

    /// A read-only mapping of slot `id` that other threads may hold (a link's I/O thread
    /// sends from it).
    pub(crate) fn shared_read_map(&mut self, id: SlotId) -> Option<Arc<Mapping<ReadOnly>>> {
        let slot = self.slots.get_mut(&id)?;
        if slot.shared.is_none() {
            slot.shared = Some(Arc::new(slot.memfd.map_read(Prefault::OnFirstTouch).ok()?));
        }
        slot.shared.clone()
    }

    /// Lends the block manager's writable mapping of slot `id` to the copy engine.
    pub(crate) fn lend_write_map(&mut self, id: SlotId) -> Option<Mapping<ReadWrite>> {
        self.write_map(id)?;
        match self.slots.get_mut(&id)?.map.take() {
            Some(DaemonMap::Write(m)) => Some(m),
            _ => None,
        }
    }

    /// Takes back a mapping lent by [`Store::lend_write_map`].
    pub(crate) fn return_write_map(&mut self, id: SlotId, map: Mapping<ReadWrite>) {
        if let Some(slot) = self.slots.get_mut(&id)
            && slot.map.is_none()
            && !slot.sealed
        {
            slot.map = Some(DaemonMap::Write(map));
        }
    }

    /// Destroys free slots, largest first, until `class` more bytes fit under the limit and
    /// one more slot under the descriptor limit.
    fn make_room(&mut self, len: u64, class: u64) -> Result<(), StoreError> {
        while self.total + class > self.limit || self.slots.len() >= self.max_slots {
            let victim = self
                .free
                .iter()
                .flat_map(|(d, classes)| {
                    classes
                        .iter()
                        .filter(|(_, ids)| !ids.is_empty())
                        .map(move |(c, _)| (*c, *d))
                })
                .max();
            let Some((c, domain)) = victim else {
                if self.slots.len() >= self.max_slots {
                    return Err(StoreError::Descriptors {
                        slots: self.slots.len(),
                        max: self.max_slots,
                    });
                }
                return Err(StoreError::Full {
                    len,
                    in_use: self.total,
                    limit: self.limit,
                });
            };
            let id = self
                .free
                .get_mut(&domain)
                .and_then(|classes| classes.get_mut(&c))
                .and_then(Vec::pop);
            if let Some(b) = self.free_bytes.get_mut(&domain) {
                *b = b.saturating_sub(c);
            }
            if let Some(id) = id
                && let Some(slot) = self.destroy(id)
            {
                let tell = slot.exposed.iter().copied().collect();
                self.evicted.push((id, tell));
            }
        }
        Ok(())
    }

    /// Free slots destroyed to make room since the last call, with the domains to tell.
    pub(crate) fn take_evicted(&mut self) -> Vec<(SlotId, Vec<DomainId>)> {
        std::mem::take(&mut self.evicted)
    }

    /// Bytes of all slots, in use or free.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Provides a slot for the new buffer `buffer` of `len` bytes for `domain`: a recycled one
    /// of `domain`'s if any fits (zeroed if `zero`), else a fresh prefaulted one.
    pub(crate) fn provide(
        &mut self,
        buffer: BufferId,
        len: u64,
        domain: DomainId,
        zero: bool,
    ) -> Result<SlotId, StoreError> {
        let id = self.reserve(len, domain, zero)?;
        self.bind(buffer, id);
        Ok(id)
    }

    /// Puts `buffer` in a slot from [`Store::reserve`].
    pub(crate) fn bind(&mut self, buffer: BufferId, id: SlotId) {
        self.by_buffer.insert(buffer, id);
    }

    /// Gives back a slot from [`Store::reserve`] that was never bound (it goes to its
    /// domain's free list if that domain is still connected, or is destroyed).
    pub(crate) fn unreserve(&mut self, id: SlotId, domain: DomainId) {
        self.uncharge(id);
        let Some(slot) = self.slots.get(&id) else {
            return;
        };
        let class = slot.len();
        // Only a connected domain has a free list: one that left meanwhile (a receiver killed
        // while a transfer to it was being copied in) would keep the slot for ever.
        let alive = self.uids.contains_key(&domain);
        if alive && slot.exposed.iter().all(|d| *d == domain) && !slot.sealed {
            self.keep_free(domain, class, id);
        } else {
            self.destroy(id);
        }
    }

    /// A slot for a buffer of `len` bytes for `domain`, not yet bound to a buffer: a recycled
    /// one of `domain`'s if any fits (zeroed if `zero`), else a fresh prefaulted one. It
    /// counts against `domain`'s quota.
    pub(crate) fn reserve(
        &mut self,
        len: u64,
        domain: DomainId,
        zero: bool,
    ) -> Result<SlotId, StoreError> {
        self.reserve_charged(len, domain, domain, zero, true)
    }

    /// [`Store::reserve`], counting the slot against `payer`'s quota (the sender of a transfer
    /// whose copy it holds) rather than the domain it is made for; with `recycle` false, a
    /// fresh slot even if a recycled one fits (a slot that will be sealed must be one that no
    /// domain maps writable).
    pub(crate) fn reserve_charged(
        &mut self,
        len: u64,
        domain: DomainId,
        payer: DomainId,
        zero: bool,
        recycle: bool,
    ) -> Result<SlotId, StoreError> {
        let class = class_len(len);
        self.check_quota(payer, len, class)?;
        let recycled = self
            .free
            .get_mut(&domain)
            .filter(|_| recycle)
            .and_then(|classes| classes.get_mut(&class))
            .and_then(Vec::pop);
        let id = match recycled {
            Some(id) => {
                if let Some(b) = self.free_bytes.get_mut(&domain) {
                    *b = b.saturating_sub(class);
                }
                if zero {
                    let bytes = usize::try_from(len).unwrap_or(usize::MAX);
                    if let Some(map) = self.write_map(id) {
                        let end = bytes.min(map.len());
                        map.as_mut_slice()[..end].fill(0);
                    }
                }
                id
            }
            None => {
                self.make_room(len, class)?;
                let memfd = Memfd::create("cosh-buffer", class)
                    .map_err(|source| StoreError::Sys { len, source })?;
                // Prefault by allocating the pages, not by mapping them: the block manager
                // maps a slot only when it copies into or out of it.
                memfd
                    .allocate()
                    .map_err(|source| StoreError::Sys { len, source })?;
                self.total += class;
                let id = self.next_slot;
                self.next_slot += 1;
                self.slots.insert(
                    id,
                    Slot {
                        memfd: Arc::new(memfd),
                        map: None,
                        exposed: BTreeSet::new(),
                        owner: domain,
                        charged: None,
                        sealed: false,
                        links: BTreeSet::new(),
                        shared: None,
                    },
                );
                id
            }
        };
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.owner = domain;
        }
        self.charge(id, payer);
        Ok(id)
    }

    /// The slot holding `buffer`.
    pub(crate) fn slot_of(&self, buffer: BufferId) -> Option<SlotId> {
        self.by_buffer.get(&buffer).copied()
    }

    pub(crate) fn slot(&self, id: SlotId) -> Option<&Slot> {
        self.slots.get(&id)
    }

    /// The block manager's writable mapping of an unsealed slot (made on demand).
    pub(crate) fn write_map(&mut self, id: SlotId) -> Option<&mut Mapping<ReadWrite>> {
        let slot = self.slots.get_mut(&id)?;
        if slot.sealed {
            return None;
        }
        if !matches!(slot.map, Some(DaemonMap::Write(_))) {
            slot.map = None;
            // The block manager writes a slot to fill it with a copy: map every page at
            // once rather than fault them in one by one.
            slot.map = Some(DaemonMap::Write(slot.memfd.map_write(Prefault::Now).ok()?));
        }
        match &mut slot.map {
            Some(DaemonMap::Write(m)) => Some(m),
            _ => None,
        }
    }

    /// The bytes of a slot, for reading (made on demand).
    pub(crate) fn read(&mut self, id: SlotId) -> Option<&[u8]> {
        let slot = self.slots.get_mut(&id)?;
        if slot.map.is_none() {
            slot.map = Some(DaemonMap::Read(
                slot.memfd.map_read(Prefault::OnFirstTouch).ok()?,
            ));
        }
        match &slot.map {
            Some(DaemonMap::Write(m)) => Some(m.as_slice()),
            Some(DaemonMap::Read(m)) => Some(m.as_slice()),
            None => None,
        }
    }

    /// Copies `len` bytes between two different slots.
    pub(crate) fn copy(
        &mut self,
        from: (SlotId, u64),
        to: (SlotId, u64),
        len: u64,
    ) -> Result<(), &'static str> {
        if from.0 == to.0 {
            return Err("copy within one slot");
        }
        let (Ok(len), Ok(src_at), Ok(dst_at)) = (
            usize::try_from(len),
            usize::try_from(from.1),
            usize::try_from(to.1),
        ) else {
            return Err("copy beyond the address space");
        };
        // Take the destination mapping out so that both can be borrowed.
        let mut dst = match self.slots.get_mut(&to.0).map(|s| s.map.take()) {
            Some(Some(DaemonMap::Write(m))) => m,
            Some(other) => {
                if let Some(s) = self.slots.get_mut(&to.0) {
                    s.map = other;
                }
                self.write_map(to.0)
                    .ok_or("destination slot not writable")?;
                match self.slots.get_mut(&to.0).and_then(|s| s.map.take()) {
                    Some(DaemonMap::Write(m)) => m,
                    _ => return Err("destination slot not writable"),
                }
            }
            None => return Err("unknown destination slot"),
        };
        let result = match self.read(from.0) {
            Some(src) => match (
                src.get(src_at..src_at.saturating_add(len)),
                dst.as_mut_slice()
                    .get_mut(dst_at..dst_at.saturating_add(len)),
            ) {
                (Some(s), Some(d)) => {
                    d.copy_from_slice(s);
                    Ok(())
                }
                _ => Err("copy out of a slot's bounds"),
            },
            None => Err("unknown source slot"),
        };
        if let Some(s) = self.slots.get_mut(&to.0) {
            s.map = Some(DaemonMap::Write(dst));
        }
        result
    }

    /// The memfd to seal, after dropping the block manager's own mapping (which would make the
    /// seal fail).
    pub(crate) fn prepare_seal(&mut self, id: SlotId) -> Option<Arc<Memfd>> {
        let slot = self.slots.get_mut(&id)?;
        if !slot.sealed {
            // Any shared mapping made through the read/write descriptor, even a read-only
            // one, makes the kernel refuse the seal.
            slot.map = None;
        }
        Some(Arc::clone(&slot.memfd))
    }

    /// Records that a slot was sealed.
    pub(crate) fn mark_sealed(&mut self, id: SlotId) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.sealed = true;
        }
    }

    /// A new descriptor of slot `id` for `domain`, read-only or read/write, recording the
    /// exposure. Read-only descriptors are reopened each time rather than kept: a process
    /// may hold only 20,000 descriptors, and each slot already holds one.
    pub(crate) fn descriptor(
        &mut self,
        id: SlotId,
        domain: DomainId,
        write: bool,
    ) -> Result<std::os::fd::OwnedFd, cosh_sys::Error> {
        let slot = self
            .slots
            .get_mut(&id)
            .ok_or_else(|| cosh_sys::Error::BadDescriptor {
                reason: format!("no slot {id}"),
            })?;
        slot.exposed.insert(domain);
        if write {
            return slot.memfd.as_fd().try_clone_to_owned().map_err(|e| {
                cosh_sys::Error::BadDescriptor {
                    reason: format!("cannot duplicate a descriptor: {e}"),
                }
            });
        }
        Ok(slot.memfd.reopen_read_only()?.into())
    }

    /// Puts a slot of `class` bytes on `domain`'s free list.
    fn keep_free(&mut self, domain: DomainId, class: u64, id: SlotId) {
        *self.free_bytes.entry(domain).or_default() += class;
        self.free
            .entry(domain)
            .or_default()
            .entry(class)
            .or_default()
            .push(id);
    }

    /// The ledger freed `buffer`: recycle its slot to the one domain that can see it, or
    /// destroy it. Returns the live domains to tell to forget the slot (when destroyed).
    pub(crate) fn release(
        &mut self,
        buffer: BufferId,
        alive: impl Fn(DomainId) -> bool,
    ) -> Option<(SlotId, Vec<DomainId>)> {
        let id = self.by_buffer.remove(&buffer)?;
        self.uncharge(id);
        let slot = self.slots.get(&id)?;
        let class = slot.len();
        let viewers: Vec<DomainId> = slot.exposed.iter().copied().collect();
        let only = match viewers.as_slice() {
            [] => Some(slot.owner),
            [one] if *one == slot.owner => Some(*one),
            _ => None,
        };
        if let Some(domain) = only
            && !slot.sealed
            && alive(domain)
            && class <= self.free_budget
        {
            // Over budget: the domain's free slots of other sizes go first (largest first),
            // so that a stream that changes sizes keeps its current size warm.
            while self.free_bytes.get(&domain).copied().unwrap_or(0) + class > self.free_budget {
                let victim = self.free.get_mut(&domain).and_then(|classes| {
                    classes
                        .iter_mut()
                        .rev()
                        .find(|(c, ids)| **c != class && !ids.is_empty())
                        .and_then(|(_, ids)| ids.pop())
                });
                let Some(victim) = victim else {
                    break;
                };
                if let Some(gone) = self.destroy(victim) {
                    if let Some(b) = self.free_bytes.get_mut(&domain) {
                        *b = b.saturating_sub(gone.len());
                    }
                    let tell = gone.exposed.iter().copied().filter(|d| alive(*d)).collect();
                    self.evicted.push((victim, tell));
                }
            }
            if self.free_bytes.get(&domain).copied().unwrap_or(0) + class <= self.free_budget {
                self.keep_free(domain, class, id);
                return None;
            }
        }
        self.destroy(id);
        let tell = viewers.into_iter().filter(|d| alive(*d)).collect();
        Some((id, tell))
    }

    /// A domain left: its free slots go. Returns the
    /// destroyed slots and the live domains to tell about each.
    pub(crate) fn remove_domain(
        &mut self,
        domain: DomainId,
        alive: impl Fn(DomainId) -> bool,
    ) -> Vec<(SlotId, Vec<DomainId>)> {
        let mut gone = Vec::new();
        self.uids.remove(&domain);
        self.free_bytes.remove(&domain);
        for (_, ids) in self.free.remove(&domain).unwrap_or_default() {
            for id in ids {
                if let Some(slot) = self.destroy(id) {
                    let tell = slot
                        .exposed
                        .iter()
                        .copied()
                        .filter(|d| *d != domain && alive(*d))
                        .collect();
                    gone.push((id, tell));
                }
            }
        }
        // The domain stays recorded as a viewer of every other slot: its process may still
        // map them, so they are never recycled to anyone else.
        gone
    }

    /// Whether `domain` ever received a descriptor of slot `id`.
    pub(crate) fn exposed_to(&self, id: SlotId, domain: DomainId) -> bool {
        self.slots
            .get(&id)
            .is_some_and(|s| s.exposed.contains(&domain))
    }

    /// Whether slot `id` is `domain`'s alone: made or recycled for it, its descriptor given
    /// to no other domain nor any link, and not sealed.
    pub(crate) fn private_to(&self, id: SlotId, domain: DomainId) -> bool {
        self.slots.get(&id).is_some_and(|s| {
            s.owner == domain
                && s.exposed.iter().all(|d| *d == domain)
                && s.links.is_empty()
                && !s.sealed
        })
    }

    /// Whether slot `id` is sealed against writing.
    pub(crate) fn is_sealed(&self, id: SlotId) -> bool {
        self.slots.get(&id).is_some_and(|s| s.sealed)
    }

    /// Free-list counters.
    pub(crate) fn stats(&self) -> StoreStats {
        let free_slots = self
            .free
            .values()
            .flat_map(|c| c.values())
            .map(Vec::len)
            .sum::<usize>();
        StoreStats {
            free_slots: free_slots as u64,
            free_bytes: self.free_bytes.values().sum(),
        }
    }
}
