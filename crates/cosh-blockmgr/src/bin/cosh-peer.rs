//! `cosh-peer`: one domain in a process of its own, driven line by line on stdin — the helper
//! that multi-process tests and demos script.
//!
//! Every command is one line of words; every answer is one line, `ok ...` or
//! `err <kind> <message>`. Byte strings are hex. A piece is `buffer:slot:offset:len`.

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

/// Fills aggregate `a` with a pattern derived from `index`, which it carries in its first
/// eight bytes, so that a receiver can check every byte without knowing the sender's plan.
fn stamp(d: &mut Domain, a: Agg, index: u64) -> Result<(), cosh::Error> {
    let len = d.len(a)?;
    let mut bytes = pattern(index, len);
    bytes[..8].copy_from_slice(&index.to_le_bytes());
    d.write(a, 0, &bytes)
}

fn pattern(index: u64, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(131).wrapping_add(index.wrapping_mul(7)) % 251) as u8)
        .collect()
}

/// Whether `a` carries a correct stamp.
fn stamped(d: &mut Domain, a: Agg) -> Result<bool, cosh::Error> {
    let len = d.len(a)?;
    if len < 8 {
        return Ok(false);
    }
    let bytes = d.read(a, 0, len)?;
    let mut index = [0u8; 8];
    index.copy_from_slice(&bytes[..8]);
    let index = u64::from_le_bytes(index);
    let expected = pattern(index, len);
    Ok(bytes[8..] == expected[8..])
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
                    stamp(d, a, i)?;
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
                    let ok = stamped(d, i.agg)?;
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
