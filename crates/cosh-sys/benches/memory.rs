//! The memory costs the block manager's design rests on (DESIGN §2), measured through this
//! crate's wrappers: copying into a prefaulted buffer versus a fresh one, mapping an existing
//! buffer, and sealing one.
//!
//! `cargo bench -p cosh-sys --bench memory`

// criterion_group! generates public functions without documentation.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use cosh_sys::mapping::Prefault;
use cosh_sys::memfd::Memfd;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [u64; 4] = [4 << 10, 64 << 10, 1 << 20, 16 << 20];

fn filled(len: u64) -> Memfd {
    let m = Memfd::create("source", len).expect("create");
    m.map_write(Prefault::Now)
        .expect("map")
        .as_mut_slice()
        .fill(0x5A);
    m
}

fn memory(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory");
    for len in SIZES {
        g.throughput(Throughput::Bytes(len));
        let source = filled(len);
        let src = source.map_read(Prefault::Now).expect("map");

        // The hot path the design wants: copy into a buffer whose pages are already there.
        let dest = filled(len);
        let mut dst = dest.map_write(Prefault::Now).expect("map");
        g.bench_function(BenchmarkId::new("copy_into_prefaulted", len), |b| {
            b.iter(|| {
                dst.as_mut_slice()
                    .copy_from_slice(black_box(src.as_slice()))
            })
        });

        // What the design avoids: a fresh buffer, its pages faulted in by the copy.
        g.bench_function(BenchmarkId::new("copy_into_fresh_buffer", len), |b| {
            b.iter(|| {
                let fresh = Memfd::create("fresh", len).expect("create");
                let mut w = fresh.map_write(Prefault::OnFirstTouch).expect("map");
                w.as_mut_slice().copy_from_slice(src.as_slice());
                black_box(&w);
            })
        });

        // Remapping instead of copying: map an existing buffer (pages populated), unmap.
        g.bench_function(BenchmarkId::new("map_existing_populated", len), |b| {
            b.iter(|| black_box(dest.map_read(Prefault::Now).expect("map")))
        });

        // A strong share by reference: seal a filled buffer nobody maps writable any more
        // (preparing the buffer is not timed).
        g.bench_function(BenchmarkId::new("seal_write", len), |b| {
            b.iter_batched(
                || filled(len),
                |m| {
                    m.seal_write().expect("seal");
                    m
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = memory
}
criterion_main!(benches);
