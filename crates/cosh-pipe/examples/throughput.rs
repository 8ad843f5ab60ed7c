//! Pipe throughput against a Linux pipe, measured in the same run: a producer thread sends
//! `TOTAL` bytes in pieces of `SIZE` bytes (default 1 MiB) and a consumer thread takes them,
//! through a Cosh pipe (each domain its own connection to a block manager started here) as
//! aggregates and through its `Read`/`Write` adapters, and through a pipe(2). Five passes
//! each after a warm-up; medians.
//!
//! `cargo run --release -p cosh-pipe --example throughput -- [SIZE [TOTAL_MIB]]`

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use cosh::{Domain, Options};
use cosh_pipe::{PipeReader, PipeWriter, Window};

fn cosh_pass(dir: &std::path::Path, size: usize, total: usize) -> Duration {
    let options = |n: &str| Options::new(n).socket(dir.join("p0.sock")).no_spawn();
    let consumer = Domain::connect_with(&options("consumer")).expect("connect");
    let producer = Domain::connect_with(&options("producer")).expect("connect");
    let (c, p) = (consumer.id(), producer.id());
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut w = PipeWriter::open(producer, c).expect("open");
        w.set_chunk(size as u64);
        let data = vec![7u8; size];
        let mut left = total;
        while left > 0 {
            let n = left.min(size);
            w.write_all(&data[..n]).expect("write");
            left -= n;
        }
        w.finish().expect("finish");
    });
    let mut r = PipeReader::open(consumer, p, Window::default()).expect("open");
    let mut buf = vec![0u8; size];
    let mut got = 0;
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        got += n;
    }
    writer.join().expect("writer");
    assert_eq!(got, total);
    started.elapsed()
}

/// The same bytes as aggregates: the producer fills each (as a producer that makes its data in
/// place would, untimed work included), sends it; the consumer reads its first and last byte
/// and frees it.
fn aggregate_pass(dir: &std::path::Path, size: usize, total: usize) -> Duration {
    let options = |n: &str| Options::new(n).socket(dir.join("p0.sock")).no_spawn();
    let consumer = Domain::connect_with(&options("consumer")).expect("connect");
    let producer = Domain::connect_with(&options("producer")).expect("connect");
    let (c, p) = (consumer.id(), producer.id());
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut w = PipeWriter::open(producer, c).expect("open");
        let mut left = total;
        while left > 0 {
            let n = left.min(size);
            let d = w.domain();
            let x = d.alloc_unzeroed(n as u64).expect("alloc");
            for piece in d.write_pieces(x, 0).expect("pieces") {
                d.bytes_mut(&piece).expect("bytes")[0] = 7;
            }
            w.send(x).expect("send");
            left -= n;
        }
        w.finish().expect("finish");
    });
    let mut r = PipeReader::open(consumer, p, Window::default()).expect("open");
    let mut got = 0;
    while let Some(x) = r.recv(None).expect("recv") {
        let d = r.domain();
        for piece in d.read_pieces(x, 0).expect("pieces") {
            let b = d.bytes(&piece).expect("bytes");
            std::hint::black_box((b[0], b[b.len() - 1]));
            got += b.len();
        }
        d.decref(x).expect("decref");
    }
    writer.join().expect("writer");
    assert_eq!(got, total);
    started.elapsed()
}

fn linux_pass(size: usize, total: usize) -> Duration {
    let (mut rx, mut tx) = std::io::pipe().expect("pipe");
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let data = vec![7u8; size];
        let mut left = total;
        while left > 0 {
            let n = left.min(size);
            tx.write_all(&data[..n]).expect("write");
            left -= n;
        }
    });
    let mut buf = vec![0u8; size];
    let mut got = 0;
    loop {
        let n = rx.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        got += n;
    }
    writer.join().expect("writer");
    assert_eq!(got, total);
    started.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1 << 20);
    let total = args
        .get(2)
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(256)
        << 20;
    let dir = std::env::temp_dir().join(format!("cosh-pipe-bench-{}", std::process::id()));
    cosh_sys::runtime::ensure_runtime_dir(&dir).expect("dir");
    let mut config = cosh_blockmgr::Config::host_at(&dir);
    config.socket = dir.join("p0.sock");
    let manager = cosh_blockmgr::BlockManager::bind(config).expect("bind");
    std::thread::spawn(move || manager.run());
    let (mut bytes, mut aggs, mut linux) = (Vec::new(), Vec::new(), Vec::new());
    for pass in 0..6 {
        let b = cosh_pass(&dir, size, total);
        let a = aggregate_pass(&dir, size, total);
        let l = linux_pass(size, total);
        if pass > 0 {
            bytes.push(b);
            aggs.push(a);
            linux.push(l);
        }
    }
    let (b, a, l) = (median(bytes), median(aggs), median(linux));
    let gbps = |d: Duration| total as f64 / d.as_secs_f64() / 1e9;
    eprintln!(
        "{} MiB in writes of {size} bytes (medians of 5): Linux pipe {:.2} GB/s; Cosh pipe, \
         aggregates {:.2} GB/s ({:.2}x); Cosh pipe, Read/Write adapters {:.2} GB/s ({:.2}x)",
        total >> 20,
        gbps(l),
        gbps(a),
        l.as_secs_f64() / a.as_secs_f64(),
        gbps(b),
        l.as_secs_f64() / b.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
