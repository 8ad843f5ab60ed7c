//! Sequences of aggregate operations in several domains (every call of the API, transfers
//! in every mode and strength, tickets, kills, accesses behind the API's back), run against
//! the ledger (through the reference model) and against a deliberately naive second
//! implementation: both must observe the same thing after every operation, and the ledger's
//! invariants must hold throughout. The same driver as `cosh-core`'s `ledger_vs_naive` test,
//! with the fuzzer choosing the operations.
#![no_main]

#[path = "../../crates/cosh-core/tests/support/mod.rs"]
mod support;

use cosh_core::ledger::{MoveMechanism, Policy};
use cosh_core::model::Model;
use cosh_core::{Access, Mode, RelatedPolicy, Rights, Strength, TransferFlags};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use support::naive::Naive;
use support::ops::{DOMAINS, Index, Op, observe};

fn index(u: &mut Unstructured<'_>) -> Result<Index> {
    Ok(Index(u.arbitrary()?))
}

fn rights(u: &mut Unstructured<'_>) -> Result<Rights> {
    Ok(*u.choose(&Rights::ALL)?)
}

/// One operation, with the same ranges as the property test's strategy.
fn op(u: &mut Unstructured<'_>) -> Result<Op> {
    let d = |u: &mut Unstructured<'_>| u.int_in_range(0..=DOMAINS - 1);
    // Past the last domain: the aggregate's owner.
    let o = |u: &mut Unstructured<'_>| u.int_in_range(0..=DOMAINS * 3 - 1);
    let small = |u: &mut Unstructured<'_>| u.int_in_range(0..=63u64);
    Ok(match u.int_in_range(0..=17u8)? {
        0 => Op::Alloc(d(u)?, u.int_in_range(0..=47)?),
        1 => Op::Write(o(u)?, index(u)?, small(u)?, small(u)?, u.arbitrary()?),
        2 => Op::Read(o(u)?, index(u)?, small(u)?, small(u)?),
        3 => Op::Select(o(u)?, index(u)?, small(u)?, small(u)?),
        4 => {
            let (who, a) = (o(u)?, index(u)?);
            let b = if u.arbitrary()? { a } else { index(u)? };
            Op::Concat(who, a, b)
        }
        5 => Op::Downgrade(o(u)?, index(u)?, rights(u)?),
        6 => Op::Incref(o(u)?, index(u)?),
        7 => Op::Decref(o(u)?, index(u)?),
        8 => Op::FindRelated(o(u)?, index(u)?, rights(u)?),
        9 | 10 => Op::Transfer {
            domain: o(u)?,
            agg: index(u)?,
            dest: d(u)?,
            mode: *u.choose(&Mode::ALL)?,
            flags: TransferFlags {
                strength: if u.arbitrary()? {
                    Strength::Weak
                } else {
                    Strength::Strong
                },
                related: if u.arbitrary()? {
                    RelatedPolicy::Fail
                } else {
                    RelatedPolicy::Copy
                },
            },
            ticketed: u.arbitrary()?,
        },
        11 => Op::Receive(o(u)?, if u.arbitrary()? { Some(d(u)?) } else { None }),
        12 => Op::AttachRecv(
            o(u)?,
            d(u)?,
            index(u)?,
            if u.ratio(1, 5)? {
                Some(u.int_in_range(0..=3)?)
            } else {
                None
            },
        ),
        13 => Op::Trust(d(u)?, d(u)?),
        14 => Op::Kill(u.int_in_range(0..=DOMAINS * 8 - 1)?),
        15 => Op::Iter(
            o(u)?,
            index(u)?,
            if u.arbitrary()? {
                Access::Read
            } else {
                Access::Write
            },
            small(u)?,
        ),
        16 => Op::Peek(d(u)?, index(u)?),
        _ => Op::Poke(d(u)?, index(u)?, u.arbitrary()?),
    })
}

fn policy(u: &mut Unstructured<'_>) -> Result<Policy> {
    Ok(match u.int_in_range(0..=4u8)? {
        0 => Policy::by_reference(),
        1 => Policy::copy_always(),
        2 => Policy {
            strong_move: MoveMechanism::Copy,
            min_reference_bytes: 8,
            min_reference_percent: 50,
            share_copy_max: 0,
        },
        3 => Policy {
            strong_move: MoveMechanism::Copy,
            min_reference_bytes: 8,
            min_reference_percent: 50,
            share_copy_max: 48,
        },
        _ => Policy {
            strong_move: MoveMechanism::Remap,
            min_reference_bytes: 4,
            min_reference_percent: 25,
            share_copy_max: 0,
        },
    })
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let policy = policy(u)?;
    let mut pools = Vec::with_capacity(DOMAINS);
    for _ in 0..DOMAINS {
        pools.push(u.int_in_range(0..=1u32)?);
    }
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < 200 {
        ops.push(op(u)?);
    }
    let ledger = observe(&mut Model::new(policy), &pools, &ops, true, |m, op| {
        m.ledger()
            .check_invariants()
            .map_err(|e| format!("after {op:?}: {e}"))
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .0;
    let naive = observe(&mut Naive::new(policy), &pools, &ops, true, |_, _| Ok(()))
        .unwrap_or_else(|e| panic!("{e}"))
        .0;
    if let Some(diff) = support::first_difference(&ledger, &naive) {
        panic!("ledger vs naive: {diff}");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
