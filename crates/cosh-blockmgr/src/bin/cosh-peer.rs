//! `cosh-peer`: one domain in a process of its own, driven line by line on stdin — the helper
//! that multi-process tests and demos script.
//!
//! Every command is one line of words; every answer is one line, `ok ...` or
//! `err <kind> <message>`. Byte strings are hex. A piece is `buffer:slot:offset:len`.

#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use cosh::{Agg, Domain, Location, Mode, Options, Rights, Ticket, TransferFlags};
use cosh_core::{DomainId, ErrorKind};

/// A scriptable Cosh domain: reads commands on stdin, answers on stdout (see the source for
/// the command list). Used by the multi-process tests.
#[derive(Parser, Debug)]
struct Args {
    /// The block manager's socket.
    #[arg(long)]
    socket: PathBuf,
    /// The domain's name in status.
    #[arg(long, default_value = "cosh-peer")]
    name: String,
}

type Answer = Result<String, cosh::Error>;

fn bad(message: impl Into<String>) -> cosh::Error {
    cosh::Error::Protocol(message.into())
}

fn num(word: Option<&str>) -> Result<u64, cosh::Error> {
    let w = word.ok_or_else(|| bad("missing number"))?;
    w.parse().map_err(|_| bad(format!("not a number: {w}")))
}

fn opt_num(word: Option<&str>) -> Result<Option<u64>, cosh::Error> {
    match word {
        None | Some("-") => Ok(None),
        w => num(w).map(Some),
    }
}

fn domain(word: Option<&str>) -> Result<DomainId, cosh::Error> {
    num(word).map(DomainId::from_bits)
}

fn rights(word: Option<&str>) -> Result<Rights, cosh::Error> {
    let w = word.ok_or_else(|| bad("missing rights"))?;
    Rights::from_name(w).ok_or_else(|| bad(format!("not rights: {w}")))
}

fn mode(word: Option<&str>) -> Result<Mode, cosh::Error> {
    let w = word.ok_or_else(|| bad("missing mode"))?;
    Mode::from_name(w).ok_or_else(|| bad(format!("not a mode: {w}")))
}

fn flags(word: Option<&str>) -> Result<TransferFlags, cosh::Error> {
    let bits = num(word)?;
    TransferFlags::from_bits(u32::try_from(bits).unwrap_or(u32::MAX))
        .map_err(|b| bad(format!("bad flag bits {b:#x}")))
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "-".into();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(word: Option<&str>) -> Result<Vec<u8>, cosh::Error> {
    let w = word.ok_or_else(|| bad("missing bytes"))?;
    if w == "-" {
        return Ok(Vec::new());
    }
    if w.len() % 2 != 0 {
        return Err(bad("odd hex length"));
    }
    (0..w.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&w[i..i + 2], 16).map_err(|_| bad("bad hex")))
        .collect()
}

fn location(word: Option<&str>) -> Result<Location, cosh::Error> {
    let w = word.ok_or_else(|| bad("missing piece"))?;
    let parts: Vec<u64> = w
        .split(':')
        .map(|p| p.parse().map_err(|_| bad(format!("bad piece {w}"))))
        .collect::<Result<_, _>>()?;
    let [buffer, slot, offset, len] = parts[..] else {
        return Err(bad(format!("bad piece {w}")));
    };
    Ok(Location {
        buffer,
        slot,
        offset,
        len,
    })
}

fn timeout(word: Option<&str>) -> Result<Option<Duration>, cosh::Error> {
    Ok(opt_num(word)?.map(Duration::from_millis))
}

/// FNV-1a, 64 bits: a checksum for comparing data across processes.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

thread_local! {
    /// Writable mappings kept behind the library's back by `hold`.
    static HELD: std::cell::RefCell<Vec<(Location, cosh_sys::mapping::Mapping<cosh_sys::mapping::ReadWrite>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// Raw descriptors kept by `keepfd`.
    static KEPT: std::cell::RefCell<Vec<(Location, std::os::fd::OwnedFd)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn outcome<T>(r: Result<T, rustix::io::Errno>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) if e == rustix::io::Errno::ACCESS => "EACCES".into(),
        Err(e) if e == rustix::io::Errno::PERM => "EPERM".into(),
        Err(e) if e == rustix::io::Errno::BADF => "EBADF".into(),
        Err(e) if e == rustix::io::Errno::INVAL => "EINVAL".into(),
        Err(e) => format!("errno{}", e.raw_os_error()),
    }
}

/// Tries everything a hostile process might with the descriptors of a piece it may read:
/// reopening read/write through /proc, mapping writable, writing, truncating, punching holes.
fn attack(d: &mut Domain, at: &Location) -> String {
    let mut out = Vec::new();
    for (name, access) in [("ro", cosh::Access::Read), ("rw", cosh::Access::Write)] {
        let fd = match d.descriptor(at, access) {
            Ok(fd) => fd,
            Err(e) => {
                out.push(format!("{name}_fd={}", e.kind().name()));
                continue;
            }
        };
        out.push(format!("{name}_fd=ok"));
        out.push(fd_attack(name, &fd, at));
    }
    out.join(" ")
}

/// One descriptor's worth of [`attack`].
fn fd_attack(name: &str, fd: &std::os::fd::OwnedFd, at: &Location) -> String {
    use rustix::fs::{FallocateFlags, Mode, OFlags};
    let mut out = Vec::new();
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd));
    let reopened = rustix::fs::open(path.as_str(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty());
    out.push(format!("{name}_reopen_rw={}", outcome(reopened)));
    out.push(format!(
        "{name}_pwrite={}",
        outcome(rustix::io::pwrite(fd, b"X", at.offset))
    ));
    out.push(format!(
        "{name}_truncate={}",
        outcome(rustix::fs::ftruncate(fd, 0))
    ));
    let punch = rustix::fs::fallocate(
        fd,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        0,
        4096,
    );
    out.push(format!("{name}_punch={}", outcome(punch)));
    let mapped = fd
        .try_clone()
        .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO))
        .and_then(|fd| {
            cosh_sys::memfd::Memfd::from_fd(fd)
                .and_then(|m| m.map_write(cosh_sys::mapping::Prefault::OnFirstTouch))
                .map(drop)
                .map_err(|e| e.errno().unwrap_or(rustix::io::Errno::IO))
        });
    out.push(format!("{name}_map_write={}", outcome(mapped)));
    out.join(" ")
}

thread_local! {
    /// The block manager's socket, for commands that open connections of their own.
    static SOCKET: std::cell::RefCell<PathBuf> = std::cell::RefCell::new(PathBuf::new());
    /// Connections opened by `conns`.
    static CONNS: std::cell::RefCell<Vec<cosh_sys::socket::SeqPacket>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// What the block manager sent on `sock` within 2 s: a message's name (an error's kind),
/// `closed`, or `silent`.
fn heard(sock: &cosh_sys::socket::SeqPacket) -> String {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(sock, PollFlags::IN)];
    let two_seconds = Timespec {
        tv_sec: 2,
        tv_nsec: 0,
    };
    if !matches!(rustix::event::poll(&mut fds, Some(&two_seconds)), Ok(n) if n > 0) {
        return "silent".into();
    }
    let mut buf = vec![0u8; cosh_proto::MAX_FRAME];
    match sock.recv(&mut buf) {
        Ok(Some(m)) => match cosh_proto::decode(&buf[..m.len]) {
            Ok(cosh_proto::Message::Error { kind, .. }) => format!("error:{}", kind.name()),
            Ok(other) => other.name().to_string(),
            Err(_) => "garbage".into(),
        },
        Ok(None) | Err(_) => "closed".into(),
    }
}

/// A connection of its own to the block manager, welcomed (a hello sent and answered) when
/// `hello`; `Err` with what the block manager said otherwise.
fn raw_connection(hello: bool) -> Result<cosh_sys::socket::SeqPacket, String> {
    let socket = SOCKET.with(|s| s.borrow().clone());
    let sock = cosh_sys::socket::SeqPacket::connect(&socket).map_err(|e| e.to_string())?;
    if hello {
        let bytes = cosh_proto::encode(&cosh_proto::Message::Hello {
            min_version: 1,
            max_version: 1,
            name: "raw".into(),
        })
        .map_err(|e| e.to_string())?;
        sock.send(&bytes, &[]).map_err(|e| e.to_string())?;
        match heard(&sock).as_str() {
            "welcome" => {}
            other => return Err(other.to_string()),
        }
    }
    Ok(sock)
}

/// Sends `bytes` (with `fds` descriptors of /dev/null attached) on a connection of its own,
/// after a hello if `hello`; reports the block manager's answer and what followed it.
fn raw(hello: bool, bytes: &[u8], fds: usize) -> Answer {
    let sock = raw_connection(hello).map_err(bad)?;
    let nulls = (0..fds)
        .map(|_| std::fs::File::open("/dev/null"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let borrowed: Vec<std::os::fd::BorrowedFd<'_>> =
        nulls.iter().map(std::os::fd::AsFd::as_fd).collect();
    if let Err(e) = sock.send(bytes, &borrowed) {
        return Ok(format!("answer=send-refused({}) then=closed", e));
    }
    let answer = heard(&sock);
    let then = if answer == "closed" {
        "closed".to_string()
    } else {
        heard(&sock)
    };
    Ok(format!("answer={answer} then={then}"))
}

/// Writes `value` over word `word` of this process's request ring (the memory it shares with
/// the block manager), through /proc/self/mem.
fn ring_scribble(word: u64, value: u32) -> Answer {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| bad(e.to_string()))?;
    let start = maps
        .lines()
        .find(|l| l.contains("cosh-rings"))
        .and_then(|l| l.split('-').next())
        .and_then(|a| u64::from_str_radix(a, 16).ok())
        .ok_or_else(|| bad("no ring mapped"))?;
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")
        .map_err(|e| bad(e.to_string()))?;
    mem.write_all_at(&value.to_le_bytes(), start + 4 * word)
        .map_err(|e| bad(e.to_string()))?;
    Ok(format!("at={start:#x}"))
}

/// Shares `agg` strongly with `dest` while another thread keeps writing into its first piece
/// through a read/write descriptor, before, during and for 50 ms after the transfer; reports
/// how many of those writes the kernel let through after the transfer was answered.
fn race(d: &mut Domain, agg: Agg, dest: DomainId) -> Answer {
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let at = d
        .write_pieces(agg, 0)?
        .into_iter()
        .map(|p| p.0)
        .next()
        .ok_or_else(|| bad("an empty aggregate"))?;
    let file = std::fs::File::from(d.descriptor(&at, cosh::Access::Write)?);
    let (stop, after, landed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let writer = {
        let (stop, after, landed) = (stop.clone(), after.clone(), landed.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let offset = at.offset + (i * 4099) % at.len.max(1);
                i += 1;
                if file.write_at(b"RACE", offset).is_ok() && after.load(Ordering::Relaxed) {
                    landed.fetch_add(1, Ordering::Relaxed);
                }
            }
            i
        })
    };
    std::thread::sleep(Duration::from_millis(5));
    let report = d.transfer(agg, dest, Mode::Share, TransferFlags::strong());
    after.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let tries = writer.join().unwrap_or(0);
    let report = report?;
    Ok(format!(
        "tries={tries} landed_after={} sealed={} refused={} copied={}",
        landed.load(Ordering::Relaxed),
        report.sealed_buffers,
        report.refused_seals,
        report.copied_bytes
    ))
}

fn incoming(i: cosh::Incoming) -> String {
    format!(
        "{} {} {} {}",
        i.agg.0,
        i.source.to_bits(),
        i.mode,
        i.strength
    )
}

fn run(d: &mut Domain, line: &str) -> Answer {
    let mut w = line.split_whitespace();
    let Some(command) = w.next() else {
        return Ok(String::new());
    };
    let agg = |word: Option<&str>| num(word).map(Agg);
    match command {
        "id" => Ok(d.id().to_bits().to_string()),
        // raw HELLO FDS HEX: sends HEX on a connection of its own (after a hello if HELLO is
        // 1), with FDS descriptors attached; says what the block manager answered
        "raw" => {
            let hello = num(w.next())? == 1;
            let fds = usize::try_from(num(w.next())?).unwrap_or(usize::MAX);
            raw(hello, &unhex(w.next())?, fds)
        }
        // conns N: opens N more welcomed connections and keeps them
        "conns" => {
            let n = num(w.next())?;
            let mut refused = "-".to_string();
            let mut opened = 0;
            for _ in 0..n {
                match raw_connection(true) {
                    Ok(c) => {
                        CONNS.with(|k| k.borrow_mut().push(c));
                        opened += 1;
                    }
                    Err(e) => {
                        refused = e;
                        break;
                    }
                }
            }
            Ok(format!("opened={opened} refused={refused}"))
        }
        "dropconns" => {
            CONNS.with(|k| k.borrow_mut().clear());
            Ok(String::new())
        }
        // ringscribble WORD VALUE: corrupts this domain's request ring
        "ringscribble" => {
            let word = num(w.next())?;
            let value = u32::try_from(num(w.next())?).map_err(|_| bad("a 32-bit value"))?;
            ring_scribble(word, value)
        }
        // race AGG DEST: a strong share while another thread writes into the aggregate
        "race" => {
            let a = agg(w.next())?;
            race(d, a, domain(w.next())?)
        }
        "alloc" => Ok(d.alloc(num(w.next())?)?.0.to_string()),
        // alloc and fill with a byte pattern: fill LEN SEED
        "fill" => {
            let len = num(w.next())?;
            let seed = num(w.next())?;
            let a = d.alloc(len)?;
            let mut i = seed;
            for p in d.write_pieces(a, 0)? {
                for b in d.bytes_mut(&p)? {
                    *b = (i % 251) as u8;
                    i += 1;
                }
            }
            Ok(a.0.to_string())
        }
        // pump DEST MODE FLAGS N LEN: N transfers of self-checking aggregates (see `stamp`);
        // stops at the first error.
        "pump" => {
            let dest = domain(w.next())?;
            let m = mode(w.next())?;
            let f = flags(w.next())?;
            let n = num(w.next())?;
            let len = num(w.next())?.max(8);
            let mut sent = 0;
            let mut end = "done".to_string();
            for i in 0..n {
                let mut step = || -> Result<(), cosh::Error> {
                    let a = d.alloc(len)?;
                    cosh::pattern::stamp(d, a, i)?;
                    let r = d.transfer(a, dest, m, f);
                    d.decref(a)?;
                    r.map(drop)
                };
                if let Err(e) = step() {
                    end = e.kind().name().to_string();
                    break;
                }
                sent += 1;
            }
            Ok(format!("sent={sent} end={end}"))
        }
        // drain SRC N TIMEOUT_MS: receives up to N aggregates, checking each one's stamp.
        "drain" => {
            let source = domain(w.next())?;
            let n = num(w.next())?;
            let wait = timeout(w.next())?;
            let (mut received, mut corrupt) = (0, 0);
            let mut end = "done".to_string();
            for _ in 0..n {
                match d.receive(Some(source), wait).and_then(|i| {
                    let ok = cosh::pattern::verify(d, i.agg)?;
                    d.decref(i.agg)?;
                    Ok(ok)
                }) {
                    Ok(ok) => {
                        received += 1;
                        if !ok {
                            corrupt += 1;
                        }
                    }
                    Err(e) => {
                        end = e.kind().name().to_string();
                        break;
                    }
                }
            }
            Ok(format!("received={received} corrupt={corrupt} end={end}"))
        }
        // attack LOC: what the kernel lets this process do with the piece's raw descriptors
        "attack" => {
            let at = location(w.next())?;
            Ok(attack(d, &at))
        }
        // hold LOC: map the piece's slot writable behind the library's back, and keep it
        "hold" => {
            let at = location(w.next())?;
            let fd = d.descriptor(&at, cosh::Access::Write)?;
            let map =
                cosh_sys::memfd::Memfd::from_fd(fd)?.map_write(cosh_sys::mapping::Prefault::Now)?;
            HELD.with(|h| h.borrow_mut().push((at, map)));
            Ok(String::new())
        }
        // keepfd LOC: keep the piece's read/write descriptor (not a mapping) for later
        "keepfd" => {
            let at = location(w.next())?;
            let fd = d.descriptor(&at, cosh::Access::Write)?;
            KEPT.with(|k| k.borrow_mut().push((at, fd)));
            Ok(String::new())
        }
        // fdattack: write, truncate, punch and map writable through every kept descriptor
        "fdattack" => Ok(KEPT.with(|k| {
            k.borrow()
                .iter()
                .map(|(at, fd)| fd_attack("kept", fd, at))
                .collect::<Vec<_>>()
                .join(" ")
        })),
        // scribble HEX: write through every held mapping
        "scribble" => {
            let data = unhex(w.next())?;
            let n = HELD.with(|h| {
                let mut held = h.borrow_mut();
                for (at, map) in held.iter_mut() {
                    let start = usize::try_from(at.offset).unwrap_or(usize::MAX);
                    if let Some(dst) = map
                        .as_mut_slice()
                        .get_mut(start..start.saturating_add(data.len()))
                    {
                        dst.copy_from_slice(&data);
                    }
                }
                held.len()
            });
            Ok(n.to_string())
        }
        "incref" => d.incref(agg(w.next())?).map(|()| String::new()),
        "decref" => d.decref(agg(w.next())?).map(|()| String::new()),
        "len" => Ok(d.len(agg(w.next())?)?.to_string()),
        "rights" => Ok(d.rights(agg(w.next())?)?.name().to_string()),
        "iter" => {
            let a = agg(w.next())?;
            let access = w.next().unwrap_or("read");
            let offset = num(w.next())?;
            let pieces: Vec<Location> = if access == "write" {
                d.write_pieces(a, offset)?
                    .into_iter()
                    .map(|p| p.0)
                    .collect()
            } else {
                d.read_pieces(a, offset)?.into_iter().map(|p| p.0).collect()
            };
            Ok(pieces
                .iter()
                .map(|p| format!("{}:{}:{}:{}", p.buffer, p.slot, p.offset, p.len))
                .collect::<Vec<_>>()
                .join(" "))
        }
        "read" => {
            let a = agg(w.next())?;
            let offset = num(w.next())?;
            Ok(hex(&d.read(a, offset, num(w.next())?)?))
        }
        "write" => {
            let a = agg(w.next())?;
            let offset = num(w.next())?;
            d.write(a, offset, &unhex(w.next())?)
                .map(|()| String::new())
        }
        "checksum" => {
            let a = agg(w.next())?;
            let len = d.len(a)?;
            Ok(format!("{:016x}", fnv(&d.read(a, 0, len)?)))
        }
        "concat" => Ok(d.concat(agg(w.next())?, agg(w.next())?)?.0.to_string()),
        "select" => {
            let a = agg(w.next())?;
            let offset = num(w.next())?;
            Ok(d.select(a, offset, num(w.next())?)?.0.to_string())
        }
        "related" => {
            let a = agg(w.next())?;
            let found = d.find_related(a, rights(w.next())?)?;
            Ok(found
                .iter()
                .map(|a| a.0.to_string())
                .collect::<Vec<_>>()
                .join(" "))
        }
        "downgrade" => {
            let a = agg(w.next())?;
            d.downgrade(a, rights(w.next())?).map(|()| String::new())
        }
        "transfer" | "attach" => {
            let a = agg(w.next())?;
            let dest = domain(w.next())?;
            let m = mode(w.next())?;
            let f = flags(w.next())?;
            if command == "attach" {
                Ok(d.attach_transfer(a, dest, m, f)?.0.to_string())
            } else {
                let r = d.transfer(a, dest, m, f)?;
                Ok(format!(
                    "referenced={} copied={} sealed={} refused={} weak={}",
                    r.referenced_bytes, r.copied_bytes, r.sealed_buffers, r.refused_seals, r.weak
                ))
            }
        }
        "receive" => {
            let source = opt_num(w.next())?.map(DomainId::from_bits);
            Ok(incoming(d.receive(source, timeout(w.next())?)?))
        }
        "attach_recv" => {
            let source = domain(w.next())?;
            let ticket = Ticket(num(w.next())?);
            Ok(incoming(d.attach_recv(
                source,
                ticket,
                timeout(w.next())?,
            )?))
        }
        "trust" => d.trust(domain(w.next())?).map(|()| String::new()),
        "register" => d
            .register(w.next().ok_or_else(|| bad("missing name"))?)
            .map(|()| String::new()),
        "lookup" => Ok(d
            .lookup(w.next().ok_or_else(|| bad("missing name"))?)?
            .to_bits()
            .to_string()),
        "peek" => Ok(hex(d.location_bytes(&location(w.next())?)?)),
        "poke" => {
            let at = location(w.next())?;
            let data = unhex(w.next())?;
            let bytes = d.location_bytes_mut(&at)?;
            let n = data.len().min(bytes.len());
            bytes[..n].copy_from_slice(&data[..n]);
            Ok(String::new())
        }
        "status" => {
            let s = d.status()?;
            Ok(format!(
                "domains={} buffers={} bytes={}",
                s.domain_count, s.buffers, s.bytes_in_use
            ))
        }
        other => Err(bad(format!("unknown command {other}"))),
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    SOCKET.with(|s| *s.borrow_mut() = args.socket.clone());
    let options = Options::new(&args.name).socket(&args.socket).no_spawn();
    let mut d = match Domain::connect_with(&options) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cosh-peer: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "exit" {
            break;
        }
        let answer = match run(&mut d, &line) {
            Ok(s) => format!("ok {s}"),
            Err(e) => {
                let kind = match &e {
                    cosh::Error::Cosh { kind, .. } => kind.name(),
                    cosh::Error::Protocol(_) => ErrorKind::Protocol.name(),
                    _ => ErrorKind::Unavailable.name(),
                };
                format!("err {kind} {}", e.to_string().replace('\n', " "))
            }
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    std::process::ExitCode::SUCCESS
}
