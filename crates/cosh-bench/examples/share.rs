//! Strong shares of fresh buffers from one domain to another (a thread each), timing the
//! sender's call and the receiver's wait and first read:
//! `cargo run --release -p cosh-bench --example share -- SOCKET SIZE COUNT`.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use cosh::{Domain, Mode, Options, TransferFlags};

fn main() -> Result<(), cosh::Error> {
    let mut args = std::env::args().skip(1);
    let socket = args.next().unwrap_or_else(|| "/tmp/rpc/host.sock".into());
    let size: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(16 << 20);
    let count: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(50);
    let connect = |name: &str| Domain::connect_with(&Options::new(name).socket(&socket).no_spawn());
    let mut a = connect("sharer")?;
    let mut b = connect("reader")?;
    let (a_id, dest) = (a.id(), b.id());
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let reader = std::thread::spawn(move || -> Result<Vec<(u64, u64)>, cosh::Error> {
        let mut t = Vec::with_capacity(count);
        for _ in 0..count {
            let got = b.receive(Some(a_id), Some(Duration::from_secs(10)))?;
            let delivered = Instant::now();
            let first = b.read(got.agg, 0, 1)?;
            std::hint::black_box(first);
            let readable = Instant::now();
            let sent = rx.recv().expect("the send time");
            t.push((
                (delivered - sent).as_nanos() as u64,
                (readable - sent).as_nanos() as u64,
            ));
            b.decref(got.agg)?;
        }
        Ok(t)
    });
    let mut calls = Vec::with_capacity(count);
    for i in 0..count {
        let x = a.alloc(size)?;
        for p in a.write_pieces(x, 0)? {
            a.bytes_mut(&p)?.fill(i as u8);
        }
        std::thread::sleep(Duration::from_millis(2));
        let t0 = Instant::now();
        tx.send(t0).expect("the reader");
        let report = a.transfer(x, dest, Mode::Share, TransferFlags::strong())?;
        calls.push(t0.elapsed().as_nanos() as u64);
        if i == 0 {
            eprintln!("{report:?}");
        }
        a.decref(x)?;
    }
    let mut t = reader.join().expect("reader")?;
    calls.sort_unstable();
    t.sort_unstable();
    let mut readable: Vec<u64> = t.iter().map(|x| x.1).collect();
    readable.sort_unstable();
    eprintln!(
        "strong share of {size} bytes: the sender's call {} µs, delivered {} µs, readable {} µs (medians of {count})",
        calls[count / 2] / 1000,
        t[count / 2].0 / 1000,
        readable[count / 2] / 1000
    );
    Ok(())
}
