//! Variable-length frames (protocol messages) over a ring of fixed-size records.
//!
//! A frame of `len` bytes takes one head record (word 0: `len`; words 1..16: the first 60
//! bytes) and as many continuation records (64 bytes each) as the rest needs. A frame is
//! pushed whole or not at all ([`push_frame`] checks the room first), so a reader never waits
//! on a half-written frame for long; [`FrameReader`] collects records until a frame is
//! complete, and refuses a head that announces more than its limit.

use crate::{Consumer, Doorbell, Producer, RECORD_WORDS, Record, RingError};

/// Payload bytes in a head record.
pub const HEAD_BYTES: usize = (RECORD_WORDS - 1) * 4;
/// Payload bytes in a continuation record.
pub const BODY_BYTES: usize = RECORD_WORDS * 4;

/// Records needed for a frame of `len` bytes.
pub fn records_for(len: usize) -> usize {
    1 + len.saturating_sub(HEAD_BYTES).div_ceil(BODY_BYTES)
}

fn fill(record: &mut [u32], bytes: &[u8]) {
    let mut padded = [0u8; RECORD_WORDS * 4];
    let n = bytes.len().min(padded.len());
    padded[..n].copy_from_slice(&bytes[..n]);
    for (word, b) in record.iter_mut().zip(padded.chunks_exact(4)) {
        *word = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
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
    if (producer.capacity() - producer.pending()?) < needed as u32 {
        return Ok(false);
    }
    let split = frame.len().min(HEAD_BYTES);
    let mut head: Record = [0; RECORD_WORDS];
    head[0] = len;
    fill(&mut head[1..], &frame[..split]);
    let mut pushed = producer.try_push(&head)?;
    for chunk in frame[split..].chunks(BODY_BYTES) {
        let mut body: Record = [0; RECORD_WORDS];
        fill(&mut body, chunk);
        pushed &= producer.try_push(&body)?;
    }
    if !pushed {
        // Room was checked and only this side pushes: the consumer must have moved its tail
        // backwards.
        return Err(RingError::Corrupt("the ring shrank under a frame".into()));
    }
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
            let Some(record) = consumer.try_pop()? else {
                return Ok(None);
            };
            let words: &[u32] = match self.missing {
                None => {
                    let len = record[0] as usize;
                    if len > self.max {
                        return Err(RingError::Corrupt(format!(
                            "a frame of {len} bytes announced, more than the {} allowed",
                            self.max
                        )));
                    }
                    self.frame.clear();
                    self.frame.reserve(len);
                    self.missing = Some(len);
                    &record[1..]
                }
                Some(_) => &record[..],
            };
            let missing = self.missing.unwrap_or(0);
            let take = missing.min(words.len() * 4);
            let mut bytes = [0u8; RECORD_WORDS * 4];
            for (b, w) in bytes.chunks_exact_mut(4).zip(words) {
                b.copy_from_slice(&w.to_le_bytes());
            }
            self.frame.extend_from_slice(&bytes[..take]);
            self.missing = Some(missing - take);
        }
    }
}
