//! Direct rings: weak transfers between trusting domains with the block manager off the path,
//! the ledger still exact, and cleanup still complete.

mod support;

use std::time::Duration;

use cosh::pattern::{stamp, verify};
use cosh::{Agg, Domain, ErrorKind, Mode, Rights, TransferFlags};
use support::Daemon;

/// Whether `agg` carries the stamp of `index`.
fn stamped(d: &mut Domain, agg: Agg, index: u64) -> bool {
    let head = d.read(agg, 0, 8).expect("read");
    verify(d, agg).expect("verify") && head == index.to_le_bytes()
}

const SIZE: u64 = 256 * 1024;

#[test]
fn weak_moves_ping_pong_on_direct_rings_and_the_ledger_follows() {
    let daemon = Daemon::start("direct-ping");
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    a.trust(b.id()).expect("trust");
    b.trust(a.id()).expect("trust");
    let x = a.alloc(SIZE).expect("alloc");
    stamp(&mut a, x, 1).expect("stamp");
    let before = a.status().expect("status").transfers;

    let (mut holder, mut agg) = (x, x);
    for round in 0..50u64 {
        let (from, to) = if round % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let report = from
            .transfer(agg, to.id(), Mode::Move, TransferFlags::weak())
            .expect("weak move");
        assert!(report.weak && report.copied_bytes == 0, "{report:?}");
        from.decref(holder).expect("the moved-away handle goes");
        let got = to
            .receive(Some(from.id()), Some(Duration::from_secs(5)))
            .expect("receive");
        assert_eq!(got.mode, Mode::Move);
        assert!(
            stamped(to, got.agg, round + 1),
            "the bytes the sender wrote"
        );
        stamp(to, got.agg, round + 2).expect("the receiver may write");
        holder = got.agg;
        agg = got.agg;
    }
    // 50 moves, 49 of them on the ring (the first opened it), all known to the ledger.
    let owner = &mut a; // round 49 went b -> a
    assert_eq!(owner.rights(agg).expect("rights"), Rights::ReadWrite);
    let after = owner.status().expect("status").transfers;
    assert_eq!(after.moves - before.moves, 50);
    assert_eq!(after.weak - before.weak, 50);
    assert_eq!(
        after.copied_bytes, before.copied_bytes,
        "nothing was copied"
    );
    let s = owner.status().expect("status");
    let aggregates: u64 = s.domains.iter().map(|d| d.aggregates).sum();
    assert_eq!(aggregates, 1, "every moved-away handle was freed: {s:?}");
    owner.decref(agg).expect("decref");
    assert_eq!(b.status().expect("status").buffers, 0, "all freed");
}

#[test]
fn shares_and_anything_else_keep_their_order_on_the_ring() {
    let daemon = Daemon::start("direct-order");
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    b.trust(a.id()).expect("trust");
    let mut sent = Vec::new();
    for i in 0..12u64 {
        // Whole buffers (direct), small ones (copied by the block manager), strong ones.
        let len = if i % 3 == 1 { 100 } else { SIZE };
        let x = a.alloc(len).expect("alloc");
        stamp(&mut a, x, i).expect("stamp");
        let (mode, flags) = match i % 4 {
            0 => (Mode::Move, TransferFlags::weak()),
            1 => (Mode::Share, TransferFlags::weak()),
            2 => (Mode::Share, TransferFlags::weak()),
            _ => (Mode::Copy, TransferFlags::strong()),
        };
        a.transfer(x, b.id(), mode, flags).expect("transfer");
        sent.push((i, len, mode));
    }
    for (i, len, mode) in sent {
        let got = b
            .receive(None, Some(Duration::from_secs(5)))
            .expect("receive");
        assert_eq!(got.source, a.id());
        assert_eq!(got.mode, mode, "transfer {i} arrives in order");
        assert_eq!(b.len(got.agg).expect("len"), len);
        assert!(stamped(&mut b, got.agg, i), "transfer {i} has its bytes");
        let rights = b.rights(got.agg).expect("rights");
        let expected = if mode == Mode::Share {
            Rights::Read
        } else {
            Rights::ReadWrite
        };
        assert_eq!(rights, expected, "transfer {i}");
        if mode == Mode::Share {
            let err = b.write(got.agg, 0, b"x").expect_err("shared: read-only");
            assert_eq!(err.kind(), ErrorKind::InsufficientRights, "{err}");
        }
    }
    assert_eq!(b.try_receive(None).expect("try"), None);
}

#[test]
fn a_dead_peer_closes_the_ring_and_its_transfers_stay() {
    let daemon = Daemon::start("direct-dead");
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    b.trust(a.id()).expect("trust");
    let x = a.alloc(SIZE).expect("alloc");
    a.write(x, 0, b"kept").expect("write");
    a.transfer(x, b.id(), Mode::Move, TransferFlags::weak())
        .expect("transfer");
    let y = a.alloc(SIZE).expect("alloc");
    a.write(y, 0, b"also").expect("write");
    a.transfer(y, b.id(), Mode::Move, TransferFlags::weak())
        .expect("transfer on the ring");
    let a_id = a.id();
    drop(a);
    // Both arrive, and stay readable after their sender is gone.
    for word in [b"kept", b"also"] {
        let got = b
            .receive(Some(a_id), Some(Duration::from_secs(5)))
            .expect("receive");
        assert_eq!(&b.read(got.agg, 0, 4).expect("read"), word);
        b.decref(got.agg).expect("decref");
    }
    let err = b
        .receive(Some(a_id), Some(Duration::from_secs(5)))
        .expect_err("nothing more");
    assert_eq!(err.kind(), ErrorKind::UnknownDomain, "{err}");

    // A receiver that dies: its sender's next transfer fails cleanly.
    let mut c = daemon.connect("c");
    let mut d = daemon.connect("d");
    d.trust(c.id()).expect("trust");
    let z = c.alloc(SIZE).expect("alloc");
    c.transfer(z, d.id(), Mode::Move, TransferFlags::weak())
        .expect("transfer");
    let d_id = d.id();
    drop(d);
    std::thread::sleep(Duration::from_millis(100));
    let w = c.alloc(SIZE).expect("alloc");
    let err = c
        .transfer(w, d_id, Mode::Move, TransferFlags::weak())
        .expect_err("the receiver is gone");
    assert_eq!(err.kind(), ErrorKind::UnknownDomain, "{err}");
    c.decref(z).expect("decref");
    c.decref(w).expect("decref");
    let s = c.status().expect("status");
    assert_eq!(s.buffers, 0, "{s:?}");
}
