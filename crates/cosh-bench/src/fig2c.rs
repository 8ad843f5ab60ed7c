//! Figure 2c: repeated reads of one file against read size, through CoshFS and through tmpfs,
//! in one run. A block manager and a CoshFS service run as processes of their own; this
//! process is the client. Every case reads the same range from offset 0 over and over, and
//! each sample is one call:
//!
//! - `tmpfs pread`: `pread(2)` of a file in tmpfs into a buffer (the kernel copies);
//! - `coshfs extent`: [`cosh_fs::Client::read`], the aggregate API: a snapshot of the range,
//!   readable in place (the first and last byte are touched);
//! - `coshfs aggregate`: [`cosh_fs::Client::read_agg`]: the range as an aggregate of the
//!   client's own (one `select`, one `decref`);
//! - `coshfs legacy`: [`cosh_fs::Client::read_into`]: copied into the caller's buffer;
//! - `... uncached`: the same with the client cache off, so every read asks the service (the
//!   paper's path: small ranges copied inline, larger ones by weak share).

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use cosh::{Domain, Options};
use cosh_fs::{Client, Fh};

use crate::{Row, e, parse_size};

/// What `cosh bench fig2c` measures.
#[derive(Parser, Debug, Clone)]
#[command(
    about = "Figure 2c: repeated reads of one file against read size: CoshFS's aggregate API, its legacy API and tmpfs pread, cached and not, in one run."
)]
pub struct Args {
    /// Read sizes, comma separated, with K or M suffixes.
    #[arg(long, value_delimiter = ',', default_value = "512,4K,64K,1M,16M", value_parser = parse_size)]
    pub sizes: Vec<u64>,
    /// Samples per case and size (fewer for large reads when a case would take over a second).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(5..))]
    pub samples: u32,
    /// Where tmpfs is (the baseline's file is made there).
    #[arg(long, default_value = "/dev/shm", value_name = "DIR")]
    pub tmpfs: PathBuf,
    /// Also write the rows as CSV here.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Also draw median read time against size as SVG here.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Internal: run as the block manager on this socket.
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub serve_pool: Option<PathBuf>,
    /// Internal: run as the CoshFS service on this socket (with `--pool-socket`).
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub serve_fs: Option<PathBuf>,
    /// Internal: the block manager the CoshFS service uses.
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub pool_socket: Option<PathBuf>,
    /// Internal: with `--serve-pool`, the pool's id (0 unless given).
    #[arg(long, hide = true, default_value_t = 0)]
    pub pool_id: u32,
    /// Internal: with `--serve-pool`, its kind of memory (host, nc, device).
    #[arg(long, hide = true, default_value = "host")]
    pub pool_kind: String,
    /// Internal: with `--serve-pool`, the other pool's socket (pool 1 for pool 0, else 0).
    #[arg(long, hide = true, value_name = "SOCKET")]
    pub link_to: Option<PathBuf>,
}

/// Runs `cosh bench fig2c` (helper processes are this program started with `prefix`).
pub fn main_with(
    prefix: &[&str],
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<(), String> {
    let Some(args) = crate::parse_args::<Args>(args)? else {
        return Ok(());
    };
    if let Some(socket) = &args.serve_pool {
        return crate::serve_block_manager(
            socket,
            args.pool_id,
            &args.pool_kind,
            args.link_to.as_deref(),
        );
    }
    if let Some(socket) = &args.serve_fs {
        let pool = args
            .pool_socket
            .clone()
            .ok_or("--serve-fs needs --pool-socket")?;
        return cosh_fs::Server::bind(&cosh_fs::ServerConfig {
            socket: socket.clone(),
            block_manager: pool,
        })
        .map_err(e)?
        .run()
        .map_err(e);
    }
    let rows = run(&args, prefix)?;
    crate::print(&rows);
    print_ratios(&rows);
    if let Some(path) = &args.csv {
        crate::write_csv(path, &rows)
            .map_err(|x| format!("cannot write {}: {x}", path.display()))?;
        eprintln!("CSV: {}", path.display());
    }
    if let Some(path) = &args.plot {
        crate::report::write_svg_titled(path, &rows, crate::report::FIG2C_TITLE)?;
        eprintln!("plot: {}", path.display());
    }
    Ok(())
}

/// Block manager and service processes, stopped when dropped.
pub(crate) struct Helpers {
    children: Vec<Child>,
    /// Where their sockets are (`host.sock`, `fs.sock`).
    pub(crate) dir: PathBuf,
}

impl Drop for Helpers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(prefix: &[&str], args: &[&std::ffi::OsStr]) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(e)?;
    Command::new(exe)
        .args(prefix)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|x| format!("cannot start a helper: {x}"))
}

/// Starts a block manager and a CoshFS service in processes of their own and connects a
/// client in the same pool (also used by `cosh replay`).
pub(crate) fn start(prefix: &[&str], tag: &str) -> Result<(Client, Helpers), String> {
    start_with(prefix, tag, None)
}

/// Like [`start`]; with `client_pool` (`device`, `nc`, `host`) the client's domain lives in a
/// second pool of that kind, linked to the service's.
pub(crate) fn start_with(
    prefix: &[&str],
    tag: &str,
    client_pool: Option<&str>,
) -> Result<(Client, Helpers), String> {
    let dir = std::env::temp_dir().join(format!("cosh-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    cosh_sys::runtime::ensure_runtime_dir(&dir).map_err(e)?;
    let pool = dir.join("host.sock");
    let fs = dir.join("fs.sock");
    let mut helpers = Helpers {
        children: Vec::new(),
        dir,
    };
    let other = helpers.dir.join("client-pool.sock");
    let mut first: Vec<&std::ffi::OsStr> = vec!["--serve-pool".as_ref(), pool.as_os_str()];
    if client_pool.is_some() {
        first.extend(["--link-to".as_ref(), other.as_os_str()]);
    }
    helpers.children.push(spawn(prefix, &first)?);
    crate::wait_for_socket(&pool, "block manager")?;
    if let Some(kind) = client_pool {
        helpers.children.push(spawn(
            prefix,
            &[
                "--serve-pool".as_ref(),
                other.as_os_str(),
                "--pool-id".as_ref(),
                "1".as_ref(),
                "--pool-kind".as_ref(),
                kind.as_ref(),
                "--link-to".as_ref(),
                pool.as_os_str(),
            ],
        )?);
        crate::wait_for_socket(&other, "client's block manager")?;
    }
    helpers.children.push(spawn(
        prefix,
        &[
            "--serve-fs".as_ref(),
            fs.as_os_str(),
            "--pool-socket".as_ref(),
            pool.as_os_str(),
        ],
    )?);
    crate::wait_for_socket(&fs, "CoshFS service")?;
    let client_socket = if client_pool.is_some() { &other } else { &pool };
    let domain = Domain::connect_with(
        &Options::new("bench-fs-client")
            .socket(client_socket)
            .no_spawn(),
    )
    .map_err(e)?;
    let client = Client::connect(domain, &fs).map_err(e)?;
    Ok((client, helpers))
}

const CASES: [&str; 6] = [
    "tmpfs pread",
    "coshfs extent",
    "coshfs aggregate",
    "coshfs legacy",
    "coshfs extent, uncached",
    "coshfs legacy, uncached",
];

fn run(args: &Args, prefix: &[&str]) -> Result<Vec<Row>, String> {
    let max = args.sizes.iter().copied().max().ok_or("no sizes")?;
    let (mut c, _helpers) = start(prefix, "fig2c")?;
    // The same bytes in both files.
    let content: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    let tmp = args
        .tmpfs
        .join(format!("cosh-bench-fig2c-{}", std::process::id()));
    std::fs::write(&tmp, &content).map_err(|x| format!("{}: {x}", tmp.display()))?;
    let file = std::fs::File::open(&tmp).map_err(e)?;
    let _ = std::fs::remove_file(&tmp);
    let fh = c.create("/fig2c").map_err(e)?;
    for (i, piece) in content.chunks(1 << 20).enumerate() {
        c.write_from(fh, (i as u64) << 20, piece).map_err(e)?;
    }
    // Closed and opened again: the reads are of a file the client is not writing (a writer
    // answers reads of its own new file from its copy of what it wrote).
    c.close(fh).map_err(e)?;
    let fh = c
        .open("/fig2c", cosh_fs::OpenFlags::existing())
        .map_err(e)?;
    let bar = indicatif::ProgressBar::new((args.sizes.len() * CASES.len()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").map_err(e)?,
    );
    let mut rows = Vec::new();
    let mut buf = vec![0u8; usize::try_from(max).map_err(e)?];
    for &size in &args.sizes {
        let n = usize::try_from(size).map_err(e)?;
        for case in CASES {
            bar.set_message(format!("{case}, {}", crate::report::human_size(size)));
            c.set_caching(!case.ends_with("uncached"));
            let mut one = || -> Result<(), String> {
                match case {
                    "tmpfs pread" => {
                        let got = file.read_at(&mut buf[..n], 0).map_err(e)?;
                        check(got, n)
                    }
                    "coshfs extent" | "coshfs extent, uncached" => {
                        let x = c.read(fh, 0, size).map_err(e)?;
                        let s = c.slices(&x).map_err(e)?;
                        std::hint::black_box((s.first().map(|s| s[0]), s.last().map(|s| s.len())));
                        check(x.len() as usize, n)
                    }
                    "coshfs aggregate" => {
                        let a = c.read_agg(fh, 0, size).map_err(e)?.ok_or("empty")?;
                        c.domain().decref(a).map_err(e)
                    }
                    _ => {
                        let got = c.read_into(fh, 0, &mut buf[..n]).map_err(e)?;
                        check(got, n)
                    }
                }
            };
            let times = sample(&mut one, args.samples)?;
            rows.push(crate::summarize(case, size, times.clone(), times));
            bar.inc(1);
        }
        // Every API returned the file's bytes (checked once per size, outside the clock).
        verify(&mut c, fh, &content[..n], &mut buf[..n])?;
    }
    bar.finish_and_clear();
    let s = c.stats();
    eprintln!(
        "client cache: {} hits, {} misses, {} uncached reads, {} bytes fetched",
        s.hits, s.misses, s.uncached, s.fetched_bytes
    );
    Ok(rows)
}

fn check(got: usize, want: usize) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("read {got} bytes, not {want}"))
    }
}

fn verify(c: &mut Client, fh: Fh, want: &[u8], buf: &mut [u8]) -> Result<(), String> {
    let n = want.len() as u64;
    for caching in [true, false] {
        c.set_caching(caching);
        buf.fill(0);
        c.read_into(fh, 0, buf).map_err(e)?;
        if buf != want {
            return Err("the legacy API read the wrong bytes".into());
        }
        let x = c.read(fh, 0, n).map_err(e)?;
        buf.fill(0);
        c.copy_out(&x, buf).map_err(e)?;
        if buf != want {
            return Err("the aggregate API read the wrong bytes".into());
        }
    }
    Ok(())
}

/// Times `samples` calls after a warm-up, stopping early past a second.
fn sample(one: &mut dyn FnMut() -> Result<(), String>, samples: u32) -> Result<Vec<u64>, String> {
    for _ in 0..5 {
        one()?;
    }
    let mut times = Vec::with_capacity(samples as usize);
    let began = Instant::now();
    for _ in 0..samples {
        let t = Instant::now();
        one()?;
        times.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        if times.len() >= 20 && began.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    Ok(times)
}

fn print_ratios(rows: &[Row]) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\nHow many times faster than tmpfs pread (median per read; above 1 is faster):"
    );
    let _ = write!(err, "  {:>8}", "size");
    for case in &CASES[1..] {
        let _ = write!(err, "  {case:>24}");
    }
    let _ = writeln!(err);
    let mut sizes: Vec<u64> = rows.iter().map(|r| r.size).collect();
    sizes.dedup();
    for size in sizes {
        let at = |case: &str| {
            rows.iter()
                .find(|r| r.size == size && r.case == case)
                .map(|r| r.delivered.as_secs_f64())
        };
        let Some(base) = at(CASES[0]) else { continue };
        let _ = write!(err, "  {:>8}", crate::report::human_size(size));
        for case in &CASES[1..] {
            match at(case) {
                Some(t) if t > 0.0 => {
                    let _ = write!(err, "  {:>23.2}x", base / t);
                }
                _ => {
                    let _ = write!(err, "  {:>24}", "-");
                }
            }
        }
        let _ = writeln!(err);
    }
}
