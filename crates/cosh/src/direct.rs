//! Direct rings: weak transfers between domains that trust each other, with the block manager
//! off the path.
//!
//! A sender opens one ring per receiver that trusts it ([`Request::OpenDirect`]); from then on
//! every transfer to that receiver goes through the ring, in order. A weak move or share of
//! an aggregate this library knows to be one whole buffer held by nobody else with rights
//! ([`Local`]) is one record in the ring, after one record in the request ring that tells the
//! block manager, which applies it before any later request of any domain: the ledger stays
//! exact, and the receiver holds the aggregate the moment it reads the record. Anything else
//! goes through the block manager, numbered in the same sequence, and a marker follows in the
//! ring; the receiver puts one sender's transfers back in order by number, whichever way
//! each came.
//!
//! The receiver reads the ring directly. It sleeps on the ring's futex when it waits for that
//! sender alone; when it waits for anyone it parks in the block manager with the ring's
//! *parked* flag set, and a sender that finds the flag asks the block manager to wake it.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use cosh_core::{DomainId, ErrorKind, Mode, Rights, Strength, TransferFlags};
use cosh_proto::ops::{
    DirectRecord, MAX_MAPPERS, MAX_RECORD, Mappers, Request, Response, TransferReport, WireMode,
    WirePiece, decode_record, encode_record, encode_record_into,
};
use cosh_proto::{Message, encode, encode_into};
use cosh_ring::frames::{FrameReader, push_frame_quietly, records_for};
use cosh_ring::{AtomicU32, Consumer, Futex, Producer, RingError};
use cosh_sys::mapping::{Mapping, Prefault, ReadWrite, SharedWords};
use cosh_sys::memfd::Memfd;

use crate::{Agg, Domain, Error, EventBell, Incoming, Location, Result, unexpected};

/// What the library knows of an aggregate that is one whole buffer: enough to send it on a
/// direct ring (when held read/write) and to find its bytes without asking.
#[derive(Clone, Debug)]
pub(crate) struct Local {
    pub(crate) at: Location,
    pub(crate) rights: Rights,
    pub(crate) refs: u32,
    /// Every domain that may map the buffer (as id bits).
    pub(crate) mappers: Mappers,
    /// Whether this domain alone holds the buffer with rights, so that it may travel on a
    /// direct ring (with `mappers` known).
    pub(crate) sendable: bool,
    /// Moved inline while this domain alone held it: the rights are gone but the buffer is
    /// nobody else's, so its last free may keep it waiting as a spare (`Land` restores it).
    pub(crate) reclaimable: bool,
}

/// One direct ring, either side: its memory and the position this side keeps.
pub(crate) struct Ring {
    map: Mapping<ReadWrite>,
    capacity: u32,
    position: u32,
    /// Outbound: the receiver's tail as last read ([`Producer::seen`]).
    seen: u32,
    reader: FrameReader,
    /// The peer is gone: read what it left, then drop the ring.
    pub(crate) closing: bool,
    /// Sending: the next sequence number. Receiving: the next one to hand out.
    pub(crate) seq: u64,
    /// Receiving: transfers that came ahead of their turn, by number.
    early: BTreeMap<u64, Incoming>,
    /// Receiving: numbers the ring said went through the block manager, not yet fetched.
    queued: std::collections::BTreeSet<u64>,
    /// Sending: the staging area's wrapping count of bytes written (inline transfers), and
    /// the count from which bytes are in use (below it, skipped when starting again).
    pub(crate) staged: u32,
    pub(crate) floor: u32,
    /// Sending: when the last inline transfer was announced (a stream's transfers follow
    /// each other closely).
    pub(crate) last_inline: Option<Instant>,
    /// Receiving: an inline transfer read but not landed (no landing could be had): landed
    /// first at the next look.
    unlanded: Option<DirectRecord>,
}

/// Ids the block manager leased for direct transfers: the next and the end.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Lease {
    next: u64,
    end: u64,
}

impl Lease {
    fn new(first: u64, count: u64) -> Lease {
        Lease {
            next: first,
            end: first.saturating_add(count),
        }
    }
}

/// Hashes aggregate ids (small, unique integers chosen by the block manager) with one
/// multiplication instead of SipHash: this map is looked up on every transfer.
#[derive(Clone, Copy, Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The direct-ring state of a domain.
#[derive(Default)]
pub(crate) struct Direct {
    pub(crate) local: IdMap<Agg, Local>,
    pub(crate) outbound: IdMap<DomainId, Ring>,
    /// Receivers that refused a ring (they do not trust this domain).
    refused: std::collections::HashSet<DomainId>,
    pub(crate) inbound: BTreeMap<DomainId, Ring>,
    to_attach: Vec<DomainId>,
    /// Announced rings whose sender is already gone (attach, read, drop).
    closing: std::collections::HashSet<DomainId>,
    lease: Lease,
    /// Where the next look at the inbound rings starts (fairness).
    turn: usize,
    /// Records for the block manager are encoded here.
    scratch: Vec<u8>,
    /// Inline transfers: the policy (asked once) and the buffers waiting to land them.
    pub(crate) inline: crate::inline::Inline,
    /// The timeout of the receive under way: the longest it waits for the next bytes of a
    /// streamed inline transfer before it leaves the transfer for the next receive (`None`:
    /// as long as its sender is there).
    pub(crate) receive_timeout: Option<Duration>,
}

impl Direct {
    /// Remembers a whole-buffer aggregate with one reference. With `mappers` (every domain
    /// that maps its buffer) and read/write rights, this domain alone holds the buffer and it
    /// may travel on direct rings.
    pub(crate) fn know(
        &mut self,
        agg: Agg,
        piece: WirePiece,
        rights: Rights,
        mappers: Option<Mappers>,
    ) {
        let sendable = mappers.is_some() && rights == Rights::ReadWrite;
        self.local.insert(
            agg,
            Local {
                at: location(piece),
                rights,
                refs: 1,
                mappers: mappers.unwrap_or_default(),
                sendable,
                reclaimable: false,
            },
        );
    }

    /// What a transfer by `mode` leaves the sender (whether or not it went through): a move
    /// no rights, a share read-only; neither may go on a direct ring again.
    pub(crate) fn after_transfer(&mut self, agg: Agg, mode: Mode) {
        match mode {
            Mode::Copy => {}
            Mode::Share => self.unsend(agg, Some(Rights::Read)),
            Mode::Move => self.unsend(agg, Some(Rights::None)),
        }
    }

    /// The aggregate may no longer go on a direct ring (relatives share its buffer, or its
    /// rights dropped); its rights drop to `rights` if given.
    pub(crate) fn unsend(&mut self, agg: Agg, rights: Option<Rights>) {
        if let Some(l) = self.local.get_mut(&agg) {
            l.sendable = false;
            match rights {
                Some(r) => l.rights = l.rights.min(r),
                // Relatives share the buffer now.
                None => l.reclaimable = false,
            }
        }
    }
}

fn ring_words<'w>(words: &'w SharedWords<'_>, capacity: u32) -> Result<&'w [AtomicU32]> {
    words
        .atomic_u32s(0, cosh_ring::direct_words(capacity))
        .ok_or_else(|| Error::Protocol("a direct ring's memory is too small".into()))
}

pub(crate) fn corrupt(peer: DomainId, e: impl std::fmt::Display) -> Error {
    Error::Cosh {
        kind: ErrorKind::Protocol,
        message: format!("the direct ring with domain {peer} is corrupt ({e}); it was closed"),
    }
}

impl Ring {
    fn new(fd: OwnedFd, capacity: u32, producer: bool) -> Result<Ring> {
        if !capacity.is_power_of_two() || capacity > cosh_ring::MAX_CAPACITY {
            return Err(Error::Protocol(format!(
                "a direct ring of {capacity} records"
            )));
        }
        let memfd = Memfd::from_fd(fd)?;
        if memfd.len() < cosh_ring::direct_bytes(capacity) as u64 {
            return Err(Error::Protocol(
                "a direct ring's memory is too small".into(),
            ));
        }
        // The staging area's pages are faulted in as transfers first use them.
        let mut map = memfd.map_write(Prefault::OnFirstTouch)?;
        let (position, seen) = {
            let words = map.shared_words();
            let w = ring_words(&words, capacity)?;
            if producer {
                let p = Producer::attach(w).map_err(|e| Error::Protocol(e.to_string()))?;
                (p.position(), p.seen())
            } else {
                let c = Consumer::attach(w).map_err(|e| Error::Protocol(e.to_string()))?;
                (c.position(), 0)
            }
        };
        Ok(Ring {
            map,
            capacity,
            position,
            seen,
            reader: FrameReader::new(cosh_proto::MAX_FRAME),
            closing: false,
            seq: 0,
            early: BTreeMap::new(),
            queued: std::collections::BTreeSet::new(),
            staged: 0,
            floor: 0,
            last_inline: None,
            unlanded: None,
        })
    }

    /// Runs `f` as the producer, at the position kept here, with the parked flag; keeps the
    /// position `f` leaves.
    fn producing<T>(
        &mut self,
        f: impl FnOnce(&mut Producer<'_>, &AtomicU32) -> std::result::Result<T, RingError>,
    ) -> std::result::Result<T, String> {
        let capacity = self.capacity;
        let words = self.map.shared_words();
        let w = ring_words(&words, capacity).map_err(|e| e.to_string())?;
        let mut p = Producer::resume_seen(w, capacity, self.position, self.seen)
            .map_err(|e| e.to_string())?;
        let r =
            f(&mut p, &w[cosh_ring::direct_parked_word(capacity)]).map_err(|e| e.to_string())?;
        self.position = p.position();
        self.seen = p.seen();
        Ok(r)
    }

    /// Runs `f` as the consumer, likewise, with the frame reader.
    fn consuming<T>(
        &mut self,
        f: impl FnOnce(
            &mut Consumer<'_>,
            &mut FrameReader,
            &AtomicU32,
        ) -> std::result::Result<T, RingError>,
    ) -> std::result::Result<T, String> {
        let capacity = self.capacity;
        let words = self.map.shared_words();
        let w = ring_words(&words, capacity).map_err(|e| e.to_string())?;
        let mut c = Consumer::resume(w, capacity, self.position).map_err(|e| e.to_string())?;
        let r = f(
            &mut c,
            &mut self.reader,
            &w[cosh_ring::direct_parked_word(capacity)],
        )
        .map_err(|e| e.to_string())?;
        self.position = c.position();
        Ok(r)
    }

    /// Pushes a frame whole (`Ok(false)`: no room), waking a consumer asleep on the futex;
    /// `Ok(true)` with `parked` set when the consumer parked in the block manager instead.
    pub(crate) fn push(&mut self, frame: &[u8]) -> std::result::Result<(bool, bool), String> {
        self.producing(|p, parked| {
            Ok(if push_frame_quietly(p, frame)? {
                (true, p.notify_or_take_parked(&Futex, parked))
            } else {
                (false, false)
            })
        })
    }

    /// Wakes the consumer now if it sleeps on the ring's futex, ahead of a record that takes
    /// a while to prepare (see [`Producer::rouse`]); the push still notifies.
    pub(crate) fn rouse(&mut self) -> std::result::Result<bool, String> {
        self.producing(|p, _| Ok(p.rouse(&Futex)))
    }

    /// Whether `needed` records fit (the consumer's tail is read again only when the last
    /// reading of it leaves too little room).
    pub(crate) fn has_room(&mut self, needed: usize) -> std::result::Result<bool, String> {
        let needed = u32::try_from(needed).unwrap_or(u32::MAX);
        self.producing(|p, _| p.has_room(needed))
    }

    /// The next whole record, if any; a frame that is no record is an error like a broken ring.
    fn pop(&mut self) -> std::result::Result<Option<DirectRecord>, String> {
        self.consuming(|c, reader, _| Ok(reader.read(c)?.map(decode_record)))?
            .transpose()
            .map_err(|e| e.to_string())
    }

    /// Where the staging area's bytes `at..at + len` (modulo its size) lie in the ring's
    /// memory, if they lie within the area.
    fn staging_range(&self, at: u32, len: u64) -> Option<std::ops::Range<usize>> {
        let area = cosh_ring::direct_staging_offset(self.capacity);
        let start = area + at as usize % cosh_ring::DIRECT_STAGING;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        (end <= area + cosh_ring::DIRECT_STAGING).then_some(start..end)
    }

    /// The staging area's bytes `at..at + len`, to read.
    pub(crate) fn staging(&self, at: u32, len: u64) -> Option<&[u8]> {
        let range = self.staging_range(at, len)?;
        self.map.as_slice().get(range)
    }

    /// The same, to write.
    pub(crate) fn staging_mut(&mut self, at: u32, len: u64) -> Option<&mut [u8]> {
        let range = self.staging_range(at, len)?;
        self.map.as_mut_slice().get_mut(range)
    }

    /// Runs `f` on the flag word at `index` of the ring's words (the staging counter, which
    /// the consumer writes, or the filled counter, which the producer writes); `None` if the
    /// memory is too short.
    fn flag<T>(&mut self, index: usize, f: impl FnOnce(&AtomicU32) -> T) -> Option<T> {
        let capacity = self.capacity;
        let words = self.map.shared_words();
        let w = words.atomic_u32s(0, cosh_ring::direct_words(capacity))?;
        w.get(index).map(f)
    }

    /// The producer's view of the staging counter (0 if the memory is too short).
    pub(crate) fn consumed(&mut self) -> u32 {
        self.flag(cosh_ring::direct_staged_word(self.capacity), |w| {
            w.load(std::sync::atomic::Ordering::Acquire)
        })
        .unwrap_or(0)
    }

    /// The consumer says it is done with the staging area up to `count`.
    pub(crate) fn set_consumed(&mut self, count: u32) {
        self.flag(cosh_ring::direct_staged_word(self.capacity), |w| {
            w.store(count, std::sync::atomic::Ordering::Release);
        });
    }

    /// The producer says the staging area holds its bytes up to `count` (a streamed inline
    /// transfer's, as it copies them).
    pub(crate) fn set_filled(&mut self, count: u32) {
        self.flag(cosh_ring::direct_filled_word(self.capacity), |w| {
            w.store(count, std::sync::atomic::Ordering::Release);
        });
    }

    /// The consumer's view of the filled counter (0 if the memory is too short).
    pub(crate) fn filled(&mut self) -> u32 {
        self.flag(cosh_ring::direct_filled_word(self.capacity), |w| {
            w.load(std::sync::atomic::Ordering::Acquire)
        })
        .unwrap_or(0)
    }

    /// Waits for records: `spins` looks, then the futex, at most `timeout`.
    fn wait(&mut self, spins: u32, timeout: Duration) -> std::result::Result<bool, String> {
        self.consuming(|c, _, _| c.wait(&Futex, spins, Some(timeout)))
    }

    /// Sets or clears the parked flag; setting it reports whether records already wait.
    fn park(&mut self, parked: bool) -> std::result::Result<bool, String> {
        self.consuming(|c, _, flag| {
            if parked {
                c.park(flag)
            } else {
                c.unpark(flag);
                Ok(false)
            }
        })
    }
}

impl Domain {
    /// Handles a direct-ring notice from the block manager.
    pub(crate) fn direct_notice(&mut self, r: &Response) {
        match r {
            Response::DirectInbound { from } => {
                self.direct.to_attach.push(DomainId::from_bits(*from));
            }
            Response::DirectClosed { peer } => {
                let peer = DomainId::from_bits(*peer);
                self.direct.outbound.remove(&peer);
                // What the peer sent before it left is still to be read.
                match self.direct.inbound.get_mut(&peer) {
                    Some(ring) => ring.closing = true,
                    None => {
                        self.direct.closing.insert(peer);
                    }
                }
            }
            _ => {}
        }
    }

    /// Maps the direct rings announced to this domain.
    fn attach_pending(&mut self) -> Result<()> {
        while let Some(from) = self.direct.to_attach.pop() {
            let (r, mut fds) = self.call_with_fds(Request::AttachDirect {
                from: from.to_bits(),
            })?;
            let (Response::DirectAttached { capacity }, Some(fd)) = (&r, fds.pop()) else {
                return Err(unexpected(&r));
            };
            let mut ring = Ring::new(fd, *capacity, false)?;
            ring.closing = self.direct.closing.remove(&from);
            self.direct.inbound.insert(from, ring);
        }
        Ok(())
    }

    /// Records an allocation's answer.
    pub(crate) fn allocated(&mut self, r: Response) -> Result<Agg> {
        match r {
            Response::Agg { agg } => Ok(Agg(agg)),
            Response::Allocated { agg, piece } => {
                let mut me = Mappers::new();
                me.push(self.id.to_bits());
                self.direct
                    .know(Agg(agg), piece, Rights::ReadWrite, Some(me));
                Ok(Agg(agg))
            }
            Response::AllocatedPiece { agg, piece } => {
                // Known, never sendable by reference.
                self.direct.know(Agg(agg), piece, Rights::ReadWrite, None);
                Ok(Agg(agg))
            }
            r => Err(unexpected(&r)),
        }
    }

    /// The ring to `dest`, opened on first use if `dest` trusts this domain.
    pub(crate) fn outbound(&mut self, dest: DomainId) -> Result<bool> {
        if self.direct.outbound.contains_key(&dest) {
            return Ok(true);
        }
        // Rings join domains of one pool; to another pool every transfer is a copy by the
        // block managers.
        if self.rings.is_none() || dest.pool != self.id.pool || self.direct.refused.contains(&dest)
        {
            return Ok(false);
        }
        let (r, mut fds) = match self.call_with_fds(Request::OpenDirect { to: dest.to_bits() }) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::InsufficientRights | ErrorKind::Unavailable
                ) =>
            {
                self.direct.refused.insert(dest);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let (
            Response::DirectOpened {
                capacity,
                first,
                count,
            },
            Some(fd),
        ) = (&r, fds.pop())
        else {
            return Err(unexpected(&r));
        };
        let ring = Ring::new(fd, *capacity, true)?;
        self.direct.lease = Lease::new(*first, *count);
        self.direct.outbound.insert(dest, ring);
        Ok(true)
    }

    /// `transfer` with direct rings: `None` when no ring to `dest` exists (or can be opened).
    pub(crate) fn transfer_direct(
        &mut self,
        agg: Agg,
        dest: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<Option<TransferReport>> {
        if let Some(report) = self.try_inline(agg, dest, mode, flags)? {
            return Ok(Some(report));
        }
        let weak = flags.strength == Strength::Weak && mode != Mode::Copy;
        let me = self.id;
        let eligible = weak
            && self.direct.local.get(&agg).is_some_and(|l| {
                l.sendable
                    && !self.direct.inline.trimmed(agg, l.at.len)
                    && l.rights == Rights::ReadWrite
                    && l.mappers
                        .as_slice()
                        .iter()
                        .all(|d| *d == me.to_bits() || *d == dest.to_bits())
                    && l.mappers.len() < MAX_MAPPERS
            });
        let open = self.direct.outbound.contains_key(&dest) || (eligible && self.outbound(dest)?);
        if !open {
            return Ok(None);
        }
        if eligible {
            if self.direct.lease.next >= self.direct.lease.end {
                match self.call(Request::Lease)? {
                    Response::Leased { first, count } => {
                        self.direct.lease = Lease::new(first, count);
                    }
                    r => return Err(unexpected(&r)),
                }
            }
            if let Some(report) = self.send_direct(agg, dest, mode)? {
                return Ok(Some(report));
            }
        }
        // Through the block manager, numbered in the ring's sequence; a marker follows in
        // the ring, so that a receiver waiting there wakes and keeps the order.
        self.direct.after_transfer(agg, mode);
        let seq = self.direct.outbound.get(&dest).map_or(0, |r| r.seq);
        let (_, report) = self.send_transfer(agg, dest, mode, flags, false, Some(seq))?;
        if let Some(ring) = self.direct.outbound.get_mut(&dest) {
            ring.seq += 1;
        }
        let frame = encode_record(&DirectRecord::Queued { seq })
            .map_err(|e| Error::Protocol(e.to_string()))?;
        self.push_waiting(dest, &frame)?;
        Ok(Some(report))
    }

    /// One weak transfer on the ring: `None` (nothing done) when the ring is full.
    fn send_direct(
        &mut self,
        agg: Agg,
        dest: DomainId,
        mode: Mode,
    ) -> Result<Option<TransferReport>> {
        let Some(local) = self.direct.local.get(&agg) else {
            return Ok(None);
        };
        let (at, len) = (local.at, local.at.len);
        let new = self.direct.lease.next;
        let seq = self.direct.outbound.get(&dest).map_or(0, |r| r.seq);
        let mut mappers = local.mappers;
        // Room for one more (checked by the caller).
        if !mappers.contains(dest.to_bits()) && !mappers.push(dest.to_bits()) {
            return Ok(None);
        }
        let record = DirectRecord::Transfer {
            seq,
            agg: new,
            mode: match mode {
                Mode::Move => WireMode::Move,
                _ => WireMode::Share,
            },
            piece: WirePiece {
                buffer: at.buffer,
                slot: at.slot,
                offset: at.offset,
                len: at.len,
            },
            mappers,
        };
        let mut buf = [0u8; MAX_RECORD];
        let n =
            encode_record_into(&record, &mut buf).map_err(|e| Error::Protocol(e.to_string()))?;
        let frame = &buf[..n];
        let ring = self
            .direct
            .outbound
            .get_mut(&dest)
            .ok_or_else(|| Error::Protocol("no ring".into()))?;
        if !ring
            .has_room(records_for(frame.len()))
            .map_err(|e| corrupt(dest, e))?
        {
            return Ok(None);
        }
        // The block manager first (quietly: it applies the record before the next request
        // anyone makes), then the receiver.
        self.log_request(Request::Direct {
            agg: agg.0,
            to: dest.to_bits(),
            mode: mode.into(),
            new,
        })?;
        self.direct.lease.next += 1;
        let ring = self
            .direct
            .outbound
            .get_mut(&dest)
            .ok_or_else(|| Error::Protocol("no ring".into()))?;
        let (pushed, parked) = ring.push(frame).map_err(|e| corrupt(dest, e))?;
        if !pushed {
            return Err(corrupt(dest, "the ring shrank under a record"));
        }
        ring.seq += 1;
        if parked {
            self.wake_parked(dest)?;
        }
        if mode == Mode::Share
            && let Some(l) = self.direct.local.get_mut(&agg)
        {
            l.mappers = mappers;
        }
        // Still held (read-only, or with no rights after a move): its bytes are found
        // without asking, and its free needs no answer.
        self.direct.after_transfer(agg, mode);
        Ok(Some(TransferReport {
            referenced_bytes: len,
            weak: true,
            ..TransferReport::default()
        }))
    }

    /// `decref` as a record the block manager applies before anyone's next request.
    pub(crate) fn release_quietly(&mut self, agg: Agg) -> Result<()> {
        self.log_request(Request::Release { agg: agg.0 })
    }

    /// A record for the block manager (a request without answer), encoded in the reused
    /// scratch buffer and put in the request ring quietly.
    pub(crate) fn log_request(&mut self, request: Request) -> Result<()> {
        let mut log = std::mem::take(&mut self.direct.scratch);
        let logged = encode_into(&Message::Request(request), &mut log)
            .map_err(|e| Error::Protocol(e.to_string()))
            .and_then(|()| self.log_record(&log));
        self.direct.scratch = log;
        logged
    }

    /// Puts a record for the block manager in the request ring without waking it, unless the
    /// ring fills up.
    fn log_record(&mut self, bytes: &[u8]) -> Result<()> {
        let rings = self
            .rings
            .as_mut()
            .ok_or_else(|| Error::Protocol("no rings".into()))?;
        let capacity = rings.capacity;
        let pushed = rings.request(|p, bell| {
            if !push_frame_quietly(p, bytes)? {
                return Ok(false);
            }
            // Half full: let the block manager catch up (a few doorbells, not one per
            // record, while it has not run yet). The tail is read again only past half.
            if p.pending_at_most() >= capacity / 2 {
                let pending = p.refresh()?;
                if pending >= capacity / 2 && pending % (capacity / 16).max(1) == 0 {
                    p.notify(&EventBell(bell));
                }
            }
            Ok(true)
        })?;
        if !pushed {
            // Full: wait for room, waking the block manager.
            self.send_ring(bytes)?;
        }
        Ok(())
    }

    /// A receiver parked in the block manager: ask it to end that wait.
    pub(crate) fn wake_parked(&mut self, dest: DomainId) -> Result<()> {
        let bytes = encode(&Message::Request(Request::Wake { to: dest.to_bits() }))
            .map_err(|e| Error::Protocol(e.to_string()))?;
        self.send_ring(&bytes)
    }

    /// Pushes a frame, waiting (up to a few seconds) for the receiver to make room.
    fn push_waiting(&mut self, dest: DomainId, frame: &[u8]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let Some(ring) = self.direct.outbound.get_mut(&dest) else {
                // The receiver left meanwhile; the block manager keeps the transfer.
                return Ok(());
            };
            let (pushed, parked) = ring.push(frame).map_err(|e| corrupt(dest, e))?;
            if pushed {
                if parked {
                    self.wake_parked(dest)?;
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Cosh {
                    kind: ErrorKind::Unavailable,
                    message: format!(
                        "domain {dest} is not keeping up: its direct ring stayed full for 5 s"
                    ),
                });
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Takes the next transfer, in its sender's order, from the senders with a direct ring
    /// (`source`, or any).
    fn poll_inbound(&mut self, source: Option<DomainId>) -> Result<Option<Incoming>> {
        if let Some(s) = source {
            // The common case: one sender, nothing to choose between.
            return if self.direct.inbound.contains_key(&s) {
                self.next_from(s)
            } else {
                Ok(None)
            };
        }
        let peers: Vec<DomainId> = self.direct.inbound.keys().copied().collect();
        if peers.is_empty() {
            return Ok(None);
        }
        self.direct.turn = self.direct.turn.wrapping_add(1);
        for i in 0..peers.len() {
            let peer = peers[(self.direct.turn + i) % peers.len()];
            if let Some(got) = self.next_from(peer)? {
                return Ok(Some(got));
            }
        }
        Ok(None)
    }

    /// The next transfer from `peer` in its order, if it is here: from the early ones, the
    /// block manager (when the ring said so) or the ring.
    fn next_from(&mut self, peer: DomainId) -> Result<Option<Incoming>> {
        loop {
            let Some(ring) = self.direct.inbound.get_mut(&peer) else {
                return Ok(None);
            };
            let next = ring.seq;
            if let Some(got) = ring.early.remove(&next) {
                ring.seq += 1;
                return Ok(Some(got));
            }
            if ring.queued.remove(&next) {
                // Committed before the marker was written: a receive that does not wait
                // finds it (unless a receive from anyone took it already, early).
                match self.receive_queued(Some(peer), Some(Duration::ZERO))? {
                    Queued::Got(got, seq) => {
                        if let Some(got) = self.file(got, seq) {
                            return Ok(Some(got));
                        }
                    }
                    Queued::Woken | Queued::Nothing(_) => {
                        // Not there: the sender lied about it. Skip the number.
                        if let Some(ring) = self.direct.inbound.get_mut(&peer) {
                            ring.seq = ring.seq.max(next + 1);
                        }
                    }
                }
                continue;
            }
            let popped = match ring.unlanded.take() {
                Some(r) => Ok(Some(r)),
                None => ring.pop(),
            };
            let record = match popped {
                Ok(Some(r)) => r,
                Ok(None) => {
                    if ring.closing && ring.early.is_empty() && ring.queued.is_empty() {
                        self.direct.inbound.remove(&peer);
                    }
                    return Ok(None);
                }
                Err(e) => {
                    self.direct.inbound.remove(&peer);
                    return Err(corrupt(peer, e));
                }
            };
            match record {
                DirectRecord::Transfer {
                    seq,
                    agg,
                    mode,
                    piece,
                    mappers,
                } => {
                    let mode: Mode = mode.into();
                    let Some(ring) = self.direct.inbound.get_mut(&peer) else {
                        return Ok(None);
                    };
                    if seq < ring.seq {
                        // A number already handed out: the sender broke the rules.
                        continue;
                    }
                    let got = Incoming {
                        agg: Agg(agg),
                        source: peer,
                        mode,
                        strength: Strength::Weak,
                        ticket: None,
                    };
                    // Its turn (the usual case): out at once.
                    let now = seq == ring.seq;
                    if now {
                        ring.seq += 1;
                    } else {
                        ring.early.insert(seq, got);
                    }
                    let rights = match mode {
                        Mode::Move => Rights::ReadWrite,
                        _ => Rights::Read,
                    };
                    // Known from the peer's word only, not the block manager's.
                    self.direct.know(Agg(agg), piece, rights, Some(mappers));
                    if now {
                        return Ok(Some(got));
                    }
                }
                DirectRecord::Queued { seq } => {
                    if let Some(ring) = self.direct.inbound.get_mut(&peer)
                        && seq >= ring.seq
                        && !ring.early.contains_key(&seq)
                    {
                        ring.queued.insert(seq);
                    }
                }
                DirectRecord::Inline {
                    seq,
                    mode,
                    weak,
                    len,
                    at,
                    streamed,
                } => {
                    let Some(ring) = self.direct.inbound.get_mut(&peer) else {
                        return Ok(None);
                    };
                    if seq < ring.seq || ring.early.contains_key(&seq) {
                        // A number already handed out: the sender broke the rules.
                        continue;
                    }
                    let got = match self.land_inline(peer, mode.into(), weak, at, len, streamed) {
                        Ok(got) => got,
                        Err(e) if e.kind() == ErrorKind::Protocol => {
                            self.direct.inbound.remove(&peer);
                            return Err(e);
                        }
                        Err(e) => {
                            // No landing now (a quota, the pool full): the transfer waits
                            // in the ring's staging area for the next look.
                            if let Some(ring) = self.direct.inbound.get_mut(&peer) {
                                ring.unlanded = Some(record);
                            }
                            return Err(e);
                        }
                    };
                    let Some(ring) = self.direct.inbound.get_mut(&peer) else {
                        return Ok(None);
                    };
                    if seq == ring.seq {
                        ring.seq += 1;
                        return Ok(Some(got));
                    }
                    ring.early.insert(seq, got);
                }
            }
        }
    }

    /// Files a transfer that came through the block manager: numbered ones from a sender with
    /// a ring wait for their turn.
    fn file(&mut self, got: Incoming, seq: Option<u64>) -> Option<Incoming> {
        let Some(seq) = seq else {
            return Some(got);
        };
        let Some(ring) = self.direct.inbound.get_mut(&got.source) else {
            return Some(got);
        };
        ring.queued.remove(&seq);
        if seq >= ring.seq {
            ring.early.insert(seq, got);
            None
        } else {
            Some(got)
        }
    }

    /// `receive` with direct rings in play.
    pub(crate) fn receive_any(
        &mut self,
        source: Option<DomainId>,
        timeout: Option<Duration>,
    ) -> Result<Incoming> {
        self.direct.receive_timeout = timeout;
        // What already waits on a ring goes out without looking at the clock.
        self.attach_pending()?;
        if let Some(got) = self.poll_inbound(source)? {
            return Ok(got);
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let left = |deadline: Option<Instant>| {
            deadline.map(|d| d.saturating_duration_since(Instant::now()))
        };
        loop {
            self.attach_pending()?;
            if let Some(got) = self.poll_inbound(source)? {
                return Ok(got);
            }
            // About to wait: the time to replace the landings receives used.
            self.top_up_landings()?;
            if let Some(got) = self.poll_inbound(source)? {
                return Ok(got);
            }
            if let Some(s) = source.filter(|s| self.direct.inbound.contains_key(s)) {
                // Everything from `s` comes on its ring: wait there, looking at the block
                // manager now and then (it says when `s` is gone).
                let step = left(deadline).map_or(Duration::from_millis(100), |l| {
                    l.min(Duration::from_millis(100))
                });
                let spins = self.spins;
                let ring = self
                    .direct
                    .inbound
                    .get_mut(&s)
                    .ok_or_else(|| Error::Protocol("no ring".into()))?;
                let arrived = ring.wait(spins, step).map_err(|e| corrupt(s, e))?;
                if !arrived {
                    let expired = left(deadline).is_some_and(|l| l.is_zero());
                    match self.receive_queued(Some(s), Some(Duration::ZERO))? {
                        Queued::Got(got, seq) => {
                            if let Some(got) = self.file(got, seq) {
                                return Ok(got);
                            }
                        }
                        Queued::Nothing(e) if expired => return Err(e),
                        Queued::Nothing(_) | Queued::Woken => {}
                    }
                }
                continue;
            }
            // Wait in the block manager, with every ring of interest marked parked.
            let mut ready = false;
            let peers: Vec<DomainId> = self.direct.inbound.keys().copied().collect();
            for p in &peers {
                if let Some(ring) = self.direct.inbound.get_mut(p) {
                    ready |= ring.park(true).map_err(|e| corrupt(*p, e))?;
                }
            }
            let got = if ready {
                Ok(Queued::Woken)
            } else {
                self.receive_queued(source, left(deadline))
            };
            for p in &peers {
                if let Some(ring) = self.direct.inbound.get_mut(p) {
                    let _ = ring.park(false);
                }
            }
            match got? {
                Queued::Got(got, seq) => {
                    // Its ring may be new: attach it before filing.
                    self.attach_pending()?;
                    if let Some(got) = self.file(got, seq) {
                        return Ok(got);
                    }
                }
                Queued::Woken => {}
                Queued::Nothing(e) => {
                    // One last look at the rings, then the block manager's answer.
                    self.attach_pending()?;
                    return match self.poll_inbound(source)? {
                        Some(got) => Ok(got),
                        None => Err(e),
                    };
                }
            }
        }
    }

    /// A receive in the block manager. Unless spins were set explicitly, its wait spins
    /// adaptively: a receive whose transfer took longer to come than the spin lasts wasted
    /// the spin (and a core some other process of the pipeline needed), so the next one spins
    /// a quarter as long; one answered sooner earns its spin back.
    fn receive_queued(
        &mut self,
        source: Option<DomainId>,
        timeout: Option<Duration>,
    ) -> Result<Queued> {
        let adaptive = self.adaptive_receive && self.spins != crate::SPIN_FOREVER;
        let session = adaptive.then(|| {
            let budget = self.recv_spins.min(self.spins);
            std::mem::replace(&mut self.spins, budget)
        });
        let started = Instant::now();
        let answer = self.call(Request::Receive {
            source: source.map(DomainId::to_bits),
            // Rounded up: the deadline is never cut short.
            timeout_ms: timeout
                .map(|t| u64::try_from(t.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)),
        });
        if let Some(spins) = session {
            self.spins = spins;
            self.recv_spins = if started.elapsed() > crate::DEFAULT_SPIN_TIME {
                self.recv_spins / 4
            } else {
                self.recv_spins.saturating_mul(2).clamp(64, spins.max(64))
            };
        }
        match answer {
            Ok(Response::Woken) => Ok(Queued::Woken),
            Ok(r) => self.numbered(r).map(|(got, seq)| Queued::Got(got, seq)),
            Err(e) if e.kind() == ErrorKind::NothingPending => Ok(Queued::Nothing(e)),
            Err(e) => Err(e),
        }
    }

    /// The pieces of a known whole-buffer aggregate, without asking.
    pub(crate) fn local_piece(
        &self,
        agg: Agg,
        access: cosh_core::Access,
        offset: u64,
    ) -> Option<Vec<Location>> {
        let l = self.direct.local.get(&agg)?;
        if l.rights < access.needs() || offset > l.at.len {
            return None;
        }
        if offset == l.at.len {
            return Some(Vec::new());
        }
        Some(vec![Location {
            offset: l.at.offset + offset,
            len: l.at.len - offset,
            ..l.at
        }])
    }
}

/// What a receive in the block manager gave.
enum Queued {
    Got(Incoming, Option<u64>),
    /// A direct ring interrupted the wait.
    Woken,
    /// Nothing in time: the error to report if the rings have nothing either.
    Nothing(Error),
}

pub(crate) fn location(p: WirePiece) -> Location {
    Location {
        buffer: p.buffer,
        slot: p.slot,
        offset: p.offset,
        len: p.len,
    }
}
