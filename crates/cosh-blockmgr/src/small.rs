//! The copy-versus-reference policy for small transfers, chosen from measurements made when
//! the block manager starts.
//!
//! A transfer between two domains of one pool that have a direct ring can carry its bytes
//! with it (*inline*): the sender's library copies them into the ring's staging area, the
//! receiver's copies them out into a buffer of its own, and the block manager only learns of
//! it. That costs two copies of the bytes. The alternatives cost a fixed price whatever the
//! size: a strong transfer through the block manager wakes one more process (the block
//! manager, then the receiver) and copies once; a weak transfer by reference to a receiver
//! that does not map the buffer yet costs it a round trip for the descriptor and the mapping.
//! So below some size, inline wins; the sizes depend on the machine, so they are measured
//! here rather than assumed: the two copies per KiB, a wake-up of a sleeping thread, the block
//! manager's copy of a buffer, and the mapping of a buffer never mapped before.
//!
//! Larger strong shares go through the block manager, which either seals the buffer (the
//! sender first drops its writable mapping; the receiver maps the buffer) or copies the
//! bytes into a buffer the receiver already maps. With 4 KiB pages the per-page costs of the
//! first (unmapping, sealing, mapping) can exceed a copy's; so this measures them too, and a
//! strong share of a buffer never shared copies up to the size where sealing starts to pay
//! ([`SHARE_COPY_LIMIT`] at most).

use std::time::{Duration, Instant};

use cosh_proto::ops::{MAX_INLINE, SmallTransfers};

/// The largest strong share that copies rather than seals, whatever was measured: above it
/// a strong share never doubles the memory its bytes take.
pub const SHARE_COPY_LIMIT: u64 = 64 << 20;

/// The size at which a large copy is measured: beyond most caches, as the large buffers
/// that strong shares carry are.
const LARGE: usize = 8 << 20;
use cosh_ring::Doorbell;
use cosh_sys::cpu;
use cosh_sys::mapping::Prefault;
use cosh_sys::memfd::Memfd;

/// What was measured, in nanoseconds (medians).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Measured {
    /// One KiB through a direct ring's staging area: copied in from a buffer, copied out
    /// into another.
    pub(crate) ring_ns_per_kib: u64,
    /// A sleeping thread woken by another: from the wake to its running.
    pub(crate) handoff_ns: u64,
    /// Mapping a 4 KiB buffer never mapped before, touching it, dropping it.
    pub(crate) map_ns: u64,
    /// The same per MiB more.
    pub(crate) map_ns_per_mib: u64,
    /// One MiB copied between two buffers of [`LARGE`] bytes.
    pub(crate) copy_ns_per_mib: u64,
    /// One MiB of a buffer its writer filled: dropping the writable mapping, then sealing.
    pub(crate) seal_ns_per_mib: u64,
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn elapsed_ns(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Measures (40–50 ms here). Errors from the system (no memfd, no mapping) are reported
/// to the caller, which then keeps inline transfers off.
pub(crate) fn measure() -> Result<Measured, String> {
    let e = |x: cosh_sys::Error| x.to_string();
    let size = MAX_INLINE as usize;
    // The staging area: shared memory the sender copies into and the receiver out of.
    let staging = Memfd::create("cosh-measure", size as u64).map_err(e)?;
    let mut map = staging.map_write(Prefault::Now).map_err(e)?;
    let source: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut landing = vec![0u8; size];
    let mut ring_ns = Vec::new();
    for _ in 0..12 {
        let t0 = Instant::now();
        map.as_mut_slice().copy_from_slice(&source);
        landing.copy_from_slice(map.as_slice());
        ring_ns.push(elapsed_ns(t0));
        std::hint::black_box(&mut landing);
    }
    let ring_ns_per_kib = median(ring_ns) / (size as u64 / 1024).max(1);

    // A wake-up: a thread asleep on a futex, woken by this one, which then keeps its core
    // busy (as a sender goes on with its work), so the sleeper runs where it can: another
    // core, as the receiver of a transfer does. Where two CPUs are allowed, the two threads
    // are held on two different ones while they measure (the scheduler could otherwise put
    // both on one, and a wake-up on one core costs a fraction of one across cores).
    // Best effort: a measurement, not a requirement.
    let cpus = cpu::first_two();
    let restore = cpu::allowed();
    if let Some((mine, _)) = cpus {
        let _ = cpu::pin(mine);
    }
    let word = std::sync::Arc::new(cosh_ring::AtomicU32::new(0));
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let base = Instant::now();
    let sleeper = {
        let (word, seen) = (word.clone(), seen.clone());
        std::thread::spawn(move || {
            if let Some((_, theirs)) = cpus {
                let _ = cpu::pin(theirs);
            }
            let mut expected = 0;
            loop {
                while word.load(std::sync::atomic::Ordering::Acquire) == expected {
                    cosh_ring::Futex.wait(&word, expected, Some(Duration::from_millis(100)));
                }
                expected = word.load(std::sync::atomic::Ordering::Acquire);
                seen.store(elapsed_ns(base), std::sync::atomic::Ordering::Release);
                if expected == u32::MAX {
                    return;
                }
            }
        })
    };
    let mut wakes = Vec::new();
    for round in 1..=24u32 {
        // Long enough for the sleeper to be asleep, not spinning.
        std::thread::sleep(Duration::from_micros(300));
        seen.store(0, std::sync::atomic::Ordering::Release);
        let t0 = elapsed_ns(base);
        word.store(round, std::sync::atomic::Ordering::Release);
        cosh_ring::Futex.wake(&word);
        let deadline = Instant::now() + Duration::from_millis(50);
        let at = loop {
            let at = seen.load(std::sync::atomic::Ordering::Acquire);
            if at != 0 || Instant::now() > deadline {
                break at;
            }
            std::hint::spin_loop();
        };
        if at > t0 {
            wakes.push(at - t0);
        }
    }
    word.store(u32::MAX, std::sync::atomic::Ordering::Release);
    cosh_ring::Futex.wake(&word);
    let _ = sleeper.join();
    if let Some(set) = restore {
        cpu::restore(&set);
    }
    let handoff_ns = median(wakes);

    // Mapping a buffer never mapped before (its pages exist), touching every page, as a
    // receiver's library maps it (faulted in on first touch).
    let map_cost = |len: u64| -> Result<u64, String> {
        let mut times = Vec::new();
        for _ in 0..5 {
            let m = Memfd::create("cosh-measure", len).map_err(e)?;
            m.map_write(Prefault::Now)
                .map_err(e)?
                .as_mut_slice()
                .fill(1);
            let t0 = Instant::now();
            let r = m.map_read(Prefault::OnFirstTouch).map_err(e)?;
            let sum: u64 = r
                .as_slice()
                .iter()
                .step_by(4096)
                .map(|b| u64::from(*b))
                .sum();
            std::hint::black_box(sum);
            drop(r);
            times.push(elapsed_ns(t0));
        }
        Ok(median(times))
    };
    let map_ns = map_cost(4096)?;
    let map_mib = map_cost(1 << 20)?;

    // A writer's mapping of a buffer it filled, dropped; then the seal.
    let mut seals = Vec::new();
    for _ in 0..5 {
        let m = Memfd::create("cosh-measure", 1 << 20).map_err(e)?;
        let mut w = m.map_write(Prefault::Now).map_err(e)?;
        w.as_mut_slice().fill(3);
        let t0 = Instant::now();
        drop(w);
        m.seal_write().map_err(e)?;
        seals.push(elapsed_ns(t0));
    }
    let seal_ns_per_mib = median(seals);

    // The block manager's copy of a large buffer into one the receiver maps.
    let from = Memfd::create("cosh-measure", LARGE as u64).map_err(e)?;
    let into = Memfd::create("cosh-measure", LARGE as u64).map_err(e)?;
    let mut from_map = from.map_write(Prefault::Now).map_err(e)?;
    from_map.as_mut_slice().fill(5);
    let mut into_map = into.map_write(Prefault::Now).map_err(e)?;
    let mut large = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        into_map.as_mut_slice().copy_from_slice(from_map.as_slice());
        large.push(elapsed_ns(t0));
    }
    let copy_ns_per_mib = median(large) / (LARGE as u64 >> 20);
    Ok(Measured {
        ring_ns_per_kib,
        handoff_ns,
        map_ns,
        map_ns_per_mib: map_mib.saturating_sub(map_ns),
        copy_ns_per_mib,
        seal_ns_per_mib,
    })
}

/// The largest power of two from `from` to `limit` at which `this` costs no more than
/// `other` (0 if none).
fn crossover(from: u64, limit: u64, this: impl Fn(u64) -> u64, other: impl Fn(u64) -> u64) -> u64 {
    let mut best = 0;
    let mut size = from;
    while size <= limit {
        if this(size) <= other(size) {
            best = size;
        }
        size *= 2;
    }
    best
}

/// `ns` nanoseconds per MiB, for `bytes`.
fn per_mib(ns: u64, bytes: u64) -> u64 {
    u64::try_from((u128::from(ns) * u128::from(bytes)) >> 20).unwrap_or(u64::MAX)
}

/// The policy for what was measured: inline below the sizes where the ring's copies cost as
/// much as the other way (a strong transfer: one more wake-up and the block manager's copy; a
/// weak one: the receiver's round trip for the descriptor and its mapping), at most `limit`.
///
/// The ring's two copies are priced as measured, within the caches: the sender copies what it
/// just wrote, the receiver into a landing it reuses. The block manager's copy is priced as
/// one of a buffer larger than the caches: it reads the sender's bytes from another core's
/// caches and writes a buffer of the receiver's pool that none of the three touched lately.
/// Priced as a memcpy within the caches instead, the crossover came out at 512 KiB here,
/// where a strong move of 1 MiB through the block manager took 207 µs to a receiver blocked
/// in `receive` and 100 µs inline, and a stream of them 146 µs a transfer against 65 µs
/// (`cosh bench fig2a`).
///
/// A strong share of a buffer never shared copies, up to the largest power of two at most
/// [`SHARE_COPY_LIMIT`] where the block manager's copy costs no more than sealing by
/// reference does: the sender's unmapping and the seal, the seal worker's two hand-offs, and
/// the receiver's mapping.
pub(crate) fn choose(m: &Measured, limit: u64) -> SmallTransfers {
    let ring = |size: u64| m.ring_ns_per_kib.saturating_mul(size) / 1024;
    let inline_max = crossover(256, limit, ring, |size| {
        m.handoff_ns
            .saturating_add(per_mib(m.copy_ns_per_mib, size))
    });
    let inline_max_weak = crossover(256, limit, ring, |size| {
        m.handoff_ns + m.map_ns + per_mib(m.map_ns_per_mib, size)
    });
    let share_copy_max = crossover(
        4096,
        SHARE_COPY_LIMIT,
        |size| per_mib(m.copy_ns_per_mib, size),
        |size| {
            2 * m.handoff_ns
                + m.map_ns
                + per_mib(m.seal_ns_per_mib.saturating_add(m.map_ns_per_mib), size)
        },
    );
    SmallTransfers {
        inline_max,
        inline_max_weak,
        ring_ns_per_kib: m.ring_ns_per_kib,
        handoff_ns: m.handoff_ns,
        map_ns: m.map_ns,
        map_ns_per_mib: m.map_ns_per_mib,
        fixed: false,
        share_copy_max,
        copy_ns_per_mib: m.copy_ns_per_mib,
        seal_ns_per_mib: m.seal_ns_per_mib,
        share_fixed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_wins_below_the_crossover_and_loses_above() {
        // 100 ns per KiB through the ring; the other way 5 µs plus 10 ns per KiB: they cross
        // at about 55 KiB, so 32 KiB is the largest power of two that wins.
        let m = Measured {
            ring_ns_per_kib: 100,
            handoff_ns: 5_000,
            copy_ns_per_mib: 10 * 1024,
            map_ns: 0,
            map_ns_per_mib: 0,
            seal_ns_per_mib: 0,
        };
        let p = choose(&m, 1 << 20);
        assert_eq!(p.inline_max, 32 * 1024);
        // Weak: 5 µs and no mapping cost: about the same crossing (the copy adds little).
        assert_eq!(p.inline_max_weak, 32 * 1024);
        // A ring as slow as the other way at 256 bytes: never inline.
        let slow = Measured {
            ring_ns_per_kib: 1_000_000,
            ..m
        };
        assert_eq!(choose(&slow, 1 << 20).inline_max, 0);
        // Never past the limit.
        assert_eq!(choose(&m, 4096).inline_max, 4096);
    }

    #[test]
    fn a_strong_share_copies_up_to_where_sealing_starts_to_pay() {
        let base = Measured {
            ring_ns_per_kib: 100,
            handoff_ns: 10_000,
            map_ns: 5_000,
            map_ns_per_mib: 100_000,
            copy_ns_per_mib: 100_000,
            seal_ns_per_mib: 80_000,
        };
        // Copying costs less per MiB than unmapping, sealing and mapping: up to the limit.
        assert_eq!(choose(&base, 1 << 20).share_copy_max, SHARE_COPY_LIMIT);
        // Copying costs 400 µs/MiB, sealing 25 µs plus 180 µs/MiB: they cross at about
        // 0.11 MiB, so 64 KiB is the largest power of two that copies.
        let slow_copy = Measured {
            copy_ns_per_mib: 400_000,
            ..base
        };
        assert_eq!(choose(&slow_copy, 1 << 20).share_copy_max, 64 << 10);
        // Free sealing: a copy never pays.
        let free_seal = Measured {
            handoff_ns: 0,
            map_ns: 0,
            map_ns_per_mib: 0,
            seal_ns_per_mib: 0,
            ..base
        };
        assert_eq!(choose(&free_seal, 1 << 20).share_copy_max, 0);
    }

    #[test]
    fn measuring_gives_a_policy_within_the_limit() {
        let m = measure().expect("measure");
        assert!(m.ring_ns_per_kib > 0 && m.handoff_ns > 0, "{m:?}");
        let p = choose(&m, MAX_INLINE);
        eprintln!("{m:?} {p:?}");
        assert!(
            p.inline_max <= MAX_INLINE && p.inline_max_weak <= MAX_INLINE,
            "{p:?}"
        );
        assert!(m.copy_ns_per_mib > 0 && m.seal_ns_per_mib > 0, "{m:?}");
        assert!(p.share_copy_max <= SHARE_COPY_LIMIT, "{p:?}");
    }
}
