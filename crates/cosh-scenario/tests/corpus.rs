//! Runs the whole scenario corpus against the reference model and against the naive second
//! implementation, under every mechanism policy and every pool layout: implementing a transfer
//! as a copy is always correct (invariant 3), a correct program cannot tell pools apart
//! (invariant 5), and the corpus asks nothing of one implementation that another would not
//! give.

use cosh_core::api::Cosh;
use cosh_core::ledger::Policy;
use cosh_core::model::Model;
use cosh_scenario::{Layout, check, corpus};

/// The deliberately naive second implementation from cosh-core's tests.
#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../cosh-core/tests/support/naive.rs"]
mod naive;

/// Runs every scenario under every policy and layout on a fresh implementation made by
/// `make`, checking `after` once each run is over; returns the number of runs and the
/// failures.
fn run_corpus<C: Cosh>(
    make: impl Fn(Policy) -> C,
    after: impl Fn(&C) -> Result<(), String>,
) -> (usize, Vec<String>) {
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
                let mut cosh = make(policy);
                let at = format!("{} [{policy:?}, {layout}]", path.display());
                match check(scenario, &mut cosh, layout) {
                    Ok(report) if report.steps == scenario.steps.len() => {}
                    Ok(report) => failures.push(format!("{at}: ran {} steps only", report.steps)),
                    Err(e) => failures.push(format!("{at}: {e}")),
                }
                if let Err(e) = after(&cosh) {
                    failures.push(format!("{at}: {e}"));
                }
            }
        }
    }
    (runs, failures)
}

#[test]
fn the_reference_model_passes_the_whole_corpus_under_every_policy_and_layout() {
    let (runs, failures) = run_corpus(Model::new, |m| {
        m.ledger()
            .check_invariants()
            .map_err(|e| format!("ledger invariant broken: {e}"))
    });
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_naive_second_implementation_passes_the_whole_corpus_too() {
    let (runs, failures) = run_corpus(naive::Naive::new, |_| Ok(()));
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
