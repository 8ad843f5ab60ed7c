//! Small allocations packed into one buffer (a slab) stay strongly private and independent:
//! the ledger refuses to place a new allocation in a buffer anyone else can see, and a
//! transfer of one slab allocation never exposes its neighbours.

use cosh_core::ledger::{Ledger, Policy, Route, TransferRequest};
use cosh_core::{Mode, PoolId, Rights, TransferFlags};

fn ledger(policy: Policy) -> (Ledger, cosh_core::DomainId, cosh_core::DomainId) {
    let mut l = Ledger::new(policy);
    let a = l.add_domain(PoolId(0));
    let b = l.add_domain(PoolId(0));
    (l, a, b)
}

fn check(l: &Ledger) {
    l.check_invariants().expect("ledger invariants");
}

#[test]
fn allocations_share_a_slab_until_it_is_seen_by_anyone_else() {
    let (mut l, a, b) = ledger(Policy::by_reference());
    let first = l.alloc_with_capacity(a, 100, 65536).expect("slab");
    let slab = first.buffer.expect("a buffer").id;
    assert_eq!(l.buffer_len(slab), Some(65536));
    assert_eq!(l.len(a, first.agg).expect("len"), 100);
    let second = l.alloc_in(a, slab, 128, 200).expect("ok").expect("placed");
    assert_ne!(second, first.agg);
    assert!(
        l.find_related(a, second, Rights::None)
            .expect("related")
            .is_empty(),
        "slab neighbours are not related"
    );
    check(&l);
    // Out of range, zero-length, or another domain: refused.
    assert_eq!(l.alloc_in(a, slab, 65500, 100).expect("ok"), None);
    assert_eq!(l.alloc_in(a, slab, 0, 0).expect("ok"), None);
    assert_eq!(l.alloc_in(b, slab, 1024, 10).expect("ok"), None);

    // A transfer by reference of one allocation shows the buffer to the receiver: the slab
    // takes no new allocation after that.
    let third = l.alloc_in(a, slab, 512, 100).expect("ok").expect("placed");
    l.decref(a, first.agg).expect("decref");
    l.decref(a, second).expect("decref");
    let plan = l
        .plan_transfer(TransferRequest::new(
            a,
            third,
            b,
            Mode::Share,
            TransferFlags::weak(),
        ))
        .expect("plan");
    assert_eq!(plan.pieces()[0].route, Route::Reference);
    l.commit(plan).expect("commit");
    check(&l);
    assert_eq!(
        l.alloc_in(a, slab, 1024, 10).expect("ok"),
        None,
        "the slab was shared"
    );
}

#[test]
fn transfers_of_slab_allocations_copy_and_leave_neighbours_alone() {
    for mode in [Mode::Move, Mode::Share, Mode::Copy] {
        let (mut l, a, b) = ledger(Policy::by_reference());
        let first = l.alloc_with_capacity(a, 64, 4096).expect("slab");
        let slab = first.buffer.expect("a buffer").id;
        let second = l.alloc_in(a, slab, 64, 64).expect("ok").expect("placed");
        let plan = l
            .plan_transfer(TransferRequest::new(
                a,
                second,
                b,
                mode,
                TransferFlags::strong(),
            ))
            .expect("plan");
        assert!(
            matches!(plan.pieces()[0].route, Route::Copy(_)),
            "{mode}: a neighbour holds the buffer read/write, so it must copy"
        );
        l.commit(plan).expect("commit");
        check(&l);
        assert_eq!(
            l.rights(a, first.agg).expect("rights"),
            Rights::ReadWrite,
            "{mode}"
        );
        assert_eq!(
            l.mapping(b, slab),
            Rights::None,
            "{mode}: the receiver never sees the slab"
        );
        // The slab is still private to its owner: new allocations may go in.
        assert!(
            l.alloc_in(a, slab, 128, 64).expect("ok").is_some(),
            "{mode}"
        );
    }
}

#[test]
fn a_slab_is_freed_with_its_last_allocation() {
    let (mut l, a, _) = ledger(Policy::linux_host());
    let first = l.alloc_with_capacity(a, 10, 4096).expect("slab");
    let slab = first.buffer.expect("a buffer").id;
    let others: Vec<_> = (1..4)
        .map(|i| {
            l.alloc_in(a, slab, i * 64, 10)
                .expect("ok")
                .expect("placed")
        })
        .collect();
    l.decref(a, first.agg).expect("decref");
    for (i, x) in others.iter().enumerate() {
        let release = l.decref(a, *x).expect("decref");
        assert_eq!(release.freed.is_empty(), i + 1 < others.len());
    }
    assert_eq!(l.buffer_len(slab), None);
    assert_eq!(
        l.alloc_in(a, slab, 0, 10).expect("ok"),
        None,
        "a freed slab takes nothing"
    );
    check(&l);
}
