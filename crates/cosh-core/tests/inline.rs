//! Inline transfers (the bytes copied by the libraries on a direct ring) change the ledger as a
//! transfer does: the sender's half leaves exactly the rights, and refuses exactly what, the
//! general plan does; the receiver's half gives the rights and length the plan's receive
//! gives, and only ever over a buffer private to the receiver.

mod support;

use std::collections::BTreeSet;

use cosh_core::ledger::{Ledger, Policy, TransferRequest};
use cosh_core::model::Model;
use cosh_core::{AggId, DomainId, ErrorKind, Mode, PoolId, Rights, TransferFlags};
use proptest::prelude::*;
use support::ops::{DOMAINS, connected, observe, op, policies};

/// What a transfer leaves: the sender's rights, and the receiver's aggregate's rights and
/// length; or the error's kind.
type Outcome = Result<(Rights, Rights, u64), ErrorKind>;

fn planned(base: &Ledger, request: TransferRequest) -> Outcome {
    let mut l = base.clone();
    let plan = l.plan_transfer(request.clone()).map_err(|e| e.kind())?;
    let committed = l.commit(plan).map_err(|e| e.kind())?;
    // Earlier transfers from the sender may wait too: receive until this one comes.
    let got = loop {
        let got = l
            .receive(request.receiver, Some(request.sender))
            .map_err(|e| e.kind())?;
        if got.agg == committed.receiver_agg {
            break got.agg;
        }
    };
    let sender = l
        .rights(request.sender, request.agg)
        .map_err(|e| e.kind())?;
    let rights = l.rights(request.receiver, got).map_err(|e| e.kind())?;
    let len = l.len(request.receiver, got).map_err(|e| e.kind())?;
    Ok((sender, rights, len))
}

fn inline(base: &Ledger, request: &TransferRequest) -> Outcome {
    let mut l = base.clone();
    let len = l.len(request.sender, request.agg).map_err(|e| e.kind())?;
    l.sent_inline(request.sender, request.agg, request.receiver, request.mode)
        .map_err(|e| e.kind())?;
    // The receiver's library lands the bytes in a buffer of its own (one of a size class).
    let landing = l
        .alloc(request.receiver, len.next_power_of_two())
        .map_err(|e| e.kind())?
        .agg;
    l.land(request.receiver, landing, len, request.mode.receiver_gets())
        .map_err(|e| e.kind())?;
    l.check_invariants().map_err(|_| ErrorKind::Protocol)?;
    let sender = l
        .rights(request.sender, request.agg)
        .map_err(|e| e.kind())?;
    let rights = l.rights(request.receiver, landing).map_err(|e| e.kind())?;
    Ok((
        sender,
        rights,
        l.len(request.receiver, landing).map_err(|e| e.kind())?,
    ))
}

/// Every inline transfer of `base`'s first aggregates (that are not empty) to every other
/// connected domain of the sender's pool, every mode and strength, against the plan.
fn compare_all(base: &Ledger, domains: &BTreeSet<DomainId>) -> Result<usize, String> {
    let aggs: Vec<(DomainId, AggId)> = base.aggregates().map(|(d, a, _)| (d, a)).take(12).collect();
    let mut compared = 0;
    for (sender, agg) in aggs {
        // Pending (not yet received) and empty aggregates are not sent.
        if base.len(sender, agg).unwrap_or(0) == 0 {
            continue;
        }
        for &receiver in domains {
            // A receiver that left is the sender's half alone (its own test below): the plan
            // refuses it, the ring already carried it.
            if receiver == sender || receiver.pool != sender.pool || !base.has_domain(receiver) {
                continue;
            }
            for mode in Mode::ALL {
                for flags in [TransferFlags::strong(), TransferFlags::weak()] {
                    let request = TransferRequest::new(sender, agg, receiver, mode, flags);
                    let (a, b) = (inline(base, &request), planned(base, request.clone()));
                    let what = format!("{mode:?} {flags:?} of {agg:?} from {sender} to {receiver}");
                    match (a, b) {
                        (Ok(x), Ok(y)) if x == y => compared += 1,
                        (Err(x), Err(y)) if x == y => {}
                        (a, b) => return Err(format!("{what}: inline {a:?}, planned {b:?}")),
                    }
                }
            }
        }
    }
    Ok(compared)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: support::cases(48), ..ProptestConfig::default() })]

    #[test]
    fn an_inline_transfer_leaves_the_rights_a_planned_one_does(
        policy in policies(),
        pools in prop::collection::vec(0u32..2, DOMAINS),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let domains = connected(&pools);
        let mut model = Model::new(policy);
        observe(&mut model, &pools, &ops, false, |m, _| {
            compare_all(m.ledger(), &domains).map(|_| ())
        })
        .map_err(TestCaseError::fail)?;
    }
}

#[test]
fn every_mode_and_strength_of_a_private_buffer_compares() {
    let mut l = Ledger::new(Policy::linux_host());
    let (a, b) = (l.add_domain(PoolId(0)), l.add_domain(PoolId(0)));
    l.alloc(a, 4096).expect("alloc");
    let both = [a, b].into_iter().collect();
    assert_eq!(
        compare_all(&l, &both),
        Ok(6),
        "three modes, two strengths, to b"
    );
}

#[test]
fn a_landing_must_be_private_and_start_its_buffer() {
    let mut l = Ledger::new(Policy::linux_host());
    let (a, b) = (l.add_domain(PoolId(0)), l.add_domain(PoolId(0)));
    let refused = |r: cosh_core::Result<()>| {
        assert_eq!(r.map_err(|e| e.kind()), Err(ErrorKind::Protocol));
    };
    let x = l.alloc(b, 8192).expect("alloc").agg;
    refused(l.land(b, x, 0, Rights::ReadWrite));
    refused(l.land(b, x, 8193, Rights::ReadWrite));
    // Held twice: the library's hold is not the only one.
    l.incref(b, x).expect("incref");
    refused(l.land(b, x, 100, Rights::ReadWrite));
    l.decref(b, x).expect("decref");
    // A piece further in does not start the buffer.
    let tail = l.select(b, x, 4096, 4096).expect("select");
    refused(l.land(b, tail, 100, Rights::ReadWrite));
    l.decref(b, tail).expect("decref");
    // Shared with another domain: no longer private.
    let y = l.alloc(b, 8192).expect("alloc").agg;
    let plan = l
        .plan_transfer(TransferRequest::new(
            b,
            y,
            a,
            Mode::Share,
            TransferFlags::weak(),
        ))
        .expect("plan");
    l.commit(plan).expect("commit");
    l.trust(a, b).expect("trust");
    refused(l.land(b, y, 100, Rights::ReadWrite));
    // Private: landed, shortened, read-only; then never again (it is no longer read/write).
    l.land(b, x, 100, Rights::Read).expect("land");
    assert_eq!(l.len(b, x).expect("len"), 100);
    assert_eq!(l.rights(b, x).expect("rights"), Rights::Read);
    refused(l.land(b, x, 200, Rights::ReadWrite));
    // Landed read/write, the buffer may land again, longer or shorter.
    let z = l.alloc(b, 4096).expect("alloc").agg;
    l.land(b, z, 10, Rights::ReadWrite).expect("land");
    l.land(b, z, 4096, Rights::ReadWrite).expect("land again");
    l.check_invariants().expect("invariants");
    // The sender's half needs the mode's rights.
    let w = l.alloc(a, 64).expect("alloc").agg;
    l.downgrade(a, w, Rights::Read).expect("downgrade");
    assert_eq!(
        l.sent_inline(a, w, b, Mode::Move).map_err(|e| e.kind()),
        Err(ErrorKind::InsufficientRights)
    );
    l.sent_inline(a, w, b, Mode::Share).expect("share");
    assert_eq!(l.rights(a, w).expect("rights"), Rights::Read);
}

#[test]
fn an_inline_moves_sender_lands_its_own_buffer_again_only_when_nothing_else_holds_it() {
    let mut l = Ledger::new(Policy::linux_host());
    let (a, b) = (l.add_domain(PoolId(0)), l.add_domain(PoolId(0)));
    let refused = |r: cosh_core::Result<()>| {
        assert_eq!(r.map_err(|e| e.kind()), Err(ErrorKind::Protocol));
    };
    // The bytes went as a copy: the buffer is the sender's own again.
    let x = l.alloc(a, 8192).expect("alloc").agg;
    l.sent_inline(a, x, b, Mode::Move).expect("move");
    assert_eq!(l.rights(a, x).expect("rights"), Rights::None);
    l.land(a, x, 8192, Rights::ReadWrite).expect("reclaimed");
    assert_eq!(l.rights(a, x).expect("rights"), Rights::ReadWrite);
    l.check_invariants().expect("invariants");
    // A relative without rights holds it too: refused.
    let y = l.alloc(a, 8192).expect("alloc").agg;
    let part = l.select(a, y, 0, 4096).expect("select");
    l.sent_inline(a, y, b, Mode::Move).expect("move");
    l.downgrade(a, part, Rights::None).expect("downgrade");
    refused(l.land(a, y, 8192, Rights::ReadWrite));
    // Moved by reference (the receiver holds it): refused.
    let z = l.alloc(a, 8192).expect("alloc").agg;
    l.trust(b, a).expect("trust");
    let plan = l
        .plan_transfer(TransferRequest::new(
            a,
            z,
            b,
            Mode::Move,
            TransferFlags::weak(),
        ))
        .expect("plan");
    l.commit(plan).expect("commit");
    refused(l.land(a, z, 8192, Rights::ReadWrite));
    l.check_invariants().expect("invariants");
}

#[test]
fn the_senders_half_holds_when_the_receiver_is_gone() {
    let mut l = Ledger::new(Policy::linux_host());
    let (a, b) = (l.add_domain(PoolId(0)), l.add_domain(PoolId(0)));
    let x = l.alloc(a, 4096).expect("alloc").agg;
    let y = l.alloc(a, 4096).expect("alloc").agg;
    l.remove_domain(b).expect("b leaves");
    l.sent_inline(a, x, b, Mode::Move)
        .expect("move to a receiver gone");
    assert_eq!(l.rights(a, x).expect("rights"), Rights::None);
    l.sent_inline(a, y, b, Mode::Share)
        .expect("share to a receiver gone");
    assert_eq!(l.rights(a, y).expect("rights"), Rights::Read);
    // Still the mode's rights needed.
    assert_eq!(
        l.sent_inline(a, x, b, Mode::Move).map_err(|e| e.kind()),
        Err(ErrorKind::InsufficientRights)
    );
    l.check_invariants().expect("invariants");
}
