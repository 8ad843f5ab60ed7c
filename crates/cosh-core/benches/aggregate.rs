//! Placeholder replaced by the aggregate benchmarks.
fn main() {}
