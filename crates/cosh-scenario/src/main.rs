//! `cosh-scenario`: runs Cosh scenarios against the in-process reference model, under every
//! mechanism policy and pool layout, and reports which pass.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use cosh_core::ledger::Policy;
use cosh_core::model::Model;
use cosh_scenario::{Layout, Scenario, check, corpus, load};

/// Runs Cosh transfer scenarios against the reference model.
///
/// A scenario is a TOML file of steps, each one call of the aggregate API with its expected
/// outcome (format: crates/cosh-scenario/corpus/README.md). Every scenario runs under each
/// selected mechanism policy (what travels by reference and what is copied) and each pool
/// layout (which domains share memory); a correct implementation passes them all, because
/// copying is always correct and programs cannot tell pools apart.
///
/// Examples:
///   cosh-scenario                         # the whole shipped corpus, every configuration
///   cosh-scenario my.toml -v              # one file, with titles and descriptions
///   cosh-scenario --policy linux-host --layout one-pool
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Scenario files to run; none runs the shipped corpus.
    files: Vec<PathBuf>,
    /// Mechanism policy of the reference model.
    #[arg(long, value_enum, default_value_t = PolicyArg::All)]
    policy: PolicyArg,
    /// Where the scenario's domains live.
    #[arg(long, value_enum, default_value_t = LayoutArg::All)]
    layout: LayoutArg,
    /// Print each scenario's title and description.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PolicyArg {
    /// Everything by reference wherever the semantics allow.
    ByReference,
    /// The Linux host pool: strong moves copy, small or partial buffers copy.
    LinuxHost,
    /// Every transfer is a copy.
    CopyAlways,
    /// All three.
    All,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LayoutArg {
    /// The pools the scenario names.
    AsWritten,
    /// Every domain in one pool.
    OnePool,
    /// Every domain in a pool of its own.
    PoolPerDomain,
    /// All three.
    All,
}

fn policies(arg: PolicyArg) -> Vec<(&'static str, Policy)> {
    let all = [
        ("by-reference", Policy::by_reference()),
        ("linux-host", Policy::linux_host()),
        ("copy-always", Policy::copy_always()),
    ];
    match arg {
        PolicyArg::ByReference => vec![all[0]],
        PolicyArg::LinuxHost => vec![all[1]],
        PolicyArg::CopyAlways => vec![all[2]],
        PolicyArg::All => all.to_vec(),
    }
}

fn layouts(arg: LayoutArg) -> Vec<Layout> {
    match arg {
        LayoutArg::AsWritten => vec![Layout::AsWritten],
        LayoutArg::OnePool => vec![Layout::OnePool],
        LayoutArg::PoolPerDomain => vec![Layout::PoolPerDomain],
        LayoutArg::All => Layout::ALL.to_vec(),
    }
}

fn scenarios(files: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, Scenario)>> {
    if files.is_empty() {
        return Ok(corpus()?);
    }
    files.iter().map(|p| Ok((p.clone(), load(p)?))).collect()
}

#[allow(clippy::print_stdout)]
fn main() -> ExitCode {
    let args = Args::parse();
    let scenarios = match scenarios(&args.files) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cosh-scenario: {e}");
            return ExitCode::from(2);
        }
    };
    let (policies, layouts) = (policies(args.policy), layouts(args.layout));
    let (mut passed, mut failed) = (0, 0);
    for (path, scenario) in &scenarios {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut failures = Vec::new();
        let mut report = None;
        for (policy_name, policy) in &policies {
            for layout in &layouts {
                match check(scenario, &mut Model::new(*policy), *layout) {
                    Ok(r) => report = Some(r),
                    Err(e) => failures.push(format!("    [{policy_name}, {layout}] {e}")),
                }
            }
        }
        let configurations = policies.len() * layouts.len();
        if failures.is_empty() {
            passed += 1;
            let r = report.unwrap_or_default();
            println!(
                "pass  {name:<48} {:>3} steps, {:>2} expected errors, {configurations} configurations",
                r.steps, r.expected_errors
            );
        } else {
            failed += 1;
            println!(
                "FAIL  {name}  ({} of {configurations} configurations)",
                failures.len()
            );
            for f in &failures {
                println!("{f}");
            }
        }
        if args.verbose {
            println!("      {}: {}", scenario.title, scenario.description);
        }
    }
    println!("scenarios: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
