//! The five invariants of DESIGN §1, one named test each, checked on the reference model.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use cosh_core::api::Cosh;
use cosh_core::ledger::{MoveMechanism, Policy};
use cosh_core::model::Model;
use cosh_core::{Access, AggId, BufferId, Mode, PoolId, Rights, TransferFlags};
use proptest::prelude::*;
use support::ops::{DOMAINS, Op, observe, op, policies};

fn api_only(ops: Vec<Op>) -> Vec<Op> {
    ops.into_iter()
        .filter(|o| !o.mechanism_dependent())
        .collect()
}

/// Invariant 1: a transfer preserves only the byte vector, never the chunk structure.
#[test]
fn invariant_1_a_transfer_preserves_only_the_byte_vector() {
    for policy in [Policy::by_reference(), Policy::copy_always()] {
        let mut cosh = Model::new(policy);
        let (a, b) = (
            cosh.connect(PoolId(0)).expect("connect"),
            cosh.connect(PoolId(0)).expect("connect"),
        );
        let mut parts = Vec::new();
        for i in 0..3u8 {
            let x = cosh.alloc(a, 10_000).expect("alloc");
            cosh.write(a, x, 0, &[b'a' + i; 10_000]).expect("write");
            parts.push(cosh.select(a, x, 1000, 5000).expect("select"));
            cosh.decref(a, x).expect("decref");
        }
        let ab = cosh.concat(a, parts[0], parts[1]).expect("concat");
        let abc = cosh.concat(a, ab, parts[2]).expect("concat");
        for p in parts.into_iter().chain([ab]) {
            cosh.decref(a, p).expect("decref");
        }
        let sent = cosh.read(a, abc, 0, 15_000).expect("read");
        let sender_pieces = cosh.iter(a, abc, Access::Read, 0).expect("iter").len();
        assert_eq!(sender_pieces, 3);
        cosh.transfer(a, abc, b, Mode::Move, TransferFlags::strong())
            .expect("transfer");
        let got = cosh.receive(b, Some(a)).expect("receive").agg;
        assert_eq!(cosh.read(b, got, 0, 15_000).expect("read"), sent);
        let receiver_pieces = cosh.iter(b, got, Access::Read, 0).expect("iter").len();
        if policy == Policy::copy_always() {
            assert_eq!(
                receiver_pieces, 1,
                "copied pieces arrive coalesced into one buffer: the structure was not preserved"
            );
        } else {
            assert_eq!(receiver_pieces, 3);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: support::cases(256), ..ProptestConfig::default() })]

    /// Invariant 2: rights are downgraded by transfers, never upgraded; once shared, data
    /// stays read-only everywhere until freed.
    #[test]
    fn invariant_2_rights_only_go_down(
        policy in policies(),
        pools in prop::collection::vec(0u32..2, DOMAINS),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut last: BTreeMap<AggId, Rights> = BTreeMap::new();
        let mut frozen: BTreeSet<BufferId> = BTreeSet::new();
        observe(&mut Model::new(policy), &pools, &ops, false, |m, op| {
            let ledger = m.ledger();
            ledger.check_invariants()?;
            for (_, agg, rights) in ledger.aggregates() {
                if let Some(before) = last.insert(agg, rights)
                    && rights > before
                {
                    return Err(format!("{op:?} raised {agg} from {before} to {rights}"));
                }
            }
            frozen.retain(|b| ledger.buffer_len(*b).is_some());
            for b in &frozen {
                if !ledger.is_frozen(*b) {
                    return Err(format!("{op:?} made shared buffer {b} writable again"));
                }
            }
            frozen.extend(ledger.buffers().filter(|b| ledger.is_frozen(*b)));
            Ok(())
        })
        .map_err(TestCaseError::fail)?;
    }

    /// Invariant 3: implementing any transfer as a copy is always correct: the same program
    /// observes exactly the same through the API whatever the mechanism policy.
    #[test]
    fn invariant_3_a_transfer_may_always_be_a_copy(
        pools in prop::collection::vec(0u32..2, DOMAINS),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let ops = api_only(ops);
        let reference = observe(&mut Model::new(Policy::by_reference()), &pools, &ops, true, |_, _| Ok(()))
            .map_err(TestCaseError::fail)?.0;
        for policy in [
            Policy::copy_always(),
            Policy { strong_move: MoveMechanism::Copy, min_reference_bytes: 8, min_reference_percent: 50, share_copy_max: 0 },
            Policy { strong_move: MoveMechanism::Copy, min_reference_bytes: 8, min_reference_percent: 50, share_copy_max: 48 },
        ] {
            let other = observe(&mut Model::new(policy), &pools, &ops, true, |_, _| Ok(()))
                .map_err(TestCaseError::fail)?.0;
            if let Some(diff) = support::first_difference(&reference, &other) {
                return Err(TestCaseError::fail(format!("by reference vs {policy:?}: {diff}")));
            }
        }
    }

    /// Invariant 5: programs that follow the rules cannot tell coherent, non-coherent and
    /// unshared memory apart: the same program observes the same whether its domains share
    /// one pool or each has its own.
    #[test]
    fn invariant_5_pools_cannot_be_told_apart(
        policy in policies(),
        pools in prop::collection::vec(0u32..3, DOMAINS),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let ops = api_only(ops);
        let layouts: [Vec<u32>; 3] = [vec![0; DOMAINS], (0..DOMAINS as u32).collect(), pools];
        let reference = observe(&mut Model::new(policy), &layouts[0], &ops, true, |_, _| Ok(()))
            .map_err(TestCaseError::fail)?.0;
        for layout in &layouts[1..] {
            let other = observe(&mut Model::new(policy), layout, &ops, true, |_, _| Ok(()))
                .map_err(TestCaseError::fail)?.0;
            if let Some(diff) = support::first_difference(&reference, &other) {
                return Err(TestCaseError::fail(format!("one pool vs pools {layout:?}: {diff}")));
            }
        }
    }

    /// Dead domains lose every reference they held: once every domain is gone, the ledger
    /// holds no buffer and the model no memory, whatever happened before.
    #[test]
    fn killing_every_domain_frees_everything(
        policy in policies(),
        pools in prop::collection::vec(0u32..2, DOMAINS),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut model = Model::new(policy);
        let (_, handles) = observe(&mut model, &pools, &ops, false, |_, _| Ok(()))
            .map_err(TestCaseError::fail)?;
        for d in handles.domains {
            if model.ledger().has_domain(d) {
                model.kill(d).expect("kill");
            }
        }
        prop_assert_eq!(model.ledger().buffers().count(), 0);
        prop_assert_eq!(model.ledger().aggregates().count(), 0);
        prop_assert_eq!(model.resident_bytes(), 0);
    }

    /// Invariant 4: fresh allocations are strongly private: no other domain can observe or
    /// modify them until they are transferred, whatever weak transfers happened before.
    /// Every domain trusts every other, so weak transfers leave stale mappings behind.
    #[test]
    fn invariant_4_fresh_allocations_are_strongly_private(
        policy in policies(),
        pools in prop::collection::vec(0u32..2, DOMAINS),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut trusting: Vec<Op> = Vec::new();
        for d in 0..DOMAINS {
            for p in 0..DOMAINS {
                if d != p {
                    trusting.push(Op::Trust(d, p));
                }
            }
        }
        trusting.extend(ops);
        let mut model = Model::new(policy);
        let (_, handles) = observe(&mut model, &pools, &trusting, false, |_, _| Ok(()))
            .map_err(TestCaseError::fail)?;
        let live: Vec<_> = handles.domains.iter().copied().filter(|d| model.ledger().has_domain(*d)).collect();
        for &owner in &live {
            let fresh = model.alloc(owner, 40).expect("alloc");
            model.write(owner, fresh, 0, &[0xA5; 40]).expect("write");
            let buffers = model.ledger().chunks(owner, fresh).expect("chunks").buffers();
            for &other in live.iter().filter(|d| **d != owner) {
                for b in &buffers {
                    prop_assert_eq!(model.ledger().mapping(other, *b), Rights::None);
                }
                for pieces in &handles.pieces {
                    for p in pieces {
                        if let Ok(bytes) = model.peek(other, p) {
                            prop_assert!(!buffers.contains(&p.buffer), "{other} read {bytes:?} of a fresh allocation");
                        }
                        let _ = model.poke(other, p, &vec![0; p.len as usize]);
                    }
                }
            }
            prop_assert_eq!(model.read(owner, fresh, 0, 40).expect("read"), vec![0xA5; 40]);
        }
    }
}
