//! Inline transfers: a small transfer's bytes carried on the direct ring itself.
//!
//! Below the sizes the block manager chose when it started ([`SmallTransfers`]), a transfer
//! to a receiver with a direct ring costs less as a copy than any other way: the sender's
//! library copies the bytes into the ring's staging area, announces them on the ring, and
//! tells the block manager quietly what its aggregate keeps (an `Inline` record: Table 1 for
//! a transfer whose every piece is copied);
//! the receiver's library copies them into a buffer of its own that waits for that
//! (a *landing*) and tells the block manager quietly that the landing now holds them with the
//! rights the mode gives (`Land`). One process is woken, not two; nothing is mapped, sealed
//! or revoked. A copy is a correct way to carry out every mode and strength, so the
//! semantics are those of any other transfer; the receiver's bytes are in memory nobody else
//! can map, so they cannot change after it received them.
//!
//! Landings are buffers this domain allocated (never slab pieces: a size class of at least
//! 4 KiB), mapped read/write, held by nobody else. One that a receive used up is replaced
//! before the next wait (when the domain would sleep anyway); one the program frees while
//! still private and read/write goes back to wait for the next transfer. The same waiting
//! buffers serve [`Domain::alloc_copy`] and small unzeroed allocations without a round trip.

use std::collections::BTreeMap;

use cosh_core::{DomainId, ErrorKind, Mode, Rights, Strength, TransferFlags};
use cosh_proto::ops::{
    DirectRecord, MAX_ALLOC_MANY, MAX_INLINE, Mappers, Request, Response, SmallTransfers,
    TransferReport, encode_record_into,
};

use crate::direct::{IdMap, corrupt, location};
use crate::{Access, Agg, Cached, Domain, Error, Incoming, Location, Result, unexpected};

/// The smallest landing: larger than any slab piece, so that each landing is a memory slot
/// of its own.
const MIN_LANDING: u64 = 4096;
/// The most landings kept waiting per size (fewer of the largest: [`max_waiting`]).
const MAX_WAITING: usize = 8;
/// Bytes of landings made at once when none of a size waits (at most 8 of them).
const SPARE_BYTES: u64 = 512 * 1024;
/// The largest landings made again as a whole reserve when short (see
/// [`Domain::top_up_landings`]).
const RESERVE_MAX: u64 = 64 * 1024;
/// Bytes an inline transfer copies into the staging area before it is announced, and then
/// between two raises of the filled counter: a larger transfer is streamed, so that the
/// receiver copies out behind the sender instead of after it.
const STREAM_CHUNK: usize = 64 * 1024;
/// The least time since the last inline transfer on a ring for the next to be streamed: one
/// that follows closer is part of a stream, whose transfers the receiver copies out while the
/// sender copies the next ones in anyway; streamed too, the two copies of a transfer contend
/// for the same lines (measured, 1 MiB transfers back to back: now and then 300–400 µs each
/// instead of 25–30).
const STREAM_GAP: std::time::Duration = std::time::Duration::from_micros(100);
/// How often a receiver that waits for a streamed transfer's next bytes (a sender copies a
/// chunk in microseconds, or milliseconds when it is preempted; a stopped one resumes when it
/// is continued) asks its block manager whether the sender is still there: a notice that it
/// left comes with any answer.
const STREAM_CHECK: std::time::Duration = std::time::Duration::from_millis(100);
/// The largest allocation served from waiting buffers: the largest inline transfer, so that a
/// producer that allocates what it sends inline asks the block manager for neither.
const MAX_SPARE_ALLOC: u64 = MAX_INLINE;

/// This domain's inline state.
#[derive(Default)]
pub(crate) struct Inline {
    /// The block manager's policy, once asked (`None`: not yet).
    policy: Option<SmallTransfers>,
    /// Landings waiting, by size.
    waiting: BTreeMap<u64, Vec<Agg>>,
    /// How many landings of each size the next top-up should leave waiting: what receives
    /// used since the last one (at least one, at most [`max_waiting`]).
    wanted: BTreeMap<u64, usize>,
    /// The size of each landing handed out, while the program holds it, and whether it came
    /// inline (rather than from an allocation).
    landed: IdMap<Agg, (u64, bool)>,
}

impl Inline {
    /// Whether `agg` is a landing holding fewer bytes than its buffer: never sent by
    /// reference (a transfer by reference passes whole buffers only).
    pub(crate) fn trimmed(&self, agg: Agg, len: u64) -> bool {
        self.landed.get(&agg).is_some_and(|(size, _)| *size != len)
    }
}

/// The most landings of `size` bytes kept waiting: no more bytes than a direct ring's staging
/// area carries at once (4 of 1 MiB), at most [`MAX_WAITING`].
fn max_waiting(size: u64) -> usize {
    let fit = (cosh_ring::DIRECT_STAGING as u64 / size.max(1)).max(1);
    usize::try_from(fit).unwrap_or(MAX_WAITING).min(MAX_WAITING)
}

/// The size of landing for `len` bytes.
fn landing_size(len: u64) -> u64 {
    len.max(MIN_LANDING).next_power_of_two()
}

impl Domain {
    /// The block manager's policy for small transfers (asked once, then remembered).
    pub fn small_transfer_policy(&mut self) -> Result<SmallTransfers> {
        if let Some(p) = self.direct.inline.policy {
            return Ok(p);
        }
        let p = match self.call(Request::SmallTransfers)? {
            Response::SmallTransfers(p) => p,
            r => return Err(unexpected(&r)),
        };
        self.direct.inline.policy = Some(p);
        Ok(p)
    }

    /// A transfer on the ring to `dest` as a copy of its bytes, when the policy says that
    /// costs least: `None` (nothing done) otherwise.
    pub(crate) fn try_inline(
        &mut self,
        agg: Agg,
        dest: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<Option<TransferReport>> {
        if self.kind != cosh_pool::PoolKind::Host
            || self.nc
            || flags.related != cosh_core::RelatedPolicy::Copy
            || dest.pool != self.id.pool
            || dest == self.id
        {
            return Ok(None);
        }
        let Some(local) = self.direct.local.get(&agg) else {
            return Ok(None);
        };
        let (at, rights, mapped_there) = (
            local.at,
            local.rights,
            local.mappers.contains(dest.to_bits()),
        );
        let weak = flags.strength == Strength::Weak && mode != Mode::Copy;
        // A weak transfer of a buffer the receiver maps already goes by reference: nothing
        // to copy, nothing to map. So does one of a buffer that came inline: passed on or
        // back by reference, it is mapped once and then bounces without a copy (inlined
        // again, every bounce would copy).
        let landed = self.direct.inline.landed.get(&agg).is_some_and(|l| l.1);
        if at.len == 0 || rights < mode.sender_needs() || (weak && (mapped_there || landed)) {
            return Ok(None);
        }
        let policy = self.small_transfer_policy()?;
        let max = if weak {
            policy.inline_max_weak
        } else {
            policy.inline_max
        };
        if at.len > max || !self.outbound(dest)? {
            return Ok(None);
        }
        self.ensure_mapped(&[at], Access::Read)?;
        let len = usize::try_from(at.len).map_err(|_| Error::Protocol("a huge piece".into()))?;
        let Some(map) = self.maps.get(&at.slot) else {
            return Ok(None);
        };
        let Some(bytes) = Domain::range(&at).and_then(|r| map.bytes().get(r)) else {
            return Err(Error::Protocol(format!("piece {at:?} is outside its slot")));
        };
        let Some(ring) = self.direct.outbound.get_mut(&dest) else {
            return Ok(None);
        };
        // Room in the staging area: what the receiver has not finished with stays; the bytes
        // never wrap (the end of the area is skipped instead). Whenever the receiver has
        // caught up, the next bytes go to the beginning again, so that only the pages the
        // transfers in flight need are ever touched.
        let staging = cosh_ring::DIRECT_STAGING as u32;
        let done = ring.consumed();
        // Bytes below the floor (skipped when starting again) are not in use.
        let live = ring
            .staged
            .wrapping_sub(done)
            .min(ring.staged.wrapping_sub(ring.floor));
        let offset = ring.staged % staging;
        let (start, live) = if live == 0 && offset != 0 {
            let start = ring.staged.wrapping_add(staging - offset);
            ring.floor = start;
            (start, 0)
        } else if offset as usize + len > cosh_ring::DIRECT_STAGING {
            (
                ring.staged.wrapping_add(staging - offset),
                live.saturating_add(staging - offset),
            )
        } else {
            (ring.staged, live)
        };
        if live as usize + len > cosh_ring::DIRECT_STAGING
            || !ring.has_room(1).map_err(|e| corrupt(dest, e))?
        {
            // Full (or a counter that lies): through the block manager, in order.
            return Ok(None);
        }
        // A receiver asleep takes longer to wake than this copy takes: wake it first.
        ring.rouse().map_err(|e| corrupt(dest, e))?;
        let seq = ring.seq;
        // A large transfer to a receiver that has caught up (that waits, or will once it is
        // done with what it is doing) is announced once its first chunk is in; the rest
        // follows behind the filled counter, and the receiver copies out behind. One that
        // still has transfers to land would only contend with this copy for the caches.
        let now = (len > STREAM_CHUNK).then(std::time::Instant::now);
        let streamed = live == 0
            && now.is_some_and(|now| {
                ring.last_inline
                    .is_none_or(|last| now.saturating_duration_since(last) > STREAM_GAP)
            });
        if now.is_some() {
            ring.last_inline = now;
        }
        let first = if streamed { STREAM_CHUNK } else { len };
        if streamed {
            ring.set_filled(start);
        }
        let into = ring
            .staging_mut(start, at.len)
            .ok_or_else(|| corrupt(dest, "its staging area is too short"))?;
        into[..first].copy_from_slice(&bytes[..first]);
        if streamed {
            ring.set_filled(start.wrapping_add(first as u32));
        }
        let head = DirectRecord::Inline {
            seq,
            mode: mode.into(),
            weak,
            len: at.len,
            at: start,
            streamed,
        };
        let mut buf = [0u8; cosh_proto::ops::MAX_RECORD];
        let n = encode_record_into(&head, &mut buf).map_err(|e| Error::Protocol(e.to_string()))?;
        // The block manager first (quietly), then the receiver, as for a transfer by
        // reference.
        self.log_request(Request::Inline {
            agg: agg.0,
            to: dest.to_bits(),
            mode: mode.into(),
            weak,
        })?;
        let ring = self
            .direct
            .outbound
            .get_mut(&dest)
            .ok_or_else(|| Error::Protocol("no ring".into()))?;
        let (pushed, parked) = ring.push(&buf[..n]).map_err(|e| corrupt(dest, e))?;
        if !pushed {
            return Err(corrupt(dest, "the ring shrank under a record"));
        }
        ring.seq += 1;
        ring.staged = start.wrapping_add(len as u32);
        if streamed {
            // The rest, a chunk at a time, before anything that may fail: the receiver has
            // the record and waits for these bytes.
            let Some(from) = self
                .maps
                .get(&at.slot)
                .and_then(|m| m.bytes().get(Domain::range(&at)?))
            else {
                return Err(Error::Protocol(
                    "a streamed transfer lost its memory".into(),
                ));
            };
            let mut done = first;
            while done < len {
                let end = (done + STREAM_CHUNK).min(len);
                let into = ring
                    .staging_mut(start, at.len)
                    .ok_or_else(|| corrupt(dest, "its staging area is too short"))?;
                into[done..end].copy_from_slice(&from[done..end]);
                done = end;
                ring.set_filled(start.wrapping_add(done as u32));
            }
        }
        if parked {
            self.wake_parked(dest)?;
        }
        // Only its bytes went: a buffer this domain alone held stays its own memory.
        let me = self.id.to_bits();
        let alone = self.direct.local.get(&agg).is_some_and(|l| {
            l.sendable && l.rights == Rights::ReadWrite && l.mappers.as_slice() == [me]
        });
        self.direct.after_transfer(agg, mode);
        if mode == Mode::Move
            && alone
            && let Some(l) = self.direct.local.get_mut(&agg)
        {
            l.reclaimable = true;
        }
        Ok(Some(TransferReport {
            copied_bytes: at.len,
            weak,
            ..TransferReport::default()
        }))
    }

    /// Lands the inline transfer of `len` bytes at `at` in the staging area of the ring from
    /// `peer` (`streamed`: as the sender's filled counter says they arrive); then tells the
    /// sender it is done with them.
    pub(crate) fn land_inline(
        &mut self,
        peer: DomainId,
        mode: Mode,
        weak: bool,
        at: u32,
        len: u64,
        streamed: bool,
    ) -> Result<Incoming> {
        if len == 0 || len > MAX_INLINE {
            return Err(corrupt(peer, format!("an inline transfer of {len} bytes")));
        }
        if self
            .direct
            .inbound
            .get(&peer)
            .is_none_or(|r| r.staging(at, len).is_none())
        {
            return Err(corrupt(peer, "an inline transfer outside the staging area"));
        }
        let size = landing_size(len);
        let (landing, place) = self.take_spare(size, len, mode.receiver_gets(), true)?;
        *self.direct.inline.wanted.entry(size).or_insert(0) += 1;
        let len_bytes = usize::try_from(len).unwrap_or(usize::MAX);
        // The bytes there now: all of them, or those below the filled counter.
        let mut ready = if streamed { 0 } else { len_bytes };
        let mut done = 0;
        let mut looks = 0u32;
        let mut since: Option<std::time::Instant> = None;
        let mut next_check = STREAM_CHECK;
        while done < len_bytes {
            if streamed && ready <= done {
                let Some(ring) = self.direct.inbound.get_mut(&peer) else {
                    return Err(Error::Protocol("a ring went away under a transfer".into()));
                };
                // A count beyond the transfer (a sender that broke the rules) lets the rest be
                // copied as it is: it garbles only that sender's own transfer.
                let filled = ring.filled().wrapping_sub(at) as usize;
                ready = filled.min(len_bytes);
                if ready <= done {
                    // Behind the sender: look again, yielding now and then (it may need this
                    // core), and after a millisecond sleeping between looks.
                    looks = looks.wrapping_add(1);
                    if !looks.is_multiple_of(64) {
                        std::hint::spin_loop();
                        continue;
                    }
                    let now = std::time::Instant::now();
                    let waited = now.saturating_duration_since(*since.get_or_insert(now));
                    if let Some(stop) = self.stream_stalled(peer, waited, &mut next_check) {
                        // The landing waits again for the next transfer; the record too,
                        // unless its sender is gone.
                        let _ = self.decref(landing);
                        return Err(stop);
                    }
                    if waited > std::time::Duration::from_millis(1) {
                        std::thread::sleep(std::time::Duration::from_micros(50));
                    } else {
                        std::thread::yield_now();
                    }
                    continue;
                }
                since = None;
                next_check = STREAM_CHECK;
            }
            // Out of the ring's staging area (checked above), into the landing: the ring and
            // the mapping are borrowed apart.
            let from = self
                .direct
                .inbound
                .get(&peer)
                .and_then(|r| r.staging(at, len));
            let into = self
                .maps
                .get_mut(&place.slot)
                .and_then(Cached::bytes_mut)
                .and_then(|b| b.get_mut(Domain::range(&place)?));
            let (Some(from), Some(into)) = (from, into) else {
                return Err(Error::Protocol("a landing is not mapped".into()));
            };
            into[done..ready].copy_from_slice(&from[done..ready]);
            done = ready;
        }
        if let Some(ring) = self.direct.inbound.get_mut(&peer) {
            ring.set_consumed(at.wrapping_add(len as u32));
        }
        Ok(Incoming {
            agg: landing,
            source: peer,
            mode,
            strength: if weak && mode != Mode::Copy {
                Strength::Weak
            } else {
                Strength::Strong
            },
            ticket: None,
        })
    }

    /// Whether a receiver that has `waited` for the next bytes of a streamed transfer from
    /// `peer` stops: a protocol error when the sender is gone (asked every [`STREAM_CHECK`]),
    /// `nothing_pending` when the receive's timeout has run out (the record is landed by a
    /// later receive), `None` to go on waiting.
    fn stream_stalled(
        &mut self,
        peer: DomainId,
        waited: std::time::Duration,
        next_check: &mut std::time::Duration,
    ) -> Option<Error> {
        if waited >= *next_check {
            *next_check = waited + STREAM_CHECK;
            if let Err(e) = self.call(Request::PoolInfo) {
                return Some(e);
            }
            if self.direct.inbound.get(&peer).is_none_or(|r| r.closing) {
                return Some(corrupt(
                    peer,
                    "its sender went away in the middle of a streamed inline transfer",
                ));
            }
        }
        if self.direct.receive_timeout.is_some_and(|t| waited >= t) {
            return Some(Error::Cosh {
                kind: ErrorKind::NothingPending,
                message: format!(
                    "a streamed inline transfer from domain {peer} is still arriving (its sender has not finished copying it in); a later receive takes it"
                ),
            });
        }
        None
    }

    /// A landing of `size` bytes, mapped read/write: one waiting, or a few more made in one
    /// round trip (the rest wait).
    fn new_landing(&mut self, size: u64) -> Result<Agg> {
        if let Some(agg) = self.direct.inline.waiting.get_mut(&size).and_then(Vec::pop) {
            return Ok(agg);
        }
        let n = (SPARE_BYTES / size).clamp(1, MAX_WAITING as u64) as usize;
        self.make_landings(size, n)?;
        self.direct
            .inline
            .waiting
            .get_mut(&size)
            .and_then(Vec::pop)
            .ok_or_else(|| Error::Protocol("no landing was made".into()))
    }

    /// Makes up to `n` landings of `size` bytes in one round trip; they wait.
    fn make_landings(&mut self, size: u64, n: usize) -> Result<()> {
        let count = u32::try_from(n.clamp(1, MAX_ALLOC_MANY as usize)).unwrap_or(1);
        let r = self.call(Request::AllocMany { len: size, count })?;
        let Response::AllocatedMany { buffers } = r else {
            return Err(unexpected(&r));
        };
        let me = self.id.to_bits();
        for b in buffers {
            let mut mappers = Mappers::new();
            mappers.push(me);
            self.direct
                .know(Agg(b.agg), b.piece, Rights::ReadWrite, Some(mappers));
            let at = location(b.piece);
            self.ensure_mapped(&[at], Access::Write)?;
            // Fault its pages in now, while nobody waits, rather than in the copy of the
            // transfer it lands (a fault per page: for 256 KiB, tens of microseconds).
            if let Ok(bytes) = self.location_bytes_mut(&at) {
                for page in bytes.chunks_mut(4096) {
                    page[0] = 0;
                }
            }
            self.direct
                .inline
                .waiting
                .entry(size)
                .or_default()
                .push(Agg(b.agg));
        }
        Ok(())
    }

    /// Whether this domain can make aggregates from its own waiting buffers, without asking
    /// (a coherent pool, rings open).
    fn local_allocations(&self) -> bool {
        self.kind == cosh_pool::PoolKind::Host && !self.nc && self.rings.is_some()
    }

    /// A waiting buffer of `size` bytes reshaped to hold `len` bytes with `rights` (a `Land`
    /// record, no answer, when that changes anything). Remembered as a landing (`arrived`:
    /// for an inline transfer), so that its last free keeps it waiting again.
    fn take_spare(
        &mut self,
        size: u64,
        len: u64,
        rights: Rights,
        arrived: bool,
    ) -> Result<(Agg, Location)> {
        let agg = self.new_landing(size)?;
        let at = self
            .direct
            .local
            .get(&agg)
            .map(|l| l.at)
            .ok_or_else(|| Error::Protocol("a landing was forgotten".into()))?;
        if at.len != len || rights != Rights::ReadWrite {
            self.log_request(Request::Land {
                agg: agg.0,
                len,
                rights: rights.into(),
            })?;
        }
        let at = Location { len, ..at };
        if let Some(l) = self.direct.local.get_mut(&agg) {
            l.at = at;
            l.rights = rights;
            l.sendable = rights == Rights::ReadWrite;
        }
        self.direct.inline.landed.insert(agg, (size, arrived));
        Ok((agg, at))
    }

    /// Like [`Domain::alloc_unzeroed`] for a power of two from 4 KiB to 1 MiB: a buffer of
    /// this domain's own from those waiting, or a few made in one round trip. `None` where
    /// that does not apply.
    pub(crate) fn alloc_spare(&mut self, len: u64) -> Result<Option<Agg>> {
        if !self.local_allocations()
            || !len.is_power_of_two()
            || !(MIN_LANDING..=MAX_SPARE_ALLOC).contains(&len)
        {
            return Ok(None);
        }
        Ok(Some(self.take_spare(len, len, Rights::ReadWrite, false)?.0))
    }

    /// A new read/write aggregate of this domain holding a copy of `bytes` (`None` when
    /// empty). Up to 1 MiB it is made from a waiting buffer without asking the block manager
    /// (a copy costs less than the round trip); larger ones are allocated and written.
    pub fn alloc_copy(&mut self, bytes: &[u8]) -> Result<Option<Agg>> {
        let len = bytes.len() as u64;
        if len == 0 {
            return Ok(None);
        }
        if self.local_allocations() && len <= MAX_INLINE {
            let (agg, at) = self.take_spare(landing_size(len), len, Rights::ReadWrite, false)?;
            self.location_bytes_mut(&at)?.copy_from_slice(bytes);
            return Ok(Some(agg));
        }
        let agg = self.alloc_unzeroed(len)?;
        if let Err(e) = self.write(agg, 0, bytes) {
            self.decref(agg)?;
            return Err(e);
        }
        Ok(Some(agg))
    }

    /// Before a wait: replaces the landings receives used since the last wait. Short of as
    /// many as were used, it makes every small landing of that size that may wait (up to
    /// [`RESERVE_MAX`]) in one round trip: small landings that do not come back (a share's,
    /// read-only; one the program keeps) would otherwise cost a round trip to the block
    /// manager before each receive (measured, a weak share and a copy right after a share
    /// to a receiver asleep: 1.0–1.7 µs slower than a weak move at 4 KiB with a landing
    /// made each time, 0.1–0.9 µs with this). Larger ones are made as many as were used:
    /// making and faulting in a whole reserve of them before the wait made the shares of
    /// 256 KiB and 1 MiB after it slower (1 MiB: 85–88 µs against 74–76).
    pub(crate) fn top_up_landings(&mut self) -> Result<()> {
        if self.direct.inline.wanted.is_empty() {
            return Ok(());
        }
        let wanted = std::mem::take(&mut self.direct.inline.wanted);
        for (size, n) in wanted {
            let have = self.direct.inline.waiting.get(&size).map_or(0, Vec::len);
            let n = n.clamp(1, max_waiting(size));
            if have < n {
                let make = if size <= RESERVE_MAX {
                    max_waiting(size)
                } else {
                    n
                };
                self.make_landings(size, make - have)?;
            }
        }
        Ok(())
    }

    /// Buffers of this domain's own waiting to land inline transfers and to serve small
    /// allocations (they count among its aggregates in the block manager's status).
    pub fn waiting_buffers(&self) -> usize {
        self.direct.inline.waiting.values().map(Vec::len).sum()
    }

    /// Gives every waiting buffer back to the block manager (more are made when needed).
    pub fn release_waiting(&mut self) -> Result<()> {
        let waiting = std::mem::take(&mut self.direct.inline.waiting);
        for agg in waiting.into_values().flatten() {
            self.decref(agg)?;
        }
        Ok(())
    }

    /// The program's last reference to `agg` goes: `true` if it was a landing still private
    /// and read/write (or moved inline: read/write again with a `Land` record), kept (held
    /// once again, by the library) to land the next transfer; the block manager keeps it as
    /// it is: the next landing reshapes it.
    pub(crate) fn restock(&mut self, agg: Agg) -> Result<bool> {
        let Some((size, _)) = self.direct.inline.landed.remove(&agg) else {
            return Ok(false);
        };
        let me = self.id.to_bits();
        // The program's references are all gone (the caller counted the last one down). A
        // landing moved inline is still this domain's own memory (only its bytes went).
        let private = self.direct.local.get(&agg).is_some_and(|l| {
            l.refs == 0
                && l.mappers.as_slice() == [me]
                && (l.rights == Rights::ReadWrite && l.sendable
                    || l.rights == Rights::None && l.reclaimable)
        });
        if !private
            || self
                .direct
                .inline
                .waiting
                .get(&size)
                .is_some_and(|w| w.len() >= max_waiting(size))
        {
            return Ok(false);
        }
        if let Some(l) = self.direct.local.get(&agg)
            && l.rights == Rights::None
        {
            // Read/write again (`Ledger::land` checks that nothing else holds it).
            self.log_request(Request::Land {
                agg: agg.0,
                len: l.at.len,
                rights: Rights::ReadWrite.into(),
            })?;
        }
        if let Some(l) = self.direct.local.get_mut(&agg) {
            l.refs = 1;
            l.rights = Rights::ReadWrite;
            l.sendable = true;
            l.reclaimable = false;
        }
        self.direct
            .inline
            .waiting
            .entry(size)
            .or_default()
            .push(agg);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_landings_never_outgrow_the_staging_area() {
        assert_eq!(max_waiting(4096), MAX_WAITING);
        assert_eq!(max_waiting(512 << 10), MAX_WAITING);
        assert_eq!(max_waiting(1 << 20), 4);
        assert_eq!(max_waiting(8 << 20), 1);
        assert!(
            MAX_SPARE_ALLOC as usize * max_waiting(MAX_SPARE_ALLOC) <= cosh_ring::DIRECT_STAGING
        );
    }
}
