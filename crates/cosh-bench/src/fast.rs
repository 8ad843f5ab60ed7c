//! The fast path, measured the way it is used: a buffer bounced between two domains that
//! trust each other (weak moves on direct rings, one way timed at the receiver, busy-polling
//! or blocking), and streams of strong transfers for bandwidth.
//!
//! *Bounce*: the sender writes its clock into the buffer and moves it weakly; the receiver
//! reads the clock as soon as `receive` returns (the buffer is mapped after the first round),
//! then moves the buffer back. One sample per one-way trip, as the `futex` and `ring`
//! baselines take theirs.
//!
//! *Stream*: the sender sends `n` transfers back to back and the receiver takes them as they
//! come; bandwidth is bytes over the time from the first send to the last receive, and the
//! pipe baseline streams the same bytes through a pipe.

use std::io::{Read, Write};
use std::time::Duration;

use cosh::{Agg, Domain, DomainId, Mode, TransferFlags};

use crate::{Receiver, Row, now_ns, summarize};

const WAIT: Option<Duration> = Some(Duration::from_secs(60));
/// Timed passes of each stream: seven, so that the fastest and the slowest bound the median
/// with 98 % confidence (the report tells a slower stream from noise by it).
const PASSES: usize = 7;

fn e(x: cosh::Error) -> String {
    x.to_string()
}

/// The receiver's side of a bounce: `n` one-way samples (nanoseconds).
pub(crate) fn bounce_back(
    d: &mut Domain,
    sender: DomainId,
    n: usize,
    spins: u32,
) -> Result<Vec<u64>, String> {
    d.set_spins(spins);
    let mut samples = Vec::with_capacity(n);
    let mut moved = Vec::with_capacity(n);
    for _ in 0..n {
        let got = d.receive(Some(sender), WAIT).map_err(e)?;
        let t1 = now_ns();
        let head = d.read(got.agg, 0, 8).map_err(e)?;
        let t0 = u64::from_le_bytes(head.try_into().map_err(|_| "a short buffer")?);
        samples.push(t1.saturating_sub(t0));
        d.transfer(got.agg, sender, Mode::Move, TransferFlags::weak())
            .map_err(e)?;
        moved.push(got.agg);
    }
    for agg in moved {
        d.decref(agg).map_err(e)?;
    }
    Ok(samples)
}

/// The sender's side of a bounce of a `size`-byte buffer, `n` round trips.
pub(crate) fn bounce(
    d: &mut Domain,
    rx: &mut Receiver,
    receiver: DomainId,
    size: u64,
    n: usize,
    spins: u32,
) -> Result<Vec<u64>, String> {
    d.set_spins(spins);
    rx.tell(&format!("bounce {n} {spins}"))?;
    let mut x = d.alloc(size).map_err(e)?;
    d.write(x, 0, &vec![7u8; size.min(1 << 20) as usize])
        .map_err(e)?;
    let mut moved: Vec<Agg> = Vec::with_capacity(n);
    for _ in 0..n {
        let piece = *d.write_pieces(x, 0).map_err(e)?.first().ok_or("no piece")?;
        let t0 = now_ns();
        d.bytes_mut(&piece).map_err(e)?[..8].copy_from_slice(&t0.to_le_bytes());
        d.transfer(x, receiver, Mode::Move, TransferFlags::weak())
            .map_err(e)?;
        moved.push(x);
        x = d.receive(Some(receiver), WAIT).map_err(e)?.agg;
    }
    for agg in moved {
        d.decref(agg).map_err(e)?;
    }
    d.decref(x).map_err(e)?;
    let line = rx.line()?;
    line.split_whitespace()
        .map(|w| w.parse().map_err(|_| format!("the receiver said {line:?}")))
        .collect()
}

/// The receiver's side of a stream: takes `n` transfers, answers the clock at the last.
pub(crate) fn drain(d: &mut Domain, sender: DomainId, n: usize) -> Result<u64, String> {
    for _ in 0..n {
        let got = d.receive(Some(sender), WAIT).map_err(e)?;
        d.decref(got.agg).map_err(e)?;
    }
    Ok(now_ns())
}

/// The receiver's side of a pipe stream: reads `total` bytes, answers the clock at the end.
pub(crate) fn drain_pipe(path: &str, total: u64) -> Result<u64, String> {
    let mut f = std::fs::File::open(path).map_err(|x| x.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = total;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = f.read(&mut buf[..want]).map_err(|x| x.to_string())?;
        if got == 0 {
            return Err("the pipe closed early".into());
        }
        left -= got as u64;
    }
    Ok(now_ns())
}

/// Streams `n` strong transfers of `size` bytes by `mode` (a copy reuses one buffer; a move
/// allocates each, unzeroed, as a producer that fills its buffers does) and the same bytes through a pipe; one row each, whose
/// latency is the time per transfer: the median of seven passes, after one that fills the
/// receiver's free list, as in a stream that has run for a while.
pub(crate) fn stream(
    d: &mut Domain,
    rx: &mut Receiver,
    receiver: DomainId,
    dir: &std::path::Path,
    size: u64,
    n: usize,
) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let fill = vec![3u8; size as usize];
    // Both sides wait as a program that sets nothing does (the bounces changed them).
    d.set_spins(cosh::default_spins());
    let answer = rx.ask(&format!("spins {}", cosh::default_spins()))?;
    if answer != "ok" {
        return Err(format!("the receiver said {answer:?}"));
    }
    for (name, mode) in [
        ("stream copy", Mode::Copy),
        ("stream move strong", Mode::Move),
    ] {
        // One untimed pass, then the median of the timed ones.
        stream_once(d, rx, receiver, size, n, mode, &fill)?;
        let mut each = Vec::with_capacity(PASSES);
        for _ in 0..PASSES {
            each.push(stream_once(d, rx, receiver, size, n, mode, &fill)?);
        }
        rows.push(summarize(name, size, each.clone(), each));
    }
    let mut each = Vec::with_capacity(PASSES);
    for _ in 0..PASSES {
        each.push(stream_pipe(rx, dir, size, n, &fill)?);
    }
    rows.push(summarize("stream pipe", size, each.clone(), each));
    Ok(rows)
}

/// One stream of `n` transfers: the time per transfer.
fn stream_once(
    d: &mut Domain,
    rx: &mut Receiver,
    receiver: DomainId,
    size: u64,
    n: usize,
    mode: Mode,
    fill: &[u8],
) -> Result<u64, String> {
    let mut current = d.alloc(size).map_err(e)?;
    d.write(current, 0, fill).map_err(e)?;
    rx.tell(&format!("drain {n}"))?;
    std::thread::sleep(Duration::from_millis(1));
    let t0 = now_ns();
    for i in 0..n {
        d.transfer(current, receiver, mode, TransferFlags::strong())
            .map_err(e)?;
        if mode == Mode::Move {
            d.decref(current).map_err(e)?;
            if i + 1 < n {
                current = d.alloc_unzeroed(size).map_err(e)?;
                d.write(current, 0, &fill[..fill.len().min(8)]).map_err(e)?;
            }
        }
    }
    let line = rx.line()?;
    let t1: u64 = line
        .trim()
        .parse()
        .map_err(|_| format!("the receiver said {line:?}"))?;
    if mode == Mode::Copy {
        d.decref(current).map_err(e)?;
    }
    Ok(t1.saturating_sub(t0) / n as u64)
}

/// The same bytes through a pipe.
fn stream_pipe(
    rx: &mut Receiver,
    dir: &std::path::Path,
    size: u64,
    n: usize,
    fill: &[u8],
) -> Result<u64, String> {
    let path = dir.join(format!("stream-{size}"));
    crate::make_fifo(&path)?;
    rx.tell(&format!("drainpipe {} {}", path.display(), size * n as u64))?;
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|x| x.to_string())?;
    let t0 = now_ns();
    for _ in 0..n {
        w.write_all(fill).map_err(|x| x.to_string())?;
    }
    drop(w);
    let line = rx.line()?;
    let t1: u64 = line
        .trim()
        .parse()
        .map_err(|_| format!("the receiver said {line:?}"))?;
    let _ = std::fs::remove_file(&path);
    Ok(t1.saturating_sub(t0) / n as u64)
}
