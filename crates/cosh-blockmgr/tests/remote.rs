//! Links between block managers on different hosts, here over loopback TCP: with TLS and with
//! plain TCP (asked for explicitly), the corpus passes with every domain in a pool of its own
//! (invariant 5: a program cannot tell a remote peer from a local one); a wrong token or an
//! unknown certificate is refused with a clear error at the sender; a remote destination
//! that dies fails the transfer in flight and leaks nothing. (`tests/netns.rs` runs two
//! hosts as network namespaces.)

mod support;

use std::time::Duration;

use cosh_core::{ErrorKind, Mode, Rights, TransferFlags};
use cosh_scenario::Layout;
use support::{Daemon, Linked, assert_corpus_passes_in, free_port, scratch_dir};

#[test]
fn the_corpus_passes_across_hosts_over_tls() {
    let pools = Linked::start_tcp("remote-tls", &["host", "nc", "device"], true);
    assert_corpus_passes_in(Layout::PoolPerDomain, || pools.connections());
    assert_corpus_passes_in(Layout::AsWritten, || pools.connections());
}

#[test]
fn the_corpus_passes_across_hosts_over_plain_tcp() {
    let pools = Linked::start_tcp("remote-tcp", &["host", "host", "host"], false);
    assert_corpus_passes_in(Layout::PoolPerDomain, || pools.connections());
}

#[test]
fn large_transfers_cross_hosts_whole_and_in_order() {
    let pools = Linked::start_tcp("remote-large", &["host", "device"], true);
    let mut a = pools.daemons[0].connect("a");
    let mut b = pools.daemons[1].connect("b");
    let weak = TransferFlags {
        strength: cosh_core::Strength::Weak,
        ..TransferFlags::default()
    };
    let mut sent = Vec::new();
    for (i, len) in [0u64, 1, 4096, 3 << 20, 17 << 20].into_iter().enumerate() {
        let x = a.alloc(len).expect("alloc");
        let data: Vec<u8> = (0..len).map(|k| (k as u8) ^ (i as u8 * 37)).collect();
        a.write(x, 0, &data).expect("write");
        let mode = if i % 2 == 0 { Mode::Move } else { Mode::Copy };
        a.transfer(x, b.id(), mode, weak)
            .expect("to the other host");
        sent.push(data);
    }
    for (i, data) in sent.iter().enumerate() {
        let got = b
            .receive(Some(a.id()), Some(Duration::ZERO))
            .unwrap_or_else(|e| panic!("transfer {i}: {e}"));
        let len = data.len() as u64;
        assert_eq!(b.len(got.agg).expect("len"), len);
        assert!(
            &b.read(got.agg, 0, len).expect("read") == data,
            "transfer {i}"
        );
    }
    let status = b.status().expect("status");
    assert!(
        status.links.iter().any(|l| l.pool == 0 && !l.outgoing),
        "{status:?}"
    );
}

fn token_file(dir: &std::path::Path, token: &str) -> String {
    let path = dir.join(format!("token-{}", token.len()));
    std::fs::write(&path, token).expect("token");
    path.display().to_string()
}

#[test]
fn a_wrong_token_is_refused_and_the_sender_told() {
    let dir = scratch_dir("remote-token");
    let (good, bad) = (
        token_file(&dir, "the-right-token-0123456789"),
        token_file(&dir, "a-wrong-token-0123456789"),
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let b = Daemon::start_at(
        dir.join("keep-b"),
        dir.join("b.sock"),
        &[
            "--pool",
            "1",
            "--listen",
            &listen,
            "--link-token-file",
            &good,
            "--insecure-plain-tcp",
        ],
    );
    let link = format!("1=tcp://127.0.0.1:{port}");
    let a = Daemon::start_at(
        dir.clone(),
        dir.join("a.sock"),
        &[
            "--link",
            &link,
            "--link-token-file",
            &bad,
            "--insecure-plain-tcp",
        ],
    );
    let mut da = a.connect("a");
    let db = b.connect("b");
    let x = da.alloc(100).expect("alloc");
    let e = da
        .transfer(x, db.id(), Mode::Copy, TransferFlags::default())
        .expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("token"), "{e}");
    assert_eq!(da.rights(x).expect("rights"), Rights::ReadWrite);
    // The hold is gone: once the sender frees its aggregate, nothing is in use.
    da.decref(x).expect("decref");
    let status = da.status().expect("status");
    assert_eq!((status.bytes_in_use, status.buffers), (0, 0), "{status:?}");
}

#[test]
fn a_certificate_nobody_vouches_for_is_refused() {
    let dir = scratch_dir("remote-ca");
    let token = token_file(&dir, "the-right-token-0123456789");
    let write = |name: &str| {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, c.cert.pem()).expect("cert");
        std::fs::write(&key, c.signing_key.serialize_pem()).expect("key");
        (cert.display().to_string(), key.display().to_string())
    };
    let (b_cert, b_key) = write("b");
    let (other_ca, _) = write("other");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let b = Daemon::start_at(
        dir.join("keep-b"),
        dir.join("b.sock"),
        &[
            "--pool",
            "1",
            "--listen",
            &listen,
            "--link-token-file",
            &token,
            "--tls-cert",
            &b_cert,
            "--tls-key",
            &b_key,
        ],
    );
    let link = format!("1=tls://localhost:{port}");
    let a = Daemon::start_at(
        dir.clone(),
        dir.join("a.sock"),
        &[
            "--link",
            &link,
            "--link-token-file",
            &token,
            "--tls-ca",
            &other_ca,
        ],
    );
    let mut da = a.connect("a");
    let db = b.connect("b");
    let x = da.alloc(100).expect("alloc");
    let e = da
        .transfer(x, db.id(), Mode::Move, TransferFlags::default())
        .expect_err("not trusted");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    assert_eq!(
        da.rights(x).expect("rights"),
        Rights::ReadWrite,
        "nothing moved"
    );
}

#[test]
fn plain_tcp_must_be_asked_for() {
    let dir = scratch_dir("remote-plain");
    let token = token_file(&dir, "the-right-token-0123456789");
    let out = std::process::Command::new(support::coshd())
        .args(["--socket"])
        .arg(dir.join("x.sock"))
        .args(["--link", "1=tcp://127.0.0.1:9", "--link-token-file", &token])
        .output()
        .expect("coshd runs");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--insecure-plain-tcp"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_remote_destination_that_dies_fails_the_transfer_in_flight() {
    let pools = Linked::start_tcp("remote-death", &["host", "host"], false);
    let mut a = pools.daemons[0].connect("a");
    let b = pools.daemons[1].connect("b");
    let x = a.alloc(1 << 20).expect("alloc");
    let pid = rustix::process::Pid::from_child(&pools.daemons[1].child);
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).expect("SIGSTOP");
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("SIGKILL");
    });
    let e = a
        .transfer(x, b.id(), Mode::Move, TransferFlags::default())
        .expect_err("the destination died");
    killer.join().expect("killer");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(a.rights(x).expect("rights"), Rights::ReadWrite);
    a.decref(x).expect("decref");
    let status = a.status().expect("status");
    assert_eq!((status.bytes_in_use, status.buffers), (0, 0), "{status:?}");
    drop(b);
}

#[test]
fn a_connection_that_never_presents_a_token_is_dropped() {
    use std::io::Read;
    let pools = Linked::start_tcp("remote-silent", &["host", "host"], false);
    // A connection to pool 1's listening port that says nothing.
    let port = pools.ports[1];
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    // The block manager says why (a protocol error frame) and closes: read until the end.
    let mut total = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(19),
        "dropped after {waited:?}"
    );
    assert!(total > 0, "it said why before closing");
    // The block manager serves on.
    let mut d = pools.daemons[1].connect("after");
    d.alloc(1).expect("alloc");
}
