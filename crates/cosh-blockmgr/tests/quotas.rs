//! Quotas and limits: a domain past its quota of live bytes or buffers, a sender flooding a
//! receiver that never receives, a user opening too many connections, a block manager near
//! its descriptor limit — each is told so with a clear error, nobody else is held back, and
//! everything works again once the culprit lets go. (The limit on mappings has a test binary
//! of its own, `map_limit.rs`: it fills the whole process's mappings.)

mod support;

use cosh::{Domain, ErrorKind, Mode, TransferFlags};
use support::{Daemon, coshd, scratch_dir};

const MIB: u64 = 1 << 20;

fn strong() -> TransferFlags {
    TransferFlags::strong()
}

#[test]
fn a_domain_past_its_quota_of_bytes_or_buffers_is_told_and_others_are_not_held_back() {
    let daemon = Daemon::start_with(
        "quota-bytes",
        &["--domain-quota-mib", "4", "--domain-quota-buffers", "6"],
    );
    let mut a = daemon.connect("a");
    let mut b = daemon.connect("b");
    let held: Vec<_> = (0..4)
        .map(|_| a.alloc(MIB).expect("within quota"))
        .collect();
    let err = a.alloc(MIB).expect_err("past 4 MiB");
    assert_eq!(err.kind(), ErrorKind::OverQuota, "{err}");
    let text = err.to_string();
    assert!(text.contains("quota") && text.contains("4194304"), "{text}");
    // Another domain is not held back by it.
    let other = b.alloc(MIB).expect("another domain's own quota");
    let status = b.status().expect("status");
    let mine = status
        .domains
        .iter()
        .find(|d| d.domain == a.id().to_bits())
        .expect("a in status");
    assert_eq!((mine.quota_bytes, mine.quota_buffers), (4 * MIB, 4));
    assert_eq!(status.limits.domain_bytes, 4 * MIB);
    // Freeing one makes room again.
    a.decref(held[0]).expect("decref");
    let again = a.alloc(MIB).expect("room again");
    // The buffer count: 6 buffers of 64 KiB at most (slab allocations aside).
    let mut c = daemon.connect("c");
    let small: Vec<_> = (0..6)
        .map(|_| c.alloc(64 * 1024).expect("within quota"))
        .collect();
    let err = c.alloc(64 * 1024).expect_err("a seventh buffer");
    assert_eq!(err.kind(), ErrorKind::OverQuota, "{err}");
    for agg in small {
        c.decref(agg).expect("decref");
    }
    c.alloc(64 * 1024).expect("room again");
    for agg in held[1..].iter().chain([&again, &other]) {
        let d = if *agg == other { &mut b } else { &mut a };
        d.decref(*agg).expect("decref");
    }
}

#[test]
fn copies_count_against_the_sender_not_the_receiver() {
    let daemon = Daemon::start_with("quota-copies", &["--domain-quota-mib", "4"]);
    let mut sender = daemon.connect("sender");
    let mut receiver = daemon.connect("receiver");
    let agg = sender.alloc(MIB).expect("alloc");
    sender.write(agg, 0, b"copied").expect("write");
    let dest = receiver.id();
    for _ in 0..3 {
        sender
            .transfer(agg, dest, Mode::Copy, strong())
            .expect("a copy within the sender's quota");
    }
    let err = sender
        .transfer(agg, dest, Mode::Copy, strong())
        .expect_err("a fourth copy");
    assert_eq!(err.kind(), ErrorKind::OverQuota, "{err}");
    // The receiver's own quota is untouched by what it was sent.
    let own: Vec<_> = (0..4)
        .map(|_| receiver.alloc(MIB).expect("the receiver's own quota"))
        .collect();
    for _ in 0..3 {
        let got = receiver.receive(None, None).expect("receive");
        assert_eq!(receiver.read(got.agg, 0, 6).expect("read"), b"copied");
        receiver.decref(got.agg).expect("decref");
    }
    for a in own {
        receiver.decref(a).expect("decref");
    }
}

#[test]
fn a_sender_flooding_a_receiver_that_never_receives_is_held_back() {
    let daemon = Daemon::start_with("quota-flood", &["--max-sender-pending", "100"]);
    let mut flood = daemon.connect("flood");
    let mut idle = daemon.connect("idle");
    let mut other = daemon.connect("other");
    let dest = idle.id();
    let mut sent = 0;
    let err = loop {
        let agg = flood.alloc(64 * 1024).expect("alloc");
        let sending = flood.transfer(agg, dest, Mode::Move, strong());
        flood.decref(agg).expect("decref");
        match sending {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent <= 100, "the flood was never held back");
    };
    assert_eq!(sent, 100);
    assert_eq!(err.kind(), ErrorKind::OverQuota, "{err}");
    assert!(err.to_string().contains("100 transfers waiting"), "{err}");
    // Others still reach the same receiver, and the block manager still serves.
    let agg = other.alloc(4096).expect("alloc");
    other
        .transfer(agg, dest, Mode::Move, strong())
        .expect("another sender is not held back");
    // What the flood holds is bounded: the 100 queued transfers (copied, as strong moves in
    // a host pool are) and nothing more.
    let status = other.status().expect("status");
    let flooder = status
        .domains
        .iter()
        .find(|d| d.domain == flood.id().to_bits())
        .expect("in status");
    assert_eq!(flooder.quota_bytes, 100 * 64 * 1024, "{status:?}");
    // Once the receiver takes one, the flood may send one more.
    let got = idle.receive(Some(flood.id()), None).expect("receive");
    idle.decref(got.agg).expect("decref");
    let agg = flood.alloc(64 * 1024).expect("alloc");
    flood
        .transfer(agg, dest, Mode::Move, strong())
        .expect("room for one more");
}

#[test]
fn connections_of_one_user_past_its_quota_are_turned_away() {
    let daemon = Daemon::start_with("quota-uid", &["--max-uid-connections", "4"]);
    let mut held: Vec<Domain> = (0..4).map(|i| daemon.connect(&format!("d{i}"))).collect();
    let err = Domain::connect_with(&daemon.options("fifth")).expect_err("a fifth connection");
    assert_eq!(err.kind(), ErrorKind::OverQuota, "{err}");
    assert!(err.to_string().contains("connections"), "{err}");
    held.pop();
    // The block manager notices the closed connection at its next turn.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Domain::connect_with(&daemon.options("again")) {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                assert_eq!(e.kind(), ErrorKind::OverQuota, "{e}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("never let in again: {e}"),
        }
    }
}

/// coshd with at most `nofile` open descriptors.
fn daemon_with_descriptors(tag: &str, nofile: u32) -> Daemon {
    let dir = scratch_dir(tag);
    let socket = dir.join("host.sock");
    let args = vec![
        "-c".to_string(),
        format!("ulimit -n {nofile} && exec \"$0\" \"$@\""),
        coshd().display().to_string(),
        "--socket".into(),
        socket.display().to_string(),
        "--quiet".into(),
    ];
    Daemon::spawn_with("sh", &args, dir, socket)
}

#[test]
fn a_block_manager_near_its_descriptor_limit_says_so_and_keeps_serving() {
    // 256 descriptors: 16 connections, 128 buffers.
    let daemon = daemon_with_descriptors("fd-limit", 256);
    let mut first = daemon.connect("first");
    let limits = first.status().expect("status").limits;
    assert_eq!(
        (limits.descriptors, limits.connections, limits.buffers),
        (256, 16, 128)
    );
    let mut aggs = Vec::new();
    let err = loop {
        match first.alloc(64 * 1024) {
            Ok(a) => aggs.push(a),
            Err(e) => break e,
        }
        assert!(aggs.len() <= 128, "no limit on buffers");
    };
    assert_eq!(aggs.len(), 128);
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("descriptor"), "{err}");
    let mut others: Vec<Domain> = (1..16).map(|i| daemon.connect(&format!("d{i}"))).collect();
    let err = Domain::connect_with(&daemon.options("seventeenth")).expect_err("a 17th");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("descriptor limit"), "{err}");
    assert_eq!(others[0].status().expect("still serving").domain_count, 16);
    for a in aggs {
        first.decref(a).expect("decref");
    }
    // Freed (recycled slots are given up to make new ones), allocations work again, in any
    // domain.
    let again = others[3].alloc(64 * 1024).expect("room again");
    others[3].decref(again).expect("decref");
}
