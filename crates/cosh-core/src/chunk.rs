//! Chunks and chunk lists: the byte-level structure behind an aggregate.
//!
//! A [`Chunk`] is a byte range of one buffer. A [`ChunkList`] is an ordered list of chunks kept
//! in normal form: no empty chunks, and no two neighbours that continue each other in the same
//! buffer (those are merged). Iteration therefore yields exactly the maximal contiguous pieces,
//! and a fresh aggregate (one chunk) iterates as one piece. Select finds its start by binary
//! search over cumulative lengths, so it costs O(log n + k) for k chunks selected.

use std::collections::BTreeSet;

use crate::id::BufferId;

/// A byte range of one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Chunk {
    /// The buffer holding the bytes.
    pub buffer: BufferId,
    /// Offset of the first byte within the buffer.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

impl Chunk {
    /// One past the last byte, within the buffer.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }

    /// Whether `next` starts in the same buffer exactly where `self` ends.
    pub fn continues_into(&self, next: &Chunk) -> bool {
        self.buffer == next.buffer && self.end() == next.offset
    }
}

/// The largest length of an aggregate, in bytes (2^62). Concatenation is metadata only, so
/// without a bound a loop of self-concatenations would overflow a 64-bit length.
pub const MAX_LEN: u64 = 1 << 62;

/// The most chunks one aggregate may have (2^20). Self-concatenation doubles the chunk count
/// at no cost in memory, so without a bound a short loop would exhaust the metadata memory of
/// whoever keeps the list; a fragmented aggregate should be coalesced (copied) instead.
pub const MAX_CHUNKS: usize = 1 << 20;

/// Why a concatenation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConcatError {
    /// The result would be longer than [`MAX_LEN`] bytes.
    TooLong {
        /// The length it would have (saturated).
        len: u64,
    },
    /// The result would have more than [`MAX_CHUNKS`] chunks.
    TooFragmented {
        /// The chunks it would have.
        chunks: usize,
    },
}

/// A byte range that does not fit in the aggregate it was applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange {
    /// Requested start.
    pub offset: u64,
    /// Requested length.
    pub len: u64,
    /// Length actually available.
    pub available: u64,
}

/// An ordered list of chunks in normal form (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkList {
    chunks: Vec<Chunk>,
    /// `ends[i]` is the aggregate offset one past the last byte of `chunks[i]`.
    ends: Vec<u64>,
}

impl ChunkList {
    /// An empty list.
    pub fn new() -> Self {
        ChunkList::default()
    }

    /// A list of one chunk (empty if the chunk is).
    pub fn single(chunk: Chunk) -> Self {
        let mut list = ChunkList::new();
        list.push(chunk);
        list
    }

    /// Builds the normal form of the given chunks: empty chunks dropped, continuing
    /// neighbours merged.
    pub fn from_chunks(chunks: impl IntoIterator<Item = Chunk>) -> Self {
        let mut list = ChunkList::new();
        for c in chunks {
            list.push(c);
        }
        list
    }

    /// Appends a chunk, keeping normal form.
    pub fn push(&mut self, chunk: Chunk) {
        if chunk.len == 0 {
            return;
        }
        let end = self.len().saturating_add(chunk.len);
        if let Some(last) = self.chunks.last_mut()
            && last.continues_into(&chunk)
        {
            last.len += chunk.len;
            if let Some(e) = self.ends.last_mut() {
                *e = end;
            }
            return;
        }
        self.chunks.push(chunk);
        self.ends.push(end);
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Whether the list holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The chunks, in normal form: each one is a maximal contiguous piece.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// Index of the chunk holding byte `offset` (requires `offset < len`).
    fn index_of(&self, offset: u64) -> usize {
        self.ends.partition_point(|&e| e <= offset)
    }

    /// The start offset of chunk `i` within the list.
    fn start_of(&self, i: usize) -> u64 {
        if i == 0 { 0 } else { self.ends[i - 1] }
    }

    /// The sub-range `[offset, offset + len)` as a new list.
    ///
    /// A sub-range of a list in normal form is in normal form once its first and last chunks
    /// are trimmed (trimming never makes neighbours continue each other), so the chunks in
    /// between are copied in bulk.
    pub fn select(&self, offset: u64, len: u64) -> Result<ChunkList, OutOfRange> {
        let total = self.len();
        let out_of_range = OutOfRange {
            offset,
            len,
            available: total,
        };
        let end = offset.checked_add(len).ok_or(out_of_range)?;
        if end > total {
            return Err(out_of_range);
        }
        if len == 0 {
            return Ok(ChunkList::new());
        }
        let first = self.index_of(offset);
        let last = self.index_of(end - 1);
        let mut chunks = self.chunks[first..=last].to_vec();
        let mut ends: Vec<u64> = self.ends[first..=last].iter().map(|e| e - offset).collect();
        let skip = offset - self.start_of(first);
        chunks[0].offset += skip;
        chunks[0].len -= skip;
        let overhang = self.ends[last] - end;
        if let (Some(c), Some(e)) = (chunks.last_mut(), ends.last_mut()) {
            c.len -= overhang;
            *e = len;
        }
        Ok(ChunkList { chunks, ends })
    }

    /// The concatenation of `self` and `other` as a new list; only the seam may merge.
    pub fn concat(&self, other: &ChunkList) -> Result<ChunkList, ConcatError> {
        let base = self.len();
        let len = base.saturating_add(other.len());
        if len > MAX_LEN {
            return Err(ConcatError::TooLong { len });
        }
        let chunks = self.chunks.len() + other.chunks.len();
        if chunks > MAX_CHUNKS {
            return Err(ConcatError::TooFragmented { chunks });
        }
        let (Some(last), Some(next)) = (self.chunks.last(), other.chunks.first()) else {
            return Ok(if self.is_empty() {
                other.clone()
            } else {
                self.clone()
            });
        };
        let merge = last.continues_into(next);
        let skip = usize::from(merge);
        let mut chunks = Vec::with_capacity(self.chunks.len() + other.chunks.len() - skip);
        let mut ends = Vec::with_capacity(chunks.capacity());
        chunks.extend_from_slice(&self.chunks);
        ends.extend_from_slice(&self.ends);
        if merge && let (Some(c), Some(e)) = (chunks.last_mut(), ends.last_mut()) {
            c.len += next.len;
            *e += next.len;
        }
        chunks.extend_from_slice(&other.chunks[skip..]);
        ends.extend(other.ends[skip..].iter().map(|e| e + base));
        Ok(ChunkList { chunks, ends })
    }

    /// The maximal contiguous pieces from byte `offset` to the end. `offset == len` yields
    /// nothing; beyond that is out of range.
    pub fn pieces_from(&self, offset: u64) -> Result<Pieces<'_>, OutOfRange> {
        let total = self.len();
        if offset > total {
            return Err(OutOfRange {
                offset,
                len: 0,
                available: total,
            });
        }
        let index = if offset == total {
            self.chunks.len()
        } else {
            self.index_of(offset)
        };
        let skip = if index < self.chunks.len() {
            offset - self.start_of(index)
        } else {
            0
        };
        Ok(Pieces {
            chunks: &self.chunks,
            index,
            skip,
        })
    }

    /// The distinct buffers this list refers to, in order of id.
    pub fn buffers(&self) -> BTreeSet<BufferId> {
        self.chunks.iter().map(|c| c.buffer).collect()
    }

    /// Whether this list refers to some byte of `buffer` more than once (as `concat(x, x)`
    /// does).
    pub fn repeats_bytes_of(&self, buffer: BufferId) -> bool {
        if self
            .chunks
            .iter()
            .filter(|c| c.buffer == buffer)
            .nth(1)
            .is_none()
        {
            // One chunk of it at most (the usual case): nothing to compare.
            return false;
        }
        let mut ranges: Vec<(u64, u64)> = self
            .chunks
            .iter()
            .filter(|c| c.buffer == buffer)
            .map(|c| (c.offset, c.end()))
            .collect();
        ranges.sort_unstable();
        ranges.windows(2).any(|w| w[1].0 < w[0].1)
    }

    /// How many bytes of `buffer` this list refers to (counting repeats).
    pub fn bytes_in(&self, buffer: BufferId) -> u64 {
        self.chunks
            .iter()
            .filter(|c| c.buffer == buffer)
            .map(|c| c.len)
            .sum()
    }
}

/// Iterator over the maximal contiguous pieces of a [`ChunkList`] from some offset.
#[derive(Clone, Debug)]
pub struct Pieces<'a> {
    chunks: &'a [Chunk],
    index: usize,
    skip: u64,
}

impl Iterator for Pieces<'_> {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        let c = *self.chunks.get(self.index)?;
        let skip = std::mem::take(&mut self.skip);
        self.index += 1;
        Some(Chunk {
            buffer: c.buffer,
            offset: c.offset + skip,
            len: c.len - skip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(b: u64, offset: u64, len: u64) -> Chunk {
        Chunk {
            buffer: BufferId(b),
            offset,
            len,
        }
    }

    #[test]
    fn normal_form_merges_continuations_and_drops_empties() {
        let l = ChunkList::from_chunks([c(1, 0, 10), c(1, 10, 5), c(2, 0, 0), c(1, 20, 1)]);
        assert_eq!(l.chunks(), &[c(1, 0, 15), c(1, 20, 1)]);
        assert_eq!(l.len(), 16);
    }

    #[test]
    fn select_splits_chunks_and_checks_range() {
        let l = ChunkList::from_chunks([c(1, 0, 10), c(2, 100, 10)]);
        let s = l.select(5, 10).expect("in range");
        assert_eq!(s.chunks(), &[c(1, 5, 5), c(2, 100, 5)]);
        assert!(l.select(15, 6).is_err());
        assert!(l.select(u64::MAX, 2).is_err());
        assert!(l.select(20, 0).expect("empty at end").is_empty());
    }

    #[test]
    fn pieces_start_inside_a_chunk() {
        let l = ChunkList::from_chunks([c(1, 0, 10), c(2, 100, 10)]);
        let p: Vec<_> = l.pieces_from(12).expect("in range").collect();
        assert_eq!(p, vec![c(2, 102, 8)]);
        assert_eq!(l.pieces_from(20).expect("end").count(), 0);
        assert!(l.pieces_from(21).is_err());
    }

    #[test]
    fn repeated_bytes_are_detected() {
        let x = ChunkList::from_chunks([c(1, 0, 10), c(2, 0, 10), c(1, 10, 5)]);
        assert!(!x.repeats_bytes_of(BufferId(1)));
        let xx = x.concat(&x).expect("fits");
        assert!(xx.repeats_bytes_of(BufferId(1)) && xx.repeats_bytes_of(BufferId(2)));
        let touching = ChunkList::from_chunks([c(1, 5, 5), c(2, 0, 1), c(1, 0, 5)]);
        assert!(
            !touching.repeats_bytes_of(BufferId(1)),
            "adjacent is not repeated"
        );
    }

    #[test]
    fn concat_merges_at_the_seam() {
        let a = ChunkList::single(c(1, 0, 10));
        let b = ChunkList::single(c(1, 10, 10));
        assert_eq!(a.concat(&b).expect("fits").chunks(), &[c(1, 0, 20)]);
        let huge = ChunkList::single(c(1, 0, MAX_LEN));
        assert_eq!(
            huge.concat(&a),
            Err(ConcatError::TooLong { len: MAX_LEN + 10 })
        );
    }
}
