//! Runs the whole scenario corpus against the reference model, under every mechanism policy
//! and every pool layout: implementing a transfer as a copy is always correct (invariant 3)
//! and a correct program cannot tell pools apart (invariant 5).

use cosh_core::ledger::Policy;
use cosh_core::model::Model;
use cosh_scenario::{Layout, check, corpus};

/// The deliberately naive second implementation from cosh-core's tests.
#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../cosh-core/tests/support/naive.rs"]
mod naive;

#[test]
fn the_reference_model_passes_the_whole_corpus_under_every_policy_and_layout() {
    let scenarios = corpus().expect("the corpus loads");
    assert!(
        scenarios.len() >= 30,
        "the corpus has {} scenarios",
        scenarios.len()
    );
    let mut failures = Vec::new();
    let mut runs = 0;
    for (path, scenario) in &scenarios {
        for policy in [
            Policy::by_reference(),
            Policy::linux_host(),
            Policy::copy_always(),
        ] {
            for layout in Layout::ALL {
                runs += 1;
                let mut model = Model::new(policy);
                match check(scenario, &mut model, layout) {
                    Ok(report) => assert_eq!(report.steps, scenario.steps.len()),
                    Err(e) => {
                        failures.push(format!("{} [{policy:?}, {layout}]: {e}", path.display()))
                    }
                }
                if let Err(e) = model.ledger().check_invariants() {
                    failures.push(format!("{}: ledger invariant broken: {e}", path.display()));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_naive_second_implementation_passes_the_whole_corpus_too() {
    let scenarios = corpus().expect("the corpus loads");
    let mut failures = Vec::new();
    for (path, scenario) in &scenarios {
        for policy in [
            Policy::by_reference(),
            Policy::linux_host(),
            Policy::copy_always(),
        ] {
            for layout in Layout::ALL {
                if let Err(e) = check(scenario, &mut naive::Naive::new(policy), layout) {
                    failures.push(format!("{} [{policy:?}, {layout}]: {e}", path.display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
