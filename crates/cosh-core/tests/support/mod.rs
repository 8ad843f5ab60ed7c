//! Test support shared by the integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod naive;
pub mod ops;

/// `base` random cases, multiplied by `$COSH_TEST_SCALE` (default 1) for heavier runs:
/// `COSH_TEST_SCALE=100 cargo test --release -p cosh-core`.
pub fn cases(base: u32) -> u32 {
    let scale = std::env::var("COSH_TEST_SCALE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    base.saturating_mul(scale)
}

/// The first place two observation sequences differ, for a failure message.
pub fn first_difference(a: &[String], b: &[String]) -> Option<String> {
    let i = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))?;
    let from = i.saturating_sub(3);
    Some(format!(
        "observations differ at line {i}:\n--- first:\n{}\n--- second:\n{}",
        a[from..(i + 1).min(a.len())].join("\n"),
        b[from..(i + 1).min(b.len())].join("\n")
    ))
}
