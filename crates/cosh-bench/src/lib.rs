//! One-way transfer latency across processes (the paper's Figure 2a, first cut): a sender
//! process and a receiver process connected to a block manager process, every mode and
//! strength at several sizes, with a Unix socket, a pipe and a memcpy into a prefaulted buffer
//! measured in the same run as baselines.
//!
//! The sender fills each aggregate with data before the clock starts, as a producer would.
//! One-way latency is measured on the system-wide monotonic clock: the sender reads it just
//! before the transfer (or the write, for the baselines) and puts the reading in the first
//! eight bytes of the data; the receiver reads the clock as soon as `receive` returns
//! (*delivered*) and again once the aggregate's memory is mapped, one byte of every page
//! read and its first and last bytes (*readable*: no byte of it faults when read then; for
//! the baselines the two are the same, the data is in the receiver's buffer). The receiver
//! is blocked in its receive (or its read of the socket or pipe, into memory it keeps
//! faulted in) when the sender starts: it says so on a control pipe, and the
//! sender waits 200 us more. It reports each sample on the control pipe before the sender
//! starts the next, so samples never overlap. Below 1 MiB, where a sample is one wake-up
//! and a few copies of kilobytes, the cases and the socket, pipe and iceoryx2 single
//! baselines (iceoryx2's to a receiver asleep and to one that busy-polls) take their samples
//! in turn, one of each per round (each round in a rotated order), so that a slow phase of
//! the machine falls on every case alike; from 1 MiB each case takes its samples back to
//! back, so that each is measured in its own steady state of caches and free lists (in turn,
//! every case would find the others' megabytes in the caches and their buffers in the free
//! lists). Each median comes with a distribution-free 95 % confidence interval (CSV columns
//! `readable_lo_ns` and `readable_hi_ns`), from which the report tells a measurable
//! difference from noise. Where two CPUs are allowed, the sender runs on
//! the first and the receiver on the second (`--no-pin` leaves them to the scheduler, which
//! may put both on one core: then a wake-up is a context switch, not a cross-core wake).
//! Medians are reported, with the 10th and 90th percentiles.

#![forbid(unsafe_code)]

pub mod all;
mod doorbells;
mod fast;
pub mod fig2b;
pub mod fig2c;
#[cfg(feature = "iceoryx2")]
mod ice;
pub mod pipe;
pub mod replay;
mod report;

pub use report::{print, print_fast_ratios, print_ratios, write_csv, write_svg};

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use cosh::{Agg, Domain, Mode, Options, TransferFlags};

/// Nanoseconds on the system-wide monotonic clock.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// What `cosh-bench` measures.
#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "One-way transfer latency through the Cosh block manager, with a Unix socket, a pipe and memcpy as baselines in the same run.",
    long_about = "One-way transfer latency between two processes on two cores: every transfer mode and strength of Cosh, to a receiver that sleeps and to one that busy-polls; a buffer bounced on direct rings between domains that trust each other (busy-polling and blocking); streams of strong transfers. Measured in the same run: memcpy, a Unix socket, a pipe, a bare ring and a futex ping-pong, and, in a build with the `iceoryx2` feature, iceoryx2 publish/subscribe: single samples to a receiver asleep on its events and to one that busy-polls, taken in turn with Cosh's single transfers, and ping-pongs busy-polling and woken by its events.\n\nThe table gives the median time until the receiver can read the bytes (and until delivery), percentiles and sample counts; the ratios follow. `cosh bench all` runs this with the other figures and writes a report."
)]
pub struct Args {
    /// Sizes in bytes, comma separated, with K or M suffixes.
    #[arg(long, value_delimiter = ',', default_value = "4K,16K,64K,1M,16M,64M", value_parser = parse_size)]
    pub sizes: Vec<u64>,
    /// Samples per case (fewer are taken above 1 MiB: a quarter, at least 10).
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Write the results as CSV here.
    #[arg(long, value_name = "PATH")]
    pub csv: Option<PathBuf>,
    /// Draw median latency against size, log-log, as SVG here.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Leave the sender and the receiver wherever the scheduler puts them. By default, where
    /// at least two CPUs are allowed, the sender runs on the first and the receiver on the
    /// second (the block manager where it likes), so that every case crosses between cores
    /// as a transfer between two busy processes does, rather than sometimes sharing one.
    #[arg(long)]
    pub no_pin: bool,
    /// Internal: run as the block manager on this socket.
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub daemon: Option<PathBuf>,
    /// Internal: run as the receiver on this socket.
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub receiver: Option<PathBuf>,
    /// Ignored (cargo bench passes it).
    #[arg(long, hide = true)]
    pub bench: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let scale = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        _ => return Err(format!("unknown unit in {s:?} (use K or M)")),
    };
    match n.checked_mul(scale) {
        Some(v) if (16..=1 << 30).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: sizes run from 16 bytes to 1 GiB")),
    }
}

/// A measured case.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured (`move strong`, `unix socket`, ...).
    pub case: String,
    /// Bytes per transfer.
    pub size: u64,
    /// Median one-way latency until delivery.
    pub delivered: Duration,
    /// 10th percentile of the same.
    pub p10: Duration,
    /// 90th percentile of the same.
    pub p90: Duration,
    /// 99th percentile of the same.
    pub p99: Duration,
    /// Median one-way latency until the data is readable.
    pub readable: Duration,
    /// A 95 % confidence interval of that median, where the samples give one (at least
    /// six): its bounds.
    pub readable_ci: Option<(Duration, Duration)>,
    /// Samples.
    pub samples: usize,
}

/// A distribution-free 95 % confidence interval of the median of `sorted`: the samples of
/// ranks n/2 ∓ 0.98·√n, widened outward (the ranks between which the median falls with
/// probability 0.95, by the binomial distribution's normal approximation), at most the
/// extremes. Fewer than six samples give none: even their extremes hold the median with
/// probability below 0.95 (1 − 2·0.5ⁿ).
fn median_interval(sorted: &[u64]) -> Option<(Duration, Duration)> {
    let n = sorted.len();
    if n < 6 {
        return None;
    }
    let half = 0.98 * (n as f64).sqrt();
    let lo = ((n as f64 / 2.0 - half).floor().max(0.0)) as usize;
    let hi = ((n as f64 / 2.0 + half).ceil() as usize).min(n - 1);
    let at = |i: usize| Duration::from_nanos(sorted[i]);
    Some((at(lo), at(hi)))
}

fn percentile(sorted: &[u64], p: usize) -> Duration {
    let i = (sorted.len().saturating_sub(1) * p) / 100;
    Duration::from_nanos(sorted.get(i).copied().unwrap_or(0))
}

pub(crate) fn summarize(
    case: &str,
    size: u64,
    mut delivered: Vec<u64>,
    mut readable: Vec<u64>,
) -> Row {
    delivered.sort_unstable();
    readable.sort_unstable();
    let readable_ci = median_interval(&readable);
    Row {
        case: case.to_string(),
        size,
        delivered: percentile(&delivered, 50),
        p10: percentile(&delivered, 10),
        p90: percentile(&delivered, 90),
        p99: percentile(&delivered, 99),
        readable: percentile(&readable, 50),
        readable_ci,
        samples: delivered.len(),
    }
}

/// Each case: its name, mode, weak or not, and whether the receiver busy-polls.
const CASES: [(&str, Mode, bool, bool); 7] = [
    ("move strong", Mode::Move, false, false),
    ("move weak", Mode::Move, true, false),
    ("share strong", Mode::Share, false, false),
    ("share weak", Mode::Share, true, false),
    ("copy", Mode::Copy, false, false),
    ("move weak, rx polls", Mode::Move, true, true),
    ("copy, rx polls", Mode::Copy, false, true),
];

/// Runs `cosh-bench` with the process's arguments.
pub fn main() -> Result<(), String> {
    main_with(&[], std::env::args_os())
}

/// Parses a benchmark's arguments; `None` when they asked for help or the version (printed).
pub(crate) fn parse_args<A: Parser>(
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<Option<A>, String> {
    match A::try_parse_from(args) {
        Ok(a) => Ok(Some(a)),
        Err(e) if !e.use_stderr() => {
            // --help and --version: not errors.
            let _ = e.print();
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Runs the benchmark with `args` (the first is the program name). The benchmark runs its
/// block manager and its receiver as copies of the running program, started with `prefix`
/// and then their own arguments: empty for `cosh-bench`, `["bench", "fig2a"]` for `cosh`.
pub fn main_with(
    prefix: &[&str],
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<(), String> {
    let Some(args) = parse_args::<Args>(args)? else {
        return Ok(());
    };
    if let Some(socket) = &args.daemon {
        return daemon(socket);
    }
    if let Some(socket) = &args.receiver {
        return receiver(socket);
    }
    let rows = run(&args, prefix)?;
    print(&rows);
    print_ratios(&rows);
    print_fast_ratios(&rows);
    if let Some(path) = &args.csv {
        write_csv(path, &rows).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("CSV: {}", path.display());
    }
    if let Some(path) = &args.plot {
        write_svg(path, &rows).map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
        eprintln!("plot: {}", path.display());
    }
    Ok(())
}

fn daemon(socket: &Path) -> Result<(), String> {
    let mut config = cosh_blockmgr::Config::host();
    config.socket = socket.to_path_buf();
    let manager = cosh_blockmgr::BlockManager::bind(config).map_err(|e| e.to_string())?;
    manager.run().map_err(|e| e.to_string())
}

/// The receiver process: obeys one-line commands on stdin, reports on stdout.
fn receiver(socket: &Path) -> Result<(), String> {
    let e = |e: cosh::Error| e.to_string();
    let mut d = Domain::connect_with(&Options::new("bench-receiver").socket(socket).no_spawn())
        .map_err(e)?;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let say = |out: &mut std::io::StdoutLock<'_>, line: &str| -> Result<(), String> {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|x| x.to_string())
    };
    say(&mut out, &format!("ready {}", d.id().to_bits()))?;
    // The baselines' streams, in the order they were opened.
    let mut streams: Vec<Box<dyn Read>> = Vec::new();
    let mut stream_buf: Vec<u8> = Vec::new();
    let mut shm: Option<cosh_sys::mapping::Mapping<cosh_sys::mapping::ReadWrite>> = None;
    // The sender, once trusted: receives wait for it alone (on its direct ring, if any).
    let mut sender: Option<cosh::DomainId> = None;
    #[cfg(feature = "iceoryx2")]
    let mut ice_single: Option<ice::SingleRx> = None;
    for line in stdin.lock().lines() {
        let line = line.map_err(|x| x.to_string())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["pin", cpu] => {
                let cpu = cpu.parse().map_err(|_| "bad CPU")?;
                cosh_sys::cpu::pin(cpu)?;
                say(&mut out, "ok")?;
            }
            ["spins", n] => {
                d.set_spins(n.parse().map_err(|_| "bad spin count")?);
                say(&mut out, "ok")?;
            }
            ["trust", peer] => {
                let peer = peer.parse().map_err(|_| "bad peer")?;
                d.trust(cosh::DomainId::from_bits(peer)).map_err(e)?;
                sender = Some(cosh::DomainId::from_bits(peer));
                say(&mut out, "ok")?;
            }
            ["cosh"] => {
                // One sample: say we are about to wait, receive, time, map and touch every
                // page (so that no byte faults when read, however the buffer was mapped),
                // report.
                say(&mut out, "armed")?;
                let got = d
                    .receive(sender, Some(Duration::from_secs(60)))
                    .map_err(e)?;
                let delivered = now_ns();
                let pieces = d.read_pieces(got.agg, 0).map_err(e)?;
                let mut head = [0u8; 8];
                let mut last = 0u8;
                let mut at = 0usize;
                let mut pages = 0u64;
                for p in &pieces {
                    let bytes = d.bytes(p).map_err(e)?;
                    for b in bytes.iter().take(8usize.saturating_sub(at)) {
                        head[at] = *b;
                        at += 1;
                    }
                    pages = bytes
                        .iter()
                        .step_by(4096)
                        .fold(pages, |sum, b| sum.wrapping_add(u64::from(*b)));
                    last = bytes.last().copied().unwrap_or(last);
                }
                std::hint::black_box(pages);
                let readable = now_ns();
                let t0 = u64::from_le_bytes(head);
                d.decref(got.agg).map_err(e)?;
                say(
                    &mut out,
                    &format!("{} {} {last}", delivered - t0, readable - t0),
                )?;
            }
            ["stream", kind, path] => {
                let s: Box<dyn Read> = match *kind {
                    "socket" => Box::new(
                        std::os::unix::net::UnixStream::connect(path).map_err(|x| x.to_string())?,
                    ),
                    _ => Box::new(std::fs::File::open(path).map_err(|x| x.to_string())?),
                };
                streams.push(s);
                say(&mut out, "ok")?;
            }
            ["unstream"] => {
                streams.clear();
                say(&mut out, "ok")?;
            }
            ["read", which, size] => {
                // As a Cosh receive: into memory already faulted in (kept from one read to
                // the next), announced just before blocking.
                let size: usize = size.parse().map_err(|_| "bad size")?;
                let s = which
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| streams.get_mut(i))
                    .ok_or("no such stream")?;
                if stream_buf.len() < size {
                    stream_buf.resize(size, 1);
                }
                let buf = &mut stream_buf[..size];
                say(&mut out, "armed")?;
                s.read_exact(buf).map_err(|x| x.to_string())?;
                let t1 = now_ns();
                let mut head = [0u8; 8];
                head.copy_from_slice(&buf[..8]);
                let t0 = u64::from_le_bytes(head);
                say(
                    &mut out,
                    &format!("{} {} {}", t1 - t0, t1 - t0, buf[size - 1]),
                )?;
            }
            ["shm", path] => {
                let fd = rustix::fs::open(
                    *path,
                    rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(|x| format!("cannot open {path}: {x}"))?;
                let memfd = cosh_sys::memfd::Memfd::from_fd(fd).map_err(|x| x.to_string())?;
                shm = Some(
                    memfd
                        .map_write(cosh_sys::mapping::Prefault::Now)
                        .map_err(|x| x.to_string())?,
                );
                say(&mut out, "ok")?;
            }
            [kind @ ("spin" | "block" | "futex" | "both"), n] => {
                let n: usize = n.parse().map_err(|_| "bad count")?;
                let map = shm.as_mut().ok_or("no shared memory")?;
                let words = map.shared_words();
                let samples = doorbells::echo(&words, kind, n)?;
                let text: Vec<String> = samples.iter().map(u64::to_string).collect();
                say(&mut out, &text.join(" "))?;
            }
            ["bounce", n, spins] => {
                let peer = sender.ok_or("bounce before trust")?;
                let n: usize = n.parse().map_err(|_| "bad count")?;
                let spins: u32 = spins.parse().map_err(|_| "bad spin count")?;
                let samples = fast::bounce_back(&mut d, peer, n, spins)?;
                let text: Vec<String> = samples.iter().map(u64::to_string).collect();
                say(&mut out, &text.join(" "))?;
            }
            ["drain", n] => {
                let peer = sender.ok_or("drain before trust")?;
                let n: usize = n.parse().map_err(|_| "bad count")?;
                let t = fast::drain(&mut d, peer, n)?;
                say(&mut out, &t.to_string())?;
            }
            ["drainpipe", path, total] => {
                let total: u64 = total.parse().map_err(|_| "bad length")?;
                let t = fast::drain_pipe(path, total)?;
                say(&mut out, &t.to_string())?;
            }
            #[cfg(feature = "iceoryx2")]
            ["iceoryx2", tag, n, how @ ("polls" | "blocks")] => {
                let n: usize = n.parse().map_err(|_| "bad count")?;
                let samples = ice::echo(tag, n, *how == "blocks")?;
                let text: Vec<String> = samples.iter().map(u64::to_string).collect();
                say(&mut out, &text.join(" "))?;
            }
            #[cfg(feature = "iceoryx2")]
            ["iceoryx2-single", tag] => {
                ice_single = Some(ice::SingleRx::open(tag)?);
                say(&mut out, "ok")?;
            }
            #[cfg(feature = "iceoryx2")]
            ["iceoryx2-take", how @ ("blocks" | "polls")] => {
                // One sample, announced just before waiting, as `cosh` takes one.
                let rx = ice_single.as_ref().ok_or("no iceoryx2 service open")?;
                say(&mut out, "armed")?;
                let (delivered, readable, last) =
                    rx.take(Duration::from_secs(60), *how == "polls")?;
                say(&mut out, &format!("{delivered} {readable} {last}"))?;
            }
            #[cfg(feature = "iceoryx2")]
            ["iceoryx2-single-close"] => {
                ice_single = None;
                say(&mut out, "ok")?;
            }
            ["exit"] => break,
            _ => return Err(format!("receiver: unknown command {line:?}")),
        }
    }
    Ok(())
}

/// The receiver process and its control pipes.
pub(crate) struct Receiver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A run's scratch folder (the block manager's socket, FIFOs), removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Receiver {
    fn spawn(exe: &Path, prefix: &[&str], socket: &Path) -> Result<Receiver, String> {
        let mut child = Command::new(exe)
            .args(prefix)
            .arg("--receiver")
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Receiver {
            child,
            stdin,
            stdout,
        })
    }

    /// Sends a command without reading the answer.
    pub(crate) fn tell(&mut self, line: &str) -> Result<(), String> {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("the receiver stopped: {e}"))
    }

    /// Reads one answer line.
    pub(crate) fn line(&mut self) -> Result<String, String> {
        let mut answer = String::new();
        if self
            .stdout
            .read_line(&mut answer)
            .map_err(|e| e.to_string())?
            == 0
        {
            return Err("the receiver exited".into());
        }
        Ok(answer.trim().to_string())
    }

    /// Sends a command and reads its answer.
    pub(crate) fn ask(&mut self, line: &str) -> Result<String, String> {
        self.tell(line)?;
        self.line()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The baselines of single transfers, in the order their rows come: each a byte stream
/// from the sender to the receiver, opened anew for every size.
const STREAM_BASELINES: [(&str, &str); 2] = [("socket", "unix socket"), ("pipe", "pipe")];

/// Rounds of the bounces (and iceoryx2's ping-pongs) at each size, taken in turn.
const BOUNCE_ROUNDS: usize = 4;

/// Single transfers of iceoryx2 to a receiver asleep on its events, taken in turn with
/// Cosh's and the streams' (in a build with the `iceoryx2` feature).
pub(crate) const ICE_SINGLE: &str = "iceoryx2 single, blocks";
/// The same to a receiver that busy-polls.
pub(crate) const ICE_SINGLE_POLLS: &str = "iceoryx2 single, polls";
/// iceoryx2's single-transfer rows, in the order of the schedule's kinds.
const ICE_SINGLE_ROWS: [&str; 2] = [ICE_SINGLE, ICE_SINGLE_POLLS];
const ICE_SINGLES: usize = if cfg!(feature = "iceoryx2") {
    ICE_SINGLE_ROWS.len()
} else {
    0
};

/// The open streams of [`STREAM_BASELINES`] for one size.
struct Baselines {
    writers: Vec<Box<dyn Write>>,
    paths: Vec<PathBuf>,
}

impl Baselines {
    /// Connects the sender to the receiver by each baseline's stream, at paths in `dir`.
    fn open(rx: &mut Receiver, dir: &Path, size: u64) -> Result<Baselines, String> {
        let mut b = Baselines {
            writers: Vec::new(),
            paths: Vec::new(),
        };
        for (kind, _) in STREAM_BASELINES {
            let path = dir.join(format!("{kind}-{size}"));
            let writer: Box<dyn Write> = if kind == "socket" {
                let listener =
                    std::os::unix::net::UnixListener::bind(&path).map_err(|x| x.to_string())?;
                rx.tell(&format!("stream socket {}", path.display()))?;
                let (s, _): (UnixStream, _) = listener.accept().map_err(|x| x.to_string())?;
                Box::new(s)
            } else {
                make_fifo(&path)?;
                rx.tell(&format!("stream pipe {}", path.display()))?;
                Box::new(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|x| x.to_string())?,
                )
            };
            b.paths.push(path);
            let answer = rx.line()?;
            if answer != "ok" {
                return Err(format!("the receiver said {answer:?}"));
            }
            b.writers.push(writer);
        }
        Ok(b)
    }

    /// Closes the streams at both ends and removes their paths.
    fn close(self, rx: &mut Receiver) -> Result<(), String> {
        drop(self.writers);
        for path in &self.paths {
            let _ = std::fs::remove_file(path);
        }
        let answer = rx.ask("unstream")?;
        if answer != "ok" {
            return Err(format!("the receiver said {answer:?}"));
        }
        Ok(())
    }
}

/// The order in which `kinds` single-transfer cases take `n` samples each at `size`, as
/// (case, kept): below 1 MiB in turn, one sample of each per round, each round starting one
/// case later, after 10 rounds not kept; from 1 MiB one case after another, each after 3
/// samples not kept (30 for the first, whose first transfers of a size make the landings and
/// mappings the others find).
fn schedule(kinds: usize, n: usize, size: u64) -> Vec<(usize, bool)> {
    if size < 1 << 20 {
        let warm = 10;
        (0..n + warm)
            .flat_map(|round| (0..kinds).map(move |k| ((round + k) % kinds, round >= warm)))
            .collect()
    } else {
        (0..kinds)
            .flat_map(|which| {
                let warm = if which == 0 { 30 } else { 3 };
                (0..n + warm).map(move |i| (which, i >= warm))
            })
            .collect()
    }
}

fn samples_for(args: &Args, size: u64) -> usize {
    if size > 1 << 20 {
        (args.samples / 4).max(10)
    } else {
        args.samples
    }
}

fn parse_sample(answer: &str) -> Result<(u64, u64), String> {
    let mut w = answer.split_whitespace().map(str::parse::<u64>);
    match (w.next(), w.next()) {
        (Some(Ok(a)), Some(Ok(b))) => Ok((a, b)),
        _ => Err(format!("the receiver said {answer:?}")),
    }
}

/// Makes a FIFO (owner only) at `path`.
/// An error as the message the benchmarks return.
pub(crate) fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

/// Runs a block manager of pool `pool` with memory of `kind` (host, nc, device) at `socket`,
/// linked to the pool at `link_to` (pool 1 from pool 0, else pool 0), until stopped: the
/// helper process of the benchmarks that need one.
pub(crate) fn serve_block_manager(
    socket: &Path,
    pool: u32,
    kind: &str,
    link_to: Option<&Path>,
) -> Result<(), String> {
    let mut config = cosh_blockmgr::Config::host();
    config.socket = socket.to_path_buf();
    config.pool = cosh::PoolId(pool);
    config.kind = match kind {
        "device" => cosh_pool::PoolKind::Device,
        "nc" => cosh_pool::PoolKind::Nc,
        "host" => cosh_pool::PoolKind::Host,
        other => return Err(format!("unknown pool kind {other:?}")),
    };
    if let Some(other) = link_to {
        let id = if pool == 0 { 1 } else { 0 };
        config.links.insert(
            cosh::PoolId(id),
            cosh_blockmgr::LinkAddr::Unix(other.to_path_buf()),
        );
    }
    cosh_blockmgr::BlockManager::bind(config)
        .map_err(e)?
        .run()
        .map_err(e)
}

/// Waits (up to 10 s) until something answers at `socket`.
pub(crate) fn wait_for_socket(socket: &Path, what: &str) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cosh_sys::socket::SeqPacket::connect(socket).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(format!("the {what} did not start"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

pub(crate) fn make_fifo(path: &Path) -> Result<(), String> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .map_err(|x| format!("cannot make a FIFO at {}: {x}", path.display()))
}

/// Prepares an aggregate of `size` bytes filled with data, as a producer would, and returns
/// its first write piece so that the timestamp can be written without a round trip.
fn prepare(d: &mut Domain, size: u64, fill: u8) -> Result<(Agg, cosh::WritePiece), cosh::Error> {
    let agg = d.alloc(size)?;
    let pieces = d.write_pieces(agg, 0)?;
    for p in &pieces {
        d.bytes_mut(p)?.fill(fill);
    }
    let first = pieces
        .first()
        .copied()
        .ok_or_else(|| cosh::Error::Protocol("no piece".into()))?;
    Ok((agg, first))
}

/// One line saying what the block manager chose for small transfers (`cosh bench all` puts
/// it in its report).
pub fn policy_line(p: &cosh::SmallTransfers) -> String {
    format!(
        "small transfers: inline up to {} bytes strong, {} bytes weak (to a receiver that does not map the buffer yet); strong shares of a buffer never shared copied up to {} bytes; {}",
        p.inline_max,
        p.inline_max_weak,
        p.share_copy_max,
        p.measured()
    )
}

/// Measures everything; returns one row per case and size.
pub fn run(args: &Args, prefix: &[&str]) -> Result<Vec<Row>, String> {
    let e = |e: cosh::Error| e.to_string();
    let exe = std::env::current_exe().map_err(|x| x.to_string())?;
    let dir = std::env::temp_dir().join(format!("cosh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|x| x.to_string())?;
    // Removed however the run ends, after the block manager (dropped first) is gone.
    let _dir = TempDir(dir.clone());
    let socket = dir.join("host.sock");
    let _daemon = Guard(
        Command::new(&exe)
            .args(prefix)
            .arg("--daemon")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|x| format!("cannot start the block manager: {x}"))?,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cosh_sys::socket::SeqPacket::connect(&socket).is_err() {
        if std::time::Instant::now() > deadline {
            return Err("the block manager did not start".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut sender = Domain::connect_with(&Options::new("bench-sender").socket(&socket).no_spawn())
        .map_err(e)?;
    let mut rx = Receiver::spawn(&exe, prefix, &socket)?;
    let ready = rx.line()?;
    let receiver_id = ready
        .strip_prefix("ready ")
        .and_then(|b| b.parse().ok())
        .map(cosh::DomainId::from_bits)
        .ok_or_else(|| format!("the receiver said {ready:?}"))?;
    rx.ask(&format!("trust {}", sender.id().to_bits()))?;
    if !args.no_pin
        && let Some((mine, theirs)) = cosh_sys::cpu::first_two()
    {
        cosh_sys::cpu::pin(mine)?;
        let answer = rx.ask(&format!("pin {theirs}"))?;
        if answer != "ok" {
            return Err(format!("the receiver said {answer:?}"));
        }
    }
    // Both ways, so that a buffer can bounce on direct rings.
    sender.trust(receiver_id).map_err(e)?;
    let p = sender.small_transfer_policy().map_err(e)?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", policy_line(&p));
    }

    // Per size: memcpy, the single transfers and their baselines, the bounces (and
    // iceoryx2's four ping-pong rows), the streams; then the doorbells.
    let steps = args.sizes.len()
        * (1 + CASES.len()
            + STREAM_BASELINES.len()
            + ICE_SINGLES
            + 2
            + 4 * usize::from(cfg!(feature = "iceoryx2"))
            + 1)
        + 1;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(steps as u64)
    };
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let step = |name: &str, size: u64| {
        bar.set_message(format!("{name}, {size} bytes"));
        bar.inc(1);
    };
    let mut rows = Vec::new();
    for &size in &args.sizes {
        let n = samples_for(args, size);
        let warmup = 3;
        // memcpy into a prefaulted buffer.
        let src: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut dst = vec![1u8; size as usize];
        let mut copies = Vec::new();
        for _ in 0..n + warmup {
            let t0 = now_ns();
            dst.copy_from_slice(&src);
            copies.push(now_ns() - t0);
            std::hint::black_box(&mut dst);
        }
        copies.drain(..warmup);
        rows.push(summarize("memcpy", size, copies.clone(), copies));
        step("memcpy", size);

        // Every single transfer, Cosh's and the baselines', in the order `schedule` gives.
        let mut baselines = Baselines::open(&mut rx, &dir, size)?;
        #[cfg(feature = "iceoryx2")]
        let ice_single = ice::Single::open(&mut rx, size)?;
        let kinds = CASES.len() + STREAM_BASELINES.len() + ICE_SINGLES;
        let mut series: Vec<(Vec<u64>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); kinds];
        let mut spins_now: Option<u32> = None;
        let mut data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let order = schedule(kinds, n, size);
        for (i, &(which, kept)) in order.iter().enumerate() {
            if i % 64 == 0 {
                bar.set_message(format!(
                    "single transfers, {size} bytes, {}%",
                    i * 100 / order.len()
                ));
            }
            let fill = i as u8;
            let (d, r) = if let Some(&(_, mode, weak, polls)) = CASES.get(which) {
                let spins = if polls {
                    cosh::SPIN_FOREVER
                } else {
                    cosh::default_spins()
                };
                if spins_now != Some(spins) {
                    let answer = rx.ask(&format!("spins {spins}"))?;
                    if answer != "ok" {
                        return Err(format!("the receiver said {answer:?}"));
                    }
                    spins_now = Some(spins);
                }
                let flags = if weak {
                    TransferFlags::weak()
                } else {
                    TransferFlags::strong()
                };
                let (agg, first) = prepare(&mut sender, size, fill).map_err(e)?;
                let armed = rx.ask("cosh")?;
                if armed != "armed" {
                    return Err(format!("the receiver said {armed:?}"));
                }
                // Give the receiver time to block in its receive.
                std::thread::sleep(Duration::from_micros(200));
                let t0 = now_ns();
                sender.bytes_mut(&first).map_err(e)?[..8].copy_from_slice(&t0.to_le_bytes());
                sender.transfer(agg, receiver_id, mode, flags).map_err(e)?;
                sender.decref(agg).map_err(e)?;
                parse_sample(&rx.line()?)?
            } else if which >= CASES.len() + STREAM_BASELINES.len() {
                #[cfg(feature = "iceoryx2")]
                {
                    // Likewise, a sample of iceoryx2's.
                    let polls = ICE_SINGLE_ROWS[which - CASES.len() - STREAM_BASELINES.len()]
                        == ICE_SINGLE_POLLS;
                    let armed = rx.ask(if polls {
                        "iceoryx2-take polls"
                    } else {
                        "iceoryx2-take blocks"
                    })?;
                    if armed != "armed" {
                        return Err(format!("the receiver said {armed:?}"));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                    ice_single.send(fill, !polls)?;
                    parse_sample(&rx.line()?)?
                }
                #[cfg(not(feature = "iceoryx2"))]
                return Err(format!("no single-transfer case {which}"));
            } else {
                // The same protocol as Cosh's cases: the receiver says it is about to block,
                // and is given time to.
                let stream = which - CASES.len();
                let armed = rx.ask(&format!("read {stream} {size}"))?;
                if armed != "armed" {
                    return Err(format!("the receiver said {armed:?}"));
                }
                std::thread::sleep(Duration::from_micros(200));
                let t0 = now_ns();
                data[..8].copy_from_slice(&t0.to_le_bytes());
                baselines.writers[stream]
                    .write_all(&data)
                    .map_err(|x| x.to_string())?;
                parse_sample(&rx.line()?)?
            };
            if kept {
                series[which].0.push(d);
                series[which].1.push(r);
            }
        }
        baselines.close(&mut rx)?;
        #[cfg(feature = "iceoryx2")]
        {
            drop(ice_single);
            let answer = rx.ask("iceoryx2-single-close")?;
            if answer != "ok" {
                return Err(format!("the receiver said {answer:?}"));
            }
        }
        let names = CASES
            .iter()
            .map(|c| c.0)
            .chain(STREAM_BASELINES.iter().map(|b| b.1))
            .chain(ICE_SINGLE_ROWS.into_iter().take(ICE_SINGLES));
        for (name, (delivered, readable)) in names.zip(series) {
            rows.push(summarize(name, size, delivered, readable));
            step(name, size);
        }

        // The fast path as it is used: a buffer bounced on direct rings (and iceoryx2's
        // ping-pongs), in rounds taken in turn, so that a slow phase of the machine falls on
        // all of them alike; then streams.
        let bounces = (n * 10).max(200);
        let mut bounced: Vec<(&str, Vec<u64>)> = Vec::new();
        let mut add = |name: &'static str, samples: Vec<u64>| match bounced
            .iter_mut()
            .find(|b| b.0 == name)
        {
            Some(b) => b.1.extend(samples),
            None => bounced.push((name, samples)),
        };
        for round in 0..BOUNCE_ROUNDS {
            for (name, spins) in [
                ("weak bounce, polls", cosh::SPIN_FOREVER),
                ("weak bounce, blocks", 0),
            ] {
                // The cases before leave buffers to free and mappings to drop (milliseconds
                // at 64 MiB, on the same two cores), later rounds the last bounce's buffer:
                // let that finish first.
                let settle = if round == 0 { 200 } else { 20 };
                std::thread::sleep(std::time::Duration::from_millis(settle));
                let samples = fast::bounce(
                    &mut sender,
                    &mut rx,
                    receiver_id,
                    size,
                    bounces / BOUNCE_ROUNDS,
                    spins,
                )?;
                add(name, samples.into_iter().skip(warmup).collect());
            }
            #[cfg(feature = "iceoryx2")]
            for (name, samples) in ice::samples(&mut rx, size, bounces / BOUNCE_ROUNDS, round)? {
                add(name, samples);
            }
        }
        for (name, samples) in bounced {
            rows.push(summarize(name, size, samples.clone(), samples));
            step(name, size);
        }
        // Enough transfers to time, few enough that what is in flight at once fits the
        // receiver's free list (256 MiB), so that the timed pass reuses warm memory.
        let streamed = usize::try_from((192u64 << 20) / size.max(1))
            .unwrap_or(usize::MAX)
            .clamp(3, n.max(20));
        rows.extend(fast::stream(
            &mut sender,
            &mut rx,
            receiver_id,
            &dir,
            size,
            streamed,
        )?);
        step("streams", size);
    }
    rows.extend(doorbells::measure(&mut rx, args.samples.max(100) * 10)?);
    bar.finish_and_clear();
    let _ = rx.ask("exit");
    let _ = sender.shutdown();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_medians_interval_holds_the_median() {
        let ns = |d: Duration| d.as_nanos() as u64;
        let sorted: Vec<u64> = (0..200).collect();
        let (lo, hi) = median_interval(&sorted).expect("an interval");
        // Ranks 100 -/+ 0.98 * sqrt(200) = 13.9, outward.
        assert_eq!((ns(lo), ns(hi)), (86, 114));
        let median = ns(percentile(&sorted, 50));
        assert!(ns(lo) < median && median < ns(hi));
        // Six samples: the extremes (a 97 % interval); fewer: none.
        assert_eq!(
            median_interval(&[5, 6, 7, 8, 9, 10]),
            Some((Duration::from_nanos(5), Duration::from_nanos(10)))
        );
        assert_eq!(median_interval(&[5, 6, 7, 8, 9]), None);
        assert_eq!(median_interval(&[]), None);
        let row = summarize("x", 1, sorted.clone(), sorted);
        let (lo, hi) = row.readable_ci.expect("an interval");
        assert_eq!((ns(lo), ns(hi)), (86, 114));
    }

    #[test]
    fn small_sizes_take_turns_large_ones_run_back_to_back() {
        let kept = |order: &[(usize, bool)], which: usize| {
            order.iter().filter(|&&(w, k)| w == which && k).count()
        };
        let small = schedule(3, 5, 4096);
        assert_eq!(small.len(), 3 * 15);
        // Round 0 in order, round 1 one case later, every case kept 5 times.
        let firsts: Vec<usize> = small.iter().map(|s| s.0).take(6).collect();
        assert_eq!(firsts, [0, 1, 2, 1, 2, 0]);
        assert!(small[..30].iter().all(|s| !s.1) && small[30..].iter().all(|s| s.1));
        assert!((0..3).all(|w| kept(&small, w) == 5));
        let large = schedule(3, 5, 1 << 20);
        assert_eq!(large.len(), 35 + 8 + 8);
        // One case after another.
        assert!(large[..35].iter().all(|s| s.0 == 0));
        assert!(large[35..43].iter().all(|s| s.0 == 1));
        assert!((0..3).all(|w| kept(&large, w) == 5));
    }
}
