//! The scenario corpus against a real block manager, every domain a connection of its own.

mod support;

use cosh_scenario::{Layout, check, corpus};
use support::{Connections, Daemon};

#[test]
fn the_corpus_passes_against_the_block_manager() {
    let daemon = Daemon::start("corpus");
    let scenarios = corpus().expect("the corpus loads");
    let mut failures = Vec::new();
    for (path, scenario) in &scenarios {
        let mut cosh = Connections::new(&daemon);
        match check(scenario, &mut cosh, Layout::OnePool) {
            Ok(r) if r.steps == scenario.steps.len() => {}
            Ok(r) => failures.push(format!("{}: ran {} steps only", path.display(), r.steps)),
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        scenarios.len(),
        failures.join("\n")
    );
}
