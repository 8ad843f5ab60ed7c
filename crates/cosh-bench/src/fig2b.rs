//! Transfers across pools (the paper's Figure 2b): one-way latency and pipelined
//! inter-arrival time against size, from a host pool to a device pool and to a non-coherent
//! pool, with memcpy, `process_vm_writev` and a TCP socket over loopback measured in the same
//! run.
//!
//! Five block managers run as processes of their own (pool 0 host, pool 1 device, pool 2 nc,
//! and pools 3 and 4 standing for other hosts, reached over TCP on loopback, plain and with
//! TLS; pool 0 linked to every other); the sender is this process, a domain of pool 0; the
//! receiver is a child process, a domain of the destination pool. Every cross-pool transfer is a copy by
//! the destination's copy engine, so the mode hardly matters: transfers are weak moves, whose
//! senders are answered once the destination has accepted them, so that back-to-back
//! transfers pipeline.
//!
//! - *Latency*: the sender stamps the system-wide monotonic clock into the first eight bytes
//!   and transfers; the receiver reads the clock when `receive` returned and the stamp is
//!   read. One sample at a time: the receiver reports each before the next is sent.
//! - *Pipelined*: the sender transfers back to back (a fresh buffer each, stamped) and the
//!   receiver times the arrivals: (last − first) / (n − 1), the sustained inter-arrival
//!   time, median of three runs after one untimed run (the buffers a pipeline cycles
//!   through are made and mapped once: the figure is the steady state).
//! - Baselines: memcpy between two warm buffers of this process (latency = inter-arrival);
//!   `process_vm_writev` into the receiver's memory (the call's duration; the receiver is not
//!   told); a TCP connection over loopback with `TCP_NODELAY` (latency as above; pipelined:
//!   back-to-back writes, arrivals timed by the receiver).
//!
//! With `--dma-setup-us` and `--dma-mbps` the device's copies are paced by an emulated DMA
//! engine, and every output says so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use cosh::{Domain, Mode, Options, Strength, TransferFlags};

use crate::{Row, e, now_ns, parse_size, summarize};

/// What `cosh bench fig2b` measures.
#[derive(Parser, Debug, Clone)]
#[command(
    about = "Transfers across pools (Figure 2b): one-way latency and pipelined inter-arrival time from a host pool to a device pool and to a non-coherent pool, with memcpy, process_vm_writev and TCP over loopback in the same run."
)]
pub struct Args {
    /// Sizes in bytes, comma separated, with K or M suffixes.
    #[arg(long, value_delimiter = ',', default_value = "4K,64K,1M,4M,16M,64M", value_parser = parse_size)]
    pub sizes: Vec<u64>,
    /// Latency samples per case (a quarter above 1 MiB, at least 10); pipelined runs send
    /// as many transfers, at most 512 MiB in all.
    #[arg(long, default_value_t = 60)]
    pub samples: usize,
    /// Emulate a DMA engine for copies into the device pool: microseconds of set-up per copy
    /// (the paper's co-processor: about 172). Needs --dma-mbps.
    #[arg(long, value_name = "US", requires = "dma_mbps")]
    pub dma_setup_us: Option<u64>,
    /// With --dma-setup-us: the emulated engine's bandwidth in MB/s.
    #[arg(long, value_name = "MBPS", requires = "dma_setup_us", value_parser = clap::value_parser!(u64).range(1..))]
    pub dma_mbps: Option<u64>,
    /// The destination pools, comma separated: device, nc, remote (over plain TCP on
    /// loopback, as the raw socket it is compared with), remote-tls, and host (the sender's
    /// own pool: a local transfer, for reference).
    #[arg(long, value_delimiter = ',', default_value = "device,nc,remote,remote-tls", value_parser = ["device", "nc", "remote", "remote-tls", "host"])]
    pub to: Vec<String>,
    /// Write the results as CSV here.
    #[arg(long, value_name = "PATH")]
    pub csv: Option<PathBuf>,
    /// Draw median latency and inter-arrival time against size, log-log, as SVG here.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// At the end, print each pool's transfer counters and copy engine time.
    #[arg(long)]
    pub pool_status: bool,
    /// Measure only the pipelined runs (for profiling), this many of each.
    #[arg(long, hide = true, value_name = "RUNS")]
    pub pipelined_only: Option<usize>,
    /// Internal: run as the block manager of this pool.
    #[arg(long, hide = true, value_name = "POOL")]
    pub serve_pool: Option<u32>,
    /// Internal: with --serve-pool, the benchmark's directory.
    #[arg(long, hide = true, value_name = "DIR")]
    pub serve_dir: Option<PathBuf>,
    /// Internal: with --serve-pool, the TCP ports of pools 3 and 4.
    #[arg(long, hide = true, value_delimiter = ',')]
    pub serve_ports: Vec<u16>,
    /// Internal: run as the receiver, a domain of the pool at this socket.
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub receiver: Option<PathBuf>,
}

/// Runs `cosh bench fig2b` (`args` starts with the program name; helper processes are this
/// program started with `prefix`).
pub fn main_with(
    prefix: &[&str],
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<(), String> {
    let Some(args) = crate::parse_args::<Args>(args)? else {
        return Ok(());
    };
    if let Some(socket) = &args.receiver {
        return receiver(socket);
    }
    if let Some(id) = args.serve_pool {
        return serve(&args, id);
    }
    let rows = run(&args, prefix)?;
    crate::print(&rows);
    print_ratios(&rows, args.dma_setup_us.zip(args.dma_mbps));
    if let Some(path) = &args.csv {
        crate::write_csv(path, &rows)
            .map_err(|x| format!("cannot write {}: {x}", path.display()))?;
        eprintln!("CSV: {}", path.display());
    }
    if let Some(path) = &args.plot {
        crate::report::write_svg_titled(path, &rows, crate::report::FIG2B_TITLE)?;
        eprintln!("plot: {}", path.display());
    }
    Ok(())
}

/// The pools: (id, name, kind, socket name).
const POOLS: [(u32, &str, &str); 5] = [
    (0, "host", "host"),
    (1, "device", "device"),
    (2, "nc", "nc"),
    // "Another host", reached over TCP on loopback: plain, and with TLS.
    (3, "remote", "host"),
    (4, "remote (TLS)", "host"),
];

/// The block managers, each a process of its own (this program again), stopped on drop.
struct Pools {
    dir: PathBuf,
    children: Vec<Child>,
}

/// What a block manager of the benchmark needs to build its configuration.
struct Plan {
    dir: PathBuf,
    /// The TCP ports of pools 3 and 4.
    ports: [u16; 2],
    dma: Option<(u64, u64)>,
}

const TOKEN: &str = "a-token-for-this-benchmark-only";

impl Plan {
    fn socket(&self, pool: u32) -> PathBuf {
        self.dir.join(format!("p{pool}.sock"))
    }

    /// Pool `id`'s configuration: the sender's pool links to every other, the others back
    /// to it; pools 3 and 4 listen on loopback (3 plain, as the raw socket it is compared
    /// with; 4 with TLS).
    fn config(&self, id: u32) -> Result<cosh_blockmgr::Config, String> {
        let kind = POOLS
            .iter()
            .find(|(p, _, _)| *p == id)
            .map(|(_, _, k)| *k)
            .ok_or_else(|| format!("no pool {id}"))?;
        let (cert, key) = (self.dir.join("cert.pem"), self.dir.join("key.pem"));
        let tls = cosh_blockmgr::Tls::from_pem_files(Some(&cert), Some(&key), Some(&cert))?;
        let addr = |other: u32| match other {
            3 => cosh_blockmgr::LinkAddr::Tcp {
                host: "127.0.0.1".into(),
                port: self.ports[0],
                tls: false,
            },
            4 => cosh_blockmgr::LinkAddr::Tcp {
                host: "localhost".into(),
                port: self.ports[1],
                tls: true,
            },
            _ => cosh_blockmgr::LinkAddr::Unix(self.socket(other)),
        };
        let mut config = cosh_blockmgr::Config::host_at(&self.dir);
        config.socket = self.socket(id);
        config.pool = cosh::PoolId(id);
        config.kind = match kind {
            "device" => cosh_pool::PoolKind::Device,
            "nc" => cosh_pool::PoolKind::Nc,
            _ => cosh_pool::PoolKind::Host,
        };
        for (other, _, _) in POOLS {
            if other != id && (id == 0 || other == 0) {
                config.links.insert(cosh::PoolId(other), addr(other));
            }
        }
        config.link_token = Some(TOKEN.to_string());
        config.tls = (id != 3).then_some(tls);
        config.listen = match id {
            3 => Some(([127, 0, 0, 1], self.ports[0]).into()),
            4 => Some(([127, 0, 0, 1], self.ports[1]).into()),
            _ => None,
        };
        if kind == "device" {
            config.dma = self.dma.map(|(us, mbps)| cosh_pool::engine::DmaModel {
                setup: Duration::from_micros(us),
                bytes_per_second: mbps.saturating_mul(1_000_000),
            });
        }
        Ok(config)
    }
}

/// Runs as the block manager of pool `id` (the `--serve-pool` helper).
fn serve(args: &Args, id: u32) -> Result<(), String> {
    let (Some(dir), [p3, p4]) = (&args.serve_dir, args.serve_ports.as_slice()) else {
        return Err("--serve-pool needs --serve-dir and --serve-ports".into());
    };
    let plan = Plan {
        dir: dir.clone(),
        ports: [*p3, *p4],
        dma: args.dma_setup_us.zip(args.dma_mbps),
    };
    let manager = cosh_blockmgr::BlockManager::bind(plan.config(id)?).map_err(e)?;
    manager.run().map_err(e)
}

impl Pools {
    fn socket(&self, pool: u32) -> PathBuf {
        self.dir.join(format!("p{pool}.sock"))
    }

    fn start(prefix: &[&str], dma: Option<(u64, u64)>) -> Result<Pools, String> {
        let dir = std::env::temp_dir().join(format!("cosh-fig2b-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        cosh_sys::runtime::ensure_runtime_dir(&dir).map_err(e)?;
        // Links over TCP: a certificate for localhost and two free ports.
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).map_err(e)?;
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).map_err(e)?;
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).map_err(e)?;
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(e)
        };
        let ports = [port()?, port()?];
        let mut pools = Pools {
            dir,
            children: Vec::new(),
        };
        let exe = std::env::current_exe().map_err(e)?;
        for (id, _, _) in POOLS {
            let mut command = Command::new(&exe);
            command
                .args(prefix)
                .arg("--serve-pool")
                .arg(id.to_string())
                .arg("--serve-dir")
                .arg(&pools.dir)
                .arg("--serve-ports")
                .arg(format!("{},{}", ports[0], ports[1]))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            if let Some((us, mbps)) = dma {
                command.arg(format!("--dma-setup-us={us}"));
                command.arg(format!("--dma-mbps={mbps}"));
            }
            pools.children.push(
                command
                    .spawn()
                    .map_err(|x| format!("cannot start a block manager: {x}"))?,
            );
        }
        // Each answers once it listens.
        let deadline = Instant::now() + Duration::from_secs(10);
        for (id, _, _) in POOLS {
            while cosh_sys::socket::SeqPacket::connect(&pools.socket(id)).is_err() {
                if Instant::now() > deadline {
                    return Err(format!("the block manager of pool {id} did not start"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(pools)
    }

    fn connect(&self, pool: u32, name: &str) -> Result<Domain, String> {
        Domain::connect_with(&Options::new(name).socket(self.socket(pool)).no_spawn()).map_err(e)
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        for (id, _, _) in POOLS {
            if let Ok(d) = self.connect(id, "fig2b-stop") {
                let _ = d.shutdown();
            }
        }
        for mut c in self.children.drain(..) {
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A receiver process and its pipes.
struct Receiver {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    domain: cosh::DomainId,
    tcp_port: u16,
    pid: i32,
    buffer: usize,
    buffer_len: usize,
}

impl Receiver {
    fn start(prefix: &[&str], socket: &Path) -> Result<Receiver, String> {
        let exe = std::env::current_exe().map_err(e)?;
        let mut child = Command::new(exe)
            .args(prefix)
            .arg("--receiver")
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|x| format!("cannot start the receiver: {x}"))?;
        let to = child.stdin.take().ok_or("no stdin")?;
        let from = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut r = Receiver {
            child,
            to,
            from,
            domain: cosh::DomainId::from_bits(0),
            tcp_port: 0,
            pid: 0,
            buffer: 0,
            buffer_len: 0,
        };
        let line = r.line()?;
        let w: Vec<&str> = line.split_whitespace().collect();
        let [_, domain, port, pid, buffer, len] = w.as_slice() else {
            return Err(format!("receiver: {line:?}"));
        };
        let num = |s: &str| s.parse::<u64>().map_err(|_| format!("receiver: {line:?}"));
        r.domain = cosh::DomainId::from_bits(num(domain)?);
        r.tcp_port = u16::try_from(num(port)?).map_err(e)?;
        r.pid = i32::try_from(num(pid)?).map_err(e)?;
        r.buffer = usize::try_from(num(buffer)?).map_err(e)?;
        r.buffer_len = usize::try_from(num(len)?).map_err(e)?;
        Ok(r)
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        self.from.read_line(&mut line).map_err(e)?;
        if line.is_empty() {
            return Err("the receiver exited".into());
        }
        Ok(line.trim().to_string())
    }

    fn ask(&mut self, command: &str) -> Result<(), String> {
        writeln!(self.to, "{command}")
            .and_then(|()| self.to.flush())
            .map_err(e)
    }

    /// Asks for one sample, waits until the receiver is about to wait for it, and 200 us
    /// more, so that it is blocked when the clock starts.
    fn armed(&mut self, command: &str) -> Result<(), String> {
        self.ask(command)?;
        let line = self.line()?;
        if line != "armed" {
            return Err(format!("receiver said {line:?}"));
        }
        std::thread::sleep(Duration::from_micros(200));
        Ok(())
    }

    fn number(&mut self) -> Result<u64, String> {
        let line = self.line()?;
        line.parse().map_err(|_| format!("receiver said {line:?}"))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.ask("exit");
        let _ = self.child.wait();
    }
}

fn samples_for(args: &Args, size: u64) -> usize {
    if size > 1 << 20 {
        (args.samples / 4).max(10)
    } else {
        args.samples.max(3)
    }
}

/// Transfers in one pipelined run of `size`-byte aggregates.
fn pipelined_for(args: &Args, size: u64) -> usize {
    let budget = usize::try_from((512u64 << 20) / size.max(1)).unwrap_or(usize::MAX);
    args.samples.min(budget).max(8)
}

fn run(args: &Args, prefix: &[&str]) -> Result<Vec<Row>, String> {
    let dma = args.dma_setup_us.zip(args.dma_mbps);
    let pools = Pools::start(prefix, dma)?;
    let mut sender = pools.connect(0, "fig2b-sender")?;
    let mut rows = Vec::new();
    let steps = args.sizes.len() as u64 * 3 * args.to.len() as u64;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(steps)
    };
    let device = if dma.is_some() {
        "device (DMA model)"
    } else {
        "device"
    };
    let destinations = [
        (1u32, device, "device"),
        (2, "nc", "nc"),
        (3, "remote", "remote"),
        (4, "remote (TLS)", "remote-tls"),
        (0, "host", "host"),
    ]
    .into_iter()
    .filter(|(_, _, key)| args.to.iter().any(|t| t == key))
    .map(|(p, name, _)| (p, name));
    let mut baselines_done = false;
    for (pool, name) in destinations {
        let mut rx = Receiver::start(prefix, &pools.socket(pool))?;
        // Give the receiver a first transfer so that links are up before timing.
        let warm = sender.alloc(4096).map_err(e)?;
        transfer(&mut sender, warm, rx.domain)?;
        rx.armed("cosh 1")?;
        rx.number()?;
        for &size in &args.sizes {
            bar.set_message(format!("host to {name}, {size} bytes"));
            let n = if args.pipelined_only.is_some() {
                0
            } else {
                samples_for(args, size)
            };
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                rx.armed("cosh 1")?;
                send_one(&mut sender, rx.domain, size)?;
                lat.push(rx.number()?);
            }
            rows.push(summarize(
                &format!("host to {name}"),
                size,
                lat.clone(),
                lat,
            ));
            bar.inc(1);
            // One run untimed first: the buffers a pipeline of this size cycles through are
            // made (and mapped by both block managers) once; the figure is the steady state.
            let mut runs = Vec::new();
            for run in 0..=args.pipelined_only.unwrap_or(3) {
                let count = pipelined_for(args, size);
                rx.ask(&format!("pipe {count}"))?;
                for _ in 0..count {
                    send_one(&mut sender, rx.domain, size)?;
                }
                let t = rx.number()?;
                if run > 0 {
                    runs.push(t);
                }
            }
            rows.push(summarize(
                &format!("host to {name}, pipelined"),
                size,
                runs.clone(),
                runs,
            ));
            bar.inc(1);
            if !baselines_done && args.pipelined_only.is_none() {
                rows.extend(baselines(args, &mut rx, size)?);
            }
            bar.inc(1);
        }
        baselines_done = true;
    }
    bar.finish_and_clear();
    if args.pool_status {
        for (id, name, _) in POOLS {
            if let Ok(mut d) = pools.connect(id, "fig2b-status") {
                let s = d.status().map_err(e)?;
                let t = s.transfers;
                eprintln!(
                    "pool {id} ({name}): {} transfers sent to other pools, {} received ({} bytes \
                     copied in {} us of copy engine time); {} bytes of memory held, {} buffers \
                     recycled and ready",
                    t.exported,
                    t.imported,
                    t.copied_bytes,
                    t.engine_busy_us,
                    s.pool_bytes,
                    s.free_buffers
                );
            }
        }
    }
    drop(sender);
    drop(pools);
    Ok(rows)
}

/// One weak move of a fresh `size`-byte aggregate, stamped just before the transfer (the
/// receiver measures).
fn send_one(sender: &mut Domain, to: cosh::DomainId, size: u64) -> Result<(), String> {
    let x = sender.alloc_unzeroed(size).map_err(e)?;
    sender.write(x, 0, &now_ns().to_le_bytes()).map_err(e)?;
    transfer(sender, x, to)
}

/// A weak move of `x` to `to`; the sender's handle is dropped.
fn transfer(sender: &mut Domain, x: cosh::Agg, to: cosh::DomainId) -> Result<(), String> {
    let weak = TransferFlags {
        strength: Strength::Weak,
        ..TransferFlags::default()
    };
    sender.transfer(x, to, Mode::Move, weak).map_err(e)?;
    sender.decref(x).map_err(e)
}

fn baselines(args: &Args, rx: &mut Receiver, size: u64) -> Result<Vec<Row>, String> {
    let n = samples_for(args, size);
    let len = usize::try_from(size).map_err(e)?;
    let mut rows = Vec::new();
    // memcpy between two warm buffers.
    let src: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let mut dst = vec![1u8; len];
    let mut copies = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        copies.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    rows.push(summarize("memcpy", size, copies.clone(), copies));
    // process_vm_writev into the receiver's buffer.
    if len <= rx.buffer_len {
        let pid = nix::unistd::Pid::from_raw(rx.pid);
        let remote = [nix::sys::uio::RemoteIoVec {
            base: rx.buffer,
            len,
        }];
        let mut calls = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let wrote =
                nix::sys::uio::process_vm_writev(pid, &[std::io::IoSlice::new(&src)], &remote)
                    .map_err(|x| format!("process_vm_writev: {x} (is ptrace allowed?)"))?;
            calls.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
            if wrote != len {
                return Err(format!("process_vm_writev wrote {wrote} of {len} bytes"));
            }
        }
        rows.push(summarize("process_vm_writev", size, calls.clone(), calls));
    }
    // TCP over loopback.
    let mut tcp = TcpStream::connect(("127.0.0.1", rx.tcp_port)).map_err(e)?;
    tcp.set_nodelay(true).map_err(e)?;
    rx.ask(&format!("tcp {size}"))?;
    let mut buf = src.clone();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        rx.armed("tcp-one")?;
        buf[..8].copy_from_slice(&now_ns().to_le_bytes());
        tcp.write_all(&buf).map_err(e)?;
        lat.push(rx.number()?);
    }
    rows.push(summarize("tcp loopback", size, lat.clone(), lat));
    let mut runs = Vec::new();
    for _ in 0..3 {
        let count = pipelined_for(args, size);
        rx.ask(&format!("tcp-pipe {count}"))?;
        for _ in 0..count {
            buf[..8].copy_from_slice(&now_ns().to_le_bytes());
            tcp.write_all(&buf).map_err(e)?;
        }
        runs.push(rx.number()?);
    }
    rows.push(summarize(
        "tcp loopback, pipelined",
        size,
        runs.clone(),
        runs,
    ));
    Ok(rows)
}

/// The receiver: a domain of the destination pool, a TCP listener and a buffer for
/// `process_vm_writev`; obeys one-line commands on stdin and reports on stdout.
fn receiver(socket: &Path) -> Result<(), String> {
    let mut d = Domain::connect_with(&Options::new("fig2b-receiver").socket(socket).no_spawn())
        .map_err(e)?;
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(e)?;
    let port = listener.local_addr().map_err(e)?.port();
    // Written once so that its pages exist before process_vm_writev is timed.
    let target = vec![1u8; 64 << 20];
    let mut out = std::io::stdout().lock();
    let mut say = |line: &str| -> Result<(), String> {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(e)
    };
    say(&format!(
        "ready {} {port} {} {} {}",
        d.id().to_bits(),
        std::process::id(),
        target.as_ptr() as usize,
        target.len()
    ))?;
    let mut tcp: Option<(TcpStream, Vec<u8>)> = None;
    let stamp_of = |d: &mut Domain, agg: cosh::Agg| -> Result<u64, String> {
        let head = d.read(agg, 0, 8).map_err(e)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&head);
        Ok(u64::from_le_bytes(b))
    };
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(e)?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["cosh", "1"] => {
                say("armed")?;
                let got = d.receive(None, Some(Duration::from_secs(60))).map_err(e)?;
                let t = now_ns();
                let stamp = stamp_of(&mut d, got.agg)?;
                d.decref(got.agg).map_err(e)?;
                say(&(t.saturating_sub(stamp)).to_string())?;
            }
            ["pipe", n] => {
                let n: usize = n.parse().map_err(|_| "bad count")?;
                let mut first = 0;
                let mut last = 0;
                for i in 0..n {
                    let got = d.receive(None, Some(Duration::from_secs(60))).map_err(e)?;
                    // Touch the bytes as a consumer would (the stamp), then free.
                    let _ = stamp_of(&mut d, got.agg)?;
                    let t = now_ns();
                    d.decref(got.agg).map_err(e)?;
                    if i == 0 {
                        first = t;
                    }
                    last = t;
                }
                say(&((last - first) / (n as u64 - 1).max(1)).to_string())?;
            }
            ["tcp", size] => {
                let size: usize = size.parse().map_err(|_| "bad size")?;
                let (s, _) = listener.accept().map_err(e)?;
                s.set_nodelay(true).map_err(e)?;
                tcp = Some((s, vec![0u8; size]));
            }
            ["tcp-one"] => {
                let (s, buf) = tcp.as_mut().ok_or("no tcp connection")?;
                say("armed")?;
                s.read_exact(buf).map_err(e)?;
                let t = now_ns();
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[..8]);
                say(&t.saturating_sub(u64::from_le_bytes(b)).to_string())?;
            }
            ["tcp-pipe", n] => {
                let n: usize = n.parse().map_err(|_| "bad count")?;
                let (s, buf) = tcp.as_mut().ok_or("no tcp connection")?;
                let (mut first, mut last) = (0, 0);
                for i in 0..n {
                    s.read_exact(buf).map_err(e)?;
                    let t = now_ns();
                    if i == 0 {
                        first = t;
                    }
                    last = t;
                }
                say(&((last - first) / (n as u64 - 1).max(1)).to_string())?;
            }
            ["exit"] => break,
            _ => return Err(format!("receiver: unknown command {line:?}")),
        }
    }
    std::hint::black_box(&target);
    Ok(())
}

/// The ratios the figure is judged by.
fn print_ratios(rows: &[Row], dma: Option<(u64, u64)>) {
    let mut err = std::io::stderr().lock();
    let median = |case: &str, size: u64| {
        rows.iter()
            .find(|r| r.case == case && r.size == size)
            .map(|r| r.delivered.as_secs_f64())
    };
    let device = if dma.is_some() {
        "device (DMA model)"
    } else {
        "device"
    };
    if let Some((us, mbps)) = dma {
        let _ = writeln!(
            err,
            "\nthe device's copies are paced by an EMULATED DMA engine ({us} us set-up, {mbps} MB/s): not this machine's speed"
        );
    }
    let _ = writeln!(
        err,
        "\nthroughput (a baseline's time per transfer / the case's inter-arrival time; 1.0 = as fast):"
    );
    let columns = [
        (format!("host to {device}, pipelined"), "memcpy"),
        ("host to nc, pipelined".to_string(), "memcpy"),
        ("tcp loopback, pipelined".to_string(), "memcpy"),
        (
            "host to remote, pipelined".to_string(),
            "tcp loopback, pipelined",
        ),
        (
            "host to remote (TLS), pipelined".to_string(),
            "tcp loopback, pipelined",
        ),
    ];
    let _ = writeln!(
        err,
        "  {:>8}  {:>18}  {:>18}  {:>18}  {:>18}  {:>18}",
        "size", "device/memcpy", "nc/memcpy", "tcp/memcpy", "remote/tcp", "remote TLS/tcp"
    );
    let mut sizes: Vec<u64> = rows.iter().map(|r| r.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for size in sizes {
        let cells: Vec<String> = columns
            .iter()
            .map(
                |(case, base)| match (median(case, size), median(base, size)) {
                    (Some(t), Some(b)) if t > 0.0 => format!("{:.2}x", b / t),
                    _ => "-".to_string(),
                },
            )
            .collect();
        let _ = writeln!(
            err,
            "  {:>8}  {:>18}  {:>18}  {:>18}  {:>18}  {:>18}",
            crate::report::human_size(size),
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4]
        );
    }
}
