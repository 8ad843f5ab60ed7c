//! The conformance suite on every pool, and on every ordered pair of pools.

use cosh_pool::Pool;
use cosh_pool::conformance::{self, Link};
use cosh_pool::device::DevicePool;
use cosh_pool::host::HostPool;
use cosh_pool::nc::{Eviction, NcPool};

/// Makes a pool with fresh state.
type Make = Box<dyn Fn() -> Box<dyn Pool>>;

/// Every pool to test: its name and a constructor.
fn pools() -> Vec<(&'static str, Make)> {
    vec![
        ("host", Box::new(|| Box::new(HostPool::new()))),
        ("device", Box::new(|| Box::new(DevicePool::new()))),
        ("nc", Box::new(|| Box::new(NcPool::new()))),
        (
            "nc with random eviction",
            Box::new(|| {
                Box::new(NcPool::with_eviction(Eviction {
                    seed: 0x5eed,
                    one_in: 7,
                }))
            }),
        ),
    ]
}

fn passes(a: &dyn Pool, b: &dyn Pool, link: Link, what: &str) {
    let results = conformance::run(a, b, link);
    assert_eq!(results.len(), conformance::CASES.len());
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|(case, r)| r.err().map(|why| format!("{what}, {case}: {why}")))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn every_pool_passes_by_reference_and_by_copy() {
    for (name, make) in pools() {
        let pool = make();
        passes(pool.as_ref(), pool.as_ref(), Link::Shared, name);
        passes(pool.as_ref(), pool.as_ref(), Link::Engine, name);
    }
}

#[test]
fn every_ordered_pair_of_pools_passes_through_the_copy_engine() {
    let all = pools();
    for (from, make_from) in &all {
        for (to, make_to) in &all {
            let (a, b) = (make_from(), make_to());
            passes(
                a.as_ref(),
                b.as_ref(),
                Link::Engine,
                &format!("{from} -> {to}"),
            );
        }
    }
}

#[test]
fn eviction_seeds_do_not_matter_to_a_correct_program() {
    for seed in 0..20u64 {
        let pool = NcPool::with_eviction(Eviction { seed, one_in: 3 });
        passes(&pool, &pool, Link::Shared, &format!("seed {seed}"));
    }
}

/// A pool whose windows skip part of the protocol: the suite must catch it on a non-coherent
/// pool, and cannot on a coherent one.
struct Skipping<P> {
    inner: P,
    flush: bool,
    invalidate: bool,
}

struct SkippingWindow {
    inner: Box<dyn cosh_pool::Window>,
    flush: bool,
    invalidate: bool,
}

impl cosh_pool::Window for SkippingWindow {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read(&mut self, offset: u64, out: &mut [u8]) -> cosh_pool::Result<()> {
        self.inner.read(offset, out)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> cosh_pool::Result<()> {
        self.inner.write(offset, data)
    }
    fn flush(&mut self) -> cosh_pool::Result<()> {
        if self.flush {
            self.inner.flush()
        } else {
            Ok(())
        }
    }
    fn invalidate(&mut self) -> cosh_pool::Result<()> {
        if self.invalidate {
            self.inner.invalidate()
        } else {
            Ok(())
        }
    }
    fn dirty_lines(&mut self) -> Vec<u64> {
        self.inner.dirty_lines()
    }
    fn stale_lines(&mut self) -> Vec<u64> {
        self.inner.stale_lines()
    }
}

impl<P: Pool> Pool for Skipping<P> {
    fn kind(&self) -> cosh_pool::PoolKind {
        self.inner.kind()
    }
    fn create(&self, len: u64) -> cosh_pool::Result<cosh_pool::Buffer> {
        self.inner.create(len)
    }
    fn window(&self, buffer: &cosh_pool::Buffer) -> cosh_pool::Result<Box<dyn cosh_pool::Window>> {
        Ok(Box::new(SkippingWindow {
            inner: self.inner.window(buffer)?,
            flush: self.flush,
            invalidate: self.invalidate,
        }))
    }
}

fn failures(pool: &dyn Pool) -> Vec<&'static str> {
    conformance::run(pool, pool, Link::Shared)
        .into_iter()
        .filter(|(_, r)| r.is_err())
        .map(|(case, _)| case)
        .collect()
}

#[test]
fn the_suite_catches_a_skipped_flush_or_invalidate_on_a_non_coherent_pool_only() {
    let no_flush = Skipping {
        inner: NcPool::new(),
        flush: false,
        invalidate: true,
    };
    let caught = failures(&no_flush);
    assert!(caught.contains(&"bytes_arrive"), "{caught:?}");
    let no_invalidate = Skipping {
        inner: NcPool::new(),
        flush: true,
        invalidate: false,
    };
    let caught = failures(&no_invalidate);
    assert!(
        caught.contains(&"a_receiver_that_looked_before_sees_the_new_bytes"),
        "{caught:?}"
    );
    assert!(caught.contains(&"ownership_round_trip"), "{caught:?}");
    // Coherent memory forgives both.
    let careless = Skipping {
        inner: HostPool::new(),
        flush: false,
        invalidate: false,
    };
    assert!(failures(&careless).is_empty());
}
