//! Inline transfers: small transfers whose bytes the libraries copy on a direct ring. Every
//! mode and strength arrives whole with the rights Table 1 gives, in order with transfers
//! that went other ways; the receiver's bytes are its own (the sender's later writes never
//! reach them); the ledger and the counters follow; landings are reused, and so is the
//! sender's buffer after an inline move.

mod support;

use std::time::Duration;

use cosh::{Domain, ErrorKind, Mode, Rights, Strength, TransferFlags};
use support::Daemon;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The aggregates `d` holds, as its block manager counts them.
fn held(d: &mut Domain) -> u64 {
    let s = d.status().expect("status");
    let me = d.id().to_bits();
    s.domains
        .iter()
        .find(|x| x.domain == me)
        .map_or(0, |x| x.aggregates)
}

fn pair(daemon: &Daemon) -> (Domain, Domain) {
    let (a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    // The receiver trusts the sender: a direct ring opens.
    b.trust(a.id()).expect("trust");
    (a, b)
}

#[test]
fn every_mode_and_strength_travels_inline_with_its_rights() {
    let daemon = Daemon::start_with("inline-modes", &["--inline-max", "65536"]);
    let (mut a, mut b) = pair(&daemon);
    assert_eq!(a.small_transfer_policy().expect("policy").inline_max, 65536);
    let mut seed = 0u8;
    for (mode, flags) in [
        (Mode::Move, TransferFlags::strong()),
        (Mode::Share, TransferFlags::strong()),
        (Mode::Copy, TransferFlags::strong()),
        (Mode::Move, TransferFlags::weak()),
        (Mode::Share, TransferFlags::weak()),
    ] {
        for len in [1usize, 100, 4096, 5000, 65536] {
            seed = seed.wrapping_add(1);
            let data = pattern(len, seed);
            let x = a.alloc(len as u64).expect("alloc");
            a.write(x, 0, &data).expect("write");
            let before = a.status().expect("status").transfers;
            let report = a.transfer(x, b.id(), mode, flags).expect("transfer");
            assert_eq!(
                report.copied_bytes, len as u64,
                "{mode:?} {len}: {report:?}"
            );
            // The sender's aggregate keeps what the mode leaves it.
            let keeps = mode.sender_keeps(Rights::ReadWrite);
            assert_eq!(a.rights(x).expect("rights"), keeps, "{mode:?} {len}");
            // Its later writes (where it may still write) never reach the receiver.
            if keeps == Rights::ReadWrite {
                a.write(x, 0, &[0xEE]).expect("write after");
            }
            let got = b
                .receive(Some(a.id()), Some(Duration::from_secs(5)))
                .expect("receive");
            assert_eq!(got.mode, mode);
            let strength = if mode == Mode::Copy {
                Strength::Strong
            } else {
                flags.strength
            };
            assert_eq!(got.strength, strength);
            assert_eq!(b.len(got.agg).expect("len"), len as u64, "{mode:?} {len}");
            assert_eq!(b.read(got.agg, 0, len as u64).expect("read"), data);
            assert_eq!(b.rights(got.agg).expect("rights"), mode.receiver_gets());
            if mode == Mode::Share {
                let err = b
                    .write_pieces(got.agg, 0)
                    .expect_err("shared bytes are read-only");
                assert_eq!(err.kind(), ErrorKind::InsufficientRights);
            } else {
                b.write(got.agg, 0, &[1, 2, 3][..len.min(3)])
                    .expect("its own bytes");
            }
            let after = a.status().expect("status").transfers;
            assert_eq!(after.inline - before.inline, 1, "{mode:?} {len}");
            assert_eq!(after.inline_bytes - before.inline_bytes, len as u64);
            assert_eq!(
                after.copied_bytes, before.copied_bytes,
                "the block manager copied nothing"
            );
            b.decref(got.agg).expect("decref");
            a.decref(x).expect("decref");
        }
    }
    // Everything freed but the landings waiting for the next transfers.
    let (landings, senders) = (held(&mut b), held(&mut a));
    assert_eq!(senders, 0);
    assert!(
        landings <= 8 * 5,
        "a few landings per size wait: {landings}"
    );
}

#[test]
fn larger_transfers_and_other_ways_keep_their_order() {
    let daemon = Daemon::start_with("inline-order", &["--inline-max", "4096"]);
    let (mut a, mut b) = pair(&daemon);
    // Inline, through the block manager (too large), inline again, a piece of a buffer
    // (not one whole buffer: through the block manager), a weak move by reference.
    let sizes = [100u64, 100_000, 4096, 2048, 300_000];
    let mut sent = Vec::new();
    for (i, len) in sizes.into_iter().enumerate() {
        let data = pattern(len as usize, i as u8);
        let whole = a.alloc(len * if i == 3 { 2 } else { 1 }).expect("alloc");
        a.write(whole, 0, &data).expect("write");
        let x = if i == 3 {
            a.select(whole, 0, len).expect("select")
        } else {
            whole
        };
        let flags = if i == 4 {
            TransferFlags::weak()
        } else {
            TransferFlags::strong()
        };
        a.transfer(x, b.id(), Mode::Move, flags).expect("transfer");
        sent.push(data);
    }
    for (i, data) in sent.iter().enumerate() {
        let got = b
            .receive(Some(a.id()), Some(Duration::from_secs(5)))
            .expect("receive");
        assert_eq!(
            &b.read(got.agg, 0, data.len() as u64).expect("read"),
            data,
            "transfer {i} in its place"
        );
    }
    let t = a.status().expect("status").transfers;
    assert_eq!(t.inline, 2, "{t:?}");
}

#[test]
fn landings_are_reused_and_a_receiver_from_anyone_gets_them() {
    let daemon = Daemon::start_with("inline-reuse", &["--inline-max", "8192"]);
    let (mut a, mut b) = pair(&daemon);
    let c = daemon.connect("c");
    for round in 0..40u8 {
        let data = pattern(3000, round);
        let x = a.alloc(3000).expect("alloc");
        a.write(x, 0, &data).expect("write");
        a.transfer(x, b.id(), Mode::Move, TransferFlags::strong())
            .expect("move");
        a.decref(x).expect("decref");
        // From anyone: parks in the block manager, woken by the ring.
        let got = b
            .receive(None, Some(Duration::from_secs(5)))
            .expect("receive");
        assert_eq!(got.source, a.id());
        assert_eq!(b.read(got.agg, 0, 3000).expect("read"), data);
        b.decref(got.agg).expect("decref");
    }
    assert_eq!(b.status().expect("status").transfers.inline, 40);
    let held = held(&mut b);
    // One round trip made a few landings (8 of 4 KiB); one of them went round and round.
    assert!(
        held as usize <= 8 && held as usize == b.waiting_buffers(),
        "{held} held, {} waiting",
        b.waiting_buffers()
    );
    drop(c);
}

#[test]
fn landings_that_do_not_come_back_are_made_again_several_at_a_time() {
    let daemon = Daemon::start_with("inline-reserve", &["--inline-max", "65536"]);
    let (mut a, mut b) = pair(&daemon);
    let (a_id, b_id, len, rounds) = (a.id(), b.id(), 16384usize, 32u8);
    let (ready, waiting) = std::sync::mpsc::channel();
    // The receiver waits for each transfer (replacing its landings before it waits), and
    // frees each read-only landing a share leaves it: such a landing does not come back.
    let receiver = std::thread::spawn(move || {
        let mut dry = 0;
        for round in 0..rounds {
            ready.send(()).expect("ready");
            let got = b
                .receive(Some(a_id), Some(Duration::from_secs(5)))
                .expect("receive");
            assert_eq!(got.mode, Mode::Share);
            assert_eq!(
                b.read(got.agg, 0, len as u64).expect("read"),
                pattern(len, round)
            );
            b.decref(got.agg).expect("decref");
            if b.waiting_buffers() == 0 {
                dry += 1;
            }
        }
        dry
    });
    for round in 0..rounds {
        waiting.recv().expect("the receiver is about to wait");
        std::thread::sleep(Duration::from_millis(2));
        let x = a.alloc(len as u64).expect("alloc");
        a.write(x, 0, &pattern(len, round)).expect("write");
        let report = a
            .transfer(x, b_id, Mode::Share, TransferFlags::strong())
            .expect("share");
        assert_eq!(report.copied_bytes, len as u64, "{report:?}");
        a.decref(x).expect("decref");
    }
    let dry = receiver.join().expect("receiver");
    // Made again whole (8 of 16 KiB) whenever they run out, in one round trip: the
    // receiver runs dry about once in eight receives, not at every one.
    assert!(
        dry <= u32::from(rounds) / 8 + 1,
        "no landing left after {dry} of {rounds} receives"
    );
}

#[test]
fn without_trust_or_with_inline_off_transfers_go_through_the_block_manager() {
    let daemon = Daemon::start_with("inline-off", &["--inline-max", "0"]);
    let (mut a, mut b) = pair(&daemon);
    let x = a.alloc(4096).expect("alloc");
    a.transfer(x, b.id(), Mode::Move, TransferFlags::strong())
        .expect("move");
    b.receive(Some(a.id()), Some(Duration::from_secs(5)))
        .expect("receive");
    assert_eq!(a.status().expect("status").transfers.inline, 0);

    let daemon = Daemon::start_with("inline-untrusted", &["--inline-max", "65536"]);
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    let x = a.alloc(4096).expect("alloc");
    a.transfer(x, b.id(), Mode::Move, TransferFlags::strong())
        .expect("move");
    b.receive(Some(a.id()), Some(Duration::from_secs(5)))
        .expect("receive");
    assert_eq!(a.status().expect("status").transfers.inline, 0);
}

#[test]
fn the_block_manager_measures_its_policy_at_start() {
    let daemon = Daemon::start("inline-measured");
    let mut a = daemon.connect("a");
    let p = a.status().expect("status").small;
    assert!(!p.fixed);
    assert!(
        p.ring_ns_per_kib > 0 && p.handoff_ns > 0 && p.map_ns > 0,
        "{p:?}"
    );
    assert!(
        p.inline_max <= 1 << 20 && p.inline_max_weak <= 1 << 20,
        "{p:?}"
    );
}

#[test]
fn a_landing_passed_on_weakly_goes_by_reference_only_when_whole() {
    let daemon = Daemon::start_with("inline-onward", &["--inline-max", "65536"]);
    let (mut a, mut b) = pair(&daemon);
    let mut c = daemon.connect("c");
    c.trust(b.id()).expect("trust");
    for len in [3000usize, 4096] {
        let data = pattern(len, 9);
        let x = a.alloc(len as u64).expect("alloc");
        a.write(x, 0, &data).expect("write");
        a.transfer(x, b.id(), Mode::Move, TransferFlags::strong())
            .expect("move");
        let got = b
            .receive(Some(a.id()), Some(Duration::from_secs(5)))
            .expect("receive");
        // Onward, weakly, to a domain that trusts b: a landing fuller than its bytes (3000
        // of 4096) never goes on the direct ring by reference (the ledger would refuse it
        // and cut b off); the block manager's plan decides instead.
        b.transfer(got.agg, c.id(), Mode::Move, TransferFlags::weak())
            .expect("weak move onward");
        let onward = c
            .receive(Some(b.id()), Some(Duration::from_secs(5)))
            .expect("receive onward");
        assert_eq!(c.read(onward.agg, 0, len as u64).expect("read"), data);
    }
    // b is still connected: nothing it did was refused.
    b.status().expect("b still served");
}

#[test]
fn a_full_staging_area_sends_the_rest_through_the_block_manager_in_order() {
    let daemon = Daemon::start_with("inline-full", &["--inline-max", "1048576"]);
    let (mut a, mut b) = pair(&daemon);
    // 20 transfers of 600 KiB, none received yet: the 4 MiB staging area takes a few, the
    // others go through the block manager; the receiver gets all in order, and then the
    // area is used again from its beginning.
    let len = 600 * 1024;
    for round in 0..2u8 {
        for i in 0..20u8 {
            let x = a.alloc(len as u64).expect("alloc");
            a.write(x, 0, &pattern(len, i ^ round)).expect("write");
            a.transfer(x, b.id(), Mode::Copy, TransferFlags::strong())
                .expect("copy");
            a.decref(x).expect("decref");
        }
        for i in 0..20u8 {
            let got = b
                .receive(Some(a.id()), Some(Duration::from_secs(5)))
                .expect("receive");
            assert_eq!(
                b.read(got.agg, 0, len as u64).expect("read"),
                pattern(len, i ^ round),
                "round {round}, transfer {i}"
            );
            b.decref(got.agg).expect("decref");
        }
    }
    let t = a.status().expect("status").transfers;
    assert!(
        t.inline >= 2 * 5 && t.inline < 40,
        "some inline, some not: {t:?}"
    );
    assert_eq!(t.copies, 40);
}

#[test]
fn small_copies_and_allocations_come_from_waiting_buffers() {
    let daemon = Daemon::start("inline-alloc");
    let mut a = daemon.connect("a");
    let mut b = daemon.connect("b");
    b.trust(a.id()).expect("trust");
    for len in [1usize, 1000, 4096, 70_000] {
        let data = pattern(len, 3);
        let x = a.alloc_copy(&data).expect("copy").expect("not empty");
        assert_eq!(a.len(x).expect("len"), len as u64);
        assert_eq!(a.rights(x).expect("rights"), Rights::ReadWrite);
        assert_eq!(a.read(x, 0, len as u64).expect("read"), data);
        // A copy is an aggregate like any other: it travels, and its free keeps it waiting.
        a.transfer(x, b.id(), Mode::Copy, TransferFlags::strong())
            .expect("copy onward");
        let got = b
            .receive(Some(a.id()), Some(Duration::from_secs(5)))
            .expect("receive");
        assert_eq!(b.read(got.agg, 0, len as u64).expect("read"), data);
        a.decref(x).expect("decref");
    }
    assert_eq!(a.alloc_copy(&[]).expect("empty"), None);
    // Unzeroed allocations of powers of two come from waiting buffers too, whole.
    for _ in 0..20 {
        let x = a.alloc_unzeroed(16 * 1024).expect("alloc");
        assert_eq!(a.len(x).expect("len"), 16 * 1024);
        a.write(x, 0, &[7; 16 * 1024]).expect("write");
        a.transfer(x, b.id(), Mode::Move, TransferFlags::strong())
            .expect("move");
        a.decref(x).expect("decref");
        let got = b
            .receive(Some(a.id()), Some(Duration::from_secs(5)))
            .expect("receive");
        assert_eq!(b.read(got.agg, 16 * 1024 - 1, 1).expect("read"), [7]);
        b.decref(got.agg).expect("decref");
    }
    // What a holds is what waits; given back, nothing.
    assert_eq!(held(&mut a) as usize, a.waiting_buffers());
    a.release_waiting().expect("release");
    assert_eq!(held(&mut a), 0);
}

#[test]
fn a_buffer_moved_inline_waits_again_for_the_next_allocation() {
    let daemon = Daemon::start_with("inline-reclaim", &["--inline-max", "65536"]);
    let (mut a, mut b) = pair(&daemon);
    for round in 0..50u8 {
        let x = a.alloc_unzeroed(4096).expect("alloc");
        // The block manager agrees: read/write (after the first round, a reclaimed buffer).
        assert_eq!(a.rights(x).expect("rights"), Rights::ReadWrite, "{round}");
        let data = pattern(4096, round);
        a.write(x, 0, &data).expect("write");
        let report = a
            .transfer(x, b.id(), Mode::Move, TransferFlags::strong())
            .expect("move");
        assert_eq!(report.copied_bytes, 4096, "inline: {report:?}");
        assert_eq!(a.rights(x).expect("rights"), Rights::None);
        let waiting = a.waiting_buffers();
        a.decref(x).expect("decref");
        assert_eq!(
            a.waiting_buffers(),
            waiting + 1,
            "kept for the next allocation"
        );
        let got = b
            .receive(Some(a.id()), Some(Duration::from_secs(5)))
            .expect("receive");
        assert_eq!(b.read(got.agg, 0, 4096).expect("read"), data);
        b.decref(got.agg).expect("decref");
    }
    assert_eq!(held(&mut a) as usize, a.waiting_buffers());
    // With a relative holding the buffer too, the moved buffer is not kept.
    let x = a.alloc_unzeroed(4096).expect("alloc");
    let part = a.select(x, 0, 100).expect("select");
    a.transfer(x, b.id(), Mode::Move, TransferFlags::strong())
        .expect("move");
    let waiting = a.waiting_buffers();
    a.decref(x).expect("decref");
    assert_eq!(a.waiting_buffers(), waiting);
    a.decref(part).expect("decref");
    let got = b
        .receive(Some(a.id()), Some(Duration::from_secs(5)))
        .expect("receive");
    b.decref(got.agg).expect("decref");
    assert_eq!(held(&mut a) as usize, a.waiting_buffers());
}

#[test]
fn large_transfers_to_a_receiver_that_waits_are_copied_out_as_they_arrive_and_land_whole() {
    let daemon = Daemon::start_with("inline-streamed", &["--inline-max", "1048576"]);
    let (mut a, mut b) = pair(&daemon);
    let (from, to) = (a.id(), b.id());
    // Above 64 KiB, apart from each other (so not a stream): each is announced once its first
    // 64 KiB are in, and the receiver, waiting on the other thread, copies out behind the
    // sender as the ring's filled counter rises.
    let sizes = [65_537usize, 200_000, 1 << 20, 300_000, 1 << 20];
    let rx = std::thread::spawn(move || {
        for (i, len) in sizes.iter().enumerate() {
            let got = b
                .receive(Some(from), Some(Duration::from_secs(10)))
                .expect("receive");
            assert_eq!(got.mode, Mode::Move);
            assert_eq!(
                b.read(got.agg, 0, *len as u64).expect("read"),
                pattern(*len, i as u8),
                "transfer {i}"
            );
            b.decref(got.agg).expect("decref");
        }
        b
    });
    for (i, len) in sizes.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(5));
        let x = a.alloc(*len as u64).expect("alloc");
        a.write(x, 0, &pattern(*len, i as u8)).expect("write");
        let report = a
            .transfer(x, to, Mode::Move, TransferFlags::strong())
            .expect("move");
        assert_eq!(report.copied_bytes, *len as u64, "inline: {report:?}");
        a.decref(x).expect("decref");
    }
    let mut b = rx.join().expect("receiver");
    assert_eq!(
        a.status().expect("status").transfers.inline,
        sizes.len() as u64
    );
    b.status().expect("b still served");
}
