//! A file's bytes: fixed 1 MiB chunks, each a buffer of the service's own domain.
//!
//! A chunk that has never been handed out is written in place, at any offset, with no request
//! to the block manager (its mapping is remembered). Handing bytes out assembles the chunks
//! with `select` and `concat` — the whole file for a client's cache (kept until the file next
//! changes), the range asked for a read — and marks those chunks *shared*: a later write to a
//! shared chunk first copies it to a fresh buffer (copy on write, at most 1 MiB), so whatever
//! was handed out never changes. Reads that copy read the chunks' mappings
//! directly. A chunk starts at 4 KiB and doubles as it fills; a missing chunk is a hole of
//! zeros. Bytes of a chunk past the end of the file mean nothing and are zeroed when the file
//! grows over them.
//!
//! A large aggregate written at a chunk boundary is adopted chunk by chunk where its pieces
//! line up (no copy); what does not line up is copied into the chunks.
//!
//! Chunk buffers come from [`Mem`], the service's domain with its own small allocator, so
//! that files that come and go cost few requests to the block manager (each of which wakes
//! another process): a chunk smaller than 1 MiB is a slot of an *arena*, a 1 MiB buffer
//! carved into slots of one size; a slot a file no longer needs is free again unless it was
//! handed out (then it is never written again, and the arena's buffer goes back to the block
//! manager once no slot is in use). Whole 1 MiB buffers never handed out are kept spare for
//! the next chunk or arena.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

use cosh::{Agg, Domain, Location};

use crate::core::{FsError, Result};

/// Bytes per chunk.
pub const CHUNK: u64 = 1 << 20;

/// The largest file (64 GiB: a sparse file's holes cost nothing, but its chunk table does).
pub const MAX_FILE: u64 = 1 << 36;

fn check_size(end: u64) -> Result<()> {
    if end > MAX_FILE {
        Err(FsError::TooBig(format!(
            "{end} bytes (files hold at most {MAX_FILE})"
        )))
    } else {
        Ok(())
    }
}

/// The smallest chunk buffer.
const MIN_CAP: u64 = 4096;

struct Chunk {
    /// The buffer it is in: its own, or its arena's.
    agg: Agg,
    /// Where it starts in `agg`.
    base: u64,
    /// Where it is (one piece).
    loc: Location,
    cap: u64,
    /// Handed out (inside an assembled aggregate): never to be written again.
    shared: bool,
    /// The arena it was carved from, if any.
    arena: Option<u64>,
}

/// A whole-chunk buffer carved into slots of one size, for chunks smaller than [`CHUNK`]: one
/// request to the block manager serves many small files.
struct Arena {
    agg: Agg,
    loc: Location,
    slot: u64,
    /// Offsets of slots never handed out and free now.
    free: Vec<u64>,
    /// Slots in use.
    live: u32,
    /// Whether a slot was freed after being handed out: such a slot is never used again (a
    /// snapshot may still show it), so the buffer goes back to the block manager, not to the
    /// spare ones, once no slot is in use.
    lost: bool,
}

/// The service's domain, with its spare buffers and arenas (see the module documentation).
pub struct Mem {
    domain: Domain,
    /// Spare whole-chunk buffers, never handed out.
    spare: Vec<(Agg, Location)>,
    arenas: HashMap<u64, Arena>,
    next_arena: u64,
    /// Arenas with a free slot, by slot size (an id may be stale: checked when used).
    open: HashMap<u64, Vec<u64>>,
}

impl Deref for Mem {
    type Target = Domain;
    fn deref(&self) -> &Domain {
        &self.domain
    }
}

impl DerefMut for Mem {
    fn deref_mut(&mut self) -> &mut Domain {
        &mut self.domain
    }
}

impl Mem {
    /// The most whole-chunk buffers kept spare (32 MiB).
    pub const MAX_SPARE: usize = 32;

    /// `domain`, with no spare buffers yet.
    pub fn new(domain: Domain) -> Mem {
        Mem {
            domain,
            spare: Vec::new(),
            arenas: HashMap::new(),
            next_arena: 0,
            open: HashMap::new(),
        }
    }

    /// Bytes kept spare now.
    pub fn spare_bytes(&self) -> u64 {
        self.spare.len() as u64 * CHUNK
    }

    /// Buffers kept spare now.
    pub fn spare_buffers(&self) -> usize {
        self.spare.len()
    }

    /// Arenas small chunks are carved from now.
    pub fn arenas(&self) -> usize {
        self.arenas.len()
    }

    /// Gives every spare buffer back to the block manager (and the buffers the domain's
    /// library keeps waiting for small copies).
    pub fn release_spare(&mut self) -> Result<()> {
        for (agg, _) in std::mem::take(&mut self.spare) {
            self.domain.decref(agg)?;
        }
        self.domain.release_waiting()?;
        Ok(())
    }

    /// A writable whole-chunk buffer in one piece (its bytes mean nothing yet).
    fn whole_buffer(&mut self) -> Result<(Agg, Location)> {
        if let Some(found) = self.spare.pop() {
            return Ok(found);
        }
        let d = &mut self.domain;
        let agg = d.alloc_unzeroed(CHUNK)?;
        match d.write_pieces(agg, 0) {
            Ok(p) if p.len() == 1 && p[0].0.len == CHUNK => Ok((agg, p[0].0)),
            other => {
                d.decref(agg)?;
                other?;
                Err(FsError::Io(
                    "the block manager gave a buffer of several pieces".into(),
                ))
            }
        }
    }

    /// A fresh chunk of `cap` bytes (a power of two up to [`CHUNK`]; its bytes mean nothing
    /// yet): a whole buffer, or a slot of an arena.
    fn take(&mut self, cap: u64) -> Result<Chunk> {
        if cap >= CHUNK {
            let (agg, loc) = self.whole_buffer()?;
            return Ok(Chunk {
                agg,
                base: 0,
                loc,
                cap,
                shared: false,
                arena: None,
            });
        }
        while let Some(&id) = self.open.get(&cap).and_then(|ids| ids.last()) {
            let found = self.arenas.get_mut(&id).and_then(|a| {
                let base = a.free.pop()?;
                a.live += 1;
                Some((a.agg, base, a.loc, a.free.is_empty()))
            });
            match found {
                Some((agg, base, loc, full)) => {
                    if full && let Some(ids) = self.open.get_mut(&cap) {
                        ids.pop();
                    }
                    return Ok(Chunk {
                        agg,
                        base,
                        loc: Location {
                            offset: loc.offset + base,
                            len: cap,
                            ..loc
                        },
                        cap,
                        shared: false,
                        arena: Some(id),
                    });
                }
                None => {
                    if let Some(ids) = self.open.get_mut(&cap) {
                        ids.pop();
                    }
                }
            }
        }
        let (agg, loc) = self.whole_buffer()?;
        let id = self.next_arena;
        self.next_arena += 1;
        self.arenas.insert(
            id,
            Arena {
                agg,
                loc,
                slot: cap,
                // The first slot is taken now, the others are handed out from the front.
                free: (1..CHUNK / cap).rev().map(|k| k * cap).collect(),
                live: 0,
                lost: false,
            },
        );
        self.open.entry(cap).or_default().push(id);
        self.take(cap)
    }

    /// Takes back a chunk a file no longer needs. A slot of an arena is free again unless it
    /// was handed out; an arena with no slot in use goes (its buffer spare if none was
    /// handed out). A whole buffer never handed out is kept spare while there is room; the
    /// rest goes back to the block manager.
    fn give(&mut self, c: Chunk) -> Result<()> {
        let Some(id) = c.arena else {
            if !c.shared
                && c.cap == CHUNK
                && c.loc.len == CHUNK
                && self.spare.len() < Self::MAX_SPARE
            {
                self.spare.push((c.agg, c.loc));
                return Ok(());
            }
            return Ok(self.domain.decref(c.agg)?);
        };
        let Some(a) = self.arenas.get_mut(&id) else {
            return Err(FsError::Io(format!("a chunk of arena {id}, which is gone")));
        };
        a.live = a.live.saturating_sub(1);
        if c.shared {
            a.lost = true;
        } else {
            a.free.push(c.base);
            if a.free.len() == 1 {
                self.open.entry(a.slot).or_default().push(id);
            }
        }
        if a.live > 0 {
            return Ok(());
        }
        let Some(a) = self.arenas.remove(&id) else {
            return Ok(());
        };
        if !a.lost && self.spare.len() < Self::MAX_SPARE {
            self.spare.push((a.agg, a.loc));
            return Ok(());
        }
        Ok(self.domain.decref(a.agg)?)
    }
}

/// One file's bytes (see the module documentation).
#[derive(Default)]
pub struct FileData {
    chunks: Vec<Option<Chunk>>,
    len: u64,
    /// The whole file as one aggregate, assembled on demand, until the next change.
    whole: Option<Agg>,
}

fn usize_of(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| FsError::Invalid(format!("{n} bytes is past the address space")))
}

fn range(a: u64, b: u64) -> Result<std::ops::Range<usize>> {
    Ok(usize_of(a)?..usize_of(b)?)
}

fn inside(bytes: &[u8], r: std::ops::Range<usize>) -> Result<&[u8]> {
    bytes
        .get(r)
        .ok_or_else(|| FsError::Io("internal error: past the end of a chunk".into()))
}

fn inside_mut(bytes: &mut [u8], r: std::ops::Range<usize>) -> Result<&mut [u8]> {
    bytes
        .get_mut(r)
        .ok_or_else(|| FsError::Io("internal error: past the end of a chunk".into()))
}

impl FileData {
    /// The file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Gives every buffer back.
    pub fn free(self, d: &mut Mem) -> Result<()> {
        if let Some(w) = self.whole {
            d.decref(w)?;
        }
        for c in self.chunks.into_iter().flatten() {
            d.give(c)?;
        }
        Ok(())
    }

    /// Bytes of chunk `i` that are file content.
    fn valid(&self, i: usize) -> u64 {
        let start = i as u64 * CHUNK;
        self.len.saturating_sub(start).min(CHUNK)
    }

    fn changed(&mut self, d: &mut Mem) -> Result<()> {
        if let Some(w) = self.whole.take() {
            d.decref(w)?;
        }
        Ok(())
    }

    /// Makes chunk `i` writable in place with room for `need` bytes, keeping its content.
    fn writable(&mut self, d: &mut Mem, i: usize, need: u64) -> Result<Location> {
        if self.chunks.len() <= i {
            self.chunks.resize_with(i + 1, || None);
        }
        if let Some(c) = &self.chunks[i]
            && !c.shared
            && c.cap >= need
        {
            return Ok(c.loc);
        }
        let valid = self.valid(i);
        let old_cap = self.chunks[i].as_ref().map_or(0, |c| c.cap);
        // Doubling when it grows; the same size when it is only copied on write.
        let grown = if need > old_cap {
            old_cap.saturating_mul(2)
        } else {
            old_cap
        };
        let cap = need
            .max(grown)
            .max(MIN_CAP)
            .next_power_of_two()
            .min(CHUNK)
            .max(need);
        let fresh = d.take(cap)?;
        let loc = fresh.loc;
        // What the file holds there now: the old chunk's bytes, or zeros for a hole.
        let keep = valid.min(cap).min(if old_cap == 0 { cap } else { old_cap });
        let old = match &self.chunks[i] {
            Some(c) => inside(d.location_bytes(&c.loc)?, range(0, keep)?)?.to_vec(),
            None => vec![0; usize_of(keep)?],
        };
        inside_mut(d.location_bytes_mut(&loc)?, 0..old.len())?.copy_from_slice(&old);
        if let Some(c) = self.chunks[i].replace(fresh) {
            d.give(c)?;
        }
        Ok(loc)
    }

    /// Zeros from the end of the file to `to` (holes stay holes).
    fn extend_zero(&mut self, d: &mut Mem, to: u64) -> Result<()> {
        check_size(to)?;
        let mut at = self.len;
        // Only chunks that exist hold bytes to zero; past them everything is a hole.
        let last = (self.chunks.len() as u64).saturating_mul(CHUNK);
        while at < to.min(last) {
            let i = usize_of(at / CHUNK)?;
            let start = i as u64 * CHUNK;
            let end = to.min(start + CHUNK);
            if self.chunks.get(i).is_some_and(Option::is_some) {
                let loc = self.writable(d, i, end - start)?;
                inside_mut(d.location_bytes_mut(&loc)?, range(at - start, end - start)?)?.fill(0);
            }
            at = end;
        }
        self.len = self.len.max(to);
        Ok(())
    }

    /// Writes `data` at `offset`.
    pub fn write_bytes(&mut self, d: &mut Mem, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| FsError::Invalid("a write past 2^64 bytes".into()))?;
        check_size(end)?;
        self.changed(d)?;
        if offset > self.len {
            self.extend_zero(d, offset)?;
        }
        let mut at = offset;
        while at < end {
            let i = usize_of(at / CHUNK)?;
            let start = i as u64 * CHUNK;
            let stop = end.min(start + CHUNK);
            let loc = self.writable(d, i, stop - start)?;
            let src = &data[usize_of(at - offset)?..usize_of(stop - offset)?];
            inside_mut(
                d.location_bytes_mut(&loc)?,
                range(at - start, stop - start)?,
            )?
            .copy_from_slice(src);
            // The file grows as each chunk is written, so a chunk made next counts it.
            self.len = self.len.max(stop);
            at = stop;
        }
        Ok(())
    }

    /// Writes the aggregate `agg` (consumed) at `offset`; returns its length. Whole chunks
    /// that line up with one piece of it are adopted as they are; the rest is copied.
    pub fn write_agg(&mut self, d: &mut Mem, offset: u64, agg: Agg) -> Result<u64> {
        let n = match d.len(agg) {
            Ok(n) => n,
            Err(e) => {
                d.decref(agg)?;
                return Err(e.into());
            }
        };
        let result = self.write_agg_inner(d, offset, agg, n);
        d.decref(agg)?;
        result.map(|()| n)
    }

    fn write_agg_inner(&mut self, d: &mut Mem, offset: u64, agg: Agg, n: u64) -> Result<()> {
        let end = offset
            .checked_add(n)
            .ok_or_else(|| FsError::Invalid("a write past 2^64 bytes".into()))?;
        check_size(end)?;
        let mut at = offset;
        while at < end {
            let i = usize_of(at / CHUNK)?;
            let start = i as u64 * CHUNK;
            let stop = end.min(start + CHUNK);
            // A whole chunk, or the whole last chunk of a file this write ends.
            let whole = at == start && (stop == start + CHUNK || stop >= self.len);
            if whole && self.adopt(d, i, agg, at - offset, stop - start)? {
                self.len = self.len.max(stop);
                at = stop;
                continue;
            }
            let bytes = d.read(agg, at - offset, stop - at)?;
            self.write_bytes(d, at, &bytes)?;
            at = stop;
        }
        Ok(())
    }

    /// Makes bytes `from..from + len` of `agg` chunk `i` if they are one piece.
    fn adopt(&mut self, d: &mut Mem, i: usize, agg: Agg, from: u64, len: u64) -> Result<bool> {
        let part = d.select(agg, from, len)?;
        let loc = match d.write_pieces(part, 0) {
            Ok(p) if p.len() == 1 => p[0].0,
            _ => {
                d.decref(part)?;
                return Ok(false);
            }
        };
        self.changed(d)?;
        if self.len < i as u64 * CHUNK {
            self.extend_zero(d, i as u64 * CHUNK)?;
        }
        if self.chunks.len() <= i {
            self.chunks.resize_with(i + 1, || None);
        }
        if let Some(old) = self.chunks[i].replace(Chunk {
            agg: part,
            base: 0,
            loc,
            cap: len,
            shared: false,
            arena: None,
        }) {
            d.give(old)?;
        }
        Ok(true)
    }

    /// Copies up to `len` bytes from `offset` (fewer at the end of the file).
    pub fn read_bytes(&self, d: &Domain, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = self.len.min(offset.saturating_add(len));
        let mut out = Vec::with_capacity(usize_of(end.saturating_sub(offset))?);
        let mut at = offset;
        while at < end {
            let i = usize_of(at / CHUNK)?;
            let start = i as u64 * CHUNK;
            let stop = end.min(start + CHUNK);
            match self.chunks.get(i).and_then(Option::as_ref) {
                Some(c) => out.extend_from_slice(inside(
                    d.location_bytes(&c.loc)?,
                    range(at - start, stop - start)?,
                )?),
                None => out.resize(out.len() + usize_of(stop - at)?, 0),
            }
            at = stop;
        }
        Ok(out)
    }

    /// The whole file as one aggregate of the service (`None` when empty), to share or select
    /// from, not to consume; its chunks are never written again.
    pub fn whole(&mut self, d: &mut Mem) -> Result<Option<Agg>> {
        if self.whole.is_some() || self.len == 0 {
            return Ok(self.whole);
        }
        self.whole = self.assemble(d, 0, self.len)?;
        Ok(self.whole)
    }

    /// Up to `len` bytes from `offset` as a new aggregate of the service (`None` when
    /// nothing is there), to hand out: its chunks are never written again.
    pub fn range(&mut self, d: &mut Mem, offset: u64, len: u64) -> Result<Option<Agg>> {
        let n = self.len.saturating_sub(offset).min(len);
        if n == 0 {
            return Ok(None);
        }
        match self.whole {
            Some(w) => Ok(Some(d.select(w, offset, n)?)),
            None => self.assemble(d, offset, n),
        }
    }

    /// Bytes `offset..offset + n` (inside the file) as a new aggregate: the chunks' pieces,
    /// zeros for holes.
    fn assemble(&mut self, d: &mut Mem, offset: u64, n: u64) -> Result<Option<Agg>> {
        let mut acc: Option<Agg> = None;
        // Holes share one buffer of zeros.
        let mut zeros: Option<Agg> = None;
        let mut at = offset;
        while at < offset + n {
            let i = usize_of(at / CHUNK)?;
            let start = i as u64 * CHUNK;
            let stop = (offset + n).min(start + CHUNK);
            let piece = match self.chunks.get_mut(i).and_then(Option::as_mut) {
                Some(c) => {
                    c.shared = true;
                    d.select(c.agg, c.base + at - start, stop - at)?
                }
                None => {
                    let z = match zeros {
                        Some(z) => z,
                        None => *zeros.insert(d.alloc(CHUNK)?),
                    };
                    d.select(z, 0, stop - at)?
                }
            };
            at = stop;
            acc = Some(match acc {
                None => piece,
                Some(a) => {
                    let both = d.concat(a, piece)?;
                    d.decref(a)?;
                    d.decref(piece)?;
                    both
                }
            });
        }
        if let Some(z) = zeros {
            d.decref(z)?;
        }
        Ok(acc)
    }

    /// Cuts or extends (with zeros) to `len` bytes.
    pub fn truncate(&mut self, d: &mut Mem, len: u64) -> Result<()> {
        check_size(len)?;
        self.changed(d)?;
        if len > self.len {
            return self.extend_zero(d, len);
        }
        let keep = usize_of(len.div_ceil(CHUNK))?;
        while self.chunks.len() > keep {
            if let Some(c) = self.chunks.pop().flatten() {
                d.give(c)?;
            }
        }
        self.len = len;
        Ok(())
    }

    /// Buffers holding the file (for tests: how fragmented it is).
    pub fn chunk_count(&self) -> usize {
        self.chunks.iter().flatten().count()
    }
}
