//! The shared-memory rings between clients and the block manager: on by default, answers
//! identical to the socket's, frames of every size, and clients that scribble over their
//! rings cut off without harm to anyone else.

mod support;

use std::time::Duration;

use cosh::{Domain, ErrorKind, Mode, TransferFlags};
use cosh_proto::ops::{Request, Response};
use cosh_proto::{Message, decode, encode};
use cosh_sys::mapping::Prefault;
use cosh_sys::memfd::Memfd;
use cosh_sys::socket::SeqPacket;
use support::Daemon;

/// A strong share from `a` to `b`, checked on both sides.
fn exchange(a: &mut Domain, b: &mut Domain) {
    let x = a.alloc(100_000).expect("alloc");
    a.write(x, 0, &[9; 100_000]).expect("write");
    a.transfer(x, b.id(), Mode::Share, TransferFlags::strong())
        .expect("share");
    let got = b
        .receive(None, Some(Duration::from_secs(5)))
        .expect("receive");
    assert_eq!(b.read(got.agg, 0, 100_000).expect("read"), vec![9; 100_000]);
    let err = b.write(got.agg, 0, b"x").expect_err("read-only");
    assert_eq!(err.kind(), ErrorKind::InsufficientRights);
    assert_eq!(a.read(x, 0, 3).expect("the sender reads"), vec![9; 3]);
}

#[test]
fn rings_and_the_socket_give_the_same_answers() {
    let daemon = Daemon::start("rings-same");
    let mut ringed = daemon.connect("ringed");
    let mut plain = Domain::connect_with(&daemon.options("plain").rings(false)).expect("connect");
    assert!(ringed.uses_rings());
    assert!(!plain.uses_rings());
    exchange(&mut ringed, &mut plain);
    exchange(&mut plain, &mut ringed);
}

#[test]
fn frames_of_every_size_cross_the_rings() {
    let daemon = Daemon::start("rings-big");
    let mut d = daemon.connect("fragmenter");
    assert!(d.uses_rings());
    // 3,000 pieces: iteration answers come in pages of ~40 KB frames, hundreds of records.
    let parts: Vec<_> = (0..3000u32)
        .map(|i| {
            let x = d.alloc(4096).expect("alloc");
            d.write(x, 0, &i.to_le_bytes()).expect("write");
            x
        })
        .collect();
    let mut all = d.select(parts[0], 0, 4).expect("select");
    for p in &parts[1..] {
        let four = d.select(*p, 0, 4).expect("select");
        all = d.concat(all, four).expect("concat");
    }
    let pieces = d.read_pieces(all, 0).expect("pieces");
    assert_eq!(pieces.len(), 3000);
    let bytes = d.read(all, 0, 12_000).expect("read");
    for (i, chunk) in bytes.chunks(4).enumerate() {
        assert_eq!(chunk, (i as u32).to_le_bytes());
    }
    let related = d
        .find_related(parts[0], cosh::Rights::None)
        .expect("related");
    assert!(!related.is_empty());
}

/// A raw client: hello and open rings over the socket; returns the socket, the rings'
/// memory and the doorbell.
fn raw_ringed_client(daemon: &Daemon) -> (SeqPacket, Memfd, cosh_sys::eventfd::EventFd) {
    let s = SeqPacket::connect(&daemon.socket).expect("connect");
    let mut buf = vec![0u8; 70_000];
    let hello = Message::Hello {
        min_version: 1,
        max_version: 1,
        name: "raw".into(),
    };
    s.send(&encode(&hello).expect("encode"), &[])
        .expect("hello");
    s.recv(&mut buf).expect("welcome").expect("a frame");
    let open = Message::Request(Request::OpenRings { capacity: 2048 });
    s.send(&encode(&open).expect("encode"), &[]).expect("open");
    let got = s.recv(&mut buf).expect("answer").expect("a frame");
    let m = decode(&buf[..got.len]).expect("decodes");
    assert!(
        matches!(m, Message::Response(Response::RingsOpened { .. })),
        "{m:?}"
    );
    let mut fds = got.fds.into_iter();
    let memfd = Memfd::from_fd(fds.next().expect("memfd")).expect("a buffer");
    let bell = cosh_sys::eventfd::EventFd::from_fd(fds.next().expect("eventfd")).expect("eventfd");
    (s, memfd, bell)
}

#[test]
fn a_client_that_scribbles_over_its_rings_is_cut_off_and_nobody_else_notices() {
    let daemon = Daemon::start("rings-scribble");
    let mut good = daemon.connect("good");
    let x = good.alloc(4).expect("alloc");
    good.write(x, 0, b"safe").expect("write");
    for scribble in [
        // head claims far more records than the ring holds
        vec![(16usize, u32::MAX / 2)],
        // a frame head announcing a huge frame, then published
        vec![(80, u32::MAX), (16, 1)],
        // the header itself (read once, at attach: ignored since), then an empty frame
        vec![(0, 0xdead_beef), (16, 1)],
    ] {
        let (s, memfd, bell) = raw_ringed_client(&daemon);
        let mut map = memfd.map_write(Prefault::Now).expect("map");
        let words = map.shared_words();
        for (at, value) in &scribble {
            words
                .atomic_u32(at * 4)
                .expect("word")
                .store(*value, std::sync::atomic::Ordering::SeqCst);
        }
        bell.ring().expect("ring");
        let mut buf = vec![0u8; 70_000];
        s.set_nonblocking(false).expect("blocking");
        let answer = s.recv(&mut buf).expect("an answer or the end");
        if let Some(got) = answer {
            let m = decode(&buf[..got.len]).expect("a valid frame");
            assert!(
                matches!(
                    m,
                    Message::Error {
                        kind: ErrorKind::Protocol,
                        ..
                    }
                ),
                "{scribble:?}: {m:?}"
            );
            assert!(s.recv(&mut buf).expect("eof").is_none(), "{scribble:?}");
        }
    }
    assert_eq!(good.read(x, 0, 4).expect("read"), b"safe");
    assert_eq!(good.status().expect("status").domain_count, 1);
}

#[test]
fn a_busy_polling_receive_gets_its_transfer_times_out_and_notices_a_dead_block_manager() {
    let mut daemon = Daemon::start("rings-poll");
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    let b_id = b.id();
    let a_id = a.id();
    let poller = std::thread::spawn(move || {
        let got = b
            .receive_with(
                Some(a_id),
                Some(Duration::from_secs(10)),
                cosh::SPIN_FOREVER,
            )
            .expect("polled");
        let err = b
            .receive_with(
                Some(a_id),
                Some(Duration::from_millis(50)),
                cosh::SPIN_FOREVER,
            )
            .expect_err("nothing more");
        (b, got, err)
    });
    std::thread::sleep(Duration::from_millis(20));
    let x = a.alloc(10).expect("alloc");
    a.transfer(x, b_id, Mode::Copy, TransferFlags::strong())
        .expect("copy");
    let (mut b, got, err) = poller.join().expect("poller");
    assert_eq!(got.mode, Mode::Copy);
    assert_eq!(err.kind(), ErrorKind::NothingPending, "{err}");
    b.set_spins(cosh::SPIN_FOREVER);
    let waiter = std::thread::spawn(move || b.receive(None, None));
    std::thread::sleep(Duration::from_millis(50));
    daemon.child.kill().expect("kill");
    daemon.child.wait().expect("reaped");
    let err = waiter
        .join()
        .expect("waiter")
        .expect_err("the block manager died");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[test]
fn a_spinning_block_manager_serves_the_same() {
    let daemon = Daemon::start_with("rings-spin", &["--spin-us", "200"]);
    let mut a = daemon.connect("a");
    let mut b = daemon.connect("b");
    exchange(&mut a, &mut b);
    exchange(&mut b, &mut a);
}

/// Thousands of forget notices for a client parked in a receive never crowd its answer out
/// of the answer ring: notices wait for room, answers do not. Heavy (15,000 weak shares, and
/// as many descriptors in the block manager, under the 20,000 a process may hold), so it runs
/// only with `COSH_TEST_SCALE` ≥ 2.
#[test]
fn forget_notices_never_crowd_out_an_answer() {
    if support::scale() < 2 {
        eprintln!("skipped: set COSH_TEST_SCALE=2 or more");
        return;
    }
    let daemon = Daemon::start("rings-forget");
    let (mut a, mut b) = (daemon.connect("a"), daemon.connect("b"));
    b.trust(a.id()).expect("trust");
    let n = 15_000;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let x = a.alloc(8192).expect("alloc");
        a.transfer(x, b.id(), Mode::Share, TransferFlags::weak())
            .expect("weak share");
        let got = b
            .receive(None, Some(Duration::from_secs(5)))
            .expect("receive");
        b.read_pieces(got.agg, 0).expect("map it");
        b.decref(got.agg).expect("decref");
        held.push(x);
    }
    assert!(b.mapped_slots() >= n);
    let a_id = a.id();
    let b_id = b.id();
    let waiter = std::thread::spawn(move || {
        let got = b.receive(Some(a_id), Some(Duration::from_secs(30)));
        (b, got)
    });
    std::thread::sleep(Duration::from_millis(100));
    for x in held {
        a.decref(x).expect("decref"); // each destroys a slot b mapped: a forget for b
    }
    let last = a.alloc(10).expect("alloc");
    a.transfer(last, b_id, Mode::Copy, TransferFlags::strong())
        .expect("copy");
    let (mut b, got) = waiter.join().expect("waiter");
    got.expect("the answer got through");
    b.status().expect("the deferred notices follow");
    b.status().expect("and the next");
    assert!(b.mapped_slots() < 100, "{} mappings left", b.mapped_slots());
}
