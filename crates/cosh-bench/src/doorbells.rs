//! The floor under any transfer: one 64-byte record between two processes through a
//! `cosh-ring` ring, busy-polled (`ring spin`) or with the futex doorbell (`ring futex`), and a
//! bare futex ping-pong on one shared word (`futex`), the baseline for blocking wake-ups.
//!
//! The sender writes its clock reading into the record (or next to the futex word) and
//! signals; the receiver reads the clock when it sees the signal and echoes, and the sender
//! waits for the echo before the next sample.

use std::os::fd::AsRawFd;
use std::time::Duration;

use cosh_ring::{Consumer, Futex, Producer, RECORD_WORDS, bytes_for, init, words_for};
use cosh_sys::mapping::{Prefault, SharedWords};
use cosh_sys::memfd::Memfd;

use crate::{Receiver, Row, now_ns, summarize};

const CAPACITY: u32 = 64;
/// Spins before sleeping in the spinning mode: effectively never sleeps.
const SPIN: u32 = u32::MAX;
const LONG: Option<Duration> = Some(Duration::from_secs(10));

/// The layout: ring to the receiver, ring back, then the futex words.
fn layout(words: &SharedWords<'_>) -> Result<(usize, usize, usize), String> {
    let ring = words_for(CAPACITY);
    let to = 0;
    let back = ring * 4;
    let futex = back + ring * 4;
    words
        .atomic_u32s(futex, 16)
        .ok_or("the shared memory is too small")?;
    Ok((to, back, futex))
}

fn size() -> u64 {
    (bytes_for(CAPACITY) * 2 + 64) as u64
}

fn two_words(t: u64) -> [u32; 2] {
    [t as u32, (t >> 32) as u32]
}

fn from_words(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

/// The receiver's side: `n` samples of `kind`, as nanoseconds one way.
pub(crate) fn echo(words: &SharedWords<'_>, kind: &str, n: usize) -> Result<Vec<u64>, String> {
    let (to, back, futex) = layout(words)?;
    let ring_words = words_for(CAPACITY);
    let e = |x: cosh_ring::RingError| x.to_string();
    let mut samples = Vec::with_capacity(n);
    if kind == "futex" {
        let w = words.atomic_u32s(futex, 4).ok_or("no futex words")?;
        // At rest both counters are equal (one signal, one echo per sample): start from the
        // echo count, which only this side changes, so that a signal sent before this side
        // got here is not missed.
        let mut seen = w[1].load(cosh_ring::Ordering::Acquire);
        for _ in 0..n {
            loop {
                let now = w[0].load(cosh_ring::Ordering::Acquire);
                if now != seen {
                    seen = now;
                    break;
                }
                let _ = cosh_sys::futex::wait(&w[0], seen, LONG);
            }
            let t1 = now_ns();
            let t0 = from_words(
                w[2].load(cosh_ring::Ordering::Relaxed),
                w[3].load(cosh_ring::Ordering::Relaxed),
            );
            samples.push(t1.saturating_sub(t0));
            w[1].fetch_add(1, cosh_ring::Ordering::Release);
            let _ = cosh_sys::futex::wake(&w[1], 1);
        }
        return Ok(samples);
    }
    let spins = if kind == "spin" { SPIN } else { 0 };
    let mut rx =
        Consumer::attach(words.atomic_u32s(to, ring_words).ok_or("no ring")?).map_err(e)?;
    let mut tx =
        Producer::attach(words.atomic_u32s(back, ring_words).ok_or("no ring")?).map_err(e)?;
    for _ in 0..n {
        let r = rx
            .pop(&Futex, spins, LONG)
            .map_err(e)?
            .ok_or("the sender went quiet")?;
        let t1 = now_ns();
        samples.push(t1.saturating_sub(from_words(r[0], r[1])));
        if !tx.push(&r, &Futex, spins, LONG).map_err(e)? {
            return Err("the sender stopped reading".into());
        }
    }
    Ok(samples)
}

/// Before a sample of a blocking kind: long enough for the receiver to be asleep when it is
/// signalled (in a tight ping-pong it would find the next signal already there, and the
/// "blocking" baseline would measure a spin).
fn asleep() {
    std::thread::sleep(std::time::Duration::from_micros(100));
}

/// The sender's side: measures every kind with `n` samples.
pub(crate) fn measure(rx: &mut Receiver, n: usize) -> Result<Vec<Row>, String> {
    let memfd = Memfd::create("cosh-bench-doorbells", size()).map_err(|x| x.to_string())?;
    let mut map = memfd.map_write(Prefault::Now).map_err(|x| x.to_string())?;
    let path = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        memfd.as_fd().as_raw_fd()
    );
    let words = map.shared_words();
    let (to, back, futex) = layout(&words)?;
    let ring_words = words_for(CAPACITY);
    let e = |x: cosh_ring::RingError| x.to_string();
    init(
        words.atomic_u32s(to, ring_words).ok_or("no ring")?,
        CAPACITY,
    )
    .map_err(e)?;
    init(
        words.atomic_u32s(back, ring_words).ok_or("no ring")?,
        CAPACITY,
    )
    .map_err(e)?;
    let answer = rx.ask(&format!("shm {path}"))?;
    if answer != "ok" {
        return Err(format!("the receiver said {answer:?}"));
    }
    let mut rows = Vec::new();
    for (kind, name) in [
        ("spin", "ring spin"),
        ("block", "ring futex"),
        ("futex", "futex"),
    ] {
        rx.tell(&format!("{kind} {n}"))?;
        if kind == "futex" {
            let w = words.atomic_u32s(futex, 4).ok_or("no futex words")?;
            let mut echoed = w[1].load(cosh_ring::Ordering::Acquire);
            for _ in 0..n {
                asleep();
                let [lo, hi] = two_words(now_ns());
                w[2].store(lo, cosh_ring::Ordering::Relaxed);
                w[3].store(hi, cosh_ring::Ordering::Relaxed);
                w[0].fetch_add(1, cosh_ring::Ordering::Release);
                let _ = cosh_sys::futex::wake(&w[0], 1);
                loop {
                    let now = w[1].load(cosh_ring::Ordering::Acquire);
                    if now != echoed {
                        echoed = now;
                        break;
                    }
                    let _ = cosh_sys::futex::wait(&w[1], echoed, LONG);
                }
            }
        } else {
            let spins = if kind == "spin" { SPIN } else { 0 };
            let mut tx =
                Producer::attach(words.atomic_u32s(to, ring_words).ok_or("no ring")?).map_err(e)?;
            let mut back_rx =
                Consumer::attach(words.atomic_u32s(back, ring_words).ok_or("no ring")?)
                    .map_err(e)?;
            for _ in 0..n {
                if spins == 0 {
                    asleep();
                }
                let mut r = [0u32; RECORD_WORDS];
                let [lo, hi] = two_words(now_ns());
                r[0] = lo;
                r[1] = hi;
                if !tx.push(&r, &Futex, spins, LONG).map_err(e)? {
                    return Err("the receiver stopped reading".into());
                }
                back_rx
                    .pop(&Futex, spins, LONG)
                    .map_err(e)?
                    .ok_or("the receiver went quiet")?;
            }
        }
        let line = rx.line()?;
        let samples: Vec<u64> = line
            .split_whitespace()
            .map(|w| w.parse().map_err(|_| format!("the receiver said {line:?}")))
            .collect::<Result<_, _>>()?;
        rows.push(summarize(name, 64, samples.clone(), samples));
    }
    drop(map);
    Ok(rows)
}
