//! Round trips to the block manager: `cargo run --release -p cosh-bench --example rpc -- SOCKET`.

#![forbid(unsafe_code)]

use std::time::Instant;

fn main() -> Result<(), cosh::Error> {
    let socket = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/rpc/host.sock".into());
    let mut d = cosh::Domain::connect_with(&cosh::Options::new("rpc").socket(socket).no_spawn())?;
    let x = d.alloc(4096)?;
    let mut t = Vec::new();
    for _ in 0..2000 {
        let s = Instant::now();
        d.info(x)?;
        t.push(s.elapsed().as_nanos() as u64);
    }
    t.sort_unstable();
    eprintln!(
        "info round trip: p10 {} ns, median {} ns, p90 {} ns (waiting {} looks before sleeping)",
        t[200],
        t[1000],
        t[1800],
        cosh::default_spins()
    );
    Ok(())
}
