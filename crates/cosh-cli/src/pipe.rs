//! `cosh pipe send NAME` and `cosh pipe recv NAME`: a byte stream from one command to another
//! through a Cosh pipe (`cosh-pipe`), met by name in one block manager's name service.
//!
//! ```sh
//! tar c somedir | cosh pipe send backup &
//! cosh pipe recv backup | tar t
//! ```
//!
//! Each end registers `NAME.send` or `NAME.recv` and waits (up to `--wait` seconds) for the
//! other's; the receiver grants the window, the sender copies its standard input into the
//! pipe in chunks, the receiver copies the pipe to its standard output.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use cosh::{Domain, DomainId, Options};
use cosh_pipe::{PipeReader, PipeWriter, Window};

use crate::Outcome;

/// Options of both ends.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct PipeArgs {
    /// The pipe's name (both ends use the same).
    name: String,
    /// Seconds to wait for the other end.
    #[arg(long, default_value_t = 30, value_name = "S")]
    wait: u64,
    /// The receiver's window: how many MiB may be in flight (a stalled receiver stops the
    /// sender there).
    #[arg(long, default_value_t = 64, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    window_mib: u64,
    /// The sender gathers its input into aggregates of this many KiB.
    #[arg(long, default_value_t = 1024, value_name = "KIB", value_parser = clap::value_parser!(u64).range(1..))]
    chunk_kib: u64,
}

fn meet(
    socket: &Path,
    args: &PipeArgs,
    me: &str,
    peer: &str,
) -> Result<(Domain, DomainId), String> {
    let mut d = Domain::connect_with(&Options::new(&format!("cosh-pipe-{me}")).socket(socket))
        .map_err(|e| {
            format!(
                "cannot reach the block manager at {}: {e}",
                socket.display()
            )
        })?;
    let (mine, theirs) = (
        format!("{}.{me}", args.name),
        format!("{}.{peer}", args.name),
    );
    d.register(&mine).map_err(|e| {
        format!("cannot take the name {mine:?}: {e} (is another `cosh pipe {me}` using it?)")
    })?;
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    loop {
        match d.lookup(&theirs) {
            Ok(id) => return Ok((d, id)),
            Err(e) if e.kind() == cosh::ErrorKind::UnknownName && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == cosh::ErrorKind::UnknownName => {
                return Err(format!(
                    "no `cosh pipe {peer} {}` came within {} s",
                    args.name, args.wait
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// `cosh pipe send NAME`: standard input into the pipe.
pub(crate) fn send(socket: &Path, args: &PipeArgs) -> Outcome {
    let (d, receiver) = meet(socket, args, "send", "recv")?;
    let mut w = PipeWriter::open(d, receiver).map_err(|e| e.to_string())?;
    w.set_chunk(args.chunk_kib.saturating_mul(1024));
    let mut input = std::io::stdin().lock();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading standard input: {e}")),
        };
        w.write_all(&buf[..n])
            .map_err(|e| format!("the pipe broke: {e}"))?;
    }
    w.finish().map_err(|e| format!("the pipe broke: {e}"))?;
    Ok(())
}

/// `cosh pipe recv NAME`: the pipe onto standard output.
pub(crate) fn recv(socket: &Path, args: &PipeArgs) -> Outcome {
    let (d, sender) = meet(socket, args, "recv", "send")?;
    let window = Window {
        messages: 64,
        bytes: args.window_mib.saturating_mul(1 << 20),
    };
    let mut r = PipeReader::open(d, sender, window).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| format!("the pipe broke: {e}"))?;
        if n == 0 {
            break;
        }
        if let Err(e) = out.write_all(&buf[..n]) {
            // The reader of our output went away: close our end so the sender stops.
            let _ = r.close();
            return Err(format!("writing standard output: {e}"));
        }
    }
    out.flush()
        .map_err(|e| format!("writing standard output: {e}"))?;
    Ok(())
}
