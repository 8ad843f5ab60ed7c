//! Topology files (`cosh up --topology FILE`): any text gives a topology or an error, never
//! a panic, and an accepted topology obeys every rule the checker states.
#![no_main]

use std::collections::BTreeSet;

use cosh_cli::topology_file::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = parse(text) else {
        return;
    };
    assert!(!t.pool.is_empty());
    let mut names = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for p in &t.pool {
        assert!((1..=32).contains(&p.name.len()), "{:?}", p.name);
        assert!(
            p.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{:?}",
            p.name
        );
        assert!(names.insert(p.name.clone()) && ids.insert(p.id));
    }
    for r in &t.remote {
        assert!(ids.insert(r.id), "remote id {} repeated", r.id);
    }
});
