//! Tidiness of the whole project (its crates and fuzz targets): every Rust file starts with a `//!` paragraph saying what
//! it is, no TODO stands without an issue number next to it, and unsafe code lives only in
//! the modules allowed it (cosh-sys's mappings, and libcosh's C functions).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            // Build outputs and the fuzzers' generated inputs are not sources.
            let generated = ["target", "corpus", "artifacts", "coverage"];
            if path
                .file_name()
                .is_some_and(|n| !generated.iter().any(|g| n == *g))
            {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// Every Rust source of the project: the workspace's crates and the fuzz targets.
fn sources() -> (PathBuf, Vec<PathBuf>) {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&crates, &mut files);
    rust_files(&crates.join("../fuzz"), &mut files);
    (crates, files)
}

#[test]
fn every_rust_file_has_a_module_header_and_no_bare_todo() {
    let (crates, files) = sources();
    assert!(
        files.len() > 10,
        "found only {} files under {}",
        files.len(),
        crates.display()
    );
    let mut problems = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        if !text.trim_start().starts_with("//!") {
            problems.push(format!("{}: does not start with a //! header", f.display()));
        }
        for (i, line) in text.lines().enumerate() {
            let bare = ["TODO", "FIXME", "XXX"].iter().any(|w| line.contains(w))
                && !line.contains("issue");
            // This file names the words it looks for.
            if bare && !f.ends_with("tidy.rs") {
                problems.push(format!(
                    "{}:{}: a TODO needs an issue number",
                    f.display(),
                    i + 1
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The only files allowed unsafe code.
const UNSAFE_ALLOWED: [&str; 2] = ["cosh-sys/src/mapping.rs", "cosh-capi/src/ffi.rs"];

#[test]
fn unsafe_code_lives_only_where_it_is_allowed() {
    let (_, files) = sources();
    let mut problems = Vec::new();
    for f in &files {
        let allowed = UNSAFE_ALLOWED.iter().any(|a| f.ends_with(a));
        let text = std::fs::read_to_string(f).expect("read");
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let uses_unsafe = ["unsafe {", "unsafe impl", "unsafe fn", "allow(unsafe_code)"]
                .iter()
                .any(|w| code.contains(w));
            if uses_unsafe && !allowed && !f.ends_with("tidy.rs") {
                problems.push(format!(
                    "{}:{}: unsafe code outside {UNSAFE_ALLOWED:?}",
                    f.display(),
                    i + 1
                ));
            }
        }
        if allowed {
            // Every unsafe block in an allowed file carries a SAFETY argument right above it.
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.contains("unsafe {") || line.trim_start().starts_with("unsafe impl") {
                    let above = lines[..i]
                        .iter()
                        .rev()
                        .take(8)
                        .any(|l| l.contains("SAFETY:"));
                    if !above {
                        problems.push(format!(
                            "{}:{}: unsafe without a SAFETY argument",
                            f.display(),
                            i + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
