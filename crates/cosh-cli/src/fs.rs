//! `cosh fs serve` and `cosh fs mount DIR`: the CoshFS service, and a FUSE mount of it.
//!
//! ```sh
//! cosh fs mount /mnt/cosh &      # starts a block manager and the service if none runs
//! cp -r project /mnt/cosh/ && make -C /mnt/cosh/project
//! fusermount3 -u /mnt/cosh       # or Ctrl-C the mount
//! ```
//!
//! The service listens at `coshfs.sock` beside the block manager's socket unless told
//! otherwise; a mount with no service to connect to runs one inside its own process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cosh::{Domain, Options};
use cosh_fs::{Client, Server};

use crate::Outcome;

/// Where the service is.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Where {
    /// The service's socket (default: coshfs.sock beside the block manager's).
    #[arg(long, value_name = "PATH")]
    fs_socket: Option<PathBuf>,
}

/// `cosh fs mount`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct MountArgs {
    /// An empty directory to mount CoshFS on.
    dir: PathBuf,
    #[command(flatten)]
    at: Where,
    /// Every read asks the service (no client cache).
    #[arg(long)]
    no_cache: bool,
}

fn fs_socket(socket: &Path, at: &Where) -> PathBuf {
    at.fs_socket.clone().unwrap_or_else(|| {
        socket
            .parent()
            .unwrap_or(Path::new("."))
            .join("coshfs.sock")
    })
}

fn domain(socket: &Path, name: &str) -> Result<Domain, String> {
    Domain::connect_with(&Options::new(name).socket(socket)).map_err(|e| {
        format!(
            "cannot reach a block manager at {} (nor start one): {e}",
            socket.display()
        )
    })
}

/// Runs the service until the process is stopped.
pub(crate) fn serve(socket: &Path, at: &Where) -> Outcome {
    let path = fs_socket(socket, at);
    let server =
        Server::with_domain(domain(socket, "coshfs")?, &path).map_err(|e| e.to_string())?;
    eprintln!("CoshFS serving at {}", path.display());
    server.run().map_err(|e| e.to_string())
}

/// Mounts the service at `args.dir` until SIGINT/SIGTERM or an unmount.
pub(crate) fn mount(socket: &Path, args: &MountArgs) -> Outcome {
    cosh_fuse::usable().map_err(|e| format!("FUSE is not usable here: {e}"))?;
    let dir = args
        .dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", args.dir.display()))?;
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    let path = fs_socket(socket, &args.at);
    if cosh_sys::socket::SeqPacket::connect(&path).is_err() {
        let server =
            Server::with_domain(domain(socket, "coshfs")?, &path).map_err(|e| e.to_string())?;
        std::thread::spawn(move || server.run());
        eprintln!(
            "no CoshFS service answered at {}: serving one in this process (the files live as long as it does)",
            path.display()
        );
    }
    let mut client =
        Client::connect(domain(socket, "coshfs-mount")?, &path).map_err(|e| e.to_string())?;
    client.set_caching(!args.no_cache);
    let session = cosh_fuse::spawn(cosh_fuse::CoshFuse::new(client), &dir)
        .map_err(|e| format!("cannot mount {}: {e}", dir.display()))?;
    eprintln!(
        "CoshFS mounted at {}; Ctrl-C or `fusermount3 -u {}` unmounts",
        dir.display(),
        dir.display()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = tx.send(());
        }
    });
    // Until a signal, or until someone else unmounts it.
    while rx.recv_timeout(Duration::from_millis(300)).is_err() {
        if !cosh_fuse::mounted(&dir) {
            return Ok(());
        }
    }
    drop(session);
    eprintln!("unmounted {}", dir.display());
    Ok(())
}
