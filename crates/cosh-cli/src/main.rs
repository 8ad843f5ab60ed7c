//! `cosh`: start and stop the block manager, show what it holds, and run the demo.

#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    reason = "a command-line tool reports on standard output"
)]

mod demo;
mod fs;
mod pipe;
mod topology;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use cosh::{Domain, Options, Status};
use cosh_blockmgr::{BlockManager, Config};

/// Cosh moves, shares and copies bulk data between processes through a block manager that
/// owns the memory.
///
/// Start the host pool's block manager with `cosh up` (or let the first client start it),
/// look at it with `cosh status`, stop it with `cosh down`. `cosh demo` shows everything at
/// work: real processes passing data in every mode and strength, every byte verified, next to
/// a Unix socket and a pipe.
#[derive(Parser, Debug)]
#[command(version, propagate_version = true)]
struct Cli {
    /// The block manager's socket (default: host.sock in the runtime directory:
    /// $COSH_RUNTIME_DIR, else $XDG_RUNTIME_DIR/cosh, else /run/cosh for root, else
    /// /tmp/cosh-UID).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a pool's block manager, the host pool's by default (in the foreground unless
    /// --detach), or every pool of a topology (--topology).
    Up {
        /// Run in the background and return once it answers.
        #[arg(long, short)]
        detach: bool,
        /// Print nothing when ready.
        #[arg(long, short)]
        quiet: bool,
        /// Bytes of recycled buffers kept per domain, in MiB.
        #[arg(long, default_value_t = 256, value_name = "MIB")]
        free_budget_mib: u64,
        /// The most memory the pool may hold, in MiB (default: half the machine's memory).
        #[arg(long, value_name = "MIB")]
        pool_mib: Option<u64>,
        /// The kind of memory: coherent shared memory (host), shared memory emulated without
        /// coherence (nc: every client caches what it maps, and the library writes back and
        /// refreshes around each transfer, so programs run unchanged), or memory only this
        /// pool's clients map (device).
        #[arg(long, value_enum, default_value_t = Kind::Host)]
        kind: Kind,
        /// The pool's id (domain ids name it: pools that run side by side need different ids).
        #[arg(long, default_value_t = 0, value_name = "N")]
        pool: u32,
        /// With --kind nc: clients' caches also evict a random line, one request in N (0:
        /// never), as hardware does.
        #[arg(long, default_value_t = 0, value_name = "N")]
        nc_eviction: u32,
        /// Another pool's block manager, as POOL=ADDRESS (repeat for each): transfers to its
        /// domains go over a link to it. ADDRESS is its socket on this machine, or
        /// tls://HOST:PORT (tcp://, with --insecure-plain-tcp) for one on another host.
        #[arg(long = "link", value_name = "POOL=ADDRESS", value_parser = parse_link)]
        links: Vec<(u32, cosh_blockmgr::LinkAddr)>,
        #[command(flatten)]
        remote: Box<cosh_blockmgr::RemoteOptions>,
        /// Pace copies arriving from other pools like a DMA engine: microseconds of set-up per
        /// copy (an emulation, reported by `cosh status`; needs --dma-mbps).
        #[arg(long, value_name = "US", requires = "dma_mbps")]
        dma_setup_us: Option<u64>,
        /// With --dma-setup-us: the emulated engine's bandwidth in MB/s.
        #[arg(long, value_name = "MBPS", requires = "dma_setup_us", value_parser = clap::value_parser!(u64).range(1..))]
        dma_mbps: Option<u64>,
        /// Start every pool of a topology instead, each in the background with its socket
        /// NAME.sock in the runtime directory and linked to every other: `default` (a host
        /// pool, id 0, an nc pool, id 1, and a device pool, id 2) or a TOML file of `[[pool]]`
        /// tables, each with `name`, `id`, `kind` (`host`, `nc` or `device`), for nc
        /// `eviction`, and optionally `dma_setup_us` with `dma_mbps` and `listen` (links from
        /// other hosts); `[[remote]]` tables (`id`, `address`) name pools on other hosts,
        /// and `[links]` (`token_file`, `tls_ca`, `tls_cert`, `tls_key`, `insecure_plain_tcp`)
        /// says how to reach them.
        #[arg(long, value_name = "default|FILE", conflicts_with_all = ["kind", "pool", "nc_eviction", "links", "dma_setup_us", "listen", "link_token_file", "tls_cert", "tls_ca", "insecure_plain_tcp"])]
        topology: Option<String>,
    },
    /// Stop the block manager (its clients lose their connections).
    Down {
        /// Stop every block manager that answers in the runtime directory.
        #[arg(long)]
        all: bool,
    },
    /// Show pools, domains, buffers, bytes in use, and transfers by mode and mechanism.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Show every block manager that answers in the runtime directory (every pool of a
        /// topology).
        #[arg(long)]
        all: bool,
    },
    /// A byte stream between two commands through a Cosh pipe: `cmd | cosh pipe send NAME`
    /// and `cosh pipe recv NAME | cmd` (a stalled receiver stops the sender at its window).
    #[command(subcommand)]
    Pipe(PipeCmd),
    /// Run real processes that pass aggregates in every mode and strength, verify every byte,
    /// and compare with a Unix socket and a pipe (starts a block manager if none runs).
    Demo(demo::DemoArgs),
    /// Benchmarks: `cosh bench fig2a -- --help` lists the figure's options (sizes, samples,
    /// --csv, --plot).
    Bench {
        /// The figure: fig2a (one-way transfer latency against size, every mode and
        /// strength, with memcpy, Unix socket, pipe and futex baselines in the same run) or
        /// fig2b (transfers across pools, with memcpy, process_vm_writev and TCP loopback),
        /// fig2c (repeated file reads, CoshFS against tmpfs), table3 (a trace replayed on
        /// every target: `cosh bench table3 -- TRACE_DIR`), pipe (Cosh pipe against a
        /// Linux pipe), or all (every figure, written to a report folder).
        figure: Figure,
        /// The figure's own options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        options: Vec<String>,
    },
    /// Replay a file system trace (traces/FORMAT.md) against tmpfs and CoshFS, check every
    /// read and the final tree, and time each: `cosh replay TRACE_DIR [--targets ...]`.
    Replay {
        /// The trace folder and options (`cosh replay --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        options: Vec<String>,
    },
    /// CoshFS, the file system whose files are aggregates: `cosh fs serve`, `cosh fs mount DIR`.
    #[command(subcommand)]
    Fs(FsCmd),
    /// A demo consumer process (started by `cosh demo`).
    #[command(hide = true, name = "__demo-consumer")]
    DemoConsumer {
        /// The name to register.
        #[arg(long)]
        name: String,
        /// The producer to trust.
        #[arg(long)]
        producer: String,
    },
}

/// `cosh fs`.
#[derive(Subcommand, Debug)]
enum FsCmd {
    /// Run the CoshFS service (its files live as long as it runs).
    Serve(fs::Where),
    /// Mount CoshFS on an empty directory so unmodified programs use it (FUSE; needs
    /// /dev/fuse and fusermount3). Starts the service in this process if none runs.
    Mount(fs::MountArgs),
}

/// The ends of `cosh pipe`.
#[derive(Subcommand, Debug)]
enum PipeCmd {
    /// Copy standard input into the pipe NAME.
    Send(pipe::PipeArgs),
    /// Copy the pipe NAME onto standard output.
    Recv(pipe::PipeArgs),
}

/// The kinds of memory `cosh up` can serve.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Cache-coherent shared memory.
    Host,
    /// Shared memory without coherence (emulated).
    Nc,
    /// Memory only this pool's clients map (an accelerator's): transfers to and from other
    /// pools are copied by a copy engine.
    Device,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Host => "coherent",
            Kind::Nc => "non-coherent, emulated",
            Kind::Device => "device, unshared",
        }
    }

    fn pool_kind(self) -> cosh_pool::PoolKind {
        match self {
            Kind::Host => cosh_pool::PoolKind::Host,
            Kind::Nc => cosh_pool::PoolKind::Nc,
            Kind::Device => cosh_pool::PoolKind::Device,
        }
    }
}

fn parse_link(text: &str) -> Result<(u32, cosh_blockmgr::LinkAddr), String> {
    let (pool, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("expected POOL=ADDRESS, got {text:?}"))?;
    let pool = pool
        .trim()
        .parse::<u32>()
        .map_err(|e| format!("pool {pool:?} is not a number: {e}"))?;
    Ok((pool, cosh_blockmgr::LinkAddr::parse(addr)?))
}

/// The benchmarks `cosh bench` runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Figure {
    /// One-way transfer latency against aggregate size (the paper's Figure 2a).
    Fig2a,
    /// Transfers across pools: latency and pipelined inter-arrival time against size (the
    /// paper's Figure 2b).
    Fig2b,
    /// Pipe throughput across processes: a Cosh pipe against a Linux pipe.
    Pipe,
    /// Trace replay on every target (the paper's Table 3): `cosh bench table3 -- TRACE_DIR`.
    Table3,
    /// Repeated reads of one file against read size: CoshFS's aggregate and legacy APIs
    /// against tmpfs pread (the paper's Figure 2c).
    Fig2c,
    /// The whole evaluation: Figures 2a, 2b, 2c and Table 3 (with `--trace DIR`), written to
    /// a report folder (`cosh bench all -- --quick --trace ../shared/traces/devtrace`).
    All,
}

fn socket_of(cli: &Cli) -> PathBuf {
    cli.socket.clone().unwrap_or_else(cosh::default_socket)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = socket_of(&cli);
    let result = match cli.command {
        Cmd::Up {
            quiet,
            free_budget_mib,
            pool_mib,
            topology: Some(what),
            ..
        } => topology::load(&what).and_then(|t| {
            topology::up(
                &cosh_sys::runtime::runtime_dir(),
                &t,
                free_budget_mib,
                pool_mib,
                quiet,
            )
        }),
        Cmd::Up {
            detach,
            quiet,
            free_budget_mib,
            pool_mib,
            kind,
            pool,
            nc_eviction,
            links,
            remote,
            dma_setup_us,
            dma_mbps,
            topology: None,
        } => up(
            &socket,
            detach,
            quiet,
            Serve {
                free_budget_mib,
                pool_mib,
                kind,
                pool,
                nc_eviction,
                links,
                remote: *remote,
                dma: dma_setup_us.zip(dma_mbps),
            },
        ),
        Cmd::Down { all: true } => topology::down_all(&cosh_sys::runtime::runtime_dir()),
        Cmd::Down { all: false } => down(&socket),
        Cmd::Status { json, all: true } => {
            topology::status_all(&cosh_sys::runtime::runtime_dir(), json)
        }
        Cmd::Status { json, all: false } => status(&socket, json),
        Cmd::Fs(FsCmd::Serve(at)) => fs::serve(&socket, &at),
        Cmd::Fs(FsCmd::Mount(args)) => fs::mount(&socket, &args),
        Cmd::Pipe(PipeCmd::Send(args)) => pipe::send(&socket, &args),
        Cmd::Pipe(PipeCmd::Recv(args)) => pipe::recv(&socket, &args),
        Cmd::Demo(args) => demo::run(&socket, &args),
        Cmd::DemoConsumer { name, producer } => demo::consumer(&socket, &name, &producer),
        Cmd::Bench {
            figure: Figure::Fig2a,
            options,
        } => {
            let args = std::iter::once("cosh bench fig2a".to_string()).chain(options);
            cosh_bench::main_with(&["bench", "fig2a"], args)
        }
        Cmd::Bench {
            figure: Figure::Fig2b,
            options,
        } => {
            let args = std::iter::once("cosh bench fig2b".to_string()).chain(options);
            cosh_bench::fig2b::main_with(&["bench", "fig2b"], args)
        }
        Cmd::Bench {
            figure: Figure::Pipe,
            options,
        } => {
            let args = std::iter::once("cosh bench pipe".to_string()).chain(options);
            cosh_bench::pipe::main_with(&["bench", "pipe"], args)
        }
        Cmd::Bench {
            figure: Figure::Table3,
            options,
        } => {
            let args = std::iter::once("cosh bench table3".to_string()).chain(options);
            cosh_bench::replay::main_with(&["bench", "fig2c"], args, true)
        }
        Cmd::Replay { options } => {
            let args = std::iter::once("cosh replay".to_string()).chain(options);
            cosh_bench::replay::main_with(&["bench", "fig2c"], args, false)
        }
        Cmd::Bench {
            figure: Figure::All,
            options,
        } => {
            let args = std::iter::once("cosh bench all".to_string()).chain(options);
            cosh_bench::all::main_with(args)
        }
        Cmd::Bench {
            figure: Figure::Fig2c,
            options,
        } => {
            let args = std::iter::once("cosh bench fig2c".to_string()).chain(options);
            cosh_bench::fig2c::main_with(&["bench", "fig2c"], args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cosh: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A failure, as the user should read it.
type Outcome = Result<(), String>;

fn connect(socket: &Path, name: &str) -> Result<Domain, cosh::Error> {
    Domain::connect_with(&Options::new(name).socket(socket).no_spawn())
}

/// What one block manager serves.
#[derive(Clone, Debug)]
pub(crate) struct Serve {
    pub(crate) free_budget_mib: u64,
    pub(crate) pool_mib: Option<u64>,
    pub(crate) kind: Kind,
    pub(crate) pool: u32,
    pub(crate) nc_eviction: u32,
    /// Other pools' block managers.
    pub(crate) links: Vec<(u32, cosh_blockmgr::LinkAddr)>,
    /// Links over TCP: listening, token, TLS.
    pub(crate) remote: cosh_blockmgr::RemoteOptions,
    /// An emulated DMA engine: set-up microseconds and MB/s.
    pub(crate) dma: Option<(u64, u64)>,
}

impl Serve {
    /// The embedded defaults: the host pool, coherent.
    pub(crate) fn host() -> Serve {
        Serve {
            free_budget_mib: 256,
            pool_mib: None,
            kind: Kind::Host,
            pool: 0,
            nc_eviction: 0,
            links: Vec::new(),
            remote: cosh_blockmgr::RemoteOptions::default(),
            dma: None,
        }
    }
}

fn up(socket: &Path, detach: bool, quiet: bool, serve: Serve) -> Outcome {
    if detach {
        if connect(socket, "cosh-up").is_ok() {
            if !quiet {
                println!("a block manager already serves {}", socket.display());
            }
            return Ok(());
        }
        let pid = start_detached(socket, serve)?;
        if !quiet {
            println!(
                "block manager started (pid {pid}), serving {}; stop it with `cosh down`",
                socket.display()
            );
        }
        return Ok(());
    }
    let mut config = Config::host();
    config.socket = socket.to_path_buf();
    config.kind = serve.kind.pool_kind();
    config.pool = cosh_core::PoolId(serve.pool);
    config.nc_eviction = serve.nc_eviction;
    serve.remote.apply(&serve.links, &mut config)?;
    for (pool, addr) in &serve.links {
        if *pool == serve.pool {
            return Err(format!(
                "--link {pool}=...: pool {pool} is this block manager's own"
            ));
        }
        config.links.insert(cosh_core::PoolId(*pool), addr.clone());
    }
    config.dma = serve.dma.map(|(us, mbps)| cosh_pool::engine::DmaModel {
        setup: Duration::from_micros(us),
        bytes_per_second: mbps.saturating_mul(1_000_000),
    });
    config.free_budget = serve.free_budget_mib.saturating_mul(1024 * 1024);
    if let Some(mib) = serve.pool_mib {
        config.pool_limit = mib.saturating_mul(1024 * 1024);
    }
    let manager = BlockManager::bind(config).map_err(|e| e.to_string())?;
    if !quiet {
        eprintln!(
            "serving pool {} ({} memory) at {} (Ctrl-C to stop)",
            serve.pool,
            serve.kind.describe(),
            manager.socket().display()
        );
        if let Some((us, mbps)) = serve.dma {
            eprintln!(
                "copies from other pools paced by an EMULATED DMA engine ({us} us set-up, {mbps} MB/s)"
            );
        }
    }
    manager.run().map_err(|e| e.to_string())
}

/// Starts `cosh up` in the background, in a process group of its own, and waits until it
/// answers. Returns its pid.
pub(crate) fn start_detached(socket: &Path, serve: Serve) -> Result<u32, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let mut command = Command::new(exe);
    command
        .arg("--socket")
        .arg(socket)
        .args(["up", "--quiet", "--free-budget-mib"])
        .arg(serve.free_budget_mib.to_string())
        .args(serve.pool_mib.map(|m| format!("--pool-mib={m}")))
        .arg(format!("--kind={}", serve.kind.pool_kind().name()))
        .arg(format!("--pool={}", serve.pool))
        .arg(format!("--nc-eviction={}", serve.nc_eviction))
        .args(serve.links.iter().flat_map(|(pool, addr)| {
            [
                std::ffi::OsString::from("--link"),
                std::ffi::OsString::from(format!("{pool}={addr}")),
            ]
        }))
        .args(serve.remote.to_args())
        .args(
            serve.dma.iter().flat_map(|(us, mbps)| {
                [format!("--dma-setup-us={us}"), format!("--dma-mbps={mbps}")]
            }),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start the block manager: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if connect(socket, "cosh-up").is_ok() {
            let pid = child.id();
            // Reap it in the background if this process outlives it.
            std::thread::spawn(move || child.wait());
            return Ok(pid);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the block manager exited at once ({status}); run `cosh up` in the foreground to see why"
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the block manager did not answer at {} within 10 s",
                socket.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn down(socket: &Path) -> Outcome {
    let d = connect(socket, "cosh-down")
        .map_err(|_| format!("no block manager answers at {}", socket.display()))?;
    stop(d, socket)
}

/// Asks the block manager `d` is connected to to stop, and waits until its socket is gone.
pub(crate) fn stop(d: Domain, socket: &Path) -> Outcome {
    d.shutdown().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while socket.exists() {
        if Instant::now() > deadline {
            return Err("the block manager did not stop within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("block manager at {} stopped", socket.display());
    Ok(())
}

/// What a policy limit of `value` is: set by hand with `flag`, the most the block manager
/// ever chooses (`cap`: `what` paid at every size it measured), or the crossover it measured.
fn limit_kind(value: u64, cap: u64, fixed: bool, flag: &str, what: &str) -> String {
    if fixed {
        format!("set by coshd {flag}")
    } else if value >= cap {
        format!("the cap: {what} paid at every size up to it")
    } else {
        "a crossover measured at start-up".to_string()
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn status(socket: &Path, json: bool) -> Outcome {
    let mut d = connect(socket, "cosh-status").map_err(|_| {
        format!(
            "no block manager answers at {}; start one with `cosh up`",
            socket.display()
        )
    })?;
    let s = status_of(&mut d)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    print_status(socket, &s, d.pool_kind());
    Ok(())
}

/// The block manager's status, this looking domain left out.
pub(crate) fn status_of(d: &mut Domain) -> Result<Status, String> {
    let mut s = d.status().map_err(|e| e.to_string())?;
    let me = d.id().to_bits();
    s.domains.retain(|x| x.domain != me);
    s.domain_count = s.domain_count.saturating_sub(1);
    Ok(s)
}

pub(crate) fn print_status(socket: &Path, s: &Status, kind: cosh_pool::PoolKind) {
    println!(
        "block manager pid {} serving pool {} ({} memory) at {} (up {} s)",
        s.pid,
        s.pool,
        match kind {
            cosh_pool::PoolKind::Host => "coherent",
            cosh_pool::PoolKind::Nc => "non-coherent, emulated",
            cosh_pool::PoolKind::Device => "device, unshared",
        },
        socket.display(),
        s.uptime_s
    );
    println!(
        "buffers in use: {} ({}); recycled and ready: {} ({}); pool memory: {} of {}; names: {}",
        s.buffers,
        human(s.bytes_in_use),
        s.free_buffers,
        human(s.free_bytes),
        human(s.pool_bytes),
        human(s.pool_limit),
        s.names
    );
    let t = &s.transfers;
    println!(
        "transfers: {} move, {} share, {} copy ({} weak); carried by descriptor: {} pieces, by seal: {} buffers, by copy: {} pieces ({}); seals refused: {}",
        t.moves,
        t.shares,
        t.copies,
        t.weak,
        t.by_descriptor,
        t.by_seal,
        t.by_copy,
        human(t.copied_bytes),
        t.refused_seals
    );
    if t.inline > 0 {
        println!(
            "inline (bytes copied on direct rings by the libraries): {} transfers ({})",
            t.inline,
            human(t.inline_bytes)
        );
    }
    let p = &s.small;
    if p.inline_max == 0 && p.inline_max_weak == 0 {
        println!(
            "small transfers: never inline ({})",
            if p.fixed {
                "coshd --inline-max 0"
            } else if kind == cosh_pool::PoolKind::Host {
                "inline never paid on this machine"
            } else {
                "only coherent pools inline"
            }
        );
    } else {
        let inline = |max: u64| {
            limit_kind(
                max,
                cosh_blockmgr::MAX_INLINE,
                p.fixed,
                "--inline-max",
                "inline",
            )
        };
        println!(
            "small transfers: inline on direct rings up to {} strong ({}; above it, through the block manager), up to {} weak to a receiver that does not map the buffer yet ({}; above it, by reference)",
            human(p.inline_max),
            inline(p.inline_max),
            human(p.inline_max_weak),
            inline(p.inline_max_weak),
        );
    }
    if p.share_copy_max == 0 {
        println!(
            "strong shares: always sealed and mapped by reference ({})",
            if p.share_fixed {
                "coshd --share-copy-max 0"
            } else if kind == cosh_pool::PoolKind::Host {
                "copying never paid on this machine"
            } else {
                "only coherent pools copy them"
            }
        );
    } else {
        println!(
            "strong shares: a buffer never shared is copied into the receiver's memory up to {} ({}; above it, sealed and mapped by reference); its next strong share seals it",
            human(p.share_copy_max),
            limit_kind(
                p.share_copy_max,
                cosh_blockmgr::SHARE_COPY_LIMIT,
                p.share_fixed,
                "--share-copy-max",
                "copying"
            ),
        );
    }
    if !(p.fixed && p.share_fixed) && kind == cosh_pool::PoolKind::Host {
        println!("policy {}", p.measured());
    }
    if t.exported + t.imported + t.lost > 0 || !s.links.is_empty() {
        println!(
            "across pools: {} sent, {} received, {} lost after their senders were answered",
            t.exported, t.imported, t.lost
        );
    }
    for l in &s.links {
        let how = if l.remote {
            "over TCP"
        } else {
            "on this machine"
        };
        if l.open {
            println!(
                "link {} pool {} ({how}): open, {} transfer(s) in flight",
                if l.outgoing { "to" } else { "from" },
                l.pool,
                l.in_flight
            );
        } else {
            println!(
                "link to pool {} ({how}): configured, opened at the first transfer",
                l.pool
            );
        }
    }
    if let Some(dma) = s.dma {
        println!(
            "copies from other pools paced by an EMULATED DMA engine: {} us set-up, {}/s",
            dma.setup_us,
            human(dma.bytes_per_second)
        );
    }
    let l = &s.limits;
    let or_none = |n: u64, show: &dyn Fn(u64) -> String| {
        if n == 0 {
            "no limit".to_string()
        } else {
            show(n)
        }
    };
    println!(
        "quotas per domain: {} in {} buffers made and alive, {} transfers waiting for any one \
         receiver; per uid (but the block manager's): {} in {} buffers, {} connections",
        or_none(l.domain_bytes, &human),
        or_none(l.domain_buffers, &|n| n.to_string()),
        l.sender_pending,
        or_none(l.uid_bytes, &human),
        or_none(l.uid_buffers, &|n| n.to_string()),
        l.uid_connections
    );
    println!(
        "limits: {} connections and {} buffers (of {} descriptors), {} transfers waiting per receiver",
        l.connections, l.buffers, l.descriptors, l.receiver_pending
    );
    println!("domains: {}", s.domain_count);
    if !s.domains.is_empty() {
        println!(
            "  {:<14} {:<20} {:>8} {:>6} {:>10} {:>8} {:>10} {:>10}",
            "domain", "name", "pid", "uid", "aggregates", "buffers", "bytes", "quota used"
        );
        for d in &s.domains {
            println!(
                "  {:<14} {:<20} {:>8} {:>6} {:>10} {:>8} {:>10} {:>10}",
                cosh::DomainId::from_bits(d.domain).to_string(),
                d.name,
                d.pid,
                d.uid,
                d.aggregates,
                d.buffers,
                human(d.bytes),
                human(d.quota_bytes)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::limit_kind;

    #[test]
    fn a_limit_says_whether_it_was_measured_capped_or_set() {
        assert_eq!(
            limit_kind(512 << 10, 1 << 20, false, "--inline-max", "inline"),
            "a crossover measured at start-up"
        );
        assert_eq!(
            limit_kind(1 << 20, 1 << 20, false, "--inline-max", "inline"),
            "the cap: inline paid at every size up to it"
        );
        assert_eq!(
            limit_kind(1 << 20, 1 << 20, true, "--inline-max", "inline"),
            "set by coshd --inline-max"
        );
    }
}
