//! Direct rings: weak transfers between trusting domains with the block manager off the path,
//! the ledger still exact, and cleanup still complete. (Inline transfers, off here, have
//! `tests/inline.rs`.)

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

/// A block manager that never inlines: these tests are about transfers by reference on the
/// rings (inline transfers have `tests/inline.rs`).
fn by_reference(tag: &str) -> Daemon {
    Daemon::start_with(tag, &["--inline-max", "0"])
}

#[test]
fn weak_moves_ping_pong_on_direct_rings_and_the_ledger_follows() {
    let daemon = by_reference("direct-ping");
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

/// Two domains bounce one buffer as fast as they can: each record to the block manager may
/// move an aggregate that the other's record, not yet applied, created.
#[test]
fn a_busy_ping_pong_between_threads_keeps_the_ledger_exact() {
    let daemon = by_reference("direct-busy");
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    a.trust(b.id()).expect("trust");
    b.trust(a.id()).expect("trust");
    a.set_spins(cosh::SPIN_FOREVER);
    b.set_spins(cosh::SPIN_FOREVER);
    let (a_id, b_id) = (a.id(), b.id());
    let rounds = 3000;
    let pong = std::thread::spawn(move || {
        let mut moved = Vec::new();
        for _ in 0..rounds {
            let got = b
                .receive(Some(a_id), Some(Duration::from_secs(10)))
                .expect("receive");
            b.transfer(got.agg, a_id, Mode::Move, TransferFlags::weak())
                .expect("move back");
            moved.push(got.agg);
        }
        for agg in moved {
            b.decref(agg).expect("decref");
        }
        b
    });
    let mut x = a.alloc(SIZE).expect("alloc");
    stamp(&mut a, x, 7).expect("stamp");
    let mut moved = Vec::new();
    for _ in 0..rounds {
        a.transfer(x, b_id, Mode::Move, TransferFlags::weak())
            .expect("move");
        moved.push(x);
        x = a
            .receive(Some(b_id), Some(Duration::from_secs(10)))
            .expect("receive")
            .agg;
    }
    let mut b = pong.join().expect("pong");
    assert!(stamped(&mut a, x, 7), "the bytes survived 6,000 moves");
    for agg in moved {
        a.decref(agg).expect("decref");
    }
    let s = a.status().expect("status");
    assert_eq!(s.domain_count, 2, "nobody was cut off: {s:?}");
    assert_eq!(s.transfers.moves, 2 * rounds as u64);
    let aggregates: u64 = s.domains.iter().map(|d| d.aggregates).sum();
    assert_eq!(aggregates, 1, "{s:?}");
    a.decref(x).expect("decref");
    assert_eq!(b.status().expect("status").buffers, 0);
}

#[test]
fn shares_and_anything_else_keep_their_order_on_the_ring() {
    let daemon = by_reference("direct-order");
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
    let daemon = by_reference("direct-dead");
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

mod attacks {
    //! Peers that break the direct-ring rules hurt only themselves and the domains that
    //! chose to trust them, and never the block manager.

    use std::os::fd::OwnedFd;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use cosh::{Domain, DomainId, ErrorKind, Mode, TransferFlags};
    use cosh_proto::ops::{Request, Response, WireMode};
    use cosh_proto::{Message, decode, encode};
    use cosh_ring::frames::push_frame;
    use cosh_ring::{Futex, Producer};
    use cosh_sys::mapping::{Mapping, Prefault, ReadWrite};
    use cosh_sys::memfd::Memfd;
    use cosh_sys::socket::SeqPacket;

    use super::by_reference;
    use super::support::Daemon;

    /// A client speaking the protocol by hand over its socket.
    struct Raw {
        sock: SeqPacket,
        id: DomainId,
        buf: Vec<u8>,
    }

    impl Raw {
        fn connect(daemon: &Daemon) -> Raw {
            let sock = SeqPacket::connect(&daemon.socket).expect("connect");
            let mut raw = Raw {
                sock,
                id: DomainId::from_bits(0),
                buf: vec![0; 70_000],
            };
            let hello = Message::Hello {
                min_version: 1,
                max_version: 1,
                name: "raw".into(),
            };
            match raw.send(&hello) {
                (Message::Welcome { domain, .. }, _) => raw.id = domain,
                (m, _) => panic!("{m:?}"),
            }
            raw
        }

        fn send(&mut self, m: &Message) -> (Message, Vec<OwnedFd>) {
            self.sock
                .send(&encode(m).expect("encode"), &[])
                .expect("send");
            self.next()
        }

        fn next(&mut self) -> (Message, Vec<OwnedFd>) {
            let got = self
                .sock
                .recv(&mut self.buf)
                .expect("recv")
                .expect("a frame");
            (decode(&self.buf[..got.len]).expect("decodes"), got.fds)
        }

        fn request(&mut self, r: Request) -> (Message, Vec<OwnedFd>) {
            self.send(&Message::Request(r))
        }

        /// Opens rings (so that direct rings are allowed) and returns their memory.
        fn open_rings(&mut self) -> Memfd {
            let (m, mut fds) = self.request(Request::OpenRings { capacity: 2048 });
            assert!(
                matches!(m, Message::Response(Response::RingsOpened { .. })),
                "{m:?}"
            );
            fds.truncate(1);
            Memfd::from_fd(fds.pop().expect("memfd")).expect("memfd")
        }
    }

    fn map(fd: OwnedFd) -> Mapping<ReadWrite> {
        Memfd::from_fd(fd)
            .expect("memfd")
            .map_write(Prefault::Now)
            .expect("map")
    }

    /// A sender speaking by hand that `victim` trusts, with a direct ring to it: the sender,
    /// its rings' memory, the direct ring mapped and its capacity.
    fn trusted_sender(
        daemon: &Daemon,
        victim: &mut Domain,
    ) -> (Raw, Memfd, Mapping<ReadWrite>, u32) {
        let mut raw = Raw::connect(daemon);
        let rings = raw.open_rings();
        victim.trust(raw.id).expect("trust");
        let (m, mut fds) = raw.request(Request::OpenDirect {
            to: victim.id().to_bits(),
        });
        let Message::Response(Response::DirectOpened { capacity, .. }) = m else {
            panic!("{m:?}");
        };
        (raw, rings, map(fds.pop().expect("the ring")), capacity)
    }

    #[test]
    fn a_sender_that_scribbles_on_its_ring_hurts_only_the_domain_that_trusts_it() {
        let daemon = by_reference("direct-attack-sender");
        let mut bystander = daemon.connect("bystander");
        let keep = bystander.alloc(4).expect("alloc");
        bystander.write(keep, 0, b"safe").expect("write");
        for attack in 0..3 {
            let mut victim = daemon.connect("victim");
            let (raw, _rings, mut ring, capacity) = trusted_sender(&daemon, &mut victim);
            {
                let words = ring.shared_words();
                let w = words
                    .atomic_u32s(0, cosh_ring::direct_words(capacity))
                    .expect("words");
                match attack {
                    // A head far past the tail.
                    0 => w[16].store(u32::MAX / 2, Ordering::SeqCst),
                    // A well-formed frame that is no record.
                    1 => {
                        let mut p = Producer::attach(w).expect("attach");
                        assert!(push_frame(&mut p, &[0xff; 40], &Futex).expect("push"));
                    }
                    // A record for an aggregate the block manager never heard of.
                    _ => {
                        let record = cosh_proto::ops::encode_record(
                            &cosh_proto::ops::DirectRecord::Transfer {
                                seq: 0,
                                agg: 1 << 40,
                                mode: WireMode::Move,
                                piece: cosh_proto::ops::WirePiece {
                                    buffer: 1,
                                    slot: 1,
                                    offset: 0,
                                    len: 4096,
                                },
                                mappers: cosh_proto::ops::Mappers::new(),
                            },
                        )
                        .expect("encode");
                        let mut p = Producer::attach(w).expect("attach");
                        assert!(push_frame(&mut p, &record, &Futex).expect("push"));
                    }
                }
            }
            let got = victim.receive(Some(raw.id), Some(Duration::from_secs(5)));
            match attack {
                0 | 1 => {
                    let err = got.expect_err("a corrupt ring");
                    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
                }
                _ => {
                    // The victim believes the sender; the block manager does not.
                    let fake = got.expect("the record reads").agg;
                    let err = victim.read(fake, 0, 4).expect_err("no such memory");
                    assert!(
                        matches!(err.kind(), ErrorKind::Fault | ErrorKind::UnknownAggregate),
                        "{err}"
                    );
                    // Its free goes without answer; the block manager drops it, and does
                    // not blame the victim for what it was told.
                    victim
                        .decref(fake)
                        .expect("a free of what the victim was told");
                    let err = victim.info(fake).expect_err("no such aggregate");
                    assert_eq!(err.kind(), ErrorKind::UnknownAggregate, "{err}");
                }
            }
            // The victim goes on working.
            let y = victim.alloc(16).expect("the victim still works");
            victim.decref(y).expect("decref");
        }
        assert_eq!(bystander.read(keep, 0, 4).expect("read"), b"safe");
    }

    #[test]
    fn a_streamed_transfer_waits_for_a_stopped_sender_and_fails_for_a_dead_one() {
        let daemon = by_reference("direct-streamed-stall");
        let mut victim = daemon.connect("victim");
        for dies in [false, true] {
            let (raw, _rings, mut ring, capacity) = trusted_sender(&daemon, &mut victim);
            // A streamed inline transfer of 128 KiB whose bytes have not come yet: the filled
            // counter stays where it was, as when its sender is stopped (or dead) mid-copy.
            let len = 128usize << 10;
            {
                let words = ring.shared_words();
                let w = words
                    .atomic_u32s(0, cosh_ring::direct_words(capacity))
                    .expect("words");
                let record =
                    cosh_proto::ops::encode_record(&cosh_proto::ops::DirectRecord::Inline {
                        seq: 0,
                        mode: WireMode::Move,
                        weak: true,
                        len: len as u64,
                        at: 0,
                        streamed: true,
                    })
                    .expect("encode");
                let mut p = Producer::attach(w).expect("attach");
                assert!(push_frame(&mut p, &record, &Futex).expect("push"));
            }
            let sender = raw.id;
            // The receive's timeout runs out, the record kept for the next receive.
            let asked = std::time::Instant::now();
            let err = victim
                .receive(Some(sender), Some(Duration::from_millis(300)))
                .expect_err("bytes still to come");
            assert_eq!(err.kind(), ErrorKind::NothingPending, "{err}");
            assert!(asked.elapsed() < Duration::from_secs(5));
            if dies {
                drop(raw);
                drop(ring);
                // Told the sender is gone, the receiver gives the transfer up with the ring.
                let asked = std::time::Instant::now();
                let err = victim
                    .receive(Some(sender), None)
                    .expect_err("a sender gone mid-transfer");
                assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
                assert!(err.to_string().contains("went away"), "{err}");
                assert!(asked.elapsed() < Duration::from_secs(5));
            } else {
                // Nothing is lost: once the bytes come, the next receive lands the transfer
                // whole.
                let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let at = cosh_ring::direct_staging_offset(capacity);
                ring.as_mut_slice()[at..at + len].copy_from_slice(&data);
                {
                    let words = ring.shared_words();
                    let w = words
                        .atomic_u32s(0, cosh_ring::direct_words(capacity))
                        .expect("words");
                    w[cosh_ring::direct_filled_word(capacity)].store(len as u32, Ordering::Release);
                }
                let got = victim
                    .receive(Some(raw.id), Some(Duration::from_secs(5)))
                    .expect("the transfer, whole");
                assert_eq!(victim.read(got.agg, 0, len as u64).expect("read"), data);
                victim.decref(got.agg).expect("decref");
            }
        }
        // The victim goes on working.
        let y = victim.alloc(16).expect("the victim still works");
        victim.decref(y).expect("decref");
    }

    #[test]
    fn a_lying_ledger_record_cuts_its_sender_off() {
        let daemon = by_reference("direct-attack-record");
        let mut victim = daemon.connect("victim");
        let mut raw = Raw::connect(&daemon);
        let rings = raw.open_rings();
        victim.trust(raw.id).expect("trust");
        let (m, _fds) = raw.request(Request::OpenDirect {
            to: victim.id().to_bits(),
        });
        let Message::Response(Response::DirectOpened { first, .. }) = m else {
            panic!("{m:?}");
        };
        // Claim a direct move of an aggregate it does not hold, then a real request.
        let mut map = rings.map_write(Prefault::Now).expect("map");
        let words = map.shared_words();
        let (request, _) = cosh_ring::split_pair(
            words
                .atomic_u32s(0, cosh_ring::pair_words(2048))
                .expect("words"),
            2048,
        )
        .expect("pair");
        let mut p = Producer::attach(request).expect("attach");
        for r in [
            Request::Direct {
                agg: 999_999,
                to: victim.id().to_bits(),
                mode: WireMode::Move,
                new: first,
            },
            Request::Status,
        ] {
            let bytes = encode(&Message::Request(r)).expect("encode");
            assert!(push_frame(&mut p, &bytes, &Futex).expect("push"));
        }
        // Whoever asks next makes the block manager apply the record: the liar is cut off.
        let s = victim.status().expect("status");
        assert_eq!(s.domain_count, 1, "{s:?}");
        let (m, _) = raw.next();
        assert!(
            matches!(
                m,
                Message::Error {
                    kind: ErrorKind::Protocol,
                    ..
                }
            ),
            "{m:?}"
        );
        // The victim is unharmed, and may still receive from others.
        let x = victim.alloc(64 * 1024).expect("alloc");
        victim.decref(x).expect("decref");
    }

    #[test]
    fn a_receiver_that_scribbles_over_the_ring_only_fails_the_sender_cleanly() {
        let daemon = by_reference("direct-attack-receiver");
        let mut sender = daemon.connect("sender");
        let mut raw = Raw::connect(&daemon);
        let _rings = raw.open_rings();
        // The raw receiver trusts the sender and parks in a receive.
        let (m, _) = raw.request(Request::Trust {
            peer: sender.id().to_bits(),
        });
        assert!(matches!(m, Message::Response(Response::Done)), "{m:?}");
        raw.sock
            .send(
                &encode(&Message::Request(Request::Receive {
                    source: None,
                    timeout_ms: Some(5000),
                }))
                .expect("encode"),
                &[],
            )
            .expect("send");
        let x = sender.alloc(64 * 1024).expect("alloc");
        sender
            .transfer(x, raw.id, Mode::Move, TransferFlags::weak())
            .expect("the first transfer opens the ring");
        // The notice, then `Woken`.
        let (m, _) = raw.next();
        assert!(
            matches!(m, Message::Response(Response::DirectInbound { .. })),
            "{m:?}"
        );
        let (m, _) = raw.next();
        assert!(matches!(m, Message::Response(Response::Woken)), "{m:?}");
        let (m, mut fds) = raw.request(Request::AttachDirect {
            from: sender.id().to_bits(),
        });
        assert!(
            matches!(m, Message::Response(Response::DirectAttached { .. })),
            "{m:?}"
        );
        let mut ring = map(fds.pop().expect("ring"));
        let words = ring.shared_words();
        // A tail ahead of the head.
        words
            .atomic_u32(32 * 4)
            .expect("tail")
            .store(u32::MAX / 3, Ordering::SeqCst);
        // The sender reads the tail again once the room it last saw runs out (within one
        // ring's worth of transfers): then the transfer fails, and only it.
        let mut failed = None;
        for _ in 0..2 * 1024 {
            let y = sender.alloc(4096).expect("alloc");
            match sender.transfer(y, raw.id, Mode::Move, TransferFlags::weak()) {
                Ok(_) => sender.decref(y).expect("decref"),
                Err(err) => {
                    failed = Some((y, err));
                    break;
                }
            }
        }
        let (y, err) = failed.expect("the corrupt tail is noticed");
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
        // The sender still works, and still holds what did not go.
        sender.write(y, 0, b"mine").expect("still its own");
        let z = sender.alloc(8).expect("alloc");
        sender.decref(z).expect("decref");
    }
}

/// Frees of whole-buffer aggregates travel as records without an answer, and whoever asks next
/// sees them done; a receiver reads a whole buffer it was told about.
#[test]
fn quiet_frees_are_seen_by_the_next_request_of_anyone() {
    let daemon = by_reference("direct-release");
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    let x = a.alloc(SIZE).expect("alloc");
    stamp(&mut a, x, 3).expect("stamp");
    a.transfer(x, b.id(), Mode::Copy, TransferFlags::strong())
        .expect("copy");
    let got = b
        .receive(Some(a.id()), Some(Duration::from_secs(5)))
        .expect("receive");
    assert!(stamped(&mut b, got.agg, 3), "the copy's bytes");
    b.decref(got.agg).expect("a free without an answer");
    let s = a.status().expect("status");
    assert_eq!(s.buffers, 1, "only the sender's buffer is left: {s:?}");
    a.decref(x).expect("free");
    let s = b.status().expect("status");
    assert_eq!(s.buffers, 0, "{s:?}");
    // A second free of the same handle is refused as before (it is not known any more).
    let err = b.decref(got.agg).expect_err("already freed");
    assert_eq!(err.kind(), ErrorKind::UnknownAggregate, "{err}");
    // What came on a direct ring is freed quietly too, and by nobody's word but the
    // receiver's: the block manager applies the sender's record first.
    a.trust(b.id()).expect("trust");
    b.trust(a.id()).expect("trust");
    let y = a.alloc(SIZE).expect("alloc");
    stamp(&mut a, y, 4).expect("stamp");
    let report = a
        .transfer(y, b.id(), Mode::Move, TransferFlags::weak())
        .expect("move");
    assert!(report.weak && report.referenced_bytes == SIZE, "{report:?}");
    let got = b
        .receive(Some(a.id()), Some(Duration::from_secs(5)))
        .expect("receive");
    assert!(stamped(&mut b, got.agg, 4), "the moved bytes");
    b.decref(got.agg).expect("a quiet free of a direct receive");
    a.decref(y).expect("the moved-away handle");
    let s = a.status().expect("status");
    assert_eq!((s.buffers, s.domain_count), (0, 2), "{s:?}");
    assert_eq!(s.transfers.by_descriptor, 1, "{s:?}");
}
