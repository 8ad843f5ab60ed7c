//! The copy engine copies between every pair of pools, in order, while the submitter goes on;
//! a DMA model never lets a job finish before its modelled time, and says it was on.

use std::time::Duration;

use cosh_pool::conformance::pattern;
use cosh_pool::engine::{CopyEngine, DmaModel};
use cosh_pool::host::HostPool;
use cosh_pool::nc::NcPool;
use cosh_pool::{Pool, Window};

fn read_all(w: &mut dyn Window) -> Vec<u8> {
    let mut out = vec![0u8; w.len() as usize];
    w.read(0, &mut out).expect("read");
    out
}

#[test]
fn queued_copies_between_every_pair_of_pools_arrive_whole() {
    let pools: [Box<dyn Pool>; 2] = [Box::new(HostPool::new()), Box::new(NcPool::new())];
    let engine = CopyEngine::new(None);
    for from in &pools {
        for to in &pools {
            // Many jobs queued before the first is waited for.
            let mut pending = Vec::new();
            for (i, len) in [0u64, 1, 63, 64, 65, 4096, 300_000, 1 << 20]
                .into_iter()
                .enumerate()
            {
                let source = from.create(len).expect("create");
                let mut w = from.window(&source).expect("window");
                let data = pattern(len as usize, i as u64);
                w.write(0, &data).expect("write");
                w.flush()
                    .expect("the sender flushes before the engine reads");
                let target = to.create(len).expect("create");
                let job = engine
                    .submit(from.as_ref(), &source, to.as_ref(), &target)
                    .expect("submit");
                pending.push((job, target, data));
            }
            for (job, target, data) in pending {
                let done = job.wait().expect("copied");
                assert_eq!(done.bytes, data.len() as u64);
                assert!(!done.emulated);
                let mut w = to.window(&target).expect("window");
                w.invalidate().expect("the receiver invalidates");
                assert_eq!(
                    read_all(w.as_mut()),
                    data,
                    "{} -> {}",
                    from.kind(),
                    to.kind()
                );
            }
        }
    }
}

#[test]
fn a_target_shorter_than_the_source_is_refused() {
    let pool = HostPool::new();
    let engine = CopyEngine::new(None);
    let (source, target) = (
        pool.create(100).expect("create"),
        pool.create(99).expect("create"),
    );
    assert!(engine.submit(&pool, &source, &pool, &target).is_err());
}

#[test]
fn the_dma_model_paces_jobs_and_says_so() {
    let model = DmaModel {
        setup: Duration::from_millis(3),
        bytes_per_second: 100 << 20,
    };
    let engine = CopyEngine::new(Some(model));
    let pool = HostPool::new();
    let len = 1u64 << 20;
    let jobs: Vec<_> = (0..3)
        .map(|_| {
            let (s, t) = (
                pool.create(len).expect("create"),
                pool.create(len).expect("create"),
            );
            engine.submit(&pool, &s, &pool, &t).expect("submit")
        })
        .collect();
    let transfer = Duration::from_micros(10_000); // 1 MiB at 100 MiB/s
    for (i, job) in jobs.into_iter().enumerate() {
        let done = job.wait().expect("copied");
        assert!(done.emulated, "a modelled job says so");
        // Never earlier than the model: set-up, then this and every earlier transfer.
        let floor = model.setup + transfer * (i as u32 + 1);
        assert!(
            done.latency >= floor,
            "job {i}: {:?} < {floor:?}",
            done.latency
        );
    }
}

#[test]
fn a_copy_into_a_longer_target_leaves_the_rest_alone_and_a_buffer_cannot_copy_onto_itself() {
    let pool = HostPool::new();
    let engine = CopyEngine::new(None);
    let source = pool.create(13).expect("create");
    let mut w = pool.window(&source).expect("window");
    w.write(0, &[9; 13]).expect("write");
    let target = pool.create(200).expect("create");
    let mut t = pool.window(&target).expect("window");
    t.write(0, &[5; 200]).expect("write");
    engine
        .submit(&pool, &source, &pool, &target)
        .expect("submit")
        .wait()
        .expect("copied");
    let got = read_all(t.as_mut());
    assert_eq!(&got[..13], &[9; 13]);
    assert_eq!(
        &got[13..],
        &[5; 187][..],
        "bytes past the source's length are untouched"
    );
    let err = engine
        .submit(&pool, &source, &pool, &source)
        .expect("submit")
        .wait()
        .expect_err("onto itself");
    assert!(err.to_string().contains("two different buffers"), "{err}");
}
