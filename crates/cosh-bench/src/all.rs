//! `cosh bench all`: the paper's whole evaluation in one command — Figures 2a, 2b and 2c and
//! Table 3, each with its baselines in the same run — written to a report folder:
//! `report.md` (every result table, the paper's numbers beside ours where it gives them, the
//! machine, the exact command lines), a CSV and an SVG per figure, and each step's own log.
//!
//! Each step is this program run again (`cosh bench fig2a -- ...`), one after the other, so
//! that a step that fails leaves the others standing and its log says why.
//!
//! What the report needs beyond the CSVs and logs (each step's command, status and time, the
//! whole command, the machine) is kept in the folder too, in `steps.csv` and `machine.csv`, and
//! the report is always written from the folder alone, and the figures drawn again from their
//! CSVs: `--report-only` writes both again, for a report generator that changed since the run
//! or a folder brought from another machine.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

/// `cosh bench all`'s options.
#[derive(Parser, Debug, Clone)]
#[command(
    about = "Runs Figures 2a, 2b, 2c and Table 3 with their baselines and writes a report folder (report.md, CSV and SVG per figure, logs)."
)]
pub struct Args {
    /// Fewer sizes and samples, one replay per target: under two minutes on 2 cores.
    #[arg(long)]
    pub quick: bool,
    /// The report folder (made if missing; files in it are replaced).
    #[arg(long, default_value = "cosh-report", value_name = "DIR")]
    pub out: PathBuf,
    /// The trace folder Table 3 replays (traces/FORMAT.md); without one, Table 3 is skipped.
    #[arg(long, value_name = "DIR")]
    pub trace: Option<PathBuf>,
    /// Only these steps, comma separated (fig2a, fig2b, fig2c, pipe, table3).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Run nothing: write report.md again, and draw the figures again, from what an earlier
    /// run left in --out (its CSVs, logs, steps.csv and machine.csv), for example after the
    /// report's code changed.
    #[arg(long, conflicts_with_all = ["quick", "trace", "only"])]
    pub report_only: bool,
}

/// One step of the evaluation.
struct Step {
    /// Its name, the figure's subcommand, and the file stem of its outputs.
    name: &'static str,
    /// Its options (the outputs are added).
    options: Vec<String>,
    /// What its CSV holds.
    kind: Kind,
}

/// What a step measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Latencies against size (`--csv`, `--plot`).
    Latency,
    /// Throughput against piece size (`--csv`).
    Throughput,
    /// Replay times (`--csv`).
    Replay,
}

/// A run's `--sizes` and `--samples`.
type Run = (&'static str, &'static str);

/// The figures with rows of latencies against size: name, title, and the sizes and samples
/// of the quick and the full run.
const FIGURES: [(&str, &str, [Run; 2]); 3] = [
    (
        "fig2a",
        "Figure 2a: one-way transfer latency against size, every mode and strength, with memcpy, a Unix socket, a pipe, a futex ping-pong and (in a build with the `iceoryx2` feature) iceoryx2, busy-polling and blocking",
        [
            ("4K,64K,1M,16M", "30"),
            ("4K,16K,64K,256K,1M,4M,16M,64M", "200"),
        ],
    ),
    (
        "fig2b",
        "Figure 2b: transfers across pools (to a device pool, through its copy engine), with memcpy, process_vm_writev and TCP loopback",
        [("4K,1M,16M", "20"), ("4K,64K,1M,4M,16M,64M", "100")],
    ),
    (
        "fig2c",
        "Figure 2c: repeated reads of one file against read size, CoshFS's aggregate and legacy APIs against tmpfs pread",
        [("512,4K,64K,1M", "50"), ("512,4K,64K,1M,16M", "400")],
    ),
];

const PIPE_TITLE: &str = "Pipes: a Cosh pipe (aggregates by strong move, and its Read/Write adapters) against a Linux pipe, producer and consumer processes";
const TABLE3_TITLE: &str =
    "Table 3: a real trace replayed on every target, every read and the final tree checked";

/// The step `name`'s title and what its CSV holds.
fn describe(name: &str) -> Option<(&'static str, &'static str, Kind)> {
    if let Some((n, title, _)) = FIGURES.iter().find(|f| f.0 == name) {
        return Some((n, title, Kind::Latency));
    }
    match name {
        "pipe" => Some(("pipe", PIPE_TITLE, Kind::Throughput)),
        "table3" => Some(("table3", TABLE3_TITLE, Kind::Replay)),
        _ => None,
    }
}

fn steps(args: &Args) -> Vec<Step> {
    let quick = args.quick;
    let o = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    let mut all: Vec<Step> = FIGURES
        .iter()
        .map(|(name, _, runs)| {
            let (sizes, samples) = runs[usize::from(!quick)];
            Step {
                name,
                options: o(&["--sizes", sizes, "--samples", samples]),
                kind: Kind::Latency,
            }
        })
        .collect();
    all.push(Step {
        name: "pipe",
        options: if quick {
            o(&["--sizes", "64K,1M", "--total-mib", "64"])
        } else {
            o(&["--sizes", "64K,1M,16M", "--total-mib", "256"])
        },
        kind: Kind::Throughput,
    });
    if let Some(trace) = &args.trace {
        let mut options = vec![trace.display().to_string()];
        options.extend(o(&[
            "--runs",
            if quick { "1" } else { "5" },
            "--warmup",
            "1",
        ]));
        // FUSE only where it can mount (and not in the quick run: a mount takes a while).
        let fuse = !quick
            && Path::new("/dev/fuse").exists()
            && std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").exists()));
        let mut targets = vec![
            "tmpfs",
            "coshfs",
            "coshfs-legacy",
            "device-coshfs",
            "device-coshfs-nocache",
        ];
        if !quick {
            targets.extend(["coshfs-nocache", "coshfs-legacy-nocache"]);
        }
        if fuse {
            targets.push("fuse");
        }
        options.extend(["--targets".to_string(), targets.join(",")]);
        all.push(Step {
            name: "table3",
            options,
            kind: Kind::Replay,
        });
    }
    if !args.only.is_empty() {
        all.retain(|s| args.only.iter().any(|o| o == s.name));
    }
    all
}

/// How a step went.
struct Ran {
    /// The step's name (`fig2a`, ...).
    name: String,
    command: String,
    ok: bool,
    took: Duration,
    status: String,
}

/// What a run was, beyond its CSVs and logs: what the report says of it.
struct Made {
    /// The whole command (`cosh bench all -- --quick ...`).
    command: String,
    took: Duration,
    machine: Vec<(String, String)>,
    ran: Vec<Ran>,
}

const STEPS_CSV: &str = "steps.csv";
const MACHINE_CSV: &str = "machine.csv";

impl Made {
    /// Writes `steps.csv` (the whole run first, as step `all`) and `machine.csv` into `out`.
    fn save(&self, out: &Path) -> Result<(), String> {
        let write = |name: &str, rows: Vec<Vec<String>>| -> Result<(), String> {
            let path = out.join(name);
            let failed =
                |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
            let mut w = csv::Writer::from_path(&path).map_err(|e| failed(&e))?;
            for row in rows {
                w.write_record(&row).map_err(|e| failed(&e))?;
            }
            w.flush().map_err(|e| failed(&e))
        };
        let all_ok = self.ran.iter().all(|r| r.ok);
        let mut steps = vec![
            vec!["step", "ok", "seconds", "status", "command"]
                .into_iter()
                .map(String::from)
                .collect(),
            vec![
                "all".to_string(),
                all_ok.to_string(),
                format!("{:.3}", self.took.as_secs_f64()),
                if all_ok { "ok" } else { "a step failed" }.to_string(),
                self.command.clone(),
            ],
        ];
        for r in &self.ran {
            steps.push(vec![
                r.name.clone(),
                r.ok.to_string(),
                format!("{:.3}", r.took.as_secs_f64()),
                r.status.clone(),
                r.command.clone(),
            ]);
        }
        write(STEPS_CSV, steps)?;
        let mut machine = vec![vec!["field".to_string(), "value".to_string()]];
        machine.extend(self.machine.iter().map(|(k, v)| vec![k.clone(), v.clone()]));
        write(MACHINE_CSV, machine)
    }

    /// What [`Made::save`] wrote in `out`.
    fn load(out: &Path) -> Result<Made, String> {
        let read = |name: &str| -> Result<Vec<csv::StringRecord>, String> {
            let path = out.join(name);
            let mut r = csv::Reader::from_path(&path).map_err(|e| {
                format!(
                    "cannot read {}: {e} (--report-only writes the report of a folder made by `cosh bench all`)",
                    path.display()
                )
            })?;
            r.records()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        let seconds = |rec: &csv::StringRecord, path: &str| -> Result<Duration, String> {
            rec.get(2)
                .and_then(|v| v.parse::<f64>().ok())
                .and_then(|v| Duration::try_from_secs_f64(v).ok())
                .ok_or_else(|| format!("{path}: a row without seconds: {rec:?}"))
        };
        let field = |rec: &csv::StringRecord, i: usize| rec.get(i).unwrap_or("").to_string();
        let mut made = Made {
            command: String::new(),
            took: Duration::ZERO,
            machine: Vec::new(),
            ran: Vec::new(),
        };
        for rec in read(STEPS_CSV)? {
            let name = field(&rec, 0);
            let took = seconds(&rec, STEPS_CSV)?;
            if name == "all" {
                made.command = field(&rec, 4);
                made.took = took;
            } else if describe(&name).is_some() {
                made.ran.push(Ran {
                    ok: field(&rec, 1) == "true",
                    took,
                    status: field(&rec, 3),
                    command: field(&rec, 4),
                    name,
                });
            } else {
                return Err(format!("{STEPS_CSV}: no step {name:?}"));
            }
        }
        made.machine = read(MACHINE_CSV)?
            .iter()
            .map(|rec| (field(rec, 0), field(rec, 1)))
            .collect();
        Ok(made)
    }

    /// The CPU clock in GHz the machine's description gives, if it gives one.
    fn ghz(&self) -> Option<f64> {
        self.machine
            .iter()
            .find(|(k, _)| k == "CPU MHz (now)")
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .map(|mhz| mhz / 1000.0)
    }
}

/// The command that ran with `args`, as a user would type it.
fn command_line(args: &Args) -> String {
    let mut c = String::from("cosh bench all --");
    if args.quick {
        c.push_str(" --quick");
    }
    if let Some(t) = &args.trace {
        let _ = write!(c, " --trace {}", t.display());
    }
    if !args.only.is_empty() {
        let _ = write!(c, " --only {}", args.only.join(","));
    }
    let _ = write!(c, " --out {}", args.out.display());
    c
}

/// Writes `report.md` from what is in `out`; returns its path and what the run was.
fn write_report(out: &Path) -> Result<(PathBuf, Made), String> {
    let made = Made::load(out)?;
    // The figures drawn again from their CSVs, by this program.
    for (name, title) in [
        ("fig2a", crate::report::FIG2A_TITLE),
        ("fig2b", crate::report::FIG2B_TITLE),
        ("fig2c", crate::report::FIG2C_TITLE),
    ] {
        let csv = out.join(format!("{name}.csv"));
        if csv.exists() {
            let rows = crate::report::read_csv(&csv)?;
            if rows.is_empty() {
                continue;
            }
            crate::report::write_svg_titled(&out.join(format!("{name}.svg")), &rows, title)
                .map_err(|e| format!("cannot draw {name}.svg: {e}"))?;
        }
    }
    let path = out.join("report.md");
    std::fs::write(&path, report(out, &made))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((path, made))
}

/// Runs `cosh bench all` with `args` (the first is the program name); the steps are this
/// program started with `bench STEP -- OPTIONS`.
pub fn main_with(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<(), String> {
    let Some(args) = crate::parse_args::<Args>(args)? else {
        return Ok(());
    };
    if args.report_only {
        let (path, made) = write_report(&args.out)?;
        eprintln!(
            "report: {} (written again from the run of `{}`)",
            path.display(),
            made.command
        );
        return Ok(());
    }
    const NAMES: [&str; 5] = ["fig2a", "fig2b", "fig2c", "pipe", "table3"];
    if let Some(bad) = args.only.iter().find(|o| !NAMES.contains(&o.as_str())) {
        return Err(format!(
            "no step {bad:?}: --only takes {}",
            NAMES.join(", ")
        ));
    }
    if args.only.iter().any(|o| o == "table3") && args.trace.is_none() {
        return Err(
            "table3 replays a trace: give its folder with --trace DIR (for example ../shared/traces/devtrace)"
                .into(),
        );
    }
    let steps = steps(&args);
    if steps.is_empty() {
        return Err("no step left to run".into());
    }
    if let Some(t) = &args.trace
        && !t.is_dir()
    {
        return Err(format!(
            "{}: not a trace folder (traces/FORMAT.md)",
            t.display()
        ));
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot make {}: {e}", args.out.display()))?;
    // An earlier run's account goes now: a run stopped half way leaves none, so that
    // `--report-only` never pairs it with this run's files.
    let _ = std::fs::remove_file(args.out.join(STEPS_CSV));
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bar = indicatif::ProgressBar::new(steps.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let mut ran = Vec::new();
    for step in &steps {
        bar.set_message(format!("{} (log: {}.log)", step.name, step.name));
        let mut options = step.options.clone();
        options.extend([
            "--csv".to_string(),
            args.out
                .join(format!("{}.csv", step.name))
                .display()
                .to_string(),
        ]);
        if step.kind == Kind::Latency {
            options.extend([
                "--plot".to_string(),
                args.out
                    .join(format!("{}.svg", step.name))
                    .display()
                    .to_string(),
            ]);
        }
        let log_path = args.out.join(format!("{}.log", step.name));
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let t = Instant::now();
        let status = Command::new(&exe)
            .args(["bench", step.name, "--"])
            .args(&options)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .status();
        let command = format!("cosh bench {} -- {}", step.name, options.join(" "));
        let (ok, status) = match status {
            Ok(s) if s.success() => (true, "ok".to_string()),
            Ok(s) => (false, format!("failed ({s}); see {}.log", step.name)),
            Err(e) => (false, format!("could not run: {e}")),
        };
        ran.push(Ran {
            name: step.name.to_string(),
            command,
            ok,
            took: t.elapsed(),
            status,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let made = Made {
        command: command_line(&args),
        took: started.elapsed(),
        machine: machine(),
        ran,
    };
    made.save(&args.out)?;
    let (path, made) = write_report(&args.out)?;
    let ran = &made.ran;
    eprintln!(
        "report: {} ({} of {} steps ok, {:.0} s)",
        path.display(),
        ran.iter().filter(|r| r.ok).count(),
        ran.len(),
        made.took.as_secs_f64()
    );
    if ran.iter().all(|r| r.ok) {
        Ok(())
    } else {
        Err("a step failed; its log in the report folder says why".into())
    }
}

/// What the machine is, for the report.
fn machine() -> Vec<(String, String)> {
    let field = |name: &str| cpuinfo(name).unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("unknown".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".into(), |k| k.trim().to_string());
    vec![
        ("CPU".into(), field("model name")),
        ("cores available".into(), cores.to_string()),
        ("CPU MHz (now)".into(), field("cpu MHz")),
        ("memory".into(), memory),
        ("Linux".into(), kernel),
    ]
}

/// A field of the first CPU in /proc/cpuinfo (`model name`, `cpu MHz`).
fn cpuinfo(name: &str) -> Option<String> {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with(name))?
        .split_once(':')
        .map(|(_, v)| v.trim().to_string())
}

/// A row of a figure's CSV: (case, size, median ns until the receiver can read the bytes).
type Row = (String, u64, u64);

/// A row of Table 3's CSV.
struct Table3Row {
    target: String,
    /// Every timed run (ms).
    runs: Vec<f64>,
    /// The median run (ms).
    median: f64,
    /// The ratio to tmpfs, as written (empty without tmpfs).
    ratio: String,
    /// `yes` or `no`.
    exact: String,
    /// The first (untimed) replay's time (ms), where there was one.
    first: Option<f64>,
}

/// The rows of a figure's CSV, with the time until the receiver can read the bytes (for a
/// transfer by reference, a new buffer's mapping included; for the baselines the same as the
/// time of delivery).
fn rows(path: &Path) -> Vec<Row> {
    rows_of(path, "readable_ns")
}

/// The rows of a figure's CSV with the time in column `name` (the third column where there
/// is none of that name).
fn rows_of(path: &Path, name: &str) -> Vec<Row> {
    let Ok(mut r) = csv::Reader::from_path(path) else {
        return Vec::new();
    };
    let column = r
        .headers()
        .ok()
        .and_then(|h| h.iter().position(|c| c == name))
        .unwrap_or(2);
    r.records()
        .flatten()
        .filter_map(|rec| {
            Some((
                rec.get(0)?.to_string(),
                rec.get(1)?.parse().ok()?,
                rec.get(column)?.parse().ok()?,
            ))
        })
        .collect()
}

/// The 95 % confidence intervals of a figure's medians (time until readable), by case and
/// size: empty where its CSV has none (one written before they were measured).
type Intervals = std::collections::HashMap<(String, u64), (u64, u64)>;

fn intervals(path: &Path) -> Intervals {
    let Ok(mut r) = csv::Reader::from_path(path) else {
        return Intervals::new();
    };
    let Some((lo, hi)) = r.headers().ok().and_then(|h| {
        let at = |name: &str| h.iter().position(|c| c == name);
        at("readable_lo_ns").zip(at("readable_hi_ns"))
    }) else {
        return Intervals::new();
    };
    r.records()
        .flatten()
        .filter_map(|rec| {
            Some((
                (rec.get(0)?.to_string(), rec.get(1)?.parse().ok()?),
                (rec.get(lo)?.parse().ok()?, rec.get(hi)?.parse().ok()?),
            ))
        })
        .collect()
}

/// How a Cosh case's median compares with a baseline's.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verdict {
    /// As fast or faster.
    NotSlower,
    /// Slower, but the two medians' 95 % confidence intervals overlap: this run cannot tell
    /// the two apart.
    WithinNoise,
    /// Slower, the intervals apart (or not measured).
    Slower,
}

/// `case` against `baseline` at `size`, from their medians `ours` and `theirs`.
fn verdict(
    intervals: &Intervals,
    (case, ours): (&str, u64),
    (baseline, theirs): (&str, u64),
    size: u64,
) -> Verdict {
    if ours <= theirs {
        return Verdict::NotSlower;
    }
    let ci = |c: &str| intervals.get(&(c.to_string(), size)).copied();
    match (ci(case), ci(baseline)) {
        (Some((our_lo, _)), Some((_, their_hi))) if our_lo <= their_hi => Verdict::WithinNoise,
        _ => Verdict::Slower,
    }
}

/// The cases of the figures that are not Cosh: what Cosh is compared with. `memcpy` is a
/// copy within one process (the floor of any copy) and `ring spin` two threads of one
/// process polling shared memory: floors, not ways to pass data to another process.
const BASELINES: [&str; 10] = [
    "unix socket",
    "pipe",
    "stream pipe",
    "futex",
    "process_vm_writev",
    "tcp loopback",
    "tcp loopback, pipelined",
    "tmpfs pread",
    "memcpy",
    "ring spin",
];

/// Floors: shown against every case, never the fastest baseline.
const FLOORS: [&str; 2] = ["memcpy", "ring spin"];

/// Whether `case` is a baseline rather than one of Cosh's.
pub(crate) fn is_baseline(case: &str) -> bool {
    BASELINES.contains(&case) || case.starts_with("iceoryx2")
}

/// How a case waits, so that like is compared with like: a stream with streams; a single
/// transfer (each taken after a pause, in turn with the other cases) to a receiver asleep
/// since long before with single transfers of sockets, pipes and iceoryx2 woken by its
/// events, and one to a receiver that busy-polls with iceoryx2's single samples to a
/// receiver that busy-polls; a back-and-forth whose sides sleep only between messages (a
/// bounce, a ping-pong) with ping-pongs of futexes and iceoryx2, and one whose sides
/// busy-poll with iceoryx2's polling ping-pong.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Stream,
    Polls,
    Sleeps,
    BackAndForth,
    BackAndForthPolls,
}

fn class(case: &str) -> Class {
    if case.starts_with("stream") {
        Class::Stream
    } else if case == crate::ICE_SINGLE {
        Class::Sleeps
    } else if case == crate::ICE_SINGLE_POLLS {
        Class::Polls
    } else if case.ends_with("blocks") || case.ends_with("futex") {
        Class::BackAndForth
    } else if case.contains("bounce") || case.starts_with("iceoryx2") || case == "ring spin" {
        Class::BackAndForthPolls
    } else if case.contains("polls") {
        Class::Polls
    } else {
        Class::Sleeps
    }
}

/// Whether baseline `case` can be the one a case is compared with: not a floor, not a round
/// trip.
fn rival(case: &str) -> bool {
    !FLOORS.contains(&case) && !case.starts_with("iceoryx2 round trip")
}

/// The fastest baseline of `class` at `size` (not a floor), with its name.
fn fastest_baseline(rows: &[Row], class_of: Class, size: u64) -> Option<(&str, u64)> {
    rows.iter()
        .filter(|r| r.1 == size && is_baseline(&r.0) && rival(&r.0) && class(&r.0) == class_of)
        .map(|r| (r.0.as_str(), r.2.max(1)))
        .min_by_key(|(_, ns)| *ns)
}

/// Ratio tables: for each Cosh case and size, the fastest baseline that passes data to
/// another process over Cosh's time (above 1: Cosh is faster), and which one it was; a list
/// of where Cosh is slower; then every case against every baseline, folded.
fn ratios(rows: &[Row], intervals: &Intervals) -> String {
    let (sizes, all) = axes(rows);
    let (baselines, cases): (Vec<&str>, Vec<&str>) = all.into_iter().partition(|c| is_baseline(c));
    let at = |case: &str, size: u64| {
        rows.iter()
            .find(|r| r.0 == case && r.1 == size)
            .map(|r| r.2.max(1))
    };
    let classes = [
        Class::Sleeps,
        Class::Polls,
        Class::BackAndForth,
        Class::BackAndForthPolls,
        Class::Stream,
    ];
    let best: Vec<Vec<Option<(&str, u64)>>> = classes
        .iter()
        .map(|k| {
            sizes
                .iter()
                .map(|s| fastest_baseline(rows, *k, *s))
                .collect()
        })
        .collect();
    if cases.is_empty() || best.iter().flatten().all(Option::is_none) {
        return String::new();
    }
    // The kinds this figure has, each with the baselines it is compared with.
    let kinds: Vec<(&str, String, bool)> = classes
        .iter()
        .filter(|k| cases.iter().any(|c| class(c) == **k))
        .filter_map(|k| {
            let against: Vec<String> = baselines
                .iter()
                .filter(|b| class(b) == *k && rival(b))
                .map(|b| format!("`{b}`"))
                .collect();
            let who = match k {
                Class::Sleeps => "a single transfer to a receiver that sleeps",
                Class::Polls => "a single transfer to a receiver that busy-polls",
                Class::BackAndForth => "a back-and-forth whose sides sleep between messages",
                Class::BackAndForthPolls => "a back-and-forth whose sides busy-poll",
                Class::Stream => "a stream",
            };
            match against.as_slice() {
                [] => None,
                [one] => Some((who, one.clone(), false)),
                many => Some((who, many.join(", "), true)),
            }
        })
        .collect();
    let against = match kinds.as_slice() {
        [(_, names, true)] => {
            format!("against the fastest of {names} at that size (named in the header)")
        }
        [(_, name, false)] => format!("against {name} at that size"),
        _ => format!(
            "against the fastest baseline of its kind at that size — {} (named in the header, in that order)",
            kinds
                .iter()
                .map(|(who, names, _)| format!("{who} against {names}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    let mut out = format!(
        "Ratios (the baseline's median over Cosh's; above 1.00x Cosh is faster), each case {against}:\n\n"
    );
    let columns: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, size)| {
            let names: Vec<&str> = best.iter().filter_map(|b| b[i]).map(|(n, _)| n).collect();
            format!("{} ({})", size_name(*size), names.join(" / "))
        })
        .collect();
    out.push_str(&table_head("case vs the fastest baseline", &columns));
    let (mut slower, mut noise) = (Vec::new(), Vec::new());
    for c in &cases {
        let _ = write!(out, "| {c} |");
        let k = classes.iter().position(|k| *k == class(c)).unwrap_or(0);
        for (size, b) in sizes.iter().zip(&best[k]) {
            match (at(c, *size), b) {
                (Some(ns), Some((name, base))) => {
                    let r = *base as f64 / ns as f64;
                    let said = format!("{c} at {} ({name}: {r:.2}x)", size_name(*size));
                    match verdict(intervals, (c, ns), (name, *base), *size) {
                        Verdict::NotSlower => {}
                        Verdict::WithinNoise => noise.push(said),
                        Verdict::Slower => slower.push(said),
                    }
                    let _ = write!(out, " {r:.2}x |");
                }
                _ => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    if slower.is_empty() {
        out.push_str(
            "\nNo Cosh case is measurably slower than the fastest baseline at any size.\n",
        );
    } else {
        let _ = writeln!(
            out,
            "\nSlower than the fastest baseline: {}.",
            slower.join("; ")
        );
    }
    if !noise.is_empty() {
        let _ = writeln!(
            out,
            "\nSlower by a margin this run cannot resolve (the 95 % confidence intervals of the two medians overlap): {}.",
            noise.join("; ")
        );
    }
    for b in &baselines {
        let _ = write!(
            out,
            "\n<details><summary>Every case against {b}</summary>\n\n"
        );
        let names: Vec<String> = sizes.iter().map(|s| size_name(*s)).collect();
        out.push_str(&table_head("case", &names));
        for c in &cases {
            let _ = write!(out, "| {c} |");
            for size in &sizes {
                match (at(c, *size), at(b, *size)) {
                    (Some(ns), Some(base)) => {
                        let _ = write!(out, " {:.2}x |", base as f64 / ns as f64);
                    }
                    _ => out.push_str(" – |"),
                }
            }
            out.push('\n');
        }
        out.push_str("\n</details>\n");
    }
    out
}

fn size_name(bytes: u64) -> String {
    crate::report::human_size(bytes)
}

/// A table's sizes (ascending) and cases (in the order they first appear).
fn axes(rows: &[Row]) -> (Vec<u64>, Vec<&str>) {
    let mut sizes: Vec<u64> = rows.iter().map(|r| r.1).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut cases: Vec<&str> = Vec::new();
    for r in rows {
        if !cases.contains(&r.0.as_str()) {
            cases.push(&r.0);
        }
    }
    (sizes, cases)
}

/// A Markdown table's header and rule: `first`, then `columns` aligned right.
fn table_head(first: &str, columns: &[String]) -> String {
    let mut out = format!("| {first} |");
    for c in columns {
        let _ = write!(out, " {c} |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(columns.len()));
    out.push('\n');
    out
}

fn us(ns: u64) -> String {
    let us = ns as f64 / 1000.0;
    if us >= 100.0 {
        format!("{us:.0}")
    } else {
        format!("{us:.1}")
    }
}

/// A table of median microseconds: one row per case, one column per size; the fastest at
/// each size in bold.
fn pivot(rows: &[Row]) -> String {
    let (sizes, cases) = axes(rows);
    let best: Vec<Option<u64>> = sizes
        .iter()
        .map(|s| rows.iter().filter(|r| r.1 == *s).map(|r| r.2).min())
        .collect();
    let names: Vec<String> = sizes.iter().map(|s| size_name(*s)).collect();
    let mut out = table_head("case (median µs)", &names);
    for c in cases {
        let _ = write!(out, "| {c} |");
        for (s, b) in sizes.iter().zip(&best) {
            match rows.iter().find(|r| r.0 == c && r.1 == *s) {
                Some(r) if Some(r.2) == *b => {
                    let _ = write!(out, " **{}** |", us(r.2));
                }
                Some(r) => {
                    let _ = write!(out, " {} |", us(r.2));
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}

/// The last cell of a Table 3 row when the run had an untimed first replay (the time, or a
/// dash where that target has none); nothing when it had none.
fn first_replay_cell(untimed: bool, first_ms: Option<f64>) -> String {
    if !untimed {
        return String::new();
    }
    format!(
        " {} |",
        first_ms.map_or("–".to_string(), |f| format!("{f:.1}"))
    )
}

/// The paper's numbers beside ours, for the steps where it gives them.
fn against_paper(step: &str, r: &[Row], table: &[Table3Row], ghz: Option<f64>) -> String {
    let mut s = String::new();
    match step {
        "fig2a" => {
            let moves: Vec<_> = r.iter().filter(|x| x.0.starts_with("move")).collect();
            let smallest = moves.iter().map(|r| r.1).min();
            let base = moves
                .iter()
                .filter(|x| Some(x.1) == smallest)
                .map(|x| x.2)
                .min();
            if let (Some(size), Some(ns)) = (smallest, base) {
                let cycles = ghz.map_or("(CPU clock unknown)".to_string(), |g| {
                    format!("about {:.0} cycles at {g:.2} GHz", ns as f64 * g)
                });
                let _ = writeln!(
                    s,
                    "The paper: a transfer's base cost is about 6,000 cycles. Here: the fastest move of {} takes {} µs, {cycles}.",
                    size_name(size),
                    us(ns)
                );
            }
        }
        "fig2b" => {
            let device: Vec<_> = r.iter().filter(|x| x.0 == "host to device").collect();
            if let Some(first) = device.iter().min_by_key(|x| x.1) {
                let _ = writeln!(
                    s,
                    "The paper: its co-processor's DMA engine has a fixed cost of about 172 µs per transfer. Here: a transfer of {} from the host pool to a device pool (copied by the device pool's copy engine, no DMA emulated) takes {} µs.",
                    size_name(first.1),
                    us(first.2)
                );
            }
        }
        "table3" => {
            let get = |name: &str| {
                table
                    .iter()
                    .find(|t| t.target == name)
                    .map(|t| (t.median, t.first))
            };
            let untimed = table.iter().any(|t| t.first.is_some());
            if untimed {
                let _ = writeln!(
                    s,
                    "| | the paper (ms) | here (ms) | here, the first replay (ms) |\n|---|---:|---:|---:|"
                );
            } else {
                let _ = writeln!(s, "| | the paper (ms) | here (ms) |\n|---|---:|---:|");
            }
            for (label, paper, ours) in [
                (
                    "kernel file system (ramfs; here tmpfs)",
                    "145",
                    get("tmpfs"),
                ),
                ("CoshFS on the host", "144", get("coshfs")),
                (
                    "CoshFS from the co-processor, no cache (here a device pool)",
                    "49,742",
                    get("device-coshfs-nocache"),
                ),
                (
                    "CoshFS from the co-processor, with the cache",
                    "2,464",
                    get("device-coshfs"),
                ),
            ] {
                let here = ours.map_or("not run".to_string(), |(ms, _)| format!("{ms:.1}"));
                let first = first_replay_cell(untimed, ours.and_then(|o| o.1));
                let _ = writeln!(s, "| {label} | {paper} | {here} |{first}");
            }
            s.push_str(
                "\nThe paper's trace and machine differ from ours (a Lua build here); compare the ratios to the kernel's file system, not the times.",
            );
            if untimed {
                s.push_str(" The paper's replay with the cache began with nothing cached, as our first replay does.");
            }
            s.push('\n');
        }
        _ => {}
    }
    s
}

/// The rows of Table 3's CSV.
fn table3(path: &Path) -> Vec<Table3Row> {
    let Ok(mut r) = csv::Reader::from_path(path) else {
        return Vec::new();
    };
    r.records()
        .flatten()
        .filter_map(|rec| {
            Some(Table3Row {
                target: rec.get(0)?.to_string(),
                runs: rec
                    .get(1)?
                    .split(';')
                    .filter_map(|t| t.parse().ok())
                    .collect(),
                median: rec.get(2)?.parse().ok()?,
                ratio: rec.get(3)?.to_string(),
                exact: rec.get(4)?.to_string(),
                // Absent in CSVs of runs without an untimed replay.
                first: rec.get(5).and_then(|f| f.parse().ok()),
            })
        })
        .collect()
}

/// The report of the run `made`, whose CSVs and logs are in `out`.
fn report(out: &Path, made: &Made) -> String {
    let mut s = String::from("# Cosh: the paper's evaluation on this machine\n\n");
    let _ = writeln!(
        s,
        "Made by `{}` in {:.0} s. Every step measures its baselines in the same run, on the same machine, so the ratios hold even where the machine is noisy; each figure's median is the middle sample of many.\n",
        made.command,
        made.took.as_secs_f64()
    );
    s.push_str("## The machine\n\n| | |\n|---|---|\n");
    for (k, v) in &made.machine {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s.push_str("\n## The steps\n\n| step | status | time | command |\n|---|---|---:|---|\n");
    for r in &made.ran {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} s | `{}` |",
            r.name,
            r.status,
            r.took.as_secs_f64(),
            r.command
        );
    }
    let steps = made
        .ran
        .iter()
        .filter_map(|r| describe(&r.name).map(|(name, title, kind)| (name, title, kind, r)));
    for (name, title, kind, r) in steps {
        let _ = writeln!(s, "\n## {title}\n");
        if !r.ok {
            let _ = writeln!(s, "This step {}.", r.status);
            continue;
        }
        let csv = out.join(format!("{name}.csv"));
        let (figure, table) = match kind {
            Kind::Latency => (rows(&csv), Vec::new()),
            Kind::Throughput => (Vec::new(), Vec::new()),
            Kind::Replay => (Vec::new(), table3(&csv)),
        };
        if kind == Kind::Throughput {
            s.push_str(&throughput(&rows(&csv)));
            let _ = writeln!(
                s,
                "\nCSV: [`pipe.csv`](pipe.csv); the full output: [`pipe.log`](pipe.log).\n"
            );
        } else if kind == Kind::Latency {
            let _ = writeln!(
                s,
                "![{}]({}.svg)\n\nMedian microseconds until the receiver can read the bytes (a transfer by reference of a buffer the receiver never mapped includes mapping it); the fastest at each size in bold.{}\n\n{}\n{}\nCSV: [`{}.csv`]({}.csv) (both times: delivered and readable); the full output: [`{}.log`]({}.log).\n",
                name,
                name,
                if name == "fig2a" {
                    " The sender and the receiver run on two different cores, and the receiver of every single transfer (Cosh's, the socket's, the pipe's, iceoryx2's) is blocked when the sender starts, the socket's and the pipe's reading into memory already faulted in; Cosh's and iceoryx2's receivers read a byte of every page received before they stop the clock, so that none of the bytes faults when read. Below 1 MiB the single transfers of every case and baseline take their samples in turn, one of each per round, so that a slow phase of the machine falls on all of them alike; from 1 MiB each case takes its samples back to back, in its own steady state of caches and free lists."
                } else {
                    ""
                },
                pivot(&figure),
                ratios(&figure, &intervals(&csv)),
                name,
                name,
                name,
                name
            );
        } else {
            let untimed = table.iter().any(|t| t.first.is_some());
            if untimed {
                s.push_str("Every target replays the trace once untimed first, then in the timed runs, whose median is compared: a service's first replay makes its buffers and fills its cache, which the kernel behind tmpfs did long before. The first replay's time is in the last column (CoshFS's services start afresh for this step).\n\n");
                s.push_str("| target | median (ms) | vs tmpfs | exact | first replay, untimed (ms) |\n|---|---:|---:|---|---:|\n");
            } else {
                s.push_str("| target | median (ms) | vs tmpfs | exact |\n|---|---:|---:|---|\n");
            }
            for t in &table {
                let ratio = t
                    .ratio
                    .parse::<f64>()
                    .map_or("–".to_string(), |r| format!("{r:.2}x"));
                let first = first_replay_cell(untimed, t.first);
                let _ = writeln!(
                    s,
                    "| {} | {:.1} | {ratio} | {} |{first}",
                    t.target, t.median, t.exact
                );
            }
            let _ = writeln!(
                s,
                "\nCSV: [`table3.csv`](table3.csv); the replay's own output: [`table3.log`](table3.log).\n"
            );
        }
        let paper = against_paper(name, &figure, &table, made.ghz());
        if !paper.is_empty() {
            let _ = writeln!(s, "{paper}");
        }
    }
    if !made.ran.iter().any(|r| r.name == "table3") {
        s.push_str(
            "\n## Table 3\n\nNot in this run: it replays a trace folder given with `--trace DIR` (for example `../shared/traces/devtrace`).\n",
        );
    }
    s.push_str(&targets(out));
    s.push_str(&reasons(out));
    s
}

/// The sizes of `cases`, each once, smallest first.
fn distinct_sizes(cases: &[(&str, u64)]) -> Vec<u64> {
    let mut sizes: Vec<u64> = cases.iter().map(|c| c.1).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// Why Figure 2a's cases slower than the fastest baseline of their kind are slower, and why
/// the earlier targets not met are not, each from numbers of this run.
fn reasons(out: &Path) -> String {
    let csv = out.join("fig2a.csv");
    let (a, d, b) = (
        rows(&csv),
        rows_of(&csv, "delivered_ns"),
        rows(&out.join("fig2b.csv")),
    );
    let ci = intervals(&csv);
    let get = |rows: &[Row], case: &str, size: u64| {
        rows.iter()
            .find(|r| r.0 == case && r.1 == size)
            .map(|r| r.2 as f64)
    };
    let ust = |ns: f64| us(ns as u64);
    let range = |v: &[f64]| -> String {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        if (hi - lo).abs() < 50.0 {
            ust(lo)
        } else {
            format!("{}–{}", ust(lo), ust(hi))
        }
    };
    // Cosh's cases slower than the fastest baseline of their kind, by kind: (case, size).
    let mut slower: Vec<(Class, &str, u64)> = Vec::new();
    for r in &a {
        if is_baseline(&r.0) {
            continue;
        }
        if let Some((_, best)) = fastest_baseline(&a, class(&r.0), r.1)
            && r.2 > best
        {
            slower.push((class(&r.0), &r.0, r.1));
        }
    }
    let mut items: Vec<String> = Vec::new();
    // The inline limits the block manager chose (the first line of Figure 2a's log).
    let policy = std::fs::read_to_string(out.join("fig2a.log"))
        .ok()
        .and_then(|log| {
            log.lines()
                .find(|l| l.starts_with("small transfers:"))
                .map(str::to_string)
        });
    // The word of the policy line that follows `after`.
    let field = |after: &str| -> Option<&str> {
        let text = policy.as_deref()?;
        let at = text.find(after)? + after.len();
        text[at..].split_whitespace().next()
    };
    let limit = |after: &str| -> u64 { field(after).and_then(|w| w.parse().ok()).unwrap_or(0) };
    let inline_strong = limit("inline up to ");
    let inline_weak = limit("bytes strong, ");
    // A receiver that sleeps: a weak transfer whose time is mostly the receiver's mapping of
    // a new buffer; a transfer through the block manager (above the inline limits); an
    // inline one (one wake-up, like a socket's or a pipe's).
    // Where iceoryx2, woken by its events, is the fastest: its pre-mapped samples.
    let (mut mapped, mut through, mut inline) = (Vec::new(), Vec::new(), Vec::new());
    let mut premapped = Vec::new();
    // (The bare ring with its futex doorbell is a floor of the fast path, not a transfer.)
    for (_, case, size) in slower
        .iter()
        .filter(|(k, c, _)| *k == Class::Sleeps && !c.starts_with("ring"))
    {
        if fastest_baseline(&a, Class::Sleeps, *size).is_some_and(|b| b.0.starts_with("iceoryx2")) {
            premapped.push((*case, *size));
            continue;
        }
        let weak = case.contains("weak");
        let (ready, came) = (get(&a, case, *size), get(&d, case, *size));
        if let (true, Some(ready), Some(came)) = (weak, ready, came)
            && ready - came > ready / 2.0
        {
            mapped.push((*case, *size, ready, came));
        } else if *size > if weak { inline_weak } else { inline_strong } {
            through.push((*case, *size));
        } else {
            inline.push((*case, *size));
        }
    }
    let futex = get(&a, "futex", 64);
    // By size: the slower Cosh cases' range against the fastest baseline of their kind.
    let group_of = |kind: Class, cases: &[(&str, u64)]| -> String {
        let sizes = distinct_sizes(cases);
        sizes
            .iter()
            .filter_map(|s| {
                let ours: Vec<f64> = cases
                    .iter()
                    .filter(|c| c.1 == *s)
                    .filter_map(|(c, s)| get(&a, c, *s))
                    .collect();
                let (name, best) = fastest_baseline(&a, kind, *s)?;
                Some(format!(
                    "{} Cosh {} vs the {name} {}",
                    size_name(*s),
                    range(&ours),
                    ust(best as f64)
                ))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let group = |cases: &[(&str, u64)]| group_of(Class::Sleeps, cases);
    if !inline.is_empty() {
        items.push(format!(
            "**A receiver that sleeps, inline** (µs): {}. Either way the receiver, asleep on the other core, is woken once (a futex ping-pong between the same two processes: {} µs in this run); Cosh wakes it before it copies the bytes into the ring, so that the copy overlaps the wake-up, and the receiver copies them out once awake; a socket or a pipe copies them through the kernel. {} of these {} pairs are within the noise (the 95 % confidence intervals of the two medians overlap; below 1 MiB the cases' samples are taken in turn, so a slow phase of the machine falls on all of them).",
            group(&inline),
            futex.map(ust).unwrap_or_else(|| "–".into()),
            inline
                .iter()
                .filter(|(c, size)| {
                    let ours = get(&a, c, *size).map_or(0, |x| x as u64);
                    fastest_baseline(&a, Class::Sleeps, *size).is_some_and(|b| {
                        verdict(&ci, (c, ours), b, *size) == Verdict::WithinNoise
                    })
                })
                .count(),
            inline.len()
        ));
    }
    if !through.is_empty() {
        items.push(format!(
            "**A receiver that sleeps, above the inline limits ({inline_strong} bytes strong, {inline_weak} weak)** (µs): {}. Through the block manager a transfer wakes two processes in turn (the block manager, which copies, then the receiver), a socket or a pipe one.",
            group(&through)
        ));
    }
    for (case, size, ready, came) in mapped {
        let pages = size / 4096;
        let best = fastest_baseline(&a, Class::Sleeps, size).map(|(n, ns)| (n, ns as f64));
        let bounce = get(&a, "weak bounce, blocks", size);
        items.push(format!(
            "**{case} at {}**: delivered in {} µs, readable after {} µs: the receiver maps {pages} pages it never mapped ({:.0} ns a page){}. Once mapped, the same buffer goes back and forth for {} µs a transfer (weak bounce, blocking): a weak transfer pays for the mapping once, not per transfer.",
            size_name(size),
            ust(came),
            ust(ready),
            (ready - came) / pages.max(1) as f64,
            best.map(|(n, t)| format!(", where the {n} copies the bytes in {} µs", ust(t)))
                .unwrap_or_default(),
            bounce.map(ust).unwrap_or_else(|| "–".into())
        ));
    }
    let polls: Vec<(&str, u64)> = slower
        .iter()
        .filter(|(k, _, _)| *k == Class::Polls)
        .map(|x| (x.1, x.2))
        .collect();
    let bounced: Vec<u64> = {
        let mut v: Vec<u64> = slower
            .iter()
            .filter(|(k, _, _)| *k == Class::BackAndForthPolls)
            .map(|x| x.2)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    // The weak bounce against iceoryx2 at `sizes`: "SIZE Cosh vs iceoryx2" (µs) each.
    let bounce_pairs = |sizes: &[u64], bounce: &str, ice: &str| -> Vec<String> {
        sizes
            .iter()
            .filter_map(|s| {
                Some(format!(
                    "{} {} vs {}",
                    size_name(*s),
                    ust(get(&a, bounce, *s)?),
                    ust(get(&a, ice, *s)?)
                ))
            })
            .collect()
    };
    // The least any transfer that keeps a fresh buffer private until it is sent can take to
    // hand its bytes to another process, a wake-up aside: a copy of them (memcpy within one
    // process's caches, a floor) or a mapping of them (the block manager's start-up measure,
    // the policy line), whichever is cheaper; in ns.
    let mapping = policy.as_deref().and_then(|text| {
        let at = text.find("mapping a new buffer ")? + "mapping a new buffer ".len();
        let mut w = text[at..].split_whitespace();
        let fixed: f64 = w.next()?.parse().ok()?;
        let per_mib: f64 = w.nth(2)?.parse().ok()?;
        Some((fixed, per_mib))
    });
    let bound = |size: u64| -> Option<f64> {
        let copy = get(&a, "memcpy", size)?;
        let map = mapping
            .map(|(fixed, per_mib)| (fixed + per_mib * size as f64 / (1u64 << 20) as f64) * 1e3);
        Some(map.map_or(copy, |m| copy.min(m)))
    };
    // Where that bound alone exceeds iceoryx2's whole transfer (`kind`'s fastest baseline,
    // when it is iceoryx2's) among `cases`: a sentence naming those sizes, and the others.
    let beyond = |kind: Class, cases: &[(&str, u64)]| -> String {
        let sizes = distinct_sizes(cases);
        let (mut out_of_reach, mut within) = (Vec::new(), Vec::new());
        for s in sizes {
            let (Some(least), Some((name, best))) = (bound(s), fastest_baseline(&a, kind, s))
            else {
                continue;
            };
            if !name.starts_with("iceoryx2") {
                continue;
            }
            let said = format!("{} {} vs {}", size_name(s), ust(least), ust(best as f64));
            if least > best as f64 {
                out_of_reach.push(said);
            } else {
                within.push(said);
            }
        }
        let mut text = String::new();
        if !out_of_reach.is_empty() {
            let _ = write!(
                text,
                " Beyond the reach of any transfer that keeps a fresh buffer private until it is sent (µs, the cheaper of a copy of its bytes — memcpy within one process's caches — and a mapping of them — the policy line — against iceoryx2's whole transfer): {}.",
                out_of_reach.join("; ")
            );
        }
        if !within.is_empty() {
            let _ = write!(
                text,
                " Below it (µs, that bound vs iceoryx2): {}; there the difference is Cosh's own path (a second copy, its records and checks), not the bound.",
                within.join("; ")
            );
        }
        text
    };
    if !polls.is_empty() {
        items.push(format!(
            "**A single transfer to a receiver that busy-polls** (µs): {}. iceoryx2 hands over an offset into a pool of samples both processes mapped when they connected (the subscriber can read the whole pool, samples not yet sent included); Cosh's single transfers of a fresh buffer copy it or map it, because a fresh allocation is private to its domain until it is transferred (invariant 4 in ARCHITECTURE.md: no other domain may observe it before). Inline, the bytes are copied twice: into the ring's staging area, which both processes map, and out of it into a buffer of the receiver's own, which the sender cannot write (as a strong transfer requires; a weak one is carried the same way).{}",
            group_of(Class::Polls, &polls),
            beyond(Class::Polls, &polls)
        ));
    }
    if !bounced.is_empty() {
        let pairs = bounce_pairs(&bounced, "weak bounce, polls", "iceoryx2 one-way");
        items.push(format!(
            "**A buffer bounced, both sides busy-polling** (µs one way, Cosh vs iceoryx2): {}. Both hand over a descriptor of memory both processes map already. A Cosh transfer also tells the block manager who holds the buffer now (a record in its request ring, which the block manager applies before anyone's next request, so that its ledger of rights stays exact) and checks the sender's rights and the receiver's mapping; iceoryx2 keeps no such account (its subscriber can read every sample of the pool, sent or not).",
            pairs.join("; ")
        ));
    }
    let asleep: Vec<(&str, u64)> = slower
        .iter()
        .filter(|(k, _, _)| *k == Class::BackAndForth)
        .map(|x| (x.1, x.2))
        .collect();
    if !asleep.is_empty() {
        let sizes = distinct_sizes(&asleep);
        let polled: Vec<String> = sizes
            .iter()
            .filter_map(|s| {
                Some(format!(
                    "{} {}",
                    size_name(*s),
                    ust(get(&a, "weak bounce, polls", *s)?)
                ))
            })
            .collect();
        items.push(format!(
            "**A back-and-forth whose sides sleep between messages** (µs one way): {}. Each trip is one wake-up of the other side (a bare futex ping-pong between the same two processes: {} µs in this run) and the transfer itself, which the same bounce busy-polling measures without the wake-up (µs: {}); iceoryx2's blocking ping-pong wakes its listener likewise. The wake-up is most of either, and what it costs moves by a few microseconds from one phase of the machine to the next (the rounds are taken in turn so that a phase falls on both).",
            group_of(Class::BackAndForth, &asleep),
            futex.map(ust).unwrap_or_else(|| "–".into()),
            if polled.is_empty() {
                "not measured".to_string()
            } else {
                polled.join(", ")
            }
        ));
    }
    if !premapped.is_empty() {
        let sizes = distinct_sizes(&premapped);
        let pairs = bounce_pairs(&sizes, "weak bounce, blocks", "iceoryx2 one-way, blocks");
        items.push(format!(
            "**A receiver that sleeps, against iceoryx2 woken by its events** (µs): {}. iceoryx2 wakes the receiver and hands over an offset into a pool of samples both processes mapped when they connected; Cosh's single transfers of a fresh buffer wake it too, and copy the buffer or map it besides (invariant 4, as for a receiver that busy-polls).{} The like-for-like case is a buffer both domains already map, bounced with the receiver asleep, against iceoryx2's own ping-pong: µs one way, Cosh vs iceoryx2, {}.",
            group(&premapped),
            beyond(Class::Sleeps, &premapped),
            if pairs.is_empty() {
                "not measured".to_string()
            } else {
                pairs.join("; ")
            }
        ));
    }
    let mib = 1u64 << 20;
    // The earlier targets not met (the same tests as in the targets table).
    if let (Some(small), Some(share), Some(copy)) = (
        get(&a, "share strong", 16 << 10),
        get(&a, "share strong", 16 << 20),
        get(&a, "memcpy", 16 << 20),
    ) && share / small > 3.0
    {
        items.push(format!(
            "**A strong share is not flat**: below the size the block manager's measured policy gives (the policy line of Figure 2a's log), a strong share of a buffer never shared is a copy, cheaper than sealing and mapping with 4 KiB pages, and grows like one: {} µs at 16 MiB, memcpy {} µs. Sealing by reference (`coshd --share-copy-max 0`) grows with the pages unmapped and mapped instead; only huge pages would make it flat.",
            ust(share),
            ust(copy)
        ));
    }
    // A busy-polling weak bounce whose largest size took above 1.5x its smallest.
    let polled: Vec<(u64, f64)> = a
        .iter()
        .filter(|r| r.0 == "weak bounce, polls")
        .map(|r| (r.1, r.2 as f64))
        .collect();
    if let (Some(&(small, x)), Some(&(large, y))) = (
        polled.iter().min_by_key(|p| p.0),
        polled.iter().max_by_key(|p| p.0),
    ) && y / x > 1.5
    {
        items.push(format!(
            "**A weak transfer's cost not flat** (µs one way, busy-polling): {} {} vs {} {}. Nothing in a bounce grows with the size: one record each way on the direct ring, the buffer mapped on both sides since its first trip. Each size is measured in a phase of the run of its own, and a median of half a microsecond moves by tenths from one phase to the next, as the sizes between show: {}.",
            size_name(large),
            ust(y),
            size_name(small),
            ust(x),
            polled
                .iter()
                .map(|(s, t)| format!("{} {}", size_name(*s), ust(*t)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // The block manager's copy of a buffer larger than the caches, measured at start-up.
    let cold_copy = field("copying a large buffer ").and_then(|w| w.parse::<f64>().ok());
    // A blocking weak bounce whose slowest size is above 1.25x the futex ping-pong.
    let bounces: Vec<(u64, f64)> = a
        .iter()
        .filter(|r| r.0 == "weak bounce, blocks")
        .map(|r| (r.1, r.2 as f64))
        .collect();
    if let (Some(futex), Some(&(size, worst))) =
        (futex, bounces.iter().max_by(|x, y| x.1.total_cmp(&y.1)))
        && worst / futex > 1.25
    {
        let others: Vec<f64> = bounces
            .iter()
            .filter(|b| b.0 != size)
            .map(|b| b.1)
            .collect();
        let mut item = format!(
            "**A blocking weak bounce above 1.25x the futex ping-pong** (µs): {} {} vs {}. Both are one futex wake-up across the two cores (the bounce adds a record on the direct ring).",
            size_name(size),
            ust(worst),
            ust(futex)
        );
        if !others.is_empty() {
            let _ = write!(
                item,
                " At its other sizes the bounce took {} µs: each size is measured in a phase of the run of its own, the futex once (in turn with the ring's doorbell), and a blocking median moves by as much from one phase to the next.",
                range(&others)
            );
        }
        items.push(item);
    }
    // Streams from 1 MiB below 0.8x memcpy: (size, per transfer, memcpy), ascending, of
    // strong moves and of copies (the same path: inline, or the block manager's copy).
    let streams = [
        ("stream move strong", "strong moves"),
        ("stream copy", "copies"),
    ];
    let below = |case: &str| short_of(&a, case, "memcpy", 0.8, mib);
    let each: Vec<String> = streams
        .iter()
        .filter_map(|(case, said)| {
            let v = below(case);
            (!v.is_empty()).then(|| {
                let sizes: Vec<String> = v
                    .iter()
                    .map(|(size, stream, copy)| {
                        format!("{} {} vs {}", size_name(*size), ust(*stream), ust(*copy))
                    })
                    .collect();
                format!("{said} {}", sizes.join(", "))
            })
        })
        .collect();
    let mut short: Vec<(u64, f64, f64)> = streams.iter().flat_map(|(c, _)| below(c)).collect();
    short.sort_by_key(|x| x.0);
    if !short.is_empty() {
        let mut item = format!(
            "**Streams below 0.8x memcpy** (µs per transfer against memcpy): {}. memcpy copies the same bytes again and again, within the caches.",
            each.join("; ")
        );
        if short.iter().any(|x| x.0 <= inline_strong) {
            let _ = write!(
                item,
                " Up to {} (the policy line) a stream's transfers travel inline: the sender's library copies each into the direct ring's staging area and the receiver's copies it out, two copies of every byte where memcpy makes one, overlapping only as far as the two cores keep pace.",
                size_name(inline_strong)
            );
        }
        if let Some(&(size, stream, hot)) = short.iter().find(|x| x.0 > inline_strong) {
            if inline_strong > 0 {
                let _ = write!(
                    item,
                    " Above {} (the largest transfer that travels inline, the policy line) each",
                    size_name(inline_strong)
                );
            } else {
                item.push_str(" Each");
            }
            item.push_str(
                " transfer is a round trip to the block manager and its copy of the sender's buffer into one of the receiver's",
            );
            if let Some(cold) = cold_copy {
                let _ = write!(
                    item,
                    ", plus a wake-up of the block manager and of the sender. At {} it takes {} µs a transfer; a copy of that size takes {} µs out of the caches ({} µs a MiB, measured by the block manager at start-up on 8 MiB, the policy line) and {} µs within them (memcpy)",
                    size_name(size),
                    ust(stream),
                    ust(cold * 1000.0 * (size as f64 / mib as f64)),
                    ust(cold * 1000.0),
                    ust(hot)
                );
            }
            item.push('.');
        }
        items.push(item);
    }
    // Across pools, from 1 MiB.
    let under = |case: &str, base: &str, floor: f64| short_of(&b, case, base, floor, mib);
    let listed = |v: &[(u64, f64, f64)]| -> String {
        v.iter()
            .map(|(size, ours, theirs)| {
                format!("{} {} vs {}", size_name(*size), ust(*ours), ust(*theirs))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The smallest size measured above every listed one: from there on the ratio was met.
    let met_from = |case: &str, v: &[(u64, f64, f64)]| -> String {
        let last = v.iter().map(|x| x.0).max().unwrap_or(u64::MAX);
        b.iter()
            .filter(|r| r.0 == case && r.1 > last)
            .map(|r| r.1)
            .min()
            .map(|s| format!(" From {} up the ratio is met in this run.", size_name(s)))
            .unwrap_or_default()
    };
    let device = under("host to device, pipelined", "memcpy", 0.7);
    if let (false, Some(fixed)) = (
        device.is_empty(),
        get(&b, "host to device, pipelined", 4096),
    ) {
        let mut item = format!(
            "**To a device pool, pipelined, below 0.7x memcpy** (µs per transfer against memcpy): {}. Each transfer to another pool has a fixed cost, two block managers and a wake-up of each ({} µs a transfer at 4 KiB), and the destination's copy engine copies its bytes from the sender's buffer, which another core wrote, into one of the receiver's",
            listed(&device),
            ust(fixed)
        );
        if let Some(cold) = cold_copy {
            let _ = write!(
                item,
                " (the block manager measured such a copy out of the caches at {} µs a MiB, Figure 2a's policy line)",
                ust(cold * 1000.0)
            );
        }
        item.push_str("; memcpy copies the same bytes again and again, within the caches.");
        item.push_str(&met_from("host to device, pipelined", &device));
        items.push(item);
    }
    let remote = under("host to remote, pipelined", "tcp loopback, pipelined", 0.8);
    if let (false, Some(one_way)) = (remote.is_empty(), get(&b, "host to remote", 4096)) {
        items.push(format!(
            "**To another host, pipelined, below 0.8x raw TCP** (µs per transfer against back-to-back writes on a TCP socket): {}. Each transfer costs a fixed time beyond its bytes ({} µs one way at 4 KiB): its sender is answered only once the destination has taken it, so that a receive there sees every transfer its sender finished, and the sender's next transfer starts after that round trip — through both block managers and the threads of their link — and a wake-up of the sender and of its block manager; the link carries one transfer's bytes at a time.{}",
            listed(&remote),
            ust(one_way),
            met_from("host to remote, pipelined", &remote)
        ));
    }
    // The replay on CoshFS slower than on tmpfs: the two medians against each one's runs.
    let replays = table3(&out.join("table3.csv"));
    let row = |name: &str| replays.iter().find(|r| r.target == name);
    let median = |name: &str| row(name).map(|r| r.median);
    let spread = |name: &str| {
        row(name).map(|r| &r.runs).and_then(|v| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (v.len() > 1).then_some((lo, hi, v.len()))
        })
    };
    if let (Some(cosh), Some(tmpfs)) = (median("coshfs"), median("tmpfs"))
        && cosh > tmpfs
    {
        let mut item = format!(
            "**The replay on CoshFS slower than on tmpfs** (ms, the median run): {cosh:.1} vs {tmpfs:.1}."
        );
        if let (Some((clo, chi, n)), Some((tlo, thi, _))) = (spread("coshfs"), spread("tmpfs")) {
            let _ = write!(
                item,
                " Its {n} runs took {clo:.1}–{chi:.1} ms on CoshFS and {tlo:.1}–{thi:.1} on tmpfs"
            );
            if (tlo..=thi).contains(&cosh) && (clo..=chi).contains(&tmpfs) {
                let _ = write!(
                    item,
                    ": each median lies within the other's runs{}, so the replay, a few tens of milliseconds, moved by more from one run to the next on this machine than the two differ.",
                    if clo < tlo {
                        format!(" (the fastest: {clo:.1} against {tlo:.1})")
                    } else {
                        String::new()
                    }
                );
            } else {
                item.push_str(": apart, beyond the spread of the runs.");
            }
        }
        items.push(item);
    }
    if items.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "\n## Why, where Cosh is slower or a target is not met\n\nFrom this run's numbers.\n\n",
    );
    for item in items {
        let _ = writeln!(s, "- {item}");
    }
    s
}

/// Where `case` is below `floor` times the speed of `base`, from `from` bytes: (size, the
/// case's median, the baseline's), by size.
fn short_of(rows: &[Row], case: &str, base: &str, floor: f64, from: u64) -> Vec<(u64, f64, f64)> {
    let mut v: Vec<(u64, f64, f64)> = rows
        .iter()
        .filter(|r| r.0 == case && r.1 >= from)
        .filter_map(|r| {
            let theirs = rows.iter().find(|x| x.0 == base && x.1 == r.1)?.2;
            Some((r.1, r.2 as f64, theirs as f64))
        })
        .filter(|(_, ours, theirs)| theirs / ours < floor)
        .collect();
    v.sort_by_key(|x| x.0);
    v
}

/// The pipe step's table: GB/s by case and piece size, and the ratio to the Linux pipe.
fn throughput(rows: &[Row]) -> String {
    let (sizes, cases) = axes(rows);
    let at = |c: &str, size: u64| rows.iter().find(|r| r.0 == c && r.1 == size).map(|r| r.2);
    let names: Vec<String> = sizes
        .iter()
        .map(|s| format!("{} pieces", size_name(*s)))
        .collect();
    let mut out = table_head("case (GB/s; vs the Linux pipe)", &names);
    for c in cases {
        let _ = write!(out, "| {c} |");
        for size in &sizes {
            match (at(c, *size), at("linux pipe", *size)) {
                (Some(bps), Some(base)) if base > 0 => {
                    let _ = write!(
                        out,
                        " {:.2} ({:.1}x) |",
                        bps as f64 / 1e9,
                        bps as f64 / base as f64
                    );
                }
                _ => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}

/// The ratio targets the earlier issues set, each computed from this run's CSVs: what was
/// asked, what was measured, met or not.
fn targets(out: &Path) -> String {
    let fig = |name: &str| rows(&out.join(format!("{name}.csv")));
    let (a, b, c, pipe) = (fig("fig2a"), fig("fig2b"), fig("fig2c"), fig("pipe"));
    let t3 = table3(&out.join("table3.csv"));
    let get = |rows: &[Row], case: &str, size: u64| {
        rows.iter()
            .find(|r| r.0 == case && r.1 == size)
            .map(|r| r.2 as f64)
    };
    let sizes = |rows: &[Row], case: &str| -> Vec<u64> {
        let mut v: Vec<u64> = rows.iter().filter(|r| r.0 == case).map(|r| r.1).collect();
        v.sort_unstable();
        v
    };
    let mib = 1u64 << 20;
    let mut lines: Vec<(String, String, String)> = Vec::new();
    let mut add = |what: &str, measured: Option<String>, met: Option<bool>| {
        lines.push((
            what.to_string(),
            measured.unwrap_or_else(|| "not measured in this run".into()),
            match met {
                Some(true) => "met".into(),
                Some(false) => "**not met**".into(),
                None => "–".into(),
            },
        ));
    };
    // Issue 4: the fast path.
    let smallest = sizes(&a, "weak bounce, polls")
        .first()
        .copied()
        .unwrap_or(4096);
    for size in [smallest, mib] {
        let weak = get(&a, "weak bounce, polls", size);
        let ice = get(&a, "iceoryx2 round trip", size);
        let r = weak.zip(ice).map(|(w, i)| i / w);
        add(
            &format!(
                "a weak transfer busy-polling no slower than an iceoryx2 round trip, {}",
                size_name(size)
            ),
            weak.zip(ice)
                .map(|(w, i)| format!("{:.2} vs {:.2} µs: {:.2}x", w / 1e3, i / 1e3, i / w)),
            r.map(|r| r >= 1.0),
        );
    }
    let bounce = sizes(&a, "weak bounce, polls");
    if let (Some(first), Some(last)) = (bounce.first(), bounce.last()) {
        let (x, y) = (
            get(&a, "weak bounce, polls", *first),
            get(&a, "weak bounce, polls", *last),
        );
        add(
            &format!(
                "a weak transfer's cost flat: {} within 1.5x of {}",
                size_name(*last),
                size_name(*first)
            ),
            x.zip(y)
                .map(|(x, y)| format!("{:.2} vs {:.2} µs: {:.2}x", y / 1e3, x / 1e3, y / x)),
            x.zip(y).map(|(x, y)| y / x <= 1.5),
        );
    }
    let blocks = sizes(&a, "weak bounce, blocks");
    let futex = get(&a, "futex", 64);
    if let Some(w) = blocks
        .iter()
        .filter_map(|s| get(&a, "weak bounce, blocks", *s))
        .reduce(f64::max)
    {
        add(
            "a blocking weak transfer within 1.25x of a futex ping-pong (the slowest size)",
            futex.map(|f| format!("{:.1} vs {:.1} µs: {:.2}x", w / 1e3, f / 1e3, w / f)),
            futex.map(|f| w / f <= 1.25),
        );
    }
    let share = (
        get(&a, "share strong", 16 << 10),
        get(&a, "share strong", 16 << 20),
    );
    add(
        "a strong share flat: 16 MiB within 3x of 16 KiB",
        share
            .0
            .zip(share.1)
            .map(|(x, y)| format!("{:.0} vs {:.1} µs: {:.0}x", y / 1e3, x / 1e3, y / x)),
        share.0.zip(share.1).map(|(x, y)| y / x <= 3.0),
    );
    for case in ["stream move strong", "stream copy"] {
        let big: Vec<u64> = sizes(&a, case).into_iter().filter(|s| *s >= mib).collect();
        let each: Vec<(u64, f64)> = big
            .iter()
            .filter_map(|s| Some((*s, get(&a, "memcpy", *s)? / get(&a, case, *s)?)))
            .collect();
        add(
            &format!("{case}: at least 0.8x memcpy's bandwidth from 1 MiB"),
            (!each.is_empty()).then(|| {
                each.iter()
                    .map(|(s, r)| format!("{}: {r:.2}x", size_name(*s)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
            (!each.is_empty()).then(|| each.iter().all(|(_, r)| *r >= 0.8)),
        );
        let vs_pipe = big
            .iter()
            .filter_map(|s| Some((*s, get(&a, "stream pipe", *s)? / get(&a, case, *s)?)))
            .min_by(|x, y| x.1.total_cmp(&y.1));
        add(
            &format!("{case}: at least 3x a Linux pipe's throughput from 1 MiB (the worst size)"),
            vs_pipe.map(|(s, r)| format!("{r:.1}x at {}", size_name(s))),
            vs_pipe.map(|(_, r)| r >= 3.0),
        );
    }
    // Issue 5: across pools.
    for (case, base, floor, what) in [
        (
            "host to device, pipelined",
            "memcpy",
            0.7,
            "host to device, pipelined, at least 0.7x memcpy from 1 MiB",
        ),
        (
            "host to remote, pipelined",
            "tcp loopback, pipelined",
            0.8,
            "host to another host (loopback TCP), pipelined, at least 0.8x raw TCP from 1 MiB",
        ),
    ] {
        let ratios: Vec<(u64, f64)> = sizes(&b, case)
            .into_iter()
            .filter(|s| *s >= mib)
            .filter_map(|s| Some((s, get(&b, base, s)? / get(&b, case, s)?)))
            .collect();
        let text = ratios
            .iter()
            .map(|(s, r)| format!("{}: {r:.2}x", size_name(*s)))
            .collect::<Vec<_>>()
            .join(", ");
        add(
            what,
            (!ratios.is_empty()).then_some(text),
            (!ratios.is_empty()).then(|| ratios.iter().all(|(_, r)| *r >= floor)),
        );
    }
    // Issue 6: pipes and CoshFS.
    let p = get(&pipe, "cosh pipe, aggregates", mib).zip(get(&pipe, "linux pipe", mib));
    add(
        "a Cosh pipe at least 3x a Linux pipe's throughput with 1 MiB writes",
        p.map(|(x, y)| format!("{:.2} vs {:.2} GB/s: {:.1}x", x / 1e9, y / 1e9, x / y)),
        p.map(|(x, y)| x / y >= 3.0),
    );
    let r = get(&c, "coshfs extent", mib).zip(get(&c, "tmpfs pread", mib));
    add(
        "repeated 1 MiB reads through the aggregate API at least 10x faster than tmpfs pread",
        r.map(|(x, y)| format!("{:.1} vs {:.1} µs: {:.0}x", x / 1e3, y / 1e3, y / x)),
        r.map(|(x, y)| y / x >= 10.0),
    );
    let small: Vec<f64> = [512u64, 4096]
        .iter()
        .flat_map(|s| {
            ["coshfs extent", "coshfs aggregate", "coshfs legacy"]
                .iter()
                .filter_map(|case| Some(get(&c, case, *s)? / get(&c, "tmpfs pread", *s)?))
                .collect::<Vec<_>>()
        })
        .collect();
    let worst = small.iter().copied().reduce(f64::max);
    add(
        "reads of 4 KiB and less (cached; every API) no slower than 1.5x tmpfs pread",
        worst.map(|w| format!("at worst {w:.2}x pread's time")),
        worst.map(|w| w <= 1.5),
    );
    let t = |name: &str| t3.iter().find(|r| r.target == name).map(|r| r.median);
    let host = t("coshfs").zip(t("tmpfs"));
    add(
        "the devtrace replay on CoshFS (aggregate API) no slower than on tmpfs",
        host.map(|(x, y)| format!("{x:.1} vs {y:.1} ms: {:.2}x", x / y)),
        host.map(|(x, y)| x <= y),
    );
    let dev = t("device-coshfs").zip(t("coshfs"));
    add(
        "the replay from a device pool with the cache no slower than 3x the host's",
        dev.map(|(x, y)| format!("{x:.1} vs {y:.1} ms: {:.2}x", x / y)),
        dev.map(|(x, y)| x <= 3.0 * y),
    );
    // Issue 9: never slower than the best baseline.
    for (name, rows, ci) in [
        ("Figure 2a", &a, intervals(&out.join("fig2a.csv"))),
        ("Figure 2c", &c, intervals(&out.join("fig2c.csv"))),
    ] {
        let (mut slower, mut noise) = (Vec::new(), Vec::new());
        let mut total = 0;
        let cases: Vec<&str> = {
            let mut v: Vec<&str> = Vec::new();
            for r in rows.iter() {
                if !is_baseline(&r.0) && !v.contains(&r.0.as_str()) {
                    v.push(&r.0);
                }
            }
            v
        };
        for case in cases.into_iter().filter(|c| !c.contains("uncached")) {
            for size in sizes(rows, case) {
                let best = fastest_baseline(rows, class(case), size);
                if let (Some((baseline, best)), Some(ours)) = (best, get(rows, case, size)) {
                    total += 1;
                    let said =
                        format!("{case} at {} ({:.2}x)", size_name(size), best as f64 / ours);
                    match verdict(&ci, (case, ours as u64), (baseline, best), size) {
                        Verdict::NotSlower => {}
                        Verdict::WithinNoise => noise.push(said),
                        Verdict::Slower => slower.push(said),
                    }
                }
            }
        }
        add(
            &format!(
                "{name}: every Cosh case no slower than the fastest baseline of its kind at its size{}",
                if name == "Figure 2c" {
                    " (cached reads)"
                } else {
                    ""
                }
            ),
            (total > 0).then(|| {
                let mut said = if slower.is_empty() && noise.is_empty() {
                    format!("all {total} (case, size) pairs")
                } else if slower.is_empty() {
                    format!("none of {total} pairs measurably slower")
                } else {
                    format!(
                        "{} of {total} pairs slower: {}",
                        slower.len(),
                        slower.join("; ")
                    )
                };
                if !noise.is_empty() {
                    let _ = write!(
                        said,
                        "; {} slower by less than this run resolves (the medians' 95 % intervals overlap): {}",
                        noise.len(),
                        noise.join("; ")
                    );
                }
                said
            }),
            (total > 0).then_some(slower.is_empty()),
        );
    }
    let mut s = String::from(
        "\n## The targets of the earlier issues, from this run\n\nEach computed from the CSVs above (medians; latencies are the time until the receiver can read the bytes).\n\n| target | measured | |\n|---|---|---|\n",
    );
    for (what, measured, met) in lines {
        let _ = writeln!(s, "| {what} | {measured} | {met} |");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A figure's CSV with (case, size, delivered ns, readable ns) rows.
    fn figure(path: &Path, rows: &[(&str, u64, u64, u64)]) {
        let mut text =
            String::from("case,size,delivered_ns,p10_ns,p90_ns,p99_ns,readable_ns,samples\n");
        for (case, size, delivered, readable) in rows {
            let _ = writeln!(text, "\"{case}\",{size},{delivered},0,0,0,{readable},10");
        }
        std::fs::write(path, text).expect("csv");
    }

    #[test]
    fn the_reasons_come_from_the_runs_numbers() {
        let dir = std::env::temp_dir().join(format!("cosh-reasons-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(reasons(&dir), "", "nothing measured, nothing to explain");
        std::fs::write(
            dir.join("fig2a.log"),
            "small transfers: inline up to 262144 bytes strong, 1048576 bytes weak (to a receiver that does not map the buffer yet); chosen at start-up from: ring 50 ns/KiB, copying a large buffer 100.0 us/MiB, unmapping and sealing 90.0 us/MiB\n",
        )
        .expect("log");
        let mib = 1 << 20;
        figure(
            &dir.join("fig2a.csv"),
            &[
                // Inline, slower than the pipe: the wake-up.
                ("move strong", 4096, 30_000, 30_000),
                ("pipe", 4096, 22_000, 22_000),
                ("futex", 64, 32_000, 32_000),
                // Through the block manager, above the inline limit.
                ("copy", mib, 230_000, 230_000),
                ("unix socket", mib, 220_000, 220_000),
                // A weak transfer whose time is the receiver's mapping.
                ("move weak", 16 * mib, 40_000, 4_000_000),
                ("unix socket", 16 * mib, 3_000_000, 3_000_000),
                ("weak bounce, blocks", 16 * mib, 20_000, 20_000),
                ("weak bounce, blocks", 64 << 10, 41_000, 41_000),
                ("iceoryx2 one-way, blocks", 64 << 10, 40_000, 40_000),
                // A polling bounce above 1.5x at its largest size, slower than iceoryx2's
                // ping-pong at 4 KiB; a single transfer to a polling receiver slower than
                // iceoryx2's.
                ("weak bounce, polls", 4096, 400, 400),
                ("iceoryx2 one-way", 4096, 300, 300),
                ("move weak, rx polls", 4096, 2_200, 2_200),
                ("iceoryx2 single, polls", 4096, 600, 600),
                ("memcpy", 4096, 100, 100),
                ("move weak, rx polls", 256 << 10, 30_000, 30_000),
                ("iceoryx2 single, polls", 256 << 10, 1_000, 1_000),
                ("weak bounce, polls", 64 << 10, 500, 500),
                ("weak bounce, polls", 16 * mib, 700, 700),
                // Slower than iceoryx2 woken by its events; its bounce faster.
                ("move strong", 256 << 10, 60_000, 60_000),
                ("unix socket", 256 << 10, 110_000, 110_000),
                ("iceoryx2 single, blocks", 256 << 10, 30_000, 30_000),
                ("iceoryx2 one-way, blocks", 256 << 10, 28_000, 28_000),
                ("weak bounce, blocks", 256 << 10, 20_000, 20_000),
                // Faster than the socket, but not flat.
                ("share strong", 16 << 10, 30_000, 30_000),
                ("share strong", 16 * mib, 1_500_000, 1_500_000),
                ("memcpy", 16 * mib, 1_000_000, 1_000_000),
                // Streams: inline at 256 KiB and below (met), then the block manager's copy.
                ("stream move strong", 256 << 10, 6_000, 6_000),
                ("memcpy", 256 << 10, 6_000, 6_000),
                ("stream move strong", mib, 125_000, 125_000),
                ("memcpy", mib, 25_000, 25_000),
                ("stream move strong", 16 * mib, 1_100_000, 1_100_000),
                // Copies miss where moves do not: named too.
                ("stream copy", mib, 30_000, 30_000),
                ("stream copy", 16 * mib, 1_400_000, 1_400_000),
            ],
        );
        // Across pools: the device below 0.7x memcpy up to 4 MiB, another host below 0.8x
        // raw TCP at 1 MiB; both met above.
        figure(
            &dir.join("fig2b.csv"),
            &[
                ("host to device, pipelined", 4096, 80_000, 80_000),
                ("host to device, pipelined", mib, 170_000, 170_000),
                ("host to device, pipelined", 4 * mib, 480_000, 480_000),
                ("host to device, pipelined", 16 * mib, 1_400_000, 1_400_000),
                ("memcpy", mib, 22_000, 22_000),
                ("memcpy", 4 * mib, 95_000, 95_000),
                ("memcpy", 16 * mib, 1_000_000, 1_000_000),
                ("host to remote", 4096, 175_000, 175_000),
                ("host to remote, pipelined", mib, 540_000, 540_000),
                ("host to remote, pipelined", 4 * mib, 1_000_000, 1_000_000),
                ("tcp loopback, pipelined", mib, 300_000, 300_000),
                ("tcp loopback, pipelined", 4 * mib, 1_100_000, 1_100_000),
            ],
        );
        let text = reasons(&dir);
        for needle in [
            "**To a device pool, pipelined, below 0.7x memcpy** (µs per transfer against memcpy): 1 MiB 170 vs 22.0, 4 MiB 480 vs 95.0. Each transfer to another pool has a fixed cost, two block managers and a wake-up of each (80.0 µs a transfer at 4 KiB)",
            "into one of the receiver's (the block manager measured such a copy out of the caches at 100 µs a MiB, Figure 2a's policy line); memcpy copies the same bytes again and again, within the caches. From 16 MiB up the ratio is met in this run.",
            "**To another host, pipelined, below 0.8x raw TCP** (µs per transfer against back-to-back writes on a TCP socket): 1 MiB 540 vs 300. Each transfer costs a fixed time beyond its bytes (175 µs one way at 4 KiB)",
            "the link carries one transfer's bytes at a time. From 4 MiB up the ratio is met in this run.",
            "**A receiver that sleeps, inline** (µs): 4 KiB Cosh 30.0 vs the pipe 22.0",
            "a futex ping-pong between the same two processes: 32.0 µs",
            "(262144 bytes strong, 1048576 weak)** (µs): 1 MiB Cosh 230 vs the unix socket 220",
            "**move weak at 16 MiB**: delivered in 40.0 µs, readable after 4000 µs: the receiver maps 4096 pages it never mapped (967 ns a page), where the unix socket copies the bytes in 3000 µs",
            "for 20.0 µs a transfer",
            "**A receiver that sleeps, against iceoryx2 woken by its events** (µs): 256 KiB Cosh 60.0 vs the iceoryx2 single, blocks 30.0. iceoryx2 wakes the receiver",
            "bounced with the receiver asleep, against iceoryx2's own ping-pong: µs one way, Cosh vs iceoryx2, 256 KiB 20.0 vs 28.0.",
            "above 1.25x the futex ping-pong** (µs): 64 KiB 41.0 vs 32.0.",
            "**A weak transfer's cost not flat** (µs one way, busy-polling): 16 MiB 0.7 vs 4 KiB 0.4.",
            "**A back-and-forth whose sides sleep between messages** (µs one way): 64 KiB Cosh 41.0 vs the iceoryx2 one-way, blocks 40.0. Each trip is one wake-up of the other side (a bare futex ping-pong between the same two processes: 32.0 µs in this run) and the transfer itself, which the same bounce busy-polling measures without the wake-up (µs: 64 KiB 0.5)",
            "**A single transfer to a receiver that busy-polls** (µs): 4 KiB Cosh 2.2 vs the iceoryx2 single, polls 0.6; 256 KiB Cosh 30.0 vs the iceoryx2 single, polls 1.0. iceoryx2 hands over an offset",
            "Inline, the bytes are copied twice",
            "Beyond the reach of any transfer that keeps a fresh buffer private until it is sent (µs, the cheaper of a copy of its bytes — memcpy within one process's caches — and a mapping of them — the policy line — against iceoryx2's whole transfer): 256 KiB 6.0 vs 1.0. Below it (µs, that bound vs iceoryx2): 4 KiB 0.1 vs 0.6; there the difference",
            "as for a receiver that busy-polls). Below it (µs, that bound vs iceoryx2): 256 KiB 6.0 vs 30.0; there",
            "**A buffer bounced, both sides busy-polling** (µs one way, Cosh vs iceoryx2): 4 KiB 0.4 vs 0.3. Both hand over",
            "as the sizes between show: 4 KiB 0.4, 64 KiB 0.5, 16 MiB 0.7.",
            "At its other sizes the bounce took 20.0 µs",
            "1500 µs at 16 MiB, memcpy 1000 µs",
            "(µs per transfer against memcpy): strong moves 1 MiB 125 vs 25.0; copies 16 MiB 1400 vs 1000. memcpy copies",
            "Above 256 KiB (the largest transfer that travels inline, the policy line) each transfer is a round trip to the block manager",
            "At 1 MiB it takes 125 µs a transfer; a copy of that size takes 100 µs out of the caches (100 µs a MiB, measured by the block manager at start-up on 8 MiB, the policy line) and 25.0 µs within them (memcpy).",
        ] {
            assert!(text.contains(needle), "no {needle:?} in:\n{text}");
        }
        assert!(!text.contains("share strong at"), "{text}");
        assert!(!text.contains("travel inline"), "{text}");
        // With 1 MiB inline, the stream's reason is the ring's two copies.
        std::fs::write(
            dir.join("fig2a.log"),
            "small transfers: inline up to 1048576 bytes strong, 1048576 bytes weak (to a receiver that does not map the buffer yet); chosen at start-up from: ring 50 ns/KiB, copying a large buffer 100.0 us/MiB\n",
        )
        .expect("log");
        let text = reasons(&dir);
        assert!(
            text.contains("Up to 1 MiB (the policy line) a stream's transfers travel inline"),
            "{text}"
        );
        // The replay slower on CoshFS than on tmpfs: within the runs' spread, or apart.
        let table3 = |cosh: &str, tmpfs: &str| {
            std::fs::write(
                dir.join("table3.csv"),
                format!("target,runs_ms,median_ms,vs_tmpfs,exact\ntmpfs,{tmpfs},1.000,yes\ncoshfs,{cosh},1.087,yes\n"),
            )
            .expect("table3");
            reasons(&dir)
        };
        let text = table3(
            "47.824;62.226;72.523;77.043;168.111,72.523",
            "62.321;66.024;66.726;93.892;103.436,66.726",
        );
        assert!(
            text.contains("**The replay on CoshFS slower than on tmpfs** (ms, the median run): 72.5 vs 66.7. Its 5 runs took 47.8–168.1 ms on CoshFS and 62.3–103.4 on tmpfs: each median lies within the other's runs (the fastest: 47.8 against 62.3), so"),
            "{text}"
        );
        let text = table3("80;81;82;83;84,82", "60;61;62;63;64,62");
        assert!(
            text.contains("82.0 vs 62.0. Its 5 runs took 80.0–84.0 ms on CoshFS and 60.0–64.0 on tmpfs: apart, beyond the spread of the runs."),
            "{text}"
        );
        let text = table3("50;51;52;53;54,52", "60;61;62;63;64,62");
        assert!(!text.contains("The replay on CoshFS"), "{text}");
        // Above it, the stream of copies at 16 MiB: the block manager's copy.
        assert!(
            text.contains("Above 1 MiB (the largest transfer that travels inline, the policy line) each transfer is a round trip to the block manager"),
            "{text}"
        );
        assert!(
            text.contains("At 16 MiB it takes 1400 µs a transfer; a copy of that size takes 1600 µs out of the caches"),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_report_is_written_from_the_folder_alone() {
        let dir = std::env::temp_dir().join(format!("cosh-rerender-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let err = write_report(&dir).err().expect("no steps.csv yet");
        assert!(
            err.contains("steps.csv") && err.contains("--report-only"),
            "{err}"
        );
        figure(
            &dir.join("fig2a.csv"),
            &[
                ("move strong", 4096, 2_000, 2_000),
                ("pipe", 4096, 4_000, 4_000),
            ],
        );
        let made = Made {
            command: "cosh bench all -- --quick --out somewhere".into(),
            took: Duration::from_secs(42),
            machine: vec![
                ("CPU".into(), "A, test \"CPU\"".into()),
                ("CPU MHz (now)".into(), "3000.0".into()),
            ],
            ran: vec![
                Ran {
                    name: "fig2a".into(),
                    command: "cosh bench fig2a -- --sizes 4K".into(),
                    ok: true,
                    took: Duration::from_secs(40),
                    status: "ok".into(),
                },
                Ran {
                    name: "fig2b".into(),
                    command: "cosh bench fig2b -- --sizes 4K".into(),
                    ok: false,
                    took: Duration::from_secs(2),
                    status: "failed (exit status: 1); see fig2b.log".into(),
                },
            ],
        };
        made.save(&dir).expect("save");
        let (path, loaded) = write_report(&dir).expect("report");
        let text = std::fs::read_to_string(&path).expect("read");
        // What the run was comes from the folder, not from this machine.
        assert_eq!(loaded.command, made.command);
        assert_eq!(loaded.took, made.took);
        assert_eq!(loaded.machine, made.machine);
        for needle in [
            "Made by `cosh bench all -- --quick --out somewhere` in 42 s",
            "| CPU | A, test \"CPU\" |",
            "| fig2a | ok | 40 s | `cosh bench fig2a -- --sizes 4K` |",
            "This step failed (exit status: 1); see fig2b.log.",
            // The clock of the machine that ran it: 2 µs at 3 GHz.
            "about 6000 cycles at 3.00 GHz",
            "Not in this run: it replays a trace folder",
        ] {
            assert!(text.contains(needle), "no {needle:?} in:\n{text}");
        }
        // Written again, the same report.
        write_report(&dir).expect("again");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
        // A folder whose steps.csv names no step of this program, or a time no duration
        // holds, is refused.
        for (row, said) in [
            ("fig9,true,1,ok,x", "fig9"),
            ("fig2a,true,1e300,ok,x", "without seconds"),
            ("fig2a,true,-1,ok,x", "without seconds"),
        ] {
            std::fs::write(
                dir.join(STEPS_CSV),
                format!("step,ok,seconds,status,command\n{row}\n"),
            )
            .expect("steps");
            let err = write_report(&dir).err().expect("refused");
            assert!(err.contains(said), "{row}: {err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn each_case_is_compared_with_baselines_that_wait_as_it_does() {
        let row = |case: &str, ns: u64| (case.to_string(), 4096, ns);
        let rows = vec![
            row("pipe", 30_000),
            row(crate::ICE_SINGLE, 27_000),
            row("futex", 21_000),
            row("iceoryx2 one-way, blocks", 25_000),
            row("iceoryx2 round trip, blocks", 20_000),
            row("iceoryx2 one-way", 300),
            row("iceoryx2 round trip", 200),
            row(crate::ICE_SINGLE_POLLS, 600),
            row("stream pipe", 1_500),
            row("memcpy", 100),
        ];
        // iceoryx2's single transfers are the baselines for Cosh's, to a receiver asleep
        // or to one that polls; its blocking ping-pong (and a futex's) for a bounce whose
        // sides sleep between messages, its polling ping-pong for a bounce that polls;
        // round trips and floors are never the baseline.
        for (case, expected) in [
            ("weak bounce, blocks", Some(("futex", 21_000))),
            ("move weak", Some((crate::ICE_SINGLE, 27_000))),
            ("copy", Some((crate::ICE_SINGLE, 27_000))),
            ("weak bounce, polls", Some(("iceoryx2 one-way", 300))),
            ("move weak, rx polls", Some((crate::ICE_SINGLE_POLLS, 600))),
            ("copy, rx polls", Some((crate::ICE_SINGLE_POLLS, 600))),
            ("stream copy", Some(("stream pipe", 1_500))),
        ] {
            assert_eq!(
                fastest_baseline(&rows, class(case), 4096),
                expected,
                "{case}"
            );
        }
        assert_eq!(class("iceoryx2 one-way, blocks"), Class::BackAndForth);
        assert_eq!(class("ring futex"), Class::BackAndForth);
        assert_eq!(class(crate::ICE_SINGLE), Class::Sleeps);
        assert_eq!(class("unix socket"), Class::Sleeps);
        assert_eq!(class("iceoryx2 one-way"), Class::BackAndForthPolls);
        assert_eq!(class(crate::ICE_SINGLE_POLLS), Class::Polls);
        assert_eq!(class("ring spin"), Class::BackAndForthPolls);
        assert_eq!(fastest_baseline(&rows, Class::Polls, 8192), None);
    }

    #[test]
    fn slower_only_where_the_intervals_part() {
        let dir = std::env::temp_dir().join(format!("cosh-verdict-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let csv = dir.join("fig2a.csv");
        let mut text = String::from(
            "case,size,delivered_ns,p10_ns,p90_ns,p99_ns,readable_ns,samples,readable_lo_ns,readable_hi_ns\n",
        );
        for (case, median, lo, hi) in [
            // Faster.
            ("move weak", 29_000, 27_000, 31_000),
            // Slower, but the intervals overlap.
            ("move strong", 31_000, 29_000, 33_000),
            // Slower, the intervals apart.
            ("copy", 40_000, 38_000, 42_000),
            ("pipe", 30_000, 28_000, 32_000),
            ("unix socket", 35_000, 33_000, 37_000),
        ] {
            let _ = writeln!(
                text,
                "\"{case}\",4096,{median},0,0,0,{median},200,{lo},{hi}"
            );
        }
        // Too few samples for an interval: slower is slower.
        text.push_str("\"share strong\",4096,31000,0,0,0,31000,3,,\n");
        std::fs::write(&csv, text).expect("csv");
        let ci = intervals(&csv);
        assert_eq!(ci.get(&("pipe".to_string(), 4096)), Some(&(28_000, 32_000)));
        let table = ratios(&rows(&csv), &ci);
        assert!(
            table.contains("each case against the fastest of `pipe`, `unix socket` at that size (named in the header):"),
            "{table}"
        );
        assert!(
            table.contains("Slower than the fastest baseline: copy at 4 KiB (pipe: 0.75x); share strong at 4 KiB (pipe: 0.97x)."),
            "{table}"
        );
        assert!(
            table.contains("(the 95 % confidence intervals of the two medians overlap): move strong at 4 KiB (pipe: 0.97x)."),
            "{table}"
        );
        assert!(!table.contains("move weak at"), "{table}");
        let said = targets(&dir);
        assert!(
            said.contains("2 of 4 pairs slower: copy at 4 KiB (0.75x); share strong at 4 KiB (0.97x); 1 slower by less than this run resolves (the medians' 95 % intervals overlap): move strong at 4 KiB (0.97x) | **not met** |"),
            "{said}"
        );
        // Without intervals (an older CSV) every slower median counts.
        figure(
            &csv,
            &[
                ("move strong", 4096, 31_000, 31_000),
                ("pipe", 4096, 30_000, 30_000),
            ],
        );
        assert!(intervals(&csv).is_empty());
        let table = ratios(&rows(&csv), &intervals(&csv));
        assert!(
            table.contains("Slower than the fastest baseline: move strong at 4 KiB (pipe: 0.97x)."),
            "{table}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
