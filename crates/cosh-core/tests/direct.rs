//! Direct transfers: the ledger side of weak transfers carried out on a domain-to-domain ring.

use cosh_core::ledger::{Ledger, Policy};
use cosh_core::{AggId, ErrorKind, Mode, PoolId, Rights};

const BIG: u64 = 64 * 1024;

fn setup() -> (Ledger, cosh_core::DomainId, cosh_core::DomainId) {
    let mut l = Ledger::new(Policy::linux_host());
    let a = l.add_domain(PoolId(0));
    let b = l.add_domain(PoolId(0));
    (l, a, b)
}

#[test]
fn a_whole_private_buffer_qualifies_and_moves_back_and_forth() {
    let (mut l, a, b) = setup();
    l.trust(b, a).expect("trust");
    l.trust(a, b).expect("trust");
    let x = l.alloc(a, BIG).expect("alloc").agg;
    let info = l.direct_info(a, x).expect("a fresh whole buffer qualifies");
    assert_eq!(info.len, BIG);
    assert_eq!(info.mappers, vec![a]);

    let first = l.lease_ids(a, 4).expect("lease");
    assert_eq!(l.lease_left(a), Some((first, 4)));
    l.transfer_direct(a, x, b, Mode::Move, AggId(first))
        .expect("direct move");
    l.check_invariants().expect("invariants");
    assert_eq!(l.rights(b, AggId(first)), Ok(Rights::ReadWrite));
    assert_eq!(l.rights(a, x), Ok(Rights::None));
    assert_eq!(l.pending_count(b), 0, "held at once, not queued");

    // Back again: the receiver's aggregate qualifies in its turn.
    let y = AggId(first);
    let info = l.direct_info(b, y).expect("the moved aggregate qualifies");
    assert_eq!(info.mappers, vec![a, b]);
    let back = l.lease_ids(b, 1).expect("lease");
    l.transfer_direct(b, y, a, Mode::Move, AggId(back))
        .expect("direct move back");
    l.check_invariants().expect("invariants");
    assert_eq!(l.rights(a, AggId(back)), Ok(Rights::ReadWrite));
}

#[test]
fn shares_freeze_and_then_no_longer_qualify() {
    let (mut l, a, b) = setup();
    l.trust(b, a).expect("trust");
    let x = l.alloc(a, BIG).expect("alloc").agg;
    let id = l.lease_ids(a, 2).expect("lease");
    l.transfer_direct(a, x, b, Mode::Share, AggId(id))
        .expect("direct share");
    l.check_invariants().expect("invariants");
    assert_eq!(l.rights(b, AggId(id)), Ok(Rights::Read));
    assert_eq!(l.direct_info(a, x), None, "frozen now");
}

#[test]
fn what_the_ledger_would_copy_is_refused_and_changes_nothing() {
    let (mut l, a, b) = setup();
    let x = l.alloc(a, BIG).expect("alloc").agg;
    let id = l.lease_ids(a, 8).expect("lease");
    // No trust: the transfer would be strong.
    let e = l
        .transfer_direct(a, x, b, Mode::Move, AggId(id))
        .expect_err("untrusted");
    assert_eq!(e.kind(), ErrorKind::Protocol);
    assert_eq!(l.rights(a, x), Ok(Rights::ReadWrite));
    assert_eq!(l.lease_left(a), Some((id, 8)), "the lease is untouched");
    l.trust(b, a).expect("trust");
    // Not the next id of the lease.
    let e = l
        .transfer_direct(a, x, b, Mode::Move, AggId(id + 1))
        .expect_err("out of order");
    assert_eq!(e.kind(), ErrorKind::Protocol);
    // A relative holds the buffer read/write: the ledger would copy.
    let part = l.select(a, x, 0, BIG / 2).expect("select");
    assert_eq!(l.direct_info(a, x), None);
    let e = l
        .transfer_direct(a, x, b, Mode::Move, AggId(id))
        .expect_err("related");
    assert_eq!(e.kind(), ErrorKind::Protocol);
    l.decref(a, part).expect("decref");
    l.transfer_direct(a, x, b, Mode::Move, AggId(id))
        .expect("fine once the relative is gone");
    l.check_invariants().expect("invariants");
    // A small whole buffer qualifies: between domains that trust each other a weak
    // transfer passes it by reference too. A small piece of a larger buffer does not.
    let small = l.alloc(a, 1024).expect("alloc").agg;
    assert!(l.direct_info(a, small).is_some());
    let slab = l.alloc_with_capacity(a, 64, BIG).expect("alloc").agg;
    assert_eq!(l.direct_info(a, slab), None);
    // Copies and ids outside any lease never qualify.
    let z = l.alloc(a, BIG).expect("alloc").agg;
    assert!(
        l.transfer_direct(a, z, b, Mode::Copy, AggId(id + 1))
            .is_err()
    );
    let other = l.add_domain(PoolId(0));
    assert!(
        l.transfer_direct(other, z, b, Mode::Move, AggId(id + 1))
            .is_err(),
        "another domain's aggregate"
    );
    l.check_invariants().expect("invariants");
}

#[test]
fn small_buffers_go_by_reference_only_when_the_transfer_stays_weak() {
    use cosh_core::TransferFlags;
    use cosh_core::ledger::{CopyReason, Route, TransferRequest};
    let (mut l, a, b) = setup();
    let x = l.alloc(a, 1024).expect("alloc").agg;
    let route = |l: &Ledger, flags| {
        l.plan_transfer(TransferRequest::new(a, x, b, Mode::Share, flags))
            .expect("plan")
            .pieces()[0]
            .route
    };
    // Untrusted: strong, and copied (cheaper than mapping a small buffer).
    assert_eq!(
        route(&l, TransferFlags::weak()),
        Route::Copy(CopyReason::Small)
    );
    assert_eq!(
        route(&l, TransferFlags::strong()),
        Route::Copy(CopyReason::Small)
    );
    l.trust(b, a).expect("trust");
    assert_eq!(route(&l, TransferFlags::weak()), Route::Reference);
    assert_eq!(
        route(&l, TransferFlags::strong()),
        Route::Copy(CopyReason::Small)
    );
}

#[test]
fn leased_ids_are_never_handed_out_again() {
    let (mut l, a, b) = setup();
    let first = l.lease_ids(a, 100).expect("lease");
    let x = l.alloc(b, BIG).expect("alloc").agg;
    assert!(x.0 >= first + 100, "{x} reuses a leased id");
}
