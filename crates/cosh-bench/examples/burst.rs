//! The CPU cost of a direct weak move, without waiting: one thread bounces a buffer between
//! two domains: `cargo run --release -p cosh-bench --example burst -- SOCKET`.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use cosh::{Domain, Mode, Options, TransferFlags};

fn main() -> Result<(), cosh::Error> {
    let socket = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/rpc/host.sock".into());
    let mut a = Domain::connect_with(&Options::new("a").socket(&socket).no_spawn())?;
    let mut b = Domain::connect_with(&Options::new("b").socket(&socket).no_spawn())?;
    a.trust(b.id())?;
    b.trust(a.id())?;
    let rounds = 100_000;
    let mut x = a.alloc(1 << 20)?;
    let (mut sends, mut receives) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    let wait = Some(Duration::from_secs(5));
    for _ in 0..rounds {
        let t0 = Instant::now();
        a.transfer(x, b.id(), Mode::Move, TransferFlags::weak())?;
        let t1 = Instant::now();
        let got = b.receive(Some(a.id()), wait)?;
        let t2 = Instant::now();
        b.transfer(got.agg, a.id(), Mode::Move, TransferFlags::weak())?;
        // What a moved-away handle leaves is dropped at once, as a program would.
        a.decref(x)?;
        b.decref(got.agg)?;
        x = a.receive(Some(b.id()), wait)?.agg;
        sends.push((t1 - t0).as_nanos() as u64);
        receives.push((t2 - t1).as_nanos() as u64);
    }
    sends.sort_unstable();
    receives.sort_unstable();
    eprintln!(
        "direct weak move, one thread: transfer median {} ns, receive median {} ns",
        sends[rounds / 2],
        receives[rounds / 2]
    );
    Ok(())
}
