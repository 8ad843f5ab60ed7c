//! The copy engine's pipelined throughput against memcpy into a prefaulted buffer, and what a
//! window's word-by-word access costs next to a plain copy.
//!
//! `cargo bench -p cosh-pool --bench engine`

// criterion_group! generates public functions without documentation.
#![allow(missing_docs)]

use std::hint::black_box;

use cosh_pool::Pool;
use cosh_pool::engine::CopyEngine;
use cosh_pool::host::HostPool;
use cosh_pool::nc::NcPool;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [u64; 3] = [64 << 10, 1 << 20, 16 << 20];
/// Jobs in flight at once in the pipelined case.
const DEPTH: usize = 4;

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.sample_size(20);
    let host = HostPool::new();
    let nc = NcPool::new();
    let engine = CopyEngine::new(None);
    for len in SIZES {
        g.throughput(Throughput::Bytes(len));
        let src: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut dst = vec![1u8; len as usize];
        g.bench_function(BenchmarkId::new("memcpy_prefaulted", len), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            })
        });

        for (name, to) in [("host_to_host", &host as &dyn Pool), ("host_to_nc", &nc)] {
            let sources: Vec<_> = (0..DEPTH)
                .map(|_| {
                    let b = host.create(len).expect("create");
                    let mut w = host.window(&b).expect("window");
                    w.write(0, &src).expect("write");
                    b
                })
                .collect();
            let targets: Vec<_> = (0..DEPTH)
                .map(|_| to.create(len).expect("create"))
                .collect();
            // DEPTH jobs queued, then all waited for: the time per byte of a full pipeline.
            g.throughput(Throughput::Bytes(len * DEPTH as u64));
            g.bench_function(
                BenchmarkId::new(format!("engine_{name}_x{DEPTH}"), len),
                |b| {
                    b.iter(|| {
                        let jobs: Vec<_> = sources
                            .iter()
                            .zip(&targets)
                            .map(|(s, t)| engine.submit(&host, s, to, t).expect("submit"))
                            .collect();
                        for j in jobs {
                            black_box(j.wait().expect("copy"));
                        }
                    })
                },
            );
            g.throughput(Throughput::Bytes(len));
        }

        let buffer = host.create(len).expect("create");
        let mut w = host.window(&buffer).expect("window");
        g.bench_function(BenchmarkId::new("window_write", len), |b| {
            b.iter(|| w.write(0, black_box(&src)).expect("write"))
        });
    }
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
