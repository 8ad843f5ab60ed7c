//! Load: 64 clients at once, in a ring (each sends to the next and receives from the one
//! before), every one making the same number of transfers in its own mode (move, share or
//! copy, strong or weak) and size (256 B to 64 KiB), each aggregate stamped and checked in
//! full on arrival. The block manager's memory stays bounded throughout: its resident set and
//! the pool's bytes are sampled every 20 ms.
//!
//! CI runs 500 transfers per client (32,000 in all); `COSH_HEAVY_TESTS=1` (or
//! `COSH_TEST_SCALE=20`) runs the 10,000 per client (640,000) of the reliability figures.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cosh::{Domain, Mode, TransferFlags, pattern};
use support::Daemon;

const CLIENTS: usize = 64;

/// The daemon's resident set, in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

#[test]
fn sixty_four_clients_transfer_at_once_with_bounded_memory() {
    let per_client = 500 * support::scale_or_heavy(20);
    let daemon = Daemon::start("load");
    let pid = daemon.child.id();
    let mut domains: Vec<Domain> = (0..CLIENTS)
        .map(|i| daemon.connect(&format!("load{i}")))
        .collect();
    let ids: Vec<_> = domains.iter().map(Domain::id).collect();
    // Weak transfers need the receiver's trust.
    for (i, d) in domains.iter_mut().enumerate() {
        let from = ids[(i + CLIENTS - 1) % CLIENTS];
        d.trust(from).expect("trust");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (peak_rss, peak_pool) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let monitor = {
        let (stop, peak_rss, peak_pool) = (stop.clone(), peak_rss.clone(), peak_pool.clone());
        let mut watcher = daemon.connect("watcher");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak_rss.fetch_max(rss(pid), Ordering::Relaxed);
                if let Ok(s) = watcher.status() {
                    peak_pool.fetch_max(s.pool_bytes, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let workers: Vec<_> = domains
        .into_iter()
        .enumerate()
        .map(|(i, mut d)| {
            let next = ids[(i + 1) % CLIENTS];
            let prev = ids[(i + CLIENTS - 1) % CLIENTS];
            let mode = [Mode::Move, Mode::Share, Mode::Copy][i % 3];
            let flags = if (i / 3) % 2 == 0 {
                TransferFlags::strong()
            } else {
                TransferFlags::weak()
            };
            let len = [256u64, 4096, 16384, 65536][(i / 6) % 4];
            std::thread::spawn(move || -> Result<u64, String> {
                let fail = |what: &str, n: u64, e: cosh::Error| {
                    format!("client {i} ({mode:?} {len} B), {what} {n}: {e}")
                };
                let mut bad = 0;
                for n in 0..per_client {
                    let agg = d.alloc(len).map_err(|e| fail("alloc", n, e))?;
                    pattern::stamp(&mut d, agg, n).map_err(|e| fail("stamp", n, e))?;
                    d.transfer(agg, next, mode, flags)
                        .map_err(|e| fail("transfer", n, e))?;
                    d.decref(agg).map_err(|e| fail("decref", n, e))?;
                    let got = d
                        .receive(Some(prev), Some(Duration::from_secs(60)))
                        .map_err(|e| fail("receive", n, e))?;
                    if !pattern::verify(&mut d, got.agg).map_err(|e| fail("verify", n, e))? {
                        bad += 1;
                    }
                    d.decref(got.agg).map_err(|e| fail("decref", n, e))?;
                }
                Ok(bad)
            })
        })
        .collect();
    let mut corrupt = 0;
    let mut failures = Vec::new();
    for w in workers {
        match w.join().expect("no panic") {
            Ok(bad) => corrupt += bad,
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    monitor.join().expect("monitor");
    assert_eq!(corrupt, 0, "aggregates arrived corrupt");
    let total = per_client * CLIENTS as u64;
    let (rss_peak, pool_peak) = (
        peak_rss.load(Ordering::Relaxed),
        peak_pool.load(Ordering::Relaxed),
    );
    eprintln!(
        "{CLIENTS} clients x {per_client} transfers = {total} in {:.1} s ({:.0} transfers/s); \
         block manager peak resident {:.1} MiB, pool peak {:.1} MiB",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        rss_peak as f64 / 1048576.0,
        pool_peak as f64 / 1048576.0
    );
    // Bounded: each client has at most one transfer in flight and a few recycled buffers.
    assert!(pool_peak < 256 << 20, "pool grew to {pool_peak} bytes");
    assert!(
        rss_peak < 512 << 20,
        "the block manager grew to {rss_peak} bytes"
    );
    // And everything is back once the clients are gone.
    let mut observer = daemon.connect("observer");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = observer.status().expect("status");
        if s.buffers == 0 || Instant::now() > deadline {
            assert_eq!((s.domain_count, s.buffers), (1, 0), "{s:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
