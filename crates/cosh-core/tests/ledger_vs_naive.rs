//! The ledger (through the reference model) against a deliberately naive second
//! implementation, over random operation sequences under several mechanism policies: every
//! operation must succeed or fail alike (same error kind) and return the same values, every
//! aggregate must keep the same rights and bytes, and misbehaving accesses through remembered
//! pieces must fault alike. The ledger's own invariants are checked after every operation.

mod support;

use cosh_core::ledger::Policy;
use cosh_core::model::Model;
use proptest::prelude::*;
use support::naive::Naive;
use support::ops::{DOMAINS, Op, observe, op, policies};

fn run(policy: Policy, pools: &[u32], ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::new(policy);
    let ledger = observe(&mut model, pools, ops, true, |m, op| {
        m.ledger()
            .check_invariants()
            .map_err(|e| format!("after {op:?}: {e}"))
    })
    .map_err(TestCaseError::fail)?
    .0;
    let naive = observe(&mut Naive::new(policy), pools, ops, true, |_, _| Ok(()))
        .map_err(TestCaseError::fail)?
        .0;
    match support::first_difference(&ledger, &naive) {
        None => Ok(()),
        Some(diff) => Err(TestCaseError::fail(format!("ledger vs naive: {diff}"))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: support::cases(384), ..ProptestConfig::default() })]

    #[test]
    fn the_ledger_behaves_like_the_naive_model(
        policy in policies(),
        pools in prop::collection::vec(0u32..2, DOMAINS),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(policy, &pools, &ops)?;
    }
}
