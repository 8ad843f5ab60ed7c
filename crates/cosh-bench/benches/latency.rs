//! `cargo bench -p cosh-bench`: one-way transfer latency across processes (see the crate
//! documentation). Arguments after `--` are `cosh-bench`'s, for example
//! `cargo bench -p cosh-bench -- --sizes 4K,1M --csv target/latency.csv`.

fn main() -> std::process::ExitCode {
    match cosh_bench::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cosh-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
