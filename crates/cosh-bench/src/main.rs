//! `cosh-bench`: see the library documentation.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    match cosh_bench::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cosh-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
