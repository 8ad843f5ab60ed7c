//! Finding the block manager, and starting one when none is running.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cosh_sys::socket::SeqPacket;

use crate::{Error, Result};

/// How [`Domain::connect_with`](crate::Domain::connect_with) finds its block manager.
#[derive(Clone, Debug)]
pub struct Options {
    /// The domain's name in `cosh status` (the program name is a good choice).
    pub name: String,
    /// The socket; `None` for [`default_socket`].
    pub socket: Option<PathBuf>,
    /// Start a block manager (`coshd`) with embedded defaults when none answers.
    pub spawn: bool,
    /// The `coshd` to start; `None` looks at `$COSH_DAEMON`, next to the running program, then
    /// on `$PATH`.
    pub daemon: Option<PathBuf>,
    /// Talk to the block manager through shared-memory rings (the socket still carries
    /// descriptors). On by default; `COSH_RINGS=0` turns it off.
    pub rings: bool,
    /// How many times to look at the answer ring before sleeping on its futex: 0 blocks at
    /// once, [`SPIN_FOREVER`](crate::SPIN_FOREVER) busy-polls. `COSH_SPINS` sets the default
    /// ([`default_spins`](crate::default_spins): about 50 µs of looking).
    pub spins: u32,
    /// For tests of the non-coherent pool's emulation only: leave out the library's
    /// write-back or refresh, to show that a program would then see stale bytes.
    #[doc(hidden)]
    pub nc_skip: NcSkip,
}

/// Steps of the non-coherent protocol a test may leave out (see [`Options::nc_skip`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NcSkip {
    /// No write-back before transfers and frees.
    pub flush: bool,
    /// No refresh after receives and allocations.
    pub refresh: bool,
}

impl Options {
    /// The defaults: the default socket, starting a block manager if needed.
    pub fn new(name: &str) -> Options {
        Options {
            name: name.into(),
            socket: None,
            spawn: true,
            daemon: None,
            rings: std::env::var_os("COSH_RINGS").is_none_or(|v| v != "0"),
            spins: std::env::var("COSH_SPINS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(crate::default_spins),
            nc_skip: NcSkip::default(),
        }
    }

    /// Use the shared-memory rings, or only the socket.
    pub fn rings(mut self, on: bool) -> Options {
        self.rings = on;
        self
    }

    /// Connect to `socket` instead of the default.
    pub fn socket(mut self, socket: impl Into<PathBuf>) -> Options {
        self.socket = Some(socket.into());
        self
    }

    /// Never start a block manager: fail if none answers.
    pub fn no_spawn(mut self) -> Options {
        self.spawn = false;
        self
    }

    /// Start this `coshd` when none answers.
    pub fn daemon(mut self, path: impl Into<PathBuf>) -> Options {
        self.daemon = Some(path.into());
        self
    }
}

/// The host pool's socket: `host.sock` in the runtime directory (`$COSH_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/cosh`, else `/run/cosh` for root, else `/tmp/cosh-<uid>`).
pub fn default_socket() -> PathBuf {
    cosh_sys::runtime::runtime_dir().join("host.sock")
}

/// Where `coshd` is.
fn find_daemon(options: &Options) -> Option<PathBuf> {
    if let Some(d) = &options.daemon {
        return Some(d.clone());
    }
    if let Some(d) = std::env::var_os("COSH_DAEMON") {
        return Some(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        // Next to the program, or one level up (cargo puts tests in target/<profile>/deps).
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("coshd");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("coshd"))
        .find(|c| c.is_file())
}

fn spawn(daemon: &Path, socket: &Path) -> Result<()> {
    let mut child = Command::new(daemon)
        .arg("--socket")
        .arg(socket)
        .arg("--quiet")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            Error::Connect(format!(
                "cannot start the block manager {}: {e}",
                daemon.display()
            ))
        })?;
    // Reap it when it exits, so that it never lingers as a zombie of this process.
    std::thread::Builder::new()
        .name("cosh-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        })
        .map_err(|e| Error::Connect(format!("cannot start a thread: {e}")))?;
    Ok(())
}

/// Connects, starting a block manager first if allowed and needed.
pub(crate) fn open(options: &Options) -> Result<(SeqPacket, PathBuf)> {
    let socket = options.socket.clone().unwrap_or_else(default_socket);
    let first = match SeqPacket::connect(&socket) {
        Ok(s) => return Ok((s, socket)),
        Err(e) => e,
    };
    if !options.spawn {
        return Err(Error::Connect(format!(
            "no block manager answers at {} ({first}); start one with `cosh up`",
            socket.display()
        )));
    }
    let daemon = find_daemon(options).ok_or_else(|| {
        Error::Connect(format!(
            "no block manager answers at {} and coshd was not found (set COSH_DAEMON or put coshd on PATH)",
            socket.display()
        ))
    })?;
    spawn(&daemon, &socket)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_millis(1);
    loop {
        match SeqPacket::connect(&socket) {
            Ok(s) => return Ok((s, socket)),
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::Connect(format!(
                    "started {} but it did not answer at {} within 10 s: {e}",
                    daemon.display(),
                    socket.display()
                )));
            }
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}
