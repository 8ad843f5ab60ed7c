//! Trace folders (`trace.csv`, `initial_files.csv`, `final_files.csv`, as in the traces'
//! FORMAT.md): any bytes give a trace or an error, never a panic; a trace's records come in
//! `seq` order and name no absolute path.
#![no_main]

use std::path::Path;

use cosh_bench::replay::Trace;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Three parts, split at the first two NUL bytes.
    let mut parts = data.splitn(3, |&b| b == 0);
    let trace = parts.next().unwrap_or_default();
    let initial = parts.next().unwrap_or_default();
    let final_files = parts.next().unwrap_or_default();
    if let Ok(t) = Trace::parse(
        Path::new("fuzz"),
        trace,
        (initial, "initial_files.csv"),
        (final_files, "final_files.csv"),
    ) {
        assert!(t.records.windows(2).all(|w| w[0].seq <= w[1].seq));
        assert!(t.records.iter().all(|r| !r.path.starts_with('/')));
    }
});
