//! Scenario files (the corpus format of `cosh-scenario`): any text gives a scenario or an
//! error, and a scenario runs against the reference model to a report or an error, never a
//! panic.
#![no_main]

use std::path::Path;

use cosh_core::ledger::Policy;
use cosh_core::model::Model;
use cosh_scenario::{Layout, check, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scenario) = parse(text, Path::new("fuzz.toml")) {
        for layout in Layout::ALL {
            let mut model = Model::new(Policy::by_reference()).with_max_alloc(1 << 20);
            let _ = check(&scenario, &mut model, layout);
            model
                .ledger()
                .check_invariants()
                .expect("the ledger's invariants hold after any scenario");
        }
    }
});
