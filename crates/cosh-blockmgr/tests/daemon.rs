//! The block manager as a program: one per socket, clean shutdown, clients that start it,
//! clients that misbehave on the wire, and clients of one that dies.

mod support;

use std::process::Command;
use std::time::Duration;

use cosh::{Domain, ErrorKind, Mode, Options, TransferFlags};
use cosh_proto::{Message, encode};
use cosh_sys::socket::SeqPacket;
use support::{Daemon, coshd, scratch_dir};

#[test]
fn a_second_block_manager_on_the_same_socket_refuses_clearly() {
    let mut daemon = Daemon::start("second");
    let out = Command::new(coshd())
        .arg("--socket")
        .arg(&daemon.socket)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already"), "{stderr}");
    // The first one still serves.
    let mut d = daemon.connect("still-there");
    assert_eq!(d.status().expect("status").domain_count, 1);
    drop(d);
    assert!(daemon.terminate().success());
}

#[test]
fn sigterm_stops_it_cleanly_and_removes_the_socket() {
    let mut daemon = Daemon::start("sigterm");
    let _client = daemon.connect("bystander");
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!daemon.socket.exists(), "the socket was left behind");
}

#[test]
fn sigint_stops_it_cleanly_too() {
    let mut daemon = Daemon::start("sigint");
    let pid = rustix::process::Pid::from_child(&daemon.child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("kill");
    let status = daemon.child.wait().expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(!daemon.socket.exists(), "the socket was left behind");
}

#[test]
fn a_shutdown_request_stops_it() {
    let mut daemon = Daemon::start("shutdown");
    daemon.connect("admin").shutdown().expect("shutdown");
    let status = daemon.child.wait().expect("exits");
    assert!(status.success());
    assert!(!daemon.socket.exists());
}

#[test]
fn a_client_starts_a_block_manager_when_none_runs() {
    let dir = scratch_dir("spawn");
    let socket = dir.join("host.sock");
    let options = Options::new("starter").socket(&socket).daemon(coshd());
    let mut a = Domain::connect_with(&options).expect("starts one and connects");
    let mut b = Domain::connect_with(&options).expect("connects to the same one");
    let x = a.alloc(10).expect("alloc");
    a.write(x, 0, b"0123456789").expect("write");
    a.transfer(x, b.id(), Mode::Copy, TransferFlags::strong())
        .expect("transfer");
    let got = b
        .receive(None, Some(Duration::from_secs(5)))
        .expect("receive");
    assert_eq!(b.read(got.agg, 0, 10).expect("read"), b"0123456789");
    drop(b);
    a.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_spawning_a_missing_block_manager_is_a_clear_error() {
    let dir = scratch_dir("nospawn");
    let options = Options::new("x").socket(dir.join("host.sock")).no_spawn();
    let err = Domain::connect_with(&options).expect_err("nobody serves");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("cosh up"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Garbage, out-of-turn messages and descriptors sent by clients get the sender an error and
/// its connection closed; the block manager serves on and other domains' data is intact.
#[test]
fn misbehaving_clients_are_cut_off_and_nobody_else_notices() {
    let daemon = Daemon::start("garbage");
    let mut good = daemon.connect("good");
    let x = good.alloc(4).expect("alloc");
    good.write(x, 0, b"safe").expect("write");

    let hello = encode(&Message::Hello {
        min_version: 1,
        max_version: 1,
        name: "bad".into(),
    })
    .expect("encodes");
    let attempts: Vec<Vec<u8>> = vec![
        b"not a frame at all".to_vec(),
        vec![0; 10],
        encode(&Message::Welcome {
            version: 1,
            domain: good.id(),
        })
        .expect("encodes"),
    ];
    for garbage in attempts {
        // Before the handshake and after it.
        for handshake in [false, true] {
            let s = SeqPacket::connect(&daemon.socket).expect("connects");
            let mut buf = vec![0u8; 70_000];
            if handshake {
                s.send(&hello, &[]).expect("hello");
                s.recv(&mut buf).expect("welcome");
            }
            s.send(&garbage, &[]).expect("sent");
            let answer = s.recv(&mut buf).expect("an answer");
            if let Some(m) = answer {
                let m = cosh_proto::decode(&buf[..m.len]).expect("a valid frame");
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
                // And then the connection is closed.
                assert!(s.recv(&mut buf).expect("eof").is_none());
            }
        }
    }
    // A client that sends descriptors.
    let s = SeqPacket::connect(&daemon.socket).expect("connects");
    let stray = cosh_sys::memfd::Memfd::create("stray", 4096).expect("memfd");
    s.send(&hello, &[stray.as_fd()]).expect("sent");
    let mut buf = vec![0u8; 70_000];
    let m = s.recv(&mut buf).expect("answer").expect("an error frame");
    let m = cosh_proto::decode(&buf[..m.len]).expect("a valid frame");
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

    assert_eq!(good.read(x, 0, 4).expect("read"), b"safe");
    assert_eq!(good.status().expect("status").domain_count, 1);
}

#[test]
fn clients_of_a_dead_block_manager_get_a_clear_error() {
    let mut daemon = Daemon::start("dies");
    let mut d = daemon.connect("orphan");
    let x = d.alloc(10).expect("alloc");
    daemon.child.kill().expect("SIGKILL");
    daemon.child.wait().expect("reaped");
    let err = d.len(x).expect_err("nobody answers");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("block manager"), "{err}");
}

#[test]
fn a_killed_block_manager_wakes_its_waiting_clients_and_a_new_one_serves_its_socket() {
    let mut daemon = Daemon::start("restart");
    let (dir, socket) = (daemon.dir.clone(), daemon.socket.clone());
    let mut idle = daemon.connect("idle");
    let x = idle.alloc(10).expect("alloc");
    // A client waiting for a transfer that will never come.
    let mut waiter = daemon.connect("waiter");
    let (tx, rx) = std::sync::mpsc::channel();
    let waiting = std::thread::spawn(move || {
        let got = waiter.receive(None, None);
        tx.send(std::time::Instant::now()).expect("send");
        got.map(|_| ()).map_err(|e| (e.kind(), e.to_string()))
    });
    std::thread::sleep(Duration::from_millis(200));
    let killed = std::time::Instant::now();
    daemon.child.kill().expect("SIGKILL");
    daemon.child.wait().expect("reaped");
    // The waiting client is woken with a clear error within a second, not left hanging.
    let woke = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the waiting client hangs");
    assert!(
        woke.duration_since(killed) < Duration::from_secs(1),
        "woken after {:?}",
        woke.duration_since(killed)
    );
    let (kind, message) = waiting.join().expect("thread").expect_err("nobody sent");
    assert_eq!(kind, ErrorKind::Unavailable, "{message}");
    // So is the idle one, at its next call.
    let asked = std::time::Instant::now();
    let err = idle.len(x).expect_err("nobody answers");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(asked.elapsed() < Duration::from_secs(1));
    // A new block manager takes the socket the dead one left behind, and serves.
    let mut again = Daemon::start_at(dir, socket, &[]);
    let mut fresh = again.connect("fresh");
    let y = fresh.alloc(10).expect("alloc");
    fresh.write(y, 0, b"new").expect("write");
    assert_eq!(fresh.read(y, 0, 3).expect("read"), b"new");
    assert_eq!(fresh.status().expect("status").domain_count, 1);
    drop(fresh);
    assert!(again.terminate().success());
    // Nothing is left behind: buffers are memfds, which leave no file anywhere, and the socket
    // goes with a clean stop. The empty lock file that decides between block managers starting
    // at once stays, by design (removing it would let a second one lock a file the first no
    // longer names).
    let left: Vec<_> = std::fs::read_dir(&again.dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["host.sock.lock"], "left behind: {left:?}");
}
