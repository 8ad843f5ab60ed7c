//! The floor under any transfer: one 64-byte record between two processes through a
//! `cosh-ring` ring, busy-polled (`ring spin`) or with the futex doorbell (`ring futex`), and a
//! bare futex ping-pong on one shared word (`futex`), the baseline for blocking wake-ups.
//!
//! The sender writes its clock reading into the record (or next to the futex word) and
//! signals; the receiver reads the clock when it sees the signal and echoes, and the sender
//! waits for the echo before the next sample. The two blocking kinds take their samples in
//! turn, one of each per round, so that a slow phase of the machine falls on both alike.

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

/// The receiver's side: `n` samples of `kind`, as nanoseconds one way (`both`: a `block`
/// sample and a `futex` one in turn, `2n` in all).
pub(crate) fn echo(words: &SharedWords<'_>, kind: &str, n: usize) -> Result<Vec<u64>, String> {
    let (to, back, futex) = layout(words)?;
    let ring_words = words_for(CAPACITY);
    let e = |x: cosh_ring::RingError| x.to_string();
    let w = words.atomic_u32s(futex, 4).ok_or("no futex words")?;
    // At rest both counters are equal (one signal, one echo per sample): start from the
    // echo count, which only this side changes, so that a signal sent before this side got
    // here is not missed.
    let mut seen = w[1].load(cosh_ring::Ordering::Acquire);
    let mut rx =
        Consumer::attach(words.atomic_u32s(to, ring_words).ok_or("no ring")?).map_err(e)?;
    let mut tx =
        Producer::attach(words.atomic_u32s(back, ring_words).ok_or("no ring")?).map_err(e)?;
    let mut futex_echo = || -> u64 {
        wait_change(&w[0], &mut seen);
        let t1 = now_ns();
        let t0 = from_words(
            w[2].load(cosh_ring::Ordering::Relaxed),
            w[3].load(cosh_ring::Ordering::Relaxed),
        );
        w[1].fetch_add(1, cosh_ring::Ordering::Release);
        let _ = cosh_sys::futex::wake(&w[1], 1);
        t1.saturating_sub(t0)
    };
    let mut ring_echo = |spins: u32| -> Result<u64, String> {
        let r = rx
            .pop(&Futex, spins, LONG)
            .map_err(e)?
            .ok_or("the sender went quiet")?;
        let t1 = now_ns();
        if !tx.push(&r, &Futex, spins, LONG).map_err(e)? {
            return Err("the sender stopped reading".into());
        }
        Ok(t1.saturating_sub(from_words(r[0], r[1])))
    };
    let mut samples = Vec::with_capacity(2 * n);
    for _ in 0..n {
        match kind {
            "futex" => samples.push(futex_echo()),
            "spin" => samples.push(ring_echo(SPIN)?),
            "block" => samples.push(ring_echo(0)?),
            _ => {
                samples.push(ring_echo(0)?);
                samples.push(futex_echo());
            }
        }
    }
    Ok(samples)
}

/// Sleeps on `word` until it differs from `seen`, which then takes its value.
fn wait_change(word: &cosh_ring::AtomicU32, seen: &mut u32) {
    loop {
        let now = word.load(cosh_ring::Ordering::Acquire);
        if now != *seen {
            *seen = now;
            return;
        }
        let _ = cosh_sys::futex::wait(word, *seen, LONG);
    }
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
    let futex_words = words.atomic_u32s(futex, 4).ok_or("no futex words")?;
    let mut echoed = futex_words[1].load(cosh_ring::Ordering::Acquire);
    let mut futex_sample = || {
        asleep();
        let w = futex_words;
        let [lo, hi] = two_words(now_ns());
        w[2].store(lo, cosh_ring::Ordering::Relaxed);
        w[3].store(hi, cosh_ring::Ordering::Relaxed);
        w[0].fetch_add(1, cosh_ring::Ordering::Release);
        let _ = cosh_sys::futex::wake(&w[0], 1);
        wait_change(&w[1], &mut echoed);
    };
    let mut tx =
        Producer::attach(words.atomic_u32s(to, ring_words).ok_or("no ring")?).map_err(e)?;
    let mut back_rx =
        Consumer::attach(words.atomic_u32s(back, ring_words).ok_or("no ring")?).map_err(e)?;
    let mut ring_sample = |spins: u32| -> Result<(), String> {
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
        Ok(())
    };
    let mut rows = Vec::new();
    // Busy-polling alone; then the two blocking kinds in turn.
    rx.tell(&format!("spin {n}"))?;
    for _ in 0..n {
        ring_sample(SPIN)?;
    }
    let spun = samples_of(&rx.line()?)?;
    rows.push(summarize("ring spin", 64, spun.clone(), spun));
    rx.tell(&format!("both {n}"))?;
    for _ in 0..n {
        ring_sample(0)?;
        futex_sample();
    }
    let both = samples_of(&rx.line()?)?;
    let (ring, bare): (Vec<u64>, Vec<u64>) = (
        both.iter().step_by(2).copied().collect(),
        both.iter().skip(1).step_by(2).copied().collect(),
    );
    if ring.len() != n || bare.len() != n {
        return Err(format!(
            "the receiver answered {} samples, not {}",
            both.len(),
            2 * n
        ));
    }
    rows.push(summarize("ring futex", 64, ring.clone(), ring));
    rows.push(summarize("futex", 64, bare.clone(), bare));
    drop(map);
    Ok(rows)
}

/// The receiver's line of samples.
fn samples_of(line: &str) -> Result<Vec<u64>, String> {
    line.split_whitespace()
        .map(|w| w.parse().map_err(|_| format!("the receiver said {line:?}")))
        .collect()
}
