//! Micro-benchmarks of select, concat and iteration over aggregates of 1 to 10,000 chunks,
//! on bare chunk lists and through the ledger (which also keeps holdings and related groups),
//! and of a whole transfer cycle through the ledger.
//!
//! `cargo bench -p cosh-core --bench aggregate`

// criterion_group! generates public functions without documentation.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use cosh_core::ledger::{Ledger, Policy, TransferRequest};
use cosh_core::{Access, AggId, BufferId, Chunk, ChunkList, DomainId, Mode, PoolId, TransferFlags};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const SIZES: [u64; 5] = [1, 10, 100, 1_000, 10_000];
const CHUNK: u64 = 4096;

/// A list of `n` chunks of 4 KiB that never merge (every other 4 KiB of 64 buffers).
fn list(n: u64) -> ChunkList {
    ChunkList::from_chunks((0..n).map(|i| Chunk {
        buffer: BufferId(i % 64),
        offset: (i / 64) * 2 * CHUNK,
        len: CHUNK,
    }))
}

/// A ledger holding one aggregate of `n` non-merging chunks, built with select and concat.
fn ledger(n: u64) -> (Ledger, DomainId, AggId) {
    let mut l = Ledger::new(Policy::by_reference());
    let d = l.add_domain(PoolId(0));
    let x = l.alloc(d, 2 * CHUNK * n).expect("alloc").agg;
    let mut agg = l.select(d, x, 0, CHUNK).expect("select");
    // Doubling keeps construction O(n log n): concat the aggregate with a shifted copy of
    // itself made from fresh selects.
    let mut have = 1;
    while have < n {
        let take = have.min(n - have);
        let mut more = l.select(d, x, 2 * CHUNK * have, CHUNK).expect("select");
        for i in 1..take {
            let piece = l
                .select(d, x, 2 * CHUNK * (have + i), CHUNK)
                .expect("select");
            more = l.concat(d, more, piece).expect("concat");
        }
        agg = l.concat(d, agg, more).expect("concat");
        have += take;
    }
    assert_eq!(l.chunks(d, agg).expect("chunks").chunks().len() as u64, n);
    (l, d, agg)
}

fn chunk_lists(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunk_list");
    for n in SIZES {
        let l = list(n);
        let len = l.len();
        g.bench_with_input(BenchmarkId::new("select_half", n), &l, |b, l| {
            b.iter(|| black_box(l.select(len / 4, len / 2).expect("in range")))
        });
        g.bench_with_input(BenchmarkId::new("select_one_byte", n), &l, |b, l| {
            b.iter(|| black_box(l.select(black_box(len / 2), 1).expect("in range")))
        });
        g.bench_with_input(BenchmarkId::new("concat", n), &l, |b, l| {
            b.iter(|| black_box(l.concat(l).expect("fits")))
        });
        g.bench_with_input(BenchmarkId::new("iterate", n), &l, |b, l| {
            b.iter(|| {
                l.pieces_from(0)
                    .expect("in range")
                    .map(|p| p.len)
                    .sum::<u64>()
            })
        });
    }
    g.finish();
}

fn through_the_ledger(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger");
    for n in SIZES {
        let (l, d, agg) = ledger(n);
        let len = l.len(d, agg).expect("len");
        g.bench_function(BenchmarkId::new("select_half_and_drop", n), |b| {
            let mut l = l.clone();
            b.iter(|| {
                let s = l.select(d, agg, len / 4, len / 2).expect("select");
                l.decref(d, s).expect("decref");
            })
        });
        g.bench_function(BenchmarkId::new("concat_and_drop", n), |b| {
            let mut l = l.clone();
            b.iter(|| {
                let s = l.concat(d, agg, agg).expect("concat");
                l.decref(d, s).expect("decref");
            })
        });
        g.bench_function(BenchmarkId::new("iterate", n), |b| {
            b.iter(|| black_box(l.pieces(d, agg, Access::Read, 0).expect("pieces").len()))
        });
    }
    g.finish();
}

/// A whole transfer cycle through the ledger (alloc, plan, commit, receive, both decrefs)
/// while the sender holds `n` other aggregates: its cost must not grow with `n`.
fn transfer_cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger_transfer_cycle");
    for n in SIZES {
        for mode in [Mode::Move, Mode::Share, Mode::Copy] {
            let mut l = Ledger::new(Policy::by_reference());
            let a = l.add_domain(PoolId(0));
            let b = l.add_domain(PoolId(0));
            for _ in 0..n {
                l.alloc(a, CHUNK).expect("alloc");
            }
            g.bench_function(BenchmarkId::new(mode.name(), n), |bench| {
                bench.iter(|| {
                    let x = l.alloc(a, 16 * CHUNK).expect("alloc").agg;
                    let plan = l
                        .plan_transfer(TransferRequest::new(a, x, b, mode, TransferFlags::strong()))
                        .expect("plan");
                    l.commit(plan).expect("commit");
                    let y = l.receive(b, Some(a)).expect("receive").agg;
                    l.decref(b, y).expect("decref");
                    l.decref(a, x).expect("decref");
                })
            });
        }
    }
    g.finish();
}

/// What the block manager does per round trip of a buffer bounced on direct rings between
/// two domains that trust each other: apply a weak move each way and free each moved-away
/// handle (four records), while each domain holds `n` other aggregates.
fn direct_cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger_direct_round_trip");
    for n in SIZES {
        let mut l = Ledger::new(Policy::linux_host());
        let a = l.add_domain(PoolId(0));
        let b = l.add_domain(PoolId(0));
        l.trust(a, b).expect("trust");
        l.trust(b, a).expect("trust");
        for _ in 0..n {
            l.alloc(a, CHUNK).expect("alloc");
            l.alloc(b, CHUNK).expect("alloc");
        }
        let mut x = l.alloc(a, 16 * CHUNK).expect("alloc").agg;
        // Each side names what it sends from a lease of ids, leased again when used up, as
        // a domain's library does (criterion may run more iterations than one lease holds).
        let next_id = |l: &mut Ledger, d: DomainId| {
            let next = match l.lease_left(d).expect("a domain") {
                (next, left) if left > 0 => next,
                _ => l.lease_ids(d, 1 << 16).expect("lease"),
            };
            AggId(next)
        };
        g.bench_function(BenchmarkId::from_parameter(n), |bench| {
            bench.iter(|| {
                let y = next_id(&mut l, a);
                l.transfer_direct(a, x, b, Mode::Move, y).expect("a to b");
                l.decref(a, x).expect("a drops its handle");
                x = next_id(&mut l, b);
                l.transfer_direct(b, y, a, Mode::Move, x).expect("b to a");
                l.decref(b, y).expect("b drops its handle");
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = chunk_lists, through_the_ledger, transfer_cycle, direct_cycle
}
criterion_main!(benches);
