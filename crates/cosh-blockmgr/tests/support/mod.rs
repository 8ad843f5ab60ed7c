//! A block manager per test (its own socket in its own directory, stopped on drop), and the
//! aggregate API of `cosh-core` implemented over real connections, so that the scenario corpus
//! runs against the daemon.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cosh::{Agg, Domain, Location, Options};
use cosh_core::api::{Cosh, Incoming};
use cosh_core::{Access, DomainId, ErrorKind, Mode, PoolId, Rights, Ticket, TransferFlags};

/// `$COSH_TEST_SCALE` (default 1): how many times the heavy tests multiply their work.
pub fn scale() -> u64 {
    std::env::var("COSH_TEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// [`scale`], or `heavy` when `COSH_HEAVY_TESTS=1` and no scale is given: the long form of a
/// soak test.
pub fn scale_or_heavy(heavy: u64) -> u64 {
    let asked = std::env::var_os("COSH_TEST_SCALE").is_some();
    let heavy_on = std::env::var_os("COSH_HEAVY_TESTS").is_some_and(|v| v != "0");
    if heavy_on && !asked { heavy } else { scale() }
}

/// The coshd built with these tests.
pub fn coshd() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_coshd"))
}

/// A TCP port nobody listens on now (on loopback).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A private directory for one test's socket.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cosh-test-{}-{tag}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A running coshd, killed (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub dir: PathBuf,
}

impl Daemon {
    pub fn start(tag: &str) -> Daemon {
        Daemon::start_with(tag, &[])
    }

    /// Starts coshd with extra arguments.
    pub fn start_with(tag: &str, args: &[&str]) -> Daemon {
        let dir = scratch_dir(tag);
        let socket = dir.join("host.sock");
        Daemon::start_at(dir, socket, args)
    }

    /// Starts coshd serving `socket` (in `dir`, removed with the daemon) with extra arguments.
    pub fn start_at(dir: PathBuf, socket: PathBuf, args: &[&str]) -> Daemon {
        let mut all = vec![
            "--socket".to_string(),
            socket.display().to_string(),
            "--quiet".to_string(),
        ];
        all.extend(args.iter().map(|a| (*a).to_string()));
        Daemon::spawn_with(&coshd().display().to_string(), &all, dir, socket)
    }

    /// Runs `program` with `args` (a coshd, perhaps through a wrapper such as `ip netns exec`)
    /// and waits until it serves `socket`.
    pub fn spawn_with(program: &str, args: &[String], dir: PathBuf, socket: PathBuf) -> Daemon {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("coshd starts");
        // The socket file appears at bind, a moment before the block manager listens: wait
        // until a connection is accepted.
        let deadline = Instant::now() + Duration::from_secs(10);
        while cosh_sys::socket::SeqPacket::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "coshd did not listen on {socket:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        Daemon { child, socket, dir }
    }

    pub fn options(&self, name: &str) -> Options {
        Options::new(name).socket(&self.socket).no_spawn()
    }

    pub fn connect(&self, name: &str) -> Domain {
        Domain::connect_with(&self.options(name)).expect("connects")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        self.child.wait().expect("wait")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Block managers of pools 0, 1, ... on this machine, each linked to every other (in one
/// scratch directory, `pN.sock`), stopped on drop.
pub struct Linked {
    pub daemons: Vec<Daemon>,
    /// The TCP ports the block managers listen on (links over TCP only).
    pub ports: Vec<u16>,
}

impl Linked {
    /// One block manager per entry of `kinds` (`host`, `nc`, ...), pool ids in order, each
    /// started with `extra` arguments too.
    pub fn start(tag: &str, kinds: &[&str], extra: &[&str]) -> Linked {
        let dir = scratch_dir(tag);
        let sockets: Vec<PathBuf> = (0..kinds.len())
            .map(|i| dir.join(format!("p{i}.sock")))
            .collect();
        let mut daemons = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let mut args: Vec<String> = vec![
                "--pool".into(),
                i.to_string(),
                "--kind".into(),
                (*kind).into(),
            ];
            for (j, socket) in sockets.iter().enumerate() {
                if j != i {
                    args.push("--link".into());
                    args.push(format!("{j}={}", socket.display()));
                }
            }
            args.extend(extra.iter().map(|a| (*a).to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            // Only the last daemon removes the directory.
            let own = if i + 1 == kinds.len() {
                dir.clone()
            } else {
                dir.join(format!("keep-{i}"))
            };
            daemons.push(Daemon::start_at(own, sockets[i].clone(), &args));
        }
        Linked {
            daemons,
            ports: Vec::new(),
        }
    }

    /// `kinds.len()` block managers linked to each other over TCP on loopback (each also
    /// serving its own socket to its clients), with TLS when `tls` (a fresh self-signed
    /// certificate for `localhost`), or plain TCP; every one shares one token.
    pub fn start_tcp(tag: &str, kinds: &[&str], tls: bool) -> Linked {
        let dir = scratch_dir(tag);
        let token = dir.join("token");
        std::fs::write(&token, "a-link-token-for-tests-only\n").expect("token");
        let mut tls_args = Vec::new();
        if tls {
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
                .expect("a certificate");
            let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
            std::fs::write(&cert_path, cert.cert.pem()).expect("cert");
            std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("key");
            for (flag, path) in [
                ("--tls-cert", &cert_path),
                ("--tls-key", &key_path),
                ("--tls-ca", &cert_path),
            ] {
                tls_args.push(flag.to_string());
                tls_args.push(path.display().to_string());
            }
        } else {
            tls_args.push("--insecure-plain-tcp".into());
        }
        let ports: Vec<u16> = (0..kinds.len()).map(|_| free_port()).collect();
        let scheme = if tls { "tls" } else { "tcp" };
        let mut daemons = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let mut args: Vec<String> = vec![
                "--pool".into(),
                i.to_string(),
                "--kind".into(),
                (*kind).into(),
                "--listen".into(),
                format!("127.0.0.1:{}", ports[i]),
                "--link-token-file".into(),
                token.display().to_string(),
            ];
            args.extend(tls_args.iter().cloned());
            for (j, port) in ports.iter().enumerate() {
                if j != i {
                    args.push("--link".into());
                    args.push(format!("{j}={scheme}://localhost:{port}"));
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let own = if i + 1 == kinds.len() {
                dir.clone()
            } else {
                dir.join(format!("keep-{i}"))
            };
            daemons.push(Daemon::start_at(own, dir.join(format!("p{i}.sock")), &args));
        }
        Linked { daemons, ports }
    }

    /// The aggregate API over connections to these block managers.
    pub fn connections(&self) -> Connections<'_> {
        Connections::across(self.daemons.iter().collect())
    }
}

/// The aggregate API over connections to block managers (one per pool), one connection per
/// domain, all in this process. (Mappings are per connection, so domains do not see each
/// other's memory except through what the block manager hands out.)
pub struct Connections<'d> {
    pub daemon: &'d Daemon,
    /// The block manager of each pool, by pool id.
    pub pools: Vec<&'d Daemon>,
    pub domains: HashMap<DomainId, Domain>,
}

impl<'d> Connections<'d> {
    pub fn new(daemon: &'d Daemon) -> Self {
        Connections::across(vec![daemon])
    }

    /// Connections to `pools[i]` for the domains of pool `i`.
    pub fn across(pools: Vec<&'d Daemon>) -> Self {
        Connections {
            daemon: pools[0],
            pools,
            domains: HashMap::new(),
        }
    }

    fn domain(&mut self, d: DomainId) -> Result<&mut Domain, cosh::Error> {
        self.domains.get_mut(&d).ok_or_else(|| cosh::Error::Cosh {
            kind: ErrorKind::UnknownDomain,
            message: format!("no connection for {d}"),
        })
    }
}

/// A piece kept by a scenario: where it is.
pub type Piece = Location;

impl Cosh for Connections<'_> {
    type Domain = DomainId;
    type Agg = Agg;
    type Piece = Piece;
    type Error = cosh::Error;

    fn kind_of(error: &cosh::Error) -> Option<ErrorKind> {
        match error {
            cosh::Error::Cosh { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    fn connect(&mut self, pool: PoolId) -> Result<DomainId, cosh::Error> {
        let Some(daemon) = usize::try_from(pool.0).ok().and_then(|i| self.pools.get(i)) else {
            return Err(cosh::Error::Connect(format!(
                "pools 0 to {} run here, not {pool}",
                self.pools.len() - 1
            )));
        };
        let d = Domain::connect_with(&daemon.options("scenario"))?;
        let id = d.id();
        self.domains.insert(id, d);
        Ok(id)
    }

    fn kill(&mut self, domain: DomainId) -> Result<(), cosh::Error> {
        if self.domains.remove(&domain).is_none() {
            return Err(cosh::Error::Cosh {
                kind: ErrorKind::UnknownDomain,
                message: format!("{domain} is not connected"),
            });
        }
        // The block manager notices the closed socket on one of its next turns (a request
        // that comes by ring may be handled first): wait until its status no longer lists
        // the domain.
        if let Some(daemon) = usize::try_from(domain.pool.0)
            .ok()
            .and_then(|i| self.pools.get(i))
        {
            let mut watcher = Domain::connect_with(&daemon.options("watcher"))?;
            let deadline = Instant::now() + Duration::from_secs(5);
            while watcher
                .status()?
                .domains
                .iter()
                .any(|d| d.domain == domain.to_bits())
            {
                assert!(Instant::now() < deadline, "{domain} never went away");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    fn trust(&mut self, domain: DomainId, peer: DomainId) -> Result<(), cosh::Error> {
        self.domain(domain)?.trust(peer)
    }

    fn alloc(&mut self, domain: DomainId, len: u64) -> Result<Agg, cosh::Error> {
        self.domain(domain)?.alloc(len)
    }

    fn incref(&mut self, domain: DomainId, agg: Agg) -> Result<(), cosh::Error> {
        self.domain(domain)?.incref(agg)
    }

    fn decref(&mut self, domain: DomainId, agg: Agg) -> Result<(), cosh::Error> {
        self.domain(domain)?.decref(agg)
    }

    fn getlen(&mut self, domain: DomainId, agg: Agg) -> Result<u64, cosh::Error> {
        self.domain(domain)?.len(agg)
    }

    fn getrights(&mut self, domain: DomainId, agg: Agg) -> Result<Rights, cosh::Error> {
        self.domain(domain)?.rights(agg)
    }

    fn iter(
        &mut self,
        domain: DomainId,
        agg: Agg,
        access: Access,
        offset: u64,
    ) -> Result<Vec<Piece>, cosh::Error> {
        let d = self.domain(domain)?;
        Ok(match access {
            Access::Read => d
                .read_pieces(agg, offset)?
                .into_iter()
                .map(|p| p.0)
                .collect(),
            Access::Write => d
                .write_pieces(agg, offset)?
                .into_iter()
                .map(|p| p.0)
                .collect(),
        })
    }

    fn piece_len(piece: &Piece) -> u64 {
        piece.len
    }

    fn read(
        &mut self,
        domain: DomainId,
        agg: Agg,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, cosh::Error> {
        self.domain(domain)?.read(agg, offset, len)
    }

    fn write(
        &mut self,
        domain: DomainId,
        agg: Agg,
        offset: u64,
        data: &[u8],
    ) -> Result<(), cosh::Error> {
        self.domain(domain)?.write(agg, offset, data)
    }

    fn concat(&mut self, domain: DomainId, first: Agg, second: Agg) -> Result<Agg, cosh::Error> {
        self.domain(domain)?.concat(first, second)
    }

    fn select(
        &mut self,
        domain: DomainId,
        agg: Agg,
        offset: u64,
        len: u64,
    ) -> Result<Agg, cosh::Error> {
        self.domain(domain)?.select(agg, offset, len)
    }

    fn find_related(
        &mut self,
        domain: DomainId,
        agg: Agg,
        min_rights: Rights,
    ) -> Result<Vec<Agg>, cosh::Error> {
        self.domain(domain)?.find_related(agg, min_rights)
    }

    fn downgrade(&mut self, domain: DomainId, agg: Agg, rights: Rights) -> Result<(), cosh::Error> {
        self.domain(domain)?.downgrade(agg, rights)
    }

    fn transfer(
        &mut self,
        domain: DomainId,
        agg: Agg,
        dest: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<(), cosh::Error> {
        self.domain(domain)?
            .transfer(agg, dest, mode, flags)
            .map(|_| ())
    }

    fn attach_transfer(
        &mut self,
        domain: DomainId,
        agg: Agg,
        dest: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<Ticket, cosh::Error> {
        self.domain(domain)?.attach_transfer(agg, dest, mode, flags)
    }

    fn receive(
        &mut self,
        domain: DomainId,
        source: Option<DomainId>,
    ) -> Result<Incoming<Agg, DomainId>, cosh::Error> {
        let i = self.domain(domain)?.receive(source, Some(Duration::ZERO))?;
        Ok(Incoming {
            agg: i.agg,
            source: i.source,
            mode: i.mode,
            strength: i.strength,
        })
    }

    fn attach_recv(
        &mut self,
        domain: DomainId,
        source: DomainId,
        ticket: Ticket,
    ) -> Result<Incoming<Agg, DomainId>, cosh::Error> {
        let i = self
            .domain(domain)?
            .attach_recv(source, ticket, Some(Duration::ZERO))?;
        Ok(Incoming {
            agg: i.agg,
            source: i.source,
            mode: i.mode,
            strength: i.strength,
        })
    }

    fn peek(&mut self, domain: DomainId, piece: &Piece) -> Result<Vec<u8>, cosh::Error> {
        Ok(self.domain(domain)?.location_bytes(piece)?.to_vec())
    }

    fn poke(&mut self, domain: DomainId, piece: &Piece, data: &[u8]) -> Result<(), cosh::Error> {
        let bytes = self.domain(domain)?.location_bytes_mut(piece)?;
        let n = data.len().min(bytes.len());
        bytes[..n].copy_from_slice(&data[..n]);
        Ok(())
    }
}

pub mod peers;

/// Runs every corpus scenario in the host pool on a fresh implementation made by `make`,
/// and fails with every scenario that did not pass.
pub fn assert_corpus_passes<C: Cosh>(make: impl FnMut() -> C) {
    assert_corpus_passes_in(cosh_scenario::Layout::OnePool, make);
}

/// Runs every corpus scenario with its domains placed by `layout`.
pub fn assert_corpus_passes_in<C: Cosh>(
    layout: cosh_scenario::Layout,
    mut make: impl FnMut() -> C,
) {
    let scenarios = cosh_scenario::corpus().expect("the corpus loads");
    let mut failures = Vec::new();
    for (path, scenario) in &scenarios {
        let mut cosh = make();
        match cosh_scenario::check(scenario, &mut cosh, layout) {
            Ok(r) if r.steps == scenario.steps.len() => {}
            Ok(r) => failures.push(format!("{}: ran {} steps only", path.display(), r.steps)),
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        scenarios.len(),
        failures.join("\n")
    );
}
