//! Pipes between two domains (each its own connection, on its own thread): bytes and
//! aggregates arrive whole and in order, the window bounds what a stalled consumer lets the
//! producer put in flight, either end closing is seen by the other, and a pipe works across
//! pools.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::time::Duration;

use cosh::{Domain, Options, PoolId, Rights};
use cosh_blockmgr::{BlockManager, Config, LinkAddr};
use cosh_pipe::{Error, PipeReader, PipeWriter, Window};
use cosh_pool::PoolKind;

/// Block managers of pools 0.. in a private directory (linked to each other), on threads.
struct Pools {
    dir: PathBuf,
}

impl Pools {
    fn start(tag: &str, kinds: &[PoolKind]) -> Pools {
        let dir = std::env::temp_dir().join(format!("cosh-pipe-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        cosh_sys::runtime::ensure_runtime_dir(&dir).expect("dir");
        for (i, kind) in kinds.iter().enumerate() {
            let mut config = Config::host_at(&dir);
            config.socket = dir.join(format!("p{i}.sock"));
            config.pool = PoolId(i as u32);
            config.kind = *kind;
            for j in 0..kinds.len() {
                if j != i {
                    config.links.insert(
                        PoolId(j as u32),
                        LinkAddr::Unix(dir.join(format!("p{j}.sock"))),
                    );
                }
            }
            let manager = BlockManager::bind(config).expect("bind");
            std::thread::spawn(move || manager.run());
        }
        Pools { dir }
    }

    fn connect(&self, pool: usize, name: &str) -> Domain {
        Domain::connect_with(&options(&self.dir, pool, name)).expect("connect")
    }
}

fn options(dir: &Path, pool: usize, name: &str) -> Options {
    Options::new(name)
        .socket(dir.join(format!("p{pool}.sock")))
        .no_spawn()
}

impl Drop for Pools {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn host() -> PoolKind {
    PoolKind::Host
}

fn nc() -> PoolKind {
    PoolKind::Nc
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ (i >> 12) as u8)
        .collect()
}

/// Runs a producer on a thread of its own: `produce` gets its end.
fn producer(
    dir: &Path,
    pool: usize,
    consumer: cosh::DomainId,
    me: std::sync::mpsc::Sender<cosh::DomainId>,
    produce: impl FnOnce(PipeWriter) -> Result<(), Error> + Send + 'static,
) -> std::thread::JoinHandle<Result<(), Error>> {
    let options = options(dir, pool, "producer");
    std::thread::spawn(move || {
        let d = Domain::connect_with(&options)?;
        me.send(d.id()).ok();
        produce(PipeWriter::open(d, consumer)?)
    })
}

fn bytes_through(pools: &Pools, from: usize, to: usize) {
    let consumer = pools.connect(to, "consumer");
    let (tx, rx) = channel();
    let data = pattern(5 << 20);
    let sent = data.clone();
    let id = consumer.id();
    let p = producer(&pools.dir, from, id, tx, move |mut w| {
        w.set_chunk(256 << 10);
        // Uneven writes: the pipe coalesces them into chunks.
        for piece in sent.chunks(100_003) {
            w.write_all(piece)
                .map_err(|e| Error::Protocol(e.to_string()))?;
        }
        w.finish()?;
        Ok(())
    });
    let producer_id = rx.recv().expect("producer id");
    let mut reader = PipeReader::open(consumer, producer_id, Window::default()).expect("open");
    let mut got = Vec::new();
    reader.read_to_end(&mut got).expect("read");
    p.join().expect("producer thread").expect("producer");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the bytes arrived in order");
}

#[test]
fn bytes_written_arrive_whole_and_in_order() {
    let pools = Pools::start("bytes", &[host()]);
    bytes_through(&pools, 0, 0);
}

#[test]
fn a_pipe_works_across_pools() {
    let pools = Pools::start("pools", &[host(), nc()]);
    bytes_through(&pools, 0, 1);
    bytes_through(&pools, 1, 0);
}

#[test]
fn aggregates_move_and_the_window_bounds_a_stalled_consumer() {
    let pools = Pools::start("window", &[host()]);
    let consumer = pools.connect(0, "consumer");
    let (tx, rx) = channel();
    let (progress, sent) = channel();
    let p = producer(&pools.dir, 0, consumer.id(), tx, move |mut w| {
        for i in 0..10u8 {
            let d = w.domain();
            let x = d.alloc(64 << 10)?;
            d.write(x, 0, &[i; 16])?;
            w.send(x)?;
            // The handle went with the aggregate.
            assert!(w.domain().rights(x).is_err(), "moved away");
            progress.send(i).ok();
        }
        w.finish()?;
        Ok(())
    });
    let producer_id = rx.recv().expect("producer id");
    let window = Window {
        messages: 4,
        bytes: 1 << 30,
    };
    let mut reader = PipeReader::open(consumer, producer_id, window).expect("open");
    // The consumer reads nothing: the producer sends its window's worth and waits.
    let mut done = Vec::new();
    while let Ok(i) = sent.recv_timeout(Duration::from_millis(500)) {
        done.push(i);
    }
    assert_eq!(
        done,
        vec![0, 1, 2, 3],
        "four in flight, then the producer waits"
    );
    // Taking two returns half the window: two more go.
    for expect in 0..2u8 {
        let x = reader.recv(None).expect("recv").expect("a message");
        assert_eq!(
            reader.domain().read(x, 0, 16).expect("read"),
            vec![expect; 16]
        );
        assert_eq!(
            reader.domain().rights(x).expect("rights"),
            Rights::ReadWrite
        );
        reader.domain().decref(x).expect("decref");
    }
    let mut more = Vec::new();
    while let Ok(i) = sent.recv_timeout(Duration::from_millis(500)) {
        more.push(i);
    }
    assert_eq!(more, vec![4, 5], "credit for two came back");
    // The rest, in order, then the end.
    let mut expect = 2u8;
    while let Some(x) = reader.recv(None).expect("recv") {
        assert_eq!(
            reader.domain().read(x, 0, 16).expect("read"),
            vec![expect; 16]
        );
        reader.domain().decref(x).expect("decref");
        expect += 1;
    }
    assert_eq!(expect, 10);
    p.join().expect("producer thread").expect("producer");
}

#[test]
fn a_consumer_that_closes_stops_the_producer() {
    let pools = Pools::start("close", &[host()]);
    let consumer = pools.connect(0, "consumer");
    let (tx, rx) = channel();
    let p = producer(&pools.dir, 0, consumer.id(), tx, move |mut w| {
        let mut sent = 0u32;
        loop {
            let x = w.domain().alloc(4096)?;
            match w.send(x) {
                Ok(()) => sent += 1,
                Err(Error::Closed) => break,
                Err(e) => return Err(e),
            }
            if sent > 1000 {
                return Err(Error::Protocol("never stopped".into()));
            }
        }
        Ok(())
    });
    let producer_id = rx.recv().expect("producer id");
    let window = Window {
        messages: 2,
        bytes: 1 << 20,
    };
    let mut reader = PipeReader::open(consumer, producer_id, window).expect("open");
    let x = reader.recv(None).expect("recv").expect("one");
    reader.domain().decref(x).expect("decref");
    reader.close().expect("close");
    p.join()
        .expect("producer thread")
        .expect("the producer saw the pipe closed");
}

#[test]
fn a_multicast_pipe_shares_every_aggregate_with_every_consumer_in_order() {
    let pools = Pools::start("multicast", &[host()]);
    let consumers: Vec<Domain> = (0..3).map(|i| pools.connect(0, &format!("c{i}"))).collect();
    let ids: Vec<cosh::DomainId> = consumers.iter().map(Domain::id).collect();
    let producer = pools.connect(0, "producer");
    let producer_id = producer.id();
    let readers: Vec<_> = consumers
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            std::thread::spawn(move || -> Result<Vec<u8>, Error> {
                let window = Window {
                    messages: 2,
                    bytes: 1 << 20,
                };
                let mut r = PipeReader::open(d, producer_id, window)?;
                let mut firsts = Vec::new();
                while let Some(x) = r.recv(None)? {
                    let d = r.domain();
                    assert_eq!(d.rights(x)?, Rights::Read, "shared: read-only");
                    firsts.push(d.read(x, 0, 1)?[0]);
                    d.decref(x)?;
                    if i == 2 && firsts.len() == 3 {
                        // The third consumer leaves early; the others read on.
                        r.close()?;
                        return Ok(firsts);
                    }
                }
                Ok(firsts)
            })
        })
        .collect();
    let mut w = cosh_pipe::MulticastWriter::open(producer, &ids).expect("open");
    for i in 0..12u8 {
        let d = w.domain();
        let x = d.alloc(40_000).expect("alloc");
        d.write(x, 0, &[i]).expect("write");
        w.send(x).expect("send");
    }
    assert_eq!(w.consumers().len(), 2, "the one that left is gone");
    w.finish().expect("finish");
    let got: Vec<Vec<u8>> = readers
        .into_iter()
        .map(|t| t.join().expect("reader").expect("reads"))
        .collect();
    let all: Vec<u8> = (0..12).collect();
    assert_eq!(got[0], all);
    assert_eq!(got[1], all);
    assert_eq!(got[2], vec![0, 1, 2]);
}

#[test]
fn consecutive_pipes_between_the_same_domains_ignore_stale_credit() {
    let pools = Pools::start("again", &[host()]);
    let mut consumer = pools.connect(0, "consumer");
    let mut producer = pools.connect(0, "producer");
    let (c, p) = (consumer.id(), producer.id());
    // A small window, so that credit comes back in batches; both ends in one thread (the
    // consumer reads only once the producer is done, within the window).
    let window = Window {
        messages: 4,
        bytes: 1 << 20,
    };
    for round in 0..3u8 {
        let mut r = PipeReader::open(consumer, p, window).expect("open");
        let mut w = PipeWriter::open(producer, c).expect("open");
        for i in 0..3u8 {
            let d = w.domain();
            let x = d.alloc(1000).expect("alloc");
            d.write(x, 0, &[round * 10 + i]).expect("write");
            w.send(x).expect("send within the window");
        }
        producer = w.finish().expect("finish");
        for i in 0..3u8 {
            let x = r.recv(None).expect("recv").expect("a message");
            assert_eq!(
                r.domain().read(x, 0, 1).expect("read"),
                vec![round * 10 + i]
            );
            r.domain().decref(x).expect("decref");
        }
        assert!(r.recv(None).expect("recv").is_none(), "the end");
        consumer = r.close().expect("close");
    }
}
