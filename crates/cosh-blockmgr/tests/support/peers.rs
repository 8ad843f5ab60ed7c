//! The aggregate API with every domain a `cosh-peer` child process, scripted over its stdin
//! and stdout: the corpus then runs with real process boundaries between domains.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use cosh_core::api::{Cosh, Incoming};
use cosh_core::{
    Access, DomainId, ErrorKind, Mode, PoolId, Rights, Strength, Ticket, TransferFlags,
};

use super::Daemon;

/// The peer binary built with these tests.
pub fn peer_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cosh-peer"))
}

/// One child process.
pub struct Peer {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub id: DomainId,
}

/// An answer of a peer that was `err`.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct PeerError {
    pub kind: Option<ErrorKind>,
    pub message: String,
}

impl Peer {
    pub fn spawn(daemon: &Daemon, name: &str) -> Peer {
        Peer::spawn_with(Command::new(peer_binary()), daemon, name)
    }

    pub fn spawn_with(mut command: Command, daemon: &Daemon, name: &str) -> Peer {
        let mut child = command
            .arg("--socket")
            .arg(&daemon.socket)
            .arg("--name")
            .arg(name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cosh-peer starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut peer = Peer {
            child,
            stdin,
            stdout,
            id: DomainId::from_bits(0),
        };
        let id = peer.ask("id").expect("peer answers");
        peer.id = DomainId::from_bits(id.parse().expect("domain id"));
        peer
    }

    /// Sends one command and returns what follows `ok`.
    pub fn ask(&mut self, line: &str) -> Result<String, PeerError> {
        self.tell(line)?;
        self.answer()
    }

    /// Sends one command without waiting for its answer.
    pub fn tell(&mut self, line: &str) -> Result<(), PeerError> {
        let gone = || PeerError {
            kind: None,
            message: "peer stdin closed".into(),
        };
        writeln!(self.stdin, "{line}").map_err(|_| gone())?;
        self.stdin.flush().map_err(|_| gone())
    }

    /// Reads the answer to the oldest command not yet answered.
    pub fn answer(&mut self) -> Result<String, PeerError> {
        let gone = |what: &str| PeerError {
            kind: None,
            message: format!("peer {what}"),
        };
        let mut answer = String::new();
        let n = self
            .stdout
            .read_line(&mut answer)
            .map_err(|_| gone("stdout broke"))?;
        if n == 0 {
            return Err(gone("exited"));
        }
        let answer = answer.trim_end();
        if let Some(rest) = answer.strip_prefix("ok") {
            return Ok(rest.trim_start().to_string());
        }
        let rest = answer.strip_prefix("err ").unwrap_or(answer);
        let (kind, message) = rest.split_once(' ').unwrap_or((rest, ""));
        Err(PeerError {
            kind: ErrorKind::from_name(kind),
            message: message.to_string(),
        })
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every domain a child process.
pub struct Peers<'d> {
    daemon: &'d Daemon,
    peers: HashMap<DomainId, Peer>,
}

impl<'d> Peers<'d> {
    pub fn new(daemon: &'d Daemon) -> Self {
        Peers {
            daemon,
            peers: HashMap::new(),
        }
    }

    fn ask(&mut self, d: DomainId, line: &str) -> Result<String, PeerError> {
        let peer = self.peers.get_mut(&d).ok_or_else(|| PeerError {
            kind: Some(ErrorKind::UnknownDomain),
            message: format!("{d} is not running"),
        })?;
        peer.ask(line)
    }
}

fn number(s: &str) -> Result<u64, PeerError> {
    s.split_whitespace()
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| PeerError {
            kind: None,
            message: format!("not a number: {s:?}"),
        })
}

fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn incoming(s: &str) -> Result<Incoming<u64, DomainId>, PeerError> {
    let w: Vec<&str> = s.split_whitespace().collect();
    let bad = || PeerError {
        kind: None,
        message: format!("bad incoming {s:?}"),
    };
    let [agg, source, mode, strength] = w[..] else {
        return Err(bad());
    };
    Ok(Incoming {
        agg: agg.parse().map_err(|_| bad())?,
        source: DomainId::from_bits(source.parse().map_err(|_| bad())?),
        mode: Mode::from_name(mode).ok_or_else(bad)?,
        strength: Strength::from_name(strength).ok_or_else(bad)?,
    })
}

impl Cosh for Peers<'_> {
    type Domain = DomainId;
    type Agg = u64;
    type Piece = String;
    type Error = PeerError;

    fn kind_of(error: &PeerError) -> Option<ErrorKind> {
        error.kind
    }

    fn connect(&mut self, pool: PoolId) -> Result<DomainId, PeerError> {
        if pool != PoolId(0) {
            return Err(PeerError {
                kind: None,
                message: format!("only the host pool runs here, not {pool}"),
            });
        }
        let peer = Peer::spawn(self.daemon, "scenario");
        let id = peer.id;
        self.peers.insert(id, peer);
        Ok(id)
    }

    fn kill(&mut self, domain: DomainId) -> Result<(), PeerError> {
        let Some(mut peer) = self.peers.remove(&domain) else {
            return Err(PeerError {
                kind: Some(ErrorKind::UnknownDomain),
                message: format!("{domain} is not running"),
            });
        };
        peer.kill();
        // Wait until the block manager has noticed (it lists connected domains).
        let others: Vec<DomainId> = self.peers.keys().copied().collect();
        if let Some(other) = others.first() {
            for _ in 0..1000 {
                let s = self.ask(*other, "status")?;
                let n: usize = s
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("domains="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                if n <= others.len() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Ok(())
    }

    fn trust(&mut self, domain: DomainId, peer: DomainId) -> Result<(), PeerError> {
        self.ask(domain, &format!("trust {}", peer.to_bits()))
            .map(drop)
    }

    fn alloc(&mut self, domain: DomainId, len: u64) -> Result<u64, PeerError> {
        number(&self.ask(domain, &format!("alloc {len}"))?)
    }

    fn incref(&mut self, domain: DomainId, agg: u64) -> Result<(), PeerError> {
        self.ask(domain, &format!("incref {agg}")).map(drop)
    }

    fn decref(&mut self, domain: DomainId, agg: u64) -> Result<(), PeerError> {
        self.ask(domain, &format!("decref {agg}")).map(drop)
    }

    fn getlen(&mut self, domain: DomainId, agg: u64) -> Result<u64, PeerError> {
        number(&self.ask(domain, &format!("len {agg}"))?)
    }

    fn getrights(&mut self, domain: DomainId, agg: u64) -> Result<Rights, PeerError> {
        let r = self.ask(domain, &format!("rights {agg}"))?;
        Rights::from_name(&r).ok_or_else(|| PeerError {
            kind: None,
            message: format!("bad rights {r:?}"),
        })
    }

    fn iter(
        &mut self,
        domain: DomainId,
        agg: u64,
        access: Access,
        offset: u64,
    ) -> Result<Vec<String>, PeerError> {
        let a = match access {
            Access::Read => "read",
            Access::Write => "write",
        };
        let s = self.ask(domain, &format!("iter {agg} {a} {offset}"))?;
        Ok(s.split_whitespace().map(str::to_string).collect())
    }

    fn piece_len(piece: &String) -> u64 {
        piece
            .rsplit(':')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    fn read(
        &mut self,
        domain: DomainId,
        agg: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, PeerError> {
        Ok(unhex(
            &self.ask(domain, &format!("read {agg} {offset} {len}"))?,
        ))
    }

    fn write(
        &mut self,
        domain: DomainId,
        agg: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<(), PeerError> {
        self.ask(domain, &format!("write {agg} {offset} {}", hex(data)))
            .map(drop)
    }

    fn concat(&mut self, domain: DomainId, first: u64, second: u64) -> Result<u64, PeerError> {
        number(&self.ask(domain, &format!("concat {first} {second}"))?)
    }

    fn select(
        &mut self,
        domain: DomainId,
        agg: u64,
        offset: u64,
        len: u64,
    ) -> Result<u64, PeerError> {
        number(&self.ask(domain, &format!("select {agg} {offset} {len}"))?)
    }

    fn find_related(
        &mut self,
        domain: DomainId,
        agg: u64,
        min_rights: Rights,
    ) -> Result<Vec<u64>, PeerError> {
        let s = self.ask(domain, &format!("related {agg} {}", min_rights.name()))?;
        s.split_whitespace().map(number).collect()
    }

    fn downgrade(&mut self, domain: DomainId, agg: u64, rights: Rights) -> Result<(), PeerError> {
        self.ask(domain, &format!("downgrade {agg} {}", rights.name()))
            .map(drop)
    }

    fn transfer(
        &mut self,
        domain: DomainId,
        agg: u64,
        dest: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<(), PeerError> {
        let line = format!(
            "transfer {agg} {} {mode} {}",
            dest.to_bits(),
            flags.to_bits()
        );
        self.ask(domain, &line).map(drop)
    }

    fn attach_transfer(
        &mut self,
        domain: DomainId,
        agg: u64,
        dest: DomainId,
        mode: Mode,
        flags: TransferFlags,
    ) -> Result<Ticket, PeerError> {
        let line = format!("attach {agg} {} {mode} {}", dest.to_bits(), flags.to_bits());
        Ok(Ticket(number(&self.ask(domain, &line)?)?))
    }

    fn receive(
        &mut self,
        domain: DomainId,
        source: Option<DomainId>,
    ) -> Result<Incoming<u64, DomainId>, PeerError> {
        let source = source.map_or("-".to_string(), |s| s.to_bits().to_string());
        incoming(&self.ask(domain, &format!("receive {source} 0"))?)
    }

    fn attach_recv(
        &mut self,
        domain: DomainId,
        source: DomainId,
        ticket: Ticket,
    ) -> Result<Incoming<u64, DomainId>, PeerError> {
        let line = format!("attach_recv {} {} 0", source.to_bits(), ticket.0);
        incoming(&self.ask(domain, &line)?)
    }

    fn peek(&mut self, domain: DomainId, piece: &String) -> Result<Vec<u8>, PeerError> {
        Ok(unhex(&self.ask(domain, &format!("peek {piece}"))?))
    }

    fn poke(&mut self, domain: DomainId, piece: &String, data: &[u8]) -> Result<(), PeerError> {
        self.ask(domain, &format!("poke {piece} {}", hex(data)))
            .map(drop)
    }
}
