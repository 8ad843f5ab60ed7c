//! Transfers between pools: block managers linked to each other carry transfers between their
//! domains, and a program cannot tell (invariant 5). The corpus runs with every domain in a
//! pool of its own and with the pools its scenarios name; then the edges: many pieces and
//! slots in one transfer, tickets, a receiver that does not exist, a pool without a link, and
//! a destination that dies mid-transfer, with nothing leaked at the source.

mod support;

use std::time::{Duration, Instant};

use cosh::{Domain, Options};
use cosh_core::{DomainId, ErrorKind, Mode, PoolId, Rights, TransferFlags};
use cosh_scenario::Layout;
use support::{Daemon, Linked, assert_corpus_passes_in};

#[test]
fn the_corpus_passes_with_every_domain_in_a_pool_of_its_own() {
    let pools = Linked::start("links-corpus", &["host", "nc", "host"], &[]);
    assert_corpus_passes_in(Layout::PoolPerDomain, || pools.connections());
    assert_corpus_passes_in(Layout::AsWritten, || pools.connections());
}

#[test]
fn the_corpus_passes_across_pools_with_random_eviction() {
    let pools = Linked::start(
        "links-evict",
        &["nc", "nc", "host"],
        &["--nc-eviction", "3"],
    );
    assert_corpus_passes_in(Layout::PoolPerDomain, || pools.connections());
}

fn fill(d: &mut Domain, agg: cosh::Agg, seed: u8) {
    let len = d.len(agg).expect("len");
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    d.write(agg, 0, &data).expect("write");
}

#[test]
fn a_transfer_of_many_pieces_and_slots_arrives_whole_with_its_ticket() {
    let pools = Linked::start("links-pieces", &["host", "host"], &[]);
    let mut a = pools.daemons[0].connect("a");
    let mut b = pools.daemons[1].connect("b");
    // 40 buffers (more slots than one message may carry), each cut in 30 pieces of 1 KiB
    // concatenated in an interleaved order (more pieces than one part holds).
    let mut parts = Vec::new();
    for i in 0..40u8 {
        let x = a.alloc(64 * 1024).expect("alloc");
        fill(&mut a, x, i);
        parts.push(x);
    }
    let mut whole = None;
    let mut expect = Vec::new();
    for j in 0..30u64 {
        for (i, x) in parts.iter().enumerate() {
            let piece = a.select(*x, j * 2048, 1024).expect("select");
            expect.extend(a.read(piece, 0, 1024).expect("read"));
            whole = Some(match whole {
                None => piece,
                Some(w) => a.concat(w, piece).expect("concat"),
            });
            let _ = i;
        }
    }
    let whole = whole.expect("pieces");
    assert_eq!(a.len(whole).expect("len"), 1200 * 1024);
    let ticket = a
        .attach_transfer(whole, b.id(), Mode::Copy, TransferFlags::default())
        .expect("a ticketed copy to pool 1");
    let got = b
        .attach_recv(a.id(), ticket, Some(Duration::from_secs(10)))
        .expect("attach_recv");
    assert_eq!(got.source, a.id());
    assert_eq!(b.rights(got.agg).expect("rights"), Rights::ReadWrite);
    assert!(
        b.read(got.agg, 0, 1200 * 1024).expect("read") == expect,
        "the bytes arrived in order"
    );
    // Again: the destination maps the slots once, and a second transfer of them still arrives.
    let ticket = a
        .attach_transfer(whole, b.id(), Mode::Share, TransferFlags::default())
        .expect("a ticketed share");
    let got = b
        .attach_recv(a.id(), ticket, Some(Duration::from_secs(10)))
        .expect("attach_recv");
    assert_eq!(b.rights(got.agg).expect("rights"), Rights::Read);
    assert_eq!(a.rights(whole).expect("rights"), Rights::Read);
    assert!(b.read(got.agg, 0, 1200 * 1024).expect("read") == expect);
}

#[test]
fn a_missing_receiver_and_a_missing_link_fail_clearly_and_leak_nothing() {
    let pools = Linked::start("links-missing", &["host", "host"], &[]);
    let mut a = pools.daemons[0].connect("a");
    let x = a.alloc(8192).expect("alloc");
    let nobody = DomainId {
        pool: PoolId(1),
        index: 999,
    };
    let e = a
        .transfer(x, nobody, Mode::Copy, TransferFlags::default())
        .expect_err("no such receiver");
    assert_eq!(e.kind(), ErrorKind::UnknownDomain, "{e}");
    assert!(e.to_string().contains("p1.d999"), "{e}");
    let nowhere = DomainId {
        pool: PoolId(7),
        index: 1,
    };
    let e = a
        .transfer(x, nowhere, Mode::Copy, TransferFlags::default())
        .expect_err("no link");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("--link 7="), "{e}");
    // A copy leaves the sender its rights; the holds are gone: only x is in use.
    assert_eq!(a.rights(x).expect("rights"), Rights::ReadWrite);
    let status = a.status().expect("status");
    assert_eq!(status.bytes_in_use, 8192, "{status:?}");
    a.decref(x).expect("decref");
    let status = a.status().expect("status");
    assert_eq!((status.bytes_in_use, status.buffers), (0, 0), "{status:?}");
}

#[test]
fn a_destination_that_dies_mid_transfer_fails_the_sender_and_leaks_nothing() {
    let pools = Linked::start("links-death", &["host", "host"], &[]);
    let mut a = pools.daemons[0].connect("a");
    let b = pools.daemons[1].connect("b");
    let x = a.alloc(1 << 20).expect("alloc");
    // The destination stops answering, then dies while the transfer waits for it.
    let pid = rustix::process::Pid::from_child(&pools.daemons[1].child);
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).expect("SIGSTOP");
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("SIGKILL");
    });
    let started = Instant::now();
    let e = a
        .transfer(x, b.id(), Mode::Move, TransferFlags::default())
        .expect_err("the destination died");
    killer.join().expect("killer");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it waited for the destination"
    );
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("pool p1"), "{e}");
    // The move did not happen: the sender keeps its rights; the hold is gone with the link.
    assert_eq!(a.rights(x).expect("rights"), Rights::ReadWrite);
    a.decref(x).expect("decref");
    let status = a.status().expect("status");
    assert_eq!((status.bytes_in_use, status.buffers), (0, 0), "{status:?}");
    // The sender's block manager serves on; the next transfer to the dead pool fails at once.
    let y = a.alloc(10).expect("alloc");
    let e = a
        .transfer(y, b.id(), Mode::Copy, TransferFlags::default())
        .expect_err("nobody there");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    drop(b);
}

#[test]
fn a_link_that_claims_the_block_managers_own_pool_is_refused() {
    // A block manager refuses a link that claims its own pool.
    let d = Daemon::start("links-self");
    let sock = cosh_sys::socket::SeqPacket::connect(&d.socket).expect("connect");
    let open = cosh_proto::Message::Link(cosh_proto::link::LinkMessage::Open {
        pool: 0,
        min_version: 1,
        max_version: 1,
    });
    sock.send(&cosh_proto::encode(&open).expect("encode"), &[])
        .expect("send");
    let mut buf = vec![0; cosh_proto::MAX_FRAME];
    let m = sock.recv(&mut buf).expect("recv").expect("an answer");
    let answer = cosh_proto::decode(&buf[..m.len]).expect("decodes");
    assert!(
        matches!(&answer, cosh_proto::Message::Refused { reason } if reason.contains("own")),
        "{answer:?}"
    );
    // And the block manager serves on.
    let mut c = Domain::connect_with(&Options::new("after").socket(&d.socket).no_spawn())
        .expect("connects");
    c.alloc(1).expect("alloc");
}

#[test]
fn a_device_pool_behind_a_dma_model_pipelines_weak_transfers_and_paces_strong_ones() {
    // Copies into either pool: 50 ms of set-up, then 100 MB/s (an emulation).
    let pools = Linked::start(
        "links-dma",
        &["host", "device"],
        &["--dma-setup-us", "50000", "--dma-mbps", "100"],
    );
    let mut a = pools.daemons[0].connect("a");
    let mut b = pools.daemons[1].connect("b");
    assert_eq!(b.pool_kind(), cosh_pool::PoolKind::Device);
    let len = 100_000u64;
    // A strong copy waits for its copy: set-up plus a millisecond of transfer at least.
    let x = a.alloc(len).expect("alloc");
    fill(&mut a, x, 7);
    let started = Instant::now();
    a.transfer(x, b.id(), Mode::Copy, TransferFlags::default())
        .expect("copy to the device");
    assert!(
        started.elapsed() >= Duration::from_millis(51),
        "{:?}",
        started.elapsed()
    );
    let got = b
        .receive(Some(a.id()), Some(Duration::ZERO))
        .expect("there at once");
    assert!(b.read(got.agg, 0, len).expect("read") == a.read(x, 0, len).expect("read"));
    // Weak moves are answered when the device accepts them: the sender goes on while the
    // engine copies (the copies take 55 ms and more by the model).
    let weak = TransferFlags {
        strength: cosh_core::Strength::Weak,
        ..TransferFlags::default()
    };
    let mut sent = Vec::new();
    for i in 0..5u8 {
        let y = a.alloc(len).expect("alloc");
        fill(&mut a, y, i);
        sent.push(a.read(y, 0, len).expect("read"));
        a.transfer(y, b.id(), Mode::Move, weak).expect("weak move");
        assert_eq!(a.rights(y).expect("rights"), Rights::None);
    }
    let status = b.status().expect("status");
    let incoming: u64 = status
        .links
        .iter()
        .filter(|l| !l.outgoing)
        .map(|l| l.in_flight)
        .sum();
    assert!(
        incoming >= 1,
        "copies still in flight after the sender returned: {status:?}"
    );
    let dma = status.dma.expect("the model is reported");
    assert_eq!((dma.setup_us, dma.bytes_per_second), (50_000, 100_000_000));
    // A receive that does not wait still sees each transfer its sender finished, in order.
    for (i, bytes) in sent.iter().enumerate() {
        let got = b
            .receive(Some(a.id()), Some(Duration::ZERO))
            .unwrap_or_else(|e| panic!("transfer {i}: {e}"));
        assert_eq!(got.mode, Mode::Move);
        assert!(
            &b.read(got.agg, 0, len).expect("read") == bytes,
            "transfer {i}"
        );
    }
    let status = b.status().expect("status");
    assert_eq!(status.transfers.imported, 6, "{status:?}");
}
