//! A transfer split in two halves — `export` in the sender's block manager, `import` in the
//! receiver's — does what one ledger knowing both pools does with `plan_transfer` and
//! `commit`: it fails alike, leaves the sender the same rights, and gives the receiver the
//! same delivery (source, mode, strength, rights, length). Checked on every aggregate, mode,
//! strength, related policy and delivery of random ledger states, with the invariants after
//! each half and after the hold is dropped.

mod support;

use std::collections::BTreeSet;

use cosh_core::ledger::{Delivery, Ledger, Received, TransferRequest};
use cosh_core::model::Model;
use cosh_core::{AggId, DomainId, Mode, PoolId, RelatedPolicy, Rights, Strength, TransferFlags};
use proptest::prelude::*;
use support::ops::{DOMAINS, connected, observe, op, policies};

/// What the receiver sees of a delivery.
fn delivered(
    l: &mut Ledger,
    r: &Received,
    receiver: DomainId,
) -> (DomainId, Mode, Strength, Rights, u64) {
    (
        r.source,
        r.mode,
        r.strength,
        l.rights(receiver, r.agg).unwrap_or(Rights::None),
        l.len(receiver, r.agg).unwrap_or(u64::MAX),
    )
}

/// The newest transfer queued for `receiver` from `sender` (older ones are taken first).
fn last_from(l: &mut Ledger, receiver: DomainId, sender: DomainId) -> cosh_core::Result<Received> {
    let mut last = l.receive(receiver, Some(sender))?;
    while let Ok(r) = l.receive(receiver, Some(sender)) {
        last = r;
    }
    Ok(last)
}

/// Tries every cross-pool transfer of `base`'s first aggregates both ways; `Err` names the
/// first difference. Returns how many succeeded.
fn compare_all(base: &Ledger, domains: &BTreeSet<DomainId>) -> Result<usize, String> {
    let aggs: Vec<(DomainId, AggId)> = base.aggregates().map(|(d, a, _)| (d, a)).take(10).collect();
    let mut ok = 0;
    for (sender, agg) in aggs {
        for &receiver in domains.iter().filter(|r| r.pool != sender.pool) {
            for mode in [Mode::Move, Mode::Share, Mode::Copy] {
                for strength in [Strength::Weak, Strength::Strong] {
                    for related in [RelatedPolicy::Copy, RelatedPolicy::Fail] {
                        for delivery in [Delivery::Queued, Delivery::Ticketed] {
                            let flags = TransferFlags { strength, related };
                            let mut request =
                                TransferRequest::new(sender, agg, receiver, mode, flags);
                            request.delivery = delivery;
                            ok += compare_one(base, &request)?;
                        }
                    }
                }
            }
        }
    }
    Ok(ok)
}

fn compare_one(base: &Ledger, request: &TransferRequest) -> Result<usize, String> {
    let what = format!("{request:?}");
    let (sender, receiver, agg) = (request.sender, request.receiver, request.agg);
    // One ledger knowing both pools.
    let mut one = base.clone();
    let planned = one
        .plan_transfer(request.clone())
        .and_then(|plan| one.commit(plan));
    // Two halves (in one ledger here, the sender's and receiver's state being disjoint but
    // for the receiver's queue, which only `import` touches).
    let mut two = base.clone();
    let holder = two.add_domain(sender.pool);
    let exported = two.export(request, holder);
    let gone = !base.has_domain(receiver);
    match (&planned, &exported) {
        (Ok(_), Ok(_)) => {}
        // Both refuse a transfer to a receiver that does not exist, the source for another
        // reason it found first (it cannot know the receiver is gone).
        (Err(x), Err(_)) if gone && x.kind() == cosh_core::ErrorKind::UnknownDomain => {
            return Ok(0);
        }
        // A receiver that does not exist is for the destination to find: its import fails
        // alike, the hold goes, and the sender keeps what it had.
        (Err(x), Ok(export)) if x.kind() == cosh_core::ErrorKind::UnknownDomain && gone => {
            let e = two
                .import(
                    receiver,
                    sender,
                    request.mode,
                    export.strength,
                    0,
                    export.ticket,
                )
                .expect_err("no such receiver");
            if e.kind() != x.kind() {
                return Err(format!("{what}: planned {x:?}, imported {e:?}"));
            }
            two.decref(holder, export.hold)
                .map_err(|e| format!("{what}: dropping the hold: {e}"))?;
            two.check_invariants()
                .map_err(|e| format!("{what}: after the refusal: {e}"))?;
            if two.rights(sender, agg).ok() != base.rights(sender, agg).ok() {
                return Err(format!(
                    "{what}: a refused transfer changed the sender's rights"
                ));
            }
            return Ok(0);
        }
        (Err(x), Err(y)) if x.kind() == y.kind() => return Ok(0),
        _ => {
            return Err(format!(
                "{what}: planned {planned:?}, exported {exported:?}"
            ));
        }
    }
    let (Ok(committed), Ok(export)) = (planned, exported) else {
        return Ok(0);
    };
    two.check_invariants()
        .map_err(|e| format!("{what}: after export: {e}"))?;
    // Until the destination confirms, the sender keeps what it had (a failed transfer
    // changes nothing).
    if two.rights(sender, agg).ok() != base.rights(sender, agg).ok() {
        return Err(format!(
            "{what}: the sender's rights changed before confirmation"
        ));
    }
    two.export_done(request)
        .map_err(|e| format!("{what}: export_done: {e}"))?;
    two.check_invariants()
        .map_err(|e| format!("{what}: after export_done: {e}"))?;
    let kept = (one.rights(sender, agg), two.rights(sender, agg));
    if kept.0 != kept.1 {
        return Err(format!(
            "{what}: the sender keeps {:?} planned, {:?} exported",
            kept.0, kept.1
        ));
    }
    if committed.ticket != export.ticket {
        return Err(format!(
            "{what}: ticket {:?} planned, {:?} exported",
            committed.ticket, export.ticket
        ));
    }
    let imported = two
        .import(
            receiver,
            sender,
            request.mode,
            export.strength,
            export.chunks.len(),
            export.ticket,
        )
        .map_err(|e| format!("{what}: import: {e}"))?;
    two.check_invariants()
        .map_err(|e| format!("{what}: after import: {e}"))?;
    let (r1, r2) = match export.ticket {
        None => (
            last_from(&mut one, receiver, sender),
            last_from(&mut two, receiver, sender),
        ),
        Some(t) => (
            one.attach_recv(receiver, sender, t),
            two.attach_recv(receiver, sender, t),
        ),
    };
    let (r1, r2) = (
        r1.map_err(|e| format!("{what}: planned receive: {e}"))?,
        r2.map_err(|e| format!("{what}: imported receive: {e}"))?,
    );
    if r2.agg != imported.agg {
        return Err(format!(
            "{what}: received {:?}, imported {:?}",
            r2.agg, imported.agg
        ));
    }
    let (d1, d2) = (
        delivered(&mut one, &r1, receiver),
        delivered(&mut two, &r2, receiver),
    );
    if d1 != d2 {
        return Err(format!("{what}: planned delivery {d1:?}, imported {d2:?}"));
    }
    let release = two
        .decref(holder, export.hold)
        .map_err(|e| format!("{what}: dropping the hold: {e}"))?;
    two.check_invariants()
        .map_err(|e| format!("{what}: after the hold: {e}"))?;
    // The hold kept nothing alive that the sender or anyone still holds.
    for b in &release.freed {
        if two
            .aggregates()
            .any(|(d, a, _)| two.chunks(d, a).is_ok_and(|c| c.buffers().contains(b)))
        {
            return Err(format!("{what}: {b} freed while still held"));
        }
    }
    Ok(1)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: support::cases(40), ..ProptestConfig::default() })]

    #[test]
    fn two_halves_transfer_as_one_ledger_does(
        policy in policies(),
        pools in prop::collection::vec(0u32..2, DOMAINS),
        ops in prop::collection::vec(op(), 1..30),
    ) {
        let domains = connected(&pools);
        let mut model = Model::new(policy);
        let (_, _) = observe(&mut model, &pools, &ops, false, |m, _| {
            compare_all(m.ledger(), &domains).map(|_| ())
        })
        .map_err(TestCaseError::fail)?;
    }
}

#[test]
fn a_cross_pool_move_leaves_the_sender_nothing_and_the_hold_keeps_the_bytes() {
    let mut l = Ledger::new(cosh_core::ledger::Policy::linux_host());
    let a = l.add_domain(PoolId(0));
    let holder = l.add_domain(PoolId(0));
    let b = l.add_domain(PoolId(1));
    let x = l.alloc(a, 8192).expect("alloc").agg;
    let flags = TransferFlags::default();
    let request = TransferRequest::new(a, x, b, Mode::Move, flags);
    let export = l.export(&request, holder).expect("export");
    assert_eq!(
        l.rights(a, x).ok(),
        Some(Rights::ReadWrite),
        "not before confirmation"
    );
    l.export_done(&request).expect("confirmed");
    assert_eq!(l.rights(a, x).ok(), Some(Rights::None));
    assert_eq!(export.chunks.len(), 8192);
    // The sender frees its handle: the hold keeps the buffer.
    let freed = l.decref(a, x).expect("decref").freed;
    assert!(freed.is_empty(), "the hold keeps the buffer alive");
    let freed = l.decref(holder, export.hold).expect("drop hold").freed;
    assert_eq!(freed.len(), 1, "the last reference frees it");
    l.check_invariants().expect("invariants");
    // A transfer to a domain of the sender's own pool that does not exist is no export.
    let y = l.alloc(a, 10).expect("alloc").agg;
    let local = DomainId {
        pool: PoolId(0),
        index: 99,
    };
    let e = l
        .export(
            &TransferRequest::new(a, y, local, Mode::Copy, flags),
            holder,
        )
        .expect_err("local receiver");
    assert_eq!(e.kind(), cosh_core::ErrorKind::UnknownDomain);
}
