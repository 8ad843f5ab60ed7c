//! Variable-length frames (protocol messages) over a ring of fixed-size records.
//!
//! A frame of `len` bytes takes one head record (word 0: `len`; words 1..16: the first 60
//! bytes) and as many continuation records (64 bytes each) as the rest needs. A frame is
//! pushed whole or not at all ([`push_frame`] checks the room first), so a reader never waits
//! on a half-written frame for long; [`FrameReader`] collects records until a frame is
//! complete, and refuses a head that announces more than its limit.

use crate::sync::{AtomicU32, Ordering};
use crate::{Consumer, Doorbell, Producer, RECORD_WORDS, RingError};

/// Payload bytes in a head record.
pub const HEAD_BYTES: usize = (RECORD_WORDS - 1) * 4;
/// Payload bytes in a continuation record.
pub const BODY_BYTES: usize = RECORD_WORDS * 4;

/// Records needed for a frame of `len` bytes.
pub fn records_for(len: usize) -> usize {
    1 + len.saturating_sub(HEAD_BYTES).div_ceil(BODY_BYTES)
}

/// Stores `bytes` (at most the words' worth) in `words`, the last word zero-padded.
fn store(words: &[AtomicU32], bytes: &[u8]) {
    let mut chunks = bytes.chunks_exact(4);
    let mut n = 0;
    for (word, b) in words.iter().zip(&mut chunks) {
        word.store(
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Ordering::Relaxed,
        );
        n += 1;
    }
    let rest = chunks.remainder();
    if !rest.is_empty()
        && let Some(word) = words.get(n)
    {
        let mut last = [0u8; 4];
        last[..rest.len()].copy_from_slice(rest);
        word.store(u32::from_le_bytes(last), Ordering::Relaxed);
    }
}

/// Loads `out.len()` bytes (at most the words' worth) from `words`.
fn load(words: &[AtomicU32], out: &mut [u8]) {
    let mut chunks = out.chunks_exact_mut(4);
    let mut n = 0;
    for (b, word) in (&mut chunks).zip(words) {
        b.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        n += 1;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty()
        && let Some(word) = words.get(n)
    {
        let v = word.load(Ordering::Relaxed).to_le_bytes();
        rest.copy_from_slice(&v[..rest.len()]);
    }
}

/// Pushes `frame` whole, or returns `Ok(false)` (nothing pushed) when the ring lacks room.
/// Notifies the consumer once the whole frame is in.
pub fn push_frame(
    producer: &mut Producer<'_>,
    frame: &[u8],
    bell: &impl Doorbell,
) -> Result<bool, RingError> {
    let pushed = push_frame_quietly(producer, frame)?;
    if pushed {
        producer.notify(bell);
    }
    Ok(pushed)
}

/// [`push_frame`] without the notification: for records the consumer picks up at its own
/// pace (call [`Producer::notify`] later to hurry it).
pub fn push_frame_quietly(producer: &mut Producer<'_>, frame: &[u8]) -> Result<bool, RingError> {
    let needed = records_for(frame.len());
    let len = u32::try_from(frame.len())
        .map_err(|_| RingError::Corrupt(format!("a frame of {} bytes", frame.len())))?;
    if needed > producer.capacity() as usize {
        return Err(RingError::TooSmall {
            needed,
            got: producer.capacity() as usize,
        });
    }
    if !producer.has_room(needed as u32)? {
        return Ok(false);
    }
    // Every record written, then published at once (room was checked, and only this side
    // moves the head): the consumer never sees part of a frame.
    let split = frame.len().min(HEAD_BYTES);
    let head = producer.staged(0);
    head[0].store(len, Ordering::Relaxed);
    store(&head[1..], &frame[..split]);
    let mut n = 1u32;
    for chunk in frame[split..].chunks(BODY_BYTES) {
        store(producer.staged(n), chunk);
        n += 1;
    }
    producer.publish(n);
    Ok(true)
}

/// Reassembles frames from a ring's records.
#[derive(Debug)]
pub struct FrameReader {
    max: usize,
    frame: Vec<u8>,
    /// Bytes the frame being read still lacks, once its head was seen.
    missing: Option<usize>,
}

impl FrameReader {
    /// A reader that refuses frames longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameReader {
            max,
            frame: Vec::new(),
            missing: None,
        }
    }

    /// Takes records until a frame is complete (returned, borrowed until the next call) or
    /// the ring is empty (`None`; the part read so far is kept for the next call). The
    /// reader's buffer is reused: reading a frame allocates nothing once it has grown.
    pub fn read(&mut self, consumer: &mut Consumer<'_>) -> Result<Option<&[u8]>, RingError> {
        loop {
            if self.missing == Some(0) {
                self.missing = None;
                return Ok(Some(&self.frame));
            }
            let available = consumer.available()?;
            if available == 0 {
                return Ok(None);
            }
            // Read what is there (up to the frame's end), then give it back at once.
            let mut used = 0;
            let result = loop {
                if used == available || self.missing == Some(0) {
                    break Ok(());
                }
                let record = consumer.peek(used);
                used += 1;
                let words = match self.missing {
                    None => {
                        let len = record[0].load(Ordering::Relaxed) as usize;
                        if len > self.max {
                            break Err(RingError::Corrupt(format!(
                                "a frame of {len} bytes announced, more than the {} allowed",
                                self.max
                            )));
                        }
                        self.frame.clear();
                        self.frame.resize(len, 0);
                        self.missing = Some(len);
                        &record[1..]
                    }
                    Some(_) => record,
                };
                let missing = self.missing.unwrap_or(0);
                let take = missing.min(words.len() * 4);
                let at = self.frame.len() - missing;
                load(words, &mut self.frame[at..at + take]);
                self.missing = Some(missing - take);
            };
            consumer.release(used);
            result?;
        }
    }
}
