//! `coshd`: a pool's block manager.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cosh_blockmgr::{BlockManager, Config};

/// Serves a pool of memory to Cosh clients on this machine (the host pool by default).
///
/// Clients connect to the socket (by default `$COSH_RUNTIME_DIR/host.sock`, with the runtime
/// directory defaulting to `$XDG_RUNTIME_DIR/cosh`, `/run/cosh` for root, else
/// `/tmp/cosh-<uid>`). Stop it with Ctrl-C, SIGTERM or `cosh down`; it removes its socket.
/// Only one block manager serves a socket: a second one refuses to start.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The socket to serve (default: host.sock in the runtime directory).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Bytes of recycled buffers kept per domain, in MiB.
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    free_budget_mib: u64,
    /// The most memory the pool may hold, in MiB (default: half the machine's memory).
    #[arg(long, value_name = "MIB")]
    pool_mib: Option<u64>,
    /// The largest buffer to make, in MiB (larger allocations and copies fail with
    /// too_large).
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    max_buffer_mib: u64,
    /// The most transfers that may wait for one receiver.
    #[arg(long, default_value_t = 65536, value_name = "N")]
    max_pending: usize,
    /// The most aggregates one domain may hold.
    #[arg(long, default_value_t = 1 << 20, value_name = "N")]
    max_aggregates: usize,
    /// One domain's quota of live buffers it made (allocations, and copies made for its
    /// transfers, wherever they are now), in MiB; past it, allocations and copying transfers
    /// fail with over_quota (default: three quarters of the pool; 0: no quota).
    #[arg(long, value_name = "MIB")]
    domain_quota_mib: Option<u64>,
    /// One domain's quota of such buffers, counted (0: no quota).
    #[arg(long, default_value_t = 8192, value_name = "N")]
    domain_quota_buffers: u64,
    /// The same quota for all the domains of one user together, in MiB (the block manager's
    /// own user, whose services may need more, is exempt; default: three quarters of the
    /// pool; 0: no quota).
    #[arg(long, value_name = "MIB")]
    uid_quota_mib: Option<u64>,
    /// One user's quota of such buffers, counted (0: no quota).
    #[arg(long, default_value_t = 8192, value_name = "N")]
    uid_quota_buffers: u64,
    /// The most transfers one sender may have waiting for one receiver (over_quota past it).
    #[arg(long, default_value_t = 4096, value_name = "N")]
    max_sender_pending: usize,
    /// The most connections one uid may have at a time (over_quota past it).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_uid_connections: usize,
    /// Microseconds to keep looking at clients' rings after handling requests, before
    /// sleeping (0: sleep at once; spinning costs a core but saves wake-ups).
    #[arg(long, default_value_t = 0, value_name = "US")]
    spin_us: u64,
    /// The largest transfer whose bytes travel inline on a direct ring (copied there by the
    /// sender's library and out by the receiver's, one process woken instead of two), at most
    /// 1 MiB. Without it the block manager measures at start-up where inline stops paying
    /// (for strong transfers, and for weak ones to a receiver that does not map the buffer
    /// yet) and `cosh status` shows what it chose; 0 turns inline transfers off.
    #[arg(long, value_name = "BYTES")]
    inline_max: Option<u64>,
    /// The largest strong share of a buffer never shared that the block manager copies into
    /// memory the receiver already maps, instead of sealing the buffer (which costs the
    /// sender's writable mapping and the receiver a new mapping, per 4 KiB page). Without it
    /// the block manager measures at start-up where sealing starts to pay, up to 64 MiB, and
    /// `cosh status` shows what it chose; 0 always seals. A buffer is copied so at most once:
    /// its next strong share seals it.
    #[arg(long, value_name = "BYTES")]
    share_copy_max: Option<u64>,
    /// The kind of memory to serve: `host` (coherent shared memory) or `nc` (shared memory
    /// emulated without coherence: every client keeps its own cache of what it maps, and the
    /// client library writes it back before each transfer out and refreshes it after each
    /// receive, so programs run unchanged).
    /// `device` is memory that only this pool's clients map, as an accelerator's is: every
    /// transfer to or from another pool is copied by the receiving block manager's copy
    /// engine.
    #[arg(long, default_value = "host", value_parser = ["host", "nc", "device"])]
    kind: String,
    /// Pace the copies of transfers arriving from other pools like a DMA engine: this many
    /// microseconds of set-up per copy (overlapping the previous copy), then --dma-mbps. An
    /// emulation to reproduce co-processor experiments; off by default, and `cosh status`
    /// says when it is on.
    #[arg(long, value_name = "US", requires = "dma_mbps")]
    dma_setup_us: Option<u64>,
    /// With --dma-setup-us: the emulated engine's bandwidth in MB/s (10^6 bytes per second).
    #[arg(long, value_name = "MBPS", requires = "dma_setup_us", value_parser = clap::value_parser!(u64).range(1..))]
    dma_mbps: Option<u64>,
    /// With `--kind nc`: clients' caches also write back and reload a random line, one chance
    /// in N per request, as hardware caches evict lines when they like (0: never). A correct
    /// program cannot tell.
    #[arg(long, default_value_t = 0, value_name = "N")]
    nc_eviction: u32,
    /// The pool's id: domain ids name it (`p1.d3` is domain 3 of pool 1), so pools that run
    /// side by side need different ids.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pool: u32,
    /// The block manager of another pool, as POOL=ADDRESS (repeat for each): transfers to
    /// domains of that pool go over a link to it, opened on first use. ADDRESS is a socket
    /// path on this machine (slots pass by descriptor and the destination copies), or
    /// tls://HOST:PORT for one on another host (its --listen; the bytes travel over TLS),
    /// or tcp://HOST:PORT for the same unencrypted (needs --insecure-plain-tcp).
    #[arg(long = "link", value_name = "POOL=ADDRESS", value_parser = parse_link)]
    links: Vec<(u32, cosh_blockmgr::LinkAddr)>,
    #[command(flatten)]
    remote: cosh_blockmgr::RemoteOptions,
    /// Print nothing when ready.
    #[arg(long, short)]
    quiet: bool,
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

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = Config::host();
    if let Some(socket) = args.socket.clone() {
        config.socket = socket;
    }
    config.free_budget = args.free_budget_mib.saturating_mul(1024 * 1024);
    config.max_buffer = args.max_buffer_mib.saturating_mul(1024 * 1024);
    config.max_pending = args.max_pending;
    config.spin = std::time::Duration::from_micros(args.spin_us);
    config.inline_max = args.inline_max;
    config.share_copy_max = args.share_copy_max;
    config.nc_eviction = args.nc_eviction;
    config.pool = cosh_core::PoolId(args.pool);
    config.kind = match args.kind.as_str() {
        "nc" => cosh_pool::PoolKind::Nc,
        "device" => cosh_pool::PoolKind::Device,
        _ => cosh_pool::PoolKind::Host,
    };
    if let (Some(us), Some(mbps)) = (args.dma_setup_us, args.dma_mbps) {
        config.dma = Some(cosh_pool::engine::DmaModel {
            setup: std::time::Duration::from_micros(us),
            bytes_per_second: mbps.saturating_mul(1_000_000),
        });
    }
    config.max_aggregates = args.max_aggregates;
    if let Err(e) = args.remote.apply(&args.links, &mut config) {
        eprintln!("coshd: {e}");
        return ExitCode::from(2);
    }
    for (pool, addr) in args.links {
        if pool == args.pool {
            eprintln!("coshd: --link {pool}=...: pool {pool} is this block manager's own");
            return ExitCode::from(2);
        }
        config.links.insert(cosh_core::PoolId(pool), addr);
    }
    if let Some(mib) = args.pool_mib {
        config.pool_limit = mib.saturating_mul(1024 * 1024);
    }
    let quota =
        |mib: Option<u64>| mib.map_or(config.pool_limit / 4 * 3, |m| m.saturating_mul(1024 * 1024));
    config.max_domain_bytes = quota(args.domain_quota_mib);
    config.max_uid_bytes = quota(args.uid_quota_mib);
    config.max_domain_buffers = args.domain_quota_buffers;
    config.max_uid_buffers = args.uid_quota_buffers;
    config.max_sender_pending = args.max_sender_pending;
    config.max_uid_connections = args.max_uid_connections;
    let manager = match BlockManager::bind(config) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("coshd: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.quiet {
        eprintln!(
            "coshd: serving pool {} ({} memory) at {}",
            args.pool,
            args.kind,
            manager.socket().display()
        );
        if let (Some(us), Some(mbps)) = (args.dma_setup_us, args.dma_mbps) {
            eprintln!(
                "coshd: copies from other pools paced by an EMULATED DMA engine ({us} us set-up, {mbps} MB/s)"
            );
        }
    }
    match manager.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coshd: {e}");
            ExitCode::FAILURE
        }
    }
}
