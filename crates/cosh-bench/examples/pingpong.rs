//! Weak-move ping-pong between two domains (threads with their own connections) that trust
//! each other: `cargo run --release -p cosh-bench --example pingpong -- SOCKET SIZE SPINS`.
//! Prints the round trip's percentiles, its tail and its mean over the whole run.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use cosh::{Domain, Mode, Options, TransferFlags};

fn main() -> Result<(), cosh::Error> {
    let mut args = std::env::args().skip(1);
    let socket = args.next().unwrap_or_else(|| "/tmp/rpc/host.sock".into());
    let size: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1 << 20);
    let spins: u32 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cosh::SPIN_FOREVER);
    let rounds = 20_000;
    let connect = |name: &str| -> Result<Domain, cosh::Error> {
        let mut d = Domain::connect_with(&Options::new(name).socket(&socket).no_spawn())?;
        d.set_spins(spins);
        Ok(d)
    };
    let mut a = connect("ping")?;
    let mut b = connect("pong")?;
    a.trust(b.id())?;
    b.trust(a.id())?;
    let (a_id, b_id) = (a.id(), b.id());
    let pong = std::thread::spawn(move || -> Result<(), cosh::Error> {
        for _ in 0..rounds {
            let got = b.receive(Some(a_id), Some(Duration::from_secs(10)))?;
            b.transfer(got.agg, a_id, Mode::Move, TransferFlags::weak())?;
            // The handle a move leaves goes at once, as a program would drop it.
            b.decref(got.agg)?;
        }
        Ok(())
    });
    let mut x = a.alloc(size)?;
    let start = Instant::now();
    let mut t = Vec::with_capacity(rounds);
    let mut sends = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let s = Instant::now();
        a.transfer(x, b_id, Mode::Move, TransferFlags::weak())?;
        sends.push(s.elapsed().as_nanos() as u64);
        let got = a.receive(Some(b_id), Some(Duration::from_secs(10)))?;
        t.push(s.elapsed().as_nanos() as u64);
        a.decref(x)?;
        x = got.agg;
    }
    let total = start.elapsed();
    pong.join().expect("pong")?;
    a.decref(x)?;
    t.sort_unstable();
    sends.sort_unstable();
    eprintln!(
        "weak move round trip, {size} bytes: p10 {} ns, median {} ns, p90 {} ns, p99 {} ns",
        t[rounds / 10],
        t[rounds / 2],
        t[rounds * 9 / 10],
        t[rounds * 99 / 100]
    );
    // The tail: on a machine with two cores, the block manager, woken to apply the records
    // of these transfers, takes one of them from the two busy-polling sides now and then.
    let slow: Vec<u64> = t
        .iter()
        .copied()
        .filter(|&x| x > 10 * t[rounds / 2])
        .collect();
    eprintln!(
        "p99.9 {} ns, max {} ns; round trips above 10x the median: {}, {} ns in all",
        t[rounds * 999 / 1000],
        t[rounds - 1],
        slow.len(),
        slow.iter().sum::<u64>()
    );
    eprintln!(
        "mean round trip (everything the loop took, over {rounds}): {} ns",
        total.as_nanos() / rounds as u128
    );
    eprintln!(
        "of which the sender's transfer call: median {} ns, p90 {} ns",
        sends[rounds / 2],
        sends[rounds * 9 / 10]
    );
    Ok(())
}
