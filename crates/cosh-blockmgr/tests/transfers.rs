//! How each transfer is carried out, as DESIGN §3 says: strong shares seal (after revoking the
//! sender's mappings) and copy when the kernel refuses, or copy a buffer never shared when
//! that costs less (once: the next share seals), strong moves and copies copy into the
//! receiver's memory, weak transfers between trusting domains pass descriptors only; receives
//! block, time out, and learn of dead senders; names are found.

mod support;

use std::time::{Duration, Instant};

use cosh::{ErrorKind, Mode, Rights, TransferFlags};
use support::Daemon;

const MIB: u64 = 1024 * 1024;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn a_strong_share_seals_by_reference_and_revokes_the_senders_write_access() {
    let daemon = Daemon::start_with("share", &["--share-copy-max", "0"]);
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    let data = pattern(MIB as usize, 1);
    let x = a.alloc(MIB).expect("alloc");
    a.write(x, 0, &data).expect("write");
    let old = a.write_pieces(x, 0).expect("pieces")[0];
    let report = a
        .transfer(x, b.id(), Mode::Share, TransferFlags::strong())
        .expect("share");
    assert_eq!(report.referenced_bytes, MIB, "{report:?}");
    assert_eq!(report.copied_bytes, 0, "{report:?}");
    assert_eq!(report.sealed_buffers, 1, "{report:?}");
    assert!(!report.weak);
    // The sender's writable mapping is gone: a write through the old piece faults.
    let err = a.bytes_mut(&old).expect_err("no write mapping any more");
    assert_eq!(err.kind(), ErrorKind::Fault, "{err}");
    assert_eq!(a.rights(x).expect("rights"), Rights::Read);
    assert_eq!(a.read(x, 0, MIB).expect("sender still reads"), data);
    let got = b
        .receive(Some(a.id()), Some(Duration::from_secs(5)))
        .expect("receive");
    assert_eq!(b.read(got.agg, 0, MIB).expect("read"), data);
    let err = b
        .write_pieces(got.agg, 0)
        .expect_err("shared data is read-only");
    assert_eq!(err.kind(), ErrorKind::InsufficientRights);
    let s = b.status().expect("status");
    assert_eq!(s.transfers.by_seal, 1);
    assert_eq!(s.transfers.shares, 1);
}

#[test]
fn a_refused_seal_falls_back_to_a_copy_and_the_receiver_is_protected() {
    // Nothing inline: the weak share must go by reference, leaving A its mapping.
    let daemon = Daemon::start_with("refused", &["--inline-max", "0"]);
    let (mut a, mut b, mut c) = (
        daemon.connect("a"),
        daemon.connect("b"),
        daemon.connect("c"),
    );
    let data = pattern(MIB as usize, 2);
    let x = a.alloc(MIB).expect("alloc");
    a.write(x, 0, &data).expect("write");
    let stale = a.write_pieces(x, 0).expect("pieces")[0];
    // A weak share to a trusting domain leaves A its writable mapping...
    b.trust(a.id()).expect("trust");
    let report = a
        .transfer(x, b.id(), Mode::Share, TransferFlags::weak())
        .expect("weak share");
    assert!(
        report.weak && report.sealed_buffers == 0 && report.copied_bytes == 0,
        "{report:?}"
    );
    let got = b
        .receive(None, Some(Duration::from_secs(5)))
        .expect("receive");
    // ...so when B shares strongly onwards, the kernel refuses the seal and C gets a copy.
    let report = b
        .transfer(got.agg, c.id(), Mode::Share, TransferFlags::strong())
        .expect("strong share");
    assert_eq!(report.refused_seals, 1, "{report:?}");
    assert_eq!(report.copied_bytes, MIB, "{report:?}");
    let to_c = c
        .receive(None, Some(Duration::from_secs(5)))
        .expect("receive");
    // A scribbles through its stale mapping (it was trusted not to): C's data is unaffected.
    a.bytes_mut(&stale).expect("weak left A its mapping")[..4].copy_from_slice(b"EVIL");
    assert_eq!(c.read(to_c.agg, 0, MIB).expect("read"), data);
    assert_eq!(
        &b.read(got.agg, 0, 4).expect("read"),
        b"EVIL",
        "B trusted A"
    );
}

#[test]
fn strong_moves_and_copies_copy_and_recycled_memory_passes_no_descriptor() {
    let daemon = Daemon::start("move");
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    let data = pattern(MIB as usize, 3);
    let mut mapped = Vec::new();
    for round in 0..4 {
        let x = a.alloc(MIB).expect("alloc");
        a.write(x, 0, &data).expect("write");
        let mode = if round % 2 == 0 {
            Mode::Move
        } else {
            Mode::Copy
        };
        let report = a
            .transfer(x, b.id(), mode, TransferFlags::strong())
            .expect("transfer");
        assert_eq!(report.copied_bytes, MIB, "{report:?}");
        assert_eq!(report.referenced_bytes, 0, "{report:?}");
        let got = b
            .receive(None, Some(Duration::from_secs(5)))
            .expect("receive");
        assert_eq!(got.mode, mode);
        assert_eq!(b.rights(got.agg).expect("rights"), Rights::ReadWrite);
        assert_eq!(b.read(got.agg, 0, MIB).expect("read"), data);
        b.write(got.agg, 0, b"mine")
            .expect("the receiver owns its copy");
        b.decref(got.agg).expect("decref");
        a.decref(x).expect("decref");
        mapped.push((a.mapped_slots(), b.mapped_slots()));
    }
    // After the first round every buffer is recycled to the domain that already maps it.
    assert!(mapped.windows(2).all(|w| w[0] == w[1]), "{mapped:?}");
    let s = a.status().expect("status");
    assert_eq!(s.buffers, 0);
    assert!(s.free_buffers >= 2, "{s:?}");
}

#[test]
fn unzeroed_allocations_hold_only_the_domains_own_bytes() {
    let daemon = Daemon::start("unzeroed");
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    // Above the sizes a library serves from its own waiting buffers: the block manager's
    // free list.
    let len = 2 * MIB;
    let secret = pattern(len as usize, 9);
    let x = a.alloc(len).expect("alloc");
    a.write(x, 0, &secret).expect("write");
    a.decref(x).expect("free: the buffer goes to a's free list");
    // Another domain never gets a's bytes, zeroed or not.
    let y = b.alloc_unzeroed(len).expect("alloc");
    assert!(
        b.read(y, 0, len).expect("read").iter().all(|v| *v == 0),
        "b sees fresh memory"
    );
    // a gets its own buffer back as it left it; a zeroed allocation gets zeros.
    let z = a.alloc_unzeroed(len).expect("alloc");
    assert_eq!(a.read(z, 0, len).expect("read"), secret);
    a.write(z, 0, b"again").expect("write");
    a.decref(z).expect("free");
    let w = a.alloc(len).expect("alloc");
    assert!(a.read(w, 0, len).expect("read").iter().all(|v| *v == 0));
    // So do those served from a library's waiting buffers (up to 1 MiB).
    let x = a.alloc(MIB).expect("alloc");
    a.write(x, 0, &secret[..MIB as usize]).expect("write");
    a.decref(x).expect("free");
    let y = b.alloc_unzeroed(MIB).expect("alloc");
    assert!(
        b.read(y, 0, MIB).expect("read").iter().all(|v| *v == 0),
        "b sees fresh memory"
    );
    // Small ones come from a slab, fresh as ever.
    let small = a.alloc_unzeroed(100).expect("alloc");
    assert_eq!(a.read(small, 0, 100).expect("read"), vec![0; 100]);
}

#[test]
fn receives_block_time_out_and_learn_of_dead_senders() {
    let daemon = Daemon::start("receive");
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    let start = Instant::now();
    let err = b
        .receive(Some(a.id()), Some(Duration::from_millis(100)))
        .expect_err("nothing comes");
    assert_eq!(err.kind(), ErrorKind::NothingPending);
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(b.try_receive(None).expect("try"), None);

    let (a_id, b_id) = (a.id(), b.id());
    let waiter = std::thread::spawn(move || {
        let got = b.receive(Some(a_id), None).expect("woken by the transfer");
        let bytes = b.read(got.agg, 0, 5).expect("read");
        let err = b
            .receive(Some(a_id), None)
            .expect_err("the sender dies while we wait");
        (bytes, err)
    });
    std::thread::sleep(Duration::from_millis(50));
    let x = a.alloc(5).expect("alloc");
    a.write(x, 0, b"hello").expect("write");
    a.transfer(x, b_id, Mode::Move, TransferFlags::strong())
        .expect("transfer");
    std::thread::sleep(Duration::from_millis(50));
    drop(a);
    let (bytes, err) = waiter.join().expect("receiver thread");
    assert_eq!(bytes, b"hello");
    assert_eq!(err.kind(), ErrorKind::UnknownDomain, "{err}");
    assert!(err.to_string().contains("disconnected"), "{err}");
}

#[test]
fn tickets_name_transfers_and_names_find_domains() {
    let daemon = Daemon::start("names");
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    b.register("consumer").expect("register");
    let err = a.register("consumer").expect_err("taken");
    assert_eq!(err.kind(), ErrorKind::NameTaken);
    assert!(err.to_string().contains("consumer"), "{err}");
    let err = a.lookup("nobody").expect_err("unknown");
    assert_eq!(err.kind(), ErrorKind::UnknownName);
    let dest = a.lookup("consumer").expect("lookup");
    assert_eq!(dest, b.id());
    let x = a.alloc(3).expect("alloc");
    a.write(x, 0, b"abc").expect("write");
    let t1 = a
        .attach_transfer(x, dest, Mode::Copy, TransferFlags::strong())
        .expect("t1");
    let t2 = a
        .attach_transfer(x, dest, Mode::Share, TransferFlags::strong())
        .expect("t2");
    // Taken out of order, each by its ticket, once.
    let second = b.attach_recv(a.id(), t2, Some(Duration::ZERO)).expect("t2");
    assert_eq!(second.mode, Mode::Share);
    let first = b.attach_recv(a.id(), t1, Some(Duration::ZERO)).expect("t1");
    assert_eq!(first.mode, Mode::Copy);
    let err = b
        .attach_recv(a.id(), t1, Some(Duration::ZERO))
        .expect_err("replayed");
    assert_eq!(err.kind(), ErrorKind::TicketReused);
    let err = b
        .attach_recv(a.id(), cosh::Ticket(99), Some(Duration::from_millis(20)))
        .expect_err("forged");
    assert_eq!(err.kind(), ErrorKind::UnknownTicket);
    // The name goes with its domain.
    drop(b);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        a.lookup("consumer").expect_err("gone").kind(),
        ErrorKind::UnknownName
    );
}

#[test]
fn small_allocations_share_a_slab_and_leave_it_whole() {
    let daemon = Daemon::start("slabs");
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    let xs: Vec<_> = (0..100u8)
        .map(|i| {
            let x = a.alloc(100).expect("alloc");
            a.write(x, 0, &[i; 100]).expect("write");
            x
        })
        .collect();
    // 100 allocations of 100 bytes: one 64 KiB slab, one descriptor, one mapping.
    assert_eq!(a.mapped_slots(), 1);
    assert_eq!(a.status().expect("status").buffers, 1);
    for (i, x) in xs.iter().enumerate() {
        assert_eq!(a.read(*x, 0, 100).expect("read"), vec![i as u8; 100]);
    }
    // A transfer of one allocation copies it: the receiver never sees the neighbours.
    let report = a
        .transfer(xs[7], b.id(), Mode::Share, TransferFlags::weak())
        .expect("share");
    assert_eq!(report.copied_bytes, 100, "{report:?}");
    let got = b
        .receive(None, Some(Duration::from_secs(5)))
        .expect("receive");
    assert_eq!(b.read(got.agg, 0, 100).expect("read"), vec![7u8; 100]);
    let pieces = b.read_pieces(got.agg, 0).expect("pieces");
    let slab_slot = a.read_pieces(xs[0], 0).expect("pieces")[0].0.slot;
    assert_ne!(pieces[0].0.slot, slab_slot);
    // Fresh allocations are zero, even in a slab that held data.
    let fresh = a.alloc(200).expect("alloc");
    assert_eq!(a.read(fresh, 0, 200).expect("read"), vec![0u8; 200]);
    // The slab goes with its last allocation.
    for x in xs.iter().chain([&fresh]) {
        a.decref(*x).expect("decref");
    }
    b.decref(got.agg).expect("decref");
    assert_eq!(a.status().expect("status").buffers, 0);
}

#[test]
fn absurd_sizes_are_refused_before_anything_changes() {
    let daemon = Daemon::start("absurd");
    let (mut a, b) = (daemon.connect("a"), daemon.connect("b"));
    let err = a.alloc(1 << 40).expect_err("a terabyte");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    // Concatenation is free, so an aggregate can name far more bytes than exist; copying it
    // is refused at the sender, and nothing was committed.
    let mut x = a.alloc(1 << 20).expect("alloc");
    for _ in 0..12 {
        x = a.concat(x, x).expect("concat");
    }
    assert_eq!(a.len(x).expect("len"), 1 << 32);
    let err = a
        .transfer(x, b.id(), Mode::Copy, TransferFlags::strong())
        .expect_err("a 4 GiB copy");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert_eq!(a.rights(x).expect("rights"), Rights::ReadWrite);
    let s = a.status().expect("status");
    assert_eq!(s.transfers.copies, 0);
}

#[test]
fn a_full_pool_refuses_clearly_and_makes_room_from_recycled_memory() {
    // No quota per domain: the pool's own limit is what this test is about.
    let daemon = Daemon::start_with("full", &["--pool-mib", "4", "--domain-quota-mib", "0"]);
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    let x = a.alloc(3 * MIB).expect("3 MiB fit");
    let err = b.alloc(2 * MIB).expect_err("5 MiB do not");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("pool is full"), "{err}");
    // A copy that would not fit fails at the sender, before anything changes.
    let err = a
        .transfer(x, b.id(), Mode::Copy, TransferFlags::strong())
        .expect_err("no room for the copy");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(b.try_receive(None).expect("try"), None);
    // Freed memory waits in a's free list, but b's allocation may take its place.
    a.decref(x).expect("decref");
    let s = a.status().expect("status");
    assert_eq!((s.buffers, s.free_buffers), (0, 1), "{s:?}");
    let y = b.alloc(2 * MIB).expect("room was made");
    assert_eq!(b.read(y, 0, 16).expect("read"), vec![0u8; 16]);
    let s = b.status().expect("status");
    assert_eq!(s.free_buffers, 0, "{s:?}");
    assert!(s.pool_bytes <= 4 * MIB, "{s:?}");
}

#[test]
fn per_domain_limits_protect_the_block_manager() {
    let daemon = Daemon::start_with("limits", &["--max-pending", "3", "--max-aggregates", "10"]);
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    let x = a.alloc(100).expect("alloc");
    for _ in 0..3 {
        a.transfer(x, b.id(), Mode::Copy, TransferFlags::strong())
            .expect("room in b's queue");
    }
    let err = a
        .transfer(x, b.id(), Mode::Copy, TransferFlags::strong())
        .expect_err("b is not keeping up");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("not keeping up"), "{err}");
    b.receive(None, Some(Duration::ZERO)).expect("receive");
    a.transfer(x, b.id(), Mode::Copy, TransferFlags::strong())
        .expect("room again");
    // Aggregates: a holds 1, may make 9 more.
    let mut made = Vec::new();
    for _ in 0..9 {
        made.push(a.select(x, 0, 10).expect("select"));
    }
    let err = a.alloc(1).expect_err("too many aggregates");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    a.decref(made[0]).expect("decref");
    a.alloc(1).expect("room again");
    // Names.
    for i in 0..64 {
        a.register(&format!("name-{i}")).expect("register");
    }
    let err = a.register("one-too-many").expect_err("too many names");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    a.register("name-3")
        .expect("re-registering a held name is fine");
}

#[test]
fn a_strong_share_revokes_by_round_trip_when_the_sender_never_listed_its_slots() {
    let daemon = Daemon::start_with("revoke", &["--share-copy-max", "0"]);
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    let x = a.alloc(MIB).expect("alloc");
    // Iterating from offset 1 maps the buffer writable without listing the whole aggregate,
    // so the library cannot drop its mappings up front: the block manager asks it to.
    let stale = a.write_pieces(x, 1).expect("pieces")[0];
    a.bytes_mut(&stale).expect("mapped")[..3].copy_from_slice(b"abc");
    let report = a
        .transfer(x, b.id(), Mode::Share, TransferFlags::strong())
        .expect("share");
    assert_eq!(
        (report.sealed_buffers, report.copied_bytes),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(
        a.bytes_mut(&stale).expect_err("revoked").kind(),
        ErrorKind::Fault
    );
    let got = b
        .receive(None, Some(Duration::from_secs(5)))
        .expect("receive");
    assert_eq!(b.read(got.agg, 1, 3).expect("read"), b"abc");
}

#[test]
fn a_strong_share_of_a_buffer_never_shared_copies_once_then_seals() {
    let daemon = Daemon::start_with(
        "share-copy",
        &["--share-copy-max", "4194304", "--inline-max", "0"],
    );
    let (mut a, mut b, mut c) = (
        daemon.connect("a"),
        daemon.connect("b"),
        daemon.connect("c"),
    );
    let data = pattern(MIB as usize, 5);
    let x = a.alloc(MIB).expect("alloc");
    a.write(x, 0, &data).expect("write");
    let stale = a.write_pieces(x, 0).expect("pieces")[0];
    let report = a
        .transfer(x, b.id(), Mode::Share, TransferFlags::strong())
        .expect("share");
    assert_eq!(
        (
            report.copied_bytes,
            report.referenced_bytes,
            report.sealed_buffers
        ),
        (MIB, 0, 0),
        "{report:?}"
    );
    assert_eq!(a.rights(x).expect("rights"), Rights::Read);
    let got = b
        .receive(Some(a.id()), Some(Duration::from_secs(5)))
        .expect("receive");
    assert_eq!(b.rights(got.agg).expect("rights"), Rights::Read);
    let err = b
        .write_pieces(got.agg, 0)
        .expect_err("shared data is read-only");
    assert_eq!(err.kind(), ErrorKind::InsufficientRights);
    // The sender kept its mapping (nothing was sealed): scribbling through it, against its
    // rights, changes its own bytes only.
    a.bytes_mut(&stale).expect("still mapped")[..4].copy_from_slice(b"EVIL");
    assert_eq!(b.read(got.agg, 0, MIB).expect("read"), data);

    // The next strong share of the same buffer seals it, and the stale mapping goes.
    let report = a
        .transfer(x, c.id(), Mode::Share, TransferFlags::strong())
        .expect("share");
    assert_eq!(
        (
            report.copied_bytes,
            report.referenced_bytes,
            report.sealed_buffers
        ),
        (0, MIB, 1),
        "{report:?}"
    );
    assert_eq!(
        a.bytes_mut(&stale).expect_err("sealed").kind(),
        ErrorKind::Fault
    );
    let to_c = c
        .receive(Some(a.id()), Some(Duration::from_secs(5)))
        .expect("receive");
    assert_eq!(c.read(to_c.agg, 0, 4).expect("read"), b"EVIL");
    assert_eq!(b.read(got.agg, 0, MIB).expect("read"), data);
    let s = a.status().expect("status");
    assert_eq!((s.transfers.shares, s.transfers.by_seal), (2, 1));
    assert_eq!(s.small.share_copy_max, 4 * MIB);
    assert!(s.small.share_fixed);
}

#[test]
fn a_strong_share_that_cannot_afford_its_copy_seals_instead() {
    // The copy would take the sender past its quota: the block manager seals instead.
    let daemon = Daemon::start_with(
        "share-full",
        &[
            "--share-copy-max",
            "67108864",
            "--inline-max",
            "0",
            "--domain-quota-mib",
            "3",
        ],
    );
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    let data = pattern(2 * MIB as usize, 6);
    let x = a.alloc(2 * MIB).expect("alloc");
    a.write(x, 0, &data).expect("write");
    let report = a
        .transfer(x, b.id(), Mode::Share, TransferFlags::strong())
        .expect("share");
    assert_eq!(
        (report.copied_bytes, report.sealed_buffers),
        (0, 1),
        "{report:?}"
    );
    let got = b
        .receive(Some(a.id()), Some(Duration::from_secs(5)))
        .expect("receive");
    assert_eq!(b.read(got.agg, 0, 2 * MIB).expect("read"), data);
}

/// A small strong share is copied for the receiver, and the copy is sealed: it must not land
/// in a slot recycled from the receiver's own allocations, which the receiver still maps
/// writable (the seal would be refused, and the transfer used to fail).
#[test]
fn a_small_strong_share_to_a_domain_with_recycled_memory_is_sealed() {
    let daemon = Daemon::start("share-recycled");
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    for round in 0..4u8 {
        // b's own buffer, written (mapped writable) and freed: recycled into b's free list.
        let own = b.alloc(4096).expect("alloc");
        b.write(own, 0, &[round; 64]).expect("write");
        b.decref(own).expect("decref");
        let x = a.alloc(4096).expect("alloc");
        a.write(x, 0, b"shared").expect("write");
        let report = a
            .transfer(x, b.id(), Mode::Share, TransferFlags::strong())
            .expect("the share succeeds");
        assert_eq!(report.copied_bytes, 4096, "{report:?}");
        let got = b.receive(Some(a.id()), None).expect("receive");
        assert_eq!(b.read(got.agg, 0, 6).expect("read"), b"shared");
        assert_eq!(b.rights(got.agg).expect("rights"), Rights::Read);
        b.decref(got.agg).expect("decref");
        a.decref(x).expect("decref");
    }
}
