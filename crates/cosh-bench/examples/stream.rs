//! Streams strong copies from one domain to another (a thread each):
//! `cargo run --release -p cosh-bench --example stream -- SOCKET SIZE COUNT`.
//! With `MOVE` set in the environment it streams strong moves instead, each of a buffer
//! allocated unzeroed and freed after its transfer, as a producer does; with `TRUST` set the
//! two domains trust each other first (they then get a direct ring between them).

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use cosh::{Domain, Mode, Options, TransferFlags};

fn main() -> Result<(), cosh::Error> {
    let mut args = std::env::args().skip(1);
    let socket = args.next().unwrap_or_else(|| "/tmp/rpc/host.sock".into());
    let size: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1 << 20);
    let count: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let connect = |name: &str| Domain::connect_with(&Options::new(name).socket(&socket).no_spawn());
    let mut a = connect("source")?;
    let mut b = connect("sink")?;
    let (a_id, dest) = (a.id(), b.id());
    if std::env::var_os("TRUST").is_some() {
        a.trust(dest)?;
        b.trust(a_id)?;
    }
    let sink = std::thread::spawn(move || -> Result<Instant, cosh::Error> {
        for _ in 0..count {
            let got = b.receive(Some(a_id), Some(Duration::from_secs(10)))?;
            b.decref(got.agg)?;
        }
        let end = Instant::now();
        if std::env::var_os("STATUS").is_some() {
            let s = b.status()?;
            eprintln!(
                "pool bytes {} free buffers {}",
                s.pool_bytes, s.free_buffers
            );
        }
        Ok(end)
    });
    let x = a.alloc(size)?;
    a.write(x, 0, &vec![5u8; size as usize])?;
    let t0 = Instant::now();
    let mut calls = Vec::with_capacity(count);
    let moves = std::env::var_os("MOVE").is_some();
    for _ in 0..count {
        let t = Instant::now();
        if moves {
            let y = a.alloc_unzeroed(size)?;
            a.write(y, 0, &[5u8; 8])?;
            a.transfer(y, dest, Mode::Move, TransferFlags::strong())?;
            a.decref(y)?;
        } else {
            a.transfer(x, dest, Mode::Copy, TransferFlags::strong())?;
        }
        calls.push(t.elapsed());
    }
    calls.sort_unstable();
    let end = sink.join().expect("sink")?;

    let each = (end - t0) / count as u32;
    eprintln!(
        "strong {} stream, {size} bytes: {:?} each (the sender's calls: median {:?}), {:.2} GB/s",
        if moves { "move" } else { "copy" },
        each,
        calls[count / 2],
        size as f64 / each.as_secs_f64() / 1e9
    );
    Ok(())
}
