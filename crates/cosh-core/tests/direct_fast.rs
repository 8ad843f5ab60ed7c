//! The ledger's fast path for direct transfers changes the ledger exactly as the general plan
//! and commit do, on every aggregate, receiver and mode of random ledger states, and refuses
//! (through the plan) whatever the plan refuses.

mod support;

use std::collections::BTreeSet;

use cosh_core::ledger::{Ledger, Policy};
use cosh_core::model::Model;
use cosh_core::{AggId, DomainId, Mode, PoolId};
use proptest::prelude::*;
use support::ops::{DOMAINS, connected, observe, op, policies};

/// Tries every direct transfer of `base`'s first aggregates to every domain of `domains`, both
/// ways; `Err` names the first difference. Returns how many took the fast path.
fn compare_all(base: &Ledger, domains: &BTreeSet<DomainId>) -> Result<usize, String> {
    let aggs: Vec<(DomainId, AggId)> = base.aggregates().map(|(d, a, _)| (d, a)).take(12).collect();
    let mut fast = 0;
    for (sender, agg) in aggs {
        for &receiver in domains {
            for mode in [Mode::Move, Mode::Share] {
                let mut l = base.clone();
                let id = AggId(l.lease_ids(sender, 1).map_err(|e| e.to_string())?);
                fast += usize::from(l.direct_would_be_fast(sender, agg, receiver, mode));
                let mut planned = l.clone();
                let a = l.transfer_direct(sender, agg, receiver, mode, id);
                let b = planned.transfer_direct_planned(sender, agg, receiver, mode, id);
                let what = format!("{mode:?} of {agg:?} from {sender} to {receiver}");
                match (&a, &b) {
                    (Ok(()), Ok(())) => {}
                    (Err(x), Err(y)) if x.kind() == y.kind() => {}
                    _ => return Err(format!("{what}: fast {a:?}, planned {b:?}")),
                }
                let (x, y) = (format!("{l:?}"), format!("{planned:?}"));
                if x != y {
                    let at = x
                        .bytes()
                        .zip(y.bytes())
                        .position(|(p, q)| p != q)
                        .unwrap_or(0);
                    let from = at.saturating_sub(150);
                    return Err(format!(
                        "{what} ({a:?} / {b:?}): the ledgers differ afterwards: fast …{}… planned …{}…",
                        &x[from..(at + 80).min(x.len())],
                        &y[from..(at + 80).min(y.len())]
                    ));
                }
                l.check_invariants().map_err(|e| format!("{what}: {e}"))?;
            }
        }
    }
    Ok(fast)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: support::cases(48), ..ProptestConfig::default() })]

    #[test]
    fn the_fast_path_changes_the_ledger_exactly_as_the_plan_does(
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
fn a_whole_private_buffer_between_trusting_domains_takes_the_fast_path() {
    for policy in [Policy::linux_host(), Policy::by_reference()] {
        let mut l = Ledger::new(policy);
        let (a, b) = (l.add_domain(PoolId(0)), l.add_domain(PoolId(0)));
        l.trust(b, a).expect("trust");
        l.trust(a, b).expect("trust");
        let x = l.alloc(a, 64 * 1024).expect("alloc").agg;
        assert!(l.direct_would_be_fast(a, x, b, Mode::Move));
        assert!(l.direct_would_be_fast(a, x, b, Mode::Share));
        let both = [a, b].into_iter().collect();
        assert_eq!(
            compare_all(&l, &both),
            Ok(2),
            "a move and a share to b fast, nothing to a itself"
        );
        // A piece of it is not whole: through the plan.
        let half = l.select(a, x, 0, 1024).expect("select");
        assert!(!l.direct_would_be_fast(a, half, b, Mode::Move));
    }
}
