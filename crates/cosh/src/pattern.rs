//! Self-checking data for demos, tests and benchmarks: an aggregate stamped with an index
//! carries the index in its first eight bytes and a pattern derived from it in the rest, so a
//! receiver can check every byte without knowing what the sender meant to send.

use crate::{Agg, Domain, Result};

/// The pattern repeats every `PERIOD` bytes (a prime, so that it never lines up with pages).
const PERIOD: usize = 251;

/// Two periods of the pattern for `index`, so that any window of `PERIOD` bytes is a slice.
fn table(index: u64) -> Vec<u8> {
    let shift = index.wrapping_mul(7) % PERIOD as u64;
    (0..2 * PERIOD as u64)
        .map(|k| ((k * 131 + shift) % PERIOD as u64) as u8)
        .collect()
}

/// The expected bytes at aggregate offset `at`.., for `len` bytes, compared or written in
/// `PERIOD`-sized runs.
fn runs(table: &[u8], mut at: u64, len: usize) -> impl Iterator<Item = (usize, &[u8])> {
    let mut done = 0;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let phase = (at % PERIOD as u64) as usize;
        let n = (PERIOD).min(len - done);
        let run = (done, &table[phase..phase + n]);
        done += n;
        at += n as u64;
        Some(run)
    })
}

fn header(index: u64, at: u64) -> Option<u8> {
    (at < 8).then(|| index.to_le_bytes()[at as usize])
}

/// Writes the stamp for `index` over all of `agg` (at least 8 bytes, read/write rights).
pub fn stamp(d: &mut Domain, agg: Agg, index: u64) -> Result<()> {
    let table = table(index);
    let mut at = 0u64;
    for piece in d.write_pieces(agg, 0)? {
        let bytes = d.bytes_mut(&piece)?;
        let len = bytes.len();
        for (off, run) in runs(&table, at, len) {
            bytes[off..off + run.len()].copy_from_slice(run);
        }
        for (i, b) in bytes.iter_mut().enumerate().take(8) {
            if let Some(h) = header(index, at + i as u64) {
                *b = h;
            }
        }
        at += len as u64;
    }
    Ok(())
}

/// Whether `agg` carries a correct stamp (read rights).
pub fn verify(d: &mut Domain, agg: Agg) -> Result<bool> {
    let pieces = d.read_pieces(agg, 0)?;
    // The index first (it may straddle pieces).
    let mut head = Vec::with_capacity(8);
    for piece in &pieces {
        head.extend(d.bytes(piece)?.iter().take(8 - head.len()));
        if head.len() == 8 {
            break;
        }
    }
    let Ok(head) = <[u8; 8]>::try_from(head) else {
        return Ok(false);
    };
    let index = u64::from_le_bytes(head);
    let table = table(index);
    let mut at = 0u64;
    for piece in &pieces {
        let bytes = d.bytes(piece)?;
        for (off, run) in runs(&table, at, bytes.len()) {
            let got = &bytes[off..off + run.len()];
            let skip = 8u64.saturating_sub(at + off as u64).min(run.len() as u64) as usize;
            if got[skip..] != run[skip..] {
                return Ok(false);
            }
        }
        at += bytes.len() as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_a_range_exactly_with_the_pattern() {
        let t = table(5);
        for start in [0u64, 1, 250, 251, 1000] {
            let mut flat = Vec::new();
            for (off, run) in runs(&t, start, 700) {
                assert_eq!(off, flat.len());
                flat.extend_from_slice(run);
            }
            assert_eq!(flat.len(), 700);
            for (i, b) in flat.iter().enumerate() {
                let at = start + i as u64;
                assert_eq!(u64::from(*b), (at * 131 + 35) % 251, "at {at}");
            }
        }
    }
}
