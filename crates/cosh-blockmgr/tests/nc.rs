//! A non-coherent pool (`coshd --kind nc`) end to end: programs run unchanged because the
//! library writes its cache back before every transfer and refreshes it after every receive;
//! a library that skipped either step would hand out stale bytes, and does in these tests.

mod support;

use std::time::Duration;

use cosh::{Agg, Domain, Mode, NcSkip, TransferFlags};
use support::Daemon;

const WAIT: Option<Duration> = Some(Duration::from_secs(5));
/// The library without its write-back.
const NO_FLUSH: NcSkip = NcSkip {
    flush: true,
    refresh: false,
};
/// The library without its refresh.
const NO_REFRESH: NcSkip = NcSkip {
    flush: false,
    refresh: true,
};

fn bytes(n: usize, round: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(7) ^ round | 1)
        .collect()
}

fn connect(daemon: &Daemon, name: &str, skip: NcSkip) -> Domain {
    let mut options = daemon.options(name);
    options.nc_skip = skip;
    Domain::connect_with(&options).expect("connects")
}

fn fill(d: &mut Domain, agg: Agg, data: &[u8]) {
    d.write(agg, 0, data).expect("write");
}

#[test]
fn every_mode_and_strength_delivers_the_bytes() {
    let daemon = Daemon::start_with("nc-modes", &["--kind", "nc"]);
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    assert!(!a.coherent() && !b.coherent());
    a.trust(b.id()).expect("trust");
    b.trust(a.id()).expect("trust");
    let len = 256 * 1024 + 100;
    let cases = [
        (Mode::Move, TransferFlags::strong()),
        (Mode::Copy, TransferFlags::strong()),
        (Mode::Share, TransferFlags::strong()),
        (Mode::Move, TransferFlags::weak()),
        (Mode::Share, TransferFlags::weak()),
    ];
    for (round, (mode, flags)) in cases.into_iter().enumerate() {
        let x = a.alloc(len).expect("alloc");
        let data = bytes(len as usize, round as u8);
        fill(&mut a, x, &data);
        a.transfer(x, b.id(), mode, flags).expect("transfer");
        let got = b.receive(Some(a.id()), WAIT).expect("receive");
        assert!(
            b.read(got.agg, 0, len).expect("read") == data,
            "{mode:?} {flags:?}: the bytes differ"
        );
        b.decref(got.agg).expect("free");
        a.decref(x).expect("free");
    }
    // A buffer bounced on a direct ring, changed on each side: each sees the other's bytes.
    let mut x = a.alloc(4096).expect("alloc");
    for round in 0..20u8 {
        let (from, to) = if round % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let data = bytes(4096, round);
        from.write(x, 0, &data).expect("write");
        from.transfer(x, to.id(), Mode::Move, TransferFlags::weak())
            .expect("move");
        from.decref(x).expect("drop the moved-away handle");
        x = to.receive(Some(from.id()), WAIT).expect("receive").agg;
        assert!(to.read(x, 0, 4096).expect("read") == data, "round {round}");
    }
}

#[test]
fn without_the_write_back_a_receiver_gets_what_memory_held() {
    let daemon = Daemon::start_with("nc-no-flush", &["--kind", "nc"]);
    let mut a = connect(&daemon, "a", NO_FLUSH);
    let mut b = daemon.connect("b");
    let data = bytes(8192, 1);
    for mode in [Mode::Copy, Mode::Share] {
        let x = a.alloc(8192).expect("alloc");
        fill(&mut a, x, &data);
        a.transfer(x, b.id(), mode, TransferFlags::strong())
            .expect("transfer");
        let got = b.receive(Some(a.id()), WAIT).expect("receive");
        let seen = b.read(got.agg, 0, 8192).expect("read");
        assert!(
            seen.iter().all(|v| *v == 0),
            "{mode:?}: A's writes never left its cache, yet B sees {} nonzero bytes",
            seen.iter().filter(|v| **v != 0).count()
        );
    }
    // The same on coherent memory: nothing to write back, the bytes arrive.
    let host = Daemon::start("nc-no-flush-host");
    let mut a = connect(
        &host,
        "a",
        NcSkip {
            flush: true,
            refresh: true,
        },
    );
    let mut b = host.connect("b");
    let x = a.alloc(8192).expect("alloc");
    fill(&mut a, x, &data);
    a.transfer(x, b.id(), Mode::Copy, TransferFlags::strong())
        .expect("transfer");
    let got = b.receive(Some(a.id()), WAIT).expect("receive");
    assert!(b.read(got.agg, 0, 8192).expect("read") == data);
}

#[test]
fn without_the_refresh_a_receiver_reads_its_old_copy() {
    let daemon = Daemon::start_with("nc-no-refresh", &["--kind", "nc"]);
    let mut a = daemon.connect("a");
    let mut b = connect(&daemon, "b", NO_REFRESH);
    a.trust(b.id()).expect("trust");
    b.trust(a.id()).expect("trust");
    let first = bytes(4096, 1);
    let x = a.alloc(4096).expect("alloc");
    fill(&mut a, x, &first);
    a.transfer(x, b.id(), Mode::Move, TransferFlags::weak())
        .expect("move");
    let y = b.receive(Some(a.id()), WAIT).expect("receive").agg;
    assert!(
        b.read(y, 0, 4096).expect("read") == first,
        "B caches the first bytes"
    );
    b.transfer(y, a.id(), Mode::Move, TransferFlags::weak())
        .expect("move back");
    let z = a.receive(Some(b.id()), WAIT).expect("receive").agg;
    let second = bytes(4096, 2);
    fill(&mut a, z, &second);
    a.transfer(z, b.id(), Mode::Move, TransferFlags::weak())
        .expect("move again");
    let w = b.receive(Some(a.id()), WAIT).expect("receive").agg;
    assert!(
        b.read(w, 0, 4096).expect("read") == first,
        "B's stale copy: the buffer changed in memory, B never reloaded it"
    );
}

#[test]
fn random_eviction_writes_some_lines_back_on_its_own() {
    // Every request evicts one random line of every cache: without the library's write-back,
    // some of A's lines reach memory anyway, and only some — as on hardware.
    let daemon = Daemon::start_with("nc-evict", &["--kind", "nc", "--nc-eviction", "1"]);
    let mut a = connect(&daemon, "a", NO_FLUSH);
    let mut b = daemon.connect("b");
    let x = a.alloc(4096).expect("alloc");
    let data = bytes(4096, 9);
    fill(&mut a, x, &data);
    for _ in 0..40 {
        a.info(x).expect("a request: a chance to evict");
    }
    a.transfer(x, b.id(), Mode::Copy, TransferFlags::strong())
        .expect("copy");
    let got = b.receive(Some(a.id()), WAIT).expect("receive");
    let seen = b.read(got.agg, 0, 4096).expect("read");
    let lines = |want: &dyn Fn(&[u8], &[u8]) -> bool| {
        seen.chunks(64)
            .zip(data.chunks(64))
            .filter(|(s, d)| want(s, d))
            .count()
    };
    let arrived = lines(&|s, d| s == d);
    let missing = lines(&|s, _| s.iter().all(|v| *v == 0));
    assert!(
        arrived > 0 && missing > 0 && arrived + missing == 64,
        "{arrived} lines evicted to memory, {missing} still only in A's cache"
    );
}
