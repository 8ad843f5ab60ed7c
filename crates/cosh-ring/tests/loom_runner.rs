//! Runs the loom model checks (`tests/loom.rs`) as part of `cargo test --workspace`: they need
//! the whole crate built with `--cfg loom`, so this test builds and runs them with a nested
//! cargo, in a target directory of their own (`target/loom`), in release mode.
//! `COSH_SKIP_LOOM=1` skips it while iterating on something else.

#![cfg(not(loom))]

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_ring_protocol_passes_the_loom_model_checks() {
    if std::env::var_os("COSH_SKIP_LOOM").is_some() {
        eprintln!("skipped: COSH_SKIP_LOOM is set");
        return;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(cargo)
        .current_dir(&workspace)
        .args(["test", "-p", "cosh-ring", "--test", "loom", "--release"])
        .env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", workspace.join("target/loom"))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the loom checks failed:\n{text}");
    assert!(
        text.contains("test result: ok. 5 passed"),
        "the loom checks did not all run:\n{text}"
    );
}
